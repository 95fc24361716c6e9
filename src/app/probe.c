/* The engine prober (probe.h). The published state is a handful of fields under state_mu,
 * which the prober holds only to copy them in and health only to copy them out: neither ever
 * holds it across an engine call, so health cannot wait behind a slow or stuck engine. */
#include "app/probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "engine/engine.h"

/* The query of the engine-probe test fault: it passes the engine's checks (one SELECT) and
 * fails while running, so the whole failure path is the real one. */
#define FAULT_SQL "SELECT error('test fault engine-probe (DAPI_TEST_FAULTS)') AS x"

struct dapi_probe {
    struct dapi_engine *e;
    struct dapi_econn *conn;
    struct dapi_probe_opts o;
    pthread_t thread;
    int started;
    /* thread control */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC: the interval must not jump with the wall clock */
    int stopping;      /* guarded by mu */
    /* the published outcome, guarded by state_mu */
    pthread_mutex_t state_mu;
    int64_t start_mono, start_wall;
    int64_t last_ok_mono, last_ok_wall; /* 0 = never */
    int64_t running_mono, running_wall; /* start of the probe in flight; 0 = none */
    int failing;                        /* the last finished probe failed */
    int64_t fail_since_wall;            /* first failure of the current run of failures */
    char reason[256];
    uint64_t probes;
    /* Health's fast path, read without the lock: healthy until this monotonic instant (last
     * success + stale_ms; 0 while failing), and the probe count. */
    _Atomic int64_t ok_until_mono;
    _Atomic uint64_t nprobes;
};

struct count {
    size_t ncols;
    uint64_t rows;
};

static enum dapi_err count_begin(void *ctx, size_t ncols, const char *const *names,
                                 const char *const *types)
{
    ((struct count *)ctx)->ncols = ncols;
    return DAPI_OK;
}

static enum dapi_err count_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                                 uint64_t nrows)
{
    ((struct count *)ctx)->rows += nrows;
    return DAPI_OK;
}

static const struct dapi_sink count_sink = {count_begin, count_chunk};

static int stopping(struct dapi_probe *p)
{
    pthread_mutex_lock(&p->mu);
    int s = p->stopping;
    pthread_mutex_unlock(&p->mu);
    return s;
}

/* One probe: runs the query, then publishes the outcome and logs a change of state (not
 * every probe: a broken engine would otherwise log every interval). */
static void probe_once(struct dapi_probe *p)
{
    struct count n = {0};
    char *msg = NULL, reason[sizeof p->reason] = "";
    int64_t t0 = dapi_clock_mono_ms();

    pthread_mutex_lock(&p->state_mu);
    p->running_mono = t0;
    p->running_wall = dapi_clock_wall_s();
    pthread_mutex_unlock(&p->state_mu);

    const char *sql = p->o.fail ? FAULT_SQL : "SELECT 1";
    enum dapi_err r = dapi_engine_run_trusted(p->conn, sql, t0 + p->o.timeout_ms, &count_sink, &n,
                                              &msg);
    if(r == DAPI_ERR_TIMEOUT)
        snprintf(reason, sizeof reason, "SELECT 1 did not finish within %lld ms",
                 (long long)p->o.timeout_ms);
    else if(r)
        snprintf(reason, sizeof reason, "SELECT 1 failed: %s", msg ? msg : dapi_err_message(r));
    else if(n.ncols != 1 || n.rows != 1)
        snprintf(reason, sizeof reason, "SELECT 1 answered %zu column(s) and %llu row(s)", n.ncols,
                 (unsigned long long)n.rows);
    free(msg);
    for(char *c = reason; *c; c++) /* DuckDB messages can span lines; the reason is one */
        if(*c == '\n' || *c == '\r')
            *c = ' ';
    /* Shutdown interrupts a probe in flight (dapi_engine_abort): that is not a broken engine,
     * and the answers health gives while stopping must not say it is. */
    if(stopping(p))
        return;

    int64_t now_mono = dapi_clock_mono_ms(), now_wall = dapi_clock_wall_s();
    pthread_mutex_lock(&p->state_mu);
    int was_failing = p->failing, had_ok = p->last_ok_mono != 0;
    int64_t since = p->fail_since_wall, began = p->running_wall;
    p->running_mono = p->running_wall = 0;
    p->probes++;
    atomic_store(&p->nprobes, p->probes);
    if(reason[0]) {
        if(!p->failing)
            p->fail_since_wall = began; /* the engine was not answering when this probe began */
        p->failing = 1;
        atomic_store(&p->ok_until_mono, 0);
        memcpy(p->reason, reason, sizeof reason);
    } else {
        p->failing = 0;
        p->last_ok_mono = now_mono;
        atomic_store(&p->ok_until_mono, now_mono + p->o.stale_ms);
        p->last_ok_wall = now_wall;
    }
    pthread_mutex_unlock(&p->state_mu);

    if(reason[0] && !was_failing)
        dapi_error("engine probe: %s; GET /api/health answers 503 until a probe succeeds", reason);
    else if(!reason[0] && was_failing)
        dapi_info("engine probe: the engine answers again (it did not for %lld s)",
                  (long long)(now_wall - since));
    else if(!reason[0] && !had_ok)
        dapi_debug("engine probe: first probe answered in %lld ms", (long long)(now_mono - t0));
}

static void *probe_run(void *arg)
{
    struct dapi_probe *p = arg;
    pthread_mutex_lock(&p->mu);
    while(!p->stopping) {
        pthread_mutex_unlock(&p->mu);
        probe_once(p);
        pthread_mutex_lock(&p->mu);
        struct timespec ts = dapi_clock_after(1, p->o.interval_ms);
        /* the loop re-checks stopping; a spurious wake-up only probes early */
        if(!p->stopping)
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

enum dapi_err dapi_probe_start(struct dapi_probe **out, struct dapi_engine *e,
                               const struct dapi_probe_opts *opts)
{
    enum dapi_err result = DAPI_OK;
    pthread_condattr_t ca;
    struct dapi_probe *p = calloc(1, sizeof *p);
    *out = NULL;
    if(!p)
        return DAPI_ERR_NOMEM;
    p->e = e;
    p->o = *opts;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->state_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->start_mono = dapi_clock_mono_ms();
    atomic_init(&p->ok_until_mono, p->start_mono + p->o.stale_ms);
    atomic_init(&p->nprobes, 0);
    p->start_wall = dapi_clock_wall_s();
    if((result = dapi_engine_connect(e, &p->conn)))
        goto out;
    dapi_econn_set_light(p->conn);
    if(pthread_create(&p->thread, NULL, probe_run, p)) {
        result = DAPI_ERR_INTERNAL;
        goto out;
    }
    p->started = 1;
    if(p->o.fail)
        dapi_warn("test fault engine-probe is on (DAPI_TEST_FAULTS): every engine probe fails");
out:
    if(result) {
        dapi_probe_free(p);
        return result;
    }
    *out = p;
    return DAPI_OK;
}

void dapi_probe_stop(struct dapi_probe *p)
{
    if(!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void dapi_probe_free(struct dapi_probe *p)
{
    if(!p)
        return;
    dapi_probe_stop(p);
    if(p->started)
        pthread_join(p->thread, NULL);
    dapi_econn_close(p->conn);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->state_mu);
    free(p);
}

void dapi_probe_status(struct dapi_probe *p, int64_t now_mono_ms, struct dapi_probe_status *out)
{
    memset(out, 0, sizeof *out);
    /* Healthy (the common case, asked at every GET /api/health): no lock. */
    if(now_mono_ms < atomic_load(&p->ok_until_mono)) {
        out->ok = 1;
        out->probes = atomic_load(&p->nprobes);
        return;
    }
    pthread_mutex_lock(&p->state_mu);
    int failing = p->failing;
    int64_t fail_since = p->fail_since_wall, ok_mono = p->last_ok_mono, ok_wall = p->last_ok_wall,
            run_mono = p->running_mono, run_wall = p->running_wall, start_mono = p->start_mono,
            start_wall = p->start_wall;
    memcpy(out->reason, p->reason, sizeof out->reason);
    out->probes = p->probes;
    pthread_mutex_unlock(&p->state_mu);

    if(failing) {
        out->since_wall_s = fail_since;
        return;
    }
    /* No failure on record, but no success lately either: a probe is stuck past its deadline
     * (an engine that does not even honour interrupts) or none has finished since start. */
    int64_t ref = ok_mono ? ok_mono : start_mono;
    if(now_mono_ms - ref <= p->o.stale_ms) {
        out->ok = 1;
        out->reason[0] = '\0';
        return;
    }
    if(run_mono) {
        snprintf(out->reason, sizeof out->reason,
                 "SELECT 1 has been running for %lld ms, past its %lld ms deadline",
                 (long long)(now_mono_ms - run_mono), (long long)p->o.timeout_ms);
        out->since_wall_s = run_wall;
    } else {
        snprintf(out->reason, sizeof out->reason, "no engine probe has succeeded for %lld s",
                 (long long)((now_mono_ms - ref) / 1000));
        out->since_wall_s = ok_mono ? ok_wall : start_wall;
    }
}
