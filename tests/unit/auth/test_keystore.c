/* The key store: the file format (round trip, every malformed line named by its number), the
 * field parsers, checking keys at an injected time (valid, wrong secret, unknown id, revoked,
 * expired, rotated with a grace period), what a principal gets (owner, scope, limits, the
 * upstream key read from the environment), reloading (only when the file changed; a bad
 * file keeps the keys; checks running meanwhile) and the last-use file. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keystore.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64], path[128];
static char err[1024];

/* A key for f: id given, secret made; the whole key in out. */
static struct dapi_ks_key *add_key(struct dapi_ks_file *f, const char *id, char *out)
{
    struct dapi_ks_key k;
    memset(&k, 0, sizeof k);
    k.scope.all = 1;
    snprintf(k.id, sizeof k.id, "%s", id);
    snprintf(k.name, sizeof k.name, "name-%s", id);
    k.created = 1000;
    T_EQ_INT(dapi_ks_new_secret(&k, 0, out), DAPI_OK);
    T_EQ_INT(dapi_ks_append(f, &k), DAPI_OK);
    return &f->keys[f->n - 1];
}

static enum dapi_ks_result check(struct dapi_keystore *ks, const char *key, int64_t now,
                                 struct dapi_principal *who, int64_t *when)
{
    memset(who, 0, sizeof *who);
    return dapi_keystore_check(ks, key, strlen(key), now, who, when);
}

static void test_roundtrip(void)
{
    struct dapi_ks_file f = {0}, g = {0};
    char key[DAPI_KS_KEY_MAX];
    struct dapi_ks_key *k = add_key(&f, "abc123", key);
    T_CHECK(strncmp(key, "dapi_abc123_", 12) == 0, "key format: %s", key);
    T_EQ_INT(strlen(key), 12 + DAPI_KS_SECRET_LEN);
    T_EQ_INT(dapi_ks_parse_layers("nekt_raw,nekt_service", &k->scope, err, sizeof err), 0);
    T_EQ_INT(dapi_ks_parse_rate("120/min", &k->rate, err, sizeof err), 0);
    snprintf(k->rate_text, sizeof k->rate_text, "120/min");
    k->burst = 7;
    k->expires = 5000;
    k->revoked = 0;
    k->has_prev = 1;
    memset(k->prev_hash, 0xab, sizeof k->prev_hash);
    k->prev_until = 3000;
    snprintf(k->upstream_key_env, sizeof k->upstream_key_env, "NEKT_KEY_CI");
    add_key(&f, "Z9", key);
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    struct stat st;
    T_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode 0600: %o",
            (unsigned)(st.st_mode & 0777));
    /* The file holds no secret: not the key, not its secret part. */
    FILE *fp = fopen(path, "r");
    char text[8192] = "";
    size_t n = fp ? fread(text, 1, sizeof text - 1, fp) : 0;
    text[n] = '\0';
    if(fp)
        fclose(fp);
    T_CHECK(!strstr(text, key + 8), "secret not in the file");
    int exists = 0;
    T_EQ_INT(dapi_ks_read(path, &g, &exists, err, sizeof err), DAPI_OK);
    T_EQ_INT(exists, 1);
    T_EQ_INT(g.n, 2);
    if(g.n == 2) {
        struct dapi_ks_key *a = &g.keys[0];
        T_EQ_STR(a->id, "abc123");
        T_EQ_STR(a->name, "name-abc123");
        T_EQ_INT(memcmp(a->hash, f.keys[0].hash, 32), 0);
        T_EQ_INT(memcmp(a->salt, f.keys[0].salt, 16), 0);
        T_EQ_INT(a->scope.all, 0);
        T_EQ_INT(a->scope.n, 2);
        T_EQ_STR(a->scope.layers[1], "nekt_service");
        T_EQ_STR(a->rate_text, "120/min");
        T_CHECK(a->rate == 2.0, "rate 120/min = 2/s: %g", a->rate);
        T_CHECK(a->burst == 7, "burst");
        T_EQ_INT(a->expires, 5000);
        T_EQ_INT(a->created, 1000);
        T_EQ_INT(a->has_prev, 1);
        T_EQ_INT(a->prev_until, 3000);
        T_EQ_STR(a->upstream_key_env, "NEKT_KEY_CI");
        T_EQ_INT(g.keys[1].scope.all, 1);
        T_EQ_INT(g.keys[1].has_prev, 0);
        T_EQ_STR(g.keys[1].upstream_key_env, "");
    }
    dapi_ks_file_free(&g);
    dapi_ks_file_free(&f);
    /* A file that does not exist: no keys, not an error. */
    T_EQ_INT(dapi_ks_read("/nonexistent/dir/keys", &g, &exists, err, sizeof err), DAPI_OK);
    T_EQ_INT(exists, 0);
    T_EQ_INT(g.n, 0);
}

/* Run as root, the file takes the owner of its directory (or of the file it replaces). */
static void test_owner(void)
{
    if(geteuid() != 0)
        return;
    char sub[160], file[200];
    snprintf(sub, sizeof sub, "%s/svc", dir);
    snprintf(file, sizeof file, "%s/keys", sub);
    T_EQ_INT(mkdir(sub, 0700), 0);
    T_EQ_INT(chown(sub, 4242, 4343), 0);
    struct dapi_ks_file f = {0};
    char key[DAPI_KS_KEY_MAX];
    add_key(&f, "own", key);
    T_EQ_INT(dapi_ks_write(file, &f, err, sizeof err), DAPI_OK);
    struct stat st;
    T_CHECK(stat(file, &st) == 0 && st.st_uid == 4242 && st.st_gid == 4343, "owner %u:%u",
            (unsigned)st.st_uid, (unsigned)st.st_gid);
    T_EQ_INT(chown(file, 4444, 4545), 0);
    T_EQ_INT(dapi_ks_write(file, &f, err, sizeof err), DAPI_OK);
    T_CHECK(stat(file, &st) == 0 && st.st_uid == 4444 && (st.st_mode & 0777) == 0600,
            "the replaced file's owner kept: %u", (unsigned)st.st_uid);
    dapi_ks_file_free(&f);
}

static void test_malformed(void)
{
    static const char h[] = "hash="
                            "0000000000000000000000000000000000000000000000000000000000000000"
                            " salt=00000000000000000000000000000000";
    char good[256];
    snprintf(good, sizeof good, "id=a name=x %s\n", h);
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"id=b name=y", "no hash"},
        {"just words", "'just' is not name=value"},
        {"id=b name=y color=red", "unknown field 'color'"},
        {"id=b_c name=y", "bad id"},
        {"id=b name=has/slash", "bad name"},
        {"id=b id=c name=y", "field id given twice"},
        {"id=a name=y", "id a appears twice"},
        {"id=b name=y hash=00", "bad hash"},
        {"id=b name=y rate=5/week", "bad rate '5/week'"},
        {"id=b name=y expires=soon", "bad expires 'soon'"},
        {"id=b name=y layers=a,,b", "bad layer list"},
        {"id=b name=y upstream_key_env=1BAD", "bad upstream_key_env"},
    };
    for(size_t i = 0; i < N(cases); i++) {
        char text[1024];
        /* the bad line is line 4: a comment, a blank line and a good key come first */
        int n = snprintf(
            text, sizeof text, "# keys\n\n%s%s %s\n", good, cases[i].line,
            strstr(cases[i].line, "hash=") || strcmp(cases[i].why, "no hash") == 0 ? "" : h);
        struct dapi_ks_file f;
        err[0] = '\0';
        T_EQ_INT(dapi_ks_parse("K", text, (size_t)n, &f, err, sizeof err), DAPI_ERR_INVALID);
        T_CHECK(strncmp(err, "keys file K line 4: ", 20) == 0, "line named: %s", err);
        T_CHECK(strstr(err, cases[i].why) != NULL, "[%s] says %s: %s", cases[i].line, cases[i].why,
                err);
        T_EQ_INT(f.n, 0);
    }
}

static void test_parsers(void)
{
    int64_t t = 0;
    T_EQ_INT(dapi_ks_parse_when("2026-12-31", 0, &t, err, sizeof err), 0);
    T_EQ_INT(t, 1798675200);
    T_EQ_INT(dapi_ks_parse_when("2026-12-31T23:59:59Z", 0, &t, err, sizeof err), 0);
    T_EQ_INT(t, 1798761599);
    T_EQ_INT(dapi_ks_parse_when("90s", 100, &t, err, sizeof err), 0);
    T_EQ_INT(t, 190);
    T_EQ_INT(dapi_ks_parse_when("7d", 0, &t, err, sizeof err), 0);
    T_EQ_INT(t, 7 * 86400);
    T_EQ_INT(dapi_ks_parse_when("tomorrow", 0, &t, err, sizeof err), -1);
    T_EQ_INT(dapi_ks_parse_when("2026-13-01", 0, &t, err, sizeof err), -1);
    T_EQ_INT(dapi_ks_parse_duration("0", &t, err, sizeof err), 0);
    T_EQ_INT(t, 0);
    T_EQ_INT(dapi_ks_parse_duration("30m", &t, err, sizeof err), 0);
    T_EQ_INT(t, 1800);
    T_EQ_INT(dapi_ks_parse_duration("-5s", &t, err, sizeof err), -1);
    T_EQ_INT(dapi_ks_parse_duration("h", &t, err, sizeof err), -1);
    double r = 0;
    T_EQ_INT(dapi_ks_parse_rate("10/s", &r, err, sizeof err), 0);
    T_CHECK(r == 10, "10/s");
    T_EQ_INT(dapi_ks_parse_rate("0/s", &r, err, sizeof err), -1);
    /* the syntax of --rate-limit (one parser): hours too, never "0", at most 1,000,000 */
    T_EQ_INT(dapi_ks_parse_rate("36/h", &r, err, sizeof err), 0);
    T_CHECK(r > 0.0099 && r < 0.0101, "36/h is 0.01 per second: %g", r);
    T_EQ_INT(dapi_ks_parse_rate("0", &r, err, sizeof err), -1);
    T_EQ_INT(dapi_ks_parse_rate("1000001/s", &r, err, sizeof err), -1);
    T_EQ_INT(dapi_ks_parse_rate("10", &r, err, sizeof err), -1);
    char out[32];
    dapi_ks_format_time(1798761599, out, sizeof out);
    T_EQ_STR(out, "2026-12-31T23:59:59Z");
    T_EQ_INT(dapi_ks_valid_name("ci-bot@team.x"), 1);
    T_EQ_INT(dapi_ks_valid_name("two words"), 0);
    T_EQ_INT(dapi_ks_valid_env("NEKT_KEY_1"), 1);
    T_EQ_INT(dapi_ks_valid_env("NEKT-KEY"), 0);
}

static void test_check(void)
{
    struct dapi_ks_file f = {0};
    char a[DAPI_KS_KEY_MAX], b[DAPI_KS_KEY_MAX], c[DAPI_KS_KEY_MAX], d[DAPI_KS_KEY_MAX],
        old[DAPI_KS_KEY_MAX];
    struct dapi_ks_key *k = add_key(&f, "keyA", a);
    dapi_ks_parse_layers("nekt_raw", &k->scope, err, sizeof err);
    k->rate = 2; /* the file keeps rate_text: the rate is read from it */
    snprintf(k->rate_text, sizeof k->rate_text, "2/s");
    k->burst = 5;
    snprintf(k->upstream_key_env, sizeof k->upstream_key_env, "T_KS_UPSTREAM");
    k = add_key(&f, "keyB", b);
    k->revoked = 2000;
    k = add_key(&f, "keyC", c);
    k->expires = 3000;
    k = add_key(&f, "keyD", old);
    /* rotation: the old secret stays valid until 2500 */
    memcpy(k->prev_hash, k->hash, 32);
    k->has_prev = 1;
    k->prev_until = 2500;
    T_EQ_INT(dapi_ks_new_secret(k, 1, d), DAPI_OK);
    snprintf(k->upstream_key_env, sizeof k->upstream_key_env, "T_KS_UNSET");
    setenv("T_KS_UPSTREAM", "nekt-secret-for-ci", 1);
    unsetenv("T_KS_UNSET");
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    struct dapi_keystore *ks = NULL;
    T_EQ_INT(dapi_keystore_open(&ks, path, err, sizeof err), DAPI_OK);
    if(!ks)
        return;
    T_EQ_INT(dapi_keystore_count(ks), 4);
    struct dapi_principal who;
    int64_t when = -1;
    T_EQ_INT(check(ks, a, 1500, &who, &when), DAPI_KS_OK);
    T_EQ_STR(who.id, "keyA");
    unsigned char owner[32];
    dapi_sha256("dapi-key:keyA", 13, owner);
    T_EQ_INT(memcmp(who.owner, owner, 32), 0);
    T_EQ_INT(who.scope.all, 0);
    T_EQ_INT(dapi_scope_allows(&who.scope, "nekt_raw"), 1);
    T_EQ_INT(dapi_scope_allows(&who.scope, "nekt_trusted"), 0);
    T_CHECK(who.rate == 2 && who.burst == 5, "limits %g %g", who.rate, who.burst);
    T_EQ_STR(who.upstream_key, "nekt-secret-for-ci");
    /* wrong secret, truncated, extended, unknown id, not a store key */
    char bad[DAPI_KS_KEY_MAX + 2];
    snprintf(bad, sizeof bad, "%s", a);
    bad[strlen(bad) - 1] ^= 1;
    T_EQ_INT(check(ks, bad, 1500, &who, &when), DAPI_KS_INVALID);
    bad[strlen(bad) - 1] = '\0';
    T_EQ_INT(check(ks, bad, 1500, &who, &when), DAPI_KS_INVALID);
    snprintf(bad, sizeof bad, "%sx", a);
    T_EQ_INT(check(ks, bad, 1500, &who, &when), DAPI_KS_INVALID);
    T_EQ_INT(check(ks, "dapi_keyA_", 1500, &who, &when), DAPI_KS_INVALID);
    T_EQ_INT(check(ks, "dapi_nope_abc", 1500, &who, &when), DAPI_KS_NOT_OURS);
    T_EQ_INT(check(ks, "plain-key", 1500, &who, &when), DAPI_KS_NOT_OURS);
    T_EQ_INT(check(ks, "dapi_dev_abc", 1500, &who, &when), DAPI_KS_NOT_OURS);
    T_EQ_INT(check(ks, "dapi__abc", 1500, &who, &when), DAPI_KS_NOT_OURS);
    /* revoked at 2000: fine before, 401 from then on; a wrong secret stays "invalid" */
    T_EQ_INT(check(ks, b, 1999, &who, &when), DAPI_KS_OK);
    T_EQ_INT(check(ks, b, 2000, &who, &when), DAPI_KS_REVOKED);
    T_EQ_INT(when, 2000);
    snprintf(bad, sizeof bad, "%s", b);
    bad[strlen(bad) - 1] ^= 1;
    T_EQ_INT(check(ks, bad, 2500, &who, &when), DAPI_KS_INVALID);
    /* expires at 3000 */
    T_EQ_INT(check(ks, c, 2999, &who, &when), DAPI_KS_OK);
    T_EQ_STR(who.upstream_key ? who.upstream_key : "(null)", "(null)");
    T_EQ_INT(check(ks, c, 3000, &who, &when), DAPI_KS_EXPIRED);
    T_EQ_INT(when, 3000);
    /* rotated: both secrets until 2500, then only the new one; same owner for both */
    T_EQ_INT(check(ks, d, 2000, &who, &when), DAPI_KS_OK);
    T_CHECK(who.upstream_key == NULL, "an unset upstream_key_env gives no upstream key");
    unsigned char owner_d[32];
    memcpy(owner_d, who.owner, 32);
    T_EQ_INT(check(ks, old, 2499, &who, &when), DAPI_KS_OK);
    T_EQ_INT(memcmp(who.owner, owner_d, 32), 0);
    T_EQ_INT(check(ks, old, 2500, &who, &when), DAPI_KS_INVALID);
    T_EQ_INT(check(ks, d, 2500, &who, &when), DAPI_KS_OK);

    /* last use: written to <path>.last-used, then read back */
    T_EQ_INT(dapi_keystore_flush_used(ks, 4000, 0, err, sizeof err), 1);
    T_EQ_INT(dapi_keystore_flush_used(ks, 4001, 0, err, sizeof err), 0); /* nothing new */
    check(ks, a, 4002, &who, &when);
    T_EQ_INT(dapi_keystore_flush_used(ks, 4003, 60, err, sizeof err), 0); /* too soon */
    T_EQ_INT(dapi_ks_last_used(path, "keyA"), 1500);
    T_EQ_INT(dapi_keystore_flush_used(ks, 4100, 60, err, sizeof err), 1);
    T_EQ_INT(dapi_ks_last_used(path, "keyA"), 4002);
    T_EQ_INT(dapi_ks_last_used(path, "keyD"), 2500);
    T_EQ_INT(dapi_ks_last_used(path, "keyB"), 1999);
    T_EQ_INT(dapi_ks_last_used(path, "keyX"), 0);
    dapi_keystore_free(ks);
    dapi_ks_file_free(&f);
    char lu[160];
    snprintf(lu, sizeof lu, "%s.last-used", path);
    unlink(lu);
}

static void test_reload(void)
{
    struct dapi_ks_file f = {0};
    char a[DAPI_KS_KEY_MAX], b[DAPI_KS_KEY_MAX];
    add_key(&f, "one", a);
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    struct dapi_keystore *ks = NULL;
    T_EQ_INT(dapi_keystore_open(&ks, path, err, sizeof err), DAPI_OK);
    if(!ks)
        return;
    size_t n = 99;
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), 0); /* unchanged */
    T_EQ_INT(dapi_keystore_reload(ks, 1, &n, err, sizeof err), 1); /* forced */
    T_EQ_INT(n, 1);
    add_key(&f, "two", b);
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), 1); /* a new file (rename) */
    T_EQ_INT(n, 2);
    struct dapi_principal who;
    int64_t when;
    T_EQ_INT(check(ks, b, 10, &who, &when), DAPI_KS_OK);
    /* a bad file: reported once, the keys kept */
    t_write(path, "# broken\nid=zz\n");
    err[0] = '\0';
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), -1);
    T_CHECK(strstr(err, "line 2: no name") != NULL, "why: %s", err);
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), 0);
    T_EQ_INT(dapi_keystore_count(ks), 2);
    T_EQ_INT(check(ks, a, 10, &who, &when), DAPI_KS_OK);
    /* the file removed: the keys kept */
    unlink(path);
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), -1);
    T_CHECK(strstr(err, "is gone") != NULL, "why: %s", err);
    T_EQ_INT(check(ks, a, 10, &who, &when), DAPI_KS_OK);
    /* good again, one key: the other is unknown now */
    f.n = 1;
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    T_EQ_INT(dapi_keystore_reload(ks, 0, &n, err, sizeof err), 1);
    T_EQ_INT(check(ks, b, 10, &who, &when), DAPI_KS_NOT_OURS);
    T_EQ_INT(check(ks, a, 10, &who, &when), DAPI_KS_OK);
    /* no file, before and after: nothing to reload, also when forced */
    struct dapi_keystore *none = NULL;
    T_EQ_INT(dapi_keystore_open(&none, "/nonexistent/keys", err, sizeof err), DAPI_OK);
    if(none) {
        T_EQ_INT(dapi_keystore_count(none), 0);
        T_EQ_INT(dapi_keystore_reload(none, 1, &n, err, sizeof err), 0);
        dapi_keystore_free(none);
    }
    /* a malformed file refuses to open, naming the line */
    t_write(path, "\n\n\nid=q name=q hash=1\n");
    struct dapi_keystore *bad = NULL;
    T_EQ_INT(dapi_keystore_open(&bad, path, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "line 4: bad hash") != NULL, "why: %s", err);
    T_CHECK(bad == NULL, "no store");
    dapi_keystore_free(ks);
    dapi_ks_file_free(&f);
    unlink(path);
}

/* Checks from several threads while the file is replaced and reloaded: the kept key is
 * accepted every time (no check sees a half-swapped table or freed memory). */
struct conc {
    struct dapi_keystore *ks;
    const char *key;
    atomic_int stop, bad, ok;
};

static void *checker(void *arg)
{
    struct conc *c = arg;
    while(!atomic_load(&c->stop)) {
        struct dapi_principal who;
        int64_t when;
        if(dapi_keystore_check(c->ks, c->key, strlen(c->key), 10, &who, &when) == DAPI_KS_OK)
            atomic_fetch_add(&c->ok, 1);
        else
            atomic_fetch_add(&c->bad, 1);
    }
    return NULL;
}

static void test_reload_concurrent(void)
{
    struct dapi_ks_file f = {0};
    char a[DAPI_KS_KEY_MAX], other[DAPI_KS_KEY_MAX];
    add_key(&f, "kept", a);
    T_EQ_INT(dapi_ks_write(path, &f, err, sizeof err), DAPI_OK);
    struct conc c = {0};
    c.key = a;
    T_EQ_INT(dapi_keystore_open(&c.ks, path, err, sizeof err), DAPI_OK);
    if(!c.ks)
        return;
    pthread_t th[3];
    for(int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, checker, &c);
    for(int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        if(f.n > 1)
            f.n = 1;
        add_key(&f, id, other);
        dapi_ks_write(path, &f, err, sizeof err);
        size_t n;
        dapi_keystore_reload(c.ks, 1, &n, err, sizeof err);
    }
    atomic_store(&c.stop, 1);
    for(int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    T_EQ_INT(atomic_load(&c.bad), 0);
    T_CHECK(atomic_load(&c.ok) > 0, "checks ran");
    dapi_keystore_free(c.ks);
    dapi_ks_file_free(&f);
    unlink(path);
}

int main(void)
{
    if(t_tmpdir(dir, sizeof dir, "keystore"))
        T_DONE();
    snprintf(path, sizeof path, "%s/keys", dir);
    test_roundtrip();
    test_owner();
    test_malformed();
    test_parsers();
    test_check();
    test_reload();
    test_reload_concurrent();
    t_rm_rf(dir);
    T_DONE();
}
