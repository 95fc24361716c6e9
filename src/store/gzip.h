/* gzip (RFC 1952) for page answers: the only code that calls zlib. Pages are stored as zstd
 * frames (codec.h); a client that accepts gzip but not zstd (Python's requests and urllib3,
 * Safari, most HTTP libraries) gets the page's answer gzipped once, then kept in the page
 * cache like the other forms. */
#ifndef DAPI_GZIP_H
#define DAPI_GZIP_H

#include <stddef.h>
#include "base/buf.h"
#include "dapi/err.h"

/* The level answers are gzipped at: zlib's fastest (a 12 KB page in about 100 µs, once,
 * then served from the cache). */
#define DAPI_GZIP_LEVEL 1

/* Appends to out one gzip member holding n bytes of src, at level (1-9).
 * DAPI_ERR_NOMEM / DAPI_ERR_TOO_LARGE (out's cap) / DAPI_ERR_INTERNAL (zlib refused). */
enum dapi_err dapi_gzip(struct dapi_buf *out, const void *src, size_t n, int level);

#endif
