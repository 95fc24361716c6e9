#include "store/queries.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "base/log.h"
#include "base/metrics.h"
#include "store/queries_int.h"

static void fire(struct waiter *w, int timed_out);
static void finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                   const char *message, uint64_t bytes, const void *image);

static size_t bucket(const struct dapi_queries *qs, const char *slug)
{
    return store_hash_str(slug) % qs->nbuckets;
}

struct query *store_find(struct dapi_queries *qs, const char *slug)
{
    for(struct query *q = qs->buckets[bucket(qs, slug)]; q; q = q->next)
        if(strcmp(q->slug, slug) == 0)
            return q;
    return NULL;
}

void store_qfree(struct query *q)
{
    pthread_mutex_destroy(&q->persist);
    dapi_result_close(q->result);
    dapi_result_live_unref(q->live);
    free(q->sql);
    free(q->upstream);
    free(q->params);
    free(q->scope);
    free(q->message);
    store_columns_clear(q);
    free(q);
}

static void unref(struct query *q)
{
    if(--q->refs == 0)
        store_qfree(q);
}

void store_unref(struct query *q)
{
    unref(q);
}


static int slugs_add(struct slugs *s, const char *slug)
{
    if(s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        void *p = realloc(s->v, cap * sizeof *s->v);
        if(!p)
            return -1;
        s->v = p;
        s->cap = cap;
    }
    snprintf(s->v[s->n++], DAPI_SLUG_MAX, "%s", slug);
    return 0;
}

void dapi_queries_result_path(const struct dapi_queries *qs, const char *slug, char *out,
                              size_t outlen)
{
    snprintf(out, outlen, "%s/%s/result.bin", qs->dir, slug);
}

/* The hash table doubles once it holds twice as many queries as chains, so that a look-up
 * stays a few comparisons however many queries are kept (without memory it stays as it is). */
static void grow(struct dapi_queries *qs)
{
    size_t n = qs->nbuckets * 2;
    struct query **b = calloc(n, sizeof *b);
    if(!b)
        return;
    struct query **old = qs->buckets;
    size_t oldn = qs->nbuckets;
    qs->buckets = b;
    qs->nbuckets = n;
    for(size_t i = 0; i < oldn; i++)
        for(struct query *q = old[i], *next; q; q = next) {
            next = q->next;
            size_t at = bucket(qs, q->slug);
            q->next = b[at];
            b[at] = q;
        }
    free(old);
}

/* Registers q, and charges its owner the query charge until forget. */
void store_insert(struct dapi_queries *qs, struct query *q)
{
    if(qs->count >= 2 * qs->nbuckets)
        grow(qs);
    size_t b = bucket(qs, q->slug);
    q->next = qs->buckets[b];
    qs->buckets[b] = q;
    qs->count++;
    q->refs++;
    store_charge(qs, q);
    store_index_add(qs, q, store_key_ages(qs, q->owner, 1));
}

int store_known(struct dapi_queries *qs, const struct query *q)
{
    if(store_find(qs, q->slug) == q)
        return 1;
    for(const struct query *c = qs->creating; c; c = c->creating)
        if(c == q)
            return 1;
    return 0;
}

/* Lists q in qs->creating (one more reference: the creating thread's, so that a checkpoint's
 * hook holding q never frees it) / takes it out again; under the lock. */
static void creating_add(struct dapi_queries *qs, struct query *q)
{
    q->refs++;
    q->creating = qs->creating;
    qs->creating = q;
}

static void creating_remove(struct dapi_queries *qs, struct query *q)
{
    for(struct query **pp = &qs->creating; *pp; pp = &(*pp)->creating)
        if(*pp == q) {
            *pp = q->creating;
            q->creating = NULL;
            return;
        }
}

/* Takes q out of the hash table (the caller holds the lock). */
static void detach(struct dapi_queries *qs, struct query *q)
{
    for(struct query **pp = &qs->buckets[bucket(qs, q->slug)]; *pp; pp = &(*pp)->next)
        if(*pp == q) {
            *pp = q->next;
            qs->count--;
            return;
        }
}

/* Drops the registry's reference to a detached query after taking back what it counted:
 * its bytes and its slot. Open snapshots keep the mapping alive until released. */
static void forget(struct dapi_queries *qs, struct query *q)
{
    if(q->leader[0] && qs->nfollow) {
        q->leader[0] = '\0';
        qs->nfollow--;
    }
    store_bytes_sub(qs, q);
    store_slot_release(qs, q);
    store_result_set(qs, q, NULL); /* (open snapshots hold references of their own) */
    store_index_remove(qs, q);
    unref(q);
}

int store_older(const void *a, const void *b)
{
    const struct query *x = *(struct query *const *)a, *y = *(struct query *const *)b;
    if(x->created_s != y->created_s)
        return x->created_s < y->created_s ? -1 : 1;
    if(x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return strcmp(x->slug, y->slug);
}

/* The oldest query of a key's byseq that may go (never keep), or NULL: queries that may not
 * (queued, running) are bounded by admission, so this looks at few. */
static struct query *oldest_evictable(struct dapi_queries *qs, const struct store_agevec *v,
                                      const struct query *keep)
{
    for(size_t i = v->head; i < v->n; i++) {
        struct query *q = v->v[i].q;
        qs->visits++;
        if(q && q != keep && store_evictable(q))
            return q;
    }
    return NULL;
}

/* The oldest query that may go among those of the keys over their quota. */
struct pick {
    struct dapi_queries *qs;
    uint64_t quota;
    const struct query *keep;
    struct query *best;
};

static void pick_oldest(void *arg, const unsigned char *key, uint64_t bytes,
                        struct store_agevec *byseq)
{
    struct pick *p = arg;
    (void)key;
    struct query *q = bytes > p->quota ? oldest_evictable(p->qs, byseq, p->keep) : NULL;
    if(q && (!p->best || store_older(&q, &p->best) < 0))
        p->best = q;
}

/* Deletes queries that may go (store_evictable: ended, or Nekt v1) and their results, oldest
 * first, to get keys back under their quota. key != NULL: that key's results (in the order
 * they were created) until it holds at most max_key_bytes (keep is never chosen: the result
 * that made room necessary). key == NULL: results of keys over their quota, the oldest of
 * all first, while the store is at max_bytes. Each deletion looks at the front of a key's
 * queries only, never at the whole store. Under the lock; the directories go into gone, for
 * the caller to remove once the lock is released. Returns how many were deleted. */
static size_t evict(struct dapi_queries *qs, const unsigned char *key, const struct query *keep,
                    struct slugs *gone)
{
    size_t done = 0;
    uint64_t quota = qs->lim.max_key_bytes;
    for(;;) {
        struct query *q;
        if(key) {
            if(store_key_bytes(qs, key) <= quota)
                break;
            struct store_agevec *mine = store_key_ages(qs, key, 0);
            q = mine ? oldest_evictable(qs, mine, keep) : NULL;
        } else {
            if(qs->bytes < qs->max_bytes)
                break;
            struct pick p = {qs, quota, keep, NULL};
            store_keys_each(qs, pick_oldest, &p);
            q = p.best;
        }
        if(!q || slugs_add(gone, q->slug))
            break;     /* (a directory we could not remember to remove must stay registered) */
        char owner[9]; /* a prefix of the key's hash tells operators whose it was */
        snprintf(owner, sizeof owner, "%02x%02x%02x%02x", q->owner[0], q->owner[1], q->owner[2],
                 q->owner[3]);
        dapi_info("store: deleting query %s (%s, %llu bytes of result) of the key whose hash "
                  "starts %s: over --max-state-bytes-per-key%s",
                  q->slug,
                  q->state == DAPI_Q_DONE        ? "done"
                  : q->state == DAPI_Q_FAILED    ? "failed"
                  : q->state == DAPI_Q_CANCELLED ? "cancelled"
                                                 : "Nekt v1",
                  (unsigned long long)q->bytes, owner, key ? "" : " while the store is full");
        detach(qs, q);
        forget(qs, q);
        done++;
    }
    return done;
}

static void remove_dirs(const struct dapi_queries *qs, struct slugs *gone);

enum dapi_err dapi_queries_add_bytes(struct dapi_queries *qs, const char *slug, uint64_t n,
                                     char *why, size_t whylen)
{
    struct slugs gone = {0};
    enum dapi_err result = DAPI_OK;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(!q) {
        pthread_mutex_unlock(&qs->lock);
        snprintf(why, whylen, "the query is gone");
        return DAPI_ERR_NOT_FOUND;
    }
    if(q->bytes + q->charged + n > qs->lim.max_key_bytes) { /* nothing else to delete for it */
        pthread_mutex_unlock(&qs->lock);
        snprintf(why, whylen,
                 "the page is not kept: this query's pages would take more than "
                 "--max-state-bytes-per-key");
        return DAPI_ERR_TOO_LARGE;
    }
    store_bytes_set(qs, q, q->bytes + n);
    if(store_key_bytes(qs, q->owner) > qs->lim.max_key_bytes)
        evict(qs, q->owner, q, &gone);
    if(qs->bytes > qs->max_bytes)
        evict(qs, NULL, q, &gone);
    if(store_key_bytes(qs, q->owner) > qs->lim.max_key_bytes) {
        result = DAPI_ERR_TOO_LARGE;
        snprintf(why, whylen,
                 "the page is not kept: this key's stored results and pages "
                 "would take more than --max-state-bytes-per-key");
    } else if(qs->bytes > qs->max_bytes) {
        result = DAPI_ERR_BUSY;
        snprintf(why, whylen,
                 "the page is not kept: the result store is full "
                 "(--max-state-bytes)");
    }
    if(result)
        store_bytes_set(qs, q, q->bytes - n);
    pthread_mutex_unlock(&qs->lock);
    remove_dirs(qs, &gone);
    return result;
}

static void remove_dirs(const struct dapi_queries *qs, struct slugs *gone)
{
    for(size_t i = 0; i < gone->n; i++)
        store_remove_dir(qs, gone->v[i]);
    free(gone->v);
    gone->v = NULL;
    gone->n = gone->cap = 0;
}


enum dapi_err dapi_queries_create(struct dapi_queries *qs, const unsigned char *key_hash,
                                  const char *sql, const char *upstream, int64_t now_s,
                                  char *slug_out, char *why, size_t whylen)
{
    return dapi_queries_create_scoped(qs, key_hash, NULL, sql, upstream, now_s, slug_out, why,
                                      whylen);
}

enum dapi_err dapi_queries_create_scoped(struct dapi_queries *qs, const unsigned char *key_hash,
                                         const struct dapi_scope *scope, const char *sql,
                                         const char *upstream, int64_t now_s, char *slug_out,
                                         char *why, size_t whylen)
{
    return dapi_queries_create_reusing(qs, key_hash, scope, sql, upstream, NULL, now_s, slug_out,
                                       NULL, why, whylen);
}

static enum dapi_err create(struct dapi_queries *qs, const unsigned char *key_hash,
                            const struct dapi_scope *scope, const char *sql, const char *upstream,
                            const char *params, const struct dapi_reuse *ru, int64_t now_s,
                            char *slug_out, enum dapi_reused *reused, char *why, size_t whylen,
                            uint64_t *ticket);

enum dapi_err dapi_queries_create_reusing(struct dapi_queries *qs, const unsigned char *key_hash,
                                          const struct dapi_scope *scope, const char *sql,
                                          const char *upstream, const struct dapi_reuse *ru,
                                          int64_t now_s, char *slug_out, enum dapi_reused *reused,
                                          char *why, size_t whylen)
{
    return create(qs, key_hash, scope, sql, upstream, NULL, ru, now_s, slug_out, reused, why,
                  whylen, NULL);
}

enum dapi_err dapi_queries_create_deferred(struct dapi_queries *qs, const unsigned char *key_hash,
                                           const struct dapi_scope *scope, const char *sql,
                                           const char *upstream, const char *params,
                                           const struct dapi_reuse *ru, int64_t now_s,
                                           char *slug_out, enum dapi_reused *reused, char *why,
                                           size_t whylen, uint64_t *ticket)
{
    return create(qs, key_hash, scope, sql, upstream, params, ru, now_s, slug_out, reused, why,
                  whylen, ticket);
}

void dapi_queries_when_durable(struct dapi_queries *qs, uint64_t ticket,
                               void (*fn)(void *arg, int err), void *arg)
{
    store_commit_when(qs->commit, ticket, fn, arg);
}

void dapi_queries_expect(struct dapi_queries *qs, int coming)
{
    if(qs->commit)
        store_commit_expect(qs->commit, coming);
}

void dapi_queries_set_gather(struct dapi_queries *qs, int64_t max_us)
{
    if(qs->commit)
        store_commit_set_gather(qs->commit, max_us);
}

void dapi_queries_gather_stats(struct dapi_queries *qs, uint64_t *coming, uint64_t *gathered)
{
    *coming = *gathered = 0;
    if(qs->commit)
        store_commit_gather_stats(qs->commit, coming, gathered);
}

void dapi_queries_flush(struct dapi_queries *qs)
{
    if(qs && qs->commit)
        store_commit_drain(qs->commit);
}

/* Registers a new query; its record is durable when this returns (ticket NULL) or once
 * ticket's round has run (the caller answers the creation only then). */
static enum dapi_err create(struct dapi_queries *qs, const unsigned char *key_hash,
                            const struct dapi_scope *scope, const char *sql, const char *upstream,
                            const char *params, const struct dapi_reuse *ru, int64_t now_s,
                            char *slug_out, enum dapi_reused *reused, char *why, size_t whylen,
                            uint64_t *ticket)
{
    enum dapi_err result;
    enum dapi_reused how = DAPI_REUSED_NONE;
    struct query *src = NULL;
    struct slugs gone = {0};
    if(why && whylen)
        why[0] = '\0';
    if(reused)
        *reused = DAPI_REUSED_NONE;
    struct query *q = calloc(1, sizeof *q);
    if(!q || !(q->sql = strdup(sql)) || (upstream && !(q->upstream = strdup(upstream))) ||
       (params && !(q->params = strdup(params))) ||
       (scope && !scope->all && !(q->scope = malloc(sizeof *q->scope)))) {
        if(q) {
            free(q->sql);
            free(q->upstream);
            free(q->params);
        }
        free(q);
        return DAPI_ERR_NOMEM;
    }
    if(q->scope)
        memcpy(q->scope, scope, sizeof *q->scope);
    pthread_mutex_init(&q->persist, NULL);
    /* 22 base62 characters = 130 bits of randomness. */
    memcpy(q->slug, "dapi-query-", 11);
    if((result = dapi_random_base62(q->slug + 11, 22))) {
        store_qfree(q);
        return result;
    }
    memcpy(q->owner, key_hash, DAPI_KEY_HASH_LEN);
    q->created_s = now_s;
    q->done_s = now_s;
    q->last_seen_s = now_s;
    q->state = DAPI_Q_QUEUED;
    if(ru && ru->ident && strlen(ru->ident) < DAPI_REUSE_HEX &&
       (!ru->fp || strlen(ru->fp) < DAPI_REUSE_HEX)) {
        snprintf(q->ident, sizeof q->ident, "%s", ru->ident);
        snprintf(q->fp, sizeof q->fp, "%s", ru->fp ? ru->fp : "");
    }
    pthread_mutex_lock(&qs->lock);
    /* A full store first costs the keys over their quota (possible after a restart with a
     * smaller --max-state-bytes-per-key) their oldest results; only then is it refused. */
    if(qs->bytes >= qs->max_bytes)
        evict(qs, NULL, NULL, &gone);
    uint64_t used = qs->bytes;
    q->seq = ++qs->seq; /* persisted: "oldest" means the same after a restart */
    q->reused = 0;
    if(q->ident[0] && ru->max_age_s > 0 && used < qs->max_bytes &&
       (src = store_reusable(qs, ru, now_s, &how))) {
        src->refs++; /* kept while its result file is linked */
        q->done_s = src->done_s;
        if(how == DAPI_REUSED_RUN) {
            snprintf(q->leader, sizeof q->leader, "%s", src->slug);
            store_watch(qs, q);
            q->reused = 1;
        }
    }
    int early = 0, listed = 0;
    if(q->ident[0] && !src && used < qs->max_bytes) {
        /* Registered now, in the same step as the look-up: an identical creation right
         * behind this one attaches to it instead of missing it and running too. */
        store_insert(qs, q);
        q->refs++; /* this function's, until it returns */
        store_reuse_set(qs, q);
        early = 1;
        if(store_key_bytes(qs, q->owner) > qs->lim.max_key_bytes)
            evict(qs, q->owner, q, &gone); /* its charge: the key's oldest ended queries go */
    }
    pthread_mutex_unlock(&qs->lock);
    remove_dirs(qs, &gone);
    if(used >= qs->max_bytes) {
        if(why && whylen)
            snprintf(why, whylen, "the result store is full (--max-state-bytes)");
        store_qfree(q);
        return DAPI_ERR_BUSY;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", qs->dir, q->slug);
    /* A packed result (store/pack.h) is copied into the new query's own record: a small one
     * costs less copied than a directory and a link. */
    struct dapi_result *copy = NULL;
    if(how == DAPI_REUSED_RESULT && qs->pack && store_pack_has(qs->pack, src->slug)) {
        pthread_mutex_lock(&qs->lock);
        struct dapi_result *sr = store_result(qs, src);
        copy = sr ? dapi_result_ref(sr) : NULL;
        pthread_mutex_unlock(&qs->lock);
        if(!copy) {
            how = DAPI_REUSED_NONE;
            q->done_s = now_s;
        }
    }
    if(how == DAPI_REUSED_RESULT && !copy && mkdir(dir, 0700)) {
        int e = errno;
        dapi_error("store: cannot create %s: %s", dir, strerror(e));
        result = store_storage_error(e, "to create the query's directory", why, whylen);
        goto fail;
    }
    if(copy) {
        const void *image;
        size_t len;
        dapi_result_image(copy, &image, &len);
        q->state = DAPI_Q_DONE;
        q->bytes = len;
        q->reused = 1;
        q->started_s = q->finished_s = now_s;
        store_columns_copy(q, src); /* (src is kept alive by its reference) */
    } else if(how == DAPI_REUSED_RESULT) {
        /* The result is shared on disk: a hard link, so the file system counts the
         * references — deleting either slug leaves the other's file whole, across restarts. */
        char from[4096], to[4096];
        struct stat st;
        dapi_queries_result_path(qs, src->slug, from, sizeof from);
        dapi_queries_result_path(qs, q->slug, to, sizeof to);
        if(link(from, to) || stat(to, &st) || dapi_result_open(&q->result, to)) {
            unlink(to); /* (deleted meanwhile, or a file system without hard links) */
            how = DAPI_REUSED_NONE;
            q->done_s = now_s;
        } else {
            q->state = DAPI_Q_DONE;
            q->bytes = (uint64_t)st.st_size;
            q->reused = 1;
            q->started_s = q->finished_s = now_s;
            store_columns_copy(q, src); /* (src is kept alive by its reference) */
        }
    }
    /* Files now only for a reused result (its directory holds the link); else its run's end
     * writes them, or a checkpoint before (store/meta.c). */
    atomic_store(&q->ondisk, how == DAPI_REUSED_RESULT);
    if(!early) { /* (an early one is registered: the hook sees it there) */
        pthread_mutex_lock(&qs->lock);
        creating_add(qs, q);
        pthread_mutex_unlock(&qs->lock);
        listed = 1;
    }
    struct meta m = store_meta_of(q);
    int e = store_room(qs);
    if(!e && copy) {
        const void *image;
        size_t len;
        dapi_result_image(copy, &image, &len);
        e = store_pack_meta(qs, &m, image, len, &q->result);
        if(!e && !q->result)
            e = EIO;
    }
    dapi_result_close(copy);
    if(!e)
        e = store_record_meta(qs, &m, ticket,
                              how == DAPI_REUSED_RESULT && !copy); /* durable before the answer */
    if(e) {
        if(listed) { /* (first: a checkpoint's hook must not write its files again) */
            pthread_mutex_lock(&qs->lock);
            creating_remove(qs, q);
            pthread_mutex_unlock(&qs->lock);
        }
        store_remove_dir(qs, q->slug);
        result = store_storage_error(e, "to record the query", why, whylen);
        goto fail;
    }
    pthread_mutex_lock(&qs->lock);
    if(early) {
        unref(q);
        pthread_mutex_unlock(&qs->lock);
        snprintf(slug_out, DAPI_SLUG_MAX, "%s", q->slug);
        return DAPI_OK;
    }
    creating_remove(qs, q);
    if(how == DAPI_REUSED_RUN && (store_find(qs, src->slug) != src ||
                                  (src->state != DAPI_Q_QUEUED && src->state != DAPI_Q_RUNNING))) {
        /* its run ended meanwhile: this one runs itself */
        how = DAPI_REUSED_NONE;
        q->leader[0] = '\0';
        q->done_s = now_s;
        q->reused = 0;
    }
    store_insert(qs, q);
    store_result_adopt(qs, q); /* (a reused result's, mapped above) */
    unref(q);                  /* (the creating thread's: the registry holds it now) */
    if(how == DAPI_REUSED_RUN)
        qs->nfollow++;
    else
        store_reuse_set(qs,
                        q); /* the newest holder of the identity (a reuse keeps its data time) */
    if(how == DAPI_REUSED_RESULT) /* its owner is charged the whole result, as if it ran it */
        store_bytes_count(qs, q);
    if(store_key_bytes(qs, q->owner) > qs->lim.max_key_bytes)
        evict(qs, q->owner, q, &gone); /* also for the charge of a query registered now */
    if(src)
        unref(src);
    snprintf(slug_out, DAPI_SLUG_MAX, "%s", q->slug); /* (under the lock: q is the registry's) */
    pthread_mutex_unlock(&qs->lock);
    remove_dirs(qs, &gone);
    if(reused)
        *reused = how;
    return DAPI_OK;
fail:
    if(src) {
        pthread_mutex_lock(&qs->lock);
        unref(src);
        pthread_mutex_unlock(&qs->lock);
    }
    if(early) {
        /* registered early: out again; anything attached meanwhile fails retryably */
        char slug[DAPI_SLUG_MAX];
        snprintf(slug, sizeof slug, "%s", q->slug);
        pthread_mutex_lock(&qs->lock);
        if(store_find(qs, slug) == q) {
            detach(qs, q);
            forget(qs, q);
        }
        unref(q);
        pthread_mutex_unlock(&qs->lock);
        store_settle_followers(qs, slug, DAPI_ERR_BUSY,
                               "the identical query this one shared a run with "
                               "could not be recorded",
                               0, NULL);
        return result;
    }
    if(listed) { /* a checkpoint's hook may hold it still: the last reference frees it */
        pthread_mutex_lock(&qs->lock);
        unref(q);
        pthread_mutex_unlock(&qs->lock);
        return result;
    }
    store_qfree(q);
    return result;
}

/* Copies a stored message into a view's field of n bytes; one too long is cut (never inside a
 * UTF-8 sequence) and ends with a note saying so. */
static void copy_message(char *out, size_t n, const char *m)
{
    static const char note[] = " ... (cut)";
    size_t len = strlen(m);
    if(len < n) {
        memcpy(out, m, len + 1);
        return;
    }
    size_t cut = n - sizeof note;
    while(cut > 0 && ((unsigned char)m[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(out, m, cut);
    memcpy(out + cut, note, sizeof note);
}

enum dapi_err dapi_queries_get(struct dapi_queries *qs, const char *slug,
                               const unsigned char *key_hash, int64_t now_s, struct dapi_qview *v)
{
    /* (not memset: the view is 1 KiB, and this runs for every page request) */
    v->slug[0] = v->message[0] = '\0';
    v->state = DAPI_Q_QUEUED;
    v->error = DAPI_OK;
    v->result = NULL;
    v->expires_s = 0;
    v->live = NULL;
    v->ref = NULL;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    /* owner compared in constant time; expired is the same as unknown */
    if(!q || !dapi_ct_equal(q->owner, DAPI_KEY_HASH_LEN, key_hash, DAPI_KEY_HASH_LEN) ||
       q->created_s + qs->retention_s <= now_s) {
        pthread_mutex_unlock(&qs->lock);
        return DAPI_ERR_NOT_FOUND;
    }
    q->refs++;
    q->last_seen_s = now_s; /* its owner asks about it: not abandoned */
    dapi_copy_str(v->slug, sizeof v->slug, q->slug);
    v->state = q->state;
    v->error = q->error;
    copy_message(v->message, sizeof v->message, q->message ? q->message : "");
    /* (a reference: the registry may unmap its own meanwhile, store_result) */
    if((v->result = store_result(qs, q)))
        dapi_result_ref(v->result);
    v->expires_s = q->created_s + qs->retention_s;
    v->ref = q;
    if(q->state == DAPI_Q_QUEUED || q->state == DAPI_Q_RUNNING) {
        /* one sharing an identical query's run is served that run's pages */
        struct query *run = q->leader[0] ? store_find(qs, q->leader) : q;
        if(run && (v->live = run->live))
            dapi_result_live_ref(v->live);
    }
    pthread_mutex_unlock(&qs->lock);
    return DAPI_OK;
}

void dapi_queries_release(struct dapi_queries *qs, struct dapi_qview *v)
{
    if(!v->ref)
        return;
    pthread_mutex_lock(&qs->lock);
    unref(v->ref);
    pthread_mutex_unlock(&qs->lock);
    dapi_result_close(v->result);
    dapi_result_live_unref(v->live);
    v->ref = NULL;
    v->result = NULL;
    v->live = NULL;
}

int dapi_queries_claim(struct dapi_queries *qs, const char *slug)
{
    int claimed = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->state == DAPI_Q_QUEUED && !q->leader[0]) { /* a follower never runs itself */
        store_set_state(qs, q, DAPI_Q_RUNNING);
        claimed = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    return claimed;
}

/* A reference to slug's query with its persist lock held, or NULL. The fields a meta.json
 * write reads without the main lock change only under that lock (upstream) or never. */
/* store_save_meta for q (its persist lock held): once written, q has its files. */
static int save_meta(const struct dapi_queries *qs, struct query *q, const struct meta *m,
                     int durable)
{
    int e = store_save_meta(qs, m, durable);
    if(!e)
        atomic_store(&q->ondisk, 1);
    return e;
}

static struct query *persist_begin(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q)
        q->refs++;
    pthread_mutex_unlock(&qs->lock);
    if(q)
        pthread_mutex_lock(&q->persist);
    return q;
}

static void persist_end(struct dapi_queries *qs, struct query *q)
{
    pthread_mutex_unlock(&q->persist);
    pthread_mutex_lock(&qs->lock);
    unref(q);
    pthread_mutex_unlock(&qs->lock);
}

enum dapi_err dapi_queries_start_run(struct dapi_queries *qs, const char *slug, char *why,
                                     size_t whylen)
{
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return DAPI_ERR_NOT_FOUND;
    pthread_mutex_lock(&qs->lock);
    enum dapi_err result = DAPI_OK;
    if(store_find(qs, slug) != q) /* expired meanwhile */
        result = DAPI_ERR_NOT_FOUND;
    else if(store_ended(q->state) &&
            !(q->state == DAPI_Q_CANCELLED && store_has_followers(qs, slug)))
        result = DAPI_ERR_INVALID; /* (a cancelled one still runs for those sharing its run) */
    if(result) {
        pthread_mutex_unlock(&qs->lock);
        persist_end(qs, q);
        return result;
    }
    if(q->state != DAPI_Q_CANCELLED)
        store_set_state(qs, q, DAPI_Q_RUNNING);
    q->started_s = qs->wall_s();
    q->finished_s = 0;
    q->attempts++;
    q->in_run = 1;
    store_watch(qs, q);
    q->run_start_us = dapi_clock_mono_us();
    struct meta m = store_meta_of(q);
    m.message = NULL;
    pthread_mutex_unlock(&qs->lock);
    /* Counted before the run starts: if the run kills the process, the next start knows
     * (DAPI_QUERY_MAX_ATTEMPTS). Not fsynced: a process that dies leaves the write in the page
     * cache; only a power loss can undo it, and that is no crash the query caused. A query
     * without files yet has the count go to the creation log, which a start reads before the
     * files (or a checkpoint writes it to created.json): no meta.json until the run ends (the
     * run makes the directory if it writes a file). A packed query run again (its record
     * was read back but its result could not be) leaves its record: it is recorded in the log instead, durably first (its creation
     * record may be gone from the log), then the record goes, durably too — so a crash in
     * between finds one of the two, and a start never finds an outdated record besides
     * newer files. */
    int e = 0, packed = qs->pack && store_pack_has(qs->pack, slug);
    if(packed)
        atomic_store(&q->ondisk, 0); /* (its record goes: it is a query without files now) */
    int logged = !atomic_load(&q->ondisk);
    if(!logged)
        e = save_meta(qs, q, &m, 0);
    pthread_mutex_unlock(&q->persist);
    /* (after the persist lock: a checkpoint's hook takes that with the log's lock held) */
    if(packed) {
        e = store_record_meta(qs, &m, NULL, 0);
        int r = e ? 0 : store_pack_remove(qs->pack, slug, 1);
        e = r < 0 ? -r : e;
    } else if(!e && logged) {
        e = store_log_meta(qs, &m);
    }
    pthread_mutex_lock(&qs->lock);
    if(e) {
        q->attempts--;
        q->in_run = 0;
    }
    unref(q);
    pthread_mutex_unlock(&qs->lock);
    return e ? store_storage_error(e, "to record that the query starts", why, whylen) : DAPI_OK;
}

void dapi_queries_drop(struct dapi_queries *qs, const char *slug)
{
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return;
    pthread_mutex_lock(&qs->lock);
    store_slot_release(qs, q);
    int rollback = q->in_run && (q->state == DAPI_Q_QUEUED || q->state == DAPI_Q_RUNNING);
    if(q->state == DAPI_Q_RUNNING)
        store_set_state(qs, q, DAPI_Q_QUEUED);
    struct dapi_result_live *live = q->live; /* its run is over */
    q->live = NULL;
    q->pages_ready = 0;
    if(rollback) {
        /* Cut short by a shutdown this process survives: not a crash. */
        q->attempts--;
        q->in_run = 0;
    }
    struct meta m = store_meta_of(q);
    m.message = NULL;
    pthread_mutex_unlock(&qs->lock);
    dapi_result_live_unref(live);
    if(rollback)
        save_meta(qs, q, &m, 0);
    persist_end(qs, q);
}

void dapi_queries_remove(struct dapi_queries *qs, const char *slug)
{
    /* Under the persist lock, so no meta.json write of this query is half-way. */
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return;
    pthread_mutex_lock(&qs->lock);
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    int registered = store_find(qs, slug) == q;
    if(registered) {
        detach(qs, q);
        forget(qs, q); /* its slot and bytes; persist_begin's reference keeps q alive */
    }
    pthread_mutex_unlock(&qs->lock);
    persist_end(qs, q);
    fire(w, 0);
    if(registered) {
        store_settle_followers(qs, slug, DAPI_ERR_BUSY,
                               "the identical query this one shared a run with was removed", 0,
                               NULL);
        store_remove_dir(qs, slug);
    }
}

int store_has_followers(struct dapi_queries *qs, const char *slug)
{
    /* (a query sharing a run is in the watch list while it does) */
    for(struct query *f = qs->nfollow ? qs->watch : NULL; f; f = f->wnext, qs->visits++)
        if(f->leader[0] && strcmp(f->leader, slug) == 0)
            return 1;
    return 0;
}

/* dapi_queries_cancel; key_hash NULL: an abandoned query (whoever owns it), only if it
 * still is. */
static enum dapi_err cancel(struct dapi_queries *qs, const char *slug,
                            const unsigned char *key_hash, int64_t now_s, const char *why,
                            int *deleted)
{
    *deleted = 0;
    char *msg = strdup(why);
    struct query *q = msg ? persist_begin(qs, slug) : NULL;
    if(!q) {
        free(msg);
        return msg ? DAPI_ERR_NOT_FOUND : DAPI_ERR_NOMEM;
    }
    pthread_mutex_lock(&qs->lock);
    if(store_find(qs, slug) != q || q->created_s + qs->retention_s <= now_s ||
       (key_hash && !dapi_ct_equal(q->owner, DAPI_KEY_HASH_LEN, key_hash, DAPI_KEY_HASH_LEN))) {
        pthread_mutex_unlock(&qs->lock);
        persist_end(qs, q);
        free(msg);
        return DAPI_ERR_NOT_FOUND;
    }
    if(!key_hash &&
       (store_ended(q->state) || q->waiters || now_s - q->last_seen_s < qs->abandon_s)) {
        /* abandoned, it was asked about or ended meanwhile: left alone */
        pthread_mutex_unlock(&qs->lock);
        persist_end(qs, q);
        free(msg);
        return DAPI_ERR_NOT_FOUND;
    }
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    if(store_ended(q->state)) { /* deleted, as if it had expired */
        detach(qs, q);
        forget(qs, q); /* persist_begin's reference keeps q alive */
        pthread_mutex_unlock(&qs->lock);
        persist_end(qs, q);
        fire(w, 0);
        store_remove_dir(qs, slug);
        free(msg);
        *deleted = 1;
        return DAPI_OK;
    }
    struct dapi_result_live *live = NULL;
    if(q->leader[0]) { /* leaves the run it shares, which goes on for the others */
        struct query *run = store_find(qs, q->leader);
        q->leader[0] = '\0';
        if(qs->nfollow)
            qs->nfollow--;
        /* the last one sharing the run of a cancelled query: nobody needs that run now */
        if(run && run->state == DAPI_Q_CANCELLED && run->cancel &&
           !store_has_followers(qs, run->slug))
            atomic_store(run->cancel, 1);
    } else if(!store_has_followers(qs, slug)) { /* nobody else needs its run: stopped */
        if(q->cancel)
            atomic_store(q->cancel, 1);
        live = q->live;
        q->live = NULL;
        q->pages_ready = 0;
    } /* else its run goes on for the queries sharing it (their page waiters are woken
         with the rest, and wait again) */
    store_set_state(qs, q, DAPI_Q_CANCELLED);
    q->error = DAPI_OK;
    free(q->message);
    q->message = msg;
    q->finished_s = now_s;
    store_slot_release(qs, q);
    struct meta m = store_meta_of(q);
    pthread_mutex_unlock(&qs->lock);
    /* the cancelled state survives a restart: it is never run again */
    int e = save_meta(qs, q, &m, 1); /* durable: never run again, even after a power loss */
    persist_end(qs, q);
    dapi_result_live_unref(live);
    fire(w, 0);
    if(e)
        dapi_warn("store: query %s cancelled, but that could not be recorded: %s", slug,
                  strerror(e));
    return DAPI_OK;
}

enum dapi_err dapi_queries_cancel(struct dapi_queries *qs, const char *slug,
                                  const unsigned char *key_hash, int64_t now_s, const char *why,
                                  int *deleted)
{
    return cancel(qs, slug, key_hash, now_s, why, deleted);
}

enum dapi_err dapi_queries_retry(struct dapi_queries *qs, const char *slug)
{
    enum dapi_err result = DAPI_ERR_INVALID;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->state == DAPI_Q_FAILED && q->error == DAPI_ERR_BUSY) {
        result = store_slot_admit(qs, q->owner, q);
        if(!result) {
            /* In memory only: meta.json says failed (retryable) until the run starts, which
             * is what a restart in between should find too. */
            store_set_state(qs, q, DAPI_Q_QUEUED);
            q->error = DAPI_OK;
            free(q->message);
            q->message = NULL;
        }
    }
    pthread_mutex_unlock(&qs->lock);
    return result;
}

int dapi_queries_memory_retry(struct dapi_queries *qs, const char *slug, uint64_t mark, int max)
{
    int granted = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->memory_retries < max) {
        q->memory_retries++;
        q->memory_mark = mark;
        granted = q->memory_retries;
    }
    pthread_mutex_unlock(&qs->lock);
    return granted;
}

int dapi_queries_memory_mark(struct dapi_queries *qs, const char *slug, uint64_t *mark)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    int retried = q && q->memory_retries > 0;
    if(retried)
        *mark = q->memory_mark;
    pthread_mutex_unlock(&qs->lock);
    return retried;
}

enum dapi_err dapi_queries_set_upstream(struct dapi_queries *qs, const char *slug,
                                        const char *upstream)
{
    /* Snapshot every field under the lock, write meta.json without it; the query's persist
     * lock keeps this write and finish()'s from interleaving on meta.json.tmp. */
    enum dapi_err result = DAPI_ERR_NOMEM;
    char *copy = strdup(upstream), *sql = NULL, *message = NULL;
    unsigned char owner[DAPI_KEY_HASH_LEN];
    if(!copy)
        return DAPI_ERR_NOMEM;
    struct query *q = persist_begin(qs, slug);
    if(!q) {
        free(copy);
        return DAPI_ERR_NOT_FOUND;
    }
    pthread_mutex_lock(&qs->lock);
    if(store_find(qs, slug) != q) { /* expired meanwhile */
        pthread_mutex_unlock(&qs->lock);
        result = DAPI_ERR_NOT_FOUND;
        goto out;
    }
    free(q->upstream);
    q->upstream = copy;
    copy = NULL;
    memcpy(owner, q->owner, sizeof owner);
    sql = strdup(q->sql);
    message = q->message ? strdup(q->message) : NULL;
    upstream = q->upstream;
    int64_t created = q->created_s;
    enum dapi_qstate state = q->state;
    enum dapi_err error = q->error;
    uint64_t bytes = q->bytes;
    int attempts = q->attempts;
    uint64_t seq = q->seq;
    int64_t started = q->started_s, finished = q->finished_s;
    int reused = q->reused; /* (no columns yet: this is called before the run) */
    char *up = strdup(q->upstream);
    pthread_mutex_unlock(&qs->lock);
    if(sql && up) {
        struct meta m = {slug,      owner,     sql,      up,
                         message,   q->params, q->scope, /* immutable */
                         created,   state,     error,    bytes,
                         attempts,  seq,       q->ident, q->fp,
                         q->done_s, started,   finished, reused,
                         0,         NULL,      NULL,     !atomic_load(&q->ondisk)};
        /* durable: the upstream run it names costs money to start again */
        result = save_meta(qs, q, &m, 1) ? DAPI_ERR_IO : DAPI_OK;
    }
    free(up);
out:
    persist_end(qs, q);
    free(copy);
    free(sql);
    free(message);
    return result;
}

static void fire(struct waiter *w, int timed_out)
{
    while(w) {
        struct waiter *next = w->next;
        w->cb(w->arg, timed_out);
        free(w);
        w = next;
    }
}

/* The end of a run of a query cancelled meanwhile (q's persist lock held, and released
 * here): its outcome is not recorded — it stays cancelled — and its result file goes, after
 * the queries sharing its run got theirs. Returns 0 if q is not cancelled. */
static int finish_cancelled(struct dapi_queries *qs, struct query *q, const char *rp,
                            struct dapi_result *res, enum dapi_err error, const char *message,
                            uint64_t bytes, const void *image)
{
    pthread_mutex_lock(&qs->lock);
    if(q->state != DAPI_Q_CANCELLED) {
        pthread_mutex_unlock(&qs->lock);
        return 0;
    }
    char slug[DAPI_SLUG_MAX];
    snprintf(slug, sizeof slug, "%s", q->slug);
    q->in_run = 0;
    struct dapi_result_live *live = q->live;
    q->live = NULL;
    q->pages_ready = 0;
    struct waiter *w = q->waiters; /* waiters of followers' pages */
    q->waiters = NULL;
    int follow = qs->nfollow != 0;
    pthread_mutex_unlock(&qs->lock);
    dapi_result_close(res);
    dapi_result_live_unref(live);
    if(follow)
        store_settle_followers(qs, slug, error, message, bytes, image);
    unlink(rp);
    persist_end(qs, q);
    fire(w, 0);
    return 1;
}

void dapi_queries_finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                         const char *message, uint64_t bytes)
{
    finish(qs, slug, error, message, bytes, NULL);
}

void dapi_queries_finish_small(struct dapi_queries *qs, const char *slug, const void *image,
                               size_t len)
{
    finish(qs, slug, DAPI_OK, NULL, len, image);
}

static void finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                   const char *message, uint64_t bytes, const void *image)
{
    struct dapi_result *res = NULL;
    struct slugs gone = {0};
    char rp[4096], why[256];
    dapi_queries_result_path(qs, slug, rp, sizeof rp);
    pthread_mutex_lock(&qs->lock);
    uint64_t quota = qs->lim.max_key_bytes;
    pthread_mutex_unlock(&qs->lock);
    if(!error && bytes > quota) {
        /* Room for it would cost the key every other result and more: refused, and nothing
         * else is deleted for it. */
        snprintf(why, sizeof why,
                 "the result takes %llu bytes, more than one API key may store "
                 "(--max-state-bytes-per-key %llu)",
                 (unsigned long long)bytes, (unsigned long long)quota);
        error = DAPI_ERR_TOO_LARGE;
        message = why;
        unlink(rp);
    }
    if(!error && !image && dapi_result_open(&res, rp)) {
        error = DAPI_ERR_IO;
        message = "the materialised result could not be read back";
    }
    struct query *q = persist_begin(qs, slug);
    if(!q) {
        dapi_result_close(res);
        store_settle_followers(
            qs, slug, error ? error : DAPI_ERR_BUSY,
            error ? message : "the identical query this one shared a run with expired", 0, NULL);
        return;
    }

    if(finish_cancelled(qs, q, rp, res, error, message, bytes, image))
        return;
    int pack = store_packable(qs, q, error, image);
    if(!pack && !error && image) { /* (it has files: the result joins them) */
        int e = store_write_image(rp, image, (size_t)bytes);
        if(e || dapi_result_open(&res, rp)) {
            error = store_storage_error(e ? e : EIO, "to store the result", why, sizeof why);
            message = why;
        }
    }
    /* Persist first: a client told "done" must find it done after a restart. The fields
     * read here change only under the persist lock (set_upstream, cancel) or here, or before
     * (the columns, by the run calling this). The outcome is recorded, so the attempts no
     * longer count. */
    int64_t finished = qs->wall_s();
    struct meta m = store_meta_of(q);
    m.message = message;
    m.state = error ? DAPI_Q_FAILED : DAPI_Q_DONE;
    m.error = error;
    m.bytes = error ? 0 : bytes;
    m.attempts = 0;
    m.finished_s = finished;
    if(error) {
        m.ncols = 0; /* a failed run's columns describe nothing stored */
        m.col_names = m.col_types = NULL;
    }
    int e = pack ? store_pack_meta(qs, &m, image, (size_t)bytes, &res) : save_meta(qs, q, &m, 0);
    if(pack && !e)
        atomic_store(&q->ondisk, 1);
    if(pack && e) { /* not recorded: the result is not kept (run it again later) */
        dapi_result_close(res);
        res = NULL;
        error = store_storage_error(e, "to store the result", why, sizeof why);
        message = why;
        bytes = 0;
    }
    pthread_mutex_unlock(&q->persist);

    pthread_mutex_lock(&qs->lock);
    store_set_state(qs, q, error ? DAPI_Q_FAILED : DAPI_Q_DONE);
    q->error = error;
    free(q->message);
    q->message = message ? strdup(message) : NULL;
    /* (only while registered: a query that expired meanwhile counts and maps nothing) */
    int registered = store_find(qs, slug) == q;
    if(res && registered)
        store_result_set(qs, q, res);
    else
        q->result = res; /* (expired meanwhile: freed with it) */
    q->attempts = 0;
    if(q->in_run && q->run_start_us)
        dapi_metrics_run(!error, dapi_clock_mono_us() - q->run_start_us);
    q->in_run = 0;
    q->finished_s = finished;
    if(error)
        store_columns_clear(q);
    struct dapi_result_live *live = q->live; /* served from the result (or failed) now */
    q->live = NULL;
    q->pages_ready = 0;
    store_slot_release(qs, q);
    if(!error && registered) {
        store_bytes_set(qs, q, bytes);
        if(store_key_bytes(qs, q->owner) > quota)
            evict(qs, q->owner, q, &gone);
    }
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    int follow = qs->nfollow != 0;
    /* (no other query's eviction takes it before the queries sharing its run have linked
     * its file: store_settle_followers unpins it) */
    q->pinned = follow;
    unref(q);
    pthread_mutex_unlock(&qs->lock);
    dapi_result_live_unref(live);
    if(follow) /* before the waiters: a result file deleted by eviction is still linkable */
        store_settle_followers(qs, slug, error, message, bytes, error ? NULL : image);
    fire(w, 0);
    remove_dirs(qs, &gone);
}

/* Asks q's run to publish the lowest page one of its waiters still needs (under the lock). */
static void want_update(struct query *q)
{
    uint64_t min = 0;
    if(!q->live)
        return;
    for(struct waiter *w = q->waiters; w; w = w->next)
        if(w->page > q->pages_ready && (!min || w->page < min))
            min = w->page;
    dapi_result_live_want(q->live, min);
}

int dapi_queries_wait_page(struct dapi_queries *qs, const char *slug, uint64_t page,
                           int64_t deadline_ms, void (*cb)(void *arg, int timed_out), void *arg)
{
    struct waiter *w = malloc(sizeof *w);
    if(!w)
        return -1;
    w->cb = cb;
    w->arg = arg;
    w->deadline_ms = deadline_ms;
    w->page = page;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(!q || store_ended(q->state)) {
        pthread_mutex_unlock(&qs->lock);
        free(w);
        return -1;
    }
    if(page && q->leader[0]) {
        /* Waits on the run it shares: woken by that run's pages, and by its end (which
         * settles this query first). Once that run is over, on this query itself. */
        struct query *run = store_find(qs, q->leader);
        /* (a leader cancelled by its owner still runs for the queries sharing its run) */
        if(run && run->state != DAPI_Q_DONE && run->state != DAPI_Q_FAILED)
            q = run;
    }
    if(page && q->pages_ready >= page) { /* published meanwhile */
        pthread_mutex_unlock(&qs->lock);
        free(w);
        return -1;
    }
    w->next = q->waiters;
    q->waiters = w;
    store_watch(qs, q);
    if(page)
        want_update(q);
    pthread_mutex_unlock(&qs->lock);
    return 0;
}

int dapi_queries_wait(struct dapi_queries *qs, const char *slug, int64_t deadline_ms,
                      void (*cb)(void *arg, int timed_out), void *arg)
{
    return dapi_queries_wait_page(qs, slug, 0, deadline_ms, cb, arg);
}

void dapi_queries_set_live(struct dapi_queries *qs, const char *slug,
                           struct dapi_result_live *live)
{
    struct dapi_result_live *old = NULL;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q) {
        old = q->live;
        if((q->live = live))
            dapi_result_live_ref(live);
        q->pages_ready = 0;
        want_update(q); /* requests that came before the run */
    }
    pthread_mutex_unlock(&qs->lock);
    dapi_result_live_unref(old);
}

void dapi_queries_progress(struct dapi_queries *qs, const char *slug, uint64_t pages)
{
    struct waiter *woken = NULL;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->live && pages > q->pages_ready) {
        q->pages_ready = pages;
        for(struct waiter **wp = &q->waiters; *wp;) {
            struct waiter *w = *wp;
            if(w->page && w->page <= pages) {
                *wp = w->next;
                w->next = woken;
                woken = w;
            } else {
                wp = &w->next;
            }
        }
        want_update(q);
    }
    pthread_mutex_unlock(&qs->lock);
    fire(woken, 0);
}

void dapi_queries_tick(struct dapi_queries *qs, int64_t now_s, int64_t now_ms)
{
    struct waiter *due = NULL;
    struct slugs expired = {0}, abandoned = {0};
    pthread_mutex_lock(&qs->lock);
    int64_t abandon_s = qs->abandon_s;
    /* Waiters' deadlines and abandonment: only the queries in the watch list (those that
     * no longer need the tick leave it). */
    for(struct query *q = qs->watch, *next; q; q = next) {
        next = q->wnext;
        qs->visits++;
        if(!store_watched(q)) {
            store_unwatch(qs, q);
            continue;
        }
        if(q->waiters) /* someone waits for it: asked about it until now */
            q->last_seen_s = now_s;
        for(struct waiter **wp = &q->waiters; *wp;) {
            struct waiter *w = *wp;
            if(w->deadline_ms <= now_ms) {
                *wp = w->next;
                w->next = due;
                due = w;
            } else {
                wp = &w->next;
            }
        }
        /* Abandoned: queued or running, and its owner neither waits for it nor asked
         * about it for abandon_s (since this process started, for one resumed). Only
         * a query that is (to be) run counts: one holding an admission slot, running or
         * sharing a run — not a Nekt v1 query, which has no run of its own (its pages
         * are fetched per request) and stays queued. */
        if(abandon_s > 0 && !store_ended(q->state) && !q->waiters &&
           (q->holds || q->in_run || q->leader[0])) {
            if(!q->last_seen_s)
                q->last_seen_s = now_s;
            else if(now_s - q->last_seen_s >= abandon_s)
                slugs_add(&abandoned, q->slug);
        }
    }
    /* Expired queries go whatever their state (a run still writing into the directory then
     * fails harmlessly); never while someone waits on them. Only the expired ones are looked
     * at: the ages are ordered by creation. */
    struct query **old = NULL;
    size_t nold = 0;
    for(size_t i = qs->ages.head; i < qs->ages.n; i++) {
        struct store_ageent *e = &qs->ages.v[i];
        qs->visits++;
        if(e->a + qs->retention_s > now_s)
            break;
        if(!e->q || e->q->waiters)
            continue;
        if(!(nold % 256)) {
            struct query **p = realloc(old, (nold + 256) * sizeof *p);
            if(!p)
                break; /* (the next tick goes on) */
            old = p;
        }
        old[nold++] = e->q;
    }
    for(size_t i = 0; i < nold; i++) {
        if(slugs_add(&expired, old[i]->slug))
            break;
        detach(qs, old[i]);
        forget(qs, old[i]); /* open snapshots keep the mapping alive until released */
    }
    free(old);
    pthread_mutex_unlock(&qs->lock);
    fire(due, 1);
    size_t nexpired = expired.n;
    remove_dirs(qs, &expired);
    if(nexpired)
        dapi_info("store: %zu expired queries removed", nexpired);
    char why[160];
    snprintf(why, sizeof why,
             "abandoned: nobody asked about the query for %lld s (--abandon-after)",
             (long long)abandon_s);
    for(size_t i = 0; i < abandoned.n; i++) {
        int deleted;
        if(cancel(qs, abandoned.v[i], NULL, now_s, why, &deleted) == DAPI_OK && !deleted)
            dapi_info("query %s cancelled: %s", abandoned.v[i], why);
    }
    free(abandoned.v);
    store_compactor_wake(qs);
}

void dapi_queries_cancel_waiters(struct dapi_queries *qs)
{
    struct waiter *all = NULL;
    pthread_mutex_lock(&qs->lock);
    for(struct query *q = qs->watch; q; q = q->wnext) /* (every query waited for is in it) */
        while(q->waiters) {
            struct waiter *w = q->waiters;
            q->waiters = w->next;
            w->next = all;
            all = w;
        }
    pthread_mutex_unlock(&qs->lock);
    fire(all, 1);
}
