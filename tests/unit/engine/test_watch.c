/* Lake change detection (src/engine/watch.c): the generation stays the same while nothing
 * under the lake changes — reads included — and moves after every kind of change a scan
 * could see; the engine's views and the reuse fingerprint follow it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "engine/engine.h"
#include "engine/engine_int.h"
#include "store/queries.h"
#include "t.h"

static uint64_t gen_of(struct lakewatch *w)
{
    return lakewatch_gen(w);
}

/* Each change made by fn moves the generation; the next read without a change does not. */
#define CHANGED(w, g, what)                                                              \
    do {                                                                                 \
        uint64_t g2_ = gen_of(w);                                                        \
        T_CHECK(g2_ != 0 && g2_ != (g), "%s: the generation moves (%llu -> %llu)", what, \
                (unsigned long long)(g), (unsigned long long)g2_);                       \
        (g) = g2_;                                                                       \
        T_CHECK(gen_of(w) == (g), "%s: then stays", what);                               \
    } while(0)

/* Makes dir/rel a symbolic link to tdir/trel (to tdir when trel is NULL). */
static void link_in(const char *tdir, const char *trel, const char *dir, const char *rel,
                    const char *what)
{
    char t[512], l[512];
    snprintf(t, sizeof t, trel ? "%s/%s" : "%s", tdir, trel);
    snprintf(l, sizeof l, "%s/%s", dir, rel);
    T_CHECK(symlink(t, l) == 0, "%s", what);
}

static void test_generation(void)
{
    struct t_lake l;
    char p[512], q[512];
    if(t_lake_make(&l, "watch"))
        return;
    t_mkdir_in(l.data, "raw");
    t_write_in(l.data, "raw/a.csv", "x\n1\n");
    t_mkdir_in(l.data, "raw/parts");
    t_mkdir_in(l.data, "raw/parts/d=1");
    t_write_in(l.data, "raw/parts/d=1/p.parquet", "not really");
    t_mkdir_in(l.root, "elsewhere");
    t_write_in(l.root, "elsewhere/linked.csv", "x\n2\n");
    t_mkdir_in(l.root, "layer2");
    t_write_in(l.root, "layer2/t.csv", "x\n3\n");
    t_mkdir_in(l.data, ".hidden");
    t_write_in(l.data, ".hidden/target.csv", "x\n4\n");
    t_mkdir_in(l.data, ".layer3");
    t_write_in(l.data, ".layer3/t.csv", "x\n5\n");
    link_in(l.root, "elsewhere/linked.csv", l.data, "raw/linked.csv", "linked file");
    link_in(l.root, "layer2", l.data, "outside", "a layer linked out of the lake");
    link_in(l.data, ".layer3", l.data, "other", "linked layer");
    link_in("/", NULL, l.data, "raw/root", "a link to /");
    link_in(l.data, ".hidden/target.csv", l.data, "raw/h.csv", "link into a hidden folder");

    struct lakewatch *w = NULL;
    T_EQ_INT(lakewatch_open(&w, l.data, 1), DAPI_OK);
    if(!w)
        goto out;
    uint64_t g = gen_of(w);
    T_CHECK(g != 0, "watched");
    T_CHECK(gen_of(w) == g, "no change: same generation");

    /* reading is no change */
    char buf[64];
    snprintf(p, sizeof p, "%s/raw/a.csv", l.data);
    int fd = open(p, O_RDONLY);
    T_CHECK(fd >= 0 && read(fd, buf, sizeof buf) > 0, "read");
    if(fd >= 0)
        close(fd);
    snprintf(p, sizeof p, "%s/raw/linked.csv", l.data);
    fd = open(p, O_RDONLY);
    T_CHECK(fd >= 0 && read(fd, buf, sizeof buf) > 0, "read through a link");
    if(fd >= 0)
        close(fd);
    struct stat st;
    T_CHECK(stat(p, &st) == 0, "stat");
    T_CHECK(gen_of(w) == g, "reads and stats change nothing");

    t_write_in(l.data, "raw/a.csv", "x\n1\n5\n");
    CHANGED(w, g, "a file rewritten");
    snprintf(p, sizeof p, "%s/raw/a.csv", l.data);
    T_CHECK(utimensat(AT_FDCWD, p, NULL, 0) == 0, "touch");
    CHANGED(w, g, "a file touched");
    t_write_in(l.data, "raw/b.csv", "x\n1\n");
    CHANGED(w, g, "a table added");
    snprintf(q, sizeof q, "%s/raw/c.csv", l.data);
    T_CHECK(rename(p, q) == 0, "rename");
    CHANGED(w, g, "a file renamed");
    T_CHECK(unlink(q) == 0, "unlink");
    CHANGED(w, g, "a file deleted");
    t_mkdir_in(l.data, "raw/parts/d=2");
    CHANGED(w, g, "a partition folder made");
    /* the new folder was watched before anyone read it */
    t_write_in(l.data, "raw/parts/d=2/p.parquet", "not really");
    CHANGED(w, g, "a file in the new folder");
    t_write_in(l.data, "raw/parts/d=1/p.parquet", "changed");
    CHANGED(w, g, "a file two folders down");
    t_write_in(l.root, "elsewhere/linked.csv", "x\n9\n");
    CHANGED(w, g, "the target of a linked file, outside the lake");
    t_write_in(l.data, ".layer3/t.csv", "x\n8\n");
    CHANGED(w, g, "a file of a linked layer");
    /* a folder linked out of the lake is never read (the scan does not follow the link), so
     * it is not walked: a link to / used to take the walk through /proc for minutes */
    t_write_in(l.root, "layer2/t.csv", "x\n6\n");
    T_CHECK(gen_of(w) == g, "a file of a layer linked out of the lake: not watched");
    t_write_in(l.data, ".hidden/target.csv", "x\n7\n");
    CHANGED(w, g, "a hidden file a link leads to");
    t_mkdir_in(l.data, "newlayer");
    CHANGED(w, g, "a layer made");
    t_write_in(l.data, "newlayer/t.ndjson", "{\"x\":1}\n");
    CHANGED(w, g, "a table in the new layer");
    lakewatch_close(w);

    /* off: always 0 (scan) */
    T_EQ_INT(lakewatch_open(&w, l.data, 0), DAPI_OK);
    T_CHECK(w && gen_of(w) == 0 && gen_of(w) == 0, "off: 0 every time");
    lakewatch_close(w);
    /* a lake that does not exist yet: 0 until it does, then watched */
    snprintf(p, sizeof p, "%s/later", l.root);
    T_EQ_INT(lakewatch_open(&w, p, 1), DAPI_OK);
    T_CHECK(w && gen_of(w) == 0, "no lake yet: 0");
    t_mkdir_in(l.root, "later");
    g = gen_of(w);
    T_CHECK(g != 0 && gen_of(w) == g, "the lake made: watched");
    t_write_in(l.root, "later/x.csv", "x\n1\n");
    CHANGED(w, g, "a file in the lake made late");
    lakewatch_close(w);
out:
    t_rm_rf(l.root);
}

/* The engine's views and the reuse fingerprint see a change made right before they are
 * asked, and answer from what they kept when nothing changed. */
static void test_engine_follows(void)
{
    struct t_lake l;
    if(t_lake_make(&l, "watch-engine"))
        return;
    t_mkdir_in(l.data, "raw");
    t_write_in(l.data, "raw/a.csv", "x\n1\n");
    struct dapi_engine *e = t_engine_open(&l, (struct dapi_engine_opts){0});
    struct dapi_econn *c = NULL;
    char *msg = NULL;
    if(!e || dapi_engine_connect(e, &c))
        goto out;
    T_EQ_INT(dapi_engine_check(c, "SELECT * FROM raw.a", NULL, &msg), DAPI_OK);
    T_EQ_INT(dapi_engine_check(c, "SELECT * FROM raw.b", NULL, &msg), DAPI_ERR_SQL);
    free(msg);
    msg = NULL;
    uint64_t g = dapi_engine_lake_generation(e);
    T_CHECK(g != 0 && dapi_engine_lake_generation(e) == g, "a stable generation");
    char fp1[DAPI_REUSE_HEX], fp2[DAPI_REUSE_HEX], fp3[DAPI_REUSE_HEX];
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, g, fp1), 0);
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, g, fp2), 0);
    T_EQ_STR(fp1, fp2);

    t_write_in(l.data, "raw/b.csv", "x\n2\n");
    T_EQ_INT(dapi_engine_check(c, "SELECT * FROM raw.b", NULL, &msg), DAPI_OK);
    uint64_t g2 = dapi_engine_lake_generation(e);
    T_CHECK(g2 != g, "the generation moved");
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, g2, fp3), 0);
    T_CHECK(strcmp(fp1, fp3) != 0, "a new fingerprint after a table was added");
    /* the same size and a new mtime: a new fingerprint under the new generation */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    char p[512];
    snprintf(p, sizeof p, "%s/raw/b.csv", l.data);
    T_CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0, "mtime set");
    uint64_t g3 = dapi_engine_lake_generation(e);
    T_CHECK(g3 != g2, "a touch moves it");
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, g3, fp2), 0);
    T_CHECK(strcmp(fp2, fp3) != 0, "and the fingerprint");
    /* Layers linked out of the lake are never read, so the fingerprint does not walk them
     * (a link to / made it walk the machine: up to 100,000 files per creation); a layer
     * linked to a folder inside the lake is walked. gen 0: computed, not kept. */
    t_mkdir_in(l.root, "outside");
    t_write_in(l.root, "outside/t.csv", "x\n1\n");
    t_mkdir_in(l.data, ".real2");
    t_write_in(l.data, ".real2/t.csv", "x\n1\n");
    link_in(l.root, "outside", l.data, "out", "a layer linked out of the lake");
    link_in("/", NULL, l.data, "root", "a layer linked to /");
    link_in(l.data, ".real2", l.data, "in2", "a layer linked inside the lake");
    struct dapi_scope out = {.n = 2}, in2 = {.n = 1};
    snprintf(out.layers[0], sizeof out.layers[0], "out");
    snprintf(out.layers[1], sizeof out.layers[1], "root");
    snprintf(in2.layers[0], sizeof in2.layers[0], "in2");
    char all1[DAPI_REUSE_HEX], out1[DAPI_REUSE_HEX], in1[DAPI_REUSE_HEX];
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, 0, all1), 0);
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, &out, 0, out1), 0);
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, &in2, 0, in1), 0);
    t_write_in(l.root, "outside/t.csv", "x\n1\n2\n");
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, 0, fp2), 0);
    T_EQ_STR(fp2, all1);
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, &out, 0, fp2), 0);
    T_EQ_STR(fp2, out1);
    t_write_in(l.data, ".real2/t.csv", "x\n1\n2\n");
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, NULL, 0, fp2), 0);
    T_CHECK(strcmp(fp2, all1) != 0, "a file of a layer linked inside the lake counts");
    T_EQ_INT(dapi_backend_lake_fingerprint(l.data, &in2, 0, fp2), 0);
    T_CHECK(strcmp(fp2, in1) != 0, "and for a key scoped to that layer");
    /* removal: the view goes */
    T_CHECK(unlink(p) == 0, "removed");
    T_EQ_INT(dapi_engine_check(c, "SELECT * FROM raw.b", NULL, &msg), DAPI_ERR_SQL);
    free(msg);
    msg = NULL;
out:
    if(c)
        dapi_econn_close(c);
    if(e)
        dapi_engine_close(e);
    t_rm_rf(l.root);
}

int main(void)
{
    test_generation();
    test_engine_follows();
    T_DONE();
}
