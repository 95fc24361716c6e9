/* The backends driven directly through their ops, without an HTTP server: each call's
 * outcome is caught by the test's own dapi_backend_done callback. The local backend runs on a
 * real engine, pools and registry over a small lake; the Nekt backend on an upstream that
 * refuses connections and on a canned one (its key check at creation). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/keys.h"
#include "backend/backend.h"
#include "base/clock.h"
#include "base/log.h"
#include "config/config.h"
#include "engine/engine.h"
#include "pool/pool.h"
#include "store/queries.h"
#include "t.h"

static char root[64];

/* ---- catching outcomes ------------------------------------------------------------- */

struct caught {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    enum dapi_err err;
    enum dapi_outcome_kind kind;
    char slug[64], sql[256], page[32], rows[4096], details[2048], message[256];
    int has_details, has_message;
    int status, retry_after;
    int reused;
    long long active_at_reply; /* the probed key's admission slots when the answer came */
    long long result_rows;     /* a stored result's rows (-1: no result) */
    uint64_t page_no;
    long long live_pages; /* a running query's published pages (-1: no live pages) */
};

/* Whose admission slots on_done records (the answer must come after they are given back). */
static struct dapi_queries *probe_queries;
static unsigned char probe_key[DAPI_KEY_HASH_LEN];

static void on_done(void *ctx, enum dapi_err err, const struct dapi_outcome *o)
{
    struct caught *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->calls++;
    c->err = err;
    c->kind = o->kind;
    snprintf(c->slug, sizeof c->slug, "%s", o->slug ? o->slug : "");
    snprintf(c->sql, sizeof c->sql, "%s", o->sql ? o->sql : "");
    snprintf(c->page, sizeof c->page, "%s", o->page_text ? o->page_text : "");
    c->result_rows = o->result ? (long long)dapi_result_rows(o->result) : -1;
    c->page_no = o->page_no;
    c->live_pages = o->live ? (long long)dapi_result_live_pages(o->live) : -1;
    if(o->result) { /* a stored page: its rows decoded */
        const char *data;
        size_t len;
        t_result_page(o->result, o->page_no, &data, &len);
        snprintf(c->rows, sizeof c->rows, "%.*s", (int)len, data);
    } else {
        snprintf(c->rows, sizeof c->rows, "%.*s", (int)(o->rows ? o->len : 0),
                 o->rows ? o->rows : "");
    }
    c->has_details = o->details != NULL;
    snprintf(c->details, sizeof c->details, "%s", o->details ? o->details : "");
    c->has_message = o->message != NULL;
    snprintf(c->message, sizeof c->message, "%s", o->message ? o->message : "");
    c->status = o->status;
    c->retry_after = o->retry_after;
    c->reused = o->reused;
    c->active_at_reply = probe_queries ? (long long)dapi_queries_active(probe_queries, probe_key)
                                       : -1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static struct dapi_reply catcher(struct caught *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return (struct dapi_reply){on_done, c};
}

/* Waits (at most 20 s) for the outcome; returns the number of calls seen. */
static int await(struct caught *c)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&c->mu);
    while(!c->calls && pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0)
        ;
    int n = c->calls;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void caught_free(struct caught *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* ---- a server's parts, without the HTTP server ------------------------------------- */

struct parts {
    struct dapi_config cfg;
    struct dapi_engine *engine;
    struct dapi_queries *queries;
    struct dapi_pool *check, *run;
    atomic_int stopping;
    struct dapi_backend_env env;
    const struct dapi_backend *b;
    void *state;
};

static int parts_start(struct parts *p, const char *backend, char **args, int nargs)
{
    char err[1024], data[128], state[128], downloads[160];
    memset(p, 0, sizeof *p);
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(state, sizeof state, "%s/state-%s", root, backend);
    snprintf(downloads, sizeof downloads, "%s/queries", state);
    t_rm_rf(state); /* each start is a fresh server: nothing left by an earlier test */
    mkdir(state, 0700);
    char *argv[32] = {"--data-dir", data, "--state-dir", state, "--backend", (char *)backend};
    int argc = 6;
    for(int i = 0; i < nargs && argc < 32; i++)
        argv[argc++] = args[i];
    if(dapi_config_load(&p->cfg, argc, argv, err, sizeof err)) {
        T_CHECK(0, "config: %s", err);
        return -1;
    }
    p->b = dapi_backend_find(backend);
    T_CHECK(p->b != NULL, "backend %s in the registry", backend);
    if(!p->b)
        return -1;
    int upstream = (p->b->caps & DAPI_BACKEND_UPSTREAM) != 0;
    if(upstream)
        mkdir(downloads, 0700);
    struct dapi_engine_opts eo = {.data_dir = data,
                                  .state_dir = state,
                                  .memory_limit = "1GB",
                                  .threads = 1,
                                  .extra_dir = upstream ? downloads : NULL,
                                  .check_timeout_ms = 10000};
    if(dapi_engine_open(&p->engine, &eo, err, sizeof err) || dapi_engine_sync_lake(p->engine)) {
        T_CHECK(0, "engine: %s", err);
        return -1;
    }
    if(((p->b->caps & DAPI_BACKEND_CHECKS_SQL) &&
        dapi_pool_start(&p->check, "check", 2, p->engine)) ||
       dapi_pool_start(&p->run, "run", 2, p->engine)) {
        T_CHECK(0, "pools");
        return -1;
    }
    if(dapi_queries_open(&p->queries, state, p->cfg.retention, UINT64_MAX, dapi_clock_wall_s(),
                         NULL, NULL, NULL, err, sizeof err)) {
        T_CHECK(0, "registry: %s", err);
        return -1;
    }
    struct dapi_queries_limits lim = {UINT64_MAX, (uint64_t)p->cfg.max_queries_per_key, UINT64_MAX,
                                      DAPI_QUERY_CHARGE};
    dapi_queries_set_limits(p->queries, &lim);
    p->env = (struct dapi_backend_env){
        &p->cfg, p->queries,   p->engine,          p->check,
        p->run,  &p->stopping, dapi_clock_mono_ms, dapi_clock_wall_s};
    if(p->b->ops->start && p->b->ops->start(&p->env, &p->state, err, sizeof err)) {
        T_CHECK(0, "backend start: %s", err);
        return -1;
    }
    return 0;
}

static void parts_stop(struct parts *p)
{
    atomic_store(&p->stopping, 1);
    dapi_pool_stop(p->check, 0);
    dapi_pool_stop(p->run, 0);
    dapi_pool_free(p->check);
    dapi_pool_free(p->run);
    if(p->b && p->b->ops->stop)
        p->b->ops->stop(p->state);
    dapi_queries_close(p->queries);
    dapi_engine_close(p->engine);
    dapi_config_free(&p->cfg);
}

static void key(const char *k, unsigned char hash[DAPI_KEY_HASH_LEN])
{
    dapi_sha256(k, strlen(k), hash);
}

/* POST: a copy of sql goes to the backend, holding an admission slot as the API gives it. */
static void create(struct parts *p, const char *sql, const unsigned char *kh, struct caught *c)
{
    struct dapi_reply rp = catcher(c);
    T_EQ_INT(dapi_queries_admit(p->queries, kh), DAPI_OK);
    struct dapi_principal who = {.scope.all = 1, .client_key = "client-key"};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    p->b->ops->create(p->state, strdup(sql), &who, rp);
    T_EQ_INT(await(c), 1);
}

static void results(struct parts *p, const char *slug, uint64_t page, const unsigned char *kh,
                    struct caught *c)
{
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)page);
    struct dapi_principal who = {.scope.all = 1, .client_key = "client-key"};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    p->b->ops->results(p->state, slug, page, text, &who, catcher(c));
    T_EQ_INT(await(c), 1);
}

/* ---- the local backend ------------------------------------------------------------- */

static void test_local(void)
{
    struct parts p;
    unsigned char alice[DAPI_KEY_HASH_LEN], bob[DAPI_KEY_HASH_LEN];
    struct caught c;
    char slug[64];
    key("alice", alice);
    key("bob", bob);
    char *args[] = {"--max-queries-per-key", "2", "--result-wait", "20"};
    if(parts_start(&p, "local", args, 4))
        goto out;

    /* created, then page 1 has the rows, page 2 none */
    create(&p, "SELECT id, note FROM \"sales\".\"orders\" ORDER BY id", alice, &c);
    T_EQ_INT(c.err, DAPI_OK);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    T_CHECK(strlen(c.slug) > 0, "a slug");
    T_EQ_STR(c.sql, "SELECT id, note FROM \"sales\".\"orders\" ORDER BY id");
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    results(&p, slug, 1, alice, &c);
    T_EQ_INT(c.err, DAPI_OK);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_STR(c.slug, slug);
    T_EQ_STR(c.page, "1");
    T_EQ_STR(c.rows,
             "{\"id\":1,\"note\":\"a\"},{\"id\":2,\"note\":null},{\"id\":3,\"note\":\"c, d\"}");
    caught_free(&c);
    results(&p, slug, 2, alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_STR(c.rows, "");
    caught_free(&c);
    /* another key's slug does not exist for bob */
    results(&p, slug, 1, bob, &c);
    T_EQ_INT(c.err, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_STR(c.message, "Query not found");
    T_EQ_INT(c.status, 0); /* the err table's: 404 */
    caught_free(&c);
    results(&p, "no-such-slug", 1, alice, &c);
    T_EQ_INT(c.err, DAPI_ERR_NOT_FOUND);
    caught_free(&c);

    /* SQL errors end the create as an error, and give the admission slot back */
    create(&p, "SELEC 1", alice, &c);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_CHECK(c.has_details && strstr(c.details, "syntax error"), "details: %s", c.details);
    T_CHECK(!c.has_message, "the table's message");
    caught_free(&c);
    create(&p, "SELECT current_setting('memory_limit')", alice, &c);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_CHECK(strstr(c.details, "current_setting() is not allowed") != NULL, "details: %s",
            c.details);
    caught_free(&c);
    /* the slot of every finished or refused query is back */
    for(int i = 0; i < 100 && dapi_queries_active(p.queries, alice) > 0; i++)
        dapi_clock_sleep_ms(20);
    T_EQ_INT(dapi_queries_active(p.queries, alice), 0);

    /* a query that fails while running: FAILED, status from the exec column */
    create(&p, "SELECT CAST(note AS INTEGER) AS n FROM \"sales\".\"orders\"", alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    results(&p, slug, 1, alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_EQ_INT(c.status, 0);
    T_EQ_STR(c.slug, slug);
    T_EQ_STR(c.page, "1");
    T_CHECK(strstr(c.details, "Conversion Error") != NULL, "details: %s", c.details);
    caught_free(&c);

    /* a query left unfinished by a previous run is run again by unfinished */
    char why[256];
    T_EQ_INT(dapi_queries_create(p.queries, alice, "SELECT 42 AS x", NULL, dapi_clock_wall_s(),
                                 slug, why, sizeof why),
             DAPI_OK);
    p.b->ops->unfinished(p.state, slug, "SELECT 42 AS x");
    results(&p, slug, 1, alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_STR(c.rows, "{\"x\":42}");
    caught_free(&c);

    /* admission refused: the outcome names the setting and says when to retry */
    T_EQ_INT(dapi_queries_admit(p.queries, bob), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(p.queries, bob), DAPI_OK);
    enum dapi_err refused = dapi_queries_admit(p.queries, bob);
    T_EQ_INT(refused, DAPI_ERR_RATE);
    dapi_backend_refuse_admission(&p.env, catcher(&c), refused, bob);
    T_EQ_INT(c.err, DAPI_ERR_RATE);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_STR(c.message, "Too many queries for this API key, retry later");
    T_CHECK(strstr(c.details, "already has 2 queries") &&
                strstr(c.details, "--max-queries-per-key"),
            "details: %s", c.details);
    T_EQ_INT(c.retry_after, 0); /* the table's 5 s */
    caught_free(&c);
    dapi_queries_unadmit(p.queries, bob);
    dapi_queries_unadmit(p.queries, bob);

    /* a store that is full: 503 with a longer Retry-After, and a default explanation */
    dapi_backend_create_failure(catcher(&c), DAPI_ERR_BUSY, "");
    T_EQ_INT(c.err, DAPI_ERR_BUSY);
    T_EQ_INT(c.retry_after, 30);
    T_CHECK(strstr(c.details, "--max-state-bytes") != NULL, "details: %s", c.details);
    caught_free(&c);

    /* the check pool stopped (shutdown): the create ends once, with an error, slot back */
    dapi_pool_stop(p.check, 0);
    create(&p, "SELECT 1", alice, &c);
    T_EQ_INT(c.err, DAPI_ERR_BUSY);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    caught_free(&c);
    T_EQ_INT(dapi_queries_active(p.queries, alice), 0);
out:
    parts_stop(&p);
}

/* ---- the Nekt backend -------------------------------------------------------------- */

/* A canned upstream on 127.0.0.1: every request is answered, after `delay_ms`, with `status`
 * and `body` (one request per connection); `calls` counts them. */
static struct {
    int fd, port;
    pthread_t thread;
    atomic_int calls, status, delay_ms, stop;
    char body[512];
} up;
static pthread_mutex_t up_key_mu = PTHREAD_MUTEX_INITIALIZER;
static char up_key[128]; /* the x-api-key of the last call */

static void *upstream_run(void *arg)
{
    while(!atomic_load(&up.stop)) {
        int c = accept(up.fd, NULL, NULL);
        if(c < 0)
            continue;
        char buf[8192];
        size_t got = 0;
        ssize_t n;
        /* the head, then Content-Length bytes of body */
        while(got < sizeof buf - 1 && (n = read(c, buf + got, sizeof buf - 1 - got)) > 0) {
            got += (size_t)n;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if(!end)
                continue;
            char *cl = strcasestr(buf, "content-length:");
            size_t want = cl ? (size_t)atol(cl + 15) : 0;
            if(got >= (size_t)(end + 4 - buf) + want)
                break;
        }
        pthread_mutex_lock(&up_key_mu);
        const char *k = strcasestr(buf, "\r\nx-api-key:");
        snprintf(up_key, sizeof up_key, "%.*s", k ? (int)strcspn(k + 13, "\r") : 0,
                 k ? k + 13 + strspn(k + 13, " ") : "");
        pthread_mutex_unlock(&up_key_mu);
        atomic_fetch_add(&up.calls, 1);
        dapi_clock_sleep_ms(atomic_load(&up.delay_ms));
        char resp[1024];
        int len = snprintf(resp, sizeof resp,
                           "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: "
                           "%zu\r\nConnection: close\r\n\r\n%s",
                           atomic_load(&up.status), strlen(up.body), up.body);
        if(write(c, resp, (size_t)len) < 0)
            T_CHECK(0, "upstream write");
        close(c);
    }
    return NULL;
}

static int upstream_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    atomic_store(&up.stop, 0);
    up.fd = socket(AF_INET, SOCK_STREAM, 0);
    if(up.fd < 0 || bind(up.fd, (struct sockaddr *)&a, sizeof a) || listen(up.fd, 16) ||
       getsockname(up.fd, (struct sockaddr *)&a, &alen))
        return -1;
    struct timeval tv = {0, 100 * 1000}; /* accept wakes up to see stop */
    setsockopt(up.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    up.port = ntohs(a.sin_port);
    return pthread_create(&up.thread, NULL, upstream_run, NULL);
}

static void upstream_stop(void)
{
    atomic_store(&up.stop, 1);
    pthread_join(up.thread, NULL);
    close(up.fd);
}

static void upstream_answer(int status, const char *body, int delay_ms)
{
    atomic_store(&up.status, status);
    snprintf(up.body, sizeof up.body, "%s", body);
    atomic_store(&up.delay_ms, delay_ms);
}

/* POST with a given client key (forwarded upstream); returns the ms it took to answer. */
static int64_t create_as(struct parts *p, const char *sql, const char *client_key,
                         struct caught *c)
{
    unsigned char kh[DAPI_KEY_HASH_LEN];
    key(client_key, kh);
    struct dapi_reply rp = catcher(c);
    T_EQ_INT(dapi_queries_admit(p->queries, kh), DAPI_OK);
    int64_t t0 = dapi_clock_mono_ms();
    struct dapi_principal who = {.scope.all = 1, .client_key = client_key};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    p->b->ops->create(p->state, strdup(sql), &who, rp);
    T_EQ_INT(await(c), 1);
    return dapi_clock_mono_ms() - t0;
}

/* v2's key check at creation (--upstream-key-check-wait 1), forwarding client keys. */
static void test_nekt_key_check(void)
{
    struct parts p;
    struct caught c;
    char url[64], slug[64];
    unsigned char kh[DAPI_KEY_HASH_LEN];
    if(upstream_start()) {
        T_CHECK(0, "the canned upstream starts");
        return;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d", up.port);
    char *args[] = {
        "--nekt-url",    url, "--upstream-attempts", "1", "--upstream-key-check-wait", "1",
        "--result-wait", "20"};
    if(parts_start(&p, "nekt", args, 8))
        goto out;

    /* a key Nekt refuses: 401 at creation, the reference's words, no query left, slot back */
    upstream_answer(401, "{\"detail\":\"Invalid API key.\"}", 0);
    create_as(&p, "SELECT 1", "bad-key", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_INT(c.err, DAPI_ERR_AUTH);
    T_EQ_INT(c.status, 401);
    T_EQ_STR(c.message, "The Nekt API rejected the API key");
    T_CHECK(strstr(c.details, "Nekt answered 401") != NULL, "details: %s", c.details);
    caught_free(&c);
    key("bad-key", kh);
    T_EQ_INT(dapi_queries_active(p.queries, kh), 0);

    /* a failing upstream: its failure at creation, the generic shape */
    upstream_answer(500, "{\"detail\":\"boom\"}", 0);
    create_as(&p, "SELECT 1", "key-a", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_INT(c.err, DAPI_ERR_UPSTREAM);
    T_EQ_INT(c.status, 502);
    T_EQ_STR(c.message, "Failed to create query");
    T_CHECK(strstr(c.details, "Nekt answered 500") != NULL, "details: %s", c.details);
    caught_free(&c);

    /* Nekt answers (a failed query): the slug, the key remembered, the run's outcome kept */
    upstream_answer(200, "{\"state\":\"FAILED\",\"error\":\"no such table\"}", 300);
    int calls = atomic_load(&up.calls);
    int64_t ms = create_as(&p, "SELECT 2", "key-a", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    T_CHECK(ms >= 250, "the creation waited for Nekt's answer (300 ms): %lld ms", (long long)ms);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    key("key-a", kh);
    results(&p, slug, 1, kh, &c); /* (the helper sends "client-key": the owner is the hash) */
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_EQ_STR(c.details, "no such table");
    caught_free(&c);
    T_EQ_INT(atomic_load(&up.calls) - calls, 1); /* the creation's call is the run's */

    /* the same key again while Nekt is slow: answered at once */
    upstream_answer(200, "{\"state\":\"FAILED\",\"error\":\"slow\"}", 3000);
    ms = create_as(&p, "SELECT 3", "key-a", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    T_CHECK(ms < 1000, "a key Nekt accepted lately: %lld ms", (long long)ms);
    caught_free(&c);
    /* a new key while Nekt is slow: the slug after the wait (1 s), and the run goes on */
    ms = create_as(&p, "SELECT 4", "key-b", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    T_CHECK(ms >= 900 && ms < 2500, "after the wait (1 s), not Nekt's answer (3 s): %lld ms",
            (long long)ms);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    key("key-b", kh);
    results(&p, slug, 1, kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_STR(c.details, "slow");
    caught_free(&c);

    /* a key refused after it was accepted is forgotten: checked again at its next creation */
    upstream_answer(403, "{\"detail\":\"revoked\"}", 0);
    create_as(&p, "SELECT 5", "key-a", &c); /* remembered: the slug at once, the run fails */
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    key("key-a", kh);
    results(&p, slug, 1, kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_FORBIDDEN); /* Nekt's 403 to the call itself: the key, not a URL */
    caught_free(&c);
    create_as(&p, "SELECT 6", "key-a", &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_INT(c.status, 403);
    caught_free(&c);

    /* Scopes: dapi does not run Nekt's SQL, so a scoped principal needs an upstream key of
     * its own (limited by Nekt): without one, 403 before any call; with one, that key goes
     * upstream instead of the client's */
    struct dapi_principal who = {.client_key = "key-s"};
    who.scope.n = 1;
    snprintf(who.scope.layers[0], sizeof who.scope.layers[0], "sales");
    key("key-s", who.owner);
    T_EQ_INT(dapi_queries_admit(p.queries, who.owner), DAPI_OK);
    calls = atomic_load(&up.calls);
    p.b->ops->create(p.state, strdup("SELECT * FROM secret.t"), &who, catcher(&c));
    T_EQ_INT(await(&c), 1);
    T_EQ_INT(c.err, DAPI_ERR_FORBIDDEN);
    T_CHECK(strstr(c.details, "upstream key of its own") != NULL, "details: %s", c.details);
    T_EQ_INT(atomic_load(&up.calls), calls);
    T_EQ_INT(dapi_queries_active(p.queries, who.owner), 0);
    caught_free(&c);
    upstream_answer(200, "{\"state\":\"FAILED\",\"error\":\"no such table\"}", 0);
    who.upstream_key = "upstream-of-s";
    T_EQ_INT(dapi_queries_admit(p.queries, who.owner), DAPI_OK);
    p.b->ops->create(p.state, strdup("SELECT 7"), &who, catcher(&c));
    T_EQ_INT(await(&c), 1);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    caught_free(&c);
    pthread_mutex_lock(&up_key_mu);
    T_EQ_STR(up_key, "upstream-of-s");
    pthread_mutex_unlock(&up_key_mu);
out:
    parts_stop(&p);
    upstream_stop();
}

/* A request's admission slot is given back BEFORE its answer is sent: the client's next
 * request, which may come the moment it reads the answer, must find it free (with
 * --max-queries-per-key 1 it was refused now and then). Checked at the moment of each answer:
 * local creation refused (bad SQL) and answered, v1 creation and v1 page (fetched upstream). */
static void test_slot_back_before_answer(void)
{
    struct parts p;
    struct caught c;
    char url[64], slug[64];
    unsigned char kh[DAPI_KEY_HASH_LEN];
    char *one[] = {"--max-queries-per-key", "1"};
    if(parts_start(&p, "local", one, 2))
        goto local_out;
    key("slot-key", kh);
    probe_queries = p.queries;
    memcpy(probe_key, kh, DAPI_KEY_HASH_LEN);
    create(&p, "SELEC nonsense", kh, &c);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_EQ_INT(c.active_at_reply, 0);
    caught_free(&c);
    create(&p, "SELECT 42 AS x", kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    caught_free(&c);
local_out:
    probe_queries = NULL;
    parts_stop(&p);

    if(upstream_start()) {
        T_CHECK(0, "the canned upstream starts");
        return;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d", up.port);
    char *v1[] = {"--nekt-url",
                  url,
                  "--nekt-api",
                  "v1",
                  "--upstream-attempts",
                  "1",
                  "--max-queries-per-key",
                  "1",
                  "--nekt-read-ahead",
                  "0"};
    if(parts_start(&p, "nekt", v1, 10))
        goto out;
    probe_queries = p.queries;
    key("v1-key", kh);
    memcpy(probe_key, kh, DAPI_KEY_HASH_LEN);
    /* the application is running, the upstream query is "up-1" */
    upstream_answer(200, "{\"status\":\"running\",\"slug\":\"up-1\"}", 0);
    create(&p, "SELECT 1", kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    T_EQ_INT(c.active_at_reply, 0);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    /* page 1 is an upstream execution (it takes a slot), which fails */
    upstream_answer(200, "{\"id\":7,\"status\":\"failed\",\"error\":\"boom\"}", 0);
    results(&p, slug, 1, kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.active_at_reply, 0);
    caught_free(&c);
out:
    probe_queries = NULL;
    parts_stop(&p);
    upstream_stop();
}

static void test_nekt(void)
{
    struct parts p;
    unsigned char alice[DAPI_KEY_HASH_LEN];
    struct caught c;
    char slug[64], err[256];
    key("alice", alice);

    /* a URL that is not http(s) is refused by the settings (exit 2), and by start too */
    const struct dapi_backend *b = dapi_backend_find("nekt");
    struct dapi_config cfg;
    char *bad[] = {"--nekt-url", "ftp://example.com"};
    T_EQ_INT(dapi_config_load(&cfg, 2, bad, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--nekt-url") != NULL, "reason: %s", err);
    dapi_config_free(&cfg);
    T_EQ_INT(dapi_config_load(&cfg, 0, NULL, err, sizeof err), DAPI_OK);
    free(cfg.nekt_url);
    cfg.nekt_url = strdup("ftp://example.com");
    struct dapi_backend_env env = {.cfg = &cfg};
    void *state = NULL;
    T_CHECK(b && b->ops->start(&env, &state, err, sizeof err) != 0, "ftp URL refused");
    T_CHECK(strstr(err, "--nekt-url") != NULL, "reason: %s", err);
    dapi_config_free(&cfg);

    /* v2 against an upstream that refuses connections: 502 at creation (it waits for Nekt's
     * first answer), and nothing is left of the query */
    setenv("DAPI_NEKT_API_KEY", "server-key", 1);
    char *args[] = {"--nekt-url", "http://127.0.0.1:1", "--upstream-attempts", "1"};
    if(parts_start(&p, "nekt", args, 4))
        goto out;
    create(&p, "SELECT 1", alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_INT(c.err, DAPI_ERR_UPSTREAM);
    T_EQ_INT(c.status, 502);
    T_EQ_STR(c.message, "Failed to create query");
    T_CHECK(strstr(c.details, "cannot reach Nekt") != NULL, "details: %s", c.details);
    caught_free(&c);
    T_EQ_INT(dapi_queries_active(p.queries, alice), 0);
    parts_stop(&p);

    /* without the wait (--upstream-key-check-wait 0): the slug at once, then the failure */
    char *args0[] = {"--nekt-url", "http://127.0.0.1:1",        "--upstream-attempts",
                     "1",          "--upstream-key-check-wait", "0"};
    if(parts_start(&p, "nekt", args0, 6))
        goto out;
    create(&p, "SELECT 1", alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    results(&p, slug, 1, alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_UPSTREAM);
    T_EQ_INT(c.status, 0); /* the table's: 502 */
    T_CHECK(c.has_details && *c.details, "the upstream's trouble explained");
    caught_free(&c);
out:
    unsetenv("DAPI_NEKT_API_KEY");
    parts_stop(&p);
}

/* An upstream timeout is not a failure of the query: the generic shape, 504. */
static void test_upstream_timeout_outcome(void)
{
    struct caught c;
    dapi_reply_failed(catcher(&c), DAPI_ERR_UPSTREAM_TIMEOUT, 0, "Nekt did not answer in time",
                      "dapi-query-x", "1");
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_INT(c.err, DAPI_ERR_UPSTREAM_TIMEOUT);
    T_EQ_STR(c.details, "Nekt did not answer in time");
    caught_free(&c);
    dapi_reply_failed(catcher(&c), DAPI_ERR_TIMEOUT, 0, "ran too long", "dapi-query-x", "1");
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED); /* the query's own time limit stays a failure */
    caught_free(&c);
}

static void test_registry(void)
{
    size_t n = 0;
    const struct dapi_backend *rows = dapi_backend_list(&n);
    T_EQ_INT(n, 2);
    for(size_t i = 0; i < n; i++) {
        T_CHECK(dapi_backend_find(rows[i].name) == &rows[i], "%s found", rows[i].name);
        T_CHECK(rows[i].ops->create && rows[i].ops->results, "%s has create and results",
                rows[i].name);
    }
    T_CHECK(dapi_backend_find("local")->caps & DAPI_BACKEND_NEEDS_LAKE, "local needs a lake");
    T_CHECK(dapi_backend_find("local")->caps & DAPI_BACKEND_CHECKS_SQL, "local checks SQL");
    T_CHECK(dapi_backend_find("nekt")->caps & DAPI_BACKEND_FORWARDS_KEYS, "nekt forwards keys");
    T_CHECK(dapi_backend_find("nope") == NULL, "unknown name");
    /* the backend setting accepts exactly the registry's names */
    char err[256];
    for(size_t i = 0; i < n; i++) {
        struct dapi_config cfg;
        char *argv[] = {"--backend", (char *)rows[i].name};
        T_CHECK(dapi_config_load(&cfg, 2, argv, err, sizeof err) == DAPI_OK,
                "--backend %s accepted: %s", rows[i].name, err);
        dapi_config_free(&cfg);
    }
    struct dapi_config cfg;
    char *argv[] = {"--backend", "nope"};
    T_CHECK(dapi_config_load(&cfg, 2, argv, err, sizeof err) != DAPI_OK, "--backend nope refused");
    dapi_config_free(&cfg);
    T_CHECK(dapi_backend_find(NULL) == NULL, "no name");
}

/* POST as a principal limited to scope. */
static void create_scoped(struct parts *p, const char *sql, const unsigned char *kh,
                          const struct dapi_scope *scope, struct caught *c)
{
    struct dapi_reply rp = catcher(c);
    T_EQ_INT(dapi_queries_admit(p->queries, kh), DAPI_OK);
    struct dapi_principal who = {.scope = *scope, .client_key = "client-key"};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    p->b->ops->create(p->state, strdup(sql), &who, rp);
    T_EQ_INT(await(c), 1);
}

/* Scopes through the local backend: a table of another layer is 403 at creation, naming the
 * layer, and no query is made; the query of an allowed layer runs with its scope and only its
 * owner reads it; a query resumed after a restart runs with the scope stored with it. */
static void test_local_scopes(void)
{
    struct parts p;
    unsigned char carol[DAPI_KEY_HASH_LEN], dave[DAPI_KEY_HASH_LEN];
    struct caught c;
    char slug[64], why[256];
    key("carol", carol);
    key("dave", dave);
    struct dapi_scope sales = {.n = 1}, hr = {.n = 1};
    snprintf(sales.layers[0], sizeof sales.layers[0], "sales");
    snprintf(hr.layers[0], sizeof hr.layers[0], "hr");
    char *args[] = {"--result-wait", "20"};
    if(parts_start(&p, "local", args, 2))
        goto out;
    create_scoped(&p, "SELECT * FROM \"secret\".\"salaries\"", carol, &sales, &c);
    T_EQ_INT(c.err, DAPI_ERR_FORBIDDEN);
    T_EQ_INT(c.kind, DAPI_OUTCOME_ERROR);
    T_EQ_STR(c.details, "this API key may not read layer 'secret'");
    caught_free(&c);
    create_scoped(&p, "SELECT o.id FROM sales.orders o JOIN secret.salaries s ON true", carol,
                  &sales, &c);
    T_EQ_INT(c.err, DAPI_ERR_FORBIDDEN);
    caught_free(&c);
    for(int i = 0; i < 100 && dapi_queries_active(p.queries, carol) > 0; i++)
        dapi_clock_sleep_ms(20);
    T_EQ_INT(dapi_queries_active(p.queries, carol), 0); /* refused: the slot is back */

    create_scoped(&p, "SELECT count(*) AS n FROM sales.orders", carol, &sales, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    struct dapi_scope got;
    T_EQ_INT(dapi_queries_scope(p.queries, slug, &got), DAPI_OK);
    T_CHECK(!got.all && got.n == 1 && strcmp(got.layers[0], "sales") == 0, "scope stored");
    results(&p, slug, 1, carol, &c);
    T_EQ_STR(c.rows, "{\"n\":3}");
    caught_free(&c);
    results(&p, slug, 1, dave, &c); /* slugs stay bound to the creating key */
    T_EQ_INT(c.err, DAPI_ERR_NOT_FOUND);
    caught_free(&c);

    /* resumed after a restart: held to the scope it was created with, not to every layer */
    T_EQ_INT(dapi_queries_create_scoped(p.queries, carol, &hr, "SELECT count(*) FROM sales.orders",
                                        NULL, dapi_clock_wall_s(), slug, why, sizeof why),
             DAPI_OK);
    p.b->ops->unfinished(p.state, slug, "SELECT count(*) FROM sales.orders");
    results(&p, slug, 1, carol, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_FORBIDDEN);
    T_EQ_STR(c.details, "this API key may not read layer 'sales'");
    caught_free(&c);
out:
    parts_stop(&p);
}

/* ---- result reuse through the local backend (injected wall clock) ------------------- */

static int64_t fake_now;
static int64_t fake_wall(void)
{
    return fake_now;
}

/* Creates sql as kh with a Cache-Control max age (0: none) and waits for page 1; returns
 * whether the creation was reused; the page's rows go to rows. */
/* create_page with bind parameters (NULL: none). */
static int create_page_bound(struct parts *p, const char *sql, const char *params,
                             const unsigned char *kh, int64_t age, char *rows, size_t n)
{
    struct caught c;
    struct dapi_reply rp = catcher(&c);
    T_EQ_INT(dapi_queries_admit(p->queries, kh), DAPI_OK);
    struct dapi_principal who = {.scope.all = 1, .reuse_max_age = age};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    if(params)
        p->b->ops->create_bound(p->state, strdup(sql), strdup(params), &who, rp);
    else
        p->b->ops->create(p->state, strdup(sql), &who, rp);
    T_EQ_INT(await(&c), 1);
    T_EQ_INT(c.kind, DAPI_OUTCOME_CREATED);
    int reused = c.reused;
    char slug[64];
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    results(p, slug, 1, kh, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    snprintf(rows, n, "%s", c.rows);
    caught_free(&c);
    return reused;
}

static int create_page(struct parts *p, const char *sql, const unsigned char *kh, int64_t age,
                       char *rows, size_t n)
{
    return create_page_bound(p, sql, NULL, kh, age, rows, n);
}

/* Bind parameters: bound by the local backend (kept with the query for its run), part of the
 * reuse identity with their types; the Nekt backend has none. */
static void test_local_bound(void)
{
    struct parts p;
    unsigned char gil[DAPI_KEY_HASH_LEN];
    char rows[4096];
    key("gil", gil);
    T_CHECK(dapi_backend_local_ops.create_bound != NULL, "local binds");
    T_CHECK(dapi_backend_nekt_ops.create_bound == NULL, "nekt cannot bind");
    char a[DAPI_REUSE_HEX], b[DAPI_REUSE_HEX], c[DAPI_REUSE_HEX], d[DAPI_REUSE_HEX];
    struct dapi_scope all = {.all = 1};
    T_EQ_INT(dapi_backend_reuse_ident_bound("local", &all, NULL, "T", "{\"v\":1}", NULL, a), 0);
    T_EQ_INT(dapi_backend_reuse_ident_bound("local", &all, NULL, "T", "{\"v\":\"1\"}", NULL, b),
             0);
    T_EQ_INT(dapi_backend_reuse_ident_bound("local", &all, NULL, "T", NULL, NULL, c), 0);
    T_EQ_INT(dapi_backend_reuse_ident("local", &all, NULL, "T", NULL, d), 0);
    T_CHECK(strcmp(a, b) != 0 && strcmp(a, c) != 0 && strcmp(b, c) != 0, "typed values differ");
    T_EQ_STR(c, d);
    /* per owner: each owner's identity differs from the other's and from the shared one */
    char og[DAPI_REUSE_HEX], oh[DAPI_REUSE_HEX];
    T_EQ_INT(dapi_backend_reuse_ident("local", &all, NULL, "T", gil, og), 0);
    unsigned char hal[DAPI_KEY_HASH_LEN];
    key("hal", hal);
    T_EQ_INT(dapi_backend_reuse_ident("local", &all, NULL, "T", hal, oh), 0);
    T_CHECK(strcmp(og, oh) != 0 && strcmp(og, d) != 0 && strcmp(oh, d) != 0, "owners differ");
    T_EQ_INT(dapi_backend_reuse_ident("local", &all, NULL, "T", gil, oh), 0);
    T_EQ_STR(og, oh);
    char *args[] = {"--result-wait", "20", "--reuse-max-age", "300"};
    if(parts_start(&p, "local", args, 4))
        goto out;
    const char *sql = "SELECT id, $tag AS tag FROM sales.orders WHERE amount > $min ORDER BY id";
    T_EQ_INT(create_page_bound(&p, sql, "{\"min\":15,\"tag\":\"t\"}", gil, 0, rows, sizeof rows),
             0);
    T_EQ_STR(rows, "{\"id\":2,\"tag\":\"t\"},{\"id\":3,\"tag\":\"t\"}");
    T_EQ_INT(create_page_bound(&p, sql, "{\"min\":15,\"tag\":\"t\"}", gil, 0, rows, sizeof rows),
             1);
    T_EQ_INT(create_page_bound(&p, sql, "{\"min\":15.0,\"tag\":\"t\"}", gil, 0, rows, sizeof rows),
             0);
    T_EQ_INT(create_page_bound(&p, sql, "{\"min\":25,\"tag\":\"u\"}", gil, 0, rows, sizeof rows),
             0);
    T_EQ_STR(rows, "{\"id\":3,\"tag\":\"u\"}");
    /* a missing parameter: 400 naming it, nothing created */
    struct caught e;
    T_EQ_INT(dapi_queries_admit(p.queries, gil), DAPI_OK);
    struct dapi_principal who = {.scope.all = 1};
    memcpy(who.owner, gil, DAPI_KEY_HASH_LEN);
    p.b->ops->create_bound(p.state, strdup(sql), strdup("{\"min\":1}"), &who, catcher(&e));
    T_EQ_INT(await(&e), 1);
    T_EQ_INT(e.err, DAPI_ERR_PARAM);
    T_CHECK(strstr(e.details, "missing parameter 'tag'") != NULL, "details: %s", e.details);
    caught_free(&e);
    T_EQ_INT(dapi_queries_active(p.queries, NULL), 0); /* every slot back */
out:
    parts_stop(&p);
}

static void test_local_reuse(void)
{
    struct parts p;
    unsigned char erin[DAPI_KEY_HASH_LEN], fay[DAPI_KEY_HASH_LEN];
    char first[4096], rows[4096];
    key("erin", erin);
    key("fay", fay);
    t_write_in(root, "data/sales/reuse.csv", "k,v\n1,x\n2,y\n");
    char *args[] = {"--result-wait", "20", "--reuse-max-age", "300", "--reuse-across-keys"};
    const char *sql = "SELECT k, v FROM sales.reuse ORDER BY k";
    /* By default each owner reuses only its own results: another owner's identical query
     * runs (sharing would tell it that this one was run lately). */
    if(parts_start(&p, "local", args, 4))
        goto out;
    T_EQ_INT(create_page(&p, sql, erin, 0, first, sizeof first), 0);
    T_EQ_INT(create_page(&p, sql, fay, 0, rows, sizeof rows), 0);
    T_EQ_STR(rows, first);
    T_EQ_INT(create_page(&p, sql, fay, 0, rows, sizeof rows), 1);
    T_EQ_INT(create_page(&p, sql, erin, 0, rows, sizeof rows), 1);
    parts_stop(&p);
    /* --reuse-across-keys: owners with the same scope share */
    if(parts_start(&p, "local", args, 5))
        goto out;
    fake_now = 1700000000;
    p.env.wall_s = fake_wall;
    T_EQ_INT(create_page(&p, sql, erin, 0, first, sizeof first), 0);
    T_EQ_STR(first, "{\"k\":1,\"v\":\"x\"},{\"k\":2,\"v\":\"y\"}");
    /* formatting and keyword case do not matter (the parse tree); another owner, same scope */
    T_EQ_INT(
        create_page(&p, "select k,v\n  FROM sales.reuse   order BY k", fay, 0, rows, sizeof rows),
        1);
    T_EQ_STR(rows, first);
    /* a different query, a bypass */
    T_EQ_INT(create_page(&p, "SELECT k FROM sales.reuse ORDER BY k", erin, 0, rows, sizeof rows),
             0);
    T_EQ_INT(create_page(&p, sql, erin, -1, rows, sizeof rows), 0);
    /* max age: the bypass's result (data read at fake_now) is reused up to 299 s later */
    fake_now += 299;
    T_EQ_INT(create_page(&p, sql, erin, 0, rows, sizeof rows), 1);
    T_EQ_INT(create_page(&p, sql, erin, 100, rows, sizeof rows), 0); /* max-age=100: too old */
    fake_now += 50;
    T_EQ_INT(create_page(&p, sql, erin, 0, rows, sizeof rows), 1);
    fake_now += 300;
    T_EQ_INT(create_page(&p, sql, erin, 0, rows, sizeof rows), 0);
    /* a changed lake file: not reused, and the new rows */
    t_write_in(root, "data/sales/reuse.csv", "k,v\n1,x\n2,y\n3,z\n");
    T_EQ_INT(create_page(&p, sql, erin, 0, rows, sizeof rows), 0);
    T_EQ_STR(rows, "{\"k\":1,\"v\":\"x\"},{\"k\":2,\"v\":\"y\"},{\"k\":3,\"v\":\"z\"}");
    T_EQ_INT(create_page(&p, sql, fay, 0, rows, sizeof rows), 1);
    T_EQ_INT(dapi_queries_active(p.queries, NULL), 0); /* every slot back */
out:
    parts_stop(&p);
}

/* The export's call (ops->stored): the whole finished result once the run ends, else the
 * query's failure as results give it (page "1"); with live, a running query's published
 * pages as soon as page 1 is. */
static void stored_live(struct parts *p, const char *slug, const unsigned char *kh, int live,
                        struct caught *c)
{
    struct dapi_principal who = {.scope.all = 1, .client_key = "client-key"};
    memcpy(who.owner, kh, DAPI_KEY_HASH_LEN);
    p->b->ops->stored(p->state, slug, live, &who, catcher(c));
    T_EQ_INT(await(c), 1);
}

static void stored(struct parts *p, const char *slug, const unsigned char *kh, struct caught *c)
{
    stored_live(p, slug, kh, 0, c);
}

static void test_local_stored(void)
{
    struct parts p;
    unsigned char alice[DAPI_KEY_HASH_LEN], bob[DAPI_KEY_HASH_LEN];
    struct caught c;
    char slug[64];
    key("alice", alice);
    key("bob", bob);
    char *args[] = {"--result-wait", "20"};
    if(parts_start(&p, "local", args, 2))
        goto out;
    /* asked at once: waits for the whole run (a page of it being published is not enough) */
    create(&p, "SELECT i, md5(repeat(i::VARCHAR, 50)) AS h FROM range(300000) t(i)", alice, &c);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    stored(&p, slug, alice, &c);
    T_EQ_INT(c.err, DAPI_OK);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_INT(c.result_rows, 300000);
    T_CHECK(c.page_no == DAPI_PAGE_WHOLE, "page_no %llu", (unsigned long long)c.page_no);
    caught_free(&c);
    stored(&p, slug, bob, &c);
    T_EQ_INT(c.err, DAPI_ERR_NOT_FOUND);
    caught_free(&c);
    /* live: a slow run is answered with its published pages, not its end */
    create(&p, "SELECT i, md5(repeat(i::VARCHAR, 600))[1:4] AS h FROM range(2000000) t(i)", alice,
           &c);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    stored_live(&p, slug, alice, 1, &c);
    T_EQ_INT(c.err, DAPI_OK);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_INT(c.result_rows, -1);
    T_CHECK(c.live_pages >= 1, "live pages %lld", c.live_pages);
    T_CHECK(c.page_no == DAPI_PAGE_LIVE, "page_no %llu", (unsigned long long)c.page_no);
    caught_free(&c);
    stored_live(&p, slug, bob, 1, &c); /* another key's: not found, as ever */
    T_EQ_INT(c.err, DAPI_ERR_NOT_FOUND);
    caught_free(&c);
    int deleted = -1;
    T_EQ_INT(dapi_queries_cancel(p.queries, slug, alice, p.env.wall_s(), "test", &deleted),
             DAPI_OK);
    /* a small result: no page is published before its end, which live waits for */
    create(&p, "SELECT 7 AS x", alice, &c);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    stored_live(&p, slug, alice, 1, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_PAGE);
    T_EQ_INT(c.result_rows, 1);
    T_EQ_INT(c.live_pages, -1);
    caught_free(&c);
    create(&p, "SELECT CAST(note AS INTEGER) AS n FROM \"sales\".\"orders\"", alice, &c);
    snprintf(slug, sizeof slug, "%s", c.slug);
    caught_free(&c);
    stored(&p, slug, alice, &c);
    T_EQ_INT(c.kind, DAPI_OUTCOME_FAILED);
    T_EQ_INT(c.err, DAPI_ERR_SQL);
    T_EQ_STR(c.page, "1");
    caught_free(&c);
out:
    parts_stop(&p);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_tmpdir(root, sizeof root, "backend"))
        T_DONE();
    t_mkdir_in(root, "data");
    t_mkdir_in(root, "data/sales");
    t_write_in(root, "data/sales/orders.csv",
               "id,amount,note\n1,10.5,a\n2,20,\n3,30.25,\"c, d\"\n");

    test_registry();
    test_local();
    test_local_scopes();
    test_nekt();
    test_slot_back_before_answer();
    test_nekt_key_check();
    test_upstream_timeout_outcome();
    test_local_reuse();
    test_local_bound();
    test_local_stored();

    t_rm_rf(root);
    T_DONE();
}
