/* Backends: where a query runs. The API layer validates a request exactly as the reference
 * does, then hands it to the configured backend through this const vtable. Every function
 * answers the request (now, or later from another thread after dapi_req_defer). */
#ifndef DAPI_BACKEND_H
#define DAPI_BACKEND_H

#include <stdint.h>
#include "auth/keys.h"
#include "dapi/err.h"
#include "http/http.h"

struct dapi_app;

struct dapi_backend_ops {
    const char *name;
    /* Starts the backend's own state (may be NULL). On error writes a one-line reason. */
    int (*start)(struct dapi_app *app, char *err, size_t errlen);
    void (*stop)(struct dapi_app *app);
    /* POST /api/queries after validation. Takes sql (malloc'd). key is the client's key
     * (borrowed, for forwarding); key_hash identifies the owner. Called holding one
     * admission slot reserved for key_hash (dapi_queries_admit): the backend moves it to the
     * query it creates (dapi_queries_hold), or gives it back (dapi_queries_unadmit) — once,
     * whatever happens (refused SQL, errors, shutdown). */
    void (*create)(struct dapi_app *app, struct dapi_req *r, char *sql, const char *key,
                   const unsigned char *key_hash);
    /* GET …/results after validation: page >= 1; page_text is its canonical decimal form. */
    void (*results)(struct dapi_app *app, struct dapi_req *r, const char *slug, uint64_t page,
                    const char *page_text, const char *key, const unsigned char *key_hash);
    /* A query a previous run left unfinished (from the registry at start). */
    void (*unfinished)(struct dapi_app *app, const char *slug, const char *sql);
};

extern const struct dapi_backend_ops dapi_backend_local;
extern const struct dapi_backend_ops dapi_backend_nekt;

/* Shared by backends that materialise a whole result (local, Nekt v2): answers a results
 * request from the registry — the page if done, the failure if failed, else waits for the
 * query (up to --result-wait). If the query is queued but nobody runs it (left by a previous
 * run), `rerun(app, slug, key)` is called first (may be NULL). */
void dapi_backend_answer_stored(struct dapi_app *app, struct dapi_req *r, const char *slug,
                                uint64_t page, const char *page_text,
                                const unsigned char *key_hash, const char *key,
                                void (*rerun)(struct dapi_app *app, const char *slug,
                                              const char *key));

/* Runs sql into the slug's result file and records the outcome in the registry (the
 * materialising half of the local backend; also used by Nekt v2 on downloaded files). */
struct dapi_econn;
void dapi_backend_materialise(struct dapi_app *app, struct dapi_econn *conn, const char *slug,
                              const char *sql);

/* Runs sql into a result file at path (for Nekt: over downloaded Parquet files, so SQL errors
 * are reported as DAPI_ERR_UPSTREAM "not valid Parquet"). *details receives an owned
 * explanation on error. */
enum dapi_err dapi_backend_write_result(struct dapi_app *app, struct dapi_econn *conn,
                                        const char *sql, const char *path, int from_upstream,
                                        uint64_t *bytes, char **details);

/* The answer to a query that could not be created: DAPI_ERR_BUSY (store full, no space on
 * the state disk) is 503 + Retry-After; why (may be NULL or "") becomes "details". */
void dapi_backend_create_failure(struct dapi_req *r, enum dapi_err err, const char *why);
/* The answer to a refused admission (dapi_queries_admit / dapi_queries_retry):
 * DAPI_ERR_RATE is 429 naming --max-queries-per-key, DAPI_ERR_BUSY 503, both with
 * Retry-After. */
void dapi_backend_refuse_admission(struct dapi_app *app, struct dapi_req *r, enum dapi_err err,
                                   const unsigned char *key_hash);

/* The pool tag of a key's jobs, so that runs take turns between keys
 * (dapi_pool_submit_tagged): the start of its hash; 0 when none is known (resumed at start). */
uint64_t dapi_backend_key_tag(const unsigned char *key_hash);

#endif
