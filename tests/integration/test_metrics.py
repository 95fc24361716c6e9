"""GET /metrics (Prometheus text format, checked by promtool) and GET /api/ready: who may read
the metrics, values that move by exactly what known traffic did, readiness of the engine, the
state dir and the upstream."""

import json
import os
import re
import shutil
import subprocess
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY = "it-metrics-key-7f3a"
METRICS_KEY = "metrics-secret-0123456789abcdef"


def _lake():
    d = h.tmpdir("metrics-lake")
    os.makedirs(os.path.join(d, "lay"))
    rows = "".join("%d,n%d\n" % (i, i) for i in range(250))
    h.write_file(os.path.join(d, "lay", "t.csv"), "id,name\n" + rows)
    return d


def _scrape(s, headers=None):
    r = s.request("GET", "/metrics", headers=headers or {})
    expect_status(r, 200, "GET /metrics")
    return r


def _scrape_until(s, pred, timeout=3.0):
    """A request is counted when the server has finished with it, a moment after its client
    read the answer: scrapes until pred(samples) holds (or the timeout), returns the text."""
    deadline = time.monotonic() + timeout
    while True:
        text = _scrape(s).body.decode()
        if pred(_samples(text)) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _samples(text):
    """{"name{labels}": value} of every sample line (labels as written)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def _promtool_check(text):
    promtool = shutil.which("promtool")
    if not promtool:
        raise AssertionError("promtool is not installed (scripts/deps.sh installs Debian's prometheus package)")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    # promtool exits 1 for lint problems too: any output at all is a finding
    out = (p.stdout + p.stderr).decode(errors="replace").strip()
    eq((p.returncode, out), (0, ""), "promtool check metrics")


@h.timeout(90)
def test_metrics_format_and_values_follow_traffic():
    """The exposition passes promtool's check (format and lint); after known traffic each
    counter moved by exactly that traffic: creations, reuse hits and misses, pages and rows
    served, requests by route and status (401 included), run durations; gauges of queries by
    state and stored bytes match the server's state."""
    with Server(args=["--reuse-max-age", "300"], keys=[KEY], data_dir=_lake(), name="metrics") as s:
        before = _samples(_scrape(s).body.decode())
        r = _scrape(s)
        eq(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8", "Content-Type")
        _promtool_check(r.body.decode())

        slug = s.create("SELECT id, name FROM lay.t ORDER BY id", key=KEY)
        pages = [s.page(slug, n, key=KEY) for n in (1, 2, 3, 4)]
        eq([len(p) for p in pages], [100, 100, 50, 0], "rows per page")
        again = s.api("POST", "/api/queries", body=json.dumps({"sql_query": "SELECT id, name FROM lay.t ORDER BY id"}).encode(),
                      key=KEY, headers={"Content-Type": "application/json"})
        expect_status(again, 200, "the same query again")
        eq(again.headers.get("x-dapi-reused"), "true", "reused")
        expect_status(s.api("GET", "/api/queries/%s/results?page_number=1" % slug, key="wrong"), 401, "a wrong key")
        failed = s.create("SELECT error('boom')", key=KEY)
        expect_status(s.results(failed, 1, key=KEY), 400, "a failed run's page")

        last = 'dapi_http_requests_total{route="/api/queries/{slug}/results",method="GET",code="400"}'
        run_jobs = 'dapi_pool_jobs{pool="run"}'
        # (the failed run's page is answered once the query is marked failed, a moment before
        # its job leaves the run pool: on a slow ASan run the scrape came in between)
        text = _scrape_until(s, lambda m: m.get(last, 0) - before.get(last, 0) >= 1 and
                             m.get(run_jobs, 1) == 0)
        _promtool_check(text)
        after = _samples(text)

        def moved(name):
            return after.get(name, 0) - before.get(name, 0)

        eq(moved("dapi_queries_created_total"), 3, "creations")
        eq(moved("dapi_reuse_hits_total"), 1, "reuse hits")
        eq(moved("dapi_reuse_misses_total"), 2, "reuse misses")
        eq(moved("dapi_result_pages_served_total"), 4, "pages served")
        eq(moved("dapi_result_rows_served_total"), 250, "rows served")
        check(moved("dapi_result_bytes_served_total") > 250 * 10, "bytes served moved: %r" % moved("dapi_result_bytes_served_total"))
        eq(moved('dapi_http_requests_total{route="/api/queries",method="POST",code="200"}'), 3, "creations answered 200")
        eq(moved('dapi_http_requests_total{route="/api/queries/{slug}/results",method="GET",code="200"}'), 4, "pages answered 200")
        eq(moved('dapi_http_requests_total{route="/api/queries/{slug}/results",method="GET",code="401"}'), 1, "the 401")
        eq(moved('dapi_http_requests_total{route="/api/queries/{slug}/results",method="GET",code="400"}'), 1, "the failed run's 400")
        scrapes = moved('dapi_http_requests_total{route="/metrics",method="GET",code="200"}')
        check(scrapes >= 2, "the scrapes before this one are counted: %r" % scrapes)
        eq(moved('dapi_query_run_duration_seconds_count{outcome="succeeded"}'), 1, "one successful run (the reuse ran nothing)")
        eq(moved('dapi_query_run_duration_seconds_count{outcome="failed"}'), 1, "one failed run")
        eq(after['dapi_queries{state="succeeded"}'], 2, "succeeded queries kept (the original and its reuse)")
        eq(after['dapi_queries{state="failed"}'], 1, "failed queries kept")
        eq(after['dapi_queries{state="running"}'] + after['dapi_queries{state="queued"}'], 0, "nothing running")
        check(after["dapi_state_bytes"] > 0, "stored bytes: %r" % after["dapi_state_bytes"])
        binfo = [k for k in after if k.startswith("dapi_build_info{")]
        eq(len(binfo), 1, "one build info sample")
        check(re.search(r'version="\d+\.\d+\.\d+[^"]*",backend="local"', binfo[0]), "build info labels: %r" % binfo)
        eq(after[binfo[0]], 1, "build info value")
        check(abs(after["dapi_process_start_time_seconds"] - time.time()) < 120, "start time is recent")
        check(after["dapi_http_connections"] >= 1, "this scrape's connection is open")
        eq(after[run_jobs], 0, "run pool idle")
        # an unknown path counts under one label, whatever the path (bounded series)
        for p in ("/nope/1", "/nope/2", "/x?y=z"):
            expect_status(s.request("GET", p), 404, p)
        unmatched = 'dapi_http_requests_total{route="unmatched",method="GET",code="404"}'
        later = _samples(_scrape_until(s, lambda m: m.get(unmatched, 0) - after.get(unmatched, 0) >= 3))
        eq(later.get('dapi_http_requests_total{route="unmatched",method="GET",code="404"}', 0)
           - after.get('dapi_http_requests_total{route="unmatched",method="GET",code="404"}', 0), 3, "unmatched paths")
        check(not any("/nope" in k for k in later), "no series named after a client's path")
        # HEAD: the same headers, no body
        hr = s.request("HEAD", "/metrics")
        eq((hr.status, hr.body), (200, b""), "HEAD /metrics")


@h.timeout(60)
def test_metrics_access_setting():
    """--metrics-access: loopback (the default: the tests' client is loopback, no key needed),
    key (only the DAPI_METRICS_KEY secret, not a client key, not a wrong one: 401), off (404);
    key without a secret of 16+ characters refuses to start (exit 2)."""
    with Server(keys=[KEY], data_dir=_lake(), name="metrics-loopback") as s:
        _scrape(s)
    with Server(args=["--metrics-access", "key"], keys=[KEY], data_dir=_lake(), env={"DAPI_METRICS_KEY": METRICS_KEY}, name="metrics-key") as s:
        expect_error(s.request("GET", "/metrics"), 401, "Invalid API key")
        expect_error(s.request("GET", "/metrics", headers={"x-api-key": KEY}), 401, "Invalid API key")
        expect_error(s.request("GET", "/metrics", headers={"x-api-key": METRICS_KEY + "x"}), 401, "Invalid API key")
        r = _scrape(s, headers={"x-api-key": METRICS_KEY})
        check(b"dapi_http_requests_total" in r.body, "metrics served with the metrics key")
        # the metrics key is no client key
        expect_status(s.api("POST", "/api/queries", body=b'{"sql_query":"SELECT 1"}', key=METRICS_KEY,
                            headers={"Content-Type": "application/json"}), 401, "metrics key on the API")
    with Server(args=["--metrics-access", "off"], keys=[KEY], data_dir=_lake(), name="metrics-off") as s:
        expect_error(s.request("GET", "/metrics"), 404, "Not found")
    for env in ({}, {"DAPI_METRICS_KEY": "short"}):
        e = h.base_env()
        e.update(env)
        e["DAPI_API_KEYS"] = KEY
        p = subprocess.run([h.BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", _lake(),
                            "--state-dir", h.tmpdir("metrics-nokey"), "--metrics-access", "key"],
                           capture_output=True, env=e, timeout=40, cwd=h.tmpdir("cwd-metrics"))
        err = p.stderr.decode(errors="replace")
        eq(p.returncode, 2, "exit status without a usable metrics key (%r)" % env)
        check("DAPI_METRICS_KEY" in err, "says why: %r" % err[-300:])
        check("short" not in err, "the secret is not printed")


@h.timeout(60)
def test_ready_checks_engine_and_state_dir():
    """GET /api/ready: 200 with each check ok, no key needed; 503 + Retry-After naming the
    failing check when the state dir cannot take a file, or when the engine does not answer
    (its prober failing)."""
    with Server(keys=[KEY], data_dir=_lake(), name="ready") as s:
        r = s.request("GET", "/api/ready")
        expect_status(r, 200, "ready")
        eq(jparse(r), {"checks": {"engine": {"status": "ok"}, "serving": {"status": "ok"}, "state_dir": {"status": "ok"}},
                       "status": "ready"}, "body")
        # the state dir's tmp/ replaced by a file: nothing can be created there
        tmp = os.path.join(s.state_dir, "tmp")
        shutil.rmtree(tmp)
        h.write_file(tmp, "not a directory")
        r = s.request("GET", "/api/ready")
        expect_status(r, 503, "state dir not writable")
        b = jparse(r)
        eq(b["status"], "unavailable", "status")
        eq(b["checks"]["state_dir"]["status"], "failing", "state_dir check")
        check("--state-dir" in b["checks"]["state_dir"]["details"], "details name the setting: %r" % b)
        check(s.state_dir not in r.body.decode(), "no path in the answer")
        eq(r.headers.get("retry-after"), "5", "Retry-After")
        os.unlink(tmp)
        os.makedirs(tmp)
        expect_status(s.request("GET", "/api/ready"), 200, "ready again")
    with Server(keys=[KEY], data_dir=_lake(), env={"DAPI_TEST_FAULTS": "engine-probe"}, name="ready-engine") as s:
        deadline = time.monotonic() + 30
        while True:
            r = s.request("GET", "/api/ready")
            if r.status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect_status(r, 503, "engine not answering")
        eq(jparse(r)["checks"]["engine"]["status"], "failing", "engine check")


@h.timeout(90)
def test_ready_checks_the_upstream_and_counts_upstream_calls():
    """With --backend nekt, /api/ready also checks that Nekt answers (an unreachable URL:
    503 naming the upstream; the emulator: 200 once checked), and upstream calls are counted."""
    dead = Server(args=["--backend", "nekt", "--nekt-url", "http://127.0.0.1:1", "--upstream-attempts", "1"],
                  keys=None, name="ready-nekt-dead")
    try:
        deadline = time.monotonic() + 20
        while True:
            r = dead.request("GET", "/api/ready")
            b = jparse(r)
            if "no answer" in b["checks"].get("upstream", {}).get("details", "") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect_status(r, 503, "upstream unreachable")
        eq(b["checks"]["upstream"]["status"], "failing", "upstream check")
        details = b["checks"]["upstream"]["details"]
        check("--nekt-url" in details, "names the setting: %r" % b)
        # /api/ready needs no key: the kind of failure, not the upstream's address (libcurl's
        # own message names it); that goes to the server log, once
        check("127.0.0.1" not in details and "port" not in details, "no host or port: %r" % details)
        check("connect" in details.lower(), "says what failed: %r" % details)
        log = dead.stderr_text()
        check("upstream check: no answer from --nekt-url" in log and "127.0.0.1" in log,
              "the log has the whole message: %s" % log[-2000:])
        eq(log.count("upstream check: no answer"), 1, "logged once while it stays down")
    finally:
        dead.stop()
    emu = Server(args=["--emulate-nekt"], keys=["nektkey1"], data_dir=_lake(), name="ready-emu")
    try:
        fwd = Server(args=["--backend", "nekt", "--nekt-url", "http://127.0.0.1:%d" % emu.port], keys=None, name="ready-nekt")
        fwd.key = "nektkey1"
        try:
            deadline = time.monotonic() + 20
            while fwd.request("GET", "/api/ready").status != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            r = fwd.request("GET", "/api/ready")
            expect_status(r, 200, "upstream reachable")
            eq(jparse(r)["checks"]["upstream"], {"status": "ok"}, "upstream check")
            before = _samples(_scrape(fwd).body.decode())
            slug = fwd.create("SELECT 1 AS a")
            eq(fwd.page(slug, 1), [{"a": 1}], "page through Nekt")
            after = _samples(_scrape(fwd).body.decode())
            ok = after['dapi_upstream_calls_total{outcome="ok"}'] - before['dapi_upstream_calls_total{outcome="ok"}']
            check(ok >= 2, "upstream calls counted: %r" % ok)
        finally:
            fwd.stop()
    finally:
        emu.stop()


@h.timeout(60)
def test_server_timing_on_creation_and_pages():
    """Server-Timing says where a request's time went: on creation the wait for a check worker
    (queue) and the SQL check (check); on a page the wait for the query's run (wait), long
    when the page was asked for before the run ended."""
    with Server(keys=[KEY], data_dir=_lake(), name="timing") as s:
        r = s.api("POST", "/api/queries", body=json.dumps({"sql_query": "SELECT sum(i) AS s FROM range(30000000) t(i)"}).encode(),
                  key=KEY, headers={"Content-Type": "application/json"})
        expect_status(r, 200, "create")
        st = r.headers.get("server-timing", "")
        m = re.fullmatch(r"queue;dur=(\d+\.\d{3}), check;dur=(\d+\.\d{3})", st)
        check(m is not None, "creation's Server-Timing: %r" % st)
        slug = jparse(r)["query_slug"]
        p = s.results(slug, 1, key=KEY)
        expect_status(p, 200, "page 1")
        st = p.headers.get("server-timing", "")
        m = re.fullmatch(r"wait;dur=(\d+\.\d{3})", st)
        check(m is not None, "page's Server-Timing: %r" % st)
        waited = float(m.group(1)) if m else 0
        again = s.results(slug, 1, key=KEY)
        m2 = re.fullmatch(r"wait;dur=(\d+\.\d{3})", again.headers.get("server-timing", ""))
        check(m2 is not None and float(m2.group(1)) < waited, "a finished query's page waits less than one asked for while it ran: %r vs %r" % (again.headers.get("server-timing"), waited))


@h.timeout(60)
def test_creation_log_syncs_and_checkpoints_are_counted():
    """Each creation is made durable by a group-commit round of the creation log (its
    fdatasync is timed); a start after a crash reads the log back and checkpoints it (timed
    too). A fresh start after a clean stop has nothing to checkpoint."""
    sync = "dapi_creation_log_sync_duration_seconds_count"
    cps = "dapi_creation_log_checkpoint_duration_seconds_count"
    s = Server(keys=[KEY], data_dir=_lake(), name="metrics-log")
    with s:
        before = _samples(_scrape(s).body.decode())
        eq(before.get(cps), 0, "checkpoints at a first start")
        for i in range(3):
            s.create("SELECT %d AS x" % i, key=KEY)
        after = _samples(_scrape(s).body.decode())
        moved = after.get(sync, 0) - before.get(sync, 0)
        check(1 <= moved <= 3, "group-commit rounds for 3 creations one after the other: %r" % moved)
        check(after.get("dapi_creation_log_sync_duration_seconds_sum", 0) > 0, "rounds take time")
        eq(after.get('dapi_creation_log_sync_duration_seconds_bucket{le="+Inf"}'), after.get(sync), "+Inf bucket = count")
        s.kill()  # a crash: the records are read back at the next start
    with Server(keys=[KEY], data_dir=s.data_dir, state_dir=s.state_dir, name="metrics-log-after") as s2:
        m = _samples(_scrape(s2).body.decode())
        eq(m.get(cps), 1, "the start's checkpoint after a crash")
        eq(m.get("dapi_creation_log_checkpoint_failures_total"), 0, "no failed checkpoint")
    with Server(keys=[KEY], data_dir=s.data_dir, state_dir=s.state_dir, name="metrics-log-clean") as s3:
        eq(_samples(_scrape(s3).body.decode()).get(cps), 0, "no checkpoint at a start after a clean stop")


@h.timeout(60)
def test_creations_on_the_way_come_back_to_zero():
    """Each creation is announced to the creation log while it is checked (a round waits for
    such ones, --commit-gather-us) and arrives once: whether it was created, reused, refused
    by the check (400) or refused for its parameters. A count left above zero would make every
    later round wait for a creation that never comes."""
    import concurrent.futures
    s = Server(keys=[KEY], data_dir=_lake(), name="metrics-coming", args=["--max-queries-per-key", "64"])
    with s:
        sqls = []
        for i in range(60):
            sqls.append(["SELECT %d AS x" % (i % 7),        # created, or reused (identical ones)
                         "SELEC broken %d" % i,              # 400 from the check
                         "SELECT * FROM lay.t WHERE id = %d" % i,
                         "SELECT $nope + %d" % i][i % 4])   # 400: a parameter with no value

        def one(sql):
            return s.create_resp({"sql_query": sql}, key=KEY).status

        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            statuses = list(ex.map(one, sqls))
        check(statuses.count(200) >= 30 and set(statuses) <= {200, 400},
              "created and refused: %r" % sorted(set(statuses)))
        text = _scrape_until(s, lambda m: m.get("dapi_creations_on_the_way") == 0)
        m = _samples(text)
        eq(m.get("dapi_creations_on_the_way"), 0, "creations on their way once all are answered")
        check(m.get("dapi_creation_log_gathered_rounds_total", -1) >= 0, "gathered rounds counted")


@h.timeout(30)
def test_every_family_is_there_from_the_start():
    """A fresh server's first scrape already has every family the docs list (at zero), so a
    dashboard or an alert on a counter that has not moved yet finds it."""
    with Server(keys=[KEY], data_dir=_lake(), name="metrics-fresh") as s:
        text = _scrape(s).body.decode()
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        for f in ("dapi_http_requests_total", "dapi_http_response_bytes_total", "dapi_http_request_duration_seconds",
                  "dapi_http_connections", "dapi_http_requests_in_flight", "dapi_http_connections_accepted_total",
                  "dapi_http_connections_refused_total", "dapi_queries", "dapi_queries_created_total",
                  "dapi_reuse_hits_total", "dapi_reuse_misses_total", "dapi_query_run_duration_seconds",
                  "dapi_result_pages_served_total", "dapi_result_rows_served_total", "dapi_result_bytes_served_total",
                  "dapi_upstream_calls_total", "dapi_pool_jobs", "dapi_state_bytes", "dapi_build_info",
                  "dapi_process_start_time_seconds", "dapi_creation_log_sync_duration_seconds",
                  "dapi_creation_log_checkpoint_duration_seconds", "dapi_creation_log_checkpoint_failures_total",
                  "dapi_pack_files", "dapi_pack_bytes", "dapi_log_pending_bytes", "dapi_log_waits_total",
                  "dapi_creations_on_the_way", "dapi_creation_log_gathered_rounds_total"):
            check(f in families, "family %s in the first scrape" % f)
        eq(_samples(text).get("dapi_http_connections_refused_total"), 0, "nothing refused yet")
