/* The worker pool (src/pool/pool.c) on a real engine: every job runs once with a connection,
 * FIFO order, the queue cap, the load count, stop with and without draining, idempotent stop,
 * free; a watched pool's replacement of workers whose job overruns. Jobs that must stay running
 * wait on a gate the test opens; nothing sleeps but the checks that a held job stays queued. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "engine/engine.h"
#include "pool/pool.h"
#include "t.h"

static struct dapi_engine *eng;

/* ---- a gate: a job that blocks until the test opens it -------------------------------- */

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered; /* the blocking job has started */
    int open;
    int ran;
    struct dapi_econn *conn;
};

static void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->open = g->ran = 0;
    g->conn = NULL;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static struct timespec deadline_in(int secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += secs;
    return ts;
}

/* The job: says it entered, then waits for the gate (at most 10 s so a bug cannot hang). */
static void gate_job(void *arg, struct dapi_econn *conn)
{
    struct gate *g = arg;
    struct timespec dl = deadline_in(10);
    pthread_mutex_lock(&g->mu);
    g->ran++;
    g->conn = conn;
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    if(conn)
        while(!g->open)
            if(pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT)
                break;
    pthread_mutex_unlock(&g->mu);
}

/* Waits until the gate job runs; returns 0 if it did not within 5 s. */
static int gate_wait_entered(struct gate *g)
{
    struct timespec dl = deadline_in(5);
    pthread_mutex_lock(&g->mu);
    while(!g->entered)
        if(pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT)
            break;
    int e = g->entered;
    pthread_mutex_unlock(&g->mu);
    return e;
}

static void gate_release(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- counting jobs --------------------------------------------------------------------- */

struct rec {
    atomic_int runs;      /* how many times fn ran */
    atomic_int with_conn; /* of which with a connection */
    atomic_int null_conn; /* of which with conn == NULL */
    atomic_int usable;    /* the connection answered a query check */
    int order;            /* position in the global run order (first run) */
};

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static int order_next;

static void count_job(void *arg, struct dapi_econn *conn)
{
    struct rec *r = arg;
    pthread_mutex_lock(&order_mu);
    if(atomic_load(&r->runs) == 0)
        r->order = order_next++;
    pthread_mutex_unlock(&order_mu);
    atomic_fetch_add(&r->runs, 1);
    if(conn)
        atomic_fetch_add(&r->with_conn, 1);
    else
        atomic_fetch_add(&r->null_conn, 1);
}

static void query_job(void *arg, struct dapi_econn *conn)
{
    struct rec *r = arg;
    if(conn) {
        char *msg = NULL;
        if(dapi_engine_check(conn, "SELECT 42 AS x", NULL, &msg) == DAPI_OK)
            atomic_fetch_add(&r->usable, 1);
        free(msg);
    }
    count_job(arg, conn);
}

static void reset_order(void)
{
    pthread_mutex_lock(&order_mu);
    order_next = 0;
    pthread_mutex_unlock(&order_mu);
}

/* Calls dapi_pool_stop(p, drain) on another thread so the test can open a gate after the
 * stop has begun. */
struct stopper {
    struct dapi_pool *p;
    int drain;
    pthread_t th;
};

static void *stop_thread(void *arg)
{
    struct stopper *s = arg;
    dapi_pool_stop(s->p, s->drain);
    return NULL;
}

/* Waits until the pool refuses submissions (the stop has begun). Probes that got queued
 * before that are counted in *probes_ok; they are never-started jobs like the others. */
static int wait_refusing(struct dapi_pool *p, struct rec *probe, int *probes_ok)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for(;;) {
        enum dapi_err r = dapi_pool_submit(p, count_job, probe, 0);
        if(r == DAPI_ERR_BUSY)
            return 1;
        if(r == DAPI_OK)
            (*probes_ok)++;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if(now.tv_sec - start.tv_sec > 5)
            return 0; /* the stop never began refusing: fail instead of hanging */
        sched_yield();
    }
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_every_job_once(void)
{
    enum { N = 2000, W = 4 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-all", W, eng), DAPI_OK);
    if(!p)
        return;
    static struct rec recs[N];
    memset(recs, 0, sizeof recs);
    int submitted = 0;
    for(int i = 0; i < N; i++)
        submitted += dapi_pool_submit(p, i % 50 == 0 ? query_job : count_job, &recs[i], 0) ==
                     DAPI_OK;
    T_EQ_INT(submitted, N);
    dapi_pool_stop(p, 1);
    int once = 0, conn = 0, usable = 0;
    for(int i = 0; i < N; i++) {
        once += atomic_load(&recs[i].runs) == 1;
        conn += atomic_load(&recs[i].with_conn) == 1;
        usable += atomic_load(&recs[i].usable);
    }
    T_EQ_INT(once, N);
    T_EQ_INT(conn, N);
    T_EQ_INT(usable, N / 50); /* the connection works */
    T_EQ_INT(dapi_pool_load(p), 0);
    dapi_pool_free(p);
}

/* W jobs that each wait until all W are running: proves W workers run in parallel, each
 * with its own connection. */
struct meet {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived, want;
    struct dapi_econn *conns[8];
    int timed_out;
};

static void meet_job(void *arg, struct dapi_econn *conn)
{
    struct meet *m = arg;
    struct timespec dl = deadline_in(5);
    pthread_mutex_lock(&m->mu);
    if(m->arrived < 8)
        m->conns[m->arrived] = conn;
    m->arrived++;
    pthread_cond_broadcast(&m->cv);
    while(m->arrived < m->want)
        if(pthread_cond_timedwait(&m->cv, &m->mu, &dl) == ETIMEDOUT) {
            m->timed_out = 1;
            break;
        }
    pthread_mutex_unlock(&m->mu);
}

static void test_parallel_workers(void)
{
    enum { W = 4 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-par", W, eng), DAPI_OK);
    if(!p)
        return;
    struct meet m = {.want = W};
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    for(int i = 0; i < W; i++)
        T_EQ_INT(dapi_pool_submit(p, meet_job, &m, 0), DAPI_OK);
    dapi_pool_stop(p, 1);
    T_EQ_INT(m.arrived, W);
    T_CHECK(!m.timed_out, "all %d workers ran at the same time", W);
    int distinct = 1;
    for(int i = 0; i < W; i++) {
        T_CHECK(m.conns[i] != NULL, "worker %d has a connection", i);
        for(int j = 0; j < i; j++)
            if(m.conns[i] == m.conns[j])
                distinct = 0;
    }
    T_CHECK(distinct, "each worker has its own connection");
    dapi_pool_free(p);
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
}

static void test_fifo(void)
{
    enum { N = 300 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-fifo", 1, eng), DAPI_OK);
    if(!p)
        return;
    /* Hold the worker so that all jobs are queued before any runs. */
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit(p, gate_job, &g, 0), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "gate job started");
    static struct rec recs[N];
    memset(recs, 0, sizeof recs);
    reset_order();
    for(int i = 0; i < N; i++)
        T_EQ_INT(dapi_pool_submit(p, count_job, &recs[i], 0), DAPI_OK);
    T_EQ_INT(dapi_pool_load(p), N + 1);
    gate_release(&g);
    dapi_pool_stop(p, 1);
    int in_order = 0;
    for(int i = 0; i < N; i++)
        in_order += recs[i].order == i && atomic_load(&recs[i].runs) == 1;
    T_EQ_INT(in_order, N);
    T_CHECK(recs[0].order == 0 && recs[N - 1].order == N - 1, "first %d last %d", recs[0].order,
            recs[N - 1].order);
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* A key flooding the queue does not keep another key's job waiting behind its backlog: the
 * next free worker takes the oldest job of the tag with the fewest jobs running. */
static void test_fair_between_tags(void)
{
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-fair", 2, eng), DAPI_OK);
    if(!p)
        return;
    struct gate g1, g2;
    gate_init(&g1);
    gate_init(&g2);
    /* key A holds both workers */
    T_EQ_INT(dapi_pool_submit_tagged(p, gate_job, &g1, 0, 0xA), DAPI_OK);
    T_CHECK(gate_wait_entered(&g1), "gate 1 started");
    T_EQ_INT(dapi_pool_submit_tagged(p, gate_job, &g2, 0, 0xA), DAPI_OK);
    T_CHECK(gate_wait_entered(&g2), "gate 2 started");
    static struct rec recs[5];
    memset(recs, 0, sizeof recs);
    reset_order();
    for(int i = 0; i < 4; i++) /* A's backlog */
        T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &recs[i], 0, 0xA), DAPI_OK);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &recs[4], 0, 0xB), DAPI_OK);
    gate_release(&g1); /* one worker frees up while A still runs on the other */
    for(int spins = 0; spins < 5000 && atomic_load(&recs[3].runs) == 0; spins++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    gate_release(&g2);
    dapi_pool_stop(p, 1);
    T_EQ_INT(recs[4].order, 0); /* B first */
    for(int i = 0; i < 4; i++)
        T_EQ_INT(recs[i].order, i + 1); /* then A's, in their order */
    dapi_pool_free(p);
    gate_destroy(&g1);
    gate_destroy(&g2);
}

static void test_cap_and_load(void)
{
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-cap", 1, eng), DAPI_OK);
    if(!p)
        return;
    T_EQ_INT(dapi_pool_load(p), 0);
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit(p, gate_job, &g, 2), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "gate job started");
    T_EQ_INT(dapi_pool_load(p), 1); /* running, none waiting */

    static struct rec r[8];
    memset(r, 0, sizeof r);
    /* The running job does not count against cap: two may wait. */
    static const struct {
        size_t cap;
        enum dapi_err want;
        size_t load_after;
    } steps[] = {
        {2, DAPI_OK, 2},                        /* 0 waiting -> ok */
        {2, DAPI_OK, 3},                        /* 1 waiting -> ok */
        {2, DAPI_ERR_BUSY, 3},                  /* 2 waiting: full, fn never runs */
        {1, DAPI_ERR_BUSY, 3},                  /* smaller cap: full as well */
        {3, DAPI_OK, 4},                        /* larger cap: room */
        {3, DAPI_ERR_BUSY, 4}, {0, DAPI_OK, 5}, /* cap 0 = no limit */
        {0, DAPI_OK, 6},
    };
    for(size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        enum dapi_err got = dapi_pool_submit(p, count_job, &r[i], steps[i].cap);
        T_CHECK(got == steps[i].want, "step %zu (cap %zu): got %d, want %d", i, steps[i].cap,
                (int)got, (int)steps[i].want);
        T_CHECK(dapi_pool_load(p) == steps[i].load_after, "step %zu: load %zu, want %zu", i,
                dapi_pool_load(p), steps[i].load_after);
    }
    gate_release(&g);
    dapi_pool_stop(p, 1);
    T_EQ_INT(dapi_pool_load(p), 0);
    for(size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int want = steps[i].want == DAPI_OK ? 1 : 0;
        T_CHECK(atomic_load(&r[i].runs) == want, "step %zu: ran %d times, want %d", i,
                atomic_load(&r[i].runs), want);
        T_CHECK(atomic_load(&r[i].null_conn) == 0, "step %zu: drained jobs have a conn", i);
    }
    T_EQ_INT(g.ran, 1);
    T_CHECK(g.conn != NULL, "gate job had a connection");
    dapi_pool_free(p);
    gate_destroy(&g);
}

static void test_stop_discard(void)
{
    enum { N = 5 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-stop0", 1, eng), DAPI_OK);
    if(!p)
        return;
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit(p, gate_job, &g, 0), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "gate job started");
    static struct rec r[N], probe, late;
    memset(r, 0, sizeof r);
    memset(&probe, 0, sizeof probe);
    memset(&late, 0, sizeof late);
    for(int i = 0; i < N; i++)
        T_EQ_INT(dapi_pool_submit(p, count_job, &r[i], 0), DAPI_OK);
    T_EQ_INT(dapi_pool_load(p), N + 1);

    struct stopper s = {p, 0, 0};
    T_EQ_INT(pthread_create(&s.th, NULL, stop_thread, &s), 0);
    int probes_ok = 0;
    T_CHECK(wait_refusing(p, &probe, &probes_ok), "submissions refused once stop began");
    gate_release(&g); /* the running job finishes; the stop then discards the queue */
    pthread_join(s.th, NULL);

    T_EQ_INT(g.ran, 1);
    T_CHECK(g.conn != NULL, "the job already running kept its connection");
    for(int i = 0; i < N; i++) {
        T_CHECK(atomic_load(&r[i].runs) == 1, "discarded job %d ran %d times, want once", i,
                atomic_load(&r[i].runs));
        T_CHECK(atomic_load(&r[i].null_conn) == 1 && atomic_load(&r[i].with_conn) == 0,
                "discarded job %d ran with conn == NULL", i);
    }
    /* Probes queued before the stop began are discarded the same way. */
    T_EQ_INT(atomic_load(&probe.runs), probes_ok);
    T_EQ_INT(atomic_load(&probe.null_conn), probes_ok);
    T_EQ_INT(dapi_pool_load(p), 0);

    /* Later submissions are refused and never run. */
    for(size_t cap = 0; cap < 3; cap++)
        T_EQ_INT(dapi_pool_submit(p, count_job, &late, cap), DAPI_ERR_BUSY);

    /* Idempotent: neither a second discard nor a drain reruns anything. */
    dapi_pool_stop(p, 0);
    dapi_pool_stop(p, 1);
    T_EQ_INT(dapi_pool_submit(p, count_job, &late, 0), DAPI_ERR_BUSY);
    T_EQ_INT(atomic_load(&late.runs), 0);
    for(int i = 0; i < N; i++)
        T_EQ_INT(atomic_load(&r[i].runs), 1);
    T_EQ_INT(g.ran, 1);
    T_EQ_INT(dapi_pool_load(p), 0);
    dapi_pool_free(p);
    gate_destroy(&g);
}

static void test_stop_discard_idle(void)
{
    /* Stopping an idle pool (workers waiting for work) without draining returns. */
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-idle", 3, eng), DAPI_OK);
    if(!p)
        return;
    static struct rec r;
    memset(&r, 0, sizeof r);
    dapi_pool_stop(p, 0);
    T_EQ_INT(dapi_pool_submit(p, count_job, &r, 0), DAPI_ERR_BUSY);
    T_EQ_INT(atomic_load(&r.runs), 0);
    dapi_pool_free(p);
}

static void test_stop_drain(void)
{
    enum { N = 50 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-stop1", 1, eng), DAPI_OK);
    if(!p)
        return;
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit(p, gate_job, &g, 0), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "gate job started");
    static struct rec r[N], probe, late;
    memset(r, 0, sizeof r);
    memset(&probe, 0, sizeof probe);
    memset(&late, 0, sizeof late);
    reset_order();
    for(int i = 0; i < N; i++)
        T_EQ_INT(dapi_pool_submit(p, i % 10 == 0 ? query_job : count_job, &r[i], 0), DAPI_OK);

    struct stopper s = {p, 1, 0};
    T_EQ_INT(pthread_create(&s.th, NULL, stop_thread, &s), 0);
    int probes_ok = 0;
    T_CHECK(wait_refusing(p, &probe, &probes_ok), "submissions refused once stop began");
    gate_release(&g);
    pthread_join(s.th, NULL);

    int ok = 0;
    for(int i = 0; i < N; i++)
        ok += atomic_load(&r[i].runs) == 1 && atomic_load(&r[i].with_conn) == 1 &&
              r[i].order == i && (i % 10 != 0 || atomic_load(&r[i].usable) == 1);
    T_EQ_INT(ok, N); /* all ran once, in order, with a working connection */
    T_EQ_INT(atomic_load(&probe.runs), probes_ok);
    T_EQ_INT(atomic_load(&probe.with_conn), probes_ok);
    T_EQ_INT(dapi_pool_load(p), 0);
    T_EQ_INT(dapi_pool_submit(p, count_job, &late, 0), DAPI_ERR_BUSY);
    dapi_pool_stop(p, 1);
    dapi_pool_stop(p, 0);
    for(int i = 0; i < N; i++)
        T_EQ_INT(atomic_load(&r[i].runs), 1);
    T_EQ_INT(atomic_load(&late.runs), 0);
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* ---- overruns (a watched pool) --------------------------------------------------------- */

/* The fake probe: a gate job's connection counts as overrunning by 5 s while the gate is
 * closed and the test has marked it (as the engine would once the watchdog interrupted a
 * query that goes on). */
static pthread_mutex_t stuck_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dapi_econn *stuck[4];

static void mark_stuck(struct dapi_econn *c, int on)
{
    pthread_mutex_lock(&stuck_mu);
    for(int i = 0; i < 4; i++)
        if(on ? !stuck[i] : stuck[i] == c) {
            stuck[i] = on ? c : NULL;
            break;
        }
    pthread_mutex_unlock(&stuck_mu);
}

static int64_t fake_probe(struct dapi_econn *c)
{
    int64_t over = 0;
    pthread_mutex_lock(&stuck_mu);
    for(int i = 0; i < 4; i++)
        if(c && stuck[i] == c)
            over = 5000;
    pthread_mutex_unlock(&stuck_mu);
    return over;
}

/* The overrunning gate job: marks its connection stuck until its gate opens. */
static void stuck_job(void *arg, struct dapi_econn *conn)
{
    if(conn)
        mark_stuck(conn, 1);
    gate_job(arg, conn);
    if(conn)
        mark_stuck(conn, 0);
}

static const struct dapi_pool_watch fake_watch = {fake_probe, 1000, 1, 2, 3, 5, 0};

/* Waits (at most 5 s) until pred holds of the pool's numbers. */
static int wait_stats(struct dapi_pool *p, int workers, int overrunning,
                      struct dapi_pool_stats *st)
{
    for(int spins = 0; spins < 5000; spins++) {
        dapi_pool_stats(p, st);
        if(st->workers == workers && st->overrunning == overrunning)
            return 1;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return 0;
}

static int wait_runs(struct rec *r, int n)
{
    for(int spins = 0; spins < 5000 && atomic_load(&r->runs) < n; spins++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return atomic_load(&r->runs) >= n;
}

/* A watched pool of n workers with key A's job overrunning on one of them (g holds it). */
static struct dapi_pool *start_overrunning(const char *name, int n, struct gate *g)
{
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start_watched(&p, name, n, eng, &fake_watch), DAPI_OK);
    gate_init(g);
    if(!p)
        return NULL;
    T_EQ_INT(dapi_pool_submit_tagged(p, stuck_job, g, 0, 0xA), DAPI_OK);
    T_CHECK(gate_wait_entered(g), "%s: the overrunning job started", name);
    return p;
}

/* A job that outlives its time limit does not keep other keys waiting: its worker is set
 * aside and a replacement with its own connection serves the queue; the overrunning key's
 * other jobs wait until it ends; then the pool is back to its size. Unwatched (the old pool),
 * B's job waited for the gate. */
static void test_overrun_replaced(void)
{
    struct gate g;
    struct dapi_pool *p = start_overrunning("t-over", 1, &g);
    if(!p)
        return;
    static struct rec a2, b, b2;
    memset(&a2, 0, sizeof a2);
    memset(&b, 0, sizeof b);
    memset(&b2, 0, sizeof b2);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a2, 0, 0xA), DAPI_OK); /* A's next */
    T_EQ_INT(dapi_pool_submit_tagged(p, query_job, &b, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b, 1), "B's job ran while A's overran (runs %d)", atomic_load(&b.runs));
    T_EQ_INT(atomic_load(&b.usable), 1); /* on a connection of its own that works */
    struct dapi_pool_stats st;
    T_CHECK(wait_stats(p, 2, 1, &st), "2 workers, 1 set aside: %d, %d", st.workers,
            st.overrunning);
    T_EQ_INT(st.overruns, 1);
    T_EQ_INT(st.replacements, 1);
    /* B goes on being served; A's next job waits while A's first overruns */
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &b2, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b2, 1), "B's second job ran");
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    T_EQ_INT(atomic_load(&a2.runs), 0);
    dapi_pool_stats(p, &st);
    T_EQ_INT(st.waiting, 1);
    /* A's overrun ends: A's job runs, and the set-aside worker leaves */
    gate_release(&g);
    T_CHECK(wait_runs(&a2, 1), "A's next job ran once A's overrun ended");
    T_CHECK(wait_stats(p, 1, 0, &st), "back to 1 worker: %d, %d set aside", st.workers,
            st.overrunning);
    /* the slot is reused by the next replacement */
    struct gate g2;
    gate_init(&g2);
    T_EQ_INT(dapi_pool_submit_tagged(p, stuck_job, &g2, 0, 0xC), DAPI_OK);
    T_CHECK(gate_wait_entered(&g2), "a second overrunning job started");
    static struct rec b3;
    memset(&b3, 0, sizeof b3);
    T_EQ_INT(dapi_pool_submit_tagged(p, query_job, &b3, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b3, 1), "B's job ran beside the second overrun");
    T_EQ_INT(atomic_load(&b3.usable), 1);
    dapi_pool_stats(p, &st);
    T_EQ_INT(st.replacements, 2);
    gate_release(&g2);
    dapi_pool_stop(p, 1);
    dapi_pool_free(p);
    gate_destroy(&g);
    gate_destroy(&g2);
}

/* Replacements are bounded: with room for one, a second key's overrun leaves the pool short
 * until one ends; nothing queued is lost, and a draining stop runs held jobs once their
 * key's overrun ends. */
static void test_overrun_bounded(void)
{
    struct gate g1, g2;
    struct dapi_pool *p = start_overrunning("t-bound", 1, &g1);
    if(!p)
        return;
    gate_init(&g2);
    T_EQ_INT(dapi_pool_submit_tagged(p, stuck_job, &g2, 0, 0xB), DAPI_OK);
    T_CHECK(gate_wait_entered(&g2), "B's overrunning job started on the replacement");
    struct dapi_pool_stats st;
    T_CHECK(wait_stats(p, 2, 2, &st), "2 workers, both set aside: %d, %d", st.workers,
            st.overrunning);
    static struct rec a2, c;
    memset(&a2, 0, sizeof a2);
    memset(&c, 0, sizeof c);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a2, 0, 0xA), DAPI_OK);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &c, 0, 0xC), DAPI_OK);
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    dapi_pool_stats(p, &st);
    T_EQ_INT(st.workers, 2); /* no third */
    T_EQ_INT(st.replacements, 1);
    T_EQ_INT(atomic_load(&c.runs), 0);
    /* B's ends: its worker stays (the pool would be short without it) and serves C */
    gate_release(&g2);
    T_CHECK(wait_runs(&c, 1), "C's job ran once B's overrun ended");
    T_EQ_INT(atomic_load(&a2.runs), 0); /* still held */
    /* a draining stop waits for A's overrun to end, then runs A's held job */
    struct stopper s = {p, 1, 0};
    pthread_create(&s.th, NULL, stop_thread, &s);
    nanosleep(&settle, NULL);
    gate_release(&g1);
    pthread_join(s.th, NULL);
    T_EQ_INT(atomic_load(&a2.runs), 1);
    T_EQ_INT(atomic_load(&a2.with_conn), 1);
    dapi_pool_free(p);
    gate_destroy(&g1);
    gate_destroy(&g2);
}

/* A discarding stop releases a held job (conn NULL) once the overrun it waited for ends. */
static void test_overrun_stop_discard(void)
{
    struct gate g;
    struct dapi_pool *p = start_overrunning("t-odisc", 1, &g);
    if(!p)
        return;
    struct dapi_pool_stats st;
    T_CHECK(wait_stats(p, 2, 1, &st), "replaced: %d, %d", st.workers, st.overrunning);
    static struct rec a2;
    memset(&a2, 0, sizeof a2);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a2, 0, 0xA), DAPI_OK);
    struct stopper s = {p, 0, 0};
    pthread_create(&s.th, NULL, stop_thread, &s);
    struct timespec settle = {0, 100000000};
    nanosleep(&settle, NULL);
    gate_release(&g);
    pthread_join(s.th, NULL);
    T_EQ_INT(atomic_load(&a2.runs), 1);
    T_EQ_INT(atomic_load(&a2.null_conn), 1);
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* A stop with a limit: a worker still in its job after it is reported (the pool is left
 * running, its queued jobs released); once the job ends, a stop without limit completes. */
static void test_stop_within(void)
{
    struct gate g;
    struct dapi_pool *p = start_overrunning("t-within", 1, &g);
    if(!p)
        return;
    /* set aside first: then A's next job is held, not taken by an idle worker */
    struct dapi_pool_stats st;
    T_CHECK(wait_stats(p, 2, 1, &st), "set aside: %d, %d", st.workers, st.overrunning);
    static struct rec held_job;
    memset(&held_job, 0, sizeof held_job);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &held_job, 0, 0xA), DAPI_OK);
    T_EQ_INT(dapi_pool_stop_within(p, 0, 100), DAPI_ERR_TIMEOUT);
    T_EQ_INT(atomic_load(&held_job.runs), 1); /* released, not run */
    T_EQ_INT(atomic_load(&held_job.null_conn), 1);
    T_EQ_INT(dapi_pool_submit(p, count_job, &held_job, 0), DAPI_ERR_BUSY);
    gate_release(&g);
    T_EQ_INT(dapi_pool_stop_within(p, 0, 5000), DAPI_OK);
    T_EQ_INT(g.ran, 1);
    T_EQ_INT(dapi_pool_stop_within(p, 0, 0), DAPI_OK); /* stopped: idempotent */
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* A job that waits (for a slow client) past the grace is set aside and replaced like an
 * overrun, but its tag's other jobs are not held; off a pool, dapi_pool_waiting does
 * nothing. */
static void waiting_job(void *arg, struct dapi_econn *conn)
{
    dapi_pool_waiting(1);
    dapi_pool_waiting(1); /* repeated: keeps the first time */
    gate_job(arg, conn);
    dapi_pool_waiting(0);
}

static void test_waiting_set_aside(void)
{
    dapi_pool_waiting(1); /* not a pool worker: no effect, no crash */
    struct dapi_pool *p = NULL;
    const struct dapi_pool_watch quick = {fake_probe, 50, 1, 2, 0, 5, 0};
    T_EQ_INT(dapi_pool_start_watched(&p, "t-wait", 1, eng, &quick), DAPI_OK);
    if(!p)
        return;
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit_tagged(p, waiting_job, &g, 0, 0xA), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "the waiting job started");
    static struct rec a2, b;
    memset(&a2, 0, sizeof a2);
    memset(&b, 0, sizeof b);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a2, 0, 0xA), DAPI_OK);
    T_EQ_INT(dapi_pool_submit_tagged(p, query_job, &b, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b, 1), "B's job ran while A's waited");
    T_CHECK(wait_runs(&a2, 1), "A's next job ran too: a wait does not hold its key");
    T_EQ_INT(atomic_load(&b.usable), 1);
    struct dapi_pool_stats st;
    dapi_pool_stats(p, &st);
    T_EQ_INT(st.waiting_aside, 1);
    T_EQ_INT(st.overrunning, 0);
    T_EQ_INT(st.waits, 1);
    T_EQ_INT(st.workers, 2);
    gate_release(&g);
    T_CHECK(wait_stats(p, 1, 0, &st), "back to 1 worker: %d", st.workers);
    dapi_pool_stats(p, &st);
    T_EQ_INT(st.waiting_aside, 0);
    dapi_pool_stop(p, 1);
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* While a key's job overruns, its queued jobs are bounded (max_held_per_tag, 3 here): a key
 * cannot pile up jobs by cancelling queued queries and creating new ones; other keys are
 * unaffected, and the held jobs all run once the overrun ends. */
static void test_held_jobs_bounded(void)
{
    struct gate g;
    struct dapi_pool *p = start_overrunning("t-heldcap", 1, &g);
    if(!p)
        return;
    struct dapi_pool_stats st;
    T_CHECK(wait_stats(p, 2, 1, &st), "set aside: %d, %d", st.workers, st.overrunning);
    static struct rec a[4], b;
    memset(a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    for(int i = 0; i < 3; i++)
        T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a[i], 0, 0xA), DAPI_OK);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a[3], 0, 0xA), DAPI_ERR_BUSY);
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &b, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b, 1), "B's job ran");
    gate_release(&g);
    dapi_pool_stop(p, 1);
    for(int i = 0; i < 3; i++)
        T_EQ_INT(atomic_load(&a[i].with_conn), 1);
    T_EQ_INT(atomic_load(&a[3].runs), 0);
    dapi_pool_free(p);
    gate_destroy(&g);
}

/* max_running_per_tag (--max-running-per-key): with it below the pool's size, a key whose
 * jobs run long leaves a worker free, so another key's job starts at once instead of waiting
 * for one of them to end; the key's own next job waits, although a worker is free; untagged
 * jobs are not held. */
static void test_running_per_tag(void)
{
    const struct dapi_pool_watch capped = {fake_probe, 1000, 1, 2, 0, 5, 1};
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start_watched(&p, "t-capped", 2, eng, &capped), DAPI_OK);
    if(!p)
        return;
    struct gate g1;
    gate_init(&g1);
    static struct rec a2, b, untagged;
    memset(&a2, 0, sizeof a2);
    memset(&b, 0, sizeof b);
    memset(&untagged, 0, sizeof untagged);
    T_EQ_INT(dapi_pool_submit_tagged(p, gate_job, &g1, 0, 0xA), DAPI_OK);
    T_CHECK(gate_wait_entered(&g1), "A's first job runs");
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &a2, 0, 0xA), DAPI_OK);
    struct timespec wait = {0, 50000000};
    nanosleep(&wait, NULL);
    T_EQ_INT(atomic_load(&a2.runs), 0); /* a worker is free, but A is at its bound */
    T_EQ_INT(dapi_pool_submit_tagged(p, count_job, &b, 0, 0xB), DAPI_OK);
    T_CHECK(wait_runs(&b, 1), "B's job runs on the free worker");
    T_EQ_INT(dapi_pool_submit(p, count_job, &untagged, 0), DAPI_OK);
    T_CHECK(wait_runs(&untagged, 1), "an untagged job is not held");
    T_EQ_INT(atomic_load(&a2.runs), 0);
    gate_release(&g1);
    T_CHECK(wait_runs(&a2, 1), "A's next job once its first ended");
    dapi_pool_stop(p, 1);
    dapi_pool_free(p);
    gate_destroy(&g1);
}

static void test_free_without_stop(void)
{
    /* dapi_pool_free stops first: queued jobs are released (conn == NULL), none is lost. */
    enum { N = 4 };
    struct dapi_pool *p = NULL;
    T_EQ_INT(dapi_pool_start(&p, "t-free", 1, eng), DAPI_OK);
    if(!p)
        return;
    struct gate g;
    gate_init(&g);
    T_EQ_INT(dapi_pool_submit(p, gate_job, &g, 0), DAPI_OK);
    T_CHECK(gate_wait_entered(&g), "gate job started");
    static struct rec r[N];
    memset(r, 0, sizeof r);
    for(int i = 0; i < N; i++)
        T_EQ_INT(dapi_pool_submit(p, count_job, &r[i], 0), DAPI_OK);
    /* Open the gate first: free joins the worker, which must be able to finish. The worker
     * may then take some queued jobs before free's stop; each job still runs exactly once. */
    gate_release(&g);
    dapi_pool_free(p);
    for(int i = 0; i < N; i++)
        T_CHECK(atomic_load(&r[i].runs) == 1, "job %d ran %d times, want once", i,
                atomic_load(&r[i].runs));
    gate_destroy(&g);

    dapi_pool_stop(NULL, 0); /* NULL is harmless */
    dapi_pool_free(NULL);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    struct t_lake lake;
    if(t_lake_make(&lake, "pool"))
        T_DONE();
    eng = t_engine_open(&lake, (struct dapi_engine_opts){.threads = 1});
    if(eng) {
        test_every_job_once();
        test_parallel_workers();
        test_fifo();
        test_fair_between_tags();
        test_cap_and_load();
        test_stop_discard();
        test_stop_discard_idle();
        test_stop_drain();
        test_running_per_tag();
        test_free_without_stop();
        test_overrun_replaced();
        test_overrun_bounded();
        test_overrun_stop_discard();
        test_stop_within();
        test_waiting_set_aside();
        test_held_jobs_bounded();
        dapi_engine_close(eng);
    }
    t_rm_rf(lake.root);
    T_CHECK(!t_exists(lake.root), "cleanup of %s", lake.root);
    T_DONE();
}
