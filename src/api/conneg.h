/* HTTP content negotiation and conditional requests for result pages (RFC 9110): which
 * content coding a client accepts (Accept-Encoding, 12.5.3) and whether its If-None-Match
 * (13.1.2) matches a page's ETag. Pure functions of header values: unit-tested alone. */
#ifndef DAPI_CONNEG_H
#define DAPI_CONNEG_H

#include <stddef.h>
#include <stdint.h>

/* Does an Accept-Encoding value accept the coding `coding` (e.g. "zstd")? Tokens are
 * case-insensitive; a coding's own entry wins over "*"; q=0 (0.0, 0.000) refuses; no
 * header (NULL) accepts nothing but identity here (a server may send identity anyway). A
 * value that cannot be parsed accepts nothing. */
int dapi_accepts_coding(const char *accept_encoding, const char *coding);

/* Which of the codings dapi sends an Accept-Encoding value accepts, parsed once: the bits
 * DAPI_CODING_ZSTD and DAPI_CODING_GZIP ("x-gzip" counts as gzip, RFC 9110 8.4.1.3), by the
 * rules of dapi_accepts_coding. dapi_accepts_gzip: the gzip bit alone. */
#define DAPI_CODING_ZSTD 1u
#define DAPI_CODING_GZIP 2u
unsigned dapi_accepted_codings(const char *accept_encoding);
int dapi_accepts_gzip(const char *accept_encoding);

/* Does an If-None-Match value match etag (an entity-tag as sent: "\"…\"" or W/"…")? "*"
 * matches any; otherwise a comma-separated list compared with the weak comparison (W/
 * ignored on both sides). An unparsable list matches nothing. */
int dapi_etag_matches(const char *if_none_match, const char *etag);

/* A page's strong ETag into out (at least 128 bytes): it names the result (id, never reused
 * by another result), the slug (its body names the slug), the page as the client reads it
 * and the representation (coding: NULL for identity, else e.g. "zstd"). */
void dapi_page_etag(char *out, size_t n, uint64_t result_id, const char *slug,
                    const char *page_text, const char *coding);

#endif
