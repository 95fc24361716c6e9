#include "auth/jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/ratelimit.h"
#include "base/jsonin.h"

/* OpenSSL only under src/auth/ (keys.h). */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

enum kind { K_RSA, K_EC, K_ED25519 };
static const char *const kind_alg[] = {"RS256", "ES256", "EdDSA"};
static const char *const kind_name[] = {"RSA", "EC P-256", "Ed25519"};

struct key {
    char kid[128]; /* "" when the JWK has none */
    enum kind kind;
    EVP_PKEY *pkey;
};

struct key_set {
    struct key *keys;
    size_t n;
};

/* The struct never moves; reload swaps the set under the write lock (as keys.c does). */
struct dapi_jwks {
    pthread_rwlock_t lock;
    struct key_set set;
};

/* ---------------------------------------------------------------- base64url */

static int b64val(unsigned char c)
{
    if(c >= 'A' && c <= 'Z')
        return c - 'A';
    if(c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if(c >= '0' && c <= '9')
        return c - '0' + 52;
    if(c == '-')
        return 62;
    if(c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded base64url (len chars) into out (cap bytes). Returns the length, or -1
 * (a character outside the alphabet, padding, an impossible length, too long). */
static long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if(len % 4 == 1)
        return -1;
    size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if(n > cap)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for(size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)in[i]);
        if(v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if(bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if(bits && (acc & ((1u << bits) - 1))) /* non-canonical trailing bits */
        return -1;
    return (long)o;
}

/* ---------------------------------------------------------------- JWKS */

static void set_free(struct key_set *s)
{
    for(size_t i = 0; i < s->n; i++)
        EVP_PKEY_free(s->keys[i].pkey);
    free(s->keys);
    s->keys = NULL;
    s->n = 0;
}

/* A base64url member of a JWK, decoded into out (cap bytes); its length or -1. */
static long member_b64(const struct dapi_jv *jwk, const char *name, unsigned char *out, size_t cap)
{
    size_t len;
    const char *v = dapi_jv_str(dapi_jv_get(jwk, name), &len);
    if(!v || !len)
        return -1;
    return b64url_decode(v, len, out, cap);
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if(params && ctx && EVP_PKEY_fromdata_init(ctx) > 0 &&
       EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_key(const struct dapi_jv *jwk, const char **why)
{
    unsigned char n[1024], e[16];
    long nl = member_b64(jwk, "n", n, sizeof n), el = member_b64(jwk, "e", e, sizeof e);
    if(nl < 0 || el < 0) {
        *why = "RSA key needs base64url n and e";
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    EVP_PKEY *pkey = NULL;
    if(bn && be && BN_num_bits(bn) < 2048)
        *why = "RSA key shorter than 2048 bits";
    else if(bn && be) {
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if(bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
           OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
            pkey = fromdata("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        if(!pkey)
            *why = "RSA key not accepted by OpenSSL";
    }
    BN_free(bn);
    BN_free(be);
    return pkey;
}

static EVP_PKEY *ec_key(const struct dapi_jv *jwk, const char **why)
{
    size_t len;
    const char *crv = dapi_jv_str(dapi_jv_get(jwk, "crv"), &len);
    if(!crv || strcmp(crv, "P-256") != 0) {
        *why = "EC key: only crv P-256 is supported";
        return NULL;
    }
    unsigned char pt[65];
    pt[0] = 0x04; /* uncompressed point: 04 || x || y */
    if(member_b64(jwk, "x", pt + 1, 32) != 32 || member_b64(jwk, "y", pt + 33, 32) != 32) {
        *why = "EC key needs base64url x and y of 32 bytes";
        return NULL;
    }
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if(bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
       OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt))
        pkey = fromdata("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if(pkey) { /* fromdata does not check that the point is on the curve */
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if(!c || EVP_PKEY_public_check(c) <= 0) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
        EVP_PKEY_CTX_free(c);
    }
    if(!pkey)
        *why = "EC key is not a point of P-256";
    return pkey;
}

static EVP_PKEY *okp_key(const struct dapi_jv *jwk, const char **why)
{
    size_t len;
    const char *crv = dapi_jv_str(dapi_jv_get(jwk, "crv"), &len);
    if(!crv || strcmp(crv, "Ed25519") != 0) {
        *why = "OKP key: only crv Ed25519 is supported";
        return NULL;
    }
    unsigned char x[32];
    if(member_b64(jwk, "x", x, sizeof x) != 32) {
        *why = "Ed25519 key needs a base64url x of 32 bytes";
        return NULL;
    }
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof x);
    if(!pkey)
        *why = "Ed25519 key not accepted by OpenSSL";
    return pkey;
}

static enum dapi_err parse_set(const char *text, size_t len, struct key_set *out, char *err,
                               size_t errlen)
{
    memset(out, 0, sizeof *out);
    if(len > DAPI_JWKS_MAX_BYTES) {
        snprintf(err, errlen, "JWKS larger than %d bytes", DAPI_JWKS_MAX_BYTES);
        return DAPI_ERR_INVALID;
    }
    struct dapi_jv *root;
    char jerr[200];
    if(dapi_jv_parse(text, len, 8, &root, jerr, sizeof jerr)) {
        snprintf(err, errlen, "JWKS is not JSON: %s", jerr);
        return DAPI_ERR_INVALID;
    }
    struct dapi_jv *keys = dapi_jv_get(root, "keys");
    size_t n = dapi_jv_array_size(keys);
    if(dapi_jv_type(keys) != DAPI_J_ARRAY) {
        snprintf(err, errlen, "JWKS has no \"keys\" array");
        dapi_jv_free(root);
        return DAPI_ERR_INVALID;
    }
    if(n > DAPI_JWKS_MAX_KEYS) {
        snprintf(err, errlen, "JWKS has %zu keys (at most %d)", n, DAPI_JWKS_MAX_KEYS);
        dapi_jv_free(root);
        return DAPI_ERR_INVALID;
    }
    out->keys = calloc(n ? n : 1, sizeof *out->keys);
    if(!out->keys) {
        dapi_jv_free(root);
        return DAPI_ERR_NOMEM;
    }
    enum dapi_err result = DAPI_OK;
    for(size_t i = 0; i < n && !result; i++) {
        struct dapi_jv *jwk = dapi_jv_index(keys, i);
        size_t l;
        const char *kty = dapi_jv_str(dapi_jv_get(jwk, "kty"), &l);
        const char *kid = dapi_jv_str(dapi_jv_get(jwk, "kid"), &l);
        const char *use = dapi_jv_str(dapi_jv_get(jwk, "use"), &l);
        const char *alg = dapi_jv_str(dapi_jv_get(jwk, "alg"), &l);
        const char *why = NULL;
        char where[180];
        snprintf(where, sizeof where, "JWKS key %zu%s%.64s%s", i, kid ? " (kid " : "",
                 kid ? kid : "", kid ? ")" : "");
        if(dapi_jv_type(jwk) != DAPI_J_OBJECT || !kty) {
            snprintf(err, errlen, "%s: not an object with a kty", where);
            result = DAPI_ERR_INVALID;
            break;
        }
        if(dapi_jv_get(jwk, "d") || dapi_jv_get(jwk, "p") || dapi_jv_get(jwk, "k")) {
            snprintf(err, errlen,
                     "%s: holds private or secret key material; publish only "
                     "public keys",
                     where);
            result = DAPI_ERR_INVALID;
            break;
        }
        if(use && strcmp(use, "sig") != 0)
            continue; /* an encryption key: not ours */
        enum kind kind;
        EVP_PKEY *pkey;
        if(strcmp(kty, "RSA") == 0)
            kind = K_RSA, pkey = rsa_key(jwk, &why);
        else if(strcmp(kty, "EC") == 0)
            kind = K_EC, pkey = ec_key(jwk, &why);
        else if(strcmp(kty, "OKP") == 0)
            kind = K_ED25519, pkey = okp_key(jwk, &why);
        else
            continue; /* another key type: not usable here */
        if(!pkey) {
            snprintf(err, errlen, "%s: %s", where, why ? why : "unusable");
            result = DAPI_ERR_INVALID;
            break;
        }
        if(alg && strcmp(alg, kind_alg[kind]) != 0) {
            EVP_PKEY_free(pkey);
            snprintf(err, errlen, "%s: alg %.32s does not fit its %s key (%s)", where, alg,
                     kind_name[kind], kind_alg[kind]);
            result = DAPI_ERR_INVALID;
            break;
        }
        if(kid && strlen(kid) >= sizeof out->keys[0].kid) {
            EVP_PKEY_free(pkey);
            snprintf(err, errlen, "%s: kid longer than %zu bytes", where,
                     sizeof out->keys[0].kid - 1);
            result = DAPI_ERR_INVALID;
            break;
        }
        for(size_t j = 0; j < out->n; j++)
            if(strcmp(out->keys[j].kid, kid ? kid : "") == 0) {
                snprintf(err, errlen, "%s: kid used twice", where);
                result = DAPI_ERR_INVALID;
            }
        if(result) {
            EVP_PKEY_free(pkey);
            break;
        }
        struct key *k = &out->keys[out->n++];
        snprintf(k->kid, sizeof k->kid, "%s", kid ? kid : "");
        k->kind = kind;
        k->pkey = pkey;
    }
    dapi_jv_free(root);
    if(!result && out->n == 0) {
        snprintf(err, errlen, "JWKS holds no RSA, EC P-256 or Ed25519 signing key");
        result = DAPI_ERR_INVALID;
    }
    if(result)
        set_free(out);
    return result;
}

static enum dapi_err read_set(const char *path, struct key_set *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd < 0) {
        snprintf(err, errlen, "cannot read --jwks-file %s: %s", path, strerror(errno));
        return DAPI_ERR_INVALID;
    }
    char *buf = malloc(DAPI_JWKS_MAX_BYTES + 1);
    size_t len = 0;
    ssize_t r = 0;
    while(buf && len <= DAPI_JWKS_MAX_BYTES &&
          (r = read(fd, buf + len, DAPI_JWKS_MAX_BYTES + 1 - len)) > 0)
        len += (size_t)r;
    int rerr = errno;
    close(fd);
    if(!buf)
        return DAPI_ERR_NOMEM;
    if(r < 0) {
        free(buf);
        snprintf(err, errlen, "cannot read --jwks-file %s: %s", path, strerror(rerr));
        return DAPI_ERR_INVALID;
    }
    char inner[512];
    enum dapi_err result = parse_set(buf, len, out, inner, sizeof inner);
    free(buf);
    if(result)
        snprintf(err, errlen, "--jwks-file %s: %s", path, inner);
    return result;
}

static enum dapi_err make(struct dapi_jwks **out, struct key_set *set)
{
    struct dapi_jwks *k = calloc(1, sizeof *k);
    if(!k) {
        set_free(set);
        return DAPI_ERR_NOMEM;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&k->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    k->set = *set;
    *out = k;
    return DAPI_OK;
}

enum dapi_err dapi_jwks_parse(struct dapi_jwks **out, const char *text, size_t len, char *err,
                              size_t errlen)
{
    struct key_set set;
    enum dapi_err result = parse_set(text, len, &set, err, errlen);
    return result ? result : make(out, &set);
}

enum dapi_err dapi_jwks_load(struct dapi_jwks **out, const char *path, char *err, size_t errlen)
{
    struct key_set set;
    enum dapi_err result = read_set(path, &set, err, errlen);
    return result ? result : make(out, &set);
}

enum dapi_err dapi_jwks_reload(struct dapi_jwks *k, const char *path, char *err, size_t errlen)
{
    struct key_set set;
    enum dapi_err result = read_set(path, &set, err, errlen);
    if(result)
        return result;
    pthread_rwlock_wrlock(&k->lock);
    struct key_set old = k->set;
    k->set = set;
    pthread_rwlock_unlock(&k->lock);
    set_free(&old);
    return DAPI_OK;
}

size_t dapi_jwks_count(const struct dapi_jwks *k)
{
    struct dapi_jwks *m = (struct dapi_jwks *)k;
    pthread_rwlock_rdlock(&m->lock);
    size_t n = m->set.n;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

void dapi_jwks_free(struct dapi_jwks *k)
{
    if(!k)
        return;
    set_free(&k->set);
    pthread_rwlock_destroy(&k->lock);
    free(k);
}

/* ---------------------------------------------------------------- scopes */

static int layer_ok(const char *s, size_t n)
{
    if(n == 0 || n > DAPI_LAYER_NAME_MAX)
        return 0;
    for(size_t i = 0; i < n; i++)
        if((unsigned char)s[i] < 0x20 || s[i] == '/' || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

static int scope_add(struct dapi_scope *sc, const char *name, size_t n)
{
    if(n == 1 && name[0] == '*') {
        sc->all = 1;
        return 0;
    }
    if(!layer_ok(name, n) || sc->n >= DAPI_SCOPE_MAX_LAYERS)
        return -1;
    memcpy(sc->layers[sc->n], name, n);
    sc->layers[sc->n][n] = '\0';
    sc->n++;
    return 0;
}

int dapi_scope_parse(const char *list, struct dapi_scope *out)
{
    memset(out, 0, sizeof *out);
    const char *p = list;
    while(*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while(a < b && *a == ' ')
            a++;
        while(b > a && b[-1] == ' ')
            b--;
        if(scope_add(out, a, (size_t)(b - a)))
            return -1;
        if(!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- tokens */

/* Writes a reason; returns -1. */
__attribute__((format(printf, 3, 4))) static int say(char *why, size_t whylen, const char *fmt,
                                                     ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -1;
}
#define WHY(...) say(why, whylen, __VA_ARGS__)

/* ES256's JOSE signature is r || s (32 bytes each); OpenSSL verifies DER. */
static int es256_der(const unsigned char *sig, unsigned char *der, size_t *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if(!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return -1;
    }
    unsigned char *p = der;
    int n = i2d_ECDSA_SIG(es, &p);
    ECDSA_SIG_free(es);
    if(n <= 0)
        return -1;
    *derlen = (size_t)n;
    return 0;
}

static int verify_sig(const struct key *k, const char *input, size_t inlen,
                      const unsigned char *sig, size_t siglen)
{
    unsigned char der[80];
    if(k->kind == K_EC) {
        if(siglen != 64 || es256_der(sig, der, &siglen))
            return 0;
        sig = der;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx &&
             EVP_DigestVerifyInit(ctx, NULL, k->kind == K_ED25519 ? NULL : EVP_sha256(), NULL,
                                  k->pkey) > 0 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)input, inlen) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* A NumericDate claim: 1 and *out if a number, 0 if absent, -1 if malformed. */
static int numeric_date(const struct dapi_jv *v, int64_t *out)
{
    switch(dapi_jv_type(v)) {
    case DAPI_J_INT: *out = dapi_jv_int(v); return 1;
    case DAPI_J_REAL: {
        double d = dapi_jv_real(v);
        if(!(d > -9e15 && d < 9e15))
            return -1;
        *out = (int64_t)d;
        return 1;
    }
    case DAPI_J_NULL: return v ? -1 : 0;
    default: return -1;
    }
}

static int audience_holds(const struct dapi_jv *aud, const char *want)
{
    size_t len;
    if(dapi_jv_type(aud) == DAPI_J_STRING) {
        const char *s = dapi_jv_str(aud, &len);
        return len == strlen(want) && memcmp(s, want, len) == 0;
    }
    if(dapi_jv_type(aud) != DAPI_J_ARRAY)
        return 0;
    for(size_t i = 0; i < dapi_jv_array_size(aud); i++) {
        const char *s = dapi_jv_str(dapi_jv_index(aud, i), &len);
        if(s && len == strlen(want) && memcmp(s, want, len) == 0)
            return 1;
    }
    return 0;
}

/* dapi_rate: a number (requests per second) or "N/s", "N/min", "N/h"; dapi_burst: a number. */
static int rate_claims(const struct dapi_jv *claims, struct dapi_principal *who, char *why,
                       size_t whylen)
{
    const struct dapi_jv *rate = dapi_jv_get(claims, "dapi_rate");
    const struct dapi_jv *burst = dapi_jv_get(claims, "dapi_burst");
    if(rate) {
        enum dapi_jtype t = dapi_jv_type(rate);
        if(t == DAPI_J_INT || t == DAPI_J_REAL) {
            who->rate = t == DAPI_J_INT ? (double)dapi_jv_int(rate) : dapi_jv_real(rate);
        } else if(t == DAPI_J_STRING) {
            size_t len;
            const char *text = dapi_jv_str(rate, &len);
            int64_t n;
            if(len != strlen(text) || dapi_rate_parse(text, &who->rate, &n))
                who->rate = 0;
        } else
            return WHY("claim dapi_rate is not a rate");
        if(!(who->rate > 0 && who->rate <= 1e9))
            return WHY("claim dapi_rate is not a rate (a number of requests per second, or "
                       "N/s, N/min, N/h)");
    }
    if(burst) {
        enum dapi_jtype t = dapi_jv_type(burst);
        who->burst = t == DAPI_J_INT ? (double)dapi_jv_int(burst) : -1;
        if(!(who->burst >= 1 && who->burst <= 1e9))
            return WHY("claim dapi_burst is not a positive integer");
    }
    return 0;
}

static int check_claims(const struct dapi_jv *c, const struct dapi_jwt_opts *o, int64_t now_s,
                        struct dapi_principal *who, char *why, size_t whylen)
{
    if(dapi_jv_type(c) != DAPI_J_OBJECT)
        return WHY("token claims are not a JSON object");
    int64_t exp, nbf;
    int has = numeric_date(dapi_jv_get(c, "exp"), &exp);
    if(has < 0)
        return WHY("claim exp is not a number");
    if(!has)
        return WHY("token has no exp claim");
    if(exp < now_s - o->skew_s)
        return WHY("token expired");
    has = numeric_date(dapi_jv_get(c, "nbf"), &nbf);
    if(has < 0)
        return WHY("claim nbf is not a number");
    if(has && nbf > now_s + o->skew_s)
        return WHY("token not valid yet (nbf)");
    size_t isslen, sublen;
    const char *iss = dapi_jv_str(dapi_jv_get(c, "iss"), &isslen);
    if(!iss || isslen != strlen(o->issuer) || memcmp(iss, o->issuer, isslen) != 0)
        return WHY("token issuer (iss) is not the one this server accepts");
    if(!audience_holds(dapi_jv_get(c, "aud"), o->audience))
        return WHY("token audience (aud) does not include this server");
    const char *sub = dapi_jv_str(dapi_jv_get(c, "sub"), &sublen);
    if(!sub || !sublen || sublen > 256 || memchr(sub, '\0', sublen))
        return WHY("token has no usable sub claim");
    /* owner: SHA-256 of iss "\0" sub, so one subject of two issuers are two owners */
    size_t n = isslen + 1 + sublen;
    char *buf = malloc(n);
    if(!buf)
        return WHY("out of memory");
    memcpy(buf, iss, isslen);
    buf[isslen] = '\0';
    memcpy(buf + isslen + 1, sub, sublen);
    dapi_sha256(buf, n, who->owner);
    free(buf);
    snprintf(who->id, sizeof who->id, "jwt:%.*s", (int)(sublen < 59 ? sublen : 59), sub);
    for(char *p = who->id; *p; p++) /* for logs: printable ASCII only */
        if((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            *p = '?';
    const struct dapi_jv *layers = dapi_jv_get(c, "dapi_layers");
    if(!layers) {
        who->scope = o->default_scope;
    } else {
        memset(&who->scope, 0, sizeof who->scope);
        if(dapi_jv_type(layers) != DAPI_J_ARRAY)
            return WHY("claim dapi_layers is not an array of layer names");
        for(size_t i = 0; i < dapi_jv_array_size(layers); i++) {
            size_t len;
            const char *l = dapi_jv_str(dapi_jv_index(layers, i), &len);
            if(!l || scope_add(&who->scope, l, len))
                return WHY("claim dapi_layers is not an array of at most %d layer names",
                           DAPI_SCOPE_MAX_LAYERS);
        }
    }
    return rate_claims(c, who, why, whylen);
}

/* Decodes a base64url JSON part into a document. */
static int json_part(const char *p, size_t len, struct dapi_jv **out)
{
    unsigned char buf[DAPI_JWT_MAX_BYTES];
    long n = b64url_decode(p, len, buf, sizeof buf);
    if(n < 0)
        return -1;
    return dapi_jv_parse((const char *)buf, (size_t)n, 8, out, NULL, 0) ? -1 : 0;
}

int dapi_jwt_verify(const struct dapi_jwks *k, const struct dapi_jwt_opts *o, const char *token,
                    size_t len, int64_t now_s, struct dapi_principal *who, char *why,
                    size_t whylen)
{
    memset(who, 0, sizeof *who); /* every field is the token's, or 0: the defaults */
    if(len == 0)
        return WHY("empty token");
    if(len > DAPI_JWT_MAX_BYTES)
        return WHY("token longer than %d bytes", DAPI_JWT_MAX_BYTES);
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if(!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return WHY("not a signed JWT (header.payload.signature)");
    struct dapi_jv *hdr = NULL, *claims = NULL;
    if(json_part(token, (size_t)(d1 - token), &hdr) || dapi_jv_type(hdr) != DAPI_J_OBJECT) {
        dapi_jv_free(hdr);
        return WHY("token header is not base64url JSON");
    }
    size_t l;
    const char *alg = dapi_jv_str(dapi_jv_get(hdr, "alg"), &l);
    const char *kid = dapi_jv_str(dapi_jv_get(hdr, "kid"), &l);
    int rc = -1;
    if(!alg)
        WHY("token header has no alg");
    else if(strcmp(alg, "none") == 0)
        WHY("unsigned tokens (alg none) are refused");
    else if(strncmp(alg, "HS", 2) == 0)
        WHY("HMAC tokens (alg %.8s) are refused: only RS256, ES256 and EdDSA", alg);
    else if(strcmp(alg, "RS256") != 0 && strcmp(alg, "ES256") != 0 && strcmp(alg, "EdDSA") != 0)
        WHY("alg %.16s is not supported: only RS256, ES256 and EdDSA", alg);
    else if(dapi_jv_get(hdr, "kid") && !kid)
        WHY("token header kid is not a string");
    else if(dapi_jv_get(hdr, "crit"))
        WHY("token header has crit extensions, which this server does not understand");
    else
        rc = 0;
    if(rc) {
        dapi_jv_free(hdr);
        return -1;
    }
    char algc[8], kidc[128] = "";
    snprintf(algc, sizeof algc, "%s", alg);
    int has_kid = kid != NULL;
    if(kid && strlen(kid) >= sizeof kidc) {
        dapi_jv_free(hdr);
        return WHY("unknown kid");
    }
    if(kid)
        snprintf(kidc, sizeof kidc, "%s", kid);
    dapi_jv_free(hdr);

    unsigned char sig[1024];
    long siglen = b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - token), sig, sizeof sig);
    if(siglen <= 0)
        return WHY("token signature is not base64url");

    struct dapi_jwks *m = (struct dapi_jwks *)k;
    pthread_rwlock_rdlock(&m->lock);
    const struct key *key = NULL;
    if(has_kid) {
        for(size_t i = 0; i < m->set.n && !key; i++)
            if(strcmp(m->set.keys[i].kid, kidc) == 0)
                key = &m->set.keys[i];
        if(!key)
            rc = WHY("unknown kid");
    } else if(m->set.n == 1) {
        key = &m->set.keys[0];
    } else {
        rc = WHY("token header has no kid, and the JWKS has several keys");
    }
    if(key && strcmp(kind_alg[key->kind], algc) != 0) {
        rc = WHY("alg %s does not match the key's type (%s)", algc, kind_name[key->kind]);
        key = NULL;
    }
    if(key && !verify_sig(key, token, (size_t)(d2 - token), sig, (size_t)siglen))
        rc = WHY("bad token signature");
    pthread_rwlock_unlock(&m->lock);
    if(rc)
        return -1;

    if(json_part(d1 + 1, (size_t)(d2 - d1 - 1), &claims))
        return WHY("token claims are not base64url JSON");
    rc = check_claims(claims, o, now_s, who, why, whylen);
    dapi_jv_free(claims);
    return rc ? -1 : 0;
}
