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

#include <openssl/crypto.h>

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
    int64_t created_s;
    enum dapi_qstate state;
    enum dapi_err error;
    char *message;
    uint64_t bytes;
    struct dapi_result *result; /* DONE: mapped lazily */
    int refs;                   /* registry's own + snapshots */
    struct waiter *waiters;
    struct query *next;         /* hash chain */
};

#define NBUCKETS 4096

struct dapi_queries {
    pthread_mutex_t lock;
    pthread_mutex_t persist; /* serialises meta.json rewrites of finished/updated queries */
    char *dir; /* <state>/queries */
    int64_t retention_s;
    uint64_t max_bytes, bytes;
    struct query *buckets[NBUCKETS];
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

static void qfree(struct query *q)
{
    dapi_result_close(q->result);
    free(q->sql);
    free(q->upstream);
    free(q->message);
    free(q);
}

static void unref(struct query *q)
{
    if(--q->refs == 0)
        qfree(q);
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

/* Writes meta.json atomically (temp + fsync + rename). Called without the lock held, on a
 * snapshot of the fields. */
static enum dapi_err save_meta(const struct dapi_queries *qs, const char *slug,
                               const unsigned char *owner, const char *sql, const char *upstream,
                               int64_t created_s, enum dapi_qstate state, enum dapi_err error,
                               const char *message, uint64_t bytes)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 128u << 20);
    dapi_buf_addf(&b, "{\"version\":1,\"slug\":\"%s\",\"owner\":\"", slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        dapi_buf_addf(&b, "%02x", owner[i]);
    dapi_buf_addf(&b, "\",\"created\":%lld,\"state\":\"%s\",\"error\":%d,\"bytes\":%llu,\"sql\":",
                  (long long)created_s, state_name(state), (int)error, (unsigned long long)bytes);
    dapi_json_str(&b, sql, strlen(sql));
    dapi_buf_adds(&b, ",\"upstream\":");
    dapi_json_str(&b, upstream ? upstream : "", upstream ? strlen(upstream) : 0);
    dapi_buf_adds(&b, ",\"message\":");
    dapi_json_str(&b, message ? message : "", message ? strlen(message) : 0);
    dapi_buf_adds(&b, "}\n");
    if(!b.data)
        return DAPI_ERR_NOMEM;
    char path[4096], tmp[4200];
    path_of(qs, slug, "meta.json", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    enum dapi_err result = DAPI_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(fd < 0 || write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd)) {
        dapi_error("store: cannot write %s: %s", tmp, strerror(errno));
        result = DAPI_ERR_IO;
    }
    if(fd >= 0 && close(fd) && !result)
        result = DAPI_ERR_IO;
    if(!result && rename(tmp, path)) {
        dapi_error("store: cannot rename %s: %s", tmp, strerror(errno));
        result = DAPI_ERR_IO;
    }
    dapi_buf_free(&b);
    return result;
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
                   *bytes = dapi_jv_get(root, "bytes");
    if(!owner || strlen(owner) != 2 * DAPI_KEY_HASH_LEN || !sql || !state || !created ||
       dapi_jv_type(created) != DAPI_J_INT || !err || dapi_jv_type(err) != DAPI_J_INT)
        goto out;
    if(!(q = calloc(1, sizeof *q)))
        goto out;
    snprintf(q->slug, sizeof q->slug, "%s", slug);
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++) {
        int hi = hexval(owner[2 * i]), lo = hexval(owner[2 * i + 1]);
        if(hi < 0 || lo < 0) {
            free(q);
            q = NULL;
            goto out;
        }
        q->owner[i] = (unsigned char)(hi << 4 | lo);
    }
    q->sql = strdup(sql);
    q->message = msg && *msg ? strdup(msg) : NULL;
    q->upstream = upstream && *upstream ? strdup(upstream) : NULL;
    q->created_s = dapi_jv_int(created);
    q->error = (enum dapi_err)dapi_jv_int(err);
    q->bytes = bytes && dapi_jv_type(bytes) == DAPI_J_INT ? (uint64_t)dapi_jv_int(bytes) : 0;
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
    pthread_mutex_init(&qs->persist, NULL);
    qs->retention_s = retention_s;
    qs->max_bytes = max_state_bytes;
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
    size_t loaded = 0, expired = 0, rerun = 0;
    while((de = readdir(d))) {
        if(de->d_name[0] == '.' || strlen(de->d_name) >= DAPI_SLUG_MAX)
            continue;
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
        qs->bytes += q->bytes;
        loaded++;
        if(q->state == DAPI_Q_QUEUED) {
            rerun++;
            on_unfinished(arg, q->slug, q->sql);
        }
    }
    closedir(d);
    if(loaded || expired)
        dapi_info("store: %zu queries loaded (%zu to run again), %zu expired or damaged removed",
                  loaded, rerun, expired);
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
    pthread_mutex_destroy(&qs->lock);
    pthread_mutex_destroy(&qs->persist);
    free(qs->dir);
    free(qs);
}

enum dapi_err dapi_queries_create(struct dapi_queries *qs, const unsigned char *key_hash,
                                  const char *sql, const char *upstream, int64_t now_s,
                                  char *slug_out)
{
    enum dapi_err result;
    struct query *q = calloc(1, sizeof *q);
    if(!q || !(q->sql = strdup(sql)) || (upstream && !(q->upstream = strdup(upstream)))) {
        if(q)
            free(q->sql);
        free(q);
        return DAPI_ERR_NOMEM;
    }
    /* 22 base62 characters = 130 bits of randomness. */
    memcpy(q->slug, "dapi-query-", 11);
    if((result = dapi_random_base62(q->slug + 11, 22))) {
        qfree(q);
        return result;
    }
    memcpy(q->owner, key_hash, DAPI_KEY_HASH_LEN);
    q->created_s = now_s;
    q->state = DAPI_Q_QUEUED;
    pthread_mutex_lock(&qs->lock);
    uint64_t used = qs->bytes;
    pthread_mutex_unlock(&qs->lock);
    if(used >= qs->max_bytes) {
        qfree(q);
        return DAPI_ERR_BUSY;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", qs->dir, q->slug);
    if(mkdir(dir, 0700)) {
        dapi_error("store: cannot create %s: %s", dir, strerror(errno));
        qfree(q);
        return DAPI_ERR_IO;
    }
    if((result = save_meta(qs, q->slug, q->owner, q->sql, q->upstream, now_s, DAPI_Q_QUEUED,
                           DAPI_OK, NULL, 0))) {
        remove_dir(qs, q->slug);
        qfree(q);
        return result;
    }
    pthread_mutex_lock(&qs->lock);
    insert(qs, q);
    pthread_mutex_unlock(&qs->lock);
    snprintf(slug_out, DAPI_SLUG_MAX, "%s", q->slug);
    return DAPI_OK;
}

enum dapi_err dapi_queries_get(struct dapi_queries *qs, const char *slug,
                               const unsigned char *key_hash, int64_t now_s,
                               struct dapi_qview *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    /* owner compared in constant time; expired is the same as unknown */
    if(!q || CRYPTO_memcmp(q->owner, key_hash, DAPI_KEY_HASH_LEN) != 0 ||
       q->created_s + qs->retention_s <= now_s) {
        pthread_mutex_unlock(&qs->lock);
        return DAPI_ERR_NOT_FOUND;
    }
    q->refs++;
    snprintf(v->slug, sizeof v->slug, "%s", q->slug);
    v->state = q->state;
    v->error = q->error;
    snprintf(v->message, sizeof v->message, "%s", q->message ? q->message : "");
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
    if(q && q->state == DAPI_Q_QUEUED) {
        q->state = DAPI_Q_RUNNING;
        claimed = 1;
    }
    pthread_mutex_unlock(&qs->lock);
    return claimed;
}

char *dapi_queries_sql(struct dapi_queries *qs, const char *slug)
{
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    char *sql = q ? strdup(q->sql) : NULL;
    pthread_mutex_unlock(&qs->lock);
    return sql;
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
    /* Snapshot every field under the lock, write meta.json without it; the persist lock
     * keeps this write and finish()'s from interleaving on meta.json.tmp. */
    enum dapi_err result = DAPI_ERR_NOMEM;
    char *copy = strdup(upstream), *sql = NULL, *message = NULL;
    unsigned char owner[DAPI_KEY_HASH_LEN];
    if(!copy)
        return DAPI_ERR_NOMEM;
    pthread_mutex_lock(&qs->persist);
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(!q) {
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
    char *up = strdup(q->upstream);
    pthread_mutex_unlock(&qs->lock);
    if(sql && up)
        result = save_meta(qs, slug, owner, sql, up, created, state, error, message, bytes);
    free(up);
out:
    pthread_mutex_unlock(&qs->persist);
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

void dapi_queries_finish(struct dapi_queries *qs, const char *slug, enum dapi_err error,
                         const char *message, uint64_t bytes)
{
    struct dapi_result *res = NULL;
    if(!error) {
        char rp[4096];
        dapi_queries_result_path(qs, slug, rp, sizeof rp);
        if(dapi_result_open(&res, rp)) {
            error = DAPI_ERR_IO;
            message = "the materialised result could not be read back";
        }
    }
    pthread_mutex_lock(&qs->lock);
    struct query *q = find(qs, slug);
    if(!q) {
        pthread_mutex_unlock(&qs->lock);
        dapi_result_close(res);
        return;
    }
    q->refs++;
    pthread_mutex_unlock(&qs->lock);

    /* Persist first: a client told "done" must find it done after a restart. The fields
     * read here change only under the persist lock (set_upstream) or here. */
    pthread_mutex_lock(&qs->persist);
    save_meta(qs, slug, q->owner, q->sql, q->upstream, q->created_s,
              error ? DAPI_Q_FAILED : DAPI_Q_DONE, error, message, error ? 0 : bytes);
    pthread_mutex_unlock(&qs->persist);

    pthread_mutex_lock(&qs->lock);
    q->state = error ? DAPI_Q_FAILED : DAPI_Q_DONE;
    q->error = error;
    free(q->message);
    q->message = message ? strdup(message) : NULL;
    q->result = res;
    q->bytes = error ? 0 : bytes;
    qs->bytes += q->bytes;
    struct waiter *w = q->waiters;
    q->waiters = NULL;
    unref(q);
    pthread_mutex_unlock(&qs->lock);
    fire(w, 0);
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
    char (*expired)[DAPI_SLUG_MAX] = NULL;
    size_t nexpired = 0, capexpired = 0;
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
                if(nexpired == capexpired) {
                    size_t cap = capexpired ? capexpired * 2 : 16;
                    void *p = realloc(expired, cap * sizeof *expired);
                    if(!p)
                        break;
                    expired = p;
                    capexpired = cap;
                }
                memcpy(expired[nexpired++], q->slug, DAPI_SLUG_MAX);
                *pp = q->next;
                qs->bytes -= q->bytes;
                unref(q); /* open snapshots keep the mapping alive until released */
                continue;
            }
            pp = &q->next;
        }
    }
    pthread_mutex_unlock(&qs->lock);
    fire(due, 1);
    for(size_t i = 0; i < nexpired; i++)
        remove_dir(qs, expired[i]);
    if(nexpired)
        dapi_info("store: %zu expired queries removed", nexpired);
    free(expired);
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
