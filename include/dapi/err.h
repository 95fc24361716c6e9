/* dapi's one error enum. Functions that can fail return `enum dapi_err` (DAPI_OK == 0) so
 * callers write `if(result)`. Each code maps to one HTTP status and one default message
 * (dapi_err_status / dapi_err_message), kept in a single table in src/base/err.c. */
#ifndef DAPI_ERR_H
#define DAPI_ERR_H

enum dapi_err {
    DAPI_OK = 0,
    DAPI_ERR_NOMEM,       /* 500: allocation failed */
    DAPI_ERR_INVALID,     /* 400: bad input from the client */
    DAPI_ERR_TOO_LARGE,   /* 413: a size limit was crossed */
    DAPI_ERR_AUTH,        /* 401: missing or unknown key */
    DAPI_ERR_FORBIDDEN,   /* 403 */
    DAPI_ERR_NOT_FOUND,   /* 404 */
    DAPI_ERR_SQL,         /* 400: the SQL is not accepted (syntax, binder, refused kind) */
    DAPI_ERR_TIMEOUT,     /* 504: a time limit was crossed */
    DAPI_ERR_BUSY,        /* 503: no capacity now, retry later */
    DAPI_ERR_RATE,        /* 429 */
    DAPI_ERR_IO,          /* 500: file system */
    DAPI_ERR_UPSTREAM,    /* 502 */
    DAPI_ERR_INTERNAL,    /* 500 */
    DAPI_ERR__COUNT
};

/* Returns the HTTP status for a code (500 for unknown codes). */
int dapi_err_status(enum dapi_err e);
/* Returns a static, human-readable default message for a code. */
const char *dapi_err_message(enum dapi_err e);

#endif
