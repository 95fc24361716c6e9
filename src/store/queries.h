/* The query registry: every query's slug, owner, SQL and state, persisted under
 * <state-dir>/queries/<slug>/ (meta.json + result.bin) so slugs and results survive a
 * restart until their retention ends. Thread-safe (one lock; page reads hold it only to take
 * a reference). Times are passed in (now_s: wall-clock seconds; now_ms: monotonic ms). */
#ifndef DAPI_QUERIES_H
#define DAPI_QUERIES_H

#include <stddef.h>
#include <stdint.h>
#include "auth/keys.h"
#include "dapi/err.h"
#include "store/result.h"

#define DAPI_SLUG_MAX 48

enum dapi_qstate { DAPI_Q_QUEUED, DAPI_Q_RUNNING, DAPI_Q_DONE, DAPI_Q_FAILED };

/* A snapshot of a query, taken under the registry lock. `result` is a reference held by the
 * snapshot (DONE only): release with dapi_queries_release. */
struct dapi_qview {
    char slug[DAPI_SLUG_MAX];
    enum dapi_qstate state;
    enum dapi_err error;   /* FAILED: why */
    char message[1024];    /* FAILED: details for the client */
    struct dapi_result *result;
    void *ref;             /* internal */
};

struct dapi_queries;

/* Opens the registry in state_dir, loading what a previous run left: expired queries are
 * deleted, finished ones are served again, unfinished ones are returned through
 * `on_unfinished(arg, slug, sql)` so the caller can run them again. */
enum dapi_err dapi_queries_open(struct dapi_queries **out, const char *state_dir,
                                int64_t retention_s, uint64_t max_state_bytes, int64_t now_s,
                                void (*on_unfinished)(void *arg, const char *slug,
                                                      const char *sql),
                                void *arg, char *err, size_t errlen);
void dapi_queries_close(struct dapi_queries *qs);

/* Registers a new query owned by key_hash and persists it (state QUEUED). upstream (may be
 * NULL) is the backend's reference for it (the Nekt v1 query slug). Writes the new slug into
 * slug_out (DAPI_SLUG_MAX bytes). DAPI_ERR_BUSY when the state dir is full. */
enum dapi_err dapi_queries_create(struct dapi_queries *qs, const unsigned char *key_hash,
                                  const char *sql, const char *upstream, int64_t now_s,
                                  char *slug_out);

/* Looks a slug up for key_hash. DAPI_ERR_NOT_FOUND for unknown, expired, or owned by another
 * key (indistinguishable on purpose). On success fills v (release it). */
enum dapi_err dapi_queries_get(struct dapi_queries *qs, const char *slug,
                               const unsigned char *key_hash, int64_t now_s,
                               struct dapi_qview *v);
void dapi_queries_release(struct dapi_queries *qs, struct dapi_qview *v);

/* Path of a query's result file (for the executor). */
void dapi_queries_result_path(const struct dapi_queries *qs, const char *slug, char *out,
                              size_t outlen);
/* QUEUED -> RUNNING. Returns 1 if this call made the change (the caller now runs it). */
int dapi_queries_claim(struct dapi_queries *qs, const char *slug);
#define dapi_queries_set_running(qs, slug) ((void)dapi_queries_claim(qs, slug))
/* The query's SQL (owned, free()) or NULL. */
char *dapi_queries_sql(struct dapi_queries *qs, const char *slug);
/* The upstream reference into out ("" if none). */
void dapi_queries_upstream(struct dapi_queries *qs, const char *slug, char *out, size_t n);
/* Replaces the upstream reference (persisted). */
enum dapi_err dapi_queries_set_upstream(struct dapi_queries *qs, const char *slug,
                                        const char *upstream);
/* The query's directory, for backend files kept with it (deleted with it). */
void dapi_queries_dir(const struct dapi_queries *qs, const char *slug, char *out, size_t n);
/* Marks a query DONE (opening its result file) or FAILED, persists that, and wakes its
 * waiters. bytes = size of the result file (accounting for --max-state-bytes). */
void dapi_queries_finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                         const char *message, uint64_t bytes);

/* Waits for a query to leave QUEUED/RUNNING: cb(arg, timed_out) is called exactly once, from
 * the thread that finishes the query, or from dapi_queries_tick when deadline_ms passes, or
 * from dapi_queries_cancel_waiters. Returns 0 if registered, -1 if the query already
 * finished (cb not called; look it up again). */
int dapi_queries_wait(struct dapi_queries *qs, const char *slug, int64_t deadline_ms,
                      void (*cb)(void *arg, int timed_out), void *arg);
/* Fires due waiter timeouts and deletes expired queries. Call periodically. */
void dapi_queries_tick(struct dapi_queries *qs, int64_t now_s, int64_t now_ms);
/* Wakes every waiter as timed out (shutdown). */
void dapi_queries_cancel_waiters(struct dapi_queries *qs);
/* Bytes the stored results take. */
uint64_t dapi_queries_bytes(struct dapi_queries *qs);

#endif
