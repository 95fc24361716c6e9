/* The embedded engine: which statements are accepted, the file-access lock-down, the lake
 * (CSV / TSV / NDJSON / Parquet tables, kept in sync with the disk), running through a sink,
 * deadlines, and types without a native rendering. */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/engine.h"
#include "engine/render.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct t_lake scratch;
static const char *root = scratch.root, *data = scratch.data, *state = scratch.state;
static char err[1024];
static struct dapi_engine *eng;
static struct dapi_econn *con;

/* ---- helpers ------------------------------------------------------------------------- */

/* A sink that renders every row as JSON: "{...},{...}" in out. */
struct collect {
    size_t ncols;
    char **keys;
    size_t *key_lens;
    struct dapi_buf out;
    uint64_t rows, chunks, begins;
    enum dapi_err fail_chunk; /* returned from chunk when set */
};

static enum dapi_err c_begin(void *ctx, size_t ncols, const char *const *names,
                             const char *const *types)
{
    struct collect *c = ctx;
    c->begins++;
    c->ncols = ncols;
    c->keys = calloc(ncols + 1, sizeof *c->keys);
    c->key_lens = calloc(ncols + 1, sizeof *c->key_lens);
    for(size_t i = 0; i < ncols; i++) {
        struct dapi_buf k;
        dapi_buf_init(&k, 1 << 16);
        dapi_render_key(&k, names[i], strlen(names[i]));
        c->keys[i] = dapi_buf_take(&k, &c->key_lens[i]);
    }
    return DAPI_OK;
}

static enum dapi_err c_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                             uint64_t nrows)
{
    struct collect *c = ctx;
    c->chunks++;
    if(c->fail_chunk)
        return c->fail_chunk;
    for(uint64_t r = 0; r < nrows; r++) {
        if(c->out.len < (1u << 16)) {
            if(c->rows)
                dapi_buf_addc(&c->out, ',');
            dapi_render_row(&c->out, cols, ncols, (const char *const *)c->keys, c->key_lens, r);
        }
        c->rows++;
    }
    return DAPI_OK;
}

static const struct dapi_sink collect_sink = {c_begin, c_chunk};

static void collect_init(struct collect *c)
{
    memset(c, 0, sizeof *c);
    dapi_buf_init(&c->out, 1 << 20);
    dapi_buf_adds(&c->out, "");
}

static void collect_free(struct collect *c)
{
    for(size_t i = 0; c->keys && i < c->ncols; i++)
        free(c->keys[i]);
    free(c->keys);
    free(c->key_lens);
    dapi_buf_free(&c->out);
}

/* Runs sql; returns the result code and leaves the rows' JSON in *json (static). */
static enum dapi_err run(const char *sql, const char **json, uint64_t *rows, char **msg_out)
{
    static char text[1 << 16];
    struct collect c;
    collect_init(&c);
    char *msg = NULL;
    enum dapi_err r = dapi_engine_run(con, sql, NULL, 0, &collect_sink, &c, &msg);
    snprintf(text, sizeof text, "%s", c.out.data ? c.out.data : "");
    if(json)
        *json = text;
    if(rows)
        *rows = c.rows;
    if(r == DAPI_ERR_SQL)
        T_CHECK(msg && *msg, "[%s]: a message comes with DAPI_ERR_SQL", sql);
    else
        T_CHECK(msg == NULL, "[%s]: no message without DAPI_ERR_SQL (%d)", sql, (int)r);
    if(msg_out)
        *msg_out = msg;
    else
        free(msg);
    collect_free(&c);
    return r;
}

static enum dapi_err check(const char *sql, char **msg_out)
{
    char *msg = (char *)1;
    enum dapi_err r = dapi_engine_check(con, sql, NULL, &msg);
    if(r == DAPI_ERR_SQL)
        T_CHECK(msg && *msg, "[%s]: check gives a message", sql);
    else if(r == DAPI_OK)
        T_CHECK(msg == NULL, "[%s]: no message when accepted", sql);
    if(msg_out)
        *msg_out = msg;
    else if(r == DAPI_ERR_SQL || r == DAPI_OK)
        free(msg);
    return r;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_accepted(void)
{
    static const char *const ok[] = {
        "SELECT 1",
        "select 1;",
        "  \n\t SELECT 1  ;  ",
        "SeLeCt 1",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
         "SELECT * FROM r"),
        "VALUES (1), (2)",
        "FROM sales.orders",
        "FROM sales.orders SELECT id WHERE amount > 15",
        "-- a comment\nSELECT 1",
        "/* block\n comment */ SELECT 1",
        "/* a */ -- b\n /* c */ (SELECT 1)",
        "(SELECT 1)",
        "((SELECT 1)) UNION ALL (SELECT 2)",
        "SELECT 1 -- trailing comment",
        "SELECT 'DROP TABLE x; COPY y' AS s",
        "SELECT * FROM sales.orders ORDER BY id",
        "SELECT count(*) FROM sales.events",
        "SELECT * FROM \"sales\".\"orders\"",
        "SELECT * FROM read_csv('DATA/sales/orders.csv')",
        "SELECT * FROM glob('DATA/sales/*.tsv')",
        "SELECT * FROM range(3) t(i) JOIN sales.orders o ON o.id = t.i",
    };
    for(size_t i = 0; i < N(ok); i++) {
        /* DATA stands for the data dir. */
        char sql[1024];
        const char *at = strstr(ok[i], "DATA");
        if(at)
            snprintf(sql, sizeof sql, "%.*s%s%s", (int)(at - ok[i]), ok[i], data, at + 4);
        else
            snprintf(sql, sizeof sql, "%s", ok[i]);
        char *msg = NULL;
        enum dapi_err r = check(sql, &msg);
        T_CHECK(r == DAPI_OK, "accepted: [%s] (got %d: %s)", sql, (int)r, msg ? msg : "");
        free(msg);
    }
}

static void test_refused(void)
{
    static const struct {
        const char *sql;
        const char *in_msg; /* the message mentions this (NULL: any message) */
    } bad[] = {
        {"COPY (SELECT 1) TO 'ROOT/copied.csv'", "COPY"},
        {"COPY sales.orders TO 'ROOT/copied.csv'", "COPY"},
        {"ATTACH 'ROOT/x.db' AS x", "ATTACH"},
        {"ATTACH ':memory:' AS m", "ATTACH"},
        {"DETACH x", NULL},
        {"INSTALL httpfs", NULL},
        {"LOAD httpfs", NULL},
        {"INSTALL x", NULL},
        {"LOAD x", NULL},
        {"SET threads = 1", "SET"},
        {"SET enable_external_access = true", "SET"},
        {"SET allowed_directories = ['/']", "SET"},
        {"RESET threads", NULL},
        {"PRAGMA version", "PRAGMA"},
        {"PRAGMA enable_profiling", "PRAGMA"},
        {"CREATE TABLE t (a INT)", "CREATE"},
        {"CREATE VIEW v AS SELECT 1", "CREATE"},
        {"CREATE MACRO m(x) AS x + 1", "CREATE"},
        {"CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"},
        {"DROP VIEW sales.orders", "DROP"},
        {"DROP SCHEMA sales CASCADE", "DROP"},
        {"INSERT INTO t VALUES (1)", "INSERT"},
        {"UPDATE t SET a = 1", "UPDATE"},
        {"DELETE FROM t", "DELETE"},
        {"ALTER VIEW sales.orders RENAME TO x", "ALTER"},
        {"EXPLAIN SELECT 1", "EXPLAIN"},
        {"EXPLAIN ANALYZE SELECT 1", "EXPLAIN"},
        {"CALL pragma_version()", "CALL"},
        {"SHOW TABLES", "SHOW"},
        {"SHOW sales.orders", "SHOW"},
        {"DESCRIBE sales.orders", "DESCRIBE"},
        {"SUMMARIZE sales.orders", "SUMMARIZE"},
        {"EXPORT DATABASE 'ROOT/exp'", "EXPORT"},
        {"IMPORT DATABASE 'ROOT/exp'", NULL},
        {"CHECKPOINT", NULL},
        {"VACUUM", NULL},
        {"BEGIN TRANSACTION", NULL},
        {"USE sales", NULL},
        {"PREPARE p AS SELECT 1", NULL},
        {"EXECUTE p", NULL},
        {"SELECT 1; SELECT 2", "one statement"},
        {"SELECT 1; DROP VIEW sales.orders", NULL},
        {"SELECT 1;;SELECT 2", NULL},
        {"", NULL},
        {"   \n\t ", NULL},
        {";", NULL},
        {"-- only a comment", NULL},
        {"/* only a comment */", NULL},
        {"/* unterminated", NULL},
        {"(", NULL},
        {"SELEC 1", NULL},
        {"SELECT", NULL},
        {"SELECT FROM WHERE", NULL},
        {"SELECT $1", NULL},
        {"SELECT ?", NULL},
        {"SELECT * FROM sales.nope", "nope"},
        {"SELECT * FROM nope", "nope"},
        {"SELECT * FROM nolayer.orders", "nolayer"},
        {"SELECT no_such_column FROM sales.orders", "no_such_column"},
        {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", NULL},
        /* Nested block comments: DuckDB's scanner nests them like PostgreSQL's; the text
         * must not pass for a query when what DuckDB runs is a PRAGMA / SHOW. */
        {"/* /* */ SELECT */ PRAGMA version", NULL},
        {"/* /* */ SELECT */ SHOW TABLES", NULL},
        {"/* /* */ SELECT */ DESCRIBE sales.orders", NULL},
    };
    for(size_t i = 0; i < N(bad); i++) {
        char sql[1024];
        const char *at = strstr(bad[i].sql, "ROOT");
        if(at)
            snprintf(sql, sizeof sql, "%.*s%s%s", (int)(at - bad[i].sql), bad[i].sql, root,
                     at + 4);
        else
            snprintf(sql, sizeof sql, "%s", bad[i].sql);
        char *msg = NULL;
        enum dapi_err r = check(sql, &msg);
        T_CHECK(r == DAPI_ERR_SQL, "refused by check: [%s] (got %d)", sql, (int)r);
        if(r == DAPI_ERR_SQL && bad[i].in_msg)
            T_CHECK(msg && strstr(msg, bad[i].in_msg), "[%s]: message mentions %s: [%s]", sql,
                    bad[i].in_msg, msg ? msg : "");
        free(msg);
        /* run refuses it too, before the sink sees anything */
        struct collect c;
        collect_init(&c);
        msg = NULL;
        r = dapi_engine_run(con, sql, NULL, 0, &collect_sink, &c, &msg);
        T_CHECK(r == DAPI_ERR_SQL, "refused by run: [%s] (got %d)", sql, (int)r);
        T_CHECK(c.begins == 0 && c.rows == 0, "[%s]: sink not called", sql);
        T_CHECK(r != DAPI_ERR_SQL || (msg && *msg), "[%s]: run gives a message", sql);
        free(msg);
        collect_free(&c);
    }

    /* Nothing of the above took effect. */
    char p[256];
    snprintf(p, sizeof p, "%s/copied.csv", root);
    T_CHECK(access(p, F_OK) != 0, "COPY wrote nothing");
    snprintf(p, sizeof p, "%s/x.db", root);
    T_CHECK(access(p, F_OK) != 0, "ATTACH created nothing");
    uint64_t rows = 0;
    T_EQ_INT(run("SELECT * FROM sales.orders", NULL, &rows, NULL), DAPI_OK);
    T_EQ_INT(rows, 3);
    T_CHECK(check("SELECT * FROM t", NULL) == DAPI_ERR_SQL, "no table t was created");
    /* Settings cannot even be read by user SQL; dapi's own SQL sees them locked down. */
    T_EQ_INT(run("SELECT current_setting('enable_external_access') AS ext", NULL, NULL, NULL),
             DAPI_ERR_SQL);
    struct collect c;
    collect_init(&c);
    char *msg = NULL;
    T_EQ_INT(dapi_engine_run_trusted(con,
                                     "SELECT current_setting('threads') > 0 AS ok, "
                                     "current_setting('enable_external_access') AS ext",
                                     0, &collect_sink, &c, &msg),
             DAPI_OK);
    T_EQ_STR(c.out.data, "{\"ok\":true,\"ext\":false}");
    collect_free(&c);
    free(msg);
}

static void test_file_access(void)
{
    static const char *const outside[] = {
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "FROM '/etc/hostname'",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/x.parquet')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_text('ROOT/outside.txt')",
        "SELECT * FROM read_blob('DATA/../outside.txt')",
        "SELECT * FROM read_text('DATA/sales/../../outside.txt')",
        "SELECT * FROM read_csv('DATA/../data2/secret.csv')",
        "SELECT * FROM read_csv('DATA2/secret.csv')",
        "SELECT * FROM glob('DATA2/*')",
        "SELECT * FROM read_text('DATA2/secret.csv')",
        "SELECT * FROM read_text('ROOT/state/tmp/../../outside.txt')",
        "SELECT * FROM read_text('outside.txt')",
    };
    for(size_t i = 0; i < N(outside); i++) {
        char sql[1024];
        const char *s = outside[i], *at;
        if((at = strstr(s, "DATA2")))
            snprintf(sql, sizeof sql, "%.*s%s2%s", (int)(at - s), s, data, at + 5);
        else if((at = strstr(s, "DATA")))
            snprintf(sql, sizeof sql, "%.*s%s%s", (int)(at - s), s, data, at + 4);
        else if((at = strstr(s, "ROOT")))
            snprintf(sql, sizeof sql, "%.*s%s%s", (int)(at - s), s, root, at + 4);
        else
            snprintf(sql, sizeof sql, "%s", s);
        const char *json = NULL;
        uint64_t rows = 0;
        char *msg = NULL;
        enum dapi_err r = run(sql, &json, &rows, &msg);
        T_CHECK(r == DAPI_ERR_SQL, "outside the lake refused: [%s] (got %d, %llu rows: %.200s)",
                sql, (int)r, (unsigned long long)rows, json ? json : "");
        T_CHECK(!json || !strstr(json, "secret-value"), "[%s]: no secret leaked", sql);
        free(msg);
    }
    /* Inside the lake the same functions work. */
    char sql[512];
    uint64_t rows = 0;
    snprintf(sql, sizeof sql, "SELECT * FROM read_csv('%s/sales/orders.csv')", data);
    T_EQ_INT(run(sql, NULL, &rows, NULL), DAPI_OK);
    T_EQ_INT(rows, 3);
    snprintf(sql, sizeof sql, "SELECT size > 0 AS ok FROM read_text('%s/sales/orders.csv')", data);
    const char *json;
    T_EQ_INT(run(sql, &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"ok\":true}");
}

static void test_lake(void)
{
    const char *json = NULL;
    uint64_t rows = 0;
    T_EQ_INT(run("SELECT id, amount, note FROM sales.orders ORDER BY id", &json, &rows, NULL),
             DAPI_OK);
    T_EQ_STR(json,
             "{\"id\":1,\"amount\":10.5,\"note\":\"a\"},{\"id\":2,\"amount\":20.0,\"note\":null},"
             "{\"id\":3,\"amount\":30.25,\"note\":\"c, d\"}");
    T_EQ_INT(run("SELECT id, kind FROM sales.events ORDER BY id", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"id\":1,\"kind\":\"click\"},{\"id\":2,\"kind\":\"view\"}");
    T_EQ_INT(run("SELECT * FROM sales.regions ORDER BY code", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"code\":\"N\",\"name\":\"North\"},{\"code\":\"S\",\"name\":\"South\"}");
    T_EQ_INT(run("SELECT count(*) AS n FROM logs.hits", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"n\":2}");
    T_EQ_INT(run("SELECT x FROM logs.doc", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"x\":[1,2]}");
    /* Files that are not tables and dot-files are ignored. */
    T_EQ_INT(check("SELECT * FROM sales.readme", NULL), DAPI_ERR_SQL);
    T_EQ_INT(check("SELECT * FROM sales.hidden", NULL), DAPI_ERR_SQL);

    /* A new file, and a new layer, are visible at the next check without reopening. */
    T_EQ_INT(check("SELECT * FROM sales.fresh", NULL), DAPI_ERR_SQL);
    t_write_in(root, "data/sales/fresh.csv", "k\n7\n");
    t_mkdir_in(root, "data/newlayer");
    t_write_in(root, "data/newlayer/t.ndjson", "{\"v\":1}\n");
    T_EQ_INT(dapi_engine_sync_lake(eng), DAPI_OK);
    T_EQ_INT(run("SELECT k FROM sales.fresh", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"k\":7}");
    T_EQ_INT(run("SELECT v FROM newlayer.t", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"v\":1}");
    T_EQ_INT(dapi_engine_sync_lake(eng), DAPI_OK); /* nothing changed */
    T_EQ_INT(run("SELECT k FROM sales.fresh", &json, NULL, NULL), DAPI_OK);

    /* A removed file is no longer queryable. */
    char p[512];
    snprintf(p, sizeof p, "%s/sales/fresh.csv", data);
    unlink(p);
    char *msg = NULL;
    T_EQ_INT(check("SELECT * FROM sales.fresh", &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "fresh"), "message names the table: [%s]", msg ? msg : "");
    free(msg);
    T_EQ_INT(run("SELECT * FROM sales.fresh", NULL, NULL, NULL), DAPI_ERR_SQL);
    T_EQ_INT(run("SELECT count(*) FROM sales.orders", NULL, NULL, NULL), DAPI_OK);

    /* The same table replaced by another format. */
    t_write_in(root, "data/sales/swap.csv", "a\n1\n");
    T_EQ_INT(run("SELECT a FROM sales.swap", &json, NULL, NULL), DAPI_OK);
    snprintf(p, sizeof p, "%s/sales/swap.csv", data);
    unlink(p);
    t_write_in(root, "data/sales/swap.ndjson", "{\"a\":2}\n");
    T_EQ_INT(run("SELECT a FROM sales.swap", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"a\":2}");

    /* A file rewritten in place with another schema ("replaced files" are kept in line). */
    t_write_in(root, "data/sales/evolve.csv", "a,b\n1,2\n");
    T_EQ_INT(run("SELECT * FROM sales.evolve", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"a\":1,\"b\":2}");
    t_write_in(root, "data/sales/evolve.csv", "a,b,c\n1,2,x\n");
    msg = NULL;
    enum dapi_err r = run("SELECT * FROM sales.evolve", &json, NULL, &msg);
    T_CHECK(r == DAPI_OK, "rewritten file with a new column still queryable (got %d: %s)", (int)r,
            msg ? msg : "");
    if(r == DAPI_OK)
        T_EQ_STR(json, "{\"a\":1,\"b\":2,\"c\":\"x\"}");
    free(msg);

    /* A file that could not be read when first seen (still being written: empty) becomes a
     * table once it has content. */
    t_write_in(root, "data/sales/late.csv", "");
    dapi_engine_sync_lake(eng);
    t_write_in(root, "data/sales/late.csv", "z\n5\n");
    msg = NULL;
    r = run("SELECT z FROM sales.late", &json, NULL, &msg);
    T_CHECK(r == DAPI_OK, "file filled after it first appeared is queryable (got %d: %s)", (int)r,
            msg ? msg : "");
    if(r == DAPI_OK)
        T_EQ_STR(json, "{\"z\":5}");
    free(msg);
}

static void test_run(void)
{
    /* Several chunks reach the sink, in order. */
    struct collect c;
    collect_init(&c);
    char *msg = NULL;
    T_EQ_INT(dapi_engine_run(con, "SELECT i FROM range(5000) t(i) ORDER BY i", NULL, 0,
                             &collect_sink, &c, &msg),
             DAPI_OK);
    T_EQ_INT(c.begins, 1);
    T_EQ_INT(c.rows, 5000);
    T_CHECK(c.chunks >= 3, "5000 rows come in several chunks (%llu)",
            (unsigned long long)c.chunks);
    T_EQ_INT(c.ncols, 1);
    T_CHECK(c.out.data && strncmp(c.out.data, "{\"i\":0},{\"i\":1},", 16) == 0, "in order");
    collect_free(&c);

    /* Zero rows: begin is still called. */
    collect_init(&c);
    T_EQ_INT(dapi_engine_run(con, "SELECT 1 AS a WHERE false", NULL, 0, &collect_sink, &c, &msg),
             DAPI_OK);
    T_EQ_INT(c.begins, 1);
    T_EQ_INT(c.rows, 0);
    T_EQ_INT(c.ncols, 1);
    collect_free(&c);

    /* A sink error stops the run and is returned as is. */
    collect_init(&c);
    c.fail_chunk = DAPI_ERR_TOO_LARGE;
    msg = (char *)1;
    T_EQ_INT(dapi_engine_run(con, "SELECT * FROM range(100000)", NULL, 0, &collect_sink, &c, &msg),
             DAPI_ERR_TOO_LARGE);
    T_CHECK(msg == NULL, "no message for a sink error");
    T_EQ_INT(c.chunks, 1);
    collect_free(&c);

    /* Duplicate column names reach the sink as DuckDB names them. */
    const char *json;
    T_EQ_INT(run("SELECT 1 AS a, 2 AS a", &json, NULL, NULL), DAPI_OK);
    T_CHECK(strncmp(json, "{\"a\":1,", 7) == 0, "first a is 1: %s", json);

    /* A run-time error is DAPI_ERR_SQL with a message. */
    msg = NULL;
    T_EQ_INT(
        run("SELECT CAST(s AS INTEGER) AS n FROM (VALUES ('1'), ('x')) t(s)", NULL, NULL, &msg),
        DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "x"), "conversion error message: [%s]", msg ? msg : "");
    free(msg);
    T_EQ_INT(run("SELECT error('boom') AS e", NULL, NULL, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "boom"), "error() message: [%s]", msg ? msg : "");
    free(msg);

    /* A sample of types through the renderer. */
    static const struct {
        const char *sql, *json;
    } types[] = {
        {"SELECT 42::BIGINT AS v", "{\"v\":42}"},
        {"SELECT NULL AS v", "{\"v\":null}"},
        {"SELECT 'it''s \"q\"' AS v", "{\"v\":\"it's \\\"q\\\"\"}"},
        {"SELECT true AS v", "{\"v\":true}"},
        {"SELECT DATE '2024-02-29' AS v", "{\"v\":\"2024-02-29\"}"},
        {"SELECT 12.50::DECIMAL(6,2) AS v", "{\"v\":12.50}"},
        {"SELECT [1, NULL, 3] AS v", "{\"v\":[1,null,3]}"},
        {"SELECT {'k': 'x', 'n': 1} AS v", "{\"v\":{\"k\":\"x\",\"n\":1}}"},
        {"SELECT 'a long string that is not inlined' AS v",
         "{\"v\":\"a long string that is not inlined\"}"},
    };
    for(size_t i = 0; i < N(types); i++) {
        T_CHECK(run(types[i].sql, &json, NULL, NULL) == DAPI_OK, "[%s] runs", types[i].sql);
        T_CHECK(strcmp(json, types[i].json) == 0 ||
                    /* DECIMAL may come out as a number without trailing zeros */
                    (strstr(types[i].sql, "DECIMAL") && strcmp(json, "{\"v\":12.5}") == 0),
                "[%s]:\n  got  [%s]\n  want [%s]", types[i].sql, json, types[i].json);
    }
}

static void test_timetz(void)
{
    const char *json = NULL;
    char *msg = NULL;
    enum dapi_err r = run("SELECT '12:34:56+02'::TIMETZ AS t, 1 AS n", &json, NULL, &msg);
    T_CHECK(r == DAPI_OK, "TIMETZ column returned (got %d: %s)", (int)r, msg ? msg : "");
    if(r == DAPI_OK)
        T_EQ_STR(json, "{\"t\":\"12:34:56+02\",\"n\":1}");
    free(msg);
    r = run("SELECT [TIMETZ '01:02:03+00'] AS l", &json, NULL, NULL);
    T_EQ_INT(r, DAPI_OK);
    /* a container holding TIMETZ is cast whole: DuckDB's text for the list */
    if(r == DAPI_OK)
        T_CHECK(strncmp(json, "{\"l\":\"[", 7) == 0 && strstr(json, "01:02:03+00"),
                "list of TIMETZ as one string: [%s]", json);

    /* The cast wrapper must accept every text check accepts. */
    static const struct {
        const char *sql, *json;
    } forms[] = {
        {"SELECT '12:00:00+00'::TIMETZ AS t;", "{\"t\":\"12:00:00+00\"}"},
        {"SELECT '12:00:00+00'::TIMETZ AS t -- why", "{\"t\":\"12:00:00+00\"}"},
        {"SELECT '12:00:00+00'::TIMETZ AS t; -- done", "{\"t\":\"12:00:00+00\"}"},
        {"SELECT '12:00:00+00'::TIMETZ AS t; /* done */", "{\"t\":\"12:00:00+00\"}"},
        {"SELECT 1 AS a, '12:00:00+00'::TIMETZ AS a", "{\"a\":1,\"a\":\"12:00:00+00\"}"},
        {"SELECT '12:00:00+00'::TIMETZ AS \"we\"\"ird\"", "{\"we\\\"ird\":\"12:00:00+00\"}"},
    };
    for(size_t i = 0; i < N(forms); i++) {
        char *cmsg = NULL;
        T_EQ_INT(check(forms[i].sql, &cmsg), DAPI_OK);
        free(cmsg);
        msg = NULL;
        r = run(forms[i].sql, &json, NULL, &msg);
        T_CHECK(r == DAPI_OK, "[%s] runs (got %d: %s)", forms[i].sql, (int)r, msg ? msg : "");
        if(r == DAPI_OK)
            T_CHECK(strcmp(json, forms[i].json) == 0, "[%s]:\n  got  [%s]\n  want [%s]",
                    forms[i].sql, json, forms[i].json);
        free(msg);
    }
}

/* Regression (issue 9): DuckDB's caret under the error pointed at nothing once the details
 * were shown on one line; the message now says the line and column up front, and keeps the
 * LINE block. The pure cases are DuckDB 1.4.4's own messages. */
static void test_error_position(void)
{
    static const struct {
        const char *msg, *sql, *want; /* want NULL: no position can be given */
    } cases[] = {
        {"Parser Error: syntax error at or near \"FROM\"\n\nLINE 2: FROM x WHERE\n        ^",
         "SELECT 1 +\nFROM x WHERE",
         "Parser Error at line 2, column 1: syntax error at or near \"FROM\"\n\nLINE 2: FROM x "
         "WHERE\n        ^"},
        {"Binder Error: Referenced column \"y\" not found in FROM clause!\nCandidate bindings: "
         "\"x\"\n\nLINE 2: SELECT y FROM t\n               ^",
         "WITH t AS (SELECT 1 x)\nSELECT y FROM t",
         "Binder Error at line 2, column 8: Referenced column \"y\" not found in FROM clause!\n"
         "Candidate bindings: \"x\"\n\nLINE 2: SELECT y FROM t\n               ^"},
        /* a tab takes no display column: the caret is 2 columns in, foo is character 5 */
        {"Binder Error: Referenced column \"foo\" was not found because the FROM clause is "
         "missing\n\nLINE 2: \t1,\tfoo\n          ^",
         "SELECT\n\t1,\tfoo", "Binder Error at line 2, column 5: "},
        /* \r\n line ends */
        {"Binder Error: x\n\nLINE 3:   nope\n          ^", "SELECT 1,\r\n  2,\r\n  nope",
         "Binder Error at line 3, column 3: "},
        /* a window of a long line, "..." at its start */
        {"Binder Error: Referenced column \"nope\" not found in FROM clause!\n\nLINE 1: ...      "
         "+ nope FROM (SELECT 1 x)\n                   ^",
         "SELECT x                    + nope FROM (SELECT 1 x)",
         "Binder Error at line 1, column 31: "},
        /* a window with "..." at its end */
        {"Binder Error: Referenced column \"c1\" not found\n\nLINE 1: SELECT c0, c1, c2,...\n"
         "                   ^",
         "SELECT c0, c1, c2, c3, c4 FROM t", "Binder Error at line 1, column 12: "},
        /* wide characters before the caret: the line only */
        {"Binder Error: x\n\nLINE 1: SELECT '\xc3\xa9\xe6\x97\xa5' AS a, foo\n"
         "                       ^",
         "SELECT '\xc3\xa9\xe6\x97\xa5' AS a, foo", "Binder Error at line 1: x"},
        /* the caret after the last character (end of input) */
        {"Parser Error: syntax error at end of input\n\nLINE 1: SELECT 1 +\n                  ^",
         "SELECT 1 +", "Parser Error at line 1, column 11: "},
        /* no LINE block; a block that is not the query's (a wrapped query); not a line */
        {"Parser Error: syntax error at end of input", "SELECT 1 +", NULL},
        {"Conversion Error: x\n\nLINE 1: SELECT * REPLACE (\n       ^", "SELECT 1", NULL},
        {"Binder Error: x\n\nLINE 9: SELECT 1\n        ^", "SELECT 1", NULL},
        {"Binder Error: x\n\nLINE 1: SELECT 1\n   ^", "SELECT 1", NULL},
        {"Binder Error: x\n\nLINE 1: SELECT 1", "SELECT 1", NULL},
        /* no "<Kind> Error: " prefix: after the first line */
        {"something odd\nmore\n\nLINE 1: SELECT 1\n               ^", "SELECT 1",
         "something odd (at line 1, column 8)\nmore"},
    };
    for(size_t i = 0; i < N(cases); i++) {
        char *got = dapi_engine_locate_error(cases[i].msg, cases[i].sql);
        if(!cases[i].want)
            T_CHECK(got == NULL, "case %zu: no position, got [%s]", i, got ? got : "");
        else
            T_CHECK(got && strncmp(got, cases[i].want, strlen(cases[i].want)) == 0,
                    "case %zu:\n  got  [%s]\n  want [%s…]", i, got ? got : "(null)",
                    cases[i].want);
        free(got);
    }
    /* through the check and the run, on DuckDB's real messages */
    char *msg = NULL;
    T_EQ_INT(check("SELECT 1 +\nFROM range(3) WHERE", &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strncmp(msg, "Parser Error at line 2, column 1: ", 34) == 0 &&
                strstr(msg, "\nLINE 2: FROM range(3) WHERE\n        ^"),
            "check: [%s]", msg ? msg : "(null)");
    free(msg);
    msg = NULL;
    T_EQ_INT(run("SELECT 1 AS a,\n  CAST('x' AS INTEGER) AS b", NULL, NULL, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strncmp(msg, "Conversion Error at line 2, column ", 35) == 0, "run: [%s]",
            msg ? msg : "(null)");
    free(msg);
}

static void test_deadline(void)
{
    struct collect c;
    collect_init(&c);
    char *msg = (char *)1;
    int64_t t0 = dapi_clock_mono_ms();
    enum dapi_err r = dapi_engine_run(con, "SELECT count(*) FROM range(10000000000)", NULL, t0 - 1,
                                      &collect_sink, &c, &msg);
    int64_t took = dapi_clock_mono_ms() - t0;
    T_EQ_INT(r, DAPI_ERR_TIMEOUT);
    T_CHECK(msg == NULL, "no message with a timeout");
    T_CHECK(took < 4000, "interrupted promptly (%lld ms)", (long long)took);
    T_EQ_INT(c.rows, 0);
    collect_free(&c);

    /* The connection is usable afterwards. */
    const char *json;
    T_EQ_INT(run("SELECT 42 AS v", &json, NULL, NULL), DAPI_OK);
    T_EQ_STR(json, "{\"v\":42}");

    /* A far deadline does not interfere. */
    collect_init(&c);
    msg = NULL;
    T_EQ_INT(dapi_engine_run(con, "SELECT * FROM range(10)", NULL, dapi_clock_mono_ms() + 600000,
                             &collect_sink, &c, &msg),
             DAPI_OK);
    T_EQ_INT(c.rows, 10);
    collect_free(&c);
}

/* ---- work the interrupt cannot reach: dapi_econn_overrun_ms ----------------------------- */

struct slow_run {
    struct dapi_econn *c;
    int64_t deadline_ms;
    enum dapi_err result;
};

static void *slow_thread(void *arg)
{
    struct slow_run *s = arg;
    struct collect c;
    collect_init(&c);
    char *msg = NULL;
    /* one levenshtein of two 30,000-character strings: about 3 s in one call that never
     * looks at the interrupt flag (the length depends on the row, so it is not folded) */
    s->result = dapi_engine_run(s->c,
                                "SELECT levenshtein(repeat('a', 30000 + r::INT * 0), "
                                "repeat('b', 30000)) AS d FROM range(1) t(r)",
                                NULL, s->deadline_ms, &collect_sink, &c, &msg);
    free(msg);
    collect_free(&c);
    return NULL;
}

/* The watchdog interrupts at the deadline, but the query goes on: the probe says for how
 * long since, and 0 once it has ended (a pool sets such a worker aside). An interruptible
 * query that timed out, or one idle connection, never shows an overrun. */
static void test_overrun_probe(void)
{
    struct dapi_econn *c2 = NULL;
    T_EQ_INT(dapi_engine_connect(eng, &c2), DAPI_OK);
    if(!c2)
        return;
    T_EQ_INT(dapi_econn_overrun_ms(c2), 0);
    struct slow_run s = {c2, dapi_clock_mono_ms() + 100, DAPI_OK};
    pthread_t th;
    T_EQ_INT(pthread_create(&th, NULL, slow_thread, &s), 0);
    int64_t seen = 0, t0 = dapi_clock_mono_ms();
    while(seen < 200 && dapi_clock_mono_ms() - t0 < 60000) {
        int64_t over = dapi_econn_overrun_ms(c2);
        seen = over > seen ? over : seen;
        struct timespec ms = {0, 10000000};
        nanosleep(&ms, NULL);
    }
    pthread_join(th, NULL);
    T_CHECK(seen >= 200, "an overrun of at least 200 ms was seen (%lld ms)", (long long)seen);
    T_EQ_INT(s.result, DAPI_ERR_TIMEOUT);
    T_EQ_INT(dapi_econn_overrun_ms(c2), 0);
    /* the deadline test's query stops at the interrupt: no overrun after it */
    struct collect c;
    collect_init(&c);
    char *msg = NULL;
    T_EQ_INT(dapi_engine_run(c2, "SELECT count(*) FROM range(10000000000)", NULL,
                             dapi_clock_mono_ms() - 1, &collect_sink, &c, &msg),
             DAPI_ERR_TIMEOUT);
    collect_free(&c);
    free(msg);
    T_EQ_INT(dapi_econn_overrun_ms(c2), 0);
    dapi_econn_close(c2);
}

/* ---- running out of memory beside other work: dapi_econn_oom_shared -------------------- */

static enum dapi_err run_on(struct dapi_econn *c, const char *sql)
{
    struct collect k;
    collect_init(&k);
    char *msg = NULL;
    enum dapi_err r = dapi_engine_run(c, sql, NULL, 0, &collect_sink, &k, &msg);
    free(msg);
    collect_free(&k);
    return r;
}

/* A query that runs out of memory alone is too large; one that does so while other work is
 * in the engine (another engine's too: the process's memory is shared) may be a victim: the
 * probe tells them apart, and its mark lets a rerun wait for exactly that other work. A
 * query that fails for another reason beside the same work is no memory victim. */
static void test_oom_company(void)
{
    static const char big[] = "SELECT len(list(i)) AS n FROM range(20000000) t(i)";
    struct dapi_engine *small = t_engine_open(
        &scratch, (struct dapi_engine_opts){.threads = 1, .memory_limit = "64MB"});
    struct dapi_econn *m = NULL, *c2 = NULL;
    if(small)
        T_EQ_INT(dapi_engine_connect(small, &m), DAPI_OK);
    T_EQ_INT(dapi_engine_connect(eng, &c2), DAPI_OK);
    if(!m || !c2)
        goto out;
    uint64_t mark = 0;
    T_EQ_INT(run_on(m, big), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_econn_oom_shared(m, &mark), 0);
    T_EQ_INT(dapi_engine_wait_work(UINT64_MAX, dapi_clock_mono_ms()), 1); /* nothing runs */

    struct slow_run s = {c2, 0, DAPI_ERR_INTERNAL};
    pthread_t th;
    T_EQ_INT(pthread_create(&th, NULL, slow_thread, &s), 0);
    dapi_clock_sleep_ms(500); /* the slow query has begun (it runs about 3 s) */
    T_EQ_INT(run_on(m, "SELECT * FROM no_such_table"), DAPI_ERR_SQL);
    T_EQ_INT(dapi_econn_oom_shared(m, &mark), 0);
    T_EQ_INT(run_on(m, big), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_econn_oom_shared(m, &mark), 1);
    /* the slow query is still in flight: the wait for it times out, then sees it end */
    T_EQ_INT(dapi_engine_wait_work(mark, dapi_clock_mono_ms() + 50), 0);
    T_EQ_INT(dapi_engine_wait_work(mark, dapi_clock_mono_ms() + 60000), 1);
    pthread_join(th, NULL);
    T_EQ_INT(s.result, DAPI_OK);
    /* alone again */
    T_EQ_INT(run_on(m, big), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_econn_oom_shared(m, &mark), 0);
out:
    dapi_econn_close(c2);
    dapi_econn_close(m);
    if(small)
        dapi_engine_close(small);
}

/* Running a query does not leak: measured on the C heap (DuckDB's own allocator is not
 * counted) over many runs of a query with an 8000-byte column name. */
static void test_no_leak(void)
{
    static char sql[8100];
    snprintf(sql, sizeof sql, "SELECT 1 AS ");
    memset(sql + 12, 'x', 8000);
    sql[8012] = '\0';
    for(int i = 0; i < 10; i++)
        run(sql, NULL, NULL, NULL);
    size_t before = mallinfo2().uordblks;
    for(int i = 0; i < 100; i++)
        run(sql, NULL, NULL, NULL);
    size_t after = mallinfo2().uordblks;
    long long grew = (long long)after - (long long)before;
    T_CHECK(grew < 100 * 8000 / 4, "heap grew by %lld bytes over 100 runs (%lld per run)", grew,
            grew / 100);
}

/* Checking a query executes the connection's long-lived statements (json_serialize_sql, and
 * glob for a file path). DuckDB 1.4 keeps something of every execution of a prepared
 * statement until it is destroyed (duckdb/duckdb#21089): the heap grew by about 1.2 KB per
 * check of this query, for good. They are prepared again every 1,024 executions, so 2,048
 * more checks (the same point of that cycle) leave the heap where it was. */
static void test_checks_do_not_grow_the_heap(void)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM glob('%s/sales/*.tsv')", data);
    T_EQ_INT(check(sql, NULL), DAPI_OK);
    for(int i = 1; i < 1100; i++)
        check(sql, NULL);
    size_t before = mallinfo2().uordblks;
    for(int i = 0; i < 2048; i++)
        check(sql, NULL);
    long long grew = (long long)mallinfo2().uordblks - (long long)before;
    T_CHECK(grew < 200 * 1000, "heap grew by %lld bytes over 2,048 checks (%lld per check)", grew,
            grew / 2048);
}

static void test_open_errors(void)
{
    struct dapi_engine *e = (struct dapi_engine *)1;
    struct dapi_engine_opts o = {.data_dir = data, .state_dir = state, .memory_limit = "lots"};
    err[0] = '\0';
    T_CHECK(dapi_engine_open(&e, &o, err, sizeof err) != DAPI_OK, "bad memory limit refused");
    T_CHECK(e == NULL, "no engine");
    T_CHECK(strstr(err, "memory-limit") != NULL, "error names --memory-limit: [%s]", err);
    T_EQ_STR(dapi_engine_version(), "v1.4.4");
}

/* The deterministic sample lake (one call: it takes a few seconds). */
static void test_sample(void)
{
    char lake[160];
    snprintf(lake, sizeof lake, "%s/sample", root);
    err[0] = '\0';
    T_CHECK(dapi_engine_sample_data(lake, err, sizeof err) == DAPI_OK, "sample data: %s", err);
    struct dapi_engine *e = NULL;
    struct dapi_engine_opts o = {
        .data_dir = lake, .state_dir = state, .memory_limit = "1GB", .threads = 1};
    T_EQ_INT(dapi_engine_open(&e, &o, err, sizeof err), DAPI_OK);
    if(!e)
        return;
    struct dapi_econn *c2 = NULL;
    T_EQ_INT(dapi_engine_connect(e, &c2), DAPI_OK);
    struct dapi_econn *saved = con;
    con = c2;
    static const struct {
        const char *sql, *json;
    } q[] = {
        {"SELECT count(*) AS n FROM nekt_raw.customers", "{\"n\":100000}"},
        {"SELECT count(*) AS n FROM nekt_raw.orders", "{\"n\":400000}"},
        {"SELECT count(*) AS n FROM nekt_raw.order_items", "{\"n\":1000000}"},
        {"SELECT count(*) AS n FROM nekt_raw.products", "{\"n\":500}"},
        {"SELECT count(DISTINCT order_year) > 1 AS ok FROM nekt_raw.order_items", "{\"ok\":true}"},
        {"SELECT customer_id, external_id FROM nekt_raw.customers ORDER BY customer_id LIMIT 1",
         "{\"customer_id\":1,\"external_id\":\"cus_0000001\"}"},
        {"SELECT sku FROM nekt_raw.products WHERE product_id = 42", "{\"sku\":\"SKU-00042\"}"},
        {"SELECT address.country IS NOT NULL AS ok FROM nekt_trusted.customers LIMIT 1",
         "{\"ok\":true}"},
        {"SELECT count(*) > 0 AS ok FROM nekt_service.daily_revenue", "{\"ok\":true}"},
        {"SELECT count(*) AS n FROM nekt_service.customer_lifetime_value", "{\"n\":100000}"},
    };
    for(size_t i = 0; i < N(q); i++) {
        const char *json = NULL;
        char *msg = NULL;
        enum dapi_err r = run(q[i].sql, &json, NULL, &msg);
        T_CHECK(r == DAPI_OK, "[%s] (got %d: %s)", q[i].sql, (int)r, msg ? msg : "");
        if(r == DAPI_OK)
            T_CHECK(strcmp(json, q[i].json) == 0, "[%s]:\n  got  [%s]\n  want [%s]", q[i].sql,
                    json, q[i].json);
        free(msg);
    }
    con = saved;
    dapi_econn_close(c2);
    dapi_engine_close(e);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_lake_make(&scratch, "engine"))
        T_DONE();
    t_mkdir_in(root, "data/sales");
    t_mkdir_in(root, "data/logs");
    t_mkdir_in(root, "data2");
    t_write_in(root, "data/sales/orders.csv",
               "id,amount,note\n1,10.5,a\n2,20,\n3,30.25,\"c, d\"\n");
    t_write_in(root, "data/sales/events.ndjson",
               "{\"id\":1,\"kind\":\"click\"}\n{\"id\":2,\"kind\":\"view\"}\n");
    t_write_in(root, "data/sales/regions.tsv", "code\tname\nN\tNorth\nS\tSouth\n");
    t_write_in(root, "data/sales/readme.txt", "not a table\n");
    t_write_in(root, "data/sales/.hidden.csv", "a\n1\n");
    t_write_in(root, "data/logs/hits.jsonl", "{\"p\":\"/\"}\n{\"p\":\"/x\"}\n");
    t_write_in(root, "data/logs/doc.json", "[{\"x\":[1,2]}]");
    t_write_in(root, "data2/secret.csv", "s\nsecret-value\n");
    t_write_in(root, "outside.txt", "secret-value\n");

    eng = t_engine_open(&scratch, (struct dapi_engine_opts){.threads = 1});
    if(eng)
        T_EQ_INT(dapi_engine_connect(eng, &con), DAPI_OK);
    if(!con)
        goto out;
    /* Relative paths are resolved from the working directory: make it the test root. */
    if(chdir(root))
        T_CHECK(0, "chdir");

    test_accepted();
    test_refused();
    test_file_access();
    test_lake();
    test_run();
    test_timetz();
    test_error_position();
    test_deadline();
    test_overrun_probe();
    test_oom_company();
    test_no_leak();
    test_checks_do_not_grow_the_heap();
    test_open_errors();
    test_sample();

    dapi_econn_close(con);
    if(chdir("/"))
        T_CHECK(0, "chdir /");
out:
    dapi_engine_close(eng);
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
