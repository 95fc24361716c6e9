/* The Nekt emulator (--emulate-nekt): the upstream Nekt API described in docs/nekt.md served on top
 * of the local engine and dapi's keys, so that development and CI have an offline Nekt and
 * the Nekt backend has a real HTTP peer to be tested against.
 *
 *   POST /api/v1/sql-query/                               v2: run, answer presigned URLs
 *   GET  /api/v1/explorer/application/                    v1: {"status": inactive|activating|active}
 *   POST /api/v1/explorer/application/start/
 *   POST /api/v1/explorer/queries/                        {"sql_query"} -> {"slug"}
 *   POST /api/v1/explorer/queries/{slug}/execution/       {"page_number"} -> {"id","status"}
 *   GET  /api/v1/explorer/queries/{slug}/execution/{id}/  {"status": running|complete|failed}
 *   GET  /api/v1/explorer/queries/{slug}/execution/{id}/results/  {"presigned_url"}
 *   GET  /emu-files/{id}/{file}?expires=T&signature=S     the Parquet files (HMAC-signed, expire)
 *
 * These paths are the route table emu_routes (below), registered with the API's router by
 * dapi_emu_start. Requests are handled on the emulator's own worker pool and engine (which may
 * write only into <state-dir>/emu), so faults can add latency without holding an HTTP thread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/respond.h"
#include "app/app.h"
#include "auth/keystore.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "base/log.h"
#include "emu/emu.h"
#include "emu/faults.h"
#include "engine/engine.h"
#include "pool/pool.h"

#define EXEC_KEEP_S 3600

struct emu_app {
    unsigned char key[DAPI_KEY_HASH_LEN];
    int64_t started_ms;
    struct emu_app *next;
};

struct emu_exec {
    char id[40];
    char query[64];
    unsigned char key[DAPI_KEY_HASH_LEN];
    int status; /* 0 running, 1 complete, 2 failed */
    char *error;
    int64_t created_s;
    struct emu_exec *next;
};

struct dapi_emu {
    struct dapi_engine *engine;
    struct dapi_pool *pool;
    struct dapi_faults *faults;
    char dir[4096];
    unsigned char secret[32];
    pthread_mutex_t mu;
    struct emu_app *apps;
    struct emu_exec *execs;
};

struct emu_req;
/* What answers one route and method, on the emulator's workers. */
typedef void emu_op(struct emu_req *e, struct dapi_econn *conn, const struct dapi_fault_action *f);

/* Everything a job needs, copied out of the request before it is handed over. */
struct emu_req {
    struct dapi_app *app;
    struct dapi_req *req;
    emu_op *op;  /* chosen by the route table, on the event thread */
    int keyless; /* /emu-files/: the URL's signature stands for the key */
    char *method, *path, *body, *key, *host, *expires, *signature;
    size_t body_len;
    unsigned char kh[DAPI_KEY_HASH_LEN];
    int key_ok;
    struct dapi_scope scope; /* the key's layers: every query it sends is held to them */
};

/* ---- answers ----------------------------------------------------------------------- */

static void answer(struct emu_req *e, int status, struct dapi_buf *b,
                   const struct dapi_fault_action *f)
{
    if(!b->data) {
        dapi_respond_err(e->req, DAPI_ERR_NOMEM, NULL);
        return;
    }
    if(!strcmp(f->body, "truncate") && b->len > 1)
        b->len /= 2;
    else if(!strcmp(f->body, "garbage")) {
        dapi_buf_reset(b);
        dapi_buf_adds(b, "<html><body>502 Bad Gateway</body></html>");
    } else if(!strcmp(f->body, "wrongtype")) {
        dapi_buf_reset(b);
        dapi_buf_adds(b, "{\"state\":7,\"presigned_urls\":\"nope\",\"status\":[1],\"slug\":42,"
                         "\"id\":{\"x\":1},\"presigned_url\":false}");
    } else if(!strcmp(f->body, "empty")) {
        dapi_buf_reset(b);
    }
    size_t len = 0;
    char *body = dapi_buf_take(b, &len);
    dapi_req_respond(e->req, status, body, body ? len : 0, NULL, NULL);
}

static void detail(struct emu_req *e, int status, const char *msg,
                   const struct dapi_fault_action *f)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    dapi_buf_adds(&b, "{\"detail\":");
    dapi_json_str(&b, msg, strlen(msg));
    dapi_buf_addc(&b, '}');
    answer(e, status, &b, f);
}

/* ---- presigned URLs ------------------------------------------------------------------ */

static void sign(struct dapi_emu *emu, const char *what, long long expires, char *hex)
{
    char msg[512];
    unsigned char mac[32];
    snprintf(msg, sizeof msg, "%s:%lld", what, expires);
    dapi_hmac_sha256(emu->secret, sizeof emu->secret, msg, strlen(msg), mac);
    for(unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

/* A presigned URL of file: on the host the request named (the emulator as the client reaches
 * it), or where a url_host fault sends it. */
static void add_url(struct emu_req *e, struct dapi_buf *b, const char *id, const char *file,
                    const struct dapi_fault_action *f)
{
    struct dapi_emu *emu = e->app->emu;
    char what[256], sig[65], url[1024];
    long long expires = (long long)dapi_clock_wall_s() + e->app->cfg->emulate_url_ttl;
    snprintf(what, sizeof what, "%s/%s", id, file);
    sign(emu, what, expires, sig);
    snprintf(url, sizeof url, "http://%s/emu-files/%s?expires=%lld&signature=%s",
             f->url_host[0] ? f->url_host
             : e->host      ? e->host
                            : "127.0.0.1",
             what, expires, sig);
    dapi_json_str(b, url, strlen(url));
}

static int safe_name(const char *s)
{
    if(!*s || *s == '.')
        return 0;
    for(; *s; s++)
        if(!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
             *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

static void serve_file(struct emu_req *e, const struct dapi_fault_action *f)
{
    struct dapi_emu *emu = e->app->emu;
    char id[64], file[128], sig[65], path[4400];
    const char *rest = e->path + strlen("/emu-files/"), *slash = strchr(rest, '/');
    if(!slash || (size_t)(slash - rest) >= sizeof id || strlen(slash + 1) >= sizeof file) {
        detail(e, 404, "Not found.", f);
        return;
    }
    snprintf(id, sizeof id, "%.*s", (int)(slash - rest), rest);
    snprintf(file, sizeof file, "%s", slash + 1);
    char *end = NULL;
    long long expires = e->expires ? strtoll(e->expires, &end, 10) : 0;
    char what[256];
    snprintf(what, sizeof what, "%s/%s", id, file);
    sign(emu, what, expires, sig);
    int valid = e->expires && end && !*end && e->signature && strlen(e->signature) == 64 &&
                dapi_ct_equal(sig, 64, e->signature, 64);
    if(!valid || !safe_name(id) || !safe_name(file)) {
        detail(e, 403, "Signature does not match", f);
        return;
    }
    if(f->expire || expires < (long long)dapi_clock_wall_s()) {
        detail(e, 403, "Request has expired", f);
        return;
    }
    snprintf(path, sizeof path, "%s/%s/%s", emu->dir, id, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if(fd < 0 || fstat(fd, &st)) {
        if(fd >= 0)
            close(fd);
        detail(e, 404, "The specified key does not exist.", f);
        return;
    }
    dapi_req_respond_file(e->req, 200, fd, (uint64_t)st.st_size, "application/octet-stream");
}

/* ---- v2: sql-query ------------------------------------------------------------------- */

/* Runs sql into dir/data_0.parquet, data_1.parquet … of exactly --emulate-rows-per-file rows
 * (the last one fewer; none for an empty result), in row order: the whole result is written
 * once, then cut with LIMIT/OFFSET over that file (whose scan order is its row order). */
static enum dapi_err split_result(struct dapi_app *app, struct dapi_econn *conn, const char *sql,
                                  const struct dapi_scope *scope, const char *dir, uint64_t *rows,
                                  char **msg)
{
    char all[4400], part[4400];
    int64_t deadline = dapi_clock_mono_ms() + app->cfg->query_timeout * 1000;
    uint64_t per = (uint64_t)app->cfg->emulate_rows_per_file, got;
    if(mkdir(dir, 0700) && errno != EEXIST)
        return DAPI_ERR_IO;
    snprintf(all, sizeof all, "%s/all.parquet", dir);
    enum dapi_err result = dapi_engine_export_parquet(conn, sql, 0, scope, all, 0, deadline, rows,
                                                      msg);
    for(uint64_t k = 0; !result && k * per < *rows; k++) {
        struct dapi_buf q;
        dapi_buf_init(&q, 16384);
        dapi_buf_adds(&q, "SELECT * FROM read_parquet(");
        dapi_engine_sql_literal(&q, all);
        dapi_buf_addf(&q, ") LIMIT %llu OFFSET %llu", (unsigned long long)per,
                      (unsigned long long)(k * per));
        snprintf(part, sizeof part, "%s/data_%llu.parquet", dir, (unsigned long long)k);
        result = q.data ? dapi_engine_export_parquet(conn, q.data, 1, NULL, part, 0, deadline,
                                                     &got, msg)
                        : DAPI_ERR_NOMEM;
        dapi_buf_free(&q);
    }
    unlink(all);
    return result;
}

static int new_id(char *out, size_t n)
{
    char r[25];
    if(dapi_random_base62(r, 24))
        return -1;
    snprintf(out, n, "%s", r);
    return 0;
}

static void sql_query(struct emu_req *e, struct dapi_econn *conn,
                      const struct dapi_fault_action *f)
{
    struct dapi_app *app = e->app;
    struct dapi_jv *doc = NULL;
    char err[256], id[40], dir[4200];
    char *msg = NULL;
    uint64_t rows = 0;
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    if(dapi_jv_parse(e->body ? e->body : "", e->body_len, 32, &doc, err, sizeof err) ||
       dapi_jv_type(doc) != DAPI_J_OBJECT) {
        detail(e, 400, "JSON parse error", f);
        goto out;
    }
    const char *sql = dapi_jv_str(dapi_jv_get(doc, "sql"), NULL);
    const char *mode = dapi_jv_str(dapi_jv_get(doc, "mode"), NULL);
    if(!sql || !*sql) {
        detail(e, 400, "sql: This field is required.", f);
        goto out;
    }
    if(mode && strcmp(mode, "parquet") != 0) {
        detail(e, 400, "mode: the dapi emulator produces Parquet only (\"mode\": \"parquet\")", f);
        goto out;
    }
    if(new_id(id, sizeof id)) {
        detail(e, 500, "no randomness", f);
        goto out;
    }
    snprintf(dir, sizeof dir, "%s/%s", app->emu->dir, id);
    int64_t t0 = dapi_clock_mono_ms();
    enum dapi_err result = split_result(app, conn, sql, &e->scope, dir, &rows, &msg);
    if(result == DAPI_ERR_BUSY) { /* shutting down: not the query's fault, try again later */
        detail(e, 503, "The service is shutting down", f);
        goto out;
    }
    if(result) {
        dapi_buf_adds(&b, "{\"state\":\"FAILED\",\"error\":");
        char *cut;
        const char *m = dapi_bounded_details(msg, &cut); /* as dapi's own answers bound it */
        if(!m)
            m = result == DAPI_ERR_TIMEOUT ? "Query timed out" : dapi_err_message(result);
        dapi_json_str(&b, m, strlen(m));
        dapi_buf_adds(&b, "}");
        free(cut);
        answer(e, 200, &b, f);
        goto out;
    }
    dapi_buf_adds(&b, "{\"state\":\"SUCCEEDED\",\"presigned_urls\":[");
    uint64_t scanned = 0;
    for(int i = 0;; i++) {
        char file[64], path[4400];
        struct stat st;
        snprintf(file, sizeof file, "data_%d.parquet", i);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if(stat(path, &st))
            break;
        scanned += (uint64_t)st.st_size;
        if(i)
            dapi_buf_addc(&b, ',');
        add_url(e, &b, id, file, f);
    }
    dapi_buf_addf(&b, "],\"data_scanned_in_bytes\":%llu,\"execution_time_in_millis\":%lld}",
                  (unsigned long long)scanned, (long long)(dapi_clock_mono_ms() - t0));
    answer(e, 200, &b, f);
out:
    free(msg);
    dapi_buf_free(&b);
    dapi_jv_free(doc);
}

/* ---- v1: application ----------------------------------------------------------------- */

static const char *app_status(struct dapi_emu *emu, const unsigned char *kh, int64_t delay,
                              int start)
{
    int64_t now = dapi_clock_mono_ms();
    pthread_mutex_lock(&emu->mu);
    struct emu_app *a = emu->apps;
    while(a && memcmp(a->key, kh, DAPI_KEY_HASH_LEN) != 0)
        a = a->next;
    if(!a && start && (a = calloc(1, sizeof *a))) {
        memcpy(a->key, kh, DAPI_KEY_HASH_LEN);
        a->started_ms = now;
        a->next = emu->apps;
        emu->apps = a;
    }
    const char *st = !a ? "inactive" : now - a->started_ms >= delay ? "active" : "activating";
    pthread_mutex_unlock(&emu->mu);
    return st;
}

/* ---- v1: queries and executions ------------------------------------------------------ */

static void query_path(struct dapi_emu *emu, const char *slug, char *out, size_t n)
{
    snprintf(out, n, "%s/explorer/%s.json", emu->dir, slug);
}

/* Loads an Explorer query owned by kh: returns its SQL (owned) or NULL. */
static char *load_query(struct dapi_emu *emu, const char *slug, const unsigned char *kh)
{
    char path[4300], owner[65];
    if(!safe_name(slug))
        return NULL;
    query_path(emu, slug, path, sizeof path);
    struct dapi_buf b;
    dapi_buf_init(&b, 8u << 20);
    if(dapi_buf_add_file(&b, path)) {
        dapi_buf_free(&b);
        return NULL;
    }
    struct dapi_jv *doc = NULL;
    char *sql = NULL;
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        snprintf(owner + 2 * i, 3, "%02x", kh[i]);
    if(b.data && !dapi_jv_parse(b.data, b.len, 8, &doc, NULL, 0)) {
        const char *o = dapi_jv_str(dapi_jv_get(doc, "owner"), NULL);
        const char *s = dapi_jv_str(dapi_jv_get(doc, "sql_query"), NULL);
        if(o && s && strcmp(o, owner) == 0)
            sql = strdup(s);
    }
    dapi_jv_free(doc);
    dapi_buf_free(&b);
    return sql;
}

static void create_query(struct emu_req *e, const struct dapi_fault_action *f)
{
    struct dapi_emu *emu = e->app->emu;
    struct dapi_jv *doc = NULL;
    char slug[64], r[9], path[4300], tmp[4400];
    struct dapi_buf b, out;
    dapi_buf_init(&b, 64u << 20);
    dapi_buf_init(&out, 64u << 20);
    if(strcmp(app_status(emu, e->kh, e->app->cfg->emulate_start_delay, 0), "active") != 0) {
        detail(e, 409, "The Explorer application is not active", f);
        goto out;
    }
    const char *sql;
    if(dapi_jv_parse(e->body ? e->body : "", e->body_len, 32, &doc, NULL, 0) ||
       !(sql = dapi_jv_str(dapi_jv_get(doc, "sql_query"), NULL)) || !*sql) {
        detail(e, 400, "sql_query: This field is required.", f);
        goto out;
    }
    if(dapi_random_base62(r, 8)) {
        detail(e, 500, "no randomness", f);
        goto out;
    }
    snprintf(slug, sizeof slug, "explorer-query-%s", r);
    dapi_buf_adds(&b, "{\"owner\":\"");
    for(int i = 0; i < DAPI_KEY_HASH_LEN; i++)
        dapi_buf_addf(&b, "%02x", e->kh[i]);
    dapi_buf_adds(&b, "\",\"sql_query\":");
    dapi_json_str(&b, sql, strlen(sql));
    dapi_buf_adds(&b, "}\n");
    query_path(emu, slug, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = b.data ? fopen(tmp, "w") : NULL;
    if(!fp || fwrite(b.data, 1, b.len, fp) != b.len || fclose(fp) || rename(tmp, path)) {
        detail(e, 500, "cannot store the query", f);
        goto out;
    }
    dapi_buf_addf(&out, "{\"slug\":\"%s\",\"sql_query\":", slug);
    dapi_json_str(&out, sql, strlen(sql));
    dapi_buf_addc(&out, '}');
    answer(e, 201, &out, f);
out:
    dapi_buf_free(&b);
    dapi_buf_free(&out);
    dapi_jv_free(doc);
}

static struct emu_exec *find_exec(struct dapi_emu *emu, const char *query, const char *id,
                                  const unsigned char *kh)
{
    for(struct emu_exec *x = emu->execs; x; x = x->next)
        if(!strcmp(x->id, id) && !strcmp(x->query, query) &&
           !memcmp(x->key, kh, DAPI_KEY_HASH_LEN))
            return x;
    return NULL;
}

static void start_execution(struct emu_req *e, struct dapi_econn *conn, const char *slug,
                            const struct dapi_fault_action *f)
{
    struct dapi_app *app = e->app;
    struct dapi_emu *emu = app->emu;
    struct dapi_jv *doc = NULL;
    struct emu_exec *x = NULL;
    char *sql = NULL, *msg = NULL, dir[4200], file[4300];
    struct dapi_buf b, wrapped;
    dapi_buf_init(&b, 4096);
    dapi_buf_init(&wrapped, 64u << 20);
    if(!(sql = load_query(emu, slug, e->kh))) {
        detail(e, 404, "Not found.", f);
        goto out;
    }
    if(strcmp(app_status(emu, e->kh, app->cfg->emulate_start_delay, 0), "active") != 0) {
        detail(e, 409, "The Explorer application is not active", f);
        goto out;
    }
    struct dapi_jv *pn;
    if(dapi_jv_parse(e->body ? e->body : "", e->body_len, 8, &doc, NULL, 0) ||
       !(pn = dapi_jv_get(doc, "page_number")) || dapi_jv_type(pn) != DAPI_J_INT ||
       dapi_jv_int(pn) < 1) {
        detail(e, 400, "page_number: A valid integer >= 1 is required.", f);
        goto out;
    }
    int64_t page = dapi_jv_int(pn);
    if(!(x = calloc(1, sizeof *x)) || new_id(x->id, sizeof x->id)) {
        detail(e, 500, "out of memory", f);
        free(x);
        x = NULL;
        goto out;
    }
    snprintf(x->query, sizeof x->query, "%s", slug);
    memcpy(x->key, e->kh, DAPI_KEY_HASH_LEN);
    x->created_s = dapi_clock_wall_s();
    pthread_mutex_lock(&emu->mu);
    x->next = emu->execs;
    emu->execs = x;
    pthread_mutex_unlock(&emu->mu);
    dapi_buf_addf(&b, "{\"id\":\"%s\",\"status\":\"running\"}", x->id);
    answer(e, 201, &b, f);
    e->req = NULL; /* answered: the execution goes on after the answer, as upstream does */

    /* Each page is its own execution (as in the reference's flow): the query's rows
     * (page-1)*100 … page*100-1, in the engine's natural order. */
    snprintf(dir, sizeof dir, "%s/%s", emu->dir, x->id);
    snprintf(file, sizeof file, "%s/data_0.parquet", dir);
    mkdir(dir, 0700);
    dapi_buf_adds(&wrapped, "SELECT * FROM (\n");
    dapi_buf_adds(&wrapped, sql);
    dapi_buf_addf(&wrapped, "\n) LIMIT 100 OFFSET %lld", (long long)((page - 1) * 100));
    uint64_t rows = 0;
    enum dapi_err result = wrapped.data
                               ? dapi_engine_export_parquet(
                                     conn, wrapped.data, 0, &e->scope, file, 0,
                                     dapi_clock_mono_ms() + app->cfg->query_timeout * 1000, &rows,
                                     &msg)
                               : DAPI_ERR_NOMEM;
    /* Interrupted by shutdown: the execution stays "running" and is forgotten with the
     * process, so a poller sees 503s, then 404 after the restart, and executes again. */
    if(result != DAPI_ERR_BUSY) {
        pthread_mutex_lock(&emu->mu);
        x->status = result ? 2 : 1;
        if(result)
            x->error = strdup(msg ? msg : dapi_err_message(result));
        pthread_mutex_unlock(&emu->mu);
    }
out:
    free(sql);
    free(msg);
    dapi_jv_free(doc);
    dapi_buf_free(&b);
    dapi_buf_free(&wrapped);
}

static void execution(struct emu_req *e, const char *slug, const char *id, int results,
                      const struct dapi_fault_action *f)
{
    struct dapi_emu *emu = e->app->emu;
    struct dapi_buf b;
    dapi_buf_init(&b, 8192 + 6 * DAPI_DETAILS_MAX); /* room for an error of any size, bounded */
    pthread_mutex_lock(&emu->mu);
    struct emu_exec *x = find_exec(emu, slug, id, e->kh);
    int status = x ? x->status : -1;
    char *cut = NULL;
    const char *bounded = x && x->error ? dapi_bounded_details(x->error, &cut) : NULL;
    char *error = bounded ? strdup(bounded) : NULL;
    free(cut);
    pthread_mutex_unlock(&emu->mu);
    if(status < 0) {
        detail(e, 404, "Not found.", f);
    } else if(!results) {
        static const char *const names[] = {"running", "complete", "failed"};
        dapi_buf_addf(&b, "{\"id\":\"%s\",\"status\":\"%s\"", id, names[status]);
        if(error) {
            dapi_buf_adds(&b, ",\"error\":");
            dapi_json_str(&b, error, strlen(error));
        }
        dapi_buf_addc(&b, '}');
        answer(e, 200, &b, f);
    } else if(status != 1) {
        detail(e, 400, "The execution is not complete", f);
    } else {
        dapi_buf_adds(&b, "{\"presigned_url\":");
        add_url(e, &b, id, "data_0.parquet", f);
        dapi_buf_addc(&b, '}');
        answer(e, 200, &b, f);
    }
    free(error);
    dapi_buf_free(&b);
}

/* ---- routing ------------------------------------------------------------------------- */

static void emu_req_free(struct emu_req *e)
{
    free(e->method);
    free(e->path);
    free(e->body);
    free(e->key);
    free(e->host);
    free(e->expires);
    free(e->signature);
    free(e);
}

/* Splits /api/v1/explorer/queries/{slug}/execution/[{id}/[results/]] */
static int explorer_path(const char *p, char *slug, char *id, int *results)
{
    const char *pre = "/api/v1/explorer/queries/";
    if(strncmp(p, pre, strlen(pre)) != 0)
        return -1;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", p + strlen(pre));
    char *parts[5] = {0};
    int n = 0;
    for(char *s = buf, *t; n < 5 && (t = strsep(&s, "/"));)
        parts[n++] = t;
    /* expected: slug, "execution", [id, ["results"]], "" */
    if(n < 3 || strcmp(parts[1], "execution") != 0 || strlen(parts[0]) >= 64)
        return -1;
    snprintf(slug, 64, "%s", parts[0]);
    *id = '\0';
    *results = 0;
    if(n == 3 && !*parts[2])
        return 0;
    if(n >= 4 && *parts[2] && strlen(parts[2]) < 40) {
        snprintf(id, 40, "%s", parts[2]);
        if(n == 4 && !*parts[3])
            return 0;
        if(n == 5 && !strcmp(parts[3], "results") && !*parts[4]) {
            *results = 1;
            return 0;
        }
    }
    return -1;
}

/* The ops: one per route and method (the route table below picks them). */
static void op_files(struct emu_req *e, struct dapi_econn *conn, const struct dapi_fault_action *f)
{
    serve_file(e, f);
}

static void op_not_allowed(struct emu_req *e, struct dapi_econn *conn,
                           const struct dapi_fault_action *f)
{
    detail(e, 405, "Method not allowed.", f);
}

static void op_not_found(struct emu_req *e, struct dapi_econn *conn,
                         const struct dapi_fault_action *f)
{
    detail(e, 404, "Not found.", f);
}

static void op_sql_query(struct emu_req *e, struct dapi_econn *conn,
                         const struct dapi_fault_action *f)
{
    sql_query(e, conn, f);
}

static void app_answer(struct emu_req *e, int start, const struct dapi_fault_action *f)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 256);
    dapi_buf_addf(&b, "{\"status\":\"%s\"}",
                  app_status(e->app->emu, e->kh, e->app->cfg->emulate_start_delay, start));
    answer(e, 200, &b, f);
}

static void op_app_status(struct emu_req *e, struct dapi_econn *conn,
                          const struct dapi_fault_action *f)
{
    app_answer(e, 0, f);
}

static void op_app_start(struct emu_req *e, struct dapi_econn *conn,
                         const struct dapi_fault_action *f)
{
    app_answer(e, 1, f);
}

static void op_create_query(struct emu_req *e, struct dapi_econn *conn,
                            const struct dapi_fault_action *f)
{
    create_query(e, f);
}

static void op_start_execution(struct emu_req *e, struct dapi_econn *conn,
                               const struct dapi_fault_action *f)
{
    char slug[64], id[40];
    int results;
    explorer_path(e->path, slug, id, &results); /* matched by the route: succeeds */
    start_execution(e, conn, slug, f);
}

static void op_execution(struct emu_req *e, struct dapi_econn *conn,
                         const struct dapi_fault_action *f)
{
    char slug[64], id[40];
    int results;
    explorer_path(e->path, slug, id, &results);
    execution(e, slug, id, results, f);
}

/* On a worker: shutdown, faults, the key (but for the signed file URLs), then the op. */
static void handle(void *arg, struct dapi_econn *conn)
{
    struct emu_req *e = arg;
    struct dapi_emu *emu = e->app->emu;
    struct dapi_fault_action f;
    if(!conn) {
        dapi_respond_err(e->req, DAPI_ERR_SHUTDOWN, NULL);
        goto out;
    }
    dapi_faults_match(emu->faults, e->method, e->path, &f);
    if(f.latency_ms)
        dapi_clock_sleep_ms(f.latency_ms);
    if(f.status) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", f.retry_after);
        struct dapi_buf b;
        dapi_buf_init(&b, 256);
        dapi_buf_adds(&b, "{\"detail\":\"injected fault\"}");
        size_t len = 0;
        char *body = dapi_buf_take(&b, &len);
        dapi_req_respond(e->req, f.status, body, body ? len : 0,
                         f.retry_after >= 0 ? "Retry-After" : NULL,
                         f.retry_after >= 0 ? ra : NULL);
        goto out;
    }
    if(!e->keyless && !e->key_ok) {
        detail(e, 401,
               e->key ? "Invalid API key." : "Authentication credentials were not provided.", &f);
        goto out;
    }
    e->op(e, conn, &f);
out:
    emu_req_free(e);
}

/* On the event thread: copies the request and hands it, with its op, to the workers. */
/* 1 if key is one of the server's: a key of the store (its owner hash in kh, its layers in
 * scope; a revoked or expired one is refused like an unknown key, as Nekt would) or a plain
 * key (every layer). */
static int key_ok(struct dapi_app *app, const char *key, unsigned char kh[DAPI_KEY_HASH_LEN],
                  struct dapi_scope *scope)
{
    scope->all = 1;
    scope->n = 0;
    if(app->keystore) {
        struct dapi_principal who;
        int64_t when;
        enum dapi_ks_result res = dapi_keystore_check(app->keystore, key, strlen(key),
                                                      dapi_clock_wall_s(), &who, &when);
        if(res != DAPI_KS_NOT_OURS) {
            memcpy(kh, who.owner, DAPI_KEY_HASH_LEN);
            *scope = who.scope;
            return res == DAPI_KS_OK;
        }
    }
    return dapi_keys_check(app->keys, key, strlen(key), kh);
}

static void submit(struct dapi_req *r, struct dapi_app *app, emu_op *op, int keyless)
{
    struct emu_req *e = calloc(1, sizeof *e);
    size_t blen;
    const char *body = dapi_req_body(r, &blen);
    const char *key = dapi_req_header(r, "x-api-key"), *host = dapi_req_host(r);
    const char *ex = dapi_req_arg(r, "expires"), *sig = dapi_req_arg(r, "signature");
    if(!e || !(e->method = strdup(dapi_req_method(r))) || !(e->path = strdup(dapi_req_path(r))) ||
       !(e->body = malloc(blen + 1)) || (key && !(e->key = strdup(key))) ||
       (host && !(e->host = strdup(host))) || (ex && !(e->expires = strdup(ex))) ||
       (sig && !(e->signature = strdup(sig)))) {
        if(e)
            emu_req_free(e);
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    memcpy(e->body, body, blen);
    e->body[blen] = '\0';
    e->body_len = blen;
    e->app = app;
    e->req = r;
    e->op = op;
    e->keyless = keyless;
    e->key_ok = key && *key && key_ok(app, key, e->kh, &e->scope);
    dapi_req_defer(r);
    if(dapi_pool_submit(app->emu->pool, handle, e, (size_t)app->cfg->max_queued_queries * 4)) {
        emu_req_free(e);
        dapi_respond_error_h(r, 503, "Server busy, retry later", NULL, "Retry-After", "1");
    }
}

/* The route handlers (api.h's dapi_handler): each submits its op. */
#define EMU_HANDLER(name, op, keyless)                                             \
    static void name(struct dapi_req *r, struct dapi_app *app, const char *unused) \
    {                                                                              \
        submit(r, app, op, keyless);                                               \
    }
EMU_HANDLER(r_files, op_files, 1)
EMU_HANDLER(r_files_not_allowed, op_not_allowed, 1)
EMU_HANDLER(r_not_allowed, op_not_allowed, 0)
EMU_HANDLER(r_not_found, op_not_found, 0)
EMU_HANDLER(r_sql_query, op_sql_query, 0)
EMU_HANDLER(r_app_status, op_app_status, 0)
EMU_HANDLER(r_app_start, op_app_start, 0)
EMU_HANDLER(r_create_query, op_create_query, 0)
EMU_HANDLER(r_start_execution, op_start_execution, 0)
EMU_HANDLER(r_execution, op_execution, 0)

/* .../queries/{slug}/execution/ */
static int is_execution_start(const char *path)
{
    char slug[64], id[40];
    int results;
    return explorer_path(path, slug, id, &results) == 0 && !*id;
}

/* .../queries/{slug}/execution/{id}/ and .../{id}/results/ */
static int is_execution(const char *path)
{
    char slug[64], id[40];
    int results;
    return explorer_path(path, slug, id, &results) == 0 && *id;
}

/* The emulator's routes, registered by dapi_emu_start. Upstream's answers, kept: every route
 * has an "other" handler, so a wrong method answers {"detail": …} without an Allow header —
 * 405 on the file, sql-query and execution paths, 404 on the application and query-creation
 * paths — and, like every /api/v1/ answer, only after the key is checked. Any other path
 * under /api/v1/ is a 404 of the emulator's. */
static const struct dapi_route emu_routes[] = {
    {"/emu-files/", DAPI_ROUTE_ANY, NULL, 0, "GET", r_files, NULL, NULL, r_files_not_allowed,
     "/emu-files/*"},
    {"/api/v1/sql-query/", NULL, NULL, 0, "POST", NULL, NULL, r_sql_query, r_not_allowed,
     "/api/v1/sql-query/"},
    {"/api/v1/explorer/application/", NULL, NULL, 0, "GET", r_app_status, NULL, NULL, r_not_found,
     "/api/v1/explorer/application/"},
    {"/api/v1/explorer/application/start/", NULL, NULL, 0, "POST", NULL, NULL, r_app_start,
     r_not_found, "/api/v1/explorer/application/start/"},
    {"/api/v1/explorer/queries/", NULL, NULL, 0, "POST", NULL, NULL, r_create_query, r_not_found,
     "/api/v1/explorer/queries/"},
    {"/api/v1/explorer/queries/", DAPI_ROUTE_ANY, is_execution_start, 0, "POST", NULL, NULL,
     r_start_execution, r_not_allowed, "/api/v1/explorer/queries/{id}/execution/"},
    {"/api/v1/explorer/queries/", DAPI_ROUTE_ANY, is_execution, 0, "GET", r_execution, NULL, NULL,
     r_not_allowed, "/api/v1/explorer/queries/{id}/execution/{id}/*"},
    {"/api/v1/", DAPI_ROUTE_ANY, NULL, 0, "", NULL, NULL, NULL, r_not_found, "/api/v1/*"},
};

/* ---- lifecycle ----------------------------------------------------------------------- */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while(d && (de = readdir(d))) {
        if(!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[4400];
        if(snprintf(p, sizeof p, "%.4000s/%.255s", dir, de->d_name) < (int)sizeof p)
            unlink(p);
    }
    if(d)
        closedir(d);
    rmdir(dir);
}

int dapi_emu_start(struct dapi_app *app, char *err, size_t errlen)
{
    const struct dapi_config *cfg = app->cfg;
    struct dapi_emu *emu = calloc(1, sizeof *emu);
    if(!emu) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    app->emu = emu;
    pthread_mutex_init(&emu->mu, NULL);
    snprintf(emu->dir, sizeof emu->dir, "%s/emu", cfg->state_dir);
    char qdir[4200];
    snprintf(qdir, sizeof qdir, "%s/explorer", emu->dir);
    if((mkdir(emu->dir, 0700) && errno != EEXIST) || (mkdir(qdir, 0700) && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %s: %s", qdir, strerror(errno));
        return -1;
    }
    if(dapi_random(emu->secret, sizeof emu->secret) ||
       dapi_faults_parse(&emu->faults, cfg->emulate_faults, err, errlen))
        return -1;
    struct dapi_engine_opts eo = {cfg->data_dir,
                                  cfg->state_dir,
                                  cfg->memory_limit,
                                  cfg->duckdb_threads,
                                  emu->dir,
                                  cfg->query_timeout * 1000,
                                  cfg->max_spill_bytes,
                                  strcmp(cfg->lake_watch, "off") == 0};
    if(dapi_engine_open(&emu->engine, &eo, err, errlen))
        return -1;
    int threads = cfg->workers < 4 ? 4 : cfg->workers;
    if(dapi_pool_start(&emu->pool, "emu", threads, emu->engine)) {
        snprintf(err, errlen, "cannot start the emulator's workers");
        return -1;
    }
    if(dapi_api_register_routes(app, emu_routes, sizeof emu_routes / sizeof emu_routes[0])) {
        snprintf(err, errlen, "cannot register the emulator's routes");
        return -1;
    }
    dapi_info("emulating the Nekt Data API under /api/v1/ (files under %s)", emu->dir);
    return 0;
}

void dapi_emu_quiesce(struct dapi_app *app)
{
    if(!app->emu || !app->emu->pool)
        return;
    dapi_engine_abort(app->emu->engine);
    dapi_pool_stop(app->emu->pool, 0); /* later requests are refused with 503 */
}

void dapi_emu_stop(struct dapi_app *app)
{
    struct dapi_emu *emu = app->emu;
    if(!emu)
        return;
    dapi_pool_free(emu->pool);
    dapi_engine_close(emu->engine);
    dapi_faults_free(emu->faults);
    while(emu->apps) {
        struct emu_app *a = emu->apps;
        emu->apps = a->next;
        free(a);
    }
    while(emu->execs) {
        struct emu_exec *x = emu->execs;
        emu->execs = x->next;
        free(x->error);
        free(x);
    }
    pthread_mutex_destroy(&emu->mu);
    free(emu);
    app->emu = NULL;
}

/* Deletes result files whose URLs have expired (and forgotten executions). */
void dapi_emu_tick(struct dapi_app *app, int64_t now_s)
{
    struct dapi_emu *emu = app->emu;
    static int64_t last;
    if(now_s - last < 60)
        return;
    last = now_s;
    int64_t keep = app->cfg->emulate_url_ttl + 60;
    DIR *d = opendir(emu->dir);
    struct dirent *de;
    while(d && (de = readdir(d))) {
        if(de->d_name[0] == '.' || !strcmp(de->d_name, "explorer"))
            continue;
        char p[4400];
        struct stat st;
        snprintf(p, sizeof p, "%.4000s/%.255s", emu->dir, de->d_name);
        if(!stat(p, &st) && S_ISDIR(st.st_mode) && now_s - st.st_mtime > keep)
            remove_tree(p);
    }
    if(d)
        closedir(d);
    pthread_mutex_lock(&emu->mu);
    for(struct emu_exec **xp = &emu->execs; *xp;) {
        struct emu_exec *x = *xp;
        if(now_s - x->created_s > EXEC_KEEP_S) {
            *xp = x->next;
            free(x->error);
            free(x);
        } else {
            xp = &x->next;
        }
    }
    pthread_mutex_unlock(&emu->mu);
}
