/* The HTTP front (src/http/http.c) for real: a server on 127.0.0.1 and a free port with a
 * dispatch function of this test's own, spoken to in raw HTTP over a socket. A plain GET, a
 * deferred request answered from another thread, query arguments, bodies (Content-Length,
 * chunked, at and past the limit), a header section and a URI too large, ambiguous framing,
 * keep-alive, a handler that forgets to answer, libmicrohttpd kept off stderr, the
 * per-address connection limit, and dapi_http_inflight / dapi_http_quiesce. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "http/http.h"
#include "t.h"

#define MAX_BODY 1024
#define MAX_HEADER 1024

static struct dapi_http *srv;
static int port;
static atomic_int dispatched;

/* The request a handler deferred, for the test to answer. */
static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dapi_req *pending;

static void respond_text(struct dapi_req *r, int status, const char *text)
{
    char *body = strdup(text);
    dapi_req_respond(r, status, body, body ? strlen(body) : 0, NULL, NULL);
}

static atomic_int released;
static const void *released_arg;

static void on_release(void *arg)
{
    released_arg = arg;
    atomic_fetch_add(&released, 1);
}

/* /defer: answered later by the test. /none: no answer at all. /args: the arguments a..e.
 * Anything else: echoes method, path, the X-Test header and the body. */
static void dispatch(struct dapi_req *r, void *app)
{
    atomic_fetch_add(&dispatched, 1);
    const char *path = dapi_req_path(r);
    char out[4096];
    if(strcmp(path, "/defer") == 0) {
        dapi_req_defer(r);
        pthread_mutex_lock(&pending_mu);
        pending = r;
        pthread_mutex_unlock(&pending_mu);
        return;
    }
    if(strcmp(path, "/none") == 0)
        return;
    if(strcmp(path, "/kept") == 0) { /* a body the handler keeps, released once sent */
        static const char kept[] = "{\"kept\":true}";
        dapi_req_respond_kept(r, 200, kept, sizeof kept - 1, on_release, (void *)kept);
        return;
    }
    if(strcmp(path, "/notmod") == 0) { /* 304: no content, no Content-Type */
        dapi_req_add_header(r, "ETag", "\"t\"");
        dapi_req_respond(r, 304, NULL, 0, NULL, NULL);
        return;
    }
    if(strcmp(path, "/added") == 0) { /* headers added before the answer, with its own one */
        char longv[DAPI_REQ_HEADER_VALUE_MAX + 2];
        memset(longv, 'v', sizeof longv - 1);
        longv[sizeof longv - 1] = '\0';
        int rc = dapi_req_add_header(r, "RateLimit", "limit=3, remaining=2, reset=1");
        rc |= dapi_req_add_header(r, "RateLimit-Policy", "3;w=1");
        rc |= dapi_req_add_header(r, "X-Third", "3") | dapi_req_add_header(r, "X-Fourth", "4");
        rc |= dapi_req_add_header(r, "X-Fifth", "5") | dapi_req_add_header(r, "X-Sixth", "6");
        rc |= dapi_req_add_header(r, "X-Seventh", "7") | dapi_req_add_header(r, "X-Eighth", "8");
        int refused = dapi_req_add_header(r, "X-Ninth", "9") == -1 &&
                      dapi_req_add_header(r, "X-Long", longv) == -1;
        char *body = strdup(rc == 0 && refused ? "ok" : "bad");
        dapi_req_respond(r, 429, body, body ? strlen(body) : 0, "Retry-After", "2");
        return;
    }
    if(strcmp(path, "/full") == 0) { /* copied values fill the request's text area */
        char v127[DAPI_REQ_HEADER_VALUE_MAX + 1];
        memset(v127, 'f', sizeof v127 - 1);
        v127[sizeof v127 - 1] = '\0';
        int fit = DAPI_REQ_HEADER_TEXT / (DAPI_REQ_HEADER_VALUE_MAX + 1), rc = 0;
        static const char *const names[] = {"X-F1", "X-F2", "X-F3", "X-F4", "X-F5", "X-F6"};
        for(int i = 0; i < fit; i++)
            rc |= dapi_req_add_header(r, names[i], v127);
        int refused = dapi_req_add_header(r, names[fit], v127) == -1;
        /* what is left still takes a short value; the extra header has room of its own, even
         * at the longest */
        rc |= dapi_req_add_header(r, "X-Short", "s");
        char *body = strdup(rc == 0 && refused ? "ok" : "bad");
        dapi_req_respond(r, 200, body, body ? strlen(body) : 0, "X-Extra", v127);
        return;
    }
    if(strcmp(path, "/static") == 0) { /* a static value longer than a copied one may be */
        static char longv[300];
        memset(longv, 's', sizeof longv - 1);
        int rc = dapi_req_add_static_header(r, "X-Static", longv);
        rc |= dapi_req_add_header(r, "X-Copied", "c");
        char *body = strdup(rc == 0 ? "ok" : "bad");
        dapi_req_respond(r, 200, body, body ? strlen(body) : 0, NULL, NULL);
        return;
    }
    if(strcmp(path, "/args") == 0) {
        static const char *const names[] = {"a", "b", "c", "d", "e"};
        size_t n = 0;
        for(size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *v = dapi_req_arg(r, names[i]);
            n += (size_t)snprintf(out + n, sizeof out - n, "%s%s=%s", i ? "|" : "", names[i],
                                  v ? v : "(null)");
        }
        respond_text(r, 200, out);
        return;
    }
    size_t blen;
    const char *body = dapi_req_body(r, &blen);
    const char *x = dapi_req_header(r, "X-Test");
    snprintf(out, sizeof out, "%s %s x=%s body=%zu:%.*s", dapi_req_method(r), path,
             x ? x : "(null)", blen, (int)(blen < 2000 ? blen : 2000), body);
    respond_text(r, 200, out);
}

/* Waits up to 2 s for a deferred request; takes it. */
static struct dapi_req *take_pending(void)
{
    int64_t until = dapi_clock_mono_ms() + 2000;
    pthread_mutex_lock(&pending_mu);
    while(!pending && dapi_clock_mono_ms() < until) {
        pthread_mutex_unlock(&pending_mu);
        dapi_clock_sleep_ms(5);
        pthread_mutex_lock(&pending_mu);
    }
    struct dapi_req *r = pending;
    pending = NULL;
    pthread_mutex_unlock(&pending_mu);
    return r;
}

/* Sends raw on a new connection and reads one response into m: its status, or -1 if none
 * came. The connection is returned in *fd_out (closed here when fd_out is NULL). */
static int exchange(const char *raw, struct t_http_msg *m, int *fd_out)
{
    m->body = NULL;
    int fd = t_connect(port);
    T_CHECK(fd >= 0, "connect: %s", strerror(errno));
    if(fd < 0)
        return -1;
    int st = -1;
    if(t_send(fd, raw, strlen(raw)) == 0 && t_http_read(fd, m) == 0)
        st = t_http_status(m);
    if(fd_out)
        *fd_out = fd;
    else
        close(fd);
    return st;
}

/* 1 if the peer closed fd (EOF or reset) within ms, 0 if it is still open. */
static int closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[64];
    int64_t until = dapi_clock_mono_ms() + ms;
    while(dapi_clock_mono_ms() < until) {
        if(poll(&p, 1, 20) > 0) {
            ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
            if(n <= 0)
                return 1;
        }
    }
    return 0;
}

/* 1 if nothing arrives on fd for ms (and it stays open). */
static int silent_for(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 0;
}

/* 1 if no byte of an answer arrives on fd within ms (the connection may be closed). */
static int unanswered_for(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if(poll(&p, 1, ms) == 0)
        return 1;
    char c;
    return recv(fd, &c, 1, 0) <= 0;
}

/* Polls dapi_http_inflight until it is n (up to 2 s); returns the last value seen. */
static long inflight_becomes(long n)
{
    long v = dapi_http_inflight(srv);
    for(int i = 0; i < 400 && v != n; i++) {
        dapi_clock_sleep_ms(5);
        v = dapi_http_inflight(srv);
    }
    return v;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_start_errors(void)
{
    struct dapi_http *h = (struct dapi_http *)1;
    char err[256] = "";
    struct dapi_http_opts o = {.host = "localhost-by-name",
                               .port = 0,
                               .threads = 1,
                               .max_body_bytes = 1,
                               .max_header_bytes = 1024,
                               .max_connections = 4,
                               .max_connections_per_ip = 4,
                               .request_head_timeout_s = 5,
                               .connection_timeout_s = 5,
                               .dispatch = dispatch};
    T_EQ_INT(dapi_http_start(&h, &o, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(h == NULL, "no server on failure");
    T_CHECK(strstr(err, "--host") != NULL, "the error names --host: [%s]", err);
}

static void test_plain_get(void)
{
    struct t_http_msg m;
    char v[128];
    int before = atomic_load(&dispatched);
    int st = exchange("GET /plain HTTP/1.1\r\nHost: t\r\nX-Test: hello\r\n\r\n", &m, NULL);
    T_EQ_INT(st, 200);
    T_EQ_STR(m.body, "GET /plain x=hello body=0:");
    T_EQ_STR(t_http_header(&m, "Content-Type", v, sizeof v), "application/json");
    T_EQ_INT(atomic_load(&dispatched), before + 1);
    t_http_msg_free(&m);

    /* another method; the handler sees the path without its query string */
    st = exchange("DELETE /x/y?z=1 HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL);
    T_EQ_INT(st, 200);
    T_EQ_STR(m.body, "DELETE /x/y x=(null) body=0:");
    t_http_msg_free(&m);
}

static void test_args(void)
{
    struct t_http_msg m;
    int st = exchange("GET /args?a=1&b=&c&e=x%20y%26z HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL);
    T_EQ_INT(st, 200);
    /* "?b=" and "?c" are present and empty; d is absent; e is percent-decoded */
    T_EQ_STR(m.body, "a=1|b=|c=|d=(null)|e=x y&z");
    t_http_msg_free(&m);
}

static void test_body(void)
{
    struct t_http_msg m;
    int st = exchange("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
                      &m, NULL);
    T_EQ_INT(st, 200);
    T_EQ_STR(m.body, "POST /echo x=(null) body=11:hello world");
    t_http_msg_free(&m);

    st = exchange("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                  &m, NULL);
    T_EQ_INT(st, 200);
    T_EQ_STR(m.body, "POST /echo x=(null) body=11:hello world");
    t_http_msg_free(&m);

    /* exactly the limit is accepted */
    char req[MAX_BODY + 256];
    int n = snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(req + n, 'b', MAX_BODY);
    req[n + MAX_BODY] = '\0';
    st = exchange(req, &m, NULL);
    T_EQ_INT(st, 200);
    T_CHECK(m.body && strncmp(m.body, "POST /echo x=(null) body=1024:bbbb", 34) == 0,
            "a body of exactly the limit: [%.60s]", m.body ? m.body : "");
    t_http_msg_free(&m);
}

static void test_body_too_large(void)
{
    struct t_http_msg m;
    char v[64];
    int before = atomic_load(&dispatched);
    /* one byte over: read (so that the client sees the answer, not a reset) and refused */
    char req[MAX_BODY + 256];
    int n = snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", MAX_BODY + 1);
    memset(req + n, 'b', MAX_BODY + 1);
    req[n + MAX_BODY + 1] = '\0';
    int fd = -1;
    int st = exchange(req, &m, &fd);
    T_EQ_INT(st, 413);
    T_EQ_STR(m.body, "{\"error\":\"Request body too large\"}");
    T_EQ_STR(t_http_header(&m, "Connection", v, sizeof v), "close");
    T_CHECK(closed_within(fd, 2000), "the connection is closed after the 413");
    if(fd >= 0)
        close(fd);
    t_http_msg_free(&m);

    /* far beyond what is drained: answered at once, before any of the body is sent */
    st = exchange("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n", &m,
                  NULL);
    T_EQ_INT(st, 413);
    T_EQ_STR(m.body, "{\"error\":\"Request body too large\"}");
    t_http_msg_free(&m);

    /* a chunked body has no announced size: cut at the limit too */
    static char chunked[4096];
    n = snprintf(chunked, sizeof chunked,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
                 MAX_BODY + 1);
    memset(chunked + n, 'c', MAX_BODY + 1);
    snprintf(chunked + n + MAX_BODY + 1, sizeof chunked - (size_t)n - MAX_BODY - 1,
             "\r\n0\r\n\r\n");
    st = exchange(chunked, &m, NULL);
    T_EQ_INT(st, 413);
    t_http_msg_free(&m);
    T_EQ_INT(atomic_load(&dispatched), before); /* the handler saw none of them */
}

static void test_head_too_large(void)
{
    struct t_http_msg m;
    char req[8192], big[2048];
    int before = atomic_load(&dispatched);
    /* a header of 800 bytes fits the 1024-byte header section */
    memset(big, 'h', 800);
    big[800] = '\0';
    snprintf(req, sizeof req, "GET /plain HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    T_EQ_INT(exchange(req, &m, NULL), 200);
    t_http_msg_free(&m);
    /* 1200 bytes do not: 431 in JSON (not libmicrohttpd's own page) */
    memset(big, 'h', 1200);
    big[1200] = '\0';
    snprintf(req, sizeof req, "GET /plain HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    T_EQ_INT(exchange(req, &m, NULL), 431);
    T_EQ_STR(m.body, "{\"error\":\"Request headers too large\"}");
    t_http_msg_free(&m);
    /* several headers that are small one by one count together */
    int n = snprintf(req, sizeof req, "GET /plain HTTP/1.1\r\nHost: t\r\n");
    for(int i = 0; i < 12; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, "X-H%d: %.100s\r\n", i, big);
    snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    T_EQ_INT(exchange(req, &m, NULL), 431);
    t_http_msg_free(&m);
    /* a URI longer than the limit */
    snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nHost: t\r\n\r\n", big);
    T_EQ_INT(exchange(req, &m, NULL), 414);
    T_EQ_STR(m.body, "{\"error\":\"Request URI too long\"}");
    t_http_msg_free(&m);
    T_EQ_INT(atomic_load(&dispatched), before + 1);
}

static void test_framing(void)
{
    struct t_http_msg m;
    int before = atomic_load(&dispatched);
    T_EQ_INT(exchange("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                      &m, NULL),
             400);
    T_EQ_STR(m.body, "{\"error\":\"Content-Length and Transfer-Encoding together\"}");
    t_http_msg_free(&m);
    T_EQ_INT(exchange("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      "Content-Length: 6\r\n\r\nhello!",
                      &m, NULL),
             400);
    T_EQ_STR(m.body, "{\"error\":\"Invalid Content-Length\"}");
    t_http_msg_free(&m);
    T_EQ_INT(
        exchange("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", &m, NULL),
        400);
    T_EQ_STR(m.body, "{\"error\":\"Unsupported Transfer-Encoding\"}");
    t_http_msg_free(&m);
    T_EQ_INT(atomic_load(&dispatched), before);
}

static void test_keep_alive(void)
{
    struct t_http_msg m;
    char v[64];
    int fd = -1;
    T_EQ_INT(exchange("GET /one HTTP/1.1\r\nHost: t\r\n\r\n", &m, &fd), 200);
    T_EQ_STR(m.body, "GET /one x=(null) body=0:");
    T_CHECK(!t_http_header(&m, "Connection", v, sizeof v) || strcmp(v, "close") != 0,
            "the first answer keeps the connection");
    t_http_msg_free(&m);
    if(fd < 0)
        return;
    /* the second request on the same connection */
    const char *second = "POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    T_EQ_INT(t_send(fd, second, strlen(second)), 0);
    T_EQ_INT(t_http_read(fd, &m), 0);
    T_EQ_INT(t_http_status(&m), 200);
    T_EQ_STR(m.body, "POST /two x=(null) body=3:abc");
    t_http_msg_free(&m);
    /* and a third after the second, proving the body was consumed exactly */
    const char *third = "GET /three HTTP/1.1\r\nHost: t\r\n\r\n";
    T_EQ_INT(t_send(fd, third, strlen(third)), 0);
    T_EQ_INT(t_http_read(fd, &m), 0);
    T_EQ_STR(m.body, "GET /three x=(null) body=0:");
    t_http_msg_free(&m);
    close(fd);
}

static void test_no_answer(void)
{
    struct t_http_msg m;
    T_EQ_INT(exchange("GET /none HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 500);
    T_EQ_STR(m.body, "{\"error\":\"Internal server error\"}");
    t_http_msg_free(&m);
}

struct responder {
    struct dapi_req *r;
    int delay_ms;
};

static void *respond_later(void *arg)
{
    struct responder *a = arg;
    dapi_clock_sleep_ms(a->delay_ms);
    char *body = strdup("{\"later\":true}");
    dapi_req_respond(a->r, 202, body, body ? strlen(body) : 0, "Retry-After", "3");
    return NULL;
}

/* Sends /defer on a new connection; returns the fd and the deferred request in *r. */
static int send_deferred(struct dapi_req **r)
{
    *r = NULL;
    int fd = t_connect(port);
    T_CHECK(fd >= 0, "connect: %s", strerror(errno));
    if(fd < 0)
        return -1;
    const char *req = "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n";
    T_EQ_INT(t_send(fd, req, strlen(req)), 0);
    *r = take_pending();
    T_CHECK(*r != NULL, "the deferred request reached the handler");
    if(!*r) {
        close(fd);
        return -1;
    }
    return fd;
}

/* dapi_req_add_header: up to DAPI_REQ_ADDED_HEADERS, sent beside the response's own header;
 * more, or longer values, are refused; none leaks into the next request's answer. */
/* dapi_req_respond_kept: the caller's bytes, sent as they are and released once (when the
 * server is done with them); a 304 has no content and no Content-Type. */
static void test_kept_and_304(void)
{
    struct t_http_msg m;
    char v[160];
    atomic_store(&released, 0);
    T_EQ_INT(exchange("GET /kept HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 200);
    T_EQ_STR(m.body, "{\"kept\":true}");
    T_EQ_STR(t_http_header(&m, "Content-Type", v, sizeof v), "application/json");
    t_http_msg_free(&m);
    for(int i = 0; i < 200 && atomic_load(&released) == 0; i++)
        usleep(5000);
    T_EQ_INT(atomic_load(&released), 1);
    T_CHECK(released_arg != NULL, "released with its argument");
    T_EQ_INT(exchange("GET /notmod HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 304);
    T_EQ_STR(t_http_header(&m, "ETag", v, sizeof v), "\"t\"");
    T_CHECK(!t_http_header(&m, "Content-Type", v, sizeof v), "no Content-Type on a 304");
    T_CHECK(!m.body || !*m.body, "no body on a 304");
    t_http_msg_free(&m);
}

static void test_added_headers(void)
{
    struct t_http_msg m;
    char v[160];
    T_EQ_INT(exchange("GET /added HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 429);
    T_EQ_STR(m.body, "ok");
    T_EQ_STR(t_http_header(&m, "RateLimit", v, sizeof v), "limit=3, remaining=2, reset=1");
    T_EQ_STR(t_http_header(&m, "RateLimit-Policy", v, sizeof v), "3;w=1");
    T_EQ_STR(t_http_header(&m, "X-Fourth", v, sizeof v), "4");
    T_EQ_STR(t_http_header(&m, "Retry-After", v, sizeof v), "2");
    T_EQ_STR(t_http_header(&m, "X-Eighth", v, sizeof v), "8");
    T_CHECK(!t_http_header(&m, "X-Ninth", v, sizeof v), "ninth header not sent");
    t_http_msg_free(&m);
    T_EQ_INT(exchange("GET /plain HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 200);
    T_CHECK(!t_http_header(&m, "RateLimit", v, sizeof v), "not on another request");
    t_http_msg_free(&m);
    /* dapi_req_add_static_header: sent as it is, whatever its length, beside copied ones */
    char sv[400], want[300];
    memset(want, 's', sizeof want - 1);
    want[sizeof want - 1] = '\0';
    T_EQ_INT(exchange("GET /static HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 200);
    T_EQ_STR(m.body, "ok");
    T_EQ_STR(t_http_header(&m, "X-Static", sv, sizeof sv), want);
    T_EQ_STR(t_http_header(&m, "X-Copied", v, sizeof v), "c");
    t_http_msg_free(&m);
    /* the copies share DAPI_REQ_HEADER_TEXT bytes: once full, a value is refused (and not
     * sent), a shorter one still fits */
    T_EQ_INT(exchange("GET /full HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 200);
    T_EQ_STR(m.body, "ok");
    int fit = DAPI_REQ_HEADER_TEXT / (DAPI_REQ_HEADER_VALUE_MAX + 1);
    static const char *const full[] = {"X-F1", "X-F2", "X-F3", "X-F4", "X-F5", "X-F6"};
    T_CHECK(fit >= 2 && fit < 6, "the area holds %d full-length values", fit);
    for(int i = 0; i < fit; i++)
        T_CHECK(t_http_header(&m, full[i], sv, sizeof sv) &&
                    strlen(sv) == DAPI_REQ_HEADER_VALUE_MAX,
                "%s: a full-length copy is sent whole", full[i]);
    T_CHECK(!t_http_header(&m, full[fit], sv, sizeof sv), "%s had no room", full[fit]);
    T_EQ_STR(t_http_header(&m, "X-Short", v, sizeof v), "s");
    T_CHECK(t_http_header(&m, "X-Extra", sv, sizeof sv) && strlen(sv) == DAPI_REQ_HEADER_VALUE_MAX,
            "the extra header, whole, after a full area");
    t_http_msg_free(&m);
}

static void test_deferred(void)
{
    struct dapi_req *r;
    struct t_http_msg m;
    char v[64];
    T_EQ_INT(inflight_becomes(0), 0);
    int fd = send_deferred(&r);
    if(fd < 0)
        return;
    /* deferred: no answer yet, and the request counts as in flight, suspended */
    T_CHECK(silent_for(fd, 150), "nothing is sent before the handler answers");
    T_EQ_INT(dapi_http_inflight(srv), 1);
    T_EQ_INT(dapi_http_suspended(srv), 1);
    /* meanwhile the server answers others (the deferred one holds no thread) */
    T_EQ_INT(exchange("GET /other HTTP/1.1\r\nHost: t\r\n\r\n", &m, NULL), 200);
    t_http_msg_free(&m);

    struct responder a = {r, 50};
    pthread_t t;
    T_EQ_INT(pthread_create(&t, NULL, respond_later, &a), 0);
    T_EQ_INT(t_http_read(fd, &m), 0);
    pthread_join(t, NULL);
    T_EQ_INT(t_http_status(&m), 202);
    T_EQ_STR(m.body, "{\"later\":true}");
    T_EQ_STR(t_http_header(&m, "Retry-After", v, sizeof v), "3");
    t_http_msg_free(&m);
    T_EQ_INT(inflight_becomes(0), 0);
    T_EQ_INT(dapi_http_suspended(srv), 0);
    /* the connection is kept alive after a deferred answer */
    const char *again = "GET /after HTTP/1.1\r\nHost: t\r\n\r\n";
    T_EQ_INT(t_send(fd, again, strlen(again)), 0);
    T_EQ_INT(t_http_read(fd, &m), 0);
    T_EQ_STR(m.body, "GET /after x=(null) body=0:");
    t_http_msg_free(&m);
    close(fd);
}

/* libmicrohttpd's own messages go through dapi's log (at debug level), never straight to
 * stderr: one HTTP thread used to print a raw "Warning: ... thread pool size" line there,
 * outside the log's format (and into JSON logs). */
static void test_start_writes_nothing_on_stderr(void)
{
    char dir[128], path[256];
    if(t_tmpdir(dir, sizeof dir, "http"))
        return;
    snprintf(path, sizeof path, "%s/stderr", dir);
    T_EQ_INT(inflight_becomes(0), 0);
    dapi_log_flush(); /* the access lines of the tests before */
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    T_CHECK(saved >= 0 && fd >= 0 && dup2(fd, STDERR_FILENO) >= 0, "stderr redirected");
    struct dapi_http *h = NULL;
    char err[256] = "";
    struct dapi_http_opts o = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 1,
                               .max_body_bytes = MAX_BODY,
                               .max_header_bytes = MAX_HEADER,
                               .max_connections = 8,
                               .max_connections_per_ip = 8,
                               .request_head_timeout_s = 5,
                               .connection_timeout_s = 5,
                               .dispatch = dispatch};
    enum dapi_err e = dapi_http_start(&h, &o, err, sizeof err);
    dapi_http_stop(h);
    dapi_log_flush();
    fflush(stderr);
    if(saved >= 0) {
        dup2(saved, STDERR_FILENO);
        close(saved);
    }
    if(fd >= 0)
        close(fd);
    T_EQ_INT(e, DAPI_OK);
    struct stat st = {0};
    T_CHECK(stat(path, &st) == 0 && st.st_size == 0, "nothing on stderr (%lld bytes)",
            (long long)st.st_size);
    t_rm_rf(dir);
}

/* A second server with one connection per client address: the second is closed at once. */
static void test_per_address_limit(void)
{
    struct dapi_http *h = NULL;
    char err[256] = "";
    struct dapi_http_opts o = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 1,
                               .max_body_bytes = MAX_BODY,
                               .max_header_bytes = MAX_HEADER,
                               .max_connections = 8,
                               .max_connections_per_ip = 1,
                               .request_head_timeout_s = 5,
                               .connection_timeout_s = 5,
                               .dispatch = dispatch};
    T_EQ_INT(dapi_http_start(&h, &o, err, sizeof err), DAPI_OK);
    if(!h)
        return;
    int p = dapi_http_port(h);
    int a = t_connect(p);
    struct t_http_msg m = {.body = NULL};
    const char *req = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
    T_CHECK(a >= 0 && t_send(a, req, strlen(req)) == 0 && t_http_read(a, &m) == 0,
            "the first connection is served");
    t_http_msg_free(&m);
    int b = t_connect(p);
    T_CHECK(b < 0 || closed_within(b, 2000), "the second connection from 127.0.0.1 is closed");
    if(b >= 0)
        close(b);
    if(a >= 0)
        close(a);
    /* once the first is gone, a new one is served again */
    int c = -1;
    int served = 0;
    for(int i = 0; i < 100 && !served; i++) {
        c = t_connect(p);
        m.body = NULL;
        served = c >= 0 && t_send(c, req, strlen(req)) == 0 && t_http_read(c, &m) == 0;
        t_http_msg_free(&m);
        if(c >= 0)
            close(c);
        if(!served)
            dapi_clock_sleep_ms(10);
    }
    T_CHECK(served, "a connection is served after the first closed");
    dapi_http_stop(h);
}

/* Quiescing while the event threads are busy: libmicrohttpd 0.9.75's MHD_quiesce_daemon
 * raced its own workers and aborted the process ("Failed to remove listen FD from epoll
 * set"). Many servers quiesced and stopped under a stream of requests: none may abort, and
 * each stays answerable until it quiesces. */
static atomic_int hammer_port, hammer_stop;

static void *hammer(void *arg)
{
    const char *req = "GET /h HTTP/1.1\r\nHost: t\r\n\r\n";
    while(!atomic_load(&hammer_stop)) {
        int fd = t_connect(atomic_load(&hammer_port));
        if(fd < 0)
            continue;
        struct t_http_msg m;
        if(t_send(fd, req, strlen(req)) == 0 && t_http_read(fd, &m) == 0)
            t_http_msg_free(&m);
        close(fd);
    }
    return NULL;
}

static void test_quiesce_under_load(void)
{
    char err[256] = "";
    struct dapi_http_opts o = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 2,
                               .max_body_bytes = MAX_BODY,
                               .max_header_bytes = MAX_HEADER,
                               .max_connections = 64,
                               .max_connections_per_ip = 64,
                               .request_head_timeout_s = 5,
                               .connection_timeout_s = 10,
                               .dispatch = dispatch};
    pthread_t t[3];
    int served = 0;
    atomic_store(&hammer_stop, 0);
    for(int i = 0; i < 150; i++) {
        struct dapi_http *h = NULL;
        if(dapi_http_start(&h, &o, err, sizeof err)) {
            T_CHECK(0, "server %d starts: %s", i, err);
            break;
        }
        atomic_store(&hammer_port, dapi_http_port(h));
        if(i == 0)
            for(int k = 0; k < 3; k++)
                pthread_create(&t[k], NULL, hammer, NULL);
        struct t_http_msg m;
        int fd = t_connect(dapi_http_port(h));
        const char *req = "GET /q HTTP/1.1\r\nHost: t\r\n\r\n";
        if(fd >= 0 && t_send(fd, req, strlen(req)) == 0 && t_http_read(fd, &m) == 0) {
            served += t_http_status(&m) == 200;
            t_http_msg_free(&m);
        }
        if(fd >= 0)
            close(fd);
        dapi_http_quiesce(h);
        dapi_http_stop(h);
    }
    atomic_store(&hammer_stop, 1);
    for(int k = 0; k < 3; k++)
        pthread_join(t[k], NULL);
    T_EQ_INT(served, 150);
}

/* Last: quiesce is for good. */
static void test_quiesce(void)
{
    struct dapi_req *r;
    struct t_http_msg m;
    T_EQ_INT(inflight_becomes(0), 0);
    int fd = send_deferred(&r);
    if(fd < 0)
        return;
    T_EQ_INT(dapi_http_inflight(srv), 1);
    int before = atomic_load(&dispatched);
    dapi_http_quiesce(srv);
    dapi_http_quiesce(srv); /* twice is harmless */
    /* no new connection is served: it is closed at once, unanswered */
    int late = t_connect(port);
    if(late >= 0) {
        const char *req = "GET /late HTTP/1.1\r\nHost: t\r\n\r\n";
        t_send(late, req, strlen(req));
        T_CHECK(unanswered_for(late, 300), "a connection made after quiesce gets no answer");
        close(late);
    }
    T_EQ_INT(atomic_load(&dispatched), before);
    /* the request in flight is still answered */
    T_EQ_INT(dapi_http_inflight(srv), 1);
    struct responder a = {r, 0};
    respond_later(&a);
    T_EQ_INT(t_http_read(fd, &m), 0);
    T_EQ_INT(t_http_status(&m), 202);
    t_http_msg_free(&m);
    T_EQ_INT(inflight_becomes(0), 0);
    close(fd);
    dapi_http_stop(srv);
    srv = NULL;
    if(late >= 0)
        close(late);
}

/* A stop that cannot wait for a deferred request's handler (dapi serve leaving while a
 * check overruns): dapi_http_abandon answers it itself, straight on its socket, and closes
 * the other connections; the handler's late answer is dropped without touching anything
 * freed (the request stays, suspended); and dapi_http_stop, which libmicrohttpd would abort
 * in with a suspended connection, leaves the server instead. Last: the server is left. */
static void test_abandon(const struct dapi_http_opts *o)
{
    char err[256] = "", v[64];
    struct t_http_msg m;
    T_CHECK(dapi_http_start(&srv, o, err, sizeof err) == DAPI_OK, "server starts: %s", err);
    if(!srv)
        return;
    port = dapi_http_port(srv);
    int idle = t_connect(port); /* a kept-alive connection between requests */
    const char *before = "GET /before HTTP/1.1\r\nHost: t\r\n\r\n";
    T_EQ_INT(t_send(idle, before, strlen(before)), 0);
    T_EQ_INT(t_http_read(idle, &m), 0);
    T_EQ_INT(t_http_status(&m), 200);
    t_http_msg_free(&m);
    int fd = t_connect(port);
    const char *req = "GET /defer HTTP/1.1\r\nHost: t\r\nX-Request-Id: left-1\r\n\r\n";
    T_EQ_INT(t_send(fd, req, strlen(req)), 0);
    struct dapi_req *r = take_pending();
    T_CHECK(r != NULL, "the deferred request reached the handler");
    if(!r)
        return;
    T_EQ_INT(dapi_req_add_header(r, "RateLimit", "limit=3, remaining=2, reset=1"), 0);
    T_EQ_INT(dapi_http_suspended(srv), 1);
    static const char body[] = "{\"details\":\"stopped\",\"error\":\"Server shutting down\"}";
    dapi_http_quiesce(srv);
    T_EQ_INT(dapi_http_abandon(srv, 503, body, sizeof body - 1, "5"), 1);
    T_EQ_INT(t_http_read(fd, &m), 0);
    T_EQ_INT(t_http_status(&m), 503);
    T_EQ_STR(m.body, body);
    T_EQ_STR(t_http_header(&m, "Content-Type", v, sizeof v), "application/json");
    T_EQ_STR(t_http_header(&m, "Retry-After", v, sizeof v), "5");
    T_EQ_STR(t_http_header(&m, "X-Request-Id", v, sizeof v), "left-1");
    T_EQ_STR(t_http_header(&m, "RateLimit", v, sizeof v), "limit=3, remaining=2, reset=1");
    T_EQ_STR(t_http_header(&m, "Connection", v, sizeof v), "close");
    t_http_msg_free(&m);
    T_CHECK(closed_within(fd, 1000), "the answered connection is closed");
    T_CHECK(closed_within(idle, 1000), "the other connections are closed");
    /* the handler answers at last: dropped, its request still there (suspended) */
    struct responder a = {r, 0};
    respond_later(&a);
    T_EQ_INT(dapi_http_suspended(srv), 1);
    T_EQ_INT(dapi_http_inflight(srv), 1);
    /* a stop now would make libmicrohttpd abort the process: the server is left instead (and
     * says so in an error line) */
    dapi_http_stop(srv);
    srv = NULL;
    close(fd);
    close(idle);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    char err[256] = "";
    struct dapi_http_opts o = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 2,
                               .max_body_bytes = MAX_BODY,
                               .max_header_bytes = MAX_HEADER,
                               .max_connections = 64,
                               .max_connections_per_ip = 64,
                               .request_head_timeout_s = 5,
                               .connection_timeout_s = 10,
                               .dispatch = dispatch};
    T_CHECK(dapi_http_start(&srv, &o, err, sizeof err) == DAPI_OK, "server starts: %s", err);
    if(!srv)
        T_DONE();
    port = dapi_http_port(srv);
    T_CHECK(port > 0, "a port was chosen: %d", port);

    test_start_errors();
    test_plain_get();
    test_args();
    test_body();
    test_body_too_large();
    test_head_too_large();
    test_framing();
    test_keep_alive();
    test_no_answer();
    test_deferred();
    test_added_headers();
    test_kept_and_304();
    test_start_writes_nothing_on_stderr();
    test_per_address_limit();
    test_quiesce_under_load();
    test_quiesce();
    test_abandon(&o);

    dapi_http_stop(srv);
    dapi_log_flush();
    T_DONE();
}
