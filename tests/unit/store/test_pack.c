/* Small results packed as records of shared files (store/pack.h): the pack files on their
 * own (records read back in order, removal, torn and damaged records, the later of two
 * records of one slug, files deleted once empty, a new file past the size limit), then the
 * registry keeping small results there: no directory, across clean and unclean restarts,
 * deletion, reuse and single-flight copies, and files a checkpoint wrote meanwhile. */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queries_fixture.h"
#include "store/pack.h"
#include "store/result.h"

static char dir[1024];

/* What store_pack_each gave: slugs and metas in order, and whether each had a result. */
struct seen {
    int n;
    char slug[16][DAPI_SLUG_MAX];
    char meta[16][64];
    uint64_t rows[16];
};

static void on_record(void *arg, const char *slug, const char *meta, size_t mlen,
                      const void *result, size_t rlen)
{
    struct seen *s = arg;
    uint64_t rows, pages;
    T_EQ_INT(strlen(meta), mlen);
    if(s->n < 16) {
        snprintf(s->slug[s->n], sizeof s->slug[0], "%s", slug);
        snprintf(s->meta[s->n], sizeof s->meta[0], "%.*s", (int)mlen, meta);
        s->rows[s->n] = rlen && dapi_result_check(result, rlen, &rows, &pages) == DAPI_OK
                            ? rows
                            : UINT64_MAX;
    }
    s->n++;
}

static struct seen reopen(struct store_pack **p)
{
    struct seen s = {0};
    store_pack_close(*p);
    *p = NULL;
    T_EQ_INT(store_pack_open(p, dir), 0);
    if(*p)
        store_pack_each(*p, on_record, &s);
    return s;
}

static int pack_files(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while(d && (de = readdir(d)))
        n += strncmp(de->d_name, ".pack-", 6) == 0;
    if(d)
        closedir(d);
    return n;
}

/* Cuts the last n bytes off the file at path (a write a power loss tore). */
static void tear(const char *path, off_t n)
{
    struct stat st;
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(truncate(path, st.st_size - n), 0);
}

/* Takes (a directory of that name) or frees every name .pack-<from>..<from+99> in qdir: a
 * pack file cannot be made while they are taken. */
static void block_pack_names(const char *qdir, int from, int take)
{
    char d[1200];
    for(int n = from; n < from + 100; n++) {
        snprintf(d, sizeof d, "%s/.pack-%d", qdir, n);
        if(take)
            T_EQ_INT(mkdir(d, 0700), 0);
        else
            rmdir(d);
    }
}

static void test_files(void)
{
    state_dir(dir, sizeof dir, "files");
    struct store_pack *p = NULL;
    T_EQ_INT(store_pack_open(&p, dir), 0);
    T_EQ_INT(pack_files(), 0);
    size_t len;
    void *img = t_result_small(5, &len);
    struct dapi_result *r = NULL;
    T_EQ_INT(store_pack_put(p, "a", "{\"m\":\"a\"}", 9, img, len, &r), 0);
    T_CHECK(r && dapi_result_rows(r) == 5, "the result mapped from the record");
    dapi_result_close(r);
    T_EQ_INT(store_pack_put(p, "b", "{\"m\":\"b\"}", 9, NULL, 0, NULL), 0);
    T_EQ_INT(store_pack_put(p, "c", "{\"m\":\"c\"}", 9, img, len, NULL), 0);
    T_EQ_INT(pack_files(), 1);
    T_CHECK(store_pack_has(p, "a") && store_pack_has(p, "b") && !store_pack_has(p, "d"), "has");
    T_EQ_INT(store_pack_remove(p, "b", 0), 1);
    T_EQ_INT(store_pack_remove(p, "b", 0), 0);
    T_EQ_INT(store_pack_remove(p, "nope", 1), 0);
    /* the same slug again: the new record replaces the old */
    T_EQ_INT(store_pack_put(p, "a", "{\"m\":\"a2\"}", 10, img, len, NULL), 0);
    struct seen s = reopen(&p);
    T_EQ_INT(s.n, 2);
    T_EQ_STR(s.slug[0], "c");
    T_EQ_STR(s.slug[1], "a");
    T_EQ_STR(s.meta[1], "{\"m\":\"a2\"}");
    T_EQ_INT(s.rows[0], 5);
    T_CHECK(!store_pack_has(p, "b"), "removed stays removed");

    /* A record torn by a power loss (the file's tail) is not read, nor anything after it. */
    T_EQ_INT(store_pack_put(p, "d", "{\"m\":\"d\"}", 9, img, len, NULL), 0);
    T_EQ_INT(store_pack_put(p, "e", "{\"m\":\"e\"}", 9, img, len, NULL), 0);
    char f[4200];
    snprintf(f, sizeof f, "%s/.pack-2", dir);
    tear(f, 3);
    s = reopen(&p);
    T_EQ_INT(s.n, 3);
    T_EQ_STR(s.slug[2], "d");
    T_CHECK(!store_pack_has(p, "e"), "the torn record is not read");
    /* a byte the disk did not keep: that record's checksum fails */
    T_EQ_INT(store_pack_put(p, "f", "{\"m\":\"f\"}", 9, img, len, NULL), 0);
    snprintf(f, sizeof f, "%s/.pack-3", dir);
    int fd = open(f, O_RDWR);
    T_EQ_INT(pwrite(fd, "X", 1, 32 + 8 + 20), 1); /* (inside its result) */
    close(fd);
    s = reopen(&p);
    T_CHECK(!store_pack_has(p, "f"), "a damaged record is not read");
    T_EQ_INT(s.n, 3);

    /* Two live records of one slug (a crash between writing the newer one and marking the
     * older removed): the later one wins, and the older is marked removed. */
    T_EQ_INT(store_pack_put(p, "g", "{\"m\":\"g1\"}", 10, NULL, 0, NULL), 0);
    snprintf(f, sizeof f, "%s/.pack-4", dir);
    T_EQ_INT(store_pack_put(p, "g", "{\"m\":\"g2\"}", 10, NULL, 0, NULL), 0);
    fd = open(f, O_RDWR);
    T_CHECK(fd >= 0, "%s", f);
    T_EQ_INT(pwrite(fd, "DQP1", 4, 0), 4); /* (the first record's removal undone) */
    close(fd);
    s = reopen(&p);
    T_EQ_INT(s.n, 4);
    T_EQ_STR(s.meta[3], "{\"m\":\"g2\"}");
    s = reopen(&p);
    T_EQ_INT(s.n, 4);

    /* Files whose records are all removed are deleted; the one being written is kept. */
    int before = pack_files();
    T_CHECK(before >= 2, "%d pack files", before);
    const char *all[] = {"a", "c", "d", "g"};
    for(size_t i = 0; i < N(all); i++)
        T_EQ_INT(store_pack_remove(p, all[i], 0), 1);
    T_EQ_INT(pack_files(), 0);
    uint64_t recs, files;
    store_pack_counts(p, &recs, &files);
    T_EQ_INT(recs, 0);
    T_EQ_INT(files, 0);
    T_EQ_INT(store_pack_put(p, "h", "{}", 2, img, len, NULL), 0);
    T_EQ_INT(store_pack_remove(p, "h", 0), 1);
    T_EQ_INT(pack_files(), 1);
    s = reopen(&p);
    T_EQ_INT(s.n, 0);
    T_EQ_INT(pack_files(), 0);

    /* Past 16 MiB a new file is started; the older goes once its records are removed. */
    static char big[40000];
    memset(big, 'x', sizeof big);
    int i = 0;
    char slug[32];
    for(; pack_files() < 2 && i < 1000; i++) {
        snprintf(slug, sizeof slug, "big-%d", i);
        T_EQ_INT(store_pack_put(p, slug, big, sizeof big, NULL, 0, NULL), 0);
    }
    T_EQ_INT(pack_files(), 2);
    T_CHECK(i > 400, "%d records of 40 kB in the first file", i - 1);
    for(int k = 0; k < i - 1; k++) {
        snprintf(slug, sizeof slug, "big-%d", k);
        T_EQ_INT(store_pack_remove(p, slug, 0), 1);
    }
    T_EQ_INT(pack_files(), 1);
    s = reopen(&p);
    T_EQ_INT(s.n, 1);
    store_pack_close(p);
    free(img);
}

/* What compaction moved: slugs and each moved result's rows; remove (if set) is removed
 * from the pack when the first record has moved (a removal racing the compaction). */
struct moved {
    struct store_pack *p;
    int n;
    char slug[8][DAPI_SLUG_MAX];
    uint64_t rows[8];
    const char *remove[2];
};

static void on_moved(void *arg, const char *slug, struct dapi_result *r)
{
    struct moved *m = arg;
    if(m->n < 8) {
        snprintf(m->slug[m->n], sizeof m->slug[0], "%s", slug);
        m->rows[m->n] = r ? dapi_result_rows(r) : UINT64_MAX;
    }
    m->n++;
    dapi_result_close(r);
    for(int i = 0; i < 2; i++)
        if(m->remove[i] && strcmp(m->remove[i], slug) != 0) {
            T_EQ_INT(store_pack_remove(m->p, m->remove[i], 0), 1);
            m->remove[i] = NULL;
            break;
        }
}

/* Eight records of 5 rows each, r0..r7, in .pack-1 (then reopened: .pack-1 is not the file
 * being written any more), and all but those named in keep removed. */
static struct store_pack *sparse_pack(const char *name, const char *const *keep, size_t nkeep)
{
    state_dir(dir, sizeof dir, name);
    struct store_pack *p = NULL;
    T_EQ_INT(store_pack_open(&p, dir), 0);
    size_t len;
    void *img = t_result_small(5, &len);
    char slug[16], meta[48];
    for(int i = 0; i < 8; i++) {
        snprintf(slug, sizeof slug, "r%d", i);
        int ml = snprintf(meta, sizeof meta, "{\"m\":\"%s\"}", slug);
        T_EQ_INT(store_pack_put(p, slug, meta, (size_t)ml, img, len, NULL), 0);
    }
    free(img);
    reopen(&p);
    for(int i = 0; i < 8; i++) {
        snprintf(slug, sizeof slug, "r%d", i);
        int kept = 0;
        for(size_t k = 0; k < nkeep; k++)
            kept |= !strcmp(keep[k], slug);
        if(!kept)
            T_EQ_INT(store_pack_remove(p, slug, 0), 1);
    }
    return p;
}

static int file_exists(int n)
{
    char f[1200];
    snprintf(f, sizeof f, "%s/.pack-%d", dir, n);
    return t_exists(f);
}

/* The bytes of file path (malloc'd; NULL if it cannot be read). */
static char *slurp(const char *path, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    char *b = fd >= 0 && !fstat(fd, &st) ? malloc((size_t)st.st_size + 1) : NULL;
    *len = b && read(fd, b, (size_t)st.st_size) == st.st_size ? (size_t)st.st_size : 0;
    if(fd >= 0)
        close(fd);
    if(b && !*len) {
        free(b);
        b = NULL;
    }
    return b;
}

/* Whether this process maps a deleted pack file (a result read from a file compacted away). */
static int maps_deleted_pack(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4600];
    int found = 0;
    while(f && fgets(line, sizeof line, f))
        found |= strstr(line, "/.pack-") && strstr(line, "(deleted)");
    if(f)
        fclose(f);
    return found;
}

static void test_compact(void)
{
    /* More than a quarter live, or the file being written: not compacted. */
    const char *three[] = {"r1", "r4", "r6"};
    struct store_pack *p = sparse_pack("compact-dense", three, 3);
    T_EQ_INT(store_pack_compact(p, NULL, NULL), 0);
    T_CHECK(file_exists(1) && pack_files() == 1, "3 of 8 live: the file stays as it is");
    store_pack_close(p);
    state_dir(dir, sizeof dir, "compact-newest");
    T_EQ_INT(store_pack_open(&p, dir), 0);
    size_t len;
    void *img = t_result_small(2, &len);
    T_EQ_INT(store_pack_put(p, "a", "{}", 2, img, len, NULL), 0);
    for(int i = 0; i < 7; i++)
        T_EQ_INT(store_pack_put(p, "b", "{}", 2, img, len, NULL), 0);
    T_EQ_INT(store_pack_remove(p, "b", 0), 1);
    T_EQ_INT(store_pack_compact(p, NULL, NULL), 0);
    T_CHECK(file_exists(1), "the newest file is never compacted");
    store_pack_close(p);

    /* A quarter live: the two records move to a new file, durably, and the old file goes;
     * a reader holding a result mapped from it keeps reading it. */
    const char *two[] = {"r3", "r6"};
    p = sparse_pack("compact", two, 2);
    struct dapi_result *held = store_pack_map(p, "r6");
    T_CHECK(held != NULL, "a result mapped from .pack-1");
    char f[1200];
    snprintf(f, sizeof f, "%s/.pack-1", dir);
    struct stat st;
    T_EQ_INT(stat(f, &st), 0);
    struct moved m = {p, 0, {{0}}, {0}, {NULL, NULL}};
    T_EQ_INT(store_pack_compact(p, on_moved, &m), st.st_size);
    T_EQ_INT(m.n, 2);
    T_CHECK((!strcmp(m.slug[0], "r3") && !strcmp(m.slug[1], "r6")) ||
                (!strcmp(m.slug[0], "r6") && !strcmp(m.slug[1], "r3")),
            "moved %s and %s", m.slug[0], m.slug[1]);
    T_EQ_INT(m.rows[0], 5);
    T_EQ_INT(m.rows[1], 5);
    T_CHECK(!file_exists(1) && file_exists(2) && pack_files() == 1, "the old file deleted");
    T_CHECK(maps_deleted_pack(), "the reader's mapping of the deleted file stays");
    T_EQ_INT(dapi_result_rows(held), 5);
    const char *d;
    size_t n;
    t_result_page(held, 1, &d, &n);
    T_CHECK(n > 0 && d[0] == '{', "the held result still reads");
    dapi_result_close(held);
    T_CHECK(!maps_deleted_pack(), "released: nothing maps the deleted file");
    T_EQ_INT(store_pack_compact(p, NULL, NULL), 0);
    struct seen s = reopen(&p);
    T_EQ_INT(s.n, 2);
    T_CHECK((!strcmp(s.meta[0], "{\"m\":\"r3\"}") || !strcmp(s.meta[0], "{\"m\":\"r6\"}")) &&
                s.rows[0] == 5 && s.rows[1] == 5,
            "after a restart: %s, %llu rows", s.meta[0], (unsigned long long)s.rows[0]);
    store_pack_close(p);

    /* A crash after the copies were made durable but before the old file's deletion reached
     * the disk: both files are found, the later record of each slug wins, and the old file,
     * all its records replaced, goes. */
    p = sparse_pack("compact-crash", two, 2);
    snprintf(f, sizeof f, "%s/.pack-1", dir);
    size_t flen;
    char *old = slurp(f, &flen);
    T_CHECK(old != NULL, "%s read", f);
    T_CHECK(store_pack_compact(p, NULL, NULL) > 0, "compacted");
    store_pack_close(p);
    p = NULL;
    t_write_n(f, old, flen);
    s = reopen(&p);
    T_EQ_INT(s.n, 2);
    T_CHECK(!file_exists(1), "the replaced file deleted at the start");
    store_pack_close(p);
    /* A crash while the copies were written (the last one torn, the old file still there):
     * the whole copy wins, the torn one's original is read from the old file. */
    p = sparse_pack("compact-torn", two, 2);
    T_CHECK(store_pack_compact(p, NULL, NULL) > 0, "compacted");
    store_pack_close(p);
    p = NULL;
    snprintf(f, sizeof f, "%s/.pack-1", dir);
    t_write_n(f, old, flen); /* (the same records as this directory's .pack-1 had) */
    char g[1200];
    snprintf(g, sizeof g, "%s/.pack-2", dir);
    tear(g, 5);
    s = reopen(&p);
    T_EQ_INT(s.n, 2);
    T_CHECK(store_pack_has(p, "r3") && store_pack_has(p, "r6"), "both kept");
    T_CHECK(s.rows[0] == 5 && s.rows[1] == 5, "both results whole");
    T_CHECK(file_exists(1) && file_exists(2), "both files hold a live record");
    T_CHECK(store_pack_compact(p, NULL, NULL) > 0, "compacted again");
    s = reopen(&p);
    T_EQ_INT(s.n, 2);
    store_pack_close(p);
    free(old);

    /* A removal while the compaction runs: the removed record is not moved, nor read back. */
    p = sparse_pack("compact-race", two, 2);
    m = (struct moved){p, 0, {{0}}, {0}, {"r3", "r6"}};
    T_CHECK(store_pack_compact(p, on_moved, &m) > 0, "compacted");
    T_EQ_INT(m.n, 1);
    T_CHECK(!file_exists(1), "the old file deleted");
    s = reopen(&p);
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.slug[0], m.slug[0]);
    store_pack_close(p);

    /* The copies cannot be written (every name a new file could take is taken): the old
     * file and its records stay; the next compaction, once it can write, deletes it. */
    p = sparse_pack("compact-full", two, 2);
    block_pack_names(dir, 2, 1);
    T_CHECK(store_pack_compact(p, NULL, NULL) < 0, "the compaction fails");
    T_CHECK(file_exists(1) && store_pack_has(p, "r3") && store_pack_has(p, "r6"), "kept");
    block_pack_names(dir, 2, 0);
    T_CHECK(store_pack_compact(p, NULL, NULL) > 0, "the next one compacts");
    T_CHECK(!file_exists(1), "the old file deleted");
    s = reopen(&p);
    T_EQ_INT(s.n, 2);
    store_pack_close(p);
    free(img);
}

/* Runs slug with a small result of rows rows (kept in memory, as a local run's). */
static void run_small(struct dapi_queries *qs, const char *slug, uint64_t rows)
{
    char why[256];
    T_EQ_INT(dapi_queries_start_run(qs, slug, why, sizeof why), DAPI_OK);
    size_t len;
    void *img = t_result_small(rows, &len);
    dapi_queries_finish_small(qs, slug, img, len);
    free(img);
}

/* The rows of page 1 of slug as owner sees it at now_s ("" if none). */
static const char *page1(struct dapi_queries *qs, const char *slug, int64_t now_s)
{
    static char out[4096];
    struct dapi_qview v;
    out[0] = '\0';
    if(dapi_queries_get(qs, slug, owner, now_s, &v))
        return out;
    if(v.result) {
        const char *d;
        size_t n;
        t_result_page(v.result, 1, &d, &n);
        snprintf(out, sizeof out, "%.*s", (int)n, d);
    }
    dapi_queries_release(qs, &v);
    return out;
}

static void test_registry(void)
{
    char state[256], qd[4096], slug[DAPI_SLUG_MAX], gone[DAPI_SLUG_MAX];
    state_dir(state, sizeof state, "registry");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 1", NULL, 1000, slug, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 2", NULL, 1000, gone, NULL, 0), DAPI_OK);
    run_small(qs, slug, 3);
    run_small(qs, gone, 2);
    T_EQ_INT(state_of(qs, slug, 1000, NULL), DAPI_Q_DONE);
    T_EQ_STR(page1(qs, slug, 1000), "{\"v\":0},{\"v\":3},{\"v\":6}");
    query_dir(qd, sizeof qd, state, slug);
    T_CHECK(!t_exists(qd), "a small result: no directory");
    dapi_queries_remove(qs, gone);
    T_EQ_INT((int)state_of(qs, gone, 1000, NULL), -1);
    dapi_queries_close(qs);

    /* clean restart */
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u);
    T_EQ_INT(state_of(qs, slug, 1001, NULL), DAPI_Q_DONE);
    T_EQ_STR(page1(qs, slug, 1001), "{\"v\":0},{\"v\":3},{\"v\":6}");
    T_EQ_INT((int)state_of(qs, gone, 1001, NULL), -1);
    T_EQ_INT(u.calls, 0);
    dapi_queries_close(qs);
    /* unclean restart (no mark of a clean stop): the record's checksum vouches for it */
    char mark[4200];
    snprintf(mark, sizeof mark, "%s/queries/.clean-stop", state);
    T_CHECK(unlink(mark) == 0, "the clean stop was marked");
    qs = open_reg(state, 3600, UINT64_MAX, 1002, &u);
    T_EQ_STR(page1(qs, slug, 1002), "{\"v\":0},{\"v\":3},{\"v\":6}");

    /* A reuse hit copies a packed result into its own record: deleting the source leaves it
     * whole, across a restart. */
    char first[DAPI_SLUG_MAX], hit[DAPI_SLUG_MAX];
    struct dapi_reuse ru = {"abc", "fp", 300};
    enum dapi_reused how;
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 42", NULL, &ru, 1002, first,
                                         &how, NULL, 0),
             DAPI_OK);
    run_small(qs, first, 4);
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 42", NULL, &ru, 1003, hit, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_RESULT);
    query_dir(qd, sizeof qd, state, hit);
    T_CHECK(!t_exists(qd), "the reuse hit: no directory either");
    dapi_queries_remove(qs, first);
    T_EQ_STR(page1(qs, hit, 1003), "{\"v\":0},{\"v\":3},{\"v\":6},{\"v\":9}");

    /* Single-flight: the queries that shared a run get copies of its small result. */
    char lead[DAPI_SLUG_MAX], follow[DAPI_SLUG_MAX];
    struct dapi_reuse ru2 = {"def", "fp", 300};
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 7", NULL, &ru2, 1003, lead, &how,
                                         NULL, 0),
             DAPI_OK);
    T_EQ_INT(dapi_queries_create_reusing(qs, owner, NULL, "SELECT 7", NULL, &ru2, 1003, follow,
                                         &how, NULL, 0),
             DAPI_OK);
    T_EQ_INT(how, DAPI_REUSED_RUN);
    run_small(qs, lead, 1);
    T_EQ_INT(state_of(qs, follow, 1003, NULL), DAPI_Q_DONE);
    T_EQ_STR(page1(qs, follow, 1003), "{\"v\":0}");
    dapi_queries_remove(qs, lead);
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1004, &u);
    T_EQ_STR(page1(qs, hit, 1004), "{\"v\":0},{\"v\":3},{\"v\":6},{\"v\":9}");
    T_EQ_STR(page1(qs, follow, 1004), "{\"v\":0}");
    T_EQ_INT((int)state_of(qs, first, 1004, NULL), -1);
    T_EQ_INT((int)state_of(qs, lead, 1004, NULL), -1);

    /* Files a checkpoint wrote for a query whose run's end packed it meanwhile: the record
     * wins at the next start, and the files go. */
    query_dir(qd, sizeof qd, state, slug);
    T_EQ_INT(mkdir(qd, 0700), 0);
    t_write_in(qd, "created.json", "{\"version\":1}");
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1005, &u);
    T_EQ_STR(page1(qs, slug, 1005), "{\"v\":0},{\"v\":3},{\"v\":6}");
    T_CHECK(!t_exists(qd), "the checkpoint's files removed");

    /* Expired at open: the record goes; a file of records all gone is deleted. */
    dapi_queries_close(qs);
    qs = open_reg(state, 10, UINT64_MAX, 5000, &u);
    T_EQ_INT((int)state_of(qs, slug, 5000, NULL), -1);
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 5001, &u);
    T_EQ_INT((int)state_of(qs, hit, 5001, NULL), -1);
    dapi_queries_close(qs);
    snprintf(dir, sizeof dir, "%s/queries", state);
    T_EQ_INT(pack_files(), 0);
    T_EQ_INT(u.calls, 0);
}

/* The registry's tick has a sparse pack file compacted (by the compactor thread): the query
 * left in it is served from its new place (nothing maps the deleted file any more), then
 * across a restart. */
static void test_registry_compact(void)
{
    char state[256], slugs[8][DAPI_SLUG_MAX], sql[32];
    state_dir(state, sizeof state, "registry-compact");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    for(int i = 0; i < 8; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        T_EQ_INT(dapi_queries_create(qs, owner, sql, NULL, 1000, slugs[i], NULL, 0), DAPI_OK);
        run_small(qs, slugs[i], 3);
    }
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u); /* (.pack-1 is no longer written to) */
    for(int i = 0; i < 7; i++)
        dapi_queries_remove(qs, slugs[i]);
    snprintf(dir, sizeof dir, "%s/queries", state);
    T_CHECK(file_exists(1), "the sparse file is there");
    T_EQ_STR(page1(qs, slugs[7], 1001), "{\"v\":0},{\"v\":3},{\"v\":6}");
    dapi_queries_tick(qs, 1002, 0); /* (wakes the compactor thread) */
    for(int i = 0; i < 500 && file_exists(1); i++)
        usleep(10000);
    T_CHECK(!file_exists(1) && pack_files() == 1, "compacted once the tick found it sparse");
    T_CHECK(!maps_deleted_pack(), "the query reads its result from the new file");
    T_EQ_STR(page1(qs, slugs[7], 1002), "{\"v\":0},{\"v\":3},{\"v\":6}");
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1003, &u);
    T_EQ_STR(page1(qs, slugs[7], 1003), "{\"v\":0},{\"v\":3},{\"v\":6}");
    T_EQ_INT((int)state_of(qs, slugs[0], 1003, NULL), -1);
    T_EQ_INT(u.calls, 0);
    dapi_queries_close(qs);
}

/* A power loss: the pack's last record is torn, the creation log (made durable before the
 * creation was answered) still holds the query: it runs again. */
static void test_power_loss(void)
{
    char state[256], slug[DAPI_SLUG_MAX], kept[DAPI_SLUG_MAX];
    state_dir(state, sizeof state, "power");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'kept'", NULL, 1000, kept, NULL, 0), DAPI_OK);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'torn'", NULL, 1000, slug, NULL, 0), DAPI_OK);
    run_small(qs, kept, 2);
    run_small(qs, slug, 2);
    /* (no close: the process is gone; what it wrote is what the disk kept, less the tail) */
    char f[4200];
    snprintf(f, sizeof f, "%s/queries/.pack-1", state);
    tear(f, 1);
    struct unfinished u1 = {0};
    struct dapi_queries *qs1 = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    if(qs1) {
        T_EQ_INT(t_registry_state(qs1, kept, owner, 1001, NULL), DAPI_Q_DONE);
        T_EQ_STR(page1(qs1, kept, 1001), "{\"v\":0},{\"v\":3}");
        T_EQ_INT(t_registry_state(qs1, slug, owner, 1001, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u1, slug, "SELECT 'torn'"), "restored from the log: runs");
        /* and its run again packs it */
        run_small(qs1, slug, 1);
        T_EQ_STR(page1(qs1, slug, 1001), "{\"v\":0}");
        dapi_queries_close(qs1);
    }
    dapi_queries_close(qs);
}

static void keep_meta(void *arg, const char *slug, const char *meta, size_t mlen,
                      const void *result, size_t rlen)
{
    char **out = arg;
    free(*out);
    *out = strndup(meta, mlen);
}

/* A record whose meta says done but whose result cannot be read: the query runs again, and
 * its record is removed (durably) when that run starts, before its new outcome. */
static void test_rerun(void)
{
    char state[256], slug[DAPI_SLUG_MAX], why[256];
    state_dir(state, sizeof state, "rerun");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'r'", NULL, 1000, slug, NULL, 0), DAPI_OK);
    run_small(qs, slug, 2);
    dapi_queries_close(qs);
    snprintf(dir, sizeof dir, "%s/queries", state);
    struct store_pack *p = NULL;
    T_EQ_INT(store_pack_open(&p, dir), 0);
    char *meta = NULL;
    store_pack_each(p, keep_meta, &meta);
    T_CHECK(meta && strstr(meta, "\"done\""), "its record: %s", meta ? meta : "none");
    static char junk[100];
    memset(junk, 'j', sizeof junk);
    if(meta)
        T_EQ_INT(store_pack_put(p, slug, meta, strlen(meta), junk, sizeof junk, NULL), 0);
    free(meta);
    store_pack_close(p);
    struct unfinished u1 = {0};
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u1);
    T_EQ_INT(t_registry_state(qs, slug, owner, 1001, NULL), DAPI_Q_QUEUED);
    T_CHECK(unfinished_has(&u1, slug, "SELECT 'r'"), "run again");
    T_EQ_INT(dapi_queries_start_run(qs, slug, why, sizeof why), DAPI_OK);
    /* a crash now: the record is gone, the log says it runs */
    struct unfinished u2 = {0};
    struct dapi_queries *qs2 = open_reg(state, 3600, UINT64_MAX, 1002, &u2);
    if(qs2) {
        T_EQ_INT(t_registry_state(qs2, slug, owner, 1002, NULL), DAPI_Q_QUEUED);
        T_CHECK(unfinished_has(&u2, slug, "SELECT 'r'"), "still to run after a crash");
        dapi_queries_close(qs2);
    }
    size_t len;
    void *img = t_result_small(1, &len);
    dapi_queries_finish_small(qs, slug, img, len);
    free(img);
    T_EQ_STR(page1(qs, slug, 1002), "{\"v\":0}");
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1003, &u);
    T_EQ_STR(page1(qs, slug, 1003), "{\"v\":0}");
    dapi_queries_close(qs);
}

/* The record cannot be written (here: every name a new pack file could take is taken): the
 * query fails with the state dir's storage error, keeps no result, and nothing else breaks. */
static void test_unwritable(void)
{
    char state[256], slug[DAPI_SLUG_MAX], d[1200];
    state_dir(state, sizeof state, "unwritable");
    struct unfinished u = {0};
    struct dapi_queries *qs = open_reg(state, 3600, UINT64_MAX, 1000, &u);
    if(!qs)
        return;
    snprintf(d, sizeof d, "%s/queries", state);
    block_pack_names(d, 1, 1);
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'u'", NULL, 1000, slug, NULL, 0), DAPI_OK);
    run_small(qs, slug, 2);
    enum dapi_err err = DAPI_OK;
    T_EQ_INT(t_registry_state(qs, slug, owner, 1000, &err), DAPI_Q_FAILED);
    struct dapi_qview v;
    T_EQ_INT(dapi_queries_get(qs, slug, owner, 1000, &v), DAPI_OK);
    T_EQ_INT(v.error, DAPI_ERR_IO);
    T_CHECK(strstr(v.message, "--state-dir") && strstr(v.message, "to store the result") &&
                !strstr(v.message, state),
            "why, without the path: %s", v.message);
    T_CHECK(v.result == NULL, "no result");
    dapi_queries_release(qs, &v);
    block_pack_names(d, 1, 0);
    char next[DAPI_SLUG_MAX];
    T_EQ_INT(dapi_queries_create(qs, owner, "SELECT 'v'", NULL, 1000, next, NULL, 0), DAPI_OK);
    run_small(qs, next, 1);
    T_EQ_STR(page1(qs, next, 1000), "{\"v\":0}");
    dapi_queries_close(qs);
    qs = open_reg(state, 3600, UINT64_MAX, 1001, &u);
    T_EQ_INT(t_registry_state(qs, slug, owner, 1001, NULL), DAPI_Q_FAILED);
    T_EQ_STR(page1(qs, next, 1001), "{\"v\":0}");
    dapi_queries_close(qs);
}

/* The index grows past its first 4,096 chains (twice over here): every record is still
 * found, removed ones are not, and a start reads them all back. */
static void test_many(void)
{
    enum { MANY = 20000 };
    state_dir(dir, sizeof dir, "many");
    struct store_pack *p = NULL;
    T_EQ_INT(store_pack_open(&p, dir), 0);
    char slug[32];
    int put = 0, found = 0, gone = 0;
    for(int i = 0; i < MANY; i++) {
        snprintf(slug, sizeof slug, "q%d", i);
        put += store_pack_put(p, slug, "{}", 2, NULL, 0, NULL) == 0;
    }
    T_EQ_INT(put, MANY);
    for(int i = 0; i < MANY; i += 2) {
        snprintf(slug, sizeof slug, "q%d", i);
        store_pack_remove(p, slug, 0);
    }
    for(int pass = 0; pass < 2; pass++) {
        found = gone = 0;
        for(int i = 0; i < MANY; i++) {
            snprintf(slug, sizeof slug, "q%d", i);
            int has = store_pack_has(p, slug);
            found += has && i % 2;
            gone += !has && !(i % 2);
        }
        T_EQ_INT(found, MANY / 2);
        T_EQ_INT(gone, MANY / 2);
        if(!pass) {
            struct seen s = reopen(&p);
            T_EQ_INT(s.n, MANY / 2);
        }
    }
    uint64_t records, files;
    store_pack_counts(p, &records, &files);
    T_EQ_INT(records, MANY / 2);
    store_pack_close(p);
}

/* A compaction reads the live records of the file it compacts, not the whole index (which
 * it walked under the pack's lock: 98 ms of every small query's creation stalled at 2.6
 * million records). One file of 40 kB records, 20,000 small ones after it; read back from
 * disk first, so the files' lists are the start's. */
static void test_compact_reads_its_file(void)
{
    enum { SMALL = 20000 };
    state_dir(dir, sizeof dir, "compact-many");
    struct store_pack *p = NULL;
    T_EQ_INT(store_pack_open(&p, dir), 0);
    static char big[40000];
    memset(big, 'x', sizeof big);
    char slug[32];
    int nbig = 0;
    for(; pack_files() < 2 && nbig < 1000; nbig++) {
        snprintf(slug, sizeof slug, "big-%d", nbig);
        T_EQ_INT(store_pack_put(p, slug, big, sizeof big, NULL, 0, NULL), 0);
    }
    for(int i = 0; i < SMALL; i++) {
        snprintf(slug, sizeof slug, "small-%d", i);
        T_EQ_INT(store_pack_put(p, slug, "{}", 2, NULL, 0, NULL), 0);
    }
    int kept = 0; /* every tenth of the first file's (big-<nbig - 1> opened the second file) */
    for(int i = 0; i < nbig - 1; i++) {
        snprintf(slug, sizeof slug, "big-%d", i);
        if(i % 10)
            T_EQ_INT(store_pack_remove(p, slug, 0), 1);
        else
            kept++;
    }
    struct seen s = reopen(&p);
    T_EQ_INT(s.n, kept + 1 + SMALL);
    uint64_t before = store_pack_visits(p);
    T_CHECK(store_pack_compact(p, NULL, NULL) > 0, "compacted");
    uint64_t visits = store_pack_visits(p) - before;
    T_CHECK(visits == (uint64_t)kept, "the compaction looked at %llu records for %d live ones",
            (unsigned long long)visits, kept);
    T_CHECK(!file_exists(1), "the sparse file is gone");
    int found = 0;
    for(int i = 0; i < nbig; i++) {
        snprintf(slug, sizeof slug, "big-%d", i);
        found += store_pack_has(p, slug) == (i % 10 == 0 || i == nbig - 1);
    }
    T_EQ_INT(found, nbig);
    /* The moved records left their file's list for the newest file's: removing them all
     * (and the rest) leaves no file but the newest. */
    for(int i = 0; i < nbig; i++) {
        snprintf(slug, sizeof slug, "big-%d", i);
        store_pack_remove(p, slug, 0);
    }
    for(int i = 0; i < SMALL; i++) {
        snprintf(slug, sizeof slug, "small-%d", i);
        T_EQ_INT(store_pack_remove(p, slug, 0), 1);
    }
    uint64_t records, files;
    store_pack_counts(p, &records, &files);
    T_EQ_INT(records, 0);
    T_EQ_INT(files, 1);
    s = reopen(&p);
    T_EQ_INT(s.n, 0);
    store_pack_close(p);
}

int main(void)
{
    if(fixture_setup("pack"))
        T_DONE();
    test_files();
    test_compact();
    test_registry();
    test_registry_compact();
    test_power_loss();
    test_rerun();
    test_unwritable();
    test_many();
    test_compact_reads_its_file();
    t_rm_rf(root);
    T_DONE();
}
