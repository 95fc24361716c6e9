/* Endpoint handlers (one file per group) and the helpers they share. */
#ifndef DAPI_API_H
#define DAPI_API_H

#include "http/http.h"

struct dapi_app;

/* Checks x-api-key: answers 401 and returns NULL when missing or unknown (when dapi forwards
 * client keys to Nekt, any non-empty key is accepted: Nekt checks it); else writes the key's
 * hash (DAPI_KEY_HASH_LEN bytes) and returns the key (borrowed from the request). */
const char *dapi_api_auth(struct dapi_req *r, struct dapi_app *app, unsigned char *hash);

/* POST /api/queries */
void dapi_api_create_query(struct dapi_req *r, struct dapi_app *app, const char *unused);
/* GET /api/queries/{slug}/results */
void dapi_api_results(struct dapi_req *r, struct dapi_app *app, const char *slug);

/* Python int() on text: surrounding whitespace, optional sign, digits with single '_'
 * between them. On success returns 0, sets *neg, writes the digits without leading zeros
 * into digits (size n; "0" for zero) and *value (clamped to INT64_MAX when *big). */
int dapi_api_parse_pyint(const char *s, size_t len, int *neg, char *digits, size_t n,
                         int64_t *value, int *big);

#endif
