/* A stored result converted for the export (src/api/export.c): its pages into the text formats
 * with bounded memory, and Parquet, written by DuckDB with the result's real column types. */
#ifndef DAPI_STORE_EXPORT_H
#define DAPI_STORE_EXPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "base/rows.h"
#include "dapi/err.h"
#include "store/result.h"

/* Where a conversion's output goes, a batch at a time: 0, or an error that stops it. */
typedef enum dapi_err (*dapi_export_flush_fn)(void *arg, struct dapi_buf *out);

/* Converts a page's rows text (len bytes; its nseps ',' between rows at seps, when known) with
 * conv into out. A text of DAPI_PAGE_STREAM_MIN bytes or more is fed a piece at a time
 * (dapi_rows_feed), flush called whenever out holds batch bytes or more, so out never holds
 * the whole page converted; a smaller one is converted whole (the caller writes out). */
enum dapi_err dapi_export_rows(struct dapi_rows *conv, struct dapi_buf *out, const char *rows,
                               size_t len, const uint32_t *seps, size_t nseps, size_t batch,
                               dapi_export_flush_fn flush, void *arg);
/* The same for page of r: one of DAPI_PAGE_STREAM_MIN decoded bytes or more is decoded a piece
 * at a time as it is converted (memory: zstd's window, a piece, and the longest row — not the
 * page, which can decode to hundreds of MB from a few KB stored); a smaller one is decoded
 * into page_buf whole. DAPI_ERR_IO: the page is damaged. */
enum dapi_err dapi_export_page(const struct dapi_result *r, uint64_t page, struct dapi_rows *conv,
                               struct dapi_buf *out, struct dapi_buf *page_buf, size_t batch,
                               dapi_export_flush_fn flush, void *arg);

/* Writes r's rows as a Parquet file of the n columns names[i] with DuckDB types types[i],
 * working in a new directory under tmp_dir (removed before returning), DuckDB limited to
 * memory_limit (NULL: its default) and max_spill_bytes of spill files (<= 0: its default).
 * On DAPI_OK *fd is the open file (already unlinked: close it when sent) of *size bytes. Stops (DAPI_ERR_SHUTDOWN) between pages when *stop
 * becomes non-zero. DAPI_ERR_BUSY: the disk is full. *msg: an owned explanation on error. */
enum dapi_err dapi_result_parquet(const struct dapi_result *r, const char *const *names,
                                  const char *const *types, size_t n, const char *tmp_dir,
                                  const char *memory_limit, int64_t max_spill_bytes,
                                  const atomic_int *stop, int *fd, uint64_t *size, char **msg);

#endif
