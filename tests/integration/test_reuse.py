"""Result reuse: an identical query (same parse tree, backend, scope, unchanged lake files)
created within --reuse-max-age gets a new slug sharing the stored result or the run in
flight; X-Dapi-Reused says so; Cache-Control lowers or bypasses it."""

import json
import os
import re
import threading
import time

import harness as h
from harness import Server, check, eq, expect_status, jparse

KEY_A = "it-reuse-key-A-5d1c"
KEY_B = "it-reuse-key-B-88e0"


def _lake():
    d = h.tmpdir("reuse-lake")
    os.makedirs(os.path.join(d, "lay"))
    os.makedirs(os.path.join(d, "other"))
    h.write_file(os.path.join(d, "lay", "t.csv"), "id,name\n1,a\n2,b\n3,c\n")
    h.write_file(os.path.join(d, "other", "u.csv"), "id\n9\n")
    return d


def _create(s, sql, key="", headers=None):
    r = s.api("POST", "/api/queries", body=json.dumps({"sql_query": sql}).encode(), key=key,
              headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    expect_status(r, 200, "create %r" % sql)
    return jparse(r)["query_slug"], r.headers.get("x-dapi-reused")


def _runs(s, slugs):
    text = s.wait_stderr(lambda t: True)
    return sum(1 for sl in slugs if re.search(r"query %s done: " % sl, text))


def _done_lines(s):
    return len(re.findall(r"query dapi-query-\w+ done: ", s.stderr_text()))


def test_reuse_hit_same_rows_new_slug():
    with Server(keys=[KEY_A, KEY_B], data_dir=_lake(), name="reuse") as s:
        sql = 'SELECT id, name FROM "lay"."t" ORDER BY id'
        a, ra = _create(s, sql)
        eq(ra, None, "first creation is not reused")
        rows = s.page(a, 1)
        eq(len(rows), 3, "rows")
        # the same query written differently (formatting, case of keywords): same parse tree
        b, rb = _create(s, 'select id,   name\n  from "lay"."t"   order by id')
        eq(rb, "true", "X-Dapi-Reused on the identical query")
        check(a != b, "a new slug")
        eq(s.page(b, 1), rows, "same rows")
        # another key, same (unscoped) scope: by default it runs the query itself, so it
        # cannot tell that A ran it (X-Dapi-Reused or a fast answer would say so)
        c, rc = _create(s, sql, key=KEY_B)
        eq(rc, None, "another owner: not shared by default")
        eq(s.page(c, 1, key=KEY_B), rows, "rows for B")
        h.expect_error(s.results(c, 1, key=KEY_A), 404, "Query not found", "A cannot read B's slug")
        eq(_done_lines(s), 2, "A's run and B's own run")
        st = jparse(s.api("GET", "/api/queries/" + c, key=KEY_B))
        eq(st["reused"], False, "B's status: not reused")
        c2, rc2 = _create(s, sql, key=KEY_B)
        eq(rc2, "true", "B reuses its own result")
        eq(_done_lines(s), 2, "no third run")
        # a different query is not reused
        d, rd = _create(s, 'SELECT id FROM "lay"."t" ORDER BY id')
        eq(rd, None, "different SQL")


def test_reuse_across_keys_setting():
    """--reuse-across-keys: keys of different owners with the same scope share stored results
    and runs in flight; each still owns its own slug."""
    with Server(keys=[KEY_A, KEY_B], data_dir=_lake(), args=["--reuse-across-keys"],
                name="reuse-across") as s:
        sql = 'SELECT id, name FROM "lay"."t" ORDER BY id'
        a, ra = _create(s, sql)
        eq(ra, None, "first creation is not reused")
        rows = s.page(a, 1)
        c, rc = _create(s, sql, key=KEY_B)
        eq(rc, "true", "another owner with the same scope")
        eq(s.page(c, 1, key=KEY_B), rows, "rows for B")
        h.expect_error(s.results(c, 1, key=KEY_A), 404, "Query not found", "A cannot read B's slug")
        h.expect_error(s.results(a, 1, key=KEY_B), 404, "Query not found", "B cannot read A's slug")
        eq(_done_lines(s), 1, "one run for two owners")
        # a run in flight is shared too
        slow = "SELECT count(*) AS n FROM range(150000000) t(i) WHERE i % 7 = 3"
        x, rx = _create(s, slow)
        y, ry = _create(s, slow, key=KEY_B)
        eq((rx, ry), (None, "true"), "B attaches to A's run")
        eq(s.page(y, 1, key=KEY_B), s.page(x, 1), "same rows")
        eq(_done_lines(s), 2, "one run for the slow query")


def test_shared_run_failure_does_not_quote_the_other_keys_text():
    """--reuse-across-keys: a key whose query shares another key's run is told why the run
    failed, but DuckDB's message quoted the other key's statement ("at line 1, column 66",
    "LINE 1: … /* B note hunter2 */ …"): its comments and spelling, which sharing does not
    reveal otherwise. A key whose own run failed still gets the excerpt of its own text."""
    fail = ("{} count(*) {}FROM range(60000000) WHERE CAST(range::VARCHAR || (CASE WHEN range > "
            "50000000 THEN 'x' ELSE '' END) AS BIGINT) >= 0")
    with Server(keys=[KEY_A, KEY_B], data_dir=_lake(), args=["--reuse-across-keys"],
                name="reuse-excerpt") as s:
        b, rb = _create(s, fail.format("SELECT", "/* B note hunter2 */ "), key=KEY_B)
        a, ra = _create(s, fail.format("select", "").replace("CAST", "cast"), key=KEY_A)
        eq((rb, ra), (None, "true"), "A's query shares B's run")
        mine = h.expect_error(s.results(b, 1, key=KEY_B), 400, "Query execution failed", "B's run")
        check("hunter2" in mine["details"] and "LINE 1" in mine["details"],
              "B is shown its own text: %r" % mine["details"])
        theirs = h.expect_error(s.results(a, 1, key=KEY_A), 400, "Query execution failed",
                                "A's shared run")
        check("Could not convert string" in theirs["details"], "why: %r" % theirs["details"])
        for word in ("hunter2", "LINE", "column", "/*"):
            check(word not in theirs["details"], "%r in A's message: %r" % (word, theirs["details"]))


def test_reuse_cache_control():
    with Server(keys=[KEY_A], data_dir=_lake(), name="reuse-cc") as s:
        sql = 'SELECT count(*) AS n FROM "lay"."t"'
        a, _ = _create(s, sql)
        s.page(a, 1)
        for hv in ("no-cache", "no-store", "max-age=0", "NO-CACHE, max-age=100"):
            b, rb = _create(s, sql, headers={"Cache-Control": hv})
            eq(rb, None, "bypassed by Cache-Control: %s" % hv)
            eq(s.page(b, 1), [{"n": 3}], "rows")
        n = _done_lines(s)
        eq(n, 5, "each bypass ran")
        time.sleep(1.2)
        b, rb = _create(s, sql, headers={"Cache-Control": "max-age=1"})
        eq(rb, None, "older than max-age=1: runs")
        s.page(b, 1)
        c, rc = _create(s, sql, headers={"Cache-Control": "max-age=600"})
        eq(rc, "true", "young enough")
        c, rc = _create(s, sql, headers={"Cache-Control": "public, max-age=oops"})
        eq(rc, "true", "an unreadable directive is ignored")


def test_reuse_off_setting():
    with Server(keys=[KEY_A], data_dir=_lake(), args=["--reuse-max-age", "0"], name="reuse-off") as s:
        sql = 'SELECT * FROM "lay"."t"'
        a, _ = _create(s, sql)
        s.page(a, 1)
        b, rb = _create(s, sql)
        eq(rb, None, "--reuse-max-age 0: never reused")


def test_reuse_invalidated_by_changed_lake_file():
    lake = _lake()
    with Server(keys=[KEY_A], data_dir=lake, name="reuse-lake") as s:
        sql = 'SELECT id, name FROM "lay"."t" ORDER BY id'
        a, _ = _create(s, sql)
        eq(len(s.page(a, 1)), 3, "rows before")
        # a file of another layer than the query reads changes nothing for a scoped key? (this
        # key is unscoped, so every layer counts: conservative)
        path = os.path.join(lake, "lay", "t.csv")
        h.write_file(path, "id,name\n1,a\n2,b\n3,c\n4,d\n")
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        b, rb = _create(s, sql)
        eq(rb, None, "changed file: not reused")
        eq(len(s.page(b, 1)), 4, "new rows")
        c, rc = _create(s, sql)
        eq(rc, "true", "unchanged since: reused")
        eq(len(s.page(c, 1)), 4, "the new rows")


def test_lake_changes_seen_by_the_next_query_watched_or_not():
    """The lake is watched (--lake-watch auto, inotify) so that a query does not scan it when
    nothing changed; a change made right before a creation must still be seen by it: a table
    rewritten (same size and mtime second: only the content and the nanoseconds differ), a
    table added, a table removed — 15 times in a row, with the watch and without it."""
    for watch in ("auto", "off"):
        lake = _lake()
        with Server(keys=[KEY_A], data_dir=lake, name="reuse-watch-" + watch,
                    args=["--lake-watch", watch]) as s:
            sql = 'SELECT max(id) AS m FROM "lay"."t"'
            path = os.path.join(lake, "lay", "t.csv")
            for i in range(15):
                h.write_file(path, "id,name\n%d,x\n" % (10 + i))
                a, ra = _create(s, sql)
                eq(ra, None, "%s, round %d: a changed file is never reused" % (watch, i))
                eq(s.page(a, 1), [{"m": 10 + i}], "%s, round %d: the new content" % (watch, i))
                b, rb = _create(s, sql)
                eq(rb, "true", "%s, round %d: unchanged since: reused" % (watch, i))
                new = os.path.join(lake, "lay", "n%d.csv" % i)
                h.write_file(new, "v\n%d\n" % i)
                c, _ = _create(s, 'SELECT v FROM "lay"."n%d"' % i)
                eq(s.page(c, 1), [{"v": i}], "%s, round %d: a table added is there" % (watch, i))
                os.unlink(new)
                r = s.api("POST", "/api/queries", key="",
                          body=json.dumps({"sql_query": 'SELECT v FROM "lay"."n%d"' % i}).encode(),
                          headers={"Content-Type": "application/json"})
                expect_status(r, 400, "%s, round %d: a table removed is gone" % (watch, i))


def test_reuse_scope_rules():
    lake = _lake()
    keys_dir = h.tmpdir("reuse-keys")
    with Server(keys=[KEY_A], data_dir=lake, name="reuse-scope") as s:
        # a store key limited to "lay": a different scope than the unscoped key
        r = h.run_cli(["keys", "add", "--name", "scoped", "--layers", "lay", "--state-dir", s.state_dir])
        m = re.search(r"(dapi_\S+)", r[1] + r[2])
        if not m:
            raise h.Skip("could not add a store key: %r" % (r,))
        scoped = m.group(1)
        sql = 'SELECT id FROM "lay"."t" ORDER BY id'
        a, _ = _create(s, sql)
        s.page(a, 1)
        deadline = time.monotonic() + 5
        while True:
            r = s.api("POST", "/api/queries", body=json.dumps({"sql_query": sql}).encode(),
                      key=scoped, headers={"Content-Type": "application/json"})
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        expect_status(r, 200, "scoped key creates")
        eq(r.headers.get("x-dapi-reused"), None, "another scope: not shared")
        b = jparse(r)["query_slug"]
        eq(s.page(b, 1, key=scoped), s.page(a, 1), "same rows, run separately")
        r = s.api("POST", "/api/queries", body=json.dumps({"sql_query": sql}).encode(),
                  key=scoped, headers={"Content-Type": "application/json"})
        eq(r.headers.get("x-dapi-reused"), "true", "same scope again: shared")


@h.timeout(120)
def test_reuse_single_flight_50():
    """50 identical creations at once, from two keys: one run per key (keys share nothing by
    default: one key's run is not another's to join)."""
    with Server(keys=[KEY_A, KEY_B], data_dir=_lake(), args=["--max-queries-per-key", "100"],
                name="reuse-flight") as s:
        sql = "SELECT sum(i) AS total FROM range(200000000) t(i)"
        slugs, reused, errors = [], [], []
        lock = threading.Lock()
        start = threading.Barrier(50)

        def one(i):
            try:
                start.wait()
                sl, ru = _create(s, sql, key=KEY_A if i % 2 else KEY_B)
                with lock:
                    slugs.append((sl, KEY_A if i % 2 else KEY_B))
                    reused.append(ru)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(e)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        eq(errors, [], "all created")
        eq(len(slugs), 50, "50 slugs")
        eq(len(set(s for s, _ in slugs)), 50, "distinct slugs")
        eq(sum(1 for r in reused if r == "true"), 48, "48 reused (one run per key)")
        want = None
        for sl, key in slugs:
            r = s.results(sl, 1, key=key, timeout=90)
            expect_status(r, 200, "result of %s" % sl)
            rows = jparse(r)["data"]
            want = want or rows
            eq(rows, want, "same rows")
        eq(_done_lines(s), 2, "one run per key for 50 identical creations")


@h.timeout(90)
def test_shared_run_evicting_its_leader_leaves_every_follower_its_result():
    """A run shared by four slugs of one key whose quota holds about two results: recording
    the followers' results one by one deletes the key's oldest, the slug that ran. The old code
    removed its directory before the last follower linked the run's file: that one got a 503
    and a second run. Now one run serves all, and the key keeps its two newest results."""
    mib = 1024 * 1024
    args = ["--max-state-bytes-per-key", str(mib), "--max-queries-per-key", "10"]
    with Server(keys=[KEY_A], data_dir=_lake(), args=args, name="reuse-evict") as s:
        # ~400 kB stored (62 distinct MD5s a row: compressed results keep about 1 kB of it),
        # after a scalar that takes about a second, so the followers attach to the run.
        sql = ("SELECT (SELECT string_agg(md5((i * 100 + j)::VARCHAR), '') FROM range(62) t2(j)) AS v, "
               "i FROM range(400) t(i) WHERE (SELECT sum(k) FROM range(400000000) t3(k)) > 0 ORDER BY i")
        lead, _ = _create(s, sql, key=KEY_A)
        followers = []
        for _ in range(3):
            sl, ru = _create(s, sql, key=KEY_A)
            eq(ru, "true", "attached to the run in flight")
            followers.append(sl)
        st = jparse(s.api("GET", "/api/queries/" + lead, key=KEY_A))
        check(st["state"] in ("queued", "running"), "the run is still going when the followers attach: %r" % st)
        r = s.results(followers[-1], 4, key=KEY_A, timeout=60)
        expect_status(r, 200, "page 4 of the newest follower")
        eq([row["i"] for row in jparse(r)["data"]], list(range(300, 400)), "its last page")
        # (its last page may be served from the run a moment before the followers' outcomes
        # are recorded, oldest first, and each deletes what its key holds beyond its quota)
        deadline = time.monotonic() + 30
        while jparse(s.api("GET", "/api/queries/" + followers[-1], key=KEY_A))["state"] != "succeeded":
            check(time.monotonic() < deadline, "the newest follower succeeds")
            time.sleep(0.02)
        statuses = [s.results(sl, 1, key=KEY_A).status for sl in [lead] + followers]
        eq(statuses, [404, 404, 200, 200], "page 1 of the run's slug and its followers, oldest first: "
           "the key keeps its two newest results (its quota holds about 2.5)")
        for sl in followers[-2:]:
            eq([row["i"] for row in s.page(sl, 1, key=KEY_A)], list(range(100)), "page 1 of %s" % sl)
        eq(_done_lines(s), 1, "one run for the four slugs")
        check(not os.path.exists(os.path.join(s.state_dir, "queries", lead)), "the run's own slug is gone from disk")


def test_reuse_nekt_v2_per_upstream_key():
    """--backend nekt (v2): the same SQL with the same upstream key shares the downloaded
    result; another upstream key (another tenant) never does."""
    k1, k2 = "nektkey1", "nektkey2"
    with Server(args=["--emulate-nekt"], keys=[k1, k2], data_dir=_lake(), name="reuse-emu") as emu:
        argv = ["--backend", "nekt", "--nekt-url", "http://127.0.0.1:%d" % emu.port, "--nekt-api", "v2"]
        with Server(args=argv, keys=None, name="reuse-fwd") as s:
            s.key = k1
            sql = 'SELECT id, name FROM "lay"."t" ORDER BY id'
            a, ra = _create(s, sql)
            eq(ra, None, "first")
            rows = s.page(a, 1)
            eq(len(rows), 3, "rows")
            b, rb = _create(s, sql)
            eq(rb, "true", "same upstream key: reused")
            eq(s.page(b, 1), rows, "same rows")
            c, rc = _create(s, sql, key=k2)
            eq(rc, None, "another upstream key: not shared")
            eq(s.page(c, 1, key=k2), rows, "its own run")
            d, rd = _create(s, sql, headers={"Cache-Control": "no-cache"})
            eq(rd, None, "no-cache")
