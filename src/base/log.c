#include "base/log.h"

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

static void emit(struct dapi_buf *b)
{
    if(!b->data)
        return;
    dapi_buf_addc(b, '\n');
    if(b->data) {
        ssize_t r = write(STDERR_FILENO, b->data, b->len);
        (void)r;
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
    emit(&b);
}

void dapi_log_access(const char *method, const char *path, int status, unsigned long long bytes,
                     long long duration_us)
{
    char ts[96];
    stamp(ts, sizeof ts);
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    if(log_json) {
        dapi_buf_addf(&b, "{\"ts\":\"%s\",\"level\":\"info\",\"access\":{\"method\":", ts);
        dapi_json_str(&b, method, strlen(method));
        dapi_buf_adds(&b, ",\"path\":");
        dapi_json_str(&b, path, strlen(path));
        dapi_buf_addf(&b, ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%.3f}}", status, bytes,
                      duration_us / 1000.0);
    } else {
        /* Paths are client-controlled: render them JSON-escaped so a line stays one line. */
        dapi_buf_addf(&b, "%s access %s ", ts, method);
        dapi_json_str(&b, path, strlen(path));
        dapi_buf_addf(&b, " %d %llu %.3fms", status, bytes, duration_us / 1000.0);
    }
    emit(&b);
}
