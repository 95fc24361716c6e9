/* What a file pattern could reach (src/engine/reach.c): a link the pattern could enter or match
 * that leaves the lake, or lies in a layer outside the scope, refuses it whatever lies beyond
 * the link — the same answer whether a file out there exists or not — and nothing beyond such
 * a link is looked at; links inside the lake are followed, cycles once; the walk is bounded. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/engine_int.h"
#include "t.h"

static struct t_lake L;
static char real_lake[PATH_MAX];
static struct dapi_scope ALL = {.all = 1};

/* engine_reach of DATA-expanded pattern: its result; *msg (owned) its message, or NULL. */
static enum dapi_err reach(const char *pattern, const struct dapi_scope *scope, size_t budget,
                           size_t *visited, char **msg)
{
    char p[1024];
    snprintf(p, sizeof p, "%s", t_lake_expand(&L, pattern));
    *msg = NULL;
    return engine_reach(L.data, real_lake, p, scope ? scope : &ALL, budget, NULL, NULL, visited,
                        msg);
}

static void expect(const char *pattern, const struct dapi_scope *scope, enum dapi_err want,
                   const char *has)
{
    char *msg;
    enum dapi_err got = reach(pattern, scope, REACH_MAX_ENTRIES, NULL, &msg);
    T_CHECK(got == want, "%s: result %d, want %d (%s)", pattern, (int)got, (int)want,
            msg ? msg : "no message");
    if(has)
        T_CHECK(msg && strstr(msg, has), "%s: message %s has %s", pattern, msg ? msg : "NULL",
                has);
    else
        T_CHECK(!msg, "%s: no message (%s)", pattern, msg ? msg : "");
    free(msg);
}

static void build(void)
{
    char t[512], l[512];
    t_mkdir_in(L.root, "outside");
    t_write_in(L.root, "outside/secret.csv", "x\nsecret\n");
    t_mkdir_in(L.data, "raw");
    t_write_in(L.data, "raw/a.csv", "x\n1\n");
    t_write_in(L.data, "raw/b.csv", "x\n2\n");
    t_lake_link(&L, "/", "data/raw/notes.txt"); /* leaves, matches no *.csv */
    snprintf(t, sizeof t, "%s/outside", L.root);
    t_lake_link(&L, t, "data/raw/out");                       /* a folder outside */
    t_lake_link(&L, "/nonexistent/x", "data/raw/dangle.csv"); /* resolves nowhere */
    snprintf(t, sizeof t, "%s/raw/a.csv", L.data);
    t_lake_link(&L, t, "data/raw/in.csv"); /* stays inside */
    t_mkdir_in(L.data, "clean");
    t_write_in(L.data, "clean/x.csv", "x\n1\n");
    t_mkdir_in(L.data, "clean/sub");
    t_write_in(L.data, "clean/sub/y.csv", "x\n1\n");
    snprintf(t, sizeof t, "%s/clean", L.data);
    t_lake_link(&L, t, "data/clean/sub/up"); /* a cycle inside the lake */
    t_mkdir_in(L.data, "secret");
    t_write_in(L.data, "secret/t.csv", "x\nsecret\n");
    t_mkdir_in(L.data, "pub");
    t_write_in(L.data, "pub/t.csv", "x\n1\n");
    snprintf(t, sizeof t, "%s/secret", L.data);
    t_lake_link(&L, t, "data/pub/linkdir"); /* into another layer */
    t_mkdir_in(L.data, "many");
    for(int i = 0; i < 600; i++) {
        snprintf(l, sizeof l, "many/f%03d.csv", i);
        t_write_in(L.data, l, "x\n1\n");
    }
    t_mkdir_in(L.data, "fan");
    t_write_in(L.data, "fan/t.csv", "x\n1\n");
    snprintf(t, sizeof t, "%s/fan", L.data);
    t_lake_link(&L, t, "data/fan/l1"); /* two links back up: every '*' doubles the matches */
    t_lake_link(&L, t, "data/fan/l2");
    snprintf(l, sizeof l, "%s/deep", L.data);
    mkdir(l, 0755);
    for(int i = 0; i < REACH_MAX_DEPTH + 2; i++) {
        strcat(l, "/d");
        mkdir(l, 0755);
    }
}

/* The oracle: through a link out of the lake, a file that exists and one that does not get the
 * same refusal, and the walk never looks past the link. */
static void test_links_out(void)
{
    const char *leaves = "is not allowed: it matches a hidden file or a link that leaves the lake";
    expect("DATA/raw/out/secret.csv", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/out/missing.csv", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/out/*/x.csv", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/notes.txt/etc/hostname", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/notes.txt/etc/no-such-file", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/dangle.csv", NULL, DAPI_ERR_SQL, leaves);
    /* wildcards: a matching link out refuses, a link the component cannot match does not */
    expect("DATA/raw/*.csv", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/*.txt", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/?otes.txt", NULL, DAPI_ERR_SQL, leaves);
    expect("DATA/raw/?.csv", NULL, DAPI_ERR_SQL, leaves); /* '?' counts every entry */
    expect("DATA/raw/a*.csv", NULL, DAPI_OK, NULL);
    expect("DATA/raw/*.parquet", NULL, DAPI_OK, NULL);
    expect("DATA/raw/*/secret.csv", NULL, DAPI_ERR_SQL, leaves); /* raw/out is a folder of * */
    expect("DATA/*/secret.csv", NULL, DAPI_OK, NULL);            /* the layers hold no link */
    /* a character class matches every entry: DuckDB's dialect is not fnmatch's */
    expect("DATA/raw/[a]*.csv", NULL, DAPI_ERR_SQL, leaves);
    /* links that stay inside are fine, by name or by wildcard */
    expect("DATA/raw/in.csv", NULL, DAPI_OK, NULL);
    expect("DATA/raw/i*.csv", NULL, DAPI_OK, NULL);
    expect("DATA/raw/missing/x.csv", NULL, DAPI_OK, NULL);
    expect("/etc/hostname", NULL, DAPI_ERR_SQL, "is not inside the lake"); /* fails closed */
    expect("DATAx/raw/a.csv", NULL, DAPI_ERR_SQL, "is not inside the lake");

    /* "**" above a link to /: refused having looked at the lake only */
    char *msg;
    size_t visited = 0;
    T_EQ_INT(reach("DATA/r*/**", NULL, REACH_MAX_ENTRIES, &visited, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, leaves), "**: %s", msg ? msg : "NULL");
    free(msg);
    T_CHECK(visited < 20, "** looked at %zu entries: the lake's, not the machine's", visited);
}

static void test_crawl_inside(void)
{
    char *msg;
    size_t visited = 0;
    expect("DATA/clean/**", NULL, DAPI_OK, NULL);
    expect("DATA/clean/**/*.csv", NULL, DAPI_OK, NULL);
    expect("DATA/clean/sub/up/sub/up/**", NULL, DAPI_OK, NULL);
    T_EQ_INT(reach("DATA/clean/**", NULL, REACH_MAX_ENTRIES, &visited, &msg), DAPI_OK);
    T_CHECK(visited <= 5, "the cycle is walked once: %zu entries", visited);
    free(msg);
    /* bounded in entries and depth */
    T_EQ_INT(reach("DATA/many/**", NULL, 100, &visited, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "reaches more than 100 entries"), "budget: %s", msg ? msg : "NULL");
    free(msg);
    T_EQ_INT(reach("DATA/many/*.csv", NULL, 100, &visited, &msg), DAPI_ERR_SQL);
    free(msg);
    expect("DATA/many/*.csv", NULL, DAPI_OK, NULL);
    expect("DATA/deep/**", NULL, DAPI_ERR_SQL, "nested too deep");
    /* links leading back up multiply the matches of every later component: after "**" too
     * (DuckDB globs the rest from every folder "**" reaches, following links), so the
     * walk counts them all and the budget stops the pattern, not DuckDB's 2^n paths */
    expect("DATA/fan/*/*/t.csv", NULL, DAPI_OK, NULL);
    char fan[256] = "DATA/fan/**";
    for(int i = 0; i < 20; i++)
        strcat(fan, "/*");
    strcat(fan, "/t.csv");
    T_EQ_INT(reach(fan, NULL, 10000, &visited, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "reaches more than 10000 entries"), "** then 20 x *: %s",
            msg ? msg : "NULL");
    T_CHECK(visited <= 10001, "stopped at the budget: %zu entries", visited);
    free(msg);
    char plain[256] = "DATA/fan"; /* the same without "**" */
    strcat(plain, fan + strlen("DATA/fan/**"));
    T_EQ_INT(reach(plain, NULL, 10000, &visited, &msg), DAPI_ERR_SQL);
    T_CHECK(msg && strstr(msg, "reaches more than 10000 entries"), "20 x *: %s",
            msg ? msg : "NULL");
    free(msg);
    expect("DATA/deep/d/d/d/*", NULL, DAPI_OK, NULL);
}

static int stop_now(void *arg)
{
    (*(int *)arg)++;
    return 1;
}

static void test_deadline(void)
{
    int asked = 0;
    char *msg = NULL, p[1024];
    snprintf(p, sizeof p, "%s", t_lake_expand(&L, "DATA/many/*.csv"));
    T_EQ_INT(
        engine_reach(L.data, real_lake, p, &ALL, REACH_MAX_ENTRIES, stop_now, &asked, NULL, &msg),
        DAPI_ERR_TIMEOUT);
    T_CHECK(asked >= 1 && !msg, "the deadline is asked (%d) and ends the walk", asked);
    free(msg);
}

/* A link into a layer outside the key's scope: 403 whether the file beyond exists or not. */
static void test_scope(void)
{
    struct dapi_scope pub = {.all = 0, .n = 1};
    snprintf(pub.layers[0], sizeof pub.layers[0], "pub");
    const char *msg = "this API key may not read layer 'secret'";
    expect("DATA/pub/linkdir/t.csv", &pub, DAPI_ERR_FORBIDDEN, msg);
    expect("DATA/pub/linkdir/missing.csv", &pub, DAPI_ERR_FORBIDDEN, msg);
    expect("DATA/pub/*/t.csv", &pub, DAPI_ERR_FORBIDDEN, msg);
    expect("DATA/pub/**", &pub, DAPI_ERR_FORBIDDEN, msg);
    expect("DATA/pub/t.csv", &pub, DAPI_OK, NULL);
    expect("DATA/pub/t*.csv", &pub, DAPI_OK, NULL);
    expect("DATA/pub/linkdir/missing.csv", NULL, DAPI_OK, NULL);
}

int main(void)
{
    if(t_lake_make(&L, "reach"))
        return 1;
    T_CHECK(realpath(L.data, real_lake) != NULL, "the lake's real path");
    build();
    test_links_out();
    test_crawl_inside();
    test_deadline();
    test_scope();
    t_rm_rf(L.root);
    T_DONE();
}
