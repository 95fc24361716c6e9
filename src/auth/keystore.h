/* The key store (docs/auth.md, "The key store"): one file of named, scoped, expiring keys
 * that `dapi keys` writes and `dapi serve` reads (and reads again on SIGHUP or when it
 * changes). A key is `dapi_<id>_<secret>`: the id is public and finds the entry, the secret is
 * kept only as HMAC-SHA-256(salt, secret) with a random per-key salt and compared in constant
 * time. The file format is described in docs/auth.md; in short, one key per line:
 *
 *   # comment
 *   id=Ab3dE6gH9jK2 name=ci hash=<64 hex> salt=<32 hex> layers=nekt_raw,nekt_service
 *     rate=10/s burst=20 expires=0 created=1767225600 revoked=0 prev_hash=- prev_until=0
 *     upstream_key_env=-
 *
 * (on one line; fields in any order, "-" or 0 = none). Last use is kept in memory by the
 * server and written, at most every few seconds, to <file>.last-used (`id epoch` lines),
 * which `dapi keys list` reads: the keys file itself is written only by `dapi keys`. */
#ifndef DAPI_KEYSTORE_H
#define DAPI_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>
#include "auth/principal.h"
#include "dapi/err.h"

#define DAPI_KS_ID_LEN 12     /* base62 characters of a public id */
#define DAPI_KS_SECRET_LEN 43 /* base62 characters of a secret (256 bits) */
#define DAPI_KS_SALT_LEN 16
#define DAPI_KS_NAME_MAX 64
#define DAPI_KS_ENV_MAX 128

/* One key as the file holds it. */
struct dapi_ks_key {
    char id[DAPI_KS_ID_LEN + 1];
    char name[DAPI_KS_NAME_MAX + 1];
    unsigned char salt[DAPI_KS_SALT_LEN];
    unsigned char hash[DAPI_KEY_HASH_LEN];
    int has_prev; /* rotated: the previous secret's hash, valid until prev_until */
    unsigned char prev_hash[DAPI_KEY_HASH_LEN];
    int64_t prev_until;
    struct dapi_scope scope;                    /* from layers=; all = 1 when empty */
    char rate_text[32];                         /* "" or "N/s" / "N/min", as given */
    double rate;                                /* requests per second; 0 = the server's default */
    double burst;                               /* 0 = the server's default */
    int64_t expires, created, revoked;          /* epoch seconds; 0 = never / not revoked */
    char upstream_key_env[DAPI_KS_ENV_MAX + 1]; /* "" = none */
};

/* A parsed file. */
struct dapi_ks_file {
    struct dapi_ks_key *keys;
    size_t n, cap;
};

/* Reads path into f (empty when the file does not exist: *exists = 0). A malformed line is
 * DAPI_ERR_INVALID with err "keys file PATH line N: reason". */
enum dapi_err dapi_ks_read(const char *path, struct dapi_ks_file *f, int *exists, char *err,
                           size_t errlen);
/* Parses text (len bytes); name is used in messages. */
enum dapi_err dapi_ks_parse(const char *name, const char *text, size_t len, struct dapi_ks_file *f,
                            char *err, size_t errlen);
/* Writes f to path atomically (temp file in the same directory, fsync, rename, fsync of the
 * directory), mode 0600. */
enum dapi_err dapi_ks_write(const char *path, const struct dapi_ks_file *f, char *err,
                            size_t errlen);
void dapi_ks_file_free(struct dapi_ks_file *f);
/* The entry with this id, or NULL. */
struct dapi_ks_key *dapi_ks_find(const struct dapi_ks_file *f, const char *id);
/* Appends a copy of k (DAPI_ERR_NOMEM). */
enum dapi_err dapi_ks_append(struct dapi_ks_file *f, const struct dapi_ks_key *k);

/* Makes a new secret for k: a fresh salt unless keep_salt (rotation: the previous hash
 * stays comparable), k->hash set, and the whole key
 * ("dapi_<id>_<secret>") written to out (size >= DAPI_KS_KEY_MAX). k->id must be set. */
#define DAPI_KS_KEY_MAX (5 + DAPI_KS_ID_LEN + 1 + DAPI_KS_SECRET_LEN + 1)
enum dapi_err dapi_ks_new_secret(struct dapi_ks_key *k, int keep_salt, char *out);
/* A new random public id (out: DAPI_KS_ID_LEN + 1 bytes). */
enum dapi_err dapi_ks_new_id(char *out);

/* 1 if s may be a key's name ([A-Za-z0-9._@:-], 1 to 64) / an environment variable name. */
int dapi_ks_valid_name(const char *s);
int dapi_ks_valid_env(const char *s);

/* Field parsers shared with `dapi keys` (each returns 0, or -1 having written why). */
int dapi_ks_parse_layers(const char *text, struct dapi_scope *s, char *err, size_t errlen);
int dapi_ks_parse_rate(const char *text, double *per_s, char *err, size_t errlen);
/* "2026-12-31", "2026-12-31T23:59:59Z" (UTC) or a duration from now ("90s", "30m", "12h",
 * "7d"): epoch seconds in *out. */
int dapi_ks_parse_when(const char *text, int64_t now, int64_t *out, char *err, size_t errlen);
/* A duration ("0", "90s", "30m", "12h", "7d") in seconds. */
int dapi_ks_parse_duration(const char *text, int64_t *out, char *err, size_t errlen);
/* Epoch seconds as "2026-12-31T23:59:59Z" (out: 21 bytes at least). */
void dapi_ks_format_time(int64_t t, char *out, size_t n);

/* ---- the server's view: the file loaded, checked by every request ---------------------- */

struct dapi_keystore;

/* Opens the store at path (which need not exist: then it holds no key). A malformed file is
 * DAPI_ERR_INVALID with err naming the line. */
enum dapi_err dapi_keystore_open(struct dapi_keystore **out, const char *path, char *err,
                                 size_t errlen);
void dapi_keystore_free(struct dapi_keystore *ks);
size_t dapi_keystore_count(const struct dapi_keystore *ks);
const char *dapi_keystore_path(const struct dapi_keystore *ks);

/* Reads the file again if force is set or if it changed (inode, size or mtime) since it was
 * last read. Returns 1 when the keys were replaced (*count = how many now), 0 when nothing
 * changed, -1 when the file could not be used: the keys in use are kept and err says why (a
 * file that stays bad is reported once, until it changes again). Swaps under the store's
 * lock: checks running meanwhile see the old keys or the new ones. */
int dapi_keystore_reload(struct dapi_keystore *ks, int force, size_t *count, char *err,
                         size_t errlen);

enum dapi_ks_result {
    DAPI_KS_NOT_OURS, /* not dapi_<id>_<secret> with an id of the store: try other keys */
    DAPI_KS_OK,
    DAPI_KS_INVALID, /* a known id with a wrong secret */
    DAPI_KS_REVOKED, /* *when = when */
    DAPI_KS_EXPIRED, /* *when = when */
};

/* Checks key (len bytes) at wall time now (epoch s). DAPI_KS_OK fills who: owner = SHA-256 of
 * "dapi-key:<id>", id, scope, rate, burst, upstream_key (getenv of upstream_key_env, read at
 * load: a stable pointer) and records the use. Safe from any thread, also during a reload. */
enum dapi_ks_result dapi_keystore_check(struct dapi_keystore *ks, const char *key, size_t len,
                                        int64_t now, struct dapi_principal *who, int64_t *when);

/* Writes <path>.last-used if a key was used since the last write and at least min_interval
 * seconds passed (0: now, whatever the interval). Returns 1 when written, 0 when there was
 * nothing to write yet, -1 with err. */
int dapi_keystore_flush_used(struct dapi_keystore *ks, int64_t now, int64_t min_interval,
                             char *err, size_t errlen);
/* Reads <path>.last-used: the last use of id, or 0. */
int64_t dapi_ks_last_used(const char *path, const char *id);

#endif
