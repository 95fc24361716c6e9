/* Logging (src/base/log.c): access lines are batched until dapi_log_flush, the text and JSON
 * formats, escaping of client-controlled paths, order with regular lines, the level filter,
 * long paths. stderr (fd 2) is pointed at a temp file while logging; assertions run only
 * after it is restored (a failing assertion prints to stderr). */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/jsonin.h"
#include "base/log.h"
#include "t.h"

static int cap_fd = -1; /* the temp file */
static int saved_err = -1;

/* ---- capture --------------------------------------------------------------------------- */

/* Points fd 2 at the empty temp file. Nothing is pending here: every test flushes before
 * it ends its capture. */
static void cap_start(void)
{
    if(ftruncate(cap_fd, 0) != 0 || lseek(cap_fd, 0, SEEK_SET) != 0)
        abort();
    if(dup2(cap_fd, STDERR_FILENO) < 0)
        abort();
}

/* Bytes written so far in this capture (safe to call while capturing). */
static long long cap_size(void)
{
    struct stat st;
    return fstat(cap_fd, &st) == 0 ? (long long)st.st_size : -1;
}

/* Restores stderr and returns what was written (malloc'd, NUL-terminated). */
static char *cap_end(size_t *len)
{
    dup2(saved_err, STDERR_FILENO);
    long long n = cap_size();
    char *out = malloc((size_t)(n > 0 ? n : 0) + 1);
    if(!out)
        abort();
    size_t got = 0;
    while(n > 0 && got < (size_t)n) {
        ssize_t r = pread(cap_fd, out + got, (size_t)n - got, (off_t)got);
        if(r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    if(len)
        *len = got;
    return out;
}

/* ---- line checks ----------------------------------------------------------------------- */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars), UTC, within a few seconds of now. */
static int check_stamp(const char *s, char *why, size_t whylen)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for(int i = 0; i < 24; i++) {
        if(shape[i] == 'd' ? !is_digit(s[i]) : s[i] != shape[i]) {
            snprintf(why, whylen, "timestamp shape: char %d of [%.24s]", i, s);
            return 0;
        }
    }
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    time_t t = timegm(&tm), now = time(NULL);
    if(t < now - 5 || t > now + 5) {
        snprintf(why, whylen, "timestamp [%.24s] is not the current UTC time", s);
        return 0;
    }
    return 1;
}

/* Splits text into lines (in place); returns the count. Every line must end with '\n'. */
static int split_lines(char *text, size_t len, char **lines, int max, int *unterminated)
{
    int n = 0;
    *unterminated = 0;
    char *p = text, *end = text + len;
    while(p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if(!nl) {
            *unterminated = 1;
            nl = end;
        }
        *nl = '\0';
        if(n < max)
            lines[n] = p;
        n++;
        p = nl + 1;
    }
    return n;
}

/* A text access line: "<stamp> access <rest>" where rest must equal want_rest exactly. */
static void check_text_access(const char *line, const char *want_rest, const char *what)
{
    char why[160] = "";
    T_CHECK(line && strlen(line) >= 24 && check_stamp(line, why, sizeof why), "%s: %s", what, why);
    if(!line || strlen(line) < 24)
        return;
    T_CHECK(strncmp(line + 24, " access ", 8) == 0, "%s: [%s] has ' access ' after the stamp",
            what, line);
    T_CHECK(strcmp(line + 24 + 8, want_rest) == 0, "%s:\n  got  [%s]\n  want [%s]", what,
            line + 32, want_rest);
}

/* One access line in text format, captured. Returns the malloc'd output. */
static char *access_text(const char *m, const char *p, int st, unsigned long long b, long long us,
                         size_t *len)
{
    cap_start();
    dapi_log_access(m, p, st, b, us);
    dapi_log_flush();
    return cap_end(len);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_batched_until_flush(void)
{
    dapi_log_setup(0, DAPI_LOG_INFO);
    cap_start();
    dapi_log_access("GET", "/api/health", 200, 15, 84);
    dapi_log_access("POST", "/api/v1/query", 201, 2048, 1234);
    long long before = cap_size();
    dapi_log_flush();
    long long after = cap_size();
    dapi_log_flush(); /* a second flush writes nothing more */
    long long again = cap_size();
    size_t len;
    char *out = cap_end(&len);
    T_EQ_INT(before, 0);
    T_CHECK(after > 0 && after == (long long)len, "flush wrote everything (%lld, %zu)", after,
            len);
    T_EQ_INT(again, after);
    char *lines[4];
    int unterminated;
    int n = split_lines(out, len, lines, 4, &unterminated);
    T_EQ_INT(n, 2);
    T_CHECK(!unterminated, "last line ends with a newline");
    if(n == 2) {
        check_text_access(lines[0], "GET \"/api/health\" 200 15 0.084ms", "health line");
        check_text_access(lines[1], "POST \"/api/v1/query\" 201 2048 1.234ms", "query line");
    }
    free(out);
}

static void test_buffer_fills(void)
{
    /* More than the batch holds: full batches go out on their own, only whole lines. */
    dapi_log_setup(0, DAPI_LOG_INFO);
    enum { N = 3000 };
    cap_start();
    for(int i = 0; i < N; i++)
        dapi_log_access("GET", "/api/v1/some/longer/path/for/the/batch", 200,
                        (unsigned long long)i, i);
    long long before = cap_size();
    dapi_log_flush();
    size_t len;
    char *out = cap_end(&len);
    T_CHECK(before > 0, "a full batch is written without a flush (%lld bytes)", before);
    T_CHECK(before > 0 && out[before - 1] == '\n', "the automatic write ends on a line end");
    char **lines = malloc(N * sizeof *lines);
    int unterminated;
    int n = split_lines(out, len, lines, N, &unterminated);
    T_EQ_INT(n, N);
    T_CHECK(!unterminated, "ends with a newline");
    int good = 0;
    for(int i = 0; i < n && i < N; i++) {
        char want[128], why[160];
        snprintf(want, sizeof want,
                 "GET \"/api/v1/some/longer/path/for/the/batch\" 200 %d %d.%03dms", i, i / 1000,
                 i % 1000);
        good += strlen(lines[i]) > 32 && check_stamp(lines[i], why, sizeof why) &&
                strcmp(lines[i] + 32, want) == 0;
    }
    T_EQ_INT(good, N); /* all lines, in order, intact */
    free(lines);
    free(out);
}

static void test_text_fields(void)
{
    dapi_log_setup(0, DAPI_LOG_INFO);
    /* The same numbers on the fast path (plain path) and the escaping path (a quote in it). */
    static const struct {
        const char *method;
        int status;
        unsigned long long bytes;
        long long us;
        const char *tail; /* " <status> <bytes> <ms>" */
    } cases[] = {
        {"GET", 200, 15, 84, " 200 15 0.084ms"},
        {"GET", 200, 0, 0, " 200 0 0.000ms"},
        {"GET", 200, 1, 5, " 200 1 0.005ms"},
        {"HEAD", 204, 0, 999, " 204 0 0.999ms"},
        {"GET", 404, 7, 1000, " 404 7 1.000ms"},
        {"POST", 201, 123456, 1234, " 201 123456 1.234ms"},
        {"DELETE", 503, 18446744073709551615ULL, 1001, " 503 18446744073709551615 1.001ms"},
        {"GET", 500, 42, 999999, " 500 42 999.999ms"},
        {"GET", 200, 42, 1234567, " 200 42 1234.567ms"},
        {"GET", 200, 42, 86400000000LL, " 200 42 86400000.000ms"},
        {"PATCH", 100, 3, 10, " 100 3 0.010ms"},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for(int esc = 0; esc <= 1; esc++) {
            const char *path = esc ? "/q\"x" : "/api/health";
            const char *qpath = esc ? "\"/q\\\"x\"" : "\"/api/health\"";
            char want[256], what[64];
            snprintf(want, sizeof want, "%s %s%s", cases[i].method, qpath, cases[i].tail);
            snprintf(what, sizeof what, "case %zu %s", i, esc ? "escaped" : "plain");
            size_t len;
            char *out = access_text(cases[i].method, path, cases[i].status, cases[i].bytes,
                                    cases[i].us, &len);
            T_CHECK(len > 0 && out[len - 1] == '\n' && memchr(out, '\n', len) == out + len - 1,
                    "%s: exactly one line", what);
            if(len)
                out[len - 1] = '\0';
            check_text_access(out, want, what);
            free(out);
        }
    }
}

static void test_text_paths_agree(void)
{
    /* Odd numbers (negative duration or status) must render the same whichever way the
     * line is built: only the path differs between these two lines. */
    dapi_log_setup(0, DAPI_LOG_INFO);
    static const struct {
        int status;
        long long us;
    } cases[] = {{200, -5}, {200, -1234}, {-1, 10}, {0, 0}};
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t l1, l2;
        char *a = access_text("GET", "/p", cases[i].status, 1, cases[i].us, &l1);
        char *b = access_text("GET", "/p\\", cases[i].status, 1, cases[i].us, &l2);
        if(l1)
            a[l1 - 1] = '\0'; /* drop the newlines */
        if(l2)
            b[l2 - 1] = '\0';
        const char *ta = strstr(a, "\"/p\""), *tb = strstr(b, "\"/p\\\\\"");
        T_CHECK(ta && tb && strcmp(ta + 4, tb + 6) == 0,
                "status %d duration %lld us: fast and escaped lines disagree:\n  [%s]\n  [%s]",
                cases[i].status, cases[i].us, ta ? ta + 4 : a, tb ? tb + 6 : b);
        free(a);
        free(b);
    }
}

static void test_text_escaping(void)
{
    dapi_log_setup(0, DAPI_LOG_INFO);
    static const struct {
        const char *method, *path, *want_rest;
    } cases[] = {
        {"GET", "/a\"b", "GET \"/a\\\"b\" 200 1 0.001ms"},
        {"GET", "/a\\b", "GET \"/a\\\\b\" 200 1 0.001ms"},
        {"GET", "/a\nb", "GET \"/a\\nb\" 200 1 0.001ms"},
        {"GET", "/a\r\nHTTP/1.1 200", "GET \"/a\\r\\nHTTP/1.1 200\" 200 1 0.001ms"},
        {"GET", "/a\tb", "GET \"/a\\tb\" 200 1 0.001ms"},
        {"GET", "/\x01\x1f", "GET \"/\\u0001\\u001f\" 200 1 0.001ms"},
        {"GET", "/caf\xc3\xa9", "GET \"/caf\xc3\xa9\" 200 1 0.001ms"},   /* UTF-8 kept */
        {"GET", "/\xe2\x82\xac", "GET \"/\xe2\x82\xac\" 200 1 0.001ms"}, /* euro sign */
        {"GET", "/x\xffy", "GET \"/x\xef\xbf\xbdy\" 200 1 0.001ms"},     /* bad byte */
        {"GET", "/x\xc3", "GET \"/x\xef\xbf\xbd\" 200 1 0.001ms"},       /* cut short */
        {"GET", "/del\x7f", "GET \"/del\x7f\" 200 1 0.001ms"},
        {"GET", "", "GET \"\" 200 1 0.001ms"},
        {"G\nT", "/", "\"G\\nT\" \"/\" 200 1 0.001ms"}, /* method too */
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *out = access_text(cases[i].method, cases[i].path, 200, 1, 1, &len);
        char what[48];
        snprintf(what, sizeof what, "escape case %zu", i);
        /* exactly one line, no raw control byte inside it */
        int ctl = 0;
        for(size_t k = 0; k + 1 < len; k++)
            ctl += (unsigned char)out[k] < 0x20;
        T_CHECK(len > 0 && out[len - 1] == '\n', "%s: ends with a newline", what);
        T_CHECK(ctl == 0, "%s: %d raw control bytes inside the line", what, ctl);
        if(len)
            out[len - 1] = '\0';
        check_text_access(out, cases[i].want_rest, what);
        free(out);
    }
}

/* Parses one JSON access line and checks all its fields. */
static void check_json_access(const char *line, const char *method, const char *path,
                              size_t path_len, int status, long long bytes, double ms,
                              const char *what)
{
    struct dapi_jv *root = NULL;
    char err[128] = "";
    T_CHECK(dapi_jv_parse(line, strlen(line), 8, &root, err, sizeof err) == DAPI_OK,
            "%s: line is JSON (%s): [%.200s]", what, err, line);
    if(!root)
        return;
    T_CHECK(dapi_jv_type(root) == DAPI_J_OBJECT, "%s: an object", what);
    size_t n = 0;
    const char *ts = dapi_jv_str(dapi_jv_get(root, "ts"), &n);
    char why[160] = "";
    T_CHECK(ts && n == 24 && check_stamp(ts, why, sizeof why), "%s: ts %s %s", what,
            ts ? ts : "(missing)", why);
    const char *lvl = dapi_jv_str(dapi_jv_get(root, "level"), NULL);
    T_CHECK(lvl && strcmp(lvl, "info") == 0, "%s: level %s", what, lvl ? lvl : "(missing)");
    struct dapi_jv *a = dapi_jv_get(root, "access");
    T_CHECK(a && dapi_jv_type(a) == DAPI_J_OBJECT, "%s: access object", what);
    if(a) {
        const char *m = dapi_jv_str(dapi_jv_get(a, "method"), NULL);
        T_CHECK(m && strcmp(m, method) == 0, "%s: method %s", what, m ? m : "(missing)");
        size_t pl = 0;
        const char *p = dapi_jv_str(dapi_jv_get(a, "path"), &pl);
        T_CHECK(p && pl == path_len && memcmp(p, path, pl) == 0,
                "%s: path round-trips (%zu bytes, want %zu)", what, pl, path_len);
        struct dapi_jv *s = dapi_jv_get(a, "status"), *b = dapi_jv_get(a, "bytes"),
                       *d = dapi_jv_get(a, "duration_ms");
        T_CHECK(s && dapi_jv_type(s) == DAPI_J_INT && dapi_jv_int(s) == status, "%s: status",
                what);
        T_CHECK(b && dapi_jv_type(b) == DAPI_J_INT && dapi_jv_int(b) == bytes, "%s: bytes", what);
        double got = d ? (dapi_jv_type(d) == DAPI_J_INT ? (double)dapi_jv_int(d) : dapi_jv_real(d))
                       : -1;
        T_CHECK(d && got > ms - 0.0005 && got < ms + 0.0005, "%s: duration_ms %f, want %f", what,
                got, ms);
    }
    dapi_jv_free(root);
}

static void test_json_format(void)
{
    dapi_log_setup(1, DAPI_LOG_INFO);
    static const struct {
        const char *method, *path;
        int status;
        long long bytes, us;
        double ms;
    } cases[] = {
        {"GET", "/api/health", 200, 15, 84, 0.084},
        {"POST", "/api/v1/query", 201, 0, 1234, 1.234},
        {"GET", "/a\"b\\c\nd\te\x01", 404, 9, 5, 0.005},
        {"GET", "/caf\xc3\xa9/\xe2\x82\xac", 200, 1, 1000000, 1000.0},
        {"PUT", "", 503, 0, 0, 0.0},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cap_start();
        dapi_log_access(cases[i].method, cases[i].path, cases[i].status,
                        (unsigned long long)cases[i].bytes, cases[i].us);
        long long before = cap_size();
        dapi_log_flush();
        size_t len;
        char *out = cap_end(&len);
        char what[32];
        snprintf(what, sizeof what, "json case %zu", i);
        T_EQ_INT(before, 0); /* batched in JSON mode too */
        T_CHECK(len > 0 && out[len - 1] == '\n' && memchr(out, '\n', len) == out + len - 1,
                "%s: exactly one line", what);
        T_CHECK(strncmp(out, "{\"ts\":\"", 7) == 0, "%s: starts with ts: [%.40s]", what, out);
        if(len)
            out[len - 1] = '\0';
        check_json_access(out, cases[i].method, cases[i].path, strlen(cases[i].path),
                          cases[i].status, cases[i].bytes, cases[i].ms, what);
        free(out);
    }
    /* An invalid byte comes out as U+FFFD, the line stays valid JSON. */
    cap_start();
    dapi_log_access("GET", "/x\xffy", 200, 1, 1);
    dapi_log_flush();
    size_t len;
    char *out = cap_end(&len);
    if(len)
        out[len - 1] = '\0';
    check_json_access(out, "GET", "/x\xef\xbf\xbdy", 6, 200, 1, 0.001, "json bad byte");
    free(out);
    dapi_log_setup(0, DAPI_LOG_INFO);
}

static void test_json_regular_line(void)
{
    dapi_log_setup(1, DAPI_LOG_INFO);
    cap_start();
    dapi_warn("disk %s at %d%%", "/var \"x\"", 93);
    size_t len;
    char *out = cap_end(&len);
    T_CHECK(len > 0 && out[len - 1] == '\n', "json log line ends with newline");
    if(len)
        out[len - 1] = '\0';
    struct dapi_jv *root = NULL;
    T_CHECK(dapi_jv_parse(out, strlen(out), 4, &root, NULL, 0) == DAPI_OK, "is JSON: [%s]", out);
    if(root) {
        const char *lvl = dapi_jv_str(dapi_jv_get(root, "level"), NULL);
        const char *msg = dapi_jv_str(dapi_jv_get(root, "msg"), NULL);
        const char *ts = dapi_jv_str(dapi_jv_get(root, "ts"), NULL);
        char why[160] = "";
        T_CHECK(lvl && strcmp(lvl, "warn") == 0, "level warn");
        T_CHECK(msg && strcmp(msg, "disk /var \"x\" at 93%") == 0, "msg [%s]", msg ? msg : "");
        T_CHECK(ts && check_stamp(ts, why, sizeof why), "ts: %s", why);
        dapi_jv_free(root);
    }
    free(out);
    dapi_log_setup(0, DAPI_LOG_INFO);
}

static void test_order_kept(void)
{
    for(int json = 0; json <= 1; json++) {
        dapi_log_setup(json, DAPI_LOG_INFO);
        cap_start();
        dapi_log_access("GET", "/first", 200, 1, 1);
        dapi_log_access("GET", "/second\"", 200, 1, 1); /* one from the escaping path too */
        long long pending = cap_size();
        dapi_info("third %d", 3);
        long long after_info = cap_size();
        dapi_log_access("GET", "/fourth", 200, 1, 1);
        dapi_error("fifth");
        dapi_log_flush();
        size_t len;
        char *out = cap_end(&len);
        T_EQ_INT(pending, 0);
        /* the info line is written at once, after the two pending access lines */
        T_CHECK(after_info > 0 && after_info < (long long)len, "json=%d: %lld bytes after info",
                json, after_info);
        T_CHECK(after_info > 0 && after_info <= (long long)len && out[after_info - 1] == '\n' &&
                    strstr(out, "third 3") && strstr(out, "third 3") < out + after_info &&
                    strstr(out, "/second") < strstr(out, "third 3"),
                "json=%d: info written together with the access lines before it", json);
        char *lines[8];
        int unterminated;
        int n = split_lines(out, len, lines, 8, &unterminated);
        T_EQ_INT(n, 5);
        static const char *const marks[] = {"/first", "/second", "third 3", "/fourth", "fifth"};
        for(int i = 0; i < 5 && i < n; i++)
            T_CHECK(strstr(lines[i], marks[i]) != NULL, "json=%d line %d is [%s], want %s", json,
                    i, lines[i], marks[i]);
        if(!json && n >= 5) {
            char why[160] = "";
            T_CHECK(check_stamp(lines[2], why, sizeof why), "info line stamp: %s", why);
            T_CHECK(strncmp(lines[2] + 24, " info  third 3", 14) == 0, "info line: [%s]",
                    lines[2]);
            T_CHECK(strncmp(lines[4] + 24, " error fifth", 12) == 0, "error line: [%s]", lines[4]);
        }
        free(out);
    }
    dapi_log_setup(0, DAPI_LOG_INFO);
}

static void test_min_level(void)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for(int min = DAPI_LOG_DEBUG; min <= DAPI_LOG_ERROR; min++) {
        dapi_log_setup(0, (enum dapi_log_level)min);
        cap_start();
        dapi_debug("m-debug");
        dapi_info("m-info");
        dapi_warn("m-warn");
        dapi_error("m-error");
        size_t len;
        char *out = cap_end(&len);
        for(int lv = DAPI_LOG_DEBUG; lv <= DAPI_LOG_ERROR; lv++) {
            char mark[16];
            snprintf(mark, sizeof mark, "m-%s", names[lv]);
            int present = strstr(out, mark) != NULL;
            T_CHECK(present == (lv >= min), "min %s: %s line %s", names[min], names[lv],
                    present ? "written" : "dropped");
        }
        char *lines[8];
        int unterminated;
        int n = split_lines(out, len, lines, 8, &unterminated);
        T_EQ_INT(n, 4 - min);
        free(out);
    }
    dapi_log_setup(0, DAPI_LOG_INFO);
}

static void test_long_message(void)
{
    /* A regular message longer than the formatting buffer: one line, no bytes that were not
     * passed (only a prefix of the message). */
    dapi_log_setup(0, DAPI_LOG_INFO);
    char *big = malloc(5001);
    for(int i = 0; i < 5000; i++)
        big[i] = (char)('a' + i % 26);
    big[5000] = '\0';
    cap_start();
    dapi_info("%s", big);
    size_t len;
    char *out = cap_end(&len);
    T_CHECK(len > 30 && out[len - 1] == '\n' && memchr(out, '\n', len) == out + len - 1,
            "one line");
    if(len > 31) {
        out[len - 1] = '\0';
        const char *msg = out + 24 + 7; /* "<stamp> info  " */
        size_t ml = strlen(msg);
        T_CHECK(strncmp(out + 24, " info  ", 7) == 0, "info prefix");
        T_CHECK(ml > 1000 && ml <= 5000 && memcmp(msg, big, ml) == 0,
                "the message is a prefix of what was passed (%zu bytes)", ml);
    }
    free(out);
    free(big);
}

static char *make_path(size_t n, int quotes)
{
    char *p = malloc(n + 1);
    p[0] = '/';
    for(size_t i = 1; i < n; i++)
        p[i] = quotes && i % 100 == 0 ? '"' : (char)('a' + i % 26);
    p[n] = '\0';
    return p;
}

static void test_long_path(void)
{
    for(int quotes = 0; quotes <= 1; quotes++) {
        char *path = make_path(5000, quotes);
        size_t nq = quotes ? 49 : 0; /* i = 100, 200 .. 4900 */
        /* text */
        dapi_log_setup(0, DAPI_LOG_INFO);
        size_t len;
        char *out = access_text("GET", path, 200, 15, 84, &len);
        size_t want_len = 24 + 8 + 4 + 2 + 5000 + nq + 15 + 1;
        T_CHECK(len == want_len, "text, quotes=%d: line of %zu bytes, want %zu", quotes, len,
                want_len);
        T_CHECK(len > 0 && memchr(out, '\n', len) == out + len - 1, "text: one line");
        if(len) {
            out[len - 1] = '\0';
            /* rebuild the expected escaped form */
            char *want = malloc(5000 * 2 + 64), *w = want;
            w += sprintf(w, "GET \"");
            for(size_t i = 0; i < 5000; i++) {
                if(path[i] == '"')
                    *w++ = '\\';
                *w++ = path[i];
            }
            sprintf(w, "\" 200 15 0.084ms");
            check_text_access(out, want, quotes ? "5000-byte path with quotes" : "5000-byte path");
            free(want);
        }
        free(out);

        /* json */
        dapi_log_setup(1, DAPI_LOG_INFO);
        cap_start();
        dapi_log_access("GET", path, 200, 15, 84);
        dapi_log_flush();
        out = cap_end(&len);
        T_CHECK(len > 5000 && memchr(out, '\n', len) == out + len - 1, "json: one line");
        if(len)
            out[len - 1] = '\0';
        check_json_access(out, "GET", path, 5000, 200, 15, 0.084, "json 5000-byte path");
        free(out);
        free(path);
    }
    dapi_log_setup(0, DAPI_LOG_INFO);
}

static void test_huge_path_no_fragment(void)
{
    /* A path whose escaped form does not fit the line buffer (1 MiB): whatever is written
     * must be a well-formed line (starting with its timestamp), never the tail of a line
     * whose beginning was dropped. */
    static const struct {
        int json;
        size_t n;
        char fill;
    } cases[] = {
        {0, 2u << 20, 'a'}, /* 2 MiB of plain text */
        {1, 2u << 20, 'a'},
        {0, 300000, '\x01'}, /* 300 KB that escape to 1.8 MB */
        {1, 300000, '\x01'},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = malloc(cases[i].n + 1);
        path[0] = '/';
        memset(path + 1, cases[i].fill, cases[i].n - 1);
        path[cases[i].n] = '\0';
        dapi_log_setup(cases[i].json, DAPI_LOG_INFO);
        cap_start();
        dapi_log_access("GET", "/before", 200, 1, 1);
        dapi_log_access("GET", path, 200, 15, 84);
        dapi_log_access("GET", "/after", 200, 1, 1);
        dapi_log_flush();
        size_t len;
        char *out = cap_end(&len);
        char **lines = malloc(8 * sizeof *lines);
        int unterminated;
        int n = split_lines(out, len, lines, 8, &unterminated);
        T_CHECK(!unterminated, "case %zu: output ends with a newline", i);
        T_CHECK(n >= 2 && n <= 3, "case %zu: %d lines", i, n);
        for(int k = 0; k < n && k < 8; k++) {
            char why[160] = "";
            const char *s = cases[i].json
                                ? (strncmp(lines[k], "{\"ts\":\"", 7) == 0 ? lines[k] + 7 : NULL)
                                : lines[k];
            T_CHECK(s && strlen(s) >= 24 && check_stamp(s, why, sizeof why),
                    "case %zu (json=%d, %zu bytes): line %d is a fragment: [%.60s]", i,
                    cases[i].json, cases[i].n, k, lines[k]);
        }
        T_CHECK(n >= 1 && strstr(lines[0], "/before"), "case %zu: first line kept", i);
        T_CHECK(n >= 2 && strstr(lines[n < 8 ? n - 1 : 7], "/after"), "case %zu: last line kept",
                i);
        free(lines);
        free(out);
        free(path);
    }
    dapi_log_setup(0, DAPI_LOG_INFO);
}

struct thr {
    int id;
};

static void *writer(void *arg)
{
    struct thr *t = arg;
    char path[64];
    for(int i = 0; i < 2000; i++) {
        snprintf(path, sizeof path, "/t%d/%d%s", t->id, i, i % 7 == 0 ? "\"q" : "");
        dapi_log_access("GET", path, 200, (unsigned long long)i, t->id);
        if(i % 500 == 0)
            dapi_info("thread %d at %d", t->id, i);
    }
    return NULL;
}

static void test_threads(int with_writer)
{
    /* 4 threads: every line arrives whole, each thread's lines in its own order, a server
     * line after the access lines its thread logged before it. */
    enum { T = 4, PER = 2000, INFOS = 4 };
    dapi_log_setup(0, DAPI_LOG_INFO);
    cap_start();
    char err[256] = "";
    T_CHECK(!with_writer || dapi_log_start(err, sizeof err) == DAPI_OK, "writer: %s", err);
    pthread_t th[T];
    struct thr a[T];
    int started = 0;
    for(int i = 0; i < T; i++) {
        a[i].id = i;
        if(pthread_create(&th[i], NULL, writer, &a[i]) != 0)
            break;
        started++;
    }
    for(int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if(with_writer)
        dapi_log_close(); /* stops the writer */
    else
        dapi_log_flush();
    size_t len;
    char *out = cap_end(&len);
    T_EQ_INT(started, T);
    enum { MAXL = T * (PER + INFOS) + 8 };
    char **lines = malloc(MAXL * sizeof *lines);
    int unterminated;
    int n = split_lines(out, len, lines, MAXL, &unterminated);
    T_EQ_INT(n, T * (PER + INFOS));
    T_CHECK(!unterminated, "ends with a newline");
    int next[T] = {0}, bad = 0;
    for(int k = 0; k < n && k < MAXL; k++) {
        char why[160];
        if(strlen(lines[k]) < 32 || !check_stamp(lines[k], why, sizeof why)) {
            bad++;
            continue;
        }
        int id, seq;
        if(sscanf(lines[k] + 24, " access GET \"/t%d/%d", &id, &seq) == 2) {
            if(id < 0 || id >= T || seq != next[id])
                bad++;
            else
                next[id]++;
        } else if(sscanf(lines[k] + 24, " info  thread %d at %d", &id, &seq) != 2 || id < 0 ||
                  id >= T || next[id] != seq + 1) {
            bad++;
        }
    }
    T_EQ_INT(bad, 0);
    for(int i = 0; i < T; i++)
        T_EQ_INT(next[i], PER);
    free(lines);
    free(out);
}

/* With the writer, a partial batch reaches the file on its own (within 250 ms), and
 * dapi_log_flush still writes everything before it returns. */
static void test_writer_partial_batch(void)
{
    dapi_log_setup(0, DAPI_LOG_INFO);
    cap_start();
    char err[256] = "";
    enum dapi_err started = dapi_log_start(err, sizeof err);
    dapi_log_access("GET", "/alone", 200, 1, 1);
    long long n = 0;
    for(int i = 0; i < 500 && (n = cap_size()) <= 0; i++)
        usleep(10000);
    dapi_log_access("GET", "/flushed", 200, 1, 1);
    dapi_log_flush();
    long long after_flush = cap_size();
    dapi_log_close();
    size_t len;
    char *out = cap_end(&len);
    T_EQ_INT(started, DAPI_OK);
    T_CHECK(n > 0, "the writer wrote the partial batch without a flush (%lld bytes)", n);
    T_CHECK(after_flush == (long long)len && strstr(out, "/alone") &&
                strstr(out, "/flushed") > strstr(out, "/alone"),
            "flush wrote both, in order (%lld of %zu bytes): [%s]", after_flush, len, out);
    free(out);
}

struct filler {
    int from, count;
    atomic_int done;
};

static void *fill(void *arg)
{
    struct filler *f = arg;
    char path[64];
    for(int i = f->from; i < f->from + f->count; i++) {
        snprintf(path, sizeof path, "/blocked/%d", i);
        dapi_log_access("GET", path, 200, (unsigned long long)i, 1);
    }
    atomic_store(&f->done, 1);
    return NULL;
}

static int wait_done(atomic_int *done, int ms)
{
    for(int i = 0; i < ms / 10 && !atomic_load(done); i++)
        usleep(10000);
    return atomic_load(done);
}

struct drainer {
    int fd;
    char *out;
    size_t len, cap;
};

static void *drain_pipe(void *arg)
{
    struct drainer *d = arg;
    for(;;) {
        if(d->cap - d->len < 65536) {
            char *n = realloc(d->out, d->cap * 2 + 65536);
            if(!n)
                abort();
            d->out = n;
            d->cap = d->cap * 2 + 65536;
        }
        ssize_t r = read(d->fd, d->out + d->len, d->cap - d->len - 1);
        if(r <= 0)
            break;
        d->len += (size_t)r;
        d->out[d->len] = '\0';
    }
    return NULL;
}

/* The log's file stops taking writes (a pipe nobody reads, like a disk in writeback): the
 * threads logging go on until the writer is behind by all its batches, and only then wait
 * (counted); once the file takes writes again, every line arrives, whole and in order. */
static void test_writer_never_waits_for_the_file(void)
{
    enum { FIRST = 8000, SECOND = 60000 }; /* ~0.5 MiB, then ~4 MiB more */
    int p[2];
    if(pipe(p) != 0) {
        T_CHECK(0, "pipe");
        return;
    }
    dapi_log_setup(0, DAPI_LOG_INFO);
    char err[256] = "";
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    enum dapi_err started = dapi_log_start(err, sizeof err);
    unsigned long long pending0 = 0, waits0 = 0, pending1 = 0, waits1 = 0, waits2 = 0, x = 0;
    dapi_log_stats(&x, &waits0);
    struct filler a = {0, FIRST, 0}, b = {FIRST, SECOND, 0};
    pthread_t ta, tb;
    int made_a = pthread_create(&ta, NULL, fill, &a) == 0;
    int first_done = made_a && wait_done(&a.done, 10000);
    dapi_log_stats(&pending0, &x);
    int made_b = first_done && pthread_create(&tb, NULL, fill, &b) == 0;
    int second_done_early = made_b && wait_done(&b.done, 500);
    dapi_log_stats(&pending1, &waits1);
    struct drainer d = {p[0], NULL, 0, 0};
    pthread_t td;
    int made_d = pthread_create(&td, NULL, drain_pipe, &d) == 0;
    int second_done = made_b && wait_done(&b.done, 20000);
    if(made_a)
        pthread_join(ta, NULL);
    if(made_b)
        pthread_join(tb, NULL);
    dapi_log_stats(&x, &waits2);
    dapi_log_close();
    dup2(saved_err, STDERR_FILENO); /* the pipe's last writer is gone: the drainer ends */
    if(made_d)
        pthread_join(td, NULL);
    close(p[0]);

    T_EQ_INT(started, DAPI_OK);
    T_CHECK(first_done, "~0.5 MiB of lines logged while the file takes nothing");
    T_CHECK(pending0 > 300000, "they wait in the writer's batches (%llu bytes)", pending0);
    T_CHECK(!second_done_early, "4 MiB more: the thread waits for the writer");
    T_CHECK(pending1 > 3500000 && pending1 <= 64ull * 65536,
            "the writer is behind by its batches (%llu bytes)", pending1);
    T_CHECK(waits1 > waits0, "the wait is counted (%llu, was %llu)", waits1, waits0);
    T_CHECK(second_done, "once the file takes writes, the thread goes on");
    T_CHECK(waits2 >= waits1, "waits only grow (%llu, %llu)", waits2, waits1);
    char *lines_end = d.out ? d.out + d.len : NULL;
    int seq = 0, bad = 0;
    for(char *l = d.out; l && l < lines_end;) {
        char *nl = memchr(l, '\n', (size_t)(lines_end - l));
        if(!nl)
            break;
        *nl = '\0';
        int i = -1;
        char *q = strstr(l, " access GET \"/blocked/");
        if(q && sscanf(q, " access GET \"/blocked/%d", &i) == 1 && i == seq)
            seq++;
        else
            bad++;
        l = nl + 1;
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(seq, FIRST + SECOND);
    free(d.out);
}

/* ---- requests: query string, client address, request id ------------------------------ */

static char *request_line(const struct dapi_access *a, size_t *len)
{
    cap_start();
    dapi_log_request(a);
    dapi_log_flush();
    char *out = cap_end(len);
    if(*len && out[*len - 1] == '\n')
        out[--*len] = '\0';
    return out;
}

static void test_request_text(void)
{
    dapi_log_setup(0, DAPI_LOG_INFO);
    static const struct {
        struct dapi_access a;
        const char *want_rest;
    } cases[] = {
        {{"GET", "/api/queries/s/results", "page_number=2", "127.0.0.1", "Ab12", 200, 15, 84},
         "GET \"/api/queries/s/results?page_number=2\" 200 15 0.084ms client=127.0.0.1 id=Ab12"},
        {{"GET", "/api/health", NULL, "2001:db8::1", NULL, 200, 15, 84},
         "GET \"/api/health\" 200 15 0.084ms client=2001:db8::1"},
        {{"GET", "/api/health", "", NULL, "req-7", 200, 15, 84},
         "GET \"/api/health\" 200 15 0.084ms id=req-7"},
        {{NULL, NULL, NULL, NULL, NULL, 0, 0, 0}, "- \"-\" 0 0 0.000ms"},
        /* the escaping path: a quote in the query, odd bytes in the id */
        {{"GET", "/p", "a=\"b\"", "127.0.0.1", "x y", 400, 1, 1},
         "GET \"/p?a=\\\"b\\\"\" 400 1 0.001ms client=127.0.0.1 id=\"x y\""},
        {{"GET", "/p", "a=1", "127.0.0.1", "id\"q", 200, 1, 1},
         "GET \"/p?a=1\" 200 1 0.001ms client=127.0.0.1 id=\"id\\\"q\""},
    };
    for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *out = request_line(&cases[i].a, &len);
        char what[32];
        snprintf(what, sizeof what, "request case %zu", i);
        T_CHECK(!memchr(out, '\n', len), "%s: one line", what);
        check_text_access(out, cases[i].want_rest, what);
        free(out);
    }
}

static void test_request_json(void)
{
    dapi_log_setup(1, DAPI_LOG_INFO);
    struct dapi_access a = {
        "GET", "/api/queries/s/results", "page_number=2&x=%22", "10.1.2.3", "Xy-12", 200, 15, 84};
    size_t len;
    char *out = request_line(&a, &len);
    check_json_access(out, "GET", "/api/queries/s/results", 22, 200, 15, 0.084, "json request");
    struct dapi_jv *root = NULL;
    char err[128];
    if(dapi_jv_parse(out, len, 8, &root, err, sizeof err) == DAPI_OK) {
        struct dapi_jv *acc = dapi_jv_get(root, "access");
        const char *q = dapi_jv_str(dapi_jv_get(acc, "query"), NULL);
        const char *c = dapi_jv_str(dapi_jv_get(acc, "client"), NULL);
        const char *id = dapi_jv_str(dapi_jv_get(acc, "request_id"), NULL);
        T_EQ_STR(q, "page_number=2&x=%22");
        T_EQ_STR(c, "10.1.2.3");
        T_EQ_STR(id, "Xy-12");
        dapi_jv_free(root);
    }
    free(out);
    /* Absent fields are left out. */
    struct dapi_access b = {"GET", "/x", NULL, NULL, NULL, 200, 1, 1};
    out = request_line(&b, &len);
    T_CHECK(!strstr(out, "query") && !strstr(out, "client") && !strstr(out, "request_id"),
            "no empty fields: [%s]", out);
    free(out);
    dapi_log_setup(0, DAPI_LOG_INFO);
}

/* ---- files: --log-file, --access-log, reopen ------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if(!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* dapi_log_open, then the writer when the test runs with it. */
static enum dapi_err open_files(const char *log_file, const char *access_file, int with_writer,
                                char *err, size_t errlen)
{
    enum dapi_err r = dapi_log_open(log_file, access_file, err, errlen);
    return r || !with_writer ? r : dapi_log_start(err, errlen);
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for(const char *p = s; p && (p = strstr(p, what)); p++)
        n++;
    return n;
}

static void test_files_and_reopen(int with_writer)
{
    char dir[] = "/tmp/dapi-logf-XXXXXX";
    if(!mkdtemp(dir)) {
        T_CHECK(0, "mkdtemp");
        return;
    }
    char lp[128], ap[128], lp1[128], ap1[128], bad[160], err[512] = "";
    snprintf(lp, sizeof lp, "%s/dapi.log", dir);
    snprintf(ap, sizeof ap, "%s/access.log", dir);
    snprintf(lp1, sizeof lp1, "%s/dapi.log.1", dir);
    snprintf(ap1, sizeof ap1, "%s/access.log.1", dir);
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.log", dir);
    dapi_log_setup(0, DAPI_LOG_INFO);

    /* An unopenable file: an error naming it, nothing changes. */
    T_EQ_INT(dapi_log_open(lp, bad, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--access-log") && strstr(err, bad), "says which file: [%s]", err);
    T_EQ_INT(dapi_log_has_files(), 0);

    T_EQ_INT(open_files(lp, ap, with_writer, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_log_has_files(), 1);
    cap_start();
    dapi_info("server line one");
    dapi_log_access("GET", "/one", 200, 1, 1);
    /* More than a batch: with the writer, some are written while others wait. */
    for(int i = 0; i < 3000; i++)
        dapi_log_access("GET", "/one/more", 200, (unsigned long long)i, 1);
    /* rotated away, as logrotate does; the pending access line belongs to the old file */
    T_EQ_INT(rename(lp, lp1), 0);
    T_EQ_INT(rename(ap, ap1), 0);
    T_EQ_INT(dapi_log_reopen(err, sizeof err), DAPI_OK);
    dapi_info("server line two");
    dapi_log_access("GET", "/two", 200, 1, 1);
    dapi_log_close();
    size_t len;
    char *stderr_out = cap_end(&len);
    T_EQ_INT(len, 0); /* nothing went to stderr */
    char *l1 = slurp(lp1), *a1 = slurp(ap1), *l2 = slurp(lp), *a2 = slurp(ap);
    T_CHECK(l1 && strstr(l1, "server line one") && !strstr(l1, "two") && !strstr(l1, "access"),
            "old log file: [%.200s]", l1 ? l1 : "(none)");
    T_CHECK(a1 && strstr(a1, "\"/one\"") && !strstr(a1, "/two") && !strstr(a1, "server"),
            "old access file: [%.200s]", a1 ? a1 : "(none)");
    T_EQ_INT(count_of(a1, "/one/more"), 3000);
    T_CHECK(l2 && strstr(l2, "server line two") && !strstr(l2, "one"), "new log file: [%s]",
            l2 ? l2 : "(none)");
    T_CHECK(a2 && strstr(a2, "\"/two\"") && !strstr(a2, "/one"), "new access file: [%s]",
            a2 ? a2 : "(none)");
    struct stat st;
    T_CHECK(stat(lp, &st) == 0 && (st.st_mode & 0777 & ~0640) == 0, "mode at most 0640 (%o)",
            (unsigned)(st.st_mode & 0777));
    free(stderr_out);
    free(l1);
    free(a1);
    free(l2);
    free(a2);

    /* Only --log-file: access lines go with the server lines, in order. */
    unlink(lp);
    T_EQ_INT(open_files(lp, NULL, with_writer, err, sizeof err), DAPI_OK);
    dapi_log_access("GET", "/first", 200, 1, 1);
    dapi_warn("second");
    dapi_log_close();
    char *both = slurp(lp);
    char *f = both ? strstr(both, "/first") : NULL, *w = both ? strstr(both, "second") : NULL;
    T_CHECK(f && w && f < w, "one file, in order: [%s]", both ? both : "(none)");
    free(both);

    /* Only --access-log: server lines stay on stderr. A reopen that fails keeps the old file. */
    unlink(ap);
    T_EQ_INT(open_files(NULL, ap, with_writer, err, sizeof err), DAPI_OK);
    cap_start();
    dapi_info("to stderr");
    dapi_log_access("GET", "/to-file", 200, 1, 1);
    char moved[160];
    snprintf(moved, sizeof moved, "%s/gone", dir);
    T_EQ_INT(mkdir(moved, 0700), 0);
    char inner[200];
    snprintf(inner, sizeof inner, "%s/access.log", moved);
    dapi_log_flush();
    dapi_log_close();
    stderr_out = cap_end(&len);
    T_CHECK(strstr(stderr_out, "to stderr") && !strstr(stderr_out, "/to-file"),
            "stderr has the server line only: [%s]", stderr_out);
    char *af = slurp(ap);
    T_CHECK(af && strstr(af, "/to-file"), "access file: [%s]", af ? af : "(none)");
    free(af);
    free(stderr_out);

    T_EQ_INT(open_files(NULL, inner, with_writer, err, sizeof err), DAPI_OK);
    dapi_log_access("GET", "/kept-1", 200, 1, 1);
    char gone2[200];
    snprintf(gone2, sizeof gone2, "%s/gone2", dir);
    T_EQ_INT(rename(moved, gone2), 0); /* the directory is gone: the path cannot be opened */
    err[0] = '\0';
    T_CHECK(dapi_log_reopen(err, sizeof err) != DAPI_OK, "reopen fails");
    T_CHECK(strstr(err, inner) != NULL, "says which: [%s]", err);
    dapi_log_access("GET", "/kept-2", 200, 1, 1);
    dapi_log_close();
    char kept[220];
    snprintf(kept, sizeof kept, "%s/access.log", gone2);
    af = slurp(kept);
    T_CHECK(af && strstr(af, "/kept-1") && strstr(af, "/kept-2"), "still the old file: [%s]",
            af ? af : "(none)");
    free(af);

    unlink(kept);
    rmdir(gone2);
    unlink(lp);
    unlink(ap);
    unlink(lp1);
    unlink(ap1);
    rmdir(dir);
}

struct info_line {
    atomic_int done;
};

static void *log_info_line(void *arg)
{
    struct info_line *t = arg;
    dapi_warn("a warning while the access log is stuck");
    atomic_store(&t->done, 1);
    return NULL;
}

/* With --access-log a file of its own that takes no writes (a FIFO nobody reads), a server
 * line is not held up by it: it goes to --log-file at once. */
static void test_server_lines_do_not_wait_for_a_stuck_access_log(void)
{
    char dir[] = "/tmp/dapi-logs-XXXXXX";
    if(!mkdtemp(dir)) {
        T_CHECK(0, "mkdtemp");
        return;
    }
    char lp[128], fifo[128], err[256] = "";
    snprintf(lp, sizeof lp, "%s/dapi.log", dir);
    snprintf(fifo, sizeof fifo, "%s/access.fifo", dir);
    int rfd = mkfifo(fifo, 0600) == 0 ? open(fifo, O_RDONLY | O_NONBLOCK) : -1;
    T_CHECK(rfd >= 0, "fifo");
    if(rfd < 0)
        return;
    dapi_log_setup(0, DAPI_LOG_INFO);
    T_EQ_INT(open_files(lp, fifo, 1, err, sizeof err), DAPI_OK);
    struct filler a = {0, 8000, 0}; /* ~0.5 MiB: the writer is stuck in write(2) */
    pthread_t ta, ti, td;
    int made_a = pthread_create(&ta, NULL, fill, &a) == 0;
    int filled = made_a && wait_done(&a.done, 10000);
    struct info_line info = {0};
    int made_i = pthread_create(&ti, NULL, log_info_line, &info) == 0;
    int info_done = made_i && wait_done(&info.done, 3000);
    char *l = slurp(lp);
    fcntl(rfd, F_SETFL, 0); /* the drainer's reads wait */
    struct drainer d = {rfd, NULL, 0, 0};
    int made_d = pthread_create(&td, NULL, drain_pipe, &d) == 0;
    if(made_a)
        pthread_join(ta, NULL);
    if(made_i)
        pthread_join(ti, NULL);
    dapi_log_close(); /* writes the rest to the FIFO and closes it: the drainer ends */
    if(made_d)
        pthread_join(td, NULL);
    close(rfd);
    T_CHECK(filled, "the access lines were logged");
    T_CHECK(info_done, "the warning did not wait for the access log");
    T_CHECK(l && strstr(l, "a warning while the access log is stuck"), "it is in --log-file: [%s]",
            l ? l : "(none)");
    T_EQ_INT(count_of(d.out ? d.out : "", " access GET \"/blocked/"), 8000);
    free(l);
    free(d.out);
    unlink(lp);
    unlink(fifo);
    rmdir(dir);
}

int main(void)
{
    char tmpl[] = "/tmp/dapi-log-XXXXXX";
    cap_fd = mkstemp(tmpl);
    saved_err = dup(STDERR_FILENO);
    if(cap_fd < 0 || saved_err < 0) {
        T_CHECK(0, "mkstemp/dup");
        T_DONE();
    }
    unlink(tmpl);
    /* A local time zone far from UTC, so that a local-time stamp would be caught. */
    setenv("TZ", "XST+05", 1);
    tzset();

    test_batched_until_flush();
    test_buffer_fills();
    test_text_fields();
    test_text_paths_agree();
    test_text_escaping();
    test_json_format();
    test_json_regular_line();
    test_order_kept();
    test_min_level();
    test_long_message();
    test_long_path();
    test_huge_path_no_fragment();
    test_threads(0);
    test_threads(1);
    test_writer_partial_batch();
    test_writer_never_waits_for_the_file();
    test_request_text();
    test_request_json();
    test_files_and_reopen(0);
    test_files_and_reopen(1);
    test_server_lines_do_not_wait_for_a_stuck_access_log();

    dapi_log_flush();
    dup2(saved_err, STDERR_FILENO);
    close(saved_err);
    close(cap_fd);
    T_DONE();
}
