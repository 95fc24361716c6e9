"""GET /api/health reports an engine that does not answer: 200 {"status":"ok"} while the
engine prober's last `SELECT 1` succeeded, 503 JSON (with since when) when it failed. The
failure comes from the test-only fault DAPI_TEST_FAULTS=engine-probe (read once from the
environment at start; docs/design.md, Testing). Health answers from the cached outcome, so
it stays fast while a long query holds the engine, and the prober never delays shutdown."""

import calendar
import re
import subprocess
import time

import harness as h
from harness import Server, check, eq, expect_status, jparse

KEY = "it-health-key-5c1e"
FAULT = {"DAPI_TEST_FAULTS": "engine-probe"}
SINCE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LONG_SQL = "SELECT count(*) AS n FROM range(1000000000000) WHERE range = -1"


def _health(s, timeout=10):
    t0 = time.monotonic()
    r = s.request("GET", "/api/health", timeout=timeout)
    return r, time.monotonic() - t0


def _json_keys(raw):
    return [k for k, _ in h.raw_loads(raw.decode("utf-8"))]


def _wait_status(s, status, within):
    """Polls health until it answers status; returns that response (or the last one)."""
    deadline = time.monotonic() + within
    while True:
        r, _ = _health(s)
        if r.status == status or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_healthy_engine_answers_200_as_before():
    with Server(keys=[KEY], name="health-ok") as s:
        for _ in range(3):  # before, at and after the first probe: same answer
            r, _ = _health(s)
            expect_status(r, 200, "health of a healthy server")
            eq(jparse(r), {"status": "ok"}, "health body")
            eq(r.body, b'{"status":"ok"}', "health body bytes")
            time.sleep(0.3)
        # The fault cannot be switched on by a request: no header, parameter or path does it.
        r = s.request("GET", "/api/health?DAPI_TEST_FAULTS=engine-probe", headers={"DAPI_TEST_FAULTS": "engine-probe"})
        expect_status(r, 200, "health with the fault's name in the request")


@h.timeout(60)
def test_engine_fault_gives_503_json_within_seconds():
    t_start = time.time()
    with Server(keys=[KEY], env=FAULT, name="health-fault") as s:
        r = _wait_status(s, 503, 5)
        expect_status(r, 503, "health with the engine probe failing (within 5 s of start)")
        body = jparse(r)
        eq(sorted(body), ["details", "error", "since", "status"], "503 body keys")
        eq(_json_keys(r.body), ["details", "error", "since", "status"], "503 body key order")
        eq(body["status"], "unavailable", "status")
        eq(body["error"], "Engine not answering", "error")
        check("test fault engine-probe" in body["details"], "details name the cause: %r" % body["details"])
        check(SINCE_RE.match(body["since"]), "since is an ISO 8601 UTC second: %r" % body["since"])
        since = calendar.timegm(time.strptime(body["since"], "%Y-%m-%dT%H:%M:%SZ"))
        check(t_start - 2 <= since <= time.time() + 1, "since %r is the start of the failure" % body["since"])
        eq(r.headers.get("retry-after"), "5", "Retry-After")
        # HEAD too, and `dapi health` (a container health check) exits 1 with the reason.
        r2 = s.request("HEAD", "/api/health")
        expect_status(r2, 503, "HEAD /api/health")
        rc, out, err = h.run_cli(["health", "--url", "http://127.0.0.1:%d" % s.port])
        eq(rc, 1, "`dapi health` against a server whose engine fails (output %r)" % (out + err))
        check("503" in err and "Engine not answering" in err, "`dapi health` says why: %r" % err)
        # The fault is the probe's alone: queries still work, and the answer stays 503.
        eq(s.query("SELECT 42 AS v"), [{"v": 42}], "a query on the server with the probe fault")
        r, _ = _health(s)
        expect_status(r, 503, "still 503 after later probes")
        eq(jparse(r)["since"], body["since"], "since stays the start of the failure")
        check("engine probe" in s.stderr_text(), "the failure is logged:\n%s" % h.tail_text(s.stderr_text()))


def test_unknown_fault_name_stops_the_start():
    p_args = [h.BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", h.tmpdir("hf-data"), "--state-dir", h.tmpdir("hf-state")]
    env = h.base_env()
    env.update({"DAPI_API_KEYS": KEY, "DAPI_TEST_FAULTS": "engine-prob"})
    p = subprocess.run(p_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=20, cwd=h.tmpdir("cwd-hf"))
    eq(p.returncode, 2, "exit status with a misspelt DAPI_TEST_FAULTS (stderr %r)" % p.stderr[-300:])
    check(b"DAPI_TEST_FAULTS" in p.stderr and b"engine-prob'" in p.stderr, "names the bad fault: %r" % p.stderr[-300:])


@h.alone
@h.timeout(90)
def test_health_stays_fast_while_a_long_query_runs():
    """A query holds every DuckDB thread for longer than a probe interval (5 s): health keeps
    answering 200 quickly all along, and a probe ran meanwhile (its own connection, not a run
    worker: with --workers 1 a queued probe would fail its deadline or go stale)."""
    with Server(keys=[KEY], args=["--workers", "1", "--duckdb-threads", "2", "--query-timeout", "30"], name="health-busy") as s:
        s.create(LONG_SQL)
        time.sleep(0.5)  # running now
        worst, n, bad = 0.0, 0, []
        until = time.monotonic() + 6.5
        while time.monotonic() < until:
            r, dt = _health(s)
            n += 1
            worst = max(worst, dt)
            if r.status != 200:
                bad.append(r.short())
            time.sleep(0.05)
        eq(bad[:3], [], "health answers while the query runs")
        check(worst < 1.0, "slowest of %d health answers took %.3f s" % (n, worst))
        r, _ = _health(s)
        expect_status(r, 200, "health after the long query")


@h.alone
@h.timeout(60)
def test_prober_does_not_delay_shutdown():
    """SIGTERM while the prober waits between probes, while its probes fail (fault on) and while
    a user query runs: the server exits 0 promptly each time."""
    for name, env, sql in (("health-stop-idle", None, None), ("health-stop-fault", FAULT, LONG_SQL)):
        s = Server(keys=[KEY], env=env, args=["--shutdown-grace", "0"], name=name)
        if sql:
            s.create(sql)
        time.sleep(1.0)  # the first probe is done; the prober waits for its next round
        s.stop(timeout=10)
        check(s.stop_seconds < 3, "%s: exit took %.1f s after SIGTERM" % (name, s.stop_seconds))


def test_nekt_backend_is_probed_too():
    """--backend nekt decodes downloads through the local engine, so its health is probed as
    well; Nekt itself is not (the upstream here does not even exist)."""
    args = ["--backend", "nekt", "--nekt-url", "http://127.0.0.1:9"]
    with Server(keys=[KEY], args=args, env={"DAPI_NEKT_API_KEY": "held"}, name="health-nekt") as s:
        r = _wait_status(s, 200, 2)
        expect_status(r, 200, "nekt backend, upstream unreachable, engine fine")
        eq(jparse(r), {"status": "ok"}, "health body")
    with Server(keys=[KEY], args=args, env=dict(FAULT, DAPI_NEKT_API_KEY="held"), name="health-nekt-fault") as s:
        r = _wait_status(s, 503, 5)
        expect_status(r, 503, "nekt backend with the engine probe failing")
        eq(jparse(r)["error"], "Engine not answering", "error")
