/* The helpers every unit test may use (declared in t.h): temporary directories, files, and a
 * scratch lake with an engine on it. Linked into each unit binary; the counters live here so
 * that a check made by a helper counts in the test that called it. */
#include "t.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int t_passed, t_failed;

int t_tmpdir(char *out, size_t n, const char *name)
{
    int len = snprintf(out, n, "/tmp/dapi-%s-XXXXXX", name);
    if(len < 0 || (size_t)len >= n || !mkdtemp(out)) {
        T_CHECK(0, "temporary directory for %s: %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

void t_rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int t_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

void t_write_n(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    T_CHECK(f != NULL, "create %s: %s", path, strerror(errno));
    if(!f)
        return;
    size_t wrote = fwrite(data, 1, len, f);
    int closed = fclose(f);
    T_CHECK(wrote == len && closed == 0, "write %s", path);
}

void t_write(const char *path, const char *text)
{
    t_write_n(path, text, strlen(text));
}

void t_write_in(const char *dir, const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    t_write(p, text);
}

void t_mkdir_in(const char *dir, const char *rel)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    T_CHECK(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
}

int t_lake_make(struct t_lake *l, const char *name)
{
    if(t_tmpdir(l->root, sizeof l->root, name))
        return -1;
    snprintf(l->data, sizeof l->data, "%s/data", l->root);
    snprintf(l->state, sizeof l->state, "%s/state", l->root);
    t_mkdir_in(l->root, "data");
    t_mkdir_in(l->root, "state");
    return 0;
}

struct dapi_engine *t_engine_open(const struct t_lake *l, struct dapi_engine_opts o)
{
    char err[1024] = "";
    struct dapi_engine *e = NULL;
    o.data_dir = l->data;
    o.state_dir = l->state;
    if(!o.memory_limit)
        o.memory_limit = "1GB";
    T_CHECK(dapi_engine_open(&e, &o, err, sizeof err) == DAPI_OK, "engine opens: %s", err);
    return e;
}
