/* The endpoints file (src/endpoints/endpoints.c) with a real engine: a file loads, its
 * SQL checked and its layers found; each kind of mistake refuses it naming the line; a
 * call's arguments become typed JSON or a refusal naming the parameter and the rule. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "base/log.h"
#include "endpoints/endpoints.h"
#include "engine/engine.h"

static struct t_lake lake;
static struct dapi_engine *eng;
static struct dapi_econn *con;

static struct dapi_endpoints *load(const char *text, enum dapi_err want, const char *needle)
{
    char path[300], err[2048] = "";
    snprintf(path, sizeof path, "%s/e.yaml", lake.root);
    t_write(path, text);
    struct dapi_endpoints *e = NULL;
    enum dapi_err r = dapi_endpoints_load(path, con, eng, &e, err, sizeof err);
    T_CHECK(r == want, "[%s]: got %d (%s)", text, (int)r, err);
    if(needle)
        T_CHECK(strstr(err, needle) != NULL, "[%s]: [%s] lacks [%s]", text, err, needle);
    return e;
}

static const char GOOD[] =
    "endpoints:\n"
    "  by_id:\n"
    "    sql: SELECT name FROM \"sales\".\"people\" WHERE id = $id AND name <> $not\n"
    "    params:\n"
    "      id: {type: integer, required: true, min: 1, max: 10}\n"
    "      not: {type: varchar, default: zed, max_length: 3, pattern: '^[a-z]+$'}\n"
    "  any:\n"
    "    sql: SELECT $d::DATE AS d, $l AS l, $b AS b, $x AS x\n"
    "    params:\n"
    "      d: {type: date}\n"
    "      l: {type: 'bigint[]', default: [1, 2]}\n"
    "      b: {type: boolean, default: false}\n"
    "      x: {type: double, enum: ['1.5', '2']}\n"
    "    cache: 5m\n";

static char *bind(const struct dapi_endpoint *ep, const char *const *kv, size_t n, char **why)
{
    const char *names[16], *values[16];
    for(size_t i = 0; i < n; i++) {
        names[i] = kv[2 * i];
        values[i] = kv[2 * i + 1];
    }
    int nomem = 0;
    static const char *const skip[] = {"format", NULL};
    return dapi_endpoint_bind(ep, names, values, n, skip, why, &nomem);
}

static void bound(const struct dapi_endpoint *ep, const char *const *kv, size_t n,
                  const char *want)
{
    char *why = NULL, *json = bind(ep, kv, n, &why);
    T_CHECK(json && strcmp(json, want) == 0, "got [%s] (%s), want [%s]", json ? json : "",
            why ? why : "", want);
    free(json);
    free(why);
}

static void refused(const struct dapi_endpoint *ep, const char *const *kv, size_t n,
                    const char *needle)
{
    char *why = NULL, *json = bind(ep, kv, n, &why);
    T_CHECK(!json && why && strstr(why, needle), "want a refusal [%s], got [%s] [%s]", needle,
            json ? json : "", why ? why : "");
    free(json);
    free(why);
}

static void test_good(void)
{
    struct dapi_endpoints *e = load(GOOD, DAPI_OK, NULL);
    if(!e)
        return;
    T_EQ_INT(dapi_endpoints_count(e), 2);
    const struct dapi_endpoint *ep = dapi_endpoints_find(e, "by_id");
    const struct dapi_endpoint *any = dapi_endpoints_find(e, "any");
    T_CHECK(ep && any, "both found");
    if(!ep || !any)
        goto out;
    T_EQ_STR(dapi_endpoints_at(e, 0)->name, "any"); /* sorted */
    T_EQ_INT(ep->nlayers, 1);
    T_EQ_STR(ep->layers[0], "sales");
    T_EQ_INT(any->nlayers, 0);
    T_EQ_INT(any->cache_s, 300);
    T_EQ_INT(ep->cache_s, -1);
    struct dapi_scope hr = {.n = 1};
    strcpy(hr.layers[0], "hr");
    T_CHECK(!dapi_endpoint_allowed(ep, &hr) && dapi_endpoint_allowed(any, &hr), "scopes");
    bound(ep, (const char *const[]){"id", "3"}, 1, "{\"id\":3,\"not\":\"zed\"}");
    bound(ep, (const char *const[]){"not", "ab", "id", "10", "format", "csv"}, 3,
          "{\"id\":10,\"not\":\"ab\"}");
    refused(ep, NULL, 0, "missing parameter 'id' (required)");
    refused(ep, (const char *const[]){"id", "0"}, 1, "parameter 'id' must be at least 1 (min)");
    refused(ep, (const char *const[]){"id", "11"}, 1, "(max)");
    refused(ep, (const char *const[]){"id", "1x"}, 1, "parameter 'id' must be an integer");
    refused(ep, (const char *const[]){"id", "1", "id", "2"}, 2, "more than once");
    refused(ep, (const char *const[]){"id", "1", "not", "abcd"}, 2, "(max_length)");
    refused(ep, (const char *const[]){"id", "1", "not", "AB"}, 2, "(pattern)");
    refused(ep, (const char *const[]){"id", "1", "x", "1"}, 2, "unknown parameter 'x'");
    bound(any, NULL, 0, "{\"d\":null,\"l\":[1,2],\"b\":false,\"x\":null}");
    bound(any,
          (const char *const[]){"l", "7", "d", "2024-02-29", "l", "-8", "b", "true", "x", "2"}, 5,
          "{\"d\":\"2024-02-29\",\"l\":[7,-8],\"b\":true,\"x\":2.0}");
    refused(any, (const char *const[]){"d", "2023-02-29"}, 1, "parameter 'd' must be a date");
    /* nothing after the date (the attack review's "2024-01-01' OR '1'='1" passed) */
    refused(any, (const char *const[]){"d", "2024-01-01' OR '1'='1"}, 1, "must be a date");
    refused(any, (const char *const[]){"d", "2024-01-01 "}, 1, "must be a date");
    refused(any, (const char *const[]){"d", "2024-01-01T00:00"}, 1, "must be a date");
    refused(any, (const char *const[]){"b", "1"}, 1, "true or false");
    refused(any, (const char *const[]){"x", "3"}, 1, "must be one of 1.5, 2 (enum)");
    refused(any, (const char *const[]){"l", "1.5"}, 1, "parameter 'l' must be an integer");
    char *json = dapi_endpoints_json(e, &hr, NULL);
    T_CHECK(json && strstr(json, "\"name\":\"any\"") && !strstr(json, "by_id"),
            "the list is filtered: %s", json ? json : "");
    free(json);
out:
    dapi_endpoints_unref(e);
}

/* double and decimal take numbers written in decimal only: strtod would also read
 * hexadecimal (0x10 as 16), inf, nan and surrounding spaces. */
static void test_numbers(void)
{
    struct dapi_endpoints *e = load("endpoints:\n"
                                    "  num:\n"
                                    "    sql: SELECT $v AS v, $m AS m\n"
                                    "    params:\n"
                                    "      v: {type: double, min: -100, max: 1e3}\n"
                                    "      m: {type: decimal, default: 0}\n",
                                    DAPI_OK, NULL);
    const struct dapi_endpoint *ep = e ? dapi_endpoints_find(e, "num") : NULL;
    T_CHECK(ep != NULL, "loaded");
    if(!ep)
        goto out;
    static const char *const good[][2] = {
        {"5", "5.0"},     {"+5", "5.0"},      {"-5", "-5.0"},   {".5", "0.5"},
        {"5.", "5.0"},    {"007", "7.0"},     {"1E2", "1e+02"}, {"-2.5e+1", "-25.0"},
        {"1e-2", "0.01"}, {"999.5", "999.5"},
    };
    for(size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char want[64];
        snprintf(want, sizeof want, "{\"v\":%s,\"m\":0.0}", good[i][1]);
        bound(ep, (const char *const[]){"v", good[i][0]}, 1, want);
    }
    static const char *const bad[] = {
        "0x10",  "0X1p3", "-0x8", "inf", "-inf", "Infinity", "nan",   "NAN", " 5",
        "5 ",    "\t5",   "",     ".",   "+",    "-",        "1e",    "e5",  "1e+",
        "1_000", "1,5",   "5e",   "--5", "+-5",  "5..",      "1e400",
    };
    for(size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        refused(ep, (const char *const[]){"v", bad[i]}, 1, "parameter 'v' must be a number");
        refused(ep, (const char *const[]){"m", bad[i]}, 1, "parameter 'm' must be a number");
    }
    refused(ep, (const char *const[]){"v", "1001"}, 1, "(max)");
out:
    dapi_endpoints_unref(e);
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: double, min: "
         "0x10}\n",
         DAPI_ERR_INVALID, "min must be a number");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: double, max: "
         "nan}\n",
         DAPI_ERR_INVALID, "max must be a number");
}

static void test_refused_files(void)
{
    load("endpoints:\n  a:\n    sql: SELECT * FROM \"sales\".\"nope\"\n", DAPI_ERR_INVALID,
         "e.yaml:2: endpoint 'a': Catalog Error");
    load("endpoints:\n  a:\n    sql: SELECT $y\n", DAPI_ERR_INVALID,
         ":2: endpoint 'a': its SQL uses $y, which is not declared");
    load("endpoints:\n  a:\n    sql: SELECT 1\n    params:\n      y: {type: integer}\n",
         DAPI_ERR_INVALID, "parameter 'y' is declared but its SQL has no $y");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: int}\n",
         DAPI_ERR_INVALID, ":5: endpoint 'a': parameter 'y': unknown type 'int'");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: varchar, min: 1}\n",
         DAPI_ERR_INVALID, "min and max apply to numeric types only");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: varchar, pattern: "
         "'(('}\n",
         DAPI_ERR_INVALID, "not a valid regular expression");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: integer, default: "
         "5, max: 4}\n",
         DAPI_ERR_INVALID, "the default '5' must be at most 4 (max)");
    load("endpoints:\n  a:\n    sql: SELECT $y\n    params:\n      y: {type: integer, default: "
         "1, required: true}\n",
         DAPI_ERR_INVALID, "required and has a default");
    load("endpoints:\n  9a:\n    sql: SELECT 1\n", DAPI_ERR_INVALID, "endpoint name '9a'");
    load("endpoints:\n  a:\n    sql: SELECT 1\n    cache: soon\n", DAPI_ERR_INVALID,
         "cache must be a duration");
    load("endpoints:\n  a:\n    sql: DELETE FROM \"sales\".\"people\"\n", DAPI_ERR_INVALID,
         "endpoint 'a'");
    load("other: 1\n", DAPI_ERR_INVALID, "one key, endpoints");
    load("endpoints:\n  a:\n    sql: SELECT $format\n    params:\n      format: {type: "
         "varchar}\n",
         DAPI_ERR_INVALID, "'format' is not a parameter name");
    struct dapi_endpoints *e = load("endpoints:\n", DAPI_OK, NULL);
    T_EQ_INT(dapi_endpoints_count(e), 0);
    dapi_endpoints_unref(e);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_lake_make(&lake, "endpoints"))
        T_DONE();
    t_mkdir_in(lake.root, "data/sales");
    t_mkdir_in(lake.root, "data/hr");
    t_write_in(lake.root, "data/sales/people.csv", "id,name\n1,ann\n2,bob\n");
    t_write_in(lake.root, "data/hr/staff.csv", "id\n1\n");
    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 1, .check_timeout_ms = 60000});
    if(eng)
        T_EQ_INT(dapi_engine_connect(eng, &con), DAPI_OK);
    if(con) {
        test_good();
        test_numbers();
        test_refused_files();
        dapi_econn_close(con);
    }
    if(eng)
        dapi_engine_close(eng);
    t_rm_rf(lake.root);
    T_DONE();
}
