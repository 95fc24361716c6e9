/* GET /api/queries/{slug}/export?format=csv|tsv|ndjson|json: the whole finished result in one
 * streamed answer (chunked transfer), docs/api.md "Export".
 *
 * The backend waits for the query as a results request would (--result-wait, then 504; a
 * failed query answers its failure). Once the result is there, the export takes an
 * admission slot of its key (so one key's exports cannot hold every worker) and a run-pool
 * worker reads the result page by page, converts each (src/base/rows.h) and writes it into
 * the answer's stream (src/http/http.h): the writer waits while the client is slow, so
 * memory stays at about a page and the stream's buffer whatever the result's size, and stops
 * at its next write when the client leaves. The event thread never converts more than
 * nothing: it only hands buffered bytes to the socket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "backend/backend.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/rows.h"
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

struct export_job {
    struct dapi_req *r;
    struct dapi_app *app;
    size_t f; /* index into formats */
    int head;
    char slug[DAPI_SLUG_MAX + 1];
    unsigned char key[DAPI_KEY_HASH_LEN];
    struct dapi_result *result; /* a reference, once the query is done */
    struct dapi_columns cols;   /* names for the csv/tsv header (n = 0: not known) */
};

static void job_free(struct export_job *j)
{
    if(j->result)
        dapi_result_close(j->result);
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
 * version): the keys of its first row. */
static void names_from_first_row(struct export_job *j)
{
    char *rows = NULL;
    size_t len = 0;
    if(dapi_result_rows(j->result) == 0 || dapi_result_page_copy(j->result, 1, &rows, &len))
        return;
    struct dapi_buf tmp;
    dapi_buf_init(&tmp, (size_t)-1 / 2);
    const char *p = rows + 1, *end = rows + len;
    size_t n = 0;
    char **names = NULL;
    while(p < end && *p == '"') {
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
    free(rows);
    j->cols.names = names;
    j->cols.n = n;
}

/* Converts and writes every page; 0 when the whole body was written. */
static int stream_rows(struct export_job *j, struct dapi_stream *s)
{
    struct dapi_rows conv;
    struct dapi_buf out, page; /* reused: no allocation per page */
    dapi_rows_init(&conv, formats[j->f].fmt);
    dapi_buf_init(&out, (size_t)-1 / 2);
    dapi_buf_init(&page, (size_t)-1 / 2);
    const atomic_int *stopping = &j->app->stopping;
    enum dapi_err result = dapi_rows_begin(&conv, &out, (const char *const *)j->cols.names,
                                           j->cols.n);
    uint64_t pages = dapi_result_pages(j->result);
    int rc = 0;
    for(uint64_t p = 1; p <= pages && !result && !rc; p++) {
        const char *rows = NULL;
        size_t len = 0;
        result = dapi_result_page_into(j->result, p, &page, &rows, &len);
        if(!result)
            result = dapi_rows_page(&conv, &out, rows, len);
        if(!result && out.len >= BATCH) {
            rc = dapi_stream_write(s, out.data, out.len);
            dapi_buf_reset(&out);
        }
        if(atomic_load(stopping))
            rc = -1; /* cut: the client sees an incomplete body */
    }
    if(!result && !rc)
        result = dapi_rows_end(&conv, &out);
    if(!result && !rc && out.len)
        rc = dapi_stream_write(s, out.data, out.len);
    if(result) {
        dapi_warn("export of %s stopped: %s", j->slug, dapi_err_message(result));
        rc = -1;
    }
    dapi_buf_free(&out);
    dapi_buf_free(&page);
    dapi_rows_free(&conv);
    return rc;
}

/* Parquet: DuckDB converts the whole result into a temporary file first (with the column
 * types recorded with the result), then the file is sent; errors before that are answered
 * as JSON. */
static void export_parquet(struct export_job *j)
{
    struct dapi_app *app = j->app;
    char tmp[4200], *msg = NULL;
    int fd = -1;
    uint64_t size = 0;
    enum dapi_err result = DAPI_OK;
    int known = j->cols.n && j->cols.types;
    if(known) {
        snprintf(tmp, sizeof tmp, "%s/tmp", app->cfg->state_dir);
        result = dapi_result_parquet(j->result, (const char *const *)j->cols.names,
                                     (const char *const *)j->cols.types, j->cols.n, tmp,
                                     app->cfg->memory_limit, &app->stopping, &fd, &size, &msg);
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
                         result == DAPI_ERR_BUSY ? "no space left for the conversion" : NULL);
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
    if(s)
        dapi_stream_stop_on(s, &j->app->stopping); /* shutdown: a stalled client is cut */
    int rc = s ? stream_rows(j, s) : -1;
    if(rc && s && dapi_stream_gone(s))
        dapi_info("export of %s: the client left; stopped", j->slug);
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
    if(err || o->kind != DAPI_OUTCOME_PAGE || !o->result) {
        if(!err && o->kind == DAPI_OUTCOME_PAGE) /* (a backend without stored results) */
            dapi_respond_error(j->r, 501, "Export not available", NULL);
        else
            dapi_respond_outcome(j->r, err, o);
        job_free(j);
        return;
    }
    j->result = dapi_result_ref(o->result);
    if(dapi_queries_columns(app->queries, j->slug, j->key, app->backend_env.wall_s(), &j->cols))
        memset(&j->cols, 0, sizeof j->cols); /* not recorded: csv/tsv take the first row's */
    if(j->head) {                            /* the headers only: nothing to convert */
        dapi_stream_end(start_stream(j), 1);
        job_free(j);
        return;
    }
    enum dapi_err admitted = dapi_queries_admit(app->queries, j->key);
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
    snprintf(j->slug, sizeof j->slug, "%s", slug);
    memcpy(j->key, who->owner, DAPI_KEY_HASH_LEN);
    app->backend->ops->stored(app->backend_state, slug, who, (struct dapi_reply){on_stored, j});
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
    dapi_req_defer(r); /* the outcome may come later, from the thread that finishes the query */
    dapi_api_export_deferred(r, app, &who, slug, f);
}
