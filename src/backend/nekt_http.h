/* Calls to the Nekt Data API for the Nekt backend: retries (retry.h), size caps, defensive
 * parsing, and the upstream's error text extracted as the reference does
 * (errors[0].detail → detail → message → error → raw text). Private to src/backend/nekt*.c. */
#ifndef DAPI_NEKT_HTTP_H
#define DAPI_NEKT_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include "backend/backend.h"
#include "base/jsonin.h"
#include "dapi/err.h"

struct dapi_backend_env;

struct nekt_reply {
    int status;          /* HTTP status (0: none) */
    struct dapi_jv *doc; /* parsed JSON object body (2xx only); free with dapi_jv_free */
    char details[768];   /* why it failed, for the client */
};

/* {"k": v} as JSON text (malloc'd), the body of a call with one string field; NULL without
 * memory. */
char *nekt_json_body1(const char *k, const char *v);
/* The explanation in a failed upstream state document (error, state_change_reason, message
 * or detail: the first non-empty one), or NULL. */
const char *nekt_state_message(const struct dapi_jv *doc);
/* A failed upstream call made to create a query: the reference's message (what) with the
 * upstream's explanation; a key the upstream refused is said to be so (401/403). */
void nekt_reply_creation_failure(struct dapi_reply rp, enum dapi_err result, const char *what,
                                 const char *details);
/* One JSON call: method path (appended to --nekt-url), optional JSON body, with key.
 * Returns DAPI_OK for a 2xx with a JSON object body; else DAPI_ERR_AUTH (401),
 * DAPI_ERR_FORBIDDEN (403), DAPI_ERR_NOT_FOUND (404), DAPI_ERR_INVALID (other 4xx but 408
 * and 429), DAPI_ERR_UPSTREAM (5xx, 408 or 429 after retries, garbage, transport failures),
 * DAPI_ERR_UPSTREAM_TIMEOUT (no answer within the connect or total timeout). out->status is
 * the last HTTP status (0: none), so a 2xx with an unusable body can be told apart. */
enum dapi_err nekt_call(const struct dapi_backend_env *env, const char *method, const char *path,
                        const char *body, const char *key, int idempotent, struct nekt_reply *out);

/* Is the upstream reachable? A thread asks every 10 s — one GET of --nekt-url itself, no
 * retry, 2 s to connect, 3 s in all — and any HTTP answer means yes; GET /api/ready reads
 * the last outcome (never waits for the network). */
struct nekt_reach;
struct nekt_reach *nekt_reach_start(const struct dapi_backend_env *env);
/* 0: reachable at the last check; -1: not, or not checked yet (why says which). */
int nekt_reach_status(struct nekt_reach *r, char *why, size_t n);
void nekt_reach_stop(struct nekt_reach *r);
/* Downloads url into the file at path (created/truncated), at most max bytes.
 * DAPI_ERR_FORBIDDEN means the URL was refused (expired presigned URL: execute again);
 * DAPI_ERR_UPSTREAM_TIMEOUT that the download took too long. */
enum dapi_err nekt_download(const struct dapi_backend_env *env, const char *url, const char *path,
                            uint64_t max, uint64_t *got, char *details, size_t dlen);

/* Frees this thread's HTTP handle (called by nothing but thread exit; see nekt_http.c). */
void nekt_http_init(void);

#endif
