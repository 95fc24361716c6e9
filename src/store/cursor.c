/* The list's cursor (GET /api/queries): a keyed permutation of a query's seq.
 *
 * seq is the registration counter every key's creations share, so a cursor that was seq told
 * a key how many queries the others had created between two of its own. The cursor is now
 * seq encrypted for its key: a 62-bit Feistel network of four rounds, each an HMAC-SHA-256
 * of the key's owner hash, the round and one half, under a secret of the state dir
 * (<state>/queries/.cursor-key, made at the first start: cursors stay valid across restarts).
 * Decimal, from 1 to 2^62, so it keeps the shape the API has always had. Any such number is
 * some cursor: a made-up one only lists the key's own queries from some place. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth/keys.h"
#include "base/log.h"
#include "store/queries_int.h"

#define CURSOR_KEY_FILE ".cursor-key"
#define HALF_BITS 31
#define HALF_MASK ((1u << HALF_BITS) - 1)

/* Reads the state dir's cursor secret into qs->cursor_key, or makes it (written whole, then
 * renamed into place and made durable). A secret that cannot be kept is drawn for this
 * process only: cursors then do not outlive it. Returns 0 or an errno value. */
int store_cursor_key(struct dapi_queries *qs)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/" CURSOR_KEY_FILE, qs->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd >= 0) {
        ssize_t n = read(fd, qs->cursor_key, sizeof qs->cursor_key);
        close(fd);
        if(n == (ssize_t)sizeof qs->cursor_key)
            return 0;
    }
    if(dapi_random(qs->cursor_key, sizeof qs->cursor_key))
        return EIO;
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = fd < 0 ? errno : 0;
    if(!e && (write(fd, qs->cursor_key, sizeof qs->cursor_key) != (ssize_t)sizeof qs->cursor_key ||
              fsync(fd)))
        e = errno ? errno : EIO;
    if(fd >= 0)
        close(fd);
    if(!e && rename(tmp, path))
        e = errno;
    if(e) {
        unlink(tmp);
        dapi_warn("store: cannot keep the list cursors' secret in %s: %s (cursors will not "
                  "outlive this process)",
                  path, strerror(e));
        return e;
    }
    int dfd = open(qs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if(dfd >= 0) {
        if(fsync(dfd))
            dapi_warn("store: cannot sync %s: %s", qs->dir, strerror(errno));
        close(dfd);
    }
    return 0;
}

/* The round function: 31 bits of HMAC(secret, owner || round || half). */
static uint32_t round_fn(const struct dapi_queries *qs, const unsigned char *owner, int round,
                         uint32_t half)
{
    unsigned char msg[DAPI_KEY_HASH_LEN + 5], mac[32];
    memcpy(msg, owner, DAPI_KEY_HASH_LEN);
    msg[DAPI_KEY_HASH_LEN] = (unsigned char)round;
    for(int i = 0; i < 4; i++)
        msg[DAPI_KEY_HASH_LEN + 1 + i] = (unsigned char)(half >> (8 * i));
    dapi_hmac_sha256(qs->cursor_key, sizeof qs->cursor_key, msg, sizeof msg, mac);
    return ((uint32_t)mac[0] | (uint32_t)mac[1] << 8 | (uint32_t)mac[2] << 16 |
            (uint32_t)mac[3] << 24) &
           HALF_MASK;
}

uint64_t dapi_queries_cursor(const struct dapi_queries *qs, const unsigned char *key_hash,
                             uint64_t seq)
{
    uint32_t l = (uint32_t)(seq >> HALF_BITS) & HALF_MASK, r = (uint32_t)seq & HALF_MASK;
    for(int i = 0; i < 4; i++) {
        uint32_t t = l ^ round_fn(qs, key_hash, i, r);
        l = r;
        r = t;
    }
    return ((uint64_t)l << HALF_BITS | r) + 1;
}

uint64_t dapi_queries_cursor_seq(const struct dapi_queries *qs, const unsigned char *key_hash,
                                 uint64_t cursor)
{
    if(cursor == 0 || cursor > (1ull << (2 * HALF_BITS)))
        return 0;
    cursor--;
    uint32_t l = (uint32_t)(cursor >> HALF_BITS) & HALF_MASK, r = (uint32_t)cursor & HALF_MASK;
    for(int i = 3; i >= 0; i--) {
        uint32_t t = r ^ round_fn(qs, key_hash, i, l);
        r = l;
        l = t;
    }
    return (uint64_t)l << HALF_BITS | r;
}
