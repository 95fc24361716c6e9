/* A bounded pool of worker threads, each owning one engine connection. A job is a function,
 * its argument and a tag (the key it runs for). A free worker takes the oldest job of the tag
 * with the fewest jobs running: FIFO for one tag, fair between tags. */
#ifndef DAPI_POOL_H
#define DAPI_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "dapi/err.h"
#include "engine/engine.h"

struct dapi_pool;

/* fn(arg, conn) runs on a worker with that worker's connection. */
typedef void (*dapi_job_fn)(void *arg, struct dapi_econn *conn);

/* Starts n workers, each with its own connection to e. `name` is used in logs. */
enum dapi_err dapi_pool_start(struct dapi_pool **out, const char *name, int n,
                              struct dapi_engine *e);
/* Queues a job. If cap > 0 and cap jobs are already waiting, returns DAPI_ERR_BUSY and the
 * job is not queued (fn never runs). */
enum dapi_err dapi_pool_submit(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap);
/* The same with a tag: jobs of a tag that already holds workers wait while another tag's
 * job can start (see above). dapi_pool_submit uses tag 0. */
enum dapi_err dapi_pool_submit_tagged(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap,
                                      uint64_t tag);
/* Jobs waiting plus running. */
size_t dapi_pool_load(struct dapi_pool *p);
/* Stops after the queued jobs are done (drain=1) or discards them (drain=0: each discarded
 * job is run with conn == NULL so it can release what it holds); joins the threads and
 * closes their connections. Later submissions get DAPI_ERR_BUSY. Idempotent. */
void dapi_pool_stop(struct dapi_pool *p, int drain);
/* Frees a stopped pool (stops it first if needed). */
void dapi_pool_free(struct dapi_pool *p);

#endif
