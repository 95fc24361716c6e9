#include "base/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dapi_buf_init(struct dapi_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->err = DAPI_OK;
}

static void release(struct dapi_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Marks the buffer failed: its memory goes, the first error stays. Returns the error. */
static enum dapi_err fail(struct dapi_buf *b, enum dapi_err e)
{
    release(b);
    if(!b->err)
        b->err = e;
    return b->err;
}

enum dapi_err dapi_buf_fail(struct dapi_buf *b, enum dapi_err e)
{
    return fail(b, e ? e : DAPI_ERR_INTERNAL);
}

void dapi_buf_free(struct dapi_buf *b)
{
    release(b);
    b->err = DAPI_OK;
}

void dapi_buf_reset(struct dapi_buf *b)
{
    b->len = 0;
    b->err = DAPI_OK;
    if(b->data)
        b->data[0] = '\0';
}

enum dapi_err dapi_buf_error(const struct dapi_buf *b)
{
    return b->err;
}

/* reserve, telling why it failed. */
static char *make_room(struct dapi_buf *b, size_t n, enum dapi_err *why)
{
    if(b->err) {
        *why = b->err;
        return NULL;
    }
    if(n > b->max || b->len > b->max - n) {
        *why = fail(b, DAPI_ERR_TOO_LARGE);
        return NULL;
    }
    size_t need = b->len + n + 1;
    if(need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while(cap < need)
            cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
        if(cap > b->max + 1)
            cap = b->max + 1;
        char *p = realloc(b->data, cap);
        if(!p) {
            *why = fail(b, DAPI_ERR_NOMEM);
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

char *dapi_buf_reserve(struct dapi_buf *b, size_t n)
{
    enum dapi_err why;
    return make_room(b, n, &why);
}

void dapi_buf_commit(struct dapi_buf *b, size_t n)
{
    if(b->err || !b->data)
        return;
    b->len += n;
    b->data[b->len] = '\0';
}

enum dapi_err dapi_buf_add(struct dapi_buf *b, const void *p, size_t n)
{
    enum dapi_err why;
    char *dst = make_room(b, n, &why);
    if(!dst)
        return why;
    if(n)
        memcpy(dst, p, n);
    dapi_buf_commit(b, n);
    return DAPI_OK;
}

enum dapi_err dapi_buf_adds(struct dapi_buf *b, const char *s)
{
    return dapi_buf_add(b, s, strlen(s));
}

enum dapi_err dapi_buf_add_cut(struct dapi_buf *b, const char *s, size_t max)
{
    size_t len = strlen(s);
    if(len <= max)
        return dapi_buf_add(b, s, len);
    size_t cut = max;
    while(cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--; /* never half a UTF-8 sequence */
    dapi_buf_add(b, s, cut);
    return dapi_buf_addf(b, DAPI_BUF_CUT_NOTE, cut, len);
}

enum dapi_err dapi_buf_addc(struct dapi_buf *b, char c)
{
    return dapi_buf_add(b, &c, 1);
}

enum dapi_err dapi_buf_vaddf(struct dapi_buf *b, const char *fmt, va_list ap)
{
    if(b->err)
        return b->err;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if(n < 0)
        return fail(b, DAPI_ERR_INTERNAL);
    enum dapi_err why;
    char *dst = make_room(b, (size_t)n, &why);
    if(!dst)
        return why;
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    dapi_buf_commit(b, (size_t)n);
    return DAPI_OK;
}

enum dapi_err dapi_buf_addf(struct dapi_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum dapi_err result = dapi_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return result;
}

char *dapi_buf_take(struct dapi_buf *b, size_t *len)
{
    if(len)
        *len = 0;
    if(b->err)
        return NULL;
    char *p = b->data;
    size_t n = b->len;
    if(!p) {
        p = malloc(1);
        if(!p) {
            fail(b, DAPI_ERR_NOMEM);
            return NULL;
        }
        p[0] = '\0';
        n = 0;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    if(len)
        *len = n;
    return p;
}

enum dapi_err dapi_buf_add_file(struct dapi_buf *b, const char *path)
{
    if(b->err)
        return b->err;
    FILE *f = fopen(path, "r");
    if(!f)
        return fail(b, DAPI_ERR_IO);
    enum dapi_err result = DAPI_OK;
    char chunk[65536];
    size_t n;
    while(!result && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        result = dapi_buf_add(b, chunk, n);
    if(!result && ferror(f))
        result = fail(b, DAPI_ERR_IO);
    fclose(f);
    return result;
}

size_t dapi_copy_str(char *out, size_t n, const char *s)
{
    size_t len = strnlen(s, n - 1);
    memcpy(out, s, len);
    out[len] = '\0';
    return len;
}
