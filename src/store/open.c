/* Opening a store (loading the state dir, restoring from the creation log, queries to run
 * again) and closing it (a clean stop), and the creation log's checkpoint hook, which writes
 * the files of queries that have none yet (docs/design.md, Durability). */
#include "store/queries.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "store/queries_int.h"

/* The mark of a clean stop: written by close once every result is durable, removed (durably)
 * at the next start. Without it the stop was a crash or a power loss, and each result's
 * checksum is checked as it is loaded (results are not fsynced when written). */
#define CLEAN_MARK ".clean-stop"

static int fsync_dir(const char *p)
{
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC), e = fd < 0 || fsync(fd) ? errno : 0;
    if(fd >= 0)
        close(fd);
    return e;
}

/* The creation log's checkpoint is about to drop every record: the queries kept only by
 * theirs (no files yet: registered, or recorded and about to be registered) get created.json
 * now, which the checkpoint's syncfs makes durable.
 * Called by the log's checkpointer thread, or with the log's lock held by a checkpoint of
 * both halves: so it takes no lock a thread appending to the log may hold (a query's persist
 * lock among them). Every query whose record is in the half it retires is registered or
 * listed as creating when it runs (listed before the record was appended, taken off the list
 * only under the same lock hold that registers it). A concurrent meta.json write is safe against it
 * (store_materialise never replaces a file), and a query removed meanwhile loses the files
 * written for it here (checked again after). */
static void materialise_all(void *arg)
{
    struct dapi_queries *qs = arg;
    struct query **v = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&qs->lock);
    /* the registered queries (those without files are all in the watch list), then those
     * whose record is in the log but which are not registered yet (qs->creating): the
     * checkpoint drops that record too */
    for(int list = 0; list < 2; list++)
        for(struct query *q = list ? qs->creating : qs->watch; q;
            q = list ? q->creating : q->wnext) {
            qs->visits++;
            if(atomic_load(&q->ondisk))
                continue;
            if(n == cap) {
                size_t c2 = cap ? 2 * cap : 64;
                struct query **v2 = realloc(v, c2 * sizeof *v2);
                if(!v2)
                    break;
                v = v2;
                cap = c2;
            }
            q->refs++;
            v[n++] = q;
        }
    pthread_mutex_unlock(&qs->lock);
    for(size_t i = 0; i < n; i++) {
        struct query *q = v[i];
        pthread_mutex_lock(&qs->lock);
        int want = !atomic_load(&q->ondisk) && store_known(qs, q);
        struct meta m = store_meta_of(q);
        /* (what may change once the lock is released is copied or left out: a creation
         * record needs no columns) */
        char *msg = m.message ? strdup(m.message) : NULL;
        char *up = m.upstream ? strdup(m.upstream) : NULL;
        m.message = msg;
        m.upstream = up;
        m.ncols = 0;
        m.col_names = m.col_types = NULL;
        pthread_mutex_unlock(&qs->lock);
        int e = want ? store_materialise(qs, &m) : 0;
        pthread_mutex_lock(&qs->lock);
        int gone = !store_known(qs, q);
        pthread_mutex_unlock(&qs->lock);
        if(want && (gone || (!e && store_pack_has(qs->pack, q->slug))))
            store_remove_files(qs, q->slug); /* removed meanwhile: it stays removed; or its
                                                run's end packed it meanwhile: the record
                                                holds it */
        else if(want && !e)
            atomic_store(&q->ondisk, 1);
        else if(e)
            dapi_error("store: cannot write the files of %s before a checkpoint: %s", q->slug,
                       strerror(e));
        free(msg);
        free(up);
    }
    pthread_mutex_lock(&qs->lock);
    for(size_t i = 0; i < n; i++)
        store_unref(v[i]);
    pthread_mutex_unlock(&qs->lock);
    free(v);
}

static int clean_start(struct dapi_queries *qs)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/" CLEAN_MARK, qs->dir);
    if(unlink(p))
        return 0; /* absent (or cannot be removed: then never trusted) */
    /* Removed durably before anything is written: a later crash must not find it. */
    return fsync_dir(qs->dir) == 0;
}

static void mark_clean_stop(struct dapi_queries *qs)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/" CLEAN_MARK, qs->dir);
    /* Everything written so far first (syncfs), then the mark, made durable on its own. */
    if(store_commit_checkpoint(qs->commit))
        return;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(fd < 0)
        return;
    close(fd);
    if(fsync_dir(qs->dir))
        unlink(p);
}

/* Queries being loaded at start, and what a start counts of them. */
struct loading {
    struct dapi_queries *qs;
    int64_t now_s;
    void (*on_unfinished)(void *arg, const char *slug, const char *sql);
    void (*on_progress)(void *arg, size_t n);
    void *arg;
    size_t loaded, expired, rerun, crashed;
};

/* Registers q, read back from slug's files or record (NULL: damaged, removed). */
static void load(struct loading *l, const char *slug, struct query *q);
static void load_packed(void *arg, const char *slug, const char *meta, size_t mlen,
                        const void *result, size_t rlen);

enum dapi_err
dapi_queries_open(struct dapi_queries **out, const char *state_dir, int64_t retention_s,
                  uint64_t max_state_bytes, int64_t now_s,
                  void (*on_unfinished)(void *arg, const char *slug, const char *sql),
                  void (*on_progress)(void *arg, size_t n), void *arg, char *err, size_t errlen)
{
    struct dapi_queries *qs = calloc(1, sizeof *qs);
    *out = NULL;
    if(!qs)
        return DAPI_ERR_NOMEM;
    pthread_mutex_init(&qs->lock, NULL);
    qs->retention_s = retention_s;
    qs->max_bytes = max_state_bytes;
    qs->wall_s = dapi_clock_wall_s;
    qs->lim.max_active = qs->lim.max_key_active = qs->lim.max_key_bytes = UINT64_MAX;
    qs->lim.query_charge = DAPI_QUERY_CHARGE;
    qs->mapped_max = DAPI_MAPPED_MAX;
    qs->nbuckets = NBUCKETS;
    qs->nreuse = NREUSEBUCKETS;
    if(!(qs->buckets = calloc(qs->nbuckets, sizeof *qs->buckets)) ||
       !(qs->reuse = calloc(qs->nreuse, sizeof *qs->reuse))) {
        dapi_queries_close(qs);
        return DAPI_ERR_NOMEM;
    }
    store_index_bulk(qs, 1); /* (queries are loaded in any order: sorted once at the end) */
    size_t n = strlen(state_dir) + 16;
    if(!(qs->dir = malloc(n))) {
        dapi_queries_close(qs);
        return DAPI_ERR_NOMEM;
    }
    snprintf(qs->dir, n, "%s/queries", state_dir);
    if(mkdir(qs->dir, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", qs->dir, strerror(errno));
        dapi_queries_close(qs);
        return DAPI_ERR_IO;
    }
    store_cursor_key(qs); /* (a failure is logged: cursors then last as long as the process) */
    /* The creation log first: queries whose creation was answered but whose files a power
     * loss took are written again, then made durable by a checkpoint. */
    qs->clean = clean_start(qs);
    int e = store_pack_open(&qs->pack, qs->dir);
    if(e) {
        snprintf(err, errlen, "cannot read the pack files in %s: %s", qs->dir, strerror(e));
        dapi_queries_close(qs);
        return DAPI_ERR_IO;
    }
    struct replay replay = {0};
    e = store_commit_open(&qs->commit, qs->dir, 0, store_replay_record, &replay);
    size_t restored = e ? 0 : store_replay_apply(qs, &replay);
    if(!e)
        e = store_commit_begin(qs->commit);
    if(e) {
        store_replay_apply(qs, &replay); /* (frees it) */
        snprintf(err, errlen, "cannot open the creation log in %s: %s", qs->dir, strerror(e));
        dapi_queries_close(qs);
        return DAPI_ERR_IO;
    }
    store_commit_set_hook(qs->commit, materialise_all, qs);
    if(restored)
        dapi_warn("store: %zu quer%s restored from the creation log (files not written before "
                  "a crash, or lost by a power loss)",
                  restored, restored == 1 ? "y" : "ies");
    DIR *d = opendir(qs->dir);
    if(!d) {
        snprintf(err, errlen, "cannot read %s: %s", qs->dir, strerror(errno));
        dapi_queries_close(qs);
        return DAPI_ERR_IO;
    }
    struct dirent *de;
    struct loading l = {qs, now_s, on_unfinished, on_progress, arg, 0, 0, 0, 0};
    size_t orphans = 0;
    uint64_t orphan_bytes = 0;
    while((de = readdir(d))) {
        if(de->d_name[0] == '.' || strlen(de->d_name) >= DAPI_SLUG_MAX)
            continue;
        if(store_pack_has(qs->pack, de->d_name)) {
            /* files a checkpoint wrote while its run's end packed it: the record wins */
            store_remove_files(qs, de->d_name);
            continue;
        }
        store_remove_orphans(qs, de->d_name, &orphans, &orphan_bytes);
        load(&l, de->d_name, store_load_one(qs, de->d_name));
    }
    closedir(d);
    store_pack_each(qs->pack, load_packed, &l);
    store_index_bulk(qs, 0);
    if(l.loaded || l.expired)
        dapi_info("store: %zu queries loaded (%zu to run again, %zu failed after crashes), %zu "
                  "expired or damaged removed",
                  l.loaded, l.rerun, l.crashed, l.expired);
    if(orphans)
        dapi_info("store: removed %zu temporary file(s) left by an interrupted run (%llu bytes)",
                  orphans, (unsigned long long)orphan_bytes);
    qs->opened = 1;
    store_compactor_start(qs);
    *out = qs;
    return DAPI_OK;
}

/* The bytes of the Nekt v1 pages kept in slug's directory (page-N.bin), which its key is
 * charged for besides its result (dapi_queries_add_bytes). */
static uint64_t kept_page_bytes(const struct dapi_queries *qs, const char *slug)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", qs->dir, slug);
    DIR *d = opendir(dir);
    if(!d)
        return 0;
    uint64_t n = 0;
    struct dirent *e;
    struct stat st;
    while((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if(strncmp(e->d_name, "page-", 5) == 0 && len > 9 &&
           strcmp(e->d_name + len - 4, ".bin") == 0 &&
           fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            n += (uint64_t)st.st_size;
    }
    closedir(d);
    return n;
}

static void load(struct loading *l, const char *slug, struct query *q)
{
    struct dapi_queries *qs = l->qs;
    int64_t now_s = l->now_s;
    size_t seen = l->loaded + l->expired + 1;
    if(l->on_progress && seen % DAPI_QUERIES_PROGRESS == 0)
        l->on_progress(l->arg, seen);
    if(!q || q->created_s + qs->retention_s <= now_s) {
        if(q)
            store_qfree(q);
        else
            dapi_warn("store: removing unreadable query %s", slug);
        store_remove_dir(qs, slug);
        l->expired++;
        return;
    }
    store_insert(qs, q);
    store_result_adopt(qs, q);
    if(q->seq > qs->seq)
        qs->seq = q->seq; /* new queries come after every loaded one */
    if(q->state != DAPI_Q_FAILED && q->state != DAPI_Q_CANCELLED)
        store_reuse_set(qs, q);
    /* (a done query has its result, never v1 pages: its directory is not read) */
    if(q->state != DAPI_Q_DONE)
        q->bytes = q->upstream ? kept_page_bytes(qs, slug) : 0;
    store_bytes_count(qs, q);
    l->loaded++;
    if(q->state == DAPI_Q_QUEUED && q->attempts >= DAPI_QUERY_MAX_ATTEMPTS) {
        /* Each run was counted before it started and none recorded an outcome: the
         * process died in every one of them. The query itself may be what kills it, so it
         * is not run a third time. */
        dapi_warn("store: query %s: the server stopped %d times while running it; "
                  "marking it failed",
                  q->slug, q->attempts);
        store_set_state(qs, q, DAPI_Q_FAILED);
        q->error = DAPI_ERR_INTERNAL;
        q->message = strdup(DAPI_QUERY_CRASH_MESSAGE);
        q->attempts = 0;
        q->finished_s = now_s;
        struct meta m = store_meta_of(q);
        store_save_meta(qs, &m,
                        0); /* (if this fails the next start decides again, the same way) */
        l->crashed++;
    }
    if(q->state == DAPI_Q_QUEUED) {
        l->rerun++;
        if(l->on_unfinished)
            l->on_unfinished(l->arg, q->slug, q->sql);
    }
}

static void load_packed(void *arg, const char *slug, const char *meta, size_t mlen,
                        const void *result, size_t rlen)
{
    struct loading *l = arg;
    load(l, slug, store_load_packed(l->qs, slug, meta, mlen, result, rlen));
}

void dapi_queries_close(struct dapi_queries *qs)
{
    if(!qs)
        return;
    store_compactor_stop(qs); /* (first: it uses the registry) */
    if(qs->opened)
        mark_clean_stop(qs);
    store_commit_close(qs->commit);
    store_pack_close(qs->pack);
    for(size_t b = 0; qs->buckets && b < qs->nbuckets; b++) {
        struct query *q = qs->buckets[b];
        while(q) {
            struct query *next = q->next;
            store_unref(q);
            q = next;
        }
    }
    free(qs->buckets);
    for(size_t b = 0; qs->reuse && b < qs->nreuse; b++)
        while(qs->reuse[b]) {
            struct reuse_ent *e = qs->reuse[b];
            qs->reuse[b] = e->next;
            free(e);
        }
    free(qs->reuse);
    for(size_t b = 0; b < NKEYBUCKETS; b++)
        while(qs->keys[b]) {
            struct keyuse *k = qs->keys[b];
            qs->keys[b] = k->next;
            store_agevec_free(&k->byseq);
            free(k);
        }
    store_agevec_free(&qs->ages);
    pthread_mutex_destroy(&qs->lock);
    free(qs->dir);
    free(qs);
}
