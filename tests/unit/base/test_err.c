/* The one error table (src/base/err.c) and dapi_respond_err's answer built from it
 * (dapi_err_answer, src/api/respond.c). */
#include <stdlib.h>
#include <string.h>

#include "api/respond.h"
#include "dapi/err.h"
#include "t.h"

/* Every code has a status in 400..599 in both contexts, a message, and a Retry-After only
 * on 429 or 503. */
static void test_table_total(void)
{
    for(int i = DAPI_OK + 1; i < DAPI_ERR__COUNT; i++) {
        enum dapi_err e = (enum dapi_err)i;
        int st = dapi_err_status(e), ex = dapi_err_exec_status(e);
        const char *m = dapi_err_message(e);
        int ra = dapi_err_retry_after(e);
        T_CHECK(st >= 400 && st <= 599, "code %d: status %d", i, st);
        T_CHECK(ex >= 400 && ex <= 599, "code %d: exec status %d", i, ex);
        T_CHECK(m && *m, "code %d: no message", i);
        T_CHECK(ra >= 0, "code %d: retry-after %d", i, ra);
        T_CHECK(ra == 0 || st == 429 || st == 503, "code %d: Retry-After %d on %d", i, ra, st);
    }
    /* unknown codes answer as an internal error */
    T_EQ_INT(dapi_err_status((enum dapi_err)DAPI_ERR__COUNT), 500);
    T_EQ_INT(dapi_err_exec_status((enum dapi_err)(-1)), 500);
    T_EQ_STR(dapi_err_message((enum dapi_err)1000), "Internal server error");
    T_EQ_INT(dapi_err_retry_after((enum dapi_err)DAPI_ERR__COUNT), 0);
}

/* The values the integration suite pins. */
static void test_table_values(void)
{
    T_EQ_INT(dapi_err_status(DAPI_ERR_NOMEM), 500);
    T_EQ_STR(dapi_err_message(DAPI_ERR_NOMEM), "Out of memory");
    T_EQ_INT(dapi_err_status(DAPI_ERR_SQL), 400);
    T_EQ_STR(dapi_err_message(DAPI_ERR_SQL), "Invalid SQL query");
    T_EQ_INT(dapi_err_status(DAPI_ERR_BUSY), 503);
    T_EQ_STR(dapi_err_message(DAPI_ERR_BUSY), "Server busy, retry later");
    T_EQ_INT(dapi_err_retry_after(DAPI_ERR_BUSY), 5);
    T_EQ_INT(dapi_err_status(DAPI_ERR_SHUTDOWN), 503);
    T_EQ_STR(dapi_err_message(DAPI_ERR_SHUTDOWN), "Server shutting down");
    T_EQ_INT(dapi_err_retry_after(DAPI_ERR_SHUTDOWN), 5);
    T_EQ_INT(dapi_err_status(DAPI_ERR_RATE), 429);
    T_EQ_INT(dapi_err_status(DAPI_ERR_UPSTREAM), 502);
    T_EQ_INT(dapi_err_status(DAPI_ERR_UPSTREAM_TIMEOUT), 504);
    T_EQ_STR(dapi_err_message(DAPI_ERR_UPSTREAM_TIMEOUT), "Upstream did not answer in time");
    T_EQ_INT(dapi_err_retry_after(DAPI_ERR_UPSTREAM_TIMEOUT), 0);
    /* the execution context: only NOT_FOUND and RATE differ, both 500 */
    T_EQ_INT(dapi_err_status(DAPI_ERR_NOT_FOUND), 404);
    T_EQ_INT(dapi_err_exec_status(DAPI_ERR_NOT_FOUND), 500);
    T_EQ_INT(dapi_err_exec_status(DAPI_ERR_RATE), 500);
    for(int i = DAPI_OK + 1; i < DAPI_ERR__COUNT; i++)
        if(i != DAPI_ERR_NOT_FOUND && i != DAPI_ERR_RATE)
            T_CHECK(dapi_err_exec_status((enum dapi_err)i) == dapi_err_status((enum dapi_err)i),
                    "code %d: exec status differs", i);
}

static void test_answer(void)
{
    int status = 0;
    char ra[16] = "x";
    size_t n = 0;
    char *p = dapi_err_answer(DAPI_ERR_SHUTDOWN, NULL, &status, ra, &n);
    T_EQ_INT(status, 503);
    T_EQ_STR(ra, "5");
    T_EQ_MEM(p, n, "{\"error\":\"Server shutting down\"}");
    free(p);

    p = dapi_err_answer(DAPI_ERR_BUSY, "too many queries waiting to be checked", &status, ra, &n);
    T_EQ_INT(status, 503);
    T_EQ_STR(ra, "5");
    T_EQ_MEM(p, n,
             "{\"details\":\"too many queries waiting to be checked\","
             "\"error\":\"Server busy, retry later\"}");
    free(p);

    p = dapi_err_answer(DAPI_ERR_NOMEM, NULL, &status, ra, &n);
    T_EQ_INT(status, 500);
    T_EQ_STR(ra, "");
    T_EQ_MEM(p, n, "{\"error\":\"Out of memory\"}");
    free(p);

    p = dapi_err_answer(DAPI_ERR_SQL, "near \"FROM\"", &status, ra, &n);
    T_EQ_INT(status, 400);
    T_EQ_STR(ra, "");
    T_EQ_MEM(p, n, "{\"details\":\"near \\\"FROM\\\"\",\"error\":\"Invalid SQL query\"}");
    free(p);

    /* details over the 256 KiB cap: cut to their first DAPI_DETAILS_MAX bytes with a note,
     * never dropped (they used to be: the message alone) */
    size_t big = 300 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = '\0';
    p = dapi_err_answer(DAPI_ERR_SQL, huge, &status, ra, &n);
    char tail[128];
    snprintf(tail, sizeof tail,
             "x ... (cut to its first %d of %zu bytes)\",\"error\":\"Invalid "
             "SQL query\"}",
             DAPI_DETAILS_MAX, big);
    T_CHECK(p && strncmp(p, "{\"details\":\"xxx", 15) == 0 && n > strlen(tail) &&
                strcmp(p + n - strlen(tail), tail) == 0 &&
                n == strlen("{\"details\":\"") + DAPI_DETAILS_MAX + strlen(tail) - 1,
            "cut details: %.60s…%s", p ? p : "(null)", p && n > 80 ? p + n - 80 : "");
    free(p);
    free(huge);
}

int main(void)
{
    test_table_total();
    test_table_values();
    test_answer();
    T_DONE();
}
