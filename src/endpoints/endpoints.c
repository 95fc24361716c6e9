/* The endpoints file (endpoints.h, docs/endpoints.md): YAML read by base/yamlin.c, checked
 * here, each SQL prepared once by the engine with its declared parameters. */
#include "endpoints/endpoints.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/yamlin.h"
#include "engine/engine.h"

#define MAX_ENDPOINTS 1000
#define MAX_PARAMS 64

struct dapi_endpoints {
    atomic_int refs;
    struct dapi_endpoint *v;
    size_t n;
};

static const char *const type_names[] = {
    [DAPI_PT_VARCHAR] = "varchar", [DAPI_PT_INTEGER] = "integer",
    [DAPI_PT_BIGINT] = "bigint",   [DAPI_PT_DOUBLE] = "double",
    [DAPI_PT_DECIMAL] = "decimal", [DAPI_PT_BOOLEAN] = "boolean",
    [DAPI_PT_DATE] = "date",       [DAPI_PT_TIMESTAMP] = "timestamp",
};

const char *dapi_ptype_name(enum dapi_ptype t)
{
    return type_names[t];
}

static int numeric(enum dapi_ptype t)
{
    return t == DAPI_PT_INTEGER || t == DAPI_PT_BIGINT || t == DAPI_PT_DOUBLE ||
           t == DAPI_PT_DECIMAL;
}

/* ---- one value: text to typed JSON, and the rules -------------------------------------- */

/* d as the shortest decimal text that reads back as d. */
static void add_num(struct dapi_buf *b, double d)
{
    char t[64];
    for(int p = 1; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*g", p, d);
        if(strtod(t, NULL) == d)
            break;
    }
    dapi_buf_adds(b, t);
}

/* 1 if s is an optional exponent ([eE][+-]?digits) and then the end of the text. */
static int exponent_then_end(const char *s)
{
    if(*s == 'e' || *s == 'E') {
        s++;
        if(*s == '+' || *s == '-')
            s++;
        size_t n = strspn(s, "0123456789");
        if(!n)
            return 0;
        s += n;
    }
    return *s == '\0';
}

/* 1 if s is a number as JSON writes one: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const char *s)
{
    if(*s == '-')
        s++;
    if(*s == '0')
        s++;
    else if(*s >= '1' && *s <= '9')
        s += strspn(s, "0123456789");
    else
        return 0;
    if(*s == '.') {
        size_t n = strspn(++s, "0123456789");
        if(!n)
            return 0;
        s += n;
    }
    return exponent_then_end(s);
}

/* 1 if s is a number written in decimal, as a person would: [+-]? then digits with an
 * optional fraction, or a fraction alone (007, 5., .5), then [eE][+-]?digits optionally.
 * strtod alone would also take hexadecimal (0x10, 0x1p3), inf, nan and leading spaces. */
static int decimal_text(const char *s)
{
    if(*s == '+' || *s == '-')
        s++;
    size_t whole = strspn(s, "0123456789"), frac = 0;
    s += whole;
    if(*s == '.') {
        frac = strspn(++s, "0123456789");
        s += frac;
    }
    if(!whole && !frac)
        return 0;
    return exponent_then_end(s);
}

static int utf8_chars(const char *s)
{
    int n = 0;
    for(; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int digits(const char *s, int n)
{
    for(int i = 0; i < n; i++)
        if(!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* s begins with YYYY-MM-DD, a month and a day that exist (leap years included). */
static int date_prefix(const char *s)
{
    if(strlen(s) < 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
       !digits(s + 8, 2))
        return 0;
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if(m < 1 || m > 12 || d < 1 || d > days[m - 1])
        return 0;
    return !(m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
}

/* A date and nothing after it. */
static int is_date(const char *s)
{
    return date_prefix(s) && s[10] == '\0';
}

/* A date, then optionally [T ]HH:MM[:SS[.frac]]. */
static int is_timestamp(const char *s)
{
    if(!date_prefix(s))
        return 0;
    s += 10;
    if(!*s)
        return 1;
    if((*s != ' ' && *s != 'T') || !digits(s + 1, 2) || s[3] != ':' || !digits(s + 4, 2) ||
       atoi(s + 1) > 23 || atoi(s + 4) > 59)
        return 0;
    s += 6;
    if(!*s)
        return 1;
    if(*s != ':' || !digits(s + 1, 2) || atoi(s + 1) > 59)
        return 0;
    s += 3;
    if(*s == '.') {
        s++;
        size_t n = strspn(s, "0123456789");
        if(n == 0 || n > 9)
            return 0;
        s += n;
    }
    return !*s;
}

/* Writes why (n bytes) and returns -1. */
static int rule(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rule(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Appends the JSON of text as a value of p, or returns -1 with why saying which rule (the
 * parameter's name is added by the caller). */
static int add_value(struct dapi_buf *b, const struct dapi_eparam *p, const char *text, char *why,
                     size_t n)
{
    char *end;
    double d = 0;
    switch(p->type) {
    case DAPI_PT_INTEGER:
    case DAPI_PT_BIGINT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if(!*text || *end || errno || isspace((unsigned char)*text) ||
           (p->type == DAPI_PT_INTEGER && (v < INT32_MIN || v > INT32_MAX)))
            return rule(why, n, "must be an integer%s",
                        p->type == DAPI_PT_INTEGER ? " (32 bits)" : " (64 bits)");
        d = (double)v;
        break;
    }
    case DAPI_PT_DOUBLE:
    case DAPI_PT_DECIMAL:
        d = decimal_text(text) ? strtod(text, &end) : NAN;
        if(!isfinite(d))
            return rule(why, n, "must be a number");
        break;
    case DAPI_PT_BOOLEAN:
        if(strcmp(text, "true") && strcmp(text, "false"))
            return rule(why, n, "must be true or false");
        break;
    case DAPI_PT_DATE:
        if(!is_date(text))
            return rule(why, n, "must be a date (YYYY-MM-DD)");
        break;
    case DAPI_PT_TIMESTAMP:
        if(!is_timestamp(text))
            return rule(why, n, "must be a timestamp (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]])");
        break;
    case DAPI_PT_VARCHAR: break;
    }
    if(p->has_min && d < p->min)
        return rule(why, n, "must be at least %g (min)", p->min);
    if(p->has_max && d > p->max)
        return rule(why, n, "must be at most %g (max)", p->max);
    if(p->max_length && utf8_chars(text) > p->max_length)
        return rule(why, n, "must be at most %lld characters long (max_length)",
                    (long long)p->max_length);
    if(p->pattern && regexec(&p->re, text, 0, NULL, 0) != 0)
        return rule(why, n, "must match %s (pattern)", p->pattern);
    if(p->enums) {
        size_t i = 0;
        while(i < p->nenums && strcmp(p->enums[i], text) != 0)
            i++;
        if(i == p->nenums) {
            struct dapi_buf l;
            dapi_buf_init(&l, 512);
            for(i = 0; i < p->nenums; i++)
                dapi_buf_addf(&l, "%s%s", i ? ", " : "", p->enums[i]);
            rule(why, n, "must be one of %s (enum)", l.data ? l.data : "the listed values");
            dapi_buf_free(&l);
            return -1;
        }
    }
    switch(p->type) {
    case DAPI_PT_INTEGER:
    case DAPI_PT_BIGINT: dapi_buf_addf(b, "%lld", strtoll(text, NULL, 10)); break;
    case DAPI_PT_DOUBLE:
    case DAPI_PT_DECIMAL: {
        size_t at = b->len;
        if(p->type == DAPI_PT_DECIMAL && json_number(text))
            dapi_buf_adds(b, text); /* every digit: the engine binds a DECIMAL from it */
        else
            add_num(b, d);
        if(b->data && !memchr(b->data + at, '.', b->len - at) &&
           !memchr(b->data + at, 'e', b->len - at) && !memchr(b->data + at, 'E', b->len - at))
            dapi_buf_adds(b, ".0"); /* typed as a number, not an integer */
        break;
    }
    case DAPI_PT_BOOLEAN: dapi_buf_adds(b, text); break;
    default: dapi_json_str(b, text, strlen(text)); break;
    }
    return 0;
}

/* ---- a call ------------------------------------------------------------------------------ */

char *dapi_endpoint_bind(const struct dapi_endpoint *ep, const char *const *names,
                         const char *const *values, size_t n, const char *const *skip, char **why,
                         int *nomem)
{
    struct dapi_buf b, msg;
    size_t seen[MAX_PARAMS] = {0};
    char w[512];
    *why = NULL;
    *nomem = 0;
    dapi_buf_init(&msg, 4096);
    dapi_buf_init(&b, 1 << 20);
    /* every argument is a declared parameter (or skipped), once unless it is a list */
    for(size_t a = 0; a < n; a++) {
        int skipped = 0;
        for(const char *const *s = skip; s && *s; s++)
            skipped |= strcmp(*s, names[a]) == 0;
        if(skipped)
            continue;
        size_t i = 0;
        while(i < ep->nparams && strcmp(ep->params[i].name, names[a]) != 0)
            i++;
        if(i == ep->nparams) {
            dapi_buf_addf(&msg, "unknown parameter '%s': endpoint '%s' has no such parameter",
                          names[a], ep->name);
            goto fail;
        }
        if(++seen[i] > 1 && !ep->params[i].list) {
            dapi_buf_addf(&msg, "parameter '%s' is given more than once; it takes one value",
                          names[a]);
            goto fail;
        }
    }
    dapi_buf_addc(&b, '{');
    for(size_t i = 0; i < ep->nparams; i++) {
        const struct dapi_eparam *p = &ep->params[i];
        if(i)
            dapi_buf_addc(&b, ',');
        dapi_json_str(&b, p->name, strlen(p->name));
        dapi_buf_addc(&b, ':');
        if(!seen[i] && p->required) {
            dapi_buf_addf(&msg, "missing parameter '%s' (required)", p->name);
            goto fail;
        }
        if(!seen[i] && !p->defs) {
            dapi_buf_adds(&b, "null");
            continue;
        }
        if(p->list)
            dapi_buf_addc(&b, '[');
        size_t k = 0;
        for(; !seen[i] && k < p->ndefs; k++) {
            if(k)
                dapi_buf_addc(&b, ',');
            add_value(&b, p, p->defs[k], w, sizeof w); /* (checked at load) */
        }
        for(size_t a = 0; seen[i] && a < n; a++) {
            if(strcmp(names[a], p->name) != 0)
                continue;
            if(k++)
                dapi_buf_addc(&b, ',');
            if(add_value(&b, p, values[a], w, sizeof w)) {
                dapi_buf_addf(&msg, "parameter '%s' %s", p->name, w);
                goto fail;
            }
        }
        if(p->list)
            dapi_buf_addc(&b, ']');
    }
    dapi_buf_addc(&b, '}');
    dapi_buf_free(&msg);
    if(!b.data)
        *nomem = 1;
    return b.data ? dapi_buf_take(&b, NULL) : NULL;
fail:
    dapi_buf_free(&b);
    if(!msg.data)
        *nomem = 1;
    *why = msg.data ? dapi_buf_take(&msg, NULL) : NULL;
    return NULL;
}

/* ---- loading ----------------------------------------------------------------------------- */

struct loader {
    const char *path;
    char *err;
    size_t errlen;
};

static enum dapi_err bad(struct loader *l, int line, const char *endpoint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum dapi_err bad(struct loader *l, int line, const char *endpoint, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if(endpoint)
        snprintf(l->err, l->errlen, "%s:%d: endpoint '%s': %s", l->path, line, endpoint, what);
    else
        snprintf(l->err, l->errlen, "%s:%d: %s", l->path, line, what);
    return DAPI_ERR_INVALID;
}

static int valid_name(const char *s, int dash)
{
    size_t n = strlen(s);
    if(n == 0 || n > 64 || isdigit((unsigned char)s[0]))
        return 0;
    for(size_t i = 0; i < n; i++)
        if(!(isalnum((unsigned char)s[i]) || s[i] == '_' || (dash && s[i] == '-')))
            return 0;
    return 1;
}

static const char *scalar(const struct dapi_yv *v)
{
    return v && v->kind == DAPI_Y_SCALAR && !dapi_yv_is_null(v) ? v->text : NULL;
}

static void param_free(struct dapi_eparam *p)
{
    free(p->name);
    free(p->description);
    for(size_t i = 0; i < p->ndefs; i++)
        free(p->defs[i]);
    free(p->defs);
    for(size_t i = 0; i < p->nenums; i++)
        free(p->enums[i]);
    free(p->enums);
    if(p->pattern)
        regfree(&p->re);
    free(p->pattern);
}

static void endpoint_free(struct dapi_endpoint *ep)
{
    free(ep->name);
    free(ep->description);
    free(ep->sql);
    for(size_t i = 0; i < ep->nparams; i++)
        param_free(&ep->params[i]);
    free(ep->params);
    for(size_t i = 0; i < ep->nlayers; i++)
        free(ep->layers[i]);
    free(ep->layers);
}

/* A list of scalars (or one scalar) as owned strings. */
static enum dapi_err texts(struct loader *l, const struct dapi_yv *v, const char *ep,
                           const char *what, char ***out, size_t *n)
{
    size_t cnt = v->kind == DAPI_Y_SEQ ? v->n : 1;
    if(v->kind == DAPI_Y_MAP)
        return bad(l, v->line, ep, "%s must be a value or a list of values", what);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    if(!*out)
        return DAPI_ERR_NOMEM;
    for(size_t i = 0; i < cnt; i++) {
        const struct dapi_yv *e = v->kind == DAPI_Y_SEQ ? v->items[i] : v;
        if(e->kind != DAPI_Y_SCALAR)
            return bad(l, e->line, ep, "%s must be a list of plain values", what);
        if(!((*out)[i] = strdup(e->text)))
            return DAPI_ERR_NOMEM;
        (*n)++;
    }
    return DAPI_OK;
}

static enum dapi_err number(struct loader *l, const struct dapi_yv *v, const char *ep,
                            const char *what, double *out)
{
    const char *t = scalar(v);
    *out = t && decimal_text(t) ? strtod(t, NULL) : NAN;
    if(!isfinite(*out))
        return bad(l, v->line, ep, "%s must be a number", what);
    return DAPI_OK;
}

static enum dapi_err parse_param(struct loader *l, const char *ep, const char *name, int line,
                                 const struct dapi_yv *v, struct dapi_eparam *p)
{
    static const char *const keys[] = {"type", "required", "default",    "min",        "max",
                                       "enum", "pattern",  "max_length", "description"};
    enum dapi_err result;
    char w[512];
    if(!(p->name = strdup(name)))
        return DAPI_ERR_NOMEM;
    if(!valid_name(name, 0))
        return bad(l, line, ep,
                   "parameter name '%s' is not valid: letters, digits and '_', not starting "
                   "with a digit (the SQL names it $%s)",
                   name, name);
    if(strcmp(name, "format") == 0)
        return bad(l, line, ep,
                   "'format' is not a parameter name: a call's format=… chooses "
                   "the answer's format");
    if(v->kind != DAPI_Y_MAP)
        return bad(l, line, ep, "parameter '%s' must be a map (type, required, default …)", name);
    for(size_t i = 0; i < v->n; i++) {
        size_t k = 0;
        while(k < sizeof keys / sizeof *keys && strcmp(keys[k], v->keys[i]) != 0)
            k++;
        if(k == sizeof keys / sizeof *keys)
            return bad(l, v->items[i]->line, ep, "parameter '%s': unknown setting '%s'", name,
                       v->keys[i]);
    }
    const char *type = scalar(dapi_yv_get(v, "type"));
    if(!type)
        return bad(l, line, ep, "parameter '%s' has no type", name);
    size_t tl = strlen(type);
    p->list = tl > 2 && strcmp(type + tl - 2, "[]") == 0;
    size_t t = 0;
    while(t < sizeof type_names / sizeof *type_names &&
          (strlen(type_names[t]) != tl - (p->list ? 2 : 0) ||
           strncmp(type_names[t], type, tl - (p->list ? 2 : 0)) != 0))
        t++;
    if(t == sizeof type_names / sizeof *type_names)
        return bad(l, dapi_yv_get(v, "type")->line, ep,
                   "parameter '%s': unknown type '%s' (varchar, integer, bigint, double, decimal, "
                   "boolean, date, timestamp, or one of those followed by [] for a list)",
                   name, type);
    p->type = (enum dapi_ptype)t;
    const struct dapi_yv *x;
    if((x = dapi_yv_get(v, "description")) && scalar(x) && !(p->description = strdup(x->text)))
        return DAPI_ERR_NOMEM;
    if((x = dapi_yv_get(v, "required"))) {
        const char *s = scalar(x);
        if(!s || (strcmp(s, "true") && strcmp(s, "false")))
            return bad(l, x->line, ep, "parameter '%s': required must be true or false", name);
        p->required = strcmp(s, "true") == 0;
    }
    if((x = dapi_yv_get(v, "min"))) {
        if((result = number(l, x, ep, "min", &p->min)))
            return result;
        p->has_min = 1;
    }
    if((x = dapi_yv_get(v, "max"))) {
        if((result = number(l, x, ep, "max", &p->max)))
            return result;
        p->has_max = 1;
    }
    if((p->has_min || p->has_max) && !numeric(p->type))
        return bad(l, line, ep, "parameter '%s': min and max apply to numeric types only", name);
    if((x = dapi_yv_get(v, "max_length"))) {
        double d;
        if((result = number(l, x, ep, "max_length", &d)))
            return result;
        if(d < 1 || d != floor(d) || d > 1e9)
            return bad(l, x->line, ep, "parameter '%s': max_length must be a positive integer",
                       name);
        p->max_length = (int64_t)d;
    }
    if((x = dapi_yv_get(v, "pattern"))) {
        if(!scalar(x) || !(p->pattern = strdup(x->text)))
            return scalar(x) ? DAPI_ERR_NOMEM
                             : bad(l, x->line, ep, "parameter '%s': pattern must be text", name);
        int rc = regcomp(&p->re, p->pattern, REG_EXTENDED | REG_NOSUB);
        if(rc) {
            char m[256];
            regerror(rc, &p->re, m, sizeof m);
            free(p->pattern);
            p->pattern = NULL;
            return bad(l, x->line, ep,
                       "parameter '%s': pattern is not a valid regular "
                       "expression: %s",
                       name, m);
        }
    }
    if((x = dapi_yv_get(v, "enum")) && (result = texts(l, x, ep, "enum", &p->enums, &p->nenums)))
        return result;
    if((x = dapi_yv_get(v, "default")) && !dapi_yv_is_null(x)) {
        if(x->kind == DAPI_Y_SEQ && !p->list)
            return bad(l, x->line, ep, "parameter '%s': a list default for a single value", name);
        if((result = texts(l, x, ep, "default", &p->defs, &p->ndefs)))
            return result;
        if(p->required)
            return bad(l, x->line, ep, "parameter '%s' is required and has a default: choose one",
                       name);
        struct dapi_buf b;
        dapi_buf_init(&b, 1 << 20);
        for(size_t i = 0; i < p->ndefs; i++)
            if(add_value(&b, p, p->defs[i], w, sizeof w)) {
                dapi_buf_free(&b);
                return bad(l, x->line, ep, "parameter '%s': the default '%s' %s", name, p->defs[i],
                           w);
            }
        dapi_buf_free(&b);
    }
    return DAPI_OK;
}

/* "60s", "5m", "1h", "60" (seconds), 0/off (no reuse). */
static enum dapi_err parse_cache(struct loader *l, const struct dapi_yv *v, const char *ep,
                                 int64_t *out)
{
    const char *t = scalar(v);
    char *end;
    if(t && (strcmp(t, "off") == 0 || strcmp(t, "false") == 0)) {
        *out = 0;
        return DAPI_OK;
    }
    long long n = t ? strtoll(t, &end, 10) : -1;
    if(!t || end == t || n < 0 || n > 365LL * 86400)
        return bad(l, v->line, ep, "cache must be a duration: 60s, 5m, 1h, or off");
    int64_t mult = !*end || !strcmp(end, "s") ? 1
                   : !strcmp(end, "m")        ? 60
                   : !strcmp(end, "h")        ? 3600
                                              : 0;
    if(!mult)
        return bad(l, v->line, ep, "cache must be a duration: 60s, 5m, 1h, or off");
    *out = n * mult;
    return DAPI_OK;
}

/* p's default as JSON: its value, or the array of its values for a list (checked when the
 * file was read: add_value cannot refuse them here). */
static void add_default(struct dapi_buf *b, const struct dapi_eparam *p)
{
    char w[512];
    dapi_buf_adds(b, p->list ? "[" : "");
    for(size_t k = 0; k < p->ndefs; k++) {
        dapi_buf_adds(b, k ? "," : "");
        add_value(b, p, p->defs[k], w, sizeof w);
    }
    dapi_buf_adds(b, p->list ? "]" : "");
}

/* The SQL checked by the engine with every declared parameter bound (to its default, or
 * null), then once per layer of the lake with that layer taken out of the scope: a refusal
 * (403) says the SQL reads it. */
static enum dapi_err check_sql(struct loader *l, struct dapi_econn *conn,
                               struct dapi_engine *engine, struct dapi_endpoint *ep)
{
    struct dapi_buf b;
    char *msg = NULL;
    dapi_buf_init(&b, 1 << 20);
    dapi_buf_addc(&b, '{');
    for(size_t i = 0; i < ep->nparams; i++) {
        const struct dapi_eparam *p = &ep->params[i];
        dapi_buf_addf(&b, "%s", i ? "," : "");
        dapi_json_str(&b, p->name, strlen(p->name));
        dapi_buf_addc(&b, ':');
        if(!p->defs) {
            dapi_buf_adds(&b, "null");
            continue;
        }
        add_default(&b, p);
    }
    dapi_buf_addc(&b, '}');
    if(!b.data)
        return DAPI_ERR_NOMEM;
    enum dapi_err result = dapi_engine_check_bound(conn, ep->sql, b.data, NULL, &msg);
    if(result == DAPI_ERR_PARAM && msg && strncmp(msg, "missing parameter '", 19) == 0) {
        char name[128] = "";
        sscanf(msg + 19, "%127[^']", name);
        result = bad(l, ep->line, ep->name, "its SQL uses $%s, which is not declared under params",
                     name);
    } else if(result == DAPI_ERR_PARAM && msg && strncmp(msg, "unknown parameter '", 19) == 0) {
        char name[128] = "";
        sscanf(msg + 19, "%127[^']", name);
        result = bad(l, ep->line, ep->name, "parameter '%s' is declared but its SQL has no $%s",
                     name, name);
    } else if(result == DAPI_ERR_SQL || result == DAPI_ERR_PARAM || result == DAPI_ERR_FORBIDDEN) {
        char *nl = msg ? strchr(msg, '\n') : NULL;
        if(nl)
            *nl = '\0';
        result = bad(l, ep->line, ep->name, "%s", msg ? msg : "its SQL is refused");
    } else if(result) {
        result = bad(l, ep->line, ep->name, "its SQL could not be checked (%s)",
                     dapi_err_message(result));
    }
    free(msg);
    struct dapi_lake_table *t = NULL;
    size_t nt = 0;
    if(!result)
        result = dapi_engine_lake_tables(engine, NULL, &t, &nt);
    struct dapi_scope *sc = calloc(1, sizeof *sc);
    if(!sc && !result)
        result = DAPI_ERR_NOMEM;
    for(size_t i = 0; i < nt && !result; i++) {
        if(i && strcmp(t[i].layer, t[i - 1].layer) == 0)
            continue;
        memset(sc, 0, sizeof *sc);
        for(size_t k = 0; k < nt && sc->n < DAPI_SCOPE_MAX_LAYERS; k++)
            if(strcmp(t[k].layer, t[i].layer) != 0 &&
               (!sc->n || strcmp(sc->layers[sc->n - 1], t[k].layer)))
                snprintf(sc->layers[sc->n++], sizeof sc->layers[0], "%s", t[k].layer);
        msg = NULL;
        enum dapi_err r = dapi_engine_check_bound(conn, ep->sql, b.data, sc, &msg);
        free(msg);
        if(r == DAPI_ERR_FORBIDDEN) {
            char **nl = realloc(ep->layers, (ep->nlayers + 1) * sizeof *nl);
            if(!nl || !(nl[ep->nlayers] = strdup(t[i].layer)))
                result = DAPI_ERR_NOMEM;
            if(nl)
                ep->layers = nl;
            if(!result)
                ep->nlayers++;
        }
    }
    free(sc);
    dapi_lake_tables_free(t, nt);
    dapi_buf_free(&b);
    return result;
}

static enum dapi_err parse_endpoint(struct loader *l, const char *name, int line,
                                    const struct dapi_yv *v, struct dapi_endpoint *ep)
{
    static const char *const keys[] = {"description", "sql", "params", "cache"};
    enum dapi_err result;
    ep->line = line;
    ep->cache_s = -1;
    if(!(ep->name = strdup(name)))
        return DAPI_ERR_NOMEM;
    if(!valid_name(name, 1))
        return bad(l, line, NULL,
                   "endpoint name '%s' is not valid: 1 to 64 letters, digits, '_' or '-', not "
                   "starting with a digit",
                   name);
    if(v->kind != DAPI_Y_MAP)
        return bad(l, line, name, "must be a map (description, sql, params, cache)");
    for(size_t i = 0; i < v->n; i++) {
        size_t k = 0;
        while(k < sizeof keys / sizeof *keys && strcmp(keys[k], v->keys[i]) != 0)
            k++;
        if(k == sizeof keys / sizeof *keys)
            return bad(l, v->items[i]->line, name, "unknown setting '%s'", v->keys[i]);
    }
    const struct dapi_yv *x;
    if(!scalar(dapi_yv_get(v, "sql")) || !*dapi_yv_get(v, "sql")->text)
        return bad(l, line, name, "has no sql");
    if(!(ep->sql = strdup(dapi_yv_get(v, "sql")->text)))
        return DAPI_ERR_NOMEM;
    if((x = dapi_yv_get(v, "description")) && scalar(x) && !(ep->description = strdup(x->text)))
        return DAPI_ERR_NOMEM;
    if((x = dapi_yv_get(v, "cache")) && (result = parse_cache(l, x, name, &ep->cache_s)))
        return result;
    if((x = dapi_yv_get(v, "params")) && !dapi_yv_is_null(x)) {
        if(x->kind != DAPI_Y_MAP)
            return bad(l, x->line, name, "params must be a map of parameters");
        if(x->n > MAX_PARAMS)
            return bad(l, x->line, name, "at most %d parameters", MAX_PARAMS);
        if(!(ep->params = calloc(x->n ? x->n : 1, sizeof *ep->params)))
            return DAPI_ERR_NOMEM;
        for(size_t i = 0; i < x->n; i++) {
            ep->nparams++;
            if((result = parse_param(l, name, x->keys[i], x->key_lines[i], x->items[i],
                                     &ep->params[i])))
                return result;
        }
    }
    return DAPI_OK;
}

static int cmp_endpoint(const void *a, const void *b)
{
    return strcmp(((const struct dapi_endpoint *)a)->name,
                  ((const struct dapi_endpoint *)b)->name);
}

enum dapi_err dapi_endpoints_load(const char *path, struct dapi_econn *conn,
                                  struct dapi_engine *engine, struct dapi_endpoints **out,
                                  char *err, size_t errlen)
{
    struct loader l = {path, err, errlen};
    struct dapi_yv *root = NULL;
    char why[1024];
    *out = NULL;
    enum dapi_err result = dapi_yaml_load(path, &root, why, sizeof why);
    if(result) {
        snprintf(err, errlen, "%s: %s", path, why);
        return result;
    }
    struct dapi_endpoints *e = calloc(1, sizeof *e);
    const struct dapi_yv *eps = dapi_yv_get(root, "endpoints");
    if(!e) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    atomic_init(&e->refs, 1);
    if(root->kind != DAPI_Y_MAP || (root->n && !eps) || root->n > 1) {
        result = bad(&l, root->line, NULL, "the file must be a map with one key, endpoints");
        goto out;
    }
    if(eps && !dapi_yv_is_null(eps) && eps->kind != DAPI_Y_MAP) {
        result = bad(&l, eps->line, NULL, "endpoints must be a map of endpoints by name");
        goto out;
    }
    size_t n = eps && eps->kind == DAPI_Y_MAP ? eps->n : 0;
    if(n > MAX_ENDPOINTS) {
        result = bad(&l, eps->line, NULL, "at most %d endpoints", MAX_ENDPOINTS);
        goto out;
    }
    if(!(e->v = calloc(n ? n : 1, sizeof *e->v))) {
        result = DAPI_ERR_NOMEM;
        goto out;
    }
    for(size_t i = 0; i < n && !result; i++) {
        e->n++;
        result = parse_endpoint(&l, eps->keys[i], eps->key_lines[i], eps->items[i], &e->v[i]);
        if(!result)
            result = check_sql(&l, conn, engine, &e->v[i]);
    }
    if(!result)
        qsort(e->v, e->n, sizeof *e->v, cmp_endpoint);
out:
    if(result == DAPI_ERR_NOMEM)
        snprintf(err, errlen, "%s: out of memory", path);
    dapi_yv_free(root);
    if(result) {
        if(e)
            atomic_store(&e->refs, 1);
        dapi_endpoints_unref(e);
        return result;
    }
    *out = e;
    return DAPI_OK;
}

void dapi_endpoints_ref(struct dapi_endpoints *e)
{
    if(e)
        atomic_fetch_add(&e->refs, 1);
}

void dapi_endpoints_unref(struct dapi_endpoints *e)
{
    if(!e || atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    for(size_t i = 0; i < e->n; i++)
        endpoint_free(&e->v[i]);
    free(e->v);
    free(e);
}

size_t dapi_endpoints_count(const struct dapi_endpoints *e)
{
    return e ? e->n : 0;
}

const struct dapi_endpoint *dapi_endpoints_at(const struct dapi_endpoints *e, size_t i)
{
    return e && i < e->n ? &e->v[i] : NULL;
}

const struct dapi_endpoint *dapi_endpoints_find(const struct dapi_endpoints *e, const char *name)
{
    for(size_t i = 0; e && i < e->n; i++)
        if(strcmp(e->v[i].name, name) == 0)
            return &e->v[i];
    return NULL;
}

int dapi_endpoint_allowed(const struct dapi_endpoint *ep, const struct dapi_scope *scope)
{
    if(!scope || scope->all)
        return 1;
    for(size_t i = 0; i < ep->nlayers; i++)
        if(!dapi_scope_allows(scope, ep->layers[i]))
            return 0;
    return 1;
}

/* ---- GET /api/endpoints ------------------------------------------------------------------- */

static void add_opt_str(struct dapi_buf *b, const char *key, const char *v)
{
    dapi_buf_addf(b, ",\"%s\":", key);
    if(v)
        dapi_json_str(b, v, strlen(v));
    else
        dapi_buf_adds(b, "null");
}

static void add_param_json(struct dapi_buf *b, const struct dapi_eparam *p)
{
    char w[512];
    dapi_buf_adds(b, "{\"default\":");
    if(!p->defs) {
        dapi_buf_adds(b, "null");
    } else {
        dapi_buf_adds(b, p->list ? "[" : "");
        for(size_t k = 0; k < p->ndefs; k++) {
            dapi_buf_adds(b, k ? "," : "");
            add_value(b, p, p->defs[k], w, sizeof w);
        }
        dapi_buf_adds(b, p->list ? "]" : "");
    }
    add_opt_str(b, "description", p->description);
    dapi_buf_adds(b, ",\"enum\":");
    if(p->enums) {
        dapi_buf_addc(b, '[');
        for(size_t k = 0; k < p->nenums; k++) {
            dapi_buf_adds(b, k ? "," : "");
            dapi_json_str(b, p->enums[k], strlen(p->enums[k]));
        }
        dapi_buf_addc(b, ']');
    } else {
        dapi_buf_adds(b, "null");
    }
    dapi_buf_adds(b, ",\"list\":");
    dapi_buf_adds(b, p->list ? "true" : "false");
    if(p->has_max) {
        dapi_buf_adds(b, ",\"max\":");
        add_num(b, p->max);
    } else
        dapi_buf_adds(b, ",\"max\":null");
    if(p->max_length)
        dapi_buf_addf(b, ",\"max_length\":%lld", (long long)p->max_length);
    else
        dapi_buf_adds(b, ",\"max_length\":null");
    if(p->has_min) {
        dapi_buf_adds(b, ",\"min\":");
        add_num(b, p->min);
    } else
        dapi_buf_adds(b, ",\"min\":null");
    dapi_buf_adds(b, ",\"name\":");
    dapi_json_str(b, p->name, strlen(p->name));
    add_opt_str(b, "pattern", p->pattern);
    dapi_buf_addf(b, ",\"required\":%s,\"type\":\"%s\"}", p->required ? "true" : "false",
                  type_names[p->type]);
}

char *dapi_endpoints_json(const struct dapi_endpoints *e, const struct dapi_scope *scope,
                          size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    dapi_buf_adds(&b, "{\"endpoints\":[");
    int first = 1;
    for(size_t i = 0; e && i < e->n; i++) {
        const struct dapi_endpoint *ep = &e->v[i];
        if(!dapi_endpoint_allowed(ep, scope))
            continue;
        dapi_buf_adds(&b, first ? "{\"cache\":" : ",{\"cache\":");
        first = 0;
        if(ep->cache_s >= 0)
            dapi_buf_addf(&b, "%lld", (long long)ep->cache_s);
        else
            dapi_buf_adds(&b, "null");
        add_opt_str(&b, "description", ep->description);
        dapi_buf_adds(&b, ",\"layers\":[");
        for(size_t k = 0; k < ep->nlayers; k++) {
            dapi_buf_adds(&b, k ? "," : "");
            dapi_json_str(&b, ep->layers[k], strlen(ep->layers[k]));
        }
        dapi_buf_adds(&b, "],\"name\":");
        dapi_json_str(&b, ep->name, strlen(ep->name));
        dapi_buf_adds(&b, ",\"params\":[");
        for(size_t k = 0; k < ep->nparams; k++) {
            dapi_buf_adds(&b, k ? "," : "");
            add_param_json(&b, &ep->params[k]);
        }
        dapi_buf_adds(&b, "],\"path\":");
        char path[128];
        snprintf(path, sizeof path, "/api/endpoints/%s", ep->name);
        dapi_json_str(&b, path, strlen(path));
        dapi_buf_adds(&b, "}");
    }
    dapi_buf_adds(&b, "]}");
    return b.data ? dapi_buf_take(&b, len) : NULL;
}

/* ---- the served OpenAPI document ----------------------------------------------------------- */

/* The JSON Schema of one value of p (an element's, for a list). */
static void add_value_schema(struct dapi_buf *b, const struct dapi_eparam *p)
{
    static const char *const schemas[] = {
        [DAPI_PT_VARCHAR] = "\"type\":\"string\"",
        [DAPI_PT_INTEGER] = "\"type\":\"integer\",\"format\":\"int32\"",
        [DAPI_PT_BIGINT] = "\"type\":\"integer\",\"format\":\"int64\"",
        [DAPI_PT_DOUBLE] = "\"type\":\"number\"",
        [DAPI_PT_DECIMAL] = "\"type\":\"number\"",
        [DAPI_PT_BOOLEAN] = "\"type\":\"boolean\"",
        [DAPI_PT_DATE] = "\"type\":\"string\",\"format\":\"date\"",
        [DAPI_PT_TIMESTAMP] =
            "\"type\":\"string\",\"pattern\":\"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\\\.[0-9]{1,9})?)?)?$\"",
    };
    dapi_buf_addc(b, '{');
    dapi_buf_adds(b, schemas[p->type]);
    if(p->has_min) {
        dapi_buf_adds(b, ",\"minimum\":");
        add_num(b, p->min);
    }
    if(p->has_max) {
        dapi_buf_adds(b, ",\"maximum\":");
        add_num(b, p->max);
    }
    if(p->max_length)
        dapi_buf_addf(b, ",\"maxLength\":%lld", (long long)p->max_length);
    if(p->pattern) {
        dapi_buf_adds(b, ",\"pattern\":");
        dapi_json_str(b, p->pattern, strlen(p->pattern));
    }
    if(p->enums) {
        char w[512];
        dapi_buf_adds(b, ",\"enum\":[");
        for(size_t k = 0; k < p->nenums; k++) {
            dapi_buf_adds(b, k ? "," : "");
            struct dapi_buf v;
            dapi_buf_init(&v, 4096);
            /* typed as the value is (an enum of a number type lists numbers) */
            if(add_value(&v, p, p->enums[k], w, sizeof w) == 0 && v.data &&
               p->type != DAPI_PT_VARCHAR)
                dapi_buf_adds(b, v.data);
            else
                dapi_json_str(b, p->enums[k], strlen(p->enums[k]));
            dapi_buf_free(&v);
        }
        dapi_buf_addc(b, ']');
    }
    dapi_buf_addc(b, '}');
}

char *dapi_endpoints_openapi(const struct dapi_endpoints *e, const struct dapi_scope *scope,
                             size_t *len)
{
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2);
    for(size_t i = 0; e && i < e->n; i++) {
        const struct dapi_endpoint *ep = &e->v[i];
        if(!dapi_endpoint_allowed(ep, scope))
            continue;
        char path[128];
        snprintf(path, sizeof path, "/api/endpoints/%s", ep->name);
        dapi_json_str(&b, path, strlen(path));
        dapi_buf_addf(&b,
                      ":{\"get\":{\"tags\":[\"endpoints\"],\"operationId\":\"endpoint_%s\","
                      "\"summary\":",
                      ep->name);
        const char *summary = ep->description ? ep->description : ep->name;
        dapi_json_str(&b, summary, strlen(summary));
        dapi_buf_adds(&b, ",\"description\":\"An endpoint of --endpoints-file (docs/endpoints.md"
                          "): page 1 of its result, or the whole result with format.\","
                          "\"parameters\":[");
        for(size_t k = 0; k < ep->nparams; k++) {
            const struct dapi_eparam *p = &ep->params[k];
            dapi_buf_adds(&b, "{\"name\":");
            dapi_json_str(&b, p->name, strlen(p->name));
            dapi_buf_addf(&b, ",\"in\":\"query\",\"required\":%s", p->required ? "true" : "false");
            if(p->description) {
                dapi_buf_adds(&b, ",\"description\":");
                dapi_json_str(&b, p->description, strlen(p->description));
            }
            dapi_buf_adds(&b, ",\"schema\":");
            if(p->list) {
                dapi_buf_adds(&b, "{\"type\":\"array\",\"items\":");
                add_value_schema(&b, p);
            } else {
                struct dapi_buf s;
                dapi_buf_init(&s, 1 << 20);
                add_value_schema(&s, p);
                if(s.data) /* without its closing brace, for the default */
                    dapi_buf_add(&b, s.data, s.len - 1);
                dapi_buf_free(&s);
            }
            if(p->defs) {
                dapi_buf_adds(&b, ",\"default\":");
                add_default(&b, p);
            }
            dapi_buf_adds(&b, "}");
            if(p->list)
                dapi_buf_adds(&b, ",\"style\":\"form\",\"explode\":true");
            dapi_buf_adds(&b, "},");
        }
        dapi_buf_adds(
            &b,
            "{\"name\":\"format\",\"in\":\"query\",\"required\":false,\"description\":\"The whole "
            "result in one streamed answer instead of page 1\",\"schema\":{\"enum\":[\"csv\","
            "\"tsv\",\"ndjson\",\"json\",\"parquet\"]}}],\"responses\":{\"200\":{\"description\":"
            "\"Page 1 of the result (or the export)\",\"content\":{\"application/json\":{"
            "\"schema\":{\"$ref\":\"#/components/schemas/ResultsPage\"}}}},\"400\":{"
            "\"description\":\"Invalid query parameter: the details name the parameter and the "
            "rule\",\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/"
            "schemas/Error\"}}}},\"401\":{\"$ref\":\"#/components/responses/Unauthorized\"},"
            "\"403\":{\"description\":\"The key may not read a layer the endpoint reads\","
            "\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/"
            "Error\"}}}}}}},");
    }
    return b.data ? dapi_buf_take(&b, len) : (len ? (*len = 0, NULL) : NULL);
}
