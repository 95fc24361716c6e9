#include "http/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"

struct dapi_http {
    struct MHD_Daemon *d;
    MHD_socket quiesced; /* the listen socket after quiesce: closed only after stop */
    struct dapi_http_opts o;
    atomic_long inflight;
    int port;
};

enum { ST_READING, ST_DISPATCHED, ST_DONE };

struct dapi_req {
    struct dapi_http *h;
    struct MHD_Connection *conn;
    const char *method;
    char *path;
    int64_t start_us;
    struct dapi_buf body;
    int too_large;        /* body over the limit: discard, then 413 */
    int header_too_large;
    int state;
    pthread_mutex_t mu;   /* guards the fields below against a worker answering */
    int deferred, suspended, answered, queued;
    int status;
    char *resp;
    size_t resp_len;
    const char *xh, *xv;
    char xv_buf[128];     /* copy of the extra header's value */
    int fd;               /* file body (>= 0) instead of resp */
    uint64_t fd_size;
    const char *ctype;
    unsigned long long bytes_sent;
};

const char *dapi_req_method(const struct dapi_req *r)
{
    return r->method;
}

const char *dapi_req_path(const struct dapi_req *r)
{
    return r->path;
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
        if(MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
                                         NULL, NULL) == MHD_YES)
            return "";
    }
    return v;
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
        pthread_mutex_unlock(&r->mu);
        close(fd);
        dapi_error("http: second response for one request dropped");
        return;
    }
    r->status = status;
    r->fd = fd;
    r->fd_size = size;
    r->ctype = content_type;
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void dapi_req_respond(struct dapi_req *r, int status, char *body, size_t len,
                      const char *extra_header, const char *extra_value)
{
    pthread_mutex_lock(&r->mu);
    if(r->answered) { /* a bug elsewhere; never answer twice */
        pthread_mutex_unlock(&r->mu);
        free(body);
        dapi_error("http: second response for one request dropped");
        return;
    }
    r->status = status;
    r->resp = body;
    r->resp_len = len;
    r->xh = extra_header;
    if(extra_value) {
        snprintf(r->xv_buf, sizeof r->xv_buf, "%s", extra_value);
        r->xv = r->xv_buf;
    }
    answer_locked(r);
    pthread_mutex_unlock(&r->mu);
}

static enum MHD_Result queue(struct dapi_req *r)
{
    struct MHD_Response *resp;
    if(r->fd >= 0) {
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
        r->resp = NULL; /* owned by MHD now */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    if(r->xh && r->xv)
        MHD_add_response_header(resp, r->xh, r->xv);
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

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    size_t *total = cls;
    *total += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct dapi_http *h = cls;
    struct dapi_req *r = calloc(1, sizeof *r);
    if(!r)
        return NULL;
    r->h = h;
    r->conn = conn;
    r->start_us = dapi_clock_mono_us();
    r->fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    dapi_buf_init(&r->body, (size_t)h->o.max_body_bytes);
    atomic_fetch_add(&h->inflight, 1);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct dapi_http *h = cls;
    struct dapi_req *r = *con_cls;
    if(!r)
        return MHD_NO; /* on_uri could not allocate: drop the connection */

    if(r->state == ST_READING && !r->path) {
        /* First call: headers only. Answer nothing yet (the two-call pattern keeps
         * keep-alive working, see docs/design.md), but note what is wrong. */
        r->method = method;
        r->path = strdup(url);
        if(!r->path)
            return MHD_NO;
        size_t total = 0;
        MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &total);
        if(total > (size_t)h->o.max_header_bytes)
            r->header_too_large = 1;
        else if(strlen(url) > (size_t)h->o.max_header_bytes)
            r->header_too_large = 2; /* the request line: 414 */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if(cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if(*end == '\0' && n > (unsigned long long)h->o.max_body_bytes)
                r->too_large = 1;
        }
        if(r->too_large || r->header_too_large) {
            /* Answer now rather than read a body we will refuse; MHD then closes the
             * connection, which is right since the body was not consumed. */
            r->state = ST_DISPATCHED;
            respond_error(r, r->header_too_large == 2 ? 414 : r->header_too_large ? 431 : 413,
                          r->header_too_large == 2 ? "Request URI too long"
                          : r->header_too_large    ? "Request headers too large"
                                                   : "Request body too large");
            return queue(r);
        }
        return MHD_YES;
    }
    if(r->state == ST_READING && *upload_data_size) {
        if(!r->too_large && !r->header_too_large &&
           dapi_buf_add(&r->body, upload_data, *upload_data_size)) {
            r->too_large = 1;
            dapi_buf_free(&r->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if(r->state == ST_READING) {
        r->state = ST_DISPATCHED;
        if(r->header_too_large)
            respond_error(r, 431, "Request headers too large");
        else if(r->too_large)
            respond_error(r, 413, "Request body too large");
        else
            h->o.dispatch(r, h->o.app);
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
                return MHD_YES;
            }
        }
        pthread_mutex_unlock(&r->mu);
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
    long long dur = dapi_clock_mono_us() - r->start_us;
    int status = r->queued ? r->status : 0; /* 0: the client left before an answer */
    dapi_log_access(r->method ? r->method : "-", r->path ? r->path : "-", status,
                    r->queued ? r->bytes_sent : 0, dur);
    free(r->resp);
    if(r->fd >= 0)
        close(r->fd);
    free(r->path);
    dapi_buf_free(&r->body);
    pthread_mutex_destroy(&r->mu);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&h->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    dapi_debug("mhd: %s", msg);
}

enum dapi_err dapi_http_start(struct dapi_http **out, const struct dapi_http_opts *opts,
                              char *err, size_t errlen)
{
    *out = NULL;
    struct dapi_http *h = calloc(1, sizeof *h);
    if(!h)
        return DAPI_ERR_NOMEM;
    h->o = *opts;
    h->quiesced = MHD_INVALID_SOCKET;
    atomic_init(&h->inflight, 0);

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", opts->port);
    if(getaddrinfo(opts->host, port, &hints, &ai)) {
        snprintf(err, errlen, "invalid value for --host: '%s' (a numeric IPv4 or IPv6 address)",
                 opts->host);
        free(h);
        return DAPI_ERR_INVALID;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if(ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD must be able to buffer the request line and headers that we then measure against
     * --max-header-bytes, so that our JSON 414/431 answers them; requests beyond this buffer
     * meet libmicrohttpd's own 414/431. The buffer is not larger because libmicrohttpd
     * clears the used part of it after every request: at 512 KiB that memset took 30% of
     * the CPU and halved /api/health throughput (25k vs 59-67k req/s at 32-64 KiB), and
     * at 64 KiB it was still 9% of the profile. */
    size_t mem = (size_t)opts->max_header_bytes + 16 * 1024;
    h->d = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)opts->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)opts->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)opts->connection_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        h, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if(!h->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)",
                 opts->host, opts->port);
        free(h);
        return DAPI_ERR_INVALID;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : opts->port;
    *out = h;
    return DAPI_OK;
}

int dapi_http_port(const struct dapi_http *h)
{
    return h->port;
}

void dapi_http_quiesce(struct dapi_http *h)
{
    /* The worker threads drop the socket from their epoll sets asynchronously: closing it
     * now would make that fail (libmicrohttpd then aborts), so it is closed after stop. */
    if(h->quiesced == MHD_INVALID_SOCKET)
        h->quiesced = MHD_quiesce_daemon(h->d);
}

long dapi_http_inflight(const struct dapi_http *h)
{
    return atomic_load(&((struct dapi_http *)h)->inflight);
}

void dapi_http_stop(struct dapi_http *h)
{
    if(!h)
        return;
    MHD_stop_daemon(h->d);
    if(h->quiesced != MHD_INVALID_SOCKET)
        close(h->quiesced);
    free(h);
}
