/* The Nekt emulator (--emulate-nekt, src/emu/emu.c): the upstream Nekt API described in docs/nekt.md
 * served on top of the local engine and dapi's keys. Its paths, under /api/v1/ and
 * /emu-files/, are a route table that dapi_emu_start registers with the API's router
 * (api/api.h); without --emulate-nekt they are not served (404). */
#ifndef DAPI_EMU_H
#define DAPI_EMU_H

#include <stddef.h>
#include <stdint.h>

struct dapi_app;

/* Starts the emulator (its engine and workers) into app->emu and registers its routes. */
int dapi_emu_start(struct dapi_app *app, char *err, size_t errlen);
/* Answers what waits on the emulator's workers (shutdown, before the HTTP server stops). */
void dapi_emu_quiesce(struct dapi_app *app);
/* Frees the emulator (no-op without one); after the HTTP server has stopped. */
void dapi_emu_stop(struct dapi_app *app);
/* Housekeeping: deletes expired result files and forgotten executions. */
void dapi_emu_tick(struct dapi_app *app, int64_t now_s);

#endif
