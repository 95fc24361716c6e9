/* The reuse index: which query holds (or computes) the result of each identity. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/queries_int.h"

/* ---- the reuse index (under the lock) ------------------------------------------------ */

static unsigned rbucket(const char *ident)
{
    uint32_t h = 2166136261u;
    for(const unsigned char *p = (const unsigned char *)ident; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NREUSEBUCKETS;
}

/* Makes q the query of its identity (the newest registered wins). */
void store_reuse_set(struct dapi_queries *qs, const struct query *q)
{
    if(!q->ident[0])
        return;
    struct reuse_ent **head = &qs->reuse[rbucket(q->ident)];
    for(struct reuse_ent *e = *head; e; e = e->next)
        if(strcmp(e->ident, q->ident) == 0) {
            struct query *old = store_find(qs, e->slug);
            if(!old || old->seq <= q->seq)
                snprintf(e->slug, sizeof e->slug, "%s", q->slug);
            return;
        }
    struct reuse_ent *e = calloc(1, sizeof *e);
    if(!e)
        return; /* (not reused: it simply runs) */
    snprintf(e->ident, sizeof e->ident, "%s", q->ident);
    snprintf(e->slug, sizeof e->slug, "%s", q->slug);
    e->next = *head;
    *head = e;
}

/* The query of ident, or NULL (an entry whose query is gone is dropped). */
static struct query *reuse_find(struct dapi_queries *qs, const char *ident)
{
    for(struct reuse_ent **ep = &qs->reuse[rbucket(ident)]; *ep; ep = &(*ep)->next) {
        struct reuse_ent *e = *ep;
        if(strcmp(e->ident, ident) != 0)
            continue;
        struct query *q = store_find(qs, e->slug);
        if(!q) {
            /* Its holder was deleted (expired, evicted, removed): another slug may still
             * share the result — the newest such, found by a scan (only then). */
            for(size_t i = 0; i < NBUCKETS; i++)
                for(struct query *c = qs->buckets[i]; c; c = c->next)
                    if(strcmp(c->ident, ident) == 0 && !c->leader[0] &&
                       c->state != DAPI_Q_FAILED && c->state != DAPI_Q_CANCELLED &&
                       (!q || c->seq > q->seq))
                        q = c;
            if(q) {
                snprintf(e->slug, sizeof e->slug, "%s", q->slug);
            } else {
                *ep = e->next;
                free(e);
            }
        }
        return q;
    }
    return NULL;
}

/* Entries whose holder is gone move to another slug sharing the result, or go. */
void store_reuse_prune(struct dapi_queries *qs)
{
    for(size_t b = 0; b < NREUSEBUCKETS; b++)
        for(struct reuse_ent *e = qs->reuse[b], *next; e; e = next) {
            next = e->next;
            if(!store_find(qs, e->slug))
                reuse_find(qs, e->ident); /* (may free e) */
        }
}

/* The query whose result (or run) a new query of identity ident may share, under the lock. */
struct query *store_reusable(struct dapi_queries *qs, const struct dapi_reuse *ru, int64_t now_s,
                             enum dapi_reused *how)
{
    struct query *c = reuse_find(qs, ru->ident);
    if(!c || c->leader[0] || c->created_s + qs->retention_s <= now_s ||
       strcmp(c->fp, ru->fp ? ru->fp : "") != 0)
        return NULL;
    if(c->state == DAPI_Q_DONE && now_s - c->done_s < ru->max_age_s && store_result(qs, c)) {
        *how = DAPI_REUSED_RESULT;
        return c;
    }
    if(c->state == DAPI_Q_QUEUED || c->state == DAPI_Q_RUNNING) {
        *how = DAPI_REUSED_RUN;
        return c;
    }
    return NULL;
}
