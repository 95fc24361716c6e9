"""The web console (docs/console.md): GET / and GET /console/{file}.

- Plain HTTP: the served files are console/'s, byte for byte, with no key; each answer carries
  the strict Content-Security-Policy (no 'unsafe-inline', no 'unsafe-eval'), nosniff,
  no-referrer, Cache-Control and an ETag that If-None-Match turns into a 304; HEAD has the
  headers without the body; an unknown console file and any other unknown path are JSON 404s.
  The page itself has nothing the policy would block (no inline script, style or handler).
- In a real browser: Debian's Chromium, headless, driven by playwright-core (pinned with its
  integrity in tests/browser/package-lock.json with axe-core, installed with `npm ci` into
  build/npm-browser) runs tests/browser/console.mjs against a live server over the sample
  lake: load, a refused key (401 and where keys come from), a good key, browse to a table
  (its columns, the editor filled), run, the layer/table/limit form, page forward and back
  (rows compared with the API's), download CSV (compared here with the API's rows), NULL
  versus empty and long values, a SQL error with its position, a scoped key's 403 naming the
  layer, a rate-limited key's 429 with its wait, cancel a slow query, an endpoint of the
  server's --endpoints-file called from the side panel (its rows compared with the API's, a
  value breaking a rule refused with its 400), bar and
  line charts, re-run from the history, keyboard only (skip link, Ctrl+Enter, Tab to Run),
  400 px wide, Forget (the key leaves sessionStorage), and axe-core with no serious or
  critical violation in four states (a refused key, a SQL error, a result with its chart
  and history, 400 px wide). Every request the page
  makes goes to the server's origin, no script error happens, and the console shows no
  message but the failed loads of the 401 and the SQL error the test provokes. Screenshots
  land in build/console-shots/.
"""

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import urllib.parse

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

ROOT = h.REPO_ROOT
CONSOLE_DIR = os.path.join(ROOT, "console")
NPM_DIR = os.path.join(ROOT, "tests", "browser")
SHOTS = os.path.join(ROOT, "build", "console-shots")
KEY = "it-console-key-51c8"
CHROMIUM = os.environ.get("DAPI_CHROMIUM", "/usr/bin/chromium")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
FILES = {"/": "index.html", "/console/console.css": "console.css", "/console/console.js": "console.js"}
TYPES = {"index.html": "text/html; charset=utf-8", "console.css": "text/css; charset=utf-8",
         "console.js": "text/javascript; charset=utf-8"}


# The browser test's --endpoints-file: the side panel lists it, its form calls it.
ENDPOINTS_YAML = """endpoints:
  customers_by_country:
    description: Customers in one country
    sql: |
      SELECT customer_id, name, city FROM "nekt_raw"."customers"
      WHERE country = $country ORDER BY customer_id LIMIT $limit
    params:
      country: {type: varchar, required: true, pattern: "^[A-Z]{2}$", description: ISO country code}
      limit:   {type: integer, default: 10, min: 1, max: 1000}
"""

def _check_headers(r, name, what):
    eq(r.headers.get("content-security-policy"), CSP, "%s: Content-Security-Policy" % what)
    eq(r.headers.get("x-content-type-options"), "nosniff", "%s: X-Content-Type-Options" % what)
    eq(r.headers.get("referrer-policy"), "no-referrer", "%s: Referrer-Policy" % what)
    eq(r.headers.get("cache-control"), "no-cache", "%s: Cache-Control" % what)
    check(re.fullmatch(r'"[0-9a-f]{20}"', r.headers.get("etag", "")), "%s: ETag %r" % (what, r.headers.get("etag")))


def test_console_files_and_headers_over_http():
    csp_parts = CSP.split("; ")
    check("'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP, "the policy allows no inline code")
    check(len(csp_parts) == len(set(csp_parts)), "the policy lists each directive once")
    with Server(keys=[KEY], name="console-http") as s:
        for url, name in sorted(FILES.items()):
            want = open(os.path.join(CONSOLE_DIR, name), "rb").read()
            r = s.request("GET", url)  # no key
            expect_status(r, 200, "GET %s without a key" % url)
            eq(r.headers.get("content-type"), TYPES[name], "Content-Type of %s" % url)
            _check_headers(r, name, "GET " + url)
            check(r.body == want, "GET %s is console/%s byte for byte (%d vs %d bytes)" % (url, name, len(r.body), len(want)))
            etag = r.headers["etag"]
            eq(etag, '"%s"' % hashlib.sha256(want).hexdigest()[:20], "ETag of %s (the file's SHA-256)" % url)
            rh = s.request("HEAD", url)
            expect_status(rh, 200, "HEAD " + url)
            eq(rh.body, b"", "HEAD %s body" % url)
            _check_headers(rh, name, "HEAD " + url)
            eq(rh.headers.get("content-length"), str(len(want)), "HEAD %s Content-Length" % url)
            for inm in (etag, 'W/%s' % etag, '"x", %s' % etag, "*"):
                r3 = s.request("GET", url, headers={"If-None-Match": inm})
                expect_status(r3, 304, "GET %s with If-None-Match %s" % (url, inm))
                eq(r3.body, b"", "a 304 has no body")
                _check_headers(r3, name, "304 of " + url)
            r4 = s.request("GET", url, headers={"If-None-Match": '"0000"'})
            expect_status(r4, 200, "GET %s with another tag" % url)
            # the key is not needed, and a key sent is not looked at (a wrong one too)
            expect_status(s.request("GET", url, headers={"x-api-key": "wrong"}), 200, "GET %s with a wrong key" % url)
        r = s.request("GET", "/console/index.html")
        expect_status(r, 200, "the page by its file name")
        r = s.request("GET", "/console/nope.js")
        expect_error(r, 404, "No such console file", "an unknown console file")
        for path in ("/console/", "/console", "/index.html", "/console/x/console.js", "/nope", "/api"):
            expect_error(s.request("GET", path), 404, "Not found", "GET %s: the route-miss answer" % path)
        for m in ("POST", "PUT", "DELETE"):
            r = s.request(m, "/", body=b"x" if m != "DELETE" else None)
            expect_error(r, 405, "Method not allowed", "%s /" % m)
            eq(r.headers.get("allow"), "GET, HEAD", "Allow of /")


def test_page_has_nothing_the_policy_blocks():
    """The CSP allows the page's own files only: no inline <script> or <style>, no style=
    or on…= attributes, no javascript: URL, and nothing from another origin."""
    html = open(os.path.join(CONSOLE_DIR, "index.html"), encoding="utf-8").read()
    for m in re.finditer(r"<script\b([^>]*)>", html):
        check(re.search(r'\bsrc="/console/[a-z.]+"', m.group(1)), "an inline script: %s" % m.group(0))
    check("<style" not in html, "an inline <style>")
    check(not re.search(r"\sstyle=", html), "a style= attribute")
    check(not re.search(r"\son[a-z]+=", html), "an on…= handler attribute")
    check("javascript:" not in html, "a javascript: URL")
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    check(refs, "no src/href found: teach this test")
    for ref in refs:
        check(ref.startswith("/console/") or ref.startswith("#") or ref == "data:,", "a reference outside the console: %r" % ref)
    js = open(os.path.join(CONSOLE_DIR, "console.js"), encoding="utf-8").read()
    for bad in ("eval(", "new Function", "innerHTML", "document.write", "setAttribute(\"style\"", "localStorage.setItem(\"dapi.key\""):
        check(bad not in js, "console.js uses %s" % bad)
    check(not re.search(r"https?://(?!www\.w3\.org/2000/svg)", js), "console.js names another origin")


def _browser_deps():
    """build/npm-browser with playwright-core and axe-core installed from the committed lock
    (npm ci, again only when the lock changed)."""
    check(os.access(CHROMIUM, os.X_OK), "%s is not installed (scripts/deps.sh installs Debian's chromium)" % CHROMIUM)
    return h.npm_ci(NPM_DIR, "npm-browser", ["console.mjs"])


def _store_key(keys_file, name, args):
    rc, out, err = h.run_cli(["keys", "add", "--name", name, "--keys-file", keys_file] + args)
    eq(rc, 0, "dapi keys add %s (stderr %r)" % (" ".join(args), err))
    return out.strip()


def _csv_matches_rows(path, rows, columns):
    """The downloaded CSV is the API's rows: the header, then each row's values as text."""
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    eq(got[0], columns, "the CSV's header row")
    want = [["" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    eq(len(got) - 1, len(want), "rows in the downloaded CSV")
    for i, (g, w) in enumerate(zip(got[1:], want)):
        eq(g, w, "row %d of the downloaded CSV vs the API's page rows" % (i + 1))


@h.timeout(300)
def test_console_in_headless_chromium():
    d = _browser_deps()
    shutil.rmtree(SHOTS, ignore_errors=True)
    keys_file = os.path.join(h.tmpdir("console-keys"), "keys")
    scoped, limited = (_store_key(keys_file, "console-" + name, args) for name, args in (
        ("scoped", ["--layers", "nekt_raw"]), ("limited", ["--rate", "1/min", "--burst", "1"])))
    endpoints = os.path.join(h.tmpdir("console-endpoints"), "endpoints.yaml")
    h.write_file(endpoints, ENDPOINTS_YAML)
    with Server(keys=[KEY], data_dir=h.sample_lake(), env={"DAPI_KEYS_FILE": keys_file}, name="console-browser",
                args=["--endpoints-file", endpoints]) as s:
        base = "http://127.0.0.1:%d" % s.port
        p = subprocess.run(["node", os.path.join(d, "console.mjs"), base, KEY, SHOTS, scoped, limited],
                           cwd=d, capture_output=True, text=True, timeout=180)
        check(p.returncode == 0 and p.stdout.strip(), "console.mjs failed (%d): %s" % (p.returncode, p.stderr[-3000:]))
        report = json.loads(p.stdout.strip().splitlines()[-1])
        eq(report["failures"], [], "checks made in the browser (screenshots in build/console-shots/)")
        eq(len(report["steps"]), 19, "scenarios run")
        eq(report["page_errors"], [], "script errors in the page")
        # Chromium logs a failed load for each 4xx a fetch gets: the refused key, the SQL
        # error, the scoped and the rate-limited key's refusals (the latter's endpoint list too)
        # and the endpoint value breaking a rule are provoked on purpose; nothing else may be
        # said in the console.
        expected = {("401", base + "/api/layers"), ("400", base + "/api/queries"), ("403", base + "/api/queries"),
                    ("429", base + "/api/queries"), ("429", base + "/api/endpoints"),
                    ("400", base + "/api/endpoints/customers_by_country?country=usa&limit=3")}
        seen = set()
        for m in report["console"]:
            hit = re.fullmatch(r"Failed to load resource: the server responded with a status of (\d+) \(.*\)", m["text"])
            check(m["type"] == "error" and hit and (hit.group(1), m["url"]) in expected, "a console message: %r" % m)
            seen.add((hit.group(1), m["url"]))
        eq(seen, expected, "the failed loads the test provoked")
        # every request the page made went to the server's origin
        check(len(report["requests"]) > 20, "requests recorded: %d" % len(report["requests"]))
        for url in report["requests"]:
            u = urllib.parse.urlsplit(url)
            ok = (u.scheme, u.netloc) == ("http", "127.0.0.1:%d" % s.port) or (url.startswith("blob:" + base + "/")) or url.startswith("data:")
            check(ok, "a request outside the dapi origin: %s" % url)
        bad = [v for v in report["axe"] if v["impact"] in ("serious", "critical")]
        eq(bad, [], "serious or critical accessibility violations (axe-core)")
        # the CSV downloaded in the browser is the API's rows
        check(report["csv"], "no CSV was downloaded")
        slug = report["csv"]["slug"]
        st = jparse(s.api("GET", "/api/queries/" + slug))
        _csv_matches_rows(report["csv"]["file"], s.all_rows(slug), [c["name"] for c in st["columns"]])
        for shot in ("01-load", "02-key-refused", "03-browse", "04-result", "06-sql-error", "07-running", "08-chart",
                     "10-narrow", "11-forbidden", "12-rate-limited", "13-endpoint"):
            check(os.path.getsize(os.path.join(SHOTS, shot + ".png")) > 1000, "screenshot %s.png" % shot)
