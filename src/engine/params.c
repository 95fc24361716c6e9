/* Bind parameters (docs/api.md "Bind parameters"): the values of a query's named parameters
 * ($name), given as a JSON object, bound to its prepared statement as DuckDB values — never
 * spliced into its text. Every parameter of the statement must have a value, every value a
 * parameter, and each value must suit the type DuckDB infers for its parameter; otherwise
 * DAPI_ERR_PARAM with a message naming the parameter and the rule. */
#include "engine/engine_int.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/jsonin.h"

#define MAX_PARAMS_DEPTH 4 /* {"name": [values]} */

static char *param_msg(const char *fmt, const char *name, const char *what)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    dapi_buf_addf(&b, fmt, name, what ? what : "");
    return dapi_buf_take(&b, NULL);
}

/* What a JSON value may be for a parameter of DuckDB type t: 0 = any, else a rule. */
enum kind { K_ANY, K_INT, K_NUMBER, K_BOOL, K_STRING, K_LIST, K_TEXT };

static enum kind kind_of(duckdb_type t)
{
    switch(t) {
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT: return K_INT;
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_DECIMAL: return K_NUMBER;
    case DUCKDB_TYPE_BOOLEAN: return K_BOOL;
    case DUCKDB_TYPE_VARCHAR: return K_STRING;
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY: return K_LIST;
    case DUCKDB_TYPE_DATE:
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIME_TZ:
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_TZ:
    case DUCKDB_TYPE_TIMESTAMP_S:
    case DUCKDB_TYPE_TIMESTAMP_MS:
    case DUCKDB_TYPE_TIMESTAMP_NS:
    case DUCKDB_TYPE_INTERVAL:
    case DUCKDB_TYPE_UUID: return K_TEXT;
    default: return K_ANY; /* not inferred (SELECT $x), or a type without a JSON form */
    }
}

static const char *const kind_rule[] = {
    [K_ANY] = "",
    [K_INT] = "an integer",
    [K_NUMBER] = "a number",
    [K_BOOL] = "true or false",
    [K_STRING] = "a string",
    [K_LIST] = "a list",
    [K_TEXT] = "a string",
};

static int fits(enum kind k, enum dapi_jtype j)
{
    switch(k) {
    case K_ANY: return 1;
    case K_INT: return j == DAPI_J_INT;
    case K_NUMBER: return j == DAPI_J_INT || j == DAPI_J_REAL;
    case K_BOOL: return j == DAPI_J_TRUE || j == DAPI_J_FALSE;
    case K_STRING:
    case K_TEXT: return j == DAPI_J_STRING;
    case K_LIST: return j == DAPI_J_ARRAY;
    }
    return 0;
}

/* A scalar JSON value as a DuckDB value; NULL for an object or an array. */
static duckdb_value scalar(const struct dapi_jv *v)
{
    size_t len;
    const char *s;
    switch(dapi_jv_type(v)) {
    case DAPI_J_STRING: s = dapi_jv_str(v, &len); return duckdb_create_varchar_length(s, len);
    case DAPI_J_INT: return duckdb_create_int64(dapi_jv_int(v));
    case DAPI_J_REAL: return duckdb_create_double(dapi_jv_real(v));
    case DAPI_J_TRUE: return duckdb_create_bool(true);
    case DAPI_J_FALSE: return duckdb_create_bool(false);
    case DAPI_J_NULL: return duckdb_create_null_value();
    default: return NULL;
    }
}

/* The DuckDB value of a parameter: a scalar, or a list of scalars of one kind (integers
 * and numbers together make DOUBLE; nulls go with anything; an empty list is VARCHAR[]).
 * NULL with *why set when it cannot be one. */
static duckdb_value make_value(const struct dapi_jv *v, const char **why)
{
    if(dapi_jv_type(v) == DAPI_J_OBJECT) {
        *why = "must be a string, a number, true, false, null or a list of those";
        return NULL;
    }
    if(dapi_jv_type(v) != DAPI_J_ARRAY)
        return scalar(v);
    size_t n = dapi_jv_array_size(v);
    duckdb_type t = DUCKDB_TYPE_INVALID;
    for(size_t i = 0; i < n; i++) {
        enum dapi_jtype j = dapi_jv_type(dapi_jv_index(v, i));
        duckdb_type et = j == DAPI_J_STRING                      ? DUCKDB_TYPE_VARCHAR
                         : j == DAPI_J_INT                       ? DUCKDB_TYPE_BIGINT
                         : j == DAPI_J_REAL                      ? DUCKDB_TYPE_DOUBLE
                         : j == DAPI_J_TRUE || j == DAPI_J_FALSE ? DUCKDB_TYPE_BOOLEAN
                         : j == DAPI_J_NULL                      ? DUCKDB_TYPE_INVALID
                                                                 : DUCKDB_TYPE_SQLNULL;
        if(et == DUCKDB_TYPE_SQLNULL) {
            *why = "is a list: its elements must be strings, numbers, true, false or null";
            return NULL;
        }
        if(et == DUCKDB_TYPE_INVALID || et == t)
            continue;
        if(t == DUCKDB_TYPE_INVALID)
            t = et;
        else if((t == DUCKDB_TYPE_BIGINT && et == DUCKDB_TYPE_DOUBLE) ||
                (t == DUCKDB_TYPE_DOUBLE && et == DUCKDB_TYPE_BIGINT))
            t = DUCKDB_TYPE_DOUBLE;
        else {
            *why = "is a list: its elements must all be of one type";
            return NULL;
        }
    }
    if(t == DUCKDB_TYPE_INVALID)
        t = DUCKDB_TYPE_VARCHAR;
    duckdb_value *items = calloc(n ? n : 1, sizeof *items);
    duckdb_logical_type lt = duckdb_create_logical_type(t);
    duckdb_value out = NULL;
    size_t made = 0;
    for(; items && made < n; made++) {
        const struct dapi_jv *e = dapi_jv_index(v, made);
        if(t == DUCKDB_TYPE_DOUBLE && dapi_jv_type(e) == DAPI_J_INT)
            items[made] = duckdb_create_double((double)dapi_jv_int(e));
        else if(dapi_jv_type(e) == DAPI_J_NULL)
            items[made] = duckdb_create_null_value();
        else
            items[made] = scalar(e);
        if(!items[made])
            break;
    }
    if(items && made == n)
        out = duckdb_create_list_value(lt, items, n);
    for(size_t i = 0; items && i < made; i++)
        duckdb_destroy_value(&items[i]);
    free(items);
    duckdb_destroy_logical_type(&lt);
    if(!out)
        *why = "could not be made into a value";
    return out;
}

/* Whether value v fits type lt exactly as DuckDB would cast it (TRY_CAST): a date that is
 * no date, 300 for a TINYINT. 1 = fits or cannot be told, 0 = does not. */
static int casts(struct dapi_econn *c, duckdb_logical_type lt, duckdb_value v)
{
    char *tn = engine_type_name(lt);
    struct dapi_buf b;
    duckdb_prepared_statement st = NULL;
    duckdb_result res;
    int ok = 1;
    dapi_buf_init(&b, 4096);
    dapi_buf_addf(&b, "SELECT $1 IS NULL OR TRY_CAST($1 AS %s) IS NOT NULL", tn ? tn : "");
    if(tn && b.data && duckdb_prepare(c->con, b.data, &st) == DuckDBSuccess &&
       duckdb_bind_value(st, 1, v) == DuckDBSuccess) {
        /* (a result is made, to be destroyed, whether the execution succeeds or not) */
        if(duckdb_execute_prepared(st, &res) == DuckDBSuccess)
            ok = duckdb_value_boolean(&res, 0, 0);
        duckdb_destroy_result(&res);
    }
    if(st)
        duckdb_destroy_prepare(&st);
    dapi_buf_free(&b);
    free(tn);
    return ok;
}

/* The DECIMAL value of lt's width and scale that text (len bytes: a JSON number as the client
 * wrote it) is when DuckDB casts it, or NULL if it does not cast (out of range) or cannot be
 * made. Bound as it is, every digit counts: a double keeps about 16 of a DECIMAL(38,10), and
 * 0.1 is not 0.1; bound as text, the parameter would be a VARCHAR where the query uses it. */
static duckdb_value decimal_value(struct dapi_econn *c, duckdb_logical_type lt, const char *text,
                                  size_t len)
{
    duckdb_decimal d = {duckdb_decimal_width(lt), duckdb_decimal_scale(lt), {0, 0}};
    duckdb_type phys = duckdb_decimal_internal_type(lt);
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT TRY_CAST($1 AS DECIMAL(%u,%u))", (unsigned)d.width,
             (unsigned)d.scale);
    duckdb_prepared_statement st = NULL;
    duckdb_value in = duckdb_create_varchar_length(text, len), out = NULL;
    duckdb_result res;
    if(in && duckdb_prepare(c->con, sql, &st) == DuckDBSuccess &&
       duckdb_bind_value(st, 1, in) == DuckDBSuccess) {
        if(duckdb_execute_prepared(st, &res) == DuckDBSuccess) {
            duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
            duckdb_vector v = chunk ? duckdb_data_chunk_get_vector(chunk, 0) : NULL;
            uint64_t *valid = v ? duckdb_vector_get_validity(v) : NULL;
            const void *p = v ? duckdb_vector_get_data(v) : NULL;
            if(p && duckdb_data_chunk_get_size(chunk) == 1 &&
               (!valid || duckdb_validity_row_is_valid(valid, 0))) {
                int64_t small = phys == DUCKDB_TYPE_SMALLINT  ? *(const int16_t *)p
                                : phys == DUCKDB_TYPE_INTEGER ? *(const int32_t *)p
                                : phys == DUCKDB_TYPE_BIGINT  ? *(const int64_t *)p
                                                              : 0;
                if(phys == DUCKDB_TYPE_HUGEINT)
                    d.value = *(const duckdb_hugeint *)p;
                else
                    d.value = (duckdb_hugeint){(uint64_t)small, small < 0 ? -1 : 0};
                if(phys == DUCKDB_TYPE_SMALLINT || phys == DUCKDB_TYPE_INTEGER ||
                   phys == DUCKDB_TYPE_BIGINT || phys == DUCKDB_TYPE_HUGEINT)
                    out = duckdb_create_decimal(d);
            }
            if(chunk)
                duckdb_destroy_data_chunk(&chunk);
        }
        duckdb_destroy_result(&res);
    }
    if(st)
        duckdb_destroy_prepare(&st);
    if(in)
        duckdb_destroy_value(&in);
    return out;
}

/* An integer (text, len bytes: its twin's digits, -?digits; beyond int64 it was read as a
 * real by dapi_jv_parse_wide) as a value of integer type t — HUGEINT, UHUGEINT or UBIGINT —
 * or NULL when t cannot hold it (out of range; and every other type). Parsed here, digit by
 * digit, into 128 bits. */
static duckdb_value wide_int_value(duckdb_type t, const char *text, size_t len)
{
    int neg = len && text[0] == '-';
    unsigned __int128 mag = 0, max = ~(unsigned __int128)0;
    for(size_t i = (size_t)neg; i < len; i++) {
        unsigned d = (unsigned)(text[i] - '0');
        if(d > 9 || mag > (max - d) / 10)
            return NULL; /* not digits, or beyond 128 bits */
        mag = mag * 10 + d;
    }
    unsigned __int128 top = (unsigned __int128)1 << 127; /* |HUGEINT min| */
    if(t == DUCKDB_TYPE_HUGEINT && (neg ? mag <= top : mag < top)) {
        unsigned __int128 u = neg ? ~mag + 1 : mag; /* two's complement */
        return duckdb_create_hugeint((duckdb_hugeint){(uint64_t)u, (int64_t)(u >> 64)});
    }
    if(t == DUCKDB_TYPE_UHUGEINT && (!neg || mag == 0))
        return duckdb_create_uhugeint((duckdb_uhugeint){(uint64_t)mag, (uint64_t)(mag >> 64)});
    if(t == DUCKDB_TYPE_UBIGINT && (!neg || mag == 0) && mag <= UINT64_MAX)
        return duckdb_create_uint64((uint64_t)mag);
    return NULL;
}

/* -?digits: the text of an integer. */
static int integer_text(const char *s, size_t len)
{
    size_t neg = len && s[0] == '-';
    return len > neg && strspn(s + neg, "0123456789") == len - neg;
}

/* The list of lt's child type that the JSON list v is, built element by element from its
 * twin x's digits when that child type takes more digits than a double or an int64 holds:
 * DECIMAL (DuckDB's cast of the digits), HUGEINT, UHUGEINT, UBIGINT (the integers parsed
 * exactly). NULL for another child type, another element than a number or null, one that
 * does not fit, or no twin: then the list goes the ordinary way (make_value) and its check. */
static duckdb_value exact_list(struct dapi_econn *c, duckdb_logical_type lt,
                               const struct dapi_jv *v, const struct dapi_jv *x)
{
    duckdb_logical_type child = duckdb_list_type_child_type(lt);
    duckdb_type ct = child ? duckdb_get_type_id(child) : DUCKDB_TYPE_INVALID;
    size_t n = dapi_jv_array_size(v), made = 0;
    duckdb_value *items = calloc(n ? n : 1, sizeof *items), out = NULL;
    int wide = ct == DUCKDB_TYPE_HUGEINT || ct == DUCKDB_TYPE_UHUGEINT ||
               ct == DUCKDB_TYPE_UBIGINT;
    if((ct == DUCKDB_TYPE_DECIMAL || wide) && items) {
        for(; made < n; made++) {
            const struct dapi_jv *e = dapi_jv_index(v, made);
            size_t len;
            const char *digits = dapi_jv_numtext(dapi_jv_index(x, made), &len);
            enum dapi_jtype j = dapi_jv_type(e);
            if(j == DAPI_J_NULL)
                items[made] = duckdb_create_null_value();
            else if((j == DAPI_J_INT || j == DAPI_J_REAL) && digits)
                items[made] = wide ? wide_int_value(ct, digits, len) /* (NULL: not an integer) */
                                   : decimal_value(c, child, digits, len);
            else
                items[made] = NULL;
            if(!items[made])
                break;
        }
        if(made == n)
            out = duckdb_create_list_value(child, items, n);
    }
    for(size_t i = 0; items && i < made; i++)
        duckdb_destroy_value(&items[i]);
    free(items);
    if(child)
        duckdb_destroy_logical_type(&child);
    return out;
}

/* "parameter 'name' <rule>: the query uses $name as <lt>"; rule NULL: "is not a valid <lt>". */
static char *typed_msg(const char *name, const char *rule, duckdb_logical_type lt)
{
    char *tn = engine_type_name(lt);
    struct dapi_buf b;
    dapi_buf_init(&b, 4096);
    dapi_buf_addf(&b, "parameter '%s' ", name);
    if(rule)
        dapi_buf_adds(&b, rule);
    else
        dapi_buf_addf(&b, "is not a valid %s", tn ? tn : "value");
    dapi_buf_addf(&b, ": the query uses $%s as %s", name, tn ? tn : "?");
    free(tn);
    return dapi_buf_take(&b, NULL);
}

/* Binds parameter i (1-based) of st, named name, to the JSON value v; x is v's twin from
 * dapi_jv_parse_numtext (its numbers as their text), or NULL. */
static enum dapi_err bind_one(struct dapi_econn *c, duckdb_prepared_statement st, idx_t i,
                              const char *name, const struct dapi_jv *v, const struct dapi_jv *x,
                              char **msg)
{
    const char *why = NULL;
    duckdb_logical_type lt = duckdb_param_logical_type(st, i);
    duckdb_type t = lt ? duckdb_get_type_id(lt) : DUCKDB_TYPE_INVALID;
    enum kind k = kind_of(t);
    enum dapi_err result = DAPI_OK;
    duckdb_value dv = NULL;
    size_t xlen;
    const char *digits = dapi_jv_numtext(x, &xlen);
    /* an integer beyond int64 (a real here, its digits in the twin): for an integer type, or
     * HUGEINT where the type is not inferred; never through a double */
    int wide = dapi_jv_type(v) == DAPI_J_REAL && digits && integer_text(digits, xlen) &&
               (k == K_INT || k == K_ANY);
    if(dapi_jv_type(v) != DAPI_J_NULL && !fits(k, dapi_jv_type(v)) && !wide) {
        char rule[64];
        snprintf(rule, sizeof rule, "must be %s", kind_rule[k]);
        *msg = typed_msg(name, rule, lt);
        result = DAPI_ERR_PARAM;
        goto out;
    }
    int exact = 0; /* dv is already of lt's type, cast by DuckDB: nothing left to check */
    if(wide && (dv = wide_int_value(k == K_ANY ? DUCKDB_TYPE_HUGEINT : t, digits, xlen))) {
        exact = 1;
    } else if(wide && k == K_INT) { /* out of its range: refused as a cast that fails */
        *msg = typed_msg(name, NULL, lt);
        result = DAPI_ERR_PARAM;
        goto out;
    } else if(t == DUCKDB_TYPE_DECIMAL && dapi_jv_type(v) == DAPI_J_REAL && digits) {
        /* the number as written; if it does not cast, its text fails the check below */
        exact = (dv = decimal_value(c, lt, digits, xlen)) != NULL;
        if(!exact)
            dv = duckdb_create_varchar_length(digits, xlen);
    } else if(t == DUCKDB_TYPE_LIST && dapi_jv_type(v) == DAPI_J_ARRAY &&
              (dv = exact_list(c, lt, v, x))) {
        exact = 1; /* a list of DECIMALs or wide integers, each as written */
    } else if(!(dv = make_value(v, &why))) {
        *msg = param_msg("parameter '%s' %s", name, why ? why : "could not be made into a value");
        result = DAPI_ERR_PARAM;
        goto out;
    }
    if(!exact && k != K_ANY && k != K_STRING && dapi_jv_type(v) != DAPI_J_NULL &&
       !casts(c, lt, dv)) {
        *msg = typed_msg(name, NULL, lt);
        result = DAPI_ERR_PARAM;
        goto out;
    }
    if(duckdb_bind_value(st, i, dv) == DuckDBError) {
        *msg = param_msg("parameter '%s' could not be bound%s", name, "");
        result = DAPI_ERR_PARAM;
    }
out:
    if(dv)
        duckdb_destroy_value(&dv);
    if(lt)
        duckdb_destroy_logical_type(&lt);
    if(result && !*msg)
        result = DAPI_ERR_NOMEM;
    return result;
}

enum dapi_err engine_bind_params(struct dapi_econn *c, duckdb_prepared_statement st,
                                 const char *params, char **msg)
{
    struct dapi_jv *root = NULL, *twin = NULL;
    enum dapi_err result = DAPI_OK;
    idx_t n = duckdb_nparams(st);
    char err[128];
    if(dapi_jv_parse_wide(params, strlen(params), MAX_PARAMS_DEPTH, &root, err, sizeof err) ||
       dapi_jv_type(root) != DAPI_J_OBJECT) {
        dapi_jv_free(root);
        *msg = param_msg("\"params\" must be a JSON object of parameter values%s%s", "", NULL);
        return *msg ? DAPI_ERR_PARAM : DAPI_ERR_NOMEM;
    }
    if(dapi_jv_parse_numtext(params, strlen(params), MAX_PARAMS_DEPTH, &twin, NULL, 0))
        twin = NULL; /* (out of memory: numbers are bound from their doubles) */
    /* a value for a parameter the query does not have: named first, so that a misspelt
     * name is reported as such rather than as the missing one */
    for(void *it = dapi_jv_iter(root); it && !result; it = dapi_jv_iter_next(root, it)) {
        const char *key = dapi_jv_iter_key(it);
        idx_t i = 1;
        for(; i <= n; i++) {
            const char *name = duckdb_parameter_name(st, i);
            int same = name && strcmp(name, key) == 0;
            duckdb_free((void *)name);
            if(same)
                break;
        }
        if(i > n) {
            *msg = param_msg("unknown parameter '%s': the query has no $%s", key, key);
            result = *msg ? DAPI_ERR_PARAM : DAPI_ERR_NOMEM;
        }
    }
    for(idx_t i = 1; i <= n && !result; i++) {
        const char *name = duckdb_parameter_name(st, i);
        const struct dapi_jv *v = name ? dapi_jv_get(root, name) : NULL;
        if(!name)
            result = DAPI_ERR_INTERNAL;
        else if(!v) {
            *msg = param_msg("missing parameter '%s': the query uses $%s", name, name);
            result = *msg ? DAPI_ERR_PARAM : DAPI_ERR_NOMEM;
        } else {
            result = bind_one(c, st, i, name, v, dapi_jv_get(twin, name), msg);
        }
        duckdb_free((void *)name);
    }
    dapi_jv_free(root);
    dapi_jv_free(twin);
    return result;
}
