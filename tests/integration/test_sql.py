"""SQL accepted and refused at creation, run-time failures, the sample lake, big results.

The server reads the shared sample lake (`dapi sample-data`) and must not let a query
change state, write or read files outside the data dir, or read the environment."""

import os

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse

KEY = "it-sql-key-SECRET-5e7a91c3"


def _secret_file():
    d = os.path.join(h.root_dir(), "outside-secret")
    p = os.path.join(d, "secret.csv")
    if not os.path.exists(p):
        h.write_file(p, "secretcol\nTOPSECRET-8c2f41\n")
    return p


SRV = Shared(lambda: Server(keys=[KEY], data_dir=h.sample_lake(), name="sql"))


def _srv():
    return SRV.get()


def _create_error(sql, status=400):
    return expect_error(_srv().create_resp({"sql_query": sql}), status, what="SQL %r" % sql[:120])


def _details(body):
    d = body.get("details")
    check(isinstance(d, str) and d, 'expected a non-empty "details" string, observed %r' % body)
    return d


# ----------------------------------------------------------------------------- validation errors


def test_syntax_error_has_details():
    for sql in ("SELECT 1 +", "SELECT * FROM WHERE x", "SELECT (1"):
        body = _create_error(sql)
        check("syntax error" in _details(body).lower(), "details should carry DuckDB's parser message: %r" % body)


def test_error_says_line_and_column():
    """Regression (issue 9): DuckDB's caret line, once the details were printed on one line
    (as `dapi query` does), pointed at nothing. The details now say the line and the column
    up front, and keep DuckDB's lines (the query's line and the caret under the error)."""
    for sql, where, block in (
        ("SELECT 1 AS a,\n  2 +\nFROM range(3)", "Parser Error at line 3, column 1: ", "\n\nLINE 3: FROM range(3)\n        ^"),
        ("SELECT\n\tnope_col_z\nFROM range(3)", "Binder Error at line 2, column 2: ", "\n\nLINE 2: \tnope_col_z\n        ^"),
    ):
        d = _details(_create_error(sql))
        check(d.startswith(where), "details should start with %r: %r" % (where, d))
        check(d.endswith(block), "details should keep DuckDB's LINE block %r: %r" % (block, d))
    # a run-time error too: the execution-failure shape
    s = _srv()
    slug = s.create("SELECT 1 AS a,\n       CAST('x' AS INTEGER) AS b")
    body = expect_error(s.results(slug, 1), 400, "Query execution failed")
    check(_details(body).startswith("Conversion Error at line 2, column 8: "), "run-time details: %r" % body)


def test_misspelled_keyword_is_a_syntax_error():
    body = _create_error("SELEC 1")
    check("syntax error" in _details(body).lower(), "details should carry DuckDB's parser message: %r" % body)


def test_unknown_table_has_details():
    body = _create_error('SELECT * FROM "nekt_raw"."no_such_table_x"')
    check("no_such_table_x" in _details(body), "details should name the table: %r" % body)


def test_unknown_column_has_details():
    body = _create_error("SELECT no_such_col_y FROM range(3)")
    check("no_such_col_y" in _details(body), "details should name the column: %r" % body)


def test_unknown_function_400():
    body = _create_error("SELECT no_such_fn_z(1)")
    check("no_such_fn_z" in _details(body), "details should name the function: %r" % body)


def test_empty_sql_rejected():
    for sql in ("   ", ";", "-- only a comment", "/* nothing */"):
        _create_error(sql)


# ----------------------------------------------------------------------------- refused statements


def _refused_sqls():
    t = h.tmpdir("refused")
    return t, [
        "COPY (SELECT 1) TO '%s/copy-out.csv'" % t,
        'COPY "nekt_raw"."customers" TO \'%s/copy-out2.csv\'' % t,
        "EXPORT DATABASE '%s/export'" % t,
        "IMPORT DATABASE '%s/import'" % t,
        "ATTACH '%s/evil.duckdb' AS evil" % t,
        "ATTACH ':memory:' AS evil_mem",
        "DETACH DATABASE IF EXISTS evil",
        "INSTALL parquet",
        "LOAD parquet",
        "SET threads = 1",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "RESET threads",
        "PRAGMA threads=1",
        "PRAGMA database_list",
        "CREATE TABLE it_t AS SELECT 1 AS a",
        "CREATE TEMP TABLE it_tt AS SELECT 1 AS a",
        "CREATE VIEW it_v AS SELECT 1 AS a",
        "CREATE MACRO it_m(x) AS x + 1",
        "CREATE SCHEMA it_schema",
        "CREATE SECRET it_s (TYPE S3, KEY_ID 'a', SECRET 'b')",
        "DROP TABLE IF EXISTS it_t",
        "DROP SCHEMA IF EXISTS it_schema",
        "ALTER TABLE IF EXISTS it_t RENAME TO it_u",
        "INSERT INTO it_t VALUES (1)",
        "UPDATE it_t SET a = 2",
        "DELETE FROM it_t",
        "CALL pragma_version()",
        "CHECKPOINT",
        "VACUUM",
        # Case, whitespace and comments do not hide a statement's kind.
        "  copy (select 1) to '%s/copy-out3.csv'" % t,
        "/* c */ SET threads = 1",
        "-- c\nCHECKPOINT",
        "\n\tcreate table it_t2 as select 1",
        # Multiple statements.
        "SELECT 1; SELECT 2",
        "SELECT 1;SELECT 2;",
        "SELECT 1; DROP TABLE IF EXISTS it_t",
        "SELECT 1; -- x\nSET threads = 1",
        "SET threads = 1; SELECT 1",
    ]


def test_refused_statements():
    t, sqls = _refused_sqls()
    bad = []
    for sql in sqls:
        r = _srv().create_resp({"sql_query": sql})
        try:
            expect_error(r, 400)
        except AssertionError:
            bad.append("%r -> %s" % (sql, r.short(200)))
    check(not bad, "%d of %d statements not refused with 400 JSON:\n  %s" % (len(bad), len(sqls), "\n  ".join(bad)))
    leftovers = sorted(os.listdir(t))
    eq(leftovers, [], "files written by refused statements in %s" % t)


def test_refused_create_leaves_no_state():
    _create_error("CREATE TABLE it_state_t AS SELECT 1 AS a")
    _create_error("SELECT * FROM it_state_t")
    _create_error("CREATE VIEW it_state_v AS SELECT 1 AS a")
    _create_error("SELECT * FROM it_state_v")
    _create_error("CREATE MACRO it_state_m(x) AS x + 1")
    _create_error("SELECT it_state_m(1)")


def test_lake_still_intact_after_refusals():
    for sql in ('DROP VIEW "nekt_raw"."customers"', 'DROP SCHEMA "nekt_raw" CASCADE', 'ALTER VIEW "nekt_raw"."customers" RENAME TO c2'):
        _create_error(sql)
    rows = _srv().query('SELECT count(*) AS n FROM "nekt_raw"."customers"')
    check(rows[0]["n"] > 0, "customers is empty or gone: %r" % rows)


# ----------------------------------------------------------------------------- files and environment


# The contract's own examples: refused at creation with 400.
CONTRACT_OUTSIDE = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
]


def test_contract_outside_reads_refused_at_creation():
    for sql in CONTRACT_OUTSIDE:
        r = _srv().create_resp({"sql_query": sql})
        expect_error(r, 400, what=sql)
        check(b"root:x:0" not in r.body, "error leaks /etc/passwd: " + r.short())


def _outside_sqls():
    lake = h.sample_lake()
    secret = _secret_file()
    inside_csv = _some_lake_csv()
    rel = os.path.relpath(secret, os.path.join(lake, "nekt_raw"))
    return CONTRACT_OUTSIDE + [
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('/proc/self/environ')",
        "SELECT * FROM read_csv('%s')" % secret,
        "SELECT * FROM '%s'" % secret,
        "SELECT * FROM read_csv('%s/../outside-secret/secret.csv')" % lake,
        "SELECT * FROM read_csv('%s/nekt_raw/%s')" % (lake, rel),
        "SELECT * FROM read_text('%s/../outside-secret/*')" % lake,
        "SELECT * FROM glob('%s/../*')" % lake,
        "SELECT * FROM read_csv(['%s', '%s'])" % (inside_csv, secret),
        "SELECT * FROM read_csv('file://%s')" % secret,
    ]


def test_reading_outside_data_dir_refused():
    """Each read is refused at creation (400) or, at the latest, when it runs (results 400
    "Query execution failed"); no response may carry the file's content."""
    try:
        hostname = open("/etc/hostname").read().strip()
    except OSError:
        hostname = ""
    bad = []
    sqls = _outside_sqls()
    for sql in sqls:
        r = _srv().create_resp({"sql_query": sql})
        if r.status == 200:
            # Not refused at creation: the run must refuse it.
            slug = jparse(r)["query_slug"]
            r = _srv().results(slug, 1)
            try:
                expect_error(r, 400, "Query execution failed")
            except AssertionError as e:
                bad.append("%r accepted at creation, and its results are not refused: %s" % (sql, str(e).splitlines()[0]))
                continue
        else:
            try:
                expect_error(r, 400)
            except AssertionError as e:
                bad.append("%r: %s" % (sql, str(e).splitlines()[0]))
                continue
        for leak in ("root:x:0", "TOPSECRET-8c2f41", KEY, "DAPI_API_KEYS") + ((hostname,) if len(hostname) >= 4 else ()):
            if leak.encode() in r.body:
                bad.append("%r: error body leaks %r: %s" % (sql, leak, r.short(300)))
    check(not bad, "%d of %d outside-file reads not refused cleanly:\n  %s" % (len(bad), len(sqls), "\n  ".join(bad)))


def test_environment_access_refused():
    bad = []
    for sql in ("SELECT getenv('HOME') AS h", "SELECT getenv('DAPI_API_KEYS') AS k", "SELECT getenv('PATH') AS p"):
        r = _srv().create_resp({"sql_query": sql})
        if r.status == 200:
            r2 = _srv().results(jparse(r)["query_slug"], 1)
            bad.append("%r accepted; results: %s" % (sql, r2.short(200)))
        elif r.status != 400:
            bad.append("%r: expected 400, observed %s" % (sql, r.short(200)))
        if KEY.encode() in r.body:
            bad.append("%r: response echoes the API key" % sql)
    check(not bad, "\n  ".join(bad))


# ----------------------------------------------------------------------------- accepted SQL


def test_accepted_statement_forms():
    s = _srv()
    eq(s.query("SELECT 1 AS a"), [{"a": 1}], "SELECT")
    eq(s.query("select 2 as b"), [{"b": 2}], "lower-case select")
    eq(s.query("WITH x AS (SELECT 3 AS c) SELECT c FROM x"), [{"c": 3}], "WITH ... SELECT")
    eq(s.query("VALUES (1),(2)"), [{"col0": 1}, {"col0": 2}], "VALUES")
    eq(s.query("-- leading comment\nSELECT 4 AS d"), [{"d": 4}], "leading comment")
    eq(s.query("(SELECT 5 AS e)"), [{"e": 5}], "parenthesised SELECT")
    eq(s.query("SELECT 1 AS f UNION ALL SELECT 2 ORDER BY f"), [{"f": 1}, {"f": 2}], "UNION ALL")
    rows = s.query('FROM "nekt_raw"."customers" LIMIT 3')
    eq(len(rows), 3, "FROM-first rows")


def test_string_literal_containing_keywords_is_fine():
    s = _srv()
    eq(s.query("SELECT 'DROP TABLE x; COPY y' AS s"), [{"s": "DROP TABLE x; COPY y"}], "keywords inside a string literal")
    eq(s.query('SELECT 1 AS "delete"'), [{"delete": 1}], "keyword as a quoted alias")


def _some_lake_csv():
    lake = h.sample_lake()
    for dirpath, _, files in sorted(os.walk(lake)):
        for f in sorted(files):
            if f.endswith(".csv"):
                return os.path.join(dirpath, f)
    raise h.Skip("the sample lake has no .csv file to read with read_csv")


def test_read_csv_inside_data_dir_allowed():
    s = _srv()
    path = _some_lake_csv()
    rows = s.query("SELECT count(*) AS n FROM read_csv('%s')" % path)
    check(rows[0]["n"] > 0, "read_csv of %s returned %r" % (path, rows))
    rel = os.path.relpath(path, h.sample_lake())
    parts = rel.split(os.sep)
    if len(parts) == 2:
        table = '"%s"."%s"' % (parts[0], parts[1][: -len(".csv")])
        rows2 = s.query("SELECT count(*) AS n FROM %s" % table)
        eq(rows2[0]["n"], rows[0]["n"], "count of %s vs read_csv of its file" % table)


# ----------------------------------------------------------------------------- sample lake


RAW_TABLES = ("customers", "orders", "order_items")


def test_sample_lake_layout():
    lake = h.sample_lake()
    for layer in ("nekt_raw", "nekt_trusted", "nekt_service"):
        check(os.path.isdir(os.path.join(lake, layer)), "sample lake lacks layer %s: %s" % (layer, sorted(os.listdir(lake))))
        check(os.listdir(os.path.join(lake, layer)), "sample lake layer %s is empty" % layer)
    names = os.listdir(os.path.join(lake, "nekt_raw"))
    for t in RAW_TABLES:
        check(any(n == t or n.startswith(t + ".") for n in names), "nekt_raw lacks %s: %s" % (t, sorted(names)))
    exts = {os.path.splitext(f)[1] for _, _, fs in os.walk(lake) for f in fs}
    check(".parquet" in exts and ".csv" in exts, "sample lake should hold Parquet and CSV files, has %s" % sorted(exts))


def test_sample_lake_every_table_queryable():
    s = _srv()
    lake = h.sample_lake()
    bad = []
    n_tables = 0
    for layer in sorted(os.listdir(lake)):
        if not os.path.isdir(os.path.join(lake, layer)):
            continue
        for entry in sorted(os.listdir(os.path.join(lake, layer))):
            table, ext = os.path.splitext(entry)
            if os.path.isdir(os.path.join(lake, layer, entry)):
                table, ext = entry, "/"
            elif ext not in (".parquet", ".csv", ".tsv", ".json", ".ndjson", ".jsonl"):
                continue
            n_tables += 1
            r = s.create_resp({"layer": layer, "table": table, "limit": 5})
            if r.status != 200:
                bad.append("%s.%s: %s" % (layer, table, r.short(200)))
                continue
            r = s.results(jparse(r)["query_slug"], 1)
            if r.status != 200 or not (1 <= len(jparse(r)["data"]) <= 5):
                bad.append("%s.%s results: %s" % (layer, table, r.short(200)))
    check(n_tables >= 3, "found only %d tables in the sample lake" % n_tables)
    check(not bad, "tables that could not be read:\n  " + "\n  ".join(bad))


def test_sample_raw_tables_mode2():
    s = _srv()
    for t in RAW_TABLES:
        slug = s.create(payload={"layer": "nekt_raw", "table": t, "limit": 5})
        rows = s.page(slug, 1)
        eq(len(rows), 5, "rows of nekt_raw.%s limit 5" % t)
        keys = list(rows[0])
        check(keys and all(list(r) == keys for r in rows), "rows have differing columns: %r" % rows)


@h.timeout(120)
def test_largest_table_last_page():
    s = _srv()
    counts = {t: s.query('SELECT count(*) AS n FROM "nekt_raw"."%s"' % t)[0]["n"] for t in RAW_TABLES}
    t = max(counts, key=counts.get)
    n = counts[t]
    check(n > 1000, "largest raw table %s has only %d rows" % (t, n))
    slug = s.create(payload={"layer": "nekt_raw", "table": t})
    last = (n + 99) // 100
    eq(len(s.page(slug, 1)), 100, "rows on page 1 of %s" % t)
    eq(len(s.page(slug, last)), n - 100 * (last - 1), "rows on last page %d of %s (%d rows)" % (last, t, n))
    eq(s.page(slug, last + 1), [], "page after the last")


# ----------------------------------------------------------------------------- run time


def _execution_failure(s, slug, page, what):
    """Asserts the execution-failure shape on a results page (docs/api.md): 400, keys in
    alphabetical order, this page and slug, a non-empty details string. Returns details."""
    r = s.results(slug, page)
    body = expect_error(r, 400, "Query execution failed", "%s, results page %d" % (what, page))
    eq(list(h.jraw(r).keys()), ["details", "error", "page_number", "query_slug"], "%s: failure envelope keys, in order" % what)
    eq(body["page_number"], page, "%s: page_number" % what)
    eq(body["query_slug"], slug, "%s: query_slug" % what)
    return _details(body)


def test_runtime_failure_envelope():
    """A query that is valid SQL but fails on its data is accepted (200 + slug), and every
    results page then answers the execution-failure shape."""
    s = _srv()
    slug = s.create("SELECT CAST('x' || i AS INTEGER) AS v FROM range(10) t(i)")
    for page in (1, 2):
        d = _execution_failure(s, slug, page, "a query failing at run time")
        check("Conversion Error" in d and "'x0'" in d, "details should carry DuckDB's message about the first row: %r" % d)


def test_runtime_failure_is_not_constant_folded_at_creation():
    """A failure that needs data (the 7th row) can only happen at run time: creation accepts
    the query, and the run fails on the value of row 7 (DuckDB's message names it)."""
    s = _srv()
    slug = s.create("SELECT CASE WHEN i = 7 THEN CAST('x' || i AS INTEGER) ELSE i END AS v FROM range(10) t(i)")
    d = _execution_failure(s, slug, 1, "a query failing on its 7th row")
    check("'x7'" in d, "details should carry DuckDB's message about the value 'x7': %r" % d)


# ----------------------------------------------------------------------------- big result


@h.timeout(120)
def test_big_result_range_250000():
    s = _srv()
    slug = s.create("SELECT * FROM range(250000) t(i)")
    eq(s.page(slug, 1), [{"i": i} for i in range(100)], "page 1")
    eq(s.page(slug, 1000), [{"i": i} for i in range(99900, 100000)], "page 1000")
    eq(s.page(slug, 2500), [{"i": i} for i in range(249900, 250000)], "page 2500")
    eq(s.page(slug, 2501), [], "page 2501")
    eq(s.page(slug, 1234), [{"i": i} for i in range(123300, 123400)], "page 1234")
