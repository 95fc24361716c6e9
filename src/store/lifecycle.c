/* A query's lifecycle as its owner sees it: status, the key's list, the result's columns, lookups of
 * its fields (SQL, scope, upstream, directory), the counts for metrics, and
 * the settings of cancellation (the cancellation itself is in queries.c, beside finish). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "store/queries_int.h"

void dapi_queries_set_clock(struct dapi_queries *qs, int64_t (*wall_s)(void))
{
    pthread_mutex_lock(&qs->lock);
    qs->wall_s = wall_s;
    pthread_mutex_unlock(&qs->lock);
}

void dapi_queries_set_abandon(struct dapi_queries *qs, int64_t seconds)
{
    pthread_mutex_lock(&qs->lock);
    qs->abandon_s = seconds > 0 ? seconds : 0;
    pthread_mutex_unlock(&qs->lock);
}

/* ---- columns ----------------------------------------------------------------------- */

static void free_list(char **v, size_t n)
{
    for(size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void store_columns_clear(struct query *q)
{
    free_list(q->col_names, q->ncols);
    free_list(q->col_types, q->ncols);
    q->col_names = q->col_types = NULL;
    q->ncols = 0;
}

void dapi_columns_free(struct dapi_columns *c)
{
    free_list(c->names, c->n);
    free_list(c->types, c->n);
    memset(c, 0, sizeof *c);
}

/* Copies n names and types into out; -1 without memory (out left empty). */
static int columns_dup(size_t n, const char *const *names, const char *const *types,
                       struct dapi_columns *out)
{
    memset(out, 0, sizeof *out);
    if(!n)
        return 0;
    if(!(out->names = calloc(n, sizeof *out->names)) ||
       !(out->types = calloc(n, sizeof *out->types))) {
        free(out->names);
        out->names = NULL;
        return -1;
    }
    out->n = n;
    for(size_t i = 0; i < n; i++)
        if(!(out->names[i] = strdup(names[i])) || !(out->types[i] = strdup(types[i]))) {
            dapi_columns_free(out);
            return -1;
        }
    return 0;
}

void store_columns_copy(struct query *q, const struct query *src)
{
    struct dapi_columns c;
    store_columns_clear(q);
    if(columns_dup(src->ncols, (const char *const *)src->col_names,
                   (const char *const *)src->col_types, &c) == 0) {
        q->ncols = c.n;
        q->col_names = c.names;
        q->col_types = c.types;
    }
}

enum dapi_err dapi_queries_set_columns(struct dapi_queries *qs, const char *slug, size_t n,
                                       const char *const *names, const char *const *types)
{
    struct dapi_columns c;
    if(columns_dup(n, names, types, &c))
        return DAPI_ERR_NOMEM;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q) {
        store_columns_clear(q);
        q->ncols = c.n;
        q->col_names = c.names;
        q->col_types = c.types;
        memset(&c, 0, sizeof c);
    }
    pthread_mutex_unlock(&qs->lock);
    dapi_columns_free(&c);
    return q ? DAPI_OK : DAPI_ERR_NOT_FOUND;
}

/* key_hash's query slug (a reference taken: store_unref under the lock), or NULL. */
static struct query *owned(struct dapi_queries *qs, const char *slug,
                           const unsigned char *key_hash, int64_t now_s)
{
    struct query *q = store_find(qs, slug);
    if(!q || !dapi_ct_equal(q->owner, DAPI_KEY_HASH_LEN, key_hash, DAPI_KEY_HASH_LEN) ||
       q->created_s + qs->retention_s <= now_s)
        return NULL;
    q->refs++;
    return q;
}

enum dapi_err dapi_queries_columns(struct dapi_queries *qs, const char *slug,
                                   const unsigned char *key_hash, int64_t now_s,
                                   struct dapi_columns *out)
{
    enum dapi_err result = DAPI_ERR_NOT_FOUND;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&qs->lock);
    struct query *q = owned(qs, slug, key_hash, now_s);
    if(q) {
        /* a result of no column at all cannot be: ncols 0 means not known */
        if(q->state != DAPI_Q_DONE || !q->ncols)
            result = DAPI_ERR_INVALID;
        else
            result = columns_dup(q->ncols, (const char *const *)q->col_names,
                                 (const char *const *)q->col_types, out)
                         ? DAPI_ERR_NOMEM
                         : DAPI_OK;
        store_unref(q);
    }
    pthread_mutex_unlock(&qs->lock);
    return result;
}

/* ---- status and lists -------------------------------------------------------------- */

void dapi_qstatus_free(struct dapi_qstatus *s)
{
    free(s->sql);
    free(s->params);
    free(s->message);
    dapi_columns_free(&s->columns);
    s->sql = s->message = s->params = NULL;
}

enum dapi_err dapi_queries_status(struct dapi_queries *qs, const char *slug,
                                  const unsigned char *key_hash, int64_t now_s,
                                  struct dapi_qstatus *out)
{
    enum dapi_err result = DAPI_OK;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&qs->lock);
    struct query *q = owned(qs, slug, key_hash, now_s);
    if(!q) {
        pthread_mutex_unlock(&qs->lock);
        return DAPI_ERR_NOT_FOUND;
    }
    q->last_seen_s = now_s; /* its owner asks about it: not abandoned */
    snprintf(out->slug, sizeof out->slug, "%s", q->slug);
    out->state = q->state;
    out->created_s = q->created_s;
    out->started_s = q->started_s;
    out->finished_s = store_ended(q->state) ? q->finished_s : 0;
    out->rows = out->pages = out->bytes = -1;
    out->reused = q->reused;
    out->error = q->error;
    if(q->state == DAPI_Q_DONE && q->shape_known) {
        out->rows = (int64_t)q->rows;
        out->pages = (int64_t)q->pages;
        out->bytes = (int64_t)q->bytes;
    } else if(q->state == DAPI_Q_QUEUED || q->state == DAPI_Q_RUNNING) {
        /* the pages published so far of the run it shares (its own, or a leader's); one
         * sharing a run that has started is running since that run started */
        struct query *run = q->leader[0] ? store_find(qs, q->leader) : q;
        if(run && run->live)
            out->pages = (int64_t)run->pages_ready;
        if(run && run != q && run->in_run) {
            out->state = DAPI_Q_RUNNING;
            out->started_s = run->started_s;
        }
    }
    if(!(out->sql = strdup(q->sql)) || (q->params && !(out->params = strdup(q->params))) ||
       (q->message && (q->state == DAPI_Q_FAILED || q->state == DAPI_Q_CANCELLED) &&
        !(out->message = strdup(q->message))))
        result = DAPI_ERR_NOMEM;
    if(!result && q->state == DAPI_Q_DONE && q->ncols) {
        if(columns_dup(q->ncols, (const char *const *)q->col_names,
                       (const char *const *)q->col_types, &out->columns))
            result = DAPI_ERR_NOMEM;
        else
            out->columns_known = 1;
    }
    store_unref(q);
    pthread_mutex_unlock(&qs->lock);
    if(result)
        dapi_qstatus_free(out);
    return result;
}

void dapi_qsummaries_free(struct dapi_qsummary *v, size_t n)
{
    for(size_t i = 0; v && i < n; i++)
        free(v[i].sql);
    free(v);
}

static int newer(const void *a, const void *b)
{
    const struct dapi_qsummary *x = a, *y = b;
    return x->seq > y->seq ? -1 : x->seq < y->seq ? 1 : strcmp(x->slug, y->slug);
}

/* The first at most DAPI_QLIST_SQL_MAX bytes of sql, cut at a UTF-8 boundary. */
static char *sql_head(const char *sql, int *cut)
{
    size_t len = strlen(sql);
    *cut = len > DAPI_QLIST_SQL_MAX;
    if(*cut) {
        len = DAPI_QLIST_SQL_MAX;
        while(len > 0 && ((unsigned char)sql[len] & 0xC0) == 0x80)
            len--;
    }
    return strndup(sql, len);
}

enum dapi_err dapi_queries_list(struct dapi_queries *qs, const unsigned char *key_hash,
                                int64_t now_s, uint64_t before, size_t limit,
                                struct dapi_qsummary **out, size_t *n, int *more)
{
    struct dapi_qsummary *v = NULL;
    size_t cnt = 0, cap = 0;
    enum dapi_err result = DAPI_OK;
    *out = NULL;
    *n = 0;
    *more = 0;
    pthread_mutex_lock(&qs->lock);
    /* The key's queries by seq: from the cursor's place (a binary search) back to the oldest,
     * limit + 1 of them at most (the last one says whether more follow). */
    const struct store_agevec *mine = store_key_ages(qs, key_hash, 0);
    size_t at = !mine ? 0 : before ? store_agevec_lower(mine, (int64_t)before, 0) : mine->n;
    while(mine && at > mine->head && cnt <= limit && !result) {
        struct query *q = mine->v[--at].q;
        qs->visits++;
        if(!q || q->created_s + qs->retention_s <= now_s)
            continue;
        if(cnt == cap) {
            size_t c = cap ? cap * 2 : 64;
            void *p = realloc(v, c * sizeof *v);
            if(!p) {
                result = DAPI_ERR_NOMEM;
                break;
            }
            v = p;
            cap = c;
        }
        struct dapi_qsummary *s = &v[cnt];
        memset(s, 0, sizeof *s);
        snprintf(s->slug, sizeof s->slug, "%s", q->slug);
        s->state = q->state;
        s->created_s = q->created_s;
        s->seq = q->seq;
        s->rows = q->state == DAPI_Q_DONE && q->shape_known ? (int64_t)q->rows : -1;
        if(!(s->sql = sql_head(q->sql, &s->sql_cut)))
            result = DAPI_ERR_NOMEM;
        else
            cnt++;
    }
    pthread_mutex_unlock(&qs->lock);
    if(result) {
        dapi_qsummaries_free(v, cnt);
        return result;
    }
    if(cnt)
        qsort(v, cnt, sizeof *v, newer);
    if(cnt > limit) {
        for(size_t i = limit; i < cnt; i++)
            free(v[i].sql);
        cnt = limit;
        *more = 1;
    }
    *out = v;
    *n = cnt;
    return DAPI_OK;
}

/* ---- cancellation of runs ------------------------------------------------------------ */

int dapi_queries_set_cancel_flag(struct dapi_queries *qs, const char *slug, atomic_int *flag)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    /* (one whose run others share still runs for them) */
    int cancelled = !q || (q->state == DAPI_Q_CANCELLED && !store_has_followers(qs, slug));
    if(q && (flag || q->cancel))
        q->cancel = flag;
    pthread_mutex_unlock(&qs->lock);
    if(flag && cancelled)
        atomic_store(flag, 1);
    return cancelled;
}

int dapi_queries_cancelled(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    int cancelled = !q || (q->state == DAPI_Q_CANCELLED && !store_has_followers(qs, slug));
    pthread_mutex_unlock(&qs->lock);
    return cancelled;
}

/* ---- lookups ------------------------------------------------------------------------ */

char *dapi_queries_sql(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    char *sql = q ? strdup(q->sql) : NULL;
    pthread_mutex_unlock(&qs->lock);
    return sql;
}

enum dapi_err dapi_queries_scope(struct dapi_queries *qs, const char *slug, struct dapi_scope *out)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->scope)
        memcpy(out, q->scope, sizeof *out);
    else if(q) {
        memset(out, 0, sizeof *out);
        out->all = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    return q ? DAPI_OK : DAPI_ERR_NOT_FOUND;
}

int dapi_queries_scope_lost(struct dapi_queries *qs, const char *slug,
                            const unsigned char *key_hash, const struct dapi_scope *now,
                            char *lost, size_t n)
{
    int gone = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && dapi_ct_equal(q->owner, DAPI_KEY_HASH_LEN, key_hash, DAPI_KEY_HASH_LEN) && !now->all) {
        const struct dapi_scope *was = q->scope;
        gone = !was || was->all;
        snprintf(lost, n, "%s", "");
        for(size_t i = 0; !gone && i < was->n; i++)
            if(!dapi_scope_allows(now, was->layers[i])) {
                snprintf(lost, n, "%s", was->layers[i]);
                gone = 1;
            }
    }
    pthread_mutex_unlock(&qs->lock);
    return gone;
}

char *dapi_queries_params(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    char *params = q && q->params ? strdup(q->params) : NULL;
    pthread_mutex_unlock(&qs->lock);
    return params;
}

void dapi_queries_upstream(struct dapi_queries *qs, const char *slug, char *out, size_t n)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    snprintf(out, n, "%s", q && q->upstream ? q->upstream : "");
    pthread_mutex_unlock(&qs->lock);
}

void dapi_queries_dir(struct dapi_queries *qs, const char *slug, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", qs->dir, slug);
    pthread_mutex_lock(&qs->lock);
    int known = store_find(qs, slug) != NULL;
    pthread_mutex_unlock(&qs->lock);
    /* (never for a query deleted meanwhile: its directory must not come back) */
    if(known && mkdir(out, 0700) && errno != EEXIST)
        dapi_warn("store: cannot create %s: %s", out, strerror(errno));
}

int dapi_queries_dir_gone(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    int known = store_find(qs, slug) != NULL;
    pthread_mutex_unlock(&qs->lock);
    /* (slugs are random: none is registered again; and never a path outside the store) */
    if(!known && !strchr(slug, '/') && slug[0] != '.')
        store_remove_files(qs, slug);
    return !known;
}

uint64_t dapi_queries_bytes(struct dapi_queries *qs)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t b = qs->bytes;
    pthread_mutex_unlock(&qs->lock);
    return b;
}

void dapi_queries_pack_usage(struct dapi_queries *qs, uint64_t *files, uint64_t *live,
                             uint64_t *total)
{
    *files = *live = *total = 0;
    if(qs->pack)
        store_pack_usage(qs->pack, files, live, total);
}

void dapi_queries_count_states(struct dapi_queries *qs, uint64_t out[DAPI_Q_NSTATES])
{
    pthread_mutex_lock(&qs->lock); /* (counted as they change: store_set_state) */
    memcpy(out, qs->states, DAPI_Q_NSTATES * sizeof *out);
    pthread_mutex_unlock(&qs->lock);
}

/* ---- mapped results ------------------------------------------------------------------ */

static void mru_unlink(struct dapi_queries *qs, struct query *q)
{
    if(!q->in_mru)
        return;
    if(q->mru_prev)
        q->mru_prev->mru_next = q->mru_next;
    else
        qs->mru = q->mru_next;
    if(q->mru_next)
        q->mru_next->mru_prev = q->mru_prev;
    else
        qs->lru = q->mru_prev;
    q->mru_prev = q->mru_next = NULL;
    q->in_mru = 0;
    qs->mapped--;
}

static void mru_push(struct dapi_queries *qs, struct query *q)
{
    q->mru_prev = NULL;
    q->mru_next = qs->mru;
    if(qs->mru)
        qs->mru->mru_prev = q;
    else
        qs->lru = q;
    qs->mru = q;
    q->in_mru = 1;
    qs->mapped++;
}

/* Unmaps the least recently used results beyond mapped_max, never keep's. */
static void mru_trim(struct dapi_queries *qs, const struct query *keep)
{
    while(qs->mapped > qs->mapped_max && qs->lru && qs->lru != keep) {
        struct query *old = qs->lru;
        mru_unlink(qs, old);
        dapi_result_close(old->result); /* (readers hold references of their own) */
        old->result = NULL;
    }
}

void store_result_set(struct dapi_queries *qs, struct query *q, struct dapi_result *r)
{
    mru_unlink(qs, q);
    dapi_result_close(q->result);
    q->result = r;
    if(!r)
        return;
    q->rows = dapi_result_rows(r);
    q->pages = dapi_result_pages(r);
    q->shape_known = 1;
    mru_push(qs, q);
    mru_trim(qs, q);
}

void store_result_adopt(struct dapi_queries *qs, struct query *q)
{
    struct dapi_result *r = q->result;
    q->result = NULL;
    if(r)
        store_result_set(qs, q, r);
}

struct dapi_result *store_result(struct dapi_queries *qs, struct query *q)
{
    if(q->state != DAPI_Q_DONE)
        return NULL;
    if(q->result) {
        if(q != qs->mru) {
            mru_unlink(qs, q);
            mru_push(qs, q);
        }
        return q->result;
    }
    /* (unmapped to stay under mapped_max: mapped again from its pack record or file) */
    struct dapi_result *r = qs->pack ? store_pack_map(qs->pack, q->slug) : NULL;
    char path[4096];
    if(!r) {
        dapi_queries_result_path(qs, q->slug, path, sizeof path);
        if(dapi_result_open(&r, path))
            r = NULL;
    }
    if(!r) {
        dapi_warn("store: the result of %s cannot be mapped again", q->slug);
        return NULL;
    }
    store_result_set(qs, q, r);
    return r;
}

void dapi_queries_set_mapped_max(struct dapi_queries *qs, uint64_t n)
{
    pthread_mutex_lock(&qs->lock);
    qs->mapped_max = n ? n : 1;
    mru_trim(qs, NULL);
    pthread_mutex_unlock(&qs->lock);
}

uint64_t dapi_queries_visits(struct dapi_queries *qs)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t n = qs->visits;
    pthread_mutex_unlock(&qs->lock);
    return n;
}

uint64_t dapi_queries_mapped(struct dapi_queries *qs)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t n = qs->mapped;
    pthread_mutex_unlock(&qs->lock);
    return n;
}
