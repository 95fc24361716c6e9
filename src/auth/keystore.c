#include "auth/keystore.h"
#include "auth/ratelimit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILE_BYTES (16 * 1024 * 1024)

/* ---- fields ------------------------------------------------------------------------ */

static int is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int valid_id(const char *s, size_t n)
{
    if(n == 0 || n > DAPI_KS_ID_LEN)
        return 0;
    for(size_t i = 0; i < n; i++)
        if(!is_alnum((unsigned char)s[i]))
            return 0;
    return 1;
}

static int name_char(int c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '-' || c == '@' || c == ':';
}

static int valid_env(const char *s)
{
    size_t n = strlen(s);
    if(n == 0 || n > DAPI_KS_ENV_MAX || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for(size_t i = 0; i < n; i++)
        if(!is_alnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    if(strlen(s) != 2 * n)
        return -1;
    for(size_t i = 0; i < 2 * n; i++) {
        int c = (unsigned char)s[i], v;
        if(c >= '0' && c <= '9')
            v = c - '0';
        else if(c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return -1;
        if(i % 2)
            out[i / 2] |= (unsigned char)v;
        else
            out[i / 2] = (unsigned char)(v << 4);
    }
    return 0;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for(size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int parse_i64(const char *s, int64_t *out)
{
    if(!*s)
        return -1;
    int64_t v = 0;
    for(; *s; s++) {
        if(*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

int dapi_ks_parse_layers(const char *text, struct dapi_scope *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if(!*text || strcmp(text, "-") == 0) {
        s->all = 1;
        return 0;
    }
    for(const char *p = text; *p;) {
        size_t n = strcspn(p, ",");
        if(n == 0 || n > DAPI_LAYER_NAME_MAX) {
            snprintf(err, errlen,
                     "bad layer list '%s' (names of 1 to %d characters, "
                     "separated by commas)",
                     text, DAPI_LAYER_NAME_MAX);
            return -1;
        }
        for(size_t i = 0; i < n; i++)
            if(!name_char((unsigned char)p[i]) || p[i] == ':' || p[i] == '@') {
                snprintf(err, errlen, "bad layer name '%.*s' in '%s'", (int)n, p, text);
                return -1;
            }
        if(s->n == DAPI_SCOPE_MAX_LAYERS) {
            snprintf(err, errlen, "more than %d layers", DAPI_SCOPE_MAX_LAYERS);
            return -1;
        }
        memcpy(s->layers[s->n], p, n);
        s->layers[s->n++][n] = '\0';
        p += n + (p[n] == ',');
    }
    return 0;
}

/* A key's own rate: the syntax of --rate-limit (auth/ratelimit.h), but never "0" (a key
 * without a limit of its own has no rate field) and at most 1,000,000 per unit. */
int dapi_ks_parse_rate(const char *text, double *per_s, char *err, size_t errlen)
{
    int64_t n = 0;
    if(dapi_rate_parse(text, per_s, &n) == 0 && n >= 1 && n <= 1000000)
        return 0;
    snprintf(err, errlen, "bad rate '%s' (N/s, N/min or N/h, N from 1 to 1000000)", text);
    return -1;
}

int dapi_ks_parse_duration(const char *text, int64_t *out, char *err, size_t errlen)
{
    size_t len = strlen(text);
    char num[32];
    int64_t n, mult = 1;
    if(len == 0 || len >= sizeof num)
        goto bad;
    memcpy(num, text, len + 1);
    switch(num[len - 1]) {
    case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    default:
        if(strcmp(num, "0") != 0)
            goto bad;
        len++;
    }
    num[len - 1] = '\0';
    if(parse_i64(num, &n) || n > INT64_MAX / 86400 / 1000)
        goto bad;
    *out = n * mult;
    return 0;
bad:
    snprintf(err, errlen, "bad duration '%s' (e.g. 90s, 30m, 12h, 7d)", text);
    return -1;
}

int dapi_ks_parse_when(const char *text, int64_t now, int64_t *out, char *err, size_t errlen)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if(!end || *end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(text, "%Y-%m-%d", &tm);
    }
    if(end && !*end && strlen(text) >= 10) {
        *out = (int64_t)timegm(&tm);
        return 0;
    }
    int64_t d;
    char e[128];
    if(dapi_ks_parse_duration(text, &d, e, sizeof e) == 0) {
        *out = now + d;
        return 0;
    }
    snprintf(err, errlen,
             "bad date or duration '%s' (2026-12-31, 2026-12-31T23:59:59Z, or 90s, 30m, "
             "12h, 7d from now)",
             text);
    return -1;
}

void dapi_ks_format_time(int64_t t, char *out, size_t n)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if(!gmtime_r(&tt, &tm) || !strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, n, "%" PRId64, t);
}

int dapi_ks_valid_name(const char *s)
{
    size_t n = strlen(s);
    if(n == 0 || n > DAPI_KS_NAME_MAX)
        return 0;
    for(size_t i = 0; i < n; i++)
        if(!name_char((unsigned char)s[i]))
            return 0;
    return 1;
}

int dapi_ks_valid_env(const char *s)
{
    return valid_env(s);
}

/* ---- the file ---------------------------------------------------------------------- */

enum dapi_err dapi_ks_append(struct dapi_ks_file *f, const struct dapi_ks_key *k)
{
    if(f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        void *p = realloc(f->keys, cap * sizeof *f->keys);
        if(!p)
            return DAPI_ERR_NOMEM;
        f->keys = p;
        f->cap = cap;
    }
    f->keys[f->n++] = *k;
    return DAPI_OK;
}

void dapi_ks_file_free(struct dapi_ks_file *f)
{
    free(f->keys);
    memset(f, 0, sizeof *f);
}

struct dapi_ks_key *dapi_ks_find(const struct dapi_ks_file *f, const char *id)
{
    for(size_t i = 0; i < f->n; i++)
        if(strcmp(f->keys[i].id, id) == 0)
            return &f->keys[i];
    return NULL;
}

/* One field of a line into k; returns 0 or -1 with why. */
static int field(struct dapi_ks_key *k, const char *name, const char *v, unsigned *seen, char *err,
                 size_t errlen)
{
    static const char *const names[] = {"id",
                                        "name",
                                        "hash",
                                        "salt",
                                        "layers",
                                        "rate",
                                        "burst",
                                        "expires",
                                        "created",
                                        "revoked",
                                        "prev_hash",
                                        "prev_until",
                                        "upstream_key_env"};
    size_t i = 0, n = sizeof names / sizeof names[0];
    while(i < n && strcmp(names[i], name) != 0)
        i++;
    if(i == n) {
        snprintf(err, errlen, "unknown field '%.64s'", name);
        return -1;
    }
    if(*seen & (1u << i)) {
        snprintf(err, errlen, "field %s given twice", name);
        return -1;
    }
    *seen |= 1u << i;
    int64_t num;
    switch(i) {
    case 0:
        if(!valid_id(v, strlen(v)))
            goto bad;
        memcpy(k->id, v, strlen(v) + 1);
        return 0;
    case 1:
        if(!*v || strlen(v) > DAPI_KS_NAME_MAX)
            goto bad;
        for(const char *p = v; *p; p++)
            if(!name_char((unsigned char)*p))
                goto bad;
        memcpy(k->name, v, strlen(v) + 1);
        return 0;
    case 2:
        if(unhex(v, k->hash, sizeof k->hash))
            goto bad;
        return 0;
    case 3:
        if(unhex(v, k->salt, sizeof k->salt))
            goto bad;
        return 0;
    case 4: return dapi_ks_parse_layers(v, &k->scope, err, errlen);
    case 5:
        if(strcmp(v, "-") == 0)
            return 0;
        if(dapi_ks_parse_rate(v, &k->rate, err, errlen))
            return -1;
        snprintf(k->rate_text, sizeof k->rate_text, "%s", v);
        return 0;
    case 6:
        if(parse_i64(v, &num) || num > 1000000)
            goto bad;
        k->burst = (double)num;
        return 0;
    case 7:
    case 8:
    case 9:
    case 11:
        if(parse_i64(v, &num))
            goto bad;
        *(i == 7   ? &k->expires
          : i == 8 ? &k->created
          : i == 9 ? &k->revoked
                   : &k->prev_until) = num;
        return 0;
    case 10:
        if(strcmp(v, "-") == 0)
            return 0;
        if(unhex(v, k->prev_hash, sizeof k->prev_hash))
            goto bad;
        k->has_prev = 1;
        return 0;
    default:
        if(strcmp(v, "-") == 0)
            return 0;
        if(!valid_env(v))
            goto bad;
        memcpy(k->upstream_key_env, v, strlen(v) + 1);
        return 0;
    }
bad:
    snprintf(err, errlen, "bad %s '%.64s'", name, v);
    return -1;
}

enum dapi_err dapi_ks_parse(const char *name, const char *text, size_t len, struct dapi_ks_file *f,
                            char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    size_t lineno = 0;
    char why[512];
    for(size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        char line[16384];
        lineno++;
        size_t n = end - pos;
        if(n >= sizeof line) {
            snprintf(why, sizeof why, "line too long");
            goto bad;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end + 1;
        if(memchr(line, '\0', n)) {
            snprintf(why, sizeof why, "a NUL byte");
            goto bad;
        }
        char *p = line + strspn(line, " \t\r");
        if(!*p || *p == '#')
            continue;
        struct dapi_ks_key k;
        memset(&k, 0, sizeof k);
        k.scope.all = 1;
        unsigned seen = 0;
        char *save = NULL;
        for(char *tok = strtok_r(p, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
            char *eq = strchr(tok, '=');
            if(!eq) {
                snprintf(why, sizeof why, "'%.64s' is not name=value", tok);
                goto bad;
            }
            *eq = '\0';
            if(field(&k, tok, eq + 1, &seen, why, sizeof why))
                goto bad;
        }
        /* id, name, hash, salt are required */
        static const char *const required[] = {"id", "name", "hash", "salt"};
        for(unsigned r = 0; r < 4; r++)
            if(!(seen & (1u << r))) {
                snprintf(why, sizeof why, "no %s", required[r]);
                goto bad;
            }
        if(dapi_ks_find(f, k.id)) {
            snprintf(why, sizeof why, "id %s appears twice", k.id);
            goto bad;
        }
        if(dapi_ks_append(f, &k)) {
            dapi_ks_file_free(f);
            snprintf(err, errlen, "out of memory reading keys file %s", name);
            return DAPI_ERR_NOMEM;
        }
    }
    return DAPI_OK;
bad:
    dapi_ks_file_free(f);
    snprintf(err, errlen, "keys file %s line %zu: %s", name, lineno, why);
    return DAPI_ERR_INVALID;
}

enum dapi_err dapi_ks_read(const char *path, struct dapi_ks_file *f, int *exists, char *err,
                           size_t errlen)
{
    memset(f, 0, sizeof *f);
    *exists = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if(fd < 0) {
        if(errno == ENOENT)
            return DAPI_OK;
        snprintf(err, errlen, "cannot read keys file %s: %s", path, strerror(errno));
        return DAPI_ERR_IO;
    }
    *exists = 1;
    char *buf = malloc(MAX_FILE_BYTES);
    size_t len = 0;
    ssize_t r = 0;
    if(!buf) {
        close(fd);
        return DAPI_ERR_NOMEM;
    }
    while(len < MAX_FILE_BYTES && (r = read(fd, buf + len, MAX_FILE_BYTES - len)) != 0) {
        if(r < 0) {
            if(errno == EINTR)
                continue;
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    enum dapi_err res;
    if(r < 0) {
        snprintf(err, errlen, "cannot read keys file %s: %s", path, strerror(errno));
        res = DAPI_ERR_IO;
    } else if(len == MAX_FILE_BYTES) {
        snprintf(err, errlen, "keys file %s is larger than %d bytes", path, MAX_FILE_BYTES);
        res = DAPI_ERR_INVALID;
    } else {
        res = dapi_ks_parse(path, buf, len, f, err, errlen);
    }
    free(buf);
    return res;
}

static int write_all(int fd, const char *s, size_t n)
{
    while(n) {
        ssize_t w = write(fd, s, n);
        if(w < 0) {
            if(errno == EINTR)
                continue;
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes text to path atomically, mode 0600. Run as root (an administrator's `dapi keys`),
 * the file keeps the owner of the file it replaces, or takes its directory's: a server
 * running as another user (the systemd unit's DynamicUser owns its state directory) can
 * still read it. */
static int atomic_write(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    char tmp[4200], dir[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(dir, sizeof dir, "%s", path);
    unlink(tmp); /* a leftover of a crashed run with the same pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st;
    if(fd >= 0 && geteuid() == 0 && (stat(path, &st) == 0 || stat(dirname(dir), &st) == 0) &&
       fchown(fd, st.st_uid, st.st_gid)) {
        snprintf(err, errlen, "cannot give %s its owner: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    if(fd < 0 || fchmod(fd, 0600) || write_all(fd, text, len) || fsync(fd)) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        if(fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return -1;
    }
    if(close(fd) || rename(tmp, path)) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if(dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

enum dapi_err dapi_ks_write(const char *path, const struct dapi_ks_file *f, char *err,
                            size_t errlen)
{
    size_t cap = 256 + f->n * (1024 + DAPI_SCOPE_MAX_LAYERS * (DAPI_LAYER_NAME_MAX + 1));
    char *out = malloc(cap);
    if(!out)
        return DAPI_ERR_NOMEM;
    size_t len = (size_t)snprintf(out, cap,
                                  "# dapi keys file: written by `dapi keys`, read by `dapi serve` "
                                  "(docs/auth.md). Secrets are not stored, only salted hashes.\n");
    for(size_t i = 0; i < f->n; i++) {
        const struct dapi_ks_key *k = &f->keys[i];
        char h[65], s[33], ph[65] = "-",
                           layers[DAPI_SCOPE_MAX_LAYERS * (DAPI_LAYER_NAME_MAX + 1) + 2] = "-";
        hex(k->hash, sizeof k->hash, h);
        hex(k->salt, sizeof k->salt, s);
        if(k->has_prev)
            hex(k->prev_hash, sizeof k->prev_hash, ph);
        if(!k->scope.all) {
            size_t l = 0;
            for(size_t j = 0; j < k->scope.n; j++)
                l += (size_t)snprintf(layers + l, sizeof layers - l, "%s%s", j ? "," : "",
                                      k->scope.layers[j]);
        }
        len += (size_t)snprintf(out + len, cap - len,
                                "id=%s name=%s hash=%s salt=%s layers=%s rate=%s burst=%lld "
                                "expires=%" PRId64 " created=%" PRId64 " revoked=%" PRId64
                                " prev_hash=%s prev_until=%" PRId64 " upstream_key_env=%s\n",
                                k->id, k->name, h, s, layers, k->rate_text[0] ? k->rate_text : "-",
                                (long long)k->burst, k->expires, k->created, k->revoked, ph,
                                k->prev_until, k->upstream_key_env[0] ? k->upstream_key_env : "-");
    }
    int rc = atomic_write(path, out, len, err, errlen);
    free(out);
    return rc ? DAPI_ERR_IO : DAPI_OK;
}

enum dapi_err dapi_ks_new_id(char *out)
{
    return dapi_random_base62(out, DAPI_KS_ID_LEN);
}

enum dapi_err dapi_ks_new_secret(struct dapi_ks_key *k, int keep_salt, char *out)
{
    char secret[DAPI_KS_SECRET_LEN + 1];
    if((!keep_salt && dapi_random(k->salt, sizeof k->salt)) ||
       dapi_random_base62(secret, DAPI_KS_SECRET_LEN))
        return DAPI_ERR_INTERNAL;
    dapi_hmac_sha256(k->salt, sizeof k->salt, secret, DAPI_KS_SECRET_LEN, k->hash);
    snprintf(out, DAPI_KS_KEY_MAX, "dapi_%s_%s", k->id, secret);
    memset(secret, 0, sizeof secret);
    return DAPI_OK;
}

/* ---- the server's store ------------------------------------------------------------ */

/* The keys in use, sorted by id; never changed once built (a reload builds another). */
struct table {
    struct dapi_ks_file f;
    const char **upstream; /* getenv(upstream_key_env) per key, or NULL */
    _Atomic int64_t *used; /* last use per key (epoch s), 0 = never */
};

struct dapi_keystore {
    pthread_rwlock_t lock;
    struct table *t;
    char *path;
    /* what the file looked like when last read (or last failed) */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int exists;
    atomic_int dirty;   /* a key was used since the last flush */
    int64_t flushed_at; /* wall s of the last flush */
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct dapi_ks_key *)a)->id, ((const struct dapi_ks_key *)b)->id);
}

static void table_free(struct table *t)
{
    if(!t)
        return;
    dapi_ks_file_free(&t->f);
    free(t->upstream);
    free(t->used);
    free(t);
}

static enum dapi_err table_load(const char *path, struct table **out, int *exists, char *err,
                                size_t errlen)
{
    struct table *t = calloc(1, sizeof *t);
    if(!t)
        return DAPI_ERR_NOMEM;
    enum dapi_err res = dapi_ks_read(path, &t->f, exists, err, errlen);
    if(res) {
        free(t);
        return res;
    }
    size_t n = t->f.n ? t->f.n : 1;
    t->upstream = calloc(n, sizeof *t->upstream);
    t->used = calloc(n, sizeof *t->used);
    if(!t->upstream || !t->used) {
        table_free(t);
        return DAPI_ERR_NOMEM;
    }
    if(t->f.n) /* an empty file has no array: qsort(NULL, 0) is undefined */
        qsort(t->f.keys, t->f.n, sizeof *t->f.keys, by_id);
    for(size_t i = 0; i < t->f.n; i++)
        if(t->f.keys[i].upstream_key_env[0]) {
            /* The environment does not change while dapi runs: the pointer stays valid. */
            const char *v = getenv(t->f.keys[i].upstream_key_env);
            t->upstream[i] = v && *v ? v : NULL;
        }
    *out = t;
    return DAPI_OK;
}

static void remember_stat(struct dapi_keystore *ks)
{
    struct stat st;
    if(stat(ks->path, &st) == 0) {
        ks->exists = 1;
        ks->dev = st.st_dev;
        ks->ino = st.st_ino;
        ks->size = st.st_size;
        ks->mtime = st.st_mtim;
    } else {
        ks->exists = 0;
    }
}

static int stat_changed(const struct dapi_keystore *ks)
{
    struct stat st;
    if(stat(ks->path, &st) != 0)
        return ks->exists;
    return !ks->exists || st.st_dev != ks->dev || st.st_ino != ks->ino || st.st_size != ks->size ||
           st.st_mtim.tv_sec != ks->mtime.tv_sec || st.st_mtim.tv_nsec != ks->mtime.tv_nsec;
}

enum dapi_err dapi_keystore_open(struct dapi_keystore **out, const char *path, char *err,
                                 size_t errlen)
{
    *out = NULL;
    struct dapi_keystore *ks = calloc(1, sizeof *ks);
    if(!ks || !(ks->path = strdup(path))) {
        free(ks);
        return DAPI_ERR_NOMEM;
    }
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ks->lock, &a);
    pthread_rwlockattr_destroy(&a);
    remember_stat(ks);
    int exists;
    enum dapi_err res = table_load(path, &ks->t, &exists, err, errlen);
    if(res) {
        dapi_keystore_free(ks);
        return res;
    }
    *out = ks;
    return DAPI_OK;
}

void dapi_keystore_free(struct dapi_keystore *ks)
{
    if(!ks)
        return;
    table_free(ks->t);
    pthread_rwlock_destroy(&ks->lock);
    free(ks->path);
    free(ks);
}

const char *dapi_keystore_path(const struct dapi_keystore *ks)
{
    return ks->path;
}

size_t dapi_keystore_count(const struct dapi_keystore *ks)
{
    struct dapi_keystore *m = (struct dapi_keystore *)ks;
    pthread_rwlock_rdlock(&m->lock);
    size_t n = m->t ? m->t->f.n : 0;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

int dapi_keystore_reload(struct dapi_keystore *ks, int force, size_t *count, char *err,
                         size_t errlen)
{
    if(!force && !stat_changed(ks))
        return 0;
    /* Remember this version of the file first: if it is bad, it is reported once. */
    remember_stat(ks);
    struct table *fresh = NULL;
    int exists;
    if(table_load(ks->path, &fresh, &exists, err, errlen))
        return -1;
    if(!exists && !ks->t->f.n) { /* still no store: nothing changed */
        table_free(fresh);
        return 0;
    }
    if(!exists) {
        /* `dapi keys` replaces the file by a rename: it is never missing in between. */
        snprintf(err, errlen, "keys file %s is gone", ks->path);
        table_free(fresh);
        return -1;
    }
    pthread_rwlock_wrlock(&ks->lock);
    struct table *old = ks->t;
    for(size_t i = 0; i < fresh->f.n; i++) {
        struct dapi_ks_key key;
        memcpy(key.id, fresh->f.keys[i].id, sizeof key.id);
        struct dapi_ks_key *o = old->f.n ? bsearch(&key, old->f.keys, old->f.n, sizeof key, by_id)
                                         : NULL;
        if(o)
            fresh->used[i] = atomic_load(&old->used[o - old->f.keys]);
    }
    ks->t = fresh;
    pthread_rwlock_unlock(&ks->lock);
    table_free(old);
    *count = fresh->f.n;
    return 1;
}

enum dapi_ks_result dapi_keystore_check(struct dapi_keystore *ks, const char *key, size_t len,
                                        int64_t now, struct dapi_principal *who, int64_t *when)
{
    *when = 0;
    if(len < 7 || memcmp(key, "dapi_", 5) != 0)
        return DAPI_KS_NOT_OURS;
    const char *id = key + 5, *us = memchr(id, '_', len - 5);
    if(!us || !valid_id(id, (size_t)(us - id)))
        return DAPI_KS_NOT_OURS;
    struct dapi_ks_key probe;
    memcpy(probe.id, id, (size_t)(us - id));
    probe.id[us - id] = '\0';
    const char *secret = us + 1;
    size_t slen = len - (size_t)(secret - key);
    enum dapi_ks_result res = DAPI_KS_NOT_OURS;
    pthread_rwlock_rdlock(&ks->lock);
    struct table *t = ks->t;
    /* (an empty store has no array, and bsearch's base may not be NULL) */
    const struct dapi_ks_key *k = t->f.n ? bsearch(&probe, t->f.keys, t->f.n, sizeof probe, by_id)
                                         : NULL;
    if(k) {
        unsigned char h[DAPI_KEY_HASH_LEN];
        dapi_hmac_sha256(k->salt, sizeof k->salt, secret, slen, h);
        int cur = dapi_ct_equal(h, sizeof h, k->hash, sizeof k->hash);
        int prev = dapi_ct_equal(h, sizeof h, k->prev_hash, sizeof k->prev_hash);
        prev &= k->has_prev && now < k->prev_until;
        if(!(cur | prev)) {
            res = DAPI_KS_INVALID;
        } else if(k->revoked && k->revoked <= now) {
            res = DAPI_KS_REVOKED;
            *when = k->revoked;
        } else if(k->expires && k->expires <= now) {
            res = DAPI_KS_EXPIRED;
            *when = k->expires;
        } else {
            res = DAPI_KS_OK;
            char owner[8 + DAPI_KS_ID_LEN + 1];
            int n = snprintf(owner, sizeof owner, "dapi-key:%s", k->id);
            dapi_sha256(owner, (size_t)n, who->owner);
            snprintf(who->id, sizeof who->id, "%s", k->id);
            who->scope = k->scope;
            who->rate = k->rate;
            who->burst = k->burst;
            who->upstream_key = t->upstream[k - t->f.keys];
            atomic_store(&t->used[k - t->f.keys], now);
            atomic_store(&ks->dirty, 1);
        }
    }
    pthread_rwlock_unlock(&ks->lock);
    return res;
}

int dapi_keystore_flush_used(struct dapi_keystore *ks, int64_t now, int64_t min_interval,
                             char *err, size_t errlen)
{
    if(!atomic_load(&ks->dirty) || (min_interval && now - ks->flushed_at < min_interval))
        return 0;
    atomic_store(&ks->dirty, 0);
    ks->flushed_at = now;
    struct dapi_buf_s {
        char *p;
        size_t len, cap;
    } b = {0};
    pthread_rwlock_rdlock(&ks->lock);
    struct table *t = ks->t;
    b.cap = 64 + t->f.n * (DAPI_KS_ID_LEN + 24);
    b.p = malloc(b.cap);
    if(b.p) {
        b.len = (size_t)snprintf(b.p, b.cap, "# last use of each key (written by dapi serve)\n");
        for(size_t i = 0; i < t->f.n; i++) {
            int64_t u = atomic_load(&t->used[i]);
            if(u)
                b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, "%s %" PRId64 "\n",
                                          t->f.keys[i].id, u);
        }
    }
    pthread_rwlock_unlock(&ks->lock);
    if(!b.p)
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s.last-used", ks->path);
    int rc = atomic_write(path, b.p, b.len, err, errlen);
    free(b.p);
    return rc ? -1 : 1;
}

int64_t dapi_ks_last_used(const char *path, const char *id)
{
    char p[4200], line[256];
    snprintf(p, sizeof p, "%s.last-used", path);
    FILE *f = fopen(p, "r");
    int64_t v = 0;
    if(!f)
        return 0;
    size_t idlen = strlen(id);
    while(fgets(line, sizeof line, f))
        if(strncmp(line, id, idlen) == 0 && line[idlen] == ' ') {
            long long x = atoll(line + idlen + 1);
            v = x > 0 ? (int64_t)x : 0;
        }
    fclose(f);
    return v;
}
