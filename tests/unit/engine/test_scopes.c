/* Scopes through the real engine (docs/auth.md, "Scopes"): a query held to some layers reads
 * nothing else, whatever the SQL. Every bypass idea is a query that must fail — refused with
 * DAPI_ERR_FORBIDDEN naming the layer, or refused by the sandbox as before — and, where the
 * query is an ordinary read, the same query without a scope is shown to read the other layer,
 * so that the refusal is the scope's doing. Checks and runs both hold to the scope. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t.h"
#include "base/log.h"
#include "engine/engine.h"
#include "engine/sandbox.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct t_lake lake;
static const char *root = lake.root;
static struct dapi_engine *eng;
static struct dapi_econn *con;
static struct dapi_scope pub, pub_mirror, pub_secret, mirror_secret, mixed, nothing;

static void scope_of(struct dapi_scope *s, const char *a, const char *b)
{
    memset(s, 0, sizeof *s);
    if(a)
        snprintf(s->layers[s->n++], sizeof s->layers[0], "%s", a);
    if(b)
        snprintf(s->layers[s->n++], sizeof s->layers[0], "%s", b);
}

static void link_rel(const char *target, const char *rel)
{
    t_lake_link(&lake, target, rel);
}

static const char *expand(const char *sql)
{
    return t_lake_expand(&lake, sql);
}

static enum dapi_err check(const char *sql, const struct dapi_scope *scope, char **msg)
{
    char *m = NULL;
    enum dapi_err r = dapi_engine_check(con, expand(sql), scope, &m);
    if(msg)
        *msg = m;
    else
        free(m);
    return r;
}

static enum dapi_err n_begin(void *ctx, size_t ncols, const char *const *names,
                             const char *const *types)
{
    return DAPI_OK;
}

static enum dapi_err n_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                             uint64_t nrows)
{
    *(uint64_t *)ctx += nrows;
    return DAPI_OK;
}

static const struct dapi_sink count_sink = {n_begin, n_chunk};

static enum dapi_err run(const char *sql, const struct dapi_scope *scope, uint64_t *rows,
                         char **msg)
{
    char *m = NULL;
    *rows = 0;
    enum dapi_err r = dapi_engine_run(con, expand(sql), scope, 0, &count_sink, rows, &m);
    if(msg)
        *msg = m;
    else
        free(m);
    return r;
}

/* sql reads another layer: refused for scope with 403 naming layer, at the check and at the
 * run (nothing returned); when unscoped_ok, the same query reads rows without a scope. */
static void forbidden(const char *sql, const struct dapi_scope *scope, const char *layer,
                      int unscoped_ok)
{
    char *msg = NULL, want[200];
    uint64_t rows = 0;
    snprintf(want, sizeof want, "this API key may not read layer '%s'", layer);
    enum dapi_err r = check(sql, scope, &msg);
    T_CHECK(r == DAPI_ERR_FORBIDDEN && msg && strcmp(msg, want) == 0,
            "check refuses [%s] naming '%s' (got %d: %s)", sql, layer, (int)r, msg ? msg : "");
    free(msg);
    msg = NULL;
    r = run(sql, scope, &rows, &msg);
    T_CHECK(r == DAPI_ERR_FORBIDDEN && rows == 0 && msg && strcmp(msg, want) == 0,
            "run refuses [%s] (got %d, %llu rows: %s)", sql, (int)r, (unsigned long long)rows,
            msg ? msg : "");
    free(msg);
    if(unscoped_ok) {
        msg = NULL;
        r = run(sql, NULL, &rows, &msg);
        T_CHECK(r == DAPI_OK && rows > 0, "unscoped, [%s] reads rows (got %d: %s)", sql, (int)r,
                msg ? msg : "");
        free(msg);
    }
}

/* sql is refused for scope by the sandbox's other rules (not a lake table, a path that is
 * not allowed, a function not on the list): not read either. */
static void refused(const char *sql, const struct dapi_scope *scope)
{
    char *msg = NULL;
    uint64_t rows = 0;
    enum dapi_err r = check(sql, scope, &msg);
    T_CHECK((r == DAPI_ERR_SQL || r == DAPI_ERR_FORBIDDEN) && msg, "check refuses [%s] (got %d)",
            sql, (int)r);
    free(msg);
    r = run(sql, scope, &rows, NULL);
    T_CHECK(r != DAPI_OK && rows == 0, "run refuses [%s] (got %d)", sql, (int)r);
}

static void allowed(const char *sql, const struct dapi_scope *scope, uint64_t want_rows)
{
    char *msg = NULL;
    uint64_t rows = 0;
    enum dapi_err r = run(sql, scope, &rows, &msg);
    T_CHECK(r == DAPI_OK && rows == want_rows, "allowed [%s]: %llu rows (got %d, %llu: %s)", sql,
            (unsigned long long)want_rows, (int)r, (unsigned long long)rows, msg ? msg : "");
    free(msg);
}

static void test_tables(void)
{
    /* the other layer's table, however it is written */
    forbidden("SELECT * FROM \"secret\".\"t\"", &pub, "secret", 1);
    forbidden("SELECT * FROM secret.t", &pub, "secret", 1);
    forbidden("SELECT * FROM \"SECRET\".\"T\"", &pub, "SECRET", 1);
    forbidden("SELECT * FROM Secret.T", &pub, "Secret", 1);
    forbidden("SELECT * FROM memory.secret.t", &pub, "secret", 1);
    forbidden("SELECT * FROM \"memory\".\"secret\".\"t\"", &pub, "secret", 1);
    forbidden("SELECT * FROM MEMORY.SECRET.T", &pub, "SECRET", 1);
    forbidden("FROM secret.t", &pub, "secret", 1);
    forbidden("SELECT * FROM secret.t AS pub", &pub, "secret", 1);
    /* joins, CTEs, subqueries anywhere, set operations, lateral, pivot */
    forbidden("SELECT * FROM pub.t JOIN secret.t USING (a)", &pub, "secret", 0);
    forbidden("SELECT * FROM pub.t, secret.t", &pub, "secret", 1);
    forbidden("SELECT * FROM pub.t NATURAL JOIN secret.t", &pub, "secret", 0);
    forbidden("SELECT * FROM pub.t POSITIONAL JOIN secret.t", &pub, "secret", 1);
    forbidden("WITH x AS (SELECT * FROM secret.t) SELECT * FROM x", &pub, "secret", 1);
    forbidden("WITH x AS MATERIALIZED (SELECT * FROM secret.t) SELECT * FROM x", &pub, "secret",
              1);
    forbidden("WITH t AS (SELECT 1 AS a) SELECT * FROM secret.t", &pub, "secret", 1);
    forbidden("WITH secret AS (SELECT 1 AS a) SELECT * FROM secret.t", &pub, "secret", 1);
    forbidden("WITH RECURSIVE r(a) AS (SELECT a FROM secret.t UNION SELECT a FROM r) "
              "SELECT * FROM r",
              &pub, "secret", 1);
    forbidden("SELECT (SELECT max(a) FROM secret.t) AS m", &pub, "secret", 1);
    forbidden("SELECT * FROM pub.t WHERE a::VARCHAR IN (SELECT a::VARCHAR FROM secret.t) OR "
              "true",
              &pub, "secret", 1);
    forbidden("SELECT 1 AS x WHERE EXISTS (SELECT 1 FROM secret.t)", &pub, "secret", 1);
    forbidden("SELECT * FROM (SELECT * FROM (SELECT * FROM secret.t))", &pub, "secret", 1);
    forbidden("SELECT a::VARCHAR FROM pub.t UNION ALL SELECT a FROM secret.t", &pub, "secret", 1);
    forbidden("SELECT a FROM secret.t INTERSECT SELECT a FROM secret.t", &pub, "secret", 1);
    forbidden("SELECT * FROM pub.t, LATERAL (SELECT * FROM secret.t) s", &pub, "secret", 1);
    forbidden("SELECT * FROM secret.t PIVOT (count(*) FOR a IN ('SECRET'))", &pub, "secret", 1);
    forbidden("SELECT * FROM (UNPIVOT secret.t ON a INTO NAME k VALUE v)", &pub, "secret", 1);
    forbidden("SELECT * FROM unnest((SELECT list(a) FROM secret.t))", &pub, "secret", 1);
    forbidden("SELECT list_transform([1], x -> (SELECT max(a) FROM secret.t)) AS l", &pub,
              "secret", 0);
    forbidden("SELECT count(*) FILTER (WHERE a::VARCHAR IN (SELECT a FROM secret.t)) FROM pub.t",
              &pub, "secret", 1);
    forbidden("SELECT * FROM pub.t ORDER BY (SELECT max(a) FROM secret.t)", &pub, "secret", 1);
    forbidden("VALUES ((SELECT max(a) FROM secret.t))", &pub, "secret", 1);
    /* a layer folder that is a link to another layer: a layer of its own, outside the scope */
    forbidden("SELECT * FROM mirror.t", &pub, "mirror", 1);
    /* a layer that does not exist is refused like one that does: no probing for names */
    forbidden("SELECT * FROM nosuch.t", &pub, "nosuch", 0);
    forbidden("SELECT * FROM \"secret.t\".x", &pub, "secret.t", 0);
    forbidden("SELECT * FROM information_schema.tables", &pub, "information_schema", 0);
    forbidden("SELECT * FROM pg_catalog.pg_tables", &pub, "pg_catalog", 0);
    forbidden("SELECT * FROM main.t", &pub, "main", 0);
    /* no scope at all: every layer refused */
    forbidden("SELECT * FROM pub.t", &nothing, "pub", 1);
    /* two folders one schema ("Mixed" and "mixed"): a scope of one does not open the other */
    forbidden("SELECT * FROM mixed.t", &mixed, "mixed", 1);
    /* names DuckDB would resolve in its own catalog or as files: refused as before */
    refused("SELECT * FROM \"secret.t\"", &pub);
    refused("SELECT * FROM t", &pub);
    refused("SELECT * FROM duckdb_tables()", &pub);
    refused("SELECT * FROM duckdb_views()", &pub);
    refused("SELECT * FROM duckdb_columns()", &pub);
    refused("SELECT * FROM tables", &pub);
    refused("SELECT * FROM duckdb_tables", &pub);
    refused("SELECT * FROM system.main.duckdb_tables", &pub);
    refused("SELECT * FROM system.information_schema.tables", &pub);
    refused("SELECT * FROM temp.secret.t", &pub);
    refused("SELECT * FROM query_table('secret.t')", &pub);
    refused("SELECT * FROM pragma_table_info('secret.t')", &pub);
    refused("SELECT * FROM pragma_storage_info('secret.t')", &pub);
    refused("SELECT * FROM duckdb_schemas()", &pub);
    refused("SELECT * FROM query('SELECT * FROM secret.t')", &pub);
    refused("DESCRIBE secret.t", &pub);
    refused("SUMMARIZE secret.t", &pub);
    refused("PIVOT secret.t ON a USING count(*)", &pub);
    refused("SELECT * FROM 'DATA/secret/t.csv'", &pub);
    refused("SELECT * FROM \"DATA/secret/t.csv\"", &pub);
    refused("FROM 'DATA/secret/t.csv'", &pub);
    refused("SELECT * FROM pub.\"DATA/secret/t.csv\"", &pub);
    refused("SELECT secret.t.a FROM pub.t", &pub);
    /* allowed: its own layer, in any case */
    allowed("SELECT * FROM pub.t", &pub, 1);
    allowed("SELECT * FROM \"PUB\".\"T\"", &pub, 1);
    allowed("SELECT * FROM memory.pub.t", &pub, 1);
    allowed("WITH x AS (SELECT * FROM pub.t) SELECT * FROM x", &pub, 1);
    /* tables whose files are another layer's through a link: a file or a folder of pub
     * linked to secret's, a layer folder (mirror) that is a link to secret */
    forbidden("SELECT * FROM pub.link", &pub, "secret", 1);
    forbidden("SELECT * FROM \"PUB\".\"LINK\"", &pub, "secret", 1);
    forbidden("SELECT * FROM pub.linkdir", &pub, "secret", 1);
    forbidden("SELECT * FROM mirror.t", &pub_mirror, "secret", 1);
    forbidden("SELECT * FROM pub.t, mirror.t", &pub_mirror, "secret", 1);
    allowed("SELECT * FROM pub.link", &pub_secret, 1);
    allowed("SELECT * FROM mirror.t", &mirror_secret, 1);
    allowed("SELECT * FROM secret.t", NULL, 1);
}

static void test_files(void)
{
    /* lake table functions on another layer's files */
    forbidden("SELECT * FROM read_csv('DATA/secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv_auto('DATA/secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv('DATA/secret/t.csv', filename = true)", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv(['DATA/pub/t.csv', 'DATA/secret/t.csv'])", &pub, "secret",
              1);
    forbidden("SELECT * FROM read_csv(['DATA/secret/t.csv', 'DATA/pub/t.csv'])", &pub, "secret",
              1);
    forbidden("SELECT * FROM read_parquet('DATA/secret/p.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM parquet_scan('DATA/secret/p.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_parquet('DATA/secret/parts/*.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_parquet('DATA/secret/**/*.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM parquet_metadata('DATA/secret/p.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM parquet_schema('DATA/secret/p.parquet')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_text('DATA/secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_blob('DATA/secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM sniff_csv('DATA/secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_json_auto('DATA/secret/e.ndjson')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_ndjson_objects('DATA/secret/e.ndjson')", &pub, "secret", 1);
    forbidden("SELECT * FROM glob('DATA/secret/*')", &pub, "secret", 1);
    forbidden("SELECT (SELECT count(*) FROM read_csv('DATA/secret/t.csv')) AS n", &pub, "secret",
              1);
    forbidden("WITH x AS MATERIALIZED (FROM read_parquet('DATA/secret/p.parquet')) FROM x", &pub,
              "secret", 1);
    forbidden("SELECT * FROM pub.t, read_csv('DATA/secret/t.csv') s", &pub, "secret", 1);
    /* paths: the whole lake, wildcards and doubled slashes in the layer's place */
    forbidden("SELECT * FROM glob('DATA/*')", &pub, "*", 0);
    forbidden("SELECT * FROM glob('DATA/*/*')", &pub, "*", 1);
    forbidden("SELECT * FROM glob('DATA/**')", &pub, "**", 1);
    forbidden("SELECT * FROM read_csv('DATA/*/t.csv')", &pub, "*", 1);
    forbidden("SELECT * FROM read_csv('DATA/s*/t.csv')", &pub, "s*", 1);
    forbidden("SELECT * FROM read_csv('DATA/[ps]ecret/t.csv')", &pub, "[ps]ecret", 1);
    forbidden("SELECT * FROM read_csv('DATA//secret/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM glob('DATA/')", &pub, "(the lake itself)", 0);
    forbidden("SELECT * FROM read_csv('DATA/SECRET/t.csv')", &pub, "SECRET", 0);
    /* a wildcard in an allowed layer whose match is another layer's file through a link */
    forbidden("SELECT * FROM read_csv('DATA/pub/link.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv('DATA/pub/l*.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv('DATA/pub/linkdir/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM read_csv('DATA/pub/*/t.csv')", &pub, "secret", 1);
    forbidden("SELECT * FROM glob('DATA/pub/*')", &pub, "secret", 1);
    /* a layer folder that is a link: its files are the other layer's */
    forbidden("SELECT * FROM read_csv('DATA/mirror/t.csv')", &pub_mirror, "secret", 1);
    /* paths the sandbox refuses whatever the scope */
    refused("SELECT * FROM read_csv('DATA/pub/../secret/t.csv')", &pub);
    refused("SELECT * FROM read_csv('secret/t.csv')", &pub);
    refused("SELECT * FROM read_csv('./secret/t.csv')", &pub);
    refused("SELECT * FROM glob('*')", &pub);
    refused("SELECT * FROM glob('**/*.csv')", &pub);
    refused("SELECT * FROM read_csv('DATA/pub/t.csv' || '/../../secret/t.csv')", &pub);
    refused("SELECT * FROM read_csv(concat('DATA/', 'secret', '/t.csv'))", &pub);
    refused("SELECT * FROM read_csv((SELECT 'DATA/secret/t.csv'))", &pub);
    refused("SELECT * FROM read_csv(['DATA/pub/t.csv', lower('DATA/SECRET/T.CSV')])", &pub);
    refused("SELECT * FROM read_csv('file://DATA/secret/t.csv')", &pub);
    /* allowed: its own files */
    allowed("SELECT * FROM read_csv('DATA/pub/t.csv')", &pub, 1);
    allowed("SELECT * FROM read_csv('DATA/pub/t.csv', filename = true)", &pub, 1);
    allowed("SELECT * FROM read_csv('DATA/pub/t*.csv')", &pub, 1);
    allowed("SELECT * FROM read_csv('DATA//pub/t.csv')", &pub, 1);
    allowed("SELECT * FROM glob('DATA/pub/t*')", &pub, 1);
}

/* DuckDB's binder suggests names from the whole catalog: a scoped key is not told the tables
 * of other layers that way (an unscoped one still gets the suggestion). */
static void test_no_names_of_other_layers(void)
{
    static const char *const sqls[] = {"SELECT * FROM pub.e", "SELECT * FROM pub.p",
                                       "SELECT * FROM \"pub\".\"parts\""};
    for(size_t i = 0; i < N(sqls); i++) {
        char *msg = NULL;
        uint64_t rows;
        T_EQ_INT(check(sqls[i], &pub, &msg), DAPI_ERR_SQL);
        T_CHECK(msg && strstr(msg, "does not exist") && !strstr(msg, "secret") &&
                    !strstr(msg, "Did you mean") && strstr(msg, "LINE 1"),
                "no other layer named in [%s]: %s", sqls[i], msg ? msg : "");
        free(msg);
        msg = NULL;
        T_EQ_INT(run(sqls[i], &pub, &rows, &msg), DAPI_ERR_SQL);
        T_CHECK(msg && !strstr(msg, "secret"), "run: %s", msg ? msg : "");
        free(msg);
    }
    char *msg = NULL;
    T_EQ_INT(check("SELECT * FROM pub.e", NULL, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "Did you mean"), "unscoped: the suggestion stays: %s",
            msg ? msg : "");
    free(msg);
}

/* The pure helper: which layer a path is in. */
static void test_path_layer(void)
{
    char out[64];
    T_CHECK(!dapi_sandbox_path_layer_problem(&pub, "/l", "/l/pub/x.csv", out, sizeof out),
            "in pub");
    T_CHECK(!dapi_sandbox_path_layer_problem(&pub, "/l", "/l//pub", out, sizeof out), "pub");
    T_CHECK(!dapi_sandbox_path_layer_problem(NULL, "/l", "/l/x/y", out, sizeof out), "no scope");
    const char *p = dapi_sandbox_path_layer_problem(&pub, "/l", "/l/pubx/y", out, sizeof out);
    T_CHECK(p && strcmp(p, "pubx") == 0, "a prefix of a name is not the name");
    p = dapi_sandbox_path_layer_problem(&pub, "/l", "/l/Pub/y", out, sizeof out);
    T_CHECK(p && strcmp(p, "Pub") == 0, "folders are matched exactly");
    p = dapi_sandbox_path_layer_problem(&pub, "/l", "/lx/pub/y", out, sizeof out);
    T_CHECK(p != NULL, "outside the dir");
    char *m = dapi_sandbox_forbidden_msg("x");
    T_EQ_STR(m, "this API key may not read layer 'x'");
    free(m);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    scope_of(&pub, "pub", NULL);
    scope_of(&pub_mirror, "pub", "mirror");
    scope_of(&pub_secret, "pub", "secret");
    scope_of(&mirror_secret, "mirror", "secret");
    scope_of(&mixed, "mixed", NULL);
    scope_of(&nothing, NULL, NULL);
    test_path_layer();
    if(t_lake_make(&lake, "scopes"))
        T_DONE();
    t_mkdir_in(root, "data/pub");
    t_mkdir_in(root, "data/secret");
    t_mkdir_in(root, "data/secret/parts");
    t_mkdir_in(root, "data/Mixed");
    t_mkdir_in(root, "data/mixed");
    t_write_in(root, "data/pub/t.csv", "a\n1\n");
    t_write_in(root, "data/secret/t.csv", "a\nSECRET\n");
    t_write_in(root, "data/secret/e.ndjson", "{\"a\":\"SECRET\"}\n");
    t_write_in(root, "data/Mixed/t.csv", "a\nSECRET\n");
    t_write_in(root, "data/mixed/u.csv", "a\n1\n");
    char target[700];
    snprintf(target, sizeof target, "%s/data/secret/t.csv", root);
    link_rel(target, "data/pub/link.csv");
    snprintf(target, sizeof target, "%s/data/secret", root);
    link_rel(target, "data/pub/linkdir");
    link_rel(target, "data/mirror");

    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 1, .check_timeout_ms = 60000});
    if(eng)
        T_EQ_INT(dapi_engine_connect(eng, &con), DAPI_OK);
    if(!con)
        goto out;
    static const char *const parquet[] = {"data/secret/p.parquet", "data/secret/parts/a.parquet"};
    for(size_t i = 0; i < N(parquet); i++) {
        char path[700], *msg = NULL;
        uint64_t rows;
        snprintf(path, sizeof path, "%s/%s", root, parquet[i]);
        T_EQ_INT(dapi_engine_export_parquet(con, "SELECT 'SECRET' AS a", 1, NULL, path, 0, 0,
                                            &rows, &msg),
                 DAPI_OK);
        free(msg);
    }
    test_tables();
    test_files();
    test_no_names_of_other_layers();
    dapi_econn_close(con);
out:
    dapi_engine_close(eng);
    t_rm_rf(root);
    T_DONE();
}
