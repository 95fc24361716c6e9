/* The decoded-page cache (src/store/pagecache.c): pages come back decoded and right, the
 * cache stays within its bound evicting the least recently used page, a page held by a
 * reader outlives its eviction and the cache itself, and concurrent readers agree. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/codec.h"
#include "store/gzip.h"
#include "store/pagecache.h"
#include "store/result.h"
#include "t.h"

static char dir[64], path[128];

/* A result of `total` rows {"n":i}, opened. */
static struct dapi_result *make_result(uint64_t total)
{
    struct dapi_result_limits lim = {UINT64_MAX, UINT64_MAX, NULL};
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &lim), DAPI_OK);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    static int64_t data[1000];
    for(uint64_t base = 0; base < total; base += 1000) {
        uint64_t n = total - base < 1000 ? total - base : 1000;
        for(uint64_t i = 0; i < n; i++)
            data[i] = (int64_t)(base + i);
        struct dapi_colvec c;
        memset(&c, 0, sizeof c);
        c.type = DAPI_CT_I64;
        c.data = data;
        T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, n), DAPI_OK);
    }
    uint64_t rows, pages, bytes;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(w);
    struct dapi_result *r = NULL;
    T_EQ_INT(dapi_result_open(&r, path), DAPI_OK);
    unlink(path); /* mapped: stays readable */
    return r;
}

/* Does p hold page `page` of make_result's rows? */
static int right_page(struct dapi_page *p, uint64_t page)
{
    size_t len;
    const char *d = dapi_page_data(p, &len);
    char head[48];
    snprintf(head, sizeof head, "{\"n\":%llu},", (unsigned long long)(page - 1) * 100);
    return len > strlen(head) && strncmp(d, head, strlen(head)) == 0 && d[len] == '\0' &&
           d[len - 1] == '}';
}

static struct dapi_page *get(struct dapi_page_cache *c, struct dapi_result *r, uint64_t page)
{
    struct dapi_page *p = NULL;
    T_EQ_INT(dapi_page_cache_get(c, r, page, DAPI_PAGE_PLAIN, "", "", &p), DAPI_OK);
    T_CHECK(p && right_page(p, page), "page %llu decoded right", (unsigned long long)page);
    return p;
}

static void test_bound_and_lru(void)
{
    struct dapi_result *r = make_result(2000); /* 20 pages of ~1.2 KB */
    if(!r)
        return;
    uint64_t one = dapi_result_page_size(r, 2) + 200; /* a page and its entry */
    struct dapi_page_cache *c = dapi_page_cache_new(3 * one + one / 2);
    struct dapi_page_cache_stats st;
    for(uint64_t p = 1; p <= 20; p++)
        dapi_page_release(get(c, r, p));
    dapi_page_cache_stats(c, &st);
    T_CHECK(st.bytes <= 3 * one + one / 2, "bounded: %llu bytes", (unsigned long long)st.bytes);
    T_EQ_INT(st.entries, 3);
    T_EQ_INT(st.misses, 20);
    T_EQ_INT(st.evictions, 17);
    /* 18, 19, 20 are kept; touching 18 makes 19 the least recent */
    dapi_page_release(get(c, r, 18));
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.hits, 1);
    dapi_page_release(get(c, r, 1)); /* evicts 19 */
    dapi_page_release(get(c, r, 18));
    dapi_page_release(get(c, r, 20));
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.hits, 3);
    dapi_page_release(get(c, r, 19));
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.misses, 22);

    /* A page held while it is evicted stays readable until released. */
    struct dapi_page *held = get(c, r, 5);
    for(uint64_t p = 6; p <= 12; p++)
        dapi_page_release(get(c, r, p));
    T_CHECK(right_page(held, 5), "a held page survives its eviction");
    /* ... and the cache's end */
    dapi_page_cache_free(c);
    T_CHECK(right_page(held, 5), "a held page survives the cache");
    dapi_page_release(held);

    /* No cache, or one too small for a page: decoded for the reader alone. */
    struct dapi_page *p = get(NULL, r, 7);
    dapi_page_release(p);
    c = dapi_page_cache_new(100);
    dapi_page_release(get(c, r, 7));
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.entries, 0);
    T_EQ_INT(st.bytes, 0);
    dapi_page_cache_free(c);
    /* a page past the end is empty */
    c = dapi_page_cache_new(1 << 20);
    T_EQ_INT(dapi_page_cache_get(c, r, 21, DAPI_PAGE_PLAIN, "", "", &p), DAPI_OK);
    size_t len = 9;
    T_CHECK(p && dapi_page_data(p, &len) && len == 0, "page 21 is empty");
    dapi_page_release(p);
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.entries, 0); /* (not kept: any number past the end is a page) */
    dapi_page_cache_free(c);
    dapi_page_release(NULL);
    dapi_page_cache_free(NULL);
    dapi_result_close(r);
}

/* The forms of a body: head and tail around the rows; for zstd, the stored frame between two
 * raw frames of head and tail. Bodies with another head, tail or form are other entries. */
static void test_forms(void)
{
    struct dapi_result *r = make_result(300);
    if(!r)
        return;
    struct dapi_page_cache *c = dapi_page_cache_new(1 << 20);
    struct dapi_page *a = NULL, *b = NULL, *z = NULL, *z2 = NULL;
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_PLAIN, "{\"h\":[", "]}", &a), DAPI_OK);
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_PLAIN, "{\"other\":[", "]}", &b), DAPI_OK);
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_ZSTD, "{\"h\":[", "]}", &z), DAPI_OK);
    T_CHECK(a && b && z && a != b && a != z, "three entries");
    if(!a || !b || !z)
        return;
    char *rows;
    size_t rl, len;
    T_EQ_INT(dapi_result_page_copy(r, 2, &rows, &rl), DAPI_OK);
    const char *d = dapi_page_data(a, &len);
    T_CHECK(len == rl + 8 && memcmp(d, "{\"h\":[", 6) == 0 && memcmp(d + 6, rows, rl) == 0 &&
                memcmp(d + 6 + rl, "]}", 2) == 0,
            "plain body: head, rows, tail");
    /* the zstd body, built by hand from its parts */
    const void *frame;
    size_t flen, dlen;
    T_EQ_INT(dapi_result_page_frame(r, 2, &frame, &flen, &dlen), 0);
    struct dapi_buf want;
    dapi_buf_init(&want, 1 << 20);
    dapi_zframe_raw(&want, "{\"h\":[", 6);
    dapi_buf_add(&want, frame, flen);
    dapi_zframe_raw(&want, "]}", 2);
    d = dapi_page_data(z, &len);
    T_CHECK(len == want.len && memcmp(d, want.data, len) == 0, "zstd body: frames as stored");
    dapi_buf_free(&want);
    free(rows);
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_ZSTD, "{\"h\":[", "]}", &z2), DAPI_OK);
    T_CHECK(z2 == z, "the same body again (a hit)");
    /* the gzip body: the plain one gzipped (zlib's output is the same for the same input and
     * level), an entry of its own, a hit the second time */
    struct dapi_page *g = NULL, *g2 = NULL;
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_GZIP, "{\"h\":[", "]}", &g), DAPI_OK);
    T_CHECK(g && g != a && g != z, "a gzip entry of its own");
    if(g) {
        size_t plen;
        const char *plain = dapi_page_data(a, &plen);
        dapi_buf_init(&want, 1 << 20);
        T_EQ_INT(dapi_gzip(&want, plain, plen, DAPI_GZIP_LEVEL), DAPI_OK);
        d = dapi_page_data(g, &len);
        T_CHECK(len == want.len && len > 18 && memcmp(d, want.data, len) == 0 &&
                    (unsigned char)d[0] == 0x1f && (unsigned char)d[1] == 0x8b,
                "gzip body: a gzip member of the plain body (%zu bytes for %zu)", len, plen);
        T_CHECK(len < plen, "gzip body smaller than the plain one: %zu for %zu", len, plen);
        dapi_buf_free(&want);
    }
    T_EQ_INT(dapi_page_cache_get(c, r, 2, DAPI_PAGE_GZIP, "{\"h\":[", "]}", &g2), DAPI_OK);
    T_CHECK(g2 == g, "the gzip body again (a hit)");
    dapi_page_release(g);
    dapi_page_release(g2);
    dapi_page_release(a);
    dapi_page_release(b);
    dapi_page_release(z);
    dapi_page_release(z2);
    dapi_page_cache_free(c);
    dapi_result_close(r);
}

/* Two results never share entries, though their pages have the same numbers. */
static void test_results_apart(void)
{
    struct dapi_result *a = make_result(300), *b = make_result(1000);
    if(!a || !b)
        return;
    T_CHECK(dapi_result_id(a) != dapi_result_id(b), "distinct ids");
    struct dapi_page_cache *c = dapi_page_cache_new(1 << 20);
    struct dapi_page *pa = get(c, a, 3), *pb = get(c, b, 3);
    size_t la, lb;
    dapi_page_data(pa, &la);
    dapi_page_data(pb, &lb);
    T_CHECK(pa != pb, "separate entries");
    dapi_page_release(pa);
    dapi_page_release(pb);
    struct dapi_page_cache_stats st;
    dapi_page_cache_stats(c, &st);
    T_EQ_INT(st.entries, 2);
    dapi_page_cache_free(c);
    dapi_result_close(a);
    dapi_result_close(b);
}

struct worker {
    struct dapi_page_cache *c;
    struct dapi_result *r;
    unsigned seed;
    int bad;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for(int i = 0; i < 3000; i++) {
        w->seed = w->seed * 1103515245u + 12345u;
        uint64_t page = 1 + (w->seed >> 16) % 50;
        struct dapi_page *p = NULL;
        if(dapi_page_cache_get(w->c, w->r, page, DAPI_PAGE_PLAIN, "", "", &p) ||
           !right_page(p, page))
            w->bad++;
        dapi_page_release(p);
    }
    return NULL;
}

static void test_threads(void)
{
    struct dapi_result *r = make_result(5000);
    if(!r)
        return;
    struct dapi_page_cache *c = dapi_page_cache_new(20 * (dapi_result_page_size(r, 1) + 200));
    struct worker w[4];
    pthread_t t[4];
    for(int i = 0; i < 4; i++) {
        w[i] = (struct worker){c, r, (unsigned)i * 7919u + 1, 0};
        pthread_create(&t[i], NULL, hammer, &w[i]);
    }
    int bad = 0;
    for(int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
    }
    T_EQ_INT(bad, 0);
    struct dapi_page_cache_stats st;
    dapi_page_cache_stats(c, &st);
    T_CHECK(st.hits > 0 && st.evictions > 0, "hits %llu, evictions %llu",
            (unsigned long long)st.hits, (unsigned long long)st.evictions);
    T_CHECK(st.entries <= 20, "bounded: %llu entries", (unsigned long long)st.entries);
    dapi_page_cache_free(c);
    dapi_result_close(r);
}

int main(void)
{
    if(t_tmpdir(dir, sizeof dir, "pagecache"))
        T_DONE();
    snprintf(path, sizeof path, "%s/result.bin", dir);
    test_bound_and_lru();
    test_forms();
    test_results_apart();
    test_threads();
    T_CHECK(rmdir(dir) == 0, "temp dir empty at the end");
    T_DONE();
}
