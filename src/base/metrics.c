#include "base/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* ---- histograms ------------------------------------------------------------------------ */

#define MAX_BUCKETS 16

static const double request_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double run_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900};
static const double sync_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                     0.01,   0.025,   0.05,   0.1,   0.25,   1};
static const double checkpoint_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,  0.5,   1,    2.5,   10,   30};
#define NB(a) (sizeof a / sizeof a[0])

struct histogram {
    uint64_t buckets[MAX_BUCKETS]; /* per bound, not cumulative; the last one is +Inf */
    uint64_t count;
    int64_t sum_us;
};

static void observe(struct histogram *h, const double *bounds, size_t n, int64_t us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while(i < n && s > bounds[i])
        i++;
    h->buckets[i]++; /* i == n: +Inf */
    h->count++;
    h->sum_us += us > 0 ? us : 0;
}

static void render_histogram(struct dapi_buf *b, const char *name, const char *labels,
                             const struct histogram *h, const double *bounds, size_t n)
{
    uint64_t cum = 0;
    const char *sep = labels && *labels ? "," : "";
    for(size_t i = 0; i <= n; i++) {
        cum += h->buckets[i];
        if(i < n)
            dapi_buf_addf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels ? labels : "", sep,
                          bounds[i], (unsigned long long)cum);
        else
            dapi_buf_addf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels ? labels : "", sep,
                          (unsigned long long)cum);
    }
    dapi_buf_addf(b, "%s_sum%s%s%s %.6f\n", name, labels && *labels ? "{" : "",
                  labels ? labels : "", labels && *labels ? "}" : "", (double)h->sum_us / 1e6);
    dapi_buf_addf(b, "%s_count%s%s%s %llu\n", name, labels && *labels ? "{" : "",
                  labels ? labels : "", labels && *labels ? "}" : "",
                  (unsigned long long)h->count);
}

/* ---- what is recorded ------------------------------------------------------------------- */

#define MAX_SERIES 512 /* route x method x status: a few dozen in practice */
#define MAX_ROUTES 64
#define MAX_NAMED 16

static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                      "OPTIONS", "CONNECT", "TRACE", "PATCH"};
#define NMETHODS (sizeof methods / sizeof methods[0])

struct series {
    const char *route; /* NULL: free */
    int method;        /* index in methods, NMETHODS = other */
    int status;
    uint64_t count, bytes;
};

struct route_hist {
    const char *route;
    struct histogram h;
};

struct named {
    const char *name, *help;
    _Atomic uint64_t v;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct series series[MAX_SERIES];
static uint64_t series_dropped; /* requests whose series did not fit (never in practice) */
static struct route_hist routes[MAX_ROUTES];
static struct histogram runs_ok, runs_failed, log_syncs, checkpoints;
static _Atomic uint64_t checkpoint_failures;
static _Atomic uint64_t created, reused, pages, rows, page_bytes;
static _Atomic uint64_t up_ok, up_error, up_retry;
static struct named named[MAX_NAMED];
static _Atomic int nnamed;

static int method_index(const char *m)
{
    for(size_t i = 0; m && i < NMETHODS; i++)
        if(strcmp(m, methods[i]) == 0)
            return (int)i;
    return (int)NMETHODS;
}

static unsigned hash(const char *route, int method, int status)
{
    uint32_t h = 2166136261u;
    for(const unsigned char *p = (const unsigned char *)route; *p; p++)
        h = (h ^ *p) * 16777619u;
    h = (h ^ (uint32_t)method) * 16777619u;
    h = (h ^ (uint32_t)status) * 16777619u;
    return h % MAX_SERIES;
}

void dapi_metrics_request(const char *route, const char *method, int status, uint64_t bytes,
                          int64_t duration_us)
{
    if(!route)
        route = "unmatched";
    int m = method_index(method);
    unsigned at = hash(route, m, status);
    pthread_mutex_lock(&mu);
    struct series *s = NULL;
    for(unsigned i = 0; i < MAX_SERIES && !s; i++) { /* open addressing, linear probing */
        struct series *c = &series[(at + i) % MAX_SERIES];
        if(!c->route) {
            c->route = route;
            c->method = m;
            c->status = status;
            s = c;
        } else if(c->method == m && c->status == status && strcmp(c->route, route) == 0) {
            s = c;
        }
    }
    if(s) {
        s->count++;
        s->bytes += bytes;
    } else {
        series_dropped++;
    }
    struct route_hist *rh = NULL;
    for(size_t i = 0; i < MAX_ROUTES && !rh; i++) {
        if(!routes[i].route)
            routes[i].route = route;
        if(strcmp(routes[i].route, route) == 0)
            rh = &routes[i];
    }
    if(rh)
        observe(&rh->h, request_bounds, sizeof request_bounds / sizeof request_bounds[0],
                duration_us);
    pthread_mutex_unlock(&mu);
}

void dapi_metrics_created(int was_reused)
{
    atomic_fetch_add(&created, 1);
    if(was_reused)
        atomic_fetch_add(&reused, 1);
}

void dapi_metrics_run(int ok, int64_t run_us)
{
    pthread_mutex_lock(&mu);
    observe(ok ? &runs_ok : &runs_failed, run_bounds, sizeof run_bounds / sizeof run_bounds[0],
            run_us);
    pthread_mutex_unlock(&mu);
}

void dapi_metrics_log_sync(int64_t us)
{
    pthread_mutex_lock(&mu);
    observe(&log_syncs, sync_bounds, NB(sync_bounds), us);
    pthread_mutex_unlock(&mu);
}

void dapi_metrics_checkpoint(int ok, int64_t us)
{
    if(!ok) {
        atomic_fetch_add(&checkpoint_failures, 1);
        return;
    }
    pthread_mutex_lock(&mu);
    observe(&checkpoints, checkpoint_bounds, NB(checkpoint_bounds), us);
    pthread_mutex_unlock(&mu);
}

void dapi_metrics_page(uint64_t n_rows, uint64_t bytes)
{
    atomic_fetch_add(&pages, 1);
    atomic_fetch_add(&rows, n_rows);
    atomic_fetch_add(&page_bytes, bytes);
}

void dapi_metrics_upstream(const char *outcome)
{
    if(strcmp(outcome, "ok") == 0)
        atomic_fetch_add(&up_ok, 1);
    else if(strcmp(outcome, "retry") == 0)
        atomic_fetch_add(&up_retry, 1);
    else
        atomic_fetch_add(&up_error, 1);
}

void dapi_metrics_count(const char *name, const char *help, uint64_t n)
{
    int have = atomic_load(&nnamed);
    for(int i = 0; i < have; i++)
        if(named[i].name == name || strcmp(named[i].name, name) == 0) {
            atomic_fetch_add(&named[i].v, n);
            return;
        }
    pthread_mutex_lock(&mu);
    have = atomic_load(&nnamed);
    int i = 0;
    while(i < have && strcmp(named[i].name, name) != 0)
        i++;
    if(i == have && have < MAX_NAMED) {
        named[i].name = name;
        named[i].help = help;
        atomic_store(&nnamed, have + 1); /* published after its fields */
    }
    pthread_mutex_unlock(&mu);
    if(i < MAX_NAMED)
        atomic_fetch_add(&named[i].v, n);
}

/* ---- rendering ----------------------------------------------------------------------------- */

static void family(struct dapi_buf *b, const char *name, const char *type, const char *help)
{
    dapi_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void dapi_metrics_gauge(struct dapi_buf *b, const char *name, const char *help)
{
    family(b, name, "gauge", help);
}

void dapi_metrics_counter(struct dapi_buf *b, const char *name, const char *help)
{
    family(b, name, "counter", help);
}

void dapi_metrics_sample(struct dapi_buf *b, const char *name, const char *labels, double v)
{
    if(labels && *labels)
        dapi_buf_addf(b, "%s{%s} %.17g\n", name, labels, v);
    else
        dapi_buf_addf(b, "%s %.17g\n", name, v);
}

static void counter(struct dapi_buf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "counter", help);
    dapi_buf_addf(b, "%s %llu\n", name, (unsigned long long)v);
}

void dapi_metrics_render(struct dapi_buf *b)
{
    /* A copy under the lock, rendered without it: a scrape never holds up requests. */
    static struct series snap[MAX_SERIES];
    static struct route_hist hsnap[MAX_ROUTES];
    static pthread_mutex_t render_mu = PTHREAD_MUTEX_INITIALIZER; /* (the copies are static) */
    pthread_mutex_lock(&render_mu);
    pthread_mutex_lock(&mu);
    memcpy(snap, series, sizeof snap);
    memcpy(hsnap, routes, sizeof hsnap);
    struct histogram ok = runs_ok, failed = runs_failed, syncs = log_syncs, cps = checkpoints;
    uint64_t dropped = series_dropped;
    pthread_mutex_unlock(&mu);

    family(b, "dapi_http_requests_total", "counter",
           "HTTP requests answered, by route, method and status (0: the client left first)");
    for(size_t i = 0; i < MAX_SERIES; i++)
        if(snap[i].route)
            dapi_buf_addf(
                b, "dapi_http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} %llu\n",
                snap[i].route, snap[i].method < (int)NMETHODS ? methods[snap[i].method] : "other",
                snap[i].status, (unsigned long long)snap[i].count);
    family(b, "dapi_http_response_bytes_total", "counter",
           "bytes of HTTP response bodies sent, by route, method and status");
    for(size_t i = 0; i < MAX_SERIES; i++)
        if(snap[i].route)
            dapi_buf_addf(b,
                          "dapi_http_response_bytes_total{route=\"%s\",method=\"%s\",code=\"%d\"} "
                          "%llu\n",
                          snap[i].route,
                          snap[i].method < (int)NMETHODS ? methods[snap[i].method] : "other",
                          snap[i].status, (unsigned long long)snap[i].bytes);
    family(b, "dapi_http_request_duration_seconds", "histogram",
           "time from a request's first byte to the end of its answer, by route");
    for(size_t i = 0; i < MAX_ROUTES && hsnap[i].route; i++) {
        char labels[160];
        snprintf(labels, sizeof labels, "route=\"%s\"", hsnap[i].route);
        render_histogram(b, "dapi_http_request_duration_seconds", labels, &hsnap[i].h,
                         request_bounds, sizeof request_bounds / sizeof request_bounds[0]);
    }
    counter(b, "dapi_http_series_dropped_total",
            "requests not counted by route because the table of series was full", dropped);

    counter(b, "dapi_queries_created_total", "queries created (slugs handed out)",
            atomic_load(&created));
    counter(b, "dapi_reuse_hits_total",
            "creations that shared an identical query's result or run instead of running",
            atomic_load(&reused));
    counter(b, "dapi_reuse_misses_total", "creations that ran (no reusable identical query)",
            atomic_load(&created) - atomic_load(&reused));
    family(b, "dapi_query_run_duration_seconds", "histogram",
           "time a query's run took (queueing excluded), by outcome");
    render_histogram(b, "dapi_query_run_duration_seconds", "outcome=\"succeeded\"", &ok,
                     run_bounds, sizeof run_bounds / sizeof run_bounds[0]);
    render_histogram(b, "dapi_query_run_duration_seconds", "outcome=\"failed\"", &failed,
                     run_bounds, sizeof run_bounds / sizeof run_bounds[0]);
    family(b, "dapi_creation_log_sync_duration_seconds", "histogram",
           "group-commit rounds of the creation log: one fdatasync for every creation waiting");
    render_histogram(b, "dapi_creation_log_sync_duration_seconds", NULL, &syncs, sync_bounds,
                     NB(sync_bounds));
    family(b, "dapi_creation_log_checkpoint_duration_seconds", "histogram",
           "checkpoints of the creation log (files of queries with none yet, syncfs, "
           "invalidation), by the checkpointer thread or at start and stop");
    render_histogram(b, "dapi_creation_log_checkpoint_duration_seconds", NULL, &cps,
                     checkpoint_bounds, NB(checkpoint_bounds));
    counter(b, "dapi_creation_log_checkpoint_failures_total",
            "checkpoints of the creation log that failed (retried; see the log)",
            atomic_load(&checkpoint_failures));
    counter(b, "dapi_result_pages_served_total", "result pages answered", atomic_load(&pages));
    counter(b, "dapi_result_rows_served_total", "rows in the result pages answered",
            atomic_load(&rows));
    counter(b, "dapi_result_bytes_served_total",
            "bytes of rows (JSON, before compression) in the result pages answered",
            atomic_load(&page_bytes));
    family(b, "dapi_upstream_calls_total", "counter",
           "calls to the upstream (Nekt) API by outcome; retry: an attempt that is repeated");
    dapi_buf_addf(b, "dapi_upstream_calls_total{outcome=\"ok\"} %llu\n",
                  (unsigned long long)atomic_load(&up_ok));
    dapi_buf_addf(b, "dapi_upstream_calls_total{outcome=\"error\"} %llu\n",
                  (unsigned long long)atomic_load(&up_error));
    dapi_buf_addf(b, "dapi_upstream_calls_total{outcome=\"retry\"} %llu\n",
                  (unsigned long long)atomic_load(&up_retry));
    int n = atomic_load(&nnamed);
    for(int i = 0; i < n; i++)
        counter(b, named[i].name, named[i].help, atomic_load(&named[i].v));
    pthread_mutex_unlock(&render_mu);
}

void dapi_metrics_reset(void)
{
    pthread_mutex_lock(&mu);
    memset(series, 0, sizeof series);
    memset(routes, 0, sizeof routes);
    memset(&runs_ok, 0, sizeof runs_ok);
    memset(&runs_failed, 0, sizeof runs_failed);
    memset(&log_syncs, 0, sizeof log_syncs);
    memset(&checkpoints, 0, sizeof checkpoints);
    atomic_store(&checkpoint_failures, 0);
    series_dropped = 0;
    atomic_store(&created, 0);
    atomic_store(&reused, 0);
    atomic_store(&pages, 0);
    atomic_store(&rows, 0);
    atomic_store(&page_bytes, 0);
    atomic_store(&up_ok, 0);
    atomic_store(&up_error, 0);
    atomic_store(&up_retry, 0);
    for(int i = 0; i < MAX_NAMED; i++)
        atomic_store(&named[i].v, 0);
    pthread_mutex_unlock(&mu);
}
