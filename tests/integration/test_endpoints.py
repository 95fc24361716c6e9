"""Named, parameterised endpoints (--endpoints-file, docs/endpoints.md): typed parameters
and their rules, lists and defaults, page 1 in the reference envelope, reuse of identical
calls, scopes and rate limits, a broken file at start and at reload (SIGHUP, file change),
reload under load."""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse

import harness as h
from harness import Server, check, eq, expect_error, jparse

KEY = "it-endpoints-key-31c9"

GOOD = """\
endpoints:
  customers_by_country:
    description: Customers in one country, largest amount first
    sql: |
      SELECT id, name, amount FROM "shop"."customers"
      WHERE country = $country ORDER BY amount DESC LIMIT $limit
    params:
      country: {type: varchar, required: true, pattern: "^[A-Z]{2}$", description: ISO country code}
      limit:   {type: integer, default: 10, min: 1, max: 1000}
    cache: 60s
  in_countries:
    sql: SELECT id FROM "shop"."customers" WHERE list_contains($c, country) ORDER BY id
    params:
      c: {type: "varchar[]", default: [US, DE]}
  since:
    sql: SELECT id FROM "shop"."customers" WHERE since >= $d ORDER BY id
    params:
      d: {type: date, required: true}
  vip:
    sql: SELECT count(*) AS n FROM "shop"."customers" WHERE vip = $v AND amount >= $min
    params:
      v: {type: boolean, default: true}
      min: {type: double, default: 0}
  by_kind:
    sql: SELECT id FROM "shop"."customers" WHERE name = $n ORDER BY id
    params:
      n: {type: varchar, enum: [Ann, Bob], max_length: 3}
  people:
    sql: SELECT id FROM "hr"."people"
"""


def _lake():
    return h.shop_lake("ep-lake")


def _file(text, name="endpoints.yaml"):
    p = os.path.join(h.tmpdir("ep-file"), name)
    h.write_file(p, text)
    return p


def _server(text=GOOD, args=(), **kw):
    path = _file(text)
    s = Server(keys=kw.pop("keys", [KEY]), data_dir=kw.pop("data_dir", None) or _lake(),
               args=["--endpoints-file", path] + list(args), name="endpoints", **kw)
    s.endpoints_path = path
    return s


def _shop_key():
    """A key store file with one key limited to the shop layer: (its path, the key)."""
    keys_file = os.path.join(h.tmpdir("ep-keys"), "keys")
    p = subprocess.run([h.BIN, "keys", "add", "--keys-file", keys_file, "--layers", "shop", "--name", "shopper"],
                       capture_output=True, text=True, timeout=30, env=h.base_env())
    check(p.returncode == 0, "dapi keys add: %s %s" % (p.stdout, p.stderr))
    return keys_file, [w for w in p.stdout.split() if w.startswith("dapi_")][0]


def _call(s, name, query="", key=""):
    return s.api("GET", "/api/endpoints/%s%s" % (name, "?" + query if query else ""), key=key)


def _data(r, what=""):
    check(r.status == 200, "%s: %s" % (what, r.short()))
    body = jparse(r)
    eq(list(body), ["query_slug", "page", "data"], "the reference envelope")
    eq(body["page"], 1, "page 1")
    return body["data"]


def test_call_answers_page_one_in_the_reference_envelope():
    with _server() as s:
        rows = _data(_call(s, "customers_by_country", "country=US&limit=5"), "call")
        eq(rows, [{"id": 3, "name": "Zoë", "amount": 99.9}, {"id": 1, "name": "Ann", "amount": 30.5}], "rows")
        r = _call(s, "customers_by_country", "country=US&limit=1")
        body = jparse(r)
        eq(len(body["data"]), 1, "limit bound")
        # the slug pages on through the results endpoint and shows the bound values
        eq(s.page(body["query_slug"], 1), body["data"], "the same page through /results")
        st = jparse(s.api("GET", "/api/queries/%s" % body["query_slug"]))
        eq(st["params"], {"country": "US", "limit": 1}, "status shows the values")


def test_types_lists_and_defaults():
    with _server() as s:
        eq(_data(_call(s, "in_countries")), [{"id": 1}, {"id": 2}, {"id": 3}], "list default")
        eq(_data(_call(s, "in_countries", "c=IE&c=DE")), [{"id": 2}, {"id": 4}], "list given")
        eq(_data(_call(s, "in_countries", "c=IE")), [{"id": 4}], "a list of one")
        eq(_data(_call(s, "since", "d=2024-01-01")), [{"id": 1}, {"id": 4}], "date")
        eq(_data(_call(s, "vip")), [{"n": 2}], "boolean default")
        eq(_data(_call(s, "vip", "v=false&min=10")), [{"n": 1}], "boolean and double given")
        eq(_data(_call(s, "by_kind", "n=Bob")), [{"id": 2}], "enum")
        eq(_data(_call(s, "by_kind")), [], "optional without a default: null")
        eq(_data(_call(s, "customers_by_country", "country=" + urllib.parse.quote("US"))), [
            {"id": 3, "name": "Zoë", "amount": 99.9}, {"id": 1, "name": "Ann", "amount": 30.5}], "default limit")


EXACT = """\
endpoints:
  exact:
    sql: |
      SELECT v FROM (VALUES (1234567890123456789.0123456789::DECIMAL(38,10)),
                            (1234567890123456789.0123456788::DECIMAL(38,10)),
                            (0.1::DECIMAL(38,10))) t(v)
      WHERE v = $v ORDER BY v
    params:
      v: {type: decimal, required: true}
  exact_in:
    sql: |
      SELECT v FROM (VALUES (1234567890123456789.0123456789::DECIMAL(38,10)),
                            (1234567890123456789.0123456788::DECIMAL(38,10)),
                            (0.1::DECIMAL(38,10))) t(v)
      WHERE list_contains($l, v) ORDER BY v
    params:
      l: {type: "decimal[]", required: true}
"""


def test_decimal_parameters_keep_every_digit():
    """A decimal parameter reaches a DECIMAL column with every digit sent (not through a
    double, which made the two 29-digit values equal)."""
    from decimal import Decimal
    with _server(EXACT) as s:
        for text, want in (("1234567890123456789.0123456789", "1234567890123456789.0123456789"),
                           ("1234567890123456789.0123456788", "1234567890123456789.0123456788"),
                           ("0.1", "0.1000000000"), ("1e-1", "0.1000000000"), ("1E-1", "0.1000000000"),
                           ("1E0", None), ("007.5", None), ("%2B.5", None)):
            r = _call(s, "exact", "v=" + text)
            check(r.status == 200, "v=%s: %s" % (text, r.short()))
            rows = json.loads(r.body, parse_float=Decimal)["data"]
            eq([row["v"] for row in rows], [Decimal(want)] if want else [], "v=%s" % text)
        r = _call(s, "exact_in", "l=1234567890123456789.0123456789&l=0.1")
        check(r.status == 200, "a decimal list: %s" % r.short())
        eq([row["v"] for row in json.loads(r.body, parse_float=Decimal)["data"]],
           [Decimal("0.1000000000"), Decimal("1234567890123456789.0123456789")], "a decimal list, exactly")


def test_rule_violations_are_400_naming_the_parameter_and_the_rule():
    with _server() as s:
        cases = [
            ("customers_by_country", "", "'country'", "required"),
            ("customers_by_country", "country=usa", "'country'", "pattern"),
            ("customers_by_country", "country=US&limit=0", "'limit'", "min"),
            ("customers_by_country", "country=US&limit=1001", "'limit'", "max"),
            ("customers_by_country", "country=US&limit=ten", "'limit'", "integer"),
            ("customers_by_country", "country=US&limit=99999999999", "'limit'", "integer"),
            ("customers_by_country", "country=US&country=DE", "'country'", "once"),
            ("customers_by_country", "country=US&colour=red", "'colour'", "unknown"),
            ("since", "d=2024-02-30", "'d'", "date"),
            ("vip", "v=yes", "'v'", "true or false"),
            ("vip", "min=abc", "'min'", "number"),
            # strtod alone would read these as 16 and 8, or as +infinity's kin
            ("vip", "min=0x10", "'min'", "number"),
            ("vip", "min=0x1p3", "'min'", "number"),
            ("vip", "min=nan", "'min'", "number"),
            ("vip", "min=%205", "'min'", "number"),
            ("by_kind", "n=Zed", "'n'", "enum"),
            ("by_kind", "n=Bobby", "'n'", "max_length"),
            ("customers_by_country", "country=" + urllib.parse.quote("US' OR '1'='1"), "'country'", "pattern"),
        ]
        for name, q, who, rule in cases:
            r = _call(s, name, q)
            expect_error(r, 400, "Invalid query parameter", "%s?%s" % (name, q))
            d = jparse(r)["details"]
            check(who in d and rule in d, "%s?%s: details name the parameter and the rule: %s" % (name, q, d))
        expect_error(_call(s, "no_such_endpoint"), 404, "Endpoint not found", "unknown endpoint")


def test_hostile_values_are_data():
    text = GOOD + """\
  by_name:
    sql: SELECT id FROM "shop"."customers" WHERE name = $n
    params:
      n: {type: varchar, required: true}
"""
    with _server(text) as s:
        for v in ["' OR '1'='1", "Ann'; --", "Ann;", "Ann --", "\"Ann\""]:
            eq(_data(_call(s, "by_name", "n=" + urllib.parse.quote(v))), [], "%r matches nothing" % v)
        eq(_data(_call(s, "by_name", "n=" + urllib.parse.quote("O'Brien"))), [{"id": 4}], "a quote is data")


def test_list_filtered_by_scope_and_404():
    keys_file, shop_key = _shop_key()
    with _server(args=["--keys-file", keys_file], keys=[KEY]) as s:
        names = [e["name"] for e in jparse(s.api("GET", "/api/endpoints"))["endpoints"]]
        eq(names, ["by_kind", "customers_by_country", "in_countries", "people", "since", "vip"], "all for an unscoped key")
        listed = jparse(s.api("GET", "/api/endpoints", key=shop_key))["endpoints"]
        eq([e["name"] for e in listed], ["by_kind", "customers_by_country", "in_countries", "since", "vip"],
           "the scoped key sees what it may read")
        ep = [e for e in listed if e["name"] == "customers_by_country"][0]
        eq(ep["layers"], ["shop"], "layers")
        eq(ep["cache"], 60, "cache")
        eq([(p["name"], p["type"], p["required"], p["default"]) for p in ep["params"]],
           [("country", "varchar", True, None), ("limit", "integer", False, 10)], "params")
        # as if it did not exist: the same answer as an unknown name, no layer named
        r = _call(s, "people", key=shop_key)
        unknown = _call(s, "no_such_endpoint", key=shop_key)
        expect_error(r, 404, "Endpoint not found", "an endpoint reading another layer")
        eq((r.status, r.body), (unknown.status, unknown.body), "the same as an unknown name")
        check("hr" not in r.body.decode(), r.short())
        eq(_data(_call(s, "people")), [{"id": 1}], "the unscoped key may")
        expect_error(_call(s, "people", key="nope"), 401, None, "an unknown key")


def test_rate_limit_applies_to_endpoints():
    with _server(args=["--rate-limit", "2/min", "--rate-burst", "2"]) as s:
        eq(_call(s, "vip").status, 200, "1")
        eq(_call(s, "vip").status, 200, "2")
        r = _call(s, "vip")
        eq(r.status, 429, "the third call within the minute: %s" % r.short())


def test_identical_calls_reuse_the_result():
    with _server() as s:
        a = _call(s, "customers_by_country", "country=US&limit=5")
        b = _call(s, "customers_by_country", "limit=5&country=US")
        c = _call(s, "customers_by_country", "country=DE&limit=5")
        check(jparse(a)["query_slug"] != jparse(b)["query_slug"], "a slug each")
        eq(jparse(a)["data"], jparse(b)["data"], "same rows")
        text = s.wait_stderr(lambda t: t.count(" done: ") >= 2)
        runs = text.count(" done: ")
        check("reuses" in text, "the second identical call reused the first: %s" % text[-2000:])
        eq(runs, 2, "two runs for three calls (US twice, DE once)")
        check(c.status == 200, c.short())


def test_a_call_answers_in_the_coding_the_client_accepts():
    """Once the result is stored, a call's page 1 goes as the results endpoint sends it: zstd
    as stored, gzip to a client taking gzip and not zstd, plain otherwise — the same rows."""
    import gzip
    import shutil

    with _server() as s:
        rows = _data(_call(s, "customers_by_country", "country=US&limit=5"), "the first call")
        s.wait_stderr(lambda t: " done: " in t)  # (then the identical calls reuse the stored result)
        path = "/api/endpoints/customers_by_country?country=US&limit=5"
        g = s.api("GET", path, headers={"Accept-Encoding": "gzip, deflate"})
        eq(g.headers.get("content-encoding"), "gzip", "a call for a gzip client")
        eq(json.loads(gzip.decompress(g.body))["data"], rows, "the rows, gzipped")
        z = s.api("GET", path, headers={"Accept-Encoding": "zstd, gzip"})
        eq(z.headers.get("content-encoding"), "zstd", "zstd preferred")
        exe = shutil.which("zstd")
        if exe:
            out = subprocess.run([exe, "-dc", "-q"], input=z.body, capture_output=True, timeout=30).stdout
            eq(json.loads(out)["data"], rows, "the rows, as stored")
        eq(_data(s.api("GET", path), "a plain call"), rows, "the rows, plain")


BROKEN = [
    ("endpoints:\n  bad:\n    sql: SELECT * FROM \"shop\".\"nope\"\n", "bad", ":2:"),
    ("endpoints:\n  ok:\n    sql: SELECT 1\n  bad:\n    sql: SELEC 1\n", "bad", ":4:"),
    ("endpoints:\n  bad:\n    sql: SELECT $x AS x\n", "$x", ":2:"),
    ("endpoints:\n  bad:\n    sql: SELECT 1\n    params:\n      y: {type: integer}\n", "'y'", ":2:"),
    ("endpoints:\n  bad:\n    sql: DROP TABLE x\n", "bad", ":2:"),
    ("endpoints:\n  bad:\n    sql: SELECT 1\n    params:\n      y: {type: money}\n", "money", ":5:"),
    ("endpoints:\n  bad:\n    sql: SELECT $y\n    params:\n      y: {type: integer, default: x}\n", "default", ":5:"),
    ("endpoints:\n  bad: [1\n", "YAML", ":"),
    ("endpoints:\n  bad:\n    sql: SELECT 1\n    colour: red\n", "colour", ":4:"),
]


def test_a_broken_file_refuses_the_start():
    for text, needle, line in BROKEN:
        path = _file(text)
        p = subprocess.run([h.BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", _lake(),
                            "--state-dir", h.tmpdir("ep-state"), "--endpoints-file", path],
                           capture_output=True, text=True, timeout=60,
                           env=dict(h.base_env(), DAPI_API_KEYS=KEY))
        eq(p.returncode, 2, "exit status for %r: %s" % (text, p.stderr))
        check(needle in p.stderr and (path + line) in p.stderr,
              "the message names the endpoint/rule and the file's line (%r, %r): %s" % (needle, line, p.stderr))


def test_reload_on_sighup_and_on_change_keeps_the_old_set_when_bad():
    with _server() as s:
        eq(_call(s, "vip").status, 200, "before")
        # a bad file: the old endpoints stay, the log says why
        h.write_file(s.endpoints_path, BROKEN[0][0])
        s.proc.send_signal(signal.SIGHUP)
        s.wait_stderr(lambda t: "endpoints not reloaded" in t, timeout=10)
        eq(_call(s, "vip").status, 200, "kept after a bad reload")
        # a good file, seen as changed (no signal)
        h.write_file(s.endpoints_path, "endpoints:\n  hello:\n    sql: SELECT 'hi' AS greeting\n")
        s.wait_stderr(lambda t: "endpoints reloaded" in t, timeout=10)
        eq(_data(_call(s, "hello")), [{"greeting": "hi"}], "the new endpoint")
        expect_error(_call(s, "vip"), 404, "Endpoint not found", "the old one is gone")
        h.write_file(s.endpoints_path, GOOD)
        s.proc.send_signal(signal.SIGHUP)
        s.wait_stderr(lambda t: t.count("endpoints reloaded") >= 2, timeout=10)
        eq(_call(s, "vip").status, 200, "back")


@h.timeout(120)
def test_reload_under_load():
    with _server() as s:
        stop = threading.Event()
        bad = []

        def caller():
            while not stop.is_set():
                r = _call(s, "vip", "min=%d" % (int(time.time() * 1000) % 50))
                if r.status != 200:
                    bad.append(r.short())

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(10):
                h.write_file(s.endpoints_path, GOOD + "  extra%d:\n    sql: SELECT %d AS n\n" % (i, i))
                s.proc.send_signal(signal.SIGHUP)
                time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join()
        eq(bad, [], "every call during the reloads answered 200")
        check(s.alive(), "alive")


def test_no_file_lists_nothing_and_nekt_refuses_the_setting():
    with Server(keys=[KEY], data_dir=_lake(), name="ep-none") as s:
        eq(jparse(s.api("GET", "/api/endpoints")), {"endpoints": []}, "no file: an empty list")
        expect_error(_call(s, "x"), 404, "Endpoint not found", "no file")
    path = _file(GOOD)
    p = subprocess.run([h.BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--backend", "nekt",
                        "--nekt-url", "http://127.0.0.1:9", "--state-dir", h.tmpdir("ep-state"),
                        "--endpoints-file", path],
                       capture_output=True, text=True, timeout=60, env=h.base_env())
    eq(p.returncode, 2, "nekt with an endpoints file: %s" % p.stderr)
    check("binds parameters" in p.stderr, p.stderr)


def test_format_streams_the_whole_result_through_the_export_path():
    with _server() as s:
        r = _call(s, "in_countries", "c=US&c=IE&format=csv")
        eq(r.status, 200, r.short())
        eq(r.headers.get("content-type"), "text/csv; charset=utf-8", "csv")
        eq(r.body.decode(), "id\r\n1\r\n3\r\n4\r\n", "every row, as the export writes them")
        r = _call(s, "in_countries", "format=ndjson")
        eq(r.body.decode(), '{"id":1}\n{"id":2}\n{"id":3}\n', "ndjson with the default")
        expect_error(_call(s, "in_countries", "format=xml"), 400, "Invalid format", "a bad format")


def _generated(doc):
    return sorted(p for p in doc["paths"] if p.startswith("/api/endpoints/") and p != "/api/endpoints/{name}")


def test_served_openapi_describes_each_endpoint():
    import test_openapi as o
    with _server() as s:
        doc = jparse(s.api("GET", "/api/openapi.json"))
        op = doc["paths"]["/api/endpoints/customers_by_country"]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        eq(sorted(params), ["country", "format", "limit"], "its parameters and format")
        eq(params["country"]["required"], True, "required")
        eq(params["country"]["schema"], {"type": "string", "pattern": "^[A-Z]{2}$"}, "pattern")
        eq(params["limit"]["schema"], {"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000,
                                       "default": 10}, "rules and default")
        lst = doc["paths"]["/api/endpoints/in_countries"]["get"]["parameters"][0]
        eq((lst["schema"]["type"], lst.get("explode")), ("array", True), "a list")
        check("/api/endpoints/{name}" in doc["paths"], "the generic entry stays")
        # the merged document is valid OpenAPI 3.1 (the pinned validator of test_openapi)
        try:
            d = o._validator()
        except h.Skip:
            return
        served = os.path.join(h.tmpdir("ep-openapi"), "served.json")
        h.write_file(served, s.api("GET", "/api/openapi.json").body)
        res = o._run_validator(d, served)
        check(res["valid"] is True, "the validator refuses the merged document:\n%s" % json.dumps(res["errors"], indent=1)[:3000])
    with Server(keys=[KEY], data_dir=_lake(), name="ep-none") as s:
        doc = jparse(s.api("GET", "/api/openapi.json"))
        eq(_generated(doc), [], "without a file: no generated path")


def test_served_openapi_shows_endpoints_only_to_keys_that_may_call_them():
    # The endpoints are this server's settings (names, parameters, allowed values): the
    # document describes them only to a key, and only those its scope may call, as
    # GET /api/endpoints lists them.
    keys_file, shop_key = _shop_key()
    with _server(args=["--keys-file", keys_file], keys=[KEY]) as s:
        r = s.api("GET", "/api/openapi.json", key=None)
        eq(r.status, 200, "no key needed: " + r.short())
        doc = jparse(r)
        eq(_generated(doc), [], "no key: the generic document, no endpoint of this server")
        check("customers_by_country" not in r.body.decode(), "no endpoint name anywhere in it")
        check("/api/endpoints/{name}" in doc["paths"], "the generic entry is there")
        listed = ["/api/endpoints/" + e["name"] for e in jparse(s.api("GET", "/api/endpoints", key=shop_key))["endpoints"]]
        scoped = _generated(jparse(s.api("GET", "/api/openapi.json", key=shop_key)))
        eq(scoped, sorted(listed), "a scoped key: the endpoints it may call, as GET /api/endpoints lists them")
        check("/api/endpoints/people" not in scoped, "not the endpoint reading the hr layer")
        eq(len(_generated(jparse(s.api("GET", "/api/openapi.json")))), 6, "an unscoped key: all six")
        expect_error(s.api("GET", "/api/openapi.json", key="nope"), 401, None, "a wrong key is refused")
        r = s.request("GET", "/api/openapi.json", headers={"Authorization": "Bearer x.y.z"})
        check(r.status == 401 and "customers_by_country" not in r.body.decode(), "a bad token: 401 " + r.short())
        r = s.request("HEAD", "/api/openapi.json")
        eq(r.status, 200, "HEAD without a key")


def _dapi(s, args, key=KEY):
    env = dict(h.base_env(), DAPI_URL="http://127.0.0.1:%d" % s.port, DAPI_API_KEY=key)
    s.touched.add(h.CURRENT_TEST)
    p = subprocess.run([h.BIN] + args, capture_output=True, timeout=60, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_dapi_call_in_any_output_format():
    keys_file, shop_key = _shop_key()
    with _server(args=["--keys-file", keys_file]) as s:
        rc, out, err = _dapi(s, ["call", "-q", "-f", "csv", "customers_by_country", "country=US", "limit=5"])
        eq((rc, out), (0, "id,name,amount\r\n3,Zoë,99.9\r\n1,Ann,30.5\r\n"), "csv: %s" % err)
        rc, out, err = _dapi(s, ["call", "-q", "-f", "ndjson", "in_countries", "c=IE", "c=DE"])
        eq((rc, out), (0, '{"id":2}\n{"id":4}\n'), "ndjson, a list: %s" % err)
        rc, out, err = _dapi(s, ["call", "-q", "-f", "json", "vip"])
        eq((rc, json.loads(out)), (0, [{"n": 2}]), "json, defaults: %s" % err)
        rc, out, err = _dapi(s, ["call", "-q", "-f", "tsv", "by_kind", "n=O'Brien x"])
        eq(rc, 4, "a refused value: exit 4 (%s)" % err)
        check("max_length" in err or "enum" in err, err)
        rc, out, err = _dapi(s, ["call", "-q", "nope"])
        eq(rc, 4, "an unknown endpoint: exit 4 (%s)" % err)
        rc, out, err = _dapi(s, ["call", "-q", "people"], key=shop_key)
        eq(rc, 4, "outside the key's scope: not there for it, exit 4 (%s)" % err)
        rc, out, err = _dapi(s, ["call", "-q", "-f", "csv", "by_kind", "n=" + "Ann"])
        eq((rc, out), (0, "id\r\n1\r\n"), "csv: %s" % err)
        rc, out, err = _dapi(s, ["call", "vip", "oops"])
        eq(rc, 2, "not key=value: usage (%s)" % err)
