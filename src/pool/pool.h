/* A bounded pool of worker threads, each owning one engine connection. A job is a function,
 * its argument and a tag (the key it runs for). A free worker takes the oldest job of the tag
 * with the fewest jobs running: FIFO for one tag, fair between tags.
 *
 * A watched pool (dapi_pool_start_watched) also copes with jobs that outlive their time
 * limit: work the engine's interrupt cannot reach (planning, one expression on one huge
 * value) keeps a worker after the watchdog stopped its query. An overseer thread asks a probe
 * how long ago each busy worker's query was interrupted; past the grace, the worker is set
 * aside: a replacement worker (a new thread with its own connection) takes its place while
 * there is room, and the jobs of that tag wait until the overrunning one ends, so a key cannot
 * set aside worker after worker. When the job ends the worker leaves if the pool has its n
 * without it. Other tags keep n workers; the CPU the overrunning work burns is not won back.
 * A job that waits for something outside the pool (dapi_pool_waiting: a slow client) is set
 * aside the same way, without holding its tag. */
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
/* How a watched pool learns of overruns. */
struct dapi_pool_watch {
    /* Milliseconds since the query running on conn was interrupted while it still runs; 0
     * when it was not (or is not running). Called with the pool's lock held: it may take
     * only locks that are never held while calling into the pool. */
    int64_t (*probe)(struct dapi_econn *conn);
    int64_t grace_ms; /* a worker is set aside once its probe says this much */
    int max_extra;    /* replacements for overruns at most at once (>= 0) */
    int max_waiting;  /* replacements for waiting jobs at most at once (>= 0) */
    /* While a tag has a job overrunning, its queued jobs wait; more than this many (> 0) are
     * refused (DAPI_ERR_BUSY): a key cannot pile up jobs, for instance by cancelling queued
     * queries (which frees their admission slots) and creating new ones. 0: no bound. */
    int max_held_per_tag;
    int64_t interval_ms; /* how often the overseer looks while jobs run (<= 0: 100) */
    /* > 0: a tag (not 0) with this many jobs running has its next ones wait, even with a
     * worker free: below the pool's size, another tag's job always finds one. 0: no bound. */
    int max_running_per_tag;
};

/* As dapi_pool_start; watch (copied) says how overruns are found, NULL: not watched. */
enum dapi_err dapi_pool_start_watched(struct dapi_pool **out, const char *name, int n,
                                      struct dapi_engine *e, const struct dapi_pool_watch *watch);

/* Queues a job. If cap > 0 and cap jobs are already waiting, returns DAPI_ERR_BUSY and the
 * job is not queued (fn never runs). */
enum dapi_err dapi_pool_submit(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap);
/* The same with a tag: jobs of a tag that already holds workers wait while another tag's
 * job can start (see above). dapi_pool_submit uses tag 0. */
enum dapi_err dapi_pool_submit_tagged(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap,
                                      uint64_t tag);
/* Jobs waiting plus running. */
size_t dapi_pool_load(struct dapi_pool *p);
/* Called by a job on its worker: on = 1 while it waits for something outside the pool (a
 * client reading slowly, another job's pages), 0 when it goes on. In a watched pool, a worker
 * waiting longer than the grace is set aside and replaced as for an overrun, with a bound of
 * its own (max_waiting) and without holding its tag's other jobs: a wait costs a thread, not
 * a core, and a long download is no reason to hold its key's queries. Repeated calls with 1
 * keep the first one's time. No effect off a pool worker. */
void dapi_pool_waiting(int on);

struct dapi_pool_stats {
    size_t waiting, running;
    int workers;       /* threads taking jobs, set-aside ones included */
    int overrunning;   /* workers set aside now because their job overran */
    int waiting_aside; /* workers set aside now because their job waits (dapi_pool_waiting) */
    uint64_t overruns, waits, replacements; /* since start */
};
void dapi_pool_stats(struct dapi_pool *p, struct dapi_pool_stats *out);
/* Stops after the queued jobs are done (drain=1) or discards them (drain=0: each discarded
 * job is run with conn == NULL so it can release what it holds); joins the threads and
 * closes their connections. Later submissions get DAPI_ERR_BUSY. Idempotent. */
void dapi_pool_stop(struct dapi_pool *p, int drain);
/* The same, but gives the workers at most ms milliseconds (< 0: no limit) to end. Returns
 * DAPI_ERR_TIMEOUT if some are still running a job then (work the engine cannot interrupt):
 * the queued jobs are released all the same, but the pool is not stopped and must not be
 * freed while the process lives (a later stop waits for them again). */
enum dapi_err dapi_pool_stop_within(struct dapi_pool *p, int drain, int64_t ms);
/* Frees a stopped pool (stops it first if needed). */
void dapi_pool_free(struct dapi_pool *p);

#endif
