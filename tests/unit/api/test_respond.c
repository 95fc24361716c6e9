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

int main(void)
{
    test_error_body();
    test_exec_error_body();
    T_DONE();
}
