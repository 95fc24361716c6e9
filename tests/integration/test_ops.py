"""Process behaviour and signals (docs/design.md, Signals): a port in use is a start error
unless --reuse-port; SIGHUP reloads the keys file (keeping the old keys when the new file is
bad) and reopens the log files, with no request failing meanwhile; every exit writes out the
batched access lines; host names are accepted; --log-level; access lines carry the client
address, the query string and the request id; X-Request-Id is taken from the client when sane,
generated otherwise, and echoed on every response."""

import collections
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY = "it-ops-key-7d3a"
GEN_ID_RE = re.compile(r"^[0-9A-Za-z]{16}$")


def _serve_args(port, *extra):
    return [h.BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", h.tmpdir("ops-data"), "--state-dir", h.tmpdir("ops-state")] + list(extra)


def _run_failing(args, env=None, timeout=40):
    """Runs a `dapi serve` expected to stop at start; returns the CompletedProcess. If it starts
    after all, it is stopped (SIGTERM to its own pid) and the test fails."""
    e = h.base_env()
    e["DAPI_API_KEYS"] = "it-ops-other-key"
    e.update(env or {})
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=h.tmpdir("cwd-ops"))
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
        raise AssertionError("`%s` kept running (it should have failed at start): %r" % (" ".join(args[:8]), err[-400:]))
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def _hup(s):
    os.kill(s.proc.pid, signal.SIGHUP)


def _wait_file(path, pred, timeout=5.0):
    """Polls a file until pred(text) holds; returns the text ("" if it never existed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        if pred(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _post_ok(s, key):
    return s.create_resp({"sql_query": "SELECT 1 AS x"}, key=key).status


# --------------------------------------------------------------------------- listening


def test_port_in_use_fails_clearly():
    """The issue's case: a second server on a busy port used to start silently (SO_REUSEPORT)
    and take half the connections. Now it stops with a message and a non-zero status, and the
    first one keeps every request."""
    with Server(keys=[KEY], name="ops-first") as s:
        p = _run_failing(_serve_args(s.port))
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode != 0, "second server on a port in use exited %d" % p.returncode)
        want = "cannot listen on 127.0.0.1:%d: Address already in use" % s.port
        check(want in err, "stderr says %r:\n%s" % (want, err[-600:]))
        check(b"dapi listening" not in p.stdout, "it never said it listens: %r" % p.stdout[-200:])
        codes = [_post_ok(s, KEY) for _ in range(10)]
        eq(codes, [200] * 10, "ten POSTs with the first server's key")


def test_reuse_port_lets_two_start():
    """--reuse-port (DAPI_REUSE_PORT) opts in to sharing: two servers that both set it start on
    one port; one that does not set it still cannot join them."""
    with Server(keys=[KEY], args=["--reuse-port"], name="ops-reuse-a") as a:
        with Server(keys=[KEY], args=["--port", str(a.port)], env={"DAPI_REUSE_PORT": "true"}, name="ops-reuse-b") as b:
            eq(b.port, a.port, "second server's port")
            expect_status(a.request("GET", "/api/health"), 200, "health through the shared port")
            p = _run_failing(_serve_args(a.port))
            check(p.returncode != 0 and b"Address already in use" in p.stderr, "a third server without --reuse-port: exit %d, %r" % (p.returncode, p.stderr[-300:]))


def test_host_names():
    """--host localhost listens (on 127.0.0.1, which it prints); a name that does not resolve
    is a bad option (exit 2) that says so."""
    with Server(keys=[KEY], args=["--host", "localhost"], name="ops-localhost") as s:
        check(any("dapi listening on http://127.0.0.1:%d" % s.port in l for l in s.stdout_lines), "prints the address: %r" % s.stdout_lines[:3])
        expect_status(s.request("GET", "/api/health"), 200, "health on --host localhost")
    p = _run_failing(_serve_args(0, "--host", "no-such-host.invalid"))
    err = p.stderr.decode("utf-8", "replace")
    eq(p.returncode, 2, "exit status for an unresolvable --host (stderr %r)" % err[-300:])
    check("cannot resolve --host 'no-such-host.invalid'" in err, "says why: %r" % err[-300:])


# --------------------------------------------------------------------------- SIGHUP: keys


@h.timeout(90)
def test_sighup_reloads_keys_and_reopens_logs_under_load():
    """While three clients read pages with a key that stays, the keys file changes (one key
    removed, one added) and the access log is rotated, each followed by SIGHUP, several times.
    No request fails; afterwards the new key works, the removed one gets 401, and every request
    has exactly one access line, in the rotated file or the new one."""
    d = h.tmpdir("ops-hup")
    kf = os.path.join(d, "keys")
    alog = os.path.join(d, "access.log")
    h.write_file(kf, "kept-key-1a2b\nold-key-3c4d\n")
    with Server(keys=None, args=["--api-keys-file", kf, "--access-log", alog], name="ops-hup") as s:
        slug = s.create("SELECT 42 AS answer", key="kept-key-1a2b")
        s.page(slug, 1, key="kept-key-1a2b")
        path = "/api/queries/%s/results?page_number=1" % slug
        with h.Load(s.port, path, "kept-key-1a2b") as load:
            time.sleep(0.4)
            h.write_file(kf, "# rotated\nkept-key-1a2b\nnew-key-5e6f\n")
            _hup(s)
            time.sleep(0.4)
            os.replace(alog, alog + ".1")
            _hup(s)
            for i in range(4):
                time.sleep(0.25)
                _hup(s)
            time.sleep(0.5)
        eq(load.bad[:5], [], "requests that failed during the reloads (%d ok)" % load.ok)
        check(load.ok > 50, "the load ran (%d requests)" % load.ok)
        text = s.wait_stderr(lambda t: "SIGHUP: keys reloaded" in t)
        check("keys reloaded from %s: 2 key(s)" % kf in text, "reload logged with the count:\n%s" % h.tail_text(text, 8))
        check("SIGHUP: log files reopened" in text, "reopen logged")
        eq(_post_ok(s, "new-key-5e6f"), 200, "POST with the added key")
        expect_error(s.create_resp({"sql_query": "SELECT 1"}, key="old-key-3c4d"), 401, "Invalid API key", "the removed key")
        eq(_post_ok(s, "kept-key-1a2b"), 200, "POST with the kept key")
    # The server stopped (SIGTERM): every access line is out, each request once.
    logged = collections.Counter(re.findall(r" id=(load-\d+-\d+)$", _read(alog + ".1") + _read(alog), re.M))
    missing = [rid for rid in load.ids if logged[rid] != 1]
    eq(missing[:5], [], "load requests without exactly one access line (of %d)" % len(load.ids))
    check("id=load-" in _read(alog), "lines after the rotation go to the new file")


def test_sighup_bad_keys_file_keeps_old_keys():
    d = h.tmpdir("ops-badkeys")
    kf = os.path.join(d, "keys")
    h.write_file(kf, "first-key-9a8b\n")
    with Server(keys=None, args=["--api-keys-file", kf], name="ops-badkeys") as s:
        eq(_post_ok(s, "first-key-9a8b"), 200, "POST with the first key")
        h.write_file(kf, "# all commented out\n\n")
        _hup(s)
        text = s.wait_stderr(lambda t: "keys not reloaded" in t)
        check("keys not reloaded: --api-keys-file %s holds no key; the 1 key(s) in use are kept" % kf in text, "logged why:\n%s" % h.tail_text(text, 5))
        eq(_post_ok(s, "first-key-9a8b"), 200, "the old key after a file without keys")
        os.unlink(kf)
        _hup(s)
        text = s.wait_stderr(lambda t: "cannot read --api-keys-file" in t)
        check("cannot read --api-keys-file %s" % kf in text, "logged why:\n%s" % h.tail_text(text, 5))
        eq(_post_ok(s, "first-key-9a8b"), 200, "the old key after the file went away")
        h.write_file(kf, "second-key-7c6d\n")
        _hup(s)
        s.wait_stderr(lambda t: "keys reloaded" in t)
        eq(_post_ok(s, "second-key-7c6d"), 200, "the new key once the file is good again")
        eq(_post_ok(s, "first-key-9a8b"), 401, "the first key is gone")
        check(s.alive(), "alive after three SIGHUPs")


def test_sighup_with_env_keys_keeps_them():
    """Keys from DAPI_API_KEYS cannot change while the process runs: SIGHUP says so and keeps
    them (it used to kill the process)."""
    with Server(keys=[KEY], name="ops-envkeys") as s:
        _hup(s)
        text = s.wait_stderr(lambda t: "SIGHUP:" in t)
        check("the 1 key(s) come from DAPI_API_KEYS, which cannot change while dapi runs" in text, "logged:\n%s" % h.tail_text(text, 5))
        check(s.alive(), "alive after SIGHUP")
        eq(_post_ok(s, KEY), 200, "the key still works")


# --------------------------------------------------------------------------- logs


def test_sighup_reopens_log_file():
    """logrotate's move-then-HUP: server and access lines written after SIGHUP go to new files
    at the configured paths; the moved files keep what came before."""
    d = h.tmpdir("ops-rotate")
    llog, alog = os.path.join(d, "dapi.log"), os.path.join(d, "access.log")
    with Server(keys=[KEY], args=["--log-file", llog, "--access-log", alog], name="ops-rotate") as s:
        m1, m2 = "/api/before-" + uuid.uuid4().hex, "/api/after-" + uuid.uuid4().hex
        s.request("GET", m1)
        check(m1 in _wait_file(alog, lambda t: m1 in t), "first access line in %s" % alog)
        check("serving" in _read(llog), "server lines in --log-file: %r" % _read(llog)[-300:])
        os.rename(alog, alog + ".1")
        os.rename(llog, llog + ".1")
        _hup(s)
        check("log files reopened" in _wait_file(llog, lambda t: "log files reopened" in t), "the reload is logged in the new --log-file")
        s.request("GET", m2)
        new = _wait_file(alog, lambda t: m2 in t)
        check(m2 in new and m1 not in new, "new access file has only the later line: %r" % new[-300:])
        old = _read(alog + ".1")
        check(m1 in old and m2 not in old, "rotated access file keeps the earlier line only: %r" % old[-300:])
        check("access " not in s.stderr_text(), "no access lines on stderr")
    check("stopped" in _read(llog), "the stop is in the new --log-file")


def test_access_line_fields():
    with Server(keys=[KEY], name="ops-fields") as s:
        slug = s.create("SELECT 1 AS x")
        rid = "it-rid-" + uuid.uuid4().hex
        r = s.api("GET", "/api/queries/%s/results?page_number=1&token=sekrit-9f" % slug, headers={"X-Request-Id": rid})
        expect_status(r, 200, "results")
        text = s.wait_stderr(lambda t: rid in t)
        lines = [l for l in text.splitlines() if rid in l]
        eq(len(lines), 1, "access lines for the request")
        want = ' access GET "/api/queries/%s/results?page_number=1&token=*" 200 ' % slug
        check(want in lines[0], "line has method, path and query (values other than numbers hidden):\n  %s\n  want %s" % (lines[0], want))
        check(lines[0].endswith(" client=127.0.0.1 id=%s" % rid), "line ends with the client and the id: %s" % lines[0])
        check("sekrit" not in text, "a non-numeric query value never reaches the log")
    with Server(keys=[KEY], args=["--log-format", "json"], name="ops-fields-json") as s:
        rid = "it-rid-" + uuid.uuid4().hex
        s.api("GET", "/api/queries/nope/results?page_number=7", headers={"X-Request-Id": rid})
        text = s.wait_stderr(lambda t: rid in t)
        objs = [json.loads(l) for l in text.splitlines() if rid in l]
        eq(len(objs), 1, "JSON access lines for the request")
        a = objs[0].get("access", {})
        eq((a.get("path"), a.get("query"), a.get("client"), a.get("request_id"), a.get("status")), ("/api/queries/nope/results", "page_number=7", "127.0.0.1", rid, 404), "JSON access fields")


def test_log_level_warn_hides_info_lines():
    d = h.tmpdir("ops-level")
    kf = os.path.join(d, "keys")
    h.write_file(kf, KEY + "\n")
    with Server(keys=None, args=["--log-level", "warn", "--api-keys-file", kf], name="ops-level") as s:
        marker = "/api/level-" + uuid.uuid4().hex
        s.request("GET", marker)
        os.unlink(kf)
        _hup(s)  # a warning: the keys file is gone
        text = s.wait_stderr(lambda t: "keys not reloaded" in t and marker in t)
        check("warn  SIGHUP: keys not reloaded" in text, "the warning is written:\n%s" % h.tail_text(text, 5))
        check(marker in text, "access lines are written whatever the level")
        info = [l for l in text.splitlines() if " info " in l]
        eq(info, [], "info lines with --log-level warn")
    with Server(keys=[KEY], env={"DAPI_LOG_LEVEL": "debug"}, name="ops-level-debug") as s:
        check(" info  dapi " in s.wait_stderr(lambda t: " info  dapi " in t), "info lines with DAPI_LOG_LEVEL=debug")


def test_access_log_flushed_at_exit():
    """Access lines are batched (written every 250 ms): a SIGTERM or SIGINT right after requests
    still writes every one of them."""
    d = h.tmpdir("ops-flush")
    for sig in (signal.SIGTERM, signal.SIGINT):
        alog = os.path.join(d, "access-%d.log" % sig)
        s = Server(keys=[KEY], args=["--access-log", alog, "--shutdown-grace", "0"], name="ops-flush-%d" % sig)
        try:
            ids = ["flush-%d-%d" % (sig, i) for i in range(40)]
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            for rid in ids:
                conn.request("GET", "/api/health", headers={"X-Request-Id": rid})
                conn.getresponse().read()
            conn.close()
            s.stopping = True
            os.kill(s.proc.pid, sig)
            rc = s.proc.wait(15)
        finally:
            s.kill()
        eq(rc, 0, "exit status after %s" % signal.Signals(sig).name)
        logged = set(re.findall(r" id=(\S+)$", _read(alog), re.M))
        missing = [rid for rid in ids if rid not in logged]
        eq(missing, [], "access lines missing after %s" % signal.Signals(sig).name)


def _metric(s, name):
    r = s.request("GET", "/metrics")
    expect_status(r, 200, "GET /metrics")
    m = re.search(r"^%s (\S+)$" % re.escape(name), r.body.decode(), re.M)
    check(m is not None, "%s in /metrics" % name)
    return float(m.group(1))


def test_access_log_that_takes_no_writes_does_not_stall_requests():
    """The access log is a FIFO nobody reads (as a log disk that blocks writes during writeback):
    requests go on, their lines wait in the log writer's batches (dapi_log_pending_bytes), and
    once the log takes writes again every line arrives, in order. Before the log writer, the
    request whose line filled a 64 KiB batch wrote it itself and hung, and the others behind
    it."""
    d = h.tmpdir("ops-fifo")
    fifo = os.path.join(d, "access.fifo")
    os.mkfifo(fifo, 0o600)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that dapi's open does not wait
    n = 3000  # ~330 KB of lines: five times what the pipe and one batch hold
    ids = ["fifo-%05d" % i for i in range(n)]
    try:
        with Server(keys=[KEY], args=["--access-log", fifo], name="ops-fifo") as s:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
            done = 0
            try:
                for rid in ids:
                    conn.request("GET", "/api/health", headers={"X-Request-Id": rid})
                    conn.getresponse().read()
                    done += 1
            except (socket.timeout, OSError):
                pass
            finally:
                conn.close()
            pending = _metric(s, "dapi_log_pending_bytes") if done == n else 0
            got = b""
            deadline = time.monotonic() + (20 if done == n else 2)  # else: only to unblock it
            while ids[-1].encode() not in got and time.monotonic() < deadline:
                try:
                    chunk = os.read(rfd, 1 << 16)
                except BlockingIOError:
                    time.sleep(0.02)
                    continue
                got += chunk
            eq(done, n, "requests answered while the access log took no writes (of %d)" % n)
            check(pending > 200000, "the lines wait in the writer's batches (%d bytes)" % pending)
            eq(_metric(s, "dapi_log_waits_total"), 0, "no thread waited for the writer")
            logged = re.findall(r" id=(fifo-\d+)$", got.decode("utf-8", "replace"), re.M)
            eq(logged, ids, "every access line, in order")
    finally:
        os.close(rfd)


def test_bad_log_path_is_a_start_error():
    d = h.tmpdir("ops-badlog")
    for flag in ("--log-file", "--access-log"):
        bad = os.path.join(d, "no", "such", "dir", "x.log")
        p = _run_failing(_serve_args(0, flag, bad))
        err = p.stderr.decode("utf-8", "replace")
        eq(p.returncode, 2, "exit status with an unwritable %s (stderr %r)" % (flag, err[-300:]))
        check("cannot open %s %s" % (flag, bad) in err, "names the setting and the file: %r" % err[-300:])


# --------------------------------------------------------------------------- request ids


def test_request_id_echoed():
    with Server(keys=[KEY], args=["--max-header-bytes", "4096"], name="ops-rid") as s:
        given = "abc-123_XYZ.~:/+=" + "x" * 100
        for path, key in (("/api/health", None), ("/api/nope", KEY), ("/api/queries/nope/results", KEY), ("/api/queries/nope/results", None)):
            r = s.api("GET", path, key=key, headers={"X-Request-Id": given})
            eq(r.headers.get("x-request-id"), given, "id echoed on %s (HTTP %d)" % (path, r.status))
        r = s.request("DELETE", "/api/health", headers={"X-Request-Id": given})
        eq((r.status, r.headers.get("x-request-id")), (405, given), "id echoed on a 405")
        # generated: absent, too long, not plain ASCII, with a space or a quote
        seen = set()
        for value in (None, "y" * 129, "caf\u00e9", "a b", 'a"b', ""):
            hdrs = {} if value is None else {"X-Request-Id": value.encode("utf-8").decode("latin-1")}
            r = s.request("GET", "/api/health", headers=hdrs)
            rid = r.headers.get("x-request-id", "")
            check(GEN_ID_RE.match(rid), "generated id for %r: %r" % (value, rid))
            seen.add(rid)
        eq(len(seen), 6, "generated ids differ")
        eq(s.request("GET", "/api/health", headers={"X-Request-Id": "z" * 128}).headers.get("x-request-id"), "z" * 128, "128 characters are kept")
        # early answers, given before the body is read or by the framing check
        early = (
            ("GET", "/api/health", {"X-Pad": "a" * 5000}, 431),
            ("POST", "/api/queries", {"Content-Length": str(10**12), "x-api-key": KEY}, 413),
            ("POST", "/api/queries", {"Content-Length": "5", "Transfer-Encoding": "chunked"}, 400),
            ("POST", "/api/queries", {"Content-Length": "-5"}, 400),
        )
        for method, path, hdrs, status in early:
            rid = "early-" + uuid.uuid4().hex
            hdrs = dict(hdrs, **{"X-Request-Id": rid})
            with s.raw() as c:
                c.send_watching(h.build_request(method, path, headers=hdrs, port=s.port))
                r = c.read_response()
            expect_status(r, status, "early answer to %s" % sorted(hdrs))
            eq(r.headers.get("x-request-id"), rid, "id echoed on the early %d" % status)
            check(rid in s.wait_stderr(lambda t: rid in t), "the early %d's access line has the id" % status)
