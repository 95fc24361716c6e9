/* The local backend: queries run on the embedded DuckDB engine over --data-dir. Creating a
 * query checks the SQL on the check pool (so errors are a 400 at creation), then the run
 * pool materialises it once; pages are served from the materialised result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/respond.h"
#include "app/app.h"
#include "backend/backend.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"

void dapi_backend_create_failure(struct dapi_req *r, enum dapi_err err, const char *why)
{
    if(err == DAPI_ERR_BUSY) /* store full, or no space on the state disk: temporary */
        dapi_respond_error_h(r, 503, dapi_err_message(err),
                             why && *why ? why : "the result store is full (--max-state-bytes)",
                             "Retry-After", "30"); /* longer than the table's 5 s */
    else
        dapi_respond_err(r, err, why && *why ? why : NULL);
}

void dapi_backend_refuse_admission(struct dapi_app *app, struct dapi_req *r, enum dapi_err err,
                                   const unsigned char *key_hash)
{
    char d[256];
    if(err == DAPI_ERR_RATE) {
        snprintf(d, sizeof d,
                 "this API key already has %llu queries being checked, queued or running; the "
                 "limit is %lld (--max-queries-per-key): retry when one of them has finished",
                 (unsigned long long)dapi_queries_active(app->queries, key_hash),
                 (long long)app->cfg->max_queries_per_key);
        dapi_respond_error_h(r, 429, "Too many queries for this API key, retry later", d,
                             "Retry-After", "5");
    } else if(err == DAPI_ERR_BUSY) {
        dapi_respond_err(r, err, "too many queries waiting to run (--max-queued-queries)");
    } else {
        dapi_respond_err(r, err, NULL);
    }
}

/* DuckDB's own writes (spilling to <state-dir>/tmp) that found the disk full: temporary, like
 * the result writer's. Its message holds the temporary file's path, so it is replaced. */
static int engine_out_of_space(const char *msg)
{
    return msg && (strstr(msg, "No space left on device") || strstr(msg, "Disk quota exceeded"));
}

enum dapi_err dapi_backend_write_result(struct dapi_app *app, struct dapi_econn *conn,
                                        const char *sql, const char *path, int from_upstream,
                                        uint64_t *bytes, char **details)
{
    struct dapi_result_writer *w = NULL;
    char *msg = NULL;
    uint64_t rows = 0, pages = 0;
    enum dapi_err result;
    struct dapi_result_limits limits = {(uint64_t)app->cfg->max_result_rows,
                                        (uint64_t)app->cfg->max_result_bytes, NULL};
    /* A result one key may not store whole is stopped as soon as it is too large; the
     * registry checks the exact file size when it is recorded. */
    if(app->cfg->max_state_bytes_per_key < app->cfg->max_result_bytes) {
        limits.max_bytes = (uint64_t)app->cfg->max_state_bytes_per_key;
        limits.bytes_setting = "the most one API key may store, --max-state-bytes-per-key";
    }
    struct dapi_buf why;
    dapi_buf_init(&why, 64 * 1024);
    *details = NULL;
    *bytes = 0;
    if(!(result = dapi_result_writer_open(&w, path, &limits))) {
        /* SQL over downloaded files is dapi's own; a user's is held to the sandbox */
        result = (from_upstream ? dapi_engine_run_trusted : dapi_engine_run)(
            conn, sql, dapi_clock_mono_ms() + app->cfg->query_timeout * 1000, &dapi_result_sink,
            w, &msg);
        if(!result)
            result = dapi_result_writer_finish(w, &rows, &pages, bytes);
    }
    if(result == DAPI_ERR_SQL && engine_out_of_space(msg)) {
        result = DAPI_ERR_BUSY;
        free(msg);
        msg = strdup("no space left on the state disk (--state-dir) for the query's temporary "
                     "data");
    }
    if(result == DAPI_ERR_TIMEOUT)
        dapi_buf_addf(&why, "the query ran longer than %lld s (--query-timeout)",
                      (long long)app->cfg->query_timeout);
    else if(result == DAPI_ERR_SQL && from_upstream)
        dapi_buf_addf(&why, "the result file from Nekt is not valid Parquet: %s",
                      msg ? msg : "unreadable");
    else if(result && msg)
        dapi_buf_adds(&why, msg);
    else if(result && w && dapi_result_writer_error(w))
        dapi_buf_adds(&why, dapi_result_writer_error(w));
    else if(result == DAPI_ERR_BUSY && !w) /* the writer could not even start */
        dapi_buf_adds(&why, "no space left on the state disk (--state-dir) for the result");
    else if(result)
        dapi_buf_adds(&why, dapi_err_message(result));
    if(result == DAPI_ERR_SQL && from_upstream)
        result = DAPI_ERR_UPSTREAM;
    /* A reason longer than why's cap fails the buffer (sticky): the code's message then. */
    if(result && !(*details = dapi_buf_take(&why, NULL)))
        *details = strdup(dapi_err_message(result));
    dapi_buf_free(&why);
    dapi_result_writer_free(w);
    free(msg);
    return result;
}

void dapi_backend_materialise(struct dapi_app *app, struct dapi_econn *conn, const char *slug,
                              const char *sql)
{
    char path[4096], *details = NULL, why[512];
    uint64_t bytes = 0;
    enum dapi_err result = dapi_queries_start_run(app->queries, slug, why, sizeof why);
    if(result == DAPI_ERR_NOT_FOUND || result == DAPI_ERR_INVALID)
        return; /* expired meanwhile, or finished by someone else */
    if(result) { /* the attempt could not be recorded: running it would defeat the guard */
        dapi_warn("query %s not run: %s", slug, why);
        dapi_queries_finish(app->queries, slug, result, why, 0);
        return;
    }
    dapi_queries_result_path(app->queries, slug, path, sizeof path);
    int64_t t0 = dapi_clock_mono_ms();
    result = dapi_backend_write_result(app, conn, sql, path, 0, &bytes, &details);
    if(result && atomic_load(&app->stopping)) {
        dapi_info("query %s interrupted by shutdown; it will run again after a restart", slug);
        dapi_queries_drop(app->queries, slug);
    } else {
        if(result)
            dapi_info("query %s failed (%s)", slug, dapi_err_message(result));
        else
            dapi_info("query %s done: %llu bytes, %lld ms", slug, (unsigned long long)bytes,
                      (long long)(dapi_clock_mono_ms() - t0));
        dapi_queries_finish(app->queries, slug, result, details, bytes);
    }
    free(details);
}

/* ---- running queries --------------------------------------------------------------- */

struct run_job {
    struct dapi_app *app;
    char slug[DAPI_SLUG_MAX];
    char *sql;
};

static void run_query(void *arg, struct dapi_econn *conn)
{
    struct run_job *j = arg;
    /* conn == NULL: discarded at shutdown; it stays queued on disk and runs after a restart */
    if(conn)
        dapi_backend_materialise(j->app, conn, j->slug, j->sql);
    else
        dapi_queries_drop(j->app->queries, j->slug);
    free(j->sql);
    free(j);
}

uint64_t dapi_backend_key_tag(const unsigned char *key_hash)
{
    uint64_t tag = 0;
    if(key_hash)
        memcpy(&tag, key_hash, sizeof tag);
    return tag;
}

static enum dapi_err submit_run(struct dapi_app *app, const char *slug, const char *sql,
                                const unsigned char *key_hash)
{
    uint64_t tag = dapi_backend_key_tag(key_hash);
    struct run_job *j = calloc(1, sizeof *j);
    if(!j || !(j->sql = strdup(sql))) {
        free(j);
        return DAPI_ERR_NOMEM;
    }
    j->app = app;
    snprintf(j->slug, sizeof j->slug, "%s", slug);
    enum dapi_err result = dapi_pool_submit_tagged(app->run_pool, run_query, j, 0, tag);
    if(result) {
        free(j->sql);
        free(j);
    }
    return result;
}

static void local_unfinished(struct dapi_app *app, const char *slug, const char *sql)
{
    /* Admitted before the restart: it counts against its key again, whatever the limits. */
    dapi_queries_hold(app->queries, slug, NULL);
    if(submit_run(app, slug, sql, NULL)) {
        dapi_error("query %s could not be queued again", slug);
        dapi_queries_drop(app->queries, slug);
    }
}

/* A query that failed for lack of space, queued again by a results request. */
static void local_retry(struct dapi_app *app, const char *slug)
{
    char *sql = dapi_queries_sql(app->queries, slug);
    if(!sql || submit_run(app, slug, sql, NULL))
        dapi_queries_finish(app->queries, slug, DAPI_ERR_BUSY,
                            "the server could not queue the query", 0);
    free(sql);
}

/* ---- POST /api/queries ------------------------------------------------------------- */

struct create_job {
    struct dapi_app *app;
    struct dapi_req *req;
    char *sql;
    unsigned char key[DAPI_KEY_HASH_LEN];
};

static void check_query(void *arg, struct dapi_econn *conn)
{
    struct create_job *j = arg;
    struct dapi_app *app = j->app;
    char *msg = NULL, slug[DAPI_SLUG_MAX], why[512] = "";
    enum dapi_err result;
    int reserved = 1; /* the admission slot reserved for this key (dapi_api_create_query) */
    if(!conn) {
        dapi_respond_err(j->req, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    result = dapi_engine_check(conn, j->sql, &msg);
    if(result == DAPI_ERR_SQL) {
        dapi_respond_err(j->req, DAPI_ERR_SQL, msg);
        goto out;
    }
    if(result && atomic_load(&app->stopping)) {
        dapi_respond_err(j->req, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    if(result) /* not the SQL's fault: the engine could not check it now */
        snprintf(why, sizeof why, "%s", msg ? msg : "the SQL could not be checked");
    if(!result)
        result = dapi_queries_create(app->queries, j->key, j->sql, NULL, dapi_clock_wall_s(),
                                     slug, why, sizeof why);
    if(!result) {
        /* the slot is the query's now, given back when it finishes */
        dapi_queries_hold(app->queries, slug, j->key);
        reserved = 0;
        if((result = submit_run(app, slug, j->sql, j->key)))
            dapi_queries_finish(app->queries, slug, result,
                                "the server could not queue the query", 0);
    }
    if(result) {
        dapi_backend_create_failure(j->req, result, why);
        goto out;
    }
    dapi_respond_created(j->req, slug, j->sql);
out:
    if(reserved)
        dapi_queries_unadmit(app->queries, j->key);
    free(msg);
    free(j->sql);
    free(j);
}

static void local_create(struct dapi_app *app, struct dapi_req *r, char *sql, const char *key,
                         const unsigned char *key_hash)
{
    struct create_job *j = calloc(1, sizeof *j);
    if(!j) {
        dapi_queries_unadmit(app->queries, key_hash);
        free(sql);
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    j->app = app;
    j->req = r;
    j->sql = sql;
    memcpy(j->key, key_hash, DAPI_KEY_HASH_LEN);
    dapi_req_defer(r);
    /* No cap here: admission (a slot per query being checked, queued or running) bounds the
     * queue already, and a second, looser bound would make the limits inexact. */
    if(dapi_pool_submit(app->check_pool, check_query, j, 0)) {
        dapi_queries_unadmit(app->queries, key_hash);
        free(j->sql);
        free(j);
        dapi_respond_err(r, DAPI_ERR_BUSY, "too many queries waiting to be checked");
    }
}

/* ---- GET /api/queries/{slug}/results ----------------------------------------------- */

struct wait_ctx {
    struct dapi_app *app;
    struct dapi_req *req;
    char slug[DAPI_SLUG_MAX + 1];
    unsigned char key[DAPI_KEY_HASH_LEN];
    char *client_key; /* for rerun (Nekt forwarding); owned */
    void (*rerun)(struct dapi_app *, const char *, const char *);
    char page[64];
    uint64_t page_no;
};

static void wait_free(struct wait_ctx *c)
{
    free(c->client_key);
    free(c);
}

static void answer(struct wait_ctx *c, int may_wait);

static void on_wait(void *arg, int timed_out)
{
    struct wait_ctx *c = arg;
    if(timed_out) {
        if(atomic_load(&c->app->stopping)) {
            dapi_respond_err(c->req, DAPI_ERR_SHUTDOWN,
                             "the query will run again after the restart");
        } else {
            char d[128];
            snprintf(d, sizeof d, "the query is still running after %lld s (--result-wait)",
                     (long long)c->app->cfg->result_wait);
            dapi_respond_exec_error(c->req, 504, d, c->page, c->slug);
        }
        wait_free(c);
        return;
    }
    answer(c, 0);
}

/* Answers from the query's current state; frees c unless it now waits. */
static void answer(struct wait_ctx *c, int may_wait)
{
    struct dapi_app *app = c->app;
    struct dapi_qview v;
    if(dapi_queries_get(app->queries, c->slug, c->key, dapi_clock_wall_s(), &v)) {
        dapi_respond_error(c->req, 404, "Query not found", NULL);
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_QUEUED || v.state == DAPI_Q_RUNNING) {
        int orphan = v.state == DAPI_Q_QUEUED && c->rerun &&
                     dapi_queries_claim(app->queries, c->slug);
        dapi_queries_release(app->queries, &v);
        int64_t deadline = dapi_clock_mono_ms() + app->cfg->result_wait * 1000;
        if(may_wait && dapi_queries_wait(app->queries, c->slug, deadline, on_wait, c) == 0) {
            if(orphan)
                c->rerun(app, c->slug, c->client_key);
            return;
        }
        if(may_wait) { /* finished in between */
            answer(c, 0);
            return;
        }
        dapi_respond_error(c->req, 500, "Internal server error", "query state changed");
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_FAILED && v.error == DAPI_ERR_BUSY) {
        /* It failed for want of room (no space on the state disk, or no queue place), not
         * because of the query: the client's retry loop should get its result once there is
         * room. So: 503 + Retry-After (not the execution-failure shape, which clients take
         * as final), and the query is queued to run again — once per such answer, so an
         * unchanged full disk costs one run per Retry-After, not a busy loop. */
        char d[1400];
        enum dapi_err again = dapi_queries_retry(app->queries, c->slug);
        if(again == DAPI_OK) {
            if(!c->rerun)
                local_retry(app, c->slug);
            else if(dapi_queries_claim(app->queries, c->slug))
                c->rerun(app, c->slug, c->client_key);
        }
        snprintf(d, sizeof d, "%s; %s", v.message[0] ? v.message : "the server was busy",
                 again == DAPI_OK ? "the query is queued to run again: retry this request"
                                  : "retry this request to run the query again");
        dapi_queries_release(app->queries, &v);
        if(again == DAPI_ERR_RATE)
            dapi_backend_refuse_admission(app, c->req, again, c->key);
        else
            dapi_respond_error_h(c->req, 503, dapi_err_message(DAPI_ERR_BUSY), d, "Retry-After",
                                 "30"); /* a rerun takes longer than the table's 5 s */
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_FAILED) {
        dapi_respond_exec_error_code(c->req, dapi_err_exec_status(v.error), v.message,
                                     c->page, c->slug, v.error);
        dapi_queries_release(app->queries, &v);
        wait_free(c);
        return;
    }
    const char *rows;
    size_t len;
    dapi_result_page(v.result, c->page_no, &rows, &len);
    dapi_respond_page(c->req, c->slug, c->page, rows, len);
    dapi_queries_release(app->queries, &v);
    wait_free(c);
}

void dapi_backend_answer_stored(struct dapi_app *app, struct dapi_req *r, const char *slug,
                                uint64_t page, const char *page_text,
                                const unsigned char *key_hash, const char *key,
                                void (*rerun)(struct dapi_app *app, const char *slug,
                                              const char *key))
{
    struct wait_ctx *c = calloc(1, sizeof *c);
    if(!c || (key && !(c->client_key = strdup(key)))) {
        free(c);
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    c->app = app;
    c->req = r;
    c->rerun = rerun;
    snprintf(c->slug, sizeof c->slug, "%s", slug);
    memcpy(c->key, key_hash, DAPI_KEY_HASH_LEN);
    snprintf(c->page, sizeof c->page, "%s", page_text);
    c->page_no = page;
    dapi_req_defer(r); /* may wait for the query; answered by whichever thread finishes it */
    answer(c, 1);
}

static void local_results(struct dapi_app *app, struct dapi_req *r, const char *slug,
                          uint64_t page, const char *page_text, const char *key,
                          const unsigned char *key_hash)
{
    dapi_backend_answer_stored(app, r, slug, page, page_text, key_hash, NULL, NULL);
}

const struct dapi_backend_ops dapi_backend_local = {
    .name = "local",
    .create = local_create,
    .results = local_results,
    .unfinished = local_unfinished,
};
