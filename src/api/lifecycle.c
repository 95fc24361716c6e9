/* A query's lifecycle for its owner (docs/api.md): GET/HEAD /api/queries/{slug} (status),
 * DELETE /api/queries/{slug} (cancel, or delete a finished one) and GET/HEAD /api/queries
 * (the key's queries, newest first). Answered from the registry, whatever the backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "store/queries.h"

#define LIST_DEFAULT 50
#define LIST_MAX 1000

static const char *state_name(enum dapi_qstate s)
{
    switch(s) {
    case DAPI_Q_QUEUED: return "queued";
    case DAPI_Q_RUNNING: return "running";
    case DAPI_Q_DONE: return "succeeded";
    case DAPI_Q_FAILED: return "failed";
    case DAPI_Q_CANCELLED: return "cancelled";
    case DAPI_Q_NSTATES: break;
    }
    return "unknown";
}

/* "key":"2026-01-02T03:04:05Z" (UTC), or "key":null for 0 (not yet). */
static void add_time(struct dapi_buf *b, const char *key, int64_t t)
{
    char s[32] = "";
    struct tm tm;
    time_t tt = (time_t)t;
    dapi_buf_addf(b, "\"%s\":", key);
    if(t <= 0 || !gmtime_r(&tt, &tm) || !strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
        dapi_buf_adds(b, "null");
        return;
    }
    dapi_buf_addf(b, "\"%s\"", s);
}

static void add_count(struct dapi_buf *b, const char *key, int64_t v)
{
    if(v < 0)
        dapi_buf_addf(b, "\"%s\":null", key);
    else
        dapi_buf_addf(b, "\"%s\":%lld", key, (long long)v);
}

static void add_str(struct dapi_buf *b, const char *s)
{
    dapi_json_str(b, s, strlen(s));
}

/* The status document (keys in alphabetical order, like every other answer). */
static void status_json(struct dapi_buf *b, const struct dapi_qstatus *st)
{
    dapi_buf_addc(b, '{');
    add_count(b, "bytes", st->bytes);
    dapi_buf_adds(b, ",\"columns\":");
    if(!st->columns_known) {
        dapi_buf_adds(b, "null");
    } else {
        dapi_buf_addc(b, '[');
        for(size_t i = 0; i < st->columns.n; i++) {
            dapi_buf_adds(b, i ? ",{\"name\":" : "{\"name\":");
            add_str(b, st->columns.names[i]);
            dapi_buf_adds(b, ",\"type\":");
            add_str(b, st->columns.types[i]);
            dapi_buf_addc(b, '}');
        }
        dapi_buf_addc(b, ']');
    }
    dapi_buf_addc(b, ',');
    add_time(b, "created_at", st->created_s);
    dapi_buf_adds(b, ",\"error\":");
    if(st->state == DAPI_Q_FAILED || st->state == DAPI_Q_CANCELLED) {
        dapi_buf_adds(b, "{\"details\":");
        if(st->message)
            add_str(b, st->message);
        else
            dapi_buf_adds(b, "null");
        dapi_buf_adds(b, ",\"message\":");
        add_str(b,
                st->state == DAPI_Q_CANCELLED ? "Query cancelled" : dapi_err_message(st->error));
        dapi_buf_addc(b, '}');
    } else {
        dapi_buf_adds(b, "null");
    }
    dapi_buf_addc(b, ',');
    add_time(b, "finished_at", st->finished_s);
    dapi_buf_addc(b, ',');
    add_count(b, "pages", st->pages);
    if(st->params) { /* canonical JSON, written by dapi (api/params.c) */
        dapi_buf_adds(b, ",\"params\":");
        dapi_buf_adds(b, st->params);
    }
    dapi_buf_addf(b, ",\"reused\":%s,", st->reused ? "true" : "false");
    add_count(b, "rows", st->rows);
    dapi_buf_adds(b, ",\"slug\":");
    add_str(b, st->slug);
    dapi_buf_adds(b, ",\"sql\":");
    add_str(b, st->sql);
    dapi_buf_addc(b, ',');
    add_time(b, "started_at", st->started_s);
    dapi_buf_adds(b, ",\"state\":");
    add_str(b, state_name(st->state));
    dapi_buf_addc(b, '}');
}

static void respond_buf(struct dapi_req *r, int status, struct dapi_buf *b)
{
    size_t len = 0;
    char *out = b->data ? dapi_buf_take(b, &len) : NULL;
    if(!out) {
        dapi_buf_free(b);
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    dapi_req_respond(r, status, out, len, NULL, NULL);
}

/* Answers with the status of who's query slug (404 as for its results otherwise). */
static void answer_status(struct dapi_req *r, struct dapi_app *app, const char *slug,
                          const unsigned char *owner)
{
    struct dapi_qstatus st;
    enum dapi_err e = dapi_queries_status(app->queries, slug, owner, dapi_clock_wall_s(), &st);
    if(e == DAPI_ERR_NOT_FOUND) {
        dapi_respond_error(r, 404, "Query not found", NULL);
        return;
    }
    if(e) {
        dapi_respond_err(r, e, NULL);
        return;
    }
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2); /* (bounded by --max-sql-bytes and the columns) */
    status_json(&b, &st);
    dapi_qstatus_free(&st);
    respond_buf(r, 200, &b);
}

void dapi_api_query_status(struct dapi_req *r, struct dapi_app *app, const char *slug)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    answer_status(r, app, slug, who.owner);
}

void dapi_api_query_delete(struct dapi_req *r, struct dapi_app *app, const char *slug)
{
    if(strcmp(dapi_req_method(r), "DELETE") != 0) {
        dapi_respond_error_h(r, 405, "Method not allowed", NULL, "Allow", "GET, HEAD, DELETE");
        return;
    }
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    int deleted = 0;
    enum dapi_err e = dapi_queries_cancel(app->queries, slug, who.owner, dapi_clock_wall_s(),
                                          "cancelled by its owner (DELETE)", &deleted);
    if(e == DAPI_ERR_NOT_FOUND) {
        dapi_respond_error(r, 404, "Query not found", NULL);
        return;
    }
    if(e) {
        dapi_respond_err(r, e, NULL);
        return;
    }
    if(deleted) { /* a finished query: gone */
        dapi_req_respond(r, 204, NULL, 0, NULL, NULL);
        return;
    }
    answer_status(r, app, slug, who.owner); /* cancelled: its final state */
}

/* A decimal argument of at most max (> 0); def when absent. -1 (answered 400) when bad. */
static int64_t arg_count(struct dapi_req *r, const char *name, int64_t def, int64_t max,
                         const char *what)
{
    const char *s = dapi_req_arg(r, name);
    if(!s)
        return def;
    int neg = 0, big = 0;
    int64_t v = 0;
    char digits[48], msg[128];
    if(dapi_api_parse_pyint(s, strlen(s), &neg, digits, sizeof digits, &v, &big) || neg || big ||
       v < 1 || v > max) {
        snprintf(msg, sizeof msg, "%s must be an integer from 1 to %lld", what, (long long)max);
        dapi_respond_error(r, 400, msg, NULL);
        return -1;
    }
    return v;
}

void dapi_api_list_queries(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    int64_t limit = arg_count(r, "limit", LIST_DEFAULT, LIST_MAX, "Limit");
    if(limit < 0)
        return;
    int64_t cursor = arg_count(r, "cursor", 0, (int64_t)DAPI_CURSOR_MAX, "Cursor");
    if(cursor < 0)
        return;
    uint64_t before = cursor ? dapi_queries_cursor_seq(app->queries, who.owner, (uint64_t)cursor)
                             : 0;
    struct dapi_qsummary *v = NULL;
    size_t n = 0;
    int more = 0;
    enum dapi_err e = dapi_queries_list(app->queries, who.owner, dapi_clock_wall_s(), before,
                                        (size_t)limit, &v, &n, &more);
    if(e) {
        dapi_respond_err(r, e, NULL);
        return;
    }
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    dapi_buf_adds(&b, "{\"next_cursor\":");
    if(more && n)
        dapi_buf_addf(
            &b, "\"%llu\"",
            (unsigned long long)dapi_queries_cursor(app->queries, who.owner, v[n - 1].seq));
    else
        dapi_buf_adds(&b, "null");
    dapi_buf_adds(&b, ",\"queries\":[");
    for(size_t i = 0; i < n; i++) {
        dapi_buf_adds(&b, i ? ",{" : "{");
        add_time(&b, "created_at", v[i].created_s);
        dapi_buf_addc(&b, ',');
        add_count(&b, "rows", v[i].rows);
        dapi_buf_adds(&b, ",\"slug\":");
        add_str(&b, v[i].slug);
        dapi_buf_adds(&b, ",\"sql\":");
        add_str(&b, v[i].sql);
        dapi_buf_addf(&b, ",\"sql_truncated\":%s,\"state\":", v[i].sql_cut ? "true" : "false");
        add_str(&b, state_name(v[i].state));
        dapi_buf_addc(&b, '}');
    }
    dapi_buf_adds(&b, "]}");
    dapi_qsummaries_free(v, n);
    respond_buf(r, 200, &b);
}
