/* What a query's file pattern could reach, walked on the lake's own entries before DuckDB globs
 * it (engine.c, vet_paths).
 *
 * DuckDB's glob follows symbolic links wherever they point, its "**" too. Checking only what a
 * pattern matched made the answer depend on files outside the lake: with a link raw/out -> /
 * in the lake, '<lake>/raw/out/etc/shadow' was refused when that file existed and "no files
 * found" when it did not — an oracle for every path of the machine — and a pattern of the
 * lake's layers followed by "**" walked the whole machine (7-15 s) before its refusal. The
 * same held for a link into a layer outside a key's scope: 403 when the file existed, "no
 * files found" when not.
 *
 * So the pattern is walked here first, component by component, listing only directories of
 * the lake: every link that the pattern could enter or match is resolved, and the pattern is
 * refused if one of them leaves the lake (or does not resolve) or lies in a layer outside the
 * scope, whatever lies beyond it. Nothing beyond such a link is listed, opened or stat'ed, so
 * the answer depends on the lake alone. The walk matches more than DuckDB would, never less:
 * a component with "[" or "?" matches every entry; one with "**" stands for every folder
 * beneath (links inside the lake followed, each folder once), and the rest of the pattern is
 * walked from each of them; hidden entries count. It is bounded: a budget of entries
 * (REACH_MAX_ENTRIES in the engine, as many as the lake scan's), REACH_MAX_DEPTH folders
 * deep, and the check's deadline (stop). */
#include "engine/engine_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "engine/sandbox.h"

struct seen {
    dev_t dev;
    ino_t ino;
};

/* A set of files by (dev, ino): open addressing, cap a power of 2 (inode 0 marks a free
 * slot: no folder or link has it). */
struct idset {
    struct seen *tab;
    size_t n, cap;
};

struct reach {
    const char *lake_real; /* realpath of the lake */
    const struct dapi_scope *scope;
    const char *pattern; /* for the messages */
    int (*stop)(void *arg);
    void *stop_arg;
    size_t budget, left; /* entries that may be looked at in all, still */
    size_t visited;
    struct idset folders; /* the folders a "**" crawled */
    struct idset links;   /* links found to resolve inside the lake and the scope */
    char path[PATH_MAX];
    char **msg;
};

static int has_wild(const char *s, size_t n)
{
    for(size_t i = 0; i < n; i++)
        if(s[i] == '*' || s[i] == '?' || s[i] == '[')
            return 1;
    return 0;
}

/* "reading '<pattern>' is not allowed: <why>" (owned; NULL without memory). */
static char *refusal(const char *pattern, const char *why)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 8192);
    dapi_buf_addf(&b, "reading '%s' is not allowed: %s", pattern, why);
    return dapi_buf_take(&b, NULL);
}

char *engine_leaves_msg(const char *pattern)
{
    return refusal(pattern, "it matches a hidden file or a link that leaves the lake");
}

static enum dapi_err refuse(struct reach *r, const char *why)
{
    *r->msg = refusal(r->pattern, why);
    return *r->msg ? DAPI_ERR_SQL : DAPI_ERR_NOMEM;
}

/* One more entry looked at: refused past the budget, DAPI_ERR_TIMEOUT past the deadline. */
static enum dapi_err count(struct reach *r)
{
    r->visited++;
    if(!r->left) {
        char why[128];
        snprintf(why, sizeof why, "the pattern reaches more than %zu entries of the lake",
                 r->budget);
        return refuse(r, why);
    }
    r->left--;
    if(r->visited % 256 == 0 && r->stop && r->stop(r->stop_arg))
        return DAPI_ERR_TIMEOUT;
    return DAPI_OK;
}

static size_t seen_slot(const struct seen *tab, size_t cap, dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)ino * 0x9E3779B97F4A7C15u) ^ (uint64_t)dev;
    size_t i = (size_t)(h ^ (h >> 29)) & (cap - 1);
    while(tab[i].ino && !(tab[i].dev == dev && tab[i].ino == ino))
        i = (i + 1) & (cap - 1);
    return i;
}

/* Whether (dev, ino) is in set. */
static int idset_has(const struct idset *set, dev_t dev, ino_t ino)
{
    return set->cap && set->tab[seen_slot(set->tab, set->cap, dev, ino)].ino != 0;
}

/* Adds (dev, ino) to set: 1 if it is new, 0 if it was there, -1 without memory. */
static int idset_add(struct idset *set, dev_t dev, ino_t ino)
{
    if((set->n + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        struct seen *tab = calloc(cap, sizeof *tab);
        if(!tab)
            return -1;
        for(size_t i = 0; i < set->cap; i++)
            if(set->tab[i].ino)
                tab[seen_slot(tab, cap, set->tab[i].dev, set->tab[i].ino)] = set->tab[i];
        free(set->tab);
        set->tab = tab;
        set->cap = cap;
    }
    size_t i = seen_slot(set->tab, set->cap, dev, ino);
    if(set->tab[i].ino)
        return 0;
    set->tab[i] = (struct seen){dev, ino};
    set->n++;
    return 1;
}

/* The entry name of the folder dirfd, whose path is r->path, is a symbolic link: it must
 * resolve to a path in the lake, in a layer of the scope. A link found good once is not
 * resolved again (a pattern may reach it by many paths): its verdict is its own when it has one
 * name only, as links do. */
static enum dapi_err vet_link(struct reach *r, int dirfd, const char *name)
{
    char real[PATH_MAX], layer[256];
    struct stat st;
    int one = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
              st.st_nlink == 1;
    if(one && idset_has(&r->links, st.st_dev, st.st_ino))
        return DAPI_OK;
    if(!dapi_lake_contains(r->lake_real, r->path, real)) {
        *r->msg = engine_leaves_msg(r->pattern);
        return *r->msg ? DAPI_ERR_SQL : DAPI_ERR_NOMEM;
    }
    if(dapi_sandbox_path_layer_problem(r->scope, r->lake_real, real, layer, sizeof layer)) {
        *r->msg = dapi_sandbox_forbidden_msg(layer);
        return *r->msg ? DAPI_ERR_FORBIDDEN : DAPI_ERR_NOMEM;
    }
    return one && idset_add(&r->links, st.st_dev, st.st_ino) < 0 ? DAPI_ERR_NOMEM : DAPI_OK;
}

/* Appends "/name" (n bytes) to r->path; 0, or -1 when it would not fit. */
static int push(struct reach *r, size_t at, const char *name, size_t n)
{
    if(at + 1 + n >= sizeof r->path)
        return -1;
    r->path[at] = '/';
    memcpy(r->path + at + 1, name, n);
    r->path[at + 1 + n] = '\0';
    return 0;
}

/* What the entry name of the folder dirfd is, links not followed: 'l' link, 'd' folder, 'f'
 * anything else, 0 gone. */
static char kind_at(int dirfd, const char *name, unsigned char d_type)
{
    if(d_type == DT_LNK)
        return 'l';
    if(d_type == DT_DIR)
        return 'd';
    if(d_type != DT_UNKNOWN)
        return 'f';
    struct stat st;
    if(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW))
        return 0;
    return S_ISLNK(st.st_mode) ? 'l' : S_ISDIR(st.st_mode) ? 'd' : 'f';
}

/* The folder name of dirfd opened (a link followed: one vetted already), *fd; 0, -1 when there
 * is none to read (gone, not a folder, not readable: nothing there for DuckDB either), or
 * DAPI_ERR_BUSY when the process is out of descriptors (the check fails closed). Each step
 * opens one name in the folder already open, so a path through many links is not resolved
 * again for every entry beneath it. */
static int open_dir(int dirfd, const char *name, int *fd)
{
    *fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if(*fd >= 0)
        return 0;
    return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? (int)DAPI_ERR_BUSY : -1;
}

/* Whether name could be matched by the component pat (n bytes). */
static int may_match(const char *pat, size_t n, const char *name)
{
    char p[NAME_MAX + 1];
    if(memchr(pat, '[', n) || memchr(pat, '?', n) || n > NAME_MAX)
        return 1; /* classes, and '?' (a byte or a UTF-8 character?): DuckDB's dialect may
                   * differ from fnmatch's; '*' alone matches a superset either way */
    memcpy(p, pat, n);
    p[n] = '\0';
    return fnmatch(p, name, FNM_NOESCAPE) == 0;
}

static enum dapi_err crawl(struct reach *r, int fd, size_t len, const char *rest, int depth);
static enum dapi_err walk(struct reach *r, int fd, const char *rest, int depth);

/* Goes on from the folder name of the folder dirfd (r->path its path, len bytes): crawled
 * ("**": pat NULL) or walked with the rest of the pattern. */
static enum dapi_err descend(struct reach *r, int dirfd, const char *name, const char *pat,
                             const char *rest, int depth)
{
    int fd;
    int rc = open_dir(dirfd, name, &fd);
    if(rc)
        return rc < 0 ? DAPI_OK : (enum dapi_err)rc;
    enum dapi_err result = !pat ? crawl(r, fd, strlen(r->path), rest, depth + 1)
                                : walk(r, fd, rest, depth + 1);
    close(fd);
    return result;
}

/* Every entry of the folder fd (r->path its path, len bytes) that the component pat (n bytes)
 * could match — every entry when pat is NULL ("**") — is counted and, if a link, vetted; then
 * the folders and links among them are crawled ("**", rest what follows it) or walked on with
 * the rest of the pattern. */
static enum dapi_err entries(struct reach *r, int fd, size_t len, const char *pat, size_t n,
                             const char *rest, int depth)
{
    int own; /* (a descriptor of its own: readdir moves its offset) */
    int rc = open_dir(fd, ".", &own);
    if(rc)
        return rc < 0 ? DAPI_OK : (enum dapi_err)rc;
    DIR *d = fdopendir(own);
    if(!d) {
        close(own);
        return DAPI_ERR_NOMEM;
    }
    enum dapi_err result = DAPI_OK;
    struct dirent *de;
    while(!result && (de = readdir(d))) {
        if(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if((result = count(r)))
            break;
        if(pat && !may_match(pat, n, de->d_name))
            continue;
        if(push(r, len, de->d_name, strlen(de->d_name))) {
            result = refuse(r, "the pattern reaches a path too long");
            break;
        }
        char k = kind_at(own, de->d_name, de->d_type);
        if(k == 'l')
            result = vet_link(r, own, de->d_name);
        if(!result && (k == 'l' || k == 'd') && (!pat || *rest))
            result = descend(r, own, de->d_name, pat, rest, depth);
        r->path[len] = '\0';
    }
    closedir(d);
    return result;
}

/* "**" at the folder fd (r->path its path, len bytes): every entry beneath, every link vetted
 * and the ones inside followed, each folder once; and from each of those folders (the folder
 * itself included: "**" is zero folders or more) the rest of the pattern after it, walked as
 * DuckDB will glob it — its later components follow links, so their matches multiply through
 * links that lead back up, and the budget must count every one of them. */
static enum dapi_err crawl(struct reach *r, int fd, size_t len, const char *rest, int depth)
{
    struct stat st;
    if(depth > REACH_MAX_DEPTH)
        return refuse(r, "the pattern reaches folders nested too deep");
    if(fstat(fd, &st) || !S_ISDIR(st.st_mode))
        return DAPI_OK;
    int fresh = idset_add(&r->folders, st.st_dev, st.st_ino);
    if(fresh <= 0)
        return fresh < 0 ? DAPI_ERR_NOMEM : DAPI_OK;
    enum dapi_err result = *rest ? walk(r, fd, rest, depth) : DAPI_OK;
    return result ? result : entries(r, fd, len, NULL, 0, rest, depth);
}

/* The rest of the pattern (rest: components after a '/', maybe more '/') from the folder fd,
 * whose path is r->path. */
static enum dapi_err walk(struct reach *r, int fd, const char *rest, int depth)
{
    while(*rest == '/')
        rest++;
    if(!*rest)
        return DAPI_OK;
    size_t n = strcspn(rest, "/"), len = strlen(r->path);
    const char *next = rest + n;
    if(depth > REACH_MAX_DEPTH)
        return refuse(r, "the pattern reaches folders nested too deep");
    if(n >= 2 && memmem(rest, n, "**", 2))
        return crawl(r, fd, len, next, depth);
    if(has_wild(rest, n))
        return entries(r, fd, len, rest, n, next, depth);
    char name[NAME_MAX + 1];
    if(n > NAME_MAX || push(r, len, rest, n))
        return DAPI_OK; /* too long for any file name: nothing there, for DuckDB too */
    memcpy(name, rest, n);
    name[n] = '\0';
    enum dapi_err result = count(r);
    char k = result ? 0 : kind_at(fd, name, DT_UNKNOWN);
    if(k == 'l')
        result = vet_link(r, fd, name);
    if(!result && (k == 'l' || k == 'd') && *next)
        result = descend(r, fd, name, rest, next, depth);
    r->path[len] = '\0';
    return result;
}

enum dapi_err engine_reach(const char *lake, const char *lake_real, const char *pattern,
                           const struct dapi_scope *scope, size_t budget, int (*stop)(void *arg),
                           void *stop_arg, size_t *visited, char **msg)
{
    size_t n = strlen(lake);
    struct reach r = {.lake_real = lake_real,
                      .scope = scope,
                      .pattern = pattern,
                      .stop = stop,
                      .stop_arg = stop_arg,
                      .budget = budget,
                      .left = budget,
                      .msg = msg};
    enum dapi_err result = DAPI_OK;
    /* the sandbox lets only paths under the lake through: anything else fails closed */
    if(strncmp(pattern, lake, n) == 0 && pattern[n] == '/' && n < sizeof r.path) {
        int fd;
        int rc = open_dir(AT_FDCWD, lake, &fd);
        memcpy(r.path, lake, n + 1);
        if(rc == 0) {
            result = walk(&r, fd, pattern + n, 0);
            close(fd);
        } else if(rc > 0) {
            result = (enum dapi_err)rc;
        }
    } else {
        result = refuse(&r, "it is not inside the lake");
    }
    free(r.folders.tab);
    free(r.links.tab);
    if(visited)
        *visited = r.visited;
    return result;
}
