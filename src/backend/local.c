/* The local backend: queries run on the embedded DuckDB engine over --data-dir. Creating a
 * query checks the SQL on the check pool (so errors are a 400 at creation), then the run
 * pool materialises it once (common.c); pages are served from the materialised result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/engine.h"
#include "store/queries.h"

struct local {
    const struct dapi_backend_env *env;
};

static int local_start(const struct dapi_backend_env *env, void **state, char *err, size_t n)
{
    struct local *l = calloc(1, sizeof *l);
    if(!l) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    l->env = env;
    *state = l;
    return 0;
}

static void local_stop(void *state)
{
    free(state);
}

static void local_unfinished(void *state, const char *slug, const char *sql)
{
    const struct dapi_backend_env *env = ((struct local *)state)->env;
    /* Admitted before the restart: it counts against its key again, whatever the limits. */
    dapi_queries_hold(env->queries, slug, NULL);
    if(dapi_backend_submit_run(env, slug, sql, NULL)) {
        dapi_error("query %s could not be queued again", slug);
        dapi_queries_drop(env->queries, slug);
    }
}

/* ---- POST /api/queries ------------------------------------------------------------- */

struct create_job {
    const struct dapi_backend_env *env;
    struct dapi_reply rp;
    char *sql;
    char *params; /* the values of its $parameters (canonical JSON) or NULL */
    unsigned char key[DAPI_KEY_HASH_LEN];
    struct dapi_scope scope; /* the layers the key may read */
    int64_t max_age;         /* result reuse: 0 = do not reuse (still recorded when on) */
    int64_t submitted_us;    /* when it was queued for a check worker (Server-Timing) */
    int coming;              /* announced to the creation log, not arrived yet (job_arrived) */
};

/* The job's creation has taken its ticket in the creation log, or will take none: a round
 * need no longer wait for it (dapi_queries_expect). Once per job; later calls do nothing. */
static void job_arrived(struct create_job *j)
{
    if(j->coming) {
        j->coming = 0;
        dapi_queries_expect(j->env->queries, 0);
    }
}

/* A creation waiting for its record to be durable before it is answered. */
struct answer {
    const struct dapi_backend_env *env;
    struct dapi_reply rp;
    char slug[DAPI_SLUG_MAX];
    char *sql;
    int reused;
    int64_t queue_us, check_us; /* Server-Timing */
};

static void answer_durable(void *arg, int err)
{
    struct answer *a = arg;
    if(err) {
        /* Not durable: not promised. Nobody knows the slug yet, so it goes. */
        dapi_error("query %s: its creation could not be made durable: %s", a->slug, strerror(err));
        dapi_queries_remove(a->env->queries, a->slug);
        dapi_backend_create_failure(a->rp, DAPI_ERR_IO,
                                    "cannot write to the state dir (--state-dir) to record the "
                                    "query");
    } else {
        dapi_reply_created_timed(a->rp, a->slug, a->sql, a->reused, a->queue_us, a->check_us);
    }
    free(a->sql);
    free(a);
}

/* Answers the creation once its record is durable (ticket's group commit): meanwhile this
 * check thread goes on with the next creation, and its run may already start. */
static void answer_when_durable(const struct create_job *j, const char *slug, int reused,
                                uint64_t ticket, int64_t queue_us, int64_t check_us)
{
    struct answer *a = calloc(1, sizeof *a);
    if(!a || !(a->sql = strdup(j->sql))) {
        free(a);
        dapi_queries_remove(j->env->queries, slug);
        dapi_reply_err(j->rp, DAPI_ERR_NOMEM, NULL);
        return;
    }
    a->env = j->env;
    a->rp = j->rp;
    a->reused = reused;
    a->queue_us = queue_us;
    a->check_us = check_us;
    snprintf(a->slug, sizeof a->slug, "%s", slug);
    dapi_queries_when_durable(j->env->queries, ticket, answer_durable, a);
}

static void check_query(void *arg, struct dapi_econn *conn)
{
    struct create_job *j = arg;
    const struct dapi_backend_env *env = j->env;
    char *msg = NULL, slug[DAPI_SLUG_MAX], why[512] = "";
    enum dapi_err result;
    /* the admission slot reserved for this key (dapi_api_create_query): every answer below
     * gives it back first, unless the query took it */
    struct dapi_slot slot;
    struct dapi_reply rp = dapi_slot_reply(&slot, j->rp, env->queries, j->key);
    if(!conn) {
        dapi_reply_err(rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    int64_t started_us = dapi_clock_mono_us();
    result = dapi_engine_check_bound(conn, j->sql, j->params, &j->scope, &msg);
    int64_t checked_us = dapi_clock_mono_us();
    if(result == DAPI_ERR_SQL || result == DAPI_ERR_FORBIDDEN ||
       result == DAPI_ERR_PARAM) { /* 400, or 403 (scope) */
        dapi_reply_err(rp, result, msg);
        goto out;
    }
    if(result && atomic_load(env->stopping)) {
        dapi_reply_err(rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    if(result) /* not the SQL's fault: the engine could not check it now */
        snprintf(why, sizeof why, "%s", msg ? msg : "the SQL could not be checked");
    char ident[DAPI_REUSE_HEX], fp[DAPI_REUSE_HEX];
    struct dapi_reuse ru = {ident, fp, j->max_age};
    enum dapi_reused reused = DAPI_REUSED_NONE;
    const char *tree = dapi_econn_parse_tree(conn);
    /* Reuse (on unless --reuse-max-age is 0): the identity of the query as DuckDB parsed it
     * for this owner (any owner with --reuse-across-keys: one key could then tell that
     * another ran it), the lake files its scope may read as they are now (before it runs). */
    int reuse = !result && env->cfg->reuse_max_age > 0 &&
                !dapi_backend_reuse_ident_bound(
                    "local", &j->scope, NULL, tree ? tree : j->sql, j->params,
                    env->cfg->reuse_across_keys ? NULL : j->key, ident);
    if(reuse && dapi_backend_lake_fingerprint(env->cfg->data_dir, &j->scope,
                                              dapi_engine_lake_generation(env->engine), fp))
        reuse = 0;
    uint64_t ticket = 0;
    if(!result)
        result = dapi_queries_create_deferred(env->queries, j->key, &j->scope, j->sql, NULL,
                                              j->params, reuse ? &ru : NULL, env->wall_s(), slug,
                                              &reused, why, sizeof why, &ticket);
    job_arrived(j);
    if(!result && reused) {
        /* Nothing to run: it shares a finished result (no slot kept), or an identical
         * query's run (its slot kept until that run ends: each creation counts). */
        if(reused == DAPI_REUSED_RUN) {
            dapi_queries_hold(env->queries, slug, j->key);
            dapi_slot_keep(&slot);
        }
        dapi_info("query %s reuses %s", slug,
                  reused == DAPI_REUSED_RUN ? "an identical query's run" : "a stored result");
        /* given back before the answer (unless the shared run keeps it), which comes once the
         * creation is durable, after this job */
        dapi_slot_give_back(&slot);
        answer_when_durable(j, slug, 1, ticket, started_us - j->submitted_us,
                            checked_us - started_us);
        goto out;
    }
    if(!result) {
        /* the slot is the query's now, given back when it finishes */
        dapi_queries_hold(env->queries, slug, j->key);
        dapi_slot_keep(&slot);
        if((result = dapi_backend_submit_run(env, slug, j->sql, j->key)))
            dapi_queries_finish(env->queries, slug, result, "the server could not queue the query",
                                0);
    }
    if(result) {
        dapi_backend_create_failure(rp, result, why);
        goto out;
    }
    answer_when_durable(j, slug, 0, ticket, started_us - j->submitted_us,
                        checked_us - started_us); /* (the slot is the query's: kept) */
out:
    job_arrived(j);
    dapi_slot_give_back(&slot); /* (answered: given back already) */
    free(msg);
    free(j->sql);
    free(j->params);
    free(j);
}

static void local_create_bound(void *state, char *sql, char *params,
                               const struct dapi_principal *who, struct dapi_reply rp)
{
    const unsigned char *key_hash = who->owner;
    const struct dapi_backend_env *env = ((struct local *)state)->env;
    struct create_job *j = calloc(1, sizeof *j);
    if(!j) {
        dapi_queries_unadmit(env->queries, key_hash);
        free(sql);
        free(params);
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        return;
    }
    j->env = env;
    j->rp = rp;
    j->sql = sql;
    j->params = params;
    memcpy(j->key, key_hash, DAPI_KEY_HASH_LEN);
    j->scope = who->scope;
    j->max_age = dapi_backend_reuse_age(env->cfg->reuse_max_age, who);
    j->submitted_us = dapi_clock_mono_us();
    /* its record is on its way: the creation log's next round may wait for it to come */
    j->coming = 1;
    dapi_queries_expect(env->queries, 1);
    /* tagged like runs: one key's burst of checks waits behind other keys' */
    if(dapi_backend_queue(env, env->check_pool, check_query, j, key_hash, rp,
                          "too many queries waiting to be checked")) {
        job_arrived(j);
        free(j->sql);
        free(j->params);
        free(j);
    }
}

static void local_create(void *state, char *sql, const struct dapi_principal *who,
                         struct dapi_reply rp)
{
    local_create_bound(state, sql, NULL, who, rp);
}

/* ---- GET /api/queries/{slug}/results ----------------------------------------------- */

static void local_results(void *state, const char *slug, uint64_t page, const char *page_text,
                          const struct dapi_principal *who, struct dapi_reply rp)
{
    const struct dapi_backend_env *env = ((struct local *)state)->env;
    dapi_backend_answer_stored(env, slug, page, page_text, who->owner, NULL, NULL, NULL, rp);
}

/* ---- schema discovery ---------------------------------------------------------------- */

static void local_layers(void *state, const struct dapi_principal *who, struct dapi_reply rp)
{
    dapi_backend_discover_layers(((struct local *)state)->env, who, rp);
}

static void local_describe(void *state, const char *layer, const char *table,
                           const struct dapi_principal *who, struct dapi_reply rp)
{
    dapi_backend_discover_table(((struct local *)state)->env, layer, table, who, rp);
}

static void local_stored(void *state, const char *slug, int live, const struct dapi_principal *who,
                         struct dapi_reply rp)
{
    local_results(state, slug, live ? DAPI_PAGE_LIVE : DAPI_PAGE_WHOLE, "1", who, rp);
}

const struct dapi_backend_ops dapi_backend_local_ops = {
    .stored = local_stored,
    .start = local_start,
    .stop = local_stop,
    .create = local_create,
    .create_bound = local_create_bound,
    .results = local_results,
    .unfinished = local_unfinished,
    .layers = local_layers,
    .describe = local_describe,
};
