/* Named, parameterised endpoints (docs/endpoints.md): the definitions of --endpoints-file,
 * checked when the file loads (each SQL prepared once by the engine, its parameters declared
 * and typed, the layers it reads found out), and the values of one call turned from query
 * text into the typed JSON the engine binds (docs/api.md "Bind parameters"). A loaded set
 * never changes: a reload makes a new one, and readers keep a reference to theirs. */
#ifndef DAPI_ENDPOINTS_H
#define DAPI_ENDPOINTS_H

#include <stddef.h>
#include <stdint.h>
#include <regex.h>
#include "base/scope.h"
#include "dapi/err.h"

struct dapi_econn;
struct dapi_engine;

enum dapi_ptype {
    DAPI_PT_VARCHAR,
    DAPI_PT_INTEGER,
    DAPI_PT_BIGINT,
    DAPI_PT_DOUBLE,
    DAPI_PT_DECIMAL,
    DAPI_PT_BOOLEAN,
    DAPI_PT_DATE,
    DAPI_PT_TIMESTAMP,
};

/* The name of a type as the file writes it ("varchar" …). */
const char *dapi_ptype_name(enum dapi_ptype t);

struct dapi_eparam {
    char *name, *description; /* description may be NULL */
    enum dapi_ptype type;
    int list;     /* `type: varchar[]`: the argument may repeat (country=US&country=DE) */
    int required; /* no default: a call without it is refused */
    char **defs;  /* the default as text (one, or a list's), or NULL when none */
    size_t ndefs;
    int has_min, has_max; /* numeric types */
    double min, max;
    char **enums; /* allowed values, as text; NULL when any */
    size_t nenums;
    char *pattern; /* POSIX extended regular expression the whole value must match */
    regex_t re;
    int64_t max_length; /* characters; 0 = no limit */
};

struct dapi_endpoint {
    char *name, *description, *sql;
    struct dapi_eparam *params;
    size_t nparams;
    int64_t cache_s; /* result reuse max age for its calls (`cache:`); -1 = the server's */
    int line;        /* where it is defined */
    char **layers;   /* the layers its SQL reads (sorted) */
    size_t nlayers;
};

struct dapi_endpoints;

/* Loads and checks path with a connection of the engine: every endpoint's SQL passes the
 * sandbox and binds against the lake as it is now, with exactly its declared parameters.
 * DAPI_OK with *out (dapi_endpoints_unref), or an error with a one-line reason in err naming
 * the file, the line and the endpoint. */
enum dapi_err dapi_endpoints_load(const char *path, struct dapi_econn *conn,
                                  struct dapi_engine *engine, struct dapi_endpoints **out,
                                  char *err, size_t errlen) __attribute__((warn_unused_result));
void dapi_endpoints_ref(struct dapi_endpoints *e);
void dapi_endpoints_unref(struct dapi_endpoints *e);
size_t dapi_endpoints_count(const struct dapi_endpoints *e);
const struct dapi_endpoint *dapi_endpoints_at(const struct dapi_endpoints *e, size_t i);
const struct dapi_endpoint *dapi_endpoints_find(const struct dapi_endpoints *e, const char *name);

/* May a key of scope call ep (does scope allow every layer ep reads)? */
int dapi_endpoint_allowed(const struct dapi_endpoint *ep, const struct dapi_scope *scope);

/* One call's n arguments (names[i]=values[i], in order, repeated names for a list): the
 * typed JSON object of every declared parameter (a default, or null for an optional one
 * without), owned; or NULL with *why (owned) naming the parameter and the rule broken, *nomem
 * set when memory ran out. Arguments named in skip (NULL-terminated, e.g. "format") are not
 * parameters. */
char *dapi_endpoint_bind(const struct dapi_endpoint *ep, const char *const *names,
                         const char *const *values, size_t n, const char *const *skip, char **why,
                         int *nomem);

/* The JSON description of the endpoints scope may call (GET /api/endpoints), owned; NULL
 * without memory. */
char *dapi_endpoints_json(const struct dapi_endpoints *e, const struct dapi_scope *scope,
                          size_t *len);

/* The path entries of the served OpenAPI document for the endpoints of e that scope may call
 * ("/api/endpoints/<name>": {"get": …}, each followed by a comma), owned; "" for none; NULL
 * without memory. */
char *dapi_endpoints_openapi(const struct dapi_endpoints *e, const struct dapi_scope *scope,
                             size_t *len);

#endif
