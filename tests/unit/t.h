/* A tiny unit-test harness: each tests/unit/<module>/test_*.c (the tests of src/<module>/) is
 * its own process (a crash fails only that file) and ends by printing "N passed, N failed";
 * scripts/test.sh adds them up.
 * Assertions print both sides. */
#ifndef DAPI_T_H
#define DAPI_T_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"

/* The counts of this process's checks (defined in t.c, so the helpers there count too). */
extern int t_passed, t_failed;

#define T_CHECK(cond, ...)                                       \
    do {                                                         \
        if(cond) {                                               \
            t_passed++;                                          \
        } else {                                                 \
            t_failed++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fputc('\n', stderr);                                 \
        }                                                        \
    } while(0)

#define T_EQ_INT(a, b)                                                              \
    do {                                                                            \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                     \
        T_CHECK(t_a_ == t_b_, "%s == %s: got %lld, want %lld", #a, #b, t_a_, t_b_); \
    } while(0)

#define T_EQ_STR(a, b)                                                                          \
    do {                                                                                        \
        const char *t_a_ = (a), *t_b_ = (b);                                                    \
        T_CHECK(t_a_ && t_b_ && strcmp(t_a_, t_b_) == 0, "%s == %s:\n  got  [%s]\n  want [%s]", \
                #a, #b, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                        \
    } while(0)

#define T_EQ_MEM(a, alen, b)                                                                   \
    do {                                                                                       \
        const char *t_a_ = (a), *t_b_ = (b);                                                   \
        size_t t_al_ = (alen), t_bl_ = strlen(t_b_);                                           \
        T_CHECK(t_a_ && t_al_ == t_bl_ && memcmp(t_a_, t_b_, t_al_) == 0,                      \
                "%s == %s:\n  got  [%.*s]\n  want [%s]", #a, #b, (int)t_al_, t_a_ ? t_a_ : "", \
                t_b_);                                                                         \
    } while(0)

#define T_DONE()                                                            \
    do {                                                                    \
        printf("%s: %d passed, %d failed\n", __FILE__, t_passed, t_failed); \
        return t_failed ? 1 : 0;                                            \
    } while(0)

/* ---- shared helpers (tests/unit/t.c, linked into every unit binary) -------------------
 * Each failure below is a failed check with its reason; none exits. */

/* Makes a fresh directory /tmp/dapi-<name>-XXXXXX and writes its path to out (n bytes).
 * 0, or -1. Remove it with t_rm_rf. */
int t_tmpdir(char *out, size_t n, const char *name);
/* Removes path and everything below it; links are removed, never followed. */
void t_rm_rf(const char *path);
/* 1 if path exists (a dangling link counts as missing). */
int t_exists(const char *path);
/* Writes len bytes to path (created or truncated, mode 0644). */
void t_write_n(const char *path, const void *data, size_t len);
/* Writes a string (without its terminator) to path. */
void t_write(const char *path, const char *text);
/* t_write / mkdir (0755; an existing one is fine) of dir/rel. */
void t_write_in(const char *dir, const char *rel, const char *text);
void t_mkdir_in(const char *dir, const char *rel);

/* A scratch lake for engine tests: root = a fresh /tmp/dapi-<name>-XXXXXX, with empty
 * root/data (the lake) and root/state. */
struct t_lake {
    char root[128], data[160], state[160];
};
/* 0, or -1 (nothing to clean up then). Remove it with t_rm_rf(l->root). */
int t_lake_make(struct t_lake *l, const char *name);
/* Opens an engine on l's data and state dirs with o's other settings (memory_limit "1GB" when
 * o leaves it NULL); checks that it opened. NULL on failure. */
struct dapi_engine *t_engine_open(const struct t_lake *l, struct dapi_engine_opts o);
/* Makes l->root/rel a symbolic link to target (a check). */
void t_lake_link(const struct t_lake *l, const char *target, const char *rel);
/* sql with every DATA replaced by l->data (a static buffer: the next call overwrites it). */
const char *t_lake_expand(const struct t_lake *l, const char *sql);

/* ---- loopback HTTP: raw sockets, one-message reads and a fake server -------------------
 * Sockets have 2 s send/receive timeouts, so a test that waits for an answer never hangs. */

/* A TCP connection to 127.0.0.1:port: the fd, or -1 with errno set (no check made). */
int t_connect(int port);
/* Sends all of data: 0, or -1. */
int t_send(int fd, const char *data, size_t len);
/* A port on 127.0.0.1 that nothing listens on (bound, then closed): connecting is refused. */
int t_unused_port(void);

/* One HTTP/1.x message: the head (start line and headers, without the blank line) and a
 * body of Content-Length bytes (none without that header). */
struct t_http_msg {
    char head[16384];
    char *body; /* NUL-terminated; owned (t_http_msg_free) */
    size_t body_len;
};
/* Reads exactly one message from fd (nothing past its body): 0, or -1 if the peer closed,
 * timed out or sent something malformed first. m is always initialised. */
int t_http_read(int fd, struct t_http_msg *m);
void t_http_msg_free(struct t_http_msg *m);
/* The status of a response ("HTTP/1.1 200 OK" gives 200), or 0. */
int t_http_status(const struct t_http_msg *m);
/* The value of header name (case-insensitive) copied into out, or NULL if absent. */
const char *t_http_header(const struct t_http_msg *m, const char *name, char *out, size_t n);

/* A fake HTTP server on 127.0.0.1 (a free port) for client tests: one thread, connections
 * one at a time, one request each. fn(arg, req, fd) runs on the server's thread for each
 * request and writes its answer to fd (t_srv_reply, raw bytes, or nothing); the connection
 * is closed when it returns. */
typedef void (*t_srv_fn)(void *arg, const struct t_http_msg *req, int fd);
struct t_srv;
struct t_srv *t_srv_start(t_srv_fn fn, void *arg); /* NULL after a failed check */
int t_srv_port(const struct t_srv *s);
/* Requests read so far. */
int t_srv_requests(struct t_srv *s);
/* A copy of the last request's head and body (truncated to the buffers). */
void t_srv_last(struct t_srv *s, char *head, size_t head_cap, char *body, size_t body_cap);
void t_srv_stop(struct t_srv *s);
/* Writes a response: status line, Content-Type: application/json, Content-Length,
 * Connection: close, extra (whole header lines, each ending in CRLF, or NULL), body.
 * 0, or -1 if it could not be sent (the client may have given up: no check is made). */
int t_srv_reply(int fd, int status, const char *extra, const char *body);
/* Waits until the peer closes fd (or ms pass): a server that never answers. */
void t_srv_hang(int fd, int ms);

/* ---- the query registry (src/store) ---------------------------------------------------- */

struct dapi_queries;

/* Makes (empties) the directory root/name and writes its path to out. */
void t_fresh_dir(char *out, size_t n, const char *root, const char *name);
/* dapi_queries_open with unlimited per-key limits; a failed open is a failed check (NULL). */
struct dapi_queries *
t_registry_open(const char *state, int64_t retention, uint64_t max_bytes, int64_t now_s,
                void (*on_unfinished)(void *arg, const char *slug, const char *sql), void *arg);
struct dapi_result;
/* The decoded rows of page of r (any format) into *data (valid until the next call; "" for
 * a page past the end or one that cannot be decoded, which is a failed check). */
void t_result_page(const struct dapi_result *r, uint64_t page, const char **data, size_t *len);
/* Writes a real result of `rows` I64 rows (0, 3, 6 …) for slug; returns the file's size. */
/* Makes a query's directory, as a run writing its result file does. */
void t_query_dir_make(struct dapi_queries *qs, const char *slug);
uint64_t t_result_write(struct dapi_queries *qs, const char *slug, uint64_t rows);
/* The same result (rows < DAPI_PAGE_ROWS), kept in memory by its writer: its image (free
 * it), for dapi_queries_finish_small. */
void *t_result_small(uint64_t rows, size_t *len);
/* The state of slug as key sees it at now_s, or -1 (with *err_out the lookup's error). */
int t_registry_state(struct dapi_queries *qs, const char *slug, const unsigned char *key,
                     int64_t now_s, enum dapi_err *err_out);

/* A registry waiter's callback (dapi_queries_wait) that counts its calls. */
struct t_waited {
    int calls;
    int timed_out;
};
void t_on_wake(void *arg, int timed_out);

#endif
