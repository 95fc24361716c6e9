/* The dapi client library: creates a query on a dapi (or Nekt-compatible) server and reads
 * its result page by page, with one retry policy for every call. Used by `dapi query`,
 * `dapi health` and the tests.
 *
 * Threads: a struct dapi_client belongs to one thread at a time (it keeps one keep-alive
 * connection). dapi_client_fetch_all may run worker threads of its own; they never touch the
 * caller's client and every callback runs on the calling thread, except on_retry (below).
 *
 * Errors: every call that can fail returns enum dapi_err (DAPI_OK == 0) and, on failure,
 * fills the struct dapi_client_err the caller passed: what went wrong, classified (kind) so a
 * program can choose an exit code, and the server's own `error` / `details` when it sent them.
 * On success the err struct is left untouched. */
#ifndef DAPI_CLIENT_H
#define DAPI_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "dapi/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows in a full results page; a page with fewer is the last one. */
#define DAPI_CLIENT_PAGE_ROWS 100

/* How a failure is classified (the CLI's exit codes follow it, see docs/cli.md). */
enum dapi_client_kind {
    DAPI_CLIENT_OK = 0,
    DAPI_CLIENT_AUTH,     /* 401 / 403: the key is missing, unknown or not allowed */
    DAPI_CLIENT_QUERY,    /* the query was refused or failed: 400, 404, 413, execution failure
                             (other than 502 / 503) */
    DAPI_CLIENT_NETWORK,  /* no usable answer: connection failure, timeout, 429 / 502 / 503 /
                             other 5xx after retries (docs/cli.md has the table) */
    DAPI_CLIENT_PROTOCOL, /* an answer that breaks the API contract (malformed page, …) */
    DAPI_CLIENT_LOCAL,    /* a local failure: out of memory, thread creation */
    DAPI_CLIENT_ABORTED,  /* the caller's callback asked to stop */
};

struct dapi_client_err {
    enum dapi_client_kind kind;
    int status;         /* HTTP status of the last answer, 0 if none arrived */
    int exec_failure;   /* the answer was the "Query execution failed" shape */
    char message[512];  /* one line: the server's "error", or what failed locally */
    char details[1024]; /* the server's "details" ("" if none): may hold line breaks
                            (DuckDB's query line and caret), never other control
                            characters */
    int still_running;  /* the query had not failed but was still running: the server's
                            504 with the execution-failure shape and "(--result-wait)" in
                            details. A results call asks again until timeout_ms; failing with
                            this set means that time ran out (kind NETWORK) */
};

struct dapi_client_config {
    const char *url;         /* base URL, e.g. "http://localhost:5001" (copied) */
    const char *api_key;     /* x-api-key value, or NULL (copied; never printed or logged) */
    long connect_timeout_ms; /* 0 = 10 s */
    long timeout_ms;         /* one HTTP call, whole; 0 = 330 s (a results call may wait
                                 for the query up to the server's --result-wait, 300 s).
                                 Also how long, from its first request, a results call keeps
                                 asking again while the query is still running */
    uint64_t max_page_bytes; /* cap on one response body; 0 = 64 MiB */
    int max_attempts;        /* attempts per call, first included; 0 = 5, 1 = no retries */
    int64_t retry_total_ms;  /* no retry starts later than this after a call's first attempt;
                                 0 = 60 s */
    /* Called (from any thread, possibly concurrently) before each retry with a short
     * description of the call ("POST /api/queries", "page 7"), the failed attempt number,
     * the delay and why. May be NULL. */
    void (*on_retry)(void *arg, const char *what, int attempt, int64_t delay_ms,
                     const char *reason);
    void *on_retry_arg;
};

struct dapi_client;

/* Creates a client (free with dapi_client_free). cfg is borrowed for the call only: its
 * strings are copied. Fails with DAPI_ERR_INVALID (err->message says why) if the URL is not
 * http:// or https:// or the key holds a control character. */
enum dapi_err dapi_client_new(struct dapi_client **out, const struct dapi_client_config *cfg,
                              struct dapi_client_err *err);
void dapi_client_free(struct dapi_client *c);

/* What to run: either sql, or layer + table (+ limit > 0, 0 = none). Strings are borrowed. */
struct dapi_client_query {
    const char *sql;
    const char *layer;
    const char *table;
    int64_t limit;
};

/* POST /api/queries. On success *slug is the new query's slug (owned, free with free()).
 * Retried only when the server certainly did not act on the request (connection refused,
 * 429, 503), since a repeat could create a second query. */
enum dapi_err dapi_client_create(struct dapi_client *c, const struct dapi_client_query *q,
                                 char **slug, struct dapi_client_err *err);

/* GET /api/endpoints/{name}?names[0]=values[0]&… (docs/endpoints.md): calls an endpoint
 * of the server's --endpoints-file with n arguments (percent-encoded by the call; a name may
 * repeat for a list parameter). On success *slug is the query it created (owned, free()),
 * whose rows dapi_client_fetch_all reads. A refused argument or an unknown endpoint is kind
 * QUERY (400, 404), an endpoint outside the key's scope kind AUTH (403). */
enum dapi_err dapi_client_call_endpoint(struct dapi_client *c, const char *name,
                                        const char *const *names, const char *const *values,
                                        size_t n, char **slug, struct dapi_client_err *err);

/* GET /api/health. On a 200 answer *status receives its "status" field (owned, free());
 * any other answer is an error (kind NETWORK for 5xx / no answer, PROTOCOL otherwise). */
enum dapi_err dapi_client_health(struct dapi_client *c, char **status,
                                 struct dapi_client_err *err);

/* Schema discovery (docs/api.md "Schema discovery"): GET /api/layers, and
 * GET /api/layers/{layer}/tables/{table} (names percent-encoded by the call, so any name
 * works). Retried like pages. On success *json is the server's JSON object as text (owned,
 * free with free(); NUL-terminated, *len bytes). An unknown layer or table is kind QUERY
 * (404), a layer outside the key's scope kind AUTH (403). */
enum dapi_err dapi_client_layers(struct dapi_client *c, char **json, size_t *len,
                                 struct dapi_client_err *err);
enum dapi_err dapi_client_describe(struct dapi_client *c, const char *layer, const char *table,
                                   char **json, size_t *len, struct dapi_client_err *err);

/* One page of a result, parsed. Each row is the server's JSON object, kept as text: for
 * each column its key and its value as raw JSON text (borrowed from the page). */
struct dapi_page;

struct dapi_cell {
    const char *key; /* raw JSON string literal, quotes included */
    size_t key_len;
    const char *val; /* raw JSON value text (string literal with quotes, number, object…) */
    size_t val_len;
};

/* GET /api/queries/{slug}/results?page_number=n (retried: reads are idempotent). On success
 * *page is owned by the caller (free with dapi_page_free). A page whose query_slug or page
 * differs from the request, with more than DAPI_CLIENT_PAGE_ROWS rows, or that is not
 * strictly valid JSON (UTF-8, nesting <= 64) is a PROTOCOL error. */
enum dapi_err dapi_client_page(struct dapi_client *c, const char *slug, uint64_t n,
                               struct dapi_page **page, struct dapi_client_err *err);

/* Reads every page of slug in order, calling fn(arg, page) on the calling thread for each,
 * until the first page with fewer than DAPI_CLIENT_PAGE_ROWS rows (which is passed too).
 * When the server has the export (GET …/export, docs/api.md) every row comes in one
 * streamed request, cut into the same pages (parallel is then unused); a server that
 * answers it 404 or 501 (an older one) is read page by page. A call that already passed
 * rows to fn is never made again (no row twice).
 * page is borrowed for the call. fn returns 0 to go on, nonzero to stop: the call then
 * returns DAPI_ERR_IO with kind ABORTED. With parallel > 1, up to `parallel` pages are
 * fetched at once by worker threads in a sliding window: at most `parallel` pages are held
 * in memory whatever the result's size, and fn still sees them strictly in order. Pages
 * fetched past the end are discarded. An error is reported for the first page (in order)
 * that failed. */
typedef int (*dapi_client_page_fn)(void *arg, const struct dapi_page *page);
/* on non-zero: dapi_client_fetch_all reads page by page even from a server with the export
 * (comparisons, debugging). Off by default. */
void dapi_client_set_paging(struct dapi_client *c, int on);
enum dapi_err dapi_client_fetch_all(struct dapi_client *c, const char *slug, int parallel,
                                    dapi_client_page_fn fn, void *arg,
                                    struct dapi_client_err *err);

/* The rows of slug's result as NDJSON, exactly as the server's export writes them (GET
 * …/export?format=ndjson: one row's JSON object a line, every line ending in '\n'), handed
 * to fn(arg, bytes, len, lines) as they arrive — no parsing, no copy kept: the fastest way
 * to write the rows to a file. lines is how many rows end in those bytes. The status and the
 * HTTP framing are checked as for any call, and the body must end at the end of a row; a
 * body the server cut (the query failed, was cancelled or the server stopped after the
 * rows began: docs/api.md "Export") is an error (kind NETWORK) after the bytes already
 * handed on. *rows (may be NULL) receives the rows received. DAPI_ERR_NOT_FOUND (err
 * untouched) when the server has no export (404 or 501): read the pages instead. fn returns
 * 0 to go on, nonzero to stop (DAPI_ERR_IO, kind ABORTED). Retried like pages until the
 * first byte was handed on, never after. */
typedef int (*dapi_client_bytes_fn)(void *arg, const char *p, size_t len, uint64_t lines);
enum dapi_err dapi_client_export_ndjson(struct dapi_client *c, const char *slug,
                                        dapi_client_bytes_fn fn, void *arg, uint64_t *rows,
                                        struct dapi_client_err *err);

/* Parses a results page body (len bytes, borrowed: the page keeps its own copy). *page is
 * owned (dapi_page_free). On malformed input returns DAPI_ERR_INVALID and a one-line reason
 * in err. Exposed for tests and for callers that fetch pages themselves. */
enum dapi_err dapi_page_parse(const char *body, size_t len, struct dapi_page **page, char *err,
                              size_t errlen);
void dapi_page_free(struct dapi_page *page);

/* The page number the server stated. */
uint64_t dapi_page_number(const struct dapi_page *page);
size_t dapi_page_rows(const struct dapi_page *page);
/* Row i's cells, in the server's order (borrowed from the page); *ncols receives their
 * count. i must be < dapi_page_rows. */
const struct dapi_cell *dapi_page_row(const struct dapi_page *page, size_t i, size_t *ncols);
/* Row i's whole JSON object text, exactly as sent (borrowed). */
const char *dapi_page_row_json(const struct dapi_page *page, size_t i, size_t *len);

/* Decodes a raw JSON string literal (len bytes, quotes included, as in struct dapi_cell,
 * validated by dapi_page_parse) into UTF-8: escapes resolved, \uXXXX surrogate pairs
 * joined, a lone surrogate becomes U+FFFD. The text is never longer than the literal
 * without its quotes, so out must have room for len - 1 bytes: the text and a NUL. *out_len
 * (if out_len is not NULL) receives the text's length without the NUL (the text itself
 * holds one where the literal has \u0000). Returns DAPI_ERR_INVALID if lit is shorter than
 * two bytes or holds a malformed escape (out is then unspecified). */
enum dapi_err dapi_client_unquote(const char *lit, size_t len, char *out, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif
