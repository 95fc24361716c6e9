/* The page codec: the only code that calls zstd (libzstd). A result page is stored as one
 * zstd frame (RFC 8878) of its rows' JSON, so it can be sent as it is to a client that
 * accepts `Content-Encoding: zstd` and decoded for one that does not. zstd decoders accept
 * concatenated frames, so an answer can be framed as [envelope start][stored page][envelope
 * end] without recompressing the page: dapi_zframe_raw makes the small frames around it. */
#ifndef DAPI_CODEC_H
#define DAPI_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "dapi/err.h"

/* The level pages are written at: level 1 is zstd's fastest standard level (see
 * docs/design.md "Compressed pages" for the measurements that chose it). */
#define DAPI_ZSTD_LEVEL 1

/* A page encoder: one frame per page, fed in pieces. */
struct dapi_zenc;
enum dapi_err dapi_zenc_new(struct dapi_zenc **out, int level);
void dapi_zenc_free(struct dapi_zenc *z);
/* Compresses n bytes of src into out (appended). end = 1 ends the frame: the next call
 * starts a new one. A frame ended by its first call records its decoded size in its header.
 * DAPI_ERR_NOMEM / DAPI_ERR_TOO_LARGE (out's cap) / DAPI_ERR_INTERNAL (zstd failed). */
enum dapi_err dapi_zenc_put(struct dapi_zenc *z, const void *src, size_t n, int end,
                            struct dapi_buf *out);

/* Is [frame, frame + len) exactly one well-formed zstd frame whose decoded size, if its
 * header records one, is decoded_len? Reads headers only (block headers walked), never
 * beyond len. 1 = yes, 0 = no. */
int dapi_zframe_check(const void *frame, size_t len, uint64_t decoded_len);
/* Decodes the frame into dst, which has room for exactly decoded_len bytes. DAPI_ERR_IO if
 * it is damaged or decodes to any other length (never writes beyond dst + decoded_len). */
enum dapi_err dapi_zframe_decode(const void *frame, size_t len, void *dst, size_t decoded_len);
/* A frame decoded a piece at a time (a page too large to decode whole for one answer): its
 * memory is zstd's window, whatever the page's size. */
struct dapi_zdec;
/* Decodes [frame, frame + len), which must decode to exactly decoded_len bytes (borrowed:
 * it must stay mapped until dapi_zdec_free). NULL without memory. */
struct dapi_zdec *dapi_zdec_new(const void *frame, size_t len, uint64_t decoded_len);
/* Writes the next up to max decoded bytes to out: how many (0 at the end), or -1 if the
 * frame is damaged or decodes to another length. */
long dapi_zdec_read(struct dapi_zdec *d, void *out, size_t max);
void dapi_zdec_free(struct dapi_zdec *d);
/* Appends to out a frame that stores n bytes of data uncompressed (raw blocks): for small
 * pieces around a stored frame, at no compression cost. */
enum dapi_err dapi_zframe_raw(struct dapi_buf *out, const void *data, size_t n);
/* One-shot compression of src into out (appended), at level: for tests and tools. */
enum dapi_err dapi_zcompress(struct dapi_buf *out, const void *src, size_t n, int level);

#endif
