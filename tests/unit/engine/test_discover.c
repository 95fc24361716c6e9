/* Schema discovery in the engine: the JSON type of DuckDB type names, the row estimates of
 * text files (pure), and the listing and description of a scratch lake held to a scope. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "t.h"

static void test_json_types(void)
{
    static const char *const cases[][2] = {
        {"BIGINT", "integer"},
        {"UHUGEINT", "integer"},
        {"TINYINT", "integer"},
        {"DOUBLE", "number"},
        {"FLOAT", "number"},
        {"DECIMAL(18,3)", "number"},
        {"BOOLEAN", "boolean"},
        {"VARCHAR", "string"},
        {"DATE", "string"},
        {"TIMESTAMP WITH TIME ZONE", "string"},
        {"INTERVAL", "string"},
        {"UUID", "string"},
        {"BLOB", "string"},
        {"ENUM('a]', 'b')", "string"},
        {"VARCHAR[]", "array"},
        {"INTEGER[3]", "array"},
        {"STRUCT(a INTEGER)[]", "array"},
        {"STRUCT(\"x]\" INTEGER, b VARCHAR[])", "object"},
        {"MAP(VARCHAR, INTEGER)", "object"},
        {"MAP(INTEGER, VARCHAR)", "array"},
        {"UNION(a INTEGER, b VARCHAR)", "any"},
        {"\"NULL\"", "null"},
        {"TIME WITH TIME ZONE", "string"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(dapi_engine_json_type(cases[i][0]), cases[i][1]);
}

static int64_t est(const char *kind, const char *s, uint64_t total)
{
    return dapi_engine_estimate_rows(kind, s, strlen(s), total ? total : strlen(s));
}

static void test_estimates(void)
{
    /* whole files: exact counts of the text */
    T_EQ_INT(est("csv", "a,b\n1,2\n3,4\n", 0), 2);
    T_EQ_INT(est("csv", "a,b\n1,2\n3,4", 0), 2); /* no final newline */
    T_EQ_INT(est("csv", "a,b\n", 0), 0);
    T_EQ_INT(est("csv", "", 0), 0);
    T_EQ_INT(est("csv", "a,b\n1,\"x\ny\"\n2,\"\"\"\"\n", 0), 2); /* quoted newline, "" */
    T_EQ_INT(est("tsv", "k\tv\n1\ta\n", 0), 1);
    T_EQ_INT(est("json", "[{\"a\":1},{\"a\":[1,2]},{\"a\":\"},{\"}]", 0), 3);
    T_EQ_INT(est("json", "  [ 1, 2, 3 ]\n", 0), 3);
    T_EQ_INT(est("json", "[]", 0), 0);
    T_EQ_INT(est("json", "{\"a\":1}\n{\"a\":{\"b\":2}}\n{\"s\":\"\\\"}\"}\n", 0), 3);
    T_EQ_INT(est("ndjson", "{\"a\":1}\n{\"a\":2}", 0), 2);
    /* a sample of a larger file: scaled by bytes */
    T_EQ_INT(est("csv", "h\n12\n34\n5", 1000), 374); /* 3 lines in 8 bytes: 375, less the header */
    T_EQ_INT(est("ndjson", "{\"a\":1}\n{\"a\":1}\n{\"a", 1600), 200);
    T_EQ_INT(est("json", "[{\"a\":1},{\"a\":1},{\"a", 1801), 225); /* 8 bytes each after [ */
    /* nothing complete to go by */
    T_EQ_INT(est("csv", "abcdef", 100), -1);
    T_EQ_INT(est("json", "[{\"a\":1", 100), -1);
}

static struct dapi_lake_table *find(struct dapi_lake_table *t, size_t n, const char *layer,
                                    const char *name)
{
    for(size_t i = 0; i < n; i++)
        if(strcmp(t[i].layer, layer) == 0 && strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

static void test_lake(void)
{
    struct t_lake l;
    if(t_lake_make(&l, "discover")) {
        T_CHECK(0, "scratch lake");
        return;
    }
    t_mkdir_in(l.data, "b");
    t_mkdir_in(l.data, "a");
    t_mkdir_in(l.data, "secret");
    t_write_in(l.data, "b/z.csv", "x\n1\n2\n");
    t_write_in(l.data, "b/y.ndjson", "{\"v\":1.5}\n");
    t_write_in(l.data, "a/t.tsv", "k\tv\n1\tq\n");
    t_write_in(l.data, "secret/s.csv", "s\nTOP\n");
    char from[400], to[400];
    snprintf(from, sizeof from, "%s/secret/s.csv", l.data);
    snprintf(to, sizeof to, "%s/a/link.csv", l.data);
    T_EQ_INT(symlink(from, to), 0);
    struct dapi_engine *e = t_engine_open(&l, (struct dapi_engine_opts){0});
    struct dapi_econn *c = NULL;
    if(!e || dapi_engine_connect(e, &c)) {
        T_CHECK(0, "engine");
        goto out;
    }
    struct dapi_lake_table *t = NULL;
    size_t n = 0;
    T_EQ_INT(dapi_engine_lake_tables(e, NULL, &t, &n), DAPI_OK);
    T_EQ_INT(n, 5);
    if(n == 5) { /* sorted by layer, then name */
        T_EQ_STR(t[0].layer, "a");
        T_EQ_STR(t[0].name, "link");
        T_EQ_STR(t[1].name, "t");
        T_EQ_STR(t[1].kind, "tsv");
        T_EQ_STR(t[2].layer, "b");
        T_EQ_STR(t[2].name, "y");
        T_EQ_STR(t[2].kind, "ndjson");
        T_EQ_STR(t[3].name, "z");
        T_EQ_INT(t[3].bytes, 6);
        T_EQ_INT(t[3].files, 1);
        T_EQ_STR(t[4].layer, "secret");
    }
    dapi_lake_tables_free(t, n);

    /* scope {a}: a.t only (a.link's file is secret's) */
    struct dapi_scope sc = {0};
    sc.n = 1;
    strcpy(sc.layers[0], "a");
    T_EQ_INT(dapi_engine_lake_tables(e, &sc, &t, &n), DAPI_OK);
    T_EQ_INT(n, 1);
    T_CHECK(n == 1 && find(t, n, "a", "t"), "a.t listed");
    dapi_lake_tables_free(t, n);
    strcpy(sc.layers[0], "nothing");
    T_EQ_INT(dapi_engine_lake_tables(e, &sc, &t, &n), DAPI_OK);
    T_EQ_INT(n, 0);
    T_CHECK(t == NULL, "an empty list");
    dapi_lake_tables_free(t, n);

    struct dapi_lake_desc d;
    char *msg = NULL;
    T_EQ_INT(dapi_engine_describe(c, "b", "z", NULL, 0, &d, &msg), DAPI_OK);
    T_EQ_INT(d.ncols, 1);
    if(d.ncols == 1) {
        T_EQ_STR(d.cols[0].name, "x");
        T_EQ_STR(d.cols[0].type, "BIGINT");
        T_EQ_STR(d.cols[0].json_type, "integer");
    }
    T_EQ_INT(d.rows, 2);
    T_EQ_INT(d.rows_exact, 0);
    dapi_lake_desc_free(&d);
    T_EQ_INT(dapi_engine_describe(c, "b", "nope", NULL, 0, &d, &msg), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(d.missing, 2);
    dapi_lake_desc_free(&d);
    T_EQ_INT(dapi_engine_describe(c, "nope", "z", NULL, 0, &d, &msg), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(d.missing, 1);
    dapi_lake_desc_free(&d);
    /* scoped: another layer is refused before it is looked up, existing or not */
    strcpy(sc.layers[0], "a");
    T_EQ_INT(dapi_engine_describe(c, "b", "z", &sc, 0, &d, &msg), DAPI_ERR_FORBIDDEN);
    T_EQ_STR(msg, "this API key may not read layer 'b'");
    free(msg);
    msg = NULL;
    dapi_lake_desc_free(&d);
    T_EQ_INT(dapi_engine_describe(c, "zz", "z", &sc, 0, &d, &msg), DAPI_ERR_FORBIDDEN);
    T_EQ_STR(msg, "this API key may not read layer 'zz'");
    free(msg);
    msg = NULL;
    dapi_lake_desc_free(&d);
    T_EQ_INT(dapi_engine_describe(c, "a", "link", &sc, 0, &d, &msg), DAPI_ERR_FORBIDDEN);
    T_EQ_STR(msg, "this API key may not read layer 'secret'");
    free(msg);
    msg = NULL;
    dapi_lake_desc_free(&d);
    T_EQ_INT(dapi_engine_describe(c, "a", "t", &sc, 0, &d, &msg), DAPI_OK);
    T_EQ_INT(d.ncols, 2);
    T_EQ_INT(d.rows, 1);
    dapi_lake_desc_free(&d);
out:
    if(c)
        dapi_econn_close(c);
    if(e)
        dapi_engine_close(e);
    t_rm_rf(l.root);
}

int main(void)
{
    test_json_types();
    test_estimates();
    test_lake();
    T_DONE();
}
