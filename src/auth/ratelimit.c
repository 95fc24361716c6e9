#include "auth/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct bucket {
    unsigned char owner[DAPI_KEY_HASH_LEN];
    double tokens;
    double rate, burst; /* of the last take: says when the bucket is full again */
    int64_t last_ms;
    struct bucket *next;
};

struct local {
    struct dapi_limiter base; /* first: the interface */
    pthread_mutex_t mu;
    struct bucket **heads;
    size_t nheads; /* a power of two */
    size_t count, max;
};

/* The owner is a SHA-256: its first bytes are already uniform. */
static size_t slot(const struct local *t, const unsigned char *owner)
{
    uint64_t h;
    memcpy(&h, owner, sizeof h);
    return (size_t)(h & (t->nheads - 1));
}

/* Tokens of b at now (refilled, capped at its burst). */
static double level(const struct bucket *b, int64_t now_ms)
{
    double dt = now_ms > b->last_ms ? (double)(now_ms - b->last_ms) : 0;
    double v = b->tokens + dt * b->rate / 1000.0;
    return v > b->burst ? b->burst : v;
}

/* Makes room for one bucket: drops every full bucket; if none was, the fullest one. */
static void evict(struct local *t, int64_t now_ms)
{
    struct bucket **best = NULL;
    double best_fill = -1;
    for(size_t i = 0; i < t->nheads; i++)
        for(struct bucket **pp = &t->heads[i]; *pp;) {
            struct bucket *b = *pp;
            double fill = level(b, now_ms) / b->burst;
            if(fill >= 1.0) {
                *pp = b->next;
                free(b);
                t->count--;
                continue;
            }
            if(fill > best_fill)
                best_fill = fill, best = pp;
            pp = &b->next;
        }
    if(t->count >= t->max && best) {
        struct bucket *b = *best;
        *best = b->next;
        free(b);
        t->count--;
    }
}

static void local_take(struct dapi_limiter *l, const unsigned char owner[DAPI_KEY_HASH_LEN],
                       double rate, double burst, int64_t now_ms, struct dapi_limit_result *out)
{
    struct local *t = (struct local *)l;
    if(burst < 1)
        burst = 1;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    struct bucket *b = t->heads[slot(t, owner)];
    while(b && memcmp(b->owner, owner, DAPI_KEY_HASH_LEN) != 0)
        b = b->next;
    if(!b) {
        if(t->count >= t->max)
            evict(t, now_ms);
        b = calloc(1, sizeof *b);
        if(!b) { /* without memory, no bucket: let the request through rather than fail it */
            pthread_mutex_unlock(&t->mu);
            out->allowed = 1;
            out->remaining = (int64_t)burst - 1;
            return;
        }
        memcpy(b->owner, owner, DAPI_KEY_HASH_LEN);
        b->tokens = burst;
        b->last_ms = now_ms;
        size_t s = slot(t, owner);
        b->next = t->heads[s];
        t->heads[s] = b;
        t->count++;
    }
    b->rate = rate;
    b->burst = burst;
    double v = level(b, now_ms);
    if(now_ms > b->last_ms)
        b->last_ms = now_ms;
    if(v >= 1.0) {
        v -= 1.0;
        out->allowed = 1;
    } else {
        out->retry_after_ms = (int64_t)ceil((1.0 - v) * 1000.0 / rate - 1e-6);
        if(out->retry_after_ms < 1)
            out->retry_after_ms = 1;
    }
    b->tokens = v;
    out->remaining = (int64_t)floor(v);
    out->reset_ms = (int64_t)ceil((burst - v) * 1000.0 / rate - 1e-6); /* - 1e-6: float dust */
    pthread_mutex_unlock(&t->mu);
}

static void local_free(struct dapi_limiter *l)
{
    struct local *t = (struct local *)l;
    if(!t)
        return;
    for(size_t i = 0; i < t->nheads; i++)
        for(struct bucket *b = t->heads[i], *n; b; b = n) {
            n = b->next;
            free(b);
        }
    free(t->heads);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

enum dapi_err dapi_limiter_local(struct dapi_limiter **out, size_t max_buckets)
{
    struct local *t = calloc(1, sizeof *t);
    if(!t)
        return DAPI_ERR_NOMEM;
    t->max = max_buckets ? max_buckets : 65536;
    t->nheads = 16;
    while(t->nheads < t->max)
        t->nheads <<= 1;
    t->heads = calloc(t->nheads, sizeof *t->heads);
    if(!t->heads) {
        free(t);
        return DAPI_ERR_NOMEM;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->base.take = local_take;
    t->base.free = local_free;
    *out = &t->base;
    return DAPI_OK;
}

size_t dapi_limiter_local_count(struct dapi_limiter *l)
{
    struct local *t = (struct local *)l;
    pthread_mutex_lock(&t->mu);
    size_t n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}

int dapi_rate_parse(const char *s, double *per_s, int64_t *count)
{
    if(strcmp(s, "0") == 0) {
        *per_s = 0;
        *count = 0;
        return 0;
    }
    if(!(*s >= '1' && *s <= '9'))
        return -1;
    int64_t n = 0;
    while(*s >= '0' && *s <= '9') {
        n = n * 10 + (*s++ - '0');
        if(n > 1000000000)
            return -1;
    }
    if(*s++ != '/')
        return -1;
    static const struct {
        const char *unit;
        double secs;
    } units[] = {{"s", 1},    {"sec", 1},     {"second", 1}, {"m", 60},
                 {"min", 60}, {"minute", 60}, {"h", 3600},   {"hour", 3600}};
    for(size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if(strcmp(s, units[i].unit) == 0) {
            *per_s = (double)n / units[i].secs;
            *count = n;
            return 0;
        }
    return -1;
}
