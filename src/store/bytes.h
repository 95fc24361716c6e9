/* Little-endian integers in the store's file formats (result files, the creation log, pack
 * files), and a positioned write that finishes or fails. */
#ifndef DAPI_STORE_BYTES_H
#define DAPI_STORE_BYTES_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

static inline void store_put32(unsigned char *p, uint32_t v)
{
    for(int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t store_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store_put64(unsigned char *p, uint64_t v)
{
    for(int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t store_get64(const unsigned char *p)
{
    uint64_t v = 0;
    for(int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Writes all n bytes at off: 0, or an errno value (ENOSPC for a write of nothing). */
static inline int store_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *c = buf;
    while(n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0)
            return w < 0 ? errno : ENOSPC;
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

#endif
