/* smallq: load generator for small queries (bench/run.sh, part g).
 *
 * Each of C connections (one thread each, HTTP/1.1 keep-alive) loops: POST /api/queries with
 * {"sql_query": SQL} and `Cache-Control: no-cache` (every creation runs: no result reuse), then
 * GET /api/queries/SLUG/results?page_number=1, which waits for the run and answers 200. One
 * completed pair is one query. Prints queries/s and the number of failures.
 *
 *   smallq HOST PORT KEY CONNECTIONS SECONDS [SQL]
 *
 * Written in C with blocking sockets and no parsing beyond the status line, Content-Length and
 * the slug, so that it costs far less CPU than the server it loads (wrk's Lua would run a
 * script per request and cannot chain a POST and a GET on its answer without one). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *key, *sql;
static int port;
static double stop_at;
static atomic_ulong done, failed;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int connect_to(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {30, 0}; /* a page waits for its run: generous, but bounded */
    if(fd < 0)
        return -1;
    inet_pton(AF_INET, host, &a.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if(connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while(n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one response into buf (NUL-terminated body at *body); returns the status or -1. */
static int read_response(int fd, char *buf, size_t cap, char **body)
{
    size_t len = 0;
    char *end = NULL;
    while(!end) {
        if(len + 1 >= cap)
            return -1;
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf), clen = 0;
    for(char *h = strstr(buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
        if(strncasecmp(h + 2, "Content-Length:", 15) == 0)
            clen = strtoul(h + 17, NULL, 10);
    if(head + clen + 1 > cap)
        return -1;
    while(len < head + clen) {
        ssize_t r = recv(fd, buf + len, head + clen - len, 0);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            return -1;
        len += (size_t)r;
    }
    buf[head + clen] = '\0';
    *body = buf + head;
    return len > 12 ? atoi(buf + 9) : -1;
}

static void *client(void *arg)
{
    (void)arg;
    static __thread char buf[1 << 20];
    char req[4096], body[1024], slug[128];
    int fd = -1;
    snprintf(body, sizeof body, "{\"sql_query\":\"%s\"}", sql);
    while(now() < stop_at) {
        if(fd < 0 && (fd = connect_to()) < 0) {
            failed++;
            usleep(10000);
            continue;
        }
        int n = snprintf(req, sizeof req,
                         "POST /api/queries HTTP/1.1\r\nHost: %s\r\nx-api-key: %s\r\n"
                         "Content-Type: application/json\r\nCache-Control: no-cache\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         host, key, strlen(body), body);
        char *rb, *s, *e;
        int st;
        if(send_all(fd, req, (size_t)n) || (st = read_response(fd, buf, sizeof buf, &rb)) < 0) {
            close(fd);
            fd = -1;
            failed++;
            continue;
        }
        if(st != 200 || !(s = strstr(rb, "\"query_slug\"")) || !(s = strchr(s + 12, '"')) ||
           !(e = strchr(s + 1, '"')) || (size_t)(e - s) >= sizeof slug) {
            failed++;
            continue;
        }
        snprintf(slug, sizeof slug, "%.*s", (int)(e - s - 1), s + 1);
        n = snprintf(req, sizeof req,
                     "GET /api/queries/%s/results?page_number=1 HTTP/1.1\r\nHost: %s\r\n"
                     "x-api-key: %s\r\n\r\n",
                     slug, host, key);
        if(send_all(fd, req, (size_t)n) || (st = read_response(fd, buf, sizeof buf, &rb)) < 0) {
            close(fd);
            fd = -1;
            failed++;
            continue;
        }
        if(st == 200)
            done++;
        else
            failed++;
    }
    if(fd >= 0)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if(argc < 6) {
        fprintf(stderr, "usage: smallq HOST PORT KEY CONNECTIONS SECONDS [SQL]\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    key = argv[3];
    int conns = atoi(argv[4]);
    double secs = atof(argv[5]);
    sql = argc > 6 ? argv[6] : "SELECT 1";
    if(conns < 1 || conns > 1024 || secs <= 0 || strpbrk(sql, "\"\\")) {
        fprintf(stderr, "smallq: bad arguments (SQL without quotes or backslashes)\n");
        return 2;
    }
    pthread_t *t = calloc((size_t)conns, sizeof *t);
    double t0 = now();
    stop_at = t0 + secs;
    for(int i = 0; i < conns; i++)
        if(pthread_create(&t[i], NULL, client, NULL))
            return 1;
    for(int i = 0; i < conns; i++)
        pthread_join(t[i], NULL);
    double el = now() - t0;
    printf("queries: %lu\nfailed: %lu\nseconds: %.2f\nqueries/s: %.1f\n", (unsigned long)done,
           (unsigned long)failed, el, (double)done / el);
    free(t);
    return done ? 0 : 1;
}
