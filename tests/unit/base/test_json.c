#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "base/json.h"
#include "t.h"

/* Each helper renders one value into a fresh buffer and returns the text (static storage,
 * valid until the next call), or "<err N>". */
static char out[8192];
static size_t out_len;

static const char *finish(struct dapi_buf *b, enum dapi_err result)
{
    if(result) {
        T_CHECK(b->data == NULL, "buffer freed on error");
        snprintf(out, sizeof out, "<err %d>", (int)result);
        out_len = strlen(out);
        return out;
    }
    size_t n;
    char *p = dapi_buf_take(b, &n);
    if(!p || n >= sizeof out)
        T_CHECK(0, "take failed or output too long (%zu)", n);
    out_len = n < sizeof out ? n : sizeof out - 1;
    memcpy(out, p ? p : "", p ? out_len : 0);
    out[out_len] = '\0';
    free(p);
    return out;
}

static const char *str_n(const char *s, size_t n)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    return finish(&b, dapi_json_str(&b, s, n));
}

static const char *i64(int64_t v)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_i64(&b, v));
}

static const char *u64(uint64_t v)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_u64(&b, v));
}

static const char *i128(int64_t upper, uint64_t lower)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_i128(&b, upper, lower));
}

static const char *u128(uint64_t upper, uint64_t lower)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_u128(&b, upper, lower));
}

static const char *dec(int64_t upper, uint64_t lower, unsigned scale)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_decimal(&b, upper, lower, scale));
}

static const char *dbl(double v)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_double(&b, v));
}

static const char *flt(float v)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1024);
    return finish(&b, dapi_json_float(&b, v));
}

static const char *b64(const void *p, size_t n)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    return finish(&b, dapi_json_base64(&b, p, n));
}

static void test_str_escapes(void)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain ascii", 11, "\"plain ascii\""},
        {"\"", 1, "\"\\\"\""},
        {"\\", 1, "\"\\\\\""},
        {"\n", 1, "\"\\n\""},
        {"\r", 1, "\"\\r\""},
        {"\t", 1, "\"\\t\""},
        {"\b", 1, "\"\\b\""},
        {"\f", 1, "\"\\f\""},
        {"\0", 1, "\"\\u0000\""},
        {"\x01", 1, "\"\\u0001\""},
        {"\x0b", 1, "\"\\u000b\""},
        {"\x1f", 1, "\"\\u001f\""},
        {"\x1b[0m", 4, "\"\\u001b[0m\""},
        {"\x7f", 1, "\"\x7f\""}, /* DEL is legal in JSON strings */
        {"/", 1, "\"/\""},       /* no need to escape the solidus */
        {" ", 1, "\" \""},
        {"a\"b\\c\nd", 7, "\"a\\\"b\\\\c\\nd\""},
        {"x\0y", 3, "\"x\\u0000y\""}, /* embedded NUL does not end the string */
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(str_n(cases[i].in, cases[i].n), cases[i].want);
}

static void test_str_utf8(void)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        /* valid sequences pass through untouched */
        {"\xc3\xa9", "\"\xc3\xa9\""},                 /* e acute, 2 bytes */
        {"\xe2\x82\xac", "\"\xe2\x82\xac\""},         /* euro sign, 3 bytes */
        {"\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""}, /* emoji, 4 bytes */
        {"\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""}, /* U+10FFFF */
        {"\xed\x9f\xbf", "\"\xed\x9f\xbf\""},         /* U+D7FF, just below surrogates */
        {"\xee\x80\x80", "\"\xee\x80\x80\""},         /* U+E000, just above */
        {"\xc2\x80", "\"\xc2\x80\""},                 /* U+0080, smallest 2-byte */
        {"\xe0\xa0\x80", "\"\xe0\xa0\x80\""},         /* U+0800, smallest 3-byte */
        {"\xf0\x90\x80\x80", "\"\xf0\x90\x80\x80\""}, /* U+10000, smallest 4-byte */
        /* overlong encodings: each byte is its own maximal subpart */
        {"\xc0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xc1\xbf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xe0\x80\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xf0\x80\x80\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        /* surrogates D800-DFFF */
        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xed\xbf\xbf", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        /* beyond U+10FFFF and bytes that never start a sequence */
        {"\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xf5\x80\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xff", "\"\xef\xbf\xbd\""},
        {"\xfe", "\"\xef\xbf\xbd\""},
        {"\x80", "\"\xef\xbf\xbd\""}, /* lone continuation */
        {"a\xbf"
         "b",
         "\"a\xef\xbf\xbd"
         "b\""},
        /* truncated sequences: the valid prefix is one maximal subpart */
        {"\xe2\x82", "\"\xef\xbf\xbd\""},
        {"\xe2\x82"
         "A",
         "\"\xef\xbf\xbd"
         "A\""},
        {"\xf0\x9f\x98", "\"\xef\xbf\xbd\""},
        {"\xc3", "\"\xef\xbf\xbd\""},
        {"\xf0\x9f\x98"
         "\xf0\x9f\x98\x80",
         "\"\xef\xbf\xbd\xf0\x9f\x98\x80\""},
        /* the well-known Unicode 3.9 example: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 */
        {"a\xf1\x80\x80\xe1\x80\xc2"
         "b\x80"
         "c\x80\xbf"
         "d",
         "\"a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
         "b\xef\xbf\xbd"
         "c\xef\xbf\xbd\xef\xbf\xbd"
         "d\""},
        /* an invalid byte next to an escape */
        {"\xff\n", "\"\xef\xbf\xbd\\n\""},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(str_n(cases[i].in, strlen(cases[i].in)), cases[i].want);
}

static void test_str_long_and_cap(void)
{
    /* A long run of plain text next to escapes, and the cap being hit mid-string. */
    char in[3000];
    for(size_t i = 0; i < sizeof in; i++)
        in[i] = (char)('a' + i % 26);
    in[1500] = '\n';
    const char *got = str_n(in, sizeof in);
    T_EQ_INT(out_len, sizeof in + 3);
    T_EQ_INT(got[0], '"');
    T_CHECK(memcmp(got + 1, in, 1500) == 0, "prefix copied");
    T_CHECK(memcmp(got + 1501, "\\n", 2) == 0, "escape in the middle");
    T_CHECK(memcmp(got + 1503, in + 1501, sizeof in - 1501) == 0, "suffix copied");
    T_EQ_INT(got[out_len - 1], '"');

    struct dapi_buf b;
    dapi_buf_init(&b, 5);
    T_EQ_INT(dapi_json_str(&b, "abc", 3), DAPI_OK); /* exactly 5 bytes */
    T_EQ_STR(b.data, "\"abc\"");
    dapi_buf_free(&b);
    dapi_buf_init(&b, 5);
    T_EQ_INT(dapi_json_str(&b, "ab\n", 3), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "freed");
    dapi_buf_init(&b, 4);
    T_EQ_INT(dapi_json_str(&b, "\xff", 1), DAPI_ERR_TOO_LARGE); /* U+FFFD is 3 bytes */
    T_CHECK(b.data == NULL, "freed");
}

static void test_integers(void)
{
    T_EQ_STR(i64(0), "0");
    T_EQ_STR(i64(7), "7");
    T_EQ_STR(i64(-7), "-7");
    T_EQ_STR(i64(1000000), "1000000");
    T_EQ_STR(i64(INT64_MAX), "9223372036854775807");
    T_EQ_STR(i64(INT64_MIN), "-9223372036854775808");
    T_EQ_STR(i64(INT64_MIN + 1), "-9223372036854775807");
    T_EQ_STR(u64(0), "0");
    T_EQ_STR(u64(10), "10");
    T_EQ_STR(u64(UINT64_MAX), "18446744073709551615");

    T_EQ_STR(i128(0, 0), "0");
    T_EQ_STR(i128(-1, UINT64_MAX), "-1");
    T_EQ_STR(i128(0, UINT64_MAX), "18446744073709551615");
    T_EQ_STR(i128(1, 0), "18446744073709551616");
    T_EQ_STR(i128(-1, 0), "-18446744073709551616");
    T_EQ_STR(i128(INT64_MAX, UINT64_MAX), "170141183460469231731687303715884105727");
    T_EQ_STR(i128(INT64_MIN, 0), "-170141183460469231731687303715884105728");
    /* 10^19 and 10^19 - 1 straddle the 19-digit group boundary */
    T_EQ_STR(i128(0, 10000000000000000000u), "10000000000000000000");
    T_EQ_STR(i128(0, 9999999999999999999u), "9999999999999999999");
    /* 10^20 = 5 * 2^64 + 7766279631452241920: group with inner zeros */
    T_EQ_STR(i128(5, 7766279631452241920u), "100000000000000000000");
    T_EQ_STR(u128(0, 0), "0");
    T_EQ_STR(u128(UINT64_MAX, UINT64_MAX), "340282366920938463463374607431768211455");
    T_EQ_STR(u128(1, 0), "18446744073709551616");
}

static void test_decimal(void)
{
    static const struct {
        int64_t upper;
        uint64_t lower;
        unsigned scale;
        const char *want;
    } cases[] = {
        {0, 12345, 0, "12345"},
        {-1, (uint64_t)-12345, 0, "-12345"},
        {0, 12345, 2, "123.45"},
        {-1, (uint64_t)-12345, 2, "-123.45"},
        {0, 5, 2, "0.05"},
        {-1, (uint64_t)-5, 2, "-0.05"},
        {0, 0, 2, "0.00"},
        {0, 0, 0, "0"},
        {0, 100, 2, "1.00"},
        {0, 123, 3, "0.123"},
        {0, 1, 18, "0.000000000000000001"},
        {0, 1000000000000000000u, 18, "1.000000000000000000"},
        {0, 123456789012345678u, 18, "0.123456789012345678"},
        {-1, (uint64_t)-123456789012345678, 18, "-0.123456789012345678"},
        {INT64_MAX, UINT64_MAX, 38, "1.70141183460469231731687303715884105727"},
        {INT64_MIN, 0, 38, "-1.70141183460469231731687303715884105728"},
        {0, 1, 38, "0.00000000000000000000000000000000000001"},
        {-1, UINT64_MAX, 38, "-0.00000000000000000000000000000000000001"},
        /* 10^38 - 1 = the largest DECIMAL(38, x) value */
        {5421010862427522170, 687399551400673279u, 0, "99999999999999999999999999999999999999"},
        {5421010862427522170, 687399551400673279u, 38, "0.99999999999999999999999999999999999999"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(dec(cases[i].upper, cases[i].lower, cases[i].scale), cases[i].want);

    /* A scale beyond DuckDB's limit still gives the exact text. */
    const char *got = dec(0, 7, 200);
    T_EQ_INT(out_len, 202);
    T_CHECK(strncmp(got, "0.000", 5) == 0 && got[201] == '7' && got[200] == '0', "scale 200: %s",
            got);
}

static void test_double(void)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.1, "0.1"},
        {1 / 3.0, "0.3333333333333333"},
        {8.142857142857142, "8.142857142857142"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1e300, "1e+300"},
        {5e-324, "5e-324"},
        {-5e-324, "-5e-324"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"}, /* DBL_MIN */
        {1.7976931348623157e308, "1.7976931348623157e+308"},  /* DBL_MAX */
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {3.0, "3.0"},
        {-3.0, "-3.0"},
        {100.0, "100.0"},
        {1e15, "1e+15"},
        {1e16, "1e+16"},
        {123456789012345.0, "123456789012345.0"},
        {123456789012345680.0, "1.2345678901234568e+17"},
        {1.5e-7, "1.5e-07"},
        {-2.5, "-2.5"},
        {NAN, "null"},
        {-NAN, "null"},
        {INFINITY, "null"},
        {-INFINITY, "null"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(dbl(cases[i].v), cases[i].want);
}

/* Property check: random bit patterns render to text that parses back to the same double
 * and has at most 17 significant digits (24 characters, e.g. -1.2345678901234567e-308). */
static void test_double_roundtrip(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    int bad = 0;
    for(int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof v);
        const char *got = dbl(v);
        if(!isfinite(v)) {
            bad += strcmp(got, "null") != 0;
            continue;
        }
        char *end;
        double back = strtod(got, &end);
        if(back != v || *end || signbit(back) != signbit(v) || out_len > 24 || strchr(got, ',')) {
            if(bad++ < 5)
                fprintf(stderr, "round trip failed for %a: %s\n", v, got);
        }
    }
    T_EQ_INT(bad, 0);
}

static void test_float(void)
{
    static const struct {
        float v;
        const char *want;
    } cases[] = {
        {1.1f, "1.1"},
        {0.1f, "0.1"},
        {3.4028235e38f, "3.4028235e+38"},   /* FLT_MAX */
        {1.17549435e-38f, "1.1754944e-38"}, /* FLT_MIN */
        {1e-45f, "1e-45"},                  /* smallest subnormal */
        {16777216.0f, "16777216.0"},
        {3.0f, "3.0"},
        {-0.0f, "-0.0"},
        {0.3f, "0.3"},
        {1.0f / 3.0f, "0.33333334"},
        {NAN, "null"},
        {INFINITY, "null"},
        {-INFINITY, "null"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(flt(cases[i].v), cases[i].want);

    uint32_t x = 2463534242u;
    int bad = 0;
    for(int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        float v;
        memcpy(&v, &x, sizeof v);
        const char *got = flt(v);
        if(!isfinite(v))
            continue;
        if(strtof(got, NULL) != v || out_len > 16) {
            if(bad++ < 5)
                fprintf(stderr, "float round trip failed for %a: %s\n", (double)v, got);
        }
    }
    T_EQ_INT(bad, 0);
}

static void test_base64(void)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"", "\"\""},
        {"f", "\"Zg==\""},
        {"fo", "\"Zm8=\""},
        {"foo", "\"Zm9v\""},
        {"foob", "\"Zm9vYg==\""},
        {"fooba", "\"Zm9vYmE=\""},
        {"foobar", "\"Zm9vYmFy\""},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        T_EQ_STR(b64(cases[i].in, strlen(cases[i].in)), cases[i].want);

    /* The two non-alphanumeric letters of the alphabet: 62 = '+', 63 = '/'. */
    T_EQ_STR(b64("\xfb\xef\xbe", 3), "\"++++\"");
    T_EQ_STR(b64("\xff\xff\xff", 3), "\"////\"");
    T_EQ_STR(b64("\0\0", 2), "\"AAA=\"");

    /* Long input spanning the internal chunking, for every tail length. */
    for(size_t n = 3000; n < 3003; n++) {
        static unsigned char in[3003];
        for(size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 7 + 3);
        const char *got = b64(in, n);
        T_EQ_INT(out_len, (n + 2) / 3 * 4 + 2);
        /* Decode and compare so that a mistake anywhere in the middle is caught. */
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t j = 0, ok = 1;
        for(size_t k = 1; k + 4 < out_len + 1 && ok; k += 4) {
            uint32_t w = 0;
            int pad = 0;
            for(int q = 0; q < 4; q++) {
                const char *pos = strchr(alphabet, got[k + q]);
                if(got[k + q] == '=') {
                    pad++;
                    w <<= 6;
                } else if(pos && got[k + q]) {
                    w = w << 6 | (uint32_t)(pos - alphabet);
                } else {
                    ok = 0;
                }
            }
            for(int q = 0; q < 3 - pad && ok; q++)
                ok = j < n && in[j++] == (unsigned char)(w >> (16 - 8 * q));
        }
        T_CHECK(ok && j == n, "base64 of %zu bytes decodes back (%zu)", n, j);
    }

    struct dapi_buf b;
    dapi_buf_init(&b, 8);
    T_EQ_INT(dapi_json_base64(&b, "foob", 4), DAPI_ERR_TOO_LARGE); /* needs 10 */
    T_CHECK(b.data == NULL, "freed");
}

static void test_append_and_errors(void)
{
    /* The writers append; they do not reset. */
    struct dapi_buf b;
    dapi_buf_init(&b, 64);
    T_EQ_INT(dapi_buf_addc(&b, '['), DAPI_OK);
    T_EQ_INT(dapi_json_i64(&b, -1), DAPI_OK);
    T_EQ_INT(dapi_buf_addc(&b, ','), DAPI_OK);
    T_EQ_INT(dapi_json_double(&b, 2.5), DAPI_OK);
    T_EQ_INT(dapi_buf_addc(&b, ','), DAPI_OK);
    T_EQ_INT(dapi_json_str(&b, "x", 1), DAPI_OK);
    T_EQ_INT(dapi_buf_addc(&b, ']'), DAPI_OK);
    T_EQ_STR(b.data, "[-1,2.5,\"x\"]");
    dapi_buf_free(&b);

    /* Every writer reports the cap and frees. */
    static const char *const names[] = {"i64",     "u64",    "i128", "u128",
                                        "decimal", "double", "float"};
    for(int k = 0; k < 7; k++) {
        dapi_buf_init(&b, 3);
        enum dapi_err result = DAPI_OK;
        switch(k) {
        case 0: result = dapi_json_i64(&b, -1000); break;
        case 1: result = dapi_json_u64(&b, 1000); break;
        case 2: result = dapi_json_i128(&b, 0, 1000); break;
        case 3: result = dapi_json_u128(&b, 0, 1000); break;
        case 4: result = dapi_json_decimal(&b, 0, 1000, 2); break;
        case 5: result = dapi_json_double(&b, 0.125); break;
        case 6: result = dapi_json_float(&b, 0.125f); break;
        }
        T_CHECK(result == DAPI_ERR_TOO_LARGE && b.data == NULL, "%s: cap 3 -> %d", names[k],
                (int)result);
    }
}

int main(void)
{
    test_str_escapes();
    test_str_utf8();
    test_str_long_and_cap();
    test_integers();
    test_decimal();
    test_double();
    test_double_roundtrip();
    test_float();
    test_base64();
    test_append_and_errors();
    T_DONE();
}
