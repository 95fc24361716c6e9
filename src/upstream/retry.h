/* The retry policy, as a pure function of what happened (after curl's tool_operate.c
 * retrycheck): which failures are worth another attempt, and how long to wait. Exponential
 * backoff with full jitter, honouring Retry-After, within a total deadline. */
#ifndef DAPI_RETRY_H
#define DAPI_RETRY_H

#include <stdint.h>
#include "dapi/err.h"

struct dapi_retry_policy {
    int max_attempts; /* total attempts, first included (>= 1) */
    int64_t base_ms;  /* first backoff ceiling */
    int64_t max_ms;   /* backoff ceiling cap */
    int64_t total_ms; /* no attempt starts after this much time since the first */
};

struct dapi_retry_in {
    int attempt;             /* the attempt that just failed, 1-based */
    enum dapi_err transport; /* DAPI_OK if an HTTP response arrived, else the transport error */
    int status;              /* HTTP status when transport == DAPI_OK */
    int request_sent;        /* transport failures: the request had been sent */
    int64_t retry_after_ms;  /* from the response, -1 if none */
    int64_t elapsed_ms;      /* since the first attempt started */
    int idempotent;          /* repeating the request cannot create something twice */
    uint64_t random;         /* a random number for the jitter */
};

/* Returns the delay in ms before the next attempt, or -1 to give up. *reason (if not NULL)
 * is set to a static description of why it retries or gives up. */
int64_t dapi_retry_next(const struct dapi_retry_policy *p, const struct dapi_retry_in *in,
                        const char **reason);

#endif
