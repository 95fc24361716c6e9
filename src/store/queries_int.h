/* Inside the query registry (store/queries.c, meta.c, reuse.c): its structures and the
 * helpers its files share. Not for use outside src/store. */
#ifndef DAPI_STORE_QUERIES_INT_H
#define DAPI_STORE_QUERIES_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/commit.h"
#include "store/pack.h"
#include "store/queries.h"
#include "store/result.h"

struct waiter {
    void (*cb)(void *arg, int timed_out);
    void *arg;
    int64_t deadline_ms;
    uint64_t page; /* > 0: woken too once that page of the run is published */
    struct waiter *next;
};

struct query {
    char slug[DAPI_SLUG_MAX];
    unsigned char owner[DAPI_KEY_HASH_LEN];
    char *sql;
    char *upstream;
    char *params; /* the values bound to its $parameters (canonical JSON object) or NULL */
    struct dapi_scope *scope; /* the layers it may read (NULL: every layer); never changes */
    int64_t created_s;
    enum dapi_qstate state;
    enum dapi_err error;
    char *message;
    uint64_t bytes;
    struct dapi_result *result; /* DONE: mapped while recently used (store_result) */
    uint64_t rows, pages;       /* DONE: its result's, kept when the mapping goes ... */
    int shape_known;            /* ... once it was mapped (or its pack record read back) */
    int in_mru;                 /* in qs's list of mapped results */
    struct query *mru_prev, *mru_next;
    int refs;     /* registry's own + snapshots */
    int attempts; /* runs started whose outcome is not recorded (meta.json) */
    int in_run;   /* one of them is going on in this process */
    int pinned;   /* ended, but queries that shared its run still link its result: not evicted */
    int64_t run_start_us; /* when that run started (monotonic), for its duration */
    int holds;            /* holds an admission slot of its owner */
    uint64_t charged;     /* what its owner is charged besides its result (registered) */
    /* In memory only: runs that ran out of memory beside other work and were answered as
     * retryable (dapi_queries_memory_retry), and what the next run waits for. */
    int memory_retries;
    uint64_t memory_mark;
    /* Its directory holds created.json or meta.json. Until then (a new query: files are
     * written when its run ends) only its record in the creation log keeps it, and a
     * checkpoint writes created.json first (store_materialise). Set once, by either. */
    atomic_int ondisk;
    uint64_t seq; /* registration order (persisted): ties of created_s */
    /* Result reuse (persisted): the identity of what it computes (hex; "" = never reused),
     * the lake fingerprint it was created against, and when its result's data was read
     * (creation of the query that ran it: a reused result keeps the original time). */
    char ident[DAPI_REUSE_HEX];
    char fp[DAPI_REUSE_HEX];
    int64_t done_s;
    char leader[DAPI_SLUG_MAX]; /* in memory only: waits for this query's run (single-flight) */
    /* RUNNING: the pages its run has published so far (dapi_queries_set_live), served before
     * the run ends; pages_ready of them (as told by dapi_queries_progress). */
    struct dapi_result_live *live;
    uint64_t pages_ready;
    /* Serialises this query's meta.json rewrites (they share meta.json.tmp and must land in
     * order); other queries' are written in parallel: each run writes twice (start, end), so
     * one lock for all would bound the whole server's run rate by the disk's fsync time. */
    pthread_mutex_t persist;
    /* Lifecycle (persisted but last_seen_s and cancel): when its last run started and its
     * outcome was recorded (0: not yet), whether it shares another's result or run, its
     * result's columns (ncols == 0 and NULL arrays: not known), when its owner last asked
     * about it (0: not since this process started) and its run's cancel flag (or NULL). */
    int64_t started_s, finished_s, last_seen_s;
    int reused;
    size_t ncols;
    char **col_names, **col_types;
    atomic_int *cancel;
    struct waiter *waiters;
    struct query *next;     /* hash chain */
    struct query *creating; /* qs->creating chain (recorded, not yet registered) */
    /* The indexes besides the hash table (index.c): registered, in qs->ages (aged) and in
     * its key's byseq; in the watch list; in its identity's list (ient). */
    int registered, aged, watched;
    struct store_agevec *byseq;
    struct query *wprev, *wnext;
    struct reuse_ent *ient;
    struct query *iprev, *inext;
};

/* Queries ordered by two keys (index.c): entries (a, b, q), q NULL for a query gone. */
struct store_ageent {
    int64_t a;
    uint64_t b;
    struct query *q;
};
struct store_agevec {
    struct store_ageent *v;
    size_t n, cap;
    size_t head;  /* v[0 .. head) are all holes */
    size_t dead;  /* holes from head on */
    int unsorted; /* a start's bulk load: sorted once it ends */
};

/* What one key uses of what keys share: admission slots and stored bytes. An entry exists
 * only while one of them is non-zero, so keys presented once (forwarded to Nekt, unchecked)
 * cost nothing afterwards. */
struct keyuse {
    unsigned char key[DAPI_KEY_HASH_LEN];
    uint64_t active, bytes;
    struct store_agevec byseq; /* its registered queries by (seq, created_s) */
    struct keyuse *next;
};

#define NBUCKETS 4096 /* the hash table's first size */
#define NKEYBUCKETS 256
#define NREUSEBUCKETS 1024 /* the identities' table's first size */

/* The newest query holding (or computing) a result of each identity. Entries whose query is
 * gone are dropped when met (lookup) and at each tick. */
struct reuse_ent {
    char ident[DAPI_REUSE_HEX];
    char slug[DAPI_SLUG_MAX];   /* its holder ("": found again from the list) */
    struct query *first, *last; /* the registered queries of the identity, by seq */
    struct reuse_ent *next;
};

struct dapi_queries {
    pthread_mutex_t lock;
    char *dir; /* <state>/queries */
    int64_t retention_s;
    uint64_t max_bytes, bytes;
    struct dapi_queries_limits lim;
    uint64_t active, seq;
    struct query **buckets; /* the hash table: nbuckets chains (doubled as it fills) */
    size_t nbuckets, count;
    struct store_agevec ages;        /* registered queries by (created_s, seq): expiry */
    struct query *watch;             /* what the tick looks at (index.c) */
    uint64_t visits;                 /* queries its walks looked at (dapi_queries_visits) */
    unsigned char cursor_key[32];    /* the list cursors' secret (store/cursor.c) */
    uint64_t states[DAPI_Q_NSTATES]; /* registered queries by state (store_set_state) */
    struct keyuse *keys[NKEYBUCKETS];
    struct reuse_ent **reuse; /* result identities: nreuse chains (doubled as it fills) */
    size_t nreuse, nidents;
    uint64_t nfollow; /* queries waiting for another's run (single-flight) */
    /* Queries whose creation record goes to the log before they are registered (no reuse
     * look-up registered them early): a checkpoint's hook writes their files too, else the
     * checkpoint could drop the only record of a creation about to be answered. */
    struct query *creating;
    /* Registered queries whose result is mapped, most recently used first: at most
     * mapped_max (each mapping is one of the process's vm.max_map_count, 65,530 by default;
     * one per retained result made the server fail once that many were kept). */
    struct query *mru, *lru;
    uint64_t mapped, mapped_max;
    struct store_commit *commit; /* group commit of the state dir's file system */
    struct store_pack *pack;     /* small finished queries' records (store/pack.h) */
    int clean;               /* the last stop was clean: results need no checksum check at load */
    int opened;              /* fully opened: close marks the stop clean */
    int64_t (*wall_s)(void); /* times recorded by the registry itself */
    int64_t abandon_s;       /* --abandon-after (0: never) */
    /* The compactor thread (store_compactor_*): compacts the pack files the tick finds
     * sparse, off the tick's thread (it fsyncs). Its own lock, never held with another. */
    pthread_t compactor;
    pthread_mutex_t compact_mu;
    pthread_cond_t compact_cond;
    int compact_started, compact_want, compact_stop;
};

/* Slugs of deleted queries whose directories are removed once the lock is released. */
struct slugs {
    char (*v)[DAPI_SLUG_MAX];
    size_t n, cap;
};


/* What meta.json holds: a snapshot of a query's fields. */
struct meta {
    const char *slug;
    const unsigned char *owner;
    const char *sql, *upstream, *message;
    const char *params; /* NULL: none */
    const struct dapi_scope *scope;
    int64_t created_s;
    enum dapi_qstate state;
    enum dapi_err error;
    uint64_t bytes;
    int attempts;
    uint64_t seq;
    const char *ident, *fp;
    int64_t done_s;
    int64_t started_s, finished_s;
    int reused;
    size_t ncols;
    char *const *col_names, *const *col_types;
    int fresh; /* no meta.json or created.json yet (!ondisk): the first write makes them */
};


/* queries.c (callers hold the lock for find) */
struct query *store_find(struct dapi_queries *qs, const char *slug);
/* Whether q is registered or being created (in qs->creating); under the lock. */
int store_known(struct dapi_queries *qs, const struct query *q);
void store_qfree(struct query *q);
void store_unref(struct query *q); /* under the lock */
/* qsort's order of queries (struct query *): creation, then registration, then slug. */
int store_older(const void *a, const void *b);
/* follow.c. The queries that waited for slug's run (single-flight) get its outcome: its
 * result file, linked (so shared on disk), or its error — as if each had run. A result in
 * memory (image) is copied: packed with each one's record, or written to its own file. All
 * links are made before any is recorded, and slug (pinned by its end) is unpinned once they
 * are; they are recorded oldest first. Without the lock. */
void store_settle_followers(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                            const char *message, uint64_t bytes, const void *image);
/* Registers q (one more reference: the registry's), charging its owner the query charge;
 * under the lock. */
void store_insert(struct dapi_queries *qs, struct query *q);
/* keyuse.c, under the lock. Charges q's owner the query charge in force (again, when it
 * changed); charges q->bytes, set before q was counted (loaded, or a reused result's);
 * makes q's own bytes (its result, kept files) bytes, charging its owner the difference;
 * takes both back (at its deletion); a key's bytes. */
void store_charge(struct dapi_queries *qs, struct query *q);
void store_bytes_count(struct dapi_queries *qs, struct query *q);
void store_bytes_set(struct dapi_queries *qs, struct query *q, uint64_t bytes);
void store_bytes_sub(struct dapi_queries *qs, struct query *q);
uint64_t store_key_bytes(struct dapi_queries *qs, const unsigned char *key);
/* Takes an admission slot of key if the limits allow (q, if not NULL, then holds it):
 * DAPI_OK, DAPI_ERR_RATE (the key has max_key_active), DAPI_ERR_BUSY (max_active in all) or
 * DAPI_ERR_NOMEM. / Gives back the slot q holds, if any. */
enum dapi_err store_slot_admit(struct dapi_queries *qs, const unsigned char *key, struct query *q);
void store_slot_release(struct dapi_queries *qs, struct query *q);
/* Does another query wait for slug's run (single-flight)? Under the lock. */
int store_has_followers(struct dapi_queries *qs, const char *slug);
/* Whether a query in state s has ended (done, failed or cancelled). */
static inline int store_ended(enum dapi_qstate s)
{
    return s == DAPI_Q_DONE || s == DAPI_Q_FAILED || s == DAPI_Q_CANCELLED;
}
/* Whether q may be deleted to make room for its key's newer queries: it has ended and no run
 * goes on for queries sharing it (a cancelled leader), or it is a Nekt v1 query (the only kind
 * registered with an upstream reference): it has no run of its own and never ends, its pages
 * are fetched per request. Queued and running queries are bounded by admission instead. Never
 * while pinned (the queries that shared its run are linking its result file). */
static inline int store_evictable(const struct query *q)
{
    return ((store_ended(q->state) && !q->in_run) || (q->upstream && !q->holds && !q->in_run)) &&
           !q->pinned;
}
/* FNV-1a of a string: the chain of a slug or a result identity in the registry's tables. */
static inline uint32_t store_hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for(const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* index.c (under the lock) */
/* q joins the ages (and its key's, mine: NULL without memory for its key entry), its
 * identity's list and the watch list / leaves them all (at its deletion). */
void store_index_add(struct dapi_queries *qs, struct query *q, struct store_agevec *mine);
void store_index_remove(struct dapi_queries *qs, struct query *q);
/* q->state = s, counted (qs->states) while q is registered: every change of a registered
 * query's state goes through it. */
void store_set_state(struct dapi_queries *qs, struct query *q, enum dapi_qstate s);
/* A start's bulk load: on, queries are appended in any order; off sorts every vector. */
void store_index_bulk(struct dapi_queries *qs, int on);
/* The first entry at or after (a, b) (from v->head on). */
size_t store_agevec_lower(const struct store_agevec *v, int64_t a, uint64_t b);
size_t store_agevec_live(const struct store_agevec *v);
void store_agevec_free(struct store_agevec *v);
/* Whether the tick must look at q; puts a registered q in the watch list (if it is not) /
 * takes it out. Each change that makes store_watched true calls store_watch; the tick takes
 * out those it finds false. */
int store_watched(const struct query *q);
void store_watch(struct dapi_queries *qs, struct query *q);
void store_unwatch(struct dapi_queries *qs, struct query *q);
/* The entry of ident (made if create; NULL without memory or if none). */
struct reuse_ent *store_ident_get(struct dapi_queries *qs, const char *ident, int create);
/* keyuse.c: key's byseq vector (its entry made if create; NULL without memory or entry). */
struct store_agevec *store_key_ages(struct dapi_queries *qs, const unsigned char *key, int create);
void store_key_left(struct dapi_queries *qs, const unsigned char *key);
/* Each key entry, for f(arg, key, its bytes, its byseq). */
void store_keys_each(struct dapi_queries *qs,
                     void (*f)(void *arg, const unsigned char *key, uint64_t bytes,
                               struct store_agevec *byseq),
                     void *arg);

/* lifecycle.c */
/* q's result (DONE), mapped now if it is not (NULL if it cannot be: missing or damaged), made
 * the most recently used; the least recently used others are unmapped beyond mapped_max.
 * Under the lock. A reader that keeps it takes a reference (dapi_result_ref). */
struct dapi_result *store_result(struct dapi_queries *qs, struct query *q);
/* Makes r (a reference the registry takes over, or NULL) q's result, tracked as above. */
void store_result_set(struct dapi_queries *qs, struct query *q, struct dapi_result *r);
/* The same for the q->result q was given before it was registered. */
void store_result_adopt(struct dapi_queries *qs, struct query *q);
void store_columns_clear(struct query *q);
/* q gets a copy of src's columns (none without memory). */
void store_columns_copy(struct query *q, const struct query *src);

/* meta.c */
struct meta store_meta_of(const struct query *q);
/* Rewrites meta.json atomically against a process crash (temp + rename; fsynced only if
 * durable), without the lock, on a snapshot; m->fresh: makes the directory and writes
 * meta.json anew. Returns 0 or an errno value (ENOSPC/EDQUOT: the disk is full). */
int store_save_meta(const struct dapi_queries *qs, const struct meta *m, int durable);
/* Records a new query durably (in the creation log, group commit) before its creation is
 * answered: waits for it (ticket NULL), or returns its ticket. With files, its directory
 * (made by the caller) gets created.json and meta.json now; else they wait for its first
 * meta.json write or a checkpoint. Returns 0 or an errno value. */
int store_record_meta(const struct dapi_queries *qs, const struct meta *m, uint64_t *ticket,
                      int files);
/* ENOSPC if the state dir's file system has no room left for a new query's files (they are
 * written after the creation is answered, which must then not be refused by a full disk);
 * else 0. A quota (EDQUOT) is not seen here: the run then fails retryably. */
int store_room(const struct dapi_queries *qs);
/* Appends m to the creation log without waiting (no file written): what a start after a
 * crash restores if no file of the query is found — a run's start while it has none. */
int store_log_meta(const struct dapi_queries *qs, const struct meta *m);
/* Writes the directory, created.json and meta.json (a link to it) of a query that has no
 * files yet, for the checkpoint's hook: replaces nothing, so a meta.json written meanwhile
 * (the run's end) stays. Returns 0 or an errno value. */
int store_materialise(const struct dapi_queries *qs, const struct meta *m);
/* Records m, finished, as a pack record with its result (image: NULL for none); *mapped gets
 * the result mapped from the record. Returns 0 or an errno value. */
int store_pack_meta(const struct dapi_queries *qs, const struct meta *m, const void *image,
                    size_t len, struct dapi_result **mapped);
/* The compactor thread: started once the registry is open, stopped first at close; woken
 * (by the tick) when a pack file is sparse enough to compact (store_pack_compact), it
 * compacts one file after another, the queries whose records move then reading their
 * results from the new place; after a failure it waits 10 s before it tries again. */
void store_compactor_start(struct dapi_queries *qs);
void store_compactor_wake(struct dapi_queries *qs);
void store_compactor_stop(struct dapi_queries *qs);
/* Whether q's finished run may be packed: its result is in memory (image) and q has no files
 * (no directory). Its persist lock held. */
int store_packable(const struct dapi_queries *qs, struct query *q, enum dapi_err error,
                   const void *image);
/* Writes a result kept in memory to the file at rp (a query that has files). Returns 0 or an
 * errno value. */
int store_write_image(const char *rp, const void *image, size_t len);
/* A query read back from a pack record, whose result's bytes are result (borrowed; rlen 0:
 * none). A done one is left unmapped (store_result maps it when it is first used). */
struct query *store_load_packed(struct dapi_queries *qs, const char *slug, const char *meta,
                                size_t mlen, const void *result, size_t rlen);
/* Removes a query's files and directory (store_remove_dir without its pack record and the
 * log record). */
void store_remove_files(const struct dapi_queries *qs, const char *slug);
/* The client's error for a failed write of the state dir (errno e); why names the setting. */
enum dapi_err store_storage_error(int e, const char *what, char *why, size_t n);
/* Removes a query's files, directory and pack record, and appends its removal to the log. */
void store_remove_dir(const struct dapi_queries *qs, const char *slug);
/* Removes files a crashed run left in a query's directory; counts them. */
void store_remove_orphans(const struct dapi_queries *qs, const char *slug, size_t *files,
                          uint64_t *bytes);
/* Loads one stored query; NULL if it is damaged (the caller removes the directory). */
struct query *store_load_one(struct dapi_queries *qs, const char *slug);

/* The creation log's records read back at start (meta.c): the creation records of queries not
 * removed since, restored by store_replay_apply where their files did not survive. */
struct replayed {
    char slug[DAPI_SLUG_MAX];
    char *text;
    size_t len;
};
struct replay {
    struct replayed *v;
    size_t n, cap;
};
void store_replay_record(void *arg, enum store_rec kind, const char *data, size_t len);
/* Returns how many queries were restored; frees r's contents. */
size_t store_replay_apply(struct dapi_queries *qs, struct replay *r);

/* reuse.c (under the lock) */
/* Makes q the query of its identity (the newest registered wins). */
void store_reuse_set(struct dapi_queries *qs, const struct query *q);
/* The query whose result (or run) a new query of identity ru->ident may share, or NULL;
 * *how says which. */
struct query *store_reusable(struct dapi_queries *qs, const struct dapi_reuse *ru, int64_t now_s,
                             enum dapi_reused *how);

/* Reads or makes the state dir's secret for list cursors (cursor.c). 0 or an errno value (a
 * secret for this process only was drawn then). */
int store_cursor_key(struct dapi_queries *qs);

#endif
