/* Result rows into the export formats (rows.h). */
#include "base/rows.h"

#include <string.h>

#define MAX_DEPTH 1000

static const char *ws(const char *p, const char *end)
{
    while(p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The end of the string literal at p (p[0] == '"'), or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for(p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if(c == '"')
            return p + 1;
        if(c < 0x20)
            return NULL;
        if(c != '\\')
            continue;
        if(++p >= end)
            return NULL;
        if(*p == 'u') {
            if(end - p < 5)
                return NULL;
            for(int i = 1; i <= 4; i++)
                if(hexval(p[i]) < 0)
                    return NULL;
            p += 4;
        } else if(!strchr("\"\\/bfnrt", *p) || !*p) {
            return NULL;
        }
    }
    return NULL;
}

static const char *skip_number(const char *p, const char *end)
{
    const char *s = p;
    if(p < end && *p == '-')
        p++;
    const char *d = p;
    while(p < end && *p >= '0' && *p <= '9')
        p++;
    if(p == d)
        return NULL;
    if(p < end && *p == '.') {
        d = ++p;
        while(p < end && *p >= '0' && *p <= '9')
            p++;
        if(p == d)
            return NULL;
    }
    if(p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if(p < end && (*p == '+' || *p == '-'))
            p++;
        d = p;
        while(p < end && *p >= '0' && *p <= '9')
            p++;
        if(p == d)
            return NULL;
    }
    return p > s ? p : NULL;
}

static const char *skip_word(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    return (size_t)(end - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

static const char *skip(const char *p, const char *end, int depth);

/* The end of the object or array at p, or NULL. */
static const char *skip_container(const char *p, const char *end, int depth)
{
    char close = *p == '{' ? '}' : ']';
    int object = *p == '{';
    if(depth >= MAX_DEPTH)
        return NULL;
    p = ws(p + 1, end);
    if(p < end && *p == close)
        return p + 1;
    for(;;) {
        if(object) {
            if(p >= end || *p != '"' || !(p = skip_string(p, end)))
                return NULL;
            p = ws(p, end);
            if(p >= end || *p != ':')
                return NULL;
            p = ws(p + 1, end);
        }
        if(!(p = skip(p, end, depth + 1)))
            return NULL;
        p = ws(p, end);
        if(p >= end)
            return NULL;
        if(*p == close)
            return p + 1;
        if(*p != ',')
            return NULL;
        p = ws(p + 1, end);
    }
}

static const char *skip(const char *p, const char *end, int depth)
{
    if(p >= end)
        return NULL;
    switch(*p) {
    case '"': return skip_string(p, end);
    case '{':
    case '[': return skip_container(p, end, depth);
    case 't': return skip_word(p, end, "true");
    case 'f': return skip_word(p, end, "false");
    case 'n': return skip_word(p, end, "null");
    default: return skip_number(p, end);
    }
}

const char *dapi_rows_skip_value(const char *p, const char *end)
{
    return skip(p, end, 0);
}

static enum dapi_err put_cp(struct dapi_buf *out, unsigned cp)
{
    char u[4];
    size_t n;
    if(cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if(cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if(cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return dapi_buf_add(out, u, n);
}

static unsigned hex4(const char *p)
{
    return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

enum dapi_err dapi_rows_unquote(const char *lit, size_t len, struct dapi_buf *out)
{
    if(len < 2 || lit[0] != '"' || lit[len - 1] != '"' || skip_string(lit, lit + len) != lit + len)
        return DAPI_ERR_INVALID;
    const char *p = lit + 1, *end = lit + len - 1, *run = p;
    enum dapi_err result = dapi_buf_add(out, "", 0);
    while(p < end && !result) {
        if(*p != '\\') {
            p++;
            continue;
        }
        result = dapi_buf_add(out, run, (size_t)(p - run));
        char e = p[1];
        p += 2;
        if(result)
            break;
        if(e == 'u') {
            unsigned cp = hex4(p);
            p += 4;
            /* a surrogate pair makes one code point; a lone surrogate becomes U+FFFD */
            if(cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = hex4(p + 2);
                if(lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if(cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD;
            result = put_cp(out, cp);
        } else {
            char c = e == 'b'   ? '\b'
                     : e == 'f' ? '\f'
                     : e == 'n' ? '\n'
                     : e == 'r' ? '\r'
                     : e == 't' ? '\t'
                                : e;
            result = dapi_buf_addc(out, c);
        }
        run = p;
    }
    if(!result)
        result = dapi_buf_add(out, run, (size_t)(p - run));
    return result;
}

void dapi_rows_init(struct dapi_rows *c, enum dapi_rows_format fmt)
{
    memset(c, 0, sizeof *c);
    c->fmt = fmt;
    dapi_buf_init(&c->tmp, (size_t)-1 / 2);
    dapi_buf_init(&c->row, (size_t)-1 / 2);
}

void dapi_rows_free(struct dapi_rows *c)
{
    dapi_buf_free(&c->tmp);
    dapi_buf_free(&c->row);
}

enum dapi_err dapi_csv_field(dapi_put_fn put, void *ctx, const char *s, size_t n, int is_str)
{
    /* an empty string is "" so it differs from NULL, which is an empty field */
    int quote = (is_str && n == 0) || memchr(s, ',', n) || memchr(s, '"', n) ||
                memchr(s, '\r', n) || memchr(s, '\n', n);
    if(!quote)
        return put(ctx, s, n);
    enum dapi_err result = put(ctx, "\"", 1);
    size_t run = 0;
    for(size_t i = 0; i < n && !result; i++)
        if(s[i] == '"') {
            result = put(ctx, s + run, i + 1 - run); /* the quote, then its double */
            run = i;
        }
    if(!result)
        result = put(ctx, s + run, n - run);
    return result ? result : put(ctx, "\"", 1);
}

enum dapi_err dapi_tsv_field(dapi_put_fn put, void *ctx, const char *s, size_t n)
{
    enum dapi_err result = DAPI_OK;
    size_t run = 0;
    for(size_t i = 0; i < n && !result; i++) {
        const char *e = s[i] == '\t'   ? "\\t"
                        : s[i] == '\n' ? "\\n"
                        : s[i] == '\r' ? "\\r"
                        : s[i] == '\\' ? "\\\\"
                                       : NULL;
        if(e) {
            result = put(ctx, s + run, i - run);
            if(!result)
                result = put(ctx, e, 2);
            run = i + 1;
        }
    }
    return result ? result : put(ctx, s + run, n - run);
}

static enum dapi_err buf_put(void *ctx, const char *p, size_t n)
{
    return dapi_buf_add(ctx, p, n);
}


/* A text field (a name, or a decoded string) in csv or tsv. */
static enum dapi_err text_field(struct dapi_rows *c, struct dapi_buf *out, const char *s, size_t n,
                                int is_str)
{
    return c->fmt == DAPI_ROWS_CSV ? dapi_csv_field(buf_put, out, s, n, is_str)
                                   : dapi_tsv_field(buf_put, out, s, n);
}

/* One value [v, ve) as a csv/tsv field. */
static enum dapi_err value_field(struct dapi_rows *c, struct dapi_buf *out, const char *v,
                                 const char *ve)
{
    size_t n = (size_t)(ve - v);
    if(*v == 'n') /* null */
        return c->fmt == DAPI_ROWS_CSV ? DAPI_OK : dapi_buf_add(out, "\\N", 2);
    if(*v == '"') {
        dapi_buf_reset(&c->tmp);
        enum dapi_err result = dapi_rows_unquote(v, n, &c->tmp);
        if(result)
            return result;
        return text_field(c, out, c->tmp.data ? c->tmp.data : "", c->tmp.len, 1);
    }
    return text_field(c, out, v, n, 0); /* numbers, booleans, nested JSON */
}

/* One row object [p, e) as a csv/tsv line. */
static enum dapi_err delimited_row(struct dapi_rows *c, struct dapi_buf *out, const char *p,
                                   const char *e)
{
    enum dapi_err result = DAPI_OK;
    int first = 1;
    p = ws(p + 1, e);
    while(p < e && *p != '}' && !result) {
        const char *k = skip_string(p, e);
        if(!k)
            return DAPI_ERR_INVALID;
        p = ws(k, e);
        p = ws(p + 1, e); /* ':' */
        const char *ve = skip(p, e, 1);
        if(!ve)
            return DAPI_ERR_INVALID;
        if(!first)
            result = dapi_buf_addc(out, c->fmt == DAPI_ROWS_CSV ? ',' : '\t');
        first = 0;
        if(!result)
            result = value_field(c, out, p, ve);
        p = ws(ve, e);
        if(p < e && *p == ',')
            p = ws(p + 1, e);
    }
    if(!result)
        result = dapi_buf_adds(out, c->fmt == DAPI_ROWS_CSV ? "\r\n" : "\n");
    return result;
}

enum dapi_err dapi_rows_begin(struct dapi_rows *c, struct dapi_buf *out, const char *const *names,
                              size_t n)
{
    enum dapi_err result = DAPI_OK;
    switch(c->fmt) {
    case DAPI_ROWS_JSON: return dapi_buf_addc(out, '[');
    case DAPI_ROWS_NDJSON: return DAPI_OK;
    default: break;
    }
    if(!n)
        return DAPI_OK;
    for(size_t i = 0; i < n && !result; i++) {
        if(i)
            result = dapi_buf_addc(out, c->fmt == DAPI_ROWS_CSV ? ',' : '\t');
        if(!result)
            result = text_field(c, out, names[i], strlen(names[i]), 0);
    }
    return result ? result : dapi_buf_adds(out, c->fmt == DAPI_ROWS_CSV ? "\r\n" : "\n");
}

enum dapi_err dapi_rows_page(struct dapi_rows *c, struct dapi_buf *out, const char *rows,
                             size_t len)
{
    const char *p = ws(rows, rows + len), *end = rows + len;
    enum dapi_err result = DAPI_OK;
    while(p < end && !result) {
        if(*p != '{')
            return DAPI_ERR_INVALID;
        const char *e = skip_container(p, end, 0);
        if(!e)
            return DAPI_ERR_INVALID;
        switch(c->fmt) {
        case DAPI_ROWS_NDJSON:
            result = dapi_buf_add(out, p, (size_t)(e - p));
            if(!result)
                result = dapi_buf_addc(out, '\n');
            break;
        case DAPI_ROWS_JSON:
            if(c->rows)
                result = dapi_buf_addc(out, ',');
            if(!result)
                result = dapi_buf_add(out, p, (size_t)(e - p));
            break;
        default: result = delimited_row(c, out, p, e); break;
        }
        c->rows++;
        p = ws(e, end);
        if(p < end) {
            if(*p != ',')
                return DAPI_ERR_INVALID;
            p = ws(p + 1, end);
            if(p >= end)
                return DAPI_ERR_INVALID; /* a trailing ',' */
        }
    }
    return result;
}

enum dapi_err dapi_rows_page_cut(struct dapi_rows *c, struct dapi_buf *out, const char *rows,
                                 size_t len, const uint32_t *seps, size_t nseps)
{
    if(c->fmt != DAPI_ROWS_NDJSON && c->fmt != DAPI_ROWS_JSON)
        return dapi_rows_page(c, out, rows, len);
    if(!len)
        return DAPI_OK;
    for(size_t i = 0; i < nseps; i++) /* (where the writer put them: checked, not trusted) */
        if(seps[i] >= len || rows[seps[i]] != ',' || (i && seps[i] <= seps[i - 1]))
            return DAPI_ERR_INVALID;
    int json = c->fmt == DAPI_ROWS_JSON;
    char *p = dapi_buf_reserve(out, len + 1);
    if(!p)
        return dapi_buf_error(out);
    if(json && c->rows)
        *p++ = ',';
    memcpy(p, rows, len);
    if(!json) { /* each row on its own line */
        for(size_t i = 0; i < nseps; i++)
            p[seps[i]] = '\n';
        p[len] = '\n';
    }
    dapi_buf_commit(out, len + 1 - (json && !c->rows));
    c->rows += nseps + 1;
    return DAPI_OK;
}

/* Where a fed page's text stands: before its first row, inside a row, after a row, after the
 * ',' that says another row follows. */
enum { FEED_START, FEED_ROW, FEED_AFTER, FEED_NEXT };

void dapi_rows_feed_begin(struct dapi_rows *c)
{
    c->feed_state = FEED_START;
    c->feed_depth = c->feed_str = c->feed_esc = 0;
    dapi_buf_reset(&c->row);
}

/* The part [p, e) of a row: copied to out (ndjson, json) or gathered (csv, tsv). */
static enum dapi_err feed_part(struct dapi_rows *c, struct dapi_buf *out, const char *p,
                               const char *e)
{
    if(p == e)
        return DAPI_OK;
    int gather = c->fmt != DAPI_ROWS_NDJSON && c->fmt != DAPI_ROWS_JSON;
    return dapi_buf_add(gather ? &c->row : out, p, (size_t)(e - p));
}

/* A row's last byte was fed: its line (ndjson), or its csv/tsv line from the gathered row. */
static enum dapi_err feed_row_end(struct dapi_rows *c, struct dapi_buf *out)
{
    enum dapi_err result = DAPI_OK;
    if(c->fmt == DAPI_ROWS_NDJSON) {
        result = dapi_buf_addc(out, '\n');
    } else if(c->fmt != DAPI_ROWS_JSON) {
        const char *r = c->row.data ? c->row.data : "";
        if(skip_container(r, r + c->row.len, 0) != r + c->row.len)
            return DAPI_ERR_INVALID;
        result = delimited_row(c, out, r, r + c->row.len);
        dapi_buf_reset(&c->row);
    }
    c->rows++;
    c->feed_state = FEED_AFTER;
    return result;
}

enum dapi_err dapi_rows_feed(struct dapi_rows *c, struct dapi_buf *out, const char *p, size_t n)
{
    const char *end = p + n;
    enum dapi_err result = DAPI_OK;
    while(p < end && !result) {
        if(c->feed_state != FEED_ROW) { /* between rows: blanks, one ',' between two */
            p = ws(p, end);
            if(p == end)
                break;
            if(c->feed_state == FEED_AFTER && *p == ',') {
                c->feed_state = FEED_NEXT;
                p++;
                continue;
            }
            if(c->feed_state == FEED_AFTER || *p != '{')
                return DAPI_ERR_INVALID;
            if(c->fmt == DAPI_ROWS_JSON && c->rows && (result = dapi_buf_addc(out, ',')))
                break;
            c->feed_state = FEED_ROW;
            c->feed_depth = c->feed_str = c->feed_esc = 0;
        }
        /* inside a row: its bytes up to the '}' that closes it */
        const char *q = p;
        for(; q < end; q++) {
            char ch = *q;
            if(c->feed_str) {
                if(c->feed_esc)
                    c->feed_esc = 0;
                else if(ch == '\\')
                    c->feed_esc = 1;
                else if(ch == '"')
                    c->feed_str = 0;
            } else if(ch == '"') {
                c->feed_str = 1;
            } else if(ch == '{' || ch == '[') {
                if(++c->feed_depth > MAX_DEPTH)
                    return DAPI_ERR_INVALID;
            } else if((ch == '}' || ch == ']') && --c->feed_depth == 0) {
                q++;
                break;
            }
        }
        result = feed_part(c, out, p, q);
        if(!result && c->feed_depth == 0)
            result = feed_row_end(c, out);
        p = q;
    }
    return result;
}

enum dapi_err dapi_rows_feed_end(struct dapi_rows *c)
{
    return c->feed_state == FEED_START || c->feed_state == FEED_AFTER ? DAPI_OK : DAPI_ERR_INVALID;
}

enum dapi_err dapi_rows_end(struct dapi_rows *c, struct dapi_buf *out)
{
    return c->fmt == DAPI_ROWS_JSON ? dapi_buf_adds(out, "]\n") : DAPI_OK;
}
