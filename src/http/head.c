/* The checks of a request head that libmicrohttpd leaves to us (see head.h); no library here. */
#include "http/head.h"

#include <string.h>
#include <strings.h>

int dapi_http_parse_length(const char *v, uint64_t *out)
{
    uint64_t n = 0;
    int huge = 0;
    if(!v || !*v)
        return DAPI_LEN_BAD;
    for(; *v; v++) {
        if(*v < '0' || *v > '9')
            return DAPI_LEN_BAD;
        unsigned d = (unsigned)(*v - '0');
        if(n > (UINT64_MAX - d) / 10)
            huge = 1;
        else
            n = n * 10 + d;
    }
    *out = n;
    return huge ? DAPI_LEN_HUGE : DAPI_LEN_OK;
}

void dapi_http_head_add(struct dapi_head_scan *hs, int header, const char *key, size_t key_size,
                        const char *value, size_t value_size)
{
    size_t klen = strlen(key), vlen = value ? strlen(value) : 0;
    hs->nul |= klen != key_size || vlen != value_size;
    if(!header)
        return;
    hs->header_bytes += key_size + value_size + 4;
    hs->api_keys += strcasecmp(key, "x-api-key") == 0;
    hs->authorizations += strcasecmp(key, "Authorization") == 0;
    if(strcasecmp(key, "Expect") == 0 && (!value || strcasecmp(value, "100-continue") != 0))
        hs->expect_other = 1;
    if(strcasecmp(key, "Content-Length") == 0) {
        uint64_t n = 0;
        int st = dapi_http_parse_length(value, &n);
        if(st > hs->length_state)
            hs->length_state = st;
        if(st == DAPI_LEN_OK && hs->lengths && n != hs->length)
            hs->lengths_differ = 1;
        if(st == DAPI_LEN_OK)
            hs->length = n;
        hs->lengths++;
    } else if(strcasecmp(key, "Transfer-Encoding") == 0) {
        if(!value || strcasecmp(value, "chunked") != 0)
            hs->coding_unknown = 1;
        hs->codings++;
    }
}

const char *dapi_http_head_error(const struct dapi_head_scan *scan, int framing_only,
                                 size_t max_header_bytes, int *status)
{
    const struct dapi_head_scan hs = *scan;
    *status = 400;
    if(hs.lengths && hs.codings)
        return "Content-Length and Transfer-Encoding together";
    if(hs.coding_unknown || hs.codings > 1)
        return "Unsupported Transfer-Encoding";
    if(hs.length_state == DAPI_LEN_HUGE && hs.lengths == 1) {
        *status = 413;
        return "Request body too large";
    }
    if(hs.length_state != DAPI_LEN_OK || hs.lengths_differ)
        return "Invalid Content-Length";
    if(framing_only)
        return NULL;
    if(hs.header_bytes > max_header_bytes) {
        *status = 431;
        return "Request headers too large";
    }
    if(hs.nul)
        return "Bad request: a NUL byte in a header or the query string";
    if(hs.api_keys > 1)
        return "Bad request: more than one x-api-key header";
    if(hs.authorizations > 1)
        return "Bad request: more than one Authorization header";
    if(hs.expect_other) {
        *status = 417;
        return "Expectation failed: only Expect: 100-continue is supported";
    }
    return NULL;
}
