/* The Nekt backend (--backend nekt): the same three endpoints, run on the customer's lake
 * through the Nekt Data API.
 *
 * v2 (sql-query): the query is executed once, right after it is created; every presigned
 * Parquet file is downloaded (size-capped, in order) next to the query and turned into the
 * same paged result file as a local query — page N never calls Nekt.
 *
 * v1 (Explorer): the reference's flow — ensure the application is active (per upstream key),
 * create the upstream query; per page: start an execution, poll it with backoff, fetch its
 * Parquet file. A page fetched once is kept with the query until its retention ends.
 *
 * Keys: with DAPI_NEKT_API_KEY dapi uses its own key upstream and clients use dapi's keys;
 * without it each client's x-api-key is forwarded, as the reference does.
 *
 * This file: the backend's operations (each passes the request to the API in use), the
 * upstream key, start and stop. v2 is in nekt_v2.c, v1 in nekt_v1.c (nekt_int.h between
 * them), the calls to Nekt in nekt_http.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/nekt_http.h"
#include "backend/nekt_int.h"
#include "store/queries.h"

/* The key a request's calls to Nekt carry: the principal's own upstream key (a store key's,
 * set by the key store) when it has one, else the server-held key (DAPI_NEKT_API_KEY), else
 * the client's key, forwarded. Chosen once per request (nekt_create, nekt_results): the jobs
 * carry it, and nekt_upstream_key() below adds the server-held key for calls without one (a query
 * resumed at start). */
static const char *forward_key(const struct dapi_nekt *nk, const struct dapi_principal *who)
{
    if(who->upstream_key)
        return who->upstream_key;
    return nk->env->cfg->nekt_api_key ? nk->env->cfg->nekt_api_key : who->client_key;
}

const char *nekt_upstream_key(struct dapi_nekt *nk, const char *key)
{
    return key ? key : nk->env->cfg->nekt_api_key;
}

/* ---- the vtable ---------------------------------------------------------------------- */

static void nekt_create(void *state, char *sql, const struct dapi_principal *who,
                        struct dapi_reply rp)
{
    struct dapi_nekt *nk = state;
    const char *key = forward_key(nk, who);
    const unsigned char *key_hash = who->owner;
    if(!who->scope.all && !who->upstream_key) {
        /* dapi does not run the SQL here, so it cannot hold it to the key's layers: only an
         * upstream key limited the same way can (Nekt checks it); a shared one would read
         * every layer */
        dapi_queries_unadmit(nk->env->queries, key_hash);
        free(sql);
        dapi_reply_err(rp, DAPI_ERR_FORBIDDEN,
                       "this API key may read only some layers, which the Nekt backend enforces "
                       "only through an upstream key of its own: it has none");
        return;
    }
    if(!nk->v1) {
        nekt_v2_create(nk, sql, who, key, rp);
        return;
    }
    nekt_v1_create(nk, sql, key, key_hash, rp);
}

static void nekt_results(void *state, const char *slug, uint64_t page, const char *page_text,
                         const struct dapi_principal *who, struct dapi_reply rp)
{
    struct dapi_nekt *nk = state;
    const char *key = forward_key(nk, who);
    const unsigned char *key_hash = who->owner;
    if(!nk->v1) {
        nekt_v2_results(nk, slug, page, page_text, key, key_hash, rp);
        return;
    }
    nekt_v1_results(nk, slug, page, page_text, key, key_hash, rp);
}

/* v2 materialises results like the local backend; v1 only forwards pages (nothing stored). */
static void nekt_stored(void *state, const char *slug, int live, const struct dapi_principal *who,
                        struct dapi_reply rp)
{
    struct dapi_nekt *nk = state;
    if(nk->v1) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .status = 501,
                                 .message = "Export not available",
                                 .details = "with the Nekt v1 API the results stay upstream: "
                                            "read them page by page (…/results)"};
        dapi_reply(rp, DAPI_ERR_INVALID, &o);
        return;
    }
    nekt_results(state, slug, live ? DAPI_PAGE_LIVE : DAPI_PAGE_WHOLE, "1", who, rp);
}

static void nekt_unfinished(void *state, const char *slug, const char *sql)
{
    struct dapi_nekt *nk = state;
    char up[256];
    dapi_queries_upstream(nk->env->queries, slug, up, sizeof up);
    if(nk->v1 || *up)
        return; /* v1 queries have no run of their own */
    nekt_v2_resume(nk, slug, sql);
}

static int nekt_start(const struct dapi_backend_env *env, void **state, char *err, size_t errlen)
{
    const char *u = env->cfg->nekt_url;
    if(strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
        snprintf(err, errlen, "invalid value for --nekt-url: '%s' (an http:// or https:// URL)",
                 u);
        return -1;
    }
    struct dapi_nekt *nk = calloc(1, sizeof *nk);
    if(!nk) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&nk->mu, NULL);
    pthread_cond_init(&nk->page_done, NULL);
    pthread_cond_init(&nk->creating_cv, NULL);
    nk->env = env;
    nk->v1 = strcmp(env->cfg->nekt_api, "v1") == 0;
    if(!nk->v1 && env->cfg->upstream_key_check_wait > 0 && nekt_v2_start(nk)) {
        snprintf(err, errlen, "cannot start the Nekt backend's key check");
        pthread_cond_destroy(&nk->creating_cv);
        pthread_cond_destroy(&nk->page_done);
        pthread_mutex_destroy(&nk->mu);
        free(nk);
        return -1;
    }
    nekt_http_init();
    nk->reach = nekt_reach_start(env); /* (NULL: /api/ready says it could not start) */
    *state = nk;
    return 0;
}

static void nekt_stop(void *state)
{
    struct dapi_nekt *nk = state;
    if(!nk)
        return;
    nekt_v2_stop(nk); /* answers every creation still waiting */
    nekt_reach_stop(nk->reach);
    nekt_v1_free(nk);
    pthread_cond_destroy(&nk->creating_cv);
    pthread_cond_destroy(&nk->page_done);
    pthread_mutex_destroy(&nk->mu);
    free(nk);
}

static int nekt_ready(void *state, char *why, size_t n)
{
    return nekt_reach_status(((struct dapi_nekt *)state)->reach, why, n);
}

const struct dapi_backend_ops dapi_backend_nekt_ops = {
    .ready = nekt_ready,
    .stored = nekt_stored,
    .start = nekt_start,
    .stop = nekt_stop,
    .create = nekt_create,
    .results = nekt_results,
    .unfinished = nekt_unfinished,
};
