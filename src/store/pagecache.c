#include "store/pagecache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct dapi_page {
    struct dapi_page_cache *c; /* NULL: not in a cache (freed at its last release) */
    uint64_t id, page;
    struct dapi_page *hnext;       /* hash chain */
    struct dapi_page *prev, *next; /* LRU list, most recent first */
    unsigned refs;                 /* readers + 1 while in the table (under c->mu) */
    size_t len;
    char data[]; /* len bytes and a NUL */
};

struct dapi_page_cache {
    pthread_mutex_t mu;
    uint64_t max, bytes;
    struct dapi_page **table;
    size_t nbuckets, entries;
    struct dapi_page *head, *tail;
    unsigned refs; /* 1 for the owner + pages out of the table still held (evicted) */
    uint64_t hits, misses, evictions;
};

/* What a page counts for against the bound. */
static uint64_t cost(const struct dapi_page *p)
{
    return (uint64_t)p->len + sizeof *p + 1;
}

static size_t bucket(const struct dapi_page_cache *c, uint64_t id, uint64_t page)
{
    uint64_t x = (id ^ (page * 0x9E3779B97F4A7C15ull)) * 0xff51afd7ed558ccdull;
    return (size_t)(x >> 32) & (c->nbuckets - 1);
}

struct dapi_page_cache *dapi_page_cache_new(uint64_t max_bytes)
{
    struct dapi_page_cache *c = calloc(1, sizeof *c);
    if(!c)
        return NULL;
    c->max = max_bytes;
    c->nbuckets = 1024;
    c->table = calloc(c->nbuckets, sizeof *c->table);
    if(!c->table || pthread_mutex_init(&c->mu, NULL)) {
        free(c->table);
        free(c);
        return NULL;
    }
    c->refs = 1;
    return c;
}

static void cache_destroy(struct dapi_page_cache *c)
{
    pthread_mutex_destroy(&c->mu);
    free(c->table);
    free(c);
}

/* Under c->mu: takes p out of the table and the list; frees it unless a reader holds it. */
static void unlink_page(struct dapi_page_cache *c, struct dapi_page *p)
{
    struct dapi_page **pp = &c->table[bucket(c, p->id, p->page)];
    while(*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    if(p->prev)
        p->prev->next = p->next;
    else
        c->head = p->next;
    if(p->next)
        p->next->prev = p->prev;
    else
        c->tail = p->prev;
    c->bytes -= cost(p);
    c->entries--;
    if(--p->refs == 0)
        free(p);
    else
        c->refs++; /* the cache lives until this page is released */
}

void dapi_page_cache_free(struct dapi_page_cache *c)
{
    if(!c)
        return;
    pthread_mutex_lock(&c->mu);
    while(c->head)
        unlink_page(c, c->head);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if(last)
        cache_destroy(c);
}

/* Doubles the table when it holds more entries than buckets. */
static void grow(struct dapi_page_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct dapi_page **t = calloc(n, sizeof *t);
    if(!t)
        return; /* longer chains, still correct */
    struct dapi_page **old = c->table;
    size_t oldn = c->nbuckets;
    c->table = t;
    c->nbuckets = n;
    for(size_t i = 0; i < oldn; i++)
        for(struct dapi_page *p = old[i], *next; p; p = next) {
            next = p->hnext;
            size_t b = bucket(c, p->id, p->page);
            p->hnext = t[b];
            t[b] = p;
        }
    free(old);
}

static void to_front(struct dapi_page_cache *c, struct dapi_page *p)
{
    if(c->head == p)
        return;
    if(p->prev)
        p->prev->next = p->next;
    if(p->next)
        p->next->prev = p->prev;
    else if(p->prev)
        c->tail = p->prev;
    p->prev = NULL;
    p->next = c->head;
    if(c->head)
        c->head->prev = p;
    c->head = p;
    if(!c->tail)
        c->tail = p;
}

static struct dapi_page *lookup(struct dapi_page_cache *c, uint64_t id, uint64_t page)
{
    for(struct dapi_page *p = c->table[bucket(c, id, page)]; p; p = p->hnext)
        if(p->id == id && p->page == page)
            return p;
    return NULL;
}

enum dapi_err dapi_page_cache_get(struct dapi_page_cache *c, const struct dapi_result *r,
                                  uint64_t page, struct dapi_page **out)
{
    uint64_t id = dapi_result_id(r);
    *out = NULL;
    if(c) {
        pthread_mutex_lock(&c->mu);
        struct dapi_page *p = lookup(c, id, page);
        if(p) {
            p->refs++;
            c->hits++;
            to_front(c, p);
            pthread_mutex_unlock(&c->mu);
            *out = p;
            return DAPI_OK;
        }
        c->misses++;
        pthread_mutex_unlock(&c->mu);
    }
    /* Decoded outside the lock: readers of other pages never wait for it. */
    uint64_t size = dapi_result_page_size(r, page);
    if(size >= SIZE_MAX - sizeof(struct dapi_page) - 1)
        return DAPI_ERR_NOMEM;
    struct dapi_page *p = malloc(sizeof *p + (size_t)size + 1);
    if(!p)
        return DAPI_ERR_NOMEM;
    memset(p, 0, sizeof *p);
    p->id = id;
    p->page = page;
    p->len = (size_t)size;
    p->refs = 1;
    enum dapi_err e = dapi_result_page_decode(r, page, p->data, p->len);
    if(e) {
        free(p);
        return e;
    }
    p->data[p->len] = '\0';
    *out = p;
    if(!c || cost(p) > c->max / 2) /* a page that would push out most others is not kept */
        return DAPI_OK;
    pthread_mutex_lock(&c->mu);
    struct dapi_page *other = lookup(c, id, page);
    if(other) { /* decoded by another reader meanwhile: share theirs */
        other->refs++;
        to_front(c, other);
        pthread_mutex_unlock(&c->mu);
        free(p);
        *out = other;
        return DAPI_OK;
    }
    while(c->tail && c->bytes + cost(p) > c->max) {
        c->evictions++;
        unlink_page(c, c->tail);
    }
    if(c->entries >= c->nbuckets)
        grow(c);
    size_t b = bucket(c, id, page);
    p->c = c;
    p->refs++; /* the table's */
    p->hnext = c->table[b];
    c->table[b] = p;
    p->next = c->head;
    if(c->head)
        c->head->prev = p;
    c->head = p;
    if(!c->tail)
        c->tail = p;
    c->bytes += cost(p);
    c->entries++;
    pthread_mutex_unlock(&c->mu);
    return DAPI_OK;
}

const char *dapi_page_data(const struct dapi_page *p, size_t *len)
{
    *len = p->len;
    return p->data;
}

void dapi_page_release(struct dapi_page *p)
{
    if(!p)
        return;
    struct dapi_page_cache *c = p->c;
    if(!c) {
        free(p);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int gone = --p->refs == 0; /* only once out of the table */
    int last = gone && --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if(gone)
        free(p);
    if(last)
        cache_destroy(c);
}

void dapi_page_cache_stats(struct dapi_page_cache *c, struct dapi_page_cache_stats *out)
{
    memset(out, 0, sizeof *out);
    if(!c)
        return;
    pthread_mutex_lock(&c->mu);
    out->bytes = c->bytes;
    out->entries = c->entries;
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    pthread_mutex_unlock(&c->mu);
}
