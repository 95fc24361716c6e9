/* POST /api/queries and GET /api/queries/{slug}/results: the reference's validation, messages and status codes (docs/api.md) in its order,
 * plus dapi's deliberate fixes (JSON errors, identifier checks, type checks). The query then
 * goes to the configured backend (src/backend/). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/conneg.h"
#include "api/respond.h"
#include "app/app.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/jsonin.h"
#include "store/queries.h"
#include "backend/backend.h"
#include "base/log.h"

int dapi_api_parse_pyint(const char *s, size_t len, int *neg, char *digits, size_t n,
                         int64_t *value, int *big)
{
    size_t i = 0, nd = 0;
    if(n < 2)
        return -1; /* no room for even "0" */
    while(len && (s[len - 1] == ' ' || (s[len - 1] >= '\t' && s[len - 1] <= '\r')))
        len--;
    while(i < len && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')))
        i++;
    *neg = 0;
    if(i < len && (s[i] == '+' || s[i] == '-'))
        *neg = s[i++] == '-';
    if(i == len || s[i] < '0' || s[i] > '9')
        return -1;
    uint64_t v = 0;
    *big = 0;
    for(; i < len; i++) {
        char c = s[i];
        if(c == '_') {
            /* one underscore, between two digits */
            if(i + 1 >= len || s[i + 1] < '0' || s[i + 1] > '9')
                return -1;
            continue;
        }
        if(c < '0' || c > '9')
            return -1;
        if(nd == 0 && c == '0')
            continue; /* leading zeros */
        if(nd + 1 >= n)
            return -1; /* absurdly long */
        digits[nd++] = c;
        if(!*big) {
            if(v > ((uint64_t)INT64_MAX - (uint64_t)(c - '0')) / 10)
                *big = 1;
            else
                v = v * 10 + (uint64_t)(c - '0');
        }
    }
    if(nd == 0)
        digits[nd++] = '0';
    digits[nd] = '\0';
    *value = *big ? INT64_MAX : (int64_t)v;
    return 0;
}

/* Layer and table names become quoted identifiers; only these characters are accepted, so
 * no quote can ever reach the SQL. */
static int valid_ident(const char *s, size_t len)
{
    if(len == 0 || len > 128)
        return 0;
    for(size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || (i > 0 && (c == '$' || c == '-'));
        if(!ok)
            return 0;
    }
    return 1;
}

static int is_json_type(const char *ct)
{
    if(!ct)
        return 0;
    size_t n = strcspn(ct, ";");
    while(n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if(n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    /* application/<something>+json, as Flask's is_json accepts */
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* Works out the limit as Python's int(limit) would. Returns 0 and sets *text (digits with
 * sign) or answers the request and returns -1. */
static int parse_limit(struct dapi_req *r, const struct dapi_jv *lim, char *text, size_t n)
{
    int neg = 0, big = 0;
    int64_t v = 0;
    char digits[64];
    switch(dapi_jv_type(lim)) {
    case DAPI_J_INT:
        v = dapi_jv_int(lim);
        snprintf(text, n, "%lld", (long long)v);
        break;
    case DAPI_J_REAL: {
        double d = trunc(dapi_jv_real(lim));
        if(!isfinite(d) || fabs(d) > 1e30) {
            dapi_respond_error(r, 400, "Limit must be a valid integer", NULL);
            return -1;
        }
        snprintf(text, n, "%.0f", d == 0 ? 0.0 : d);
        v = d > 9e18 ? INT64_MAX : d < -9e18 ? INT64_MIN : (int64_t)d;
        break;
    }
    case DAPI_J_TRUE:
    case DAPI_J_FALSE:
        v = dapi_jv_type(lim) == DAPI_J_TRUE;
        snprintf(text, n, "%lld", (long long)v);
        break;
    case DAPI_J_STRING: {
        size_t len;
        const char *s = dapi_jv_str(lim, &len);
        if(dapi_api_parse_pyint(s, len, &neg, digits, sizeof digits, &v, &big)) {
            dapi_respond_error(r, 400, "Limit must be a valid integer", NULL);
            return -1;
        }
        if(neg)
            v = -v;
        snprintf(text, n, "%s%s", neg && strcmp(digits, "0") ? "-" : "", digits);
        break;
    }
    default: dapi_respond_error(r, 400, "Limit must be a valid integer", NULL); return -1;
    }
    if(v <= 0) {
        dapi_respond_error(r, 400, "Limit must be a positive integer", NULL);
        return -1;
    }
    return 0;
}

/* Builds the SQL from the request body, answering the request on any validation error.
 * Returns the SQL (owned) or NULL when answered. */
static char *sql_from_body(struct dapi_req *r, const struct dapi_jv *root)
{
    static const char *const names[] = {"layer", "table", "limit"};
    struct dapi_jv *sq = dapi_jv_get(root, "sql_query");
    if(sq && dapi_jv_truthy(sq)) {
        struct dapi_buf msg;
        dapi_buf_init(&msg, 256);
        dapi_buf_adds(&msg, "When 'sql_query' is provided, these parameters are not allowed: ");
        int any = 0;
        for(size_t i = 0; i < 3; i++)
            if(dapi_jv_get(root, names[i])) {
                if(any)
                    dapi_buf_adds(&msg, ", ");
                dapi_buf_adds(&msg, names[i]);
                any = 1;
            }
        if(any) {
            dapi_respond_error(r, 400, msg.data ? msg.data : "Invalid parameters", NULL);
            dapi_buf_free(&msg);
            return NULL;
        }
        dapi_buf_free(&msg);
        size_t len;
        const char *s = dapi_jv_str(sq, &len);
        if(!s) {
            dapi_respond_error(r, 400, "Parameter 'sql_query' must be a string", NULL);
            return NULL;
        }
        if(strlen(s) != len) {
            dapi_respond_error(r, 400, "Parameter 'sql_query' must not contain NUL characters",
                               NULL);
            return NULL;
        }
        char *sql = strdup(s);
        if(!sql)
            dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return sql;
    }
    const char *val[2];
    size_t lens[2];
    for(size_t i = 0; i < 2; i++) {
        struct dapi_jv *v = dapi_jv_get(root, names[i]);
        char msg[128];
        if(!v || !dapi_jv_truthy(v)) {
            snprintf(msg, sizeof msg,
                     "Missing required parameter '%s' when 'sql_query' is not provided", names[i]);
            dapi_respond_error(r, 400, msg, NULL);
            return NULL;
        }
        if(!(val[i] = dapi_jv_str(v, &lens[i]))) {
            snprintf(msg, sizeof msg, "Parameter '%s' must be a string", names[i]);
            dapi_respond_error(r, 400, msg, NULL);
            return NULL;
        }
        if(!valid_ident(val[i], lens[i])) {
            snprintf(msg, sizeof msg, "Invalid %s name", names[i]);
            dapi_respond_error(r, 400, msg,
                               "use 1 to 128 letters, digits, '_', '$' or '-', starting with a "
                               "letter, digit or '_'");
            return NULL;
        }
    }
    char limit[80] = "";
    struct dapi_jv *lim = dapi_jv_get(root, "limit");
    if(lim && dapi_jv_type(lim) != DAPI_J_NULL && parse_limit(r, lim, limit, sizeof limit))
        return NULL;
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    /* byte-identical to the reference */
    dapi_buf_addf(&b, "SELECT\n\t*\nFROM\n\t\"%s\".\"%s\"", val[0], val[1]);
    if(*limit)
        dapi_buf_addf(&b, "\nLIMIT %s", limit);
    char *sql = b.data ? dapi_buf_take(&b, NULL) : NULL;
    if(!sql)
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
    return sql;
}

/* Cache-Control on a create (result reuse, docs/api.md): no-cache or no-store bypass it
 * (-1), max-age=N lowers the server's max age (N = 0: bypass); anything else is ignored.
 * Returns the principal's reuse_max_age. */
static int64_t cache_control(const char *h)
{
    int64_t age = 0;
    while(h && *h) {
        while(*h == ' ' || *h == '\t' || *h == ',')
            h++;
        size_t n = strcspn(h, ",");
        if((n == 8 && strncasecmp(h, "no-cache", 8) == 0) ||
           (n == 8 && strncasecmp(h, "no-store", 8) == 0))
            return -1;
        if(n > 8 && strncasecmp(h, "max-age=", 8) == 0) {
            const char *p = h + 8;
            int quoted = *p == '"';
            p += quoted;
            int64_t v = 0;
            int digits = 0;
            while(*p >= '0' && *p <= '9' && digits < 12) {
                v = v * 10 + (*p++ - '0');
                digits++;
            }
            if(quoted && *p == '"')
                p++;
            while(*p == ' ' || *p == '\t')
                p++;
            if(digits && (*p == ',' || !*p)) {
                if(v == 0)
                    return -1;
                if(!age || v < age)
                    age = v;
            }
        }
        h += n;
    }
    return age;
}

/* The request's "params" (docs/api.md "Bind parameters"): 0 with *out the canonical JSON or
 * NULL (absent or null), or answers the request and returns -1. */
static int params_from_body(struct dapi_req *r, struct dapi_app *app, const struct dapi_jv *root,
                            char **out)
{
    char why[512];
    const struct dapi_jv *p = dapi_jv_get(root, "params");
    *out = NULL;
    if(!p || dapi_jv_type(p) == DAPI_J_NULL)
        return 0;
    const struct dapi_jv *sq = dapi_jv_get(root, "sql_query");
    if(!sq || !dapi_jv_truthy(sq)) {
        dapi_respond_err(r, DAPI_ERR_PARAM,
                         "\"params\" binds values to the $names of \"sql_query\"; "
                         "it is not allowed without it");
        return -1;
    }
    if(!app->backend->ops->create_bound) {
        snprintf(why, sizeof why,
                 "\"params\" cannot be used with the %s backend: it sends SQL text upstream, "
                 "which has no bind parameters, and dapi never splices values into SQL",
                 app->backend->name);
        dapi_respond_err(r, DAPI_ERR_PARAM, why);
        return -1;
    }
    /* the body again, every number as its text: the digits of 0.1 or of a DECIMAL(38,10)
     * value that a double would lose (the body parsed once, so this parse succeeds) */
    size_t len;
    const char *body = dapi_req_body(r, &len);
    struct dapi_jv *twin = NULL;
    if(dapi_jv_parse_numtext(body, len, (int)app->cfg->max_json_depth, &twin, NULL, 0))
        twin = NULL; /* (out of memory: the numbers are written from their doubles) */
    *out = dapi_api_params_json(p, dapi_jv_get(twin, "params"), why, sizeof why);
    dapi_jv_free(twin);
    if(!*out) {
        dapi_respond_err(r, strcmp(why, "out of memory") ? DAPI_ERR_PARAM : DAPI_ERR_NOMEM, why);
        return -1;
    }
    return 0;
}

void dapi_api_create_query(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    struct dapi_jv *root = NULL;
    char *sql = NULL, *params = NULL, err[256];
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    const unsigned char *hash = who.owner;
    who.reuse_max_age = cache_control(dapi_req_header(r, "Cache-Control"));
    if(!is_json_type(dapi_req_header(r, "Content-Type"))) {
        dapi_respond_error(r, 415, "Unsupported Media Type",
                           "the request body must be JSON with Content-Type: application/json");
        return;
    }
    size_t len;
    const char *body = dapi_req_body(r, &len);
    /* (an integer beyond int64 reads as a real, its digits kept by the twin below: a
     * HUGEINT or UBIGINT parameter) */
    enum dapi_err result = dapi_jv_parse_wide(body, len, (int)app->cfg->max_json_depth, &root, err,
                                              sizeof err);
    if(result) {
        dapi_respond_error(r, 400, "Malformed JSON", err);
        return;
    }
    if(!dapi_jv_truthy(root)) {
        dapi_respond_error(r, 400, "No JSON data provided", NULL);
        goto out;
    }
    if(dapi_jv_type(root) != DAPI_J_OBJECT) {
        dapi_respond_error(r, 400, "JSON body must be an object", NULL);
        goto out;
    }
    if(!(sql = sql_from_body(r, root)))
        goto out;
    if(strlen(sql) > (size_t)app->cfg->max_sql_bytes) {
        char d[128];
        snprintf(d, sizeof d, "the SQL text is %zu bytes; the limit is %lld (--max-sql-bytes)",
                 strlen(sql), (long long)app->cfg->max_sql_bytes);
        dapi_respond_error(r, 413, "SQL query too long", d);
        goto out;
    }
    if(params_from_body(r, app, root, &params))
        goto out;
    /* Admission: refuse now rather than accept a query we cannot run soon. The slot is
     * reserved here, before the SQL check, in one step with the limit checks (per key, then
     * server-wide), so concurrent creates cannot all see the same free room; the backend
     * moves it to the query or gives it back. */
    enum dapi_err admitted = dapi_queries_admit(app->queries, hash);
    struct dapi_reply rp = {dapi_respond_outcome, r};
    dapi_req_defer(r); /* the backend's outcome may come later, from another thread */
    if(admitted) {
        dapi_backend_refuse_admission(&app->backend_env, rp, admitted, hash);
        goto out;
    }
    if(params)
        app->backend->ops->create_bound(app->backend_state, sql, params, &who, rp);
    else
        app->backend->ops->create(app->backend_state, sql, &who, rp);
    sql = params = NULL; /* taken by the backend */
out:
    free(sql);
    free(params);
    dapi_jv_free(root);
}

/* ---- GET /api/queries/{slug}/results ----------------------------------------------- */

void dapi_api_results(struct dapi_req *r, struct dapi_app *app, const char *slug)
{
    struct dapi_principal who;
    if(dapi_api_auth(r, app, &who))
        return;
    const char *p = dapi_req_arg(r, "page_number");
    int neg = 0, big = 0;
    int64_t page = 1;
    char digits[48] = "1";
    if(p && dapi_api_parse_pyint(p, strlen(p), &neg, digits, sizeof digits, &page, &big)) {
        dapi_respond_error(r, 400, "Page number must be a valid integer", NULL);
        return;
    }
    if(neg || page < 1) {
        dapi_respond_error(r, 400, "Page number must be a positive integer", NULL);
        return;
    }
    if(dapi_api_scope_still_covers(r, app, &who, slug))
        return;
    struct dapi_page_req *pr = malloc(sizeof *pr);
    if(!pr) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    /* What the answer depends on, read here on the event thread (the header strings live
     * until the request is answered). */
    pr->r = r;
    pr->cache = app->page_cache;
    unsigned codings = dapi_accepted_codings(dapi_req_header(r, "Accept-Encoding"));
    pr->zstd = (codings & DAPI_CODING_ZSTD) != 0;
    pr->gzip = (codings & DAPI_CODING_GZIP) != 0;
    pr->if_none_match = dapi_req_header(r, "If-None-Match");
    struct dapi_reply rp = {dapi_respond_page_outcome, pr};
    dapi_req_defer(r); /* the backend's outcome may come later, from another thread */
    app->backend->ops->results(app->backend_state, slug, (uint64_t)page, digits, &who, rp);
}
