/* The query registry: slugs, ownership, states, waiters, persistence across a restart,
 * retention, the state-size cap and damaged metadata; fairness between keys (admission
 * slots, per-key stored bytes). What survives a crash is in test_durability.c. Time is
 * passed in, never slept. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "store/queries.h"
#include "t.h"
#include "base/buf.h"
#include "store/queries_fixture.h"

static char err[512];

/* ---- helpers ------------------------------------------------------------------------- */

static int slug_ok(const char *s)
{
    if(strlen(s) != 33 || strncmp(s, "dapi-query-", 11) != 0)
        return 0;
    for(const char *p = s + 11; *p; p++)
        if(!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
            return 0;
    return 1;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_lifecycle(void)
{
    char state[128], qd[256];
    state_dir(state, sizeof state, "life");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(u.calls, 0);
    char queries_dir[200];
    snprintf(queries_dir, sizeof queries_dir, "%s/queries", state);
    T_CHECK(t_exists(queries_dir), "queries/ created");

    char slug[DAPI_SLUG_MAX];
    memset(slug, 0, sizeof slug);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, slug, NULL, 0), DAPI_OK);
    T_CHECK(slug_ok(slug), "slug format: [%s]", slug);
    query_dir(qd, sizeof qd, state, slug);
    char meta[300];
    snprintf(meta, sizeof meta, "%s/meta.json", qd);
    /* Recorded in the creation log only: files come with the run's end (or a checkpoint). */
    T_CHECK(!t_exists(qd), "no directory at create");

    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1000, &v), DAPI_OK);
    T_EQ_STR(v.slug, slug);
    T_EQ_INT(v.state, DAPI_Q_QUEUED);
    T_CHECK(v.result == NULL, "no result while queued");
    dapi_queries_release(qs, &v);
    T_CHECK(v.ref == NULL && v.result == NULL, "release clears the view");
    dapi_queries_release(qs, &v); /* twice is harmless */

    T_EQ_INT(dapi_queries_get(qs, slug, other, 1000, &v), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(dapi_queries_get(qs, "dapi-query-0000000000000000000000", owner, 1000, &v),
             DAPI_ERR_NOT_FOUND);
    T_EQ_INT(dapi_queries_get(qs, "", owner, 1000, &v), DAPI_ERR_NOT_FOUND);
    char prefix[DAPI_SLUG_MAX];
    snprintf(prefix, sizeof prefix, "%.*s", 30, slug);
    T_EQ_INT(dapi_queries_get(qs, prefix, owner, 1000, &v), DAPI_ERR_NOT_FOUND);

    dapi_queries_set_running(qs, slug);
    T_EQ_INT(state_of(qs, slug, 1000, NULL), DAPI_Q_RUNNING);
    dapi_queries_set_running(qs, "dapi-query-unknown"); /* harmless */

    /* Two waiters, each fires once, from finish, not timed out. */
    struct t_waited w1 = {0}, w2 = {0};
    T_EQ_INT(dapi_queries_wait(qs, slug, 1000000, t_on_wake, &w1), 0);
    T_EQ_INT(dapi_queries_wait(qs, slug, 2000000, t_on_wake, &w2), 0);
    T_EQ_INT(w1.calls + w2.calls, 0);
    dapi_queries_finish(qs, slug, DAPI_ERR_SQL, "Binder Error: no such column x", 0);
    T_EQ_INT(w1.calls, 1);
    T_EQ_INT(w1.timed_out, 0);
    T_EQ_INT(w2.calls, 1);
    T_EQ_INT(w2.timed_out, 0);
    dapi_queries_tick(qs, 1001, 5000000); /* deadlines long past: nothing fires again */
    T_EQ_INT(w1.calls, 1);
    T_EQ_INT(w2.calls, 1);

    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1001, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_SQL);
    T_EQ_STR(v.message, "Binder Error: no such column x");
    T_CHECK(v.result == NULL, "no result when failed");
    dapi_queries_release(qs, &v);
    T_CHECK(t_exists(meta), "meta.json written at the run's end");
    T_EQ_INT(dapi_queries_get(qs, slug, other, 1001, &v), DAPI_ERR_NOT_FOUND);

    /* Waiting on a finished query: -1, callback never called. */
    struct t_waited w3 = {0};
    T_EQ_INT(dapi_queries_wait(qs, slug, 1000000, t_on_wake, &w3), -1);
    T_EQ_INT(dapi_queries_wait(qs, "dapi-query-nope", 1000000, t_on_wake, &w3), -1);
    dapi_queries_tick(qs, 1001, 9000000);
    T_EQ_INT(w3.calls, 0);

    /* A DONE query with a real result. */
    char slug2[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT v FROM t", NULL, 1002, slug2, NULL, 0),
             DAPI_OK);
    T_CHECK(strcmp(slug, slug2) != 0, "slugs differ");
    dapi_queries_set_running(qs, slug2);
    struct t_waited w4 = {0};
    T_EQ_INT(dapi_queries_wait(qs, slug2, 1000000, t_on_wake, &w4), 0);
    uint64_t bytes = t_result_write(qs, slug2, 150);
    T_CHECK(bytes > 64, "result written (%llu bytes)", (unsigned long long)bytes);
    T_EQ_INT(dapi_queries_bytes(qs), 2 * DAPI_QUERY_CHARGE);
    dapi_queries_finish(qs, slug2, DAPI_OK, NULL, bytes);
    T_EQ_INT(w4.calls, 1);
    T_EQ_INT(w4.timed_out, 0);
    T_EQ_INT(dapi_queries_bytes(qs), bytes + 2 * DAPI_QUERY_CHARGE);
    T_EQ_INT(dapi_queries_get(qs, slug2, owner, 1002, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_DONE);
    T_EQ_INT(v.error, DAPI_OK);
    T_CHECK(v.result != NULL, "DONE has a result");
    if(v.result) {
        T_EQ_INT(dapi_result_rows(v.result), 150);
        T_EQ_INT(dapi_result_pages(v.result), 2);
        const char *data;
        size_t len;
        t_result_page(v.result, 2, &data, &len);
        T_CHECK(len > 10 && strncmp(data, "{\"v\":300}", 9) == 0,
                "page 2 starts with row 100: "
                "[%.20s]",
                data);
        T_CHECK(len > 9 && memcmp(data + len - 9, "{\"v\":447}", 9) == 0,
                "page 2 ends with row 149");
    }
    dapi_queries_release(qs, &v);

    /* finish OK without a result file: FAILED, the reason says so, no bytes counted. */
    char slug3[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 3", NULL, 1003, slug3, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, slug3, DAPI_OK, NULL, 12345);
    T_EQ_INT(dapi_queries_get(qs, slug3, owner, 1003, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_IO);
    T_CHECK(v.message[0] != '\0', "a message says why: [%s]", v.message);
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_bytes(qs), bytes + 3 * DAPI_QUERY_CHARGE);

    /* Finishing an unknown slug is harmless. */
    dapi_queries_finish(qs, "dapi-query-unknown", DAPI_ERR_SQL, "x", 0);

    /* Many slugs: all well-formed and distinct. */
    static char many[40][DAPI_SLUG_MAX];
    int bad = 0, dups = 0;
    for(int i = 0; i < 40; i++) {
        T_EQ_INT(dapi_queries_create(qs, other, "SELECT 42", NULL, 1004, many[i], NULL, 0),
                 DAPI_OK);
        bad += !slug_ok(many[i]);
        for(int j = 0; j < i; j++)
            dups += strcmp(many[i], many[j]) == 0;
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(dups, 0);
    T_EQ_INT(dapi_queries_get(qs, many[7], other, 1004, &v), DAPI_OK);
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_get(qs, many[7], owner, 1004, &v), DAPI_ERR_NOT_FOUND);

    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_waiter_deadline(void)
{
    char state[128];
    state_dir(state, sizeof state, "wait");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char slug[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, slug, NULL, 0), DAPI_OK);
    struct t_waited early = {0}, late = {0};
    T_EQ_INT(dapi_queries_wait(qs, slug, 5000, t_on_wake, &early), 0);
    T_EQ_INT(dapi_queries_wait(qs, slug, 9000, t_on_wake, &late), 0);

    dapi_queries_tick(qs, 1000, 0);
    dapi_queries_tick(qs, 1000, 4999);
    T_EQ_INT(early.calls, 0);
    T_EQ_INT(late.calls, 0);
    dapi_queries_tick(qs, 1000, 5001);
    T_EQ_INT(early.calls, 1);
    T_EQ_INT(early.timed_out, 1);
    T_EQ_INT(late.calls, 0);
    dapi_queries_tick(qs, 1000, 6000);
    T_EQ_INT(early.calls, 1);
    T_EQ_INT(late.calls, 0);

    /* The query finishes before the later deadline: that waiter fires from finish. */
    dapi_queries_finish(qs, slug, DAPI_ERR_TIMEOUT, "too slow", 0);
    T_EQ_INT(early.calls, 1);
    T_EQ_INT(late.calls, 1);
    T_EQ_INT(late.timed_out, 0);
    dapi_queries_tick(qs, 1000, 100000);
    T_EQ_INT(late.calls, 1);

    /* cancel_waiters wakes everyone as timed out, once. */
    char slug2[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, slug2, NULL, 0), DAPI_OK);
    struct t_waited c1 = {0}, c2 = {0};
    T_EQ_INT(dapi_queries_wait(qs, slug2, 1 << 30, t_on_wake, &c1), 0);
    T_EQ_INT(dapi_queries_wait(qs, slug2, 1 << 30, t_on_wake, &c2), 0);
    dapi_queries_cancel_waiters(qs);
    T_EQ_INT(c1.calls, 1);
    T_EQ_INT(c1.timed_out, 1);
    T_EQ_INT(c2.calls, 1);
    dapi_queries_finish(qs, slug2, DAPI_ERR_SQL, "x", 0);
    dapi_queries_cancel_waiters(qs);
    T_EQ_INT(c1.calls, 1);
    T_EQ_INT(c2.calls, 1);

    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_restart(void)
{
    char state[128];
    state_dir(state, sizeof state, "restart");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    /* SQL with quotes, newlines, tabs, backslashes and non-ASCII survives the round trip. */
    static const char tricky[] = "SELECT 'it''s', \"x\\y\"\n\t-- café ☕ \x01\nFROM t";
    char done[DAPI_SLUG_MAX], failed[DAPI_SLUG_MAX], queued[DAPI_SLUG_MAX], running[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT done", NULL, 1000, done, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT failed", NULL, 1000, failed, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, tricky, NULL, 1000, queued, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT running", NULL, 1000, running, NULL, 0),
             DAPI_OK);
    uint64_t bytes = t_result_write(qs, done, 3);
    dapi_queries_finish(qs, done, DAPI_OK, NULL, bytes);
    dapi_queries_finish(qs, failed, DAPI_ERR_SQL, "Parser Error: \"quoted\"\nline 2", 0);
    dapi_queries_set_running(qs, running);
    dapi_queries_close(qs);

    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u);
    if(!qs)
        return;
    T_EQ_INT(u.calls, 2);
    T_CHECK(unfinished_has(&u, queued, tricky), "queued query reported with its exact SQL");
    T_CHECK(unfinished_has(&u, running, "SELECT running"), "running query reported");
    T_CHECK(!unfinished_has(&u, done, NULL) && !unfinished_has(&u, failed, NULL),
            "finished queries are not reported");
    T_EQ_INT(dapi_queries_bytes(qs), bytes + 4 * DAPI_QUERY_CHARGE);

    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, done, owner, 1001, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_DONE);
    T_CHECK(v.result != NULL, "result reopened");
    if(v.result) {
        const char *data;
        size_t len;
        t_result_page(v.result, 1, &data, &len);
        T_EQ_MEM(data, len, "{\"v\":0},{\"v\":3},{\"v\":6}");
    }
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_get(qs, done, other, 1001, &v), DAPI_ERR_NOT_FOUND);

    T_EQ_INT(dapi_queries_get(qs, failed, owner, 1001, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_SQL);
    T_EQ_STR(v.message, "Parser Error: \"quoted\"\nline 2");
    dapi_queries_release(qs, &v);

    /* Unfinished ones come back queued, owned as before, and can be run again. */
    T_EQ_INT(dapi_queries_get(qs, running, other, 1001, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_QUEUED);
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_get(qs, running, owner, 1001, &v), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, queued, 1001, NULL), DAPI_Q_QUEUED);
    dapi_queries_set_running(qs, queued);
    uint64_t b2 = t_result_write(qs, queued, 1);
    dapi_queries_finish(qs, queued, DAPI_OK, NULL, b2);
    T_EQ_INT(state_of(qs, queued, 1001, NULL), DAPI_Q_DONE);
    T_EQ_INT(dapi_queries_bytes(qs), bytes + b2 + 4 * DAPI_QUERY_CHARGE);

    /* A DONE query whose result file vanished is run again after a restart. */
    char rp[4096];
    dapi_queries_result_path(qs, done, rp, sizeof rp);
    dapi_queries_close(qs);
    unlink(rp);
    struct unfinished u2 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1002, &u2);
    if(!qs)
        return;
    T_CHECK(unfinished_has(&u2, done, "SELECT done"), "done without result: run again");
    T_CHECK(unfinished_has(&u2, running, NULL), "still unfinished: reported again");
    T_CHECK(!unfinished_has(&u2, queued, NULL), "finished after restart: not reported");
    T_EQ_INT(u2.calls, 2);
    T_EQ_INT(state_of(qs, done, 1002, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(dapi_queries_bytes(qs), b2 + 4 * DAPI_QUERY_CHARGE);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_retention(void)
{
    char state[128], qd[256];
    state_dir(state, sizeof state, "retention");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 10, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char slug[DAPI_SLUG_MAX], pending[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, slug, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, pending, NULL, 0), DAPI_OK);
    uint64_t bytes = t_result_write(qs, slug, 5);
    dapi_queries_finish(qs, slug, DAPI_OK, NULL, bytes);
    query_dir(qd, sizeof qd, state, slug);

    enum dapi_err e;
    T_EQ_INT(state_of(qs, slug, 1009, &e), DAPI_Q_DONE);
    T_EQ_INT(e, DAPI_OK);
    state_of(qs, slug, 1010, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    state_of(qs, slug, 5000, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);

    /* A snapshot taken before expiry stays readable after the tick removes the query. */
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1005, &v), DAPI_OK);

    dapi_queries_tick(qs, 1009, 0);
    T_CHECK(t_exists(qd), "kept before retention ends");
    T_EQ_INT(dapi_queries_bytes(qs), bytes + 2 * DAPI_QUERY_CHARGE);
    dapi_queries_tick(qs, 1010, 0);
    T_CHECK(!t_exists(qd), "directory deleted when retention ends: %s", qd);
    T_EQ_INT(dapi_queries_bytes(qs), 0);
    state_of(qs, slug, 1009, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND); /* gone, whatever time is asked */

    if(v.result) {
        const char *data;
        size_t len;
        t_result_page(v.result, 1, &data, &len);
        T_CHECK(len > 0 && data[0] == '{', "old snapshot still readable");
    }
    dapi_queries_release(qs, &v);
    dapi_queries_tick(qs, 1011, 0);

    /* An expired query found at open is deleted and not reported. */
    char slug2[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 3", NULL, 1020, slug2, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, slug2, DAPI_ERR_SQL, "x", 0);
    dapi_queries_close(qs);
    struct unfinished u2 = {0};
    char qd2[256], qdp[256];
    query_dir(qd2, sizeof qd2, state, slug2);
    query_dir(qdp, sizeof qdp, state, pending);
    qs = open_reg(state, 10, UINT64_MAX, 1029, &u2);
    T_CHECK(t_exists(qd2), "not yet expired at open");
    dapi_queries_close(qs);
    T_CHECK(!t_exists(qdp), "the expired unfinished query was removed at open");
    T_EQ_INT(u2.calls, 0);
    qs = open_reg(state, 10, UINT64_MAX, 1030, &u2);
    T_CHECK(!t_exists(qd2), "expired at open: removed");
    T_EQ_INT(u2.calls, 0);
    state_of(qs, slug2, 1025, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_state_cap(void)
{
    char state[128];
    state_dir(state, sizeof state, "cap");
    struct unfinished u = {0};
    /* Find the size of a 1-row result first. */
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, a, NULL, 0), DAPI_OK);
    /* What one query with it costs: its result and the query charge. */
    uint64_t size = t_result_write(qs, a, 1) + DAPI_QUERY_CHARGE;
    dapi_queries_close(qs);
    t_rm_rf(state);
    mkdir(state, 0700);

    /* Cap = size + 1: one result fits, the next create still works (size < cap). */
    qs = open_reg(state, 3600, size + 1, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, a, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, t_result_write(qs, a, 1));
    T_EQ_INT(dapi_queries_bytes(qs), size);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, b, NULL, 0), DAPI_OK);
    /* Now at or over the cap: new queries are refused with BUSY. */
    dapi_queries_finish(qs, b, DAPI_OK, NULL, t_result_write(qs, b, 1));
    T_CHECK(dapi_queries_bytes(qs) >= size + 1, "over the cap");
    memset(c, 0, sizeof c);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 3", NULL, 1000, c, NULL, 0), DAPI_ERR_BUSY);
    T_EQ_INT(c[0], '\0');
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, b, owner, 1000, &v), DAPI_OK);
    dapi_queries_release(qs, &v);
    dapi_queries_close(qs);

    /* The count survives a restart, and expiry frees room. */
    qs = open_reg(state, 3600, size + 1, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_bytes(qs), 2 * size);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 3", NULL, 1000, c, NULL, 0), DAPI_ERR_BUSY);
    dapi_queries_tick(qs, 1000 + 3600, 0);
    T_EQ_INT(dapi_queries_bytes(qs), 0);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 3", NULL, 4600, c, NULL, 0), DAPI_OK);
    dapi_queries_close(qs);

    /* Cap exactly equal to one result: full after it. */
    t_rm_rf(state);
    mkdir(state, 0700);
    qs = open_reg(state, 3600, size, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, a, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, t_result_write(qs, a, 1));
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, b, NULL, 0), DAPI_ERR_BUSY);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* claim, the stored SQL, the upstream reference and the query's own directory. */
static void test_accessors(void)
{
    char state[128], qd[256], p[300];
    state_dir(state, sizeof state, "access");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'a'", NULL, 1000, a, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'b'", "up-123", 1000, b, NULL, 0), DAPI_OK);

    /* claim: exactly one caller wins, only from QUEUED. */
    T_EQ_INT(dapi_queries_claim(qs, a), 1);
    T_EQ_INT(dapi_queries_claim(qs, a), 0);
    T_EQ_INT(state_of(qs, a, 1000, NULL), DAPI_Q_RUNNING);
    T_EQ_INT(dapi_queries_claim(qs, "dapi-query-unknown"), 0);
    dapi_queries_finish(qs, b, DAPI_ERR_SQL, "x", 0);
    T_EQ_INT(dapi_queries_claim(qs, b), 0);
    T_EQ_INT(state_of(qs, b, 1000, NULL), DAPI_Q_FAILED);

    char *sql = dapi_queries_sql(qs, a);
    T_EQ_STR(sql, "SELECT 'a'");
    free(sql);
    T_CHECK(dapi_queries_sql(qs, "dapi-query-unknown") == NULL, "no SQL for an unknown slug");

    char up[64];
    memset(up, 'x', sizeof up);
    dapi_queries_upstream(qs, a, up, sizeof up);
    T_EQ_STR(up, "");
    dapi_queries_upstream(qs, b, up, sizeof up);
    T_EQ_STR(up, "up-123");
    dapi_queries_upstream(qs, "dapi-query-unknown", up, sizeof up);
    T_EQ_STR(up, "");
    T_EQ_INT(dapi_queries_set_upstream(qs, a, "up-\"456\""), DAPI_OK);
    dapi_queries_upstream(qs, a, up, sizeof up);
    T_EQ_STR(up, "up-\"456\"");
    T_EQ_INT(dapi_queries_set_upstream(qs, "dapi-query-unknown", "z"), DAPI_ERR_NOT_FOUND);
    char small[4];
    dapi_queries_upstream(qs, b, small, sizeof small);
    T_EQ_STR(small, "up-"); /* truncated, terminated */

    /* Setting the upstream reference does not change the state that is persisted. */
    T_EQ_INT(dapi_queries_set_upstream(qs, b, "up-789"), DAPI_OK);
    T_EQ_INT(state_of(qs, b, 1000, NULL), DAPI_Q_FAILED);

    /* The query's directory holds its files and goes with it. */
    dapi_queries_dir(qs, a, qd, sizeof qd);
    char want[256];
    query_dir(want, sizeof want, state, a);
    T_EQ_STR(qd, want);
    snprintf(p, sizeof p, "%s/backend-part.bin", qd);
    t_write(p, ""); /* a backend file in the query dir */
    dapi_queries_close(qs);

    /* Upstream references and SQL survive a restart; the running one is reported again. */
    struct unfinished u2 = {0};
    qs = open_reg(state, 10, UINT64_MAX, 1001, &u2);
    if(!qs)
        return;
    T_EQ_INT(u2.calls, 1);
    T_CHECK(unfinished_has(&u2, a, "SELECT 'a'"), "a reported");
    dapi_queries_upstream(qs, a, up, sizeof up);
    T_EQ_STR(up, "up-\"456\"");
    dapi_queries_upstream(qs, b, up, sizeof up);
    T_EQ_STR(up, "up-789");
    T_EQ_INT(state_of(qs, b, 1001, NULL), DAPI_Q_FAILED);

    /* Expiry removes the directory with the backend's file in it. */
    dapi_queries_finish(qs, a, DAPI_ERR_SQL, "y", 0);
    dapi_queries_tick(qs, 1010, 0);
    T_CHECK(access(qd, F_OK) != 0, "query dir with extra files removed at expiry");
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_damaged_meta(void)
{
    char state[128], qd[256], p[300];
    state_dir(state, sizeof state, "damaged");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char good[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT good", NULL, 1000, good, NULL, 0), DAPI_OK);
    dapi_queries_close(qs);

    static const struct {
        const char *slug, *meta;
    } bad[] = {
        {"dapi-query-garbage00000000000000000", "\x7f garbage {{{"},
        {"dapi-query-empty000000000000000000000", ""},
        {"dapi-query-array000000000000000000000", "[1,2,3]"},
        {"dapi-query-noowner0000000000000000000",
         "{\"created\":1000,\"state\":\"done\",\"error\":0,\"sql\":\"SELECT 1\"}"},
        {"dapi-query-badowner000000000000000000",
         "{\"owner\":\"zz\",\"created\":1000,\"state\":\"queued\",\"error\":0,\"sql\":\"x\"}"},
        {"dapi-query-nothex00000000000000000000",
         "{\"owner\":\"gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg\","
         "\"created\":1000,\"state\":\"queued\",\"error\":0,\"sql\":\"x\"}"},
        {"dapi-query-strcreated0000000000000000",
         "{\"owner\":\"00000000000000000000000000000000000000000000000000000000000000ff\","
         "\"created\":\"1000\",\"state\":\"queued\",\"error\":0,\"sql\":\"x\"}"},
        {"dapi-query-nosql000000000000000000000",
         "{\"owner\":\"00000000000000000000000000000000000000000000000000000000000000ff\","
         "\"created\":1000,\"state\":\"queued\",\"error\":0}"},
        {"dapi-query-deep0000000000000000000000",
         "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"},
    };
    for(size_t i = 0; i < N(bad); i++) {
        query_dir(qd, sizeof qd, state, bad[i].slug);
        T_EQ_INT(mkdir(qd, 0700), 0);
        snprintf(p, sizeof p, "%s/meta.json", qd);
        t_write(p, bad[i].meta);
    }
    /* A directory without meta.json and a stray tmp file. */
    query_dir(qd, sizeof qd, state, "dapi-query-nometa000000000000000000");
    mkdir(qd, 0700);
    snprintf(p, sizeof p, "%s/meta.json.tmp", qd);
    t_write(p, "{");

    struct unfinished u2 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1000, &u2);
    if(!qs)
        return;
    for(size_t i = 0; i < N(bad); i++) {
        query_dir(qd, sizeof qd, state, bad[i].slug);
        T_CHECK(!t_exists(qd), "damaged %s removed at open", bad[i].slug);
        T_CHECK(!unfinished_has(&u2, bad[i].slug, NULL), "damaged %s not reported", bad[i].slug);
    }
    query_dir(qd, sizeof qd, state, "dapi-query-nometa000000000000000000");
    T_CHECK(!t_exists(qd), "directory without meta.json removed");
    T_EQ_INT(u2.calls, 1);
    T_CHECK(unfinished_has(&u2, good, "SELECT good"), "the good one survives");
    T_EQ_INT(state_of(qs, good, 1000, NULL), DAPI_Q_QUEUED);
    dapi_queries_close(qs);
    t_rm_rf(state);

    /* A state dir that cannot hold queries/: an error naming it. */
    char file[160];
    snprintf(file, sizeof file, "%s/not-a-dir", root);
    t_write(file, "x");
    struct dapi_queries *q2 = (struct dapi_queries *)1;
    err[0] = '\0';
    T_CHECK(dapi_queries_open(&q2, file, 10, 1 << 20, 0, on_unfinished, NULL, &u2, err,
                              sizeof err) != DAPI_OK,
            "open on a file fails");
    T_CHECK(q2 == NULL, "no registry");
    T_CHECK(strstr(err, "not-a-dir") != NULL, "error names the path: [%s]", err);
    unlink(file);
}

/* ---- fairness ---------------------------------------------------------------------------- */

struct admit_race {
    struct dapi_queries *qs;
    int ok, rate, busy;
};

static void *admit_many(void *arg)
{
    struct admit_race *a = arg;
    for(int i = 0; i < 100; i++) {
        enum dapi_err r = dapi_queries_admit(a->qs, owner);
        a->ok += r == DAPI_OK;
        a->rate += r == DAPI_ERR_RATE;
        a->busy += r == DAPI_ERR_BUSY;
    }
    return NULL;
}

static void test_admission(void)
{
    char state[128];
    state_dir(state, sizeof state, "admit");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 10, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    /* No limits by default. */
    for(int i = 0; i < 100; i++)
        T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_active(qs, owner), 100);
    for(int i = 0; i < 100; i++)
        dapi_queries_unadmit(qs, owner);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);

    struct dapi_queries_limits lim = {5, 2, UINT64_MAX, DAPI_QUERY_CHARGE};
    dapi_queries_set_limits(qs, &lim);
    /* Per key first: the key at its limit gets RATE while others are still admitted. */
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_ERR_RATE);
    T_EQ_INT(dapi_queries_admit(qs, other), DAPI_OK);
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    T_EQ_INT(dapi_queries_active(qs, other), 1);
    T_EQ_INT(dapi_queries_active(qs, third), 0);
    T_EQ_INT(dapi_queries_active(qs, NULL), 3);
    dapi_queries_unadmit(qs, owner);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    /* Then the server: 5 in all. */
    T_EQ_INT(dapi_queries_admit(qs, other), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, third), DAPI_OK);
    T_EQ_INT(dapi_queries_active(qs, NULL), 5);
    T_EQ_INT(dapi_queries_admit(qs, third), DAPI_ERR_BUSY);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_ERR_RATE); /* its own limit says more */
    T_EQ_INT(dapi_queries_active(qs, third), 1);
    dapi_queries_unadmit(qs, third);
    dapi_queries_unadmit(qs, other);
    dapi_queries_unadmit(qs, other);
    T_EQ_INT(dapi_queries_active(qs, NULL), 2);

    /* A reservation moves to the query its key creates: counts unchanged, given back once
     * when the query finishes. */
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000, a, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_hold(qs, a, owner), 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    T_EQ_INT(dapi_queries_hold(qs, a, NULL), 0); /* idempotent */
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    dapi_queries_finish(qs, a, DAPI_ERR_SQL, "x", 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 1);
    dapi_queries_finish(qs, a, DAPI_ERR_SQL, "x", 0); /* twice: given back once */
    dapi_queries_drop(qs, a);
    T_EQ_INT(dapi_queries_active(qs, owner), 1);
    /* A reservation for a query that is gone is given back. */
    T_EQ_INT(dapi_queries_hold(qs, "dapi-query-unknown", owner), -1);
    T_EQ_INT(dapi_queries_active(qs, owner), 0);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);

    /* Resumed queries take a slot whatever the limits. */
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT b", NULL, 1000, b, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT c", NULL, 1000, c, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_hold(qs, b, NULL), 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 3);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_ERR_RATE);
    dapi_queries_unadmit(qs, owner);
    dapi_queries_unadmit(qs, owner);
    /* Dropped at shutdown: given back; still queued. */
    dapi_queries_drop(qs, b);
    T_EQ_INT(dapi_queries_active(qs, owner), 0);
    T_EQ_INT(state_of(qs, b, 1000, NULL), DAPI_Q_QUEUED);
    /* Expired while holding one: given back by the tick. */
    T_EQ_INT(dapi_queries_hold(qs, c, NULL), 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 1);
    dapi_queries_tick(qs, 1010, 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 0);
    dapi_queries_finish(qs, c, DAPI_OK, NULL, 0); /* the run ends after the expiry: nothing */
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);
    T_EQ_INT(dapi_queries_bytes(qs), 0);

    /* A query that failed for lack of room can be queued again, taking a slot as an
     * admission would; other failures cannot. */
    char d[DAPI_SLUG_MAX], e[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT d", NULL, 1005, d, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT e", NULL, 1005, e, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, d, DAPI_ERR_BUSY, "no space left", 0);
    dapi_queries_finish(qs, e, DAPI_ERR_SQL, "bad", 0);
    T_EQ_INT(dapi_queries_retry(qs, e), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_retry(qs, d), DAPI_ERR_RATE);
    T_EQ_INT(state_of(qs, d, 1005, NULL), DAPI_Q_FAILED);
    dapi_queries_unadmit(qs, owner);
    T_EQ_INT(dapi_queries_retry(qs, d), DAPI_OK);
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, d, owner, 1005, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_QUEUED);
    T_EQ_INT(v.error, DAPI_OK);
    T_EQ_STR(v.message, "");
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_retry(qs, d), DAPI_ERR_INVALID); /* once */
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    /* out of memory beside other work: a bounded number of retries, each with its mark */
    uint64_t mark = 0;
    T_EQ_INT(dapi_queries_memory_mark(qs, d, &mark), 0);
    T_EQ_INT(dapi_queries_memory_retry(qs, d, 7, 2), 1);
    T_EQ_INT(dapi_queries_memory_mark(qs, d, &mark), 1);
    T_EQ_INT((int)mark, 7);
    T_EQ_INT(dapi_queries_memory_retry(qs, d, 9, 2), 2);
    T_EQ_INT(dapi_queries_memory_retry(qs, d, 11, 2), 0); /* used up: final */
    T_EQ_INT(dapi_queries_memory_mark(qs, d, &mark), 1);
    T_EQ_INT((int)mark, 9);
    T_EQ_INT(dapi_queries_memory_retry(qs, "dapi-query-none", 1, 2), 0);
    T_EQ_INT(dapi_queries_memory_mark(qs, "dapi-query-none", &mark), 0);
    uint64_t bytes = t_result_write(qs, d, 3);
    dapi_queries_finish(qs, d, DAPI_OK, NULL, bytes);
    T_EQ_INT(state_of(qs, d, 1005, NULL), DAPI_Q_DONE);
    dapi_queries_unadmit(qs, owner);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);

    /* Reserving is atomic: 8 threads, 800 attempts, exactly the limit succeed. */
    struct dapi_queries_limits lim2 = {UINT64_MAX, 50, UINT64_MAX, DAPI_QUERY_CHARGE};
    dapi_queries_set_limits(qs, &lim2);
    struct admit_race race[8];
    pthread_t t[8];
    for(int i = 0; i < 8; i++) {
        race[i] = (struct admit_race){qs, 0, 0, 0};
        pthread_create(&t[i], NULL, admit_many, &race[i]);
    }
    int ok = 0, rate = 0;
    for(int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += race[i].ok;
        rate += race[i].rate;
    }
    T_EQ_INT(ok, 50);
    T_EQ_INT(rate, 750);
    T_EQ_INT(dapi_queries_active(qs, owner), 50);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_key_quota(void)
{
    char state[128], qd[256];
    state_dir(state, sizeof state, "quota");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char probe[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, third, "SELECT probe", NULL, 900, probe, NULL, 0), DAPI_OK);
    uint64_t size = t_result_write(qs, probe, 50); /* every result below is this size */
    dapi_queries_finish(qs, probe, DAPI_OK, NULL, size);
    /* Room for two results of a key. */
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 2 * size + size / 2, 0};
    dapi_queries_set_limits(qs, &lim);

    char b1[DAPI_SLUG_MAX], a[5][DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT b1", NULL, 999, b1, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, b1, DAPI_OK, NULL, t_result_write(qs, b1, 50));
    /* a[1] and a[2] are created in the same second: registration order decides. */
    static const int64_t created[5] = {1000, 1001, 1001, 1002, 1003};
    for(int i = 0; i < 3; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, created[i], a[i], NULL, 0),
                 DAPI_OK);
        dapi_queries_finish(qs, a[i], DAPI_OK, NULL, t_result_write(qs, a[i], 50));
    }
    enum dapi_err e;
    state_of(qs, a[0], 1010, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND); /* the key's oldest made room for its third */
    query_dir(qd, sizeof qd, state, a[0]);
    T_CHECK(!t_exists(qd), "the deleted result's directory is removed: %s", qd);
    T_EQ_INT(state_of(qs, a[1], 1010, NULL), DAPI_Q_DONE);
    T_EQ_INT(state_of(qs, a[2], 1010, NULL), DAPI_Q_DONE);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);
    /* Other keys keep theirs, older or not. */
    struct dapi_qview vb;
    T_EQ_INT(dapi_queries_get(qs, b1, other, 1010, &vb), DAPI_OK);
    T_EQ_INT(vb.state, DAPI_Q_DONE);
    dapi_queries_release(qs, &vb);
    T_EQ_INT(state_of(qs, probe, 1010, &e), (enum dapi_qstate)(-1)); /* (owned by third) */
    T_EQ_INT(dapi_queries_key_bytes(qs, other), size);
    T_EQ_INT(dapi_queries_key_bytes(qs, third), size);
    T_EQ_INT(dapi_queries_bytes(qs), 4 * size);

    /* A reader holding the next victim keeps reading it after it is deleted. */
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, a[1], owner, 1010, &v), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, created[3], a[3], NULL, 0), DAPI_OK);
    /* A running query of the key is no victim (only finished results are). */
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 999, a[4], NULL, 0), DAPI_OK);
    dapi_queries_set_running(qs, a[4]);
    dapi_queries_finish(qs, a[3], DAPI_OK, NULL, t_result_write(qs, a[3], 50));
    state_of(qs, a[1], 1010, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, a[4], 1010, NULL), DAPI_Q_RUNNING);
    T_CHECK(v.result != NULL, "snapshot has its result");
    if(v.result) {
        const char *data;
        size_t len;
        t_result_page(v.result, 1, &data, &len);
        T_CHECK(len > 8 && strncmp(data, "{\"v\":0}", 7) == 0, "deleted result still readable");
    }
    dapi_queries_release(qs, &v);

    /* One result larger than the quota: refused (413), its file deleted, nothing else of the
     * key's deleted for it. */
    char rp[4096];
    dapi_queries_result_path(qs, a[4], rp, sizeof rp);
    uint64_t big = t_result_write(qs, a[4], 1000); /* (pages compress well; 1,024 at most) */
    T_CHECK(big > lim.max_key_bytes, "test setup: %llu bytes", (unsigned long long)big);
    dapi_queries_finish(qs, a[4], DAPI_OK, NULL, big);
    T_EQ_INT(dapi_queries_get(qs, a[4], owner, 1010, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_TOO_LARGE);
    T_CHECK(strstr(v.message, "--max-state-bytes-per-key") != NULL, "message: [%s]", v.message);
    dapi_queries_release(qs, &v);
    T_CHECK(!t_exists(rp), "the refused result is deleted");
    T_EQ_INT(state_of(qs, a[2], 1010, NULL), DAPI_Q_DONE);
    T_EQ_INT(state_of(qs, a[3], 1010, NULL), DAPI_Q_DONE);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);

    /* The per-key count survives a restart. */
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1010, &u);
    if(!qs)
        return;
    dapi_queries_set_limits(qs, &lim); /* results alone, as above */
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), size);
    T_EQ_INT(dapi_queries_bytes(qs), 4 * size);
    /* Expiry gives a key's bytes back too. */
    dapi_queries_tick(qs, 999 + 3600, 0);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), 0);
    T_EQ_INT(dapi_queries_key_bytes(qs, third), 0);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* "Oldest" is creation order, within a second too, and stays so across a restart (the
 * registration order is persisted; directory order is arbitrary). */
static void test_oldest_across_restart(void)
{
    char state[128];
    state_dir(state, sizeof state, "oldest");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[10][DAPI_SLUG_MAX];
    uint64_t size = 0;
    for(int i = 0; i < 8; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000, a[i], NULL, 0), DAPI_OK);
        size = t_result_write(qs, a[i], 50);
        dapi_queries_finish(qs, a[i], DAPI_OK, NULL, size);
    }
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 4 * size, 0};
    dapi_queries_set_limits(qs, &lim);
    /* Created in the same second as the others, after them. */
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000, a[8], NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, a[8], DAPI_OK, NULL, t_result_write(qs, a[8], 50));
    for(int i = 0; i < 9; i++) {
        enum dapi_err e;
        enum dapi_qstate st = state_of(qs, a[i], 1000, &e);
        if(i < 5)
            T_CHECK(e == DAPI_ERR_NOT_FOUND, "result %d of 9 (oldest five) deleted", i);
        else
            T_CHECK(e == DAPI_OK && st == DAPI_Q_DONE, "result %d of 9 (newest four) kept", i);
    }
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* When the store is full, keys over their quota (here: after a restart with a smaller one)
 * lose their oldest results first; only then is a new query refused. */
static void test_full_store_costs_keys_over_quota(void)
{
    char state[128];
    state_dir(state, sizeof state, "fullstore");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[5][DAPI_SLUG_MAX], b[3][DAPI_SLUG_MAX], why[256];
    uint64_t size = 0;
    for(int i = 0; i < 5; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000 + i, a[i], NULL, 0),
                 DAPI_OK);
        size = t_result_write(qs, a[i], 50);
        dapi_queries_finish(qs, a[i], DAPI_OK, NULL, size);
    }
    dapi_queries_close(qs);

    /* Store of 5 results: full. Quota of 2 results per key: the owner is over it. */
    qs = open_reg(state, 3600, 5 * size, 1010, &u);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 2 * size + 1, 0};
    dapi_queries_set_limits(qs, &lim);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 5 * size); /* nothing deleted at open */
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT b", NULL, 1010, b[0], why, sizeof why),
             DAPI_OK);
    enum dapi_err e;
    state_of(qs, a[0], 1010, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND); /* the oldest of the key over its quota */
    T_EQ_INT(state_of(qs, a[1], 1010, NULL), DAPI_Q_DONE); /* only as many as needed */
    T_EQ_INT(dapi_queries_bytes(qs), 4 * size);
    dapi_queries_finish(qs, b[0], DAPI_OK, NULL, t_result_write(qs, b[0], 50));
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT b", NULL, 1011, b[1], why, sizeof why),
             DAPI_OK);
    state_of(qs, a[1], 1011, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    dapi_queries_finish(qs, b[1], DAPI_OK, NULL, t_result_write(qs, b[1], 50));
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT b", NULL, 1012, b[2], why, sizeof why),
             DAPI_OK);
    dapi_queries_finish(qs, b[2], DAPI_ERR_SQL, "x", 0);
    state_of(qs, a[2], 1012, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    /* Now the owner holds 2 results (its quota) + the other key 2: 4 of 5. One more result
     * of the owner's takes it over its quota: its oldest goes, the store stays at 4. */
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), 2 * size);
    char c[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT c", NULL, 1013, c, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, c, DAPI_OK, NULL, t_result_write(qs, c, 50));
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 2 * size);
    state_of(qs, a[3], 1013, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, a[4], 1013, NULL), DAPI_Q_DONE);
    T_EQ_INT(dapi_queries_bytes(qs), 4 * size);
    dapi_queries_close(qs);
    /* A store full of keys within their quota: BUSY (503) with the reason. */
    qs = open_reg(state, 3600, 4 * size, 1014, &u);
    if(!qs)
        return;
    dapi_queries_set_limits(qs, &lim);
    char d[DAPI_SLUG_MAX];
    why[0] = 'x';
    T_EQ_INT(dapi_queries_create(qs, third, "SELECT d", NULL, 1014, d, why, sizeof why),
             DAPI_ERR_BUSY);
    T_CHECK(strstr(why, "--max-state-bytes") != NULL, "why: [%s]", why);
    T_EQ_INT(dapi_queries_bytes(qs), 4 * size);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A stored message longer than a view's field is cut where a character starts and says so;
 * a removed query is gone (registry, disk, slot) and its waiters are woken. */
/* Every registered query is charged DAPI_QUERY_CHARGE in the byte quotas, whatever its state:
 * a key's failed queries (no result) used to count nothing while each kept its metadata on
 * disk and in memory for the retention. A key over its quota loses its oldest ended queries
 * (failed ones too) when it creates one more; a running one is never deleted for it. */
static void test_query_charge(void)
{
    const uint64_t C = DAPI_QUERY_CHARGE;
    char state[128];
    state_dir(state, sizeof state, "charge");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 3 * C + C / 2, C};
    dapi_queries_set_limits(qs, &lim);
    char f[6][DAPI_SLUG_MAX], o[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT o", NULL, 999, o, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, o, DAPI_ERR_SQL, "no such column", 0);
    for(int i = 0; i < 3; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT f", NULL, 1000 + i, f[i], NULL, 0),
                 DAPI_OK);
        T_EQ_INT(dapi_queries_key_bytes(qs, owner), (uint64_t)(i + 1) * C); /* queued: charged */
        dapi_queries_finish(qs, f[i], DAPI_ERR_SQL, "no such column", 0);
    }
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C); /* failed: still charged */
    T_EQ_INT(dapi_queries_bytes(qs), 4 * C);
    /* A fourth takes the key over its quota: its oldest failed query goes. */
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT f", NULL, 1003, f[3], NULL, 0), DAPI_OK);
    enum dapi_err e = DAPI_OK;
    state_of(qs, f[0], 1003, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, f[1], 1003, NULL), DAPI_Q_FAILED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), C); /* another key's are not touched */
    /* Running and queued queries are never deleted for the charge: the key may be over. */
    dapi_queries_set_running(qs, f[3]);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT f", NULL, 1004, f[4], NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT f", NULL, 1005, f[5], NULL, 0), DAPI_OK);
    state_of(qs, f[1], 1005, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    state_of(qs, f[2], 1005, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, f[3], 1005, NULL), DAPI_Q_RUNNING);
    T_EQ_INT(state_of(qs, f[4], 1005, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C);
    /* A charge set later applies to the queries registered already. */
    struct dapi_queries_limits none = {UINT64_MAX, UINT64_MAX, UINT64_MAX, 0};
    dapi_queries_set_limits(qs, &none);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 0);
    T_EQ_INT(dapi_queries_bytes(qs), 0);
    dapi_queries_set_limits(qs, &lim);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C);
    /* Deleting gives the charge back; so does a restart count it again. */
    int deleted = 0;
    T_EQ_INT(dapi_queries_cancel(qs, o, other, 1006, "deleted", &deleted), DAPI_OK);
    T_EQ_INT(deleted, 1);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), 0);
    for(int i = 3; i < 6; i++)
        dapi_queries_finish(qs, f[i], DAPI_ERR_SQL, "no such column", 0);
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1007, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C);
    T_EQ_INT(dapi_queries_bytes(qs), 3 * C);
    /* Files kept later (Nekt v1 pages) are charged the same way (f[3..5] failed, g queued). */
    dapi_queries_set_limits(qs, &lim);
    char g[DAPI_SLUG_MAX], why[256] = "";
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT g", NULL, 1008, g, NULL, 0), DAPI_OK);
    state_of(qs, f[3], 1008, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(dapi_queries_add_bytes(qs, g, C / 4, why, sizeof why), DAPI_OK);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C + C / 4);
    T_EQ_INT(dapi_queries_add_bytes(qs, g, C, why, sizeof why), DAPI_OK); /* f[4] goes */
    state_of(qs, f[4], 1008, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, f[5], 1008, NULL), DAPI_Q_FAILED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C + C / 4);
    /* more than the query alone may take: refused, nothing deleted for it */
    T_EQ_INT(dapi_queries_add_bytes(qs, g, 2 * C, why, sizeof why), DAPI_ERR_TOO_LARGE);
    T_CHECK(strstr(why, "--max-state-bytes-per-key") != NULL, "why: [%s]", why);
    T_EQ_INT(state_of(qs, f[5], 1008, NULL), DAPI_Q_FAILED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C + C / 4);
    T_EQ_INT(dapi_queries_add_bytes(qs, "dapi-query-nope", 1, why, sizeof why),
             DAPI_ERR_NOT_FOUND);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A Nekt v1 query (registered with an upstream reference) has no run and never ends: it is
 * deleted to make room like an ended query, oldest first; a queued local one is not. A page
 * writer that outlived its deleted query finds it gone, and what it wrote is removed. */
static void test_v1_queries_make_room(void)
{
    const uint64_t C = DAPI_QUERY_CHARGE;
    char state[128], d[256];
    state_dir(state, sizeof state, "v1room");
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, NULL);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 3 * C, C};
    dapi_queries_set_limits(qs, &lim);
    char local[DAPI_SLUG_MAX], v1[4][DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT l", NULL, 1000, local, NULL, 0), DAPI_OK);
    for(int i = 0; i < 4; i++)
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT v", "up-1", 1001 + i, v1[i], NULL, 0),
                 DAPI_OK);
    enum dapi_err e = DAPI_OK;
    state_of(qs, v1[0], 1005, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND); /* the oldest v1 query went, not the older local one */
    state_of(qs, v1[1], 1005, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, local, 1005, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(state_of(qs, v1[2], 1005, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 3 * C);
    /* the writer of a page of v1[0] made its directory again after the deletion */
    snprintf(d, sizeof d, "%s/queries/%s", state, v1[0]);
    T_CHECK(mkdir(d, 0700) == 0, "mkdir %s", d);
    char f[300];
    snprintf(f, sizeof f, "%s/page-1.bin", d);
    t_write(f, "page");
    T_EQ_INT(dapi_queries_dir_gone(qs, v1[0]), 1);
    T_CHECK(!t_exists(d), "%s removed", d);
    /* a query still there: left alone; nor is anything outside the store ever removed */
    T_EQ_INT(dapi_queries_dir_gone(qs, v1[3]), 0);
    snprintf(d, sizeof d, "%s/queries/%s", state, v1[3]);
    T_CHECK(mkdir(d, 0700) == 0 || errno == EEXIST, "mkdir %s", d);
    T_EQ_INT(dapi_queries_dir_gone(qs, ".."), 1);
    T_CHECK(t_exists(d), "%s kept", d);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Every kept result used to stay mapped for its query's life: one mapping each, so a server
 * keeping about 65,000 results hit vm.max_map_count and every new query failed ("out of
 * memory"), whoever sent it. At most mapped_max stay mapped, least recently used out; a result
 * is mapped again when read, and a reader's snapshot keeps its own reference. */
static void test_results_mapped_are_bounded(void)
{
    char state[128], s[8][DAPI_SLUG_MAX];
    state_dir(state, sizeof state, "mapped");
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, NULL);
    if(!qs)
        return;
    dapi_queries_set_mapped_max(qs, 3);
    for(int i = 0; i < 8; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT v", NULL, 1000, s[i], NULL, 0), DAPI_OK);
        if(i % 2) { /* a packed result and a result file in turn, i + 1 rows each */
            size_t len;
            void *img = t_result_small((uint64_t)i + 1, &len);
            dapi_queries_finish_small(qs, s[i], img, len);
            free(img);
        } else {
            dapi_queries_finish(qs, s[i], DAPI_OK, NULL,
                                t_result_write(qs, s[i], (uint64_t)i + 1));
        }
        T_CHECK(dapi_queries_mapped(qs) <= 3, "%llu mapped",
                (unsigned long long)dapi_queries_mapped(qs));
    }
    struct dapi_qview held, v;
    T_EQ_INT(dapi_queries_get(qs, s[0], owner, 1001, &held), DAPI_OK); /* mapped again */
    for(int round = 0; round < 2; round++)
        for(int i = 1; i < 8; i++) {
            T_EQ_INT(dapi_queries_get(qs, s[i], owner, 1001, &v), DAPI_OK);
            T_CHECK(v.result && dapi_result_rows(v.result) == (uint64_t)i + 1, "query %d's rows",
                    i);
            dapi_queries_release(qs, &v);
            T_CHECK(dapi_queries_mapped(qs) <= 3, "%llu mapped",
                    (unsigned long long)dapi_queries_mapped(qs));
            struct dapi_qstatus st;
            T_EQ_INT(dapi_queries_status(qs, s[(i + 4) % 8], owner, 1001, &st), DAPI_OK);
            T_EQ_INT(st.rows, (i + 4) % 8 + 1); /* known without its mapping */
            dapi_qstatus_free(&st);
        }
    /* the held snapshot's mapping outlived the registry's: still readable */
    T_CHECK(held.result != NULL, "held result");
    if(held.result) {
        const char *data;
        size_t len;
        t_result_page(held.result, 1, &data, &len);
        T_EQ_MEM(data, len, "{\"v\":0}");
    }
    dapi_queries_release(qs, &held);
    /* A restart maps the result files it verifies, not the packed results: read back from
     * their records (checked, their shape known), each is mapped when first used. (A start
     * with millions of packed queries spent a fifth of its time mapping and unmapping.) It
     * keeps at most the bound once set. */
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1002, NULL);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_mapped(qs), 4);
    for(int i = 1; i < 8; i += 2) {
        struct dapi_qstatus st;
        T_EQ_INT(dapi_queries_status(qs, s[i], owner, 1002, &st), DAPI_OK);
        T_EQ_INT(st.rows, i + 1);
        T_EQ_INT(st.pages, 1);
        dapi_qstatus_free(&st);
    }
    T_EQ_INT(dapi_queries_mapped(qs), 4);
    dapi_queries_set_mapped_max(qs, 2);
    T_CHECK(dapi_queries_mapped(qs) <= 2, "%llu mapped",
            (unsigned long long)dapi_queries_mapped(qs));
    for(int i = 0; i < 8; i++) {
        T_EQ_INT(dapi_queries_get(qs, s[i], owner, 1002, &v), DAPI_OK);
        T_CHECK(v.result && dapi_result_rows(v.result) == (uint64_t)i + 1, "query %d's rows", i);
        dapi_queries_release(qs, &v);
    }
    T_CHECK(dapi_queries_mapped(qs) <= 2, "%llu mapped",
            (unsigned long long)dapi_queries_mapped(qs));
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_long_message_and_remove(void)
{
    char state[128], qd[256], slug[DAPI_SLUG_MAX], gone[DAPI_SLUG_MAX];
    state_dir(state, sizeof state, "remove");
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, NULL);
    if(!qs)
        return;
    /* 'é' is two bytes: a cut at a fixed byte count would fall inside one of them */
    char *msg = malloc(3001);
    for(int i = 0; i < 1500; i++)
        memcpy(msg + 2 * i, "\xc3\xa9", 2);
    msg[3000] = '\0'; /* characters start at even offsets; the field's cut is at an odd one */
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, slug, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, slug, DAPI_ERR_SQL, msg, 0);
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1000, &v), DAPI_OK);
    size_t n = strlen(v.message);
    T_CHECK(n < sizeof v.message && n > 900, "cut to the field: %zu bytes", n);
    T_CHECK(n >= 10 && strcmp(v.message + n - 10, " ... (cut)") == 0, "says it is cut: [%s]",
            n > 40 ? v.message + n - 40 : v.message);
    /* the text before the note ends with a whole character */
    T_CHECK(n >= 12 && memcmp(v.message + n - 12, "\xc3\xa9", 2) == 0,
            "a whole 'é' before the note");
    dapi_queries_release(qs, &v);
    free(msg);

    /* remove: the query, its directory and its slot go; its waiter fires, not timed out */
    T_EQ_INT(dapi_queries_admit(qs, owner), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, gone, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_hold(qs, gone, owner), 0);
    T_EQ_INT(dapi_queries_active(qs, owner), 1);
    struct t_waited w = {0};
    T_EQ_INT(dapi_queries_wait(qs, gone, 1000000, t_on_wake, &w), 0);
    query_dir(qd, sizeof qd, state, gone);
    T_CHECK(!t_exists(qd), "no directory before its run");
    t_query_dir_make(qs, gone); /* (as its run's start does) */
    dapi_queries_remove(qs, gone);
    T_EQ_INT(w.calls, 1);
    T_EQ_INT(w.timed_out, 0);
    T_CHECK(!t_exists(qd), "the query's directory is removed");
    T_EQ_INT(dapi_queries_get(qs, gone, owner, 1000, &v), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(dapi_queries_active(qs, owner), 0);
    dapi_queries_remove(qs, gone); /* unknown now: ignored */
    dapi_queries_remove(qs, "dapi-query-unknown");
    T_EQ_INT(state_of(qs, slug, 1000, NULL), DAPI_Q_FAILED); /* the other one is untouched */
    dapi_queries_close(qs);
    /* and it does not come back at the next start */
    struct unfinished u = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    T_EQ_INT(u.calls, 0);
    if(qs) {
        T_EQ_INT(dapi_queries_get(qs, gone, owner, 1000, &v), DAPI_ERR_NOT_FOUND);
        dapi_queries_close(qs);
    }
}

/* A query's scope is stored with it: every rewrite of meta.json keeps it (start of a run,
 * an upstream reference, the outcome), and a query resumed after a restart has it back —
 * never "every layer". A scope that cannot be read makes the query damaged. */
static void test_scope(void)
{
    char state[128], qd[256], p[300];
    state_dir(state, sizeof state, "scope");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    struct dapi_scope sc = {0}, got, all = {.all = 1}, none = {0};
    sc.n = 2;
    snprintf(sc.layers[0], sizeof sc.layers[0], "pub");
    snprintf(sc.layers[1], sizeof sc.layers[1], "we\"ird,\\name");
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX], d[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create_scoped(qs, owner, &sc, "SELECT 'a'", NULL, 1000, a, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create_scoped(qs, owner, &all, "SELECT 'b'", NULL, 1000, b, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create_scoped(qs, owner, &none, "SELECT 'c'", NULL, 1000, c, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create_scoped(qs, owner, &sc, "SELECT 'd'", NULL, 1000, d, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_scope(qs, a, &got), DAPI_OK);
    T_CHECK(!got.all && got.n == 2 && strcmp(got.layers[1], "we\"ird,\\name") == 0, "a's scope");
    T_EQ_INT(dapi_queries_scope(qs, b, &got), DAPI_OK);
    T_CHECK(got.all, "b reads every layer");
    T_EQ_INT(dapi_queries_scope(qs, "dapi-query-unknown", &got), DAPI_ERR_NOT_FOUND);
    /* every rewrite of meta.json keeps it */
    char why[256];
    T_EQ_INT(dapi_queries_start_run(qs, a, why, sizeof why), DAPI_OK);
    T_EQ_INT(dapi_queries_set_upstream(qs, a, "up-1"), DAPI_OK);
    dapi_queries_close(qs);

    struct unfinished u2 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u2);
    if(!qs)
        return;
    T_CHECK(unfinished_has(&u2, a, "SELECT 'a'"), "a resumed");
    T_EQ_INT(dapi_queries_scope(qs, a, &got), DAPI_OK);
    T_CHECK(!got.all && got.n == 2 && strcmp(got.layers[0], "pub") == 0 &&
                strcmp(got.layers[1], "we\"ird,\\name") == 0,
            "a resumed with its scope");
    T_EQ_INT(dapi_queries_scope(qs, b, &got), DAPI_OK);
    T_CHECK(got.all, "b still reads every layer");
    T_EQ_INT(dapi_queries_scope(qs, c, &got), DAPI_OK);
    T_CHECK(!got.all && got.n == 0, "c reads no layer");
    dapi_queries_finish(qs, a, DAPI_ERR_SQL, "failed", 0);
    dapi_queries_close(qs);
    /* a damaged scope: the query is dropped, not run with every layer */
    dapi_queries_dir(qs = open_reg(state, 3600, UINT64_MAX, 1002, &u2), d, qd, sizeof qd);
    dapi_queries_close(qs);
    snprintf(p, sizeof p, "%s/meta.json", qd);
    struct dapi_buf mb;
    dapi_buf_init(&mb, 1 << 20);
    T_EQ_INT(dapi_buf_add_file(&mb, p), DAPI_OK);
    char *at = mb.data ? strstr(mb.data, "\"scope\":[") : NULL;
    T_CHECK(at != NULL, "scope in meta.json");
    if(at) {
        memcpy(at, "\"scope\":7", 9);
        memset(at + 9, ' ', strcspn(at + 9, "]") + 1);
        t_write(p, mb.data);
    }
    dapi_buf_free(&mb);
    struct unfinished u3 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1003, &u3);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_scope(qs, d, &got), DAPI_ERR_NOT_FOUND);
    T_CHECK(!unfinished_has(&u3, d, NULL), "damaged scope: not resumed");
    T_EQ_INT(dapi_queries_scope(qs, a, &got), DAPI_OK);
    T_CHECK(!got.all && got.n == 2, "a's scope kept through its outcome");
    dapi_queries_close(qs);
}

int main(void)
{
    if(fixture_setup("queries"))
        T_DONE();
    test_lifecycle();
    test_waiter_deadline();
    test_restart();
    test_retention();
    test_state_cap();
    test_accessors();
    test_damaged_meta();
    test_admission();
    test_key_quota();
    test_oldest_across_restart();
    test_full_store_costs_keys_over_quota();
    test_query_charge();
    test_v1_queries_make_room();
    test_results_mapped_are_bounded();
    test_long_message_and_remove();
    test_scope();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
