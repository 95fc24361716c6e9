/* dapi's one error enum. Functions that can fail return `enum dapi_err` (DAPI_OK == 0) so
 * callers write `if(result)`. Each code maps, in one table in src/base/err.c, to an HTTP
 * status, a client message and a Retry-After (dapi_err_status / dapi_err_message /
 * dapi_err_retry_after), plus the status of a stored query that failed with it
 * (dapi_err_exec_status). dapi_respond_err (src/api/respond.c) answers from that table. */
#ifndef DAPI_ERR_H
#define DAPI_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

enum dapi_err {
    DAPI_OK = 0,
    DAPI_ERR_NOMEM,            /* 500: allocation failed */
    DAPI_ERR_INVALID,          /* 400: bad input from the client */
    DAPI_ERR_TOO_LARGE,        /* 413: a size limit was crossed */
    DAPI_ERR_AUTH,             /* 401: missing or unknown key */
    DAPI_ERR_FORBIDDEN,        /* 403 */
    DAPI_ERR_NOT_FOUND,        /* 404 */
    DAPI_ERR_SQL,              /* 400: the SQL is not accepted (syntax, binder, refused kind) */
    DAPI_ERR_TIMEOUT,          /* 504: a time limit was crossed */
    DAPI_ERR_BUSY,             /* 503: no capacity now, retry later */
    DAPI_ERR_RATE,             /* 429 */
    DAPI_ERR_IO,               /* 500: file system */
    DAPI_ERR_UPSTREAM,         /* 502 */
    DAPI_ERR_INTERNAL,         /* 500 */
    DAPI_ERR_SHUTDOWN,         /* 503 + Retry-After: the server is stopping (SIGTERM) */
    DAPI_ERR_UPSTREAM_TIMEOUT, /* 504: the upstream did not answer in time — its trouble, not
                                  the query's own time limit (DAPI_ERR_TIMEOUT) */
    DAPI_ERR_PARAM,            /* 400: a bind parameter is missing, unknown or of the wrong
                                  type (the details name it) */
    DAPI_ERR__COUNT
};

/* Returns the HTTP status for a code (500 for unknown codes). */
int dapi_err_status(enum dapi_err e);
/* Returns a static, human-readable default message for a code. */
const char *dapi_err_message(enum dapi_err e);
/* Seconds for the Retry-After header of a code's answer; 0 = no header (only 429/503 have
 * one). */
int dapi_err_retry_after(enum dapi_err e);
/* The status of GET /results for a stored query whose execution failed with e. It differs
 * from dapi_err_status where the code describes the execution, not the request: a
 * NOT_FOUND (a file the SQL reads is missing) or a RATE met while running is the server's
 * failure, 500, not the client's 404/429. */
int dapi_err_exec_status(enum dapi_err e);

#ifdef __cplusplus
}
#endif

#endif
