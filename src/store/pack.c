/* Small finished queries as records of shared pack files (see pack.h). */
#include "store/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "store/bytes.h"
#include "store/queries.h"

#define PACK_PREFIX ".pack-"
#define PACK_FILE_MAX (16u << 20)
#define PACK_LIVE 0x31505144u /* "DQP1" */
#define PACK_DEAD 0x58505144u /* "DQPX" */
#define PACK_HEAD 32
#define PACK_BUCKETS 4096 /* the index's first size */

/* One pack file. Only the newest (p->cur) is appended to; the others only have records
 * removed, through a descriptor opened for that. */
struct pfile {
    uint64_t n;          /* its number: .pack-<n> */
    uint64_t size;       /* bytes of records (the newest: where the next one goes) */
    uint64_t live;       /* its live records */
    uint64_t live_bytes; /* their bytes */
    int compacting;      /* its records are being moved (it is not deleted meanwhile) */
    struct ent *ents;    /* its live records (a compaction reads only its file's) */
    struct pfile *next;
};

/* Where a live record is. */
struct ent {
    char slug[DAPI_SLUG_MAX];
    struct pfile *file;
    uint64_t off;  /* the record's */
    uint32_t mlen; /* its meta text's length */
    uint64_t rlen; /* its result's */
    uint64_t seq;  /* written order, for store_pack_each */
    struct ent *next;
    struct ent *fnext, **fprev; /* its file's list */
};

struct store_pack {
    pthread_mutex_t lock;
    char *dir;
    int fd;            /* the newest file's (-1: none made by this process yet) */
    struct pfile *cur; /* that file */
    struct pfile *files;
    uint64_t next_n; /* the next file's number */
    uint64_t seq, records, nfiles;
    int owed; /* a compaction's sync failed: the next one syncs the file system first */
    struct ent **buckets; /* the index: nbuckets chains, doubled as records come */
    size_t nbuckets;
    uint64_t visits; /* records a compaction looked at (for tests: store_pack_visits) */
};

/* A checksum that catches torn and damaged records (not an adversary: the state dir is the
 * server's own), 8 bytes at a time. */
static uint64_t sum(uint64_t h, const unsigned char *p, size_t n)
{
    for(; n >= 8; p += 8, n -= 8) {
        h = (h ^ store_get64(p)) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for(; n; p++, n--)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

/* Where in a record its result starts, and the record's whole size. */
static uint64_t result_at(uint32_t slen, uint32_t mlen)
{
    return PACK_HEAD + pad8((uint64_t)slen + mlen);
}

static uint64_t rec_size(uint32_t slen, uint32_t mlen, uint64_t rlen)
{
    return result_at(slen, mlen) + pad8(rlen);
}

static uint64_t ent_size(const struct ent *e)
{
    return rec_size((uint32_t)strlen(e->slug), e->mlen, e->rlen);
}

static size_t bucket(const struct store_pack *p, const char *slug)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for(const unsigned char *c = (const unsigned char *)slug; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return (size_t)(h % p->nbuckets);
}

/* The index doubles once it holds twice as many records as chains: a look-up (every run's
 * start and end asks) stays a few comparisons with millions of records (without memory it
 * stays as it is). */
static void grow(struct store_pack *p)
{
    size_t n = p->nbuckets * 2, oldn = p->nbuckets;
    struct ent **b = calloc(n, sizeof *b), **old = p->buckets;
    if(!b)
        return;
    p->buckets = b;
    p->nbuckets = n;
    for(size_t i = 0; i < oldn; i++)
        for(struct ent *e = old[i], *next; e; e = next) {
            next = e->next;
            size_t at = bucket(p, e->slug);
            e->next = b[at];
            b[at] = e;
        }
    free(old);
}

static struct ent **find(struct store_pack *p, const char *slug)
{
    struct ent **e = &p->buckets[bucket(p, slug)];
    while(*e && strcmp((*e)->slug, slug) != 0)
        e = &(*e)->next;
    return e;
}

/* e joins file f's list of live records (under the lock). */
static void file_link(struct pfile *f, struct ent *e)
{
    e->file = f;
    e->fnext = f->ents;
    e->fprev = &f->ents;
    if(f->ents)
        f->ents->fprev = &e->fnext;
    f->ents = e;
}

static void file_unlink(struct ent *e)
{
    *e->fprev = e->fnext;
    if(e->fnext)
        e->fnext->fprev = e->fprev;
}

static void file_path(const struct store_pack *p, uint64_t n, char *out, size_t len)
{
    snprintf(out, len, "%s/" PACK_PREFIX "%llu", p->dir, (unsigned long long)n);
}

/* Opens file f for writing (the newest one's descriptor is kept): the caller closes what it
 * gets unless it is p->fd. */
static int file_fd(struct store_pack *p, struct pfile *f)
{
    if(f == p->cur)
        return p->fd;
    char path[4096];
    file_path(p, f->n, path, sizeof path);
    return open(path, O_RDWR | O_CLOEXEC);
}

/* f lost a live record: a file none are left in (but the newest) is deleted. */
static void file_drop(struct store_pack *p, struct pfile *f)
{
    if(--f->live || f == p->cur || f->compacting)
        return;
    char path[4096];
    file_path(p, f->n, path, sizeof path);
    if(unlink(path) && errno != ENOENT)
        dapi_warn("store: cannot remove %s: %s", path, strerror(errno));
    for(struct pfile **l = &p->files; *l; l = &(*l)->next)
        if(*l == f) {
            *l = f->next;
            break;
        }
    free(f);
    p->nfiles--;
}

/* Marks e's record removed on disk and forgets e (under the lock). */
static int rec_remove(struct store_pack *p, struct ent **slot, int sync)
{
    struct ent *e = *slot;
    int fd = file_fd(p, e->file), err = 0;
    unsigned char dead[4];
    store_put32(dead, PACK_DEAD);
    if(fd < 0 || (err = store_pwrite_all(fd, dead, sizeof dead, e->off)) ||
       (sync && fdatasync(fd)))
        err = err ? err : errno;
    if(fd >= 0 && fd != p->fd)
        close(fd);
    if(err)
        return err;
    *slot = e->next;
    file_unlink(e);
    e->file->live_bytes -= ent_size(e);
    file_drop(p, e->file);
    free(e);
    p->records--;
    return 0;
}

/* Records e (its slug's earlier record, if any, is removed: the later one wins). */
static void index_add(struct store_pack *p, struct ent *e)
{
    file_link(e->file, e);
    e->file->live++; /* (first: the older record may be the only other one of its file) */
    e->file->live_bytes += ent_size(e);
    struct ent **old = find(p, e->slug);
    if(*old && rec_remove(p, old, 0))
        dapi_warn("store: cannot mark the older record of %s removed", e->slug);
    e->seq = ++p->seq;
    if(p->records >= 2 * p->nbuckets)
        grow(p);
    e->next = p->buckets[bucket(p, e->slug)];
    p->buckets[bucket(p, e->slug)] = e;
    p->records++;
}

/* Reads file f's records up to the first torn or damaged one. */
static void scan(struct store_pack *p, struct pfile *f)
{
    char path[4096];
    file_path(p, f->n, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    unsigned char *buf = NULL;
    uint64_t n = 0;
    if(fd >= 0 && !fstat(fd, &st) && st.st_size > 0 && (buf = malloc((size_t)st.st_size))) {
        while(n < (uint64_t)st.st_size) {
            ssize_t r = pread(fd, buf + n, (size_t)st.st_size - n, (off_t)n);
            if(r < 0 && errno == EINTR)
                continue;
            if(r <= 0)
                break;
            n += (uint64_t)r;
        }
    }
    if(fd >= 0)
        close(fd);
    uint64_t off = 0;
    while(buf && off + PACK_HEAD <= n) {
        const unsigned char *h = buf + off;
        uint32_t magic = store_get32(h), slen = store_get32(h + 4), mlen = store_get32(h + 8);
        uint64_t rlen = store_get64(h + 16);
        if((magic != PACK_LIVE && magic != PACK_DEAD) || slen == 0 || slen >= DAPI_SLUG_MAX ||
           store_get32(h + 12) != 0 || mlen > n || rlen > n ||
           rec_size(slen, mlen, rlen) > n - off)
            break;
        uint64_t size = rec_size(slen, mlen, rlen);
        if(magic == PACK_LIVE) {
            if(sum(sum(0xcbf29ce484222325ull, h + 4, 20), h + PACK_HEAD, size - PACK_HEAD) !=
               store_get64(h + 24))
                break;
            struct ent *e = calloc(1, sizeof *e);
            if(!e)
                break;
            memcpy(e->slug, h + PACK_HEAD, slen);
            e->file = f;
            e->off = off;
            e->mlen = mlen;
            e->rlen = rlen;
            index_add(p, e);
        }
        off += size;
    }
    if(buf && off < n)
        dapi_warn("store: %s: %llu bytes after its last whole record ignored (an interrupted "
                  "write)",
                  path, (unsigned long long)(n - off));
    f->size = off;
    free(buf);
}

int store_pack_open(struct store_pack **out, const char *dir)
{
    struct store_pack *p = calloc(1, sizeof *p);
    *out = NULL;
    if(p)
        p->buckets = calloc(p->nbuckets = PACK_BUCKETS, sizeof *p->buckets);
    if(!p || !p->buckets || !(p->dir = strdup(dir))) {
        if(p)
            free(p->buckets);
        free(p);
        return ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->fd = -1;
    p->next_n = 1;
    DIR *d = opendir(dir);
    if(!d) {
        int e = errno;
        store_pack_close(p);
        return e;
    }
    struct dirent *de;
    while((de = readdir(d))) {
        size_t pl = strlen(PACK_PREFIX);
        char *end;
        if(strncmp(de->d_name, PACK_PREFIX, pl) != 0 || !de->d_name[pl])
            continue;
        unsigned long long n = strtoull(de->d_name + pl, &end, 10);
        if(*end || n == 0)
            continue;
        struct pfile *f = calloc(1, sizeof *f);
        if(!f) {
            closedir(d);
            store_pack_close(p);
            return ENOMEM;
        }
        f->n = n;
        /* sorted by number: the order the files were written in */
        struct pfile **l = &p->files;
        while(*l && (*l)->n < n)
            l = &(*l)->next;
        f->next = *l;
        *l = f;
        p->nfiles++;
        if(n >= p->next_n)
            p->next_n = n + 1;
    }
    closedir(d);
    for(struct pfile *f = p->files; f; f = f->next)
        scan(p, f);
    for(struct pfile *f = p->files, *next; f; f = next) { /* (files with no live record go) */
        next = f->next;
        f->live++;
        file_drop(p, f);
    }
    *out = p;
    return 0;
}

void store_pack_close(struct store_pack *p)
{
    if(!p)
        return;
    if(p->fd >= 0)
        close(p->fd);
    for(size_t b = 0; b < p->nbuckets; b++)
        while(p->buckets[b]) {
            struct ent *e = p->buckets[b];
            p->buckets[b] = e->next;
            free(e);
        }
    free(p->buckets);
    while(p->files) {
        struct pfile *f = p->files;
        p->files = f->next;
        free(f);
    }
    pthread_mutex_destroy(&p->lock);
    free(p->dir);
    free(p);
}

static int by_seq(const void *a, const void *b)
{
    uint64_t x = ((const struct ent *)a)->seq, y = ((const struct ent *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Maps e's result from fd (under the lock). */
static struct dapi_result *map_result(const struct ent *e, int fd)
{
    struct dapi_result *r = NULL;
    if(e->rlen && dapi_result_open_at(
                      &r, fd, e->off + result_at((uint32_t)strlen(e->slug), e->mlen), e->rlen))
        r = NULL;
    return r;
}

void store_pack_each(struct store_pack *p, store_pack_each_fn fn, void *arg)
{
    /* A copy of the index, so fn may remove records (an expired query's) */
    pthread_mutex_lock(&p->lock);
    struct ent *v = p->records ? malloc(p->records * sizeof *v) : NULL;
    size_t n = 0;
    for(size_t b = 0; v && b < p->nbuckets; b++)
        for(struct ent *e = p->buckets[b]; e; e = e->next) {
            v[n] = *e;
            v[n++].next = NULL;
        }
    uint64_t *nums = n ? malloc(n * sizeof *nums) : NULL;
    for(size_t i = 0; nums && i < n; i++)
        nums[i] = v[i].file->n;
    pthread_mutex_unlock(&p->lock);
    if(n && !nums)
        n = 0;
    for(size_t i = 0; i < n; i++)
        v[i].file = (struct pfile *)(uintptr_t)i; /* (the file's number is nums[i] now) */
    if(n)
        qsort(v, n, sizeof *v, by_seq);
    uint64_t open_n = 0;
    int fd = -1;
    unsigned char *rec = NULL;
    char *meta = NULL;
    size_t cap = 0, mcap = 0;
    for(size_t i = 0; i < n; i++) {
        struct ent *e = &v[i];
        uint64_t num = nums[(uintptr_t)e->file];
        if(num != open_n) { /* (in written order: one file after another) */
            char path[4096];
            if(fd >= 0)
                close(fd);
            file_path(p, num, path, sizeof path);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            open_n = num;
        }
        uint32_t slen = (uint32_t)strlen(e->slug);
        size_t size = (size_t)ent_size(e);
        if(size > cap) { /* (a record is at most its meta and 64 KiB of result) */
            unsigned char *grown = realloc(rec, size);
            if(!grown)
                break;
            rec = grown;
            cap = size;
        }
        if(fd < 0)
            break;
        if(pread(fd, rec, size, (off_t)e->off) != (ssize_t)size)
            continue;
        /* (a string of its own: the meta text may run right into the result) */
        if(e->mlen + 1 > mcap) {
            char *grown = realloc(meta, e->mlen + 1);
            if(!grown)
                break;
            meta = grown;
            mcap = e->mlen + 1;
        }
        memcpy(meta, rec + PACK_HEAD + slen, e->mlen);
        meta[e->mlen] = '\0';
        uint64_t at = result_at(slen, e->mlen);
        fn(arg, e->slug, meta, e->mlen, e->rlen ? rec + at : NULL, (size_t)e->rlen);
    }
    if(fd >= 0)
        close(fd);
    free(meta);
    free(rec);
    free(nums);
    free(v);
}

/* Starts a new file for the records to come (under the lock). */
static int file_new(struct store_pack *p)
{
    struct pfile *f = calloc(1, sizeof *f);
    if(!f)
        return ENOMEM;
    char path[4096];
    int fd = -1;
    for(int tries = 0; fd < 0 && tries < 100; tries++) {
        f->n = p->next_n++;
        file_path(p, f->n, path, sizeof path);
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if(fd < 0 && errno != EEXIST)
            break;
    }
    if(fd < 0) {
        int e = errno;
        free(f);
        return e;
    }
    struct pfile *old = p->cur;
    if(p->fd >= 0)
        close(p->fd);
    p->fd = fd;
    p->cur = f;
    f->next = p->files;
    p->files = f;
    p->nfiles++;
    if(old) { /* no longer the newest: deleted once it holds no live record */
        old->live++;
        file_drop(p, old);
    }
    return 0;
}

int store_pack_put(struct store_pack *p, const char *slug, const char *meta, size_t mlen,
                   const void *result, size_t rlen, struct dapi_result **mapped)
{
    size_t slen = strlen(slug);
    if(mapped)
        *mapped = NULL;
    if(slen == 0 || slen >= DAPI_SLUG_MAX || mlen > UINT32_MAX / 2)
        return EINVAL;
    uint64_t size = rec_size((uint32_t)slen, (uint32_t)mlen, rlen);
    unsigned char *rec = calloc(1, (size_t)size);
    struct ent *e = calloc(1, sizeof *e);
    if(!rec || !e) {
        free(rec);
        free(e);
        return ENOMEM;
    }
    store_put32(rec, PACK_LIVE);
    store_put32(rec + 4, (uint32_t)slen);
    store_put32(rec + 8, (uint32_t)mlen);
    store_put64(rec + 16, rlen);
    memcpy(rec + PACK_HEAD, slug, slen);
    memcpy(rec + PACK_HEAD + slen, meta, mlen);
    if(rlen)
        memcpy(rec + result_at((uint32_t)slen, (uint32_t)mlen), result, rlen);
    store_put64(rec + 24, sum(sum(0xcbf29ce484222325ull, rec + 4, 20), rec + PACK_HEAD,
                              (size_t)size - PACK_HEAD));
    memcpy(e->slug, slug, slen);
    e->mlen = (uint32_t)mlen;
    e->rlen = rlen;
    pthread_mutex_lock(&p->lock);
    int err = 0;
    if(!p->cur || (p->cur->size && p->cur->size + size > PACK_FILE_MAX))
        err = file_new(p);
    /* (if only a part is written, it stays past the end: the next record overwrites it, and
     * a start reads up to the last whole record) */
    if(!err)
        err = store_pwrite_all(p->fd, rec, (size_t)size, p->cur->size);
    if(!err) {
        e->file = p->cur;
        e->off = p->cur->size;
        p->cur->size += size;
        index_add(p, e);
        if(mapped)
            *mapped = map_result(e, p->fd);
        e = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    free(e);
    free(rec);
    return err;
}

int store_pack_has(struct store_pack *p, const char *slug)
{
    pthread_mutex_lock(&p->lock);
    int has = *find(p, slug) != NULL;
    pthread_mutex_unlock(&p->lock);
    return has;
}

struct dapi_result *store_pack_map(struct store_pack *p, const char *slug)
{
    struct dapi_result *r = NULL;
    pthread_mutex_lock(&p->lock);
    struct ent *e = *find(p, slug);
    int fd = e ? file_fd(p, e->file) : -1;
    if(fd >= 0) {
        r = map_result(e, fd);
        if(fd != p->fd)
            close(fd);
    }
    pthread_mutex_unlock(&p->lock);
    return r;
}

int store_pack_remove(struct store_pack *p, const char *slug, int sync)
{
    pthread_mutex_lock(&p->lock);
    struct ent **e = find(p, slug);
    int r = *e ? 1 : 0;
    if(*e) {
        int err = rec_remove(p, e, sync);
        if(err) {
            dapi_error("store: cannot remove the record of %s: %s", slug, strerror(err));
            r = -err;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return r;
}

void store_pack_counts(struct store_pack *p, uint64_t *records, uint64_t *files)
{
    pthread_mutex_lock(&p->lock);
    *records = p->records;
    *files = p->nfiles;
    pthread_mutex_unlock(&p->lock);
}

uint64_t store_pack_visits(struct store_pack *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->visits;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void store_pack_usage(struct store_pack *p, uint64_t *files, uint64_t *live, uint64_t *total)
{
    *live = *total = 0;
    pthread_mutex_lock(&p->lock);
    *files = p->nfiles;
    for(const struct pfile *f = p->files; f; f = f->next) {
        *live += f->live_bytes;
        *total += f->size;
    }
    pthread_mutex_unlock(&p->lock);
}

/* The file to compact: not the newest, at most a quarter live (by bytes), the most bytes to
 * free (under the lock). */
static struct pfile *sparse_file(struct store_pack *p)
{
    struct pfile *best = NULL;
    for(struct pfile *f = p->files; f; f = f->next)
        if(f != p->cur && !f->compacting && f->live_bytes * 4 <= f->size &&
           (!best || f->size - f->live_bytes > best->size - best->live_bytes))
            best = f;
    return best;
}

/* Copies e's record from src (its file's descriptor) to the end of the newest file and points
 * e there; the old record stays as it is (its file is deleted once the copies are durable).
 * Under the lock. Returns 0 or an errno value. */
static int rec_move(struct store_pack *p, struct ent *e, int src)
{
    uint64_t size = ent_size(e);
    unsigned char *buf = malloc((size_t)size);
    if(!buf)
        return ENOMEM;
    int err = 0;
    ssize_t r;
    while((r = pread(src, buf, (size_t)size, (off_t)e->off)) < 0 && errno == EINTR)
        ;
    if(r != (ssize_t)size || store_get32(buf) != PACK_LIVE)
        err = r < 0 ? errno : EIO;
    if(!err && (!p->cur || (p->cur->size && p->cur->size + size > PACK_FILE_MAX)))
        err = file_new(p);
    if(!err)
        err = store_pwrite_all(p->fd, buf, (size_t)size, p->cur->size);
    free(buf);
    if(err)
        return err;
    e->file->live--;
    e->file->live_bytes -= size;
    file_unlink(e);
    file_link(p->cur, e);
    e->off = p->cur->size;
    p->cur->size += size;
    p->cur->live++;
    p->cur->live_bytes += size;
    return 0;
}

/* Makes the files numbered nums[0..n) durable (a file deleted meanwhile needs nothing), and
 * first, if owed, everything (an earlier compaction's copies). Returns 0 or an errno value. */
static int sync_files(struct store_pack *p, const uint64_t *nums, size_t n, int owed)
{
    int err = 0;
    if(owed) { /* (an earlier compaction's copies may not be durable yet) */
        int dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        err = dfd < 0 || syncfs(dfd) ? errno : 0;
        if(dfd >= 0)
            close(dfd);
    }
    for(size_t i = 0; !err && i < n; i++) {
        char path[4096];
        file_path(p, nums[i], path, sizeof path);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if(fd < 0) {
            err = errno == ENOENT ? 0 : errno;
            continue;
        }
        while((err = fdatasync(fd) ? errno : 0) == EINTR)
            ;
        close(fd);
    }
    return err;
}

int store_pack_sparse(struct store_pack *p)
{
    pthread_mutex_lock(&p->lock);
    int sparse = sparse_file(p) != NULL;
    pthread_mutex_unlock(&p->lock);
    return sparse;
}

int64_t store_pack_compact(struct store_pack *p, store_pack_moved_fn fn, void *arg)
{
    pthread_mutex_lock(&p->lock);
    struct pfile *f = sparse_file(p);
    if(!f) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    /* the slugs of its live records (each is looked up again when its turn comes: it may be
     * removed meanwhile) */
    char(*slugs)[DAPI_SLUG_MAX] = f->live ? malloc(f->live * sizeof *slugs) : NULL;
    size_t n = 0;
    for(struct ent *e = f->ents; slugs && e && n < f->live; e = e->fnext, p->visits++)
        memcpy(slugs[n++], e->slug, sizeof e->slug);
    if(f->live && !slugs) {
        pthread_mutex_unlock(&p->lock);
        return -ENOMEM;
    }
    f->compacting = 1;
    uint64_t freed = f->size;
    char path[4096];
    file_path(p, f->n, path, sizeof path);
    pthread_mutex_unlock(&p->lock);

    int src = n ? open(path, O_RDONLY | O_CLOEXEC) : -1, err = n && src < 0 ? errno : 0;
    uint64_t nums[8]; /* the files the copies went to (more than 8: the file system is synced) */
    size_t nnums = 0;
    for(size_t i = 0; !err && i < n; i++) {
        pthread_mutex_lock(&p->lock);
        struct ent *e = *find(p, slugs[i]);
        struct dapi_result *mapped = NULL;
        int moved = e && e->file == f && !(err = rec_move(p, e, src));
        if(moved) {
            mapped = map_result(e, p->fd);
            size_t k = 0;
            while(k < nnums && nums[k] != e->file->n)
                k++;
            if(k == nnums && nnums < sizeof nums / sizeof *nums)
                nums[nnums++] = e->file->n;
            else if(k == nnums)
                p->owed = 1;
        }
        pthread_mutex_unlock(&p->lock);
        if(moved && fn)
            fn(arg, slugs[i], mapped);
        else
            dapi_result_close(mapped);
    }
    if(src >= 0)
        close(src);
    free(slugs);
    /* The copies durable first, then the file goes: a crash in between finds both, and the
     * later record of each slug wins. */
    pthread_mutex_lock(&p->lock);
    int owed = p->owed;
    pthread_mutex_unlock(&p->lock);
    if(!err)
        err = sync_files(p, nums, nnums, owed);
    pthread_mutex_lock(&p->lock);
    f->compacting = 0;
    if(err) {
        p->owed = 1; /* (the copies stand: the file is deleted by a later compaction) */
    } else {
        p->owed = 0;
        f->live++;
        file_drop(p, f);
    }
    pthread_mutex_unlock(&p->lock);
    return err ? -(int64_t)err : (int64_t)freed;
}
