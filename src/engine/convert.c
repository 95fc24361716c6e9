/* Rows as NDJSON into a Parquet file with the result's own column types (the export's
 * parquet format, src/api/export.c). A DuckDB of its own, opened for the conversion: it may
 * read and write only the export's temporary directory and runs no client SQL, so the
 * serving engine's lock-down (lake only) stays as it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "engine/engine_int.h"

/* A nested type is converted from the JSON value itself; a scalar from its text (a string
 * unquoted, a number as written), which keeps every digit of a DECIMAL or HUGEINT. */
static int nested(const char *type)
{
    return strncmp(type, "STRUCT(", 7) == 0 || strncmp(type, "MAP(", 4) == 0 ||
           strncmp(type, "UNION(", 6) == 0 || strchr(type, '[') != NULL;
}

/* One statement; on failure *msg is DuckDB's explanation (owned). */
static enum dapi_err run(duckdb_connection con, const char *sql, char **msg)
{
    char err[2048];
    if(!exec(con, sql, err, sizeof err))
        return DAPI_OK;
    *msg = strdup(err);
    return engine_classify_oom(DAPI_ERR_SQL, msg, NULL);
}

enum dapi_err dapi_engine_ndjson_to_parquet(const char *dir, const char *in, const char *out,
                                            const char *const *names, const char *const *types,
                                            size_t n, uint64_t longest, const char *memory_limit,
                                            int64_t max_spill_bytes, char **msg)
{
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    duckdb_config cfg = NULL;
    struct dapi_buf b;
    enum dapi_err result = DAPI_ERR_INTERNAL;
    char *open_err = NULL;
    struct engine_work work; /* its memory is the process's too */
    *msg = NULL;
    engine_work_begin(&work);
    dapi_buf_init(&b, 16u << 20);
    if(duckdb_create_config(&cfg) == DuckDBError)
        goto out;
    duckdb_set_config(cfg, "autoinstall_known_extensions", "false");
    duckdb_set_config(cfg, "autoload_known_extensions", "false");
    duckdb_set_config(cfg, "threads", "1");
    if(memory_limit && *memory_limit)
        duckdb_set_config(cfg, "memory_limit", memory_limit);
    if(duckdb_open_ext(NULL, &db, cfg, &open_err) == DuckDBError ||
       duckdb_connect(db, &con) == DuckDBError) {
        *msg = strdup(open_err ? open_err : "cannot open DuckDB");
        goto out;
    }
    dapi_buf_adds(&b, "SET temp_directory = ");
    dapi_engine_sql_literal(&b, dir);
    dapi_buf_adds(&b, "; SET allowed_directories = [");
    dapi_engine_sql_literal(&b, dir);
    dapi_buf_adds(&b, "]; ");
    if(max_spill_bytes > 0)
        dapi_buf_addf(&b, "SET max_temp_directory_size = '%lldB'; ", (long long)max_spill_bytes);
    dapi_buf_adds(&b, "SET enable_external_access = false; SET lock_configuration = true");
    if(!b.data) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    if((result = run(con, b.data, msg)))
        goto out;
    dapi_buf_reset(&b);
    dapi_buf_adds(&b, "COPY (SELECT ");
    for(size_t i = 0; i < n; i++) {
        dapi_buf_adds(&b, i ? ", CAST(" : "CAST(");
        if(nested(types[i])) {
            add_ident(&b, names[i]);
        } else {
            dapi_buf_adds(&b, "json_extract_string(");
            add_ident(&b, names[i]);
            dapi_buf_adds(&b, ", '$')");
        }
        /* Parquet has no 128-bit integer: DuckDB would write a DOUBLE (digits lost); a
         * DECIMAL(38,0) keeps them all (a value of 39 digits fails the export instead) */
        int wide = strcmp(types[i], "HUGEINT") == 0 || strcmp(types[i], "UHUGEINT") == 0;
        dapi_buf_addf(&b, " AS %s) AS ", wide ? "DECIMAL(38,0)" : types[i]);
        add_ident(&b, names[i]);
    }
    if(!n)
        dapi_buf_adds(&b, "NULL AS \"?\" LIMIT 0");
    dapi_buf_adds(&b, " FROM read_ndjson(");
    dapi_engine_sql_literal(&b, in);
    /* The reader's buffers are twice the largest object it allows: a fixed 1 GiB failed every
     * export under a --memory-limit below 2 GB. The longest row is known: room for it (and
     * at least DuckDB's default, 16 MiB). */
    uint64_t most = longest + 64 > (16u << 20) ? longest + 64 : (16u << 20);
    dapi_buf_addf(&b, ", maximum_object_size = %llu, columns = {", (unsigned long long)most);
    for(size_t i = 0; i < n; i++) {
        if(i)
            dapi_buf_adds(&b, ", ");
        dapi_engine_sql_literal(&b, names[i]);
        dapi_buf_adds(&b, ": 'JSON'");
    }
    if(!n)
        dapi_buf_adds(&b, "'c': 'JSON'");
    dapi_buf_adds(&b, "})) TO ");
    dapi_engine_sql_literal(&b, out);
    dapi_buf_adds(&b, " (FORMAT parquet)");
    if(!b.data) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    result = run(con, b.data, msg);
out:
    dapi_buf_free(&b);
    if(con)
        duckdb_disconnect(&con);
    if(db)
        duckdb_close(&db);
    if(cfg)
        duckdb_destroy_config(&cfg);
    if(open_err)
        duckdb_free(open_err);
    engine_work_end(&work);
    return result;
}

enum dapi_err dapi_engine_run_timed(const char *const *sql, size_t n, int64_t *last_us, char **msg)
{
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    enum dapi_err result = DAPI_OK;
    *msg = NULL;
    *last_us = 0;
    if(duckdb_open(NULL, &db) == DuckDBError || duckdb_connect(db, &con) == DuckDBError) {
        *msg = strdup("cannot open DuckDB");
        result = DAPI_ERR_INTERNAL;
    }
    for(size_t i = 0; i < n && !result; i++) {
        int64_t t0 = dapi_clock_mono_us();
        result = run(con, sql[i], msg);
        *last_us = dapi_clock_mono_us() - t0;
    }
    if(con)
        duckdb_disconnect(&con);
    if(db)
        duckdb_close(&db);
    return result;
}
