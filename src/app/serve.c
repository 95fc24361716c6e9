/* `dapi serve`: builds the server from its parts, runs it, and shuts it down gracefully. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "app/notify.h"
#include "app/probe.h"
#include "auth/keystore.h"
#include "auth/jwt.h"
#include "auth/ratelimit.h"
#include "base/clock.h"
#include "base/log.h"
#include "emu/emu.h"
#include "emu/faults.h"
#include "endpoints/endpoints.h"
#include "engine/engine.h"
#include "http/http.h"
#include "pool/pool.h"
#include "store/queries.h"
#include "store/pagecache.h"
#include "upstream/httpc.h"
#include "dapi/version.h"

static int mkdirs(const char *dir, char *err, size_t errlen)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for(char *s = p + 1; *s; s++) {
        if(*s != '/')
            continue;
        *s = '\0';
        if(mkdir(p, 0755) && errno != EEXIST)
            goto fail;
        *s = '/';
    }
    if(mkdir(p, 0700) && errno != EEXIST)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create --state-dir %s: %s", dir, strerror(errno));
    return -1;
}

/* Queries a previous run left unfinished: collected while the registry opens, handed to the
 * backend once it is open (its jobs use the registry). */
struct pending {
    char slug[DAPI_SLUG_MAX];
    char *sql;
    struct pending *next;
};

/* Caps the process's data size (RLIMIT_DATA: heap and private writable mappings, which is
 * where every allocation of ours, of DuckDB and of its jemalloc lands) at --memory-limit +
 * --memory-headroom. DuckDB's memory_limit governs its buffer manager only: a single vector
 * of long strings, or a hash table's directory, is allocated outside it. With the cap, such
 * an allocation fails inside DuckDB, which turns it into an "Out of Memory" error of that
 * query, instead of the kernel killing the server. */
/* How long a query may go on after the watchdog interrupted it before its worker is set
 * aside and replaced: an interrupt lands within milliseconds between chunks of rows. */
#define OVERRUN_GRACE_MS 1000
/* How long a stop waits for the workers once every query was interrupted: those still
 * running then are in such work, which could take hours. */
#define STOP_WAIT_MS 5000

#if defined(__SANITIZE_ADDRESS__)
#define DAPI_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DAPI_ASAN 1
#endif
#endif

static int cap_memory(const struct dapi_config *cfg, char *err, size_t errlen)
{
    if(cfg->memory_headroom == 0)
        return 0;
#ifdef DAPI_ASAN
    /* AddressSanitizer's shadow memory is terabytes of reserved data mappings. */
    dapi_info("AddressSanitizer build: the process data size is not capped");
    return 0;
#endif
    int64_t limit = dapi_config_parse_size(cfg->memory_limit);
    if(limit < 0) {
        dapi_warn("--memory-limit '%s' is not an absolute size: the process data size is not "
                  "capped",
                  cfg->memory_limit);
        return 0;
    }
    uint64_t cap = (uint64_t)limit + (uint64_t)cfg->memory_headroom;
    if(cap < (uint64_t)limit)
        cap = RLIM_INFINITY;
    struct rlimit rl;
    if(getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && cap > rl.rlim_max)
        cap = rl.rlim_max; /* cannot raise a hard limit set from outside; keep the lower one */
    rl.rlim_cur = cap;
    if(setrlimit(RLIMIT_DATA, &rl)) {
        snprintf(err, errlen, "cannot cap the process data size at %llu bytes: %s",
                 (unsigned long long)cap, strerror(errno));
        return -1;
    }
    return 0;
}

/* Progress of the start's read back of stored queries, for the service manager. */
static void loading(void *arg, size_t n)
{
    (void)arg;
    dapi_notify_loading(n);
}

static void unfinished(void *arg, const char *slug, const char *sql)
{
    struct pending **list = arg, *p = calloc(1, sizeof *p);
    if(!p || !(p->sql = strdup(sql))) {
        free(p);
        dapi_error("query %s cannot be resumed: out of memory", slug);
        return;
    }
    snprintf(p->slug, sizeof p->slug, "%s", slug);
    p->next = *list;
    *list = p;
}

/* DAPI_TEST_FAULTS: fault injection for the test suite (docs/design.md, Testing). Read once,
 * here, from the environment: there is no flag and no route, so no request can turn a fault
 * on. A comma-separated list of names; an unknown name stops the start, so that a typo cannot
 * make a test pass without its fault. */
static int test_faults(int *engine_probe, char *err, size_t errlen)
{
    const char *env = getenv("DAPI_TEST_FAULTS");
    *engine_probe = 0;
    if(!env || !*env)
        return 0;
    for(const char *s = env; *s;) {
        size_t n = strcspn(s, ",");
        if(n == strlen("engine-probe") && strncmp(s, "engine-probe", n) == 0)
            *engine_probe = 1;
        else if(n) {
            snprintf(err, errlen, "DAPI_TEST_FAULTS: unknown fault '%.*s' (known: engine-probe)",
                     (int)(n > 64 ? 64 : n), s);
            return -1;
        }
        s += n + (s[n] == ',');
    }
    return 0;
}

/* What dapi serve holds from its start to its end. */
struct serve {
    struct dapi_config cfg;
    struct dapi_app app;
    char err[1024];
    char *dev; /* the development key, when no key is configured */
    struct dapi_probe_opts po;
    struct dapi_listen_addr listen; /* --host and --port, resolved */
    sigset_t sigs;                  /* SIGTERM, SIGINT, SIGHUP: taken by sigwait in serve_run */
    int forward;                  /* forwarding client keys (FORWARDS_KEYS, no server-held key) */
    char keys_file[4200];         /* the key store in use */
    char keys_file_default[4200]; /* <state-dir>/keys */
    int used_warned;              /* writing <keys file>.last-used failed (logged once) */
    struct dapi_jwt_opts jwt;     /* --jwt-audience, --jwt-issuer, skew, default layers */
    struct stat endpoints_st;     /* --endpoints-file as last read (a change reloads it) */
    int endpoints_lock_made;
    int left_running; /* the stop left workers running work it cannot interrupt */
    int left_waiting; /* connections still suspended at the end of the stop (serve_leave) */
};

/* Reads --endpoints-file and checks every endpoint with a connection of its own; on success
 * the new set replaces the one in use (requests keep theirs until they end). Returns 0, or
 * -1 with why in err (the set in use is kept). */
static int endpoints_load(struct serve *s, char *err, size_t errlen)
{
    struct dapi_app *app = &s->app;
    struct dapi_econn *conn = NULL;
    struct dapi_endpoints *e = NULL;
    stat(s->cfg.endpoints_file, &s->endpoints_st); /* (what was read: a failure is not retried
                                                      until the file changes again) */
    if(dapi_engine_connect(app->engine, &conn)) {
        snprintf(err, errlen, "no engine connection to check the endpoints with");
        return -1;
    }
    enum dapi_err result = dapi_endpoints_load(s->cfg.endpoints_file, conn, app->engine, &e, err,
                                               errlen);
    dapi_econn_close(conn);
    if(result)
        return -1;
    pthread_mutex_lock(&app->endpoints_lock);
    struct dapi_endpoints *old = app->endpoints;
    app->endpoints = e;
    pthread_mutex_unlock(&app->endpoints_lock);
    dapi_endpoints_unref(old);
    return 0;
}

/* On SIGHUP (force) or when the file changed (the tick): a bad file keeps the endpoints in
 * use and says why. */
static void endpoints_reload(struct serve *s, int force)
{
    struct stat st;
    char err[2048];
    if(!s->cfg.endpoints_file)
        return;
    if(!force) {
        int now = stat(s->cfg.endpoints_file, &st) == 0;
        const struct stat *o = &s->endpoints_st;
        if(!now ||
           (st.st_mtim.tv_sec == o->st_mtim.tv_sec && st.st_mtim.tv_nsec == o->st_mtim.tv_nsec &&
            st.st_size == o->st_size && st.st_ino == o->st_ino))
            return;
    }
    const char *why = force ? "SIGHUP" : "endpoints file changed";
    if(endpoints_load(s, err, sizeof err))
        dapi_warn("%s: endpoints not reloaded: %s; the %zu endpoint(s) in use are kept", why, err,
                  dapi_endpoints_count(s->app.endpoints));
    else
        dapi_info("%s: endpoints reloaded from %s: %zu endpoint(s)", why, s->cfg.endpoints_file,
                  dapi_endpoints_count(s->app.endpoints));
}

/* serve_build's result: 0, or the exit status of a server that does not start. */
enum { BUILT = 0, START_FAILED = 1, BAD_CONFIG = 2 };

/* Rate limits and Bearer tokens: the limiter with --rate-limit / --rate-burst, and the JWKS
 * of --jwks-file with its settings. Returns BUILT or BAD_CONFIG (having printed why). */
static int build_auth(struct serve *s, int forward)
{
    struct dapi_config *cfg = &s->cfg;
    struct dapi_app *app = &s->app;
    double per_s;
    int64_t n;
    if(dapi_rate_parse(cfg->rate_limit, &per_s, &n)) {
        fprintf(stderr,
                "dapi serve: invalid value for --rate-limit: '%.64s' (N/s, N/min or N/h, or 0 "
                "for no limit)\n",
                cfg->rate_limit);
        return BAD_CONFIG;
    }
    app->rate_default = per_s;
    app->burst_default = cfg->rate_burst > 0 ? (double)cfg->rate_burst : (double)(n > 0 ? n : 1);
    if(dapi_limiter_local(&app->limiter, 0)) {
        fprintf(stderr, "dapi serve: out of memory\n");
        return START_FAILED;
    }
    if(!cfg->jwks_file) {
        if(cfg->jwt_audience || cfg->jwt_issuer || cfg->jwt_default_layers)
            dapi_warn("--jwt-* settings are ignored without --jwks-file");
        return BUILT;
    }
    if(!cfg->jwt_audience || !*cfg->jwt_audience || !cfg->jwt_issuer || !*cfg->jwt_issuer) {
        fprintf(stderr, "dapi serve: --jwks-file needs --jwt-audience and --jwt-issuer\n");
        return BAD_CONFIG;
    }
    if(forward) {
        fprintf(stderr, "dapi serve: --jwks-file cannot be used while client keys are forwarded "
                        "to Nekt (set DAPI_NEKT_API_KEY)\n");
        return BAD_CONFIG;
    }
    if(dapi_scope_parse(cfg->jwt_default_layers ? cfg->jwt_default_layers : "",
                        &s->jwt.default_scope)) {
        fprintf(stderr,
                "dapi serve: invalid value for --jwt-default-layers: '%.64s' (layer names "
                "separated by commas, or *)\n",
                cfg->jwt_default_layers);
        return BAD_CONFIG;
    }
    s->jwt.audience = cfg->jwt_audience;
    s->jwt.issuer = cfg->jwt_issuer;
    s->jwt.skew_s = cfg->jwt_clock_skew;
    app->jwt = &s->jwt;
    if(dapi_jwks_load(&app->jwks, cfg->jwks_file, s->err, sizeof s->err)) {
        fprintf(stderr, "dapi serve: %s\n", s->err);
        return BAD_CONFIG;
    }
    return BUILT;
}

/* --help, the configuration, logging, the listen address and test faults. Returns -1 to go
 * on, else the exit code (0 after --help, 2 for a bad configuration). */
static int serve_config(struct serve *s, int argc, char **argv)
{
    for(int i = 0; i < argc; i++)
        if(strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("Usage: dapi serve [options]   (full list: dapi help serve)\n\n");
            dapi_config_usage(stdout);
            return 0;
        }
    if(dapi_config_load(&s->cfg, argc, argv, s->err, sizeof s->err)) {
        fprintf(stderr, "dapi serve: %s\n", s->err);
        dapi_config_free(&s->cfg);
        return 2;
    }
    s->app.cfg = &s->cfg;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    enum dapi_log_level level = DAPI_LOG_INFO;
    for(int i = DAPI_LOG_DEBUG; i <= DAPI_LOG_ERROR; i++)
        if(strcmp(s->cfg.log_level, levels[i]) == 0)
            level = (enum dapi_log_level)i;
    dapi_log_setup(strcmp(s->cfg.log_format, "json") == 0, level);
    s->po = (struct dapi_probe_opts)DAPI_PROBE_DEFAULTS;
    /* A host name is resolved once, here: one that does not resolve is a bad option; a bad
     * --emulate-faults is a bad value like any other, checked here with the rest. */
    struct dapi_faults *faults = NULL;
    if(dapi_log_open(s->cfg.log_file, s->cfg.access_log, s->err, sizeof s->err) ||
       dapi_http_resolve(s->cfg.host, s->cfg.port, &s->listen, s->err, sizeof s->err) ||
       test_faults(&s->po.fail, s->err, sizeof s->err) ||
       dapi_faults_parse(&faults, s->cfg.emulate_faults, s->err, sizeof s->err)) {
        fprintf(stderr, "dapi serve: %s\n", s->err);
        dapi_config_free(&s->cfg);
        return 2;
    }
    dapi_faults_free(faults);
    return -1;
}


/* Builds the server from its parts, in order: signals, directories, keys, engine, memory cap,
 * pools, prober, backend, emulator, registry (and the queries to resume), HTTP. Returns BUILT,
 * or having printed why: BAD_CONFIG when a setting is wrong (a path that is not usable, keys
 * that cannot be read, settings that do not go together, a value DuckDB refuses), as
 * docs/configuration.md promises; START_FAILED for anything else (what was built is freed by
 * serve_free). */
static int serve_build(struct serve *s)
{
    struct dapi_config *cfg = &s->cfg;
    struct dapi_app *app = &s->app;
    char *err = s->err;
    size_t errlen = sizeof s->err;
    snprintf(s->keys_file_default, sizeof s->keys_file_default, "%s/keys", cfg->state_dir);

    /* Signals are taken by sigtimedwait in serve_run; block them before any thread starts. */
    sigemptyset(&s->sigs);
    sigaddset(&s->sigs, SIGTERM);
    sigaddset(&s->sigs, SIGINT);
    sigaddset(&s->sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* From here on, access lines are written by the log writer, not by request threads. */
    if(dapi_log_start(err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    pthread_mutex_init(&app->endpoints_lock, NULL);
    s->endpoints_lock_made = 1;

    const struct dapi_backend *b = app->backend = dapi_backend_find(cfg->backend);
    if(!b) { /* the settings table lists the registry's names: only a mismatch gets here */
        fprintf(stderr, "dapi serve: no backend named '%s'\n", cfg->backend);
        return BAD_CONFIG;
    }
    struct stat st;
    if((b->caps & DAPI_BACKEND_NEEDS_LAKE) && (stat(cfg->data_dir, &st) || !S_ISDIR(st.st_mode))) {
        fprintf(stderr, "dapi serve: --data-dir %s is not a readable directory\n", cfg->data_dir);
        return BAD_CONFIG;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/tmp", cfg->state_dir);
    if(mkdirs(cfg->state_dir, err, errlen) || mkdirs(tmp, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return BAD_CONFIG;
    }
    if(strcmp(cfg->metrics_access, "key") == 0 &&
       (!cfg->metrics_key || strlen(cfg->metrics_key) < 16)) {
        fprintf(stderr, "dapi serve: --metrics-access key needs DAPI_METRICS_KEY, a secret of at "
                        "least 16 characters\n");
        return BAD_CONFIG;
    }
    if(!(b->caps & DAPI_BACKEND_NEEDS_LAKE) && cfg->emulate_nekt) {
        fprintf(stderr,
                "dapi serve: --emulate-nekt serves the local engine; it cannot be "
                "combined with --backend %s\n",
                b->name);
        return BAD_CONFIG;
    }
    /* Forwarding client keys (no DAPI_NEKT_API_KEY): the upstream checks them. */
    int forward = s->forward = (b->caps & DAPI_BACKEND_FORWARDS_KEYS) && !cfg->nekt_api_key;
    /* The key store (also when forwarding: its keys are checked here, the others go on to
     * Nekt). When it holds keys, no development key is made. */
    snprintf(s->keys_file, sizeof s->keys_file, "%s",
             cfg->keys_file ? cfg->keys_file : s->keys_file_default);
    if(dapi_keystore_open(&app->keystore, s->keys_file, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return BAD_CONFIG;
    }
    int store_only = dapi_keystore_count(app->keystore) > 0 && !cfg->api_keys_env &&
                     !cfg->api_keys_file;
    if(!forward && (store_only ? dapi_keys_empty(&app->keys)
                               : dapi_keys_load(&app->keys, cfg->api_keys_env, cfg->api_keys_file,
                                                cfg->state_dir, &s->dev, err, errlen))) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return BAD_CONFIG;
    }
    int auth = build_auth(s, forward);
    if(auth != BUILT)
        return auth;
    char downloads[4200];
    snprintf(downloads, sizeof downloads, "%s/queries", cfg->state_dir);
    if(mkdirs(downloads, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return BAD_CONFIG;
    }
    /* An upstream backend never runs client SQL locally; its engine only reads the files it
     * downloaded into the query directories. */
    struct dapi_engine_opts eo = {cfg->data_dir,
                                  cfg->state_dir,
                                  cfg->memory_limit,
                                  cfg->duckdb_threads,
                                  (b->caps & DAPI_BACKEND_UPSTREAM) ? downloads : NULL,
                                  cfg->query_timeout * 1000,
                                  cfg->max_spill_bytes,
                                  strcmp(cfg->lake_watch, "off") == 0};
    enum dapi_err opened = dapi_engine_open(&app->engine, &eo, err, errlen);
    if(opened) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return opened == DAPI_ERR_INVALID ? BAD_CONFIG : START_FAILED;
    }
    if(cap_memory(cfg, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    app->run_threads = (b->caps & DAPI_BACKEND_UPSTREAM) ? (int)cfg->upstream_workers
                                                         : cfg->workers;
    /* A worker whose query outlives its time limit by a second (work the interrupt cannot
     * reach) is set aside and replaced, up to four times as many replacements as the pool
     * has workers (docs/design.md, "What a time limit cannot stop"); so is a run worker
     * whose export has waited a second for its client or for the run it follows, up to the
     * number of queries that can be admitted at once (each export holds an admission slot).
     * While a key's job overruns, at most --max-queries-per-key of its jobs may wait. */
    int held = (int)cfg->max_queries_per_key;
    struct dapi_pool_watch check_watch = {
        dapi_econn_overrun_ms, OVERRUN_GRACE_MS, 4 * 2, 0, held, 0, 0};
    struct dapi_pool_watch run_watch = {dapi_econn_overrun_ms,
                                        OVERRUN_GRACE_MS,
                                        4 * app->run_threads,
                                        (int)cfg->max_queued_queries + app->run_threads,
                                        held,
                                        0,
                                        cfg->max_running_per_key};
    if(dapi_engine_sync_lake(app->engine) ||
       ((b->caps & DAPI_BACKEND_CHECKS_SQL) &&
        dapi_pool_start_watched(&app->check_pool, "check", 2, app->engine, &check_watch)) ||
       dapi_pool_start_watched(&app->run_pool, "run", app->run_threads, app->engine, &run_watch)) {
        fprintf(stderr, "dapi serve: cannot start the query workers\n");
        return START_FAILED;
    }
    /* Both backends: the Nekt backend decodes every downloaded result through the engine too,
     * so a broken engine breaks it as surely (Nekt itself is not probed: its outage is not
     * ours, and a health check that follows it would take every replica out at once). */
    if(dapi_probe_start(&app->probe, app->engine, &s->po)) {
        fprintf(stderr, "dapi serve: cannot start the engine prober\n");
        return START_FAILED;
    }
    if(cfg->emulate_nekt && dapi_emu_start(app, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    if(cfg->page_cache_bytes > 0 &&
       !(app->page_cache = dapi_page_cache_new((uint64_t)cfg->page_cache_bytes))) {
        fprintf(stderr, "dapi serve: out of memory for the page cache\n");
        return START_FAILED;
    }
    struct pending *resume = NULL;
    if(dapi_queries_open(&app->queries, cfg->state_dir, cfg->retention,
                         (uint64_t)cfg->max_state_bytes, dapi_clock_wall_s(), unfinished, loading,
                         &resume, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    /* The server-wide bound is the one the run pool had (a worker each, plus a queue); it now
     * covers queries being checked too, and is counted in one place with the per-key one. */
    struct dapi_queries_limits lim = {(uint64_t)(cfg->max_queued_queries + app->run_threads),
                                      (uint64_t)cfg->max_queries_per_key,
                                      (uint64_t)cfg->max_state_bytes_per_key, DAPI_QUERY_CHARGE};
    dapi_queries_set_limits(app->queries, &lim);
    dapi_queries_set_abandon(app->queries, app->cfg->abandon_after);
    dapi_queries_set_gather(app->queries, cfg->commit_gather_us);
    app->backend_env = (struct dapi_backend_env){
        cfg,           app->queries,   app->engine,        app->check_pool,
        app->run_pool, &app->stopping, dapi_clock_mono_ms, dapi_clock_wall_s};
    if(b->ops->start && b->ops->start(&app->backend_env, &app->backend_state, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    while(resume) {
        struct pending *p = resume;
        resume = p->next;
        if(b->ops->unfinished)
            b->ops->unfinished(app->backend_state, p->slug, p->sql);
        free(p->sql);
        free(p);
    }
    if(cfg->endpoints_file && !b->ops->create_bound) {
        fprintf(stderr,
                "dapi serve: --endpoints-file needs a backend that binds parameters; --backend %s "
                "sends SQL text upstream\n",
                b->name);
        return BAD_CONFIG;
    }
    if(cfg->endpoints_file) {
        if(endpoints_load(s, err, errlen)) {
            fprintf(stderr, "dapi serve: --endpoints-file %s\n", err);
            return BAD_CONFIG;
        }
        dapi_info("endpoints file %s: %zu endpoint(s)", cfg->endpoints_file,
                  dapi_endpoints_count(app->endpoints));
    }
    struct dapi_http_opts ho = {cfg->host,
                                cfg->port,
                                cfg->http_threads,
                                cfg->max_body_bytes,
                                cfg->max_header_bytes,
                                cfg->max_connections,
                                cfg->max_connections_per_ip,
                                cfg->request_head_timeout,
                                cfg->connection_timeout,
                                cfg->request_body_timeout,
                                dapi_api_dispatch,
                                app,
                                &s->listen,
                                cfg->reuse_port};
    dapi_api_ops_init();
    if(dapi_http_start(&app->http, &ho, err, errlen)) {
        fprintf(stderr, "dapi serve: %s\n", err);
        return START_FAILED;
    }
    return BUILT;
}

/* Reads the key store again: on SIGHUP (force), or from the tick when the file changed. A
 * bad file keeps the keys in use and says why (once per version of the file). */
static void keystore_reload(struct serve *s, int force)
{
    char err[1024];
    size_t n = 0;
    const char *why = force ? "SIGHUP" : "keys file changed";
    int rc = dapi_keystore_reload(s->app.keystore, force, &n, err, sizeof err);
    if(rc > 0)
        dapi_info("%s: key store reloaded from %s: %zu key(s)", why, s->keys_file, n);
    else if(rc < 0)
        dapi_warn("%s: key store not reloaded: %s; the %zu key(s) in use are kept", why, err,
                  dapi_keystore_count(s->app.keystore));
}

/* Writes the last use of the store's keys (<keys file>.last-used) for `dapi keys list`. A
 * failure (a read-only directory) is logged once, until a write succeeds again. */
static void keystore_flush(struct serve *s, int64_t min_interval)
{
    char err[1024];
    if(!s->app.keystore)
        return;
    int rc = dapi_keystore_flush_used(s->app.keystore, dapi_clock_wall_s(), min_interval, err,
                                      sizeof err);
    if(rc < 0) {
        if(!s->used_warned)
            dapi_warn("last use of the keys not recorded (dapi keys list shows the last "
                      "recorded one): %s",
                      err);
        s->used_warned = 1;
    } else if(rc > 0) {
        s->used_warned = 0;
    }
}

/* SIGHUP: the log files are opened again (after logrotate moved them), then the key store and
 * the keys file are read again. Requests go on meanwhile: the log descriptors and the key sets
 * are swapped in place (log.c, keys.c, keystore.c), never closed under a request. */
static void serve_reload(struct serve *s)
{
    struct dapi_config *cfg = &s->cfg;
    struct dapi_app *app = &s->app;
    char err[1024];
    if(dapi_log_has_files()) {
        if(dapi_log_reopen(err, sizeof err))
            dapi_warn("SIGHUP: %s; logging goes on to the file opened before", err);
        else
            dapi_info("SIGHUP: log files reopened");
    }
    keystore_reload(s, 1);
    if(!app->keys) {
        dapi_info("SIGHUP: client keys are forwarded to Nekt; there are no keys to reload");
    } else if(!cfg->api_keys_file && !cfg->api_keys_env && !s->dev) {
        /* only the key store's keys */
    } else if(!cfg->api_keys_file) {
        /* The environment of a running process does not change. */
        dapi_info("SIGHUP: the %zu key(s) come from %s, which cannot change while dapi runs; "
                  "kept (restart to change them)",
                  dapi_keys_count(app->keys),
                  cfg->api_keys_env ? "DAPI_API_KEYS" : "the development key");
    } else {
        size_t n = 0;
        if(dapi_keys_reload(app->keys, cfg->api_keys_env, cfg->api_keys_file, &n, err, sizeof err))
            dapi_warn("SIGHUP: keys not reloaded: %s; the %zu key(s) in use are kept", err,
                      dapi_keys_count(app->keys));
        else
            dapi_info("SIGHUP: keys reloaded from %s%s: %zu key(s)", cfg->api_keys_file,
                      cfg->api_keys_env ? " and DAPI_API_KEYS" : "", n);
    }
    if(app->jwks) {
        if(dapi_jwks_reload(app->jwks, cfg->jwks_file, err, sizeof err))
            dapi_warn("SIGHUP: JWKS not reloaded: %s; the %zu key(s) in use are kept", err,
                      dapi_jwks_count(app->jwks));
        else
            dapi_info("SIGHUP: JWKS reloaded from %s: %zu key(s)", cfg->jwks_file,
                      dapi_jwks_count(app->jwks));
    }
}

/* Says where the server listens, then does the housekeeping until SIGTERM/SIGINT, which it
 * returns; SIGHUP reloads (serve_reload). */
static int serve_run(struct serve *s)
{
    struct dapi_config *cfg = &s->cfg;
    struct dapi_app *app = &s->app;
    const char *dev = s->dev;
    int port = dapi_http_port(app->http);
    if(app->backend->caps & DAPI_BACKEND_UPSTREAM)
        dapi_info("dapi %s forwarding to %s (%s, %s); results in %s", DAPI_VERSION, cfg->nekt_url,
                  cfg->nekt_api, s->forward ? "client keys forwarded" : "server-held Nekt key",
                  cfg->state_dir);
    else
        dapi_info("dapi %s (DuckDB %s) serving %s with %zu key(s)%s; results in %s", DAPI_VERSION,
                  dapi_engine_version(), cfg->data_dir, dapi_keys_count(app->keys),
                  cfg->emulate_nekt ? ", emulating the Nekt API" : "", cfg->state_dir);
    if(dapi_keystore_count(app->keystore))
        dapi_info("key store %s: %zu key(s)", s->keys_file, dapi_keystore_count(app->keystore));
    if(dev)
        dapi_info("no API key configured: using the development key from %s/dev-key",
                  cfg->state_dir);
    /* The address itself, also for a host name (which may have several). */
    const char *host = s->listen.host;
    printf("dapi listening on http://%s:%d\n", host, port);
    if(dev) {
        printf("development key: %s\n", dev);
        printf("try: curl -s -H 'x-api-key: %s' -H 'Content-Type: application/json' "
               "-d '{\"layer\":\"nekt_raw\",\"table\":\"customers\",\"limit\":5}' "
               "http://%s:%d/api/queries\n",
               dev, host, port);
    }
    fflush(stdout);
    dapi_notify_ready(cfg->host, port);

    /* Main loop: housekeeping every 250 ms until SIGTERM/SIGINT. */
    struct timespec tick = {0, 250 * 1000 * 1000};
    int sig;
    for(;;) {
        sig = sigtimedwait(&s->sigs, NULL, &tick);
        if(sig == SIGTERM || sig == SIGINT)
            break;
        if(sig == SIGHUP) {
            serve_reload(s);
            endpoints_reload(s, 1);
        } else {
            keystore_reload(s, 0);
            endpoints_reload(s, 0);
        }
        keystore_flush(s, 5);
        dapi_queries_tick(app->queries, dapi_clock_wall_s(), dapi_clock_mono_ms());
        if(app->emu)
            dapi_emu_tick(app, dapi_clock_wall_s());
    }
    return sig;
}

/* The graceful stop after signal sig: stop accepting, let requests in flight finish, then cut
 * what is left (serve_free then frees everything). */
static void serve_shutdown(struct serve *s, int sig)
{
    struct dapi_app *app = &s->app;
    dapi_notify_stopping();
    dapi_info("received %s: stopping (up to %lld s for requests in flight)",
              sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)s->cfg.shutdown_grace);

    /* 1. stop accepting; 2. let requests in flight finish; 3. cut what is left. */
    dapi_http_quiesce(app->http);
    int64_t until = dapi_clock_mono_ms() + s->cfg.shutdown_grace * 1000;
    while(dapi_http_inflight(app->http) > 0 && dapi_clock_mono_ms() < until) {
        dapi_queries_tick(app->queries, dapi_clock_wall_s(), dapi_clock_mono_ms());
        dapi_clock_sleep_ms(20);
    }
    atomic_store(&app->stopping, 1);
    dapi_probe_stop(app->probe);    /* before the abort, which would fail a probe in flight */
    dapi_engine_abort(app->engine); /* running queries stop; queued ones never start */
    dapi_httpc_abort_all();         /* upstream calls in flight stop too */
    /* later submissions are refused with 503 */
    s->left_running = dapi_pool_stop_within(app->check_pool, 0, STOP_WAIT_MS) != DAPI_OK;
    dapi_queries_flush(app->queries); /* creations waiting for their sync are answered */
    s->left_running |= dapi_pool_stop_within(app->run_pool, 0, STOP_WAIT_MS) != DAPI_OK;
    dapi_emu_quiesce(app);
    dapi_queries_cancel_waiters(app->queries);
    /* resumed connections need a moment to send their answers */
    until = dapi_clock_mono_ms() + 2000;
    while(dapi_http_inflight(app->http) > 0 && dapi_clock_mono_ms() < until)
        dapi_clock_sleep_ms(10);
    /* A request still waiting now waits for work that has not ended (a check the engine
     * cannot interrupt): libmicrohttpd cannot be stopped under it (it aborts the process), nor
     * can the request be freed under the work that will answer it, so the process leaves. */
    s->left_waiting = dapi_http_suspended(app->http);
}

/* The stop after serve_shutdown when workers are still running work DuckDB cannot interrupt,
 * or requests still wait for work that has not ended: neither the workers nor the engine they
 * are in can be freed, nor the HTTP server stopped under a waiting request, so the process ends
 * here. A request still waiting is answered 503 as any other request the stop refuses
 * (dapi_http_abandon). Everything accepted is durable already (the creation log); the queries
 * cut are run again at the next start, as after a crash, which also counts them for the
 * crash-loop guard. */
static _Noreturn void serve_leave(struct serve *s)
{
    struct dapi_app *app = &s->app;
    int status;
    char ra[16];
    size_t len = 0;
    char *body = dapi_err_answer(DAPI_ERR_SHUTDOWN,
                                 "the server stopped before this request could be answered; "
                                 "send it again",
                                 &status, ra, &len);
    int n = dapi_http_abandon(app->http, status, body ? body : "{}", body ? len : 2, ra);
    free(body);
    keystore_flush(s, 0);
    if(s->left_running)
        dapi_warn("stopping without waiting for work the engine cannot interrupt (%d s after "
                  "the queries were stopped); the queries it belongs to run again at the next "
                  "start",
                  STOP_WAIT_MS / 1000);
    if(n || s->left_waiting)
        dapi_warn("stopping with %d connection(s) still waiting for work that has not ended: "
                  "%d request(s) answered %d (Server shutting down), every connection closed",
                  s->left_waiting, n, status);
    dapi_log_close();
    _exit(0);
}

/* Frees whatever serve_build built (all of it, or as far as it got), and the configuration. */
static void serve_free(struct serve *s, int code)
{
    struct dapi_app *app = &s->app;
    dapi_http_stop(app->http);
    dapi_probe_free(app->probe); /* after the HTTP server: health reads it */
    dapi_pool_free(app->check_pool);
    dapi_pool_free(app->run_pool);
    dapi_emu_stop(app);
    if(app->backend && app->backend->ops->stop)
        app->backend->ops->stop(app->backend_state);
    dapi_queries_close(app->queries);
    dapi_page_cache_free(app->page_cache); /* after the HTTP server: answers hold pages */
    dapi_endpoints_unref(app->endpoints);
    if(s->endpoints_lock_made)
        pthread_mutex_destroy(&app->endpoints_lock);
    dapi_engine_close(app->engine);
    dapi_keys_free(app->keys);
    keystore_flush(s, 0);
    dapi_keystore_free(app->keystore);
    dapi_jwks_free(app->jwks);
    if(app->limiter)
        app->limiter->free(app->limiter);
    free(s->dev);
    if(code == 0)
        dapi_info("stopped");
    dapi_log_close(); /* every access line is written out, whatever the exit */
    dapi_config_free(&s->cfg);
}

int dapi_serve_main(int argc, char **argv)
{
    struct serve s;
    memset(&s, 0, sizeof s);
    int code = serve_config(&s, argc, argv);
    if(code >= 0) {
        dapi_log_close();
        return code;
    }
    code = serve_build(&s);
    if(code == BUILT)
        serve_shutdown(&s, serve_run(&s));
    if(s.left_running || s.left_waiting)
        serve_leave(&s);
    serve_free(&s, code);
    return code;
}
