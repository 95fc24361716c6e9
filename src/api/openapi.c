/* GET /api/openapi.json: the OpenAPI 3.1 description of dapi's endpoints. The document is
 * docs/openapi.json, embedded at build time (scripts/embed-openapi.py writes its bytes into
 * $(B)/gen/openapi.c, which also checks that its info.version is DAPI_VERSION). */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/respond.h"

extern const char dapi_openapi_json[];
extern const size_t dapi_openapi_json_len;

/* No key: the document is public metadata (no data, no setting of this server), and the
 * tools that read it (client generators, API explorers) fetch it before they have a key. */
void dapi_api_openapi(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    char *copy = malloc(dapi_openapi_json_len + 1); /* the server frees what it sends */
    if(!copy) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    memcpy(copy, dapi_openapi_json, dapi_openapi_json_len + 1);
    dapi_req_respond(r, 200, copy, dapi_openapi_json_len, NULL, NULL);
}
