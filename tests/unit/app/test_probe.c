/* The engine prober (src/app/probe.c) against a real engine, with short intervals: healthy,
 * the engine-probe test fault, a stale outcome, probes that keep answering while a long user
 * query holds the engine (the prober has its own connection), and stopping promptly — the
 * prober must never delay shutdown. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/probe.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/engine.h"
#include "t.h"

static struct t_lake lake;
static struct dapi_engine *eng;

/* Polls until the prober has finished at least n probes (or timeout_ms passed). */
static void wait_probes(struct dapi_probe *p, uint64_t n, int64_t timeout_ms,
                        struct dapi_probe_status *st)
{
    int64_t until = dapi_clock_mono_ms() + timeout_ms;
    do {
        dapi_probe_status(p, dapi_clock_mono_ms(), st);
        if(st->probes >= n)
            return;
        dapi_clock_sleep_ms(5);
    } while(dapi_clock_mono_ms() < until);
}

static void test_healthy(void)
{
    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {.interval_ms = 20, .timeout_ms = 2000, .stale_ms = 10000};
    struct dapi_probe_status st;
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    if(!p)
        return;
    /* Before any probe finished: within the stale bound, so healthy. */
    dapi_probe_status(p, dapi_clock_mono_ms(), &st);
    T_EQ_INT(st.ok, 1);
    wait_probes(p, 3, 5000, &st);
    T_CHECK(st.probes >= 3, "three probes finished (%llu)", (unsigned long long)st.probes);
    T_EQ_INT(st.ok, 1);
    T_EQ_STR(st.reason, "");
    dapi_probe_free(p);
}

static void test_fault(void)
{
    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {
        .interval_ms = 20, .timeout_ms = 2000, .stale_ms = 10000, .fail = 1};
    struct dapi_probe_status st;
    int64_t t0 = dapi_clock_wall_s();
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    if(!p)
        return;
    wait_probes(p, 1, 5000, &st);
    T_EQ_INT(st.ok, 0);
    T_CHECK(strstr(st.reason, "test fault engine-probe") != NULL, "reason: [%s]", st.reason);
    T_CHECK(strchr(st.reason, '\n') == NULL, "one line: [%s]", st.reason);
    T_CHECK(st.since_wall_s >= t0 && st.since_wall_s <= dapi_clock_wall_s(),
            "since %lld (start %lld)", (long long)st.since_wall_s, (long long)t0);
    /* "since" is the first failure of the run, not the latest. */
    int64_t since = st.since_wall_s;
    wait_probes(p, st.probes + 3, 5000, &st);
    T_EQ_INT(st.ok, 0);
    T_EQ_INT(st.since_wall_s, since);
    dapi_probe_free(p);
}

/* The last success is older than the stale bound: not answering, even without a failure. */
static void test_stale(void)
{
    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {.interval_ms = 60000, .timeout_ms = 2000, .stale_ms = 1000};
    struct dapi_probe_status st;
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    if(!p)
        return;
    wait_probes(p, 1, 5000, &st);
    T_EQ_INT(st.ok, 1);
    dapi_probe_status(p, dapi_clock_mono_ms() + 5000, &st);
    T_EQ_INT(st.ok, 0);
    T_CHECK(strstr(st.reason, "no engine probe has succeeded for") != NULL, "reason: [%s]",
            st.reason);
    T_CHECK(st.since_wall_s > 0 && st.since_wall_s <= dapi_clock_wall_s(), "since %lld",
            (long long)st.since_wall_s);
    dapi_probe_free(p);
}

struct long_query {
    struct dapi_econn *conn;
    enum dapi_err result;
};

static enum dapi_err ignore_begin(void *ctx, size_t ncols, const char *const *names,
                                  const char *const *types)
{
    return DAPI_OK;
}

static enum dapi_err ignore_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                                  uint64_t nrows)
{
    return DAPI_OK;
}

static const struct dapi_sink ignore_sink = {ignore_begin, ignore_chunk};

static void *long_run(void *arg)
{
    struct long_query *q = arg;
    char *msg = NULL;
    /* every DuckDB thread busy until the deadline; the filter keeps the result empty */
    q->result = dapi_engine_run(q->conn,
                                "SELECT count(*) FROM range(1000000000000) WHERE range = -1", NULL,
                                dapi_clock_mono_ms() + 3000, &ignore_sink, NULL, &msg);
    free(msg);
    return NULL;
}

/* A user query holds the engine for 3 s: probes keep succeeding meanwhile, several of them,
 * because the prober does not queue behind it. */
static void test_not_behind_user_queries(void)
{
    struct long_query q = {0};
    pthread_t t;
    T_EQ_INT(dapi_engine_connect(eng, &q.conn), DAPI_OK);
    if(!q.conn)
        return;
    T_EQ_INT(pthread_create(&t, NULL, long_run, &q), 0);
    dapi_clock_sleep_ms(300); /* the query is running */

    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {.interval_ms = 50, .timeout_ms = 1000, .stale_ms = 1500};
    struct dapi_probe_status st;
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    int bad = 0;
    int64_t until = dapi_clock_mono_ms() + 2000;
    while(p && dapi_clock_mono_ms() < until) {
        dapi_probe_status(p, dapi_clock_mono_ms(), &st);
        if(!st.ok && !bad++)
            T_CHECK(0, "health failed while a user query ran: %s", st.reason);
        dapi_clock_sleep_ms(20);
    }
    if(p) {
        dapi_probe_status(p, dapi_clock_mono_ms(), &st);
        T_CHECK(st.probes >= 5, "probes kept finishing during the user query (%llu in 2 s)",
                (unsigned long long)st.probes);
    }
    pthread_join(t, NULL);
    T_EQ_INT(q.result, DAPI_ERR_TIMEOUT); /* it really was running all along */
    dapi_probe_free(p);
    dapi_econn_close(q.conn);
}

/* Stopping wakes the prober from its wait at once: a long interval never delays shutdown. */
static void test_stop_is_prompt(void)
{
    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {.interval_ms = 600000, .timeout_ms = 2000, .stale_ms = 1200000};
    struct dapi_probe_status st;
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    if(!p)
        return;
    wait_probes(p, 1, 5000, &st);
    T_EQ_INT(st.probes, 1);
    int64_t t0 = dapi_clock_mono_ms();
    dapi_probe_free(p);
    int64_t took = dapi_clock_mono_ms() - t0;
    T_CHECK(took < 500, "dapi_probe_free took %lld ms with a 600 s interval", (long long)took);

    /* Freed right after start, before or during its first probe: also prompt. */
    T_EQ_INT(dapi_probe_start(&p, eng, &o), DAPI_OK);
    t0 = dapi_clock_mono_ms();
    dapi_probe_free(p);
    took = dapi_clock_mono_ms() - t0;
    T_CHECK(took < 2500, "dapi_probe_free right after start took %lld ms", (long long)took);
    dapi_probe_free(NULL);
    dapi_probe_stop(NULL);
}

/* Shutdown order (serve.c): stop, then abort the engine. A probe the abort interrupts must not
 * be published as a failure; the last outcome stays. */
static void test_abort_after_stop_is_not_a_failure(void)
{
    struct dapi_engine *e = t_engine_open(
        &lake, (struct dapi_engine_opts){.memory_limit = "256MB", .threads = 1});
    if(!e)
        return;
    struct dapi_probe *p = NULL;
    struct dapi_probe_opts o = {.interval_ms = 1, .timeout_ms = 2000, .stale_ms = 60000};
    struct dapi_probe_status st;
    T_EQ_INT(dapi_probe_start(&p, e, &o), DAPI_OK);
    if(p) {
        wait_probes(p, 3, 5000, &st);
        dapi_probe_stop(p);
        dapi_engine_abort(e); /* probes from now on would fail with DAPI_ERR_BUSY */
        dapi_clock_sleep_ms(50);
        dapi_probe_status(p, dapi_clock_mono_ms(), &st);
        T_CHECK(st.ok, "healthy after stop + abort: %s", st.reason);
        dapi_probe_free(p);
    }
    dapi_engine_close(e);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_lake_make(&lake, "probe"))
        T_DONE();
    /* two DuckDB threads: the long query occupies all of them */
    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 2});
    if(eng) {
        test_healthy();
        test_fault();
        test_stale();
        test_not_behind_user_queries();
        test_stop_is_prompt();
        test_abort_after_stop_is_not_a_failure();
        dapi_engine_close(eng);
    }
    t_rm_rf(lake.root);
    T_DONE();
}
