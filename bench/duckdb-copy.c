/* The reference of bench part j: how long DuckDB itself takes to run a query and COPY its
 * result to a JSON file (newline-delimited, DuckDB's default for .json), in one in-memory
 * database with DuckDB's default threads — what `dapi query -f ndjson` is compared with.
 * DuckDB is reached through the engine module (dapi_engine_run_timed), the only code that
 * includes duckdb.h.
 *
 * Usage: duckdb-copy SETUP_SQL QUERY OUT_FILE  -> prints the milliseconds of the COPY alone
 * (SETUP_SQL, e.g. the views of the lake, is run first and not timed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

int main(int argc, char **argv)
{
    if(argc != 4) {
        fprintf(stderr, "usage: duckdb-copy SETUP_SQL QUERY OUT_FILE\n");
        return 2;
    }
    size_t n = strlen(argv[2]) + strlen(argv[3]) + 64;
    char *copy = malloc(n);
    if(!copy)
        return 1;
    /* quotes in the file name are not expected: the bench names it */
    snprintf(copy, n, "COPY (%s) TO '%s' (FORMAT json)", argv[2], argv[3]);
    const char *sql[] = {argv[1], copy};
    int64_t us = 0;
    char *msg = NULL;
    enum dapi_err result = dapi_engine_run_timed(sql, 2, &us, &msg);
    if(result)
        fprintf(stderr, "duckdb-copy: %s\n", msg ? msg : "DuckDB failed");
    else
        printf("%.0f\n", (double)us / 1000.0);
    free(msg);
    free(copy);
    return result ? 1 : 0;
}
