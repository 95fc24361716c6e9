/* The HTTP client (src/upstream/httpc.c, over libcurl) against a fake server on 127.0.0.1:
 * status, headers and body of a GET and a POST, Retry-After, the body cap, a body streamed to
 * a file, the whole-call timeout, a refused connection, an empty reply, escaping, and
 * dapi_httpc_abort_all (last: it is for good). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "upstream/httpc.h"
#include "t.h"

static struct t_srv *srv;
static struct dapi_httpc *hc;
static char url[256];

/* Answers by path. */
static void serve(void *arg, const struct t_http_msg *req, int fd)
{
    char path[256] = "";
    sscanf(req->head, "%*s %255s", path);
    if(strcmp(path, "/hello") == 0) {
        t_srv_reply(fd, 201, "X-Other: y\r\n", "{\"hi\":1}");
    } else if(strcmp(path, "/echo") == 0) {
        t_srv_reply(fd, 404, NULL, req->body);
    } else if(strncmp(path, "/retry-after/", 13) == 0) {
        char h[300];
        snprintf(h, sizeof h, "Retry-After: %s\r\n", path + 13);
        for(char *p = h; *p; p++)
            if(*p == '_')
                *p = ' ';
        t_srv_reply(fd, 503, h, "{}");
    } else if(strncmp(path, "/bytes/", 7) == 0) {
        size_t n = strtoul(path + 7, NULL, 10);
        char *b = malloc(n + 1);
        if(b) {
            memset(b, 'x', n);
            b[n] = '\0';
            t_srv_reply(fd, 200, NULL, b);
        }
        free(b);
    } else if(strcmp(path, "/hang") == 0) {
        t_srv_hang(fd, 3000);
    } else if(strcmp(path, "/nothing") == 0) {
        /* closes without a byte */
    } else {
        t_srv_reply(fd, 500, NULL, "{\"error\":\"unknown path\"}");
    }
}

static enum dapi_err get(const char *path, uint64_t max_body, long timeout_ms,
                         struct dapi_httpc_resp *resp)
{
    char u[512];
    snprintf(u, sizeof u, "%s%s", url, path);
    struct dapi_httpc_call c = {
        .method = "GET", .url = u, .max_body = max_body, .timeout_ms = timeout_ms, .fd = -1};
    return dapi_httpc_do(hc, &c, resp);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_get(void)
{
    struct dapi_httpc_resp r;
    char u[512], head[4096];
    snprintf(u, sizeof u, "%s/hello", url);
    const char *const headers[] = {"X-Test: one", "Accept: application/json", NULL};
    struct dapi_httpc_call c = {.method = "GET", .url = u, .headers = headers, .fd = -1};
    int before = t_srv_requests(srv);
    T_EQ_INT(dapi_httpc_do(hc, &c, &r), DAPI_OK);
    T_EQ_INT(r.status, 201);
    T_EQ_MEM(r.body.data, r.body.len, "{\"hi\":1}");
    T_EQ_INT(r.body_bytes, 8);
    T_EQ_INT(r.retry_after_ms, -1);
    T_EQ_INT(r.request_sent, 1);
    T_EQ_STR(r.error, "");
    dapi_httpc_resp_free(&r);
    T_EQ_INT(t_srv_requests(srv), before + 1);
    t_srv_last(srv, head, sizeof head, NULL, 0);
    T_CHECK(strncmp(head, "GET /hello HTTP/1.1\r\n", 21) == 0, "request line: [%.40s]", head);
    T_CHECK(strstr(head, "\r\nX-Test: one") != NULL, "the caller's header was sent:\n%s", head);
    T_CHECK(strstr(head, "\r\nUser-Agent: dapi") != NULL, "User-Agent dapi:\n%s", head);
}

static void test_post(void)
{
    struct dapi_httpc_resp r;
    char u[512], head[4096], body[256], v[64];
    snprintf(u, sizeof u, "%s/echo", url);
    const char *const headers[] = {"Content-Type: application/json", NULL};
    struct dapi_httpc_call c = {.method = "POST",
                                .url = u,
                                .headers = headers,
                                .body = "{\"sql\":1}",
                                .body_len = 9,
                                .fd = -1};
    /* any status is a response: DAPI_OK with the status */
    T_EQ_INT(dapi_httpc_do(hc, &c, &r), DAPI_OK);
    T_EQ_INT(r.status, 404);
    T_EQ_MEM(r.body.data, r.body.len, "{\"sql\":1}");
    dapi_httpc_resp_free(&r);
    t_srv_last(srv, head, sizeof head, body, sizeof body);
    T_CHECK(strncmp(head, "POST /echo ", 11) == 0, "a POST: [%.40s]", head);
    T_EQ_STR(body, "{\"sql\":1}");
    struct t_http_msg m = {.body = NULL};
    snprintf(m.head, sizeof m.head, "%s", head);
    T_EQ_STR(t_http_header(&m, "Content-Length", v, sizeof v), "9");
    T_CHECK(t_http_header(&m, "Expect", v, sizeof v) == NULL, "no Expect: 100-continue");

    /* another method with no body */
    c.method = "DELETE";
    c.body = NULL;
    c.body_len = 0;
    T_EQ_INT(dapi_httpc_do(hc, &c, &r), DAPI_OK);
    T_EQ_INT(r.status, 404);
    dapi_httpc_resp_free(&r);
    t_srv_last(srv, head, sizeof head, NULL, 0);
    T_CHECK(strncmp(head, "DELETE /echo ", 13) == 0, "a DELETE: [%.40s]", head);
}

static void test_retry_after(void)
{
    static const struct {
        const char *value;
        int64_t want;
    } cases[] = {
        {"7", 7000},
        {"7__", 7000}, /* trailing white space (OWS) */
        {"0", 0},
        {"100000", 86400000},                 /* capped at a day */
        {"Wed,_21_Oct_2015_07:28:00_GMT", 0}, /* a date in the past: now */
        {"soon", -1},                         /* neither: none */
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_httpc_resp r;
        char path[128];
        snprintf(path, sizeof path, "/retry-after/%s", cases[i].value);
        T_EQ_INT(get(path, 0, 0, &r), DAPI_OK);
        T_EQ_INT(r.status, 503);
        T_CHECK(r.retry_after_ms == cases[i].want, "Retry-After: %s: got %lld, want %lld",
                cases[i].value, (long long)r.retry_after_ms, (long long)cases[i].want);
        dapi_httpc_resp_free(&r);
    }
    /* a date an hour ahead: about 3600 s */
    struct dapi_httpc_resp r;
    char path[128], date[64];
    time_t later = (time_t)dapi_clock_wall_s() + 3600;
    struct tm tm;
    gmtime_r(&later, &tm);
    strftime(date, sizeof date, "%a,_%d_%b_%Y_%H:%M:%S_GMT", &tm);
    snprintf(path, sizeof path, "/retry-after/%s", date);
    T_EQ_INT(get(path, 0, 0, &r), DAPI_OK);
    T_CHECK(r.retry_after_ms >= 3590000 && r.retry_after_ms <= 3600000,
            "Retry-After an hour ahead: %lld ms", (long long)r.retry_after_ms);
    dapi_httpc_resp_free(&r);
}

static void test_size_cap(void)
{
    struct dapi_httpc_resp r;
    /* exactly the cap */
    T_EQ_INT(get("/bytes/100", 100, 0, &r), DAPI_OK);
    T_EQ_INT(r.status, 200);
    T_EQ_INT(r.body.len, 100);
    dapi_httpc_resp_free(&r);
    /* one byte over */
    T_EQ_INT(get("/bytes/101", 100, 0, &r), DAPI_ERR_TOO_LARGE);
    T_EQ_STR(r.error, "response larger than 100 bytes");
    T_CHECK(r.body.data == NULL, "no partial body is kept");
    dapi_httpc_resp_free(&r);
    /* far over, in many pieces */
    T_EQ_INT(get("/bytes/300000", 1000, 0, &r), DAPI_ERR_TOO_LARGE);
    T_CHECK(r.body_bytes <= 1000, "no more than the cap was taken: %llu",
            (unsigned long long)r.body_bytes);
    dapi_httpc_resp_free(&r);
}

static void test_to_file(void)
{
    char dir[128], path[256];
    if(t_tmpdir(dir, sizeof dir, "httpc"))
        return;
    snprintf(path, sizeof path, "%s/body", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    T_CHECK(fd >= 0, "open %s", path);
    if(fd >= 0) {
        char u[512];
        snprintf(u, sizeof u, "%s/bytes/70000", url);
        struct dapi_httpc_call c = {.method = "GET", .url = u, .fd = fd};
        struct dapi_httpc_resp r;
        T_EQ_INT(dapi_httpc_do(hc, &c, &r), DAPI_OK);
        T_EQ_INT(r.status, 200);
        T_EQ_INT(r.body_bytes, 70000);
        T_CHECK(r.body.data == NULL, "the body went to the file, not to memory");
        dapi_httpc_resp_free(&r);
        close(fd);
        struct stat st;
        T_CHECK(stat(path, &st) == 0 && st.st_size == 70000, "the file holds the body");
    }
    t_rm_rf(dir);
}

static void test_timeout(void)
{
    struct dapi_httpc_resp r;
    int64_t t0 = dapi_clock_mono_ms();
    T_EQ_INT(get("/hang", 0, 300, &r), DAPI_ERR_TIMEOUT);
    int64_t took = dapi_clock_mono_ms() - t0;
    T_CHECK(took >= 250 && took < 2000, "the call ended at its timeout: %lld ms", (long long)took);
    T_EQ_INT(r.status, 0);
    T_EQ_INT(r.request_sent, 1);
    T_CHECK(r.error[0] != '\0', "a reason is given");
    dapi_httpc_resp_free(&r);
}

static void test_refused(void)
{
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", t_unused_port());
    struct dapi_httpc_call c = {.method = "GET", .url = u, .fd = -1};
    struct dapi_httpc_resp r;
    T_EQ_INT(dapi_httpc_do(hc, &c, &r), DAPI_ERR_UPSTREAM);
    T_EQ_INT(r.status, 0);
    T_EQ_INT(r.request_sent, 0); /* certainly not acted on: safe to retry */
    T_CHECK(r.error[0] != '\0', "a reason is given");
    dapi_httpc_resp_free(&r);
}

static void test_empty_reply(void)
{
    struct dapi_httpc_resp r;
    T_EQ_INT(get("/nothing", 0, 0, &r), DAPI_ERR_UPSTREAM);
    T_EQ_INT(r.status, 0);
    T_EQ_INT(r.request_sent, 1); /* it may have been acted on */
    dapi_httpc_resp_free(&r);
    /* the handle is still usable after failures */
    T_EQ_INT(get("/hello", 0, 0, &r), DAPI_OK);
    T_EQ_INT(r.status, 201);
    dapi_httpc_resp_free(&r);
}

static void test_escape(void)
{
    char *e = dapi_httpc_escape("dapi-query-AZaz09");
    T_EQ_STR(e, "dapi-query-AZaz09");
    free(e);
    e = dapi_httpc_escape("a b/c?d=e&f\xc3\xbc");
    T_EQ_STR(e, "a%20b%2Fc%3Fd%3De%26f%C3%BC");
    free(e);
}

static void test_abort_all(void)
{
    struct dapi_httpc_resp r;
    int before = t_srv_requests(srv);
    dapi_httpc_abort_all();
    T_EQ_INT(get("/hello", 0, 0, &r), DAPI_ERR_UPSTREAM);
    T_CHECK(strncmp(r.error, "aborted", 7) == 0, "the reason says aborted: [%s]", r.error);
    dapi_httpc_resp_free(&r);
    T_EQ_INT(t_srv_requests(srv), before); /* nothing was sent */
}

int main(void)
{
    srv = t_srv_start(serve, NULL);
    if(!srv)
        T_DONE();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", t_srv_port(srv));
    T_EQ_INT(dapi_httpc_new(&hc), DAPI_OK);
    if(hc) {
        test_get();
        test_post();
        test_retry_after();
        test_size_cap();
        test_to_file();
        test_timeout();
        test_refused();
        test_empty_reply();
        test_escape();
        test_abort_all();
    }
    dapi_httpc_free(hc);
    t_srv_stop(srv);
    T_DONE();
}
