/* Fault injection rules for the emulator (src/emu/faults.c): parsing, matching, first=N,
 * rate= with a seed, combining several rules, thread safety. */
#include <pthread.h>
#include <stdlib.h>

#include "emu/faults.h"
#include "t.h"

static struct dapi_faults *parse_ok(const char *spec)
{
    struct dapi_faults *f = (struct dapi_faults *)1;
    char err[256] = "";
    int rc = dapi_faults_parse(&f, spec, err, sizeof err);
    T_CHECK(rc == 0, "parse \"%s\" succeeds (err: %s)", spec ? spec : "(null)", err);
    T_CHECK(rc != 0 || f != NULL, "parse \"%s\" returns an object", spec ? spec : "(null)");
    return rc == 0 ? f : NULL;
}

static void match(struct dapi_faults *f, const char *m, const char *p, struct dapi_fault_action *a)
{
    /* pre-fill with junk: match must reset every field */
    memset(a, 0x5a, sizeof *a);
    dapi_faults_match(f, m, p, a);
}

static int is_none(const struct dapi_fault_action *a)
{
    return a->latency_ms == 0 && a->status == 0 && a->retry_after == -1 && a->body[0] == '\0' &&
           a->expire == 0;
}

static void test_no_faults(void)
{
    const char *specs[] = {NULL, ""};
    for(int i = 0; i < 2; i++) {
        struct dapi_faults *f = parse_ok(specs[i]);
        struct dapi_fault_action a;
        for(int k = 0; k < 3; k++) {
            match(f, "GET", "/api/v1/runs", &a);
            T_CHECK(is_none(&a), "spec %d: no action (status %d retry_after %d latency %lld)", i,
                    a.status, a.retry_after, (long long)a.latency_ms);
        }
        dapi_faults_free(f);
    }
    /* A NULL object (no faults configured at all) also gives a zeroed action. */
    struct dapi_fault_action a;
    match(NULL, "GET", "/x", &a);
    T_CHECK(is_none(&a), "NULL faults: no action");
    dapi_faults_free(NULL);
}

static void test_parse_keys(void)
{
    static const struct {
        const char *spec;
        int64_t latency;
        int status, retry_after;
        const char *body;
        int expire;
    } cases[] = {
        {"status=503", 0, 503, -1, "", 0},
        {"status=100", 0, 100, -1, "", 0},
        {"status=599", 0, 599, -1, "", 0},
        {"status=429,retry_after=7", 0, 429, 7, "", 0},
        {"retry_after=3,status=503", 0, 503, 3, "", 0},
        {"latency_ms=250", 250, 0, -1, "", 0},
        {"latency_ms=0", 0, 0, -1, "", 0},
        {"body=truncate", 0, 0, -1, "truncate", 0},
        {"body=garbage", 0, 0, -1, "garbage", 0},
        {"body=wrongtype", 0, 0, -1, "wrongtype", 0},
        {"body=empty", 0, 0, -1, "empty", 0},
        {"expire=1", 0, 0, -1, "", 1},
        {"expire=0", 0, 0, -1, "", 0},
        {"seed=42,status=500", 0, 500, -1, "", 0},
        {"rate=1,status=502", 0, 502, -1, "", 0},
        {"rate=1.0,status=502", 0, 502, -1, "", 0},
        {"first=5,status=500", 0, 500, -1, "", 0},
        {"path=/api,method=GET,status=404,latency_ms=5,body=garbage,expire=1", 5, 404, -1,
         "garbage", 1},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_faults *f = parse_ok(cases[i].spec);
        if(!f)
            continue;
        struct dapi_fault_action a;
        match(f, "GET", "/api/x", &a);
        T_CHECK(a.latency_ms == cases[i].latency, "\"%s\": latency %lld", cases[i].spec,
                (long long)a.latency_ms);
        T_CHECK(a.status == cases[i].status, "\"%s\": status %d", cases[i].spec, a.status);
        T_CHECK(a.retry_after == cases[i].retry_after, "\"%s\": retry_after %d", cases[i].spec,
                a.retry_after);
        T_CHECK(strcmp(a.body, cases[i].body) == 0, "\"%s\": body [%.16s]", cases[i].spec, a.body);
        T_CHECK(a.expire == cases[i].expire, "\"%s\": expire %d", cases[i].spec, a.expire);
        dapi_faults_free(f);
    }
}

static void test_parse_errors(void)
{
    static const struct {
        const char *spec;
        const char *named; /* the error message must contain this */
    } cases[] = {
        {"status=99", "status=99"},
        {"status=600", "status=600"},
        {"status=abc", "status=abc"},
        {"status=", "status="},
        {"body=nope", "body=nope"},
        {"body=", "body="},
        {"rate=1.5", "rate=1.5"},
        {"rate=-0.1", "rate=-0.1"},
        {"rate=abc", "rate=abc"},
        {"rate=", "rate="},
        {"rate=0.5x", "rate=0.5x"},
        {"rate=nan", "rate=nan"},
        {"rate=inf", "rate=inf"},
        {"first=-1", "first=-1"},
        {"first=x", "first=x"},
        {"first=3x", "first=3x"},
        {"latency_ms=-5", "latency_ms=-5"},
        {"retry_after=-1", "retry_after=-1"},
        {"seed=-1", "seed=-1"},
        {"nokey", "nokey"},
        {"bogus=1", "bogus=1"},
        {"status=500,bogus=1", "bogus=1"},
        {"status=500;nokey", "nokey"},
        {"path=/a;status=700", "status=700"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_faults *f = (struct dapi_faults *)1;
        char err[256] = "";
        int rc = dapi_faults_parse(&f, cases[i].spec, err, sizeof err);
        T_CHECK(rc == -1, "\"%s\" refused (rc %d)", cases[i].spec, rc);
        T_CHECK(f == NULL, "\"%s\": out set to NULL", cases[i].spec);
        T_CHECK(strstr(err, cases[i].named) != NULL, "\"%s\": error names '%s': [%s]",
                cases[i].spec, cases[i].named, err);
        if(rc == 0)
            dapi_faults_free(f);
    }
    /* An unknown key or a missing '=' lists the keys; a bad value says what the key takes. */
    static const struct {
        const char *spec, *says;
    } hints[] = {
        {"foo=bar", "(keys: path, method, first, rate, seed, status, retry_after, latency_ms, "
                    "body, expire, url_host)"},
        {"url_host=", "(url_host: a host or host:port, under 64 bytes)"},
        {"url_host=evil.example/x", "(url_host: a host or host:port"},
        {"url_host=user@host", "(url_host: a host or host:port"},
        {"url_host=h?x", "(url_host: a host or host:port"},
        {"url_host=0123456789012345678901234567890123456789012345678901234567890123",
         "(url_host: a host or host:port"},
        {"path", "is not key=value (keys: path, method,"},
        {"status=abc", "(status: an HTTP status from 100 to 599)"},
        {"body=nope", "(body: truncate, garbage, wrongtype or empty)"},
        {"rate=2", "(rate: a probability from 0 to 1)"},
        {"expire=2", "(expire: 0 or 1)"},
    };
    for(size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
        struct dapi_faults *f = NULL;
        char err[512] = "";
        T_EQ_INT(dapi_faults_parse(&f, hints[i].spec, err, sizeof err), -1);
        T_CHECK(strstr(err, hints[i].says) != NULL, "\"%s\": error says '%s': [%s]", hints[i].spec,
                hints[i].says, err);
    }
    /* A tiny error buffer is not overrun and stays a string. */
    char small[8];
    memset(small, 'x', sizeof small);
    struct dapi_faults *f = NULL;
    T_EQ_INT(dapi_faults_parse(&f, "bogus=1", small, sizeof small), -1);
    T_CHECK(memchr(small, '\0', sizeof small) != NULL, "small err buffer NUL-terminated");
}

static void test_big_numbers(void)
{
    /* retry_after is an int: a value that does not fit must be refused or saturate, never
     * wrap around (4294967297 would become 1 s, 2147483648 would become negative = "none"). */
    static const char *specs[] = {"status=503,retry_after=4294967297",
                                  "status=503,retry_after=2147483648"};
    for(size_t i = 0; i < 2; i++) {
        struct dapi_faults *f = NULL;
        char err[256] = "";
        if(dapi_faults_parse(&f, specs[i], err, sizeof err) != 0) {
            T_CHECK(strstr(err, "retry_after") != NULL, "\"%s\" refused naming it: %s", specs[i],
                    err);
            continue;
        }
        struct dapi_fault_action a;
        match(f, "GET", "/", &a);
        T_CHECK(a.retry_after >= 2147483647, "\"%s\": retry_after wrapped to %d", specs[i],
                a.retry_after);
        dapi_faults_free(f);
    }
}

static void test_empty_items_keep_later_rules(void)
{
    /* An empty item (",,") or empty rule (";;") must not silently drop what follows it. */
    static const struct {
        const char *spec;
        int status;
    } cases[] = {
        {"path=/a,,status=500", 500}, {"latency_ms=1;;status=501", 501},
        {";status=502", 502},         {",status=503", 503},
        {"status=504;", 504},         {"status=505,", 505},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_faults *f = NULL;
        char err[256] = "";
        int rc = dapi_faults_parse(&f, cases[i].spec, err, sizeof err);
        if(rc != 0) {
            /* refusing the spec with a message is acceptable too; silently dropping is not */
            T_CHECK(err[0] != '\0', "\"%s\" refused with a message", cases[i].spec);
            continue;
        }
        struct dapi_fault_action a;
        match(f, "GET", "/a", &a);
        T_CHECK(a.status == cases[i].status, "\"%s\": status %d, want %d (rule silently dropped)",
                cases[i].spec, a.status, cases[i].status);
        dapi_faults_free(f);
    }
}

static void test_first_n(void)
{
    struct dapi_faults *f = parse_ok("path=/api/v1/runs,first=3,status=503");
    if(!f)
        return;
    struct dapi_fault_action a;
    int fired = 0;
    /* Non-matching requests in between do not use up the count. */
    static const char *paths[] = {"/other",      "/api/v1/runs", "/api/v1/run",  "/api/v1/runs/7",
                                  "/",           "/api/v1/runs", "/api/v1/runs", "/api/v1/runs",
                                  "/api/v1/runs"};
    static const int want[] = {0, 1, 0, 1, 0, 1, 0, 0, 0};
    for(size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        match(f, "GET", paths[i], &a);
        int got = a.status == 503;
        fired += got;
        T_CHECK(got == want[i], "request %zu %s: fired %d, want %d", i, paths[i], got, want[i]);
        if(!got)
            T_CHECK(is_none(&a), "request %zu: nothing applied when not firing", i);
    }
    T_EQ_INT(fired, 3);
    for(int i = 0; i < 100; i++) {
        match(f, "POST", "/api/v1/runs", &a);
        T_CHECK(is_none(&a), "after first=3 nothing more fires (i=%d)", i);
    }
    dapi_faults_free(f);

    /* first=0 never fires; first=1 exactly once */
    f = parse_ok("first=0,status=500");
    if(f) {
        match(f, "GET", "/x", &a);
        T_CHECK(is_none(&a), "first=0 never fires");
        dapi_faults_free(f);
    }
    f = parse_ok("first=1,status=500");
    if(f) {
        match(f, "GET", "/x", &a);
        T_EQ_INT(a.status, 500);
        match(f, "GET", "/x", &a);
        T_EQ_INT(a.status, 0);
        dapi_faults_free(f);
    }
}

static void test_path_and_method(void)
{
    struct dapi_faults *f = parse_ok("path=/api/v1/files,method=POST,status=500");
    if(!f)
        return;
    static const struct {
        const char *method, *path;
        int fires;
    } cases[] = {
        {"POST", "/api/v1/files", 1},      {"POST", "/api/v1/files/abc", 1},
        {"POST", "/api/v1/filesystem", 1}, /* a prefix, not a path segment */
        {"POST", "/api/v1/file", 0},       {"POST", "/api/v1", 0},
        {"POST", "/API/v1/files", 0},      {"POST", "", 0},
        {"GET", "/api/v1/files", 0},       {"post", "/api/v1/files", 0},
        {"PUT", "/api/v1/files/abc", 0},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dapi_fault_action a;
        match(f, cases[i].method, cases[i].path, &a);
        T_CHECK((a.status == 500) == cases[i].fires, "%s %s: status %d, fires %d", cases[i].method,
                cases[i].path, a.status, cases[i].fires);
    }
    dapi_faults_free(f);

    /* No path: every path; no method: every method. */
    f = parse_ok("status=418");
    if(f) {
        const char *ms[] = {"GET", "POST", "DELETE"};
        const char *ps[] = {"/", "/a/b", ""};
        for(int i = 0; i < 3; i++) {
            struct dapi_fault_action a;
            match(f, ms[i], ps[i], &a);
            T_EQ_INT(a.status, 418);
        }
        dapi_faults_free(f);
    }
}

/* url_host: the first firing rule's wins; a rule that does not fire leaves it alone. */
static void test_url_host(void)
{
    struct dapi_faults *f = parse_ok(
        "path=/emu,url_host=127.0.0.1:9;url_host=[::1]:7;path=/x,url_host=a.b-c");
    if(!f)
        return;
    struct dapi_fault_action a;
    match(f, "GET", "/emu-files/x", &a);
    T_EQ_STR(a.url_host, "127.0.0.1:9");
    match(f, "POST", "/api/v1/sql-query/", &a);
    T_EQ_STR(a.url_host, "[::1]:7");
    dapi_faults_free(f);
    f = parse_ok("status=503");
    if(f) {
        match(f, "GET", "/a", &a);
        T_EQ_STR(a.url_host, ""); /* none: the emulator's own address */
        dapi_faults_free(f);
    }
}

static void test_several_rules(void)
{
    struct dapi_faults *f = parse_ok(
        "latency_ms=10;path=/a,latency_ms=20,status=503,retry_after=2;"
        "path=/a,status=500,retry_after=9,body=garbage,latency_ms=5;"
        "body=truncate,expire=1;status=404;expire=0");
    if(!f)
        return;
    struct dapi_fault_action a;
    match(f, "GET", "/a/b", &a);
    T_EQ_INT(a.latency_ms, 35);  /* 10 + 20 + 5 */
    T_EQ_INT(a.status, 503);     /* the first status wins */
    T_EQ_INT(a.retry_after, 2);  /* with its own retry_after */
    T_EQ_STR(a.body, "garbage"); /* the first body wins */
    T_EQ_INT(a.expire, 1);       /* expire is OR-ed (a later expire=0 does not clear) */

    match(f, "GET", "/b", &a); /* only the rules without path= */
    T_EQ_INT(a.latency_ms, 10);
    T_EQ_INT(a.status, 404);
    T_EQ_INT(a.retry_after, -1); /* status 404 has no retry_after */
    T_EQ_STR(a.body, "truncate");
    T_EQ_INT(a.expire, 1);
    dapi_faults_free(f);

    /* A status rule without retry_after before one with it: -1 is kept, not the later one. */
    f = parse_ok("status=502;status=503,retry_after=4");
    if(f) {
        match(f, "GET", "/", &a);
        T_EQ_INT(a.status, 502);
        T_EQ_INT(a.retry_after, -1);
        dapi_faults_free(f);
    }
    /* A rule that does not fire (first used up) lets the next status through. */
    f = parse_ok("first=1,status=500;status=503");
    if(f) {
        match(f, "GET", "/", &a);
        T_EQ_INT(a.status, 500);
        match(f, "GET", "/", &a);
        T_EQ_INT(a.status, 503);
        dapi_faults_free(f);
    }
}

static void test_rate(void)
{
    struct dapi_fault_action a;
    struct dapi_faults *f = parse_ok("rate=0,status=500");
    if(f) {
        int fired = 0;
        for(int i = 0; i < 10000; i++) {
            match(f, "GET", "/", &a);
            fired += a.status == 500;
        }
        T_EQ_INT(fired, 0);
        dapi_faults_free(f);
    }
    f = parse_ok("rate=1,status=500");
    if(f) {
        int fired = 0;
        for(int i = 0; i < 10000; i++) {
            match(f, "GET", "/", &a);
            fired += a.status == 500;
        }
        T_EQ_INT(fired, 10000);
        dapi_faults_free(f);
    }

    /* Determinism: the same seed gives the same sequence in two parsers, about half fire. */
    static const char *seeds[] = {"1", "2", "7", "12345", "0"};
    for(size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        char spec[64];
        snprintf(spec, sizeof spec, "rate=0.5,seed=%s,status=503", seeds[s]);
        struct dapi_faults *f1 = parse_ok(spec), *f2 = parse_ok(spec);
        if(!f1 || !f2) {
            dapi_faults_free(f1);
            dapi_faults_free(f2);
            continue;
        }
        int fired = 0, same = 1;
        for(int i = 0; i < 10000; i++) {
            struct dapi_fault_action a1, a2;
            match(f1, "GET", "/api", &a1);
            match(f2, "GET", "/api", &a2);
            if((a1.status == 503) != (a2.status == 503))
                same = 0;
            fired += a1.status == 503;
        }
        T_CHECK(same, "seed %s: same firing sequence in two parsers", seeds[s]);
        T_CHECK(fired >= 4500 && fired <= 5500, "seed %s: %d of 10000 fired, want about half",
                seeds[s], fired);
        dapi_faults_free(f1);
        dapi_faults_free(f2);
    }

    /* Different seeds give different sequences (the seed is actually used). */
    struct dapi_faults *fa = parse_ok("rate=0.5,seed=1,status=503");
    struct dapi_faults *fb = parse_ok("rate=0.5,seed=2,status=503");
    if(fa && fb) {
        int differ = 0;
        for(int i = 0; i < 200; i++) {
            struct dapi_fault_action a1, a2;
            match(fa, "GET", "/", &a1);
            match(fb, "GET", "/", &a2);
            differ += (a1.status == 503) != (a2.status == 503);
        }
        T_CHECK(differ > 0, "seeds 1 and 2 give different sequences");
    }
    dapi_faults_free(fa);
    dapi_faults_free(fb);

    /* rate=0.25 is roughly a quarter. */
    f = parse_ok("rate=0.25,seed=99,status=500");
    if(f) {
        int fired = 0;
        for(int i = 0; i < 10000; i++) {
            match(f, "GET", "/", &a);
            fired += a.status == 500;
        }
        T_CHECK(fired >= 2200 && fired <= 2800, "rate=0.25: %d of 10000 fired", fired);
        dapi_faults_free(f);
    }
}

struct thr {
    struct dapi_faults *f;
    pthread_barrier_t *start;
    int fired;
};

static void *hammer(void *arg)
{
    struct thr *t = arg;
    pthread_barrier_wait(t->start); /* all threads begin together */
    for(int i = 0; i < 10000; i++) {
        struct dapi_fault_action a;
        dapi_faults_match(t->f, "GET", "/api/v1/runs", &a);
        if(a.status == 503)
            t->fired++;
    }
    return NULL;
}

/* 4 threads x 10,000 matches against spec; returns the total number that fired. */
static int hammer4(const char *spec)
{
    struct dapi_faults *f = parse_ok(spec);
    if(!f)
        return -1;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    struct thr t[4];
    pthread_t th[4];
    int started = 0;
    for(int i = 0; i < 4; i++) {
        t[i] = (struct thr){f, &start, 0};
        if(pthread_create(&th[i], NULL, hammer, &t[i]) != 0)
            break;
        started++;
    }
    T_EQ_INT(started, 4);
    if(started < 4)
        abort(); /* the barrier would never open */
    int total = 0;
    for(int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        total += t[i].fired;
    }
    pthread_barrier_destroy(&start);
    dapi_faults_free(f);
    return total;
}

static void test_threads(void)
{
    T_EQ_INT(hammer4("path=/api,first=1000,status=503"), 1000);
    /* the limit in the middle of the run: every match up to it contends on the count */
    T_EQ_INT(hammer4("path=/api,first=20000,status=503"), 20000);
    /* several rules: each keeps its own count, the first status wins */
    T_EQ_INT(hammer4("first=100,status=503;first=30000,status=500;status=503"), 100 + 10000);
}

int main(void)
{
    test_no_faults();
    test_parse_keys();
    test_parse_errors();
    test_big_numbers();
    test_empty_items_keep_later_rules();
    test_first_n();
    test_path_and_method();
    test_several_rules();
    test_url_host();
    test_rate();
    test_threads();
    T_DONE();
}
