/* GET /api/queries/{slug}/export?format=csv|tsv|ndjson|json: the whole result in one
 * streamed answer (chunked transfer), docs/api.md "Export".
 *
 * The backend answers as a results request would (--result-wait, then 504; a failed query
 * answers its failure), but as soon as a running query's run has published page 1 (not
 * only once it is done): the export then streams the pages already published, waits for the
 * next ones while the run goes on, and reads what is left from the finished result when it
 * ends. A run that fails, is cancelled or stops after the headers were sent cuts the body
 * (no last chunk: the client sees an incomplete transfer, never a short body taken for
 * whole). Parquet waits for the finished result (DuckDB converts it whole).
 *
 * The export takes an admission slot of its key (so one key's exports cannot hold every
 * worker) and a run-pool worker reads the result page by page, converts each
 * (src/base/rows.h) and writes it into the answer's stream (src/http/http.h): the writer
 * waits while the client is slow, so memory stays at about a page and the stream's buffer
 * whatever the result's size, and stops at its next write when the client leaves. The event
 * thread only hands buffered bytes to the socket. A worker waits for a run only once that
 * run has published a page (it runs already, on a worker of its own): exports cannot hold
 * every worker waiting for runs that have none. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "backend/backend.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/rows.h"
#include "pool/pool.h"
#include "store/export.h"
#include "store/queries.h"
#include "store/result.h"

static const struct {
    const char *name;
    enum dapi_rows_format fmt;
    const char *content_type;
} formats[] = {
    {"csv", DAPI_ROWS_CSV, "text/csv; charset=utf-8"},
    {"tsv", DAPI_ROWS_TSV, "text/tab-separated-values; charset=utf-8"},
    {"ndjson", DAPI_ROWS_NDJSON, "application/x-ndjson"},
    {"json", DAPI_ROWS_JSON, "application/json"},
    {"parquet", DAPI_ROWS_NDJSON, "application/vnd.apache.parquet"}, /* (converted) */
};
#define PARQUET 4
#define NFORMATS (sizeof formats / sizeof formats[0])

/* Bytes converted before they are handed to the stream (one write per batch). */
#define BATCH (64 * 1024)
/* While streaming a running query: how long one wait for more pages lasts, and how often
 * the registry is asked whether the query was cancelled or failed meanwhile (a run shared
 * with another query goes on when this one is cancelled). */
#define LIVE_WAIT_MS 200
#define LIVE_CHECK_MS 200

struct export_job {
    struct dapi_req *r;
    struct dapi_app *app;
    size_t f; /* index into formats */
    int head;
    int whole; /* asked for the finished result only (parquet, or no slot to follow a run) */
    struct dapi_principal who; /* (its strings are the request's: valid until answered) */
    char slug[DAPI_SLUG_MAX + 1];
    unsigned char key[DAPI_KEY_HASH_LEN];
    struct dapi_result *result;    /* a reference, once the query is done */
    struct dapi_result_live *live; /* a reference while it runs (result NULL) */
    struct dapi_columns cols;      /* names for the csv/tsv header (n = 0: not known) */
    char why[256];                 /* why the body was cut (logged) */
};

static void job_free(struct export_job *j)
{
    if(j->result)
        dapi_result_close(j->result);
    dapi_result_live_unref(j->live);
    dapi_columns_free(&j->cols);
    free(j);
}

/* The answer's headers: its type, and the file name a browser saves it under. */
static struct dapi_stream *start_stream(struct export_job *j)
{
    char disp[DAPI_REQ_HEADER_VALUE_MAX + 1];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s.%s\"", j->slug, formats[j->f].name);
    dapi_req_add_header(j->r, "Content-Disposition", disp);
    return dapi_req_respond_stream(j->r, 200, formats[j->f].content_type);
}

/* The column names of a result whose columns were not recorded (a result of an older
 * version, or one still running: they are recorded when it ends): the keys of its first
 * row — the same names, as the writer renders each name as its rows' key. */
static void names_from_first_row(struct export_job *j)
{
    struct dapi_buf first, tmp;
    dapi_buf_init(&first, (size_t)-1 / 2);
    dapi_buf_init(&tmp, (size_t)-1 / 2);
    const char *rows = NULL;
    size_t len = 0;
    if(j->result) {
        if(dapi_result_rows(j->result) == 0 ||
           dapi_result_page_into(j->result, 1, &first, &rows, &len))
            rows = NULL;
    } else if(dapi_result_live_page(j->live, 1, &first) > 0) {
        rows = first.data;
        len = first.len;
    }
    const char *p = rows ? rows + 1 : NULL, *end = rows ? rows + len : NULL;
    size_t n = 0;
    char **names = NULL;
    while(p && p < end && *p == '"') {
        const char *k = dapi_rows_skip_value(p, end);
        const char *v = k && k < end ? dapi_rows_skip_value(k + 1, end) : NULL;
        char **grown = v ? realloc(names, (n + 1) * sizeof *names) : NULL;
        if(!grown)
            break;
        names = grown;
        dapi_buf_reset(&tmp);
        if(dapi_rows_unquote(p, (size_t)(k - p), &tmp) || !(names[n] = strdup(tmp.data)))
            break;
        n++;
        p = v < end && *v == ',' ? v + 1 : end;
    }
    dapi_buf_free(&tmp);
    dapi_buf_free(&first);
    j->cols.names = names;
    j->cols.n = n;
}

/* A waiter for the end of a query (dapi_queries_wait) shared between the export's worker and
 * the registry, which may call it after the worker stopped waiting: freed by the last. */
struct end_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, fired;
};

static void end_wait_unref(struct end_wait *w)
{
    pthread_mutex_lock(&w->mu);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if(!last)
        return;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void end_wait_fire(void *arg, int timed_out)
{
    struct end_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->fired = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    end_wait_unref(w);
}

/* Waits at most ms for the query to leave queued/running (its run's pages are all published
 * by then; its outcome is recorded a moment after). */
static void wait_for_end(struct export_job *j, int64_t ms)
{
    struct end_wait *w = calloc(1, sizeof *w);
    if(!w) {
        dapi_clock_sleep_ms(ms < 10 ? ms : 10);
        return;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    if(dapi_queries_wait(j->app->queries, j->slug, dapi_clock_mono_ms() + ms, end_wait_fire, w)) {
        w->refs = 1; /* ended already */
    } else {
        struct timespec until = dapi_clock_after(0, ms);
        pthread_mutex_lock(&w->mu);
        while(!w->fired && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
            ;
        pthread_mutex_unlock(&w->mu);
    }
    end_wait_unref(w);
}

/* Where a running query stands: 1 it goes on (same run), 0 it is done (j->result now holds
 * the finished result, j->live dropped), -1 the export must stop (j->why says why). */
static int live_check(struct export_job *j)
{
    struct dapi_app *app = j->app;
    struct dapi_qview v;
    if(dapi_queries_get(app->queries, j->slug, j->key, app->backend_env.wall_s(), &v)) {
        snprintf(j->why, sizeof j->why, "the query was deleted");
        return -1;
    }
    int rc = -1;
    switch(v.state) {
    case DAPI_Q_QUEUED:
    case DAPI_Q_RUNNING:
        if(v.live == j->live)
            rc = 1;
        else /* stopped (shutdown) or queued to run again: its rows may differ */
            snprintf(j->why, sizeof j->why, "the query's run stopped");
        break;
    case DAPI_Q_DONE:
        j->result = dapi_result_ref(v.result);
        dapi_result_live_unref(j->live);
        j->live = NULL;
        rc = 0;
        break;
    case DAPI_Q_FAILED:
        snprintf(j->why, sizeof j->why, "the query failed: %.200s",
                 v.message[0] ? v.message : dapi_err_message(v.error));
        break;
    default: snprintf(j->why, sizeof j->why, "the query was cancelled"); break;
    }
    dapi_queries_release(app->queries, &v);
    return rc;
}

/* What converting and writing pages needs, reused from page to page. */
struct pump {
    struct export_job *j;
    struct dapi_stream *s;
    struct dapi_rows conv;
    struct dapi_buf out, page;
    uint64_t next;                   /* the next page to write (1-based) */
    uint64_t from_memory, from_file; /* pages of a running query read each way */
};

/* Writes what the conversion gave (dapi_export_flush_fn): DAPI_ERR_SHUTDOWN when the client
 * is gone (j->why empty: the stream says so) or the server stops. */
static enum dapi_err pump_flush(void *arg, struct dapi_buf *out)
{
    struct pump *pp = arg;
    int rc = out->len ? dapi_stream_write(pp->s, out->data, out->len) : 0;
    dapi_buf_reset(out);
    if(!rc && atomic_load(&pp->j->app->stopping)) {
        snprintf(pp->j->why, sizeof pp->j->why, "the server is stopping");
        rc = -1;
    }
    return rc ? DAPI_ERR_SHUTDOWN : DAPI_OK;
}

/* After a page was converted (result): writes when a batch is ready; 0, or -1 to stop. */
static int pump_done(struct pump *pp, enum dapi_err result)
{
    if(result == DAPI_ERR_SHUTDOWN) /* (pump_flush: why said, or the stream will) */
        return -1;
    if(result) {
        snprintf(pp->j->why, sizeof pp->j->why, "page %llu: %s", (unsigned long long)pp->next,
                 dapi_err_message(result));
        return -1;
    }
    pp->next++;
    if(pp->out.len >= BATCH && pump_flush(pp, &pp->out))
        return -1;
    if(atomic_load(&pp->j->app->stopping)) {
        snprintf(pp->j->why, sizeof pp->j->why, "the server is stopping");
        return -1;
    }
    return 0;
}

/* Converts the page's rows (rows, len; the nseps ',' between them at seps, when known) and
 * writes when a batch is ready: 0, or -1 to stop. */
static int pump_page(struct pump *pp, const char *rows, size_t len, const uint32_t *seps,
                     size_t nseps)
{
    return pump_done(
        pp, dapi_export_rows(&pp->conv, &pp->out, rows, len, seps, nseps, BATCH, pump_flush, pp));
}

/* The pages of a query still running, as its run publishes them, until it ends: 0 with
 * j->result set (the rest is read from it), or -1 (cut). Waits for pages without a bound of
 * its own: the run's end (--query-timeout at most), failure or cancellation ends the wait. */
static int pump_live(struct pump *pp)
{
    struct export_job *j = pp->j;
    int64_t checked = dapi_clock_mono_ms();
    uint32_t seps[DAPI_PAGE_ROWS];
    size_t nseps;
    dapi_result_live_stream(j->live); /* its pages from memory while this keeps up */
    for(;;) {
        int closed = 0;
        dapi_pool_waiting(1); /* on the run's next page: set aside if that takes long */
        uint64_t n = dapi_result_live_wait(j->live, pp->next - 1, LIVE_WAIT_MS, &closed);
        if(n >= pp->next || closed)
            dapi_pool_waiting(0);
        while(pp->next <= n) {
            dapi_buf_reset(&pp->page);
            int got = dapi_result_live_rows(j->live, pp->next, &pp->page, seps, &nseps);
            if(got <= 0) { /* unreadable early: read from the finished result */
                closed = 1;
                break;
            }
            if(nseps)
                pp->from_memory++;
            else
                pp->from_file++;
            if(pump_page(pp, pp->page.data ? pp->page.data : "", pp->page.len, seps, nseps))
                return -1;
        }
        /* the client leaves or the server stops: seen at once, not at the next page */
        if(dapi_stream_gone(pp->s) || atomic_load(&j->app->stopping)) {
            snprintf(j->why, sizeof j->why, "%s",
                     dapi_stream_gone(pp->s) ? "the client left" : "the server is stopping");
            return -1;
        }
        int64_t now = dapi_clock_mono_ms();
        if(!closed && now - checked < LIVE_CHECK_MS)
            continue;
        checked = now;
        int rc = live_check(j);
        if(rc <= 0)
            return rc;
        if(closed) /* every page the run will publish is read: its outcome follows */
            wait_for_end(j, LIVE_WAIT_MS);
    }
}

/* Converts and writes every page; 0 when the whole body was written. */
static int stream_rows(struct export_job *j, struct dapi_stream *s)
{
    struct pump pp = {.j = j, .s = s, .next = 1};
    dapi_rows_init(&pp.conv, formats[j->f].fmt);
    dapi_buf_init(&pp.out, (size_t)-1 / 2);
    dapi_buf_init(&pp.page, (size_t)-1 / 2);
    int rc = 0;
    if(dapi_rows_begin(&pp.conv, &pp.out, (const char *const *)j->cols.names, j->cols.n)) {
        snprintf(j->why, sizeof j->why, "out of memory");
        rc = -1;
    }
    if(!rc && j->live) {
        rc = pump_live(&pp);
        dapi_info(
            "export of %s: %llu pages streamed while it ran (%llu from memory), then %llu "
            "from the result",
            j->slug, (unsigned long long)(pp.from_memory + pp.from_file),
            (unsigned long long)pp.from_memory,
            (unsigned long long)(j->result ? dapi_result_pages(j->result) + 1 - pp.next : 0));
    }
    uint64_t pages = rc ? 0 : dapi_result_pages(j->result);
    while(!rc && pp.next <= pages)
        rc = pump_done(&pp, dapi_export_page(j->result, pp.next, &pp.conv, &pp.out, &pp.page,
                                             BATCH, pump_flush, &pp));
    if(!rc && dapi_rows_end(&pp.conv, &pp.out)) {
        snprintf(j->why, sizeof j->why, "out of memory");
        rc = -1;
    }
    if(!rc && pp.out.len)
        rc = dapi_stream_write(s, pp.out.data, pp.out.len);
    dapi_buf_free(&pp.out);
    dapi_buf_free(&pp.page);
    dapi_rows_free(&pp.conv);
    return rc;
}

/* Parquet: DuckDB converts the whole result into a temporary file first (with the column
 * types recorded with the result), then the file is sent; errors before that are answered
 * as JSON. */
/* Parquet conversions at once: each takes the result's NDJSON, the Parquet file and up to
 * --max-spill-bytes of spill under <state-dir>/tmp, so the disk they take is bounded by
 * their number; one per key, so that one key's exports take turns with the others'. */
#define CONVERSIONS 2

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    unsigned char keys[CONVERSIONS][DAPI_KEY_HASH_LEN];
} conv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};

static int converting(const unsigned char *key)
{
    for(int i = 0; i < conv.n; i++)
        if(memcmp(conv.keys[i], key, DAPI_KEY_HASH_LEN) == 0)
            return 1;
    return 0;
}

/* Waits for a conversion slot (the worker counts as waiting meanwhile, so it is set aside
 * and replaced); -1 if the server stops first. */
static int conversion_begin(struct export_job *j)
{
    int rc = 0;
    pthread_mutex_lock(&conv.mu);
    while(conv.n == CONVERSIONS || converting(j->key)) {
        if(atomic_load(&j->app->stopping)) {
            rc = -1;
            break;
        }
        dapi_pool_waiting(1);
        struct timespec until = dapi_clock_after(0, 200);
        pthread_cond_timedwait(&conv.cv, &conv.mu, &until);
    }
    if(!rc)
        memcpy(conv.keys[conv.n++], j->key, DAPI_KEY_HASH_LEN);
    pthread_mutex_unlock(&conv.mu);
    dapi_pool_waiting(0);
    return rc;
}

static void conversion_end(struct export_job *j)
{
    pthread_mutex_lock(&conv.mu);
    for(int i = 0; i < conv.n; i++)
        if(memcmp(conv.keys[i], j->key, DAPI_KEY_HASH_LEN) == 0) {
            memcpy(conv.keys[i], conv.keys[--conv.n], DAPI_KEY_HASH_LEN);
            break;
        }
    pthread_cond_broadcast(&conv.cv);
    pthread_mutex_unlock(&conv.mu);
}

static void export_parquet(struct export_job *j)
{
    struct dapi_app *app = j->app;
    char tmp[4200], *msg = NULL;
    int fd = -1;
    uint64_t size = 0;
    enum dapi_err result = DAPI_OK;
    int known = j->cols.n && j->cols.types;
    if(known && conversion_begin(j)) {
        result = DAPI_ERR_SHUTDOWN;
    } else if(known) {
        snprintf(tmp, sizeof tmp, "%s/tmp", app->cfg->state_dir);
        /* The conversion runs in a DuckDB of its own, past --query-timeout's reach; two at
         * most, so its worker is set aside like a waiting one instead of holding the pool. */
        dapi_pool_waiting(1);
        result = dapi_result_parquet(j->result, (const char *const *)j->cols.names,
                                     (const char *const *)j->cols.types, j->cols.n, tmp,
                                     app->cfg->memory_limit, app->cfg->max_spill_bytes,
                                     &app->stopping, &fd, &size, &msg);
        dapi_pool_waiting(0);
        conversion_end(j);
    }
    dapi_queries_unadmit(app->queries, j->key);
    if(!known) {
        dapi_respond_error(j->r, 409, "Column types not known",
                           "this result was stored by an older version, without its column "
                           "types: create the query again to export it as parquet");
    } else if(result) {
        dapi_warn("parquet export of %s failed: %s", j->slug,
                  msg ? msg : dapi_err_message(result));
        dapi_respond_err(j->r, result,
                         result == DAPI_ERR_BUSY        ? "no space left for the conversion"
                         : result == DAPI_ERR_TOO_LARGE ? "the conversion to Parquet needs more "
                                                          "memory than this server allows "
                                                          "(--memory-limit)"
                                                        : NULL);
    } else {
        char disp[DAPI_REQ_HEADER_VALUE_MAX + 1];
        snprintf(disp, sizeof disp, "attachment; filename=\"%s.parquet\"", j->slug);
        dapi_req_add_header(j->r, "Content-Disposition", disp);
        dapi_req_respond_file(j->r, 200, fd, size, formats[PARQUET].content_type);
    }
    free(msg);
    job_free(j);
}

/* On a run-pool worker (conn NULL: dropped at shutdown). */
static void export_run(void *arg, struct dapi_econn *conn)
{
    struct export_job *j = arg;
    struct dapi_queries *qs = j->app->queries;
    if(!conn) {
        dapi_queries_unadmit(qs, j->key);
        dapi_respond_err(j->r, DAPI_ERR_SHUTDOWN, NULL);
        job_free(j);
        return;
    }
    if(j->f == PARQUET) {
        export_parquet(j);
        return;
    }
    if(!j->cols.n && formats[j->f].fmt <= DAPI_ROWS_TSV)
        names_from_first_row(j);
    struct dapi_stream *s = start_stream(j);
    if(s) {
        dapi_stream_stop_on(s, &j->app->stopping); /* shutdown: a stalled client is cut */
        /* a slow client: its worker is set aside, not the other keys' queries held */
        dapi_stream_on_wait(s, dapi_pool_waiting);
    }
    int rc = s ? stream_rows(j, s) : -1;
    if(rc && s && dapi_stream_gone(s))
        dapi_info("export of %s: the client left; stopped", j->slug);
    else if(rc && s)
        dapi_warn("export of %s cut: %s", j->slug, j->why[0] ? j->why : "write failed");
    /* the slot first: the client may send its next request as soon as the body ends */
    dapi_queries_unadmit(qs, j->key);
    dapi_stream_end(s, rc == 0);
    job_free(j);
}

/* The backend's outcome: the finished result (then the export starts), or why not. */
static void on_stored(void *ctx, enum dapi_err err, const struct dapi_outcome *o)
{
    struct export_job *j = ctx;
    struct dapi_app *app = j->app;
    struct dapi_reply rp = {dapi_respond_outcome, j->r};
    if(err || o->kind != DAPI_OUTCOME_PAGE || (!o->result && !o->live)) {
        if(!err && o->kind == DAPI_OUTCOME_PAGE) /* (a backend without stored results) */
            dapi_respond_error(j->r, 501, "Export not available", NULL);
        else
            dapi_respond_outcome(j->r, err, o);
        job_free(j);
        return;
    }
    if(o->result) {
        j->result = dapi_result_ref(o->result);
    } else {
        dapi_result_live_ref(o->live);
        j->live = o->live;
    }
    if(!j->result ||
       dapi_queries_columns(app->queries, j->slug, j->key, app->backend_env.wall_s(), &j->cols))
        memset(&j->cols, 0, sizeof j->cols); /* not recorded: csv/tsv take the first row's */
    if(j->head) {                            /* the headers only: nothing to convert */
        dapi_stream_end(start_stream(j), 1);
        job_free(j);
        return;
    }
    /* csv and tsv take a running query's column names from its page 1 (they are recorded at
     * its end): one too large to read while the run goes means waiting for that end */
    int first_too_large = j->live && formats[j->f].fmt <= DAPI_ROWS_TSV &&
                          dapi_result_live_page_size(j->live, 1) >= DAPI_PAGE_STREAM_MIN;
    enum dapi_err admitted = first_too_large ? DAPI_OK : dapi_queries_admit(app->queries, j->key);
    if((admitted || first_too_large) && j->live) {
        /* The run holds a slot of its own (of this key, with --max-queries-per-key 1 its
         * only one): no slot to follow it, so wait for its end — which gives that slot back —
         * as an export did before following runs. */
        dapi_result_live_unref(j->live);
        j->live = NULL;
        dapi_columns_free(&j->cols);
        memset(&j->cols, 0, sizeof j->cols);
        j->whole = 1;
        app->backend->ops->stored(app->backend_state, j->slug, 0, &j->who,
                                  (struct dapi_reply){on_stored, j});
        return;
    }
    if(admitted) {
        dapi_backend_refuse_admission(&app->backend_env, rp, admitted, j->key);
        job_free(j);
        return;
    }
    if(dapi_backend_queue(&app->backend_env, app->run_pool, export_run, j, j->key, rp,
                          "too many exports and queries waiting"))
        job_free(j);
}

int dapi_api_export_format(const char *name)
{
    for(size_t f = 0; f < NFORMATS; f++)
        if(name && strcmp(name, formats[f].name) == 0)
            return (int)f;
    return -1;
}

void dapi_api_export_deferred(struct dapi_req *r, struct dapi_app *app,
                              const struct dapi_principal *who, const char *slug, int f)
{
    struct export_job *j = calloc(1, sizeof *j);
    if(!j) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    j->r = r;
    j->app = app;
    j->f = (size_t)f;
    j->head = strcmp(dapi_req_method(r), "HEAD") == 0;
    j->whole = f == PARQUET; /* parquet is converted whole: it waits for the finished result */
    j->who = *who;
    snprintf(j->slug, sizeof j->slug, "%s", slug);
    memcpy(j->key, who->owner, DAPI_KEY_HASH_LEN);
    app->backend->ops->stored(app->backend_state, slug, !j->whole, &j->who,
                              (struct dapi_reply){on_stored, j});
}

void dapi_api_export(struct dapi_req *r, struct dapi_app *app, const char *slug)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    int f = dapi_api_export_format(dapi_req_arg(r, "format"));
    if(f < 0) {
        dapi_respond_error(r, 400, "Invalid format",
                           "format must be one of: csv, tsv, ndjson, json, parquet");
        return;
    }
    if(!app->backend->ops->stored) {
        dapi_respond_error(r, 501, "Export not available", NULL);
        return;
    }
    if(dapi_api_scope_still_covers(r, app, &who, slug))
        return;
    dapi_req_defer(r); /* the outcome may come later, from the thread that finishes the query */
    dapi_api_export_deferred(r, app, &who, slug, f);
}
