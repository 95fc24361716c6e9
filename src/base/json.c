#include "base/json.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* __extension__ keeps -Wpedantic builds quiet; gcc and clang both have the type. */
__extension__ typedef unsigned __int128 u128;

/* For each ASCII byte: 0 if it is copied as is, else the letter after the backslash
 * ('u' = \u00XX). Everything below 0x20 must be escaped (RFC 8259); DEL need not be. */
static const char esc_table[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b',         't',           'n', 'u',
    'f', 'r', 'u', 'u', 'u', 'u', 'u', 'u', 'u',         'u',           'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', ['"'] = '"', ['\\'] = '\\',
};

static const char hex_digits[] = "0123456789abcdef";

/* Length of the well-formed UTF-8 sequence (2-4 bytes) starting at p[0] >= 0x80, or 0 if
 * it is ill-formed; then *bad is the length of its maximal subpart (Unicode 15, 3.9 U+FFFD
 * substitution), so each such subpart becomes exactly one U+FFFD, like browsers do.
 * The per-lead ranges of the second byte exclude overlongs, surrogates and > U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n, size_t *bad)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if(c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if(c == 0xe0) {
        need = 2;
        lo = 0xa0;
    } else if(c == 0xed) {
        need = 2;
        hi = 0x9f;
    } else if(c >= 0xe1 && c <= 0xef) {
        need = 2;
    } else if(c == 0xf0) {
        need = 3;
        lo = 0x90;
    } else if(c == 0xf4) {
        need = 3;
        hi = 0x8f;
    } else if(c >= 0xf1 && c <= 0xf3) {
        need = 3;
    } else {
        *bad = 1;
        return 0;
    }
    for(size_t i = 1; i <= need; i++) {
        if(i >= n || p[i] < lo || p[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need + 1;
}

enum dapi_err dapi_json_str(struct dapi_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    enum dapi_err result = dapi_buf_addc(b, '"');
    if(result)
        return result;
    size_t i = 0, run = 0; /* [run, i) is text that is copied verbatim */
    while(i < n) {
        unsigned char c = p[i];
        if(c < 0x80) {
            if(!esc_table[c]) {
                i++;
                continue;
            }
        } else {
            size_t bad = 0, len = utf8_seq(p + i, n - i, &bad);
            if(len) {
                i += len;
                continue;
            }
            if(i > run) {
                result = dapi_buf_add(b, p + run, i - run);
                if(result)
                    return result;
            }
            result = dapi_buf_add(b, "\xef\xbf\xbd", 3);
            if(result)
                return result;
            i += bad;
            run = i;
            continue;
        }
        if(i > run) {
            result = dapi_buf_add(b, p + run, i - run);
            if(result)
                return result;
        }
        char e[6] = {'\\', esc_table[c], '0', '0', hex_digits[c >> 4], hex_digits[c & 15]};
        result = dapi_buf_add(b, e, e[1] == 'u' ? 6 : 2);
        if(result)
            return result;
        i++;
        run = i;
    }
    if(i > run) {
        result = dapi_buf_add(b, p + run, i - run);
        if(result)
            return result;
    }
    return dapi_buf_addc(b, '"');
}

/* Writes v's decimal digits so that they end just before `end`; returns the first one. */
static char *fmt_u64(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while(v);
    return end;
}

/* Same for 128 bits: peels off 19-digit groups so that only one 128-bit division by a
 * constant runs per group instead of per digit. Needs 39 bytes before `end`. */
static char *fmt_u128(char *end, u128 v)
{
    const uint64_t e19 = 10000000000000000000u;
    while(v > UINT64_MAX) {
        uint64_t r = (uint64_t)(v % e19);
        v /= e19;
        for(int k = 0; k < 19; k++) {
            *--end = (char)('0' + r % 10);
            r /= 10;
        }
    }
    return fmt_u64(end, (uint64_t)v);
}

enum dapi_err dapi_json_u64(struct dapi_buf *b, uint64_t v)
{
    char t[24], *end = t + sizeof t, *p = fmt_u64(end, v);
    return dapi_buf_add(b, p, (size_t)(end - p));
}

enum dapi_err dapi_json_i64(struct dapi_buf *b, int64_t v)
{
    char t[24], *end = t + sizeof t;
    /* Negating in unsigned arithmetic is exact for INT64_MIN too. */
    char *p = fmt_u64(end, v < 0 ? -(uint64_t)v : (uint64_t)v);
    if(v < 0)
        *--p = '-';
    return dapi_buf_add(b, p, (size_t)(end - p));
}

static u128 make_u128(uint64_t upper, uint64_t lower)
{
    return ((u128)upper << 64) | lower;
}

enum dapi_err dapi_json_u128(struct dapi_buf *b, uint64_t upper, uint64_t lower)
{
    char t[48], *end = t + sizeof t, *p = fmt_u128(end, make_u128(upper, lower));
    return dapi_buf_add(b, p, (size_t)(end - p));
}

enum dapi_err dapi_json_i128(struct dapi_buf *b, int64_t upper, uint64_t lower)
{
    u128 v = make_u128((uint64_t)upper, lower);
    char t[48], *end = t + sizeof t, *p = fmt_u128(end, upper < 0 ? -v : v);
    if(upper < 0)
        *--p = '-';
    return dapi_buf_add(b, p, (size_t)(end - p));
}

enum dapi_err dapi_json_decimal(struct dapi_buf *b, int64_t upper, uint64_t lower, unsigned scale)
{
    u128 v = make_u128((uint64_t)upper, lower);
    char digits[48], *dend = digits + sizeof digits, *d = fmt_u128(dend, upper < 0 ? -v : v);
    size_t dl = (size_t)(dend - d);
    /* Worst case within DuckDB's limits (scale <= 38, 39 digits): "-0." + 37 zeros + 1
     * digit, or "-" + 39 digits + "."; a larger scale goes through the zero loop below. */
    char t[96];
    size_t o = 0;
    if(upper < 0)
        t[o++] = '-';
    if(scale == 0 || dl > scale) {
        size_t ip = dl - scale;
        memcpy(t + o, d, ip);
        o += ip;
        if(scale) {
            t[o++] = '.';
            memcpy(t + o, d + ip, scale);
            o += scale;
        }
        return dapi_buf_add(b, t, o);
    }
    t[o++] = '0';
    t[o++] = '.';
    size_t zeros = scale - dl;
    while(o + zeros + dl > sizeof t) {
        /* Only reachable for scales far beyond DECIMAL(38): flush zeros in pieces. */
        size_t k = sizeof t - o < zeros ? sizeof t - o : zeros;
        memset(t + o, '0', k);
        enum dapi_err result = dapi_buf_add(b, t, o + k);
        if(result)
            return result;
        zeros -= k;
        o = 0;
    }
    memset(t + o, '0', zeros);
    o += zeros;
    memcpy(t + o, d, dl);
    o += dl;
    return dapi_buf_add(b, t, o);
}

/* Appends the %g text in t (n bytes), made locale-proof, with ".0" if it reads as an
 * integer so that clients keep the value's floating type. */
static enum dapi_err add_real_text(struct dapi_buf *b, char *t, int n)
{
    int has_point = 0;
    for(int i = 0; i < n; i++) {
        /* A non-C LC_NUMERIC would print a comma; JSON only knows '.'. */
        if(t[i] == ',')
            t[i] = '.';
        if(t[i] == '.' || t[i] == 'e' || t[i] == 'n' || t[i] == 'i')
            has_point = 1;
    }
    if(!has_point) {
        t[n++] = '.';
        t[n++] = '0';
    }
    return dapi_buf_add(b, t, (size_t)n);
}

/* For normal numbers the first of %.15g/%.16g/%.17g that round-trips is the shortest text:
 * every decimal of at most DBL_DIG (15) digits survives double and back, so a shorter
 * round-tripping text would equal the %.15g one. Subnormals have fewer significant bits, so
 * they search from one digit on (5e-324 instead of 4.94065645841247e-324). */
enum dapi_err dapi_json_double(struct dapi_buf *b, double v)
{
    if(!isfinite(v))
        return dapi_buf_add(b, "null", 4);
    char t[48];
    int n = 0;
    int prec = v != 0 && fabs(v) < DBL_MIN ? 1 : DBL_DIG;
    for(; prec <= 17; prec++) {
        n = snprintf(t, sizeof t - 2, "%.*g", prec, v);
        if(strtod(t, NULL) == v)
            break;
    }
    return add_real_text(b, t, n);
}

enum dapi_err dapi_json_float(struct dapi_buf *b, float v)
{
    if(!isfinite(v))
        return dapi_buf_add(b, "null", 4);
    char t[48];
    int n = 0;
    int prec = v != 0 && fabsf(v) < FLT_MIN ? 1 : FLT_DIG;
    for(; prec <= 9; prec++) {
        n = snprintf(t, sizeof t - 2, "%.*g", prec, (double)v);
        if(strtof(t, NULL) == v)
            break;
    }
    return add_real_text(b, t, n);
}

enum dapi_err dapi_json_base64(struct dapi_buf *b, const void *p, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    /* Encodes through a stack chunk (a multiple of 4 output bytes) so that the buffer's own
     * cap check decides about size and the error code. */
    char t[1024];
    size_t o = 0;
    t[o++] = '"';
    while(n >= 3) {
        uint32_t w = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
        t[o++] = alphabet[w >> 18];
        t[o++] = alphabet[(w >> 12) & 63];
        t[o++] = alphabet[(w >> 6) & 63];
        t[o++] = alphabet[w & 63];
        s += 3;
        n -= 3;
        if(o > sizeof t - 4) {
            enum dapi_err result = dapi_buf_add(b, t, o);
            if(result)
                return result;
            o = 0;
        }
    }
    if(o > sizeof t - 5) {
        enum dapi_err result = dapi_buf_add(b, t, o);
        if(result)
            return result;
        o = 0;
    }
    if(n) {
        uint32_t w = (uint32_t)s[0] << 16 | (n > 1 ? (uint32_t)s[1] << 8 : 0);
        t[o++] = alphabet[w >> 18];
        t[o++] = alphabet[(w >> 12) & 63];
        t[o++] = n > 1 ? alphabet[(w >> 6) & 63] : '=';
        t[o++] = '=';
    }
    t[o++] = '"';
    return dapi_buf_add(b, t, o);
}
