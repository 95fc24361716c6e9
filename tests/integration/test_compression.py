"""Compressed result pages (docs/api.md "Compression and caching"): pages are stored as
zstd frames and sent as they are to clients that accept zstd, decoded for the others — the
same bytes after decoding; Vary, ETag / If-None-Match / 304 and Cache-Control on finished
pages only; files of the previous format (DAPIRES1) still served after an upgrade."""

import gzip
import os
import re
import shutil
import struct
import subprocess
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY = "it-compress-key-41f7"
SQL_10K = ("SELECT i AS id, 'row ' || i AS name, i * 1.5 AS price, "
           "CASE WHEN i % 3 = 0 THEN 'héllo ✓ 日本' ELSE NULL END AS note FROM range(10000) t(i)")


def _zstd_decode(data):
    exe = shutil.which("zstd")
    if exe is None:
        raise h.Skip("the zstd command is not installed (scripts/deps.sh installs it)")
    p = subprocess.run([exe, "-dc", "-q"], input=data, capture_output=True, timeout=30)
    check(p.returncode == 0, "zstd -d refused the answer: %r" % p.stderr[-300:])
    return p.stdout


def _decode(coding, body):
    return _zstd_decode(body) if coding == "zstd" else gzip.decompress(body) if coding == "gzip" else body


def _page(s, slug, page, headers=None):
    return s.api("GET", "/api/queries/%s/results?page_number=%s" % (slug, page),
                 headers=headers or {})


def _ready(s, sql):
    """Creates the query and waits for the end of its run (a page past the end waits for it:
    earlier pages may be served while it runs, without caching headers)."""
    slug = s.create(sql)
    r = _page(s, slug, 10 ** 12)
    expect_status(r, 200, "the end of %s" % sql[:60])
    return slug


def _result_file(s, slug):
    return os.path.join(s.state_dir, "queries", slug, "result.bin")


def _coded_like_plain(s, slug, ae, coding, magic):
    """Pages 1, 2, 57, 100, 101 and far past the end, asked for with Accept-Encoding ae: sent
    with Content-Encoding coding (starting with magic) and, decoded, byte for byte the plain
    page; Vary on both; full pages at least twice smaller."""
    for page in (1, 2, 57, 100, 101, 7000000000):
        plain = _page(s, slug, page)
        c = _page(s, slug, page, {"Accept-Encoding": ae})
        expect_status(plain, 200, "plain page %s" % page)
        expect_status(c, 200, "%s page %s" % (coding, page))
        eq(plain.headers.get("content-encoding"), None, "plain page has no Content-Encoding")
        eq(c.headers.get("content-encoding"), coding, "Content-Encoding of page %s" % page)
        for r in (plain, c):
            eq(r.headers.get("vary"), "Accept-Encoding", "Vary on page %s" % page)
            eq(r.headers.get("content-type"), "application/json", "Content-Type")
        check(c.body[:len(magic)] == magic, "%s data: %r" % (coding, c.body[:8]))
        eq(int(c.headers.get("content-length")), len(c.body), "Content-Length")
        eq(_decode(coding, c.body), plain.body, "page %s decoded from %s is byte-identical to the plain one" % (page, coding))
        if page in (1, 2, 57):
            check(len(c.body) < len(plain.body) / 2,
                  "page %s: %d %s bytes for %d" % (page, len(c.body), coding, len(plain.body)))


def test_zstd_and_plain_are_the_same_bytes():
    with Server(keys=[KEY], name="compress") as s:
        slug = _ready(s, SQL_10K)
        _coded_like_plain(s, slug, "gzip, deflate, zstd", "zstd", b"\x28\xb5\x2f\xfd")
        body = jparse(_page(s, slug, 100))
        eq(len(body["data"]), 100, "rows of page 100")
        eq(body["data"][0]["note"], "héllo ✓ 日本", "unicode survives")
        eq(jparse(_page(s, slug, 101))["data"], [], "past the end: no rows")
        # the same page again: served from the decoded-page cache, still the same
        eq(_page(s, slug, 57).body, _page(s, slug, 57).body, "cached page unchanged")


def test_gzip_and_plain_are_the_same_bytes():
    """A client that takes gzip and not zstd (Python's requests sends "gzip, deflate") gets
    the page gzipped: decoded, byte for byte the plain answer; its own ETag; 304 on it."""
    with Server(keys=[KEY], name="compress-gzip") as s:
        slug = _ready(s, SQL_10K)
        _coded_like_plain(s, slug, "gzip, deflate", "gzip", b"\x1f\x8b")
        # the same page again: the gzipped body from the page cache, the same bytes
        eq(_page(s, slug, 57, {"Accept-Encoding": "gzip"}).body, _page(s, slug, 57, {"Accept-Encoding": "gzip"}).body,
           "cached gzip page unchanged")
        # ETag per representation: plain, zstd and gzip differ; each 304s only for its own
        tags = {ae: _page(s, slug, 3, {"Accept-Encoding": ae}).headers.get("etag") for ae in ("identity", "zstd", "gzip")}
        eq(len(set(tags.values())), 3, "three representations, three ETags: %r" % tags)
        r = _page(s, slug, 3, {"Accept-Encoding": "gzip", "If-None-Match": tags["gzip"]})
        eq((r.status, r.body, r.headers.get("etag")), (304, b"", tags["gzip"]), "304 for the gzip ETag")
        for ae in ("identity", "zstd"):
            expect_status(_page(s, slug, 3, {"Accept-Encoding": ae, "If-None-Match": tags["gzip"]}), 200,
                          "the gzip ETag on a %s request" % ae)
        # a page of 256 KiB or more goes plain (gzipping it would hold an HTTP event thread
        # for milliseconds); one just below goes gzipped
        for width, coding in ((3000, None), (2000, "gzip")):
            big = _ready(s, "SELECT i, repeat(chr(65 + (i %% 26)::INT), %d) AS s FROM range(100) t(i)" % width)
            plain = _page(s, big, 1)
            r = _page(s, big, 1, {"Accept-Encoding": "gzip"})
            eq(r.headers.get("content-encoding"), coding, "a page of %d bytes to a gzip client" % len(plain.body))
            eq(_decode(coding, r.body), plain.body, "the page of %d bytes" % len(plain.body))


def _read_page(s, slug, headers, out, i):
    """Reads page 1 through a connection of its own (nothing kept but its length and
    digest)."""
    status, hdrs, n, digest = h.read_digest(
        s.port, "/api/queries/%s/results?page_number=1" % slug,
        dict(headers, **{"x-api-key": KEY}))
    out[i] = (status, hdrs.get("content-length"), n, digest, hdrs.get("etag"), hdrs.get("content-encoding"))


@h.timeout(180)
def test_a_huge_page_is_decoded_as_it_is_sent():
    """A page of 100 rows of repeated text decodes to 100 MB from a few KB stored. Decoded
    whole for each plain reader (and not kept: too large for the cache), three readers held
    300 MB at once, memory every key's queries need (the security review's four readers of a
    400 MB page made another key's query fail 413). Such a page is now decoded as it is sent:
    the same bytes, with their Content-Length and ETag, and the server's memory grows by far
    less than one page while three clients read it."""
    import threading

    sql = ("SELECT i, repeat(chr(65 + (i %% 26)::INT), %d) || i::VARCHAR AS s "
           "FROM range(100) t(i)" % 1000000)
    with Server(keys=[KEY], name="compress-huge") as s:
        slug = _ready(s, sql)
        z = _page(s, slug, 1, {"Accept-Encoding": "zstd"})
        expect_status(z, 200, "the zstd page")
        check(len(z.body) < 1000000, "stored small: %d bytes" % len(z.body))
        whole = _zstd_decode(z.body)
        check(len(whole) > 100000000, "decodes to %d bytes" % len(whole))
        import hashlib

        want = hashlib.sha256(whole).hexdigest()
        del whole
        base = h.rss_kb(s.proc.pid)
        out = [None] * 3
        ts = [threading.Thread(target=_read_page, args=(s, slug, {}, out, i)) for i in range(3)]
        for t in ts:
            t.start()
        peak = base
        while any(t.is_alive() for t in ts):
            peak = max(peak, h.rss_kb(s.proc.pid))
            time.sleep(0.01)
        for t in ts:
            t.join()
        for status, length, n, digest, etag, coding in out:
            eq(coding, None, "a plain reader's Content-Encoding")
            eq(status, 200, "a plain reader")
            eq(int(length), n, "Content-Length is the body's length")
            eq(digest, want, "the plain body is the zstd one decoded")
            check(etag, "an ETag on the streamed page")
        check(peak - base < 60 * 1024,
              "three readers of a %d MB page raised the server's memory by %d MB"
              % (n // 1000000, (peak - base) // 1024))
        # a client that takes gzip only: the same plain stream (gzipping 100 MB for one answer
        # would hold it whole), the identity ETag
        g = [None]
        _read_page(s, slug, {"Accept-Encoding": "gzip"}, g, 0)
        eq(g[0][2:], out[0][2:], "a gzip-only reader gets the plain page (length, digest, ETag, no Content-Encoding)")
        # the envelope is the usual one
        r = _page(s, slug, 1)
        eq(r.headers.get("etag"), out[0][4], "the same ETag as a page sent whole would have")
        body = jparse(r)
        eq(len(body["data"]), 100, "rows")
        eq(body["data"][7]["s"], "H" * 1000000 + "7", "a row whole")


def test_accept_encoding_variants():
    """zstd where accepted (sent as stored), else gzip where accepted (gzipped once), else
    plain; q=0 refuses a coding, its own entry wins over *."""
    with Server(keys=[KEY], name="compress-ae") as s:
        slug = _ready(s, "SELECT i FROM range(250) t(i)")
        plain = _page(s, slug, 2).body
        cases = [
            ("zstd", "zstd"), ("ZSTD", "zstd"), ("*", "zstd"), ("gzip, *;q=0.5", "zstd"),
            ("gzip, deflate, br, zstd", "zstd"), ("gzip;q=1, zstd;q=0.1", "zstd"),
            ("zstd;q=0", None), ("zstd; q=0.000, gzip", "gzip"), ("*;q=0", None),
            ("*, zstd;q=0", "gzip"), ("gzip, br", "gzip"), ("gzip, deflate", "gzip"),
            ("x-gzip", "gzip"), ("GZIP", "gzip"), ("gzip;q=0, *;q=0.5", "zstd"),
            ("*;q=0, gzip", "gzip"), ("gzip;q=0", None), ("deflate, br", None),
            ("identity", None), ("", None), ("zstd;q=2", None), ("gzip;q=2", None),
            ("identity;q=0, zstd", "zstd"),
        ]
        for ae, coding in cases:
            r = _page(s, slug, 2, {"Accept-Encoding": ae})
            expect_status(r, 200, "Accept-Encoding: %r" % ae)
            eq(r.headers.get("content-encoding"), coding, "Content-Encoding for Accept-Encoding: %r" % ae)
            eq(_decode(coding, r.body), plain, "body for %r" % ae)
        # http.client sends Accept-Encoding: identity; a request without the header at all
        with s.raw() as c:
            c.send(h.build_request("GET", "/api/queries/%s/results?page_number=2" % slug,
                                   headers={"x-api-key": KEY}, port=s.port))
            st, hd, body = c.read_response()
            eq(st, 200, "no Accept-Encoding")
            check("content-encoding" not in {k.lower() for k in dict(hd)}, "plain without the header: %r" % (hd,))


def test_keepalive_request_starts_clean():
    """One connection: a page answer's headers, request id and body never reach the next
    request on the connection (each request reuses the previous one's memory)."""
    with Server(keys=[KEY], name="compress-keepalive") as s:
        slug = _ready(s, SQL_10K)
        page = "/api/queries/%s/results?page_number=1" % slug
        with s.raw() as c:
            c.send(h.build_request("GET", page, headers={"x-api-key": KEY, "X-Request-Id": "first-req-1"},
                                   port=s.port))
            first = c.read_response()
            expect_status(first, 200, "page 1")
            eq(first.headers.get("x-request-id"), "first-req-1", "the client's request id")
            for name in ("etag", "cache-control", "vary", "server-timing"):
                check(first.headers.get(name), "page 1 has %s" % name)
            c.send(h.build_request("POST", "/api/queries", body=b"{not json", port=s.port,
                                   headers={"x-api-key": KEY, "Content-Type": "application/json"}))
            bad = c.read_response()
            expect_error(bad, 400, what="a bad body on the same connection")
            c.send(h.build_request("GET", "/api/health", port=s.port))
            health = c.read_response()
            expect_status(health, 200, "health on the same connection")
            eq(jparse(health), {"status": "ok"}, "health body")
            rid = health.headers.get("x-request-id") or ""
            check(rid and rid != "first-req-1", "a new request id: %r" % rid)
            for name in ("etag", "cache-control", "vary", "content-encoding"):
                eq(health.headers.get(name), None, "health after a page carries no %s" % name)
            c.send(h.build_request("GET", page, headers={"x-api-key": KEY}, port=s.port))
            again = c.read_response()
            expect_status(again, 200, "page 1 again")
            eq(again.body, first.body, "page 1 again, same bytes")
            eq(again.headers.get("etag"), first.headers.get("etag"), "same ETag")


def _same_cache_control(resp, cc, what):
    """resp's Cache-Control is cc but for max-age, the retention left, which may be a second
    less when a second ticks between the two answers."""
    got = resp.headers.get("cache-control", "")
    age = lambda v: int(v.split("max-age=")[1].split(",")[0]) if "max-age=" in v else -1
    eq(got.replace("max-age=%d" % age(got), "max-age=N"), cc.replace("max-age=%d" % age(cc), "max-age=N"), what)
    check(0 <= age(cc) - age(got) <= 1, "%s: max-age %d, first %d" % (what, age(got), age(cc)))


def test_etag_and_304():
    with Server(keys=[KEY], name="compress-etag") as s:
        slug = _ready(s, "SELECT i FROM range(250) t(i)")
        plain = _page(s, slug, 1)
        z = _page(s, slug, 1, {"Accept-Encoding": "zstd"})
        tag, ztag = plain.headers.get("etag"), z.headers.get("etag")
        check(tag and tag.startswith('"') and tag.endswith('"'), "a strong ETag: %r" % tag)
        check(ztag and ztag != tag, "the zstd representation has its own ETag: %r %r" % (tag, ztag))
        cc = plain.headers.get("cache-control", "")
        check(cc.startswith("private, max-age=") and cc.endswith(", immutable"), "Cache-Control: %r" % cc)
        age = int(cc.split("max-age=")[1].split(",")[0])
        check(0 < age <= 86400, "max-age within the retention: %d" % age)
        _same_cache_control(z, cc, "same Cache-Control compressed")
        other = _page(s, slug, 2).headers.get("etag")
        check(other != tag, "each page its own ETag")
        # the same again: stable
        eq(_page(s, slug, 1).headers.get("etag"), tag, "stable ETag")

        def cond(inm, ae=None):
            hd = {"If-None-Match": inm}
            if ae:
                hd["Accept-Encoding"] = ae
            return _page(s, slug, 1, hd)

        for inm in (tag, "W/" + tag, '"nope", ' + tag, '"a", "b",%s' % tag, "*"):
            r = cond(inm)
            eq(r.status, 304, "If-None-Match: %s" % inm)
            eq(r.body, b"", "304 has no body")
            eq(r.headers.get("etag"), tag, "304 carries the ETag")
            _same_cache_control(r, cc, "304 carries Cache-Control")
            eq(r.headers.get("vary"), "Accept-Encoding", "304 carries Vary")
        r = cond(ztag, "zstd")
        eq(r.status, 304, "the zstd ETag for a zstd request")
        eq(r.headers.get("etag"), ztag, "its ETag")
        for inm, ae in ((ztag, None), (tag, "zstd"), ('"nope"', None), ("", None), (tag[1:-1], None)):
            r = cond(inm, ae)
            eq(r.status, 200, "If-None-Match: %r with Accept-Encoding %r" % (inm, ae))
        # another page's ETag does not match this one
        eq(cond(other).status, 200, "page 2's ETag on page 1")
        # a new result (even with the same rows) has new ETags
        slug2 = _ready(s, "SELECT i FROM range(250) t(i) -- again")
        check(_page(s, slug2, 1).headers.get("etag") not in (tag, ztag), "new result, new ETag")


def _no_caching(r, what):
    for hname in ("etag", "cache-control"):
        eq(r.headers.get(hname), None, "%s on %s" % (hname, what))


def test_no_caching_headers_on_errors_and_unfinished_pages():
    with Server(keys=[KEY], args=["--result-wait", "1", "--query-timeout", "60"],
                name="compress-nocache") as s:
        r = _page(s, "dapi-query-doesnotexist0000000000", 1, {"If-None-Match": "*"})
        expect_error(r, 404, "Query not found")
        _no_caching(r, "404")
        slug = _ready(s, "SELECT 1 AS x")
        r = _page(s, slug, "abc")
        eq(r.status, 400, "bad page")
        _no_caching(r, "400")
        # a failed query
        bad = s.create("SELECT CAST('x' AS INTEGER) AS n")
        r = _page(s, bad, 1, {"If-None-Match": "*"})
        check(r.status >= 400, "failed query: %s" % r.short())
        _no_caching(r, "a failed query's answer")
        # a query still running: answered 504 after --result-wait, with no caching headers
        slow = s.create("SELECT count(*) AS n FROM range(1000000000000)")
        r = _page(s, slow, 1, {"If-None-Match": "*", "Accept-Encoding": "zstd"})
        eq(r.status, 504, "still running: %s" % r.short())
        _no_caching(r, "an unfinished query's answer")
        eq(r.headers.get("content-encoding"), None, "errors are not compressed")


def test_pages_of_a_running_query_have_no_caching_headers():
    """A page served while its query still runs (progressive pages) is plain, without ETag or
    Cache-Control, whatever the request accepts; once the run is done it has them."""
    with Server(keys=[KEY], args=["--result-wait", "120"], name="compress-running") as s:
        running = s.create("SELECT i, md5(repeat(i::VARCHAR, 600))[1:4] AS h FROM range(300000) t(i)")
        r = _page(s, running, 1, {"If-None-Match": "*", "Accept-Encoding": "zstd, gzip"})
        expect_status(r, 200, "page 1 while running")
        if re.search(r"query %s (done|failed)" % running, s.stderr_text()):
            raise h.Skip("the query ended before page 1 was answered (a fast machine)")
        _no_caching(r, "a page of a running query")
        eq(r.headers.get("content-encoding"), None, "a page of a running query is sent plain")
        eq(len(jparse(r)["data"]), 100, "a whole page")
        _page(s, running, 10 ** 12)  # waits for the end of the run
        done = _page(s, running, 1, {"Accept-Encoding": "zstd"})
        check(done.headers.get("etag"), "ETag once finished")
        eq(done.headers.get("content-encoding"), "zstd", "compressed once finished")
        eq(_zstd_decode(done.body), r.body, "the page served early is the page served after")


def test_on_disk_smaller_than_plain():
    with Server(keys=[KEY], name="compress-size") as s:
        slug = _ready(s, SQL_10K)
        rows_bytes = 0
        for p in range(1, 101):
            body = jparse(_page(s, slug, p))
            eq(len(body["data"]), 100, "page %d rows" % p)
            plain = _page(s, slug, p).body
            # the rows as the page carries them (between "data":[ and ]})
            rows_bytes += len(plain) - len(plain.split(b'"data":[', 1)[0]) - len(b'"data":[') - 2
        size = os.path.getsize(_result_file(s, slug))
        dapires1 = 64 + rows_bytes + 8 * 101
        check(size < dapires1 / 3, "result.bin is %d bytes; the rows as text take %d" % (size, dapires1))
        with open(_result_file(s, slug), "rb") as f:
            eq(f.read(8), b"DAPIRES2", "the file's format")


def _v1_file(pages_rows):
    """A DAPIRES1 file (the format before compression) holding these pages' rows."""
    rows = b"".join(pages_rows)
    index, at = [0], 0
    for p in pages_rows:
        at += len(p)
        index.append(at)
    nrows = sum(p.count(b"},{") + 1 for p in pages_rows if p)
    header = b"DAPIRES1" + struct.pack("<7Q", nrows, len(pages_rows), 64, len(rows), 64 + len(rows),
                                       64 + len(rows) + 8 * len(index), 0)
    return header + rows + b"".join(struct.pack("<Q", i) for i in index)


def test_dapires1_results_survive_the_upgrade():
    """A state dir written by an older binary (rows stored as text) is still served."""
    with Server(keys=[KEY], name="compress-v1") as s:
        slug = _ready(s, "SELECT i AS n, 'x' || i AS s FROM range(250) t(i)")
        pages = [_page(s, slug, p).body for p in (1, 2, 3)]
        rows = []
        for b in pages:
            start = b.index(b'"data":[') + len(b'"data":[')
            rows.append(b[start:-2])
        s.stop()
        path = _result_file(s, slug)
        with open(path, "wb") as f:
            f.write(_v1_file(rows))
        s.start()
        for p in (1, 2, 3):
            r = _page(s, slug, p)
            expect_status(r, 200, "DAPIRES1 page %d" % p)
            eq(r.body, pages[p - 1], "DAPIRES1 page %d as before" % p)
            z = _page(s, slug, p, {"Accept-Encoding": "zstd"})
            eq(z.headers.get("content-encoding"), None, "DAPIRES1 pages are sent as they are stored")
            eq(z.body, pages[p - 1], "the same for a zstd client")
            check(z.headers.get("etag"), "ETag on a DAPIRES1 page")
        r = _page(s, slug, 1, {"If-None-Match": _page(s, slug, 1).headers.get("etag")})
        eq(r.status, 304, "If-None-Match on a DAPIRES1 page")
