#include "base/clock.h"

#include <errno.h>
#include <time.h>

static int64_t ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t dapi_clock_mono_ms(void)
{
    return ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t dapi_clock_mono_us(void)
{
    return ns(CLOCK_MONOTONIC) / 1000;
}

int64_t dapi_clock_wall_s(void)
{
    return ns(CLOCK_REALTIME) / 1000000000;
}

void dapi_clock_sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while(nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

struct timespec dapi_clock_after(int monotonic, int64_t ms)
{
    int64_t t = ns(monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME) + (ms < 0 ? 0 : ms) * 1000000;
    return (struct timespec){(time_t)(t / 1000000000), (long)(t % 1000000000)};
}
