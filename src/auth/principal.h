/* Who a request is, once authenticated, and what it may do: the one value the API layer hands
 * on after checking an x-api-key (plain list or key store) or a Bearer token (JWT). Backends
 * and the engine read its scope; the rate limiter its limits; the registry its owner. */
#ifndef DAPI_PRINCIPAL_H
#define DAPI_PRINCIPAL_H

#include <stddef.h>
#include <stdint.h>
#include "auth/keys.h"

#define DAPI_SCOPE_MAX_LAYERS 64
#define DAPI_LAYER_NAME_MAX 128

/* The layers a principal may read. all = 1: every layer (unscoped keys: DAPI_API_KEYS,
 * forwarding, a store key without --layers). Otherwise exactly layers[0..n). */
struct dapi_scope {
    int all;
    size_t n;
    char layers[DAPI_SCOPE_MAX_LAYERS][DAPI_LAYER_NAME_MAX + 1];
};

struct dapi_principal {
    /* Owns the slugs it creates: the hash of the key (plain keys), of the store key's public
     * id (so a rotated key keeps its queries), or of the token's issuer + subject. */
    unsigned char owner[DAPI_KEY_HASH_LEN];
    char id[64]; /* public id for logs: the store key's id, "jwt:<sub>", or "" */
    struct dapi_scope scope;
    double rate;              /* requests per second allowed; 0 = the server's default */
    double burst;             /* bucket size; 0 = the server's default */
    const char *client_key;   /* the x-api-key as sent (borrowed; for Nekt forwarding) or NULL */
    const char *upstream_key; /* Nekt: the upstream key this principal uses, or NULL */
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
