/* Rate limits: the in-process token bucket with injected time (never sleeps): burst, refill,
 * retry-after, two owners independent, eviction of idle buckets, rate parsing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "auth/ratelimit.h"
#include "t.h"

static void owner(unsigned char o[DAPI_KEY_HASH_LEN], int n)
{
    dapi_sha256(&n, sizeof n, o);
}

static void test_burst_then_refill(void)
{
    struct dapi_limiter *l = NULL;
    T_EQ_INT(dapi_limiter_local(&l, 0), DAPI_OK);
    unsigned char a[DAPI_KEY_HASH_LEN];
    owner(a, 1);
    struct dapi_limit_result r;
    int64_t now = 1000000;
    /* 2/s, burst 3: three at once, the fourth refused for 500 ms */
    for(int i = 0; i < 3; i++) {
        l->take(l, a, 2, 3, now, &r);
        T_EQ_INT(r.allowed, 1);
        T_EQ_INT(r.remaining, 2 - i);
    }
    l->take(l, a, 2, 3, now, &r);
    T_EQ_INT(r.allowed, 0);
    T_EQ_INT(r.retry_after_ms, 500);
    T_EQ_INT(r.remaining, 0);
    T_EQ_INT(r.reset_ms, 1500); /* 3 tokens at 2/s */
    now += 499;
    l->take(l, a, 2, 3, now, &r);
    T_EQ_INT(r.allowed, 0);
    T_EQ_INT(r.retry_after_ms, 1);
    now += 1;
    l->take(l, a, 2, 3, now, &r);
    T_EQ_INT(r.allowed, 1);
    T_EQ_INT(r.remaining, 0);
    /* a long idle time refills to the burst, never beyond */
    now += 3600 * 1000;
    for(int i = 0; i < 3; i++) {
        l->take(l, a, 2, 3, now, &r);
        T_EQ_INT(r.allowed, 1);
    }
    l->take(l, a, 2, 3, now, &r);
    T_EQ_INT(r.allowed, 0);
    /* time going backwards (another thread's older reading) adds nothing */
    l->take(l, a, 2, 3, now - 10000, &r);
    T_EQ_INT(r.allowed, 0);
    l->free(l);
}

static void test_two_owners_independent(void)
{
    struct dapi_limiter *l = NULL;
    T_EQ_INT(dapi_limiter_local(&l, 0), DAPI_OK);
    unsigned char a[DAPI_KEY_HASH_LEN], b[DAPI_KEY_HASH_LEN];
    owner(a, 1);
    owner(b, 2);
    struct dapi_limit_result r;
    int64_t now = 5000;
    int a_ok = 0, b_ok = 0;
    for(int i = 0; i < 10; i++) {
        l->take(l, a, 1, 2, now, &r);
        a_ok += r.allowed;
    }
    T_EQ_INT(a_ok, 2);
    for(int i = 0; i < 10; i++) {
        l->take(l, b, 1, 5, now, &r);
        b_ok += r.allowed;
    }
    T_EQ_INT(b_ok, 5); /* a exhausted did not touch b */
    l->take(l, a, 1, 2, now, &r);
    T_EQ_INT(r.allowed, 0);
    T_EQ_INT(r.retry_after_ms, 1000);
    T_EQ_INT(dapi_limiter_local_count(l), 2);
    l->free(l);
}

static void test_bounded_eviction(void)
{
    struct dapi_limiter *l = NULL;
    T_EQ_INT(dapi_limiter_local(&l, 4), DAPI_OK);
    unsigned char o[DAPI_KEY_HASH_LEN];
    struct dapi_limit_result r;
    int64_t now = 0;
    for(int i = 0; i < 4; i++) {
        owner(o, i);
        l->take(l, o, 1, 2, now, &r);
    }
    T_EQ_INT(dapi_limiter_local_count(l), 4);
    /* owner 0 empties its bucket: it must survive evictions while it is not full */
    owner(o, 0);
    l->take(l, o, 1, 2, now, &r);
    T_EQ_INT(r.remaining, 0);
    now += 1500; /* owners 1..3 are full again (idle), owner 0 is not */
    owner(o, 9);
    l->take(l, o, 1, 2, now, &r);
    T_EQ_INT(r.allowed, 1);
    T_CHECK(dapi_limiter_local_count(l) <= 4, "bounded: %zu buckets", dapi_limiter_local_count(l));
    owner(o, 0);
    l->take(l, o, 1, 2, now, &r);
    T_EQ_INT(r.allowed, 1);
    T_EQ_INT(r.remaining, 0); /* 1.5 tokens - 1: its state was kept */
    /* all busy: the fullest is dropped, the table stays bounded */
    for(int i = 100; i < 120; i++) {
        owner(o, i);
        l->take(l, o, 1, 100, now, &r);
        T_EQ_INT(r.allowed, 1);
    }
    T_CHECK(dapi_limiter_local_count(l) <= 4, "bounded: %zu buckets", dapi_limiter_local_count(l));
    l->free(l);
}

/* Threads taking from one bucket at one instant: exactly the burst is allowed. */
static struct dapi_limiter *shared;
static atomic_int shared_allowed;

static void *taker(void *arg)
{
    unsigned char o[DAPI_KEY_HASH_LEN];
    owner(o, 7);
    for(int i = 0; i < 500; i++) {
        struct dapi_limit_result r;
        shared->take(shared, o, 1, 1000, 42, &r);
        if(r.allowed)
            atomic_fetch_add(&shared_allowed, 1);
    }
    return arg;
}

static void test_threads(void)
{
    T_EQ_INT(dapi_limiter_local(&shared, 0), DAPI_OK);
    pthread_t t[4];
    for(int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, taker, NULL);
    for(int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    T_EQ_INT(atomic_load(&shared_allowed), 1000);
    shared->free(shared);
}

static void test_rate_parse(void)
{
    double r;
    int64_t n;
    T_EQ_INT(dapi_rate_parse("0", &r, &n), 0);
    T_CHECK(r == 0 && n == 0, "0 = no limit");
    T_EQ_INT(dapi_rate_parse("2/s", &r, &n), 0);
    T_CHECK(r == 2 && n == 2, "2/s");
    T_EQ_INT(dapi_rate_parse("120/min", &r, &n), 0);
    T_CHECK(r == 2 && n == 120, "120/min");
    T_EQ_INT(dapi_rate_parse("3600/h", &r, &n), 0);
    T_CHECK(r == 1 && n == 3600, "3600/h");
    static const char *bad[] = {"",    "x",    "2",   "2/",   "/s",   "-1/s",
                                "0/s", "02/s", "2/d", "2 /s", "2/s ", "99999999999/s"};
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        T_CHECK(dapi_rate_parse(bad[i], &r, &n) == -1, "'%s' refused", bad[i]);
}

int main(void)
{
    test_burst_then_refill();
    test_two_owners_independent();
    test_bounded_eviction();
    test_threads();
    test_rate_parse();
    T_DONE();
}
