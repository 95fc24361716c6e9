/* The SQL sandbox (src/engine/sandbox.c) through the real engine: every refused function
 * through every entry point, ordinary analytics accepted, tables and file paths, the CTE
 * size bound, and the allow-list kept in step with DuckDB's own function list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t.h"
#include "base/buf.h"
#include "base/log.h"
#include "engine/allowlist.h"
#include "engine/engine.h"
#include "engine/sandbox.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct t_lake lake;
static const char *root = lake.root;
static struct dapi_engine *eng;
static struct dapi_econn *con;

static void link_rel(const char *target, const char *rel)
{
    t_lake_link(&lake, target, rel);
}

static const char *expand(const char *sql)
{
    return t_lake_expand(&lake, sql);
}

static enum dapi_err check(const char *sql, char **msg)
{
    char *m = NULL;
    enum dapi_err r = dapi_engine_check(con, expand(sql), NULL, &m);
    if(msg)
        *msg = m;
    else
        free(m);
    return r;
}

/* Row r of a VARCHAR vector as a C string (static; long values cut). */
static const char *dstr(const struct dapi_dstr *v, uint64_t r)
{
    static char out[2][256];
    static int k;
    uint32_t len = v[r].value.inlined.length;
    const char *p = len <= 12 ? v[r].value.inlined.inlined : v[r].value.pointer.ptr;
    k ^= 1;
    snprintf(out[k], sizeof out[k], "%.*s", (int)len, p);
    return out[k];
}

/* A sink counting rows and keeping the first string column of the first row. */
struct count {
    uint64_t rows;
    char first[256];
};

static enum dapi_err n_begin(void *ctx, size_t ncols, const char *const *names,
                             const char *const *types)
{
    return DAPI_OK;
}

static enum dapi_err n_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                             uint64_t nrows)
{
    struct count *c = ctx;
    if(!c->rows && nrows && ncols && cols[0].type == DAPI_CT_VARCHAR) {
        snprintf(c->first, sizeof c->first, "%s", dstr(cols[0].data, 0));
    }
    c->rows += nrows;
    return DAPI_OK;
}

static const struct dapi_sink count_sink = {n_begin, n_chunk};

static enum dapi_err run(const char *sql, struct count *c, int trusted)
{
    char *msg = NULL;
    memset(c, 0, sizeof *c);
    enum dapi_err r = trusted ? dapi_engine_run_trusted(con, expand(sql), 0, &count_sink, c, &msg)
                              : dapi_engine_run(con, expand(sql), NULL, 0, &count_sink, c, &msg);
    free(msg);
    return r;
}

/* ---- functions that change or reveal server state: refused wherever they appear ------ */

/* Every call refused in every spot, the refusal naming the function. */
static void refused_everywhere(const char *const (*calls)[2], size_t ncalls,
                               const char *const *spots, size_t nspots)
{
    char sql[2048];
    for(size_t i = 0; i < ncalls; i++)
        for(size_t k = 0; k < nspots; k++) {
            snprintf(sql, sizeof sql, spots[k], calls[i][1]);
            char *msg = NULL;
            enum dapi_err r = check(sql, &msg);
            T_CHECK(r == DAPI_ERR_SQL && msg && strstr(msg, calls[i][0]),
                    "refused naming %s: [%s] (got %d: %s)", calls[i][0], sql, (int)r,
                    msg ? msg : "");
            free(msg);
        }
}

static void test_refused_functions(void)
{
    /* {name as the message names it, a call of it} */
    static const char *const calls[][2] = {
        {"enable_logging", "enable_logging()"},
        {"enable_logging", "enable_logging(storage := 'file', storage_path := 'DATA/x')"},
        {"disable_logging", "disable_logging()"},
        {"truncate_duckdb_logs", "truncate_duckdb_logs()"},
        {"duckdb_logs", "duckdb_logs()"},
        {"duckdb_logs_parsed", "duckdb_logs_parsed('QueryLog')"},
        {"checkpoint", "checkpoint()"},
        {"force_checkpoint", "force_checkpoint()"},
        {"query", "query('SELECT 1')"},
        {"query_table", "query_table('duckdb_settings')"},
        {"json_execute_serialized_sql", "json_execute_serialized_sql('{}')"},
        {"duckdb_settings", "duckdb_settings()"},
        {"duckdb_temporary_files", "duckdb_temporary_files()"},
        {"duckdb_views", "duckdb_views()"},
        {"duckdb_tables", "duckdb_tables()"},
        {"duckdb_variables", "duckdb_variables()"},
        {"duckdb_secrets", "duckdb_secrets()"},
        {"duckdb_databases", "duckdb_databases()"},
        {"duckdb_memory", "duckdb_memory()"},
        {"duckdb_prepared_statements", "duckdb_prepared_statements()"},
        {"duckdb_connection_count", "duckdb_connection_count()"},
        {"which_secret", "which_secret('s3://x', 's3')"},
        {"pragma_table_info", "pragma_table_info('x')"},
        {"histogram_values", "histogram_values('nekt', 'x')"},
        {"summary", "summary((SELECT 1))"},
        {"arrow_scan", "arrow_scan(0, 0, 0)"},
        {"test_all_types", "test_all_types()"},
    };
    static const char *const scalars[][2] = {
        {"current_setting", "current_setting('temp_directory')"},
        {"getvariable", "getvariable('x')"},
        {"setseed", "setseed(0.5)"},
        {"write_log", "write_log('x')"},
        {"nextval", "nextval('s')"},
        {"pg_get_viewdef", "pg_get_viewdef(1)"},
        {"txid_current", "txid_current()"},
        {"current_query", "current_query()"},
        {"current_database", "current_database()"},
        {"json_serialize_plan", "json_serialize_plan('SELECT 1')"},
        {"in_search_path", "in_search_path('memory', 'main')"},
        {"version", "version()"},
        {"finalize", "finalize(1)"},
    };
    /* The places a table function can hide. %s is the call. */
    static const char *const table_spots[] = {
        "SELECT * FROM %s",
        "select * from %s t",
        "FROM %s",
        "SELECT * FROM range(2) r, LATERAL (SELECT * FROM %s) x",
        "SELECT * FROM range(2) r JOIN %s x ON true",
        "SELECT (SELECT count(*) FROM %s)",
        "SELECT 1 WHERE EXISTS (SELECT * FROM %s)",
        "WITH c AS (SELECT * FROM %s) SELECT * FROM c",
        "WITH c AS MATERIALIZED (SELECT * FROM %s) SELECT 1",
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r, %s WHERE n < 2) "
         "SELECT * FROM r"),
        "SELECT 1 UNION ALL SELECT 1 FROM %s",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM %s))",
        "SELECT 1 IN (SELECT 1 FROM %s)",
        "SELECT * FROM range(3) PIVOT (count(*) FOR range IN (SELECT 1 FROM %s))",
    };
    /* The places a scalar can hide. %s is the call. */
    static const char *const scalar_spots[] = {
        "SELECT %s",
        "SELECT 1 WHERE %s IS NULL",
        "SELECT 1 ORDER BY %s",
        "SELECT count(*) FILTER (WHERE %s IS NULL) FROM range(2)",
        "SELECT sum(1) OVER (PARTITION BY %s) FROM range(2)",
        "SELECT list_transform([1], x -> %s)",
        "SELECT CASE WHEN true THEN %s END",
        "SELECT 1 BETWEEN 0 AND %s",
        "VALUES (%s)",
        "SELECT * FROM range(2) WHERE range IN (SELECT %s)",
        "WITH c AS (SELECT %s AS v) SELECT * FROM c",
        "SELECT * FROM range(2) QUALIFY %s IS NULL",
        "SELECT * FROM range(%s)",
        "SELECT * FROM read_csv('DATA/sales/orders.csv', delim := %s)",
        "SELECT * EXCLUDE (range) REPLACE (%s AS x) FROM (SELECT 1 x, 2 range)",
        "SELECT max(x ORDER BY %s) FROM range(2) t(x)",
        "SELECT * FROM range(2) t GROUP BY ALL HAVING %s IS NULL",
        "SELECT 1 LIMIT %s",
    };
    refused_everywhere(calls, N(calls), table_spots, N(table_spots));
    refused_everywhere(scalars, N(scalars), scalar_spots, N(scalar_spots));
    /* Spellings: case, quotes, qualification. */
    static const char *const spellings[] = {
        "SELECT * FROM ENABLE_LOGGING()",
        "SELECT * FROM \"enable_logging\"()",
        "SELECT * FROM \"Enable_Logging\"()",
        "SELECT * FROM main.enable_logging()",
        "SELECT * FROM system.main.enable_logging()",
        "SELECT * FROM \"system\".\"main\".\"enable_logging\"()",
        "SELECT CURRENT_SETTING('threads')",
        "SELECT \"current_setting\"('threads')",
        "SELECT main.current_setting('threads')",
        "SELECT pg_catalog.current_setting('threads')",
        "SELECT system.main.current_setting('threads')",
        "SELECT /* comment */ current_setting ( 'threads' )",
        "SELECT * FROM nekt.enable_logging()",
        "SELECT x.current_setting('threads')",
    };
    for(size_t i = 0; i < N(spellings); i++) {
        char *msg = NULL;
        enum dapi_err r = check(spellings[i], &msg);
        T_CHECK(r == DAPI_ERR_SQL && msg &&
                    (strstr(msg, "enable_logging") || strstr(msg, "current_setting") ||
                     strstr(msg, "Enable_Logging")),
                "spelling refused: [%s] (got %d: %s)", spellings[i], (int)r, msg ? msg : "");
        free(msg);
    }
    /* EXPORT_STATE hands out raw aggregate states. */
    T_EQ_INT(check("SELECT sum(range) EXPORT_STATE FROM range(3)", NULL), DAPI_ERR_SQL);
    /* Parameters are not supported (there is nothing to bind them to). */
    T_EQ_INT(check("SELECT $1", NULL), DAPI_ERR_SQL);
    T_EQ_INT(check("SELECT $name", NULL), DAPI_ERR_SQL);
    T_EQ_INT(check("SELECT ?", NULL), DAPI_ERR_SQL);
}

/* ---- ordinary analytics keeps working ------------------------------------------------ */

static void test_accepted(void)
{
    static const char *const ok[] = {
        "SELECT id, amount FROM sales.orders WHERE amount > 15 ORDER BY id",
        ("SELECT note, count(*), sum(amount), avg(amount), min(id), max(id) FROM sales.orders "
         "GROUP BY ALL ORDER BY ALL"),
        ("SELECT id, row_number() OVER w, rank() OVER w, lag(amount) OVER w, "
         "sum(amount) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) "
         "FROM sales.orders WINDOW w AS (ORDER BY amount)"),
        ("SELECT ntile(2) OVER (ORDER BY id), percent_rank() OVER (ORDER BY id), "
         "cume_dist() OVER (ORDER BY id), first_value(id) OVER (ORDER BY id), "
         "last_value(id) OVER (ORDER BY id), nth_value(id, 1) OVER (ORDER BY id), "
         "dense_rank() OVER (ORDER BY id), lead(id, 1, 0) OVER (ORDER BY id) FROM sales.orders"),
        "SELECT * FROM sales.orders QUALIFY row_number() OVER (ORDER BY amount DESC) = 1",
        ("WITH t AS (SELECT * FROM sales.orders), u AS (SELECT id FROM t) "
         "SELECT * FROM t JOIN u USING (id)"),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
         "SELECT sum(n) FROM r"),
        "WITH m AS MATERIALIZED (SELECT 1 AS x) SELECT * FROM m, m AS m2",
        "SELECT o.id, e.kind FROM sales.orders o LEFT JOIN sales.events e ON e.id = o.id",
        "SELECT * FROM sales.orders o ASOF JOIN sales.events e ON o.id >= e.id",
        "SELECT * FROM sales.orders POSITIONAL JOIN sales.events",
        "SELECT * FROM sales.orders, LATERAL (SELECT id * 2 AS d)",
        "SELECT * FROM range(10) t(i) WHERE i % 2 = 0",
        "SELECT * FROM generate_series(1, 5), unnest([1, 2, 3])",
        "SELECT unnest([1, 2]), unnest({'a': 1, 'b': 2})",
        ("SELECT list_transform([1, 2], x -> x + 1), list_filter([1, 2], x -> x > 1), "
         "list_reduce([1, 2, 3], (a, b) -> a + b), [x * 2 FOR x IN [1, 2]]"),
        ("SELECT {'a': 1}.a, [1, 2][1], map {'k': 1}['k'], 'abc' LIKE 'a%', 'x' || 'y', "
         "'abc' ILIKE 'A%', 'abc' SIMILAR TO 'a.*', 'a' GLOB 'a'"),
        ("SELECT regexp_extract('abc', 'b'), regexp_replace('abc', 'b', 'x'), "
         "string_split('a,b', ','), lower('A'), upper('a'), length('abc'), trim(' a '), "
         "concat_ws('-', 'a', 'b'), format('{}', 1), printf('%d', 1), md5('a'), sha256('a')"),
        ("SELECT date_trunc('month', DATE '2024-05-17'), date_part('year', now()), "
         "strftime(TIMESTAMP '2024-01-01', '%Y'), epoch_ms(0), age(TIMESTAMP '2024-01-01'), "
         "current_date, today(), make_date(2024, 1, 1), INTERVAL 1 DAY + DATE '2024-01-01'"),
        ("SELECT CAST(1 AS VARCHAR), 1::DOUBLE, TRY_CAST('x' AS INT), typeof(1), "
         "coalesce(NULL, 1), nullif(1, 1), ifnull(NULL, 2), greatest(1, 2), least(1, 2)"),
        ("SELECT json_extract('{\"a\":1}', '$.a'), '{\"a\":1}'::JSON->>'a', "
         "json_object('a', 1), to_json([1]), json_array_length('[1]')"),
        ("SELECT approx_count_distinct(id), median(amount), quantile_cont(amount, 0.5), "
         "mode(id), string_agg(note, ','), list(id ORDER BY id), array_agg(id), "
         "histogram(id), arg_max(id, amount), bool_and(true), stddev(amount) FROM sales.orders"),
        "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(x, y)",
        "SELECT COLUMNS(*) FROM sales.orders",
        "SELECT COLUMNS('a.*') FROM sales.orders",
        "SELECT * EXCLUDE (note) FROM sales.orders",
        "SELECT * REPLACE (amount * 2 AS amount) FROM sales.orders",
        "SELECT * FROM sales.orders USING SAMPLE 50%",
        "SELECT * FROM sales.orders PIVOT (sum(amount) FOR id IN (1, 2, 3))",
        "SELECT * FROM (SELECT 1 a, 2 b) UNPIVOT (v FOR k IN (a, b))",
        "SELECT random() < 2, uuid() IS NOT NULL, gen_random_uuid() IS NOT NULL",
        "SELECT CASE WHEN id = 1 THEN 'one' ELSE 'other' END FROM sales.orders",
        "SELECT id FROM sales.orders EXCEPT SELECT id FROM sales.events",
        "SELECT id FROM sales.orders INTERSECT ALL SELECT 1",
        "SELECT * FROM read_csv('DATA/sales/orders.csv')",
        "SELECT * FROM read_csv('DATA/sales/orders.csv', header = true, delim = ',')",
        "SELECT * FROM read_csv_auto(['DATA/sales/orders.csv', 'DATA/sales/orders.csv'])",
        "SELECT * FROM read_json_auto('DATA/sales/events.ndjson')",
        "SELECT * FROM read_ndjson('DATA/sales/events.ndjson')",
        "SELECT * FROM read_text('DATA/sales/orders.csv')",
        "SELECT * FROM glob('DATA/sales/*.tsv')",
        "SELECT * FROM sniff_csv('DATA/sales/orders.csv')",
        "SELECT * FROM read_parquet('DATA/parts/**/*.parquet', hive_partitioning = true)",
        "SELECT * FROM parquet_metadata('DATA/parts/y=1/a.parquet')",
        "SELECT * FROM \"sales\".\"orders\"",
        "SELECT * FROM SALES.ORDERS",
        "SELECT * FROM memory.sales.orders",
        "FROM sales.orders SELECT id",
        "SELECT 1 + 2 * 3 - 4 / 2 % 3, 2 ** 3, 7 // 2, 1 << 2, 5 & 3, 5 | 3, xor(5, 3), ~5",
        "SELECT [1, 2] || [3], [1, 2] @> [1], 'abc' ^@ 'a', 'abc' COLLATE nocase = 'ABC'",
        "SELECT id, amount FROM sales.orders ORDER BY amount DESC NULLS LAST LIMIT 2 OFFSET 1",
        "SELECT DISTINCT ON (note) note, id FROM sales.orders",
        "SELECT grouping(note), count(*) FROM sales.orders GROUP BY ROLLUP (note)",
        "SELECT 1 WHERE 1 = ANY (SELECT 1) AND NOT EXISTS (SELECT 1 WHERE false)",
        /* non-finite constants: DuckDB writes them into the tree as bare Infinity / NaN */
        "SELECT * FROM range(3) t(x) WHERE x < 1e309 AND -1e400 < x",
        "SELECT 1e400 AS big, -1e999 AS small",
    };
    for(size_t i = 0; i < N(ok); i++) {
        char *msg = NULL;
        enum dapi_err r = check(ok[i], &msg);
        T_CHECK(r == DAPI_OK, "accepted: [%s] (got %d: %s)", expand(ok[i]), (int)r,
                msg ? msg : "");
        free(msg);
    }
    struct count c;
    T_EQ_INT(run("SELECT * FROM read_parquet('DATA/parts/**/*.parquet', hive_partitioning = "
                 "true)",
                 &c, 0),
             DAPI_OK);
    T_EQ_INT(c.rows, 2);
}

/* ---- tables ---------------------------------------------------------------------------- */

static void test_tables(void)
{
    static const char *const bad[] = {
        "SELECT * FROM duckdb_settings",
        "SELECT * FROM duckdb_views",
        "SELECT * FROM duckdb_logs",
        "SELECT * FROM sqlite_master",
        "SELECT * FROM pg_catalog.pg_settings",
        "SELECT * FROM pg_settings",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM system.main.duckdb_views",
        "SELECT * FROM temp.main.x",
        "SELECT * FROM main.x",
        "SELECT * FROM orders",
        "SELECT * FROM nosuchlayer.orders",
        "SELECT * FROM 'DATA/sales/orders.csv'",
        "SELECT * FROM \"DATA/sales/orders.csv\"",
        "FROM '/etc/passwd'",
        /* a CTE of that name elsewhere in the query does not make the name safe */
        "SELECT * FROM (WITH duckdb_views AS (SELECT 1) SELECT 1), duckdb_views",
        "WITH duckdb_views AS (SELECT 1) SELECT * FROM duckdb_views",
        "WITH \"DATA/sales/orders.csv\" AS (SELECT 1) SELECT * FROM \"DATA/sales/orders.csv\"",
        "SHOW TABLES",
        "SELECT * FROM (DESCRIBE sales.orders)",
        "SELECT * FROM (SUMMARIZE sales.orders)",
        "SELECT * FROM (SHOW ALL TABLES)",
    };
    for(size_t i = 0; i < N(bad); i++) {
        char *msg = NULL;
        enum dapi_err r = check(bad[i], &msg);
        T_CHECK(r == DAPI_ERR_SQL, "table refused: [%s] (got %d)", expand(bad[i]), (int)r);
        free(msg);
    }
    char *msg = NULL;
    T_EQ_INT(check("SELECT * FROM duckdb_settings", &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "duckdb_settings") && strstr(msg, "\"layer\".\"table\""),
            "message names the table and the way to name lake tables: %s", msg ? msg : "");
    free(msg);
}

/* ---- file paths -------------------------------------------------------------------------- */

static void test_paths(void)
{
    static const char *const bad[] = {
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('DATA/../state/tmp/x.tmp')",
        "SELECT * FROM read_blob('DATA/../state/tmp/*')",
        "SELECT * FROM glob('DATA/../*')",
        "SELECT * FROM glob('DATA/sales/../../*')",
        "SELECT * FROM read_text('DATA/sales/.hidden.csv')",
        "SELECT * FROM read_text('DATA/.git/config')",
        "SELECT * FROM glob('DATA/sales/*')",          /* matches .hidden.csv */
        "SELECT * FROM read_text('DATA/sales/*.csv')", /* so does this */
        "SELECT * FROM read_text('DATA/escape/passwd')",
        "SELECT * FROM read_text('DATA/escape/*')",
        "SELECT * FROM read_text('DATA/*/passwd')",
        "SELECT * FROM read_text('DATA/e*/passwd')",
        "SELECT * FROM read_text('DATA/sales/out.txt')", /* a file link leaving the lake */
        "SELECT * FROM read_text(concat('DATA', '/sales/orders.csv'))",
        "SELECT * FROM read_text('DATA/sales/orders.csv' || '')",
        "SELECT * FROM range(1) r, read_text(r.range::VARCHAR)",
        "SELECT * FROM read_text(['DATA/sales/orders.csv', '/etc/hostname'])",
        "SELECT * FROM read_text((SELECT 'DATA/sales/orders.csv'))",
        "SELECT * FROM read_text('DATA\\\\..\\\\x')",
        "SELECT * FROM read_text('file://DATA/sales/orders.csv')",
        "SELECT * FROM read_text('sales/orders.csv')",
        "SELECT * FROM read_csv()",
    };
    for(size_t i = 0; i < N(bad); i++) {
        char *msg = NULL;
        struct count c;
        enum dapi_err r = check(bad[i], &msg);
        T_CHECK(r == DAPI_ERR_SQL, "path refused: [%s] (got %d)", expand(bad[i]), (int)r);
        free(msg);
        r = run(bad[i], &c, 0);
        T_CHECK(r == DAPI_ERR_SQL && c.rows == 0, "path refused at run: [%s] (got %d, %llu)",
                expand(bad[i]), (int)r, (unsigned long long)c.rows);
    }
    /* A link inside the lake that stays inside is fine. */
    struct count c;
    T_EQ_INT(run("SELECT * FROM read_text('DATA/sales/alias.csv')", &c, 0), DAPI_OK);
    T_EQ_INT(c.rows, 1);
}

/* ---- the lake scan ----------------------------------------------------------------------- */

static void test_lake_scan(void)
{
    struct count c;
    /* A glob character in a file name is that character, not a pattern. */
    T_EQ_INT(run("SELECT a FROM sales.\"br[a]ck\"", &c, 0), DAPI_OK);
    T_EQ_INT(c.rows, 1);
    T_EQ_STR(c.first, "bracket");
    T_EQ_INT(run("SELECT a FROM sales.brack", &c, 0), DAPI_OK);
    T_EQ_STR(c.first, "plain");
    T_EQ_INT(run("SELECT a FROM sales.\"st*r\"", &c, 0), DAPI_OK);
    T_EQ_STR(c.first, "star");
    /* Links leaving the lake are not tables: a layer linked to /, a table file linked out. */
    T_EQ_INT(check("SELECT * FROM escape.passwd", NULL), DAPI_ERR_SQL);
    T_EQ_INT(check("SELECT * FROM sales.out", NULL), DAPI_ERR_SQL);
    T_EQ_INT(check("SELECT * FROM root.etc", NULL), DAPI_ERR_SQL);
    /* ... a link inside the lake is */
    T_EQ_INT(run("SELECT * FROM sales.alias", &c, 0), DAPI_OK);
    T_EQ_INT(c.rows, 1);
    /* Hidden files are not tables; a folder table reads none of its hidden or escaping files. */
    T_EQ_INT(check("SELECT * FROM sales.\".hidden\"", NULL), DAPI_ERR_SQL);
    T_EQ_INT(run("SELECT * FROM parts", &c, 0), DAPI_ERR_SQL);
    T_EQ_INT(run("SELECT count(*) AS n FROM lake2.parts", &c, 0), DAPI_OK);
    T_EQ_INT(run("SELECT * FROM lake2.parts", &c, 0), DAPI_OK);
    T_EQ_INT(c.rows, 2);
    /* Layers with DuckDB's own schema names are not exposed. */
    T_EQ_INT(check("SELECT * FROM main.t", NULL), DAPI_ERR_SQL);
}

/* ---- CTEs that explode when inlined -------------------------------------------------- */

static void test_cte_bound(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    dapi_buf_adds(&b, "WITH a0 AS NOT MATERIALIZED (SELECT 1 AS x)");
    for(int i = 1; i <= 30; i++)
        dapi_buf_addf(&b,
                      ", a%d AS NOT MATERIALIZED (SELECT * FROM a%d UNION ALL SELECT * FROM "
                      "a%d)",
                      i, i - 1, i - 1);
    dapi_buf_adds(&b, " SELECT count(*) FROM a30");
    char *msg = NULL;
    T_EQ_INT(check(b.data, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "too large"), "says why: %s", msg ? msg : "");
    free(msg);
    /* the same chain with the CTEs materialised is planned once each: accepted */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "WITH a0 AS MATERIALIZED (SELECT 1 AS x)");
    for(int i = 1; i <= 30; i++)
        dapi_buf_addf(&b, ", a%d AS MATERIALIZED (SELECT * FROM a%d UNION ALL SELECT * FROM a%d)",
                      i, i - 1, i - 1);
    dapi_buf_adds(&b, " SELECT 1 FROM a30 LIMIT 1");
    T_EQ_INT(check(b.data, NULL), DAPI_OK);
    /* a small chain inlined is fine */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "WITH a0 AS NOT MATERIALIZED (SELECT 1 AS x)");
    for(int i = 1; i <= 4; i++)
        dapi_buf_addf(&b,
                      ", a%d AS NOT MATERIALIZED (SELECT * FROM a%d UNION ALL SELECT * FROM "
                      "a%d)",
                      i, i - 1, i - 1);
    dapi_buf_adds(&b, " SELECT count(*) FROM a4");
    T_EQ_INT(check(b.data, NULL), DAPI_OK);
    /* A chain of CTEs, each a deep expression naming the next: measuring it inlined used to
     * recurse through every body at once and overflow the checking thread's stack (the
     * process died). Now refused. */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "WITH ");
    for(int i = 0; i < 23; i++) {
        dapi_buf_addf(&b, "%sc%d AS (SELECT ", i ? ", " : "", i);
        for(int k = 0; k < 900; k++)
            dapi_buf_adds(&b, "-(");
        if(i < 22)
            dapi_buf_addf(&b, "(SELECT 1 FROM c%d)", i + 1);
        else
            dapi_buf_adds(&b, "1");
        for(int k = 0; k < 900; k++)
            dapi_buf_addc(&b, ')');
        dapi_buf_adds(&b, " AS x)");
    }
    dapi_buf_adds(&b, " SELECT * FROM c0");
    T_CHECK(b.data != NULL, "built the chain");
    if(b.data) {
        char *m = NULL; /* not through check(): expand() would cut the 65 KB text */
        T_EQ_INT(dapi_engine_check(con, b.data, NULL, &m), DAPI_ERR_SQL);
        T_CHECK(m && strstr(m, "nested too deeply"), "says why: %s", m ? m : "");
        free(m);
    }
    dapi_buf_free(&b);
}

/* ---- the allow-list matches DuckDB's function list ------------------------------------- */

struct names {
    char **v;
    size_t n;
};

static enum dapi_err nm_begin(void *ctx, size_t ncols, const char *const *names,
                              const char *const *types)
{
    return DAPI_OK;
}

static enum dapi_err nm_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                              uint64_t nrows)
{
    struct names *nm = ctx;
    const struct dapi_dstr *s = cols[0].data, *t = cols[1].data;
    for(uint64_t r = 0; r < nrows; r++) {
        char **v = realloc(nm->v, (nm->n + 1) * sizeof *v);
        if(!v)
            return DAPI_ERR_NOMEM;
        nm->v = v;
        char buf[512];
        snprintf(buf, sizeof buf, "%s", dstr(t, r));
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " %s", dstr(s, r));
        nm->v[nm->n++] = strdup(buf);
    }
    return DAPI_OK;
}

static const struct dapi_sink names_sink = {nm_begin, nm_chunk};

static void test_allowlist_complete(void)
{
    struct names nm = {0};
    char *msg = NULL;
    T_EQ_INT(dapi_engine_run_trusted(con,
                                     ("SELECT DISTINCT lower(function_name), function_type "
                                      "FROM duckdb_functions() WHERE function_type <> 'pragma'"),
                                     0, &names_sink, &nm, &msg),
             DAPI_OK);
    free(msg);
    T_CHECK(nm.n > 500, "DuckDB lists its functions (%zu)", nm.n);
    size_t unknown = 0;
    for(size_t i = 0; i < nm.n; i++) {
        const char *name = strchr(nm.v[i], ' ') + 1;
        int table = strncmp(nm.v[i], "table", 5) == 0;
        int known = table
                        ? dapi_allow_has(dapi_allow_lake_table, dapi_allow_lake_table_n, name) ||
                              dapi_allow_has(dapi_allow_pure_table, dapi_allow_pure_table_n,
                                             name) ||
                              dapi_refusal_reason(dapi_refuse_table, dapi_refuse_table_n, name)
                        : dapi_allow_has(dapi_allow_scalar, dapi_allow_scalar_n, name) ||
                              dapi_refusal_reason(dapi_refuse_scalar, dapi_refuse_scalar_n, name);
        if(!known && unknown++ < 20)
            T_CHECK(0, "DuckDB's %s is neither allowed nor refused in allowlist.c: review it",
                    nm.v[i]);
    }
    T_EQ_INT(unknown, 0);
    /* every aggregate is known as one (the planning bound counts them), and only those */
    size_t aggs = 0;
    for(size_t i = 0; i < nm.n; i++) {
        const char *name = strchr(nm.v[i], ' ') + 1;
        int is_agg = strncmp(nm.v[i], "aggregate", 9) == 0;
        aggs += is_agg;
        if(is_agg && !dapi_allow_has(dapi_aggregate, dapi_aggregate_n, name))
            T_CHECK(0, "DuckDB's aggregate %s is missing from dapi_aggregate", name);
    }
    T_CHECK(aggs >= dapi_aggregate_n, "every name of dapi_aggregate is an aggregate (%zu, %zu)",
            aggs, dapi_aggregate_n);
    for(size_t i = 1; i < dapi_aggregate_n; i++)
        T_CHECK(strcmp(dapi_aggregate[i - 1], dapi_aggregate[i]) < 0, "sorted at %s",
                dapi_aggregate[i]);
    /* and no allowed table function is a refused one */
    for(size_t i = 0; i < dapi_refuse_table_n; i++)
        T_CHECK(!dapi_allow_has(dapi_allow_pure_table, dapi_allow_pure_table_n,
                                dapi_refuse_table[i].name) &&
                    !dapi_allow_has(dapi_allow_lake_table, dapi_allow_lake_table_n,
                                    dapi_refuse_table[i].name),
                "%s is both refused and allowed", dapi_refuse_table[i].name);
    for(size_t i = 0; i < dapi_refuse_scalar_n; i++)
        T_CHECK(
            !dapi_allow_has(dapi_allow_scalar, dapi_allow_scalar_n, dapi_refuse_scalar[i].name),
            "%s is both refused and allowed", dapi_refuse_scalar[i].name);
    /* sorted, as bsearch needs */
    for(size_t i = 1; i < dapi_allow_scalar_n; i++)
        T_CHECK(strcmp(dapi_allow_scalar[i - 1], dapi_allow_scalar[i]) < 0, "sorted at %s",
                dapi_allow_scalar[i]);
    for(size_t i = 0; i < nm.n; i++)
        free(nm.v[i]);
    free(nm.v);
}

/* ---- planning in bounded time: nesting ------------------------------------------------- */

/* sql with depth copies of wrap around SELECT 1 AS x (wrap has one %s), in b. */
static const char *nest(struct dapi_buf *b, const char *wrap, int depth)
{
    char *inner = strdup("SELECT 1 AS x");
    for(int i = 0; inner && i < depth; i++) {
        dapi_buf_reset(b);
        dapi_buf_addf(b, wrap, inner);
        free(inner);
        inner = strdup(b->data);
    }
    dapi_buf_reset(b);
    dapi_buf_adds(b, inner ? inner : "");
    free(inner);
    return b->data;
}

/* A CTE chain: c0 AS (SELECT 1 AS x), c<i+1> AS (body with %s = c<i>), … SELECT * FROM c<n>. */
static const char *chain(struct dapi_buf *b, const char *body, int n, int materialized)
{
    dapi_buf_reset(b);
    dapi_buf_adds(b, "WITH c0 AS (SELECT 1 AS x)");
    for(int i = 0; i < n; i++) {
        char prev[16];
        snprintf(prev, sizeof prev, "c%d", i);
        dapi_buf_addf(b, ", c%d AS %s(", i + 1, materialized ? "MATERIALIZED " : "");
        dapi_buf_addf(b, body, prev);
        dapi_buf_adds(b, ")");
    }
    dapi_buf_addf(b, " SELECT * FROM c%d", n);
    return b->data;
}

static void expect_nesting(const char *sql, int refused, const char *says)
{
    char *msg = NULL;
    enum dapi_err r = dapi_engine_check(con, sql, NULL, &msg);
    if(refused)
        T_CHECK(r == DAPI_ERR_SQL && msg && strstr(msg, says), "refused (%s): %.120s… got %d %s",
                says, sql, (int)r, msg ? msg : "");
    else
        T_CHECK(r == DAPI_OK, "accepted: %.120s… got %d %s", sql, (int)r, msg ? msg : "");
    free(msg);
}

/* Regression: DuckDB's planner took time doubling with each level of aggregation nested in
 * aggregation (24 levels of a 1 KB query: 12 s; 30: minutes, never interrupted: a check
 * worker held), and time growing with the cube of the depth of nested list, struct and map
 * literals (900 levels of `[`: two minutes, memory at the cap). Both are bounded now; just
 * under each bound is accepted and plans at once. */
static void test_nesting_bounds(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    const int agg = DAPI_SANDBOX_MAX_AGG_DEPTH, calls = DAPI_SANDBOX_MAX_CALL_DEPTH;
    static const struct {
        const char *wrap;
        int weight; /* per level */
    } aggregating[] = {
        {"SELECT sum(x) AS x FROM (%s)", 1},
        {"SELECT x FROM (%s) GROUP BY x", 1},
        {"SELECT x FROM (%s) GROUP BY ALL HAVING count(*) > 0", 1},
        {"SELECT x + 1 AS x FROM (SELECT list(x)[1] AS x FROM (%s)) WHERE x > 0", 1},
        {"SELECT (SELECT max(x) FROM (%s)) AS x", 2},
        {"SELECT (SELECT x FROM (%s)) AS x", 1},
    };
    for(size_t i = 0; i < N(aggregating); i++) {
        int levels = agg / aggregating[i].weight;
        expect_nesting(nest(&b, aggregating[i].wrap, levels), 0, "");
        expect_nesting(nest(&b, aggregating[i].wrap, levels + 1), 1, "too deeply for the planner");
    }
    expect_nesting(chain(&b, "SELECT sum(x) AS x FROM %s", agg, 0), 0, "");
    expect_nesting(chain(&b, "SELECT sum(x) AS x FROM %s", agg + 1, 0), 1, "AS MATERIALIZED");
    expect_nesting(chain(&b, "SELECT sum(x) AS x FROM %s", 40, 1), 0, "");
    /* projections and filters do not count, however deep */
    expect_nesting(nest(&b, "SELECT x + 1 AS x FROM (%s) WHERE x > 0", 200), 0, "");
    expect_nesting(chain(&b, "SELECT DISTINCT x FROM %s", 100, 0), 0, "");

    static const struct {
        const char *wrap;
        int calls; /* per level */
    } calls_in_calls[] = {
        {"[%s]", 1}, {"{'a': %s}", 1}, {"abs(%s)", 1}, {"map([1], [%s])", 2}, {"row(%s)", 1}};
    for(size_t i = 0; i < N(calls_in_calls); i++) {
        int levels = calls / calls_in_calls[i].calls;
        char *e = strdup("1");
        for(int d = 0; e && d <= levels; d++) {
            struct dapi_buf t;
            dapi_buf_init(&t, 1 << 20);
            dapi_buf_addf(&t, calls_in_calls[i].wrap, e);
            free(e);
            e = dapi_buf_take(&t, NULL);
            if(d == levels - 1) {
                dapi_buf_reset(&b);
                dapi_buf_addf(&b, "SELECT %s AS x", e);
                expect_nesting(b.data, 0, "");
            }
        }
        dapi_buf_reset(&b);
        dapi_buf_addf(&b, "SELECT %s AS x", e ? e : "");
        expect_nesting(b.data, 1, "nests function calls");
        free(e);
    }
    /* lambdas in lambdas: 16 levels, not 17 */
    {
        char *e = strdup("1");
        for(int d = 0; e && d <= DAPI_SANDBOX_MAX_LAMBDA_DEPTH; d++) {
            struct dapi_buf t;
            dapi_buf_init(&t, 1 << 20);
            dapi_buf_addf(&t, "list_transform([1], x -> [%s])", e);
            free(e);
            e = dapi_buf_take(&t, NULL);
            dapi_buf_reset(&b);
            dapi_buf_addf(&b, "SELECT %s AS x", e ? e : "");
            if(d == DAPI_SANDBOX_MAX_LAMBDA_DEPTH - 1)
                expect_nesting(b.data, 0, "");
        }
        expect_nesting(b.data, 1, "nests lambdas");
        free(e);
    }
    /* COALESCE, CASE and casts are not calls: no types grow */
    expect_nesting(nest(&b, "SELECT coalesce((%s), 1) AS x", 1), 0, "");
    /* operators do not count: a sum of 500 terms */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "SELECT 1");
    for(int i = 0; i < 500; i++)
        dapi_buf_adds(&b, " + 1");
    expect_nesting(b.data, 0, "");
    dapi_buf_free(&b);
}

/* A join chain of n + 1 relations into b (aliases p0…pn): "FROM range(2) p0 JOIN range(2) p1
 * ON …". */
static const char *join_chain(struct dapi_buf *b, const char *p, int n)
{
    dapi_buf_addf(b, "SELECT count(*) AS c FROM range(2) %s0", p);
    for(int i = 1; i <= n; i++)
        dapi_buf_addf(b, " JOIN range(2) %s%d ON %s%d.range = %s%d.range", p, i, p, i, p, i - 1);
    return b->data;
}

/* Regression: DuckDB plans a chain of joins in time that grows with about the fourth power of
 * its length (50 joins: 0.9 s, 100: 18 s, 200: minutes, memory near 1 GB), never interrupted:
 * two such queries of one key held both check workers and every key's creations waited. A
 * SELECT may read DAPI_SANDBOX_MAX_JOINED relations (its subqueries and the CTEs it reads
 * inlined), a query DAPI_SANDBOX_MAX_RELATIONS in all; the comma form, IN subqueries and CTEs
 * read many times count the same. */
static void test_join_bounds(void)
{
    const int most = DAPI_SANDBOX_MAX_JOINED;
    struct dapi_buf b, x, y;
    dapi_buf_init(&b, 1 << 20);
    dapi_buf_init(&x, 1 << 20);
    dapi_buf_init(&y, 1 << 20);
    expect_nesting(join_chain(&b, "t", most - 1), 0, "");
    dapi_buf_reset(&b);
    expect_nesting(join_chain(&b, "t", most), 1, "joins too many relations");
    /* the comma form, the conditions in WHERE */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "SELECT count(*) FROM range(2) t0");
    for(int i = 1; i <= most; i++)
        dapi_buf_addf(&b, ", range(2) t%d", i);
    dapi_buf_adds(&b, " WHERE t1.range = t0.range");
    for(int i = 2; i <= most; i++)
        dapi_buf_addf(&b, " AND t%d.range = t%d.range", i, i - 1);
    expect_nesting(b.data, 1, "joins too many relations");
    /* semi-joins: IN subqueries */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "SELECT count(*) FROM range(2) t WHERE range IN (SELECT 1)");
    for(int i = 0; i < most; i++)
        dapi_buf_adds(&b, " AND range IN (SELECT range FROM range(2))");
    expect_nesting(b.data, 1, "joins too many relations");
    /* two subqueries of half the bound each, joined */
    dapi_buf_reset(&x);
    dapi_buf_reset(&y);
    dapi_buf_reset(&b);
    dapi_buf_addf(&b, "SELECT count(*) FROM (%s) a JOIN (", join_chain(&x, "x", most / 2));
    dapi_buf_addf(&b, "%s) b ON a.c = b.c", join_chain(&y, "y", most / 2));
    expect_nesting(b.data, 1, "joins too many relations");
    /* a CTE of 20 relations read three times is 60; materialised, 3 */
    dapi_buf_reset(&x);
    join_chain(&x, "x", 19);
    dapi_buf_reset(&b);
    dapi_buf_addf(&b,
                  "WITH c AS (%s) SELECT count(*) FROM c c1 JOIN c c2 ON c1.c = c2.c JOIN c c3 "
                  "ON c3.c = c2.c",
                  x.data);
    expect_nesting(b.data, 1, "joins too many relations");
    dapi_buf_reset(&b);
    dapi_buf_addf(&b,
                  "WITH c AS MATERIALIZED (%s) SELECT count(*) FROM c c1 JOIN c c2 ON c1.c = c2.c "
                  "JOIN c c3 ON c3.c = c2.c",
                  x.data);
    expect_nesting(b.data, 0, "");
    /* a UNION's branches are planned apart: each may read the most, the query four times it */
    dapi_buf_reset(&b);
    for(int k = 0; k < 4; k++) {
        dapi_buf_reset(&x);
        char p[8];
        snprintf(p, sizeof p, "u%d_", k);
        dapi_buf_addf(&b, "%s(%s)", k ? " UNION ALL " : "", join_chain(&x, p, most - 1));
    }
    expect_nesting(b.data, 0, "");
    dapi_buf_reset(&x);
    dapi_buf_addf(&b, " UNION ALL (%s)", join_chain(&x, "v", 1));
    expect_nesting(b.data, 1, "too many relations for the planner");
    /* many small relations side by side are fine */
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "SELECT range AS v FROM range(2)");
    for(int i = 0; i < 150; i++)
        dapi_buf_adds(&b, " UNION ALL SELECT range AS v FROM range(2)");
    expect_nesting(b.data, 0, "");
    dapi_buf_free(&b);
    dapi_buf_free(&x);
    dapi_buf_free(&y);
}

/* ---- options of table functions --------------------------------------------------------- */

/* Options (named arguments) are on an allow-list too: read_csv's store_rejects wrote tables of
 * rejected rows onto the engine connection every key shares, where they stayed (memory that
 * never came back; another key's query using the same table name failed). Both spellings of
 * an option, any case, quoted, and on the functions that share it. */
static void test_table_options(void)
{
    static const char *const refused[][2] = {
        {"store_rejects", "SELECT * FROM read_csv('DATA/sales/orders.csv', store_rejects = true)"},
        {"store_rejects",
         "SELECT * FROM read_csv('DATA/sales/orders.csv', store_rejects := true)"},
        {"STORE_REJECTS", "SELECT * FROM read_csv('DATA/sales/orders.csv', STORE_REJECTS = true)"},
        {"store_rejects",
         "SELECT * FROM read_csv('DATA/sales/orders.csv', \"store_rejects\" = true)"},
        {"store_rejects",
         "SELECT * FROM read_csv('DATA/sales/orders.csv', true AS store_rejects)"},
        {"rejects_table",
         "SELECT * FROM read_csv_auto('DATA/sales/orders.csv', rejects_table = 'r')"},
        {"rejects_scan", "SELECT * FROM read_csv('DATA/sales/orders.csv', rejects_scan := 's')"},
        {"rejects_limit", "SELECT * FROM read_csv('DATA/sales/orders.csv', rejects_limit = 5)"},
        {"store_rejects",
         "SELECT * FROM sniff_csv('DATA/sales/orders.csv', store_rejects = true)"},
        {"encryption_config",
         "SELECT * FROM read_parquet('DATA/parts/y=1/a.parquet', encryption_config = "
         "{footer_key: 'k'})"},
        {"debug_use_openssl",
         "SELECT * FROM read_parquet('DATA/parts/y=1/a.parquet', debug_use_openssl = true)"},
        {"no_such_option",
         "SELECT * FROM read_json('DATA/sales/events.ndjson', no_such_option = 1)"},
        {"foo", "SELECT * FROM range(3, foo := 1)"},
        {"store_rejects", "SELECT * FROM range(2) r, read_csv('DATA/sales/orders.csv', "
                          "store_rejects = true) c"},
        {"store_rejects", "WITH c AS (SELECT * FROM read_csv('DATA/sales/orders.csv', "
                          "store_rejects = true)) SELECT * FROM c"},
    };
    for(size_t i = 0; i < N(refused); i++) {
        char *msg = NULL;
        struct count c;
        enum dapi_err r = check(refused[i][1], &msg);
        T_CHECK(r == DAPI_ERR_SQL && msg && strstr(msg, refused[i][0]),
                "option refused naming %s: [%s] (got %d: %s)", refused[i][0], refused[i][1],
                (int)r, msg ? msg : "");
        free(msg);
        r = run(refused[i][1], &c, 0);
        T_CHECK(r == DAPI_ERR_SQL && c.rows == 0, "refused at run too: [%s] (got %d)",
                refused[i][1], (int)r);
    }
    static const char *const accepted[] = {
        "SELECT * FROM read_csv('DATA/sales/orders.csv', header = true, delim := ',', "
        "all_varchar = false, ignore_errors = true, types = {'id': 'BIGINT'})",
        "SELECT * FROM read_csv('DATA/sales/orders.csv', HEADER = true)",
        "SELECT * FROM read_json('DATA/sales/events.ndjson', format = 'newline_delimited', "
        "records = true, filename = true)",
        "SELECT * FROM repeat_row(1, num_rows = 2)",
        "SELECT * FROM range(3) WHERE range = 1", /* (a comparison outside a table function) */
    };
    for(size_t i = 0; i < N(accepted); i++) {
        struct count c;
        T_EQ_INT(run(accepted[i], &c, 0), DAPI_OK);
    }
    /* Every option DuckDB gives an allowed table function is allowed or refused here. */
    struct names nm = {0};
    char *msg = NULL;
    T_EQ_INT(dapi_engine_run_trusted(con,
                                     "SELECT DISTINCT lower(p), lower(function_name) FROM "
                                     "(SELECT unnest(parameters) p, function_name FROM "
                                     "duckdb_functions() WHERE function_type = 'table') "
                                     "WHERE NOT regexp_matches(p, '^col[0-9]+$')",
                                     0, &names_sink, &nm, &msg),
             DAPI_OK);
    free(msg);
    size_t seen = 0, unknown = 0;
    for(size_t i = 0; i < nm.n; i++) {
        char *opt = strchr(nm.v[i], ' ');
        *opt++ = '\0';
        const char *fn = nm.v[i];
        if(!dapi_allow_has(dapi_allow_lake_table, dapi_allow_lake_table_n, fn) &&
           !dapi_allow_has(dapi_allow_pure_table, dapi_allow_pure_table_n, fn))
            continue;
        seen++;
        if(!dapi_allow_has(dapi_allow_table_option, dapi_allow_table_option_n, opt) &&
           !dapi_refusal_reason(dapi_refuse_table_option, dapi_refuse_table_option_n, opt) &&
           unknown++ < 20)
            T_CHECK(0, "%s(%s = …) is neither allowed nor refused in allowlist.c: review it", fn,
                    opt);
    }
    T_CHECK(seen > 50, "DuckDB lists the options of the allowed table functions (%zu)", seen);
    T_EQ_INT(unknown, 0);
    for(size_t i = 1; i < dapi_allow_table_option_n; i++)
        T_CHECK(strcmp(dapi_allow_table_option[i - 1], dapi_allow_table_option[i]) < 0,
                "sorted at %s", dapi_allow_table_option[i]);
    for(size_t i = 0; i < dapi_refuse_table_option_n; i++)
        T_CHECK(!dapi_allow_has(dapi_allow_table_option, dapi_allow_table_option_n,
                                dapi_refuse_table_option[i].name),
                "%s is both refused and allowed", dapi_refuse_table_option[i].name);
    for(size_t i = 0; i < nm.n; i++)
        free(nm.v[i]);
    free(nm.v);
}

/* ---- the pure path check ----------------------------------------------------------------- */

static void test_path_problem(void)
{
    T_CHECK(!dapi_sandbox_path_problem("/lake", "/lake/a/b.csv"), "inside");
    T_CHECK(!dapi_sandbox_path_problem("/lake", "/lake/a/*/b.csv"), "glob inside");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake2/a.csv") != NULL, "sibling");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake") != NULL, "the lake itself");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake/../x") != NULL, "parent");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake/a/..") != NULL, "parent at the end");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake//.x") != NULL, "hidden after //");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake/./a") != NULL, "dot");
    T_CHECK(dapi_sandbox_path_problem("/lake", "/lake/a\\b") != NULL, "backslash");
    T_CHECK(dapi_sandbox_path_problem("/lake", "lake/a") != NULL, "relative");
}

static void test_pure_tree(void)
{
    /* Unknown node kinds fail closed, whatever DuckDB version produced them. */
    struct dapi_sandbox sb = {.data_dir = "/lake"};
    char *msg = NULL;
    const char *tree = "{\"error\":false,\"statements\":[{\"node\":{\"type\":\"SELECT_NODE\","
                       "\"select_list\":[{\"class\":\"NEW_THING\",\"type\":\"X\"}]}}]}";
    T_EQ_INT(dapi_sandbox_check(&sb, tree, strlen(tree), &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "NEW_THING"), "names the kind: %s", msg ? msg : "");
    free(msg);
    tree = "{\"error\":false,\"statements\":[{\"node\":{\"type\":\"SELECT_NODE\","
           "\"from_table\":{\"type\":\"NEW_REF\",\"alias\":\"\",\"sample\":null}}}]}";
    T_EQ_INT(dapi_sandbox_check(&sb, tree, strlen(tree), &msg), DAPI_OK); /* not a known ref */
    free(msg);
    tree = "{\"error\":true,\"error_message\":\"Only SELECT statements can be serialized\"}";
    T_EQ_INT(dapi_sandbox_check(&sb, tree, strlen(tree), &msg), DAPI_ERR_SQL);
    free(msg);
    T_EQ_INT(dapi_sandbox_check(&sb, "{", 1, &msg), DAPI_ERR_SQL);
    free(msg);
    tree = "{\"error\":false,\"statements\":[]}";
    T_EQ_INT(dapi_sandbox_check(&sb, tree, strlen(tree), &msg), DAPI_ERR_SQL);
    free(msg);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_lake_make(&lake, "sandbox"))
        T_DONE();
    t_mkdir_in(root, "data/sales");
    t_mkdir_in(root, "data/parts");
    t_mkdir_in(root, "data/parts/y=1");
    t_mkdir_in(root, "data/parts/y=2");
    t_mkdir_in(root, "data/lake2");
    t_mkdir_in(root, "data/main");
    t_mkdir_in(root, "data/.git");
    t_mkdir_in(root, "outside");
    t_write_in(root, "outside/passwd", "secret-value\n");
    t_write_in(root, "outside/x.parquet", "not parquet\n");
    t_write_in(root, "data/.git/config", "secret\n");
    t_write_in(root, "data/main/t.csv", "a\n1\n");
    t_write_in(root, "data/sales/orders.csv",
               "id,amount,note\n1,10.5,a\n2,20,\n3,30.25,\"c, d\"\n");
    t_write_in(root, "data/sales/events.ndjson",
               "{\"id\":1,\"kind\":\"click\"}\n{\"id\":2,\"kind\":\"view\"}\n");
    t_write_in(root, "data/sales/regions.tsv", "code\tname\nN\tNorth\n");
    t_write_in(root, "data/sales/.hidden.csv", "a\nhidden\n");
    t_write_in(root, "data/sales/br[a]ck.csv", "a\nbracket\n");
    t_write_in(root, "data/sales/brack.csv", "a\nplain\n");
    t_write_in(root, "data/sales/st*r.csv", "a\nstar\n");
    t_write_in(root, "data/sales/sr.csv", "a\nnot the star\n");
    char target[700];
    snprintf(target, sizeof target, "%s/outside", root);
    link_rel(target, "data/escape");
    link_rel("/", "data/root");
    snprintf(target, sizeof target, "%s/outside/passwd", root);
    link_rel(target, "data/sales/out.txt");
    link_rel(target, "data/sales/out.csv");
    snprintf(target, sizeof target, "%s/data/sales/regions.tsv", root);
    link_rel(target, "data/sales/alias.csv");

    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 1, .check_timeout_ms = 60000});
    if(eng)
        T_EQ_INT(dapi_engine_connect(eng, &con), DAPI_OK);
    if(!con)
        goto out;
    /* Parquet files for the folder tables, written by dapi's own (trusted) SQL. */
    static const char *const parts[] = {"data/parts/y=1/a.parquet", "data/parts/y=2/b.parquet",
                                        "data/lake2/parts/a.parquet", "data/lake2/parts/b.parquet",
                                        "data/lake2/parts/.c.parquet"};
    t_mkdir_in(root, "data/lake2/parts");
    for(size_t i = 0; i < N(parts); i++) {
        char path[700], *msg = NULL;
        uint64_t rows;
        snprintf(path, sizeof path, "%s/%s", root, parts[i]);
        T_EQ_INT(
            dapi_engine_export_parquet(con, "SELECT 1 AS v", 1, NULL, path, 0, 0, &rows, &msg),
            DAPI_OK);
        free(msg);
    }
    snprintf(target, sizeof target, "%s/outside", root);
    link_rel(target, "data/lake2/parts/out");
    {
        /* a Parquet file outside the lake, reachable through a link in a folder table */
        char *msg = NULL, in[700], out[700];
        uint64_t rows;
        snprintf(in, sizeof in, "%s/data/x.parquet", root);
        snprintf(out, sizeof out, "%s/outside/x.parquet", root);
        T_EQ_INT(
            dapi_engine_export_parquet(con, "SELECT 666 AS v", 1, NULL, in, 0, 0, &rows, &msg),
            DAPI_OK);
        free(msg);
        T_CHECK(rename(in, out) == 0, "moved out of the lake");
    }
    test_path_problem();
    test_pure_tree();
    test_refused_functions();
    test_accepted();
    test_tables();
    test_paths();
    test_lake_scan();
    test_cte_bound();
    test_allowlist_complete();
    test_table_options();
    test_nesting_bounds();
    test_join_bounds();

    dapi_econn_close(con);
out:
    dapi_engine_close(eng);
    t_rm_rf(root);
    T_DONE();
}
