#include "auth/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* The only place OpenSSL headers are included (see keys.h). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* A set of key hashes. */
struct key_set {
    unsigned char (*hash)[DAPI_KEY_HASH_LEN];
    size_t n, cap;
};

/* The keys in use. The struct itself never moves (app->keys is read by every HTTP thread
 * without a lock); dapi_keys_reload builds a new set beside it and swaps the set in under
 * the write lock, so a check sees the old set or the new one, never a mix or freed memory.
 * Writers are preferred so that a steady stream of checks cannot starve a reload. */
struct dapi_keys {
    pthread_rwlock_t lock;
    struct key_set set;
};

/* SHA-256 runs on every request (the key check). The one-shot SHA256() looks the digest up in
 * OpenSSL's provider tables on each call, two thirds of its cost for a short key; the
 * digest is fetched once instead (kept for the process's life). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* And each thread remembers its last short input and digest: a client sends the same key
 * with every request, and its connection stays on one thread. The input is compared in
 * constant time (CRYPTO_memcmp), as a key check would. */
#define SHA256_MEMO_MAX 128
static __thread struct {
    size_t len; /* 0: empty */
    unsigned char in[SHA256_MEMO_MAX];
    unsigned char out[DAPI_KEY_HASH_LEN];
} sha256_memo;

void dapi_sha256(const void *data, size_t len, unsigned char out[DAPI_KEY_HASH_LEN])
{
    int memo = len > 0 && len <= SHA256_MEMO_MAX;
    if(memo && sha256_memo.len == len && CRYPTO_memcmp(sha256_memo.in, data, len) == 0) {
        memcpy(out, sha256_memo.out, DAPI_KEY_HASH_LEN);
        return;
    }
    pthread_once(&sha256_once, sha256_fetch);
    unsigned char h[DAPI_KEY_HASH_LEN]; /* (out may be the input's own buffer) */
    if(!sha256_md || !EVP_Digest(data, len, h, NULL, sha256_md, NULL))
        SHA256(data, len, h); /* (no fetched digest: the slow way) */
    if(memo) {
        memcpy(sha256_memo.in, data, len);
        memcpy(sha256_memo.out, h, DAPI_KEY_HASH_LEN);
        sha256_memo.len = len;
    }
    memcpy(out, h, DAPI_KEY_HASH_LEN);
}

void dapi_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                      unsigned char out[32])
{
    unsigned int outlen = 32;
    HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen);
}

int dapi_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}

enum dapi_err dapi_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while(n) {
        ssize_t r = getrandom(p, n, 0);
        if(r < 0) {
            if(errno == EINTR)
                continue;
            return DAPI_ERR_INTERNAL;
        }
        p += r;
        n -= (size_t)r;
    }
    return DAPI_OK;
}

enum dapi_err dapi_random_base62(char *out, size_t n)
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t i = 0;
    while(i < n) {
        unsigned char raw[64];
        if(dapi_random(raw, sizeof raw))
            return DAPI_ERR_INTERNAL;
        for(size_t j = 0; j < sizeof raw && i < n; j++)
            if(raw[j] < 248) /* 248 = 4 * 62: rejection keeps the choice uniform */
                out[i++] = alphabet[raw[j] % 62];
    }
    out[n] = '\0';
    return DAPI_OK;
}

static enum dapi_err add(struct key_set *k, const char *key, size_t len)
{
    while(len && (key[0] == ' ' || key[0] == '\t')) {
        key++;
        len--;
    }
    while(len && (key[len - 1] == ' ' || key[len - 1] == '\t' || key[len - 1] == '\r'))
        len--;
    if(!len)
        return DAPI_OK;
    if(k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 8;
        void *p = realloc(k->hash, cap * sizeof *k->hash);
        if(!p)
            return DAPI_ERR_NOMEM;
        k->hash = p;
        k->cap = cap;
    }
    dapi_sha256(key, len, k->hash[k->n++]);
    return DAPI_OK;
}

static enum dapi_err load_file(struct key_set *k, const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if(!f) {
        snprintf(err, errlen, "cannot read --api-keys-file %s: %s", file, strerror(errno));
        return DAPI_ERR_INVALID;
    }
    enum dapi_err result = DAPI_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while(!result && (n = getline(&line, &cap, f)) >= 0) {
        size_t len = (size_t)n;
        while(len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        size_t i = 0;
        while(i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if(i == len || line[i] == '#')
            continue;
        result = add(k, line + i, len - i);
    }
    free(line);
    fclose(f);
    return result;
}

static enum dapi_err dev_key(struct key_set *k, const char *state_dir, char **out, char *err,
                             size_t errlen)
{
    char path[4096], key[64];
    snprintf(path, sizeof path, "%s/dev-key", state_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd >= 0) {
        ssize_t n = read(fd, key, sizeof key - 1);
        close(fd);
        if(n > 0) {
            key[n] = '\0';
            key[strcspn(key, "\r\n")] = '\0';
        }
        if(n <= 0 || !key[0]) {
            snprintf(err, errlen, "%s is empty or unreadable; delete it to get a new one", path);
            return DAPI_ERR_INVALID;
        }
    } else {
        memcpy(key, "dapi_dev_", 9);
        if(dapi_random_base62(key + 9, 32))
            return DAPI_ERR_INTERNAL;
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        size_t len = strlen(key);
        if(fd < 0 || write(fd, key, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) ||
           close(fd) || rename(tmp, path)) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            if(fd >= 0)
                close(fd);
            return DAPI_ERR_IO;
        }
    }
    if(!(*out = strdup(key)))
        return DAPI_ERR_NOMEM;
    return add(k, key, strlen(key));
}

static void set_free(struct key_set *s)
{
    if(s->hash)
        OPENSSL_cleanse(s->hash, s->cap * sizeof *s->hash);
    free(s->hash);
    memset(s, 0, sizeof *s);
}

/* The configured keys: env_list, then file. Refused when either is set but together they
 * hold no key (a start or a reload must never leave a server that nobody can use). */
static enum dapi_err build_set(struct key_set *s, const char *env_list, const char *file,
                               char *err, size_t errlen)
{
    enum dapi_err result = DAPI_OK;
    if(env_list) {
        const char *p = env_list;
        while(!result) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            result = add(s, p, len);
            if(!comma)
                break;
            p = comma + 1;
        }
    }
    if(!result && file)
        result = load_file(s, file, err, errlen);
    if(!result && (env_list || file) && s->n == 0) {
        if(file)
            snprintf(err, errlen, "--api-keys-file %s holds no key", file);
        else
            snprintf(err, errlen, "DAPI_API_KEYS configured but holds no key");
        result = DAPI_ERR_INVALID;
    }
    if(result == DAPI_ERR_NOMEM)
        snprintf(err, errlen, "out of memory loading the API keys");
    return result;
}

static struct dapi_keys *keys_new(void)
{
    struct dapi_keys *k = calloc(1, sizeof *k);
    if(!k)
        return NULL;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&k->lock, &a);
    pthread_rwlockattr_destroy(&a);
    if(rc) {
        free(k);
        return NULL;
    }
    return k;
}

enum dapi_err dapi_keys_empty(struct dapi_keys **out)
{
    return (*out = keys_new()) ? DAPI_OK : DAPI_ERR_NOMEM;
}

enum dapi_err dapi_keys_load(struct dapi_keys **out, const char *env_list, const char *file,
                             const char *state_dir, char **dev, char *err, size_t errlen)
{
    enum dapi_err result = DAPI_OK;
    struct dapi_keys *k = keys_new();
    *dev = NULL;
    *out = NULL;
    if(!k)
        return DAPI_ERR_NOMEM;
    if(env_list || file)
        result = build_set(&k->set, env_list, file, err, errlen);
    else
        result = dev_key(&k->set, state_dir, dev, err, errlen);
    if(result) {
        dapi_keys_free(k);
        k = NULL;
    }
    *out = k;
    return result;
}

enum dapi_err dapi_keys_reload(struct dapi_keys *k, const char *env_list, const char *file,
                               size_t *count, char *err, size_t errlen)
{
    struct key_set fresh = {0}, old;
    if(!env_list && !file) {
        snprintf(err, errlen, "no API keys are configured (the development key is not reloaded)");
        return DAPI_ERR_INVALID;
    }
    enum dapi_err result = build_set(&fresh, env_list, file, err, errlen);
    if(result) {
        set_free(&fresh);
        return result;
    }
    pthread_rwlock_wrlock(&k->lock);
    old = k->set;
    k->set = fresh;
    pthread_rwlock_unlock(&k->lock);
    set_free(&old);
    *count = fresh.n;
    return DAPI_OK;
}

void dapi_keys_free(struct dapi_keys *k)
{
    if(!k)
        return;
    set_free(&k->set);
    pthread_rwlock_destroy(&k->lock);
    free(k);
}

size_t dapi_keys_count(const struct dapi_keys *k)
{
    struct dapi_keys *m = (struct dapi_keys *)k; /* the lock, not the keys, changes */
    pthread_rwlock_rdlock(&m->lock);
    size_t n = m->set.n;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

int dapi_keys_check(const struct dapi_keys *k, const char *key, size_t len,
                    unsigned char hash_out[DAPI_KEY_HASH_LEN])
{
    struct dapi_keys *m = (struct dapi_keys *)k;
    unsigned char h[DAPI_KEY_HASH_LEN];
    dapi_sha256(key, len, h);
    int found = 0;
    /* Compare against every key (no early exit) in constant time. */
    pthread_rwlock_rdlock(&m->lock);
    for(size_t i = 0; i < m->set.n; i++)
        found |= dapi_ct_equal(h, DAPI_KEY_HASH_LEN, m->set.hash[i], DAPI_KEY_HASH_LEN);
    pthread_rwlock_unlock(&m->lock);
    memcpy(hash_out, h, DAPI_KEY_HASH_LEN);
    return found;
}
