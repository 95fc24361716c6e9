/* The decoded-page cache: result pages are stored compressed (result.h), and a client that
 * does not accept zstd gets them decoded. Hot pages stay decoded here so that such clients
 * do not pay for decoding on every request. Bounded (--page-cache-bytes, counting each
 * page's bytes and its entry), least recently used pages evicted first, thread-safe. A page
 * handed out is reference-counted: eviction never frees a page a response is still sending. */
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

/* The decoded rows of page (1-based) of r: from the cache, or decoded now (and kept when it
 * fits). c may be NULL (no cache). Release *out with dapi_page_release. DAPI_ERR_IO for a
 * damaged page, DAPI_ERR_NOMEM. */
enum dapi_err dapi_page_cache_get(struct dapi_page_cache *c, const struct dapi_result *r,
                                  uint64_t page, struct dapi_page **out);
const char *dapi_page_data(const struct dapi_page *p, size_t *len);
void dapi_page_release(struct dapi_page *p);

struct dapi_page_cache_stats {
    uint64_t bytes, entries, hits, misses, evictions;
};
void dapi_page_cache_stats(struct dapi_page_cache *c, struct dapi_page_cache_stats *out);

#endif
