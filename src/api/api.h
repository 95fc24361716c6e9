/* Endpoint handlers (one file per group) and the helpers they share. */
#ifndef DAPI_API_H
#define DAPI_API_H

#include "auth/principal.h"
#include "http/http.h"

struct dapi_app;

/* An endpoint's handler: slug is the {slug} segment of a slug route, else NULL. */
typedef void dapi_handler(struct dapi_req *r, struct dapi_app *app, const char *slug);

#define DAPI_ROUTE_ANY "*" /* suffix: every path that starts with prefix */

/* One entry of the route table. The first route whose path matches answers: with the handler
 * of the request's method, else with other, else 405 with an Allow header. dapi's own routes
 * live in api.c; a module that serves more paths (the Nekt emulator) registers its own table
 * with dapi_api_register_routes, tried after dapi's. */
struct dapi_route {
    const char *prefix; /* path, or the part before the {slug} segment, or (DAPI_ROUTE_ANY) a
                           path prefix */
    const char *suffix; /* NULL = exact path; DAPI_ROUTE_ANY; "" = {slug} ends the
                           path; else the part after {slug} */
    int (*also)(const char *path); /* NULL, or a further test of the path (non-zero: match) */
    int auth;                      /* answers 503 once the server is stopping */
    const char *allow;             /* methods, for the Allow header of 405 */
    dapi_handler *get, *head, *post;
    dapi_handler *other; /* the methods without a handler above; NULL = 405 + Allow */
    const char *name;    /* for metrics by route (NULL: prefix) */
};

/* Adds a table of n routes (static storage) for the life of the app. Call before the HTTP
 * server starts. Returns -1 if the app's slots for tables are all taken. */
int dapi_api_register_routes(struct dapi_app *app, const struct dapi_route *routes, size_t n);

/* Authenticates the request: answers 401 and returns -1 when its x-api-key is missing or
 * unknown (when dapi forwards client keys to Nekt, any non-empty key is accepted: Nekt checks
 * it); else fills who (the owner hash, the scope, the key as sent, borrowed from the request)
 * and returns 0. */
int dapi_api_auth(struct dapi_req *r, struct dapi_app *app, struct dapi_principal *who);

/* A key may read what its query read only while its scope still covers the scope the query
 * was created under: a key whose layers were narrowed since (dapi keys, a token's claims)
 * gets 403 for the results and exports of its earlier queries, answered here (returns -1).
 * 0: allowed, or not this key's query (the caller answers 404 as for any other). */
int dapi_api_scope_still_covers(struct dapi_req *r, struct dapi_app *app,
                                const struct dapi_principal *who, const char *slug);

/* POST /api/queries */
void dapi_api_create_query(struct dapi_req *r, struct dapi_app *app, const char *unused);
/* GET /api/queries/{slug}/results */
void dapi_api_results(struct dapi_req *r, struct dapi_app *app, const char *slug);
/* GET /metrics and GET /api/ready (ops.c); dapi_api_ops_init notes the start time. */
void dapi_api_metrics(struct dapi_req *r, struct dapi_app *app, const char *unused);
void dapi_api_ready(struct dapi_req *r, struct dapi_app *app, const char *unused);
void dapi_api_ops_init(void);
/* Is addr (as text) a loopback address: 127.0.0.0/8, ::1, ::ffff:127.x.y.z? */
int dapi_api_loopback(const char *addr);
/* GET /api/openapi.json (docs/openapi.json, embedded at build time; no key) */
void dapi_api_openapi(struct dapi_req *r, struct dapi_app *app, const char *unused);

/* console.c: GET/HEAD / (the web console's page) and GET/HEAD /console/{file} (its other
 * files), no key */
void dapi_api_console_page(struct dapi_req *r, struct dapi_app *app, const char *unused);
void dapi_api_console_file(struct dapi_req *r, struct dapi_app *app, const char *name);

/* GET /api/layers (api/discovery.c) */
void dapi_api_layers(struct dapi_req *r, struct dapi_app *app, const char *unused);
/* GET /api/layers/{layer}/tables/{table} */
void dapi_api_describe(struct dapi_req *r, struct dapi_app *app, const char *unused);
/* Splits a decoded path /api/layers/{layer}/tables/{table} into layer and table (each n
 * bytes with the NUL): 0, or -1 when the path has another shape or a name is empty or too
 * long. */
int dapi_api_split_table_path(const char *path, char *layer, char *table, size_t n);
/* export.c: GET/HEAD /api/queries/{slug}/export */
void dapi_api_export(struct dapi_req *r, struct dapi_app *app, const char *slug);
/* export.c: the index of an export format name (csv, tsv, ndjson, json, parquet), or -1. */
int dapi_api_export_format(const char *name);
/* The export of who's query slug in format f as the answer to r, which the caller has
 * deferred (a running query is followed or waited for as GET …/export does). From any
 * thread. */
void dapi_api_export_deferred(struct dapi_req *r, struct dapi_app *app,
                              const struct dapi_principal *who, const char *slug, int f);
/* lifecycle.c: GET/HEAD /api/queries/{slug}, DELETE /api/queries/{slug} (other methods: 405),
 * GET/HEAD /api/queries */
void dapi_api_query_status(struct dapi_req *r, struct dapi_app *app, const char *slug);
void dapi_api_query_delete(struct dapi_req *r, struct dapi_app *app, const char *slug);
void dapi_api_list_queries(struct dapi_req *r, struct dapi_app *app, const char *unused);

/* params.c: the "params" object of POST /api/queries in canonical form (names sorted, values
 * as JSON types them; docs/api.md "Bind parameters"), owned; NULL with err set (a client
 * error: names not $name-able, values neither scalars nor lists of scalars). exact: the same
 * object read with dapi_jv_parse_numtext, or NULL: numbers that are not integers then keep
 * the client's digits. */
struct dapi_jv;
char *dapi_api_params_json(const struct dapi_jv *params, const struct dapi_jv *exact, char *err,
                           size_t errlen);

/* endpoints.c: GET /api/endpoints, GET /api/endpoints/{name} (docs/endpoints.md) */
void dapi_api_list_endpoints(struct dapi_req *r, struct dapi_app *app, const char *unused);
void dapi_api_call_endpoint(struct dapi_req *r, struct dapi_app *app, const char *name);

/* Python int() on text: surrounding whitespace, optional sign, digits with single '_'
 * between them. On success returns 0, sets *neg, writes the digits without leading zeros
 * into digits (size n; "0" for zero) and *value (clamped to INT64_MAX when *big). */
int dapi_api_parse_pyint(const char *s, size_t len, int *neg, char *digits, size_t n,
                         int64_t *value, int *big);

#endif
