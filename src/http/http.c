#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "auth/keys.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "http/conns.h"
#include "http/head.h"
#include "http/http_int.h"

/* A connection's requests share one allocation (dapi_conn.spare): a calloc per request of this
 * size took about 3% of a page request's CPU, as glibc's calloc skips the per-thread cache and
 * a chunk over 1008 bytes first consolidates malloc's free lists. */
_Static_assert(sizeof(struct dapi_req) <= 1024, "a request is cleared for every request");

void dapi_req_set_route(struct dapi_req *r, const char *name)
{
    r->route = name;
}

void dapi_req_set_content_type(struct dapi_req *r, const char *content_type)
{
    pthread_mutex_lock(&r->mu);
    r->ctype = content_type;
    pthread_mutex_unlock(&r->mu);
}

const char *dapi_req_method(const struct dapi_req *r)
{
    return r->method;
}

const char *dapi_req_path(const struct dapi_req *r)
{
    return r->path;
}

const char *dapi_req_id(const struct dapi_req *r)
{
    return r->rid;
}

const char *dapi_req_header(const struct dapi_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *dapi_req_arg(const struct dapi_req *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if(!v) {
        /* "?a" (no '=') is reported as present with a NULL value */
        if(MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), NULL,
                                         NULL) == MHD_YES)
            return "";
    }
    return v;
}

struct args_walk {
    int (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
    size_t n;
    int stopped;
};

static enum MHD_Result arg_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    struct args_walk *w = cls;
    w->n++;
    if(!w->stopped && w->fn(w->ctx, key, value ? value : ""))
        w->stopped = 1;
    return w->stopped ? MHD_NO : MHD_YES;
}

size_t dapi_req_args(const struct dapi_req *r,
                     int (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct args_walk w = {fn, ctx, 0, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, arg_cb, &w);
    return w.n;
}

const char *dapi_req_body(const struct dapi_req *r, size_t *len)
{
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

void dapi_req_defer(struct dapi_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->deferred = 1;
    pthread_mutex_unlock(&r->mu);
}

/* A copy of value's len bytes in r->text (under r->mu) if they fit in its first limit bytes
 * with their NUL, else NULL. */
static const char *keep_text(struct dapi_req *r, const char *value, size_t len, size_t limit)
{
    if(len >= limit - r->text_len)
        return NULL;
    char *p = r->text + r->text_len;
    memcpy(p, value, len);
    p[len] = '\0';
    r->text_len += (unsigned)len + 1;
    return p;
}

int dapi_req_add_header(struct dapi_req *r, const char *name, const char *value)
{
    size_t len = strlen(value);
    int ok = -1;
    pthread_mutex_lock(&r->mu);
    if(!r->answered && r->n_added < DAPI_REQ_ADDED_HEADERS && len <= DAPI_REQ_HEADER_VALUE_MAX) {
        const char *copy = keep_text(r, value, len, DAPI_REQ_HEADER_TEXT);
        if(copy) {
            r->added[r->n_added].name = name;
            r->added[r->n_added].value = copy;
            r->n_added++;
            ok = 0;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

int dapi_req_add_static_header(struct dapi_req *r, const char *name, const char *value)
{
    int ok = -1;
    pthread_mutex_lock(&r->mu);
    if(!r->answered && r->n_added < DAPI_REQ_ADDED_HEADERS) {
        r->added[r->n_added].name = name;
        r->added[r->n_added].value = value;
        r->n_added++;
        ok = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* An answer to a request answered already (under r->mu, which it unlocks): a bug elsewhere,
 * or the handler's late answer to a request the stop answered for it (dapi_http_abandon). */
static void second_answer(struct dapi_req *r)
{
    int left = r->left;
    pthread_mutex_unlock(&r->mu);
    if(!left)
        dapi_error("http: second response for one request dropped");
}

static void answer_locked(struct dapi_req *r)
{
    r->answered = 1;
    if(r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

void dapi_req_respond_file(struct dapi_req *r, int status, int fd, uint64_t size,
                           const char *content_type)
{
    pthread_mutex_lock(&r->mu);
    if(r->answered) {
        second_answer(r);
        close(fd);
        return;
    }
    r->status = status;
    r->fd = fd;
    r->fd_size = size;
    r->ctype = content_type;
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* A body read as it is sent (dapi_req_respond_reader). */
struct http_reader {
    long (*read)(void *arg, char *out, size_t max);
    void (*done)(void *arg);
    void *arg;
    uint64_t size;
};

static void reader_free(void *cls)
{
    struct http_reader *rd = cls;
    rd->done(rd->arg);
    free(rd);
}

/* MHD_ContentReaderCallback: libmicrohttpd asks no further than size. */
static ssize_t reader_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct http_reader *rd = cls;
    long n = rd->read(rd->arg, out, max);
    return n > 0 ? (ssize_t)n : MHD_CONTENT_READER_END_WITH_ERROR;
}

void dapi_req_respond_reader(struct dapi_req *r, int status, uint64_t size,
                             const char *content_type,
                             long (*read)(void *arg, char *out, size_t max),
                             void (*done)(void *arg), void *arg)
{
    struct http_reader *rd = calloc(1, sizeof *rd);
    if(!rd) {
        done(arg);
        dapi_req_respond(r, 500, NULL, 0, NULL, NULL);
        return;
    }
    *rd = (struct http_reader){read, done, arg, size};
    pthread_mutex_lock(&r->mu);
    if(r->answered) {
        second_answer(r);
        reader_free(rd);
        return;
    }
    r->status = status;
    r->reader = rd;
    r->ctype = content_type;
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void dapi_req_respond(struct dapi_req *r, int status, char *body, size_t len,
                      const char *extra_header, const char *extra_value)
{
    pthread_mutex_lock(&r->mu);
    if(r->answered) { /* a bug elsewhere (or the stop answered it); never answer twice */
        second_answer(r);
        free(body);
        return;
    }
    r->status = status;
    r->resp = body;
    r->resp_len = len;
    r->xh = extra_header;
    if(extra_value) /* (cut to DAPI_REQ_HEADER_VALUE_MAX bytes) */
        r->xv = keep_text(r, extra_value, strnlen(extra_value, DAPI_REQ_HEADER_VALUE_MAX),
                          sizeof r->text);
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void dapi_req_respond_kept(struct dapi_req *r, int status, const void *body, size_t len,
                           void (*release)(void *arg), void *arg)
{
    pthread_mutex_lock(&r->mu);
    if(r->answered) {
        second_answer(r);
        release(arg);
        return;
    }
    r->status = status;
    r->kept = body;
    r->resp_len = len;
    r->release = release;
    r->release_arg = arg;
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* ---- streamed bodies ------------------------------------------------------------------ */

static void stream_unref(struct dapi_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if(!last)
        return;
    pthread_cond_destroy(&s->room);
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

/* Wakes the connection waiting for data (under s->mu). */
static void stream_wake(struct dapi_stream *s)
{
    if(s->suspended && !s->gone) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
}

/* MHD_ContentReaderCallback, on the event thread: what is buffered, else the end, else
 * suspends the connection until the writer adds more (returning 0 without suspending would
 * make libmicrohttpd call again at once: a busy loop). */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct dapi_stream *s = cls;
    ssize_t n;
    pthread_mutex_lock(&s->mu);
    size_t avail = s->tail - s->head;
    if(avail) {
        n = (ssize_t)(avail < max ? avail : max);
        memcpy(out, s->buf + s->head, (size_t)n);
        s->head += (size_t)n;
        if(s->head == s->tail)
            s->head = s->tail = 0;
        s->total += (unsigned long long)n;
        pthread_cond_signal(&s->room);
    } else if(s->ended) {
        n = s->ok ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    } else {
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* MHD_ContentReaderFreeCallback: the response is gone (sent, or the client left). */
static void stream_free(void *cls)
{
    struct dapi_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    s->gone = 1;
    s->suspended = 0;
    pthread_cond_broadcast(&s->room);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

struct dapi_stream *dapi_req_respond_stream(struct dapi_req *r, int status,
                                            const char *content_type)
{
    struct dapi_stream *s = calloc(1, sizeof *s);
    if(!s || !(s->buf = malloc(DAPI_STREAM_BUFFER))) {
        if(s)
            free(s);
        dapi_req_respond(r, 500, NULL, 0, NULL, NULL);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->room, NULL);
    s->refs = 3;
    s->conn = r->conn;
    pthread_mutex_lock(&r->mu);
    if(r->answered) {
        second_answer(r);
        s->gone = 1;
        s->refs = 1;
        return s; /* writes fail: the writer stops */
    }
    r->status = status;
    r->stream = s;
    r->ctype = content_type;
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
    return s;
}

void dapi_stream_stop_on(struct dapi_stream *s, const atomic_int *flag)
{
    pthread_mutex_lock(&s->mu);
    s->stop = flag;
    pthread_mutex_unlock(&s->mu);
}

static int stream_stopped(const struct dapi_stream *s)
{
    return s->gone || (s->stop && atomic_load(s->stop));
}

int dapi_stream_write(struct dapi_stream *s, const void *p, size_t len)
{
    const char *c = p;
    int waited = 0;
    pthread_mutex_lock(&s->mu);
    while(len && !stream_stopped(s)) {
        if(s->head && s->tail == DAPI_STREAM_BUFFER) { /* move what waits to the front */
            memmove(s->buf, s->buf + s->head, s->tail - s->head);
            s->tail -= s->head;
            s->head = 0;
        }
        size_t room = DAPI_STREAM_BUFFER - s->tail;
        if(!room) {
            if(!waited && s->on_wait)
                s->on_wait(1);
            waited = 1;
            stream_wake(s);
            struct timespec until = dapi_clock_after(0, 200);
            pthread_cond_timedwait(&s->room, &s->mu, &until);
            continue;
        }
        size_t n = len < room ? len : room;
        memcpy(s->buf + s->tail, c, n);
        s->tail += n;
        c += n;
        len -= n;
        stream_wake(s);
    }
    int rc = stream_stopped(s) ? -1 : 0;
    if(waited && s->on_wait)
        s->on_wait(0);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void dapi_stream_on_wait(struct dapi_stream *s, void (*fn)(int waiting))
{
    pthread_mutex_lock(&s->mu);
    s->on_wait = fn;
    pthread_mutex_unlock(&s->mu);
}

int dapi_stream_gone(struct dapi_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int g = s->gone;
    pthread_mutex_unlock(&s->mu);
    return g;
}

void dapi_stream_end(struct dapi_stream *s, int ok)
{
    if(!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    s->ok = ok;
    stream_wake(s);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

/* Lists r's connection in h->waiting for the stop (under h->wmu, on r's event thread; every
 * request served has its connection, see on_request). */
static void list_waiting(struct dapi_http *h, struct dapi_req *r)
{
    struct dapi_conn *c = r->c;
    if(!c->wreq) {
        c->wprev = NULL;
        c->wnext = h->waiting;
        if(h->waiting)
            h->waiting->wprev = c;
        h->waiting = c;
        c->wreq = r;
    }
}

/* Takes c out of h->waiting, if it is there (on its event thread). */
static void unlist_waiting(struct dapi_http *h, struct dapi_conn *c)
{
    if(!c->wreq)
        return;
    pthread_mutex_lock(&h->wmu);
    if(c->wprev)
        c->wprev->wnext = c->wnext;
    else
        h->waiting = c->wnext;
    if(c->wnext)
        c->wnext->wprev = c->wprev;
    c->wreq = NULL;
    pthread_mutex_unlock(&h->wmu);
}

static enum MHD_Result queue(struct dapi_req *r)
{
    struct MHD_Response *resp;
    if(r->stream) {
        /* its connection is suspended while the writer has nothing new: the stop must see it */
        pthread_mutex_lock(&r->h->wmu);
        list_waiting(r->h, r);
        pthread_mutex_unlock(&r->h->wmu);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read,
                                                 r->stream, stream_free);
        if(!resp)
            return MHD_NO; /* (the response's reference is dropped with the request's) */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    } else if(r->release) {
        /* sent from where it is; release runs when libmicrohttpd is done with it */
        resp = MHD_create_response_from_buffer_with_free_callback_cls(r->resp_len, (void *)r->kept,
                                                                      r->release, r->release_arg);
        if(!resp)
            return MHD_NO;
        r->release = NULL; /* owned by MHD now */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    } else if(r->reader) {
        resp = MHD_create_response_from_callback(r->reader->size, 64 * 1024, reader_read,
                                                 r->reader, reader_free);
        if(!resp)
            return MHD_NO;
        r->resp_len = (size_t)r->reader->size;
        r->reader = NULL; /* owned by MHD now */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    } else if(r->fd >= 0) {
        resp = MHD_create_response_from_fd64(r->fd_size, r->fd);
        if(!resp)
            return MHD_NO;
        r->fd = -1; /* owned by MHD now */
        r->resp_len = (size_t)r->fd_size;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    } else {
        resp = MHD_create_response_from_buffer(r->resp_len, r->resp, MHD_RESPMEM_MUST_FREE);
        if(!resp)
            return MHD_NO;
        r->resp = NULL;      /* owned by MHD now */
        if(r->status != 304) /* no content, so no type */
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    r->ctype ? r->ctype : "application/json");
    }
    if(r->xh && r->xv)
        MHD_add_response_header(resp, r->xh, r->xv);
    for(int i = 0; i < r->n_added; i++)
        MHD_add_response_header(resp, r->added[i].name, r->added[i].value);
    if(r->rid[0])
        MHD_add_response_header(resp, "X-Request-Id", r->rid);
    /* libmicrohttpd then closes the connection after the response instead of reading the
     * next request from it (whose start we could not know, or which we refuse to read). */
    if(r->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    r->bytes_sent = r->resp_len;
    r->queued = 1;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static char *error_body(const char *msg, size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    dapi_buf_addf(&b, "{\"error\":\"%s\"}", msg);
    return dapi_buf_take(&b, len);
}

static void respond_error(struct dapi_req *r, int status, const char *msg)
{
    size_t len;
    char *body = error_body(msg, &len);
    dapi_req_respond(r, status, body, body ? len : 0, NULL, NULL);
}

static enum MHD_Result scan_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    dapi_http_head_add(cls, kind == MHD_HEADER_KIND, key, key_size, value, value_size);
    return MHD_YES;
}

/* The head checks of head.h over conn's headers and query-string arguments. */
static const char *head_error(struct MHD_Connection *conn, int framing_only,
                              size_t max_header_bytes, int *status)
{
    struct dapi_head_scan hs = {0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, scan_value, &hs);
    return dapi_http_head_error(&hs, framing_only, max_header_bytes, status);
}

static struct dapi_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
        conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* X-Request-Id: a client's value is kept if it is 1 to DAPI_REQUEST_ID_MAX characters of
 * printable ASCII without space, '"' or '\\' (so it is safe in a header and in a log line as
 * it is); otherwise one is generated. */
static int request_id_ok(const char *v)
{
    size_t n = 0;
    for(; v[n]; n++) {
        unsigned char c = (unsigned char)v[n];
        if(n >= DAPI_REQUEST_ID_MAX || c <= 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return n > 0;
}

/* A generated id: 16 base62 characters, 8 from each of two outputs of a per-thread splitmix64
 * seeded from the system's randomness. Unique, not secret, so no system call per request. */
static void request_id_new(char *out)
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    static _Thread_local uint64_t state;
    static _Thread_local int seeded;
    if(!seeded) {
        if(dapi_random(&state, sizeof state))
            state = (uint64_t)dapi_clock_mono_us() ^ (uint64_t)(uintptr_t)&state;
        seeded = 1;
    }
    for(int half = 0; half < 2; half++) {
        /* splitmix64 */
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        for(int i = 0; i < 8; i++) {
            *out++ = alphabet[z % 62];
            z /= 62;
        }
    }
    *out = '\0';
}

/* The request's id, once its headers are in: the client's X-Request-Id if sane, else a new
 * one. */
static void request_id_set(struct dapi_req *r, struct MHD_Connection *conn)
{
    if(r->rid[0])
        return;
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if(v && request_id_ok(v))
        snprintf(r->rid, sizeof r->rid, "%s", v);
    else
        request_id_new(r->rid);
}

/* The query string as the access log shows it: names as sent, a value only when it is a plain
 * decimal number of at most 20 digits (a page number), any other value as "*" - a URL is
 * where a client may put a key or a token by mistake, and the log must never hold one.
 * Cut at 2 KiB. NULL if out of memory. */
static char *query_for_log(const char *q)
{
    enum { QUERY_MAX_LOGGED = 2048 };
    size_t n = strlen(q);
    /* never longer than the input; past the cut, at most "=" and 20 digits, "..." and NUL */
    char *out = malloc((n < QUERY_MAX_LOGGED ? n : QUERY_MAX_LOGGED) + 32), *o = out;
    if(!out)
        return NULL;
    while(*q && o - out < QUERY_MAX_LOGGED) {
        size_t name = strcspn(q, "=&"), room = QUERY_MAX_LOGGED - (size_t)(o - out);
        if(name > room)
            name = room;
        memcpy(o, q, name);
        o += name;
        q += name;
        if(*q == '=') {
            q++;
            size_t v = strcspn(q, "&"), d = strspn(q, "0123456789");
            *o++ = '=';
            if(v && (d != v || v > 20))
                *o++ = '*';
            else if(v) {
                memcpy(o, q, v);
                o += v;
            }
            q += v;
        }
        if(*q == '&' && o - out < QUERY_MAX_LOGGED)
            *o++ = *q++;
        else if(*q && *q != '&')
            break; /* cut inside a name */
        else if(*q)
            q++;
    }
    if(*q) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o = '\0';
    return out;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct dapi_http *h = cls;
    struct dapi_conn *c = conn_of(conn);
    struct dapi_req *r;
    if(c && c->spare) { /* a kept-alive connection's next request */
        r = c->spare;
        c->spare = NULL;
        memset(r, 0, sizeof *r);
    } else if(!(r = calloc(1, sizeof *r))) {
        return NULL;
    }
    r->h = h;
    r->conn = conn;
    r->start_us = dapi_clock_mono_us();
    r->fd = -1;
    r->c = c;
    if(r->c) {
        r->c->req = r;
        memcpy(r->client, r->c->addr_text, sizeof r->client);
    } else {
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(
            conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        struct dapi_addr a;
        dapi_addr_from_sockaddr(&a, ai ? ai->client_addr : NULL,
                                ai && ai->client_addr ? sizeof(struct sockaddr_in6) : 0);
        dapi_addr_format(&a, r->client, sizeof r->client);
    }
    /* libmicrohttpd hands the access handler the path without its query string; the access
     * log shows it, with only numbers for values (query_for_log). */
    const char *q = uri ? strchr(uri, '?') : NULL;
    if(q && q[1])
        r->query = query_for_log(q + 1); /* NULL if out of memory: then it is not logged */
    pthread_mutex_init(&r->mu, NULL);
    dapi_buf_init(&r->body, (size_t)h->o.max_body_bytes);
    atomic_fetch_add(&h->inflight, 1);
    return r;
}

/* Answers on the first call, with the head only, and closes the connection: for requests
 * whose body we will not read. */
static enum MHD_Result refuse_early(struct dapi_req *r, int status, const char *msg)
{
    r->state = ST_DISPATCHED;
    r->close = 1;
    respond_error(r, status, msg);
    return queue(r);
}

static void send_raw_error(MHD_socket fd, int status, const char *msg, const char *rid,
                           unsigned long long *sent);

/* The 408 of a body past --request-body-timeout. libmicrohttpd 0.9.75 sends no response queued
 * in the middle of a body, so it is written to the socket (as in rescue_bad_length), which is
 * then shut down: libmicrohttpd closes the connection. */
static void body_too_slow(struct dapi_http *h, struct dapi_req *r)
{
    r->state = ST_DISPATCHED;
    r->status = 408;
    r->queued = 1; /* for the access line */
    if(!r->c)
        return;
    send_raw_error(r->c->fd, 408, "Request timeout: the body took too long to arrive", r->rid,
                   &r->bytes_sent);
    shutdown(r->c->fd, SHUT_RDWR);
    pthread_mutex_lock(&h->mu);
    r->c->cut = 1;
    pthread_mutex_unlock(&h->mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct dapi_http *h = cls;
    struct dapi_req *r = *con_cls;
    if(!r || !r->c)
        return MHD_NO; /* on_uri could not allocate, or on_connection could not track the
                          connection (and shut it down): drop it */

    if(r->state == ST_READING && !r->path) {
        /* First call: headers only. Answer nothing yet (the two-call pattern keeps
         * keep-alive working, see docs/design.md), but note what is wrong. */
        r->method = method;
        r->path = strdup(url);
        if(!r->path)
            return MHD_NO;
        request_id_set(r, conn);
        if(r->c)
            atomic_store(&r->c->in_request, 1); /* the head arrived: its deadline is met */
        const char *cn = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONNECTION);
        r->http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
        r->one_shot = (cn && strcasestr(cn, "close")) ||
                      (r->http10 && !(cn && strcasestr(cn, "keep-alive")));
        int status;
        const char *bad = head_error(conn, 0, (size_t)h->o.max_header_bytes, &status);
        if(bad)
            return refuse_early(r, status, bad);
        if(strlen(url) > (size_t)h->o.max_header_bytes)
            return refuse_early(r, 414, "Request URI too long");
        uint64_t len;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if(cl && dapi_http_parse_length(cl, &len) == DAPI_LEN_OK &&
           len > (uint64_t)h->o.max_body_bytes) {
            /* Too large. Answering now and closing would make the kernel reset the
             * connection over the unread body, and most clients (which send the whole body
             * before reading) would see the reset, not the 413. So a body up to
             * drain_bytes is read and discarded, then answered. Larger ones, and clients
             * that wait for "100 Continue" before sending, are answered at once. */
            const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_EXPECT);
            if(len > h->drain_bytes || (expect && strcasecmp(expect, "100-continue") == 0))
                return refuse_early(r, 413, "Request body too large");
            r->too_large = 1;
        }
        return MHD_YES;
    }
    if(r->state == ST_READING && *upload_data_size) {
        /* A body trickled a byte at a time makes progress, so --connection-timeout never
         * fires: the whole request has a deadline of its own. */
        if(h->o.request_body_timeout_s &&
           dapi_clock_mono_us() - r->start_us > h->o.request_body_timeout_s * 1000000) {
            body_too_slow(h, r);
            return MHD_NO;
        }
        r->received += *upload_data_size;
        if(!r->too_large && dapi_buf_add(&r->body, upload_data, *upload_data_size)) {
            r->too_large = 1;
            dapi_buf_free(&r->body);
        }
        *upload_data_size = 0;
        /* A chunked body announces no size: past drain_bytes, stop reading it. No status can
         * be sent in the middle of a body, so libmicrohttpd just closes the connection. */
        if(r->too_large && r->received > h->drain_bytes)
            return MHD_NO;
        return MHD_YES;
    }
    if(r->state == ST_READING) {
        r->state = ST_DISPATCHED;
        if(r->too_large) {
            r->close = 1; /* a client that sent that much may well send more */
            respond_error(r, 413, "Request body too large");
        } else {
            h->o.dispatch(r, h->o.app);
        }
        /* A deferred request is listed for the stop, and suspended, under h->wmu: the stop
         * finds it suspended or answered (r->deferred was set by the handler, on this thread). */
        int deferred = r->deferred;
        if(deferred) {
            pthread_mutex_lock(&h->wmu);
            list_waiting(h, r);
        }
        pthread_mutex_lock(&r->mu);
        if(!r->answered) {
            if(!r->deferred) {
                pthread_mutex_unlock(&r->mu);
                dapi_error("http: handler for %s %s returned no response", method, url);
                respond_error(r, 500, "Internal server error");
                pthread_mutex_lock(&r->mu);
            } else {
                r->suspended = 1;
                MHD_suspend_connection(conn);
                pthread_mutex_unlock(&r->mu);
                pthread_mutex_unlock(&h->wmu); /* (deferred) */
                return MHD_YES;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if(deferred)
            pthread_mutex_unlock(&h->wmu);
    }
    if(r->queued)
        return MHD_YES;
    pthread_mutex_lock(&r->mu);
    int ready = r->answered;
    pthread_mutex_unlock(&r->mu);
    return ready ? queue(r) : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct dapi_http *h = cls;
    struct dapi_req *r = *con_cls;
    if(!r)
        return;
    if(r->c)
        unlist_waiting(h, r->c);
    int64_t now_us = dapi_clock_mono_us(); /* (one clock read for the duration and the deadline) */
    long long dur = now_us - r->start_us;
    if(r->stream) { /* what was sent of a streamed body */
        pthread_mutex_lock(&r->stream->mu);
        r->bytes_sent = r->stream->total;
        pthread_mutex_unlock(&r->stream->mu);
    }
    struct dapi_access a = {r->method,
                            r->path,
                            r->query,
                            r->client,
                            r->rid,
                            r->queued ? r->status : 0, /* 0: the client left before an answer */
                            r->queued ? r->bytes_sent : 0,
                            dur};
    dapi_log_request(&a);
    dapi_metrics_request(r->route, r->method, a.status, a.bytes, dur);
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if(r->c && (!ok || r->close || r->one_shot || (r->http10 && r->stream))) {
        /* libmicrohttpd closes the connection, but with MHD_USE_TURBO it skips the shutdown
         * and the close waits for its thread's next event: a body cut short (an export whose
         * query was cancelled, or whose run failed) reached the client as its end only when
         * the sweeper closed the idle connection, 10 s later; so did the end of a body whose
         * end is the close (a stream to an HTTP/1.0 client). All of it is sent already. */
        shutdown(r->c->fd, ok ? SHUT_WR : SHUT_RDWR);
        pthread_mutex_lock(&h->mu);
        r->c->cut = 1;
        pthread_mutex_unlock(&h->mu);
    }
    if(r->c) {
        /* The next request head on this kept-alive connection has its deadline counted from
         * now (the order matters: the sweeper reads in_request first). */
        r->c->req = NULL;
        atomic_store(&r->c->head_since_ms, now_us / 1000);
        atomic_store(&r->c->in_request, 0);
    }
    if(r->stream) {
        struct dapi_stream *st = r->stream;
        if(!r->queued) /* the response's reference was never handed to libmicrohttpd */
            stream_free(st);
        stream_unref(st);
    }
    free(r->resp);
    if(r->release) /* answered, never queued */
        r->release(r->release_arg);
    if(r->reader)
        reader_free(r->reader);
    if(r->fd >= 0)
        close(r->fd);
    free(r->path);
    free(r->query);
    dapi_buf_free(&r->body);
    pthread_mutex_destroy(&r->mu);
    if(r->c && !r->c->spare) /* (on_connection frees it with the connection) */
        r->c->spare = r;
    else
        free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&h->inflight, 1);
}

/* ------------------------------------------------------------------------ connections */

/* The admission on_accept granted on this event thread, claimed by on_connection right
 * after: libmicrohttpd calls both in one go on the accepting thread, but may drop the
 * socket in between (out of memory). The next on_accept on the thread then finds the grant
 * unclaimed and gives it back, so a count can never leak. */
static _Thread_local struct {
    struct dapi_http *h;
    struct dapi_addr addr;
} grant;

/* A warning when connections are refused, at most every 10 s per limit: an operator should
 * know, a flood should not fill the log. */
static void note_refused(struct dapi_http *h, int why, const struct dapi_addr *a, int64_t open)
{
    int k = why == DAPI_CONNS_FULL ? 0 : 1;
    int64_t now = dapi_clock_mono_ms(), last = atomic_load(&h->refused_log_ms[k]);
    if(last && now - last < 10000)
        return;
    if(!atomic_compare_exchange_strong(&h->refused_log_ms[k], &last, now))
        return;
    if(k == 0) {
        dapi_warn("refusing connections: %lld open (--max-connections %lld)", (long long)open,
                  (long long)h->o.max_connections);
    } else {
        char text[64];
        dapi_addr_format(a, text, sizeof text);
        dapi_warn("refusing connections from %s: %lld open from it (--max-connections-per-ip "
                  "%lld)",
                  text, (long long)open, (long long)h->o.max_connections_per_ip);
    }
}

/* Connections accepted or refused (n = 0 at start: both families exist from the first
 * scrape on, at zero). */
static void count_connection(int refused, uint64_t n)
{
    if(refused)
        dapi_metrics_count("dapi_http_connections_refused_total",
                           "connections closed at once: over --max-connections or "
                           "--max-connections-per-client",
                           n);
    else
        dapi_metrics_count("dapi_http_connections_accepted_total", "connections accepted", n);
}

/* MHD_AcceptPolicyCallback: runs on the event thread that accepted the socket, before
 * libmicrohttpd counts it. A refused socket is closed at once (the client sees the
 * connection closed or reset), so it never occupies anything. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct dapi_http *h = cls;
    struct dapi_addr a;
    if(atomic_load(&h->quiesced))
        return MHD_NO; /* stopping: closed at once, never counted */
    dapi_addr_from_sockaddr(&a, sa, len);
    pthread_mutex_lock(&h->mu);
    if(grant.h == h)
        dapi_conns_release(h->conns, &grant.addr);
    grant.h = NULL;
    int rc = dapi_conns_acquire(h->conns, &a);
    int64_t open = rc == DAPI_CONNS_FULL ? dapi_conns_total(h->conns)
                                         : dapi_conns_of(h->conns, &a);
    if(rc == DAPI_CONNS_OK) {
        grant.h = h;
        grant.addr = a;
    }
    pthread_mutex_unlock(&h->mu);
    if(rc != DAPI_CONNS_OK) {
        note_refused(h, rc, &a, open);
        count_connection(1, 1);
        return MHD_NO;
    }
    count_connection(0, 1);
    return MHD_YES;
}

/* MHD_OPTION_NOTIFY_CONNECTION: STARTED once for every connection libmicrohttpd keeps, and
 * CLOSED exactly once for each of those, on the connection's event thread, before its
 * socket is closed (so the sweeper may shut the socket down while it is listed). */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct dapi_http *h = cls;
    if(code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct dapi_conn *c = *socket_context;
        if(!c)
            return;
        if(c->req)
            c->req->c = NULL;
        unlist_waiting(h, c); /* (on_completed did, for a request that got that far) */
        free(c->spare);
        pthread_mutex_lock(&h->mu);
        if(c->prev)
            c->prev->next = c->next;
        else
            h->open = c->next;
        if(c->next)
            c->next->prev = c->prev;
        if(c->counted)
            dapi_conns_release(h->conns, &c->addr);
        pthread_mutex_unlock(&h->mu);
        free(c);
        *socket_context = NULL;
        return;
    }
    if(code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(
        mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct dapi_conn *c = calloc(1, sizeof *c);
    pthread_mutex_lock(&h->mu);
    int granted = grant.h == h;
    struct dapi_addr a = grant.addr;
    grant.h = NULL;
    if(!c || !fi) {
        /* Cannot track it, so cannot bound it: do not serve it. */
        if(granted)
            dapi_conns_release(h->conns, &a);
        pthread_mutex_unlock(&h->mu);
        if(fi)
            shutdown(fi->connect_fd, SHUT_RDWR);
        free(c);
        *socket_context = NULL;
        return;
    }
    c->mc = mc;
    c->fd = fi->connect_fd;
    c->owner = pthread_self();
    atomic_init(&c->head_since_ms, dapi_clock_mono_ms());
    atomic_init(&c->in_request, 0);
    if(granted) {
        c->addr = a;
        c->counted = 1;
    } else {
        /* Not admitted by on_accept (only MHD_add_connection does that; dapi never calls
         * it): admit it here, or cut it. */
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(
            mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        dapi_addr_from_sockaddr(&c->addr, ai ? ai->client_addr : NULL,
                                ai && ai->client_addr ? sizeof(struct sockaddr_in6) : 0);
        c->counted = dapi_conns_acquire(h->conns, &c->addr) == DAPI_CONNS_OK;
        if(!c->counted) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
        }
    }
    c->next = h->open;
    if(h->open)
        h->open->prev = c;
    h->open = c;
    pthread_mutex_unlock(&h->mu);
    /* read only by this connection's requests, on this thread */
    dapi_addr_format(&c->addr, c->addr_text, sizeof c->addr_text);
    *socket_context = c;
}

/* Closes connections that have not delivered a whole request head within
 * --request-head-timeout: counted from the connection's start, or from the end of the
 * previous response on a kept-alive connection, to the first call of the access handler.
 * libmicrohttpd's own --connection-timeout restarts at every byte received, so a client
 * trickling a header byte at a time would hold a connection forever. shutdown(), never
 * close(): the socket is libmicrohttpd's; it sees the end of the stream and closes it. */
static void *sweep_main(void *arg)
{
    struct dapi_http *h = arg;
    int64_t limit_ms = h->o.request_head_timeout_s * 1000;
    pthread_mutex_lock(&h->mu);
    while(!h->stopping) {
        struct timespec ts = dapi_clock_after(1, 100); /* 0.1 s: the deadline's precision */
        pthread_cond_timedwait(&h->wake, &h->mu, &ts);
        int64_t now = dapi_clock_mono_ms();
        int cut = 0;
        for(struct dapi_conn *c = h->open; c && !h->stopping; c = c->next) {
            if(c->cut || atomic_load(&c->in_request) ||
               now - atomic_load(&c->head_since_ms) < limit_ms)
                continue;
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
            cut++;
        }
        if(cut)
            dapi_debug("http: closed %d connection(s) without a request head after %lld s", cut,
                       (long long)h->o.request_head_timeout_s);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* An error answer written straight to the socket (see rescue_bad_length). */
static void send_raw_error(MHD_socket fd, int status, const char *msg, const char *rid,
                           unsigned long long *sent)
{
    size_t blen;
    char *body = error_body(msg, &blen);
    if(!body)
        return;
    *sent = dapi_http_send_raw(fd, status, NULL, NULL, 0, rid, body, blen, 0);
    free(body);
}

/* libmicrohttpd 0.9.75 answers a Content-Length it cannot parse (negative, not digits, or
 * beyond 64 bits) by itself, before any callback of ours sees the request, and gets it
 * wrong: an HTML body, and its status line and headers written twice (it builds the
 * response, then its state machine builds it again). The one piece of our code that runs
 * in between is this logger, because libmicrohttpd logs the error first, on the event thread
 * parsing that request. So: find the one connection of this thread whose head is complete
 * but not yet handed to us and which has no response yet, check its Content-Length
 * ourselves, and if it is invalid write our JSON answer and shut the socket down, so that
 * libmicrohttpd's own answer cannot be sent and it closes the connection. Nothing is done
 * unless exactly one connection matches and its header is really invalid. */
static void rescue_bad_length(struct dapi_http *h)
{
    pthread_t self = pthread_self();
    struct dapi_conn *found = NULL;
    int matches = 0;
    pthread_mutex_lock(&h->mu);
    for(struct dapi_conn *c = h->open; c; c = c->next) {
        if(!pthread_equal(c->owner, self) || c->cut || atomic_load(&c->in_request))
            continue;
        if(!MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE) ||
           MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_HTTP_STATUS))
            continue;
        found = c;
        matches++;
    }
    if(matches != 1)
        goto out;
    int status;
    const char *msg = head_error(found->mc, 1, 0, &status);
    if(!msg)
        goto out;
    unsigned long long sent = 0;
    char rid[DAPI_REQUEST_ID_MAX + 1] = "";
    if(found->req) {
        request_id_set(found->req, found->mc);
        memcpy(rid, found->req->rid, sizeof rid);
    }
    send_raw_error(found->fd, status, msg, rid, &sent);
    shutdown(found->fd, SHUT_RDWR);
    found->cut = 1;
    if(found->req) { /* for the access log line */
        found->req->status = status;
        found->req->queued = 1;
        found->req->bytes_sent = sent;
    }
out:
    pthread_mutex_unlock(&h->mu);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    dapi_debug("mhd: %s", msg);
    rescue_bad_length(cls);
}

/* Every connection is a file descriptor, and so is every result file being sent. When
 * accept() fails for lack of descriptors, libmicrohttpd stops accepting until one of that
 * thread's connections closes (the same stalled state as at its own connection limit), so
 * the soft limit is raised, up to the hard one, to fit --max-connections. */
static void ensure_fd_limit(int64_t max_connections)
{
    rlim_t need = (rlim_t)max_connections * 2 + 512;
    struct rlimit rl;
    if(getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if(rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl))
        rl.rlim_cur = was;
    if(rl.rlim_cur < need)
        dapi_warn("--max-connections %lld wants %llu open files but the limit is %llu (ulimit "
                  "-n): beyond it, new connections wait until others close",
                  (long long)max_connections, (unsigned long long)need,
                  (unsigned long long)rl.rlim_cur);
}

/* libmicrohttpd's answer to a broken invariant is abort(): say why, and write out the access
 * lines still buffered, first. */
static void on_mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    dapi_error("libmicrohttpd: fatal error at %s:%u: %s", file ? file : "?", line,
               reason ? reason : "");
    dapi_log_flush_fatal();
    abort();
}

static void format_addr(const struct sockaddr *sa, int port, struct dapi_listen_addr *out)
{
    char text[INET6_ADDRSTRLEN] = "?";
    if(sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof text);
        snprintf(out->host, sizeof out->host, "[%s]", text);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof text);
        snprintf(out->host, sizeof out->host, "%s", text);
    }
    snprintf(out->text, sizeof out->text, "%s:%d", out->host, port);
}

enum dapi_err dapi_http_resolve(const char *host, int port, struct dapi_listen_addr *out,
                                char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if(!host || !*host) {
        snprintf(err, errlen, "invalid value for --host: '' (an IP address or a host name)");
        return DAPI_ERR_INVALID;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if(rc) {
        snprintf(err, errlen, "cannot resolve --host '%.200s': %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return DAPI_ERR_INVALID;
    }
    /* One listen socket: a name's first IPv4 address, else its first IPv6 one ("localhost"
     * is 127.0.0.1 even where ::1 comes first, which is where most clients try it). */
    const struct addrinfo *pick = NULL;
    for(const struct addrinfo *p = ai; p && !pick; p = p->ai_next)
        if(p->ai_family == AF_INET && p->ai_addrlen <= sizeof out->addr)
            pick = p;
    for(const struct addrinfo *p = ai; p && !pick; p = p->ai_next)
        if(p->ai_family == AF_INET6 && p->ai_addrlen <= sizeof out->addr)
            pick = p;
    if(!pick) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "cannot resolve --host '%.200s': no IPv4 or IPv6 address", host);
        return DAPI_ERR_INVALID;
    }
    memcpy(&out->addr, pick->ai_addr, pick->ai_addrlen);
    out->len = pick->ai_addrlen;
    freeaddrinfo(ai);
    format_addr((const struct sockaddr *)&out->addr, port, out);
    return DAPI_OK;
}

/* The listening socket, made here rather than by libmicrohttpd so that a failure says why
 * (its own bind failure is a NULL daemon and a log line), and so that SO_REUSEPORT is set
 * only when asked: libmicrohttpd's MHD_OPTION_LISTENING_ADDRESS_REUSE 1 sets it, and with it
 * a second server on a port in use starts silently and the kernel splits the connections
 * between the two. SO_REUSEADDR is set, as libmicrohttpd does by default: on Linux it only
 * lets a restart bind while old connections are in TIME_WAIT, never beside a live listener.
 * IPv6 sockets are IPv6 only (as libmicrohttpd's without MHD_USE_DUAL_STACK). Returns the
 * socket with *port its bound port, or -1 with err set. */
static int listen_on(const struct dapi_listen_addr *la, int reuse_port, int *port, char *err,
                     size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&la->addr;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int one = 1, e;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if(fd < 0)
        goto fail;
    if(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
       (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
       (sa->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one)))
        goto fail;
    if(bind(fd, sa, la->len) || listen(fd, SOMAXCONN) ||
       getsockname(fd, (struct sockaddr *)&bound, &blen))
        goto fail;
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    return fd;
fail:
    e = errno;
    snprintf(err, errlen, "cannot listen on %s: %s", la->text, strerror(e));
    if(fd >= 0)
        close(fd);
    return -1;
}

void dapi_http_daemon_end(struct dapi_http *h)
{
    MHD_stop_daemon(h->d); /* every connection is CLOSED (and unlisted) by its return */
    dapi_http_free(h);
}

const char *dapi_http_reason(int status)
{
    const char *r = status > 0 ? MHD_get_reason_phrase_for((unsigned)status) : NULL;
    return r ? r : "";
}

void dapi_http_free(struct dapi_http *h)
{
    dapi_conns_free(h->conns);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->wmu);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

enum dapi_err dapi_http_start(struct dapi_http **out, const struct dapi_http_opts *opts, char *err,
                              size_t errlen)
{
    count_connection(0, 0);
    count_connection(1, 0);
    *out = NULL;
    struct dapi_http *h = calloc(1, sizeof *h);
    if(!h)
        return DAPI_ERR_NOMEM;
    h->o = *opts;
    atomic_init(&h->quiesced, 0);
    atomic_init(&h->inflight, 0);
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->wmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->wake, &ca);
    pthread_condattr_destroy(&ca);
    /* Reading and discarding an oversized body so that the client gets its 413 costs
     * bandwidth; bounded to 4x the limit (at least 8 MiB). */
    h->drain_bytes = (uint64_t)opts->max_body_bytes * 4;
    if(h->drain_bytes < 8u << 20)
        h->drain_bytes = 8u << 20;
    enum dapi_err e = dapi_conns_new(&h->conns, opts->max_connections,
                                     opts->max_connections_per_ip);
    if(e) {
        dapi_http_free(h);
        return e;
    }
    ensure_fd_limit(opts->max_connections);

    struct dapi_listen_addr resolved;
    const struct dapi_listen_addr *la = opts->addr;
    if(!la) {
        if(dapi_http_resolve(opts->host, opts->port, &resolved, err, errlen)) {
            dapi_http_free(h);
            return DAPI_ERR_INVALID;
        }
        la = &resolved;
    }
    int lfd = listen_on(la, opts->reuse_port, &h->port, err, errlen);
    if(lfd < 0) {
        dapi_http_free(h);
        return DAPI_ERR_IO;
    }
    MHD_set_panic_func(on_mhd_panic, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if(la->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD must be able to buffer the request line and headers that we then measure against
     * --max-header-bytes, so that our JSON 414/431 answers them; requests beyond this buffer
     * meet libmicrohttpd's own 414/431. The buffer is not larger because libmicrohttpd
     * clears the used part of it after every request: at 512 KiB that memset took 30% of
     * the CPU and halved /api/health throughput (25k vs 59-67k req/s at 32-64 KiB), and
     * at 64 KiB it was still 9% of the profile. */
    size_t mem = (size_t)opts->max_header_bytes + 16 * 1024;
    /* libmicrohttpd's own limit must never be reached: at it, a worker takes the listen
     * socket out of its epoll set, and 0.9.75 can then sleep with requests waiting (its
     * epoll loop blocks again after a full batch of events, and nothing new arrives to wake
     * it): the whole server stalled until --connection-timeout. It splits its limit evenly
     * between the threads while connections are not spread evenly, so each thread's share
     * is kept above our whole limit. */
    unsigned mhd_limit = (unsigned)((opts->max_connections + 16) * opts->threads);
    /* The logger first: libmicrohttpd reports problems with the options that follow while
     * it reads them (e.g. a thread pool of 1), and would write those to stderr itself. */
    h->d = MHD_start_daemon(flags, (uint16_t)h->port, on_accept, h, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_LISTEN_SOCKET,
                            lfd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)opts->threads,
                            MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)opts->connection_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, MHD_OPTION_URI_LOG_CALLBACK,
                            on_uri, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
    if(!h->d) {
        /* The listen socket is not closed here: whether libmicrohttpd already closed it on
         * its way out is not said, and by now other threads open files, so a second close
         * could hit one of theirs. The process is about to exit anyway. */
        snprintf(err, errlen,
                 "cannot start the HTTP server on %s (libmicrohttpd refused; "
                 "see the log at --log-level debug)",
                 la->text);
        dapi_http_free(h);
        return DAPI_ERR_INTERNAL;
    }
    if(pthread_create(&h->sweeper, NULL, sweep_main, h)) {
        snprintf(err, errlen, "cannot start the HTTP connection sweeper thread");
        MHD_stop_daemon(h->d);
        dapi_http_free(h);
        return DAPI_ERR_NOMEM;
    }
    h->sweeper_started = 1;
    *out = h;
    return DAPI_OK;
}

int dapi_http_port(const struct dapi_http *h)
{
    return h->port;
}

int64_t dapi_http_open_connections(struct dapi_http *h)
{
    pthread_mutex_lock(&h->mu);
    int64_t n = dapi_conns_total(h->conns);
    pthread_mutex_unlock(&h->mu);
    return n;
}

const char *dapi_req_client(const struct dapi_req *r)
{
    return r->client;
}

long dapi_http_inflight(const struct dapi_http *h)
{
    return atomic_load(&((struct dapi_http *)h)->inflight);
}
