/* Schema discovery: the lake's tables as the scan (lake.c) sees them, held to a scope exactly
 * as queries are, and one table described: its columns as DuckDB binds them, its row count
 * (the Parquet footers' sum, or an estimate from the start of a text file), files, bytes and
 * modification time. duckdb.h is included only under src/engine/ (here through
 * engine_int.h). */
#include "engine/engine_int.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "engine/sandbox.h"

static const char *kind_name(enum table_kind k)
{
    switch(k) {
    case TK_PARQUET:
    case TK_PARQUET_DIR: return "parquet";
    case TK_CSV: return "csv";
    case TK_TSV: return "tsv";
    case TK_JSON: return "json";
    case TK_NDJSON: return "ndjson";
    }
    return "unknown";
}

/* May a holder of scope read v? As the sandbox decides (engine.c, lake_table_problem): its
 * layer in scope and its files really in a layer of the scope. Views DuckDB refused (a
 * corrupt file) are no table. */
static int view_visible(const struct view *v, const struct dapi_scope *scope)
{
    if(v->failed || !v->layer)
        return 0;
    if(!scope || scope->all)
        return 1;
    return dapi_scope_allows(scope, v->layer) && v->real && dapi_scope_allows(scope, v->real);
}

static enum dapi_err table_from_view(struct dapi_lake_table *t, const struct view *v)
{
    memset(t, 0, sizeof *t);
    t->layer = strdup(v->layer);
    t->name = strdup(v->table);
    t->kind = kind_name(v->kind);
    t->folder = v->kind == TK_PARQUET_DIR;
    t->files = t->folder ? v->nfiles : 1;
    t->bytes = v->size > 0 ? (uint64_t)v->size : 0;
    t->mtime_s = (int64_t)v->mtime.tv_sec;
    return t->layer && t->name ? DAPI_OK : DAPI_ERR_NOMEM;
}

static int cmp_table(const void *a, const void *b)
{
    const struct dapi_lake_table *x = a, *y = b;
    int c = strcmp(x->layer, y->layer);
    return c ? c : strcmp(x->name, y->name);
}

void dapi_lake_tables_free(struct dapi_lake_table *t, size_t n)
{
    for(size_t i = 0; t && i < n; i++) {
        free(t[i].layer);
        free(t[i].name);
    }
    free(t);
}

enum dapi_err dapi_engine_lake_tables(struct dapi_engine *e, const struct dapi_scope *scope,
                                      struct dapi_lake_table **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    enum dapi_err result = dapi_engine_sync_lake(e);
    if(result)
        return result;
    pthread_mutex_lock(&e->lake_lock);
    struct dapi_lake_table *t = e->views.n ? calloc(e->views.n, sizeof *t) : NULL;
    size_t k = 0;
    if(e->views.n && !t)
        result = DAPI_ERR_NOMEM;
    for(size_t i = 0; !result && i < e->views.n; i++)
        if(view_visible(&e->views.v[i], scope))
            result = table_from_view(&t[k++], &e->views.v[i]);
    pthread_mutex_unlock(&e->lake_lock);
    if(result) {
        dapi_lake_tables_free(t, k);
        return result;
    }
    if(k) {
        qsort(t, k, sizeof *t, cmp_table);
    } else {
        free(t);
        t = NULL;
    }
    *out = t;
    *n = k;
    return DAPI_OK;
}

void dapi_lake_desc_free(struct dapi_lake_desc *d)
{
    free(d->t.layer);
    free(d->t.name);
    for(size_t i = 0; d->cols && i < d->ncols; i++) {
        free(d->cols[i].name);
        free(d->cols[i].type);
    }
    free(d->cols);
    memset(d, 0, sizeof *d);
    d->rows = -1;
}

/* ---- the JSON type of a DuckDB type name ----------------------------------------------- */

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

const char *dapi_engine_json_type(const char *type)
{
    static const char *const ints[] = {"TINYINT",  "SMALLINT",  "INTEGER",  "BIGINT",  "HUGEINT",
                                       "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"};
    size_t n = strlen(type);
    if(n && type[n - 1] == ']') /* LIST (T[]) and ARRAY (T[3]), whatever T */
        return "array";
    if(starts(type, "STRUCT("))
        return "object";
    if(starts(type, "MAP("))
        return starts(type, "MAP(VARCHAR,") ? "object" : "array";
    if(starts(type, "UNION("))
        return "any";
    if(starts(type, "DECIMAL") || strcmp(type, "FLOAT") == 0 || strcmp(type, "DOUBLE") == 0)
        return "number";
    for(size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if(strcmp(type, ints[i]) == 0)
            return "integer";
    if(strcmp(type, "BOOLEAN") == 0)
        return "boolean";
    if(strcmp(type, "NULL") == 0 || strcmp(type, "\"NULL\"") == 0)
        return "null";
    return "string"; /* VARCHAR, dates and times, INTERVAL, UUID, ENUM, BLOB, BIT, others */
}

/* ---- row estimates ------------------------------------------------------------------------ */

/* Records ending in text[0..n): *count of them and *end, the offset just past the last. */
static void count_csv(const char *s, size_t n, int64_t *count, size_t *end)
{
    int quoted = 0;
    *count = 0;
    *end = 0;
    for(size_t i = 0; i < n; i++) {
        if(s[i] == '"')
            quoted = !quoted; /* "" inside a quoted field toggles twice */
        else if(s[i] == '\n' && !quoted) {
            (*count)++;
            *end = i + 1;
        }
    }
}

/* Top-level JSON values (or the elements of one top-level array) ending in s[0..n). */
static void count_json(const char *s, size_t n, int64_t *count, size_t *start, size_t *end,
                       int *array, int *open_value)
{
    size_t i = 0;
    int depth = 0, in_str = 0, esc = 0;
    *count = 0;
    *end = 0;
    *open_value = 0;
    while(i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    *array = i < n && s[i] == '[';
    *start = *array ? i + 1 : i; /* where the first record begins */
    int base = *array ? 1 : 0;   /* the depth at which a record ends */
    for(; i < n; i++) {
        char c = s[i];
        if(!in_str && *end == i && *count && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
            (*end)++; /* the separator after a record is part of it */
            continue;
        }
        if(in_str) {
            if(esc)
                esc = 0;
            else if(c == '\\')
                esc = 1;
            else if(c == '"')
                in_str = 0;
            continue;
        }
        if(c == '"') {
            in_str = 1;
            if(depth == base)
                *open_value = 1;
        } else if(c == '{' || c == '[') {
            depth++;
            if(depth == base + 1)
                *open_value = 1;
        } else if(c == '}' || c == ']') {
            depth--;
            if(depth == base && !*array) {
                (*count)++;
                *end = i + 1;
                *open_value = 0;
            }
        } else if(c == ',' && depth == base && *array) {
            (*count)++;
            *end = i + 1;
            *open_value = 0;
        } else if(c != ' ' && c != '\t' && c != '\r' && c != '\n' && depth == base &&
                  !(*array && depth == 1 && c == ']')) {
            *open_value = 1; /* a scalar element */
        }
    }
}

int64_t dapi_engine_estimate_rows(const char *kind, const char *sample, size_t n, uint64_t total)
{
    int64_t count = 0;
    size_t end = 0;
    int whole = (uint64_t)n >= total, csv = strcmp(kind, "csv") == 0 || strcmp(kind, "tsv") == 0;
    if(csv) {
        count_csv(sample, n, &count, &end);
        if(whole && end < n) /* a last line without its newline */
            count++, end = n;
        if(count == 0)
            return whole ? 0 : -1;
        if(!whole)
            count = (int64_t)llround((double)count * (double)total / (double)end);
        return count > 1 ? count - 1 : 0; /* the header */
    }
    int array = 0, open_value = 0;
    size_t start = 0;
    count_json(sample, n, &count, &start, &end, &array, &open_value);
    if(whole) /* the last element of an array has no comma after it */
        return count + (array && open_value);
    if(count == 0 || end <= start)
        return -1;
    return (int64_t)llround((double)count * (double)(total - start) / (double)(end - start));
}

/* ---- describing a table ------------------------------------------------------------------- */

static int conn_timed_out(struct dapi_econn *c)
{
    pthread_mutex_lock(&c->e->conns_lock);
    int t = c->timed_out;
    pthread_mutex_unlock(&c->e->conns_lock);
    return t;
}

/* m with every occurrence of the lake's path (as configured, or its real path) written
 * <data-dir>: the answer names files by their place in the lake, not on the server. */
static char *lake_relative(const struct dapi_engine *e, const char *m)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 64 * 1024);
    const char *dirs[] = {e->data_real, e->data_dir};
    while(*m) {
        size_t skip = 0;
        for(size_t i = 0; i < 2 && !skip; i++)
            if(dirs[i] && dirs[i][0] && strncmp(m, dirs[i], strlen(dirs[i])) == 0)
                skip = strlen(dirs[i]);
        if(skip) {
            dapi_buf_adds(&b, "<data-dir>");
            m += skip;
        } else {
            dapi_buf_addc(&b, *m++);
        }
    }
    return dapi_buf_take(&b, NULL);
}

/* A DuckDB failure of dapi's own SQL: the deadline's interrupt, or the engine's trouble. */
static enum dapi_err query_failed(struct dapi_econn *c, duckdb_result *res, const char *what,
                                  char **msg)
{
    if(conn_timed_out(c))
        return DAPI_ERR_TIMEOUT;
    const char *m = duckdb_result_error(res);
    dapi_warn("describe: %s: %s", what, m ? m : "failed");
    *msg = lake_relative(c->e, m ? m : "the engine could not read the table");
    return *msg ? DAPI_ERR_SQL : DAPI_ERR_NOMEM;
}

static enum dapi_err add_column(struct dapi_lake_desc *d, const duckdb_string_t *name,
                                const duckdb_string_t *type)
{
    struct dapi_lake_column *nc = realloc(d->cols, (d->ncols + 1) * sizeof *nc);
    if(!nc)
        return DAPI_ERR_NOMEM;
    d->cols = nc;
    struct dapi_lake_column *col = &nc[d->ncols];
    col->name = strndup(duckdb_string_t_data((duckdb_string_t *)name),
                        duckdb_string_t_length(*name));
    col->type = strndup(duckdb_string_t_data((duckdb_string_t *)type),
                        duckdb_string_t_length(*type));
    if(!col->name || !col->type) {
        free(col->name);
        free(col->type);
        return DAPI_ERR_NOMEM;
    }
    col->json_type = dapi_engine_json_type(col->type);
    d->ncols++;
    return DAPI_OK;
}

/* The columns of the table's view, in order: name and DuckDB type. */
static enum dapi_err describe_columns(struct dapi_econn *c, struct dapi_lake_desc *d, char **msg)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    /* The view's own columns, bound when the lake sync (re)created it for the file as it is
     * now: no CSV/JSON sniffing again (a DESCRIBE of the view would re-read the file). */
    dapi_buf_adds(&b, "SELECT column_name, data_type FROM duckdb_columns() WHERE "
                      "database_name = current_database() AND schema_name = ");
    dapi_engine_sql_literal(&b, d->t.layer);
    dapi_buf_adds(&b, " AND table_name = ");
    dapi_engine_sql_literal(&b, d->t.name);
    dapi_buf_adds(&b, " ORDER BY column_index");
    if(!b.data)
        return DAPI_ERR_NOMEM;
    duckdb_result res;
    enum dapi_err result = DAPI_OK;
    if(duckdb_query(c->con, b.data, &res) == DuckDBError) {
        result = query_failed(c, &res, "columns", msg);
        duckdb_destroy_result(&res);
        dapi_buf_free(&b);
        return result;
    }
    dapi_buf_free(&b);
    if(duckdb_column_count(&res) < 2 || duckdb_column_type(&res, 0) != DUCKDB_TYPE_VARCHAR ||
       duckdb_column_type(&res, 1) != DUCKDB_TYPE_VARCHAR) {
        duckdb_destroy_result(&res);
        return DAPI_ERR_INTERNAL;
    }
    duckdb_data_chunk chunk;
    while(!result && (chunk = duckdb_fetch_chunk(res))) {
        idx_t rows = duckdb_data_chunk_get_size(chunk);
        duckdb_vector vn = duckdb_data_chunk_get_vector(chunk, 0),
                      vt = duckdb_data_chunk_get_vector(chunk, 1);
        duckdb_string_t *names = duckdb_vector_get_data(vn), *types = duckdb_vector_get_data(vt);
        uint64_t *okn = duckdb_vector_get_validity(vn), *okt = duckdb_vector_get_validity(vt);
        for(idx_t i = 0; !result && i < rows; i++)
            if(duckdb_validity_row_is_valid(okn, i) && duckdb_validity_row_is_valid(okt, i))
                result = add_column(d, &names[i], &types[i]);
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    return result;
}

/* The exact row count of Parquet files: the sum of their footers' num_rows (no data read). */
static enum dapi_err parquet_rows(struct dapi_econn *c, char **files, size_t n,
                                  struct dapi_lake_desc *d, char **msg)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 64u << 20);
    dapi_buf_adds(&b, "SELECT CAST(coalesce(sum(num_rows), 0) AS BIGINT) FROM "
                      "parquet_file_metadata([");
    for(size_t i = 0; i < n; i++) {
        if(i)
            dapi_buf_adds(&b, ", ");
        add_path_literal(&b, files[i]);
    }
    dapi_buf_adds(&b, "])");
    if(!b.data)
        return DAPI_ERR_NOMEM;
    duckdb_result res;
    enum dapi_err result = DAPI_OK;
    if(duckdb_query(c->con, b.data, &res) == DuckDBError) {
        result = query_failed(c, &res, "parquet row count", msg);
    } else {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
        if(chunk && duckdb_data_chunk_get_size(chunk) == 1) {
            duckdb_vector v = duckdb_data_chunk_get_vector(chunk, 0);
            d->rows = ((int64_t *)duckdb_vector_get_data(v))[0];
            d->rows_exact = 1;
        }
        if(chunk)
            duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    dapi_buf_free(&b);
    return result;
}

/* An estimate from the first DAPI_LAKE_SAMPLE_BYTES of a text file (-1 if unreadable). */
static int64_t text_rows(const char *path, const char *kind)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* NONBLOCK: never wait on a FIFO */
    if(fd < 0)
        return -1;
    struct stat st;
    char *buf = NULL;
    int64_t rows = -1;
    if(fstat(fd, &st) || !S_ISREG(st.st_mode) || !(buf = malloc(DAPI_LAKE_SAMPLE_BYTES)))
        goto out;
    size_t n = 0;
    while(n < DAPI_LAKE_SAMPLE_BYTES) {
        ssize_t got = read(fd, buf + n, DAPI_LAKE_SAMPLE_BYTES - n);
        if(got <= 0)
            break;
        n += (size_t)got;
    }
    /* a file that shrank under us reads as its whole self */
    rows = dapi_engine_estimate_rows(
        kind, buf, n, n < DAPI_LAKE_SAMPLE_BYTES ? (uint64_t)n : (uint64_t)st.st_size);
out:
    free(buf);
    close(fd);
    return rows;
}

/* Finds layer.table among the views; fills d->t and copies the files to read (owned). */
static enum dapi_err find_table(struct dapi_engine *e, const char *layer, const char *table,
                                const struct dapi_scope *scope, struct dapi_lake_desc *d,
                                char ***files, size_t *nfiles, char **msg)
{
    enum dapi_err result = DAPI_OK;
    const struct view *v = NULL;
    int layer_found = 0;
    pthread_mutex_lock(&e->lake_lock);
    for(size_t i = 0; i < e->views.n && !v; i++) {
        const struct view *w = &e->views.v[i];
        if(w->failed || !w->layer || strcmp(w->layer, layer) != 0)
            continue;
        layer_found = 1;
        if(strcmp(w->table, table) == 0)
            v = w;
    }
    if(!v) {
        d->missing = layer_found ? 2 : 1;
        result = DAPI_ERR_NOT_FOUND;
    } else if(scope && !scope->all && (!v->real || !dapi_scope_allows(scope, v->real))) {
        /* its files are another layer's (a link): refused naming it, as a query would be */
        *msg = dapi_sandbox_forbidden_msg(v->real ? v->real : "(files of several layers)");
        result = DAPI_ERR_FORBIDDEN;
    } else if(!(result = table_from_view(&d->t, v))) {
        size_t n = v->kind == TK_PARQUET_DIR ? v->nfiles : 1;
        char **f = calloc(n, sizeof *f);
        for(size_t i = 0; f && i < n; i++)
            if(!(f[i] = strdup(v->kind == TK_PARQUET_DIR ? v->files[i] : v->path))) {
                free_strings(f, i);
                f = NULL;
            }
        if(!f)
            result = DAPI_ERR_NOMEM;
        *files = f;
        *nfiles = f ? n : 0;
    }
    pthread_mutex_unlock(&e->lake_lock);
    return result;
}

enum dapi_err dapi_engine_describe(struct dapi_econn *c, const char *layer, const char *table,
                                   const struct dapi_scope *scope, int64_t deadline_ms,
                                   struct dapi_lake_desc *d, char **msg)
{
    enum dapi_err result;
    char **files = NULL;
    size_t nfiles = 0;
    memset(d, 0, sizeof *d);
    d->rows = -1;
    *msg = NULL;
    if(scope && !scope->all && !dapi_scope_allows(scope, layer)) {
        /* before anything is looked up: a scoped key cannot probe for other layers */
        *msg = dapi_sandbox_forbidden_msg(layer);
        return *msg ? DAPI_ERR_FORBIDDEN : DAPI_ERR_NOMEM;
    }
    if(set_deadline(c, 1, deadline_ms))
        return DAPI_ERR_BUSY;
    if((result = dapi_engine_sync_lake(c->e)) ||
       (result = find_table(c->e, layer, table, scope, d, &files, &nfiles, msg)) ||
       (result = describe_columns(c, d, msg)))
        goto out;
    if(strcmp(d->t.kind, "parquet") == 0)
        result = parquet_rows(c, files, nfiles, d, msg);
    else
        d->rows = text_rows(files[0], d->t.kind);
out:
    set_deadline(c, 0, 0);
    free_strings(files, nfiles);
    if(result == DAPI_ERR_FORBIDDEN && !*msg)
        result = DAPI_ERR_NOMEM;
    return result;
}
