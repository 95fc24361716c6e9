"""Limits at their edges (body, SQL, JSON depth, header, result rows/bytes, query time)
and hostile input. Two servers: one with default limits, one with small ones."""

import json
import random
import time

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse

KEY = "it-limits-key-2b8f"

DEF = Shared(lambda: Server(keys=[KEY], name="limits-default"))

SMALL_ARGS = [
    "--max-body-bytes", "4096",
    "--max-sql-bytes", "1000",
    "--max-header-bytes", "8192",
    "--max-json-depth", "5",
    "--max-result-rows", "1000",
    "--max-result-bytes", "200000",
    "--query-timeout", "1",
]  # fmt: skip
SMALL = Shared(lambda: Server(args=SMALL_ARGS, keys=[KEY], name="limits-small"))

MIB = 1024 * 1024


def _post_bytes(srv, body, headers=None, timeout=30):
    """POST /api/queries with exactly these body bytes on a raw socket, reading the
    response even if the server answers before the whole body was sent."""
    hdrs = {"Content-Type": "application/json", "x-api-key": KEY}
    hdrs.update(headers or {})
    req = h.build_request("POST", "/api/queries", body, hdrs, port=srv.port)
    with srv.raw(timeout=timeout) as c:
        c.send_watching(req)
        return c.read_response(timeout=timeout)


def _padded(size, sql="SELECT 1"):
    """A JSON body of exactly `size` bytes: {"sql_query": sql} padded with spaces."""
    head = json.dumps({"sql_query": sql})[:-1]
    pad = size - len(head) - 1
    assert pad >= 0
    body = (head + " " * pad + "}").encode()
    assert len(body) == size
    return body


def _depth_body(depth):
    """A JSON object nested `depth` containers deep (the outer object counts as 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return ('{"sql_query":"SELECT 1","x":%s}' % inner).encode()


def _still_healthy(srv):
    r = srv.request("GET", "/api/health")
    expect_status(r, 200, "health after hostile input")
    eq(srv.query("SELECT 41 + 1 AS v"), [{"v": 42}], "a normal query after hostile input")


# ----------------------------------------------------------------------------- body size


@h.timeout(90)
def test_body_default_limit_1mib_edge():
    s = DEF.get()
    r = _post_bytes(s, _padded(MIB))
    expect_status(r, 200, "body of exactly 1 MiB")
    expect_error(_post_bytes(s, _padded(MIB + 1)), 413, what="body of 1 MiB + 1")
    _still_healthy(s)


def test_body_configured_limit_edge():
    s = SMALL.get()
    expect_status(_post_bytes(s, _padded(4096)), 200, "body of exactly --max-body-bytes")
    expect_error(_post_bytes(s, _padded(4097)), 413, what="body one byte over --max-body-bytes")
    expect_error(_post_bytes(s, _padded(100000)), 413, what="body far over --max-body-bytes")


def test_body_limit_huge_content_length_answered_early():
    s = SMALL.get()
    req = h.build_request(
        "POST", "/api/queries", b"", {"Content-Type": "application/json", "x-api-key": KEY, "Content-Length": str(10**12)}, port=s.port
    )
    with s.raw(timeout=15) as c:
        c.send(req + b'{"sql_query":')
        t0 = time.monotonic()
        r = c.read_response(timeout=15)
    expect_error(r, 413, what="Content-Length 10^12")
    check(time.monotonic() - t0 < 10, "413 took %.1f s" % (time.monotonic() - t0))


def _chunked(body, size=1000):
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def test_body_limit_chunked():
    s = SMALL.get()
    hdrs = {"Transfer-Encoding": "chunked", "Content-Length": None}
    r = _post_bytes(s, _chunked(_padded(300)), hdrs)
    expect_status(r, 200, "small chunked body")
    expect_error(_post_bytes(s, _chunked(_padded(5000)), hdrs), 413, what="chunked body over the limit")


# ----------------------------------------------------------------------------- SQL size


def _sql_of(n, fill="a"):
    """SELECT '<fill...>' AS x of exactly n bytes (UTF-8)."""
    head, tail = "SELECT '", "' AS x"
    room = n - len(head) - len(tail)
    fb = len(fill.encode())
    k, rest = divmod(room, fb)
    sql = head + fill * k + "a" * rest + tail
    assert len(sql.encode()) == n, (n, len(sql.encode()))
    return sql


def test_sql_bytes_edge():
    s = SMALL.get()
    sql = _sql_of(1000)
    slug = s.create(sql)
    rows = s.page(slug, 1)
    eq(len(rows[0]["x"]), 1000 - 14, "length of the selected string")
    r = s.create_resp({"sql_query": _sql_of(1001)})
    expect_error(r, 413, what="SQL of --max-sql-bytes + 1")


def test_sql_bytes_counted_in_bytes_not_characters():
    s = SMALL.get()
    sql = _sql_of(1001, fill="é")
    check(len(sql) < 1000, "test setup: %d characters" % len(sql))
    body = json.dumps({"sql_query": sql}, ensure_ascii=False).encode()
    expect_error(_post_bytes(s, body), 413, what="SQL of 1001 UTF-8 bytes (%d characters)" % len(sql))
    sql = _sql_of(1000, fill="é")
    body = json.dumps({"sql_query": sql}, ensure_ascii=False).encode()
    expect_status(_post_bytes(s, body), 200, "SQL of exactly 1000 UTF-8 bytes")


# ----------------------------------------------------------------------------- JSON depth


def test_json_depth_default_32():
    s = DEF.get()
    expect_status(_post_bytes(s, _depth_body(32)), 200, "JSON depth 32 (the default limit)")
    expect_error(_post_bytes(s, _depth_body(33)), 400, what="JSON depth 33")


def test_json_depth_configured():
    s = SMALL.get()
    expect_status(_post_bytes(s, _depth_body(5)), 200, "JSON depth 5 (--max-json-depth 5)")
    expect_error(_post_bytes(s, _depth_body(6)), 400, what="JSON depth 6")


def test_json_depth_hostile():
    s = DEF.get()
    for body in (b"[" * 200000, b'{"a":' * 100000, (b'{"sql_query":"SELECT 1","x":' + b"[" * 300000 + b"]" * 300000 + b"}")):
        expect_error(_post_bytes(s, body), (400, 413), what="%d bytes of nesting" % len(body))
    _still_healthy(s)


# ----------------------------------------------------------------------------- headers


def test_header_limit():
    s = SMALL.get()
    r = s.request("GET", "/api/health", headers={"X-Pad": "a" * 4000})
    expect_status(r, 200, "4000-byte header under --max-header-bytes 8192")
    with s.raw() as c:
        c.send_watching(h.build_request("GET", "/api/health", headers={"X-Pad": "a" * 9000}, port=s.port))
        r = c.read_response()
    expect_error(r, 431, what="9000-byte header over --max-header-bytes 8192")
    with s.raw() as c:
        many = {"X-H%d" % i: "v" * 100 for i in range(120)}
        c.send_watching(h.build_request("GET", "/api/health", headers=many, port=s.port))
        r = c.read_response()
    expect_error(r, 431, what="120 headers of 100 bytes over --max-header-bytes 8192")


def test_long_url():
    s = DEF.get()
    with s.raw() as c:
        # over --max-header-bytes (16 KiB) but inside libmicrohttpd's connection buffer
        # (16 KiB + 16 KiB): dapi's own JSON 414. (Beyond that buffer libmicrohttpd answers
        # by itself; docs/api.md says so.)
        c.send_watching(h.build_request("GET", "/api/" + "a" * 20000, headers={"x-api-key": KEY}, port=s.port))
        r = c.read_response()
    expect_error(r, 414, "Request URI too long", what="20 kB URL")
    _still_healthy(s)


# ----------------------------------------------------------------------------- result limits


def test_result_rows_edge():
    s = SMALL.get()
    slug = s.create("SELECT i FROM range(1000) t(i) ORDER BY i")
    eq(s.page(slug, 10), [{"i": i} for i in range(900, 1000)], "page 10 of a 1000-row result")
    eq(s.page(slug, 11), [], "page 11")
    slug = s.create("SELECT i FROM range(1001) t(i)")
    # A page past the end waits for the end of the run (pages 1-10 are complete before the
    # limit is hit, so they may be served while it runs: progressive pages); then every page
    # is the failure.
    for page in (10 ** 6, 1, 2):
        body = expect_error(s.results(slug, page), 413, "Query execution failed", "1001 rows over --max-result-rows 1000 (page %d)" % page)
        details = body.get("details")
        check(isinstance(details, str) and "row" in details.lower(), "details should mention the row limit: %r" % body)
        eq(body.get("query_slug"), slug, "query_slug")
        eq(body.get("page_number"), page, "page_number")


def test_result_bytes_limit():
    s = SMALL.get()
    eq(s.query("SELECT 'small' AS v"), [{"v": "small"}], "small result under --max-result-bytes")
    slug = s.create("SELECT repeat('x', 1000) AS v FROM range(900)")
    # (page 1 is complete before the limit: it may be served while the run goes on; once it
    # has ended, which a page past the end waits for, every page is the failure)
    expect_error(s.results(slug, 10 ** 6), 413, "Query execution failed", "past the end")
    body = expect_error(s.results(slug, 1), 413, "Query execution failed", "~900 kB result over --max-result-bytes 200000")
    check(isinstance(body.get("details"), str), "details: %r" % body)


def test_query_timeout():
    s = SMALL.get()
    for sql in (
        "SELECT count(*) AS n FROM range(1000000000000)",
        "SELECT count(*) AS n FROM range(1000000) a(x), range(1000000) b(y) WHERE x + y = -1",
    ):
        slug = s.create(sql)
        t0 = time.monotonic()
        body = expect_error(s.results(slug, 1, timeout=15), 504, "Query execution failed", "results of %r with --query-timeout 1" % sql)
        took = time.monotonic() - t0
        check(took < 20, "504 came after %.1f s with --query-timeout 1" % took)
        eq(body.get("query_slug"), slug, "query_slug")
        # The slug stays failed (it is not re-run by a second read).
        expect_error(s.results(slug, 1, timeout=15), 504, "Query execution failed", "second read")
    eq(s.query("SELECT 1 AS v"), [{"v": 1}], "a fast query after timeouts")


@h.timeout(90)
def test_query_timeout_frees_the_worker():
    """With one worker, every timed-out query must give the worker back: a quick query
    right after each timeout runs at once."""
    slow = "SELECT count(*) AS n FROM range(1000000) a(x), range(1000000) b(y) WHERE x + y = -%d"
    with Server(args=["--workers", "1", "--query-timeout", "1", "--shutdown-grace", "2"], keys=[KEY], name="timeout-1worker") as s:
        for i in range(6):
            slug = s.create(slow % (i + 1))
            expect_error(s.results(slug, 1, timeout=10), 504, "Query execution failed", "slow query %d" % (i + 1))
            slug = s.create("SELECT %d AS i" % i)
            r = s.results(slug, 1, timeout=10)
            expect_status(r, 200, "quick query after timeout %d" % (i + 1))
            eq(jparse(r)["data"], [{"i": i}], "quick query rows")


def test_queue_limit_503():
    args = ["--workers", "1", "--max-queued-queries", "1", "--query-timeout", "60", "--shutdown-grace", "2"]
    with Server(args=args, keys=[KEY], name="queue") as s:
        slow = "SELECT count(*) + %d AS n FROM range(1000000000000)"
        s.create(slow % 1)  # running
        s.create(slow % 2)  # waiting for the one worker
        r = s.create_resp({"sql_query": slow % 3})
        expect_error(r, 503, what="third query with --workers 1 --max-queued-queries 1")
        expect_status(s.request("GET", "/api/health"), 200, "health while the queue is full")


@h.alone
@h.timeout(90)
def test_result_wait_limit_then_result():
    args = ["--result-wait", "1", "--query-timeout", "60"]
    with Server(args=args, keys=[KEY], name="result-wait") as s:
        n = 1_500_000_000
        slug = s.create("SELECT sum(i) AS total FROM range(%d) t(i)" % n)
        t0 = time.monotonic()
        r = s.results(slug, 1, timeout=30)
        took = time.monotonic() - t0
        if r.status == 200:
            raise h.Skip("the query finished within --result-wait 1 (%.1f s); cannot observe the limit" % took)
        expect_error(r, 504, what="results of a running query with --result-wait 1")
        check(took < 5, "--result-wait 1 answered after %.1f s" % took)
        deadline = time.monotonic() + 60
        while True:
            r = s.results(slug, 1, timeout=30)
            if r.status == 200 or time.monotonic() > deadline:
                break
            expect_error(r, 504, what="polling a running query")
        expect_status(r, 200, "results once the query finished")
        eq(r.raw().get("data")[0].get("total"), h.Raw(str(n * (n - 1) // 2)), "total")


# ----------------------------------------------------------------------------- hostile input


def test_invalid_utf8_body():
    s = DEF.get()
    for body in (
        b'{"sql_query":"SELECT \'\xff\xfe\' AS x"}',
        b'{"sql_query":"SELECT \'\xc0\xaf\' AS x"}',
        b'{"sql_query":"SELECT \'\xed\xa0\x80\' AS x"}',
        b'{"sql_query":"SELECT 1 AS \xe6\x97"}',
        b'{"\xff":1}',
    ):
        expect_error(_post_bytes(s, body), 400, what="invalid UTF-8 body %r" % body)
    _still_healthy(s)


def test_lone_surrogate_escape():
    s = DEF.get()
    r = _post_bytes(s, b'{"sql_query":"SELECT \'\\ud800\' AS x"}')
    if r.status == 200:
        r = s.results(jparse(r)["query_slug"], 1)
    check(r.status in (200, 400), "lone surrogate: " + r.short())
    jparse(r)  # valid UTF-8 JSON either way
    _still_healthy(s)


def test_nul_in_sql():
    s = DEF.get()
    sql = "SELECT 1 AS a\u0000; SELECT 2"
    r = s.create_resp({"sql_query": sql})
    if r.status == 200:
        eq(jparse(r)["sql_query"], sql, "echoed SQL (must not be truncated at NUL)")
    else:
        expect_error(r, 400, what="SQL with NUL")
    _still_healthy(s)


@h.timeout(90)
def test_garbage_sql_1mb():
    s = DEF.get()
    rnd = random.Random(1234)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ()*+-/,.;:'\"<>=!@#$%^&{}[]|~`?\t\n"
    sql = "".join(rnd.choice(alphabet) for _ in range(1_000_000))
    t0 = time.monotonic()
    r = s.create_resp({"sql_query": sql})
    expect_error(r, (400, 413), what="1 MB of garbage SQL")
    check(time.monotonic() - t0 < 30, "garbage SQL took %.1f s" % (time.monotonic() - t0))
    _still_healthy(s)


@h.timeout(90)
def test_deeply_nested_sql():
    s = DEF.get()
    for sql in ("SELECT " + "(" * 100000 + "1" + ")" * 100000, "SELECT " + "[" * 50000 + "1" + "]" * 50000):
        expect_error(s.create_resp({"sql_query": sql}), (400, 413), what="deeply nested SQL (%d bytes)" % len(sql))
    _still_healthy(s)


@h.timeout(90)
def test_long_expression_chain():
    s = DEF.get()
    n = 50000
    sql = "SELECT 1" + " + 1" * n + " AS v"
    r = s.create_resp({"sql_query": sql})
    if r.status == 200:
        r = s.results(jparse(r)["query_slug"], 1)
        if r.status == 200:
            eq(jparse(r)["data"], [{"v": n + 1}], "value of a long + chain")
        else:
            expect_error(r, (400, 413), what="long expression chain results")
    else:
        expect_error(r, (400, 413), what="long expression chain")
    _still_healthy(s)
