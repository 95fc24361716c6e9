/* Signed tokens: "Authorization: Bearer <JWT>" verified against a JSON Web Key Set. The one
 * file that knows JOSE; signatures are checked with OpenSSL (RS256: RSASSA-PKCS1-v1_5 with
 * SHA-256, RSA keys of 2048 bits or more; ES256: ECDSA P-256 with SHA-256; EdDSA: Ed25519).
 * Only an algorithm that matches its key's type is accepted; "none" and the HMAC algorithms
 * (HS256…, which a public key must never verify) are refused, as is a JWKS holding private
 * or symmetric key material.
 *
 * Time is passed in (now_s, Unix seconds), never read here. */
#ifndef DAPI_JWT_H
#define DAPI_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "auth/principal.h"
#include "dapi/err.h"

#define DAPI_JWT_MAX_BYTES (8 * 1024)     /* longest token accepted */
#define DAPI_JWKS_MAX_BYTES (1024 * 1024) /* largest JWKS file */
#define DAPI_JWKS_MAX_KEYS 64

struct dapi_jwks;

struct dapi_jwt_opts {
    const char *audience;            /* aud must hold it (a string, or an array with it) */
    const char *issuer;              /* iss must equal it */
    int64_t skew_s;                  /* allowed clock difference for exp and nbf */
    struct dapi_scope default_scope; /* for a token without dapi_layers */
};

/* Reads a JWKS ({"keys":[…]}) from path / text. Keys of a type dapi does not verify with
 * (kty other than RSA, EC, OKP; a "use" other than "sig") are skipped; a usable-looking key
 * that is malformed, a private or symmetric key, a duplicate kid or a set without any usable
 * key is an error (err says which key and why). */
enum dapi_err dapi_jwks_load(struct dapi_jwks **out, const char *path, char *err, size_t errlen);
enum dapi_err dapi_jwks_parse(struct dapi_jwks **out, const char *text, size_t len, char *err,
                              size_t errlen);
/* Reads path again (SIGHUP) and swaps the new keys in at once; if they cannot be loaded, k
 * keeps its keys and err says why. Safe while other threads verify. */
enum dapi_err dapi_jwks_reload(struct dapi_jwks *k, const char *path, char *err, size_t errlen);
size_t dapi_jwks_count(const struct dapi_jwks *k);
void dapi_jwks_free(struct dapi_jwks *k);

/* Parses a layer list ("a,b", blanks around names ignored; "*" = every layer; "" = none). */
int dapi_scope_parse(const char *list, struct dapi_scope *out);

/* Verifies token (len bytes) at now_s. Clears who; on success returns 0 and fills it: id "jwt:<sub>",
 * owner = SHA-256(iss "\0" sub), scope from dapi_layers (else o->default_scope), rate and
 * burst from dapi_rate / dapi_burst (else 0: the server's defaults). Otherwise returns -1 and
 * why says what is wrong in a short phrase fit for a client ("token expired"), never
 * echoing the token. Safe from any thread, also during dapi_jwks_reload. */
int dapi_jwt_verify(const struct dapi_jwks *k, const struct dapi_jwt_opts *o, const char *token,
                    size_t len, int64_t now_s, struct dapi_principal *who, char *why,
                    size_t whylen);

#endif
