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

/* No key: the document is public metadata (no data, no setting of this server), and the
 * tools that read it (client generators, API explorers) fetch it before they have a key. */
/* With --endpoints-file: the document with a path of its own for each endpoint of the set in
 * use, inserted at the start of "paths" (NULL: none loaded, or no memory). */
static char *with_endpoints(struct dapi_app *app, size_t *len)
{
    static const char paths[] = "\"paths\": {";
    pthread_mutex_lock(&app->endpoints_lock);
    struct dapi_endpoints *e = app->endpoints;
    dapi_endpoints_ref(e);
    pthread_mutex_unlock(&app->endpoints_lock);
    size_t n = 0;
    char *entries = dapi_endpoints_count(e) ? dapi_endpoints_openapi(e, &n) : NULL;
    dapi_endpoints_unref(e);
    const char *at = entries ? strstr(dapi_openapi_json, paths) : NULL;
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
    char *doc = with_endpoints(app, &len);
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
