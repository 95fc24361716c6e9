/* The JSON error bodies of src/api/respond.c when a part does not fit: never a body that
 * lost its first part. Regression test: with the old non-sticky buffer an error body whose
 * details overflowed the cap came out as ,"error":"Invalid SQL query"}. */
#include <stdlib.h>
#include <string.h>

#include "api/respond.h"
#include "t.h"

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_error_body(void)
{
    size_t n = 0;
    char *p = dapi_error_body("Invalid SQL query", "near FROM", 1024, &n);
    T_EQ_STR(p, "{\"details\":\"near FROM\",\"error\":\"Invalid SQL query\"}");
    T_EQ_INT(n, strlen("{\"details\":\"near FROM\",\"error\":\"Invalid SQL query\"}"));
    free(p);
    p = dapi_error_body("Not found", NULL, 1024, &n);
    T_EQ_STR(p, "{\"error\":\"Not found\"}");
    free(p);

    /* Details over a tiny cap: NULL, never the tail ,"error":"Invalid SQL query"}. */
    char *details = repeat('d', 100);
    n = 99;
    p = dapi_error_body("Invalid SQL query", details, 40, &n);
    T_CHECK(p == NULL, "error body over the cap is NULL, got [%s]", p ? p : "");
    T_EQ_INT(n, 0);
    free(p);
    /* Over the real cap (256 KiB) too. */
    char *huge = repeat('x', 300 * 1024);
    p = dapi_error_body("Invalid SQL query", huge, 256 * 1024, &n);
    T_CHECK(p == NULL, "error body over 256 KiB is NULL, got %.40s…", p ? p : "");
    free(p);
    /* Escaping makes a body grow: 50 quotes need 100 bytes of JSON, over a cap of 80. */
    char *quotes = repeat('"', 50);
    p = dapi_error_body("e", quotes, 80, &n);
    T_CHECK(p == NULL, "escaped details over the cap give NULL, got [%s]", p ? p : "");
    free(p);
    /* Exactly at the cap is fine. */
    const char *want = "{\"details\":\"dd\",\"error\":\"e\"}";
    p = dapi_error_body("e", "dd", strlen(want), &n);
    T_EQ_STR(p, want);
    free(p);
    free(details);
    free(huge);
    free(quotes);
}

static void test_exec_error_body(void)
{
    size_t n = 0;
    char *p = dapi_exec_error_body("Query execution failed", "boom", "2", "abc", 1024, &n);
    T_EQ_STR(p, "{\"details\":\"boom\",\"error\":\"Query execution failed\",\"page_number\":2,"
                "\"query_slug\":\"abc\"}");
    free(p);
    char *details = repeat('d', 200);
    p = dapi_exec_error_body("Query execution failed", details, "2", "abc", 100, &n);
    T_CHECK(p == NULL, "exec error body over the cap is NULL, got [%s]", p ? p : "");
    free(p);
    free(details);
}

/* Details are never dropped: longer than DAPI_DETAILS_MAX, they are cut to a prefix that ends
 * with a whole character, followed by a note with both sizes. */
static void test_bounded_details(void)
{
    char *owned = NULL;
    T_CHECK(dapi_bounded_details(NULL, &owned) == NULL && owned == NULL, "NULL stays NULL");
    const char *small = "near FROM";
    T_CHECK(dapi_bounded_details(small, &owned) == small && owned == NULL, "short: unchanged");
    char *exact = repeat('x', DAPI_DETAILS_MAX);
    T_CHECK(dapi_bounded_details(exact, &owned) == exact && owned == NULL, "at the bound");
    free(exact);
    /* 40,000 U+0001 (each 6 bytes of JSON): the case of the issue */
    char *ctl = repeat('\x01', 40000);
    const char *d = dapi_bounded_details(ctl, &owned);
    T_CHECK(d && d == owned, "a cut copy");
    char note[128];
    snprintf(note, sizeof note, " ... (cut to its first %d of 40000 bytes)", DAPI_DETAILS_MAX);
    T_CHECK(d && strlen(d) == DAPI_DETAILS_MAX + strlen(note) &&
                strcmp(d + DAPI_DETAILS_MAX, note) == 0,
            "the prefix and the note: %s", d ? d + DAPI_DETAILS_MAX : "(null)");
    size_t n = 0;
    char *body = dapi_error_body("Invalid SQL query", d, 256 * 1024, &n);
    T_CHECK(body != NULL, "the body with cut details fits its cap");
    free(body);
    free(owned);
    free(ctl);
    /* a multi-byte character across the bound is left out whole */
    char *mb = repeat('a', DAPI_DETAILS_MAX + 10);
    memcpy(mb + DAPI_DETAILS_MAX - 1, "\xe2\x82\xac", 3); /* U+20AC from byte MAX-1 to MAX+1 */
    d = dapi_bounded_details(mb, &owned);
    T_CHECK(d && strncmp(d + DAPI_DETAILS_MAX - 1, " ... (cut to its first", 22) == 0,
            "cut before the euro sign: [%.40s]", d ? d + DAPI_DETAILS_MAX - 4 : "(null)");
    free(owned);
    free(mb);
}

int main(void)
{
    test_bounded_details();
    test_error_body();
    test_exec_error_body();
    T_DONE();
}
