/* A materialised result: the rows rendered once as JSON, cut into pages, in one file.
 *
 * File layout (little-endian u64s):
 *   header  "DAPIRES1" rows pages rows_off rows_len index_off total_len checksum   (64 bytes)
 *   rows    page 1's rows joined by ',' then page 2's … (no separator between pages)
 *   index   pages + 1 offsets into rows: page p is rows[index[p-1], index[p])
 * Written to a unique temporary name, then renamed: a result file that exists was complete
 * when written. It is not fsynced (a result can be computed again): after a power loss it may
 * be torn, which its checksum reveals (a 64-bit hash of the file with the checksum field as
 * zero; 0 = none, files written before it existed) — see dapi_result_verify.
 * Serving page p is one lookup and one copy, whatever p is. */
#ifndef DAPI_RESULT_H
#define DAPI_RESULT_H

#include <stddef.h>
#include <stdint.h>
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
/* Finishes: writes index and header (with the checksum), renames into place. No fsync. */
enum dapi_err dapi_result_writer_finish(struct dapi_result_writer *w, uint64_t *rows,
                                        uint64_t *pages, uint64_t *bytes);
/* Why the writer stopped the run (e.g. which limit), or NULL; borrowed. */
const char *dapi_result_writer_error(const struct dapi_result_writer *w);
/* Frees the writer; removes the temporary file if not finished. */
void dapi_result_writer_free(struct dapi_result_writer *w);

struct dapi_result; /* an opened (mapped) result */

/* Maps the file at path and checks its structure. DAPI_ERR_IO if missing or damaged. */
enum dapi_err dapi_result_open(struct dapi_result **out, const char *path);
void dapi_result_close(struct dapi_result *r);
/* Reads the whole file and compares it with its checksum: DAPI_ERR_IO if it differs (torn by
 * a power loss or damaged), DAPI_OK if it matches or the file has none. */
enum dapi_err dapi_result_verify(const struct dapi_result *r);
uint64_t dapi_result_pages(const struct dapi_result *r);
uint64_t dapi_result_rows(const struct dapi_result *r);
/* The rows of page (1-based) as a borrowed slice; empty past the end. */
void dapi_result_page(const struct dapi_result *r, uint64_t page, const char **data, size_t *len);

#endif
