/* `dapi query`: creates a query on a dapi server, reads every page (several at a time, in
 * order) and writes the rows as csv, tsv, json, ndjson or an aligned table. Exit codes and
 * formats: docs/cli.md. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
#define MAX_CALL_ARGS 256

/* The command being run: "query", or "call" (`dapi call`: an endpoint instead of SQL). */
static const char *me = "query";

/* "dapi <command>: " and the message, on stderr. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "dapi %s: ", me);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

enum {
    O_URL,
    O_KEY,
    O_SQL,
    O_SQL_FILE,
    O_LAYER,
    O_TABLE,
    O_LIMIT,
    O_FORMAT,
    O_NO_HEADER,
    O_OUTPUT,
    O_PARALLEL,
    O_PAGING,
    O_TIMEOUT,
    O_RETRIES,
    O_RETRY_TIME,
    O_QUIET,
    O_VERSION,
    O_HELP,
    O__COUNT
};

static const struct dapi_cli_opt opts[O__COUNT] = {
    [O_URL] = {"url", 0, "URL", "DAPI_URL", "http://localhost:5001", "the dapi server"},
    [O_KEY] = {"api-key", 0, "KEY", "DAPI_API_KEY", NULL,
               "API key sent as x-api-key (prefer the env var: flags show in ps)"},
    [O_SQL] = {"sql", 'c', "SQL", NULL, NULL, "the SQL to run (or give it as the argument)"},
    [O_SQL_FILE] = {"sql-file", 0, "FILE", NULL, NULL, "read the SQL from FILE ('-' = stdin)"},
    [O_LAYER] = {"layer", 0, "LAYER", NULL, NULL, "with --table: read a whole table"},
    [O_TABLE] = {"table", 0, "TABLE", NULL, NULL, "the table in --layer"},
    [O_LIMIT] = {"limit", 0, "N", NULL, NULL, "with --layer/--table: at most N rows"},
    [O_FORMAT] = {"format", 'f', "FMT", NULL, "table on a terminal, else csv",
                  "csv, tsv, json, ndjson or table"},
    [O_NO_HEADER] = {"no-header", 0, NULL, NULL, NULL, "csv and tsv: no header row"},
    [O_OUTPUT] = {"output", 'o', "FILE", NULL, "stdout",
                  "write to FILE (replaced only once complete)"},
    [O_PARALLEL] = {"parallel", 'p', "N", NULL, "4", "pages fetched at once (1-64), when paging"},
    [O_PAGING] = {"paging", 0, NULL, NULL, NULL,
                  "read page by page even when the server has the export"},
    [O_TIMEOUT] = {"timeout", 0, "SECONDS", NULL, "330",
                   "limit for one HTTP call, and for asking again while the query still runs"},
    [O_RETRIES] = {"retries", 0, "N", NULL, "4", "retries of a transient failure (0-100)"},
    [O_RETRY_TIME] = {"retry-max-time", 0, "SECONDS", NULL, "60",
                      "no retry starts later than this after a call's first attempt"},
    [O_QUIET] = {"quiet", 'q', NULL, NULL, NULL, "no progress line and no retry notices"},
    [O_VERSION] = {"version", 'V', NULL, NULL, NULL, "print the version and exit"},
    [O_HELP] = {"help", 'h', NULL, NULL, NULL, "this help"},
};

void dapi_cli_query_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: dapi query [options] [SQL | -c SQL | --sql-file FILE | --layer L --table T]\n\n"
        "Creates a query on a dapi server and writes every row of its result, in order.\n"
        "The SQL is the argument ('-' = stdin), -c/--sql or --sql-file; with none of\n"
        "them it is read from stdin when stdin is not a terminal (echo 'SELECT 1' |\n"
        "dapi query). Short options cluster (-qf csv, -fjson); after -- every argument\n"
        "is SQL, even one that starts with '-'.\n\n"
        "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
    fprintf(out, "\nExit codes: 0 ok, 1 other failure (malformed answer, output not writable),\n"
                 "2 usage error, 3 authentication (no key, 401, 403), 4 query refused or failed\n"
                 "(400, 404, 413, an execution failure other than 502/503), 5 server unreachable\n"
                 "or unavailable (connection, timeout, 429, 502, 503, 504 that is not a query\n"
                 "failure, after retries; a query still running when --timeout ends).\n");
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

/* The progress line is drawn on stderr while rows are fetched. When stdout is the same
 * terminal, it is cleared (and no longer drawn) just before the first byte of output, so it
 * never mixes with the rows; otherwise its final state is left on a line of its own. */
struct progress {
    atomic_ullong rows, pages;
    atomic_int done;
    int64_t t0;
    pthread_mutex_t mu; /* one stderr writer at a time (progress line, retry notices) */
    int on;             /* a progress line is on the terminal (under mu) */
    int keep;           /* leave the final line at the end (stdout is not this terminal) */
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
    snprintf(line, cap, "%llu row%s, %llu page%s, %.0f rows/s, %.1f s", rows, rows == 1 ? "" : "s",
             pages, pages == 1 ? "" : "s", s > 0.05 ? (double)rows / s : 0.0, s);
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
        if(p->on)
            put_stderr(out, (size_t)n);
        pthread_mutex_unlock(&p->mu);
        for(int i = 0; i < 4 && !atomic_load(&p->done); i++)
            dapi_clock_sleep_ms(50);
    }
    return NULL;
}

/* Output is about to reach the terminal the progress line is on: clear it for good. */
static void progress_yield(void *arg)
{
    struct progress *p = arg;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->done, 1);
    if(p->on)
        put_stderr("\r\033[K", 4);
    p->on = 0;
    pthread_mutex_unlock(&p->mu);
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

/* Stops the progress line: after a success its final state stays on a line of its own
 * (unless stdout is the same terminal); after a failure it is cleared, so the error takes
 * its place. */
static void progress_stop(struct progress *p, pthread_t tid, int *running, int ok)
{
    if(!*running)
        return;
    *running = 0;
    atomic_store(&p->done, 1);
    pthread_join(tid, NULL);
    char line[256], out[300];
    progress_text(p, line, sizeof line);
    pthread_mutex_lock(&p->mu);
    if(p->on && ok && p->keep) {
        int n = snprintf(out, sizeof out, "\r%s\033[K\n", line);
        put_stderr(out, n < 0 ? 0 : (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
    } else if(p->on) {
        put_stderr("\r\033[K", 4);
    }
    p->on = 0;
    pthread_mutex_unlock(&p->mu);
}

/* Whether fds a and b are the same terminal. */
static int same_terminal(int a, int b)
{
    struct stat sa, sb;
    return isatty(a) && isatty(b) && fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
           sa.st_rdev == sb.st_rdev;
}

struct settings {
    const char *url, *key, *output;
    const char *key_from; /* "--api-key" or "DAPI_API_KEY" */
    const char *sql_path; /* read the SQL from here ("-" = stdin), or NULL */
    const char *sql_what; /* how messages name it */
    int sql_implicit;     /* stdin, because no SQL was given otherwise */
    struct dapi_client_query q;
    char *sql_owned;
    enum dapi_format_kind format;
    long long parallel, timeout, retries, retry_time;
    int quiet, no_header;
    /* dapi call: the endpoint and its arguments (split from NAME=VALUE in argv) */
    const char *call_name;
    const char *arg_names[MAX_CALL_ARGS], *arg_values[MAX_CALL_ARGS];
    size_t nargs;
};

/* ---- the run ------------------------------------------------------------------------ */

struct run {
    struct dapi_format *fmt;
    struct progress *progress;
    enum dapi_err fmt_result;
    char fmt_err[256];
    struct dapi_out *out; /* where the server's own NDJSON goes, as it comes */
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

/* The server's NDJSON export is what -f ndjson writes (rows as the server rendered them, one
 * a line): its bytes go straight to the output, only counted. */
static int on_bytes(void *arg, const char *p, size_t n, uint64_t lines)
{
    struct run *r = arg;
    if(dapi_buf_add(&r->out->buf, p, n)) {
        r->out->error = ENOMEM;
        r->fmt_result = DAPI_ERR_IO;
        return 1;
    }
    if(r->out->buf.len >= 256 * 1024 && dapi_out_flush(r->out)) {
        r->fmt_result = DAPI_ERR_IO;
        return 1;
    }
    unsigned long long rows = atomic_fetch_add(&r->progress->rows, lines) + lines;
    atomic_store(&r->progress->pages, (rows + DAPI_CLIENT_PAGE_ROWS - 1) / DAPI_CLIENT_PAGE_ROWS);
    return 0;
}

/* The exit code of a failed call. The client library classifies each answer by its HTTP
 * status and body shape (src/client/client.c, answer_err: the table in docs/cli.md); the
 * classes map one to one onto the exit codes. */
static int exit_for(const struct dapi_client_err *e)
{
    switch(e->kind) {
    case DAPI_CLIENT_AUTH: return DAPI_EXIT_AUTH;
    case DAPI_CLIENT_QUERY: return DAPI_EXIT_QUERY;
    case DAPI_CLIENT_NETWORK: return DAPI_EXIT_NETWORK;
    default: return DAPI_EXIT_OTHER;
    }
}

/* Where a key comes from, for the messages about a missing or refused one. */
#define KEY_SOURCES                                                                      \
    "a dapi server's keys are set by its DAPI_API_KEYS or --api-keys-file; one started " \
    "without keys prints its development key at start and keeps it in <state-dir>/dev-key"

static void print_err(const struct dapi_client_err *e, const struct settings *s)
{
    char status[48] = "";
    if(e->status)
        snprintf(status, sizeof status, " (HTTP %d)", e->status);
    else if(e->kind == DAPI_CLIENT_NETWORK)
        snprintf(status, sizeof status, " (no answer)");
    if(e->still_running) {
        say("the query is still running after %lld s (--timeout): gave up "
            "waiting (raise --timeout to wait longer); the server: %s%s\n",
            s->timeout, e->details, status);
        return;
    }
    if(strchr(e->details, '\n')) /* several lines (DuckDB's caret): the status first */
        say("%s%s: %s", e->message, status, e->details);
    else
        say("%s%s%s%s", e->message, e->details[0] ? ": " : "", e->details, status);
    if(e->status == 401)
        fprintf(stderr, "; the key was given by %s (%s)", s->key_from, KEY_SOURCES);
    fputc('\n', stderr);
}

enum dapi_err dapi_cli_read_fd(int fd, size_t max, char **out, size_t *len)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_buf b;
    int saved;
    dapi_buf_init(&b, max);
    *out = NULL;
    if(len)
        *len = 0;
    for(;;) {
        /* never reserve past max: a read may fill the buffer exactly; once it is full, one
         * more byte tells a file of exactly max bytes from a larger one */
        size_t room = max - b.len, want = room < 65536 ? room : 65536;
        char probe;
        char *dst = want ? dapi_buf_reserve(&b, want) : &probe;
        if(!dst) {
            result = dapi_buf_error(&b);
            goto out;
        }
        ssize_t n = read(fd, dst, want ? want : 1);
        if(n < 0 && errno == EINTR)
            continue;
        if(n < 0) {
            result = DAPI_ERR_IO;
            goto out;
        }
        if(n == 0)
            break;
        if(!want) {
            result = DAPI_ERR_TOO_LARGE;
            goto out;
        }
        dapi_buf_commit(&b, (size_t)n);
    }
    dapi_buf_commit(&b, 0); /* NUL-terminates even when the last reserve got nothing */
    if(!(*out = dapi_buf_take(&b, len)))
        result = DAPI_ERR_NOMEM;
out:
    saved = errno;
    dapi_buf_free(&b);
    errno = saved;
    return result;
}

/* Reads the SQL from path ("-" = stdin; what names it in messages). Owned (free()); NULL
 * after printing why. */
static char *read_sql(const char *path, const char *what)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    char *sql = NULL;
    if(fd < 0) {
        say("%s: %s\n", what, strerror(errno));
        return NULL;
    }
    enum dapi_err r = dapi_cli_read_fd(fd, SQL_FILE_MAX, &sql, NULL);
    if(r == DAPI_ERR_TOO_LARGE)
        say("%s: larger than %zu bytes\n", what, SQL_FILE_MAX);
    else if(r == DAPI_ERR_IO)
        say("%s: %s\n", what, strerror(errno));
    else if(r)
        say("%s: out of memory\n", what);
    if(fd != STDIN_FILENO)
        close(fd);
    return sql;
}

static int blank(const char *s)
{
    for(; *s; s++)
        if(*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v')
            return 0;
    return 1;
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
            say("--output %s: %s\n", path, strerror(errno));
        return fd;
    }
    int n = snprintf(tmp_path, sizeof tmp_path, "%s.tmp-XXXXXX", path);
    if(n < 0 || (size_t)n >= sizeof tmp_path) {
        say("--output %s: path too long\n", path);
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    int fd = mkostemp(tmp_path, O_CLOEXEC);
    if(fd < 0) {
        say("--output %s: %s\n", path, strerror(errno));
        return -1;
    }
    tmp_live = 1;
    if(fchmod(fd, 0666 & ~mask)) { /* as if created by open(2) */
    }
    return fd;
}

/* Where the SQL comes from: the argument, -c/--sql, --sql-file, --layer/--table, or stdin
 * when none is given and it is not a terminal. Returns NULL or what is wrong. */
static const char *sql_source(const char **v, const char **pos, int npos, struct settings *s)
{
    const char *sql = v[O_SQL];
    if(npos > 1)
        return "give the SQL as one argument (quote it: dapi query 'SELECT ...')";
    if(npos == 1 && sql)
        return "the SQL is given twice: as an argument and with -c/--sql";
    if(npos == 1)
        sql = pos[0];
    int modes = (sql != NULL) + (v[O_SQL_FILE] != NULL) + (v[O_LAYER] || v[O_TABLE]);
    if(modes > 1)
        return "give one query: SQL (argument, -c/--sql or stdin), --sql-file, or --layer "
               "with --table";
    if(modes == 0 && isatty(STDIN_FILENO))
        return "no query: give the SQL as an argument or with -c, --sql-file FILE, or --layer L "
               "--table T, or pipe it on stdin";
    if(v[O_SQL_FILE]) {
        s->sql_path = v[O_SQL_FILE];
        s->sql_what = strcmp(v[O_SQL_FILE], "-") == 0 ? "--sql-file -: stdin" : "--sql-file";
    } else if(modes == 0 || (npos == 1 && strcmp(pos[0], "-") == 0)) {
        s->sql_path = "-";
        s->sql_what = "stdin";
        s->sql_implicit = modes == 0;
    } else if(sql) {
        s->q.sql = sql;
    } else {
        s->q.layer = v[O_LAYER];
        s->q.table = v[O_TABLE];
    }
    return NULL;
}

/* dapi call: the endpoint's name, then its arguments as NAME=VALUE (split in place).
 * Returns NULL or what is wrong. */
static const char *call_source(const char **v, const char **pos, int npos, struct settings *s)
{
    if(v[O_SQL] || v[O_SQL_FILE] || v[O_LAYER] || v[O_TABLE] || v[O_LIMIT])
        return "dapi call takes an endpoint and its arguments, not SQL (-c/--sql, --sql-file, "
               "--layer, --table, --limit are dapi query's)";
    if(npos < 1 || !*pos[0])
        return "give the endpoint's name (dapi call NAME key=value …; GET /api/endpoints lists "
               "them)";
    if(npos - 1 > MAX_CALL_ARGS)
        return "too many arguments";
    s->call_name = pos[0];
    for(int i = 1; i < npos; i++) {
        char *eq = strchr(pos[i], '=');
        if(!eq || eq == pos[i])
            return "each argument after the endpoint's name is key=value (a list parameter "
                   "repeats: country=US country=DE)";
        *eq = '\0'; /* (argv is ours to write) */
        s->arg_names[s->nargs] = pos[i];
        s->arg_values[s->nargs++] = eq + 1;
    }
    return NULL;
}

/* Checks the values of the options (not the query's source). Returns NULL or what is
 * wrong. */
static const char *check_values(const char **v, struct settings *s, long long *limit)
{
    if((v[O_LAYER] || v[O_TABLE]) && (!v[O_LAYER] || !v[O_TABLE]))
        return "--layer and --table go together";
    if(v[O_LIMIT] && !v[O_LAYER])
        return "--limit goes with --layer/--table (write LIMIT in the SQL otherwise)";
    if(v[O_LIMIT] && dapi_cli_int(v[O_LIMIT], 1, INT64_MAX, limit))
        return "--limit must be a positive integer";
    if(v[O_FORMAT] && dapi_format_parse(v[O_FORMAT], &s->format))
        return "--format must be csv, tsv, json, ndjson or table";
    if(s->no_header && s->format != DAPI_FORMAT_CSV && s->format != DAPI_FORMAT_TSV)
        return v[O_FORMAT] ? "--no-header goes with --format csv or tsv"
                           : "--no-header goes with --format csv or tsv (on a terminal the "
                             "default is table)";
    if(dapi_cli_int(v[O_PARALLEL] ? v[O_PARALLEL] : "4", 1, 64, &s->parallel))
        return "--parallel must be an integer from 1 to 64";
    if(dapi_cli_int(v[O_TIMEOUT] ? v[O_TIMEOUT] : "330", 1, 86400, &s->timeout))
        return "--timeout must be a number of seconds from 1 to 86400";
    if(dapi_cli_int(v[O_RETRIES] ? v[O_RETRIES] : "4", 0, 100, &s->retries))
        return "--retries must be an integer from 0 to 100";
    if(dapi_cli_int(v[O_RETRY_TIME] ? v[O_RETRY_TIME] : "60", 0, 86400, &s->retry_time))
        return "--retry-max-time must be a number of seconds from 0 to 86400";
    if(s->q.sql && blank(s->q.sql))
        return "the SQL is empty";
    return NULL;
}

/* Validates the options into s and reads the SQL if it comes from a file or stdin. Returns
 * 0, or an exit code after printing why. */
static int settle(const char **v, const char **pos, int npos, struct settings *s)
{
    long long limit = 0;
    memset(s, 0, sizeof *s);
    s->url = v[O_URL] ? v[O_URL] : "http://localhost:5001";
    s->key = v[O_KEY];
    s->key_from = v[O_KEY] && v[O_KEY] == getenv("DAPI_API_KEY") ? "DAPI_API_KEY" : "--api-key";
    s->output = v[O_OUTPUT] && strcmp(v[O_OUTPUT], "-") != 0 ? v[O_OUTPUT] : NULL;
    s->quiet = v[O_QUIET] != NULL;
    s->no_header = v[O_NO_HEADER] != NULL;
    s->format = !s->output && isatty(STDOUT_FILENO) ? DAPI_FORMAT_TABLE : DAPI_FORMAT_CSV;
    const char *bad = strcmp(me, "call") == 0 ? call_source(v, pos, npos, s)
                                              : sql_source(v, pos, npos, s);
    if(!bad)
        bad = check_values(v, s, &limit);
    if(bad) {
        say("%s (see dapi %s --help)\n", bad, me);
        return DAPI_EXIT_USAGE;
    }
    s->q.limit = limit;
    if(!s->key) {
        say("no API key: set DAPI_API_KEY or pass --api-key (%s)\n", KEY_SOURCES);
        return DAPI_EXIT_AUTH;
    }
    if(s->sql_path) {
        if(!(s->sql_owned = read_sql(s->sql_path, s->sql_what)))
            return DAPI_EXIT_USAGE;
        if(blank(s->sql_owned)) {
            if(s->sql_implicit)
                say("no query: stdin is empty (give the SQL as an "
                    "argument or with -c, --sql-file FILE, or --layer L --table T)\n");
            else
                say("%s: the SQL is empty\n", s->sql_what);
            return DAPI_EXIT_USAGE;
        }
        s->q.sql = s->sql_owned;
    }
    return 0;
}

/* Finishes the output file: rename the temp file over the target (or drop it on failure). */
static int close_output(int fd, int use_tmp, const char *path, int ok)
{
    int rc = 0;
    if(fd >= 0 && ok && use_tmp && fsync(fd) && errno != EINVAL) {
        say("--output %s: %s\n", path, strerror(errno));
        ok = 0, rc = -1;
    }
    if(fd >= 0 && close(fd) && ok) {
        say("--output %s: %s\n", path, strerror(errno));
        ok = 0, rc = -1;
    }
    if(use_tmp && tmp_live) {
        if(ok && rename(tmp_path, path)) {
            say("--output %s: %s\n", path, strerror(errno));
            rc = -1;
            ok = 0;
        }
        if(!ok)
            unlink(tmp_path);
        tmp_live = 0;
    }
    return rc;
}


static int run_query(int argc, char **argv);

int dapi_cli_query(int argc, char **argv)
{
    me = "query";
    return run_query(argc, argv);
}

int dapi_cli_call(int argc, char **argv)
{
    me = "call";
    return run_query(argc, argv);
}

void dapi_cli_call_usage(FILE *out)
{
    fprintf(out,
            "Usage: dapi call [options] NAME [key=value …]\n\n"
            "Calls the endpoint NAME of the server's --endpoints-file with its parameters as\n"
            "key=value arguments (a list parameter repeats: country=US country=DE) and writes\n"
            "every row of its result, in order, as dapi query does (docs/endpoints.md).\n\n"
            "Options:\n");
    /* dapi query's options but its SQL sources (refused here: call_source) */
    dapi_cli_usage(out, opts, O_SQL);
    dapi_cli_usage(out, opts + O_LIMIT + 1, O__COUNT - O_LIMIT - 1);
    fprintf(out, "\nExit codes: as dapi query's; a refused argument or an unknown endpoint is\n"
                 "4, an endpoint reading a layer the key may not read 3.\n");
}

static int run_query(int argc, char **argv)
{
    int rc = DAPI_EXIT_OK;
    const char *v[O__COUNT];
    const char **pos = NULL;
    int npos = 0;
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

    if(!(pos = calloc((size_t)argc + 1, sizeof *pos))) {
        say("out of memory\n");
        rc = DAPI_EXIT_OTHER;
        goto out;
    }
    if(dapi_cli_parse(me, opts, O__COUNT, argc, argv, v, pos, &npos)) {
        rc = DAPI_EXIT_USAGE;
        goto out;
    }
    if(v[O_HELP] || v[O_VERSION]) {
        if(v[O_HELP] && strcmp(me, "call") == 0)
            dapi_cli_call_usage(stdout);
        else if(v[O_HELP])
            dapi_cli_query_usage(stdout);
        else
            dapi_cli_version(stdout);
        goto out;
    }
    if((rc = settle(v, pos, npos, &s)))
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
        say("%s\n", err.message);
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
        say("out of memory\n");
        rc = DAPI_EXIT_OTHER;
        goto out;
    }
    if(s.no_header)
        dapi_format_no_header(fmt);
    if(!s.quiet && isatty(STDERR_FILENO)) {
        prog.on = 1;
        prog.keep = s.output || !same_terminal(STDOUT_FILENO, STDERR_FILENO);
        if(!prog.keep) {
            out.before_write = progress_yield;
            out.before_write_arg = &prog;
        }
        prog_thread = pthread_create(&prog_tid, NULL, progress_loop, &prog) == 0;
        prog.on = prog_thread;
    }
    if(s.call_name ? dapi_client_call_endpoint(client, s.call_name, s.arg_names, s.arg_values,
                                               s.nargs, &slug, &err)
                   : dapi_client_create(client, &s.q, &slug, &err)) {
        progress_stop(&prog, prog_tid, &prog_thread, 0);
        print_err(&err, &s);
        rc = exit_for(&err);
        goto out;
    }
    if(v[O_PAGING])
        dapi_client_set_paging(client, 1);
    struct run run = {fmt, &prog, DAPI_OK, "", &out};
    enum dapi_err result = DAPI_ERR_NOT_FOUND;
    if(s.format == DAPI_FORMAT_NDJSON && !v[O_PAGING])
        result = dapi_client_export_ndjson(client, slug, on_bytes, &run, NULL, &err);
    if(result == DAPI_ERR_NOT_FOUND) /* (no export: every page, parsed and written again) */
        result = dapi_client_fetch_all(client, slug, (int)s.parallel, on_page, &run, &err);
    if(!result)
        result = run.fmt_result = dapi_format_finish(fmt);
    progress_stop(&prog, prog_tid, &prog_thread, !result);
    if(result && run.fmt_result) {
        if(out.broken_pipe && !s.output) {
            rc = DAPI_EXIT_OK; /* the reader has all it wanted */
        } else if(run.fmt_result == DAPI_ERR_IO) {
            say("cannot write %s: %s\n", s.output ? s.output : "stdout",
                strerror(out.error ? out.error : EIO));
            rc = DAPI_EXIT_OTHER;
        } else {
            say("%s\n", run.fmt_err);
            rc = DAPI_EXIT_OTHER;
        }
    } else if(result) {
        print_err(&err, &s);
        rc = exit_for(&err);
    }
out:
    progress_stop(&prog, prog_tid, &prog_thread, 0);
    if(sync_made)
        pthread_mutex_destroy(&prog.mu);
    if(s.output && out_fd >= 0 && close_output(out_fd, use_tmp, s.output, rc == 0) && !rc)
        rc = DAPI_EXIT_OTHER;
    dapi_format_free(fmt);
    dapi_out_free(&out);
    dapi_client_free(client);
    free(slug);
    free(s.sql_owned);
    free(pos);
    return rc;
}
