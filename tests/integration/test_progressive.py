"""Progressive pages: a page of a query still running is served as soon as it is complete
(never a partial page); a later page waits for its rows, a page past the end for the end of
the run; the pages served early are the bytes served after the run. A run that fails after
its first page was served answers later requests with the failure."""

import http.client
import json
import re
import threading
import time
import urllib.parse

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY = "it-progressive-key-7c2e"

ROWS = 200_000
PAGES = ROWS // 100
# Slow per row (an md5 over ~3 KB), so the run takes seconds while its rows stream: DuckDB
# hands over rows in order as the writer fetches them, so page 1 is complete long before the
# last row. Small rows: the result stays a few MB.
SLOW_SQL = "SELECT i, md5(repeat(i::VARCHAR, 600))[1:4] AS h FROM range(%d) t(i)" % ROWS


class Pages:
    """GETs pages on one keep-alive connection (thousands of them stay quick)."""

    def __init__(self, srv, slug):
        self.srv, self.slug = srv, slug
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)

    def get(self, page):
        path = "/api/queries/%s/results?page_number=%d" % (urllib.parse.quote(self.slug), page)
        self.conn.request("GET", path, headers={"x-api-key": KEY})
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self):
        self.conn.close()


def _done(srv, slug):
    return re.search(r"query %s (done|failed)" % re.escape(slug), srv.stderr_text()) is not None


def _request_in_thread(srv, slug, page):
    """Starts GET page in a thread; the result dict gets status, body, and whether the run
    had ended (logged) when the answer came."""
    out = {}

    def run():
        r = srv.results(slug, page, timeout=120)
        out["done_then"] = _done(srv, slug)
        out["status"], out["body"] = r.status, r.body

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@h.timeout(120)
def test_first_page_while_running():
    with Server(keys=[KEY], name="progressive") as s:
        slug = s.create(SLOW_SQL)
        # identical query: shares the run (single-flight), and its pages
        r = s.api("POST", "/api/queries", body={"sql_query": SLOW_SQL})
        expect_status(r, 200, "identical query")
        follower = jparse(r)["query_slug"]
        eq(r.headers.get("x-dapi-reused"), "true", "the identical query shares the run")
        last_t, last = _request_in_thread(s, slug, PAGES)
        past_t, past = _request_in_thread(s, slug, 10 ** 6)
        pages = Pages(s, slug)
        st, body = pages.get(1)
        done_at_page1 = _done(s, slug)
        last_pending, past_pending = last_t.is_alive(), past_t.is_alive()
        eq(st, 200, "page 1 of a running query")
        check(not done_at_page1, "page 1 was answered only after the run ended")
        check(last_pending, "the last page was answered before page 1: %r" % last)
        check(past_pending, "a page past the end was answered while running: %r" % past)
        j = json.loads(body)
        eq(sorted(j), ["data", "page", "query_slug"], "page body fields")
        eq((j["query_slug"], j["page"], len(j["data"])), (slug, 1, 100), "page 1")
        eq(j["data"][0]["i"], 0, "first row")
        fst, fbody = Pages(s, follower).get(1)
        eq(fst, 200, "page 1 of the query sharing the run")
        eq(json.loads(fbody)["data"], j["data"], "the shared run's page 1")
        # every page, in order, while it runs: each complete (100 rows) when served
        early = {1: body}
        served_running = 1
        for p in range(2, PAGES + 1):
            st, b = pages.get(p)
            eq(st, 200, "page %d" % p)
            early[p] = b
            rows = json.loads(b)["data"]
            if len(rows) != 100:
                raise AssertionError("page %d has %d rows" % (p, len(rows)))
            served_running += not _done(s, slug)
        check(served_running > 1, "only page 1 was served before the end")
        st, b = pages.get(PAGES + 1)
        eq((st, json.loads(b)["data"]), (200, []), "the page after the last")
        last_t.join(60)
        past_t.join(60)
        eq(last.get("status"), 200, "last page")
        eq(last["body"], early[PAGES], "last page (waited for)")
        eq(past.get("status"), 200, "page past the end")
        eq(json.loads(past["body"])["data"], [], "page past the end (empty)")
        check(past["done_then"], "the page past the end was answered before the run ended")
        # after the run: the same bytes, from the result file
        check(_done(s, slug), "the run has ended")
        for p in range(1, PAGES + 1):
            st, b = pages.get(p)
            if (st, b) != (200, early[p]):
                raise AssertionError("page %d after the run differs from the page served early:"
                                     " %d %r / %r" % (p, st, b[:200], early[p][:200]))
        pages.close()
        # the concatenation is the whole result, in order
        allrows = [row for p in range(1, PAGES + 1) for row in json.loads(early[p])["data"]]
        eq(len(allrows), ROWS, "rows")
        eq([row["i"] for row in allrows[:3]] + [allrows[-1]["i"]], [0, 1, 2, ROWS - 1], "order")


@h.timeout(120)
def test_failure_after_first_page():
    # --max-result-rows stops the run after page 1 was served: later requests get the failure
    args = ["--max-result-rows", str(ROWS - 1000)]
    with Server(keys=[KEY], args=args, name="progressive-fail") as s:
        slug = s.create(SLOW_SQL)
        pages = Pages(s, slug)
        st, body = pages.get(1)
        done_at_page1 = _done(s, slug)
        eq(st, 200, "page 1 of a running query")
        check(not done_at_page1, "page 1 was answered only after the run ended")
        eq(len(json.loads(body)["data"]), 100, "page 1 rows")
        pages.close()
        r = s.results(slug, PAGES, timeout=120)  # waits for the end: the failure
        expect_error(r, 413, what="a page after the run failed")
        check("--max-result-rows" in r.body.decode(), "the failure says why: " + r.short())
        expect_error(s.results(slug, 1), 413, what="page 1 after the run failed")
