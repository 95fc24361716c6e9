/* `dapi health`: asks a server for GET /api/health and prints its status. Exit 0 when it
 * answers {"status":"ok"}, 1 otherwise (unreachable, an error status, another status), 2 on a
 * usage error. One attempt with a short timeout: a container health check retries by itself. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "dapi/client.h"

enum { O_URL, O_TIMEOUT, O_QUIET, O_VERSION, O_HELP, O__COUNT };

static const struct dapi_cli_opt opts[O__COUNT] = {
    [O_URL] = {"url", 0, "URL", "DAPI_URL", "http://localhost:5001", "the dapi server"},
    [O_TIMEOUT] = {"timeout", 0, "SECONDS", NULL, "5", "give up after this long (1-300)"},
    [O_QUIET] = {"quiet", 'q', NULL, NULL, NULL, "print nothing; the exit code tells"},
    [O_VERSION] = {"version", 'V', NULL, NULL, NULL, "print the version and exit"},
    [O_HELP] = {"help", 'h', NULL, NULL, NULL, "this help"},
};

void dapi_cli_health_usage(FILE *out)
{
    fprintf(out, "Usage: dapi health [options]\n\n"
                 "Checks a dapi server (GET /api/health): prints its status and exits 0 if it is\n"
                 "\"ok\", 1 if not or if it cannot be reached, 2 on a usage error.\n\n"
                 "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
}

int dapi_cli_health(int argc, char **argv)
{
    int rc = 1;
    const char *v[O__COUNT];
    long long timeout = 5;
    struct dapi_client *c = NULL;
    struct dapi_client_err err;
    char *status = NULL;
    if(dapi_cli_parse("health", opts, O__COUNT, argc, argv, v, NULL, NULL))
        return DAPI_EXIT_USAGE;
    if(v[O_HELP]) {
        dapi_cli_health_usage(stdout);
        return 0;
    }
    if(v[O_VERSION]) {
        dapi_cli_version(stdout);
        return 0;
    }
    if(v[O_TIMEOUT] && dapi_cli_int(v[O_TIMEOUT], 1, 300, &timeout)) {
        fprintf(stderr, "dapi health: --timeout must be a number of seconds from 1 to 300\n");
        return DAPI_EXIT_USAGE;
    }
    int quiet = v[O_QUIET] != NULL;
    struct dapi_client_config cfg = {
        .url = v[O_URL] ? v[O_URL] : "http://localhost:5001",
        .connect_timeout_ms = (long)timeout * 1000,
        .timeout_ms = (long)timeout * 1000,
        .max_page_bytes = 64 * 1024,
        .max_attempts = 1,
    };
    if(dapi_client_new(&c, &cfg, &err)) {
        fprintf(stderr, "dapi health: %s\n", err.message);
        return DAPI_EXIT_USAGE;
    }
    if(dapi_client_health(c, &status, &err)) {
        if(!quiet) {
            if(err.status)
                fprintf(stderr, "dapi health: %s: HTTP %d: %s\n", cfg.url, err.status,
                        err.message);
            else
                fprintf(stderr, "dapi health: %s: unreachable: %s\n", cfg.url, err.message);
        }
        goto out;
    }
    if(!quiet)
        printf("%s\n", status);
    rc = strcmp(status, "ok") == 0 ? 0 : 1;
out:
    free(status);
    dapi_client_free(c);
    return rc;
}
