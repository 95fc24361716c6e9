/* The export converters (src/base/rows.h): CSV quoting, TSV escapes, NDJSON/JSON splitting of
 * rows whose strings hold '},{', escapes and unicode, empty results, malformed pages. */
#include <stdlib.h>
#include <string.h>

#include "base/rows.h"
#include "t.h"

static char out[65536];

/* Converts pages (NULL-terminated) with header names (n) into out; returns out, or
 * "<err N>". */
static const char *conv(enum dapi_rows_format fmt, const char *const *names, size_t n,
                        const char *const *pages)
{
    struct dapi_rows c;
    struct dapi_buf b;
    dapi_rows_init(&c, fmt);
    dapi_buf_init(&b, 1 << 20);
    enum dapi_err result = dapi_buf_add(&b, "", 0);
    if(!result)
        result = dapi_rows_begin(&c, &b, names, n);
    for(size_t i = 0; pages[i] && !result; i++)
        result = dapi_rows_page(&c, &b, pages[i], strlen(pages[i]));
    if(!result)
        result = dapi_rows_end(&c, &b);
    if(result)
        snprintf(out, sizeof out, "<err %d>", (int)result);
    else
        snprintf(out, sizeof out, "%s", b.data);
    dapi_buf_free(&b);
    dapi_rows_free(&c);
    return out;
}

static const char *const names2[] = {"a", "b"};

/* Strings that look like row boundaries, escapes, nested values. */
static const char *const tricky[] = {
    "{\"a\":\"x},{y\",\"b\":{\"k\":[1,\"]}\"]}},{\"a\":\"q\\\"},{\\\\\",\"b\":null}",
    "{\"a\":\"\\u00e9\\ud83d\\ude00 caf\xc3\xa9\",\"b\":-1.5e3}",
    NULL,
};

static void test_ndjson(void)
{
    T_EQ_STR(conv(DAPI_ROWS_NDJSON, names2, 2, tricky),
             "{\"a\":\"x},{y\",\"b\":{\"k\":[1,\"]}\"]}}\n"
             "{\"a\":\"q\\\"},{\\\\\",\"b\":null}\n"
             "{\"a\":\"\\u00e9\\ud83d\\ude00 caf\xc3\xa9\",\"b\":-1.5e3}\n");
}

static void test_json(void)
{
    T_EQ_STR(conv(DAPI_ROWS_JSON, names2, 2, tricky),
             "[{\"a\":\"x},{y\",\"b\":{\"k\":[1,\"]}\"]}},"
             "{\"a\":\"q\\\"},{\\\\\",\"b\":null},"
             "{\"a\":\"\\u00e9\\ud83d\\ude00 caf\xc3\xa9\",\"b\":-1.5e3}]\n");
}

static void test_csv(void)
{
    T_EQ_STR(conv(DAPI_ROWS_CSV, names2, 2, tricky),
             "a,b\r\n"
             "\"x},{y\",\"{\"\"k\"\":[1,\"\"]}\"\"]}\"\r\n"
             "\"q\"\"},{\\\",\r\n"
             "\xc3\xa9\xf0\x9f\x98\x80 caf\xc3\xa9,-1.5e3\r\n");
    /* "" (quoted) vs NULL (empty, unquoted); CR/LF quoted; true/false as written */
    static const char *const p[] = {"{\"a\":\"\",\"b\":null},{\"a\":\"l1\\r\\nl2\",\"b\":true}",
                                    NULL};
    T_EQ_STR(conv(DAPI_ROWS_CSV, names2, 2, p), "a,b\r\n\"\",\r\n\"l1\r\nl2\",true\r\n");
    /* a header name that needs quoting */
    static const char *const odd[] = {"x,y", "q\""};
    static const char *const none[] = {NULL};
    T_EQ_STR(conv(DAPI_ROWS_CSV, odd, 2, none), "\"x,y\",\"q\"\"\"\r\n");
}

static void test_tsv(void)
{
    static const char *const p[] = {
        "{\"a\":\"t\\tn\\nr\\rb\\\\\",\"b\":null},{\"a\":\"\",\"b\":[\"x\\ty\"]}", NULL};
    T_EQ_STR(conv(DAPI_ROWS_TSV, names2, 2, p), "a\tb\nt\\tn\\nr\\rb\\\\\t\\N\n\t[\"x\\\\ty\"]\n");
}

static void test_empty(void)
{
    static const char *const none[] = {NULL};
    static const char *const empty_page[] = {"", NULL};
    T_EQ_STR(conv(DAPI_ROWS_CSV, names2, 2, none), "a,b\r\n"); /* header only */
    T_EQ_STR(conv(DAPI_ROWS_TSV, names2, 2, empty_page), "a\tb\n");
    T_EQ_STR(conv(DAPI_ROWS_CSV, NULL, 0, none), ""); /* names not known */
    T_EQ_STR(conv(DAPI_ROWS_JSON, names2, 2, empty_page), "[]\n");
    T_EQ_STR(conv(DAPI_ROWS_NDJSON, names2, 2, empty_page), "");
}

static void test_pages_join(void)
{
    /* rows of several pages: JSON commas between pages, no leading comma */
    static const char *const p[] = {"{\"a\":1}", "{\"a\":2},{\"a\":3}", "", NULL};
    T_EQ_STR(conv(DAPI_ROWS_JSON, NULL, 0, p), "[{\"a\":1},{\"a\":2},{\"a\":3}]\n");
    T_EQ_STR(conv(DAPI_ROWS_CSV, (const char *const[]){"a"}, 1, p), "a\r\n1\r\n2\r\n3\r\n");
}

static void test_malformed(void)
{
    static const char *const bad[][2] = {
        {"{\"a\":1},", NULL},         /* trailing comma */
        {"{\"a\":\"x}", NULL},        /* unterminated string */
        {"[1]", NULL},                /* not an object */
        {"{\"a\":1}{\"a\":2}", NULL}, /* no comma */
        {"{\"a\":\"\\x\"}", NULL},    /* bad escape */
        {"{\"a\":\"\\u12\"}", NULL},  /* short \u */
        {"{\"a\":tru}", NULL},        /* bad literal */
        {"{\"a\":1.}", NULL},         /* bad number */
        {"{\"a\":\"\x01\"}", NULL},   /* control character */
    };
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for(int f = DAPI_ROWS_CSV; f <= DAPI_ROWS_JSON; f++)
            T_CHECK(strncmp(conv((enum dapi_rows_format)f, names2, 2, bad[i]), "<err", 4) == 0,
                    "page %zu format %d accepted: %s", i, f, out);
}

/* Rows whose boundaries the writer told (dapi_rows_page_cut): NDJSON and JSON equal what
 * the scanner gives; a wrong boundary is refused; csv reads the values as ever. */
static void test_page_cut(void)
{
    const char *page = tricky[0];
    const uint32_t seps[] = {32};
    struct dapi_rows c;
    struct dapi_buf b;
    for(int f = DAPI_ROWS_CSV; f <= DAPI_ROWS_JSON; f++) {
        dapi_rows_init(&c, (enum dapi_rows_format)f);
        dapi_buf_init(&b, 1 << 20);
        T_EQ_INT(page[seps[0]], ',');
        enum dapi_err result = dapi_rows_begin(&c, &b, names2, 2);
        if(!result)
            result = dapi_rows_page_cut(&c, &b, page, strlen(page), seps, 1);
        if(!result)
            result = dapi_rows_page_cut(&c, &b, tricky[1], strlen(tricky[1]), NULL, 0);
        if(!result)
            result = dapi_rows_end(&c, &b);
        T_EQ_INT(result, DAPI_OK);
        T_EQ_STR(b.data ? b.data : "", conv((enum dapi_rows_format)f, names2, 2, tricky));
        T_EQ_INT(c.rows, 3);
        dapi_buf_free(&b);
        dapi_rows_free(&c);
    }
    const uint32_t wrong[] = {5}, past[] = {1000};
    dapi_rows_init(&c, DAPI_ROWS_NDJSON);
    dapi_buf_init(&b, 1 << 20);
    T_EQ_INT(dapi_rows_page_cut(&c, &b, page, strlen(page), wrong, 1), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_rows_page_cut(&c, &b, page, strlen(page), past, 1), DAPI_ERR_INVALID);
    dapi_buf_free(&b);
    dapi_rows_free(&c);
}

/* Pages fed a piece at a time (dapi_rows_feed): for every piece size, the same text as the
 * whole pages give, in every format; a text cut inside a row, after a ',' or with no ','
 * between rows is refused; and what a piece gives is written at once (out never holds more
 * than the piece and the row it ends). */
static const char *feed(enum dapi_rows_format fmt, const char *const *pages, size_t piece,
                        size_t *most)
{
    static char got[65536];
    struct dapi_rows c;
    struct dapi_buf b, all;
    dapi_rows_init(&c, fmt);
    dapi_buf_init(&b, 1 << 20);
    dapi_buf_init(&all, 1 << 20);
    enum dapi_err result = dapi_buf_add(&all, "", 0);
    if(!result)
        result = dapi_rows_begin(&c, &all, names2, 2);
    *most = 0;
    for(size_t i = 0; pages[i] && !result; i++) {
        size_t len = strlen(pages[i]);
        dapi_rows_feed_begin(&c);
        for(size_t at = 0; at < len && !result; at += piece) {
            result = dapi_rows_feed(&c, &b, pages[i] + at, len - at < piece ? len - at : piece);
            if(b.len > *most)
                *most = b.len;
            if(!result && b.len)
                result = dapi_buf_add(&all, b.data, b.len);
            dapi_buf_reset(&b);
        }
        if(!result)
            result = dapi_rows_feed_end(&c);
    }
    if(!result)
        result = dapi_rows_end(&c, &all);
    if(result)
        snprintf(got, sizeof got, "<err %d>", (int)result);
    else
        snprintf(got, sizeof got, "%s", all.data);
    dapi_buf_free(&b);
    dapi_buf_free(&all);
    dapi_rows_free(&c);
    return got;
}

static void test_feed(void)
{
    static const char *const spaced[] = {" {\"a\":1} ,\n{\"a\":[{\"x\":\"}\"}]} ", "", NULL};
    const char *const *sets[] = {tricky, spaced};
    for(size_t s = 0; s < 2; s++)
        for(int f = DAPI_ROWS_CSV; f <= DAPI_ROWS_JSON; f++) {
            char want[65536];
            snprintf(want, sizeof want, "%s", conv((enum dapi_rows_format)f, names2, 2, sets[s]));
            T_CHECK(strncmp(want, "<err", 4) != 0, "set %zu format %d converts", s, f);
            for(size_t piece = 1; piece <= 80; piece++) {
                size_t most;
                const char *got = feed((enum dapi_rows_format)f, sets[s], piece, &most);
                if(strcmp(got, want) != 0) {
                    T_CHECK(0, "set %zu format %d piece %zu: %s, want %s", s, f, piece, got, want);
                    break;
                }
            }
        }
    /* NDJSON streams a row as it comes: a piece of 7 bytes gives at most 8 */
    size_t most;
    feed(DAPI_ROWS_NDJSON, tricky, 7, &most);
    T_CHECK(most <= 8, "ndjson out per piece: %zu", most);
    static const char *const bad[][2] = {
        {"{\"a\":1},", NULL},         /* cut after a ',' */
        {"{\"a\":\"x}", NULL},        /* cut inside a row */
        {"[1]", NULL},                /* not an object */
        {"{\"a\":1}{\"a\":2}", NULL}, /* no comma */
        {"{\"a\":1},,{\"a\":2}", NULL},
        {",{\"a\":1}", NULL},
    };
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for(int f = DAPI_ROWS_CSV; f <= DAPI_ROWS_JSON; f++)
            for(size_t piece = 1; piece <= 3; piece++)
                T_CHECK(strncmp(feed((enum dapi_rows_format)f, bad[i], piece, &most), "<err", 4) ==
                            0,
                        "page %zu format %d piece %zu accepted", i, f, piece);
    /* csv/tsv read every value of the row they gather: a bad escape is refused */
    static const char *const esc[] = {"{\"a\":\"\\x\"}", NULL};
    T_CHECK(strncmp(feed(DAPI_ROWS_CSV, esc, 2, &most), "<err", 4) == 0, "bad escape refused");
}

static void test_unquote(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    /* a lone surrogate becomes U+FFFD */
    T_EQ_INT(dapi_rows_unquote("\"\\ud800x\"", 9, &b), DAPI_OK);
    T_EQ_MEM(b.data, b.len, "\xef\xbf\xbdx");
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_rows_unquote("\"a\\/\\b\\f\\u0000\"", 15, &b), DAPI_OK);
    T_CHECK(b.len == 5 && memcmp(b.data, "a/\b\f\0", 5) == 0, "escapes decoded");
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_rows_unquote("\"abc", 4, &b), DAPI_ERR_INVALID);
    dapi_buf_free(&b);
    /* deep nesting is refused, not a stack overflow */
    size_t n = 5000;
    char *deep = malloc(2 * n + 1);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    T_CHECK(dapi_rows_skip_value(deep, deep + 2 * n) == NULL, "5000 levels accepted");
    T_CHECK(dapi_rows_skip_value(deep + n - 10, deep + n + 10) == deep + n + 10,
            "10 levels refused");
    free(deep);
}

int main(void)
{
    test_ndjson();
    test_json();
    test_csv();
    test_tsv();
    test_empty();
    test_pages_join();
    test_malformed();
    test_page_cut();
    test_feed();
    test_unquote();
    T_DONE();
}
