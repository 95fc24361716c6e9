/* dapi_jv_*: parsing (errors, depth limit), types, Python truthiness, member lookup. */
#include <stdlib.h>

#include "base/jsonin.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char err[256];

static struct dapi_jv *parse(const char *text, int depth)
{
    struct dapi_jv *root = (struct dapi_jv *)1;
    err[0] = '\0';
    enum dapi_err r = dapi_jv_parse(text, strlen(text), depth, &root, err, sizeof err);
    if(r) {
        T_CHECK(root == NULL, "root is NULL on error");
        return NULL;
    }
    return root;
}

static void test_parse_errors(void)
{
    static const char *const bad[] = {
        "",        " ",          "{",     "[1,",         "{\"a\":}",     "{'a':1}", "[1 2]",
        "nul",     "tru",        "01",    "1.",          ".5",           "NaN",     "Infinity",
        "[1,]",    "{\"a\":1,}", "\"abc", "\"\\x\"",     "{} {}",        "[] x",    "\"\x01\"",
        "{\"a\"}", "+1",         "\xff",  "\"\\ud800\"", "\"\xc3\x28\"",
    };
    for(size_t i = 0; i < N(bad); i++) {
        struct dapi_jv *root = NULL;
        err[0] = '\0';
        enum dapi_err r = dapi_jv_parse(bad[i], strlen(bad[i]), 32, &root, err, sizeof err);
        T_CHECK(r == DAPI_ERR_INVALID, "[%s] (case %zu) rejected: got %d", bad[i], i, (int)r);
        T_CHECK(root == NULL, "case %zu: no root", i);
        T_CHECK(err[0] != '\0' && !strchr(err, '\n'), "case %zu: one-line reason: [%s]", i, err);
        dapi_jv_free(root);
    }
    /* The reason says where. */
    T_CHECK(parse("{\n\"a\": ?}", 32) == NULL, "rejected");
    T_CHECK(strstr(err, "line 2") != NULL, "reason has the line: [%s]", err);
    /* err may be NULL. */
    struct dapi_jv *root = NULL;
    T_EQ_INT(dapi_jv_parse("{", 1, 32, &root, NULL, 0), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_jv_parse("[[1]]", 5, 1, &root, NULL, 0), DAPI_ERR_INVALID);
    /* len is honoured: text need not be NUL-terminated, bytes past len are not read. */
    T_EQ_INT(dapi_jv_parse("[1]xyz", 3, 32, &root, err, sizeof err), DAPI_OK);
    T_CHECK(root && dapi_jv_type(root) == DAPI_J_ARRAY, "array");
    dapi_jv_free(root);
    T_EQ_INT(dapi_jv_parse("[1]", 2, 32, &root, err, sizeof err), DAPI_ERR_INVALID);
    dapi_jv_free(NULL); /* harmless */
}

/* String values holding U+0000 are accepted (as Python's json accepts them) and their length
 * counts the NUL, so callers can refuse them with a precise message; object keys with U+0000
 * are refused by jansson. */
static void test_nul(void)
{
    struct dapi_jv *v = parse("\"a\\u0000b\"", 32);
    size_t vlen = 0;
    const char *vs = v ? dapi_jv_str(v, &vlen) : NULL;
    T_CHECK(vs != NULL, "a string with \\u0000 is accepted");
    T_EQ_INT(vlen, 3);
    T_CHECK(vs && strlen(vs) == 1, "the NUL is inside the string (strlen stops at it)");
    dapi_jv_free(v);
    v = parse("{\"sql_query\":\"SELECT 1\\u0000\"}", 32);
    vs = v ? dapi_jv_str(dapi_jv_get(v, "sql_query"), &vlen) : NULL;
    T_CHECK(vs && vlen == 9 && strlen(vs) == 8, "member string keeps its NUL");
    dapi_jv_free(v);
    v = parse("{\"a\\u0000\":1}", 32);
    T_CHECK(v == NULL, "a key with \\u0000 is refused");
    T_CHECK(err[0] != '\0', "with a reason");
    dapi_jv_free(v);
    /* A raw NUL byte inside the text (len counts it) is refused too. */
    struct dapi_jv *root = NULL;
    T_EQ_INT(dapi_jv_parse("\"a\0b\"", 5, 32, &root, err, sizeof err), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_jv_parse("{}\0", 3, 32, &root, err, sizeof err), DAPI_ERR_INVALID);
    /* \u0001 is fine and kept. */
    root = parse("\"a\\u0001b\"", 32);
    size_t len = 0;
    const char *s = dapi_jv_str(root, &len);
    T_EQ_INT(len, 3);
    T_CHECK(s && s[1] == 1, "U+0001 kept");
    dapi_jv_free(root);
}

static void nest(char *out, int depth, const char *open, const char *inner, const char *close)
{
    out[0] = '\0';
    for(int i = 0; i < depth; i++)
        strcat(out, open);
    strcat(out, inner);
    for(int i = 0; i < depth; i++)
        strcat(out, close);
}

static void test_depth(void)
{
    static char text[8192];
    static const struct {
        const char *open, *inner, *close;
    } shapes[] = {{"[", "1", "]"}, {"{\"a\":", "1", "}"}, {"[{\"k\":", "0", "}]"}};
    for(size_t s = 0; s < N(shapes); s++) {
        int per = s == 2 ? 2 : 1; /* levels per repetition */
        for(int max = 1; max <= 40; max += 13) {
            if(max % per)
                continue;
            nest(text, max / per, shapes[s].open, shapes[s].inner, shapes[s].close);
            struct dapi_jv *root = parse(text, max);
            T_CHECK(root != NULL, "shape %zu depth %d at limit %d accepted: %s", s, max, max, err);
            dapi_jv_free(root);
            nest(text, max / per + 1, shapes[s].open, shapes[s].inner, shapes[s].close);
            root = parse(text, max);
            T_CHECK(root == NULL, "shape %zu depth %d over limit %d refused", s, max + per, max);
            T_CHECK(strstr(err, "deeper") != NULL, "reason says too deep: [%s]", err);
            dapi_jv_free(root);
        }
    }
    /* Siblings do not add depth; brackets inside strings (even after escaped quotes) do not
     * count. */
    struct dapi_jv *root = parse("[[1],[2],[3],{\"a\":4},[[]]]", 3);
    T_CHECK(root != NULL, "siblings at depth 3: %s", err);
    dapi_jv_free(root);
    root = parse("[[1],[2],[3],[4],[5]]", 2);
    T_CHECK(root != NULL, "five siblings at depth 2 under limit 2: %s", err);
    dapi_jv_free(root);
    root = parse("{\"a\":\"[[[[[{{{{\\\"[[[[\"}", 1);
    T_CHECK(root != NULL, "brackets in strings are not nesting: %s", err);
    dapi_jv_free(root);
    root = parse("[\"\\\\\",[[1]]]", 2);
    T_CHECK(root == NULL, "an escaped backslash ends the escape; nesting after it counts");
    root = parse("[\"\\\\\",[1]]", 2);
    T_CHECK(root != NULL, "same text one level shallower passes: %s", err);
    dapi_jv_free(root);
    /* Scalars have depth 0. */
    root = parse("42", 1);
    T_CHECK(root != NULL, "scalar");
    dapi_jv_free(root);
    /* A deep text is refused before parsing even when it is malformed. */
    nest(text, 50, "[", "", "");
    root = parse(text, 10);
    T_CHECK(root == NULL && strstr(err, "deeper"), "unclosed deep text: depth error [%s]", err);
}

static void test_types_and_truthy(void)
{
    static const struct {
        const char *text;
        enum dapi_jtype type;
        int truthy;
    } cases[] = {
        {"{}", DAPI_J_OBJECT, 0},        {"{\"a\":0}", DAPI_J_OBJECT, 1},
        {"[]", DAPI_J_ARRAY, 0},         {"[0]", DAPI_J_ARRAY, 1},
        {"[null]", DAPI_J_ARRAY, 1},     {"\"\"", DAPI_J_STRING, 0},
        {"\"0\"", DAPI_J_STRING, 1},     {"\" \"", DAPI_J_STRING, 1},
        {"\"false\"", DAPI_J_STRING, 1}, {"0", DAPI_J_INT, 0},
        {"-0", DAPI_J_INT, 0},           {"1", DAPI_J_INT, 1},
        {"-1", DAPI_J_INT, 1},           {"0.0", DAPI_J_REAL, 0},
        {"-0.0", DAPI_J_REAL, 0},        {"0e10", DAPI_J_REAL, 0},
        {"1e-300", DAPI_J_REAL, 1},      {"0.5", DAPI_J_REAL, 1},
        {"true", DAPI_J_TRUE, 1},        {"false", DAPI_J_FALSE, 0},
        {"null", DAPI_J_NULL, 0},        {"9223372036854775807", DAPI_J_INT, 1},
    };
    for(size_t i = 0; i < N(cases); i++) {
        struct dapi_jv *root = parse(cases[i].text, 32);
        T_CHECK(root != NULL, "[%s] parses: %s", cases[i].text, err);
        if(!root)
            continue;
        T_CHECK(dapi_jv_type(root) == cases[i].type, "[%s] type %d, want %d", cases[i].text,
                (int)dapi_jv_type(root), (int)cases[i].type);
        T_CHECK(dapi_jv_truthy(root) == cases[i].truthy, "[%s] truthy %d, want %d", cases[i].text,
                dapi_jv_truthy(root), cases[i].truthy);
        dapi_jv_free(root);
    }
}

static void test_get_and_values(void)
{
    struct dapi_jv *root = parse("{\"n\":null,\"s\":\"h\\u00e9llo\",\"i\":-42,\"r\":2.5,"
                                 "\"big\":9223372036854775807,\"o\":{\"x\":[1]},\"t\":true,"
                                 "\"dup\":1,\"dup\":2}",
                                 32);
    T_CHECK(root != NULL, "parses: %s", err);
    if(!root)
        return;
    struct dapi_jv *n = dapi_jv_get(root, "n");
    T_CHECK(n != NULL, "null member is present");
    T_CHECK(n && dapi_jv_type(n) == DAPI_J_NULL, "and typed null");
    T_CHECK(n && !dapi_jv_truthy(n), "and falsy");
    T_CHECK(dapi_jv_get(root, "absent") == NULL, "absent member is NULL");
    T_CHECK(dapi_jv_get(root, "") == NULL, "empty name absent");
    T_CHECK(dapi_jv_get(root, "N") == NULL, "names are case-sensitive");

    size_t len = 0;
    const char *s = dapi_jv_str(dapi_jv_get(root, "s"), &len);
    T_EQ_STR(s, "h\xc3\xa9llo");
    T_EQ_INT(len, 6);
    T_CHECK(dapi_jv_str(dapi_jv_get(root, "s"), NULL) != NULL, "len may be NULL");
    T_CHECK(dapi_jv_str(dapi_jv_get(root, "i"), &len) == NULL, "int is not a string");
    T_CHECK(dapi_jv_str(n, &len) == NULL, "null is not a string");
    T_CHECK(dapi_jv_str(NULL, &len) == NULL, "absent is not a string");
    T_EQ_INT(dapi_jv_int(dapi_jv_get(root, "i")), -42);
    T_EQ_INT(dapi_jv_int(dapi_jv_get(root, "big")), INT64_MAX);
    T_CHECK(dapi_jv_real(dapi_jv_get(root, "r")) == 2.5, "real");
    T_EQ_INT(dapi_jv_type(dapi_jv_get(root, "t")), DAPI_J_TRUE);
    T_EQ_INT(dapi_jv_int(dapi_jv_get(root, "dup")), 2); /* last wins, like Python */

    struct dapi_jv *o = dapi_jv_get(root, "o");
    T_CHECK(o && dapi_jv_type(o) == DAPI_J_OBJECT, "nested object");
    struct dapi_jv *x = dapi_jv_get(o, "x");
    T_CHECK(x && dapi_jv_type(x) == DAPI_J_ARRAY && dapi_jv_truthy(x), "nested array");
    /* get on a non-object (or NULL) is NULL, not a crash. */
    T_CHECK(dapi_jv_get(x, "0") == NULL, "get on an array");
    T_CHECK(dapi_jv_get(dapi_jv_get(root, "i"), "a") == NULL, "get on an int");
    T_CHECK(dapi_jv_get(NULL, "a") == NULL, "get on NULL");
    dapi_jv_free(root);

    /* Any value may be the root. */
    root = parse("  \"top\"  ", 32);
    T_EQ_STR(dapi_jv_str(root, NULL), "top");
    T_CHECK(dapi_jv_get(root, "top") == NULL, "string root has no members");
    dapi_jv_free(root);
}

/* dapi_jv_parse_numtext: each number as its exact text, at the place the ordinary parse has
 * the number; strings (escaped quotes and backslashes, digits, "-1") are left alone. */
static void test_numtext(void)
{
    static const char text[] =
        " {\"a\": 1234567890123456789.0123456789, \"b\":[0.10,-2,1E+3, 7e-1],"
        "\"s\":\"x\\\" 12.5 \\\\\",\"t\":\"-1\",\"n\":null,\"k\":true,"
        "\"o\":{\"z\":-0.0},\"d\":1,\"d\":2.50}";
    struct dapi_jv *plain = parse(text, 32), *twin = NULL;
    T_CHECK(plain != NULL, "the text parses: %s", err);
    T_EQ_INT(dapi_jv_parse_numtext(text, strlen(text), 32, &twin, err, sizeof err), DAPI_OK);
    if(!plain || !twin) {
        dapi_jv_free(plain);
        dapi_jv_free(twin);
        return;
    }
    T_EQ_STR(dapi_jv_str(dapi_jv_get(twin, "a"), NULL), "1234567890123456789.0123456789");
    struct dapi_jv *b = dapi_jv_get(twin, "b");
    T_EQ_INT(dapi_jv_array_size(b), 4);
    T_EQ_STR(dapi_jv_str(dapi_jv_index(b, 0), NULL), "0.10");
    T_EQ_STR(dapi_jv_str(dapi_jv_index(b, 1), NULL), "-2");
    T_EQ_STR(dapi_jv_str(dapi_jv_index(b, 2), NULL), "1E+3");
    T_EQ_STR(dapi_jv_str(dapi_jv_index(b, 3), NULL), "7e-1");
    /* strings are the same in both, escapes and all */
    T_EQ_STR(dapi_jv_str(dapi_jv_get(twin, "s"), NULL), "x\" 12.5 \\");
    T_EQ_STR(dapi_jv_str(dapi_jv_get(plain, "s"), NULL), "x\" 12.5 \\");
    T_EQ_STR(dapi_jv_str(dapi_jv_get(twin, "t"), NULL), "-1");
    T_EQ_INT(dapi_jv_type(dapi_jv_get(twin, "n")), DAPI_J_NULL);
    T_EQ_INT(dapi_jv_type(dapi_jv_get(twin, "k")), DAPI_J_TRUE);
    T_EQ_STR(dapi_jv_str(dapi_jv_get(dapi_jv_get(twin, "o"), "z"), NULL), "-0.0");
    size_t nlen = 0;
    T_EQ_STR(dapi_jv_numtext(dapi_jv_index(b, 2), &nlen), "1E+3");
    T_EQ_INT(nlen, 4);
    T_CHECK(dapi_jv_numtext(dapi_jv_get(twin, "s"), NULL) == NULL, "a string is no number text");
    T_CHECK(dapi_jv_numtext(dapi_jv_get(twin, "n"), NULL) == NULL, "null is no number text");
    T_CHECK(dapi_jv_numtext(NULL, NULL) == NULL, "absent is no number text");
    /* a repeated name: the last value in both */
    T_EQ_STR(dapi_jv_str(dapi_jv_get(twin, "d"), NULL), "2.50");
    T_CHECK(dapi_jv_real(dapi_jv_get(plain, "d")) == 2.5, "the plain parse's last d");
    dapi_jv_free(plain);
    dapi_jv_free(twin);

    /* the worst growth: one-digit numbers, each followed by a comma */
    T_EQ_INT(dapi_jv_parse_numtext("[1,2,3]", 7, 4, &twin, NULL, 0), DAPI_OK);
    T_EQ_STR(dapi_jv_str(dapi_jv_index(twin, 2), NULL), "3");
    dapi_jv_free(twin);
    T_EQ_INT(dapi_jv_parse_numtext("7", 1, 4, &twin, NULL, 0), DAPI_OK);
    T_EQ_STR(dapi_jv_str(twin, NULL), "7");
    dapi_jv_free(twin);
    /* depth is still checked */
    T_CHECK(dapi_jv_parse_numtext("[[[1]]]", 7, 2, &twin, NULL, 0) != DAPI_OK, "too deep");
    T_CHECK(twin == NULL, "no root when refused");
}

/* dapi_jv_parse_wide: integers beyond int64 (refused by jansson) read as reals, their digits
 * in the numtext twin; everything else as dapi_jv_parse reads it. */
static void test_wide(void)
{
    static const char text[] = "{\"max\":9223372036854775807,\"over\":9223372036854775808,"
                               "\"min\":-9223372036854775808,\"under\":-9223372036854775809,"
                               "\"big\":[123456789012345678901234567890],\"r\":1.5e3,"
                               "\"s\":\"99999999999999999999 \\\" 99999999999999999999\"}";
    struct dapi_jv *plain = NULL, *wide = NULL, *twin = NULL;
    T_CHECK(dapi_jv_parse(text, strlen(text), 8, &plain, err, sizeof err) != DAPI_OK,
            "jansson alone refuses it");
    T_CHECK(strstr(err, "too big") != NULL, "because of a big integer: %s", err);
    T_EQ_INT(dapi_jv_parse_wide(text, strlen(text), 8, &wide, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_jv_parse_numtext(text, strlen(text), 8, &twin, NULL, 0), DAPI_OK);
    if(!wide || !twin)
        goto out;
    T_EQ_INT(dapi_jv_type(dapi_jv_get(wide, "max")), DAPI_J_INT);
    T_CHECK(dapi_jv_int(dapi_jv_get(wide, "max")) == INT64_MAX, "int64 max stays an integer");
    T_EQ_INT(dapi_jv_type(dapi_jv_get(wide, "min")), DAPI_J_INT);
    T_CHECK(dapi_jv_int(dapi_jv_get(wide, "min")) == INT64_MIN, "int64 min stays an integer");
    T_EQ_INT(dapi_jv_type(dapi_jv_get(wide, "over")), DAPI_J_REAL);
    T_EQ_INT(dapi_jv_type(dapi_jv_get(wide, "under")), DAPI_J_REAL);
    T_CHECK(dapi_jv_real(dapi_jv_get(wide, "under")) < -9.2e18, "its value, near enough");
    T_EQ_INT(dapi_jv_type(dapi_jv_index(dapi_jv_get(wide, "big"), 0)), DAPI_J_REAL);
    T_CHECK(dapi_jv_real(dapi_jv_get(wide, "r")) == 1500.0, "a real as before");
    /* strings untouched (an escaped quote does not end one) */
    T_EQ_STR(dapi_jv_str(dapi_jv_get(wide, "s"), NULL),
             "99999999999999999999 \" 99999999999999999999");
    /* the digits, from the twin */
    T_EQ_STR(dapi_jv_numtext(dapi_jv_get(twin, "over"), NULL), "9223372036854775808");
    T_EQ_STR(dapi_jv_numtext(dapi_jv_index(dapi_jv_get(twin, "big"), 0), NULL),
             "123456789012345678901234567890");
    /* text without such integers parses as it is; errors are the parse's own */
    dapi_jv_free(wide);
    wide = NULL;
    T_EQ_INT(dapi_jv_parse_wide("[1,-2]", 6, 4, &wide, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_jv_type(dapi_jv_index(wide, 1)), DAPI_J_INT);
    dapi_jv_free(wide);
    wide = NULL;
    T_CHECK(dapi_jv_parse_wide("[99999999999999999999", 21, 4, &wide, NULL, 0) != DAPI_OK,
            "unfinished: refused");
    T_CHECK(dapi_jv_parse_wide("[[[99999999999999999999]]]", 26, 2, &wide, NULL, 0) != DAPI_OK,
            "too deep: refused");
    T_CHECK(dapi_jv_parse_wide("[099999999999999999999]", 23, 4, &wide, NULL, 0) != DAPI_OK,
            "a leading zero is still not JSON");
    static const char nul[] = "[99999999999999999999,\0]";
    T_CHECK(dapi_jv_parse_wide(nul, sizeof nul - 1, 4, &wide, err, sizeof err) != DAPI_OK,
            "a NUL byte: refused");
    T_CHECK(strstr(err, "offset 22") != NULL, "at its own offset: %s", err);
    /* a number at the very end of a buffer that has no NUL after it (ASan sees a read past
     * it: the fuzzer found one in the first version) */
    char *exact = malloc(3);
    if(exact) {
        memcpy(exact, "442", 3);
        T_EQ_INT(dapi_jv_parse_wide(exact, 3, 4, &wide, NULL, 0), DAPI_OK);
        T_CHECK(dapi_jv_int(wide) == 442, "a bare integer");
        dapi_jv_free(wide);
        wide = NULL;
        free(exact);
    }
out:
    dapi_jv_free(wide);
    dapi_jv_free(twin);
}

int main(void)
{
    test_wide();
    test_parse_errors();
    test_nul();
    test_depth();
    test_types_and_truthy();
    test_get_and_values();
    test_numtext();
    T_DONE();
}
