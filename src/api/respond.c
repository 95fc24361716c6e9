#include "api/respond.h"

#include <string.h>

#include "base/buf.h"
#include "base/json.h"

void dapi_respond_error_h(struct dapi_req *r, int status, const char *msg, const char *details,
                          const char *header, const char *value)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 256 * 1024);
    /* keys in alphabetical order, as the reference (Flask jsonify) sorts them */
    dapi_buf_addc(&b, '{');
    if(details) {
        dapi_buf_adds(&b, "\"details\":");
        dapi_json_str(&b, details, strlen(details));
        dapi_buf_addc(&b, ',');
    }
    dapi_buf_adds(&b, "\"error\":");
    dapi_json_str(&b, msg, strlen(msg));
    dapi_buf_addc(&b, '}');
    size_t len = 0;
    char *body = dapi_buf_take(&b, &len);
    dapi_req_respond(r, status, body, body ? len : 0, header, value);
}

void dapi_respond_error(struct dapi_req *r, int status, const char *msg, const char *details)
{
    dapi_respond_error_h(r, status, msg, details, NULL, NULL);
}

void dapi_respond_exec_error(struct dapi_req *r, int status, const char *details,
                             const char *page_text, const char *slug)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 256 * 1024);
    dapi_buf_adds(&b, "{\"details\":");
    dapi_json_str(&b, details, strlen(details));
    dapi_buf_addf(&b, ",\"error\":\"Query execution failed\",\"page_number\":%s,\"query_slug\":",
                  page_text);
    dapi_json_str(&b, slug, strlen(slug));
    dapi_buf_addc(&b, '}');
    size_t len = 0;
    char *body = dapi_buf_take(&b, &len);
    dapi_req_respond(r, status, body, body ? len : 0, NULL, NULL);
}
