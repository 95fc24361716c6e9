#include <stdlib.h>

#include "base/buf.h"
#include "t.h"

static void test_init_empty(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 16);
    T_CHECK(b.data == NULL, "init allocates nothing");
    T_EQ_INT(b.len, 0);
    T_EQ_INT(b.max, 16);
    /* Appending nothing is fine and leaves a valid empty string. */
    T_EQ_INT(dapi_buf_add(&b, "", 0), DAPI_OK);
    T_EQ_INT(b.len, 0);
    T_CHECK(b.data && b.data[0] == '\0', "empty append NUL-terminates");
    dapi_buf_free(&b);
}

static void test_add_and_nul(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    T_EQ_INT(dapi_buf_add(&b, "abc", 3), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "def"), DAPI_OK);
    T_EQ_INT(dapi_buf_addc(&b, 'g'), DAPI_OK);
    T_EQ_INT(b.len, 7);
    T_EQ_STR(b.data, "abcdefg");
    T_EQ_INT(b.data[b.len], '\0');
    /* Growth across several reallocations keeps the content. */
    for(int i = 0; i < 100; i++)
        T_EQ_INT(dapi_buf_addc(&b, (char)('0' + i % 10)), DAPI_OK);
    T_EQ_INT(b.len, 107);
    T_EQ_MEM(b.data + 7, 10, "0123456789");
    T_EQ_MEM(b.data + 97, 10, "0123456789");
    T_CHECK(b.cap >= b.len + 1, "cap %zu covers len %zu and the NUL", b.cap, b.len);
    dapi_buf_free(&b);
    T_CHECK(b.data == NULL && b.len == 0, "free empties");
}

static void test_cap_exact_and_over(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 10);
    T_EQ_INT(dapi_buf_add(&b, "0123456789", 10), DAPI_OK);
    T_EQ_INT(b.len, 10);
    T_EQ_STR(b.data, "0123456789");
    T_CHECK(b.cap <= 11, "cap %zu stays within max + NUL", b.cap);
    T_EQ_INT(dapi_buf_addc(&b, 'x'), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "buffer freed after overflow");
    T_EQ_INT(b.len, 0);
    T_EQ_INT(b.cap, 0);

    /* One append that is one over the cap from empty. */
    dapi_buf_init(&b, 10);
    T_EQ_INT(dapi_buf_add(&b, "0123456789A", 11), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "freed");

    /* Partly filled: fill up to exactly the cap, then one over. */
    dapi_buf_init(&b, 10);
    T_EQ_INT(dapi_buf_adds(&b, "01234"), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "567890"), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL && b.len == 0, "freed after partial overflow");
    dapi_buf_init(&b, 10);
    T_EQ_INT(dapi_buf_adds(&b, "01234"), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "56789"), DAPI_OK);
    T_EQ_STR(b.data, "0123456789");
    dapi_buf_free(&b);

    /* A huge n must not wrap around the size check. */
    dapi_buf_init(&b, 10);
    T_EQ_INT(dapi_buf_adds(&b, "ab"), DAPI_OK);
    T_CHECK(dapi_buf_reserve(&b, (size_t)-1) == NULL, "reserve SIZE_MAX fails");
    T_CHECK(b.data == NULL, "freed after failed reserve");

    /* Cap 0: nothing fits. */
    dapi_buf_init(&b, 0);
    T_EQ_INT(dapi_buf_addc(&b, 'a'), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "freed");
}

static void test_addf(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 64);
    T_EQ_INT(dapi_buf_addf(&b, "%d-%s", 42, "x"), DAPI_OK);
    T_EQ_INT(dapi_buf_addf(&b, "/%05.1f", 3.14159), DAPI_OK);
    T_EQ_STR(b.data, "42-x/003.1");
    T_EQ_INT(b.len, 10);
    dapi_buf_free(&b);

    /* Exactly at the cap, then one over. */
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_addf(&b, "%08d", 7), DAPI_OK);
    T_EQ_STR(b.data, "00000007");
    T_EQ_INT(dapi_buf_addf(&b, "%d", 1), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL && b.len == 0, "addf overflow frees");

    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_addf(&b, "%s", "123456789"), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "addf over cap from empty frees");

    /* Longer than the first allocation (64 bytes) in one go. */
    dapi_buf_init(&b, 1000);
    T_EQ_INT(dapi_buf_addf(&b, "%0200d", 5), DAPI_OK);
    T_EQ_INT(b.len, 200);
    T_EQ_INT(b.data[199], '5');
    T_EQ_INT(b.data[0], '0');
    T_EQ_INT(b.data[200], '\0');
    dapi_buf_free(&b);
}

static void test_reserve_commit(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 16);
    T_EQ_INT(dapi_buf_adds(&b, "ab"), DAPI_OK);
    char *p = dapi_buf_reserve(&b, 3);
    T_CHECK(p != NULL, "reserve");
    if(p) {
        memcpy(p, "cde", 3);
        dapi_buf_commit(&b, 2); /* commit fewer than reserved */
    }
    T_EQ_STR(b.data, "abcd");
    T_EQ_INT(b.len, 4);
    dapi_buf_free(&b);
}

static void test_reset(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 16);
    T_EQ_INT(dapi_buf_adds(&b, "hello"), DAPI_OK);
    char *before = b.data;
    dapi_buf_reset(&b);
    T_EQ_INT(b.len, 0);
    T_CHECK(b.data == before, "reset keeps memory");
    T_EQ_STR(b.data, "");
    T_EQ_INT(dapi_buf_adds(&b, "x"), DAPI_OK);
    T_EQ_STR(b.data, "x");
    dapi_buf_free(&b);
    /* Reusable after free, with the same cap. */
    T_EQ_INT(dapi_buf_adds(&b, "0123456789abcdef"), DAPI_OK);
    T_EQ_INT(dapi_buf_addc(&b, 'x'), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "freed");
}

static void test_take(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 16);
    size_t n = 99;
    char *p = dapi_buf_take(&b, &n);
    T_CHECK(p != NULL, "take of empty buffer gives a string");
    T_EQ_INT(n, 0);
    T_EQ_STR(p, "");
    free(p);

    T_EQ_INT(dapi_buf_adds(&b, "payload"), DAPI_OK);
    p = dapi_buf_take(&b, &n);
    T_EQ_INT(n, 7);
    T_EQ_STR(p, "payload");
    T_CHECK(b.data == NULL && b.len == 0 && b.cap == 0, "take empties the buffer");
    /* The buffer is usable again and independent of the taken memory. */
    T_EQ_INT(dapi_buf_adds(&b, "next"), DAPI_OK);
    T_EQ_STR(b.data, "next");
    T_EQ_STR(p, "payload");
    free(p);
    p = dapi_buf_take(&b, NULL);
    T_EQ_STR(p, "next");
    free(p);
}

/* The first error sticks: later appends are no-ops returning it, data stays NULL, take
 * gives NULL; dapi_buf_error reads it; reset and free clear it. */
static void test_sticky_error(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_error(&b), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "abc"), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "0123456789"), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL && b.len == 0 && b.cap == 0, "a failed buffer holds no memory");
    /* Later appends, even ones that would fit, change nothing and return the first error. */
    T_EQ_INT(dapi_buf_addc(&b, 'x'), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_adds(&b, "y"), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_add(&b, "", 0), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_addf(&b, "%d", 1), DAPI_ERR_TOO_LARGE);
    T_CHECK(dapi_buf_reserve(&b, 1) == NULL, "reserve on a failed buffer gives NULL");
    dapi_buf_commit(&b, 0); /* a no-op, must not crash */
    T_EQ_INT(dapi_buf_add_file(&b, "/dev/null"), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL && b.len == 0, "still nothing after later appends");
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE);
    size_t n = 99;
    T_CHECK(dapi_buf_take(&b, &n) == NULL, "take of a failed buffer gives NULL");
    T_EQ_INT(n, 0);
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE); /* still readable after take */
    T_CHECK(dapi_buf_take(&b, NULL) == NULL, "and again");

    /* reset clears the error: the buffer is good and usable again, with the same max. */
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_buf_error(&b), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "01234567"), DAPI_OK);
    T_EQ_STR(b.data, "01234567");
    T_EQ_INT(dapi_buf_addc(&b, '8'), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE);

    /* free clears it too. */
    dapi_buf_free(&b);
    T_EQ_INT(dapi_buf_error(&b), DAPI_OK);
    T_EQ_INT(dapi_buf_adds(&b, "ok"), DAPI_OK);
    char *p = dapi_buf_take(&b, &n);
    T_EQ_STR(p, "ok");
    T_EQ_INT(n, 2);
    free(p);

    /* The first error is kept, not a later different one: an I/O error, then an overflow. */
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_add_file(&b, "/nonexistent/dapi-test-file"), DAPI_ERR_IO);
    T_EQ_INT(dapi_buf_adds(&b, "0123456789"), DAPI_ERR_IO);
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_IO);
    T_CHECK(dapi_buf_take(&b, NULL) == NULL, "take after a failed add_file");
    dapi_buf_free(&b);

    /* A failed reserve sticks as well. */
    dapi_buf_init(&b, 8);
    T_CHECK(dapi_buf_reserve(&b, 9) == NULL, "reserve past the cap");
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_buf_addc(&b, 'a'), DAPI_ERR_TOO_LARGE);
    dapi_buf_free(&b);

    /* A builder's own error (dapi_buf_fail) sticks like an append's; the first one wins. */
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_adds(&b, "ab"), DAPI_OK);
    T_EQ_INT(dapi_buf_fail(&b, DAPI_ERR_INTERNAL), DAPI_ERR_INTERNAL);
    T_CHECK(b.data == NULL && b.len == 0, "fail frees");
    T_EQ_INT(dapi_buf_adds(&b, "cd"), DAPI_ERR_INTERNAL);
    T_EQ_INT(dapi_buf_fail(&b, DAPI_ERR_NOMEM), DAPI_ERR_INTERNAL);
    T_CHECK(dapi_buf_take(&b, NULL) == NULL, "take after fail");
    dapi_buf_free(&b);

    /* Exactly reaching the cap is no error, and take hands the whole value over. */
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_adds(&b, "0123"), DAPI_OK);
    T_EQ_INT(dapi_buf_addf(&b, "%s", "4567"), DAPI_OK);
    T_EQ_INT(dapi_buf_error(&b), DAPI_OK);
    T_EQ_INT(dapi_buf_add(&b, "", 0), DAPI_OK); /* nothing more still fits */
    p = dapi_buf_take(&b, &n);
    T_EQ_STR(p, "01234567");
    T_EQ_INT(n, 8);
    free(p);
    T_EQ_INT(dapi_buf_error(&b), DAPI_OK);
}

/* The bug sticky errors fix: appends whose results are ignored, the first of which fails.
 * The old buffer freed itself and the next append started afresh, so the value came out
 * without its first part (an error body once read ,"error":"Invalid SQL query"}). */
static void test_ignored_results_never_give_a_tail(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 32);
    char big[64];
    memset(big, 'd', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dapi_buf_addc(&b, '{');
    dapi_buf_adds(&b, "\"details\":\"");
    dapi_buf_adds(&b, big); /* over the cap */
    dapi_buf_adds(&b, "\",\"error\":\"Invalid SQL query\"}");
    T_CHECK(b.data == NULL, "no partial data: [%s]", b.data ? b.data : "");
    T_EQ_INT(dapi_buf_error(&b), DAPI_ERR_TOO_LARGE);
    size_t n = 0;
    char *p = dapi_buf_take(&b, &n);
    T_CHECK(p == NULL, "take gives NULL, not the tail: [%s]", p ? p : "");
    free(p);
    dapi_buf_free(&b);
}

/* A bounded append: whole when short enough, else a prefix ending with a whole character and
 * the note with both sizes; sticky like every append. */
static void test_add_cut(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    T_EQ_INT(dapi_buf_add_cut(&b, "abc", 3), DAPI_OK);
    T_EQ_STR(b.data, "abc");
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_buf_add_cut(&b, "abcdef", 4), DAPI_OK);
    T_EQ_STR(b.data, "abcd ... (cut to its first 4 of 6 bytes)");
    dapi_buf_reset(&b);
    /* "a€b": the euro sign is bytes 1..3; a cut at 2 or 3 leaves it out whole */
    T_EQ_INT(dapi_buf_add_cut(&b,
                              "a\xe2\x82\xac"
                              "b",
                              3),
             DAPI_OK);
    T_EQ_STR(b.data, "a ... (cut to its first 1 of 5 bytes)");
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_buf_add_cut(&b,
                              "a\xe2\x82\xac"
                              "b",
                              4),
             DAPI_OK);
    T_EQ_STR(b.data, "a\xe2\x82\xac ... (cut to its first 4 of 5 bytes)");
    dapi_buf_free(&b);
    /* over the buffer's own cap: the sticky error, as any append */
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_buf_add_cut(&b, "abcdefghij", 5), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "failed buffer has no data");
    dapi_buf_free(&b);
}

/* dapi_put_u64 and dapi_copy_str: the hand-written formatting of the per-request paths gives
 * what snprintf would. */
static void test_put_u64_and_copy_str(void)
{
    static const struct {
        uint64_t v;
        int min;
        const char *want;
    } cases[] = {
        {0, 1, "0"},       {0, 3, "000"},   {7, 3, "007"},
        {1234, 2, "1234"}, {999, 3, "999"}, {1000, 3, "1000"},
        {42, 0, "42"},     {5, 5, "00005"}, {UINT64_MAX, 1, "18446744073709551615"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        char *end = dapi_put_u64(out, cases[i].v, cases[i].min);
        *end = '\0';
        T_EQ_STR(out, cases[i].want);
    }
    char small[4];
    T_EQ_INT((long long)dapi_copy_str(small, sizeof small, "abcdef"), 3);
    T_EQ_STR(small, "abc");
    T_EQ_INT((long long)dapi_copy_str(small, sizeof small, "ab"), 2);
    T_EQ_STR(small, "ab");
    T_EQ_INT((long long)dapi_copy_str(small, 1, "ab"), 0);
    T_EQ_STR(small, "");
}

int main(void)
{
    test_put_u64_and_copy_str();
    test_init_empty();
    test_add_and_nul();
    test_cap_exact_and_over();
    test_addf();
    test_reserve_commit();
    test_reset();
    test_take();
    test_sticky_error();
    test_ignored_results_never_give_a_tail();
    test_add_cut();
    T_DONE();
}
