/* The embedded query engine: DuckDB over the local lake (docs/sql.md, "The lake"), locked down.
 * The only module that talks to DuckDB; duckdb.h is included only under src/engine/ (by
 * engine_int.h: engine.c, lake.c, sample.c, discover.c). Rows leave the engine as column vectors
 * (colvec.h) through a sink. */
#ifndef DAPI_ENGINE_H
#define DAPI_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "base/scope.h"
#include "dapi/err.h"
#include "engine/colvec.h"

struct dapi_engine;
struct dapi_econn;

struct dapi_engine_opts {
    const char *data_dir;     /* absolute; the only directory queries may read */
    const char *state_dir;    /* absolute; DuckDB spills to <state_dir>/tmp */
    const char *memory_limit; /* e.g. "4GB" */
    int64_t threads;          /* 0 = DuckDB's default (cores) */
    const char *extra_dir;    /* NULL, or a second directory DuckDB may read and write: the
                               * downloads of the Nekt backend, the emulator's output. Only
                               * dapi's own SQL (the _trusted calls) may name files there. */
    int64_t check_timeout_ms; /* how long dapi_engine_check may take (0 = no limit) */
    int64_t max_spill_bytes;  /* cap on <state_dir>/tmp (0 = DuckDB's default) */
    int no_lake_watch;        /* 1: scan the lake for every query (--lake-watch off) */
};

/* Opens the engine: an in-memory DuckDB with extension auto-install/auto-load off, external
 * access limited to the data dir, configuration locked. Checks the library is v1.4.4.
 * On error writes a one-line reason to err; DAPI_ERR_INVALID means the options are wrong (a
 * memory limit DuckDB refuses, a state dir inside the data dir or around it). Free with
 * dapi_engine_close. */
enum dapi_err dapi_engine_open(struct dapi_engine **out, const struct dapi_engine_opts *opts,
                               char *err, size_t errlen);
/* To be called first by a command that serves queries (argv as main got it): gives DuckDB's
 * allocator the settings dapi needs, which it reads only when the library is loaded — so it
 * may execute the program again, in the same process, with them in its environment
 * (memory.c). */
void dapi_engine_setup_process(char **argv);
/* Closes the engine; every connection must have been closed before. */
void dapi_engine_close(struct dapi_engine *e);

/* A connection for one thread. Free with dapi_econn_close. */
enum dapi_err dapi_engine_connect(struct dapi_engine *e, struct dapi_econn **out);
void dapi_econn_close(struct dapi_econn *c);

/* Brings the schemas/views in line with the lake on disk (new, replaced and removed files).
 * Thread-safe; cheap when nothing changed (the lake's generation is the one of the last
 * complete scan). */
enum dapi_err dapi_engine_sync_lake(struct dapi_engine *e);
/* The lake's generation (src/engine/watch.c): the same number as long as nothing under the
 * data dir changed, a new one after any change (a file written, touched, created, deleted or
 * renamed, a directory made) that completed before the call; 0 when changes cannot be
 * watched (--lake-watch off, a network file system, the inotify limit): callers then scan.
 * What depends on the lake's files (the reuse fingerprint) may be kept while it holds. */
uint64_t dapi_engine_lake_generation(struct dapi_engine *e);

/* Checks that sql is exactly one read-only statement (SELECT / WITH / VALUES / FROM-first)
 * that passes the sandbox (sandbox.h: allowed functions only, lake tables only, files only
 * inside the lake) and parses and binds against the current lake, within
 * opts.check_timeout_ms. scope (NULL: every layer) is the layers the query may read: a table
 * of another layer, or a file whose path or real path lies outside <data_dir>/<layer>/ of
 * an allowed layer, is DAPI_ERR_FORBIDDEN, checked before anything of the query runs. On
 * DAPI_ERR_SQL and DAPI_ERR_FORBIDDEN *msg receives an owned, client-safe explanation (free
 * with free()); on other errors *msg may be NULL. DAPI_ERR_TIMEOUT past the deadline. */
enum dapi_err dapi_engine_check(struct dapi_econn *c, const char *sql,
                                const struct dapi_scope *scope, char **msg);
/* The same with bind parameters (docs/api.md "Bind parameters"): params (NULL: none) is a
 * JSON object of the values of the query's named parameters ($name), bound as DuckDB values,
 * never spliced into the text. A parameter without a value, a value without a parameter, or
 * a value that does not fit the type DuckDB infers for its parameter is DAPI_ERR_PARAM with
 * *msg naming it. */
enum dapi_err dapi_engine_check_bound(struct dapi_econn *c, const char *sql, const char *params,
                                      const struct dapi_scope *scope, char **msg);
/* DuckDB's parse tree (json_serialize_sql) of the SQL the last successful dapi_engine_check
 * on c passed, or NULL (borrowed until the next check on c): what result reuse hashes, so
 * that formatting does not make two queries different. */
const char *dapi_econn_parse_tree(const struct dapi_econn *c);

struct dapi_sink {
    /* Called once with the result's column names and DuckDB's names of their types
     * ("BIGINT", "DECIMAL(18,3)", "INTEGER[]", "STRUCT(a INTEGER)" …; a column dapi casts to
     * text for want of a JSON rendering is "VARCHAR"), borrowed, valid during the run. */
    enum dapi_err (*begin)(void *ctx, size_t ncols, const char *const *names,
                           const char *const *types);
    /* Called per chunk; vectors are valid only during the call. A non-OK return stops the
     * run and is returned by dapi_engine_run. */
    enum dapi_err (*chunk)(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                           uint64_t nrows);
};

/* Runs a user's sql (checked again, as by dapi_engine_check, with the same scope) and streams its rows into sink
 * as DuckDB produces them: nothing is materialised in between, so a sink that stops early
 * (a row or byte cap) bounds the memory. deadline_ms is a dapi_clock_mono_ms() instant
 * after which the query is interrupted (DAPI_ERR_TIMEOUT); 0 = none. Returns the sink's
 * error if it stopped the run. On DAPI_ERR_SQL (refused, or a run-time error of the query)
 * and DAPI_ERR_FORBIDDEN (outside scope) *msg receives an owned message (free with free()). */
enum dapi_err dapi_engine_run(struct dapi_econn *c, const char *sql,
                              const struct dapi_scope *scope, int64_t deadline_ms,
                              const struct dapi_sink *sink, void *ctx, char **msg);
/* The same with params bound (as dapi_engine_check_bound; NULL: none). */
enum dapi_err dapi_engine_run_bound(struct dapi_econn *c, const char *sql, const char *params,
                                    const struct dapi_scope *scope, int64_t deadline_ms,
                                    const struct dapi_sink *sink, void *ctx, char **msg);
/* The same for SQL dapi wrote itself (reading downloads in opts.extra_dir, the health
 * probe's SELECT 1): still one read-only statement, but not held to the user sandbox and
 * without rescanning the lake, which such SQL never reads. Never pass a user's text. */
enum dapi_err dapi_engine_run_trusted(struct dapi_econn *c, const char *sql, int64_t deadline_ms,
                                      const struct dapi_sink *sink, void *ctx, char **msg);

/* Runs sql (checked like dapi_engine_run and held to scope (NULL: every layer), or like
 * dapi_engine_run_trusted when trusted) and writes its result as Parquet files into dir (inside opts.extra_dir), data_0.parquet,
 * data_1.parquet … of at most rows_per_file rows each, in row order (an empty result writes
 * no file); rows_per_file 0 writes exactly one file at the path dir instead. *rows receives
 * the row count. */
enum dapi_err dapi_engine_export_parquet(struct dapi_econn *c, const char *sql, int trusted,
                                         const struct dapi_scope *scope, const char *dir,
                                         int64_t rows_per_file, int64_t deadline_ms,
                                         uint64_t *rows, char **msg);

/* ---- schema discovery (src/engine/discover.c; docs/api.md "Schema discovery") -------- */

/* One table of the lake as the scan sees it (no DuckDB call). */
struct dapi_lake_table {
    char *layer, *name;
    const char *kind; /* "parquet", "csv", "tsv", "json" or "ndjson" (static) */
    int folder;       /* a folder of Parquet files (hive partitions allowed) */
    uint64_t files;   /* files read: 1, or the folder's Parquet files */
    uint64_t bytes;   /* their total size */
    int64_t mtime_s;  /* the newest file's modification time, Unix seconds */
};

/* The tables scope may read (NULL: every layer) — a layer of the scope whose files really
 * lie in a layer of the scope (links followed, as queries are held to it) — that the engine
 * could expose, after bringing the lake in line with the disk (dapi_engine_sync_lake).
 * Sorted by layer, then name (bytes). *out is owned (dapi_lake_tables_free; NULL when
 * *n = 0). */
enum dapi_err dapi_engine_lake_tables(struct dapi_engine *e, const struct dapi_scope *scope,
                                      struct dapi_lake_table **out, size_t *n);
void dapi_lake_tables_free(struct dapi_lake_table *t, size_t n);

struct dapi_lake_column {
    char *name;
    char *type;            /* DuckDB's name of the type: "BIGINT", "DECIMAL(18,3)", … */
    const char *json_type; /* how results render it (dapi_engine_json_type; static) */
};

struct dapi_lake_desc {
    struct dapi_lake_table t;
    struct dapi_lake_column *cols; /* in the table's order */
    size_t ncols;
    int64_t rows;   /* -1: unknown */
    int rows_exact; /* rows is from the Parquet footers; else an estimate */
    int missing;    /* on DAPI_ERR_NOT_FOUND: 1 = no such layer, 2 = no such table */
};

/* Describes layer.table (names exactly as listed): columns and their types, the row count
 * (exact, from the Parquet footers, for Parquet; else estimated from the first
 * DAPI_LAKE_SAMPLE_BYTES of the file), files, bytes, mtime. With a scope, a layer outside it
 * is DAPI_ERR_FORBIDDEN whether or not it exists, and so is a table whose files really lie
 * in a layer outside it (*msg: "this API key may not read layer 'x'", owned). Unknown layer
 * or table: DAPI_ERR_NOT_FOUND (d->missing says which). deadline_ms as dapi_engine_run.
 * Free d with dapi_lake_desc_free whatever the result. */
#define DAPI_LAKE_SAMPLE_BYTES (1u << 20)
enum dapi_err dapi_engine_describe(struct dapi_econn *c, const char *layer, const char *table,
                                   const struct dapi_scope *scope, int64_t deadline_ms,
                                   struct dapi_lake_desc *d, char **msg);
void dapi_lake_desc_free(struct dapi_lake_desc *d);

/* The JSON type results give a column of DuckDB type type (docs/api.md "JSON values"):
 * "integer", "number", "boolean", "string", "array", "object" (a MAP with VARCHAR keys),
 * "array" (other MAPs: [{"key","value"}]) or "any" (UNION: its active member's). */
const char *dapi_engine_json_type(const char *type);

/* An estimate of the records in a file of total bytes whose first n bytes are sample, of
 * kind "csv"/"tsv" (lines outside double quotes, less the header) or "json"/"ndjson"
 * (top-level values, or the elements of a top-level array); exact for the text given when
 * n == total. -1 when the sample holds no complete record to go by. */
int64_t dapi_engine_estimate_rows(const char *kind, const char *sample, size_t n, uint64_t total);
/* Runs the n statements sql[] in order in a fresh in-memory DuckDB with DuckDB's defaults
 * (no lock-down: for tools, never for client SQL) and says how long the last one took
 * (*last_us). *msg: an owned explanation on error. (The benchmark's reference, bench/.) */
enum dapi_err dapi_engine_run_timed(const char *const *sql, size_t n, int64_t *last_us,
                                    char **msg);
/* Converts the NDJSON rows at in (one object per line, keyed by the column names, the longest
 * longest bytes) into a Parquet file at out with the n columns names[i] of DuckDB types types[i] (as DuckDB names
 * them: "BIGINT", "DECIMAL(18,3)", "INTEGER[]" …). Runs in a DuckDB of its own that may touch
 * only dir (which holds in and out, and its spill files), with memory_limit (NULL: DuckDB's
 * default) and at most max_spill_bytes of spill files (<= 0: DuckDB's default). *msg: an
 * owned explanation on error. */
enum dapi_err dapi_engine_ndjson_to_parquet(const char *dir, const char *in, const char *out,
                                            const char *const *names, const char *const *types,
                                            size_t n, uint64_t longest, const char *memory_limit,
                                            int64_t max_spill_bytes, char **msg);

/* While *flag (may be NULL: none) is set non-zero, a query running on c is interrupted (as at
 * its deadline: the run returns DAPI_ERR_TIMEOUT): a cancelled query. The flag must outlive
 * the run; set NULL before it goes. */
void dapi_econn_set_cancel(struct dapi_econn *c, const atomic_int *flag);
/* Whether path resolves, links followed, to a path beneath lake (the lake's real path, as
 * realpath() gives it): the one test of "a link that leaves the lake". The real path is
 * written to real (PATH_MAX bytes, or NULL) either way, when it resolves. */
int dapi_lake_contains(const char *lake, const char *path, char *real);
/* c runs only dapi's own constant statements (the health probe's SELECT 1), which use no
 * memory to speak of: they are not other work for dapi_econn_oom_shared. Before first use. */
void dapi_econn_set_light(struct dapi_econn *c);
/* Whether the last run on c ran out of memory (DAPI_ERR_TOO_LARGE naming --memory-limit:
 * DAPI_OOM_MEMORY) or of spill space (naming --max-spill-bytes: DAPI_OOM_SPILL) while other
 * work was in the engine's memory, so that it may have met another query's use rather than
 * been too large itself; 0 if not. If so, *mark is what dapi_engine_wait_work takes to wait
 * for that other work to end. */
enum { DAPI_OOM_MEMORY = 1, DAPI_OOM_SPILL = 2 };
int dapi_econn_oom_shared(const struct dapi_econn *c, uint64_t *mark);
/* Waits until every statement, check or conversion begun (in this process) by the time of
 * mark has ended, or until deadline_ms (monotonic). 1: they ended; 0: the deadline came. */
int dapi_engine_wait_work(uint64_t mark, int64_t deadline_ms);
/* Milliseconds since the watchdog interrupted the query c drives (its deadline passed, or it
 * was cancelled) while c still drives it: work the interrupt does not reach. 0 when c drives
 * nothing, was not interrupted, or the engine is shutting down. For a pool's overseer. */
int64_t dapi_econn_overrun_ms(struct dapi_econn *c);

/* Shutdown: interrupts every query running on e's connections now and any started later
 * (they fail with DAPI_ERR_BUSY). Thread-safe, irreversible. */
void dapi_engine_abort(struct dapi_engine *e);

/* Writes the deterministic sample lake into dir (created if missing). Returns DAPI_OK or
 * writes a one-line reason into err. */
enum dapi_err dapi_engine_sample_data(const char *dir, char *err, size_t errlen);

/* Appends s as a SQL string literal ('…' with ' doubled) for SQL built by dapi itself. */
struct dapi_buf;
enum dapi_err dapi_engine_sql_literal(struct dapi_buf *b, const char *s);

/* DuckDB's message msg about sql with the error's line and column said up front: "Binder
 * Error: …" becomes "Binder Error at line 2, column 8: …" (other messages get " (at line …)"
 * after their first line), from the LINE block and caret DuckDB ends the message with, which
 * is kept. The column counts characters; it is left out ("at line 2") when it cannot be
 * worked out exactly (non-ASCII text before the error). Returns a new string (free it), or
 * NULL when msg says nowhere, or its LINE block is not a line of sql. dapi_engine_check and
 * dapi_engine_run apply it to their SQL errors. */
char *dapi_engine_locate_error(const char *msg, const char *sql);

/* The DuckDB library version string, e.g. "v1.4.4". */
const char *dapi_engine_version(void);

#endif
