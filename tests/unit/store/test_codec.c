/* The page codec (src/store/codec.c): frames that round-trip, raw frames that any zstd
 * decoder reads (concatenated with compressed ones, as the zstd answers are), and frames
 * that are damaged or decode to another length refused — never decoded out of bounds. */
#include <stdlib.h>

#include "store/codec.h"
#include "t.h"

static char *make_text(size_t n, unsigned seed)
{
    char *p = malloc(n + 1);
    for(size_t i = 0; p && i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        /* JSON-like text: compressible, not trivially */
        p[i] = "{\"id\":,abcdefghij0123456789}"[(seed >> 16) % 28];
    }
    if(p)
        p[n] = '\0';
    return p;
}

static void test_round_trip(void)
{
    static const size_t sizes[] = {0, 1, 2, 100, 12000, 131072, 131073, 1 << 20};
    for(size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        char *text = make_text(n, (unsigned)i);
        struct dapi_buf z;
        dapi_buf_init(&z, 8u << 20);
        T_EQ_INT(dapi_zcompress(&z, text, n, DAPI_ZSTD_LEVEL), DAPI_OK);
        T_CHECK(dapi_zframe_check(z.data, z.len, n), "%zu bytes: one frame of that size", n);
        T_CHECK(!dapi_zframe_check(z.data, z.len, n + 1), "%zu bytes: not of another size", n);
        T_CHECK(!dapi_zframe_check(z.data, z.len - 1, n), "%zu bytes: truncated is refused", n);
        char *out = malloc(n + 1);
        T_EQ_INT(dapi_zframe_decode(z.data, z.len, out, n), DAPI_OK);
        T_CHECK(memcmp(out, text, n) == 0, "%zu bytes: decodes to the text", n);
        if(n > 0) {
            T_EQ_INT(dapi_zframe_decode(z.data, z.len, out, n - 1), DAPI_ERR_IO);
        }
        /* a byte changed in the middle: the checksum (or the format) refuses it */
        if(z.len > 20) {
            z.data[z.len / 2] ^= 0x40;
            enum dapi_err e = dapi_zframe_decode(z.data, z.len, out, n);
            T_CHECK(e == DAPI_ERR_IO, "%zu bytes: a damaged frame is refused (got %d)", n, (int)e);
        }
        free(out);
        free(text);
        dapi_buf_free(&z);
    }
}

/* Raw frames of every size class of the header's content-size field, and of several blocks;
 * concatenated with a compressed one, they decode as one stream (what an HTTP client does
 * with an answer): checked here frame by frame, and by the zstd command in the integration
 * tests. */
static void test_raw(void)
{
    static const size_t sizes[] = {0, 1, 255, 256, 65791, 65792, 131072, 300000};
    for(size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        char *text = make_text(n, 7u + (unsigned)i);
        struct dapi_buf z;
        dapi_buf_init(&z, 8u << 20);
        T_EQ_INT(dapi_zframe_raw(&z, text, n), DAPI_OK);
        T_CHECK(z.len >= n + 8 && z.len <= n + 13 + 3 * (n / 131072 + 1),
                "%zu bytes: raw frame of %zu bytes", n, z.len);
        T_CHECK(dapi_zframe_check(z.data, z.len, n), "%zu bytes: a well-formed frame", n);
        char *out = malloc(n + 1);
        T_EQ_INT(dapi_zframe_decode(z.data, z.len, out, n), DAPI_OK);
        T_CHECK(memcmp(out, text, n) == 0, "%zu bytes: decodes to the text", n);
        free(out);
        free(text);
        dapi_buf_free(&z);
    }
    /* "]}" as the answers end it */
    struct dapi_buf z;
    dapi_buf_init(&z, 64);
    T_EQ_INT(dapi_zframe_raw(&z, "]}", 2), DAPI_OK);
    static const unsigned char want[] = {0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x02,
                                         0x11, 0x00, 0x00, ']',  '}'};
    T_CHECK(z.len == sizeof want && memcmp(z.data, want, sizeof want) == 0,
            "the end frame is the 11 bytes of RFC 8878's layout");
    /* Two frames are not one: a decoder of one page never reads what follows it. */
    T_EQ_INT(dapi_zframe_raw(&z, "ab", 2), DAPI_OK);
    char out[8];
    T_CHECK(!dapi_zframe_check(z.data, z.len, 2), "two frames refused as one");
    T_EQ_INT(dapi_zframe_decode(z.data, z.len, out, 4), DAPI_ERR_IO);
    dapi_buf_free(&z);
    /* Not a frame at all */
    T_CHECK(!dapi_zframe_check("hello world", 11, 11), "text is no frame");
    T_CHECK(!dapi_zframe_check("", 0, 0), "nothing is no frame");
}

/* A frame written in pieces declares no size: decoding it into less room fails cleanly. */
static void test_streamed(void)
{
    struct dapi_zenc *enc;
    T_EQ_INT(dapi_zenc_new(&enc, DAPI_ZSTD_LEVEL), DAPI_OK);
    char *text = make_text(300000, 3);
    struct dapi_buf z;
    dapi_buf_init(&z, 8u << 20);
    T_EQ_INT(dapi_zenc_put(enc, text, 100000, 0, &z), DAPI_OK);
    T_EQ_INT(dapi_zenc_put(enc, text + 100000, 200000, 1, &z), DAPI_OK);
    size_t first = z.len;
    /* the encoder goes on with a new frame */
    T_EQ_INT(dapi_zenc_put(enc, "xyz", 3, 1, &z), DAPI_OK);
    dapi_zenc_free(enc);
    T_CHECK(dapi_zframe_check(z.data, first, 300000), "streamed frame well-formed");
    T_CHECK(dapi_zframe_check(z.data, first, 5), "(its size is not in its header)");
    char *out = malloc(300000);
    T_EQ_INT(dapi_zframe_decode(z.data, first, out, 300000), DAPI_OK);
    T_CHECK(memcmp(out, text, 300000) == 0, "decodes to the text");
    T_EQ_INT(dapi_zframe_decode(z.data, first, out, 299999), DAPI_ERR_IO);
    T_EQ_INT(dapi_zframe_decode(z.data, first, out, 1000), DAPI_ERR_IO);
    char small[4];
    T_EQ_INT(dapi_zframe_decode(z.data + first, z.len - first, small, 3), DAPI_OK);
    T_EQ_MEM(small, 3, "xyz");
    free(out);
    free(text);
    dapi_buf_free(&z);
}

/* Decodes the frame with dapi_zdec in pieces of step bytes into out (cap bytes): the bytes
 * decoded, or -1 if a read failed. */
static long zdec_all(const void *frame, size_t len, uint64_t decoded_len, size_t step, char *out,
                     size_t cap)
{
    struct dapi_zdec *d = dapi_zdec_new(frame, len, decoded_len);
    long total = 0, n;
    if(!d)
        return -1;
    while((n = dapi_zdec_read(d, out + total,
                              cap - (size_t)total < step ? cap - (size_t)total : step)) > 0)
        total += n;
    dapi_zdec_free(d);
    return n < 0 ? -1 : total;
}

/* A frame decoded a piece at a time (a page too large to decode whole for one answer): the
 * same bytes whatever the pieces' size; a frame cut short, damaged, or decoding to another
 * length than announced is refused. */
static void test_pieces(void)
{
    size_t n = 3u << 20;
    char *text = make_text(n, 9), *out = malloc(n + 64);
    struct dapi_buf z;
    dapi_buf_init(&z, 8u << 20);
    T_EQ_INT(dapi_zcompress(&z, text, n, DAPI_ZSTD_LEVEL), DAPI_OK);
    static const size_t steps[] = {1, 7, 4096, 65536, 8u << 20};
    for(size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        size_t step = steps[i];
        if(step == 1) { /* (a byte at a time over the first 100 KB only: slow otherwise) */
            struct dapi_zdec *d = dapi_zdec_new(z.data, z.len, n);
            long got = 0;
            while(d && got < 100000 && dapi_zdec_read(d, out + got, 1) == 1)
                got++;
            dapi_zdec_free(d);
            T_CHECK(got == 100000 && memcmp(out, text, 100000) == 0, "a byte at a time");
            continue;
        }
        memset(out, 0, n);
        T_EQ_INT(zdec_all(z.data, z.len, n, step, out, n + 64), (long)n);
        T_CHECK(memcmp(out, text, n) == 0, "pieces of %zu: the text", step);
    }
    T_EQ_INT(zdec_all(z.data, z.len / 2, n, 65536, out, n + 64), -1);
    T_EQ_INT(zdec_all(z.data, z.len, n + 10, 65536, out, n + 64), -1);
    T_CHECK(zdec_all(z.data, z.len, n - 10, 65536, out, n + 64) == -1, "more than announced");
    /* the frame's checksum (its last 4 bytes) is checked at the end, whatever the pieces */
    z.data[z.len - 2] ^= 0x40;
    T_EQ_INT(zdec_all(z.data, z.len, n, 65536, out, n + 64), -1);
    T_EQ_INT(zdec_all(z.data, z.len, n, n, out, n + 64), -1);
    z.data[z.len - 2] ^= 0x40;
    T_EQ_INT(zdec_all(z.data, z.len, n, n, out, n + 64), (long)n);
    z.data[z.len / 2] ^= 0x40;
    T_EQ_INT(zdec_all(z.data, z.len, n, 65536, out, n + 64), -1);
    free(out);
    free(text);
    dapi_buf_free(&z);
}

int main(void)
{
    test_round_trip();
    test_raw();
    test_streamed();
    test_pieces();
    T_DONE();
}
