/* The registry's indexes (src/store/index.c) at sizes past their first: what the walks look
 * at (dapi_queries_visits) — a tick, making room in a full quota, a list's pages, an expiry —
 * and that what they find is right, before and after a restart; the hash tables growing; the
 * progress a start reports. Time is passed in, never slept. */
#include <stdlib.h>
#include <sys/stat.h>

#include "store/queries.h"
#include "store/queries_fixture.h"
#include "t.h"

/* The registry's walks look at what they need, never at every kept query (before, the tick,
 * making room in a key's quota and a list each walked the whole registry under its lock: a
 * key at its quota with 48,000 queries made every key's creations 40 times slower). And what
 * they find is right: the oldest go first, lists page in order, expiry takes the expired. */
static void test_walks_are_bounded(void)
{
    enum { KEEP = 1000, MORE = 100, PER_S = 100 };
    static char a[KEEP + MORE][DAPI_SLUG_MAX];
    char state[128], b[DAPI_SLUG_MAX];
    state_dir(state, sizeof state, "walks");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    struct dapi_queries_limits lim = {UINT64_MAX, UINT64_MAX, (uint64_t)KEEP * DAPI_QUERY_CHARGE,
                                      DAPI_QUERY_CHARGE};
    dapi_queries_set_limits(qs, &lim);
    T_EQ_INT(dapi_queries_create(qs, other, "SELECT b", NULL, 1000, b, NULL, 0), DAPI_OK);
    dapi_queries_finish(qs, b, DAPI_ERR_SQL, "no", 0);
    for(int i = 0; i < KEEP; i++) { /* PER_S in each second */
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1000 + i / PER_S, a[i], NULL, 0),
                 DAPI_OK);
        dapi_queries_finish(qs, a[i], DAPI_ERR_SQL, "no", 0); /* (ended: may go) */
    }
    dapi_queries_tick(qs, 1100, 0); /* (each new query is looked at once, then not again) */
    uint64_t v0 = dapi_queries_visits(qs);
    dapi_queries_tick(qs, 1101, 0);
    T_CHECK(dapi_queries_visits(qs) - v0 <= 4, "a tick with nothing due looked at %llu queries",
            (unsigned long long)(dapi_queries_visits(qs) - v0));

    /* At its quota, each new query of the key deletes its oldest, looking at a few. */
    v0 = dapi_queries_visits(qs);
    for(int i = KEEP; i < KEEP + MORE; i++) {
        T_EQ_INT(dapi_queries_create(qs, owner, "SELECT a", NULL, 1200, a[i], NULL, 0), DAPI_OK);
        dapi_queries_finish(qs, a[i], DAPI_ERR_SQL, "no", 0);
    }
    uint64_t made_room = dapi_queries_visits(qs) - v0;
    T_CHECK(made_room <= 4 * MORE, "making room %d times looked at %llu queries", MORE,
            (unsigned long long)made_room);
    enum dapi_err e = DAPI_OK;
    int gone = 0;
    for(int i = 0; i < MORE; i++) {
        state_of(qs, a[i], 1200, &e);
        gone += e == DAPI_ERR_NOT_FOUND;
    }
    T_EQ_INT(gone, MORE); /* the oldest went, in creation order */
    /* the count by state (/metrics) is kept as states change, not counted by a walk */
    uint64_t states[DAPI_Q_NSTATES];
    v0 = dapi_queries_visits(qs);
    dapi_queries_count_states(qs, states);
    T_EQ_INT(dapi_queries_visits(qs), v0);
    T_EQ_INT(states[DAPI_Q_FAILED], KEEP + 1);
    T_EQ_INT(states[DAPI_Q_QUEUED] + states[DAPI_Q_RUNNING] + states[DAPI_Q_DONE] +
                 states[DAPI_Q_CANCELLED],
             0);
    T_EQ_INT(state_of(qs, a[MORE], 1200, NULL), DAPI_Q_FAILED);
    T_EQ_INT(dapi_queries_key_bytes(qs, owner), (uint64_t)KEEP * DAPI_QUERY_CHARGE);

    /* A list looks at the page asked for: another key's queries cost it nothing, and the
     * pages come newest first, each from its cursor, with none missed or repeated. */
    struct dapi_qsummary *v;
    size_t n;
    int more;
    v0 = dapi_queries_visits(qs);
    T_EQ_INT(dapi_queries_list(qs, other, 1200, 0, 50, &v, &n, &more), DAPI_OK);
    T_EQ_INT(n, 1);
    T_EQ_INT(more, 0);
    T_CHECK(n == 1 && strcmp(v[0].slug, b) == 0, "the other key's list");
    dapi_qsummaries_free(v, n);
    T_CHECK(dapi_queries_visits(qs) - v0 <= 2, "a list of 1 looked at %llu queries",
            (unsigned long long)(dapi_queries_visits(qs) - v0));
    uint64_t cursor = 0;
    int next = KEEP + MORE - 1, pages = 0, in_order = 1;
    do {
        v0 = dapi_queries_visits(qs);
        T_EQ_INT(dapi_queries_list(qs, owner, 1200, cursor, 64, &v, &n, &more), DAPI_OK);
        T_CHECK(dapi_queries_visits(qs) - v0 <= 65, "a page of 64 looked at %llu queries",
                (unsigned long long)(dapi_queries_visits(qs) - v0));
        for(size_t i = 0; i < n; i++, next--)
            in_order &= next >= MORE && strcmp(v[i].slug, a[next]) == 0;
        cursor = n ? v[n - 1].seq : 0;
        dapi_qsummaries_free(v, n);
    } while(more && ++pages < 100);
    T_CHECK(in_order && next == MORE - 1, "the pages list every query once, newest first (%d)",
            next);

    /* Expiry takes what expired, looking at little more (and the holes the deleted left). */
    dapi_queries_tick(qs, 1201, 0);
    v0 = dapi_queries_visits(qs);
    dapi_queries_tick(qs, 1001 + 3600, 0); /* created by 1001: b and a[MORE .. 2 PER_S) */
    T_CHECK(dapi_queries_visits(qs) - v0 <= 2 * PER_S + 4, "expiry looked at %llu queries",
            (unsigned long long)(dapi_queries_visits(qs) - v0));
    state_of(qs, a[2 * PER_S - 1], 4601, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, a[2 * PER_S], 4601, NULL), DAPI_Q_FAILED);
    T_EQ_INT(dapi_queries_key_bytes(qs, other), 0);

    /* After a restart (queries read back in any order) the oldest still go first. */
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 4601, &u);
    if(!qs)
        return;
    lim.max_key_bytes = (uint64_t)(KEEP + MORE - 2 * PER_S) * DAPI_QUERY_CHARGE; /* full */
    dapi_queries_set_limits(qs, &lim);
    char c[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT c", NULL, 4601, c, NULL, 0), DAPI_OK);
    state_of(qs, a[2 * PER_S], 4601, &e);
    T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
    T_EQ_INT(state_of(qs, a[2 * PER_S + 1], 4601, NULL), DAPI_Q_FAILED);
    dapi_queries_set_running(qs, c);
    dapi_queries_count_states(qs, states);
    T_EQ_INT(states[DAPI_Q_FAILED], KEEP + MORE - 2 * PER_S - 1);
    T_EQ_INT(states[DAPI_Q_RUNNING], 1);
    T_EQ_INT(dapi_queries_list(qs, owner, 4601, 0, 2, &v, &n, &more), DAPI_OK);
    T_CHECK(n == 2 && strcmp(v[0].slug, c) == 0 && strcmp(v[1].slug, a[KEEP + MORE - 1]) == 0,
            "the list after a restart, newest first");
    dapi_qsummaries_free(v, n);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

struct progress {
    int calls;
    size_t last;
};

static void on_progress(void *arg, size_t n)
{
    struct progress *p = arg;
    p->calls += n > p->last;
    p->last = n;
}

/* The hash tables double as they fill (4,096 chains at first, 1,024 for identities): with
 * 9,000 queries (each of its own identity) every slug is still found, a deleted one is
 * not, and a restart finds them all. (On tmpfs when there is one: 9,000 syncs.) */
static void test_tables_grow(void)
{
    enum { MANY = 9000 };
    static char a[MANY][DAPI_SLUG_MAX];
    char state[128];
    if(t_exists("/dev/shm")) {
        snprintf(state, sizeof state, "/dev/shm/dapi-grow-XXXXXX");
        if(!mkdtemp(state))
            state_dir(state, sizeof state, "grow");
    } else {
        state_dir(state, sizeof state, "grow");
    }
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    int made = 0, found = 0;
    char sql[64], ident[80];
    for(int i = 0; i < MANY; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        snprintf(ident, sizeof ident, "%064x", i);
        struct dapi_reuse ru = {.ident = ident, .fp = "", .max_age_s = 300};
        enum dapi_reused how = DAPI_REUSED_NONE;
        made += dapi_queries_create_reusing(qs, owner, NULL, sql, NULL, &ru, 1000, a[i], &how,
                                            NULL, 0) == DAPI_OK;
        if(made == i + 1)
            dapi_queries_finish(qs, a[i], DAPI_ERR_SQL, "no", 0);
    }
    T_EQ_INT(made, MANY);
    int deleted = 0;
    T_EQ_INT(dapi_queries_cancel(qs, a[7], owner, 1001, "test", &deleted), DAPI_OK);
    T_EQ_INT(deleted, 1);
    for(int pass = 0; pass < 2; pass++) {
        found = 0;
        enum dapi_err e;
        for(int i = 0; i < MANY; i++)
            found += state_of(qs, a[i], 1001, NULL) == DAPI_Q_FAILED;
        T_EQ_INT(found, MANY - 1);
        state_of(qs, a[7], 1001, &e);
        T_EQ_INT(e, DAPI_ERR_NOT_FOUND);
        if(!pass) { /* (and the start says how far it got, every DAPI_QUERIES_PROGRESS) */
            dapi_queries_close(qs);
            struct progress pr = {0};
            char why[512] = "";
            T_EQ_INT(dapi_queries_open(&qs, state, 3600, UINT64_MAX, 1001, NULL, on_progress, &pr,
                                       why, sizeof why),
                     DAPI_OK);
            if(!qs)
                return;
            T_EQ_INT(pr.calls, (MANY - 1) / DAPI_QUERIES_PROGRESS);
            T_EQ_INT(pr.last, (MANY - 1) / DAPI_QUERIES_PROGRESS * DAPI_QUERIES_PROGRESS);
        }
    }
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* Creates a query of identity ident (max_age 0: a bypass, which still becomes the holder)
 * and ends it: failed, or done with rows rows (packed). */
static void ident_query(struct dapi_queries *qs, const char *ident, int64_t max_age, int64_t now_s,
                        uint64_t rows, char *slug, enum dapi_reused *how)
{
    struct dapi_reuse ru = {.ident = ident, .fp = "", .max_age_s = max_age};
    *how = DAPI_REUSED_NONE;
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT x", NULL, &ru, now_s, slug, how,
                                         NULL, 0),
             DAPI_OK);
    if(*how != DAPI_REUSED_NONE)
        return;
    if(!rows) {
        dapi_queries_finish(qs, slug, DAPI_ERR_SQL, "no", 0);
        return;
    }
    size_t len;
    void *img = t_result_small(rows, &len);
    dapi_queries_finish_small(qs, slug, img, len);
    free(img);
}

/* The rows of slug's result (0: none). */
static uint64_t rows_of(struct dapi_queries *qs, const char *slug, int64_t now_s)
{
    struct dapi_qview v;
    if(dapi_queries_get(qs, slug, owner, now_s, &v))
        return 0;
    uint64_t rows = v.state == DAPI_Q_DONE && v.result ? dapi_result_rows(v.result) : 0;
    dapi_queries_release(qs, &v);
    return rows;
}

/* A reuse look-up whose holder is gone walks its identity's list back to the newest query
 * that may be reused. Failed and cancelled queries never may, and they used to stay listed:
 * a key's thousands of failed copies of one query, with the newest deleted before each
 * creation, made every creation walk them all under the registry's lock. They leave the
 * list as they fail. And a start, which reads queries back in any order, sorts each list
 * once (a walk per query read back to put it in place cost a fifth of a start). */
static void test_reuse_walks_only_candidates(void)
{
    enum { FAILED = 2000 };
    char state[128], slug[DAPI_SLUG_MAX], done[DAPI_SLUG_MAX], newest[DAPI_SLUG_MAX];
    const char *x = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const char *y = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    state_dir(state, sizeof state, "reuse-walk");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    enum dapi_reused how;
    ident_query(qs, x, 0, 1000, 3, done, &how); /* the one to reuse, oldest */
    for(int i = 0; i < FAILED; i++)
        ident_query(qs, x, 0, 1000, 0, newest, &how);
    for(int round = 0; round < 2; round++) {
        int deleted = 0;
        T_EQ_INT(dapi_queries_cancel(qs, newest, owner, 1001, "test", &deleted), DAPI_OK);
        T_EQ_INT(deleted, 1);
        uint64_t v0 = dapi_queries_visits(qs);
        ident_query(qs, x, 300, 1001, 0, newest, &how);
        T_EQ_INT(how, DAPI_REUSED_RESULT);
        T_EQ_INT(rows_of(qs, newest, 1001), 3);
        T_CHECK(dapi_queries_visits(qs) - v0 <= 4,
                "round %d: the look-up past %d failed queries looked at %llu", round, FAILED,
                (unsigned long long)(dapi_queries_visits(qs) - v0));
    }
    /* Identity y: four done queries, their records written newest first (so a start reads
     * them back out of order). With the newest deleted after a restart, the look-up finds
     * the next newest by registration. */
    char ys[4][DAPI_SLUG_MAX];
    struct dapi_reuse ru = {.ident = y, .fp = "", .max_age_s = 0};
    for(int i = 0; i < 4; i++)
        T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT y", NULL, &ru, 1002, ys[i],
                                             &how, NULL, 0),
                 DAPI_OK);
    for(int i = 3; i >= 0; i--) {
        size_t len;
        void *img = t_result_small((uint64_t)i + 10, &len);
        dapi_queries_finish_small(qs, ys[i], img, len);
        free(img);
    }
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1003, &u);
    if(!qs)
        return;
    for(int i = 3; i >= 1; i--) {
        int deleted = 0;
        T_EQ_INT(dapi_queries_cancel(qs, ys[i], owner, 1003, "test", &deleted), DAPI_OK);
        ident_query(qs, y, 300, 1003, 0, slug, &how);
        T_EQ_INT(how, DAPI_REUSED_RESULT);
        T_EQ_INT(rows_of(qs, slug, 1003), (uint64_t)i - 1 + 10);
        T_EQ_INT(dapi_queries_cancel(qs, slug, owner, 1003, "test", &deleted), DAPI_OK);
    }
    /* and x's failed queries stayed out of the list after the restart */
    int deleted = 0;
    T_EQ_INT(dapi_queries_cancel(qs, newest, owner, 1003, "test", &deleted), DAPI_OK);
    uint64_t v0 = dapi_queries_visits(qs);
    ident_query(qs, x, 300, 1003, 0, slug, &how);
    T_EQ_INT(how, DAPI_REUSED_RESULT);
    T_CHECK(dapi_queries_visits(qs) - v0 <= 4, "after a restart: looked at %llu",
            (unsigned long long)(dapi_queries_visits(qs) - v0));
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* The list's cursor is a keyed permutation of seq (store/cursor.c): seq counts every key's
 * creations, so as the cursor it told a key how many queries the others made. Each cursor
 * goes back to its seq, for its key only; two keys' cursors of one seq differ; every cursor
 * lies in 1..DAPI_CURSOR_MAX; consecutive seqs are not consecutive cursors; the secret is
 * kept in the state dir (0600), so a cursor outlives a restart. */
static void test_cursors(void)
{
    char state[128], keyfile[256];
    state_dir(state, sizeof state, "cursor");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    static const uint64_t seqs[] = {
        1, 2, 3, 1000, 123456789, (1ull << 40) + 7, DAPI_CURSOR_MAX - 1};
    uint64_t before[7];
    int back = 0, apart = 0, in_range = 0, adjacent = 0;
    for(size_t i = 0; i < 7; i++) {
        uint64_t c = dapi_queries_cursor(qs, owner, seqs[i]);
        before[i] = c;
        back += dapi_queries_cursor_seq(qs, owner, c) == seqs[i];
        apart += c != dapi_queries_cursor(qs, other, seqs[i]);
        in_range += c >= 1 && c <= DAPI_CURSOR_MAX;
        adjacent += i && seqs[i] == seqs[i - 1] + 1 && c == before[i - 1] + 1;
    }
    T_EQ_INT(back, 7);
    T_EQ_INT(apart, 7);
    T_EQ_INT(in_range, 7);
    T_EQ_INT(adjacent, 0);
    T_EQ_INT(dapi_queries_cursor_seq(qs, owner, 0), 0);
    T_EQ_INT(dapi_queries_cursor_seq(qs, owner, DAPI_CURSOR_MAX + 1), 0);
    dapi_queries_close(qs);
    snprintf(keyfile, sizeof keyfile, "%s/queries/.cursor-key", state);
    struct stat st;
    T_CHECK(stat(keyfile, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 32,
            "the secret kept, 0600");
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u);
    if(!qs)
        return;
    int same = 0;
    for(size_t i = 0; i < 7; i++)
        same += dapi_queries_cursor(qs, owner, seqs[i]) == before[i];
    T_EQ_INT(same, 7);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

int main(void)
{
    if(fixture_setup("index"))
        T_DONE();
    test_walks_are_bounded();
    test_tables_grow();
    test_reuse_walks_only_candidates();
    test_cursors();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
