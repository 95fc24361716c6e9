/* The HTTP front: the only module that includes microhttpd.h. It turns libmicrohttpd's
 * callbacks into one dapi request (method, path, headers, query args, body) handed to a
 * dispatch function, and sends exactly one response per request.
 *
 * A handler either responds before returning, or calls dapi_req_defer and responds later
 * from any thread (the connection is suspended meanwhile, holding no thread). */
#ifndef DAPI_HTTP_H
#define DAPI_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "dapi/err.h"

struct dapi_req;
struct dapi_http;

/* Where to listen: one address, resolved from --host and --port. */
struct dapi_listen_addr {
    struct sockaddr_storage addr;
    socklen_t len;
    char host[64]; /* the address as text: "127.0.0.1", "[::1]" */
    char text[80]; /* with the port: "127.0.0.1:5001", "[::1]:5001" */
};

/* Resolves host (an IPv4 or IPv6 address, or a name: its first IPv4 address, else its first
 * IPv6 one) and port into out. On failure err says why ("cannot resolve --host ..."). */
enum dapi_err dapi_http_resolve(const char *host, int port, struct dapi_listen_addr *out,
                                char *err, size_t errlen);

struct dapi_http_opts {
    const char *host;
    int port;
    int threads;
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int64_t max_connections;        /* in all; further ones are closed at accept */
    int64_t max_connections_per_ip; /* from one client address */
    int64_t request_head_timeout_s; /* to send a request head, from connection start or the
                                       end of the previous response */
    int64_t connection_timeout_s;
    int64_t request_body_timeout_s; /* request line to the end of the body (0: no limit) */
    void (*dispatch)(struct dapi_req *r, void *app);
    void *app;
    const struct dapi_listen_addr *addr; /* if set, used instead of host and port */
    int reuse_port;                      /* SO_REUSEPORT; without it a port in use is an error */
};

/* Listens and starts the event threads. A port in use (or any failure to listen) is an error:
 * "cannot listen on 127.0.0.1:5001: Address already in use". */
enum dapi_err dapi_http_start(struct dapi_http **out, const struct dapi_http_opts *opts, char *err,
                              size_t errlen);
/* The port listened on (the one picked, for port 0). */
int dapi_http_port(const struct dapi_http *h);
/* Stops accepting new connections; requests in flight continue. */
void dapi_http_quiesce(struct dapi_http *h);
/* Requests received and not yet completed. */
long dapi_http_inflight(const struct dapi_http *h);
/* Connections open now (counted ones: those admitted by the connection limits). */
int64_t dapi_http_open_connections(struct dapi_http *h);
/* Connections suspended now: a deferred request waiting for its handler, a streamed body
 * waiting for its writer, or a request dapi_http_abandon answered. */
int dapi_http_suspended(struct dapi_http *h);
/* Stops the server, once dapi_http_suspended is 0: libmicrohttpd aborts the process when it
 * is stopped with a suspended connection. (If one is left, it is not stopped: it does what
 * dapi_http_abandon does with a plain 503, says so in the log, and is left to the exit.) */
void dapi_http_stop(struct dapi_http *h);
/* For a process that exits without stopping the server because work it cannot wait for still
 * holds requests (dapi serve's stop, docs/design.md, Shutdown): answers every request whose
 * handler has not answered yet with status, body (len bytes of JSON, copied) and Retry-After
 * (NULL or "": none), written straight to its socket, which is then shut down; and shuts every
 * other connection down. The requests answered stay where they are (suspended, never freed)
 * until the process ends, so their handlers' answers can still come, and are dropped. Returns
 * how many were answered. The server must not be used further, only left to the exit. */
int dapi_http_abandon(struct dapi_http *h, int status, const char *body, size_t len,
                      const char *retry_after);

/* Request accessors: strings are borrowed for the life of the request. */
const char *dapi_req_method(const struct dapi_req *r);
/* Names the route that answers r (a static string), for metrics by route. */
void dapi_req_set_route(struct dapi_req *r, const char *name);
/* The Content-Type of the buffer response to come (a static string; default
 * application/json). */
void dapi_req_set_content_type(struct dapi_req *r, const char *content_type);
const char *dapi_req_path(const struct dapi_req *r);
/* The client's address as text ("127.0.0.1", "::1"). */
const char *dapi_req_client(const struct dapi_req *r);
const char *dapi_req_header(const struct dapi_req *r, const char *name);
/* A query-string argument, or NULL if absent ("" for "?a" or "?a="). */
const char *dapi_req_arg(const struct dapi_req *r, const char *name);
/* Calls fn(ctx, name, value) for every query-string argument in order, repeated names
 * included (value "" for "?a" or "?a="); stops when fn returns non-zero. Returns how many
 * arguments were seen. */
size_t dapi_req_args(const struct dapi_req *r,
                     int (*fn)(void *ctx, const char *name, const char *value), void *ctx);
const char *dapi_req_body(const struct dapi_req *r, size_t *len);
/* The request id: the client's X-Request-Id when it is 1 to DAPI_REQUEST_ID_MAX printable
 * ASCII characters without space, '"' or '\\', else 16 generated base62 characters. Every
 * response carries it back in X-Request-Id, and the access log line shows it. */
#define DAPI_REQUEST_ID_MAX 128
const char *dapi_req_id(const struct dapi_req *r);

/* Marks the request as answered later (call before returning from dispatch). */
void dapi_req_defer(struct dapi_req *r);
/* Sends a response. Takes ownership of body (malloc'd, freed by the server). extra_header /
 * extra_value (may be NULL) add one header, e.g. Allow or Retry-After: the name must be a
 * static string, the value is copied (at most 127 bytes). Content-Type is
 * application/json (none for a 304, which has no content: body NULL, len 0). Callable from any thread, exactly once per request. */
void dapi_req_respond(struct dapi_req *r, int status, char *body, size_t len,
                      const char *extra_header, const char *extra_value);
/* Adds a header to whatever response the request gets (dapi_req_respond, _file), e.g. the
 * RateLimit fields set once a request is authenticated. name must be a static string; value
 * is copied (at most DAPI_REQ_HEADER_VALUE_MAX bytes; DAPI_REQ_HEADER_TEXT bytes for all of
 * a request's copied values and their NULs — dapi_req_respond's extra value has room of its
 * own). At most DAPI_REQ_ADDED_HEADERS per request. Call before the response; returns 0, or
 * -1 (too many, too long, no room left, already answered: the header is not sent). */
#define DAPI_REQ_ADDED_HEADERS 8
#define DAPI_REQ_HEADER_VALUE_MAX 127
#define DAPI_REQ_HEADER_TEXT 288
int dapi_req_add_header(struct dapi_req *r, const char *name, const char *value);
/* Like dapi_req_add_header, with a value of static storage (not copied, any length): a
 * Content-Security-Policy, say. */
int dapi_req_add_static_header(struct dapi_req *r, const char *name, const char *value);

/* Sends len bytes at body, not copied: they must stay valid until release(arg) is called,
 * once, by the server when it no longer needs them (also when the request ends unanswered,
 * and at once when the request was already answered). One contiguous body on purpose:
 * libmicrohttpd sends it with the headers in one system call, where a body of several
 * pieces (MHD_create_response_from_iovec) takes one more per answer. Content-Type is
 * application/json. Callable from any thread, exactly once per request. */
void dapi_req_respond_kept(struct dapi_req *r, int status, const void *body, size_t len,
                           void (*release)(void *arg), void *arg);

/* Sends the open file fd (size bytes, taken: closed by the server) as the body, with the
 * given Content-Type. Callable from any thread, exactly once per request. */
void dapi_req_respond_file(struct dapi_req *r, int status, int fd, uint64_t size,
                           const char *content_type);
/* Sends a body of size bytes produced as it is sent: read(arg, out, max) writes the next up
 * to max bytes (1 or more) or returns -1 (the connection is then closed: the client sees a
 * short body, never one taken for whole); done(arg) runs once when the server no longer
 * needs it (also when the request ends unanswered, or was answered already). Called on the
 * event thread: read must not wait. Callable from any thread, exactly once per request. */
void dapi_req_respond_reader(struct dapi_req *r, int status, uint64_t size,
                             const char *content_type,
                             long (*read)(void *arg, char *out, size_t max),
                             void (*done)(void *arg), void *arg);

/* ---- streamed bodies ----------------------------------------------------------------
 * A body of unknown length (chunked transfer) written by another thread while it is sent:
 * the writer blocks while DAPI_STREAM_BUFFER bytes wait to be sent (the client's pace sets
 * the writer's: memory stays bounded whatever the body's size), and learns that the client
 * left from a failing write. The event thread never waits for the writer: while the buffer
 * is empty the connection is suspended, resumed by the next write. */
#define DAPI_STREAM_BUFFER (256 * 1024)
struct dapi_stream;
/* Answers r with status, content_type and the body written through the returned stream (the
 * writer's reference: end it with dapi_stream_end). Headers added with dapi_req_add_header go
 * with it. NULL without memory (then r is answered 500). Callable from any thread, exactly
 * once per request. */
struct dapi_stream *dapi_req_respond_stream(struct dapi_req *r, int status,
                                            const char *content_type);
/* Appends len bytes to the body, waiting for room. 0, or -1 once the client has gone (or the
 * request ended without sending a body, as for HEAD): the writer then stops. */
int dapi_stream_write(struct dapi_stream *s, const void *p, size_t len);
/* Ends the body and drops the writer's reference: ok = complete (the last chunk is sent);
 * !ok = cut short (an error after the headers were sent: the connection is closed without
 * the last chunk, so the client sees an incomplete body, never a short one taken for whole). */
void dapi_stream_end(struct dapi_stream *s, int ok);
/* While *flag (not NULL) is non-zero a write fails at once, also one waiting for room (it
 * looks at the flag at least every 200 ms): a server that stops does not wait for a client
 * that stopped reading. Set before the first write. */
void dapi_stream_stop_on(struct dapi_stream *s, const atomic_int *flag);
/* fn(1) when a write has to wait for room (the client reads slower than the writer writes),
 * fn(0) when that write returns; called on the writer's thread, with the stream's lock held.
 * Set before the first write. */
void dapi_stream_on_wait(struct dapi_stream *s, void (*fn)(int waiting));
/* 1 once the client has gone (a writer may check it between costly steps). */
int dapi_stream_gone(struct dapi_stream *s);

/* The Host header as sent, or NULL. */
#define dapi_req_host(r) dapi_req_header((r), "Host")

#endif
