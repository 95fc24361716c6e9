/* A query's lifecycle in the registry: times recorded (injected clock) and persisted, columns
 * stored with the result and read back after a restart, status, the key's list (newest first,
 * paged), cancellation (the run's flag, the cancelled state across a restart, deletion of a
 * finished query, queries sharing a run) and abandoned queries (the tick, injected time). */
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"
#include "store/queries.h"
#include "t.h"

static char root[64];
static unsigned char owner[DAPI_KEY_HASH_LEN], other[DAPI_KEY_HASH_LEN];
static int64_t clock_now = 5000;

static int64_t fake_wall(void)
{
    return clock_now;
}

static void no_unfinished(void *arg, const char *slug, const char *sql)
{
    (*(int *)arg)++;
}

static struct dapi_queries *reopen(const char *state, int64_t now_s, int *unfinished)
{
    struct dapi_queries *qs = t_registry_open(state, 86400, UINT64_MAX, now_s, no_unfinished,
                                              unfinished);
    if(qs)
        dapi_queries_set_clock(qs, fake_wall);
    return qs;
}

static void create(struct dapi_queries *qs, const unsigned char *key, const char *sql,
                   int64_t now_s, char *slug)
{
    T_EQ_INT(dapi_queries_create(qs, key, sql, NULL, now_s, slug, NULL, 0), DAPI_OK);
}

/* Runs slug to its end as a backend would: start, columns, result, finish. */
static void run(struct dapi_queries *qs, const char *slug, int64_t start, int64_t end,
                uint64_t rows)
{
    clock_now = start;
    T_EQ_INT(dapi_queries_start_run(qs, slug, NULL, 0), DAPI_OK);
    const char *names[] = {"v", "d"}, *types[] = {"BIGINT", "DECIMAL(18,3)"};
    T_EQ_INT(dapi_queries_set_columns(qs, slug, 2, names, types), DAPI_OK);
    uint64_t bytes = t_result_write(qs, slug, rows);
    clock_now = end;
    dapi_queries_finish(qs, slug, DAPI_OK, NULL, bytes);
}

static void test_times_columns_restart(void)
{
    char state[256], slug[DAPI_SLUG_MAX], empty[DAPI_SLUG_MAX], failed[DAPI_SLUG_MAX];
    int unfinished = 0;
    t_fresh_dir(state, sizeof state, root, "times");
    struct dapi_queries *qs = reopen(state, 1000, &unfinished);
    if(!qs)
        return;
    create(qs, owner, "SELECT 1", 1000, slug);
    struct dapi_qstatus st;
    T_EQ_INT(dapi_queries_status(qs, slug, owner, 1000, &st), DAPI_OK);
    T_EQ_INT(st.state, DAPI_Q_QUEUED);
    T_EQ_INT(st.created_s, 1000);
    T_EQ_INT(st.started_s, 0);
    T_EQ_INT(st.finished_s, 0);
    T_EQ_INT(st.rows, -1);
    T_EQ_INT(st.columns_known, 0);
    T_EQ_STR(st.sql, "SELECT 1");
    dapi_qstatus_free(&st);
    T_EQ_INT(dapi_queries_status(qs, slug, other, 1000, &st), DAPI_ERR_NOT_FOUND);
    run(qs, slug, 1002, 1005, 150);
    create(qs, owner, "SELECT 2 WHERE false", 1006, empty);
    run(qs, empty, 1007, 1008, 0);
    create(qs, owner, "SELECT boom", 1009, failed);
    clock_now = 1010;
    T_EQ_INT(dapi_queries_start_run(qs, failed, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, failed, DAPI_ERR_SQL, "Binder Error: boom", 0);
    dapi_queries_close(qs);

    /* everything is read back after a restart */
    qs = reopen(state, 1100, &unfinished);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_status(qs, slug, owner, 1100, &st), DAPI_OK);
    T_EQ_INT(st.state, DAPI_Q_DONE);
    T_EQ_INT(st.created_s, 1000);
    T_EQ_INT(st.started_s, 1002);
    T_EQ_INT(st.finished_s, 1005);
    T_EQ_INT(st.rows, 150);
    T_EQ_INT(st.pages, 2);
    T_CHECK(st.bytes > 0, "bytes known");
    T_EQ_INT(st.columns_known, 1);
    T_EQ_INT(st.columns.n, 2);
    if(st.columns.n == 2) {
        T_EQ_STR(st.columns.names[1], "d");
        T_EQ_STR(st.columns.types[1], "DECIMAL(18,3)");
    }
    dapi_qstatus_free(&st);
    struct dapi_columns c;
    T_EQ_INT(dapi_queries_columns(qs, empty, owner, 1100, &c), DAPI_OK);
    T_EQ_INT(c.n, 2);
    if(c.n == 2)
        T_EQ_STR(c.types[0], "BIGINT");
    dapi_columns_free(&c);
    T_EQ_INT(dapi_queries_columns(qs, empty, other, 1100, &c), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(dapi_queries_columns(qs, failed, owner, 1100, &c), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_queries_status(qs, failed, owner, 1100, &st), DAPI_OK);
    T_EQ_INT(st.state, DAPI_Q_FAILED);
    T_EQ_INT(st.error, DAPI_ERR_SQL);
    T_EQ_STR(st.message ? st.message : "", "Binder Error: boom");
    T_EQ_INT(st.finished_s, 1010);
    dapi_qstatus_free(&st);
    T_EQ_INT(unfinished, 0);
    dapi_queries_close(qs);
}

static void test_list(void)
{
    char state[256], slugs[5][DAPI_SLUG_MAX], mine[DAPI_SLUG_MAX];
    int unfinished = 0;
    t_fresh_dir(state, sizeof state, root, "list");
    struct dapi_queries *qs = reopen(state, 1000, &unfinished);
    if(!qs)
        return;
    for(int i = 0; i < 5; i++)
        create(qs, owner, "SELECT 1", 1000, slugs[i]); /* same second: registration order */
    create(qs, other, "SELECT 2", 1001, mine);
    struct dapi_qsummary *v = NULL;
    size_t n = 0;
    int more = 0;
    T_EQ_INT(dapi_queries_list(qs, owner, 1002, 0, 2, &v, &n, &more), DAPI_OK);
    T_EQ_INT(n, 2);
    T_EQ_INT(more, 1);
    if(n == 2) {
        T_EQ_STR(v[0].slug, slugs[4]);
        T_EQ_STR(v[1].slug, slugs[3]);
    }
    uint64_t cursor = n ? v[n - 1].seq : 0;
    dapi_qsummaries_free(v, n);
    T_EQ_INT(dapi_queries_list(qs, owner, 1002, cursor, 10, &v, &n, &more), DAPI_OK);
    T_EQ_INT(n, 3);
    T_EQ_INT(more, 0);
    if(n == 3)
        T_EQ_STR(v[2].slug, slugs[0]);
    dapi_qsummaries_free(v, n);
    T_EQ_INT(dapi_queries_list(qs, other, 1002, 0, 10, &v, &n, &more), DAPI_OK);
    T_EQ_INT(n, 1);
    if(n == 1)
        T_EQ_STR(v[0].slug, mine);
    dapi_qsummaries_free(v, n);
    dapi_queries_close(qs);
}

static void test_cancel(void)
{
    char state[256], running[DAPI_SLUG_MAX], queued[DAPI_SLUG_MAX], done[DAPI_SLUG_MAX];
    int unfinished = 0;
    t_fresh_dir(state, sizeof state, root, "cancel");
    struct dapi_queries *qs = reopen(state, 1000, &unfinished);
    if(!qs)
        return;
    create(qs, owner, "SELECT 1", 1000, running);
    T_EQ_INT(dapi_queries_hold(qs, running, NULL), 0);
    create(qs, owner, "SELECT 2", 1000, queued);
    T_EQ_INT(dapi_queries_hold(qs, queued, NULL), 0);
    create(qs, owner, "SELECT 3", 1000, done);
    run(qs, done, 1001, 1001, 3);
    T_EQ_INT(dapi_queries_active(qs, owner), 2);
    clock_now = 1002;
    T_EQ_INT(dapi_queries_start_run(qs, running, NULL, 0), DAPI_OK);
    atomic_int flag = 0;
    T_EQ_INT(dapi_queries_set_cancel_flag(qs, running, &flag), 0);
    int deleted = -1;
    T_EQ_INT(dapi_queries_cancel(qs, running, other, 1003, "x", &deleted), DAPI_ERR_NOT_FOUND);
    T_EQ_INT(atomic_load(&flag), 0);
    T_EQ_INT(dapi_queries_cancel(qs, running, owner, 1003, "by owner", &deleted), DAPI_OK);
    T_EQ_INT(deleted, 0);
    T_EQ_INT(atomic_load(&flag), 1); /* the run is interrupted */
    T_EQ_INT(dapi_queries_cancelled(qs, running), 1);
    T_EQ_INT(dapi_queries_active(qs, owner), 1); /* its slot is back */
    /* the run ends (interrupted): the query stays cancelled, nothing of it is stored */
    dapi_queries_set_cancel_flag(qs, running, NULL);
    dapi_queries_finish(qs, running, DAPI_ERR_TIMEOUT, "interrupted", 0);
    T_EQ_INT(t_registry_state(qs, running, owner, 1004, NULL), DAPI_Q_CANCELLED);
    /* a queued one is never started */
    T_EQ_INT(dapi_queries_cancel(qs, queued, owner, 1004, "by owner", &deleted), DAPI_OK);
    T_EQ_INT(dapi_queries_start_run(qs, queued, NULL, 0), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_queries_active(qs, owner), 0);
    /* a finished one is deleted */
    T_EQ_INT(dapi_queries_cancel(qs, done, owner, 1004, "by owner", &deleted), DAPI_OK);
    T_EQ_INT(deleted, 1);
    T_EQ_INT(t_registry_state(qs, done, owner, 1004, NULL), -1);
    dapi_queries_close(qs);

    /* cancelled survives a restart and is not run again */
    qs = reopen(state, 1100, &unfinished);
    if(!qs)
        return;
    T_EQ_INT(unfinished, 0);
    struct dapi_qstatus st;
    T_EQ_INT(dapi_queries_status(qs, running, owner, 1100, &st), DAPI_OK);
    T_EQ_INT(st.state, DAPI_Q_CANCELLED);
    T_EQ_INT(st.finished_s, 1003);
    T_EQ_STR(st.message ? st.message : "", "by owner");
    dapi_qstatus_free(&st);
    T_EQ_INT(t_registry_state(qs, queued, owner, 1100, NULL), DAPI_Q_CANCELLED);
    T_EQ_INT(t_registry_state(qs, done, owner, 1100, NULL), -1);
    /* a second DELETE deletes it */
    T_EQ_INT(dapi_queries_cancel(qs, running, owner, 1100, "again", &deleted), DAPI_OK);
    T_EQ_INT(deleted, 1);
    T_EQ_INT(t_registry_state(qs, running, owner, 1100, NULL), -1);
    dapi_queries_close(qs);
}

static void test_shared_run(void)
{
    char state[256], leader[DAPI_SLUG_MAX], f1[DAPI_SLUG_MAX], f2[DAPI_SLUG_MAX];
    int unfinished = 0;
    t_fresh_dir(state, sizeof state, root, "shared");
    struct dapi_queries *qs = reopen(state, 1000, &unfinished);
    if(!qs)
        return;
    struct dapi_reuse ru = {"ab12", "", 300};
    enum dapi_reused how;
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 1", NULL, &ru, 1000, leader,
                                         &how, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_start_run(qs, leader, NULL, 0), DAPI_OK);
    atomic_int flag = 0;
    dapi_queries_set_cancel_flag(qs, leader, &flag);
    T_EQ_INT(dapi_queries_create_reusing(qs, other, NULL, "SELECT 1", NULL, &ru, 1000, f1, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_RUN);
    T_EQ_INT(dapi_queries_create_reusing(qs, other, NULL, "SELECT 1", NULL, &ru, 1000, f2, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_RUN);
    int deleted;
    /* a follower leaves: the run goes on */
    T_EQ_INT(dapi_queries_cancel(qs, f1, other, 1001, "x", &deleted), DAPI_OK);
    T_EQ_INT(atomic_load(&flag), 0);
    T_EQ_INT(t_registry_state(qs, f1, other, 1001, NULL), DAPI_Q_CANCELLED);
    /* the leader is cancelled: the run goes on for f2 */
    T_EQ_INT(dapi_queries_cancel(qs, leader, owner, 1001, "x", &deleted), DAPI_OK);
    T_EQ_INT(atomic_load(&flag), 0);
    T_EQ_INT(dapi_queries_cancelled(qs, leader), 0); /* (its run still has a user) */
    /* the run ends: f2 gets the result, the leader stays cancelled */
    uint64_t bytes = t_result_write(qs, leader, 5);
    dapi_queries_finish(qs, leader, DAPI_OK, NULL, bytes);
    T_EQ_INT(t_registry_state(qs, f2, other, 1002, NULL), DAPI_Q_DONE);
    T_EQ_INT(t_registry_state(qs, leader, owner, 1002, NULL), DAPI_Q_CANCELLED);
    T_EQ_INT(t_registry_state(qs, f1, other, 1002, NULL), DAPI_Q_CANCELLED);

    /* the last follower of a cancelled leader leaves: the run is stopped */
    char l2[DAPI_SLUG_MAX], f3[DAPI_SLUG_MAX];
    struct dapi_reuse ru2 = {"cd34", "", 300};
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 2", NULL, &ru2, 1003, l2, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_start_run(qs, l2, NULL, 0), DAPI_OK);
    atomic_int flag2 = 0;
    dapi_queries_set_cancel_flag(qs, l2, &flag2);
    T_EQ_INT(dapi_queries_create_reusing(qs, other, NULL, "SELECT 2", NULL, &ru2, 1003, f3, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_cancel(qs, l2, owner, 1004, "x", &deleted), DAPI_OK);
    T_EQ_INT(atomic_load(&flag2), 0);
    T_EQ_INT(dapi_queries_cancel(qs, f3, other, 1004, "x", &deleted), DAPI_OK);
    T_EQ_INT(atomic_load(&flag2), 1);
    dapi_queries_set_cancel_flag(qs, l2, NULL);
    dapi_queries_finish(qs, l2, DAPI_ERR_TIMEOUT, "interrupted", 0);
    T_EQ_INT(t_registry_state(qs, l2, owner, 1005, NULL), DAPI_Q_CANCELLED);
    dapi_queries_close(qs);
}

static void test_abandon(void)
{
    char state[256], idle[DAPI_SLUG_MAX], asked[DAPI_SLUG_MAX], waited[DAPI_SLUG_MAX];
    int unfinished = 0;
    t_fresh_dir(state, sizeof state, root, "abandon");
    struct dapi_queries *qs = reopen(state, 1000, &unfinished);
    if(!qs)
        return;
    dapi_queries_set_abandon(qs, 60);
    create(qs, owner, "SELECT 1", 1000, idle);
    create(qs, owner, "SELECT 2", 1000, asked);
    create(qs, owner, "SELECT 3", 1000, waited);
    T_EQ_INT(dapi_queries_hold(qs, asked, NULL), 0); /* admitted: to be run */
    T_EQ_INT(dapi_queries_hold(qs, waited, NULL), 0);
    char norun[DAPI_SLUG_MAX]; /* no slot, no run (a Nekt v1 query): never abandoned */
    create(qs, owner, "SELECT 4", 1000, norun);
    atomic_int flag = 0;
    T_EQ_INT(dapi_queries_start_run(qs, idle, NULL, 0), DAPI_OK);
    dapi_queries_set_cancel_flag(qs, idle, &flag);
    struct t_waited w = {0};
    T_EQ_INT(dapi_queries_wait(qs, waited, 1000 * 1000 + 1000000, t_on_wake, &w), 0);
    dapi_queries_tick(qs, 1059, 1059 * 1000);
    T_EQ_INT(atomic_load(&flag), 0);
    T_EQ_INT(t_registry_state(qs, asked, owner, 1030, NULL), DAPI_Q_QUEUED); /* asks */
    dapi_queries_tick(qs, 1060, 1060 * 1000);
    T_EQ_INT(atomic_load(&flag), 1); /* interrupted */
    T_EQ_INT(t_registry_state(qs, idle, owner, 1061, NULL), DAPI_Q_CANCELLED);
    T_EQ_INT(t_registry_state(qs, asked, owner, 1061, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(t_registry_state(qs, waited, owner, 1061, NULL), DAPI_Q_QUEUED);
    dapi_queries_tick(qs, 1120, 1120 * 1000); /* 59 s after it was last asked about */
    T_EQ_INT(t_registry_state(qs, idle, owner, 1120, NULL), DAPI_Q_CANCELLED);
    dapi_queries_tick(qs, 1122, 1122 * 1000); /* 61 s */
    T_EQ_INT(t_registry_state(qs, asked, owner, 1123, NULL), DAPI_Q_CANCELLED);
    T_EQ_INT(t_registry_state(qs, waited, owner, 1123, NULL), DAPI_Q_QUEUED); /* waited on */
    T_EQ_INT(t_registry_state(qs, norun, owner, 1123, NULL), DAPI_Q_QUEUED);
    T_EQ_INT(dapi_queries_active(qs, owner), 1); /* the abandoned ones gave theirs back */
    dapi_queries_set_cancel_flag(qs, idle, NULL);
    dapi_queries_cancel_waiters(qs);
    T_EQ_INT(w.calls, 1);
    /* 0: never */
    dapi_queries_set_abandon(qs, 0);
    dapi_queries_tick(qs, 9000, 9000 * 1000);
    T_EQ_INT(t_registry_state(qs, waited, owner, 9000, NULL), DAPI_Q_QUEUED);
    dapi_queries_close(qs);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_tmpdir(root, sizeof root, "lifecycle"))
        T_DONE();
    dapi_sha256("owner-key", 9, owner);
    dapi_sha256("other-key", 9, other);
    test_times_columns_restart();
    test_list();
    test_cancel();
    test_shared_run();
    test_abandon();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
