/* The query registry across crashes: the crash-loop guard, power loss in the middle of
 * writes (torn and missing files), the creation log's checkpoint writing the files of queries
 * that have none yet (also while queries are removed from other threads), and orphaned
 * temporary files. Time is passed in, never slept. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "store/queries_fixture.h"
#include "store/queries_int.h" /* (the creation log, to time a checkpoint) */

/* ---- helpers ------------------------------------------------------------------------- */

static int file_has(const char *p, const char *needle)
{
    char buf[8192];
    FILE *f = fopen(p, "r");
    if(!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Whether the creation log holds a record of slug with needle in it. */
static int log_has(const char *state, const char *slug, const char *needle)
{
    char p[300];
    snprintf(p, sizeof p, "%s/queries/.log", state);
    size_t n = 0;
    char *log = malloc(2u << 20);
    FILE *f = log ? fopen(p, "rb") : NULL;
    if(f) {
        n = fread(log, 1, 2u << 20, f);
        fclose(f);
    }
    int found = 0;
    for(size_t at = 0; log && !found && at < n;) {
        const char *rec = memmem(log + at, n - at, slug, strlen(slug));
        if(!rec)
            break;
        /* the record's JSON text around the slug, up to the next NUL (padding/header) */
        const char *from = rec, *to = rec;
        while(from > log && from[-1] != '\0')
            from--;
        while(to < log + n && *to != '\0')
            to++;
        found = memmem(from, (size_t)(to - from), needle, strlen(needle)) != NULL;
        at = (size_t)(to - log);
    }
    free(log);
    return found;
}

static void meta_path(char *out, size_t n, const char *state, const char *slug)
{
    snprintf(out, n, "%s/queries/%s/meta.json", state, slug);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_crash_guard(void)
{
    char state[128], meta[300];
    state_dir(state, sizeof state, "crash");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX], b[DAPI_SLUG_MAX], c[DAPI_SLUG_MAX], why[256];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000, a, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT b", NULL, 1000, b, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT c", NULL, 1000, c, NULL, 0), DAPI_OK);
    meta_path(meta, sizeof meta, state, a);
    T_CHECK(!t_exists(meta), "no files at create (the creation log holds it)");
    /* Counted before the run starts: in the creation log while the query has no files. */
    T_EQ_INT(dapi_queries_start_run(qs, a, why, sizeof why), DAPI_OK);
    T_CHECK(!t_exists(meta) && log_has(state, a, "\"attempts\":1") &&
                log_has(state, a, "\"state\":\"running\""),
            "attempt 1 in the creation log");
    T_EQ_INT(state_of(qs, a, 1000, NULL), DAPI_Q_RUNNING);
    /* A run cut by a shutdown the process survives is not counted. */
    T_EQ_INT(dapi_queries_start_run(qs, b, why, sizeof why), DAPI_OK);
    dapi_queries_drop(qs, b);
    meta_path(meta, sizeof meta, state, b);
    T_CHECK(file_has(meta, "\"attempts\":0") && file_has(meta, "\"state\":\"queued\""),
            "a dropped run is not an attempt");
    T_EQ_INT(state_of(qs, b, 1000, NULL), DAPI_Q_QUEUED);
    /* A finished run records its outcome: the attempts no longer count. */
    T_EQ_INT(dapi_queries_start_run(qs, c, why, sizeof why), DAPI_OK);
    dapi_queries_finish(qs, c, DAPI_ERR_SQL, "x", 0);
    meta_path(meta, sizeof meta, state, c);
    T_CHECK(file_has(meta, "\"attempts\":0"), "attempts reset when the outcome is recorded");
    T_EQ_INT(dapi_queries_start_run(qs, c, why, sizeof why), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_queries_start_run(qs, "dapi-query-unknown", why, sizeof why),
             DAPI_ERR_NOT_FOUND);
    dapi_queries_close(qs); /* "crash": a still running */

    struct unfinished u1 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(!qs)
        return;
    T_EQ_INT(u1.calls, 2);
    T_CHECK(unfinished_has(&u1, a, "SELECT a"), "one crash: run again");
    T_CHECK(unfinished_has(&u1, b, "SELECT b"), "not a crash: run again");
    T_EQ_INT(dapi_queries_start_run(qs, a, why, sizeof why), DAPI_OK);
    meta_path(meta, sizeof meta, state, a);
    T_CHECK(file_has(meta, "\"attempts\":2"), "attempt 2 persisted");
    T_EQ_INT(dapi_queries_start_run(qs, b, why, sizeof why), DAPI_OK);
    dapi_queries_close(qs); /* crash again, with a and b running */

    struct unfinished u2 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1002, &u2);
    if(!qs)
        return;
    T_EQ_INT(u2.calls, 1);
    T_CHECK(!unfinished_has(&u2, a, NULL), "two crashes: not run a third time");
    T_CHECK(unfinished_has(&u2, b, NULL), "one crash: run again");
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, a, owner, 1002, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_FAILED);
    T_EQ_INT(v.error, DAPI_ERR_INTERNAL);
    T_EQ_STR(v.message, DAPI_QUERY_CRASH_MESSAGE);
    dapi_queries_release(qs, &v);
    T_CHECK(file_has(meta, "\"state\":\"failed\""), "failed state persisted");
    dapi_queries_close(qs);
    struct unfinished u3 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1003, &u3);
    if(!qs)
        return;
    T_EQ_INT(state_of(qs, a, 1003, NULL), DAPI_Q_FAILED);
    T_CHECK(!unfinished_has(&u3, a, NULL), "stays failed");
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Writes bytes over the file at p from offset at (the file keeps its size). */
static void scribble(const char *p, long at, const char *bytes)
{
    FILE *f = fopen(p, "r+");
    T_CHECK(f && fseek(f, at, SEEK_SET) == 0 && fputs(bytes, f) >= 0, "scribble on %s", p);
    if(f)
        fclose(f);
}

/* Durability (docs/design.md): a creation that was answered survives what a power loss can
 * do to the files written without fsync. A power loss is simulated by what it may leave:
 * the query's directory gone, meta.json torn, result.bin torn, with no clean stop. */
static void test_power_loss(void)
{
    char state[128], qd[256], p[400];
    state_dir(state, sizeof state, "power");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char gone[DAPI_SLUG_MAX], torn[DAPI_SLUG_MAX], done[DAPI_SLUG_MAX], kept[DAPI_SLUG_MAX],
        deleted[DAPI_SLUG_MAX], cut[DAPI_SLUG_MAX], why[256];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'gone'", NULL, 1000, gone, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'torn'", NULL, 1000, torn, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'done'", NULL, 1000, done, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'kept'", NULL, 1000, kept, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'deleted'", NULL, 1000, deleted, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'cut'", NULL, 1000, cut, NULL, 0), DAPI_OK);
    /* Runs: torn and cut started (meta.json rewritten), done and kept finished with a result. */
    T_EQ_INT(dapi_queries_start_run(qs, torn, why, sizeof why), DAPI_OK);
    T_EQ_INT(dapi_queries_start_run(qs, cut, why, sizeof why), DAPI_OK);
    /* A run's start writes nothing, not even the directory (the run makes it with its
     * result file, if it writes one): its attempt goes to the creation log
     * (docs/design.md, Durability). */
    {
        query_dir(qd, sizeof qd, state, cut);
        T_CHECK(!t_exists(qd), "no directory when the run starts");
        snprintf(p, sizeof p, "%s/meta.json", qd);
        T_CHECK(!t_exists(p), "no meta.json while the run goes on");
        snprintf(p, sizeof p, "%s/created.json", qd);
        T_CHECK(!t_exists(p), "no created.json");
    }
    const char *fin[] = {done, kept};
    for(int i = 0; i < 2; i++) {
        T_EQ_INT(dapi_queries_start_run(qs, fin[i], why, sizeof why), DAPI_OK);
        uint64_t bytes = t_result_write(qs, fin[i], 250);
        dapi_queries_finish(qs, fin[i], DAPI_OK, NULL, bytes);
        T_EQ_INT(state_of(qs, fin[i], 1000, NULL), DAPI_Q_DONE);
    }
    dapi_queries_remove(qs, deleted);

    /* The "power loss": gone's directory vanished, torn's meta.json is garbage, done's
     * result.bin lost a block (its structure intact), kept is whole. No clean stop. */
    query_dir(qd, sizeof qd, state, gone);
    t_rm_rf(qd);
    query_dir(qd, sizeof qd, state, torn);
    mkdir(qd, 0700); /* (its run's directory, made with its result file) */
    snprintf(p, sizeof p, "%s/meta.json", qd);
    t_write(p, "{\"version\":1,\"sl\0\0\0");
    query_dir(qd, sizeof qd, state, done);
    snprintf(p, sizeof p, "%s/result.bin", qd);
    scribble(p, 200, "00000000");
    /* cut: the process died during its run, before any file (it has no directory) */
    query_dir(qd, sizeof qd, state, cut);
    snprintf(p, sizeof p, "%s/meta.json", qd);
    T_CHECK(!t_exists(p), "no meta.json");
    struct unfinished u1 = {0};
    struct dapi_queries *qs1 = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(qs1) {
        T_EQ_INT(state_of(qs1, gone, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, gone, "SELECT 'gone'"), "restored from the log: runs");
        T_EQ_INT(state_of(qs1, torn, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, torn, "SELECT 'torn'"), "torn meta.json: created.json");
        T_EQ_INT(state_of(qs1, cut, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, cut, "SELECT 'cut'"), "no files: restored from the log");
        T_EQ_INT(state_of(qs1, done, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, done, "SELECT 'done'"), "torn result: runs again");
        T_EQ_INT(state_of(qs1, kept, 1001, NULL), DAPI_Q_DONE);
        T_CHECK(!unfinished_has(&u1, kept, NULL), "a whole result is kept");
        struct dapi_qview v;
        T_EQ_INT(dapi_queries_get(qs1, deleted, owner, 1001, &v), DAPI_ERR_NOT_FOUND);
        query_dir(qd, sizeof qd, state, deleted);
        T_CHECK(!t_exists(qd), "a deleted query is not restored");
        dapi_queries_close(qs1); /* a clean stop */
    }
    /* After a clean stop the log holds nothing more to restore: a directory removed now
     * (by hand) stays removed. */
    query_dir(qd, sizeof qd, state, kept);
    t_rm_rf(qd);
    struct unfinished u2 = {0};
    struct dapi_queries *qs2 = open_reg(state, 3600, UINT64_MAX, 1002, &u2);
    if(qs2) {
        struct dapi_qview v;
        T_EQ_INT(dapi_queries_get(qs2, kept, owner, 1002, &v), DAPI_ERR_NOT_FOUND);
        T_EQ_INT(state_of(qs2, gone, 1002, NULL), DAPI_Q_QUEUED);
        dapi_queries_close(qs2);
    }
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A query still without files when the creation log is checkpointed (it is full) gets
 * created.json, and meta.json as a link to it, first: the checkpoint drops its record. A
 * power loss after that finds them (the checkpoint's syncfs made them durable). */
static void test_checkpoint_files(void)
{
    char state[128], qd[256], p[400], why[256];
    state_dir(state, sizeof state, "ckpt");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char queued[DAPI_SLUG_MAX], running[DAPI_SLUG_MAX], slug[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'queued'", NULL, 1000, queued, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'running'", NULL, 1000, running, NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_start_run(qs, running, why, sizeof why), DAPI_OK);
    query_dir(qd, sizeof qd, state, queued);
    snprintf(p, sizeof p, "%s/created.json", qd);
    T_CHECK(!t_exists(p), "no files before the checkpoint");
    int n = 0;
    uint64_t cp0 = store_commit_checkpoints(qs->commit);
    for(; n < 4000 && !t_exists(p); n++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'filler'", NULL, 1000, slug, NULL, 0),
                 DAPI_OK);
        dapi_queries_remove(qs, slug);
    }
    T_CHECK(n > 100 && n < 4000, "a checkpoint after %d creations", n);
    /* (the checkpointer thread is still writing files: wait for its end) */
    for(int i = 0; i < 1000 && store_commit_checkpoints(qs->commit) == cp0; i++)
        usleep(10000);
    struct stat st;
    T_CHECK(stat(p, &st) == 0 && st.st_nlink == 2, "queued: created.json and meta.json");
    query_dir(qd, sizeof qd, state, running);
    snprintf(p, sizeof p, "%s/created.json", qd);
    T_CHECK(file_has(p, "\"state\":\"running\"") && file_has(p, "\"attempts\":1"),
            "running: created.json with its attempt");
    /* the run ends: meta.json becomes a file of its own, created.json stays */
    uint64_t bytes = t_result_write(qs, running, 10);
    dapi_queries_finish(qs, running, DAPI_OK, NULL, bytes);
    T_CHECK(stat(p, &st) == 0 && st.st_nlink == 1 && file_has(p, "\"state\":\"running\""),
            "created.json untouched by the run's end");
    /* "power loss" (no clean stop): both come back from their files */
    struct unfinished u1 = {0};
    struct dapi_queries *qs1 = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(qs1) {
        T_EQ_INT(state_of(qs1, queued, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, queued, "SELECT 'queued'"), "queued: runs");
        T_EQ_INT(state_of(qs1, running, 1001, NULL), DAPI_Q_DONE);
        T_EQ_INT(u1.calls, 1);
        dapi_queries_close(qs1);
    }
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Removals while the small creation log is checkpointed again and again (its hook writes
 * the files of queries that have none, then deletes them for a query removed meanwhile):
 * four threads create queries and remove every other one. Afterwards no removed query has
 * a directory left, every kept one has its files after one more checkpoint, and a start
 * after a power loss brings back exactly the kept ones. (The narrowest interleaving, a
 * removal between the hook's check and its write for that very query, is rare here: the
 * hook's check afterwards is argued in src/store/open.c, not forced by this test.) */
#define RACE_THREADS 4
#define RACE_EACH 1500
struct race {
    struct dapi_queries *qs;
    char (*kept)[DAPI_SLUG_MAX];
    char (*removed)[DAPI_SLUG_MAX];
    int nkept, nremoved, failed;
};

static void *race_run(void *arg)
{
    struct race *r = arg;
    for(int i = 0; i < RACE_EACH; i++) {
        char slug[DAPI_SLUG_MAX];
        if(dapi_queries_create(r->qs, owner, "SELECT 'race'", NULL, 1000, slug, NULL, 0)) {
            r->failed++;
            continue;
        }
        if(i % 2) {
            dapi_queries_remove(r->qs, slug);
            memcpy(r->removed[r->nremoved++], slug, DAPI_SLUG_MAX);
        } else {
            memcpy(r->kept[r->nkept++], slug, DAPI_SLUG_MAX);
        }
    }
    return NULL;
}

static void test_removals_during_checkpoints(void)
{
    char state[128], qd[256], p[400];
    state_dir(state, sizeof state, "race");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    struct race r[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    for(int t = 0; t < RACE_THREADS; t++) {
        r[t] = (struct race){
            qs, calloc(RACE_EACH, DAPI_SLUG_MAX), calloc(RACE_EACH, DAPI_SLUG_MAX), 0, 0, 0};
        T_CHECK(r[t].kept && r[t].removed, "memory");
        if(!r[t].kept || !r[t].removed)
            return;
        T_EQ_INT(pthread_create(&th[t], NULL, race_run, &r[t]), 0);
    }
    for(int t = 0; t < RACE_THREADS; t++)
        pthread_join(th[t], NULL);
    int leftover = 0, missing = 0, kept = 0;
    for(int t = 0; t < RACE_THREADS; t++) {
        T_EQ_INT(r[t].failed, 0);
        for(int i = 0; i < r[t].nremoved; i++) {
            query_dir(qd, sizeof qd, state, r[t].removed[i]);
            leftover += t_exists(qd);
        }
    }
    T_EQ_INT(leftover, 0);
    /* a checkpoint now gives every kept query its files (the hook), as at a clean stop: fill
     * the log until one that began after the threads ended has run (the checkpointer may be
     * running one that began before: the second one after this point) */
    char slug[DAPI_SLUG_MAX];
    uint64_t cp0 = store_commit_checkpoints(qs->commit);
    for(int n = 0; n < 8000 && store_commit_checkpoints(qs->commit) < cp0 + 2; n++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'filler'", NULL, 1000, slug, NULL, 0),
                 DAPI_OK);
        dapi_queries_remove(qs, slug);
    }
    for(int n = 0; n < 1000 && store_commit_checkpoints(qs->commit) < cp0 + 2; n++)
        usleep(10000); /* (the last one may still be running) */
    T_CHECK(store_commit_checkpoints(qs->commit) >= cp0 + 2, "two checkpoints ran");
    for(int t = 0; t < RACE_THREADS; t++)
        for(int i = 0; i < r[t].nkept; i++) {
            query_dir(qd, sizeof qd, state, r[t].kept[i]);
            snprintf(p, sizeof p, "%s/meta.json", qd);
            missing += !t_exists(p);
            kept++;
        }
    T_EQ_INT(missing, 0);
    /* "power loss": the kept queries come back, queued, and nothing else */
    struct unfinished u1 = {0};
    struct dapi_queries *qs1 = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(qs1) {
        T_EQ_INT(u1.calls, kept);
        int wrong = 0;
        for(int t = 0; t < RACE_THREADS; t++)
            for(int i = 0; i < r[t].nremoved; i++)
                wrong += (int)state_of(qs1, r[t].removed[i], 1001, NULL) != -1;
        T_EQ_INT(wrong, 0);
        dapi_queries_close(qs1);
    }
    dapi_queries_close(qs);
    for(int t = 0; t < RACE_THREADS; t++) {
        free(r[t].kept);
        free(r[t].removed);
    }
    t_rm_rf(state);
}

static void test_orphans(void)
{
    char state[128], qd[256], p[400];
    state_dir(state, sizeof state, "orphans");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    char a[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000, a, NULL, 0), DAPI_OK);
    uint64_t bytes = t_result_write(qs, a, 5);
    dapi_queries_finish(qs, a, DAPI_OK, NULL, bytes);
    dapi_queries_close(qs);
    static const char *const orphans[] = {"result.bin.tmp-Ab3dEf6hIj9k", "meta.json.tmp",
                                          "page-3.bin.tmp-zzzzzzzzzzzz", "part-00001.parquet",
                                          "page-2.a1b2c3d4.parquet"};
    static const char *const kept[] = {"meta.json", "result.bin", "page-2.bin"};
    query_dir(qd, sizeof qd, state, a);
    for(size_t i = 0; i < N(orphans); i++) {
        snprintf(p, sizeof p, "%s/%s", qd, orphans[i]);
        t_write(p, "left by a crash");
    }
    snprintf(p, sizeof p, "%s/page-2.bin", qd);
    t_write(p, "a v1 page kept with its query");
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u);
    if(!qs)
        return;
    for(size_t i = 0; i < N(orphans); i++) {
        snprintf(p, sizeof p, "%s/%s", qd, orphans[i]);
        T_CHECK(!t_exists(p), "%s removed at open", orphans[i]);
    }
    for(size_t i = 0; i < N(kept); i++) {
        snprintf(p, sizeof p, "%s/%s", qd, kept[i]);
        T_CHECK(t_exists(p), "%s kept", kept[i]);
    }
    T_EQ_INT(state_of(qs, a, 1001, NULL), DAPI_Q_DONE);
    T_EQ_INT(dapi_queries_bytes(qs), bytes + DAPI_QUERY_CHARGE);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A checkpoint between a creation's record and its registration. A creation that is not
 * registered before its record is appended (reuse off, a query that joins another's run, a
 * stored result shared) used to be invisible to the checkpoint's hook, which writes the files
 * of registered queries only; the checkpoint then dropped the record, and a power loss before
 * the run's end lost a query whose creation had been answered. Here the round that makes the
 * record durable runs a checkpoint first (another creation filling the log would). */
static struct dapi_queries *ck_qs;
static int ck_armed;

static int sync_after_checkpoint(int fd, void *arg)
{
    (void)arg;
    if(ck_armed) {
        ck_armed = 0;
        T_EQ_INT(store_commit_checkpoint(ck_qs->commit), 0);
    }
    return fdatasync(fd) ? errno : 0;
}

/* follower: 0 = a query created with reuse off, 1 = one that joins another's run. */
static void checkpoint_before_registration(int follower)
{
    char state[128], slug[DAPI_SLUG_MAX], leader[DAPI_SLUG_MAX];
    state_dir(state, sizeof state, follower ? "ckreg-follower" : "ckreg");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    ck_qs = qs;
    struct dapi_reuse ru = {"1111111111111111111111111111111111111111111111111111111111111111", "",
                            300};
    enum dapi_reused how = DAPI_REUSED_NONE;
    if(follower)
        T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 'q'", NULL, &ru, 1000,
                                             leader, &how, NULL, 0),
                 DAPI_OK);
    store_commit_set_sync(qs->commit, sync_after_checkpoint, NULL);
    ck_armed = 1;
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 'q'", NULL,
                                         follower ? &ru : NULL, 1000, slug, &how, NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, follower ? DAPI_REUSED_RUN : DAPI_REUSED_NONE);
    T_EQ_INT(ck_armed, 0);
    store_commit_set_sync(qs->commit, NULL, NULL);
    /* "power loss" (no clean stop): the answered query is back, to run */
    struct unfinished u1 = {0};
    struct dapi_queries *qs1 = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(qs1) {
        T_EQ_INT(state_of(qs1, slug, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, slug, "SELECT 'q'"), "the answered query runs (%s)",
                follower ? "a follower" : "reuse off");
        dapi_queries_close(qs1);
    }
    dapi_queries_close(qs);
    t_rm_rf(state);
}

static void test_checkpoint_before_registration(void)
{
    checkpoint_before_registration(0);
    checkpoint_before_registration(1);
}

int main(void)
{
    if(fixture_setup("durability"))
        T_DONE();
    test_crash_guard();
    test_power_loss();
    test_checkpoint_files();
    test_checkpoint_before_registration();
    test_removals_during_checkpoints();
    test_orphans();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
