#include "upstream/retry.h"

#include <stdint.h>

static int retryable_status(int status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

int64_t dapi_retry_next(const struct dapi_retry_policy *p, const struct dapi_retry_in *in,
                        const char **reason)
{
    const char *why_dummy;
    if(!reason)
        reason = &why_dummy;
    if(in->transport == DAPI_OK && in->status < 400) {
        *reason = "success";
        return -1;
    }
    if(in->transport == DAPI_OK && !retryable_status(in->status)) {
        *reason = "the error is not transient";
        return -1;
    }
    if(in->transport != DAPI_OK && in->transport != DAPI_ERR_UPSTREAM &&
       in->transport != DAPI_ERR_TIMEOUT) {
        *reason = "the failure is not transient";
        return -1;
    }
    /* A request that may have been processed (a timeout, or a 5xx other than 503 which
     * promises it was not) is repeated only when that is harmless. */
    int maybe_done = in->transport == DAPI_ERR_TIMEOUT ||
                     (in->transport != DAPI_OK && in->request_sent) ||
                     (in->transport == DAPI_OK && in->status != 503 && in->status != 429 &&
                      in->status != 408);
    if(maybe_done && !in->idempotent) {
        *reason = "the request may have taken effect and is not safe to repeat";
        return -1;
    }
    if(in->attempt >= p->max_attempts) {
        *reason = "no attempts left";
        return -1;
    }
    int64_t delay;
    if(in->retry_after_ms >= 0) {
        delay = in->retry_after_ms;
    } else {
        /* full jitter: uniform in [0, min(max, base * 2^(attempt-1))] */
        int64_t ceiling = p->base_ms;
        for(int i = 1; i < in->attempt && ceiling < p->max_ms; i++)
            ceiling = ceiling > INT64_MAX / 2 ? INT64_MAX : ceiling * 2;
        if(ceiling > p->max_ms)
            ceiling = p->max_ms;
        delay = ceiling > 0 ? (int64_t)(in->random % (uint64_t)(ceiling + 1)) : 0;
    }
    if(delay > p->total_ms - in->elapsed_ms) { /* (no overflow: both sides are bounded) */
        *reason = "the retry deadline would pass";
        return -1;
    }
    *reason = in->transport == DAPI_ERR_TIMEOUT ? "timeout"
              : in->transport != DAPI_OK        ? "connection failure"
              : in->status == 429               ? "rate limited (429)"
                                                : "transient HTTP error";
    return delay;
}
