"""HTTP API contract: health, auth, POST /api/queries validation (both modes), results
paging and page_number validation, key binding, routing errors, access log, the local
lake's file formats and layout."""

import json
import os
import re
import shutil
import uuid

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse

KEY_A = "it-key-A-7f3e9c0b5d"
KEY_B = "it-key-B-41d2aa9e6c"
WRONG_KEY = "it-wrong-key-93ab17fe"

MISSING_KEY = "Missing API key. Please provide 'x-api-key' header"
INVALID_KEY = "Invalid API key"
NO_JSON = "No JSON data provided"
NOT_OBJECT = "JSON body must be an object"
SQL_NOT_STRING = "Parameter 'sql_query' must be a string"
NOT_ALLOWED = "When 'sql_query' is provided, these parameters are not allowed: "
LIMIT_INVALID = "Limit must be a valid integer"
LIMIT_POSITIVE = "Limit must be a positive integer"
PAGE_INVALID = "Page number must be a valid integer"
PAGE_POSITIVE = "Page number must be a positive integer"
NOT_FOUND_QUERY = "Query not found"

ROWS3 = [(1, "alice"), (2, "bob"), (3, "日本 é")]
TABLE_128 = "t" + "x" * 127


def _make_lake():
    d = h.tmpdir("api-lake")
    w = lambda rel, data: h.write_file(os.path.join(d, rel), data)  # noqa: E731
    w("lk/csv_t.csv", "id,name\n" + "".join("%d,%s\n" % r for r in ROWS3))
    w("lk/tsv_t.tsv", "id\tname\n" + "".join("%d\t%s\n" % r for r in ROWS3))
    w("lk/json_t.json", json.dumps([{"id": i, "name": n} for i, n in ROWS3], ensure_ascii=False))
    nd = "".join(json.dumps({"id": i, "name": n}, ensure_ascii=False) + "\n" for i, n in ROWS3)
    w("lk/ndjson_t.ndjson", nd)
    w("lk/jsonl_t.jsonl", nd)
    w("lk/people.csv", "id,name,score\n1,alice,9.5\n2,bob,7\n3,carol,\n")
    w("lk/big.csv", "n,sq\n" + "".join("%d,%d\n" % (i, i * i) for i in range(250)))
    w("lk/my-table$1.csv", "a\n1\n")
    w("lk/_under.csv", "a\n2\n")
    w("lk/9lives.csv", "a\n3\n")
    w("lk/%s.csv" % TABLE_128, "a\n4\n")
    w("_lay-er$2/t.csv", "a\n5\n")
    w("lk/notes.txt", "not a table\n")
    w("badlayer/broken.parquet", b"this is not a parquet file at all" * 10)
    return d


SRV = Shared(lambda: Server(keys=[KEY_A, KEY_B], data_dir=_make_lake(), name="api"))


def _srv():
    return SRV.get()


def _sorted_rows(rows, key="id"):
    return sorted(rows, key=lambda r: r[key])


# ----------------------------------------------------------------------------- health


def test_health_ok_without_key():
    r = _srv().request("GET", "/api/health")
    expect_status(r, 200)
    eq(jparse(r), {"status": "ok"}, "health body")


def test_health_ignores_unknown_key():
    r = _srv().request("GET", "/api/health", headers={"x-api-key": WRONG_KEY})
    expect_status(r, 200)
    eq(jparse(r), {"status": "ok"}, "health body")


# ----------------------------------------------------------------------------- auth


def test_auth_missing_key():
    r = _srv().api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=None)
    expect_error(r, 401, MISSING_KEY)


def test_auth_empty_key():
    r = _srv().request("POST", "/api/queries", b'{"sql_query":"SELECT 1"}', headers={"Content-Type": "application/json", "x-api-key": ""})
    expect_error(r, 401, MISSING_KEY)


def test_auth_unknown_key():
    r = _srv().api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=WRONG_KEY)
    expect_error(r, 401, INVALID_KEY)


def test_auth_key_is_case_sensitive():
    r = _srv().api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=KEY_A.upper())
    expect_error(r, 401, INVALID_KEY)


def test_auth_key_prefix_is_not_a_key():
    r = _srv().api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=KEY_A[:-1])
    expect_error(r, 401, INVALID_KEY)
    r = _srv().api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=KEY_A + "x")
    expect_error(r, 401, INVALID_KEY)


def test_auth_header_name_case_insensitive():
    r = _srv().request(
        "POST", "/api/queries", b'{"sql_query":"SELECT 1"}', headers={"Content-Type": "application/json", "X-API-KEY": KEY_A}
    )
    expect_status(r, 200)


def test_auth_both_keys_valid():
    s = _srv()
    s.create("SELECT 1", key=KEY_A)
    s.create("SELECT 1", key=KEY_B)


def test_auth_on_results_route():
    s = _srv()
    slug = s.create("SELECT 1 AS x")
    expect_error(s.results(slug, 1, key=None), 401, MISSING_KEY, "results without key")
    expect_error(s.results(slug, 1, key=WRONG_KEY), 401, INVALID_KEY, "results with unknown key")
    # Key checks come before page_number validation and slug lookup.
    expect_error(s.results(slug, key=None, query="page_number=abc"), 401, MISSING_KEY, "bad page, no key")
    expect_error(s.results("dapi-query-" + "Z" * 22, 1, key=None), 401, MISSING_KEY, "unknown slug, no key")
    expect_error(s.results("dapi-query-" + "Z" * 22, 1, key=WRONG_KEY), 401, INVALID_KEY, "unknown slug, bad key")


def test_auth_checked_before_content_type():
    r = _srv().request("POST", "/api/queries", b"SELECT 1", headers={"Content-Type": "text/plain"})
    expect_error(r, 401, MISSING_KEY)


# ----------------------------------------------------------------------------- create: envelope


def test_create_success_envelope():
    s = _srv()
    r = s.create_resp({"sql_query": "SELECT 42 AS answer"})
    expect_status(r, 200)
    body = jparse(r)
    check(isinstance(body, dict), "not an object: " + r.short())
    eq(sorted(body), ["message", "query_slug", "sql_query", "status"], "create response keys")
    eq(body["message"], "Query created successfully", "message")
    eq(body["status"], "success", "status")
    eq(body["sql_query"], "SELECT 42 AS answer", "sql_query echoed")
    check(h.SLUG_RE.match(body["query_slug"]), "slug %r does not match %s" % (body["query_slug"], h.SLUG_RE.pattern))
    eq(s.page(body["query_slug"], 1), [{"answer": 42}], "page 1")


def test_create_response_key_order():
    r = _srv().create_resp({"sql_query": "SELECT 1"})
    expect_status(r, 200)
    eq(list(r.raw().keys()), ["message", "query_slug", "sql_query", "status"], "key order (reference: sorted by Flask)")


def test_create_echoes_sql_verbatim():
    s = _srv()
    sql = "  select\t1 AS \"x y\" -- comment é\n"
    r = s.create_resp({"sql_query": sql})
    expect_status(r, 200)
    eq(jparse(r)["sql_query"], sql, "sql_query echoed byte for byte")


def test_slugs_unique_and_well_formed():
    s = _srv()
    slugs = []
    for _ in range(20):
        # Each one read before the next: one key may have only --max-queries-per-key (16)
        # queries being checked, queued or running, and runs can lag behind creates.
        slugs.append(s.create("SELECT 1"))
        eq(s.page(slugs[-1], 1), [{"1": 1}], "rows")
    eq(len(set(slugs)), 20, "distinct slugs among 20 creations of the same SQL")


def test_extra_keys_ignored_in_sql_mode():
    _srv().create(payload={"sql_query": "SELECT 1 AS x", "foo": 1, "page_number": 3})


# ----------------------------------------------------------------------------- create: body


def test_content_type_must_be_json():
    s = _srv()
    for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", None):
        hdrs = {"x-api-key": KEY_A}
        if ct:
            hdrs["Content-Type"] = ct
        r = s.request("POST", "/api/queries", b'{"sql_query":"SELECT 1"}', headers=hdrs)
        expect_error(r, 415, what="Content-Type %r" % ct)


def test_content_type_json_with_charset_accepted():
    r = _srv().request(
        "POST",
        "/api/queries",
        b'{"sql_query":"SELECT 1"}',
        headers={"Content-Type": "application/json; charset=utf-8", "x-api-key": KEY_A},
    )
    expect_status(r, 200)


def _post_raw(body):
    return _srv().request("POST", "/api/queries", body, headers={"Content-Type": "application/json", "x-api-key": KEY_A})


def test_malformed_json_400():
    for body in (b"{", b'{"sql_query": }', b"", b'{"sql_query":"SELECT 1"} trailing', b"{'sql_query':'SELECT 1'}", b'{"a":1,}', b"nul"):
        expect_error(_post_raw(body), 400, what="body %r" % body)


def test_falsy_json_bodies():
    for body in (b"{}", b"[]", b"0", b'""', b"null", b"false", b"0.0", b" {} "):
        expect_error(_post_raw(body), 400, NO_JSON, "body %r" % body)


def test_non_object_json_bodies():
    for body in (b"[1]", b'"x"', b"5", b"true", b"[{}]", b"1.5", b'["sql_query"]'):
        expect_error(_post_raw(body), 400, NOT_OBJECT, "body %r" % body)


# ----------------------------------------------------------------------------- create: mode 1


def test_sql_mode_rejects_layer_table_limit():
    cases = [
        ({"sql_query": "SELECT 1", "layer": "lk"}, "layer"),
        ({"sql_query": "SELECT 1", "layer": None}, "layer"),
        ({"sql_query": "SELECT 1", "table": "t"}, "table"),
        ({"sql_query": "SELECT 1", "limit": None}, "limit"),
        ({"sql_query": "SELECT 1", "limit": 5, "table": "x"}, "table, limit"),
        ({"limit": 1, "table": None, "layer": "", "sql_query": "SELECT 1"}, "layer, table, limit"),
        ({"sql_query": "SELECT 1", "layer": "lk", "limit": 3}, "layer, limit"),
    ]
    for payload, names in cases:
        expect_error(_srv().create_resp(payload), 400, NOT_ALLOWED + names, "payload %r" % payload)


def test_sql_query_must_be_string():
    for v in (123, True, [1], {"a": 1}, 1.5, "__list__"):
        payload = {"sql_query": ["SELECT 1"] if v == "__list__" else v}
        expect_error(_srv().create_resp(payload), 400, SQL_NOT_STRING, "payload %r" % payload)


def test_falsy_sql_query_falls_back_to_layer_table():
    expected = 'SELECT\n\t*\nFROM\n\t"lk"."people"'
    for falsy in ("", None, 0, False, [], {}):
        r = _srv().create_resp({"sql_query": falsy, "layer": "lk", "table": "people"})
        expect_status(r, 200, "sql_query=%r with layer/table" % (falsy,))
        eq(jparse(r)["sql_query"], expected, "generated SQL (sql_query=%r)" % (falsy,))


# ----------------------------------------------------------------------------- create: mode 2


def _missing(p):
    return "Missing required parameter '%s' when 'sql_query' is not provided" % p


def test_mode2_missing_layer_or_table():
    cases = [
        ({"table": "people"}, _missing("layer")),
        ({"layer": "", "table": "people"}, _missing("layer")),
        ({"layer": None, "table": None}, _missing("layer")),
        ({"layer": 0, "table": "people"}, _missing("layer")),
        ({"limit": 5}, _missing("layer")),
        ({"sql_query": None}, _missing("layer")),
        ({"sql_query": ""}, _missing("layer")),
        ({"layer": "lk"}, _missing("table")),
        ({"layer": "lk", "table": ""}, _missing("table")),
        ({"layer": "lk", "table": None, "limit": 5}, _missing("table")),
        ({"layer": "lk", "table": False}, _missing("table")),
    ]
    for payload, msg in cases:
        expect_error(_srv().create_resp(payload), 400, msg, "payload %r" % payload)


def test_mode2_layer_table_must_be_strings():
    cases = [
        ({"layer": 5, "table": "people"}, "Parameter 'layer' must be a string"),
        ({"layer": True, "table": "people"}, "Parameter 'layer' must be a string"),
        ({"layer": ["lk"], "table": "people"}, "Parameter 'layer' must be a string"),
        ({"layer": {"a": 1}, "table": "people"}, "Parameter 'layer' must be a string"),
        ({"layer": "lk", "table": 5}, "Parameter 'table' must be a string"),
        ({"layer": "lk", "table": 1.5}, "Parameter 'table' must be a string"),
        ({"layer": "lk", "table": ["people"]}, "Parameter 'table' must be a string"),
    ]
    for payload, msg in cases:
        expect_error(_srv().create_resp(payload), 400, msg, "payload %r" % payload)


BAD_NAMES = ['a"b', "x; DROP", "a.b", "-x", "$x", "a b", "é", "a" * 129, "a/b", "..", "a\nb", "ab\t", "日本"]


def test_mode2_invalid_layer_names():
    for name in BAD_NAMES:
        expect_error(_srv().create_resp({"layer": name, "table": "people"}), 400, "Invalid layer name", "layer %r" % name)


def test_mode2_invalid_table_names():
    for name in BAD_NAMES:
        expect_error(_srv().create_resp({"layer": "lk", "table": name}), 400, "Invalid table name", "table %r" % name)


def test_mode2_nul_in_names():
    """"a\\u0000b" is valid JSON (RFC 8259) holding a name that fails the name pattern."""
    expect_error(_srv().create_resp({"layer": "a\x00b", "table": "people"}), 400, "Invalid layer name", "layer 'a\\u0000b'")
    expect_error(_srv().create_resp({"layer": "lk", "table": "a\x00b"}), 400, "Invalid table name", "table 'a\\u0000b'")


def test_mode2_edge_names_accepted():
    s = _srv()
    for layer, table, value in (
        ("lk", "my-table$1", 1),
        ("lk", "_under", 2),
        ("lk", "9lives", 3),
        ("lk", TABLE_128, 4),
        ("_lay-er$2", "t", 5),
    ):
        slug = s.create(payload={"layer": layer, "table": table})
        eq(s.page(slug, 1), [{"a": value}], '"%s"."%s" rows' % (layer, table[:20]))


def test_mode2_generated_sql_exact():
    s = _srv()
    r = s.create_resp({"layer": "lk", "table": "people"})
    expect_status(r, 200)
    eq(jparse(r)["sql_query"], 'SELECT\n\t*\nFROM\n\t"lk"."people"', "generated SQL")
    r = s.create_resp({"layer": "lk", "table": "people", "limit": 2})
    expect_status(r, 200)
    body = jparse(r)
    eq(body["sql_query"], 'SELECT\n\t*\nFROM\n\t"lk"."people"\nLIMIT 2', "generated SQL with limit")
    eq(len(s.page(body["query_slug"], 1)), 2, "rows with limit 2")


def test_mode2_reads_table_values():
    s = _srv()
    slug = s.create(payload={"layer": "lk", "table": "people"})
    eq(
        _sorted_rows(s.page(slug, 1)),
        [{"id": 1, "name": "alice", "score": 9.5}, {"id": 2, "name": "bob", "score": 7.0}, {"id": 3, "name": "carol", "score": None}],
        "rows of lk.people",
    )


def test_limit_coercion():
    s = _srv()
    for value, n in ((10, 10), ("10", 10), (" 7 ", 7), (10.9, 10), (True, 1), ("+5", 5), (1e2, 100), (300, 300)):
        r = s.create_resp({"layer": "lk", "table": "big", "limit": value})
        expect_status(r, 200, "limit %r" % (value,))
        body = jparse(r)
        eq(body["sql_query"], 'SELECT\n\t*\nFROM\n\t"lk"."big"\nLIMIT %d' % n, "generated SQL for limit %r" % (value,))
        if value in (" 7 ", True):
            eq(len(s.page(body["query_slug"], 1)), n, "rows for limit %r" % (value,))


def test_limit_null_means_no_limit():
    s = _srv()
    r = s.create_resp({"layer": "lk", "table": "big", "limit": None})
    expect_status(r, 200)
    body = jparse(r)
    eq(body["sql_query"], 'SELECT\n\t*\nFROM\n\t"lk"."big"', "generated SQL for limit null")
    eq(len(s.all_rows(body["query_slug"])), 250, "rows of lk.big")


def test_limit_invalid():
    for value in ("abc", "1.5", "", [], {}, "1e2", " ", "0x10", [5], {"n": 1}, "5 5"):
        r = _srv().create_resp({"layer": "lk", "table": "big", "limit": value})
        expect_error(r, 400, LIMIT_INVALID, "limit %r" % (value,))


def test_limit_not_positive():
    for value in (0, -3, False, 0.5, "0", "-3", -0.5, "-0", 0.0):
        r = _srv().create_resp({"layer": "lk", "table": "big", "limit": value})
        expect_error(r, 400, LIMIT_POSITIVE, "limit %r" % (value,))


def test_mode2_unknown_table_or_layer():
    for payload in ({"layer": "lk", "table": "nope"}, {"layer": "nolayer", "table": "people"}):
        body = expect_error(_srv().create_resp(payload), 400, what="payload %r" % payload)
        check(isinstance(body.get("details"), str) and body["details"], 'expected a "details" string: %r' % body)


# ----------------------------------------------------------------------------- results


def test_results_envelope_and_key_order():
    s = _srv()
    slug = s.create("SELECT 1 AS a")
    r = s.results(slug)  # no page_number: page 1
    expect_status(r, 200)
    raw = r.raw()
    eq(list(raw.keys()), ["query_slug", "page", "data"], "results key order")
    eq(jparse(r), {"query_slug": slug, "page": 1, "data": [{"a": 1}]}, "results body")


def test_results_paging():
    s = _srv()
    slug = s.create("SELECT i FROM range(250) t(i) ORDER BY i")
    eq(s.page(slug, 1), [{"i": i} for i in range(100)], "page 1")
    eq(s.page(slug, 2), [{"i": i} for i in range(100, 200)], "page 2")
    eq(s.page(slug, 3), [{"i": i} for i in range(200, 250)], "page 3")
    eq(s.page(slug, 4), [], "page 4 (past the end)")
    eq(s.page(slug, 1000), [], "page 1000 (past the end)")
    eq(s.page(slug, 2), [{"i": i} for i in range(100, 200)], "page 2 again")


def test_results_exactly_100_rows():
    s = _srv()
    slug = s.create("SELECT i FROM range(100) t(i) ORDER BY i")
    eq(len(s.page(slug, 1)), 100, "page 1 rows")
    eq(s.page(slug, 2), [], "page 2")


def test_results_empty_result():
    s = _srv()
    slug = s.create("SELECT 1 AS x WHERE false")
    eq(s.page(slug, 1), [], "page 1 of an empty result")


def test_page_number_invalid():
    s = _srv()
    slug = s.create("SELECT i FROM range(250) t(i) ORDER BY i")
    for q in ("abc", "1.5", "", "1e2", "0x1", "%20", "2a", "1%2C2"):
        expect_error(s.results(slug, query="page_number=" + q), 400, PAGE_INVALID, "page_number=%r" % q)
    for q in ("0", "-1", "-0", "-100"):
        expect_error(s.results(slug, query="page_number=" + q), 400, PAGE_POSITIVE, "page_number=%r" % q)


def test_page_number_python_int_forms():
    s = _srv()
    slug = s.create("SELECT i FROM range(250) t(i) ORDER BY i")
    for q in ("%202%20", "%2B2", "02", "2"):
        r = s.results(slug, query="page_number=" + q)
        expect_status(r, 200, "page_number=%r" % q)
        body = jparse(r)
        eq(body["page"], 2, "page for page_number=%r" % q)
        eq(body["data"][0], {"i": 100}, "first row for page_number=%r" % q)


def test_page_number_huge():
    s = _srv()
    slug = s.create("SELECT 1 AS x")
    r = s.results(slug, query="page_number=9223372036854775807")
    expect_status(r, 200, "page_number=INT64_MAX")
    eq(jparse(r), {"query_slug": slug, "page": 9223372036854775807, "data": []}, "body for page INT64_MAX")
    r = s.results(slug, query="page_number=" + "9" * 30)
    if r.status == 200:
        eq(jparse(r)["data"], [], "data for a 30-digit page")
    else:
        expect_error(r, 400, what="30-digit page_number")


def test_page_number_checked_before_slug():
    s = _srv()
    expect_error(s.results("dapi-query-" + "Q" * 22, query="page_number=abc"), 400, PAGE_INVALID)
    expect_error(s.results("dapi-query-" + "Q" * 22, query="page_number=0"), 400, PAGE_POSITIVE)


def test_unknown_slugs_404():
    s = _srv()
    for slug in ("dapi-query-" + "A" * 22, "nope", "dapi-query-", "x" * 5000, "dapi-query-" + "a" * 21 + "%"):
        expect_error(s.results(slug, 1), 404, NOT_FOUND_QUERY, "slug %r" % slug[:40])


def test_traversal_slug_404():
    s = _srv()
    for path in (
        "/api/queries/..%2F..%2F..%2Fetc%2Fpasswd/results",
        "/api/queries/%2E%2E/results",
        "/api/queries/..%2Fdev-key/results",
        "/api/queries/%00/results",
    ):
        r = s.api("GET", path)
        expect_error(r, 404, what=path)
        check(b"root:" not in r.body, "body leaks file content: " + r.short())


def test_key_binding():
    s = _srv()
    slug = s.create("SELECT 7 AS seven", key=KEY_A)
    expect_error(s.results(slug, 1, key=KEY_B), 404, NOT_FOUND_QUERY, "other key reads the slug")
    eq(s.page(slug, 1, key=KEY_A), [{"seven": 7}], "creator reads the slug")
    expect_error(s.results(slug, 2, key=KEY_B), 404, NOT_FOUND_QUERY, "other key, page 2")


def test_results_wait_for_running_query():
    s = _srv()
    n = 200_000_000
    slug = s.create("SELECT sum(i) AS s, count(*) AS c FROM range(%d) t(i)" % n)
    r = s.results(slug, 1, timeout=120)
    expect_status(r, 200)
    row = r.raw().get("data")[0]
    eq(row.get("s"), h.Raw(str(n * (n - 1) // 2)), "sum (exact)")
    eq(row.get("c"), h.Raw(str(n)), "count")


# ----------------------------------------------------------------------------- routing errors


def test_unknown_routes_404_json():
    s = _srv()
    for method, path in (
        ("GET", "/api/nope"),
        ("POST", "/api/nope"),
        ("GET", "/nope"),
        ("GET", "/api/queries/x/other"),
        ("GET", "/api/health/x"),
    ):
        r = s.api(method, path, body=b"{}" if method == "POST" else None, headers={"Content-Type": "application/json"})
        expect_error(r, 404, "Not found", "%s %s" % (method, path))


def _allow(r):
    return {m.strip().upper() for m in r.headers.get("allow", "").split(",") if m.strip()}


def test_method_not_allowed_405():
    s = _srv()
    for method, path, allowed in (
        ("PATCH", "/api/queries", "POST"),
        ("PUT", "/api/queries", "POST"),
        ("DELETE", "/api/queries", "POST"),
        ("POST", "/api/health", "GET"),
        ("DELETE", "/api/health", "GET"),
        ("POST", "/api/queries/dapi-query-" + "A" * 22 + "/results", "GET"),
        ("DELETE", "/api/queries/dapi-query-" + "A" * 22 + "/results", "GET"),
    ):
        r = s.api(method, path, body=b"{}" if method in ("POST", "PUT") else None, headers={"Content-Type": "application/json"})
        expect_error(r, 405, what="%s %s" % (method, path))
        check(allowed in _allow(r), "%s %s: Allow header %r does not list %s" % (method, path, r.headers.get("allow"), allowed))


def test_keepalive_two_requests_one_connection():
    s = _srv()
    with s.raw() as c:
        for i in range(3):
            c.send(h.build_request("GET", "/api/health", port=s.port))
            r = c.read_response()
            expect_status(r, 200, "request %d on one connection" % (i + 1))
            eq(jparse(r), {"status": "ok"}, "health body")


def test_http10_request():
    s = _srv()
    with s.raw() as c:
        c.send(b"GET /api/health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        expect_status(r, 200)
        eq(jparse(r), {"status": "ok"}, "health body")


# ----------------------------------------------------------------------------- lake


def test_lake_file_formats():
    s = _srv()
    expected = [{"id": i, "name": n} for i, n in ROWS3]
    for table in ("csv_t", "tsv_t", "json_t", "ndjson_t", "jsonl_t"):
        slug = s.create(payload={"layer": "lk", "table": table})
        eq(_sorted_rows(s.page(slug, 1)), expected, '"lk"."%s" rows' % table)


def test_lake_sql_quoted_and_unquoted():
    s = _srv()
    expected = [{"id": i, "name": n} for i, n in ROWS3]
    eq(s.query('SELECT id, name FROM "lk"."csv_t" ORDER BY id'), expected, "quoted identifiers")
    eq(s.query("SELECT id, name FROM lk.csv_t ORDER BY id"), expected, "unquoted identifiers")
    eq(s.query('FROM "lk"."ndjson_t" SELECT name ORDER BY id'), [{"name": n} for _, n in ROWS3], "FROM-first")


def _sample_parquet():
    lake = h.sample_lake()
    p = h.find_lake_file(lake, "nekt_raw", "customers")
    if p:
        return p
    for dirpath, _, files in os.walk(lake):
        for f in sorted(files):
            if f.endswith(".parquet"):
                return os.path.join(dirpath, f)
    raise AssertionError("the sample lake %s has no .parquet file" % lake)


def _count(s, table_sql):
    rows = s.query("SELECT count(*) AS n FROM %s" % table_sql)
    return rows[0]["n"]


def test_lake_parquet_file_and_folder():
    s = _srv()
    src = _sample_parquet()
    tag = uuid.uuid4().hex[:8]
    layer = "pq_" + tag
    shutil.copy(src, os.path.join(_mkdir(s.data_dir, layer), "single.parquet"))
    folder = _mkdir(s.data_dir, layer, "folder")
    shutil.copy(src, os.path.join(folder, "part-0.parquet"))
    shutil.copy(src, os.path.join(folder, "part-1.parquet"))
    n = _count(s, '"%s"."single"' % layer)
    check(isinstance(n, int) and n > 0, "single parquet count %r" % n)
    eq(_count(s, '"%s"."folder"' % layer), 2 * n, "rows of a folder holding two copies")
    slug = s.create(payload={"layer": layer, "table": "folder", "limit": 3})
    eq(len(s.page(slug, 1)), 3, "mode 2 on a parquet folder, limit 3")


def test_lake_hive_partitions():
    s = _srv()
    src = _sample_parquet()
    layer = "hv_" + uuid.uuid4().hex[:8]
    for year in (2023, 2024):
        d = _mkdir(s.data_dir, layer, "events", "year=%d" % year)
        shutil.copy(src, os.path.join(d, "data_0.parquet"))
    shutil.copy(src, os.path.join(_mkdir(s.data_dir, layer), "one.parquet"))
    n = _count(s, '"%s"."one"' % layer)
    eq(_count(s, '"%s"."events"' % layer), 2 * n, "rows of a hive-partitioned folder")
    rows = s.query('SELECT DISTINCT CAST(year AS INTEGER) AS y FROM "%s"."events" ORDER BY y' % layer)
    eq(rows, [{"y": 2023}, {"y": 2024}], "hive partition column 'year'")


def _mkdir(*parts):
    p = os.path.join(*parts)
    os.makedirs(p, exist_ok=True)
    return p


def test_lake_new_and_replaced_files_visible():
    s = _srv()
    t = "fresh_" + uuid.uuid4().hex[:8]
    path = os.path.join(s.data_dir, "lk", t + ".csv")
    h.write_file(path, "v\n1\n")
    eq(s.query('SELECT v FROM "lk"."%s"' % t), [{"v": 1}], "a file added after start")
    h.write_file(path, "v\n2\n3\n")
    eq(s.query('SELECT v FROM "lk"."%s" ORDER BY v' % t), [{"v": 2}, {"v": 3}], "the replaced file")
    layer = "newlayer_" + uuid.uuid4().hex[:8]
    h.write_file(os.path.join(s.data_dir, layer, "t.ndjson"), '{"w": "x"}\n')
    slug = s.create(payload={"layer": layer, "table": "t"})
    eq(s.page(slug, 1), [{"w": "x"}], "a layer added after start")


def test_lake_non_table_files_ignored():
    s = _srv()
    body = expect_error(s.create_resp({"layer": "lk", "table": "notes"}), 400, what='"lk"."notes" (a .txt file)')
    check("details" in body, "expected details: %r" % body)
    # A broken file in another layer does not break the rest of the lake.
    eq(s.query('SELECT count(*) AS n FROM "lk"."csv_t"'), [{"n": 3}], "count with a broken file elsewhere")
    r = s.create_resp({"layer": "badlayer", "table": "broken"})
    if r.status == 200:
        r = s.results(jparse(r)["query_slug"], 1)
        check(r.status >= 400, "querying a corrupt parquet file gave " + r.short())
    expect_error(r, (400, 500), what="corrupt parquet")


# ----------------------------------------------------------------------------- logging


def test_access_log_has_method_path_status():
    s = _srv()
    path = "/api/nope-" + uuid.uuid4().hex
    s.api("GET", path)
    text = s.wait_stderr(lambda t: path in t)
    lines = [l for l in text.splitlines() if path in l]
    check(lines, "no access log line for GET %s in stderr:\n%s" % (path, h.tail_text(text, 10)))
    check(any("GET" in l and "404" in l for l in lines), "access log line lacks method or status: %r" % lines)
    eq(len(lines), 1, "access log lines for one request")
    s.create("SELECT 1")
    text = s.wait_stderr(lambda t: any("POST" in l and "/api/queries" in l and "200" in l for l in t.splitlines()))
    check(
        any("POST" in l and "/api/queries" in l and "200" in l for l in text.splitlines()),
        "no access log line for POST /api/queries 200:\n" + h.tail_text(text, 10),
    )


def test_log_never_contains_keys_or_query_values():
    s = _srv()
    slug = s.create("SELECT 1 AS x", key=KEY_A)
    s.create("SELECT 2 AS x", key=KEY_B)
    s.api("POST", "/api/queries", {"sql_query": "SELECT 1"}, key=WRONG_KEY)
    s.api("GET", "/api/queries/%s/results?page_number=1&secret=zzzsecretzzz" % slug)
    s.api("GET", "/api/queries/%s/results?page_number=qqqbadvalueqqq" % slug)
    marker = "/api/nope-" + uuid.uuid4().hex
    s.api("GET", marker)
    text = s.wait_stderr(lambda t: marker in t)
    check(marker in text, "access log line for the marker request not found")
    out = text + "\n" + s.stdout_text()
    for secret in (KEY_A, KEY_B, WRONG_KEY, "zzzsecretzzz", "qqqbadvalueqqq"):
        hits = [l for l in out.splitlines() if secret in l]
        check(not hits, "%r appears in the server's output: %r" % (secret, hits[:3]))


def test_json_log_format():
    with Server(args=["--log-format", "json"], keys=[KEY_A], name="jsonlog") as s:
        path = "/api/nope-" + uuid.uuid4().hex
        s.api("GET", path)
        text = s.wait_stderr(lambda t: path in t)
        lines = [l for l in text.splitlines() if l.strip()]
        check(lines, "no stderr output with --log-format json")
        for l in lines:
            try:
                obj = json.loads(l)
            except ValueError:
                raise AssertionError("stderr line is not JSON with --log-format json: %r" % l)
            check(isinstance(obj, dict), "log line is not a JSON object: %r" % l)
        hits = [json.loads(l) for l in lines if path in l]
        eq(len(hits), 1, "access log lines for the request")
        values = json.dumps(hits[0])
        check('"GET"' in values and "404" in values, "access log object lacks method/status: %r" % hits[0])


def test_api_keys_file():
    d = h.tmpdir("keys")
    kf = os.path.join(d, "keys")
    h.write_file(kf, "# comment line\n\nkf-one-5c1e\n#kf-hidden-77aa\nkf-two-9d0b\n\n")
    with Server(args=["--api-keys-file", kf], keys=None, name="keysfile") as s:
        s.create("SELECT 1", key="kf-one-5c1e")
        s.create("SELECT 1", key="kf-two-9d0b")
        for bad in ("kf-hidden-77aa", "#kf-hidden-77aa", "# comment line", "comment line"):
            expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=bad), 401, INVALID_KEY, "key %r" % bad)
        expect_error(s.create_resp({"sql_query": "SELECT 1"}, key=None), 401, MISSING_KEY)


def _error_body(r, what):
    """The body of an error answer: a JSON object with an "error" string and, if present, a
    "details" string (never a fragment such as ,"error":"Invalid SQL query"})."""
    check(r.status >= 400, "%s: expected an error, observed %s" % (what, r.short(200)))
    try:
        body = json.loads(r.body.decode("utf-8"))
    except ValueError as e:
        raise AssertionError("%s: HTTP %d body is not JSON (%s): %r" % (what, r.status, e, r.body[:120]))
    check(isinstance(body, dict) and isinstance(body.get("error"), str), "%s: no error string: %r" % (what, r.body[:200]))
    check("details" not in body or isinstance(body["details"], str), "%s: details not a string" % what)
    return body


@h.timeout(120)
def test_error_bodies_are_json_at_any_size():
    """Regression (issue 9): error answers to inputs of growing size. With 22,000 U+0001 in an
    identifier, DuckDB's message echoes it twice; its JSON (6 bytes a character) passed the
    256 KiB body cap and the details were dropped; at 40,000 characters the engine's 64 KiB
    message buffer failed and the details were empty. Now every body parses, and details are
    never dropped: past 16 KiB DuckDB's message is cut to a prefix that says so (and no details
    pass 32 KiB), and a failed run's message is cut to the stored 1 KiB, also saying so."""
    args = ["--max-sql-bytes", str(4 << 20), "--max-body-bytes", str(16 << 20)]
    with Server(args=args, keys=[KEY_A], name="bigerrors") as s:
        for n in (1000, 10000, 22000, 40000, 100000, 300000):
            ctl = "\x01" * n
            # refused at creation (binder, catalog, parser): DuckDB's message, bounded
            for sql, starts in (
                ('SELECT "%s"' % ctl, "Binder Error"),
                ('SELECT * FROM "%s"' % ctl, "table "),  # the sandbox's refusal, naming it
                ("SELECT '%s' +" % ctl, "Parser Error"),
            ):
                what = "%r with %d x U+0001" % (starts, n)
                body = _error_body(s.create_resp({"sql_query": sql}), what)
                eq(body["error"], "Invalid SQL query", what)
                d = body.get("details", "")
                check(d.startswith(starts), "%s: details should be the refusal, got %r" % (what, d[:80]))
                check(len(d.encode()) <= 32 * 1024 + 100, "%s: details of %d bytes" % (what, len(d.encode())))
                if len(d) > 16 * 1024:
                    check(re.search(r" \.\.\. \(cut to its first \d+ of \d+ bytes\)$", d), "%s: a cut without a note: %r" % (what, d[-80:]))
            # failing while it runs: the execution-failure shape, with the start of the message
            slug = s.create("SELECT CAST('%s' AS INTEGER) AS n" % ctl)
            what = "run-time error with %d x U+0001" % n
            body = _error_body(s.results(slug, 1), what)
            eq(body["error"], "Query execution failed", what)
            eq(body.get("query_slug"), slug, what)
            d = body.get("details", "")
            check(d.startswith("Conversion Error"), "%s: details %r" % (what, d[:80]))
            if n >= 1000:
                check(d.endswith(" ... (cut)"), "%s: a cut message should say so: %r" % (what, d[-40:]))
            # other inputs that provoke errors, just as large
            big = "x" * (n * 6)
            for r, what in (
                (s.api("POST", "/api/queries", body=b'{"sql_query": "' + big.encode(), headers={"Content-Type": "application/json"}), "malformed JSON"),
                (s.create_resp({"layer": big, "table": "t"}), "invalid layer name"),
                (s.create_resp({"sql_query": "SELECT 1", "layer": big}), "sql_query with layer"),
                (s.results("dapi-query-" + "A" * 22, page=big[:2000]), "invalid page_number"),
            ):
                _error_body(r, "%s of %d bytes" % (what, len(big)))
        # a column named by a 300,000-character expression: a reason, not "Request too large"
        slug = s.create("SELECT '%s' || 'x'" % ("\x01" * 300000))
        body = _error_body(s.results(slug, 1), "a column name over 1 MiB of JSON")
        check("name it with AS" in body.get("details", ""), "details: %r" % body.get("details", "")[:200])
