/* Backends: where a query runs. The API layer validates a request exactly as the reference
 * does, then hands it to the configured backend (a row of the registry below). A backend
 * never writes HTTP: each call ends in one outcome, passed to a callback — now, or later from
 * another thread — and the API layer (src/api/) turns the outcome into the answer.
 *
 * A backend sees only its environment (struct dapi_backend_env: the registry of queries, the
 * engine, the pools, the settings, the clock) and its own state, made by its start. So it can
 * be driven by a unit test without an HTTP server: tests/unit/backend/. */
#ifndef DAPI_BACKEND_H
#define DAPI_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "auth/keys.h"
#include "auth/principal.h"
#include "config/config.h"
#include "dapi/err.h"

struct dapi_engine;
struct dapi_econn;
struct dapi_pool;
struct dapi_queries;
struct dapi_result;
struct dapi_buf;

/* What a backend may use, given to its start and valid until its stop. */
struct dapi_backend_env {
    const struct dapi_config *cfg; /* settings and limits (read-only) */
    struct dapi_queries *queries;  /* the registry of queries and their results */
    struct dapi_engine *engine;
    struct dapi_pool *check_pool; /* short jobs: SQL checks (DAPI_BACKEND_CHECKS_SQL only) */
    struct dapi_pool *run_pool;   /* runs, materialisation, upstream calls */
    const atomic_int *stopping;   /* non-zero once shutdown has begun */
    int64_t (*mono_ms)(void);     /* the clock: deadlines (dapi_clock_mono_ms) */
    int64_t (*wall_s)(void);      /* the clock: creation times, retention (dapi_clock_wall_s) */
};

/* ---- outcomes ---------------------------------------------------------------------- */

enum dapi_outcome_kind {
    DAPI_OUTCOME_CREATED, /* POST /api/queries: the query exists (slug, sql) */
    DAPI_OUTCOME_PAGE,    /* GET …/results: a page (slug, page_text, rows) */
    DAPI_OUTCOME_ERROR,   /* the request failed: {"details", "error"} */
    DAPI_OUTCOME_FAILED,  /* the query's execution failed: the execution-failure shape
                             {"details", "error", "page_number", "query_slug"} */
    DAPI_OUTCOME_JSON,    /* a whole 200 answer: the JSON document rows (len bytes), e.g.
                             schema discovery's */
};

/* One outcome. Every pointer is borrowed for the duration of the callback only. */
struct dapi_outcome {
    enum dapi_outcome_kind kind;
    const char *slug;      /* CREATED, PAGE, FAILED */
    const char *sql;       /* CREATED */
    const char *page_text; /* PAGE, FAILED: the page number as the client will read it */
    const char *rows;      /* PAGE without result: the page's rows as JSON, joined by ','
                              (len bytes); JSON: the body */
    size_t len;
    struct dapi_result *result; /* PAGE: the stored result the page is read from (the API
                                   layer takes its own reference to send it), or NULL */
    uint64_t page_no;           /* PAGE with result: which page (1-based) */
    /* PAGE for DAPI_PAGE_LIVE while the query runs: the pages its run has published so far
     * (at least page 1; the API layer takes its own reference), result NULL */
    struct dapi_result_live *live;
    int64_t max_age; /* PAGE with result: > 0 = the result is finished and stays
                                   so this many more seconds (ETag, Cache-Control immutable);
                                   0 = no caching headers */
    uint64_t nrows;  /* PAGE without result: how many rows (for metrics) */
    /* Where the time went (microseconds; 0 = not measured), for the Server-Timing header:
     * waiting for a worker, checking the SQL, waiting for the run to produce the page. */
    int64_t queue_us, check_us, wait_us;
    const char *details; /* ERROR, FAILED: the explanation (NULL: none) */
    const char *message; /* ERROR: replaces the code's message (NULL: the err table's) */
    int status;          /* ERROR, FAILED: 0 = the err table's (dapi_err_status, or
                            dapi_err_exec_status for FAILED) */
    int retry_after;     /* ERROR: seconds for Retry-After; 0 = the err table's; < 0 = none */
    int reused;          /* CREATED: the slug shares an identical query's result or run
                            (header X-Dapi-Reused: true; the body is the same) */
};

/* The end of a create or results call: err is DAPI_OK for CREATED and PAGE. Called exactly
 * once per call, from any thread, possibly before the call returns. */
typedef void dapi_backend_done(void *ctx, enum dapi_err err, const struct dapi_outcome *out);

/* Where a call's outcome goes. */
struct dapi_result;

struct dapi_reply {
    dapi_backend_done *done;
    void *ctx;
};

/* Building outcomes (src/backend/common.c). */
void dapi_reply_created(struct dapi_reply rp, const char *slug, const char *sql);
void dapi_reply_created_reused(struct dapi_reply rp, const char *slug, const char *sql,
                               int reused);
void dapi_reply_page(struct dapi_reply rp, const char *slug, const char *page_text,
                     const char *rows, size_t len, uint64_t nrows);
/* The same, saying how long the page waited for its query's run (Server-Timing). */
void dapi_reply_page_waited(struct dapi_reply rp, const char *slug, const char *page_text,
                            const char *rows, size_t len, uint64_t nrows, int64_t wait_us);
/* CREATED (reused or not) saying where its time went (Server-Timing). */
void dapi_reply_created_timed(struct dapi_reply rp, const char *slug, const char *sql, int reused,
                              int64_t queue_us, int64_t check_us);
/* How many rows page (1-based) of a result holds: 100, fewer on the last, 0 past the end. */
uint64_t dapi_backend_page_rows(const struct dapi_result *r, uint64_t page);
/* PAGE read from a stored result (see struct dapi_outcome: result, page_no, max_age), after
 * waiting wait_us for it (Server-Timing; 0 = not measured). */
void dapi_reply_result_page(struct dapi_reply rp, const char *slug, const char *page_text,
                            struct dapi_result *result, uint64_t page_no, int64_t max_age,
                            int64_t wait_us);
/* ERROR with the err table's status, message and Retry-After; details may be NULL or "". */
void dapi_reply_err(struct dapi_reply rp, enum dapi_err err, const char *details);
/* FAILED; status 0 = dapi_err_exec_status(err). DAPI_ERR_UPSTREAM_TIMEOUT is not a failure
 * of the query: it becomes an ERROR (the generic shape, 504) whatever the status. */
void dapi_reply_failed(struct dapi_reply rp, enum dapi_err err, int status, const char *details,
                       const char *slug, const char *page_text);
void dapi_reply(struct dapi_reply rp, enum dapi_err err, const struct dapi_outcome *out);
/* JSON: 200 with body (len bytes, borrowed for the call). */
void dapi_reply_json(struct dapi_reply rp, const char *body, size_t len);

/* An admission slot a request holds (dapi_queries_admit) while a worker handles it, and the
 * reply that answers the request: that reply gives the slot back BEFORE it answers, because
 * the client's next request can arrive the moment it reads the answer and must find the slot
 * free (with --max-queries-per-key 1 it would be refused otherwise). */
struct dapi_slot {
    struct dapi_reply client;
    struct dapi_queries *queries;
    unsigned char key[DAPI_KEY_HASH_LEN];
    int held;
};
/* Starts holding key's slot; answer through the returned reply. */
struct dapi_reply dapi_slot_reply(struct dapi_slot *s, struct dapi_reply client,
                                  struct dapi_queries *queries, const unsigned char *key);
/* Gives the slot back unless given back or kept already (idempotent). */
void dapi_slot_give_back(struct dapi_slot *s);
/* The slot now belongs to a query (dapi_queries_hold moved it): never given back here. */
void dapi_slot_keep(struct dapi_slot *s);

/* ---- the interface ----------------------------------------------------------------- */

struct dapi_backend_ops {
    /* Makes the backend's own state (*state, which may stay NULL) from env, which outlives it.
     * On error returns -1 having written a one-line reason. May be NULL. */
    int (*start)(const struct dapi_backend_env *env, void **state, char *err, size_t errlen);
    void (*stop)(void *state); /* may be NULL */
    /* POST /api/queries after validation. Takes sql (malloc'd). who is the caller (borrowed
     * for the call only: copy what outlives it): who->owner owns the query, who->scope is
     * the layers it may read (enforced by the engine at creation — DAPI_ERR_FORBIDDEN, 403,
     * before anything runs — and at every run, stored with the query), who->client_key and
     * who->upstream_key are for forwarding. Called holding one admission slot reserved for
     * who->owner (dapi_queries_admit): the backend moves it to the query it creates
     * (dapi_queries_hold), or gives it back (dapi_queries_unadmit) — once, whatever happens
     * (refused SQL, errors, shutdown). */
    void (*create)(void *state, char *sql, const struct dapi_principal *who, struct dapi_reply rp);
    /* The same with bind parameters: params (malloc'd, taken; a canonical JSON object,
     * docs/api.md "Bind parameters") are bound to the SQL's $names by the engine, stored with
     * the query and part of its reuse identity. NULL: the backend cannot bind (the API layer
     * refuses "params" with a 400). */
    void (*create_bound)(void *state, char *sql, char *params, const struct dapi_principal *who,
                         struct dapi_reply rp);
    /* GET …/results after validation: page >= 1; page_text is its canonical decimal form.
     * Only who->owner's queries are found. */
    void (*results)(void *state, const char *slug, uint64_t page, const char *page_text,
                    const struct dapi_principal *who, struct dapi_reply rp);
    /* GET …/export: the whole stored result (page DAPI_PAGE_WHOLE, page_text "1" for the
     * failure shape), as results answers it; with live, a running query's published pages as
     * soon as page 1 is (DAPI_PAGE_LIVE). NULL: the backend keeps no results to export
     * (answered 501). */
    void (*stored)(void *state, const char *slug, int live, const struct dapi_principal *who,
                   struct dapi_reply rp);
    /* A query a previous run left unfinished (from the registry at start; its scope is the
     * registry's, dapi_queries_scope). May be NULL. */
    void (*unfinished)(void *state, const char *slug, const char *sql);
    /* GET /api/layers: the layers and tables who may read (a JSON outcome). NULL: the
     * backend has no schema discovery (the API answers 501). */
    void (*layers)(void *state, const struct dapi_principal *who, struct dapi_reply rp);
    /* GET /api/layers/{layer}/tables/{table}: one table described (a JSON outcome), 404 for
     * an unknown layer or table, 403 for a layer outside who->scope. NULL as layers. */
    void (*describe)(void *state, const char *layer, const char *table,
                     const struct dapi_principal *who, struct dapi_reply rp);
    /* GET /api/ready: 0 when what the backend depends on beyond the engine and the state dir
     * (an upstream) answers, else -1 with why. From the event thread: must not wait on the
     * network (answer from the last check). May be NULL (nothing more to check). */
    int (*ready)(void *state, char *why, size_t n);
};

/* What a backend needs from the server around it. */
enum {
    DAPI_BACKEND_NEEDS_LAKE = 1 << 0,    /* runs client SQL on --data-dir (which must exist);
                                             the emulator may serve beside it */
    DAPI_BACKEND_CHECKS_SQL = 1 << 1,    /* checks SQL at creation: gets a check pool */
    DAPI_BACKEND_FORWARDS_KEYS = 1 << 2, /* without a server-held upstream key
                                             (DAPI_NEKT_API_KEY) client keys are forwarded
                                             upstream, which checks them: dapi loads none */
    DAPI_BACKEND_UPSTREAM = 1 << 3,      /* runs wait on a remote service: the run pool has
                                             --upstream-workers threads, not --workers; the
                                             engine only reads the downloads under
                                             <state-dir>/queries */
};

/* A row of the registry: the value of --backend, its operations and its needs. */
struct dapi_backend {
    const char *name;
    const struct dapi_backend_ops *ops;
    unsigned caps;
};

/* The row named name, or NULL. */
const struct dapi_backend *dapi_backend_find(const char *name);
/* The registry's rows, for listing (n set to their count). */
const struct dapi_backend *dapi_backend_list(size_t *n);

extern const struct dapi_backend_ops dapi_backend_local_ops;
extern const struct dapi_backend_ops dapi_backend_nekt_ops;

/* ---- shared by backends (src/backend/common.c) ------------------------------------- */

/* The "page" of a results call that asks for the whole finished result (the export): its
 * outcome is PAGE with the result (page_no DAPI_PAGE_WHOLE) once the query is done — a
 * running query is waited for up to --result-wait, not served page by page — or the
 * query's failure as a results request gets it. */
#define DAPI_PAGE_WHOLE UINT64_MAX
/* The same, but a query still running whose run has published page 1 is answered at once:
 * PAGE with its live pages (struct dapi_outcome: live), for the export to stream while the
 * run goes on. Before page 1 (and for a result of fewer than 100 rows) it waits as
 * DAPI_PAGE_WHOLE does, so a run that fails early is answered with its failure. */
#define DAPI_PAGE_LIVE (UINT64_MAX - 1)

/* Answers a results request from the registry — the page if done, the failure if failed,
 * else waits for the query (up to --result-wait). Used by backends that materialise a whole
 * result (local, Nekt v2). If the query is queued but nobody runs it (left by a previous run),
 * rerun(state, slug, key) is called first; rerun NULL means such a query is queued again by
 * dapi_backend_submit_run (its failure for lack of room too). */
void dapi_backend_answer_stored(const struct dapi_backend_env *env, const char *slug,
                                uint64_t page, const char *page_text,
                                const unsigned char *key_hash, const char *key,
                                void (*rerun)(void *state, const char *slug, const char *key),
                                void *state, struct dapi_reply rp);

/* Runs sql into the slug's result file and records the outcome in the registry (the
 * materialising half of the local backend), limited to the scope stored with the query. */
void dapi_backend_materialise(const struct dapi_backend_env *env, struct dapi_econn *conn,
                              const char *slug, const char *sql);

/* Queues sql to be materialised into slug's result on the run pool (tagged by key_hash, may
 * be NULL). */
enum dapi_err dapi_backend_submit_run(const struct dapi_backend_env *env, const char *slug,
                                      const char *sql, const unsigned char *key_hash);

/* Runs sql into a result file at path (for Nekt: over downloaded Parquet files, so SQL errors
 * are reported as DAPI_ERR_UPSTREAM "not valid Parquet"), a user's limited to scope (NULL:
 * every layer; ignored from_upstream). live_slug (may be NULL): the query whose result this
 * is — its complete pages are served while it runs (dapi_queries_set_live). params: the values
 * bound to a user query's $parameters (NULL: none). small (may be NULL): a result of at
 * most DAPI_PACK_RESULT_MAX bytes that fits in its first page gets no file, its image goes
 * to small (for dapi_queries_finish_small; left empty otherwise). *details receives an owned
 * explanation on error. */
enum dapi_err dapi_backend_write_result(const struct dapi_backend_env *env,
                                        struct dapi_econn *conn, const char *sql,
                                        const char *params, const struct dapi_scope *scope,
                                        const char *path, const char *live_slug, int from_upstream,
                                        struct dapi_buf *small, uint64_t *bytes, char **details);

/* The outcome of a query that could not be created: DAPI_ERR_BUSY (store full, no space on
 * the state disk) is 503 + Retry-After 30; why (may be NULL or "") becomes "details". */
void dapi_backend_create_failure(struct dapi_reply rp, enum dapi_err err, const char *why);
/* The outcome of a refused admission (dapi_queries_admit / dapi_queries_retry):
 * DAPI_ERR_RATE is 429 naming --max-queries-per-key, DAPI_ERR_BUSY 503, both with
 * Retry-After. */
void dapi_backend_refuse_admission(const struct dapi_backend_env *env, struct dapi_reply rp,
                                   enum dapi_err err, const unsigned char *key_hash);

/* Queues job on pool (tagged by key_hash when not NULL, so keys take turns). If the pool
 * refuses it, gives key_hash's admission slot back, answers 503 (why as details) and returns
 * the error: the caller then frees job. */
enum dapi_err dapi_backend_queue(const struct dapi_backend_env *env, struct dapi_pool *pool,
                                 void (*fn)(void *job, struct dapi_econn *conn), void *job,
                                 const unsigned char *key_hash, struct dapi_reply rp,
                                 const char *why);

/* ---- schema discovery (src/backend/discovery.c; docs/api.md "Schema discovery") ---- */

/* The layers and tables who may read, listed on env's check pool (a short job, tagged by
 * who's key; 503 when --max-queued-queries jobs already wait there). */
void dapi_backend_discover_layers(const struct dapi_backend_env *env,
                                  const struct dapi_principal *who, struct dapi_reply rp);
/* One table described on env's check pool, within --query-timeout. */
void dapi_backend_discover_table(const struct dapi_backend_env *env, const char *layer,
                                 const char *table, const struct dapi_principal *who,
                                 struct dapi_reply rp);

/* The bodies (exposed for the unit tests): malloc'd JSON, *len bytes; NULL without memory. */
struct dapi_lake_table;
struct dapi_lake_desc;
char *dapi_backend_layers_json(const struct dapi_lake_table *t, size_t n, size_t *len);
char *dapi_backend_table_json(const struct dapi_lake_desc *d, size_t *len);

/* ---- result reuse (docs/design.md "Result reuse") ---------------------------------- */

/* The identity of a query for result reuse, as SHA-256 hex into out (65 bytes): backend name,
 * the scope's layers sorted ("*" for every layer), the upstream identity (NULL for none: the
 * hash of the Nekt upstream key, whose tenant decides the data), the query text (DuckDB's
 * parse tree when known, so formatting does not matter; its "query_location" fields, which
 * are offsets into the text, are left out) and the owner (its key hash; NULL: shared by every
 * owner, --reuse-across-keys). -1 without memory (then: no reuse). */
int dapi_backend_reuse_ident(const char *backend, const struct dapi_scope *scope,
                             const char *upstream_id, const char *text, const unsigned char *owner,
                             char *out);
/* The same for a query with bound parameters: params (canonical JSON, NULL: none) is part
 * of the identity, typed (1 and "1" differ). */
int dapi_backend_reuse_ident_bound(const char *backend, const struct dapi_scope *scope,
                                   const char *upstream_id, const char *text, const char *params,
                                   const unsigned char *owner, char *out);
/* The fingerprint of the lake files scope may read — path, size and mtime of every file
 * under <data_dir>/<layer>/ of each layer in scope (every layer directory when scope->all)
 * — as SHA-256 hex into out (65 bytes). A result is reused only while it is unchanged. A
 * linked file counts with its target's size and mtime; a linked directory below a layer is
 * not followed (links may loop or leave the lake). -1 (then: no reuse) past 100,000 files
 * or without memory. gen: the lake's generation read before (dapi_engine_lake_generation):
 * a fingerprint computed under the same non-zero generation is answered without a walk. */
int dapi_backend_lake_fingerprint(const char *data_dir, const struct dapi_scope *scope,
                                  uint64_t gen, char *out);
/* The max age a create may reuse a result of: server (the setting) lowered or bypassed by
 * who->reuse_max_age; 0 = no reuse. */
int64_t dapi_backend_reuse_age(int64_t server, const struct dapi_principal *who);

/* The pool tag of a key's jobs, so that runs take turns between keys
 * (dapi_pool_submit_tagged): the start of its hash; 0 when none is known (resumed at start). */
uint64_t dapi_backend_key_tag(const unsigned char *key_hash);

#endif
