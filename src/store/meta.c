/* meta.json: how a query is recorded in the state dir, read back at start, and removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "base/log.h"
#include "store/queries_int.h"

static void path_of(const struct dapi_queries *qs, const char *slug, const char *file, char *out,
                    size_t n)
{
    snprintf(out, n, "%s/%s/%s", qs->dir, slug, file);
}

static const char *dir_of(const struct dapi_queries *qs, const char *slug, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", qs->dir, slug);
    return out;
}

static const char *state_name(enum dapi_qstate s)
{
    static const char *const n[] = {"queued", "running", "done", "failed", "cancelled"};
    return n[s];
}

struct meta store_meta_of(const struct query *q)
{
    struct meta m = {
        q->slug,  q->owner, q->sql,   q->upstream, q->message, q->params, q->scope, q->created_s,
        q->state, q->error, q->bytes, q->attempts, q->seq,     q->ident,  q->fp,    q->done_s,
        0,        0,        0,        0,           NULL,       NULL,      0};
    m.started_s = q->started_s;
    m.finished_s = q->finished_s;
    m.reused = q->reused;
    m.ncols = q->ncols;
    m.col_names = q->col_names;
    m.col_types = q->col_types;
    m.fresh = !atomic_load(&q->ondisk);
    return m;
}

static int write_all(int fd, const char *p, size_t n)
{
    while(n) {
        ssize_t w = write(fd, p, n);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0)
            return w < 0 ? errno : ENOSPC; /* a write of 0 bytes: the disk is full */
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* meta.json's text for m, in b (b->data NULL: out of memory). */
static void meta_text(struct dapi_buf *b, const struct meta *m)
{
    dapi_buf_addf(b, "{\"version\":1,\"slug\":\"%s\",\"owner\":\"", m->slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        dapi_buf_addf(b, "%02x", m->owner[i]);
    dapi_buf_addf(b,
                  "\",\"created\":%lld,\"seq\":%llu,\"state\":\"%s\",\"error\":%d,"
                  "\"bytes\":%llu,\"attempts\":%d,\"sql\":",
                  (long long)m->created_s, (unsigned long long)m->seq, state_name(m->state),
                  (int)m->error, (unsigned long long)m->bytes, m->attempts);
    dapi_json_str(b, m->sql, strlen(m->sql));
    dapi_buf_adds(b, ",\"upstream\":");
    dapi_json_str(b, m->upstream ? m->upstream : "", m->upstream ? strlen(m->upstream) : 0);
    dapi_buf_adds(b, ",\"message\":");
    dapi_json_str(b, m->message ? m->message : "", m->message ? strlen(m->message) : 0);
    if(m->params) { /* absent: no bound parameters (as before they existed) */
        dapi_buf_adds(b, ",\"params\":");
        dapi_json_str(b, m->params, strlen(m->params));
    }
    if(m->scope) { /* absent: every layer (as before scopes existed) */
        dapi_buf_adds(b, ",\"scope\":[");
        for(size_t i = 0; i < m->scope->n; i++) {
            if(i)
                dapi_buf_addc(b, ',');
            dapi_json_str(b, m->scope->layers[i], strlen(m->scope->layers[i]));
        }
        dapi_buf_addc(b, ']');
    }
    if(m->ident && *m->ident) /* absent: not reusable (as before reuse existed) */
        dapi_buf_addf(b, ",\"reuse\":{\"id\":\"%s\",\"fp\":\"%s\",\"data_at\":%lld}", m->ident,
                      m->fp ? m->fp : "", (long long)m->done_s);
    /* lifecycle (absent before it existed: not known) */
    dapi_buf_addf(b, ",\"started\":%lld,\"finished\":%lld,\"reused\":%s", (long long)m->started_s,
                  (long long)m->finished_s, m->reused ? "true" : "false");
    if(m->ncols && m->col_names && m->col_types) {
        dapi_buf_adds(b, ",\"columns\":[");
        for(size_t i = 0; i < m->ncols; i++) {
            dapi_buf_adds(b, i ? ",{\"name\":" : "{\"name\":");
            dapi_json_str(b, m->col_names[i], strlen(m->col_names[i]));
            dapi_buf_adds(b, ",\"type\":");
            dapi_json_str(b, m->col_types[i], strlen(m->col_types[i]));
            dapi_buf_addc(b, '}');
        }
        dapi_buf_addc(b, ']');
    }
    dapi_buf_adds(b, "}\n");
}

/* Rewrites meta.json atomically against a crash of the process (in place when that is safe,
 * else temp + rename), without fsync: the rewrites (run started, outcome, crash-loop mark) need not survive a power loss,
 * and if one is torn by it, the creation record stands in (store_load_one; docs/design.md,
 * Durability). durable: fsynced before the rename and the rename made durable too, for the
 * rare rewrites that must survive. Called without the lock held, on a snapshot of the fields.
 * Returns 0 or an errno value (ENOSPC/EDQUOT: the disk is full). */
/* m's text in b (b initialised here; freed by the caller). Returns 0 or ENOMEM. */
static int meta_buf(struct dapi_buf *b, const struct meta *m)
{
    dapi_buf_init(b, 128u << 20);
    meta_text(b, m);
    return b->data ? 0 : ENOMEM;
}

/* The first rewrite, while meta.json is still the link to created.json: the link is removed
 * and meta.json written as a file of its own. As safe as temp + rename against a crash of
 * the process — a start finds the new text, or no meta.json or a torn one, and then
 * created.json (the text the rename would have kept) stands in — and cheaper on ext4: a
 * rename over an existing name makes ext4 (auto_da_alloc) start writing the renamed file's
 * data at once, in the caller's thread. Returns 0 or an errno value. */
static int unlink_and_write(const char *path, const struct dapi_buf *b)
{
    if(unlink(path) && errno != ENOENT)
        return errno;
    int e = 0, fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if(fd < 0 || (e = write_all(fd, b->data, b->len)))
        e = e ? e : errno;
    if(fd >= 0 && close(fd) && !e)
        e = errno ? errno : EIO;
    if(e && fd >= 0)
        unlink(path); /* a half-written file must not take the space a retry needs */
    return e;
}

/* The rewrite in place, when it is as safe as temp + rename against a crash of the process:
 * meta.json is its own file (no longer the link to created.json) and old and new text fit in
 * one page, written by one pwrite at offset 0 (a write within a page is never cut by a
 * signal), padded with spaces so that the file never shrinks (JSON allows trailing space).
 * A torn write is possible only by a power loss, where created.json stands in. It spares an
 * inode per rewrite: on ext4, creating inodes while many were freed in the last seconds
 * costs more CPU than anything else here (the allocator skips recently deleted ones). While
 * meta.json is still the link to created.json: unlink_and_write. Returns 0 if done, -1 if not
 * applicable (temp + rename then), or an errno value. */
static int rewrite_in_place(const char *path, struct dapi_buf *b)
{
    enum { PAGE = 4096 };
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if(fd < 0)
        return -1;
    if(fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    if(st.st_nlink != 1) {
        close(fd);
        return unlink_and_write(path, b);
    }
    if(st.st_size > PAGE || b->len > PAGE) {
        close(fd);
        return -1;
    }
    while(b->len < (size_t)st.st_size && !dapi_buf_addc(b, ' '))
        ;
    int e = 0;
    ssize_t w = b->data && b->len >= (size_t)st.st_size ? pwrite(fd, b->data, b->len, 0) : -1;
    if(w != (ssize_t)b->len)
        e = w < 0 ? (errno ? errno : ENOMEM) : ENOSPC;
    if(close(fd) && !e)
        e = errno;
    return e;
}

/* The first meta.json of a query that has no files yet (m->fresh), written anew — its
 * directory made if its run did not (a query cancelled or failed before it ran). A crash
 * half-way leaves a torn file and no created.json: the creation log, which holds the
 * query until a checkpoint writes its files, stands in. Returns 0, -1 if a meta.json is
 * there after all (the rewrite then), or an errno value. */
static int write_first(const struct dapi_queries *qs, const char *slug, const char *path,
                       const struct dapi_buf *b)
{
    char dir[4096];
    int e = 0;
    for(int again = 1;; again = 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if(fd < 0 && errno == ENOENT && again) {
            if(mkdir(dir_of(qs, slug, dir, sizeof dir), 0700) && errno != EEXIST)
                return errno;
            continue;
        }
        if(fd < 0)
            return errno == EEXIST ? -1 : errno;
        e = write_all(fd, b->data, b->len);
        if(close(fd) && !e)
            e = errno ? errno : EIO;
        if(e)
            unlink(path); /* a half-written file must not take the space a retry needs */
        return e;
    }
}

int store_save_meta(const struct dapi_queries *qs, const struct meta *m, int durable)
{
    struct dapi_buf b;
    if(meta_buf(&b, m))
        return ENOMEM;
    char path[4096], tmp[4200];
    path_of(qs, m->slug, "meta.json", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int e = durable ? -1 : m->fresh ? write_first(qs, m->slug, path, &b) : -1;
    if(e < 0 && !durable)
        e = rewrite_in_place(path, &b);
    if(e >= 0) {
        if(e)
            dapi_error("store: cannot write %s: %s", path, strerror(e));
        dapi_buf_free(&b);
        return e;
    }
    char dir[4096];
    if(m->fresh && mkdir(dir_of(qs, m->slug, dir, sizeof dir), 0700) && errno != EEXIST) {
        e = errno;
        dapi_buf_free(&b);
        return e;
    }
    e = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(fd < 0 || (e = write_all(fd, b.data, b.len)) || (durable && fsync(fd))) {
        e = e ? e : errno;
        dapi_error("store: cannot write %s: %s", tmp, strerror(e));
    }
    if(fd >= 0 && close(fd) && !e)
        e = errno ? errno : EIO;
    if(e)
        unlink(tmp); /* a half-written file must not take the space a retry needs */
    if(!e && rename(tmp, path)) {
        e = errno;
        dapi_error("store: cannot rename %s: %s", tmp, strerror(e));
    }
    if(!e && durable) { /* the new name too */
        int dfd = open(dir_of(qs, m->slug, path, sizeof path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        e = dfd < 0 || fsync(dfd) ? errno : 0;
        if(dfd >= 0)
            close(dfd);
        if(!e && m->fresh) { /* and the directory's own name, new too */
            dfd = open(qs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            e = dfd < 0 || fsync(dfd) ? errno : 0;
            if(dfd >= 0)
                close(dfd);
        }
    }
    dapi_buf_free(&b);
    return e;
}

/* created.json (never rewritten: what stands in for a torn meta.json) and meta.json, a hard
 * link to it that later rewrites replace, in the query's directory (made by the caller).
 * keep: either file already there is kept (a created.json an earlier checkpoint wrote, a
 * meta.json the run's end wrote meanwhile) — nothing is replaced. */
static int write_created(const struct dapi_queries *qs, const char *slug, const char *text,
                         size_t len, int keep)
{
    char path[4096], rec[4096];
    path_of(qs, slug, "meta.json", path, sizeof path);
    path_of(qs, slug, "created.json", rec, sizeof rec);
    int e = 0, fd = open(rec, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if(fd < 0 && keep && errno == EEXIST)
        return 0;
    if(fd < 0 || (e = write_all(fd, text, len)))
        e = e ? e : errno;
    if(fd >= 0 && close(fd) && !e)
        e = errno ? errno : EIO;
    if(e && fd >= 0)
        unlink(rec); /* a half-written file must not take the space a retry needs */
    if(!e && link(rec, path) && !(keep && errno == EEXIST))
        e = errno;
    if(e)
        dapi_error("store: cannot write %s: %s", rec, strerror(e));
    return e;
}

/* Records a new query durably before its creation is answered, in the creation log, made
 * durable by a group commit (store/commit.h). Its files are written later (the first meta.json
 * write, when its run ends, or a checkpoint: store_materialise), not here: a query that runs at
 * once then costs its directory, meta.json and result only — on ext4 each new inode counts.
 * With files (a reused result linked into a directory the caller made): created.json and its
 * link meta.json now, not fsynced (the log record covers them until a checkpoint's syncfs).
 * ticket NULL: returns once durable; else returns at once with the record's ticket (for
 * store_commit_when). Returns 0 or an errno value. */
int store_record_meta(const struct dapi_queries *qs, const struct meta *m, uint64_t *ticket,
                      int files)
{
    struct dapi_buf b;
    if(meta_buf(&b, m))
        return ENOMEM;
    int e = files ? write_created(qs, m->slug, b.data, b.len, 0) : 0;
    if(!e && (e = store_commit_add(qs->commit, STORE_REC_CREATED, b.data, b.len, !ticket, ticket)))
        dapi_error("store: cannot make the new query %s durable: %s", m->slug, strerror(e));
    dapi_buf_free(&b);
    return e;
}

int store_pack_meta(const struct dapi_queries *qs, const struct meta *m, const void *image,
                    size_t len, struct dapi_result **mapped)
{
    struct dapi_buf b;
    int e = meta_buf(&b, m);
    if(!e)
        e = store_pack_put(qs->pack, m->slug, b.data, b.len, image, len, mapped);
    if(e)
        dapi_error("store: cannot record query %s: %s", m->slug, strerror(e));
    dapi_buf_free(&b);
    return e;
}

/* A record moved by compaction: its query reads its result from the new place (the old
 * file's blocks are freed once no reader maps them). A query whose result is no longer this
 * one (removed, or recorded again meanwhile) keeps its own. */
static void pack_moved(void *arg, const char *slug, struct dapi_result *r)
{
    struct dapi_queries *qs = arg;
    pthread_mutex_lock(&qs->lock);
    struct query *q = store_find(qs, slug);
    if(q && q->result && r && dapi_result_id(q->result) == dapi_result_id(r)) {
        struct dapi_result *old = q->result;
        q->result = r;
        r = old;
    }
    pthread_mutex_unlock(&qs->lock);
    dapi_result_close(r);
}

/* Compacts one pack file: > 0 if one was, 0 if none is sparse, < 0 if that failed. */
static int64_t compact_one(struct dapi_queries *qs)
{
    int64_t freed = store_pack_compact(qs->pack, pack_moved, qs);
    if(freed > 0)
        dapi_info("store: a pack file of small results compacted: %lld bytes freed",
                  (long long)freed);
    else if(freed < 0)
        dapi_warn("store: a compaction of the small results' pack files failed (tried again "
                  "in 10 s): %s",
                  strerror((int)-freed));
    return freed;
}

static void *compactor(void *arg)
{
    struct dapi_queries *qs = arg;
    pthread_mutex_lock(&qs->compact_mu);
    while(!qs->compact_stop) {
        if(!qs->compact_want) {
            pthread_cond_wait(&qs->compact_cond, &qs->compact_mu);
            continue;
        }
        qs->compact_want = 0;
        int64_t r = 1;
        while(r > 0 && !qs->compact_stop) {
            pthread_mutex_unlock(&qs->compact_mu);
            r = compact_one(qs);
            pthread_mutex_lock(&qs->compact_mu);
        }
        if(r < 0) { /* (a full disk: not every tick) */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 10;
            while(!qs->compact_stop &&
                  pthread_cond_timedwait(&qs->compact_cond, &qs->compact_mu, &until) == 0)
                ;
            qs->compact_want = 1;
        }
    }
    pthread_mutex_unlock(&qs->compact_mu);
    return NULL;
}

void store_compactor_start(struct dapi_queries *qs)
{
    pthread_mutex_init(&qs->compact_mu, NULL);
    pthread_cond_init(&qs->compact_cond, NULL);
    qs->compact_want = 1; /* (files a crash or a stop left sparse) */
    if(qs->pack && pthread_create(&qs->compactor, NULL, compactor, qs) == 0)
        qs->compact_started = 1;
    else if(qs->pack)
        dapi_warn("store: no thread to compact the pack files: they are not compacted");
}

void store_compactor_wake(struct dapi_queries *qs)
{
    if(!qs->compact_started || !store_pack_sparse(qs->pack))
        return;
    pthread_mutex_lock(&qs->compact_mu);
    qs->compact_want = 1;
    pthread_cond_signal(&qs->compact_cond);
    pthread_mutex_unlock(&qs->compact_mu);
}

void store_compactor_stop(struct dapi_queries *qs)
{
    if(!qs->compact_started)
        return;
    pthread_mutex_lock(&qs->compact_mu);
    qs->compact_stop = 1;
    pthread_cond_signal(&qs->compact_cond);
    pthread_mutex_unlock(&qs->compact_mu);
    pthread_join(qs->compactor, NULL);
    qs->compact_started = 0;
}

/* Writes a result kept in memory to the file at rp (when the query cannot be packed). */
int store_write_image(const char *rp, const void *image, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", rp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = fd < 0 ? errno : write_all(fd, image, len);
    if(fd >= 0 && close(fd) && !e)
        e = errno;
    if(!e && rename(tmp, rp))
        e = errno;
    if(e)
        unlink(tmp);
    return e;
}

/* Whether q's outcome may be packed (store/pack.h): its result is in memory and q has no
 * files (its directory does not exist: no run wrote one, no checkpoint gave it created.json).
 * Its persist lock held. */
int store_packable(const struct dapi_queries *qs, struct query *q, enum dapi_err error,
                   const void *image)
{
    char dir[4096];
    struct stat st;
    if(!qs->pack || atomic_load(&q->ondisk) || error || !image)
        return 0;
    snprintf(dir, sizeof dir, "%s/%s", qs->dir, q->slug);
    return lstat(dir, &st) != 0 && errno == ENOENT;
}

int store_room(const struct dapi_queries *qs)
{
    enum { NEED = 16384 }; /* its directory, meta.json and created.json: a block each */
    struct statvfs v;
    if(statvfs(qs->dir, &v))
        return 0; /* (cannot tell: the writes will) */
    if((uint64_t)v.f_bavail * v.f_frsize < NEED || (v.f_files && v.f_favail < 3))
        return ENOSPC;
    return 0;
}

int store_log_meta(const struct dapi_queries *qs, const struct meta *m)
{
    struct dapi_buf b;
    int e = meta_buf(&b, m);
    if(!e)
        e = store_commit_add(qs->commit, STORE_REC_CREATED, b.data, b.len, 0, NULL);
    dapi_buf_free(&b);
    return e;
}

/* Writes created.json and meta.json from text in slug's directory (made if needed); anew
 * replaces what a crash or a failed write left there, else nothing is replaced. */
static int write_created_in(const struct dapi_queries *qs, const char *slug, const char *text,
                            size_t len, int anew)
{
    char p[4096];
    int e = mkdir(dir_of(qs, slug, p, sizeof p), 0700) && errno != EEXIST ? errno : 0;
    if(!e && anew) {
        path_of(qs, slug, "meta.json", p, sizeof p);
        unlink(p);
        path_of(qs, slug, "created.json", p, sizeof p);
        unlink(p);
    }
    return e ? e : write_created(qs, slug, text, len, !anew);
}

int store_materialise(const struct dapi_queries *qs, const struct meta *m)
{
    struct dapi_buf b;
    int e = meta_buf(&b, m);
    if(!e)
        e = write_created_in(qs, m->slug, b.data, b.len, 0);
    dapi_buf_free(&b);
    return e;
}

/* The error a failed write of the state dir means for a client: no space (or quota) is
 * temporary — DAPI_ERR_BUSY, retry later; anything else is a storage error. why names the
 * setting, not the path (paths are the operator's business). */
enum dapi_err store_storage_error(int e, const char *what, char *why, size_t n)
{
    if(e == ENOMEM)
        return DAPI_ERR_NOMEM;
    int full = e == ENOSPC || e == EDQUOT;
    if(why && n)
        snprintf(why, n, "%s %s: %s",
                 full ? "no space left on the state disk (--state-dir)"
                      : "cannot write to the state dir (--state-dir)",
                 what, strerror(e));
    return full ? DAPI_ERR_BUSY : DAPI_ERR_IO;
}

void store_remove_files(const struct dapi_queries *qs, const char *slug)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", qs->dir, slug);
    DIR *d = opendir(p);
    struct dirent *de;
    while(d && (de = readdir(d))) {
        if(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char f[4400];
        snprintf(f, sizeof f, "%s/%s", p, de->d_name);
        unlink(f);
    }
    if(d)
        closedir(d);
    if(rmdir(p) && errno != ENOENT)
        dapi_warn("store: cannot remove %s: %s", p, strerror(errno));
}

void store_remove_dir(const struct dapi_queries *qs, const char *slug)
{
    store_remove_files(qs, slug);
    if(qs->pack)
        store_pack_remove(qs->pack, slug, 0);
    /* so that a start after a power loss does not restore it from the creation log (not
     * waited for: a removal was never durable at once) */
    if(qs->commit)
        store_commit_add(qs->commit, STORE_REC_REMOVED, slug, strlen(slug), 0, NULL);
}

/* ---- restoring from the creation log at start ---- */

void store_replay_record(void *arg, enum store_rec kind, const char *data, size_t len)
{
    struct replay *r = arg;
    char slug[DAPI_SLUG_MAX] = "";
    if(kind == STORE_REC_REMOVED) {
        if(len >= sizeof slug)
            return;
        memcpy(slug, data, len);
    } else {
        struct dapi_jv *root = NULL;
        char errbuf[128];
        if(dapi_jv_parse(data, len, 8, &root, errbuf, sizeof errbuf))
            return;
        const char *s = dapi_jv_str(dapi_jv_get(root, "slug"), NULL);
        if(s && strlen(s) < sizeof slug && !strchr(s, '/') && s[0] != '.')
            snprintf(slug, sizeof slug, "%s", s);
        dapi_jv_free(root);
    }
    if(!slug[0])
        return;
    for(size_t i = 0; i < r->n; i++)
        if(r->v[i].text && strcmp(r->v[i].slug, slug) == 0) {
            free(r->v[i].text); /* removed (or recorded again): the older record is void */
            r->v[i].text = NULL;
        }
    if(kind == STORE_REC_REMOVED)
        return;
    if(r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        struct replayed *v = realloc(r->v, cap * sizeof *v);
        if(!v)
            return;
        r->v = v;
        r->cap = cap;
    }
    if((r->v[r->n].text = malloc(len))) {
        memcpy(r->v[r->n].text, data, len);
        r->v[r->n].len = len;
        snprintf(r->v[r->n].slug, sizeof r->v[r->n].slug, "%s", slug);
        r->n++;
    }
}

size_t store_replay_apply(struct dapi_queries *qs, struct replay *r)
{
    size_t restored = 0;
    for(size_t i = 0; i < r->n; i++) {
        if(!r->v[i].text)
            continue;
        int packed = store_pack_has(qs->pack, r->v[i].slug);
        struct query *q = packed ? NULL : store_load_one(qs, r->v[i].slug);
        if(q || packed) { /* on disk as it should be */
            if(q)
                store_qfree(q);
        } else {
            /* Its creation was answered, its files did not survive (or were never
             * written): written again from the record (made durable by the checkpoint that
             * follows). */
            if(write_created_in(qs, r->v[i].slug, r->v[i].text, r->v[i].len, 1) == 0)
                restored++;
            else
                dapi_warn("store: cannot restore %s", r->v[i].slug);
        }
        free(r->v[i].text);
    }
    free(r->v);
    memset(r, 0, sizeof *r);
    return restored;
}

/* Files a run writes and then renames or deletes itself: result.bin.tmp-*, meta.json.tmp,
 * a v1 page's .bin.tmp-*, and the Parquet files downloaded from Nekt before they become a
 * result. At start nothing writes them, so any one found is left by a crash. */
static int orphan_name(const char *name)
{
    size_t n = strlen(name);
    return strstr(name, ".tmp") != NULL || (n > 8 && strcmp(name + n - 8, ".parquet") == 0);
}

void store_remove_orphans(const struct dapi_queries *qs, const char *slug, size_t *files,
                          uint64_t *bytes)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", qs->dir, slug);
    DIR *d = opendir(p);
    struct dirent *de;
    while(d && (de = readdir(d))) {
        if(!orphan_name(de->d_name))
            continue;
        char f[4400];
        struct stat st;
        snprintf(f, sizeof f, "%s/%s", p, de->d_name);
        if(lstat(f, &st) || !S_ISREG(st.st_mode))
            continue;
        if(unlink(f) == 0) {
            (*files)++;
            *bytes += (uint64_t)st.st_size;
        } else {
            dapi_warn("store: cannot remove %s: %s", f, strerror(errno));
        }
    }
    if(d)
        closedir(d);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int64_t int_or_0(const struct dapi_jv *v)
{
    return v && dapi_jv_type(v) == DAPI_J_INT && dapi_jv_int(v) > 0 ? dapi_jv_int(v) : 0;
}

/* Times, reuse and columns: absent or unreadable means not known (older state dirs). */
static void load_lifecycle(struct query *q, const struct dapi_jv *root)
{
    q->started_s = int_or_0(dapi_jv_get(root, "started"));
    q->finished_s = int_or_0(dapi_jv_get(root, "finished"));
    q->reused = dapi_jv_type(dapi_jv_get(root, "reused")) == DAPI_J_TRUE;
    const struct dapi_jv *cols = dapi_jv_get(root, "columns");
    size_t n = cols && dapi_jv_type(cols) == DAPI_J_ARRAY ? dapi_jv_array_size(cols) : 0;
    if(!n || !(q->col_names = calloc(n, sizeof *q->col_names)) ||
       !(q->col_types = calloc(n, sizeof *q->col_types))) {
        store_columns_clear(q);
        return;
    }
    q->ncols = n;
    for(size_t i = 0; i < n; i++) {
        const struct dapi_jv *c = dapi_jv_index(cols, i);
        const char *name = dapi_jv_str(dapi_jv_get(c, "name"), NULL);
        const char *type = dapi_jv_str(dapi_jv_get(c, "type"), NULL);
        if(!name || !type || !(q->col_names[i] = strdup(name)) ||
           !(q->col_types[i] = strdup(type))) {
            store_columns_clear(q);
            return;
        }
    }
}

/* A query from its recorded text (meta.json, created.json or a pack record); NULL if
 * damaged. packed: the query is a pack record, whose result (if done) is the rlen bytes at
 * image: checked here for its shape, and mapped only when first used (store_result). */
static struct query *parse(struct dapi_queries *qs, const char *slug, const char *text, size_t len,
                           int packed, const void *image, size_t rlen)
{
    char errbuf[256];
    struct query *q = NULL;
    struct dapi_jv *root = NULL;
    if(dapi_jv_parse(text, len, 8, &root, errbuf, sizeof errbuf))
        goto out;
    const char *owner = dapi_jv_str(dapi_jv_get(root, "owner"), NULL);
    const char *sql = dapi_jv_str(dapi_jv_get(root, "sql"), NULL);
    const char *state = dapi_jv_str(dapi_jv_get(root, "state"), NULL);
    const char *msg = dapi_jv_str(dapi_jv_get(root, "message"), NULL);
    const char *upstream = dapi_jv_str(dapi_jv_get(root, "upstream"), NULL);
    const char *params = dapi_jv_str(dapi_jv_get(root, "params"), NULL);
    struct dapi_jv *created = dapi_jv_get(root, "created"), *err = dapi_jv_get(root, "error"),
                   *bytes = dapi_jv_get(root, "bytes"), *attempts = dapi_jv_get(root, "attempts"),
                   *seq = dapi_jv_get(root, "seq");
    if(!owner || strlen(owner) != 2 * DAPI_KEY_HASH_LEN || !sql || !state || !created ||
       dapi_jv_type(created) != DAPI_J_INT || !err || dapi_jv_type(err) != DAPI_J_INT)
        goto out;
    if(!(q = calloc(1, sizeof *q)))
        goto out;
    pthread_mutex_init(&q->persist, NULL);
    atomic_store(&q->ondisk, 1);
    snprintf(q->slug, sizeof q->slug, "%s", slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++) {
        int hi = hexval(owner[2 * i]), lo = hexval(owner[2 * i + 1]);
        if(hi < 0 || lo < 0) {
            store_qfree(q);
            q = NULL;
            goto out;
        }
        q->owner[i] = (unsigned char)(hi << 4 | lo);
    }
    /* The layers it may read: a query resumed after a restart runs with the scope it was
     * created with. A "scope" that cannot be read makes the query damaged (never "all"). */
    const struct dapi_jv *scope = dapi_jv_get(root, "scope");
    if(scope) {
        size_t n = dapi_jv_array_size(scope);
        if(dapi_jv_type(scope) != DAPI_J_ARRAY || n > DAPI_SCOPE_MAX_LAYERS ||
           !(q->scope = calloc(1, sizeof *q->scope))) {
            store_qfree(q);
            q = NULL;
            goto out;
        }
        for(size_t i = 0; i < n; i++) {
            const char *l = dapi_jv_str(dapi_jv_index(scope, i), NULL);
            if(!l || !*l || strlen(l) > DAPI_LAYER_NAME_MAX) {
                store_qfree(q);
                q = NULL;
                goto out;
            }
            snprintf(q->scope->layers[i], sizeof q->scope->layers[i], "%s", l);
        }
        q->scope->n = n;
    }
    const struct dapi_jv *reuse = dapi_jv_get(root, "reuse");
    if(reuse && dapi_jv_type(reuse) == DAPI_J_OBJECT) {
        const char *id = dapi_jv_str(dapi_jv_get(reuse, "id"), NULL);
        const char *fp = dapi_jv_str(dapi_jv_get(reuse, "fp"), NULL);
        struct dapi_jv *at = dapi_jv_get(reuse, "data_at");
        if(id && fp && strlen(id) < DAPI_REUSE_HEX && strlen(fp) < DAPI_REUSE_HEX && at &&
           dapi_jv_type(at) == DAPI_J_INT) {
            snprintf(q->ident, sizeof q->ident, "%s", id);
            snprintf(q->fp, sizeof q->fp, "%s", fp);
            q->done_s = dapi_jv_int(at);
        }
    }
    load_lifecycle(q, root);
    q->sql = strdup(sql);
    q->message = msg && *msg ? strdup(msg) : NULL;
    q->upstream = upstream && *upstream ? strdup(upstream) : NULL;
    q->params = params && *params ? strdup(params) : NULL;
    q->created_s = dapi_jv_int(created);
    q->error = (enum dapi_err)dapi_jv_int(err);
    q->bytes = bytes && dapi_jv_type(bytes) == DAPI_J_INT ? (uint64_t)dapi_jv_int(bytes) : 0;
    /* absent before the crash-loop guard existed: no attempt recorded */
    q->attempts = attempts && dapi_jv_type(attempts) == DAPI_J_INT && dapi_jv_int(attempts) > 0 &&
                          dapi_jv_int(attempts) < 1000
                      ? (int)dapi_jv_int(attempts)
                      : 0;
    q->seq = seq && dapi_jv_type(seq) == DAPI_J_INT && dapi_jv_int(seq) > 0
                 ? (uint64_t)dapi_jv_int(seq)
                 : 0; /* (older state dirs: 0, the slug breaks ties) */
    if(strcmp(state, "done") == 0) {
        q->state = DAPI_Q_DONE;
        char rp[4096];
        dapi_queries_result_path(qs, slug, rp, sizeof rp);
        /* After an unclean stop the file may be torn (results are not fsynced): whole files
         * only, by their checksum. (A pack record's checksum covers its result.) */
        if(packed ? dapi_result_check(image, rlen, &q->rows, &q->pages) != DAPI_OK
                  : dapi_result_open(&q->result, rp) ||
                        (!qs->clean && dapi_result_verify(q->result))) {
            /* meta says done but the file is missing or damaged: run it again */
            dapi_result_close(q->result);
            q->result = NULL;
            dapi_warn("store: result of %s is damaged; running the query again", slug);
            q->state = DAPI_Q_QUEUED;
            q->bytes = 0;
        } else if(packed) {
            q->shape_known = 1;
        }
    } else if(strcmp(state, "failed") == 0) {
        q->state = DAPI_Q_FAILED;
    } else if(strcmp(state, "cancelled") == 0) {
        q->state = DAPI_Q_CANCELLED; /* never run again */
    } else {
        q->state = DAPI_Q_QUEUED;
    }
    if(!q->sql) {
        store_qfree(q);
        q = NULL;
    }
out:
    dapi_jv_free(root);
    return q;
}

/* Loads one stored query from its file (meta.json or created.json); NULL if damaged. */
static struct query *load_from(struct dapi_queries *qs, const char *slug, const char *file)
{
    char path[4096];
    path_of(qs, slug, file, path, sizeof path);
    struct dapi_buf b;
    dapi_buf_init(&b, 128u << 20);
    struct query *q = NULL;
    if(!dapi_buf_add_file(&b, path) && b.data)
        q = parse(qs, slug, b.data, b.len, 0, NULL, 0);
    dapi_buf_free(&b);
    return q;
}

struct query *store_load_packed(struct dapi_queries *qs, const char *slug, const char *meta,
                                size_t mlen, const void *result, size_t rlen)
{
    return parse(qs, slug, meta, mlen, 1, result, rlen);
}

/* Loads one stored query; returns NULL (the caller removes the directory) if it is damaged.
 * A meta.json a power loss left torn (it is rewritten without fsync) gives way to the
 * creation record, which was made durable before the creation was answered: the query is
 * then queued and runs again. */
struct query *store_load_one(struct dapi_queries *qs, const char *slug)
{
    struct query *q = load_from(qs, slug, "meta.json");
    if(q)
        return q;
    if((q = load_from(qs, slug, "created.json")))
        dapi_warn("store: meta.json of %s is missing or damaged; using its creation record", slug);
    return q;
}
