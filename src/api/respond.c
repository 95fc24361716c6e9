#include "api/respond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/conneg.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/metrics.h"
#include "dapi/err.h"
#include "store/gzip.h"
#include "store/pagecache.h"
#include "store/result.h"

/* The largest error body. Details are cut first (dapi_bounded_details), so only a body that
 * cannot be allocated is ever answered without them. */
#define ERROR_BODY_MAX (256 * 1024)

const char *dapi_bounded_details(const char *details, char **owned)
{
    *owned = NULL;
    if(!details || strlen(details) <= DAPI_DETAILS_MAX)
        return details;
    struct dapi_buf b;
    dapi_buf_init(&b, DAPI_DETAILS_MAX + 128);
    dapi_buf_add_cut(&b, details, DAPI_DETAILS_MAX);
    return *owned = dapi_buf_take(&b, NULL); /* NULL only without memory: no details then */
}

char *dapi_error_body(const char *msg, const char *details, size_t max, size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, max);
    /* keys in alphabetical order, as the reference (Flask jsonify) sorts them. The appends'
     * results are not checked one by one: the buffer's error is sticky, so a failure anywhere
     * makes the take below return NULL (never a body missing its first part). */
    dapi_buf_addc(&b, '{');
    if(details) {
        dapi_buf_adds(&b, "\"details\":");
        dapi_json_str(&b, details, strlen(details));
        dapi_buf_addc(&b, ',');
    }
    dapi_buf_adds(&b, "\"error\":");
    dapi_json_str(&b, msg, strlen(msg));
    dapi_buf_addc(&b, '}');
    return dapi_buf_take(&b, len);
}

/* Answers status with body, or, if body is NULL (it could not be built), with the smallest
 * well-formed error body there is (or an empty one if even that cannot be allocated). */
static void respond_or_fallback(struct dapi_req *r, int status, char *body, size_t len,
                                const char *header, const char *value)
{
    if(!body) {
        body = strdup("{\"error\":\"Internal error\"}");
        len = body ? strlen(body) : 0;
    }
    dapi_req_respond(r, status, body, len, header, value);
}

void dapi_respond_error_h(struct dapi_req *r, int status, const char *msg, const char *details,
                          const char *header, const char *value)
{
    size_t len = 0;
    char *cut;
    details = dapi_bounded_details(details, &cut);
    char *body = dapi_error_body(msg, details, ERROR_BODY_MAX, &len);
    if(!body && details) /* out of memory: the message alone */
        body = dapi_error_body(msg, NULL, ERROR_BODY_MAX, &len);
    free(cut);
    respond_or_fallback(r, status, body, len, header, value);
}

void dapi_respond_error(struct dapi_req *r, int status, const char *msg, const char *details)
{
    dapi_respond_error_h(r, status, msg, details, NULL, NULL);
}

char *dapi_err_answer(enum dapi_err err, const char *details, int *status, char retry_after[16],
                      size_t *len)
{
    const char *msg = dapi_err_message(err);
    int secs = dapi_err_retry_after(err);
    *status = dapi_err_status(err);
    if(secs > 0)
        snprintf(retry_after, 16, "%d", secs);
    else
        retry_after[0] = '\0';
    char *cut;
    details = dapi_bounded_details(details, &cut);
    char *body = dapi_error_body(msg, details, ERROR_BODY_MAX, len);
    if(!body && details) /* out of memory: the message alone */
        body = dapi_error_body(msg, NULL, ERROR_BODY_MAX, len);
    free(cut);
    return body;
}

void dapi_respond_err(struct dapi_req *r, enum dapi_err err, const char *details)
{
    int status;
    char ra[16];
    size_t len = 0;
    char *body = dapi_err_answer(err, details, &status, ra, &len);
    respond_or_fallback(r, status, body, len, ra[0] ? "Retry-After" : NULL, ra[0] ? ra : NULL);
}

char *dapi_exec_error_body(const char *error, const char *details, const char *page_text,
                           const char *slug, size_t max, size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, max);
    /* Sticky buffer errors: one check, at the take. */
    dapi_buf_adds(&b, "{\"details\":");
    dapi_json_str(&b, details, strlen(details));
    dapi_buf_adds(&b, ",\"error\":");
    dapi_json_str(&b, error, strlen(error));
    dapi_buf_addf(&b, ",\"page_number\":%s,\"query_slug\":", page_text);
    dapi_json_str(&b, slug, strlen(slug));
    dapi_buf_addc(&b, '}');
    return dapi_buf_take(&b, len);
}

static void exec_error(struct dapi_req *r, int status, const char *error, const char *details,
                       const char *page_text, const char *slug)
{
    size_t len = 0;
    char *cut;
    details = dapi_bounded_details(details ? details : error, &cut);
    char *body = dapi_exec_error_body(error, details ? details : error, page_text, slug,
                                      ERROR_BODY_MAX, &len);
    free(cut);
    respond_or_fallback(r, status, body, len, NULL, NULL);
}

void dapi_respond_exec_error(struct dapi_req *r, int status, const char *details,
                             const char *page_text, const char *slug)
{
    exec_error(r, status, "Query execution failed", details, page_text, slug);
}

void dapi_respond_exec_error_code(struct dapi_req *r, int status, const char *details,
                                  const char *page_text, const char *slug, enum dapi_err err)
{
    const char *error = err == DAPI_ERR_AUTH || err == DAPI_ERR_FORBIDDEN
                            ? "The Nekt API rejected the API key"
                            : "Query execution failed";
    exec_error(r, status, error, details, page_text, slug);
}

void dapi_respond_created(struct dapi_req *r, const char *slug, const char *sql)
{
    struct dapi_buf b;
    dapi_buf_init(&b, strlen(sql) * 6 + 4096);
    /* keys sorted alphabetically, as Flask's jsonify writes them */
    dapi_buf_adds(&b, "{\"message\":\"Query created successfully\",\"query_slug\":");
    dapi_json_str(&b, slug, strlen(slug));
    dapi_buf_adds(&b, ",\"sql_query\":");
    dapi_json_str(&b, sql, strlen(sql));
    dapi_buf_adds(&b, ",\"status\":\"success\"}");
    size_t len = 0;
    char *body = dapi_buf_take(&b, &len);
    if(!body)
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
    else
        dapi_req_respond(r, 200, body, len, NULL, NULL);
}

void dapi_respond_page(struct dapi_req *r, const char *slug, const char *page_text,
                       const char *rows, size_t len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, len + 256);
    dapi_buf_adds(&b, "{\"query_slug\":");
    dapi_json_str(&b, slug, strlen(slug));
    dapi_buf_addf(&b, ",\"page\":%s,\"data\":[", page_text);
    dapi_buf_add(&b, rows, len);
    dapi_buf_adds(&b, "]}");
    size_t blen = 0;
    char *body = dapi_buf_take(&b, &blen);
    if(body)
        dapi_req_respond(r, 200, body, blen, NULL, NULL);
    else
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
}

/* Server-Timing (W3C): name;dur=milliseconds for each measured part, comma-separated. */
static void server_timing(struct dapi_req *r, const char *const names[], const int64_t us[],
                          size_t n)
{
    /* "name;dur=MS.mmm, ..." written by hand (snprintf's %.3f was 3% of a page's CPU) */
    char v[160], *p = v;
    for(size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        if(us[i] <= 0 || nl > 32 || (size_t)(v + sizeof v - p) < nl + 40)
            continue;
        if(p != v) {
            *p++ = ',';
            *p++ = ' ';
        }
        memcpy(p, names[i], nl);
        memcpy(p + nl, ";dur=", 5);
        p = dapi_put_u64(p + nl + 5, (uint64_t)us[i] / 1000, 1);
        *p++ = '.';
        p = dapi_put_u64(p, (uint64_t)us[i] % 1000, 3);
    }
    *p = '\0';
    if(p != v)
        dapi_req_add_header(r, "Server-Timing", v);
}

void dapi_respond_outcome(void *req, enum dapi_err err, const struct dapi_outcome *o)
{
    struct dapi_req *r = req;
    switch(o->kind) {
    case DAPI_OUTCOME_CREATED: {
        static const char *const names[] = {"queue", "check"};
        const int64_t us[] = {o->queue_us, o->check_us};
        server_timing(r, names, us, 2);
        dapi_metrics_created(o->reused);
        if(o->reused) /* result reuse: a header, so the body stays the reference's */
            dapi_req_add_header(r, "X-Dapi-Reused", "true");
        dapi_respond_created(r, o->slug, o->sql);
        return;
    }
    case DAPI_OUTCOME_PAGE: {
        static const char *const names[] = {"wait"};
        const int64_t us[] = {o->wait_us};
        server_timing(r, names, us, 1);
        dapi_metrics_page(o->nrows, o->len);
        dapi_respond_page(r, o->slug, o->page_text, o->rows, o->len);
        return;
    }
    case DAPI_OUTCOME_FAILED:
        dapi_respond_exec_error_code(r, o->status ? o->status : dapi_err_exec_status(err),
                                     o->details, o->page_text, o->slug, err);
        return;
    case DAPI_OUTCOME_JSON: {
        char *copy = malloc(o->len ? o->len : 1);
        if(!copy) {
            dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
            return;
        }
        memcpy(copy, o->rows, o->len);
        dapi_req_respond(r, 200, copy, o->len, NULL, NULL);
        return;
    }
    case DAPI_OUTCOME_ERROR: break;
    }
    if(!o->status && !o->message && !o->retry_after) { /* all from the err table */
        dapi_respond_err(r, err, o->details);
        return;
    }
    int secs = o->retry_after > 0   ? o->retry_after
               : o->retry_after < 0 ? 0
                                    : dapi_err_retry_after(err);
    char ra[16] = "";
    if(secs > 0)
        snprintf(ra, sizeof ra, "%d", secs);
    dapi_respond_error_h(r, o->status ? o->status : dapi_err_status(err),
                         o->message ? o->message : dapi_err_message(err), o->details,
                         ra[0] ? "Retry-After" : NULL, ra[0] ? ra : NULL);
}

/* ---- pages of stored results --------------------------------------------------------- */

static void page_release(void *arg)
{
    dapi_page_release(arg);
}

/* Caching headers of a finished page (docs/api.md "Compression and caching"): ETag, and
 * Cache-Control private (the owner's only), immutable for as long as the slug lives. Returns
 * 1 when the request's If-None-Match matches: the answer is then 304. */
static int caching_headers(struct dapi_req *r, const struct dapi_page_req *pr,
                           const struct dapi_outcome *o, const char *coding)
{
    if(o->max_age <= 0)
        return 0;
    char etag[160], cc[96];
    dapi_page_etag(etag, sizeof etag, dapi_result_id(o->result), o->slug, o->page_text, coding);
    static const char pre[] = "private, max-age=", post[] = ", immutable";
    char *p = dapi_put_u64(cc + sizeof pre - 1, (uint64_t)o->max_age, 1); /* (<= 20 digits) */
    memcpy(cc, pre, sizeof pre - 1);
    memcpy(p, post, sizeof post);
    dapi_req_add_header(r, "ETag", etag);
    dapi_req_add_header(r, "Cache-Control", cc);
    return dapi_etag_matches(pr->if_none_match, etag);
}

static long page_stream_read(void *s, char *out, size_t max)
{
    return dapi_page_stream_read(s, out, max);
}

static void page_stream_done(void *s)
{
    dapi_page_stream_free(s);
}

/* A page too large to decode whole for an answer, to a client that does not take zstd: sent
 * as it is decoded (its memory is zstd's window, not the page). Takes head. */
static void respond_page_stream(struct dapi_req *r, const struct dapi_outcome *o,
                                struct dapi_buf *head)
{
    uint64_t size = 0;
    struct dapi_page_stream *s = head->data ? dapi_page_stream_new(o->result, o->page_no,
                                                                   head->data, "]}", &size)
                                            : NULL;
    dapi_buf_free(head);
    if(!s) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    uint64_t rows = dapi_backend_page_rows(o->result, o->page_no);
    dapi_metrics_page(rows, dapi_result_page_size(o->result, o->page_no));
    dapi_req_respond_reader(r, 200, size, "application/json", page_stream_read, page_stream_done,
                            s);
}

static void respond_result_page(struct dapi_req *r, const struct dapi_page_req *pr,
                                const struct dapi_outcome *o)
{
    struct dapi_result *res = o->result;
    int compressed = dapi_result_compressed(res);
    int zstd = compressed && pr->zstd;
    uint64_t size = compressed && !zstd ? dapi_result_page_size(res, o->page_no) : 0;
    /* (a page too large to decode whole goes plain, decoded as it is sent) */
    int huge = size >= DAPI_PAGE_STREAM_MIN;
    int gzip = pr->gzip && compressed && !zstd && size < DAPI_GZIP_MAX;
    const char *coding = zstd ? "zstd" : gzip ? "gzip" : NULL;
    static const char *const names[] = {"wait"};
    const int64_t us[] = {o->wait_us};
    server_timing(r, names, us, 1);
    if(compressed) /* the answer depends on Accept-Encoding (and caches must know) */
        dapi_req_add_header(r, "Vary", "Accept-Encoding");
    if(caching_headers(r, pr, o, coding)) {
        dapi_req_respond(r, 304, NULL, 0, NULL, NULL);
        return;
    }
    /* {"query_slug":…,"page":N,"data":[ rows ]} */
    struct dapi_buf head;
    dapi_buf_init(&head, 1024);
    dapi_buf_adds(&head, "{\"query_slug\":");
    dapi_json_str(&head, o->slug, strlen(o->slug));
    dapi_buf_adds(&head, ",\"page\":");
    dapi_buf_adds(&head, o->page_text);
    dapi_buf_adds(&head, ",\"data\":[");
    if(huge) {
        respond_page_stream(r, o, &head);
        return;
    }
    struct dapi_page *pg = NULL;
    enum dapi_err e = dapi_buf_error(&head);
    if(!e)
        e = dapi_page_cache_get(pr->cache, res, o->page_no,
                                zstd   ? DAPI_PAGE_ZSTD
                                : gzip ? DAPI_PAGE_GZIP
                                       : DAPI_PAGE_PLAIN,
                                head.data, "]}", &pg);
    dapi_buf_free(&head);
    if(e) {
        dapi_log(DAPI_LOG_WARN, "results: page %s of %s cannot be read: %s", o->page_text, o->slug,
                 dapi_err_message(e));
        dapi_respond_err(r, e == DAPI_ERR_NOMEM ? e : DAPI_ERR_INTERNAL,
                         e == DAPI_ERR_NOMEM ? NULL : "the stored result is damaged");
        return;
    }
    if(coding)
        dapi_req_add_header(r, "Content-Encoding", coding);
    uint64_t rows = dapi_backend_page_rows(res, o->page_no);
    dapi_metrics_page(rows, rows ? dapi_result_page_size(res, o->page_no) : 0);
    size_t len;
    const char *body = dapi_page_data(pg, &len);
    dapi_req_respond_kept(r, 200, body, len, page_release, pg);
}

void dapi_respond_page_outcome(void *ctx, enum dapi_err err, const struct dapi_outcome *o)
{
    struct dapi_page_req *pr = ctx;
    struct dapi_req *r = pr->r;
    if(o->kind == DAPI_OUTCOME_PAGE && o->result)
        respond_result_page(r, pr, o);
    else
        dapi_respond_outcome(r, err, o);
    free(pr);
}
