/* dapi_config_load: defaults, environment, flags, precedence, validation and messages. */
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

extern char **environ;

static char cwd[PATH_MAX];
static char err[512];

/* Every DAPI_* variable of the calling environment is removed so defaults are defaults. */
static void clear_dapi_env(void)
{
    for(;;) {
        char name[256] = "";
        for(char **e = environ; *e; e++)
            if(strncmp(*e, "DAPI_", 5) == 0) {
                size_t n = strcspn(*e, "=");
                if(n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        if(!name[0])
            return;
        unsetenv(name);
    }
}

/* Loads with a NULL-terminated argument list. */
static enum dapi_err load_v(struct dapi_config *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    while(args[argc] && argc < 31) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    err[0] = '\0';
    return dapi_config_load(cfg, argc, argv, err, sizeof err);
}

#define LOAD(cfg, ...) load_v((cfg), (const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void)
{
    struct dapi_config c;
    char want[PATH_MAX + 16];
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_OK);
    T_EQ_STR(c.host, "127.0.0.1");
    T_EQ_INT(c.port, 5001);
    T_EQ_STR(c.backend, "local");
    snprintf(want, sizeof want, "%s/data", cwd);
    T_EQ_STR(c.data_dir, want);
    snprintf(want, sizeof want, "%s/state", cwd);
    T_EQ_STR(c.state_dir, want);
    T_CHECK(c.api_keys_file == NULL, "api_keys_file unset by default");
    T_CHECK(c.api_keys_env == NULL, "api_keys_env unset by default");
    T_EQ_STR(c.log_format, "text");
    T_EQ_INT(c.workers, 2);
    T_EQ_INT(c.http_threads, 2);
    T_EQ_INT(c.nekt_read_ahead, 3);
    T_EQ_INT(c.max_body_bytes, 1048576);
    T_EQ_INT(c.max_header_bytes, 16384);
    T_EQ_INT(c.max_connections, 1024);
    T_EQ_INT(c.connection_timeout, 60);
    T_EQ_INT(c.max_sql_bytes, 65536);
    T_EQ_INT(c.max_json_depth, 32);
    T_EQ_INT(c.max_queued_queries, 64);
    T_EQ_INT(c.query_timeout, 300);
    T_EQ_INT(c.max_result_rows, 50000000);
    T_EQ_INT(c.max_result_bytes, 4294967296LL);
    T_EQ_INT(c.max_state_bytes, 21474836480LL);
    T_EQ_INT(c.retention, 86400);
    T_EQ_INT(c.result_wait, 300);
    T_EQ_INT(c.shutdown_grace, 10);
    T_EQ_STR(c.memory_limit, "8GB");
    T_EQ_INT(c.duckdb_threads, 0);
    dapi_config_free(&c);
    T_CHECK(c.host == NULL && c.data_dir == NULL, "free clears the strings");
}

static void test_env_and_precedence(void)
{
    struct dapi_config c;
    setenv("DAPI_PORT", "6000", 1);
    setenv("DAPI_LOG_FORMAT", "json", 1);
    setenv("DAPI_API_KEYS", "k1,k2", 1);
    setenv("DAPI_MAX_RESULT_ROWS", "123", 1);
    setenv("DAPI_DATA_DIR", "/srv/lake", 1);
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_OK);
    T_EQ_INT(c.port, 6000);
    T_EQ_STR(c.log_format, "json");
    T_EQ_STR(c.api_keys_env, "k1,k2");
    T_EQ_INT(c.max_result_rows, 123);
    T_EQ_STR(c.data_dir, "/srv/lake");
    dapi_config_free(&c);

    /* flag > environment, in both flag forms */
    T_EQ_INT(LOAD(&c, "--port", "7000", "--log-format=text"), DAPI_OK);
    T_EQ_INT(c.port, 7000);
    T_EQ_STR(c.log_format, "text");
    T_EQ_INT(c.max_result_rows, 123); /* env still applies where no flag is given */
    dapi_config_free(&c);
    T_EQ_INT(LOAD(&c, "--port=7001"), DAPI_OK);
    T_EQ_INT(c.port, 7001);
    dapi_config_free(&c);

    /* An invalid environment value is an error whose message names the variable. */
    setenv("DAPI_PORT", "abc", 1);
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "DAPI_PORT") != NULL, "env error names DAPI_PORT: [%s]", err);
    T_CHECK(strstr(err, "abc") != NULL, "env error quotes the value: [%s]", err);
    dapi_config_free(&c);
    setenv("DAPI_LOG_FORMAT", "xml", 1);
    setenv("DAPI_PORT", "1", 1);
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "DAPI_LOG_FORMAT") != NULL, "env error names DAPI_LOG_FORMAT: [%s]", err);
    dapi_config_free(&c);
    /* Regression (issue 9): a variable's error says what is accepted, as the flag's does. */
    clear_dapi_env();
    static const struct {
        const char *var, *value, *says;
    } hints[] = {
        {"DAPI_WORKERS", "0", "invalid value for DAPI_WORKERS: '0' (an integer from 1 to 256)"},
        {"DAPI_LOG_FORMAT", "xml", "invalid value for DAPI_LOG_FORMAT: 'xml' (one of text|json)"},
        {"DAPI_EMULATE_NEKT", "maybe",
         "invalid value for DAPI_EMULATE_NEKT: 'maybe' (true or "
         "false)"},
        {"DAPI_MEMORY_LIMIT", "lots",
         "invalid value for DAPI_MEMORY_LIMIT: 'lots' (a size in "
         "bytes, or with a unit"},
        {"DAPI_NEKT_URL", "ftp://x",
         "invalid value for DAPI_NEKT_URL: 'ftp://x' (an http:// or "
         "https:// URL)"},
    };
    for(size_t i = 0; i < N(hints); i++) {
        setenv(hints[i].var, hints[i].value, 1);
        T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_ERR_INVALID);
        T_CHECK(strstr(err, hints[i].says) != NULL, "%s=%s: [%s], want [%s]", hints[i].var,
                hints[i].value, err, hints[i].says);
        dapi_config_free(&c);
        unsetenv(hints[i].var);
    }

    clear_dapi_env();
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_OK);
    T_EQ_INT(c.port, 5001);
    T_CHECK(c.api_keys_env == NULL, "unset again");
    dapi_config_free(&c);
}

/* Accepted values: flag and value, what the field holds afterwards. */
static void test_accepted(void)
{
    static const struct {
        const char *flag, *value;
        size_t off;
        int is_int; /* 1 = int, 2 = int64_t */
        long long want;
    } cases[] = {
        {"--port", "0", offsetof(struct dapi_config, port), 1, 0},
        {"--port", "65535", offsetof(struct dapi_config, port), 1, 65535},
        {"--port", "+80", offsetof(struct dapi_config, port), 1, 80},
        {"--workers", "1", offsetof(struct dapi_config, workers), 1, 1},
        {"--workers", "256", offsetof(struct dapi_config, workers), 1, 256},
        {"--max-json-depth", "2", offsetof(struct dapi_config, max_json_depth), 2, 2},
        {"--max-json-depth", "1000", offsetof(struct dapi_config, max_json_depth), 2, 1000},
        {"--max-result-rows", "9223372036854775807", offsetof(struct dapi_config, max_result_rows),
         2, INT64_MAX},
        {"--shutdown-grace", "0", offsetof(struct dapi_config, shutdown_grace), 2, 0},
        {"--retention", "31536000", offsetof(struct dapi_config, retention), 2, 31536000},
        {"--duckdb-threads", "1024", offsetof(struct dapi_config, duckdb_threads), 2, 1024},
    };
    for(size_t i = 0; i < N(cases); i++) {
        struct dapi_config c;
        enum dapi_err r = LOAD(&c, cases[i].flag, cases[i].value);
        T_CHECK(r == DAPI_OK, "%s %s accepted (got %d: %s)", cases[i].flag, cases[i].value, (int)r,
                err);
        if(r == DAPI_OK) {
            long long got = cases[i].is_int == 1 ? *(int *)((char *)&c + cases[i].off)
                                                 : *(int64_t *)((char *)&c + cases[i].off);
            T_CHECK(got == cases[i].want, "%s %s: got %lld, want %lld", cases[i].flag,
                    cases[i].value, got, cases[i].want);
        }
        dapi_config_free(&c);
    }

    /* The last occurrence of a flag wins; strings are kept as given. */
    struct dapi_config c;
    T_EQ_INT(LOAD(&c, "--port", "1", "--port=2", "--host", "0.0.0.0", "--memory-limit", "2GB",
                  "--backend", "local", "--log-format", "json"),
             DAPI_OK);
    T_EQ_INT(c.port, 2);
    T_EQ_STR(c.host, "0.0.0.0");
    T_EQ_STR(c.memory_limit, "2GB");
    T_EQ_STR(c.backend, "local");
    T_EQ_STR(c.log_format, "json");
    dapi_config_free(&c);

    /* A value that starts with "--" after a flag in the two-word form is the value. */
    T_EQ_INT(LOAD(&c, "--host", "--weird"), DAPI_OK);
    T_EQ_STR(c.host, "--weird");
    dapi_config_free(&c);
}

/* Rejected arguments: the error is DAPI_ERR_INVALID, one line, and names `needle`. */
static void test_rejected(void)
{
    static const struct {
        const char *args[4];
        const char *needle, *needle2;
    } cases[] = {
        {{"--port", "65536"}, "--port", "65536"},
        {{"--port", "-1"}, "--port", "-1"},
        {{"--port", "abc"}, "--port", "abc"},
        {{"--port", "12x"}, "--port", "12x"},
        {{"--port="}, "--port", NULL},
        {{"--port", "1e3"}, "--port", NULL},
        {{"--port", "0x10"}, "--port", NULL},
        {{"--port", "99999999999999999999999"}, "--port", NULL},
        {{"--workers", "0"}, "--workers", NULL},
        {{"--workers", "257"}, "--workers", NULL},
        {{"--nekt-read-ahead", "-1"}, "--nekt-read-ahead", NULL},
        {{"--nekt-read-ahead", "17"}, "--nekt-read-ahead", NULL},
        {{"--max-json-depth", "1"}, "--max-json-depth", NULL},
        {{"--max-json-depth", "1001"}, "--max-json-depth", NULL},
        {{"--max-result-rows", "9223372036854775808"}, "--max-result-rows", NULL},
        {{"--max-result-rows", "0"}, "--max-result-rows", NULL},
        {{"--max-body-bytes", "63"}, "--max-body-bytes", NULL},
        {{"--log-format", "xml"}, "--log-format", "xml"},
        {{"--log-format", "TEXT"}, "--log-format", NULL},
        {{"--log-format", "tex"}, "--log-format", NULL},
        {{"--log-format", "text|json"}, "--log-format", NULL},
        {{"--backend", "s3"}, "--backend", NULL},
        {{"--nope"}, "--nope", NULL},
        {{"--nope=3"}, "--nope", NULL},
        {{"--por", "1"}, "--por", NULL},
        {{"--ports", "1"}, "--ports", NULL},
        {{"--port"}, "--port", "value"},
        {{"--log-format"}, "--log-format", "value"},
        {{"serve"}, "serve", NULL},
        {{"-p", "80"}, "-p", NULL},
        {{"--data-dir="}, "--data-dir", NULL},
        {{"--state-dir", ""}, "--state-dir", NULL},
        {{"--api-keys-file="}, "--api-keys-file", NULL},
        {{"--memory-limit", "lots"}, "--memory-limit", "a size in bytes, or with a unit"},
        {{"--memory-limit", "80%"}, "--memory-limit", "'80%'"},
        {{"--memory-limit", "0"}, "--memory-limit", NULL},
        {{"--memory-limit", ""}, "--memory-limit", NULL},
        {{"--nekt-url", "api.nekt.ai"}, "--nekt-url", "an http:// or https:// URL"},
        {{"--nekt-url", "ftp://example.com"}, "--nekt-url", NULL},
    };
    for(size_t i = 0; i < N(cases); i++) {
        struct dapi_config c;
        const char *const *a = cases[i].args;
        enum dapi_err r = load_v(&c, a);
        T_CHECK(r == DAPI_ERR_INVALID, "case %zu (%s %s) rejected: got %d", i, a[0],
                a[1] ? a[1] : "", (int)r);
        T_CHECK(strstr(err, cases[i].needle) != NULL, "case %zu error names %s: [%s]", i,
                cases[i].needle, err);
        if(cases[i].needle2)
            T_CHECK(strstr(err, cases[i].needle2) != NULL, "case %zu error mentions %s: [%s]", i,
                    cases[i].needle2, err);
        T_CHECK(err[0] && !strchr(err, '\n'), "case %zu error is one non-empty line: [%s]", i,
                err);
        dapi_config_free(&c);
    }

    /* An invalid value is rejected even when a later flag would fix it. */
    struct dapi_config c;
    T_EQ_INT(LOAD(&c, "--port", "x", "--port", "80"), DAPI_ERR_INVALID);
    dapi_config_free(&c);

    /* "optional sign, digits only": surrounding blanks are not digits. */
    T_EQ_INT(LOAD(&c, "--port", " 80"), DAPI_ERR_INVALID);
    dapi_config_free(&c);
    T_EQ_INT(LOAD(&c, "--port", "80 "), DAPI_ERR_INVALID);
    dapi_config_free(&c);

    /* A tiny error buffer is still NUL-terminated (truncated, not overrun). */
    char small[8];
    memset(small, 'x', sizeof small);
    char *argv[] = {"--port", "65536"};
    T_EQ_INT(dapi_config_load(&c, 2, argv, small, sizeof small), DAPI_ERR_INVALID);
    T_CHECK(memchr(small, '\0', sizeof small) != NULL, "small err buffer NUL-terminated");
    dapi_config_free(&c);
}

static void test_paths(void)
{
    struct dapi_config c;
    char want[PATH_MAX + 64];
    T_EQ_INT(LOAD(&c, "--data-dir", "rel/lake", "--state-dir=./st", "--api-keys-file", "/k/f"),
             DAPI_OK);
    snprintf(want, sizeof want, "%s/rel/lake", cwd);
    T_EQ_STR(c.data_dir, want);
    snprintf(want, sizeof want, "%s/st", cwd);
    T_EQ_STR(c.state_dir, want);
    T_EQ_STR(c.api_keys_file, "/k/f");
    dapi_config_free(&c);

    T_EQ_INT(LOAD(&c, "--data-dir", "/abs/lake", "--api-keys-file", "keys.txt"), DAPI_OK);
    T_EQ_STR(c.data_dir, "/abs/lake");
    snprintf(want, sizeof want, "%s/keys.txt", cwd);
    T_EQ_STR(c.api_keys_file, want);
    dapi_config_free(&c);

    /* The environment's relative paths are made absolute too. */
    setenv("DAPI_STATE_DIR", "envstate", 1);
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_OK);
    snprintf(want, sizeof want, "%s/envstate", cwd);
    T_EQ_STR(c.state_dir, want);
    dapi_config_free(&c);
    unsetenv("DAPI_STATE_DIR");
}

static void test_usage(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    T_CHECK(f != NULL, "open_memstream");
    if(!f)
        return;
    dapi_config_usage(f);
    fclose(f);
    static const char *const want[] = {
        "--port",        "DAPI_PORT",       "--data-dir",  "--max-result-rows",
        "DAPI_API_KEYS", "[default: 5001]", "--log-format"};
    for(size_t i = 0; i < N(want); i++)
        T_CHECK(text && strstr(text, want[i]), "usage mentions %s", want[i]);
    free(text);
}

/* The logging and listening settings of the ops work: levels, log files, --reuse-port. */
static void test_ops_settings(void)
{
    struct dapi_config c;
    char want[PATH_MAX + 32];
    T_EQ_INT(dapi_config_load(&c, 0, NULL, err, sizeof err), DAPI_OK);
    T_EQ_STR(c.log_level, "info");
    T_CHECK(c.log_file == NULL && c.access_log == NULL, "log files unset by default");
    T_EQ_INT(c.reuse_port, 0);
    dapi_config_free(&c);

    T_EQ_INT(LOAD(&c, "--log-level", "warn", "--log-file", "logs/dapi.log", "--access-log",
                  "/var/log/dapi-access.log", "--reuse-port", "--host", "localhost"),
             DAPI_OK);
    T_EQ_STR(c.log_level, "warn");
    snprintf(want, sizeof want, "%s/logs/dapi.log", cwd);
    T_EQ_STR(c.log_file, want);
    T_EQ_STR(c.access_log, "/var/log/dapi-access.log");
    T_EQ_INT(c.reuse_port, 1);
    T_EQ_STR(c.host, "localhost");
    dapi_config_free(&c);

    setenv("DAPI_LOG_LEVEL", "debug", 1);
    setenv("DAPI_REUSE_PORT", "true", 1);
    setenv("DAPI_ACCESS_LOG", "/tmp/a.log", 1);
    T_EQ_INT(LOAD(&c, "--reuse-port=false"), DAPI_OK);
    T_EQ_STR(c.log_level, "debug");
    T_EQ_INT(c.reuse_port, 0); /* the flag wins */
    T_EQ_STR(c.access_log, "/tmp/a.log");
    dapi_config_free(&c);
    unsetenv("DAPI_LOG_LEVEL");
    unsetenv("DAPI_REUSE_PORT");
    unsetenv("DAPI_ACCESS_LOG");

    T_EQ_INT(LOAD(&c, "--log-level", "verbose"), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--log-level") && strstr(err, "debug|info|warn|error"), "[%s]", err);
    dapi_config_free(&c);
    T_EQ_INT(LOAD(&c, "--log-file", ""), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--log-file") != NULL, "[%s]", err);
    dapi_config_free(&c);
    T_EQ_INT(LOAD(&c, "--access-log="), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--access-log") != NULL, "[%s]", err);
    dapi_config_free(&c);
}

int main(void)
{
    clear_dapi_env();
    if(!getcwd(cwd, sizeof cwd))
        return 2;
    test_defaults();
    test_env_and_precedence();
    test_accepted();
    test_rejected();
    test_paths();
    test_usage();
    test_ops_settings();
    T_DONE();
}
