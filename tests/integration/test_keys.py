"""The key store (docs/auth.md): `dapi keys add/list/rotate/revoke` against a running server,
which picks every change up by itself (the file is polled) and on SIGHUP, without a failed
request; revoked and expired keys get a 401 saying which; a malformed file stops the start
with its line number and, on a reload, keeps the keys in use; the plain DAPI_API_KEYS keys
keep working beside the store; the file holds no secret and is owner-only."""

import os
import re
import signal
import stat
import subprocess
import threading
import time

import harness as h
from harness import Server, check, eq, expect_error

KEY_RE = re.compile(r"^dapi_([0-9A-Za-z]{12})_([0-9A-Za-z]{43})$")


def _keys(args, state=None, keys_file=None, env=None):
    """Runs `dapi keys ARGS`; returns (rc, stdout, stderr)."""
    extra = []
    if keys_file:
        extra = ["--keys-file", keys_file]
    elif state:
        extra = ["--state-dir", state]
    return h.run_cli(["keys"] + list(args) + extra, env=env)


def _add(state=None, keys_file=None, *args):
    rc, out, err = _keys(["add"] + list(args), state=state, keys_file=keys_file)
    eq(rc, 0, "dapi keys add %s exit code (stderr %r)" % (" ".join(args), err))
    key = out.strip()
    m = KEY_RE.match(key)
    check(m, "the new key %r is dapi_<12-char id>_<43-char secret>" % key)
    check("shown only once" in err, "add says the key is shown once: %r" % err)
    return key, m.group(1)


def _status(s, key):
    return s.create_resp({"sql_query": "SELECT 1 AS one"}, key=key).status


def _refused(s, key, message, what):
    """Asserts that POST /api/queries with key gets 401 with message; returns the body."""
    return expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=key), 401, message, what)


def _wait_status(s, key, status, timeout=4.0):
    """Polls until key gets status (the server rereads the file within a tick or two)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _status(s, key)
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


@h.timeout(90)
def test_keys_lifecycle_cli_against_running_server():
    """add → use → rotate (both secrets during the grace, then only the new one; the key's
    queries stay readable) → revoke → 401 "API key revoked". The store holds keys, so no
    development key is made; list shows status, limits and last use, never a secret; the file
    is 0600 and holds only hashes."""
    st = h.tmpdir("keys-life")
    key1, kid = _add(st, None, "--name", "ci-bot", "--layers", "nekt_raw,nekt_service", "--rate",
                     "600/min", "--burst", "20")
    with Server(keys=None, state_dir=st, name="keys-life") as s:
        check(not os.path.exists(os.path.join(st, "dev-key")), "no development key is made")
        check("development key" not in s.stdout_text(), "no development key printed")
        text = s.wait_stderr(lambda t: "key store" in t)
        check("key store %s/keys: 1 key(s)" % st in text,
              "start logs the store:\n%s" % h.tail_text(text, 5))
        slug = s.create("SELECT 42 AS answer", key=key1)
        eq(s.page(slug, 1, key=key1), [{"answer": 42}], "page with the store key")

        # a second key, added while the server runs: picked up without a signal
        key2, kid2 = _add(st, None, "--name", "second")
        eq(_wait_status(s, key2, 200), 200, "the key added while running")
        text = s.wait_stderr(lambda t: "keys file changed: key store reloaded" in t)
        check("keys file changed: key store reloaded from %s/keys: 2 key(s)" % st in text,
              "the change is logged:\n%s" % h.tail_text(text, 5))

        # rotate with a grace period: old and new secrets both work, same owner
        rc, out, err = _keys(["rotate", kid, "--grace", "1h"], state=st)
        eq(rc, 0, "rotate exit code (%r)" % err)
        key1b = out.strip()
        m = KEY_RE.match(key1b)
        check(m and m.group(1) == kid and key1b != key1, "rotate keeps the id, new secret: %r" % key1b)
        check("the old one works until" in err, "rotate says until when: %r" % err)
        eq(_wait_status(s, key1b, 200), 200, "the rotated key")
        eq(_status(s, key1), 200, "the old secret during the grace period")
        eq(s.page(slug, 1, key=key1b), [{"answer": 42}], "the key's query, read with the new secret")

        # rotate again without grace: the previous secret stops at once
        rc, out, err = _keys(["rotate", kid, "--grace", "0"], state=st)
        eq(rc, 0, "second rotate (%r)" % err)
        key1c = out.strip()
        eq(_wait_status(s, key1c, 200), 200, "the newest secret")
        _refused(s, key1b, "Invalid API key", "the secret before, no grace")
        _refused(s, key1, "Invalid API key", "the first secret")

        # list: status, name, layers, limits, last use; never a secret
        deadline = time.monotonic() + 8
        while True:
            rc, out, err = _keys(["list"], state=st)
            eq(rc, 0, "list exit code (%r)" % err)
            line = [l for l in out.splitlines() if l.startswith(kid)]
            if (line and not line[0].rstrip().endswith("never")) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        check(line, "list shows %s:\n%s" % (kid, out))
        fields = line[0].split()
        eq(fields[1:6], ["ci-bot", "active", "nekt_raw,nekt_service", "600/min", "20"],
           "list columns of %s" % kid)
        check(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", fields[-1]),
              "last use shown (after the server wrote it): %r" % line[0])
        for secret in (key1, key1b, key1c, key2):
            check(secret.split("_")[2] not in out, "list shows no secret")

        # revoke: 401 saying so, with the date
        rc, out, err = _keys(["revoke", kid2], state=st)
        eq((rc, out), (0, ""), "revoke (%r)" % err)
        deadline = time.monotonic() + 4
        while _status(s, key2) == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        body = _refused(s, key2, "API key revoked", "revoked key")
        check(re.match(r"revoked at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body.get("details", "")),
              "details: %r" % body)
        eq(_status(s, key1c), 200, "the other key still works")
        rc, out, err = _keys(["revoke", kid2], state=st)
        eq(rc, 1, "revoking twice fails (%r)" % err)
        check("was revoked at" in err, "says so: %r" % err)
        rc, out, err = _keys(["list", "--json"], state=st)
        check('"status":"revoked"' in out and '"name":"second"' in out, "list --json:\n%s" % out)

    kf = os.path.join(st, "keys")
    eq(stat.S_IMODE(os.stat(kf).st_mode), 0o600, "keys file mode")
    text = _read(kf)
    for secret in (key1, key1b, key1c, key2):
        check(secret.split("_")[2] not in text, "the file holds no secret")
    check(re.search(r"^id=%s .*hash=[0-9a-f]{64} salt=[0-9a-f]{32}" % kid, text, re.M),
          "hash and salt stored:\n%s" % text)


@h.timeout(60)
def test_keys_expired():
    """A key with a date in the past gets 401 "API key expired" with the date; one with a short
    duration works, then expires (the server's clock, no file change needed)."""
    st = h.tmpdir("keys-exp")
    old, _ = _add(st, None, "--name", "old", "--expires", "2020-01-01")
    short, _ = _add(st, None, "--name", "short", "--expires", "3s")
    with Server(keys=None, state_dir=st, name="keys-exp") as s:
        body = _refused(s, old, "API key expired", "expired key")
        eq(body.get("details"), "expired at 2020-01-01T00:00:00Z", "details")
        eq(_status(s, short), 200, "the short key before its end")
        deadline = time.monotonic() + 8
        while _status(s, short) == 200 and time.monotonic() < deadline:
            time.sleep(0.25)
        _refused(s, short, "API key expired", "after its end")
        rc, out, err = _keys(["list"], state=st)
        check(re.search(r"^\S+\s+old\s+expired\s", out, re.M), "list shows expired:\n%s" % out)


@h.timeout(120)
def test_keys_reload_under_load_sighup_and_file_change():
    """While three clients use a store key, keys are added and revoked with `dapi keys` (the
    server sees each new file by itself) and SIGHUPs arrive: no request fails, no connection is
    dropped, and afterwards every added key works and the revoked one does not."""
    st = h.tmpdir("keys-load")
    kept, _ = _add(st, None, "--name", "kept")
    with Server(keys=None, state_dir=st, name="keys-load") as s:
        added = []
        # 404: the key was accepted (an unknown slug); 401 would be a failure
        with h.Load(s.port, "/api/queries/nope-slug/results?page_number=1", kept, expect=404) as load:
            time.sleep(0.3)
            for i in range(4):
                key, kid = _add(st, None, "--name", "load-%d" % i)
                added.append((key, kid))
                time.sleep(0.3)
                os.kill(s.proc.pid, signal.SIGHUP)
                time.sleep(0.2)
            rc, _, err = _keys(["revoke", added[0][1]], state=st)
            eq(rc, 0, "revoke (%r)" % err)
            time.sleep(0.8)
        eq(load.bad[:5], [], "requests that failed during the reloads (%d ok)" % load.ok)
        check(load.ok > 50, "the load ran (%d requests)" % load.ok)
        for key, kid in added[1:]:
            eq(_status(s, key), 200, "added key %s" % kid)
        _refused(s, added[0][0], "API key revoked", "revoked during the load")
        text = s.stderr_text()
        check("SIGHUP: key store reloaded from %s/keys" % st in text,
              "SIGHUP reload logged:\n%s" % h.tail_text(text, 8))
        check(s.alive(), "alive")


def _serve_fails(args, env=None):
    e = h.base_env()
    e.update(env or {})
    cmd = [h.BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", h.tmpdir("keys-d")]
    p = subprocess.run(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                       timeout=40, cwd=h.tmpdir("cwd-keys"))
    return p.returncode, p.stderr.decode("utf-8", "replace")


@h.timeout(60)
def test_keys_corrupted_file():
    """A malformed keys file stops the start (exit 2) naming its line; a file that turns bad
    while the server runs is refused with the reason in the log, once, and the keys in use are
    kept (also at SIGHUP) until a good file comes."""
    st = h.tmpdir("keys-bad")
    kf = os.path.join(st, "keys")
    good, kid = _add(st, None, "--name", "good")
    text = _read(kf)
    h.write_file(kf, text + "id=broken name=x hash=zz\n")
    lineno = (text + "id=broken").count("\n") + 1
    rc, err = _serve_fails(["--state-dir", st])
    eq(rc, 2, "exit code with a malformed keys file (%r)" % err)
    check("keys file %s line %d: bad hash 'zz'" % (kf, lineno) in err, "the line is named: %r" % err)

    h.write_file(kf, text)
    with Server(keys=None, state_dir=st, name="keys-bad") as s:
        eq(_status(s, good), 200, "the good key")
        h.write_file(kf, text + "garbage line\n")
        log = s.wait_stderr(lambda t: "key store not reloaded" in t)
        want = ("keys file changed: key store not reloaded: keys file %s line %d: 'garbage' is not "
                "name=value; the 1 key(s) in use are kept" % (kf, lineno))
        check(want in log, "logged why:\n%s" % h.tail_text(log, 5))
        eq(_status(s, good), 200, "the old key after a bad file")
        time.sleep(0.8)
        eq(s.stderr_text().count("key store not reloaded"), 1, "a bad file is reported once")
        os.kill(s.proc.pid, signal.SIGHUP)
        log = s.wait_stderr(lambda t: "SIGHUP: key store not reloaded" in t)
        check("SIGHUP: key store not reloaded" in log, "SIGHUP says why too")
        eq(_status(s, good), 200, "the old key after SIGHUP")
        h.write_file(kf, text)
        s.wait_stderr(lambda t: "keys file changed: key store reloaded" in t)
        eq(_status(s, good), 200, "the key once the file is good again")
        check(s.alive(), "alive")


@h.timeout(60)
def test_keys_plain_keys_alongside_and_keys_file_setting():
    """DAPI_API_KEYS keys keep working beside the store's; a store-looking key with an unknown
    id, or a wrong secret, is "Invalid API key"; --keys-file / DAPI_KEYS_FILE name the store for
    both commands; an empty store leaves the development key as before."""
    d = h.tmpdir("keys-plain")
    kf = os.path.join(d, "store")
    key, kid = _add(None, kf, "--name", "stored")
    with Server(keys=["plain-key-1a2b"], args=["--keys-file", kf], name="keys-plain") as s:
        eq(_status(s, "plain-key-1a2b"), 200, "the plain key")
        eq(_status(s, key), 200, "the store key")
        _refused(s, "dapi_AAAAAAAAAAAA_" + "b" * 43, "Invalid API key", "unknown id")
        wrong = key[:-1] + ("a" if key[-1] != "a" else "b")
        _refused(s, wrong, "Invalid API key", "wrong secret")
        _refused(s, None, None, "no key")
    with Server(keys=None, env={"DAPI_KEYS_FILE": kf}, name="keys-env") as s:
        eq(_status(s, key), 200, "the store named by DAPI_KEYS_FILE")
        check(not os.path.exists(os.path.join(s.state_dir, "dev-key")), "no development key")
    rc, out, err = _keys(["list"], env={"DAPI_KEYS_FILE": kf})
    check(rc == 0 and kid in out, "DAPI_KEYS_FILE for dapi keys: %r %r" % (out, err))
    with Server(keys=None, name="keys-none") as s:
        check(os.path.exists(os.path.join(s.state_dir, "dev-key")), "no store: the development key as before")


def test_keys_cli_usage():
    rc, out, err = h.run_cli(["help", "keys"])
    eq(rc, 0, "dapi help keys")
    for word in ("add", "list", "revoke", "rotate", "--grace", "--keys-file", "--upstream-key-env"):
        check(word in out, "help mentions %s" % word)
    d = h.tmpdir("keys-usage")
    for args, why in (
        ([], "expected add, list"),
        (["frob"], "expected add, list"),
        (["add"], "add needs --name"),
        (["add", "--name", "two words"], "add needs --name"),
        (["add", "--name", "x", "--rate", "5/week"], "bad rate"),
        (["add", "--name", "x", "--expires", "soon"], "bad date or duration"),
        (["add", "--name", "x", "--burst", "0"], "--burst"),
        (["add", "--name", "x", "--upstream-key-env", "A-B"], "bad --upstream-key-env"),
        (["revoke"], "take one key id"),
    ):
        rc, out, err = _keys(args, state=d)
        eq(rc, 2, "exit code of %s" % args)
        check(why in err, "%s says %r: %r" % (args, why, err))
    _, kid = _add(d, None, "--name", "x")
    rc, out, err = _keys(["rotate", kid, "--grace", "later"], state=d)
    eq(rc, 2, "rotate with a bad --grace")
    check("bad duration 'later'" in err, err)
    rc, out, err = _keys(["revoke", "nosuchid"], state=d)
    eq(rc, 1, "unknown id")
    check("no key with id 'nosuchid'" in err, err)
    eq(out, "", "nothing on stdout")


@h.timeout(60)
def test_keys_concurrent_adds_lose_nothing():
    """Eight `dapi keys add` at once (each reads, changes and renames the file under
    <file>.lock): every key is in the file afterwards, and each of them works."""
    st = h.tmpdir("keys-conc")
    got = []
    lock = threading.Lock()

    def one(i):
        key, kid = _add(st, None, "--name", "c%d" % i)
        with lock:
            got.append((key, kid))

    errors = [e for _, e in h.run_threads(one, list(range(8))) if e]
    eq(errors, [], "adds that failed")
    rc, out, err = _keys(["list", "--json"], state=st)
    eq(sorted(re.findall(r'"id":"(\w+)"', out)), sorted(kid for _, kid in got),
       "every added key is listed")
    leftovers = [f for f in os.listdir(st) if ".tmp." in f]
    eq(leftovers, [], "no temporary file left")
    with Server(keys=None, state_dir=st, name="keys-conc") as s:
        for key, kid in got:
            eq(_status(s, key), 200, "key %s" % kid)


@h.timeout(60)
def test_keys_emulator_accepts_store_keys():
    """--emulate-nekt checks its /api/v1/ keys like dapi's own routes: a store key is
    accepted, a revoked one is refused like an unknown key."""
    st = h.tmpdir("keys-emu")
    key, kid = _add(st, None, "--name", "emu")
    with Server(keys=None, state_dir=st, args=["--emulate-nekt"], name="keys-emu") as s:
        r = s.api("GET", "/api/v1/explorer/application/", key=key)
        eq(r.status, 200, "the emulator with a store key: %s" % r.short())
        r = s.api("GET", "/api/v1/explorer/application/", key="dapi_%s_%s" % (kid, "x" * 43))
        eq(r.status, 401, "a wrong secret: %s" % r.short())
        rc, _, err = _keys(["revoke", kid], state=st)
        eq(rc, 0, "revoke (%r)" % err)
        deadline = time.monotonic() + 4
        while True:
            r = s.api("GET", "/api/v1/explorer/application/", key=key)
            if r.status != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        eq(r.status, 401, "the revoked key: %s" % r.short())


def test_store_key_rate_and_burst_are_enforced_per_key():
    """A store key's --rate/--burst is its bucket: past the burst it gets 429 with
    Retry-After and RateLimit headers, while another store key (no limit of its own, no
    server default) is not affected. Counts, not timings: 3/min refills one request per 20 s."""
    st = h.tmpdir("keys-rate")
    slow, _ = _add(st, None, "--name", "slow", "--rate", "3/min", "--burst", "2")
    free, _ = _add(st, None, "--name", "free")
    with Server(keys=None, state_dir=st, name="keys-rate") as s:
        statuses = [_status(s, slow) for _ in range(5)]
        check(statuses[:2] == [200, 200], "the burst of 2 passes: %r" % statuses)
        check(statuses.count(429) >= 2, "then 429 (at most one refill in between): %r" % statuses)
        r = s.create_resp({"sql_query": "SELECT 1"}, key=slow)
        body = expect_error(r, 429, "Rate limit exceeded", "over its rate")
        check("per minute" in body.get("details", ""), "the details say the rate: %r" % body)
        check(int(r.headers.get("retry-after", "0")) >= 1, "Retry-After: %r" % r.headers)
        check(r.headers.get("ratelimit-policy", "").startswith("2;w="), "policy: %r" % r.headers)
        check("remaining=0" in r.headers.get("ratelimit", ""), "state: %r" % r.headers)
        eq([_status(s, free) for _ in range(8)], [200] * 8, "the other key is not limited")
