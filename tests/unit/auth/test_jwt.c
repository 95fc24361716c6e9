/* Signed tokens: keys generated at test time with OpenSSL (RSA 2048, EC P-256, Ed25519), a
 * JWKS built from their public parts, tokens signed here. Valid tokens of each algorithm;
 * expired, not yet valid, wrong audience, wrong issuer, bad signature, alg none, HS256 signed
 * with the public key, an algorithm that does not match its key, unknown or missing kid,
 * malformed base64 and JSON, oversized; claims mapped to the principal; JWKS errors and a
 * reload that keeps the old keys when the new file is bad. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/jwt.h"
#include "t.h"

#define NOW 1800000000LL

static EVP_PKEY *rsa, *ec, *ed, *rsa2;
static char jwks_text[8192];

static char *b64url(const void *data, size_t len)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = malloc(len * 4 / 3 + 4), *o = out;
    size_t i = 0;
    for(; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63], *o++ = al[(v >> 6) & 63], *o++ = al[v & 63];
    }
    if(len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63];
    } else if(len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = al[v >> 18], *o++ = al[(v >> 12) & 63], *o++ = al[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static char *bn_param(EVP_PKEY *k, const char *name)
{
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(k, name, &bn);
    unsigned char buf[512];
    int n = BN_bn2bin(bn, buf);
    BN_free(bn);
    return b64url(buf, (size_t)n);
}

static void jwk_rsa(char *out, size_t n, EVP_PKEY *k, const char *kid)
{
    char *nn = bn_param(k, OSSL_PKEY_PARAM_RSA_N), *e = bn_param(k, OSSL_PKEY_PARAM_RSA_E);
    snprintf(out, n, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
             kid, nn, e);
    free(nn);
    free(e);
}

static void jwk_ec(char *out, size_t n, EVP_PKEY *k, const char *kid)
{
    unsigned char pt[65];
    size_t len = 0;
    EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &len);
    char *x = b64url(pt + 1, 32), *y = b64url(pt + 33, 32);
    snprintf(out, n, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
             kid, x, y);
    free(x);
    free(y);
}

static void jwk_ed(char *out, size_t n, EVP_PKEY *k, const char *kid)
{
    unsigned char raw[32];
    size_t len = sizeof raw;
    EVP_PKEY_get_raw_public_key(k, raw, &len);
    char *x = b64url(raw, len);
    snprintf(out, n, "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", kid, x);
    free(x);
}

/* header.claims signed by k with alg ("RS256", "ES256", "EdDSA", "HS256" with hs_secret). */
static char *sign(EVP_PKEY *k, const char *alg, const char *header, const char *claims,
                  const char *hs_secret)
{
    char *h = b64url(header, strlen(header)), *c = b64url(claims, strlen(claims));
    size_t inlen = strlen(h) + 1 + strlen(c);
    char *input = malloc(inlen + 1);
    snprintf(input, inlen + 1, "%s.%s", h, c);
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    if(strcmp(alg, "HS256") == 0) {
        unsigned int l = 32;
        HMAC(EVP_sha256(), hs_secret, (int)strlen(hs_secret), (unsigned char *)input, inlen, sig,
             &l);
        siglen = l;
    } else if(strcmp(alg, "none") == 0) {
        siglen = 0;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestSignInit(ctx, NULL, strcmp(alg, "EdDSA") == 0 ? NULL : EVP_sha256(), NULL, k);
        EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, inlen);
        EVP_MD_CTX_free(ctx);
        if(strcmp(alg, "ES256") == 0) { /* DER -> r || s */
            const unsigned char *p = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
            unsigned char rs[64];
            BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
            ECDSA_SIG_free(es);
            memcpy(sig, rs, 64);
            siglen = 64;
        }
    }
    char *s = b64url(sig, siglen);
    size_t n = inlen + 2 + strlen(s);
    char *tok = malloc(n);
    snprintf(tok, n, "%s.%s", input, s);
    free(h);
    free(c);
    free(input);
    free(s);
    return tok;
}

static struct dapi_jwks *jwks;
static struct dapi_jwt_opts opts;

static char *claims(const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"alice\",\"exp\":%lld%s}",
             NOW + 300, extra);
    return buf;
}

/* Verifies token; returns 0 or -1 and leaves the reason in why. */
static char why[256];
static struct dapi_principal who;
static int verify(const char *tok)
{
    memset(&who, 0, sizeof who);
    why[0] = '\0';
    return dapi_jwt_verify(jwks, &opts, tok, strlen(tok), NOW, &who, why, sizeof why);
}

#define REFUSED(tok, reason)                                                         \
    do {                                                                             \
        char *t_ = (tok);                                                            \
        T_EQ_INT(verify(t_), -1);                                                    \
        T_CHECK(strstr(why, reason) != NULL, "reason [%s] holds [%s]", why, reason); \
        free(t_);                                                                    \
    } while(0)
#define ACCEPTED(tok)                                               \
    do {                                                            \
        char *t_ = (tok);                                           \
        int r_ = verify(t_);                                        \
        T_CHECK(r_ == 0, "accepted at line %d: %s", __LINE__, why); \
        free(t_);                                                   \
    } while(0)

static void setup(void)
{
    rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    T_CHECK(rsa && rsa2 && ec && ed, "keys generated");
    char a[2048], b[512], c[512];
    jwk_rsa(a, sizeof a, rsa, "r1");
    jwk_ec(b, sizeof b, ec, "e1");
    jwk_ed(c, sizeof c, ed, "d1");
    snprintf(jwks_text, sizeof jwks_text,
             "{\"keys\":[%s,%s,%s,{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"x\"}]}", a, b, c);
    char err[512] = "";
    T_EQ_INT(dapi_jwks_parse(&jwks, jwks_text, strlen(jwks_text), err, sizeof err), DAPI_OK);
    T_CHECK(jwks != NULL, "jwks: %s", err);
    T_EQ_INT(dapi_jwks_count(jwks), 3); /* the encryption key skipped */
    opts.audience = "dapi";
    opts.issuer = "https://idp.example";
    opts.skew_s = 60;
}

static void test_valid(void)
{
    ACCEPTED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWT\"}", claims(""),
                  NULL));
    T_EQ_STR(who.id, "jwt:alice");
    unsigned char want[DAPI_KEY_HASH_LEN];
    dapi_sha256("https://idp.example\0alice", 25, want); /* 19 + 1 + 5 */
    T_CHECK(memcmp(who.owner, want, sizeof want) == 0, "owner = SHA-256(iss \\0 sub)");
    T_CHECK(!who.scope.all && who.scope.n == 0, "no dapi_layers, no default: no layer");
    T_CHECK(who.rate == 0 && who.burst == 0, "server default rate");
    T_CHECK(who.client_key == NULL, "no client key");
    ACCEPTED(sign(ec, "ES256", "{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims(""), NULL));
    ACCEPTED(sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", claims(""), NULL));
    /* aud as an array; nbf in the past; float exp */
    char extra[256];
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", NOW - 10);
    ACCEPTED(sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}",
                  "{\"iss\":\"https://idp.example\",\"aud\":[\"other\",\"dapi\"],\"sub\":\"bob\","
                  "\"exp\":1800000100.5}",
                  NULL));
    T_EQ_STR(who.id, "jwt:bob");
    ACCEPTED(sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", claims(extra), NULL));
}

static void test_claims_mapped(void)
{
    ACCEPTED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                  claims(",\"dapi_layers\":[\"nekt_raw\",\"nekt_trusted\"],\"dapi_rate\":\"120/"
                         "min\",\"dapi_burst\":7"),
                  NULL));
    T_CHECK(!who.scope.all && who.scope.n == 2, "two layers");
    T_CHECK(dapi_scope_allows(&who.scope, "nekt_raw") &&
                dapi_scope_allows(&who.scope, "nekt_trusted") &&
                !dapi_scope_allows(&who.scope, "nekt_service"),
            "scope from dapi_layers");
    T_CHECK(who.rate == 2 && who.burst == 7, "rate %g burst %g", who.rate, who.burst);
    ACCEPTED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                  claims(",\"dapi_layers\":[\"*\"],\"dapi_rate\":0.5"), NULL));
    T_CHECK(who.scope.all && who.rate == 0.5, "* = all layers; numeric rate");
    ACCEPTED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                  claims(",\"dapi_layers\":[]"), NULL));
    T_CHECK(!who.scope.all && who.scope.n == 0, "empty list: no layer");
    /* the default scope for tokens without the claim */
    T_EQ_INT(dapi_scope_parse(" nekt_raw , nekt_service", &opts.default_scope), 0);
    ACCEPTED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), NULL));
    T_CHECK(who.scope.n == 2 && dapi_scope_allows(&who.scope, "nekt_service"), "default scope");
    T_EQ_INT(dapi_scope_parse("*", &opts.default_scope), 0);
    T_CHECK(opts.default_scope.all, "* parsed");
    T_EQ_INT(dapi_scope_parse("a,,b", &opts.default_scope), -1);
    T_EQ_INT(dapi_scope_parse("a/b", &opts.default_scope), -1);
    T_EQ_INT(dapi_scope_parse("", &opts.default_scope), 0);
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                 claims(",\"dapi_layers\":\"nekt_raw\""), NULL),
            "dapi_layers");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                 claims(",\"dapi_layers\":[1]"), NULL),
            "dapi_layers");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                 claims(",\"dapi_rate\":\"fast\""), NULL),
            "dapi_rate");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(",\"dapi_rate\":-1"),
                 NULL),
            "dapi_rate");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(",\"dapi_burst\":0"),
                 NULL),
            "dapi_burst");
}

static void test_time(void)
{
    const char *h = "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}";
    char c[512];
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld}",
             NOW - 61);
    REFUSED(sign(ed, "EdDSA", h, c, NULL), "token expired");
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld}",
             NOW - 59);
    ACCEPTED(sign(ed, "EdDSA", h, c, NULL)); /* within the skew */
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld,\"nbf\":%lld}",
             NOW + 600, NOW + 61);
    REFUSED(sign(ed, "EdDSA", h, c, NULL), "not valid yet");
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld,\"nbf\":%lld}",
             NOW + 600, NOW + 59);
    ACCEPTED(sign(ed, "EdDSA", h, c, NULL));
    REFUSED(sign(ed, "EdDSA", h,
                 "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\"}", NULL),
            "no exp");
    REFUSED(sign(ed, "EdDSA", h,
                 "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\",\"exp\":\"x\"}",
                 NULL),
            "exp is not a number");
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":9223372036854775807}");
    ACCEPTED(sign(ed, "EdDSA", h, c, NULL)); /* no overflow */
}

static void test_audience_issuer_subject(void)
{
    const char *h = "{\"alg\":\"ES256\",\"kid\":\"e1\"}";
    char c[512];
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"other\",\"sub\":\"a\","
             "\"exp\":%lld}",
             NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "audience");
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":[\"x\",\"y\"],\"sub\":\"a\","
             "\"exp\":%lld}",
             NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "audience");
    snprintf(c, sizeof c, "{\"iss\":\"https://idp.example\",\"sub\":\"a\",\"exp\":%lld}",
             NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "audience");
    snprintf(c, sizeof c,
             "{\"iss\":\"https://evil.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld}",
             NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "issuer");
    snprintf(c, sizeof c, "{\"aud\":\"dapi\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "issuer");
    snprintf(c, sizeof c, "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"exp\":%lld}",
             NOW + 60);
    REFUSED(sign(ec, "ES256", h, c, NULL), "sub");
}

static void test_signatures_and_algorithms(void)
{
    /* signed by another RSA key under r1's kid */
    REFUSED(sign(rsa2, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), NULL),
            "bad token signature");
    /* claims changed after signing */
    char *t = sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), NULL);
    char *other = sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                       claims(",\"dapi_layers\":[\"*\"]"), NULL);
    char *d1 = strchr(t, '.'), *d2 = strrchr(t, '.');
    char *o1 = strchr(other, '.'), *o2 = strrchr(other, '.');
    char forged[8192];
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(d1 - t), t, (int)(o2 - o1), o1, d2);
    REFUSED(strdup(forged), "bad token signature");
    free(other);
    free(t);
    /* EdDSA signature moved under an ES256 header of the same key family: wrong length */
    REFUSED(sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"e1\"}", claims(""), NULL),
            "does not match");
    REFUSED(sign(ec, "ES256", "{\"alg\":\"RS256\",\"kid\":\"e1\"}", claims(""), NULL),
            "does not match the key's type (EC P-256)");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"ES256\",\"kid\":\"r1\"}", claims(""), NULL),
            "does not match");
    REFUSED(sign(NULL, "none", "{\"alg\":\"none\",\"kid\":\"r1\"}", claims(""), NULL), "alg none");
    REFUSED(sign(NULL, "none", "{\"alg\":\"none\"}", claims(""), NULL), "alg none");
    /* HS256 "signed" with the public key as the HMAC secret: key confusion */
    REFUSED(sign(NULL, "HS256", "{\"alg\":\"HS256\",\"kid\":\"r1\"}", claims(""), jwks_text),
            "HMAC tokens");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"PS256\",\"kid\":\"r1\"}", claims(""), NULL),
            "not supported");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"exp\"]}", claims(""),
                 NULL),
            "crit");
    REFUSED(sign(rsa, "RS256", "{\"kid\":\"r1\"}", claims(""), NULL), "no alg");
}

static void test_kid(void)
{
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"nope\"}", claims(""), NULL),
            "unknown kid");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\"}", claims(""), NULL), "no kid");
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":1}", claims(""), NULL),
            "kid is not a string");
    /* one key: kid may be left out */
    char a[2048], set[4096], err[512];
    jwk_ed(a, sizeof a, ed, "only");
    snprintf(set, sizeof set, "{\"keys\":[%s]}", a);
    struct dapi_jwks *one = NULL;
    T_EQ_INT(dapi_jwks_parse(&one, set, strlen(set), err, sizeof err), DAPI_OK);
    char *t = sign(ed, "EdDSA", "{\"alg\":\"EdDSA\"}", claims(""), NULL);
    T_EQ_INT(dapi_jwt_verify(one, &opts, t, strlen(t), NOW, &who, why, sizeof why), 0);
    free(t);
    dapi_jwks_free(one);
}

static void test_malformed(void)
{
    static const char *bad[][2] = {
        {"", "empty"},
        {"abc", "not a signed JWT"},
        {"a.b", "not a signed JWT"},
        {"a.b.c.d", "not a signed JWT"},
        {"e*J.e30.AAAA", "header is not base64url"},
        {"eyJhbGciOiJSUzI1NiJ9=.e30.AAAA", "header is not base64url"},
        {"bm90IGpzb24.e30.AAAA", "header is not base64url JSON"}, /* "not json" */
        {"W10.e30.AAAA", "header is not base64url JSON"},         /* [] */
    };
    for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        T_EQ_INT(verify(bad[i][0]), -1);
        T_CHECK(strstr(why, bad[i][1]) != NULL, "[%s]: [%s] holds [%s]", bad[i][0], why,
                bad[i][1]);
    }
    char *t = sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", "not json", NULL);
    REFUSED(t, "claims are not base64url JSON");
    t = sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", "[1]", NULL);
    REFUSED(t, "claims are not a JSON object");
    t = sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), NULL);
    char *bang = malloc(strlen(t) + 3);
    snprintf(bang, strlen(t) + 3, "%s!!", t);
    free(t);
    REFUSED(bang, "signature is not base64url");
    /* oversized */
    char pad[9000];
    memset(pad, 'a', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char big[9100];
    snprintf(big, sizeof big, ",\"x\":\"%s\"", pad);
    char *c = malloc(10000);
    snprintf(c, 10000,
             "{\"iss\":\"https://idp.example\",\"aud\":\"dapi\",\"sub\":\"a\","
             "\"exp\":%lld%s}",
             NOW + 60, big);
    REFUSED(sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, NULL), "longer than");
    free(c);
}

static void jwks_refused(const char *text, const char *reason)
{
    struct dapi_jwks *k = NULL;
    char err[512] = "";
    T_CHECK(dapi_jwks_parse(&k, text, strlen(text), err, sizeof err) != DAPI_OK, "refused: %.80s",
            text);
    T_CHECK(strstr(err, reason) != NULL, "[%s] holds [%s]", err, reason);
    dapi_jwks_free(k);
}

static void test_jwks_errors(void)
{
    jwks_refused("not json", "not JSON");
    jwks_refused("{}", "no \"keys\" array");
    jwks_refused("{\"keys\":[]}", "no RSA, EC P-256 or Ed25519");
    jwks_refused("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", "secret key material");
    jwks_refused("{\"keys\":[{\"kty\":\"oct\",\"kid\":\"s\"}]}", "no RSA, EC P-256 or Ed25519");
    jwks_refused("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}", "32 bytes");
    jwks_refused("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AAAA\"}]}", "Ed25519");
    jwks_refused("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
                 "P-256");
    jwks_refused("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                 "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                 "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}",
                 "not a point");
    jwks_refused("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "2048 bits");
    jwks_refused("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "needs base64url n and e");
    /* private key material, a duplicate kid, an alg that does not fit the key */
    char a[2048], b[4200];
    jwk_ed(a, sizeof a, ed, "k");
    snprintf(b, sizeof b, "{\"keys\":[%.*s,\"d\":\"AAAA\"}]}", (int)strlen(a) - 1, a);
    jwks_refused(b, "private");
    snprintf(b, sizeof b, "{\"keys\":[%s,%s]}", a, a);
    jwks_refused(b, "kid used twice");
    snprintf(b, sizeof b, "{\"keys\":[%.*s,\"alg\":\"RS256\"}]}", (int)strlen(a) - 1, a);
    jwks_refused(b, "does not fit");
    char *huge = malloc(DAPI_JWKS_MAX_BYTES + 10);
    memset(huge, ' ', DAPI_JWKS_MAX_BYTES + 9);
    huge[DAPI_JWKS_MAX_BYTES + 9] = '\0';
    jwks_refused(huge, "larger than");
    free(huge);
}

static void test_reload(void)
{
    char dir[64], path[128], err[512];
    t_tmpdir(dir, sizeof dir, "jwks");
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    char a[2048], set[4096];
    jwk_ed(a, sizeof a, ed, "d1");
    snprintf(set, sizeof set, "{\"keys\":[%s]}", a);
    t_write(path, set);
    struct dapi_jwks *k = NULL;
    T_EQ_INT(dapi_jwks_load(&k, path, err, sizeof err), DAPI_OK);
    if(!k)
        return;
    char *t = sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", claims(""), NULL);
    T_EQ_INT(dapi_jwt_verify(k, &opts, t, strlen(t), NOW, &who, why, sizeof why), 0);
    t_write(path, "{\"keys\":["); /* broken: the old keys stay */
    T_CHECK(dapi_jwks_reload(k, path, err, sizeof err) != DAPI_OK, "bad file refused");
    T_CHECK(strstr(err, "jwks.json") != NULL, "err names the file: %s", err);
    T_EQ_INT(dapi_jwt_verify(k, &opts, t, strlen(t), NOW, &who, why, sizeof why), 0);
    jwk_rsa(a, sizeof a, rsa, "r1"); /* rotated: only the RSA key now */
    snprintf(set, sizeof set, "{\"keys\":[%s]}", a);
    t_write(path, set);
    T_EQ_INT(dapi_jwks_reload(k, path, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_jwt_verify(k, &opts, t, strlen(t), NOW, &who, why, sizeof why), -1);
    T_CHECK(strstr(why, "unknown kid") != NULL, "old key gone: %s", why);
    free(t);
    t_rm_rf(dir);
    T_CHECK(dapi_jwks_load(&k, path, err, sizeof err) != DAPI_OK, "missing file refused");
    dapi_jwks_free(k);
}

/* Verifications from other threads never fail while the set is reloaded under them (both
 * sets hold the key). */
static struct dapi_jwks *live;
static const char *live_token;
static atomic_int live_failures, live_stop;

static void *verifier(void *arg)
{
    while(!atomic_load(&live_stop)) {
        struct dapi_principal p;
        char w[160];
        if(dapi_jwt_verify(live, &opts, live_token, strlen(live_token), NOW, &p, w, sizeof w))
            atomic_fetch_add(&live_failures, 1);
    }
    return arg;
}

static void test_reload_under_load(void)
{
    char dir[64], path[128], err[512], a[2048], b[2048], one[4200], two[4200];
    t_tmpdir(dir, sizeof dir, "jwks-load");
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    jwk_ed(a, sizeof a, ed, "d1");
    jwk_ec(b, sizeof b, ec, "e1");
    snprintf(one, sizeof one, "{\"keys\":[%s]}", a);
    snprintf(two, sizeof two, "{\"keys\":[%s,%s]}", b, a);
    t_write(path, one);
    T_EQ_INT(dapi_jwks_load(&live, path, err, sizeof err), DAPI_OK);
    if(!live)
        return;
    char *t = sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", claims(""), NULL);
    live_token = t;
    pthread_t th[2];
    for(int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, verifier, NULL);
    for(int i = 0; i < 40; i++) {
        t_write(path, i % 2 ? one : two);
        T_EQ_INT(dapi_jwks_reload(live, path, err, sizeof err), DAPI_OK);
    }
    atomic_store(&live_stop, 1);
    for(int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    T_EQ_INT(atomic_load(&live_failures), 0);
    free(t);
    dapi_jwks_free(live);
    t_rm_rf(dir);
}

int main(void)
{
    setup();
    if(!jwks)
        T_DONE();
    test_valid();
    test_claims_mapped();
    memset(&opts.default_scope, 0, sizeof opts.default_scope);
    test_time();
    test_audience_issuer_subject();
    test_signatures_and_algorithms();
    test_kid();
    test_malformed();
    test_jwks_errors();
    test_reload();
    test_reload_under_load();
    dapi_jwks_free(jwks);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ed);
    T_DONE();
}
