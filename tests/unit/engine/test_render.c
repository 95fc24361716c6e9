#include <math.h>
#include <stdlib.h>

#include "base/json.h"
#include "engine/render.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The expectations below spell errors as "<err N>". */
_Static_assert(DAPI_ERR_TOO_LARGE == 3 && DAPI_ERR_INTERNAL == 13, "error codes moved");

static char out[16384];

/* Renders one value into a fresh buffer; returns the text (static, valid until the next
 * call) or "<err N>" after checking that the failed buffer was freed. */
static const char *rv(const struct dapi_colvec *c, uint64_t row)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    enum dapi_err result = dapi_render_value(&b, c, row);
    if(result) {
        if(b.data)
            T_CHECK(0, "buffer not freed after error %d", (int)result);
        snprintf(out, sizeof out, "<err %d>", (int)result);
        return out;
    }
    size_t n;
    char *p = dapi_buf_take(&b, &n);
    if(!p || n >= sizeof out || strlen(p) != n)
        T_CHECK(0, "bad output (len %zu)", n);
    snprintf(out, sizeof out, "%s", p ? p : "");
    free(p);
    return out;
}

static struct dapi_colvec col(enum dapi_ctype type, const void *data)
{
    struct dapi_colvec c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.data = data;
    return c;
}

/* DuckDB's string layout: inline up to 12 bytes, else length + 4-byte prefix + pointer. */
static struct dapi_dstr dstr_n(const char *s, size_t n)
{
    struct dapi_dstr d;
    memset(&d, 0, sizeof d);
    d.value.inlined.length = (uint32_t)n;
    if(n <= 12) {
        memcpy(d.value.inlined.inlined, s, n);
    } else {
        memcpy(d.value.pointer.prefix, s, 4);
        d.value.pointer.ptr = s;
    }
    return d;
}

static struct dapi_dstr dstr(const char *s)
{
    return dstr_n(s, strlen(s));
}

/* A flat column of `rows` values checked row by row against `want`. */
struct flat_case {
    enum dapi_ctype type;
    const void *data;
    size_t rows;
    const char *want[8];
};

static void check_flat(const struct flat_case *cases, size_t n)
{
    for(size_t i = 0; i < n; i++) {
        struct dapi_colvec c = col(cases[i].type, cases[i].data);
        for(size_t r = 0; r < cases[i].rows; r++) {
            const char *got = rv(&c, r);
            T_CHECK(strcmp(got, cases[i].want[r]) == 0,
                    "case %zu (type %d) row %zu: got [%s] "
                    "want [%s]",
                    i, (int)cases[i].type, r, got, cases[i].want[r]);
        }
    }
}

static void test_numbers(void)
{
    static const uint8_t b[] = {1, 0, 2};
    static const int8_t i8[] = {-128, 127, 0};
    static const int16_t i16[] = {-32768, 32767};
    static const int32_t i32[] = {INT32_MIN, INT32_MAX, -1};
    static const int64_t i64[] = {INT64_MIN, INT64_MAX};
    static const uint8_t u8[] = {255, 0};
    static const uint16_t u16[] = {65535};
    static const uint32_t u32[] = {4294967295u};
    static const uint64_t u64[] = {UINT64_MAX, 0};
    static const struct dapi_i128 i128[] = {
        {0, INT64_MIN}, {UINT64_MAX, INT64_MAX}, {UINT64_MAX, -1}, {0, 1}};
    static const struct dapi_u128 u128[] = {{UINT64_MAX, UINT64_MAX}, {0, 1}};
    static const float f32[] = {1.1f, NAN, 3.0f, -INFINITY};
    static const double f64[] = {0.1, 3.0, INFINITY, 5e-324, -0.0};
    static const struct flat_case cases[] = {
        {DAPI_CT_BOOL, b, 3, {"true", "false", "true"}},
        {DAPI_CT_I8, i8, 3, {"-128", "127", "0"}},
        {DAPI_CT_I16, i16, 2, {"-32768", "32767"}},
        {DAPI_CT_I32, i32, 3, {"-2147483648", "2147483647", "-1"}},
        {DAPI_CT_I64, i64, 2, {"-9223372036854775808", "9223372036854775807"}},
        {DAPI_CT_U8, u8, 2, {"255", "0"}},
        {DAPI_CT_U16, u16, 1, {"65535"}},
        {DAPI_CT_U32, u32, 1, {"4294967295"}},
        {DAPI_CT_U64, u64, 2, {"18446744073709551615", "0"}},
        {DAPI_CT_I128,
         i128,
         4,
         {"-170141183460469231731687303715884105728", "170141183460469231731687303715884105727",
          "-1", "18446744073709551616"}},
        {DAPI_CT_U128,
         u128,
         2,
         {"340282366920938463463374607431768211455", "18446744073709551616"}},
        {DAPI_CT_F32, f32, 4, {"1.1", "null", "3.0", "null"}},
        {DAPI_CT_F64, f64, 5, {"0.1", "3.0", "null", "5e-324", "-0.0"}},
    };
    check_flat(cases, N(cases));
}

static void test_decimal(void)
{
    static const int16_t d16[] = {-5, 12345, 0};
    static const int32_t d32[] = {-123456789, 100};
    static const int64_t d64[] = {INT64_MIN, 1};
    /* 10^38 - 1 and its negation */
    static const struct dapi_i128 d128[] = {{687399551400673279u, 5421010862427522170},
                                            {(uint64_t)-687399551400673279, -5421010862427522171},
                                            {5, 0}};
    static const struct {
        enum dapi_ctype phys;
        const void *data;
        uint8_t scale;
        size_t rows;
        const char *want[3];
    } cases[] = {
        {DAPI_CT_I16, d16, 2, 3, {"-0.05", "123.45", "0.00"}},
        {DAPI_CT_I16, d16, 0, 2, {"-5", "12345"}},
        {DAPI_CT_I32, d32, 4, 2, {"-12345.6789", "0.0100"}},
        {DAPI_CT_I64, d64, 18, 2, {"-9.223372036854775808", "0.000000000000000001"}},
        {DAPI_CT_I128,
         d128,
         38,
         3,
         {"0.99999999999999999999999999999999999999", "-0.99999999999999999999999999999999999999",
          "0.00000000000000000000000000000000000005"}},
        {DAPI_CT_I128,
         d128,
         0,
         2,
         {"99999999999999999999999999999999999999", "-99999999999999999999999999999999999999"}},
    };
    for(size_t i = 0; i < N(cases); i++) {
        struct dapi_colvec c = col(DAPI_CT_DECIMAL, cases[i].data);
        c.phys = cases[i].phys;
        c.scale = cases[i].scale;
        for(size_t r = 0; r < cases[i].rows; r++)
            T_EQ_STR(rv(&c, r), cases[i].want[r]);
    }
    struct dapi_colvec bad = col(DAPI_CT_DECIMAL, d16);
    bad.phys = DAPI_CT_F64;
    T_EQ_STR(rv(&bad, 0), "<err 13>");
}

/* Integers and 64-bit decimals are written straight into the buffer: the same text as the
 * reference writers (dapi_json_i64, dapi_json_decimal) for every scale 0..38 and values
 * around each power of ten, both when the buffer has room in place and when it must grow
 * (each value appended to one buffer, first empty), and at a cap that ends inside a number. */
static void test_numbers_in_place(void)
{
    int64_t vals[140];
    size_t nv = 0;
    uint64_t p10 = 1;
    for(int k = 0; k < 19; k++, p10 *= 10) {
        int64_t p = (int64_t)p10;
        int64_t around[] = {p - 1, p, p + 1, -p + 1, -p, -p - 1};
        for(size_t i = 0; i < N(around) && nv < N(vals); i++)
            vals[nv++] = around[i];
    }
    int64_t edges[] = {0, INT64_MAX, INT64_MIN, INT64_MIN + 1, 9223372036854775807LL / 3};
    for(size_t i = 0; i < N(edges) && nv < N(vals); i++)
        vals[nv++] = edges[i];
    int all_same = 1;
    for(unsigned scale = 0; scale <= 38; scale++) {
        struct dapi_buf got, want;
        dapi_buf_init(&got, 1 << 20);
        dapi_buf_init(&want, 1 << 20);
        struct dapi_colvec dec = col(DAPI_CT_DECIMAL, vals), i64 = col(DAPI_CT_I64, vals);
        dec.phys = DAPI_CT_I64;
        dec.scale = (uint8_t)scale;
        int errs = 0;
        for(size_t r = 0; r < nv; r++) {
            errs += dapi_render_value(&got, &dec, r) != DAPI_OK;
            errs += dapi_render_value(&got, &i64, r) != DAPI_OK;
            dapi_json_decimal(&want, vals[r] < 0 ? -1 : 0, (uint64_t)vals[r], scale);
            dapi_json_i64(&want, vals[r]);
        }
        T_EQ_INT(errs, 0);
        if(got.len != want.len || memcmp(got.data, want.data, got.len) != 0 ||
           got.data[got.len] != '\0') {
            all_same = 0;
            T_CHECK(0, "scale %u: got [%.200s] want [%.200s]", scale, got.data, want.data);
        }
        dapi_buf_free(&got);
        dapi_buf_free(&want);
    }
    T_CHECK(all_same, "every value at every scale as the reference writes it");
    /* a cap that ends inside the number: the buffer fails (and is freed), never overruns */
    static const int64_t big[] = {-1234567890123456789LL};
    struct dapi_colvec c = col(DAPI_CT_DECIMAL, big);
    c.phys = DAPI_CT_I64;
    c.scale = 5;
    for(size_t cap = 0; cap < 22; cap++) {
        struct dapi_buf b;
        dapi_buf_init(&b, cap);
        enum dapi_err e = dapi_render_value(&b, &c, 0);
        T_CHECK(cap >= 21 ? e == DAPI_OK && b.len == 21 : e == DAPI_ERR_TOO_LARGE && !b.data,
                "cap %zu: error %d, length %zu", cap, (int)e, b.len);
        dapi_buf_free(&b);
    }
}

static void test_strings(void)
{
    static const char long_s[] = "a string longer than twelve bytes";
    static const char thirteen[] = "abcdefghijklm";
    static const char long_esc[] = "line one\nline \"two\" \xe2\x82\xac";
    static const char bad_utf8[] = "\xc0\x80 overlong and more";
    struct dapi_dstr v[] = {
        dstr(""),     dstr("hello"),      dstr("abcdefghijkl"), dstr(thirteen),
        dstr(long_s), dstr("a\"b\\c\td"), dstr(long_esc),       dstr(bad_utf8),
    };
    static const char *const want[] = {
        "\"\"",
        "\"hello\"",
        "\"abcdefghijkl\"",
        "\"abcdefghijklm\"",
        "\"a string longer than twelve bytes\"",
        "\"a\\\"b\\\\c\\td\"",
        "\"line one\\nline \\\"two\\\" \xe2\x82\xac\"",
        "\"\xef\xbf\xbd\xef\xbf\xbd overlong and more\"",
    };
    struct dapi_colvec c = col(DAPI_CT_VARCHAR, v);
    for(size_t r = 0; r < N(v); r++)
        T_EQ_STR(rv(&c, r), want[r]);

    /* The pointer form must be read through the pointer, not the prefix: point at
     * different bytes than the prefix says. */
    struct dapi_dstr odd = dstr(long_s);
    memcpy(odd.value.pointer.prefix, "XXXX", 4);
    c.data = &odd;
    T_EQ_STR(rv(&c, 0), "\"a string longer than twelve bytes\"");
    /* An inline string ignores bytes after its length. */
    struct dapi_dstr in = dstr("abc");
    memcpy(in.value.inlined.inlined + 3, "ZZZ", 3);
    c.data = &in;
    T_EQ_STR(rv(&c, 0), "\"abc\"");

    struct dapi_dstr blobs[] = {
        dstr_n("foobar", 6),
        dstr_n("", 0),
        dstr_n("\0\xff\x10", 3),
        dstr_n("0123456789abcdefgh", 18),
    };
    static const char *const bwant[] = {
        "\"Zm9vYmFy\"",
        "\"\"",
        "\"AP8Q\"",
        "\"MDEyMzQ1Njc4OWFiY2RlZmdo\"",
    };
    c = col(DAPI_CT_BLOB, blobs);
    for(size_t r = 0; r < N(blobs); r++)
        T_EQ_STR(rv(&c, r), bwant[r]);
}

static void test_bit(void)
{
    /* DuckDB pads the first data byte with 1-bits; the renderer must skip them by count. */
    struct dapi_dstr bits[] = {
        dstr_n("\x04\xf5", 2),                                                  /* 0101 */
        dstr_n("\x00\xa5", 2),                                                  /* 10100101 */
        dstr_n("\x07\xff\x55", 3),                                              /* 1 01010101 */
        dstr_n("\x07\xfe\x00", 3),                                              /* 0 00000000 */
        dstr_n("\x00", 1),                                                      /* empty */
        dstr_n("\x03\xe0\x0f\xf0\x00\xff\x81\x42\x24\x18\x99\x66\xc3\x3c", 14), /* pointer */
    };
    static const char *const want[] = {
        "\"0101\"",
        "\"10100101\"",
        "\"101010101\"",
        "\"000000000\"",
        "\"\"",
        "\"00000\" \"00001111\" \"11110000\" \"00000000\" \"11111111\" \"10000001\" "
        "\"01000010\" \"00100100\" \"00011000\" \"10011001\" \"01100110\" \"11000011\" "
        "\"00111100\"",
    };
    struct dapi_colvec c = col(DAPI_CT_BIT, bits);
    for(size_t r = 0; r < N(bits); r++) {
        /* the last expectation is written in groups for readability; strip the separators */
        char w[256];
        size_t o = 0;
        w[o++] = '"';
        for(const char *p = want[r] + 1; *p; p++)
            if(*p == '0' || *p == '1')
                w[o++] = *p;
        w[o++] = '"';
        w[o] = '\0';
        T_EQ_STR(rv(&c, r), w);
    }
}

/* Every day from year -221 (day -800000) to 10000-01-01 against a naive day-by-day calendar
 * walk, which shares no arithmetic with the renderer's civil-from-days. */
static void test_dates_walk(void)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = 1970, m = 1, d = 1;
    const int32_t first = -800000;
    for(int32_t z = 0; z > first; z--) {
        if(--d == 0) {
            if(--m == 0) {
                m = 12;
                y--;
            }
            int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            d = mdays[m - 1] + (m == 2 && leap);
        }
    }
    int bad = 0;
    struct dapi_buf b;
    dapi_buf_init(&b, 64);
    int32_t v;
    struct dapi_colvec c = col(DAPI_CT_DATE, &v);
    for(v = first; v <= 2932897; v++) {
        char want[32];
        if(y >= 0 && y <= 9999)
            snprintf(want, sizeof want, "\"%04d-%02d-%02d\"", y, m, d);
        else
            snprintf(want, sizeof want, "\"%c%04d-%02d-%02d\"", y < 0 ? '-' : '+', y < 0 ? -y : y,
                     m, d);
        dapi_buf_reset(&b);
        if(dapi_render_value(&b, &c, 0) || strcmp(b.data, want) != 0) {
            if(bad++ < 5)
                fprintf(stderr, "day %d: got %s want %s\n", (int)v, b.data ? b.data : "-", want);
        }
        int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        if(++d > mdays[m - 1] + (m == 2 && leap)) {
            d = 1;
            if(++m > 12) {
                m = 1;
                y++;
            }
        }
    }
    dapi_buf_free(&b);
    T_EQ_INT(bad, 0);
    T_EQ_INT(y, 10000); /* the walk ended on 10000-01-02 */
    T_EQ_INT(d, 2);
}

static void test_dates_times(void)
{
    static const int32_t dates[] = {
        0,       19723,   -1,      -719528, 19782,   11016,     -25508,
        2932896, 2932897, -735525, -719529, -719162, INT32_MAX, -INT32_MAX,
    };
    static const char *const dwant[] = {
        "\"1970-01-01\"",   "\"2024-01-01\"",  "\"1969-12-31\"",  "\"0000-01-01\"",
        "\"2024-02-29\"",   "\"2000-02-29\"",  "\"1900-03-01\"",  "\"9999-12-31\"",
        "\"+10000-01-01\"", "\"-0044-03-15\"", "\"-0001-12-31\"", "\"0001-01-01\"",
        "\"infinity\"",     "\"-infinity\"",
    };
    struct dapi_colvec c = col(DAPI_CT_DATE, dates);
    for(size_t r = 0; r < N(dates); r++)
        T_EQ_STR(rv(&c, r), dwant[r]);
    /* INT32_MIN is a real (very early) date, not an infinity */
    static const int32_t dmin[] = {INT32_MIN};
    c.data = dmin;
    T_EQ_STR(rv(&c, 0), "\"-5877641-06-23\"");

    static const int64_t times[] = {
        0, 43200500000, 86399999999, 1, 86400000000, 3723000000, 45296120000,
    };
    static const char *const twant[] = {
        "\"00:00:00\"", "\"12:00:00.5\"", "\"23:59:59.999999\"", "\"00:00:00.000001\"",
        "\"24:00:00\"", "\"01:02:03\"",   "\"12:34:56.12\"",
    };
    c = col(DAPI_CT_TIME, times);
    for(size_t r = 0; r < N(times); r++)
        T_EQ_STR(rv(&c, r), twant[r]);
}

static void test_timestamps(void)
{
    static const int64_t us[] = {
        0,         -1,         1704067200123456, 1704067199999999, -62167219200000000,
        INT64_MAX, -INT64_MAX, INT64_MIN,        INT64_MAX - 1,    951782400000000,
    };
    static const int64_t s[] = {1704067200, -1, -86400, INT64_MIN, INT64_MAX, -INT64_MAX};
    static const int64_t ms[] = {-1, 1704067200123, -1001};
    static const int64_t ns[] = {-1, 1704067200123456789, 999999, -1000000};
    static const struct flat_case cases[] = {
        {DAPI_CT_TIMESTAMP,
         us,
         8,
         {"\"1970-01-01T00:00:00.000\"", "\"1969-12-31T23:59:59.999\"",
          "\"2024-01-01T00:00:00.123\"", "\"2023-12-31T23:59:59.999\"",
          "\"0000-01-01T00:00:00.000\"", "\"infinity\"", "\"-infinity\"",
          "\"-290308-12-21T19:59:05.224\""}},
        {DAPI_CT_TIMESTAMP_S,
         s,
         6,
         {"\"2024-01-01T00:00:00.000\"", "\"1969-12-31T23:59:59.000\"",
          "\"1969-12-31T00:00:00.000\"", NULL, "\"infinity\"", "\"-infinity\""}},
        {DAPI_CT_TIMESTAMP_MS,
         ms,
         3,
         {"\"1969-12-31T23:59:59.999\"", "\"2024-01-01T00:00:00.123\"",
          "\"1969-12-31T23:59:58.999\""}},
        {DAPI_CT_TIMESTAMP_NS,
         ns,
         4,
         {"\"1969-12-31T23:59:59.999\"", "\"2024-01-01T00:00:00.123\"",
          "\"1970-01-01T00:00:00.000\"", "\"1969-12-31T23:59:59.999\""}},
        {DAPI_CT_TIMESTAMP_TZ,
         us,
         7,
         {"\"1970-01-01T00:00:00.000Z\"", "\"1969-12-31T23:59:59.999Z\"",
          "\"2024-01-01T00:00:00.123Z\"", "\"2023-12-31T23:59:59.999Z\"",
          "\"0000-01-01T00:00:00.000Z\"", "\"infinity\"", "\"-infinity\""}},
    };
    for(size_t i = 0; i < N(cases); i++) {
        struct dapi_colvec c = col(cases[i].type, cases[i].data);
        for(size_t r = 0; r < cases[i].rows; r++)
            if(cases[i].want[r])
                T_CHECK(strcmp(rv(&c, r), cases[i].want[r]) == 0, "case %zu row %zu: [%s]", i, r,
                        out);
    }
    struct dapi_colvec c = col(DAPI_CT_TIMESTAMP, us);
    T_EQ_STR(rv(&c, 8), "\"+294247-01-10T04:00:54.775\"");
    T_EQ_STR(rv(&c, 9), "\"2000-02-29T00:00:00.000\"");
    /* Extreme second counts must not overflow (checked by UBSan) and stay well-formed. */
    c = col(DAPI_CT_TIMESTAMP_S, s);
    const char *got = rv(&c, 3);
    T_CHECK(got[0] == '"' && got[1] == '-' && strstr(got, ".000\"") != NULL, "%s", got);
}

static void test_interval(void)
{
    static const struct dapi_interval iv[] = {
        {14, 3, 4 * 3600000000LL + 5 * 60000000LL + 6500000},
        {0, 0, 0},
        {0, -1, -2 * 3600000000LL},
        {-14, 0, 0},
        {0, 0, -500000},
        {1, 0, 0},
        {0, 0, 60000000},
        {0, 0, 1},
        {12, 0, 0},
        {0, 7, 0},
        {0, 0, 3600000000LL * 25},
        {0, 0, -(3600000000LL + 1500000)},
        {0, 0, 10000000},
    };
    static const char *const want[] = {
        "\"P1Y2M3DT4H5M6.5S\"",
        "\"PT0S\"",
        "\"P-1DT-2H\"",
        "\"P-1Y-2M\"",
        "\"PT-0.5S\"",
        "\"P1M\"",
        "\"PT1M\"",
        "\"PT0.000001S\"",
        "\"P1Y\"",
        "\"P7D\"",
        "\"PT25H\"",
        "\"PT-1H-1.5S\"",
        "\"PT10S\"",
    };
    struct dapi_colvec c = col(DAPI_CT_INTERVAL, iv);
    for(size_t r = 0; r < N(iv); r++)
        T_EQ_STR(rv(&c, r), want[r]);
    /* Extreme components do not overflow. */
    static const struct dapi_interval ext[] = {{INT32_MIN, INT32_MIN, INT64_MIN}};
    c.data = ext;
    T_EQ_STR(rv(&c, 0), "\"P-178956970Y-8M-2147483648DT-2562047788H-54.775808S\"");
}

/* Stores a UUID the way DuckDB does: the 128-bit big-endian value with the top bit flipped. */
static struct dapi_i128 uuid_store(uint64_t hi, uint64_t lo)
{
    struct dapi_i128 v = {lo, (int64_t)(hi ^ ((uint64_t)1 << 63))};
    return v;
}

static void test_uuid(void)
{
    struct dapi_i128 u[] = {
        uuid_store(0x550e8400e29b41d4u, 0xa716446655440000u),
        uuid_store(0, 0),
        uuid_store(UINT64_MAX, UINT64_MAX),
        uuid_store(0x0123456789abcdefu, 0xfedcba9876543210u),
    };
    static const char *const want[] = {
        "\"550e8400-e29b-41d4-a716-446655440000\"",
        "\"00000000-0000-0000-0000-000000000000\"",
        "\"ffffffff-ffff-ffff-ffff-ffffffffffff\"",
        "\"01234567-89ab-cdef-fedc-ba9876543210\"",
    };
    T_EQ_INT(u[1].upper, INT64_MIN); /* the nil UUID is stored as the smallest value */
    struct dapi_colvec c = col(DAPI_CT_UUID, u);
    for(size_t r = 0; r < N(u); r++)
        T_EQ_STR(rv(&c, r), want[r]);
}

static void test_enum(void)
{
    static const char *const names[] = {"red", "green", "bl\"ue"};
    static const uint8_t i8[] = {2, 0, 3};
    static const uint16_t i16[] = {1};
    static const uint32_t i32[] = {0};
    struct dapi_colvec c = col(DAPI_CT_ENUM, i8);
    c.enum_values = names;
    c.n_enum = 3;
    c.phys = DAPI_CT_U8;
    T_EQ_STR(rv(&c, 0), "\"bl\\\"ue\"");
    T_EQ_STR(rv(&c, 1), "\"red\"");
    T_EQ_STR(rv(&c, 2), "<err 13>"); /* index out of the dictionary */
    c.phys = DAPI_CT_U16;
    c.data = i16;
    T_EQ_STR(rv(&c, 0), "\"green\"");
    c.phys = DAPI_CT_U32;
    c.data = i32;
    T_EQ_STR(rv(&c, 0), "\"red\"");
    uint64_t valid = 0;
    c.validity = &valid;
    T_EQ_STR(rv(&c, 0), "null");
}

static void test_validity(void)
{
    static int32_t v[130];
    for(int i = 0; i < 130; i++)
        v[i] = i;
    /* rows 1, 64 and 129 are NULL: checks both the bit and the word index */
    uint64_t valid[3] = {~(uint64_t)2, ~(uint64_t)1, ~(uint64_t)2};
    struct dapi_colvec c = col(DAPI_CT_I32, v);
    c.validity = valid;
    static const struct {
        uint64_t row;
        const char *want;
    } cases[] = {
        {0, "0"},     {1, "null"}, {2, "2"},     {63, "63"},
        {64, "null"}, {65, "65"},  {128, "128"}, {129, "null"},
    };
    for(size_t i = 0; i < N(cases); i++)
        T_EQ_STR(rv(&c, cases[i].row), cases[i].want);

    /* NULL for every type, even ones whose data would be invalid to read */
    uint64_t none = 0;
    for(int t = DAPI_CT_BOOL; t <= DAPI_CT_UNION; t++) {
        struct dapi_colvec n = col((enum dapi_ctype)t, NULL);
        n.validity = &none;
        T_CHECK(strcmp(rv(&n, 0), "null") == 0, "type %d null: %s", t, out);
    }
}

static void test_list_and_array(void)
{
    static const int32_t elems[] = {1, 2, 3, 4, 5, 6};
    uint64_t evalid = ~(uint64_t)2; /* element 1 is NULL */
    struct dapi_colvec child = col(DAPI_CT_I32, elems);
    child.validity = &evalid;
    static const struct dapi_list_entry entries[] = {{0, 3}, {3, 0}, {0, 0}, {4, 2}};
    uint64_t lvalid = ~(uint64_t)4; /* row 2 is NULL */
    struct dapi_colvec list = col(DAPI_CT_LIST, entries);
    list.validity = &lvalid;
    list.children = &child;
    list.nchildren = 1;
    T_EQ_STR(rv(&list, 0), "[1,null,3]");
    T_EQ_STR(rv(&list, 1), "[]");
    T_EQ_STR(rv(&list, 2), "null");
    T_EQ_STR(rv(&list, 3), "[5,6]");

    /* ARRAY(INT, 3): row r is elements 3r..3r+2 */
    struct dapi_colvec arr = col(DAPI_CT_ARRAY, NULL);
    arr.children = &child;
    arr.nchildren = 1;
    arr.array_size = 3;
    T_EQ_STR(rv(&arr, 0), "[1,null,3]");
    T_EQ_STR(rv(&arr, 1), "[4,5,6]");
    uint64_t avalid = ~(uint64_t)1;
    arr.validity = &avalid;
    T_EQ_STR(rv(&arr, 0), "null");

    /* LIST of LIST of VARCHAR, with a NULL inner list */
    struct dapi_dstr strs[] = {dstr("a"), dstr("bb"), dstr("a much longer string here")};
    struct dapi_colvec s = col(DAPI_CT_VARCHAR, strs);
    static const struct dapi_list_entry inner_e[] = {{0, 2}, {0, 0}, {2, 1}};
    uint64_t ivalid = ~(uint64_t)2;
    struct dapi_colvec inner = col(DAPI_CT_LIST, inner_e);
    inner.validity = &ivalid;
    inner.children = &s;
    inner.nchildren = 1;
    static const struct dapi_list_entry outer_e[] = {{0, 3}, {2, 1}};
    struct dapi_colvec outer = col(DAPI_CT_LIST, outer_e);
    outer.children = &inner;
    outer.nchildren = 1;
    T_EQ_STR(rv(&outer, 0), "[[\"a\",\"bb\"],null,[\"a much longer string here\"]]");
    T_EQ_STR(rv(&outer, 1), "[[\"a much longer string here\"]]");
}

static void test_struct(void)
{
    static const int32_t ids[] = {1, 2, 3, 4};
    struct dapi_dstr names[] = {dstr("x"), dstr("y\n"), dstr(""), dstr("a name over twelve")};
    uint64_t nvalid = ~(uint64_t)2; /* name of row 1 is NULL */
    static const char *const fields[] = {"id", "na\"me"};
    struct dapi_colvec kids[2] = {col(DAPI_CT_I32, ids), col(DAPI_CT_VARCHAR, names)};
    kids[1].validity = &nvalid;
    struct dapi_colvec st = col(DAPI_CT_STRUCT, NULL);
    st.children = kids;
    st.nchildren = 2;
    st.child_names = fields;
    uint64_t svalid = ~(uint64_t)4; /* struct row 2 is NULL */
    st.validity = &svalid;
    T_EQ_STR(rv(&st, 0), "{\"id\":1,\"na\\\"me\":\"x\"}");
    T_EQ_STR(rv(&st, 1), "{\"id\":2,\"na\\\"me\":null}");
    T_EQ_STR(rv(&st, 2), "null");

    /* LIST of STRUCT: the struct's rows are addressed through the list entries */
    static const struct dapi_list_entry e[] = {{1, 3}, {3, 1}, {0, 0}};
    struct dapi_colvec list = col(DAPI_CT_LIST, e);
    list.children = &st;
    list.nchildren = 1;
    T_EQ_STR(rv(&list, 0), "[{\"id\":2,\"na\\\"me\":null},null,"
                           "{\"id\":4,\"na\\\"me\":\"a name over twelve\"}]");
    T_EQ_STR(rv(&list, 1), "[{\"id\":4,\"na\\\"me\":\"a name over twelve\"}]");
    T_EQ_STR(rv(&list, 2), "[]");

    /* STRUCT holding a LIST */
    static const int64_t nums[] = {10, 20};
    struct dapi_colvec nk = col(DAPI_CT_I64, nums);
    static const struct dapi_list_entry le[] = {{0, 2}};
    struct dapi_colvec l = col(DAPI_CT_LIST, le);
    l.children = &nk;
    l.nchildren = 1;
    static const char *const f1[] = {"xs"};
    struct dapi_colvec s2 = col(DAPI_CT_STRUCT, NULL);
    s2.children = &l;
    s2.nchildren = 1;
    s2.child_names = f1;
    T_EQ_STR(rv(&s2, 0), "{\"xs\":[10,20]}");

    /* empty struct */
    struct dapi_colvec s0 = col(DAPI_CT_STRUCT, NULL);
    T_EQ_STR(rv(&s0, 0), "{}");
}

static void test_map(void)
{
    struct dapi_dstr keys[] = {dstr("k1"), dstr("k\"2"), dstr("a key longer than 12")};
    static const int32_t vals[] = {1, 2, 3};
    uint64_t vvalid = ~(uint64_t)2;
    static const char *const kv_names[] = {"key", "value"};
    struct dapi_colvec kv_kids[2] = {col(DAPI_CT_VARCHAR, keys), col(DAPI_CT_I32, vals)};
    kv_kids[1].validity = &vvalid;
    struct dapi_colvec kv = col(DAPI_CT_STRUCT, NULL);
    kv.children = kv_kids;
    kv.nchildren = 2;
    kv.child_names = kv_names;
    static const struct dapi_list_entry e[] = {{0, 3}, {0, 0}, {2, 1}};
    uint64_t mvalid = ~(uint64_t)0 ^ 2; /* row 1 is NULL */
    struct dapi_colvec map = col(DAPI_CT_MAP, e);
    map.children = &kv;
    map.nchildren = 1;
    map.validity = &mvalid;
    T_EQ_STR(rv(&map, 0), "{\"k1\":1,\"k\\\"2\":null,\"a key longer than 12\":3}");
    T_EQ_STR(rv(&map, 1), "null");
    T_EQ_STR(rv(&map, 2), "{\"a key longer than 12\":3}");
    map.validity = NULL;
    T_EQ_STR(rv(&map, 1), "{}");

    /* Non-VARCHAR keys: an array of {"key":..,"value":..} objects */
    static const int64_t ikeys[] = {7, -8};
    struct dapi_dstr svals[] = {dstr("seven"), dstr("minus eight!!")};
    struct dapi_colvec ikv_kids[2] = {col(DAPI_CT_I64, ikeys), col(DAPI_CT_VARCHAR, svals)};
    struct dapi_colvec ikv = kv;
    ikv.children = ikv_kids;
    static const struct dapi_list_entry ie[] = {{0, 2}, {0, 0}};
    struct dapi_colvec imap = col(DAPI_CT_MAP, ie);
    imap.children = &ikv;
    imap.nchildren = 1;
    T_EQ_STR(rv(&imap, 0),
             "[{\"key\":7,\"value\":\"seven\"},{\"key\":-8,\"value\":\"minus eight!!\"}]");
    T_EQ_STR(rv(&imap, 1), "[]");

    /* A NULL VARCHAR key (DuckDB forbids it) cannot be an object key: array form. */
    uint64_t kvalid = ~(uint64_t)1;
    kv_kids[0].validity = &kvalid;
    T_EQ_STR(rv(&map, 2), "{\"a key longer than 12\":3}");
    T_EQ_STR(rv(&map, 0), "[{\"key\":null,\"value\":1},{\"key\":\"k\\\"2\",\"value\":null},"
                          "{\"key\":\"a key longer than 12\",\"value\":3}]");

    /* A MAP whose child is not a (key, value) struct is a bug, reported as such. */
    struct dapi_colvec broken = col(DAPI_CT_MAP, e);
    broken.children = &kv_kids[1];
    broken.nchildren = 1;
    T_EQ_STR(rv(&broken, 0), "<err 13>");
}

static void test_union(void)
{
    static const uint8_t tags[] = {0, 1, 0, 1, 5};
    static const int32_t nums[] = {42, 0, -7, 0, 0};
    struct dapi_dstr strs[] = {dstr(""), dstr("x"), dstr(""), dstr(""), dstr("")};
    uint64_t nvalid = ~(uint64_t)(1 << 1); /* inactive member rows may be NULL */
    uint64_t svalid = ~(uint64_t)((1 << 0) | (1 << 2) | (1 << 3)); /* active but NULL: row 3 */
    static const char *const names[] = {"", "num", "str"};
    struct dapi_colvec kids[3] = {col(DAPI_CT_U8, tags), col(DAPI_CT_I32, nums),
                                  col(DAPI_CT_VARCHAR, strs)};
    kids[1].validity = &nvalid;
    kids[2].validity = &svalid;
    struct dapi_colvec u = col(DAPI_CT_UNION, NULL);
    u.children = kids;
    u.nchildren = 3;
    u.child_names = names;
    uint64_t uvalid = ~(uint64_t)4; /* row 2 is a NULL union */
    u.validity = &uvalid;
    T_EQ_STR(rv(&u, 0), "42");
    T_EQ_STR(rv(&u, 1), "\"x\"");
    T_EQ_STR(rv(&u, 2), "null");
    T_EQ_STR(rv(&u, 3), "null");
    T_EQ_STR(rv(&u, 4), "<err 13>"); /* tag beyond the members */

    /* UNION inside a LIST */
    static const struct dapi_list_entry e[] = {{0, 4}};
    struct dapi_colvec list = col(DAPI_CT_LIST, e);
    list.children = &u;
    list.nchildren = 1;
    T_EQ_STR(rv(&list, 0), "[42,\"x\",null,null]");
}

/* `levels` nested single-element LISTs around one INT32. */
static const char *nested(int levels)
{
    static struct dapi_colvec lists[80];
    static const struct dapi_list_entry one = {0, 1};
    static const int32_t leaf = 9;
    struct dapi_colvec l = col(DAPI_CT_I32, &leaf);
    lists[0] = l;
    for(int i = 1; i <= levels; i++) {
        lists[i] = col(DAPI_CT_LIST, &one);
        lists[i].children = &lists[i - 1];
        lists[i].nchildren = 1;
    }
    return rv(&lists[levels], 0);
}

static void test_depth(void)
{
    const char *got = nested(64);
    T_CHECK(strlen(got) == 64 * 2 + 1 && got[0] == '[' && got[64] == '9' && got[128] == ']',
            "64 levels: %s", got);
    T_EQ_STR(nested(65), "<err 3>"); /* DAPI_ERR_TOO_LARGE */
    T_EQ_STR(nested(79), "<err 3>");
}

static void test_row_and_key(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 256);
    T_EQ_INT(dapi_render_key(&b, "id", 2), DAPI_OK);
    T_EQ_STR(b.data, "\"id\":");
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_render_key(&b, "we\"ird\n", 7), DAPI_OK);
    T_EQ_STR(b.data, "\"we\\\"ird\\n\":");
    dapi_buf_free(&b);

    static const int64_t ids[] = {1, 2};
    struct dapi_dstr names[] = {dstr("ann"), dstr("bob")};
    uint64_t nvalid = ~(uint64_t)2;
    static const double score[] = {1.5, 2.0};
    struct dapi_colvec cols[3] = {col(DAPI_CT_I64, ids), col(DAPI_CT_VARCHAR, names),
                                  col(DAPI_CT_F64, score)};
    cols[1].validity = &nvalid;
    static const char *const keys[] = {"\"id\":", "\"name\":", "\"score\":"};
    static const size_t key_lens[] = {5, 7, 8};
    static const char *const want[] = {
        "{\"id\":1,\"name\":\"ann\",\"score\":1.5}",
        "{\"id\":2,\"name\":null,\"score\":2.0}",
    };
    for(uint64_t r = 0; r < 2; r++) {
        dapi_buf_init(&b, 256);
        T_EQ_INT(dapi_render_row(&b, cols, 3, keys, key_lens, r), DAPI_OK);
        T_EQ_STR(b.data, want[r]);
        dapi_buf_free(&b);
    }
    /* rows append to what is already there */
    dapi_buf_init(&b, 256);
    T_EQ_INT(dapi_buf_addc(&b, '['), DAPI_OK);
    T_EQ_INT(dapi_render_row(&b, cols, 1, keys, key_lens, 0), DAPI_OK);
    T_EQ_INT(dapi_render_row(&b, cols, 0, keys, key_lens, 0), DAPI_OK);
    T_EQ_STR(b.data, "[{\"id\":1}{}");
    dapi_buf_free(&b);

    /* the cap hit mid-row frees the buffer */
    dapi_buf_init(&b, 20);
    T_EQ_INT(dapi_render_row(&b, cols, 3, keys, key_lens, 0), DAPI_ERR_TOO_LARGE);
    T_CHECK(b.data == NULL, "freed on overflow");
}

static void test_cap_in_nested(void)
{
    /* A list too large for the cap: the error surfaces from deep inside and the buffer is
     * freed, whatever point the cap was crossed at. */
    static int32_t elems[200];
    for(int i = 0; i < 200; i++)
        elems[i] = 1000 + i;
    struct dapi_colvec child = col(DAPI_CT_I32, elems);
    static const struct dapi_list_entry e[] = {{0, 200}};
    struct dapi_colvec list = col(DAPI_CT_LIST, e);
    list.children = &child;
    list.nchildren = 1;
    int all_ok = 1;
    for(size_t cap = 0; cap < 1001; cap += 7) {
        struct dapi_buf b;
        dapi_buf_init(&b, cap);
        enum dapi_err result = dapi_render_value(&b, &list, 0);
        all_ok &= result == DAPI_ERR_TOO_LARGE && b.data == NULL;
    }
    T_CHECK(all_ok, "every cap below the size fails cleanly");
    struct dapi_buf b;
    dapi_buf_init(&b, 1001); /* exactly "[" + 200 * 4 digits + 199 commas + "]" */
    T_EQ_INT(dapi_render_value(&b, &list, 0), DAPI_OK);
    T_EQ_INT(b.len, 1001);
    dapi_buf_free(&b);
}

int main(void)
{
    test_numbers();
    test_decimal();
    test_numbers_in_place();
    test_strings();
    test_bit();
    test_dates_times();
    test_dates_walk();
    test_timestamps();
    test_interval();
    test_uuid();
    test_enum();
    test_validity();
    test_list_and_array();
    test_struct();
    test_map();
    test_union();
    test_depth();
    test_row_and_key();
    test_cap_in_nested();
    T_DONE();
}
