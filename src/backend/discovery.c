/* Schema discovery for backends that run on the local lake: GET /api/layers and
 * GET /api/layers/{layer}/tables/{table} (docs/api.md "Schema discovery"). The lake is read
 * by the engine (src/engine/discover.c) on the check pool, never on an HTTP thread; this file
 * queues the jobs and writes the JSON bodies, keys in alphabetical order like every answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "base/buf.h"
#include "base/json.h"
#include "engine/engine.h"
#include "pool/pool.h"

#define BODY_MAX ((size_t)256 << 20)

static void add_str(struct dapi_buf *b, const char *s)
{
    dapi_json_str(b, s, strlen(s));
}

/* ISO 8601 UTC to the second, e.g. "2026-12-02T11:00:00Z". */
static void add_time(struct dapi_buf *b, int64_t s)
{
    char text[40] = "1970-01-01T00:00:00Z";
    time_t t = (time_t)s;
    struct tm tm;
    if(gmtime_r(&t, &tm))
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    add_str(b, text);
}

/* The fields a table has in both bodies (alphabetical, between "bytes" and "name"). */
static void add_table_fields(struct dapi_buf *b, const struct dapi_lake_table *t,
                             const struct dapi_lake_desc *d)
{
    dapi_buf_adds(b, "\"bytes\":");
    dapi_json_u64(b, t->bytes);
    if(d) {
        dapi_buf_adds(b, ",\"columns\":[");
        for(size_t i = 0; i < d->ncols; i++) {
            dapi_buf_adds(b, i ? ",{\"json_type\":" : "{\"json_type\":");
            add_str(b, d->cols[i].json_type);
            dapi_buf_adds(b, ",\"name\":");
            add_str(b, d->cols[i].name);
            dapi_buf_adds(b, ",\"type\":");
            add_str(b, d->cols[i].type);
            dapi_buf_addc(b, '}');
        }
        dapi_buf_addc(b, ']');
    }
    dapi_buf_adds(b, ",\"files\":");
    dapi_json_u64(b, t->files);
    dapi_buf_adds(b, t->folder ? ",\"folder\":true,\"kind\":" : ",\"folder\":false,\"kind\":");
    add_str(b, t->kind);
    dapi_buf_adds(b, ",\"last_modified\":");
    add_time(b, t->mtime_s);
    if(d) {
        dapi_buf_adds(b, ",\"layer\":");
        add_str(b, t->layer);
    }
    dapi_buf_adds(b, ",\"name\":");
    add_str(b, t->name);
}

char *dapi_backend_layers_json(const struct dapi_lake_table *t, size_t n, size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, BODY_MAX);
    dapi_buf_adds(&b, "{\"layers\":[");
    for(size_t i = 0; i < n; i++) {
        int first = i == 0 || strcmp(t[i - 1].layer, t[i].layer) != 0; /* sorted by layer */
        if(first) {
            dapi_buf_adds(&b, i ? "]},{\"name\":" : "{\"name\":");
            add_str(&b, t[i].layer);
            dapi_buf_adds(&b, ",\"tables\":[{");
        } else {
            dapi_buf_adds(&b, ",{");
        }
        add_table_fields(&b, &t[i], NULL);
        dapi_buf_addc(&b, '}');
    }
    dapi_buf_adds(&b, n ? "]}]}" : "]}");
    return dapi_buf_take(&b, len);
}

char *dapi_backend_table_json(const struct dapi_lake_desc *d, size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, BODY_MAX);
    dapi_buf_addc(&b, '{');
    add_table_fields(&b, &d->t, d);
    dapi_buf_adds(&b, ",\"row_count\":");
    if(d->rows < 0)
        dapi_buf_adds(&b, "null");
    else
        dapi_json_i64(&b, d->rows);
    dapi_buf_adds(&b,
                  d->rows_exact ? ",\"row_count_exact\":true}" : ",\"row_count_exact\":false}");
    return dapi_buf_take(&b, len);
}

/* ---- the jobs ---------------------------------------------------------------------------- */

struct discover_job {
    const struct dapi_backend_env *env;
    struct dapi_reply rp;
    struct dapi_scope scope;
    char *layer, *table; /* describe; NULL for the list */
};

static void job_free(struct discover_job *j)
{
    free(j->layer);
    free(j->table);
    free(j);
}

static void reply_body(struct dapi_reply rp, char *body, size_t len)
{
    if(body)
        dapi_reply_json(rp, body, len);
    else
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
    free(body);
}

static void list_job(void *arg, struct dapi_econn *conn)
{
    struct discover_job *j = arg;
    struct dapi_lake_table *t = NULL;
    size_t n = 0, len = 0;
    enum dapi_err result;
    if(!conn)
        dapi_reply_err(j->rp, DAPI_ERR_SHUTDOWN, NULL);
    else if((result = dapi_engine_lake_tables(j->env->engine, &j->scope, &t, &n)))
        dapi_reply_err(j->rp, result, "the lake could not be listed");
    else {
        char *body = dapi_backend_layers_json(t, n, &len);
        reply_body(j->rp, body, len);
    }
    dapi_lake_tables_free(t, n);
    job_free(j);
}

static void describe_job(void *arg, struct dapi_econn *conn)
{
    struct discover_job *j = arg;
    const struct dapi_backend_env *env = j->env;
    struct dapi_lake_desc d;
    char *msg = NULL, details[512];
    size_t len = 0;
    memset(&d, 0, sizeof d);
    if(!conn) {
        dapi_reply_err(j->rp, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    int64_t deadline = env->cfg->query_timeout > 0
                           ? env->mono_ms() + env->cfg->query_timeout * 1000
                           : 0;
    enum dapi_err result = dapi_engine_describe(conn, j->layer, j->table, &j->scope, deadline, &d,
                                                &msg);
    if(result == DAPI_ERR_NOT_FOUND) {
        /* names as the client sent them: escaped by the JSON writer, cut if absurdly long */
        if(d.missing == 1)
            snprintf(details, sizeof details, "no layer '%.200s'", j->layer);
        else
            snprintf(details, sizeof details, "no table '%.200s' in layer '%.200s'", j->table,
                     j->layer);
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = d.missing == 1 ? "Layer not found" : "Table not found",
                                 .details = details,
                                 .status = 404};
        dapi_reply(j->rp, result, &o);
    } else if(result == DAPI_ERR_FORBIDDEN) {
        dapi_reply_err(j->rp, result, msg);
    } else if(result == DAPI_ERR_SQL) { /* the table's files could not be read as a table */
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = "Table cannot be read",
                                 .details = msg,
                                 .status = 500};
        dapi_reply(j->rp, result, &o);
    } else if(result) {
        dapi_reply_err(j->rp, result, NULL);
    } else {
        char *body = dapi_backend_table_json(&d, &len);
        reply_body(j->rp, body, len);
    }
out:
    free(msg);
    dapi_lake_desc_free(&d);
    job_free(j);
}

/* Queued like a check (short, tagged by key so one key's burst waits behind others), but
 * without an admission slot: the queue is capped at --max-queued-queries instead. */
static void submit(const struct dapi_backend_env *env, struct discover_job *j,
                   const struct dapi_principal *who, dapi_job_fn fn)
{
    size_t cap = env->cfg->max_queued_queries > 0 ? (size_t)env->cfg->max_queued_queries : 1;
    if(!env->check_pool ||
       dapi_pool_submit_tagged(env->check_pool, fn, j, cap, dapi_backend_key_tag(who->owner))) {
        dapi_reply_err(j->rp, DAPI_ERR_BUSY, "too many requests waiting for the engine");
        job_free(j);
    }
}

static struct discover_job *job_new(const struct dapi_backend_env *env,
                                    const struct dapi_principal *who, struct dapi_reply rp)
{
    struct discover_job *j = calloc(1, sizeof *j);
    if(!j) {
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        return NULL;
    }
    j->env = env;
    j->rp = rp;
    j->scope = who->scope;
    return j;
}

void dapi_backend_discover_layers(const struct dapi_backend_env *env,
                                  const struct dapi_principal *who, struct dapi_reply rp)
{
    struct discover_job *j = job_new(env, who, rp);
    if(j)
        submit(env, j, who, list_job);
}

void dapi_backend_discover_table(const struct dapi_backend_env *env, const char *layer,
                                 const char *table, const struct dapi_principal *who,
                                 struct dapi_reply rp)
{
    struct discover_job *j = job_new(env, who, rp);
    if(!j)
        return;
    if(!(j->layer = strdup(layer)) || !(j->table = strdup(table))) {
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        job_free(j);
        return;
    }
    submit(env, j, who, describe_job);
}
