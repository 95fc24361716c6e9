/* GET /api/endpoints and GET /api/endpoints/{name} (docs/endpoints.md): the endpoints of
 * --endpoints-file a key may call, and one call — its arguments checked and typed
 * (endpoints/endpoints.h), its SQL created as a query with those values bound, exactly as
 * POST /api/queries with "params" would, then page 1 of its result in the reference envelope
 * (the slug pages on through /api/queries/{slug}/results), or with format=… the whole result
 * through the export path (GET /api/queries/{slug}/export). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/conneg.h"
#include "api/respond.h"
#include "app/app.h"
#include "base/buf.h"
#include "endpoints/endpoints.h"
#include "store/queries.h"

#define MAX_ARGS 256

/* The set in use, with a reference (NULL when no file is loaded). */
static struct dapi_endpoints *current(struct dapi_app *app)
{
    pthread_mutex_lock(&app->endpoints_lock);
    struct dapi_endpoints *e = app->endpoints;
    dapi_endpoints_ref(e);
    pthread_mutex_unlock(&app->endpoints_lock);
    return e;
}

void dapi_api_list_endpoints(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    struct dapi_endpoints *e = current(app);
    size_t len = 0;
    char *body = dapi_endpoints_json(e, &who.scope, &len);
    dapi_endpoints_unref(e);
    if(!body) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    dapi_req_respond(r, 200, body, len, NULL, NULL);
}

struct args {
    const char *names[MAX_ARGS], *values[MAX_ARGS];
    size_t n;
};

static int take_arg(void *ctx, const char *name, const char *value)
{
    struct args *a = ctx;
    if(a->n == MAX_ARGS)
        return 1;
    a->names[a->n] = name;
    a->values[a->n++] = value;
    return 0;
}

/* A call in flight: its creation's outcome leads to page 1. */
struct call {
    struct dapi_req *r;
    struct dapi_app *app;
    struct dapi_principal who; /* (its strings are the request's, which outlives the call) */
    int zstd, gzip;            /* what Accept-Encoding accepts */
    int format;                /* an export format (format=…), or -1: page 1 */
};

static void on_created(void *ctx, enum dapi_err err, const struct dapi_outcome *out)
{
    struct call *c = ctx;
    if(err || out->kind != DAPI_OUTCOME_CREATED) {
        dapi_respond_outcome(c->r, err, out);
        free(c);
        return;
    }
    if(c->format >= 0) { /* the whole result through the export path */
        dapi_api_export_deferred(c->r, c->app, &c->who, out->slug, c->format);
        free(c);
        return;
    }
    struct dapi_page_req *pr = malloc(sizeof *pr);
    if(!pr) {
        dapi_respond_err(c->r, DAPI_ERR_NOMEM, NULL);
        free(c);
        return;
    }
    pr->r = c->r;
    pr->cache = c->app->page_cache;
    pr->zstd = c->zstd;
    pr->gzip = c->gzip;
    pr->if_none_match = NULL;
    c->app->backend->ops->results(c->app->backend_state, out->slug, 1, "1", &c->who,
                                  (struct dapi_reply){dapi_respond_page_outcome, pr});
    free(c);
}

void dapi_api_call_endpoint(struct dapi_req *r, struct dapi_app *app, const char *name)
{
    static const char *const skip[] = {"format", NULL};
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    struct dapi_endpoints *e = current(app);
    const struct dapi_endpoint *ep = dapi_endpoints_find(e, name);
    char *params = NULL, *sql = NULL, *why = NULL, msg[512];
    struct args *a = calloc(1, sizeof *a);
    int nomem = 0;
    /* One that reads a layer the key may not read is not there for it, as in the list: a 403
     * naming the layer told any key which endpoints exist and which layers the lake has. */
    if(!ep || !dapi_endpoint_allowed(ep, &who.scope)) {
        dapi_respond_error(r, 404, "Endpoint not found",
                           "GET /api/endpoints lists the endpoints this key may call");
        goto out;
    }
    if(!a) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        goto out;
    }
    const char *fname = dapi_req_arg(r, "format");
    int format = fname ? dapi_api_export_format(fname) : -1;
    if(fname && format < 0) {
        dapi_respond_error(r, 400, "Invalid format",
                           "format must be one of: csv, tsv, ndjson, json, parquet");
        goto out;
    }
    if(dapi_req_args(r, take_arg, a) > MAX_ARGS) {
        snprintf(msg, sizeof msg, "at most %d query-string arguments", MAX_ARGS);
        dapi_respond_err(r, DAPI_ERR_PARAM, msg);
        goto out;
    }
    if(!(params = dapi_endpoint_bind(ep, a->names, a->values, a->n, skip, &why, &nomem))) {
        dapi_respond_err(r, nomem ? DAPI_ERR_NOMEM : DAPI_ERR_PARAM, why);
        goto out;
    }
    struct call *c = calloc(1, sizeof *c);
    if(!c || !(sql = strdup(ep->sql))) {
        free(c);
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        goto out;
    }
    /* the endpoint's cache: its calls reuse a result at most that old (0: never) */
    if(ep->cache_s == 0)
        who.reuse_max_age = -1;
    else if(ep->cache_s > 0)
        who.reuse_max_age = ep->cache_s;
    c->r = r;
    c->app = app;
    c->who = who;
    unsigned codings = dapi_accepted_codings(dapi_req_header(r, "Accept-Encoding"));
    c->zstd = (codings & DAPI_CODING_ZSTD) != 0;
    c->gzip = (codings & DAPI_CODING_GZIP) != 0;
    c->format = format;
    /* admission as for POST /api/queries: the slot goes to the query or back */
    enum dapi_err admitted = dapi_queries_admit(app->queries, who.owner);
    struct dapi_reply rp = {on_created, c};
    dapi_req_defer(r);
    if(admitted) {
        dapi_backend_refuse_admission(&app->backend_env, rp, admitted, who.owner);
    } else {
        app->backend->ops->create_bound(app->backend_state, sql, params, &c->who, rp);
        sql = params = NULL; /* taken */
    }
out:
    dapi_endpoints_unref(e);
    free(a);
    free(why);
    free(params);
    free(sql);
}
