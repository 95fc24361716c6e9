/* API keys: loading from the env list, a file and the development key; reloading (also
 * while other threads check keys); checking; hashing; random base62. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keys.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64];
static char err[512];

static int check(const struct dapi_keys *k, const char *key)
{
    unsigned char h[DAPI_KEY_HASH_LEN];
    return dapi_keys_check(k, key, strlen(key), h);
}

static void test_env_list(void)
{
    struct dapi_keys *k = NULL;
    char *dev = (char *)1;
    T_EQ_INT(dapi_keys_load(&k, "a, b,,c", NULL, dir, &dev, err, sizeof err), DAPI_OK);
    T_CHECK(k != NULL, "keys loaded");
    T_CHECK(dev == NULL, "no dev key when keys are configured");
    if(!k)
        return;
    T_EQ_INT(dapi_keys_count(k), 3);
    static const struct {
        const char *key;
        int ok;
    } cases[] = {
        {"a", 1},  {"b", 1},    {"c", 1}, {" b", 0}, {"b ", 0}, {"", 0},
        {"ab", 0}, {"a, b", 0}, {"A", 0}, {"d", 0},  {",", 0},
    };
    for(size_t i = 0; i < N(cases); i++)
        T_CHECK(check(k, cases[i].key) == cases[i].ok, "check [%s] == %d", cases[i].key,
                cases[i].ok);
    dapi_keys_free(k);

    /* Surrounding tabs and spaces are trimmed, inner ones kept. */
    T_EQ_INT(dapi_keys_load(&k, "\tkey one \t,two", NULL, dir, &dev, err, sizeof err), DAPI_OK);
    if(k) {
        T_EQ_INT(dapi_keys_count(k), 2);
        T_EQ_INT(check(k, "key one"), 1);
        T_EQ_INT(check(k, "two"), 1);
        T_EQ_INT(check(k, "keyone"), 0);
        dapi_keys_free(k);
    }

    /* Configured but empty: an error naming the setting, no keys. */
    static const char *const empties[] = {"", ",", " , ,, ", "\t"};
    for(size_t i = 0; i < N(empties); i++) {
        err[0] = '\0';
        k = (struct dapi_keys *)1;
        T_EQ_INT(dapi_keys_load(&k, empties[i], NULL, dir, &dev, err, sizeof err),
                 DAPI_ERR_INVALID);
        T_CHECK(k == NULL, "no keys on error");
        T_CHECK(strstr(err, "DAPI_API_KEYS") != NULL, "error names DAPI_API_KEYS: [%s]", err);
    }
}

static void test_file(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/keys.txt", dir);
    static const char text[] = "# production keys\r\n"
                               "\r\n"
                               "alpha\r\n"
                               "   # indented comment\n"
                               "  beta  \n"
                               "\t\n"
                               "gamma\tdelta\n"
                               "last-no-newline";
    t_write_n(path, text, sizeof text - 1);
    struct dapi_keys *k = NULL;
    char *dev = NULL;
    T_EQ_INT(dapi_keys_load(&k, NULL, path, dir, &dev, err, sizeof err), DAPI_OK);
    T_CHECK(dev == NULL, "no dev key with a file");
    if(k) {
        T_EQ_INT(dapi_keys_count(k), 4);
        static const struct {
            const char *key;
            int ok;
        } cases[] = {
            {"alpha", 1},
            {"beta", 1},
            {"gamma\tdelta", 1},
            {"last-no-newline", 1},
            {"alpha\r", 0},
            {"# production keys", 0},
            {"# indented comment", 0},
            {"gamma", 0},
            {"", 0},
            {"alph", 0},
            {"last-no-newlin", 0},
            {"  beta  ", 0},
        };
        for(size_t i = 0; i < N(cases); i++)
            T_CHECK(check(k, cases[i].key) == cases[i].ok, "file check [%s] == %d", cases[i].key,
                    cases[i].ok);
        dapi_keys_free(k);
    }

    /* Env list and file together: both sets count. */
    T_EQ_INT(dapi_keys_load(&k, "envkey", path, dir, &dev, err, sizeof err), DAPI_OK);
    if(k) {
        T_EQ_INT(dapi_keys_count(k), 5);
        T_EQ_INT(check(k, "envkey"), 1);
        T_EQ_INT(check(k, "alpha"), 1);
        dapi_keys_free(k);
    }

    /* A file with only comments and blank lines: an error naming the setting. */
    static const char only_comments[] = "# nothing\n\n   \n#x\r\n";
    t_write_n(path, only_comments, sizeof only_comments - 1);
    err[0] = '\0';
    T_EQ_INT(dapi_keys_load(&k, NULL, path, dir, &dev, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(k == NULL, "no keys");
    T_CHECK(strstr(err, "--api-keys-file") != NULL, "error names --api-keys-file: [%s]", err);
    t_write_n(path, "", 0);
    err[0] = '\0';
    T_EQ_INT(dapi_keys_load(&k, NULL, path, dir, &dev, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "--api-keys-file") != NULL, "empty file: error names the setting: [%s]",
            err);

    /* A missing file: an error naming the file. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/does-not-exist.txt", dir);
    err[0] = '\0';
    T_EQ_INT(dapi_keys_load(&k, NULL, missing, dir, &dev, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(k == NULL, "no keys");
    T_CHECK(strstr(err, missing) != NULL, "error names the file: [%s]", err);
    T_CHECK(!strchr(err, '\n'), "one line: [%s]", err);
    unlink(path);
}

static int is_base62(const char *s, size_t n)
{
    for(size_t i = 0; i < n; i++) {
        char c = s[i];
        if(!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return 0;
    }
    return 1;
}

static void test_dev_key(void)
{
    char state[128], keypath[160];
    snprintf(state, sizeof state, "%s/state", dir);
    T_EQ_INT(mkdir(state, 0700), 0);
    snprintf(keypath, sizeof keypath, "%s/dev-key", state);

    struct dapi_keys *k = NULL;
    char *dev = NULL;
    T_EQ_INT(dapi_keys_load(&k, NULL, NULL, state, &dev, err, sizeof err), DAPI_OK);
    T_CHECK(dev != NULL, "dev key returned");
    T_CHECK(k != NULL, "keys");
    if(!dev || !k)
        return;
    T_EQ_INT(dapi_keys_count(k), 1);
    T_CHECK(strlen(dev) >= 16, "dev key long enough: %zu", strlen(dev));
    T_CHECK(strncmp(dev, "dapi_dev_", 9) == 0 && is_base62(dev + 9, strlen(dev) - 9),
            "dev key format: [%s]", dev);
    T_EQ_INT(check(k, dev), 1);
    T_EQ_INT(check(k, "dapi_dev_"), 0);

    struct stat st;
    T_EQ_INT(stat(keypath, &st), 0);
    T_EQ_INT(st.st_mode & 07777, 0600);
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.tmp", keypath);
    T_CHECK(access(tmp, F_OK) != 0, "no temporary file left");
    /* The file holds the key (and a newline). */
    char buf[128] = "";
    FILE *f = fopen(keypath, "r");
    if(f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    T_EQ_STR(buf, dev);

    /* Second load: the same key, printed again. */
    struct dapi_keys *k2 = NULL;
    char *dev2 = NULL;
    T_EQ_INT(dapi_keys_load(&k2, NULL, NULL, state, &dev2, err, sizeof err), DAPI_OK);
    T_EQ_STR(dev2, dev);
    if(k2) {
        T_EQ_INT(check(k2, dev), 1);
        dapi_keys_free(k2);
    }
    free(dev2);

    /* A dev-key file written by hand with CRLF is read without the line end. */
    t_write_n(keypath, "hand-made\r\n", 11);
    T_EQ_INT(dapi_keys_load(&k2, NULL, NULL, state, &dev2, err, sizeof err), DAPI_OK);
    T_EQ_STR(dev2, "hand-made");
    if(k2) {
        T_EQ_INT(check(k2, "hand-made"), 1);
        T_EQ_INT(check(k2, dev), 0);
        dapi_keys_free(k2);
    }
    free(dev2);
    dev2 = NULL;

    /* An empty dev-key file is an error naming it (not silently replaced). */
    t_write_n(keypath, "", 0);
    err[0] = '\0';
    T_EQ_INT(dapi_keys_load(&k2, NULL, NULL, state, &dev2, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(k2 == NULL && dev2 == NULL, "nothing returned on error");
    T_CHECK(strstr(err, keypath) != NULL, "error names the file: [%s]", err);
    unlink(keypath);

    /* A state dir that does not exist: an error, nothing returned. */
    char nodir[200];
    snprintf(nodir, sizeof nodir, "%s/missing", dir);
    err[0] = '\0';
    T_CHECK(dapi_keys_load(&k2, NULL, NULL, nodir, &dev2, err, sizeof err) != DAPI_OK,
            "missing state dir fails");
    T_CHECK(k2 == NULL, "no keys");
    T_CHECK(err[0] != '\0', "a reason is given");

    /* A second fresh key differs from the first. */
    char *dev3 = NULL;
    T_EQ_INT(dapi_keys_load(&k2, NULL, NULL, state, &dev3, err, sizeof err), DAPI_OK);
    T_CHECK(dev3 && strcmp(dev3, dev) != 0, "a new dev key is new");
    dapi_keys_free(k2);
    free(dev3);
    unlink(keypath);
    rmdir(state);

    dapi_keys_free(k);
    free(dev);
}

static void test_hash(void)
{
    struct dapi_keys *k = NULL;
    char *dev = NULL;
    T_EQ_INT(dapi_keys_load(&k, "secret-1,secret-2", NULL, dir, &dev, err, sizeof err), DAPI_OK);
    if(!k)
        return;
    unsigned char h[DAPI_KEY_HASH_LEN], want[DAPI_KEY_HASH_LEN];
    static const char *const keys[] = {"secret-1", "secret-2"};
    for(size_t i = 0; i < N(keys); i++) {
        memset(h, 0, sizeof h);
        T_EQ_INT(dapi_keys_check(k, keys[i], strlen(keys[i]), h), 1);
        dapi_sha256(keys[i], strlen(keys[i]), want);
        T_CHECK(memcmp(h, want, sizeof h) == 0, "hash of %s is its SHA-256", keys[i]);
    }
    unsigned char h1[DAPI_KEY_HASH_LEN], h2[DAPI_KEY_HASH_LEN];
    dapi_keys_check(k, "secret-1", 8, h1);
    dapi_keys_check(k, "secret-2", 8, h2);
    T_CHECK(memcmp(h1, h2, sizeof h1) != 0, "different keys, different hashes");
    /* A prefix or an extension of a key is not a key; length is honoured. */
    T_EQ_INT(dapi_keys_check(k, "secret-", 7, h), 0);
    T_EQ_INT(dapi_keys_check(k, "secret-1x", 9, h), 0);
    T_EQ_INT(dapi_keys_check(k, "secret-1x", 8, h), 1);
    dapi_keys_free(k);

    /* Known SHA-256 vectors. */
    static const struct {
        const char *in;
        const char *hex;
    } vec[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        /* the thread's memo of its last input: a different input of the same length, the
         * same one again, and back, each get their own digest */
        {"abd", "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9"},
        {"abd", "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"k1234567890", "9cd8c9995e87658d650a7eb5b8b5db94c3cd8348d927e99a366da3a4a80f0b58"},
        {"k1234567891", "3062a0b1b106930cc4d87e1b9825777238de5742999847c951914c83a1230b7c"},
        {"k1234567890", "9cd8c9995e87658d650a7eb5b8b5db94c3cd8348d927e99a366da3a4a80f0b58"},
        /* longer than the memo holds */
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "c2a908d98f5df987ade41b5fce213067efbcc21ef2240212a41e54b5e7c28ae5"},
    };
    for(size_t i = 0; i < N(vec); i++) {
        dapi_sha256(vec[i].in, strlen(vec[i].in), h);
        char hex[65];
        for(int j = 0; j < DAPI_KEY_HASH_LEN; j++)
            snprintf(hex + 2 * j, 3, "%02x", h[j]);
        T_EQ_STR(hex, vec[i].hex);
    }
}

static void hex32(const unsigned char *h, char hex[65]);

/* dapi_sha256 into its own input's buffer (the digest replaces the input), and then of that
 * digest: the memo must hold the input it hashed, not what the buffer holds afterwards. */
static void test_hash_in_place(void)
{
    unsigned char buf[32] = "abc";
    char hex[65];
    dapi_sha256(buf, 3, buf);
    hex32(buf, hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* the digest's first 3 bytes are not "abc": a memo that kept the overwritten buffer as
     * its input would answer SHA-256("abc") here */
    unsigned char three[3], h[32];
    memcpy(three, buf, 3);
    dapi_sha256(three, 3, h);
    hex32(h, hex);
    T_EQ_STR(hex, "1fdd22a8bb94bd1ceb88700ac15d46b04f671a498ad2735db26179ceda7b9072");
    dapi_sha256(buf, 32, buf);
    hex32(buf, hex);
    T_EQ_STR(hex, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    memcpy(buf, "abc", 4);
    dapi_sha256(buf, 3, buf); /* (a memo hit now) */
    hex32(buf, hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void hex32(const unsigned char *h, char hex[65])
{
    for(int j = 0; j < 32; j++)
        snprintf(hex + 2 * j, 3, "%02x", h[j]);
}

/* HMAC-SHA-256 against RFC 4231's test cases 1, 2 and 6 (a key longer than a block). */
static void test_hmac(void)
{
    unsigned char k1[20], k6[131], mac[32];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    static const struct {
        int key; /* 1: k1, 2: "Jefe", 6: k6 */
        const char *data, *hex;
    } vec[] = {
        {1, "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {2, "what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {6, "Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for(size_t i = 0; i < N(vec); i++) {
        const void *key = vec[i].key == 1   ? (const void *)k1
                          : vec[i].key == 2 ? (const void *)"Jefe"
                                            : (const void *)k6;
        size_t keylen = vec[i].key == 1 ? sizeof k1 : vec[i].key == 2 ? 4 : sizeof k6;
        memset(mac, 0, sizeof mac);
        dapi_hmac_sha256(key, keylen, vec[i].data, strlen(vec[i].data), mac);
        char hex[65];
        hex32(mac, hex);
        T_EQ_STR(hex, vec[i].hex);
    }
}

static void test_ct_equal(void)
{
    unsigned char a[32], b[32];
    memset(a, 7, sizeof a);
    memset(b, 7, sizeof b);
    T_EQ_INT(dapi_ct_equal(a, sizeof a, b, sizeof b), 1);
    T_EQ_INT(dapi_ct_equal("", 0, "", 0), 1);
    b[31] = 8; /* last byte differs */
    T_EQ_INT(dapi_ct_equal(a, sizeof a, b, sizeof b), 0);
    b[31] = 7;
    b[0] = 8; /* first byte differs */
    T_EQ_INT(dapi_ct_equal(a, sizeof a, b, sizeof b), 0);
    b[0] = 7;
    /* A prefix is not equal: lengths must match. */
    T_EQ_INT(dapi_ct_equal(a, sizeof a, b, sizeof b - 1), 0);
    T_EQ_INT(dapi_ct_equal(a, 0, b, sizeof b), 0);
    T_EQ_INT(dapi_ct_equal("abc", 3, "abcd", 4), 0);
}

static void test_random(void)
{
    char a[65], b[65];
    memset(a, 'x', sizeof a);
    T_EQ_INT(dapi_random_base62(a, 64), DAPI_OK);
    T_EQ_INT(a[64], '\0');
    T_EQ_INT(strlen(a), 64);
    T_CHECK(is_base62(a, 64), "only base62 chars: [%s]", a);
    T_EQ_INT(dapi_random_base62(b, 64), DAPI_OK);
    T_CHECK(strcmp(a, b) != 0, "two draws differ");
    char z[1] = {'x'};
    T_EQ_INT(dapi_random_base62(z, 0), DAPI_OK);
    T_EQ_INT(z[0], '\0');

    /* Over many draws every alphabet character shows up and nothing else does. */
    static char big[62 * 200 + 1];
    T_EQ_INT(dapi_random_base62(big, sizeof big - 1), DAPI_OK);
    T_CHECK(is_base62(big, sizeof big - 1), "all base62");
    int seen[256] = {0};
    for(size_t i = 0; i < sizeof big - 1; i++)
        seen[(unsigned char)big[i]]++;
    int distinct = 0;
    for(int c = 0; c < 256; c++)
        distinct += seen[c] > 0;
    T_EQ_INT(distinct, 62);

    /* 100 22-char slugs are all distinct. */
    static char many[100][23];
    for(int i = 0; i < 100; i++)
        dapi_random_base62(many[i], 22);
    int dups = 0;
    for(int i = 0; i < 100; i++)
        for(int j = i + 1; j < 100; j++)
            dups += strcmp(many[i], many[j]) == 0;
    T_EQ_INT(dups, 0);

    unsigned char r1[32] = {0}, r2[32] = {0};
    T_EQ_INT(dapi_random(r1, sizeof r1), DAPI_OK);
    T_EQ_INT(dapi_random(r2, sizeof r2), DAPI_OK);
    T_CHECK(memcmp(r1, r2, sizeof r1) != 0, "random bytes differ");
    /* A large buffer is filled throughout (not left zero past the first read). */
    static unsigned char r3[1 << 16];
    memset(r3, 0, sizeof r3);
    T_EQ_INT(dapi_random(r3, sizeof r3), DAPI_OK);
    size_t zeros_tail = 0;
    for(size_t i = sizeof r3 - 64; i < sizeof r3; i++)
        zeros_tail += r3[i] == 0;
    T_CHECK(zeros_tail < 16, "the end of the buffer is random too (%zu zeros)", zeros_tail);
    T_EQ_INT(dapi_random(r3, 0), DAPI_OK);
}

/* dapi_keys_reload (SIGHUP): the file is read again with the env list; a bad new file keeps
 * the keys in use. */
static void test_reload(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/reload-keys.txt", dir);
    t_write(path, "alpha\nbeta\n");
    struct dapi_keys *k = NULL, *same;
    char *dev = NULL;
    size_t n = 0;
    T_EQ_INT(dapi_keys_load(&k, NULL, path, dir, &dev, err, sizeof err), DAPI_OK);
    if(!k)
        return;
    same = k;
    t_write(path, "# rotated\nalpha\ngamma\ndelta\n");
    T_EQ_INT(dapi_keys_reload(k, NULL, path, &n, err, sizeof err), DAPI_OK);
    T_EQ_INT(n, 3);
    T_EQ_INT(dapi_keys_count(k), 3);
    T_CHECK(k == same, "the keys object stays the same");
    T_EQ_INT(check(k, "alpha"), 1);
    T_EQ_INT(check(k, "gamma"), 1);
    T_EQ_INT(check(k, "beta"), 0);

    /* A file that holds no key, or has gone: refused, the keys in use stay. */
    t_write(path, "# emptied\n");
    err[0] = '\0';
    T_EQ_INT(dapi_keys_reload(k, NULL, path, &n, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "holds no key") && strstr(err, path), "says why: [%s]", err);
    unlink(path);
    err[0] = '\0';
    T_EQ_INT(dapi_keys_reload(k, NULL, path, &n, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(strstr(err, "cannot read") && strstr(err, path), "says why: [%s]", err);
    T_EQ_INT(dapi_keys_count(k), 3);
    T_EQ_INT(check(k, "alpha"), 1);
    T_EQ_INT(check(k, "delta"), 1);

    /* With the env list too, the env keys stay and a file without keys is accepted, as at a
     * start. */
    t_write(path, "");
    T_EQ_INT(dapi_keys_reload(k, "env-1,env-2", path, &n, err, sizeof err), DAPI_OK);
    T_EQ_INT(n, 2);
    T_EQ_INT(check(k, "env-2"), 1);
    T_EQ_INT(check(k, "alpha"), 0);

    /* Nothing configured (the development key): nothing to reload, the keys stay. */
    err[0] = '\0';
    T_EQ_INT(dapi_keys_reload(k, NULL, NULL, &n, err, sizeof err), DAPI_ERR_INVALID);
    T_CHECK(err[0] != '\0', "says why");
    T_EQ_INT(check(k, "env-1"), 1);
    dapi_keys_free(k);
    unlink(path);
}

struct checker {
    struct dapi_keys *k;
    atomic_int *stop;
    long checks, failures;
};

static void *check_loop(void *arg)
{
    struct checker *c = arg;
    while(!atomic_load(c->stop)) {
        unsigned char h[DAPI_KEY_HASH_LEN];
        c->failures += !dapi_keys_check(c->k, "kept", 4, h);
        c->checks++;
    }
    return NULL;
}

/* Reloads while other threads check: a key in both the old and the new set is never refused. */
static void test_reload_concurrent(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/race-keys.txt", dir);
    t_write(path, "kept\nold\n");
    struct dapi_keys *k = NULL;
    char *dev = NULL;
    size_t n;
    T_EQ_INT(dapi_keys_load(&k, NULL, path, dir, &dev, err, sizeof err), DAPI_OK);
    if(!k)
        return;
    atomic_int stop = 0;
    struct checker c[3];
    pthread_t t[3];
    for(int i = 0; i < 3; i++) {
        c[i] = (struct checker){k, &stop, 0, 0};
        pthread_create(&t[i], NULL, check_loop, &c[i]);
    }
    int reload_failures = 0;
    for(int i = 0; i < 300; i++) {
        t_write(path, i % 2 ? "kept\nold\n" : "new\nkept\nother\n");
        reload_failures += dapi_keys_reload(k, NULL, path, &n, err, sizeof err) != DAPI_OK;
    }
    atomic_store(&stop, 1);
    long checks = 0, failures = 0;
    for(int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        checks += c[i].checks;
        failures += c[i].failures;
    }
    T_EQ_INT(reload_failures, 0);
    T_EQ_INT(failures, 0);
    T_CHECK(checks > 0, "the checkers ran (%ld checks)", checks);
    dapi_keys_free(k);
    unlink(path);
}

int main(void)
{
    if(t_tmpdir(dir, sizeof dir, "keys"))
        T_DONE();
    test_env_list();
    test_file();
    test_dev_key();
    test_hash();
    test_hash_in_place();
    test_hmac();
    test_ct_equal();
    test_random();
    test_reload();
    test_reload_concurrent();
    rmdir(dir);
    T_CHECK(access(dir, F_OK) != 0, "temp dir cleaned up");
    T_DONE();
}
