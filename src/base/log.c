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
 * throughput on /api/health. They go to a shared buffer written out when it fills, on every
 * other log line (so the order of lines is kept), and by dapi_log_flush (called every
 * 250 ms and at exit). */
#define ACCESS_BUF 65536
static pthread_mutex_t access_lock = PTHREAD_MUTEX_INITIALIZER;
static char access_buf[ACCESS_BUF];
static size_t access_len;

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

static void flush_locked(void)
{
    write_all(access_fd, access_buf, access_len);
    access_len = 0;
}

void dapi_log_flush(void)
{
    pthread_mutex_lock(&access_lock);
    flush_locked();
    pthread_mutex_unlock(&access_lock);
}

void dapi_log_flush_fatal(void)
{
    /* Whoever holds the lock may be the one failing: then the batch is lost, not the exit. */
    if(pthread_mutex_trylock(&access_lock))
        return;
    flush_locked();
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
    flush_locked();
    if(log_path)
        result = reopen_one(log_fd, log_path, "--log-file", err, errlen);
    if(access_path && (r = reopen_one(access_fd, access_path, "--access-log", err, errlen)))
        result = r;
    pthread_mutex_unlock(&access_lock);
    return result;
}

int dapi_log_has_files(void)
{
    return log_path || access_path;
}

void dapi_log_close(void)
{
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

/* Appends a line held in caller memory (b->len bytes, room for one more) to the batch. */
static void emit_line(struct dapi_buf *b)
{
    b->data[b->len++] = '\n';
    pthread_mutex_lock(&access_lock);
    if(access_len + b->len > ACCESS_BUF)
        flush_locked();
    memcpy(access_buf + access_len, b->data, b->len);
    access_len += b->len;
    pthread_mutex_unlock(&access_lock);
}

static void emit(struct dapi_buf *b, int batched)
{
    if(!b->data)
        return;
    if(dapi_buf_addc(b, '\n'))
        return;
    pthread_mutex_lock(&access_lock);
    if(!batched || access_len + b->len > ACCESS_BUF)
        flush_locked();
    if(batched && b->len <= ACCESS_BUF) {
        memcpy(access_buf + access_len, b->data, b->len);
        access_len += b->len;
    } else {
        write_all(batched ? access_fd : log_fd, b->data, b->len);
    }
    pthread_mutex_unlock(&access_lock);
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
