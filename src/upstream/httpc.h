/* An HTTP client for one thread: the only module that includes curl/curl.h. A handle keeps
 * its connections alive between calls (one reused libcurl easy handle). Every call has a
 * connect timeout, a total timeout and a cap on the response body. Used by the CLI client
 * (client.c) and by the Nekt upstream. */
#ifndef DAPI_HTTPC_H
#define DAPI_HTTPC_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "dapi/err.h"

struct dapi_httpc;

struct dapi_httpc_call {
    const char *method; /* "GET", "POST", … */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
    const char *body;           /* request body (POST), or NULL */
    size_t body_len;
    long connect_timeout_ms; /* 0 = 10 s */
    long timeout_ms;         /* whole call; 0 = 60 s */
    uint64_t max_body;       /* response body cap; over it the call fails */
    int fd;                  /* >= 0: stream the response body to this file instead */
    /* when set, the body of a 200 answer goes to on_data as it arrives (not capped by
     * max_body; other answers' bodies are kept in resp->body as usual): a non-zero return
     * stops the transfer (DAPI_ERR_IO) */
    int (*on_data)(void *arg, const char *p, size_t n);
    void *on_data_arg;
};

struct dapi_httpc_resp {
    int status;             /* HTTP status; 0 if no response */
    struct dapi_buf body;   /* response body (owned; dapi_httpc_resp_free) unless fd */
    uint64_t body_bytes;    /* bytes received */
    int64_t retry_after_ms; /* Retry-After header (seconds or HTTP date), -1 if none */
    int request_sent;       /* the request reached the network (it may have been acted on) */
    char error[256];        /* transport error text, "" if none (may name the host) */
    const char *reason;     /* the failure's kind in a few words, naming no host or
                               address (static); NULL if none — for answers to clients */
};

/* Creates a handle (free with dapi_httpc_free). */
enum dapi_err dapi_httpc_new(struct dapi_httpc **out);
void dapi_httpc_free(struct dapi_httpc *h);

/* Performs one call. Returns DAPI_OK when an HTTP response arrived (whatever its status),
 * DAPI_ERR_TIMEOUT on a timeout, DAPI_ERR_TOO_LARGE if the body passed max_body,
 * DAPI_ERR_UPSTREAM on any other transport failure (resp->error says what). resp is always
 * initialised: free it with dapi_httpc_resp_free. */
enum dapi_err dapi_httpc_do(struct dapi_httpc *h, const struct dapi_httpc_call *call,
                            struct dapi_httpc_resp *resp);
void dapi_httpc_resp_free(struct dapi_httpc_resp *resp);

/* Shutdown: every transfer in progress, in any handle, stops within about a second and
 * every later call fails at once (DAPI_ERR_UPSTREAM, "aborted"). Irreversible. */
void dapi_httpc_abort_all(void);

/* Percent-encodes s for use in a URL path segment or query value (owned, free()). */
char *dapi_httpc_escape(const char *s);

#endif
