"""Fairness between keys and the storage they share: atomic admission (a per-key limit
answered 429, the global one 503), per-key stored bytes (a key's oldest results make room
for its new one), the crash-loop guard, orphaned temporary files, and a full disk.

Slow queries are count(*) over a huge range with one worker and one DuckDB thread, so a
burst of them costs one core at most; every server here has a short --query-timeout."""

import errno
import json
import os
import subprocess
import threading
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY_A = "it-fair-key-A-7c21"
KEY_B = "it-fair-key-B-93d4"

SLOW = "SELECT count(*) + %d AS n FROM range(1000000000000)"
# One worker, one DuckDB thread: a burst of slow queries keeps one core busy at most.
QUIET = ["--workers", "1", "--duckdb-threads", "1", "--shutdown-grace", "1"]


def _burst(s, payloads):
    """POSTs every (key, sql) at once, one connection each; returns the responses in order."""
    out = [None] * len(payloads)

    def one(i):
        key, sql = payloads[i]
        out[i] = s.create_resp({"sql_query": sql}, key=key)

    errors = [e for _, e in h.run_threads(one, list(range(len(payloads))), timeout=60) if e]
    check(not errors, "burst: %s" % errors[:3])
    return out


def _meta(s, slug):
    """The query's persisted state (meta.json, or its record in the creation log)."""
    m = h.persisted_meta(s.state_dir, slug)
    if m is None:
        raise OSError("nothing persisted for %s" % slug)
    return m


def _wait_meta(s, slug, pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = _meta(s, slug)
            if pred(m):
                return m
        except (OSError, ValueError):
            m = None
        if time.monotonic() > deadline:
            raise AssertionError("%s: the persisted state of %s is %r after %.0f s" % (what, slug, m, timeout))
        time.sleep(0.05)


# ----------------------------------------------------------------------------- admission


@h.timeout(60)
def test_per_key_limit_429_while_other_keys_are_admitted():
    # --query-timeout 3: no admitted query may end (and free its slot) during the burst.
    args = QUIET + ["--max-queued-queries", "8", "--max-queries-per-key", "3", "--query-timeout", "3"]
    with Server(args=args, keys=[KEY_A, KEY_B], name="fair-429") as s:
        # SQL refused by the check gives its slot back: five refusals leave all three free.
        for i in range(5):
            expect_error(s.create_resp({"sql_query": "SELECT nope%d FROM nowhere" % i}, key=KEY_A), 400, "Invalid SQL query")
        resps = _burst(s, [(KEY_A, SLOW % i) for i in range(30)])
        ok = [r for r in resps if r.status == 200]
        eq(len(ok), 3, "creates admitted out of 30 concurrent ones from one key (--max-queries-per-key 3); statuses %s"
           % sorted(r.status for r in resps))
        for r in resps:
            if r.status != 200:
                body = expect_error(r, 429, what="a create over the key's limit")
                check("--max-queries-per-key" in (body.get("details") or ""), "429 does not name the limit: %s" % r.short())
                check(r.headers.get("retry-after", "").isdigit(), "429 without Retry-After: %s" % r.short())
        # Another key is still admitted while the first is at its limit.
        other = s.create(SLOW % 100, key=KEY_B)
        expect_error(s.create_resp({"sql_query": SLOW % 101}, key=KEY_A), 429, what="key A still at its limit")
        # Each query gives its slot back when it ends (here: --query-timeout).
        for r in ok:
            slug = jparse(r)["query_slug"]
            expect_error(s.results(slug, 1, key=KEY_A, timeout=30), 504, "Query execution failed", "slow query of key A")
        s.create("SELECT 1 AS one", key=KEY_A)
        expect_error(s.results(other, 1, key=KEY_B, timeout=30), 504, "Query execution failed", "slow query of key B")


@h.timeout(60)
def test_global_limit_is_atomic_503():
    """40 creates at once from two keys with room for 5 (--max-queued-queries 4 + 1 worker):
    exactly 5 are admitted, whatever the timing of the SQL checks."""
    args = QUIET + ["--max-queued-queries", "4", "--max-queries-per-key", "100", "--query-timeout", "5"]
    with Server(args=args, keys=[KEY_A, KEY_B], name="fair-global") as s:
        resps = _burst(s, [((KEY_A, KEY_B)[i % 2], SLOW % i) for i in range(40)])
        statuses = sorted(r.status for r in resps)
        eq(statuses.count(200), 5, "creates admitted with room for 5 (statuses %s)" % statuses)
        for r in resps:
            if r.status != 200:
                expect_error(r, 503, "Server busy, retry later", "a create over the global limit")
                check(r.headers.get("retry-after", "").isdigit(), "503 without Retry-After: %s" % r.short())


@h.timeout(60)
def test_resumed_queries_count_against_their_key():
    args = QUIET + ["--max-queries-per-key", "2", "--query-timeout", "30"]
    with Server(args=args, keys=[KEY_A, KEY_B], name="fair-resume") as s:
        a = [s.create(SLOW % i, key=KEY_A) for i in range(2)]
        expect_error(s.create_resp({"sql_query": SLOW % 9}, key=KEY_A), 429, what="third query of key A")
        s.restart()  # both are still queued or running: they run again after the start
        for slug in a:
            eq(_meta(s, slug)["state"] in ("queued", "running"), True, "state of %s after the restart" % slug)
        expect_error(s.create_resp({"sql_query": SLOW % 10}, key=KEY_A), 429, what="key A after the restart (its queries resumed)")
        s.create("SELECT 2 AS two", key=KEY_B)


@h.timeout(90)
def test_nekt_forwarding_gets_the_same_per_key_limit():
    """Limits are per key hash, so forwarded keys (which dapi does not check) get them too:
    v2 creates hold a slot until their run ends, v1 page fetches while they run."""
    k1, k2 = "nektkey1", "nektkey2"
    # Every upstream query call takes 3 s (v2 sql-query, v1 create and v1 executions): no
    # admitted one ends (and frees its slot) during a burst.
    faults = "path=/api/v1/sql-query/,latency_ms=3000;path=/api/v1/explorer/queries/,method=POST,latency_ms=3000"
    with Server(args=["--emulate-nekt", "--emulate-faults", faults], keys=[k1, k2], name="fair-emu") as emu:
        base = ["--backend", "nekt", "--nekt-url", "http://127.0.0.1:%d" % emu.port, "--max-queries-per-key", "2", "--shutdown-grace", "1"]
        with Server(args=base + ["--nekt-api", "v2"], keys=None, name="fair-fwd-v2") as fwd:
            resps = _burst(fwd, [(k1, "SELECT %d AS i" % i) for i in range(10)])
            ok = [r for r in resps if r.status == 200]
            eq(len(ok), 2, "v2 creates admitted out of 10 concurrent ones from one key (statuses %s)" % sorted(r.status for r in resps))
            for r in resps:
                if r.status != 200:
                    body = expect_error(r, 429, what="a forwarded create over the key's limit")
                    check("--max-queries-per-key" in body.get("details", ""), "429 details: %r" % body)
            other = fwd.create("SELECT 100 AS i", key=k2)
            for r in ok:
                body = jparse(r)
                eq(fwd.page(body["query_slug"], 1, key=k1), [{"i": int(body["sql_query"].split()[1])}], "a forwarded result")
            eq(fwd.page(other, 1, key=k2), [{"i": 100}], "the other key's result")
            fwd.create("SELECT 7 AS i", key=k1)  # the finished runs gave their slots back
        with Server(args=base + ["--nekt-api", "v1"], keys=None, name="fair-fwd-v1") as fwd:
            slug = fwd.create("SELECT i FROM range(1000) t(i) ORDER BY i", key=k1)
            out = [None] * 6

            def page(i):
                out[i] = fwd.results(slug, i + 1, key=k1)

            h.run_threads(page, list(range(6)), timeout=60)
            statuses = sorted(r.status for r in out)
            eq(statuses.count(200), 2, "v1 pages fetched at once for one key (statuses %s)" % statuses)
            for i, r in enumerate(out):
                if r.status == 200:
                    eq(jparse(r)["data"][0], {"i": i * 100}, "first row of page %d" % (i + 1))
                else:
                    expect_error(r, 429, what="a v1 page fetch over the key's limit")
            eq(fwd.page(slug, 6, key=k1)[0], {"i": 500}, "page 6 once the others are done")


# ----------------------------------------------------------------------------- stored bytes


def _big(rows):
    """About rows kB stored: each row holds 62 distinct MD5s (2 kB of hex, which zstd stores
    in about 1 kB: results are kept compressed, so repeated text would take almost nothing)."""
    return ("SELECT (SELECT string_agg(md5((i * 100 + j)::VARCHAR), '') FROM range(62) t2(j)) AS v, "
            "%d AS n FROM range(%d) t(i)" % (rows, rows))


def _wait_succeeded(s, slug, key, timeout=30.0):
    """Until the query's outcome is recorded: its last page may be served a moment before
    (progressive pages), and the key's results over its quota go only then."""
    deadline = time.monotonic() + timeout
    while True:
        r = s.api("GET", "/api/queries/" + slug, key=key)
        expect_status(r, 200, "status of " + slug)
        state = jparse(r)["state"]
        if state == "succeeded":
            return
        check(state in ("queued", "running") and time.monotonic() < deadline,
              "%s: state %r, waiting for succeeded" % (slug, state))
        time.sleep(0.02)


@h.timeout(60)
def test_per_key_storage_evicts_the_keys_oldest_results():
    mib = 1024 * 1024
    args = ["--max-state-bytes", str(2 * mib), "--max-state-bytes-per-key", str(mib)]
    with Server(args=args, keys=[KEY_A, KEY_B], name="fair-bytes") as s:
        b1 = s.create(_big(400), key=KEY_B)
        eq(len(s.page(b1, 1, key=KEY_B)), 100, "key B's result")
        a = []
        for i in range(5):  # ~400 kB each: two fit in key A's 1 MiB
            # (distinct queries: a comment alone would leave them identical, and reused)
            slug = s.create(_big(400).replace(" AS n ", " AS n, %d AS tag " % i), key=KEY_A)
            eq(len(s.page(slug, 4, key=KEY_A)), 100, "page 4 of key A's result %d" % i)
            _wait_succeeded(s, slug, KEY_A)
            a.append(slug)
        for slug in a[:3]:
            expect_error(s.results(slug, 1, key=KEY_A), 404, "Query not found", "key A's older result (deleted to make room)")
        for slug in a[3:]:
            eq(len(s.page(slug, 1, key=KEY_A)), 100, "key A's two newest results")
            check(os.path.isdir(os.path.join(s.state_dir, "queries", slug)), "newest result's directory")
        for slug in a[:3]:
            check(not os.path.exists(os.path.join(s.state_dir, "queries", slug)), "evicted %s still on disk" % slug)
        eq(len(s.page(b1, 4, key=KEY_B)), 100, "key B's result is never deleted for key A")
        # Key A never filled the store for key B.
        b2 = s.create("SELECT 7 AS seven", key=KEY_B)
        eq(s.page(b2, 1, key=KEY_B), [{"seven": 7}], "key B's new query")
        # One result larger than a key may store: 413, and nothing of key A's is deleted for it.
        huge = s.create(_big(1100), key=KEY_A)
        # (a page past the end waits for the end of the run; page 1 may be served before it)
        expect_error(s.results(huge, 10 ** 6, key=KEY_A), 413, what="past the end of the refused result")
        body = expect_error(s.results(huge, 1, key=KEY_A), 413, "Query execution failed", "a result over --max-state-bytes-per-key")
        check("--max-state-bytes-per-key" in body.get("details", ""), "413 does not name the limit: %r" % body)
        for slug in a[3:]:
            eq(len(s.page(slug, 1, key=KEY_A)), 100, "key A's results after the refused one")
        s.restart()  # the accounting survives a restart
        for slug in a[3:]:
            eq(len(s.page(slug, 1, key=KEY_A)), 100, "key A's results after a restart")
        slug = s.create(_big(400) + " -- again", key=KEY_A)
        eq(len(s.page(slug, 1, key=KEY_A)), 100, "key A's new result after a restart")
        _wait_succeeded(s, slug, KEY_A)
        expect_error(s.results(a[3], 1, key=KEY_A), 404, "Query not found", "key A's oldest after a restart and a new result")
        eq(len(s.page(b1, 1, key=KEY_B)), 100, "key B's result after all that")


@h.timeout(90)
def test_per_key_storage_counts_every_query_not_only_results():
    """Each query a key keeps is charged 8 KiB in --max-state-bytes-per-key, whatever its state
    (its metadata on disk and in memory): a key's failed queries, which have no result, used to
    count nothing, so a key could keep any number of them for the retention. With a 1 MiB quota
    a key keeps 128 queries: its 129th deletes its oldest ended one. Another key's are kept."""
    mib = 1024 * 1024
    with Server(args=["--max-state-bytes-per-key", str(mib)], keys=[KEY_A, KEY_B], name="fair-charge") as s:
        b = s.create("SELECT CAST('b' AS INTEGER) AS n", key=KEY_B)
        expect_status(s.results(b, 1, key=KEY_B), 400, "key B's failed query")
        a = []
        for i in range(300):
            slug = s.create("SELECT CAST('x%d' AS INTEGER) AS n" % i, key=KEY_A)
            expect_status(s.results(slug, 1, key=KEY_A), 400, "key A's failed query %d" % i)
            a.append(slug)
        gone = [i for i, slug in enumerate(a) if s.results(slug, 1, key=KEY_A).status == 404]
        eq(gone, list(range(300 - 128)), "key A's queries deleted (its oldest, 128 kept)")
        expect_status(s.results(b, 1, key=KEY_B), 400, "key B's failed query is kept")


@h.timeout(90)
def test_per_key_storage_counts_the_text_of_each_query():
    """A query is charged twice the bytes of its SQL and parameters when that is more than
    8 KiB: they are kept on disk and in memory for its retention. A flat 8 KiB let a key keep
    queries of 250 KB of parameters each, 60 times what it counted (the review's 160 queries
    of 900 KB took 139 MB of disk and 170 MB of memory under a 2 MB quota). With a 2 MiB quota
    a key keeps 4 such queries (500 KB each): its older ones are deleted, the state stays small,
    another key's query is kept."""
    quota = 2 * 1024 * 1024
    with Server(args=["--max-state-bytes-per-key", str(quota)], keys=[KEY_A, KEY_B],
                name="fair-text") as s:
        b = s.create("SELECT 1 AS n", key=KEY_B)
        big = "y" * 250000
        a = []
        for i in range(30):
            r = s.create_resp({"sql_query": "SELECT length($p) + %d AS v" % i,
                               "params": {"p": big}}, key=KEY_A)
            expect_status(r, 200, "key A's query %d" % i)
            a.append(jparse(r)["query_slug"])
            eq(s.page(a[-1], 1, key=KEY_A), [{"v": 250000 + i}], "its rows")
        kept = [i for i, slug in enumerate(a) if s.results(slug, 1, key=KEY_A).status != 404]
        check(4 <= len(kept) <= 5 and kept[-1] == 29, "key A keeps its newest few: %r" % kept)
        used = 0
        for root, _, files in os.walk(s.state_dir):
            for f in files:
                p = os.path.join(root, f)
                if not os.path.islink(p):
                    used += os.path.getsize(p)
        check(used < 4 * quota, "the state dir holds %d bytes (quota %d)" % (used, quota))
        eq(s.page(b, 1, key=KEY_B), [{"n": 1}], "key B's query is kept")


# ----------------------------------------------------------------------------- crash loop and orphans


@h.timeout(90)
def test_crash_loop_guard_runs_a_query_at_most_twice():
    """A query running when the process dies runs again once; if the process dies again
    while running it, it is failed at the next start instead of being run a third time."""
    args = QUIET + ["--query-timeout", "120", "--result-wait", "3"]
    s = Server(args=args, keys=[KEY_A], name="fair-crash")
    try:
        slug = s.create(SLOW % 1)
        _wait_meta(s, slug, lambda m: m.get("attempts") == 1 and m.get("state") == "running", "first run started")
        s.kill()
        s.start()
        _wait_meta(s, slug, lambda m: m.get("attempts") == 2, "run again once after a crash")
        s.kill()
        s.start()
        body = expect_error(s.results(slug, 1, timeout=30), 500, "Query execution failed", "a query the server died running twice")
        check("stopped twice" in body.get("details", ""), "details: %r" % body)
        eq(body.get("query_slug"), slug, "query_slug")
        eq(_meta(s, slug).get("state"), "failed", "state persisted")
        s.restart()
        expect_error(s.results(slug, 1, timeout=30), 500, "Query execution failed", "still failed after another restart")
        eq(s.query("SELECT 3 AS three"), [{"three": 3}], "the server works")
    finally:
        s.kill()


def test_graceful_stops_do_not_count_as_crashes():
    """SIGTERM interrupting a run is not a crash: after two graceful restarts the query still runs."""
    args = QUIET + ["--query-timeout", "120"]
    with Server(args=args, keys=[KEY_A], name="fair-graceful") as s:
        slug = s.create("SELECT count(*) AS n FROM range(1000000000000) WHERE range = -1")
        for i in range(2):
            _wait_meta(s, slug, lambda m: m.get("state") == "running", "run %d started" % (i + 1))
            s.restart()
        _wait_meta(s, slug, lambda m: m.get("state") == "running", "third run started")
        check(_meta(s, slug).get("attempts") == 1, "attempts after two graceful restarts: %r" % _meta(s, slug))


def test_orphaned_temporary_files_are_removed_at_start():
    with Server(keys=[KEY_A], name="fair-orphans") as s:
        # a result of two pages has files; a small one is packed (no directory)
        slug = s.create("SELECT i FROM range(150) t(i)")
        eq(len(s.page(slug, 2)), 50, "rows of page 2")
        small = s.create("SELECT 5 AS five")
        eq(s.page(small, 1), [{"five": 5}], "rows")
        s.stop()
        qdir = os.path.join(s.state_dir, "queries", slug)
        sdir = os.path.join(s.state_dir, "queries", small)
        check(not os.path.exists(sdir), "the small result has no directory")
        os.mkdir(sdir)  # what a crashed run of it could have left
        planted = ["result.bin.tmp-Ab3dEf6hIj9k", "meta.json.tmp", "part-00000.parquet"]
        for d in (qdir, sdir):
            for name in planted:
                with open(os.path.join(d, name), "wb") as f:
                    f.write(b"\0" * 300000)
        s.start()
        left = sorted(set(os.listdir(qdir)) & set(planted))
        eq(left, [], "orphaned temporary files left after a start")
        # (no created.json: the run ended before any checkpoint of the creation log)
        eq(sorted(os.listdir(qdir)), ["meta.json", "result.bin"], "the query's own files")
        eq(len(s.page(slug, 2)), 50, "rows after the start")
        check(not os.path.exists(sdir), "the packed query's stray directory removed")
        eq(s.page(small, 1), [{"five": 5}], "the packed query's rows after the start")


# ----------------------------------------------------------------------------- disk full


def _fill(path, limit=None):
    """Writes zeros into path until the disk is full (or limit bytes); returns bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "wb") as f:
        try:
            while limit is None or n < limit:
                f.write(chunk if limit is None else chunk[: min(len(chunk), limit - n)])
                f.flush()
                n += len(chunk) if limit is None else min(len(chunk), limit - n)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
    return n


def _retryable_503(r, what):
    body = expect_error(r, 503, "Server busy, retry later", what)
    check(r.headers.get("retry-after", "").isdigit(), "%s: no Retry-After: %s" % (what, r.short()))
    details = body.get("details", "")
    check("space" in details and "--state-dir" in details, "%s: details should say the state disk is full: %r" % (what, body))
    return body


@h.timeout(90)
def test_disk_full_is_503_and_retryable():
    state = h.tmpdir("fair-tmpfs")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise h.Skip("cannot mount a tmpfs (needs root): %s" % p.stderr.decode("utf-8", "replace").strip())
    s = None
    try:
        s = Server(args=["--workers", "1", "--duckdb-threads", "1"], keys=[KEY_A], state_dir=state, name="fair-diskfull")
        room = os.path.join(state, "room")
        _fill(room, 600 * 1024)
        _fill(os.path.join(state, "filler"))
        # Creating a query needs a few bytes of metadata: none left.
        r = s.create_resp({"sql_query": "SELECT 1"})
        _retryable_503(r, "create on a full disk")
        check(state not in r.body.decode("utf-8", "replace"), "the answer shows the state dir's path: %s" % r.short())
        # 600 kB free: the query is recorded, but its ~1.5 MB result does not fit.
        os.unlink(room)
        slug = s.create(_big(1500))
        # (a page past the end waits for the end of the run: page 1 may be served before the
        # disk fills up — progressive pages)
        _retryable_503(s.results(slug, 10 ** 6, timeout=30), "results of a query whose result did not fit")
        # Room again: the client's retries get the result (the 503 queued the query again).
        os.unlink(os.path.join(state, "filler"))
        deadline = time.monotonic() + 30
        while True:
            r = s.results(slug, 16, timeout=30)
            if r.status == 200 or time.monotonic() > deadline:
                break
            _retryable_503(r, "results while the query runs again")
            time.sleep(0.2)
        expect_status(r, 200, "results once there is room")
        eq(jparse(r)["data"], [], "page 16 of 1500 rows")
        eq(len(s.page(slug, 15)), 100, "page 15")
        eq(s.query("SELECT 4 AS four"), [{"four": 4}], "a new query")
    finally:
        if s is not None:
            s.kill()
        subprocess.run(["umount", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_runs_take_turns_between_keys():
    """A key's backlog does not make another key's query wait behind all of it: with one
    worker, key B's query runs as soon as key A's current one ends (it used to wait for A's
    whole queue, FIFO)."""
    with Server(keys=[KEY_A, KEY_B], args=QUIET + ["--query-timeout", "1"], name="fair-turns") as s:
        a = [s.create(SLOW % i, key=KEY_A) for i in range(4)]
        b = s.create("SELECT 42 AS x", key=KEY_B)
        eq(s.page(b, key=KEY_B), [{"x": 42}], "key B's rows")
        log = s.stderr_text()
        finished = [x for x in a if ("query %s failed" % x) in log or ("query %s done" % x) in log]
        check(len(finished) <= 1, "key B was served after at most one of key A's queries, "
              "not after its backlog (%d of A's had finished)" % len(finished))


# ----------------------------------------------------------------------------- overruns

# One levenshtein of two 50,000-character strings: about 8 s of one core, in one call that
# never looks at DuckDB's interrupt flag, so --query-timeout cannot stop it. In OVERRUN_RUN
# the length depends on the row: the run computes it. In OVERRUN_CHECK it is constant: the
# planner folds it while the query is checked.
OVERRUN_RUN = "SELECT levenshtein(repeat('a', %d + r::INT * 0), repeat('b', 50000)) AS d FROM range(1) t(r)"
OVERRUN_CHECK = "SELECT levenshtein(repeat('a', %d), repeat('b', 50000)) AS d"
OVERRUN_ARGS = ["--workers", "2", "--duckdb-threads", "2", "--query-timeout", "1", "--shutdown-grace", "1"]



def _state(s, slug, key):
    r = s.api("GET", "/api/queries/" + slug, key=key)
    expect_status(r, 200, "status of " + slug)
    return jparse(r)["state"]


@h.timeout(120)
def test_a_query_outliving_its_time_limit_does_not_hold_the_other_keys():
    """Regression (attack review, F1): work DuckDB's interrupt cannot reach (one expression on
    one huge value) went on past --query-timeout and kept its worker; two such queries of one
    key took both run workers, and another key's SELECT 42 waited for them (42 s measured).
    Now a worker whose query is still running a second after the watchdog stopped it is set
    aside and a replacement serves the others; the overrunning key's own next query waits
    until its overruns end, so it cannot set aside worker after worker."""
    with Server(keys=[KEY_A, KEY_B], args=OVERRUN_ARGS, name="fair-overrun") as s:
        slow = [s.create(OVERRUN_RUN % (50000 + i), key=KEY_A) for i in range(2)]
        h.wait_pool_metric(s, "dapi_pool_overrunning_workers", "run", 2, "both of A's queries overrun")
        # (the replacements start one after the other, after both are set aside)
        h.wait_pool_metric(s, "dapi_pool_workers", "run", 4, "run workers with two replacements")
        a_next = s.create("SELECT 7 AS x", key=KEY_A)
        b = s.create("SELECT 42 AS x", key=KEY_B)
        eq(s.page(b, key=KEY_B), [{"x": 42}], "key B's rows")
        eq([_state(s, x, KEY_A) for x in slow], ["running", "running"],
           "key B was served while both of key A's queries were still running")
        eq(s.page(a_next, key=KEY_A), [{"x": 7}], "key A's next query, once its overruns ended")
        eq([_state(s, x, KEY_A) for x in slow], ["failed", "failed"],
           "key A's next query ran only after its overrunning ones had ended")
        for x in slow:
            expect_status(s.results(x, 1, key=KEY_A), 504, "an overrun query's results")
        h.wait_pool_metric(s, "dapi_pool_workers", "run", 2, "the set-aside workers left")
        eq(h.pool_metric(s, "dapi_pool_overruns_total", "run"), 2, "overruns counted")
        eq(h.pool_metric(s, "dapi_pool_replacements_total", "run"), 2, "replacements counted")
        check("its worker is set aside" in s.stderr_text(), "the overrun is logged")


@h.timeout(120)
def test_a_check_outliving_its_time_limit_does_not_hold_the_other_keys():
    """The same in the check pool: a constant the planner folds while the query is checked
    (the attack review's check answered 504 after 28 s, and another key's SELECT 42 waited
    65 s to be created). Both check workers are set aside and replaced; key B's creation is
    answered while key A's are still being checked."""
    with Server(keys=[KEY_A, KEY_B], args=OVERRUN_ARGS, name="fair-overcheck") as s:
        answers = {}

        def create(i):
            answers[i] = s.create_resp({"sql_query": OVERRUN_CHECK % (50000 + i)}, key=KEY_A)

        threads = [threading.Thread(target=create, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        h.wait_pool_metric(s, "dapi_pool_overrunning_workers", "check", 2, "both of A's checks overrun")
        eq(s.query("SELECT 42 AS x", key=KEY_B), [{"x": 42}], "key B's query")
        eq(len(answers), 0, "key B was answered while key A's creations were still being checked")
        for t in threads:
            t.join(90)
        for i in range(2):
            check(i in answers, "key A's creation %d was answered" % i)
            expect_error(answers[i], 504, None)
        h.wait_pool_metric(s, "dapi_pool_workers", "check", 2, "the set-aside check workers left")


@h.timeout(90)
def test_max_running_per_key_leaves_a_worker_to_the_others():
    """Two long queries of one key held both run workers, and another key's query waited
    until one of them ended (up to --query-timeout: 5 minutes by default). With
    --max-running-per-key 1 the key's second query waits, though a worker is free, and
    another key's query runs on it at once: it is answered while the first key's queries are
    still running and queued."""
    args = ["--workers", "2", "--duckdb-threads", "1", "--query-timeout", "60",
            "--max-running-per-key", "1", "--shutdown-grace", "1"]
    with Server(args=args, keys=[KEY_A, KEY_B], name="fair-running") as s:
        a1 = s.create(SLOW % 1, key=KEY_A)
        a2 = s.create(SLOW % 2, key=KEY_A)
        deadline = time.monotonic() + 20
        while _state(s, a1, KEY_A) != "running":
            check(time.monotonic() < deadline, "A's first query starts")
            time.sleep(0.05)
        b = s.create("SELECT 7 AS x", key=KEY_B)
        eq(s.page(b, 1, key=KEY_B), [{"x": 7}], "B's query, answered")
        eq((_state(s, a1, KEY_A), _state(s, a2, KEY_A)), ("running", "queued"),
           "meanwhile A's first query runs and its second waits for it")
        for slug in (a1, a2):
            s.api("DELETE", "/api/queries/" + slug, key=KEY_A)


@h.timeout(120)
def test_a_stop_does_not_wait_for_work_the_time_limit_cannot_stop():
    """A SIGTERM interrupts every query and then waited for the workers, so work DuckDB's
    interrupt cannot reach (here a levenshtein of 150,000-character strings: over a minute)
    kept the process for as long. Now the stop gives the workers 5 s, logs that it leaves
    the rest, and exits with status 0. Nothing accepted is lost: at the next start the
    finished query is served and the cut one is run again, as after a crash."""
    big = "SELECT levenshtein(repeat('a', 150000 + r::INT * 0), repeat('b', 150000)) AS d FROM range(1) t(r)"
    s = Server(keys=[KEY_A], args=OVERRUN_ARGS, name="fair-overstop")
    try:
        done = s.create("SELECT 5 AS x", key=KEY_A)
        eq(s.page(done, key=KEY_A), [{"x": 5}], "a finished query")
        cut = s.create(big, key=KEY_A)
        h.wait_pool_metric(s, "dapi_pool_overrunning_workers", "run", 1, "the big query overruns")
        s.stop(timeout=20)  # asserts exit status 0 within 20 s
        check("stopping without waiting for work the engine cannot interrupt" in s.stderr_text(),
              "the stop says what it left")
        s.start()
        eq(s.page(done, key=KEY_A), [{"x": 5}], "the finished query after the restart")
        check(_state(s, cut, KEY_A) in ("queued", "running"), "the cut query is run again")
    finally:
        s.kill()


def _dechunk(raw):
    """The body of a chunked HTTP/1.1 response held whole in raw (head included)."""
    head, rest = raw.split(b"\r\n\r\n", 1)
    body = b""
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        n = int(size_line, 16)
        if n == 0:
            return head, body
        body += rest[:n]
        rest = rest[n + 2 :]


@h.timeout(120)
def test_exports_read_slowly_do_not_hold_the_other_keys():
    """Regression (attack review 2): an export is written by a run worker at the pace its
    client reads. Two exports whose client read slowly (or not at all) took both run workers,
    and another key's SELECT 42 waited until they ended: 116 s measured, or the 60 s of
    --connection-timeout when the client read nothing. Now a worker whose export has waited a
    second for its client is set aside and replaced, without holding the key's other queries
    (a long download is no reason to); the export goes on when the client reads, intact."""
    import socket

    rows = 30000
    with Server(keys=[KEY_A, KEY_B], args=OVERRUN_ARGS[:4] + ["--shutdown-grace", "1"], name="fair-slowexport") as s:
        big = s.create("SELECT r, repeat('x', 1000) AS pad FROM range(%d) t(r)" % rows, key=KEY_A)
        eq(len(s.page(big, 300, key=KEY_A)), 100, "the last page of A's result")
        socks = []
        for _ in range(2):
            c = socket.socket()
            c.settimeout(30)
            c.connect(("127.0.0.1", s.port))
            c.sendall(("GET /api/queries/%s/export?format=csv HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n" % (big, KEY_A)).encode())
            socks.append(c)
        try:
            h.wait_pool_metric(s, "dapi_pool_waiting_workers", "run", 2, "both exports wait for their client")
            eq(s.query("SELECT 42 AS x", key=KEY_B), [{"x": 42}], "key B's query")
            eq(s.query("SELECT 7 AS x", key=KEY_A), [{"x": 7}], "key A's own query, not held by its downloads")
            eq(h.pool_metric(s, "dapi_pool_waiting_workers", "run"), 2, "both exports were still waiting meanwhile")
            # the client reads at last: the whole export arrives, in order
            raw = b""
            while not raw.endswith(b"\r\n0\r\n\r\n"):
                data = socks[0].recv(1 << 20)
                check(data, "the export ended without its last chunk (%d bytes read)" % len(raw))
                raw += data
            head, body = _dechunk(raw)
            check(head.startswith(b"HTTP/1.1 200"), "export status: %r" % head[:40])
            lines = body.split(b"\r\n")
            eq((lines[0], len(lines)), (b"r,pad", rows + 2), "header, rows and the final CRLF")
            eq(lines[rows], b"%d,%s" % (rows - 1, b"x" * 1000), "the last row")
        finally:
            for c in socks:
                c.close()
        h.wait_pool_metric(s, "dapi_pool_workers", "run", 2, "the set-aside workers left")
        check(h.pool_metric(s, "dapi_pool_waits_total", "run") >= 2, "waits counted")


@h.timeout(120)
def test_parquet_conversions_take_turns():
    """Regression (attack review 2): each parquet export converts the whole result under
    <state-dir>/tmp (its NDJSON, the file, DuckDB's spill), and any number ran at once: one key
    took 617 MB of tmp with --max-spill-bytes 20 MB, and 16 exports at once would take 16 times
    that. Now at most 2 conversions run at once, one per key (the others wait, their workers
    set aside), and the conversion's spill is capped by --max-spill-bytes. Three exports of one
    key never convert side by side, and each still gets its whole file."""
    tmp = None
    with Server(keys=[KEY_A], args=OVERRUN_ARGS[:4] + ["--query-timeout", "60", "--shutdown-grace", "1"], name="fair-parquet") as s:
        tmp = os.path.join(s.state_dir, "tmp")
        big = s.create("SELECT r, repeat('x', 100) AS pad FROM range(300000) t(r)", key=KEY_A)
        eq(len(s.page(big, 3000, key=KEY_A)), 100, "the last page")
        answers, most = {}, [0]
        done = threading.Event()

        def watch():
            while not done.is_set():
                try:
                    most[0] = max(most[0], sum(1 for n in os.listdir(tmp) if n.startswith("export-")))
                except OSError:
                    pass
                time.sleep(0.005)

        def export(i):
            answers[i] = s.api("GET", "/api/queries/%s/export?format=parquet" % big, key=KEY_A, timeout=90)

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        errors = [e for _, e in h.run_threads(export, [0, 1, 2], timeout=90) if e]
        done.set()
        w.join(5)
        check(not errors, "exports: %s" % errors[:1])
        for i in range(3):
            expect_status(answers[i], 200, "parquet export %d" % i)
            check(answers[i].body[:4] == b"PAR1" and answers[i].body[-4:] == b"PAR1", "export %d is a Parquet file" % i)
        eq(len({answers[i].body for i in range(3)}), 1, "the three files are the same")
        eq(most[0], 1, "conversions of one key at once")


@h.timeout(120)
def test_a_parquet_conversion_does_not_hold_the_run_workers():
    """Regression (attack review 2): a parquet conversion runs in a DuckDB of its own, which
    --query-timeout does not reach, on a run worker: two fire-and-forget parquet exports kept
    another key's SELECT 42 waiting 7.8 s (1.3 s here with one worker). Now the worker is set
    aside after a second, like a waiting one, and the other key is served meanwhile."""
    with Server(keys=[KEY_A, KEY_B], args=["--workers", "1", "--shutdown-grace", "1"], name="fair-pqhold") as s:
        big = s.create("SELECT r, r * 7 AS b, r % 13 AS c FROM range(10000000) t(r)", key=KEY_A)
        eq(len(s.page(big, 100000, key=KEY_A)), 100, "the last page")
        out = {}

        def export():
            out["resp"] = s.api("GET", "/api/queries/%s/export?format=parquet" % big, key=KEY_A, timeout=110)

        t = threading.Thread(target=export, daemon=True)
        t.start()
        h.wait_pool_metric(s, "dapi_pool_waiting_workers", "run", 1, "the conversion's worker is set aside")
        eq(s.query("SELECT 42 AS x", key=KEY_B), [{"x": 42}], "key B's query")
        check(t.is_alive(), "key B was served while the conversion still ran")
        t.join(110)
        expect_status(out.get("resp"), 200, "the parquet export")
        check(out["resp"].body[:4] == b"PAR1", "a Parquet file")


# Memory is shared by every key's queries (--memory-limit). MEMORY_HELD builds a list of 8
# million integers (the process grows by about 135 MB in 0.4 s) and keeps it while one
# levenshtein runs on its row (about 3 s); MEMORY_NEEDED builds the same list alone, which
# fits in 256 MB, but not beside the other.
MEMORY_ARGS = ["--memory-limit", "256MB", "--workers", "2", "--query-timeout", "60"]
MEMORY_HELD = ("SELECT len(l) AS n, levenshtein(repeat('a', 40000 + len(l) * 0), repeat('b', 40000)) AS d "
               "FROM (SELECT list(i) AS l FROM range(8000000) t(i))")
MEMORY_NEEDED = "SELECT len(list(i)) AS n FROM range(8000000) t(i)"


def _memory_retryable_503(r, what, setting="--memory-limit"):
    body = expect_error(r, 503, "Server busy, retry later", what)
    check(r.headers.get("retry-after", "").isdigit(), "%s: no Retry-After: %s" % (what, r.short()))
    details = body.get("details", "")
    check("other queries were running" in details and setting in details,
          "%s: details should say %s was shared: %r" % (what, setting, body))
    return body


@h.timeout(120)
def test_a_query_out_of_memory_beside_a_larger_one_is_run_again():
    """Regression (attack review 2, finding 3): while one key's query held most of the
    memory, another key's query that fits alone ran out of it and got a final 413 ("needs
    more memory than this server allows"), although a retry would have succeeded. Now a query
    that runs out of memory while other work is in the engine is answered 503 + Retry-After,
    and its run again waits for that work to end."""
    with Server(keys=[KEY_A, KEY_B], args=MEMORY_ARGS, name="fair-memory") as s:
        base = h.rss_kb(s.proc.pid) * 1024
        a = s.create(MEMORY_HELD, key=KEY_A)
        # B starts once A's list is built (A then allocates nothing more: it is B that meets
        # the limit, not A)
        deadline = time.monotonic() + 30
        while h.rss_kb(s.proc.pid) * 1024 - base < 120 << 20:
            check(time.monotonic() < deadline, "key A's query took 120 MB within 30 s (%d MB)"
                  % ((h.rss_kb(s.proc.pid) * 1024 - base) >> 20))
            time.sleep(0.01)
        time.sleep(0.2)
        b = s.create(MEMORY_NEEDED, key=KEY_B)
        _memory_retryable_503(s.results(b, 1, key=KEY_B, timeout=60), "key B's results")
        # the client retries: the run again waited for key A's query, then fit
        eq(s.page(b, key=KEY_B), [{"n": 8000000}], "key B's rows, run again")
        eq(s.page(a, key=KEY_A), [{"n": 8000000, "d": 40000}], "key A's rows")
        check("ran out of memory beside other work" in s.stderr_text(), "the retry is logged")
        check("\ndapi_memory_retries_total 1\n" in s.request("GET", "/metrics").body.decode(),
              "the retry is counted (dapi_memory_retries_total 1)")


@h.timeout(120)
def test_a_query_too_large_alone_fails_for_good():
    """The other side: a query that runs out of memory — or of the spill space, shared the
    same way (--max-spill-bytes) — beside another is run again, once the other has ended,
    and fails for good (413) when it does not fit alone either, so a query too large for the
    server is not retried for ever."""
    cases = [("SELECT len(list(i)) AS n FROM range(40000000) t(i)", "--memory-limit"),
             ("SELECT count(*) AS n FROM (SELECT i::VARCHAR || 'padding-padding' AS s "
              "FROM range(20000000) t(i) ORDER BY s DESC)", "--max-spill-bytes")]
    args = MEMORY_ARGS + ["--max-spill-bytes", "2097152"]
    with Server(keys=[KEY_A, KEY_B], args=args, name="fair-memory-alone") as s:
        for i, (sql, setting) in enumerate(cases):
            a = s.create(OVERRUN_RUN % (40000 + i), key=KEY_A)  # little memory, about 3 s
            deadline = time.monotonic() + 30
            while _state(s, a, KEY_A) != "running":
                check(time.monotonic() < deadline, "key A's query started within 30 s")
                time.sleep(0.01)
            b = s.create(sql, key=KEY_B)
            _memory_retryable_503(s.results(b, 1, key=KEY_B, timeout=60), "beside key A's query", setting)
            body = expect_error(s.results(b, 1, key=KEY_B, timeout=60), 413, what="run again alone")
            details = body.get("details", "")
            check(setting in details and "other queries" not in details,
                  "the final answer names %s only: %r" % (setting, body))
            eq(_state(s, a, KEY_A), "succeeded", "the run again waited for key A's query")
            expect_error(s.results(b, 1, key=KEY_B), 413, what="and stays failed")
