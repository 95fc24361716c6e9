/* Routing and authentication. dapi's table of routes, then those other modules registered (the
 * Nekt emulator's, with --emulate-nekt); each endpoint's handler lives in its own file (health
 * here, queries and results in queries.c, the OpenAPI document in openapi.c, the web console
 * in console.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "app/probe.h"
#include "auth/keystore.h"
#include "auth/jwt.h"
#include "auth/ratelimit.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "store/queries.h"

/* Answered from the prober's cached outcome (app/probe.h), on the event thread: health never
 * waits for the engine, so a wedged engine gets a prompt 503 rather than a hung check. */
static void health(struct dapi_req *r, struct dapi_app *app, const char *slug)
{
    static const char body[] = "{\"status\":\"ok\"}";
    struct dapi_probe_status st = {.ok = 1};
    if(app->probe)
        dapi_probe_status(app->probe, dapi_clock_mono_ms(), &st);
    if(st.ok) {
        char *copy = malloc(sizeof body);
        if(copy)
            memcpy(copy, body, sizeof body);
        dapi_req_respond(r, 200, copy, copy ? sizeof body - 1 : 0, NULL, NULL);
        return;
    }
    char since[32] = "";
    struct tm tm;
    time_t t = (time_t)st.since_wall_s;
    if(gmtime_r(&t, &tm))
        strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    /* keys in alphabetical order, like every other answer */
    dapi_buf_adds(&b, "{\"details\":");
    dapi_json_str(&b, st.reason, strlen(st.reason));
    dapi_buf_adds(&b, ",\"error\":\"Engine not answering\",\"since\":");
    dapi_json_str(&b, since, strlen(since));
    dapi_buf_adds(&b, ",\"status\":\"unavailable\"}");
    size_t len = 0;
    char *out = dapi_buf_take(&b, &len);
    dapi_req_respond(r, 503, out, out ? len : 0, "Retry-After", "5");
}

/* Every route here is described in docs/openapi.json (tests/integration/test_openapi.py
 * fails when one is not, or when the document describes one that is not here). */
static const struct dapi_route routes[] = {
    {"/api/health", NULL, NULL, 0, "GET, HEAD", health, health, NULL, NULL, "/api/health"},
    {"/api/ready", NULL, NULL, 0, "GET, HEAD", dapi_api_ready, dapi_api_ready, NULL, NULL,
     "/api/ready"},
    {"/metrics", NULL, NULL, 0, "GET, HEAD", dapi_api_metrics, dapi_api_metrics, NULL, NULL,
     "/metrics"},
    {"/api/openapi.json", NULL, NULL, 0, "GET, HEAD", dapi_api_openapi, dapi_api_openapi, NULL,
     NULL, "/api/openapi.json"},
    {"/", NULL, NULL, 0, "GET, HEAD", dapi_api_console_page, dapi_api_console_page, NULL, NULL,
     "/"},
    /* suffix "": the file name is the path's last segment */
    {"/console/", "", NULL, 0, "GET, HEAD", dapi_api_console_file, dapi_api_console_file, NULL,
     NULL, "/console/{file}"},
    {"/api/queries", NULL, NULL, 1, "GET, HEAD, POST", dapi_api_list_queries,
     dapi_api_list_queries, dapi_api_create_query, NULL, "/api/queries"},
    {"/api/queries/", "/results", NULL, 1, "GET, HEAD", dapi_api_results, dapi_api_results, NULL,
     NULL, "/api/queries/{slug}/results"},
    {"/api/queries/", "/export", NULL, 1, "GET, HEAD", dapi_api_export, dapi_api_export, NULL,
     NULL, "/api/queries/{slug}/export"},
    /* suffix "": the slug is the path's last segment */
    {"/api/queries/", "", NULL, 1, "GET, HEAD, DELETE", dapi_api_query_status,
     dapi_api_query_status, NULL, dapi_api_query_delete, "/api/queries/{slug}"},
    {"/api/layers", NULL, NULL, 1, "GET, HEAD", dapi_api_layers, dapi_api_layers, NULL, NULL,
     "/api/layers"},
    {"/api/endpoints", NULL, NULL, 1, "GET, HEAD", dapi_api_list_endpoints,
     dapi_api_list_endpoints, NULL, NULL, "/api/endpoints"},
    {"/api/endpoints/", "", NULL, 1, "GET, HEAD", dapi_api_call_endpoint, dapi_api_call_endpoint,
     NULL, NULL, "/api/endpoints/{name}"},
    {"/api/layers/", DAPI_ROUTE_ANY, NULL, 1, "GET, HEAD", dapi_api_describe, dapi_api_describe,
     NULL, NULL, "/api/layers/{layer}/tables/{table}"},
};

/* Matches path against a route; for slug routes copies the slug into slug (size n). */
static int match(const struct dapi_route *rt, const char *path, char *slug, size_t n)
{
    size_t pl = strlen(rt->prefix);
    if(rt->also && !rt->also(path))
        return 0;
    if(!rt->suffix)
        return strcmp(path, rt->prefix) == 0;
    if(strncmp(path, rt->prefix, pl) != 0)
        return 0;
    if(strcmp(rt->suffix, DAPI_ROUTE_ANY) == 0)
        return 1;
    const char *s = path + pl, *slash = strchr(s, '/');
    if(!*rt->suffix) { /* {slug} ends the path */
        if(!*s || slash)
            return 0;
        slash = s + strlen(s);
    } else if(!slash || slash == s || strcmp(slash, rt->suffix) != 0) {
        return 0;
    }
    size_t len = (size_t)(slash - s);
    if(len >= n)
        len = n - 1; /* too long to be ours: truncated, so it will not be found */
    memcpy(slug, s, len);
    slug[len] = '\0';
    return 1;
}

/* A key of the store (dapi_<id>_<secret> with a known id): DAPI_KS_OK with who filled, or
 * answered with 401 saying which (wrong secret, revoked, expired). DAPI_KS_NOT_OURS: not a
 * store key, for the other key sources. */
static enum dapi_ks_result store_key(struct dapi_req *r, struct dapi_app *app, const char *key,
                                     struct dapi_principal *who)
{
    int64_t when = 0;
    enum dapi_ks_result res = dapi_keystore_check(app->keystore, key, strlen(key),
                                                  dapi_clock_wall_s(), who, &when);
    char details[96], date[32] = "";
    if(res == DAPI_KS_REVOKED || res == DAPI_KS_EXPIRED) /* (not on every request) */
        dapi_ks_format_time(when, date, sizeof date);
    if(res == DAPI_KS_INVALID) {
        dapi_respond_error(r, 401, "Invalid API key", NULL);
    } else if(res == DAPI_KS_REVOKED) {
        snprintf(details, sizeof details, "revoked at %s", date);
        dapi_respond_error(r, 401, "API key revoked", details);
    } else if(res == DAPI_KS_EXPIRED) {
        snprintf(details, sizeof details, "expired at %s", date);
        dapi_respond_error(r, 401, "API key expired", details);
    }
    return res;
}

/* The token of "Authorization: Bearer <token>" (scheme in any case), or NULL. */
static const char *bearer_token(struct dapi_req *r)
{
    const char *v = dapi_req_header(r, "Authorization");
    if(!v || strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    while(*v == ' ')
        v++;
    return v;
}

/* A Bearer token: verified against --jwks-file; the principal comes from its claims. */
static int bearer(struct dapi_req *r, struct dapi_app *app, const char *token,
                  struct dapi_principal *who)
{
    static const char challenge[] = "Bearer realm=\"dapi\", error=\"invalid_token\"";
    if(!app->jwks) {
        dapi_respond_error_h(r, 401, "Bearer tokens are not accepted by this server",
                             "no --jwks-file is set: send an x-api-key header", "WWW-Authenticate",
                             "Bearer realm=\"dapi\"");
        return -1;
    }
    char why[160];
    size_t len = strlen(token);
    if(dapi_jwt_verify(app->jwks, app->jwt, token, len, dapi_clock_wall_s(), who, why,
                       sizeof why)) {
        dapi_respond_error_h(r, 401, "Invalid token", why, "WWW-Authenticate", challenge);
        return -1;
    }
    return 0;
}

/* Takes one request from the principal's bucket: RateLimit headers on the answer, or 429. */
static int rate_limit(struct dapi_req *r, struct dapi_app *app, const struct dapi_principal *who)
{
    double rate = who->rate > 0 ? who->rate : who->rate < 0 ? 0 : app->rate_default;
    if(rate <= 0 || !app->limiter)
        return 0; /* no limit */
    double burst = who->burst > 0  ? who->burst
                   : who->rate > 0 ? (ceil(rate) > 1 ? ceil(rate) : 1)
                                   : app->burst_default;
    if(burst < 1)
        burst = 1;
    struct dapi_limit_result res;
    app->limiter->take(app->limiter, who->owner, rate, burst, dapi_clock_mono_ms(), &res);
    char policy[64], state[96];
    long long window = (long long)ceil(burst / rate);
    snprintf(policy, sizeof policy, "%lld;w=%lld", (long long)burst, window > 0 ? window : 1);
    snprintf(state, sizeof state, "limit=%lld, remaining=%lld, reset=%lld", (long long)burst,
             (long long)res.remaining, (long long)((res.reset_ms + 999) / 1000));
    dapi_req_add_header(r, "RateLimit-Policy", policy);
    dapi_req_add_header(r, "RateLimit", state);
    if(res.allowed)
        return 0;
    char ra[24], details[200];
    snprintf(ra, sizeof ra, "%lld", (long long)((res.retry_after_ms + 999) / 1000));
    int per_min = rate < 1; /* 0.05 per second reads better as 3 per minute */
    snprintf(details, sizeof details,
             "at most %.6g requests per %s with bursts of %lld for this %s; retry in %s s",
             per_min ? rate * 60 : rate, per_min ? "minute" : "second", (long long)burst,
             strncmp(who->id, "jwt:", 4) == 0 ? "token's subject" : "key", ra);
    dapi_respond_error_h(r, 429, "Rate limit exceeded", details, "Retry-After", ra);
    return -1;
}

static int authenticate(struct dapi_req *r, struct dapi_app *app, struct dapi_principal *who)
{
    const char *key = dapi_req_header(r, "x-api-key");
    dapi_principal_clear(who);
    who->scope.all = 1;
    /* A token when the server takes tokens; without --jwks-file, an Authorization header
     * beside an x-api-key (meant for another hop, say) is left alone. */
    const char *token = bearer_token(r);
    if(token && (app->jwks || !key || !*key))
        return bearer(r, app, token, who);
    if(!key || !*key) {
        dapi_respond_error(r, 401, "Missing API key. Please provide 'x-api-key' header", NULL);
        return -1;
    }
    who->client_key = key;
    if(app->keystore) { /* a store key is answered here, whatever the other sources hold */
        enum dapi_ks_result res = store_key(r, app, key, who);
        if(res != DAPI_KS_NOT_OURS)
            return res == DAPI_KS_OK ? 0 : -1;
    }
    if(!app->keys) { /* forwarding: Nekt checks the key; its hash still owns the slugs */
        dapi_sha256(key, strlen(key), who->owner);
        return 0;
    }
    if(!dapi_keys_check(app->keys, key, strlen(key), who->owner)) {
        dapi_respond_error(r, 401, "Invalid API key", NULL);
        return -1;
    }
    return 0;
}

int dapi_api_auth(struct dapi_req *r, struct dapi_app *app, struct dapi_principal *who)
{
    if(authenticate(r, app, who))
        return -1;
    return rate_limit(r, app, who);
}

int dapi_api_register_routes(struct dapi_app *app, const struct dapi_route *table, size_t n)
{
    size_t slots = sizeof app->route_tables / sizeof app->route_tables[0];
    for(size_t i = 0; i < slots; i++)
        if(!app->route_tables[i]) {
            app->route_tables[i] = table;
            app->route_counts[i] = n;
            return 0;
        }
    return -1;
}

/* Answers with the route: its method's handler, else its other handler, else 405. */
static void answer(struct dapi_req *r, struct dapi_app *app, const struct dapi_route *rt,
                   const char *slug)
{
    const char *method = dapi_req_method(r);
    dapi_handler *h = strcmp(method, "GET") == 0    ? rt->get
                      : strcmp(method, "HEAD") == 0 ? rt->head
                      : strcmp(method, "POST") == 0 ? rt->post
                                                    : NULL;
    if(!h)
        h = rt->other;
    if(!h) {
        dapi_respond_error_h(r, 405, "Method not allowed", NULL, "Allow", rt->allow);
        return;
    }
    if(rt->auth && atomic_load(&app->stopping)) { /* a keep-alive request after SIGTERM */
        dapi_respond_err(r, DAPI_ERR_SHUTDOWN, NULL);
        return;
    }
    h(r, app, rt->suffix && strcmp(rt->suffix, DAPI_ROUTE_ANY) != 0 ? slug : NULL);
}

/* The first route of table (n routes) that path matches, or NULL. */
static const struct dapi_route *find(const struct dapi_route *table, size_t n, const char *path,
                                     char *slug, size_t len)
{
    for(size_t i = 0; i < n; i++)
        if(match(&table[i], path, slug, len))
            return &table[i];
    return NULL;
}

void dapi_api_dispatch(struct dapi_req *r, void *arg)
{
    struct dapi_app *app = arg;
    const char *path = dapi_req_path(r);
    char slug[DAPI_SLUG_MAX + 1];
    const struct dapi_route *rt = find(routes, sizeof routes / sizeof routes[0], path, slug,
                                       sizeof slug);
    for(size_t t = 0; !rt && t < sizeof app->route_tables / sizeof app->route_tables[0]; t++)
        if(app->route_tables[t])
            rt = find(app->route_tables[t], app->route_counts[t], path, slug, sizeof slug);
    if(rt) {
        dapi_req_set_route(r, rt->name ? rt->name : rt->prefix);
        answer(r, app, rt, slug);
    } else
        dapi_respond_error(r, 404, "Not found", NULL);
}

int dapi_api_scope_still_covers(struct dapi_req *r, struct dapi_app *app,
                                const struct dapi_principal *who, const char *slug)
{
    char layer[DAPI_LAYER_NAME_MAX + 1];
    if(who->scope.all || !app->queries ||
       !dapi_queries_scope_lost(app->queries, slug, who->owner, &who->scope, layer, sizeof layer))
        return 0;
    char msg[DAPI_LAYER_NAME_MAX + 160];
    if(*layer)
        snprintf(msg, sizeof msg,
                 "this API key may no longer read layer '%s', which this query could read "
                 "when it was created",
                 layer);
    else
        snprintf(msg, sizeof msg,
                 "this query was created when this API key could read every "
                 "layer; its layers have been limited since");
    dapi_respond_err(r, DAPI_ERR_FORBIDDEN, msg);
    return -1;
}
