/* The creation log and its group commit (store/commit.h): concurrent appenders share syncs,
 * each returns only after a sync that covered its record, a failed sync reaches exactly its
 * round, and a start reads back exactly the current generation up to the first torn record. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/commit.h"
#include "t.h"

static char dir[64];

#define THREADS 16
#define PER_THREAD 40

/* ---- a sync hook that sees what each round makes durable ---- */

static atomic_int synced_ids[THREADS * PER_THREAD];
static atomic_int in_round, overlapped;
static int fail_next; /* the next round fails with EIO (set while no thread waits) */

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Marks the ids of every record in the log as synced (read at the start of the round: what
 * it reads is covered by the sync it runs), then sleeps so that others pile up. */
static int hook(int fd, void *arg)
{
    (void)arg;
    if(atomic_fetch_add(&in_round, 1))
        overlapped = 1;
    static unsigned char buf[1 << 16];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    for(ssize_t off = 0; n > 0 && off + 24 <= n;) {
        uint32_t len = get32(buf + off + 8);
        if(get32(buf + off) != 0x314C5144u || off + 24 + (ssize_t)len > n)
            break;
        int id = atoi((const char *)buf + off + 24);
        if(id >= 0 && id < THREADS * PER_THREAD)
            synced_ids[id] = 1;
        off += 24 + (((ssize_t)len + 7) & ~(ssize_t)7);
    }
    usleep(2000);
    int e = fail_next ? EIO : fdatasync(fd) ? errno : 0;
    fail_next = 0;
    atomic_fetch_sub(&in_round, 1);
    return e;
}

struct worker {
    struct store_commit *c;
    int t;
    int early; /* returned before its record was synced */
    int errors;
};

static void *append_many(void *arg)
{
    struct worker *w = arg;
    for(int i = 0; i < PER_THREAD; i++) {
        char rec[32];
        int id = w->t * PER_THREAD + i;
        int n = snprintf(rec, sizeof rec, "%d", id);
        if(store_commit_add(w->c, STORE_REC_CREATED, rec, (size_t)n, 1, NULL))
            w->errors++;
        else if(!synced_ids[id])
            w->early++;
    }
    return NULL;
}

/* A log of 1 MiB in a new directory dir/name (its path to path, if not NULL), opened. */
static struct store_commit *open_in(const char *name, char *path, size_t pathlen)
{
    char d[128];
    snprintf(d, sizeof d, "%s/%s", dir, name);
    mkdir(d, 0700);
    if(path)
        snprintf(path, pathlen, "%s/.log", d);
    struct store_commit *c = NULL;
    T_EQ_INT(store_commit_open(&c, d, 1 << 20, NULL, NULL), 0);
    return c;
}

static void test_group_commit(void)
{
    struct store_commit *c = open_in("group", NULL, 0);
    if(!c)
        return;
    T_EQ_INT(store_commit_checkpoint(c), 0);
    store_commit_set_sync(c, hook, NULL);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for(int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){c, t, 0, 0};
        pthread_create(&th[t], NULL, append_many, &w[t]);
    }
    int early = 0, errors = 0;
    for(int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        early += w[t].early;
        errors += w[t].errors;
    }
    uint64_t rounds = store_commit_rounds(c);
    T_EQ_INT(errors, 0);
    T_EQ_INT(early, 0); /* nobody returned before a round covered its record */
    T_EQ_INT(overlapped, 0);
    /* 640 commits; with 16 threads waiting 2 ms per round, most rounds serve many. */
    T_CHECK(rounds >= 1 && rounds <= THREADS * PER_THREAD / 4,
            "%llu rounds for %d commits (want far fewer)", (unsigned long long)rounds,
            THREADS * PER_THREAD);

    /* A failed sync reaches the commit of its round, and the next round succeeds. */
    fail_next = 1;
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "x", 1, 1, NULL), EIO);
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "y", 1, 1, NULL), 0);
    /* Not waiting: no round. */
    uint64_t before = store_commit_rounds(c);
    T_EQ_INT(store_commit_add(c, STORE_REC_REMOVED, "z", 1, 0, NULL), 0);
    T_EQ_INT(store_commit_rounds(c), before);
    store_commit_close(c);
}

/* ---- deferred: a callback once durable, the appending thread goes on ---- */

struct deferred {
    atomic_int calls, early, errors;
};

static struct deferred dfr;

static void on_durable(void *arg, int err)
{
    int id = (int)(intptr_t)arg;
    dfr.calls++;
    if(err)
        dfr.errors++;
    else if(!synced_ids[id])
        dfr.early++;
}

static void test_deferred(void)
{
    struct store_commit *c = open_in("deferred", NULL, 0);
    if(!c)
        return;
    T_EQ_INT(store_commit_checkpoint(c), 0);
    for(int i = 0; i < THREADS * PER_THREAD; i++)
        synced_ids[i] = 0;
    store_commit_set_sync(c, hook, NULL);
    /* One thread appends 200 records without waiting: all are called back once synced, by
     * far fewer rounds (the appender never waits for one). */
    uint64_t r0 = store_commit_rounds(c);
    for(int id = 0; id < 200; id++) {
        char rec[32];
        uint64_t ticket = 0;
        int n = snprintf(rec, sizeof rec, "%d", id);
        T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, rec, (size_t)n, 0, &ticket), 0);
        T_CHECK(ticket > 0, "a ticket");
        store_commit_when(c, ticket, on_durable, (void *)(intptr_t)id);
    }
    store_commit_drain(c); /* returns once every callback has run */
    T_EQ_INT(dfr.calls, 200);
    T_EQ_INT(dfr.early, 0);
    T_EQ_INT(dfr.errors, 0);
    uint64_t rounds = store_commit_rounds(c) - r0;
    T_CHECK(rounds >= 1 && rounds <= 50, "%llu rounds for 200 deferred commits",
            (unsigned long long)rounds);
    /* Already durable: called back at once, in this thread. */
    int before = dfr.calls;
    store_commit_when(c, 1, on_durable, (void *)(intptr_t)0);
    T_EQ_INT(dfr.calls, before + 1);
    /* Close runs the last round and every callback still pending. */
    store_commit_set_sync(c, NULL, NULL);
    uint64_t ticket = 0;
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "0", 1, 0, &ticket), 0);
    store_commit_when(c, ticket, on_durable, (void *)(intptr_t)0);
    store_commit_close(c);
    T_EQ_INT(dfr.calls, before + 2);
}

/* ---- replay ---- */

struct seen {
    int n;
    int kind[64];
    char text[64][64];
};

static void on_rec(void *arg, enum store_rec kind, const char *data, size_t len)
{
    struct seen *s = arg;
    if(s->n < 64) {
        s->kind[s->n] = (int)kind;
        snprintf(s->text[s->n], sizeof s->text[0], "%.*s", (int)len, data);
    }
    s->n++;
}

static struct store_commit *reopen(const char *d, size_t size, struct seen *s)
{
    struct store_commit *c = NULL;
    memset(s, 0, sizeof *s);
    T_EQ_INT(store_commit_open(&c, d, size, on_rec, s), 0);
    return c;
}

/* A new directory name under the test's, and the log opened there. */
static struct store_commit *fresh(char *d, size_t n, const char *name, size_t size, struct seen *s)
{
    snprintf(d, n, "%s/%s", dir, name);
    mkdir(d, 0700);
    return reopen(d, size, s);
}

static void test_replay(void)
{
    char d[128], log[160];
    snprintf(d, sizeof d, "%s/replay", dir);
    snprintf(log, sizeof log, "%s/.log", d);
    mkdir(d, 0700);
    struct seen s;
    struct store_commit *c = reopen(d, 0, &s);
    T_EQ_INT(s.n, 0); /* a new log */
    if(!c)
        return;
    struct stat st;
    T_CHECK(stat(log, &st) == 0 && st.st_size == 1 << 20, "the log is made whole (1 MiB)");
    store_commit_checkpoint(c);
    store_commit_add(c, STORE_REC_CREATED, "{\"a\":1}", 7, 1, NULL);
    store_commit_add(c, STORE_REC_REMOVED, "slug-b", 6, 0, NULL);
    store_commit_add(c, STORE_REC_CREATED, "third record", 12, 1, NULL);
    store_commit_close(c); /* (no checkpoint: like a crash) */

    c = reopen(d, 0, &s);
    T_EQ_INT(s.n, 3);
    T_EQ_INT(s.kind[0], STORE_REC_CREATED);
    T_EQ_STR(s.text[0], "{\"a\":1}");
    T_EQ_INT(s.kind[1], STORE_REC_REMOVED);
    T_EQ_STR(s.text[1], "slug-b");
    T_EQ_STR(s.text[2], "third record");
    store_commit_close(c);

    /* A torn second record: the first only. */
    int fd = open(log, O_RDWR);
    unsigned char b = 0;
    /* (after the half's own record and the first, 32 bytes each) */
    T_CHECK(fd >= 0 && pread(fd, &b, 1, 64 + 24 + 2) == 1, "read the log");
    b ^= 0x40;
    T_CHECK(fd >= 0 && pwrite(fd, &b, 1, 64 + 24 + 2) == 1, "damage the second record");
    if(fd >= 0)
        close(fd);
    c = reopen(d, 0, &s);
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.text[0], "{\"a\":1}");

    /* After a checkpoint the old records are gone, even where the new generation has not
     * overwritten them yet. */
    store_commit_checkpoint(c);
    store_commit_close(c);
    c = reopen(d, 0, &s);
    T_EQ_INT(s.n, 0);
    store_commit_checkpoint(c);
    store_commit_add(c, STORE_REC_CREATED, "1", 1, 1, NULL);
    store_commit_add(c, STORE_REC_CREATED, "2", 1, 1, NULL);
    store_commit_add(c, STORE_REC_CREATED, "3", 1, 1, NULL);
    store_commit_checkpoint(c);
    store_commit_add(c, STORE_REC_CREATED, "new", 3, 1, NULL);
    store_commit_close(c);
    c = reopen(d, 0, &s);
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.text[0], "new");
    store_commit_close(c);
}

/* A full log checkpoints by itself; a record larger than the log is made durable by a sync
 * of everything instead. */
static void test_full_log(void)
{
    char d[128];
    struct seen s;
    struct store_commit *c = fresh(d, sizeof d, "full", 64 << 10, &s);
    if(!c)
        return;
    store_commit_checkpoint(c);
    uint64_t cp = store_commit_checkpoints(c);
    static char big[1000];
    memset(big, 'r', sizeof big);
    for(int i = 0; i < 200; i++) {
        big[0] = (char)('a' + i % 26);
        T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, big, sizeof big, i % 10 == 0, NULL), 0);
    }
    T_CHECK(store_commit_checkpoints(c) - cp >= 2, "checkpoints when full: %llu",
            (unsigned long long)(store_commit_checkpoints(c) - cp));
    static char huge[100 << 10];
    memset(huge, 'h', sizeof huge);
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, huge, sizeof huge, 1, NULL), 0);
    store_commit_close(c);
    c = reopen(d, 64 << 10, &s);
    /* 200 records of 1,024 bytes in a 64 KiB log: the last ones since the last checkpoint. */
    T_CHECK(s.n > 0 && s.n < 64, "records after the last checkpoint: %d", s.n);
    T_CHECK(s.n > 0 && s.n <= 64 && s.text[s.n - 1][0] == (char)('a' + 199 % 26),
            "the last record is last");
    store_commit_close(c);
}

/* ---- the checkpoint runs beside the appenders ---- */

/* A hook that blocks until the test lets it go (or 3 s pass: then it says so). */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered, gate_timed_out;

static void gate_hook(void *arg)
{
    (void)arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3;
    pthread_mutex_lock(&gate_lock);
    gate_entered++;
    pthread_cond_broadcast(&gate_cond);
    while(!gate_open && !gate_timed_out)
        if(pthread_cond_timedwait(&gate_cond, &gate_lock, &until) == ETIMEDOUT)
            gate_timed_out = 1;
    pthread_mutex_unlock(&gate_lock);
}

/* Appends records named prefix0, prefix1, ... of about 1 KiB, waiting for each, until n. */
static int fill(struct store_commit *c, const char *prefix, int from, int n)
{
    static char rec[1000];
    for(int i = from; i < n; i++) {
        memset(rec, '.', sizeof rec);
        int k = snprintf(rec, sizeof rec, "%s%d", prefix, i);
        rec[k] = ' ';
        if(store_commit_add(c, STORE_REC_CREATED, rec, sizeof rec, 1, NULL))
            return -1;
    }
    return 0;
}

/* A full half is retired by the checkpointer thread: appends go on in the other half, durable
 * one by one, while the checkpoint (its hook, its syncfs) has not ended. */
static void test_checkpoint_beside(void)
{
    char d[128];
    struct seen s;
    struct store_commit *c = fresh(d, sizeof d, "beside", 64 << 10, &s);
    if(!c)
        return;
    T_EQ_INT(store_commit_begin(c), 0);
    store_commit_set_hook(c, gate_hook, NULL);
    uint64_t cp = store_commit_checkpoints(c);
    /* halves of 32 KiB: the 40 records (1,024 bytes each) cross into the second half */
    T_EQ_INT(fill(c, "a", 0, 40), 0);
    pthread_mutex_lock(&gate_lock);
    for(int i = 0; i < 300 && !gate_entered; i++) { /* (the checkpointer starts on its own) */
        pthread_mutex_unlock(&gate_lock);
        usleep(10000);
        pthread_mutex_lock(&gate_lock);
    }
    int entered = gate_entered, timed_out = gate_timed_out;
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    T_EQ_INT(entered, 1);
    T_EQ_INT(timed_out, 0); /* nobody waited for the hook to append */
    for(int i = 0; i < 300 && store_commit_checkpoints(c) == cp; i++)
        usleep(10000);
    T_EQ_INT(store_commit_checkpoints(c), cp + 1);
    store_commit_close(c); /* (like a crash: the second half's records stay) */
    c = reopen(d, 64 << 10, &s);
    /* the first half was retired: only the records of the second */
    T_CHECK(s.n > 0 && s.n < 40, "records left after the checkpoint: %d", s.n);
    T_CHECK(s.n > 0 && strncmp(s.text[s.n - 1], "a39 ", 4) == 0, "the last record is last: %s",
            s.n > 0 ? s.text[s.n - 1] : "");
    store_commit_close(c);
    gate_open = gate_entered = gate_timed_out = 0;
}

/* A crash while a checkpoint runs leaves both halves: a start reads them back, the older one
 * first, whichever of the two it is. */
static void test_crash_mid_checkpoint(void)
{
    char d[128];
    snprintf(d, sizeof d, "%s/midcp", dir);
    mkdir(d, 0700);
    struct seen s;
    pid_t pid = fork();
    if(pid == 0) {
        struct store_commit *c = NULL;
        if(store_commit_open(&c, d, 64 << 10, NULL, NULL) || store_commit_begin(c))
            _exit(2);
        /* half 0, then half 1 (half 0 retired), then half 0 again, whose retiring of half 1
         * never ends: the crash comes first */
        if(fill(c, "a", 0, 40))
            _exit(3);
        for(int i = 0; i < 300 && store_commit_checkpoints(c) == 0; i++)
            usleep(10000);
        store_commit_set_hook(c, gate_hook, NULL);
        if(fill(c, "b", 0, 30) || fill(c, "c", 0, 5))
            _exit(4);
        pthread_mutex_lock(&gate_lock);
        int ok = gate_entered == 1 && !gate_timed_out;
        pthread_mutex_unlock(&gate_lock);
        _exit(ok ? 0 : 5);
    }
    int st = -1;
    T_CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "the child ran");
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child appended: status %d", st);
    struct store_commit *c = reopen(d, 64 << 10, &s);
    if(!c)
        return;
    /* half 1 (the older) holds the last a records and the first b ones, half 0 the other b
     * ones and the c ones: all come back in the order they were appended */
    int ok = s.n > 0 && s.n <= 64, a = -1, bs = 0, cs = 0;
    for(int i = 0; ok && i < s.n; i++) {
        int k = atoi(s.text[i] + 1);
        if(s.text[i][0] == 'a')
            ok = bs == 0 && (a < 0 || k == a + 1) && (a = k) >= 0;
        else if(s.text[i][0] == 'b')
            ok = cs == 0 && a == 39 && k == bs++;
        else
            ok = s.text[i][0] == 'c' && bs == 30 && k == cs++;
    }
    T_CHECK(ok && cs == 5, "a…39, b0…b29, c0…c4 in order (%d records, %d b, %d c)", s.n, bs, cs);
    store_commit_close(c);
}

/* A log written by the version with one generation in the whole file (no record of a half;
 * records past the middle): a start still reads every record back. */
static void test_old_format(void)
{
    char d[128], log[160];
    snprintf(d, sizeof d, "%s/oldfmt", dir);
    snprintf(log, sizeof log, "%s/.log", d);
    mkdir(d, 0700);
    enum { SIZE = 64 << 10, N = 50, LEN = 1000 };
    static unsigned char img[SIZE];
    memset(img, 0, sizeof img);
    size_t off = 0;
    for(int i = 0; i < N; i++, off += 24 + LEN) { /* (1,000 is a multiple of 8) */
        unsigned char *h = img + off;
        memset(h + 24, '.', LEN);
        h[24 + snprintf((char *)h + 24, LEN, "old%d", i)] = ' ';
        uint32_t head[4] = {0x314C5144u, 0x5eed, LEN, STORE_REC_CREATED};
        for(int w = 0; w < 4; w++)
            for(int b = 0; b < 4; b++)
                h[4 * w + b] = (unsigned char)(head[w] >> (8 * b));
        uint64_t sum = 0xcbf29ce484222325ull; /* FNV-1a over gen, len, kind and the payload */
        for(size_t b = 4; b < 16; b++)
            sum = (sum ^ h[b]) * 0x100000001b3ull;
        for(size_t b = 0; b < LEN; b++)
            sum = (sum ^ h[24 + b]) * 0x100000001b3ull;
        for(int b = 0; b < 8; b++)
            h[16 + b] = (unsigned char)(sum >> (8 * b));
    }
    T_CHECK(off > SIZE / 2, "the old records run past the middle");
    t_write_n(log, img, sizeof img);
    struct seen s;
    struct store_commit *c = reopen(d, SIZE, &s);
    T_EQ_INT(s.n, N);
    T_CHECK(s.n == N && strncmp(s.text[0], "old0 ", 5) == 0 &&
                strncmp(s.text[N - 1], "old49 ", 6) == 0,
            "first and last in order");
    if(!c)
        return;
    /* then the start's checkpoint retires them, and the new format takes over */
    T_EQ_INT(store_commit_begin(c), 0);
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "new", 3, 1, NULL), 0);
    store_commit_close(c);
    c = reopen(d, SIZE, &s);
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.text[0], "new");
    store_commit_close(c);
}

/* ---- the rounds' descriptor ---- */

static char own_log[256];
static int own_fd = -1, own_ok;

/* Moves its descriptor's file position (which an open file description holds) so that the
 * test finds which of the process's descriptors of the log is the round's. */
static int own_hook(int fd, void *arg)
{
    (void)arg;
    struct stat a, b;
    own_ok = fstat(fd, &a) == 0 && stat(own_log, &b) == 0 && a.st_ino == b.st_ino &&
             (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY && lseek(fd, 777, SEEK_SET) == 777;
    own_fd = fd;
    return fdatasync(fd) ? errno : 0;
}

/* A failed writeback of the log is reported once to each open file description of it: a
 * round syncing on the appenders' description could see success while a checkpoint's sync on
 * the same description (they run side by side) took the failure. So the rounds sync on a
 * description of their own, opened read-only, which nothing else syncs. */
static void test_round_descriptor(void)
{
    struct store_commit *c = open_in("own", own_log, sizeof own_log);
    if(!c)
        return;
    T_EQ_INT(store_commit_begin(c), 0);
    store_commit_set_sync(c, own_hook, NULL);
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "x", 1, 1, NULL), 0);
    T_CHECK(own_ok, "the round's descriptor is the log's, read-only");
    /* every descriptor of the log this process holds, and where each stands */
    int described = 0, at777 = 0, round_at777 = 0;
    for(int fd = 0; fd < 1024; fd++) {
        char link[64], target[256], info[64], line[128];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if(n < 0)
            continue;
        target[n] = '\0';
        struct stat a, b;
        if(fstat(fd, &a) || stat(own_log, &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
            continue;
        described++;
        snprintf(info, sizeof info, "/proc/self/fdinfo/%d", fd);
        FILE *f = fopen(info, "r");
        long long pos = -1;
        while(f && fgets(line, sizeof line, f))
            if(sscanf(line, "pos: %lld", &pos) == 1)
                break;
        if(f)
            fclose(f);
        if(pos == 777) {
            at777++;
            round_at777 += fd == own_fd;
        }
    }
    T_CHECK(described >= 2, "%d descriptions of the log (the appenders' and the rounds')",
            described);
    T_EQ_INT(at777, 1);
    T_EQ_INT(round_at777, 1);
    store_commit_set_sync(c, NULL, NULL);
    store_commit_close(c);
}

/* ---- gathering: a round waits for the creations being checked ---- */

static atomic_int slow_rounds, gathered_ok;

static int slow_sync(int fd, void *arg)
{
    (void)fd;
    slow_rounds++;
    struct timespec ts = {0, (long)(intptr_t)arg * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
}

static void on_gathered(void *arg, int err)
{
    (void)arg;
    if(!err)
        gathered_ok++;
}

struct late {
    struct store_commit *c;
    int after_ms;
};

/* A creation that was announced and whose check ends after_ms later: it appends its record,
 * arrives, and leaves its callback. */
static void *arrive_late(void *arg)
{
    struct late *l = arg;
    struct timespec ts = {0, l->after_ms * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t ticket = 0;
    T_EQ_INT(store_commit_add(l->c, STORE_REC_CREATED, "late", 4, 0, &ticket), 0);
    store_commit_expect(l->c, 0);
    store_commit_when(l->c, ticket, on_gathered, NULL);
    return NULL;
}

/* One creation is durable-pending (A), another is being checked (B, announced) and takes its
 * ticket 20 ms later; each round's sync takes 500 ms. Returns the rounds the two took. */
static int rounds_for_two(struct store_commit *c)
{
    int r0 = slow_rounds;
    store_commit_expect(c, 1);
    struct late b = {c, 20};
    pthread_t t;
    T_EQ_INT(pthread_create(&t, NULL, arrive_late, &b), 0);
    uint64_t ticket = 0;
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "A", 1, 0, &ticket), 0);
    store_commit_when(c, ticket, on_gathered, NULL);
    pthread_join(t, NULL);
    store_commit_drain(c);
    return slow_rounds - r0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_gather(void)
{
    struct store_commit *c = open_in("gather", NULL, 0);
    if(!c)
        return;
    T_EQ_INT(store_commit_begin(c), 0);
    store_commit_set_sync(c, slow_sync, (void *)(intptr_t)500);
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "x", 1, 1, NULL), 0); /* (500 ms a sync) */
    uint64_t coming = 9, gathered = 9;
    store_commit_gather_stats(c, &coming, &gathered);
    T_EQ_INT((int)coming, 0);
    T_EQ_INT((int)gathered, 0);
    /* Off (the default): A's round starts at once, and B, arriving during it, needs its own. */
    T_EQ_INT(rounds_for_two(c), 2);
    T_EQ_INT(gathered_ok, 2);
    /* On, up to 10 s: A's round waits for B (at most a sync's 500 ms): one round for both. */
    store_commit_set_gather(c, 10 * 1000 * 1000);
    T_EQ_INT(rounds_for_two(c), 1);
    T_EQ_INT(gathered_ok, 4);
    store_commit_gather_stats(c, &coming, &gathered);
    T_EQ_INT((int)coming, 0);
    T_EQ_INT((int)gathered, 1);
    /* Nothing on its way: no wait (a lone creation's latency is the sync's). */
    uint64_t ticket = 0;
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "y", 1, 0, &ticket), 0);
    store_commit_when(c, ticket, on_gathered, NULL);
    store_commit_drain(c);
    store_commit_gather_stats(c, &coming, &gathered);
    T_EQ_INT((int)gathered, 1);
    /* One announced that never comes (a check stuck in DuckDB): the round waits no longer than
     * a sync takes lately (500 ms), not the 10 s allowed. */
    store_commit_expect(c, 1);
    store_commit_gather_stats(c, &coming, &gathered);
    T_EQ_INT((int)coming, 1);
    int r0 = slow_rounds;
    double t0 = now_s();
    T_EQ_INT(store_commit_add(c, STORE_REC_CREATED, "z", 1, 0, &ticket), 0);
    store_commit_when(c, ticket, on_gathered, NULL);
    store_commit_drain(c);
    double waited = now_s() - t0;
    T_CHECK(waited < 5.0, "the round waited %.3f s for a creation that never came", waited);
    T_EQ_INT(slow_rounds - r0, 1);
    T_EQ_INT(gathered_ok, 6);
    store_commit_expect(c, 0);
    /* An arrival beyond the announced ones is ignored: the counts never go below zero. */
    store_commit_expect(c, 0);
    store_commit_gather_stats(c, &coming, &gathered);
    T_EQ_INT((int)coming, 0);
    store_commit_set_sync(c, NULL, NULL);
    store_commit_close(c);
}

int main(void)
{
    if(t_tmpdir(dir, sizeof dir, "commit"))
        T_DONE();
    test_group_commit();
    test_deferred();
    test_replay();
    test_full_log();
    test_checkpoint_beside();
    test_crash_mid_checkpoint();
    test_old_format();
    test_round_descriptor();
    test_gather();
    t_rm_rf(dir);
    T_DONE();
}
