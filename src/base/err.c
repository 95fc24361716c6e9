#include "dapi/err.h"

/* The one path from an error code to its answer. Columns:
 *   status       the HTTP status in the create/generic context (dapi_respond_err)
 *   exec_status  the status when a stored query's execution failed with the code (GET
 *                /results of a failed query): differs only for NOT_FOUND and RATE, which
 *                there describe the execution, not the request — a server failure, 500
 *   message      the client's "error"
 *   retry_after  seconds for Retry-After, 0 = no header (only on 429 and 503) */
static const struct {
    int status;
    int exec_status;
    const char *message;
    int retry_after;
} table[DAPI_ERR__COUNT] = {
    [DAPI_OK] = {200, 200, "OK", 0},
    [DAPI_ERR_NOMEM] = {500, 500, "Out of memory", 0},
    [DAPI_ERR_INVALID] = {400, 400, "Invalid request", 0},
    [DAPI_ERR_TOO_LARGE] = {413, 413, "Request too large", 0},
    [DAPI_ERR_AUTH] = {401, 401, "Invalid API key", 0},
    [DAPI_ERR_FORBIDDEN] = {403, 403, "Forbidden", 0},
    [DAPI_ERR_NOT_FOUND] = {404, 500, "Not found", 0},
    [DAPI_ERR_SQL] = {400, 400, "Invalid SQL query", 0},
    [DAPI_ERR_TIMEOUT] = {504, 504, "Timed out", 0},
    [DAPI_ERR_BUSY] = {503, 503, "Server busy, retry later", 5},
    [DAPI_ERR_RATE] = {429, 500, "Too many requests", 5},
    [DAPI_ERR_IO] = {500, 500, "Storage error", 0},
    [DAPI_ERR_UPSTREAM] = {502, 502, "Upstream error", 0},
    [DAPI_ERR_INTERNAL] = {500, 500, "Internal server error", 0},
    [DAPI_ERR_SHUTDOWN] = {503, 503, "Server shutting down", 5},
    [DAPI_ERR_UPSTREAM_TIMEOUT] = {504, 504, "Upstream did not answer in time", 0},
    [DAPI_ERR_PARAM] = {400, 400, "Invalid query parameter", 0},
};

/* Unknown codes answer as DAPI_ERR_INTERNAL. */
static enum dapi_err known(enum dapi_err e)
{
    return (unsigned)e < DAPI_ERR__COUNT ? e : DAPI_ERR_INTERNAL;
}

int dapi_err_status(enum dapi_err e)
{
    return table[known(e)].status;
}

int dapi_err_exec_status(enum dapi_err e)
{
    return table[known(e)].exec_status;
}

const char *dapi_err_message(enum dapi_err e)
{
    return table[known(e)].message;
}

int dapi_err_retry_after(enum dapi_err e)
{
    return table[known(e)].retry_after;
}
