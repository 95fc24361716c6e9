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

#include "base/buf.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "base/log.h"

struct waiter {
    void (*cb)(void *arg, int timed_out);
    void *arg;
    int64_t deadline_ms;
    struct waiter *next;
};

struct query {
    char slug[DAPI_SLUG_MAX];
    unsigned char owner[DAPI_KEY_HASH_LEN];
    char *sql;
    char *upstream;
    struct dapi_scope *scope; /* the layers it may read (NULL: every layer); never changes */
    int64_t created_s;
    enum dapi_qstate state;
    enum dapi_err error;
    char *message;
    uint64_t bytes;
    struct dapi_result *result; /* DONE: mapped lazily */
    int refs;                   /* registry's own + snapshots */
    int attempts;               /* runs started whose outcome is not recorded (meta.json) */
    int in_run;                 /* one of them is going on in this process */
    int holds;                  /* holds an admission slot of its owner */
    uint64_t seq;               /* registration order (persisted): ties of created_s */
    /* Result reuse (persisted): the identity of what it computes (hex; "" = never reused),
     * the lake fingerprint it was created against, and when its result's data was read
     * (creation of the query that ran it: a reused result keeps the original time). */
    char ident[DAPI_REUSE_HEX];
    char fp[DAPI_REUSE_HEX];
    int64_t done_s;
    char leader[DAPI_SLUG_MAX]; /* in memory only: waits for this query's run (single-flight) */
    /* Serialises this query's meta.json rewrites (they share meta.json.tmp and must land in
     * order); other queries' are written in parallel: each run writes twice (start, end), so
     * one lock for all would bound the whole server's run rate by the disk's fsync time. */
    pthread_mutex_t persist;
    struct waiter *waiters;
    struct query *next; /* hash chain */
};

/* What one key uses of what keys share: admission slots and stored bytes. An entry exists
 * only while one of them is non-zero, so keys presented once (forwarded to Nekt, unchecked)
 * cost nothing afterwards. */
struct keyuse {
    unsigned char key[DAPI_KEY_HASH_LEN];
    uint64_t active, bytes;
    struct keyuse *next;
};

#define NBUCKETS 4096
#define NKEYBUCKETS 256
#define NREUSEBUCKETS 1024

/* The newest query holding (or computing) a result of each identity. Entries whose query is
 * gone are dropped when met (lookup) and at each tick. */
struct reuse_ent {
    char ident[DAPI_REUSE_HEX];
    char slug[DAPI_SLUG_MAX];
    struct reuse_ent *next;
};

struct dapi_queries {
    pthread_mutex_t lock;
    char *dir; /* <state>/queries */
    int64_t retention_s;
    uint64_t max_bytes, bytes;
    struct dapi_queries_limits lim;
    uint64_t active, seq;
    struct query *buckets[NBUCKETS];
    struct keyuse *keys[NKEYBUCKETS];
    struct reuse_ent *reuse[NREUSEBUCKETS];
    uint64_t nfollow; /* queries waiting for another's run (single-flight) */
};

static void fire(struct waiter *w, int timed_out);
static void settle_followers(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                             const char *message, uint64_t bytes);

/* Slugs of deleted queries whose directories are removed once the lock is released. */
struct slugs {
    char (*v)[DAPI_SLUG_MAX];
    size_t n, cap;
};

static unsigned bucket(const char *slug)
{
    uint32_t h = 2166136261u;
    for(const unsigned char *p = (const unsigned char *)slug; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NBUCKETS;
}

static struct query *find(struct dapi_queries *qs, const char *slug)
{
    for(struct query *q = qs->buckets[bucket(slug)]; q; q = q->next)
        if(strcmp(q->slug, slug) == 0)
            return q;
    return NULL;
}

/* ---- the reuse index (under the lock) ------------------------------------------------ */

static unsigned rbucket(const char *ident)
{
    uint32_t h = 2166136261u;
    for(const unsigned char *p = (const unsigned char *)ident; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NREUSEBUCKETS;
}

/* Makes q the query of its identity (the newest registered wins). */
static void reuse_set(struct dapi_queries *qs, const struct query *q)
{
    if(!q->ident[0])
        return;
    struct reuse_ent **head = &qs->reuse[rbucket(q->ident)];
    for(struct reuse_ent *e = *head; e; e = e->next)
        if(strcmp(e->ident, q->ident) == 0) {
            struct query *old = find(qs, e->slug);
            if(!old || old->seq <= q->seq)
                snprintf(e->slug, sizeof e->slug, "%s", q->slug);
            return;
        }
    struct reuse_ent *e = calloc(1, sizeof *e);
    if(!e)
        return; /* (not reused: it simply runs) */
    snprintf(e->ident, sizeof e->ident, "%s", q->ident);
    snprintf(e->slug, sizeof e->slug, "%s", q->slug);
    e->next = *head;
    *head = e;
}

/* The query of ident, or NULL (an entry whose query is gone is dropped). */
static struct query *reuse_find(struct dapi_queries *qs, const char *ident)
{
    for(struct reuse_ent **ep = &qs->reuse[rbucket(ident)]; *ep; ep = &(*ep)->next) {
        struct reuse_ent *e = *ep;
        if(strcmp(e->ident, ident) != 0)
            continue;
        struct query *q = find(qs, e->slug);
        if(!q) {
            /* Its holder was deleted (expired, evicted, removed): another slug may still
             * share the result — the newest such, found by a scan (only then). */
            for(size_t i = 0; i < NBUCKETS; i++)
                for(struct query *c = qs->buckets[i]; c; c = c->next)
                    if(strcmp(c->ident, ident) == 0 && !c->leader[0] &&
                       c->state != DAPI_Q_FAILED && (!q || c->seq > q->seq))
                        q = c;
            if(q) {
                snprintf(e->slug, sizeof e->slug, "%s", q->slug);
            } else {
                *ep = e->next;
                free(e);
            }
        }
        return q;
    }
    return NULL;
}

/* Entries whose holder is gone move to another slug sharing the result, or go. */
static void reuse_prune(struct dapi_queries *qs)
{
    for(size_t b = 0; b < NREUSEBUCKETS; b++)
        for(struct reuse_ent *e = qs->reuse[b], *next; e; e = next) {
            next = e->next;
            if(!find(qs, e->slug))
                reuse_find(qs, e->ident); /* (may free e) */
        }
}

static void qfree(struct query *q)
{
    pthread_mutex_destroy(&q->persist);
    dapi_result_close(q->result);
    free(q->sql);
    free(q->upstream);
    free(q->scope);
    free(q->message);
    free(q);
}

static void unref(struct query *q)
{
    if(--q->refs == 0)
        qfree(q);
}

/* ---- per-key use (under the lock) ---------------------------------------------------- */

static struct keyuse *key_get(struct dapi_queries *qs, const unsigned char *key, int create)
{
    struct keyuse **kp = &qs->keys[key[0] % NKEYBUCKETS]; /* SHA-256: uniform bytes */
    for(struct keyuse *k = *kp; k; k = k->next)
        if(memcmp(k->key, key, DAPI_KEY_HASH_LEN) == 0)
            return k;
    struct keyuse *k = create ? calloc(1, sizeof *k) : NULL;
    if(k) {
        memcpy(k->key, key, DAPI_KEY_HASH_LEN);
        k->next = *kp;
        *kp = k;
    }
    return k;
}

/* Frees k once it counts nothing. */
static void key_put(struct dapi_queries *qs, struct keyuse *k)
{
    if(!k || k->active || k->bytes)
        return;
    for(struct keyuse **kp = &qs->keys[k->key[0] % NKEYBUCKETS]; *kp; kp = &(*kp)->next)
        if(*kp == k) {
            *kp = k->next;
            free(k);
            return;
        }
}

static void slot_give_back(struct dapi_queries *qs, const unsigned char *key)
{
    struct keyuse *k = key_get(qs, key, 0);
    if(k && k->active)
        k->active--;
    if(qs->active)
        qs->active--;
    key_put(qs, k);
}

static void slot_release(struct dapi_queries *qs, struct query *q)
{
    if(q->holds) {
        q->holds = 0;
        slot_give_back(qs, q->owner);
    }
}

/* Takes a slot for q's owner whatever the limits. */
static void slot_take(struct dapi_queries *qs, struct query *q)
{
    struct keyuse *k;
    if(q->holds || !(k = key_get(qs, q->owner, 1)))
        return; /* (without memory for the entry the query is simply not counted) */
    k->active++;
    qs->active++;
    q->holds = 1;
}

static void bytes_add(struct dapi_queries *qs, struct query *q, uint64_t bytes)
{
    struct keyuse *k = key_get(qs, q->owner, 1);
    q->bytes = bytes;
    qs->bytes += bytes;
    if(k)
        k->bytes += bytes;
}

static void bytes_sub(struct dapi_queries *qs, struct query *q)
{
    struct keyuse *k = key_get(qs, q->owner, 0);
    qs->bytes -= q->bytes < qs->bytes ? q->bytes : qs->bytes;
    if(k) {
        k->bytes -= q->bytes < k->bytes ? q->bytes : k->bytes;
        key_put(qs, k);
    }
    q->bytes = 0;
}

static uint64_t key_bytes(struct dapi_queries *qs, const unsigned char *key)
{
    struct keyuse *k = key_get(qs, key, 0);
    return k ? k->bytes : 0;
}

static int slugs_add(struct slugs *s, const char *slug)
{
    if(s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        void *p = realloc(s->v, cap * sizeof *s->v);
        if(!p)
            return -1;
        s->v = p;
        s->cap = cap;
    }
    snprintf(s->v[s->n++], DAPI_SLUG_MAX, "%s", slug);
    return 0;
}

static void path_of(const struct dapi_queries *qs, const char *slug, const char *file, char *out,
                    size_t n)
{
    snprintf(out, n, "%s/%s/%s", qs->dir, slug, file);
}

void dapi_queries_result_path(const struct dapi_queries *qs, const char *slug, char *out,
                              size_t outlen)
{
    path_of(qs, slug, "result.bin", out, outlen);
}

static const char *state_name(enum dapi_qstate s)
{
    static const char *const n[] = {"queued", "running", "done", "failed"};
    return n[s];
}

/* What meta.json holds: a snapshot of a query's fields. */
struct meta {
    const char *slug;
    const unsigned char *owner;
    const char *sql, *upstream, *message;
    const struct dapi_scope *scope;
    int64_t created_s;
    enum dapi_qstate state;
    enum dapi_err error;
    uint64_t bytes;
    int attempts;
    uint64_t seq;
    const char *ident, *fp;
    int64_t done_s;
};

static struct meta meta_of(const struct query *q)
{
    struct meta m = {q->slug,     q->owner,     q->sql,   q->upstream, q->message,
                     q->scope,    q->created_s, q->state, q->error,    q->bytes,
                     q->attempts, q->seq,       q->ident, q->fp,       q->done_s};
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

/* Writes meta.json atomically (temp + fsync + rename). Called without the lock held, on a
 * snapshot of the fields. Returns 0 or an errno value (ENOSPC/EDQUOT: the disk is full). */
static int save_meta(const struct dapi_queries *qs, const struct meta *m)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 128u << 20);
    dapi_buf_addf(&b, "{\"version\":1,\"slug\":\"%s\",\"owner\":\"", m->slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        dapi_buf_addf(&b, "%02x", m->owner[i]);
    dapi_buf_addf(&b,
                  "\",\"created\":%lld,\"seq\":%llu,\"state\":\"%s\",\"error\":%d,"
                  "\"bytes\":%llu,\"attempts\":%d,\"sql\":",
                  (long long)m->created_s, (unsigned long long)m->seq, state_name(m->state),
                  (int)m->error, (unsigned long long)m->bytes, m->attempts);
    dapi_json_str(&b, m->sql, strlen(m->sql));
    dapi_buf_adds(&b, ",\"upstream\":");
    dapi_json_str(&b, m->upstream ? m->upstream : "", m->upstream ? strlen(m->upstream) : 0);
    dapi_buf_adds(&b, ",\"message\":");
    dapi_json_str(&b, m->message ? m->message : "", m->message ? strlen(m->message) : 0);
    if(m->scope) { /* absent: every layer (as before scopes existed) */
        dapi_buf_adds(&b, ",\"scope\":[");
        for(size_t i = 0; i < m->scope->n; i++) {
            if(i)
                dapi_buf_addc(&b, ',');
            dapi_json_str(&b, m->scope->layers[i], strlen(m->scope->layers[i]));
        }
        dapi_buf_addc(&b, ']');
    }
    if(m->ident && *m->ident) /* absent: not reusable (as before reuse existed) */
        dapi_buf_addf(&b, ",\"reuse\":{\"id\":\"%s\",\"fp\":\"%s\",\"data_at\":%lld}", m->ident,
                      m->fp ? m->fp : "", (long long)m->done_s);
    dapi_buf_adds(&b, "}\n");
    if(!b.data)
        return ENOMEM;
    char path[4096], tmp[4200];
    path_of(qs, m->slug, "meta.json", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int e = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(fd < 0 || (e = write_all(fd, b.data, b.len)) || fsync(fd)) {
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
    dapi_buf_free(&b);
    return e;
}

/* The error a failed write of the state dir means for a client: no space (or quota) is
 * temporary — DAPI_ERR_BUSY, retry later; anything else is a storage error. why names the
 * setting, not the path (paths are the operator's business). */
static enum dapi_err storage_error(int e, const char *what, char *why, size_t n)
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

static void remove_dir(const struct dapi_queries *qs, const char *slug)
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

/* Files a run writes and then renames or deletes itself: result.bin.tmp-*, meta.json.tmp,
 * a v1 page's .bin.tmp-*, and the Parquet files downloaded from Nekt before they become a
 * result. At start nothing writes them, so any one found is left by a crash. */
static int orphan_name(const char *name)
{
    size_t n = strlen(name);
    return strstr(name, ".tmp") != NULL || (n > 8 && strcmp(name + n - 8, ".parquet") == 0);
}

static void remove_orphans(const struct dapi_queries *qs, const char *slug, size_t *files,
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

static void insert(struct dapi_queries *qs, struct query *q)
{
    unsigned b = bucket(q->slug);
    q->next = qs->buckets[b];
    qs->buckets[b] = q;
    q->refs = 1;
}

/* Takes q out of the hash table (the caller holds the lock). */
static void detach(struct dapi_queries *qs, struct query *q)
{
    for(struct query **pp = &qs->buckets[bucket(q->slug)]; *pp; pp = &(*pp)->next)
        if(*pp == q) {
            *pp = q->next;
            return;
        }
}

/* Drops the registry's reference to a detached query after taking back what it counted:
 * its bytes and its slot. Open snapshots keep the mapping alive until released. */
static void forget(struct dapi_queries *qs, struct query *q)
{
    if(q->leader[0] && qs->nfollow) {
        q->leader[0] = '\0';
        qs->nfollow--;
    }
    bytes_sub(qs, q);
    slot_release(qs, q);
    unref(q);
}

static int older(const void *a, const void *b)
{
    const struct query *x = *(struct query *const *)a, *y = *(struct query *const *)b;
    if(x->created_s != y->created_s)
        return x->created_s < y->created_s ? -1 : 1;
    if(x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return strcmp(x->slug, y->slug);
}

/* Deletes finished results, oldest first, to get keys back under their quota. key != NULL:
 * that key's results until it holds at most max_key_bytes (keep is never chosen: the result
 * that made room necessary). key == NULL: results of keys over their quota while the store
 * is at max_bytes. Under the lock; the directories go into gone, for the caller to remove
 * once the lock is released. Returns how many were deleted. */
static size_t evict(struct dapi_queries *qs, const unsigned char *key, const struct query *keep,
                    struct slugs *gone)
{
    struct query **cand = NULL;
    size_t n = 0, cap = 0, done = 0;
    uint64_t quota = qs->lim.max_key_bytes;
    for(size_t b = 0; b < NBUCKETS; b++)
        for(struct query *q = qs->buckets[b]; q; q = q->next) {
            if(q == keep || q->state != DAPI_Q_DONE || !q->bytes)
                continue;
            if(key ? memcmp(q->owner, key, DAPI_KEY_HASH_LEN) != 0
                   : key_bytes(qs, q->owner) <= quota)
                continue;
            if(n == cap) {
                size_t c = cap ? cap * 2 : 64;
                void *p = realloc(cand, c * sizeof *cand);
                if(!p)
                    goto sorted; /* evict what was found so far */
                cand = p;
                cap = c;
            }
            cand[n++] = q;
        }
sorted:
    if(n)
        qsort(cand, n, sizeof *cand, older);
    for(size_t i = 0; i < n; i++) {
        struct query *q = cand[i];
        if(key ? key_bytes(qs, key) <= quota : qs->bytes < qs->max_bytes)
            break;
        if(!key && key_bytes(qs, q->owner) <= quota)
            continue; /* that key got back under its quota meanwhile */
        if(slugs_add(gone, q->slug))
            break;     /* a directory we could not remember to remove must stay registered */
        char owner[9]; /* a prefix of the key's hash tells operators whose it was */
        snprintf(owner, sizeof owner, "%02x%02x%02x%02x", q->owner[0], q->owner[1], q->owner[2],
                 q->owner[3]);
        dapi_info("store: deleting result %s (%llu bytes) of the key whose hash starts %s: "
                  "over --max-state-bytes-per-key%s",
                  q->slug, (unsigned long long)q->bytes, owner,
                  key ? "" : " while the store is full");
        detach(qs, q);
        forget(qs, q);
        done++;
    }
    free(cand);
    return done;
}

static void remove_dirs(const struct dapi_queries *qs, struct slugs *gone)
{
    for(size_t i = 0; i < gone->n; i++)
        remove_dir(qs, gone->v[i]);
    free(gone->v);
    gone->v = NULL;
    gone->n = gone->cap = 0;
}

/* Loads one stored query; returns NULL (and removes the directory) if it is damaged. */
static struct query *load_one(struct dapi_queries *qs, const char *slug)
{
    char path[4096], errbuf[256];
    path_of(qs, slug, "meta.json", path, sizeof path);
    struct query *q = NULL;
    struct dapi_jv *root = NULL;
    struct dapi_buf b;
    dapi_buf_init(&b, 128u << 20);
    if(dapi_buf_add_file(&b, path))
        goto out;
    if(!b.data || dapi_jv_parse(b.data, b.len, 8, &root, errbuf, sizeof errbuf))
        goto out;
    const char *owner = dapi_jv_str(dapi_jv_get(root, "owner"), NULL);
    const char *sql = dapi_jv_str(dapi_jv_get(root, "sql"), NULL);
    const char *state = dapi_jv_str(dapi_jv_get(root, "state"), NULL);
    const char *msg = dapi_jv_str(dapi_jv_get(root, "message"), NULL);
    const char *upstream = dapi_jv_str(dapi_jv_get(root, "upstream"), NULL);
    struct dapi_jv *created = dapi_jv_get(root, "created"), *err = dapi_jv_get(root, "error"),
                   *bytes = dapi_jv_get(root, "bytes"), *attempts = dapi_jv_get(root, "attempts"),
                   *seq = dapi_jv_get(root, "seq");
    if(!owner || strlen(owner) != 2 * DAPI_KEY_HASH_LEN || !sql || !state || !created ||
       dapi_jv_type(created) != DAPI_J_INT || !err || dapi_jv_type(err) != DAPI_J_INT)
        goto out;
    if(!(q = calloc(1, sizeof *q)))
        goto out;
    pthread_mutex_init(&q->persist, NULL);
    snprintf(q->slug, sizeof q->slug, "%s", slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++) {
        int hi = hexval(owner[2 * i]), lo = hexval(owner[2 * i + 1]);
        if(hi < 0 || lo < 0) {
            qfree(q);
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
            qfree(q);
            q = NULL;
            goto out;
        }
        for(size_t i = 0; i < n; i++) {
            const char *l = dapi_jv_str(dapi_jv_index(scope, i), NULL);
            if(!l || !*l || strlen(l) > DAPI_LAYER_NAME_MAX) {
                qfree(q);
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
    q->sql = strdup(sql);
    q->message = msg && *msg ? strdup(msg) : NULL;
    q->upstream = upstream && *upstream ? strdup(upstream) : NULL;
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
        if(dapi_result_open(&q->result, rp)) {
            /* meta says done but the file is missing or damaged: run it again */
            dapi_warn("store: result of %s is damaged; running the query again", slug);
            q->state = DAPI_Q_QUEUED;
            q->bytes = 0;
        }
    } else if(strcmp(state, "failed") == 0) {
        q->state = DAPI_Q_FAILED;
    } else {
        q->state = DAPI_Q_QUEUED;
    }
    if(!q->sql) {
        qfree(q);
        q = NULL;
    }
out:
    dapi_jv_free(root);
    dapi_buf_free(&b);
    return q;
}

enum dapi_err dapi_queries_open(struct dapi_queries **out, const char *state_dir,
                                int64_t retention_s, uint64_t max_state_bytes, int64_t now_s,
                                void (*on_unfinished)(void *arg, const char *slug,
                                                      const char *sql),
                                void *arg, char *err, size_t errlen)
{
    struct dapi_queries *qs = calloc(1, sizeof *qs);
    *out = NULL;
    if(!qs)
        return DAPI_ERR_NOMEM;
    pthread_mutex_init(&qs->lock, NULL);
    qs->retention_s = retention_s;
    qs->max_bytes = max_state_bytes;
    qs->lim.max_active = qs->lim.max_key_active = qs->lim.max_key_bytes = UINT64_MAX;
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
    DIR *d = opendir(qs->dir);
    if(!d) {
        snprintf(err, errlen, "cannot read %s: %s", qs->dir, strerror(errno));
        dapi_queries_close(qs);
        return DAPI_ERR_IO;
    }
    struct dirent *de;
    size_t loaded = 0, expired = 0, rerun = 0, crashed = 0, orphans = 0;
    uint64_t orphan_bytes = 0;
    while((de = readdir(d))) {
        if(de->d_name[0] == '.' || strlen(de->d_name) >= DAPI_SLUG_MAX)
            continue;
        remove_orphans(qs, de->d_name, &orphans, &orphan_bytes);
        struct query *q = load_one(qs, de->d_name);
        if(!q || q->created_s + retention_s <= now_s) {
            if(q)
                qfree(q);
            else
                dapi_warn("store: removing unreadable query %s", de->d_name);
            remove_dir(qs, de->d_name);
            expired++;
            continue;
        }
        insert(qs, q);
        if(q->seq > qs->seq)
            qs->seq = q->seq; /* new queries come after every loaded one */
        if(q->state != DAPI_Q_FAILED)
            reuse_set(qs, q);
        if(q->state == DAPI_Q_DONE)
            bytes_add(qs, q, q->bytes);
        else
            q->bytes = 0;
        loaded++;
        if(q->state == DAPI_Q_QUEUED && q->attempts >= DAPI_QUERY_MAX_ATTEMPTS) {
            /* Each run was counted before it started and none recorded an outcome: the
             * process died in every one of them. The query itself may be what kills it, so it
             * is not run a third time. */
            dapi_warn("store: query %s: the server stopped %d times while running it; "
                      "marking it failed",
                      q->slug, q->attempts);
            q->state = DAPI_Q_FAILED;
            q->error = DAPI_ERR_INTERNAL;
            q->message = strdup(DAPI_QUERY_CRASH_MESSAGE);
            q->attempts = 0;
            struct meta m = meta_of(q);
            save_meta(qs, &m); /* (if this fails the next start decides again, the same way) */
            crashed++;
        }
        if(q->state == DAPI_Q_QUEUED) {
            rerun++;
            on_unfinished(arg, q->slug, q->sql);
        }
    }
    closedir(d);
    if(loaded || expired)
        dapi_info("store: %zu queries loaded (%zu to run again, %zu failed after crashes), %zu "
                  "expired or damaged removed",
                  loaded, rerun, crashed, expired);
    if(orphans)
        dapi_info("store: removed %zu temporary file(s) left by an interrupted run (%llu bytes)",
                  orphans, (unsigned long long)orphan_bytes);
    *out = qs;
    return DAPI_OK;
}

void dapi_queries_close(struct dapi_queries *qs)
{
    if(!qs)
        return;
    for(size_t b = 0; b < NBUCKETS; b++) {
        struct query *q = qs->buckets[b];
        while(q) {
            struct query *next = q->next;
            unref(q);
            q = next;
        }
    }
    for(size_t b = 0; b < NREUSEBUCKETS; b++)
        while(qs->reuse[b]) {
            struct reuse_ent *e = qs->reuse[b];
            qs->reuse[b] = e->next;
            free(e);
        }
    for(size_t b = 0; b < NKEYBUCKETS; b++)
        while(qs->keys[b]) {
            struct keyuse *k = qs->keys[b];
            qs->keys[b] = k->next;
            free(k);
        }
    pthread_mutex_destroy(&qs->lock);
    free(qs->dir);
    free(qs);
}

void dapi_queries_set_limits(struct dapi_queries *qs, const struct dapi_queries_limits *l)
{
    pthread_mutex_lock(&qs->lock);
    qs->lim = *l;
    pthread_mutex_unlock(&qs->lock);
}

enum dapi_err dapi_queries_admit(struct dapi_queries *qs, const unsigned char *key_hash)
{
    enum dapi_err result = DAPI_OK;
    /* One lock for the check and the reservation: concurrent creates cannot all see room. */
    pthread_mutex_lock(&qs->lock);
    struct keyuse *k = key_get(qs, key_hash, 1);
    if(!k)
        result = DAPI_ERR_NOMEM;
    else if(k->active >= qs->lim.max_key_active)
        result = DAPI_ERR_RATE;
    else if(qs->active >= qs->lim.max_active)
        result = DAPI_ERR_BUSY;
    if(!result) {
        k->active++;
        qs->active++;
    } else {
        key_put(qs, k);
    }
    pthread_mutex_unlock(&qs->lock);
    return result;
}

void dapi_queries_unadmit(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    slot_give_back(qs, key_hash);
    pthread_mutex_unlock(&qs->lock);
}

int dapi_queries_hold(struct dapi_queries *qs, const char *slug, const unsigned char *reserved)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    /* a query that already finished holds nothing (one that shared an identical query's
     * run may finish before its creator gets here) */
    if(q && q->state != DAPI_Q_DONE && q->state != DAPI_Q_FAILED)
        slot_take(qs, q); /* before giving back: the owner's entry stays allocated */
    if(reserved)
        slot_give_back(qs, reserved);
    pthread_mutex_unlock(&qs->lock);
    return q ? 0 : -1;
}

uint64_t dapi_queries_active(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    struct keyuse *k = key_hash ? key_get(qs, key_hash, 0) : NULL;
    uint64_t n = key_hash ? (k ? k->active : 0) : qs->active;
    pthread_mutex_unlock(&qs->lock);
    return n;
}

uint64_t dapi_queries_key_bytes(struct dapi_queries *qs, const unsigned char *key_hash)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t n = key_bytes(qs, key_hash);
    pthread_mutex_unlock(&qs->lock);
    return n;
}

enum dapi_err dapi_queries_create(struct dapi_queries *qs, const unsigned char *key_hash,
                                  const char *sql, const char *upstream, int64_t now_s,
                                  char *slug_out, char *why, size_t whylen)
{
    return dapi_queries_create_scoped(qs, key_hash, NULL, sql, upstream, now_s, slug_out, why,
                                      whylen);
}

enum dapi_err dapi_queries_create_scoped(struct dapi_queries *qs, const unsigned char *key_hash,
                                         const struct dapi_scope *scope, const char *sql,
                                         const char *upstream, int64_t now_s, char *slug_out,
                                         char *why, size_t whylen)
{
    return dapi_queries_create_reusing(qs, key_hash, scope, sql, upstream, NULL, now_s, slug_out,
                                       NULL, why, whylen);
}

/* The query whose result (or run) a new query of identity ident may share, under the lock. */
static struct query *reusable(struct dapi_queries *qs, const struct dapi_reuse *ru, int64_t now_s,
                              enum dapi_reused *how)
{
    struct query *c = reuse_find(qs, ru->ident);
    if(!c || c->leader[0] || c->created_s + qs->retention_s <= now_s ||
       strcmp(c->fp, ru->fp ? ru->fp : "") != 0)
        return NULL;
    if(c->state == DAPI_Q_DONE && c->result && now_s - c->done_s < ru->max_age_s) {
        *how = DAPI_REUSED_RESULT;
        return c;
    }
    if(c->state == DAPI_Q_QUEUED || c->state == DAPI_Q_RUNNING) {
        *how = DAPI_REUSED_RUN;
        return c;
    }
    return NULL;
}

enum dapi_err dapi_queries_create_reusing(struct dapi_queries *qs, const unsigned char *key_hash,
                                          const struct dapi_scope *scope, const char *sql,
                                          const char *upstream, const struct dapi_reuse *ru,
                                          int64_t now_s, char *slug_out, enum dapi_reused *reused,
                                          char *why, size_t whylen)
{
    enum dapi_err result;
    enum dapi_reused how = DAPI_REUSED_NONE;
    struct query *src = NULL;
    struct slugs gone = {0};
    if(why && whylen)
        why[0] = '\0';
    if(reused)
        *reused = DAPI_REUSED_NONE;
    struct query *q = calloc(1, sizeof *q);
    if(!q || !(q->sql = strdup(sql)) || (upstream && !(q->upstream = strdup(upstream))) ||
       (scope && !scope->all && !(q->scope = malloc(sizeof *q->scope)))) {
        if(q) {
            free(q->sql);
            free(q->upstream);
        }
        free(q);
        return DAPI_ERR_NOMEM;
    }
    if(q->scope)
        memcpy(q->scope, scope, sizeof *q->scope);
    pthread_mutex_init(&q->persist, NULL);
    /* 22 base62 characters = 130 bits of randomness. */
    memcpy(q->slug, "dapi-query-", 11);
    if((result = dapi_random_base62(q->slug + 11, 22))) {
        qfree(q);
        return result;
    }
    memcpy(q->owner, key_hash, DAPI_KEY_HASH_LEN);
    q->created_s = now_s;
    q->done_s = now_s;
    q->state = DAPI_Q_QUEUED;
    if(ru && ru->ident && strlen(ru->ident) < DAPI_REUSE_HEX &&
       (!ru->fp || strlen(ru->fp) < DAPI_REUSE_HEX)) {
        snprintf(q->ident, sizeof q->ident, "%s", ru->ident);
        snprintf(q->fp, sizeof q->fp, "%s", ru->fp ? ru->fp : "");
    }
    pthread_mutex_lock(&qs->lock);
    /* A full store first costs the keys over their quota (possible after a restart with a
     * smaller --max-state-bytes-per-key) their oldest results; only then is it refused. */
    if(qs->bytes >= qs->max_bytes)
        evict(qs, NULL, NULL, &gone);
    uint64_t used = qs->bytes;
    q->seq = ++qs->seq; /* persisted: "oldest" means the same after a restart */
    if(q->ident[0] && ru->max_age_s > 0 && used < qs->max_bytes &&
       (src = reusable(qs, ru, now_s, &how))) {
        src->refs++; /* kept while its result file is linked */
        q->done_s = src->done_s;
        if(how == DAPI_REUSED_RUN)
            snprintf(q->leader, sizeof q->leader, "%s", src->slug);
    }
    int early = 0;
    if(q->ident[0] && !src && used < qs->max_bytes) {
        /* Registered now, in the same step as the look-up: an identical creation right
         * behind this one attaches to it instead of missing it and running too. */
        insert(qs, q);
        q->refs++; /* this function's, until it returns */
        reuse_set(qs, q);
        early = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    remove_dirs(qs, &gone);
    if(used >= qs->max_bytes) {
        if(why && whylen)
            snprintf(why, whylen, "the result store is full (--max-state-bytes)");
        qfree(q);
        return DAPI_ERR_BUSY;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", qs->dir, q->slug);
    if(mkdir(dir, 0700)) {
        int e = errno;
        dapi_error("store: cannot create %s: %s", dir, strerror(e));
        result = storage_error(e, "to create the query's directory", why, whylen);
        goto fail;
    }
    if(how == DAPI_REUSED_RESULT) {
        /* The result is shared on disk: a hard link, so the file system counts the
         * references — deleting either slug leaves the other's file whole, across restarts. */
        char from[4096], to[4096];
        struct stat st;
        dapi_queries_result_path(qs, src->slug, from, sizeof from);
        dapi_queries_result_path(qs, q->slug, to, sizeof to);
        if(link(from, to) || stat(to, &st) || dapi_result_open(&q->result, to)) {
            unlink(to); /* (deleted meanwhile, or a file system without hard links) */
            how = DAPI_REUSED_NONE;
            q->done_s = now_s;
        } else {
            q->state = DAPI_Q_DONE;
            q->bytes = (uint64_t)st.st_size;
        }
    }
    struct meta m = meta_of(q);
    int e = save_meta(qs, &m);
    if(e) {
        remove_dir(qs, q->slug);
        result = storage_error(e, "to record the query", why, whylen);
        goto fail;
    }
    pthread_mutex_lock(&qs->lock);
    if(early) {
        unref(q);
        pthread_mutex_unlock(&qs->lock);
        snprintf(slug_out, DAPI_SLUG_MAX, "%s", q->slug);
        return DAPI_OK;
    }
    if(how == DAPI_REUSED_RUN && (find(qs, src->slug) != src ||
                                  (src->state != DAPI_Q_QUEUED && src->state != DAPI_Q_RUNNING))) {
        /* its run ended meanwhile: this one runs itself */
        how = DAPI_REUSED_NONE;
        q->leader[0] = '\0';
        q->done_s = now_s;
    }
    insert(qs, q);
    if(how == DAPI_REUSED_RUN)
        qs->nfollow++;
    else
        reuse_set(qs, q); /* the newest holder of the identity (a reuse keeps its data time) */
    if(how == DAPI_REUSED_RESULT) {
        /* Its owner is charged the whole result, as if it had run it. */
        bytes_add(qs, q, q->bytes);
        if(key_bytes(qs, q->owner) > qs->lim.max_key_bytes)
            evict(qs, q->owner, q, &gone);
    }
    if(src)
        unref(src);
    pthread_mutex_unlock(&qs->lock);
    remove_dirs(qs, &gone);
    snprintf(slug_out, DAPI_SLUG_MAX, "%s", q->slug);
    if(reused)
        *reused = how;
    return DAPI_OK;
fail:
    if(src) {
        pthread_mutex_lock(&qs->lock);
        unref(src);
        pthread_mutex_unlock(&qs->lock);
    }
    if(early) {
        /* registered early: out again; anything attached meanwhile fails retryably */
        char slug[DAPI_SLUG_MAX];
        snprintf(slug, sizeof slug, "%s", q->slug);
        pthread_mutex_lock(&qs->lock);
        if(find(qs, slug) == q) {
            detach(qs, q);
            forget(qs, q);
        }
        unref(q);
        pthread_mutex_unlock(&qs->lock);
        settle_followers(qs, slug, DAPI_ERR_BUSY,
                         "the identical query this one shared a run with "
                         "could not be recorded",
                         0);
        return result;
    }
    qfree(q);
    return result;
}

/* Copies a stored message into a view's field of n bytes; one too long is cut (never inside a
 * UTF-8 sequence) and ends with a note saying so. */
static void copy_message(char *out, size_t n, const char *m)
{
    static const char note[] = " ... (cut)";
    size_t len = strlen(m);
    if(len < n) {
        memcpy(out, m, len + 1);
        return;
    }
    size_t cut = n - sizeof note;
    while(cut > 0 && ((unsigned char)m[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(out, m, cut);
    memcpy(out + cut, note, sizeof note);
}

enum dapi_err dapi_queries_get(struct dapi_queries *qs, const char *slug,
                               const unsigned char *key_hash, int64_t now_s, struct dapi_qview *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    /* owner compared in constant time; expired is the same as unknown */
    if(!q || !dapi_ct_equal(q->owner, DAPI_KEY_HASH_LEN, key_hash, DAPI_KEY_HASH_LEN) ||
       q->created_s + qs->retention_s <= now_s) {
        pthread_mutex_unlock(&qs->lock);
        return DAPI_ERR_NOT_FOUND;
    }
    q->refs++;
    snprintf(v->slug, sizeof v->slug, "%s", q->slug);
    v->state = q->state;
    v->error = q->error;
    copy_message(v->message, sizeof v->message, q->message ? q->message : "");
    v->result = q->result;
    v->ref = q;
    pthread_mutex_unlock(&qs->lock);
    return DAPI_OK;
}

void dapi_queries_release(struct dapi_queries *qs, struct dapi_qview *v)
{
    if(!v->ref)
        return;
    pthread_mutex_lock(&qs->lock);
    unref(v->ref);
    pthread_mutex_unlock(&qs->lock);
    v->ref = NULL;
    v->result = NULL;
}

int dapi_queries_claim(struct dapi_queries *qs, const char *slug)
{
    int claimed = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(q && q->state == DAPI_Q_QUEUED && !q->leader[0]) { /* a follower never runs itself */
        q->state = DAPI_Q_RUNNING;
        claimed = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    return claimed;
}

/* A reference to slug's query with its persist lock held, or NULL. The fields a meta.json
 * write reads without the main lock change only under that lock (upstream) or never. */
static struct query *persist_begin(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(q)
        q->refs++;
    pthread_mutex_unlock(&qs->lock);
    if(q)
        pthread_mutex_lock(&q->persist);
    return q;
}

static void persist_end(struct dapi_queries *qs, struct query *q)
{
    pthread_mutex_unlock(&q->persist);
    pthread_mutex_lock(&qs->lock);
    unref(q);
    pthread_mutex_unlock(&qs->lock);
}

enum dapi_err dapi_queries_start_run(struct dapi_queries *qs, const char *slug, char *why,
                                     size_t whylen)
{
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return DAPI_ERR_NOT_FOUND;
    pthread_mutex_lock(&qs->lock);
    enum dapi_err result = DAPI_OK;
    if(find(qs, slug) != q) /* expired meanwhile */
        result = DAPI_ERR_NOT_FOUND;
    else if(q->state == DAPI_Q_DONE || q->state == DAPI_Q_FAILED)
        result = DAPI_ERR_INVALID;
    if(result) {
        pthread_mutex_unlock(&qs->lock);
        persist_end(qs, q);
        return result;
    }
    q->state = DAPI_Q_RUNNING;
    q->attempts++;
    q->in_run = 1;
    struct meta m = meta_of(q);
    m.message = NULL;
    pthread_mutex_unlock(&qs->lock);
    /* Counted and fsynced before the run starts: if the run kills the process, the next
     * start knows (DAPI_QUERY_MAX_ATTEMPTS). */
    int e = save_meta(qs, &m);
    if(e) {
        pthread_mutex_lock(&qs->lock);
        q->attempts--;
        q->in_run = 0;
        pthread_mutex_unlock(&qs->lock);
    }
    persist_end(qs, q);
    return e ? storage_error(e, "to record that the query starts", why, whylen) : DAPI_OK;
}

void dapi_queries_drop(struct dapi_queries *qs, const char *slug)
{
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return;
    pthread_mutex_lock(&qs->lock);
    slot_release(qs, q);
    int rollback = q->in_run && (q->state == DAPI_Q_QUEUED || q->state == DAPI_Q_RUNNING);
    if(q->state == DAPI_Q_RUNNING)
        q->state = DAPI_Q_QUEUED;
    if(rollback) {
        /* Cut short by a shutdown this process survives: not a crash. */
        q->attempts--;
        q->in_run = 0;
    }
    struct meta m = meta_of(q);
    m.message = NULL;
    pthread_mutex_unlock(&qs->lock);
    if(rollback)
        save_meta(qs, &m);
    persist_end(qs, q);
}

void dapi_queries_remove(struct dapi_queries *qs, const char *slug)
{
    /* Under the persist lock, so no meta.json write of this query is half-way. */
    struct query *q = persist_begin(qs, slug);
    if(!q)
        return;
    pthread_mutex_lock(&qs->lock);
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    int registered = find(qs, slug) == q;
    if(registered) {
        detach(qs, q);
        forget(qs, q); /* its slot and bytes; persist_begin's reference keeps q alive */
    }
    pthread_mutex_unlock(&qs->lock);
    persist_end(qs, q);
    fire(w, 0);
    if(registered) {
        settle_followers(qs, slug, DAPI_ERR_BUSY,
                         "the identical query this one shared a run with was removed", 0);
        remove_dir(qs, slug);
    }
}

enum dapi_err dapi_queries_retry(struct dapi_queries *qs, const char *slug)
{
    enum dapi_err result = DAPI_ERR_INVALID;
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(q && q->state == DAPI_Q_FAILED && q->error == DAPI_ERR_BUSY) {
        struct keyuse *k = key_get(qs, q->owner, 1);
        if(!k)
            result = DAPI_ERR_NOMEM;
        else if(k->active >= qs->lim.max_key_active)
            result = DAPI_ERR_RATE;
        else if(qs->active >= qs->lim.max_active)
            result = DAPI_ERR_BUSY;
        else
            result = DAPI_OK;
        if(result) {
            key_put(qs, k);
        } else {
            slot_take(qs, q);
            /* In memory only: meta.json says failed (retryable) until the run starts, which
             * is what a restart in between should find too. */
            q->state = DAPI_Q_QUEUED;
            q->error = DAPI_OK;
            free(q->message);
            q->message = NULL;
        }
    }
    pthread_mutex_unlock(&qs->lock);
    return result;
}

char *dapi_queries_sql(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    char *sql = q ? strdup(q->sql) : NULL;
    pthread_mutex_unlock(&qs->lock);
    return sql;
}

enum dapi_err dapi_queries_scope(struct dapi_queries *qs, const char *slug, struct dapi_scope *out)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(q && q->scope)
        memcpy(out, q->scope, sizeof *out);
    else if(q) {
        memset(out, 0, sizeof *out);
        out->all = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    return q ? DAPI_OK : DAPI_ERR_NOT_FOUND;
}

void dapi_queries_upstream(struct dapi_queries *qs, const char *slug, char *out, size_t n)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    snprintf(out, n, "%s", q && q->upstream ? q->upstream : "");
    pthread_mutex_unlock(&qs->lock);
}

enum dapi_err dapi_queries_set_upstream(struct dapi_queries *qs, const char *slug,
                                        const char *upstream)
{
    /* Snapshot every field under the lock, write meta.json without it; the query's persist
     * lock keeps this write and finish()'s from interleaving on meta.json.tmp. */
    enum dapi_err result = DAPI_ERR_NOMEM;
    char *copy = strdup(upstream), *sql = NULL, *message = NULL;
    unsigned char owner[DAPI_KEY_HASH_LEN];
    if(!copy)
        return DAPI_ERR_NOMEM;
    struct query *q = persist_begin(qs, slug);
    if(!q) {
        free(copy);
        return DAPI_ERR_NOT_FOUND;
    }
    pthread_mutex_lock(&qs->lock);
    if(find(qs, slug) != q) { /* expired meanwhile */
        pthread_mutex_unlock(&qs->lock);
        result = DAPI_ERR_NOT_FOUND;
        goto out;
    }
    free(q->upstream);
    q->upstream = copy;
    copy = NULL;
    memcpy(owner, q->owner, sizeof owner);
    sql = strdup(q->sql);
    message = q->message ? strdup(q->message) : NULL;
    upstream = q->upstream;
    int64_t created = q->created_s;
    enum dapi_qstate state = q->state;
    enum dapi_err error = q->error;
    uint64_t bytes = q->bytes;
    int attempts = q->attempts;
    uint64_t seq = q->seq;
    char *up = strdup(q->upstream);
    pthread_mutex_unlock(&qs->lock);
    if(sql && up) {
        struct meta m = {slug,     owner, sql,      up,    message,  q->scope, /* immutable */
                         created,  state, error,    bytes, attempts, seq,
                         q->ident, q->fp, q->done_s};
        result = save_meta(qs, &m) ? DAPI_ERR_IO : DAPI_OK;
    }
    free(up);
out:
    persist_end(qs, q);
    free(copy);
    free(sql);
    free(message);
    return result;
}

void dapi_queries_dir(const struct dapi_queries *qs, const char *slug, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", qs->dir, slug);
}

static void fire(struct waiter *w, int timed_out)
{
    while(w) {
        struct waiter *next = w->next;
        w->cb(w->arg, timed_out);
        free(w);
        w = next;
    }
}

/* The queries that waited for slug's run (single-flight) get its outcome: its result file,
 * linked (so shared on disk), or its error — as if each had run. */
static void settle_followers(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                             const char *message, uint64_t bytes)
{
    struct query **f = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&qs->lock);
    struct query *leader = find(qs, slug);
    int64_t data_s = leader ? leader->done_s : 0;
    for(size_t b = 0; qs->nfollow && b < NBUCKETS; b++)
        for(struct query *q = qs->buckets[b]; q; q = q->next) {
            if(!q->leader[0] || strcmp(q->leader, slug) != 0)
                continue;
            if(n == cap) {
                size_t c = cap ? cap * 2 : 16;
                void *p = realloc(f, c * sizeof *f);
                if(!p)
                    goto collected; /* the rest stay queued: they run after a restart */
                f = p;
                cap = c;
            }
            q->leader[0] = '\0';
            qs->nfollow--;
            q->refs++;
            if(data_s)
                q->done_s = data_s;
            f[n++] = q;
        }
collected:
    pthread_mutex_unlock(&qs->lock);
    char from[4096], to[4096];
    dapi_queries_result_path(qs, slug, from, sizeof from);
    for(size_t i = 0; i < n; i++) {
        enum dapi_err e = error;
        const char *msg = message;
        dapi_queries_result_path(qs, f[i]->slug, to, sizeof to);
        if(!e && link(from, to)) {
            e = DAPI_ERR_BUSY; /* retryable: a results request runs it again */
            msg = "the result of the identical query this one shared a run with is gone";
        }
        dapi_queries_finish(qs, f[i]->slug, e, msg, e ? 0 : bytes);
    }
    pthread_mutex_lock(&qs->lock);
    for(size_t i = 0; i < n; i++)
        unref(f[i]);
    pthread_mutex_unlock(&qs->lock);
    free(f);
}

void dapi_queries_finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                         const char *message, uint64_t bytes)
{
    struct dapi_result *res = NULL;
    struct slugs gone = {0};
    char rp[4096], why[256];
    dapi_queries_result_path(qs, slug, rp, sizeof rp);
    pthread_mutex_lock(&qs->lock);
    uint64_t quota = qs->lim.max_key_bytes;
    pthread_mutex_unlock(&qs->lock);
    if(!error && bytes > quota) {
        /* Room for it would cost the key every other result and more: refused, and nothing
         * else is deleted for it. */
        snprintf(why, sizeof why,
                 "the result takes %llu bytes, more than one API key may store "
                 "(--max-state-bytes-per-key %llu)",
                 (unsigned long long)bytes, (unsigned long long)quota);
        error = DAPI_ERR_TOO_LARGE;
        message = why;
        unlink(rp);
    }
    if(!error && dapi_result_open(&res, rp)) {
        error = DAPI_ERR_IO;
        message = "the materialised result could not be read back";
    }
    struct query *q = persist_begin(qs, slug);
    if(!q) {
        dapi_result_close(res);
        settle_followers(
            qs, slug, error ? error : DAPI_ERR_BUSY,
            error ? message : "the identical query this one shared a run with expired", 0);
        return;
    }

    /* Persist first: a client told "done" must find it done after a restart. The fields
     * read here change only under the persist lock (set_upstream) or here. The outcome is
     * recorded, so the attempts no longer count. */
    struct meta m = {slug,
                     q->owner,
                     q->sql,
                     q->upstream,
                     message,
                     q->scope,
                     q->created_s,
                     error ? DAPI_Q_FAILED : DAPI_Q_DONE,
                     error,
                     error ? 0 : bytes,
                     0,
                     q->seq,
                     q->ident,
                     q->fp,
                     q->done_s};
    save_meta(qs, &m);
    pthread_mutex_unlock(&q->persist);

    pthread_mutex_lock(&qs->lock);
    q->state = error ? DAPI_Q_FAILED : DAPI_Q_DONE;
    q->error = error;
    free(q->message);
    q->message = message ? strdup(message) : NULL;
    q->result = res;
    q->attempts = 0;
    q->in_run = 0;
    slot_release(qs, q);
    /* Counted only while registered: a query that expired meanwhile counts nothing. */
    if(!error && find(qs, slug) == q) {
        bytes_add(qs, q, bytes);
        if(key_bytes(qs, q->owner) > quota)
            evict(qs, q->owner, q, &gone);
    }
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    int follow = qs->nfollow != 0;
    unref(q);
    pthread_mutex_unlock(&qs->lock);
    if(follow) /* before the waiters: a result file deleted by eviction is still linkable */
        settle_followers(qs, slug, error, message, bytes);
    fire(w, 0);
    remove_dirs(qs, &gone);
}

int dapi_queries_wait(struct dapi_queries *qs, const char *slug, int64_t deadline_ms,
                      void (*cb)(void *arg, int timed_out), void *arg)
{
    struct waiter *w = malloc(sizeof *w);
    if(!w)
        return -1;
    w->cb = cb;
    w->arg = arg;
    w->deadline_ms = deadline_ms;
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(!q || q->state == DAPI_Q_DONE || q->state == DAPI_Q_FAILED) {
        pthread_mutex_unlock(&qs->lock);
        free(w);
        return -1;
    }
    w->next = q->waiters;
    q->waiters = w;
    pthread_mutex_unlock(&qs->lock);
    return 0;
}

void dapi_queries_tick(struct dapi_queries *qs, int64_t now_s, int64_t now_ms)
{
    struct waiter *due = NULL;
    struct slugs expired = {0};
    pthread_mutex_lock(&qs->lock);
    for(size_t b = 0; b < NBUCKETS; b++) {
        struct query **pp = &qs->buckets[b];
        while(*pp) {
            struct query *q = *pp;
            for(struct waiter **wp = &q->waiters; *wp;) {
                struct waiter *w = *wp;
                if(w->deadline_ms <= now_ms) {
                    *wp = w->next;
                    w->next = due;
                    due = w;
                } else {
                    wp = &w->next;
                }
            }
            /* Expired queries go whatever their state (a run still writing into the
             * directory then fails harmlessly); never while someone waits on them. */
            if(q->created_s + qs->retention_s <= now_s && !q->waiters) {
                if(slugs_add(&expired, q->slug))
                    break;
                *pp = q->next;
                forget(qs, q); /* open snapshots keep the mapping alive until released */
                continue;
            }
            pp = &q->next;
        }
    }
    if(expired.n)
        reuse_prune(qs);
    pthread_mutex_unlock(&qs->lock);
    fire(due, 1);
    size_t nexpired = expired.n;
    remove_dirs(qs, &expired);
    if(nexpired)
        dapi_info("store: %zu expired queries removed", nexpired);
}

void dapi_queries_cancel_waiters(struct dapi_queries *qs)
{
    struct waiter *all = NULL;
    pthread_mutex_lock(&qs->lock);
    for(size_t b = 0; b < NBUCKETS; b++)
        for(struct query *q = qs->buckets[b]; q; q = q->next) {
            while(q->waiters) {
                struct waiter *w = q->waiters;
                q->waiters = w->next;
                w->next = all;
                all = w;
            }
        }
    pthread_mutex_unlock(&qs->lock);
    fire(all, 1);
}

uint64_t dapi_queries_bytes(struct dapi_queries *qs)
{
    pthread_mutex_lock(&qs->lock);
    uint64_t b = qs->bytes;
    pthread_mutex_unlock(&qs->lock);
    return b;
}
