/* The embedded DuckDB engine, its core: open/close/connect, the watchdog, statements and the
 * sandbox glue, run/export and the column templates. The lake's views are in lake.c, the
 * sample lake in sample.c; the three share engine_int.h.
 * Rule: duckdb.h is included only under src/engine/ (engine_int.h, which engine.c, lake.c
 * and sample.c include); every other module goes through engine.h.
 *
 * Security model: one in-memory database; user SQL may only read. Enforced in layers:
 *  - extension auto-install/auto-load off, no community or unsigned extensions;
 *  - enable_external_access = false with allowed_directories = [data dir], so table
 *    functions (read_csv, read_text, glob, …) cannot reach anything outside the lake;
 *  - lock_configuration = true once set up, so no statement can loosen the above;
 *  - each text must be exactly one statement of type SELECT (SELECT, WITH, VALUES, FROM-first).
 * The views over the lake are created by a private catalog connection (lake.c). */
#include "engine/engine_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <limits.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/sandbox.h"

_Static_assert(sizeof(duckdb_string_t) == sizeof(struct dapi_dstr), "string layout");
_Static_assert(sizeof(duckdb_list_entry) == sizeof(struct dapi_list_entry), "list layout");
_Static_assert(sizeof(duckdb_hugeint) == sizeof(struct dapi_i128), "hugeint layout");
_Static_assert(sizeof(duckdb_interval) == sizeof(struct dapi_interval), "interval layout");

#define REQUIRED_VERSION "v1.4.4"
#define MAX_TYPE_DEPTH 64

static void *watchdog_run(void *arg)
{
    struct dapi_engine *e = arg;
    pthread_mutex_lock(&e->conns_lock);
    while(!e->stopping) {
        int64_t now = dapi_clock_mono_ms();
        for(struct dapi_econn *c = e->conns; c; c = c->next)
            if(c->active && !c->timed_out &&
               (e->aborting || (c->deadline_ms && now > c->deadline_ms) ||
                (c->cancel && atomic_load(c->cancel)))) {
                c->timed_out = 1;
                c->interrupted_ms = now;
                duckdb_interrupt(c->con);
            }
        struct timespec ts = dapi_clock_after(0, 50);
        pthread_cond_timedwait(&e->stop_cv, &e->conns_lock, &ts);
    }
    pthread_mutex_unlock(&e->conns_lock);
    return NULL;
}

/* Marks c as driving a query until deadline_ms (0: none) — or as idle with active = 0.
 * Returns -1 if the engine is aborting (the query must not start). */
int set_deadline(struct dapi_econn *c, int active, int64_t deadline_ms)
{
    pthread_mutex_lock(&c->e->conns_lock);
    int aborting = c->e->aborting, was = c->active;
    c->active = active && !aborting;
    c->deadline_ms = deadline_ms;
    c->timed_out = 0;
    int is = c->active;
    pthread_mutex_unlock(&c->e->conns_lock);
    if(is && !was && !c->light)
        engine_work_begin(&c->work);
    else if(was && !is && !c->light)
        engine_work_end(&c->work);
    return active && aborting ? -1 : 0;
}

void dapi_econn_set_cancel(struct dapi_econn *c, const atomic_int *flag)
{
    pthread_mutex_lock(&c->e->conns_lock);
    c->cancel = flag;
    pthread_mutex_unlock(&c->e->conns_lock);
}

void dapi_engine_abort(struct dapi_engine *e)
{
    pthread_mutex_lock(&e->conns_lock);
    e->aborting = 1;
    for(struct dapi_econn *c = e->conns; c; c = c->next)
        if(c->active && !c->timed_out) {
            c->timed_out = 1;
            c->interrupted_ms = dapi_clock_mono_ms();
            duckdb_interrupt(c->con);
        }
    pthread_mutex_unlock(&e->conns_lock);
}

void dapi_econn_set_light(struct dapi_econn *c)
{
    c->light = 1;
}

int dapi_econn_oom_shared(const struct dapi_econn *c, uint64_t *mark)
{
    if(c->oom_shared)
        *mark = c->work.mark;
    return c->oom_shared;
}

int64_t dapi_econn_overrun_ms(struct dapi_econn *c)
{
    pthread_mutex_lock(&c->e->conns_lock);
    int64_t over = c->active && c->timed_out && !c->e->aborting
                       ? dapi_clock_mono_ms() - c->interrupted_ms
                       : 0;
    pthread_mutex_unlock(&c->e->conns_lock);
    return over > 0 ? over : 0;
}

static int aborting(struct dapi_engine *e)
{
    pthread_mutex_lock(&e->conns_lock);
    int a = e->aborting;
    pthread_mutex_unlock(&e->conns_lock);
    return a;
}

static int timed_out(struct dapi_econn *c)
{
    pthread_mutex_lock(&c->e->conns_lock);
    int t = c->timed_out;
    pthread_mutex_unlock(&c->e->conns_lock);
    return t;
}

const char *dapi_engine_version(void)
{
    return duckdb_library_version();
}

/* For a scoped query: removes DuckDB's "Did you mean …?" lines from its message. The binder
 * suggests names from the whole catalog ("Table with name e does not exist! Did you mean
 * "finance.e"?"), which would tell a scoped key the tables of layers outside its scope. */
static void scrub_suggestions(char *msg, const struct dapi_scope *scope)
{
    static const char hint[] = "\nDid you mean ";
    if(!msg || !scope || scope->all)
        return;
    for(char *at; (at = strstr(msg, hint));) {
        char *end = strchr(at + 1, '\n');
        memmove(at, end ? end : at + strlen(at), strlen(end ? end : at + strlen(at)) + 1);
    }
}

/* Adds the error's line and column to an engine message about sql, when DuckDB said where. */
static void locate(char **msg, const char *sql)
{
    char *located = *msg ? dapi_engine_locate_error(*msg, sql) : NULL;
    if(located) {
        free(*msg);
        *msg = located;
    }
}

enum dapi_err dapi_engine_sql_literal(struct dapi_buf *b, const char *s)
{
    enum dapi_err result = dapi_buf_addc(b, '\'');
    for(const char *p = s; !result && *p; p++)
        result = *p == '\'' ? dapi_buf_add(b, "''", 2) : dapi_buf_addc(b, *p);
    return result ? result : dapi_buf_addc(b, '\'');
}

/* Appends s as a quoted identifier ("…" with " doubled). */
enum dapi_err add_ident(struct dapi_buf *b, const char *s)
{
    enum dapi_err result = dapi_buf_addc(b, '"');
    for(const char *p = s; !result && *p; p++)
        result = *p == '"' ? dapi_buf_add(b, "\"\"", 2) : dapi_buf_addc(b, *p);
    return result ? result : dapi_buf_addc(b, '"');
}

enum dapi_err exec(duckdb_connection con, const char *sql, char *err, size_t errlen)
{
    duckdb_result res;
    if(duckdb_query(con, sql, &res) == DuckDBError) {
        if(err)
            snprintf(err, errlen, "%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DAPI_ERR_INTERNAL;
    }
    duckdb_destroy_result(&res);
    return DAPI_OK;
}


/* Appends the first VARCHAR column of a result to *list (owned strings). */
enum dapi_err collect_strings(duckdb_result *res, char ***list, size_t *n)
{
    for(;;) {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(*res);
        if(!chunk)
            return duckdb_result_error(res) ? DAPI_ERR_SQL : DAPI_OK;
        idx_t rows = duckdb_data_chunk_get_size(chunk);
        duckdb_vector v = duckdb_data_chunk_get_vector(chunk, 0);
        duckdb_string_t *d = duckdb_vector_get_data(v);
        uint64_t *valid = duckdb_vector_get_validity(v);
        char **nl = realloc(*list, (*n + rows + 1) * sizeof *nl);
        if(!nl) {
            duckdb_destroy_data_chunk(&chunk);
            return DAPI_ERR_NOMEM;
        }
        *list = nl;
        for(idx_t i = 0; i < rows; i++) {
            if(!duckdb_validity_row_is_valid(valid, i))
                continue;
            if(!(nl[*n] = strndup(duckdb_string_t_data(&d[i]), duckdb_string_t_length(d[i])))) {
                duckdb_destroy_data_chunk(&chunk);
                return DAPI_ERR_NOMEM;
            }
            (*n)++;
        }
        duckdb_destroy_data_chunk(&chunk);
    }
}

void free_strings(char **list, size_t n)
{
    for(size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The unqualified names DuckDB's binder finds in its own catalog (duckdb_settings,
 * information_schema's tables, pg_catalog's …): a query may not name them. */
static enum dapi_err load_catalog_names(struct dapi_engine *e, char *err, size_t errlen)
{
    duckdb_result res;
    if(duckdb_query(e->catalog,
                    "SELECT lower(view_name) FROM duckdb_views() UNION "
                    "SELECT lower(table_name) FROM duckdb_tables()",
                    &res) == DuckDBError) {
        snprintf(err, errlen, "cannot list the catalog: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DAPI_ERR_INTERNAL;
    }
    enum dapi_err result = collect_strings(&res, &e->catalog_names, &e->ncatalog_names);
    duckdb_destroy_result(&res);
    if(!result && e->ncatalog_names)
        qsort(e->catalog_names, e->ncatalog_names, sizeof *e->catalog_names, cmp_str);
    return result;
}

enum dapi_err dapi_engine_open(struct dapi_engine **out, const struct dapi_engine_opts *opts,
                               char *err, size_t errlen)
{
    enum dapi_err result = DAPI_ERR_INTERNAL;
    struct dapi_engine *e = NULL;
    duckdb_config cfg = NULL;
    char *open_err = NULL;
    struct dapi_buf b;
    dapi_buf_init(&b, 64 * 1024);

    if(strcmp(duckdb_library_version(), REQUIRED_VERSION) != 0) {
        snprintf(err, errlen, "libduckdb is %s, dapi needs %s (run scripts/deps.sh)",
                 duckdb_library_version(), REQUIRED_VERSION);
        goto out;
    }
    e = calloc(1, sizeof *e);
    if(!e || !(e->data_dir = strdup(opts->data_dir))) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    e->check_ms = opts->check_timeout_ms;
    /* The lake's real path: files a query reads must resolve beneath it (a symlink in the
     * lake pointing elsewhere is not followed). A lake that does not exist yet is itself. */
    char real[PATH_MAX], sreal[PATH_MAX];
    if(!(e->data_real = strdup(realpath(opts->data_dir, real) ? real : opts->data_dir))) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    /* Results, keys and spill files must not be lake files any key could read. */
    size_t dl = strlen(e->data_real);
    if(realpath(opts->state_dir, sreal) &&
       ((strncmp(sreal, e->data_real, dl) == 0 && (sreal[dl] == '/' || !sreal[dl])) ||
        (strncmp(e->data_real, sreal, strlen(sreal)) == 0 &&
         e->data_real[strlen(sreal)] == '/'))) {
        snprintf(err, errlen,
                 "the state dir (%s) and the data dir (%s) must not contain one "
                 "another",
                 opts->state_dir, opts->data_dir);
        result = DAPI_ERR_INVALID; /* the settings are wrong */
        goto out;
    }
    if((result = lakewatch_open(&e->watch, e->data_dir, !opts->no_lake_watch)))
        goto out;
    pthread_mutex_init(&e->lake_lock, NULL);
    pthread_mutex_init(&e->conns_lock, NULL);
    pthread_cond_init(&e->stop_cv, NULL);

    char threads[32], tmpdir[4096];
    snprintf(threads, sizeof threads, "%lld", (long long)opts->threads);
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", opts->state_dir);
    if(duckdb_create_config(&cfg) == DuckDBError)
        goto out;
    const char *settings[][2] = {
        {"autoinstall_known_extensions", "false"}, {"autoload_known_extensions", "false"},
        {"allow_community_extensions", "false"},   {"allow_unsigned_extensions", "false"},
        {"memory_limit", opts->memory_limit},      {"temp_directory", tmpdir},
        {"preserve_insertion_order", "true"},
    };
    for(size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if(duckdb_set_config(cfg, settings[i][0], settings[i][1]) == DuckDBError) {
            snprintf(err, errlen, "invalid value for --%s: '%s' (DuckDB rejected it)",
                     strcmp(settings[i][0], "memory_limit") == 0 ? "memory-limit" : settings[i][0],
                     settings[i][1]);
            result = DAPI_ERR_INVALID;
            goto out;
        }
    }
    if(opts->threads > 0 && duckdb_set_config(cfg, "threads", threads) == DuckDBError) {
        snprintf(err, errlen, "DuckDB rejected threads=%s", threads);
        goto out;
    }
    if(duckdb_open_ext(NULL, &e->db, cfg, &open_err) == DuckDBError) {
        snprintf(err, errlen, "cannot open DuckDB: %s", open_err ? open_err : "unknown");
        goto out;
    }
    if(duckdb_connect(e->db, &e->catalog) == DuckDBError) {
        snprintf(err, errlen, "cannot connect to DuckDB");
        goto out;
    }
    /* Lock down: reading only inside the lake, then freeze the configuration. */
    dapi_buf_adds(&b, "SET allowed_directories = [");
    dapi_engine_sql_literal(&b, e->data_dir);
    if(opts->extra_dir) {
        dapi_buf_adds(&b, ", ");
        dapi_engine_sql_literal(&b, opts->extra_dir);
    }
    dapi_buf_adds(&b, "]");
    if(!b.data || exec(e->catalog, b.data, err, errlen))
        goto out;
    /* Spilling is shared by every key: bounded (DuckDB's default is 90% of the disk). */
    if(opts->max_spill_bytes > 0) {
        char spill[96];
        snprintf(spill, sizeof spill, "SET max_temp_directory_size = '%lldB'",
                 (long long)opts->max_spill_bytes);
        if(exec(e->catalog, spill, err, errlen))
            goto out;
    }
    if(exec(e->catalog, "SET enable_external_access = false", err, errlen) ||
       exec(e->catalog, "SET lock_configuration = true", err, errlen))
        goto out;
    if(load_catalog_names(e, err, errlen))
        goto out;
    if(pthread_create(&e->watchdog, NULL, watchdog_run, e)) {
        snprintf(err, errlen, "cannot start the query watchdog");
        goto out;
    }
    e->watchdog_started = 1;
    result = DAPI_OK;
out:
    if(open_err)
        duckdb_free(open_err);
    if(cfg)
        duckdb_destroy_config(&cfg);
    dapi_buf_free(&b);
    if(result && e) {
        dapi_engine_close(e);
        e = NULL;
    }
    *out = e;
    return result;
}

void dapi_engine_close(struct dapi_engine *e)
{
    if(!e)
        return;
    if(e->watchdog_started) {
        pthread_mutex_lock(&e->conns_lock);
        e->stopping = 1;
        pthread_cond_signal(&e->stop_cv);
        pthread_mutex_unlock(&e->conns_lock);
        pthread_join(e->watchdog, NULL);
    }
    if(e->catalog)
        duckdb_disconnect(&e->catalog);
    if(e->db)
        duckdb_close(&e->db);
    views_clear(&e->views);
    lakewatch_close(e->watch);
    free_strings(e->catalog_names, e->ncatalog_names);
    free(e->data_real);
    pthread_mutex_destroy(&e->lake_lock);
    pthread_mutex_destroy(&e->conns_lock);
    pthread_cond_destroy(&e->stop_cv);
    free(e->data_dir);
    free(e);
}

enum dapi_err dapi_engine_connect(struct dapi_engine *e, struct dapi_econn **out)
{
    struct dapi_econn *c = calloc(1, sizeof *c);
    if(!c)
        return DAPI_ERR_NOMEM;
    c->e = e;
    if(duckdb_connect(e->db, &c->con) == DuckDBError) {
        free(c);
        return DAPI_ERR_INTERNAL;
    }
    pthread_mutex_lock(&e->conns_lock);
    c->next = e->conns;
    e->conns = c;
    pthread_mutex_unlock(&e->conns_lock);
    *out = c;
    return DAPI_OK;
}

void dapi_econn_close(struct dapi_econn *c)
{
    if(!c)
        return;
    pthread_mutex_lock(&c->e->conns_lock);
    for(struct dapi_econn **p = &c->e->conns; *p; p = &(*p)->next)
        if(*p == c) {
            *p = c->next;
            break;
        }
    pthread_mutex_unlock(&c->e->conns_lock);
    if(c->serialize)
        duckdb_destroy_prepare(&c->serialize);
    if(c->glob)
        duckdb_destroy_prepare(&c->glob);
    free(c->last_tree);
    duckdb_disconnect(&c->con);
    free(c);
}

/* Is name a layer of the lake (case-insensitive, as DuckDB resolves schemas)? */
static int lake_has_layer(void *arg, const char *name)
{
    struct dapi_engine *e = arg;
    int found = 0;
    pthread_mutex_lock(&e->lake_lock);
    for(size_t i = 0; i < e->views.n && !found; i++)
        found = e->views.v[i].layer && strcasecmp(e->views.v[i].layer, name) == 0;
    pthread_mutex_unlock(&e->lake_lock);
    return found;
}

/* Is every layer of the lake that name resolves to (case-insensitively, as DuckDB resolves
 * schemas: "Raw" and "raw" are one schema) in scope, by its exact directory name? A name that
 * is no layer is in scope only if the scope names it (ignoring case): a scoped key then gets
 * "no layer" only for names of its own scope, and 403 for any other. */
static int lake_layer_in_scope(void *arg, const struct dapi_scope *scope, const char *name)
{
    struct dapi_engine *e = arg;
    int found = 0, ok = 1;
    if(!scope || scope->all)
        return 1;
    pthread_mutex_lock(&e->lake_lock);
    for(size_t i = 0; i < e->views.n && ok; i++)
        if(e->views.v[i].layer && strcasecmp(e->views.v[i].layer, name) == 0) {
            found = 1;
            ok = dapi_scope_allows(scope, e->views.v[i].layer);
        }
    pthread_mutex_unlock(&e->lake_lock);
    if(found)
        return ok;
    for(size_t i = 0; i < scope->n; i++)
        if(strcasecmp(scope->layers[i], name) == 0)
            return 1;
    return 0;
}

/* The layer the files of the table schema.table (as DuckDB resolves names: ignoring case)
 * really lie in, when it is not in scope. */
static const char *lake_table_problem(void *arg, const struct dapi_scope *scope,
                                      const char *schema, const char *table, char *out, size_t n)
{
    struct dapi_engine *e = arg;
    const char *problem = NULL;
    pthread_mutex_lock(&e->lake_lock);
    for(size_t i = 0; i < e->views.n && !problem; i++) {
        const struct view *v = &e->views.v[i];
        if(!v->layer || strcasecmp(v->layer, schema) != 0 || strcasecmp(v->table, table) != 0)
            continue;
        if(!v->real || !dapi_scope_allows(scope, v->real)) {
            snprintf(out, n, "%s", v->real ? v->real : "(files of several layers)");
            problem = out;
        }
    }
    pthread_mutex_unlock(&e->lake_lock);
    return problem;
}

static int catalog_has_name(void *arg, const char *lname)
{
    struct dapi_engine *e = arg;
    return e->ncatalog_names && bsearch(&lname, e->catalog_names, e->ncatalog_names,
                                        sizeof *e->catalog_names, cmp_str) != NULL;
}

/* ---- statements ---------------------------------------------------------------------- */

static const char *statement_name(duckdb_statement_type t)
{
    switch(t) {
    case DUCKDB_STATEMENT_TYPE_INSERT: return "INSERT";
    case DUCKDB_STATEMENT_TYPE_UPDATE: return "UPDATE";
    case DUCKDB_STATEMENT_TYPE_EXPLAIN: return "EXPLAIN";
    case DUCKDB_STATEMENT_TYPE_DELETE: return "DELETE";
    case DUCKDB_STATEMENT_TYPE_PREPARE: return "PREPARE";
    case DUCKDB_STATEMENT_TYPE_CREATE: return "CREATE";
    case DUCKDB_STATEMENT_TYPE_EXECUTE: return "EXECUTE";
    case DUCKDB_STATEMENT_TYPE_ALTER: return "ALTER";
    case DUCKDB_STATEMENT_TYPE_TRANSACTION: return "transaction";
    case DUCKDB_STATEMENT_TYPE_COPY: return "COPY";
    case DUCKDB_STATEMENT_TYPE_ANALYZE: return "ANALYZE";
    case DUCKDB_STATEMENT_TYPE_VARIABLE_SET: return "SET VARIABLE";
    case DUCKDB_STATEMENT_TYPE_CREATE_FUNC: return "CREATE FUNCTION";
    case DUCKDB_STATEMENT_TYPE_DROP: return "DROP";
    case DUCKDB_STATEMENT_TYPE_EXPORT: return "EXPORT";
    case DUCKDB_STATEMENT_TYPE_PRAGMA: return "PRAGMA";
    case DUCKDB_STATEMENT_TYPE_VACUUM: return "VACUUM";
    case DUCKDB_STATEMENT_TYPE_CALL: return "CALL";
    case DUCKDB_STATEMENT_TYPE_SET: return "SET";
    case DUCKDB_STATEMENT_TYPE_LOAD: return "LOAD/INSTALL";
    case DUCKDB_STATEMENT_TYPE_ATTACH: return "ATTACH";
    case DUCKDB_STATEMENT_TYPE_DETACH: return "DETACH";
    case DUCKDB_STATEMENT_TYPE_MULTI: return "multi";
    default: return "this kind of";
    }
}

/* Prepares sql as exactly one read-only statement. On success *out is the prepared
 * statement (destroy with duckdb_destroy_prepare). */
/* s points at a block comment's opening; returns what follows its end. DuckDB's scanner
 * nests block comments, as PostgreSQL's does, so this counts depth. */
static const char *skip_block_comment(const char *s)
{
    int depth = 0;
    do {
        if(s[0] == '/' && s[1] == '*') {
            depth++;
            s += 2;
        } else if(s[0] == '*' && s[1] == '/') {
            depth--;
            s += 2;
        } else {
            s++;
        }
    } while(*s && depth > 0);
    return s;
}

/* The first keyword of the text, skipping blanks, comments and opening parentheses.
 * DuckDB rewrites some non-SELECT syntax (PRAGMA, SHOW, DESCRIBE, SUMMARIZE) into SELECTs, so
 * the statement type alone is not enough: the text must also start like a query. */
static int starts_like_query(const char *s, char *word, size_t wordlen)
{
    for(;;) {
        while(*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '(')
            s++;
        if(s[0] == '-' && s[1] == '-') {
            while(*s && *s != '\n')
                s++;
        } else if(s[0] == '/' && s[1] == '*') {
            s = skip_block_comment(s);
        } else {
            break;
        }
    }
    size_t n = 0;
    while(n + 1 < wordlen && ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z')))
        n++;
    memcpy(word, s, n);
    word[n] = '\0';
    static const char *const ok[] = {"SELECT", "WITH", "VALUES", "FROM"};
    for(size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if(strcasecmp(word, ok[i]) == 0)
            return 1;
    return 0;
}

/* DuckDB 1.4 keeps a result collector for every execution of a prepared statement until the
 * statement is destroyed (duckdb/duckdb#21089; about 600 bytes each here), so a statement kept
 * for the connection's life grew with every query checked: a server's memory grew by about
 * 1 KB per query, without bound. The connection's statements are prepared again after
 * STMT_USES executions: at most that many collectors each, the prepare (about 150 us)
 * amortised. 0 when *st is ready for one more execution, -1 when it cannot be prepared. */
#define STMT_USES 1024
static int stmt_ready(struct dapi_econn *c, duckdb_prepared_statement *st, unsigned *uses,
                      const char *sql)
{
    if(*st && ++*uses > STMT_USES) {
        duckdb_destroy_prepare(st);
        *st = NULL;
    }
    if(*st)
        return 0;
    *uses = 1;
    if(duckdb_prepare(c->con, sql, st) == DuckDBError) {
        duckdb_destroy_prepare(st);
        *st = NULL;
        return -1;
    }
    return 0;
}

static int reach_stop(void *arg)
{
    return timed_out(arg);
}

/* What a query's literal file paths could reach and match on disk, now. First the lake's own
 * walk of each pattern (reach.c): no link it could enter or match may leave the lake or the
 * scope, so that DuckDB's glob never looks beyond one. Then every match must be a file whose
 * real path is in the lake, with no hidden component (DuckDB's globs follow symlinks and
 * match dot files, so the pattern alone proves nothing). */
static enum dapi_err vet_paths(struct dapi_econn *c, const struct dapi_sandbox *sb, char **msg)
{
    char layer[256];
    enum dapi_err result = DAPI_OK;
    for(size_t i = 0; i < sb->npaths && !result; i++)
        result = engine_reach(c->e->data_dir, c->e->data_real, sb->paths[i], sb->scope,
                              REACH_MAX_ENTRIES, reach_stop, c, NULL, msg);
    for(size_t i = 0; i < sb->npaths && !result; i++) {
        char **files = NULL;
        size_t nfiles = 0;
        duckdb_result res;
        if(stmt_ready(c, &c->glob, &c->glob_uses, "SELECT file FROM glob($1::VARCHAR)"))
            return DAPI_ERR_INTERNAL;
        if(duckdb_bind_varchar(c->glob, 1, sb->paths[i]) == DuckDBError)
            return DAPI_ERR_INTERNAL;
        if(duckdb_execute_prepared(c->glob, &res) == DuckDBError) {
            result = timed_out(c) ? DAPI_ERR_TIMEOUT : DAPI_ERR_SQL;
            if(result == DAPI_ERR_SQL)
                *msg = dupmsg("", duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            break;
        }
        result = collect_strings(&res, &files, &nfiles);
        duckdb_destroy_result(&res);
        for(size_t k = 0; k < nfiles && !result; k++) {
            char real[PATH_MAX];
            if(dapi_sandbox_path_problem(c->e->data_dir, files[k]) ||
               !dapi_lake_contains(c->e->data_real, files[k], real)) {
                *msg = engine_leaves_msg(sb->paths[i]);
                result = *msg ? DAPI_ERR_SQL : DAPI_ERR_NOMEM;
            } else if(dapi_sandbox_path_layer_problem(sb->scope, c->e->data_real, real, layer,
                                                      sizeof layer)) {
                /* a match (through a link, or a layer folder that is a link) whose real
                 * path is in a layer outside the scope */
                *msg = dapi_sandbox_forbidden_msg(layer);
                result = *msg ? DAPI_ERR_FORBIDDEN : DAPI_ERR_NOMEM;
            }
        }
        free_strings(files, nfiles);
    }
    return result;
}

/* The sandbox (sandbox.h) on DuckDB's own parse tree of sql. */
static enum dapi_err sandbox(struct dapi_econn *c, const char *sql, const struct dapi_scope *scope,
                             int named_params, char **msg)
{
    enum dapi_err result;
    char **tree = NULL;
    size_t ntree = 0;
    duckdb_result res;
    struct dapi_sandbox sb = {.data_dir = c->e->data_dir,
                              .is_layer = lake_has_layer,
                              .is_catalog_name = catalog_has_name,
                              .arg = c->e,
                              .scope = scope,
                              .layer_in_scope = lake_layer_in_scope,
                              .table_problem = lake_table_problem,
                              .named_params = named_params};
    if(stmt_ready(c, &c->serialize, &c->serialize_uses, "SELECT json_serialize_sql($1::VARCHAR)"))
        return DAPI_ERR_INTERNAL;
    if(duckdb_bind_varchar(c->serialize, 1, sql) == DuckDBError)
        return DAPI_ERR_INTERNAL;
    if(duckdb_execute_prepared(c->serialize, &res) == DuckDBError) {
        result = timed_out(c) ? DAPI_ERR_TIMEOUT : DAPI_ERR_SQL;
        if(result == DAPI_ERR_SQL)
            *msg = dupmsg("", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return result;
    }
    result = collect_strings(&res, &tree, &ntree);
    duckdb_destroy_result(&res);
    if(!result && ntree != 1)
        result = DAPI_ERR_INTERNAL;
    if(!result)
        result = dapi_sandbox_check(&sb, tree[0], strlen(tree[0]), msg);
    if(!result)
        result = vet_paths(c, &sb, msg);
    free(c->last_tree);
    c->last_tree = NULL;
    if(!result) { /* kept for dapi_econn_parse_tree (result reuse's identity) */
        c->last_tree = tree[0];
        tree[0] = NULL;
    }
    dapi_sandbox_free(&sb);
    free_strings(tree, ntree);
    return result;
}

/* Prepares sql as one read-only statement (the user sandbox unless trusted), binding params
 * (NULL: none, and the statement may have no parameter) to its $parameters. */
static enum dapi_err prepare_readonly(struct dapi_econn *c, const char *sql, int trusted,
                                      const struct dapi_scope *scope, const char *params,
                                      duckdb_prepared_statement *out, char **msg)
{
    duckdb_connection con = c->con;
    enum dapi_err result = DAPI_ERR_SQL;
    duckdb_extracted_statements ex = NULL;
    duckdb_prepared_statement st = NULL;
    char word[32];
    *out = NULL;
    /* Parse first (nothing runs), so a misspelt query gets DuckDB's parser message. */
    idx_t n = duckdb_extract_statements(con, sql, &ex);
    if(n == 0) {
        const char *why = ex ? duckdb_extract_statements_error(ex) : NULL;
        *msg = dupmsg("", why ? why : "no SQL statement found");
        goto out;
    }
    if(n > 1) {
        *msg = dupmsg("", "only one statement per query is allowed");
        goto out;
    }
    if(!starts_like_query(sql, word, sizeof word)) {
        struct dapi_buf b;
        dapi_buf_init(&b, 1024);
        if(*word) {
            for(char *p = word; *p; p++)
                *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
            dapi_buf_addf(&b,
                          "only read-only queries (SELECT, WITH, VALUES, FROM) are allowed; "
                          "%s statements are refused",
                          word);
        } else {
            dapi_buf_adds(&b, "no SQL statement found");
        }
        *msg = dapi_buf_take(&b, NULL);
        goto out;
    }
    /* The sandbox before DuckDB binds anything: binding a table function already runs
     * part of it (read_csv sniffs its file, query_table runs its query). */
    if(!trusted && (result = sandbox(c, sql, scope, params != NULL, msg)))
        goto out;
    result = DAPI_ERR_SQL;
    if(duckdb_prepare_extracted_statement(con, ex, 0, &st) == DuckDBError) {
        *msg = dupmsg("", duckdb_prepare_error(st));
        goto out;
    }
    duckdb_statement_type t = duckdb_prepared_statement_type(st);
    if(t != DUCKDB_STATEMENT_TYPE_SELECT) {
        struct dapi_buf b;
        dapi_buf_init(&b, 1024);
        dapi_buf_addf(&b,
                      "only read-only queries (SELECT, WITH, VALUES, FROM) are allowed; "
                      "%s statements are refused",
                      statement_name(t));
        *msg = dapi_buf_take(&b, NULL);
        goto out;
    }
    if(params && (result = engine_bind_params(c, st, params, msg)))
        goto out;
    if(!params && duckdb_nparams(st) > 0) {
        *msg = dupmsg("", "query parameters ($1, ?) are not supported");
        goto out;
    }
    *out = st;
    st = NULL;
    result = DAPI_OK;
out:
    if(st)
        duckdb_destroy_prepare(&st);
    if(ex)
        duckdb_destroy_extracted(&ex);
    return result;
}

const char *dapi_econn_parse_tree(const struct dapi_econn *c)
{
    return c->last_tree;
}

enum dapi_err dapi_engine_check(struct dapi_econn *c, const char *sql,
                                const struct dapi_scope *scope, char **msg)
{
    return dapi_engine_check_bound(c, sql, NULL, scope, msg);
}

enum dapi_err dapi_engine_check_bound(struct dapi_econn *c, const char *sql, const char *params,
                                      const struct dapi_scope *scope, char **msg)
{
    *msg = NULL;
    free(c->last_tree);
    c->last_tree = NULL;
    enum dapi_err result = dapi_engine_sync_lake(c->e);
    if(result)
        return result;
    duckdb_prepared_statement st;
    /* The check has a deadline like the run: the watchdog interrupts the sandbox's own
     * queries (parse tree, globs). DuckDB's planner cannot be interrupted, which is why the
     * sandbox also bounds the size of what it plans. */
    if(set_deadline(c, 1, c->e->check_ms ? dapi_clock_mono_ms() + c->e->check_ms : 0))
        return DAPI_ERR_BUSY;
    result = prepare_readonly(c, sql, 0, scope, params, &st, msg);
    if(!result)
        duckdb_destroy_prepare(&st);
    if(!result && timed_out(c))
        result = DAPI_ERR_TIMEOUT;
    set_deadline(c, 0, 0);
    /* short of memory is not the SQL's fault: retry later (503) */
    if(engine_classify_oom(result, msg, NULL) == DAPI_ERR_TOO_LARGE)
        result = DAPI_ERR_BUSY;
    if(result != DAPI_ERR_SQL && result != DAPI_ERR_FORBIDDEN && result != DAPI_ERR_PARAM &&
       *msg) {
        free(*msg);
        *msg = NULL;
    }
    if(result == DAPI_ERR_SQL) {
        scrub_suggestions(*msg, scope);
        locate(msg, sql);
    }
    return result;
}

/* ---- results as column vectors ------------------------------------------------------- */

struct tmpl {
    struct dapi_colvec *cols; /* top level */
    size_t ncols;
    char **names;
    char **types; /* DuckDB's names of the column types (types.c) */
};

static void cv_free(struct dapi_colvec *cv)
{
    for(size_t i = 0; i < cv->nchildren; i++)
        cv_free(&cv->children[i]);
    free(cv->children);
    if(cv->child_names)
        for(size_t i = 0; i < cv->nchildren; i++)
            free((char *)cv->child_names[i]);
    free((void *)cv->child_names);
    if(cv->enum_values)
        for(size_t i = 0; i < cv->n_enum; i++)
            free((char *)cv->enum_values[i]);
    free((void *)cv->enum_values);
    memset(cv, 0, sizeof *cv);
}

static char *own(char *duck)
{
    char *s = strdup(duck ? duck : "");
    if(duck)
        duckdb_free(duck);
    return s;
}

static enum dapi_ctype simple(duckdb_type t)
{
    switch(t) {
    case DUCKDB_TYPE_BOOLEAN: return DAPI_CT_BOOL;
    case DUCKDB_TYPE_TINYINT: return DAPI_CT_I8;
    case DUCKDB_TYPE_SMALLINT: return DAPI_CT_I16;
    case DUCKDB_TYPE_INTEGER: return DAPI_CT_I32;
    case DUCKDB_TYPE_BIGINT: return DAPI_CT_I64;
    case DUCKDB_TYPE_UTINYINT: return DAPI_CT_U8;
    case DUCKDB_TYPE_USMALLINT: return DAPI_CT_U16;
    case DUCKDB_TYPE_UINTEGER: return DAPI_CT_U32;
    case DUCKDB_TYPE_UBIGINT: return DAPI_CT_U64;
    case DUCKDB_TYPE_HUGEINT: return DAPI_CT_I128;
    case DUCKDB_TYPE_UHUGEINT: return DAPI_CT_U128;
    case DUCKDB_TYPE_FLOAT: return DAPI_CT_F32;
    case DUCKDB_TYPE_DOUBLE: return DAPI_CT_F64;
    case DUCKDB_TYPE_VARCHAR: return DAPI_CT_VARCHAR;
    case DUCKDB_TYPE_BLOB: return DAPI_CT_BLOB;
    case DUCKDB_TYPE_BIT: return DAPI_CT_BIT;
    case DUCKDB_TYPE_DATE: return DAPI_CT_DATE;
    case DUCKDB_TYPE_TIME: return DAPI_CT_TIME;
    case DUCKDB_TYPE_TIMESTAMP: return DAPI_CT_TIMESTAMP;
    case DUCKDB_TYPE_TIMESTAMP_S: return DAPI_CT_TIMESTAMP_S;
    case DUCKDB_TYPE_TIMESTAMP_MS: return DAPI_CT_TIMESTAMP_MS;
    case DUCKDB_TYPE_TIMESTAMP_NS: return DAPI_CT_TIMESTAMP_NS;
    case DUCKDB_TYPE_TIMESTAMP_TZ: return DAPI_CT_TIMESTAMP_TZ;
    case DUCKDB_TYPE_INTERVAL: return DAPI_CT_INTERVAL;
    case DUCKDB_TYPE_UUID: return DAPI_CT_UUID;
    default: return (enum dapi_ctype)(-1);
    }
}

/* Builds the colvec template of a logical type. Returns DAPI_ERR_INVALID for a type dapi
 * cannot render natively (the caller then casts that column to VARCHAR). */
static enum dapi_err build(duckdb_logical_type lt, struct dapi_colvec *cv, int depth)
{
    enum dapi_err result = DAPI_OK;
    duckdb_type t = duckdb_get_type_id(lt);
    memset(cv, 0, sizeof *cv);
    if(depth > MAX_TYPE_DEPTH)
        return DAPI_ERR_INVALID;
    int st = (int)simple(t);
    if(st >= 0) {
        cv->type = (enum dapi_ctype)st;
        return DAPI_OK;
    }
    switch(t) {
    case DUCKDB_TYPE_DECIMAL:
        cv->type = DAPI_CT_DECIMAL;
        cv->phys = simple(duckdb_decimal_internal_type(lt));
        cv->scale = duckdb_decimal_scale(lt);
        return DAPI_OK;
    case DUCKDB_TYPE_ENUM: {
        cv->type = DAPI_CT_ENUM;
        cv->phys = simple(duckdb_enum_internal_type(lt));
        uint32_t n = duckdb_enum_dictionary_size(lt);
        const char **vals = calloc(n ? n : 1, sizeof *vals);
        if(!vals)
            return DAPI_ERR_NOMEM;
        cv->enum_values = vals;
        cv->n_enum = n;
        for(uint32_t i = 0; i < n; i++)
            if(!(vals[i] = own(duckdb_enum_dictionary_value(lt, i))))
                return DAPI_ERR_NOMEM;
        return DAPI_OK;
    }
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_MAP:
    case DUCKDB_TYPE_ARRAY: {
        cv->type = t == DUCKDB_TYPE_LIST  ? DAPI_CT_LIST
                   : t == DUCKDB_TYPE_MAP ? DAPI_CT_MAP
                                          : DAPI_CT_ARRAY;
        if(!(cv->children = calloc(1, sizeof *cv->children)))
            return DAPI_ERR_NOMEM;
        cv->nchildren = 1;
        if(t == DUCKDB_TYPE_MAP) {
            /* physically a LIST of STRUCT(key, value) */
            struct dapi_colvec *kv = &cv->children[0];
            kv->type = DAPI_CT_STRUCT;
            const char **names = calloc(2, sizeof *names);
            if(!names || !(kv->children = calloc(2, sizeof *kv->children))) {
                free(names);
                return DAPI_ERR_NOMEM;
            }
            kv->child_names = names;
            kv->nchildren = 2;
            names[0] = strdup("key");
            names[1] = strdup("value");
            duckdb_logical_type k = duckdb_map_type_key_type(lt);
            duckdb_logical_type v = duckdb_map_type_value_type(lt);
            result = build(k, &kv->children[0], depth + 1);
            if(!result)
                result = build(v, &kv->children[1], depth + 1);
            duckdb_destroy_logical_type(&k);
            duckdb_destroy_logical_type(&v);
            return result;
        }
        duckdb_logical_type ct = t == DUCKDB_TYPE_LIST ? duckdb_list_type_child_type(lt)
                                                       : duckdb_array_type_child_type(lt);
        if(t == DUCKDB_TYPE_ARRAY)
            cv->array_size = duckdb_array_type_array_size(lt);
        result = build(ct, &cv->children[0], depth + 1);
        duckdb_destroy_logical_type(&ct);
        return result;
    }
    case DUCKDB_TYPE_STRUCT:
    case DUCKDB_TYPE_UNION: {
        int is_union = t == DUCKDB_TYPE_UNION;
        size_t members = is_union ? duckdb_union_type_member_count(lt)
                                  : duckdb_struct_type_child_count(lt);
        size_t n = members + (is_union ? 1 : 0);
        cv->type = is_union ? DAPI_CT_UNION : DAPI_CT_STRUCT;
        const char **names = calloc(n ? n : 1, sizeof *names);
        if(!names)
            return DAPI_ERR_NOMEM;
        cv->child_names = names;
        if(!(cv->children = calloc(n ? n : 1, sizeof *cv->children)))
            return DAPI_ERR_NOMEM;
        cv->nchildren = n;
        size_t at = 0;
        if(is_union) {
            names[0] = strdup("");
            cv->children[0].type = DAPI_CT_U8;
            at = 1;
        }
        for(size_t i = 0; i < members && !result; i++) {
            names[at + i] = own(is_union ? duckdb_union_type_member_name(lt, i)
                                         : duckdb_struct_type_child_name(lt, i));
            duckdb_logical_type ct = is_union ? duckdb_union_type_member_type(lt, i)
                                              : duckdb_struct_type_child_type(lt, i);
            result = build(ct, &cv->children[at + i], depth + 1);
            duckdb_destroy_logical_type(&ct);
        }
        return result;
    }
    default: return DAPI_ERR_INVALID;
    }
}

/* Points the template at one chunk's vectors. */
static void bind_vec(struct dapi_colvec *cv, duckdb_vector v)
{
    cv->data = duckdb_vector_get_data(v);
    cv->validity = duckdb_vector_get_validity(v);
    switch(cv->type) {
    case DAPI_CT_LIST:
    case DAPI_CT_MAP: bind_vec(&cv->children[0], duckdb_list_vector_get_child(v)); break;
    case DAPI_CT_ARRAY: bind_vec(&cv->children[0], duckdb_array_vector_get_child(v)); break;
    case DAPI_CT_STRUCT:
    case DAPI_CT_UNION:
        for(size_t i = 0; i < cv->nchildren; i++)
            bind_vec(&cv->children[i], duckdb_struct_vector_get_child(v, i));
        break;
    default: break;
    }
}

static void tmpl_free(struct tmpl *t)
{
    for(size_t i = 0; i < t->ncols; i++) {
        if(t->cols)
            cv_free(&t->cols[i]);
        if(t->names)
            free(t->names[i]);
        if(t->types)
            free(t->types[i]);
    }
    free(t->cols);
    free(t->names);
    free(t->types);
    memset(t, 0, sizeof *t);
}

/* Where a statement's columns are read: its prepared statement, or its result when it has
 * bound parameters (DuckDB may know their types, and so the columns', only once it runs). */
struct colsrc {
    duckdb_prepared_statement st;
    duckdb_result *res; /* NULL: the statement */
};

static size_t col_count(const struct colsrc *s)
{
    return s->res ? duckdb_column_count(s->res) : duckdb_prepared_statement_column_count(s->st);
}

/* Column i's name (owned; NULL without memory). */
static char *col_name(const struct colsrc *s, size_t i)
{
    if(s->res) {
        const char *n = duckdb_column_name(s->res, i);
        return strdup(n ? n : "");
    }
    const char *dn = duckdb_prepared_statement_column_name(s->st, i);
    char *name = strdup(dn ? dn : "");
    duckdb_free((void *)dn); /* the C API's copy is ours to free */
    return name;
}

static duckdb_logical_type col_type(const struct colsrc *s, size_t i)
{
    return s->res ? duckdb_column_logical_type(s->res, i)
                  : duckdb_prepared_statement_column_logical_type(s->st, i);
}

/* Builds the template for a statement's columns. Columns of a type dapi cannot
 * render are listed in *cast (the caller re-prepares with them cast to VARCHAR). */
static enum dapi_err tmpl_build(const struct colsrc *src, struct tmpl *t, int *needs_cast)
{
    enum dapi_err result = DAPI_OK;
    memset(t, 0, sizeof *t);
    *needs_cast = 0;
    t->ncols = col_count(src);
    t->cols = calloc(t->ncols ? t->ncols : 1, sizeof *t->cols);
    t->names = calloc(t->ncols ? t->ncols : 1, sizeof *t->names);
    t->types = calloc(t->ncols ? t->ncols : 1, sizeof *t->types);
    if(!t->cols || !t->names || !t->types)
        return DAPI_ERR_NOMEM;
    for(size_t i = 0; i < t->ncols && !result; i++) {
        if(!(t->names[i] = col_name(src, i)))
            return DAPI_ERR_NOMEM;
        duckdb_logical_type lt = col_type(src, i);
        result = build(lt, &t->cols[i], 0);
        if(!(t->types[i] = engine_type_name(lt)) && !result)
            result = DAPI_ERR_NOMEM;
        duckdb_destroy_logical_type(&lt);
        if(result == DAPI_ERR_INVALID) {
            *needs_cast = 1;
            cv_free(&t->cols[i]);
            result = DAPI_OK;
        }
    }
    return result;
}

/* SELECT * REPLACE (CAST("c" AS VARCHAR) AS "c", …) FROM (<sql>) for the columns whose type
 * has no native JSON rendering (TIME WITH TIME ZONE, BIGNUM, …): they come out as DuckDB's
 * own text for them. */
/* Length of sql up to its first ';' outside quotes and comments (the text is known to be
 * exactly one statement, so anything after that ';' is blanks and comments). */
static size_t statement_len(const char *sql)
{
    const char *s = sql;
    while(*s) {
        if(*s == '\'' || *s == '"') {
            char q = *s++;
            while(*s && !(*s == q && s[1] != q))
                s += *s == q ? 2 : 1;
            if(*s)
                s++;
        } else if(s[0] == '-' && s[1] == '-') {
            while(*s && *s != '\n')
                s++;
        } else if(s[0] == '/' && s[1] == '*') {
            s = skip_block_comment(s);
        } else if(*s == ';') {
            break;
        } else {
            s++;
        }
    }
    return (size_t)(s - sql);
}

/* SELECT c0 AS "a", CAST(c1 AS VARCHAR) AS "b" … FROM (<sql>) AS t(c0, c1, …): columns are
 * addressed by position, so duplicate names keep working. */
static char *cast_wrapper(const struct colsrc *src, const char *sql)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 64 * 1024 * 1024);
    dapi_buf_adds(&b, "SELECT ");
    size_t n = col_count(src);
    for(size_t i = 0; i < n; i++) {
        duckdb_logical_type lt = col_type(src, i);
        struct dapi_colvec probe;
        enum dapi_err r = build(lt, &probe, 0);
        cv_free(&probe);
        duckdb_destroy_logical_type(&lt);
        if(i)
            dapi_buf_adds(&b, ", ");
        if(r == DAPI_ERR_INVALID)
            dapi_buf_addf(&b, "CAST(\"_dapi_c%zu\" AS VARCHAR) AS ", i);
        else
            dapi_buf_addf(&b, "\"_dapi_c%zu\" AS ", i);
        char *name = col_name(src, i);
        if(!name)
            dapi_buf_fail(&b, DAPI_ERR_NOMEM);
        else
            add_ident(&b, name);
        free(name);
    }
    dapi_buf_adds(&b, " FROM (\n");
    dapi_buf_add(&b, sql, statement_len(sql));
    dapi_buf_adds(&b, "\n) AS \"_dapi_t\"(");
    for(size_t i = 0; i < n; i++)
        dapi_buf_addf(&b, "%s\"_dapi_c%zu\"", i ? ", " : "", i);
    dapi_buf_adds(&b, ")");
    return b.data ? dapi_buf_take(&b, NULL) : NULL;
}

static enum dapi_err drive(struct dapi_econn *c, duckdb_prepared_statement st, int64_t deadline_ms,
                           duckdb_result *res, int *have_res, char **msg);

static enum dapi_err run(struct dapi_econn *c, const char *sql, const char *params, int trusted,
                         const struct dapi_scope *scope, int64_t deadline_ms,
                         const struct dapi_sink *sink, void *ctx, char **msg)
{
    enum dapi_err result;
    duckdb_prepared_statement st = NULL;
    duckdb_result res;
    int have_res = 0, needs_cast = 0;
    char *wrapped = NULL;
    struct tmpl t = {0};
    *msg = NULL;

    if(set_deadline(c, 1, deadline_ms)) {
        result = DAPI_ERR_BUSY;
        goto out;
    }
    if((!trusted && (result = dapi_engine_sync_lake(c->e))) ||
       (result = prepare_readonly(c, sql, trusted, scope, params, &st, msg)))
        goto out;
    /* The columns' types: the statement's, or with parameters its result's (it starts
     * running first). A type dapi cannot render: once more with it cast to VARCHAR. */
    for(int pass = 0;; pass++) {
        if(params && (result = drive(c, st, deadline_ms, &res, &have_res, msg)))
            goto out;
        struct colsrc src = {st, params ? &res : NULL};
        if((result = tmpl_build(&src, &t, &needs_cast)))
            goto out;
        if(!needs_cast)
            break;
        if(pass) {
            result = DAPI_ERR_SQL;
            *msg = dupmsg("", "the result has a column type dapi cannot return");
            goto out;
        }
        tmpl_free(&t);
        wrapped = cast_wrapper(&src, sql);
        if(have_res)
            duckdb_destroy_result(&res);
        have_res = 0;
        duckdb_destroy_prepare(&st);
        if(!wrapped) {
            result = DAPI_ERR_NOMEM;
            goto out;
        }
        if((result = prepare_readonly(c, wrapped, trusted, scope, params, &st, msg)))
            goto out;
    }
    if((result = sink->begin(ctx, t.ncols, (const char *const *)t.names,
                             (const char *const *)t.types)))
        goto out;

    if(!params && (result = drive(c, st, deadline_ms, &res, &have_res, msg)))
        goto out;
    for(;;) {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
        if(!chunk)
            break;
        idx_t rows = duckdb_data_chunk_get_size(chunk);
        for(size_t i = 0; i < t.ncols; i++)
            bind_vec(&t.cols[i], duckdb_data_chunk_get_vector(chunk, i));
        result = sink->chunk(ctx, t.cols, t.ncols, rows);
        duckdb_destroy_data_chunk(&chunk);
        if(result)
            goto out;
        if(deadline_ms && (timed_out(c) || dapi_clock_mono_ms() > deadline_ms)) {
            result = DAPI_ERR_TIMEOUT;
            goto out;
        }
    }
    if(timed_out(c)) {
        /* a streaming result's rows are produced by the fetches: an interrupt lands here */
        result = aborting(c->e) ? DAPI_ERR_BUSY : DAPI_ERR_TIMEOUT;
    } else if(duckdb_result_error(&res)) {
        *msg = dupmsg("", duckdb_result_error(&res));
        result = DAPI_ERR_SQL;
    }
out:
    if(have_res)
        duckdb_destroy_result(&res);
    if(st)
        duckdb_destroy_prepare(&st);
    tmpl_free(&t);
    free(wrapped);
    set_deadline(c, 0, 0);
    enum dapi_err raw = result;
    int spill;
    result = engine_classify_oom(result, msg, &spill);
    c->oom_shared = 0;
    if(raw == DAPI_ERR_SQL && result == DAPI_ERR_TOO_LARGE && c->work.company)
        c->oom_shared = spill ? DAPI_OOM_SPILL : DAPI_OOM_MEMORY;
    if(result != DAPI_ERR_SQL && result != DAPI_ERR_TOO_LARGE && result != DAPI_ERR_FORBIDDEN &&
       result != DAPI_ERR_PARAM && *msg) {
        free(*msg);
        *msg = NULL;
    }
    if(result == DAPI_ERR_SQL && !trusted) {
        scrub_suggestions(*msg, scope);
        locate(msg, sql); /* (a wrapped query's LINE block is not the client's: left as is) */
    }
    return result;
}

enum dapi_err dapi_engine_run(struct dapi_econn *c, const char *sql,
                              const struct dapi_scope *scope, int64_t deadline_ms,
                              const struct dapi_sink *sink, void *ctx, char **msg)
{
    return run(c, sql, NULL, 0, scope, deadline_ms, sink, ctx, msg);
}

enum dapi_err dapi_engine_run_bound(struct dapi_econn *c, const char *sql, const char *params,
                                    const struct dapi_scope *scope, int64_t deadline_ms,
                                    const struct dapi_sink *sink, void *ctx, char **msg)
{
    return run(c, sql, params, 0, scope, deadline_ms, sink, ctx, msg);
}

enum dapi_err dapi_engine_run_trusted(struct dapi_econn *c, const char *sql, int64_t deadline_ms,
                                      const struct dapi_sink *sink, void *ctx, char **msg)
{
    return run(c, sql, NULL, 1, NULL, deadline_ms, sink, ctx, msg);
}

/* Starts a prepared statement as a streaming result, interrupting it at deadline_ms: rows
 * are produced as the caller fetches them, so nothing but the chunk in hand is held. */
static enum dapi_err drive(struct dapi_econn *c, duckdb_prepared_statement st, int64_t deadline_ms,
                           duckdb_result *res, int *have_res, char **msg)
{
    duckdb_pending_result pending = NULL;
    enum dapi_err result = DAPI_OK;
    if(set_deadline(c, 1, deadline_ms))
        return DAPI_ERR_BUSY; /* shutting down */
    if(duckdb_pending_prepared_streaming(st, &pending) == DuckDBError) {
        *msg = dupmsg("", duckdb_pending_error(pending));
        result = DAPI_ERR_SQL;
        goto out;
    }
    for(;;) {
        duckdb_pending_state ps = duckdb_pending_execute_task(pending);
        if(ps == DUCKDB_PENDING_RESULT_READY)
            break;
        if(ps == DUCKDB_PENDING_ERROR) {
            if(timed_out(c))
                result = DAPI_ERR_TIMEOUT;
            else {
                *msg = dupmsg("", duckdb_pending_error(pending));
                result = DAPI_ERR_SQL;
            }
            goto out;
        }
    }
    *have_res = 1;
    if(duckdb_execute_pending(pending, res) == DuckDBError) {
        if(timed_out(c)) {
            result = DAPI_ERR_TIMEOUT;
        } else {
            *msg = dupmsg("", duckdb_result_error(res));
            result = DAPI_ERR_SQL;
        }
    }
out:
    if(result == DAPI_OK && timed_out(c))
        result = DAPI_ERR_TIMEOUT;
    if(result == DAPI_ERR_TIMEOUT && aborting(c->e))
        result = DAPI_ERR_BUSY;
    if(pending)
        duckdb_destroy_pending(&pending);
    return result;
}

enum dapi_err dapi_engine_export_parquet(struct dapi_econn *c, const char *sql, int trusted,
                                         const struct dapi_scope *scope, const char *dir,
                                         int64_t rows_per_file, int64_t deadline_ms,
                                         uint64_t *rows, char **msg)
{
    enum dapi_err result;
    duckdb_prepared_statement st = NULL;
    duckdb_extracted_statements ex = NULL;
    duckdb_result res;
    int have_res = 0;
    struct dapi_buf b;
    dapi_buf_init(&b, 64u << 20);
    *msg = NULL;
    *rows = 0;
    if(set_deadline(c, 1, deadline_ms)) {
        result = DAPI_ERR_BUSY;
        goto out;
    }
    if((!trusted && (result = dapi_engine_sync_lake(c->e))) ||
       (result = prepare_readonly(c, sql, trusted, trusted ? NULL : scope, NULL, &st, msg)))
        goto out;
    duckdb_destroy_prepare(&st);
    /* The text was just proven to be one read-only statement, so it can sit inside COPY's
     * parentheses; the newlines end any trailing line comment. */
    dapi_buf_adds(&b, "COPY (\n");
    dapi_buf_add(&b, sql, statement_len(sql));
    dapi_buf_adds(&b, "\n) TO ");
    dapi_engine_sql_literal(&b, dir);
    if(rows_per_file > 0)
        dapi_buf_addf(&b, " (FORMAT parquet, ROW_GROUP_SIZE %lld, ROW_GROUPS_PER_FILE 1)",
                      (long long)rows_per_file);
    else
        dapi_buf_adds(&b, " (FORMAT parquet)");
    if(!b.data) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    if(duckdb_extract_statements(c->con, b.data, &ex) != 1 ||
       duckdb_prepare_extracted_statement(c->con, ex, 0, &st) == DuckDBError) {
        *msg = dupmsg("", st ? duckdb_prepare_error(st) : "cannot prepare the export");
        result = DAPI_ERR_SQL;
        goto out;
    }
    if((result = drive(c, st, deadline_ms, &res, &have_res, msg)))
        goto out;
    duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
    if(chunk) {
        duckdb_vector v = duckdb_data_chunk_get_vector(chunk, 0);
        if(duckdb_data_chunk_get_size(chunk) > 0)
            *rows = (uint64_t)((int64_t *)duckdb_vector_get_data(v))[0];
        duckdb_destroy_data_chunk(&chunk);
    }
out:
    if(have_res)
        duckdb_destroy_result(&res);
    if(st)
        duckdb_destroy_prepare(&st);
    if(ex)
        duckdb_destroy_extracted(&ex);
    dapi_buf_free(&b);
    set_deadline(c, 0, 0);
    result = engine_classify_oom(result, msg, NULL);
    if(result != DAPI_ERR_SQL && result != DAPI_ERR_TOO_LARGE && result != DAPI_ERR_FORBIDDEN &&
       *msg) {
        free(*msg);
        *msg = NULL;
    }
    return result;
}
