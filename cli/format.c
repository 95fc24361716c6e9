/* Output formats of `dapi query` (rules in docs/cli.md). Cells arrive as raw JSON text from
 * the client's page scanner: strings are decoded to UTF-8 for csv/tsv/table, numbers and
 * booleans are copied as the server wrote them, and json/ndjson pass whole rows through. */
#include "format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/rows.h"
#include "client/unquote.h"

#define FLUSH_AT (64u * 1024)
#define OUT_MAX ((size_t)1 << 30)
#define CELL_MAX ((size_t)256 << 20)
#define TABLE_MAX_WIDTH 40

struct dapi_format {
    enum dapi_format_kind kind;
    struct dapi_out *o;
    int no_header; /* csv/tsv: no header row */
    unsigned long long rows;
    size_t ncols;
    struct dapi_buf keys;   /* the first row's raw key literals, back to back */
    size_t *key_off;        /* ncols + 1 offsets into keys */
    size_t *width;          /* table: column widths */
    unsigned char *numeric; /* table: every non-null value so far is a number */
    struct dapi_buf a, b;   /* scratch */
};

int dapi_format_parse(const char *name, enum dapi_format_kind *kind)
{
    static const char *const names[] = {"csv", "tsv", "json", "ndjson", "table"};
    for(size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if(strcmp(name, names[i]) == 0) {
            *kind = (enum dapi_format_kind)i;
            return 0;
        }
    }
    return -1;
}

/* ---- output ------------------------------------------------------------------------- */

void dapi_out_init(struct dapi_out *o, int fd, size_t mem_cap)
{
    memset(o, 0, sizeof *o);
    o->fd = fd;
    dapi_buf_init(&o->buf, fd >= 0 ? OUT_MAX : mem_cap);
}

enum dapi_err dapi_out_flush(struct dapi_out *o)
{
    if(o->error)
        return DAPI_ERR_IO;
    if(o->fd < 0)
        return DAPI_OK;
    if(o->buf.len && o->before_write) {
        void (*fn)(void *) = o->before_write;
        o->before_write = NULL;
        fn(o->before_write_arg);
    }
    size_t off = 0;
    while(off < o->buf.len) {
        ssize_t w = write(o->fd, o->buf.data + off, o->buf.len - off);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0) {
            o->error = w < 0 ? errno : EIO;
            o->broken_pipe = o->error == EPIPE;
            return DAPI_ERR_IO;
        }
        off += (size_t)w;
    }
    dapi_buf_reset(&o->buf);
    return DAPI_OK;
}

void dapi_out_free(struct dapi_out *o)
{
    dapi_buf_free(&o->buf);
}

static enum dapi_err put(struct dapi_format *f, const void *p, size_t n)
{
    if(dapi_buf_add(&f->o->buf, p, n)) {
        if(!f->o->error)
            f->o->error = ENOMEM;
        return DAPI_ERR_IO;
    }
    return DAPI_OK;
}

static enum dapi_err puts_(struct dapi_format *f, const char *s)
{
    return put(f, s, strlen(s));
}

static enum dapi_err row_done(struct dapi_format *f)
{
    f->rows++;
    if(f->o->fd >= 0 && f->o->buf.len >= FLUSH_AT)
        return dapi_out_flush(f->o);
    return DAPI_OK;
}

/* ---- cell text ----------------------------------------------------------------------- */

/* Appends JSON text without the whitespace outside strings. */
static enum dapi_err compact(struct dapi_buf *out, const char *p, size_t n)
{
    enum dapi_err result = DAPI_OK;
    int in_str = 0;
    size_t run = 0;
    for(size_t i = 0; i < n && !result; i++) {
        char c = p[i];
        if(in_str) {
            if(c == '\\')
                i++;
            else if(c == '"')
                in_str = 0;
            continue;
        }
        if(c == '"') {
            in_str = 1;
        } else if(c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            result = dapi_buf_add(out, p + run, i - run);
            run = i + 1;
        }
    }
    if(!result && n > run)
        result = dapi_buf_add(out, p + run, n - run);
    return result;
}

/* The text of a value for csv/tsv/table, appended to out: a string decoded, a nested value
 * as compact JSON, anything else as written. *is_null / *is_str describe the value. */
static enum dapi_err cell_text(const struct dapi_cell *c, struct dapi_buf *out, int *is_null,
                               int *is_str)
{
    *is_null = c->val[0] == 'n';
    *is_str = c->val[0] == '"';
    if(*is_null)
        return DAPI_OK;
    if(*is_str)
        return dapi_client_unquote_buf(c->val, c->val_len, out);
    if(c->val[0] == '{' || c->val[0] == '[')
        return compact(out, c->val, c->val_len);
    return dapi_buf_add(out, c->val, c->val_len);
}

/* CSV and TSV fields through the shared writers (src/base/rows.c: the export's too). */
static enum dapi_err put_fn(void *ctx, const char *p, size_t n)
{
    return put(ctx, p, n);
}

static enum dapi_err put_csv_field(struct dapi_format *f, const char *s, size_t n, int is_str)
{
    return dapi_csv_field(put_fn, f, s, n, is_str);
}

static enum dapi_err put_tsv_field(struct dapi_format *f, const char *s, size_t n)
{
    return dapi_tsv_field(put_fn, f, s, n);
}

/* ---- display width ------------------------------------------------------------------- */

static unsigned next_cp(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    unsigned c = *p++;
    int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if(n)
        c &= 0x3F >> n;
    for(; n > 0 && p < end && (*p & 0xC0) == 0x80; n--)
        c = (c << 6) | (*p++ & 0x3F);
    *pp = p;
    return c;
}

static int cp_width(unsigned c)
{
    static const unsigned zero[][2] = {{0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD},
                                       {0x0610, 0x061A}, {0x064B, 0x065F}, {0x1AB0, 0x1AFF},
                                       {0x1DC0, 0x1DFF}, {0x200B, 0x200F}, {0x20D0, 0x20FF},
                                       {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xE0100, 0xE01EF}};
    static const unsigned wide[][2] = {
        {0x1100, 0x115F},   {0x231A, 0x231B},   {0x2329, 0x232A},   {0x23E9, 0x23EC},
        {0x25FD, 0x25FE},   {0x2614, 0x2615},   {0x2648, 0x2653},   {0x26AA, 0x26AB},
        {0x2705, 0x2705},   {0x274C, 0x274C},   {0x2E80, 0x303E},   {0x3041, 0x33FF},
        {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},   {0xA000, 0xA4CF},   {0xA960, 0xA97F},
        {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},   {0xFE10, 0xFE19},   {0xFE30, 0xFE6F},
        {0xFF00, 0xFF60},   {0xFFE0, 0xFFE6},   {0x1F300, 0x1F64F}, {0x1F680, 0x1F6FF},
        {0x1F900, 0x1F9FF}, {0x1FA70, 0x1FAFF}, {0x20000, 0x3FFFD}};
    for(size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        if(c >= zero[i][0] && c <= zero[i][1])
            return 0;
    for(size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if(c >= wide[i][0] && c <= wide[i][1])
            return 2;
    return 1;
}

size_t dapi_format_width(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    size_t w = 0;
    while(p < end)
        w += (size_t)cp_width(next_cp(&p, end));
    return w;
}

/* How a code point is shown in a table: tab, CR and LF as \t \r \n, other control
 * characters (C0, DEL, C1) as U+FFFD, so data can neither break the layout nor send escape
 * sequences to the terminal. Returns its width; *rep is the replacement text or NULL. */
static int shown(unsigned c, const char **rep)
{
    *rep = NULL;
    if(c == '\t' || c == '\n' || c == '\r') {
        *rep = c == '\t' ? "\\t" : c == '\n' ? "\\n" : "\\r";
        return 2;
    }
    if(c < 0x20 || (c >= 0x7F && c <= 0x9F)) {
        *rep = "\xEF\xBF\xBD";
        return 1;
    }
    return cp_width(c);
}

/* Appends the table form of s to out, cut to max columns with a final "…" if wider. */
static enum dapi_err display(const char *s, size_t n, size_t max, struct dapi_buf *out)
{
    enum dapi_err result = DAPI_OK;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    const char *rep;
    size_t full = 0, w = 0;
    while(p < end)
        full += (size_t)shown(next_cp(&p, end), &rep);
    p = (const unsigned char *)s;
    while(p < end && !result) {
        const unsigned char *start = p;
        size_t cw = (size_t)shown(next_cp(&p, end), &rep);
        if(full > max && w + cw > max - 1)
            return dapi_buf_adds(out, "\xE2\x80\xA6"); /* … */
        w += cw;
        result = rep ? dapi_buf_adds(out, rep) : dapi_buf_add(out, start, (size_t)(p - start));
    }
    return result;
}

/* ---- rows ---------------------------------------------------------------------------- */

static enum dapi_err set_header(struct dapi_format *f, const struct dapi_cell *cells, size_t n)
{
    f->ncols = n;
    f->key_off = calloc(n + 1, sizeof *f->key_off);
    f->width = calloc(n + 1, sizeof *f->width);
    f->numeric = calloc(n + 1, 1);
    if(!f->key_off || !f->width || !f->numeric)
        return DAPI_ERR_NOMEM;
    for(size_t i = 0; i < n; i++) {
        f->key_off[i] = f->keys.len;
        if(dapi_buf_add(&f->keys, cells[i].key, cells[i].key_len))
            return DAPI_ERR_NOMEM;
        f->numeric[i] = 1;
    }
    f->key_off[n] = f->keys.len;
    return DAPI_OK;
}

static int same_columns(const struct dapi_format *f, const struct dapi_cell *cells, size_t n)
{
    if(n != f->ncols)
        return 0;
    for(size_t i = 0; i < n; i++) {
        size_t kl = f->key_off[i + 1] - f->key_off[i];
        if(cells[i].key_len != kl || memcmp(cells[i].key, f->keys.data + f->key_off[i], kl))
            return 0;
    }
    return 1;
}

/* The decoded name of column i, into f->a (reset first). */
static enum dapi_err key_text(struct dapi_format *f, size_t i)
{
    dapi_buf_reset(&f->a);
    if(dapi_buf_add(&f->a, "", 0))
        return DAPI_ERR_NOMEM;
    return dapi_client_unquote_buf(f->keys.data + f->key_off[i], f->key_off[i + 1] - f->key_off[i],
                                   &f->a);
}

static enum dapi_err put_delimited_header(struct dapi_format *f)
{
    enum dapi_err result = DAPI_OK;
    int csv = f->kind == DAPI_FORMAT_CSV;
    for(size_t i = 0; i < f->ncols && !result; i++) {
        if(i)
            result = put(f, csv ? "," : "\t", 1);
        if(!result)
            result = key_text(f, i);
        if(!result)
            result = csv ? put_csv_field(f, f->a.data, f->a.len, 1)
                         : put_tsv_field(f, f->a.data, f->a.len);
    }
    if(!result)
        result = puts_(f, csv ? "\r\n" : "\n");
    return result;
}

static enum dapi_err put_delimited_row(struct dapi_format *f, const struct dapi_cell *cells)
{
    enum dapi_err result = DAPI_OK;
    int csv = f->kind == DAPI_FORMAT_CSV;
    for(size_t i = 0; i < f->ncols && !result; i++) {
        int is_null, is_str;
        if(i)
            result = put(f, csv ? "," : "\t", 1);
        dapi_buf_reset(&f->a);
        if(!result)
            result = dapi_buf_add(&f->a, "", 0);
        if(!result)
            result = cell_text(&cells[i], &f->a, &is_null, &is_str);
        if(!result && !is_null)
            result = csv ? put_csv_field(f, f->a.data, f->a.len, is_str)
                         : put_tsv_field(f, f->a.data, f->a.len);
    }
    if(!result)
        result = puts_(f, csv ? "\r\n" : "\n");
    return result;
}

/* Table: the display text of cell i of a row (cells NULL: of the header) into f->b;
 * *is_num (if not NULL) tells whether the value is a JSON number. */
static enum dapi_err table_cell(struct dapi_format *f, const struct dapi_cell *cells, size_t i,
                                size_t max, int *is_num)
{
    enum dapi_err result;
    int is_null = 0, is_str = 0;
    dapi_buf_reset(&f->a);
    dapi_buf_reset(&f->b);
    if(!cells) {
        result = key_text(f, i);
    } else {
        result = dapi_buf_add(&f->a, "", 0);
        if(!result)
            result = cell_text(&cells[i], &f->a, &is_null, &is_str);
        if(!result && is_null)
            result = dapi_buf_adds(&f->a, "NULL");
    }
    if(is_num)
        *is_num = cells && !is_null && !is_str &&
                  (cells[i].val[0] == '-' || (cells[i].val[0] >= '0' && cells[i].val[0] <= '9'));
    if(!result)
        result = dapi_buf_add(&f->b, "", 0);
    if(!result)
        result = display(f->a.data, f->a.len, max, &f->b);
    return result;
}

static enum dapi_err pad(struct dapi_format *f, size_t n)
{
    static const char spaces[] = "                                        ";
    enum dapi_err result = DAPI_OK;
    while(n > 0 && !result) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        result = put(f, spaces, k);
        n -= k;
    }
    return result;
}

/* One table line: the header (cells NULL) or a row. */
static enum dapi_err table_line(struct dapi_format *f, const struct dapi_cell *cells)
{
    enum dapi_err result = DAPI_OK;
    for(size_t i = 0; i < f->ncols && !result; i++) {
        if(i)
            result = put(f, " | ", 3);
        if(!result)
            result = table_cell(f, cells, i, TABLE_MAX_WIDTH, NULL);
        if(result)
            break;
        size_t w = dapi_format_width(f->b.data, f->b.len);
        size_t gap = f->width[i] > w ? f->width[i] - w : 0;
        int right = f->numeric[i];
        if(right)
            result = pad(f, gap);
        if(!result)
            result = put(f, f->b.data, f->b.len);
        if(!result && !right && i + 1 < f->ncols)
            result = pad(f, gap);
    }
    if(!result)
        result = put(f, "\n", 1);
    return result;
}

/* Grows the table's widths (and settles numeric columns) to fit this page. */
static enum dapi_err table_measure(struct dapi_format *f, const struct dapi_page *page,
                                   int with_header)
{
    enum dapi_err result = DAPI_OK;
    size_t rows = dapi_page_rows(page);
    for(size_t i = 0; i < f->ncols && !result; i++) {
        if(with_header) {
            result = table_cell(f, NULL, i, TABLE_MAX_WIDTH, NULL);
            if(!result)
                f->width[i] = dapi_format_width(f->b.data, f->b.len);
        }
        for(size_t r = 0; r < rows && !result; r++) {
            size_t n;
            const struct dapi_cell *cells = dapi_page_row(page, r, &n);
            int is_num;
            result = table_cell(f, cells, i, TABLE_MAX_WIDTH, &is_num);
            size_t w = result ? 0 : dapi_format_width(f->b.data, f->b.len);
            if(w > f->width[i])
                f->width[i] = w;
            if(with_header && !is_num && cells[i].val[0] != 'n')
                f->numeric[i] = 0;
        }
    }
    return result;
}

static enum dapi_err table_rule(struct dapi_format *f)
{
    enum dapi_err result = DAPI_OK;
    for(size_t i = 0; i < f->ncols && !result; i++) {
        if(i)
            result = put(f, "-+-", 3);
        for(size_t k = 0; k < f->width[i] && !result; k++)
            result = put(f, "-", 1);
    }
    if(!result)
        result = put(f, "\n", 1);
    return result;
}

enum dapi_err dapi_format_page(struct dapi_format *f, const struct dapi_page *page, char *err,
                               size_t errlen)
{
    enum dapi_err result = DAPI_OK;
    size_t rows = dapi_page_rows(page);
    int first = 0;
    if(rows == 0)
        return DAPI_OK;
    size_t n;
    const struct dapi_cell *cells = dapi_page_row(page, 0, &n);
    if(!f->key_off) {
        first = 1;
        result = set_header(f, cells, n);
        if(result) {
            snprintf(err, errlen, "out of memory");
            return result;
        }
    }
    for(size_t r = 0; r < rows; r++) {
        cells = dapi_page_row(page, r, &n);
        if(!same_columns(f, cells, n)) {
            snprintf(err, errlen, "row %llu does not have the columns of the first row",
                     f->rows + r + 1);
            return DAPI_ERR_INVALID;
        }
    }
    if(f->kind == DAPI_FORMAT_TABLE) {
        result = table_measure(f, page, first);
        if(!result && first)
            result = table_line(f, NULL);
        if(!result && first)
            result = table_rule(f);
    } else if(first && !f->no_header &&
              (f->kind == DAPI_FORMAT_CSV || f->kind == DAPI_FORMAT_TSV)) {
        result = put_delimited_header(f);
    }
    for(size_t r = 0; r < rows && !result; r++) {
        cells = dapi_page_row(page, r, &n);
        switch(f->kind) {
        case DAPI_FORMAT_CSV:
        case DAPI_FORMAT_TSV: result = put_delimited_row(f, cells); break;
        case DAPI_FORMAT_TABLE: result = table_line(f, cells); break;
        case DAPI_FORMAT_JSON:
        case DAPI_FORMAT_NDJSON: {
            size_t len;
            const char *text = dapi_page_row_json(page, r, &len);
            if(f->kind == DAPI_FORMAT_JSON)
                result = puts_(f, f->rows ? ",\n" : "[\n");
            if(!result && compact(&f->o->buf, text, len)) {
                f->o->error = ENOMEM;
                result = DAPI_ERR_IO;
            }
            if(!result && f->kind == DAPI_FORMAT_NDJSON)
                result = put(f, "\n", 1);
            break;
        }
        }
        if(!result)
            result = row_done(f);
    }
    if(result && err && errlen)
        snprintf(err, errlen, "%s", f->o->error ? strerror(f->o->error) : "out of memory");
    return result;
}

enum dapi_err dapi_format_finish(struct dapi_format *f)
{
    enum dapi_err result = DAPI_OK;
    if(f->kind == DAPI_FORMAT_JSON) {
        result = puts_(f, f->rows ? "\n]\n" : "[]\n");
    } else if(f->kind == DAPI_FORMAT_TABLE) {
        char line[64];
        snprintf(line, sizeof line, "(%llu row%s)\n", f->rows, f->rows == 1 ? "" : "s");
        result = puts_(f, line);
    }
    if(!result)
        result = dapi_out_flush(f->o);
    return result;
}

unsigned long long dapi_format_rows(const struct dapi_format *f)
{
    return f->rows;
}

enum dapi_err dapi_format_new(struct dapi_format **out, enum dapi_format_kind kind,
                              struct dapi_out *o)
{
    struct dapi_format *f = calloc(1, sizeof *f);
    *out = NULL;
    if(!f)
        return DAPI_ERR_NOMEM;
    f->kind = kind;
    f->o = o;
    dapi_buf_init(&f->keys, CELL_MAX);
    dapi_buf_init(&f->a, CELL_MAX);
    dapi_buf_init(&f->b, CELL_MAX);
    *out = f;
    return DAPI_OK;
}

void dapi_format_no_header(struct dapi_format *f)
{
    f->no_header = 1;
}

void dapi_format_free(struct dapi_format *f)
{
    if(!f)
        return;
    dapi_buf_free(&f->keys);
    dapi_buf_free(&f->a);
    dapi_buf_free(&f->b);
    free(f->key_off);
    free(f->width);
    free(f->numeric);
    free(f);
}
