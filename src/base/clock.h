/* The only place that reads the clock. Code that decides by time (retention, deadlines,
 * retries) takes `now` as a parameter so tests can move time by assignment. */
#ifndef DAPI_CLOCK_H
#define DAPI_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds, for deadlines and durations. */
int64_t dapi_clock_mono_ms(void);
/* Monotonic microseconds, for access-log durations. */
int64_t dapi_clock_mono_us(void);
/* Wall-clock seconds since the epoch, for retention that must survive a restart. */
int64_t dapi_clock_wall_s(void);
/* The time ms milliseconds from now, on CLOCK_MONOTONIC if monotonic else CLOCK_REALTIME (the
 * clock the condition variable waits on): the deadline of a pthread_cond_timedwait. */
struct timespec dapi_clock_after(int monotonic, int64_t ms);
/* Sleeps for ms milliseconds (restarting on EINTR). */
void dapi_clock_sleep_ms(int64_t ms);

#endif
