"""Process lifecycle: results survive restarts, retention expires them, the dev key,
crash safety of materialised results, graceful shutdown, start-up errors, CLI basics."""

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import threading
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY_A = "it-persist-key-A-61f0"
KEY_B = "it-persist-key-B-0e27"


def _meta(s, slug):
    """The query's persisted state (meta.json, or its record in the creation log)."""
    m = h.persisted_meta(s.state_dir, slug)
    if m is None:
        raise OSError("nothing persisted for %s" % slug)
    return m


def _wait_meta(s, slug, pred, what, timeout=30.0):
    """Waits until the query's meta.json (what the server has persisted) satisfies pred."""
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
        time.sleep(0.02)


# ----------------------------------------------------------------------------- restart and retention


def test_restart_keeps_results():
    with Server(keys=[KEY_A, KEY_B], name="persist") as s:
        slug = s.create("SELECT i, 'v' || i AS s, i::DOUBLE / 8 AS d FROM range(250) t(i) ORDER BY i")
        before = [s.page(slug, p) for p in (1, 2, 3, 4)]
        eq(len(before[2]), 50, "rows on page 3 before restart")
        others = {s.create("SELECT %d AS k" % k): k for k in range(10)}
        s.restart()
        after = [s.page(slug, p) for p in (1, 2, 3, 4)]
        eq(after, before, "pages after restart")
        for other, k in others.items():
            eq(s.page(other, 1), [{"k": k}], "slug %s after restart" % other)
        expect_error(s.results(slug, 1, key=KEY_B), 404, "Query not found", "another key after restart")
        s.create("SELECT 1")  # still accepts new queries


@h.timeout(120)
def test_small_results_are_packed_and_kept():
    """A result that fits in its first page is a record of a pack file, not a directory of
    files (docs/design.md, "Durability"): served the same, across a clean restart and a
    SIGKILL; a deleted one stays deleted; a reuse hit gets its own copy; a result of two
    pages keeps its files."""
    with Server(keys=[KEY_A], name="persist-pack") as s:
        small = {}
        for k in range(5):
            slug = s.create("SELECT %d AS k, 'p%d' AS s" % (k, k))
            eq(s.page(slug, 1), [{"k": k, "s": "p%d" % k}], "rows of %d" % k)
            small[slug] = k
        big = s.create("SELECT i FROM range(150) t(i)")
        eq(len(s.page(big, 2)), 50, "page 2 of the two-page result")
        qdir = os.path.join(s.state_dir, "queries")
        records = h.pack_records(s.state_dir)
        for slug in small:
            check(not os.path.exists(os.path.join(qdir, slug)), "no directory for a small result")
            meta, result = records.get(slug, (None, b""))
            check(meta and meta.get("state") == "done" and meta.get("slug") == slug, "its record: %r" % (meta,))
            eq(result[:8], b"DAPIRES2", "the record holds the result")
        check(big not in records, "the two-page result is not packed")
        eq(sorted(os.listdir(os.path.join(qdir, big))), ["meta.json", "result.bin"], "its files")
        gone = sorted(small)[0]
        expect_status(s.api("DELETE", "/api/queries/" + gone, key=KEY_A), 204, "delete")
        check(gone not in h.pack_records(s.state_dir), "the deleted query's record is removed")
        # reuse: an identical creation gets its own record (deleting the first leaves it)
        first = sorted(small)[1]
        r = s.create_resp({"sql_query": "SELECT %d AS k, 'p%d' AS s" % (small[first], small[first])})
        eq(r.headers.get("x-dapi-reused"), "true", "a reuse hit")
        hit = jparse(r)["query_slug"]
        check(hit in h.pack_records(s.state_dir), "the reuse hit has a record of its own")
        expect_status(s.api("DELETE", "/api/queries/" + first, key=KEY_A), 204, "delete the first")
        eq(s.page(hit, 1), [{"k": small[first], "s": "p%d" % small[first]}], "the hit's rows")
        keep = {slug: k for slug, k in small.items() if slug not in (gone, first)}
        keep[hit] = small[first]
        for how in ("restart", "sigkill"):
            if how == "restart":
                s.restart()
            else:
                s.kill()
                s.start()
            for slug, k in keep.items():
                eq(s.page(slug, 1), [{"k": k, "s": "p%d" % k}], "rows of %d after a %s" % (k, how))
            for slug in (gone, first):
                expect_error(s.results(slug, 1), 404, None, "deleted, after a %s" % how)
            eq(len(s.page(big, 2)), 50, "the two-page result after a %s" % how)


def _pack_metrics(s):
    r = s.request("GET", "/metrics")
    expect_status(r, 200, "GET /metrics")
    return {k: float(v) for k, v in (l.rsplit(" ", 1) for l in r.body.decode().splitlines()
                                     if l.startswith("dapi_pack_"))}


def test_sparse_pack_files_are_compacted():
    """A pack file whose live records take at most a quarter of it is compacted (docs/
    design.md, "Small results"): the records left move to the file being written and the old
    file is deleted, so deleted small results do not keep their disk space until the last
    record of their file expires. The query left is served the same, across a restart."""
    with Server(keys=[KEY_A], name="persist-compact") as s:
        slugs = [s.create("SELECT %d AS k, 'c%d' AS s" % (k, k)) for k in range(8)]
        for k, slug in enumerate(slugs):
            eq(s.page(slug, 1), [{"k": k, "s": "c%d" % k}], "rows of %d" % k)
        qdir = os.path.join(s.state_dir, "queries")
        eq(sorted(n for n in os.listdir(qdir) if n.startswith(".pack-")), [".pack-1"], "one pack file")
        s.restart()  # (a new process never writes to an older file)
        m = _pack_metrics(s)
        eq(m.get("dapi_pack_files"), 1, "dapi_pack_files before")
        eq(m.get('dapi_pack_bytes{records="removed"}'), 0, "nothing removed yet")
        eq(m.get('dapi_pack_bytes{records="live"}'), os.path.getsize(os.path.join(qdir, ".pack-1")), "live bytes")
        for slug in slugs[:7]:
            expect_status(s.api("DELETE", "/api/queries/" + slug, key=KEY_A), 204, "delete")
        deadline = time.time() + 10
        while os.path.exists(os.path.join(qdir, ".pack-1")) and time.time() < deadline:
            time.sleep(0.1)
        check(not os.path.exists(os.path.join(qdir, ".pack-1")), "the sparse .pack-1 is deleted")
        records = h.pack_records(s.state_dir)
        eq(sorted(records), [slugs[7]], "the live record moved to the newer file")
        eq(s.page(slugs[7], 1), [{"k": 7, "s": "c7"}], "rows after the compaction")
        m = _pack_metrics(s)
        eq(m.get("dapi_pack_files"), 1, "dapi_pack_files")
        eq(m.get('dapi_pack_bytes{records="removed"}'), 0, "no removed bytes left")
        size = os.path.getsize(os.path.join(qdir, [n for n in os.listdir(qdir) if n.startswith(".pack-")][0]))
        eq(m.get('dapi_pack_bytes{records="live"}'), size, "the live bytes: the whole new file")
        s.kill()
        s.start()
        eq(s.page(slugs[7], 1), [{"k": 7, "s": "c7"}], "rows after a SIGKILL")
        for slug in slugs[:7]:
            expect_error(s.results(slug, 1), 404, None, "deleted, after a SIGKILL")


def test_queued_queries_run_again_after_restart():
    """Queries still queued (or running) at SIGTERM run again after a restart and give
    their full results. Three rounds, since start-up with queued queries is where races live."""
    args = ["--workers", "1", "--shutdown-grace", "2"]
    with Server(args=args, keys=[KEY_A], name="requeue") as s:
        n = 300_000_000
        for rnd in range(3):
            slow = s.create("SELECT sum(i) AS total, %d AS rnd FROM range(%d) t(i)" % (rnd, n))
            quick = {s.create("SELECT %d AS k, 'q%d' AS s" % (k, k)): k for k in range(6)}
            s.stop()
            s.start()
            r = s.results(slow, 1, timeout=90)
            expect_status(r, 200, "round %d: the interrupted slow query after restart" % rnd)
            eq(r.raw().get("data")[0].get("total"), h.Raw(str(n * (n - 1) // 2)), "total")
            for slug, k in quick.items():
                r = s.results(slug, 1, timeout=60)
                expect_status(r, 200, "round %d: queued query %d after restart" % (rnd, k))
                eq(jparse(r)["data"], [{"k": k, "s": "q%d" % k}], "rows of queued query %d" % k)


def _served_then_expiry(args, name, sql, rows):
    """Starts a server with --retention R and creates a query; returns (server, slug,
    expiry), expiry being the wall-clock second from which the server no longer serves it:
    the creation time it persisted (meta.json "created", in whole seconds) plus R.

    Page 1 must be served while the query lives. That is asserted only when the request
    ended before the expiry (on the same clock, CLOCK_REALTIME): a query created at the end
    of a second lives R - 1 s and a bit, so on a machine too slow to create and read it in
    that time the round is not a failure but starts again with R doubled (2, 4, 8 s)."""
    for retention in (2, 4, 8):
        s = Server(args=["--retention", str(retention)] + args, keys=[KEY_A], name=name)
        try:
            slug = s.create(sql)
            expiry = _meta(s, slug)["created"] + retention
            r = s.results(slug, 1)
            if time.time() < expiry:
                expect_status(r, 200, "page 1 before its expiry (--retention %d)" % retention)
                eq(jparse(r)["data"], rows, "page 1 before its expiry")
                return s, slug, expiry
        except BaseException:
            s.kill()
            raise
        s.kill()
    raise h.SetupError("the machine is too slow: with --retention 8, creating a query and reading page 1 took over 7 s")


def _sleep_until(wall_s):
    while time.time() < wall_s:
        time.sleep(min(0.1, max(0.001, wall_s - time.time())))


def _gone_from_disk(s, slug, what):
    d = os.path.join(s.state_dir, "queries", slug)
    deadline = time.monotonic() + 5
    while os.path.exists(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    check(not os.path.exists(d), "%s: %s is still on disk" % (what, d))


def test_retention_expires_while_running():
    s, slug, expiry = _served_then_expiry([], "retention", "SELECT 1 AS x", [{"x": 1}])
    with s:
        _sleep_until(expiry)
        expect_error(s.results(slug, 1), 404, "Query not found", "at its expiry (created + --retention)")
        _gone_from_disk(s, slug, "an expired query")


def test_retention_expires_across_restart():
    """A query that expires while the server is down is not served after the restart, and
    its files are deleted."""
    s, slug, expiry = _served_then_expiry([], "retention2", "SELECT 2 AS y", [{"y": 2}])
    with s:
        s.stop()
        _sleep_until(expiry)
        s.start()
        expect_error(s.results(slug, 1), 404, "Query not found", "after a restart past its expiry (created + --retention)")
        _gone_from_disk(s, slug, "a query expired while the server was down")


def test_default_retention_keeps_results_for_a_while():
    with Server(keys=[KEY_A], name="retention-default") as s:
        slug = s.create("SELECT 3 AS z")
        time.sleep(2.5)
        eq(s.page(slug, 1), [{"z": 3}], "results 2.5 s later with the default retention")


# ----------------------------------------------------------------------------- dev key


def _printed(s, text, timeout=3.0):
    """True once `text` shows in the server's stdout or stderr (it may follow the listening line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in s.stdout_text() + "\n" + s.stderr_text():
            return True
        time.sleep(0.05)
    return False


def test_dev_key_created_reused_and_replaced():
    state = h.tmpdir("devkey-state")
    path = os.path.join(state, "dev-key")
    with Server(keys=None, state_dir=state, name="devkey") as s:
        check(os.path.isfile(path), "no %s after starting without keys" % path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        eq(oct(mode), oct(0o600), "dev-key file mode")
        key = open(path).read().strip()
        check(key and not any(c.isspace() for c in key), "dev key looks wrong: %r" % key)
        check(_printed(s, key), "the dev key is not printed at start")
        s.key = key
        s.create("SELECT 1")
        expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=None), 401, "Missing API key. Please provide 'x-api-key' header")
        expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=key + "x"), 401, "Invalid API key")
        s.restart()
        eq(open(path).read().strip(), key, "dev key after restart")
        check(_printed(s, key), "the dev key is not printed on the second start")
        s.create("SELECT 1")
    with Server(keys=["it-configured-key-77"], state_dir=state, name="devkey-replaced") as s:
        expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=key), 401, "Invalid API key", "dev key once keys are configured")
        s.create("SELECT 1")
        check(key not in s.stdout_text() + s.stderr_text(), "the dev key is printed although keys are configured")


# ----------------------------------------------------------------------------- crash safety and shutdown


def _tmp_result(s, slug, min_bytes):
    """The name of the query's result file being written (result.bin.tmp-*) once it holds at
    least min_bytes, or None if the result was completed first."""
    d = os.path.join(s.state_dir, "queries", slug)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = os.listdir(d) if os.path.isdir(d) else []  # (made with the file)
        if "result.bin" in names:
            return None
        for n in names:
            if n.startswith("result.bin.tmp-"):
                try:
                    if os.path.getsize(os.path.join(d, n)) >= min_bytes:
                        return n
                except OSError:
                    pass
        time.sleep(0.005)
    raise AssertionError("no result file of %s is being written after 60 s: %r" % (slug, os.listdir(d) if os.path.isdir(d) else "no directory"))


@h.timeout(150)
def test_sigkill_during_materialisation_never_leaves_partial_result():
    """SIGKILL while a result file is half written: the accepted query is not lost and its
    result is never partial. After the restart the half-written file is gone and the slug
    serves the whole result, exactly (the query ran again, once) — docs/design.md, "Results":
    a crash leaves at worst a query marked queued or running, which is run again."""
    n = 3_000_000
    sql = "SELECT i, repeat('x', 40) AS pad FROM range(%d) t(i) ORDER BY i"
    s = Server(keys=[KEY_A], name="crash")
    try:
        # The kill must land while rows are being written; if a run completes before it is
        # seen half-written (a very fast machine), try again with a new query.
        for attempt in range(3):
            slug = s.create(sql % (n + attempt))
            tmp = _tmp_result(s, slug, 1 << 20)
            if tmp:
                break
        check(tmp, "never saw a result half written (3 queries of %d rows completed first)" % n)
        n += attempt
        reader = threading.Thread(target=lambda: _swallow(lambda: s.results(slug, 1, timeout=20)), daemon=True)
        reader.start()
        s.kill()
        eq(_meta(s, slug).get("state"), "running", "the query's persisted state at the SIGKILL")
    except BaseException:
        s.kill()
        raise
    with Server(keys=[KEY_A], state_dir=s.state_dir, data_dir=s.data_dir, name="crash-after") as s2:
        last = (n + 99) // 100
        r = s2.results(slug, 1, timeout=100)
        expect_status(r, 200, "page 1 of a query accepted before a SIGKILL, after the restart")
        eq(jparse(r)["data"], [{"i": i, "pad": "x" * 40} for i in range(100)], "page 1 after the crash")
        check(not os.path.exists(os.path.join(s2.state_dir, "queries", slug, tmp)), "the half-written %s is still there after the restart" % tmp)
        r = s2.results(slug, last, timeout=100)
        expect_status(r, 200, "last page after the crash")
        eq(jparse(r)["data"], [{"i": i, "pad": "x" * 40} for i in range(100 * (last - 1), n)], "last page %d after the crash" % last)
        eq(s2.page(slug, last + 1), [], "page after the last")
        m = _meta(s2, slug)
        eq((m.get("state"), m.get("attempts")), ("done", 0), "the query's persisted state after its second run")


@h.timeout(150)
def test_sigkill_loses_no_accepted_query():
    """Nothing accepted is lost (docs/design.md): every query that got 200 + a slug before a
    SIGKILL answers after the restart what it would have answered without the crash — a
    finished query its rows, a query failed at run time its execution error, the running and
    the queued ones their rows once run again. Never 404 (lost) or a 5xx."""
    n = 1_000_000_000
    with Server(args=["--workers", "1", "--query-timeout", "120"], keys=[KEY_A], name="crash-accepted") as s:
        done = s.create("SELECT 41 AS k")
        eq(s.page(done, 1), [{"k": 41}], "the finished query before the crash")
        failed = s.create("SELECT CAST('x' || i AS INTEGER) AS v FROM range(3) t(i)")
        details = expect_error(s.results(failed, 1), 400, "Query execution failed", "the failing query before the crash").get("details")
        running = s.create("SELECT sum(i) AS total FROM range(%d) t(i)" % n)
        _wait_meta(s, running, lambda m: m.get("state") == "running", "the slow query starts")
        queued = {s.create("SELECT %d AS k, 'q%d' AS s" % (k, k)): k for k in range(8)}
        # One worker, busy with the slow query: the others are still queued when it dies.
        states = {slug: _meta(s, slug).get("state") for slug in queued}
        eq(_meta(s, running).get("state"), "running", "the slow query at the SIGKILL (it ended too soon)")
        eq(sorted(set(states.values())), ["queued"], "state of the queued queries at the SIGKILL")
        s.kill()
        s.start()
        eq(s.page(done, 1), [{"k": 41}], "the finished query after the crash")
        r = s.results(failed, 1)
        body = expect_error(r, 400, "Query execution failed", "the failing query after the crash")
        eq(body.get("details"), details, "the failing query's details after the crash")
        r = s.results(running, 1, timeout=100)
        expect_status(r, 200, "the query running at the SIGKILL, after the restart")
        eq(r.raw().get("data")[0].get("total"), h.Raw(str(n * (n - 1) // 2)), "its total")
        for slug, k in queued.items():
            r = s.results(slug, 1, timeout=100)
            expect_status(r, 200, "queued query %d after the crash" % k)
            eq(jparse(r)["data"], [{"k": k, "s": "q%d" % k}], "rows of queued query %d" % k)


def _damage_like_a_power_loss(state_dir, accepted):
    """What a power loss may do to the files dapi writes without fsync (docs/design.md,
    "Durability"): a query's directory never reached the disk, its meta.json is torn, its
    result.bin has a byte the disk did not keep, a record of a pack file (small results) has
    one, or the pack file's last record is torn. Applied to a few of the accepted queries each;
    returns what was done to which slug."""
    done = {}
    slugs = sorted(accepted)
    qdir = lambda slug: os.path.join(state_dir, "queries", slug)
    packs = sorted((n for n in os.listdir(os.path.join(state_dir, "queries"))
                    if n.startswith(".pack-")), key=lambda n: int(n[6:]))
    records = h.pack_records(state_dir)
    if packs and len(records) >= 4:
        # the newest pack file: a byte of its second record changed (that record and the
        # ones after it in the file are not read back), or, if it has fewer, its tail torn
        path = os.path.join(state_dir, "queries", packs[-1])
        with open(path, "r+b") as f:
            data = f.read()
            offs, off = [], 0
            while off + 32 <= len(data):
                slen, mlen, _, rlen = struct.unpack_from("<IIIQ", data, off + 4)
                offs.append((off, data[off + 32 : off + 32 + slen].decode()))
                off += 32 + ((slen + mlen + 7) & ~7) + ((rlen + 7) & ~7)
            if len(offs) >= 3:
                i = offs[1][0] + 40
                f.seek(i)
                f.write(bytes([data[i] ^ 0x20]))
                for _, slug in offs[1:]:
                    done[slug] = "pack record damaged (or after one)"
            else:
                f.truncate(len(data) - 3)
                done[offs[-1][1]] = "pack record torn"
    slugs = [slug for slug in slugs if slug not in done]
    for slug in slugs[0:3]:  # directory gone (or never made: a query not run yet has none)
        if os.path.isdir(qdir(slug)):
            for name in os.listdir(qdir(slug)):
                os.unlink(os.path.join(qdir(slug), name))
            os.rmdir(qdir(slug))
        done[slug] = "directory gone"
    for slug in slugs[3:6]:  # meta.json torn (the first one, of a query that had no files, too)
        os.makedirs(qdir(slug), exist_ok=True)
        with open(os.path.join(qdir(slug), "meta.json"), "wb") as f:
            f.write(b'{"version":1,"sl' + b"\0" * 40)
        done[slug] = "meta.json torn"
    torn = 0
    for slug in slugs[6:]:  # result.bin with a changed digit (its structure intact)
        p = os.path.join(qdir(slug), "result.bin")
        if torn == 3 or not os.path.exists(p):
            continue
        with open(p, "r+b") as f:
            data = f.read()
            # a byte in the middle of the pages' frames (data_len: the header's 5th u64)
            i = 64 + int.from_bytes(data[32:40], "little") // 2
            f.seek(i)
            f.write(bytes([data[i] ^ 0x20]))
        done[slug] = "result.bin torn"
        torn += 1
    return done


@h.timeout(150)
def test_sigkill_under_a_stream_of_creations_loses_nothing():
    """Every creation answered 200 + slug before a SIGKILL that lands in a stream of them is
    answered after the restart with its own rows — also when what a power loss could do to
    the files written without fsync is done to some of them (a real power loss cannot be
    simulated here): the creation log restores a lost directory, created.json stands in for a
    torn meta.json, and a torn result is detected (its frames' checksums) and computed again."""
    accepted = {}
    lock = threading.Lock()
    stop = threading.Event()
    s = Server(args=["--workers", "2"], keys=[KEY_A], name="crash-stream")

    def creator(t):
        i = 0
        while not stop.is_set():
            k = t * 100000 + i
            i += 1
            # most results are small (packed); every fifth fills a page (files of its own)
            n = 100 if i % 5 == 0 else 1
            try:
                r = s.create_resp({"sql_query": "SELECT %d AS k, 'q%d' AS s FROM range(%d)" % (k, k, n)})
            except AssertionError:
                return  # the server is gone
            if r.status == 200:
                with lock:
                    accepted[jparse(r)["query_slug"]] = (k, n)
            if i % 3 == 0:  # some are read (so finished) before the kill
                try:
                    s.results(jparse(r)["query_slug"], 1)
                except (AssertionError, KeyError, ValueError):
                    return

    try:
        threads = [threading.Thread(target=creator, args=(t,), daemon=True) for t in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(accepted) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        s.kill()  # while the creators still create
        stop.set()
        for t in threads:
            t.join(30)
    except BaseException:
        stop.set()
        s.kill()
        raise
    check(len(accepted) >= 60, "only %d creations accepted in 60 s" % len(accepted))
    damaged = _damage_like_a_power_loss(s.state_dir, accepted)
    kinds = sorted(set(v for v in damaged.values() if not v.startswith("pack record")))
    eq(kinds, ["directory gone", "meta.json torn", "result.bin torn"], "kinds of damage applied")
    check(any(v.startswith("pack record") for v in damaged.values()), "a pack record damaged")
    with Server(args=["--workers", "2"], keys=[KEY_A], state_dir=s.state_dir, data_dir=s.data_dir, name="crash-stream-after") as s2:
        for slug, (k, n) in sorted(accepted.items()):
            r = s2.results(slug, 1, timeout=60)
            expect_status(r, 200, "accepted query %s (%s) after the SIGKILL" % (slug, damaged.get(slug, "untouched")))
            eq(jparse(r)["data"], [{"k": k, "s": "q%d" % k}] * n, "rows of %s (%s)" % (slug, damaged.get(slug, "untouched")))
        err = s2.stderr_text()
        check("restored from the creation log" in err, "no restore from the creation log in the log:\n%s" % h.tail_text(err))


def _swallow(fn):
    try:
        fn()
    except BaseException:
        pass


@h.alone
@h.timeout(90)
def test_sigterm_with_request_in_flight_exits_zero():
    grace = 5
    s = Server(args=["--shutdown-grace", str(grace), "--query-timeout", "120"], keys=[KEY_A], name="graceful")
    slug = s.create("SELECT count(*) AS n FROM range(1000000000000)")
    box = {}

    def reader():
        try:
            box["resp"] = s.results(slug, 1, timeout=60)
        except AssertionError as e:
            box["err"] = str(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(1.0)
    check(t.is_alive(), "the slow query's results returned early: %r" % box)
    s.stop(timeout=grace + 10)
    check(s.stop_seconds <= grace + 5, "exit took %.1f s with --shutdown-grace %d" % (s.stop_seconds, grace))
    t.join(10)
    resp = box.get("resp")
    if resp is not None:
        expect_error(resp, (500, 503, 504), what="in-flight results during shutdown")


@h.timeout(150)
def test_sigterm_with_running_and_queued_queries_exits_within_grace():
    """One query running (its filter drops every row) and one queued: SIGTERM must still
    end the process within --shutdown-grace. Several rounds: the failure is intermittent."""
    grace = 2
    args = ["--workers", "1", "--max-queued-queries", "1", "--query-timeout", "60", "--shutdown-grace", str(grace)]
    for rnd in range(8):
        s = Server(args=args, keys=[KEY_A], name="grace-queued")
        s.create("SELECT count(*) AS n FROM range(1000000000000) WHERE range = -1")
        s.create("SELECT count(*) AS n FROM range(1000000000000) WHERE range = -2")
        time.sleep(0.3 + 0.2 * (rnd % 3))
        try:
            s.stop(timeout=grace + 6)
        except AssertionError as e:
            raise AssertionError("round %d: %s" % (rnd + 1, e))


@h.alone
def test_sigterm_idle_exits_promptly():
    s = Server(keys=[KEY_A], name="idle")
    s.create("SELECT 1")
    s.stop()
    check(s.stop_seconds < 5, "idle server took %.1f s to exit on SIGTERM" % s.stop_seconds)


# ----------------------------------------------------------------------------- start-up errors


def _start_expect_failure(extra, setting, env=None, replace=None):
    data, state = h.tmpdir("bad-data"), h.tmpdir("bad-state")
    base = {"--host": "127.0.0.1", "--port": "0", "--data-dir": data, "--state-dir": state}
    base.update(replace or {})
    args = [h.BIN, "serve"]
    for k, v in base.items():
        args += [k, v]
    args += extra
    e = h.base_env()
    e["DAPI_API_KEYS"] = "it-badflag-key"
    e.update(env or {})
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=h.tmpdir("cwd-bad"), start_new_session=True)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return "%s: still running after 10 s (should fail at start); stdout=%r" % (" ".join(args[2:]), out[-300:])
    text = (out + err).decode("utf-8", "replace")
    lines = [l for l in text.splitlines() if l.strip()]
    what = " ".join(extra) + (" env %r" % env if env else "") + (" %r" % replace if replace else "")
    if p.returncode <= 0:
        return "%s: exit status %s (expected > 0); output %r" % (what, h.describe_rc(p.returncode), text[-300:])
    if len(lines) != 1:
        return "%s: expected a one-line message, got %d lines: %r" % (what, len(lines), lines[:5])
    if setting.lower() not in lines[0].lower():
        return "%s: message does not name %r: %r" % (what, setting, lines[0])
    return None


def test_bad_flags_fail_at_start():
    cases = [
        (["--port", "abc"], "port", None, None),
        (["--port", "70000"], "port", None, None),
        (["--port"], "port", None, None),
        (["--bogus"], "bogus", None, None),
        (["--max-body-bytes", "-5"], "max-body-bytes", None, None),
        (["--max-body-bytes", "10x"], "max-body-bytes", None, None),
        (["--query-timeout", "abc"], "query-timeout", None, None),
        (["--max-json-depth", "0"], "max-json-depth", None, None),
        (["--log-format", "xml"], "log-format", None, None),
        (["--api-keys-file", "/nonexistent/it-keys"], "api-keys-file", None, None),
        ([], "data-dir", None, {"--data-dir": "/nonexistent/it-data"}),
        ([], "DAPI_LOG_FORMAT", {"DAPI_LOG_FORMAT": "xml"}, None),
    ]
    bad = [m for m in (_start_expect_failure(*c) for c in cases) if m]
    check(not bad, "%d of %d bad configurations not rejected properly:\n  %s" % (len(bad), len(cases), "\n  ".join(bad)))


def _start_status(extra, env=None, replace=None):
    """Starts `dapi serve` expecting it to stop at once; returns (exit status, output)."""
    data, state = h.tmpdir("cfg-data"), h.tmpdir("cfg-state")
    base = {"--host": "127.0.0.1", "--port": "0", "--data-dir": data, "--state-dir": state}
    base.update(replace or {})
    args = [h.BIN, "serve"]
    for k, v in base.items():
        args += [k, v]
    args += extra
    e = h.base_env()
    e["DAPI_API_KEYS"] = "it-cfg-key"
    e.update(env or {})
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=h.tmpdir("cwd-cfg"), start_new_session=True)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, (out + err).decode("utf-8", "replace")
    return p.returncode, (out + err).decode("utf-8", "replace")


def test_configuration_errors_exit_2():
    """Regression (issue 9): every configuration error exits 2, as docs/configuration.md says
    — --memory-limit lots, a bad --emulate-faults, a missing --data-dir and other unusable
    paths exited 1 — with one line naming the setting and what it accepts (the environment
    variables' messages gave no range); a server that cannot start for another reason (its
    port is taken) exits 1."""
    a_file = os.path.join(h.tmpdir("cfg-file"), "plain-file")
    h.write_file(a_file, "not a directory\n")
    lake = h.tmpdir("cfg-lake")
    cases = [
        (["--memory-limit", "lots"], None, None, ["--memory-limit", "'lots'", "a size in bytes"]),
        ([], {"DAPI_MEMORY_LIMIT": "lots"}, None, ["DAPI_MEMORY_LIMIT", "a size in bytes"]),
        ([], {"DAPI_WORKERS": "0"}, None, ["DAPI_WORKERS", "an integer from 1 to 256"]),
        ([], {"DAPI_BACKEND": "s3"}, None, ["DAPI_BACKEND", "one of local|nekt"]),
        ([], {"DAPI_EMULATE_NEKT": "maybe"}, None, ["DAPI_EMULATE_NEKT", "true or false"]),
        (["--emulate-nekt", "--emulate-faults", "foo=bar"], None, None,
         ["--emulate-faults", "foo=bar", "keys: path, method, first, rate, seed, status, retry_after, latency_ms, body, expire"]),
        (["--emulate-nekt", "--emulate-faults", "status=abc"], None, None, ["--emulate-faults", "an HTTP status from 100 to 599"]),
        (["--emulate-faults", "path"], None, None, ["--emulate-faults", "not key=value"]),
        ([], None, {"--data-dir": "/nonexistent/it-data"}, ["--data-dir"]),
        ([], None, {"--data-dir": a_file}, ["--data-dir"]),
        ([], None, {"--state-dir": a_file}, ["--state-dir"]),
        ([], None, {"--state-dir": os.path.join(lake, "state")}, ["state dir", "data dir"]),
        (["--api-keys-file", "/nonexistent/it-keys"], None, None, ["api-keys-file"]),
        (["--backend", "nekt", "--emulate-nekt"], None, None, ["--emulate-nekt"]),
        (["--backend", "nekt", "--nekt-url", "ftp://example.com"], None, None, ["--nekt-url", "http:// or https://"]),
    ]
    bad = []
    for extra, env, replace, says in cases:
        if replace and replace.get("--state-dir", "").startswith(lake):
            replace = dict(replace, **{"--data-dir": lake})
        rc, text = _start_status(extra, env, replace)
        what = " ".join(extra) + (" env %r" % env if env else "") + (" %r" % replace if replace else "")
        lines = [l for l in text.splitlines() if l.strip()]
        if rc != 2:
            bad.append("%s: exit status %s, expected 2: %r" % (what, rc, text[-300:]))
        elif len(lines) != 1:
            bad.append("%s: expected a one-line message: %r" % (what, lines[:4]))
        else:
            missing = [w for w in says if w not in lines[0]]
            if missing:
                bad.append("%s: the message lacks %r: %r" % (what, missing, lines[0]))
    check(not bad, "%d of %d configuration errors:\n  %s" % (len(bad), len(cases), "\n  ".join(bad)))
    # not a configuration error: the port is in use -> 1
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        rc, text = _start_status([], None, {"--port": str(taken.getsockname()[1])})
    finally:
        taken.close()
    eq(rc, 1, "exit status when the port is in use (output %r)" % text[-300:])


def test_env_configures_and_flags_win():
    with Server(keys=[KEY_A], env={"DAPI_LOG_FORMAT": "json"}, name="env-json") as s:
        s.request("GET", "/api/nope-env")
        text = s.wait_stderr(lambda t: "/api/nope-env" in t)
        lines = [l for l in text.splitlines() if l.strip()]
        check(lines, "no log output")
        for l in lines:
            try:
                json.loads(l)
            except ValueError:
                raise AssertionError("DAPI_LOG_FORMAT=json but a log line is not JSON: %r" % l)
    with Server(args=["--log-format", "text"], keys=[KEY_A], env={"DAPI_LOG_FORMAT": "json"}, name="env-flag") as s:
        s.request("GET", "/api/nope-flag")
        text = s.wait_stderr(lambda t: "/api/nope-flag" in t)
        line = [l for l in text.splitlines() if "/api/nope-flag" in l]
        check(line, "no access log line")
        try:
            json.loads(line[0])
            raise AssertionError("--log-format text should win over DAPI_LOG_FORMAT=json: %r" % line[0])
        except ValueError:
            pass


# ----------------------------------------------------------------------------- CLI basics


def test_cli_version_and_help():
    rc, out, err = h.run_cli(["--version"])
    eq(rc, 0, "`dapi --version` exit status")
    check(any(c.isdigit() for c in out), "`dapi --version` prints no version: %r" % (out + err))
    rc, out, err = h.run_cli(["help"])
    eq(rc, 0, "`dapi help` exit status")
    check("serve" in out + err, "`dapi help` does not mention serve: %r" % (out + err)[:300])


def test_cli_health():
    with Server(keys=[KEY_A], name="cli-health") as s:
        rc, out, err = h.run_cli(["health", "--url", "http://127.0.0.1:%d" % s.port])
        eq(rc, 0, "`dapi health` against a running server (output %r)" % (out + err))
        port = s.port
    rc, out, err = h.run_cli(["health", "--url", "http://127.0.0.1:%d" % port], timeout=60)
    eq(rc, 1, "`dapi health` against a stopped server (output %r)" % (out + err))
