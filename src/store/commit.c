/* Durable creation records with group commit (see commit.h). Appenders take tickets; the
 * committer thread runs rounds, each syncing for every ticket taken before it began. The log
 * has two halves: records go to one while the checkpointer thread retires the other. */
#include "store/commit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "store/bytes.h"

#define LOG_NAME ".log"
#define LOG_DEFAULT (1u << 20)
#define LOG_MIN (64u << 10)
#define REC_MAGIC 0x314C5144u /* "DQL1" */
#define REC_HEAD 24           /* magic gen len kind (u32 each), checksum (u64) */
/* The first record of a half written by this version: its sequence number (u64), one more
 * than the half before it, so that a start replays the older half first. A half that begins
 * with any other record was written by a version with one generation in the whole file: it
 * is the older one (sequence 0), and its records may run past the middle. */
#define REC_HALF 3

struct store_commit {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fd, dirfd;
    /* The committer's own descriptor of the log: a failed writeback of the log is reported
     * once to each open file description, so a checkpoint's sync on fd (which runs beside the
     * rounds) never takes the report that a round's tickets need. */
    int sfd;
    uint64_t size, half; /* the log's size; each half's */
    int cur;             /* the half records go to */
    uint64_t off;        /* where the next record goes in it */
    uint32_t gen;        /* the generation records are written under */
    uint32_t gens[2];    /* each half's (a new one never equals the other's) */
    uint64_t seq;        /* the current half's sequence number */
    /* The other half holds records not yet made needless by a checkpoint: the checkpointer
     * thread is on it (ckpt_run), or its last try failed (ckpt_err), or it waits for it. */
    int retiring, ckpt_run, ckpt_err;
    pthread_t ckpt_thread;
    pthread_cond_t ckpt_work;
    int ckpt_started;
    uint64_t taken;  /* tickets handed out */
    uint64_t synced; /* every ticket <= synced is settled */
    uint64_t rounds, checkpoints;
    int busy; /* a round is running */
    /* Creations on their way to a ticket (store_commit_expect): announced, and arrived (took
     * their ticket) or left without one. A round about to start waits, up to gather_us, for
     * those announced before it: their records then share its sync. Atomics: an HTTP thread
     * announces, and must not wait for the lock an appender holds across its write. */
    _Atomic uint64_t announced, arrived;
    _Atomic uint64_t gather_to; /* a round waits for arrived to reach it (0: none waits) */
    int64_t gather_us;
    int64_t sync_avg_us; /* the rounds' syncs lately (a moving average) */
    uint64_t gathered;   /* rounds that waited so */
    /* The committer thread runs the rounds; work wakes it. */
    pthread_t thread;
    pthread_cond_t work;
    int started, stop;
    uint64_t replayed;       /* records read back at open */
    struct pending *pending; /* callbacks waiting for their round */
    int calling;             /* callbacks of a round are running (outside the lock) */
    /* The tickets of the last failed rounds (a contiguous range) and their error. */
    uint64_t fail_lo, fail_hi;
    int fail_err;
    store_commit_sync_fn sync;
    void *sync_arg;
    store_commit_hook_fn hook;
    void *hook_arg;
};

/* A callback to run once ticket is durable (store_commit_when). */
struct pending {
    uint64_t ticket;
    store_commit_done_fn fn;
    void *arg;
    struct pending *next;
};

/* FNV-1a over the header's gen, len and kind and the payload: catches torn records. */
static uint64_t rec_sum(const unsigned char *head, const unsigned char *data, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for(size_t i = 4; i < 16; i++)
        h = (h ^ head[i]) * 0x100000001b3ull;
    for(size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001b3ull;
    return h;
}

static size_t rec_size(size_t len)
{
    return REC_HEAD + ((len + 7) & ~(size_t)7);
}

static void *committer(void *arg);

static int default_sync(int fd, void *arg)
{
    (void)arg;
    int r;
    while((r = fdatasync(fd)) && errno == EINTR)
        ;
    return r ? errno : 0;
}

/* Makes the log exist with every block written (zeros), durably. */
static int log_make(struct store_commit *c)
{
    unsigned char *z = calloc(1, 1u << 20);
    if(!z)
        return ENOMEM;
    int e = ftruncate(c->fd, 0) ? errno : 0;
    for(uint64_t off = 0; !e && off < c->size; off += 1u << 20)
        e = store_pwrite_all(c->fd, z, c->size - off < (1u << 20) ? c->size - off : 1u << 20, off);
    free(z);
    if(!e && fsync(c->fd))
        e = errno;
    if(!e && fsync(c->dirfd))
        e = errno;
    return e;
}

/* Reads the records of one generation from off on, up to the first torn or stale one (or the
 * end): returns how many creation and removal records there are, passing each to fn (if not
 * NULL). *gen gets the generation of the first record (0: none valid), *seq its sequence
 * number (0 unless it is a REC_HALF record). */
static uint64_t scan(const unsigned char *buf, uint64_t n, uint64_t off, uint32_t *gen,
                     uint64_t *seq, store_commit_replay_fn fn, void *arg)
{
    uint64_t count = 0, start = off;
    *gen = 0;
    *seq = 0;
    while(off + REC_HEAD <= n) {
        const unsigned char *h = buf + off;
        uint32_t len = store_get32(h + 8), kind = store_get32(h + 12);
        uint64_t sum = 0;
        for(int i = 7; i >= 0; i--)
            sum = sum << 8 | h[16 + i];
        if(store_get32(h) != REC_MAGIC || len > n - off - REC_HEAD ||
           rec_sum(h, h + REC_HEAD, len) != sum || (off > start && store_get32(h + 4) != *gen))
            break;
        if(off == start) {
            *gen = store_get32(h + 4);
            for(int i = 7; kind == REC_HALF && len == 8 && i >= 0; i--)
                *seq = *seq << 8 | h[REC_HEAD + i];
        }
        if(kind == STORE_REC_CREATED || kind == STORE_REC_REMOVED) {
            count++;
            if(fn)
                fn(arg, (enum store_rec)kind, (const char *)h + REC_HEAD, len);
        }
        off += rec_size(len);
    }
    return count;
}

/* Calls fn for each record of both halves, the older half first. (The first half's records
 * may run past the middle, even with one starting there: a log written by a version with one
 * generation. The halves' generations always differ otherwise.) */
static int log_replay(struct store_commit *c, store_commit_replay_fn fn, void *arg)
{
    unsigned char *buf = malloc(c->size);
    if(!buf)
        return ENOMEM;
    uint64_t n = 0;
    while(n < c->size) {
        ssize_t r = pread(c->fd, buf + n, c->size - n, (off_t)n);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            break;
        n += (uint64_t)r;
    }
    uint64_t seq[2], from[2] = {0, c->half};
    for(int h = 0; h < 2; h++)
        scan(buf, n, from[h], &c->gens[h], &seq[h], NULL, NULL);
    if(c->gens[1] == c->gens[0]) /* (one generation running through the middle: read once) */
        c->gens[1] = 0;
    int older = c->gens[0] && c->gens[1] && seq[1] < seq[0];
    for(int i = 0; i < 2; i++) {
        int h = older ^ i;
        uint32_t g;
        uint64_t s;
        if(c->gens[h])
            c->replayed += scan(buf, n, from[h], &g, &s, fn, arg);
    }
    c->seq = seq[0] > seq[1] ? seq[0] : seq[1];
    free(buf);
    return 0;
}

/* Under the lock: writing goes on in half h, from its start, under a new generation (never
 * the other half's, nor the last one of h, whose records may still follow the new ones). Its
 * first append writes the REC_HALF record. */
static void half_start(struct store_commit *c, int h)
{
    uint32_t gen = 0;
    while(!gen || gen == c->gens[0] || gen == c->gens[1])
        if(getrandom(&gen, sizeof gen, 0) != (ssize_t)sizeof gen)
            gen = (c->gen + (uint32_t)c->seq) * 2654435761u + 1; /* (cannot fail for 4 bytes) */
    c->gens[h] = c->gen = gen;
    c->cur = h;
    c->off = 0;
    c->seq++;
}

/* Makes the records of halves from..to needless: the hook writes what only they hold,
 * syncfs() makes every file durable, then each half's first record is invalidated, and one
 * fdatasync makes that durable. Called without the lock by the checkpointer (one half), with
 * it by store_commit_checkpoint (both). */
static int retire(struct store_commit *c, int from, int to, store_commit_hook_fn hook,
                  void *hook_arg)
{
    static const unsigned char zero[REC_HEAD];
    if(hook)
        hook(hook_arg);
    int e = syncfs(c->dirfd) ? errno : 0;
    for(int h = from; !e && h <= to; h++)
        e = store_pwrite_all(c->fd, zero, sizeof zero, (uint64_t)h * c->half);
    if(!e)
        e = default_sync(c->fd, NULL);
    return e;
}

/* Under the lock: both halves retired at once (waiting first for the checkpointer), and
 * writing starts again in the first. */
static int checkpoint_locked(struct store_commit *c)
{
    while(c->ckpt_run)
        pthread_cond_wait(&c->cond, &c->lock);
    int64_t t0 = dapi_clock_mono_us();
    int e = retire(c, 0, 1, c->hook, c->hook_arg);
    dapi_metrics_checkpoint(!e, dapi_clock_mono_us() - t0);
    if(e)
        return e;
    c->retiring = c->ckpt_err = 0;
    c->gens[1] = 0;
    half_start(c, 0);
    c->checkpoints++;
    return 0;
}

/* The checkpointer: retires the half writing has just left while the other one fills. */
static void *checkpointer(void *arg)
{
    struct store_commit *c = arg;
    pthread_mutex_lock(&c->lock);
    for(;;) {
        while(!(c->retiring && !c->ckpt_err) && !c->stop)
            pthread_cond_wait(&c->ckpt_work, &c->lock);
        if(c->stop)
            break; /* (a half left unretired is read back at the next start) */
        int h = c->cur ^ 1;
        store_commit_hook_fn hook = c->hook;
        void *hook_arg = c->hook_arg;
        c->ckpt_run = 1;
        pthread_mutex_unlock(&c->lock);
        int64_t t0 = dapi_clock_mono_us();
        int e = retire(c, h, h, hook, hook_arg);
        dapi_metrics_checkpoint(!e, dapi_clock_mono_us() - t0);
        if(e)
            dapi_warn("store: a checkpoint of the creation log failed (the next one retries): "
                      "%s",
                      strerror(e));
        pthread_mutex_lock(&c->lock);
        c->ckpt_run = 0;
        if(e) {
            c->ckpt_err = e;
        } else {
            c->retiring = 0;
            c->gens[h] = 0;
            c->checkpoints++;
        }
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Under the lock: the current half is full. Writing moves to the other half once the
 * checkpointer has retired it (at once, unless the halves fill faster than a checkpoint
 * runs), and the checkpointer retires this one meanwhile. If its last try failed, a
 * checkpoint of both runs here instead, and its error is the caller's. */
static int half_switch(struct store_commit *c)
{
    while(c->retiring && !c->ckpt_err)
        pthread_cond_wait(&c->cond, &c->lock);
    if(c->retiring)
        return checkpoint_locked(c);
    half_start(c, c->cur ^ 1);
    c->retiring = 1;
    pthread_cond_signal(&c->ckpt_work);
    return 0;
}

int store_commit_open(struct store_commit **out, const char *dir, size_t size,
                      store_commit_replay_fn fn, void *arg)
{
    *out = NULL;
    struct store_commit *c = calloc(1, sizeof *c);
    if(!c)
        return ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC); /* (the gather's deadline) */
    pthread_cond_init(&c->work, &mono);
    pthread_condattr_destroy(&mono);
    pthread_cond_init(&c->ckpt_work, NULL);
    c->sync = default_sync;
    c->size = size ? size : LOG_DEFAULT;
    if(c->size < LOG_MIN)
        c->size = LOG_MIN;
    c->size &= ~(uint64_t)15; /* (two halves of whole records) */
    c->half = c->size / 2;
    c->fd = c->sfd = -1;
    int e = 0;
    struct stat st;
    if((c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
       (c->fd = openat(c->dirfd, LOG_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
       fstat(c->fd, &st))
        e = errno;
    else if((uint64_t)st.st_size == c->size)
        e = log_replay(c, fn, arg);
    else
        e = log_make(c); /* new, or made with another size: (re)made whole */
    if(!e && (c->sfd = openat(c->dirfd, LOG_NAME, O_RDONLY | O_CLOEXEC)) < 0)
        e = errno;
    if(!e && (e = pthread_create(&c->thread, NULL, committer, c)) == 0)
        c->started = 1;
    if(!e && (e = pthread_create(&c->ckpt_thread, NULL, checkpointer, c)) == 0)
        c->ckpt_started = 1;
    if(e) {
        store_commit_close(c);
        return e;
    }
    *out = c;
    return 0;
}

void store_commit_close(struct store_commit *c)
{
    if(!c)
        return;
    /* the last rounds first: every pending callback runs; a checkpoint under way ends */
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->work);
    pthread_cond_signal(&c->ckpt_work);
    pthread_mutex_unlock(&c->lock);
    if(c->started)
        pthread_join(c->thread, NULL);
    if(c->ckpt_started)
        pthread_join(c->ckpt_thread, NULL);
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->ckpt_work);
    if(c->fd >= 0)
        close(c->fd);
    if(c->sfd >= 0)
        close(c->sfd);
    if(c->dirfd >= 0)
        close(c->dirfd);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int store_commit_begin(struct store_commit *c)
{
    if(c->replayed)
        return store_commit_checkpoint(c);
    /* Nothing to make durable (a clean stop checkpointed, or a new log): a new generation
     * without the syncfs, which can take long on a busy file system. */
    pthread_mutex_lock(&c->lock);
    half_start(c, 0);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int store_commit_checkpoint(struct store_commit *c)
{
    pthread_mutex_lock(&c->lock);
    int e = checkpoint_locked(c);
    pthread_mutex_unlock(&c->lock);
    return e;
}

/* The error of ticket me once settled: that of the failed round that covered it, or 0. */
static int ticket_error(const struct store_commit *c, uint64_t me)
{
    return c->fail_err && me >= c->fail_lo && me <= c->fail_hi ? c->fail_err : 0;
}

/* Waits for a round that began after ticket me was taken; under the lock. */
static int wait_round(struct store_commit *c, uint64_t me)
{
    pthread_cond_signal(&c->work);
    while(c->synced < me)
        pthread_cond_wait(&c->cond, &c->lock);
    return ticket_error(c, me);
}

/* Before a round: while creations announced before now have not all arrived, waits for
 * them — at most as long as a sync takes lately, and gather_us. A creation that misses a
 * round waits for it and then for its own: two syncs. Waiting up to one sync for those on
 * their way costs the ones already here at most that sync, and fewer rounds serve as many
 * creations (a round costs the machine its system calls, device requests and wake-ups: on a
 * busy server, CPU time the queries need). On a disk with a fast flush the wait is as short;
 * on tmpfs it is none. Creations announced meanwhile are the next round's. Under the lock. */
static void gather(struct store_commit *c)
{
    int64_t wait_us = c->sync_avg_us < c->gather_us ? c->sync_avg_us : c->gather_us;
    uint64_t target = atomic_load(&c->announced);
    if(wait_us <= 0 || atomic_load(&c->arrived) >= target || c->stop)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    int64_t ns = dl.tv_nsec + wait_us * 1000;
    dl.tv_sec += ns / 1000000000;
    dl.tv_nsec = ns % 1000000000;
    c->gathered++;
    /* set before arrived is read again: an arrival either sees it (and signals, under the
     * lock, so not before this thread waits) or came before that read */
    atomic_store(&c->gather_to, target);
    while(atomic_load(&c->arrived) < target && !c->stop)
        if(pthread_cond_timedwait(&c->work, &c->lock, &dl) == ETIMEDOUT)
            break;
    atomic_store(&c->gather_to, 0);
}

/* The committer: one round (one sync) for every ticket taken before it began, then the
 * waiters wake and the callbacks of the settled tickets run (outside the lock). */
static void *committer(void *arg)
{
    struct store_commit *c = arg;
    pthread_mutex_lock(&c->lock);
    for(;;) {
        while(c->synced == c->taken && !c->stop)
            pthread_cond_wait(&c->work, &c->lock);
        if(c->synced == c->taken && c->stop)
            break;
        gather(c);
        uint64_t upto = c->taken, from = c->synced;
        c->busy = 1;
        store_commit_sync_fn fn = c->sync;
        void *sarg = c->sync_arg;
        pthread_mutex_unlock(&c->lock);
        int64_t t0 = dapi_clock_mono_us();
        int e = fn(c->sfd, sarg);
        int64_t took = dapi_clock_mono_us() - t0;
        dapi_metrics_log_sync(took);
        pthread_mutex_lock(&c->lock);
        /* (a moving average over about the last 8 rounds; the first sets it) */
        c->sync_avg_us = c->rounds ? c->sync_avg_us + (took - c->sync_avg_us) / 8 : took;
        c->rounds++;
        if(e) {
            if(c->fail_hi != from || !c->fail_err)
                c->fail_lo = from + 1;
            c->fail_hi = upto;
            c->fail_err = e;
        }
        c->synced = upto;
        c->busy = 0;
        pthread_cond_broadcast(&c->cond);
        struct pending *due = NULL, **pp = &c->pending;
        while(*pp) {
            struct pending *p = *pp;
            if(p->ticket <= upto) {
                *pp = p->next;
                p->next = due;
                due = p;
            } else {
                pp = &p->next;
            }
        }
        if(due) {
            c->calling = 1;
            pthread_mutex_unlock(&c->lock);
            for(struct pending *p = due, *next; p; p = next) {
                next = p->next;
                p->fn(p->arg, e);
                free(p);
            }
            pthread_mutex_lock(&c->lock);
            c->calling = 0;
            pthread_cond_broadcast(&c->cond);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

void store_commit_when(struct store_commit *c, uint64_t ticket, store_commit_done_fn fn, void *arg)
{
    struct pending *p = malloc(sizeof *p);
    pthread_mutex_lock(&c->lock);
    if(c->synced >= ticket || !p) {
        /* settled already (or no memory to wait: wait here) */
        int e = c->synced >= ticket ? ticket_error(c, ticket) : wait_round(c, ticket);
        pthread_mutex_unlock(&c->lock);
        free(p);
        fn(arg, e);
        return;
    }
    *p = (struct pending){ticket, fn, arg, c->pending};
    c->pending = p;
    pthread_cond_signal(&c->work);
    pthread_mutex_unlock(&c->lock);
}

/* Fills in a record's header (its payload of len bytes follows it). */
static void seal(unsigned char *rec, uint32_t gen, uint32_t kind, size_t len)
{
    store_put32(rec, REC_MAGIC);
    store_put32(rec + 4, gen);
    store_put32(rec + 8, (uint32_t)len);
    store_put32(rec + 12, kind);
    uint64_t sum = rec_sum(rec, rec + REC_HEAD, len);
    for(int i = 0; i < 8; i++)
        rec[16 + i] = (unsigned char)(sum >> (8 * i));
}

int store_commit_add(struct store_commit *c, enum store_rec kind, const char *data, size_t len,
                     int wait, uint64_t *ticket)
{
    size_t need = rec_size(len), head = rec_size(8); /* (the REC_HALF record before it) */
    if(ticket)
        *ticket = 0;                              /* (0: nothing to wait for) */
    if(len > UINT32_MAX || head + need > c->half) /* too large for the log: sync it all */
        return (wait || ticket) && syncfs(c->dirfd) ? errno : 0;
    unsigned char *buf = calloc(1, head + need), *rec = buf + head;
    if(!buf)
        return ENOMEM;
    memcpy(rec + REC_HEAD, data, len);
    pthread_mutex_lock(&c->lock);
    int e = 0;
    if(c->off + (c->off ? 0 : head) + need > c->half)
        e = half_switch(c);
    /* the first record of a half comes after the half's own (written together) */
    int first = c->off == 0;
    if(!e) {
        if(first) {
            for(int i = 0; i < 8; i++)
                buf[REC_HEAD + i] = (unsigned char)(c->seq >> (8 * i));
            seal(buf, c->gen, REC_HALF, 8);
        }
        seal(rec, c->gen, (uint32_t)kind, len);
        e = store_pwrite_all(c->fd, first ? buf : rec, (first ? head : 0) + need,
                             (uint64_t)c->cur * c->half + c->off);
    }
    if(!e) {
        c->off += (first ? head : 0) + need;
        if(wait || ticket) {
            uint64_t me = ++c->taken;
            if(ticket)
                *ticket = me;
            if(wait)
                e = wait_round(c, me);
        }
    }
    pthread_mutex_unlock(&c->lock);
    free(buf);
    return e;
}

void store_commit_expect(struct store_commit *c, int coming)
{
    if(coming) {
        atomic_fetch_add(&c->announced, 1);
        return;
    }
    uint64_t was = atomic_load(&c->arrived);
    do { /* (never past the announced ones) */
        if(was >= atomic_load(&c->announced))
            return;
    } while(!atomic_compare_exchange_weak(&c->arrived, &was, was + 1));
    if(was + 1 == atomic_load(&c->gather_to)) { /* the gathering round need wait no longer */
        pthread_mutex_lock(&c->lock);
        pthread_cond_signal(&c->work);
        pthread_mutex_unlock(&c->lock);
    }
}

void store_commit_set_gather(struct store_commit *c, int64_t max_us)
{
    pthread_mutex_lock(&c->lock);
    c->gather_us = max_us;
    pthread_mutex_unlock(&c->lock);
}

void store_commit_gather_stats(struct store_commit *c, uint64_t *coming, uint64_t *gathered)
{
    uint64_t arrived = atomic_load(&c->arrived); /* (first: never above announced) */
    *coming = atomic_load(&c->announced) - arrived;
    pthread_mutex_lock(&c->lock);
    *gathered = c->gathered;
    pthread_mutex_unlock(&c->lock);
}

void store_commit_drain(struct store_commit *c)
{
    pthread_mutex_lock(&c->lock);
    wait_round(c, c->taken);
    while(c->pending || c->calling)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

uint64_t store_commit_rounds(struct store_commit *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->rounds;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint64_t store_commit_checkpoints(struct store_commit *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->checkpoints;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void store_commit_set_sync(struct store_commit *c, store_commit_sync_fn fn, void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->sync = fn ? fn : default_sync;
    c->sync_arg = fn ? arg : NULL;
    pthread_mutex_unlock(&c->lock);
}

void store_commit_set_hook(struct store_commit *c, store_commit_hook_fn fn, void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->hook = fn;
    c->hook_arg = arg;
    pthread_mutex_unlock(&c->lock);
}
