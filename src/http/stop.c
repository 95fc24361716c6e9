/* The end of the HTTP server (docs/design.md, Shutdown). First no new connection is kept
 * (dapi_http_quiesce). Then either libmicrohttpd is stopped (dapi_http_stop), once no
 * connection is suspended, or, while some request still waits for work that has not ended,
 * the server is left to the process's exit (dapi_http_abandon) after answering that request
 * itself. libmicrohttpd 0.9.75 aborts the process when it is stopped with a suspended
 * connection ("MHD_stop_daemon() called while we have suspended connections"), and the
 * handler that answers such a request later must find the request, and libmicrohttpd's
 * connection whose headers it may still read, where they were: so a request answered by the
 * stop is never resumed, completed or freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "http/http_int.h"

/* Not MHD_quiesce_daemon: in libmicrohttpd 0.9.75 it marks each worker quiesced and then
 * removes the listen socket from that worker's epoll set itself, while the worker, seeing
 * the mark, may remove it first; the second removal fails with ENOENT and libmicrohttpd
 * aborts the process ("Failed to remove listen FD from epoll set") — seen as a SIGABRT at
 * SIGTERM. Instead the accept policy closes every new connection from now on, at once: a
 * client is told to go elsewhere immediately rather than waiting in the backlog. */
void dapi_http_quiesce(struct dapi_http *h)
{
    atomic_store(&h->quiesced, 1);
}

unsigned long long dapi_http_send_raw(int fd, int status, const char *const *names,
                                      const char *const *values, int n, const char *rid,
                                      const char *body, size_t len, int head_only)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    const char *reason = dapi_http_reason(status);
    struct dapi_buf out;
    dapi_buf_init(&out, 4096 + len);
    dapi_buf_addf(&out,
                  "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                  status, reason && *reason ? reason : "Error", date, len);
    for(int i = 0; i < n; i++)
        dapi_buf_addf(&out, "%s: %s\r\n", names[i], values[i]);
    if(rid[0])
        dapi_buf_addf(&out, "X-Request-Id: %s\r\n", rid);
    dapi_buf_adds(&out, "\r\n");
    if(!head_only)
        dapi_buf_add(&out, body, len);
    unsigned long long sent = 0;
    size_t all;
    char *text = dapi_buf_take(&out, &all); /* (NULL if any part did not fit) */
    if(text) {
        ssize_t w = send(fd, text, all, MSG_NOSIGNAL | MSG_DONTWAIT);
        sent = w > 0 ? (unsigned long long)w : 0;
    }
    free(text);
    return sent;
}

int dapi_http_suspended(struct dapi_http *h)
{
    int n = 0;
    if(!h)
        return 0;
    pthread_mutex_lock(&h->wmu);
    for(struct dapi_conn *c = h->waiting; c; c = c->wnext) {
        struct dapi_req *r = c->wreq; /* (alive while listed: on_completed unlists it first) */
        pthread_mutex_lock(&r->mu);
        int waits = r->suspended;
        struct dapi_stream *s = r->stream; /* (the request's reference: alive while listed) */
        if(!waits && s) {
            pthread_mutex_lock(&s->mu);
            waits = s->suspended && !s->gone;
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&r->mu);
        n += waits;
    }
    pthread_mutex_unlock(&h->wmu);
    return n;
}

/* Answers r, whose handler has not answered (under h->wmu and r->mu), as dapi_http_abandon
 * says. */
static void answer_left(struct dapi_req *r, int status, const char *body, size_t len,
                        const char *retry_after)
{
    int fd = r->c->fd; /* (a listed request has its connection) */
    /* Answered, and it stays suspended: the handler's answer, whenever it comes, is dropped
     * (second_answer), and libmicrohttpd never looks at the connection again. */
    r->answered = r->left = 1;
    const char *names[DAPI_REQ_ADDED_HEADERS + 1], *values[DAPI_REQ_ADDED_HEADERS + 1];
    int n = 0;
    if(retry_after && *retry_after) {
        names[n] = "Retry-After";
        values[n++] = retry_after;
    }
    for(int i = 0; i < r->n_added; i++) { /* as any answer of the request would carry them */
        names[n] = r->added[i].name;
        values[n++] = r->added[i].value;
    }
    int head_only = r->method && strcmp(r->method, "HEAD") == 0;
    unsigned long long sent = dapi_http_send_raw(fd, status, names, values, n, r->rid, body, len,
                                                 head_only);
    shutdown(fd, SHUT_RDWR); /* the end of the answer; the process's exit closes it */
    long long dur = dapi_clock_mono_us() - r->start_us;
    struct dapi_access a = {r->method, r->path, r->query, r->client, r->rid, status, sent, dur};
    dapi_log_request(&a);
    dapi_metrics_request(r->route, r->method, status, sent, dur);
}

int dapi_http_abandon(struct dapi_http *h, int status, const char *body, size_t len,
                      const char *retry_after)
{
    int n = 0;
    if(!h)
        return 0;
    pthread_mutex_lock(&h->wmu);
    for(struct dapi_conn *c = h->waiting; c; c = c->wnext) {
        struct dapi_req *r = c->wreq;
        pthread_mutex_lock(&r->mu);
        /* (listed, deferred and not answered means suspended: on_request lists and suspends
         * it under h->wmu) */
        if(r->suspended && !r->answered) {
            answer_left(r, status, body, len, retry_after);
            n++;
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&h->wmu);
    /* Every other connection ends as a stop would end it, a stream waiting for its writer
     * included (its client sees the body cut); libmicrohttpd closes them. */
    pthread_mutex_lock(&h->mu);
    for(struct dapi_conn *c = h->open; c; c = c->next) {
        shutdown(c->fd, SHUT_RDWR);
        c->cut = 1;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

void dapi_http_stop(struct dapi_http *h)
{
    if(!h)
        return;
    if(h->sweeper_started) {
        pthread_mutex_lock(&h->mu);
        h->stopping = 1;
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->sweeper, NULL);
        h->sweeper_started = 0;
    }
    int n = dapi_http_suspended(h);
    if(n) {
        /* A caller's bug (dapi serve leaves instead): libmicrohttpd would abort. */
        static const char body[] = "{\"error\":\"Server shutting down\"}";
        dapi_error("http: stopped with %d connection(s) still waiting for an answer: the HTTP "
                   "server is left to the process's exit",
                   n);
        dapi_http_abandon(h, 503, body, sizeof body - 1, "5");
        return;
    }
    dapi_http_daemon_end(h);
}
