/* A materialised result: the rows rendered once as JSON, cut into pages, in one file.
 *
 * File layout (little-endian u64s):
 *   header  "DAPIRES1" rows pages rows_off rows_len index_off total_len 0   (64 bytes)
 *   rows    page 1's rows joined by ',' then page 2's … (no separator between pages)
 *   index   pages + 1 offsets into rows: page p is rows[index[p-1], index[p])
 * Written to a unique temporary name, fsynced, then renamed: a result file that exists is
 * complete.
 * Serving page p is one lookup and one copy, whatever p is.
 *
 * While the result is written, its complete pages can be served already (a "live" result,
 * below): the writer publishes each page once all its rows are written to the temporary
 * file, never a partial one, and a reader copies a published page from that file. */
#ifndef DAPI_RESULT_H
#define DAPI_RESULT_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "dapi/err.h"
#include "engine/engine.h"

#define DAPI_PAGE_ROWS 100

struct dapi_result_writer;

struct dapi_result_limits {
    uint64_t max_rows;
    uint64_t max_bytes;
    /* what max_bytes is, for the message (NULL: "--max-result-bytes") */
    const char *bytes_setting;
};

/* Starts writing the result to path (via a unique temporary name beside it).
 * Errors: DAPI_ERR_TOO_LARGE (a limit), DAPI_ERR_BUSY (no space left on the disk or quota
 * exceeded: the same query may well fit later), DAPI_ERR_IO (other storage errors); the
 * writer's error text says which (here and from the sink and finish). */
enum dapi_err dapi_result_writer_open(struct dapi_result_writer **out, const char *path,
                                      const struct dapi_result_limits *limits);
/* The engine sink that feeds this writer (ctx = the writer). */
extern const struct dapi_sink dapi_result_sink;
/* Finishes: writes index and header, fsyncs, renames into place. */
enum dapi_err dapi_result_writer_finish(struct dapi_result_writer *w, uint64_t *rows,
                                        uint64_t *pages, uint64_t *bytes);
/* Why the writer stopped the run (e.g. which limit), or NULL; borrowed. */
const char *dapi_result_writer_error(const struct dapi_result_writer *w);
/* The columns of the result the writer got (de-duplicated names as the pages' keys, DuckDB's
 * type names), borrowed until the writer is freed; -1 before the run began. */
int dapi_result_writer_columns(const struct dapi_result_writer *w, size_t *n,
                               const char *const **names, const char *const **types);
/* Frees the writer; removes the temporary file if not finished. */
void dapi_result_writer_free(struct dapi_result_writer *w);

/* ---- the published pages of a result being written ------------------------------------
 * Reference-counted and independent of the writer's lifetime: it reads the temporary file
 * through its own descriptor, so the bytes stay readable after the rename (finished) or the
 * unlink (failed). Thread-safe: one writer publishes, any thread reads. */
struct dapi_result_live;

/* The writer's live result (a new reference: release with dapi_result_live_unref). */
struct dapi_result_live *dapi_result_writer_live(struct dapi_result_writer *w);
/* cb(arg, pages) is called on the writing thread each time more pages are published (pages:
 * how many are now). Set before the first row. */
void dapi_result_writer_on_publish(struct dapi_result_writer *w,
                                   void (*cb)(void *arg, uint64_t pages), void *arg);
void dapi_result_live_ref(struct dapi_result_live *l);
void dapi_result_live_unref(struct dapi_result_live *l);
/* Pages published so far (complete and readable). */
uint64_t dapi_result_live_pages(struct dapi_result_live *l);
/* Someone waits for page (0: nobody): the writer publishes as soon as that page is complete
 * rather than at its next periodic flush. */
void dapi_result_live_want(struct dapi_result_live *l, uint64_t page);
/* THE way to the bytes of a page of a result being written: appends page's rows (1-based; the
 * same bytes dapi_result_page gives once the result is finished) to out. 1: done; 0: not
 * published (yet); -1: it cannot be read (I/O error, no memory). */
int dapi_result_live_page(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out);

struct dapi_result; /* an opened (mapped) result */

/* Maps the file at path and checks its structure. DAPI_ERR_IO if missing or damaged. */
enum dapi_err dapi_result_open(struct dapi_result **out, const char *path);
void dapi_result_close(struct dapi_result *r);
uint64_t dapi_result_pages(const struct dapi_result *r);
uint64_t dapi_result_rows(const struct dapi_result *r);
/* The rows of page (1-based) as a borrowed slice; empty past the end. */
void dapi_result_page(const struct dapi_result *r, uint64_t page, const char **data, size_t *len);

#endif
