"""A query's lifecycle (docs/api.md): GET /api/queries/{slug} (status, with the result's
column types), GET /api/queries (the key's queries, newest first, paged), DELETE
/api/queries/{slug} (cancel: the engine really stops; or delete a finished query) and
abandoned queries (--abandon-after)."""

import os
import re
import time
import urllib.parse

import harness as h
import test_nekt as nekt
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY_A = "it-lifecycle-key-a-5d1f"
KEY_B = "it-lifecycle-key-b-9e0c"
# CPU-heavy and long (minutes): only a cancellation ends it within a test
LONG_SQL = "SELECT count(*) AS n FROM range(10000000000) t(i) WHERE i %% 7 = %d"
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _server(args=()):
    return Server(keys=(KEY_A, KEY_B), args=list(args))


def _status(srv, slug, key=KEY_A):
    return srv.api("GET", "/api/queries/" + urllib.parse.quote(slug), key=key)


def _state(srv, slug, key=KEY_A):
    r = _status(srv, slug, key)
    expect_status(r, 200, "status of %s" % slug)
    return jparse(r)


def _wait_state(srv, slug, states, timeout=30.0, key=KEY_A):
    deadline = time.time() + timeout
    while True:
        st = _state(srv, slug, key)
        if st["state"] in states:
            return st
        if time.time() > deadline:
            h.fail("query %s still %s after %.0f s (waiting for %s)" % (slug, st["state"], timeout, states))
        time.sleep(0.05)


def _cpu_s(pid):
    """utime + stime of the process, in seconds (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_grows(srv, seconds=1.0):
    a = _cpu_s(srv.proc.pid)
    time.sleep(seconds)
    return _cpu_s(srv.proc.pid) - a


def _expect_running(srv, what):
    """The server's CPU time grows (the machine may be shared: a low bar, over 2 s)."""
    used = _cpu_grows(srv, 2.0)
    check(used > 0.25, "%s: the server used only %.2f s of CPU in 2 s" % (what, used))


def _expect_stopped(srv, what):
    """The server's CPU time stops growing shortly after a cancellation (an idle server uses
    next to none: its health probe is a SELECT 1 every 5 s)."""
    deadline = time.time() + 15
    while True:
        used = _cpu_grows(srv, 1.5)
        if used < 0.1:
            return
        if time.time() > deadline:
            h.fail("%s: the server still used %.2f s of CPU in 1.5 s" % (what, used))


def test_status_states_times_and_columns():
    with _server() as srv:
        sql = (
            "SELECT i::BIGINT AS a, (i / 8)::DECIMAL(18,3) AS d, 'x' || i AS v, "
            "TIMESTAMPTZ '2024-01-02 03:04:05+00' AS ts, [i::INTEGER] AS l, "
            "{'a': i::INTEGER} AS s, 1 AS a FROM range(250) t(i)"
        )
        slug = srv.create(sql, key=KEY_A)
        st = _wait_state(srv, slug, ("succeeded",))
        eq(sorted(st.keys()), sorted(["bytes", "columns", "created_at", "error", "finished_at", "pages", "reused", "rows", "slug", "sql", "started_at", "state"]), "status keys")
        eq(st["slug"], slug, "slug")
        eq(st["sql"], sql, "sql")
        eq(st["rows"], 250, "rows")
        eq(st["pages"], 3, "pages")
        check(isinstance(st["bytes"], int) and st["bytes"] > 0, "bytes: %r" % st["bytes"])
        eq(st["reused"], False, "reused")
        eq(st["error"], None, "error")
        for k in ("created_at", "started_at", "finished_at"):
            check(isinstance(st[k], str) and ISO_RE.match(st[k]), "%s: %r" % (k, st[k]))
        check(st["created_at"] <= st["started_at"] <= st["finished_at"], "times in order: %r" % st)
        eq(
            st["columns"],
            [
                {"name": "a", "type": "BIGINT"},
                {"name": "d", "type": "DECIMAL(18,3)"},
                {"name": "v", "type": "VARCHAR"},
                {"name": "ts", "type": "TIMESTAMP WITH TIME ZONE"},
                {"name": "l", "type": "INTEGER[]"},
                {"name": "s", "type": "STRUCT(a INTEGER)"},
                {"name": "a_2", "type": "INTEGER"},
            ],
            "columns (de-duplicated names, DuckDB types)",
        )
        more = srv.create(
            "SELECT MAP {'k': 1} AS m, [1, 2]::INTEGER[2] AS arr, union_value(n := 1) AS u, "
            "{'A b': 1} AS q, 1::HUGEINT AS h, uuid() AS id, 'x'::BLOB AS bl, INTERVAL 1 DAY AS iv, "
            "TIMESTAMP_NS '2024-01-01 00:00:00' AS tn, true AS b, DATE '2024-01-01' AS dt, "
            "TIMETZ '12:00:00+01' AS tz, NULL AS nothing",
            key=KEY_A,
        )
        types = [(c["name"], c["type"]) for c in _wait_state(srv, more, ("succeeded",))["columns"]]
        eq(
            types,
            [
                ("m", "MAP(VARCHAR, INTEGER)"),
                ("arr", "INTEGER[2]"),
                ("u", "UNION(n INTEGER)"),
                ("q", 'STRUCT("A b" INTEGER)'),
                ("h", "HUGEINT"),
                ("id", "UUID"),
                ("bl", "BLOB"),
                ("iv", "INTERVAL"),
                ("tn", "TIMESTAMP_NS"),
                ("b", "BOOLEAN"),
                ("dt", "DATE"),
                ("tz", "VARCHAR"),  # no JSON rendering: served (and typed) as text
                ("nothing", "INTEGER"),  # DuckDB types a NULL column of a result INTEGER
            ],
            "more column types",
        )
        # HEAD: the same headers, no body
        r = srv.api("HEAD", "/api/queries/" + slug, key=KEY_A)
        expect_status(r, 200, "HEAD status")
        eq(r.body, b"", "HEAD body")
        # an empty result has its columns too; they survive a restart
        empty = srv.create("SELECT 1::SMALLINT AS x, 'y' AS y WHERE false", key=KEY_A)
        st = _wait_state(srv, empty, ("succeeded",))
        eq(st["rows"], 0, "rows of an empty result")
        eq(st["columns"], [{"name": "x", "type": "SMALLINT"}, {"name": "y", "type": "VARCHAR"}], "columns of an empty result")
        before = _state(srv, slug)
        srv.restart()
        eq(_state(srv, slug), before, "status after a restart")
        eq(_state(srv, empty)["columns"], st["columns"], "columns of an empty result after a restart")


def test_queued_running_then_succeeded():
    with _server(["--workers", "1"]) as srv:
        blocker = srv.create(LONG_SQL % 0, key=KEY_A)
        _wait_state(srv, blocker, ("running",))
        queued = srv.create("SELECT 42 AS x", key=KEY_A)
        st = _state(srv, queued)
        eq(st["state"], "queued", "state behind a busy worker")
        eq(st["started_at"], None, "started_at while queued")
        eq(st["finished_at"], None, "finished_at while queued")
        eq(st["rows"], None, "rows while queued")
        eq(st["columns"], None, "columns while queued")
        running = _state(srv, blocker)
        eq(running["finished_at"], None, "finished_at while running")
        check(ISO_RE.match(running["started_at"] or ""), "started_at while running: %r" % running)
        expect_status(srv.api("DELETE", "/api/queries/" + blocker, key=KEY_A), 200, "cancel the blocker")
        st = _wait_state(srv, queued, ("succeeded",))
        eq(st["rows"], 1, "rows")


def test_failed_has_error():
    with _server() as srv:
        slug = srv.create("SELECT CAST(CAST(i AS VARCHAR) || 'x' AS INTEGER) AS n FROM range(3) t(i)", key=KEY_A)
        st = _wait_state(srv, slug, ("failed",))
        check(isinstance(st["error"], dict), "error: %r" % st["error"])
        eq(sorted(st["error"].keys()), ["details", "message"], "error keys")
        check("Conversion" in (st["error"]["details"] or ""), "details: %r" % st["error"])
        check(st["finished_at"] is not None, "finished_at of a failed query")
        eq(st["columns"], None, "columns of a failed query")


def test_list_newest_first_paged_own_key_only():
    with _server() as srv:
        mine = [srv.create("SELECT %d AS x" % i, key=KEY_A) for i in range(5)]
        other = srv.create("SELECT 99 AS x", key=KEY_B)
        r = srv.api("GET", "/api/queries?limit=2", key=KEY_A)
        expect_status(r, 200, "list")
        body = jparse(r)
        eq([q["slug"] for q in body["queries"]], mine[::-1][:2], "first page, newest first")
        q0 = body["queries"][0]
        eq(sorted(q0.keys()), ["created_at", "rows", "slug", "sql", "sql_truncated", "state"], "summary keys")
        eq(q0["sql"], "SELECT 4 AS x", "sql")
        seen = [q["slug"] for q in body["queries"]]
        cursor = body["next_cursor"]
        while cursor is not None:
            body = jparse(srv.api("GET", "/api/queries?limit=2&cursor=" + cursor, key=KEY_A))
            seen += [q["slug"] for q in body["queries"]]
            cursor = body["next_cursor"]
        eq(seen, mine[::-1], "every page, newest first")
        eq([q["slug"] for q in jparse(srv.api("GET", "/api/queries", key=KEY_B))["queries"]], [other], "another key's list")
        expect_error(srv.api("GET", "/api/queries?limit=0", key=KEY_A), 400)
        expect_error(srv.api("GET", "/api/queries?limit=1001", key=KEY_A), 400)
        expect_error(srv.api("GET", "/api/queries?cursor=x", key=KEY_A), 400)
        expect_error(srv.api("GET", "/api/queries", key=None), 401)
        r = srv.api("PUT", "/api/queries", key=KEY_A)
        expect_status(r, 405, "PUT /api/queries")
        eq(r.headers.get("allow"), "GET, HEAD, POST", "Allow")
        r = srv.api("PUT", "/api/queries/" + mine[0], key=KEY_A)
        expect_status(r, 405, "PUT /api/queries/{slug}")
        eq(r.headers.get("allow"), "GET, HEAD, DELETE", "Allow")


def test_list_cursor_tells_nothing_of_other_keys():
    """The list's cursor was the registration counter every key's creations share: the gap
    between two of a key's cursors was how many queries the other keys had created meanwhile.
    It is now a keyed permutation of it (an integer still): no such arithmetic holds, paging
    with it works, and a cursor given before a restart pages on after it."""
    with _server() as srv:
        a = [srv.create("SELECT %d AS x" % i, key=KEY_A) for i in range(2)]
        for i in range(5):
            srv.create("SELECT %d AS y" % i, key=KEY_B)
        a += [srv.create("SELECT %d AS x" % i, key=KEY_A) for i in range(2, 4)]

        def cursors():
            out, cur = [], None
            while True:
                path = "/api/queries?limit=1" + ("&cursor=" + cur if cur else "")
                body = jparse(srv.api("GET", path, key=KEY_A))
                cur = body["next_cursor"]
                if cur is None:
                    return out
                check(re.match(r"^[1-9][0-9]*$", cur), "an integer: %r" % cur)
                out.append(int(cur))

        c = cursors()  # of a[3], a[2], a[1] (the oldest has none after it)
        eq(len(c), 3, "three pages lead on")
        check(not (c[0] - c[1] == 1 and c[1] - c[2] == 6),
              "the gaps tell B's 5 creations: %r" % c)
        srv.restart()
        body = jparse(srv.api("GET", "/api/queries?limit=5&cursor=%d" % c[0], key=KEY_A))
        eq([q["slug"] for q in body["queries"]], a[::-1][1:], "a cursor from before the restart")


def test_another_keys_slug_is_not_found():
    with _server() as srv:
        slug = srv.create("SELECT 1 AS x", key=KEY_A)
        _wait_state(srv, slug, ("succeeded",))
        results = srv.api("GET", "/api/queries/%s/results" % slug, key=KEY_B)
        expect_status(results, 404, "results for another key")
        for method in ("GET", "DELETE"):
            r = srv.api(method, "/api/queries/" + slug, key=KEY_B)
            expect_status(r, 404, "%s for another key" % method)
            eq(r.body, results.body, "%s body for another key" % method)
        eq(_state(srv, slug)["state"], "succeeded", "still there for its owner")
        expect_error(srv.api("GET", "/api/queries/dapi-query-nope", key=KEY_A), 404)


@h.timeout(120)
def test_cancel_stops_the_engine_and_survives_restart():
    with _server() as srv:
        slug = srv.create(LONG_SQL % 1, key=KEY_A)
        _wait_state(srv, slug, ("running",))
        _expect_running(srv, "the long query")
        r = srv.api("DELETE", "/api/queries/" + slug, key=KEY_A)
        expect_status(r, 200, "DELETE of a running query")
        st = jparse(r)
        eq(st["state"], "cancelled", "state after DELETE")
        check(st["finished_at"] is not None, "finished_at of a cancelled query")
        eq(st["error"]["message"], "Query cancelled", "error of a cancelled query")
        _expect_stopped(srv, "after DELETE")
        expect_error(srv.results(slug, 1, key=KEY_A), 410, "Query cancelled")
        line = "query %s: run stopped" % slug
        check(line in srv.wait_stderr(lambda t: line in t, timeout=10), "run stopped (log)")
        srv.restart()
        eq(_state(srv, slug)["state"], "cancelled", "state after a restart")
        expect_error(srv.results(slug, 1, key=KEY_A), 410, "Query cancelled")
        _expect_stopped(srv, "not run again after the restart")
        # a cancelled (finished) query is deleted by a second DELETE
        r = srv.api("DELETE", "/api/queries/" + slug, key=KEY_A)
        expect_status(r, 204, "DELETE of a cancelled query")
        expect_error(_status(srv, slug), 404)
        expect_error(srv.results(slug, 1, key=KEY_A), 404)


def test_delete_finished_query():
    with _server() as srv:
        slug = srv.create("SELECT 7 AS x", key=KEY_A)
        _wait_state(srv, slug, ("succeeded",))
        expect_status(srv.api("DELETE", "/api/queries/" + slug, key=KEY_A), 204, "DELETE of a finished query")
        expect_error(_status(srv, slug), 404)
        expect_error(srv.results(slug, 1, key=KEY_A), 404)
        expect_error(srv.api("DELETE", "/api/queries/" + slug, key=KEY_A), 404)
        srv.restart()
        expect_error(_status(srv, slug), 404)


@h.timeout(120)
def test_abandoned_query_is_cancelled():
    with _server(["--abandon-after", "2"]) as srv:
        slug = srv.create(LONG_SQL % 2, key=KEY_A)
        line = "query %s cancelled: abandoned" % slug
        check(line in srv.wait_stderr(lambda t: line in t, timeout=30), "abandoned (log)")
        _expect_stopped(srv, "after abandonment")
        st = _state(srv, slug)
        eq(st["state"], "cancelled", "state of an abandoned query")
        check("--abandon-after" in st["error"]["details"], "details: %r" % st["error"])
        eq(srv.stderr_text().count("query %s cancelled: abandoned" % slug), 1, "logged once")


@h.timeout(120)
def test_asked_about_query_is_not_abandoned():
    with _server(["--abandon-after", "2"]) as srv:
        slug = srv.create(LONG_SQL % 3, key=KEY_A)
        for _ in range(8):  # asked about every 0.5 s for 4 s
            eq(_state(srv, slug)["state"] in ("queued", "running"), True, "still running")
            time.sleep(0.5)
        expect_status(srv.api("DELETE", "/api/queries/" + slug, key=KEY_A), 200, "cancel")


@h.timeout(120)
def test_follower_and_leader_cancel():
    """Queries of one key sharing a run (keys share nothing by default: test_reuse)."""
    with _server() as srv:
        sql = LONG_SQL % 4
        leader = srv.create(sql, key=KEY_A)
        _wait_state(srv, leader, ("running",))
        r = srv.create_resp({"sql_query": sql}, key=KEY_A)
        expect_status(r, 200, "identical query")
        eq(r.headers.get("x-dapi-reused"), "true", "shares the run")
        follower = jparse(r)["query_slug"]
        st = _state(srv, follower, KEY_A)
        eq((st["reused"], st["state"]), (True, "running"), "a follower of a running run")
        # cancelling the follower leaves the leader's run alone
        expect_status(srv.api("DELETE", "/api/queries/" + follower, key=KEY_A), 200, "cancel the follower")
        eq(_state(srv, leader)["state"], "running", "leader after its follower's cancellation")
        _expect_running(srv, "the leader's run goes on")
        # a second follower; cancelling the leader leaves the run going for it
        r = srv.create_resp({"sql_query": sql}, key=KEY_A)
        eq(r.headers.get("x-dapi-reused"), "true", "shares the run")
        follower2 = jparse(r)["query_slug"]
        expect_status(srv.api("DELETE", "/api/queries/" + leader, key=KEY_A), 200, "cancel the leader")
        eq(_state(srv, leader)["state"], "cancelled", "leader")
        eq(_state(srv, follower2, KEY_A)["state"] in ("queued", "running"), True, "follower goes on")
        _expect_running(srv, "the run goes on for the follower")
        # the last one sharing it leaves: the run stops
        expect_status(srv.api("DELETE", "/api/queries/" + follower2, key=KEY_A), 200, "cancel the last follower")
        _expect_stopped(srv, "after the last follower left")


def test_reused_result_and_delete_of_its_source():
    with _server() as srv:
        sql = "SELECT i::INTEGER AS i FROM range(10) t(i)"
        first = srv.create(sql, key=KEY_A)
        _wait_state(srv, first, ("succeeded",))
        r = srv.create_resp({"sql_query": sql}, key=KEY_A)
        eq(r.headers.get("x-dapi-reused"), "true", "reused")
        second = jparse(r)["query_slug"]
        st = _state(srv, second, KEY_A)
        eq((st["state"], st["reused"], st["rows"]), ("succeeded", True, 10), "reused status")
        eq(st["columns"], [{"name": "i", "type": "INTEGER"}], "columns of a reused result")
        expect_status(srv.api("DELETE", "/api/queries/" + first, key=KEY_A), 204, "delete the source")
        expect_status(srv.results(second, 1, key=KEY_A), 200, "the reused result stays")


@h.timeout(120)
def test_nekt_v2_status_columns_and_delete():
    """--backend nekt: the result decoded from Nekt's Parquet through the local engine has
    its columns and types; status, list and DELETE work the same."""
    with nekt.emulator(name="lc-emu") as emu, nekt.forwarder(emu, "v2", name="lc-fwd") as fwd:
        sql = "SELECT i::BIGINT AS i, (i * 1.25)::DECIMAL(10,2) AS d, [i::INTEGER] AS l FROM range(120) t(i) ORDER BY i"
        slug = fwd.create(sql, key=nekt.K1)
        st = _wait_state(fwd, slug, ("succeeded",), key=nekt.K1)
        eq(st["rows"], 120, "rows")
        eq(st["columns"], [{"name": "i", "type": "BIGINT"}, {"name": "d", "type": "DECIMAL(10,2)"}, {"name": "l", "type": "INTEGER[]"}], "columns")
        eq([q["slug"] for q in jparse(fwd.api("GET", "/api/queries", key=nekt.K1))["queries"]], [slug], "list")
        expect_error(fwd.api("GET", "/api/queries/" + slug, key=nekt.K2), 404)
        expect_status(fwd.api("DELETE", "/api/queries/" + slug, key=nekt.K1), 204, "DELETE")
        expect_error(fwd.results(slug, 1, key=nekt.K1), 404)


@h.timeout(180)
def test_nekt_v2_cancel_during_the_upstream_call():
    """A query cancelled while Nekt runs it: nothing is stored when Nekt answers, it is not
    executed again, its pages answer 410."""
    faults = "path=/api/v1/sql-query/,latency_ms=3000"
    with nekt.emulator("--emulate-faults", faults, name="lc-emu-slow") as emu, nekt.forwarder(emu, "v2", ["--upstream-key-check-wait", "0"], name="lc-fwd-slow") as fwd:
        slug = fwd.create("SELECT 1 AS x", key=nekt.K1)  # answered at once: Nekt still runs it
        eq(_state(fwd, slug, key=nekt.K1)["state"], "running", "state during the upstream call")
        r = fwd.api("DELETE", "/api/queries/" + slug, key=nekt.K1)
        expect_status(r, 200, "DELETE during the upstream call")
        eq(jparse(r)["state"], "cancelled", "state")
        # Either the run was still waiting for a worker (then it never starts: nothing is
        # sent upstream) or Nekt was running it (then its answer is dropped when it comes).
        stopped = "query %s: run stopped (the query is cancelled)" % slug
        sent = lambda: nekt.SQL_POST_RE.findall(emu.stderr_text())
        deadline = time.time() + 90  # (the emulator's first export may be slow under ASan)
        while stopped not in fwd.stderr_text() and time.time() < deadline:
            if not sent() and time.time() > deadline - 80 and "POST" not in emu.stderr_text():
                break  # nothing was sent within 10 s: the run never started
            time.sleep(0.1)
        time.sleep(0.5)
        st = _state(fwd, slug, key=nekt.K1)
        eq((st["state"], st["rows"], st["columns"]), ("cancelled", None, None), "still cancelled, nothing stored")
        expect_error(fwd.results(slug, 1, key=nekt.K1), 410, "Query cancelled")
        check(not os.path.exists(os.path.join(fwd.state_dir, "queries", slug, "result.bin")), "no result file")
        check(len(sent()) <= 1, "executed upstream at most once")
        check(not sent() or stopped in fwd.stderr_text(), "a run Nekt answered is logged as stopped")


@h.timeout(120)
def test_cancel_gives_the_admission_slot_back():
    with _server(["--max-queries-per-key", "1"]) as srv:
        slug = srv.create(LONG_SQL % 5, key=KEY_A)
        expect_status(srv.create_resp({"sql_query": "SELECT 1 AS x"}, key=KEY_A), 429, "second query of the key")
        expect_status(srv.api("DELETE", "/api/queries/" + slug, key=KEY_A), 200, "cancel")
        nxt = srv.create("SELECT 1 AS x", key=KEY_A)  # the slot is free at once
        eq(_wait_state(srv, nxt, ("succeeded",))["rows"], 1, "the next query runs")
        r = srv.api("HEAD", "/api/queries", key=KEY_A)
        expect_status(r, 200, "HEAD /api/queries")
        eq(r.body, b"", "HEAD body")


@h.timeout(120)
def test_nekt_v1_query_is_never_abandoned():
    """A v1 query has no run of its own (pages are fetched per request): it stays queued and
    its pages are served however long nobody asked."""
    with nekt.emulator(name="lc-emu-v1") as emu, nekt.forwarder(emu, "v1", ["--abandon-after", "1"], name="lc-fwd-v1") as fwd:
        slug = fwd.create("SELECT 1 AS x", key=nekt.K1)
        time.sleep(3)
        check("abandoned" not in fwd.stderr_text(), "not abandoned")
        expect_status(fwd.results(slug, 1, key=nekt.K1), 200, "page 1 after 3 s")
        expect_status(fwd.api("DELETE", "/api/queries/" + slug, key=nekt.K1), 200, "cancel")
        expect_error(fwd.results(slug, 1, key=nekt.K1), 410, "Query cancelled")
