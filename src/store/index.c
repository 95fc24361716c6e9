/* What the registry keeps besides its hash table, so that no request and no tick costs a walk
 * of every kept query under the registry's lock (a server may keep millions: one key alone,
 * 655,360 with the default quota):
 * - the ages: every registered query ordered by creation (created_s, seq), for expiry, and each
 *   key's queries in registration order (seq), for its list and for making room in its quota;
 * - the watch list: the queries the tick must look at — someone waits for them, they hold an
 *   admission slot, run or share a run, or have no files yet (a checkpoint writes them);
 * - each result identity's queries, for result reuse once its newest holder is gone.
 * All under qs->lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/queries_int.h"

/* ---- ordered vectors of queries ------------------------------------------------------ */

/* Entries keep their keys when their query goes (q NULL: a hole), so a binary search still
 * works across holes; holes before head are skipped for good, and the vector is compacted
 * once holes outnumber queries. */

static int ent_before(int64_t a, uint64_t b, int64_t xa, uint64_t xb)
{
    return a < xa || (a == xa && b < xb);
}

size_t store_agevec_lower(const struct store_agevec *v, int64_t a, uint64_t b)
{
    size_t lo = v->head, hi = v->n;
    while(lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if(ent_before(v->v[mid].a, v->v[mid].b, a, b))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int agevec_cmp(const void *x, const void *y)
{
    const struct store_ageent *p = x, *q = y;
    return ent_before(p->a, p->b, q->a, q->b) ? -1 : ent_before(q->a, q->b, p->a, p->b) ? 1 : 0;
}

static void agevec_compact(struct store_agevec *v)
{
    size_t out = 0;
    for(size_t i = v->head; i < v->n; i++)
        if(v->v[i].q)
            v->v[out++] = v->v[i];
    v->n = out;
    v->head = v->dead = 0;
    if(v->cap > 64 && out < v->cap / 4) { /* (give memory back after a mass deletion) */
        size_t c = out * 2 > 64 ? out * 2 : 64;
        struct store_ageent *p = realloc(v->v, c * sizeof *p);
        if(p) {
            v->v = p;
            v->cap = c;
        }
    }
}

/* Adds q under (a, b): at the end while the keys come in order (or while sorted is off, for a
 * start's bulk load), else at its place. Returns 0, or -1 without memory. */
static int agevec_add(struct store_agevec *v, int64_t a, uint64_t b, struct query *q)
{
    if(v->n == v->cap) {
        if(v->dead > v->n / 2) {
            agevec_compact(v);
        } else {
            size_t c = v->cap ? v->cap * 2 : 16;
            struct store_ageent *p = realloc(v->v, c * sizeof *p);
            if(!p)
                return -1;
            v->v = p;
            v->cap = c;
        }
    }
    size_t at = v->n;
    if(!v->unsorted && at > v->head && ent_before(a, b, v->v[at - 1].a, v->v[at - 1].b)) {
        /* (a clock set back, or a key entry's first query loaded late: rare) */
        at = store_agevec_lower(v, a, b);
        while(at < v->n && !ent_before(a, b, v->v[at].a, v->v[at].b))
            at++;
        memmove(v->v + at + 1, v->v + at, (v->n - at) * sizeof *v->v);
    }
    v->v[at] = (struct store_ageent){a, b, q};
    v->n++;
    return 0;
}

/* Makes q's entry (a, b) a hole. */
static void agevec_remove(struct store_agevec *v, int64_t a, uint64_t b, const struct query *q)
{
    size_t i = v->unsorted ? v->head : store_agevec_lower(v, a, b);
    for(; i < v->n; i++)
        if(v->v[i].q == q)
            break;
        else if(!v->unsorted && ent_before(a, b, v->v[i].a, v->v[i].b))
            return; /* (not there: it could not be added without memory) */
    if(i == v->n)
        return;
    v->v[i].q = NULL;
    v->dead++;
    while(v->head < v->n && !v->v[v->head].q) {
        v->head++;
        v->dead--;
    }
    if(v->head == v->n)
        v->n = v->head = v->dead = 0;
    else if(v->dead > 32 && v->dead > v->n - v->head - v->dead)
        agevec_compact(v);
}

static void agevec_sort(struct store_agevec *v)
{
    agevec_compact(v);
    if(v->n > 1)
        qsort(v->v, v->n, sizeof *v->v, agevec_cmp);
    v->unsorted = 0;
}

void store_agevec_free(struct store_agevec *v)
{
    free(v->v);
    memset(v, 0, sizeof *v);
}

size_t store_agevec_live(const struct store_agevec *v)
{
    return v->n - v->head - v->dead;
}

/* ---- the watch list ------------------------------------------------------------------ */

int store_watched(const struct query *q)
{
    return q->waiters || q->holds || q->in_run || q->leader[0] || !atomic_load(&q->ondisk);
}

void store_watch(struct dapi_queries *qs, struct query *q)
{
    if(q->watched || !q->registered)
        return;
    q->watched = 1;
    q->wprev = NULL;
    q->wnext = qs->watch;
    if(qs->watch)
        qs->watch->wprev = q;
    qs->watch = q;
}

void store_unwatch(struct dapi_queries *qs, struct query *q)
{
    if(!q->watched)
        return;
    if(q->wprev)
        q->wprev->wnext = q->wnext;
    else
        qs->watch = q->wnext;
    if(q->wnext)
        q->wnext->wprev = q->wprev;
    q->wprev = q->wnext = NULL;
    q->watched = 0;
}

/* ---- result identities ---------------------------------------------------------------- */

static size_t rbucket(const struct dapi_queries *qs, const char *ident)
{
    return store_hash_str(ident) % qs->nreuse;
}

/* The identities' table doubles as it fills, as the registry's does. */
static void ident_grow(struct dapi_queries *qs)
{
    size_t n = qs->nreuse * 2, oldn = qs->nreuse;
    struct reuse_ent **b = calloc(n, sizeof *b), **old = qs->reuse;
    if(!b)
        return;
    qs->reuse = b;
    qs->nreuse = n;
    for(size_t i = 0; i < oldn; i++)
        for(struct reuse_ent *e = old[i], *next; e; e = next) {
            next = e->next;
            size_t at = rbucket(qs, e->ident);
            e->next = b[at];
            b[at] = e;
        }
    free(old);
}

struct reuse_ent *store_ident_get(struct dapi_queries *qs, const char *ident, int create)
{
    for(struct reuse_ent *e = qs->reuse[rbucket(qs, ident)]; e; e = e->next)
        if(strcmp(e->ident, ident) == 0)
            return e;
    if(!create)
        return NULL;
    if(qs->nidents >= 2 * qs->nreuse)
        ident_grow(qs);
    struct reuse_ent *e = calloc(1, sizeof *e);
    if(e) {
        struct reuse_ent **head = &qs->reuse[rbucket(qs, ident)];
        snprintf(e->ident, sizeof e->ident, "%s", ident);
        e->next = *head;
        *head = e;
        qs->nidents++;
    }
    return e;
}

/* Frees e once no registered query has its identity. */
static void ident_put(struct dapi_queries *qs, struct reuse_ent *e)
{
    if(e->first)
        return;
    for(struct reuse_ent **ep = &qs->reuse[rbucket(qs, e->ident)]; *ep; ep = &(*ep)->next)
        if(*ep == e) {
            *ep = e->next;
            free(e);
            qs->nidents--;
            return;
        }
}

/* Whether a query in state s may still be reused: a failed or cancelled one never will, so it
 * leaves its identity's list (a look-up that walks the list never steps over it: a key's
 * thousands of failed copies of one query would otherwise be walked under the lock). */
static int ident_listed(enum dapi_qstate s)
{
    return s != DAPI_Q_FAILED && s != DAPI_Q_CANCELLED;
}

/* q joins its identity's queries, kept in registration order (seq; a start's bulk load
 * appends and sorts once at its end). */
static void ident_add(struct dapi_queries *qs, struct query *q)
{
    struct reuse_ent *e = q->ident[0] && ident_listed(q->state) ? store_ident_get(qs, q->ident, 1)
                                                                : NULL;
    if(!e)
        return; /* (without memory it is just never found by reuse: it runs) */
    struct query *after = e->last;
    while(!qs->ages.unsorted && after && after->seq > q->seq) /* (a retried query: rare) */
        after = after->iprev;
    q->iprev = after;
    q->inext = after ? after->inext : e->first;
    if(q->inext)
        q->inext->iprev = q;
    else
        e->last = q;
    if(after)
        after->inext = q;
    else
        e->first = q;
    q->ient = e;
}

static void ident_remove(struct dapi_queries *qs, struct query *q)
{
    struct reuse_ent *e = q->ient;
    if(!e)
        return;
    if(q->iprev)
        q->iprev->inext = q->inext;
    else
        e->first = q->inext;
    if(q->inext)
        q->inext->iprev = q->iprev;
    else
        e->last = q->iprev;
    q->iprev = q->inext = NULL;
    q->ient = NULL;
    if(strcmp(e->slug, q->slug) == 0)
        e->slug[0] = '\0'; /* (the next look-up finds the newest other holder) */
    ident_put(qs, e);
}

/* ---- registration ---------------------------------------------------------------------- */

void store_set_state(struct dapi_queries *qs, struct query *q, enum dapi_qstate s)
{
    int was = ident_listed(q->state);
    if(q->registered && (unsigned)q->state < DAPI_Q_NSTATES && qs->states[q->state])
        qs->states[q->state]--;
    q->state = s;
    if(q->registered && (unsigned)s < DAPI_Q_NSTATES)
        qs->states[s]++;
    if(q->registered && was && !ident_listed(s))
        ident_remove(qs, q);
    else if(q->registered && !was && ident_listed(s))
        ident_add(qs, q); /* (a failed query retried) */
}

void store_index_add(struct dapi_queries *qs, struct query *q, struct store_agevec *mine)
{
    q->registered = 1;
    if((unsigned)q->state < DAPI_Q_NSTATES)
        qs->states[q->state]++;
    q->byseq = mine;
    if(agevec_add(&qs->ages, q->created_s, q->seq, q))
        q->aged = 0;
    else
        q->aged = 1;
    if(mine && agevec_add(mine, (int64_t)q->seq, (uint64_t)q->created_s, q))
        q->byseq = NULL;
    ident_add(qs, q);
    if(store_watched(q)) /* (a new query has no files yet; most read back at start need none) */
        store_watch(qs, q);
}

void store_index_remove(struct dapi_queries *qs, struct query *q)
{
    if(!q->registered)
        return;
    if(q->aged)
        agevec_remove(&qs->ages, q->created_s, q->seq, q);
    struct store_agevec *mine = q->byseq;
    if(mine)
        agevec_remove(mine, (int64_t)q->seq, (uint64_t)q->created_s, q);
    q->aged = 0;
    q->byseq = NULL;
    ident_remove(qs, q);
    store_unwatch(qs, q);
    if((unsigned)q->state < DAPI_Q_NSTATES && qs->states[q->state])
        qs->states[q->state]--;
    q->registered = 0;
    if(mine)
        store_key_left(qs, q->owner); /* (its key entry may go now) */
}

/* Sorts identity e's list by seq (merge sort of the list: no memory needed). */
static void ident_sort(struct reuse_ent *e)
{
    struct query *list = e->first;
    for(size_t run = 1;; run *= 2) {
        struct query *p = list, *tail = NULL;
        size_t merges = 0;
        list = NULL;
        while(p) {
            merges++;
            struct query *r = p;
            size_t np = 0, nr = run;
            while(r && np < run) {
                np++;
                r = r->inext;
            }
            while(np || (nr && r)) {
                struct query *take;
                if(!np || (nr && r && r->seq < p->seq)) {
                    take = r;
                    r = r->inext;
                    nr--;
                } else {
                    take = p;
                    p = p->inext;
                    np--;
                }
                take->iprev = tail;
                if(tail)
                    tail->inext = take;
                else
                    list = take;
                tail = take;
            }
            p = r;
        }
        if(tail)
            tail->inext = NULL;
        e->first = list;
        e->last = tail;
        if(merges <= 1)
            return;
    }
}

void store_index_bulk(struct dapi_queries *qs, int on)
{
    qs->ages.unsorted = on;
    for(size_t b = 0; b < NKEYBUCKETS; b++)
        for(struct keyuse *k = qs->keys[b]; k; k = k->next)
            if(on)
                k->byseq.unsorted = 1;
            else if(k->byseq.unsorted)
                agevec_sort(&k->byseq);
    if(!on) {
        agevec_sort(&qs->ages);
        for(size_t b = 0; b < qs->nreuse; b++)
            for(struct reuse_ent *e = qs->reuse[b]; e; e = e->next)
                if(e->first != e->last)
                    ident_sort(e);
    }
}
