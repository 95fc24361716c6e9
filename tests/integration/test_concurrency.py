"""Many clients at once, clients waiting on the same running query, slow and vanishing
clients that must not block others, and resource leaks under repeated requests."""

import http.client
import os
import threading
import time

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse

KEY = "it-conc-key-a9d3"
KEY2 = "it-conc-key-2-5b71"
SRV = Shared(lambda: Server(keys=[KEY, KEY2], name="conc"))


def _srv():
    return SRV.get()


@h.timeout(180)
def test_32_clients_create_and_page_through():
    s = _srv()

    def client(t):
        key = KEY if t % 2 == 0 else KEY2
        other = KEY2 if key == KEY else KEY
        n = 150 + 37 * t
        sql = "SELECT i, i * 3 AS j, 'c%d-' || i AS s FROM range(%d) t(i) ORDER BY i" % (t, n)
        slug = s.create(sql, key=key)
        rows = []
        page = 1
        while True:
            data = s.page(slug, page, key=key)
            rows.extend(data)
            if len(data) < 100:
                break
            page += 1
        expected = [{"i": i, "j": i * 3, "s": "c%d-%d" % (t, i)} for i in range(n)]
        if rows != expected:
            bad = next(k for k in range(max(len(rows), len(expected))) if k >= len(rows) or k >= len(expected) or rows[k] != expected[k])
            raise AssertionError(
                "client %d: %d rows, expected %d; first difference at %d: %r vs %r"
                % (t, len(rows), n, bad, rows[bad] if bad < len(rows) else None, expected[bad] if bad < len(expected) else None)
            )
        eq(s.page(slug, page + 1, key=key), [], "client %d: page past the end" % t)
        expect_error(s.results(slug, 1, key=other), 404, "Query not found", "client %d: other key" % t)

    results = h.run_threads(client, list(range(32)), timeout=160)
    errors = ["client %d: %s" % (t, str(e).splitlines()[0]) for t, e in results if e is not None]
    check(not errors, "%d of 32 clients failed:\n  %s" % (len(errors), "\n  ".join(errors)))


@h.timeout(120)
def test_concurrent_waiters_on_one_running_query():
    s = _srv()
    n = 300_000_000
    slug = s.create("SELECT sum(i) AS total FROM range(%d) t(i)" % n)
    got = []

    def waiter(i):
        r = s.results(slug, 1, timeout=100)
        expect_status(r, 200, "waiter %d" % i)
        got.append(r.raw().get("data")[0].get("total"))

    results = h.run_threads(waiter, list(range(8)), timeout=110)
    errors = [str(e).splitlines()[0] for _, e in results if e is not None]
    check(not errors, "waiters failed:\n  " + "\n  ".join(errors))
    eq(set(got), {h.Raw(str(n * (n - 1) // 2))}, "totals seen by 8 waiters")


@h.alone
@h.timeout(90)
def test_concurrent_creates_get_unique_slugs():
    s = _srv()
    slugs = []
    lock = threading.Lock()

    def creator(t):
        # Each client reads its result before creating the next query, so at most 32
        # queries are outstanding (the server bounds its queue: --max-queued-queries), 16 per
        # key (--max-queries-per-key: 16 by default).
        key = KEY if t % 2 == 0 else KEY2
        mine = []
        for k in range(5):
            slug = s.create("SELECT %d AS t, %d AS k" % (t, k), key=key)
            eq(s.page(slug, 1, key=key), [{"t": t, "k": k}], "client %d query %d" % (t, k))
            mine.append(slug)
        with lock:
            slugs.extend(mine)

    results = h.run_threads(creator, list(range(32)), timeout=80)
    errors = [str(e).splitlines()[0] for _, e in results if e is not None]
    check(not errors, "creators failed:\n  " + "\n  ".join(errors[:5]))
    eq(len(set(slugs)), 160, "distinct slugs from 160 concurrent creations")


def _timed(fn, what, limit=10.0):
    t0 = time.monotonic()
    out = fn()
    took = time.monotonic() - t0
    check(took < limit, "%s took %.1f s while slow clients were connected" % (what, took))
    return out


@h.timeout(90)
def test_slow_clients_do_not_block_others():
    s = _srv()
    conns = []
    try:
        for i in range(20):  # headers never finished
            c = s.raw(timeout=60)
            c.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            conns.append(c)
        for i in range(5):  # body never finished
            c = s.raw(timeout=60)
            c.send(
                b"POST /api/queries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: %s\r\n"
                b"Content-Length: 100\r\n\r\n{\"sql_query\":" % KEY.encode()
            )
            conns.append(c)
        for i in range(10):  # connected, silent
            conns.append(s.raw(timeout=60))
        time.sleep(0.5)
        r = _timed(lambda: s.request("GET", "/api/health", timeout=15), "health")
        expect_status(r, 200, "health with 35 slow clients connected")
        rows = _timed(lambda: s.query("SELECT 5 AS five"), "a query")
        eq(rows, [{"five": 5}], "query with slow clients connected")
        # Trickle one byte at a time on one connection: still served.
        for c in conns[:3]:
            c.send(b"a")
        r = _timed(lambda: s.request("GET", "/api/health", timeout=15), "health after trickle")
        expect_status(r, 200)
    finally:
        for c in conns:
            c.close()
    time.sleep(0.2)
    expect_status(s.request("GET", "/api/health"), 200, "health after the slow clients left")


@h.timeout(90)
def test_client_vanishes_while_waiting():
    s = _srv()
    slug = s.create("SELECT sum(i) AS total FROM range(200000000) t(i)")
    for _ in range(5):
        c = s.raw()
        c.send(h.build_request("GET", "/api/queries/%s/results?page_number=1" % slug, headers={"x-api-key": KEY}, port=s.port))
        c.close()
    n = 200_000_000
    r = s.results(slug, 1, timeout=80)
    expect_status(r, 200)
    eq(r.raw().get("data")[0].get("total"), h.Raw(str(n * (n - 1) // 2)), "total after clients vanished")


def _fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        raise h.Skip("cannot read /proc/%d/fd" % pid)


@h.timeout(120)
def test_no_fd_leak_over_many_requests():
    s = _srv()
    slug = s.create("SELECT i FROM range(300) t(i) ORDER BY i")
    s.page(slug, 1)
    time.sleep(0.3)
    before = _fd_count(s.proc.pid)
    for i in range(100):
        expect_status(s.request("GET", "/api/health"), 200)
        expect_status(s.results(slug, 1 + i % 4), 200)
        expect_error(s.api("GET", "/api/nope"), 404)
    for i in range(30):
        # read before the next: one key may have only 16 queries in flight
        # (--max-queries-per-key), and runs can lag behind back-to-back creates
        eq(s.page(s.create("SELECT %d AS x" % i), 1), [{"x": i}], "query %d" % i)
    # Keep-alive connection reused for many requests, then closed.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    for i in range(100):
        conn.request("GET", "/api/health")
        resp = conn.getresponse()
        resp.read()
        eq(resp.status, 200, "keep-alive request %d" % i)
    conn.close()
    time.sleep(1.0)
    after = _fd_count(s.proc.pid)
    check(after - before < 40, "open file descriptors grew from %d to %d over ~460 requests" % (before, after))
