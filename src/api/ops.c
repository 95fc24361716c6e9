/* Operations endpoints: GET /metrics (Prometheus text format) and GET /api/ready. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "app/probe.h"
#include "auth/keys.h"
#include "backend/backend.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "base/metrics.h"
#include "config/config.h"
#include "dapi/version.h"
#include "pool/pool.h"
#include "store/queries.h"

/* ---- GET /metrics ------------------------------------------------------------------------ */

/* The process's start (wall clock): when this file's first caller asked (the server's
 * start: GET /metrics is served only once it runs). */
static int64_t started_s;

void dapi_api_ops_init(void)
{
    started_s = dapi_clock_wall_s();
}

int dapi_api_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
           strncmp(addr, "::ffff:127.", 11) == 0;
}

/* May this request read the metrics? Answers 404 (off: as if there were no such path) or 403
 * itself when not. */
static int metrics_allowed(struct dapi_req *r, struct dapi_app *app)
{
    const struct dapi_config *cfg = app->cfg;
    if(strcmp(cfg->metrics_access, "off") == 0) {
        dapi_respond_error(r, 404, "Not found", NULL);
        return 0;
    }
    if(strcmp(cfg->metrics_access, "key") == 0) {
        const char *k = dapi_req_header(r, "x-api-key");
        size_t want = cfg->metrics_key ? strlen(cfg->metrics_key) : 0;
        if(!k || !want || !dapi_ct_equal(k, strlen(k), cfg->metrics_key, want)) {
            dapi_respond_error(r, 401, "Invalid API key",
                               "GET /metrics takes the metrics key (DAPI_METRICS_KEY) as "
                               "x-api-key, not a client key");
            return 0;
        }
        return 1;
    }
    if(!dapi_api_loopback(dapi_req_client(r))) {
        dapi_respond_error(r, 403, "Forbidden",
                           "GET /metrics is served to loopback clients only "
                           "(--metrics-access loopback)");
        return 0;
    }
    return 1;
}

/* The pools' families: one sample per pool (check when the backend checks SQL, run). */
static void pool_samples(struct dapi_buf *b, struct dapi_app *app)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"dapi_pool_jobs", "gauge", "jobs waiting or running in each worker pool"},
        {"dapi_pool_workers", "gauge",
         "worker threads of each pool, set-aside ones included (more than configured while "
         "replacements run)"},
        {"dapi_pool_overrunning_workers", "gauge",
         "workers set aside because their job outlived its time limit"},
        {"dapi_pool_waiting_workers", "gauge",
         "workers set aside because their job waits for a slow client (an export)"},
        {"dapi_pool_overruns_total", "counter",
         "jobs that outlived their time limit by the grace"},
        {"dapi_pool_waits_total", "counter", "jobs set aside while they waited for a client"},
        {"dapi_pool_replacements_total", "counter", "replacement workers started"},
    };
    struct dapi_pool *pools[2] = {app->check_pool, app->run_pool};
    static const char *const names[2] = {"check", "run"};
    struct dapi_pool_stats st[2] = {{0}};
    for(int i = 0; i < 2; i++)
        if(pools[i])
            dapi_pool_stats(pools[i], &st[i]);
    for(size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        if(fam[f].type[0] == 'g')
            dapi_metrics_gauge(b, fam[f].name, fam[f].help);
        else
            dapi_metrics_counter(b, fam[f].name, fam[f].help);
        for(int i = 0; i < 2; i++) {
            if(i == 0 && !pools[0])
                continue;
            double v[] = {(double)(st[i].waiting + st[i].running),
                          (double)st[i].workers,
                          (double)st[i].overrunning,
                          (double)st[i].waiting_aside,
                          (double)st[i].overruns,
                          (double)st[i].waits,
                          (double)st[i].replacements};
            char labels[64];
            snprintf(labels, sizeof labels, "pool=\"%s\"", names[i]);
            dapi_metrics_sample(b, fam[f].name, labels, v[f]);
        }
    }
}

void dapi_api_metrics(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    if(!metrics_allowed(r, app))
        return;
    struct dapi_buf b;
    dapi_buf_init(&b, 16u << 20);
    dapi_metrics_render(&b);

    dapi_metrics_gauge(&b, "dapi_build_info", "the running dapi's version (the value is 1)");
    char labels[128];
    snprintf(labels, sizeof labels, "version=\"%s\",backend=\"%s\"", DAPI_VERSION,
             app->backend ? app->backend->name : "");
    dapi_metrics_sample(&b, "dapi_build_info", labels, 1);
    dapi_metrics_gauge(&b, "dapi_process_start_time_seconds",
                       "when this process started (Unix time)");
    dapi_metrics_sample(&b, "dapi_process_start_time_seconds", NULL, (double)started_s);
    dapi_metrics_gauge(&b, "dapi_http_connections", "client connections open");
    dapi_metrics_sample(&b, "dapi_http_connections", NULL,
                        app->http ? (double)dapi_http_open_connections(app->http) : 0);
    dapi_metrics_gauge(&b, "dapi_http_requests_in_flight", "requests being answered");
    dapi_metrics_sample(&b, "dapi_http_requests_in_flight", NULL,
                        app->http ? (double)dapi_http_inflight(app->http) : 0);

    static const char *const states[DAPI_Q_NSTATES] = {"queued", "running", "succeeded", "failed",
                                                       "cancelled"};
    uint64_t by_state[DAPI_Q_NSTATES] = {0};
    if(app->queries)
        dapi_queries_count_states(app->queries, by_state);
    dapi_metrics_gauge(&b, "dapi_queries", "queries kept by the server, by state");
    for(int i = 0; i < DAPI_Q_NSTATES; i++) {
        snprintf(labels, sizeof labels, "state=\"%s\"", states[i]);
        dapi_metrics_sample(&b, "dapi_queries", labels, (double)by_state[i]);
    }
    dapi_metrics_gauge(
        &b, "dapi_state_bytes",
        "bytes of stored results and queries (counted per query: a shared result "
        "counts once per query that shares it; each query 8 KiB more, or twice its SQL and "
        "parameters if larger)");
    dapi_metrics_sample(&b, "dapi_state_bytes", NULL,
                        app->queries ? (double)dapi_queries_bytes(app->queries) : 0);
    uint64_t coming = 0, gathered = 0;
    if(app->queries)
        dapi_queries_gather_stats(app->queries, &coming, &gathered);
    dapi_metrics_gauge(&b, "dapi_creations_on_the_way",
                       "creations queued for their check or being checked: not recorded in the "
                       "creation log yet");
    dapi_metrics_sample(&b, "dapi_creations_on_the_way", NULL, (double)coming);
    dapi_metrics_counter(&b, "dapi_creation_log_gathered_rounds_total",
                         "rounds of the creation log that waited for creations being checked to "
                         "share their sync (--commit-gather-us)");
    dapi_metrics_sample(&b, "dapi_creation_log_gathered_rounds_total", NULL, (double)gathered);
    uint64_t pfiles = 0, plive = 0, ptotal = 0;
    if(app->queries)
        dapi_queries_pack_usage(app->queries, &pfiles, &plive, &ptotal);
    dapi_metrics_gauge(&b, "dapi_pack_files", "pack files holding small results");
    dapi_metrics_sample(&b, "dapi_pack_files", NULL, (double)pfiles);
    dapi_metrics_gauge(&b, "dapi_pack_bytes",
                       "bytes of the pack files' records: live, or removed (freed by compaction)");
    dapi_metrics_sample(&b, "dapi_pack_bytes", "records=\"live\"", (double)plive);
    dapi_metrics_sample(&b, "dapi_pack_bytes", "records=\"removed\"",
                        (double)(ptotal > plive ? ptotal - plive : 0));
    unsigned long long log_pending = 0, log_waits = 0;
    dapi_log_stats(&log_pending, &log_waits);
    dapi_metrics_gauge(&b, "dapi_log_pending_bytes",
                       "access-log bytes not written yet (the log writer is behind by these)");
    dapi_metrics_sample(&b, "dapi_log_pending_bytes", NULL, (double)log_pending);
    dapi_metrics_counter(&b, "dapi_log_waits_total",
                         "times a thread waited for the log writer, behind by all its batches");
    dapi_metrics_sample(&b, "dapi_log_waits_total", NULL, (double)log_waits);
    pool_samples(&b, app);

    size_t len = 0;
    char *body = dapi_buf_take(&b, &len);
    if(!body) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    dapi_req_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    dapi_req_respond(r, 200, body, len, NULL, NULL);
}

/* ---- GET /api/ready --------------------------------------------------------------------- */

/* Can the state dir take a new file? (create and remove one) */
static int state_writable(const struct dapi_config *cfg, char *why, size_t n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tmp/.ready-%ld", cfg->state_dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(fd < 0) {
        snprintf(why, n, "cannot create a file in the state dir (--state-dir): %s",
                 strerror(errno));
        return -1;
    }
    close(fd);
    unlink(path);
    return 0;
}

static void check(struct dapi_buf *b, int *first, const char *name, int ok, const char *why)
{
    dapi_buf_adds(b, *first ? "" : ",");
    *first = 0;
    dapi_json_str(b, name, strlen(name));
    dapi_buf_adds(b, ":{");
    if(!ok) {
        dapi_buf_adds(b, "\"details\":");
        dapi_json_str(b, why, strlen(why));
        dapi_buf_adds(b, ",");
    }
    dapi_buf_addf(b, "\"status\":\"%s\"}", ok ? "ok" : "failing");
}

/* 200 when the server can take work now: the engine answers (the prober's last outcome),
 * the state dir takes files, and the backend's own dependency (Nekt) answers; else 503 with
 * each check's outcome. Never waits: every check is a cached outcome or one local syscall. */
void dapi_api_ready(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    struct dapi_probe_status st = {.ok = 1};
    char state_why[300] = "", up_why[300] = "";
    if(app->probe)
        dapi_probe_status(app->probe, dapi_clock_mono_ms(), &st);
    int engine_ok = st.ok;
    int state_ok = state_writable(app->cfg, state_why, sizeof state_why) == 0;
    int has_up = app->backend && app->backend->ops->ready;
    int up_ok = !has_up ||
                app->backend->ops->ready(app->backend_state, up_why, sizeof up_why) == 0;
    int stopping = atomic_load(&app->stopping);
    int ok = engine_ok && state_ok && up_ok && !stopping;
    struct dapi_buf b;
    dapi_buf_init(&b, 8192);
    int first = 1;
    dapi_buf_adds(&b, "{\"checks\":{");
    check(&b, &first, "engine", engine_ok, st.reason);
    check(&b, &first, "state_dir", state_ok, state_why);
    if(has_up)
        check(&b, &first, "upstream", up_ok, up_why);
    check(&b, &first, "serving", !stopping, "the server is shutting down");
    dapi_buf_addf(&b, "},\"status\":\"%s\"}", ok ? "ready" : "unavailable");
    size_t len = 0;
    char *body = dapi_buf_take(&b, &len);
    if(!body) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    dapi_req_respond(r, ok ? 200 : 503, body, len, ok ? NULL : "Retry-After", ok ? NULL : "5");
}
