/* The dapi client: calls with one retry policy (upstream/retry.h), error classification, and
 * the sliding-window page fetcher. Pages are parsed by page.c. */
#include "dapi/client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "client/page.h"
#include "upstream/httpc.h"
#include "upstream/retry.h"

#define MAX_URL 2048
#define MAX_KEY 1024

struct dapi_client {
    char url[MAX_URL + 1];         /* base URL without trailing '/' */
    char key_header[MAX_KEY + 16]; /* "x-api-key: KEY", or "" */
    long connect_ms, timeout_ms;
    uint64_t max_body;
    struct dapi_retry_policy policy;
    void (*on_retry)(void *, const char *, int, int64_t, const char *);
    void *on_retry_arg;
    struct dapi_httpc *http; /* the calling thread's connection */
    int no_export;           /* fetch_all pages even when the server has the export */
};

struct call_spec {
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    int idempotent;
    int with_key;
    const char *what;
    int64_t deadline; /* monotonic ms: no attempt lasts past it, no retry starts after it;
                           0 = none (each attempt may take the client's whole timeout) */
    /* a streamed 200 body (httpc's on_data); *delivered non-zero once some of it was
     * handed on: the call is then never retried (the rows would come twice) */
    int (*on_data)(void *arg, const char *p, size_t n);
    void *on_data_arg;
    const int *delivered;
};

/* The marker in the details of the server's 504 whose wait for a running query
 * (--result-wait) expired: the query has not failed, it still runs (docs/api.md). */
#define STILL_RUNNING_MARK "(--result-wait)"

/* Copies text into dst: control characters become spaces (except line breaks when
 * keep_lines: DuckDB's details show the query's line with a caret under the error), and a
 * cut never splits a UTF-8 sequence. */
static void copy_text(char *dst, size_t cap, const char *src, size_t len, int keep_lines)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    if(n < len)
        while(n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    for(size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 && !(keep_lines && c == '\n')) || c == 0x7f ? ' ' : (char)c;
    }
    dst[n] = '\0';
}

static void one_line(char *dst, size_t cap, const char *src, size_t len)
{
    copy_text(dst, cap, src, len, 0);
}

static void set_err(struct dapi_client_err *err, enum dapi_client_kind kind, int status,
                    const char *msg)
{
    memset(err, 0, sizeof *err);
    err->kind = kind;
    err->status = status;
    one_line(err->message, sizeof err->message, msg, strlen(msg));
}

/* Reads the server's {"error","details"} from a non-200 answer into err and classifies it
 * by status and body shape (the execution-failure shape: an "error" and a "query_slug"),
 * never by message text except 404's "Query not found" and the still-running marker. This is
 * the table in docs/cli.md ("Exit codes"), in its order:
 *   401, 403                                          AUTH
 *   504 + execution-failure shape + STILL_RUNNING_MARK NETWORK, still_running (asked again)
 *   502, 503 (any body: the server or its upstream is unavailable)   NETWORK
 *   any other status with the execution-failure shape QUERY (400, 413, 500, 504: it failed)
 *   400, 413, 404 "Query/Layer/Table not found"       QUERY
 *   408, 429, other 5xx                               NETWORK
 *   anything else (3xx, other 4xx)                    PROTOCOL
 * Returns the matching error code. */
static enum dapi_err answer_err(const struct dapi_httpc_resp *resp, struct dapi_client_err *err)
{
    int st = resp->status;
    struct dapi_jv *root = NULL;
    memset(err, 0, sizeof *err);
    err->status = st;
    if(resp->body.data &&
       dapi_jv_parse(resp->body.data, resp->body.len, 16, &root, NULL, 0) == DAPI_OK) {
        size_t n;
        const char *e = dapi_jv_str(dapi_jv_get(root, "error"), &n);
        if(e)
            one_line(err->message, sizeof err->message, e, n);
        const char *d = dapi_jv_str(dapi_jv_get(root, "details"), &n);
        if(d)
            copy_text(err->details, sizeof err->details, d, n, 1);
        err->exec_failure = dapi_jv_get(root, "query_slug") != NULL && e != NULL;
        dapi_jv_free(root);
    }
    if(!err->message[0])
        snprintf(err->message, sizeof err->message,
                 "unexpected answer: HTTP %d without a JSON "
                 "error",
                 st);
    err->still_running = st == 504 && err->exec_failure &&
                         strstr(err->details, STILL_RUNNING_MARK) != NULL;
    enum dapi_err code;
    if(st == 401 || st == 403) {
        err->kind = DAPI_CLIENT_AUTH;
        code = st == 401 ? DAPI_ERR_AUTH : DAPI_ERR_FORBIDDEN;
    } else if(err->still_running) {
        err->kind = DAPI_CLIENT_NETWORK;
        code = DAPI_ERR_TIMEOUT;
    } else if(st == 502 || st == 503) {
        err->kind = DAPI_CLIENT_NETWORK;
        code = st == 503 ? DAPI_ERR_BUSY : DAPI_ERR_UPSTREAM;
    } else if(err->exec_failure) {
        err->kind = DAPI_CLIENT_QUERY;
        code = st == 504 ? DAPI_ERR_TIMEOUT : st == 413 ? DAPI_ERR_TOO_LARGE : DAPI_ERR_SQL;
    } else if(st == 400) {
        err->kind = DAPI_CLIENT_QUERY;
        code = strcmp(err->message, "Invalid SQL query") == 0 ? DAPI_ERR_SQL : DAPI_ERR_INVALID;
    } else if(st == 413) {
        err->kind = DAPI_CLIENT_QUERY;
        code = DAPI_ERR_TOO_LARGE;
    } else if(st == 404 && (strcmp(err->message, "Query not found") == 0 ||
                            strcmp(err->message, "Layer not found") == 0 ||
                            strcmp(err->message, "Table not found") == 0 ||
                            strcmp(err->message, "Endpoint not found") == 0)) {
        err->kind = DAPI_CLIENT_QUERY;
        code = DAPI_ERR_NOT_FOUND;
    } else if(st == 408 || st == 429 || st >= 500) {
        err->kind = DAPI_CLIENT_NETWORK;
        code = st == 429                ? DAPI_ERR_RATE
               : st == 504 || st == 408 ? DAPI_ERR_TIMEOUT
                                        : DAPI_ERR_UPSTREAM;
    } else {
        err->kind = DAPI_CLIENT_PROTOCOL;
        code = DAPI_ERR_UPSTREAM;
    }
    return code;
}

/* Sleeps ms, waking early (returns 1) when *stop becomes nonzero. */
static int nap(int64_t ms, atomic_int *stop)
{
    while(ms > 0) {
        if(stop && atomic_load(stop))
            return 1;
        int64_t slice = ms < 50 ? ms : 50;
        dapi_clock_sleep_ms(slice);
        ms -= slice;
    }
    return stop && atomic_load(stop);
}

/* Performs one logical call with retries. On DAPI_OK *resp holds a 200 answer (the caller
 * frees it with dapi_httpc_resp_free); otherwise err is filled and resp holds nothing. */
static enum dapi_err call(const struct dapi_client *c, struct dapi_httpc *h,
                          const struct call_spec *s, atomic_int *stop,
                          struct dapi_httpc_resp *resp, struct dapi_client_err *out_err)
{
    struct dapi_client_err last, *err = &last; /* *out_err is written only on failure */
    const char *hdrs[3];
    size_t nh = 0;
    if(s->with_key && c->key_header[0])
        hdrs[nh++] = c->key_header;
    if(s->body)
        hdrs[nh++] = "Content-Type: application/json";
    hdrs[nh] = NULL;
    struct dapi_httpc_call hc = {s->method,   s->url,        hdrs,          s->body,
                                 s->body_len, c->connect_ms, c->timeout_ms, c->max_body,
                                 -1,          s->on_data,    s->on_data_arg};
    int64_t t0 = dapi_clock_mono_ms();
    for(int attempt = 1;; attempt++) {
        if(s->deadline) {
            int64_t left = s->deadline - dapi_clock_mono_ms();
            hc.timeout_ms = left < c->timeout_ms ? (long)(left > 1 ? left : 1) : c->timeout_ms;
            if(hc.connect_timeout_ms > hc.timeout_ms)
                hc.connect_timeout_ms = hc.timeout_ms;
        }
        enum dapi_err tr = dapi_httpc_do(h, &hc, resp);
        if(tr == DAPI_OK && resp->status == 200)
            return DAPI_OK;
        enum dapi_err code;
        int transient;
        if(tr == DAPI_OK) {
            int st = resp->status;
            code = answer_err(resp, err);
            /* a query failure (QUERY: the execution-failure shape, even as a 504) is the
             * server's final word; a still-running answer is the caller's to ask again */
            transient = err->kind == DAPI_CLIENT_NETWORK && !err->still_running &&
                        (st == 429 || st == 502 || st == 503 || st == 504);
        } else if(s->delivered && *s->delivered) {
            set_err(err, tr == DAPI_ERR_IO ? DAPI_CLIENT_ABORTED : DAPI_CLIENT_NETWORK, 0,
                    resp->error[0] ? resp->error : dapi_err_message(tr));
            code = tr;
            transient = 0; /* rows were handed on already */
        } else {
            set_err(err,
                    tr == DAPI_ERR_TIMEOUT || tr == DAPI_ERR_UPSTREAM ? DAPI_CLIENT_NETWORK
                    : tr == DAPI_ERR_NOMEM                            ? DAPI_CLIENT_LOCAL
                                                                      : DAPI_CLIENT_PROTOCOL,
                    0, resp->error[0] ? resp->error : dapi_err_message(tr));
            code = tr;
            transient = tr == DAPI_ERR_TIMEOUT || tr == DAPI_ERR_UPSTREAM;
        }
        int64_t delay = -1;
        const char *reason = NULL;
        if(transient && !(stop && atomic_load(stop))) {
            uint64_t rnd = 0; /* retry jitter: need not be secret (no OpenSSL in the library) */
            if(getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
                rnd = (uint64_t)dapi_clock_mono_ms();
            struct dapi_retry_in in = {attempt,
                                       tr,
                                       resp->status,
                                       resp->request_sent,
                                       resp->retry_after_ms,
                                       dapi_clock_mono_ms() - t0,
                                       s->idempotent,
                                       rnd};
            delay = dapi_retry_next(&c->policy, &in, &reason);
            if(delay >= 0 && s->deadline && dapi_clock_mono_ms() + delay >= s->deadline)
                delay = -1;
        }
        dapi_httpc_resp_free(resp);
        if(delay >= 0 && c->on_retry)
            c->on_retry(c->on_retry_arg, s->what, attempt, delay, reason);
        if(delay < 0 || nap(delay, stop)) {
            *out_err = last;
            return code;
        }
    }
}

static int copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if(n >= cap)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

enum dapi_err dapi_client_new(struct dapi_client **out, const struct dapi_client_config *cfg,
                              struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_client *c = calloc(1, sizeof *c);
    *out = NULL;
    if(!c) {
        set_err(err, DAPI_CLIENT_LOCAL, 0, "out of memory");
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    const char *url = cfg->url ? cfg->url : "";
    if((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
       copy_str(c->url, sizeof c->url, url) || strpbrk(url, " \t\r\n")) {
        set_err(err, DAPI_CLIENT_LOCAL, 0,
                "the URL must start with http:// or https:// "
                "(at most 2048 characters, no spaces)");
        result = DAPI_ERR_INVALID;
        goto out;
    }
    size_t n = strlen(c->url);
    while(n > 0 && c->url[n - 1] == '/')
        c->url[--n] = '\0';
    if(cfg->api_key && cfg->api_key[0]) {
        for(const unsigned char *k = (const unsigned char *)cfg->api_key; *k; k++) {
            if(*k < 0x20 || *k == 0x7f) {
                set_err(err, DAPI_CLIENT_LOCAL, 0, "the API key holds a control character");
                result = DAPI_ERR_INVALID;
                goto out;
            }
        }
        if(strlen(cfg->api_key) > MAX_KEY) {
            set_err(err, DAPI_CLIENT_LOCAL, 0, "the API key is too long");
            result = DAPI_ERR_INVALID;
            goto out;
        }
        snprintf(c->key_header, sizeof c->key_header, "x-api-key: %s", cfg->api_key);
    }
    c->connect_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 330000;
    c->max_body = cfg->max_page_bytes ? cfg->max_page_bytes : 64u << 20;
    c->policy.max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 5;
    c->policy.base_ms = 250;
    c->policy.max_ms = 8000;
    c->policy.total_ms = cfg->retry_total_ms > 0 ? cfg->retry_total_ms : 60000;
    c->on_retry = cfg->on_retry;
    c->on_retry_arg = cfg->on_retry_arg;
    if(dapi_httpc_new(&c->http)) {
        set_err(err, DAPI_CLIENT_LOCAL, 0, "out of memory");
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    *out = c;
    c = NULL;
out:
    dapi_client_free(c);
    return result;
}

void dapi_client_free(struct dapi_client *c)
{
    if(!c)
        return;
    dapi_httpc_free(c->http);
    /* the key header held a secret */
    volatile char *k = c->key_header;
    for(size_t i = 0; i < sizeof c->key_header; i++)
        k[i] = 0;
    free(c);
}

static enum dapi_err oom(struct dapi_client_err *err)
{
    set_err(err, DAPI_CLIENT_LOCAL, 0, "out of memory");
    return DAPI_ERR_NOMEM;
}

enum dapi_err dapi_client_create(struct dapi_client *c, const struct dapi_client_query *q,
                                 char **slug, struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_buf body, url;
    struct dapi_httpc_resp resp;
    struct dapi_jv *root = NULL;
    int have_resp = 0;
    dapi_buf_init(&body, 64u << 20);
    dapi_buf_init(&url, MAX_URL + 64);
    *slug = NULL;
    if(q->sql) {
        result = dapi_buf_adds(&body, "{\"sql_query\":");
        if(!result)
            result = dapi_json_str(&body, q->sql, strlen(q->sql));
    } else {
        result = dapi_buf_adds(&body, "{\"layer\":");
        if(!result)
            result = dapi_json_str(&body, q->layer ? q->layer : "",
                                   q->layer ? strlen(q->layer) : 0);
        if(!result)
            result = dapi_buf_adds(&body, ",\"table\":");
        if(!result)
            result = dapi_json_str(&body, q->table ? q->table : "",
                                   q->table ? strlen(q->table) : 0);
        if(!result && q->limit > 0)
            result = dapi_buf_addf(&body, ",\"limit\":%lld", (long long)q->limit);
    }
    if(!result)
        result = dapi_buf_addc(&body, '}');
    if(!result)
        result = dapi_buf_addf(&url, "%s/api/queries", c->url);
    if(result) {
        result = oom(err);
        goto out;
    }
    struct call_spec s = {"POST", url.data, body.data, body.len, 0, 1, "POST /api/queries",
                          0,      NULL,     NULL,      NULL};
    result = call(c, c->http, &s, NULL, &resp, err);
    if(result)
        goto out;
    have_resp = 1;
    size_t n = 0;
    const char *v = NULL;
    if(resp.body.data &&
       dapi_jv_parse(resp.body.data, resp.body.len, 16, &root, NULL, 0) == DAPI_OK)
        v = dapi_jv_str(dapi_jv_get(root, "query_slug"), &n);
    if(!v || n == 0 || n > 256 || memchr(v, '\0', n)) {
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, "the server's answer has no query_slug");
        result = DAPI_ERR_UPSTREAM;
        goto out;
    }
    if(!(*slug = strndup(v, n)))
        result = oom(err);
out:
    if(have_resp)
        dapi_httpc_resp_free(&resp);
    dapi_jv_free(root);
    dapi_buf_free(&body);
    dapi_buf_free(&url);
    return result;
}

enum dapi_err dapi_client_health(struct dapi_client *c, char **status, struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_buf url;
    struct dapi_httpc_resp resp;
    struct dapi_jv *root = NULL;
    int have_resp = 0;
    *status = NULL;
    dapi_buf_init(&url, MAX_URL + 64);
    if(dapi_buf_addf(&url, "%s/api/health", c->url)) {
        result = oom(err);
        goto out;
    }
    struct call_spec s = {"GET", url.data, NULL, 0, 1, 0, "GET /api/health", 0, NULL, NULL, NULL};
    result = call(c, c->http, &s, NULL, &resp, err);
    if(result)
        goto out;
    have_resp = 1;
    size_t n = 0;
    const char *v = NULL;
    if(resp.body.data &&
       dapi_jv_parse(resp.body.data, resp.body.len, 16, &root, NULL, 0) == DAPI_OK)
        v = dapi_jv_str(dapi_jv_get(root, "status"), &n);
    if(!v) {
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, "the answer has no \"status\" string");
        result = DAPI_ERR_UPSTREAM;
        goto out;
    }
    char line[256];
    one_line(line, sizeof line, v, n);
    if(!(*status = strdup(line)))
        result = oom(err);
out:
    if(have_resp)
        dapi_httpc_resp_free(&resp);
    dapi_jv_free(root);
    dapi_buf_free(&url);
    return result;
}

/* ---- schema discovery -------------------------------------------------------------- */

/* Appends s percent-encoded as one path segment (all but RFC 3986's unreserved bytes). */
static enum dapi_err add_segment(struct dapi_buf *b, const char *s)
{
    enum dapi_err result = DAPI_OK;
    for(const unsigned char *p = (const unsigned char *)s; !result && *p; p++) {
        if((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '-' || *p == '.' || *p == '_' || *p == '~')
            result = dapi_buf_addc(b, (char)*p);
        else
            result = dapi_buf_addf(b, "%%%02X", *p);
    }
    return result;
}

/* A GET whose 200 answer is a JSON document, returned as text (owned) once it parses. */
static enum dapi_err get_json(struct dapi_client *c, struct dapi_buf *url, const char *what,
                              char **json, size_t *len, struct dapi_client_err *err)
{
    struct dapi_httpc_resp resp;
    struct dapi_jv *root = NULL;
    *json = NULL;
    *len = 0;
    if(!url->data)
        return oom(err);
    struct call_spec s = {"GET", url->data, NULL, 0, 1, 1, what, 0, NULL, NULL, NULL};
    enum dapi_err result = call(c, c->http, &s, NULL, &resp, err);
    if(result)
        return result;
    if(!resp.body.data ||
       dapi_jv_parse(resp.body.data, resp.body.len, 64, &root, NULL, 0) != DAPI_OK ||
       dapi_jv_type(root) != DAPI_J_OBJECT) {
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, "the server's answer is not a JSON object");
        result = DAPI_ERR_UPSTREAM;
    } else if(!(*json = malloc(resp.body.len + 1))) {
        result = oom(err);
    } else {
        memcpy(*json, resp.body.data, resp.body.len);
        (*json)[resp.body.len] = '\0';
        *len = resp.body.len;
    }
    dapi_jv_free(root);
    dapi_httpc_resp_free(&resp);
    return result;
}

enum dapi_err dapi_client_layers(struct dapi_client *c, char **json, size_t *len,
                                 struct dapi_client_err *err)
{
    struct dapi_buf url;
    dapi_buf_init(&url, MAX_URL + 64);
    dapi_buf_addf(&url, "%s/api/layers", c->url);
    enum dapi_err result = get_json(c, &url, "GET /api/layers", json, len, err);
    dapi_buf_free(&url);
    return result;
}

enum dapi_err dapi_client_describe(struct dapi_client *c, const char *layer, const char *table,
                                   char **json, size_t *len, struct dapi_client_err *err)
{
    struct dapi_buf url;
    dapi_buf_init(&url, MAX_URL + 64 + 6 * 1024);
    dapi_buf_addf(&url, "%s/api/layers/", c->url);
    add_segment(&url, layer);
    dapi_buf_adds(&url, "/tables/");
    add_segment(&url, table);
    enum dapi_err result = get_json(c, &url, "GET /api/layers/…/tables/…", json, len, err);
    dapi_buf_free(&url);
    return result;
}

enum dapi_err dapi_client_call_endpoint(struct dapi_client *c, const char *name,
                                        const char *const *names, const char *const *values,
                                        size_t n, char **slug, struct dapi_client_err *err)
{
    struct dapi_buf url;
    char *json = NULL;
    size_t len = 0;
    struct dapi_jv *root = NULL;
    *slug = NULL;
    dapi_buf_init(&url, MAX_URL + 64 + 64 * 1024);
    dapi_buf_addf(&url, "%s/api/endpoints/", c->url);
    add_segment(&url, name);
    for(size_t i = 0; i < n; i++) {
        dapi_buf_addc(&url, i ? '&' : '?');
        add_segment(&url, names[i]);
        dapi_buf_addc(&url, '=');
        add_segment(&url, values[i]);
    }
    /* (a repeat of the call after a lost answer creates the query again: an identical one,
     * which the server's result reuse shares) */
    enum dapi_err result = get_json(c, &url, "GET /api/endpoints/…", &json, &len, err);
    dapi_buf_free(&url);
    if(result)
        return result;
    size_t sn = 0;
    const char *v = NULL;
    if(dapi_jv_parse(json, len, 64, &root, NULL, 0) == DAPI_OK)
        v = dapi_jv_str(dapi_jv_get(root, "query_slug"), &sn);
    if(!v || sn == 0 || sn > 256 || memchr(v, '\0', sn)) {
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, "the server's answer has no query_slug");
        result = DAPI_ERR_UPSTREAM;
    } else if(!(*slug = strndup(v, sn))) {
        result = oom(err);
    }
    dapi_jv_free(root);
    free(json);
    return result;
}

/* Fills err for a page whose query still ran when the client's time ran out (the last
 * answer, a still-running 504, or a re-request cut short by the deadline). */
static void gave_up(const struct dapi_client *c, struct dapi_client_err *err,
                    const char *server_details)
{
    char details[sizeof err->details];
    snprintf(details, sizeof details, "%s", server_details);
    memset(err, 0, sizeof *err);
    err->kind = DAPI_CLIENT_NETWORK;
    err->status = 504;
    err->exec_failure = 1;
    err->still_running = 1;
    snprintf(err->message, sizeof err->message,
             "the query is still running after %ld s; "
             "gave up waiting",
             c->timeout_ms / 1000);
    memcpy(err->details, details, sizeof details);
}

/* GET of a results page. When the server answers that the query is still running (its
 * --result-wait expired), asks again, at most once a second, until the client's timeout
 * after the first request (each re-request is cut to the time left), then gives up; a notice
 * goes to on_retry before each new request. */
static enum dapi_err ask_page(const struct dapi_client *c, struct dapi_httpc *h,
                              struct call_spec *s, atomic_int *stop, struct dapi_httpc_resp *resp,
                              struct dapi_client_err *err)
{
    int64_t t0 = dapi_clock_mono_ms();
    char running[sizeof err->details] = "";
    for(int asked = 1;; asked++) {
        int64_t t_ask = dapi_clock_mono_ms();
        enum dapi_err result = call(c, h, s, stop, resp, err);
        if(result && !err->still_running && running[0] && result == DAPI_ERR_TIMEOUT &&
           !err->status) {
            gave_up(c, err, running); /* the re-request ran into the deadline */
            return result;
        }
        if(!result || !err->still_running)
            return result;
        snprintf(running, sizeof running, "%s", err->details);
        int64_t now = dapi_clock_mono_ms();
        int64_t next = t_ask + 1000 > now ? t_ask + 1000 : now;
        s->deadline = t0 + c->timeout_ms;
        if(next >= s->deadline) { /* no time for another request: wait out the rest */
            if(!nap(s->deadline - now, stop))
                gave_up(c, err, running);
            return result;
        }
        if(c->on_retry)
            c->on_retry(c->on_retry_arg, s->what, asked, next - now, err->details);
        if(nap(next - now, stop))
            return result;
    }
}

/* Fetches and checks page n on connection h. slug_esc is the percent-encoded slug. */
static enum dapi_err get_page(const struct dapi_client *c, struct dapi_httpc *h, const char *slug,
                              const char *slug_esc, uint64_t n, atomic_int *stop,
                              struct dapi_page **out, struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_buf url, want;
    struct dapi_httpc_resp resp;
    struct dapi_page *pg = NULL;
    int have_resp = 0;
    char what[64], perr[256];
    *out = NULL;
    dapi_buf_init(&url, MAX_URL + 1024);
    dapi_buf_init(&want, 1024);
    if(dapi_buf_addf(&url, "%s/api/queries/%s/results?page_number=%llu", c->url, slug_esc,
                     (unsigned long long)n) ||
       dapi_json_str(&want, slug, strlen(slug))) {
        result = oom(err);
        goto out;
    }
    snprintf(what, sizeof what, "page %llu", (unsigned long long)n);
    struct call_spec s = {"GET", url.data, NULL, 0, 1, 1, what, 0, NULL, NULL, NULL};
    result = ask_page(c, h, &s, stop, &resp, err);
    if(result)
        goto out;
    have_resp = 1;
    size_t blen = 0;
    char *body = dapi_buf_take(&resp.body, &blen); /* the page adopts the body: no copy */
    if(!body) {
        result = oom(err);
        goto out;
    }
    result = dapi_page_parse_owned(body, blen, &pg, perr, sizeof perr);
    if(result) {
        set_err(err, result == DAPI_ERR_NOMEM ? DAPI_CLIENT_LOCAL : DAPI_CLIENT_PROTOCOL, 200,
                perr);
        goto out;
    }
    size_t sl = 0;
    const char *got = dapi_page_slug(pg, &sl);
    const char *bad = NULL;
    if(dapi_page_rows(pg) > DAPI_CLIENT_PAGE_ROWS)
        bad = "more than 100 rows";
    else if(!dapi_page_has_number(pg) || dapi_page_number(pg) != n)
        bad = "another page number than the one asked for";
    else if(!got || sl != want.len || memcmp(got, want.data, sl) != 0)
        bad = "another query_slug than the one asked for";
    if(bad) {
        char m[160];
        snprintf(m, sizeof m, "malformed results page %llu: %s", (unsigned long long)n, bad);
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, m);
        result = DAPI_ERR_UPSTREAM;
        goto out;
    }
    *out = pg;
    pg = NULL;
out:
    if(have_resp)
        dapi_httpc_resp_free(&resp);
    dapi_page_free(pg);
    dapi_buf_free(&url);
    dapi_buf_free(&want);
    return result;
}

enum dapi_err dapi_client_page(struct dapi_client *c, const char *slug, uint64_t n,
                               struct dapi_page **page, struct dapi_client_err *err)
{
    char *esc = dapi_httpc_escape(slug);
    if(!esc)
        return oom(err);
    enum dapi_err result = get_page(c, c->http, slug, esc, n, NULL, page, err);
    free(esc);
    return result;
}

/* ---- the sliding window -------------------------------------------------------------- */

struct slot {
    int done;
    enum dapi_err result;
    struct dapi_page *page;
    struct dapi_client_err err;
};

struct window {
    const struct dapi_client *c;
    const char *slug, *slug_esc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t next_fetch; /* next page to hand to a worker */
    uint64_t next_emit;  /* next page the consumer needs */
    size_t n;            /* window size: pages in [next_emit, next_emit + n) may exist */
    int stop;
    atomic_int stop_flag; /* the same, readable without the lock (retry sleeps) */
    struct slot *slots;
    struct dapi_httpc **http;
};

struct worker {
    struct window *w;
    struct dapi_httpc *h;
};

static void *work(void *arg)
{
    struct worker *wk = arg;
    struct window *w = wk->w;
    pthread_mutex_lock(&w->mu);
    for(;;) {
        while(!w->stop && w->next_fetch >= w->next_emit + w->n)
            pthread_cond_wait(&w->cv, &w->mu);
        if(w->stop)
            break;
        uint64_t p = w->next_fetch++;
        pthread_mutex_unlock(&w->mu);
        struct slot s = {1, DAPI_OK, NULL, {0}};
        s.result = get_page(w->c, wk->h, w->slug, w->slug_esc, p, &w->stop_flag, &s.page, &s.err);
        pthread_mutex_lock(&w->mu);
        w->slots[p % w->n] = s;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Consumes pages from `first` on through the window; returns like dapi_client_fetch_all. */
static enum dapi_err run_window(struct window *w, struct worker *wk, pthread_t *tids,
                                size_t nthreads, uint64_t first, dapi_client_page_fn fn, void *arg,
                                struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    size_t started = 0;
    w->next_fetch = w->next_emit = first;
    for(; started < nthreads; started++) {
        wk[started] = (struct worker){w, w->http[started]};
        if(pthread_create(&tids[started], NULL, work, &wk[started]))
            break;
    }
    if(!started) {
        set_err(err, DAPI_CLIENT_LOCAL, 0, "cannot start a worker thread");
        return DAPI_ERR_NOMEM;
    }
    for(uint64_t p = first;; p++) {
        pthread_mutex_lock(&w->mu);
        struct slot *sl = &w->slots[p % w->n];
        while(!sl->done)
            pthread_cond_wait(&w->cv, &w->mu);
        struct slot s = *sl;
        memset(sl, 0, sizeof *sl);
        pthread_mutex_unlock(&w->mu);
        if(s.result) {
            *err = s.err;
            result = s.result;
            break;
        }
        size_t rows = dapi_page_rows(s.page);
        int stop = fn(arg, s.page);
        dapi_page_free(s.page);
        if(stop) {
            set_err(err, DAPI_CLIENT_ABORTED, 0, "stopped by the caller");
            result = DAPI_ERR_IO;
            break;
        }
        if(rows < DAPI_CLIENT_PAGE_ROWS)
            break;
        pthread_mutex_lock(&w->mu);
        w->next_emit = p + 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    atomic_store(&w->stop_flag, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for(size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    for(size_t i = 0; i < w->n; i++) /* speculative pages past the end */
        dapi_page_free(w->slots[i].page);
    return result;
}

/* An export cut after rows were handed on (the server ends the body without its last chunk
 * when the query fails, is cancelled or the server stops: docs/api.md "Export"): the
 * query's status says why, when it is a failure or a cancellation — then err becomes that
 * (kind QUERY), the rows received named. Otherwise err stays the transfer's error. */
static void explain_cut(struct dapi_client *c, const char *slug_esc, uint64_t rows,
                        struct dapi_client_err *err)
{
    struct dapi_buf url;
    struct dapi_httpc_resp resp;
    struct dapi_client_err mine;
    struct dapi_jv *root = NULL;
    dapi_buf_init(&url, MAX_URL + 1024);
    if(dapi_buf_addf(&url, "%s/api/queries/%s", c->url, slug_esc)) {
        dapi_buf_free(&url);
        return;
    }
    struct call_spec s = {
        "GET", url.data, NULL, 0, 1, 1, "the query's status", dapi_clock_mono_ms() + 10000,
        NULL,  NULL,     NULL};
    if(call(c, c->http, &s, NULL, &resp, &mine) == DAPI_OK) {
        if(dapi_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, 16, &root, NULL,
                         0) == DAPI_OK) {
            size_t n = 0, dn = 0;
            const char *state = dapi_jv_str(dapi_jv_get(root, "state"), &n);
            const struct dapi_jv *e = dapi_jv_get(root, "error");
            const char *msg = dapi_jv_str(dapi_jv_get(e, "message"), &n);
            const char *det = dapi_jv_str(dapi_jv_get(e, "details"), &dn);
            if(state && msg && (strcmp(state, "failed") == 0 || strcmp(state, "cancelled") == 0)) {
                char d[sizeof err->details];
                snprintf(d, sizeof d, "the export stopped after %llu rows: %.*s",
                         (unsigned long long)rows, (int)(det ? dn : 0), det ? det : "");
                set_err(err, DAPI_CLIENT_QUERY, 0, "");
                one_line(err->message, sizeof err->message, msg, n);
                copy_text(err->details, sizeof err->details, d, strlen(d), 1);
            }
            dapi_jv_free(root);
        }
        dapi_httpc_resp_free(&resp);
    }
    dapi_buf_free(&url);
}

/* ---- the export: every row in one request ------------------------------------------- */

/* The NDJSON export (GET …/export?format=ndjson) cut back into the pages paging would have
 * given — 100 rows each, then a last one of fewer (possibly none) — so callers see the same
 * pages either way. */
struct export_pages {
    dapi_client_page_fn fn;
    void *arg;
    struct dapi_buf line; /* the start of a row whose end has not arrived */
    struct dapi_buf body; /* the page being built: {"page":N,"data":[rows */
    size_t rows;
    uint64_t page_no;
    int delivered; /* a page went to fn: the request cannot be made again */
    int stopped;   /* fn asked to stop */
    enum dapi_err failed;
    char why[256];
};

static enum dapi_err export_emit(struct export_pages *e)
{
    if(!e->body.len &&
       dapi_buf_addf(&e->body, "{\"page\":%llu,\"data\":[", (unsigned long long)e->page_no))
        return DAPI_ERR_NOMEM;
    if(dapi_buf_adds(&e->body, "]}"))
        return DAPI_ERR_NOMEM;
    size_t len = 0;
    char *text = dapi_buf_take(&e->body, &len);
    struct dapi_page *pg = NULL;
    if(!text)
        return DAPI_ERR_NOMEM;
    enum dapi_err result = dapi_page_parse_owned(text, len, &pg, e->why, sizeof e->why);
    if(result)
        return result;
    e->delivered = 1;
    e->stopped = e->fn(e->arg, pg) != 0;
    dapi_page_free(pg);
    e->rows = 0;
    e->page_no++;
    return DAPI_OK;
}

static enum dapi_err export_row(struct export_pages *e, const char *p, size_t n)
{
    if(!e->body.len &&
       dapi_buf_addf(&e->body, "{\"page\":%llu,\"data\":[", (unsigned long long)e->page_no))
        return DAPI_ERR_NOMEM;
    if((e->rows && dapi_buf_addc(&e->body, ',')) || dapi_buf_add(&e->body, p, n))
        return DAPI_ERR_NOMEM;
    return ++e->rows == DAPI_CLIENT_PAGE_ROWS ? export_emit(e) : DAPI_OK;
}

/* httpc's on_data: splits the body into rows (a row never holds a raw LF: JSON escapes it). */
static int export_data(void *arg, const char *p, size_t n)
{
    struct export_pages *e = arg;
    while(n && !e->failed && !e->stopped) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if(!nl) {
            if(dapi_buf_add(&e->line, p, k))
                e->failed = DAPI_ERR_NOMEM;
        } else if(e->line.len) {
            if(dapi_buf_add(&e->line, p, k))
                e->failed = DAPI_ERR_NOMEM;
            else
                e->failed = export_row(e, e->line.data, e->line.len);
            dapi_buf_reset(&e->line);
        } else {
            e->failed = export_row(e, p, k);
        }
        p += nl ? k + 1 : k;
        n -= nl ? k + 1 : k;
    }
    return e->failed || e->stopped;
}

/* Every row through the export: DAPI_OK; DAPI_ERR_NOT_FOUND (err untouched) when the server
 * has no export (404 or 501: an older server, or a backend without stored results), then the
 * caller pages; else the failure. */
static enum dapi_err fetch_export(struct dapi_client *c, const char *slug_esc,
                                  dapi_client_page_fn fn, void *arg, struct dapi_client_err *err)
{
    struct export_pages e = {.fn = fn, .arg = arg, .page_no = 1};
    struct dapi_buf url;
    struct dapi_httpc_resp resp;
    struct dapi_client_err mine;
    dapi_buf_init(&url, MAX_URL + 1024);
    dapi_buf_init(&e.line, (size_t)-1 / 2);
    dapi_buf_init(&e.body, (size_t)-1 / 2);
    enum dapi_err result = DAPI_OK;
    if(dapi_buf_addf(&url, "%s/api/queries/%s/export?format=ndjson", c->url, slug_esc)) {
        result = oom(err);
        goto out;
    }
    struct call_spec s = {"GET",        url.data, NULL,        0,  1,           1,
                          "the export", 0,        export_data, &e, &e.delivered};
    result = ask_page(c, c->http, &s, NULL, &resp, &mine);
    if(result == DAPI_OK)
        dapi_httpc_resp_free(&resp);
    if(result && !e.delivered && (mine.status == 404 || mine.status == 501)) {
        result = DAPI_ERR_NOT_FOUND; /* no export here: page */
        goto out;
    }
    if(!result && !e.failed && !e.stopped && e.line.len) {
        e.failed = DAPI_ERR_UPSTREAM;
        snprintf(e.why, sizeof e.why, "it ended inside a row");
    }
    if(!result && !e.failed && !e.stopped)
        e.failed = export_emit(&e); /* the last page: fewer than 100 rows, maybe none */
    if(e.stopped) {
        set_err(err, DAPI_CLIENT_ABORTED, 0, "stopped by the caller");
        result = DAPI_ERR_IO;
    } else if(e.failed) {
        if(e.failed == DAPI_ERR_NOMEM)
            result = oom(err);
        else {
            char m[320];
            snprintf(m, sizeof m, "malformed export: %s", e.why[0] ? e.why : "not NDJSON rows");
            set_err(err, DAPI_CLIENT_PROTOCOL, 200, m);
            result = DAPI_ERR_UPSTREAM;
        }
    } else if(result) {
        *err = mine;
        if(e.delivered && err->kind == DAPI_CLIENT_NETWORK)
            explain_cut(c, slug_esc, (e.page_no - 1) * DAPI_CLIENT_PAGE_ROWS + e.rows, err);
    }
out:
    dapi_buf_free(&url);
    dapi_buf_free(&e.line);
    dapi_buf_free(&e.body);
    return result;
}

/* ---- the export as the server writes it ------------------------------------------- */

struct export_raw {
    dapi_client_bytes_fn fn;
    void *arg;
    int delivered; /* bytes went to fn: the request cannot be made again */
    int stopped;
    char last;     /* the last byte received */
    uint64_t rows; /* lines (rows) received */
};

/* httpc's on_data: the bytes go on as they are; only the lines are counted. */
static int export_raw_data(void *arg, const char *p, size_t n)
{
    struct export_raw *e = arg;
    uint64_t lines = 0;
    for(const char *q = p, *end = p + n; (q = memchr(q, '\n', (size_t)(end - q))); q++)
        lines++;
    if(!n)
        return 0;
    e->rows += lines;
    e->last = p[n - 1];
    e->delivered = 1;
    e->stopped = e->fn(e->arg, p, n, lines) != 0;
    return e->stopped;
}

enum dapi_err dapi_client_export_ndjson(struct dapi_client *c, const char *slug,
                                        dapi_client_bytes_fn fn, void *arg, uint64_t *rows,
                                        struct dapi_client_err *err)
{
    struct export_raw e = {.fn = fn, .arg = arg};
    struct dapi_buf url;
    struct dapi_httpc_resp resp;
    struct dapi_client_err mine;
    char *esc = dapi_httpc_escape(slug);
    dapi_buf_init(&url, MAX_URL + 1024);
    enum dapi_err result = DAPI_OK;
    if(!esc || dapi_buf_addf(&url, "%s/api/queries/%s/export?format=ndjson", c->url, esc)) {
        result = oom(err);
        goto out;
    }
    struct call_spec s = {"GET", url.data,        NULL, 0,           1, 1, "the export",
                          0,     export_raw_data, &e,   &e.delivered};
    result = ask_page(c, c->http, &s, NULL, &resp, &mine);
    if(result == DAPI_OK)
        dapi_httpc_resp_free(&resp);
    if(result && !e.delivered && (mine.status == 404 || mine.status == 501)) {
        result = DAPI_ERR_NOT_FOUND; /* no export here: the caller pages */
        goto out;
    }
    if(e.stopped) {
        set_err(err, DAPI_CLIENT_ABORTED, 0, "stopped by the caller");
        result = DAPI_ERR_IO;
    } else if(!result && e.delivered && e.last != '\n') {
        set_err(err, DAPI_CLIENT_PROTOCOL, 200, "malformed export: it ended inside a row");
        result = DAPI_ERR_UPSTREAM;
    } else if(result) {
        *err = mine;
        if(e.delivered && err->kind == DAPI_CLIENT_NETWORK)
            explain_cut(c, esc, e.rows, err);
    }
out:
    if(rows)
        *rows = e.rows;
    dapi_buf_free(&url);
    free(esc);
    return result;
}

void dapi_client_set_paging(struct dapi_client *c, int on)
{
    c->no_export = on != 0;
}

enum dapi_err dapi_client_fetch_all(struct dapi_client *c, const char *slug, int parallel,
                                    dapi_client_page_fn fn, void *arg, struct dapi_client_err *err)
{
    enum dapi_err result = DAPI_OK;
    char *esc = dapi_httpc_escape(slug);
    struct dapi_page *pg = NULL;
    struct window w;
    struct worker *wk = NULL;
    pthread_t *tids = NULL;
    int sync_made = 0;
    size_t n = parallel > 1 ? (size_t)parallel : 1;
    memset(&w, 0, sizeof w);
    if(!esc) {
        result = oom(err);
        goto out;
    }
    /* One streamed request for every row when the server has the export (one per page
     * otherwise: the fallback for older servers). */
    if(!c->no_export) {
        result = fetch_export(c, esc, fn, arg, err);
        if(result != DAPI_ERR_NOT_FOUND)
            goto out;
        result = DAPI_OK;
    }
    /* Page 1 alone first: most results fit in it, and then no page is fetched in vain. */
    uint64_t p = 1;
    for(; n == 1 || p == 1; p++) {
        result = get_page(c, c->http, slug, esc, p, NULL, &pg, err);
        if(result)
            goto out;
        size_t rows = dapi_page_rows(pg);
        int stop = fn(arg, pg);
        dapi_page_free(pg);
        pg = NULL;
        if(stop) {
            set_err(err, DAPI_CLIENT_ABORTED, 0, "stopped by the caller");
            result = DAPI_ERR_IO;
            goto out;
        }
        if(rows < DAPI_CLIENT_PAGE_ROWS)
            goto out;
    }
    w.c = c;
    w.slug = slug;
    w.slug_esc = esc;
    w.n = n;
    w.slots = calloc(n, sizeof *w.slots);
    w.http = calloc(n, sizeof *w.http);
    wk = calloc(n, sizeof *wk);
    tids = calloc(n, sizeof *tids);
    if(!w.slots || !w.http || !wk || !tids || pthread_mutex_init(&w.mu, NULL)) {
        result = oom(err);
        goto out;
    }
    if(pthread_cond_init(&w.cv, NULL)) {
        pthread_mutex_destroy(&w.mu);
        result = oom(err);
        goto out;
    }
    sync_made = 1;
    for(size_t i = 0; i < n; i++) {
        if(dapi_httpc_new(&w.http[i])) {
            result = oom(err);
            goto out;
        }
    }
    result = run_window(&w, wk, tids, n, p, fn, arg, err);
out:
    if(sync_made) {
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
    }
    for(size_t i = 0; w.http && i < n; i++)
        dapi_httpc_free(w.http[i]);
    free(w.http);
    free(w.slots);
    free(wk);
    free(tids);
    dapi_page_free(pg);
    free(esc);
    return result;
}
