/* What backends share: building outcomes, writing a result file, materialising a query,
 * answering a results request from the registry (waiting for a running query), admission
 * refusals and queueing jobs. Nothing here knows HTTP: every answer is an outcome
 * (backend.h) that the API layer writes. */
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/engine.h"
#include "pool/pool.h"
#include "store/pack.h"
#include "store/queries.h"
#include "store/result.h"

/* ---- outcomes ---------------------------------------------------------------------- */

void dapi_reply(struct dapi_reply rp, enum dapi_err err, const struct dapi_outcome *out)
{
    rp.done(rp.ctx, err, out);
}

static void slot_done(void *ctx, enum dapi_err err, const struct dapi_outcome *out)
{
    struct dapi_slot *s = ctx;
    dapi_slot_give_back(s);
    dapi_reply(s->client, err, out);
}

struct dapi_reply dapi_slot_reply(struct dapi_slot *s, struct dapi_reply client,
                                  struct dapi_queries *queries, const unsigned char *key)
{
    s->client = client;
    s->queries = queries;
    memcpy(s->key, key, DAPI_KEY_HASH_LEN);
    s->held = 1;
    return (struct dapi_reply){slot_done, s};
}

void dapi_slot_give_back(struct dapi_slot *s)
{
    if(s->held) {
        s->held = 0;
        dapi_queries_unadmit(s->queries, s->key);
    }
}

void dapi_slot_keep(struct dapi_slot *s)
{
    s->held = 0;
}

void dapi_reply_created(struct dapi_reply rp, const char *slug, const char *sql)
{
    dapi_reply_created_reused(rp, slug, sql, 0);
}

void dapi_reply_created_reused(struct dapi_reply rp, const char *slug, const char *sql, int reused)
{
    struct dapi_outcome o = {
        .kind = DAPI_OUTCOME_CREATED, .slug = slug, .sql = sql, .reused = reused};
    rp.done(rp.ctx, DAPI_OK, &o);
}

void dapi_reply_page(struct dapi_reply rp, const char *slug, const char *page_text,
                     const char *rows, size_t len, uint64_t nrows)
{
    dapi_reply_page_waited(rp, slug, page_text, rows, len, nrows, 0);
}

void dapi_reply_page_waited(struct dapi_reply rp, const char *slug, const char *page_text,
                            const char *rows, size_t len, uint64_t nrows, int64_t wait_us)
{
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_PAGE,
                             .slug = slug,
                             .page_text = page_text,
                             .rows = rows,
                             .len = len,
                             .nrows = nrows,
                             .wait_us = wait_us};
    rp.done(rp.ctx, DAPI_OK, &o);
}

void dapi_reply_json(struct dapi_reply rp, const char *body, size_t len)
{
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_JSON, .rows = body, .len = len};
    rp.done(rp.ctx, DAPI_OK, &o);
}

void dapi_reply_created_timed(struct dapi_reply rp, const char *slug, const char *sql, int reused,
                              int64_t queue_us, int64_t check_us)
{
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_CREATED,
                             .slug = slug,
                             .sql = sql,
                             .reused = reused,
                             .queue_us = queue_us,
                             .check_us = check_us};
    rp.done(rp.ctx, DAPI_OK, &o);
}

uint64_t dapi_backend_page_rows(const struct dapi_result *r, uint64_t page)
{
    uint64_t pages = dapi_result_pages(r);
    if(page == 0 || page > pages)
        return 0;
    return page < pages ? DAPI_PAGE_ROWS : dapi_result_rows(r) - DAPI_PAGE_ROWS * (pages - 1);
}

void dapi_reply_result_page(struct dapi_reply rp, const char *slug, const char *page_text,
                            struct dapi_result *result, uint64_t page_no, int64_t max_age,
                            int64_t wait_us)
{
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_PAGE,
                             .slug = slug,
                             .page_text = page_text,
                             .result = result,
                             .page_no = page_no,
                             .max_age = max_age,
                             .wait_us = wait_us};
    rp.done(rp.ctx, DAPI_OK, &o);
}

void dapi_reply_err(struct dapi_reply rp, enum dapi_err err, const char *details)
{
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                             .details = details && *details ? details : NULL};
    rp.done(rp.ctx, err, &o);
}

void dapi_reply_failed(struct dapi_reply rp, enum dapi_err err, int status, const char *details,
                       const char *slug, const char *page_text)
{
    if(err == DAPI_ERR_UPSTREAM_TIMEOUT) {
        /* The upstream was slow: not a failure of the query (a 504 in the execution-failure
         * shape is the query's own time limit, final), so the generic shape, which clients
         * treat as "unavailable, retry later". */
        dapi_reply_err(rp, err, details);
        return;
    }
    struct dapi_outcome o = {.kind = DAPI_OUTCOME_FAILED,
                             .slug = slug,
                             .page_text = page_text,
                             .details = details,
                             .status = status};
    rp.done(rp.ctx, err, &o);
}

void dapi_backend_create_failure(struct dapi_reply rp, enum dapi_err err, const char *why)
{
    if(err == DAPI_ERR_BUSY) { /* store full, or no space on the state disk: temporary */
        struct dapi_outcome o = {
            .kind = DAPI_OUTCOME_ERROR,
            .details = why && *why ? why : "the result store is full (--max-state-bytes)",
            .retry_after = 30}; /* longer than the table's 5 s */
        rp.done(rp.ctx, err, &o);
    } else {
        dapi_reply_err(rp, err, why);
    }
}

void dapi_backend_refuse_admission(const struct dapi_backend_env *env, struct dapi_reply rp,
                                   enum dapi_err err, const unsigned char *key_hash)
{
    char d[256];
    if(err == DAPI_ERR_RATE) {
        snprintf(d, sizeof d,
                 "this API key already has %llu queries being checked, queued or running; the "
                 "limit is %lld (--max-queries-per-key): retry when one of them has finished",
                 (unsigned long long)dapi_queries_active(env->queries, key_hash),
                 (long long)env->cfg->max_queries_per_key);
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = "Too many queries for this API key, retry later",
                                 .details = d};
        rp.done(rp.ctx, err, &o);
    } else if(err == DAPI_ERR_BUSY) {
        dapi_reply_err(rp, err, "too many queries waiting to run (--max-queued-queries)");
    } else {
        dapi_reply_err(rp, err, NULL);
    }
}

/* ---- result reuse ------------------------------------------------------------------ */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void hex_of(const unsigned char *h, char *out)
{
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* The scope's layers sorted, each followed by '\n' ("*\n" for every layer). */
static void add_scope(struct dapi_buf *b, const struct dapi_scope *scope)
{
    if(!scope || scope->all) {
        dapi_buf_adds(b, "*\n");
        return;
    }
    const char *l[DAPI_SCOPE_MAX_LAYERS];
    for(size_t i = 0; i < scope->n; i++)
        l[i] = scope->layers[i];
    qsort(l, scope->n, sizeof *l, cmp_cstr);
    for(size_t i = 0; i < scope->n; i++)
        dapi_buf_addf(b, "%s\n", l[i]);
}

int dapi_backend_reuse_ident(const char *backend, const struct dapi_scope *scope,
                             const char *upstream_id, const char *text, const unsigned char *owner,
                             char *out)
{
    return dapi_backend_reuse_ident_bound(backend, scope, upstream_id, text, NULL, owner, out);
}

int dapi_backend_reuse_ident_bound(const char *backend, const struct dapi_scope *scope,
                                   const char *upstream_id, const char *text, const char *params,
                                   const unsigned char *owner, char *out)
{
    static const char loc[] = "\"query_location\":";
    unsigned char h[DAPI_KEY_HASH_LEN];
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    dapi_buf_addf(&b, "dapi-reuse-1\n%s\n%s\n", backend, upstream_id ? upstream_id : "");
    add_scope(&b, scope);
    for(const char *p = text; *p;) {
        const char *m = strstr(p, loc);
        if(!m) {
            dapi_buf_adds(&b, p);
            break;
        }
        dapi_buf_add(&b, p, (size_t)(m - p));
        p = m + sizeof loc - 1;
        while((*p >= '0' && *p <= '9') || *p == '-')
            p++;
    }
    /* the bound values, typed (canonical JSON: 1 and "1" differ); a parse tree never holds a
     * raw control character, so this cannot be confused with a tree's own text */
    if(params)
        dapi_buf_addf(&b, "\n\001params\n%s", params);
    /* per owner unless shared (an identity without this line is the one every owner shares,
     * as before the setting existed) */
    if(owner) {
        char hex[2 * DAPI_KEY_HASH_LEN + 1];
        hex_of(owner, hex);
        dapi_buf_addf(&b, "\n\002owner\n%s", hex);
    }
    if(!b.data)
        return -1;
    dapi_sha256(b.data, b.len, h);
    hex_of(h, out);
    dapi_buf_free(&b);
    return 0;
}

struct fp_files {
    char **v;
    size_t n, cap;
    int incomplete; /* too many files, or no memory: no fingerprint */
};

#define FP_MAX_FILES 100000

/* Adds "path\tsize\tmtime" for every file under dir (rel: its name in the lake). */
static void fp_walk(struct fp_files *f, const char *dir, const char *rel, int depth,
                    const char *lake_real)
{
    DIR *d = depth < 16 ? opendir(dir) : NULL;
    struct dirent *de;
    while(d && (de = readdir(d))) {
        if(de->d_name[0] == '.')
            continue;
        char path[4096], name[4096], line[4400];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        snprintf(name, sizeof name, "%s/%s", rel, de->d_name);
        if(lstat(path, &st))
            continue;
        int link = S_ISLNK(st.st_mode);
        if(link && stat(path, &st)) /* a dangling link: its name only */
            memset(&st, 0, sizeof st);
        /* a linked layer is followed only when it leads inside the lake, as the lake scan
         * requires: a link that leaves it is never read, and could cover the whole machine */
        if(S_ISDIR(st.st_mode) &&
           (!link || (depth == 0 && dapi_lake_contains(lake_real, path, NULL)))) {
            fp_walk(f, path, name, depth + 1, lake_real);
            continue;
        }
        /* a linked file counts with its target's size and mtime; a linked directory by its
         * name only (not followed: links may loop or leave the lake) */
        snprintf(line, sizeof line, "%s\t%lld\t%lld.%09ld\n", name, (long long)st.st_size,
                 (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
        if(f->n >= FP_MAX_FILES) {
            f->incomplete = 1;
            break;
        }
        if(f->n == f->cap) {
            size_t c = f->cap ? f->cap * 2 : 64;
            void *p = realloc(f->v, c * sizeof *f->v);
            if(!p) {
                f->incomplete = 1;
                break;
            }
            f->v = p;
            f->cap = c;
        }
        if((f->v[f->n] = strdup(line)))
            f->n++;
        else
            f->incomplete = 1;
    }
    if(d)
        closedir(d);
}

/* Fingerprints kept while the lake's generation holds (nothing changed under it): a walk of
 * the lake per creation costs milliseconds on a lake of thousands of files. Keyed by the
 * scope's layers ("/" cannot be in a layer's name); a few scopes are in use at a time. */
#define FP_CACHE 32
static struct {
    pthread_mutex_t lock;
    struct {
        uint64_t gen;
        unsigned char scope[DAPI_KEY_HASH_LEN]; /* SHA-256 of the scope's layers */
        char fp[DAPI_REUSE_HEX];
    } v[FP_CACHE];
    size_t next;
} fp_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void scope_key(const struct dapi_scope *scope, unsigned char out[DAPI_KEY_HASH_LEN])
{
    char text[DAPI_SCOPE_MAX_LAYERS * (DAPI_LAYER_NAME_MAX + 1) + 2];
    size_t at = (size_t)snprintf(text, sizeof text, "%s", !scope || scope->all ? "*" : "");
    for(size_t i = 0; scope && !scope->all && i < scope->n && at < sizeof text; i++)
        at += (size_t)snprintf(text + at, sizeof text - at, "%s/", scope->layers[i]);
    dapi_sha256(text, at < sizeof text ? at : sizeof text - 1, out);
}

static int fp_walk_all(const char *data_dir, const struct dapi_scope *scope, char *out);

int dapi_backend_lake_fingerprint(const char *data_dir, const struct dapi_scope *scope,
                                  uint64_t gen, char *out)
{
    unsigned char key[DAPI_KEY_HASH_LEN];
    scope_key(scope, key);
    if(gen) {
        pthread_mutex_lock(&fp_cache.lock);
        for(size_t i = 0; i < FP_CACHE; i++)
            if(fp_cache.v[i].gen == gen && memcmp(fp_cache.v[i].scope, key, sizeof key) == 0) {
                memcpy(out, fp_cache.v[i].fp, DAPI_REUSE_HEX);
                pthread_mutex_unlock(&fp_cache.lock);
                return 0;
            }
        pthread_mutex_unlock(&fp_cache.lock);
    }
    if(fp_walk_all(data_dir, scope, out))
        return -1;
    if(gen) { /* (gen was read before the walk: a change during it makes the next differ) */
        pthread_mutex_lock(&fp_cache.lock);
        size_t i = fp_cache.next++ % FP_CACHE;
        fp_cache.v[i].gen = gen;
        memcpy(fp_cache.v[i].scope, key, sizeof key);
        memcpy(fp_cache.v[i].fp, out, DAPI_REUSE_HEX);
        pthread_mutex_unlock(&fp_cache.lock);
    }
    return 0;
}

static int fp_walk_all(const char *data_dir, const struct dapi_scope *scope, char *out)
{
    struct fp_files f = {0};
    char lake_real[PATH_MAX];
    if(!realpath(data_dir, lake_real)) {
        /* no lake (yet): nothing to walk */
    } else if(!scope || scope->all) {
        fp_walk(&f, data_dir, "", 0, lake_real); /* every layer (and what else it holds) */
    } else {
        for(size_t i = 0; i < scope->n; i++) {
            char dir[4096], rel[256];
            struct stat st;
            snprintf(dir, sizeof dir, "%s/%s", data_dir, scope->layers[i]);
            snprintf(rel, sizeof rel, "/%s", scope->layers[i]);
            if(lstat(dir, &st) == 0 &&
               (!S_ISLNK(st.st_mode) || dapi_lake_contains(lake_real, dir, NULL)))
                fp_walk(&f, dir, rel, 1, lake_real);
        }
    }
    if(f.n) /* none found: f.v is NULL, and qsort(NULL, 0) is undefined */
        qsort(f.v, f.n, sizeof *f.v, cmp_cstr);
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    for(size_t i = 0; i < f.n; i++) {
        dapi_buf_adds(&b, f.v[i]);
        free(f.v[i]);
    }
    free(f.v);
    unsigned char h[DAPI_KEY_HASH_LEN];
    int ok = !f.incomplete && (b.data || !f.n);
    dapi_sha256(b.data ? b.data : "", b.data ? b.len : 0, h);
    hex_of(h, out);
    dapi_buf_free(&b);
    return ok ? 0 : -1;
}

int64_t dapi_backend_reuse_age(int64_t server, const struct dapi_principal *who)
{
    if(server <= 0 || who->reuse_max_age < 0)
        return 0;
    return who->reuse_max_age > 0 && who->reuse_max_age < server ? who->reuse_max_age : server;
}

/* ---- jobs -------------------------------------------------------------------------- */

uint64_t dapi_backend_key_tag(const unsigned char *key_hash)
{
    uint64_t tag = 0;
    if(key_hash)
        memcpy(&tag, key_hash, sizeof tag);
    return tag;
}

enum dapi_err dapi_backend_queue(const struct dapi_backend_env *env, struct dapi_pool *pool,
                                 void (*fn)(void *job, struct dapi_econn *conn), void *job,
                                 const unsigned char *key_hash, struct dapi_reply rp,
                                 const char *why)
{
    /* No cap here: admission (a slot per query being checked, queued or running) bounds the
     * queue already, and a second, looser bound would make the limits inexact. */
    enum dapi_err result = dapi_pool_submit_tagged(pool, fn, job, 0,
                                                   dapi_backend_key_tag(key_hash));
    if(result) {
        dapi_queries_unadmit(env->queries, key_hash);
        dapi_reply_err(rp, DAPI_ERR_BUSY, why);
    }
    return result;
}

/* ---- results ----------------------------------------------------------------------- */

/* DuckDB's own writes (spilling to <state-dir>/tmp) that found the disk full: temporary, like
 * the result writer's. Its message holds the temporary file's path, so it is replaced. */
static int engine_out_of_space(const char *msg)
{
    return msg && (strstr(msg, "No space left on device") || strstr(msg, "Disk quota exceeded"));
}

struct live_slug {
    struct dapi_queries *qs;
    const char *slug;
};

/* The writer published more pages (on the run's thread): page waiters are answered now. */
static void on_publish(void *arg, uint64_t pages)
{
    const struct live_slug *ls = arg;
    dapi_queries_progress(ls->qs, ls->slug, pages);
}

enum dapi_err dapi_backend_write_result(const struct dapi_backend_env *env,
                                        struct dapi_econn *conn, const char *sql,
                                        const char *params, const struct dapi_scope *scope,
                                        const char *path, const char *live_slug, int from_upstream,
                                        struct dapi_buf *small, uint64_t *bytes, char **details)
{
    struct live_slug ls = {env->queries, live_slug};
    const struct dapi_config *cfg = env->cfg;
    struct dapi_result_writer *w = NULL;
    char *msg = NULL;
    uint64_t rows = 0, pages = 0;
    enum dapi_err result;
    struct dapi_result_limits limits = {(uint64_t)cfg->max_result_rows,
                                        (uint64_t)cfg->max_result_bytes, NULL};
    /* A result one key may not store whole is stopped as soon as it is too large; the
     * registry checks the exact file size when it is recorded. */
    if(cfg->max_state_bytes_per_key < cfg->max_result_bytes) {
        limits.max_bytes = (uint64_t)cfg->max_state_bytes_per_key;
        limits.bytes_setting = "the most one API key may store, --max-state-bytes-per-key";
    }
    struct dapi_buf why;
    dapi_buf_init(&why, 64 * 1024);
    *details = NULL;
    *bytes = 0;
    /* set by dapi_queries_cancel: the engine interrupts the run (nobody wants it any more) */
    atomic_int cancel = 0;
    if(live_slug)
        dapi_queries_set_cancel_flag(env->queries, live_slug, &cancel);
    dapi_econn_set_cancel(conn, &cancel);
    if(!(result = dapi_result_writer_open(&w, path, &limits))) {
        if(small)
            dapi_result_writer_keep_small(w, DAPI_PACK_RESULT_MAX);
        if(live_slug) { /* its complete pages are served while it runs */
            struct dapi_result_live *live = dapi_result_writer_live(w);
            dapi_result_writer_on_publish(w, on_publish, &ls);
            dapi_queries_set_live(env->queries, live_slug, live);
            dapi_result_live_unref(live);
        }
        /* SQL over downloaded files is dapi's own; a user's is held to the sandbox */
        int64_t deadline = env->mono_ms() + cfg->query_timeout * 1000;
        result = from_upstream
                     ? dapi_engine_run_trusted(conn, sql, deadline, &dapi_result_sink, w, &msg)
                     : dapi_engine_run_bound(conn, sql, params, scope, deadline, &dapi_result_sink,
                                             w, &msg);
        size_t ncols;
        const char *const *names, *const *types;
        /* the columns go with the result: recorded before the query is finished */
        if(!result && live_slug && !dapi_result_writer_columns(w, &ncols, &names, &types))
            result = dapi_queries_set_columns(env->queries, live_slug, ncols, names, types);
        if(!result)
            result = dapi_result_writer_finish(w, &rows, &pages, bytes);
        size_t len;
        const void *image = result ? NULL : dapi_result_writer_small(w, &len);
        if(image && small)
            result = dapi_buf_add(small, image, len);
    }
    dapi_econn_set_cancel(conn, NULL);
    if(live_slug)
        dapi_queries_set_cancel_flag(env->queries, live_slug, NULL);
    if(result && atomic_load(&cancel)) {
        result = DAPI_ERR_BUSY; /* (not recorded: the query is cancelled) */
        free(msg);
        msg = strdup("the query was cancelled");
    }
    if(result == DAPI_ERR_SQL && engine_out_of_space(msg)) {
        result = DAPI_ERR_BUSY;
        free(msg);
        msg = strdup("no space left on the state disk (--state-dir) for the query's temporary "
                     "data");
    }
    if(result == DAPI_ERR_TIMEOUT)
        dapi_buf_addf(&why, "the query ran longer than %lld s (--query-timeout)",
                      (long long)cfg->query_timeout);
    else if(result == DAPI_ERR_SQL && from_upstream) {
        dapi_buf_adds(&why, "the result file from Nekt is not valid Parquet: ");
        dapi_buf_add_cut(&why, msg ? msg : "unreadable", 32 * 1024);
    } else if(result && msg)
        dapi_buf_add_cut(&why, msg, 32 * 1024); /* DuckDB's, which may echo a long SQL text */
    else if(result && w && dapi_result_writer_error(w))
        dapi_buf_adds(&why, dapi_result_writer_error(w));
    else if(result == DAPI_ERR_BUSY && !w) /* the writer could not even start */
        dapi_buf_adds(&why, "no space left on the state disk (--state-dir) for the result");
    else if(result)
        dapi_buf_adds(&why, dapi_err_message(result));
    if(result == DAPI_ERR_SQL && from_upstream)
        result = DAPI_ERR_UPSTREAM;
    /* Every reason is bounded, so only a lack of memory leaves the code's message. */
    if(result && !(*details = dapi_buf_take(&why, NULL)))
        *details = strdup(dapi_err_message(result));
    dapi_buf_free(&why);
    dapi_result_writer_free(w);
    free(msg);
    return result;
}

/* Memory is shared by every key's queries (--memory-limit), so a query that runs out of it
 * while others run may be the victim of a larger one rather than too large itself. Such a
 * failure is retryable (answered 503 and run again, as a full disk is) at most this many
 * times; the run again first waits for the work that was in flight when it failed, so the
 * victim of a large query runs once that query has ended, and a query too large for the
 * server fails for good when it runs alone or has used its retries. */
#define MEMORY_RETRIES 2

static void wait_for_memory(const struct dapi_backend_env *env, const char *slug)
{
    uint64_t mark;
    if(!dapi_queries_memory_mark(env->queries, slug, &mark))
        return;
    /* the others may run up to their time limit; a worker that waits is set aside */
    int64_t deadline = env->mono_ms() + env->cfg->query_timeout * 1000;
    dapi_pool_waiting(1);
    while(!atomic_load(env->stopping) && env->mono_ms() < deadline &&
          !dapi_engine_wait_work(mark, dapi_clock_mono_ms() + 250))
        ;
    dapi_pool_waiting(0);
}

static enum dapi_err memory_retryable(const struct dapi_backend_env *env, struct dapi_econn *conn,
                                      const char *slug, enum dapi_err result, char **details)
{
    uint64_t mark;
    int n, oom;
    if(result != DAPI_ERR_TOO_LARGE || !(oom = dapi_econn_oom_shared(conn, &mark)) ||
       !(n = dapi_queries_memory_retry(env->queries, slug, mark, MEMORY_RETRIES)))
        return result;
    /* (the temporary disk for spilling, --max-spill-bytes, is shared the same way) */
    int spill = oom == DAPI_OOM_SPILL;
    struct dapi_buf b;
    dapi_buf_init(&b, 33 * 1024);
    dapi_buf_addf(&b,
                  "the query ran out of %s while other queries were running (all share %s); it "
                  "runs again once they have ended (retry %d of %d): ",
                  spill ? "temporary disk space" : "memory",
                  spill ? "--max-spill-bytes" : "--memory-limit", n, MEMORY_RETRIES);
    dapi_buf_adds(&b, *details ? *details : "");
    char *d = dapi_buf_take(&b, NULL);
    dapi_buf_free(&b);
    if(d) {
        free(*details);
        *details = d;
    }
    dapi_warn("query %s ran out of memory beside other work: retryable (%d of %d)", slug, n,
              MEMORY_RETRIES);
    dapi_metrics_count("dapi_memory_retries_total",
                       "runs that ran out of memory beside other queries, answered as retryable",
                       1);
    return DAPI_ERR_BUSY;
}

void dapi_backend_materialise(const struct dapi_backend_env *env, struct dapi_econn *conn,
                              const char *slug, const char *sql)
{
    char path[4096], *details = NULL, why[512];
    uint64_t bytes = 0;
    struct dapi_scope *scope = malloc(sizeof *scope);
    if(!scope) {
        dapi_queries_finish(env->queries, slug, DAPI_ERR_NOMEM, NULL, 0);
        return;
    }
    /* the layers it may read: the registry's, as stored when it was created */
    enum dapi_err result = dapi_queries_scope(env->queries, slug, scope);
    if(result) {
        free(scope);
        return; /* expired meanwhile */
    }
    wait_for_memory(env, slug);
    result = dapi_queries_start_run(env->queries, slug, why, sizeof why);
    if(result == DAPI_ERR_NOT_FOUND || result == DAPI_ERR_INVALID) {
        free(scope);
        return; /* expired meanwhile, or finished by someone else */
    }
    if(result) { /* the attempt could not be recorded: running it would defeat the guard */
        dapi_warn("query %s not run: %s", slug, why);
        dapi_queries_finish(env->queries, slug, result, why, 0);
        free(scope);
        return;
    }
    dapi_queries_result_path(env->queries, slug, path, sizeof path);
    int64_t t0 = env->mono_ms();
    /* the values of its $parameters: the registry's, as stored when it was created */
    char *params = dapi_queries_params(env->queries, slug);
    struct dapi_buf small;
    dapi_buf_init(&small, DAPI_PACK_RESULT_MAX);
    result = dapi_backend_write_result(env, conn, sql, params, scope, path, slug, 0, &small,
                                       &bytes, &details);
    result = memory_retryable(env, conn, slug, result, &details);
    free(params);
    free(scope);
    if(result && atomic_load(env->stopping)) {
        dapi_info("query %s interrupted by shutdown; it will run again after a restart", slug);
        dapi_queries_drop(env->queries, slug);
    } else {
        if(result && dapi_queries_cancelled(env->queries, slug))
            dapi_info("query %s: run stopped (the query is cancelled)", slug);
        else if(result)
            dapi_info("query %s failed (%s)", slug, dapi_err_message(result));
        else
            dapi_info("query %s done: %llu bytes, %lld ms", slug, (unsigned long long)bytes,
                      (long long)(env->mono_ms() - t0));
        if(!result && small.len)
            dapi_queries_finish_small(env->queries, slug, small.data, small.len);
        else
            dapi_queries_finish(env->queries, slug, result, details, bytes);
    }
    dapi_buf_free(&small);
    free(details);
}

struct run_job {
    const struct dapi_backend_env *env;
    char slug[DAPI_SLUG_MAX];
    char *sql;
};

static void run_query(void *arg, struct dapi_econn *conn)
{
    struct run_job *j = arg;
    /* conn == NULL: discarded at shutdown; it stays queued on disk and runs after a restart */
    if(conn)
        dapi_backend_materialise(j->env, conn, j->slug, j->sql);
    else
        dapi_queries_drop(j->env->queries, j->slug);
    free(j->sql);
    free(j);
}

enum dapi_err dapi_backend_submit_run(const struct dapi_backend_env *env, const char *slug,
                                      const char *sql, const unsigned char *key_hash)
{
    struct run_job *j = calloc(1, sizeof *j);
    if(!j || !(j->sql = strdup(sql))) {
        free(j);
        return DAPI_ERR_NOMEM;
    }
    j->env = env;
    snprintf(j->slug, sizeof j->slug, "%s", slug);
    enum dapi_err result = dapi_pool_submit_tagged(env->run_pool, run_query, j, 0,
                                                   dapi_backend_key_tag(key_hash));
    if(result) {
        free(j->sql);
        free(j);
    }
    return result;
}

/* A query that failed for lack of room, queued again by a results request. */
static void retry_run(const struct dapi_backend_env *env, const char *slug)
{
    char *sql = dapi_queries_sql(env->queries, slug);
    if(!sql || dapi_backend_submit_run(env, slug, sql, NULL))
        dapi_queries_finish(env->queries, slug, DAPI_ERR_BUSY,
                            "the server could not queue the query", 0);
    free(sql);
}

/* ---- answering from the registry --------------------------------------------------- */

struct wait_ctx {
    const struct dapi_backend_env *env;
    struct dapi_reply rp;
    char slug[DAPI_SLUG_MAX + 1];
    unsigned char key[DAPI_KEY_HASH_LEN];
    char *client_key; /* for rerun (Nekt forwarding); owned */
    void (*rerun)(void *state, const char *slug, const char *key);
    void *state;
    char page[64];
    uint64_t page_no;
    int64_t deadline_ms; /* of the wait (--result-wait), set when it starts; 0 before */
    int64_t start_us;    /* when the request reached the backend (Server-Timing: wait) */
};

static void wait_free(struct wait_ctx *c)
{
    free(c->client_key);
    free(c);
}

static void answer(struct wait_ctx *c, int may_wait);

static void on_wait(void *arg, int timed_out)
{
    struct wait_ctx *c = arg;
    if(timed_out) {
        if(atomic_load(c->env->stopping)) {
            dapi_reply_err(c->rp, DAPI_ERR_SHUTDOWN, "the query will run again after the restart");
        } else {
            char d[128];
            snprintf(d, sizeof d, "the query is still running after %lld s (--result-wait)",
                     (long long)c->env->cfg->result_wait);
            dapi_reply_failed(c->rp, DAPI_ERR_TIMEOUT, 504, d, c->slug, c->page);
        }
        wait_free(c);
        return;
    }
    /* ended, or the page is published; or the run it waited on ended before this query's
     * own outcome is known: it may wait again, until the same deadline */
    answer(c, 1);
}

/* A query that failed for want of room (no space on the state disk, or no queue place), not
 * because of the query: the client's retry loop should get its result once there is room.
 * So: 503 + Retry-After (not the execution-failure shape, which clients take as final), and
 * the query is queued to run again — once per such answer, so an unchanged full disk costs
 * one run per Retry-After, not a busy loop. */
static void answer_busy(struct wait_ctx *c, const char *message)
{
    const struct dapi_backend_env *env = c->env;
    char d[1400];
    enum dapi_err again = dapi_queries_retry(env->queries, c->slug);
    if(again == DAPI_OK) {
        if(!c->rerun)
            retry_run(env, c->slug);
        else if(dapi_queries_claim(env->queries, c->slug))
            c->rerun(c->state, c->slug, c->client_key);
    }
    snprintf(d, sizeof d, "%s; %s", *message ? message : "the server was busy",
             again == DAPI_OK ? "the query is queued to run again: retry this request"
                              : "retry this request to run the query again");
    if(again == DAPI_ERR_RATE) {
        dapi_backend_refuse_admission(env, c->rp, again, c->key);
    } else {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .details = d,
                                 .retry_after = 30}; /* a rerun takes longer than 5 s */
        dapi_reply(c->rp, DAPI_ERR_BUSY, &o);
    }
}

/* How long the request has waited for its page (Server-Timing: wait), at least 1 µs: 0 means
 * "not measured", and a page of a finished query can be found within the clock's step. */
static int64_t waited_us(const struct wait_ctx *c)
{
    int64_t us = dapi_clock_mono_us() - c->start_us;
    return us > 0 ? us : 1;
}

/* Copies page c->page_no of a result still being written into the answer: 1 answered, 0 not
 * published yet, -1 unreadable (served once the run is done). */
static int answer_live(struct wait_ctx *c, struct dapi_result_live *live)
{
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2); /* (a page is bounded by --max-result-bytes) */
    int got = dapi_result_live_page(live, c->page_no, &b);
    if(got > 0)
        dapi_reply_page_waited(c->rp, c->slug, c->page, b.data ? b.data : "", b.len,
                               DAPI_PAGE_ROWS, /* (a page published early is complete) */
                               waited_us(c));
    dapi_buf_free(&b);
    return got;
}

/* Answers from the query's current state; frees c unless it now waits. */
static void answer(struct wait_ctx *c, int may_wait)
{
    const struct dapi_backend_env *env = c->env;
    struct dapi_qview v;
    if(dapi_queries_get(env->queries, c->slug, c->key, env->wall_s(), &v)) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR, .message = "Query not found"};
        dapi_reply(c->rp, DAPI_ERR_NOT_FOUND, &o);
        wait_free(c);
        return;
    }
    int whole = c->page_no == DAPI_PAGE_WHOLE || c->page_no == DAPI_PAGE_LIVE;
    if((v.state == DAPI_Q_QUEUED || v.state == DAPI_Q_RUNNING) && c->page_no == DAPI_PAGE_LIVE &&
       v.live && dapi_result_live_pages(v.live) > 0) {
        /* the export streams the pages published so far, then the rest as they come */
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_PAGE,
                                 .slug = c->slug,
                                 .page_text = c->page,
                                 .page_no = DAPI_PAGE_LIVE,
                                 .live = v.live,
                                 .wait_us = waited_us(c)};
        dapi_reply(c->rp, DAPI_OK, &o);
        dapi_queries_release(env->queries, &v);
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_QUEUED || v.state == DAPI_Q_RUNNING) {
        /* a complete page of a run still going is served at once (the body is the same:
         * it holds no page count) */
        int got = v.live && !whole ? answer_live(c, v.live) : 0;
        int orphan = got <= 0 && v.state == DAPI_Q_QUEUED && c->rerun &&
                     dapi_queries_claim(env->queries, c->slug);
        dapi_queries_release(env->queries, &v);
        if(got > 0) {
            wait_free(c);
            return;
        }
        if(!c->deadline_ms)
            c->deadline_ms = env->mono_ms() + env->cfg->result_wait * 1000;
        /* woken when the page is published or the run ends; a page that could not be read
         * early is served from the finished result; the live export waits for page 1 */
        uint64_t page = c->page_no == DAPI_PAGE_LIVE ? 1 : got < 0 || whole ? 0 : c->page_no;
        if(may_wait &&
           dapi_queries_wait_page(env->queries, c->slug, page, c->deadline_ms, on_wait, c) == 0) {
            if(orphan)
                c->rerun(c->state, c->slug, c->client_key);
            return;
        }
        if(may_wait) { /* finished in between */
            answer(c, 0);
            return;
        }
        dapi_reply_err(c->rp, DAPI_ERR_INTERNAL, "query state changed");
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_FAILED && v.error == DAPI_ERR_BUSY) {
        char message[sizeof v.message];
        snprintf(message, sizeof message, "%s", v.message);
        dapi_queries_release(env->queries, &v);
        answer_busy(c, message);
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_CANCELLED) {
        struct dapi_outcome o = {.kind = DAPI_OUTCOME_ERROR,
                                 .message = "Query cancelled",
                                 .details = v.message,
                                 .status = 410,
                                 .retry_after = -1};
        dapi_reply(c->rp, DAPI_ERR_NOT_FOUND, &o);
        dapi_queries_release(env->queries, &v);
        wait_free(c);
        return;
    }
    if(v.state == DAPI_Q_FAILED) {
        dapi_reply_failed(c->rp, v.error, 0, v.message, c->slug, c->page);
        dapi_queries_release(env->queries, &v);
        wait_free(c);
        return;
    }
    /* A finished result never changes: cacheable until the slug expires. */
    int64_t left = v.expires_s - env->wall_s();
    dapi_reply_result_page(c->rp, c->slug, c->page, v.result, c->page_no, left > 0 ? left : 0,
                           waited_us(c));
    dapi_queries_release(env->queries, &v);
    wait_free(c);
}

void dapi_backend_answer_stored(const struct dapi_backend_env *env, const char *slug,
                                uint64_t page, const char *page_text,
                                const unsigned char *key_hash, const char *key,
                                void (*rerun)(void *state, const char *slug, const char *key),
                                void *state, struct dapi_reply rp)
{
    struct wait_ctx *c = calloc(1, sizeof *c);
    if(!c || (key && !(c->client_key = strdup(key)))) {
        free(c);
        dapi_reply_err(rp, DAPI_ERR_NOMEM, NULL);
        return;
    }
    c->env = env;
    c->rp = rp;
    c->rerun = rerun;
    c->state = state;
    dapi_copy_str(c->slug, sizeof c->slug, slug);
    memcpy(c->key, key_hash, DAPI_KEY_HASH_LEN);
    dapi_copy_str(c->page, sizeof c->page, page_text);
    c->page_no = page;
    c->start_us = dapi_clock_mono_us();
    answer(c, 1); /* may wait for the query: answered by whichever thread finishes it */
}
