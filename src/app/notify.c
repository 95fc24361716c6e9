#include "app/notify.h"

#include <stdio.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "base/log.h"

/* sd_notify returns 0 when $NOTIFY_SOCKET is unset, < 0 when sending failed: systemd then
 * never learns the state (a start would time out), which deserves a line in the log. */
static void notify(const char *state)
{
    int r = sd_notify(0, state);
    if(r < 0)
        dapi_warn("cannot notify the service manager (%.*s): %s", (int)strcspn(state, "\n"), state,
                  strerror(-r));
}

void dapi_notify_ready(const char *host, int port)
{
    char state[512];
    snprintf(state, sizeof state, "READY=1\nSTATUS=listening on http://%s:%d", host, port);
    notify(state);
}

void dapi_notify_loading(size_t n)
{
    char state[128];
    snprintf(state, sizeof state,
             "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=loading stored queries: %zu so far", n);
    notify(state);
}

void dapi_notify_stopping(void)
{
    notify("STOPPING=1\nSTATUS=stopping");
}
