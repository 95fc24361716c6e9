#include "config/config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* K_SIZE: a byte size as text (dapi_config_parse_size), kept as given; K_URL: http(s) only. */
enum kind { K_STR, K_INT, K_I64, K_CHOICE, K_BOOL, K_PATH, K_SIZE, K_URL };

struct setting {
    const char *flag; /* without the leading "--"; NULL = env only */
    const char *env;
    enum kind kind;
    size_t off;
    const char *def;     /* default as text; NULL = unset */
    int64_t min, max;    /* bounds for numbers */
    const char *choices; /* "a|b" for K_CHOICE */
    const char *help;
};

#define O(f) offsetof(struct dapi_config, f)
#define KiB 1024LL
#define MiB (1024LL * 1024)
#define GiB (1024LL * 1024 * 1024)

static const struct setting settings[] = {
    {"host", "DAPI_HOST", K_STR, O(host), "127.0.0.1", 0, 0, NULL,
     "listen address: an IPv4 or IPv6 address, or a host name (its first IPv4 address, else "
     "its first IPv6 one)"},
    {"port", "DAPI_PORT", K_INT, O(port), "5001", 0, 65535, NULL,
     "listen port (0 = pick a free one and print it); a port in use is an error"},
    {"reuse-port", "DAPI_REUSE_PORT", K_BOOL, O(reuse_port), "false", 0, 0, NULL,
     "share the port with other processes that also set it (SO_REUSEPORT: the kernel spreads "
     "connections between them)"},
    {"backend", "DAPI_BACKEND", K_CHOICE, O(backend), "local", 0, 0, "local|nekt",
     "local (embedded DuckDB over --data-dir) or nekt (forward to the Nekt Data API)"},
    {"data-dir", "DAPI_DATA_DIR", K_PATH, O(data_dir), "./data", 0, 0, NULL,
     "the local lake: <layer>/<table>.{parquet,csv,tsv,json,ndjson,jsonl} or <table>/ folders"},
    {"state-dir", "DAPI_STATE_DIR", K_PATH, O(state_dir), "./state", 0, 0, NULL,
     "materialised results, query metadata and the development key"},
    {"lake-watch", "DAPI_LAKE_WATCH", K_CHOICE, O(lake_watch), "auto", 0, 0, "auto|off",
     "how lake changes are noticed: auto (inotify; the lake is scanned again only after a "
     "change, and for every query where a change could go unseen: a network or FUSE file "
     "system, the inotify watch limit) or off (scanned for every query)"},
    {"api-keys-file", "DAPI_API_KEYS_FILE", K_PATH, O(api_keys_file), NULL, 0, 0, NULL,
     "file with one API key per line (# comments and blank lines ignored)"},
    {"keys-file", "DAPI_KEYS_FILE", K_PATH, O(keys_file), NULL, 0, 0, NULL,
     "the key store written by `dapi keys` (unset = <state-dir>/keys; reread on SIGHUP and "
     "when it changes)"},
    {NULL, "DAPI_API_KEYS", K_STR, O(api_keys_env), NULL, 0, 0, NULL,
     "comma-separated API keys (development convenience)"},
    {"rate-limit", "DAPI_RATE_LIMIT", K_STR, O(rate_limit), "0", 0, 0, NULL,
     "requests a principal (key or token) without its own rate may make: N/s, N/min or N/h, "
     "a token bucket per principal (429 above); 0 = no limit"},
    {"rate-burst", "DAPI_RATE_BURST", K_I64, O(rate_burst), "0", 0, 1000000000, NULL,
     "requests such a principal may make at once (the bucket's size; 0 = the N of "
     "--rate-limit)"},
    {"endpoints-file", "DAPI_ENDPOINTS_FILE", K_PATH, O(endpoints_file), NULL, 0, 0, NULL,
     "YAML file of named, parameterised endpoints served as GET /api/endpoints/{name} "
     "(docs/endpoints.md); checked at start, read again on SIGHUP and when it changes (a bad "
     "file keeps the endpoints in use); local backend only"},
    {"jwks-file", "DAPI_JWKS_FILE", K_PATH, O(jwks_file), NULL, 0, 0, NULL,
     "JSON Web Key Set (RSA, EC P-256, Ed25519 public keys) whose tokens are accepted as "
     "'Authorization: Bearer <JWT>' (read again on SIGHUP); needs --jwt-audience and "
     "--jwt-issuer"},
    {"jwt-audience", "DAPI_JWT_AUDIENCE", K_STR, O(jwt_audience), NULL, 0, 0, NULL,
     "the value a token's aud claim must hold"},
    {"jwt-issuer", "DAPI_JWT_ISSUER", K_STR, O(jwt_issuer), NULL, 0, 0, NULL,
     "the value a token's iss claim must equal"},
    {"jwt-default-layers", "DAPI_JWT_DEFAULT_LAYERS", K_STR, O(jwt_default_layers), NULL, 0, 0,
     NULL,
     "layers a token without a dapi_layers claim may read: comma-separated names, or * for "
     "all; unset = none"},
    {"jwt-clock-skew", "DAPI_JWT_CLOCK_SKEW", K_I64, O(jwt_clock_skew), "60", 0, 3600, NULL,
     "seconds of clock difference allowed when checking a token's exp and nbf"},
    {"log-format", "DAPI_LOG_FORMAT", K_CHOICE, O(log_format), "text", 0, 0, "text|json",
     "log line format (server and access lines)"},
    {"log-level", "DAPI_LOG_LEVEL", K_CHOICE, O(log_level), "info", 0, 0, "debug|info|warn|error",
     "least severe server line written (access lines are always written)"},
    {"log-file", "DAPI_LOG_FILE", K_PATH, O(log_file), NULL, 0, 0, NULL,
     "server log lines are appended to this file instead of stderr (reopened on SIGHUP)"},
    {"access-log", "DAPI_ACCESS_LOG", K_PATH, O(access_log), NULL, 0, 0, NULL,
     "access lines are appended to this file (reopened on SIGHUP); unset = with the server lines"},
    {"metrics-access", "DAPI_METRICS_ACCESS", K_CHOICE, O(metrics_access), "loopback", 0, 0,
     "loopback|key|off",
     "who may read GET /metrics: loopback (clients at 127.0.0.0/8 or ::1, no key), key (any "
     "client sending the DAPI_METRICS_KEY secret as x-api-key) or off (404)"},
    {NULL, "DAPI_METRICS_KEY", K_STR, O(metrics_key), NULL, 0, 0, NULL,
     "the secret that reads GET /metrics with --metrics-access key (env only: never on a "
     "command line)"},
    {"workers", "DAPI_WORKERS", K_INT, O(workers), "2", 1, 256, NULL,
     "query execution threads (each with its own DuckDB connection)"},
    {"http-threads", "DAPI_HTTP_THREADS", K_INT, O(http_threads), "2", 1, 256, NULL,
     "HTTP event-loop threads"},
    {"max-body-bytes", "DAPI_MAX_BODY_BYTES", K_I64, O(max_body_bytes), "1048576", 64, 1 * GiB,
     NULL, "largest request body accepted (413 above)"},
    {"max-header-bytes", "DAPI_MAX_HEADER_BYTES", K_I64, O(max_header_bytes), "16384", 1024,
     1 * MiB, NULL, "largest total size of request headers (431 above)"},
    {"max-connections", "DAPI_MAX_CONNECTIONS", K_I64, O(max_connections), "1024", 1, 65536, NULL,
     "concurrent client connections; further ones are closed at once"},
    {"max-connections-per-ip", "DAPI_MAX_CONNECTIONS_PER_IP", K_I64, O(max_connections_per_ip),
     "256", 1, 65536, NULL,
     "concurrent connections from one client address; further ones from it are closed at once"},
    {"request-head-timeout", "DAPI_REQUEST_HEAD_TIMEOUT", K_I64, O(request_head_timeout), "10", 1,
     3600, NULL,
     "seconds a connection may wait for a whole request head, from its start or the previous "
     "response (so also the idle keep-alive time)"},
    {"request-body-timeout", "DAPI_REQUEST_BODY_TIMEOUT", K_I64, O(request_body_timeout), "60", 1,
     86400, NULL,
     "seconds a request may take from its request line to the end of its body (408 above), "
     "however steadily its bytes come"},
    {"connection-timeout", "DAPI_CONNECTION_TIMEOUT", K_I64, O(connection_timeout), "60", 1, 86400,
     NULL,
     "seconds without progress after which a connection is closed (a request head has its own "
     "limit)"},
    {"max-sql-bytes", "DAPI_MAX_SQL_BYTES", K_I64, O(max_sql_bytes), "65536", 16, 64 * MiB, NULL,
     "longest SQL text accepted (413 above)"},
    {"max-json-depth", "DAPI_MAX_JSON_DEPTH", K_I64, O(max_json_depth), "32", 2, 1000, NULL,
     "deepest nesting of a request body (400 above)"},
    {"max-queued-queries", "DAPI_MAX_QUEUED_QUERIES", K_I64, O(max_queued_queries), "64", 1,
     100000, NULL,
     "queries that may wait for a worker: at most this many plus one per worker are being "
     "checked, queued or running at once (503 above)"},
    {"max-queries-per-key", "DAPI_MAX_QUERIES_PER_KEY", K_I64, O(max_queries_per_key), "16", 1,
     100000, NULL,
     "queries one key may have being checked, queued or running (429 above; with --nekt-api "
     "v1, page fetches in flight count too)"},
    {"max-running-per-key", "DAPI_MAX_RUNNING_PER_KEY", K_INT, O(max_running_per_key), "0", 0, 256,
     NULL,
     "queries one key may run at once (0: as many as there are workers); below --workers, "
     "another key's query always finds a worker free, at the cost of a key alone not using "
     "them all"},
    {"query-timeout", "DAPI_QUERY_TIMEOUT", K_I64, O(query_timeout), "300", 1, 86400, NULL,
     "seconds a query may run (504 above)"},
    {"max-result-rows", "DAPI_MAX_RESULT_ROWS", K_I64, O(max_result_rows), "50000000", 1,
     INT64_MAX, NULL, "rows a result may hold (413 above)"},
    {"max-result-bytes", "DAPI_MAX_RESULT_BYTES", K_I64, O(max_result_bytes), "4294967296", 1024,
     INT64_MAX, NULL, "bytes of JSON a result may hold (413 above)"},
    {"max-state-bytes", "DAPI_MAX_STATE_BYTES", K_I64, O(max_state_bytes), "21474836480", 1 * MiB,
     INT64_MAX, NULL,
     "bytes all stored results may take (when full, keys over --max-state-bytes-per-key lose "
     "their oldest results first; then new queries get 503)"},
    {"max-state-bytes-per-key", "DAPI_MAX_STATE_BYTES_PER_KEY", K_I64, O(max_state_bytes_per_key),
     "5368709120", 1 * MiB, INT64_MAX, NULL,
     "bytes one key's stored results may take, each query counting 8 KiB more, or twice "
     "its SQL and parameters if larger (its oldest ended queries, and Nekt v1 ones, are "
     "deleted to make room for a new one; a single larger result fails with 413)"},
    {"retention", "DAPI_RETENTION", K_I64, O(retention), "86400", 1, 365 * 86400LL, NULL,
     "seconds a result and its slug are kept"},
    {"reuse-max-age", "DAPI_REUSE_MAX_AGE", K_I64, O(reuse_max_age), "300", 0, 365 * 86400LL, NULL,
     "seconds an identical query (same SQL, backend, scope, unchanged lake files) reuses a "
     "result instead of running again (0 = never; a client may lower it: Cache-Control)"},
    {"reuse-max-age-nekt", "DAPI_REUSE_MAX_AGE_NEKT", K_I64, O(reuse_max_age_nekt), "3600", 0,
     365 * 86400LL, NULL,
     "--reuse-max-age for --backend nekt, where a run costs money (0 = never)"},
    {"reuse-across-keys", "DAPI_REUSE_ACROSS_KEYS", K_BOOL, O(reuse_across_keys), "false", 0, 0,
     NULL,
     "let keys of different owners share identical queries' results and runs (a key can then "
     "tell that another key ran the same query lately; off: each key reuses only its own)"},
    {"page-cache-bytes", "DAPI_PAGE_CACHE_BYTES", K_I64, O(page_cache_bytes), "67108864", 0,
     INT64_MAX, NULL,
     "bytes of result pages kept in memory ready to send: decoded for clients that do not "
     "accept zstd (and gzipped for those that accept gzip), framed for those that do (0: built "
     "on every request)"},
    {"result-wait", "DAPI_RESULT_WAIT", K_I64, O(result_wait), "300", 1, 86400, NULL,
     "seconds a results request waits for a running query (504 above)"},
    {"abandon-after", "DAPI_ABANDON_AFTER", K_I64, O(abandon_after), "600", 0, 365 * 86400LL, NULL,
     "seconds a queued or running query nobody asks about (status or results, by its key) "
     "runs before it is cancelled as abandoned (0 = never)"},
    {"commit-gather-us", "DAPI_COMMIT_GATHER_US", K_I64, O(commit_gather_us), "1000", 0, 1000000,
     NULL,
     "microseconds at most a round of the creation log waits for creations being checked, so "
     "that one sync makes them durable together; it waits no longer than a sync takes lately "
     "(0 = never waits)"},
    {"shutdown-grace", "DAPI_SHUTDOWN_GRACE", K_I64, O(shutdown_grace), "10", 0, 3600, NULL,
     "seconds in-flight requests get to finish on SIGTERM/SIGINT"},
    {"memory-limit", "DAPI_MEMORY_LIMIT", K_SIZE, O(memory_limit), "8GB", 0, 0, NULL,
     "DuckDB memory limit (e.g. 2GB), shared by every query (one that runs out of it beside "
     "others is answered 503 and run again); larger intermediates spill to <state-dir>/tmp"},
    {"memory-headroom", "DAPI_MEMORY_HEADROOM", K_I64, O(memory_headroom), "1073741824", 0,
     INT64_MAX, NULL,
     "bytes the process may use beyond --memory-limit; its data size is capped at the sum "
     "(0 = no cap)"},
    {"max-spill-bytes", "DAPI_MAX_SPILL_BYTES", K_I64, O(max_spill_bytes), "10737418240", 1 * MiB,
     INT64_MAX, NULL,
     "bytes of intermediate data all queries together may spill to <state-dir>/tmp (413 above; "
     "503 and run again when it ran beside other queries)"},
    {"duckdb-threads", "DAPI_DUCKDB_THREADS", K_I64, O(duckdb_threads), "0", 0, 1024, NULL,
     "threads DuckDB uses per query (0 = number of cores)"},
    {"nekt-url", "DAPI_NEKT_URL", K_URL, O(nekt_url), "https://api.nekt.ai", 0, 0, NULL,
     "upstream base URL for --backend nekt"},
    {"nekt-api", "DAPI_NEKT_API", K_CHOICE, O(nekt_api), "v2", 0, 0, "v2|v1",
     "upstream protocol: v2 (sql-query, run once) or v1 (Explorer, one execution per page)"},
    {NULL, "DAPI_NEKT_API_KEY", K_STR, O(nekt_api_key), NULL, 0, 0, NULL,
     "server-held upstream key; unset = forward each client's x-api-key"},
    {"nekt-read-ahead", "DAPI_NEKT_READ_AHEAD", K_I64, O(nekt_read_ahead), "3", 0, 16, NULL,
     "v1: pages fetched ahead in the background after each page a client reads (0 = off)"},
    {"upstream-workers", "DAPI_UPSTREAM_WORKERS", K_I64, O(upstream_workers), "8", 1, 256, NULL,
     "threads doing upstream calls and downloads (--backend nekt)"},
    {"upstream-timeout", "DAPI_UPSTREAM_TIMEOUT", K_I64, O(upstream_timeout), "120", 1, 86400,
     NULL, "seconds one upstream HTTP call may take"},
    {"upstream-connect-timeout", "DAPI_UPSTREAM_CONNECT_TIMEOUT", K_I64,
     O(upstream_connect_timeout), "10", 1, 3600, NULL, "seconds to connect upstream"},
    {"upstream-attempts", "DAPI_UPSTREAM_ATTEMPTS", K_I64, O(upstream_attempts), "5", 1, 100, NULL,
     "attempts per upstream call (transient failures are retried)"},
    {"upstream-retry-time", "DAPI_UPSTREAM_RETRY_TIME", K_I64, O(upstream_retry_time), "60", 0,
     86400, NULL, "seconds all attempts of one upstream call may span"},
    {"upstream-key-check-wait", "DAPI_UPSTREAM_KEY_CHECK_WAIT", K_I64, O(upstream_key_check_wait),
     "10", 0, 3600, NULL,
     "seconds a v2 creation waits for Nekt's first answer when its key was not accepted in the "
     "last 5 minutes: a key Nekt refuses gets 401/403 at creation, a failing upstream 502/504 "
     "(0 = answer with the slug at once)"},
    {"max-upstream-response-bytes", "DAPI_MAX_UPSTREAM_RESPONSE_BYTES", K_I64,
     O(max_upstream_response_bytes), "16777216", 1024, 1 * GiB, NULL,
     "largest upstream JSON response accepted (502 above)"},
    {"max-upstream-bytes", "DAPI_MAX_UPSTREAM_BYTES", K_I64, O(max_upstream_bytes), "4294967296",
     1024, INT64_MAX, NULL, "largest download of one result's files (413 above)"},
    {"application-timeout", "DAPI_APPLICATION_TIMEOUT", K_I64, O(application_timeout), "300", 1,
     86400, NULL, "seconds to wait for the v1 Explorer application to become active"},
    {"emulate-nekt", "DAPI_EMULATE_NEKT", K_BOOL, O(emulate_nekt), "false", 0, 0, NULL,
     "also serve the Nekt upstream API (/api/v1/...) on the local engine"},
    {"emulate-faults", "DAPI_EMULATE_FAULTS", K_STR, O(emulate_faults), NULL, 0, 0, NULL,
     "fault injection rules for the emulator (docs/emulator.md)"},
    {"emulate-url-ttl", "DAPI_EMULATE_URL_TTL", K_I64, O(emulate_url_ttl), "3600", 0, 86400, NULL,
     "seconds the emulator's presigned URLs stay valid"},
    {"emulate-start-delay", "DAPI_EMULATE_START_DELAY", K_I64, O(emulate_start_delay), "0", 0,
     3600000, NULL, "milliseconds the emulated Explorer application takes to start"},
    {"emulate-rows-per-file", "DAPI_EMULATE_ROWS_PER_FILE", K_I64, O(emulate_rows_per_file),
     "1000000", 1, INT64_MAX, NULL, "rows per Parquet file in emulated sql-query results"},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

/* Checked decimal parse: optional sign, digits only, no trailing junk, within bounds. */
static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if(!((*s >= '0' && *s <= '9') || *s == '-' || *s == '+'))
        return -1; /* strtoll would skip leading blanks */
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if(errno || *end || end == s || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for(const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if(len == n && strncmp(p, v, n) == 0)
            return 1;
        if(!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

int64_t dapi_config_parse_size(const char *s)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"bytes", 1},
                 {"kb", 1e3},
                 {"mb", 1e6},
                 {"gb", 1e9},
                 {"tb", 1e12},
                 {"k", 1e3},
                 {"m", 1e6},
                 {"g", 1e9},
                 {"t", 1e12},
                 {"kib", 1024.0},
                 {"mib", 1048576.0},
                 {"gib", 1073741824.0},
                 {"tib", 1099511627776.0}};
    char *end;
    while(*s == ' ')
        s++;
    if(!(*s >= '0' && *s <= '9'))
        return -1;
    double v = strtod(s, &end);
    while(*end == ' ')
        end++;
    size_t n = strlen(end);
    while(n && end[n - 1] == ' ')
        n--;
    for(size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if(strlen(units[i].unit) == n && strncasecmp(end, units[i].unit, n) == 0) {
            double bytes = v * units[i].mult;
            return bytes >= 0 && bytes < 9e18 ? (int64_t)bytes : -1;
        }
    return -1;
}

/* Sets s from the text v; name is how the message names the setting: its flag (--name) or,
 * for a value from the environment, its variable. A refused value gets a message that says
 * what is accepted, wherever it came from. */
static enum dapi_err apply(struct dapi_config *cfg, const struct setting *s, const char *v,
                           const char *name, char *err, size_t errlen)
{
    char *base = (char *)cfg;
    switch(s->kind) {
    case K_INT:
    case K_I64: {
        int64_t n;
        if(parse_i64(v, s->min, s->max, &n)) {
            snprintf(err, errlen, "invalid value for %s: '%.64s' (an integer from %lld to %lld)",
                     name, v, (long long)s->min, (long long)s->max);
            return DAPI_ERR_INVALID;
        }
        if(s->kind == K_INT)
            *(int *)(base + s->off) = (int)n;
        else
            *(int64_t *)(base + s->off) = n;
        return DAPI_OK;
    }
    case K_BOOL: {
        int b;
        if(!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
            b = 1;
        else if(!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
            b = 0;
        else {
            snprintf(err, errlen, "invalid value for %s: '%.64s' (true or false)", name, v);
            return DAPI_ERR_INVALID;
        }
        *(int *)(base + s->off) = b;
        return DAPI_OK;
    }
    case K_CHOICE:
        if(!choice_ok(s->choices, v)) {
            snprintf(err, errlen, "invalid value for %s: '%.64s' (one of %s)", name, v,
                     s->choices);
            return DAPI_ERR_INVALID;
        }
        goto copy;
    case K_SIZE:
        if(dapi_config_parse_size(v) <= 0) {
            snprintf(err, errlen,
                     "invalid value for %s: '%.64s' (a size in bytes, or with a unit: 512MB, "
                     "8GB, 4GiB)",
                     name, v);
            return DAPI_ERR_INVALID;
        }
        goto copy;
    case K_URL:
        if(strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
            snprintf(err, errlen, "invalid value for %s: '%.64s' (an http:// or https:// URL)",
                     name, v);
            return DAPI_ERR_INVALID;
        }
        goto copy;
    case K_STR:
    case K_PATH:
    copy : {
        char **slot = (char **)(base + s->off);
        char *copy = strdup(v);
        if(!copy)
            return DAPI_ERR_NOMEM;
        free(*slot);
        *slot = copy;
        return DAPI_OK;
    }
    }
    return DAPI_ERR_INTERNAL;
}

static char *absolute(const char *p)
{
    if(p[0] == '/')
        return strdup(p);
    char cwd[PATH_MAX];
    if(!getcwd(cwd, sizeof cwd))
        return NULL;
    size_t n = strlen(cwd) + 1 + strlen(p) + 1;
    char *out = malloc(n);
    if(out)
        snprintf(out, n, "%s/%s", cwd, p[0] == '.' && p[1] == '/' ? p + 2 : p);
    return out;
}

enum dapi_err dapi_config_load(struct dapi_config *cfg, int argc, char **argv, char *err,
                               size_t errlen)
{
    enum dapi_err result;
    memset(cfg, 0, sizeof *cfg);
    for(size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", s->flag ? s->flag : s->env);
        if(s->def && (result = apply(cfg, s, s->def, flag, err, errlen)))
            return result;
    }
    for(size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if(v && (result = apply(cfg, &settings[i], v, settings[i].env, err, errlen)))
            return result; /* naming the variable, not the flag, with the same hint */
    }
    for(int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if(strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%.64s'", a);
            return DAPI_ERR_INVALID;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct setting *s = NULL;
        for(size_t j = 0; j < NSETTINGS; j++)
            if(settings[j].flag && strlen(settings[j].flag) == nlen &&
               strncmp(settings[j].flag, name, nlen) == 0)
                s = &settings[j];
        if(!s) {
            snprintf(err, errlen, "unknown option '--%.*s' (see dapi help serve)", (int)nlen,
                     name);
            return DAPI_ERR_INVALID;
        }
        const char *v = eq ? eq + 1 : NULL;
        if(!v && s->kind == K_BOOL)
            v = "true"; /* a bare boolean flag switches it on */
        if(!v) {
            if(i + 1 >= argc) {
                snprintf(err, errlen, "option --%s needs a value", s->flag);
                return DAPI_ERR_INVALID;
            }
            v = argv[++i];
        }
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", s->flag);
        if((result = apply(cfg, s, v, flag, err, errlen)))
            return result;
    }
    char **paths[] = {&cfg->data_dir, &cfg->state_dir,  &cfg->api_keys_file, &cfg->keys_file,
                      &cfg->log_file, &cfg->access_log, &cfg->jwks_file,     &cfg->endpoints_file};
    static const char *const names[] = {"--data-dir",  "--state-dir",     "--api-keys-file",
                                        "--keys-file", "--log-file",      "--access-log",
                                        "--jwks-file", "--endpoints-file"};
    for(size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if(!*paths[i])
            continue;
        if(!**paths[i]) {
            snprintf(err, errlen, "empty path for %s", names[i]);
            return DAPI_ERR_INVALID;
        }
        char *abs = absolute(*paths[i]);
        if(!abs)
            return DAPI_ERR_NOMEM;
        free(*paths[i]);
        *paths[i] = abs;
    }
    return DAPI_OK;
}

void dapi_config_free(struct dapi_config *cfg)
{
    for(size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        if(s->kind == K_STR || s->kind == K_PATH || s->kind == K_CHOICE || s->kind == K_SIZE ||
           s->kind == K_URL) {
            char **slot = (char **)((char *)cfg + s->off);
            free(*slot);
            *slot = NULL;
        }
    }
}

void dapi_config_usage(FILE *out)
{
    fprintf(out, "Options (flag > environment variable > default):\n");
    for(size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        char left[64];
        if(s->flag)
            snprintf(left, sizeof left, "--%s", s->flag);
        else
            snprintf(left, sizeof left, "(env only)");
        fprintf(out, "  %-22s %-26s %s", left, s->env, s->help);
        if(s->def)
            fprintf(out, " [default: %s]", s->def);
        fputc('\n', out);
    }
}
