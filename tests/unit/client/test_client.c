/* The C client library (include/dapi/client.h, src/client/) against a fake server on
 * 127.0.0.1 that returns canned JSON: creating a query (what is sent), reading pages one by
 * one and all of them in order (serially and through the parallel window), error bodies and
 * their classification, answers that are not JSON or break the contract, retries (only where
 * a repeat is harmless), a refused connection, and the health call. */
#include <stdatomic.h>
#include <stdlib.h>

#include "base/buf.h"
#include "dapi/client.h"
#include "t.h"

#define KEY "k1"

static struct t_srv *srv;
static char url[128];
static atomic_int busy_calls, flaky_calls;

/* A results page of slug: rows first..first+n-1 as {"i":k}. */
static void reply_page(int fd, const char *slug, int page, int first, int n)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    dapi_buf_addf(&b, "{\"query_slug\":\"%s\",\"page\":%d,\"data\":[", slug, page);
    for(int i = 0; i < n; i++)
        dapi_buf_addf(&b, "%s{\"i\":%d}", i ? "," : "", first + i);
    dapi_buf_adds(&b, "]}");
    t_srv_reply(fd, 200, NULL, b.data ? b.data : "");
    dapi_buf_free(&b);
}

static void serve(void *arg, const struct t_http_msg *req, int fd)
{
    char method[16] = "", path[512] = "", key[64] = "";
    sscanf(req->head, "%15s %511s", method, path);
    if(strcmp(path, "/api/health") == 0) {
        t_srv_reply(fd, 200, NULL, "{\"status\":\"ok\"}");
        return;
    }
    if(!t_http_header(req, "x-api-key", key, sizeof key) || strcmp(key, KEY) != 0) {
        t_srv_reply(fd, 401, NULL, "{\"error\":\"Invalid API key\"}");
        return;
    }
    if(strcmp(method, "POST") == 0 && strcmp(path, "/api/queries") == 0) {
        const char *b = req->body;
        if(strstr(b, "\"sql_query\":\"bad\"")) {
            t_srv_reply(fd, 400, NULL,
                        "{\"error\":\"Invalid SQL query\",\"details\":\"Parser Error: "
                        "syntax error at or near \\\"bad\\\"\\nLINE 1\\t\\u001b[2J\"}");
        } else if(strstr(b, "\"sql_query\":\"html\"")) {
            t_srv_reply(fd, 200, NULL, "<html>not json</html>");
        } else if(strstr(b, "\"sql_query\":\"crash\"")) {
            t_srv_reply(fd, 500, NULL, "<html>Internal Server Error</html>");
        } else if(strstr(b, "\"sql_query\":\"gateway\"")) {
            t_srv_reply(fd, 502, NULL, "{\"error\":\"Bad gateway\"}");
        } else if(strstr(b, "\"sql_query\":\"busy\"") && atomic_fetch_add(&busy_calls, 1) == 0) {
            t_srv_reply(fd, 503, "Retry-After: 0\r\n", "{\"error\":\"Server busy, retry later\"}");
        } else {
            t_srv_reply(fd, 200, NULL,
                        "{\"message\":\"Query created successfully\",\"query_slug\":"
                        "\"dapi-query-t1\",\"sql_query\":\"SELECT 1\",\"status\":\"success\"}");
        }
        return;
    }
    char slug[128] = "";
    int page = 0;
    if(strcmp(method, "GET") != 0 ||
       sscanf(path, "/api/queries/%127[^/]/results?page_number=%d", slug, &page) != 2) {
        t_srv_reply(fd, 404, NULL, "{\"error\":\"Not found\"}");
        return;
    }
    if(strcmp(slug, "dapi-query-t1") == 0) {
        /* 205 rows: two full pages and one of 5; empty pages after */
        int n = page <= 2 ? 100 : page == 3 ? 5 : 0;
        reply_page(fd, slug, page, (page - 1) * 100 + 1, n);
    } else if(strcmp(slug, "dapi%20query") == 0) {
        reply_page(fd, "dapi query", page, 1, 1);
    } else if(strcmp(slug, "dapi-query-failed") == 0) {
        t_srv_reply(fd, 400, NULL,
                    "{\"details\":\"Conversion Error: x\",\"error\":\"Query execution failed\","
                    "\"page_number\":1,\"query_slug\":\"dapi-query-failed\"}");
    } else if(strcmp(slug, "dapi-query-missing") == 0) {
        t_srv_reply(fd, 404, NULL, "{\"error\":\"Query not found\"}");
    } else if(strcmp(slug, "dapi-query-other") == 0) {
        reply_page(fd, "dapi-query-t1", page, 1, 1);
    } else if(strcmp(slug, "dapi-query-page7") == 0) {
        reply_page(fd, slug, 7, 1, 1);
    } else if(strcmp(slug, "dapi-query-toomany") == 0) {
        reply_page(fd, slug, page, 1, 101);
    } else if(strcmp(slug, "dapi-query-empty") == 0) {
        t_srv_reply(fd, 200, NULL, "");
    } else if(strcmp(slug, "dapi-query-notjson") == 0) {
        t_srv_reply(fd, 200, NULL,
                    "{\"query_slug\":\"dapi-query-notjson\",\"page\":1,\"data\":[{\"a\":1},]}");
    } else if(strcmp(slug, "dapi-query-flaky") == 0 && atomic_fetch_add(&flaky_calls, 1) == 0) {
        t_srv_reply(fd, 502, "Retry-After: 0\r\n", "{\"error\":\"Bad gateway\"}");
    } else if(strcmp(slug, "dapi-query-flaky") == 0) {
        reply_page(fd, slug, page, 1, 3);
    } else if(strcmp(slug, "dapi-query-p2fails") == 0) {
        if(page == 2)
            t_srv_reply(fd, 404, NULL, "{\"error\":\"Query not found\"}");
        else
            reply_page(fd, slug, page, (page - 1) * 100 + 1, 100);
    } else {
        t_srv_reply(fd, 404, NULL, "{\"error\":\"Query not found\"}");
    }
}

static int retries;
static char retry_what[64];

static void on_retry(void *arg, const char *what, int attempt, int64_t delay_ms,
                     const char *reason)
{
    retries++;
    snprintf(retry_what, sizeof retry_what, "%s", what);
}

static struct dapi_client *client(const char *key, int attempts)
{
    struct dapi_client *c = NULL;
    struct dapi_client_err err = {0};
    struct dapi_client_config cfg = {.url = url,
                                     .api_key = key,
                                     .timeout_ms = 5000,
                                     .max_attempts = attempts,
                                     .retry_total_ms = 5000,
                                     .on_retry = on_retry};
    T_CHECK(dapi_client_new(&c, &cfg, &err) == DAPI_OK, "client: %s", err.message);
    return c;
}

static struct dapi_client_err fresh_err(void)
{
    struct dapi_client_err e;
    memset(&e, 0x5a, sizeof e); /* garbage: every failing call must fill all of it */
    return e;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_new(void)
{
    struct dapi_client *c = (struct dapi_client *)1;
    struct dapi_client_err err = fresh_err();
    struct dapi_client_config cfg = {.url = "ftp://x"};
    T_EQ_INT(dapi_client_new(&c, &cfg, &err), DAPI_ERR_INVALID);
    T_CHECK(c == NULL, "no client");
    T_EQ_INT(err.kind, DAPI_CLIENT_LOCAL);
    T_CHECK(strstr(err.message, "http://") != NULL, "the message says why: [%s]", err.message);
    cfg.url = url;
    cfg.api_key = "a\nb";
    err = fresh_err();
    T_EQ_INT(dapi_client_new(&c, &cfg, &err), DAPI_ERR_INVALID);
    T_EQ_STR(err.message, "the API key holds a control character");
}

static void test_create(struct dapi_client *c)
{
    char *slug = NULL, head[4096], body[512], v[128];
    struct dapi_client_err err = fresh_err();
    struct dapi_client_query q = {.sql = "SELECT \"x\"\n"};
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_OK);
    T_EQ_STR(slug, "dapi-query-t1");
    free(slug);
    /* what was sent */
    t_srv_last(srv, head, sizeof head, body, sizeof body);
    T_CHECK(strncmp(head, "POST /api/queries HTTP/1.1", 26) == 0, "[%.40s]", head);
    T_EQ_STR(body, "{\"sql_query\":\"SELECT \\\"x\\\"\\n\"}");
    struct t_http_msg m = {.body = NULL};
    snprintf(m.head, sizeof m.head, "%s", head);
    T_EQ_STR(t_http_header(&m, "x-api-key", v, sizeof v), KEY);
    T_EQ_STR(t_http_header(&m, "Content-Type", v, sizeof v), "application/json");

    /* layer + table + limit */
    struct dapi_client_query lt = {.layer = "nekt_raw", .table = "customers", .limit = 5};
    T_EQ_INT(dapi_client_create(c, &lt, &slug, &err), DAPI_OK);
    free(slug);
    t_srv_last(srv, NULL, 0, body, sizeof body);
    T_EQ_STR(body, "{\"layer\":\"nekt_raw\",\"table\":\"customers\",\"limit\":5}");
}

static void test_page(struct dapi_client *c)
{
    struct dapi_page *pg = NULL;
    struct dapi_client_err err = fresh_err();
    T_EQ_INT(dapi_client_page(c, "dapi-query-t1", 2, &pg, &err), DAPI_OK);
    if(pg) {
        T_EQ_INT(dapi_page_number(pg), 2);
        T_EQ_INT(dapi_page_rows(pg), 100);
        size_t ncols = 0, len = 0;
        const struct dapi_cell *cell = dapi_page_row(pg, 0, &ncols);
        T_EQ_INT(ncols, 1);
        T_EQ_MEM(cell[0].key, cell[0].key_len, "\"i\"");
        T_EQ_MEM(cell[0].val, cell[0].val_len, "101");
        const char *row = dapi_page_row_json(pg, 99, &len);
        T_EQ_MEM(row, len, "{\"i\":200}");
        dapi_page_free(pg);
    }
    pg = NULL;
    T_EQ_INT(dapi_client_page(c, "dapi-query-t1", 3, &pg, &err), DAPI_OK);
    T_EQ_INT(pg ? dapi_page_rows(pg) : 999, 5);
    dapi_page_free(pg);
    /* the slug is percent-encoded in the URL */
    pg = NULL;
    T_EQ_INT(dapi_client_page(c, "dapi query", 1, &pg, &err), DAPI_OK);
    T_EQ_INT(pg ? dapi_page_rows(pg) : 999, 1);
    dapi_page_free(pg);
}

struct seen {
    int pages, rows, next, out_of_order, stop_after;
};

static int on_page(void *arg, const struct dapi_page *pg)
{
    struct seen *s = arg;
    s->pages++;
    for(size_t i = 0; i < dapi_page_rows(pg); i++) {
        size_t ncols = 0;
        const struct dapi_cell *cell = dapi_page_row(pg, i, &ncols);
        int v = ncols == 1 ? atoi(cell[0].val) : -1;
        if(v != s->next)
            s->out_of_order++;
        s->next = v + 1;
        s->rows++;
    }
    return s->stop_after && s->pages >= s->stop_after;
}

static void test_fetch_all(struct dapi_client *c)
{
    static const int parallel[] = {1, 2, 4};
    for(size_t i = 0; i < sizeof parallel / sizeof parallel[0]; i++) {
        struct seen s = {.next = 1};
        struct dapi_client_err err = fresh_err();
        T_EQ_INT(dapi_client_fetch_all(c, "dapi-query-t1", parallel[i], on_page, &s, &err),
                 DAPI_OK);
        T_CHECK(s.pages == 3 && s.rows == 205 && s.out_of_order == 0,
                "parallel %d: %d pages, %d rows, %d out of order", parallel[i], s.pages, s.rows,
                s.out_of_order);
    }
    /* the callback stops it */
    struct seen s = {.next = 1, .stop_after = 1};
    struct dapi_client_err err = fresh_err();
    T_EQ_INT(dapi_client_fetch_all(c, "dapi-query-t1", 2, on_page, &s, &err), DAPI_ERR_IO);
    T_EQ_INT(err.kind, DAPI_CLIENT_ABORTED);
    T_EQ_INT(s.pages, 1);
    /* a page failing in the middle: reported, and the pages before it were delivered */
    for(int par = 1; par <= 3; par += 2) {
        struct seen f = {.next = 1};
        err = fresh_err();
        T_EQ_INT(dapi_client_fetch_all(c, "dapi-query-p2fails", par, on_page, &f, &err),
                 DAPI_ERR_NOT_FOUND);
        T_EQ_INT(err.kind, DAPI_CLIENT_QUERY);
        T_EQ_INT(err.status, 404);
        T_CHECK(f.pages == 1 && f.rows == 100, "parallel %d: page 1 delivered (%d pages)", par,
                f.pages);
    }
}

static void test_error_bodies(struct dapi_client *c)
{
    char *slug = (char *)1;
    struct dapi_client_err err = fresh_err();
    struct dapi_client_query q = {.sql = "bad"};
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_ERR_SQL);
    T_CHECK(slug == NULL, "no slug on failure");
    T_EQ_INT(err.kind, DAPI_CLIENT_QUERY);
    T_EQ_INT(err.status, 400);
    T_EQ_INT(err.exec_failure, 0);
    T_EQ_STR(err.message, "Invalid SQL query");
    /* the details keep their line breaks (DuckDB's caret block); other control characters
     * (a tab, a terminal escape) become spaces */
    T_EQ_STR(err.details, "Parser Error: syntax error at or near \"bad\"\nLINE 1  [2J");

    /* an execution failure is the query's outcome */
    struct dapi_page *pg = NULL;
    err = fresh_err();
    T_EQ_INT(dapi_client_page(c, "dapi-query-failed", 1, &pg, &err), DAPI_ERR_SQL);
    T_CHECK(pg == NULL, "no page");
    T_EQ_INT(err.kind, DAPI_CLIENT_QUERY);
    T_EQ_INT(err.exec_failure, 1);
    T_EQ_STR(err.message, "Query execution failed");
    T_EQ_STR(err.details, "Conversion Error: x");

    err = fresh_err();
    T_EQ_INT(dapi_client_page(c, "dapi-query-missing", 1, &pg, &err), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(err.kind, DAPI_CLIENT_QUERY);
    T_EQ_STR(err.details, "");

    /* a wrong key */
    struct dapi_client *bad = client("nope", 1);
    if(bad) {
        err = fresh_err();
        T_EQ_INT(dapi_client_create(bad, &q, &slug, &err), DAPI_ERR_AUTH);
        T_EQ_INT(err.kind, DAPI_CLIENT_AUTH);
        T_EQ_INT(err.status, 401);
        T_EQ_STR(err.message, "Invalid API key");
        dapi_client_free(bad);
    }
}

static void test_not_json(struct dapi_client *c)
{
    char *slug = NULL;
    struct dapi_client_err err = fresh_err();
    /* a 200 answer to create that is not JSON */
    struct dapi_client_query q = {.sql = "html"};
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_ERR_UPSTREAM);
    T_CHECK(slug == NULL, "no slug");
    T_EQ_INT(err.kind, DAPI_CLIENT_PROTOCOL);
    T_EQ_INT(err.status, 200);
    T_EQ_STR(err.message, "the server's answer has no query_slug");
    /* an error status whose body is not JSON: not retried (a 500 may have acted) */
    int before = t_srv_requests(srv);
    q.sql = "crash";
    err = fresh_err();
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_ERR_UPSTREAM);
    T_EQ_INT(err.kind, DAPI_CLIENT_NETWORK);
    T_EQ_INT(err.status, 500);
    T_EQ_STR(err.message, "unexpected answer: HTTP 500 without a JSON error");
    T_EQ_INT(t_srv_requests(srv), before + 1);
    /* a page that is not strict JSON (a trailing comma) */
    struct dapi_page *pg = NULL;
    err = fresh_err();
    T_CHECK(dapi_client_page(c, "dapi-query-notjson", 1, &pg, &err) != DAPI_OK,
            "a malformed page is refused");
    T_CHECK(pg == NULL, "no page");
    T_EQ_INT(err.kind, DAPI_CLIENT_PROTOCOL);
    T_CHECK(strncmp(err.message, "malformed results page at byte ", 31) == 0, "[%s]", err.message);
    /* an empty 200 answer is the server's fault, not a local one */
    err = fresh_err();
    T_CHECK(dapi_client_page(c, "dapi-query-empty", 1, &pg, &err) != DAPI_OK,
            "an empty page is refused");
    T_EQ_INT(err.kind, DAPI_CLIENT_PROTOCOL);
    T_EQ_INT(err.status, 200);
    /* pages that are JSON but break the contract */
    static const struct {
        const char *slug, *why;
    } bad[] = {
        {"dapi-query-other", "another query_slug than the one asked for"},
        {"dapi-query-page7", "another page number than the one asked for"},
        {"dapi-query-toomany", "more than 100 rows"},
    };
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = fresh_err();
        T_EQ_INT(dapi_client_page(c, bad[i].slug, 1, &pg, &err), DAPI_ERR_UPSTREAM);
        T_EQ_INT(err.kind, DAPI_CLIENT_PROTOCOL);
        T_CHECK(strstr(err.message, bad[i].why) != NULL, "%s: [%s]", bad[i].slug, err.message);
    }
}

static void test_retries(struct dapi_client *c)
{
    char *slug = NULL;
    struct dapi_client_err err = fresh_err();
    /* 503 promises the request was not acted on: create is retried */
    retries = 0;
    int before = t_srv_requests(srv);
    struct dapi_client_query q = {.sql = "busy"};
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_OK);
    T_EQ_STR(slug, "dapi-query-t1");
    free(slug);
    slug = NULL;
    T_EQ_INT(retries, 1);
    T_EQ_STR(retry_what, "POST /api/queries");
    T_EQ_INT(t_srv_requests(srv), before + 2);
    /* 502 might have created the query: not retried */
    retries = 0;
    before = t_srv_requests(srv);
    q.sql = "gateway";
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_ERR_UPSTREAM);
    T_EQ_INT(err.kind, DAPI_CLIENT_NETWORK);
    T_EQ_INT(retries, 0);
    T_EQ_INT(t_srv_requests(srv), before + 1);
    /* reading a page is idempotent: the 502 is retried */
    struct dapi_page *pg = NULL;
    T_EQ_INT(dapi_client_page(c, "dapi-query-flaky", 1, &pg, &err), DAPI_OK);
    T_EQ_INT(pg ? dapi_page_rows(pg) : 999, 3);
    dapi_page_free(pg);
    T_EQ_INT(retries, 1);
    T_EQ_STR(retry_what, "page 1");
}

static void test_refused(void)
{
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", t_unused_port());
    struct dapi_client *c = NULL;
    struct dapi_client_err err = fresh_err();
    struct dapi_client_config cfg = {.url = u, .api_key = KEY, .max_attempts = 1};
    T_EQ_INT(dapi_client_new(&c, &cfg, &err), DAPI_OK);
    if(!c)
        return;
    char *slug = NULL;
    struct dapi_client_query q = {.sql = "SELECT 1"};
    err = fresh_err();
    T_EQ_INT(dapi_client_create(c, &q, &slug, &err), DAPI_ERR_UPSTREAM);
    T_EQ_INT(err.kind, DAPI_CLIENT_NETWORK);
    T_EQ_INT(err.status, 0);
    T_EQ_INT(err.exec_failure, 0);
    T_CHECK(err.message[0] != '\0' && err.message[0] != 0x5a, "a reason: [%.80s]", err.message);
    T_EQ_STR(err.details, "");
    dapi_client_free(c);
}

static void test_health(struct dapi_client *c)
{
    char *status = NULL;
    struct dapi_client_err err = fresh_err();
    T_EQ_INT(dapi_client_health(c, &status, &err), DAPI_OK);
    T_EQ_STR(status, "ok");
    free(status);
}

int main(void)
{
    srv = t_srv_start(serve, NULL);
    if(!srv)
        T_DONE();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", t_srv_port(srv)); /* '/' is dropped */
    test_new();
    struct dapi_client *c = client(KEY, 3);
    if(c) {
        test_create(c);
        test_page(c);
        test_fetch_all(c);
        test_error_bodies(c);
        test_not_json(c);
        test_retries(c);
        test_refused();
        test_health(c);
        dapi_client_free(c);
    }
    t_srv_stop(srv);
    T_DONE();
}
