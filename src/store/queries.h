/* The query registry: every query's slug, owner, SQL and state, persisted under
 * <state-dir>/queries/<slug>/ (meta.json + result.bin), or for a small result as a record of
 * a pack file (store/pack.h), so slugs and results survive a restart until their retention
 * ends. Thread-safe (one lock; page reads hold it only to take
 * a reference). Times are passed in (now_s: wall-clock seconds; now_ms: monotonic ms).
 *
 * It also keeps what is shared between keys fair, per key hash (so it works the same for
 * every backend, Nekt's forwarded keys included):
 *  - admission: each query being checked, queued or running holds one slot of its key and
 *    one of the server, reserved in one step before the SQL check (dapi_queries_admit) and
 *    given back exactly once (check refused, finished, failed, expired, dropped at shutdown);
 *  - stored bytes: a key's finished results take at most max_key_bytes; its oldest ones are
 *    deleted to make room for a new one, never another key's;
 *  - the crash-loop guard: each run is counted in meta.json before it starts; a query the
 *    process died running twice is failed at the next start instead of run a third time. */
#ifndef DAPI_QUERIES_H
#define DAPI_QUERIES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "auth/keys.h"
#include "base/scope.h"
#include "dapi/err.h"
#include "store/result.h"

#define DAPI_SLUG_MAX 48
#define DAPI_REUSE_HEX 65 /* a SHA-256 in hex and its NUL */

/* CANCELLED: stopped by its owner (DELETE) or abandoned (--abandon-after); kept (never run
 * again, not even after a restart) until its retention ends or its owner deletes it. */
enum dapi_qstate {
    DAPI_Q_QUEUED,
    DAPI_Q_RUNNING,
    DAPI_Q_DONE,
    DAPI_Q_FAILED,
    DAPI_Q_CANCELLED,
    DAPI_Q_NSTATES
};

/* A snapshot of a query, taken under the registry lock. `result` is a reference held by the
 * snapshot (DONE only): release with dapi_queries_release. */
struct dapi_qview {
    char slug[DAPI_SLUG_MAX];
    enum dapi_qstate state;
    enum dapi_err error; /* FAILED: why */
    char message[1024];  /* FAILED: details for the client (a longer one is cut, and says so) */
    struct dapi_result *result;
    int64_t expires_s; /* when the slug expires (wall-clock s: creation + retention) */
    /* QUEUED/RUNNING: the pages its run (or, for a query sharing an identical query's run,
     * that run) has published so far, or NULL; a reference released with the snapshot */
    struct dapi_result_live *live;
    void *ref; /* internal */
};

struct dapi_queries;

/* Runs a query may start without the process recording their outcome: at the next start
 * after that many, the query is failed instead of run again. */
#define DAPI_QUERY_MAX_ATTEMPTS 2
#define DAPI_QUERY_CRASH_MESSAGE \
    "the server stopped twice while running this query; it is not run again"

/* Opens the registry in state_dir, loading what a previous run left: expired queries are
 * deleted, finished ones are served again, unfinished ones are returned through
 * `on_unfinished(arg, slug, sql)` so the caller can run them again — except those already
 * started DAPI_QUERY_MAX_ATTEMPTS times, which are failed (DAPI_QUERY_CRASH_MESSAGE).
 * Temporary files of interrupted writes in the query directories (names containing ".tmp",
 * downloaded ".parquet" parts) are removed: nothing is writing them at start. A start with
 * millions of queries takes a while (about 35 µs each on the benchmark machine):
 * `on_progress(arg, n)` (if not NULL) is called after every DAPI_QUERIES_PROGRESS queries
 * read back, n those read so far. */
#define DAPI_QUERIES_PROGRESS 4096
enum dapi_err
dapi_queries_open(struct dapi_queries **out, const char *state_dir, int64_t retention_s,
                  uint64_t max_state_bytes, int64_t now_s,
                  void (*on_unfinished)(void *arg, const char *slug, const char *sql),
                  void (*on_progress)(void *arg, size_t n), void *arg, char *err, size_t errlen);
void dapi_queries_close(struct dapi_queries *qs);

/* Fairness limits (UINT64_MAX = none, the default). max_active and max_key_active bound
 * the queries being checked, queued or running (server-wide and per key); max_key_bytes
 * bounds one key's stored results. */
struct dapi_queries_limits {
    uint64_t max_active;
    uint64_t max_key_active;
    uint64_t max_key_bytes;
    uint64_t query_charge; /* DAPI_QUERY_CHARGE (the default); 0 counts the results alone */
};
/* Sets the limits; a new query_charge is applied to the queries registered already. */
void dapi_queries_set_limits(struct dapi_queries *qs, const struct dapi_queries_limits *l);

/* Reserves an admission slot for key_hash: DAPI_OK, DAPI_ERR_RATE (the key has
 * max_key_active queries) or DAPI_ERR_BUSY (the server has max_active). The caller then
 * moves the slot to the query it creates (dapi_queries_hold with its key) or gives it
 * back (dapi_queries_unadmit). */
enum dapi_err dapi_queries_admit(struct dapi_queries *qs, const unsigned char *key_hash);
void dapi_queries_unadmit(struct dapi_queries *qs, const unsigned char *key_hash);
/* Makes the query hold a slot of its owner until it finishes, fails, expires or is dropped,
 * taken whatever the limits (a query resumed after a restart was admitted before), and gives
 * back the slot `reserved` (may be NULL) had reserved with dapi_queries_admit — so moving a
 * reservation to the query its key created leaves the counts as they are. Idempotent: a
 * query holds at most one slot; a finished one none. Returns -1 if there is no such query. */
int dapi_queries_hold(struct dapi_queries *qs, const char *slug, const unsigned char *reserved);
/* Slots held: by key_hash, or by every key when key_hash is NULL. */
uint64_t dapi_queries_active(struct dapi_queries *qs, const unsigned char *key_hash);
/* What every registered query is charged in the byte quotas besides its result, whatever its
 * state: its metadata on disk (a directory and meta.json, or a pack record) and in memory.
 * Without it, a key's queries whose results are small, failed or cancelled took the disk
 * and memory of the machine for their retention while counting nothing. Measured: a failed
 * query takes 8 KiB of disk (a directory and meta.json, a 4 KiB block each) and about 1 KiB
 * of memory. A query whose SQL and parameters take more than half of it is charged twice
 * their bytes instead (they are kept on disk and in memory). */
#define DAPI_QUERY_CHARGE 8192
/* Bytes of key_hash's stored results and registered queries (DAPI_QUERY_CHARGE each). */
uint64_t dapi_queries_key_bytes(struct dapi_queries *qs, const unsigned char *key_hash);

/* Registers a new query owned by key_hash and persists it (state QUEUED). upstream (may be
 * NULL) is the backend's reference for it (the Nekt v1 query slug). Writes the new slug into
 * slug_out (DAPI_SLUG_MAX bytes). When the store is at max_state_bytes, the oldest results
 * of keys over max_key_bytes are deleted first. DAPI_ERR_BUSY (retry later) when the store
 * is still full or the state disk has no space left; DAPI_ERR_IO for other storage errors.
 * On error, why (may be NULL) receives a client-safe explanation (no paths). */
enum dapi_err dapi_queries_create(struct dapi_queries *qs, const unsigned char *key_hash,
                                  const char *sql, const char *upstream, int64_t now_s,
                                  char *slug_out, char *why, size_t whylen);

/* The same for a query limited to the layers of scope (NULL or scope->all: every layer),
 * persisted with it: a query run again after a restart keeps its scope (dapi_queries_scope). */
enum dapi_err dapi_queries_create_scoped(struct dapi_queries *qs, const unsigned char *key_hash,
                                         const struct dapi_scope *scope, const char *sql,
                                         const char *upstream, int64_t now_s, char *slug_out,
                                         char *why, size_t whylen);
/* Result reuse (docs/design.md "Result reuse"). What a new query computes is named by ident
 * (hex: the hash of its normalised SQL, backend, scope and upstream identity) and fp (hex: the
 * fingerprint of the lake files it may read, "" when none apply). */
struct dapi_reuse {
    const char *ident; /* NULL: the query is never reused nor reuses */
    const char *fp;
    int64_t max_age_s; /* a result whose data is at most this old is reused; 0: not (bypass) */
};
enum dapi_reused {
    DAPI_REUSED_NONE,   /* a new query: the caller runs it (holding its admission slot) */
    DAPI_REUSED_RESULT, /* DONE already: it shares a finished result (a hard link of its file;
                           the owner is charged its size); nothing to run, no slot to hold */
    DAPI_REUSED_RUN,    /* QUEUED, attached to an identical query's run (single-flight): it
                           finishes with that run's outcome; the caller holds its slot but
                           does not run it */
};
/* dapi_queries_create_scoped that first looks for a query of the same identity and lake
 * fingerprint created at most ru->max_age_s ago (counted from when its data was read, which
 * a reuse keeps) or still queued/running; *reused (may be NULL) says which. ru NULL: as
 * dapi_queries_create_scoped. A query created with an identity (even by a bypass) becomes
 * the one later identical queries reuse. */
enum dapi_err dapi_queries_create_reusing(struct dapi_queries *qs, const unsigned char *key_hash,
                                          const struct dapi_scope *scope, const char *sql,
                                          const char *upstream, const struct dapi_reuse *ru,
                                          int64_t now_s, char *slug_out, enum dapi_reused *reused,
                                          char *why, size_t whylen);
/* Like dapi_queries_create_reusing, with params (NULL: none: the values bound to the query's
 * $parameters, a JSON object stored with it: dapi_queries_params), but returns before the
 * creation is durable, with *ticket set: the creation may be answered only once dapi_queries_when_durable calls back. Lets the
 * thread go on (checking the next query) while the creation log's next round makes a batch of
 * creations durable together (docs/design.md, Durability). */
enum dapi_err dapi_queries_create_deferred(struct dapi_queries *qs, const unsigned char *key_hash,
                                           const struct dapi_scope *scope, const char *sql,
                                           const char *upstream, const char *params,
                                           const struct dapi_reuse *ru, int64_t now_s,
                                           char *slug_out, enum dapi_reused *reused, char *why,
                                           size_t whylen, uint64_t *ticket);
/* Calls fn(arg, err) once the creation of ticket is durable (err 0) or could not be made so
 * (an errno value: answer an error): at once in this thread if it is already, else from the
 * store's committer thread. */
void dapi_queries_when_durable(struct dapi_queries *qs, uint64_t ticket,
                               void (*fn)(void *arg, int err), void *arg);
/* Group commit's gathering (docs/design.md, Durability): a creation about to be checked is
 * announced (coming 1), and arrives (coming 0) once it has its ticket or will take none —
 * once for each announced. A round of the creation log about to start waits for the
 * creations announced before it, so that they share its sync: at most as long as a sync
 * took lately, and max_us (0: never). gather_stats: creations announced and not arrived,
 * rounds that waited so far. */
void dapi_queries_expect(struct dapi_queries *qs, int coming);
void dapi_queries_set_gather(struct dapi_queries *qs, int64_t max_us);
void dapi_queries_gather_stats(struct dapi_queries *qs, uint64_t *coming, uint64_t *gathered);
/* Returns once every creation recorded so far is settled and answered (at shutdown, before
 * the HTTP server goes: no answer may come after it). */
void dapi_queries_flush(struct dapi_queries *qs);

/* The layers the query may read, into out (out->all for an unscoped one). DAPI_ERR_NOT_FOUND
 * if there is no such query. */
enum dapi_err dapi_queries_scope(struct dapi_queries *qs, const char *slug,
                                 struct dapi_scope *out);
/* 1 if key_hash's query slug was created under a scope that now (the key's scope today) no
 * longer covers: lost (n bytes) then names a layer it lost, or is "" when the query could
 * read every layer. 0 otherwise (covered, or no such query of that key). */
int dapi_queries_scope_lost(struct dapi_queries *qs, const char *slug,
                            const unsigned char *key_hash, const struct dapi_scope *now,
                            char *lost, size_t n);

/* Looks a slug up for key_hash. DAPI_ERR_NOT_FOUND for unknown, expired, or owned by another
 * key (indistinguishable on purpose). On success fills v (release it). */
enum dapi_err dapi_queries_get(struct dapi_queries *qs, const char *slug,
                               const unsigned char *key_hash, int64_t now_s, struct dapi_qview *v);
void dapi_queries_release(struct dapi_queries *qs, struct dapi_qview *v);

/* Path of a query's result file (for the executor). */
void dapi_queries_result_path(const struct dapi_queries *qs, const char *slug, char *out,
                              size_t outlen);
/* QUEUED -> RUNNING. Returns 1 if this call made the change (the caller now runs it). */
int dapi_queries_claim(struct dapi_queries *qs, const char *slug);
#define dapi_queries_set_running(qs, slug) ((void)dapi_queries_claim(qs, slug))
/* A run starts now: marks the query RUNNING and persists (fsynced) one more attempt before
 * returning, so a run that kills the process is counted. DAPI_ERR_NOT_FOUND if the query is
 * gone; DAPI_ERR_BUSY / DAPI_ERR_IO (why set) if the attempt cannot be recorded — the caller
 * must not run it then, and finishes it with that error. */
enum dapi_err dapi_queries_start_run(struct dapi_queries *qs, const char *slug, char *why,
                                     size_t whylen);
/* The query will not run in this process (shutdown): it stays queued for the next start, its
 * slot is given back, and a run cut short here is not counted as an attempt (the process did
 * not die in it). */
void dapi_queries_drop(struct dapi_queries *qs, const char *slug);
/* Deletes a query nobody was told about — its creation was refused after it was registered
 * (the Nekt backend's key check): out of the registry, its directory removed, its slot given
 * back; its waiters are woken (they find it gone). Unknown slugs are ignored. */
void dapi_queries_remove(struct dapi_queries *qs, const char *slug);
/* A query that failed with DAPI_ERR_BUSY (no space left, could not be queued: retry later)
 * goes back to QUEUED, taking a slot of its owner as dapi_queries_admit would. DAPI_OK: the
 * caller now submits it; DAPI_ERR_RATE / DAPI_ERR_BUSY: limits, it stays failed;
 * DAPI_ERR_INVALID: not in that state (e.g. another request re-queued it first). */
enum dapi_err dapi_queries_retry(struct dapi_queries *qs, const char *slug);
/* A run of slug ran out of memory while other work was in the engine (not necessarily too
 * large itself): if it has had fewer than max such retries, counts one more, remembers mark
 * (what its next run waits for: dapi_engine_wait_work) and returns the count (>= 1); else
 * 0, and the failure is final. In memory only: a restart starts the count again. */
int dapi_queries_memory_retry(struct dapi_queries *qs, const char *slug, uint64_t mark, int max);
/* 1 and *mark if slug's last run was such a failure (its next run waits first), else 0. */
int dapi_queries_memory_mark(struct dapi_queries *qs, const char *slug, uint64_t *mark);
/* The query's SQL (owned, free()) or NULL. */
char *dapi_queries_sql(struct dapi_queries *qs, const char *slug);
/* The values bound to the query's $parameters (a JSON object, owned) or NULL (none, or an
 * unknown slug, or no memory). */
char *dapi_queries_params(struct dapi_queries *qs, const char *slug);
/* The upstream reference into out ("" if none). */
void dapi_queries_upstream(struct dapi_queries *qs, const char *slug, char *out, size_t n);
/* Replaces the upstream reference (persisted). */
enum dapi_err dapi_queries_set_upstream(struct dapi_queries *qs, const char *slug,
                                        const char *upstream);
/* Results stay mapped while recently used: at most n at a time (default DAPI_MAPPED_MAX), the
 * others mapped again when read. For tests; and how many are mapped now. */
#define DAPI_MAPPED_MAX 16384
void dapi_queries_set_mapped_max(struct dapi_queries *qs, uint64_t n);
uint64_t dapi_queries_mapped(struct dapi_queries *qs);
/* How many queries the registry's walks have looked at so far (the tick, making room in a
 * quota, lists, shared runs, result reuse, checkpoints): each walks what it needs — the
 * queries due, a key's oldest, a page of a list — never every kept query. For tests. */
uint64_t dapi_queries_visits(struct dapi_queries *qs);
/* The query's directory, for backend files kept with it (deleted with it); made now if the
 * query exists and has none yet (a new query gets it when its run writes a file). */
void dapi_queries_dir(struct dapi_queries *qs, const char *slug, char *out, size_t n);
/* For a writer that may have outlived its query (a Nekt v1 page fetched while the query was
 * deleted): 1 if slug is not registered any more, after removing its directory again (the
 * writer may have made it again after the deletion); 0 if the query is still there. */
int dapi_queries_dir_gone(struct dapi_queries *qs, const char *slug);
/* Marks a query DONE (opening its result file) or FAILED, persists that, gives its slot
 * back and wakes its waiters. bytes = size of the result file (accounting for
 * --max-state-bytes). A result larger than max_key_bytes is deleted and the query fails
 * (DAPI_ERR_TOO_LARGE); otherwise the owner's oldest results are deleted until the owner's
 * results fit in max_key_bytes with this one (snapshots keep their mapping, as at expiry). */
void dapi_queries_finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                         const char *message, uint64_t bytes);
/* dapi_queries_finish of a run whose result the writer kept in memory (image, len bytes:
 * dapi_result_writer_small): packed with the query's record (store/pack.h), or written to
 * its result file if it has files already. */
void dapi_queries_finish_small(struct dapi_queries *qs, const char *slug, const void *image,
                               size_t len);

/* Waits for a query to leave QUEUED/RUNNING: cb(arg, timed_out) is called exactly once, from
 * the thread that finishes the query, or from dapi_queries_tick when deadline_ms passes, or
 * from dapi_queries_cancel_waiters. Returns 0 if registered, -1 if the query already
 * finished (cb not called; look it up again). */
int dapi_queries_wait(struct dapi_queries *qs, const char *slug, int64_t deadline_ms,
                      void (*cb)(void *arg, int timed_out), void *arg);
/* The same, also woken (cb(arg, 0), from the writing thread) as soon as page (> 0) of the
 * query's run is published; -1 also when it already is. A query sharing an identical query's
 * run (single-flight) waits on that run's pages. The caller looks the query up again when
 * woken: it may still be running (then its page is published), or have ended. */
int dapi_queries_wait_page(struct dapi_queries *qs, const char *slug, uint64_t page,
                           int64_t deadline_ms, void (*cb)(void *arg, int timed_out), void *arg);
/* Progressive pages: a run of slug now writes its result into the writer whose live pages are
 * live (a reference is taken; NULL: none). Waiters for a page are woken as dapi_queries_progress
 * reports pages published (the writer's publish callback, on the writing thread). The live
 * pages are dropped when the query finishes, is dropped or removed. */
void dapi_queries_set_live(struct dapi_queries *qs, const char *slug,
                           struct dapi_result_live *live);
void dapi_queries_progress(struct dapi_queries *qs, const char *slug, uint64_t pages);
/* Charges slug's owner n bytes more for a file kept in its directory (a Nekt v1 page), as a
 * result is charged: the key's oldest ended queries are deleted to make room. DAPI_OK, or
 * the file must not be kept (why says which limit): DAPI_ERR_TOO_LARGE when the key would
 * stay over --max-state-bytes-per-key, DAPI_ERR_BUSY when the store would stay over
 * --max-state-bytes, DAPI_ERR_NOT_FOUND when the query is gone. */
enum dapi_err dapi_queries_add_bytes(struct dapi_queries *qs, const char *slug, uint64_t n,
                                     char *why, size_t whylen);
/* Fires due waiter timeouts and deletes expired queries (giving back their slots). Call
 * periodically. */
void dapi_queries_tick(struct dapi_queries *qs, int64_t now_s, int64_t now_ms);
/* Wakes every waiter as timed out (shutdown). */
void dapi_queries_cancel_waiters(struct dapi_queries *qs);
/* Bytes the stored results and registered queries take (as dapi_queries_key_bytes). */
uint64_t dapi_queries_bytes(struct dapi_queries *qs);
/* The pack files of small results (docs/design.md, "Small results"): how many there are,
 * the bytes of their live records, and of all their records (removed ones included). */
void dapi_queries_pack_usage(struct dapi_queries *qs, uint64_t *files, uint64_t *live,
                             uint64_t *total);
/* How many registered queries are in each state (out[DAPI_Q_QUEUED] …), for metrics. */
void dapi_queries_count_states(struct dapi_queries *qs, uint64_t out[DAPI_Q_NSTATES]);

/* ---- lifecycle (src/store/lifecycle.c): status, lists, cancellation, column types ---- */

/* The wall clock the registry reads for times it records itself (a run's start and end);
 * dapi_clock_wall_s by default, injected by unit tests. */
void dapi_queries_set_clock(struct dapi_queries *qs, int64_t (*wall_s)(void));
/* Queued or running queries whose owner has not asked about them (status or results) for
 * seconds are cancelled by dapi_queries_tick as abandoned (0: never, the default). */
void dapi_queries_set_abandon(struct dapi_queries *qs, int64_t seconds);

/* A result's columns: de-duplicated names (as the pages' JSON keys) and DuckDB type names
 * ("BIGINT", "DECIMAL(18,3)", "INTEGER[]", "STRUCT(a INTEGER)" …). */
struct dapi_columns {
    size_t n;
    char **names;
    char **types;
};
void dapi_columns_free(struct dapi_columns *c);
/* Records the columns of slug's result (copied): called by a run before it finishes the
 * query, persisted (meta.json) with the outcome. */
enum dapi_err dapi_queries_set_columns(struct dapi_queries *qs, const char *slug, size_t n,
                                       const char *const *names, const char *const *types);
/* The columns of key_hash's query slug into out (owned: dapi_columns_free). DAPI_ERR_NOT_FOUND
 * as dapi_queries_get; DAPI_ERR_INVALID while they are not known (queued, running, failed). */
enum dapi_err dapi_queries_columns(struct dapi_queries *qs, const char *slug,
                                   const unsigned char *key_hash, int64_t now_s,
                                   struct dapi_columns *out);

/* What GET /api/queries/{slug} says of a query (a snapshot; dapi_qstatus_free). Times are
 * wall-clock seconds, 0 = not yet. rows/pages/bytes: -1 = not known (yet). */
struct dapi_qstatus {
    char slug[DAPI_SLUG_MAX];
    enum dapi_qstate state;
    char *sql;
    char *params; /* the bound parameter values (a JSON object) or NULL */
    int64_t created_s, started_s, finished_s;
    int64_t rows, pages, bytes;
    int reused;                  /* shares an identical query's result or run */
    enum dapi_err error;         /* FAILED */
    char *message;               /* FAILED, CANCELLED: why (NULL: none) */
    struct dapi_columns columns; /* n = 0 and NULL arrays while not known */
    int columns_known;
};
void dapi_qstatus_free(struct dapi_qstatus *s);
/* The status of key_hash's query slug. DAPI_ERR_NOT_FOUND as dapi_queries_get. Counts as its
 * owner asking about it (--abandon-after). */
enum dapi_err dapi_queries_status(struct dapi_queries *qs, const char *slug,
                                  const unsigned char *key_hash, int64_t now_s,
                                  struct dapi_qstatus *out);

/* One entry of a key's list (newest first). seq orders them: the list's cursor. */
struct dapi_qsummary {
    char slug[DAPI_SLUG_MAX];
    enum dapi_qstate state;
    int64_t created_s;
    int64_t rows; /* -1: not known */
    uint64_t seq;
    char *sql; /* owned: at most DAPI_QLIST_SQL_MAX bytes of it (cut at a UTF-8 boundary) */
    int sql_cut;
};
#define DAPI_QLIST_SQL_MAX 1000
/* Up to limit of key_hash's queries created before the one of seq `before` (0: from the
 * newest), newest first, into *out (owned: dapi_qsummaries_free); *more says whether older
 * ones follow. */
enum dapi_err dapi_queries_list(struct dapi_queries *qs, const unsigned char *key_hash,
                                int64_t now_s, uint64_t before, size_t limit,
                                struct dapi_qsummary **out, size_t *n, int *more);
/* The cursor the API shows for key_hash's query of seq: from 1 to DAPI_CURSOR_MAX, a keyed
 * permutation of seq that means something only with that key (seq counts every key's
 * creations: as the cursor it told a key how many queries the others made). And back: the
 * seq of a cursor (0 for one out of range). */
#define DAPI_CURSOR_MAX (1ull << 62)
uint64_t dapi_queries_cursor(const struct dapi_queries *qs, const unsigned char *key_hash,
                             uint64_t seq);
uint64_t dapi_queries_cursor_seq(const struct dapi_queries *qs, const unsigned char *key_hash,
                                 uint64_t cursor);
void dapi_qsummaries_free(struct dapi_qsummary *v, size_t n);

/* DELETE /api/queries/{slug} by key_hash. A queued or running query is cancelled (*deleted =
 * 0): its run is interrupted (the flag it registered with dapi_queries_set_cancel_flag is
 * set), its slot given back, its waiters woken, its stored pages deleted, CANCELLED persisted
 * with why. A query sharing another's run (single-flight) just leaves it; a query whose run
 * others share is cancelled for its owner while the run goes on for them. A finished query
 * (done, failed or cancelled) is deleted (*deleted = 1). DAPI_ERR_NOT_FOUND as
 * dapi_queries_get. */
enum dapi_err dapi_queries_cancel(struct dapi_queries *qs, const char *slug,
                                  const unsigned char *key_hash, int64_t now_s, const char *why,
                                  int *deleted);
/* A run of slug registers the flag dapi_queries_cancel sets (NULL: unregisters, before the
 * flag goes away). Returns 1 if the query is already cancelled (the run should stop). */
int dapi_queries_set_cancel_flag(struct dapi_queries *qs, const char *slug, atomic_int *flag);
/* 1 if slug is cancelled or gone (an upstream poll loop stops then). */
int dapi_queries_cancelled(struct dapi_queries *qs, const char *slug);

#endif
