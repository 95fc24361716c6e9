#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
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

static void write_all(const char *p, size_t n)
{
    while(n) {
        ssize_t r = write(STDERR_FILENO, p, n);
        if(r <= 0)
            return; /* nowhere to report a broken stderr */
        p += r;
        n -= (size_t)r;
    }
}

static void flush_locked(void)
{
    write_all(access_buf, access_len);
    access_len = 0;
}

void dapi_log_flush(void)
{
    pthread_mutex_lock(&access_lock);
    flush_locked();
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
        write_all(b->data, b->len);
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

static char *put_uint(char *p, unsigned long long v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while(v);
    while(n < min_digits)
        tmp[n++] = '0';
    while(n)
        *p++ = tmp[--n];
    return p;
}

/* Plain printable ASCII without '"' or '\\' can be written inside quotes as it is. */
static int plain(const char *s)
{
    for(; *s; s++)
        if(*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

void dapi_log_access(const char *method, const char *path, int status, unsigned long long bytes,
                     long long duration_us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if(ts.tv_sec != stamp_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(stamp_buf, sizeof stamp_buf, "%04d-%02d-%02dT%02d:%02d:%02d.",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        stamp_sec = ts.tv_sec;
    }
    size_t mlen = strlen(method), plen = strlen(path);
    if(!log_json && mlen < 32 && plen < 1024 && plain(path) && plain(method)) {
        char line[1400], *p = line;
        size_t sl = strlen(stamp_buf);
        memcpy(p, stamp_buf, sl);
        p = put_uint(p + sl, (unsigned long long)(ts.tv_nsec / 1000000), 3);
        memcpy(p, "Z access ", 9);
        p += 9;
        memcpy(p, method, mlen);
        p += mlen;
        *p++ = ' ';
        *p++ = '"';
        memcpy(p, path, plen);
        p += plen;
        *p++ = '"';
        *p++ = ' ';
        p = put_uint(p, (unsigned long long)(status < 0 ? 0 : status), 1);
        *p++ = ' ';
        p = put_uint(p, bytes, 1);
        *p++ = ' ';
        long long us = duration_us < 0 ? 0 : duration_us;
        p = put_uint(p, (unsigned long long)(us / 1000), 1);
        *p++ = '.';
        p = put_uint(p, (unsigned long long)(us % 1000), 3);
        memcpy(p, "ms", 2);
        p += 2;
        struct dapi_buf b = {line, (size_t)(p - line), sizeof line, sizeof line, DAPI_OK};
        emit_line(&b);
        return;
    }
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%s%03ldZ", stamp_buf, ts.tv_nsec / 1000000);
    /* Bound what a client controls so the line fits the buffer even fully escaped (6x). */
    enum { PATH_MAX_LOGGED = 65536 };
    int cut = plen > PATH_MAX_LOGGED;
    if(cut)
        plen = PATH_MAX_LOGGED;
    if(mlen > 64)
        mlen = 64;
    long long us = duration_us < 0 ? 0 : duration_us;
    status = status < 0 ? 0 : status;
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    enum dapi_err r;
    if(log_json) {
        r = dapi_buf_addf(&b, "{\"ts\":\"%s\",\"level\":\"info\",\"access\":{\"method\":", stamp);
        if(!r) r = dapi_json_str(&b, method, mlen);
        if(!r) r = dapi_buf_adds(&b, ",\"path\":");
        if(!r) r = dapi_json_str(&b, path, plen);
        if(!r && cut) r = dapi_buf_adds(&b, ",\"path_truncated\":true");
        if(!r) r = dapi_buf_addf(&b, ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%lld.%03lld}}",
                                 status, bytes, us / 1000, us % 1000);
    } else {
        r = dapi_buf_addf(&b, "%s access ", stamp);
        if(!r) r = plain(method) ? dapi_buf_add(&b, method, mlen) : dapi_json_str(&b, method, mlen);
        if(!r) r = dapi_buf_addc(&b, ' ');
        if(!r) r = dapi_json_str(&b, path, plen);
        if(!r && cut) r = dapi_buf_adds(&b, "...");
        if(!r) r = dapi_buf_addf(&b, " %d %llu %lld.%03lldms", status, bytes, us / 1000, us % 1000);
    }
    if(r) {
        dapi_buf_free(&b);
        return;
    }
    emit(&b, 1);
}
