#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"

static int log_json;
static enum dapi_log_level log_min = DAPI_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dapi_log_setup(int json, enum dapi_log_level min)
{
    log_json = json;
    log_min = min;
}

static void stamp(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* Access lines are batched: one write(2) per request cost a quarter of the server's
 * throughput on /api/health. A line is copied into the batch being filled; a full batch is
 * sealed and written out by the log writer (dapi_log_start), so a request thread never
 * waits for the disk: a write blocked by the kernel's writeback of a large log once held up
 * the request that filled the batch for up to 32 ms, and the other threads behind its lock.
 * The sealed batches wait in a ring; only when the writer is behind by all of them (4 MiB)
 * does a thread wait for a free one (counted in dapi_log_stats). Without the writer (tools,
 * tests) the thread that seals a batch writes it, as before.
 *
 * Order: batches are written in the order they were sealed, by one writer at a time (the
 * holder of the "pen"). A server line, an access line too long for a batch, a flush and a
 * reopen take the pen, write out every batch that holds a line logged before them, and
 * only then write their line or switch files. The writer seals a partial batch after
 * FLUSH_MS without a full one, so an idle server's lines reach the file within that. */
#define ACCESS_BUF 65536
#define NBATCH 64 /* the ring: the writer may fall 63 batches behind (~4 MiB) */
#define FLUSH_MS 250

struct batch {
    char data[ACCESS_BUF];
    size_t len;
};
static pthread_mutex_t access_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cond; /* to the writer: a batch was sealed, or stop */
static pthread_cond_t space_cond = PTHREAD_COND_INITIALIZER; /* a sealed batch's slot is free */
static pthread_cond_t pen_cond = PTHREAD_COND_INITIALIZER;   /* the pen was given back */
/* Sealed batches are ring[head .. head+sealed-1]; the one being filled follows them. */
static struct batch two[2]; /* the ring until dapi_log_start, and after the writer stops */
static struct batch *ring = two, *in_write; /* in_write: the batch the pen's holder writes */
static unsigned ring_size = 2, head, sealed;
static int pen_busy, writer_on, writer_stop;
static pthread_t writer;
static unsigned long long waits; /* a thread waited for a free batch */

/* Where lines go: server lines to log_fd, access lines to access_fd. Both are stderr unless
 * dapi_log_open opened files; access lines share the server lines' descriptor unless they
 * have a file of their own. The numbers are set before any thread starts and never change
 * after: a reopen points the same number at the new file with dup2, which is atomic, so a
 * writer never needs a lock to pick its descriptor. */
static int log_fd = STDERR_FILENO, access_fd = STDERR_FILENO;
static char *log_path, *access_path; /* the files to reopen; NULL = stderr / shared */

static void write_all(int fd, const char *p, size_t n)
{
    while(n) {
        ssize_t r = write(fd, p, n);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return; /* nowhere to report a broken log */
        p += r;
        n -= (size_t)r;
    }
}

static struct batch *slot(unsigned i)
{
    return &ring[(head + i) % ring_size];
}

/* The batch being filled (under access_lock). */
static struct batch *filling(void)
{
    return slot(sealed);
}

/* Under access_lock: waits for the pen, and takes it. */
static void take_pen(void)
{
    while(pen_busy)
        pthread_cond_wait(&pen_cond, &access_lock);
    pen_busy = 1;
}

static void give_pen(void)
{
    pen_busy = 0;
    pthread_cond_broadcast(&pen_cond);
}

/* Under access_lock, holding the pen, with a batch sealed: writes the oldest one, without the
 * lock meanwhile, and frees its slot. */
static void write_oldest(void)
{
    struct batch *b = in_write = slot(0);
    pthread_mutex_unlock(&access_lock);
    write_all(access_fd, b->data, b->len);
    pthread_mutex_lock(&access_lock);
    b->len = 0;
    in_write = NULL;
    head = (head + 1) % ring_size;
    sealed--;
    pthread_cond_broadcast(&space_cond);
}

/* Under access_lock, holding the pen: writes out every line logged before the call (the
 * batches sealed now and the one being filled, which is sealed when its turn comes). */
static void drain(void)
{
    unsigned todo = sealed + (filling()->len > 0);
    for(; todo; todo--) {
        if(!sealed)
            sealed = 1; /* the batch being filled; the next slot is free, as none is sealed */
        write_oldest();
    }
}

/* Under access_lock: writes out every buffered line. */
static void flush_locked(void)
{
    take_pen();
    drain();
    give_pen();
}

/* Under access_lock: writes out every buffered line, then len bytes of p to fd, in order. */
static void write_through(int fd, const char *p, size_t len)
{
    take_pen();
    drain();
    if(len) {
        pthread_mutex_unlock(&access_lock);
        write_all(fd, p, len);
        pthread_mutex_lock(&access_lock);
    }
    give_pen();
}

/* Under access_lock: the batch being filled is full; seals it and makes a free one the batch
 * being filled. With the writer, that wakes it (and waits when all the batches are taken);
 * without it, this thread writes the batch. */
static void seal_full(void)
{
    if(writer_on && sealed + 1 >= ring_size) {
        waits++;
        while(writer_on && sealed + 1 >= ring_size)
            pthread_cond_wait(&space_cond, &access_lock);
    }
    if(!writer_on) { /* (or stopped meanwhile) */
        flush_locked();
        return;
    }
    sealed++;
    pthread_cond_signal(&work_cond);
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&access_lock);
    for(;;) {
        if(!sealed && !writer_stop) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += FLUSH_MS * 1000000L;
            if(until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            int r = 0;
            while(!sealed && !writer_stop && r != ETIMEDOUT)
                r = pthread_cond_timedwait(&work_cond, &access_lock, &until);
        }
        if(!sealed && filling()->len)
            sealed = 1; /* FLUSH_MS went by without a full batch, or stop */
        if(sealed) {
            take_pen();
            if(sealed) /* a drain may have written it meanwhile */
                write_oldest();
            give_pen();
            continue;
        }
        if(writer_stop)
            break;
    }
    pthread_mutex_unlock(&access_lock);
    return NULL;
}

enum dapi_err dapi_log_start(char *err, size_t errlen)
{
    static struct batch *more;
    if(writer_on)
        return DAPI_OK;
    if(!more && !(more = calloc(NBATCH, sizeof *more))) {
        snprintf(err, errlen, "cannot start the log writer: out of memory");
        return DAPI_ERR_NOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&work_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&access_lock);
    take_pen();
    drain(); /* the single slot is empty before the ring takes over */
    ring = more;
    ring_size = NBATCH;
    head = sealed = 0;
    writer_stop = 0;
    int r = pthread_create(&writer, NULL, writer_main, NULL);
    if(r) {
        ring = two;
        ring_size = 2;
        snprintf(err, errlen, "cannot start the log writer: %s", strerror(r));
    }
    writer_on = !r;
    give_pen();
    pthread_mutex_unlock(&access_lock);
    if(r)
        pthread_cond_destroy(&work_cond);
    return r ? DAPI_ERR_IO : DAPI_OK;
}

/* Stops the writer once it wrote every batch; the single slot takes over again. */
static void stop_writer(void)
{
    pthread_mutex_lock(&access_lock);
    if(!writer_on) {
        pthread_mutex_unlock(&access_lock);
        return;
    }
    writer_stop = 1;
    pthread_cond_signal(&work_cond);
    pthread_mutex_unlock(&access_lock);
    pthread_join(writer, NULL);
    pthread_mutex_lock(&access_lock);
    take_pen();
    drain(); /* lines logged while it stopped */
    writer_on = 0;
    pthread_cond_broadcast(&space_cond);
    ring = two;
    ring_size = 2;
    head = sealed = 0;
    give_pen();
    pthread_mutex_unlock(&access_lock);
    pthread_cond_destroy(&work_cond);
}

void dapi_log_stats(unsigned long long *pending, unsigned long long *waited)
{
    pthread_mutex_lock(&access_lock);
    unsigned long long n = 0;
    for(unsigned i = 0; i <= sealed; i++)
        n += slot(i)->len;
    *pending = n;
    *waited = waits;
    pthread_mutex_unlock(&access_lock);
}

void dapi_log_flush(void)
{
    pthread_mutex_lock(&access_lock);
    flush_locked();
    pthread_mutex_unlock(&access_lock);
}

void dapi_log_flush_fatal(void)
{
    /* Whoever holds the lock may be the one failing: then the batches are lost, not the exit.
     * A batch the pen's holder is writing is left to it; the others are written here, without
     * giving the lock back (the process ends next). */
    if(pthread_mutex_trylock(&access_lock))
        return;
    for(unsigned i = 0; i <= sealed; i++)
        if(slot(i) != in_write)
            write_all(access_fd, slot(i)->data, slot(i)->len);
    pthread_mutex_unlock(&access_lock);
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

/* Points fd at path, opened again (the file logrotate moved away keeps what was written). */
static enum dapi_err reopen_one(int fd, const char *path, const char *what, char *err,
                                size_t errlen)
{
    int nfd = open_log(path);
    if(nfd < 0) {
        snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
        return DAPI_ERR_IO;
    }
    int r = dup3(nfd, fd, O_CLOEXEC);
    int e = errno;
    close(nfd);
    if(r < 0) {
        snprintf(err, errlen, "cannot reopen %s %s: %s", what, path, strerror(e));
        return DAPI_ERR_IO;
    }
    return DAPI_OK;
}

enum dapi_err dapi_log_open(const char *log_file, const char *access_file, char *err,
                            size_t errlen)
{
    enum dapi_err result = DAPI_OK;
    int lfd = -1, afd = -1;
    char *lp = NULL, *ap = NULL;
    if(log_file && (lfd = open_log(log_file)) < 0) {
        snprintf(err, errlen, "cannot open --log-file %s: %s", log_file, strerror(errno));
        result = DAPI_ERR_INVALID;
        goto out;
    }
    if(access_file && (afd = open_log(access_file)) < 0) {
        snprintf(err, errlen, "cannot open --access-log %s: %s", access_file, strerror(errno));
        result = DAPI_ERR_INVALID;
        goto out;
    }
    if((log_file && !(lp = strdup(log_file))) || (access_file && !(ap = strdup(access_file)))) {
        snprintf(err, errlen, "out of memory");
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    dapi_log_close();
    pthread_mutex_lock(&access_lock);
    if(lfd >= 0) {
        log_fd = lfd;
        log_path = lp;
        lfd = -1;
        lp = NULL;
    }
    access_fd = log_fd;
    if(afd >= 0) {
        access_fd = afd;
        access_path = ap;
        afd = -1;
        ap = NULL;
    }
    pthread_mutex_unlock(&access_lock);
out:
    if(lfd >= 0)
        close(lfd);
    if(afd >= 0)
        close(afd);
    free(lp);
    free(ap);
    return result;
}

enum dapi_err dapi_log_reopen(char *err, size_t errlen)
{
    enum dapi_err result = DAPI_OK, r;
    /* Under the batch lock: pending access lines go to the old file, later ones to the new. */
    pthread_mutex_lock(&access_lock);
    take_pen();
    drain();
    if(log_path)
        result = reopen_one(log_fd, log_path, "--log-file", err, errlen);
    if(access_path && (r = reopen_one(access_fd, access_path, "--access-log", err, errlen)))
        result = r;
    give_pen();
    pthread_mutex_unlock(&access_lock);
    return result;
}

int dapi_log_has_files(void)
{
    return log_path || access_path;
}

void dapi_log_close(void)
{
    stop_writer();
    pthread_mutex_lock(&access_lock);
    flush_locked();
    if(access_path)
        close(access_fd);
    if(log_path)
        close(log_fd);
    free(access_path);
    free(log_path);
    access_path = log_path = NULL;
    log_fd = access_fd = STDERR_FILENO;
    pthread_mutex_unlock(&access_lock);
}

/* Appends n bytes of whole lines (at most ACCESS_BUF) to the batch being filled. */
static void batch_lines(const char *p, size_t n)
{
    pthread_mutex_lock(&access_lock);
    struct batch *f = filling();
    if(f->len + n > ACCESS_BUF) {
        seal_full();
        f = filling();
    }
    memcpy(f->data + f->len, p, n);
    f->len += n;
    pthread_mutex_unlock(&access_lock);
}

/* Appends a line held in caller memory (b->len bytes, room for one more) to the batch. */
static void emit_line(struct dapi_buf *b)
{
    b->data[b->len++] = '\n';
    batch_lines(b->data, b->len);
}

static void emit(struct dapi_buf *b, int batched)
{
    if(!b->data)
        return;
    if(dapi_buf_addc(b, '\n'))
        return;
    if(batched && b->len <= ACCESS_BUF) {
        batch_lines(b->data, b->len);
        dapi_buf_free(b);
        return;
    }
    if(!batched && access_path) {
        /* The access lines have a file of their own: no order to keep with them, and a
         * slow access log must not hold up a warning. */
        write_all(log_fd, b->data, b->len);
    } else {
        pthread_mutex_lock(&access_lock);
        write_through(batched ? access_fd : log_fd, b->data, b->len);
        pthread_mutex_unlock(&access_lock);
    }
    dapi_buf_free(b);
}

void dapi_log(enum dapi_log_level level, const char *fmt, ...)
{
    if(level < log_min)
        return;
    char ts[96], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    stamp(ts, sizeof ts);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    if(log_json) {
        dapi_buf_addf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
        dapi_json_str(&b, msg, strlen(msg));
        dapi_buf_addc(&b, '}');
    } else {
        dapi_buf_addf(&b, "%s %-5s %s", ts, level_names[level], msg);
    }
    emit(&b, 0);
}

/* The access line is formatted by hand: printf's float and time formatting were 5% of the
 * CPU of a /api/health request. The date part is formatted once per second per thread. */
static __thread time_t stamp_sec = -1;
static __thread char stamp_buf[80];

/* Plain printable ASCII without '"' or '\\' can be written inside quotes as it is. */
static int plain(const char *s)
{
    for(; *s; s++)
        if(*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

/* A token written bare after "client=" or "id=": printable ASCII without space, '"' or '\\'. */
static int bare(const char *s)
{
    for(; *s; s++)
        if(*s <= 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

void dapi_log_request(const struct dapi_access *a)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if(ts.tv_sec != stamp_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(stamp_buf, sizeof stamp_buf, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        stamp_sec = ts.tv_sec;
    }
    const char *method = a->method ? a->method : "-", *path = a->path ? a->path : "-";
    const char *query = a->query && *a->query ? a->query : NULL;
    const char *client = a->client && *a->client ? a->client : NULL;
    const char *id = a->request_id && *a->request_id ? a->request_id : NULL;
    size_t mlen = strlen(method), plen = strlen(path), qlen = query ? strlen(query) : 0;
    size_t clen = client ? strlen(client) : 0, ilen = id ? strlen(id) : 0;
    int status = a->status < 0 ? 0 : a->status;
    long long us = a->duration_us < 0 ? 0 : a->duration_us;
    if(!log_json && mlen < 32 && plen + qlen < 2048 && clen < 64 && ilen <= 128 && plain(path) &&
       plain(method) && (!query || plain(query)) && (!client || bare(client)) &&
       (!id || bare(id))) {
        char line[2400], *p = line;
        size_t sl = strlen(stamp_buf);
        p = put(p, stamp_buf, sl);
        p = dapi_put_u64(p, (unsigned long long)(ts.tv_nsec / 1000000), 3);
        p = put(p, "Z access ", 9);
        p = put(p, method, mlen);
        *p++ = ' ';
        *p++ = '"';
        p = put(p, path, plen);
        if(query) {
            *p++ = '?';
            p = put(p, query, qlen);
        }
        *p++ = '"';
        *p++ = ' ';
        p = dapi_put_u64(p, (unsigned long long)status, 1);
        *p++ = ' ';
        p = dapi_put_u64(p, a->bytes, 1);
        *p++ = ' ';
        p = dapi_put_u64(p, (unsigned long long)(us / 1000), 1);
        *p++ = '.';
        p = dapi_put_u64(p, (unsigned long long)(us % 1000), 3);
        p = put(p, "ms", 2);
        if(client) {
            p = put(p, " client=", 8);
            p = put(p, client, clen);
        }
        if(id) {
            p = put(p, " id=", 4);
            p = put(p, id, ilen);
        }
        struct dapi_buf b = {line, (size_t)(p - line), sizeof line, sizeof line, DAPI_OK};
        emit_line(&b);
        return;
    }
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%s%03ldZ", stamp_buf, ts.tv_nsec / 1000000);
    /* Bound what a client controls so the line fits the buffer even fully escaped (6x). */
    enum { PATH_MAX_LOGGED = 65536, ID_MAX_LOGGED = 256 };
    int cut = plen > PATH_MAX_LOGGED, qcut = qlen > PATH_MAX_LOGGED;
    if(cut)
        plen = PATH_MAX_LOGGED;
    if(qcut)
        qlen = PATH_MAX_LOGGED;
    if(mlen > 64)
        mlen = 64;
    if(clen > ID_MAX_LOGGED)
        clen = ID_MAX_LOGGED;
    if(ilen > ID_MAX_LOGGED)
        ilen = ID_MAX_LOGGED;
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    if(log_json) {
        dapi_buf_addf(&b, "{\"ts\":\"%s\",\"level\":\"info\",\"access\":{\"method\":", stamp);
        dapi_json_str(&b, method, mlen);
        dapi_buf_adds(&b, ",\"path\":");
        dapi_json_str(&b, path, plen);
        if(cut)
            dapi_buf_adds(&b, ",\"path_truncated\":true");
        if(query) {
            dapi_buf_adds(&b, ",\"query\":");
            dapi_json_str(&b, query, qlen);
            if(qcut)
                dapi_buf_adds(&b, ",\"query_truncated\":true");
        }
        dapi_buf_addf(&b, ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%lld.%03lld", status,
                      a->bytes, us / 1000, us % 1000);
        if(client) {
            dapi_buf_adds(&b, ",\"client\":");
            dapi_json_str(&b, client, clen);
        }
        if(id) {
            dapi_buf_adds(&b, ",\"request_id\":");
            dapi_json_str(&b, id, ilen);
        }
        dapi_buf_adds(&b, "}}");
    } else {
        /* The path and query in one quoted field, escaped as a JSON string when needed. */
        struct dapi_buf target;
        dapi_buf_init(&target, 2 * PATH_MAX_LOGGED + 16);
        dapi_buf_add(&target, path, plen);
        if(cut)
            dapi_buf_adds(&target, "...");
        if(query) {
            dapi_buf_addc(&target, '?');
            dapi_buf_add(&target, query, qlen);
            if(qcut)
                dapi_buf_adds(&target, "...");
        }
        dapi_buf_addf(&b, "%s access ", stamp);
        if(plain(method))
            dapi_buf_add(&b, method, mlen);
        else
            dapi_json_str(&b, method, mlen);
        dapi_buf_addc(&b, ' ');
        if(dapi_buf_error(&target))
            dapi_buf_fail(&b, dapi_buf_error(&target));
        else
            dapi_json_str(&b, target.data ? target.data : "", target.len);
        dapi_buf_free(&target);
        dapi_buf_addf(&b, " %d %llu %lld.%03lldms", status, a->bytes, us / 1000, us % 1000);
        if(client) {
            dapi_buf_adds(&b, " client=");
            if(bare(client))
                dapi_buf_add(&b, client, clen);
            else
                dapi_json_str(&b, client, clen);
        }
        if(id) {
            dapi_buf_adds(&b, " id=");
            if(bare(id) && ilen <= 128)
                dapi_buf_add(&b, id, ilen);
            else
                dapi_json_str(&b, id, ilen);
        }
    }
    if(dapi_buf_error(&b)) {
        dapi_buf_free(&b);
        return;
    }
    emit(&b, 1);
}

void dapi_log_access(const char *method, const char *path, int status, unsigned long long bytes,
                     long long duration_us)
{
    struct dapi_access a = {method, path, NULL, NULL, NULL, status, bytes, duration_us};
    dapi_log_request(&a);
}
