/* `dapi keys`: manages the key store file that `dapi serve` reads (auth/keystore.h,
 * docs/auth.md). add prints the new key once; list never shows a secret (the file holds
 * none); revoke and rotate keep the entry, so a revoked key is told from an unknown one.
 * Every change is read, changed and written atomically under <file>.lock, so two `dapi keys`
 * at once do not lose one another's change; a running server picks the new file up by
 * itself within a second (or at SIGHUP). */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/keystore.h"

enum {
    O_KEYS_FILE,
    O_STATE_DIR,
    O_NAME,
    O_LAYERS,
    O_RATE,
    O_BURST,
    O_EXPIRES,
    O_UPSTREAM_KEY_ENV,
    O_GRACE,
    O_JSON,
    O_VERSION,
    O_HELP,
    O__COUNT
};

static const struct dapi_cli_opt opts[O__COUNT] = {
    [O_KEYS_FILE] = {"keys-file", 0, "FILE", "DAPI_KEYS_FILE", "<state-dir>/keys",
                     "the key store (the same as dapi serve's)"},
    [O_STATE_DIR] = {"state-dir", 0, "DIR", "DAPI_STATE_DIR", "./state",
                     "where the key store is when --keys-file is not given"},
    [O_NAME] = {"name", 0, "NAME", NULL, NULL,
                "add: the key's name ([A-Za-z0-9._@:-], up to 64 characters; required)"},
    [O_LAYERS] = {"layers", 0, "LAYERS", NULL, "all",
                  "add: the only layers the key may read (comma-separated)"},
    [O_RATE] = {"rate", 0, "RATE", NULL, "the server's",
                "add: requests allowed, N/s, N/min or N/h"},
    [O_BURST] = {"burst", 0, "N", NULL, "the server's", "add: requests allowed at once"},
    [O_EXPIRES] = {"expires", 0, "WHEN", NULL, "never",
                   "add: a UTC date (2026-12-31, 2026-12-31T23:59:59Z) or a duration from now "
                   "(90s, 30m, 12h, 7d)"},
    [O_UPSTREAM_KEY_ENV] = {"upstream-key-env", 0, "VAR", NULL, NULL,
                            "add: --backend nekt: the environment variable of dapi serve that "
                            "holds the Nekt key this key uses"},
    [O_GRACE] = {"grace", 0, "DURATION", NULL, "1h",
                 "rotate: how long the old secret stays valid (0 = not at all)"},
    [O_JSON] = {"json", 0, NULL, NULL, NULL, "list: one JSON object per key, one per line"},
    [O_VERSION] = {"version", 'V', NULL, NULL, NULL, "print the version and exit"},
    [O_HELP] = {"help", 'h', NULL, NULL, NULL, "this help"},
};

void dapi_cli_keys_usage(FILE *out)
{
    fprintf(out,
            "Usage: dapi keys add --name NAME [--layers LAYERS] [--rate RATE] [--burst N]\n"
            "                     [--expires WHEN] [--upstream-key-env VAR]\n"
            "       dapi keys list [--json]\n"
            "       dapi keys revoke ID\n"
            "       dapi keys rotate ID [--grace DURATION]\n\n"
            "Manages the key store that dapi serve reads (and reads again when it changes).\n"
            "add prints the new key (dapi_<id>_<secret>) once, on stdout: only a salted hash\n"
            "is kept. rotate prints the key's new secret; the old one works for --grace.\n"
            "Exit 0 on success, 1 if the file cannot be used or the id is unknown, 2 on a\n"
            "usage error. Details: docs/auth.md.\n\n"
            "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* Holds <file>.lock (flock) while a change is read, made and written. */
static int lock_file(const char *file, char *err, size_t errlen)
{
    char p[4200];
    snprintf(p, sizeof p, "%.4090s.lock", file);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if(fd < 0 || flock(fd, LOCK_EX)) {
        snprintf(err, errlen, "cannot lock %s: %s", p, strerror(errno));
        if(fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void when_text(int64_t t, const char *none, char *out, size_t n)
{
    if(t)
        dapi_ks_format_time(t, out, n);
    else
        snprintf(out, n, "%s", none);
}

static void layers_text(const struct dapi_scope *s, char *out, size_t n)
{
    size_t l = 0;
    out[0] = '\0';
    if(s->all) {
        snprintf(out, n, "all");
        return;
    }
    for(size_t i = 0; i < s->n && l < n; i++)
        l += (size_t)snprintf(out + l, n - l, "%s%s", i ? "," : "", s->layers[i]);
}

static const char *status_of(const struct dapi_ks_key *k, int64_t now)
{
    if(k->revoked && k->revoked <= now)
        return "revoked";
    if(k->expires && k->expires <= now)
        return "expired";
    return "active";
}

static int list(const char *file, const struct dapi_ks_file *f, int json)
{
    int64_t now = now_s();
    if(!json)
        printf("%-12s  %-16s  %-7s  %-24s  %-9s  %-5s  %-20s  %-20s  %-20s\n", "ID", "NAME",
               "STATUS", "LAYERS", "RATE", "BURST", "EXPIRES", "CREATED", "LAST USED");
    for(size_t i = 0; i < f->n; i++) {
        const struct dapi_ks_key *k = &f->keys[i];
        char layers[DAPI_SCOPE_MAX_LAYERS * (DAPI_LAYER_NAME_MAX + 1) + 8], exp[32], cre[32],
            used[32], rev[32], burst[32];
        layers_text(&k->scope, layers, sizeof layers);
        int64_t u = dapi_ks_last_used(file, k->id);
        if(json) {
            printf("{\"id\":\"%s\",\"name\":\"%s\",\"status\":\"%s\",\"layers\":", k->id, k->name,
                   status_of(k, now));
            if(k->scope.all) {
                printf("null");
            } else {
                printf("[");
                for(size_t j = 0; j < k->scope.n; j++)
                    printf("%s\"%s\"", j ? "," : "", k->scope.layers[j]);
                printf("]");
            }
            printf(",\"rate\":%s%s%s,\"burst\":%lld,\"expires\":%" PRId64 ",\"created\":%" PRId64
                   ",\"revoked\":%" PRId64 ",\"last_used\":%" PRId64 ",\"rotated_until\":%" PRId64
                   ",\"upstream_key_env\":%s%s%s}\n",
                   k->rate_text[0] ? "\"" : "", k->rate_text[0] ? k->rate_text : "null",
                   k->rate_text[0] ? "\"" : "", (long long)k->burst, k->expires, k->created,
                   k->revoked, u, k->has_prev ? k->prev_until : 0,
                   k->upstream_key_env[0] ? "\"" : "",
                   k->upstream_key_env[0] ? k->upstream_key_env : "null",
                   k->upstream_key_env[0] ? "\"" : "");
            continue;
        }
        when_text(k->expires, "never", exp, sizeof exp);
        when_text(k->created, "-", cre, sizeof cre);
        when_text(u, "never", used, sizeof used);
        when_text(k->revoked, "-", rev, sizeof rev);
        if(k->burst)
            snprintf(burst, sizeof burst, "%lld", (long long)k->burst);
        else
            snprintf(burst, sizeof burst, "-");
        printf("%-12s  %-16s  %-7s  %-24s  %-9s  %-5s  %-20s  %-20s  %-20s\n", k->id, k->name,
               status_of(k, now), layers, k->rate_text[0] ? k->rate_text : "-", burst, exp, cre,
               used);
    }
    return DAPI_EXIT_OK;
}

static int add(const char **v, struct dapi_ks_file *f, char *key, char *err, size_t errlen)
{
    struct dapi_ks_key k;
    memset(&k, 0, sizeof k);
    k.scope.all = 1;
    k.created = now_s();
    if(!v[O_NAME] || !dapi_ks_valid_name(v[O_NAME])) {
        snprintf(err, errlen, "add needs --name NAME ([A-Za-z0-9._@:-], 1 to %d characters)",
                 DAPI_KS_NAME_MAX);
        return DAPI_EXIT_USAGE;
    }
    snprintf(k.name, sizeof k.name, "%s", v[O_NAME]);
    long long burst = 0;
    if((v[O_LAYERS] && dapi_ks_parse_layers(v[O_LAYERS], &k.scope, err, errlen)) ||
       (v[O_RATE] && dapi_ks_parse_rate(v[O_RATE], &k.rate, err, errlen)) ||
       (v[O_EXPIRES] && dapi_ks_parse_when(v[O_EXPIRES], k.created, &k.expires, err, errlen)))
        return DAPI_EXIT_USAGE;
    if(v[O_BURST] && dapi_cli_int(v[O_BURST], 1, 1000000, &burst)) {
        snprintf(err, errlen, "--burst must be a number from 1 to 1000000");
        return DAPI_EXIT_USAGE;
    }
    k.burst = (double)burst;
    if(v[O_RATE])
        snprintf(k.rate_text, sizeof k.rate_text, "%s", v[O_RATE]);
    if(v[O_UPSTREAM_KEY_ENV]) {
        if(!dapi_ks_valid_env(v[O_UPSTREAM_KEY_ENV])) {
            snprintf(err, errlen, "bad --upstream-key-env '%s' (an environment variable name)",
                     v[O_UPSTREAM_KEY_ENV]);
            return DAPI_EXIT_USAGE;
        }
        snprintf(k.upstream_key_env, sizeof k.upstream_key_env, "%s", v[O_UPSTREAM_KEY_ENV]);
    }
    do {
        if(dapi_ks_new_id(k.id)) {
            snprintf(err, errlen, "no random bytes");
            return DAPI_EXIT_OTHER;
        }
    } while(dapi_ks_find(f, k.id));
    if(dapi_ks_new_secret(&k, 0, key) || dapi_ks_append(f, &k)) {
        snprintf(err, errlen, "cannot make a key");
        return DAPI_EXIT_OTHER;
    }
    return DAPI_EXIT_OK;
}

int dapi_cli_keys(int argc, char **argv)
{
    const char *v[O__COUNT], **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0, rc = DAPI_EXIT_USAGE, lock = -1;
    char file[4096], err[8400] = "", key[DAPI_KS_KEY_MAX] = "";
    struct dapi_ks_file f = {0};
    if(!pos)
        return DAPI_EXIT_OTHER;
    if(dapi_cli_parse("keys", opts, O__COUNT, argc, argv, v, pos, &npos))
        goto out;
    if(v[O_HELP] || v[O_VERSION]) {
        if(v[O_HELP])
            dapi_cli_keys_usage(stdout);
        else
            dapi_cli_version(stdout);
        rc = DAPI_EXIT_OK;
        goto out;
    }
    const char *cmd = npos ? pos[0] : NULL;
    int want = !cmd                                                         ? -1
               : (strcmp(cmd, "add") == 0 || strcmp(cmd, "list") == 0)      ? 1
               : (strcmp(cmd, "revoke") == 0 || strcmp(cmd, "rotate") == 0) ? 2
                                                                            : -1;
    if(want < 0 || npos != want) {
        fprintf(stderr, "dapi keys: %s\n",
                want < 0    ? "expected add, list, revoke ID or rotate ID (dapi help keys)"
                : want == 1 ? "add and list take no argument"
                            : "revoke and rotate take one key id");
        goto out;
    }
    if(v[O_KEYS_FILE])
        snprintf(file, sizeof file, "%s", v[O_KEYS_FILE]);
    else
        snprintf(file, sizeof file, "%s/keys", v[O_STATE_DIR] ? v[O_STATE_DIR] : "./state");
    int writes = strcmp(cmd, "list") != 0;
    rc = DAPI_EXIT_OTHER;
    if(writes) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", file);
        if(mkdir(dirname(dir), 0700) && errno != EEXIST) {
            snprintf(err, sizeof err, "cannot create the directory of %s: %s", file,
                     strerror(errno));
            goto fail;
        }
        if((lock = lock_file(file, err, sizeof err)) < 0)
            goto fail;
    }
    int exists;
    if(dapi_ks_read(file, &f, &exists, err, sizeof err))
        goto fail;
    if(!writes) {
        rc = list(file, &f, v[O_JSON] != NULL);
        goto out;
    }
    int64_t now = now_s();
    struct dapi_ks_key *k = NULL;
    if(strcmp(cmd, "add") == 0) {
        if((rc = add(v, &f, key, err, sizeof err)))
            goto fail;
        k = &f.keys[f.n - 1];
    } else {
        if(!(k = dapi_ks_find(&f, pos[1]))) {
            snprintf(err, sizeof err, "no key with id '%s' in %s", pos[1], file);
            goto fail;
        }
        if(k->revoked) {
            char t[32];
            dapi_ks_format_time(k->revoked, t, sizeof t);
            snprintf(err, sizeof err, "key %s was revoked at %s", k->id, t);
            goto fail;
        }
        if(strcmp(cmd, "revoke") == 0) {
            k->revoked = now;
        } else {
            int64_t grace = 3600;
            if(v[O_GRACE] && dapi_ks_parse_duration(v[O_GRACE], &grace, err, sizeof err)) {
                rc = DAPI_EXIT_USAGE;
                goto fail;
            }
            memcpy(k->prev_hash, k->hash, sizeof k->hash);
            k->has_prev = grace > 0;
            k->prev_until = grace > 0 ? now + grace : 0;
            if(dapi_ks_new_secret(k, 1, key)) {
                snprintf(err, sizeof err, "no random bytes");
                goto fail;
            }
        }
    }
    char id[DAPI_KS_ID_LEN + 1], name[DAPI_KS_NAME_MAX + 1];
    snprintf(id, sizeof id, "%s", k->id);
    snprintf(name, sizeof name, "%s", k->name);
    int64_t until = k->prev_until;
    if(dapi_ks_write(file, &f, err, sizeof err))
        goto fail;
    rc = DAPI_EXIT_OK;
    if(key[0]) {
        printf("%s\n", key);
        fflush(stdout);
    }
    if(strcmp(cmd, "add") == 0) {
        fprintf(stderr, "dapi keys: added key %s (%s) to %s; the key above is shown only once\n",
                id, name, file);
    } else if(strcmp(cmd, "revoke") == 0) {
        fprintf(stderr, "dapi keys: revoked key %s (%s)\n", id, name);
    } else {
        char t[32];
        when_text(until, "", t, sizeof t);
        fprintf(stderr, "dapi keys: new secret for key %s (%s) above; the old one %s%s\n", id,
                name, until ? "works until " : "no longer works", t);
    }
    goto out;
fail:
    if(rc == DAPI_EXIT_OK)
        rc = DAPI_EXIT_OTHER;
    fprintf(stderr, "dapi keys: %s\n", err);
out:
    memset(key, 0, sizeof key);
    dapi_ks_file_free(&f);
    if(lock >= 0)
        close(lock);
    free(pos);
    return rc;
}
