/* API keys. Keys are kept only as SHA-256 hashes and compared in constant time; a key's
 * hash is also its identity for binding slugs to the key that created them. Never log a key.
 *
 * Also the crypto primitives the rest of dapi uses (SHA-256, HMAC-SHA-256, constant-time
 * comparison, random bytes). Rule: OpenSSL headers are included only under src/auth/. */
#ifndef DAPI_KEYS_H
#define DAPI_KEYS_H

#include <stddef.h>
#include "dapi/err.h"

#define DAPI_KEY_HASH_LEN 32

struct dapi_keys;

/* Loads keys from env_list (comma-separated, may be NULL) and file (one per line, # comments,
 * may be NULL). If neither is set, uses the development key in <state_dir>/dev-key, creating
 * it (mode 0600) the first time; *dev_key then receives it (owned, free with free()) so it can
 * be printed, else NULL. On error writes a one-line reason to err. */
enum dapi_err dapi_keys_load(struct dapi_keys **out, const char *env_list, const char *file,
                             const char *state_dir, char **dev_key, char *err, size_t errlen);
/* Replaces k's keys with those of env_list and file, read again now (SIGHUP), by the same
 * rules as dapi_keys_load. The new set is built first and swapped in at once: a check running
 * meanwhile sees the old keys or the new ones, and k itself stays the same object. If the new
 * keys cannot be loaded (the file unreadable or holding no key, or neither source set: the
 * development key is never reloaded) k keeps its keys, err says why and the result is not
 * DAPI_OK. On success *count is the number of keys now in use. */
enum dapi_err dapi_keys_reload(struct dapi_keys *k, const char *env_list, const char *file,
                               size_t *count, char *err, size_t errlen);
/* An empty set (the key store holds the keys; no development key is made). */
enum dapi_err dapi_keys_empty(struct dapi_keys **out);
void dapi_keys_free(struct dapi_keys *k);
size_t dapi_keys_count(const struct dapi_keys *k);

/* Checks a presented key. Returns 1 and writes its hash to hash_out if it is one of ours,
 * 0 otherwise. Time does not depend on which key matched or where a mismatch is. Safe to
 * call from any thread, also while dapi_keys_reload runs. */
int dapi_keys_check(const struct dapi_keys *k, const char *key, size_t len,
                    unsigned char hash_out[DAPI_KEY_HASH_LEN]);

/* SHA-256 of data. */
void dapi_sha256(const void *data, size_t len, unsigned char out[DAPI_KEY_HASH_LEN]);
/* HMAC-SHA-256 of data under key (out: 32 bytes). */
void dapi_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                      unsigned char out[32]);
/* 1 if a (alen bytes) and b (blen bytes) are equal, else 0. Lengths are not secret (different
 * lengths return 0 at once); for equal lengths the time does not depend on the contents. */
int dapi_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Fills buf with n cryptographically random bytes. */
enum dapi_err dapi_random(void *buf, size_t n);
/* Writes n random base62 characters and a NUL into out (size n + 1). */
enum dapi_err dapi_random_base62(char *out, size_t n);

#endif
