"""Shared helpers for dapi's integration tests (Python 3 standard library only).

A test is a function named test_* in tests/integration/test_*.py. It starts the real
binary (Server) on 127.0.0.1:0, speaks real HTTP and asserts with the helpers below, which
print both sides on failure. run.py discovers and runs the tests; see its docstring.

Servers:
  Server(...)            a server owned by one test; use it as a context manager so it is
                         stopped (SIGTERM, must exit 0 within 15 s) when the test ends.
  Shared(lambda: Server(...))
                         one lazily started server per test file, stopped by run.py after
                         the last test of that file; restarted if a test crashed it.

Every server's stderr goes to a file; run.py prints its tail when a test fails. A server
that dies from a signal, or does not exit on SIGTERM, fails the test that was running.
With a sanitizer build (`make asan`), every report any process writes (server, CLI,
sample-data) fails the test during which it was written: see sanitizer_reports().
"""

import base64
import glob
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import struct
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# Set by run.py.
BIN = None
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 60.0

LISTEN_RE = re.compile(r"dapi listening on http://([0-9.]+):(\d+)")
SLUG_RE = re.compile(r"^dapi-query-[0-9A-Za-z]{22}$")

_lock = threading.RLock()
_root = None
_all_servers = []
_shared = []
CURRENT_TEST = None  # name of the test the runner is running (set by run.py)


class Skip(Exception):
    """Raise to skip a test; the message says why."""


class SetupError(AssertionError):
    pass


def timeout(seconds):
    """Decorator: per-test timeout in seconds (default in run.py)."""

    def deco(fn):
        fn._timeout = seconds
        return fn

    return deco


def alone(fn):
    """Decorator: the test asserts a time bound that other tests running beside it could break
    (an answer within 1 s, a stop within 3 s, read-ahead against none). With run.py --jobs it
    runs after the parallel part, one test at a time, with nothing else running."""
    fn._alone = True
    return fn


# --------------------------------------------------------------------------- temp dirs


def root_dir():
    global _root
    with _lock:
        if _root is None:
            _root = os.path.realpath(tempfile.mkdtemp(prefix="dapi-it-"))
        return _root


def tmpdir(prefix="t"):
    """A fresh directory under the suite's temp root (removed at the end of the run)."""
    return os.path.realpath(tempfile.mkdtemp(prefix=prefix + "-", dir=root_dir()))


def cleanup_root():
    global _root
    with _lock:
        if _root and not os.environ.get("DAPI_IT_KEEP"):
            shutil.rmtree(_root, ignore_errors=True)
            _root = None


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path + ".tmp-write"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


_sample = {"path": None, "error": None, "manifest": None, "n": 0}
_sample_lock = threading.Lock()


def _manifest(d):
    out = {}
    for dirpath, _, files in os.walk(d):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                out[os.path.relpath(p, d)] = os.path.getsize(p)
            except OSError:
                pass
    return out


def pack_records(state_dir):
    """The live records of the pack files (queries/.pack-N: small finished queries; docs/
    design.md, "Small results"): {slug: (meta dict, result bytes)}, read as a start reads
    them (each file up to its first torn record; the later record of a slug wins)."""
    qdir = os.path.join(state_dir, "queries")
    try:
        names = [n for n in os.listdir(qdir) if n.startswith(".pack-") and n[6:].isdigit()]
    except OSError:
        return {}
    out = {}
    for name in sorted(names, key=lambda n: int(n[6:])):
        try:
            with open(os.path.join(qdir, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        off = 0
        # record: magic, slug length, meta length, 0 (u32 LE each), result length, checksum
        # (u64); then slug, meta, zeros to 8, result, zeros to 8
        while off + 32 <= len(data):
            magic, slen, mlen, zero, rlen = struct.unpack_from("<IIIIQ", data, off)
            at = off + 32 + ((slen + mlen + 7) & ~7)
            end = at + ((rlen + 7) & ~7)
            if magic not in (0x31505144, 0x58505144) or zero or end > len(data):
                break
            if magic == 0x31505144:
                slug = data[off + 32 : off + 32 + slen].decode("utf-8", "replace")
                try:
                    meta = json.loads(data[off + 32 + slen : off + 32 + slen + mlen])
                except ValueError:
                    break
                out[slug] = (meta, data[at : at + rlen])
            off = end
    return out


def persisted_meta(state_dir, slug):
    """What a start after a crash would read of a query: its pack record (a small result,
    which wins over any file), else its meta.json if whole, else its latest record in the
    creation log (queries/.log: a new query has no files until its run ends; docs/design.md,
    Durability), else created.json. None if there is none."""
    qdir = os.path.join(state_dir, "queries")
    packed = pack_records(state_dir).get(slug)
    if packed:
        return packed[0]
    try:
        with open(os.path.join(qdir, slug, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    found = None
    try:
        with open(os.path.join(qdir, ".log"), "rb") as f:
            log = f.read()
    except OSError:
        log = b""
    # records: magic "DQL1", generation, length, kind (u32 LE each), checksum (u64), payload
    # padded to 8 bytes; the current generation is the first record's
    off, gen = 0, None
    while off + 24 <= len(log):
        magic, g, n, kind = struct.unpack_from("<IIII", log, off)
        if magic != 0x314C5144 or off + 24 + n > len(log) or (gen is not None and g != gen):
            break
        gen = g
        data = log[off + 24 : off + 24 + n]
        if kind == 2 and data.decode("utf-8", "replace") == slug:
            found = None
        elif kind == 1:
            try:
                m = json.loads(data)
            except ValueError:
                m = None
            if isinstance(m, dict) and m.get("slug") == slug:
                found = m
        off += 24 + ((n + 7) & ~7)
    if found is not None:
        return found
    try:
        with open(os.path.join(qdir, slug, "created.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def npm_ci(pkg_dir, dest_name, scripts):
    """build/DEST_NAME with the npm packages of PKG_DIR's committed lock installed (npm ci:
    exactly the lock's versions, each tarball checked against its integrity; again only when
    the lock or package.json changed), and PKG_DIR's SCRIPTS copied next to them. Skips the
    test when the registry cannot be reached; --ignore-scripts: packages run nothing at
    install (playwright-core downloads no browser: Debian's is used)."""
    for tool in ("npm", "node"):
        check(shutil.which(tool), "%s is not installed (scripts/deps.sh installs it)" % tool)
    dest = os.path.join(REPO_ROOT, "build", dest_name)
    lock = open(os.path.join(pkg_dir, "package-lock.json"), "rb").read()
    stamp = os.path.join(dest, "node_modules", ".dapi-lock-sha256")
    digest = hashlib.sha256(lock + open(os.path.join(pkg_dir, "package.json"), "rb").read()).hexdigest()
    if not (os.path.isfile(stamp) and open(stamp).read() == digest):
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(pkg_dir, f), dest)
        p = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=dest, capture_output=True, text=True, timeout=240,
        )
        if p.returncode != 0:
            if re.search(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|network", p.stderr):
                raise Skip("the npm registry is not reachable: " + p.stderr.strip()[-200:])
            fail("npm ci of %s failed:\n%s" % (os.path.relpath(pkg_dir, REPO_ROOT), p.stderr[-2000:]))
        with open(stamp, "w") as f:
            f.write(digest)
    for f in scripts:
        shutil.copy(os.path.join(pkg_dir, f), dest)
    return dest


def shop_lake(name):
    """A small lake of two layers: shop.customers (id, name, country, amount, since, vip: four
    rows, one name with a quote, one not ASCII) and hr.people (tests of bind parameters and
    endpoints)."""
    d = tmpdir(name)
    os.makedirs(os.path.join(d, "shop"))
    os.makedirs(os.path.join(d, "hr"))
    write_file(os.path.join(d, "shop", "customers.csv"),
               "id,name,country,amount,since,vip\n"
               "1,Ann,US,30.5,2024-01-02,true\n"
               "2,Bob,DE,12.0,2023-05-06,false\n"
               "3,Zoë,US,99.9,2022-11-30,true\n"
               "4,O'Brien,IE,7.25,2024-03-04,false\n")
    write_file(os.path.join(d, "hr", "people.csv"), "id\n1\n")
    return d


def sample_lake():
    """Path of the deterministic sample lake (`dapi sample-data DIR`), generated once per run.

    Treat it as read-only: several servers share it. run.py checks after every test that it
    is unchanged (sample_lake_damage) and fails the test during which it was damaged."""
    with _sample_lock:
        if _sample["path"]:
            return _sample["path"]
        if _sample["error"]:
            raise SetupError(_sample["error"])
        _sample["n"] += 1
        d = os.path.join(root_dir(), "sample-lake" if _sample["n"] == 1 else "sample-lake-%d" % _sample["n"])
        try:
            p = subprocess.run(
                [BIN, "sample-data", d],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=180,
                env=base_env(),
                cwd=tmpdir("cwd-sample"),
            )
        except subprocess.TimeoutExpired:
            _sample["error"] = "`dapi sample-data` did not finish within 180 s"
            raise SetupError(_sample["error"])
        if p.returncode != 0:
            _sample["error"] = "`dapi sample-data %s` exited %d: %s" % (
                d,
                p.returncode,
                tail_text(p.stderr.decode("utf-8", "replace") + p.stdout.decode("utf-8", "replace")),
            )
            raise SetupError(_sample["error"])
        _sample["manifest"] = _manifest(d)
        _sample["path"] = d
        return d


def sample_lake_damage():
    """None if the sample lake is absent or unchanged; else a description of the damage
    (and the lake is dropped, so the next sample_lake() call generates a fresh one)."""
    with _sample_lock:
        d, want = _sample["path"], _sample["manifest"]
        if not d:
            return None
        have = _manifest(d) if os.path.isdir(d) else {}
        if have == want:
            return None
        missing = sorted(set(want) - set(have))
        changed = sorted(k for k in want if k in have and have[k] != want[k])
        added = sorted(set(have) - set(want))
        _sample["path"] = None
        return "the shared sample lake %s was %s during this test (missing %s, changed %s, added %s)" % (
            d,
            "deleted" if not os.path.isdir(d) else "modified",
            missing[:5],
            changed[:5],
            added[:5],
        )


def find_lake_file(lake, layer, table, exts=("parquet",)):
    """Path of <lake>/<layer>/<table>.<ext> for the first ext that exists, else None."""
    for ext in exts:
        p = os.path.join(lake, layer, table + "." + ext)
        if os.path.isfile(p):
            return p
    return None


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPI_")}
    return env


def tail_text(text, n=25):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- responses


class Resp(tuple):
    """(status, headers, body): headers is a dict with lower-cased names."""

    __slots__ = ()

    def __new__(cls, status, headers, body):
        return tuple.__new__(cls, (status, headers, body))

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])

    def short(self, n=600):
        b = self.body
        text = b[:n].decode("utf-8", "replace")
        if len(b) > n:
            text += "...(%d bytes)" % len(b)
        return "HTTP %s ct=%r body=%s" % (self.status, self.headers.get("content-type"), text)

    def json(self):
        return jparse(self)

    def raw(self):
        return jraw(self)


def _is_json_ct(resp):
    ct = resp.headers.get("content-type", "")
    return ct.split(";")[0].strip().lower() == "application/json"


def jparse(resp):
    """The body as JSON, asserting Content-Type application/json and strict UTF-8."""
    if not _is_json_ct(resp):
        raise AssertionError("expected Content-Type application/json, got %s" % resp.short())
    try:
        text = resp.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError("body is not valid UTF-8 (%s): %s" % (e, resp.short()))
    try:
        return json.loads(text)
    except ValueError as e:
        raise AssertionError("body is not valid JSON (%s): %s" % (e, resp.short()))


class Raw:
    """A JSON number kept as its exact source text."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Raw) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return self.text


class Obj(tuple):
    """A JSON object as an ordered tuple of (key, value) pairs (order matters for ==)."""

    def __repr__(self):
        return "{" + ", ".join("%r: %r" % kv for kv in self) + "}"

    def keys(self):
        return [k for k, _ in self]

    def get(self, key, default=None):
        for k, v in self:
            if k == key:
                return v
        return default


def raw_loads(text):
    """json.loads keeping numbers as Raw(text) and objects as ordered Obj pairs."""
    return json.loads(text, parse_int=Raw, parse_float=Raw, parse_constant=Raw, object_pairs_hook=Obj)


def jraw(resp):
    if not _is_json_ct(resp):
        raise AssertionError("expected Content-Type application/json, got %s" % resp.short())
    try:
        return raw_loads(resp.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError("body is not valid UTF-8 JSON (%s): %s" % (e, resp.short()))


# --------------------------------------------------------------------------- assertions


def fail(msg):
    raise AssertionError(msg)


def eq(actual, expected, what="value"):
    if actual != expected:
        raise AssertionError("%s:\n  expected: %r\n  observed: %r" % (what, expected, actual))


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_status(resp, status, what="status"):
    if isinstance(status, (tuple, list, set)):
        ok = resp.status in status
    else:
        ok = resp.status == status
    if not ok:
        raise AssertionError("%s: expected HTTP %s, observed %s" % (what, status, resp.short()))




def rss_kb(pid):
    """The resident memory of process pid now, in KiB (0 once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_digest(port, path, headers, timeout=120, on_head=None):
    """GET path on 127.0.0.1:port through a connection of its own, the body read 64 KiB at a
    time and not kept: (status, the response's headers as a dict with lower-case names, the
    body's length, its sha256 hex digest). on_head() (if given) is called when the answer's
    head has come, before its body is read."""
    import hashlib
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        if on_head:
            on_head()
        d, n = hashlib.sha256(), 0
        while True:
            b = r.read(65536)
            if not b:
                break
            d.update(b)
            n += len(b)
        return r.status, {k.lower(): v for k, v in r.getheaders()}, n, d.hexdigest()
    finally:
        c.close()


def pool_metric(s, name, pool):
    """The value of /metrics' name{pool="pool"} on server s."""
    r = s.request("GET", "/metrics")
    expect_status(r, 200, "GET /metrics")
    want = '%s{pool="%s"} ' % (name, pool)
    for line in r.body.decode().splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    raise AssertionError("/metrics has no %s{pool=%r}" % (name, pool))


def wait_pool_metric(s, name, pool, value, what, timeout=30.0):
    """Waits until pool_metric(s, name, pool) is value (AssertionError after timeout s)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pool_metric(s, name, pool)
        if v == value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("%s: %s{pool=%r} is %s after %.0f s, want %s"
                                 % (what, name, pool, v, timeout, value))
        time.sleep(0.05)
def expect_error(resp, status, message=None, what="error response"):
    """Asserts an error response: the status, JSON content type, {"error": str} and, when
    given, the exact message. Returns the parsed body."""
    expect_status(resp, status, what)
    body = jparse(resp)
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise AssertionError('%s: expected a JSON object with an "error" string, observed %s' % (what, resp.short()))
    if message is not None and body["error"] != message:
        raise AssertionError(
            "%s: wrong error message\n  expected: %r\n  observed: %r\n  (%s)" % (what, message, body["error"], resp.short())
        )
    return body


# --------------------------------------------------------------------------- raw HTTP


class RawConn:
    """A plain socket for requests http.client cannot make (partial, malformed, pipelined)."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_watching(self, data, chunk=65536):
        """Sends data in chunks, stopping early if the server has already answered or closed.
        Returns the number of bytes sent."""
        sent = 0
        while sent < len(data):
            r, _, _ = select.select([self.sock], [], [], 0)
            if r:
                break
            try:
                n = self.sock.send(data[sent : sent + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
        return sent

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for the server's response (have %r)" % self.buf[:200])
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out waiting for the server's response (have %r)" % self.buf[:200])
        except ConnectionResetError:
            data = b""
            if not self.buf:
                raise AssertionError("connection reset by the server before any response")
        return data

    def read_response(self, timeout=None, head=False):
        """Reads one HTTP response; returns Resp. Raises AssertionError if the server closes
        without a complete response."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            data = self._fill(deadline)
            if not data:
                raise AssertionError("connection closed without a complete response (got %r)" % self.buf[:300])
            self.buf += data
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("iso-8859-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                k = k.strip().lower()
                v = v.strip()
                headers[k] = headers[k] + ", " + v if k in headers else v
        if head or status in (100, 101, 204, 304):
            return Resp(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    data = self._fill(deadline)
                    if not data:
                        raise AssertionError("connection closed inside chunked body")
                    self.buf += data
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0].strip(), 16)
                while len(self.buf) < size + 2:
                    data = self._fill(deadline)
                    if not data:
                        raise AssertionError("connection closed inside chunked body")
                    self.buf += data
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
            return Resp(status, headers, body)
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                data = self._fill(deadline)
                if not data:
                    raise AssertionError("connection closed after %d of %d body bytes" % (len(self.buf), n))
                self.buf += data
            body, self.buf = self.buf[:n], self.buf[n:]
            return Resp(status, headers, body)
        # Read until close.
        while True:
            data = self._fill(deadline)
            if not data:
                break
            self.buf += data
        body, self.buf = self.buf, b""
        return Resp(status, headers, body)


def build_request(method, path, body=b"", headers=None, port=0):
    h = {"Host": "127.0.0.1:%d" % port}
    if body or method in ("POST", "PUT"):
        h["Content-Length"] = str(len(body))
    for k, v in (headers or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    out = "%s %s HTTP/1.1\r\n" % (method, path)
    out += "".join("%s: %s\r\n" % kv for kv in h.items())
    return out.encode("latin-1") + b"\r\n" + body


# --------------------------------------------------------------------------- the server


class Server:
    """One `dapi serve` process on 127.0.0.1:0.

    keys: list of API keys put in DAPI_API_KEYS (None = leave unset, so the dev key is used).
    The first key is the default key for api()/create()/results()."""

    def __init__(
        self,
        args=(),
        keys=("it-key-a",),
        data_dir=None,
        state_dir=None,
        env=None,
        name="dapi",
        wait=True,
    ):
        self.name = name
        self.data_dir = data_dir or tmpdir("data")
        self.state_dir = state_dir or tmpdir("state")
        self.keys = list(keys) if keys is not None else None
        self.key = self.keys[0] if self.keys else None
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.owner = CURRENT_TEST
        self.shared = False
        self.stopping = False
        self.reported = False
        self.touched = set()
        self.stdout_lines = []
        self.port = None
        self.proc = None
        logdir = tmpdir("log-" + name)
        self.cwd = logdir  # private working directory: nothing relative lands in shared dirs
        self.stderr_path = os.path.join(logdir, "stderr.log")
        self.stdout_path = os.path.join(logdir, "stdout.log")
        self._listening = threading.Event()
        self.start(wait=wait)

    # -- lifecycle

    def command(self):
        return [
            BIN,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            self.data_dir,
            "--state-dir",
            self.state_dir,
        ] + self.args

    def start(self, wait=True):
        env = base_env()
        if self.keys is not None:
            env["DAPI_API_KEYS"] = ",".join(self.keys)
        env.update(self.extra_env)
        self.stopping = False
        self.reported = False
        self._listening.clear()
        self.stdout_lines = []
        self._stderr_f = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_f,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        with _lock:
            _all_servers.append(self)
        t = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        t.start()
        if wait:
            self.wait_listening()

    def _read_stdout(self, proc):
        with open(self.stdout_path, "ab") as out:
            for line in iter(proc.stdout.readline, b""):
                out.write(line)
                out.flush()
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.stdout_lines.append(text)
                m = LISTEN_RE.search(text)
                if m and not self._listening.is_set():
                    self.port = int(m.group(2))
                    self._listening.set()
        try:
            proc.stdout.close()
        except OSError:
            pass

    def wait_listening(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the reader thread collect stdout
                self.reported = True
                raise SetupError(
                    "server exited (%s) before printing 'dapi listening on http://...'; cmd=%s\n%s"
                    % (describe_rc(self.proc.returncode), " ".join(self.command()), self.diagnostics())
                )
        self.kill()
        raise SetupError(
            "server did not print 'dapi listening on http://127.0.0.1:PORT' within %.0f s\n%s"
            % (timeout, self.diagnostics())
        )

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; the server must exit with status 0 within `timeout` seconds."""
        if self.proc is None or self.stopping and self.proc.returncode is not None:
            return
        self.stopping = True
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._close_logs()
            if not self.reported:
                self.reported = True
                raise AssertionError("server had already exited (%s) before SIGTERM\n%s" % (describe_rc(rc), self.diagnostics()))
            return
        t0 = time.monotonic()
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.proc.wait(5)
            self._close_logs()
            self.reported = True
            raise AssertionError(
                "server did not exit within %.0f s of SIGTERM (killed with SIGKILL)\n%s" % (timeout, self.diagnostics())
            )
        self._close_logs()
        self.stop_seconds = time.monotonic() - t0
        if rc != 0:
            self.reported = True
            raise AssertionError("server exited with %s after SIGTERM (expected 0)\n%s" % (describe_rc(rc), self.diagnostics()))

    def kill(self):
        """SIGKILL (deliberate; not reported as a crash)."""
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self._kill_group()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_logs()

    def _kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _close_logs(self):
        try:
            self._stderr_f.close()
        except Exception:
            pass

    def restart(self, args=None):
        """Stops (clean SIGTERM) and starts again with the same dirs and keys."""
        self.stop()
        if args is not None:
            self.args = list(args)
        self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
        return False

    # -- logs

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        return "\n".join(self.stdout_lines)

    def wait_stderr(self, predicate, timeout=3.0):
        """Polls the stderr log until predicate(text) is true; returns the text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr_text()
            if predicate(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def diagnostics(self, n=20):
        out = ["  [%s] stderr tail (%s):" % (self.name, self.stderr_path)]
        out += ["    " + l for l in tail_text(self.stderr_text(), n).splitlines()]
        if self.stdout_lines:
            out.append("  [%s] stdout tail:" % self.name)
            out += ["    " + l for l in self.stdout_lines[-5:]]
        return "\n".join(out)

    # -- HTTP

    def request(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
        """One request on a fresh connection. body: dict/list (sent as JSON with
        Content-Type application/json), bytes or str. Returns Resp(status, headers, body)."""
        self.touched.add(CURRENT_TEST)
        hdrs = {}
        if body is not None and not isinstance(body, (bytes, bytearray, str)):
            body = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode("utf-8")
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            h = {}
            for k, v in r.getheaders():
                k = k.lower()
                h[k] = h[k] + ", " + v if k in h else v
            return Resp(r.status, h, data)
        except (OSError, http.client.HTTPException) as e:
            raise AssertionError(
                "%s %s: no HTTP response (%s: %s); server %s"
                % (method, path[:200], type(e).__name__, e, "alive" if self.alive() else "DEAD (%s)" % describe_rc(self.proc.returncode))
            )
        finally:
            conn.close()

    def api(self, method, path, body=None, key="", headers=None, timeout=HTTP_TIMEOUT):
        """request() with x-api-key (the server's default key unless key is given;
        key=None sends no key header)."""
        h = {}
        k = self.key if key == "" else key
        if k is not None:
            h["x-api-key"] = k
        h.update(headers or {})
        return self.request(method, path, body=body, headers=h, timeout=timeout)

    def raw(self, timeout=30.0):
        self.touched.add(CURRENT_TEST)
        return RawConn(self.port, timeout=timeout)

    def create_resp(self, payload, key=""):
        return self.api("POST", "/api/queries", body=payload, key=key)

    def create(self, sql=None, payload=None, key=""):
        """POST /api/queries; asserts the success envelope; returns the slug."""
        if payload is None:
            payload = {"sql_query": sql}
        r = self.create_resp(payload, key=key)
        if r.status != 200:
            raise AssertionError("creating query %r: expected HTTP 200, observed %s" % (payload, r.short()))
        body = jparse(r)
        check(isinstance(body, dict), "create response is not an object: %s" % r.short())
        eq(body.get("message"), "Query created successfully", "create response 'message'")
        eq(body.get("status"), "success", "create response 'status'")
        slug = body.get("query_slug")
        check(isinstance(slug, str) and SLUG_RE.match(slug), "query_slug %r does not match %s" % (slug, SLUG_RE.pattern))
        return slug

    def results(self, slug, page=None, key="", query=None, timeout=HTTP_TIMEOUT):
        path = "/api/queries/%s/results" % urllib.parse.quote(slug, safe="")
        if query is not None:
            path += "?" + query
        elif page is not None:
            path += "?page_number=%s" % urllib.parse.quote(str(page), safe="")
        return self.api("GET", path, key=key, timeout=timeout)

    def page(self, slug, page=1, key=""):
        """Rows of one page (asserts 200 and the envelope)."""
        r = self.results(slug, page, key=key)
        if r.status != 200:
            raise AssertionError("results of %s page %s: expected HTTP 200, observed %s" % (slug, page, r.short()))
        body = jparse(r)
        check(isinstance(body, dict) and isinstance(body.get("data"), list), "bad results envelope: %s" % r.short())
        eq(body.get("query_slug"), slug, "results 'query_slug'")
        eq(body.get("page"), page, "results 'page'")
        return body["data"]

    def all_rows(self, slug, key="", max_pages=100000):
        rows = []
        p = 1
        while p <= max_pages:
            data = self.page(slug, p, key=key)
            check(len(data) <= 100, "page %d has %d rows (> 100)" % (p, len(data)))
            rows.extend(data)
            if len(data) < 100:
                break
            p += 1
        return rows

    def query(self, sql, key=""):
        """Creates a query and returns all of its rows."""
        return self.all_rows(self.create(sql, key=key), key=key)


def describe_rc(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return "killed by signal %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit status %d" % rc


class Shared:
    """A server shared by the tests of one file, started on first use."""

    def __init__(self, factory):
        self.factory = factory
        self.srv = None
        self.error = None
        self.lock = threading.Lock()
        self.module = sys._getframe(1).f_globals.get("__name__")
        with _lock:
            _shared.append(self)

    def get(self):
        with self.lock:
            if self.srv is not None and self.srv.alive():
                return self.srv
            if self.error:
                raise SetupError("shared server could not start earlier: " + self.error.splitlines()[0])
            try:
                self.srv = self.factory()
            except AssertionError as e:
                self.error = str(e)
                raise
            self.srv.shared = True
            return self.srv

    def __getattr__(self, name):
        return getattr(self.get(), name)

    def teardown(self):
        with self.lock:
            srv, self.srv = self.srv, None
        if srv is not None and not srv.stopping:
            srv.stop()


# --------------------------------------------------------------------------- runner hooks


def servers_touched_by(test):
    with _lock:
        return [s for s in _all_servers if test in s.touched or s.owner == test]


def check_crashes():
    """Servers that died on their own since the last check (each reported once)."""
    out = []
    with _lock:
        servers = list(_all_servers)
    for s in servers:
        if s.proc is not None and not s.stopping and not s.reported and s.proc.poll() is not None:
            s.reported = True
            out.append(
                "server %s exited unexpectedly (%s)\n%s" % (s.name, describe_rc(s.proc.returncode), s.diagnostics())
            )
    return out


def reap_owned(test, force=False):
    """Stops servers a test started and left running. Returns error texts."""
    errs = []
    with _lock:
        servers = [s for s in _all_servers if s.owner == test and not s.shared]
    for s in servers:
        if s.alive() and not s.stopping:
            if force:
                s.kill()
            else:
                try:
                    s.stop()
                except AssertionError as e:
                    errs.append(str(e))
    return errs


def unhealthy_shared(test):
    """After a timeout: kill shared servers the test used that no longer answer /api/health,
    so the next test gets a fresh one. Returns descriptions."""
    out = []
    with _lock:
        servers = [s for s in _all_servers if s.shared and test in s.touched and s.alive()]
    for s in servers:
        try:
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=3)
            c.request("GET", "/api/health")
            c.getresponse().read()
            c.close()
        except Exception as e:
            out.append("shared server %s unresponsive after timeout (%s); killed" % (s.name, e))
            s.reported = True
            s.kill()
    return out


def teardown_module(module_name):
    errs = []
    with _lock:
        shared = [s for s in _shared if s.module == module_name]
    for s in shared:
        try:
            s.teardown()
        except AssertionError as e:
            errs.append(str(e))
    return errs


def _sanitizer_log_prefixes():
    out = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        for opt in os.environ.get(var, "").split(":"):
            if opt.startswith("log_path=") and len(opt) > len("log_path="):
                out.append(opt[len("log_path=") :])
    return out


def sanitizer_reports():
    """Reports written by sanitizer builds since the last call (`make asan` runs every process
    with log_path=<build>/sanitizer/<tool>, so reports land in <tool>.<pid> files whatever
    the process's exit status, even for a CLI run expected to fail). Each report is returned
    once (the file is renamed to *.seen) as a text with its head."""
    out = []
    for prefix in _sanitizer_log_prefixes():
        for path in sorted(glob.glob(glob.escape(prefix) + ".*")):
            if path.endswith(".seen"):
                continue
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                os.replace(path, path + ".seen")
            except OSError:
                continue
            lines = text.strip().splitlines()
            first = next((l for l in lines if "ERROR:" in l or "runtime error" in l), lines[0] if lines else "")
            out.append("sanitizer report %s: %s\n%s" % (os.path.basename(path), first.strip(), "\n".join(lines[:40])))
    return out


def kill_all():
    with _lock:
        servers = list(_all_servers)
    for s in servers:
        if s.alive():
            s.kill()


# --------------------------------------------------------------------------- misc helpers


def b64(data):
    return base64.b64encode(data).decode("ascii")


def run_cli(args, env=None, timeout=30):
    """Runs the binary with args; returns (rc, stdout, stderr) as text."""
    e = base_env()
    e.update(env or {})
    p = subprocess.run(
        [BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=e, cwd=tmpdir("cwd-cli")
    )
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def run_threads(fn, items, timeout=120):
    """Runs fn(item) in one thread per item; returns list of (item, exception or None)."""
    results = [None] * len(items)

    def wrap(i, item):
        try:
            fn(item)
        except BaseException as e:  # noqa: B902 - report everything
            results[i] = e

    threads = [threading.Thread(target=wrap, args=(i, it), daemon=True) for i, it in enumerate(items)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for i, t in enumerate(threads):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            results[i] = AssertionError("thread still running after %.0f s" % timeout)
    return list(zip(items, results))


class Load:
    """Background clients for tests that change the server under load (reloads, SIGHUP,
    log rotation): `threads` threads, each on its own keep-alive connection, GET `path` with
    `key` over and over until the `with` block ends. Every answer must have status `expect`
    and echo the request's X-Request-Id; `ok` counts those, `bad` lists the others (and
    connection errors), `ids` every request id sent (to match against the access log)."""

    def __init__(self, port, path, key, expect=200, threads=3):
        self.port, self.path, self.key, self.expect = port, path, key, expect
        self.stop = threading.Event()
        self.ok = 0
        self.bad = []
        self.ids = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i):
        conn = None
        n = 0
        while not self.stop.is_set():
            rid = "load-%d-%d" % (i, n)
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", self.path, headers={"x-api-key": self.key, "X-Request-Id": rid})
                r = conn.getresponse()
                body = r.read()
                with self.lock:
                    self.ids.append(rid)
                    if r.status == self.expect and r.getheader("X-Request-Id") == rid:
                        self.ok += 1
                    else:
                        self.bad.append("%s: %d %r id=%r" % (rid, r.status, body[:120], r.getheader("X-Request-Id")))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.bad.append("%s: %s: %s" % (rid, type(e).__name__, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return False
