"""Streaming export: GET /api/queries/{slug}/export?format=csv|tsv|ndjson|json — the whole
finished result in one chunked answer, values equal to the pages' (the server's engine reading
the same lake), bounded server memory for millions of rows, a client that leaves stops the
work (slot and descriptors back), owner-only, running and failed queries, HEAD, bad formats."""

import csv
import http.client
import io
import json
import os
import socket
import time
import urllib.parse

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY = "it-export-key-1"
OTHER = "it-export-key-2"
QUIET = ["--log-level", "warn"]

TRICKY_SQL = (
    "SELECT i, CASE WHEN i % 4 = 0 THEN NULL WHEN i % 4 = 1 THEN '' ELSE "
    "'a,\"b\"},{' || chr(10) || 'c' || chr(9) || '\\' || ' é😀 ' || i END AS s, "
    "[i, i + 1] AS l, {'k': 'v' || i} AS st, i / 3 AS d, (i * 1.5)::DECIMAL(18,3) AS dec, "
    "DATE '2024-01-01' + i::INTEGER AS day FROM range(250) t(i)"
)


def export(srv, slug, fmt, key="", method="GET", timeout=120):
    path = "/api/queries/%s/export?format=%s" % (urllib.parse.quote(slug, safe=""), fmt)
    return srv.api(method, path, key=key, timeout=timeout)


def rows_of(srv, slug):
    """Every row through the results pages (the reference values), as raw JSON objects."""
    rows = []
    p = 1
    while True:
        r = srv.results(slug, p)
        expect_status(r, 200, "page %d" % p)
        data = json.loads(r.body)["data"]
        rows += data
        if len(data) < 100:
            return rows
        p += 1


def field(v):
    """A value as the csv export writes it (before quoting)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return None  # numbers: compared on their JSON text below


def check_headers(r, slug, ext, ctype):
    expect_status(r, 200, ext)
    eq(r.headers.get("content-type"), ctype, "%s Content-Type" % ext)
    eq(r.headers.get("content-disposition"), 'attachment; filename="%s.%s"' % (slug, ext), "%s Content-Disposition" % ext)
    eq(r.headers.get("transfer-encoding"), "chunked", "%s transfer" % ext)


@h.timeout(120)
def test_formats_equal_the_pages():
    with Server(keys=[KEY, OTHER], data_dir=h.sample_lake(), args=QUIET, name="export") as s:
        for sql in (TRICKY_SQL, "SELECT * FROM nekt_raw.orders ORDER BY 1 LIMIT 1234"):
            slug = s.create(sql)
            want = rows_of(s, slug)
            names = list(want[0].keys())
            r = export(s, slug, "ndjson")
            check_headers(r, slug, "ndjson", "application/x-ndjson")
            lines = r.body.decode("utf-8").split("\n")
            eq(lines[-1], "", "ndjson ends with LF")
            eq([json.loads(x) for x in lines[:-1]], want, "ndjson rows")
            r = export(s, slug, "json")
            check_headers(r, slug, "json", "application/json")
            eq(json.loads(r.body), want, "json rows")
            r = export(s, slug, "csv")
            check_headers(r, slug, "csv", "text/csv; charset=utf-8")
            text = r.body.decode("utf-8")
            got = list(csv.reader(io.StringIO(text, newline="")))
            eq(got[0], names, "csv header")
            eq(len(got) - 1, len(want), "csv rows")
            for row, w in zip(got[1:], want):
                for name, cell in zip(names, row):
                    v = w[name]
                    f = field(v)
                    if v is None:
                        check(cell == "", "NULL as an empty field: %r" % cell)
                    elif f is not None:
                        eq(cell, f, "csv %s" % name)
                    else:
                        eq(json.loads(cell), v, "csv number %s" % name)
            if sql == TRICKY_SQL:  # NULL is an empty field, "" a quoted one
                check('\r\n0,,' in text and '\r\n1,"",' in text, "NULL vs empty string in csv: %r" % text[:300])
            r = export(s, slug, "tsv")
            check_headers(r, slug, "tsv", "text/tab-separated-values; charset=utf-8")
            lines = r.body.decode("utf-8").split("\n")
            eq(lines[0].split("\t"), names, "tsv header")
            eq(len(lines) - 2, len(want), "tsv rows")

            def untsv(c):
                if c == "\\N":
                    return None
                return c.replace("\\\\", "\0").replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")

            for line, w in zip(lines[1:], want):
                cells = [untsv(c) for c in line.split("\t")]
                for name, cell in zip(names, cells):
                    v = w[name]
                    f = field(v)
                    if v is None or f is not None:
                        eq(cell, f, "tsv %s" % name)
                    else:
                        eq(json.loads(cell), v, "tsv number %s" % name)
        # an empty result: header only / [] / nothing
        slug = s.create("SELECT 1 AS a, 'x' AS b WHERE false")
        eq(export(s, slug, "csv").body, b"a,b\r\n", "empty csv")
        eq(export(s, slug, "tsv").body, b"a\tb\n", "empty tsv")
        eq(export(s, slug, "json").body, b"[]\n", "empty json")
        eq(export(s, slug, "ndjson").body, b"", "empty ndjson")


@h.timeout(120)
def test_errors_owner_head_and_states():
    args = QUIET + ["--result-wait", "1"]
    with Server(keys=[KEY, OTHER], data_dir=h.sample_lake(), args=args, name="export-errors") as s:
        slug = s.create("SELECT 42 AS x")
        r = export(s, slug, "xml")
        expect_error(r, 400, "Invalid format")
        check("csv, tsv, ndjson, json" in jparse(r).get("details", ""), "400 names the formats: %s" % r.short())
        expect_error(s.api("GET", "/api/queries/%s/export" % slug), 400, "Invalid format")
        # owner only: another key's slug is not found, as for results
        expect_error(export(s, slug, "csv", key=OTHER), 404, "Query not found")
        expect_error(export(s, "dapi-query-nosuchquery0000000000", "csv"), 404, "Query not found")
        expect_status(export(s, slug, "csv", key=None), 401, "no key")
        r = export(s, slug, "csv", method="HEAD")
        check_headers(r, slug, "csv", "text/csv; charset=utf-8")
        eq(r.body, b"", "HEAD has no body")
        r = s.api("POST", "/api/queries/%s/export?format=csv" % slug)
        expect_status(r, 405, "POST")
        eq(r.headers.get("allow"), "GET, HEAD", "Allow")
        # a failed query: its failure, as results answer it
        bad = s.create("SELECT error('boom ' || 1)")
        res = s.results(bad, 1)
        exp = export(s, bad, "csv")
        eq(exp.status, res.status, "failed query status (results: %s)" % res.short())
        eq(jparse(exp).get("details"), jparse(res).get("details"), "failure details")
        eq(jparse(exp).get("error"), jparse(res).get("error"), "failure error")
        # a running query: waited for within --result-wait, then 504 as results
        slow = s.create("SELECT max(md5(repeat(i::VARCHAR, 600))) AS m FROM range(50000000) t(i)")
        r = export(s, slow, "ndjson")
        expect_status(r, 504, "still running after --result-wait")


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@h.timeout(300)
def test_millions_of_rows_bounded_memory():
    n = 3_000_000
    with Server(keys=[KEY], args=QUIET, name="export-big") as s:
        slug = s.create("SELECT i, 'row ' || i AS s, i * 0.5 AS h FROM range(%d) t(i)" % n)
        expect_status(s.results(slug, 1, timeout=240), 200, "page 1")
        expect_status(s.results(slug, n // 100 + 1, timeout=240), 200, "past the end (the run is over)")
        pid = s.proc.pid
        base = h.rss_kb(pid)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
        conn.request("GET", "/api/queries/%s/export?format=ndjson" % slug, headers={"x-api-key": KEY})
        r = conn.getresponse()
        eq(r.status, 200, "status")
        peak, lines, last, total, tail = base, 0, None, 0, b""
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            buf = tail + chunk
            lines += buf.count(b"\n")
            tail = buf[buf.rfind(b"\n") + 1:]
            last = buf
            peak = max(peak, h.rss_kb(pid))
            time.sleep(0.001)  # a slower client than the server: backpressure
        conn.close()
        eq(lines, n, "rows exported")
        eq(json.loads(last.rstrip(b"\n").rsplit(b"\n", 1)[-1]), {"i": n - 1, "s": "row %d" % (n - 1), "h": (n - 1) * 0.5}, "last row")
        check(total > 100 * 1024 * 1024, "%d bytes exported" % total)
        # the body is > 100 MB; the server may grow by its stream buffer, a page and the
        # mapped result file pages it touches, never by the body's size
        check(peak - base < 64 * 1024, "server RSS grew %d kB during a %d-byte export (base %d kB)" % (peak - base, total, base))


def _export_digest(s, slug, fmt, out, i):
    """Reads an export through a connection of its own: (status, bytes, sha256)."""
    status, _, n, digest = h.read_digest(
        s.port, "/api/queries/%s/export?format=%s" % (slug, fmt), {"x-api-key": KEY})
    out[i] = (status, n, digest)


@h.timeout(240)
def test_huge_pages_export_with_bounded_memory():
    """A page of 100 rows of repeated text decodes to 100 MB from a few KB stored. The export
    decoded each page whole and converted it whole: four exports of such a result at once held
    four decoded pages and four converted ones, 800 MB, the memory every key's queries need.
    A page that large is now decoded and converted a piece at a time (one row at most held for
    csv/tsv, none for ndjson/json): the same bytes, and the server grows by far less than one
    page while the four read it."""
    import hashlib
    import threading

    big = 1000000
    sql = ("SELECT i, repeat(chr(65 + (i %% 26)::INT), %d) || i::VARCHAR AS s "
           "FROM range(100) t(i)" % big)
    want = {}
    rows = [(i, chr(65 + i % 26) * big + str(i)) for i in range(100)]
    want["csv"] = b"i,s\r\n" + b"".join(b"%d,%s\r\n" % (i, v.encode()) for i, v in rows)
    want["tsv"] = b"i\ts\n" + b"".join(b"%d\t%s\n" % (i, v.encode()) for i, v in rows)
    objs = [b'{"i":%d,"s":"%s"}' % (i, v.encode()) for i, v in rows]
    want["ndjson"] = b"".join(o + b"\n" for o in objs)
    want["json"] = b"[" + b",".join(objs) + b"]\n"
    digests = {f: (len(b), hashlib.sha256(b).hexdigest()) for f, b in want.items()}
    del want, objs, rows
    with Server(keys=[KEY], args=QUIET, name="export-huge") as s:
        slug = s.create(sql)
        expect_status(s.results(slug, 2, timeout=120), 200, "past the end: the run is over")
        pid = s.proc.pid
        base = h.rss_kb(pid)
        fmts = ["csv", "tsv", "ndjson", "json"]
        out = [None] * len(fmts)
        ts = [threading.Thread(target=_export_digest, args=(s, slug, f, out, i))
              for i, f in enumerate(fmts)]
        for t in ts:
            t.start()
        peak = base
        while any(t.is_alive() for t in ts):
            peak = max(peak, h.rss_kb(pid))
            time.sleep(0.01)
        for t in ts:
            t.join()
        for f, got in zip(fmts, out):
            check(got is not None, "%s export read" % f)
            status, n, digest = got
            eq(status, 200, "%s status" % f)
            eq((n, digest), digests[f], "%s body: the rows, every byte" % f)
        check(peak - base < 64 * 1024,
              "four exports of a 100 MB page raised the server's memory by %d MB"
              % ((peak - base) // 1024))
        # Parquet goes through the same conversion (its NDJSON file): the rows come back whole
        r = export(s, slug, "parquet")
        expect_status(r, 200, "parquet")
        eq(r.body[:4], b"PAR1", "a Parquet file")


@h.timeout(300)
def test_client_leaving_stops_the_worker():
    args = QUIET + ["--max-queries-per-key", "1"]
    with Server(keys=[KEY], args=args, name="export-leave") as s:
        slug = s.create("SELECT i, repeat('x', 50) AS s FROM range(2000000) t(i)")
        expect_status(s.results(slug, 20001, timeout=240), 200, "past the end (the run is over)")
        # a small result first: the file small results are packed in stays open from the first
        # one on (one per process), as the creates below would open it
        expect_status(s.results(s.create("SELECT 0"), 1), 200, "SELECT 0")
        pid = s.proc.pid
        time.sleep(0.5)
        before = fds(pid)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            sock.sendall(("GET /api/queries/%s/export?format=csv HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n" % (slug, KEY)).encode())
            got = b""
            while len(got) < 200_000:
                more = sock.recv(65536)
                if not more:
                    break
                got += more
            check(got.startswith(b"HTTP/1.1 200"), "export started: %r" % got[:100])
            sock.close()
            # the worker stops and gives the key's only slot back: a create is admitted
            deadline = time.time() + 10
            while True:
                r = s.create_resp({"sql_query": "SELECT 1"})
                if r.status == 200:
                    # its run ends: the key's only slot is free for the next export
                    expect_status(s.results(jparse(r)["query_slug"], 1), 200, "SELECT 1")
                    break
                check(r.status == 429 and time.time() < deadline, "slot not back after the client left: %s" % r.short())
                time.sleep(0.1)
        deadline = time.time() + 10
        while fds(pid) > before and time.time() < deadline:
            time.sleep(0.1)
        check(fds(pid) <= before, "descriptors leaked: %d before, %d after" % (before, fds(pid)))


# ----------------------------------------------------------------------------- the CLI


def run_cli(args, url, key=KEY, timeout=120):
    import subprocess

    e = h.base_env()
    e["DAPI_URL"] = url
    e["DAPI_API_KEY"] = key
    p = subprocess.run([h.BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout, env=e, cwd=h.root_dir())
    if p.returncode != 0:
        raise AssertionError("dapi %s: exit %d: %s" % (" ".join(args)[:200], p.returncode, p.stderr.decode("utf-8", "replace")))
    return p.stdout


class OldServer:
    """A proxy to a real server that answers 404 on the export route, as a server from before
    it does; counts the requests it forwards."""

    def __init__(self, port):
        import http.server
        import threading

        self.seen = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                outer.seen.append(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if "/export" in self.path:
                    data, status = b'{"error":"Not found"}', 404
                    ctype = "application/json"
                else:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "content-type")}
                    c.request(self.command, self.path, body=body, headers=hdrs)
                    r = c.getresponse()
                    data, status, ctype = r.read(), r.status, r.getheader("Content-Type") or "application/json"
                    c.close()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@h.timeout(240)
def test_cli_uses_the_export_and_falls_back():
    with Server(keys=[KEY], data_dir=h.sample_lake(), args=["--log-level", "info"], name="export-cli") as s:
        url = "http://127.0.0.1:%d" % s.port
        queries = [TRICKY_SQL, "SELECT * FROM nekt_raw.orders ORDER BY 1 LIMIT 1200",
                   "SELECT 1 AS a WHERE false", "SELECT * FROM range(300) t(i)"]
        old = OldServer(s.port)
        try:
            for sql in queries:
                for fmt in ("csv", "tsv", "json", "ndjson", "table"):
                    n0 = s.stderr_text().count("/export?")
                    exp = run_cli(["query", "-q", "-f", fmt, sql], url)
                    text = s.wait_stderr(lambda t: t.count("/export?") > n0, timeout=5)
                    check(text.count("/export?") == n0 + 1, "the CLI did not use the export")
                    paged = run_cli(["query", "-q", "--paging", "-f", fmt, sql], url)
                    eq(exp, paged, "%s output through the export vs page by page (%s)" % (fmt, sql[:60]))
                    old.seen.clear()
                    fell = run_cli(["query", "-q", "-f", fmt, sql], old.url)
                    eq(fell, paged, "%s output from a server without the export" % fmt)
                    check(any("/export" in p for p in old.seen) and any("/results" in p for p in old.seen),
                          "fallback requests: %r" % old.seen[:5])
        finally:
            old.close()


# ----------------------------------------------------------------------------- parquet

TYPES_SQL = (
    "SELECT i::INTEGER AS i32, (i * 1000000007)::BIGINT AS i64, (i::HUGEINT * 12345678901234567890) AS huge, "
    "(i * 1.125)::DECIMAL(38,10) + 0.0000000001 AS dec, i / 7 AS dbl, i % 2 = 0 AS flag, "
    "DATE '2024-02-28' + i::INTEGER AS day, TIMESTAMP '2024-01-01 00:00:00.123' + INTERVAL (i) SECOND AS ts, "
    "CASE WHEN i % 5 = 0 THEN NULL ELSE 'é😀,\"x\"' || i END AS txt, [i, NULL, i + 1] AS lst, "
    "{'a': i, 'b': 'v' || i} AS st, MAP {'k': i} AS mp, "
    "CASE WHEN i % 3 = 0 THEN NULL ELSE i END AS maybe FROM range(2500) t(i)"
)


def _columns(s, slug):
    r = s.api("GET", "/api/queries/%s" % slug)
    expect_status(r, 200, "status of %s" % slug)
    return jparse(r)["columns"]


def _one(s, sql):
    slug = s.create(sql)
    rows = s.page(slug, 1)
    return rows, slug


@h.timeout(300)
def test_parquet_real_types_and_values():
    import shutil

    lake = h.tmpdir("lake-parquet")
    src = h.sample_lake()
    for layer in os.listdir(src):
        shutil.copytree(os.path.join(src, layer), os.path.join(lake, layer))
    os.makedirs(os.path.join(lake, "exp"))
    with Server(keys=[KEY], data_dir=lake, args=QUIET, name="export-parquet") as s:
        tables = [("types", TYPES_SQL)]
        for layer in ("nekt_raw", "nekt_service", "nekt_trusted"):
            for f in sorted(os.listdir(os.path.join(lake, layer))):
                t = f.split(".")[0]
                tables.append(("%s_%s" % (layer, t), "SELECT * FROM %s.%s" % (layer, t)))
        for name, sql in tables:
            slug = s.create(sql)
            r = export(s, slug, "parquet")
            expect_status(r, 200, "parquet of %s" % name)
            eq(r.headers.get("content-type"), "application/vnd.apache.parquet", "parquet Content-Type")
            eq(r.headers.get("content-disposition"), 'attachment; filename="%s.parquet"' % slug, "parquet Content-Disposition")
            check(r.body[:4] == b"PAR1", "not a Parquet file: %r" % r.body[:8])
            with open(os.path.join(lake, "exp", name + ".parquet"), "wb") as f:
                f.write(r.body)
            cols = _columns(s, slug)
            # the same columns, of the same DuckDB types, read back from the file
            rows, back = _one(s, "SELECT * FROM exp.%s LIMIT 1" % name)
            # (Parquet has no 128-bit integer: HUGEINT is written as DECIMAL(38,0), exactly)
            want = [dict(c, type="DECIMAL(38,0)") if c["type"] == "HUGEINT" else c for c in cols]
            eq(_columns(s, back), want, "%s: columns and types of the Parquet file" % name)
            # the same values: the result's (a timestamp in the pages has milliseconds,
            # docs/api.md "JSON values"), row for row, both ways
            sel = ", ".join(
                "date_trunc('millisecond', \"%s\") AS \"%s\"" % (c["name"], c["name"]) if c["type"].startswith("TIMESTAMP") else '"%s"' % c["name"]
                for c in cols
            )
            src_sql = sql if name == "types" else "SELECT %s FROM (%s)" % (sel, sql)
            rows, _ = _one(
                s,
                "SELECT (SELECT count(*) FROM (%s EXCEPT ALL SELECT * FROM exp.%s)) AS a, "
                "(SELECT count(*) FROM (SELECT * FROM exp.%s EXCEPT ALL %s)) AS b, "
                "(SELECT count(*) FROM exp.%s) AS n, (SELECT count(*) FROM (%s)) AS m" % (src_sql, name, name, src_sql, name, sql),
            )
            eq(rows[0]["a"], 0, "%s: rows of the result missing from the Parquet file (%r)" % (name, rows))
            eq(rows[0]["b"], 0, "%s: rows of the Parquet file not in the result (%r)" % (name, rows))
            eq(rows[0]["n"], rows[0]["m"], "%s: row count" % name)
        # an empty result is a valid Parquet file with its columns
        slug = s.create("SELECT 1::INTEGER AS a, 'x' AS b WHERE false")
        r = export(s, slug, "parquet")
        expect_status(r, 200, "empty parquet")
        with open(os.path.join(lake, "exp", "empty.parquet"), "wb") as f:
            f.write(r.body)
        rows, back = _one(s, "SELECT count(*) AS n FROM exp.empty")
        eq(rows, [{"n": 0}], "empty parquet rows")
        # nothing left behind in <state-dir>/tmp
        eq([x for x in os.listdir(os.path.join(s.state_dir, "tmp")) if x.startswith("export-")], [], "temporary files")


@h.timeout(120)
def test_parquet_under_a_small_memory_limit():
    """The conversion let DuckDB's JSON reader take objects of up to 1 GiB, and its buffers are
    twice that: under --memory-limit 1GB every Parquet export failed (413, "failed to allocate
    data of size 2.0 GiB"), even of one small row. The reader now allows the longest row the
    export holds: small and 20 MB rows export under 1 GB, and read back whole."""
    lake = h.tmpdir("lake-parquet-small")
    os.makedirs(os.path.join(lake, "exp"))
    with Server(keys=[KEY], data_dir=lake, args=QUIET + ["--memory-limit", "1GB"],
                name="export-parquet-small") as s:
        for name, sql in [("small", "SELECT range AS i, range * 2 AS j FROM range(1000)"),
                          ("wide", "SELECT 7 AS i, repeat('w', 20000000) AS s")]:
            slug = s.create(sql)
            r = export(s, slug, "parquet")
            expect_status(r, 200, "parquet of %s under --memory-limit 1GB" % name)
            check(r.body[:4] == b"PAR1" and r.body[-4:] == b"PAR1", "a Parquet file: %r" % r.body[:8])
            with open(os.path.join(lake, "exp", name + ".parquet"), "wb") as f:
                f.write(r.body)
        rows, _ = _one(s, "SELECT count(*) AS n, sum(j) AS j FROM exp.small")
        eq(rows, [{"n": 1000, "j": 999000}], "the small export's rows")
        rows, _ = _one(s, "SELECT i, length(s) AS n FROM exp.wide")
        eq(rows, [{"i": 7, "n": 20000000}], "the wide row, whole")


@h.timeout(200)
def test_shutdown_does_not_wait_for_a_stalled_client():
    # a client that stops reading mid-export: SIGTERM still ends the server within its grace
    # and a moment, not after --connection-timeout (120 s here)
    args = QUIET + ["--shutdown-grace", "1", "--connection-timeout", "120"]
    s = Server(keys=[KEY], args=args, name="export-stall")
    try:
        slug = s.create("SELECT i, repeat('y', 100) AS s FROM range(1000000) t(i)")
        expect_status(s.results(slug, 10001, timeout=120), 200, "past the end (the run is over)")
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(("GET /api/queries/%s/export?format=ndjson HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n" % (slug, KEY)).encode())
        check(sock.recv(100).startswith(b"HTTP/1.1 200"), "export started")
        time.sleep(1)  # the server's buffers fill; its writer waits for room
        t0 = time.monotonic()
        s.stop(timeout=20)
        check(time.monotonic() - t0 < 10, "stopped in %.1f s" % (time.monotonic() - t0))
        sock.close()
    finally:
        if s.proc and s.proc.poll() is None:
            s.kill()


# ------------------------------------------------------------------- while the query runs

# Slow per row (an md5 over ~3 KB) so the run lasts seconds while its pages are published,
# rows in order (as tests/integration/test_progressive.py).
LIVE_ROWS = 200_000
LIVE_SQL = "SELECT i, md5(repeat(i::VARCHAR, 600))[1:4] AS h FROM range(%d) t(i)"


def _run_over(s, slug):
    import re
    return re.search(r"query %s (done|failed)" % re.escape(slug), s.stderr_text()) is not None


def _open_export(s, slug, fmt):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
    conn.request("GET", "/api/queries/%s/export?format=%s" % (slug, fmt), headers={"x-api-key": KEY})
    return conn, conn.getresponse()


def _read_until_cut(r, limit=1 << 20):
    """Reads the body to its end; returns (bytes read, whether it was cut short)."""
    got = b""
    try:
        while True:
            chunk = r.read1(limit) if hasattr(r, "read1") else r.read(limit)
            if not chunk:
                return got, False
            got += chunk
    except (http.client.IncompleteRead, ConnectionError) as e:
        return got + getattr(e, "partial", b""), True


@h.timeout(180)
def test_export_streams_while_the_query_runs():
    with Server(keys=[KEY], args=["--log-level", "info"], name="export-live") as s:
        for fmt in ("ndjson", "csv"):
            slug = s.create(LIVE_SQL % LIVE_ROWS + (" WHERE '%s' <> ''" % fmt))
            conn, r = _open_export(s, slug, fmt)
            eq(r.status, 200, "export of a running query")
            first = r.read1(1 << 16)
            check(first and not _run_over(s, slug), "the first rows came only after the run ended")
            body, cut = _read_until_cut(r)
            conn.close()
            check(not cut, "%s body cut" % fmt)
            body = first + body
            check(_run_over(s, slug), "the body ended before the run")
            if fmt == "ndjson":
                got = [json.loads(x) for x in body.decode().splitlines()]
                # every row exactly once, in order: the same rows as the pages after the run
                eq(len(got), LIVE_ROWS, "rows")
                eq([x["i"] for x in got], list(range(LIVE_ROWS)), "rows in order, each once")
                eq(got, rows_of(s, slug), "rows equal the pages'")
            else:
                lines = body.decode().split("\r\n")
                eq(lines[0], "i,h", "csv header (the columns from the first page)")
                eq(lines[-1], "", "csv ends with CRLF")
                eq(len(lines) - 2, LIVE_ROWS, "csv rows")
                eq([int(x.split(",")[0]) for x in lines[1:-1]], list(range(LIVE_ROWS)), "csv rows in order")
            # the same export once the run is over: the same bytes
            r2 = export(s, slug, fmt)
            eq(r2.body, body, "%s body while running vs after" % fmt)


def _answered_after_run(s, slug, path, out, i):
    """GET path; out[i] = (status, whether the run was over when the answer's head came,
    body length, sha256)."""
    over = []
    status, _, n, digest = h.read_digest(s.port, path, {"x-api-key": KEY},
                                         on_head=lambda: over.append(_run_over(s, slug)))
    out[i] = (status, over[0], n, digest)


@h.timeout(240)
def test_huge_live_page_is_read_once_the_run_ends():
    """Page 1 of a query still running was decoded whole for every reader while the run went
    on, and copied again into the answer: four readers of a 100 MB page held 800 MB. A page
    that large is now read from the finished result once the run ends, decoded as it is sent
    (its memory measured in test_huge_pages_export_with_bounded_memory and
    test_compression.test_a_huge_page_is_decoded_as_it_is_sent); a csv export, which takes
    the column names from page 1, waits for the end too and still writes its header. Pages
    below 4 MiB are still served while the run goes (test_export_streams_while_the_query_runs,
    test_progressive)."""
    import hashlib
    import threading

    big, slow = 1000000, 400_000
    sql = ("SELECT i, CASE WHEN i < 100 THEN repeat(chr(65 + (i %% 26)::INT), %d) || i::VARCHAR "
           "ELSE md5(repeat(i::VARCHAR, 600))[1:4] END AS s FROM range(%d) t(i)" % (big, slow))
    with Server(keys=[KEY], args=["--log-level", "info"], name="export-live-huge") as s:
        slug = s.create(sql)
        time.sleep(1.0)  # page 1 is written; the slow rows go on
        check(not _run_over(s, slug), "the run is still going (make it slower)")
        out = [None] * 4
        paths = ["/api/queries/%s/results?page_number=1" % slug] * 3 + \
                ["/api/queries/%s/export?format=csv" % slug]
        ts = [threading.Thread(target=_answered_after_run, args=(s, slug, p, out, i))
              for i, p in enumerate(paths)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for i, (status, over, n, digest) in enumerate(out):
            eq(status, 200, "reader %d" % i)
            check(over, "reader %d answered only once the run was over" % i)
        eq(len({o[3] for o in out[:3]}), 1, "the three readers got the same page")
        again = s.results(slug, 1)
        check(len(again.body) > 100 * big, "page 1 is %d bytes" % len(again.body))
        eq(hashlib.sha256(again.body).hexdigest(), out[0][3], "the page read again after the run")
        eq(json.loads(again.body)["data"][7], {"i": 7, "s": "H" * big + "7"}, "a row whole")
        r = export(s, slug, "csv")
        eq(r.body[:5], b"i,s\r\n", "the csv header")
        eq(out[3][2:], (len(r.body), hashlib.sha256(r.body).hexdigest()),
           "the export asked for while the query ran equals the one after the run")


@h.timeout(180)
def test_export_of_a_query_failing_mid_run_is_cut():
    # the run stops at --max-result-rows after its first pages were streamed
    args = ["--log-level", "info", "--max-result-rows", str(LIVE_ROWS - 30_000)]
    with Server(keys=[KEY], args=args, name="export-live-fail") as s:
        slug = s.create(LIVE_SQL % LIVE_ROWS)
        conn, r = _open_export(s, slug, "ndjson")
        eq(r.status, 200, "export of a running query")
        body, cut = _read_until_cut(r)
        conn.close()
        check(cut, "a failed run's export ended as if complete (%d bytes)" % len(body))
        check(0 < body.count(b"\n") < LIVE_ROWS - 30_000, "%d rows before the cut" % body.count(b"\n"))
        # asked again: the failure itself, as results answer it
        expect_error(export(s, slug, "ndjson"), 413, what="export after the failure")
        # the CLI says why, as a failed query (exit 4), not as a network error
        import subprocess
        e = h.base_env()
        e["DAPI_URL"] = "http://127.0.0.1:%d" % s.port
        e["DAPI_API_KEY"] = KEY
        for fmt in ("ndjson", "csv"):
            p = subprocess.run([h.BIN, "query", "-q", "-f", fmt, LIVE_SQL % LIVE_ROWS + " WHERE '%s' <> ''" % fmt],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               timeout=120, env=e, cwd=h.root_dir())
            eq(p.returncode, 4, "CLI exit code (%s): %s" % (fmt, p.stderr.decode()))
            err = p.stderr.decode()
            check("the export stopped after" in err and "--max-result-rows" in err, "CLI message: %s" % err)


@h.timeout(120)
def test_http10_export_ends_with_the_close_at_once():
    """To an HTTP/1.0 client a streamed body ends with the connection: the close must come
    at once, not when the sweeper closes the idle connection 10 s later (it did, now and then:
    libmicrohttpd's close waited for its thread's next event). Another client's connection
    stays open meanwhile, kept alive, as in a busy server."""
    with Server(keys=[KEY], name="export-http10") as s:
        side = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        slugs = [s.create("SELECT range AS n FROM range(1000) WHERE range >= %d" % i) for i in range(8)]
        for slug in slugs:
            s.results(slug)  # (finished)
        for i, slug in enumerate(slugs):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            t0 = time.monotonic()
            c.sendall(("GET /api/queries/%s/export?format=ndjson HTTP/1.0\r\nx-api-key: %s\r\n\r\n"
                       % (slug, KEY)).encode())
            got = b""
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                got += b
            took = time.monotonic() - t0
            c.close()
            head, _, body = got.partition(b"\r\n\r\n")
            check(head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), "status: %r" % head[:40])
            eq(body.count(b"\n"), 1000 - i, "rows of export %d" % (i + 1))
            check(took < 5, "export %d ended after %.1f s" % (i + 1, took))
        side.close()


@h.timeout(180)
def test_cancel_ends_a_streaming_export():
    """The client sees the cut at once, every time: it used to see it only when the idle
    connection was closed by the sweeper, 10 s later (the first cut of a server was quick,
    the next ones mostly not: libmicrohttpd's close waited for its thread's next event, and
    the client's other connection, kept alive, made none)."""
    with Server(keys=[KEY], args=["--log-level", "info"], name="export-live-cancel") as s:
        headers = {"x-api-key": KEY, "Content-Type": "application/json"}
        for i in range(4):
            # one kept-alive connection creates and cancels, as a client library's would
            ctl = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            # long enough to be cancelled mid-run (each its own query: no reuse)
            ctl.request("POST", "/api/queries", body=json.dumps({"sql_query": LIVE_SQL % (3_000_000 + i)}),
                        headers=headers)
            c = ctl.getresponse()
            slug = json.loads(c.read())["query_slug"]
            conn, r = _open_export(s, slug, "ndjson")
            eq(r.status, 200, "export of a running query")
            first = r.read1(1 << 16)
            check(first, "first rows")
            t0 = time.monotonic()
            ctl.request("DELETE", "/api/queries/%s" % slug, headers=headers)
            d = ctl.getresponse()
            d.read()
            eq(d.status, 200, "DELETE")
            body, cut = _read_until_cut(r)
            took = time.monotonic() - t0
            check(cut, "the export of a cancelled query ended as if complete")
            check(took < 5, "cut %d took %.1f s" % (i + 1, took))
            expect_error(export(s, slug, "ndjson"), 410, what="export after the cancellation")


@h.timeout(180)
def test_export_of_a_running_query_with_one_slot_per_key():
    # the run holds the key's only slot: the export cannot take one to follow it, so it waits
    # for the end (which gives the slot back) and sends the whole result, as before
    args = ["--log-level", "info", "--max-queries-per-key", "1"]
    with Server(keys=[KEY], args=args, name="export-live-one-slot") as s:
        slug = s.create(LIVE_SQL % LIVE_ROWS)
        conn, r = _open_export(s, slug, "ndjson")
        eq(r.status, 200, "export of a running query, one slot per key")
        body, cut = _read_until_cut(r)
        conn.close()
        check(not cut, "body cut")
        eq(body.count(b"\n"), LIVE_ROWS, "rows")
        eq(body, export(s, slug, "ndjson").body, "the same body once the run is over")
