/* A materialised result: the rows rendered once as JSON, cut into pages of DAPI_PAGE_ROWS
 * rows, each page stored as one zstd frame (src/store/codec.h), in one file.
 *
 * File layout (little-endian u64s), "DAPIRES2":
 *   header  "DAPIRES2" rows pages data_off data_len index_off total_len id   (64 bytes)
 *   data    page 1's frame, page 2's frame … (data_off = 64): each frame decodes to the
 *           page's rows joined by ','
 *   index   pages + 1 offsets into data: page p's frame is data[index[p-1], index[p]),
 *           index[0] = 0, strictly increasing, index[pages] = data_len; then `pages`
 *           decoded lengths: page p decodes to exactly lens[p-1] bytes
 *   id      8 random bytes: the result's identity (ETags, the decoded-page cache); a hard
 *           link (a reused result) shares it, as it shares the rows
 * The previous format, "DAPIRES1" (same header without id; the rows stored as text,
 * index = pages + 1 offsets into them), is still read: state directories survive upgrades.
 * Written to a unique temporary name, then renamed: a result file that exists was complete
 * when written. It is not fsynced (a result can be computed again): after a power loss it may
 * be torn, which dapi_result_verify reveals (every frame decoded: zstd's checksum per frame,
 * the decoded lengths). dapi_result_open checks every offset and length, so a damaged file is refused
 * or, for a damaged frame, fails to decode — it never makes us read or write out of bounds.
 * Serving page p is one lookup, whatever p is: its frame as stored, or decoded.
 *
 * While the result is written, its complete pages can be served already (a "live" result,
 * below): the writer publishes each page once its frame is written to the temporary file,
 * never a partial one, and a reader decodes a published page from that file. */
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
/* The writer makes its file at its first write to it (a page published, 1 MiB of output),
 * not before. With keep_small (max > 0), a result still unwritten when it finishes and of at
 * most max bytes gets no file at all: finish leaves its image in memory, which
 * dapi_result_writer_small gives (store/pack.h packs it). Set before the first row. */
void dapi_result_writer_keep_small(struct dapi_result_writer *w, size_t max);
/* The finished result's image if it was kept in memory (borrowed until the writer is freed;
 * *len its size), else NULL: it is in the file at the writer's path. */
const void *dapi_result_writer_small(const struct dapi_result_writer *w, size_t *len);
/* Finishes: writes the last page, index and header, renames into place (no fsync), or keeps
 * a small result in memory (above). bytes is the result's size. */
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
/* Waits until more than `have` pages are published, the writer is done with them (*closed
 * set: finished, failed or stopped — no page will be published any more; the finished
 * result, or the failure, is the registry's to tell), or timeout_ms passes. Returns the
 * pages published. Does not hurry the writer (dapi_result_live_want does): pages come at its
 * periodic flushes, in batches. */
uint64_t dapi_result_live_wait(struct dapi_result_live *l, uint64_t have, int64_t timeout_ms,
                               int *closed);
/* A reader will read every page in order as they come (the export): from now on the writer
 * also keeps its latest complete pages in memory (at most 256 pages and 8 MiB), which
 * dapi_result_live_rows gives without reading the file. */
void dapi_result_live_stream(struct dapi_result_live *l);
/* dapi_result_live_page for such a reader: appends page's rows to out (1: done, 0: not
 * published yet, -1: unreadable). When they came from memory, seps[0 .. *nseps) (room for
 * DAPI_PAGE_ROWS) receive the offsets in them of the ',' between rows, as the writer joined
 * them; *nseps = 0 when they were read from the file (look for the rows' boundaries). */
int dapi_result_live_rows(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out,
                          uint32_t *seps, size_t *nseps);
/* Someone waits for page (0: nobody): the writer publishes as soon as that page is complete
 * rather than at its next periodic flush. */
void dapi_result_live_want(struct dapi_result_live *l, uint64_t page);
/* A page whose rows decode to this many bytes or more is never decoded whole for a reader: a
 * page's 100 rows can decode to hundreds of MB from a few KB stored (repeated text compresses
 * that well), and decoded whole, a few readers of such a page took the memory every key's
 * queries need. A finished result's is decoded as it is sent (dapi_page_stream, pagecache.h;
 * dapi_export_page, export.h); a running query's is read once the run has ended. */
#define DAPI_PAGE_STREAM_MIN (4u << 20)

/* THE way to the bytes of a page of a result being written: appends page's rows (1-based,
 * decoded: the same bytes dapi_result_page_copy gives once the result is finished) to out.
 * 1: done; 0: not published (yet); -1: it cannot be read now (I/O error, no memory, or it
 * decodes to DAPI_PAGE_STREAM_MIN bytes or more: read it from the finished result). */
int dapi_result_live_page(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out);
/* The decoded size of a published page of a result being written; 0 if not published. */
uint64_t dapi_result_live_page_size(struct dapi_result_live *l, uint64_t page);

struct dapi_result; /* an opened (mapped) result, reference-counted */

/* Maps the file at path and checks its structure. DAPI_ERR_IO if missing or damaged. The
 * result has one reference, the caller's. */
enum dapi_err dapi_result_open(struct dapi_result **out, const char *path);
/* Maps size bytes of fd from off (a result stored inside another file: store/pack.h), with
 * the same checks. fd may be closed afterwards. */
enum dapi_err dapi_result_open_at(struct dapi_result **out, int fd, uint64_t off, uint64_t size);
/* Checks the structure of a result image held in memory (size bytes: a pack record's, read
 * rather than mapped) as dapi_result_open_at would, and gives its rows and pages. DAPI_ERR_IO
 * if damaged. */
enum dapi_err dapi_result_check(const void *image, uint64_t size, uint64_t *rows, uint64_t *pages);
/* The result's bytes as stored (header, frames, index): what a copy of it must hold. */
void dapi_result_image(const struct dapi_result *r, const void **image, size_t *size);
/* One more reference (thread-safe): the mapping stays until the last is dropped. */
struct dapi_result *dapi_result_ref(struct dapi_result *r);
/* Drops a reference; the last one unmaps. NULL is ignored. */
void dapi_result_close(struct dapi_result *r);
/* Decodes every page: DAPI_ERR_IO if one fails (torn by a power loss, or damaged),
 * DAPI_ERR_NOMEM, or DAPI_OK (also for a DAPIRES1 file, written by a version that fsynced). */
enum dapi_err dapi_result_verify(const struct dapi_result *r);
uint64_t dapi_result_pages(const struct dapi_result *r);
uint64_t dapi_result_rows(const struct dapi_result *r);
/* The result's identity (see the layout above; for a DAPIRES1 file, derived from its device,
 * inode, size and mtime). */
uint64_t dapi_result_id(const struct dapi_result *r);
/* 1 for a file of compressed pages (DAPIRES2), 0 for DAPIRES1. */
int dapi_result_compressed(const struct dapi_result *r);

/* Pages are 1-based; a page past the end is empty (0 bytes, no frame). */
/* The decoded size of a page. */
uint64_t dapi_result_page_size(const struct dapi_result *r, uint64_t page);
/* DAPIRES1: the page's rows as a borrowed slice of the mapping (0). -1 for DAPIRES2. */
int dapi_result_page_plain(const struct dapi_result *r, uint64_t page, const char **data,
                           size_t *len);
/* DAPIRES2: the page's zstd frame as a borrowed slice of the mapping, and what it decodes to
 * (0; *len 0 past the end). -1 for DAPIRES1, or when the frame is not one well-formed frame
 * of that decoded size (dapi_zframe_check). */
int dapi_result_page_frame(const struct dapi_result *r, uint64_t page, const void **frame,
                           size_t *len, size_t *decoded_len);
/* Decodes the page's rows into dst (cap bytes; dapi_result_page_size are written).
 * DAPI_ERR_TOO_LARGE if cap is smaller, DAPI_ERR_IO if the frame is damaged. */
enum dapi_err dapi_result_page_decode(const struct dapi_result *r, uint64_t page, char *dst,
                                      size_t cap);
/* The page's rows for reading one page after another without an allocation each: decoded
 * into buf (reset first, its memory reused; DAPIRES2) or borrowed from the mapping
 * (DAPIRES1). *rows stays valid until buf changes or the result is closed. */
enum dapi_err dapi_result_page_into(const struct dapi_result *r, uint64_t page,
                                    struct dapi_buf *buf, const char **rows, size_t *len);
/* The page's rows in a new NUL-terminated buffer (free it), whatever the format. */
enum dapi_err dapi_result_page_copy(const struct dapi_result *r, uint64_t page, char **data,
                                    size_t *len);

#endif
