/* libFuzzer driver: dapi_jwt_verify and dapi_jwks_parse (src/auth/jwt.c), the readers of
 * Bearer tokens (hostile, from any client) and of --jwks-file.
 *
 * The first input byte picks what the rest is (mod 3):
 *  0 - a token, verified against a fixed JWKS (an Ed25519 and an EC P-256 key, made from
 *      fixed secrets, so seeds can hold tokens signed by them);
 *  1 - claims JSON: the driver signs it with the Ed25519 key, so the claim checks behind
 *      the signature are reached;
 *  2 - a JWKS text.
 * Checks: verify returns 0 or -1; on -1 a one-line, NUL-terminated reason within whylen
 * (also with a 16-byte buffer, never written past); on 0 an id "jwt:…" of printable ASCII,
 * a scope of at most DAPI_SCOPE_MAX_LAYERS NUL-terminated names that dapi_scope_allows
 * finds, rate and burst in range, no client key; a second verify agrees. A JWKS parse
 * returns OK with 1..DAPI_JWKS_MAX_KEYS keys, or an error with a one-line reason. */
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "auth/jwt.h"
#include "fuzz_common.h"

#define NOW 1800000000LL

static struct dapi_jwks *jwks;
static EVP_PKEY *ed;
static struct dapi_jwt_opts opts = {.audience = "dapi", .issuer = "https://idp", .skew_s = 60};

static char *b64url(const unsigned char *p, size_t len)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len * 4 / 3 + 4), *o = out;
    uint32_t acc = 0;
    int bits = 0;
    for(size_t i = 0; i < len; i++) {
        acc = acc << 8 | p[i];
        bits += 8;
        while(bits >= 6) {
            bits -= 6;
            *o++ = al[(acc >> bits) & 63];
        }
    }
    if(bits)
        *o++ = al[(acc << (6 - bits)) & 63];
    *o = '\0';
    return out;
}

static void setup(void)
{
    static const unsigned char seed[32] = "dapi fuzz_jwt fixed ed25519 key";
    ed = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    unsigned char pub[32];
    size_t len = sizeof pub;
    EVP_PKEY_get_raw_public_key(ed, pub, &len);
    char *x = b64url(pub, len);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char pt[65];
    EVP_PKEY_get_octet_string_param(ec, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &len);
    char *ex = b64url(pt + 1, 32), *ey = b64url(pt + 33, 32);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"d1\",\"x\":\"%s\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             x, ex, ey);
    char err[256];
    if(dapi_jwks_parse(&jwks, text, strlen(text), err, sizeof err)) {
        fprintf(stderr, "fuzz_jwt setup: %s\n", err);
        abort();
    }
    free(x);
    free(ex);
    free(ey);
    EVP_PKEY_free(ec);
    FUZZ_CHECK(dapi_scope_parse("lake1", &opts.default_scope) == 0, "default scope");
}

static void check_verify(const char *tok, size_t len)
{
    struct dapi_principal who;
    char why[200];
    memset(why, 'Z', sizeof why);
    int r = dapi_jwt_verify(jwks, &opts, tok, len, NOW, &who, why, sizeof why);
    FUZZ_CHECK(r == 0 || r == -1, "verify returned %d", r);
    char small[16 + 8];
    memset(small, 'Z', sizeof small);
    struct dapi_principal who2;
    int r2 = dapi_jwt_verify(jwks, &opts, tok, len, NOW, &who2, small, 16);
    FUZZ_CHECK(r2 == r, "second verify disagrees (%d, %d)", r, r2);
    for(size_t i = 16; i < sizeof small; i++)
        FUZZ_CHECK(small[i] == 'Z', "why written past whylen");
    if(r) {
        FUZZ_CHECK(memchr(why, '\0', sizeof why) && why[0], "no reason");
        FUZZ_CHECK(!strchr(why, '\n'), "reason of several lines: %s", why);
        return;
    }
    FUZZ_CHECK(memcmp(who.owner, who2.owner, sizeof who.owner) == 0, "owner differs");
    FUZZ_CHECK(strncmp(who.id, "jwt:", 4) == 0 && memchr(who.id, '\0', sizeof who.id), "id %.64s",
               who.id);
    for(const char *p = who.id; *p; p++)
        FUZZ_CHECK(*p > 0x20 && *p < 0x7f, "id not printable");
    FUZZ_CHECK(who.scope.n <= DAPI_SCOPE_MAX_LAYERS, "scope of %zu layers", who.scope.n);
    for(size_t i = 0; i < who.scope.n; i++) {
        FUZZ_CHECK(memchr(who.scope.layers[i], '\0', DAPI_LAYER_NAME_MAX + 1) &&
                       who.scope.layers[i][0],
                   "layer %zu", i);
        FUZZ_CHECK(dapi_scope_allows(&who.scope, who.scope.layers[i]), "layer %zu not allowed", i);
    }
    FUZZ_CHECK(who.rate >= 0 && who.rate <= 1e9 && who.burst >= 0 && who.burst <= 1e9,
               "rate %g burst %g", who.rate, who.burst);
    FUZZ_CHECK(who.client_key == NULL, "client key set");
}

/* Signs claims (len bytes) with the Ed25519 key under kid d1 and verifies the token. */
static void check_claims(const uint8_t *claims, size_t len)
{
    static const char hdr[] = "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}";
    char *h = b64url((const unsigned char *)hdr, strlen(hdr)), *c = b64url(claims, len);
    size_t in = strlen(h) + 1 + strlen(c);
    char *tok = malloc(in + 100);
    snprintf(tok, in + 1, "%s.%s", h, c);
    unsigned char sig[64];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    FUZZ_CHECK(EVP_DigestSignInit(ctx, NULL, NULL, NULL, ed) == 1 &&
                   EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)tok, in) == 1,
               "signing");
    EVP_MD_CTX_free(ctx);
    char *s = b64url(sig, siglen);
    snprintf(tok + in, 100, ".%s", s);
    check_verify(tok, strlen(tok));
    free(h);
    free(c);
    free(s);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    if(!jwks)
        setup();
    if(size < 1)
        return 0;
    int mode = data[0] % 3;
    data++, size--;
    if(mode == 0) {
        check_verify((const char *)data, size);
    } else if(mode == 1) {
        check_claims(data, size);
    } else {
        struct dapi_jwks *k = NULL;
        char err[300];
        memset(err, 'Z', sizeof err);
        enum dapi_err e = dapi_jwks_parse(&k, (const char *)data, size, err, sizeof err);
        if(e == DAPI_OK) {
            size_t n = dapi_jwks_count(k);
            FUZZ_CHECK(k && n >= 1 && n <= DAPI_JWKS_MAX_KEYS, "%zu keys", n);
        } else {
            FUZZ_CHECK(k == NULL, "set after failure");
            FUZZ_CHECK(memchr(err, '\0', sizeof err) && err[0] && !strchr(err, '\n'), "reason");
        }
        dapi_jwks_free(k);
    }
    return 0;
}
