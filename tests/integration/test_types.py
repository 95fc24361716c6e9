"""DuckDB value -> JSON mapping, one test per case, checked on the raw bytes: numbers are
compared as their exact source text (never via float), objects with their key order.

The server runs with TZ=America/Sao_Paulo so that TIMESTAMPTZ must really be rendered in UTC."""

import harness as h
from harness import Server, Shared, check, eq, expect_status

KEY = "it-types-key-0c4d"
SRV = Shared(lambda: Server(keys=[KEY], env={"TZ": "America/Sao_Paulo"}, name="types"))


def _srv():
    return SRV.get()


def _row(sql):
    s = _srv()
    slug = s.create(sql)
    r = s.results(slug, 1)
    expect_status(r, 200, "results of %r" % sql)
    body = r.raw()  # asserts JSON content type, strict UTF-8 and valid JSON
    data = body.get("data")
    check(isinstance(data, list) and len(data) == 1, "expected exactly one row, observed %s" % r.short())
    return data[0], r


def _float_is(target, tol=0.0):
    def chk(row, r):
        v = row.get("v")
        check(isinstance(v, h.Raw), "expected a JSON number, observed %r (%s)" % (v, r.short()))
        f = float(v.text)
        if tol:
            check(abs(f - target) <= tol, "expected about %r, observed %s" % (target, v.text))
        else:
            eq(f, target, "number %s parsed" % v.text)

    return chk


VARCHAR_VALUE = 'he said "hi" \\\n\t\r\x01\x1f\x7fé 日本 😀 \u2028/'
VARCHAR_SQL = (
    "SELECT 'he said \"hi\" ' || chr(92) || chr(10) || chr(9) || chr(13) || chr(1) || chr(31) || chr(127)"
    " || 'é 日本 😀 ' || chr(8232) || '/' AS v"
)

CASES = [
    ("tinyint", "SELECT (-128)::TINYINT AS v", '{"v":-128}'),
    ("utinyint", "SELECT 255::UTINYINT AS v", '{"v":255}'),
    ("smallint", "SELECT 32767::SMALLINT AS v", '{"v":32767}'),
    ("integer_min", "SELECT (-2147483648)::INTEGER AS v", '{"v":-2147483648}'),
    ("uinteger_max", "SELECT 4294967295::UINTEGER AS v", '{"v":4294967295}'),
    ("bigint_max", "SELECT 9223372036854775807::BIGINT AS v", '{"v":9223372036854775807}'),
    ("bigint_min", "SELECT '-9223372036854775808'::BIGINT AS v", '{"v":-9223372036854775808}'),
    ("bigint_2p53_plus_1", "SELECT 9007199254740993::BIGINT AS v", '{"v":9007199254740993}'),
    ("ubigint_max", "SELECT '18446744073709551615'::UBIGINT AS v", '{"v":18446744073709551615}'),
    (
        "hugeint_max",
        "SELECT '170141183460469231731687303715884105727'::HUGEINT AS v",
        '{"v":170141183460469231731687303715884105727}',
    ),
    (
        "hugeint_min",
        "SELECT '-170141183460469231731687303715884105728'::HUGEINT AS v",
        '{"v":-170141183460469231731687303715884105728}',
    ),
    ("hugeint_small", "SELECT (-5)::HUGEINT AS v", '{"v":-5}'),
    (
        "uhugeint_max",
        "SELECT '340282366920938463463374607431768211455'::UHUGEINT AS v",
        '{"v":340282366920938463463374607431768211455}',
    ),
    ("double_0_1", "SELECT 0.1::DOUBLE AS v", '{"v":0.1}'),
    ("double_one_third", "SELECT 1::DOUBLE / 3 AS v", '{"v":0.3333333333333333}'),
    ("double_3_0", "SELECT 3.0::DOUBLE AS v", '{"v":3.0}'),
    ("double_negative", "SELECT (-2.5)::DOUBLE AS v", '{"v":-2.5}'),
    ("double_17_digits", "SELECT 8.142857142857142::DOUBLE AS v", '{"v":8.142857142857142}'),
    ("double_large", "SELECT 1e300::DOUBLE AS v", _float_is(1e300)),
    ("double_subnormal", "SELECT 5e-324::DOUBLE AS v", _float_is(5e-324)),
    ("double_1e17", "SELECT 1e17::DOUBLE AS v", _float_is(1e17)),
    ("double_in_list", "SELECT [0.1::DOUBLE, 2.0::DOUBLE] AS v", '{"v":[0.1,2.0]}'),
    ("float_0_1", "SELECT 0.1::FLOAT AS v", _float_is(0.1, 1e-7)),
    ("decimal_12_50", "SELECT 12.50::DECIMAL(10,2) AS v", '{"v":12.50}'),
    ("decimal_negative_fraction", "SELECT '-0.05'::DECIMAL(10,2) AS v", '{"v":-0.05}'),
    ("decimal_zero", "SELECT 0::DECIMAL(10,2) AS v", '{"v":0.00}'),
    ("decimal_small_width", "SELECT 1.5::DECIMAL(4,1) AS v", '{"v":1.5}'),
    ("decimal_18_3", "SELECT '-123456789012345.678'::DECIMAL(18,3) AS v", '{"v":-123456789012345.678}'),
    (
        "decimal_38_10",
        "SELECT '12345678901234567890.1234567890'::DECIMAL(38,10) AS v",
        '{"v":12345678901234567890.1234567890}',
    ),
    ("decimal_scale_0", "SELECT 42::DECIMAL(5,0) AS v", '{"v":42}'),
    ("varchar_escapes_and_unicode", VARCHAR_SQL, h.json.dumps({"v": VARCHAR_VALUE})),
    ("varchar_empty", "SELECT '' AS v", '{"v":""}'),
    ("boolean", "SELECT true AS t, false AS f", '{"t":true,"f":false}'),
    ("null", "SELECT NULL AS a, NULL::INTEGER AS b, NULL::VARCHAR AS c, NULL::INTEGER[] AS d", '{"a":null,"b":null,"c":null,"d":null}'),
    ("date", "SELECT DATE '2024-02-29' AS v", '{"v":"2024-02-29"}'),
    ("timestamp_millis", "SELECT TIMESTAMP '2024-01-02 03:04:05.678901' AS v", '{"v":"2024-01-02T03:04:05.678"}'),
    ("timestamp_whole_seconds", "SELECT TIMESTAMP '2024-01-02 03:04:05' AS v", '{"v":"2024-01-02T03:04:05.000"}'),
    ("timestamp_before_epoch", "SELECT TIMESTAMP '1969-12-31 23:59:59.5' AS v", '{"v":"1969-12-31T23:59:59.500"}'),
    (
        "timestamptz_utc",
        "SELECT TIMESTAMPTZ '2024-01-02 03:04:05.678901+00' AS v",
        '{"v":"2024-01-02T03:04:05.678Z"}',
    ),
    (
        "timestamptz_offset_converted_to_utc",
        "SELECT TIMESTAMPTZ '2024-01-02 03:04:05+02:00' AS v",
        '{"v":"2024-01-02T01:04:05.000Z"}',
    ),
    ("list", "SELECT [1, 2, NULL] AS v", '{"v":[1,2,null]}'),
    ("list_empty", "SELECT []::INTEGER[] AS v", '{"v":[]}'),
    ("list_nested", "SELECT [[1], [2, 3], []] AS v", '{"v":[[1],[2,3],[]]}'),
    ("list_of_structs", "SELECT [{'a': 1}, {'a': NULL}] AS v", '{"v":[{"a":1},{"a":null}]}'),
    ("list_of_strings", "SELECT ['x', NULL, 'y\"z'] AS v", '{"v":["x",null,"y\\"z"]}'),
    ("struct", "SELECT {'a': 1, 'b': 'x'} AS v", '{"v":{"a":1,"b":"x"}}'),
    ("struct_nested", "SELECT {'a': {'b': [1]}, 'c': NULL} AS v", '{"v":{"a":{"b":[1]},"c":null}}'),
    ("map", "SELECT MAP {'k': 1} AS v", '{"v":{"k":1}}'),
    ("map_two_keys", "SELECT MAP {'a': 1, 'b': 2} AS v", '{"v":{"a":1,"b":2}}'),
    ("blob", "SELECT '\\xAA\\xBB'::BLOB AS v", '{"v":"qrs="}'),
    ("blob_empty", "SELECT ''::BLOB AS v", '{"v":""}'),
    ("blob_text", "SELECT 'abc'::BLOB AS v", '{"v":"YWJj"}'),
    ("nan", "SELECT 'NaN'::DOUBLE AS v", '{"v":null}'),
    ("infinities", "SELECT 'inf'::DOUBLE AS a, '-inf'::DOUBLE AS b", '{"a":null,"b":null}'),
    ("float_nan", "SELECT 'NaN'::FLOAT AS v", '{"v":null}'),
    ("nan_in_list", "SELECT ['NaN'::DOUBLE, 1.5::DOUBLE] AS v", '{"v":[null,1.5]}'),
    ("uuid", "SELECT '12345678-1234-5678-1234-567812345678'::UUID AS v", '{"v":"12345678-1234-5678-1234-567812345678"}'),
    ("column_name_escaping", 'SELECT 1 AS "we""ird é 日\\"', '{"we\\"ird é 日\\\\":1}'),
    ("column_order_kept", "SELECT 3 AS z, 1 AS a, 2 AS m", '{"z":3,"a":1,"m":2}'),
]


def _make(name, sql, expected):
    def t():
        row, r = _row(sql)
        if callable(expected):
            expected(row, r)
        else:
            eq(row, h.raw_loads(expected), "row for %r" % sql)

    t.__name__ = "test_type_" + name
    t.__qualname__ = t.__name__
    t.__doc__ = sql
    return t


for _name, _sql, _expected in CASES:
    globals()["test_type_" + _name] = _make(_name, _sql, _expected)


def test_type_rows_with_nulls_mixed():
    s = _srv()
    rows = s.query("SELECT * FROM (VALUES (1, 'a', 1.5::DOUBLE), (NULL, NULL, NULL)) t(x, y, z)")
    eq(rows, [{"x": 1, "y": "a", "z": 1.5}, {"x": None, "y": None, "z": None}], "rows")


def test_type_values_on_later_pages():
    s = _srv()
    slug = s.create("SELECT i, i::DOUBLE / 4 AS d, 'r' || i AS s, [i] AS l FROM range(205) t(i) ORDER BY i")
    r = s.results(slug, 3)
    expect_status(r, 200)
    data = r.raw().get("data")
    eq(
        list(data),
        [h.raw_loads('{"i":%d,"d":%s,"s":"r%d","l":[%d]}' % (i, repr(i / 4), i, i)) for i in range(200, 205)],
        "page 3 rows",
    )
