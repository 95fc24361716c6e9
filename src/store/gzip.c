#include "store/gzip.h"

#include <limits.h>
#include <zlib.h>

enum dapi_err dapi_gzip(struct dapi_buf *out, const void *src, size_t n, int level)
{
    z_stream zs = {0};
    /* windowBits 15 + 16: a gzip header and trailer (CRC-32, length) around the deflate
     * stream; memLevel 8 is zlib's default */
    if(deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return DAPI_ERR_NOMEM;
    enum dapi_err e = DAPI_OK;
    const unsigned char *in = src;
    size_t left = n;
    int r = Z_OK;
    while(r != Z_STREAM_END) {
        /* (zlib counts in uInt: a larger input goes in pieces) */
        size_t piece = left < UINT_MAX ? left : UINT_MAX;
        zs.next_in = (unsigned char *)in;
        zs.avail_in = (uInt)piece;
        size_t room = deflateBound(&zs, (uLong)piece);
        if(room < 64)
            room = 64;
        if(room > UINT_MAX)
            room = UINT_MAX;
        char *at = dapi_buf_reserve(out, room);
        if(!at) {
            e = dapi_buf_error(out);
            break;
        }
        zs.next_out = (unsigned char *)at;
        zs.avail_out = (uInt)room;
        r = deflate(&zs, piece == left ? Z_FINISH : Z_NO_FLUSH);
        if(r == Z_STREAM_ERROR) {
            e = DAPI_ERR_INTERNAL;
            break;
        }
        dapi_buf_commit(out, room - zs.avail_out);
        size_t used = piece - zs.avail_in;
        in += used;
        left -= used;
    }
    deflateEnd(&zs);
    return e;
}
