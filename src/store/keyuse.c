/* Per-key use of the registry: admission slots (queries being checked, queued or running, by
 * key and in all) and bytes (results, and the query charge of every registered query), held
 * to the limits of dapi_queries_set_limits. Callers of the store_* functions hold qs->lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store/queries.h"
#include "store/queries_int.h"

static struct keyuse *key_get(struct dapi_queries *qs, const unsigned char *key, int create)
{
    struct keyuse **kp = &qs->keys[key[0] % NKEYBUCKETS]; /* SHA-256: uniform bytes */
    for(struct keyuse *k = *kp; k; k = k->next)
        if(memcmp(k->key, key, DAPI_KEY_HASH_LEN) == 0)
            return k;
    struct keyuse *k = create ? calloc(1, sizeof *k) : NULL;
    if(k) {
        memcpy(k->key, key, DAPI_KEY_HASH_LEN);
        k->byseq.unsorted = qs->ages.unsorted; /* (a start's bulk load: sorted at its end) */
        k->next = *kp;
        *kp = k;
    }
    return k;
}

/* Frees k once it counts nothing and no registered query is its. */
static void key_put(struct dapi_queries *qs, struct keyuse *k)
{
    if(!k || k->active || k->bytes || store_agevec_live(&k->byseq))
        return;
    for(struct keyuse **kp = &qs->keys[k->key[0] % NKEYBUCKETS]; *kp; kp = &(*kp)->next)
        if(*kp == k) {
            *kp = k->next;
            store_agevec_free(&k->byseq);
            free(k);
            return;
        }
}

struct store_agevec *store_key_ages(struct dapi_queries *qs, const unsigned char *key, int create)
{
    struct keyuse *k = key_get(qs, key, create);
    return k ? &k->byseq : NULL;
}

/* A query left its key's byseq (store_index_remove): the entry may go. */
void store_key_left(struct dapi_queries *qs, const unsigned char *key)
{
    key_put(qs, key_get(qs, key, 0));
}

void store_keys_each(struct dapi_queries *qs,
                     void (*f)(void *arg, const unsigned char *key, uint64_t bytes,
                               struct store_agevec *byseq),
                     void *arg)
{
    for(size_t b = 0; b < NKEYBUCKETS; b++)
        for(struct keyuse *k = qs->keys[b], *next; k; k = next) {
            next = k->next;
            f(arg, k->key, k->bytes, &k->byseq);
        }
}

static void slot_give_back(struct dapi_queries *qs, const unsigned char *key)
{
    struct keyuse *k = key_get(qs, key, 0);
    if(k && k->active)
        k->active--;
    if(qs->active)
        qs->active--;
    key_put(qs, k);
}

void store_slot_release(struct dapi_queries *qs, struct query *q)
{
    if(q->holds) {
        q->holds = 0;
        slot_give_back(qs, q->owner);
    }
}

/* Takes a slot for q's owner whatever the limits. */
static void slot_take(struct dapi_queries *qs, struct query *q)
{
    struct keyuse *k;
    if(q->holds || !(k = key_get(qs, q->owner, 1)))
        return; /* (without memory for the entry the query is simply not counted) */
    k->active++;
    qs->active++;
    q->holds = 1;
    store_watch(qs, q);
}

/* The one way bytes are counted: adds add to owner's bytes and the store's total, then takes
 * sub back (never below 0). */
static void bytes_count(struct dapi_queries *qs, const unsigned char *owner, uint64_t add,
                        uint64_t sub)
{
    struct keyuse *k = key_get(qs, owner, add > 0);
    qs->bytes += add;
    qs->bytes -= sub < qs->bytes ? sub : qs->bytes;
    if(k) {
        k->bytes += add;
        k->bytes -= sub < k->bytes ? sub : k->bytes;
        key_put(qs, k);
    }
}

/* What q is charged besides its result: the query charge, or twice the bytes of its SQL and
 * parameters if more (kept on disk and in memory for its retention: a flat charge let a key
 * keep 900 KB of parameters per query, 100 times what it counted). */
static uint64_t charge_of(const struct dapi_queries *qs, const struct query *q)
{
    uint64_t text = (q->sql ? strlen(q->sql) : 0) + (q->params ? strlen(q->params) : 0);
    uint64_t c = qs->lim.query_charge;
    return c && 2 * text > c ? 2 * text : c;
}

/* Charges q's owner charge_of(q), from its registration until store_bytes_sub. */
void store_charge(struct dapi_queries *qs, struct query *q)
{
    uint64_t c = charge_of(qs, q);
    bytes_count(qs, q->owner, c, q->charged);
    q->charged = c;
}

void store_bytes_count(struct dapi_queries *qs, struct query *q)
{
    bytes_count(qs, q->owner, q->bytes, 0);
}

void store_bytes_set(struct dapi_queries *qs, struct query *q, uint64_t bytes)
{
    bytes_count(qs, q->owner, bytes, q->bytes);
    q->bytes = bytes;
}

void store_bytes_sub(struct dapi_queries *qs, struct query *q)
{
    bytes_count(qs, q->owner, 0, q->bytes + q->charged);
    q->bytes = 0;
    q->charged = 0;
}

uint64_t store_key_bytes(struct dapi_queries *qs, const unsigned char *key)
{
    struct keyuse *k = key_get(qs, key, 0);
    return k ? k->bytes : 0;
}

void dapi_queries_set_limits(struct dapi_queries *qs, const struct dapi_queries_limits *l)
{
    pthread_mutex_lock(&qs->lock);
    qs->lim = *l;
    /* A new charge applies to the queries registered already (loaded at open) too. */
    for(size_t b = 0; b < qs->nbuckets; b++)
        for(struct query *q = qs->buckets[b]; q; q = q->next)
            if(q->charged != charge_of(qs, q))
                store_charge(qs, q);
    pthread_mutex_unlock(&qs->lock);
}

enum dapi_err store_slot_admit(struct dapi_queries *qs, const unsigned char *key, struct query *q)
{
    enum dapi_err result = DAPI_OK;
    struct keyuse *k = key_get(qs, key, 1);
    if(!k)
        result = DAPI_ERR_NOMEM;
    else if(k->active >= qs->lim.max_key_active)
        result = DAPI_ERR_RATE;
    else if(qs->active >= qs->lim.max_active)
        result = DAPI_ERR_BUSY;
    if(result) {
        key_put(qs, k);
    } else if(q) {
        slot_take(qs, q);
    } else {
        k->active++;
        qs->active++;
    }
    return result;
}

enum dapi_err dapi_queries_admit(struct dapi_queries *qs, const unsigned char *key_hash)
{
    /* One lock for the check and the reservation: concurrent creates cannot all see room. */
    pthread_mutex_lock(&qs->lock);
    enum dapi_err result = store_slot_admit(qs, key_hash, NULL);
    pthread_mutex_unlock(&qs->lock);
    return result;
}

void dapi_queries_unadmit(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    slot_give_back(qs, key_hash);
    pthread_mutex_unlock(&qs->lock);
}

int dapi_queries_hold(struct dapi_queries *qs, const char *slug, const unsigned char *reserved)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    /* a query that already finished holds nothing (one that shared an identical query's
     * run may finish before its creator gets here) */
    if(q && !store_ended(q->state))
        slot_take(qs, q); /* before giving back: the owner's entry stays allocated */
    if(reserved)
        slot_give_back(qs, reserved);
    pthread_mutex_unlock(&qs->lock);
    return q ? 0 : -1;
}

uint64_t dapi_queries_active(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    struct keyuse *k = key_hash ? key_get(qs, key_hash, 0) : NULL;
    uint64_t n = key_hash ? (k ? k->active : 0) : qs->active;
    pthread_mutex_unlock(&qs->lock);
    return n;
}

uint64_t dapi_queries_key_bytes(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t n = store_key_bytes(qs, key_hash);
    pthread_mutex_unlock(&qs->lock);
    return n;
}
