/* Streaming JSON writer: appends JSON text to a dapi_buf. Exact for 64/128-bit integers,
 * shortest round-trip for doubles and floats. Every function returns DAPI_OK or the
 * buffer's sticky error (the buffer is then failed and empty, and stays so; see buf.h). */
#ifndef DAPI_JSON_H
#define DAPI_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

/* A JSON string: quotes, escapes (\" \\ \n \r \t \b \f, other controls as \u00XX), and
 * invalid UTF-8 sequences replaced by U+FFFD, so the output is always valid UTF-8. */
enum dapi_err dapi_json_str(struct dapi_buf *b, const char *s, size_t n);
enum dapi_err dapi_json_i64(struct dapi_buf *b, int64_t v);
enum dapi_err dapi_json_u64(struct dapi_buf *b, uint64_t v);
/* Two's-complement 128-bit integers given as (upper, lower) 64-bit halves, as DuckDB stores
 * HUGEINT / UHUGEINT. Written as exact decimal integers. */
enum dapi_err dapi_json_i128(struct dapi_buf *b, int64_t upper, uint64_t lower);
enum dapi_err dapi_json_u128(struct dapi_buf *b, uint64_t upper, uint64_t lower);
/* A fixed-point DECIMAL: the integer (upper, lower) divided by 10^scale, written as a JSON
 * number with exactly `scale` fraction digits (e.g. -5 with scale 2 -> -0.05). */
enum dapi_err dapi_json_decimal(struct dapi_buf *b, int64_t upper, uint64_t lower, unsigned scale);
/* Shortest text that parses back to the same double (at most 17 significant digits);
 * NaN and +-Inf become null. An integral value keeps a ".0" (3.0 -> 3.0) so clients can tell
 * it from an integer; very large or small magnitudes use an exponent (1e+300, 5e-324). */
enum dapi_err dapi_json_double(struct dapi_buf *b, double v);
/* Same for a float, shortest text that round-trips through float (1.1f -> 1.1). */
enum dapi_err dapi_json_float(struct dapi_buf *b, float v);
/* A JSON string holding the standard base64 (RFC 4648, with padding) of n bytes. */
enum dapi_err dapi_json_base64(struct dapi_buf *b, const void *p, size_t n);

#endif
