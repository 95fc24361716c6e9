/* Progressive pages: the result writer publishes each page once it is complete and readable
 * (never a partial one), and the registry wakes the requests waiting for a page of a query
 * still running — its own run's or, for a query sharing an identical query's run, that
 * run's. Time is passed in, never slept. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keys.h"
#include "base/buf.h"
#include "base/log.h"
#include "store/queries.h"
#include "store/result.h"
#include "t.h"

static char root[64];
static unsigned char owner[DAPI_KEY_HASH_LEN];

static const struct dapi_result_limits unlimited = {UINT64_MAX, UINT64_MAX, NULL};

/* What on_publish was told. */
struct published {
    int calls;
    uint64_t last;
    int decreasing; /* a call with fewer pages than the one before */
};

static void on_publish(void *arg, uint64_t pages)
{
    struct published *p = arg;
    if(pages <= p->last)
        p->decreasing = 1;
    p->last = pages;
    p->calls++;
}

/* Writes row n (an I64 column "n" = n) into w. */
static enum dapi_err put_row(struct dapi_result_writer *w, int64_t n)
{
    struct dapi_colvec c;
    memset(&c, 0, sizeof c);
    c.type = DAPI_CT_I64;
    c.data = &n;
    return dapi_result_sink.chunk(w, &c, 1, 1);
}

/* The text of page p of rows 0 … total-1 of column "n". */
static char *expect_page(uint64_t total, uint64_t page)
{
    static char buf[1 << 16];
    size_t at = 0;
    buf[0] = '\0';
    for(uint64_t r = (page - 1) * DAPI_PAGE_ROWS; r < total && r < page * DAPI_PAGE_ROWS; r++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s{\"n\":%llu}",
                               r % DAPI_PAGE_ROWS ? "," : "", (unsigned long long)r);
    return buf;
}

/* Checks page p of live against the expected text of total rows. */
static void check_live_page(struct dapi_result_live *live, uint64_t total, uint64_t p,
                            const char *label)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    int got = dapi_result_live_page(live, p, &b);
    const char *want = expect_page(total, p);
    T_CHECK(got == 1 && b.len == strlen(want) && memcmp(b.data ? b.data : "", want, b.len) == 0,
            "%s: live page %llu (%d):\n  got  [%.100s]\n  want [%.100s]", label,
            (unsigned long long)p, got, b.data ? b.data : "", want);
    dapi_buf_free(&b);
}

/* Pages are published one by one as they complete, never partially; page 1 at once, a page
 * a reader wants at once, the others at the periodic flush; the bytes are the final file's. */
static void test_writer(void)
{
    char dir[128], path[256];
    t_fresh_dir(dir, sizeof dir, root, "writer");
    snprintf(path, sizeof path, "%s/result.bin", dir);
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    struct published pub = {0};
    dapi_result_writer_on_publish(w, on_publish, &pub);
    struct dapi_result_live *live = dapi_result_writer_live(w);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    T_EQ_INT(dapi_result_live_page(live, 1, &b), 0); /* nothing yet */
    T_EQ_INT(dapi_result_live_page(live, 0, &b), 0);
    int partial = 0, ok = 1;
    uint64_t n = 0;
    for(; n < 99; n++) {
        ok &= put_row(w, (int64_t)n) == DAPI_OK;
        partial |= dapi_result_live_pages(live) != 0;
    }
    T_CHECK(ok, "rows written");
    T_CHECK(!partial, "no page before its 100th row");
    T_EQ_INT(dapi_result_live_page(live, 1, &b), 0);
    T_EQ_INT(put_row(w, (int64_t)n++), DAPI_OK); /* row 100: page 1 is complete */
    T_EQ_INT(dapi_result_live_pages(live), 1);
    T_EQ_INT(pub.calls, 1);
    T_EQ_INT(pub.last, 1);
    check_live_page(live, 100000, 1, "page 1 at once");
    T_EQ_INT(dapi_result_live_page(live, 2, &b), 0);

    /* Pages 2.. wait for the 1 MiB flush, unless a reader wants one: page 5 is published
     * (with those before it) as soon as its last row is written, not a row earlier. */
    dapi_result_live_want(live, 5);
    for(; n < 499; n++)
        ok &= put_row(w, (int64_t)n) == DAPI_OK;
    T_EQ_INT(dapi_result_live_pages(live), 1);
    T_EQ_INT(put_row(w, (int64_t)n++), DAPI_OK);
    T_EQ_INT(dapi_result_live_pages(live), 5);
    T_EQ_INT(pub.last, 5);
    for(uint64_t p = 1; p <= 5; p++)
        check_live_page(live, 100000, p, "wanted pages");
    T_EQ_INT(dapi_result_live_page(live, 6, &b), 0);
    dapi_result_live_want(live, 0);

    /* Without a reader: published at the 1 MiB flushes, whole pages only. */
    uint64_t max_seen = 0;
    partial = 0;
    for(; n < 150050; n++) {
        ok &= put_row(w, (int64_t)n) == DAPI_OK;
        uint64_t pages = dapi_result_live_pages(live);
        partial |= pages > (n + 1) / DAPI_PAGE_ROWS;
        if(pages > max_seen)
            max_seen = pages;
    }
    T_CHECK(ok, "rows written");
    T_CHECK(!partial, "never a partial page");
    T_CHECK(max_seen > 5 && max_seen < 1500, "published at the flushes: %llu pages",
            (unsigned long long)max_seen);
    T_CHECK(!pub.decreasing, "publish counts only grow");
    T_EQ_INT(pub.last, max_seen);
    check_live_page(live, 150050, max_seen, "last published page");
    T_EQ_INT(dapi_result_live_page(live, max_seen + 1, &b), 0);

    uint64_t rows = 0, pages = 0, bytes = 0;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    T_EQ_INT(pages, 1501);
    /* the partial last page is never published: it is served from the finished file */
    T_CHECK(dapi_result_live_pages(live) <= 1500, "partial page not published (%llu)",
            (unsigned long long)dapi_result_live_pages(live));
    dapi_result_writer_free(w);
    /* The live pages outlive the writer (the file was renamed) and equal the final file's. */
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    int same = 1;
    for(uint64_t p = 1; res && p <= dapi_result_live_pages(live); p++) {
        const char *data;
        size_t len;
        t_result_page(res, p, &data, &len);
        dapi_buf_reset(&b);
        same &= dapi_result_live_page(live, p, &b) == 1 && b.len == len &&
                memcmp(b.data ? b.data : "", data, len) == 0;
    }
    T_CHECK(same, "live pages equal the final file's");
    dapi_result_close(res);
    dapi_buf_free(&b);
    dapi_result_live_unref(live);
    t_rm_rf(dir);
}

/* A run that fails: what was published stays readable by those who hold it (the temporary
 * file is unlinked, the descriptor keeps it), and nothing is left on disk. */
static void test_writer_failed(void)
{
    char dir[128], path[256];
    t_fresh_dir(dir, sizeof dir, root, "failed");
    snprintf(path, sizeof path, "%s/result.bin", dir);
    struct dapi_result_limits lim = {250, UINT64_MAX, NULL};
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &lim), DAPI_OK);
    if(!w)
        return;
    struct dapi_result_live *live = dapi_result_writer_live(w);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    enum dapi_err e = DAPI_OK;
    for(int64_t n = 0; n < 300 && !e; n++)
        e = put_row(w, n);
    T_EQ_INT(e, DAPI_ERR_TOO_LARGE);
    T_EQ_INT(dapi_result_live_pages(live), 1);
    dapi_result_writer_free(w);
    check_live_page(live, 1000, 1, "after the failure");
    dapi_result_live_unref(live);
    T_CHECK(rmdir(dir) == 0, "no file left");

    /* the same once pages are compressed on the pipe's thread (a result past 16 pages): the
     * limit stops the writer, freeing it stops the thread, nothing is left */
    t_fresh_dir(dir, sizeof dir, root, "failed-pipe");
    snprintf(path, sizeof path, "%s/result.bin", dir);
    struct dapi_result_limits lim2 = {250000, UINT64_MAX, NULL};
    T_EQ_INT(dapi_result_writer_open(&w, path, &lim2), DAPI_OK);
    if(!w)
        return;
    live = dapi_result_writer_live(w);
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    e = DAPI_OK;
    for(int64_t n = 0; n < 300000 && !e; n++)
        e = put_row(w, n);
    T_EQ_INT(e, DAPI_ERR_TOO_LARGE);
    T_CHECK(dapi_result_writer_error(w) && strstr(dapi_result_writer_error(w), "250000 rows"),
            "why: %s", dapi_result_writer_error(w) ? dapi_result_writer_error(w) : "(none)");
    dapi_result_writer_free(w);
    T_CHECK(dapi_result_live_pages(live) >= 1, "pages published before the failure");
    check_live_page(live, 300000, dapi_result_live_pages(live),
                    "last published, after the failure");
    dapi_result_live_unref(live);
    T_CHECK(rmdir(dir) == 0, "no file left");
}

/* A streaming reader (the export): dapi_result_live_rows gives published pages from the
 * writer's memory with where each row ends — the same bytes as the file's — and the file's
 * when a page is no longer kept (seps unknown); dapi_result_live_wait returns when pages are
 * published, on timeout, and once the writer is done (closed). */
static void test_streaming_reader(void)
{
    char dir[128], path[256];
    t_fresh_dir(dir, sizeof dir, root, "stream");
    snprintf(path, sizeof path, "%s/result.bin", dir);
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    struct dapi_result_live *live = dapi_result_writer_live(w);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    int closed = -1;
    T_EQ_INT(dapi_result_live_wait(live, 0, 10, &closed), 0); /* times out: nothing yet */
    T_EQ_INT(closed, 0);
    int ok = 1;
    uint64_t n = 0;
    for(; n < 100; n++) /* page 1, before streaming: only in the file */
        ok &= put_row(w, (int64_t)n) == DAPI_OK;
    dapi_result_live_stream(live);
    for(; n < 200000; n++)
        ok &= put_row(w, (int64_t)n) == DAPI_OK;
    T_CHECK(ok, "rows written");
    uint64_t pub = dapi_result_live_wait(live, 1, 10, &closed);
    T_CHECK(pub > 1 && closed == 0, "published %llu pages", (unsigned long long)pub);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    uint32_t seps[DAPI_PAGE_ROWS];
    size_t nseps = 7;
    T_EQ_INT(dapi_result_live_rows(live, 1, &b, seps, &nseps), 1);
    T_EQ_INT(nseps, 0); /* from the file */
    T_EQ_STR(b.data, expect_page(200000, 1));
    uint64_t from_memory = 0, good = 1;
    for(uint64_t p = 2; p <= pub; p++) {
        dapi_buf_reset(&b);
        int got = dapi_result_live_rows(live, p, &b, seps, &nseps);
        const char *want = expect_page(200000, p);
        good &= got == 1 && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0;
        if(nseps) {
            from_memory++;
            /* row r + 1 starts after seps[r]: {"n":…} */
            good &= nseps == DAPI_PAGE_ROWS - 1;
            for(size_t r = 0; r < nseps; r++)
                good &= b.data[seps[r]] == ',' && b.data[seps[r] + 1] == '{';
        }
    }
    T_CHECK(good, "pages from memory equal the file's, with their rows' ends");
    /* 256 pages are kept at most: the oldest published ones come from the file */
    T_CHECK(from_memory > 0 && from_memory <= 256, "%llu pages from memory of %llu",
            (unsigned long long)from_memory, (unsigned long long)pub);
    dapi_buf_reset(&b);
    T_EQ_INT(dapi_result_live_rows(live, pub + 1, &b, seps, &nseps), 0); /* not published */
    uint64_t rows = 0, pages = 0, bytes = 0;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(w);
    T_EQ_INT(dapi_result_live_wait(live, pub, 5000, &closed) >= pub, 1);
    T_EQ_INT(closed, 1); /* at once: the writer is done */
    dapi_buf_free(&b);
    dapi_result_live_unref(live);
    t_rm_rf(dir);
}

/* A writer of slug's result whose publications reach the registry, as the backend's. */
struct run {
    struct dapi_queries *qs;
    const char *slug;
    struct dapi_result_writer *w;
    struct dapi_result_live *live;
    uint64_t rows;
};

static void run_publish(void *arg, uint64_t pages)
{
    struct run *r = arg;
    dapi_queries_progress(r->qs, r->slug, pages);
}

static void run_start(struct run *r, struct dapi_queries *qs, const char *slug)
{
    char path[4096];
    memset(r, 0, sizeof *r);
    r->qs = qs;
    r->slug = slug;
    t_query_dir_make(qs, slug);
    dapi_queries_result_path(qs, slug, path, sizeof path);
    T_EQ_INT(dapi_result_writer_open(&r->w, path, &unlimited), DAPI_OK);
    if(!r->w)
        return;
    dapi_result_writer_on_publish(r->w, run_publish, r);
    r->live = dapi_result_writer_live(r->w);
    dapi_queries_set_live(qs, slug, r->live);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(r->w, 1, names, NULL), DAPI_OK);
}

static void run_rows(struct run *r, uint64_t upto)
{
    int ok = 1;
    while(r->w && r->rows < upto)
        ok &= put_row(r->w, (int64_t)r->rows++) == DAPI_OK;
    T_CHECK(ok, "rows written up to %llu", (unsigned long long)upto);
}

static void run_finish(struct run *r)
{
    uint64_t rows = 0, pages = 0, bytes = 0;
    if(!r->w)
        return;
    T_EQ_INT(dapi_result_writer_finish(r->w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(r->w);
    dapi_result_live_unref(r->live);
    dapi_queries_finish(r->qs, r->slug, DAPI_OK, NULL, bytes);
}

/* The page a view of slug serves while it runs: 1 with its rows in b, else 0/-1. */
static int view_page(struct dapi_queries *qs, const char *slug, uint64_t page, struct dapi_buf *b)
{
    struct dapi_qview v;
    dapi_buf_reset(b);
    if(dapi_queries_get(qs, slug, owner, 1000, &v))
        return -2;
    int got = v.live ? dapi_result_live_page(v.live, page, b) : -3;
    dapi_queries_release(qs, &v);
    return got;
}

/* Page waiters are woken by the publication of their page (event, not poll); end waiters by
 * the end only; a page published before the wait is not waited for. */
static void test_registry(void)
{
    char state[128], slug[DAPI_SLUG_MAX];
    t_fresh_dir(state, sizeof state, root, "registry");
    struct dapi_queries *qs = t_registry_open(state, 100000, UINT64_MAX, 1000, NULL, NULL);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT n", NULL, 1000, slug, NULL, 0), DAPI_OK);
    /* a wait registered before the run starts */
    struct t_waited early = {0}, p2 = {0}, p7 = {0}, end = {0}, past = {0};
    T_EQ_INT(dapi_queries_wait_page(qs, slug, 2, 1000000, t_on_wake, &early), 0);
    T_EQ_INT(dapi_queries_claim(qs, slug), 1);
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1000, &v), DAPI_OK);
    T_CHECK(v.live == NULL, "no pages before the run writes");
    dapi_queries_release(qs, &v);
    struct run r;
    run_start(&r, qs, slug);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    T_EQ_INT(view_page(qs, slug, 1, &b), 0);
    T_EQ_INT(dapi_queries_wait_page(qs, slug, 2, 1000000, t_on_wake, &p2), 0);
    T_EQ_INT(dapi_queries_wait_page(qs, slug, 7, 1000000, t_on_wake, &p7), 0);
    T_EQ_INT(dapi_queries_wait(qs, slug, 1000000, t_on_wake, &end), 0);
    T_EQ_INT(dapi_queries_wait_page(qs, slug, 1000000, 1000000, t_on_wake, &past), 0);
    run_rows(&r, 100);
    T_EQ_INT(view_page(qs, slug, 1, &b), 1);
    T_EQ_INT(early.calls + p2.calls + p7.calls + end.calls + past.calls, 0);
    /* page 2 is wanted: published (and its waiters woken) by its 200th row */
    run_rows(&r, 199);
    T_EQ_INT(early.calls + p2.calls, 0);
    run_rows(&r, 200);
    T_EQ_INT(early.calls, 1);
    T_EQ_INT(early.timed_out, 0);
    T_EQ_INT(p2.calls, 1);
    T_EQ_INT(view_page(qs, slug, 2, &b), 1);
    T_EQ_MEM(b.data, b.len, expect_page(1000, 2));
    /* published already: no wait */
    struct t_waited again = {0};
    T_EQ_INT(dapi_queries_wait_page(qs, slug, 2, 1000000, t_on_wake, &again), -1);
    /* page 7 is the lowest still wanted: published at its 700th row */
    run_rows(&r, 699);
    T_EQ_INT(p7.calls, 0);
    T_EQ_INT(view_page(qs, slug, 7, &b), 0);
    run_rows(&r, 700);
    T_EQ_INT(p7.calls, 1);
    T_EQ_INT(view_page(qs, slug, 7, &b), 1);
    T_EQ_INT(end.calls + past.calls + again.calls, 0);
    run_rows(&r, 1050);
    run_finish(&r);
    T_EQ_INT(end.calls, 1);
    T_EQ_INT(past.calls, 1);
    T_EQ_INT(p2.calls + p7.calls + early.calls, 3); /* each woken exactly once */
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1000, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_DONE);
    T_CHECK(v.live == NULL, "a finished query is served from its result file");
    dapi_queries_release(qs, &v);

    /* A page waiter times out at its deadline like any waiter. */
    char slow[DAPI_SLUG_MAX];
    struct t_waited late = {0};
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT slow", NULL, 1000, slow, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_claim(qs, slow), 1);
    run_start(&r, qs, slow);
    T_EQ_INT(dapi_queries_wait_page(qs, slow, 3, 5000, t_on_wake, &late), 0);
    dapi_queries_tick(qs, 1000, 5000);
    T_EQ_INT(late.calls, 1);
    T_EQ_INT(late.timed_out, 1);
    run_rows(&r, 400);
    run_finish(&r);
    T_EQ_INT(late.calls, 1);

    /* A run cut short (shutdown) takes its pages with it: served again only by the next run;
     * a query removed wakes its page waiters (they find it gone). */
    char cut[DAPI_SLUG_MAX];
    struct t_waited gone = {0};
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT cut", NULL, 1000, cut, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_claim(qs, cut), 1);
    run_start(&r, qs, cut);
    run_rows(&r, 150);
    T_EQ_INT(view_page(qs, cut, 1, &b), 1);
    dapi_queries_drop(qs, cut);
    T_EQ_INT(dapi_queries_get(qs, cut, owner, 1000, &v), DAPI_OK);
    T_EQ_INT(v.state, DAPI_Q_QUEUED);
    T_CHECK(v.live == NULL, "no pages once the run was dropped");
    dapi_queries_release(qs, &v);
    T_EQ_INT(dapi_queries_wait_page(qs, cut, 1, 1000000, t_on_wake, &gone), 0);
    dapi_queries_remove(qs, cut);
    T_EQ_INT(gone.calls, 1);
    T_EQ_INT(gone.timed_out, 0);
    T_EQ_INT(dapi_queries_get(qs, cut, owner, 1000, &v), DAPI_ERR_NOT_FOUND);
    dapi_result_writer_free(r.w); /* (its run ended with the drop) */
    dapi_result_live_unref(r.live);
    dapi_buf_free(&b);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

/* A query sharing an identical query's run (single-flight) is served that run's pages while
 * it runs, and woken by them. */
static void test_follower(void)
{
    char state[128], lead[DAPI_SLUG_MAX], fol[DAPI_SLUG_MAX];
    t_fresh_dir(state, sizeof state, root, "follower");
    struct dapi_queries *qs = t_registry_open(state, 100000, UINT64_MAX, 1000, NULL, NULL);
    if(!qs)
        return;
    struct dapi_reuse ru = {"ident-1", "", 300};
    enum dapi_reused how = DAPI_REUSED_RESULT;
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT n", NULL, &ru, 1000, lead, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_NONE);
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT n", NULL, &ru, 1000, fol, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_RUN);
    T_EQ_INT(dapi_queries_claim(qs, lead), 1);
    struct t_waited w3 = {0}, end = {0};
    T_EQ_INT(dapi_queries_wait_page(qs, fol, 3, 1000000, t_on_wake, &w3), 0);
    T_EQ_INT(dapi_queries_wait(qs, fol, 1000000, t_on_wake, &end), 0);
    struct run r;
    run_start(&r, qs, lead);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    run_rows(&r, 299);
    T_EQ_INT(w3.calls, 0);
    T_EQ_INT(view_page(qs, fol, 1, &b), 1);
    T_EQ_MEM(b.data, b.len, expect_page(1000, 1));
    run_rows(&r, 300);
    T_EQ_INT(w3.calls, 1);
    T_EQ_INT(view_page(qs, fol, 3, &b), 1);
    T_EQ_MEM(b.data, b.len, expect_page(1000, 3));
    T_EQ_INT(end.calls, 0);
    run_rows(&r, 420);
    run_finish(&r);
    T_EQ_INT(end.calls, 1);
    T_EQ_INT(w3.calls, 1);
    T_EQ_INT(t_registry_state(qs, fol, owner, 1000, NULL), DAPI_Q_DONE);
    dapi_buf_free(&b);
    dapi_queries_close(qs);
    t_rm_rf(state);
}

int main(void)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_tmpdir(root, sizeof root, "progressive"))
        T_DONE();
    dapi_sha256("owner-key", 9, owner);
    test_writer();
    test_writer_failed();
    test_streaming_reader();
    test_registry();
    test_follower();
    t_rm_rf(root);
    T_CHECK(!t_exists(root), "temp dir cleaned up");
    T_DONE();
}
