#include "store/result.h"

#include <errno.h>
#include <fcntl.h>
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
    char error[256];
    int finished;
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
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* read: checksum */
    if(w->fd < 0) {
        enum dapi_err result = write_error(w, "create the result file", errno);
        dapi_result_writer_free(w);
        return result;
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
    return DAPI_OK;
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

static enum dapi_err sink_begin(void *ctx, size_t ncols, const char *const *names)
{
    struct dapi_result_writer *w = ctx;
    enum dapi_err result = DAPI_OK;
    char **uniq = calloc(ncols ? ncols : 1, sizeof *uniq);
    w->keys = calloc(ncols ? ncols : 1, sizeof *w->keys);
    w->key_lens = calloc(ncols ? ncols : 1, sizeof *w->key_lens);
    if(!uniq || !w->keys || !w->key_lens) {
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
    for(size_t i = 0; uniq && i < ncols; i++)
        free(uniq[i]);
    free(uniq);
    return result;
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
        if(w->rows % DAPI_PAGE_ROWS == 0 && (result = push_index(w, total)))
            return result;
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

/* The file's checksum: a 64-bit hash of its bytes with the checksum field (header bytes
 * 56..63) taken as zero. Not cryptographic: it catches blocks a crash left zeroed or stale.
 * Four independent lanes of 8-byte words keep it at memory speed. */
struct sum {
    uint64_t lane[4], len;
    unsigned char tail[32];
    size_t ntail;
};

#define SUM_P1 0x9E3779B97F4A7C15ull
#define SUM_P2 0xC2B2AE3D27D4EB4Full

static uint64_t sum_mix(uint64_t h, uint64_t v)
{
    h ^= v * SUM_P2;
    h = (h << 31) | (h >> 33);
    return h * SUM_P1;
}

static void sum_init(struct sum *s)
{
    memset(s, 0, sizeof *s);
    for(int i = 0; i < 4; i++)
        s->lane[i] = SUM_P1 * (uint64_t)(i + 1);
}

static void sum_block(struct sum *s, const unsigned char *p)
{
    for(int i = 0; i < 4; i++)
        s->lane[i] = sum_mix(s->lane[i], get64(p + 8 * i));
}

static void sum_add(struct sum *s, const unsigned char *p, size_t n)
{
    s->len += n;
    while(n && s->ntail) { /* complete a partial block first */
        s->tail[s->ntail++] = *p++;
        n--;
        if(s->ntail == 32) {
            sum_block(s, s->tail);
            s->ntail = 0;
        }
    }
    for(; n >= 32; p += 32, n -= 32)
        sum_block(s, p);
    memcpy(s->tail + s->ntail, p, n);
    s->ntail += n;
}

static uint64_t sum_end(struct sum *s)
{
    uint64_t h = s->len * SUM_P2;
    for(size_t i = 0; i < s->ntail; i++)
        h = sum_mix(h, s->tail[i]);
    for(int i = 0; i < 4; i++)
        h = sum_mix(h, s->lane[i]);
    h ^= h >> 29;
    return h ? h : 1; /* 0 means "no checksum" (files written before it existed) */
}

/* The checksum of a file being finished: header h (its field still 0) and the bytes after
 * it, read back from fd (the page cache). Returns 0 or an errno value. */
static int file_sum(int fd, const unsigned char *h, uint64_t total, uint64_t *out)
{
    struct sum s;
    unsigned char buf[1 << 16];
    sum_init(&s);
    sum_add(&s, h, HEADER_LEN);
    for(uint64_t off = HEADER_LEN; off < total;) {
        size_t want = total - off < sizeof buf ? (size_t)(total - off) : sizeof buf;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return r < 0 ? errno : EIO;
        sum_add(&s, buf, (size_t)r);
        off += (uint64_t)r;
    }
    *out = sum_end(&s);
    return 0;
}

enum dapi_err dapi_result_writer_finish(struct dapi_result_writer *w, uint64_t *rows,
                                        uint64_t *pages, uint64_t *bytes)
{
    enum dapi_err result;
    if(!w->keys && (result = push_index(w, 0))) /* no begin (cannot happen) */
        return result;
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
    /* No fsync: a result can be computed again. Its checksum (the header's last 8 bytes) lets
     * the next start after an unclean stop tell a file the disk did not fully keep from a
     * whole one (dapi_result_verify; the query then runs again: docs/design.md, Durability). */
    uint64_t sum;
    int e = file_sum(w->fd, h, total, &sum);
    put64(h + 56, sum);
    ssize_t n = e ? 0 : pwrite(w->fd, h, sizeof h, 0);
    if(!e && n != (ssize_t)sizeof h)
        e = n < 0 ? errno : ENOSPC;
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

void dapi_result_writer_free(struct dapi_result_writer *w)
{
    if(!w)
        return;
    if(w->fd >= 0)
        close(w->fd);
    if(!w->finished && w->tmp)
        unlink(w->tmp);
    dapi_buf_free(&w->out);
    for(size_t i = 0; i < w->ncols; i++)
        free(w->keys[i]);
    free(w->keys);
    free(w->key_lens);
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

enum dapi_err dapi_result_verify(const struct dapi_result *r)
{
    uint64_t want = get64(r->map + 56);
    if(!want)
        return DAPI_OK; /* written before results had a checksum */
    struct sum s;
    unsigned char h[HEADER_LEN];
    memcpy(h, r->map, HEADER_LEN);
    memset(h + 56, 0, 8);
    sum_init(&s);
    sum_add(&s, h, HEADER_LEN);
    sum_add(&s, r->map + HEADER_LEN, r->len - HEADER_LEN);
    return sum_end(&s) == want ? DAPI_OK : DAPI_ERR_IO;
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
