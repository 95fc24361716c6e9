/* Shared by the libFuzzer drivers in tests/fuzz/: an invariant check that aborts, and small
 * reference implementations (strict UTF-8, strict RFC 8259 JSON, JSON string decoding) that
 * are written independently of src/ so that the drivers can judge what the parsers return.
 * Header-only (static functions) so each driver stays one translation unit. */
#ifndef DAPI_FUZZ_COMMON_H
#define DAPI_FUZZ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* On a broken invariant: say which, dump the input's first bytes, abort() so libFuzzer
 * records the input as a crash. */
static const uint8_t *fz_cur_data;
static size_t fz_cur_size;

static inline void fz_begin(const uint8_t *data, size_t size)
{
    fz_cur_data = data;
    fz_cur_size = size;
}

__attribute__((noreturn, format(printf, 4, 5))) static void
fz_fail(const char *file, int line, const char *cond, const char *fmt, ...);

static void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n==== invariant violated (%s:%d): %s\n==== ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n==== input (%zu bytes):", fz_cur_size);
    for(size_t i = 0; i < fz_cur_size && i < 256; i++)
        fprintf(stderr, "%s%02x", i % 32 ? " " : "\n====   ", fz_cur_data[i]);
    fprintf(stderr, "%s\n", fz_cur_size > 256 ? " …" : "");
    abort();
}

#define FUZZ_CHECK(cond, ...)                                \
    do {                                                     \
        if(!(cond))                                          \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while(0)

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* Length (1-4) of the well-formed UTF-8 sequence at p[0..n), n >= 1, or 0. Decodes the code
 * point and then judges it: no overlongs, no surrogates, nothing above U+10FFFF. */
static inline size_t fz_utf8_next(const unsigned char *p, size_t n)
{
    uint32_t c = p[0], cp, min;
    size_t len;
    if(c < 0x80)
        return 1;
    if((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if(n < len)
        return 0;
    for(size_t i = 1; i < len; i++) {
        if((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if(cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static inline int fz_utf8_valid(const void *s, size_t n)
{
    const unsigned char *p = s;
    for(size_t i = 0; i < n;) {
        size_t k = fz_utf8_next(p + i, n - i);
        if(!k)
            return 0;
        i += k;
    }
    return 1;
}

/* Unicode 15 §3.9 "U+FFFD substitution of maximal subparts", straight from Table 3-7 (the
 * well-formed byte sequences): at each position, the longest prefix of a well-formed
 * sequence is either a whole sequence (copied) or a maximal subpart (one U+FFFD, at least
 * one byte consumed). out needs 3 * n bytes. Returns the output length. */
static inline size_t fz_utf8_replace(const unsigned char *p, size_t n, unsigned char *out)
{
    static const struct {
        unsigned char lead_lo, lead_hi, len, lo[3], hi[3];
    } rows[] = {
        {0xC2, 0xDF, 2, {0x80}, {0xBF}},
        {0xE0, 0xE0, 3, {0xA0, 0x80}, {0xBF, 0xBF}},
        {0xE1, 0xEC, 3, {0x80, 0x80}, {0xBF, 0xBF}},
        {0xED, 0xED, 3, {0x80, 0x80}, {0x9F, 0xBF}},
        {0xEE, 0xEF, 3, {0x80, 0x80}, {0xBF, 0xBF}},
        {0xF0, 0xF0, 4, {0x90, 0x80, 0x80}, {0xBF, 0xBF, 0xBF}},
        {0xF1, 0xF3, 4, {0x80, 0x80, 0x80}, {0xBF, 0xBF, 0xBF}},
        {0xF4, 0xF4, 4, {0x80, 0x80, 0x80}, {0x8F, 0xBF, 0xBF}},
    };
    size_t o = 0;
    for(size_t i = 0; i < n;) {
        if(p[i] < 0x80) {
            out[o++] = p[i++];
            continue;
        }
        size_t r, good = 0, len = 0;
        for(r = 0; r < sizeof rows / sizeof rows[0]; r++)
            if(p[i] >= rows[r].lead_lo && p[i] <= rows[r].lead_hi)
                break;
        if(r < sizeof rows / sizeof rows[0]) {
            len = rows[r].len;
            good = 1;
            while(good < len && i + good < n && p[i + good] >= rows[r].lo[good - 1] &&
                  p[i + good] <= rows[r].hi[good - 1])
                good++;
        }
        if(len && good == len) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += good ? good : 1;
        }
    }
    return o;
}

/* ---- strict JSON (RFC 8259) ----------------------------------------------------------- */

/* Nesting beyond this is not followed (the result is "undetermined"), which bounds the
 * recursion; every parser under test refuses far less deep documents. */
#define FZ_JSON_DEPTH_CAP 256

struct fz_json {
    const unsigned char *p, *end;
    int depth;     /* containers currently open */
    int max_depth; /* deepest nesting seen (top-level container = 1) */
    int too_deep;  /* FZ_JSON_DEPTH_CAP was crossed: the verdict is undetermined */
};

static inline void fz_json_init(struct fz_json *j, const void *s, size_t n)
{
    j->p = s;
    j->end = j->p + n;
    j->depth = j->max_depth = j->too_deep = 0;
}

static inline void fz_json_ws(struct fz_json *j)
{
    while(j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static inline int fz_is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string literal at j->p: 0 and j->p past it, or -1. */
static inline int fz_json_string(struct fz_json *j)
{
    if(j->p >= j->end || *j->p != '"')
        return -1;
    j->p++;
    while(j->p < j->end) {
        unsigned char c = *j->p;
        if(c == '"') {
            j->p++;
            return 0;
        }
        if(c < 0x20)
            return -1;
        if(c == '\\') {
            if(j->end - j->p < 2)
                return -1;
            unsigned char e = j->p[1];
            if(e == 'u') {
                if(j->end - j->p < 6)
                    return -1;
                for(int k = 2; k < 6; k++)
                    if(!fz_is_hex(j->p[k]))
                        return -1;
                j->p += 6;
            } else if(e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                      e == 'r' || e == 't') {
                j->p += 2;
            } else {
                return -1;
            }
            continue;
        }
        size_t k = fz_utf8_next(j->p, (size_t)(j->end - j->p));
        if(!k)
            return -1;
        j->p += k;
    }
    return -1;
}

static inline int fz_json_number(struct fz_json *j)
{
    const unsigned char *p = j->p, *e = j->end;
    if(p < e && *p == '-')
        p++;
    if(p >= e || *p < '0' || *p > '9')
        return -1;
    if(*p == '0') {
        p++;
    } else {
        while(p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if(p < e && *p == '.') {
        p++;
        if(p >= e || *p < '0' || *p > '9')
            return -1;
        while(p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if(p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if(p < e && (*p == '+' || *p == '-'))
            p++;
        if(p >= e || *p < '0' || *p > '9')
            return -1;
        while(p < e && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return 0;
}

static inline int fz_json_lit(struct fz_json *j, const char *w)
{
    size_t n = strlen(w);
    if((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

/* One value at j->p (no surrounding whitespace): 0 and j->p past it, or -1. */
static inline int fz_json_value(struct fz_json *j)
{
    if(j->p >= j->end)
        return -1;
    unsigned char c = *j->p;
    if(c == '"')
        return fz_json_string(j);
    if(c == 't')
        return fz_json_lit(j, "true");
    if(c == 'f')
        return fz_json_lit(j, "false");
    if(c == 'n')
        return fz_json_lit(j, "null");
    if(c != '[' && c != '{')
        return fz_json_number(j);
    unsigned char close = c == '[' ? ']' : '}';
    if(++j->depth > FZ_JSON_DEPTH_CAP) {
        j->too_deep = 1;
        return -1;
    }
    if(j->depth > j->max_depth)
        j->max_depth = j->depth;
    j->p++;
    fz_json_ws(j);
    if(j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 0;
    }
    for(;;) {
        if(close == '}') {
            if(fz_json_string(j))
                return -1;
            fz_json_ws(j);
            if(j->p >= j->end || *j->p != ':')
                return -1;
            j->p++;
            fz_json_ws(j);
        }
        if(fz_json_value(j))
            return -1;
        fz_json_ws(j);
        if(j->p < j->end && *j->p == ',') {
            j->p++;
            fz_json_ws(j);
            continue;
        }
        if(j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 0;
        }
        return -1;
    }
}

/* Is s[0..n) exactly one JSON value with optional surrounding whitespace?
 * 1 = yes, 0 = no, -1 = undetermined (nested deeper than FZ_JSON_DEPTH_CAP).
 * *max_depth (if non-NULL) receives the deepest nesting (0 for a scalar). */
static inline int fz_json_valid(const void *s, size_t n, int *max_depth)
{
    struct fz_json j;
    fz_json_init(&j, s, n);
    fz_json_ws(&j);
    int bad = fz_json_value(&j);
    if(!bad) {
        fz_json_ws(&j);
        bad = j.p != j.end;
    }
    if(max_depth)
        *max_depth = j.max_depth;
    if(j.too_deep)
        return -1;
    return !bad;
}

/* Nesting depth of arbitrary bytes, counting '[' '{' against ']' '}' outside string
 * literals (a '"' opens one, a '\\' inside one hides the next byte). For any text that is
 * valid JSON this is its true nesting depth. */
static inline int fz_bracket_depth(const void *s, size_t n)
{
    const unsigned char *p = s;
    int depth = 0, max = 0, in_str = 0;
    for(size_t i = 0; i < n; i++) {
        if(in_str) {
            if(p[i] == '\\')
                i++;
            else if(p[i] == '"')
                in_str = 0;
        } else if(p[i] == '"') {
            in_str = 1;
        } else if(p[i] == '[' || p[i] == '{') {
            if(++depth > max)
                max = depth;
        } else if(p[i] == ']' || p[i] == '}') {
            if(depth > 0)
                depth--;
        }
    }
    return max;
}

/* ---- JSON string literal decoding ----------------------------------------------------- */

static inline unsigned fz_hex4(const unsigned char *p)
{
    unsigned v = 0;
    for(int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static inline size_t fz_put_utf8(unsigned char *o, uint32_t cp)
{
    if(cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if(cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if(cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a string literal (quotes included) that fz_json_string accepted into out (room
 * for len bytes is always enough). A surrogate pair becomes its code point; a surrogate
 * escape that is not part of a pair becomes U+FFFD and *lone (if non-NULL) is set.
 * Returns the decoded length. */
static inline size_t fz_json_unquote(const void *lit, size_t len, unsigned char *out, int *lone)
{
    const unsigned char *p = (const unsigned char *)lit + 1;
    const unsigned char *end = (const unsigned char *)lit + len - 1;
    size_t o = 0;
    if(lone)
        *lone = 0;
    while(p < end) {
        if(*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        unsigned char e = p[1];
        if(e != 'u') {
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            out[o++] = (unsigned char)to[strchr(from, e) - from];
            p += 2;
            continue;
        }
        uint32_t cp = fz_hex4(p + 2);
        p += 6;
        if(cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
           fz_hex4(p + 2) >= 0xDC00 && fz_hex4(p + 2) <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (fz_hex4(p + 2) - 0xDC00);
            p += 6;
        } else if(cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
            if(lone)
                *lone = 1;
        }
        o += fz_put_utf8(out + o, cp);
    }
    return o;
}

#endif
