/* The running server: every long-lived part, owned by serve.c, borrowed by the API. */
#ifndef DAPI_APP_H
#define DAPI_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include "backend/backend.h"

struct dapi_emu;
struct dapi_endpoints;
struct dapi_engine;
struct dapi_http;
struct dapi_jwks;
struct dapi_keys;
struct dapi_keystore;
struct dapi_limiter;
struct dapi_pool;
struct dapi_queries;
struct dapi_req;
struct dapi_probe;
struct dapi_route;

struct dapi_app {
    const struct dapi_config *cfg;
    const struct dapi_backend *backend;  /* the registry's row for --backend */
    void *backend_state;                 /* made by its start */
    struct dapi_backend_env backend_env; /* what it may use (backend.h) */
    struct dapi_keys *keys;              /* NULL when client keys are forwarded to Nekt */
    struct dapi_keystore *keystore;      /* the key store (auth/keystore.h); always open */
    struct dapi_jwks *jwks;              /* --jwks-file: Bearer tokens accepted; else NULL */
    const struct dapi_jwt_opts *jwt;     /* audience, issuer, skew, default scope */
    struct dapi_limiter *limiter;        /* rate limits (auth/ratelimit.h) */
    double rate_default, burst_default;  /* --rate-limit (per second; 0 = none), --rate-burst */
    struct dapi_engine *engine;
    struct dapi_queries *queries;
    struct dapi_page_cache *page_cache; /* decoded result pages (--page-cache-bytes) */
    struct dapi_pool *check_pool;       /* validates SQL for POST /api/queries (short jobs) */
    struct dapi_pool *run_pool;         /* runs and materialises queries / talks to Nekt */
    int run_threads;
    struct dapi_emu *emu;     /* --emulate-nekt (emu/emu.h) */
    struct dapi_probe *probe; /* is the engine answering? (GET /api/health, probe.h) */
    struct dapi_http *http;
    /* --endpoints-file: the set in use (NULL: none), swapped whole by a reload under the lock;
     * a request takes a reference to the set it reads (endpoints/endpoints.h) */
    struct dapi_endpoints *endpoints;
    pthread_mutex_t endpoints_lock;
    /* route tables registered by other modules (api.h: dapi_api_register_routes) */
    const struct dapi_route *route_tables[2];
    size_t route_counts[2];
    atomic_int stopping;
};

/* The HTTP dispatch function (src/api/api.c). */
void dapi_api_dispatch(struct dapi_req *r, void *app);

/* `dapi serve` (src/app/serve.c). */
int dapi_serve_main(int argc, char **argv);

#endif
