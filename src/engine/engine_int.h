/* Engine-private: what engine.c (the core), lake.c (the lake's views), sample.c (the sample
 * lake) and discover.c (schema discovery) share. Not to be included outside src/engine/.
 *
 * Rule: duckdb.h is included only by this header, which engine.c, lake.c, sample.c,
 * discover.c, types.c, convert.c, locate.c, params.c and memory.c include; every other module talks to DuckDB through engine.h. */
#ifndef DAPI_ENGINE_INT_H
#define DAPI_ENGINE_INT_H

#include "engine/engine.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Results stream from DuckDB (duckdb_pending_prepared_streaming), which the C API of v1.4
 * lists as deprecated without a replacement yet: it is the only way to get rows before the
 * whole result exists, which is what bounds a query's memory. */
#undef DUCKDB_API_NO_DEPRECATED
#include <duckdb.h>

#include "base/buf.h"

enum table_kind { TK_PARQUET, TK_PARQUET_DIR, TK_CSV, TK_TSV, TK_JSON, TK_NDJSON };

struct view {
    char *layer, *table, *path;
    enum table_kind kind;
    struct timespec mtime; /* of the file (or folder): a rewrite re-creates the view */
    off_t size;
    int failed;   /* the view could not be created: tried again once the file changes */
    char *real;   /* the layer folder its files really lie in (links followed): its own
                   * layer unless a link leads elsewhere; NULL when they are not all one
                   * layer's. A scoped query may read the view only if real is in scope. */
    char **files; /* TK_PARQUET_DIR: the vetted files, sorted */
    size_t nfiles;
};

struct views {
    struct view *v;
    size_t n, cap;
};

struct dapi_engine {
    duckdb_database db;
    /* The watchdog: a single pending task (a big join, a sort) can run for a long time
     * without returning to us, so deadlines are enforced by interrupting from outside. */
    pthread_t watchdog;
    int watchdog_started;
    pthread_mutex_t conns_lock;
    pthread_cond_t stop_cv;
    int stopping;
    int aborting; /* shutdown: interrupt everything */
    struct dapi_econn *conns;
    char *data_dir;
    char *data_real;       /* realpath of data_dir: files read must resolve beneath it */
    int64_t check_ms;      /* deadline of a check (0 = none) */
    char **catalog_names;  /* lower-case names of the system views, sorted */
    int64_t cut_warned_ms; /* last warning about a lake too large to scan */
    size_t ncatalog_names;
    pthread_mutex_t lake_lock; /* guards catalog and views */
    duckdb_connection catalog;
    struct views views;
    /* Lake changes (watch.c): the views match the lake as of generation views_gen (0: not
     * known to match — scan). */
    struct lakewatch *watch;
    uint64_t views_gen;
};

/* memory.c: one statement, check or conversion using the process's memory, from
 * engine_work_begin to engine_work_end (in flight: a list in the order of beginning). */
struct engine_work {
    uint64_t seq;  /* its place in that order */
    uint64_t mark; /* at its end: the last work begun by then (dapi_engine_wait_work) */
    int company;   /* at its end: another work was in flight at some time during it */
    struct engine_work *prev, *next;
};
void engine_work_begin(struct engine_work *w);
void engine_work_end(struct engine_work *w);

struct dapi_econn {
    struct dapi_engine *e;
    duckdb_connection con;
    int64_t deadline_ms;      /* 0 = none; guarded by e->conns_lock */
    int active;               /* a query is being driven */
    int timed_out;            /* set by the watchdog when it interrupted this connection */
    int64_t interrupted_ms;   /* when it did (monotonic) */
    const atomic_int *cancel; /* set: the watchdog interrupts the query (e->conns_lock) */
    duckdb_prepared_statement serialize; /* json_serialize_sql(?): the sandbox's parse tree */
    duckdb_prepared_statement glob;      /* glob(?): what a query's file paths match */
    unsigned serialize_uses, glob_uses;  /* executions since each was prepared (stmt_ready) */
    char *last_tree; /* the parse tree of the last SQL the sandbox passed (owned) or NULL */
    struct engine_work work; /* while active (set_deadline) */
    int oom_shared;          /* the last run ran out of memory, had company: DAPI_OOM_* */
    int light;               /* not counted as work (dapi_econn_set_light) */
    struct dapi_econn *next;
};

/* watch.c: lake change detection (inotify). enabled 0: off (every call answers 0). */
struct lakewatch;
enum dapi_err lakewatch_open(struct lakewatch **out, const char *root, int enabled);
void lakewatch_close(struct lakewatch *w);
/* The lake's generation: changes only when something under the lake may have changed since
 * the last call; 0 when that cannot be known (the watch is off): scan. Thread-safe. */
uint64_t lakewatch_gen(struct lakewatch *w);

/* types.c: DuckDB's name of a type ("DECIMAL(18,3)", "INTEGER[]" …), owned; NULL: no
 * memory. */
char *engine_type_name(duckdb_logical_type lt);

/* params.c: binds the JSON object params to st's named parameters (dapi_engine_check_bound):
 * DAPI_ERR_PARAM with *msg naming the parameter, or DAPI_ERR_NOMEM. */
enum dapi_err engine_bind_params(struct dapi_econn *c, duckdb_prepared_statement st,
                                 const char *params, char **msg);

/* locate.c: prefix + DuckDB's message m (NULL: "unknown error"), cut to 16 KiB keeping its
 * closing LINE block; owned, NULL without memory. */
char *dupmsg(const char *prefix, const char *m);

/* memory.c: a query that ran out of memory (DAPI_ERR_SQL with DuckDB's "Out of Memory
 * Error") becomes DAPI_ERR_TOO_LARGE with a message naming the setting, and what DuckDB's
 * allocator holds freed goes back to the kernel; other results are returned as they are.
 * *spill (if not NULL) says whether it was the temporary disk (--max-spill-bytes) that ran
 * out rather than memory. */
enum dapi_err engine_classify_oom(enum dapi_err result, char **msg, int *spill);

/* engine.c: small helpers shared by the engine's files. */
enum dapi_err add_ident(struct dapi_buf *b, const char *s);
enum dapi_err exec(duckdb_connection con, const char *sql, char *err, size_t errlen);
enum dapi_err collect_strings(duckdb_result *res, char ***list, size_t *n);
void free_strings(char **list, size_t n);
int cmp_str(const void *a, const void *b);
/* Marks c as driving a query until deadline_ms (0: none) — or as idle with active = 0.
 * Returns -1 if the engine is aborting (the query must not start). */
int set_deadline(struct dapi_econn *c, int active, int64_t deadline_ms);

/* reach.c: what the file pattern (absolute, textually under lake) could reach on disk, walked
 * on the lake's entries before DuckDB globs it: DAPI_OK, or DAPI_ERR_SQL (a link it could
 * enter or match leaves the lake; budget entries looked at, or REACH_MAX_DEPTH folders, and
 * still more), DAPI_ERR_FORBIDDEN (a link into a layer outside scope), with *msg; or
 * DAPI_ERR_TIMEOUT once stop(stop_arg) says so, DAPI_ERR_NOMEM. *visited (may be NULL): the
 * entries looked at. */
#define REACH_MAX_ENTRIES 200000
#define REACH_MAX_DEPTH 64
enum dapi_err engine_reach(const char *lake, const char *lake_real, const char *pattern,
                           const struct dapi_scope *scope, size_t budget, int (*stop)(void *arg),
                           void *stop_arg, size_t *visited, char **msg);
/* reach.c: "reading '<pattern>' is not allowed: it matches a hidden file or a link that leaves
 * the lake" (owned, NULL without memory). */
char *engine_leaves_msg(const char *pattern);

/* lake.c: frees every view of vs and empties it. */
void views_clear(struct views *vs);
/* lake.c: appends path as a DuckDB string literal that matches only that file (*, ? and [
 * put in one-character classes, ' doubled). */
enum dapi_err add_path_literal(struct dapi_buf *b, const char *path);

#endif
