/* The client subcommands (`dapi query`, `dapi health`, `dapi layers`, `dapi describe`) and
 * what they share: exit codes and a small table-driven option parser (one table per command
 * drives parsing and --help). */
#ifndef DAPI_CLI_H
#define DAPI_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "dapi/err.h"

/* Exit codes of the client commands (docs/cli.md). */
enum dapi_exit {
    DAPI_EXIT_OK = 0,
    DAPI_EXIT_OTHER = 1,   /* malformed answer, local failure, output not writable;
                              `dapi health`: the server is not healthy */
    DAPI_EXIT_USAGE = 2,   /* bad flags or values, unreadable --sql-file */
    DAPI_EXIT_AUTH = 3,    /* no key, or the server refused it (401 / 403) */
    DAPI_EXIT_QUERY = 4,   /* the query was refused or failed (400, 404, 413, execution) */
    DAPI_EXIT_NETWORK = 5, /* server unreachable or unavailable after retries */
};

/* `dapi query ARGS…` (argv holds the arguments after "query"). Returns the exit code. */
int dapi_cli_query(int argc, char **argv);
void dapi_cli_query_usage(FILE *out);
/* `dapi call NAME key=value …`: an endpoint of the server's --endpoints-file, its rows
 * written as dapi query writes them (cli/query.c). */
int dapi_cli_call(int argc, char **argv);
void dapi_cli_call_usage(FILE *out);

/* `dapi health ARGS…`. Returns 0 if the server answered {"status":"ok"}, 1 if not, 2 on a
 * usage error. */
int dapi_cli_health(int argc, char **argv);
void dapi_cli_health_usage(FILE *out);

/* `dapi layers` and `dapi describe LAYER.TABLE`: schema discovery (cli/discover.c). */
int dapi_cli_layers(int argc, char **argv);
void dapi_cli_layers_usage(FILE *out);
int dapi_cli_describe(int argc, char **argv);
void dapi_cli_describe_usage(FILE *out);
/* Splits LAYER.TABLE at the first '.', either name possibly "quoted" as in SQL ("" for ").
 * 0 with both owned and non-empty, or -1. */
int dapi_cli_split_table(const char *arg, char **layer, char **table);

/* `dapi keys add|list|revoke|rotate …`: manages the key store (cli/keys.c). */
int dapi_cli_keys(int argc, char **argv);
void dapi_cli_keys_usage(FILE *out);

/* One option of a command. */
struct dapi_cli_opt {
    const char *name;    /* long name, without "--" */
    char short_name;     /* e.g. 'o' for -o, 0 if none */
    const char *metavar; /* the value's name in help; NULL for a switch */
    const char *env;     /* environment variable used when the flag is absent, or NULL */
    const char *def;     /* default shown in help, or NULL */
    const char *help;
};

/* Parses argv against opts[0..n): long options (--name VALUE, --name=VALUE), short ones
 * (-x VALUE, -xVALUE) and clusters of them (-qf csv, -qfcsv: a switch may be followed by
 * more letters; an option with a value takes the rest of the cluster or the next argument),
 * "--" (everything after it is an argument) and arguments ("-" alone is one). vals[i]
 * receives opts[i]'s value, borrowed from argv or the environment, "1" for a switch that was
 * given, NULL if absent; the last occurrence wins, a flag wins over its environment variable.
 * Arguments go to pos (room for argc entries), their count to *npos; with pos NULL an
 * argument is an error. Returns 0, or -1 after printing "dapi CMD: reason" on stderr. */
int dapi_cli_parse(const char *cmd, const struct dapi_cli_opt *opts, size_t n, int argc,
                   char **argv, const char **vals, const char **pos, int *npos);
/* Prints the option list (one entry per option, with env var and default) to out. */
void dapi_cli_usage(FILE *out, const struct dapi_cli_opt *opts, size_t n);
/* Prints "dapi VERSION (DuckDB VERSION)" and a newline: every command's --version / -V. */
void dapi_cli_version(FILE *out);
/* Reads fd to its end into *out (owned, free(); NUL-terminated, *len bytes if len is not
 * NULL). At most max bytes: DAPI_ERR_TOO_LARGE past that (a file of exactly max bytes is
 * read), DAPI_ERR_IO on a read error (errno says which), DAPI_ERR_NOMEM. */
enum dapi_err dapi_cli_read_fd(int fd, size_t max, char **out, size_t *len);
/* Parses a decimal integer in [lo, hi], rejecting anything else (sign junk, trailing text). */
int dapi_cli_int(const char *s, long long lo, long long hi, long long *out);

#endif
