/* A growable byte buffer with a mandatory cap (after curl's dynbuf).
 * On overflow of the cap or on OOM an append frees the buffer's memory and returns an error,
 * so a half-built value is never used by accident. The data is always NUL-terminated
 * (the NUL is not counted in len) once anything was appended. */
#ifndef DAPI_BUF_H
#define DAPI_BUF_H

#include <stddef.h>
#include <stdarg.h>
#include "dapi/err.h"

struct dapi_buf {
    char *data;    /* owned; NULL until the first append */
    size_t len;    /* bytes used, excluding the terminating NUL */
    size_t cap;    /* bytes allocated */
    size_t max;    /* the cap on len; appends beyond it fail with DAPI_ERR_TOO_LARGE */
};

/* Initialises an empty buffer that may grow to at most `max` bytes. Allocates nothing. */
void dapi_buf_init(struct dapi_buf *b, size_t max);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void dapi_buf_free(struct dapi_buf *b);
/* Forgets the content, keeps the memory. */
void dapi_buf_reset(struct dapi_buf *b);
/* Appends n bytes. On error the buffer is freed (see above). */
enum dapi_err dapi_buf_add(struct dapi_buf *b, const void *p, size_t n);
enum dapi_err dapi_buf_adds(struct dapi_buf *b, const char *s);
enum dapi_err dapi_buf_addc(struct dapi_buf *b, char c);
enum dapi_err dapi_buf_addf(struct dapi_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum dapi_err dapi_buf_vaddf(struct dapi_buf *b, const char *fmt, va_list ap);
/* Makes room for n more bytes and returns a pointer to them (commit with dapi_buf_commit).
 * Returns NULL on error (buffer freed). */
char *dapi_buf_reserve(struct dapi_buf *b, size_t n);
void dapi_buf_commit(struct dapi_buf *b, size_t n);
/* Appends the whole content of the file at path. DAPI_ERR_IO if it cannot be read,
 * DAPI_ERR_TOO_LARGE past the cap (the buffer is then freed). */
enum dapi_err dapi_buf_add_file(struct dapi_buf *b, const char *path);
/* Hands the data to the caller (free with free()); the buffer becomes empty.
 * Returns a valid empty string if nothing was appended; NULL only on OOM. */
char *dapi_buf_take(struct dapi_buf *b, size_t *len);

#endif
