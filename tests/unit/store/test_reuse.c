/* Result reuse in the query registry: hits and misses (identity, lake fingerprint, max age,
 * bypass) with injected time, single-flight (many identical creations share one run),
 * results shared on disk by hard links (deleting one slug never breaks another) and how
 * per-key quotas count them. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keys.h"
#include "base/log.h"
#include "store/queries.h"
#include "store/result.h"
#include "t.h"

static char root[64];
static unsigned char owner[DAPI_KEY_HASH_LEN], other[DAPI_KEY_HASH_LEN];

static void state_dir(char *out, size_t n, const char *name)
{
    t_fresh_dir(out, n, root, name);
}

static void query_dir(char *out, size_t n, const char *state, const char *slug)
{
    snprintf(out, n, "%s/queries/%s", state, slug);
}

static void on_unfinished(void *arg, const char *slug, const char *sql)
{
    (void)arg;
    (void)slug;
    (void)sql;
}

static struct dapi_queries *open_reg(const char *state, int64_t retention, uint64_t max_bytes,
                                     int64_t now_s, void *u)
{
    return t_registry_open(state, retention, max_bytes, now_s, on_unfinished, u);
}

static enum dapi_reused reuse_create(struct dapi_queries *qs, const unsigned char *key,
                                     const char *ident, const char *fp, int64_t max_age,
                                     int64_t now_s, char *slug)
{
    struct dapi_reuse ru = {ident, fp, max_age};
    enum dapi_reused how = (enum dapi_reused) - 1;
    T_EQ_INT(dapi_queries_create_reusing(qs, key, NULL, "SELECT 42", NULL, &ru, now_s, slug, &how,
                                         NULL, 0),
             DAPI_OK);
    return how;
}

static uint64_t page_len(struct dapi_queries *qs, const char *slug, const unsigned char *key,
                         int64_t now_s)
{
    struct dapi_qview v;
    if(dapi_queries_get(qs, slug, key, now_s, &v))
        return 0;
    const char *data;
    size_t len = 0;
    if(v.state == DAPI_Q_DONE && v.result)
        t_result_page(v.result, 1, &data, &len);
    dapi_queries_release(qs, &v);
    return len;
}

/* Hit, miss on another identity or fingerprint, bypass, max age (injected time). */
static void test_reuse(void)
{
    char state[128];
    state_dir(state, sizeof state, "reuse");
    int u = 0;
    struct dapi_queries *qs = open_reg(state, 1000, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX], d[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp1", 300, 1000, a), DAPI_REUSED_NONE);
    uint64_t bytes = t_result_write(qs, a, 7);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, bytes);
    /* hit: done at once, same rows, a file of its own (a hard link) */
    T_EQ_INT(reuse_create(qs, other, "id1", "fp1", 300, 1100, b), DAPI_REUSED_RESULT);
    T_CHECK(strcmp(a, b) != 0, "a new slug");
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, b, other, 1100, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_DONE);
    dapi_queries_release(qs, &v);
    T_EQ_INT(page_len(qs, b, other, 1100), page_len(qs, a, owner, 1100));
    char ra[4096], rb[4096];
    struct stat st;
    dapi_queries_result_path(qs, a, ra, sizeof ra);
    dapi_queries_result_path(qs, b, rb, sizeof rb);
    T_CHECK(stat(rb, &st) == 0 && st.st_nlink == 2, "shared by a hard link");
    /* each owner is charged the whole result; the store counts it per slug */
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), bytes + DAPI_QUERY_CHARGE);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), bytes + DAPI_QUERY_CHARGE);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);
    /* misses: another identity, a changed lake, a bypass (max age 0) */
    T_EQ_INT(reuse_create(qs, owner, "id2", "fp1", 300, 1100, c), DAPI_REUSED_NONE);
    dapi_queries_finish(qs, c, DAPI_ERR_SQL, "x", 0);
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 300, 1100, c), DAPI_REUSED_NONE);
    dapi_queries_finish(qs, c, DAPI_OK, NULL, t_result_write(qs, c, 3));
    /* the newest holder is fp2's now: fp1 misses (its files changed back? then it runs) */
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 0, 1100, d), DAPI_REUSED_NONE);
    dapi_queries_finish(qs, d, DAPI_OK, NULL, t_result_write(qs, d, 3));
    /* max age: counted from when the data was read (d: 1100), a reuse keeps that time */
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 300, 1399, a), DAPI_REUSED_RESULT);
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 300, 1400, b), DAPI_REUSED_NONE);
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 10, 1405, c), DAPI_REUSED_RUN);
    dapi_queries_finish(qs, b, DAPI_OK, NULL, t_result_write(qs, b, 3));
    T_EQ_INT(t_registry_state(qs, c, owner, 1405, NULL), DAPI_Q_DONE);
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 10, 1409, d), DAPI_REUSED_RESULT);
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 10, 1410, d), DAPI_REUSED_NONE);
    dapi_queries_finish(qs, d, DAPI_ERR_SQL, "boom", 0);
    /* a failed run is never reused */
    T_EQ_INT(reuse_create(qs, owner, "id1", "fp2", 10, 1411, a), DAPI_REUSED_NONE);
    /* no identity: never */
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 1", NULL, NULL, 1411, b, NULL,
                                         NULL, 0),
             DAPI_OK);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Single-flight: creations while a run is queued or running share its outcome. */
static void test_reuse_single_flight(void)
{
    char state[128];
    state_dir(state, sizeof state, "reuse-flight");
    int u = 0;
    struct dapi_queries *qs = open_reg(state, 1000, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char lead[DAPI_SLUG_MAX], f[50][DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "fl", "", 300, 1000, lead), DAPI_REUSED_NONE);
    T_EQ_INT(dapi_queries_hold(qs, lead, NULL), 0);
    int attached = 0;
    for(int i = 0; i < 50; i++) {
        attached += reuse_create(qs, i % 2 ? owner : other, "fl", "", 300, 1001, f[i]) ==
                    DAPI_REUSED_RUN;
        dapi_queries_hold(qs, f[i], NULL); /* each creation holds a slot of its own key */
    }
    T_EQ_INT(attached, 50);
    T_EQ_INT(dapi_queries_active(qs, NULL), 51);
    T_EQ_INT(dapi_queries_active(qs, other), 25);
    T_EQ_INT(dapi_queries_claim(qs, f[0]), 0); /* a follower is never run itself */
    struct t_waited w = {0};
    T_EQ_INT(dapi_queries_wait(qs, f[1], 1000000, t_on_wake, &w), 0);
    T_EQ_INT(dapi_queries_claim(qs, lead), 1);
    uint64_t bytes = t_result_write(qs, lead, 9);
    dapi_queries_finish(qs, lead, DAPI_OK, NULL, bytes);
    T_EQ_INT(w.calls, 1);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);
    for(int i = 0; i < 50; i++)
        T_EQ_INT(page_len(qs, f[i], i % 2 ? owner : other, 1002), page_len(qs, lead, owner, 1002));
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 26 * (bytes + DAPI_QUERY_CHARGE));
    T_EQ_INT(dapi_queries_key_bytes(qs, other), 25 * (bytes + DAPI_QUERY_CHARGE));
    /* a hold after the shared run ended takes nothing */
    dapi_queries_hold(qs, f[2], NULL);
    T_EQ_INT(dapi_queries_active(qs, NULL), 0);

    /* a failed run fails every attached query the same way */
    char l2[DAPI_SLUG_MAX], g[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "fl2", "", 300, 1010, l2), DAPI_REUSED_NONE);
    T_EQ_INT(reuse_create(qs, owner, "fl2", "", 300, 1010, g), DAPI_REUSED_RUN);
    dapi_queries_finish(qs, l2, DAPI_ERR_SQL, "Binder Error: nope", 0);
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, g, owner, 1010, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_SQL);
    T_CHECK(strcmp(v.message, "Binder Error: nope") == 0, "same message: %s", v.message);
    dapi_queries_release(qs, &v);
    /* a leader removed (creation refused) leaves its followers retryable, not stuck */
    T_EQ_INT(reuse_create(qs, owner, "fl3", "", 300, 1010, l2), DAPI_REUSED_NONE);
    T_EQ_INT(reuse_create(qs, owner, "fl3", "", 300, 1010, g), DAPI_REUSED_RUN);
    dapi_queries_remove(qs, l2);
    T_EQ_INT(dapi_queries_get(qs, g, owner, 1010, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_BUSY);
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_retry(qs, g), DAPI_OK);
    T_EQ_INT(dapi_queries_claim(qs, g), 1);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Shared files: deleting or expiring one slug never breaks another; restarts keep both. */
static void test_reuse_refcount(void)
{
    char state[128], qa[256];
    state_dir(state, sizeof state, "reuse-refs");
    int u = 0;
    struct dapi_queries *qs = open_reg(state, 100, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "rc", "f", 300, 1000, a), DAPI_REUSED_NONE);
    uint64_t bytes = t_result_write(qs, a, 11);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, bytes);
    uint64_t len = page_len(qs, a, owner, 1000);
    T_EQ_INT(reuse_create(qs, other, "rc", "f", 300, 1050, b), DAPI_REUSED_RESULT);
    /* a's retention ends (per slug: b was created later); b keeps its rows */
    dapi_queries_tick(qs, 1100, 0);
    query_dir(qa, sizeof qa, state, a);
    T_CHECK(!t_exists(qa), "a expired");
    T_EQ_INT(page_len(qs, b, other, 1100), len);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), 0);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), bytes + DAPI_QUERY_CHARGE);
    T_EQ_INT(dapi_queries_bytes(qs), bytes + DAPI_QUERY_CHARGE);
    /* b is the holder now: reused again (data time still 1000) */
    T_EQ_INT(reuse_create(qs, owner, "rc", "f", 300, 1120, c), DAPI_REUSED_RESULT);
    dapi_queries_close(qs);
    /* after a restart: both still served, the identity known again */
    qs = open_reg(state, 100, UINT64_MAX, 1121, &u);
    T_EQ_INT(page_len(qs, b, other, 1121), len);
    T_EQ_INT(page_len(qs, c, owner, 1121), len);
    dapi_queries_remove(qs, c); /* deleting one: the other intact */
    T_EQ_INT(page_len(qs, b, other, 1121), len);
    char d[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "rc", "f", 300, 1122, d), DAPI_REUSED_RESULT);
    T_EQ_INT(reuse_create(qs, owner, "rc", "f", 300, 1300, d), DAPI_REUSED_NONE); /* too old */
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A reuse charges its owner: over the per-key quota its oldest results go, never another's. */
/* A cancelled query whose run goes on for the queries sharing it is no victim of its key's
 * quota (each query is charged DAPI_QUERY_CHARGE, ended ones are deleted to make room): the
 * run still delivers to them. */
static void test_cancelled_leader_kept_for_its_followers(void)
{
    const uint64_t C = DAPI_QUERY_CHARGE;
    char state[128], why[256] = "";
    state_dir(state, sizeof state, "cancelled-leader");
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, NULL);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, 2 * C + C / 2, C};
    dapi_queries_set_limits(qs, &lim);
    char lead[DAPI_SLUG_MAX], f[DAPI_SLUG_MAX], x[DAPI_SLUG_MAX], y[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "cl", "f", 300, 1000, lead), DAPI_REUSED_NONE);
    T_EQ_INT(dapi_queries_start_run(qs, lead, why, sizeof why), DAPI_OK);
    T_EQ_INT(reuse_create(qs, other, "cl", "f", 300, 1000, f), DAPI_REUSED_RUN);
    int deleted = -1;
    T_EQ_INT(dapi_queries_cancel(qs, lead, owner, 1000, "cancelled by its owner", &deleted),
             DAPI_OK);
    T_EQ_INT(deleted, 0);
    /* the owner's next queries take it over its quota; the cancelled one still runs */
    T_EQ_INT(reuse_create(qs, owner, "x", "f", 300, 1001, x), DAPI_REUSED_NONE);
    T_EQ_INT(reuse_create(qs, owner, "y", "f", 300, 1002, y), DAPI_REUSED_NONE);
    T_EQ_INT(t_registry_state(qs, lead, owner, 1002, NULL), DAPI_Q_CANCELLED);
    uint64_t bytes = t_result_write(qs, lead, 9);
    dapi_queries_finish(qs, lead, DAPI_OK, NULL, bytes);
    T_EQ_INT(t_registry_state(qs, f, other, 1003, NULL), DAPI_Q_DONE);
    T_CHECK(page_len(qs, f, other, 1003) > 0, "the run delivered to the query sharing it");
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_reuse_quota(void)
{
    char state[128];
    state_dir(state, sizeof state, "reuse-quota");
    int u = 0;
    struct dapi_queries *qs = open_reg(state, 1000, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], o[DAPI_SLUG_MAX];
    T_EQ_INT(reuse_create(qs, owner, "q1", "", 300, 1000, a), DAPI_REUSED_NONE);
    uint64_t bytes = t_result_write(qs, a, 50);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, bytes);
    T_EQ_INT(reuse_create(qs, other, "q0", "", 300, 1000, o), DAPI_REUSED_NONE);
    dapi_queries_finish(qs, o, DAPI_OK, NULL, t_result_write(qs, o, 50));
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, bytes + bytes / 2, 0}; /* results */
    dapi_queries_set_limits(qs, &lim);
    T_EQ_INT(reuse_create(qs, other, "q1", "", 300, 1001, b), DAPI_REUSED_RESULT);
    T_EQ_INT(t_registry_state(qs, a, owner, 1001, NULL),
             DAPI_Q_DONE); /* the other key's own result */
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, o, other, 1001, &v), DAPI_ERR_NOT_FOUND); /* its oldest */
    T_EQ_INT(dapi_queries_key_bytes(qs, other), bytes);
    T_EQ_INT(page_len(qs, b, other, 1001), page_len(qs, a, owner, 1001));
    dapi_queries_close(qs);
    t_rm_rf(state);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_tmpdir(root, sizeof root, "reuse"))
        T_DONE();
    dapi_sha256("owner-key", 9, owner);
    dapi_sha256("other-key", 9, other);
    test_reuse();
    test_reuse_single_flight();
    test_reuse_refcount();
    test_reuse_quota();
    test_cancelled_leader_kept_for_its_followers();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
