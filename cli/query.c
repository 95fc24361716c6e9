/* `dapi query`: creates a query on a dapi server, reads every page (several at a time, in
 * order) and writes the rows as csv, tsv, json, ndjson or an aligned table. Exit codes and
 * formats: docs/cli.md. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "dapi/client.h"
#include "format.h"

#define SQL_FILE_MAX ((size_t)16 << 20)

enum {
    O_URL, O_KEY, O_SQL, O_SQL_FILE, O_LAYER, O_TABLE, O_LIMIT, O_FORMAT, O_OUTPUT,
    O_PARALLEL, O_TIMEOUT, O_RETRIES, O_RETRY_TIME, O_QUIET, O_HELP, O__COUNT
};

static const struct dapi_cli_opt opts[O__COUNT] = {
    [O_URL] = {"url", 0, "URL", "DAPI_URL", "http://localhost:5001", "the dapi server"},
    [O_KEY] = {"api-key", 0, "KEY", "DAPI_API_KEY", NULL,
               "API key sent as x-api-key (prefer the env var: flags show in ps)"},
    [O_SQL] = {"sql", 0, "SQL", NULL, NULL, "the SQL to run"},
    [O_SQL_FILE] = {"sql-file", 0, "FILE", NULL, NULL, "read the SQL from FILE ('-' = stdin)"},
    [O_LAYER] = {"layer", 0, "LAYER", NULL, NULL, "with --table: read a whole table"},
    [O_TABLE] = {"table", 0, "TABLE", NULL, NULL, "the table in --layer"},
    [O_LIMIT] = {"limit", 0, "N", NULL, NULL, "with --layer/--table: at most N rows"},
    [O_FORMAT] = {"format", 'f', "FMT", NULL, "table on a terminal, else csv",
                  "csv, tsv, json, ndjson or table"},
    [O_OUTPUT] = {"output", 'o', "FILE", NULL, "stdout",
                  "write to FILE (replaced only once complete)"},
    [O_PARALLEL] = {"parallel", 'p', "N", NULL, "4", "pages fetched at once (1-64)"},
    [O_TIMEOUT] = {"timeout", 0, "SECONDS", NULL, "330",
                   "limit for one HTTP call (a results call may wait for the query)"},
    [O_RETRIES] = {"retries", 0, "N", NULL, "4", "retries of a transient failure (0-100)"},
    [O_RETRY_TIME] = {"retry-max-time", 0, "SECONDS", NULL, "60",
                      "no retry starts later than this after a call's first attempt"},
    [O_QUIET] = {"quiet", 'q', NULL, NULL, NULL, "no progress line and no retry notices"},
    [O_HELP] = {"help", 'h', NULL, NULL, NULL, "this help"},
};

void dapi_cli_query_usage(FILE *out)
{
    fprintf(out,
            "Usage: dapi query [options] (--sql SQL | --sql-file FILE | --layer L --table T)\n\n"
            "Creates a query on a dapi server and writes every row of its result, in order.\n\n"
            "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
    fprintf(out,
            "\nExit codes: 0 ok, 1 other failure (malformed answer, output not writable),\n"
            "2 usage error, 3 authentication (no key, 401, 403), 4 query refused or failed\n"
            "(400, 404, 413, execution failure), 5 server unreachable or unavailable\n"
            "(connection, timeout, 429/502/503/504 after retries).\n");
}

/* ---- removing a half-written --output file when interrupted ------------------------- */

static char tmp_path[PATH_MAX];
static volatile sig_atomic_t tmp_live;

static void on_fatal_signal(int sig)
{
    if(tmp_live)
        unlink(tmp_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- progress (stderr is a terminal and no --quiet) --------------------------------- */

struct progress {
    atomic_ullong rows, pages;
    atomic_int done;
    int64_t t0;
    pthread_mutex_t mu; /* one stderr writer at a time (progress line, retry notices) */
    int on;             /* a progress line is being drawn */
    int quiet;
};

/* One write(2) per line, so lines from several threads do not mix; failures are ignored
 * (there is nowhere left to report them). */
static void put_stderr(const char *s, size_t n)
{
    while(n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void progress_text(struct progress *p, char *line, size_t cap)
{
    unsigned long long rows = atomic_load(&p->rows), pages = atomic_load(&p->pages);
    double s = (double)(dapi_clock_mono_ms() - p->t0) / 1000.0;
    snprintf(line, cap, "%llu rows, %llu pages, %.0f rows/s, %.1f s", rows, pages,
             s > 0.05 ? (double)rows / s : 0.0, s);
}

static void *progress_loop(void *arg)
{
    struct progress *p = arg;
    char line[256], out[300];
    while(!atomic_load(&p->done)) {
        progress_text(p, line, sizeof line);
        int n = snprintf(out, sizeof out, "\r%s\033[K", line);
        if(n < 0 || (size_t)n >= sizeof out)
            n = n < 0 ? 0 : (int)sizeof out - 1;
        pthread_mutex_lock(&p->mu);
        put_stderr(out, (size_t)n);
        pthread_mutex_unlock(&p->mu);
        for(int i = 0; i < 4 && !atomic_load(&p->done); i++)
            dapi_clock_sleep_ms(50);
    }
    return NULL;
}

static void on_retry(void *arg, const char *what, int attempt, int64_t delay_ms,
                     const char *reason)
{
    struct progress *p = arg;
    if(p->quiet)
        return;
    char out[512];
    pthread_mutex_lock(&p->mu);
    int n = snprintf(out, sizeof out, "%sdapi query: %s: %s; retry %d in %.1f s\n",
                     p->on ? "\r\033[K" : "", what, reason, attempt, (double)delay_ms / 1000.0);
    if(n < 0)
        n = 0;
    if((size_t)n >= sizeof out)
        n = (int)sizeof out - 1;
    put_stderr(out, (size_t)n);
    pthread_mutex_unlock(&p->mu);
}

/* Stops the progress line, leaving its final state on a line of its own. */
static void progress_stop(struct progress *p, pthread_t tid, int *running)
{
    if(!*running)
        return;
    *running = 0;
    atomic_store(&p->done, 1);
    pthread_join(tid, NULL);
    char line[256];
    progress_text(p, line, sizeof line);
    pthread_mutex_lock(&p->mu);
    p->on = 0;
    fprintf(stderr, "\r%s\033[K\n", line);
    pthread_mutex_unlock(&p->mu);
}

/* ---- the run ------------------------------------------------------------------------ */

struct run {
    struct dapi_format *fmt;
    struct progress *progress;
    enum dapi_err fmt_result;
    char fmt_err[256];
};

static int on_page(void *arg, const struct dapi_page *page)
{
    struct run *r = arg;
    r->fmt_result = dapi_format_page(r->fmt, page, r->fmt_err, sizeof r->fmt_err);
    if(r->fmt_result)
        return 1;
    atomic_fetch_add(&r->progress->rows, dapi_page_rows(page));
    atomic_fetch_add(&r->progress->pages, 1);
    return 0;
}

static int exit_for(const struct dapi_client_err *e)
{
    switch(e->kind) {
    case DAPI_CLIENT_AUTH: return DAPI_EXIT_AUTH;
    case DAPI_CLIENT_QUERY: return DAPI_EXIT_QUERY;
    case DAPI_CLIENT_NETWORK: return DAPI_EXIT_NETWORK;
    default: return DAPI_EXIT_OTHER;
    }
}

static void print_err(const struct dapi_client_err *e)
{
    char status[48] = "";
    if(e->status)
        snprintf(status, sizeof status, " (HTTP %d)", e->status);
    else if(e->kind == DAPI_CLIENT_NETWORK)
        snprintf(status, sizeof status, " (no answer)");
    fprintf(stderr, "dapi query: %s%s%s%s\n", e->message, e->details[0] ? ": " : "", e->details,
            status);
}

/* Reads the SQL of --sql-file (owned, free()); NULL after printing why. */
static char *read_sql(const char *path)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    struct dapi_buf b;
    dapi_buf_init(&b, SQL_FILE_MAX);
    if(fd < 0) {
        fprintf(stderr, "dapi query: --sql-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for(;;) {
        char *dst = dapi_buf_reserve(&b, 65536);
        if(!dst) {
            fprintf(stderr, "dapi query: --sql-file %s: larger than %zu bytes\n", path,
                    SQL_FILE_MAX);
            break;
        }
        ssize_t n = read(fd, dst, 65536);
        if(n < 0 && errno == EINTR)
            continue;
        if(n < 0) {
            fprintf(stderr, "dapi query: --sql-file %s: %s\n", path, strerror(errno));
            dapi_buf_free(&b);
            break;
        }
        if(n == 0) {
            if(fd != STDIN_FILENO)
                close(fd);
            return dapi_buf_take(&b, NULL);
        }
        dapi_buf_commit(&b, (size_t)n);
    }
    if(fd != STDIN_FILENO)
        close(fd);
    dapi_buf_free(&b);
    return NULL;
}

/* Opens --output: a temp file beside FILE (renamed over it at the end) for regular files,
 * FILE itself for anything else (a FIFO, /dev/null). Returns the fd or -1 after printing. */
static int open_output(const char *path, int *use_tmp)
{
    struct stat st;
    *use_tmp = !(stat(path, &st) == 0 && !S_ISREG(st.st_mode));
    if(!*use_tmp) {
        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if(fd < 0)
            fprintf(stderr, "dapi query: --output %s: %s\n", path, strerror(errno));
        return fd;
    }
    int n = snprintf(tmp_path, sizeof tmp_path, "%s.tmp-XXXXXX", path);
    if(n < 0 || (size_t)n >= sizeof tmp_path) {
        fprintf(stderr, "dapi query: --output %s: path too long\n", path);
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    int fd = mkostemp(tmp_path, O_CLOEXEC);
    if(fd < 0) {
        fprintf(stderr, "dapi query: --output %s: %s\n", path, strerror(errno));
        return -1;
    }
    tmp_live = 1;
    if(fchmod(fd, 0666 & ~mask)) { /* as if created by open(2) */
    }
    return fd;
}

struct settings {
    const char *url, *key, *output;
    struct dapi_client_query q;
    char *sql_owned;
    enum dapi_format_kind format;
    long long parallel, timeout, retries, retry_time;
    int quiet;
};

/* Validates the options into s. Returns 0, or an exit code after printing why. */
static int settle(const char **v, struct settings *s)
{
    long long limit = 0;
    memset(s, 0, sizeof *s);
    s->url = v[O_URL] ? v[O_URL] : "http://localhost:5001";
    s->key = v[O_KEY];
    s->output = v[O_OUTPUT] && strcmp(v[O_OUTPUT], "-") != 0 ? v[O_OUTPUT] : NULL;
    s->quiet = v[O_QUIET] != NULL;
    int modes = (v[O_SQL] != NULL) + (v[O_SQL_FILE] != NULL) + (v[O_LAYER] || v[O_TABLE]);
    const char *bad = NULL;
    if(modes != 1)
        bad = "give exactly one of --sql, --sql-file, or --layer with --table";
    else if((v[O_LAYER] || v[O_TABLE]) && (!v[O_LAYER] || !v[O_TABLE]))
        bad = "--layer and --table go together";
    else if(v[O_LIMIT] && !v[O_LAYER])
        bad = "--limit goes with --layer/--table (write LIMIT in the SQL otherwise)";
    else if(v[O_LIMIT] && dapi_cli_int(v[O_LIMIT], 1, INT64_MAX, &limit))
        bad = "--limit must be a positive integer";
    else if(v[O_FORMAT] && dapi_format_parse(v[O_FORMAT], &s->format))
        bad = "--format must be csv, tsv, json, ndjson or table";
    else if(dapi_cli_int(v[O_PARALLEL] ? v[O_PARALLEL] : "4", 1, 64, &s->parallel))
        bad = "--parallel must be an integer from 1 to 64";
    else if(dapi_cli_int(v[O_TIMEOUT] ? v[O_TIMEOUT] : "330", 1, 86400, &s->timeout))
        bad = "--timeout must be a number of seconds from 1 to 86400";
    else if(dapi_cli_int(v[O_RETRIES] ? v[O_RETRIES] : "4", 0, 100, &s->retries))
        bad = "--retries must be an integer from 0 to 100";
    else if(dapi_cli_int(v[O_RETRY_TIME] ? v[O_RETRY_TIME] : "60", 0, 86400, &s->retry_time))
        bad = "--retry-max-time must be a number of seconds from 0 to 86400";
    else if(v[O_SQL] && !v[O_SQL][0])
        bad = "--sql is empty";
    if(bad) {
        fprintf(stderr, "dapi query: %s (see dapi query --help)\n", bad);
        return DAPI_EXIT_USAGE;
    }
    if(!v[O_FORMAT]) {
        int fd_tty = !s->output && isatty(STDOUT_FILENO);
        s->format = fd_tty ? DAPI_FORMAT_TABLE : DAPI_FORMAT_CSV;
    }
    if(v[O_SQL_FILE]) {
        if(!(s->sql_owned = read_sql(v[O_SQL_FILE])))
            return DAPI_EXIT_USAGE;
        s->q.sql = s->sql_owned;
    } else if(v[O_SQL]) {
        s->q.sql = v[O_SQL];
    } else {
        s->q.layer = v[O_LAYER];
        s->q.table = v[O_TABLE];
        s->q.limit = limit;
    }
    if(!s->key) {
        fprintf(stderr, "dapi query: no API key: pass --api-key or set DAPI_API_KEY\n");
        return DAPI_EXIT_AUTH;
    }
    return 0;
}

/* Finishes the output file: rename the temp file over the target (or drop it on failure). */
static int close_output(int fd, int use_tmp, const char *path, int ok)
{
    int rc = 0;
    if(fd >= 0 && ok && use_tmp && fsync(fd) && errno != EINVAL) {
        fprintf(stderr, "dapi query: --output %s: %s\n", path, strerror(errno));
        ok = 0, rc = -1;
    }
    if(fd >= 0 && close(fd) && ok) {
        fprintf(stderr, "dapi query: --output %s: %s\n", path, strerror(errno));
        ok = 0, rc = -1;
    }
    if(use_tmp && tmp_live) {
        if(ok && rename(tmp_path, path)) {
            fprintf(stderr, "dapi query: --output %s: %s\n", path, strerror(errno));
            rc = -1;
            ok = 0;
        }
        if(!ok)
            unlink(tmp_path);
        tmp_live = 0;
    }
    return rc;
}

int dapi_cli_query(int argc, char **argv)
{
    int rc = DAPI_EXIT_OK;
    const char *v[O__COUNT];
    struct settings s;
    struct dapi_client *client = NULL;
    struct dapi_format *fmt = NULL;
    struct dapi_out out;
    struct dapi_client_err err;
    struct progress prog;
    char *slug = NULL;
    int out_fd = -1, use_tmp = 0, prog_thread = 0, sync_made = 0;
    pthread_t prog_tid;
    memset(&s, 0, sizeof s);
    memset(&prog, 0, sizeof prog);
    memset(&prog_tid, 0, sizeof prog_tid);
    dapi_out_init(&out, -1, 0);

    if(dapi_cli_parse("query", opts, O__COUNT, argc, argv, v))
        return DAPI_EXIT_USAGE;
    if(v[O_HELP]) {
        dapi_cli_query_usage(stdout);
        return DAPI_EXIT_OK;
    }
    if((rc = settle(v, &s)))
        goto out;
    /* a reader that goes away (`| head`) is an EPIPE on write, handled as a quiet success */
    signal(SIGPIPE, SIG_IGN);
    if(pthread_mutex_init(&prog.mu, NULL)) {
        rc = DAPI_EXIT_OTHER;
        goto out;
    }
    sync_made = 1;
    prog.quiet = s.quiet;
    prog.t0 = dapi_clock_mono_ms();
    struct dapi_client_config cfg = {
        .url = s.url,
        .api_key = s.key,
        .timeout_ms = (long)s.timeout * 1000,
        .max_attempts = s.retry_time ? (int)s.retries + 1 : 1,
        .retry_total_ms = s.retry_time * 1000, /* 0 = the library's default, unused then */
        .on_retry = on_retry,
        .on_retry_arg = &prog,
    };
    enum dapi_err made = dapi_client_new(&client, &cfg, &err);
    if(made) {
        fprintf(stderr, "dapi query: %s\n", err.message);
        rc = made == DAPI_ERR_INVALID ? DAPI_EXIT_USAGE : DAPI_EXIT_OTHER; /* bad URL or key */
        goto out;
    }
    if(s.output) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        if((out_fd = open_output(s.output, &use_tmp)) < 0) {
            rc = DAPI_EXIT_OTHER;
            goto out;
        }
    }
    dapi_out_free(&out);
    dapi_out_init(&out, s.output ? out_fd : STDOUT_FILENO, 0);
    if(dapi_format_new(&fmt, s.format, &out)) {
        fprintf(stderr, "dapi query: out of memory\n");
        rc = DAPI_EXIT_OTHER;
        goto out;
    }
    if(!s.quiet && isatty(STDERR_FILENO)) {
        prog.on = 1;
        prog_thread = pthread_create(&prog_tid, NULL, progress_loop, &prog) == 0;
    }
    if(dapi_client_create(client, &s.q, &slug, &err)) {
        progress_stop(&prog, prog_tid, &prog_thread);
        print_err(&err);
        rc = exit_for(&err);
        goto out;
    }
    struct run run = {fmt, &prog, DAPI_OK, ""};
    enum dapi_err result = dapi_client_fetch_all(client, slug, (int)s.parallel, on_page, &run,
                                                 &err);
    if(!result)
        result = run.fmt_result = dapi_format_finish(fmt);
    progress_stop(&prog, prog_tid, &prog_thread);
    if(result && run.fmt_result) {
        if(out.broken_pipe && !s.output) {
            rc = DAPI_EXIT_OK; /* the reader has all it wanted */
        } else if(run.fmt_result == DAPI_ERR_IO) {
            fprintf(stderr, "dapi query: cannot write %s: %s\n", s.output ? s.output : "stdout",
                    strerror(out.error ? out.error : EIO));
            rc = DAPI_EXIT_OTHER;
        } else {
            fprintf(stderr, "dapi query: %s\n", run.fmt_err);
            rc = DAPI_EXIT_OTHER;
        }
    } else if(result) {
        print_err(&err);
        rc = exit_for(&err);
    }
out:
    progress_stop(&prog, prog_tid, &prog_thread);
    if(sync_made)
        pthread_mutex_destroy(&prog.mu);
    if(s.output && out_fd >= 0 && close_output(out_fd, use_tmp, s.output, rc == 0) && !rc)
        rc = DAPI_EXIT_OTHER;
    dapi_format_free(fmt);
    dapi_out_free(&out);
    dapi_client_free(client);
    free(slug);
    free(s.sql_owned);
    return rc;
}
