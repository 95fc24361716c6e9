/* Logging, one line per event, in `text` or `json` format (--log-format), to stderr or to
 * files (--log-file, --access-log) that dapi_log_reopen opens again (SIGHUP, for logrotate).
 * Thread-safe: each line is written whole, in order. Never pass a secret. */
#ifndef DAPI_LOG_H
#define DAPI_LOG_H

#include <stddef.h>
#include "dapi/err.h"

enum dapi_log_level { DAPI_LOG_DEBUG, DAPI_LOG_INFO, DAPI_LOG_WARN, DAPI_LOG_ERROR };

/* json != 0 selects JSON lines. Call once at start, before threads exist. */
void dapi_log_setup(int json, enum dapi_log_level min);
void dapi_log(enum dapi_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sends server lines to log_file and access lines to access_file (appended, created mode
 * 0640). NULL log_file = stderr; NULL access_file = wherever the server lines go. Call at
 * start, before threads exist (and before dapi_log_start). On error nothing changes and err
 * says which file and why. */
enum dapi_err dapi_log_open(const char *log_file, const char *access_file, char *err,
                            size_t errlen);
/* Opens the same paths again (after logrotate moved the files away): buffered access lines
 * are written to the old file first, later lines go to the new one. A file that cannot be
 * opened keeps its old descriptor (err says why). Callable while other threads log. */
enum dapi_err dapi_log_reopen(char *err, size_t errlen);
/* Starts the log writer: a thread that writes out the access lines' batches, so that the
 * threads logging never wait for the disk (unless it is behind by ~4 MiB), and that writes a
 * partial batch after 250 ms. Without it, the thread whose line fills a batch writes it and
 * partial batches wait for dapi_log_flush. Call with the signals the threads must not take
 * blocked; dapi_log_close stops it. */
enum dapi_err dapi_log_start(char *err, size_t errlen);
/* Bytes of access lines not written yet, and how many times a thread had to wait because the
 * writer was behind by all its batches. */
void dapi_log_stats(unsigned long long *pending, unsigned long long *waited);
/* 1 if dapi_log_open opened a file. */
int dapi_log_has_files(void);
/* Stops the writer, flushes, closes the files and goes back to stderr (at exit, once the
 * threads are gone). */
void dapi_log_close(void);
/* Writes out buffered access lines before it returns (without the writer, call it
 * periodically). */
void dapi_log_flush(void);
/* The same, for a fatal error on any thread: gives up rather than wait for the batch lock. */
void dapi_log_flush_fatal(void);

/* One request, for the access log. Strings may be NULL (method and path are then "-"; query,
 * client and request_id are left out). */
struct dapi_access {
    const char *method;
    const char *path;       /* decoded, without the query string */
    const char *query;      /* the query string as sent, without '?' */
    const char *client;     /* the client's address */
    const char *request_id; /* X-Request-Id, given or generated */
    int status;             /* 0: no response was sent */
    unsigned long long bytes;
    long long duration_us;
};
/* One access-log line (buffered, see log.c). Text:
 *   <ts> access GET "/path?query" 200 1234 0.456ms client=127.0.0.1 id=<request id>
 * JSON: {"ts":…,"level":"info","access":{"method","path","query","status","bytes",
 * "duration_ms","client","request_id"}}. Access lines are written whatever the level. */
void dapi_log_request(const struct dapi_access *a);
/* The same without query, client and request id. */
void dapi_log_access(const char *method, const char *path, int status, unsigned long long bytes,
                     long long duration_us);

#define dapi_info(...) dapi_log(DAPI_LOG_INFO, __VA_ARGS__)
#define dapi_warn(...) dapi_log(DAPI_LOG_WARN, __VA_ARGS__)
#define dapi_error(...) dapi_log(DAPI_LOG_ERROR, __VA_ARGS__)
#define dapi_debug(...) dapi_log(DAPI_LOG_DEBUG, __VA_ARGS__)

#endif
