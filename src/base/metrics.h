/* Process-wide counters and histograms for GET /metrics (Prometheus text format 0.0.4).
 *
 * Modules record what happens where it happens (a request answered, a query created, an
 * upstream call retried) with one call each; the values live here, in atomics or behind one
 * short lock, and cost a few nanoseconds. Values that are states rather than events (queries
 * by state, pool queues, connections, state-dir bytes) are not kept here: the /metrics handler
 * reads them from their owners when it renders (dapi_metrics_gauge).
 *
 * Label values are route names and method names from static tables, status codes and a few
 * fixed words, never anything a client chose: the number of series stays bounded. */
#ifndef DAPI_METRICS_H
#define DAPI_METRICS_H

#include <stdint.h>

#include "base/buf.h"

/* An HTTP request answered (or abandoned: status 0). route is a static name ("unmatched" when
 * no route matched), method one of the methods HTTP defines (others count as "other"). */
void dapi_metrics_request(const char *route, const char *method, int status, uint64_t bytes,
                          int64_t duration_us);

/* A query creation answered with a slug; reused: it shares a result or a run (reuse hit). */
void dapi_metrics_created(int reused);
/* A run ended: ok or failed, after run_us of work (queued time excluded). */
void dapi_metrics_run(int ok, int64_t run_us);
/* A group-commit round of the creation log: its sync took us. */
void dapi_metrics_log_sync(int64_t us);
/* A checkpoint of the creation log ended: ok after us, or failed. */
void dapi_metrics_checkpoint(int ok, int64_t us);
/* A page answered with rows rows and bytes bytes of rows. */
void dapi_metrics_page(uint64_t rows, uint64_t bytes);
/* A call to the upstream (Nekt): outcome "ok", "error" or "retry" (an attempt to be repeated). */
void dapi_metrics_upstream(const char *outcome);
/* Whatever else is counted by name: name must be a static string that is a valid metric name
 * ending in _total (e.g. "dapi_reuse_misses_total"); at most 16 such names. */
void dapi_metrics_count(const char *name, const char *help, uint64_t n);

/* Rendering: the recorded families, in the exposition format, appended to b. */
void dapi_metrics_render(struct dapi_buf *b);
/* A gauge family's header (HELP and TYPE), then its samples with dapi_metrics_sample. */
void dapi_metrics_gauge(struct dapi_buf *b, const char *name, const char *help);
/* A counter family's header, for counters kept by their owners (pool overruns). */
void dapi_metrics_counter(struct dapi_buf *b, const char *name, const char *help);
/* One sample: labels is NULL or a preformatted label list without braces (e.g.
 * "pool=\"run\""); values are written in full precision. */
void dapi_metrics_sample(struct dapi_buf *b, const char *name, const char *labels, double v);

/* Forgets everything recorded (tests). */
void dapi_metrics_reset(void);

#endif
