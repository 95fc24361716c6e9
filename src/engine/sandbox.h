/* The SQL sandbox: decides whether a user query may run, from DuckDB's own parse tree
 * (json_serialize_sql), never from its text. Everything a query calls must be on the
 * allow-list (allowlist.c); every table it names must be a lake table or one of its own CTEs;
 * files may be read only by literal paths inside the lake; and the tree, once its CTEs are
 * inlined, must stay small enough to plan in bounded time. Pure: no DuckDB here, so the
 * engine feeds it the tree and answers its questions about the lake through callbacks. */
#ifndef DAPI_SANDBOX_H
#define DAPI_SANDBOX_H

#include <stddef.h>
#include "base/scope.h"
#include "dapi/err.h"

/* A tree larger than this many nodes once its CTEs are inlined is refused: DuckDB's planner
 * cannot be interrupted, and nested CTEs referenced twice each double the tree per level. */
#define DAPI_SANDBOX_MAX_NODES 200000
/* Aggregation nested in aggregation (a GROUP BY, HAVING or aggregate call in a subquery or a
 * CTE that an aggregating query reads, and so on) deeper than this is refused, a query node
 * whose expressions hold subqueries counting one more: DuckDB plans such a chain in time that
 * doubles with each level (24 aggregates of a 1 KB query: 12 s; 30: minutes) or grows
 * fourfold (scalar subqueries over aggregates: 12 levels, 3.5 s), and planning cannot be
 * interrupted. A MATERIALIZED CTE ends a chain. */
#define DAPI_SANDBOX_MAX_AGG_DEPTH 16
/* A query node (SELECT) reading more relations than this — tables, table functions and
 * VALUES lists, in its joins and in every subquery below it, CTEs inlined — is refused, and a
 * query reading more than DAPI_SANDBOX_MAX_RELATIONS in all: DuckDB plans a chain of joins
 * in time that grows with about the fourth power of its length (30 joins: 0.1 s, 50: 0.9 s,
 * 100: 18 s, 200: minutes), and planning cannot be interrupted. A MATERIALIZED CTE counts
 * one where it is read (its body is a node of its own). */
#define DAPI_SANDBOX_MAX_JOINED 48
#define DAPI_SANDBOX_MAX_RELATIONS 192
/* Function calls nested in function calls (operators such as + and || not counted) deeper
 * than this are refused: nested list, struct and map constructors bind in time that grows
 * with the cube of the depth (300 nested struct literals: 1.6 s; 900: minutes). */
#define DAPI_SANDBOX_MAX_CALL_DEPTH 64
/* Lambdas nested in lambdas (list_transform(l, x -> list_transform(…))) deeper than this are
 * refused: DuckDB binds them in time that grows fourfold per level (20 levels: 0.5 s; 22:
 * 2.3 s). */
#define DAPI_SANDBOX_MAX_LAMBDA_DEPTH 16

struct dapi_sandbox {
    const char *data_dir; /* absolute, no trailing '/': file paths must lie beneath it */
    /* Is name a layer of the lake (a schema the engine created)? */
    int (*is_layer)(void *arg, const char *name);
    /* Could the binder resolve this unqualified table name to something of its own catalog
     * (a system view such as duckdb_settings)? name is lower case. */
    int (*is_catalog_name)(void *arg, const char *name);
    void *arg;
    /* The layers the query may read (NULL or scope->all: every layer). A table of another
     * layer, or a file path outside <data_dir>/<layer>/ of an allowed layer, is refused with
     * DAPI_ERR_FORBIDDEN; names are checked before they are looked up, so a scoped key cannot
     * tell a layer outside its scope that exists from one that does not. */
    const struct dapi_scope *scope;
    /* Is every layer of the lake that the schema name resolves to (DuckDB matches schemas
     * case-insensitively) inside scope? May be NULL: then the name is compared with the
     * scope's layers case-insensitively. */
    int (*layer_in_scope)(void *arg, const struct dapi_scope *scope, const char *name);
    /* For a table of a layer in scope: NULL if every file it reads really lies in a layer of
     * scope (a link in a layer folder, or a layer folder that is a link, may lead to another
     * layer's files); else the layer they lie in, written to out (n bytes). May be NULL. */
    const char *(*table_problem)(void *arg, const struct dapi_scope *scope, const char *schema,
                                 const char *table, char *out, size_t n);
    /* Non-zero: named query parameters ($name) are allowed as values (the engine binds
     * them); else every parameter is refused. Positional ones ($1, ?) are always refused. */
    int named_params;
    /* Out: the literal file paths and glob patterns the query reads (owned; free with
     * dapi_sandbox_free). The engine must still check what they match on disk. */
    char **paths;
    size_t npaths;
};

/* Checks the serialized parse tree of one statement (the output of json_serialize_sql).
 * DAPI_OK: allowed. DAPI_ERR_SQL: refused, *msg (owned, free()) says why, naming the function
 * or table. DAPI_ERR_FORBIDDEN: it reads a layer outside sb->scope, *msg names the layer
 * (dapi_sandbox_forbidden_msg). Other errors (DAPI_ERR_NOMEM) leave *msg NULL. */
enum dapi_err dapi_sandbox_check(struct dapi_sandbox *sb, const char *tree, size_t len,
                                 char **msg);
/* Frees sb->paths. */
void dapi_sandbox_free(struct dapi_sandbox *sb);

/* Is path (a literal from a query) inside dir with no hidden, "." or ".." component?
 * Returns NULL if so, else a short reason. */
const char *dapi_sandbox_path_problem(const char *dir, const char *path);

/* With a scope (not all): the layer directory that path (inside dir, already vetted by
 * dapi_sandbox_path_problem or a real path) lies in, if it is one of the scope's layers: NULL.
 * Else the name of that first component, written to out (n bytes), for the refusal. */
const char *dapi_sandbox_path_layer_problem(const struct dapi_scope *scope, const char *dir,
                                            const char *path, char *out, size_t n);

/* The message of a scope refusal: "this API key may not read layer 'x'" (owned), or NULL. */
char *dapi_sandbox_forbidden_msg(const char *layer);

#endif
