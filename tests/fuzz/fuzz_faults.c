/* libFuzzer driver: dapi_faults_parse / dapi_faults_match (src/emu/faults.h), the
 * --emulate-faults rule language of the Nekt emulator.
 *
 * The input, NUL-terminated, is the spec. Checks:
 *  - parse returns 0 with *out set, or -1 with *out NULL and a NUL-terminated reason (also
 *    with a tiny err buffer);
 *  - after a successful parse, a fixed sequence of requests (several methods and paths,
 *    each asked several times so first=N and rate= are exercised) yields actions that
 *    respect struct dapi_fault_action: status 0 or 100..599, retry_after -1 unless a status
 *    is set and never below -1, latency_ms >= 0 (a sum of rule latencies: UBSan reports any
 *    overflow), body "" or one of truncate|garbage|wrongtype|empty, expire 0 or 1, url_host
 *    "" or a host that cannot leave a URL's authority (no '/', '?', '#', '@', space...);
 *  - the sequence is deterministic: a second parse of the same spec gives the same actions;
 *  - dapi_faults_match(NULL, ...) is "no fault". */
#include "emu/faults.h"
#include "fuzz_common.h"

static const char *const methods[] = {"GET", "POST", "PUT", ""};
static const char *const paths[] = {
    "/api/v1/sql-query/",
    "/api/v1/explorer/application/",
    "/api/v1/explorer/queries/",
    "/api/v1/explorer/queries/q-1/results/",
    "/emu-files/abc/part-0.parquet",
    "/",
    "",
    "/not/an/emulator/path/at/all/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
};
#define ROUNDS 3
#define NREQ (ROUNDS * (sizeof methods / sizeof methods[0]) * (sizeof paths / sizeof paths[0]))

static void check_action(const struct dapi_fault_action *a, const char *m, const char *p)
{
    FUZZ_CHECK(a->status == 0 || (a->status >= 100 && a->status <= 599), "%s %s: status %d", m, p,
               a->status);
    FUZZ_CHECK(a->retry_after >= -1, "%s %s: retry_after %d", m, p, a->retry_after);
    FUZZ_CHECK(a->status != 0 || a->retry_after == -1, "%s %s: retry_after %d without status", m,
               p, a->retry_after);
    FUZZ_CHECK(a->latency_ms >= 0, "%s %s: latency_ms %lld", m, p, (long long)a->latency_ms);
    FUZZ_CHECK(memchr(a->body, '\0', sizeof a->body) != NULL, "%s %s: body not terminated", m, p);
    FUZZ_CHECK(!a->body[0] || !strcmp(a->body, "truncate") || !strcmp(a->body, "garbage") ||
                   !strcmp(a->body, "wrongtype") || !strcmp(a->body, "empty"),
               "%s %s: body '%s'", m, p, a->body);
    FUZZ_CHECK(a->expire == 0 || a->expire == 1, "%s %s: expire %d", m, p, a->expire);
    FUZZ_CHECK(memchr(a->url_host, '\0', sizeof a->url_host) != NULL,
               "%s %s: url_host not terminated", m, p);
    FUZZ_CHECK(strspn(a->url_host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789.-:[]") == strlen(a->url_host),
               "%s %s: url_host '%s'", m, p, a->url_host);
}

/* Runs the request sequence on f, recording each action in out[NREQ]. */
static void run(struct dapi_faults *f, struct dapi_fault_action *out)
{
    size_t k = 0;
    for(int round = 0; round < ROUNDS; round++)
        for(size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
            for(size_t j = 0; j < sizeof methods / sizeof methods[0]; j++) {
                struct dapi_fault_action *a = &out[k++];
                memset(a, 0x5A, sizeof *a);
                dapi_faults_match(f, methods[j], paths[i], a);
                check_action(a, methods[j], paths[i]);
            }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    char *spec = malloc(size + 1);
    if(!spec)
        return 0;
    memcpy(spec, data, size);
    spec[size] = '\0';

    struct dapi_faults *f = (struct dapi_faults *)0x1;
    char err[512];
    memset(err, 'Z', sizeof err);
    int r = dapi_faults_parse(&f, spec, err, sizeof err);
    FUZZ_CHECK(r == 0 || r == -1, "parse returned %d", r);
    if(r) {
        FUZZ_CHECK(f == NULL, "*out not NULL after failure");
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0], "no reason given");
        /* Same spec, 8-byte err buffer: the reason is truncated, never overrun. */
        char small[8 + 8];
        memset(small, 'Z', sizeof small);
        struct dapi_faults *g = (struct dapi_faults *)0x1;
        FUZZ_CHECK(dapi_faults_parse(&g, spec, small, 8) == -1 && g == NULL,
                   "second parse disagrees");
        FUZZ_CHECK(memchr(small, '\0', 8) != NULL, "small err not terminated");
        for(size_t i = 8; i < sizeof small; i++)
            FUZZ_CHECK(small[i] == 'Z', "err written past errlen");
        free(spec);
        return 0;
    }
    FUZZ_CHECK(f != NULL, "success without a result");

    static struct dapi_fault_action first[NREQ], second[NREQ];
    run(f, first);
    dapi_faults_free(f);

    struct dapi_faults *g = NULL;
    FUZZ_CHECK(dapi_faults_parse(&g, spec, err, sizeof err) == 0 && g, "second parse failed");
    run(g, second);
    dapi_faults_free(g);
    for(size_t k = 0; k < NREQ; k++)
        FUZZ_CHECK(
            first[k].latency_ms == second[k].latency_ms && first[k].status == second[k].status &&
                first[k].retry_after == second[k].retry_after &&
                strcmp(first[k].body, second[k].body) == 0 && first[k].expire == second[k].expire,
            "request %zu: not deterministic", k);

    struct dapi_fault_action none;
    dapi_faults_match(NULL, "GET", "/", &none);
    FUZZ_CHECK(none.status == 0 && none.retry_after == -1 && none.latency_ms == 0 &&
                   !none.body[0] && !none.expire,
               "NULL faults is not 'no fault'");
    free(spec);
    return 0;
}
