/* The Nekt backend's v1 API (Explorer): the reference's flow — ensure the application is
 * active (per upstream key), create the upstream query; per page: start an execution, poll
 * it with backoff, fetch its Parquet file. A page fetched once is kept with the query until
 * its retention ends; the pages after it are read ahead (--nekt-read-ahead). The vtable and
 * what both APIs share are in nekt.c (nekt_int.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/nekt_http.h"
#include "backend/nekt_int.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "engine/engine.h"
#include "pool/pool.h"
#include "store/queries.h"
#include "store/result.h"

#define APP_FRESH_MS 30000
#define RA_QUERIES_MAX 1024 /* v1 queries whose read-ahead state is remembered */

struct app_state {
    unsigned char key[DAPI_KEY_HASH_LEN];
    int64_t active_until_ms;
    struct app_state *next;
};

struct inflight {
    char slug[DAPI_SLUG_MAX + 1];
    uint64_t page;
    struct inflight *next;
};

/* v1 read-ahead (--nekt-read-ahead), per query: its last page once known, and how many
 * pages are being read ahead for it. */
struct ra_query {
    char slug[DAPI_SLUG_MAX + 1];
    uint64_t last;   /* the last page (fewer than DAPI_PAGE_ROWS rows); 0: not known yet */
    int64_t running; /* read-ahead fetches queued or running */
    struct ra_query *next;
};

/* Marks slug/page as being fetched by this thread; if another thread already fetches it,
 * waits (bounded) until it is done and returns 0 (the caller then looks for the kept page).
 * Returns 1 when the caller owns the fetch and must call page_release. */
static int page_claim(struct dapi_nekt *n, const char *slug, uint64_t page, int64_t wait_ms)
{
    struct timespec until = dapi_clock_after(0, wait_ms / 1000 * 1000); /* (whole seconds) */
    pthread_mutex_lock(&n->mu);
    for(;;) {
        struct inflight *f = n->pages;
        while(f && !(f->page == page && strcmp(f->slug, slug) == 0))
            f = f->next;
        if(!f)
            break;
        if(pthread_cond_timedwait(&n->page_done, &n->mu, &until)) {
            pthread_mutex_unlock(&n->mu);
            return 0;
        }
    }
    struct inflight *mine = calloc(1, sizeof *mine);
    if(mine) {
        snprintf(mine->slug, sizeof mine->slug, "%s", slug);
        mine->page = page;
        mine->next = n->pages;
        n->pages = mine;
    }
    pthread_mutex_unlock(&n->mu);
    return 1; /* (without memory for the marker, fetch unmarked: correct, just not shared) */
}

static void page_release(struct dapi_nekt *n, const char *slug, uint64_t page)
{
    pthread_mutex_lock(&n->mu);
    for(struct inflight **fp = &n->pages; *fp; fp = &(*fp)->next)
        if((*fp)->page == page && strcmp((*fp)->slug, slug) == 0) {
            struct inflight *f = *fp;
            *fp = f->next;
            free(f);
            break;
        }
    pthread_cond_broadcast(&n->page_done);
    pthread_mutex_unlock(&n->mu);
}

/* ---- v1: the Explorer application ---------------------------------------------------- */

static int app_known_active(struct dapi_nekt *n, const unsigned char *kh, int64_t now)
{
    int active = 0;
    pthread_mutex_lock(&n->mu);
    for(struct app_state *a = n->apps; a; a = a->next)
        if(memcmp(a->key, kh, DAPI_KEY_HASH_LEN) == 0)
            active = a->active_until_ms > now;
    pthread_mutex_unlock(&n->mu);
    return active;
}

static void app_set(struct dapi_nekt *n, const unsigned char *kh, int64_t until)
{
    pthread_mutex_lock(&n->mu);
    struct app_state *a = n->apps;
    while(a && memcmp(a->key, kh, DAPI_KEY_HASH_LEN) != 0)
        a = a->next;
    if(!a && (a = calloc(1, sizeof *a))) {
        memcpy(a->key, kh, DAPI_KEY_HASH_LEN);
        a->next = n->apps;
        n->apps = a;
    }
    if(a)
        a->active_until_ms = until;
    pthread_mutex_unlock(&n->mu);
}

/* GET application: 1 active, 0 not yet, -1 failed (details set), -2 error code in *err. */
static int app_status(struct dapi_nekt *nk, const char *key, enum dapi_err *err,
                      struct dapi_buf *details)
{
    struct nekt_reply rep;
    *err = nekt_call(nk->env, "GET", "/api/v1/explorer/application/", NULL, key, 1, &rep);
    if(*err) {
        dapi_buf_adds(details, rep.details);
        return -2;
    }
    const char *st = dapi_jv_str(dapi_jv_get(rep.doc, "status"), NULL);
    int r = !st                                                       ? -3
            : strcmp(st, "active") == 0 || strcmp(st, "running") == 0 ? 1
            : strcmp(st, "error") == 0 || strcmp(st, "failed") == 0   ? -1
                                                                      : 0;
    if(r == -1)
        dapi_buf_addf(details, "the Explorer application is in state '%s'", st);
    if(r == -3) {
        dapi_buf_adds(details, "Nekt's application answer has no 'status'");
        *err = DAPI_ERR_UPSTREAM;
        r = -2;
    }
    dapi_jv_free(rep.doc);
    return r;
}

/* Makes sure the key's Explorer application is active: start it and poll with backoff. */
static enum dapi_err ensure_application(struct dapi_nekt *nk, const char *key,
                                        struct dapi_buf *details)
{
    unsigned char kh[DAPI_KEY_HASH_LEN];
    dapi_sha256(key, strlen(key), kh);
    int64_t now = nk->env->mono_ms();
    if(app_known_active(nk, kh, now))
        return DAPI_OK;
    enum dapi_err err = DAPI_OK;
    int st = app_status(nk, key, &err, details);
    if(st == 0) {
        struct nekt_reply rep;
        /* starting an application that is starting or active is harmless */
        if((err = nekt_call(nk->env, "POST", "/api/v1/explorer/application/start/", NULL, key, 1,
                            &rep))) {
            dapi_buf_adds(details, rep.details);
            return err;
        }
        dapi_jv_free(rep.doc);
        int64_t deadline = now + nk->env->cfg->application_timeout * 1000, delay = 100;
        while(st == 0 && nk->env->mono_ms() < deadline && !atomic_load(nk->env->stopping)) {
            dapi_clock_sleep_ms(delay);
            delay = delay * 3 / 2 > 2000 ? 2000 : delay * 3 / 2;
            st = app_status(nk, key, &err, details);
        }
        if(st == 0) {
            dapi_buf_addf(details,
                          "the Explorer application did not become active within "
                          "%lld s (--application-timeout)",
                          (long long)nk->env->cfg->application_timeout);
            return DAPI_ERR_UPSTREAM_TIMEOUT; /* Nekt's slowness, not the query's */
        }
    }
    if(st == -2)
        return err;
    if(st == -1)
        return DAPI_ERR_UPSTREAM;
    app_set(nk, kh, nk->env->mono_ms() + APP_FRESH_MS);
    return DAPI_OK;
}

/* Creates the upstream Explorer query; writes its slug into out. */
static enum dapi_err create_upstream(struct dapi_nekt *nk, const char *key, const char *sql,
                                     char *out, size_t n, struct dapi_buf *details)
{
    struct nekt_reply rep;
    char *body = nekt_json_body1("sql_query", sql);
    if(!body)
        return DAPI_ERR_NOMEM;
    /* creates something upstream: not repeated when it may have been done */
    enum dapi_err result = nekt_call(nk->env, "POST", "/api/v1/explorer/queries/", body, key, 0,
                                     &rep);
    free(body);
    if(result) {
        dapi_buf_adds(details, rep.details);
        return result;
    }
    const char *slug = dapi_jv_str(dapi_jv_get(rep.doc, "slug"), NULL);
    if(!slug || !*slug || strlen(slug) >= n || strchr(slug, '/') || strchr(slug, '?')) {
        dapi_buf_adds(details, "Nekt's answer has no usable query 'slug'");
        result = DAPI_ERR_UPSTREAM;
    } else {
        snprintf(out, n, "%s", slug);
    }
    dapi_jv_free(rep.doc);
    return result;
}

struct v1_create {
    struct dapi_nekt *nk;
    struct dapi_reply rp;
    char *sql, *key;
    unsigned char kh[DAPI_KEY_HASH_LEN];
};

static void v1_create_run(void *arg, struct dapi_econn *conn)
{
    struct v1_create *j = arg;
    struct dapi_nekt *nk = j->nk;
    char up[256], slug[DAPI_SLUG_MAX];
    struct dapi_buf details;
    dapi_buf_init(&details, 64 * 1024);
    enum dapi_err result;
    /* A v1 query has no run of its own: its admission slot covers the upstream creation and is
     * given back before the answer */
    struct dapi_slot slot;
    struct dapi_reply rp = dapi_slot_reply(&slot, j->rp, nk->env->queries, j->kh);
    if(!conn) {
        dapi_reply_err(rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    const char *key = nekt_upstream_key(nk, j->key);
    if((result = ensure_application(nk, key, &details)) && atomic_load(nk->env->stopping)) {
        dapi_reply_err(rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    if(result) {
        nekt_reply_creation_failure(rp, result, "Failed to start application", details.data);
        goto out;
    }
    result = create_upstream(nk, key, j->sql, up, sizeof up, &details);
    if(result == DAPI_ERR_INVALID) { /* the application may have stopped meanwhile */
        unsigned char kh[DAPI_KEY_HASH_LEN];
        dapi_sha256(key, strlen(key), kh);
        app_set(nk, kh, 0);
        dapi_buf_reset(&details);
        if(!(result = ensure_application(nk, key, &details)))
            result = create_upstream(nk, key, j->sql, up, sizeof up, &details);
    }
    if(result && atomic_load(nk->env->stopping)) {
        dapi_reply_err(rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    if(result) {
        nekt_reply_creation_failure(rp, result, "Failed to create query", details.data);
        goto out;
    }
    char why[512];
    if((result = dapi_queries_create(nk->env->queries, j->kh, j->sql, up, nk->env->wall_s(), slug,
                                     why, sizeof why))) {
        dapi_backend_create_failure(rp, result, why);
        goto out;
    }
    dapi_reply_created(rp, slug, j->sql);
out:
    dapi_slot_give_back(&slot); /* (answered: given back already) */
    dapi_buf_free(&details);
    free(j->sql);
    free(j->key);
    free(j);
}

/* ---- v1: one page -------------------------------------------------------------------- */

struct v1_page {
    struct dapi_nekt *nk;
    struct dapi_reply rp;
    char slug[DAPI_SLUG_MAX + 1];
    char page_text[48];
    uint64_t page;
    char *key;
    unsigned char kh[DAPI_KEY_HASH_LEN]; /* holds an admission slot while it fetches (not a
                                            read-ahead: the pool tag only) */
    int claimed;                         /* the page is this request's to fetch (page_claim) */
    struct dapi_slot slot;               /* that admission slot, given back before the answer */
    struct dapi_reply client;            /* whom v1_page_run answers (rp wraps it) */
};

static void page_path(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *ext,
                      char *out, size_t n)
{
    char dir[4096];
    dapi_queries_dir(nk->env->queries, slug, dir, sizeof dir);
    snprintf(out, n, "%s/page-%llu.%s", dir, (unsigned long long)page, ext);
}

/* Serves page 1 of a stored page file; returns 0 if there is none. */
static int serve_page_file(struct v1_page *p)
{
    char path[4200];
    struct dapi_result *res = NULL;
    page_path(p->nk, p->slug, p->page, "bin", path, sizeof path);
    if(dapi_result_open(&res, path))
        return 0;
    /* served like a stored page (compressed when accepted), without caching headers: a v1
     * page file may be fetched again */
    dapi_reply_result_page(p->rp, p->slug, p->page_text, res, 1, 0, 0);
    dapi_result_close(res);
    return 1;
}

/* Starts an execution of the page and polls it to the end; writes its id into id. */
static enum dapi_err execute_page(struct v1_page *p, const char *key, const char *up, char *id,
                                  size_t idn, struct dapi_buf *details)
{
    struct dapi_nekt *nk = p->nk;
    struct nekt_reply rep;
    char path[512], body[64];
    snprintf(path, sizeof path, "/api/v1/explorer/queries/%s/execution/", up);
    snprintf(body, sizeof body, "{\"page_number\":%s}", p->page_text);
    enum dapi_err result = nekt_call(nk->env, "POST", path, body, key, 0, &rep);
    if(result) {
        dapi_buf_adds(details, rep.details);
        return result;
    }
    struct dapi_jv *idv = dapi_jv_get(rep.doc, "id");
    if(idv && dapi_jv_type(idv) == DAPI_J_INT)
        snprintf(id, idn, "%lld", (long long)dapi_jv_int(idv));
    else if(idv && dapi_jv_str(idv, NULL) && *dapi_jv_str(idv, NULL) &&
            strlen(dapi_jv_str(idv, NULL)) < idn && !strchr(dapi_jv_str(idv, NULL), '/'))
        snprintf(id, idn, "%s", dapi_jv_str(idv, NULL));
    else
        result = DAPI_ERR_UPSTREAM;
    dapi_jv_free(rep.doc);
    if(result) {
        dapi_buf_adds(details, "Nekt's execution answer has no usable 'id'");
        return result;
    }
    snprintf(path, sizeof path, "/api/v1/explorer/queries/%s/execution/%s/", up, id);
    /* Poll soon, then back off (doubling to 2 s): a one-page execution is often done within
     * milliseconds, and the reference's fixed 2 s sleep is most of its per-page cost. */
    int64_t deadline = nk->env->mono_ms() + nk->env->cfg->query_timeout * 1000, delay = 5;
    for(;;) {
        if((result = nekt_call(nk->env, "GET", path, NULL, key, 1, &rep))) {
            dapi_buf_adds(details, rep.details);
            return result;
        }
        const char *st = dapi_jv_str(dapi_jv_get(rep.doc, "status"), NULL);
        if(!st) {
            dapi_buf_adds(details, "Nekt's execution status has no 'status'");
            result = DAPI_ERR_UPSTREAM;
        } else if(strcmp(st, "failed") == 0) {
            const char *m = nekt_state_message(rep.doc);
            dapi_buf_adds(details, m ? m : "Query execution failed");
            result = DAPI_ERR_SQL;
        }
        int done = st && strcmp(st, "complete") == 0;
        dapi_jv_free(rep.doc);
        if(result || done)
            return result;
        if(nk->env->mono_ms() + delay > deadline || atomic_load(nk->env->stopping)) {
            dapi_buf_addf(details, "Query execution timed out after %llds",
                          (long long)nk->env->cfg->query_timeout);
            return DAPI_ERR_TIMEOUT;
        }
        if(dapi_queries_cancelled(nk->env->queries, p->slug)) { /* DELETE: polled no more */
            dapi_buf_adds(details, "the query was cancelled");
            return DAPI_ERR_BUSY;
        }
        dapi_clock_sleep_ms(delay);
        delay = delay * 2 > 2000 ? 2000 : delay * 2;
    }
}

/* Fetches the page's file into page-N.parquet. */
static enum dapi_err fetch_page_file(struct v1_page *p, const char *key, const char *up,
                                     const char *id, char *file, size_t filen,
                                     struct dapi_buf *details)
{
    struct dapi_nekt *nk = p->nk;
    struct nekt_reply rep;
    char path[512], why[512];
    snprintf(path, sizeof path, "/api/v1/explorer/queries/%s/execution/%s/results/", up, id);
    enum dapi_err result = nekt_call(nk->env, "GET", path, NULL, key, 1, &rep);
    if(result) {
        dapi_buf_adds(details, rep.details);
        return result;
    }
    const char *url = dapi_jv_str(dapi_jv_get(rep.doc, "presigned_url"), NULL);
    if(!url) {
        dapi_buf_adds(details, "Nekt's results answer has no 'presigned_url'");
        dapi_jv_free(rep.doc);
        return DAPI_ERR_UPSTREAM;
    }
    char ext[32], rnd[9];
    if(dapi_random_base62(rnd, 8))
        return DAPI_ERR_INTERNAL;
    snprintf(ext, sizeof ext, "%s.parquet", rnd); /* unique: downloads never share a file */
    page_path(nk, p->slug, p->page, ext, file, filen);
    uint64_t got;
    result = nekt_download(nk->env, url, file, (uint64_t)nk->env->cfg->max_upstream_bytes, &got,
                           why, sizeof why);
    dapi_jv_free(rep.doc);
    if(result)
        dapi_buf_adds(details, why);
    return result;
}

/* Gets the page's Parquet file from Nekt into file: makes sure the application is active,
 * executes the page and fetches its file, recovering (up to MAX_EXECUTIONS times) from an
 * application that stopped, an upstream query Nekt lost (created again from the SQL we
 * kept) and a refused or vanished file URL. */
static enum dapi_err fetch_page(struct v1_page *p, const char *key, char *file, size_t filen,
                                struct dapi_buf *details)
{
    struct dapi_nekt *nk = p->nk;
    char up[256], id[128];
    char *stored_sql = NULL;
    enum dapi_err result = DAPI_ERR_UPSTREAM;
    dapi_queries_upstream(nk->env->queries, p->slug, up, sizeof up);
    for(int n = 1; n <= MAX_EXECUTIONS; n++) {
        dapi_buf_reset(details);
        if((result = ensure_application(nk, key, details)))
            break;
        result = execute_page(p, key, up, id, sizeof id, details);
        if(result == DAPI_ERR_INVALID && n < MAX_EXECUTIONS) {
            /* e.g. 409: the application stopped since we saw it active — check it again */
            unsigned char kh[DAPI_KEY_HASH_LEN];
            dapi_sha256(key, strlen(key), kh);
            app_set(nk, kh, 0);
            dapi_warn("query %s page %s: %s; checking the application again", p->slug,
                      p->page_text, details->data ? details->data : "refused");
            continue;
        }
        if(result == DAPI_ERR_NOT_FOUND && n < MAX_EXECUTIONS) {
            /* Nekt no longer knows the query (or lost the execution): create it again from
             * the SQL we kept, and carry on. */
            dapi_buf_reset(details);
            free(stored_sql);
            if(!(stored_sql = dapi_queries_sql(nk->env->queries, p->slug)) ||
               (result = create_upstream(nk, key, stored_sql, up, sizeof up, details)))
                break;
            dapi_queries_set_upstream(nk->env->queries, p->slug, up);
            dapi_warn("query %s: Nekt lost the upstream query; created it again as %s", p->slug,
                      up);
            continue;
        }
        if(result)
            break;
        result = fetch_page_file(p, key, up, id, file, filen, details);
        if(result != DAPI_ERR_FORBIDDEN && result != DAPI_ERR_NOT_FOUND)
            break;
        dapi_warn("query %s page %s: %s; executing again", p->slug, p->page_text,
                  details->data ? details->data : "file refused");
    }
    free(stored_sql);
    /* still refused or missing after the re-executions: Nekt's failure, not the client's */
    if(result == DAPI_ERR_NOT_FOUND || result == DAPI_ERR_FORBIDDEN)
        result = DAPI_ERR_UPSTREAM;
    return result;
}

/* Decodes the downloaded page file into the kept page-N.bin (then removed), charged to the
 * query's key (dapi_queries_add_bytes). */
static enum dapi_err keep_page(struct v1_page *p, struct dapi_econn *conn, const char *file,
                               struct dapi_buf *details)
{
    char out[4200], *why = NULL;
    uint64_t bytes;
    struct dapi_buf sql;
    page_path(p->nk, p->slug, p->page, "bin", out, sizeof out);
    dapi_buf_init(&sql, 16384);
    dapi_buf_adds(&sql, "SELECT * FROM read_parquet(");
    dapi_engine_sql_literal(&sql, file);
    dapi_buf_addc(&sql, ')');
    dapi_buf_reset(details);
    enum dapi_err result = sql.data
                               ? dapi_backend_write_result(p->nk->env, conn, sql.data, NULL, NULL,
                                                           out, NULL, 1, NULL, &bytes, &why)
                               : DAPI_ERR_NOMEM;
    dapi_buf_free(&sql);
    if(why)
        dapi_buf_adds(details, why);
    free(why);
    unlink(file);
    char limit[256];
    /* Kept pages count in the key's quota, like a result: one not counted is not kept (nor
     * the page of a query deleted meanwhile: page_query_gone answers). */
    enum dapi_err kept = result ? DAPI_OK
                                : dapi_queries_add_bytes(p->nk->env->queries, p->slug, bytes,
                                                         limit, sizeof limit);
    if(kept) {
        unlink(out);
        dapi_buf_reset(details);
        dapi_buf_adds(details, limit);
        result = kept;
    }
    return result;
}

/* A page whose query went while it was fetched. Deleted (by its owner, or to make room for
 * the key's newer queries): answered 404 Query not found, like a request made after the
 * deletion, and what the fetch wrote is removed (the page's writer may have made the query's
 * directory again). Cancelled: 410 Query cancelled, as for a request made after the DELETE.
 * Returns 1 when so (rp answered, unless NULL: a read-ahead answers nobody), else 0. */
static int page_query_gone(struct dapi_nekt *nk, const char *slug, const unsigned char *kh,
                           const struct dapi_reply *rp)
{
    struct dapi_qview v;
    int gone = dapi_queries_dir_gone(nk->env->queries, slug) ||
               dapi_queries_get(nk->env->queries, slug, kh, nk->env->wall_s(), &v);
    if(gone) {
        if(rp) {
            struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR, .message = "Query not found"};
            dapi_reply(*rp, DAPI_ERR_NOT_FOUND, &o);
        }
        return 1;
    }
    int cancelled = v.state == DAPI_Q_CANCELLED;
    if(cancelled && rp) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = "Query cancelled",
                                 .details = v.message[0] ? v.message : NULL,
                                 .status = 410,
                                 .retry_after = -1};
        dapi_reply(*rp, DAPI_ERR_NOT_FOUND, &o);
    }
    dapi_queries_release(nk->env->queries, &v);
    return cancelled;
}

/* ---- v1: read-ahead ------------------------------------------------------------------ */

/* A client reading page N is likely to ask for N+1 next: after each page served, pages
 * N+1..N+k (--nekt-read-ahead) that are neither kept nor being fetched are fetched in the
 * background, on the run pool under the client's tag. They take no admission slot (the
 * client's own requests are never refused for them) but are bounded: k per query queued or
 * running, none while the run pool has no idle worker, none past the query's last page (a
 * page with fewer than DAPI_PAGE_ROWS rows). A request for a page being read ahead waits for
 * it (page_claim) instead of executing it again. */

static int page_kept(struct dapi_nekt *nk, const char *slug, uint64_t page)
{
    char path[4200];
    struct stat st;
    page_path(nk, slug, page, "bin", path, sizeof path);
    return stat(path, &st) == 0;
}

/* The rows of a kept page; -1 when it is not kept. */
static int64_t page_rows(struct dapi_nekt *nk, const char *slug, uint64_t page)
{
    char path[4200];
    struct dapi_result *res = NULL;
    page_path(nk, slug, page, "bin", path, sizeof path);
    if(dapi_result_open(&res, path))
        return -1;
    int64_t rows = (int64_t)dapi_result_rows(res);
    dapi_result_close(res);
    return rows;
}

/* slug's read-ahead entry, under mu; make: add it if missing (giving up the oldest idle entry
 * when the list is full). NULL: none. */
static struct ra_query *ra_find(struct dapi_nekt *nk, const char *slug, int make)
{
    struct ra_query **idle = NULL;
    size_t n = 0;
    for(struct ra_query **qp = &nk->ra; *qp; qp = &(*qp)->next, n++) {
        if(strcmp((*qp)->slug, slug) == 0)
            return *qp;
        if(!(*qp)->running)
            idle = qp; /* the last one seen is the oldest */
    }
    if(!make)
        return NULL;
    if(n >= RA_QUERIES_MAX) {
        if(!idle)
            return NULL;
        struct ra_query *old = *idle;
        *idle = old->next;
        free(old);
    }
    struct ra_query *q = calloc(1, sizeof *q);
    if(!q)
        return NULL;
    snprintf(q->slug, sizeof q->slug, "%s", slug);
    q->next = nk->ra;
    nk->ra = q;
    return q;
}

/* page is the query's last page (it has fewer than DAPI_PAGE_ROWS rows). */
static void ra_note_last(struct dapi_nekt *nk, const char *slug, uint64_t page)
{
    pthread_mutex_lock(&nk->mu);
    struct ra_query *q = ra_find(nk, slug, 1);
    if(q && (!q->last || page < q->last))
        q->last = page;
    pthread_mutex_unlock(&nk->mu);
}

static void ra_done(struct dapi_nekt *nk, const char *slug)
{
    pthread_mutex_lock(&nk->mu);
    struct ra_query *q = ra_find(nk, slug, 0);
    if(q && q->running > 0)
        q->running--;
    pthread_mutex_unlock(&nk->mu);
}

static int page_busy_locked(struct dapi_nekt *nk, const char *slug, uint64_t page)
{
    for(struct inflight *f = nk->pages; f; f = f->next)
        if(f->page == page && strcmp(f->slug, slug) == 0)
            return 1;
    return 0;
}

static void v1_page_free(struct v1_page *p)
{
    if(p)
        free(p->key);
    free(p);
}

/* One page fetched ahead: kept like a requested one, answered to nobody. */
static void v1_ahead_run(void *arg, struct dapi_econn *conn)
{
    struct v1_page *p = arg;
    struct dapi_nekt *nk = p->nk;
    char file[4200];
    int claimed = 0;
    struct dapi_buf details;
    dapi_buf_init(&details, 4096);
    if(!conn || atomic_load(nk->env->stopping)) /* discarded at shutdown */
        goto out;
    pthread_mutex_lock(&nk->mu);
    struct ra_query *q = ra_find(nk, p->slug, 0);
    int past = q && q->last && p->page > q->last;
    pthread_mutex_unlock(&nk->mu);
    if(past || page_kept(nk, p->slug, p->page))
        goto out;
    /* a page another request fetches already: not fetched twice, not waited for */
    if(!(claimed = page_claim(nk, p->slug, p->page, 0)) || page_kept(nk, p->slug, p->page))
        goto out;
    enum dapi_err result = fetch_page(p, nekt_upstream_key(nk, p->key), file, sizeof file,
                                      &details);
    if(!result)
        result = keep_page(p, conn, file, &details);
    if(!result) {
        int64_t rows = page_rows(nk, p->slug, p->page);
        if(rows >= 0 && rows < DAPI_PAGE_ROWS)
            ra_note_last(nk, p->slug, p->page);
    } else if(!atomic_load(nk->env->stopping) && !page_query_gone(nk, p->slug, p->kh, NULL)) {
        dapi_info("query %s page %s: read-ahead failed (%s): %s; fetched again when asked",
                  p->slug, p->page_text, dapi_err_message(result),
                  details.data ? details.data : "");
    }
out:
    if(claimed)
        page_release(nk, p->slug, p->page);
    ra_done(nk, p->slug);
    dapi_buf_free(&details);
    v1_page_free(p);
}

/* Page `page` of slug is kept and about to be served: queues the pages after it (above).
 * key is the request's forwarded key (may be NULL), kh its owner's hash (the pool tag). */
static void read_ahead(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *key,
                       const unsigned char *kh)
{
    int64_t k = nk->env->cfg->nekt_read_ahead;
    if(k <= 0 || atomic_load(nk->env->stopping))
        return;
    int64_t rows = page_rows(nk, slug, page);
    if(rows < 0)
        return; /* not kept: nothing served, nothing read ahead */
    if(rows < DAPI_PAGE_ROWS) {
        ra_note_last(nk, slug, page);
        return;
    }
    for(uint64_t next = page + 1; next > page && next <= page + (uint64_t)k; next++) {
        if(page_kept(nk, slug, next))
            continue;
        if(dapi_pool_load(nk->env->run_pool) >= (size_t)nk->env->cfg->upstream_workers)
            break; /* no idle worker: clients' own requests come first */
        pthread_mutex_lock(&nk->mu);
        struct ra_query *q = ra_find(nk, slug, 1);
        int stop = !q || (q->last && next > q->last) || q->running >= k;
        int go = !stop && !page_busy_locked(nk, slug, next);
        if(go)
            q->running++;
        pthread_mutex_unlock(&nk->mu);
        if(stop)
            break;
        if(!go)
            continue; /* being fetched */
        struct v1_page *p = calloc(1, sizeof *p);
        if(!p || (key && !(p->key = strdup(key))) ||
           (p->nk = nk, p->page = next, snprintf(p->slug, sizeof p->slug, "%s", slug),
            snprintf(p->page_text, sizeof p->page_text, "%llu", (unsigned long long)next),
            memcpy(p->kh, kh, DAPI_KEY_HASH_LEN),
            dapi_pool_submit_tagged(nk->env->run_pool, v1_ahead_run, p, 0,
                                    dapi_backend_key_tag(kh)))) {
            ra_done(nk, slug);
            v1_page_free(p);
            break;
        }
    }
}

/* Gives back what a requested page holds: its claim (others may fetch it) and, before the
 * answer is sent, its admission slot (struct dapi_slot). Idempotent. */
static void v1_page_settle(struct v1_page *p)
{
    if(p->claimed)
        page_release(p->nk, p->slug, p->page);
    p->claimed = 0;
    dapi_slot_give_back(&p->slot);
}

static void v1_page_done(void *ctx, enum dapi_err err, const struct dapi_outcome *o)
{
    struct v1_page *p = ctx;
    v1_page_settle(p);
    dapi_reply(p->client, err, o);
}

static void v1_page_run(void *arg, struct dapi_econn *conn)
{
    struct v1_page *p = arg;
    struct dapi_nekt *nk = p->nk;
    char file[4200];
    struct dapi_buf details;
    dapi_buf_init(&details, 64 * 1024);
    enum dapi_err result;
    p->client = dapi_slot_reply(&p->slot, p->rp, nk->env->queries, p->kh);
    p->rp = (struct dapi_reply){v1_page_done, p}; /* every answer below settles first */
    if(!conn) {
        dapi_reply_err(p->rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    read_ahead(nk, p->slug, p->page, p->key, p->kh); /* (when it is kept already) */
    if(serve_page_file(p))                           /* fetched meanwhile by another request */
        goto out;
    /* Two requests for the same new page make one upstream execution: the second waits for
     * the first (a request or a read-ahead), then serves what it kept. */
    p->claimed = page_claim(nk, p->slug, p->page, nk->env->cfg->query_timeout * 1000);
    read_ahead(nk, p->slug, p->page, p->key, p->kh);
    if(serve_page_file(p))
        goto out;
    if(!p->claimed) {
        dapi_reply_failed(p->rp, DAPI_ERR_TIMEOUT, 504,
                          "another request for this page is still fetching it", p->slug,
                          p->page_text);
        goto out;
    }
    result = fetch_page(p, nekt_upstream_key(nk, p->key), file, sizeof file, &details);
    if(!result)
        result = keep_page(p, conn, file, &details);
    if(result && atomic_load(nk->env->stopping)) {
        dapi_reply_err(p->rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    if(page_query_gone(nk, p->slug, p->kh, &p->rp)) /* (kept or not) */
        goto out;
    if(!result)
        read_ahead(nk, p->slug, p->page, p->key, p->kh);
    if(!result && serve_page_file(p))
        goto out;
    /* a key the upstream refused keeps its own status (401/403), not a server failure */
    dapi_reply_failed(
        p->rp, result ? result : DAPI_ERR_IO,
        result == DAPI_ERR_AUTH || result == DAPI_ERR_FORBIDDEN ? dapi_err_status(result) : 0,
        details.data, p->slug, p->page_text);
out:
    v1_page_settle(p); /* (answered: settled already) */
    dapi_buf_free(&details);
    free(p->key);
    free(p);
}

/* ---- v1: the backend's operations ---------------------------------------------------- */

void nekt_v1_create(struct dapi_nekt *nk, char *sql, const char *key,
                    const unsigned char *key_hash, struct dapi_reply rp)
{
    struct v1_create *j = calloc(1, sizeof *j);
    if(!j || (key && !(j->key = strdup(key)))) {
        dapi_queries_unadmit(nk->env->queries, key_hash);
        free(j);
        free(sql);
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        return;
    }
    j->nk = nk;
    j->rp = rp;
    j->sql = sql;
    memcpy(j->kh, key_hash, DAPI_KEY_HASH_LEN);
    if(dapi_backend_queue(nk->env, nk->env->run_pool, v1_create_run, j, key_hash, rp,
                          "too many upstream calls waiting")) {
        free(j->sql);
        free(j->key);
        free(j);
    }
}

void nekt_v1_results(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *page_text,
                     const char *key, const unsigned char *key_hash, struct dapi_reply rp)
{
    struct dapi_qview v;
    if(dapi_queries_get(nk->env->queries, slug, key_hash, nk->env->wall_s(), &v)) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR, .message = "Query not found"};
        dapi_reply(rp, DAPI_ERR_NOT_FOUND, &o);
        return;
    }
    int cancelled = v.state == DAPI_Q_CANCELLED;
    dapi_queries_release(nk->env->queries, &v);
    if(cancelled && page_query_gone(nk, slug, key_hash, &rp)) /* no page of it is fetched */
        return;
    struct v1_page *p = calloc(1, sizeof *p);
    if(!p || (key && !(p->key = strdup(key)))) {
        free(p);
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        return;
    }
    p->nk = nk;
    p->rp = rp;
    p->page = page;
    snprintf(p->slug, sizeof p->slug, "%s", slug);
    snprintf(p->page_text, sizeof p->page_text, "%s", page_text);
    read_ahead(nk, slug, page, key, key_hash); /* (when it is kept already) */
    if(serve_page_file(p)) {                   /* kept from an earlier request: no upstream call */
        free(p->key);
        free(p);
        return;
    }
    /* A page fetched from Nekt is an upstream execution: it takes an admission slot like a
     * query, so one key's page requests cannot fill the run pool for the others. */
    enum dapi_err admitted = dapi_queries_admit(nk->env->queries, key_hash);
    if(admitted) {
        dapi_backend_refuse_admission(nk->env, rp, admitted, key_hash);
        free(p->key);
        free(p);
        return;
    }
    memcpy(p->kh, key_hash, DAPI_KEY_HASH_LEN);
    if(dapi_backend_queue(nk->env, nk->env->run_pool, v1_page_run, p, key_hash, rp,
                          "too many upstream calls waiting")) {
        free(p->key);
        free(p);
    }
}

void nekt_v1_free(struct dapi_nekt *nk)
{
    while(nk->apps) {
        struct app_state *a = nk->apps;
        nk->apps = a->next;
        free(a);
    }
    while(nk->ra) {
        struct ra_query *q = nk->ra;
        nk->ra = q->next;
        free(q);
    }
    while(nk->pages) {
        struct inflight *f = nk->pages;
        nk->pages = f->next;
        free(f);
    }
}
