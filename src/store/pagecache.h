/* The page cache: the bodies of page answers, ready to send. Result pages are stored
 * compressed (result.h); a client that does not accept zstd gets them decoded (or decoded
 * and gzipped, if it accepts gzip), one that does gets the stored frame between two small
 * frames of the envelope. Each body is built once (decoding, gzipping, or copying the frame
 * out of the mapping) and kept here, whole and
 * contiguous, so a hot page is answered with no decoding, no copy and one send (libmicrohttpd
 * sends a body of several pieces with one more system call per answer: measured 20-30% more
 * CPU per page). Bounded (--page-cache-bytes, counting each body and its entry), least
 * recently used first out, thread-safe. A body handed out is reference-counted: eviction
 * never frees one an answer is still sending. */
#ifndef DAPI_PAGECACHE_H
#define DAPI_PAGECACHE_H

#include <stddef.h>
#include <stdint.h>
#include "dapi/err.h"
#include "store/result.h"

struct dapi_page_cache;
struct dapi_page; /* a decoded page held by a reader */

/* A cache of at most max_bytes (0: keeps nothing; every page is decoded for its reader). */
struct dapi_page_cache *dapi_page_cache_new(uint64_t max_bytes);
/* Frees the cache; pages still held stay valid until released. NULL is ignored. */
void dapi_page_cache_free(struct dapi_page_cache *c);

enum dapi_page_form {
    DAPI_PAGE_PLAIN, /* head, the page's rows decoded, tail */
    DAPI_PAGE_ZSTD,  /* head and tail each as a raw zstd frame around the stored frame (a
                        DAPIRES2 result only): decodes to the PLAIN body */
    DAPI_PAGE_GZIP,  /* the PLAIN body gzipped (store/gzip.h): decodes to it */
};

/* The body of page (1-based) of r in the given form between head and tail (e.g. the JSON
 * envelope): from the cache, or built now (and kept when it fits). Bodies are told apart by
 * result, page, form, head and tail. c may be NULL (no cache). Release *out with
 * dapi_page_release. DAPI_ERR_IO for a damaged page (or ZSTD of a DAPIRES1 result),
 * DAPI_ERR_NOMEM. */
enum dapi_err dapi_page_cache_get(struct dapi_page_cache *c, const struct dapi_result *r,
                                  uint64_t page, enum dapi_page_form form, const char *head,
                                  const char *tail, struct dapi_page **out);
const char *dapi_page_data(const struct dapi_page *p, size_t *len);
void dapi_page_release(struct dapi_page *p);

/* (A plain page of DAPI_PAGE_STREAM_MIN bytes or more, result.h, is not decoded whole for an
 * answer, nor kept: it is decoded as it is sent, dapi_page_stream.) */

/* The PLAIN body of page of r (head, its rows decoded, tail) decoded a piece at a time as it
 * is read: its memory is zstd's window whatever the page's size. Holds a reference to r.
 * *size: the body's length. NULL (without memory, or page has no frame: DAPIRES1 or past the
 * end). */
struct dapi_page_stream;
struct dapi_page_stream *dapi_page_stream_new(struct dapi_result *r, uint64_t page,
                                              const char *head, const char *tail, uint64_t *size);
/* The next up to max bytes of the body into out: how many (0 at its end), -1 if the page is
 * damaged. */
long dapi_page_stream_read(struct dapi_page_stream *s, char *out, size_t max);
void dapi_page_stream_free(struct dapi_page_stream *s);

struct dapi_page_cache_stats {
    uint64_t bytes, entries, hits, misses, evictions;
};
void dapi_page_cache_stats(struct dapi_page_cache *c, struct dapi_page_cache_stats *out);

#endif
