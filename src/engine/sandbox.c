/* The SQL sandbox (sandbox.h). Walks the JSON form of DuckDB's parse tree:
 *  - every expression object ("class": …) must be of a known class; functions and window
 *    functions must be on the allow-list, unqualified (or qualified by the system schemas);
 *  - every table reference ("type": BASE_TABLE, TABLE_FUNCTION, …) must be a lake table
 *    ("layer"."table"), a CTE of the query, a subquery/join/VALUES, or an allowed table
 *    function; table functions that read files take literal paths inside the lake;
 *  - anything unknown is refused, so a new kind of node in a newer DuckDB fails closed.
 * The walk is generic over members, so an expression hidden anywhere (a lambda, a FILTER, a
 * window frame bound, an ORDER BY inside an aggregate, a PIVOT list) is still seen. */
#include "engine/sandbox.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/jsonin.h"
#include "engine/allowlist.h"

#define MAX_DEPTH 4000          /* JSON nesting; DuckDB's own expression depth limit is 1000 */
#define MAX_INLINED_DEPTH 10000 /* nesting with CTEs inlined: bounds tree_size's stack */
#define NAME_LEN 256
#define MSG_MAX 4096 /* bytes of a refusal message, NUL excluded */

struct cte {
    char name[NAME_LEN]; /* lower case */
    const struct dapi_jv *body;
    int always;      /* MATERIALIZED: planned once, whatever the number of references */
    int state;       /* 0 not computed, 1 being computed (a recursive reference), 2 done */
    uint64_t weight; /* nodes of the body once inlined */
    int agg_state;   /* as state, for agg */
    int agg;         /* levels of aggregation of the body once inlined */
    int rel_state;   /* as state, for rels */
    uint64_t rels;   /* relations the body reads once inlined */
};

struct walk {
    struct dapi_sandbox *sb;
    struct cte *ctes;
    size_t nctes, cap;
    char *msg;
    enum dapi_err err;
    int calls, lambdas; /* function calls, lambdas enclosing the expression being checked */
};

static const char *str(const struct dapi_jv *v, const char *key)
{
    const char *s = dapi_jv_str(dapi_jv_get(v, key), NULL);
    return s ? s : "";
}

/* Lower-cases s into out; 0 if it fit. */
static int lower(const char *s, char *out, size_t n)
{
    size_t i = 0;
    for(; s[i]; i++) {
        if(i + 1 >= n)
            return -1;
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    }
    out[i] = '\0';
    return 0;
}

static void nomem(struct walk *w);
static void refuse(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(struct walk *w, const char *fmt, ...)
{
    if(w->err)
        return; /* the first reason is the one reported */
    /* The message quotes names and paths from the query, which have no length limit. It used
     * to be built in a dapi_buf capped at 4096 bytes, and a longer one (a 5000-byte path in
     * read_parquet()) failed the append and was reported as DAPI_ERR_NOMEM (a 500) with no
     * message. Now it is cut to MSG_MAX bytes at a character boundary and ends in "…": it
     * stays a refusal (tests/fuzz/fuzz_sandbox checks this). */
    char *m = malloc(MSG_MAX + 1);
    if(!m) {
        nomem(w);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m, MSG_MAX + 1, fmt, ap);
    va_end(ap);
    if(n < 0) {
        snprintf(m, MSG_MAX + 1, "the query cannot be checked");
    } else if((size_t)n > MSG_MAX) {
        size_t k = MSG_MAX - 3; /* room for "…" (3 bytes) and the NUL */
        while(k > 0 && ((unsigned char)m[k] & 0xC0) == 0x80)
            k--; /* m[k] starts a character: cut before it */
        memcpy(m + k, "\xe2\x80\xa6", 4);
    }
    w->msg = m;
    w->err = DAPI_ERR_SQL;
}

static void nomem(struct walk *w)
{
    if(!w->err)
        w->err = DAPI_ERR_NOMEM;
}

char *dapi_sandbox_forbidden_msg(const char *layer)
{
    /* a layer name from the query has no length limit: cut like refuse() */
    char *m = malloc(MSG_MAX + 1);
    if(!m)
        return NULL;
    int n = snprintf(m, MSG_MAX + 1, "this API key may not read layer '%s'", layer);
    if(n > MSG_MAX) {
        size_t k = MSG_MAX - 3;
        while(k > 0 && ((unsigned char)m[k] & 0xC0) == 0x80)
            k--;
        memcpy(m + k, "\xe2\x80\xa6", 4);
    }
    return m;
}

/* The query reads a layer outside the scope: DAPI_ERR_FORBIDDEN naming it. */
static void forbid(struct walk *w, const char *layer)
{
    if(w->err)
        return;
    if(!(w->msg = dapi_sandbox_forbidden_msg(layer))) {
        nomem(w);
        return;
    }
    w->err = DAPI_ERR_FORBIDDEN;
}

static int scoped(const struct walk *w)
{
    return w->sb->scope && !w->sb->scope->all;
}

/* May the query read the schema called name (as written: DuckDB matches it to a layer
 * case-insensitively)? */
static int schema_in_scope(const struct walk *w, const char *name)
{
    const struct dapi_sandbox *sb = w->sb;
    if(!scoped(w))
        return 1;
    if(sb->layer_in_scope)
        return sb->layer_in_scope(sb->arg, sb->scope, name);
    for(size_t i = 0; i < sb->scope->n; i++)
        if(strcasecmp(sb->scope->layers[i], name) == 0)
            return 1;
    return 0;
}

const char *dapi_sandbox_path_layer_problem(const struct dapi_scope *scope, const char *dir,
                                            const char *path, char *out, size_t n)
{
    size_t dl = strlen(dir);
    if(!scope || scope->all)
        return NULL;
    const char *p = path;
    if(strncmp(p, dir, dl) == 0 && p[dl] == '/')
        p += dl;
    else
        p = ""; /* not inside dir at all: no layer of the scope */
    while(*p == '/')
        p++;
    size_t len = strcspn(p, "/");
    snprintf(out, n, "%.*s", (int)len, p);
    if(len && strlen(out) == len && dapi_scope_allows(scope, out))
        return NULL;
    if(!len)
        snprintf(out, n, "%s", "(the lake itself)");
    return out;
}

/* ---- CTEs: names in scope, and the size of the tree once they are inlined ------------ */

static void collect_ctes(struct walk *w, const struct dapi_jv *v, int depth)
{
    if(w->err)
        return;
    if(depth > MAX_DEPTH) {
        refuse(w, "the query is nested too deeply");
        return;
    }
    if(dapi_jv_type(v) == DAPI_J_ARRAY) {
        for(size_t i = 0, n = dapi_jv_array_size(v); i < n; i++)
            collect_ctes(w, dapi_jv_index(v, i), depth + 1);
        return;
    }
    if(dapi_jv_type(v) != DAPI_J_OBJECT)
        return;
    const struct dapi_jv *map = dapi_jv_get(dapi_jv_get(v, "cte_map"), "map");
    for(size_t i = 0, n = dapi_jv_array_size(map); i < n; i++) {
        const struct dapi_jv *e = dapi_jv_index(map, i);
        const struct dapi_jv *val = dapi_jv_get(e, "value");
        if(w->nctes == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 16;
            struct cte *nc = realloc(w->ctes, cap * sizeof *nc);
            if(!nc) {
                nomem(w);
                return;
            }
            w->ctes = nc;
            w->cap = cap;
        }
        struct cte *c = &w->ctes[w->nctes];
        memset(c, 0, sizeof *c);
        if(lower(str(e, "key"), c->name, sizeof c->name)) {
            refuse(w, "a CTE name is too long");
            return;
        }
        c->body = dapi_jv_get(val, "query");
        c->always = strcmp(str(val, "materialized"), "CTE_MATERIALIZE_ALWAYS") == 0;
        w->nctes++;
    }
    for(void *it = dapi_jv_iter(v); it; it = dapi_jv_iter_next(v, it))
        collect_ctes(w, dapi_jv_iter_value(it), depth + 1);
}

static int is_cte(const struct walk *w, const char *lname)
{
    for(size_t i = 0; i < w->nctes; i++)
        if(strcmp(w->ctes[i].name, lname) == 0)
            return 1;
    return 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s < a || s > DAPI_SANDBOX_MAX_NODES ? DAPI_SANDBOX_MAX_NODES + 1 : s;
}

static uint64_t tree_size(struct walk *w, const struct dapi_jv *v, int depth);

/* What a reference to the CTE called lname costs: its body again, unless materialised.
 * Names are matched without scoping, taking the largest body of that name: this can only
 * overestimate. A reference to a CTE still being measured is its recursive self: 1. */
static uint64_t cte_ref_cost(struct walk *w, const char *lname, int depth)
{
    uint64_t cost = 1;
    for(size_t i = 0; i < w->nctes; i++) {
        struct cte *c = &w->ctes[i];
        if(strcmp(c->name, lname) != 0 || c->always || c->state == 1)
            continue;
        if(c->state == 0) {
            c->state = 1;
            c->weight = tree_size(w, c->body, depth + 1);
            c->state = 2;
        }
        if(c->weight > cost)
            cost = c->weight;
    }
    return cost;
}

/* The cost of v if it names a CTE. Apart from tree_size (noinline) so that lname is not in
 * each of tree_size's recursive frames. */
__attribute__((noinline)) static uint64_t table_ref_cost(struct walk *w, const struct dapi_jv *v,
                                                         int depth)
{
    char lname[NAME_LEN];
    if(strcmp(str(v, "type"), "BASE_TABLE") != 0 || *str(v, "schema_name") ||
       lower(str(v, "table_name"), lname, sizeof lname))
        return 0;
    return cte_ref_cost(w, lname, depth);
}

/* depth counts the nesting of the tree with its CTEs inlined: each JSON level and each step
 * into a CTE's body. The node bound alone did not bound the recursion: a chain of CTEs, each
 * a deep expression that names the next (c0 AS (SELECT -(-(…(SELECT 1 FROM c1)…))), c1 AS
 * …), is walked depth first through every body before any count adds up. 23 such CTEs of
 * 900 levels (a 63 KB query, under the default --max-sql-bytes) overflowed the 8 MB stack of
 * the thread running dapi_engine_check and killed the process (SIGSEGV). Found by review
 * while writing tests/fuzz/fuzz_sandbox; its corpus keeps a small synthetic chain
 * (cte_chain_stack.json) that overflows the driver's 1 MB stack without this bound. */
static uint64_t tree_size(struct walk *w, const struct dapi_jv *v, int depth)
{
    uint64_t n = 0;
    if(depth > MAX_INLINED_DEPTH) {
        refuse(w, "the query is nested too deeply once its CTEs are expanded");
        return DAPI_SANDBOX_MAX_NODES + 1;
    }
    switch(dapi_jv_type(v)) {
    case DAPI_J_ARRAY:
        for(size_t i = 0, len = dapi_jv_array_size(v); i < len && n <= DAPI_SANDBOX_MAX_NODES; i++)
            n = sat_add(n, tree_size(w, dapi_jv_index(v, i), depth + 1));
        return n;
    case DAPI_J_OBJECT:
        n = sat_add(1, table_ref_cost(w, v, depth));
        for(void *it = dapi_jv_iter(v); it && n <= DAPI_SANDBOX_MAX_NODES;
            it = dapi_jv_iter_next(v, it))
            n = sat_add(n, tree_size(w, dapi_jv_iter_value(it), depth + 1));
        return n;
    default: return 0;
    }
}

/* ---- aggregation nested in aggregation ---------------------------------------------- */

/* Is v a call of an aggregate function? Apart (noinline) so that lname is not in each of
 * expr_kinds' recursive frames (see tree_size). */
__attribute__((noinline)) static int is_aggregate_call(const struct dapi_jv *v)
{
    char lname[NAME_LEN];
    return strcmp(str(v, "class"), "FUNCTION") == 0 &&
           lower(str(v, "function_name"), lname, sizeof lname) == 0 &&
           dapi_allow_has(dapi_aggregate, dapi_aggregate_n, lname);
}

/* What an expression of a query node holds, not counting its subqueries' own nodes: 1 an
 * aggregate call, 2 a subquery. depth continues the caller's (the stack it stands on). */
static int expr_kinds(const struct dapi_jv *v, int depth)
{
    int k = 0;
    if(depth > MAX_INLINED_DEPTH)
        return 3; /* (agg_depth refuses it) */
    if(dapi_jv_type(v) == DAPI_J_ARRAY) {
        for(size_t i = 0, n = dapi_jv_array_size(v); i < n && k != 3; i++)
            k |= expr_kinds(dapi_jv_index(v, i), depth + 1);
        return k;
    }
    if(dapi_jv_type(v) != DAPI_J_OBJECT)
        return 0;
    if(strcmp(str(v, "class"), "SUBQUERY") == 0)
        return 2;
    k = is_aggregate_call(v);
    for(void *it = dapi_jv_iter(v); it && k != 3; it = dapi_jv_iter_next(v, it))
        k |= expr_kinds(dapi_jv_iter_value(it), depth + 1);
    return k;
}

/* A query node's weight in the chain the planner's time grows with: 1 if it aggregates
 * (GROUP BY, HAVING, an aggregate call among its results), one more if its expressions hold
 * subqueries (a scalar subquery over an aggregate costs DuckDB about four times as much per
 * level as an aggregate does). */
__attribute__((noinline)) static int node_weight(const struct dapi_jv *node, int depth)
{
    static const char *const exprs[] = {"select_list", "where_clause", "having", "qualify",
                                        "group_expressions"};
    int k = 0;
    for(size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++)
        k |= expr_kinds(dapi_jv_get(node, exprs[i]), depth + 1);
    int aggregates = (k & 1) || dapi_jv_array_size(dapi_jv_get(node, "group_expressions")) > 0 ||
                     dapi_jv_type(dapi_jv_get(node, "having")) == DAPI_J_OBJECT ||
                     strcmp(str(node, "aggregate_handling"), "FORCE_AGGREGATES") == 0;
    return aggregates + ((k & 2) != 0);
}

static int agg_depth(struct walk *w, const struct dapi_jv *v, int depth);

/* The weight a reference to a CTE brings: its body's, unless materialised (matched by name
 * without scoping, the deepest body of that name: an overestimate). Apart (noinline) so that
 * lname is not in each of agg_depth's recursive frames. */
__attribute__((noinline)) static int cte_ref_agg(struct walk *w, const struct dapi_jv *v,
                                                 int depth)
{
    char lname[NAME_LEN];
    int d = 0;
    if(strcmp(str(v, "type"), "BASE_TABLE") != 0 || *str(v, "schema_name") ||
       lower(str(v, "table_name"), lname, sizeof lname))
        return 0;
    for(size_t i = 0; i < w->nctes; i++) {
        struct cte *c = &w->ctes[i];
        if(strcmp(c->name, lname) != 0 || c->always || c->agg_state == 1)
            continue;
        if(c->agg_state == 0) {
            c->agg_state = 1;
            c->agg = agg_depth(w, c->body, depth + 1);
            c->agg_state = 2;
        }
        if(c->agg > d)
            d = c->agg;
    }
    return d;
}

/* The greatest weight of the query nodes on one path of the tree, CTEs inlined. */
static int agg_depth(struct walk *w, const struct dapi_jv *v, int depth)
{
    int d = 0, self = 0;
    if(w->err)
        return 0;
    if(depth > MAX_INLINED_DEPTH) {
        refuse(w, "the query is nested too deeply once its CTEs are expanded");
        return 0;
    }
    switch(dapi_jv_type(v)) {
    case DAPI_J_ARRAY:
        for(size_t i = 0, n = dapi_jv_array_size(v); i < n && !w->err; i++) {
            int k = agg_depth(w, dapi_jv_index(v, i), depth + 1);
            d = k > d ? k : d;
        }
        return d;
    case DAPI_J_OBJECT:
        if(strcmp(str(v, "type"), "SELECT_NODE") == 0)
            self = node_weight(v, depth);
        d = cte_ref_agg(w, v, depth);
        for(void *it = dapi_jv_iter(v); it && !w->err; it = dapi_jv_iter_next(v, it)) {
            int k = agg_depth(w, dapi_jv_iter_value(it), depth + 1);
            d = k > d ? k : d;
        }
        return self + d;
    default: return 0;
    }
}

/* ---- relations joined ---------------------------------------------------------------- */

static uint64_t relations(struct walk *w, const struct dapi_jv *v, int depth);

/* The relations a BASE_TABLE v brings: 1, or, if it names a CTE, that CTE's body's (1 if
 * materialised or recursive; the largest body of that name: an overestimate). Apart
 * (noinline) so that lname is not in each of relations' recursive frames. */
__attribute__((noinline)) static uint64_t table_relations(struct walk *w, const struct dapi_jv *v,
                                                          int depth)
{
    char lname[NAME_LEN];
    if(*str(v, "schema_name") || lower(str(v, "table_name"), lname, sizeof lname))
        return 1;
    uint64_t n = 1;
    for(size_t i = 0; i < w->nctes; i++) {
        struct cte *c = &w->ctes[i];
        if(strcmp(c->name, lname) != 0 || c->always || c->rel_state == 1)
            continue;
        if(c->rel_state == 0) {
            c->rel_state = 1;
            c->rels = relations(w, c->body, depth + 1);
            c->rel_state = 2;
        }
        if(c->rels > n)
            n = c->rels;
    }
    return n;
}

/* The relations read below v, CTEs inlined (saturating past DAPI_SANDBOX_MAX_RELATIONS);
 * refuses a query node that reads more than DAPI_SANDBOX_MAX_JOINED. The CTE definitions
 * are checked where they stand but counted where they are read. */
static uint64_t relations(struct walk *w, const struct dapi_jv *v, int depth)
{
    uint64_t n = 0;
    if(w->err)
        return 0;
    if(depth > MAX_INLINED_DEPTH) {
        refuse(w, "the query is nested too deeply once its CTEs are expanded");
        return 0;
    }
    if(dapi_jv_type(v) == DAPI_J_ARRAY) {
        for(size_t i = 0, len = dapi_jv_array_size(v); i < len && !w->err; i++)
            n += relations(w, dapi_jv_index(v, i), depth + 1);
        return n > DAPI_SANDBOX_MAX_RELATIONS ? DAPI_SANDBOX_MAX_RELATIONS + 1 : n;
    }
    if(dapi_jv_type(v) != DAPI_J_OBJECT)
        return 0;
    const char *type = str(v, "type");
    if(strcmp(type, "BASE_TABLE") == 0)
        return table_relations(w, v, depth);
    n = strcmp(type, "TABLE_FUNCTION") == 0 || strcmp(type, "EXPRESSION_LIST") == 0;
    for(void *it = dapi_jv_iter(v); it && !w->err; it = dapi_jv_iter_next(v, it)) {
        uint64_t k = relations(w, dapi_jv_iter_value(it), depth + 1);
        if(strcmp(dapi_jv_iter_key(it), "cte_map") != 0)
            n += k;
    }
    if(n > DAPI_SANDBOX_MAX_RELATIONS)
        n = DAPI_SANDBOX_MAX_RELATIONS + 1;
    if(!w->err && strcmp(type, "SELECT_NODE") == 0 && n > DAPI_SANDBOX_MAX_JOINED)
        refuse(
            w,
            "the query joins too many relations for the planner: one SELECT reads %s%llu "
            "tables, table functions or VALUES lists (its subqueries and the CTEs it reads "
            "included), more than %d; split it, or mark CTEs AS MATERIALIZED",
            n > DAPI_SANDBOX_MAX_RELATIONS ? "more than " : "",
            (unsigned long long)(n > DAPI_SANDBOX_MAX_RELATIONS ? DAPI_SANDBOX_MAX_RELATIONS : n),
            DAPI_SANDBOX_MAX_JOINED);
    return n;
}

/* ---- functions ------------------------------------------------------------------------ */

/* Functions live in the system catalog; a qualified name may only point there. */
static int qualified_elsewhere(const struct dapi_jv *fn)
{
    const char *cat = str(fn, "catalog"), *sch = str(fn, "schema");
    return (*cat && strcasecmp(cat, "system") != 0) ||
           (*sch && strcasecmp(sch, "main") != 0 && strcasecmp(sch, "pg_catalog") != 0);
}

static void check_scalar(struct walk *w, const struct dapi_jv *fn)
{
    const char *name = str(fn, "function_name");
    char lname[NAME_LEN];
    if(qualified_elsewhere(fn)) {
        refuse(w, "function %s.%s() is not allowed: only the built-in functions can be called",
               str(fn, "schema"), name);
        return;
    }
    if(lower(name, lname, sizeof lname)) {
        refuse(w, "a function name is too long");
        return;
    }
    if(dapi_jv_type(dapi_jv_get(fn, "export_state")) == DAPI_J_TRUE) {
        refuse(w, "EXPORT_STATE is not allowed (%s)", name);
        return;
    }
    if(dapi_allow_has(dapi_allow_scalar, dapi_allow_scalar_n, lname))
        return;
    const char *why = dapi_refusal_reason(dapi_refuse_scalar, dapi_refuse_scalar_n, lname);
    if(!why && (dapi_allow_has(dapi_allow_lake_table, dapi_allow_lake_table_n, lname) ||
                dapi_allow_has(dapi_allow_pure_table, dapi_allow_pure_table_n, lname)))
        why = "is a table function: use it in FROM";
    else if(!why)
        why = dapi_refusal_reason(dapi_refuse_table, dapi_refuse_table_n, lname);
    if(why)
        refuse(w, "function %s() is not allowed: it %s", name, why);
    else
        refuse(w, "function %s() is not allowed: it is not on dapi's list of allowed functions",
               name);
}

static int add_path(struct walk *w, const char *p)
{
    char **np = realloc(w->sb->paths, (w->sb->npaths + 1) * sizeof *np);
    if(!np)
        return -1;
    w->sb->paths = np;
    if(!(np[w->sb->npaths] = strdup(p)))
        return -1;
    w->sb->npaths++;
    return 0;
}

/* A literal string argument, or NULL. */
static const char *literal_string(const struct dapi_jv *e)
{
    const struct dapi_jv *val = dapi_jv_get(e, "value");
    if(strcmp(str(e, "class"), "CONSTANT") != 0 || dapi_jv_type(val) != DAPI_J_OBJECT ||
       strcmp(str(dapi_jv_get(val, "type"), "id"), "VARCHAR") != 0 ||
       dapi_jv_type(dapi_jv_get(val, "is_null")) != DAPI_J_FALSE)
        return NULL;
    return dapi_jv_str(dapi_jv_get(val, "value"), NULL);
}

static void check_one_path(struct walk *w, const char *fn, const char *p)
{
    const char *problem = dapi_sandbox_path_problem(w->sb->data_dir, p);
    char layer[NAME_LEN];
    if(problem)
        refuse(w, "%s('%s') is not allowed: the path %s", fn, p, problem);
    else if(dapi_sandbox_path_layer_problem(w->sb->scope, w->sb->data_dir, p, layer, sizeof layer))
        forbid(w, layer); /* its files are another layer's (the engine vets real paths too) */
    else if(add_path(w, p))
        nomem(w);
}

/* The first argument of a table function that reads files: literal paths in the lake. */
static void check_file_args(struct walk *w, const struct dapi_jv *fn, const char *name)
{
    const struct dapi_jv *arg = dapi_jv_index(dapi_jv_get(fn, "children"), 0);
    const char *p = arg ? literal_string(arg) : NULL;
    if(p) {
        check_one_path(w, name, p);
        return;
    }
    if(arg && strcmp(str(arg, "class"), "FUNCTION") == 0 &&
       (strcmp(str(arg, "function_name"), "list_value") == 0 ||
        strcmp(str(arg, "function_name"), "list_pack") == 0)) {
        const struct dapi_jv *items = dapi_jv_get(arg, "children");
        size_t n = dapi_jv_array_size(items);
        for(size_t i = 0; i < n && !w->err; i++) {
            if(!(p = literal_string(dapi_jv_index(items, i))))
                break;
            check_one_path(w, name, p);
        }
        if(n > 0 && p)
            return;
    }
    refuse(w,
           "%s() is not allowed here: its file argument must be a literal string, or a "
           "list of literal strings, naming files inside the lake",
           name);
}

/* The option names an argument of a table function may give: DuckDB reads `name = value`
 * (an unqualified column on the left) and `value AS name` as options. Both are checked,
 * whichever DuckDB would use. */
static void check_option(struct walk *w, const char *fn, const char *opt)
{
    char lopt[NAME_LEN];
    if(!*opt)
        return;
    if(lower(opt, lopt, sizeof lopt) == 0 &&
       dapi_allow_has(dapi_allow_table_option, dapi_allow_table_option_n, lopt))
        return;
    const char *why = dapi_refusal_reason(dapi_refuse_table_option, dapi_refuse_table_option_n,
                                          lopt);
    if(why)
        refuse(w, "%s(%s = …) is not allowed: the option %s", fn, opt, why);
    else
        refuse(w, "%s(%s = …) is not allowed: it is not on dapi's list of allowed options", fn,
               opt);
}

static void check_table_options(struct walk *w, const struct dapi_jv *fn, const char *name)
{
    const struct dapi_jv *args = dapi_jv_get(fn, "children");
    for(size_t i = 0, n = dapi_jv_array_size(args); i < n && !w->err; i++) {
        const struct dapi_jv *a = dapi_jv_index(args, i);
        check_option(w, name, str(a, "alias"));
        const struct dapi_jv *left = dapi_jv_get(a, "left");
        const struct dapi_jv *names = dapi_jv_get(left, "column_names");
        if(!w->err && strcmp(str(a, "type"), "COMPARE_EQUAL") == 0 &&
           strcmp(str(left, "class"), "COLUMN_REF") == 0 && dapi_jv_array_size(names) == 1) {
            const char *col = dapi_jv_str(dapi_jv_index(names, 0), NULL);
            check_option(w, name, col ? col : "");
        }
    }
}

static void check_table_function(struct walk *w, const struct dapi_jv *fn)
{
    const char *name = str(fn, "function_name");
    char lname[NAME_LEN];
    if(qualified_elsewhere(fn)) {
        refuse(w,
               "table function %s.%s() is not allowed: only the built-in functions can be "
               "called",
               str(fn, "schema"), name);
        return;
    }
    if(lower(name, lname, sizeof lname)) {
        refuse(w, "a function name is too long");
        return;
    }
    if(dapi_allow_has(dapi_allow_pure_table, dapi_allow_pure_table_n, lname)) {
        check_table_options(w, fn, name);
        return;
    }
    if(dapi_allow_has(dapi_allow_lake_table, dapi_allow_lake_table_n, lname)) {
        check_file_args(w, fn, name);
        if(!w->err)
            check_table_options(w, fn, name);
        return;
    }
    const char *why = dapi_refusal_reason(dapi_refuse_table, dapi_refuse_table_n, lname);
    if(why)
        refuse(w, "table function %s() is not allowed: it %s", name, why);
    else
        refuse(w,
               "table function %s() is not allowed: it is not on dapi's list of allowed "
               "functions",
               name);
}

/* ---- the walk ------------------------------------------------------------------------- */

static void check(struct walk *w, const struct dapi_jv *v, int depth);

static void check_members(struct walk *w, const struct dapi_jv *v, int depth, const char *skip)
{
    for(void *it = dapi_jv_iter(v); it && !w->err; it = dapi_jv_iter_next(v, it))
        if(!skip || strcmp(dapi_jv_iter_key(it), skip) != 0)
            check(w, dapi_jv_iter_value(it), depth + 1);
}

static void check_expression(struct walk *w, const struct dapi_jv *v, const char *cls, int depth)
{
    static const char *const ok[] = {"BETWEEN",     "CASE",
                                     "CAST",        "COLLATE",
                                     "COLUMN_REF",  "COMPARISON",
                                     "CONJUNCTION", "CONSTANT",
                                     "DEFAULT",     "FUNCTION",
                                     "LAMBDA",      "LAMBDA_REF",
                                     "OPERATOR",    "POSITIONAL_REFERENCE",
                                     "STAR",        "SUBQUERY",
                                     "WINDOW"};
    size_t i = 0;
    if(strcmp(cls, "PARAMETER") == 0) {
        /* a named parameter is a value bound by the engine, never text: allowed when the
         * request binds parameters; positional ones ($1, ?) never */
        const char *id = str(v, "identifier");
        if(!w->sb->named_params)
            refuse(w, "query parameters ($1, ?, $name) are not supported without \"params\"");
        else if(!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') || *id == '_'))
            refuse(w, "positional query parameters ($1, ?) are not supported: name them "
                      "($name) and bind them by name in \"params\"");
        return;
    }
    while(i < sizeof ok / sizeof ok[0] && strcmp(ok[i], cls) != 0)
        i++;
    if(i == sizeof ok / sizeof ok[0]) {
        refuse(w, "this kind of expression is not supported (%s)", cls);
        return;
    }
    if(strcmp(cls, "FUNCTION") == 0 || strcmp(cls, "WINDOW") == 0)
        check_scalar(w, v);
    /* calls nested in calls: list, struct and map constructors bind in cubic time */
    int call = strcmp(cls, "FUNCTION") == 0 &&
               dapi_jv_type(dapi_jv_get(v, "is_operator")) != DAPI_J_TRUE;
    if(call && ++w->calls > DAPI_SANDBOX_MAX_CALL_DEPTH && !w->err)
        refuse(w,
               "the query nests function calls (list, struct or map literals among them) "
               "more than %d deep",
               DAPI_SANDBOX_MAX_CALL_DEPTH);
    int lambda = strcmp(cls, "LAMBDA") == 0;
    if(lambda && ++w->lambdas > DAPI_SANDBOX_MAX_LAMBDA_DEPTH && !w->err)
        refuse(w, "the query nests lambdas (x -> …) more than %d deep",
               DAPI_SANDBOX_MAX_LAMBDA_DEPTH);
    check_members(w, v, depth, NULL);
    w->calls -= call;
    w->lambdas -= lambda;
}

static void check_base_table(struct walk *w, const struct dapi_jv *v)
{
    const char *cat = str(v, "catalog_name"), *sch = str(v, "schema_name");
    const char *name = str(v, "table_name");
    char lname[NAME_LEN];
    if(*cat && strcasecmp(cat, "memory") != 0) {
        refuse(w, "table \"%s\".\"%s\".\"%s\" is not a lake table", cat, sch, name);
        return;
    }
    if(*sch) {
        char real[NAME_LEN];
        if(!schema_in_scope(w, sch))
            forbid(w, sch); /* before the lookup: no hint whether such a layer exists */
        else if(!w->sb->is_layer(w->sb->arg, sch))
            refuse(w, "table \"%s\".\"%s\" is not a lake table (no layer \"%s\")", sch, name, sch);
        else if(scoped(w) && w->sb->table_problem &&
                w->sb->table_problem(w->sb->arg, w->sb->scope, sch, name, real, sizeof real))
            forbid(w, real); /* its files are another layer's, through a link */
        return;
    }
    /* Unqualified: only the query's own CTEs. Anything else would be resolved by DuckDB in
     * its own catalog (system views) or as a file path (replacement scans). */
    if(lower(name, lname, sizeof lname) == 0 && is_cte(w, lname) && !strpbrk(lname, "./\\:") &&
       !w->sb->is_catalog_name(w->sb->arg, lname))
        return;
    refuse(w, "table \"%s\" is not allowed: name lake tables as \"layer\".\"table\"", name);
}

static int is_table_ref(const char *type)
{
    static const char *const refs[] = {
        "BASE_TABLE", "JOIN",     "SUBQUERY",    "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST",
        "PIVOT",      "SHOW_REF", "COLUMN_DATA", "DELIM_GET",      "CTE",   "BOUND_TABLE_REF",
        "INVALID"};
    for(size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        if(strcmp(refs[i], type) == 0)
            return 1;
    return 0;
}

static void check_table_ref(struct walk *w, const struct dapi_jv *v, const char *type, int depth)
{
    if(strcmp(type, "BASE_TABLE") == 0) {
        check_base_table(w, v);
        check_members(w, v, depth, NULL); /* at_clause */
    } else if(strcmp(type, "TABLE_FUNCTION") == 0) {
        const struct dapi_jv *fn = dapi_jv_get(v, "function");
        if(strcmp(str(fn, "class"), "FUNCTION") != 0) {
            refuse(w, "this kind of table function call is not supported");
            return;
        }
        check_table_function(w, fn);
        /* the arguments are ordinary expressions (named ones are `name = value`) */
        check_members(w, fn, depth + 1, NULL);
        check_members(w, v, depth, "function");
    } else if(strcmp(type, "JOIN") == 0 || strcmp(type, "SUBQUERY") == 0 ||
              strcmp(type, "EMPTY") == 0 || strcmp(type, "EXPRESSION_LIST") == 0 ||
              strcmp(type, "PIVOT") == 0) {
        check_members(w, v, depth, NULL);
    } else if(strcmp(type, "SHOW_REF") == 0) {
        refuse(w, "DESCRIBE, SHOW and SUMMARIZE are not supported");
    } else {
        refuse(w, "this kind of table reference is not supported (%s)", type);
    }
}

static void check(struct walk *w, const struct dapi_jv *v, int depth)
{
    if(w->err)
        return;
    if(depth > MAX_DEPTH) {
        refuse(w, "the query is nested too deeply");
        return;
    }
    switch(dapi_jv_type(v)) {
    case DAPI_J_ARRAY:
        for(size_t i = 0, n = dapi_jv_array_size(v); i < n && !w->err; i++)
            check(w, dapi_jv_index(v, i), depth + 1);
        return;
    case DAPI_J_OBJECT: {
        const char *cls = dapi_jv_str(dapi_jv_get(v, "class"), NULL);
        const char *type = dapi_jv_str(dapi_jv_get(v, "type"), NULL);
        if(cls)
            check_expression(w, v, cls, depth);
        else if(type && is_table_ref(type))
            check_table_ref(w, v, type, depth);
        else
            check_members(w, v, depth, NULL);
        return;
    }
    default: return;
    }
}

/* ---- entry points --------------------------------------------------------------------- */

/* Does the JSON text (valid: parsed already) hold a NUL inside a string? In valid JSON a
 * backslash occurs only inside strings and always starts an escape, and "\u0000" is the only
 * way to write a NUL, so scanning the escapes is enough. */
static int has_nul_escape(const char *s, size_t n)
{
    for(size_t i = 0; i + 5 < n; i++) {
        if(s[i] != '\\')
            continue;
        if(s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* the escaped character: "\\u0000" is a backslash and "u0000" */
    }
    return 0;
}

const char *dapi_sandbox_path_problem(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    if(strncmp(path, dir, n) != 0 || path[n] != '/')
        return "is not inside the lake (give the absolute path of a file under the lake)";
    if(strchr(path, '\\'))
        return "contains a backslash";
    for(const char *p = path + n; *p;) {
        while(*p == '/')
            p++;
        if(*p == '.')
            return "names a hidden file or a parent directory";
        while(*p && *p != '/')
            p++;
    }
    return NULL;
}

/* DuckDB writes the constants of non-finite doubles (1e400, 'inf'::DOUBLE) as bare NaN,
 * Infinity and -Infinity, which are not JSON. Their value means nothing to the sandbox, so
 * a copy with each such token outside strings overwritten by a 0 and blanks is what gets
 * parsed. NULL if there is none (parse tree itself), or on OOM (*oom set). */
static char *finite_copy(const char *tree, size_t len, int *oom)
{
    char *out = NULL;
    int in_str = 0;
    *oom = 0;
    for(size_t i = 0; i < len; i++) {
        char c = tree[i];
        if(in_str) {
            if(c == '\\')
                i++;
            else if(c == '"')
                in_str = 0;
            continue;
        }
        if(c == '"') {
            in_str = 1;
            continue;
        }
        size_t n = len - i >= 8 && memcmp(tree + i, "Infinity", 8) == 0 ? 8
                   : len - i >= 3 && memcmp(tree + i, "NaN", 3) == 0    ? 3
                                                                        : 0;
        if(!n)
            continue;
        if(!out && !(out = malloc(len + 1))) {
            *oom = 1;
            return NULL;
        }
        if(out && tree != out) {
            memcpy(out, tree, len);
            out[len] = '\0';
            tree = out;
        }
        out[i] = '0';
        memset(out + i + 1, ' ', n - 1);
        i += n - 1;
    }
    return out;
}

enum dapi_err dapi_sandbox_check(struct dapi_sandbox *sb, const char *tree, size_t len, char **msg)
{
    struct walk w = {.sb = sb};
    struct dapi_jv *root = NULL;
    char err[256];
    *msg = NULL;
    sb->paths = NULL;
    sb->npaths = 0;
    int oom;
    char *finite = finite_copy(tree, len, &oom);
    if(oom) {
        w.err = DAPI_ERR_NOMEM;
        goto out;
    }
    enum dapi_err parsed = dapi_jv_parse_reals(finite ? finite : tree, len, MAX_DEPTH, &root, err,
                                               sizeof err);
    free(finite);
    if(parsed) {
        refuse(&w, "the query is too complex to check");
        goto out;
    }
    /* The checks read names as C strings, up to the first NUL, while DuckDB would use the
     * whole name: the table "a\u0000" passed as the CTE "a" (found by tests/fuzz/fuzz_sandbox),
     * "range\u0000x" as range(), "lake1\u0000x" as the layer lake1, and a path
     * "/lake/a\u0000/../../x" as "/lake/a". DuckDB's parser writes no NUL into the tree (the
     * SQL is a C string and it has no escape for NUL), so such a tree is refused, not read. */
    if(has_nul_escape(tree, len)) {
        refuse(&w, "the query cannot be checked: a name or string holds a NUL character");
        goto out;
    }
    if(dapi_jv_type(dapi_jv_get(root, "error")) != DAPI_J_FALSE) {
        const char *why = str(root, "error_message");
        if(strstr(why, "Only SELECT"))
            refuse(&w, "only read-only queries (SELECT, WITH, VALUES, FROM) are allowed");
        else
            refuse(&w, "%s", *why ? why : "the query cannot be checked");
        goto out;
    }
    const struct dapi_jv *stmts = dapi_jv_get(root, "statements");
    if(dapi_jv_array_size(stmts) != 1) {
        refuse(&w, "only one statement per query is allowed");
        goto out;
    }
    collect_ctes(&w, stmts, 0);
    if(!w.err && tree_size(&w, stmts, 0) > DAPI_SANDBOX_MAX_NODES)
        refuse(&w,
               "the query is too large once its CTEs are expanded (more than %d nodes); "
               "mark CTEs used many times AS MATERIALIZED",
               DAPI_SANDBOX_MAX_NODES);
    if(!w.err && agg_depth(&w, stmts, 0) > DAPI_SANDBOX_MAX_AGG_DEPTH && !w.err)
        refuse(&w,
               "the query nests aggregation and subqueries too deeply for the planner (GROUP "
               "BY, HAVING or aggregate functions in subqueries and in the CTEs they read: "
               "more than %d levels, a scalar subquery counting as one more); mark some CTEs "
               "AS MATERIALIZED",
               DAPI_SANDBOX_MAX_AGG_DEPTH);
    if(!w.err && relations(&w, stmts, 0) > DAPI_SANDBOX_MAX_RELATIONS && !w.err)
        refuse(&w,
               "the query reads too many relations for the planner (tables, table functions "
               "and VALUES lists, CTEs inlined: more than %d in all)",
               DAPI_SANDBOX_MAX_RELATIONS);
    if(!w.err)
        check(&w, stmts, 0);
out:
    dapi_jv_free(root);
    free(w.ctes);
    if(w.err) {
        dapi_sandbox_free(sb);
        *msg = w.msg;
    }
    return w.err;
}

void dapi_sandbox_free(struct dapi_sandbox *sb)
{
    for(size_t i = 0; i < sb->npaths; i++)
        free(sb->paths[i]);
    free(sb->paths);
    sb->paths = NULL;
    sb->npaths = 0;
}
