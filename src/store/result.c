#include "store/result.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keys.h"
#include "base/buf.h"
#include "engine/render.h"

#define MAGIC "DAPIRES1"
#define HEADER_LEN 64
#define FLUSH_AT (1u << 20)

/* The pages of a result being written that readers may copy (see result.h). */
struct dapi_result_live {
    pthread_mutex_t lock; /* guards refs, ends, n, cap */
    int refs;
    int fd;                /* read-only, on the temporary file; -1: nothing is ever published */
    uint64_t *ends;        /* ends[i]: end of page i + 1's rows (page 1 starts at 0) */
    size_t n, cap;         /* pages published */
    _Atomic uint64_t want; /* a page a reader waits for (0: none); read by the writer */
};

struct dapi_result_writer {
    int fd;
    char *path, *tmp;
    struct dapi_result_limits limits;
    struct dapi_buf out; /* pending bytes */
    uint64_t written;    /* bytes of rows already written */
    uint64_t rows;
    uint64_t *index; /* page start offsets */
    size_t nindex, capindex;
    char **keys; /* pre-rendered "name": per column */
    size_t *key_lens;
    size_t ncols;
    char **names, **types; /* the columns: de-duplicated names, DuckDB's type names */
    size_t ncolumns;       /* (entries of names and types, NULL until set) */
    char error[256];
    int finished;
    int finishing; /* the last (partial) page and the index follow: nothing more to publish */
    struct dapi_result_live *live;
    void (*on_publish)(void *arg, uint64_t pages);
    void *publish_arg;
};

/* A failed write: no space (or quota) is temporary — DAPI_ERR_BUSY; the message names the
 * setting, not the path. */
static enum dapi_err write_error(struct dapi_result_writer *w, const char *what, int e)
{
    int full = e == ENOSPC || e == EDQUOT;
    snprintf(w->error, sizeof w->error, "%s %s: %s",
             full ? "no space left on the state disk (--state-dir)" : "cannot", what, strerror(e));
    return full ? DAPI_ERR_BUSY : DAPI_ERR_IO;
}

static struct dapi_result_live *live_new(const char *tmp)
{
    struct dapi_result_live *l = calloc(1, sizeof *l);
    if(!l)
        return NULL;
    pthread_mutex_init(&l->lock, NULL);
    l->refs = 1;
    /* its own descriptor: pread never races the writer's file offset, and it outlives the
     * writer's (the file renamed or unlinked) */
    l->fd = open(tmp, O_RDONLY | O_CLOEXEC);
    atomic_init(&l->want, 0);
    return l;
}

void dapi_result_live_ref(struct dapi_result_live *l)
{
    pthread_mutex_lock(&l->lock);
    l->refs++;
    pthread_mutex_unlock(&l->lock);
}

void dapi_result_live_unref(struct dapi_result_live *l)
{
    if(!l)
        return;
    pthread_mutex_lock(&l->lock);
    int last = --l->refs == 0;
    pthread_mutex_unlock(&l->lock);
    if(!last)
        return;
    if(l->fd >= 0)
        close(l->fd);
    pthread_mutex_destroy(&l->lock);
    free(l->ends);
    free(l);
}

uint64_t dapi_result_live_pages(struct dapi_result_live *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->n;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void dapi_result_live_want(struct dapi_result_live *l, uint64_t page)
{
    atomic_store(&l->want, page);
}

int dapi_result_live_page(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out)
{
    pthread_mutex_lock(&l->lock);
    if(page == 0 || page > l->n) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    uint64_t a = page == 1 ? 0 : l->ends[page - 2], b = l->ends[page - 1];
    pthread_mutex_unlock(&l->lock);
    /* A published page lies wholly in the file (publish follows a flush) and is never
     * rewritten: read without the lock. */
    size_t len = (size_t)(b - a), got = 0;
    char *p = len ? dapi_buf_reserve(out, len) : NULL;
    if(len && !p)
        return -1;
    while(got < len) {
        ssize_t r = pread(l->fd, p + got, len - got, (off_t)(HEADER_LEN + a + got));
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return -1;
        got += (size_t)r;
    }
    if(len)
        dapi_buf_commit(out, len);
    return 1;
}

struct dapi_result_live *dapi_result_writer_live(struct dapi_result_writer *w)
{
    dapi_result_live_ref(w->live);
    return w->live;
}

void dapi_result_writer_on_publish(struct dapi_result_writer *w,
                                   void (*cb)(void *arg, uint64_t pages), void *arg)
{
    w->on_publish = cb;
    w->publish_arg = arg;
}

/* Makes the complete pages, all flushed to the file by now, readable; tells on_publish. */
static enum dapi_err publish(struct dapi_result_writer *w)
{
    struct dapi_result_live *l = w->live;
    size_t complete = w->nindex ? w->nindex - 1 : 0;
    if(l->fd < 0 || complete <= l->n)
        return DAPI_OK;
    pthread_mutex_lock(&l->lock);
    if(complete > l->cap) {
        size_t cap = l->cap ? l->cap : 1024;
        while(cap < complete)
            cap *= 2;
        uint64_t *p = realloc(l->ends, cap * sizeof *p);
        if(!p) {
            pthread_mutex_unlock(&l->lock);
            return DAPI_OK; /* (not published early: served once the run is done) */
        }
        l->ends = p;
        l->cap = cap;
    }
    for(size_t i = l->n; i < complete; i++)
        l->ends[i] = w->index[i + 1];
    l->n = complete;
    pthread_mutex_unlock(&l->lock);
    if(w->on_publish)
        w->on_publish(w->publish_arg, complete);
    return DAPI_OK;
}

enum dapi_err dapi_result_writer_open(struct dapi_result_writer **out, const char *path,
                                      const struct dapi_result_limits *limits)
{
    struct dapi_result_writer *w = calloc(1, sizeof *w);
    *out = NULL;
    if(!w)
        return DAPI_ERR_NOMEM;
    w->fd = -1;
    w->limits = *limits;
    /* A unique temporary name: two writers of the same result never share a file. */
    char suffix[13];
    size_t n = strlen(path) + 6 + sizeof suffix;
    w->path = strdup(path);
    w->tmp = malloc(n);
    if(!w->path || !w->tmp || dapi_random_base62(suffix, 12)) {
        dapi_result_writer_free(w);
        return DAPI_ERR_NOMEM;
    }
    snprintf(w->tmp, n, "%s.tmp-%s", path, suffix);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(w->fd < 0) {
        enum dapi_err result = write_error(w, "create the result file", errno);
        dapi_result_writer_free(w);
        return result;
    }
    if(!(w->live = live_new(w->tmp))) {
        dapi_result_writer_free(w);
        return DAPI_ERR_NOMEM;
    }
    /* 64 MiB of pending output at most; flushed at 1 MiB. */
    dapi_buf_init(&w->out, 64u << 20);
    char zero[HEADER_LEN] = {0};
    ssize_t wrote = write(w->fd, zero, sizeof zero);
    if(wrote != (ssize_t)sizeof zero) {
        enum dapi_err result = write_error(w, "write the result", wrote < 0 ? errno : ENOSPC);
        dapi_result_writer_free(w);
        return result;
    }
    *out = w;
    return DAPI_OK;
}

static enum dapi_err flush(struct dapi_result_writer *w)
{
    const char *p = w->out.data;
    size_t n = w->out.len;
    while(n) {
        ssize_t r = write(w->fd, p, n);
        if(r <= 0) {
            if(r < 0 && errno == EINTR)
                continue;
            return write_error(w, "write the result", r < 0 ? errno : ENOSPC);
        }
        p += r;
        n -= (size_t)r;
    }
    w->written += w->out.len;
    dapi_buf_reset(&w->out);
    return w->finishing ? DAPI_OK : publish(w);
}

static enum dapi_err push_index(struct dapi_result_writer *w, uint64_t off)
{
    if(w->nindex == w->capindex) {
        size_t cap = w->capindex ? w->capindex * 2 : 1024;
        uint64_t *p = realloc(w->index, cap * sizeof *p);
        if(!p)
            return DAPI_ERR_NOMEM;
        w->index = p;
        w->capindex = cap;
    }
    w->index[w->nindex++] = off;
    return DAPI_OK;
}

/* Is name already taken by one of the first n (deduplicated) names? */
static int taken(char *const *names, size_t n, const char *name)
{
    for(size_t j = 0; j < n; j++)
        if(strcmp(names[j], name) == 0)
            return 1;
    return 0;
}

static enum dapi_err sink_begin(void *ctx, size_t ncols, const char *const *names,
                                const char *const *types)
{
    struct dapi_result_writer *w = ctx;
    enum dapi_err result = DAPI_OK;
    char **uniq = calloc(ncols ? ncols : 1, sizeof *uniq);
    w->types = calloc(ncols ? ncols : 1, sizeof *w->types);
    w->ncolumns = ncols;
    for(size_t i = 0; w->types && i < ncols && !result; i++)
        if(!(w->types[i] = strdup(types && types[i] ? types[i] : "")))
            result = DAPI_ERR_NOMEM;
    w->keys = calloc(ncols ? ncols : 1, sizeof *w->keys);
    w->key_lens = calloc(ncols ? ncols : 1, sizeof *w->key_lens);
    if(!uniq || !w->types || !w->keys || !w->key_lens || result) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    w->ncols = ncols;
    for(size_t i = 0; i < ncols && !result; i++) {
        /* Duplicate column names (SELECT 1 AS a, 2 AS a) would make ambiguous JSON objects:
         * later ones get a _2, _3 … suffix. */
        struct dapi_buf name;
        dapi_buf_init(&name, 1 << 20);
        dapi_buf_adds(&name, names[i]);
        for(unsigned dup = 2; name.data && taken(uniq, i, name.data); dup++) {
            dapi_buf_reset(&name);
            dapi_buf_addf(&name, "%s_%u", names[i], dup);
        }
        if(!name.data) {
            result = DAPI_ERR_NOMEM;
            break;
        }
        struct dapi_buf key;
        dapi_buf_init(&key, 1 << 20);
        result = dapi_render_key(&key, name.data, name.len);
        if(result == DAPI_ERR_TOO_LARGE) /* e.g. an expression's text as its name */
            snprintf(w->error, sizeof w->error,
                     "column %zu's name takes more than 1 MiB as JSON (%zu bytes of text): "
                     "name it with AS",
                     i + 1, name.len);
        uniq[i] = dapi_buf_take(&name, NULL);
        if(!result && !(w->keys[i] = dapi_buf_take(&key, &w->key_lens[i])))
            result = DAPI_ERR_NOMEM;
        if(!uniq[i])
            result = DAPI_ERR_NOMEM;
    }
    if(!result)
        result = push_index(w, 0);
out:
    w->names = uniq; /* kept: the columns of the result (dapi_result_writer_columns) */
    return result;
}

/* A page just completed: publish it now (rather than at the next 1 MiB flush) when it is
 * page 1 — what `| head` waits for, one extra write per result — or a page a reader waits
 * for. Other pages are published at the periodic flushes: a write per page would cost every
 * large result thousands of system calls nobody asked for. */
static int page_wanted(struct dapi_result_writer *w)
{
    uint64_t complete = w->nindex - 1, want = atomic_load(&w->live->want);
    return complete == 1 || (want > w->live->n && want <= complete);
}

static enum dapi_err sink_chunk(void *ctx, const struct dapi_colvec *cols, size_t ncols,
                                uint64_t nrows)
{
    struct dapi_result_writer *w = ctx;
    enum dapi_err result;
    for(uint64_t r = 0; r < nrows; r++) {
        if(w->rows >= w->limits.max_rows) {
            snprintf(w->error, sizeof w->error,
                     "the result has more than %llu rows (--max-result-rows)",
                     (unsigned long long)w->limits.max_rows);
            return DAPI_ERR_TOO_LARGE;
        }
        if(w->rows % DAPI_PAGE_ROWS != 0 && (result = dapi_buf_addc(&w->out, ',')))
            return result;
        if((result = dapi_render_row(&w->out, cols, ncols, (const char *const *)w->keys,
                                     w->key_lens, r)))
            return result;
        w->rows++;
        uint64_t total = w->written + w->out.len;
        if(total > w->limits.max_bytes) {
            snprintf(w->error, sizeof w->error, "the result is larger than %llu bytes (%s)",
                     (unsigned long long)w->limits.max_bytes,
                     w->limits.bytes_setting ? w->limits.bytes_setting : "--max-result-bytes");
            return DAPI_ERR_TOO_LARGE;
        }
        if(w->rows % DAPI_PAGE_ROWS == 0) {
            if((result = push_index(w, total)))
                return result;
            if(page_wanted(w) && (result = flush(w))) /* (flush publishes) */
                return result;
        }
        if(w->out.len >= FLUSH_AT && (result = flush(w)))
            return result;
    }
    return DAPI_OK;
}

const struct dapi_sink dapi_result_sink = {sink_begin, sink_chunk};

static void put64(unsigned char *p, uint64_t v)
{
    for(int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for(int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

enum dapi_err dapi_result_writer_finish(struct dapi_result_writer *w, uint64_t *rows,
                                        uint64_t *pages, uint64_t *bytes)
{
    enum dapi_err result;
    if(!w->keys && (result = push_index(w, 0))) /* no begin (cannot happen) */
        return result;
    w->finishing = 1;
    if((result = flush(w)))
        return result;
    uint64_t rows_len = w->written;
    if(w->rows % DAPI_PAGE_ROWS != 0 && (result = push_index(w, rows_len)))
        return result;
    uint64_t npages = w->nindex - 1;
    /* index entries, little-endian */
    for(size_t i = 0; i < w->nindex; i++) {
        unsigned char b[8];
        put64(b, w->index[i]);
        if((result = dapi_buf_add(&w->out, b, 8)))
            return result;
        if(w->out.len >= FLUSH_AT && (result = flush(w)))
            return result;
    }
    if((result = flush(w)))
        return result;
    uint64_t index_off = HEADER_LEN + rows_len, total = index_off + 8 * w->nindex;
    unsigned char h[HEADER_LEN] = {0};
    memcpy(h, MAGIC, 8);
    put64(h + 8, w->rows);
    put64(h + 16, npages);
    put64(h + 24, HEADER_LEN);
    put64(h + 32, rows_len);
    put64(h + 40, index_off);
    put64(h + 48, total);
    int e = 0;
    ssize_t n = pwrite(w->fd, h, sizeof h, 0);
    if(n != (ssize_t)sizeof h)
        e = n < 0 ? errno : ENOSPC;
    else if(fsync(w->fd))
        e = errno;
    if(close(w->fd) && !e) /* (close releases the descriptor even when it fails) */
        e = errno;
    w->fd = -1;
    if(e)
        return write_error(w, "finish the result", e);
    if(rename(w->tmp, w->path)) {
        snprintf(w->error, sizeof w->error, "cannot publish result: %s", strerror(errno));
        return DAPI_ERR_IO;
    }
    w->finished = 1;
    *rows = w->rows;
    *pages = npages;
    *bytes = total;
    return DAPI_OK;
}

const char *dapi_result_writer_error(const struct dapi_result_writer *w)
{
    return w->error[0] ? w->error : NULL;
}

int dapi_result_writer_columns(const struct dapi_result_writer *w, size_t *n,
                               const char *const **names, const char *const **types)
{
    if(!w->names || !w->types)
        return -1;
    *n = w->ncolumns;
    *names = (const char *const *)w->names;
    *types = (const char *const *)w->types;
    return 0;
}

void dapi_result_writer_free(struct dapi_result_writer *w)
{
    if(!w)
        return;
    dapi_result_live_unref(w->live);
    if(w->fd >= 0)
        close(w->fd);
    if(!w->finished && w->tmp)
        unlink(w->tmp);
    dapi_buf_free(&w->out);
    for(size_t i = 0; i < w->ncols; i++)
        free(w->keys[i]);
    free(w->keys);
    free(w->key_lens);
    for(size_t i = 0; i < w->ncolumns; i++) {
        if(w->names)
            free(w->names[i]);
        if(w->types)
            free(w->types[i]);
    }
    free(w->names);
    free(w->types);
    free(w->index);
    free(w->path);
    free(w->tmp);
    free(w);
}

struct dapi_result {
    const unsigned char *map;
    size_t len;
    uint64_t rows, pages;
    const char *data;
    const unsigned char *index;
};

enum dapi_err dapi_result_open(struct dapi_result **out, const char *path)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd < 0)
        return DAPI_ERR_IO;
    struct stat st;
    if(fstat(fd, &st) || st.st_size < HEADER_LEN) {
        close(fd);
        return DAPI_ERR_IO;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if(map == MAP_FAILED)
        return DAPI_ERR_IO;
    const unsigned char *h = map;
    uint64_t size = (uint64_t)st.st_size, rows = get64(h + 8), pages = get64(h + 16),
             rows_off = get64(h + 24), rows_len = get64(h + 32), index_off = get64(h + 40),
             total = get64(h + 48);
    /* Every offset is checked so a damaged file can never make us read out of bounds. */
    int ok = memcmp(h, MAGIC, 8) == 0 && total == size && rows_off == HEADER_LEN &&
             rows_len <= size - HEADER_LEN && index_off == rows_off + rows_len &&
             pages < size / 8 && index_off + 8 * (pages + 1) == size &&
             pages == rows / DAPI_PAGE_ROWS + (rows % DAPI_PAGE_ROWS != 0);
    for(uint64_t i = 0; ok && i <= pages; i++) {
        uint64_t off = get64(h + index_off + 8 * i);
        ok = off <= rows_len && (i == 0 ? off == 0 : off >= get64(h + index_off + 8 * (i - 1)));
    }
    struct dapi_result *r = ok ? calloc(1, sizeof *r) : NULL;
    if(!r) {
        munmap(map, (size_t)st.st_size);
        return ok ? DAPI_ERR_NOMEM : DAPI_ERR_IO;
    }
    r->map = map;
    r->len = (size_t)st.st_size;
    r->rows = rows;
    r->pages = pages;
    r->data = (const char *)h + rows_off;
    r->index = h + index_off;
    *out = r;
    return DAPI_OK;
}

void dapi_result_close(struct dapi_result *r)
{
    if(!r)
        return;
    munmap((void *)r->map, r->len);
    free(r);
}

uint64_t dapi_result_pages(const struct dapi_result *r)
{
    return r->pages;
}

uint64_t dapi_result_rows(const struct dapi_result *r)
{
    return r->rows;
}

void dapi_result_page(const struct dapi_result *r, uint64_t page, const char **data, size_t *len)
{
    if(page == 0 || page > r->pages) {
        *data = "";
        *len = 0;
        return;
    }
    uint64_t a = get64(r->index + 8 * (page - 1)), b = get64(r->index + 8 * page);
    *data = r->data + a;
    *len = (size_t)(b - a);
}
