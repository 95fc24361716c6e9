/* The client's results-page scanner (src/client/page.c) and the output formats of
 * `dapi query` (cli/format.c): table-driven, byte for byte. */
#include "t.h"

#include <stdlib.h>

#include "cli/format.h"
#include "base/buf.h"
#include "client/unquote.h"
#include "dapi/client.h"

/* A page in the server's shape with the given rows text. */
static struct dapi_page *page_of(const char *rows, char *err, size_t errlen)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"query_slug\":\"dapi-query-x\",\"page\":1,\"data\":[%s]}",
             rows);
    struct dapi_page *p = NULL;
    if(dapi_page_parse(body, strlen(body), &p, err, errlen))
        return NULL;
    return p;
}

static void test_parse_ok(void)
{
    char err[256] = "";
    struct dapi_page *p = page_of(
        "{\"a\":1,\"b\":\"x\"} , {\"a\":-2.5e3,\"b\":null},{\"a\":{\"k\":[1,{}]},\"b\":true}", err,
        sizeof err);
    T_CHECK(p != NULL, "parse failed: %s", err);
    if(!p)
        return;
    T_EQ_INT(dapi_page_rows(p), 3);
    T_EQ_INT(dapi_page_number(p), 1);
    size_t n, len;
    const struct dapi_cell *c = dapi_page_row(p, 1, &n);
    T_EQ_INT(n, 2);
    T_EQ_MEM(c[0].key, c[0].key_len, "\"a\"");
    T_EQ_MEM(c[0].val, c[0].val_len, "-2.5e3");
    T_EQ_MEM(c[1].val, c[1].val_len, "null");
    c = dapi_page_row(p, 2, &n);
    T_EQ_MEM(c[0].val, c[0].val_len, "{\"k\":[1,{}]}");
    const char *row = dapi_page_row_json(p, 0, &len);
    T_EQ_MEM(row, len, "{\"a\":1,\"b\":\"x\"}");
    dapi_page_free(p);

    /* an empty page, members in another order, unknown members skipped */
    const char *body = " {\"data\":[],\"x\":[1,2,{\"y\":null}],\"page\":7,\"query_slug\":\"s\"} ";
    T_EQ_INT(dapi_page_parse(body, strlen(body), &p, err, sizeof err), DAPI_OK);
    if(p) {
        T_EQ_INT(dapi_page_rows(p), 0);
        T_EQ_INT(dapi_page_number(p), 7);
        dapi_page_free(p);
    }
}

static void test_parse_bad(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"page\":1}",            /* no data */
        "{\"data\":[1]}",          /* a row is not an object */
        "{\"data\":[{\"a\":1,}]}", /* trailing comma */
        "{\"data\":[{\"a\":01}]}", /* leading zero */
        "{\"data\":[{\"a\":1.}]}",
        "{\"data\":[{\"a\":\"x\ny\"}]}", /* raw control character */
        "{\"data\":[{\"a\":\"\\x\"}]}",  /* bad escape */
        "{\"data\":[{\"a\":\"\\u12G4\"}]}",
        "{\"data\":[{\"a\":\"\xC3\"}]}",         /* truncated UTF-8 */
        "{\"data\":[{\"a\":\"\xC0\xAF\"}]}",     /* overlong */
        "{\"data\":[{\"a\":\"\xED\xA0\x80\"}]}", /* UTF-8 surrogate */
        "{\"data\":[{\"a\":tru}]}",
        "{\"data\":[{\"a\":1}]} x", /* trailing data */
        "{\"data\":[],\"data\":[]}",
        "{\"data\":[{\"a\":1}]", /* unterminated */
        "{\"page\":-1,\"data\":[]}",
        "{\"page\":1.5,\"data\":[]}",
    };
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct dapi_page *p = NULL;
        char err[256] = "";
        enum dapi_err r = dapi_page_parse(bad[i], strlen(bad[i]), &p, err, sizeof err);
        T_CHECK(r == DAPI_ERR_INVALID && p == NULL && err[0], "accepted #%zu [%s]", i, bad[i]);
        dapi_page_free(p);
    }
    /* nesting: 64 levels in all are fine, 65 are not */
    char deep[512];
    for(int depth = 63; depth <= 64; depth++) {
        /* the page object, data array and row take 3 levels; the value adds depth - 3 + 1 */
        size_t k = 0;
        k += (size_t)snprintf(deep + k, sizeof deep - k, "{\"data\":[{\"a\":");
        for(int i = 0; i < depth - 2; i++)
            deep[k++] = '[';
        for(int i = 0; i < depth - 2; i++)
            deep[k++] = ']';
        k += (size_t)snprintf(deep + k, sizeof deep - k, "}]}");
        struct dapi_page *p = NULL;
        enum dapi_err r = dapi_page_parse(deep, k, &p, NULL, 0);
        T_EQ_INT(r, depth == 63 ? DAPI_OK : DAPI_ERR_INVALID);
        dapi_page_free(p);
    }
}

static void test_unquote(void)
{
    static const struct {
        const char *lit, *want;
    } cases[] = {
        {"\"\"", ""},
        {"\"plain\"", "plain"},
        {"\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d"},
        {"\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t"},
        {"\"\\u00e9\\u65e5\"", "é日"},
        {"\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80"}, /* surrogate pair */
        {"\"\\ud83dx\"", "\xEF\xBF\xBDx"},          /* lone high surrogate */
        {"\"\\ude00\"", "\xEF\xBF\xBD"},            /* lone low surrogate */
        {"\"日本\"", "日本"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_buf b;
        dapi_buf_init(&b, 1024);
        dapi_buf_add(&b, "", 0);
        T_EQ_INT(dapi_client_unquote_buf(cases[i].lit, strlen(cases[i].lit), &b), DAPI_OK);
        T_EQ_MEM(b.data, b.len, cases[i].want);
        dapi_buf_free(&b);
        /* the installed library's form: the caller's array of len - 1 bytes */
        size_t len = strlen(cases[i].lit), n = 99;
        char *out = malloc(len - 1);
        T_EQ_INT(dapi_client_unquote(cases[i].lit, len, out, &n), DAPI_OK);
        T_EQ_MEM(out, n, cases[i].want);
        T_EQ_INT(out[n], '\0');
        free(out);
    }
    char one[8];
    T_EQ_INT(dapi_client_unquote("\"", 1, one, NULL), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_client_unquote("\"\\u12\"", 6, one, NULL), DAPI_ERR_INVALID);
}

/* Formats the rows text (one page) with kind; returns the output (owned). */
static char *render(enum dapi_format_kind kind, const char *rows, size_t *len)
{
    char err[256] = "";
    struct dapi_out o;
    struct dapi_format *f = NULL;
    dapi_out_init(&o, -1, 1 << 20);
    struct dapi_page *p = rows ? page_of(rows, err, sizeof err) : NULL;
    T_CHECK(!rows || p, "parse: %s", err);
    dapi_format_new(&f, kind, &o);
    if(p)
        T_EQ_INT(dapi_format_page(f, p, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_format_finish(f), DAPI_OK);
    dapi_format_free(f);
    dapi_page_free(p);
    dapi_buf_add(&o.buf, "", 0);
    char *out = dapi_buf_take(&o.buf, len);
    dapi_out_free(&o);
    return out;
}

static const char tricky[] =
    "{\"id\":1,\"s\":\"a,b\",\"n\":1.50,\"b\":true,\"j\":[1, \"x\"]},"
    "{\"id\":2,\"s\":\"say \\\"hi\\\"\",\"n\":null,\"b\":false,\"j\":{\"k\": null}},"
    "{\"id\":3,\"s\":\"two\\nlines\\ttab\\\\\",\"n\":-3,\"b\":null,\"j\":null},"
    "{\"id\":12345678901234567890,\"s\":\"\",\"n\":0,\"b\":true,\"j\":\"日本 é\"}";

static void test_formats(void)
{
    static const struct {
        enum dapi_format_kind kind;
        const char *rows;
        const char *want;
    } cases[] = {
        {DAPI_FORMAT_CSV, tricky,
         "id,s,n,b,j\r\n"
         "1,\"a,b\",1.50,true,\"[1,\"\"x\"\"]\"\r\n"
         "2,\"say \"\"hi\"\"\",,false,\"{\"\"k\"\":null}\"\r\n"
         "3,\"two\nlines\ttab\\\",-3,,\r\n"
         "12345678901234567890,\"\",0,true,日本 é\r\n"},
        {DAPI_FORMAT_TSV, tricky,
         "id\ts\tn\tb\tj\n"
         "1\ta,b\t1.50\ttrue\t[1,\"x\"]\n"
         "2\tsay \"hi\"\t\tfalse\t{\"k\":null}\n"
         "3\ttwo\\nlines\\ttab\\\\\t-3\t\t\n"
         "12345678901234567890\t\t0\ttrue\t日本 é\n"},
        {DAPI_FORMAT_NDJSON, tricky,
         "{\"id\":1,\"s\":\"a,b\",\"n\":1.50,\"b\":true,\"j\":[1,\"x\"]}\n"
         "{\"id\":2,\"s\":\"say \\\"hi\\\"\",\"n\":null,\"b\":false,\"j\":{\"k\":null}}\n"
         "{\"id\":3,\"s\":\"two\\nlines\\ttab\\\\\",\"n\":-3,\"b\":null,\"j\":null}\n"
         "{\"id\":12345678901234567890,\"s\":\"\",\"n\":0,\"b\":true,\"j\":\"日本 é\"}\n"},
        {DAPI_FORMAT_JSON, "{\"a\":1},{\"a\":\"x y\"}", "[\n{\"a\":1},\n{\"a\":\"x y\"}\n]\n"},
        {DAPI_FORMAT_JSON, NULL, "[]\n"},
        {DAPI_FORMAT_JSON, "", "[]\n"},
        {DAPI_FORMAT_CSV, "", ""},
        {DAPI_FORMAT_NDJSON, NULL, ""},
        {DAPI_FORMAT_CSV, "{\"a b\":1,\"c,d\":2,\"e\\\"f\":3}",
         "a b,\"c,d\",\"e\"\"f\"\r\n1,2,3\r\n"},
        {DAPI_FORMAT_TABLE, tricky,
         "                  id | s                |    n | b     | j\n"
         "---------------------+------------------+------+-------+-----------\n"
         "                   1 | a,b              | 1.50 | true  | [1,\"x\"]\n"
         "                   2 | say \"hi\"         | NULL | false | {\"k\":null}\n"
         "                   3 | two\\nlines\\ttab\\ |   -3 | NULL  | NULL\n"
         "12345678901234567890 |                  |    0 | true  | 日本 é\n"
         "(4 rows)\n"},
        {DAPI_FORMAT_TABLE, NULL, "(0 rows)\n"},
        {DAPI_FORMAT_TABLE, "{\"k\":\"\\u001b[31mred\\u0007\"}",
         "k\n---------\n\xEF\xBF\xBD[31mred\xEF\xBF\xBD\n(1 row)\n"},
        {DAPI_FORMAT_TABLE,
         "{\"long\":\"0123456789012345678901234567890123456789X\",\"w\":\"日本日本日本日本日本日本日本日本日本日本日本\"}",
         "long                                     | w\n"
         "-----------------------------------------+----------------------------------------\n"
         "012345678901234567890123456789012345678… | 日本日本日本日本日本日本日本日本日本日…\n"
         "(1 row)\n"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 0;
        char *out = render(cases[i].kind, cases[i].rows, &len);
        T_CHECK(out && len == strlen(cases[i].want) && memcmp(out, cases[i].want, len) == 0,
                "format case %zu:\n--- got ---\n%.*s\n--- want ---\n%s", i, (int)len,
                out ? out : "", cases[i].want);
        free(out);
    }
}

static void test_columns_must_match(void)
{
    char err[256] = "";
    struct dapi_out o;
    struct dapi_format *f = NULL;
    dapi_out_init(&o, -1, 1 << 20);
    struct dapi_page *p = page_of("{\"a\":1,\"b\":2},{\"b\":2,\"a\":1}", err, sizeof err);
    dapi_format_new(&f, DAPI_FORMAT_CSV, &o);
    T_EQ_INT(dapi_format_page(f, p, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "row 2") != NULL, "err: %s", err);
    dapi_format_free(f);
    dapi_page_free(p);
    dapi_out_free(&o);
}

static void test_width(void)
{
    T_EQ_INT(dapi_format_width("abc", 3), 3);
    T_EQ_INT(dapi_format_width("é", strlen("é")), 1);
    T_EQ_INT(dapi_format_width("e\xCC\x81", 3), 1); /* e + combining acute */
    T_EQ_INT(dapi_format_width("日本", strlen("日本")), 4);
    T_EQ_INT(dapi_format_width("\xF0\x9F\x98\x80", 4), 2);
    enum dapi_format_kind k;
    T_EQ_INT(dapi_format_parse("ndjson", &k), 0);
    T_EQ_INT(k, DAPI_FORMAT_NDJSON);
    T_EQ_INT(dapi_format_parse("xml", &k), -1);
}

int main(void)
{
    test_parse_ok();
    test_parse_bad();
    test_unquote();
    test_formats();
    test_columns_must_match();
    test_width();
    T_DONE();
}
