/* Single-flight settlement: the queries that attached to another query's run (reuse of a
 * run in flight) get its outcome when it ends (store_settle_followers, queries_int.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/queries_int.h"

/* message without what DuckDB says of the statement's text — its position ("at line 1,
 * column 66") and its excerpt ("LINE 1: …" and what follows) — in out: a query that shared
 * another key's run (--reuse-across-keys) is told why the run failed, not that key's text
 * (its comments, its spelling, their length), which the excerpt quotes. */
static const char *without_excerpt(const char *message, char *out, size_t n)
{
    if(!message)
        return NULL;
    const char *cut = strstr(message, "\nLINE "), *at = strstr(message, " at line ");
    size_t len = cut ? (size_t)(cut - message) : strlen(message), o = 0;
    while(len && (message[len - 1] == '\n' || message[len - 1] == ' '))
        len--;
    for(size_t i = 0; i < len && o + 1 < n; i++) {
        if(message + i == at) { /* " at line N, column M" */
            size_t j = i + 9;
            while(j < len && (message[j] >= '0' && message[j] <= '9'))
                j++;
            if(strncmp(message + j, ", column ", 9) == 0) {
                j += 9;
                while(j < len && message[j] >= '0' && message[j] <= '9')
                    j++;
                i = j - 1;
                continue;
            }
        }
        out[o++] = message[i];
    }
    out[o] = '\0';
    return out;
}

struct follower {
    struct query *q;
    int linked; /* its result file is the leader's, linked */
};

static int follower_older(const void *a, const void *b)
{
    return store_older(&((const struct follower *)a)->q, &((const struct follower *)b)->q);
}

void store_settle_followers(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                            const char *message, uint64_t bytes, const void *image)
{
    struct follower *f = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *leader = store_find(qs, slug);
    int64_t data_s = leader ? leader->done_s : 0;
    unsigned char owner[DAPI_KEY_HASH_LEN];
    int known = leader != NULL;
    if(leader)
        memcpy(owner, leader->owner, sizeof owner);
    for(struct query *q = qs->nfollow ? qs->watch : NULL; q; q = q->wnext) {
        qs->visits++;
        if(!q->leader[0] || strcmp(q->leader, slug) != 0)
            continue;
        if(n == cap) {
            size_t c = cap ? cap * 2 : 16;
            void *p = realloc(f, c * sizeof *f);
            if(!p)
                goto collected; /* the rest stay queued: they run after a restart */
            f = p;
            cap = c;
        }
        q->leader[0] = '\0';
        qs->nfollow--;
        q->refs++;
        if(data_s)
            q->done_s = data_s;
        f[n].q = q;
        f[n++].linked = 0;
    }
collected:
    pthread_mutex_unlock(&qs->lock);
    /* Recorded oldest first, as if each had run in turn: a key over its quota then keeps its
     * newest results (eviction never takes the one being recorded). */
    if(n > 1)
        qsort(f, n, sizeof *f, follower_older);
    char from[4096], to[4096], cut[4096];
    dapi_queries_result_path(qs, slug, from, sizeof from);
    /* Every follower's file is linked before any is finished: finishing one may delete the
     * leader (its key over quota: the leader is then the key's oldest result) and remove its
     * directory, which the next link needs. */
    for(size_t i = 0; !error && !image && i < n; i++) {
        dapi_queries_result_path(qs, f[i].q->slug, to, sizeof to);
        char dir[4096]; /* (made now: a follower has no files yet, see create) */
        dapi_queries_dir(qs, f[i].q->slug, dir, sizeof dir);
        f[i].linked = link(from, to) == 0;
    }
    pthread_mutex_lock(&qs->lock);
    if((leader = store_find(qs, slug)) != NULL) /* (its end pinned it: it may go now) */
        leader->pinned = 0;
    pthread_mutex_unlock(&qs->lock);
    for(size_t i = 0; i < n; i++) {
        enum dapi_err e = error;
        const char *msg = message;
        if(!known || memcmp(f[i].q->owner, owner, sizeof owner) != 0)
            msg = without_excerpt(message, cut, sizeof cut);
        if(!e && image) {
            dapi_queries_finish_small(qs, f[i].q->slug, image, (size_t)bytes);
            continue;
        }
        if(!e && !f[i].linked) {
            e = DAPI_ERR_BUSY; /* retryable: a results request runs it again */
            msg = "the result of the identical query this one shared a run with is gone";
        }
        dapi_queries_finish(qs, f[i].q->slug, e, msg, e ? 0 : bytes);
    }
    pthread_mutex_lock(&qs->lock);
    for(size_t i = 0; i < n; i++)
        store_unref(f[i].q);
    pthread_mutex_unlock(&qs->lock);
    free(f);
}
