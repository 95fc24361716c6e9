/* GET /api/layers and GET /api/layers/{layer}/tables/{table}: schema discovery (docs/api.md
 * "Schema discovery"). Authenticated and rate-limited like every route; the work is the
 * backend's (src/backend/discovery.c for the local lake), answered later from its pool. */
#include <string.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "backend/backend.h"

#define LAYERS_PREFIX "/api/layers/"
#define NAME_MAX_BYTES 1024 /* far beyond any file name: longer is no table */

/* A backend without discovery (Nekt: no lake of ours to list). */
static void not_available(struct dapi_req *r, struct dapi_app *app)
{
    char details[200];
    snprintf(details, sizeof details,
             "schema discovery reads the local lake; --backend %s has none", app->backend->name);
    dapi_respond_error(r, 501, "Not implemented", details);
}

void dapi_api_layers(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    if(!app->backend->ops->layers) {
        not_available(r, app);
        return;
    }
    struct dapi_reply rp = {dapi_respond_outcome, r};
    dapi_req_defer(r); /* answered from the check pool */
    app->backend->ops->layers(app->backend_state, &who, rp);
}

int dapi_api_split_table_path(const char *path, char *layer, char *table, size_t n)
{
    size_t pl = strlen(LAYERS_PREFIX);
    if(strncmp(path, LAYERS_PREFIX, pl) != 0)
        return -1;
    const char *l = path + pl, *slash = strchr(l, '/');
    if(!slash || slash == l || (size_t)(slash - l) >= n || strncmp(slash, "/tables/", 8) != 0)
        return -1;
    const char *t = slash + 8;
    size_t tl = strlen(t);
    if(!tl || tl >= n || strchr(t, '/'))
        return -1;
    memcpy(layer, l, (size_t)(slash - l));
    layer[slash - l] = '\0';
    memcpy(table, t, tl + 1);
    return 0;
}

void dapi_api_describe(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    /* libmicrohttpd has decoded the path (%20, %22, UTF-8 …); names hold no '/', so the
     * first '/' after the layer is the separator */
    char layer[NAME_MAX_BYTES + 1], table[NAME_MAX_BYTES + 1];
    if(dapi_api_split_table_path(dapi_req_path(r), layer, table, sizeof layer)) {
        dapi_respond_error(r, 404, "Not found", NULL);
        return;
    }
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    if(!app->backend->ops->describe) {
        not_available(r, app);
        return;
    }
    struct dapi_reply rp = {dapi_respond_outcome, r};
    dapi_req_defer(r); /* answered from the check pool */
    app->backend->ops->describe(app->backend_state, layer, table, &who, rp);
}
