/* Helpers that build dapi's JSON responses (the error envelope of docs/api.md). */
#ifndef DAPI_RESPOND_H
#define DAPI_RESPOND_H

#include <stddef.h>
#include <stdint.h>
#include "backend/backend.h"
#include "dapi/err.h"
#include "http/http.h"

struct dapi_page_cache;

/* The answer for an error code, from the one table (src/base/err.c): dapi_err_status,
 * {"error": dapi_err_message} with the optional "details", and Retry-After when
 * dapi_err_retry_after gives one. Prefer it to dapi_respond_error where they agree. */
void dapi_respond_err(struct dapi_req *r, enum dapi_err err, const char *details);
/* What dapi_respond_err sends, without a request: returns the body (malloc'd, *len bytes;
 * NULL only if memory runs out), sets *status and retry_after ("" = no header). */
char *dapi_err_answer(enum dapi_err err, const char *details, int *status, char retry_after[16],
                      size_t *len) __attribute__((warn_unused_result));

/* The longest details an answer carries, in bytes of text (at most 6 bytes of JSON each, so
 * every error body stays far below its 256 KiB cap). */
#define DAPI_DETAILS_MAX (32 * 1024)
/* details as an answer shows them: unchanged up to DAPI_DETAILS_MAX bytes; longer ones are cut
 * to their first DAPI_DETAILS_MAX bytes (never inside a UTF-8 sequence) followed by
 * " ... (cut to its first N of M bytes)" (dapi_buf_add_cut), a copy put in *owned (free it;
 * NULL when nothing was cut). Returns NULL for NULL details, or when the copy cannot be
 * allocated. */
const char *dapi_bounded_details(const char *details, char **owned);

/* {"error": msg} with an optional "details" (both escaped); details are bounded as
 * dapi_bounded_details says, so the body is never sent cut or garbled, nor without them. */
void dapi_respond_error(struct dapi_req *r, int status, const char *msg, const char *details);
/* Like dapi_respond_error with one extra header (e.g. Allow, Retry-After). */
void dapi_respond_error_h(struct dapi_req *r, int status, const char *msg, const char *details,
                          const char *header, const char *value);
/* The reference's execution-failure shape, keys sorted as Flask's jsonify does:
 * {"details","error":"Query execution failed","page_number","query_slug"}. details may be
 * NULL (then it repeats the error); they are bounded as dapi_bounded_details says. */
void dapi_respond_exec_error(struct dapi_req *r, int status, const char *details,
                             const char *page_text, const char *slug);

/* 200 {"message":"Query created successfully","query_slug","sql_query","status":"success"}. */
void dapi_respond_created(struct dapi_req *r, const char *slug, const char *sql);
/* Like dapi_respond_exec_error; an upstream key rejection (err = DAPI_ERR_AUTH/FORBIDDEN)
 * says so in "error". */
void dapi_respond_exec_error_code(struct dapi_req *r, int status, const char *details,
                                  const char *page_text, const char *slug, enum dapi_err err);
/* A backend's outcome as the answer to request req (a struct dapi_req *): the
 * dapi_backend_done callback the API layer gives every backend call. */
void dapi_respond_outcome(void *req, enum dapi_err err, const struct dapi_outcome *out);

/* A results request (GET …/results) as its answer needs it: read on the event thread,
 * borrowed from the request (which lives until answered). */
struct dapi_page_req {
    struct dapi_req *r;
    struct dapi_page_cache *cache; /* decoded pages (NULL: none) */
    int zstd;                      /* Accept-Encoding accepts zstd */
    int gzip;                      /* … gzip (used when it does not accept zstd) */
    const char *if_none_match;     /* NULL: absent */
};
/* The dapi_backend_done of a results request (ctx: a malloc'd struct dapi_page_req, freed).
 * A page of a stored result is sent from the page cache (store/pagecache.h), not copied: as
 * its stored zstd frame between two small frames of the envelope (Content-Encoding: zstd)
 * when accepted, else decoded and gzipped (Content-Encoding: gzip) when that is accepted,
 * else decoded. A finished page carries ETag and Cache-Control and
 * answers a matching If-None-Match with 304. Other outcomes: dapi_respond_outcome. */
void dapi_respond_page_outcome(void *ctx, enum dapi_err err, const struct dapi_outcome *out);

/* 200 {"query_slug","page","data":[rows]} where rows is the page's rows joined by ','. */
void dapi_respond_page(struct dapi_req *r, const char *slug, const char *page_text,
                       const char *rows, size_t len);

/* The bodies above, built in a buffer capped at max bytes: a malloc'd string (*len bytes),
 * or NULL if it does not fit or memory runs out — never a partial body. */
char *dapi_error_body(const char *msg, const char *details, size_t max, size_t *len)
    __attribute__((warn_unused_result));
char *dapi_exec_error_body(const char *error, const char *details, const char *page_text,
                           const char *slug, size_t max, size_t *len)
    __attribute__((warn_unused_result));

#endif
