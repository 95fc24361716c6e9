/* The Nekt backend's v2 API (sql-query): the query is executed once, right after it is
 * created; every presigned Parquet file is downloaded (size-capped, in order) next to the
 * query and turned into the same paged result file as a local query — page N never calls
 * Nekt. The creation waits (bounded) for the run's first answer from Nekt: the key check.
 * The vtable and what both APIs share are in nekt.c (nekt_int.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#define KEYS_OK_MAX 1024              /* upstream keys remembered as accepted by Nekt */
#define KEY_OK_TTL_MS (5 * 60 * 1000) /* for this long after Nekt last accepted them */

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

/* ---- v2: the key check at creation ---------------------------------------------------- */

static void upstream_hash(struct dapi_nekt *nk, const char *client_key,
                          unsigned char out[DAPI_KEY_HASH_LEN])
{
    const char *k = nekt_upstream_key(nk, client_key);
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
        struct timespec until = dapi_clock_after(0, next - now);
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
    result = nekt_call(nk->env, "POST", "/api/v1/sql-query/", body.data,
                       nekt_upstream_key(nk, j->key), 1, &rep);
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
                                               j->slug, 1, NULL, &bytes, &why);
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

/* ---- v2: start and stop the key check ----------------------------------------------- */

int nekt_v2_start(struct dapi_nekt *nk)
{
    if(!(nk->keys_ok = calloc(KEYS_OK_MAX, sizeof *nk->keys_ok)) ||
       pthread_create(&nk->timer, NULL, creating_timer, nk)) {
        free(nk->keys_ok);
        nk->keys_ok = NULL;
        return -1;
    }
    nk->timer_started = 1;
    return 0;
}

void nekt_v2_stop(struct dapi_nekt *nk)
{
    if(nk->timer_started) { /* it answers every creation still waiting before it ends */
        pthread_mutex_lock(&nk->mu);
        nk->timer_stop = 1;
        pthread_cond_signal(&nk->creating_cv);
        pthread_mutex_unlock(&nk->mu);
        pthread_join(nk->timer, NULL);
    }
    free(nk->keys_ok);
}

/* ---- v2: the backend's operations ---------------------------------------------------- */

void nekt_v2_create(struct dapi_nekt *nk, char *sql, const struct dapi_principal *who,
                    const char *key, struct dapi_reply rp)
{
    const unsigned char *key_hash = who->owner;
    char slug[DAPI_SLUG_MAX], why[512];
    /* v2: answer with the slug now; the single execution runs in the background.
     * Result reuse (--reuse-max-age-nekt): the same SQL text, scope, upstream key (its
     * tenant decides the data) and owner (any owner with --reuse-across-keys) shares a
     * stored result or the run in flight. */
    unsigned char uh[DAPI_KEY_HASH_LEN];
    upstream_hash(nk, key, uh);
    char uhex[2 * DAPI_KEY_HASH_LEN + 1], ident[DAPI_REUSE_HEX];
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        snprintf(uhex + 2 * i, 3, "%02x", uh[i]);
    struct dapi_reuse ru = {ident, "",
                            dapi_backend_reuse_age(nk->env->cfg->reuse_max_age_nekt, who)};
    int reuse = nk->env->cfg->reuse_max_age_nekt > 0 &&
                !dapi_backend_reuse_ident("nekt", &who->scope, uhex, sql,
                                          nk->env->cfg->reuse_across_keys ? NULL : key_hash,
                                          ident);
    enum dapi_reused reused = DAPI_REUSED_NONE;
    enum dapi_err result = dapi_queries_create_reusing(
        nk->env->queries, key_hash, &who->scope, sql, NULL, reuse ? &ru : NULL, nk->env->wall_s(),
        slug, &reused, why, sizeof why);
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
}

void nekt_v2_results(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *page_text,
                     const char *key, const unsigned char *key_hash, struct dapi_reply rp)
{
    dapi_backend_answer_stored(nk->env, slug, page, page_text, key_hash, key, v2_rerun, nk, rp);
}

void nekt_v2_resume(struct dapi_nekt *nk, const char *slug, const char *sql)
{
    if(nk->env->cfg->nekt_api_key && dapi_queries_claim(nk->env->queries, slug)) {
        dapi_queries_hold(nk->env->queries, slug, NULL); /* admitted before the restart */
        v2_submit(nk, slug, sql, NULL, NULL, 0);
    }
    /* forwarding client keys: run again on the next results request, with that key */
}
