/* The YAML reader (src/base/yamlin.c): maps, sequences, scalars with their lines; what it
 * refuses (aliases, repeated keys, a second document, bad YAML) naming the line. */
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "base/yamlin.h"

static struct dapi_yv *parse(const char *text, enum dapi_err want, const char *needle)
{
    struct dapi_yv *v = NULL;
    char err[512] = "";
    enum dapi_err r = dapi_yaml_parse(text, strlen(text), &v, err, sizeof err);
    T_CHECK(r == want, "[%s]: got %d (%s), want %d", text, (int)r, err, (int)want);
    if(needle)
        T_CHECK(strstr(err, needle) != NULL, "[%s]: message [%s] lacks [%s]", text, err, needle);
    return v;
}

static void test_tree(void)
{
    struct dapi_yv *v = parse("a:\n  b: 1\n  c: [x, 'y', ~]\n  d: |\n    two\n    lines\n"
                              "e: null\nf: ''\n",
                              DAPI_OK, NULL);
    if(!v)
        return;
    T_EQ_INT(v->kind, DAPI_Y_MAP);
    T_EQ_INT(v->n, 3);
    T_EQ_STR(v->keys[0], "a");
    T_EQ_INT(v->key_lines[0], 1);
    const struct dapi_yv *a = dapi_yv_get(v, "a");
    T_EQ_INT(a->kind, DAPI_Y_MAP);
    T_EQ_INT(a->key_lines[1], 3);
    T_EQ_STR(dapi_yv_get(a, "b")->text, "1");
    const struct dapi_yv *c = dapi_yv_get(a, "c");
    T_EQ_INT(c->kind, DAPI_Y_SEQ);
    T_EQ_INT(c->n, 3);
    T_EQ_STR(c->items[1]->text, "y");
    T_CHECK(!c->items[1]->plain, "quoted");
    T_CHECK(dapi_yv_is_null(c->items[2]), "~ is null");
    T_CHECK(!dapi_yv_is_null(c->items[0]), "x is not");
    T_EQ_STR(dapi_yv_get(a, "d")->text, "two\nlines\n");
    T_EQ_INT(dapi_yv_get(a, "d")->line, 4);
    T_CHECK(dapi_yv_is_null(dapi_yv_get(v, "e")), "null");
    T_CHECK(!dapi_yv_is_null(dapi_yv_get(v, "f")), "'' is a string");
    T_CHECK(dapi_yv_get(v, "nope") == NULL, "absent");
    T_CHECK(dapi_yv_get(c, "x") == NULL, "not a map");
    dapi_yv_free(v);
    v = parse("", DAPI_OK, NULL);
    T_CHECK(v && v->kind == DAPI_Y_MAP && v->n == 0, "an empty file is an empty map");
    dapi_yv_free(v);
}

static void test_refused(void)
{
    parse("a: 1\na: 2\n", DAPI_ERR_INVALID, "line 2: 'a' is given twice");
    parse("a: &x 1\nb: *x\n", DAPI_ERR_INVALID, "line 2: aliases");
    parse("a: 1\n---\nb: 2\n", DAPI_ERR_INVALID, "one YAML document");
    parse("a: [1\n", DAPI_ERR_INVALID, "not valid YAML");
    parse("? [a]\n: 1\n", DAPI_ERR_INVALID, "map key");
    parse("a: \"x\\0y\"\n", DAPI_ERR_INVALID, "NUL");
    struct dapi_yv *v = NULL;
    char err[256];
    T_EQ_INT(dapi_yaml_load("/nonexistent/dapi.yaml", &v, err, sizeof err), DAPI_ERR_IO);
}

int main(void)
{
    test_tree();
    test_refused();
    T_DONE();
}
