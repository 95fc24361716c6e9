/* The helpers every unit test may use (declared in t.h): temporary directories, files, a
 * scratch lake with an engine on it, and loopback HTTP (sockets, a fake server). Linked into
 * each unit binary; the counters live here so that a check made by a helper counts in the
 * test that called it. */
#include "t.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "store/queries.h"
#include "store/result.h"

int t_passed, t_failed;

int t_tmpdir(char *out, size_t n, const char *name)
{
    int len = snprintf(out, n, "/tmp/dapi-%s-XXXXXX", name);
    if(len < 0 || (size_t)len >= n || !mkdtemp(out)) {
        T_CHECK(0, "temporary directory for %s: %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

void t_rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int t_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

void t_write_n(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    T_CHECK(f != NULL, "create %s: %s", path, strerror(errno));
    if(!f)
        return;
    size_t wrote = fwrite(data, 1, len, f);
    int closed = fclose(f);
    T_CHECK(wrote == len && closed == 0, "write %s", path);
}

void t_write(const char *path, const char *text)
{
    t_write_n(path, text, strlen(text));
}

void t_write_in(const char *dir, const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    t_write(p, text);
}

void t_mkdir_in(const char *dir, const char *rel)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    T_CHECK(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
}

int t_lake_make(struct t_lake *l, const char *name)
{
    if(t_tmpdir(l->root, sizeof l->root, name))
        return -1;
    snprintf(l->data, sizeof l->data, "%s/data", l->root);
    snprintf(l->state, sizeof l->state, "%s/state", l->root);
    t_mkdir_in(l->root, "data");
    t_mkdir_in(l->root, "state");
    return 0;
}

struct dapi_engine *t_engine_open(const struct t_lake *l, struct dapi_engine_opts o)
{
    char err[1024] = "";
    struct dapi_engine *e = NULL;
    o.data_dir = l->data;
    o.state_dir = l->state;
    if(!o.memory_limit)
        o.memory_limit = "1GB";
    T_CHECK(dapi_engine_open(&e, &o, err, sizeof err) == DAPI_OK, "engine opens: %s", err);
    return e;
}

/* ---- loopback HTTP ------------------------------------------------------------------- */

static void set_timeouts(int fd)
{
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int t_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if(fd < 0)
        return -1;
    set_timeouts(fd);
    struct sockaddr_in a = loopback(port);
    if(connect(fd, (struct sockaddr *)&a, sizeof a)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int t_send(int fd, const char *data, size_t len)
{
    while(len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if(n < 0 && errno == EINTR)
            continue;
        if(n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A listening socket on 127.0.0.1 and a free port; -1 on failure. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t alen = sizeof a;
    if(fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16) ||
       getsockname(fd, (struct sockaddr *)&a, &alen)) {
        T_CHECK(0, "listen on 127.0.0.1: %s", strerror(errno));
        if(fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int t_unused_port(void)
{
    int port = 0, fd = listen_any(&port);
    if(fd >= 0)
        close(fd);
    return port;
}

const char *t_http_header(const struct t_http_msg *m, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for(const char *p = strstr(m->head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if(strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            v += strspn(v, " \t");
            size_t vl = strcspn(v, "\r\n");
            snprintf(out, n, "%.*s", (int)vl, v);
            return out;
        }
    }
    return NULL;
}

int t_http_status(const struct t_http_msg *m)
{
    int st = 0;
    return sscanf(m->head, "HTTP/%*d.%*d %d", &st) == 1 ? st : 0;
}

void t_http_msg_free(struct t_http_msg *m)
{
    free(m->body);
    m->body = NULL;
    m->body_len = 0;
}

int t_http_read(int fd, struct t_http_msg *m)
{
    size_t n = 0;
    m->head[0] = '\0';
    m->body = NULL;
    m->body_len = 0;
    /* A byte at a time, so that nothing of a next message is consumed. */
    while(n < 4 || memcmp(m->head + n - 4, "\r\n\r\n", 4) != 0) {
        if(n + 1 >= sizeof m->head)
            return -1;
        ssize_t r = recv(fd, m->head + n, 1, 0);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return -1;
        n++;
    }
    m->head[n - 4] = '\0';
    char v[64];
    unsigned long long len = 0;
    if(t_http_header(m, "Content-Length", v, sizeof v) &&
       (sscanf(v, "%llu", &len) != 1 || len > (64u << 20)))
        return -1;
    m->body = malloc((size_t)len + 1);
    if(!m->body)
        return -1;
    while(m->body_len < len) {
        ssize_t r = recv(fd, m->body + m->body_len, (size_t)len - m->body_len, 0);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            break;
        m->body_len += (size_t)r;
    }
    m->body[m->body_len] = '\0';
    return m->body_len == len ? 0 : -1;
}

struct t_srv {
    int fd, port;
    t_srv_fn fn;
    void *arg;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu; /* guards the fields below */
    int requests;
    char last_head[16384];
    char *last_body;
};

static void *srv_main(void *arg)
{
    struct t_srv *s = arg;
    while(!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if(poll(&p, 1, 20) <= 0)
            continue;
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if(c < 0)
            continue;
        set_timeouts(c);
        struct t_http_msg m;
        if(t_http_read(c, &m) == 0) {
            pthread_mutex_lock(&s->mu);
            s->requests++;
            snprintf(s->last_head, sizeof s->last_head, "%s", m.head);
            free(s->last_body);
            s->last_body = strdup(m.body);
            pthread_mutex_unlock(&s->mu);
            s->fn(s->arg, &m, c);
        }
        t_http_msg_free(&m);
        close(c);
    }
    return NULL;
}

struct t_srv *t_srv_start(t_srv_fn fn, void *arg)
{
    struct t_srv *s = calloc(1, sizeof *s);
    T_CHECK(s != NULL, "fake server: out of memory");
    if(!s)
        return NULL;
    s->fn = fn;
    s->arg = arg;
    atomic_init(&s->stop, 0);
    pthread_mutex_init(&s->mu, NULL);
    s->fd = listen_any(&s->port);
    if(s->fd >= 0 && pthread_create(&s->thread, NULL, srv_main, s) == 0)
        return s;
    T_CHECK(s->fd < 0, "fake server thread starts");
    if(s->fd >= 0)
        close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

int t_srv_port(const struct t_srv *s)
{
    return s->port;
}

int t_srv_requests(struct t_srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->requests;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void t_srv_last(struct t_srv *s, char *head, size_t head_cap, char *body, size_t body_cap)
{
    pthread_mutex_lock(&s->mu);
    if(head)
        snprintf(head, head_cap, "%s", s->last_head);
    if(body)
        snprintf(body, body_cap, "%s", s->last_body ? s->last_body : "");
    pthread_mutex_unlock(&s->mu);
}

void t_srv_stop(struct t_srv *s)
{
    if(!s)
        return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s->last_body);
    free(s);
}

int t_srv_reply(int fd, int status, const char *extra, const char *body)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d Test\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, strlen(body), extra ? extra : "");
    if(n < 0 || (size_t)n >= sizeof head)
        return -1;
    return t_send(fd, head, (size_t)n) || t_send(fd, body, strlen(body)) ? -1 : 0;
}

void t_srv_hang(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[256];
    while(poll(&p, 1, ms) > 0 && recv(fd, b, sizeof b, 0) > 0) {
    }
}

void t_lake_link(const struct t_lake *l, const char *target, const char *rel)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", l->root, rel);
    T_CHECK(symlink(target, p) == 0, "symlink %s", p);
}

const char *t_lake_expand(const struct t_lake *l, const char *sql)
{
    static char out[8192];
    size_t n = 0;
    out[0] = '\0';
    for(const char *at; (at = strstr(sql, "DATA")) && n < sizeof out; sql = at + 4)
        n += (size_t)snprintf(out + n, sizeof out - n, "%.*s%s", (int)(at - sql), sql, l->data);
    if(n < sizeof out)
        snprintf(out + n, sizeof out - n, "%s", sql);
    return out;
}

/* ---- the query registry ---------------------------------------------------------------- */

void t_fresh_dir(char *out, size_t n, const char *root, const char *name)
{
    snprintf(out, n, "%s/%s", root, name);
    t_rm_rf(out);
    T_CHECK(mkdir(out, 0700) == 0, "mkdir %s: %s", out, strerror(errno));
}

struct dapi_queries *
t_registry_open(const char *state, int64_t retention, uint64_t max_bytes, int64_t now_s,
                void (*on_unfinished)(void *arg, const char *slug, const char *sql), void *arg)
{
    struct dapi_queries *qs = NULL;
    char err[512] = "";
    enum dapi_err r = dapi_queries_open(&qs, state, retention, max_bytes, now_s, on_unfinished,
                                        NULL, arg, err, sizeof err);
    T_CHECK(r == DAPI_OK && qs, "open %s: %d %s", state, (int)r, err);
    return qs;
}

void t_result_page(const struct dapi_result *r, uint64_t page, const char **data, size_t *len)
{
    static char *last;
    free(last);
    last = NULL;
    enum dapi_err e = dapi_result_page_copy(r, page, &last, len);
    T_CHECK(e == DAPI_OK, "page %llu decodes (got %d)", (unsigned long long)page, (int)e);
    *data = last ? last : "";
    if(!last)
        *len = 0;
}

void t_query_dir_make(struct dapi_queries *qs, const char *slug)
{
    char d[4096];
    dapi_queries_dir(qs, slug, d, sizeof d); /* (makes it) */
    T_CHECK(t_exists(d), "query directory %s", d);
}

/* Writes rows I64 rows (0, 3, 6 …) of one column "v" and finishes; returns the result's size. */
static uint64_t write_rows(struct dapi_result_writer *w, uint64_t rows)
{
    const char *names[] = {"v"};
    static int64_t data[1024];
    for(uint64_t i = 0; i < rows && i < sizeof data / sizeof data[0]; i++)
        data[i] = (int64_t)i * 3;
    struct dapi_colvec c;
    memset(&c, 0, sizeof c);
    c.type = DAPI_CT_I64;
    c.data = data;
    T_EQ_INT(dapi_result_sink.begin(w, 1, names, NULL), DAPI_OK);
    T_EQ_INT(dapi_result_sink.chunk(w, &c, 1, rows), DAPI_OK);
    uint64_t r = 0, p = 0, bytes = 0;
    T_EQ_INT(dapi_result_writer_finish(w, &r, &p, &bytes), DAPI_OK);
    return bytes;
}

uint64_t t_result_write(struct dapi_queries *qs, const char *slug, uint64_t rows)
{
    char rp[4096];
    t_query_dir_make(qs, slug); /* (what a run writing its result file does) */
    dapi_queries_result_path(qs, slug, rp, sizeof rp);
    struct dapi_result_limits lim = {UINT64_MAX, UINT64_MAX, NULL};
    struct dapi_result_writer *w = NULL;
    T_EQ_INT(dapi_result_writer_open(&w, rp, &lim), DAPI_OK);
    if(!w)
        return 0;
    uint64_t bytes = write_rows(w, rows);
    dapi_result_writer_free(w);
    return bytes;
}

void *t_result_small(uint64_t rows, size_t *len)
{
    struct dapi_result_limits lim = {UINT64_MAX, UINT64_MAX, NULL};
    struct dapi_result_writer *w = NULL;
    *len = 0;
    /* (a result kept in memory never touches its path) */
    T_EQ_INT(dapi_result_writer_open(&w, "/nonexistent/result.bin", &lim), DAPI_OK);
    if(!w)
        return NULL;
    dapi_result_writer_keep_small(w, 64 * 1024);
    write_rows(w, rows);
    const void *image = dapi_result_writer_small(w, len);
    void *copy = image ? malloc(*len) : NULL;
    T_CHECK(copy != NULL, "a small result kept in memory");
    if(copy)
        memcpy(copy, image, *len);
    dapi_result_writer_free(w);
    return copy;
}

int t_registry_state(struct dapi_queries *qs, const char *slug, const unsigned char *key,
                     int64_t now_s, enum dapi_err *err_out)
{
    struct dapi_qview v;
    enum dapi_err r = dapi_queries_get(qs, slug, key, now_s, &v);
    if(err_out)
        *err_out = r;
    if(r)
        return -1;
    int s = (int)v.state;
    dapi_queries_release(qs, &v);
    return s;
}

void t_on_wake(void *arg, int timed_out)
{
    struct t_waited *w = arg;
    w->calls++;
    w->timed_out = timed_out;
}
