/* The running server: every long-lived part, owned by serve.c, borrowed by the API. */
#ifndef DAPI_APP_H
#define DAPI_APP_H

#include <stdatomic.h>
#include "auth/keys.h"
#include "config/config.h"
#include "engine/engine.h"
#include "http/http.h"
#include "pool/pool.h"
#include "store/queries.h"

struct dapi_app {
    const struct dapi_config *cfg;
    struct dapi_keys *keys;
    struct dapi_engine *engine;
    struct dapi_queries *queries;
    struct dapi_pool *check_pool; /* validates SQL for POST /api/queries (short jobs) */
    struct dapi_pool *run_pool;   /* runs and materialises queries (long jobs) */
    struct dapi_http *http;
    atomic_int stopping;
};

/* The HTTP dispatch function (src/api/api.c). */
void dapi_api_dispatch(struct dapi_req *r, void *app);
/* Queues a stored query to run (src/api/queries.c); used for queries left unfinished by a
 * previous run. */
void dapi_api_rerun(struct dapi_app *app, const char *slug, const char *sql);

/* `dapi serve` (src/app/serve.c). */
int dapi_serve_main(int argc, char **argv);

#endif
