/* Tells the service manager how `dapi serve` is doing (systemd's Type=notify, see
 * docs/operations.md): READY=1 once the HTTP server listens, STOPPING=1 when the graceful
 * stop begins. notify.c is the only file that includes <systemd/sd-daemon.h>. Without
 * $NOTIFY_SOCKET in the environment (not started by systemd as Type=notify) every call is a
 * no-op. Call from the main thread. */
#ifndef DAPI_NOTIFY_H
#define DAPI_NOTIFY_H

#include <stddef.h>

/* READY=1, with a STATUS= line saying where the server listens. */
void dapi_notify_ready(const char *host, int port);
/* STOPPING=1. */
void dapi_notify_stopping(void);
/* While the start reads back stored queries (n so far): STATUS= says so, and
 * EXTEND_TIMEOUT_USEC= gives the start 30 s more from now, so that a start that keeps making
 * progress is never killed by the unit's start timeout (90 s by default), however many
 * queries it has to read, and one that stops making progress still is. */
void dapi_notify_loading(size_t n);

#endif
