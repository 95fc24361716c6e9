/* Rows as stored in a result page — JSON objects joined by ',' (keys: the column names in
 * column order; values as src/engine/render.c writes them) — turned into the export formats
 * (docs/api.md "Export"). Pure text work, one page at a time (memory bounded by a page), or a
 * piece of a page at a time (dapi_rows_feed: bounded by the longest row).
 *
 *  - ndjson: each row object as stored, one per line (LF);
 *  - json:   one array of the row objects: "[" rows joined by "," "]";
 *  - csv:    RFC 4180: a header row of the column names, then one line per row, CRLF; a
 *            string is decoded and quoted when it holds ',', '"', CR or LF or is empty (so ""
 *            is the empty string and an empty unquoted field is NULL); numbers and booleans as
 *            rendered; lists, structs and maps as their JSON text (quoted: they hold commas);
 *  - tsv:    a header row, one line per row, LF; TAB, LF, CR and backslash in a value are
 *            written \t \n \r \\ and NULL is \N (the PostgreSQL text convention), so "" and
 *            NULL differ here too. */
#ifndef DAPI_ROWS_H
#define DAPI_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "dapi/err.h"

enum dapi_rows_format { DAPI_ROWS_CSV, DAPI_ROWS_TSV, DAPI_ROWS_NDJSON, DAPI_ROWS_JSON };

/* A conversion in progress. */
struct dapi_rows {
    enum dapi_rows_format fmt;
    uint64_t rows;       /* rows written so far */
    struct dapi_buf tmp; /* a decoded string */
    /* a page fed a piece at a time (dapi_rows_feed): where the text stands, the row being
     * gathered (csv/tsv) */
    struct dapi_buf row;
    int feed_state, feed_depth, feed_str, feed_esc;
};

/* One CSV field (RFC 4180: quoted when it holds , " CR or LF, or is an empty string — NULL is
 * an empty unquoted field) or TSV field (\t \n \r \\ escaped), written through put(ctx, …):
 * shared by the export and the CLI's output. */
typedef enum dapi_err (*dapi_put_fn)(void *ctx, const char *p, size_t n);
enum dapi_err dapi_csv_field(dapi_put_fn put, void *ctx, const char *s, size_t n, int is_str);
enum dapi_err dapi_tsv_field(dapi_put_fn put, void *ctx, const char *s, size_t n);

void dapi_rows_init(struct dapi_rows *c, enum dapi_rows_format fmt);
void dapi_rows_free(struct dapi_rows *c);
/* What comes before the rows into out: csv/tsv the header row of the n column names (none
 * when n is 0: the column names are not known), json "[". */
enum dapi_err dapi_rows_begin(struct dapi_rows *c, struct dapi_buf *out, const char *const *names,
                              size_t n);
/* One page's rows (len bytes; may be empty) appended to out in the format. DAPI_ERR_INVALID
 * if they are not JSON objects joined by ','. */
enum dapi_err dapi_rows_page(struct dapi_rows *c, struct dapi_buf *out, const char *rows,
                             size_t len);
/* The same for a page whose row boundaries are known: its nseps ',' between rows are at
 * rows[seps[i]] (increasing; checked to be ','), as the result writer joined the rows it
 * rendered. NDJSON and JSON then copy the page whole (no scan); csv and tsv, which read every
 * value, are as dapi_rows_page. */
enum dapi_err dapi_rows_page_cut(struct dapi_rows *c, struct dapi_buf *out, const char *rows,
                                 size_t len, const uint32_t *seps, size_t nseps);
/* The same as dapi_rows_page for a page too large to hold: its rows text given a piece at a
 * time (n bytes at p, in order), between dapi_rows_feed_begin and dapi_rows_feed_end (which
 * says DAPI_ERR_INVALID if the text stopped inside a row or after a ','). NDJSON and JSON
 * rows are copied as they come; csv and tsv gather one row at a time. So out takes only what
 * the piece gave (plus a row), and memory is bounded by the longest row, not by the page. */
void dapi_rows_feed_begin(struct dapi_rows *c);
enum dapi_err dapi_rows_feed(struct dapi_rows *c, struct dapi_buf *out, const char *p, size_t n);
enum dapi_err dapi_rows_feed_end(struct dapi_rows *c);
/* What ends the body: json "]". */
enum dapi_err dapi_rows_end(struct dapi_rows *c, struct dapi_buf *out);

/* The end of the JSON value starting at p[0] (an object, array, string, number or literal),
 * or NULL if it is not well-formed before end. Strings are checked for escapes, nesting is
 * followed (up to 1,000 levels). */
const char *dapi_rows_skip_value(const char *p, const char *end);
/* A JSON string literal (with its quotes) decoded to UTF-8 into out. */
enum dapi_err dapi_rows_unquote(const char *lit, size_t len, struct dapi_buf *out);

#endif
