#include "store/result.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/keys.h"
#include "base/buf.h"
#include "base/clock.h"
#include "engine/render.h"
#include "store/bytes.h"
#include "store/codec.h"

#define MAGIC1 "DAPIRES1"
#define MAGIC "DAPIRES2"
#define HEADER_LEN 64
#define FLUSH_AT (1u << 20)
/* A page decodes to at most this many times its frame's size: far above what zstd reaches
 * (about 32,768 for a block of one repeated byte), so only a damaged length exceeds it. */
#define MAX_RATIO 65536

/* The pages of a result being written that readers may copy (see result.h). */
struct dapi_result_live {
    pthread_mutex_t lock; /* guards refs, ends, n, cap, closed */
    pthread_cond_t more;  /* broadcast when pages are published or the writer is done */
    int refs;
    int closed;     /* the writer is done with it: nothing more will be published */
    int fd;         /* read-only, on the temporary file; -1: none (yet), nothing published */
    uint64_t *ends; /* ends[i]: end of page i + 1's frame (page 1 starts at 0) */
    uint64_t *lens; /* lens[i]: what page i + 1's frame decodes to */
    size_t n, cap;  /* pages published */
    _Atomic uint64_t want; /* a page a reader waits for (0: none); read by the writer */
    /* While a reader streams the pages (dapi_result_live_stream), the writer also keeps the
     * rows of its latest complete pages here, as rendered, with where each row ends: such a
     * reader copies them instead of reading and decoding the file, and needs not look for
     * the rows' boundaries. Bounded: RECENT_PAGES pages, RECENT_BYTES bytes. */
    _Atomic int streaming;
    struct recent *recent; /* RECENT_PAGES slots; page p in slot p % RECENT_PAGES */
    size_t recent_bytes;
};

#define RECENT_PAGES 256
#define RECENT_BYTES (8u << 20)

struct recent {
    uint64_t page; /* 0: empty */
    char *rows;
    size_t len, cap;
    uint32_t seps[DAPI_PAGE_ROWS]; /* offsets of the ',' between rows */
    size_t nseps;
};

/* Pages handed from the writing thread (rendering) to a compressing thread: zstd takes about
 * half of a large run's writing thread, so the two overlap (docs/design.md, Export). A
 * bounded queue: the renderer waits when PIPE_SLOTS pieces wait, so memory stays bounded. */
#define PIPE_SLOTS 8
#define PIPE_AFTER 16 /* pages written inline first: small results start no thread */

struct pipe_item {
    struct dapi_buf rows;
    int end; /* the page ends with these rows */
};

struct pipe {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t more, room;
    struct pipe_item items[PIPE_SLOTS];
    size_t head, count;
    int draining;      /* nothing more will come: finish what waits, then end */
    int stop;          /* end now (the writer is freed without finishing) */
    enum dapi_err err; /* the compressing side failed (it stops then) */
    char error[256];   /* its message (written before err is set, never after) */
};

struct dapi_result_writer {
    int fd; /* the temporary file, made at the first flush (-1: not yet) */
    char *path, *tmp;
    size_t small_max;      /* a result of at most this many bytes never flushed stays here: */
    struct dapi_buf small; /* its image, once finished (dapi_result_writer_small) */
    struct dapi_result_limits limits;
    struct dapi_zenc *z;
    struct dapi_buf page;          /* the current page's rows (not yet compressed) */
    uint32_t seps[DAPI_PAGE_ROWS]; /* where the current page's rows end (its ','s), while
                                      the whole page is in `page` (for keep_recent) */
    uint64_t page_fed;      /* rows' bytes of the current page already given to the encoder */
    uint64_t plain;         /* rows' bytes of the pages before the current one */
    uint64_t plain_flushed; /* `plain` at the last flush */
    struct dapi_buf out;    /* pending compressed bytes */
    uint64_t written;       /* compressed bytes already written */
    uint64_t rows;
    uint64_t *index; /* page start offsets (compressed) */
    uint64_t *lens;  /* pages' decoded lengths (nindex - 1 of them) */
    size_t nindex, capindex;
    char **keys; /* pre-rendered "name": per column */
    size_t *key_lens;
    size_t ncols;
    char **names, **types; /* the columns: de-duplicated names, DuckDB's type names */
    size_t ncolumns;       /* (entries of names and types, NULL until set) */
    char error[256];
    int finished;
    atomic_int finishing; /* the last (partial) page and the index follow: nothing more to
                             publish (read by the pipe's thread too) */
    /* The writing thread's own counts (the compressing side may be another thread): */
    uint64_t taken;      /* rows' bytes handed to compression (limits count them) */
    uint64_t piece;      /* of the current page, handed in pieces (a page past 1 MiB) */
    uint64_t pages_done; /* complete pages */
    char *etext;         /* where the compressing side writes its error: error, or pipe's */
    struct pipe *pipe;   /* compression on a thread of its own, once the result is large */
    struct dapi_result_live *live;
    void (*on_publish)(void *arg, uint64_t pages);
    void *publish_arg;
};

/* A failed write: no space (or quota) is temporary — DAPI_ERR_BUSY; the message names the
 * setting, not the path. */
static enum dapi_err write_error(struct dapi_result_writer *w, const char *what, int e)
{
    int full = e == ENOSPC || e == EDQUOT;
    snprintf(w->etext, sizeof w->error, "%s %s: %s",
             full ? "no space left on the state disk (--state-dir)" : "cannot", what, strerror(e));
    return full ? DAPI_ERR_BUSY : DAPI_ERR_IO;
}

static struct dapi_result_live *live_new(void)
{
    struct dapi_result_live *l = calloc(1, sizeof *l);
    if(!l)
        return NULL;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->more, NULL);
    l->refs = 1;
    l->fd = -1; /* (set when the writer makes its file: nothing is published before) */
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
    for(size_t i = 0; l->recent && i < RECENT_PAGES; i++)
        free(l->recent[i].rows);
    free(l->recent);
    pthread_cond_destroy(&l->more);
    pthread_mutex_destroy(&l->lock);
    free(l->ends);
    free(l->lens);
    free(l);
}

uint64_t dapi_result_live_pages(struct dapi_result_live *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->n;
    pthread_mutex_unlock(&l->lock);
    return n;
}

uint64_t dapi_result_live_wait(struct dapi_result_live *l, uint64_t have, int64_t timeout_ms,
                               int *closed)
{
    struct timespec until = dapi_clock_after(0, timeout_ms);
    pthread_mutex_lock(&l->lock);
    while(l->n <= have && !l->closed && timeout_ms > 0 &&
          pthread_cond_timedwait(&l->more, &l->lock, &until) == 0)
        ;
    uint64_t n = l->n;
    *closed = l->closed;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void dapi_result_live_stream(struct dapi_result_live *l)
{
    atomic_store(&l->streaming, 1);
}

int dapi_result_live_rows(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out,
                          uint32_t *seps, size_t *nseps)
{
    *nseps = 0;
    pthread_mutex_lock(&l->lock);
    struct recent *r = l->recent && page ? &l->recent[page % RECENT_PAGES] : NULL;
    if(page > 0 && page <= l->n && r && r->page == page) {
        char *p = dapi_buf_reserve(out, r->len + 1);
        if(p) {
            memcpy(p, r->rows, r->len);
            dapi_buf_commit(out, r->len);
            memcpy(seps, r->seps, r->nseps * sizeof *seps);
            *nseps = r->nseps;
        }
        pthread_mutex_unlock(&l->lock);
        return p ? 1 : -1;
    }
    pthread_mutex_unlock(&l->lock);
    return dapi_result_live_page(l, page, out);
}

/* Keeps the rows of the page just completed (rows, len; seps: where rows end) for a streaming
 * reader. Best effort: without memory the reader reads the file. */
static void keep_recent(struct dapi_result_live *l, uint64_t page, const char *rows, size_t len,
                        const uint32_t *seps, size_t nseps)
{
    pthread_mutex_lock(&l->lock);
    if(!l->recent && !(l->recent = calloc(RECENT_PAGES, sizeof *l->recent))) {
        pthread_mutex_unlock(&l->lock);
        return;
    }
    struct recent *r = &l->recent[page % RECENT_PAGES];
    l->recent_bytes -= r->page ? r->len : 0;
    r->page = 0;
    /* the oldest pages go first when the bytes are over budget */
    for(uint64_t old = page > RECENT_PAGES ? page - RECENT_PAGES + 1 : 1;
        l->recent_bytes + len > RECENT_BYTES && old < page; old++) {
        struct recent *o = &l->recent[old % RECENT_PAGES];
        if(o->page == old) {
            l->recent_bytes -= o->len;
            o->page = 0;
        }
    }
    if(len <= RECENT_BYTES && r->cap < len) {
        char *grown = realloc(r->rows, len);
        if(grown) {
            r->rows = grown;
            r->cap = len;
        }
    }
    if(r->cap >= len && len <= RECENT_BYTES) {
        memcpy(r->rows, rows, len);
        memcpy(r->seps, seps, nseps * sizeof *seps);
        r->len = len;
        r->nseps = nseps;
        r->page = page;
        l->recent_bytes += len;
    }
    pthread_mutex_unlock(&l->lock);
}

/* The writer is done (finished, failed or stopped): waiters stop waiting for pages. */
static void live_close(struct dapi_result_live *l)
{
    pthread_mutex_lock(&l->lock);
    l->closed = 1;
    pthread_cond_broadcast(&l->more);
    pthread_mutex_unlock(&l->lock);
}

void dapi_result_live_want(struct dapi_result_live *l, uint64_t page)
{
    atomic_store(&l->want, page);
}

uint64_t dapi_result_live_page_size(struct dapi_result_live *l, uint64_t page)
{
    pthread_mutex_lock(&l->lock);
    uint64_t d = page > 0 && page <= l->n ? l->lens[page - 1] : 0;
    pthread_mutex_unlock(&l->lock);
    return d;
}

int dapi_result_live_page(struct dapi_result_live *l, uint64_t page, struct dapi_buf *out)
{
    pthread_mutex_lock(&l->lock);
    if(page == 0 || page > l->n) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    uint64_t a = page == 1 ? 0 : l->ends[page - 2], b = l->ends[page - 1], d = l->lens[page - 1];
    pthread_mutex_unlock(&l->lock);
    if(d >= DAPI_PAGE_STREAM_MIN)
        return -1;
    /* A published page's frame lies wholly in the file (publish follows a flush) and is never
     * rewritten: read without the lock, then decoded into out. */
    size_t len = (size_t)(b - a), got = 0;
    char *frame = malloc(len ? len : 1), *p = frame ? dapi_buf_reserve(out, (size_t)d + 1) : NULL;
    int ok = p != NULL;
    while(ok && got < len) {
        ssize_t r = pread(l->fd, frame + got, len - got, (off_t)(HEADER_LEN + a + got));
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            ok = 0;
        else
            got += (size_t)r;
    }
    if(ok && dapi_zframe_decode(frame, len, p, (size_t)d))
        ok = 0;
    free(frame);
    if(!ok)
        return -1;
    dapi_buf_commit(out, (size_t)d);
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
        if(p)
            l->ends = p;
        uint64_t *q = p ? realloc(l->lens, cap * sizeof *q) : NULL;
        if(!q) {
            pthread_mutex_unlock(&l->lock);
            return DAPI_OK; /* (not published early: served once the run is done) */
        }
        l->lens = q;
        l->cap = cap;
    }
    for(size_t i = l->n; i < complete; i++)
        l->ends[i] = w->index[i + 1], l->lens[i] = w->lens[i];
    l->n = complete;
    pthread_cond_broadcast(&l->more);
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
    w->etext = w->error;
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
    if(!(w->live = live_new())) {
        dapi_result_writer_free(w);
        return DAPI_ERR_NOMEM;
    }
    /* 64 MiB of pending output at most; flushed at 1 MiB. A page's rows are given to the
     * encoder at 1 MiB too, so a page of long rows needs no more memory than one row. */
    dapi_buf_init(&w->out, 64u << 20);
    dapi_buf_init(&w->page, 64u << 20);
    enum dapi_err zr = dapi_zenc_new(&w->z, DAPI_ZSTD_LEVEL);
    if(zr) {
        dapi_result_writer_free(w);
        return zr;
    }
    *out = w;
    return DAPI_OK;
}

void dapi_result_writer_keep_small(struct dapi_result_writer *w, size_t max)
{
    w->small_max = max;
}

/* Makes the temporary file (and its directory if missing), with room for the header, and
 * gives the live result its own descriptor on it: pread never races the writer's file
 * offset, and it outlives the writer's (the file renamed or unlinked). */
static enum dapi_err file_make(struct dapi_result_writer *w)
{
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if(w->fd < 0 && errno == ENOENT) {
        char *slash = strrchr(w->tmp, '/');
        if(slash) {
            *slash = '\0';
            int made = mkdir(w->tmp, 0700) == 0 || errno == EEXIST;
            *slash = '/';
            if(made)
                w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        }
    }
    if(w->fd < 0)
        return write_error(w, "create the result file", errno);
    char zero[HEADER_LEN] = {0};
    ssize_t wrote = write(w->fd, zero, sizeof zero);
    if(wrote != (ssize_t)sizeof zero)
        return write_error(w, "write the result", wrote < 0 ? errno : ENOSPC);
    int fd = open(w->tmp, O_RDONLY | O_CLOEXEC);
    pthread_mutex_lock(&w->live->lock);
    w->live->fd = fd;
    pthread_mutex_unlock(&w->live->lock);
    return DAPI_OK;
}

static enum dapi_err flush(struct dapi_result_writer *w)
{
    enum dapi_err made;
    if(w->fd < 0 && (made = file_make(w)))
        return made;
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
    w->plain_flushed = w->plain;
    dapi_buf_reset(&w->out);
    return w->finishing ? DAPI_OK : publish(w);
}

/* Records where a page ends (off, in the compressed data) and, but for the first entry
 * (0, where page 1 starts), the decoded length of the page ending there. */
static enum dapi_err push_index(struct dapi_result_writer *w, uint64_t off, uint64_t decoded)
{
    if(w->nindex == w->capindex) {
        size_t cap = w->capindex ? w->capindex * 2 : 1024;
        uint64_t *p = realloc(w->index, cap * sizeof *p);
        if(!p)
            return DAPI_ERR_NOMEM;
        w->index = p;
        uint64_t *l = realloc(w->lens, cap * sizeof *l);
        if(!l)
            return DAPI_ERR_NOMEM;
        w->lens = l;
        w->capindex = cap;
    }
    if(w->nindex)
        w->lens[w->nindex - 1] = decoded;
    w->index[w->nindex++] = off;
    return DAPI_OK;
}

static int page_wanted(struct dapi_result_writer *w);

/* The compressing side (the writing thread itself, or the pipe's): n bytes of rows of the
 * current page to the encoder; end: the page is complete — one zstd frame, the index records
 * where it ends and its decoded length, and it is written and published when due. Everything
 * about a page being done happens here. */
static enum dapi_err compress_piece(struct dapi_result_writer *w, const char *p, size_t n, int end)
{
    enum dapi_err result = dapi_zenc_put(w->z, p ? p : "", n, end, &w->out);
    if(result == DAPI_ERR_INTERNAL)
        snprintf(w->etext, sizeof w->error, "cannot compress the result (zstd failed)");
    if(result)
        return result;
    w->page_fed += n;
    if(end) {
        uint64_t decoded = w->page_fed;
        w->plain += decoded;
        w->page_fed = 0;
        if((result = push_index(w, w->written + w->out.len, decoded)))
            return result;
        if(!w->finishing && page_wanted(w) && (result = flush(w))) /* (flush publishes) */
            return result;
    }
    /* Flushed (and so published) every 1 MiB of rows' JSON, as when rows were stored as
     * text: pages reach readers as often as before, in writes of ~1/9 the size. */
    if(!w->finishing && (w->out.len >= FLUSH_AT || w->plain - w->plain_flushed >= FLUSH_AT))
        result = flush(w);
    return result;
}

/* The pipe's thread: compresses what the writer hands over, in order, until drained. */
static void *pipe_main(void *arg)
{
    struct dapi_result_writer *w = arg;
    struct pipe *pp = w->pipe;
    pthread_mutex_lock(&pp->mu);
    for(;;) {
        while(!pp->count && !pp->draining && !pp->stop)
            pthread_cond_wait(&pp->more, &pp->mu);
        if(pp->stop || !pp->count)
            break;
        struct pipe_item *it = &pp->items[pp->head];
        pthread_mutex_unlock(&pp->mu);
        enum dapi_err result = compress_piece(w, it->rows.data, it->rows.len, it->end);
        pthread_mutex_lock(&pp->mu);
        dapi_buf_reset(&it->rows);
        pp->head = (pp->head + 1) % PIPE_SLOTS;
        pp->count--;
        pthread_cond_signal(&pp->room);
        if(result) {
            pp->err = result; /* (its message is in pp->error already) */
            break;
        }
    }
    pthread_cond_broadcast(&pp->room);
    pthread_mutex_unlock(&pp->mu);
    return NULL;
}

/* Starts the pipe (at a page boundary: the encoder holds no partial frame). Without a thread
 * or memory the writer just goes on compressing itself. */
static void pipe_start(struct dapi_result_writer *w)
{
    struct pipe *pp = calloc(1, sizeof *pp);
    if(!pp)
        return;
    pthread_mutex_init(&pp->mu, NULL);
    pthread_cond_init(&pp->more, NULL);
    pthread_cond_init(&pp->room, NULL);
    for(size_t i = 0; i < PIPE_SLOTS; i++)
        dapi_buf_init(&pp->items[i].rows, 64u << 20);
    w->pipe = pp;
    w->etext = pp->error;
    if(pthread_create(&pp->thread, NULL, pipe_main, w)) {
        w->pipe = NULL;
        w->etext = w->error;
        pthread_cond_destroy(&pp->room);
        pthread_cond_destroy(&pp->more);
        pthread_mutex_destroy(&pp->mu);
        free(pp);
    }
}

/* Ends the pipe: drained (everything handed over is compressed) or stopped; joins its thread.
 * Returns its error (its message then in w->error). Afterwards the writer compresses itself. */
static enum dapi_err pipe_end(struct dapi_result_writer *w, int drain)
{
    struct pipe *pp = w->pipe;
    if(!pp)
        return DAPI_OK;
    pthread_mutex_lock(&pp->mu);
    if(drain)
        pp->draining = 1;
    else
        pp->stop = 1;
    pthread_cond_broadcast(&pp->more);
    pthread_mutex_unlock(&pp->mu);
    pthread_join(pp->thread, NULL);
    enum dapi_err result = pp->err;
    if(result && !w->error[0])
        snprintf(w->error, sizeof w->error, "%s", pp->error);
    for(size_t i = 0; i < PIPE_SLOTS; i++)
        dapi_buf_free(&pp->items[i].rows);
    pthread_cond_destroy(&pp->room);
    pthread_cond_destroy(&pp->more);
    pthread_mutex_destroy(&pp->mu);
    free(pp);
    w->pipe = NULL;
    w->etext = w->error;
    return result;
}

/* The writing side: the current page's pending rows go to compression (to the pipe, which
 * takes the buffer and gives an empty one back, or compressed here); end: the page is
 * complete. */
static enum dapi_err hand_over(struct dapi_result_writer *w, int end)
{
    w->taken += w->page.len;
    w->piece = end ? 0 : w->piece + w->page.len;
    struct pipe *pp = w->pipe;
    if(!pp) {
        enum dapi_err result = compress_piece(w, w->page.data, w->page.len, end);
        dapi_buf_reset(&w->page);
        return result;
    }
    pthread_mutex_lock(&pp->mu);
    while(pp->count == PIPE_SLOTS && !pp->err)
        pthread_cond_wait(&pp->room, &pp->mu);
    enum dapi_err result = pp->err;
    if(!result) {
        struct pipe_item *it = &pp->items[(pp->head + pp->count) % PIPE_SLOTS];
        struct dapi_buf empty = it->rows; /* (reset by the pipe: its memory is reused) */
        it->rows = w->page;
        it->end = end;
        w->page = empty;
        pp->count++;
        pthread_cond_signal(&pp->more);
    }
    pthread_mutex_unlock(&pp->mu);
    if(result) { /* its message for dapi_result_writer_error: the pipe has stopped */
        dapi_buf_reset(&w->page);
        pipe_end(w, 0);
    }
    return result;
}

/* A page's last row was written. A streaming reader gets it from memory (a page of more than
 * 1 MiB, handed over in pieces, is read from the file). */
static enum dapi_err page_complete(struct dapi_result_writer *w)
{
    w->pages_done++;
    if(atomic_load(&w->live->streaming) && w->piece == 0 && w->page.len < UINT32_MAX) {
        size_t n = (size_t)((w->rows - 1) % DAPI_PAGE_ROWS);
        keep_recent(w->live, w->pages_done, w->page.data ? w->page.data : "", w->page.len, w->seps,
                    n);
    }
    enum dapi_err result = hand_over(w, 1);
    if(!result && !w->pipe && !w->finishing && w->pages_done == PIPE_AFTER)
        pipe_start(w); /* a large result: compression on a thread of its own from now on */
    return result;
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
        result = push_index(w, 0, 0);
out:
    w->names = uniq; /* kept: the columns of the result (dapi_result_writer_columns) */
    return result;
}

/* A page just completed: publish it now (rather than at the next 1 MiB flush) when it is
 * page 1 — what `| head` waits for, one extra write per result —, a page a reader waits
 * for, or 128 pages after the last publication while a reader streams. Other pages are published at the periodic flushes: a write per page would cost every
 * large result thousands of system calls nobody asked for. */
static int page_wanted(struct dapi_result_writer *w)
{
    uint64_t complete = w->nindex - 1, want = atomic_load(&w->live->want);
    /* a streaming reader finds the pages it is given in memory (RECENT_PAGES are kept):
     * published before that many wait (small rows take longer to make 1 MiB) */
    int streaming = atomic_load(&w->live->streaming) && complete - w->live->n >= RECENT_PAGES / 2;
    return complete == 1 || (want > w->live->n && want <= complete) || streaming;
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
        if(w->rows % DAPI_PAGE_ROWS != 0) {
            w->seps[w->rows % DAPI_PAGE_ROWS - 1] = (uint32_t)w->page.len;
            if((result = dapi_buf_addc(&w->page, ',')))
                return result;
        }
        if((result = dapi_render_row(&w->page, cols, ncols, (const char *const *)w->keys,
                                     w->key_lens, r)))
            return result;
        w->rows++;
        /* The limit is on the rows' JSON (what a client reads), not on the smaller file. */
        uint64_t total = w->taken + w->page.len;
        if(total > w->limits.max_bytes) {
            snprintf(w->error, sizeof w->error, "the result is larger than %llu bytes (%s)",
                     (unsigned long long)w->limits.max_bytes,
                     w->limits.bytes_setting ? w->limits.bytes_setting : "--max-result-bytes");
            return DAPI_ERR_TOO_LARGE;
        }
        if(w->rows % DAPI_PAGE_ROWS == 0) {
            if((result = page_complete(w)))
                return result;
        } else if(w->page.len >= FLUSH_AT && (result = hand_over(w, 0))) {
            return result;
        }
    }
    return DAPI_OK;
}

const struct dapi_sink dapi_result_sink = {sink_begin, sink_chunk};

/* The header of a result of data_len bytes of frames; *total its whole size. -1 without
 * randomness for its identity. */
static int header(const struct dapi_result_writer *w, uint64_t data_len,
                  unsigned char h[HEADER_LEN], uint64_t *total)
{
    uint64_t npages = w->nindex - 1;
    uint64_t index_off = HEADER_LEN + data_len;
    *total = index_off + 8 * (w->nindex + npages);
    memset(h, 0, HEADER_LEN);
    memcpy(h, MAGIC, 8);
    store_put64(h + 8, w->rows);
    store_put64(h + 16, npages);
    store_put64(h + 24, HEADER_LEN);
    store_put64(h + 32, data_len);
    store_put64(h + 40, index_off);
    store_put64(h + 48, *total);
    return dapi_random(h + 56, 8) ? -1 : 0;
}

/* A result never flushed, and small: its image is made in memory (header, the frames in
 * w->out, the index), and no file is written. */
static enum dapi_err finish_small(struct dapi_result_writer *w, uint64_t *rows, uint64_t *pages,
                                  uint64_t *bytes)
{
    uint64_t total, npages = w->nindex - 1;
    unsigned char h[HEADER_LEN];
    if(header(w, w->out.len, h, &total))
        return DAPI_ERR_INTERNAL;
    dapi_buf_init(&w->small, total);
    enum dapi_err result = dapi_buf_add(&w->small, h, sizeof h);
    if(!result)
        result = dapi_buf_add(&w->small, w->out.data ? w->out.data : "", w->out.len);
    for(size_t i = 0; !result && i < w->nindex + npages; i++) {
        unsigned char b[8];
        store_put64(b, i < w->nindex ? w->index[i] : w->lens[i - w->nindex]);
        result = dapi_buf_add(&w->small, b, 8);
    }
    if(result)
        return result;
    w->finished = 1;
    *rows = w->rows;
    *pages = npages;
    *bytes = total;
    return DAPI_OK;
}

const void *dapi_result_writer_small(const struct dapi_result_writer *w, size_t *len)
{
    *len = w->small.len;
    return w->finished && w->small.len ? w->small.data : NULL;
}

enum dapi_err dapi_result_writer_finish(struct dapi_result_writer *w, uint64_t *rows,
                                        uint64_t *pages, uint64_t *bytes)
{
    enum dapi_err result;
    if(!w->keys && (result = push_index(w, 0, 0))) /* no begin (cannot happen) */
        return result;
    /* the last, partial page is never published: it is served from the finished file */
    if(w->pipe) {
        pthread_mutex_lock(&w->pipe->mu);
        w->finishing = 1;
        pthread_mutex_unlock(&w->pipe->mu);
    } else {
        w->finishing = 1;
    }
    if(w->rows % DAPI_PAGE_ROWS != 0 && (result = page_complete(w)))
        return result;
    if((result = pipe_end(w, 1))) /* everything compressed: the rest is this thread's */
        return result;
    uint64_t npages = w->nindex - 1;
    if(w->fd < 0 && w->small_max &&
       HEADER_LEN + w->out.len + 8 * (w->nindex + npages) <= w->small_max)
        return finish_small(w, rows, pages, bytes);
    if((result = flush(w)))
        return result;
    uint64_t data_len = w->written;
    /* index entries, little-endian: the offsets, then the decoded lengths */
    for(size_t i = 0; i < w->nindex + npages; i++) {
        unsigned char b[8];
        store_put64(b, i < w->nindex ? w->index[i] : w->lens[i - w->nindex]);
        if((result = dapi_buf_add(&w->out, b, 8)))
            return result;
        if(w->out.len >= FLUSH_AT && (result = flush(w)))
            return result;
    }
    if((result = flush(w)))
        return result;
    uint64_t total;
    unsigned char h[HEADER_LEN];
    if(header(w, data_len, h, &total))
        return DAPI_ERR_INTERNAL;
    /* No fsync: a result can be computed again. Each page's frame carries a checksum, so the
     * next start after an unclean stop tells a file the disk did not fully keep from a whole
     * one (dapi_result_verify; the query then runs again: docs/design.md, Durability). */
    int e = 0;
    ssize_t n = pwrite(w->fd, h, sizeof h, 0);
    if(n != (ssize_t)sizeof h)
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
    pipe_end(w, 0);
    if(w->live)
        live_close(w->live);
    dapi_result_live_unref(w->live);
    if(w->fd >= 0)
        close(w->fd);
    if(!w->finished && w->tmp)
        unlink(w->tmp);
    dapi_buf_free(&w->out);
    dapi_buf_free(&w->page);
    dapi_buf_free(&w->small);
    dapi_zenc_free(w->z);
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
    free(w->lens);
    free(w->path);
    free(w->tmp);
    free(w);
}

struct dapi_result {
    const unsigned char *map;   /* the mapping (from a page boundary) */
    size_t len;                 /* its length */
    const unsigned char *image; /* the result's bytes in it: its header first */
    uint64_t size;
    atomic_uint refs;
    int compressed; /* DAPIRES2 */
    uint64_t rows, pages, id;
    const char *data;
    const unsigned char *index; /* pages + 1 offsets into data */
    const unsigned char *lens;  /* DAPIRES2: pages decoded lengths */
};

/* The checks of a DAPIRES1 file (written by dapi before 0.x: rows stored as text). */
static int valid_v1(const unsigned char *h, uint64_t size)
{
    uint64_t rows = store_get64(h + 8), pages = store_get64(h + 16),
             rows_off = store_get64(h + 24), rows_len = store_get64(h + 32),
             index_off = store_get64(h + 40), total = store_get64(h + 48);
    int ok = total == size && rows_off == HEADER_LEN && rows_len <= size - HEADER_LEN &&
             index_off == rows_off + rows_len && pages < size / 8 &&
             index_off + 8 * (pages + 1) == size &&
             pages == rows / DAPI_PAGE_ROWS + (rows % DAPI_PAGE_ROWS != 0);
    for(uint64_t i = 0; ok && i <= pages; i++) {
        uint64_t off = store_get64(h + index_off + 8 * i);
        ok = off <= rows_len &&
             (i == 0 ? off == 0 : off >= store_get64(h + index_off + 8 * (i - 1)));
    }
    return ok;
}

/* The checks of a DAPIRES2 file: every frame lies inside the data, in order, and no page
 * claims to decode to more than its frame could. (Each frame is checked when it is used:
 * dapi_result_page_frame and the decoder.) */
static int valid_v2(const unsigned char *h, uint64_t size)
{
    uint64_t rows = store_get64(h + 8), pages = store_get64(h + 16),
             data_off = store_get64(h + 24), data_len = store_get64(h + 32),
             index_off = store_get64(h + 40), total = store_get64(h + 48);
    int ok = total == size && data_off == HEADER_LEN && data_len <= size - HEADER_LEN &&
             index_off == data_off + data_len && pages < size / 16 &&
             index_off + 8 * (2 * pages + 1) == size &&
             pages == rows / DAPI_PAGE_ROWS + (rows % DAPI_PAGE_ROWS != 0);
    if(!ok)
        return 0;
    const unsigned char *index = h + index_off, *lens = index + 8 * (pages + 1);
    for(uint64_t i = 0; ok && i <= pages; i++) {
        uint64_t off = store_get64(index + 8 * i);
        if(i == 0) {
            ok = off == 0;
            continue;
        }
        uint64_t prev = store_get64(index + 8 * (i - 1));
        ok = off <= data_len && off > prev && (i < pages || off == data_len) &&
             store_get64(lens + 8 * (i - 1)) / MAX_RATIO <= off - prev;
    }
    return ok && (pages > 0 || data_len == 0);
}

/* Whether the size bytes at h are a whole result of either format. */
static int valid_image(const unsigned char *h, uint64_t size)
{
    if(size < HEADER_LEN)
        return 0;
    return memcmp(h, MAGIC, 8) == 0 ? valid_v2(h, size)
                                    : memcmp(h, MAGIC1, 8) == 0 && valid_v1(h, size);
}

enum dapi_err dapi_result_check(const void *image, uint64_t size, uint64_t *rows, uint64_t *pages)
{
    const unsigned char *h = image;
    if(!h || !valid_image(h, size))
        return DAPI_ERR_IO;
    *rows = store_get64(h + 8);
    *pages = store_get64(h + 16);
    return DAPI_OK;
}

enum dapi_err dapi_result_open_at(struct dapi_result **out, int fd, uint64_t off, uint64_t size)
{
    *out = NULL;
    long pagesize = sysconf(_SC_PAGESIZE);
    uint64_t skip = pagesize > 0 ? off % (uint64_t)pagesize : 0;
    if(size < HEADER_LEN || size > SIZE_MAX - skip)
        return DAPI_ERR_IO;
    /* (a mapping starts at a page boundary: the page holding off, from skip bytes in) */
    void *map = mmap(NULL, (size_t)(skip + size), PROT_READ, MAP_SHARED, fd, (off_t)(off - skip));
    if(map == MAP_FAILED)
        return DAPI_ERR_IO;
    const unsigned char *h = (const unsigned char *)map + skip;
    /* Every offset is checked so a damaged file can never make us read out of bounds. Files
     * of the previous format (DAPIRES1) are still read: state directories outlive binaries. */
    int v2 = memcmp(h, MAGIC, 8) == 0, ok = valid_image(h, size);
    struct stat st;
    if(ok && !v2 && fstat(fd, &st))
        ok = 0;
    struct dapi_result *r = ok ? calloc(1, sizeof *r) : NULL;
    if(!r) {
        munmap(map, (size_t)(skip + size));
        return ok ? DAPI_ERR_NOMEM : DAPI_ERR_IO;
    }
    r->map = map;
    r->len = (size_t)(skip + size);
    r->image = h;
    r->size = size;
    atomic_init(&r->refs, 1);
    r->compressed = v2;
    r->rows = store_get64(h + 8);
    r->pages = store_get64(h + 16);
    r->data = (const char *)h + HEADER_LEN;
    r->index = h + store_get64(h + 40);
    r->lens = v2 ? r->index + 8 * (r->pages + 1) : NULL;
    if(v2) {
        r->id = store_get64(h + 56);
    } else {
        /* No identity stored: the file's (a hard link shares it, as it shares the rows). */
        uint64_t parts[5] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino, size,
                             (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec};
        uint64_t x = 0xcbf29ce484222325ull;
        for(size_t i = 0; i < 5; i++)
            for(int b = 0; b < 8; b++)
                x = (x ^ ((parts[i] >> (8 * b)) & 0xff)) * 0x100000001b3ull;
        r->id = x;
    }
    *out = r;
    return DAPI_OK;
}

enum dapi_err dapi_result_open(struct dapi_result **out, const char *path)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd < 0)
        return DAPI_ERR_IO;
    struct stat st;
    enum dapi_err e = fstat(fd, &st) ? DAPI_ERR_IO
                                     : dapi_result_open_at(out, fd, 0, (uint64_t)st.st_size);
    close(fd);
    return e;
}

void dapi_result_image(const struct dapi_result *r, const void **image, size_t *size)
{
    *image = r->image;
    *size = (size_t)r->size;
}

struct dapi_result *dapi_result_ref(struct dapi_result *r)
{
    atomic_fetch_add(&r->refs, 1);
    return r;
}

void dapi_result_close(struct dapi_result *r)
{
    if(!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    munmap((void *)r->map, r->len);
    free(r);
}

enum dapi_err dapi_result_verify(const struct dapi_result *r)
{
    if(!r->compressed)
        return DAPI_OK; /* DAPIRES1: written (and fsynced) by a version that synced results */
    char *buf = NULL;
    size_t cap = 0;
    enum dapi_err e = DAPI_OK;
    for(uint64_t p = 1; p <= r->pages && !e; p++) {
        uint64_t need = dapi_result_page_size(r, p);
        if(need >= SIZE_MAX / 2) {
            e = DAPI_ERR_IO;
            break;
        }
        if(need > cap) {
            char *q = realloc(buf, (size_t)need);
            if(!q) {
                e = DAPI_ERR_NOMEM;
                break;
            }
            buf = q;
            cap = (size_t)need;
        }
        /* decodes the frame: its checksum and its decoded length must match */
        e = dapi_result_page_decode(r, p, buf, cap);
    }
    free(buf);
    return e == DAPI_ERR_NOMEM ? e : e ? DAPI_ERR_IO : DAPI_OK;
}

uint64_t dapi_result_pages(const struct dapi_result *r)
{
    return r->pages;
}

uint64_t dapi_result_rows(const struct dapi_result *r)
{
    return r->rows;
}

uint64_t dapi_result_id(const struct dapi_result *r)
{
    return r->id;
}

int dapi_result_compressed(const struct dapi_result *r)
{
    return r->compressed;
}

int dapi_result_page_plain(const struct dapi_result *r, uint64_t page, const char **data,
                           size_t *len)
{
    *data = "";
    *len = 0;
    if(page == 0 || page > r->pages)
        return 0;
    if(r->compressed)
        return -1;
    uint64_t a = store_get64(r->index + 8 * (page - 1)), b = store_get64(r->index + 8 * page);
    *data = r->data + a;
    *len = (size_t)(b - a);
    return 0;
}

int dapi_result_page_frame(const struct dapi_result *r, uint64_t page, const void **frame,
                           size_t *len, size_t *decoded_len)
{
    *frame = NULL;
    *len = *decoded_len = 0;
    if(!r->compressed)
        return -1;
    if(page == 0 || page > r->pages)
        return 0;
    uint64_t a = store_get64(r->index + 8 * (page - 1)), b = store_get64(r->index + 8 * page),
             d = store_get64(r->lens + 8 * (page - 1));
    if((uint64_t)(size_t)d != d || !dapi_zframe_check(r->data + a, (size_t)(b - a), d))
        return -1;
    *frame = r->data + a;
    *len = (size_t)(b - a);
    *decoded_len = (size_t)d;
    return 0;
}

uint64_t dapi_result_page_size(const struct dapi_result *r, uint64_t page)
{
    if(page == 0 || page > r->pages)
        return 0;
    if(r->compressed)
        return store_get64(r->lens + 8 * (page - 1));
    return store_get64(r->index + 8 * page) - store_get64(r->index + 8 * (page - 1));
}

enum dapi_err dapi_result_page_decode(const struct dapi_result *r, uint64_t page, char *dst,
                                      size_t cap)
{
    uint64_t need = dapi_result_page_size(r, page);
    if(need > cap)
        return DAPI_ERR_TOO_LARGE;
    if(page == 0 || page > r->pages)
        return DAPI_OK;
    if(!r->compressed) {
        const char *data;
        size_t len;
        dapi_result_page_plain(r, page, &data, &len);
        memcpy(dst, data, len);
        return DAPI_OK;
    }
    uint64_t a = store_get64(r->index + 8 * (page - 1)), b = store_get64(r->index + 8 * page);
    return dapi_zframe_decode(r->data + a, (size_t)(b - a), dst, (size_t)need);
}

enum dapi_err dapi_result_page_copy(const struct dapi_result *r, uint64_t page, char **data,
                                    size_t *len)
{
    uint64_t need = dapi_result_page_size(r, page);
    *data = NULL;
    *len = 0;
    if(need >= SIZE_MAX)
        return DAPI_ERR_NOMEM;
    char *p = malloc((size_t)need + 1);
    if(!p)
        return DAPI_ERR_NOMEM;
    enum dapi_err e = dapi_result_page_decode(r, page, p, (size_t)need);
    if(e) {
        free(p);
        return e;
    }
    p[need] = '\0';
    *data = p;
    *len = (size_t)need;
    return DAPI_OK;
}

enum dapi_err dapi_result_page_into(const struct dapi_result *r, uint64_t page,
                                    struct dapi_buf *buf, const char **rows, size_t *len)
{
    if(dapi_result_page_plain(r, page, rows, len) == 0)
        return DAPI_OK; /* DAPIRES1: the mapping itself */
    uint64_t need = dapi_result_page_size(r, page);
    *rows = "";
    *len = 0;
    if(need >= SIZE_MAX)
        return DAPI_ERR_NOMEM;
    dapi_buf_reset(buf);
    char *p = dapi_buf_reserve(buf, (size_t)need + 1);
    if(!p)
        return dapi_buf_error(buf) ? dapi_buf_error(buf) : DAPI_ERR_NOMEM;
    enum dapi_err e = dapi_result_page_decode(r, page, p, (size_t)need);
    if(e)
        return e;
    *rows = p;
    *len = (size_t)need;
    return DAPI_OK;
}
