/* A strict, bounded scanner for one results page, {"query_slug","page","data":[{…},…]}.
 * The body comes from the network, so it is treated as hostile: the whole text must be valid
 * JSON (RFC 8259: no trailing commas, no raw control characters, valid UTF-8 with no
 * surrogates or overlongs), nested at most MAX_DEPTH deep. The scanner keeps rows as text:
 * for each row the (key, value) spans in the server's order, so column order and number
 * precision survive untouched. Nothing is allocated per value, only one cell array. */
#include "client/page.h"
#include "client/unquote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

#define MAX_DEPTH 64

struct dapi_page {
    char *body; /* owned copy of the text; every span points into it */
    size_t len;
    uint64_t number;
    int has_number;
    const char *slug; /* raw literal or NULL */
    size_t slug_len;
    size_t nrows;
    size_t *row_first;      /* nrows + 1 indexes into cells */
    const char **row_start; /* nrows object starts */
    size_t *row_len;
    struct dapi_cell *cells;
    size_t ncells, cells_cap;
    size_t rows_cap;
};

struct scan {
    const char *p, *end;
    char *err;
    size_t errlen;
    const char *base;
};

static int fail(struct scan *s, const char *what)
{
    if(s->err && s->errlen)
        snprintf(s->err, s->errlen, "malformed results page at byte %zu: %s",
                 (size_t)(s->p - s->base), what);
    return -1;
}

static void ws(struct scan *s)
{
    while(s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(char c)
{
    if(c >= '0' && c <= '9')
        return c - '0';
    if(c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if(c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the valid UTF-8 sequence at p (non-ASCII lead byte), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned min;
    unsigned cp;
    if(c >= 0xC2 && c <= 0xDF) {
        n = 2, min = 0x80, cp = c & 0x1F;
    } else if(c >= 0xE0 && c <= 0xEF) {
        n = 3, min = 0x800, cp = c & 0x0F;
    } else if(c >= 0xF0 && c <= 0xF4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if((size_t)(end - p) < n)
        return 0;
    for(size_t i = 1; i < n; i++) {
        if((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if(cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static int scan_string(struct scan *s)
{
    if(s->p >= s->end || *s->p != '"')
        return fail(s, "expected a string");
    s->p++;
    while(s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if(c == '"') {
            s->p++;
            return 0;
        }
        if(c < 0x20)
            return fail(s, "control character in a string");
        if(c == '\\') {
            if(s->end - s->p < 2)
                break;
            char e = s->p[1];
            if(e == 'u') {
                if(s->end - s->p < 6)
                    break;
                for(int i = 2; i < 6; i++)
                    if(hexval(s->p[i]) < 0)
                        return fail(s, "bad \\u escape");
                s->p += 6;
                continue;
            }
            if(!strchr("\"\\/bfnrt", e) || e == '\0')
                return fail(s, "bad escape");
            s->p += 2;
            continue;
        }
        if(c < 0x80) {
            s->p++;
            continue;
        }
        size_t n = utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
        if(!n)
            return fail(s, "invalid UTF-8");
        s->p += n;
    }
    return fail(s, "unterminated string");
}

static int digits(struct scan *s)
{
    const char *start = s->p;
    while(s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start ? 0 : -1;
}

static int scan_number(struct scan *s)
{
    if(s->p < s->end && *s->p == '-')
        s->p++;
    if(s->p < s->end && *s->p == '0')
        s->p++;
    else if(s->p >= s->end || *s->p < '1' || *s->p > '9' || digits(s))
        return fail(s, "bad number");
    if(s->p < s->end && *s->p == '.') {
        s->p++;
        if(digits(s))
            return fail(s, "bad number");
    }
    if(s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if(s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if(digits(s))
            return fail(s, "bad number");
    }
    return 0;
}

static int scan_word(struct scan *s, const char *w)
{
    size_t n = strlen(w);
    if((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return fail(s, "unexpected character");
    s->p += n;
    return 0;
}

static int scan_value(struct scan *s, int depth);

/* Called for each item of a container with s->p at its value (for an object, after the key,
 * which key/klen give with its quotes; NULL for an array): must scan the value. */
typedef int scan_item_fn(void *ctx, struct scan *s, const char *key, size_t klen);

/* The items of an object (close '}') or array (close ']') after its opening byte: the one
 * loop over "key: value," or "value," that every container of a page goes through. */
static int scan_items(struct scan *s, char close, scan_item_fn *each, void *ctx)
{
    ws(s);
    if(s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    for(;;) {
        const char *k = NULL;
        size_t klen = 0;
        if(close == '}') {
            k = s->p;
            if(scan_string(s))
                return -1;
            klen = (size_t)(s->p - k);
            ws(s);
            if(s->p >= s->end || *s->p != ':')
                return fail(s, "expected ':'");
            s->p++;
            ws(s);
        }
        if(each(ctx, s, k, klen))
            return -1;
        ws(s);
        if(s->p < s->end && *s->p == ',') {
            s->p++;
            ws(s);
            continue;
        }
        if(s->p < s->end && *s->p == close) {
            s->p++;
            return 0;
        }
        return fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int any_item(void *ctx, struct scan *s, const char *key, size_t klen)
{
    return scan_value(s, *(int *)ctx);
}

/* An object or array after its opening byte has been consumed. */
static int scan_container(struct scan *s, int depth, char close)
{
    if(depth > MAX_DEPTH)
        return fail(s, "nested too deeply");
    return scan_items(s, close, any_item, &depth);
}

/* depth: the nesting depth of the container holding this value. */
static int scan_value(struct scan *s, int depth)
{
    if(s->p >= s->end)
        return fail(s, "unexpected end");
    switch(*s->p) {
    case '"': return scan_string(s);
    case '{': s->p++; return scan_container(s, depth + 1, '}');
    case '[': s->p++; return scan_container(s, depth + 1, ']');
    case 't': return scan_word(s, "true");
    case 'f': return scan_word(s, "false");
    case 'n': return scan_word(s, "null");
    default: return scan_number(s);
    }
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if(need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while(n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if(!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int add_row(struct dapi_page *pg, struct scan *s)
{
    size_t cap = pg->rows_cap;
    if(pg->nrows + 2 > cap) {
        size_t c1 = cap, c2 = cap, c3 = cap;
        if(grow((void **)&pg->row_first, &c1, pg->nrows + 2, sizeof *pg->row_first) ||
           grow((void **)&pg->row_start, &c2, pg->nrows + 2, sizeof *pg->row_start) ||
           grow((void **)&pg->row_len, &c3, pg->nrows + 2, sizeof *pg->row_len))
            return fail(s, "out of memory");
        pg->rows_cap = c1;
    }
    return 0;
}

static int cell_item(void *ctx, struct scan *s, const char *key, size_t klen)
{
    struct dapi_page *pg = ctx;
    const char *v = s->p;
    if(scan_value(s, 3))
        return -1;
    if(grow((void **)&pg->cells, &pg->cells_cap, pg->ncells + 1, sizeof *pg->cells))
        return fail(s, "out of memory");
    pg->cells[pg->ncells++] = (struct dapi_cell){key, klen, v, (size_t)(s->p - v)};
    return 0;
}

/* One row object at s->p; records its cells. */
static int row_item(void *ctx, struct scan *s, const char *key, size_t klen)
{
    struct dapi_page *pg = ctx;
    if(s->p >= s->end || *s->p != '{')
        return fail(s, "a row is not an object");
    if(add_row(pg, s))
        return -1;
    const char *start = s->p;
    pg->row_first[pg->nrows] = pg->ncells;
    s->p++;
    if(scan_items(s, '}', cell_item, pg))
        return -1;
    pg->row_start[pg->nrows] = start;
    pg->row_len[pg->nrows] = (size_t)(s->p - start);
    pg->nrows++;
    pg->row_first[pg->nrows] = pg->ncells;
    return 0;
}

static int scan_data(struct dapi_page *pg, struct scan *s)
{
    if(s->p >= s->end || *s->p != '[')
        return fail(s, "\"data\" is not an array");
    s->p++;
    return scan_items(s, ']', row_item, pg);
}

static int parse_page_no(struct dapi_page *pg, struct scan *s)
{
    const char *v = s->p;
    if(scan_number(s))
        return -1;
    uint64_t n = 0;
    for(const char *q = v; q < s->p; q++) {
        if(*q < '0' || *q > '9' || n > (UINT64_MAX - 9) / 10)
            return fail(s, "\"page\" is not a positive integer");
        n = n * 10 + (uint64_t)(*q - '0');
    }
    pg->number = n;
    pg->has_number = 1;
    return 0;
}

struct top {
    struct dapi_page *pg;
    int have_data;
};

static int top_item(void *ctx, struct scan *s, const char *k, size_t klen)
{
    struct top *t = ctx;
    struct dapi_page *pg = t->pg;
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(k, lit, klen) == 0)
    if(KEY_IS("\"data\"")) {
        if(t->have_data)
            return fail(s, "\"data\" appears twice");
        t->have_data = 1;
        return scan_data(pg, s);
    }
    if(KEY_IS("\"page\"") && !pg->has_number)
        return parse_page_no(pg, s);
    if(KEY_IS("\"query_slug\"") && !pg->slug && s->p < s->end && *s->p == '"') {
        pg->slug = s->p;
        int r = scan_string(s);
        pg->slug_len = (size_t)(s->p - pg->slug);
        return r;
    }
#undef KEY_IS
    return scan_value(s, 1);
}

static int scan_top(struct dapi_page *pg, struct scan *s)
{
    struct top t = {pg, 0};
    ws(s);
    if(s->p >= s->end || *s->p != '{')
        return fail(s, "not a JSON object");
    s->p++;
    if(scan_items(s, '}', top_item, &t))
        return -1;
    ws(s);
    if(s->p != s->end)
        return fail(s, "trailing data after the object");
    if(!t.have_data)
        return fail(s, "no \"data\" member");
    return 0;
}

enum dapi_err dapi_page_parse_owned(char *body, size_t len, struct dapi_page **page, char *err,
                                    size_t errlen)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_page *pg = calloc(1, sizeof *pg);
    *page = NULL;
    if(!pg) {
        free(body);
        if(err && errlen)
            snprintf(err, errlen, "out of memory");
        return DAPI_ERR_NOMEM;
    }
    pg->body = body;
    pg->len = len;
    struct scan s = {body, body + len, err, errlen, body};
    if(scan_top(pg, &s)) {
        result = DAPI_ERR_INVALID;
        goto out;
    }
    *page = pg;
    pg = NULL;
out:
    dapi_page_free(pg);
    return result;
}

enum dapi_err dapi_page_parse(const char *body, size_t len, struct dapi_page **page, char *err,
                              size_t errlen)
{
    char *copy = malloc(len + 1);
    *page = NULL;
    if(!copy) {
        if(err && errlen)
            snprintf(err, errlen, "out of memory");
        return DAPI_ERR_NOMEM;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    return dapi_page_parse_owned(copy, len, page, err, errlen);
}

void dapi_page_free(struct dapi_page *page)
{
    if(!page)
        return;
    free(page->body);
    free(page->row_first);
    free(page->row_start);
    free(page->row_len);
    free(page->cells);
    free(page);
}

uint64_t dapi_page_number(const struct dapi_page *page)
{
    return page->number;
}

int dapi_page_has_number(const struct dapi_page *page)
{
    return page->has_number;
}

const char *dapi_page_slug(const struct dapi_page *page, size_t *len)
{
    *len = page->slug_len;
    return page->slug;
}

size_t dapi_page_rows(const struct dapi_page *page)
{
    return page->nrows;
}

const struct dapi_cell *dapi_page_row(const struct dapi_page *page, size_t i, size_t *ncols)
{
    *ncols = page->row_first[i + 1] - page->row_first[i];
    return page->cells ? page->cells + page->row_first[i] : NULL; /* no cell in any row */
}

const char *dapi_page_row_json(const struct dapi_page *page, size_t i, size_t *len)
{
    *len = page->row_len[i];
    return page->row_start[i];
}

/* Where the decoder writes: a buffer (dapi_client_unquote_buf), or the caller's array
 * (dapi_client_unquote), which is large enough since the text is never longer than the
 * literal without its quotes: a plain byte is copied, a two-byte escape gives one byte,
 * \uXXXX (6) at most three, a surrogate pair (12) four, a lone surrogate (6) U+FFFD (3). */
struct sink {
    struct dapi_buf *buf;
    char *out;
    size_t len;
};

static enum dapi_err emit(struct sink *s, const char *p, size_t n)
{
    if(s->buf)
        return dapi_buf_add(s->buf, p, n);
    memcpy(s->out + s->len, p, n);
    s->len += n;
    return DAPI_OK;
}

static enum dapi_err put_cp(struct sink *out, unsigned cp)
{
    char u[4];
    size_t n;
    if(cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if(cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if(cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    return emit(out, u, n);
}

static unsigned hex4(const char *p)
{
    return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

static enum dapi_err unquote(const char *lit, size_t len, struct sink *out)
{
    enum dapi_err result = DAPI_OK;
    if(len < 2)
        return DAPI_ERR_INVALID;
    const char *p = lit + 1, *end = lit + len - 1;
    while(p < end && !result) {
        const char *run = p;
        while(p < end && *p != '\\')
            p++;
        if(p > run)
            result = emit(out, run, (size_t)(p - run));
        if(p >= end || result)
            break;
        char e = p[1];
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *m = e ? strchr(from, e) : NULL;
        if(m) {
            result = emit(out, &to[m - from], 1);
            p += 2;
            continue;
        }
        if(e != 'u' || end - p < 6)
            return DAPI_ERR_INVALID;
        unsigned cp = hex4(p + 2);
        p += 6;
        if(cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
            unsigned lo = hex4(p + 2);
            if(lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
        }
        if(cp >= 0xD800 && cp <= 0xDFFF)
            cp = 0xFFFD; /* a lone surrogate */
        result = put_cp(out, cp);
    }
    return result;
}

enum dapi_err dapi_client_unquote(const char *lit, size_t len, char *out, size_t *out_len)
{
    struct sink s = {NULL, out, 0};
    enum dapi_err result = unquote(lit, len, &s);
    if(result)
        return result;
    out[s.len] = '\0';
    if(out_len)
        *out_len = s.len;
    return DAPI_OK;
}

enum dapi_err dapi_client_unquote_buf(const char *lit, size_t len, struct dapi_buf *out)
{
    struct sink s = {out, NULL, 0};
    return unquote(lit, len, &s);
}
