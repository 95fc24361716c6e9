/* Content negotiation and conditional requests of result pages (src/api/conneg.c):
 * Accept-Encoding (RFC 9110 12.5.3) and If-None-Match (13.1.2). */
#include "api/conneg.h"
#include "t.h"

static void test_accept_encoding(void)
{
    static const struct {
        const char *h;
        int zstd;
    } cases[] = {
        {NULL, 0},
        {"", 0},
        {"zstd", 1},
        {"ZSTD", 1},
        {"Zstd", 1},
        {"gzip, deflate, br, zstd", 1},
        {"gzip,zstd", 1},
        {"  gzip ,  zstd  ", 1},
        {"gzip", 0},
        {"identity", 0},
        {"zstdx", 0},
        {"xzstd", 0},
        {"zst", 0},
        {"zstd;q=0", 0},
        {"zstd; q=0", 0},
        {"zstd ;q=0.0", 0},
        {"zstd;Q=0.000", 0},
        {"zstd;q=0.001", 1},
        {"zstd;q=1", 1},
        {"zstd;q=1.000", 1},
        {"zstd;q=0.5, gzip;q=1", 1},
        {"*", 1},
        {"*;q=0", 0},
        {"gzip, *", 1},
        {"gzip, *;q=0", 0},
        {"*, zstd;q=0", 0}, /* the coding's own entry wins over * */
        {"zstd;q=0, *", 0},
        {"*;q=0, zstd", 1},
        {"identity;q=0, *", 1},
        {"identity, zstd;q=0", 0},
        {"zstd;q=2", 0}, /* not a qvalue: the header is not understood */
        {"zstd;q=", 0},
        {"zstd;q=abc", 0},
        {"zstd;q=0.0001", 0},
        {"zstd;level=3", 1}, /* unknown parameters are ignored */
        {"zstd;foo", 0},     /* a parameter without a value: malformed */
        {"zstd gzip", 0},    /* two tokens without a comma: malformed */
        {",,zstd,,", 1},
        {"zstd;q=0, zstd", 1}, /* the best q of a repeated coding */
    };
    for(size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        T_CHECK(dapi_accepts_coding(cases[i].h, "zstd") == cases[i].zstd,
                "Accept-Encoding: [%s] -> zstd %s", cases[i].h ? cases[i].h : "(none)",
                cases[i].zstd ? "accepted" : "refused");
}

static void test_accept_gzip(void)
{
    static const struct {
        const char *h;
        int gzip;
    } cases[] = {
        {NULL, 0},
        {"", 0},
        {"gzip", 1},
        {"GZIP", 1},
        {"x-gzip", 1}, /* RFC 9110 8.4.1.3: the same coding */
        {"X-Gzip;q=0.5", 1},
        {"gzip, deflate", 1},           /* Python's requests and urllib3 */
        {"gzip, deflate, br, zstd", 1}, /* (zstd is preferred where both are: respond.c) */
        {"deflate", 0},
        {"gzipx", 0},
        {"x-gzipx", 0},
        {"gzip;q=0", 0},
        {"gzip;q=0, *", 0}, /* its own entry wins over * */
        {"x-gzip;q=0, *", 0},
        {"gzip;q=0, x-gzip", 1}, /* the best q of the aliases' entries */
        {"*", 1},
        {"*;q=0", 0},
        {"*;q=0, gzip", 1},
        {"zstd", 0},
        {"gzip;q=2", 0}, /* not understood: nothing accepted */
    };
    for(size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        T_CHECK(dapi_accepts_gzip(cases[i].h) == cases[i].gzip, "Accept-Encoding: [%s] -> gzip %s",
                cases[i].h ? cases[i].h : "(none)", cases[i].gzip ? "accepted" : "refused");
}

static void test_if_none_match(void)
{
    const char *tag = "\"abc-1\"";
    static const struct {
        const char *h;
        int match;
    } cases[] = {
        {NULL, 0},
        {"", 0},
        {"*", 1},
        {" * ", 1},
        {"\"abc-1\"", 1},
        {"W/\"abc-1\"", 1}, /* weak comparison */
        {"\"x\", \"abc-1\"", 1},
        {"\"x\",\"abc-1\",\"y\"", 1},
        {"\"x\" , W/\"abc-1\"", 1},
        {"\"abc-1-zstd\"", 0},
        {"\"ABC-1\"", 0}, /* opaque tags are case-sensitive */
        {"abc-1", 0},     /* unquoted: not an entity-tag */
        {"\"abc-1", 0},
        {"\"x\", abc-1", 0},
        {"\"x\" \"abc-1\"", 0},
        {"*, \"abc-1\"", 0},       /* * only alone */
        {"\"a,b\", \"abc-1\"", 1}, /* a comma inside a tag */
    };
    for(size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        T_CHECK(dapi_etag_matches(cases[i].h, tag) == cases[i].match, "If-None-Match: [%s] %s",
                cases[i].h ? cases[i].h : "(none)", cases[i].match ? "matches" : "does not match");
    T_CHECK(dapi_etag_matches("W/\"abc-1\"", "W/\"abc-1\""), "weak against weak");
}

static void test_etag(void)
{
    char a[128], b[128], c[128], d[128], e[128];
    dapi_page_etag(a, sizeof a, 42, "dapi-query-x", "1", NULL);
    dapi_page_etag(b, sizeof b, 42, "dapi-query-x", "1", "zstd");
    dapi_page_etag(c, sizeof c, 43, "dapi-query-x", "1", NULL);
    dapi_page_etag(d, sizeof d, 42, "dapi-query-y", "1", NULL);
    dapi_page_etag(e, sizeof e, 42, "dapi-query-x", "2", NULL);
    T_CHECK(a[0] == '"' && a[strlen(a) - 1] == '"' && strchr(a + 1, '"') == a + strlen(a) - 1,
            "a quoted strong tag: %s", a);
    T_CHECK(strcmp(a, b) && strcmp(a, c) && strcmp(a, d) && strcmp(a, e),
            "differs by representation, result, slug and page: %s %s %s %s %s", a, b, c, d, e);
    char again[128];
    dapi_page_etag(again, sizeof again, 42, "dapi-query-x", "1", NULL);
    T_EQ_STR(again, a);
    T_CHECK(dapi_etag_matches(b, b) && !dapi_etag_matches(a, b), "tags compare as tags");
    /* the shape: 16 lowercase hex digits, the page (at most 48 bytes of it), the coding */
    T_CHECK(strlen(a) == 1 + 16 + 2 + 1 && strspn(a + 1, "0123456789abcdef") == 16 &&
                strcmp(a + 17, "-1\"") == 0,
            "\"<16 hex>-1\": %s", a);
    T_CHECK(strcmp(b + 17, "-1-zstd\"") == 0 && memcmp(a, b, 17) == 0, "coding appended: %s", b);
    char big[200], page[64];
    memset(page, '9', 60);
    page[60] = '\0';
    dapi_page_etag(big, sizeof big, 42, "dapi-query-x", page, NULL);
    T_EQ_INT((long long)strlen(big), 1 + 16 + 1 + 48 + 1);
    char small[10];
    dapi_page_etag(small, sizeof small, 42, "dapi-query-x", "1", NULL);
    T_CHECK(strlen(small) == 9 && strncmp(small, a, 9) == 0, "cut to the room given: %s", small);
}

int main(void)
{
    test_accept_encoding();
    test_accept_gzip();
    test_if_none_match();
    test_etag();
    T_DONE();
}
