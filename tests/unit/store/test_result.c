/* The result file: writing through dapi_result_sink, paging, limits, and refusing damaged
 * files (every check must fail cleanly, never crash: also run this file under
 * -fsanitize=address,undefined). */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/codec.h"
#include "store/result.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64];
static char path[128];

static const struct dapi_result_limits unlimited = {UINT64_MAX, UINT64_MAX, NULL};

static void put64(unsigned char *p, uint64_t v);
static void rewrite(const unsigned char *buf, size_t len);

/* How many temporary files of the writer (result.bin.tmp-XXXX) are in dir. */
static int tmp_files(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while(d && (de = readdir(d)))
        n += strncmp(de->d_name, "result.bin.tmp", 14) == 0;
    if(d)
        closedir(d);
    return n;
}

static int64_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) ? -1 : (int64_t)st.st_size;
}

static struct dapi_colvec i64col(const int64_t *data, const uint64_t *validity)
{
    struct dapi_colvec c;
    memset(&c, 0, sizeof c);
    c.type = DAPI_CT_I64;
    c.data = data;
    c.validity = validity;
    return c;
}

/* Writes `total` rows of one I64 column "n" (values first, first + 1, …) in chunks of the
 * given sizes (repeated cyclically). Returns the finish result, or the first failing sink
 * call's; fills rows/pages/bytes on success. The writer is freed either way. */
static enum dapi_err write_n(const struct dapi_result_limits *lim, uint64_t total,
                             const uint64_t *sizes, size_t nsizes, uint64_t *rows, uint64_t *pages,
                             uint64_t *bytes, char *why, size_t whylen)
{
    struct dapi_result_writer *w = NULL;
    enum dapi_err r = dapi_result_writer_open(&w, path, lim);
    if(why)
        why[0] = '\0';
    if(r)
        return r;
    const char *names[] = {"n"};
    r = dapi_result_sink.begin(w, 1, names, NULL);
    static int64_t data[4096];
    uint64_t done = 0;
    for(size_t k = 0; !r && done < total; k++) {
        uint64_t n = nsizes ? sizes[k % nsizes] : total;
        if(n > total - done)
            n = total - done;
        if(n > N(data))
            n = N(data);
        for(uint64_t i = 0; i < n; i++)
            data[i] = (int64_t)(done + i);
        struct dapi_colvec c = i64col(data, NULL);
        r = dapi_result_sink.chunk(w, &c, 1, n);
        done += n;
    }
    uint64_t rr = 0, pp = 0, bb = 0;
    if(!r)
        r = dapi_result_writer_finish(w, &rr, &pp, &bb);
    if(rows)
        *rows = rr;
    if(pages)
        *pages = pp;
    if(bytes)
        *bytes = bb;
    if(why && dapi_result_writer_error(w))
        snprintf(why, whylen, "%s", dapi_result_writer_error(w));
    dapi_result_writer_free(w);
    return r;
}

/* The expected text of a page of write_n's rows. */
static char *expect_page(uint64_t total, uint64_t page)
{
    static char buf[1 << 16];
    size_t at = 0;
    buf[0] = '\0';
    if(page == 0)
        return buf;
    for(uint64_t r = (page - 1) * DAPI_PAGE_ROWS; r < total && r < page * DAPI_PAGE_ROWS; r++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s{\"n\":%llu}",
                               r % DAPI_PAGE_ROWS ? "," : "", (unsigned long long)r);
    return buf;
}

static void check_file(uint64_t total, const char *label)
{
    struct dapi_result *res = NULL;
    T_CHECK(dapi_result_open(&res, path) == DAPI_OK, "%s: opens", label);
    if(!res)
        return;
    uint64_t pages = (total + DAPI_PAGE_ROWS - 1) / DAPI_PAGE_ROWS;
    T_CHECK(dapi_result_rows(res) == total, "%s: rows %llu", label,
            (unsigned long long)dapi_result_rows(res));
    T_CHECK(dapi_result_pages(res) == pages, "%s: pages %llu, want %llu", label,
            (unsigned long long)dapi_result_pages(res), (unsigned long long)pages);
    for(uint64_t p = 0; p <= pages + 2; p++) {
        const char *data = NULL;
        size_t len = 99;
        t_result_page(res, p, &data, &len);
        const char *want = expect_page(total, p);
        T_CHECK(data && len == strlen(want) && memcmp(data, want, len) == 0,
                "%s: page %llu:\n  got  [%.*s]\n  want [%.200s]", label, (unsigned long long)p,
                (int)(len > 200 ? 200 : len), data ? data : "", want);
    }
    const char *data = NULL;
    size_t len = 99;
    t_result_page(res, UINT64_MAX, &data, &len);
    T_CHECK(data && len == 0, "%s: page UINT64_MAX is empty", label);
    dapi_result_close(res);
}

static void test_sizes(void)
{
    static const struct {
        uint64_t total;
        uint64_t sizes[6];
        size_t nsizes;
    } cases[] = {
        {0, {0}, 0},
        {1, {0}, 0},
        {99, {0}, 0},
        {100, {0}, 0},
        {101, {0}, 0},
        {200, {0}, 0},
        {250, {7, 93, 1, 0, 149}, 5},
        {250, {100}, 1},
        {250, {1}, 1},
        {1000, {333}, 1},
    };
    for(size_t i = 0; i < N(cases); i++) {
        char label[64];
        snprintf(label, sizeof label, "%llu rows (case %zu)", (unsigned long long)cases[i].total,
                 i);
        uint64_t rows = 9, pages = 9, bytes = 9;
        enum dapi_err r = write_n(&unlimited, cases[i].total, cases[i].sizes, cases[i].nsizes,
                                  &rows, &pages, &bytes, NULL, 0);
        T_CHECK(r == DAPI_OK, "%s: written (got %d)", label, (int)r);
        T_CHECK(rows == cases[i].total, "%s: finish rows %llu", label, (unsigned long long)rows);
        uint64_t want_pages = (cases[i].total + DAPI_PAGE_ROWS - 1) / DAPI_PAGE_ROWS;
        T_CHECK(pages == want_pages, "%s: finish pages %llu", label, (unsigned long long)pages);
        T_CHECK((int64_t)bytes == file_size(path), "%s: bytes %llu is the file size %lld", label,
                (unsigned long long)bytes, (long long)file_size(path));
        T_CHECK(tmp_files() == 0, "%s: no .tmp left", label);
        check_file(cases[i].total, label);
        unlink(path);
    }
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for(int j = 7; j >= 0; j--)
        v = v << 8 | p[j];
    return v;
}

/* The header, index and frames are as documented in result.h. */
static void test_layout(void)
{
    uint64_t rows, pages, bytes;
    T_EQ_INT(write_n(&unlimited, 101, NULL, 0, &rows, &pages, &bytes, NULL, 0), DAPI_OK);
    unsigned char buf[8192];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if(fd >= 0)
        close(fd);
    T_CHECK(n == (ssize_t)bytes, "read the whole file (%zd of %llu)", n,
            (unsigned long long)bytes);
    if(n < 64)
        return;
    uint64_t h[8];
    for(int i = 0; i < 8; i++)
        h[i] = get64(buf + 8 * i);
    T_EQ_MEM((const char *)buf, 8, "DAPIRES2");
    T_EQ_INT(h[1], 101);
    T_EQ_INT(h[2], 2);
    T_EQ_INT(h[3], 64);
    uint64_t data_len = h[4];
    T_EQ_INT(h[5], 64 + data_len);
    T_EQ_INT(h[6], bytes);
    T_CHECK(h[7] != 0, "a random id");
    T_EQ_INT(bytes, 64 + data_len + 8 * 3 + 8 * 2);
    const unsigned char *index = buf + 64 + data_len, *lens = index + 8 * 3;
    T_EQ_INT(get64(index), 0);
    T_EQ_INT(get64(index + 16), data_len);
    for(int p = 1; p <= 2; p++) {
        uint64_t a = get64(index + 8 * (p - 1)), b = get64(index + 8 * p);
        const char *want = expect_page(101, (uint64_t)p);
        T_EQ_INT(get64(lens + 8 * (p - 1)), strlen(want));
        /* each page is one zstd frame of exactly its rows */
        char out[8192];
        T_CHECK(dapi_zframe_check(buf + 64 + a, (size_t)(b - a), strlen(want)),
                "page %d is one frame", p);
        T_EQ_INT(dapi_zframe_decode(buf + 64 + a, (size_t)(b - a), out, strlen(want)), DAPI_OK);
        T_EQ_MEM(out, strlen(want), want);
    }
    /* Two writes of the same rows get different ids. */
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    uint64_t id1 = res ? dapi_result_id(res) : 0;
    dapi_result_close(res);
    T_EQ_INT(write_n(&unlimited, 101, NULL, 0, &rows, &pages, &bytes, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    T_CHECK(res && dapi_result_id(res) != id1, "a new result, a new id");
    T_CHECK(res && dapi_result_compressed(res), "written compressed");
    dapi_result_close(res);
    unlink(path);
}

/* A DAPIRES1 file as dapi wrote them before pages were compressed. */
static uint64_t write_v1(uint64_t total)
{
    static unsigned char buf[1 << 17];
    uint64_t pages = (total + DAPI_PAGE_ROWS - 1) / DAPI_PAGE_ROWS, at = 64;
    uint64_t index[64];
    index[0] = 0;
    for(uint64_t p = 1; p <= pages; p++) {
        const char *t = expect_page(total, p);
        memcpy(buf + at, t, strlen(t));
        at += strlen(t);
        index[p] = at - 64;
    }
    uint64_t rows_len = at - 64, index_off = at;
    for(uint64_t p = 0; p <= pages; p++, at += 8)
        put64(buf + at, index[p]);
    memset(buf, 0, 64);
    memcpy(buf, "DAPIRES1", 8);
    put64(buf + 8, total);
    put64(buf + 16, pages);
    put64(buf + 24, 64);
    put64(buf + 32, rows_len);
    put64(buf + 40, index_off);
    put64(buf + 48, at);
    rewrite(buf, (size_t)at);
    return at;
}

/* Files of the previous format, left by an older binary in a state directory, are still
 * served: as they are (no frame to send), decoded or borrowed. */
static void test_v1_readable(void)
{
    static const uint64_t totals[] = {0, 1, 99, 100, 101, 250, 1000};
    for(size_t i = 0; i < N(totals); i++) {
        char label[64];
        snprintf(label, sizeof label, "DAPIRES1 of %llu rows", (unsigned long long)totals[i]);
        write_v1(totals[i]);
        check_file(totals[i], label);
        struct dapi_result *res = NULL;
        T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
        if(!res)
            continue;
        T_CHECK(!dapi_result_compressed(res), "%s: not compressed", label);
        const void *frame;
        size_t flen, dlen;
        T_EQ_INT(dapi_result_page_frame(res, 1, &frame, &flen, &dlen), -1);
        const char *data;
        size_t len;
        T_EQ_INT(dapi_result_page_plain(res, 1, &data, &len), 0);
        T_EQ_MEM(data, len, expect_page(totals[i], 1));
        T_EQ_INT(dapi_result_page_size(res, 1), strlen(expect_page(totals[i], 1)));
        dapi_result_close(res);
    }
    unlink(path);
}

static void test_columns(void)
{
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    /* Duplicates get _2, _3 …, skipping names already taken; odd names are escaped. */
    const char *names[] = {"a", "a", "a_2", "b", "a", "we\"ird", ""};
    int64_t v[7][2];
    struct dapi_colvec cols[7];
    uint64_t valid = 1; /* only row 0 valid */
    for(int c = 0; c < 7; c++) {
        v[c][0] = c;
        v[c][1] = 10 + c;
        cols[c] = i64col(v[c], c == 3 ? &valid : NULL);
    }
    T_EQ_INT(dapi_result_sink.begin(w, 7, names, NULL), DAPI_OK);
    T_EQ_INT(dapi_result_sink.chunk(w, cols, 7, 2), DAPI_OK);
    uint64_t rows, pages, bytes;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    T_CHECK(dapi_result_writer_error(w) == NULL, "no error");
    dapi_result_writer_free(w);
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(res) {
        const char *data;
        size_t len;
        t_result_page(res, 1, &data, &len);
        T_EQ_MEM(
            data, len,
            "{\"a\":0,\"a_2\":1,\"a_2_2\":2,\"b\":3,\"a_3\":4,\"we\\\"ird\":5,\"\":6},"
            "{\"a\":10,\"a_2\":11,\"a_2_2\":12,\"b\":null,\"a_3\":14,\"we\\\"ird\":15,\"\":16}");
        dapi_result_close(res);
    }
    unlink(path);

    /* Zero columns: rows are empty objects. */
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    T_EQ_INT(dapi_result_sink.begin(w, 0, NULL, NULL), DAPI_OK);
    T_EQ_INT(dapi_result_sink.chunk(w, NULL, 0, 2), DAPI_OK);
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(w);
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(res) {
        const char *data;
        size_t len;
        t_result_page(res, 1, &data, &len);
        T_EQ_MEM(data, len, "{},{}");
        dapi_result_close(res);
    }
    unlink(path);
}

/* More than the 1 MiB flush threshold, with strings. */
static void test_large(void)
{
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    const char *names[] = {"id", "s"};
    T_EQ_INT(dapi_result_sink.begin(w, 2, names, NULL), DAPI_OK);
    static char text[2048][48];
    static struct dapi_dstr strs[2048];
    static int64_t ids[2048];
    const uint64_t total = 40000;
    for(uint64_t base = 0; base < total; base += 2048) {
        uint64_t n = total - base < 2048 ? total - base : 2048;
        for(uint64_t i = 0; i < n; i++) {
            ids[i] = (int64_t)(base + i);
            int len = snprintf(text[i], sizeof text[i], "row %08llu padding padding pad",
                               (unsigned long long)(base + i));
            memset(&strs[i], 0, sizeof strs[i]);
            strs[i].value.pointer.length = (uint32_t)len;
            memcpy(strs[i].value.pointer.prefix, text[i], 4);
            strs[i].value.pointer.ptr = text[i];
        }
        struct dapi_colvec cols[2] = {i64col(ids, NULL), i64col(NULL, NULL)};
        cols[1].type = DAPI_CT_VARCHAR;
        cols[1].data = strs;
        T_EQ_INT(dapi_result_sink.chunk(w, cols, 2, n), DAPI_OK);
    }
    uint64_t rows, pages, bytes;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(w);
    T_EQ_INT(rows, total);
    T_EQ_INT(pages, 400);
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(res) {
        uint64_t plain = 0;
        for(uint64_t p = 1; p <= pages; p++)
            plain += dapi_result_page_size(res, p);
        T_CHECK(plain > (3u << 19), "rows over 1.5 MiB (the flush threshold is 1 MiB): %llu",
                (unsigned long long)plain);
        T_CHECK(bytes < plain / 4, "stored compressed: %llu bytes for %llu",
                (unsigned long long)bytes, (unsigned long long)plain);
        static const uint64_t probe[] = {1, 2, 137, 399, 400};
        for(size_t i = 0; i < N(probe); i++) {
            const char *data;
            size_t len;
            t_result_page(res, probe[i], &data, &len);
            uint64_t first = (probe[i] - 1) * 100, last = first + 99;
            char head[96], tail[96];
            snprintf(head, sizeof head, "{\"id\":%llu,\"s\":\"row %08llu padding padding pad\"},",
                     (unsigned long long)first, (unsigned long long)first);
            snprintf(tail, sizeof tail, ",{\"id\":%llu,\"s\":\"row %08llu padding padding pad\"}",
                     (unsigned long long)last, (unsigned long long)last);
            T_CHECK(len > strlen(head) && memcmp(data, head, strlen(head)) == 0,
                    "page %llu starts with row %llu", (unsigned long long)probe[i],
                    (unsigned long long)first);
            T_CHECK(len > strlen(tail) &&
                        memcmp(data + len - strlen(tail), tail, strlen(tail)) == 0,
                    "page %llu ends with row %llu", (unsigned long long)probe[i],
                    (unsigned long long)last);
            size_t commas = 0;
            for(size_t j = 0; j < len; j++)
                commas += data[j] == '}' && j + 1 < len && data[j + 1] == ',';
            T_EQ_INT(commas, 99);
        }
        dapi_result_close(res);
    }
    unlink(path);
}

static void test_limits(void)
{
    char why[256];
    uint64_t rows, pages, bytes;
    static const uint64_t one_chunk[] = {1000}, by_three[] = {3}, by_one[] = {1};
    static const struct {
        uint64_t max_rows, total;
        const uint64_t *sizes;
    } rcases[] = {
        {5, 5, one_chunk},     {5, 6, one_chunk},     {5, 6, by_three},  {5, 6, by_one},
        {100, 100, one_chunk}, {100, 101, one_chunk}, {1, 1, one_chunk}, {1, 2, by_one},
    };
    for(size_t i = 0; i < N(rcases); i++) {
        struct dapi_result_limits lim = {rcases[i].max_rows, UINT64_MAX, NULL};
        enum dapi_err r = write_n(&lim, rcases[i].total, rcases[i].sizes, 1, &rows, &pages, &bytes,
                                  why, sizeof why);
        if(rcases[i].total <= rcases[i].max_rows) {
            T_CHECK(r == DAPI_OK, "rows case %zu: %llu rows at max %llu succeed (got %d)", i,
                    (unsigned long long)rcases[i].total, (unsigned long long)rcases[i].max_rows,
                    (int)r);
            T_CHECK(t_exists(path), "rows case %zu: file published", i);
            check_file(rcases[i].total, "at max_rows");
        } else {
            T_CHECK(r == DAPI_ERR_TOO_LARGE, "rows case %zu: one over fails (got %d)", i, (int)r);
            T_CHECK(strstr(why, "--max-result-rows") != NULL, "rows case %zu: why [%s]", i, why);
            T_CHECK(!t_exists(path) && tmp_files() == 0, "rows case %zu: no file left", i);
        }
        unlink(path);
    }

    /* Bytes: the limit is on the rows' JSON (separators included). */
    static const uint64_t totals[] = {1, 3, 100, 101, 250};
    for(size_t i = 0; i < N(totals); i++) {
        uint64_t rows_len = 0;
        for(uint64_t p = 1; p <= (totals[i] + 99) / 100; p++)
            rows_len += strlen(expect_page(totals[i], p));
        struct dapi_result_limits lim = {UINT64_MAX, rows_len, NULL};
        enum dapi_err r = write_n(&lim, totals[i], by_three, 1, &rows, &pages, &bytes, why,
                                  sizeof why);
        T_CHECK(r == DAPI_OK, "%llu rows in exactly %llu bytes succeed (got %d: %s)",
                (unsigned long long)totals[i], (unsigned long long)rows_len, (int)r, why);
        T_EQ_INT(bytes, file_size(path));
        unlink(path);
        lim.max_bytes = rows_len - 1;
        r = write_n(&lim, totals[i], by_three, 1, &rows, &pages, &bytes, why, sizeof why);
        T_CHECK(r == DAPI_ERR_TOO_LARGE, "%llu rows in %llu bytes fail (got %d)",
                (unsigned long long)totals[i], (unsigned long long)lim.max_bytes, (int)r);
        T_CHECK(strstr(why, "--max-result-bytes") != NULL, "why [%s]", why);
        T_CHECK(!t_exists(path) && tmp_files() == 0, "no file left after the bytes limit");
        unlink(path);
        /* The same limit set from another setting (a key's storage quota) names that one. */
        lim.bytes_setting = "the most one API key may store, --max-state-bytes-per-key";
        r = write_n(&lim, totals[i], by_three, 1, &rows, &pages, &bytes, why, sizeof why);
        T_EQ_INT(r, DAPI_ERR_TOO_LARGE);
        T_CHECK(strstr(why, "--max-state-bytes-per-key") != NULL &&
                    strstr(why, "--max-result-bytes") == NULL,
                "why names the setting that set the limit: [%s]", why);
        T_CHECK(!t_exists(path) && tmp_files() == 0, "no file left after the quota");
        unlink(path);
    }

    /* A writer freed without finishing leaves nothing; its file is made at its first write
     * (a page published), not when it opens. */
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    T_CHECK(tmp_files() == 0, "no file before the first write");
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    static int64_t data[DAPI_PAGE_ROWS + 1];
    struct dapi_colvec c = i64col(data, NULL);
    T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, DAPI_PAGE_ROWS + 1), DAPI_OK);
    T_CHECK(tmp_files() == 1, "page 1 complete: written to one temporary name");
    T_CHECK(!t_exists(path), "nothing published while writing");
    dapi_result_writer_free(w);
    T_CHECK(!t_exists(path) && tmp_files() == 0, "abandoned writer leaves nothing");
    dapi_result_writer_free(NULL);

    /* The result's directory is made with its file; a parent that does not exist either is
     * an error of the write, not a crash. */
    char sub[200], bad[200];
    snprintf(sub, sizeof sub, "%s/made/result.bin", dir);
    T_EQ_INT(dapi_result_writer_open(&w, sub, &unlimited), DAPI_OK);
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, 3), DAPI_OK);
    uint64_t rr, pp, bb;
    T_EQ_INT(dapi_result_writer_finish(w, &rr, &pp, &bb), DAPI_OK);
    T_CHECK(file_size(sub) == (int64_t)bb, "written to a directory made for it");
    dapi_result_writer_free(w);
    unlink(sub);
    snprintf(sub, sizeof sub, "%s/made", dir);
    rmdir(sub);
    snprintf(bad, sizeof bad, "%s/nope/deeper/result.bin", dir);
    T_EQ_INT(dapi_result_writer_open(&w, bad, &unlimited), DAPI_OK);
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, 3), DAPI_OK);
    T_EQ_INT(dapi_result_writer_finish(w, &rr, &pp, &bb), DAPI_ERR_IO);
    T_CHECK(strstr(dapi_result_writer_error(w), "create the result file") != NULL, "why: %s",
            dapi_result_writer_error(w));
    dapi_result_writer_free(w);
}

static void put64(unsigned char *p, uint64_t v)
{
    for(int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Rewrites the file with `len` bytes of `buf`. */
static void rewrite(const unsigned char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    T_CHECK(fd >= 0 && write(fd, buf, len) == (ssize_t)len, "rewrite");
    if(fd >= 0)
        close(fd);
}

static void expect_refused(const char *label)
{
    struct dapi_result *res = (struct dapi_result *)1;
    enum dapi_err r = dapi_result_open(&res, path);
    T_CHECK(r == DAPI_ERR_IO, "%s: refused with DAPI_ERR_IO (got %d)", label, (int)r);
    if(r == DAPI_OK && res) {
        /* Accepted: at least show whether a page would reach outside the file. */
        for(uint64_t p = 1; p <= dapi_result_pages(res) && p < 4; p++) {
            const char *data;
            size_t len;
            t_result_page(res, p, &data, &len);
            T_CHECK(len <= (size_t)file_size(path), "%s: page %llu is %zu bytes, file is %lld",
                    label, (unsigned long long)p, len, (long long)file_size(path));
        }
        dapi_result_close(res);
    } else {
        T_CHECK(res == NULL, "%s: out is NULL", label);
    }
}

/* Damaged DAPIRES1 files (the previous format) are refused as they always were. */
static void test_damaged(void)
{
    uint64_t pages = 3, bytes = write_v1(250);
    static unsigned char good[1 << 16], buf[1 << 16];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, good, sizeof good) : -1;
    if(fd >= 0)
        close(fd);
    T_CHECK(n == (ssize_t)bytes && n > 64, "read back %zd bytes", n);
    if(n != (ssize_t)bytes || n <= 64)
        return;
    size_t len = (size_t)n;
    uint64_t rows_len = bytes - 64 - 8 * (pages + 1), index_off = 64 + rows_len;

    /* Unchanged: opens (the baseline the cases below differ from). */
    rewrite(good, len);
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    dapi_result_close(res);

    struct {
        const char *label;
        size_t at;      /* byte offset to change */
        uint64_t value; /* u64 written there (when set64) */
        int set64;
        int cut; /* bytes removed from the end (negative: added) */
    } cases[] = {
        {"truncated by 1 byte", 0, 0, 0, 1},
        {"truncated to the header", 0, 0, 0, (int)(len - 64)},
        {"truncated to 63 bytes", 0, 0, 0, (int)(len - 63)},
        {"truncated to 0 bytes", 0, 0, 0, (int)len},
        {"one byte appended", 0, 0, 0, -1},
        {"magic flipped", 0, 0x3153455249504144ull ^ 1, 1, 0},
        {"rows that need another page", 8, 301, 1, 0},
        {"pages +1", 16, 4, 1, 0},
        {"pages huge", 16, UINT64_MAX / 8, 1, 0},
        {"rows_off moved", 24, 72, 1, 0},
        {"rows_len +8", 32, rows_len + 8, 1, 0},
        {"rows_len huge", 32, UINT64_MAX, 1, 0},
        {"index_off +8", 40, index_off + 8, 1, 0},
        {"total_len +1", 48, bytes + 1, 1, 0},
        {"index[0] not 0", index_off, 1, 1, 0},
        {"index[1] beyond the rows", index_off + 8, rows_len + 1, 1, 0},
        {"index[1] huge", index_off + 8, UINT64_MAX, 1, 0},
        {"index[2] before index[1]", index_off + 16, 5, 1, 0},
        {"index[last] beyond the rows", index_off + 24, rows_len + 100, 1, 0},
    };
    for(size_t i = 0; i < N(cases); i++) {
        memcpy(buf, good, len);
        size_t newlen = len - (size_t)cases[i].cut;
        if(cases[i].cut < 0)
            buf[len] = 'x';
        if(cases[i].set64)
            put64(buf + cases[i].at, cases[i].value);
        rewrite(buf, newlen);
        expect_refused(cases[i].label);
    }

    /* A header whose offsets wrap around 2^64: rows_len = 2^64 - 8 makes
     * rows_off + rows_len == 56, so the "index" starts inside the header (whose reserved
     * word is the 0 the first entry needs) and its second entry, the 8 bytes after the
     * header, can claim a page of any length. */
    memset(buf, 0, 80);
    memcpy(buf, "DAPIRES1", 8);
    put64(buf + 8, 1);               /* rows */
    put64(buf + 16, 1);              /* pages */
    put64(buf + 24, 64);             /* rows_off */
    put64(buf + 32, UINT64_MAX - 7); /* rows_len: 64 + this wraps to 56 */
    put64(buf + 40, 56);             /* index_off */
    put64(buf + 48, 72);             /* total */
    put64(buf + 64, 1u << 30);       /* "index[1]": page 1 would be 1 GiB */
    rewrite(buf, 72);
    expect_refused("offsets wrapping around 2^64");

    /* Missing file; a directory. */
    unlink(path);
    expect_refused("missing file");
    T_EQ_INT(mkdir(path, 0700), 0);
    expect_refused("a directory");
    rmdir(path);
}

static size_t read_file(unsigned char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, cap) : -1;
    if(fd >= 0)
        close(fd);
    return n > 0 ? (size_t)n : 0;
}

/* The file opens, but page `page` cannot be read (its frame is damaged): an error, never
 * wrong rows; the other pages still read. */
static void expect_page_refused(const char *label, uint64_t page, uint64_t total)
{
    struct dapi_result *res = NULL;
    T_CHECK(dapi_result_open(&res, path) == DAPI_OK, "%s: opens", label);
    if(!res)
        return;
    char *data = NULL;
    size_t len = 0;
    enum dapi_err e = dapi_result_page_copy(res, page, &data, &len);
    T_CHECK(e == DAPI_ERR_IO, "%s: page %llu refused (got %d)", label, (unsigned long long)page,
            (int)e);
    T_CHECK(data == NULL, "%s: no rows", label);
    free(data);
    uint64_t other = page == 1 ? 2 : 1;
    e = dapi_result_page_copy(res, other, &data, &len);
    T_CHECK(e == DAPI_OK && data && strcmp(data, expect_page(total, other)) == 0,
            "%s: page %llu still reads", label, (unsigned long long)other);
    free(data);
    dapi_result_close(res);
}

/* Damaged DAPIRES2 files: every offset and length is checked at open; a damaged frame
 * fails to decode (and is not sent as it is). */
static void test_damaged_v2(void)
{
    uint64_t rows, pages, bytes;
    T_EQ_INT(write_n(&unlimited, 250, NULL, 0, &rows, &pages, &bytes, NULL, 0), DAPI_OK);
    static unsigned char good[1 << 16], buf[1 << 16];
    size_t len = read_file(good, sizeof good);
    T_CHECK(len == bytes && len > 64, "read back %zu bytes", len);
    if(len != bytes || len <= 64)
        return;
    uint64_t data_len = get64(good + 32), index_off = 64 + data_len,
             lens_off = index_off + 8 * (pages + 1);
    uint64_t f1 = get64(good + index_off + 8);
    T_EQ_INT(pages, 3);
    T_EQ_INT(index_off + 8 * (2 * pages + 1), bytes);

    struct {
        const char *label;
        size_t at;
        uint64_t value;
        int set64;
        int cut;
    } cases[] = {
        {"truncated by 1 byte", 0, 0, 0, 1},
        {"truncated to the header", 0, 0, 0, (int)(len - 64)},
        {"truncated to 63 bytes", 0, 0, 0, (int)(len - 63)},
        {"truncated to 0 bytes", 0, 0, 0, (int)len},
        {"one byte appended", 0, 0, 0, -1},
        {"magic DAPIRES3", 0, 0x3353455249504144ull, 1, 0},
        {"rows that need another page", 8, 301, 1, 0},
        {"pages +1", 16, 4, 1, 0},
        {"pages huge", 16, UINT64_MAX / 8, 1, 0},
        {"data_off moved", 24, 72, 1, 0},
        {"data_len +8", 32, data_len + 8, 1, 0},
        {"data_len huge", 32, UINT64_MAX, 1, 0},
        {"data_len wrapping to the header", 32, UINT64_MAX - 7, 1, 0},
        {"index_off +8", 40, index_off + 8, 1, 0},
        {"total_len +1", 48, bytes + 1, 1, 0},
        {"index[0] not 0", index_off, 1, 1, 0},
        {"index[1] beyond the data", index_off + 8, data_len + 1, 1, 0},
        {"index[1] huge", index_off + 8, UINT64_MAX, 1, 0},
        {"index[1] 0 (an empty frame)", index_off + 8, 0, 1, 0},
        {"index[2] equal to index[1]", index_off + 16, f1, 1, 0},
        {"index[last] short of the data", index_off + 24, data_len - 1, 1, 0},
        {"decoded length huge", lens_off, UINT64_MAX, 1, 0},
        {"decoded length beyond any frame's ratio", lens_off, f1 * 65536 + 65536, 1, 0},
    };
    for(size_t i = 0; i < N(cases); i++) {
        memcpy(buf, good, len);
        size_t newlen = len - (size_t)cases[i].cut;
        if(cases[i].cut < 0)
            buf[len] = 'x';
        if(cases[i].set64)
            put64(buf + cases[i].at, cases[i].value);
        rewrite(buf, newlen);
        expect_refused(cases[i].label);
    }

    /* Frames that do not hold what the index says: refused when decoded. */
    uint64_t d1 = get64(good + lens_off);
    memcpy(buf, good, len);
    put64(buf + lens_off, d1 + 1);
    rewrite(buf, len);
    expect_page_refused("decoded length +1", 1, 250);
    memcpy(buf, good, len);
    put64(buf + lens_off, d1 - 1);
    rewrite(buf, len);
    expect_page_refused("decoded length -1 (the frame decodes to more)", 1, 250);
    memcpy(buf, good, len);
    buf[64 + f1 / 2] ^= 0x5a;
    rewrite(buf, len);
    expect_page_refused("a byte flipped inside frame 1", 1, 250);
    memcpy(buf, good, len);
    buf[64 + f1 - 1] ^= 0x01; /* the checksum's last byte */
    rewrite(buf, len);
    expect_page_refused("frame 1's checksum", 1, 250);
    /* Frame 2 replaced by a copy of frame 1 with the same length: decodes, but to page 1's
     * rows — the checksum cannot tell, the declared length still holds; what matters is that
     * nothing is read or written out of bounds (run under ASan). */
    unlink(path);
}

/* A page over the 1 MiB at which the writer feeds the encoder: its frame is written in
 * pieces (no decoded size in its header) and still decodes to exactly the declared length,
 * and no more. */
static void test_big_page(void)
{
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    if(!w)
        return;
    const char *names[] = {"s"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    static char text[150][30000];
    static struct dapi_dstr strs[150];
    for(int i = 0; i < 150; i++) {
        memset(text[i], 'a' + i % 26, sizeof text[i]);
        snprintf(text[i], 32, "row %03d ✓ 日本 😀", i);
        text[i][strlen(text[i])] = ' ';
        memset(&strs[i], 0, sizeof strs[i]);
        strs[i].value.pointer.length = (uint32_t)sizeof text[i];
        memcpy(strs[i].value.pointer.prefix, text[i], 4);
        strs[i].value.pointer.ptr = text[i];
    }
    struct dapi_colvec col = i64col(NULL, NULL);
    col.type = DAPI_CT_VARCHAR;
    col.data = strs;
    T_EQ_INT(dapi_result_sink.chunk(w, &col, 1, 150), DAPI_OK);
    uint64_t rows, pages, bytes;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, &bytes), DAPI_OK);
    dapi_result_writer_free(w);
    T_EQ_INT(pages, 2);
    T_CHECK(bytes < 150 * 30000 / 10, "compressed: %llu bytes", (unsigned long long)bytes);
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(!res)
        return;
    T_CHECK(dapi_result_page_size(res, 1) > (2u << 20), "page 1 is ~3 MB (%llu)",
            (unsigned long long)dapi_result_page_size(res, 1));
    for(uint64_t p = 1; p <= 2; p++) {
        char *data = NULL;
        size_t len = 0;
        T_EQ_INT(dapi_result_page_copy(res, p, &data, &len), DAPI_OK);
        T_EQ_INT(len, dapi_result_page_size(res, p));
        size_t n = p == 1 ? 100 : 50;
        char head[64];
        snprintf(head, sizeof head, "{\"s\":\"row %03d ✓ 日本 😀 ", (int)(p - 1) * 100);
        T_CHECK(data && strncmp(data, head, strlen(head)) == 0, "page %llu starts [%.40s]",
                (unsigned long long)p, data ? data : "");
        T_EQ_INT(len, n * (30000 + 8) + (n - 1));
        free(data);
    }
    dapi_result_close(res);
    /* The big frame declares no size: a smaller declared length must fail, not overflow. */
    static unsigned char buf[1 << 20];
    size_t len = read_file(buf, sizeof buf);
    T_CHECK(len == bytes, "read back");
    uint64_t lens_off = get64(buf + 40) + 8 * 3;
    put64(buf + lens_off, get64(buf + lens_off) - 1);
    rewrite(buf, len);
    res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(res) {
        char *data = NULL;
        size_t dl;
        T_EQ_INT(dapi_result_page_copy(res, 1, &data, &dl), DAPI_ERR_IO);
        free(data);
        dapi_result_close(res);
    }
    unlink(path);
}

/* References: the mapping lives until the last one is dropped. */
static void test_refs(void)
{
    T_EQ_INT(write_n(&unlimited, 150, NULL, 0, NULL, NULL, NULL, NULL, 0), DAPI_OK);
    struct dapi_result *res = NULL;
    T_EQ_INT(dapi_result_open(&res, path), DAPI_OK);
    if(!res)
        return;
    struct dapi_result *again = dapi_result_ref(res);
    T_CHECK(again == res, "the same result");
    dapi_result_close(res);
    unlink(path);
    const void *frame;
    size_t flen, dlen;
    T_EQ_INT(dapi_result_page_frame(again, 2, &frame, &flen, &dlen), 0);
    T_EQ_INT(dlen, strlen(expect_page(150, 2)));
    T_EQ_INT(dapi_result_page_frame(again, 3, &frame, &flen, &dlen), 0);
    T_CHECK(frame == NULL && flen == 0 && dlen == 0, "past the end: no frame");
    dapi_result_close(again);
}

/* Whether the file at path opens and every page decodes (1), opens but a page does not
 * (0), or does not open (-1). */
static int verified(void)
{
    struct dapi_result *res = NULL;
    if(dapi_result_open(&res, path))
        return -1;
    int ok = dapi_result_verify(res) == DAPI_OK;
    dapi_result_close(res);
    return ok;
}

/* Results are not fsynced: a start after an unclean stop verifies them. Damage that leaves
 * the structure valid — a changed byte, a block of zeros or of stale bytes where a power loss
 * kept no data — is refused by the open or fails the check (each page's zstd frame carries a
 * checksum); a whole file passes. */
static void test_verify(void)
{
    uint64_t rows, pages, bytes;
    T_EQ_INT(write_n(&unlimited, 30000, NULL, 0, &rows, &pages, &bytes, NULL, 0), DAPI_OK);
    static unsigned char good[1 << 20], buf[1 << 20];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, good, sizeof good) : -1;
    if(fd >= 0)
        close(fd);
    T_CHECK(n == (ssize_t)bytes && n > 3 * 4096, "read back %zd bytes", n);
    if(n != (ssize_t)bytes || n <= 3 * 4096)
        return;
    size_t len = (size_t)n;
    T_EQ_INT(verified(), 1);
    size_t at[] = {64 + 10, 4096 + 100, len / 2};
    for(size_t i = 0; i < N(at); i++) { /* one byte changed inside the frames */
        memcpy(buf, good, len);
        buf[at[i]] ^= 0x20;
        rewrite(buf, len);
        T_CHECK(verified() != 1, "a byte changed at %zu: not accepted", at[i]);
    }
    memcpy(buf, good, len); /* a 4 KiB block the disk did not keep */
    memset(buf + 4096, 0, 4096);
    rewrite(buf, len);
    T_CHECK(verified() != 1, "a zeroed block: not accepted");
    memcpy(buf, good, len); /* stale bytes: two blocks swapped */
    memcpy(buf + 4096, good + 8192, 4096);
    memcpy(buf + 8192, good + 4096, 4096);
    rewrite(buf, len);
    T_CHECK(verified() != 1, "swapped blocks: not accepted");
    rewrite(good, len);
    T_EQ_INT(verified(), 1);
    unlink(path);
}

/* Writes n rows of "n" (0, 1, …) with keep_small(max); returns the writer, finished. */
static struct dapi_result_writer *write_small(uint64_t n, size_t max, uint64_t *bytes)
{
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, path, &unlimited), DAPI_OK);
    dapi_result_writer_keep_small(w, max);
    const char *names[] = {"n"};
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    static int64_t data[1000];
    for(uint64_t i = 0; i < n && i < N(data); i++)
        data[i] = (int64_t)i;
    struct dapi_colvec c = i64col(data, NULL);
    T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, n), DAPI_OK);
    uint64_t rows, pages;
    T_EQ_INT(dapi_result_writer_finish(w, &rows, &pages, bytes), DAPI_OK);
    T_EQ_INT(rows, n);
    return w;
}

/* keep_small: a result that fits in its first page and in max bytes gets no file; its image
 * is the same result (read back at any offset of another file, as a pack record holds it). */
static void test_small(void)
{
    unlink(path);
    uint64_t bytes;
    struct dapi_result_writer *w = write_small(42, 64 * 1024, &bytes);
    size_t len;
    const void *image = dapi_result_writer_small(w, &len);
    T_CHECK(image != NULL, "kept in memory");
    T_EQ_INT(len, bytes);
    T_CHECK(!t_exists(path) && tmp_files() == 0, "no file at all");
    /* the image inside a file, at an offset no page boundary falls on */
    char host[200];
    snprintf(host, sizeof host, "%s/host.bin", dir);
    int fd = open(host, O_RDWR | O_CREAT | O_TRUNC, 0600);
    T_CHECK(fd >= 0, "host file");
    static char junk[5000];
    memset(junk, 'j', sizeof junk);
    T_CHECK(write(fd, junk, 4099) == 4099 && write(fd, image, len) == (ssize_t)len &&
                write(fd, junk, 100) == 100,
            "host written");
    dapi_result_writer_free(w);
    struct dapi_result *r = NULL;
    T_EQ_INT(dapi_result_open_at(&r, fd, 4099, len), DAPI_OK);
    close(fd);
    T_EQ_INT(dapi_result_pages(r), 1);
    T_EQ_INT(dapi_result_rows(r), 42);
    T_EQ_INT(dapi_result_verify(r), DAPI_OK);
    char *rows;
    size_t rlen;
    T_EQ_INT(dapi_result_page_copy(r, 1, &rows, &rlen), DAPI_OK);
    T_CHECK(strncmp(rows, "{\"n\":0},{\"n\":1},", 16) == 0 && strstr(rows, "{\"n\":41}") != NULL,
            "the rows: %.40s", rows);
    free(rows);
    const void *img2;
    size_t len2;
    dapi_result_image(r, &img2, &len2);
    T_EQ_INT(len2, len);
    T_CHECK(memcmp(img2, "DAPIRES2", 8) == 0, "the image starts with its header");
    dapi_result_close(r);
    /* a wrong length or offset is refused, not read out of bounds */
    fd = open(host, O_RDONLY);
    T_EQ_INT(dapi_result_open_at(&r, fd, 4099, len - 1), DAPI_ERR_IO);
    T_EQ_INT(dapi_result_open_at(&r, fd, 4098, len), DAPI_ERR_IO);
    T_CHECK(r == NULL, "no result");
    close(fd);
    unlink(host);

    /* A full page (published at once) or more than max: written to the file as before. */
    w = write_small(DAPI_PAGE_ROWS, 64 * 1024, &bytes);
    T_CHECK(dapi_result_writer_small(w, &len) == NULL, "a complete page 1 went to the file");
    T_EQ_INT(file_size(path), bytes);
    dapi_result_writer_free(w);
    unlink(path);
    w = write_small(42, 64, &bytes);
    T_CHECK(dapi_result_writer_small(w, &len) == NULL, "more than max: a file");
    T_EQ_INT(file_size(path), bytes);
    dapi_result_writer_free(w);
    unlink(path);
    w = write_small(42, 0, &bytes);
    T_CHECK(dapi_result_writer_small(w, &len) == NULL, "not asked: a file");
    T_EQ_INT(file_size(path), bytes);
    dapi_result_writer_free(w);
    unlink(path);
}

int main(void)
{
    if(t_tmpdir(dir, sizeof dir, "result"))
        T_DONE();
    snprintf(path, sizeof path, "%s/result.bin", dir);
    test_sizes();
    test_layout();
    test_columns();
    test_large();
    test_limits();
    test_damaged();
    test_verify();
    test_v1_readable();
    test_damaged_v2();
    test_big_page();
    test_refs();
    test_small();
    unlink(path);
    T_CHECK(rmdir(dir) == 0, "temp dir empty at the end");
    T_DONE();
}
