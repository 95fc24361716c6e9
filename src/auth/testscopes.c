/* DAPI_TEST_SCOPES (testscopes.h): test-only scoped keys. */
#include "auth/testscopes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *key;
    struct dapi_scope scope;
};

struct dapi_test_scopes {
    struct entry *v;
    size_t n;
};

void dapi_test_scopes_free(struct dapi_test_scopes *ts)
{
    if(!ts)
        return;
    for(size_t i = 0; i < ts->n; i++)
        free(ts->v[i].key);
    free(ts->v);
    free(ts);
}

int dapi_test_scopes_parse(const char *text, struct dapi_test_scopes **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    if(!text || !*text)
        return 0;
    struct dapi_test_scopes *ts = calloc(1, sizeof *ts);
    if(!ts)
        goto nomem;
    for(const char *s = text; *s;) {
        size_t len = strcspn(s, ";"), klen = strcspn(s, "=");
        if(klen >= len || klen == 0) {
            snprintf(err, errlen, "DAPI_TEST_SCOPES: '%.*s' is not <key>=<layer>,…",
                     (int)(len > 64 ? 64 : len), s);
            dapi_test_scopes_free(ts);
            return -1;
        }
        struct entry *nv = realloc(ts->v, (ts->n + 1) * sizeof *nv);
        if(!nv)
            goto nomem;
        ts->v = nv;
        struct entry *e = &ts->v[ts->n];
        memset(e, 0, sizeof *e);
        if(!(e->key = strndup(s, klen)))
            goto nomem;
        ts->n++;
        for(const char *l = s + klen + 1; l < s + len;) {
            size_t ll = strcspn(l, ",;");
            if(ll == 0 || ll > DAPI_LAYER_NAME_MAX || e->scope.n == DAPI_SCOPE_MAX_LAYERS) {
                snprintf(err, errlen, "DAPI_TEST_SCOPES: bad layer list for a key");
                dapi_test_scopes_free(ts);
                return -1;
            }
            memcpy(e->scope.layers[e->scope.n++], l, ll);
            l += ll + (l[ll] == ',');
        }
        s += len + (s[len] == ';');
    }
    *out = ts;
    return 0;
nomem:
    dapi_test_scopes_free(ts);
    snprintf(err, errlen, "DAPI_TEST_SCOPES: out of memory");
    return -1;
}

size_t dapi_test_scopes_count(const struct dapi_test_scopes *ts)
{
    return ts ? ts->n : 0;
}

void dapi_test_scopes_apply(const struct dapi_test_scopes *ts, const char *key,
                            struct dapi_scope *scope)
{
    for(size_t i = 0; ts && key && i < ts->n; i++)
        if(strcmp(ts->v[i].key, key) == 0) {
            *scope = ts->v[i].scope;
            return;
        }
}
