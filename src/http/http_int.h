/* What the files of the HTTP front share: http.c (libmicrohttpd's callbacks, requests and
 * answers: the only file that includes microhttpd.h) and stop.c (the end of the server,
 * which reaches libmicrohttpd through http.c). Private to src/http/. */
#ifndef DAPI_HTTP_INT_H
#define DAPI_HTTP_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/buf.h"
#include "http/conns.h"
#include "http/http.h"

struct MHD_Daemon;     /* libmicrohttpd's, used by http.c only */
struct MHD_Connection; /* (as above) */

/* Connection limits are enforced here, not by libmicrohttpd (docs/design.md, "Connections"):
 * on_accept admits or refuses each accepted socket against our own counts, on_connection
 * (MHD_OPTION_NOTIFY_CONNECTION) tracks every admitted connection until it closes, and a
 * sweeper thread closes connections that do not deliver a request head in time. */
struct dapi_conn {
    struct dapi_conn *prev, *next; /* h->open (h->mu) */
    struct MHD_Connection *mc;
    struct dapi_req *req;   /* the request being read or answered (its event thread only) */
    struct dapi_req *spare; /* the last request's memory, for the next one (event thread) */
    int fd;                 /* its socket (libmicrohttpd's MHD_socket, an int on POSIX) */
    pthread_t owner;        /* the event thread that runs it */
    struct dapi_addr addr;
    char addr_text[48];            /* addr as text, for the access log */
    int counted;                   /* holds a slot in h->conns */
    int cut;                       /* shut down by dapi; MHD closes it next (h->mu) */
    _Atomic int64_t head_since_ms; /* waiting for a request head since (monotonic) */
    atomic_int in_request;         /* the access handler has the current request */
    /* h->waiting (h->wmu): listed while wreq, its request, deferred or answers with a stream */
    struct dapi_conn *wprev, *wnext;
    struct dapi_req *wreq;
};

struct dapi_http {
    struct MHD_Daemon *d;
    atomic_int quiesced; /* no new connection is kept (dapi_http_quiesce) */
    struct dapi_http_opts o;
    atomic_long inflight;
    int port;
    uint64_t drain_bytes; /* an oversized body up to this size is read (and discarded) */
    pthread_mutex_t mu;   /* guards conns, open and every dapi_conn.cut */
    struct dapi_conns *conns;
    struct dapi_conn *open;
    pthread_cond_t wake; /* stops the sweeper */
    int stopping;
    int sweeper_started;
    pthread_t sweeper;
    _Atomic int64_t refused_log_ms[2]; /* last warning about a refusal, per limit */
    /* Connections whose request deferred or answers with a stream: the ones that can be
     * suspended (stop.c looks at them). Lock order: wmu, then a request's mu, then its
     * stream's mu. */
    pthread_mutex_t wmu;
    struct dapi_conn *waiting;
};

enum { ST_READING, ST_DISPATCHED, ST_DONE };

struct http_reader;

struct dapi_req {
    struct dapi_http *h;
    struct MHD_Connection *conn;
    const char *method;
    char *path;
    char *query;                       /* the query string as sent (after '?'), or NULL */
    char client[48];                   /* the client's address as text */
    char rid[DAPI_REQUEST_ID_MAX + 1]; /* X-Request-Id: the client's, or generated */
    int64_t start_us;
    struct dapi_conn *c; /* its connection (NULL if untracked) */
    struct dapi_buf body;
    uint64_t received;       /* body bytes received, kept or not */
    unsigned char too_large; /* body over the limit: discard, then 413 */
    unsigned char close;     /* answer with Connection: close */
    /* the client closes after this request (Connection: close, or HTTP/1.0 without
     * keep-alive); HTTP/1.0 (an unsized body then ends with the connection) */
    unsigned char one_shot, http10;
    /* (under mu) answered by dapi_http_abandon for its handler, whose answer is then dropped */
    unsigned char left;
    unsigned char state; /* ST_READING, ST_DISPATCHED, ST_DONE */
    pthread_mutex_t mu;  /* guards the fields below against a worker answering */
    int deferred, suspended, answered, queued;
    int status;
    char *resp;
    size_t resp_len;
    const char *xh, *xv; /* dapi_req_respond's extra header (xv in text) */
    /* Headers added before the response (dapi_req_add_header), sent with it: a static value,
     * or a copy in text. The copies share one small area so that the whole request stays
     * within 1 KiB. */
    struct {
        const char *name, *value;
    } added[DAPI_REQ_ADDED_HEADERS];
    int n_added;
    unsigned text_len;
    /* (the extra header's value always has room after the added ones' DAPI_REQ_HEADER_TEXT) */
    char text[DAPI_REQ_HEADER_TEXT + DAPI_REQ_HEADER_VALUE_MAX + 1];
    /* a body kept by the caller (dapi_req_respond_kept) instead of resp */
    const void *kept;
    void (*release)(void *arg);
    void *release_arg;
    struct dapi_stream *stream; /* a streamed body (dapi_req_respond_stream): a reference */
    struct http_reader *reader; /* a body read as it is sent (dapi_req_respond_reader) */
    int fd;                     /* file body (>= 0) instead of resp */
    uint64_t fd_size;
    const char *ctype;
    unsigned long long bytes_sent;
    const char *route; /* the route's name, for metrics (static; NULL: no route matched) */
};

struct dapi_stream {
    pthread_mutex_t mu;
    pthread_cond_t room; /* the writer waits for room, or for the client to leave */
    char *buf;           /* DAPI_STREAM_BUFFER bytes: data[head, tail) waits to be sent */
    size_t head, tail;
    int ended, ok; /* the writer is done (ok: the body is complete) */
    int gone;      /* libmicrohttpd is done with the response (sent, or the client left) */
    int suspended; /* the connection waits for data: resumed by the next write or the end */
    int refs;      /* the writer, the response, the request */
    struct MHD_Connection *conn;
    unsigned long long total; /* bytes handed to libmicrohttpd */
    const atomic_int *stop;   /* dapi_stream_stop_on */
    void (*on_wait)(int);     /* dapi_stream_on_wait */
};

/* Writes a whole answer straight to the socket fd, in the form libmicrohttpd would give it:
 * the status line, Date, Connection: close, Content-Type: application/json, Content-Length,
 * the n headers names[i]: values[i], X-Request-Id (when rid is not empty), then body unless
 * head_only. For a fresh socket, whose send buffer takes these few hundred bytes at once.
 * Returns the bytes sent. */
unsigned long long dapi_http_send_raw(int fd, int status, const char *const *names,
                                      const char *const *values, int n, const char *rid,
                                      const char *body, size_t len, int head_only);
/* Frees h and what it holds (its daemon stopped or never started). */
void dapi_http_free(struct dapi_http *h);
/* Stops libmicrohttpd (no connection may be suspended: it would abort) and frees h. */
void dapi_http_daemon_end(struct dapi_http *h);
/* The reason phrase of an HTTP status ("Service Unavailable"), or "" for an unknown one. */
const char *dapi_http_reason(int status);

#endif
