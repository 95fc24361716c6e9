/* GET /api/openapi.json: the OpenAPI 3.1 description of dapi's endpoints. The document is
 * docs/openapi.json, embedded at build time (scripts/embed-openapi.py writes its bytes into
 * $(B)/gen/openapi.c, which also checks that its info.version is DAPI_VERSION). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "base/buf.h"
#include "endpoints/endpoints.h"

extern const char dapi_openapi_json[];
extern const size_t dapi_openapi_json_len;

/* No key needed: the generic document is public metadata (no data, no setting of this
 * server), and the tools that read it (client generators, API explorers) fetch it before they
 * have a key. The endpoints of --endpoints-file are this server's own settings (their names,
 * parameters, allowed values and patterns may tell about the data), so they are described
 * only to a caller with a key, and only those its scope may call — as GET /api/endpoints
 * lists them. */
/* The document with a path of its own for each endpoint of the set in use that scope may
 * call, inserted at the start of "paths" (NULL: none loaded, none allowed, or no memory —
 * the generic document is served then). */
static char *with_endpoints(struct dapi_app *app, const struct dapi_scope *scope, size_t *len)
{
    static const char paths[] = "\"paths\": {";
    pthread_mutex_lock(&app->endpoints_lock);
    struct dapi_endpoints *e = app->endpoints;
    dapi_endpoints_ref(e);
    pthread_mutex_unlock(&app->endpoints_lock);
    size_t n = 0;
    char *entries = dapi_endpoints_count(e) ? dapi_endpoints_openapi(e, scope, &n) : NULL;
    dapi_endpoints_unref(e);
    const char *at = entries && n ? strstr(dapi_openapi_json, paths) : NULL;
    if(!at) {
        free(entries);
        return NULL;
    }
    size_t head = (size_t)(at - dapi_openapi_json) + sizeof paths - 1;
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    dapi_buf_add(&b, dapi_openapi_json, head);
    dapi_buf_add(&b, entries, n);
    dapi_buf_add(&b, dapi_openapi_json + head, dapi_openapi_json_len - head);
    free(entries);
    return b.data ? dapi_buf_take(&b, len) : NULL;
}

void dapi_api_openapi(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    size_t len = 0;
    char *doc = NULL;
    if(dapi_req_header(r, "x-api-key") || dapi_req_header(r, "Authorization")) {
        /* a key is checked as on any route: 401 for a wrong one, the rate limit applies */
        struct dapi_principal who;
        if(dapi_api_auth(r, app, &who))
            return;
        doc = with_endpoints(app, &who.scope, &len);
    }
    if(doc) {
        dapi_req_respond(r, 200, doc, len, NULL, NULL);
        return;
    }
    char *copy = malloc(dapi_openapi_json_len + 1); /* the server frees what it sends */
    if(!copy) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    memcpy(copy, dapi_openapi_json, dapi_openapi_json_len + 1);
    dapi_req_respond(r, 200, copy, dapi_openapi_json_len, NULL, NULL);
}
