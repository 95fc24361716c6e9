/* The lake: the scan of the data dir (layers, table files and Parquet folders, bounded in
 * entries and time) and the views over it that dapi_engine_sync_lake creates, replaces and
 * drops through the engine's private catalog connection; the path-escaping helpers for the
 * views' SQL. duckdb.h is included only under src/engine/ (here through engine_int.h). */
#include "engine/engine_int.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"

static void view_free(struct view *v)
{
    free(v->layer);
    free(v->table);
    free(v->path);
    free(v->real);
    free_strings(v->files, v->nfiles);
    memset(v, 0, sizeof *v);
}

void views_clear(struct views *vs)
{
    for(size_t i = 0; i < vs->n; i++)
        view_free(&vs->v[i]);
    free(vs->v);
    memset(vs, 0, sizeof *vs);
}


static int ext_kind(const char *name, size_t *stem)
{
    static const struct {
        const char *ext;
        enum table_kind kind;
    } exts[] = {{".parquet", TK_PARQUET}, {".csv", TK_CSV},       {".tsv", TK_TSV},
                {".json", TK_JSON},       {".ndjson", TK_NDJSON}, {".jsonl", TK_NDJSON}};
    size_t n = strlen(name);
    for(size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t el = strlen(exts[i].ext);
        if(n > el && strcmp(name + n - el, exts[i].ext) == 0) {
            *stem = n - el;
            return (int)exts[i].kind;
        }
    }
    return -1;
}

/* The lake scan is bounded: a lake of this many entries, or a scan this long, stops early
 * (the tables not reached keep their previous views) and says so in the log. */
#define SCAN_MAX_ENTRIES 200000
#define SCAN_MAX_MS 2000
#define DIR_MAX_DEPTH 16

struct scan {
    const char *real; /* the lake's real path */
    size_t entries;
    int64_t deadline_ms;
    int cut; /* the budget ran out */
};

static int scan_budget(struct scan *sc)
{
    if(sc->cut)
        return 0;
    if(++sc->entries > SCAN_MAX_ENTRIES || dapi_clock_mono_ms() > sc->deadline_ms) {
        sc->cut = 1;
        return 0;
    }
    return 1;
}

/* stat()s path, refusing symlinks that resolve outside the lake (or do not resolve); *link
 * is set when path is a link (left as is otherwise). */
static int stat_in_lake(const struct scan *sc, const char *path, struct stat *st, int *link)
{
    if(lstat(path, st))
        return -1;
    if(!S_ISLNK(st->st_mode))
        return 0;
    *link = 1;
    if(!dapi_lake_contains(sc->real, path, NULL))
        return -1;
    return stat(path, st);
}

int dapi_lake_contains(const char *lake, const char *path, char *real)
{
    char own[PATH_MAX];
    size_t n = strlen(lake);
    if(!real)
        real = own;
    return realpath(path, real) && strncmp(real, lake, n) == 0 && real[n] == '/';
}

/* Folder tables: the Parquet files beneath dir (recursively), each vetted like a table file,
 * sorted so the view's file list is stable. The view names these files exactly, so DuckDB
 * never globs by itself (it would follow links out of the lake and read hidden files). */
struct files {
    char **v;
    size_t n, cap;
    struct timespec newest;
    off_t bytes;
    int linked; /* a link was followed on the way to one of them */
};

static void files_clear(struct files *f)
{
    free_strings(f->v, f->n);
    memset(f, 0, sizeof *f);
}

static enum dapi_err walk_parquet(struct scan *sc, const char *dir, int depth, struct files *f)
{
    enum dapi_err result = DAPI_OK;
    if(depth > DIR_MAX_DEPTH)
        return DAPI_OK;
    DIR *d = opendir(dir);
    if(!d)
        return DAPI_OK;
    struct dirent *de;
    while(!result && (de = readdir(d)) && scan_budget(sc)) {
        if(de->d_name[0] == '.')
            continue; /* hidden files are not part of any table */
        char p[PATH_MAX];
        struct stat st;
        size_t stem;
        if(snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p ||
           stat_in_lake(sc, p, &st, &f->linked))
            continue;
        if(S_ISDIR(st.st_mode)) {
            result = walk_parquet(sc, p, depth + 1, f);
        } else if(S_ISREG(st.st_mode) && ext_kind(de->d_name, &stem) == TK_PARQUET) {
            if(f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 16;
                char **nv = realloc(f->v, cap * sizeof *nv);
                if(!nv) {
                    result = DAPI_ERR_NOMEM;
                    break;
                }
                f->v = nv;
                f->cap = cap;
            }
            if(!(f->v[f->n] = strdup(p))) {
                result = DAPI_ERR_NOMEM;
                break;
            }
            f->n++;
            f->bytes += st.st_size;
            if(st.st_mtim.tv_sec > f->newest.tv_sec ||
               (st.st_mtim.tv_sec == f->newest.tv_sec && st.st_mtim.tv_nsec > f->newest.tv_nsec))
                f->newest = st.st_mtim;
        }
    }
    closedir(d);
    return result;
}

/* The layer folder path really lies in: the first component of its real path under the lake,
 * into out (n bytes); -1 if it does not resolve there. */
static int real_layer(const struct scan *sc, const char *path, char *out, size_t n)
{
    char real[PATH_MAX];
    if(!dapi_lake_contains(sc->real, path, real))
        return -1;
    const char *c = real + strlen(sc->real) + 1;
    size_t len = strcspn(c, "/");
    if(!len || len >= n)
        return -1;
    memcpy(out, c, len);
    out[len] = '\0';
    return 0;
}

/* Where a view's files really are (struct view's real): its own layer when no link was
 * followed to reach them; else the one layer folder all their real paths lie in, or NULL. */
static char *view_real_layer(const struct scan *sc, const char *layer, const char *path,
                             const struct files *files, int linked)
{
    char first[PATH_MAX], other[PATH_MAX];
    if(!linked)
        return strdup(layer);
    if(real_layer(sc, path, first, sizeof first))
        return NULL;
    for(size_t i = 0; files && i < files->n; i++)
        if(real_layer(sc, files->v[i], other, sizeof other) || strcmp(first, other) != 0)
            return NULL;
    return strdup(first);
}

static enum dapi_err views_add(struct views *vs, const char *layer, const char *table, size_t tlen,
                               const char *path, enum table_kind kind, const struct stat *st,
                               struct files *files, char *real)
{
    for(size_t i = 0; i < vs->n; i++)
        if(strcasecmp(vs->v[i].layer, layer) == 0 && strlen(vs->v[i].table) == tlen &&
           strncasecmp(vs->v[i].table, table, tlen) == 0) {
            free(real);
            return DAPI_OK; /* first one wins (readdir order is stable per directory) */
        }
    if(vs->n == vs->cap) {
        size_t cap = vs->cap ? vs->cap * 2 : 16;
        struct view *nv = realloc(vs->v, cap * sizeof *nv);
        if(!nv) {
            free(real);
            return DAPI_ERR_NOMEM;
        }
        vs->v = nv;
        vs->cap = cap;
    }
    struct view *v = &vs->v[vs->n];
    memset(v, 0, sizeof *v);
    v->layer = strdup(layer);
    v->table = strndup(table, tlen);
    v->path = strdup(path);
    v->kind = kind;
    v->mtime = st->st_mtim;
    v->size = st->st_size;
    if(files) { /* a folder: its signature is its files' */
        qsort(files->v, files->n, sizeof *files->v, cmp_str);
        v->files = files->v;
        v->nfiles = files->n;
        v->mtime = files->newest;
        v->size = files->bytes;
        memset(files, 0, sizeof *files);
    }
    v->real = real; /* taken (NULL: the files are not one layer's, or out of memory) */
    if(!v->layer || !v->table || !v->path) {
        view_free(v);
        return DAPI_ERR_NOMEM;
    }
    vs->n++;
    return DAPI_OK;
}

/* Schema names DuckDB keeps for itself: a layer folder of that name is not exposed. */
static int reserved_layer(const char *name)
{
    static const char *const r[] = {"main", "pg_catalog", "information_schema",
                                    "temp", "system",     "memory"};
    for(size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if(strcasecmp(name, r[i]) == 0)
            return 1;
    return 0;
}

static enum dapi_err scan_lake(struct scan *sc, const char *root, struct views *vs)
{
    enum dapi_err result = DAPI_OK;
    DIR *d = opendir(root);
    if(!d)
        return DAPI_OK; /* a missing lake is an empty lake */
    struct dirent *de;
    while(!result && (de = readdir(d)) && scan_budget(sc)) {
        if(de->d_name[0] == '.' || reserved_layer(de->d_name))
            continue;
        char lp[PATH_MAX];
        struct stat st;
        int layer_linked = 0;
        if(snprintf(lp, sizeof lp, "%s/%s", root, de->d_name) >= (int)sizeof lp ||
           stat_in_lake(sc, lp, &st, &layer_linked) || !S_ISDIR(st.st_mode))
            continue;
        DIR *ld = opendir(lp);
        if(!ld)
            continue;
        struct dirent *te;
        while(!result && (te = readdir(ld)) && scan_budget(sc)) {
            if(te->d_name[0] == '.')
                continue;
            char tp[PATH_MAX];
            int linked = layer_linked;
            if(snprintf(tp, sizeof tp, "%s/%s", lp, te->d_name) >= (int)sizeof tp ||
               stat_in_lake(sc, tp, &st, &linked))
                continue;
            size_t stem;
            int kind;
            if(S_ISDIR(st.st_mode)) {
                struct files f = {0};
                result = walk_parquet(sc, tp, 0, &f);
                if(!result && f.n)
                    result = views_add(
                        vs, de->d_name, te->d_name, strlen(te->d_name), tp, TK_PARQUET_DIR, &st,
                        &f, view_real_layer(sc, de->d_name, tp, &f, linked || f.linked));
                files_clear(&f);
            } else if(S_ISREG(st.st_mode) && (kind = ext_kind(te->d_name, &stem)) >= 0) {
                result = views_add(vs, de->d_name, te->d_name, stem, tp, (enum table_kind)kind,
                                   &st, NULL, view_real_layer(sc, de->d_name, tp, NULL, linked));
            }
        }
        closedir(ld);
    }
    closedir(d);
    return result;
}

static const struct view *views_find(const struct views *vs, const char *layer, const char *table)
{
    for(size_t i = 0; i < vs->n; i++)
        if(strcmp(vs->v[i].layer, layer) == 0 && strcmp(vs->v[i].table, table) == 0)
            return &vs->v[i];
    return NULL;
}

/* A file name as a DuckDB path literal that matches only itself: DuckDB expands *, ? and
 * [...] in every path it reads, so each is put in a one-character class ([[] is '['). */
enum dapi_err add_path_literal(struct dapi_buf *b, const char *path)
{
    enum dapi_err result = dapi_buf_addc(b, '\'');
    for(const char *p = path; !result && *p; p++) {
        if(*p == '*' || *p == '?' || *p == '[')
            result = dapi_buf_addf(b, "[%c]", *p);
        else
            result = *p == '\'' ? dapi_buf_add(b, "''", 2) : dapi_buf_addc(b, *p);
    }
    return result ? result : dapi_buf_addc(b, '\'');
}

static enum dapi_err view_sql(struct dapi_buf *b, const struct view *v)
{
    dapi_buf_adds(b, "CREATE OR REPLACE VIEW ");
    add_ident(b, v->layer);
    dapi_buf_addc(b, '.');
    add_ident(b, v->table);
    dapi_buf_adds(b, " AS SELECT * FROM ");
    switch(v->kind) {
    case TK_PARQUET:
        dapi_buf_adds(b, "read_parquet(");
        add_path_literal(b, v->path);
        break;
    case TK_PARQUET_DIR:
        dapi_buf_adds(b, "read_parquet([");
        for(size_t i = 0; i < v->nfiles; i++) {
            if(i)
                dapi_buf_adds(b, ", ");
            add_path_literal(b, v->files[i]);
        }
        dapi_buf_adds(b, "], hive_partitioning = true, union_by_name = true");
        break;
    case TK_CSV:
        dapi_buf_adds(b, "read_csv(");
        add_path_literal(b, v->path);
        dapi_buf_adds(b, ", header = true");
        break;
    case TK_TSV:
        dapi_buf_adds(b, "read_csv(");
        add_path_literal(b, v->path);
        dapi_buf_adds(b, ", header = true, delim = '\t'");
        break;
    case TK_JSON:
        dapi_buf_adds(b, "read_json_auto(");
        add_path_literal(b, v->path);
        break;
    case TK_NDJSON:
        dapi_buf_adds(b, "read_json_auto(");
        add_path_literal(b, v->path);
        dapi_buf_adds(b, ", format = 'newline_delimited'");
        break;
    }
    return dapi_buf_addc(b, ')');
}

uint64_t dapi_engine_lake_generation(struct dapi_engine *e)
{
    return lakewatch_gen(e->watch);
}

enum dapi_err dapi_engine_sync_lake(struct dapi_engine *e)
{
    enum dapi_err result = DAPI_OK;
    struct views now = {0};
    struct dapi_buf b;
    dapi_buf_init(&b, 64u << 20);
    char err[512];
    struct scan sc = {.real = e->data_real, .deadline_ms = dapi_clock_mono_ms() + SCAN_MAX_MS};

    pthread_mutex_lock(&e->lake_lock);
    /* Taken before the scan: a change during it makes the next generation differ. */
    uint64_t gen = lakewatch_gen(e->watch);
    if(gen && gen == e->views_gen)
        goto out; /* nothing changed since the last complete scan */
    e->views_gen = 0;
    if((result = scan_lake(&sc, e->data_dir, &now)))
        goto out;
    for(size_t i = 0; i < now.n; i++) {
        struct view *v = &now.v[i];
        const struct view *old = views_find(&e->views, v->layer, v->table);
        if(old && old->kind == v->kind && strcmp(old->path, v->path) == 0 &&
           old->size == v->size && old->nfiles == v->nfiles &&
           old->mtime.tv_sec == v->mtime.tv_sec && old->mtime.tv_nsec == v->mtime.tv_nsec) {
            /* unchanged; a file that could not be exposed is tried (and warned about) again
             * only once it changes */
            v->failed = old->failed;
            continue;
        }
        v->failed = 1;
        dapi_buf_reset(&b);
        dapi_buf_adds(&b, "CREATE SCHEMA IF NOT EXISTS ");
        add_ident(&b, v->layer);
        if(!b.data || exec(e->catalog, b.data, err, sizeof err)) {
            dapi_warn("lake: cannot create schema for layer '%s': %s", v->layer, err);
            continue;
        }
        dapi_buf_reset(&b);
        view_sql(&b, v);
        if(!b.data)
            continue;
        if(exec(e->catalog, b.data, err, sizeof err))
            dapi_warn("lake: cannot expose %s.%s (%s): %s", v->layer, v->table, v->path, err);
        else
            v->failed = 0;
    }
    if(sc.cut) {
        /* Not all of the lake was seen: what was not keeps its views. */
        int64_t now_ms = dapi_clock_mono_ms();
        if(now_ms - e->cut_warned_ms > 60000) {
            e->cut_warned_ms = now_ms;
            dapi_warn("lake: scan stopped after %zu entries / %d ms; tables beyond that keep "
                      "their previous state",
                      sc.entries, SCAN_MAX_MS);
        }
        for(size_t i = 0; i < e->views.n && !result; i++) {
            struct view *v = &e->views.v[i];
            if(views_find(&now, v->layer, v->table))
                continue;
            if(now.n == now.cap) {
                size_t cap = now.cap ? now.cap * 2 : 16;
                struct view *nv = realloc(now.v, cap * sizeof *nv);
                if(!nv) {
                    result = DAPI_ERR_NOMEM;
                    break;
                }
                now.v = nv;
                now.cap = cap;
            }
            now.v[now.n++] = *v;
            memset(v, 0, sizeof *v); /* moved */
        }
    } else {
        for(size_t i = 0; i < e->views.n; i++) {
            const struct view *v = &e->views.v[i];
            if(views_find(&now, v->layer, v->table))
                continue;
            dapi_buf_reset(&b);
            dapi_buf_adds(&b, "DROP VIEW IF EXISTS ");
            add_ident(&b, v->layer);
            dapi_buf_addc(&b, '.');
            add_ident(&b, v->table);
            if(b.data)
                exec(e->catalog, b.data, NULL, 0);
        }
    }
    if(!result) {
        views_clear(&e->views);
        e->views = now;
        memset(&now, 0, sizeof now);
        /* a scan cut short leaves tables unseen: scanned again next time */
        e->views_gen = sc.cut ? 0 : gen;
    }
out:
    pthread_mutex_unlock(&e->lake_lock);
    views_clear(&now);
    dapi_buf_free(&b);
    return result;
}
