#!/usr/bin/env python3
"""Time to page 1 vs time to the whole result, for one query run afresh (bench/run.sh).

    bench/first-page.py URL KEY SQL [RUNS]

Each run, in this one process (no curl or python start-up inside the timings): POST the
query with `Cache-Control: no-cache` (a fresh run, never a reuse of an earlier result),
GET page 1 (served as soon as its 100 rows are written: progressive pages), then GET a page
past the end, answered (empty) only once the run has ended. Both times count from the POST.
Then as many reuse hits: the same POST without `Cache-Control` (it must answer
`X-Dapi-Reused: true`: the last fresh run's result is shared) and GET page 1, timed from
the POST.
Prints one line: median page-1 ms, median whole-run ms, median ratio, median reuse-hit ms
(POST + page 1), its ratio to the median fresh page-1 ms, then each fresh run's
"page1/whole" in ms. Standard library only; every request has a time limit.
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse


def request(host, port, method, path, key, body=None, headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        h = {"x-api-key": key}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        request.headers = r.headers
        return r.status, r.read()
    finally:
        conn.close()


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url, key, sql = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname, u.port
    firsts, wholes, ratios, each = [], [], [], []
    for _ in range(runs):
        body = json.dumps({"sql_query": sql}).encode()
        t0 = time.monotonic()
        st, b = request(host, port, "POST", "/api/queries", key, body,
                        {"Content-Type": "application/json", "Cache-Control": "no-cache"})
        if st != 200:
            sys.exit("first-page: POST -> %d: %s" % (st, b[:300]))
        slug = json.loads(b)["query_slug"]
        path = "/api/queries/%s/results?page_number=" % slug
        st, b = request(host, port, "GET", path + "1", key)
        t1 = time.monotonic()
        if st != 200 or len(json.loads(b)["data"]) != 100:
            sys.exit("first-page: page 1 -> %d: %s" % (st, b[:300]))
        st, b = request(host, port, "GET", path + "1000000000", key)
        t2 = time.monotonic()
        if st != 200 or json.loads(b)["data"] != []:
            sys.exit("first-page: page past the end -> %d: %s" % (st, b[:300]))
        first, whole = (t1 - t0) * 1000, (t2 - t0) * 1000
        firsts.append(first)
        wholes.append(whole)
        ratios.append(first / whole)
        each.append("%.0f/%.0f" % (first, whole))
    hits = []
    for _ in range(runs):
        body = json.dumps({"sql_query": sql}).encode()
        t0 = time.monotonic()
        st, b = request(host, port, "POST", "/api/queries", key, body,
                        {"Content-Type": "application/json"})
        if st != 200 or request.headers.get("X-Dapi-Reused") != "true":
            sys.exit("first-page: the reuse hit's POST -> %d, X-Dapi-Reused %r: %s"
                     % (st, request.headers.get("X-Dapi-Reused"), b[:300]))
        slug = json.loads(b)["query_slug"]
        st, b = request(host, port, "GET", "/api/queries/%s/results?page_number=1" % slug, key)
        t1 = time.monotonic()
        if st != 200 or len(json.loads(b)["data"]) != 100:
            sys.exit("first-page: reuse hit page 1 -> %d: %s" % (st, b[:300]))
        hits.append((t1 - t0) * 1000)
    first, hit = statistics.median(firsts), statistics.median(hits)
    print("%.0f %.0f %.3f %.1f %.3f %s" % (first, statistics.median(wholes),
                                           statistics.median(ratios), hit, hit / first,
                                           " ".join(each)))


if __name__ == "__main__":
    main()
