#include "backend/nekt_http.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "auth/keys.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "base/metrics.h"
#include "upstream/httpc.h"
#include "upstream/retry.h"

/* One keep-alive HTTP handle per worker thread, freed when the thread ends. */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *p)
{
    dapi_httpc_free(p);
}

static void tl_make(void)
{
    pthread_key_create(&tl_key, tl_free);
}

void nekt_http_init(void)
{
    pthread_once(&tl_once, tl_make);
}

static struct dapi_httpc *thread_http(void)
{
    pthread_once(&tl_once, tl_make);
    struct dapi_httpc *h = pthread_getspecific(tl_key);
    if(!h && !dapi_httpc_new(&h))
        pthread_setspecific(tl_key, h);
    return h;
}

/* The upstream's own words, as the reference extracts them. */
static void upstream_message(const char *body, size_t len, char *out, size_t n)
{
    struct dapi_jv *doc = NULL;
    const char *m = NULL;
    if(len && !dapi_jv_parse(body, len, 32, &doc, NULL, 0) && dapi_jv_type(doc) == DAPI_J_OBJECT) {
        struct dapi_jv *errs = dapi_jv_get(doc, "errors");
        if(errs && dapi_jv_type(errs) == DAPI_J_ARRAY)
            m = dapi_jv_str(dapi_jv_get(dapi_jv_index(errs, 0), "detail"), NULL);
        const char *const keys[] = {"detail", "message", "error"};
        for(size_t i = 0; !m && i < 3; i++)
            m = dapi_jv_str(dapi_jv_get(doc, keys[i]), NULL);
    }
    if(m)
        snprintf(out, n, "%s", m);
    else
        snprintf(out, n, "%.*s", (int)(len > 300 ? 300 : len), len ? body : "(empty body)");
    dapi_jv_free(doc);
}

/* What a client is told of a failed transfer: the kind of failure in a few words, never the
 * transport's own text, which names --nekt-url's host and port or a presigned URL's host
 * (the server log has it). */
static const char *reason_of(const struct dapi_httpc_resp *resp)
{
    return resp->reason ? resp->reason : "no answer";
}

static uint64_t rand64(void)
{
    uint64_t r = 0;
    dapi_random(&r, sizeof r);
    return r;
}

/* Performs call with the retry policy; the last response is left in resp. */
static enum dapi_err with_retries(const struct dapi_backend_env *env,
                                  const struct dapi_httpc_call *call, int idempotent,
                                  const char *what, struct dapi_httpc_resp *resp)
{
    const struct dapi_config *cfg = env->cfg;
    struct dapi_retry_policy pol = {(int)cfg->upstream_attempts, 200, 5000,
                                    cfg->upstream_retry_time * 1000};
    struct dapi_httpc *h = thread_http();
    if(!h) {
        memset(resp, 0, sizeof *resp);
        snprintf(resp->error, sizeof resp->error, "out of memory");
        resp->reason = "out of memory";
        return DAPI_ERR_NOMEM;
    }
    int64_t t0 = env->mono_ms();
    for(int attempt = 1;; attempt++) {
        enum dapi_err result = dapi_httpc_do(h, call, resp);
        struct dapi_retry_in in = {attempt,
                                   result == DAPI_OK ? DAPI_OK : result,
                                   resp->status,
                                   resp->request_sent,
                                   resp->retry_after_ms,
                                   env->mono_ms() - t0,
                                   idempotent,
                                   rand64()};
        const char *why;
        int64_t delay = dapi_retry_next(&pol, &in, &why);
        int ok = !result && resp->status < 400;
        if(delay >= 0 && atomic_load(env->stopping)) {
            delay = -1;
            why = "the server is stopping";
        }
        dapi_metrics_upstream(delay >= 0 ? "retry" : ok ? "ok" : "error");
        if(delay < 0) {
            if(ok && attempt > 1) /* a retry that worked is no giving up */
                dapi_info("upstream: %s: succeeded at attempt %d", what, attempt);
            else if(!ok)
                dapi_info("upstream: %s: giving up after %d attempt(s) (%s): %s", what, attempt,
                          result ? resp->error : "an HTTP error", why);
            return result;
        }
        char what_failed[300];
        if(result)
            snprintf(what_failed, sizeof what_failed, "%s", resp->error);
        else
            snprintf(what_failed, sizeof what_failed, "HTTP %d", resp->status);
        dapi_warn("upstream: %s failed (%s: %s); retrying in %lld ms, %d attempt(s) left", what,
                  what_failed, why, (long long)delay, pol.max_attempts - attempt);
        dapi_httpc_resp_free(resp);
        dapi_clock_sleep_ms(delay);
    }
}

enum dapi_err nekt_call(const struct dapi_backend_env *env, const char *method, const char *path,
                        const char *body, const char *key, int idempotent, struct nekt_reply *out)
{
    const struct dapi_config *cfg = env->cfg;
    char url[4096], keyh[4200], what[300];
    memset(out, 0, sizeof *out);
    size_t bl = strlen(cfg->nekt_url);
    while(bl && cfg->nekt_url[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s%s", (int)bl, cfg->nekt_url, path);
    snprintf(keyh, sizeof keyh, "x-api-key: %s", key);
    snprintf(what, sizeof what, "%s %s", method, path);
    const char *headers[] = {keyh, "Content-Type: application/json", "Accept: application/json",
                             NULL};
    struct dapi_httpc_call call = {method,
                                   url,
                                   headers,
                                   body,
                                   body ? strlen(body) : 0,
                                   cfg->upstream_connect_timeout * 1000,
                                   cfg->upstream_timeout * 1000,
                                   (uint64_t)cfg->max_upstream_response_bytes,
                                   -1,
                                   NULL,
                                   NULL};
    struct dapi_httpc_resp resp;
    enum dapi_err result = with_retries(env, &call, idempotent, what, &resp);
    out->status = resp.status;
    if(result == DAPI_ERR_TIMEOUT) { /* connecting or answering took too long */
        snprintf(out->details, sizeof out->details, "Nekt did not answer %.200s in time: %.200s",
                 what, reason_of(&resp));
        result = DAPI_ERR_UPSTREAM_TIMEOUT;
        goto out;
    }
    if(result == DAPI_ERR_TOO_LARGE) {
        snprintf(out->details, sizeof out->details, "Nekt's answer to %.200s is too large: %.200s",
                 what, resp.error); /* (dapi's own text: the limit, no host) */
        result = DAPI_ERR_UPSTREAM;
        goto out;
    }
    if(result) {
        snprintf(out->details, sizeof out->details, "cannot reach Nekt for %.200s: %.200s", what,
                 reason_of(&resp));
        result = DAPI_ERR_UPSTREAM;
        goto out;
    }
    if(resp.status < 200 || resp.status > 299) {
        char m[512];
        upstream_message(resp.body.data, resp.body.len, m, sizeof m);
        snprintf(out->details, sizeof out->details, "Nekt answered %d to %.200s: %.400s",
                 resp.status, what, m);
        /* 408 and 429 are Nekt's trouble (retried until the attempts ran out), not a request
         * the client could correct */
        result = resp.status == 401   ? DAPI_ERR_AUTH
                 : resp.status == 403 ? DAPI_ERR_FORBIDDEN
                 : resp.status == 404 ? DAPI_ERR_NOT_FOUND
                 : resp.status == 408 || resp.status == 429 || resp.status >= 500
                     ? DAPI_ERR_UPSTREAM
                     : DAPI_ERR_INVALID;
        goto out;
    }
    char perr[200];
    if(dapi_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, 64, &out->doc, perr,
                     sizeof perr) ||
       dapi_jv_type(out->doc) != DAPI_J_OBJECT) {
        snprintf(out->details, sizeof out->details,
                 "Nekt sent an invalid answer to %.200s (%.200s): %.120s", what,
                 out->doc ? "not a JSON object" : perr,
                 resp.body.data ? resp.body.data : "(empty)");
        dapi_jv_free(out->doc);
        out->doc = NULL;
        result = DAPI_ERR_UPSTREAM;
    }
out:
    dapi_httpc_resp_free(&resp);
    return result;
}

enum dapi_err nekt_download(const struct dapi_backend_env *env, const char *url, const char *path,
                            uint64_t max, uint64_t *got, char *details, size_t dlen)
{
    const struct dapi_config *cfg = env->cfg;
    enum dapi_err result;
    *got = 0;
    int fd = -1;
    struct dapi_httpc_resp resp;
    memset(&resp, 0, sizeof resp);
    struct dapi_retry_policy pol = {(int)cfg->upstream_attempts, 200, 5000,
                                    cfg->upstream_retry_time * 1000};
    int64_t t0 = env->mono_ms();
    struct dapi_httpc *h = thread_http();
    if(!h)
        return DAPI_ERR_NOMEM;
    for(int attempt = 1;; attempt++) {
        /* every attempt starts a fresh file: a partial body never survives */
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if(fd < 0) { /* the path is the server's business: the client gets why only */
            int e = errno, full = e == ENOSPC || e == EDQUOT;
            dapi_warn("nekt: cannot write %s: %s", path, strerror(e));
            snprintf(details, dlen, "%scannot write the file downloaded from Nekt: %s",
                     full ? "no space left on the state disk (--state-dir): " : "", strerror(e));
            return full ? DAPI_ERR_BUSY : DAPI_ERR_IO;
        }
        struct dapi_httpc_call call = {"GET",
                                       url,
                                       NULL,
                                       NULL,
                                       0,
                                       cfg->upstream_connect_timeout * 1000,
                                       cfg->upstream_timeout * 1000,
                                       max,
                                       fd,
                                       NULL,
                                       NULL};
        result = dapi_httpc_do(h, &call, &resp);
        int bad_close = close(fd);
        fd = -1;
        if(!result && bad_close)
            result = DAPI_ERR_IO;
        struct dapi_retry_in in = {attempt,
                                   result,
                                   resp.status,
                                   resp.request_sent,
                                   resp.retry_after_ms,
                                   env->mono_ms() - t0,
                                   1,
                                   0};
        dapi_random(&in.random, sizeof in.random);
        const char *why;
        int64_t delay = dapi_retry_next(&pol, &in, &why);
        if(delay < 0 || atomic_load(env->stopping)) {
            dapi_metrics_upstream(!result && resp.status < 400 ? "ok" : "error");
            break;
        }
        dapi_metrics_upstream("retry");
        dapi_warn("upstream: download failed (%s); retrying in %lld ms, %d attempt(s) left",
                  result ? resp.error : why, (long long)delay, pol.max_attempts - attempt);
        dapi_httpc_resp_free(&resp);
        dapi_clock_sleep_ms(delay);
    }
    *got = resp.body_bytes;
    if(result == DAPI_ERR_TOO_LARGE) {
        snprintf(details, dlen,
                 "the result files are larger than %llu bytes "
                 "(--max-upstream-bytes)",
                 (unsigned long long)max);
    } else if(result == DAPI_ERR_TIMEOUT) {
        dapi_warn("upstream: downloading a result file timed out: %s", resp.error);
        snprintf(details, dlen, "downloading a result file timed out: %s", reason_of(&resp));
        result = DAPI_ERR_UPSTREAM_TIMEOUT;
    } else if(result) {
        dapi_warn("upstream: cannot download a result file: %s",
                  resp.error[0] ? resp.error : "writing it failed");
        snprintf(details, dlen, "cannot download a result file: %s",
                 result == DAPI_ERR_IO && !resp.reason ? "writing it to the state dir failed"
                                                       : reason_of(&resp));
        if(result != DAPI_ERR_IO)
            result = DAPI_ERR_UPSTREAM;
    } else if(resp.status == 400 || resp.status == 401 || resp.status == 403) {
        snprintf(details, dlen, "the presigned URL was refused (%d): expired", resp.status);
        result = DAPI_ERR_FORBIDDEN;
    } else if(resp.status != 200) {
        snprintf(details, dlen, "downloading a result file failed with HTTP %d", resp.status);
        result = DAPI_ERR_UPSTREAM;
    }
    if(result)
        unlink(path);
    dapi_httpc_resp_free(&resp);
    return result;
}

struct nekt_reach {
    const struct dapi_backend_env *env;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, checked, ok;
    char why[300];
};

/* One check: any HTTP answer from --nekt-url means the upstream is there (0). Else -1 with why
 * (for /api/ready, which needs no key: the kind of failure and the setting's name, never its
 * host or address) and detail (the transport's own text, which may name them: for the server
 * log). */
static int reach_once(const struct dapi_backend_env *env, char *why, size_t n, char *detail,
                      size_t dn)
{
    struct dapi_httpc *h = thread_http();
    if(!h) {
        snprintf(why, n, "out of memory");
        snprintf(detail, dn, "out of memory");
        return -1;
    }
    struct dapi_httpc_call call = {.method = "GET",
                                   .url = env->cfg->nekt_url,
                                   .connect_timeout_ms = 2000,
                                   .timeout_ms = 3000,
                                   .max_body = 64 * 1024,
                                   .fd = -1};
    struct dapi_httpc_resp resp;
    memset(&resp, 0, sizeof resp);
    enum dapi_err result = dapi_httpc_do(h, &call, &resp);
    int ok = resp.status > 0 || result == DAPI_ERR_TOO_LARGE; /* an answer: the body is not ours */
    if(!ok) {
        const char *fallback = dapi_err_message(result ? result : DAPI_ERR_UPSTREAM);
        snprintf(why, n, "no answer from --nekt-url: %s", resp.reason ? resp.reason : fallback);
        snprintf(detail, dn, "%s", resp.error[0] ? resp.error : fallback);
    }
    dapi_httpc_resp_free(&resp);
    return ok ? 0 : -1;
}

static void *reach_run(void *arg)
{
    struct nekt_reach *r = arg;
    pthread_mutex_lock(&r->mu);
    while(!r->stop) {
        pthread_mutex_unlock(&r->mu);
        char why[300] = "", detail[300] = "";
        int ok = reach_once(r->env, why, sizeof why, detail, sizeof detail) == 0;
        pthread_mutex_lock(&r->mu);
        if(!ok && (r->ok || !r->checked)) /* the operator's log gets the whole story, once */
            dapi_log(DAPI_LOG_WARN, "upstream check: %s (%s)", why, detail);
        else if(ok && r->checked && !r->ok)
            dapi_log(DAPI_LOG_INFO, "upstream check: --nekt-url answers again");
        r->checked = 1;
        r->ok = ok;
        snprintf(r->why, sizeof r->why, "%s", why);
        struct timespec until = dapi_clock_after(0, 10000);
        while(!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct nekt_reach *nekt_reach_start(const struct dapi_backend_env *env)
{
    struct nekt_reach *r = calloc(1, sizeof *r);
    if(!r)
        return NULL;
    r->env = env;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if(pthread_create(&r->thread, NULL, reach_run, r)) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    return r;
}

int nekt_reach_status(struct nekt_reach *r, char *why, size_t n)
{
    if(!r) {
        snprintf(why, n, "the upstream check could not start");
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    int ok = r->checked && r->ok;
    snprintf(why, n, "%s", !r->checked ? "the upstream has not been checked yet" : r->why);
    pthread_mutex_unlock(&r->mu);
    return ok ? 0 : -1;
}

void nekt_reach_stop(struct nekt_reach *r)
{
    if(!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL); /* (a check in progress ends within its 3 s) */
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

char *nekt_json_body1(const char *k, const char *v)
{
    struct dapi_buf b;
    dapi_buf_init(&b, strlen(v) * 6 + 64);
    dapi_buf_addc(&b, '{');
    dapi_json_str(&b, k, strlen(k));
    dapi_buf_addc(&b, ':');
    dapi_json_str(&b, v, strlen(v));
    dapi_buf_addc(&b, '}');
    return b.data ? dapi_buf_take(&b, NULL) : NULL;
}

/* The explanation of a failed upstream query state (its first non-empty field). */
const char *nekt_state_message(const struct dapi_jv *doc)
{
    const char *const keys[] = {"error", "state_change_reason", "message", "detail"};
    for(size_t i = 0; i < 4; i++) {
        const char *m = dapi_jv_str(dapi_jv_get(doc, keys[i]), NULL);
        if(m && *m)
            return m;
    }
    return NULL;
}

/* An upstream call made to create a query failed: the reference's message (what), with the
 * upstream's explanation; a key the upstream refused is said to be so. */
void nekt_reply_creation_failure(struct dapi_reply rp, enum dapi_err result, const char *what,
                                 const char *details)
{
    int auth = result == DAPI_ERR_AUTH || result == DAPI_ERR_FORBIDDEN;
    struct dapi_outcome o = {
        .kind = DAPI_OUTCOME_ERROR,
        .status = auth || result == DAPI_ERR_INVALID ? dapi_err_status(result)
                  : result == DAPI_ERR_TIMEOUT || result == DAPI_ERR_UPSTREAM_TIMEOUT ? 504
                  : result == DAPI_ERR_UPSTREAM                                       ? 502
                                                : dapi_err_status(result),
        .message = auth ? "The Nekt API rejected the API key" : what,
        .details = details,
        .retry_after = -1};
    dapi_reply(rp, result, &o);
}
