/* Routing and authentication. One table of routes; each endpoint's handler lives in its own
 * file (health here, queries and results in queries.c). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "app/probe.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"

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

struct route {
    const char *prefix; /* path, or the part before the {slug} segment */
    const char *suffix; /* NULL = exact path; else the part after {slug} */
    int auth;
    const char *allow;  /* methods, for the Allow header of 405 */
    void (*get)(struct dapi_req *, struct dapi_app *, const char *slug);
    void (*post)(struct dapi_req *, struct dapi_app *, const char *slug);
};

static const struct route routes[] = {
    {"/api/health", NULL, 0, "GET, HEAD", health, NULL},
    {"/api/queries", NULL, 1, "POST", NULL, dapi_api_create_query},
    {"/api/queries/", "/results", 1, "GET, HEAD", dapi_api_results, NULL},
};

/* Matches path against a route; for slug routes copies the slug into slug (size n). */
static int match(const struct route *rt, const char *path, char *slug, size_t n)
{
    size_t pl = strlen(rt->prefix);
    if(!rt->suffix)
        return strcmp(path, rt->prefix) == 0;
    if(strncmp(path, rt->prefix, pl) != 0)
        return 0;
    const char *s = path + pl, *slash = strchr(s, '/');
    if(!slash || slash == s || strcmp(slash, rt->suffix) != 0)
        return 0;
    size_t len = (size_t)(slash - s);
    if(len >= n)
        len = n - 1; /* too long to be ours: truncated, so it will not be found */
    memcpy(slug, s, len);
    slug[len] = '\0';
    return 1;
}

const char *dapi_api_auth(struct dapi_req *r, struct dapi_app *app, unsigned char *hash)
{
    const char *key = dapi_req_header(r, "x-api-key");
    if(!key || !*key) {
        dapi_respond_error(r, 401, "Missing API key. Please provide 'x-api-key' header", NULL);
        return NULL;
    }
    if(!app->keys) { /* forwarding: Nekt checks the key; its hash still owns the slugs */
        dapi_sha256(key, strlen(key), hash);
        return key;
    }
    if(!dapi_keys_check(app->keys, key, strlen(key), hash)) {
        dapi_respond_error(r, 401, "Invalid API key", NULL);
        return NULL;
    }
    return key;
}

void dapi_api_dispatch(struct dapi_req *r, void *arg)
{
    struct dapi_app *app = arg;
    const char *path = dapi_req_path(r), *method = dapi_req_method(r);
    char slug[DAPI_SLUG_MAX + 1];
    if(app->emu && dapi_emu_dispatch(r, app))
        return;
    for(size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        if(!match(rt, path, slug, sizeof slug))
            continue;
        int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        void (*h)(struct dapi_req *, struct dapi_app *, const char *) =
            is_get ? rt->get : strcmp(method, "POST") == 0 ? rt->post : NULL;
        if(!h) {
            dapi_respond_error_h(r, 405, "Method not allowed", NULL, "Allow", rt->allow);
            return;
        }
        if(rt->auth && atomic_load(&app->stopping)) { /* a keep-alive request after SIGTERM */
            dapi_respond_err(r, DAPI_ERR_SHUTDOWN, NULL);
            return;
        }
        h(r, app, rt->suffix ? slug : NULL);
        return;
    }
    dapi_respond_error(r, 404, "Not found", NULL);
}
