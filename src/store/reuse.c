/* The reuse index: which query holds (or computes) the result of each identity. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/queries_int.h"

/* ---- the reuse index (under the lock) ------------------------------------------------ */

/* Each identity's entry lists its registered queries (index.c) and names its holder. */

/* Makes q the query of its identity (the newest registered wins). */
void store_reuse_set(struct dapi_queries *qs, const struct query *q)
{
    struct reuse_ent *e = q->ident[0] ? store_ident_get(qs, q->ident, 0) : NULL;
    if(!e)
        return; /* (not listed for want of memory: not reused, it simply runs) */
    struct query *old = e->slug[0] ? store_find(qs, e->slug) : NULL;
    if(!old || old->seq <= q->seq)
        snprintf(e->slug, sizeof e->slug, "%s", q->slug);
}

/* The query of ident, or NULL. Once its holder is gone (expired, evicted, removed), another
 * slug may still share the result: the newest such of the identity's list. */
static struct query *reuse_find(struct dapi_queries *qs, const char *ident)
{
    struct reuse_ent *e = store_ident_get(qs, ident, 0);
    if(!e)
        return NULL;
    struct query *q = e->slug[0] ? store_find(qs, e->slug) : NULL;
    if(q)
        return q;
    for(struct query *c = e->last; c && !q; c = c->iprev, qs->visits++)
        if(!c->leader[0] && c->state != DAPI_Q_FAILED && c->state != DAPI_Q_CANCELLED)
            q = c;
    snprintf(e->slug, sizeof e->slug, "%s", q ? q->slug : "");
    return q;
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
