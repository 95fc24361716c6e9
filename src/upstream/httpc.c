#include "upstream/httpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "base/clock.h"

struct dapi_httpc {
    CURL *curl;
};

static int aborting; /* set once at shutdown, read by the progress callback */

void dapi_httpc_abort_all(void)
{
    __atomic_store_n(&aborting, 1, __ATOMIC_SEQ_CST);
}

/* libcurl calls this about once a second while a transfer is idle, more often while data
 * flows: returning non-zero aborts the transfer. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    return __atomic_load_n(&aborting, __ATOMIC_SEQ_CST);
}

struct sink {
    struct dapi_httpc_resp *resp;
    uint64_t max;
    int fd;
    int over;
    int io_error;
    CURL *curl;
    const struct dapi_httpc_call *call;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t len = size * n;
    long status = 0;
    if(s->call->on_data &&
       curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200) {
        s->resp->body_bytes += len;
        if(s->call->on_data(s->call->on_data_arg, p, len)) {
            s->io_error = 1;
            return 0;
        }
        return len;
    }
    if(s->resp->body_bytes + len > s->max) {
        s->over = 1;
        return 0; /* aborts the transfer */
    }
    s->resp->body_bytes += len;
    if(s->fd >= 0) {
        size_t off = 0;
        while(off < len) {
            ssize_t w = write(s->fd, p + off, len - off);
            if(w < 0 && errno == EINTR)
                continue;
            if(w <= 0) {
                s->io_error = 1;
                return 0;
            }
            off += (size_t)w;
        }
        return len;
    }
    return dapi_buf_add(&s->resp->body, p, len) ? 0 : len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct dapi_httpc_resp *resp = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if(len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[128];
        size_t vl = len - (sizeof name - 1);
        if(vl >= sizeof v)
            vl = sizeof v - 1;
        memcpy(v, p + sizeof name - 1, vl);
        v[vl] = '\0';
        char *s = v;
        while(*s == ' ' || *s == '\t')
            s++;
        /* the value without the white space HTTP allows around it */
        size_t sl = strcspn(s, "\r\n");
        while(sl > 0 && (s[sl - 1] == ' ' || s[sl - 1] == '\t'))
            sl--;
        s[sl] = '\0';
        char *end;
        long long secs = strtoll(s, &end, 10);
        if(end != s && *end == '\0' && secs >= 0) {
            resp->retry_after_ms = secs > 86400 ? 86400000 : secs * 1000;
        } else {
            time_t when = curl_getdate(s, NULL);
            if(when > 0) {
                long long delta = (long long)when - (long long)dapi_clock_wall_s();
                resp->retry_after_ms = delta <= 0 ? 0 : delta > 86400 ? 86400000 : delta * 1000;
            }
        }
    }
    return len;
}

enum dapi_err dapi_httpc_new(struct dapi_httpc **out)
{
    static int global_done;
    if(!__atomic_exchange_n(&global_done, 1, __ATOMIC_SEQ_CST))
        curl_global_init(CURL_GLOBAL_DEFAULT);
    struct dapi_httpc *h = calloc(1, sizeof *h);
    if(!h || !(h->curl = curl_easy_init())) {
        free(h);
        return DAPI_ERR_NOMEM;
    }
    *out = h;
    return DAPI_OK;
}

void dapi_httpc_free(struct dapi_httpc *h)
{
    if(!h)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void dapi_httpc_resp_free(struct dapi_httpc_resp *resp)
{
    dapi_buf_free(&resp->body);
}

enum dapi_err dapi_httpc_do(struct dapi_httpc *h, const struct dapi_httpc_call *call,
                            struct dapi_httpc_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
    dapi_buf_init(&resp->body, call->max_body ? call->max_body : 64u << 20);
    if(__atomic_load_n(&aborting, __ATOMIC_SEQ_CST)) {
        snprintf(resp->error, sizeof resp->error, "aborted: the server is shutting down");
        resp->reason = "aborted: the server is shutting down";
        return DAPI_ERR_UPSTREAM;
    }
    CURL *c = h->curl;
    struct sink s = {resp, call->max_body ? call->max_body : 64u << 20, call->fd, 0, 0, c, call};
    struct curl_slist *hdrs = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, call->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     call->connect_timeout_ms ? call->connect_timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, call->timeout_ms ? call->timeout_ms : 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dapi");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    for(const char *const *p = call->headers; p && *p; p++) {
        struct curl_slist *n = curl_slist_append(hdrs, *p);
        if(!n) {
            curl_slist_free_all(hdrs);
            return DAPI_ERR_NOMEM;
        }
        hdrs = n;
    }
    /* no "Expect: 100-continue" round trip on POST */
    struct curl_slist *n = curl_slist_append(hdrs, "Expect:");
    if(n)
        hdrs = n;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if(call->body || strcmp(call->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->body ? call->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    }
    if(strcmp(call->method, "GET") != 0 && strcmp(call->method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call->method);

    CURLcode rc = curl_easy_perform(c);
    long status = 0, sent = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent);
    resp->request_sent = sent > 0;
    curl_slist_free_all(hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    if(rc == CURLE_OK) {
        resp->status = (int)status;
        return DAPI_OK;
    }
    if(s.over) {
        snprintf(resp->error, sizeof resp->error, "response larger than %llu bytes",
                 (unsigned long long)s.max);
        resp->reason = "response too large";
        return DAPI_ERR_TOO_LARGE;
    }
    snprintf(resp->error, sizeof resp->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    resp->reason = curl_easy_strerror(rc); /* (libcurl's fixed text for the code) */
    if(rc == CURLE_OPERATION_TIMEDOUT)
        return DAPI_ERR_TIMEOUT;
    return s.io_error ? DAPI_ERR_IO : DAPI_ERR_UPSTREAM;
}

char *dapi_httpc_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if(!e)
        return NULL;
    char *out = strdup(e);
    curl_free(e);
    return out;
}
