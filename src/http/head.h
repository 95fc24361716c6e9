/* The checks of a request head that libmicrohttpd 0.9.75 leaves to us, made in one pass over
 * its headers and query-string arguments when the head is complete, before any handler runs:
 * how the body is framed, the headers' size, NUL bytes, and repeated credential headers. */
#ifndef DAPI_HTTP_HEAD_H
#define DAPI_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>

enum { DAPI_LEN_OK, DAPI_LEN_BAD, DAPI_LEN_HUGE };

/* A Content-Length value: digits only (no sign, no list). DAPI_LEN_HUGE: digits, but more than
 * 64 bits can hold. */
int dapi_http_parse_length(const char *v, uint64_t *out);

/* The request head's headers and query-string arguments, gathered in one pass (http.c walks
 * them through libmicrohttpd and hands each to dapi_http_head_add). Start from {0}. */
struct dapi_head_scan {
    size_t header_bytes;
    int nul;                      /* a name or value holds a NUL byte */
    int api_keys, authorizations; /* credential headers */
    int expect_other;             /* an Expect other than 100-continue */
    int lengths, codings;         /* Content-Length / Transfer-Encoding headers */
    int length_state;             /* DAPI_LEN_* of the worst Content-Length */
    int lengths_differ;
    int coding_unknown; /* a Transfer-Encoding other than exactly "chunked" */
    uint64_t length;
};

/* One name and value (header: a header, else a query-string argument), with the sizes
 * libmicrohttpd reports (a NUL inside makes them differ from the strings' lengths). */
void dapi_http_head_add(struct dapi_head_scan *hs, int header, const char *key, size_t key_size,
                        const char *value, size_t value_size);

/* What is wrong with the request head, or NULL; *status says how to answer. framing_only:
 * the first point only.
 *  - The way the request delimits its body. Once that is ambiguous, nothing after the head
 *    can be trusted to belong to this request (the classic request-smuggling confusion
 *    between a proxy and a server). libmicrohttpd 0.9.75 alone would use Transfer-Encoding
 *    and ignore Content-Length, wait forever for the end of a body in a coding it cannot
 *    decode, and silently use the first of two different Content-Lengths.
 *  - The headers' size, then a NUL byte in a name or value (%00 in the query string;
 *    libmicrohttpd itself cuts a header line at a raw one, invisibly): everything after it
 *    would be invisible to the handlers, which read C strings, while a proxy in front may
 *    have read the whole value.
 *  - Two x-api-key or Authorization headers: which one a proxy in front checked is not
 *    known, so none is used.
 *  - An Expect other than 100-continue (417, as RFC 9110 allows: libmicrohttpd ignores it). */
const char *dapi_http_head_error(const struct dapi_head_scan *scan, int framing_only,
                                 size_t max_header_bytes, int *status);

#endif
