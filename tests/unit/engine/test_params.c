/* Bind parameters (src/engine/params.c) through the real engine: every type bound and
 * matched, hostile strings bound as data (they match nothing and come back unchanged),
 * missing, unknown and wrongly typed values refused naming the parameter, the sandbox letting
 * named parameters through only with values and never as file paths, and a result whose
 * column needs the VARCHAR wrapper. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "base/log.h"
#include "engine/engine.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct t_lake lake;
static struct dapi_engine *eng;
static struct dapi_econn *con;

/* A sink counting rows and keeping the first row's first column when it is VARCHAR. */
struct count {
    uint64_t rows;
    size_t ncols;
    char first[512];
    char type0[64];
};

static enum dapi_err c_begin(void *ctx, size_t ncols, const char *const *names,
                             const char *const *types)
{
    struct count *c = ctx;
    c->ncols = ncols;
    snprintf(c->type0, sizeof c->type0, "%s", ncols ? types[0] : "");
    return DAPI_OK;
}

static enum dapi_err c_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                             uint64_t nrows)
{
    struct count *c = ctx;
    if(!c->rows && nrows && ncols && cols[0].type == DAPI_CT_VARCHAR) {
        const struct dapi_dstr *v = cols[0].data;
        uint32_t len = v[0].value.inlined.length;
        const char *p = len <= 12 ? v[0].value.inlined.inlined : v[0].value.pointer.ptr;
        snprintf(c->first, sizeof c->first, "%.*s", (int)len, p);
    }
    c->rows += nrows;
    return DAPI_OK;
}

static const struct dapi_sink sink = {c_begin, c_chunk};

static enum dapi_err run(const char *sql, const char *params, struct count *c, char **msg)
{
    char *m = NULL;
    memset(c, 0, sizeof *c);
    enum dapi_err r = dapi_engine_run_bound(con, sql, params, NULL, 0, &sink, c, &m);
    if(msg)
        *msg = m;
    else
        free(m);
    return r;
}

static enum dapi_err check(const char *sql, const char *params, char **msg)
{
    char *m = NULL;
    enum dapi_err r = dapi_engine_check_bound(con, sql, params, NULL, &m);
    if(msg)
        *msg = m;
    else
        free(m);
    return r;
}

/* sql with params checks and runs to rows rows. */
static void rows_are(const char *sql, const char *params, uint64_t rows)
{
    struct count c;
    char *msg = NULL;
    T_EQ_INT(check(sql, params, &msg), DAPI_OK);
    if(msg)
        fprintf(stderr, "    check: %s\n", msg);
    free(msg);
    msg = NULL;
    T_EQ_INT(run(sql, params, &c, &msg), DAPI_OK);
    T_CHECK(c.rows == rows, "%s with %s: %llu rows, expected %llu (%s)", sql, params,
            (unsigned long long)c.rows, (unsigned long long)rows, msg ? msg : "");
    free(msg);
}

#define P "SELECT * FROM \"sales\".\"people\" WHERE "

static void test_every_type(void)
{
    rows_are(P "name = $v", "{\"v\":\"Ann\"}", 1);
    rows_are(P "id = $v", "{\"v\":2}", 1);
    rows_are(P "id > $v", "{\"v\":-1}", 4);
    rows_are(P "amount > $v", "{\"v\":10.5}", 2);
    rows_are(P "amount > $v", "{\"v\":10}", 3);
    rows_are(P "price = $v", "{\"v\":12.5}", 1);
    rows_are(P "vip = $v", "{\"v\":true}", 2);
    rows_are(P "vip = $v", "{\"v\":false}", 2);
    rows_are(P "born < $v", "{\"v\":\"2000-01-01\"}", 2);
    rows_are(P "seen >= $v", "{\"v\":\"2024-01-01 12:00:00\"}", 1);
    rows_are(P "list_contains($v, id)", "{\"v\":[1,3]}", 2);
    rows_are(P "list_contains($v, name)", "{\"v\":[\"Ann\",\"Zoë\",\"nobody\"]}", 2);
    rows_are(P "list_contains($v, amount)", "{\"v\":[1,10.5]}", 1);
    rows_are(P "list_contains($v, name)", "{\"v\":[]}", 0);
    rows_are(P "list_contains($v, name)", "{\"v\":[null,\"Ann\"]}", 1);
    rows_are(P "name = $v", "{\"v\":null}", 0);
    rows_are(P "$v IS NULL", "{\"v\":null}", 4);
    rows_are(P "name = $v", "{\"v\":\"Zoë\"}", 1);
    rows_are(P "name = $v", "{\"v\":\"O'Brien\"}", 1);
    rows_are(P "name = $a OR name = $b", "{\"a\":\"Ann\",\"b\":\"Bob\"}", 2);
    rows_are(P "name = $v OR name = $v || 'x'", "{\"v\":\"Ann\"}", 1); /* one value, twice */
    rows_are("SELECT 1 AS one", "{}", 1);                              /* no parameter */
}

static void test_hostile_strings_are_data(void)
{
    static const char *const v[] = {
        "' OR '1'='1",  "Ann' OR '1'='1", "Ann'; DROP TABLE x; --",
        "Ann --",       "Ann;",           "\\\"Ann\\\"",
        "$v",           "Ann/* */",       "'' OR 1=1 --",
        "\\u0041nn'--",
    };
    for(size_t i = 0; i < N(v); i++) {
        char params[256], want[256];
        snprintf(params, sizeof params, "{\"v\":\"%s\"}", v[i]);
        rows_are(P "name = $v", params, 0);
        struct count c;
        T_EQ_INT(run("SELECT $v AS v", params, &c, NULL), DAPI_OK);
        /* the JSON text's unescaped value comes back */
        snprintf(want, sizeof want, "%s", v[i]);
        for(char *p = want; (p = strstr(p, "\\\""));)
            memmove(p, p + 1, strlen(p));
        if(strcmp(v[i], "\\u0041nn'--") == 0)
            snprintf(want, sizeof want, "Ann'--");
        T_CHECK(strcmp(c.first, want) == 0, "[%s] came back as [%s]", want, c.first);
    }
}

static void refused(const char *sql, const char *params, enum dapi_err want, const char *needle)
{
    char *msg = NULL;
    enum dapi_err r = check(sql, params, &msg);
    T_CHECK(r == want && msg && strstr(msg, needle), "%s with %s: got %d [%s], want %d [%s]", sql,
            params ? params : "(none)", (int)r, msg ? msg : "", (int)want, needle);
    free(msg);
    /* the run refuses it the same way */
    struct count c;
    msg = NULL;
    r = run(sql, params, &c, &msg);
    T_CHECK(r == want && c.rows == 0, "run of %s with %s: got %d", sql, params, (int)r);
    free(msg);
}

static void test_refusals(void)
{
    refused(P "name = $v", "{}", DAPI_ERR_PARAM, "missing parameter 'v'");
    refused(P "name = $v", "{\"v\":\"a\",\"w\":1}", DAPI_ERR_PARAM, "unknown parameter 'w'");
    refused("SELECT 1", "{\"w\":1}", DAPI_ERR_PARAM, "unknown parameter 'w'");
    refused(P "id = $v", "{\"v\":\"2\"}", DAPI_ERR_PARAM, "parameter 'v' must be an integer");
    refused(P "id = $v", "{\"v\":2.5}", DAPI_ERR_PARAM, "parameter 'v' must be an integer");
    refused(P "amount = $v", "{\"v\":\"2\"}", DAPI_ERR_PARAM, "parameter 'v' must be a number");
    refused(P "vip = $v", "{\"v\":1}", DAPI_ERR_PARAM, "parameter 'v' must be true or false");
    refused(P "name = $v", "{\"v\":1}", DAPI_ERR_PARAM, "parameter 'v' must be a string");
    refused(P "born = $v", "{\"v\":\"2024-02-30\"}", DAPI_ERR_PARAM,
            "parameter 'v' is not a valid DATE");
    refused(P "born = $v", "{\"v\":20240101}", DAPI_ERR_PARAM, "parameter 'v' must be a string");
    refused(P "list_contains($v, id)", "{\"v\":1}", DAPI_ERR_PARAM,
            "parameter 'v' must be a list");
    refused(P "list_contains($v, id)", "{\"v\":[1,\"a\"]}", DAPI_ERR_PARAM, "one type");
    refused(P "list_contains($v, id)", "{\"v\":[[1]]}", DAPI_ERR_PARAM, "its elements");
    refused(P "name = $v", "{\"v\":{\"a\":1}}", DAPI_ERR_PARAM, "parameter 'v' must be a string");
    refused("SELECT $v AS v", "{\"v\":{\"a\":1}}", DAPI_ERR_PARAM,
            "parameter 'v' must be a string, a number, true, false, null or a list");
    refused("SELECT CAST(1 AS TINYINT) = $v", "{\"v\":300}", DAPI_ERR_PARAM,
            "not a valid TINYINT");
    refused(P "name = $v", "[1]", DAPI_ERR_PARAM, "must be a JSON object");
    /* the sandbox: $name only with values, never positional, never a file path */
    refused(P "name = $v", NULL, DAPI_ERR_SQL, "not supported without \"params\"");
    refused(P "name = $1", "{\"1\":\"a\"}", DAPI_ERR_SQL, "positional");
    refused(P "name = ?", "{}", DAPI_ERR_SQL, "positional");
    refused("SELECT * FROM read_csv($p)", "{\"p\":\"x.csv\"}", DAPI_ERR_SQL, "literal string");
    refused("SELECT * FROM read_csv([$p])", "{\"p\":\"x.csv\"}", DAPI_ERR_SQL, "literal string");
    refused("SELECT getvariable($p)", "{\"p\":\"x\"}", DAPI_ERR_SQL, "getvariable");
    /* the allow-list still sees every call around a parameter */
    refused("SELECT current_setting($p)", "{\"p\":\"memory_limit\"}", DAPI_ERR_SQL,
            "current_setting");
    refused("SELECT * FROM query($q)", "{\"q\":\"SELECT 1\"}", DAPI_ERR_SQL, "query");
    refused("SELECT * FROM \"sales\".\"people\" WHERE name = (SELECT value FROM "
            "duckdb_settings() WHERE name = $n)",
            "{\"n\":\"threads\"}", DAPI_ERR_SQL, "duckdb_settings");
    /* a statement that is not read-only is refused whatever its parameters */
    refused("DELETE FROM \"sales\".\"people\" WHERE id = $v", "{\"v\":1}", DAPI_ERR_SQL, "DELETE");
}

/* Integers beyond int64 (JSON allows any size; jansson does not): bound exactly to HUGEINT,
 * UHUGEINT and UBIGINT parameters, never through a double (which would make the two
 * 30-digit values equal), and refused by narrower types as out of range. */
static void test_wide_integers(void)
{
#define H "SELECT 1 WHERE CAST('123456789012345678901234567890' AS HUGEINT) = $v"
    rows_are(H, "{\"v\":123456789012345678901234567890}", 1);
    rows_are(H, "{\"v\":123456789012345678901234567891}", 0);
    rows_are("SELECT 1 WHERE CAST('-170141183460469231731687303715884105728' AS HUGEINT) = $v",
             "{\"v\":-170141183460469231731687303715884105728}", 1);
    rows_are("SELECT 1 WHERE CAST('170141183460469231731687303715884105727' AS HUGEINT) = $v",
             "{\"v\":170141183460469231731687303715884105727}", 1);
    rows_are("SELECT 1 WHERE CAST('340282366920938463463374607431768211455' AS UHUGEINT) = $v",
             "{\"v\":340282366920938463463374607431768211455}", 1);
    rows_are("SELECT 1 WHERE CAST('18446744073709551615' AS UBIGINT) = $v",
             "{\"v\":18446744073709551615}", 1);
    rows_are("SELECT 1 WHERE CAST('18446744073709551615' AS UBIGINT) = $v",
             "{\"v\":18446744073709551614}", 0);
    rows_are("SELECT 1 WHERE CAST(5 AS HUGEINT) = $v", "{\"v\":5}", 1); /* small: as before */
    refused(H, "{\"v\":170141183460469231731687303715884105728}", DAPI_ERR_PARAM,
            "parameter 'v' is not a valid HUGEINT");
    refused("SELECT 1 WHERE CAST(1 AS UHUGEINT) = $v", "{\"v\":-100000000000000000000}",
            DAPI_ERR_PARAM, "not a valid UHUGEINT");
    refused("SELECT 1 WHERE CAST(1 AS UBIGINT) = $v", "{\"v\":18446744073709551616}",
            DAPI_ERR_PARAM, "not a valid UBIGINT");
    refused(P "id = $v", "{\"v\":9223372036854775808}", DAPI_ERR_PARAM,
            "parameter 'v' is not a valid BIGINT");
    refused("SELECT 1 WHERE CAST(1 AS INTEGER) = $v", "{\"v\":99999999999999999999}",
            DAPI_ERR_PARAM, "not a valid INTEGER");
    refused(P "name = $v", "{\"v\":99999999999999999999}", DAPI_ERR_PARAM,
            "parameter 'v' must be a string");
    /* lists of them, element by element (a double would make the two 30-digit values one) */
#define L "SELECT 1 WHERE list_contains($l, CAST('123456789012345678901234567890' AS HUGEINT))"
    rows_are(L, "{\"l\":[5,null,123456789012345678901234567890]}", 1);
    rows_are(L, "{\"l\":[5,123456789012345678901234567891]}", 0);
    rows_are("SELECT 1 WHERE list_contains($l, CAST('18446744073709551615' AS UBIGINT))",
             "{\"l\":[1,18446744073709551615]}", 1);
    rows_are("SELECT 1 WHERE list_contains($l, CAST(1 AS UBIGINT))", "{\"l\":[-1,1]}", 1);
    /* where the list's elements are not all integers, or its type holds no more than
     * int64, the list is bound as its values' own type, as before: numbers as DOUBLE */
    rows_are(L, "{\"l\":[1.5,123456789012345678901234567890]}", 1);
#undef L
    /* a DECIMAL takes the digits too */
    rows_are("SELECT 1 WHERE CAST('12345678901234567890123456789' AS DECIMAL(38,0)) = $v",
             "{\"v\":12345678901234567890123456789}", 1);
    rows_are("SELECT 1 WHERE CAST('12345678901234567890123456789' AS DECIMAL(38,0)) = $v",
             "{\"v\":12345678901234567890123456788}", 0);
    /* not inferred: HUGEINT when it holds the value, else DOUBLE as for any number */
    struct count c;
    T_EQ_INT(run("SELECT $v AS v", "{\"v\":123456789012345678901234567890}", &c, NULL), DAPI_OK);
    T_CHECK(strcmp(c.type0, "HUGEINT") == 0, "untyped wide integer: %s", c.type0);
    T_EQ_INT(run("SELECT $v AS v", "{\"v\":1234567890123456789012345678901234567890}", &c, NULL),
             DAPI_OK);
    T_CHECK(strcmp(c.type0, "DOUBLE") == 0, "untyped, beyond 128 bits: %s", c.type0);
#undef H
}

static void test_wrapped_column(void)
{
    /* TIME WITH TIME ZONE has no JSON rendering: the run wraps the query to cast it, and the
     * wrapped query binds the same values */
    struct count c;
    char *msg = NULL;
    T_EQ_INT(run("SELECT CAST($t AS TIMETZ) AS t, $n AS n", "{\"t\":\"10:00:00+02\",\"n\":1}", &c,
                 &msg),
             DAPI_OK);
    T_CHECK(c.rows == 1 && strcmp(c.type0, "VARCHAR") == 0 && strstr(c.first, "10:00:00"),
            "wrapped: %llu rows, %s [%s] %s", (unsigned long long)c.rows, c.type0, c.first,
            msg ? msg : "");
    free(msg);
    /* untyped parameters: the result's columns take the values' types */
    T_EQ_INT(run("SELECT $s AS s", "{\"s\":\"x\"}", &c, NULL), DAPI_OK);
    T_CHECK(strcmp(c.type0, "VARCHAR") == 0 && strcmp(c.first, "x") == 0, "untyped: %s [%s]",
            c.type0, c.first);
    T_EQ_INT(run("SELECT $s AS s", "{\"s\":5}", &c, NULL), DAPI_OK);
    T_CHECK(strcmp(c.type0, "BIGINT") == 0, "untyped integer: %s", c.type0);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_lake_make(&lake, "params"))
        T_DONE();
    t_mkdir_in(lake.root, "data/sales");
    t_write_in(lake.root, "data/sales/people.csv",
               "id,name,amount,price,vip,born,seen\n"
               "1,Ann,10.5,12.5,true,1990-01-02,2024-01-01 12:00:00\n"
               "2,Bob,3,7.25,false,2001-05-06,2023-01-01 00:00:00\n"
               "3,Zoë,99.5,1.0,true,1985-11-30,2022-06-01 08:00:00\n"
               "4,O'Brien,20,3.5,false,2010-03-04,2021-01-01 00:00:00\n");
    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 1, .check_timeout_ms = 60000});
    if(eng)
        T_EQ_INT(dapi_engine_connect(eng, &con), DAPI_OK);
    if(con) {
        test_every_type();
        test_hostile_strings_are_data();
        test_refusals();
        test_wide_integers();
        test_wrapped_column();
        dapi_econn_close(con);
    }
    if(eng)
        dapi_engine_close(eng);
    t_rm_rf(lake.root);
    T_DONE();
}
