/* Bind parameters of POST /api/queries (docs/api.md "Bind parameters"): the request's
 * "params" object checked and written in one canonical form — names sorted, each value typed
 * as JSON types it — which is what the engine binds, what is stored with the query and what
 * result reuse hashes (so {"a":1,"b":"x"} and {"b":"x","a":1} are the same query, and 1 and
 * "1" are not). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/jsonin.h"

#define MAX_PARAMS 256

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if(n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for(size_t i = 0; i < n; i++)
        if(!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* A scalar in canonical form; -1 (why set) for a value that is not one. A number that is not
 * an integer keeps the digits the client sent when x (its twin) has them: a DECIMAL
 * parameter is bound from that text (engine/params.c), so no digit is lost to a double. */
static int add_scalar(struct dapi_buf *b, const struct dapi_jv *v, const struct dapi_jv *x,
                      const char **why)
{
    const char *exact;
    size_t len;
    const char *s;
    char num[64];
    switch(dapi_jv_type(v)) {
    case DAPI_J_STRING:
        s = dapi_jv_str(v, &len);
        if(strlen(s) != len) {
            *why = "must not contain NUL characters";
            return -1;
        }
        dapi_json_str(b, s, len);
        return 0;
    case DAPI_J_INT: dapi_buf_addf(b, "%lld", (long long)dapi_jv_int(v)); return 0;
    case DAPI_J_REAL:
        if((exact = dapi_jv_numtext(x, NULL))) {
            dapi_buf_adds(b, exact);
            return 0;
        }
        /* shortest text that reads back as the same double, and still reads as a real */
        snprintf(num, sizeof num, "%.17g", dapi_jv_real(v));
        for(int p = 1; p < 17; p++) {
            char t[64];
            snprintf(t, sizeof t, "%.*g", p, dapi_jv_real(v));
            if(strtod(t, NULL) == dapi_jv_real(v)) {
                memcpy(num, t, sizeof t);
                break;
            }
        }
        dapi_buf_adds(b, num);
        if(!strpbrk(num, ".eEni"))
            dapi_buf_adds(b, ".0");
        return 0;
    case DAPI_J_TRUE: dapi_buf_adds(b, "true"); return 0;
    case DAPI_J_FALSE: dapi_buf_adds(b, "false"); return 0;
    case DAPI_J_NULL: dapi_buf_adds(b, "null"); return 0;
    default: *why = "must be a string, a number, true, false, null or a list of those"; return -1;
    }
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *dapi_api_params_json(const struct dapi_jv *params, const struct dapi_jv *exact, char *err,
                           size_t errlen)
{
    const char *keys[MAX_PARAMS];
    size_t n = 0;
    if(dapi_jv_type(params) != DAPI_J_OBJECT) {
        snprintf(err, errlen, "\"params\" must be an object of parameter values");
        return NULL;
    }
    for(void *it = dapi_jv_iter(params); it; it = dapi_jv_iter_next(params, it)) {
        if(n == MAX_PARAMS) {
            snprintf(err, errlen, "\"params\" may hold at most %d parameters", MAX_PARAMS);
            return NULL;
        }
        keys[n] = dapi_jv_iter_key(it);
        if(!valid_name(keys[n])) {
            snprintf(err, errlen,
                     "parameter name '%.128s' is not valid: use letters, digits and '_', "
                     "not starting with a digit (the query names it $name)",
                     keys[n]);
            return NULL;
        }
        n++;
    }
    qsort(keys, n, sizeof *keys, cmp_key);
    struct dapi_buf b;
    dapi_buf_init(&b, (size_t)-1 / 2); /* (bounded by the request body) */
    dapi_buf_addc(&b, '{');
    for(size_t i = 0; i < n; i++) {
        const struct dapi_jv *v = dapi_jv_get(params, keys[i]);
        const struct dapi_jv *x = exact ? dapi_jv_get(exact, keys[i]) : NULL;
        const char *why = NULL;
        if(i)
            dapi_buf_addc(&b, ',');
        dapi_json_str(&b, keys[i], strlen(keys[i]));
        dapi_buf_addc(&b, ':');
        if(dapi_jv_type(v) == DAPI_J_ARRAY) {
            dapi_buf_addc(&b, '[');
            for(size_t k = 0; k < dapi_jv_array_size(v) && !why; k++) {
                const struct dapi_jv *e = dapi_jv_index(v, k);
                if(k)
                    dapi_buf_addc(&b, ',');
                if(dapi_jv_type(e) == DAPI_J_ARRAY)
                    why = "is a list: its elements must be strings, numbers, true, false or null";
                else
                    add_scalar(&b, e, dapi_jv_index(x, k), &why);
            }
            dapi_buf_addc(&b, ']');
        } else {
            add_scalar(&b, v, x, &why);
        }
        if(why) {
            snprintf(err, errlen, "parameter '%s' %s", keys[i], why);
            dapi_buf_free(&b);
            return NULL;
        }
    }
    dapi_buf_addc(&b, '}');
    if(!b.data) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return dapi_buf_take(&b, NULL);
}
