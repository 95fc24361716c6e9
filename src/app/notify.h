/* Tells the service manager how `dapi serve` is doing (systemd's Type=notify, see
 * docs/operations.md): READY=1 once the HTTP server listens, STOPPING=1 when the graceful
 * stop begins. notify.c is the only file that includes <systemd/sd-daemon.h>. Without
 * $NOTIFY_SOCKET in the environment (not started by systemd as Type=notify) every call is a
 * no-op. Call from the main thread. */
#ifndef DAPI_NOTIFY_H
#define DAPI_NOTIFY_H

/* READY=1, with a STATUS= line saying where the server listens. */
void dapi_notify_ready(const char *host, int port);
/* STOPPING=1. */
void dapi_notify_stopping(void);

#endif
