#include "dapi/err.h"

static const struct {
    int status;
    const char *message;
} table[DAPI_ERR__COUNT] = {
    [DAPI_OK] = {200, "OK"},
    [DAPI_ERR_NOMEM] = {500, "Out of memory"},
    [DAPI_ERR_INVALID] = {400, "Invalid request"},
    [DAPI_ERR_TOO_LARGE] = {413, "Request too large"},
    [DAPI_ERR_AUTH] = {401, "Invalid API key"},
    [DAPI_ERR_FORBIDDEN] = {403, "Forbidden"},
    [DAPI_ERR_NOT_FOUND] = {404, "Not found"},
    [DAPI_ERR_SQL] = {400, "Invalid SQL query"},
    [DAPI_ERR_TIMEOUT] = {504, "Timed out"},
    [DAPI_ERR_BUSY] = {503, "Server busy, retry later"},
    [DAPI_ERR_RATE] = {429, "Too many requests"},
    [DAPI_ERR_IO] = {500, "Storage error"},
    [DAPI_ERR_UPSTREAM] = {502, "Upstream error"},
    [DAPI_ERR_INTERNAL] = {500, "Internal server error"},
};

int dapi_err_status(enum dapi_err e)
{
    if((unsigned)e >= DAPI_ERR__COUNT)
        return 500;
    return table[e].status;
}

const char *dapi_err_message(enum dapi_err e)
{
    if((unsigned)e >= DAPI_ERR__COUNT)
        return "Internal server error";
    return table[e].message;
}
