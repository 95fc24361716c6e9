"""The Nekt forwarding backend (--backend nekt) against the Nekt emulator (--emulate-nekt).

Every test runs two real processes on 127.0.0.1: an emulator (`dapi serve --emulate-nekt`,
keys nektkey1/nektkey2), which serves both dapi's own API and the Nekt upstream API, and a
forwarder (`dapi serve --backend nekt --nekt-url http://127.0.0.1:EMUPORT`). Pages served by
the forwarder must be byte for byte the pages the emulator's own local API serves for the
same SQL (apart from the slug), or a clean JSON error: never a crash, a hang, HTML or a
partial page.

Tests whose docstrings say "Regression:" failed before a fix and guard it.
"""

import http.client
import json
import os
import re
import threading
import time

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse, jraw

K1 = "nektkey1"
K2 = "nektkey2"
CLIENT_KEY = "clientkey"
NEKT_KEYS = (K1, K2)

MISSING_KEY = "Missing API key. Please provide 'x-api-key' header"
REJECTED = "The Nekt API rejected the API key"
EXEC_FAILED = "Query execution failed"

# Results every test compares (ORDER BY: paging must be deterministic on both sides).
SQL_RANGE_250 = "SELECT i, i * 2 AS j, 'row ' || i AS s FROM range(250) t(i) ORDER BY i"
SQL_BIG = "SELECT i, i * 2 AS j, 'row ' || i AS s FROM range(100000) t(i) ORDER BY i"
SQL_TYPES = (
    "SELECT i, i::DOUBLE / 3 AS d, (i * 1.25)::DECIMAL(10, 2) AS dec, DATE '2024-01-01' + i::INT AS dt, "
    "TIMESTAMP '2024-01-01 00:00:00' + i * INTERVAL 1 SECOND AS ts, i % 2 = 0 AS b, "
    "CASE WHEN i % 5 = 0 THEN NULL ELSE 'é\"\\\\' || i END AS s, [i, i + 1] AS l, {'a': i, 'b': 'x'} AS st "
    "FROM range(150) t(i) ORDER BY i"
)

SQL_POST_RE = re.compile(r'access POST "/api/v1/sql-query/" (\d{3})')
ACCESS_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z access (\w+) \"([^\"]*)\" (\d{3})", re.M)


# ----------------------------------------------------------------------------- the lake


_lake = {"path": None}
_lake_lock = threading.Lock()


def lake():
    """A small lake (CSV + NDJSON), written once per run. Read only."""
    with _lake_lock:
        if _lake["path"]:
            return _lake["path"]
        d = h.tmpdir("nekt-lake")
        lines = ["id,name,score,active,joined,note"]
        names = ["Ana", "Bó", "Çé", "Dan \"the man\"", "Eve, Jr.", "Fu 福"]
        for i in range(1, 131):
            name = names[i % len(names)]
            name = '"' + name.replace('"', '""') + '"' if ('"' in name or "," in name) else name
            note = "" if i % 7 == 0 else "note %d" % i
            lines.append(
                "%d,%s,%s,%s,2024-%02d-%02d,%s"
                % (i, name, i / 8.0, "true" if i % 3 == 0 else "false", 1 + i % 12, 1 + i % 28, note)
            )
        h.write_file(os.path.join(d, "nekt_raw", "people.csv"), "\n".join(lines) + "\n")
        ev = []
        for i in range(1, 106):
            ev.append(json.dumps({"id": i, "kind": "k%d" % (i % 4), "tags": ["a", "b%d" % i], "attrs": {"n": i, "w": "x" * (i % 3)}}))
        h.write_file(os.path.join(d, "nekt_trusted", "events.ndjson"), "\n".join(ev) + "\n")
        _lake["path"] = d
        return d


# ----------------------------------------------------------------------------- servers


def emulator(*args, name="nekt-emu", state_dir=None):
    """The Nekt emulator: dapi's own API + the Nekt upstream API, keys nektkey1/nektkey2."""
    return Server(args=["--emulate-nekt"] + list(args), keys=NEKT_KEYS, data_dir=lake(), state_dir=state_dir, name=name)


def forwarder(emu, api="v2", args=(), held=False, name=None, held_key=K1):
    """A --backend nekt server pointing at emu. held=False: client keys are forwarded (the
    default key of the Server object is nektkey1); held=True: DAPI_NEKT_API_KEY=held_key and
    DAPI_API_KEYS=clientkey."""
    argv = ["--backend", "nekt", "--nekt-url", "http://127.0.0.1:%d" % emu.port, "--nekt-api", api] + list(args)
    if held:
        s = Server(args=argv, keys=[CLIENT_KEY], env={"DAPI_NEKT_API_KEY": held_key}, name=name or "nekt-fwd-%s-held" % api)
    else:
        s = Server(args=argv, keys=None, name=name or "nekt-fwd-%s" % api)
        s.key = K1
    return s


# The shared emulator makes 10,000-row files, so the 100,000-row result is 10 files.
EMU = Shared(lambda: emulator("--emulate-rows-per-file", "10000", name="nekt-emu-shared"))
FWD2 = Shared(lambda: forwarder(EMU.get(), "v2", name="nekt-fwd-v2-shared"))
# v1 without read-ahead: tests sharing the emulator count its executions exactly (read-ahead
# has its own tests, and the private v1 pairs keep the default)
FWD1 = Shared(lambda: forwarder(EMU.get(), "v1", ["--nekt-read-ahead", "0"], name="nekt-fwd-v1-shared"))


# ----------------------------------------------------------------------------- helpers


class KeepAlive:
    """One keep-alive connection for paging quickly (http.client, like the harness)."""

    def __init__(self, srv, key):
        self.srv = srv
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=h.HTTP_TIMEOUT)
        srv.touched.add(h.CURRENT_TEST)

    def get(self, path):
        for attempt in (1, 2):
            try:
                self.conn.request("GET", path, headers={"x-api-key": self.key})
                r = self.conn.getresponse()
                body = r.read()
                hdrs = {}
                for k, v in r.getheaders():
                    hdrs[k.lower()] = v
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                return h.Resp(r.status, hdrs, body)
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                if attempt == 2:
                    raise AssertionError("GET %s: no HTTP response (%s)" % (path, e))

    def page(self, slug, n):
        return self.get("/api/queries/%s/results?page_number=%d" % (slug, n))

    def close(self):
        self.conn.close()


def first_diff(a, b):
    """Describes where two lists of rows first differ."""
    if not isinstance(a, list) or not isinstance(b, list):
        return "observed %r, expected %r" % (a, b)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "row %d differs:\n    forwarder: %r\n    emulator:  %r" % (i, x, y)
    return "row counts differ: forwarder %d, emulator %d" % (len(a), len(b))


def same_page(fw, fslug, ref, rslug, page, what):
    """fw (forwarder response) must be the emulator's page ref with the slug swapped."""
    expect_status(ref, 200, what + " (emulator's own local API)")
    expect_status(fw, 200, what)
    a, b = jraw(fw), jraw(ref)
    eq(a.keys(), ["query_slug", "page", "data"], what + ": envelope keys")
    eq(a.get("query_slug"), fslug, what + ": query_slug")
    eq(a.get("page"), h.Raw(str(page)), what + ": page")
    if a.get("data") != b.get("data"):
        raise AssertionError("%s: page %d is not the emulator's data: %s" % (what, page, first_diff(a.get("data"), b.get("data"))))
    fb = fw.body.replace(fslug.encode(), b"<slug>")
    rb = ref.body.replace(rslug.encode(), b"<slug>")
    if fb != rb:
        i = next((k for k in range(min(len(fb), len(rb))) if fb[k] != rb[k]), min(len(fb), len(rb)))
        raise AssertionError(
            "%s: page %d bytes differ at offset %d:\n    forwarder: %r\n    emulator:  %r" % (what, page, i, fb[max(0, i - 60) : i + 60], rb[max(0, i - 60) : i + 60])
        )
    return jparse(fw)["data"]


def reference(emu, sql, pages):
    """Creates sql on the emulator's own local API and returns (slug, {page: Resp})."""
    slug = emu.create(sql, key=K1)
    return slug, {p: emu.results(slug, p, key=K1) for p in pages}


def compare(fwd, sql, pages, what, key="", payload=None):
    """Creates through the forwarder (sql or payload) and compares the given pages."""
    eslug, ref = reference(getattr(fwd, "emu", None) or EMU.get(), sql, pages)
    fslug = fwd.create(sql if payload is None else None, payload=payload, key=key)
    out = {}
    for p in pages:
        out[p] = same_page(fwd.results(fslug, p, key=key), fslug, ref[p], eslug, p, "%s, page %d" % (what, p))
    return fslug, out


def attach(fwd, emu):
    fwd.emu = emu
    return fwd


def log_count(srv, regex, expect=None, timeout=3.0):
    """Occurrences of regex in srv's stderr; waits for `expect` of them (or lets the log
    settle for 0.6 s when expect is None). Access lines are flushed every 250 ms."""
    rx = re.compile(regex)
    if expect is None:
        time.sleep(0.6)
        return len(rx.findall(srv.stderr_text()))
    text = srv.wait_stderr(lambda t: len(rx.findall(t)) >= expect, timeout)
    time.sleep(0.3)  # anything more than expected shows up too
    return len(rx.findall(srv.stderr_text()))


def sql_posts(emu):
    """Statuses of the emulator's POST /api/v1/sql-query/ answers, in order."""
    return [int(s) for s in SQL_POST_RE.findall(emu.stderr_text())]


def expect_exec_error(resp, status, slug, page=1, error=EXEC_FAILED, details_has=(), what="execution error"):
    """The reference's execution-failure shape with a precise status; returns the body."""
    body = expect_error(resp, status, error, what)
    eq(sorted(body.keys()), ["details", "error", "page_number", "query_slug"], what + ": keys")
    eq(body["query_slug"], slug, what + ": query_slug")
    eq(body["page_number"], page, what + ": page_number")
    check(isinstance(body["details"], str) and body["details"], what + ": empty details: %s" % resp.short())
    for frag in details_has:
        check(frag.lower() in body["details"].lower(), "%s: details should mention %r: %s" % (what, frag, resp.short()))
    check(resp.body.startswith(b"{"), what + ": not a JSON object")
    return body


def pair(emu_args=(), api="v2", fwd_args=(), held=False):
    """A private emulator + forwarder (the emulator first, so the forwarder knows its port)."""
    emu = emulator(*emu_args, name="nekt-emu-" + api)
    return emu, attach(forwarder(emu, api, fwd_args, held=held), emu)


def big_expected(i):
    return {"i": i, "j": 2 * i, "s": "row %d" % i}


# ----------------------------------------------------------------------------- 1. v2 basic


def test_nekt_v2_pages_match_emulator():
    fwd = attach(FWD2.get(), EMU.get())
    fslug, pages = compare(fwd, SQL_RANGE_250, [1, 2, 3, 4, 40], "v2 range(250)")
    check(h.SLUG_RE.match(fslug), "slug %r" % fslug)
    eq([len(pages[p]) for p in (1, 2, 3, 4, 40)], [100, 100, 50, 0, 0], "rows per page (1, 2, last partial, past end, far past end)")
    eq(pages[3][-1], {"i": 249, "j": 498, "s": "row 249"}, "last row")
    compare(fwd, 'SELECT * FROM "nekt_raw"."people" ORDER BY id', [1, 2, 3], "v2 CSV table")
    compare(fwd, "SELECT * FROM nekt_trusted.events ORDER BY id", [1, 2], "v2 NDJSON table (lists, structs)")
    compare(fwd, SQL_TYPES, [1, 2, 3], "v2 many types")
    # Mode 2 (layer/table) builds the reference's exact SQL and forwards it.
    sql2 = 'SELECT\n\t*\nFROM\n\t"nekt_raw"."people"\nLIMIT 7'
    fslug, pages = compare(fwd, sql2, [1, 2], "v2 layer/table mode", payload={"layer": "nekt_raw", "table": "people", "limit": 7})
    eq(len(pages[1]), 7, "rows of the layer/table query")


def test_nekt_v2_reference_validation():
    fwd = FWD2.get()
    slug = fwd.create("SELECT 1 AS x")
    expect_error(fwd.results(slug, 1, key=None), 401, MISSING_KEY, "results without a key")
    expect_error(fwd.api("GET", "/api/queries/%s/results" % slug, headers={"x-api-key": ""}, key=None), 401, MISSING_KEY, "empty key")
    expect_error(fwd.create_resp({"sql_query": "SELECT 1"}, key=None), 401, MISSING_KEY, "create without a key")
    expect_error(fwd.results(slug, "abc"), 400, "Page number must be a valid integer", "page_number=abc")
    expect_error(fwd.results(slug, "1.5"), 400, "Page number must be a valid integer", "page_number=1.5")
    expect_error(fwd.results(slug, 0), 400, "Page number must be a positive integer", "page_number=0")
    expect_error(fwd.results(slug, -2), 400, "Page number must be a positive integer", "page_number=-2")
    expect_error(fwd.create_resp({}), 400, "No JSON data provided", "create {}")
    expect_error(fwd.create_resp({"sql_query": "SELECT 1", "layer": None}), 400, "When 'sql_query' is provided, these parameters are not allowed: layer", "sql_query + layer")
    expect_error(fwd.create_resp({"layer": "nekt_raw"}), 400, "Missing required parameter 'table' when 'sql_query' is not provided", "layer only")
    expect_error(fwd.create_resp({"layer": "a", "table": "b", "limit": 0}), 400, "Limit must be a positive integer", "limit 0")
    expect_error(fwd.api("POST", "/api/queries", body=b"{nope", headers={"Content-Type": "application/json"}), 400, "Malformed JSON", "malformed JSON")
    expect_error(fwd.api("POST", "/api/queries", body=b'{"sql_query":"SELECT 1"}', headers={"Content-Type": "text/plain"}), 415, "Unsupported Media Type", "text/plain")
    expect_error(fwd.results("dapi-query-doesnotexist0000000000", 1), 404, "Query not found", "unknown slug")
    expect_error(fwd.results(slug, 1, key=K2), 404, "Query not found", "another (valid) Nekt key")
    expect_error(fwd.request("GET", "/api/v1/sql-query/"), 404, "Not found", "the forwarder does not serve the upstream API")
    expect_error(fwd.request("GET", "/nope"), 404, "Not found", "unknown path")
    eq(jparse(fwd.request("GET", "/api/health")), {"status": "ok"}, "health")
    eq(fwd.page(slug, 1), [{"x": 1}], "the query itself")
    # SQL errors happen upstream: a 200 at creation, then the execution error with DuckDB's words.
    bad = fwd.create("SELECT no_such_column FROM range(3)")
    body = expect_exec_error(fwd.results(bad, 1), 400, bad, details_has=["no_such_column"], what="SQL error upstream")
    expect_exec_error(fwd.results(bad, 2), 400, bad, page=2, details_has=["no_such_column"], what="SQL error, page 2")
    check("Nekt" not in body["error"], "error for a SQL error: %r" % body)


# ----------------------------------------------------------------------------- 2. v2 large


@h.timeout(120)
def test_nekt_v2_large_multi_file_result():
    emu = EMU.get()
    fwd = attach(FWD2.get(), emu)
    sample = [1, 2, 437, 500, 999, 1000, 1001]
    eslug, ref = reference(emu, SQL_BIG, sample)
    fslug = fwd.create(SQL_BIG)
    c = KeepAlive(fwd, K1)
    try:
        total = 0
        for p in range(1, 1002):
            r = c.page(fslug, p)
            if p in ref:
                same_page(r, fslug, ref[p], eslug, p, "v2 100,000 rows, page %d" % p)
            expect_status(r, 200, "v2 100,000 rows, page %d" % p)
            rows = jparse(r)["data"]
            want = [big_expected(i) for i in range((p - 1) * 100, min(p * 100, 100000))]
            if rows != want:
                raise AssertionError("page %d is not rows %d..%d: %s" % (p, (p - 1) * 100, p * 100 - 1, first_diff(rows, want)))
            total += len(rows)
        eq(total, 100000, "rows over all pages")
    finally:
        c.close()
    # 10 files of 10,000 rows each came from the emulator.
    text = fwd.wait_stderr(lambda t: "query %s done" % fslug in t)
    m = re.search(r"query %s done: (\d+) file\(s\) from Nekt" % fslug, text)
    check(m and int(m.group(1)) >= 10, "the result should come in 10 files: %s" % (m.group(0) if m else "no 'done' line"))


# ----------------------------------------------------------------------------- 3. v1 basic


@h.timeout(90)
def test_nekt_v1_pages_match_emulator():
    emu = EMU.get()
    fwd = attach(FWD1.get(), emu)
    fslug, pages = compare(fwd, SQL_RANGE_250, [1, 2, 3, 4], "v1 range(250)")
    check(h.SLUG_RE.match(fslug), "slug %r" % fslug)
    eq([len(pages[p]) for p in (1, 2, 3, 4)], [100, 100, 50, 0], "rows per page")
    compare(fwd, 'SELECT * FROM "nekt_raw"."people" ORDER BY id', [1, 2], "v1 CSV table")
    compare(fwd, "SELECT * FROM nekt_trusted.events ORDER BY id", [2], "v1 NDJSON table")
    compare(fwd, SQL_TYPES, [1, 2], "v1 many types")
    # A page asked twice is served from what was kept: no new upstream execution.
    execs = r'access POST "/api/v1/explorer/queries/[^"]+/execution/" 201'
    before = log_count(emu, execs)
    again = fwd.results(fslug, 2)
    expect_status(again, 200, "page 2 again")
    eq(jparse(again)["data"], pages[2], "page 2 asked twice")
    eq(log_count(emu, execs), before, "upstream executions after asking page 2 a second time")
    fwd.page(fslug, 5)  # a new page does execute
    eq(log_count(emu, execs, before + 1), before + 1, "upstream executions after a new page")


@h.timeout(90)
def test_nekt_v1_concurrent_requests_for_one_page_execute_once():
    """Eight clients ask for the same new v1 page at once: one upstream execution; every
    client gets the same page."""
    emu = EMU.get()
    # no read-ahead: the executions counted are the pages asked for
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "0"], name="nekt-fwd-v1-concurrent"), emu)
    slug = fwd.create(SQL_RANGE_250)
    execs = r'access POST "/api/v1/explorer/queries/[^"]+/execution/" 201'
    before = log_count(emu, execs)
    got = [None] * 8

    def ask(i):
        got[i] = fwd.results(slug, 2)

    errors = [e for _, e in h.run_threads(ask, list(range(8)), timeout=60) if e]
    eq(errors, [], "client errors")
    bodies = []
    for r in got:
        expect_status(r, 200, "concurrent page 2")
        bodies.append(jparse(r)["data"])
    eq([b == bodies[0] for b in bodies], [True] * 8, "every client got the same page")
    eq([row["i"] for row in bodies[0]][:3], [100, 101, 102], "page 2 starts at row 100")
    eq(log_count(emu, execs), before + 1, "upstream executions for 8 concurrent requests")
    fwd.stop()


V1_EXECS = r'access POST "/api/v1/explorer/queries/[^"]+/execution/" 201'


def _settled_count(srv, regex):
    """log_count once the count stops changing (read-aheads still running finish first)."""
    n = log_count(srv, regex)
    for _ in range(20):
        m = log_count(srv, regex)
        if m == n:
            return n
        n = m
    return n


def _read_sequentially(fwd, slug, pages):
    """Reads pages 1..pages in order on one keep-alive connection; returns (seconds, rows
    per page)."""
    conn = KeepAlive(fwd, fwd.key)
    rows = []
    t0 = time.monotonic()
    try:
        for n in range(1, pages + 1):
            r = conn.page(slug, n)
            expect_status(r, 200, "page %d" % n)
            rows.append(jparse(r)["data"])
    finally:
        conn.close()
    return time.monotonic() - t0, rows


@h.alone
@h.timeout(150)
def test_nekt_v1_read_ahead_sequential_reader():
    """--nekt-read-ahead: a sequential v1 reader finds the next pages fetched already. With
    500 ms per upstream execution, 20 pages read in order take well under the time without
    read-ahead, with at most k executions more than the pages read and none past the last
    page once it is known; read-ahead 0 is one execution per page, as before."""
    # (500 ms, not less: dapi's own work per page, slower under ASan and on a loaded machine,
    # must not dominate the comparison)
    emu = emulator("--workers", "8", "--emulate-faults", "path=/api/v1/explorer/queries/,method=POST,latency_ms=500", name="nekt-emu-readahead")
    # 1,950 rows: pages 1..19 are full, page 20 (50 rows) is the last
    sql = "SELECT i, i * 2 AS j, 'row ' || i AS s FROM range(1950) t(i) ORDER BY i"
    expected = [[big_expected(i) for i in range((n - 1) * 100, min(n * 100, 1950))] for n in range(1, 21)]
    timings, execs = {}, {}
    for k in (0, 4):
        # one admission slot per key: a page's slot is given back before its answer is sent
        # and the k read-aheads take none, so the sequential reader is never refused
        fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", str(k), "--max-queries-per-key", "1"], name="nekt-fwd-v1-ra%d" % k), emu)
        slug = fwd.create(sql)
        before = _settled_count(emu, V1_EXECS)
        timings[k], rows = _read_sequentially(fwd, slug, 20)
        eq(rows, expected, "read-ahead %d: the pages" % k)
        execs[k] = _settled_count(emu, V1_EXECS) - before
        # the pages are kept: reading them again executes nothing, and nothing goes on past
        # the last page
        again, rows = _read_sequentially(fwd, slug, 20)
        eq(rows, expected, "read-ahead %d: the pages again" % k)
        eq(log_count(emu, V1_EXECS) - before, execs[k], "read-ahead %d: executions after reading every page again" % k)
        if k:
            eq(fwd.page(slug, 21), [], "past the last page")
            check(log_count(emu, V1_EXECS) - before <= 20 + k, "read-ahead %d: at most %d executions with page 21, got %d" % (k, 20 + k, log_count(emu, V1_EXECS) - before))
        fwd.stop()
    eq(execs[0], 20, "read-ahead 0: one execution per page read")
    check(20 <= execs[4] <= 24, "read-ahead 4: executions %d, expected 20..24 (pages read + k)" % execs[4])
    check(timings[4] <= 0.6 * timings[0], "read-ahead 4 took %.2f s, without it %.2f s: expected at most 60 %%" % (timings[4], timings[0]))


@h.timeout(120)
def test_nekt_v1_one_slot_sequential_reader_never_refused():
    """With --max-queries-per-key 1, a client reading v1 pages one after the other on one
    keep-alive connection is never refused (429): each page's admission slot is given back
    before its answer is sent, not just after (the next request can arrive in between).
    Pages that must be fetched (no read-ahead, 60 ms per upstream execution) and pages read
    again from what is kept, several rounds."""
    emu = emulator("--workers", "4", "--emulate-faults", "path=/api/v1/explorer/queries/,method=POST,latency_ms=60", name="nekt-emu-oneslot")
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "0", "--max-queries-per-key", "1"], name="nekt-fwd-v1-oneslot"), emu)
    sql = "SELECT i FROM range(3000) t(i) ORDER BY i"
    slug = fwd.create(sql)
    conn = KeepAlive(fwd, fwd.key)
    refused = []
    try:
        for rnd in range(3):
            for n in range(1, 31):
                r = conn.page(slug, n)
                if r.status != 200:
                    refused.append((rnd, n, r.status))
                    continue
                eq(jparse(r)["data"][0]["i"], (n - 1) * 100, "round %d page %d" % (rnd, n))
    finally:
        conn.close()
    eq(refused, [], "pages refused (round, page, status)")
    fwd.stop()


@h.timeout(90)
def test_nekt_v1_kept_pages_count_in_the_key_quota():
    """v1 pages are kept in the query's directory to be served again; they count in
    --max-state-bytes-per-key like a result. With 1 MiB and pages of ~100 kB, the first pages
    are kept and served; once the key's pages would take more, a new page is 413 (not kept),
    the kept ones are still served, and the count survives a restart. Before, kept pages
    counted nothing: a key could fill the state disk by reading pages."""
    emu = EMU.get()
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "0", "--max-state-bytes-per-key", str(1024 * 1024)], name="nekt-fwd-v1-quota"), emu)
    sql = "SELECT i, (SELECT string_agg(md5((i * 100 + j)::VARCHAR), '') FROM range(60) t2(j)) AS v FROM range(3000) t(i) ORDER BY i"
    slug = fwd.create(sql)
    qdir = os.path.join(fwd.state_dir, "queries", slug)
    statuses = []
    for n in range(1, 21):
        r = fwd.results(slug, n)
        statuses.append(r.status)
        if r.status == 200:
            eq(jparse(r)["data"][0]["i"], (n - 1) * 100, "page %d" % n)
        else:
            body = expect_error(r, 413, "Query execution failed", "page %d over the quota" % n)
            check("--max-state-bytes-per-key" in body.get("details", ""), "413 names the limit: %r" % body)
    kept = statuses.count(200)
    check(3 <= kept < 20, "some pages kept, then refused: %r" % statuses)
    eq(statuses, [200] * kept + [413] * (20 - kept), "kept pages, then refused ones")
    files = [f for f in os.listdir(qdir) if f.startswith("page-") and f.endswith(".bin")]
    eq(len(files), kept, "page files kept (%r)" % sorted(files))
    used = sum(os.path.getsize(os.path.join(qdir, f)) for f in files)
    check(used <= 1024 * 1024, "kept pages take at most the quota: %d bytes" % used)
    eq(fwd.results(slug, 1).status, 200, "a kept page is still served")
    fwd.restart()
    eq(fwd.results(slug, kept).status, 200, "a kept page after a restart")
    expect_error(fwd.results(slug, kept + 1), 413, "Query execution failed", "a new page after a restart (the count survived)")
    fwd.stop()


@h.timeout(90)
def test_nekt_v1_queries_count_in_the_key_quota_and_make_room():
    """A v1 query has no run of its own (its pages are fetched per request), so it never
    ends: it used to be skipped when a key's oldest queries were deleted to make room, and a
    key could keep any number of them (8 KiB of quota each, a directory on disk each), then
    fill --max-state-bytes for every key. Now the oldest go like ended queries: with 1 MiB
    (128 queries), key A's 150 creations leave its newest 128; key B's query is kept."""
    emu = EMU.get()
    quota = 1024 * 1024
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "0", "--max-state-bytes-per-key", str(quota)], name="nekt-fwd-v1-charge"), emu)
    b = fwd.create("SELECT 'b' AS k", key=K2)
    a = [fwd.create("SELECT %d AS n" % i, key=K1) for i in range(150)]
    gone = [i for i, slug in enumerate(a) if fwd.api("GET", "/api/queries/" + slug, key=K1).status == 404]
    eq(gone, list(range(22)), "key A's queries deleted (its oldest, 128 kept)")
    listed = jparse(fwd.api("GET", "/api/queries?limit=1000", key=K1))
    eq(sorted(q["slug"] for q in listed["queries"]), sorted(a[22:]), "key A's list")
    expect_status(fwd.api("GET", "/api/queries/" + b, key=K2), 200, "key B's query is kept")
    qdir = os.path.join(fwd.state_dir, "queries")
    dirs = [d for d in os.listdir(qdir) if os.path.isdir(os.path.join(qdir, d))]
    check(set(dirs) <= set(a[22:] + [b]), "no directory left of a deleted query: %r" % sorted(set(dirs) - set(a[22:] + [b])))
    # a kept one still pages
    eq(jparse(fwd.results(a[149], 1, key=K1))["data"], [{"n": 149}], "the newest query's page 1")
    fwd.stop()


@h.timeout(120)
def test_nekt_v1_page_of_a_query_deleted_while_it_is_fetched():
    """A v1 page takes an upstream execution (here polled for 3 s); the query may go meanwhile:
    cancelled then deleted by its owner, or deleted to make room for the key's newer queries.
    The request then answers like one made after the deletion, 404 Query not found (it was a
    503 "Query execution failed"; 410 Query cancelled when it was only cancelled), and leaves
    nothing of the query on disk (the page's writer re-creates a missing directory). The same
    for pages being read ahead."""
    emu, fwd = pair(["--workers", "8", "--emulate-faults", "path=/api/v1/explorer/queries/,method=GET,latency_ms=3000"], api="v1", fwd_args=["--nekt-read-ahead", "0", "--max-state-bytes-per-key", str(1024 * 1024)])
    qdir = os.path.join(fwd.state_dir, "queries")
    sql = "SELECT i FROM range(250) t(i) ORDER BY i"

    def fetch_while(slug, delete):
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("r", fwd.results(slug, 1)))
        t.start()
        time.sleep(0.3)  # the page's execution is under way upstream
        delete()
        t.join(30)
        return got["r"]

    def by_owner(slug):
        expect_status(fwd.api("DELETE", "/api/queries/" + slug), 200, "cancelled")
        expect_status(fwd.api("DELETE", "/api/queries/" + slug), 204, "deleted")

    slug = fwd.create(sql)
    cancel = lambda: expect_status(fwd.api("DELETE", "/api/queries/" + slug), 200, "cancelled")
    body = expect_error(fetch_while(slug, cancel), 410, "Query cancelled", "the page of a query its owner cancelled meanwhile")
    eq(body.get("details"), "cancelled by its owner (DELETE)", "details")
    slug = fwd.create(sql)
    expect_error(fetch_while(slug, lambda: by_owner(slug)), 404, "Query not found", "the page of a query its owner deleted meanwhile")
    eq(os.path.exists(os.path.join(qdir, slug)), False, "the deleted query's directory")
    # evicted: 128 newer queries of its key (1 MiB, 8 KiB each) leave no room for it
    slug = fwd.create(sql)
    newer = []
    r = fetch_while(slug, lambda: newer.extend(fwd.create("SELECT %d AS n" % i) for i in range(128)))
    expect_status(fwd.api("GET", "/api/queries/" + slug), 404, "the oldest query was deleted to make room")
    expect_error(r, 404, "Query not found", "the page of a query deleted to make room meanwhile")
    eq(os.path.exists(os.path.join(qdir, slug)), False, "the evicted query's directory")
    fwd.stop()
    # read ahead: page 1 read, pages 2 and 3 fetched in the background when the query goes
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "2"], name="nekt-fwd-v1-ra-deleted"), emu)
    qdir = os.path.join(fwd.state_dir, "queries")
    slug = fwd.create(sql)
    before = _settled_count(emu, V1_EXECS)
    eq(len(fwd.page(slug, 1)), 100, "page 1")
    by_owner(slug)
    log_count(emu, V1_EXECS, before + 3, timeout=10)  # the read-aheads' executions
    time.sleep(1.0)  # their polls, downloads and writes
    eq(os.path.exists(os.path.join(qdir, slug)), False, "no directory left by the pages read ahead")
    fwd.stop()


def test_nekt_download_that_cannot_be_written_names_no_server_path():
    """A page file downloaded from Nekt that cannot be written (here the query's directory is
    a plain file: ENOTDIR; a full disk is the usual cause) fails the page with why, but the
    details no longer carry the file's path in the server's state dir (they did: "cannot
    write /…/queries/<slug>/page-1.….parquet"). The path goes to the server's log."""
    fwd = attach(FWD1.get(), EMU.get())
    slug = fwd.create("SELECT 1 AS one")
    d = os.path.join(fwd.state_dir, "queries", slug)
    if os.path.isdir(d):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    h.write_file(d, "in the way\n")
    try:
        body = expect_error(fwd.results(slug, 1), 500, "Query execution failed", "a download that cannot be written")
        details = body.get("details", "")
        check("cannot write the file downloaded from Nekt" in details, "details say why: %r" % details)
        check(fwd.state_dir not in details and "/queries/" not in details, "no server path in %r" % details)
        check(d in fwd.wait_stderr(lambda t: d in t, timeout=5), "the path is in the server's log")
    finally:
        os.unlink(d)


@h.timeout(60)
def test_nekt_v1_read_ahead_stops_at_the_last_page():
    """A short v1 result: the page with fewer than 100 rows is the last, and read-ahead never
    goes past it once it is known; a client reading a page that is not the next one is not
    refused for the read-ahead's work (it takes no admission slot)."""
    emu = EMU.get()
    fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "4", "--max-queries-per-key", "1"], name="nekt-fwd-v1-ra-last"), emu)
    slug = fwd.create(SQL_RANGE_250)
    before = log_count(emu, V1_EXECS)
    eq([r["i"] for r in fwd.page(slug, 1)][:2], [0, 1], "page 1")
    # page 1 read: pages 2..5 ahead (3 is the last: 50 rows; 4 and 5 may start before that
    # is known), never more than k
    n = log_count(emu, V1_EXECS, before + 3) - before
    check(3 <= n <= 5, "executions after page 1: %d, expected 3..5" % n)
    # with one admission slot per key, the client's own requests still pass
    eq(len(fwd.page(slug, 3)), 50, "page 3 (the last)")
    eq(len(fwd.page(slug, 2)), 100, "page 2")
    eq(fwd.page(slug, 4), [], "page 4")
    after = _settled_count(emu, V1_EXECS) - before
    check(after <= 5, "executions: %d, expected at most 5 (pages 1..5)" % after)
    # once the last page is known, reading it or before it reads nothing ahead
    for p in (3, 2, 1):
        fwd.page(slug, p)
    eq(log_count(emu, V1_EXECS) - before, after, "executions after reading kept pages again")
    fwd.stop()


@h.alone
@h.timeout(60)
def test_nekt_v1_read_ahead_at_shutdown():
    """SIGTERM while pages are being read ahead (each execution takes 1.5 s upstream): the
    server stops cleanly (status 0: under ASan, nothing leaked), without logging the cut
    read-aheads as failures; restarted, it serves the pages again."""
    emu = emulator("--workers", "8", "--emulate-faults", "path=/api/v1/explorer/queries/,method=POST,latency_ms=1500", name="nekt-emu-ra-stop")
    with emu:
        fwd = attach(forwarder(emu, "v1", ["--nekt-read-ahead", "4"], name="nekt-fwd-v1-ra-stop"), emu)
        slug = fwd.create(SQL_BIG)
        eq(fwd.page(slug, 1)[0], big_expected(0), "page 1")
        time.sleep(0.3)  # pages 2..5 are being executed upstream
        fwd.stop()
        check(fwd.stop_seconds < 8, "stopped in %.1f s" % fwd.stop_seconds)
        check("read-ahead failed" not in fwd.stderr_text(), "read-aheads cut by the shutdown are not failures")
        fwd.start()
        eq(fwd.page(slug, 2)[0], big_expected(100), "page 2 after the restart")
        eq(fwd.page(slug, 1)[0], big_expected(0), "page 1 after the restart (kept)")
        fwd.stop()


@h.timeout(60)
def test_nekt_v1_reference_validation():
    fwd = FWD1.get()
    expect_error(fwd.create_resp({"sql_query": "SELECT 1"}, key=None), 401, MISSING_KEY, "v1 create without a key")
    slug = fwd.create("SELECT 7 AS x")
    expect_error(fwd.results(slug, 1, key=None), 401, MISSING_KEY, "v1 results without a key")
    expect_error(fwd.results(slug, "abc"), 400, "Page number must be a valid integer", "v1 page_number=abc")
    expect_error(fwd.results(slug, 0), 400, "Page number must be a positive integer", "v1 page_number=0")
    expect_error(fwd.results(slug, 1, key=K2), 404, "Query not found", "v1 another key")
    expect_error(fwd.results("dapi-query-doesnotexist0000000000", 1), 404, "Query not found", "v1 unknown slug")
    eq(fwd.page(slug, 1), [{"x": 7}], "v1 page 1")
    eq(fwd.page(slug, 2), [], "v1 past the end")
    bad = fwd.create("SELECT no_such_column FROM range(3)")
    expect_exec_error(fwd.results(bad, 1), 400, bad, details_has=["no_such_column"], what="v1 SQL error upstream")


# ----------------------------------------------------------------------------- 4. key modes


def test_nekt_v2_forwarding_keys():
    fwd = FWD2.get()
    eq(fwd.query("SELECT 'k1' AS who", key=K1), [{"who": "k1"}], "nektkey1 forwarded")
    eq(fwd.query("SELECT 'k2' AS who", key=K2), [{"who": "k2"}], "nektkey2 forwarded")
    # A key Nekt does not know: refused at creation, as the reference does (the creation waits
    # for the run's first answer from Nekt, --upstream-key-check-wait).
    r = fwd.create_resp({"sql_query": "SELECT 1 AS x"}, key="wrong-key")
    body = expect_error(r, (401, 403), REJECTED, "v2 create with a key Nekt rejects")
    eq(sorted(body.keys()), ["details", "error"], "v2 wrong key: the error shape")
    check("401" in body["details"] or "403" in body["details"], "details should say what Nekt answered: %r" % body)
    # Without the wait (--upstream-key-check-wait 0) the slug comes at once and the results
    # say that Nekt rejected the key.
    emu = EMU.get()
    with attach(forwarder(emu, "v2", ["--upstream-key-check-wait", "0"], name="nekt-fwd-v2-nowait"), emu) as fwd0:
        slug = fwd0.create("SELECT 1 AS x", key="wrong-key")
        body = expect_exec_error(fwd0.results(slug, 1, key="wrong-key"), (401, 403), slug, error=REJECTED, what="v2 wrong key, no wait")
        check("401" in body["details"] or "403" in body["details"], "details should say what Nekt answered: %r" % body)
        expect_error(fwd0.results(slug, 1, key=K1), 404, "Query not found", "the wrong key's slug with another key")


def _query_dirs(srv):
    d = os.path.join(srv.state_dir, "queries")
    return sorted(n for n in os.listdir(d) if n.startswith("dapi-query-")) if os.path.isdir(d) else []


def _timed_create(fwd, sql, key):
    t0 = time.monotonic()
    r = fwd.create_resp({"sql_query": sql}, key=key)
    return r, time.monotonic() - t0


@h.alone
@h.timeout(90)
def test_nekt_v2_key_check_at_creation():
    """Regression (issue 9): with --nekt-api v2 a key Nekt refuses got 200 and a slug, and 401
    only on the results request. The creation now waits (--upstream-key-check-wait, here 3 s)
    for its run's first answer from Nekt: a refused key is 401 at creation and leaves no query
    behind (nor a held slot); an accepted key is remembered, so its next creations answer at
    once; an upstream slower than the wait gets the slug after the wait, as before. The first
    answer is the run's own sql-query call: one call per query, never a second one."""
    emu = emulator("--emulate-faults", "path=/api/v1/sql-query/,latency_ms=1500", name="nekt-emu-keycheck")
    with emu:
        args = ["--upstream-key-check-wait", "3", "--max-queries-per-key", "1"]
        with attach(forwarder(emu, "v2", args, name="nekt-fwd-keycheck"), emu) as fwd:
            # refused at creation, three times in a row: each gave its slot back (else 429)
            for i in range(3):
                r, dt = _timed_create(fwd, "SELECT %d AS x" % i, "wrong-key")
                body = expect_error(r, (401, 403), REJECTED, "creation %d with a key Nekt refuses" % i)
                check("401" in body.get("details", "") or "403" in body.get("details", ""), "details: %s" % r.short())
                check(dt >= 1.3, "the refusal came after %.2f s, before Nekt's answer (1.5 s)" % dt)
            eq(_query_dirs(fwd), [], "queries left behind by refused creations")
            # a good key: the first creation waits for Nekt's answer (1.5 s), the next do not
            r, dt = _timed_create(fwd, SQL_RANGE_250, K1)
            expect_status(r, 200, "first creation with nektkey1")
            check(1.3 <= dt < 3.5, "the first creation with a new key took %.2f s (Nekt answers in 1.5 s)" % dt)
            slug1 = jparse(r)["query_slug"]
            eslug, ref = reference(emu, SQL_RANGE_250, [1, 3])
            for p in (1, 3):
                same_page(fwd.results(slug1, p, key=K1), slug1, ref[p], eslug, p, "page %d of the checked query" % p)
            r, dt = _timed_create(fwd, "SELECT 7 AS x", K1)
            expect_status(r, 200, "second creation with nektkey1")
            check(dt < 1.2, "a key Nekt accepted lately should create at once (Nekt takes 1.5 s), took %.2f s" % dt)
            eq(fwd.page(jparse(r)["query_slug"], 1, key=K1), [{"x": 7}], "the second query's rows")
            log_count(emu, SQL_POST_RE.pattern, 5)
            eq(sql_posts(emu), [401, 401, 401, 200, 200], "sql-query calls: one per creation, none again")
        # Nekt slower than the wait: the slug after the wait (1 s), and the run goes on
        with attach(forwarder(emu, "v2", ["--upstream-key-check-wait", "1"], name="nekt-fwd-keycheck-slow"), emu) as fwd:
            r, dt = _timed_create(fwd, "SELECT 8 AS x", K2)
            expect_status(r, 200, "creation when Nekt answers after the wait")
            check(0.9 <= dt < 2.5, "the slug should come after the 1 s wait, came after %.2f s" % dt)
            eq(fwd.page(jparse(r)["query_slug"], 1, key=K2), [{"x": 8}], "the rows of a query answered after the wait")
            check("no answer from Nekt within 1 s" in fwd.stderr_text(), "the forwarder should say it answered after the wait")


def test_nekt_v2_server_held_key():
    emu = EMU.get()
    with attach(forwarder(emu, "v2", held=True), emu) as fwd:
        compare(fwd, SQL_RANGE_250, [1, 3], "v2 server-held key", key=CLIENT_KEY)
        expect_error(fwd.create_resp({"sql_query": "SELECT 1"}, key=K1), 401, "Invalid API key", "a Nekt key sent to a server-held forwarder")
        slug = fwd.create("SELECT 1 AS x", key=CLIENT_KEY)
        expect_error(fwd.results(slug, 1, key=K1), 401, "Invalid API key", "results with the Nekt key")
        expect_error(fwd.results(slug, 1, key=None), 401, MISSING_KEY, "results without a key")
        expect_error(fwd.results(slug, 1, key="wrong"), 401, "Invalid API key", "results with a wrong key")
        eq(fwd.page(slug, 1, key=CLIENT_KEY), [{"x": 1}], "clientkey reads its query")


def test_nekt_v2_server_held_key_rejected_upstream():
    """A server-held key that Nekt rejects: a clean JSON error naming the rejection."""
    emu = EMU.get()
    with attach(forwarder(emu, "v2", held=True, held_key="not-a-nekt-key"), emu) as fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"}, key=CLIENT_KEY)
        body = expect_error(r, (401, 403), what="v2 bad server-held key, at creation")
        eq(body.get("error"), REJECTED, "error for a bad server-held key")


@h.timeout(60)
def test_nekt_v1_forwarding_keys():
    fwd = FWD1.get()
    eq(fwd.query("SELECT 'k2' AS who", key=K2), [{"who": "k2"}], "v1 nektkey2 forwarded")
    r = fwd.create_resp({"sql_query": "SELECT 1"}, key="wrong-key")
    body = expect_error(r, (401, 403), REJECTED, "v1 create with a key Nekt rejects")
    check(isinstance(body.get("details"), str) and ("401" in body["details"] or "403" in body["details"]), "details: %s" % r.short())


@h.timeout(60)
def test_nekt_v1_server_held_key():
    emu = EMU.get()
    with attach(forwarder(emu, "v1", held=True), emu) as fwd:
        compare(fwd, SQL_RANGE_250, [1, 3], "v1 server-held key", key=CLIENT_KEY)
        expect_error(fwd.create_resp({"sql_query": "SELECT 1"}, key=K1), 401, "Invalid API key", "v1: a Nekt key sent to a server-held forwarder")
        slug = fwd.create("SELECT 1 AS x", key=CLIENT_KEY)
        expect_error(fwd.results(slug, 1, key=K1), 401, "Invalid API key", "v1 results with the Nekt key")
        expect_error(fwd.results(slug, 1, key=None), 401, MISSING_KEY, "v1 results without a key")
        eq(fwd.page(slug, 1, key=CLIENT_KEY), [{"x": 1}], "v1 clientkey reads its query")
    with attach(forwarder(emu, "v1", held=True, held_key="not-a-nekt-key"), emu) as fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1"}, key=CLIENT_KEY)
        expect_error(r, (401, 403, 502), REJECTED, "v1 bad server-held key")


# ----------------------------------------------------------------------------- 5. faults (v2)


def test_nekt_fault_503_retried():
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/sql-query/,status=503,first=2"])
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [1, 3], "v2 after two 503s")
        log_count(emu, SQL_POST_RE.pattern, 3)
        eq(sql_posts(emu), [503, 503, 200], "upstream sql-query answers")
        check("retrying" in fwd.stderr_text(), "the forwarder should log its retries")
        # Regression (issue 9): it logged "giving up after 3 attempt(s): success"
        check("giving up" not in fwd.stderr_text(), "a retry that worked is no giving up:\n" + h.tail_text(fwd.stderr_text()))
        check("POST /api/v1/sql-query/: succeeded at attempt 3" in fwd.stderr_text(), "the forwarder should say the third attempt worked")


def test_nekt_fault_429_retry_after_honoured():
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/sql-query/,status=429,retry_after=1,first=1"])
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [2], "v2 after a 429")
        log_count(emu, SQL_POST_RE.pattern, 2)
        eq(sql_posts(emu), [429, 200], "upstream sql-query answers")
        # The first access line is written when the 429 is sent, the second when the query is
        # answered: the retry waited Retry-After (1 s) in between.
        stamps = [(m.group(1), m.group(4)) for m in ACCESS_TS_RE.finditer(emu.stderr_text()) if m.group(3) == "/api/v1/sql-query/"]
        t = [time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) + float(s[19:]) for s, _ in stamps]
        check(t[1] - t[0] >= 0.9, "the retry after 'Retry-After: 1' came %.3f s after the 429" % (t[1] - t[0]))
        check("retrying in 1000 ms" in fwd.stderr_text(), "the forwarder should say it waits 1000 ms")


def _one_bad_answer(faults, details_has, status=502, at_creation=True):
    """An unusable sql-query answer: a clean 502 at creation when it is the creation's first
    answer from Nekt (the key check), on the results request when the creation did not wait
    (--upstream-key-check-wait 0)."""
    emu, fwd = pair(["--emulate-faults", faults])
    with emu, fwd:
        if at_creation:
            r = fwd.create_resp({"sql_query": "SELECT 1 AS x"})
            body = expect_error(r, status, "Failed to create query", "v2 create with %s" % faults)
            for frag in details_has:
                check(frag.lower() in body.get("details", "").lower(), "details should mention %r: %s" % (frag, r.short()))
        else:
            slug = fwd.create("SELECT 1 AS x")
            expect_exec_error(fwd.results(slug, 1), status, slug, details_has=details_has, what="v2 with %s" % faults)
        # a 200 with an unusable body is not a transient HTTP error: exactly one attempt
        log_count(emu, SQL_POST_RE.pattern, 1)
        eq(len(sql_posts(emu)), 1, "sql-query calls for an unusable 200 answer")
        with attach(forwarder(emu, "v2", ["--upstream-key-check-wait", "0"], name="nekt-fwd-v2-nowait"), emu) as fwd0:
            slug = fwd0.create("SELECT 1 AS x")
            expect_exec_error(fwd0.results(slug, 1), status, slug, details_has=details_has, what="v2 with %s, no wait" % faults)


def test_nekt_fault_truncated_once_then_recovers():
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/sql-query/,body=truncate,first=1"])
    with emu, fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"})
        body = expect_error(r, 502, "Failed to create query", "truncated sql-query answer, at creation")
        check("invalid answer" in body.get("details", ""), "details: %s" % r.short())
        compare(fwd, SQL_RANGE_250, [1, 3], "v2 query after a truncated answer")


def test_nekt_fault_garbage_body_is_clean_502():
    _one_bad_answer("path=/api/v1/sql-query/,body=garbage", ["invalid answer"])


def test_nekt_fault_wrongtype_body_is_clean_502():
    # a JSON object: Nekt answered (the creation gets its slug); its fields are checked by the run
    _one_bad_answer("path=/api/v1/sql-query/,body=wrongtype", ["state"], at_creation=False)


def test_nekt_fault_empty_body_is_clean_502():
    _one_bad_answer("path=/api/v1/sql-query/,body=empty", ["invalid answer"])


@h.alone
def test_nekt_fault_persistent_500_gives_up():
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/sql-query/,status=500"], fwd_args=["--upstream-attempts", "2"])
    with emu, fwd:
        t0 = time.monotonic()
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"})
        body = expect_error(r, 502, "Failed to create query", "persistent 500, at creation")
        check("500" in body.get("details", ""), "details: %s" % r.short())
        dt = time.monotonic() - t0
        check(dt < 5, "gave up after %.1f s (2 attempts should take well under 5 s)" % dt)
        log_count(emu, SQL_POST_RE.pattern, 2)
        eq(sql_posts(emu), [500, 500], "sql-query calls with --upstream-attempts 2")


UPSTREAM_TIMEOUT = "Upstream did not answer in time"


@h.alone
def test_nekt_fault_upstream_timeout_is_504():
    """Regression (issue 9): an upstream timeout was a 504 in the execution-failure shape, the
    shape of a query that ran past --query-timeout, so clients took it for the query's final
    failure. It is a 504 in the generic shape: at creation ("Failed to create query") when it
    is the creation's first answer from Nekt, on the results request otherwise."""
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/sql-query/,latency_ms=2000"], fwd_args=["--upstream-timeout", "1", "--upstream-attempts", "2"])
    with emu, fwd:
        t0 = time.monotonic()
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"})
        body = expect_error(r, 504, "Failed to create query", "upstream timeout, at creation")
        eq(sorted(body.keys()), ["details", "error"], "upstream timeout at creation: the generic shape")
        check("in time" in body["details"], "details: %s" % r.short())
        dt = time.monotonic() - t0
        check(1.5 <= dt < 6, "a timeout after 2 attempts of 1 s took %.1f s" % dt)
        args = ["--upstream-timeout", "1", "--upstream-attempts", "2", "--upstream-key-check-wait", "0"]
        with attach(forwarder(emu, "v2", args, name="nekt-fwd-v2-nowait"), emu) as fwd0:
            slug = fwd0.create("SELECT 1 AS x")
            r = fwd0.results(slug, 1)
            body = expect_error(r, 504, UPSTREAM_TIMEOUT, "upstream timeout on the results request")
            eq(sorted(body.keys()), ["details", "error"], "upstream timeout: the generic shape, not the execution failure's")
            check("in time" in body["details"], "details: %s" % r.short())


def _closed_port():
    import socket

    sk = socket.socket()
    sk.bind(("127.0.0.1", 0))
    port = sk.getsockname()[1]
    sk.close()
    return port


@h.timeout(120)
def test_nekt_unreachable_upstream_is_502_and_the_cli_exits_5():
    """Regression (issue 9): an unreachable upstream came back as an execution failure, so
    `dapi query` exited 4 (the query failed) instead of 5 (unavailable), and scripts that retry
    on 5 did not. Every path answers 502 with details that say Nekt cannot be reached: v2 at
    creation (the creation waits for Nekt's first answer), v2 results (without that wait), v1
    creation and a v1 page. The details name the kind of failure, never --nekt-url's host or
    port (libcurl's own text does: it goes to the server log)."""
    port = _closed_port()
    url = "http://127.0.0.1:%d" % port

    def no_host(details, what):
        check("127.0.0.1" not in details and str(port) not in details,
              "%s: details name --nekt-url: %s" % (what, details))

    base = ["--backend", "nekt", "--nekt-url", url, "--upstream-attempts", "2"]
    with Server(args=base + ["--nekt-api", "v2"], keys=None, name="nekt-fwd-unreachable") as fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"}, key=K1)
        body = expect_error(r, 502, "Failed to create query", "v2 create, upstream unreachable")
        check("cannot reach Nekt" in body.get("details", ""), "details: %s" % r.short())
        no_host(body["details"], "v2 create")
        check("127.0.0.1 port %d" % port in fwd.wait_stderr(lambda t: "giving up" in t),
              "the server log has libcurl's text")
        rc, out, err = h.run_cli(["query", "--sql", "SELECT 1", "--retries", "0", "-q"], env={"DAPI_URL": "http://127.0.0.1:%d" % fwd.port, "DAPI_API_KEY": K1}, timeout=60)
        fwd.touched.add(h.CURRENT_TEST)
        eq(rc, 5, "`dapi query` exit status when Nekt cannot be reached (stderr %r)" % err)
    with Server(args=base + ["--nekt-api", "v2", "--upstream-key-check-wait", "0"], keys=None, name="nekt-fwd-unreachable-nowait") as fwd:
        slug = fwd.create("SELECT 1 AS x", key=K1)
        body = expect_exec_error(fwd.results(slug, 1, key=K1), 502, slug, details_has=["cannot reach Nekt"], what="v2 results, upstream unreachable")
        no_host(body["details"], "v2 results")
    with Server(args=base + ["--nekt-api", "v1"], keys=None, name="nekt-fwd-unreachable-v1") as fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1 AS x"}, key=K1)
        body = expect_error(r, 502, "Failed to start application", "v1 create, upstream unreachable")
        check("cannot reach Nekt" in body.get("details", ""), "details: %s" % r.short())
        no_host(body["details"], "v1 create")
    # a v1 page once Nekt is gone
    emu = emulator(name="nekt-emu-gone")
    with emu:
        with attach(forwarder(emu, "v1", ["--upstream-attempts", "2"], name="nekt-fwd-v1-gone"), emu) as fwd:
            slug = fwd.create("SELECT 1 AS x")
            emu.stop()
            body = expect_exec_error(fwd.results(slug, 1), 502, slug, details_has=["cannot reach Nekt"], what="v1 page, upstream gone")
            check(str(emu.port) not in body["details"], "v1 page: details name the upstream's port: %s" % body["details"])


@h.timeout(120)
def test_nekt_unreachable_download_names_no_host():
    """A presigned URL whose host cannot be reached (the bucket down, a firewall): the query
    fails with 502 whose details say the download failed, with libcurl's fixed text for the
    error and never the URL's host or port (a bucket name in production); the whole text goes
    to the server log. v2 (the files of a run) and v1 (a page's file)."""
    port = _closed_port()
    for api, what in (("v2", "/api/v1/sql-query/"), ("v1", "/api/v1/explorer/")):
        faults = "path=%s,url_host=127.0.0.1:%d" % (what, port)
        emu, fwd = pair(["--emulate-faults", faults], api=api, fwd_args=["--upstream-attempts", "2"])
        with emu, fwd:
            slug = fwd.create("SELECT 1 AS x")
            body = expect_exec_error(fwd.results(slug, 1), 502, slug, details_has=["cannot download a result file", "connect"], what=api + " download, bucket unreachable")
            check("127.0.0.1" not in body["details"] and str(port) not in body["details"],
                  "%s: details name the URL's host: %s" % (api, body["details"]))
            log = fwd.wait_stderr(lambda t: "cannot download a result file" in t)
            check("127.0.0.1 port %d" % port in log, "%s: the server log has libcurl's text" % api)
            check(re.search(r"download failed \(.*127\.0\.0\.1 port %d.*\); retrying" % port, log), "%s: the download was retried" % api)


@h.timeout(60)
def test_nekt_v1_upstream_timeout_on_a_page_is_504():
    """The v1 page of a query whose execution status Nekt does not give in time: 504 in the
    generic shape, not the execution-failure shape (that one is --query-timeout's)."""
    faults = "path=/api/v1/explorer/queries/,method=GET,latency_ms=2000"
    emu, fwd = pair(["--emulate-faults", faults], api="v1", fwd_args=["--upstream-timeout", "1", "--upstream-attempts", "1"])
    with emu, fwd:
        slug = fwd.create("SELECT 1 AS x")
        r = fwd.results(slug, 1)
        body = expect_error(r, 504, UPSTREAM_TIMEOUT, "v1 page when Nekt does not answer in time")
        eq(sorted(body.keys()), ["details", "error"], "v1 upstream timeout: the generic shape")


def test_nekt_fault_expired_url_once_reexecutes():
    emu, fwd = pair(["--emulate-faults", "path=/emu-files/,expire=1,first=1"])
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [1, 3], "v2 after an expired URL")
        log_count(emu, SQL_POST_RE.pattern, 2)
        eq(sql_posts(emu), [200, 200], "sql-query executions (one more after the expired URL)")
        check(re.search(r'access GET "/emu-files/[^"]+" 403', emu.stderr_text()), "the emulator should have refused one URL")


def test_nekt_fault_expired_urls_always_bounded():
    emu, fwd = pair(["--emulate-faults", "path=/emu-files/,expire=1"])
    with emu, fwd:
        slug = fwd.create("SELECT 1 AS x")
        expect_exec_error(fwd.results(slug, 1), 502, slug, details_has=["expired"], what="URLs always expired")
        n = log_count(emu, SQL_POST_RE.pattern)
        eq(n, 3, "sql-query executions when every URL has expired (bounded re-executions)")


def test_nekt_fault_real_url_ttl_expiry():
    """--emulate-url-ttl 0 and downloads delayed 1.1 s: every URL is stale when it is
    fetched (a real expiry, not an injected one) -> bounded re-executions, a clean 502."""
    emu, fwd = pair(["--emulate-url-ttl", "0", "--emulate-faults", "path=/emu-files/,latency_ms=1100"])
    with emu, fwd:
        slug = fwd.create("SELECT 1 AS x")
        expect_exec_error(fwd.results(slug, 1), 502, slug, details_has=["expired"], what="URLs expired by TTL")


# ----------------------------------------------------------------------------- 5. faults (v1)


@h.alone
@h.timeout(60)
def test_nekt_v1_slow_application_start():
    emu = emulator("--emulate-start-delay", "2000", name="nekt-emu-slowstart")
    with emu:
        with attach(forwarder(emu, "v1", ["--application-timeout", "1"], name="nekt-fwd-v1-apptimeout"), emu) as fwd:
            t0 = time.monotonic()
            r = fwd.create_resp({"sql_query": "SELECT 1 AS x"}, key=K1)
            body = expect_error(r, (502, 504), "Failed to start application", "application not active within --application-timeout 1")
            check("--application-timeout" in body.get("details", ""), "details should name --application-timeout: %s" % r.short())
            dt = time.monotonic() - t0
            check(dt < 4, "gave up after %.1f s with --application-timeout 1" % dt)
        with attach(forwarder(emu, "v1", name="nekt-fwd-v1-slowstart"), emu) as fwd:
            t0 = time.monotonic()
            fslug = fwd.create("SELECT 1 AS x", key=K2)  # nektkey2's application starts now
            dt = time.monotonic() - t0
            check(dt >= 1.5, "creation returned after %.2f s although the application takes 2 s to start" % dt)
            eq(fwd.page(fslug, 1, key=K2), [{"x": 1}], "page after a slow start")
            starts = log_count(emu, r'access GET "/api/v1/explorer/application/" 200')
            check(3 <= starts <= 25, "application status polls: %d (expected a bounded backoff)" % starts)


def test_nekt_v1_create_503_is_retried():
    """503 promises the request was not processed: POST explorer/queries/ is retried
    (retry.c: maybe_done is false for 503)."""
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/explorer/queries/,method=POST,status=503,first=1"], api="v1")
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [1], "v1 after a 503 on query creation")
        eq(log_count(emu, r'access POST "/api/v1/explorer/queries/" \d+', 2), 2, "query creations (one 503, one retry)")


def test_nekt_v1_create_500_not_retried():
    """500 may have created the query upstream: POST explorer/queries/ is not idempotent, so
    it is not repeated (retry.c) and the client gets a clean 502."""
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/explorer/queries/,method=POST,status=500,first=1"], api="v1")
    with emu, fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1"})
        body = expect_error(r, 502, "Failed to create query", "v1 create answered 500")
        check("500" in body.get("details", ""), "details: %s" % r.short())
        eq(log_count(emu, r'access POST "/api/v1/explorer/queries/" \d+'), 1, "query creations after a 500 (not repeated)")
        eq(fwd.query("SELECT 2 AS y"), [{"y": 2}], "the next query works")


def test_nekt_v1_execution_faults_retried():
    """503 on starting an execution and 500 on polling it (a GET) are both transient."""
    faults = "path=/api/v1/explorer/queries/,method=POST,status=503,first=2;path=/api/v1/explorer/queries/,method=GET,status=500,first=1"
    # first=2 on POST: the query creation and the first execution start each get one 503.
    emu, fwd = pair(["--emulate-faults", faults], api="v1")
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [1, 2], "v1 with transient execution faults")


def test_nekt_v1_garbage_application_answer():
    emu, fwd = pair(["--emulate-faults", "path=/api/v1/explorer/application/,body=garbage"], api="v1")
    with emu, fwd:
        r = fwd.create_resp({"sql_query": "SELECT 1"})
        body = expect_error(r, 502, "Failed to start application", "v1 garbage application answer")
        check("invalid answer" in body.get("details", ""), "details: %s" % r.short())


def test_nekt_v1_expired_page_url_reexecutes():
    # no read-ahead: the executions counted are the pages asked for
    emu, fwd = pair(["--emulate-faults", "path=/emu-files/,expire=1,first=1"], api="v1", fwd_args=["--nekt-read-ahead", "0"])
    with emu, fwd:
        compare(fwd, SQL_RANGE_250, [1, 2], "v1 after an expired page URL")
        n = log_count(emu, r'access POST "/api/v1/explorer/queries/[^"]+/execution/" 201')
        eq(n, 3, "executions (page 1 twice after the expired URL, page 2 once)")


# ----------------------------------------------------------------------------- 6. restarts


@h.timeout(90)
def test_nekt_restart_emulator_mid_v2_query():
    """Stop the emulator (SIGTERM) after a v2 query was created through the forwarder but
    before its results were fetched (its run is retrying 503s), start it again on the same
    port and state dir: the results are the data (after retries) or a clean error; then a
    new query works."""
    emu = emulator("--emulate-faults", "path=/api/v1/sql-query/,status=503", name="nekt-emu-restart")
    with emu:
        port = emu.port
        with attach(forwarder(emu, "v2", ["--upstream-attempts", "30", "--upstream-retry-time", "40"]), emu) as fwd:
            slug = fwd.create(SQL_RANGE_250)
            log_count(emu, SQL_POST_RE.pattern, 1)  # the run has started and is retrying
            emu.stop()
            time.sleep(0.5)  # the forwarder's attempts meanwhile find no server
            emu.restart(args=["--emulate-nekt", "--port", str(port)])
            eq(emu.port, port, "the emulator's port after restart")
            r = fwd.results(slug, 3)
            if r.status == 200:
                eslug, ref = reference(emu, SQL_RANGE_250, [3])
                same_page(r, slug, ref[3], eslug, 3, "v2 page 3 after an emulator restart")
            else:
                expect_exec_error(r, (502, 503, 504), slug, page=3, what="v2 after an emulator restart")
            compare(fwd, SQL_RANGE_250, [1, 3], "a new v2 query after the emulator restart")


@h.timeout(90)
def test_nekt_emulator_sigterm_with_call_in_flight():
    """Regression: SIGTERM reaches the emulator while a sql-query call is in flight past
    --shutdown-grace; the answer goes out and the forwarder at once fetches the file on the
    same keep-alive connection, which reached a stopped worker pool (SIGSEGV). The emulator
    must exit 0; the forwarder must give the data or a clean error, and work again after the
    emulator is back on the same port."""
    emu = emulator("--shutdown-grace", "1", "--emulate-faults", "path=/api/v1/sql-query/,latency_ms=3000,first=1", name="nekt-emu-inflight")
    with emu:
        port = emu.port
        with attach(forwarder(emu, "v2", ["--upstream-attempts", "10", "--upstream-retry-time", "30"]), emu) as fwd:
            slug = fwd.create(SQL_RANGE_250)
            time.sleep(0.4)  # the sql-query call is in flight (3 s latency > 1 s grace)
            emu.stop()
            emu.restart(args=["--emulate-nekt", "--port", str(port)])
            r = fwd.results(slug, 3)
            if r.status == 200:
                eslug, ref = reference(emu, SQL_RANGE_250, [3])
                same_page(r, slug, ref[3], eslug, 3, "v2 page 3 after an emulator restart")
            else:
                expect_exec_error(r, (502, 503, 504), slug, page=3, what="v2 after an emulator restart")
            compare(fwd, SQL_RANGE_250, [1], "a new v2 query after the emulator restart")


@h.timeout(90)
def test_nekt_restart_forwarder_while_v2_run_in_flight():
    """SIGTERM the forwarder while its v2 sql-query call is waiting on Nekt (2 s): the run
    finishes during the shutdown grace; after the restart the results are readable."""
    emu = emulator("--emulate-faults", "path=/api/v1/sql-query/,latency_ms=2000,first=1", name="nekt-emu-fwdrestart")
    with emu:
        with attach(forwarder(emu, "v2"), emu) as fwd:
            slug = fwd.create(SQL_RANGE_250)
            time.sleep(0.4)
            fwd.restart()
            eslug, ref = reference(emu, SQL_RANGE_250, [1, 3])
            for p in (1, 3):
                same_page(fwd.results(slug, p), slug, ref[p], eslug, p, "v2 page %d after a forwarder restart" % p)
            expect_error(fwd.results(slug, 1, key=K2), 404, "Query not found", "another key after the restart")


def _interrupted_v2_run(held):
    """Creates a v2 query whose run the forwarder's shutdown interrupts (Nekt answers 503
    after 1.5 s, when the forwarder is already stopping, so it does not retry), restarts the
    forwarder and reads the results."""
    emu = emulator("--emulate-faults", "path=/api/v1/sql-query/,latency_ms=1500,status=503,first=1", name="nekt-emu-interrupt")
    key = CLIENT_KEY if held else K1
    with emu:
        # the creation must not wait for Nekt's first answer, which comes after the stop
        with attach(forwarder(emu, "v2", ["--upstream-key-check-wait", "0"], held=held), emu) as fwd:
            slug = fwd.create(SQL_RANGE_250, key=key)
            time.sleep(0.4)
            fwd.stop()
            check("query %s interrupted by shutdown" % slug in fwd.stderr_text(), "the run should have been interrupted by the shutdown:\n" + fwd.diagnostics())
            fwd.start()  # the query is still queued in the state dir
            eslug, ref = reference(emu, SQL_RANGE_250, [1, 3])
            for p in (1, 3):
                same_page(fwd.results(slug, p, key=key), slug, ref[p], eslug, p, "v2 page %d after the restart" % p)


@h.timeout(90)
def test_nekt_restart_forwarder_interrupted_v2_run_forwarding_key():
    """Regression: a forwarder whose state dir held a queued query crashed (SIGSEGV) at
    start: nekt_unfinished() called dapi_queries_upstream(app->queries, ...) from inside
    dapi_queries_open(), before app->queries was set. In forwarding-key mode the run
    resumes on the next results request, with the client's key."""
    _interrupted_v2_run(held=False)


@h.timeout(90)
def test_nekt_restart_forwarder_interrupted_v2_run_server_held_key():
    """Regression: the same start-up SIGSEGV as above; with a server-held key the run
    resumes at start."""
    _interrupted_v2_run(held=True)


@h.timeout(90)
def test_nekt_restart_forwarder_between_v2_create_and_read():
    """The plain case: a finished v2 result survives a forwarder restart."""
    emu = EMU.get()
    with attach(forwarder(emu, "v2"), emu) as fwd:
        eslug, ref = reference(emu, SQL_RANGE_250, [1, 3])
        slug = fwd.create(SQL_RANGE_250)
        fwd.wait_stderr(lambda t: "query %s done" % slug in t or "query %s failed" % slug in t)
        fwd.restart()
        for p in (1, 3):
            same_page(fwd.results(slug, p), slug, ref[p], eslug, p, "v2 page %d after a forwarder restart" % p)


@h.timeout(90)
def test_nekt_restart_emulator_between_v1_pages():
    """Regression: after the emulator restarts, its Explorer application is inactive again
    while the forwarder still remembers it active; the 409 on the next execution must make it
    check and start the application again, not fail the page."""
    emu = emulator(name="nekt-emu-v1restart")
    with emu:
        port = emu.port
        with attach(forwarder(emu, "v1"), emu) as fwd:
            eslug, ref = reference(emu, SQL_RANGE_250, [1, 2, 3])
            slug = fwd.create(SQL_RANGE_250)
            same_page(fwd.results(slug, 1), slug, ref[1], eslug, 1, "v1 page 1 before the emulator restart")
            emu.restart(args=["--emulate-nekt", "--port", str(port)])
            eq(emu.port, port, "the emulator's port after restart")
            same_page(fwd.results(slug, 1), slug, ref[1], eslug, 1, "v1 page 1 (kept) after the emulator restart")
            same_page(fwd.results(slug, 2), slug, ref[2], eslug, 2, "v1 page 2 after the emulator restart")
            same_page(fwd.results(slug, 3), slug, ref[3], eslug, 3, "v1 page 3 after the emulator restart")


@h.timeout(90)
def test_nekt_restart_forwarder_between_v1_pages():
    """Regression: a v1 query stays 'queued' in the registry, so every v1 forwarder with a
    query in its state dir crashed (SIGSEGV) at restart, in nekt_unfinished() ->
    dapi_queries_upstream(NULL, ...)."""
    emu = EMU.get()
    with attach(forwarder(emu, "v1"), emu) as fwd:
        eslug, ref = reference(emu, SQL_RANGE_250, [1, 2])
        slug = fwd.create(SQL_RANGE_250)
        same_page(fwd.results(slug, 1), slug, ref[1], eslug, 1, "v1 page 1")
        fwd.restart()
        same_page(fwd.results(slug, 1), slug, ref[1], eslug, 1, "v1 page 1 after a forwarder restart")
        same_page(fwd.results(slug, 2), slug, ref[2], eslug, 2, "v1 page 2 after a forwarder restart")


# ----------------------------------------------------------------------------- 7. limits


def test_nekt_limit_max_upstream_bytes():
    emu = EMU.get()
    with attach(forwarder(emu, "v2", ["--max-upstream-bytes", "2000"]), emu) as fwd:
        slug = fwd.create(SQL_BIG)
        expect_exec_error(fwd.results(slug, 1), 413, slug, details_has=["--max-upstream-bytes"], what="v2 result over --max-upstream-bytes")
        expect_exec_error(fwd.results(slug, 7), 413, slug, page=7, details_has=["--max-upstream-bytes"], what="v2 result over --max-upstream-bytes, page 7")
        eq(fwd.query("SELECT 5 AS small"), [{"small": 5}], "a small result under the cap")


def test_nekt_limit_max_upstream_bytes_v1():
    emu = EMU.get()
    with attach(forwarder(emu, "v1", ["--max-upstream-bytes", "1024"]), emu) as fwd:
        # a page of 100 rows of 64 hex digits is well over 1024 bytes of Parquet
        slug = fwd.create("SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS h FROM range(1000) t(i) ORDER BY i")
        expect_exec_error(fwd.results(slug, 1), 413, slug, details_has=["--max-upstream-bytes"], what="v1 page over --max-upstream-bytes")


def test_nekt_emulator_rows_per_file():
    """Regression: --emulate-rows-per-file below DuckDB's 2048-row vector made 2048-row files
    (ROW_GROUP_SIZE is rounded up) plus an empty trailing one; files now hold exactly N rows."""
    with emulator("--emulate-rows-per-file", "100", name="nekt-emu-rpf") as emu:
        r = emu.api("POST", "/api/v1/sql-query/", body={"sql": "SELECT i FROM range(300) t(i) ORDER BY i", "mode": "parquet"}, key=K1)
        expect_status(r, 200, "emulator sql-query")
        urls = jparse(r).get("presigned_urls")
        eq(len(urls), 3, "files for 300 rows with --emulate-rows-per-file 100")


@h.timeout(90)
def test_nekt_limit_max_upstream_response_bytes():
    # 2,000 rows at 100 rows per file: 20 presigned URLs, well over 1024 bytes of answer.
    emu, fwd = pair(["--emulate-rows-per-file", "100"], fwd_args=["--max-upstream-response-bytes", "1024"])
    with emu, fwd:
        r = fwd.create_resp({"sql_query": "SELECT i FROM range(2000) t(i) ORDER BY i"})
        body = expect_error(r, 502, "Failed to create query", "sql-query answer over --max-upstream-response-bytes")
        check("too large" in body.get("details", ""), "details: %s" % r.short())
        eq(fwd.query("SELECT 3 AS x"), [{"x": 3}], "a one-file answer under the cap")


# ----------------------------------------------------------------------------- 7. the emulator's routes


EMU_PATHS = (
    ("POST", "/api/v1/sql-query/"),
    ("GET", "/api/v1/explorer/application/"),
    ("POST", "/api/v1/explorer/application/start/"),
    ("POST", "/api/v1/explorer/queries/"),
    ("POST", "/api/v1/explorer/queries/explorer-query-x/execution/"),
    ("GET", "/api/v1/explorer/queries/explorer-query-x/execution/abc/"),
    ("GET", "/api/v1/explorer/queries/explorer-query-x/execution/abc/results/"),
    ("GET", "/emu-files/abc/data_0.parquet"),
)


def test_nekt_emulator_routes_only_with_emulate_nekt():
    """The emulator registers its routes with --emulate-nekt only: without it they are dapi's
    own 404 {"error": "Not found"}, for every method."""
    with Server(keys=[K1], data_dir=lake(), name="no-emu") as srv:
        for method, path in EMU_PATHS + (("GET", "/api/v1/"), ("DELETE", "/api/v1/sql-query/")):
            r = srv.api(method, path, body=b"{}" if method == "POST" else None, key=K1, headers={"Content-Type": "application/json"})
            expect_error(r, 404, "Not found", "%s %s without --emulate-nekt" % (method, path))
    emu = EMU.get()
    r = emu.api("GET", "/api/v1/explorer/application/", key=K1)
    expect_status(r, 200, "the emulator's application status")
    check(jparse(r).get("status") in ("inactive", "activating", "active"), "application status: %s" % r.short())


def test_nekt_emulator_wrong_methods():
    """Wrong methods on the emulator's paths answer as upstream does: {"detail": ...} without an
    Allow header; 405 on sql-query, executions and files, 404 on the application and query
    creation paths; on /api/v1/ the key is checked first; other /api/v1/ paths are 404."""
    emu = EMU.get()
    q = "/api/v1/explorer/queries/explorer-query-x/execution/"
    for method, path, status, detail in (
        ("GET", "/api/v1/sql-query/", 405, "Method not allowed."),
        ("HEAD", "/api/v1/sql-query/", 405, None),
        ("DELETE", "/api/v1/sql-query/", 405, "Method not allowed."),
        ("POST", "/api/v1/explorer/application/", 404, "Not found."),
        ("HEAD", "/api/v1/explorer/application/", 404, None),
        ("GET", "/api/v1/explorer/application/start/", 404, "Not found."),
        ("GET", "/api/v1/explorer/queries/", 404, "Not found."),
        ("GET", q, 405, "Method not allowed."),
        ("POST", q + "abc/", 405, "Method not allowed."),
        ("PUT", q + "abc/results/", 405, "Method not allowed."),
        ("POST", "/emu-files/abc/data_0.parquet", 405, "Method not allowed."),
        ("HEAD", "/emu-files/abc/data_0.parquet", 405, None),
        ("GET", "/api/v1/nope/", 404, "Not found."),
        ("DELETE", "/api/v1/", 404, "Not found."),
    ):
        what = "%s %s on the emulator" % (method, path)
        r = emu.api(method, path, body=b"{}" if method in ("POST", "PUT") else None, key=K1, headers={"Content-Type": "application/json"})
        expect_status(r, status, what)
        check("allow" not in r.headers, "%s: unexpected Allow header %r" % (what, r.headers.get("allow")))
        if detail is not None:
            eq(jparse(r), {"detail": detail}, what)
    # the key first on /api/v1/ (not on the signed file URLs)
    r = emu.api("GET", "/api/v1/sql-query/", key=None)
    expect_status(r, 401, "GET sql-query without a key")
    eq(jparse(r), {"detail": "Authentication credentials were not provided."}, "GET sql-query without a key")
    r = emu.api("DELETE", "/api/v1/nope/", key="wrong")
    expect_status(r, 401, "DELETE /api/v1/nope/ with a wrong key")
    eq(jparse(r), {"detail": "Invalid API key."}, "DELETE /api/v1/nope/ with a wrong key")
    r = emu.api("POST", "/emu-files/abc/data_0.parquet", key=None)
    expect_status(r, 405, "POST /emu-files/ without a key")
