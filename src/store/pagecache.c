#include "store/pagecache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "store/codec.h"
#include "store/gzip.h"

struct dapi_page {
    struct dapi_page_cache *c; /* NULL: not in a cache (freed at its last release) */
    uint64_t id, page, hash;   /* hash: of id, page, form, head and tail */
    int form;
    char *key; /* head NUL tail NUL */
    size_t key_len;
    struct dapi_page *hnext;       /* hash chain */
    struct dapi_page *prev, *next; /* LRU list, most recent first */
    unsigned refs;                 /* readers + 1 while in the table (under c->mu) */
    size_t len;
    char *data; /* len bytes and a NUL */
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
    return (uint64_t)p->len + 1 + p->key_len + sizeof *p;
}

static uint64_t key_hash(uint64_t id, uint64_t page, int form, const char *key, size_t n)
{
    uint64_t x = (id ^ (page * 0x9E3779B97F4A7C15ull) ^ (uint64_t)form) * 0xff51afd7ed558ccdull;
    for(size_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return x ^ (x >> 29);
}

static size_t bucket(const struct dapi_page_cache *c, uint64_t hash)
{
    return (size_t)(hash >> 17) & (c->nbuckets - 1);
}

static void page_free(struct dapi_page *p)
{
    free(p->data);
    free(p);
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
    struct dapi_page **pp = &c->table[bucket(c, p->hash)];
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
        page_free(p);
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
            size_t b = bucket(c, p->hash);
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

static struct dapi_page *lookup(struct dapi_page_cache *c, const struct dapi_page *want)
{
    for(struct dapi_page *p = c->table[bucket(c, want->hash)]; p; p = p->hnext)
        if(p->hash == want->hash && p->id == want->id && p->page == want->page &&
           p->form == want->form && p->key_len == want->key_len &&
           memcmp(p->key, want->key, p->key_len) == 0)
            return p;
    return NULL;
}

/* Builds the body of p (its key set) from r. */
static enum dapi_err build(struct dapi_page *p, const struct dapi_result *r, const char *head,
                           const char *tail)
{
    uint64_t size = dapi_result_page_size(r, p->page);
    size_t hl = strlen(head), tl = strlen(tail);
    if(size >= SIZE_MAX / 2)
        return DAPI_ERR_NOMEM;
    struct dapi_buf b;
    dapi_buf_init(&b, SIZE_MAX / 2);
    enum dapi_err e = DAPI_OK;
    if(p->form == DAPI_PAGE_ZSTD) {
        const void *frame;
        size_t flen, dlen;
        if(dapi_result_page_frame(r, p->page, &frame, &flen, &dlen))
            return DAPI_ERR_IO;
        /* zstd decoders read concatenated frames as one stream: the page is sent as stored,
         * never compressed again */
        dapi_zframe_raw(&b, head, hl);
        dapi_buf_add(&b, frame, flen);
        e = dapi_zframe_raw(&b, tail, tl);
    } else {
        char *at = dapi_buf_reserve(&b, hl + (size_t)size + tl);
        if(at) {
            memcpy(at, head, hl);
            e = dapi_result_page_decode(r, p->page, at + hl, (size_t)size);
            memcpy(at + hl + size, tail, tl);
            dapi_buf_commit(&b, hl + (size_t)size + tl);
        }
        if(!e && p->form == DAPI_PAGE_GZIP && !(e = dapi_buf_error(&b))) {
            /* the plain body, gzipped once (then kept like the others) */
            struct dapi_buf z;
            dapi_buf_init(&z, SIZE_MAX / 2);
            e = dapi_gzip(&z, b.data, b.len, DAPI_GZIP_LEVEL);
            dapi_buf_free(&b);
            b = z;
        }
    }
    if(!e)
        e = dapi_buf_error(&b);
    if(e || !(p->data = dapi_buf_take(&b, &p->len))) {
        dapi_buf_free(&b);
        return e ? e : DAPI_ERR_NOMEM;
    }
    return DAPI_OK;
}

enum dapi_err dapi_page_cache_get(struct dapi_page_cache *c, const struct dapi_result *r,
                                  uint64_t page, enum dapi_page_form form, const char *head,
                                  const char *tail, struct dapi_page **out)
{
    *out = NULL;
    size_t hl = strlen(head), tl = strlen(tail);
    struct dapi_page *p = calloc(1, sizeof *p + hl + tl + 2);
    if(!p)
        return DAPI_ERR_NOMEM;
    p->key = (char *)(p + 1);
    memcpy(p->key, head, hl + 1);
    memcpy(p->key + hl + 1, tail, tl + 1);
    p->key_len = hl + tl + 2;
    p->id = dapi_result_id(r);
    p->page = page;
    p->form = (int)form;
    p->hash = key_hash(p->id, page, p->form, p->key, p->key_len);
    p->refs = 1;
    /* Pages past the end are built, not kept: any page number is valid, and those would
     * push out the pages readers come back for. */
    if(page == 0 || page > dapi_result_pages(r))
        c = NULL;
    if(c) {
        pthread_mutex_lock(&c->mu);
        struct dapi_page *hit = lookup(c, p);
        if(hit) {
            hit->refs++;
            c->hits++;
            to_front(c, hit);
            pthread_mutex_unlock(&c->mu);
            free(p);
            *out = hit;
            return DAPI_OK;
        }
        c->misses++;
        pthread_mutex_unlock(&c->mu);
    }
    /* Built outside the lock: readers of other pages never wait for it. */
    enum dapi_err e = build(p, r, head, tail);
    if(e) {
        free(p);
        return e;
    }
    *out = p;
    if(!c || cost(p) > c->max / 2) /* a body that would push out most others is not kept */
        return DAPI_OK;
    pthread_mutex_lock(&c->mu);
    struct dapi_page *other = lookup(c, p);
    if(other) { /* built by another reader meanwhile: share theirs */
        other->refs++;
        to_front(c, other);
        pthread_mutex_unlock(&c->mu);
        page_free(p);
        *out = other;
        return DAPI_OK;
    }
    while(c->tail && c->bytes + cost(p) > c->max) {
        c->evictions++;
        unlink_page(c, c->tail);
    }
    if(c->entries >= c->nbuckets)
        grow(c);
    size_t b = bucket(c, p->hash);
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
        page_free(p);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int gone = --p->refs == 0; /* only once out of the table */
    int last = gone && --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if(gone)
        page_free(p);
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

/* ---- pages decoded as they are sent ------------------------------------------------ */

struct dapi_page_stream {
    struct dapi_result *r; /* a reference: the frame is read from its mapping */
    struct dapi_zdec *dec;
    char *head, *tail;
    size_t hl, tl, at; /* at: bytes of the head, then of the tail, given so far */
    int phase;         /* 0 head, 1 rows, 2 tail */
};

struct dapi_page_stream *dapi_page_stream_new(struct dapi_result *r, uint64_t page,
                                              const char *head, const char *tail, uint64_t *size)
{
    const void *frame;
    size_t flen, dlen;
    if(dapi_result_page_frame(r, page, &frame, &flen, &dlen) || !flen)
        return NULL;
    struct dapi_page_stream *s = calloc(1, sizeof *s);
    if(!s || !(s->head = strdup(head)) || !(s->tail = strdup(tail)) ||
       !(s->dec = dapi_zdec_new(frame, flen, dlen))) {
        if(s) {
            free(s->head);
            free(s->tail);
        }
        free(s);
        return NULL;
    }
    s->r = dapi_result_ref(r);
    s->hl = strlen(head);
    s->tl = strlen(tail);
    *size = s->hl + (uint64_t)dlen + s->tl;
    return s;
}

long dapi_page_stream_read(struct dapi_page_stream *s, char *out, size_t max)
{
    long n = 0;
    while(max && s->phase != 3) {
        if(s->phase == 1) {
            long k = dapi_zdec_read(s->dec, out + n, max);
            if(k < 0)
                return -1;
            if(!k) {
                s->phase = 2;
                s->at = 0;
            }
            n += k;
            max -= (size_t)k;
            continue;
        }
        const char *text = s->phase ? s->tail : s->head;
        size_t len = s->phase ? s->tl : s->hl, k = len - s->at < max ? len - s->at : max;
        memcpy(out + n, text + s->at, k);
        s->at += k;
        n += (long)k;
        max -= k;
        if(s->at == len)
            s->phase++;
    }
    return n;
}

void dapi_page_stream_free(struct dapi_page_stream *s)
{
    if(!s)
        return;
    dapi_zdec_free(s->dec);
    dapi_result_close(s->r);
    free(s->head);
    free(s->tail);
    free(s);
}
