/* What the Nekt backend's files share: nekt.c (the backend's operations, the keys, start and
 * stop), nekt_v2.c (the sql-query API) and nekt_v1.c (the Explorer API). Calls to Nekt
 * themselves are in nekt_http.h. Private to src/backend/nekt*.c. */
#ifndef DAPI_NEKT_INT_H
#define DAPI_NEKT_INT_H

#include <pthread.h>
#include <stdint.h>
#include "backend/backend.h"

#define MAX_EXECUTIONS 3 /* re-executions after expired URLs / lost executions */

struct app_state; /* nekt_v1.c */
struct inflight;  /* nekt_v1.c */
struct ra_query;  /* nekt_v1.c */
struct key_ok;    /* nekt_v2.c */
struct creating;  /* nekt_v2.c */
struct nekt_reach;

struct dapi_nekt {
    pthread_mutex_t mu;
    struct app_state *apps; /* Explorer application state, per upstream key */
    struct inflight *pages; /* v1 pages being fetched: a second request waits for the first */
    struct ra_query *ra;    /* v1 read-ahead state, newest first (RA_QUERIES_MAX at most) */
    pthread_cond_t page_done;
    int v1;
    const struct dapi_backend_env *env;
    /* v2's key check (--upstream-key-check-wait), all under mu */
    struct key_ok *keys_ok; /* KEYS_OK_MAX entries */
    struct creating *creating;
    pthread_cond_t creating_cv; /* a creation was added, or the timer must stop */
    pthread_t timer;            /* answers the creations whose wait is over */
    int timer_started, timer_stop;
    struct nekt_reach *reach; /* is Nekt reachable? (GET /api/ready) */
};

/* The key a call to Nekt carries: the request's key, else the server-held one
 * (DAPI_NEKT_API_KEY; NULL without it). nekt.c. */
const char *nekt_upstream_key(struct dapi_nekt *nk, const char *key);

/* ---- v2 (nekt_v2.c) ---- */

/* Starts the key check (its table and timer thread); -1 when it cannot. */
int nekt_v2_start(struct dapi_nekt *nk) __attribute__((warn_unused_result));
/* Stops the key check (the timer answers every creation still waiting first). */
void nekt_v2_stop(struct dapi_nekt *nk);
/* The create, results and unfinished operations of v2; key is the request's forwarded key
 * (may be NULL). nekt_v2_create takes sql. */
void nekt_v2_create(struct dapi_nekt *nk, char *sql, const struct dapi_principal *who,
                    const char *key, struct dapi_reply rp);
void nekt_v2_results(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *page_text,
                     const char *key, const unsigned char *key_hash, struct dapi_reply rp);
void nekt_v2_resume(struct dapi_nekt *nk, const char *slug, const char *sql);

/* ---- v1 (nekt_v1.c) ---- */

/* The create and results operations of v1; key as above, key_hash the owner's hash.
 * nekt_v1_create takes sql. */
void nekt_v1_create(struct dapi_nekt *nk, char *sql, const char *key,
                    const unsigned char *key_hash, struct dapi_reply rp);
void nekt_v1_results(struct dapi_nekt *nk, const char *slug, uint64_t page, const char *page_text,
                     const char *key, const unsigned char *key_hash, struct dapi_reply rp);
/* Frees v1's state: application states, pages in flight, read-ahead entries. */
void nekt_v1_free(struct dapi_nekt *nk);

#endif
