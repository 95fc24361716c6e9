/* Output formats of `dapi query`: csv, tsv, json, ndjson and table, written page by page
 * (nothing but the table's column widths is kept between pages). The exact rules for each
 * format are in docs/cli.md. */
#ifndef DAPI_CLI_FORMAT_H
#define DAPI_CLI_FORMAT_H

#include <stddef.h>
#include "base/buf.h"
#include "dapi/client.h"
#include "dapi/err.h"

enum dapi_format_kind {
    DAPI_FORMAT_CSV,
    DAPI_FORMAT_TSV,
    DAPI_FORMAT_JSON,
    DAPI_FORMAT_NDJSON,
    DAPI_FORMAT_TABLE,
};

/* Sets *kind from a name ("csv", "tsv", "json", "ndjson", "table"); -1 if unknown. */
int dapi_format_parse(const char *name, enum dapi_format_kind *kind);

/* A buffered output: to a file descriptor (fd >= 0; flushed every 64 KiB) or, for tests, to
 * memory (fd < 0; everything stays in buf, at most mem_cap bytes). */
struct dapi_out {
    int fd;
    struct dapi_buf buf;
    int broken_pipe; /* a write failed with EPIPE: the reader has gone */
    int error;       /* errno of the write that failed, 0 if none */
    /* If set, called once just before the first byte is written to fd (then cleared):
     * `dapi query` clears its progress line there when stdout is the same terminal. */
    void (*before_write)(void *arg);
    void *before_write_arg;
};

void dapi_out_init(struct dapi_out *o, int fd, size_t mem_cap);
/* Writes what is buffered to fd (no-op in memory mode). DAPI_ERR_IO on a failed write. */
enum dapi_err dapi_out_flush(struct dapi_out *o);
void dapi_out_free(struct dapi_out *o);

struct dapi_format;

/* Creates a formatter writing to o (borrowed: o must outlive it). Free with
 * dapi_format_free. */
enum dapi_err dapi_format_new(struct dapi_format **out, enum dapi_format_kind kind,
                              struct dapi_out *o);
void dapi_format_free(struct dapi_format *f);
/* csv and tsv: leave out the header row (other formats have none to leave out). */
void dapi_format_no_header(struct dapi_format *f);

/* Writes the rows of one page (borrowed for the call). The first row seen fixes the columns;
 * a row with other columns is refused with DAPI_ERR_INVALID and a one-line reason in err.
 * Returns DAPI_ERR_IO when the output failed (see o->broken_pipe). */
enum dapi_err dapi_format_page(struct dapi_format *f, const struct dapi_page *page, char *err,
                               size_t errlen);
/* Writes what ends the output (json's "]", table's row count) and flushes. */
enum dapi_err dapi_format_finish(struct dapi_format *f);
/* Rows written so far. */
unsigned long long dapi_format_rows(const struct dapi_format *f);

/* Terminal display width of UTF-8 text: combining marks count 0, East Asian wide and
 * emoji characters 2, anything else 1. Exposed for tests. */
size_t dapi_format_width(const char *s, size_t len);

#endif
