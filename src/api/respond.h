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

/* 200 {"message":"Query created successfully","query_slug","sql_query","status":"success"}. */
void dapi_respond_created(struct dapi_req *r, const char *slug, const char *sql);
/* The answer to a query that could not be created (busy store, I/O, …). */
void dapi_respond_create_failure(struct dapi_req *r, int err);
/* Like dapi_respond_exec_error; an upstream key rejection (err = DAPI_ERR_AUTH/FORBIDDEN)
 * says so in "error". */
void dapi_respond_exec_error_code(struct dapi_req *r, int status, const char *details,
                                  const char *page_text, const char *slug, int err);
/* 200 {"query_slug","page","data":[rows]} where rows is the page's rows joined by ','. */
void dapi_respond_page(struct dapi_req *r, const char *slug, const char *page_text,
                       const char *rows, size_t len);

#endif
