#include "store/codec.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

struct dapi_zenc {
    ZSTD_CCtx *cc;
};

enum dapi_err dapi_zenc_new(struct dapi_zenc **out, int level)
{
    struct dapi_zenc *z = calloc(1, sizeof *z);
    *out = NULL;
    if(!z || !(z->cc = ZSTD_createCCtx())) {
        free(z);
        return DAPI_ERR_NOMEM;
    }
    /* A checksum per frame (4 bytes): a damaged page is refused when it is decoded, never
     * served as different rows. */
    if(ZSTD_isError(ZSTD_CCtx_setParameter(z->cc, ZSTD_c_compressionLevel, level)) ||
       ZSTD_isError(ZSTD_CCtx_setParameter(z->cc, ZSTD_c_checksumFlag, 1))) {
        dapi_zenc_free(z);
        return DAPI_ERR_INTERNAL;
    }
    *out = z;
    return DAPI_OK;
}

void dapi_zenc_free(struct dapi_zenc *z)
{
    if(!z)
        return;
    ZSTD_freeCCtx(z->cc);
    free(z);
}

enum dapi_err dapi_zenc_put(struct dapi_zenc *z, const void *src, size_t n, int end,
                            struct dapi_buf *out)
{
    ZSTD_inBuffer in = {src, n, 0};
    /* ZSTD_e_end on a frame's first call makes zstd record the decoded size in its header
     * (and pick parameters for that size). */
    for(;;) {
        size_t room = ZSTD_compressBound(in.size - in.pos) + 64;
        if(room > ZSTD_CStreamOutSize())
            room = ZSTD_CStreamOutSize();
        char *p = dapi_buf_reserve(out, room);
        if(!p)
            return dapi_buf_error(out);
        ZSTD_outBuffer o = {p, room, 0};
        size_t left = ZSTD_compressStream2(z->cc, &o, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        dapi_buf_commit(out, o.pos);
        if(ZSTD_isError(left)) {
            ZSTD_CCtx_reset(z->cc, ZSTD_reset_session_only);
            return DAPI_ERR_INTERNAL;
        }
        if(end ? left == 0 : in.pos == in.size)
            return DAPI_OK;
    }
}

int dapi_zframe_check(const void *frame, size_t len, uint64_t decoded_len)
{
    if(len == 0)
        return 0;
    size_t whole = ZSTD_findFrameCompressedSize(frame, len);
    if(ZSTD_isError(whole) || whole != len)
        return 0;
    unsigned long long size = ZSTD_getFrameContentSize(frame, len);
    return size != ZSTD_CONTENTSIZE_ERROR &&
           (size == ZSTD_CONTENTSIZE_UNKNOWN || size == decoded_len);
}

/* One decoding context per thread, kept: creating one costs more than decoding a page. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static int dctx_key_ok;

static void dctx_free(void *p)
{
    ZSTD_freeDCtx(p);
}

static void dctx_init(void)
{
    dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0;
}

static ZSTD_DCtx *thread_dctx(int *owned)
{
    pthread_once(&dctx_once, dctx_init);
    ZSTD_DCtx *d = dctx_key_ok ? pthread_getspecific(dctx_key) : NULL;
    *owned = 0;
    if(d)
        return d;
    if(!(d = ZSTD_createDCtx()))
        return NULL;
    if(!dctx_key_ok || pthread_setspecific(dctx_key, d))
        *owned = 1; /* not kept: freed after this use */
    return d;
}

enum dapi_err dapi_zframe_decode(const void *frame, size_t len, void *dst, size_t decoded_len)
{
    /* Exactly one frame: zstd would otherwise decode whatever follows it too. */
    if(!dapi_zframe_check(frame, len, decoded_len))
        return DAPI_ERR_IO;
    int owned;
    ZSTD_DCtx *d = thread_dctx(&owned);
    if(!d)
        return DAPI_ERR_NOMEM;
    char none;
    size_t got = ZSTD_decompressDCtx(d, decoded_len ? dst : &none, decoded_len, frame, len);
    if(owned)
        ZSTD_freeDCtx(d);
    return ZSTD_isError(got) || got != decoded_len ? DAPI_ERR_IO : DAPI_OK;
}

/* RFC 8878, 3.1.1: magic, a frame header with Single_Segment_flag and the content size,
 * then raw blocks (3-byte headers: last flag, type 0 = raw, size) of at most 128 KiB. */
enum dapi_err dapi_zframe_raw(struct dapi_buf *out, const void *data, size_t n)
{
    unsigned char h[13] = {0x28, 0xB5, 0x2F, 0xFD};
    unsigned flag;
    size_t fcs_len;
    uint64_t v = n;
    if(n < 256) {
        flag = 0, fcs_len = 1;
    } else if(n < 65536 + 256) {
        flag = 1, fcs_len = 2, v = n - 256;
    } else if((uint64_t)n <= 0xFFFFFFFFu) {
        flag = 2, fcs_len = 4;
    } else {
        flag = 3, fcs_len = 8;
    }
    h[4] = (unsigned char)(flag << 6 | 1u << 5);
    for(size_t i = 0; i < fcs_len; i++)
        h[5 + i] = (unsigned char)(v >> (8 * i));
    enum dapi_err e = dapi_buf_add(out, h, 5 + fcs_len);
    const char *p = data;
    size_t left = n;
    do {
        size_t b = left < (128u << 10) ? left : (128u << 10);
        uint32_t bh = (uint32_t)(b << 3) | (b == left ? 1u : 0u);
        unsigned char bb[3] = {(unsigned char)bh, (unsigned char)(bh >> 8),
                               (unsigned char)(bh >> 16)};
        dapi_buf_add(out, bb, 3);
        if(b)
            e = dapi_buf_add(out, p, b);
        p += b;
        left -= b;
    } while(left);
    return e ? e : dapi_buf_error(out);
}

enum dapi_err dapi_zcompress(struct dapi_buf *out, const void *src, size_t n, int level)
{
    struct dapi_zenc *z;
    enum dapi_err e = dapi_zenc_new(&z, level);
    if(e)
        return e;
    e = dapi_zenc_put(z, src, n, 1, out);
    dapi_zenc_free(z);
    return e;
}

struct dapi_zdec {
    ZSTD_DStream *ds;
    ZSTD_inBuffer in;
    uint64_t left; /* decoded bytes still to come */
    int done;      /* the frame ended (ZSTD_decompressStream returned 0) */
};

struct dapi_zdec *dapi_zdec_new(const void *frame, size_t len, uint64_t decoded_len)
{
    struct dapi_zdec *d = calloc(1, sizeof *d);
    if(!d || !(d->ds = ZSTD_createDStream())) {
        free(d);
        return NULL;
    }
    d->in = (ZSTD_inBuffer){frame, len, 0};
    d->left = decoded_len;
    return d;
}

long dapi_zdec_read(struct dapi_zdec *d, void *out, size_t max)
{
    while(!d->left && !d->done) {
        /* Every byte announced is out: the frame's end (its checksum) is read and checked,
         * with no room for more (a frame that decodes to more makes no progress). */
        ZSTD_outBuffer none = {out, 0, 0};
        size_t before = d->in.pos, r = ZSTD_decompressStream(d->ds, &none, &d->in);
        if(ZSTD_isError(r) || d->in.pos == before)
            return -1;
        d->done = r == 0;
    }
    if(!d->left)
        return 0;
    if(max > d->left)
        max = (size_t)d->left;
    if(max > LONG_MAX)
        max = LONG_MAX;
    ZSTD_outBuffer o = {out, max, 0};
    while(o.pos < o.size && !d->done) {
        size_t before_in = d->in.pos, before_out = o.pos;
        size_t r = ZSTD_decompressStream(d->ds, &o, &d->in);
        if(ZSTD_isError(r))
            return -1;
        d->done = r == 0;
        if(d->in.pos == before_in && o.pos == before_out)
            return -1; /* no progress: the frame is cut short */
    }
    if(o.pos < o.size && d->done)
        return -1; /* it ended before its announced length */
    d->left -= o.pos;
    return (long)o.pos;
}

void dapi_zdec_free(struct dapi_zdec *d)
{
    if(!d)
        return;
    ZSTD_freeDStream(d->ds);
    free(d);
}
