/* The reference of bench part i: how long DuckDB itself takes to run a query and COPY its
 * result to a JSON file (newline-delimited, DuckDB's default for .json), in one in-memory
 * database with DuckDB's default threads — what `dapi query -f ndjson` is compared with.
 *
 * Usage: duckdb-copy SETUP_SQL QUERY OUT_FILE  -> prints the milliseconds of the COPY alone
 * (SETUP_SQL, e.g. the views of the lake, is run first and not timed). */
#include <duckdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int run(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    if(duckdb_query(con, sql, &res) == DuckDBError) {
        fprintf(stderr, "duckdb-copy: %s\n", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return -1;
    }
    duckdb_destroy_result(&res);
    return 0;
}

int main(int argc, char **argv)
{
    if(argc != 4) {
        fprintf(stderr, "usage: duckdb-copy SETUP_SQL QUERY OUT_FILE\n");
        return 2;
    }
    duckdb_database db;
    duckdb_connection con;
    if(duckdb_open(NULL, &db) == DuckDBError || duckdb_connect(db, &con) == DuckDBError) {
        fprintf(stderr, "duckdb-copy: cannot open DuckDB\n");
        return 1;
    }
    size_t n = strlen(argv[2]) + strlen(argv[3]) + 64;
    char *copy = malloc(n);
    if(!copy)
        return 1;
    /* quotes in the file name are not expected: the bench names it */
    snprintf(copy, n, "COPY (%s) TO '%s' (FORMAT json)", argv[2], argv[3]);
    if(run(con, argv[1]))
        return 1;
    double t0 = now_ms();
    if(run(con, copy))
        return 1;
    printf("%.0f\n", now_ms() - t0);
    free(copy);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return 0;
}
