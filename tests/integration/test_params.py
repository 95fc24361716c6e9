"""Bind parameters on POST /api/queries (docs/api.md "Bind parameters"): "params" values are
bound to the SQL's $names by DuckDB, never spliced into the text; a missing, unknown or
wrongly typed parameter is a 400 naming it; reuse keys on the typed values; the Nekt backend
refuses them; without "params" nothing changes."""

import json
import os
import re
from decimal import Decimal

import harness as h
from harness import Server, check, eq, expect_error, jparse

KEY = "it-params-key-7f21"


def _lake():
    return h.shop_lake("params-lake")


def _server(**kw):
    return Server(keys=[KEY], data_dir=_lake(), name="params", **kw)


def _post(s, sql, params=None, key="", extra=None):
    body = {"sql_query": sql}
    if params is not None:
        body["params"] = params
    body.update(extra or {})
    return s.api("POST", "/api/queries", body=body, key=key)


def _rows(s, sql, params, key=""):
    r = _post(s, sql, params, key=key)
    check(r.status == 200, "create %r %r: %s" % (sql, params, r.short()))
    return s.all_rows(jparse(r)["query_slug"], key=key)


Q = 'SELECT id, name FROM "shop"."customers" WHERE %s ORDER BY id'


def test_binds_every_type():
    with _server() as s:
        eq(_rows(s, Q % "country = $c", {"c": "US"}), [{"id": 1, "name": "Ann"}, {"id": 3, "name": "Zoë"}],
           "varchar")
        eq(_rows(s, Q % "id = $i", {"i": 2}), [{"id": 2, "name": "Bob"}], "integer")
        eq(_rows(s, Q % "amount > $a", {"a": 30.4}), [{"id": 1, "name": "Ann"}, {"id": 3, "name": "Zoë"}],
           "double")
        eq(_rows(s, Q % "amount > $a", {"a": 30}), [{"id": 1, "name": "Ann"}, {"id": 3, "name": "Zoë"}],
           "an integer where a number goes")
        eq(_rows(s, Q % "vip = $v", {"v": False}), [{"id": 2, "name": "Bob"}, {"id": 4, "name": "O'Brien"}],
           "boolean")
        eq(_rows(s, Q % "since >= $d", {"d": "2024-01-01"}),
           [{"id": 1, "name": "Ann"}, {"id": 4, "name": "O'Brien"}], "date from a string")
        eq(_rows(s, Q % "country IN (SELECT unnest($l))", {"l": ["DE", "IE"]}),
           [{"id": 2, "name": "Bob"}, {"id": 4, "name": "O'Brien"}], "list")
        eq(_rows(s, Q % "list_contains($l, id)", {"l": [1, 4]}),
           [{"id": 1, "name": "Ann"}, {"id": 4, "name": "O'Brien"}], "list of integers")
        eq(_rows(s, Q % "name = $n", {"n": "Zoë"}), [{"id": 3, "name": "Zoë"}], "unicode")
        eq(_rows(s, Q % "name = $n", {"n": "O'Brien"}), [{"id": 4, "name": "O'Brien"}], "a quote")
        eq(_rows(s, Q % "country = $c OR $c IS NULL", {"c": None}), [{"id": i, "name": n} for i, n in
           [(1, "Ann"), (2, "Bob"), (3, "Zoë"), (4, "O'Brien")]], "NULL")
        eq(_rows(s, "SELECT $x AS x, $y AS y, $z AS z, $n AS n", {"x": "a", "y": 1, "z": 1.5, "n": None}),
           [{"x": "a", "y": 1, "z": 1.5, "n": None}], "untyped parameters take the value's type")
        # the same parameter used twice binds one value
        eq(_rows(s, Q % "country = $c AND $c <> 'DE'", {"c": "US"}), [{"id": 1, "name": "Ann"}, {"id": 3, "name": "Zoë"}],
           "twice")


DEC_SQL = ("SELECT v FROM (VALUES (1234567890123456789.0123456789::DECIMAL(38,10)), "
           "(1234567890123456789.0123456788::DECIMAL(38,10)), (0.1::DECIMAL(38,10)), "
           "(0.3::DECIMAL(38,10))) t(v) WHERE v %s $v ORDER BY v")


def _exact(s, sql, number_text, what):
    """Creates sql with {"v": number_text} sent as written (Python's json would round it to a
    double); returns (slug, the rows' v as Decimal)."""
    body = '{"sql_query": %s, "params": {"v": %s}}' % (json.dumps(sql), number_text)
    r = s.api("POST", "/api/queries", body=body, headers={"Content-Type": "application/json"})
    check(r.status == 200, "%s: create: %s" % (what, r.short()))
    slug = jparse(r)["query_slug"]
    page = s.api("GET", "/api/queries/%s/results?page_number=1" % slug)
    check(page.status == 200, "%s: page 1: %s" % (what, page.short()))
    return slug, [row["v"] for row in json.loads(page.body, parse_float=Decimal)["data"]]


def test_decimal_parameters_keep_every_digit():
    """A number bound to a DECIMAL parameter is the number as written, not its double: two
    values that differ in the 29th digit are two values, and 0.1 is 0.1."""
    big = "1234567890123456789.0123456789"
    with _server() as s:
        slug, got = _exact(s, DEC_SQL % "=", big, "DECIMAL(38,10) = 29 digits")
        eq(got, [Decimal(big)], "exactly the row with those digits (a double matched both)")
        st = s.api("GET", "/api/queries/%s" % slug)
        check(('"params":{"v":%s}' % big).encode() in st.body,
              "the status shows the value as sent: %r" % st.body[-200:])
        eq(_exact(s, DEC_SQL % ">=", "1234567890123456789.0123456789", "DECIMAL >=")[1], [Decimal(big)],
           ">= the larger one")
        for text in ("0.1", "0.10", "1E-1", "1.0e-1"):
            eq(_exact(s, DEC_SQL % "=", text, "0.1 as %s" % text)[1], [Decimal("0.1000000000")],
               "0.1 written as %s" % text)
        # a list of them, for list_contains (the parameter is a DECIMAL(38,10)[])
        in_list = DEC_SQL.replace("WHERE v %s $v", "WHERE list_contains($v, v)")
        eq(_exact(s, in_list, "[%s, 0.10, null]" % big, "a list")[1], [Decimal("0.1000000000"), Decimal(big)],
           "the list's values exactly")
        # out of range for the parameter's type: the usual 400 naming it
        body = '{"sql_query": %s, "params": {"v": 1.5e40}}' % json.dumps(DEC_SQL % "=")
        r = s.api("POST", "/api/queries", body=body, headers={"Content-Type": "application/json"})
        expect_error(r, 400, "Invalid query parameter", what="1.5e40 for a DECIMAL(38,10)")
        check("DECIMAL(38,10)" in (jparse(r).get("details") or ""), "details name the type: %r" % r.body)
        # where the type is not inferred, a number is still a DOUBLE
        eq(_rows(s, "SELECT $v AS v, typeof($v) AS t", {"v": 0.5}), [{"v": 0.5, "t": "DOUBLE"}],
           "an uninferred number")


def test_integers_beyond_64_bits_bind_exactly():
    """JSON integers of any size (Python writes them as they are): a HUGEINT, UHUGEINT or
    UBIGINT parameter takes every digit; the old parser refused the body (400 Malformed JSON),
    and a double would have matched both 30-digit rows."""
    big = 123456789012345678901234567890
    hsql = ("SELECT v FROM (VALUES (CAST('%d' AS HUGEINT)), (CAST('%d' AS HUGEINT)), "
            "(CAST(-5 AS HUGEINT))) t(v) WHERE v %%s $v ORDER BY v" % (big, big + 1))
    with _server() as s:
        eq(_rows(s, hsql % "=", {"v": big}), [{"v": big}], "HUGEINT, exactly")
        eq(_rows(s, hsql % "<=", {"v": -big}), [], "a negative one")
        eq(_rows(s, hsql % ">", {"v": big}), [{"v": big + 1}], "HUGEINT >")
        umax = 2 ** 64 - 1
        usql = "SELECT v FROM (VALUES (CAST('%d' AS UBIGINT)), (CAST('%d' AS UBIGINT))) t(v) WHERE v = $v" % (umax, umax - 1)
        eq(_rows(s, usql, {"v": umax}), [{"v": umax}], "UBIGINT max")
        eq(_rows(s, "SELECT $v AS v, typeof($v) AS t", {"v": big}), [{"v": big, "t": "HUGEINT"}],
           "an uninferred one is a HUGEINT")
        r = _post(s, "SELECT * FROM (VALUES (1)) t(v) WHERE v = $v", {"v": 2 ** 63})
        expect_error(r, 400, "Invalid query parameter", what="2**63 for an INTEGER")
        check("not a valid INTEGER" in (jparse(r).get("details") or ""), "details name the type: %r" % r.body)
        slug = jparse(_post(s, hsql % "=", {"v": big}))["query_slug"]
        st = s.api("GET", "/api/queries/%s" % slug)
        check(('"params":{"v":%d}' % big).encode() in st.body, "the status shows the digits: %r" % st.body[-200:])


def test_injection_attempts_are_data():
    with _server() as s:
        for v in ["US' OR '1'='1", "' OR '1'='1", "US; DROP TABLE x", "US --", "US\"", "x'); SELECT 1; --",
                  "$c", "\\", "'' OR 1=1 --"]:
            eq(_rows(s, Q % "country = $c", {"c": v}), [], "%r matches nothing" % v)
            eq(_rows(s, "SELECT $c AS v", {"c": v}), [{"v": v}], "%r comes back as it was sent" % v)


def test_missing_unknown_and_wrongly_typed_parameters_are_400_naming_them():
    with _server() as s:
        r = _post(s, Q % "country = $country", {})
        expect_error(r, 400, "Invalid query parameter", "missing")
        check("'country'" in jparse(r)["details"], "names it: %s" % r.short())
        r = _post(s, Q % "country = $country", {"country": "US", "limt": 5})
        expect_error(r, 400, "Invalid query parameter", "unknown")
        check("'limt'" in jparse(r)["details"], "names it: %s" % r.short())
        r = _post(s, Q % "id = $i", {"i": "2"})
        expect_error(r, 400, "Invalid query parameter", "a string for an integer")
        check("'i'" in jparse(r)["details"] and "integer" in jparse(r)["details"], r.short())
        r = _post(s, Q % "since = $d", {"d": "2024-13-45"})
        expect_error(r, 400, "Invalid query parameter", "not a date")
        check("'d'" in jparse(r)["details"] and "DATE" in jparse(r)["details"], r.short())
        r = _post(s, Q % "vip = $v", {"v": 1})
        expect_error(r, 400, "Invalid query parameter", "a number for a boolean")
        r = _post(s, Q % "country = $c", {"c": {"a": 1}})
        expect_error(r, 400, "Invalid query parameter", "an object")
        check("'c'" in jparse(r)["details"], r.short())
        r = _post(s, Q % "country = $c", {"c": [["US"]]})
        expect_error(r, 400, "Invalid query parameter", "nested list")
        r = _post(s, Q % "country = $c", {"c": ["US", 1]})
        expect_error(r, 400, "Invalid query parameter", "mixed list")
        r = _post(s, Q % "country = $c", ["US"])
        expect_error(r, 400, "Invalid query parameter", "params not an object")
        r = _post(s, Q % "country = $c", {"1bad": "x"})
        expect_error(r, 400, "Invalid query parameter", "a name that cannot be a $name")
        r = _post(s, Q % "country = $c", {"c": "US\u0000"})
        expect_error(r, 400, "Invalid query parameter", "NUL")
        # positional parameters are refused even with params
        r = _post(s, Q % "country = $1", {"1": "US"})
        expect_error(r, 400, None, "positional")
        r = _post(s, Q % "country = ?", {"c": "US"})
        expect_error(r, 400, None, "?")
        # params without sql_query
        r = s.api("POST", "/api/queries", body={"layer": "shop", "table": "customers", "params": {"c": 1}})
        expect_error(r, 400, "Invalid query parameter", "params with layer/table")


def test_parameters_cannot_name_files_or_tables():
    with _server() as s:
        r = _post(s, "SELECT * FROM read_csv($p)", {"p": "shop/customers.csv"})
        expect_error(r, 400, "Invalid SQL query", "a file path from a parameter")
        r = _post(s, "SELECT * FROM query_table($t)", {"t": "shop.customers"})
        check(r.status in (400, 403), "a table name from a parameter: %s" % r.short())


def test_without_params_nothing_changes():
    with _server() as s:
        # the refusal of $name without params is the old one
        r = _post(s, Q % "country = $c")
        expect_error(r, 400, "Invalid SQL query", "a parameter without params")
        eq(_rows(s, Q % "country = 'DE'", None), [{"id": 2, "name": "Bob"}], "plain")
        # "params": null is no params
        r = _post(s, Q % "country = 'DE'", None, extra={"params": None})
        eq(r.status, 200, "null params: %s" % r.short())


def test_reuse_keys_on_typed_values():
    with _server() as s:
        sql = "SELECT $v AS v, count(*) AS n FROM \"shop\".\"customers\""

        def create(params):
            r = _post(s, sql, params)
            check(r.status == 200, r.short())
            return jparse(r)["query_slug"], r.headers.get("x-dapi-reused")

        a, ra = create({"v": "1"})
        eq(ra, None, "first")
        eq(s.all_rows(a), [{"v": "1", "n": 4}], "rows of a")
        b, rb = create({"v": "1"})
        eq(rb, "true", "the same values reuse")
        c, rc = create({"v": 1})
        eq(rc, None, "1 and \"1\" differ")
        eq(s.all_rows(c), [{"v": 1, "n": 4}], "rows of c")
        d, rd = create({"v": "2"})
        eq(rd, None, "another value")
        eq(s.all_rows(d), [{"v": "2", "n": 4}], "rows of d")
        # the order of the names does not matter
        s2 = "SELECT $a AS a, $b AS b"
        r1 = _post(s, s2, {"a": 1, "b": "x"})
        s.all_rows(jparse(r1)["query_slug"])
        r2 = _post(s, s2, {"b": "x", "a": 1})
        eq(r2.headers.get("x-dapi-reused"), "true", "names in another order")


def test_status_shows_params_and_restart_keeps_them():
    with _server() as s:
        r = _post(s, Q % "country = $c", {"c": "US"})
        slug = jparse(r)["query_slug"]
        s.all_rows(slug)
        st = jparse(s.api("GET", "/api/queries/%s" % slug))
        eq(st.get("params"), {"c": "US"}, "status shows the params")
        plain = jparse(_post(s, Q % "country = 'US'"))["query_slug"]
        s.all_rows(plain)
        check("params" not in jparse(s.api("GET", "/api/queries/%s" % plain)), "no params: no member")
        s.restart()
        eq(s.all_rows(slug), [{"id": 1, "name": "Ann"}, {"id": 3, "name": "Zoë"}], "after a restart")
        eq(jparse(s.api("GET", "/api/queries/%s" % slug)).get("params"), {"c": "US"}, "kept")


def test_a_value_that_fails_at_run_time_is_the_query_failure():
    with _server() as s:
        # an untyped parameter compared with a column: DuckDB casts at run time
        r = _post(s, 'SELECT * FROM "shop"."customers" WHERE id = CAST($v AS INTEGER)', {"v": "abc"})
        if r.status == 200:
            res = s.results(jparse(r)["query_slug"], 1)
            check(res.status >= 400, "the run fails: %s" % res.short())
        else:
            eq(r.status, 400, r.short())


def test_nekt_backend_refuses_params():
    with Server(keys=None, args=["--backend", "nekt", "--nekt-url", "http://127.0.0.1:9"],
                name="params-nekt") as s:
        r = _post(s, "SELECT $c AS c", {"c": "US"}, key="it-params-nekt-key")
        expect_error(r, 400, "Invalid query parameter", "nekt")
        check("nekt" in jparse(r)["details"] and "splice" in jparse(r)["details"], r.short())
