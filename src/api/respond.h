/* Helpers that build dapi's JSON responses (product.md §3 error envelope). */
#ifndef DAPI_RESPOND_H
#define DAPI_RESPOND_H

#include <stdint.h>
#include "http/http.h"

/* {"error": msg} with an optional "details" (both escaped). */
void dapi_respond_error(struct dapi_req *r, int status, const char *msg, const char *details);
/* Like dapi_respond_error with one extra header (e.g. Allow, Retry-After). */
void dapi_respond_error_h(struct dapi_req *r, int status, const char *msg, const char *details,
                          const char *header, const char *value);
/* The reference's execution-failure shape, keys sorted as Flask's jsonify does:
 * {"details","error":"Query execution failed","page_number","query_slug"}. */
void dapi_respond_exec_error(struct dapi_req *r, int status, const char *details,
                             const char *page_text, const char *slug);

#endif
