/* dapi_api_parse_pyint: Python int() semantics on text (the `limit` and `page` inputs). */
#include <stdint.h>
#include <stdlib.h>

#include "api/api.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct ok_case {
    const char *in;
    int neg;
    const char *digits;
    int64_t value;
    int big;
};

static const struct ok_case oks[] = {
    {"10", 0, "10", 10, 0},
    {" 7 ", 0, "7", 7, 0},
    {"\t\n 42\r\n\v\f", 0, "42", 42, 0},
    {"+5", 0, "5", 5, 0},
    {"-3", 1, "3", 3, 0},
    {" -3 ", 1, "3", 3, 0},
    {"0005", 0, "5", 5, 0},
    {"1_000", 0, "1000", 1000, 0},
    {"1_2_3", 0, "123", 123, 0},
    {"0_0", 0, "0", 0, 0},
    {"00_1", 0, "1", 1, 0},
    {"0", 0, "0", 0, 0},
    {"000", 0, "0", 0, 0},
    {"-0", 1, "0", 0, 0},
    {"+0", 0, "0", 0, 0},
    {"1", 0, "1", 1, 0},
    {"9223372036854775807", 0, "9223372036854775807", INT64_MAX, 0},
    {"-9223372036854775807", 1, "9223372036854775807", INT64_MAX, 0},
    {"9223372036854775808", 0, "9223372036854775808", INT64_MAX, 1},
    {"-9223372036854775808", 1, "9223372036854775808", INT64_MAX, 1},
    {"00009223372036854775808", 0, "9223372036854775808", INT64_MAX, 1},
    {"18446744073709551616", 0, "18446744073709551616", INT64_MAX, 1},
    {"99999999999999999999999999999999", 0, "99999999999999999999999999999999", INT64_MAX, 1},
    {"9_223_372_036_854_775_808", 0, "9223372036854775808", INT64_MAX, 1},
};

static const char *const bad[] = {
    "",
    " ",
    "\t\n",
    "+",
    "-",
    "+-5",
    "-+5",
    "--5",
    "- 5",
    "1 0",
    "1__0",
    "_1",
    "1_",
    "+_1",
    "-_1",
    "1_ ",
    "_",
    "1.5",
    "1.",
    ".5",
    "1e3",
    "abc",
    "0x10",
    "12x",
    "x12",
    "1,000",
    "∞",
    "inf",
    "nan",
    "0b1",
    ("\x01"
     "1"),
};

static void test_ok(void)
{
    for(size_t i = 0; i < N(oks); i++) {
        const struct ok_case *c = &oks[i];
        char digits[64];
        memset(digits, 'Z', sizeof digits);
        int neg = 77, big = 77;
        int64_t v = -77;
        int r = dapi_api_parse_pyint(c->in, strlen(c->in), &neg, digits, sizeof digits, &v, &big);
        T_CHECK(r == 0, "[%s] accepted (got %d)", c->in, r);
        if(r)
            continue;
        T_CHECK(neg == c->neg, "[%s] neg %d, want %d", c->in, neg, c->neg);
        T_CHECK(strcmp(digits, c->digits) == 0, "[%s] digits [%s], want [%s]", c->in, digits,
                c->digits);
        T_CHECK(v == c->value, "[%s] value %" PRId64 ", want %" PRId64, c->in, v, c->value);
        T_CHECK(big == c->big, "[%s] big %d, want %d", c->in, big, c->big);
    }
}

static void test_bad(void)
{
    for(size_t i = 0; i < N(bad); i++) {
        char digits[64];
        int neg, big;
        int64_t v;
        int r = dapi_api_parse_pyint(bad[i], strlen(bad[i]), &neg, digits, sizeof digits, &v,
                                     &big);
        T_CHECK(r != 0, "[%s] (case %zu) rejected", bad[i], i);
    }
}

/* len is honoured: the text need not be NUL-terminated, and bytes after len are ignored;
 * a NUL inside the text is not whitespace. */
static void test_len(void)
{
    char digits[64];
    int neg, big;
    int64_t v;
    T_EQ_INT(dapi_api_parse_pyint("12345", 2, &neg, digits, sizeof digits, &v, &big), 0);
    T_EQ_INT(v, 12);
    T_EQ_STR(digits, "12");
    T_EQ_INT(dapi_api_parse_pyint("7 junk", 2, &neg, digits, sizeof digits, &v, &big), 0);
    T_EQ_INT(v, 7);
    T_CHECK(dapi_api_parse_pyint("1\0"
                                 "2",
                                 3, &neg, digits, sizeof digits, &v, &big) != 0,
            "embedded NUL rejected");
    T_CHECK(dapi_api_parse_pyint("1\0", 2, &neg, digits, sizeof digits, &v, &big) != 0,
            "trailing NUL rejected");
    T_CHECK(dapi_api_parse_pyint("1_", 1, &neg, digits, sizeof digits, &v, &big) == 0,
            "the '_' past len is not seen");
    T_CHECK(dapi_api_parse_pyint("5", 0, &neg, digits, sizeof digits, &v, &big) != 0,
            "len 0 rejected");
}

/* The digits buffer bounds the length: n - 1 digits fit, n digits are refused, never
 * overrun. Leading zeros do not count. */
static void test_digits_buffer(void)
{
    char digits[8];
    int neg, big;
    int64_t v;
    memset(digits, 'Z', sizeof digits);
    T_EQ_INT(dapi_api_parse_pyint("1234567", 7, &neg, digits, 8, &v, &big), 0);
    T_EQ_STR(digits, "1234567");
    T_CHECK(dapi_api_parse_pyint("12345678", 8, &neg, digits, 8, &v, &big) != 0,
            "8 digits do not fit in 8 bytes");
    T_EQ_INT(dapi_api_parse_pyint("0000000000001234567", 19, &neg, digits, 8, &v, &big), 0);
    T_EQ_STR(digits, "1234567");
    char two[2] = {'Z', 'Z'};
    T_EQ_INT(dapi_api_parse_pyint("0", 1, &neg, two, 2, &v, &big), 0);
    T_EQ_MEM(two, 1, "0");
    T_EQ_INT(two[1], '\0');
    T_EQ_INT(dapi_api_parse_pyint("9", 1, &neg, two, 2, &v, &big), 0);
    T_EQ_INT(v, 9);
    T_CHECK(dapi_api_parse_pyint("10", 2, &neg, two, 2, &v, &big) != 0, "2 digits in 2 bytes");

    /* A long value: digits are exact even far beyond int64. */
    char longin[300], longdig[400];
    memset(longin, '9', 256);
    longin[256] = '\0';
    T_EQ_INT(dapi_api_parse_pyint(longin, 256, &neg, longdig, sizeof longdig, &v, &big), 0);
    T_EQ_INT(strlen(longdig), 256);
    T_EQ_INT(big, 1);
    T_EQ_INT(v, INT64_MAX);
}

int main(void)
{
    test_ok();
    test_bad();
    test_len();
    test_digits_buffer();
    T_DONE();
}
