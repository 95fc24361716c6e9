/* A stored result converted for the export (src/api/export.c) where the rows cannot simply
 * be streamed: Parquet, written by DuckDB with the result's real column types. */
#ifndef DAPI_STORE_EXPORT_H
#define DAPI_STORE_EXPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "dapi/err.h"
#include "store/result.h"

/* Writes r's rows as a Parquet file of the n columns names[i] with DuckDB types types[i],
 * working in a new directory under tmp_dir (removed before returning), DuckDB limited to
 * memory_limit (NULL: its default) and max_spill_bytes of spill files (<= 0: its default). On DAPI_OK *fd is the open file (already unlinked:
 * close it when sent) of *size bytes. Stops (DAPI_ERR_SHUTDOWN) between pages when *stop
 * becomes non-zero. DAPI_ERR_BUSY: the disk is full. *msg: an owned explanation on error. */
enum dapi_err dapi_result_parquet(const struct dapi_result *r, const char *const *names,
                                  const char *const *types, size_t n, const char *tmp_dir,
                                  const char *memory_limit, int64_t max_spill_bytes,
                                  const atomic_int *stop, int *fd, uint64_t *size, char **msg);

#endif
