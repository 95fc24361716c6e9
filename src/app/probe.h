/* The engine prober: GET /api/health reports whether the engine answers, without ever
 * waiting for it. A thread with its own engine connection runs `SELECT 1` through
 * dapi_engine_run right after start and then every interval, each with a short deadline,
 * and publishes the outcome; health only reads the published outcome. Its own connection
 * (not a pool worker) means a probe never queues behind user queries, and a user query never
 * waits for a probe. */
#ifndef DAPI_PROBE_H
#define DAPI_PROBE_H

#include <stdint.h>
#include "dapi/err.h"

struct dapi_engine;
struct dapi_probe;

struct dapi_probe_opts {
    int64_t interval_ms; /* from the end of one probe to the start of the next */
    int64_t timeout_ms;  /* a probe's deadline (the engine's watchdog interrupts it) */
    int64_t stale_ms;    /* no probe succeeded for this long (one is stuck past its deadline,
                          * or none finished since start): not answering */
    int fail;            /* test fault (DAPI_TEST_FAULTS=engine-probe): every probe runs a
                          * query that fails in the engine */
};

/* Every 5 s; a probe normally takes well under a millisecond, so 2 s means the engine is in
 * trouble; 15 s covers two missed rounds plus a deadline before a stuck probe counts. */
#define DAPI_PROBE_DEFAULTS  \
    {                        \
        5000, 2000, 15000, 0 \
    }

struct dapi_probe_status {
    int ok;
    int64_t since_wall_s; /* !ok: when the engine stopped answering (wall clock, seconds) */
    char reason[256];     /* !ok: why, one line */
    uint64_t probes;      /* probes finished since start (for tests and diagnostics) */
};

/* Connects to e and starts the thread (its first probe runs at once). */
enum dapi_err dapi_probe_start(struct dapi_probe **out, struct dapi_engine *e,
                               const struct dapi_probe_opts *opts);
/* Asks the thread to stop and returns at once: no probe starts after this, and the outcome of
 * one in flight is discarded (shutdown interrupts it with dapi_engine_abort, which must not
 * read as a broken engine). NULL is ignored. */
void dapi_probe_stop(struct dapi_probe *p);
/* Stops, joins the thread and closes its connection (before dapi_engine_close). NULL ok. */
void dapi_probe_free(struct dapi_probe *p);
/* The last published outcome judged at now_mono_ms (dapi_clock_mono_ms). Takes only a lock
 * that the prober holds to copy a few fields: never waits for the engine. */
void dapi_probe_status(struct dapi_probe *p, int64_t now_mono_ms, struct dapi_probe_status *out);

#endif
