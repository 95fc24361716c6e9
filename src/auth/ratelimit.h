/* Rate limits: a token bucket per principal (its owner bytes), with the principal's rate and
 * burst. One small interface, struct dapi_limiter, so that a shared store can replace the
 * in-process table when dapi runs as several instances; the API only calls take.
 *
 * Time is passed in (now_ms, any monotonic millisecond clock), never read here: tests move it
 * by assignment. */
#ifndef DAPI_RATELIMIT_H
#define DAPI_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include "auth/keys.h"
#include "dapi/err.h"

struct dapi_limit_result {
    int allowed;            /* 1: go on; 0: over the limit (429) */
    int64_t retry_after_ms; /* when refused: until one request is allowed again (> 0) */
    int64_t remaining;      /* whole requests left in the bucket after this one */
    int64_t reset_ms;       /* until the bucket is full again */
};

struct dapi_limiter {
    /* Takes one request from owner's bucket (rate: requests per second, > 0; burst: bucket
     * size, >= 1). A bucket starts full. Thread-safe. */
    void (*take)(struct dapi_limiter *l, const unsigned char owner[DAPI_KEY_HASH_LEN], double rate,
                 double burst, int64_t now_ms, struct dapi_limit_result *out);
    void (*free)(struct dapi_limiter *l);
};

/* The in-process limiter: a hash table of at most max_buckets buckets (0 = 65536). When it is
 * full, buckets that have refilled completely (idle ones: forgetting them changes nothing)
 * are dropped; if none has, the fullest one is. */
enum dapi_err dapi_limiter_local(struct dapi_limiter **out, size_t max_buckets);
/* Buckets held now (for tests). */
size_t dapi_limiter_local_count(struct dapi_limiter *l);

/* Parses a rate: "N/s", "N/min", "N/h" (N a positive integer, also "N/sec", "N/m",
 * "N/hour"), or "0" (no limit). *per_s receives requests per second (0 for "0") and *count
 * the N (the natural burst: a window's quota). Returns 0, or -1 if s is not a rate. */
int dapi_rate_parse(const char *s, double *per_s, int64_t *count);

#endif
