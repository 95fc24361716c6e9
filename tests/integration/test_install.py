"""Installing and running dapi as a service (docs/operations.md).

`make install DESTDIR=<tmp> PREFIX=/usr/local` for real (from the objects already built in
build/; nothing is rebuilt when they are current), then: the layout; the installed binary
runs from anywhere and serves; `make uninstall` leaves nothing; the man pages render without
warnings and list every option; the systemd unit passes `systemd-analyze verify` and its
environment starts the installed server; sd_notify READY=1 / STOPPING=1 arrive when they
should; the client library links with nothing but `pkg-config --cflags --libs`; and
scripts/deps.sh needs no root when nothing is missing."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import harness as h
from harness import check, eq, expect_status, jparse

ROOT = h.REPO_ROOT
PREFIX = "/usr/local"
KEY = "it-install-key-7d31"

# Everything `make install PREFIX=/usr/local` puts in place: path -> mode, or "-> target".
LAYOUT = {
    "bin/dapi": 0o755,
    "lib/dapi/libduckdb.so": 0o644,
    "lib/libdapi-client.so.%s": 0o644,
    "lib/libdapi-client.so.0": "-> libdapi-client.so.%s",
    "lib/libdapi-client.so": "-> libdapi-client.so.0",
    "lib/libdapi-client.a": 0o644,
    "lib/pkgconfig/dapi-client.pc": 0o644,
    "include/dapi/client.h": 0o644,
    "include/dapi/err.h": 0o644,
    "include/dapi/version.h": 0o644,
    "share/man/man1/dapi.1": 0o644,
    "share/man/man1/dapi-serve.1": 0o644,
    "share/man/man1/dapi-query.1": 0o644,
    "share/man/man1/dapi-keys.1": 0o644,
    "share/doc/dapi/README.md": 0o644,
    "share/doc/dapi/LICENSE": 0o644,
    "share/doc/dapi/CHANGELOG.md": 0o644,
    "lib/systemd/system/dapi.service": 0o644,
    "etc/dapi/dapi.env": 0o600,
}


def version():
    text = open(os.path.join(ROOT, "include", "dapi", "version.h")).read()
    return re.search(r'#define DAPI_VERSION "([^"]+)"', text).group(1)


def make_env():
    """The environment for a nested make: not the outer make's jobserver or flags."""
    env = h.base_env()
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def make(*args, timeout=280):
    p = subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args), capture_output=True,
                       text=True, timeout=timeout, env=make_env())
    check(p.returncode == 0, "make %s exited %d:\n%s" % (" ".join(args), p.returncode,
                                                          h.tail_text(p.stdout + p.stderr, 30)))
    return p.stdout + p.stderr


def files_under(d):
    """Every file and symlink under d, relative."""
    out = []
    for dirpath, dirs, files in os.walk(d):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(dirpath, x))]:
            out.append(os.path.relpath(os.path.join(dirpath, n), d))
    return sorted(out)


_install = {"dest": None, "lock": threading.Lock()}


def installed():
    """DESTDIR of the one `make install` of this run (made on first use)."""
    with _install["lock"]:
        if _install["dest"] is None:
            dest = h.tmpdir("destdir")
            make("install", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
            _install["dest"] = dest
        return _install["dest"]


def staged(dest, path=""):
    return os.path.join(dest, PREFIX.lstrip("/"), path)


class InstalledServer(h.Server):
    """A harness Server running another binary (the installed one)."""

    def __init__(self, binary, **kw):
        self.binary = binary
        super().__init__(**kw)

    def command(self):
        return [self.binary] + super().command()[1:]


def clean_env():
    env = h.base_env()
    for k in ("LD_LIBRARY_PATH", "LD_PRELOAD"):
        env.pop(k, None)
    return env


# --------------------------------------------------------------------------- layout


@h.timeout(300)
def test_install_puts_every_file_in_its_place():
    dest = installed()
    v = version()
    want = {}
    for path, what in LAYOUT.items():
        want[path % v if "%s" in path else path] = what % v if isinstance(what, str) and "%s" in what else what
    for doc in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if doc.endswith(".md"):
            want["share/doc/dapi/docs/" + doc] = 0o644
    check("share/doc/dapi/docs/operations.md" in want, "docs/operations.md exists")
    have = files_under(dest)
    eq(have, sorted(os.path.join(PREFIX.lstrip("/"), p) for p in want), "files installed under DESTDIR")
    for path, what in want.items():
        full = staged(dest, path)
        if isinstance(what, str):
            check(os.path.islink(full), "%s is a symlink" % path)
            eq("-> " + os.readlink(full), what, "%s points to" % path)
        else:
            eq(oct(os.lstat(full).st_mode & 0o7777), oct(what), "mode of %s" % path)
    # Paths inside the files are the final ones (PREFIX), never DESTDIR, and no placeholder
    # was left unfilled.
    for path in ("lib/systemd/system/dapi.service", "lib/pkgconfig/dapi-client.pc",
                 "share/man/man1/dapi.1", "share/man/man1/dapi-serve.1", "share/man/man1/dapi-query.1",
                 "share/man/man1/dapi-keys.1"):
        text = open(staged(dest, path)).read()
        eq(re.findall(r"@[A-Z]+@", text), [], "unfilled placeholders in %s" % path)
        check(dest not in text, "%s names the DESTDIR %s" % (path, dest))
    unit = open(staged(dest, "lib/systemd/system/dapi.service")).read()
    check(re.search(r"^ExecStart=/usr/local/bin/dapi serve$", unit, re.M), "ExecStart: %s" % unit)
    check(re.search(r"^EnvironmentFile=-/usr/local/etc/dapi/dapi\.env$", unit, re.M),
          "the unit reads the installed environment file")
    # the header is the repository's; the installed one is complete on its own (no src/)
    eq(open(staged(dest, "include/dapi/client.h")).read(),
       open(os.path.join(ROOT, "include", "dapi", "client.h")).read(), "installed client.h")


@h.timeout(300)
def test_installed_binary_runs_from_anywhere_and_serves():
    dest = installed()
    binary = staged(dest, "bin/dapi")
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True).stdout
    m = re.search(r"\(RUNPATH\)\s+Library runpath: \[(.*)\]", dyn)
    check(m, "the binary has a RUNPATH:\n" + dyn)
    eq(m.group(1).split(":"), ["$ORIGIN/lib", "$ORIGIN/../lib/dapi"], "RUNPATH")
    # ldd resolves DuckDB to the private copy, and nothing is missing
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, env=clean_env()).stdout
    check("not found" not in ldd, "ldd finds every library:\n" + ldd)
    duck = re.search(r"libduckdb\.so => (\S+)", ldd)
    check(duck, "ldd lists libduckdb:\n" + ldd)
    eq(os.path.realpath(duck.group(1)), staged(dest, "lib/dapi/libduckdb.so"), "libduckdb resolved to")
    # from another directory, and after moving the whole tree elsewhere
    moved = os.path.join(h.tmpdir("moved"), "opt-dapi")
    shutil.copytree(staged(dest), moved, symlinks=True)
    for b in (binary, os.path.join(moved, "bin", "dapi")):
        p = subprocess.run([b, "--version"], capture_output=True, text=True, timeout=30,
                           cwd=h.tmpdir("elsewhere"), env=clean_env())
        eq(p.returncode, 0, "%s --version exit status (stderr %r)" % (b, p.stderr))
        check(p.stdout.startswith("dapi %s (DuckDB v" % version()), "version line: %r" % p.stdout)
    # the build tree's binary keeps finding build/lib
    eq(subprocess.run([os.path.join(ROOT, "build", "dapi"), "--version"], capture_output=True,
                      cwd=h.tmpdir("elsewhere"), env=clean_env(), timeout=30).returncode,
       0, "build/dapi --version")
    # the installed server answers on 127.0.0.1
    with InstalledServer(binary, keys=[KEY], name="installed") as s:
        r = s.request("GET", "/api/health")
        expect_status(r, 200, "health of the installed server")
        eq(jparse(r), {"status": "ok"}, "health body")
        eq(s.query("SELECT 6 * 7 AS answer"), [{"answer": 42}], "a query on the installed server")


@h.timeout(300)
def test_uninstall_leaves_nothing_and_keeps_an_edited_env_file():
    dest = h.tmpdir("destdir-uninstall")
    make("install", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
    check(len(files_under(dest)) >= len(LAYOUT), "installed: %s" % files_under(dest))
    make("uninstall", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
    eq(files_under(dest), [], "files left by make uninstall")
    for d in ("lib/dapi", "include/dapi", "share/doc/dapi", "etc/dapi"):
        check(not os.path.exists(staged(dest, d)), "make uninstall removes %s" % d)
    # The environment file is the operator's: a reinstall keeps an edited one, and so does
    # uninstall.
    make("install", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
    env_file = staged(dest, "etc/dapi/dapi.env")
    with open(env_file, "a") as f:
        f.write("DAPI_PORT=6001\n")
    out = make("install", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
    check("kept" in out, "install says it kept the edited environment file:\n" + out[-500:])
    check(open(env_file).read().endswith("DAPI_PORT=6001\n"), "reinstall overwrote the edited dapi.env")
    make("uninstall", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
    eq(files_under(dest), [os.path.join(PREFIX.lstrip("/"), "etc/dapi/dapi.env")],
       "after uninstall only the edited environment file is left")


# --------------------------------------------------------------------------- man pages


def help_flags(*cmd):
    out = subprocess.run([h.BIN, "help"] + list(cmd), capture_output=True, text=True, timeout=10).stdout
    return sorted(set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", out, re.M)))


def env_vars(*cmd):
    out = subprocess.run([h.BIN, "help"] + list(cmd), capture_output=True, text=True, timeout=10).stdout
    return sorted(set(re.findall(r"\b(DAPI_[A-Z_]+)\b", out)))


@h.timeout(300)
def test_man_pages_render_without_warnings_and_list_every_option():
    if shutil.which("man") is None:
        raise h.Skip("man is not installed (Debian: man-db, which scripts/deps.sh installs)")
    dest = installed()
    mandir = staged(dest, "share/man")
    rendered = {}
    for page in ("dapi", "dapi-serve", "dapi-query", "dapi-keys"):
        path = os.path.join(mandir, "man1", page + ".1")
        env = dict(clean_env(), MANWIDTH="80", LC_ALL="C.UTF-8")
        p = subprocess.run(["man", "--warnings", "-l", "-Tutf8", path], capture_output=True,
                           text=True, timeout=30, env=env)
        eq(p.returncode, 0, "man -l %s exit status" % page)
        eq(p.stderr, "", "warnings of man --warnings -l %s" % page)
        check(len(p.stdout) > 500, "%s renders: %r" % (page, p.stdout[:200]))
        # the installed page is found by name through MANPATH
        w = subprocess.run(["man", "-w", page], capture_output=True, text=True, timeout=30,
                           env=dict(env, MANPATH=mandir))
        eq(w.stdout.strip(), path, "man -w %s with MANPATH=%s" % (page, mandir))
        # rendered text with the hyphens and bold/underline reduced to plain text
        rendered[page] = re.sub(r".\x08", "", p.stdout).replace("\u2010", "-").replace("\u2212", "-")
    text = rendered["dapi-serve"]
    flags = help_flags("serve")
    check(len(flags) > 20, "dapi help serve lists the settings: %s" % flags)
    for f in flags + env_vars("serve"):
        check(re.search(re.escape(f) + r"\b", text), "%s is missing from dapi-serve(1)" % f)
    for f in help_flags("query") + env_vars("query"):
        check(re.search(re.escape(f) + r"\b", rendered["dapi-query"]), "%s is missing from dapi-query(1)" % f)
    for f in help_flags("keys") + env_vars("keys"):
        check(re.search(re.escape(f) + r"\b", rendered["dapi-keys"]), "%s is missing from dapi-keys(1)" % f)
    for f in help_flags("health"):
        check(f in rendered["dapi"], "dapi health's %s is missing from dapi(1)" % f)
    for cmd in ("layers", "describe"):
        for f in help_flags(cmd):
            check(f in rendered["dapi"], "dapi %s's %s is missing from dapi(1)" % (cmd, f))
    for cmd in ("serve", "query", "health", "layers", "describe", "sample-data", "--version", "help"):
        check("dapi " + cmd in rendered["dapi"], "dapi(1) lists dapi %s" % cmd)
    check("/usr/local/etc/dapi/dapi.env" in text, "dapi-serve(1) names the installed environment file")


# --------------------------------------------------------------------------- the unit


def unit_root(dest):
    """A root for `systemd-analyze --root`: the installed tree (hard links) plus the host's
    own units (sysinit.target & co., which every service depends on)."""
    root = h.tmpdir("unit-root")
    subprocess.run(["cp", "-al", dest + "/.", root], check=True)
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isfile(os.path.join(d, "sysinit.target")):
            os.makedirs(os.path.join(root, "usr/lib/systemd"), exist_ok=True)
            shutil.copytree(d, os.path.join(root, "usr/lib/systemd/system"), symlinks=True,
                            dirs_exist_ok=True)
            return root
    raise h.Skip("the host has no systemd units (sysinit.target) to verify against")


@h.timeout(300)
def test_systemd_unit_verifies_and_is_hardened():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise h.Skip("systemd-analyze is not installed (Debian: systemd, which scripts/deps.sh installs)")
    dest = installed()
    root = unit_root(dest)
    # No systemd runs here (nor needs to): verify loads the unit the way the manager would,
    # within --root, checks every setting, that ExecStart is an executable in the root, and
    # (through man, with the installed pages on MANPATH) the Documentation= man pages.
    # It reports bad settings on stderr without failing, so stderr must be empty too.
    env = dict(clean_env(), MANPATH=os.path.join(root, "usr/local/share/man"))
    p = subprocess.run([analyze, "verify", "--root=" + root, "dapi.service"], capture_output=True,
                       text=True, timeout=60, env=env)
    eq((p.returncode, p.stderr.strip()), (0, ""), "systemd-analyze verify --root dapi.service")
    # and it does catch what it should: a missing binary
    os.unlink(os.path.join(root, "usr/local/bin/dapi"))
    p = subprocess.run([analyze, "verify", "--root=" + root, "dapi.service"], capture_output=True,
                       text=True, timeout=60, env=env)
    check(p.returncode != 0 and "/usr/local/bin/dapi" in p.stderr,
          "verify notices a missing ExecStart binary: %d %r" % (p.returncode, p.stderr))
    unit = open(os.path.join(root, "usr/local/lib/systemd/system/dapi.service")).read()
    for line in ("Type=notify", "DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "PrivateDevices=yes", "CapabilityBoundingSet=",
                 "StateDirectory=dapi dapi/state dapi/lake", "UMask=0077",
                 "LoadCredential=api-keys:/usr/local/etc/dapi/api-keys",
                 "EnvironmentFile=-/usr/local/etc/dapi/dapi.env"):
        check(re.search("^" + re.escape(line) + "$", unit, re.M), "the unit has %s" % line)
    # systemd's own rating of the sandbox, offline: "OK" is below 4.0; we are at 1.6.
    p = subprocess.run([analyze, "security", "--offline=true", "--root=" + root, "dapi.service"],
                       capture_output=True, text=True, timeout=60, env=env)
    m = re.search(r"Overall exposure level for dapi\.service: ([0-9.]+)", p.stdout + p.stderr)
    if m is None and "offline" in p.stderr:
        return  # a systemd without --offline: verify above is the check
    check(m, "systemd-analyze security printed a rating:\n" + (p.stdout + p.stderr)[-800:])
    check(float(m.group(1)) <= 2.0, "exposure %s > 2.0: a hardening setting was lost\n%s"
          % (m.group(1), p.stdout[-3000:]))


def unit_environment(unit, state_root, creds):
    """The unit's Environment= settings with its specifiers filled in as systemd would."""
    env = {}
    for value in re.findall(r"^Environment=(.*)$", unit, re.M):
        for item in value.split():
            k, v = item.split("=", 1)
            env[k] = v.replace("%S", state_root).replace("%d", creds)
    return env


def env_file_settings(path):
    """VAR=value lines of a systemd environment file (comments and blanks ignored)."""
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def as_the_unit(dest, keys):
    """(binary, environment, state root) for running the installed unit's ExecStart as
    systemd would: its Environment= with %S and %d filled in, its StateDirectory= created,
    and its LoadCredential= api-keys holding keys."""
    unit = open(staged(dest, "lib/systemd/system/dapi.service")).read()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    eq(exec_start[1:], ["serve"], "ExecStart arguments")
    state_root, creds = h.tmpdir("var-lib"), h.tmpdir("credentials")
    for d in re.search(r"^StateDirectory=(.*)$", unit, re.M).group(1).split():
        os.makedirs(os.path.join(state_root, d), exist_ok=True)
    eq(re.findall(r"^LoadCredential=api-keys:(.*)$", unit, re.M), ["/usr/local/etc/dapi/api-keys"],
       "the unit's credential")
    h.write_file(os.path.join(creds, "api-keys"), keys)
    return os.path.join(dest, exec_start[0].lstrip("/")), unit_environment(unit, state_root, creds), state_root


@h.timeout(300)
def test_unit_environment_with_a_key_file_without_keys_does_not_start():
    binary, env, _ = as_the_unit(installed(), "# no key yet\n\n")
    env.update({"DAPI_HOST": "127.0.0.1", "DAPI_PORT": "0"})
    p = subprocess.run([binary, "serve"], capture_output=True, text=True, timeout=60,
                       env=dict(clean_env(), **env), cwd=h.tmpdir("cwd-unit"))
    eq(p.returncode, 2, "exit status (a configuration error) with an api-keys credential holding no key (stderr %r)" % p.stderr)
    check("--api-keys-file" in p.stderr and "holds no key" in p.stderr, "the reason: %r" % p.stderr)
    check("listening" not in p.stdout, "it did not listen: %r" % p.stdout)


class NotifySocket:
    """A unix datagram socket standing in for systemd's notification socket."""

    def __init__(self):
        self.path = os.path.join(h.tmpdir("notify"), "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout):
        """The next message as a dict (None after timeout s)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        return dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)

    def close(self):
        self.sock.close()


@h.timeout(300)
def test_unit_environment_starts_the_installed_server():
    """What systemd would run, without systemd: ExecStart with the unit's Environment= (%S,
    %d filled in), the keys credential and the environment file's settings, and a
    notification socket. The server must come up on those defaults and say READY=1."""
    dest = installed()
    binary, env, state_root = as_the_unit(dest, "# the service's keys\n%s\n" % KEY)
    eq(sorted(env), ["DAPI_API_KEYS_FILE", "DAPI_DATA_DIR", "DAPI_STATE_DIR"], "the unit's environment")
    # the shipped environment file sets nothing; an operator's line wins over the unit
    eq(env_file_settings(staged(dest, "etc/dapi/dapi.env")), {}, "settings of the shipped dapi.env")
    env.update({"DAPI_HOST": "127.0.0.1", "DAPI_PORT": "0"})
    ns = NotifySocket()
    env["NOTIFY_SOCKET"] = ns.path

    class UnitServer(h.Server):
        def command(self):
            return [binary, "serve"]

    try:
        s = UnitServer(keys=None, env=env, name="unit-env", wait=False)
        msg = ns.recv(30)
        check(msg is not None and msg.get("READY") == "1", "READY=1 from the unit's server: %r\n%s"
              % (msg, s.diagnostics()))
        s.wait_listening()
        r = s.request("GET", "/api/health")
        expect_status(r, 200, "health of the server started as the unit would")
        eq(s.query("SELECT 1 AS one", key=KEY), [{"one": 1}], "a query with the credential's key")
        r = s.api("POST", "/api/queries", body={"sql_query": "SELECT 1"}, key="not-a-key")
        expect_status(r, 401, "a key that is not in the credential")
        check(os.path.isdir(os.path.join(state_root, "dapi", "state", "queries")),
              "results land in the StateDirectory")
        s.stop()
        msg = ns.recv(5)
        check(msg is not None and msg.get("STOPPING") == "1", "STOPPING=1 at the stop: %r" % msg)
    finally:
        ns.close()


# --------------------------------------------------------------------------- sd_notify


def term(s):
    """SIGTERM to a harness server without its stop() (which waits for the exit)."""
    s.stopping = True
    os.kill(s.proc.pid, signal.SIGTERM)


def test_sd_notify_ready_once_listening_and_stopping_on_sigterm():
    ns = NotifySocket()
    try:
        s = h.Server(keys=[KEY], env={"NOTIFY_SOCKET": ns.path}, name="notify", wait=False)
        msg = ns.recv(h.START_TIMEOUT)
        check(msg is not None, "no notification within %.0f s\n%s" % (h.START_TIMEOUT, s.diagnostics()))
        eq(msg.get("READY"), "1", "the first notification is READY=1 (%r)" % msg)
        # READY=1 means the port answers: right now, with no retry.
        m = re.match(r"listening on http://127\.0\.0\.1:(\d+)$", msg.get("STATUS", ""))
        check(m, "STATUS says where it listens: %r" % msg)
        port = int(m.group(1))
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = conn.recv(64)
        conn.close()
        check(head.startswith(b"HTTP/1.1 200"), "health right after READY=1: %r" % head)
        s.wait_listening()
        eq(s.port, port, "the port in STATUS and in 'dapi listening on'")
        # nothing more until the stop begins
        eq(ns.recv(0.5), None, "a notification before SIGTERM")
        term(s)
        msg = ns.recv(10)
        check(msg is not None and msg.get("STOPPING") == "1", "STOPPING=1 after SIGTERM: %r" % msg)
        rc = s.proc.wait(h.STOP_TIMEOUT)
        s._close_logs()
        eq(rc, 0, "exit status after SIGTERM")
        eq(ns.recv(0.2), None, "a notification after STOPPING=1")
    finally:
        ns.close()


def create_many(s, n, threads=4, seen=None):
    """n queries of s's key, made over keep-alive connections (identical SQL: each after the
    first reuses the first's result, so nothing runs); returns how many got 200, and appends
    to seen (a list) every answer other than 200 and every exception. A creation
    refused for now (503 or 429, with Retry-After: nothing was accepted) is sent again, as a
    client would; anything else ends the setup with what was seen (statuses, exceptions)."""
    import http.client
    import json
    made = [0] * threads
    seen = [] if seen is None else seen

    def work(t):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        body = json.dumps({"sql_query": "SELECT 1 AS one"})
        try:
            for _ in range(n // threads + (t < n % threads)):
                for attempt in range(50):
                    c.request("POST", "/api/queries", body=body,
                              headers={"x-api-key": KEY, "Content-Type": "application/json"})
                    r = c.getresponse()
                    text = r.read()
                    if r.status not in (429, 503):
                        break
                    seen.append("%d %s" % (r.status, text[:120]))
                    time.sleep(min(float(r.getheader("retry-after") or 0.1), 1.0))
                made[t] += r.status == 200
                if r.status != 200:
                    seen.append("%d %s" % (r.status, text[:120]))
        except Exception as e:  # (reported by the caller's count)
            seen.append("thread %d: %r" % (t, e))
        c.close()

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(made)


def test_sd_notify_progress_while_many_stored_queries_load():
    """A start reading back millions of stored queries takes minutes (about 35 us each): it
    must tell systemd it is making progress, or the unit's start timeout (90 s) kills it and
    Restart= starts it again, for ever. Every 4,096 queries read back: STATUS= says how many,
    EXTEND_TIMEOUT_USEC= gives the start 30 s more. Before, the first notification was READY=1
    whatever the start had to read."""
    ns = NotifySocket()
    try:
        s = h.Server(keys=[KEY], env={"NOTIFY_SOCKET": ns.path}, name="notify-load")
        msg = ns.recv(h.START_TIMEOUT)
        eq(msg and msg.get("READY"), "1", "READY=1 of an empty state dir first (%r)" % msg)
        seen = []
        eq(create_many(s, 4200, seen=seen), 4200, "queries created (besides 200: %r)" % seen[:5])
        s.stop()
        while ns.recv(0.5) is not None:  # (STOPPING=1)
            pass
        s.start(wait=False)
        msg = ns.recv(h.START_TIMEOUT)
        check(msg is not None, "no notification at the second start\n%s" % s.diagnostics())
        eq(msg.get("STATUS"), "loading stored queries: 4096 so far", "the first notification (%r)" % msg)
        eq(msg.get("EXTEND_TIMEOUT_USEC"), "30000000", "the start asks for 30 s more (%r)" % msg)
        check("READY" not in msg, "not ready while loading: %r" % msg)
        msg = ns.recv(h.START_TIMEOUT)
        eq(msg and msg.get("READY"), "1", "READY=1 once loaded (%r)" % msg)
        s.wait_listening()
        text = s.wait_stderr(lambda t: "queries loaded" in t)
        check("4200 queries loaded" in text, "all of them were read back:\n" + text[-600:])
        expect_status(s.request("GET", "/api/health"), 200, "health after the long start")
        s.stop()
    finally:
        ns.close()


def test_unreachable_notify_socket_is_logged_not_fatal():
    path = os.path.join(h.tmpdir("notify-none"), "nobody-listens.sock")
    with h.Server(keys=[KEY], env={"NOTIFY_SOCKET": path}, name="notify-none") as s:
        expect_status(s.request("GET", "/api/health"), 200, "health with a dead NOTIFY_SOCKET")
        text = s.wait_stderr(lambda t: "cannot notify the service manager" in t)
        check("cannot notify the service manager (READY=1)" in text, "a warning is logged:\n" + text[-800:])


# --------------------------------------------------------------------------- client library

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dapi/client.h>
#include <dapi/version.h>

/* A name the library uses inside: neither the shared nor the static library may clash. */
int dapi_buf_init(void);
int dapi_buf_init(void)
{
    return 7;
}

static int fail(const char *what, const struct dapi_client_err *err)
{
    fprintf(stderr, "%s: %s (kind %d, HTTP %d)\n", what, err->message, (int)err->kind, err->status);
    return 1;
}

int main(int argc, char **argv)
{
    struct dapi_client_config cfg;
    struct dapi_client_err err;
    struct dapi_client *c;
    if(argc != 2)
        return 2;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = argv[1];
    cfg.api_key = getenv("IT_KEY");
    cfg.max_attempts = 1;
    if(dapi_client_new(&c, &cfg, &err))
        return 2;
    char *status = NULL, *slug = NULL;
    if(dapi_client_health(c, &status, &err))
        return fail("health", &err);
    printf("health %s\n", status);
    struct dapi_client_query q = {"SELECT 'caf\xc3\xa9 \"x\"' AS s, 42 AS n", NULL, NULL, 0};
    if(dapi_client_create(c, &q, &slug, &err))
        return fail("create", &err);
    struct dapi_page *page;
    if(dapi_client_page(c, slug, 1, &page, &err))
        return fail("page", &err);
    size_t ncols;
    const struct dapi_cell *cells = dapi_page_row(page, 0, &ncols);
    printf("rows %zu cols %zu\n", dapi_page_rows(page), ncols);
    for(size_t i = 0; i < ncols; i++) {
        char *key = malloc(cells[i].key_len - 1), *val = malloc(cells[i].val_len + 1);
        if(dapi_client_unquote(cells[i].key, cells[i].key_len, key, NULL))
            return 3;
        if(cells[i].val[0] == '"') {
            if(dapi_client_unquote(cells[i].val, cells[i].val_len, val, NULL))
                return 3;
        } else {
            memcpy(val, cells[i].val, cells[i].val_len);
            val[cells[i].val_len] = '\0';
        }
        printf("%s=%s\n", key, val);
        free(key);
        free(val);
    }
    printf("status %d %s\n", dapi_err_status(DAPI_ERR_RATE), DAPI_VERSION);
    dapi_page_free(page);
    free(slug);
    free(status);
    dapi_client_free(c);
    return dapi_buf_init() == 7 ? 0 : 4;
}
"""


def header_functions(dest):
    """Names of the functions declared in the installed dapi/client.h and dapi/err.h."""
    names = set()
    for hdr in ("client.h", "err.h"):
        text = open(staged(dest, "include/dapi/" + hdr)).read()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        names |= set(re.findall(r"\b(dapi_\w+)\s*\(", text))
    return names - {"dapi_client_page_fn"}


@h.timeout(300)
def test_client_library_links_with_pkg_config_alone():
    if shutil.which("pkg-config") is None or shutil.which("cc") is None:
        raise h.Skip("pkg-config or cc is not installed")
    dest = installed()
    libdir = staged(dest, "lib")
    so = os.path.join(libdir, "libdapi-client.so.%s" % version())
    # the shared library: its soname, what it needs (no server, no DuckDB), what it exports
    dyn = subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout
    check("Library soname: [libdapi-client.so.0]" in dyn, "soname:\n" + dyn)
    needed = re.findall(r"Shared library: \[(.*?)\]", dyn)
    for lib in needed:
        check(not re.match(r"lib(duckdb|microhttpd|crypto|ssl|systemd)\b", lib),
              "libdapi-client needs %s (all: %s)" % (lib, needed))
    exported = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True).stdout
    exported = {re.sub(r"@.*", "", l.split()[-1]) for l in exported.splitlines() if " T " in l}
    eq(sorted(exported), sorted(header_functions(dest)),
       "exported functions = the functions of dapi/client.h and dapi/err.h")
    # a program built with nothing but pkg-config's flags (from the staged tree)
    work = h.tmpdir("client-prog")
    src = os.path.join(work, "prog.c")
    h.write_file(src, PROGRAM)
    env = dict(clean_env(), PKG_CONFIG_SYSROOT_DIR=dest, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "dapi-client"], capture_output=True,
                           text=True, env=env, timeout=30)
    eq(flags.returncode, 0, "pkg-config --cflags --libs dapi-client (%s)" % flags.stderr.strip())
    check(ROOT not in flags.stdout, "pkg-config points into the repository: %s" % flags.stdout)
    exe = os.path.join(work, "prog")
    p = subprocess.run(["cc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", src, "-o", exe]
                       + flags.stdout.split(), capture_output=True, text=True, cwd=work, timeout=120)
    check(p.returncode == 0, "compiling against the installed library:\n" + p.stderr[-2000:])
    # and statically, against the .a with only libcurl and jansson shared
    exe_a = os.path.join(work, "prog-static")
    libs = subprocess.run(["pkg-config", "--libs", "libcurl", "jansson"], capture_output=True,
                          text=True).stdout.split()
    cflags = subprocess.run(["pkg-config", "--cflags", "dapi-client"], capture_output=True, text=True,
                            env=env).stdout.split()
    p = subprocess.run(["cc", "-std=c99", src, "-o", exe_a] + cflags
                       + [os.path.join(libdir, "libdapi-client.a")] + libs + ["-pthread", "-lm"],
                       capture_output=True, text=True, cwd=work, timeout=120)
    check(p.returncode == 0, "linking the static library:\n" + p.stderr[-2000:])
    run_env = dict(clean_env(), LD_LIBRARY_PATH=libdir, IT_KEY=KEY)
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, env=run_env).stdout
    check(re.search(r"libdapi-client\.so\.0 => %s" % re.escape(libdir), ldd), "ldd:\n" + ldd)
    check("libduckdb" not in ldd, "the program loads DuckDB:\n" + ldd)
    with h.Server(keys=[KEY], name="client-lib") as s:
        for e in (exe, exe_a):
            p = subprocess.run([e, "http://127.0.0.1:%d" % s.port], capture_output=True, text=True,
                               timeout=60, env=run_env)
            eq((p.returncode, p.stdout, p.stderr),
               (0, 'health ok\nrows 1 cols 2\ns=caf\u00e9 "x"\nn=42\nstatus 429 %s\n' % version(), ""),
               "%s against the server" % os.path.basename(e))


# --------------------------------------------------------------------------- deps.sh


def test_deps_needs_no_root_when_nothing_is_missing():
    """`make` runs scripts/deps.sh; when every package is present it must succeed as a
    normal user (it used to demand sudo before looking)."""
    script = os.path.join(ROOT, "scripts", "deps.sh")
    cmd = [script]
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise h.Skip("running as root without runuser: cannot try deps.sh as a normal user")
        probe = subprocess.run([runuser, "-u", "nobody", "--", "test", "-r", script], timeout=10)
        if probe.returncode != 0:
            raise h.Skip("user nobody cannot read %s" % script)
        cmd = [runuser, "-u", "nobody", "--"] + cmd
    env = dict(clean_env(), PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=h.tmpdir("deps"))
    if "installing" in p.stdout or "by hand" in p.stderr:
        raise h.Skip("packages are missing here, so deps.sh has to install: %s"
                     % (p.stdout + p.stderr).strip()[-300:])
    eq((p.returncode, p.stdout + p.stderr), (0, ""), "scripts/deps.sh as a normal user with nothing missing")
