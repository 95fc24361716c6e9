/* libFuzzer driver: the export's row conversion (src/base/rows.c): a page converted whole
 * (dapi_rows_page) against the same page fed a piece at a time (dapi_rows_feed), as the
 * export does for pages too large to hold.
 *
 * The first input byte picks the format (low 2 bits) and the piece size (1 + the rest);
 * the remaining bytes are the page's rows text. Checks:
 *  - whenever the whole conversion accepts the page, the fed one accepts it too, for that
 *    piece size and for the whole text as one piece, and writes exactly the same bytes;
 *  - csv and tsv read every value either way: the two accept exactly the same pages;
 *  - ndjson and json copy rows as they come: what the fed conversion writes while accepting
 *    is never more than the piece it was given plus one byte a row (the row's '\n' or the ','
 *    before it), so out stays bounded by the piece, not the page;
 *  - two pages in a row keep the format's joins (json's ',' between pages). */
#include <stdlib.h>
#include <string.h>

#include "base/rows.h"
#include "fuzz_common.h"

static const char *const names[] = {"a", "b"};

/* The whole conversion of two copies of the page: result, text in out. */
static enum dapi_err whole(enum dapi_rows_format fmt, const char *p, size_t n,
                           struct dapi_buf *out)
{
    struct dapi_rows c;
    dapi_rows_init(&c, fmt);
    enum dapi_err e = dapi_rows_begin(&c, out, names, 2);
    for(int k = 0; k < 2 && !e; k++)
        e = dapi_rows_page(&c, out, p, n);
    if(!e)
        e = dapi_rows_end(&c, out);
    dapi_rows_free(&c);
    return e;
}

/* The fed conversion of two copies, piece bytes at a time. */
static enum dapi_err fed(enum dapi_rows_format fmt, const char *p, size_t n, size_t piece,
                         struct dapi_buf *out)
{
    struct dapi_rows c;
    struct dapi_buf b;
    dapi_rows_init(&c, fmt);
    dapi_buf_init(&b, (size_t)-1 / 2);
    enum dapi_err e = dapi_rows_begin(&c, out, names, 2);
    for(int k = 0; k < 2 && !e; k++) {
        dapi_rows_feed_begin(&c);
        for(size_t at = 0; at < n && !e; at += piece) {
            size_t len = n - at < piece ? n - at : piece;
            uint64_t before = c.rows;
            e = dapi_rows_feed(&c, &b, p + at, len);
            if(!e && (fmt == DAPI_ROWS_NDJSON || fmt == DAPI_ROWS_JSON) &&
               b.len > len + (size_t)(c.rows - before) + 1)
                abort(); /* more out than the piece gave */
            if(!e && b.len)
                e = dapi_buf_add(out, b.data, b.len);
            dapi_buf_reset(&b);
        }
        if(!e)
            e = dapi_rows_feed_end(&c);
    }
    if(!e)
        e = dapi_rows_end(&c, out);
    dapi_buf_free(&b);
    dapi_rows_free(&c);
    return e;
}

static void same(enum dapi_rows_format fmt, const char *p, size_t n, size_t piece,
                 enum dapi_err we, const struct dapi_buf *w)
{
    struct dapi_buf f;
    dapi_buf_init(&f, (size_t)-1 / 2);
    enum dapi_err fe = fed(fmt, p, n, piece, &f);
    int delimited = fmt == DAPI_ROWS_CSV || fmt == DAPI_ROWS_TSV;
    if(!we && fe)
        abort(); /* the whole conversion accepts, the fed one refuses */
    if(delimited && we && !fe)
        abort(); /* csv/tsv: the fed one accepts what the whole one refuses */
    if(!we && (f.len != w->len || (f.len && memcmp(f.data, w->data, f.len) != 0)))
        abort(); /* different bytes */
    dapi_buf_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if(size < 1)
        return 0;
    enum dapi_rows_format fmt = (enum dapi_rows_format)(data[0] & 3);
    size_t piece = 1 + (data[0] >> 2);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    struct dapi_buf w;
    dapi_buf_init(&w, (size_t)-1 / 2);
    enum dapi_err we = whole(fmt, p, n, &w);
    same(fmt, p, n, piece, we, &w);
    same(fmt, p, n, n ? n : 1, we, &w);
    dapi_buf_free(&w);
    return 0;
}
