/* The layers a principal may read (auth/principal.h), as a plain value: the API fills it,
 * the registry stores it with each query, and the engine holds every query to it (the
 * engine's layer may not use auth/, so the value lives here). */
#ifndef DAPI_SCOPE_H
#define DAPI_SCOPE_H

#include <stddef.h>

#define DAPI_SCOPE_MAX_LAYERS 64
#define DAPI_LAYER_NAME_MAX 128

/* The layers a principal may read. all = 1: every layer (unscoped keys: DAPI_API_KEYS,
 * forwarding, a store key without --layers). Otherwise exactly layers[0..n). */
struct dapi_scope {
    int all;
    size_t n;
    char layers[DAPI_SCOPE_MAX_LAYERS][DAPI_LAYER_NAME_MAX + 1];
};

/* 1 if the scope lets its holder read layer (exact, case-sensitive: layer names are
 * directory names). */
static inline int dapi_scope_allows(const struct dapi_scope *s, const char *layer)
{
    if(s->all)
        return 1;
    for(size_t i = 0; i < s->n; i++) {
        const char *a = s->layers[i], *b = layer;
        while(*a && *a == *b)
            a++, b++;
        if(*a == *b)
            return 1;
    }
    return 0;
}

#endif
