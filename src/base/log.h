/* Logging to stderr, one line per event, in `text` or `json` format (--log-format).
 * Thread-safe: each line is written with a single write(2). Never pass a secret. */
#ifndef DAPI_LOG_H
#define DAPI_LOG_H

enum dapi_log_level { DAPI_LOG_DEBUG, DAPI_LOG_INFO, DAPI_LOG_WARN, DAPI_LOG_ERROR };

/* json != 0 selects JSON lines. Call once at start, before threads exist. */
void dapi_log_setup(int json, enum dapi_log_level min);
void dapi_log(enum dapi_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes out buffered access lines (call periodically and before exit). */
void dapi_log_flush(void);
/* One access-log line (buffered, see log.c): method, path (no query string), status, bytes, duration. */
void dapi_log_access(const char *method, const char *path, int status, unsigned long long bytes,
                     long long duration_us);

#define dapi_info(...) dapi_log(DAPI_LOG_INFO, __VA_ARGS__)
#define dapi_warn(...) dapi_log(DAPI_LOG_WARN, __VA_ARGS__)
#define dapi_error(...) dapi_log(DAPI_LOG_ERROR, __VA_ARGS__)
#define dapi_debug(...) dapi_log(DAPI_LOG_DEBUG, __VA_ARGS__)

#endif
