/* The retry policy (src/upstream/retry.c): which outcomes are retried, the full-jitter
 * backoff bounds, Retry-After, the total deadline and the idempotency rule. Pure function:
 * time and randomness are inputs, nothing sleeps. */
#include <stdint.h>
#include <stdlib.h>

#include "upstream/retry.h"
#include "t.h"

static const struct dapi_retry_policy POL = {
    .max_attempts = 5, .base_ms = 100, .max_ms = 2000, .total_ms = 30000};

/* An input for a failed first attempt: idempotent, no Retry-After, nothing elapsed. */
static struct dapi_retry_in in_http(int status)
{
    return (struct dapi_retry_in){.attempt = 1,
                                  .transport = DAPI_OK,
                                  .status = status,
                                  .request_sent = 1,
                                  .retry_after_ms = -1,
                                  .elapsed_ms = 0,
                                  .idempotent = 1,
                                  .random = 0};
}

static struct dapi_retry_in in_transport(enum dapi_err e, int sent)
{
    struct dapi_retry_in in = in_http(0);
    in.transport = e;
    in.request_sent = sent;
    return in;
}

/* Calls the policy and checks that reason is a non-empty string (and that NULL is allowed). */
static int64_t next(const struct dapi_retry_policy *p, const struct dapi_retry_in *in,
                    const char *what)
{
    const char *reason = NULL;
    int64_t d = dapi_retry_next(p, in, &reason);
    T_CHECK(reason && reason[0], "%s: reason is set (got %s)", what, reason ? "\"\"" : "NULL");
    int64_t d2 = dapi_retry_next(p, in, NULL);
    T_CHECK(d == d2, "%s: reason=NULL gives the same answer (%lld vs %lld)", what, (long long)d,
            (long long)d2);
    return d;
}

static void test_http_statuses(void)
{
    static const struct {
        int status;
        int retry; /* 1 = a delay (>= 0), 0 = give up */
    } cases[] = {
        {200, 0}, {201, 0}, {204, 0}, {301, 0}, {304, 0}, {399, 0}, {400, 0}, {401, 0},
        {403, 0}, {404, 0}, {409, 0}, {422, 0}, {405, 0}, {410, 0}, {501, 0}, {505, 0},
        {408, 1}, {429, 1}, {500, 1}, {502, 1}, {503, 1}, {504, 1},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "HTTP %d", cases[i].status);
        struct dapi_retry_in in = in_http(cases[i].status);
        int64_t d = next(&POL, &in, what);
        if(cases[i].retry)
            T_CHECK(d >= 0 && d <= POL.base_ms, "%s: retried within the first ceiling (got %lld)",
                    what, (long long)d);
        else
            T_CHECK(d == -1, "%s: not retried (got %lld)", what, (long long)d);
    }
}

static void test_transport_errors(void)
{
    static const struct {
        enum dapi_err e;
        int sent;
        int retry;
    } cases[] = {
        {DAPI_ERR_UPSTREAM, 0, 1},  {DAPI_ERR_UPSTREAM, 1, 1},  {DAPI_ERR_TIMEOUT, 0, 1},
        {DAPI_ERR_TIMEOUT, 1, 1},   {DAPI_ERR_IO, 0, 0},        {DAPI_ERR_IO, 1, 0},
        {DAPI_ERR_TOO_LARGE, 0, 0}, {DAPI_ERR_TOO_LARGE, 1, 0}, {DAPI_ERR_NOMEM, 0, 0},
        {DAPI_ERR_INTERNAL, 0, 0},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "transport %d sent=%d", (int)cases[i].e, cases[i].sent);
        struct dapi_retry_in in = in_transport(cases[i].e, cases[i].sent);
        int64_t d = next(&POL, &in, what);
        if(cases[i].retry)
            T_CHECK(d >= 0 && d <= POL.base_ms, "%s: retried (got %lld)", what, (long long)d);
        else
            T_CHECK(d == -1, "%s: not retried (got %lld)", what, (long long)d);
    }
}

static void test_attempts_exhausted(void)
{
    static const struct {
        int max, attempt;
        int retry;
    } cases[] = {
        {1, 1, 0}, {2, 1, 1}, {2, 2, 0}, {5, 4, 1}, {5, 5, 0}, {5, 6, 0}, {3, 100, 0},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_retry_policy p = POL;
        p.max_attempts = cases[i].max;
        /* Both a status and a transport failure; Retry-After does not bypass the limit. */
        struct dapi_retry_in ins[3] = {in_http(503), in_transport(DAPI_ERR_UPSTREAM, 0),
                                       in_http(429)};
        ins[2].retry_after_ms = 10;
        for(int k = 0; k < 3; k++) {
            char what[80];
            snprintf(what, sizeof what, "max=%d attempt=%d input %d", cases[i].max,
                     cases[i].attempt, k);
            ins[k].attempt = cases[i].attempt;
            int64_t d = next(&p, &ins[k], what);
            if(cases[i].retry)
                T_CHECK(d >= 0, "%s: retried (got %lld)", what, (long long)d);
            else
                T_CHECK(d == -1, "%s: attempts exhausted (got %lld)", what, (long long)d);
        }
    }
}

static void test_retry_after(void)
{
    static const struct {
        int status;
        int64_t retry_after, elapsed;
        int64_t want;
    } cases[] = {
        {503, 0, 0, 0},
        {503, 1, 0, 1},
        {429, 1500, 0, 1500},
        /* above max_ms: Retry-After wins over the backoff cap */
        {429, 7000, 0, 7000},
        {503, 5000, 25000, 5000}, /* lands exactly on the deadline: allowed */
        {503, 5001, 25000, -1},   /* one past it */
        {429, 60000, 0, -1},      /* longer than the whole budget */
        {503, 0, 30000, 0},       /* at the deadline with no wait */
        {503, 0, 30001, -1},      /* already past */
        {408, 250, 100, 250},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "status %d Retry-After %lld elapsed %lld", cases[i].status,
                 (long long)cases[i].retry_after, (long long)cases[i].elapsed);
        struct dapi_retry_in in = in_http(cases[i].status);
        in.retry_after_ms = cases[i].retry_after;
        in.elapsed_ms = cases[i].elapsed;
        /* the random number must not matter when Retry-After is given */
        for(uint64_t r = 0; r < 3; r++) {
            in.random = r * 7919 + 13;
            int64_t d = next(&POL, &in, what);
            T_CHECK(d == cases[i].want, "%s: got %lld, want %lld", what, (long long)d,
                    (long long)cases[i].want);
        }
    }
}

static void test_deadline_with_jitter(void)
{
    /* No Retry-After: the jittered delay must still fit the budget. */
    struct dapi_retry_in in = in_http(503);
    in.elapsed_ms = POL.total_ms - 50; /* 50 ms left; the first ceiling is 100 ms */
    int retried = 0, gave_up = 0;
    for(uint64_t r = 0; r <= 100; r++) {
        in.random = r;
        int64_t d = next(&POL, &in, "deadline jitter");
        if(d >= 0) {
            retried++;
            T_CHECK(in.elapsed_ms + d <= POL.total_ms,
                    "random %llu: delay %lld passes the deadline", (unsigned long long)r,
                    (long long)d);
            T_CHECK(d == (int64_t)r, "random %llu: delay %lld", (unsigned long long)r,
                    (long long)d);
        } else {
            gave_up++;
        }
    }
    T_EQ_INT(retried, 51); /* delays 0..50 fit */
    T_EQ_INT(gave_up, 50); /* 51..100 do not */
}

static int64_t expected_ceiling(const struct dapi_retry_policy *p, int attempt)
{
    int64_t c = p->base_ms;
    for(int i = 1; i < attempt; i++) {
        if(c >= p->max_ms)
            break;
        c *= 2;
    }
    return c < p->max_ms ? c : p->max_ms;
}

static void test_full_jitter(void)
{
    static const struct dapi_retry_policy pols[] = {
        {.max_attempts = 10, .base_ms = 100, .max_ms = 2000, .total_ms = INT64_MAX / 2},
        {.max_attempts = 10, .base_ms = 1, .max_ms = 1000, .total_ms = INT64_MAX / 2},
        {.max_attempts = 10, .base_ms = 250, .max_ms = 250, .total_ms = INT64_MAX / 2},
        {.max_attempts = 10, .base_ms = 300, .max_ms = 1000, .total_ms = INT64_MAX / 2},
    };
    /* Known ceilings for the first policy, spelled out so a wrong formula is caught even if
     * expected_ceiling() shared the mistake. */
    static const int64_t want0[] = {0, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000};
    for(int k = 1; k <= 9; k++)
        T_EQ_INT(expected_ceiling(&pols[0], k), want0[k]);
    T_EQ_INT(expected_ceiling(&pols[3], 3), 1000); /* 300, 600, then capped (not 1200) */

    for(size_t pi = 0; pi < sizeof pols / sizeof pols[0]; pi++) {
        const struct dapi_retry_policy *p = &pols[pi];
        for(int k = 1; k < p->max_attempts; k++) {
            int64_t ceil = expected_ceiling(p, k);
            int out_of_range = 0, hit_zero = 0, hit_ceil = 0;
            int64_t lo = INT64_MAX, hi = -1;
            struct dapi_retry_in in = in_transport(DAPI_ERR_UPSTREAM, 0);
            in.attempt = k;
            for(uint64_t r = 0; r <= 10001; r++) {
                in.random = r <= 10000 ? r : UINT64_MAX;
                const char *reason = NULL;
                int64_t d = dapi_retry_next(p, &in, &reason);
                if(d < 0 || d > ceil)
                    out_of_range++;
                if(d < lo)
                    lo = d;
                if(d > hi)
                    hi = d;
                if(!reason || !reason[0])
                    out_of_range++;
            }
            T_CHECK(out_of_range == 0, "policy %zu attempt %d: %d delays outside [0, %lld]", pi, k,
                    out_of_range, (long long)ceil);
            /* both ends are reachable */
            uint64_t m = (uint64_t)ceil + 1;
            in.random = m * 12345; /* random % (ceil+1) == 0 */
            int64_t d0 = dapi_retry_next(p, &in, NULL);
            hit_zero = d0 == 0;
            in.random = m * 777 + (uint64_t)ceil; /* random % (ceil+1) == ceil */
            int64_t d1 = dapi_retry_next(p, &in, NULL);
            hit_ceil = d1 == ceil;
            T_CHECK(hit_zero, "policy %zu attempt %d: delay 0 reachable (got %lld)", pi, k,
                    (long long)d0);
            T_CHECK(hit_ceil, "policy %zu attempt %d: delay %lld reachable (got %lld)", pi, k,
                    (long long)ceil, (long long)d1);
            T_CHECK(lo == 0 && hi == ceil,
                    "policy %zu attempt %d: sweep covers [%lld, %lld], want [0, %lld]", pi, k,
                    (long long)lo, (long long)hi, (long long)ceil);
        }
    }

    /* The delay is exactly random % (ceiling + 1) (uniform over the range). */
    struct dapi_retry_in in = in_http(502);
    in.attempt = 3; /* ceiling 400 */
    static const uint64_t rs[] = {0, 1, 399, 400, 401, 802, 123456789, UINT64_MAX};
    for(size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        in.random = rs[i];
        T_EQ_INT(dapi_retry_next(&POL, &in, NULL), (int64_t)(rs[i] % 401));
    }

    /* A huge attempt number saturates at max_ms instead of overflowing. */
    struct dapi_retry_policy big = {
        .max_attempts = 1000, .base_ms = 100, .max_ms = 2000, .total_ms = INT64_MAX / 2};
    in.attempt = 500;
    in.random = UINT64_MAX;
    int64_t d = dapi_retry_next(&big, &in, NULL);
    T_CHECK(d >= 0 && d <= 2000, "attempt 500 delay %lld within [0, 2000]", (long long)d);
    in.random = 2000;
    T_EQ_INT(dapi_retry_next(&big, &in, NULL), 2000);
}

static void test_idempotency(void)
{
    static const struct {
        const char *what;
        enum dapi_err transport;
        int status, sent;
        int retry_nonidem; /* retried when the request is not idempotent */
    } cases[] = {
        {"timeout, sent", DAPI_ERR_TIMEOUT, 0, 1, 0},
        {"timeout, not sent", DAPI_ERR_TIMEOUT, 0, 0, 0},
        {"transport error after sending", DAPI_ERR_UPSTREAM, 0, 1, 0},
        {"HTTP 500", DAPI_OK, 500, 1, 0},
        {"HTTP 502", DAPI_OK, 502, 1, 0},
        {"HTTP 504", DAPI_OK, 504, 1, 0},
        {"HTTP 503", DAPI_OK, 503, 1, 1},
        {"HTTP 429", DAPI_OK, 429, 1, 1},
        {"HTTP 408", DAPI_OK, 408, 1, 1},
        {"connection refused (not sent)", DAPI_ERR_UPSTREAM, 0, 0, 1},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for(int idem = 0; idem <= 1; idem++) {
            char what[96];
            snprintf(what, sizeof what, "%s, idempotent=%d", cases[i].what, idem);
            struct dapi_retry_in in = in_http(cases[i].status);
            in.transport = cases[i].transport;
            in.request_sent = cases[i].sent;
            in.idempotent = idem;
            in.random = 42;
            int64_t d = next(&POL, &in, what);
            int want = idem ? 1 : cases[i].retry_nonidem;
            if(want)
                T_CHECK(d == 42, "%s: retried after 42 ms (got %lld)", what, (long long)d);
            else
                T_CHECK(d == -1, "%s: not retried (got %lld)", what, (long long)d);
        }
    }
    /* A Retry-After on a non-idempotent 500 does not make it safe. */
    struct dapi_retry_in in = in_http(500);
    in.idempotent = 0;
    in.retry_after_ms = 10;
    T_EQ_INT(next(&POL, &in, "non-idempotent 500 with Retry-After"), -1);
}

static void test_reasons_distinguish(void)
{
    /* The reason tells success, permanent failure, exhaustion, unsafe and deadline apart. */
    const char *r_ok = NULL, *r_perm = NULL, *r_exh = NULL, *r_unsafe = NULL, *r_dead = NULL,
               *r_retry = NULL;
    struct dapi_retry_in in = in_http(200);
    T_EQ_INT(dapi_retry_next(&POL, &in, &r_ok), -1);
    in = in_http(404);
    T_EQ_INT(dapi_retry_next(&POL, &in, &r_perm), -1);
    in = in_http(503);
    in.attempt = POL.max_attempts;
    T_EQ_INT(dapi_retry_next(&POL, &in, &r_exh), -1);
    in = in_http(500);
    in.idempotent = 0;
    T_EQ_INT(dapi_retry_next(&POL, &in, &r_unsafe), -1);
    in = in_http(503);
    in.retry_after_ms = POL.total_ms + 1;
    T_EQ_INT(dapi_retry_next(&POL, &in, &r_dead), -1);
    in = in_http(503);
    T_CHECK(dapi_retry_next(&POL, &in, &r_retry) >= 0, "503 retried");
    const char *all[] = {r_ok, r_perm, r_exh, r_unsafe, r_dead, r_retry};
    for(size_t i = 0; i < 6; i++) {
        T_CHECK(all[i] && all[i][0], "reason %zu set", i);
        for(size_t j = 0; j < i; j++)
            T_CHECK(!all[i] || !all[j] || strcmp(all[i], all[j]) != 0,
                    "reasons %zu and %zu differ (both \"%s\")", j, i, all[i] ? all[i] : "");
    }
}

int main(void)
{
    test_http_statuses();
    test_transport_errors();
    test_attempts_exhausted();
    test_retry_after();
    test_deadline_with_jitter();
    test_full_jitter();
    test_idempotency();
    test_reasons_distinguish();
    T_DONE();
}
