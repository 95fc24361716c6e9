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
/* Pages that decode to this many bytes or more go plain even to gzip clients: a body is built
 * on the HTTP event thread, and zlib's level 1 runs at about 120 MB/s, so this bounds a cold
 * gzip answer to about 2 ms there — what decoding a 4 MiB page (the largest decoded whole)
 * costs — instead of 35 ms for a 4 MiB page, which any key could ask for again and again. */
#define DAPI_GZIP_MAX (256u << 10)

/* Appends to out one gzip member holding n bytes of src, at level (1-9).
 * DAPI_ERR_NOMEM / DAPI_ERR_TOO_LARGE (out's cap) / DAPI_ERR_INTERNAL (zlib refused). */
enum dapi_err dapi_gzip(struct dapi_buf *out, const void *src, size_t n, int level);

#endif
