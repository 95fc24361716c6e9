/* Who a request is, once authenticated, and what it may do: the one value the API layer hands
 * on after checking an x-api-key (plain list or key store) or a Bearer token (JWT). Backends
 * and the engine read its scope; the rate limiter its limits; the registry its owner. */
#ifndef DAPI_PRINCIPAL_H
#define DAPI_PRINCIPAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "auth/keys.h"
#include "base/scope.h" /* struct dapi_scope: the engine reads it too */

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
    /* This request's Cache-Control on a create (result reuse): 0 = the server's max age
     * (--reuse-max-age), N > 0 = at most N s (max-age=N), < 0 = do not reuse (no-cache,
     * no-store, max-age=0). Not part of who the caller is, but handed on with it. */
    int64_t reuse_max_age;
};

/* An empty principal (no owner, no id, no layer, no limits). The scope's layer names are
 * left as they are: they are read only below scope.n, and clearing all 8 KiB of them was
 * the largest memset of a page request after libmicrohttpd's own. */
_Static_assert(offsetof(struct dapi_principal, rate) >=
                   offsetof(struct dapi_principal, scope.layers) +
                       sizeof(((struct dapi_scope *)0)->layers),
               "dapi_principal_clear: the scope's layers come right before rate");

static inline void dapi_principal_clear(struct dapi_principal *who)
{
    memset(who, 0, offsetof(struct dapi_principal, scope.layers));
    memset(&who->rate, 0, sizeof *who - offsetof(struct dapi_principal, rate));
}

#endif
