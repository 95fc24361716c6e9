#include "http/conns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Open addressing with linear probing. A slot is in use while its count is > 0, and at
 * most max_total addresses can have a connection, so with at least twice that many slots
 * the table is never more than half full and a probe always ends. Removal shifts the
 * following run back (no tombstones), so the table never degrades. */
struct slot {
    struct dapi_addr a;
    int64_t n;
};

struct dapi_conns {
    struct slot *slots;
    size_t mask; /* slots - 1, a power of two minus one */
    int64_t max_total, max_per_addr;
    int64_t total, addrs;
    uint64_t seed; /* random, so that a client cannot pick addresses that collide */
};

void dapi_addr_from_sockaddr(struct dapi_addr *a, const struct sockaddr *sa, socklen_t len)
{
    memset(a, 0, sizeof *a);
    if(sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a->b[10] = 0xff;
        a->b[11] = 0xff;
        memcpy(a->b + 12, &in->sin_addr, 4);
    } else if(sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(a->b, &in6->sin6_addr, 16);
    }
}

void dapi_addr_format(const struct dapi_addr *a, char *out, size_t outlen)
{
    static const unsigned char v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const char *ok = memcmp(a->b, v4, 12) == 0
                         ? inet_ntop(AF_INET, a->b + 12, out, (socklen_t)outlen)
                         : inet_ntop(AF_INET6, a->b, out, (socklen_t)outlen);
    if(!ok && outlen)
        snprintf(out, outlen, "?");
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t hash(const struct dapi_conns *t, const struct dapi_addr *a)
{
    uint64_t lo, hi;
    memcpy(&lo, a->b, 8);
    memcpy(&hi, a->b + 8, 8);
    return (size_t)mix(mix(lo ^ t->seed) ^ hi);
}

enum dapi_err dapi_conns_new(struct dapi_conns **out, int64_t max_total, int64_t max_per_addr)
{
    *out = NULL;
    if(max_total < 1 || max_per_addr < 1 || max_total > (int64_t)1 << 30)
        return DAPI_ERR_INVALID;
    struct dapi_conns *t = calloc(1, sizeof *t);
    if(!t)
        return DAPI_ERR_NOMEM;
    size_t n = 16;
    while(n < (size_t)max_total * 2)
        n *= 2;
    t->slots = calloc(n, sizeof *t->slots);
    if(!t->slots) {
        free(t);
        return DAPI_ERR_NOMEM;
    }
    t->mask = n - 1;
    t->max_total = max_total;
    t->max_per_addr = max_per_addr;
    if(getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != (ssize_t)sizeof t->seed)
        t->seed = (uint64_t)(uintptr_t)t ^ 0x9e3779b97f4a7c15ULL; /* still varies per run (ASLR) */
    *out = t;
    return DAPI_OK;
}

void dapi_conns_free(struct dapi_conns *t)
{
    if(!t)
        return;
    free(t->slots);
    free(t);
}

/* The slot holding a, or the empty slot where it would go. */
static size_t find(const struct dapi_conns *t, const struct dapi_addr *a)
{
    size_t i = hash(t, a) & t->mask;
    while(t->slots[i].n > 0 && memcmp(&t->slots[i].a, a, sizeof *a) != 0)
        i = (i + 1) & t->mask;
    return i;
}

int dapi_conns_acquire(struct dapi_conns *t, const struct dapi_addr *a)
{
    if(t->total >= t->max_total)
        return DAPI_CONNS_FULL;
    size_t i = find(t, a);
    struct slot *s = &t->slots[i];
    if(s->n >= t->max_per_addr)
        return DAPI_CONNS_ADDR_FULL;
    if(s->n == 0) {
        s->a = *a;
        t->addrs++;
    }
    s->n++;
    t->total++;
    return DAPI_CONNS_OK;
}

void dapi_conns_release(struct dapi_conns *t, const struct dapi_addr *a)
{
    size_t i = find(t, a);
    if(t->slots[i].n <= 0)
        return; /* not counted: a caller bug, but never let a count go negative */
    t->total--;
    if(--t->slots[i].n > 0)
        return;
    t->addrs--;
    /* Backward-shift deletion: move later members of the probe run into the hole when
     * their home slot is not between the hole and their current position. */
    size_t hole = i, j = i;
    for(;;) {
        j = (j + 1) & t->mask;
        if(t->slots[j].n == 0)
            break;
        size_t home = hash(t, &t->slots[j].a) & t->mask;
        int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if(movable) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    memset(&t->slots[hole], 0, sizeof t->slots[hole]);
}

int64_t dapi_conns_total(const struct dapi_conns *t)
{
    return t->total;
}

int64_t dapi_conns_of(const struct dapi_conns *t, const struct dapi_addr *a)
{
    return t->slots[find(t, a)].n;
}

int64_t dapi_conns_addrs(const struct dapi_conns *t)
{
    return t->addrs;
}
