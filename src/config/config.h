/* dapi serve's settings: one declarative table (config.c) drives parsing of flags and
 * environment variables, validation with bounds, --help, and docs/configuration.md.
 * Precedence: flag > environment > default. */
#ifndef DAPI_CONFIG_H
#define DAPI_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "dapi/err.h"

struct dapi_config {
    char *host; /* an address or a host name */
    int port;
    int reuse_port;       /* SO_REUSEPORT */
    char *backend;        /* "local" */
    char *data_dir;       /* absolute after dapi_config_load */
    char *lake_watch;     /* "auto" | "off" */
    char *state_dir;      /* absolute after dapi_config_load */
    char *api_keys_file;  /* NULL = unset */
    char *keys_file;      /* the key store; NULL = <state-dir>/keys */
    char *rate_limit;     /* default rate: "N/s", "N/min", "N/h" or "0" (auth/ratelimit.h) */
    int64_t rate_burst;   /* default burst; 0 = the N of rate_limit */
    char *jwks_file;      /* NULL = no Bearer tokens; absolute after dapi_config_load */
    char *endpoints_file; /* NULL = no named endpoints; absolute after dapi_config_load */
    char *jwt_audience;
    char *jwt_issuer;
    char *jwt_default_layers; /* "a,b", "*" or NULL (none) */
    int64_t jwt_clock_skew;   /* s */
    char *log_format;         /* "text" | "json" */
    char *log_level;          /* "debug" | "info" | "warn" | "error" */
    char *metrics_access;     /* "loopback" | "key" | "off" */
    char *metrics_key;        /* DAPI_METRICS_KEY (env only) */
    char *log_file;           /* NULL = stderr; absolute after dapi_config_load */
    char *access_log;         /* NULL = with the server lines; absolute after dapi_config_load */
    int workers;              /* query execution threads */
    int http_threads;
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int64_t max_connections;
    int64_t connection_timeout; /* s */
    int64_t max_connections_per_ip;
    int64_t request_head_timeout; /* s */
    int64_t request_body_timeout; /* s */
    int64_t max_sql_bytes;
    int64_t max_json_depth;
    int64_t max_queued_queries;
    int64_t max_queries_per_key;
    int max_running_per_key; /* 0: no bound but --workers */
    int64_t query_timeout;   /* s */
    int64_t max_result_rows;
    int64_t max_result_bytes;
    int64_t max_state_bytes;
    int64_t max_state_bytes_per_key;
    int64_t retention;        /* s */
    int64_t page_cache_bytes; /* decoded result pages kept (store/pagecache.h) */
    int64_t result_wait;      /* s */
    int64_t abandon_after;    /* s; 0 = never */
    int64_t commit_gather_us; /* group commit's wait for creations being checked; 0 = none */
    int64_t shutdown_grace;   /* s */
    char *memory_limit;       /* DuckDB memory_limit, e.g. "4GB" */
    int64_t memory_headroom;  /* bytes beyond memory_limit; 0 = no process cap */
    int64_t max_spill_bytes;  /* DuckDB max_temp_directory_size */
    int64_t duckdb_threads;
    /* result reuse, s: identical queries share a result this young (0 = never); the second
     * for --backend nekt (a run there costs money) */
    int64_t reuse_max_age, reuse_max_age_nekt;
    int reuse_across_keys; /* results and runs shared between owners (else per owner) */
    char *api_keys_env;    /* DAPI_API_KEYS (env only) */
    /* the Nekt upstream (--backend nekt) */
    char *nekt_url;
    char *nekt_api;          /* "v2" | "v1" */
    char *nekt_api_key;      /* DAPI_NEKT_API_KEY (env only); NULL = forward client keys */
    int64_t nekt_read_ahead; /* v1: pages fetched ahead of a reader (0..16) */
    int64_t upstream_workers;
    int64_t upstream_timeout;         /* s, one HTTP call */
    int64_t upstream_connect_timeout; /* s */
    int64_t upstream_attempts;
    int64_t upstream_retry_time;     /* s, all attempts of one call */
    int64_t upstream_key_check_wait; /* s, v2 creation waiting for Nekt's first answer */
    int64_t max_upstream_response_bytes;
    int64_t max_upstream_bytes;  /* downloads of one result */
    int64_t application_timeout; /* s, v1 application start */
    /* the emulator (--emulate-nekt) */
    int emulate_nekt;
    char *emulate_faults;
    int64_t emulate_url_ttl;     /* s */
    int64_t emulate_start_delay; /* ms */
    int64_t emulate_rows_per_file;
};

/* Fills cfg from defaults, the environment and argv (argv[0] is the first flag, not the
 * program). On error returns DAPI_ERR_INVALID and writes a one-line message naming the
 * setting into err (size errlen). Strings in cfg are owned: free with dapi_config_free. */
enum dapi_err dapi_config_load(struct dapi_config *cfg, int argc, char **argv, char *err,
                               size_t errlen);
void dapi_config_free(struct dapi_config *cfg);
/* A byte size as DuckDB's memory_limit reads it ("8GB", "512 MiB", "1.5GB", "1000000"):
 * KB/MB/GB/TB (and K/M/G/T) are powers of 1000, KiB/MiB/GiB/TiB of 1024, any case. Returns
 * the bytes, or -1 if s is not an absolute size (a percentage, junk). */
int64_t dapi_config_parse_size(const char *s);
/* Writes the option list for `dapi help serve`. */
void dapi_config_usage(FILE *out);

#endif
