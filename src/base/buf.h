/* A growable byte buffer with a mandatory cap (after curl's dynbuf), with sticky errors.
 *
 * The first failure (an append past the cap, OOM, a failed format or file read) frees the
 * buffer's memory and is kept in the buffer (`err`): from then on every append, reserve and
 * add_file is a no-op that returns that same error, `data` stays NULL and `len` 0, and
 * dapi_buf_take returns NULL. So a half-built value is never used by accident, and a caller
 * may ignore the result of each append and check once at the end (dapi_buf_take returning
 * NULL, or dapi_buf_error). Only dapi_buf_free and dapi_buf_reset clear the error and make
 * the buffer usable again.
 *
 * The data is always NUL-terminated (the NUL is not counted in len) once anything was
 * appended; `data` is NULL before the first append and after an error, so code that reads
 * `data` directly must treat NULL as "nothing usable" (check dapi_buf_error to tell them
 * apart). */
#ifndef DAPI_BUF_H
#define DAPI_BUF_H

#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include "dapi/err.h"

struct dapi_buf {
    char *data;        /* owned; NULL until the first append, and after an error */
    size_t len;        /* bytes used, excluding the terminating NUL */
    size_t cap;        /* bytes allocated */
    size_t max;        /* the cap on len; appends beyond it fail with DAPI_ERR_TOO_LARGE */
    enum dapi_err err; /* the first error (sticky), DAPI_OK while the buffer is good */
};

/* Initialises an empty, good buffer that may grow to at most `max` bytes. Allocates nothing. */
void dapi_buf_init(struct dapi_buf *b, size_t max);
/* Frees the memory and clears the error: the buffer is empty, good and reusable (same max). */
void dapi_buf_free(struct dapi_buf *b);
/* Forgets the content and clears the error: the buffer is empty, good and reusable. Keeps
 * the memory if there is any (a failed buffer has none). */
void dapi_buf_reset(struct dapi_buf *b);
/* The buffer's sticky error: DAPI_OK, or the first error of an append, reserve or add_file
 * since init/free/reset (DAPI_ERR_TOO_LARGE, DAPI_ERR_NOMEM, DAPI_ERR_IO, DAPI_ERR_INTERNAL). */
enum dapi_err dapi_buf_error(const struct dapi_buf *b);
/* Marks the buffer failed with e, for a builder that finds its own error half-way (a value
 * it cannot render): the memory is freed and e becomes the sticky error, unless the buffer
 * had already failed (the first error is kept). Returns the buffer's error. */
enum dapi_err dapi_buf_fail(struct dapi_buf *b, enum dapi_err e);
/* Appends n bytes. Returns DAPI_OK, or the (new or earlier) sticky error, see above. */
enum dapi_err dapi_buf_add(struct dapi_buf *b, const void *p, size_t n);
enum dapi_err dapi_buf_adds(struct dapi_buf *b, const char *s);
enum dapi_err dapi_buf_addc(struct dapi_buf *b, char c);
/* Appends the string s whole when it has at most max bytes; else its first max bytes or
 * fewer (never cutting a UTF-8 sequence) followed by DAPI_BUF_CUT_NOTE, which gives both
 * sizes — for messages that must stay bounded without being dropped. At most max + 80 bytes. */
enum dapi_err dapi_buf_add_cut(struct dapi_buf *b, const char *s, size_t max);
#define DAPI_BUF_CUT_NOTE " ... (cut to its first %zu of %zu bytes)"
enum dapi_err dapi_buf_addf(struct dapi_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum dapi_err dapi_buf_vaddf(struct dapi_buf *b, const char *fmt, va_list ap);
/* Makes room for n more bytes and returns a pointer to them (commit with dapi_buf_commit).
 * Returns NULL if the buffer failed (now or earlier; see dapi_buf_error), which the caller
 * must check before writing. */
char *dapi_buf_reserve(struct dapi_buf *b, size_t n) __attribute__((warn_unused_result));
/* Counts n (at most what the last reserve allowed) of the reserved bytes as appended.
 * A no-op on a failed buffer. */
void dapi_buf_commit(struct dapi_buf *b, size_t n);
/* Appends the whole content of the file at path. DAPI_ERR_IO if it cannot be opened or read,
 * DAPI_ERR_TOO_LARGE past the cap; either error is sticky like any other (a partly read file
 * is never used). */
enum dapi_err dapi_buf_add_file(struct dapi_buf *b, const char *path)
    __attribute__((warn_unused_result));
/* Hands the data to the caller (free with free()); the buffer becomes empty and good.
 * Returns a valid empty string if nothing was appended. Returns NULL if the buffer failed
 * or cannot allocate that empty string (it then fails with DAPI_ERR_NOMEM); the error
 * stays readable with dapi_buf_error until free/reset. */
char *dapi_buf_take(struct dapi_buf *b, size_t *len) __attribute__((warn_unused_result));

/* Text writers for the per-request paths (and the row renderer), where snprintf's parsing of
 * its format showed in profiles. dapi_put_u64 writes v in decimal, zero-padded to at least
 * min_digits (at most 20 digits, or min_digits if more), at p and returns the end; the
 * caller provides the room (inline: it runs for every number of every rendered row).
 * dapi_copy_str copies s into out of n > 0 bytes, cut to fit with its NUL (as
 * snprintf(out, n, "%s", s) would), and returns the length written. */
static inline char *dapi_put_u64(char *p, uint64_t v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while(v);
    for(; min_digits > n; min_digits--)
        *p++ = '0';
    while(n)
        *p++ = tmp[--n];
    return p;
}
size_t dapi_copy_str(char *out, size_t n, const char *s);

#endif
