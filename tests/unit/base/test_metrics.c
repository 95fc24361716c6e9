/* The metrics recorder: every family renders in the exposition format (HELP, TYPE, samples),
 * histograms are cumulative with +Inf, _sum and _count, requests are counted by route, method
 * and status with a bounded table, named counters, and reset. */
#include <stdlib.h>

#include "base/metrics.h"
#include "t.h"

/* The value of the sample line that starts with name (labels included), or -1. */
static double value_of(const char *text, const char *name)
{
    size_t n = strlen(name);
    for(const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if(strncmp(p, name, n) == 0 && p[n] == ' ')
            return atof(p + n + 1);
    return -1;
}

static char *render(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 24);
    dapi_metrics_render(&b);
    dapi_buf_addc(&b, '\0');
    return dapi_buf_take(&b, NULL);
}

static void test_requests(void)
{
    dapi_metrics_reset();
    dapi_metrics_request("/api/queries", "POST", 200, 100, 300);     /* 0.3 ms */
    dapi_metrics_request("/api/queries", "POST", 200, 50, 2000);     /* 2 ms */
    dapi_metrics_request("/api/queries", "POST", 400, 10, 20000000); /* 20 s: past 10 */
    dapi_metrics_request(NULL, "BREW", 404, 21, 100);                /* no route, odd method */
    char *t = render();
    T_CHECK(t != NULL, "rendered");
    if(!t)
        return;
    T_EQ_INT(
        value_of(t,
                 "dapi_http_requests_total{route=\"/api/queries\",method=\"POST\",code=\"200\"}"),
        2);
    T_EQ_INT(
        value_of(t,
                 "dapi_http_requests_total{route=\"/api/queries\",method=\"POST\",code=\"400\"}"),
        1);
    T_EQ_INT(
        value_of(t, "dapi_http_requests_total{route=\"unmatched\",method=\"other\",code=\"404\"}"),
        1);
    T_EQ_INT(
        value_of(
            t,
            "dapi_http_response_bytes_total{route=\"/api/queries\",method=\"POST\",code=\"200\"}"),
        150);
    /* cumulative buckets */
    T_EQ_INT(
        value_of(
            t, "dapi_http_request_duration_seconds_bucket{route=\"/api/queries\",le=\"0.0005\"}"),
        1);
    T_EQ_INT(
        value_of(
            t, "dapi_http_request_duration_seconds_bucket{route=\"/api/queries\",le=\"0.0025\"}"),
        2);
    T_EQ_INT(
        value_of(t, "dapi_http_request_duration_seconds_bucket{route=\"/api/queries\",le=\"10\"}"),
        2);
    T_EQ_INT(
        value_of(t,
                 "dapi_http_request_duration_seconds_bucket{route=\"/api/queries\",le=\"+Inf\"}"),
        3);
    T_EQ_INT(value_of(t, "dapi_http_request_duration_seconds_count{route=\"/api/queries\"}"), 3);
    double sum = value_of(t, "dapi_http_request_duration_seconds_sum{route=\"/api/queries\"}");
    T_CHECK(sum > 20.0022 && sum < 20.0024, "sum %f", sum);
    T_CHECK(strstr(t, "# TYPE dapi_http_requests_total counter\n") != NULL, "TYPE line");
    T_CHECK(strstr(t, "# TYPE dapi_http_request_duration_seconds histogram\n") != NULL,
            "histogram");
    T_CHECK(strstr(t, "# HELP dapi_http_requests_total ") != NULL, "HELP line");
    free(t);

    /* bounded: more distinct series than the table holds are counted as dropped, not lost
     * silently, and nothing crashes */
    dapi_metrics_reset();
    static char names[700][24];
    for(int i = 0; i < 700; i++) {
        snprintf(names[i], sizeof names[i], "/r%d", i);
        dapi_metrics_request(names[i], "GET", 200, 1, 1);
    }
    t = render();
    if(t) {
        T_EQ_INT(value_of(t, "dapi_http_series_dropped_total"), 700 - 512);
        T_EQ_INT(
            value_of(t, "dapi_http_requests_total{route=\"/r0\",method=\"GET\",code=\"200\"}"), 1);
    }
    free(t);
}

static void test_queries_and_named(void)
{
    dapi_metrics_reset();
    dapi_metrics_created(0);
    dapi_metrics_created(1);
    dapi_metrics_created(0);
    dapi_metrics_run(1, 40000); /* 40 ms */
    dapi_metrics_run(0, 2000000);
    dapi_metrics_page(100, 5000);
    dapi_metrics_page(7, 300);
    dapi_metrics_upstream("ok");
    dapi_metrics_upstream("retry");
    dapi_metrics_upstream("error");
    dapi_metrics_upstream("ok");
    dapi_metrics_count("dapi_test_things_total", "things counted by the test", 2);
    dapi_metrics_count("dapi_test_things_total", "things counted by the test", 3);
    char *t = render();
    if(!t)
        return;
    T_EQ_INT(value_of(t, "dapi_queries_created_total"), 3);
    T_EQ_INT(value_of(t, "dapi_reuse_hits_total"), 1);
    T_EQ_INT(value_of(t, "dapi_reuse_misses_total"), 2);
    T_EQ_INT(
        value_of(t, "dapi_query_run_duration_seconds_bucket{outcome=\"succeeded\",le=\"0.05\"}"),
        1);
    T_EQ_INT(
        value_of(t, "dapi_query_run_duration_seconds_bucket{outcome=\"succeeded\",le=\"0.01\"}"),
        0);
    T_EQ_INT(value_of(t, "dapi_query_run_duration_seconds_bucket{outcome=\"failed\",le=\"2.5\"}"),
             1);
    T_EQ_INT(value_of(t, "dapi_query_run_duration_seconds_count{outcome=\"failed\"}"), 1);
    T_EQ_INT(value_of(t, "dapi_result_pages_served_total"), 2);
    T_EQ_INT(value_of(t, "dapi_result_rows_served_total"), 107);
    T_EQ_INT(value_of(t, "dapi_result_bytes_served_total"), 5300);
    T_EQ_INT(value_of(t, "dapi_upstream_calls_total{outcome=\"ok\"}"), 2);
    T_EQ_INT(value_of(t, "dapi_upstream_calls_total{outcome=\"retry\"}"), 1);
    T_EQ_INT(value_of(t, "dapi_upstream_calls_total{outcome=\"error\"}"), 1);
    T_EQ_INT(value_of(t, "dapi_test_things_total"), 5);
    T_CHECK(strstr(t, "# HELP dapi_test_things_total things counted by the test\n") != NULL,
            "named counter's HELP");
    free(t);
    dapi_metrics_reset();
    t = render();
    if(t) {
        T_EQ_INT(value_of(t, "dapi_queries_created_total"), 0);
        T_EQ_INT(value_of(t, "dapi_test_things_total"), 0);
    }
    free(t);
}

static void test_gauges(void)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    dapi_metrics_gauge(&b, "dapi_x", "an x");
    dapi_metrics_sample(&b, "dapi_x", "pool=\"run\"", 3);
    dapi_metrics_sample(&b, "dapi_x", NULL, 0.25);
    dapi_buf_addc(&b, '\0');
    T_EQ_STR(b.data,
             "# HELP dapi_x an x\n# TYPE dapi_x gauge\ndapi_x{pool=\"run\"} 3\ndapi_x 0.25\n");
    dapi_buf_free(&b);
}

int main(void)
{
    test_requests();
    test_queries_and_named();
    test_gauges();
    T_DONE();
}
