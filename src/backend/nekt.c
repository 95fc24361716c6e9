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
 * without it each client's x-api-key is forwarded, as the reference does. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/nekt_http.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "engine/engine.h"
#include "pool/pool.h"
#include "store/queries.h"
#include "store/result.h"

#define MAX_EXECUTIONS 3 /* re-executions after expired URLs / lost executions */
#define APP_FRESH_MS 30000
#define KEYS_OK_MAX 1024              /* upstream keys remembered as accepted by Nekt */
#define KEY_OK_TTL_MS (5 * 60 * 1000) /* for this long after Nekt last accepted them */
#define RA_QUERIES_MAX 1024           /* v1 queries whose read-ahead state is remembered */

/* An upstream key Nekt accepted recently (its hash): v2 creations with it answer at once. */
struct key_ok {
    unsigned char hash[DAPI_KEY_HASH_LEN];
    int64_t until_ms; /* 0: a free entry */
};

/* A v2 creation waiting for its run's first answer from Nekt (the key check), until
 * deadline_ms at most; answered by the run (creation_settle) or by the timer, once. */
struct creating {
    char slug[DAPI_SLUG_MAX];
    char *sql;
    struct dapi_reply rp;
    int64_t deadline_ms;
    struct creating *next;
};

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

struct dapi_nekt {
    pthread_mutex_t mu;
    struct app_state *apps; /* Explorer application state, per upstream key */
    struct inflight *pages; /* v1 pages being fetched: a second request waits for the first */
    struct ra_query *ra;    /* v1 read-ahead state, newest first (RA_QUERIES_MAX at most) */
    pthread_cond_t page_done;
    int v1;
    const struct dapi_backend_env *env;
    /* v2's key check (--upstream-key-check-wait), all under mu */
    struct key_ok *keys_ok; /* KEYS_OK_MAX entries */
    struct creating *creating;
    pthread_cond_t creating_cv; /* a creation was added, or the timer must stop */
    pthread_t timer;            /* answers the creations whose wait is over */
    int timer_started, timer_stop;
    struct nekt_reach *reach; /* is Nekt reachable? (GET /api/ready) */
};

/* Marks slug/page as being fetched by this thread; if another thread already fetches it,
 * waits (bounded) until it is done and returns 0 (the caller then looks for the kept page).
 * Returns 1 when the caller owns the fetch and must call page_release. */
static int page_claim(struct dapi_nekt *n, const char *slug, uint64_t page, int64_t wait_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_ms / 1000;
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

/* The key a request's calls to Nekt carry: the principal's own upstream key (a store key's,
 * set by the key store) when it has one, else the server-held key (DAPI_NEKT_API_KEY), else
 * the client's key, forwarded. Chosen once per request (nekt_create, nekt_results): the jobs
 * carry it, and upstream_key() below adds the server-held key for calls without one (a query
 * resumed at start). */
static const char *forward_key(const struct dapi_nekt *nk, const struct dapi_principal *who)
{
    if(who->upstream_key)
        return who->upstream_key;
    return nk->env->cfg->nekt_api_key ? nk->env->cfg->nekt_api_key : who->client_key;
}

static const char *upstream_key(struct dapi_nekt *nk, const char *key)
{
    return key ? key : nk->env->cfg->nekt_api_key;
}

/* ---- v2: the key check at creation ---------------------------------------------------- */

static void upstream_hash(struct dapi_nekt *nk, const char *client_key,
                          unsigned char out[DAPI_KEY_HASH_LEN])
{
    const char *k = upstream_key(nk, client_key);
    dapi_sha256(k ? k : "", k ? strlen(k) : 0, out);
}

static int key_known(struct dapi_nekt *nk, const unsigned char *h, int64_t now)
{
    int known = 0;
    if(!nk->keys_ok) /* no key check */
        return 0;
    pthread_mutex_lock(&nk->mu);
    for(size_t i = 0; i < KEYS_OK_MAX && !known; i++)
        known = nk->keys_ok[i].until_ms > now &&
                memcmp(nk->keys_ok[i].hash, h, DAPI_KEY_HASH_LEN) == 0;
    pthread_mutex_unlock(&nk->mu);
    return known;
}

/* Nekt accepted (ok) or refused the key: remembered for KEY_OK_TTL_MS, or forgotten. A full
 * table gives up the entry closest to its end. */
static void key_seen(struct dapi_nekt *nk, const unsigned char *h, int ok, int64_t now)
{
    if(!nk->keys_ok) /* no key check */
        return;
    pthread_mutex_lock(&nk->mu);
    struct key_ok *slot = NULL;
    for(size_t i = 0; i < KEYS_OK_MAX; i++) {
        struct key_ok *k = &nk->keys_ok[i];
        if(k->until_ms && memcmp(k->hash, h, DAPI_KEY_HASH_LEN) == 0) {
            slot = k;
            break;
        }
        if(!slot || k->until_ms < slot->until_ms)
            slot = k; /* free (0) or expired entries first, then the oldest */
    }
    if(ok) {
        memcpy(slot->hash, h, DAPI_KEY_HASH_LEN);
        slot->until_ms = now + KEY_OK_TTL_MS;
    } else if(memcmp(slot->hash, h, DAPI_KEY_HASH_LEN) == 0) {
        slot->until_ms = 0;
    }
    pthread_mutex_unlock(&nk->mu);
}

/* Takes slug's waiting creation out of the list (NULL: none, or answered already). */
static struct creating *creating_take(struct dapi_nekt *nk, const char *slug)
{
    pthread_mutex_lock(&nk->mu);
    struct creating *c = NULL;
    for(struct creating **cp = &nk->creating; *cp; cp = &(*cp)->next)
        if(strcmp((*cp)->slug, slug) == 0) {
            c = *cp;
            *cp = c->next;
            break;
        }
    pthread_mutex_unlock(&nk->mu);
    return c;
}

static void creating_free(struct creating *c)
{
    free(c->sql);
    free(c);
}

/* The creation's answer when the key check did not refuse it: the slug. */
static void creating_created(struct creating *c)
{
    dapi_reply_created(c->rp, c->slug, c->sql);
    creating_free(c);
}

/* Answers the creations whose wait is over with their slug (their runs go on), all of them
 * once the server stops; sleeps until the next deadline, 250 ms at most. */
static void *creating_timer(void *arg)
{
    struct dapi_nekt *nk = arg;
    pthread_mutex_lock(&nk->mu);
    for(;;) {
        int64_t now = nk->env->mono_ms(), next = now + 250;
        int all = nk->timer_stop || atomic_load(nk->env->stopping);
        struct creating *due = NULL;
        for(struct creating **cp = &nk->creating; *cp;) {
            struct creating *c = *cp;
            if(all || c->deadline_ms <= now) {
                *cp = c->next;
                c->next = due;
                due = c;
            } else {
                if(c->deadline_ms < next)
                    next = c->deadline_ms;
                cp = &c->next;
            }
        }
        if(due) {
            pthread_mutex_unlock(&nk->mu);
            while(due) {
                struct creating *c = due;
                due = c->next;
                if(!all)
                    dapi_info("query %s: no answer from Nekt within %lld s "
                              "(--upstream-key-check-wait): answered with the slug, it runs on",
                              c->slug, (long long)nk->env->cfg->upstream_key_check_wait);
                creating_created(c);
            }
            pthread_mutex_lock(&nk->mu);
            continue;
        }
        if(nk->timer_stop)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        int64_t ns = until.tv_nsec + (next - now) * 1000000;
        until.tv_sec += ns / 1000000000;
        until.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&nk->creating_cv, &nk->mu, &until);
    }
    pthread_mutex_unlock(&nk->mu);
    return NULL;
}

/* ---- v2: run once, download, materialise ------------------------------------------- */

struct v2_job {
    struct dapi_nekt *nk;
    char slug[DAPI_SLUG_MAX];
    char *sql, *key;
    int key_check; /* its creation waits for the first answer (creating list) */
    int refused;   /* the creation was answered with that answer's failure: not created */
};

static void v2_job_free(struct v2_job *j)
{
    free(j->sql);
    free(j->key);
    free(j);
}

/* The first answer of a run whose creation waits for it (the key check): the creation gets
 * the slug when the call succeeded, else the call's failure — and then the query is removed,
 * as if never created, and the run ends (j->refused). A creation answered already (its wait
 * was over) or a server that stops changes nothing: the outcome goes to the results. */
static void creation_settle(struct v2_job *j, enum dapi_err result, const char *details)
{
    struct dapi_nekt *nk = j->nk;
    j->key_check = 0;
    struct creating *c = creating_take(nk, j->slug);
    if(!c)
        return;
    if(!result || atomic_load(nk->env->stopping)) {
        creating_created(c);
        return;
    }
    dapi_info("query %s refused at creation (%s): %s", j->slug, dapi_err_message(result),
              details ? details : "");
    dapi_queries_remove(nk->env->queries, j->slug); /* its slot is free before the answer */
    nekt_reply_creation_failure(c->rp, result, "Failed to create query", details);
    creating_free(c);
    j->refused = 1;
}

/* Executes once and downloads every file; *expired: a file's URL was refused (try again). */
static enum dapi_err v2_execute(struct v2_job *j, const char *dir, size_t *nfiles, int *expired,
                                struct dapi_buf *details)
{
    struct dapi_nekt *nk = j->nk;
    struct nekt_reply rep;
    enum dapi_err result;
    struct dapi_buf body;
    dapi_buf_init(&body, strlen(j->sql) * 6 + 128);
    dapi_buf_adds(&body, "{\"sql\":");
    dapi_json_str(&body, j->sql, strlen(j->sql));
    dapi_buf_adds(&body, ",\"mode\":\"parquet\"}");
    if(!body.data)
        return DAPI_ERR_NOMEM;
    /* A read-only query: running it twice costs but cannot create anything twice. */
    result = nekt_call(nk->env, "POST", "/api/v1/sql-query/", body.data, upstream_key(nk, j->key),
                       1, &rep);
    dapi_buf_free(&body);
    /* Nekt's word on the key, for the creations after this one */
    unsigned char kh[DAPI_KEY_HASH_LEN];
    upstream_hash(nk, j->key, kh);
    if(rep.status >= 200 && rep.status <= 299)
        key_seen(nk, kh, 1, nk->env->mono_ms());
    else if(result == DAPI_ERR_AUTH || result == DAPI_ERR_FORBIDDEN)
        key_seen(nk, kh, 0, nk->env->mono_ms());
    /* a 404 or another 4xx to our request: nothing the client can correct */
    if(result == DAPI_ERR_NOT_FOUND || result == DAPI_ERR_INVALID)
        result = DAPI_ERR_UPSTREAM;
    if(j->key_check)
        creation_settle(j, result, result ? rep.details : NULL);
    if(j->refused) {
        dapi_jv_free(rep.doc);
        return result;
    }
    if(result) {
        dapi_buf_adds(details, rep.details);
        return result;
    }
    const char *state = dapi_jv_str(dapi_jv_get(rep.doc, "state"), NULL);
    struct dapi_jv *urls = dapi_jv_get(rep.doc, "presigned_urls");
    if(!state) {
        dapi_buf_adds(details, "Nekt's sql-query answer has no 'state'");
        result = DAPI_ERR_UPSTREAM;
    } else if(strcmp(state, "FAILED") == 0) {
        const char *m = nekt_state_message(rep.doc);
        dapi_buf_adds(details, m ? m : "the query failed upstream (no reason given)");
        result = DAPI_ERR_SQL;
    } else if(strcmp(state, "CANCELLED") == 0) {
        const char *m = nekt_state_message(rep.doc);
        dapi_buf_addf(details, "the query was cancelled upstream%s%s", m ? ": " : "", m ? m : "");
        result = DAPI_ERR_UPSTREAM;
    } else if(strcmp(state, "RUNNING") == 0) {
        dapi_buf_adds(details, "Nekt answered that the query is still RUNNING; the sql-query "
                               "API offers no way to wait for it");
        result = DAPI_ERR_TIMEOUT;
    } else if(strcmp(state, "SUCCEEDED") != 0) {
        dapi_buf_addf(details, "Nekt answered an unknown state '%.64s'", state);
        result = DAPI_ERR_UPSTREAM;
    } else if(!urls || dapi_jv_type(urls) != DAPI_J_ARRAY) {
        dapi_buf_adds(details, "Nekt's sql-query answer has no 'presigned_urls' list");
        result = DAPI_ERR_UPSTREAM;
    }
    size_t n = result ? 0 : dapi_jv_array_size(urls);
    for(size_t i = 0; i < n && !result; i++)
        if(!dapi_jv_str(dapi_jv_index(urls, i), NULL)) {
            dapi_buf_adds(details, "Nekt's 'presigned_urls' holds a value that is not a URL");
            result = DAPI_ERR_UPSTREAM;
        }
    uint64_t total = 0, cap = (uint64_t)nk->env->cfg->max_upstream_bytes;
    for(size_t i = 0; i < n && !result; i++) {
        char path[4200], why[512];
        uint64_t got = 0;
        snprintf(path, sizeof path, "%s/part-%05zu.parquet", dir, i);
        result = nekt_download(nk->env, dapi_jv_str(dapi_jv_index(urls, i), NULL), path,
                               cap - total, &got, why, sizeof why);
        total += got;
        if(result)
            dapi_buf_adds(details, why);
        if(result == DAPI_ERR_FORBIDDEN)
            *expired = 1;
        if(result == DAPI_ERR_TOO_LARGE)
            dapi_buf_addf(details, " (file %zu of %zu)", i + 1, n);
    }
    *nfiles = n;
    dapi_jv_free(rep.doc);
    return result;
}

static void remove_parts(const char *dir, size_t n)
{
    for(size_t i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/part-%05zu.parquet", dir, i);
        unlink(path);
    }
}

static void v2_run(void *arg, struct dapi_econn *conn)
{
    struct v2_job *j = arg;
    struct dapi_nekt *nk = j->nk;
    char dir[4096], result_path[4096];
    char *why = NULL;
    size_t nfiles = 0;
    uint64_t bytes = 0;
    enum dapi_err result = DAPI_ERR_UPSTREAM;
    struct dapi_buf details, sql;
    char start_why[512];
    dapi_buf_init(&details, 64 * 1024);
    dapi_buf_init(&sql, 1 << 20);
    if(!conn) { /* discarded at shutdown: stays queued, runs again on the next request */
        dapi_queries_drop(nk->env->queries, j->slug);
        goto out;
    }
    result = dapi_queries_start_run(nk->env->queries, j->slug, start_why, sizeof start_why);
    if(result == DAPI_ERR_NOT_FOUND || result == DAPI_ERR_INVALID)
        goto out; /* expired meanwhile, or finished by someone else */
    if(result) {  /* the attempt could not be recorded: running it would defeat the guard */
        dapi_queries_finish(nk->env->queries, j->slug, result, start_why, 0);
        goto out;
    }
    dapi_queries_dir(nk->env->queries, j->slug, dir, sizeof dir);
    int64_t t0 = nk->env->mono_ms();
    int expired = 0;
    for(int n = 1; n <= MAX_EXECUTIONS; n++) {
        remove_parts(dir, nfiles);
        dapi_buf_reset(&details);
        expired = 0;
        result = v2_execute(j, dir, &nfiles, &expired, &details);
        if(!expired || j->refused || atomic_load(nk->env->stopping) ||
           dapi_queries_cancelled(nk->env->queries, j->slug))
            break;
        dapi_warn("query %s: %s; executing again (%d of %d)", j->slug,
                  details.data ? details.data : "URL refused", n + 1, MAX_EXECUTIONS);
    }
    if(j->refused) /* its creation was answered with the failure: the query is gone */
        goto out;
    if(expired && result == DAPI_ERR_FORBIDDEN)
        result = DAPI_ERR_UPSTREAM; /* URLs kept expiring: not the client's key (a 403 to the
                                       sql-query call itself is, and stays FORBIDDEN) */
    if(!result) {
        dapi_queries_result_path(nk->env->queries, j->slug, result_path, sizeof result_path);
        if(nfiles == 0) {
            dapi_buf_adds(&sql, "SELECT * FROM (VALUES (NULL)) t(x) WHERE false");
        } else {
            dapi_buf_adds(&sql, "SELECT * FROM read_parquet([");
            for(size_t i = 0; i < nfiles; i++) {
                char part[4200];
                snprintf(part, sizeof part, "%s/part-%05zu.parquet", dir, i);
                if(i)
                    dapi_buf_adds(&sql, ", ");
                dapi_engine_sql_literal(&sql, part);
            }
            dapi_buf_adds(&sql, "])");
        }
        if(!sql.data)
            result = DAPI_ERR_NOMEM;
        else
            result = dapi_backend_write_result(nk->env, conn, sql.data, NULL, NULL, result_path,
                                               j->slug, 1, &bytes, &why);
        if(why)
            dapi_buf_adds(&details, why);
    }
    remove_parts(dir, nfiles);
    if(result && atomic_load(nk->env->stopping)) {
        dapi_info("query %s interrupted by shutdown; it runs again on its next request", j->slug);
        dapi_queries_drop(nk->env->queries, j->slug);
        goto out;
    }
    if(dapi_queries_cancelled(nk->env->queries, j->slug))
        dapi_info("query %s: run stopped (the query is cancelled)", j->slug);
    else if(result)
        dapi_info("query %s failed upstream (%s): %s", j->slug, dapi_err_message(result),
                  details.data ? details.data : "");
    else
        dapi_info("query %s done: %zu file(s) from Nekt, %llu bytes, %lld ms", j->slug, nfiles,
                  (unsigned long long)bytes, (long long)(nk->env->mono_ms() - t0));
    dapi_queries_finish(nk->env->queries, j->slug, result, result ? details.data : NULL, bytes);
out:
    if(j->key_check) /* no answer from Nekt was had (shutdown, the run not started) */
        creation_settle(j, DAPI_OK, NULL);
    free(why);
    dapi_buf_free(&details);
    dapi_buf_free(&sql);
    v2_job_free(j);
}

/* Queues slug's run; key_check: its creation waits for the run's first answer (already in
 * the creating list). If it cannot be queued the query fails as busy (its results request
 * then queues it again) and a waiting creation is answered with the slug. */
static void v2_submit(struct dapi_nekt *nk, const char *slug, const char *sql, const char *key,
                      const unsigned char *key_hash, int key_check)
{
    struct v2_job *j = calloc(1, sizeof *j);
    if(j && (j->sql = strdup(sql)) && (!key || (j->key = strdup(key)))) {
        j->nk = nk;
        j->key_check = key_check;
        snprintf(j->slug, sizeof j->slug, "%s", slug);
        if(!dapi_pool_submit_tagged(nk->env->run_pool, v2_run, j, 0,
                                    dapi_backend_key_tag(key_hash)))
            return;
    }
    if(j)
        v2_job_free(j);
    dapi_queries_finish(nk->env->queries, slug, DAPI_ERR_BUSY,
                        "the server could not queue the query", 0);
    struct creating *c = key_check ? creating_take(nk, slug) : NULL;
    if(c)
        creating_created(c);
}

/* A query left queued by a previous run, picked up by a results request with its key. */
static void v2_rerun(void *state, const char *slug, const char *key)
{
    struct dapi_nekt *nk = state;
    /* admitted before the restart: counts against its key again, whatever the limits (a
     * query queued again after a lack of space holds its slot already) */
    dapi_queries_hold(nk->env->queries, slug, NULL);
    char *sql = dapi_queries_sql(nk->env->queries, slug);
    if(!sql) {
        dapi_queries_finish(nk->env->queries, slug, DAPI_ERR_INTERNAL, "the query's SQL is lost",
                            0);
        return;
    }
    v2_submit(nk, slug, sql, key, NULL, 0);
    free(sql);
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
    const char *key = upstream_key(nk, j->key);
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

/* Decodes the downloaded page file into the kept page-N.bin (then removed). */
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
    enum dapi_err result = sql.data ? dapi_backend_write_result(p->nk->env, conn, sql.data, NULL,
                                                                NULL, out, NULL, 1, &bytes, &why)
                                    : DAPI_ERR_NOMEM;
    dapi_buf_free(&sql);
    if(why)
        dapi_buf_adds(details, why);
    free(why);
    unlink(file);
    return result;
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
    enum dapi_err result = fetch_page(p, upstream_key(nk, p->key), file, sizeof file, &details);
    if(!result)
        result = keep_page(p, conn, file, &details);
    if(!result) {
        int64_t rows = page_rows(nk, p->slug, p->page);
        if(rows >= 0 && rows < DAPI_PAGE_ROWS)
            ra_note_last(nk, p->slug, p->page);
    } else if(!atomic_load(nk->env->stopping)) {
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
    result = fetch_page(p, upstream_key(nk, p->key), file, sizeof file, &details);
    if(!result)
        result = keep_page(p, conn, file, &details);
    if(!result)
        read_ahead(nk, p->slug, p->page, p->key, p->kh);
    if(!result && serve_page_file(p))
        goto out;
    if(result && atomic_load(nk->env->stopping)) {
        dapi_reply_err(p->rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
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

/* ---- the vtable ---------------------------------------------------------------------- */

static void nekt_create(void *state, char *sql, const struct dapi_principal *who,
                        struct dapi_reply rp)
{
    struct dapi_nekt *nk = state;
    const char *key = forward_key(nk, who);
    const unsigned char *key_hash = who->owner;
    char slug[DAPI_SLUG_MAX], why[512];
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
        /* v2: answer with the slug now; the single execution runs in the background.
         * Result reuse (--reuse-max-age-nekt): the same SQL text, scope and upstream key
         * (its tenant decides the data) shares a stored result or the run in flight. */
        unsigned char uh[DAPI_KEY_HASH_LEN];
        upstream_hash(nk, key, uh);
        char uhex[2 * DAPI_KEY_HASH_LEN + 1], ident[DAPI_REUSE_HEX];
        for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
            snprintf(uhex + 2 * i, 3, "%02x", uh[i]);
        struct dapi_reuse ru = {ident, "",
                                dapi_backend_reuse_age(nk->env->cfg->reuse_max_age_nekt, who)};
        int reuse = nk->env->cfg->reuse_max_age_nekt > 0 &&
                    !dapi_backend_reuse_ident("nekt", &who->scope, uhex, sql, ident);
        enum dapi_reused reused = DAPI_REUSED_NONE;
        enum dapi_err result = dapi_queries_create_reusing(
            nk->env->queries, key_hash, &who->scope, sql, NULL, reuse ? &ru : NULL,
            nk->env->wall_s(), slug, &reused, why, sizeof why);
        if(result) {
            dapi_queries_unadmit(nk->env->queries, key_hash);
            dapi_backend_create_failure(rp, result, why);
        } else if(reused) {
            /* nothing to run: a stored result (no slot), or the run in flight (its slot
             * kept until that run ends) */
            if(reused == DAPI_REUSED_RUN)
                dapi_queries_hold(nk->env->queries, slug, key_hash);
            else
                dapi_queries_unadmit(nk->env->queries, key_hash);
            dapi_info("query %s reuses %s", slug,
                      reused == DAPI_REUSED_RUN ? "an identical query's run" : "a stored result");
            dapi_reply_created_reused(rp, slug, sql, 1);
        } else {
            dapi_queries_hold(nk->env->queries, slug, key_hash); /* until its run ends */
            dapi_queries_claim(nk->env->queries, slug);
            /* A key Nekt has not accepted lately: the answer waits (a bounded time) for the
             * run's first answer from Nekt, so that a key it refuses, or its failure, is told
             * now, as the reference does; the run goes on either way. */
            int64_t wait = nk->env->cfg->upstream_key_check_wait * 1000, now = nk->env->mono_ms();
            struct creating *c = NULL;
            if(wait > 0 && nk->timer_started && !key_known(nk, uh, now) &&
               (c = calloc(1, sizeof *c)) && (c->sql = strdup(sql))) {
                snprintf(c->slug, sizeof c->slug, "%s", slug);
                c->rp = rp;
                c->deadline_ms = now + wait;
                pthread_mutex_lock(&nk->mu);
                c->next = nk->creating;
                nk->creating = c;
                pthread_cond_signal(&nk->creating_cv);
                pthread_mutex_unlock(&nk->mu);
                v2_submit(nk, slug, sql, key, key_hash, 1);
            } else {
                if(c) /* no memory to wait: answer at once */
                    free(c);
                v2_submit(nk, slug, sql, key, key_hash, 0);
                dapi_reply_created(rp, slug, sql);
            }
        }
        free(sql);
        return;
    }
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

static void nekt_results(void *state, const char *slug, uint64_t page, const char *page_text,
                         const struct dapi_principal *who, struct dapi_reply rp)
{
    struct dapi_nekt *nk = state;
    const char *key = forward_key(nk, who);
    const unsigned char *key_hash = who->owner;
    if(!nk->v1) {
        dapi_backend_answer_stored(nk->env, slug, page, page_text, key_hash, key, v2_rerun, nk,
                                   rp);
        return;
    }
    struct dapi_qview v;
    if(dapi_queries_get(nk->env->queries, slug, key_hash, nk->env->wall_s(), &v)) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR, .message = "Query not found"};
        dapi_reply(rp, DAPI_ERR_NOT_FOUND, &o);
        return;
    }
    int cancelled = v.state == DAPI_Q_CANCELLED;
    dapi_queries_release(nk->env->queries, &v);
    if(cancelled) { /* no page of it is fetched any more */
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = "Query cancelled",
                                 .status = 410,
                                 .retry_after = -1};
        dapi_reply(rp, DAPI_ERR_NOT_FOUND, &o);
        return;
    }
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
    if(nk->env->cfg->nekt_api_key && dapi_queries_claim(nk->env->queries, slug)) {
        dapi_queries_hold(nk->env->queries, slug, NULL); /* admitted before the restart */
        v2_submit(nk, slug, sql, NULL, NULL, 0);
    }
    /* forwarding client keys: run again on the next results request, with that key */
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
    if(!nk->v1 && env->cfg->upstream_key_check_wait > 0) {
        if(!(nk->keys_ok = calloc(KEYS_OK_MAX, sizeof *nk->keys_ok)) ||
           pthread_create(&nk->timer, NULL, creating_timer, nk)) {
            snprintf(err, errlen, "cannot start the Nekt backend's key check");
            free(nk->keys_ok);
            pthread_cond_destroy(&nk->creating_cv);
            pthread_cond_destroy(&nk->page_done);
            pthread_mutex_destroy(&nk->mu);
            free(nk);
            return -1;
        }
        nk->timer_started = 1;
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
    if(nk->timer_started) { /* it answers every creation still waiting before it ends */
        pthread_mutex_lock(&nk->mu);
        nk->timer_stop = 1;
        pthread_cond_signal(&nk->creating_cv);
        pthread_mutex_unlock(&nk->mu);
        pthread_join(nk->timer, NULL);
    }
    nekt_reach_stop(nk->reach);
    free(nk->keys_ok);
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
