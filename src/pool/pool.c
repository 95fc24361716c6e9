#include "pool/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"

struct job {
    dapi_job_fn fn;
    void *arg;
    uint64_t tag;
    struct job *next;
};

struct worker {
    struct dapi_pool *p;
    pthread_t thread;
    struct dapi_econn *conn;
    int started;           /* a thread was created in this slot (joined at stop or before reuse) */
    int live;              /* that thread takes jobs (not retired) */
    int busy;              /* running a job (guarded by the pool's mu) */
    int aside;             /* set aside (mu): ASIDE_OVERRUN or ASIDE_WAITING, else 0 */
    int64_t waiting_since; /* its job waits for something outside the pool since (mu) */
    uint64_t tag;          /* that job's tag */
};

enum { ASIDE_OVERRUN = 1, ASIDE_WAITING = 2 };

/* The worker this thread is (dapi_pool_waiting), NULL off a pool. */
static _Thread_local struct worker *self;

#define SERVED_TAGS 64

struct dapi_pool {
    pthread_mutex_t mu;
    /* When each recent tag last had a job started (a sequence number): among tags with as
     * many jobs running, the one served longest ago goes first. Forgotten tags count as
     * never served. */
    struct {
        uint64_t tag, seq;
    } served[SERVED_TAGS];
    uint64_t seq;
    pthread_cond_t cv;
    struct job *head, *tail;
    size_t waiting, running;
    int stopping, drain, stopped;
    struct worker *w;
    int n;                   /* workers that take jobs when none overruns */
    int slots;               /* n plus room for replacements */
    int live;                /* threads taking jobs, set-aside ones included */
    int overrunning, parked; /* workers set aside: ASIDE_OVERRUN, ASIDE_WAITING */
    uint64_t overruns, waits, replacements;
    int short_warned; /* said that a replacement could not start (until one does) */
    /* The overseer (dapi_pool_start_watched): sets aside workers whose job overruns. */
    struct dapi_pool_watch watch;
    struct dapi_engine *e;
    pthread_t overseer;
    int overseer_started;
    int overseer_joined; /* by the stop (its thread only) */
    pthread_cond_t ov_cv;
    char name[32];
};

/* Jobs of this tag running now (mu held). */
static int running_with(const struct dapi_pool *p, uint64_t tag)
{
    int n = 0;
    for(int i = 0; i < p->slots; i++)
        n += p->w[i].busy && p->w[i].tag == tag;
    return n;
}

/* Does a job of this tag overrun now? Then the tag's other jobs wait (mu held). A job that
 * waits (for a slow client) does not hold its tag: a long download is no reason to hold its
 * key's queries, and it costs a thread, not a core. */
static int held(const struct dapi_pool *p, uint64_t tag)
{
    if(!p->overrunning)
        return 0;
    for(int i = 0; i < p->slots; i++)
        if(p->w[i].busy && p->w[i].aside == ASIDE_OVERRUN && p->w[i].tag == tag)
            return 1;
    return 0;
}

/* The threads the pool should have now (mu held): n, plus a replacement for each worker set
 * aside, within the bound of each kind. */
static int target(const struct dapi_pool *p)
{
    int o = p->overrunning < p->watch.max_extra ? p->overrunning : p->watch.max_extra;
    int w = p->parked < p->watch.max_waiting ? p->parked : p->watch.max_waiting;
    return p->n + o + w;
}

/* Jobs of this tag waiting in the queue (mu held). */
static size_t queued_with(const struct dapi_pool *p, uint64_t tag)
{
    size_t n = 0;
    for(const struct job *j = p->head; j; j = j->next)
        n += j->tag == tag;
    return n;
}

static uint64_t last_served(const struct dapi_pool *p, uint64_t tag)
{
    for(int i = 0; i < SERVED_TAGS; i++)
        if(p->served[i].seq && p->served[i].tag == tag)
            return p->served[i].seq;
    return 0;
}

static void mark_served(struct dapi_pool *p, uint64_t tag)
{
    int slot = 0;
    for(int i = 0; i < SERVED_TAGS; i++) {
        if(p->served[i].seq && p->served[i].tag == tag) {
            slot = i;
            break;
        }
        if(p->served[i].seq < p->served[slot].seq)
            slot = i; /* the least recently served (or an empty slot) makes room */
    }
    p->served[slot].tag = tag;
    p->served[slot].seq = ++p->seq;
}

/* Takes the next job (mu held): the oldest job of the tag with the fewest jobs running, and
 * among those the tag served longest ago; jobs of a tag that has one overrunning are passed
 * over, and so are those of a tag at max_running_per_tag. NULL when no job may start. With one tag this is FIFO; with several, a tag that
 * floods the queue takes turns with the others instead of making them wait behind its
 * backlog. */
static struct job *take(struct dapi_pool *p)
{
    struct job **best = NULL;
    int best_n = 0;
    uint64_t best_seq = 0;
    for(struct job **jp = &p->head; *jp; jp = &(*jp)->next) {
        if(held(p, (*jp)->tag))
            continue;
        int n = running_with(p, (*jp)->tag);
        if(p->watch.max_running_per_tag && (*jp)->tag && n >= p->watch.max_running_per_tag)
            continue;
        uint64_t seq = last_served(p, (*jp)->tag);
        if(!best || n < best_n || (n == best_n && seq < best_seq)) {
            best = jp;
            best_n = n;
            best_seq = seq;
        }
    }
    if(!best)
        return NULL;
    mark_served(p, (*best)->tag);
    struct job *j = *best;
    *best = j->next;
    if(p->tail == j) {
        p->tail = NULL;
        for(struct job *k = p->head; k; k = k->next)
            p->tail = k;
    }
    return j;
}

/* A job set aside has ended (mu held): its tag's jobs may start again, and the worker
 * leaves the pool if the replacement made it one too many. Returns 1 if it leaves. */
static int aside_ended(struct dapi_pool *p, struct worker *w)
{
    if(w->aside == ASIDE_OVERRUN)
        p->overrunning--;
    else
        p->parked--;
    w->aside = 0;
    pthread_cond_broadcast(&p->cv);
    if(p->live <= target(p))
        return 0;
    w->live = 0;
    p->live--;
    dapi_debug("%s pool: a set-aside job ended; its worker leaves (%d workers)", p->name, p->live);
    return 1;
}

void dapi_pool_waiting(int on)
{
    struct worker *w = self;
    if(!w)
        return;
    pthread_mutex_lock(&w->p->mu);
    if(!on)
        w->waiting_since = 0;
    else if(!w->waiting_since)
        w->waiting_since = dapi_clock_mono_ms();
    pthread_mutex_unlock(&w->p->mu);
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct dapi_pool *p = w->p;
    self = w;
    pthread_mutex_lock(&p->mu);
    for(;;) {
        if(p->stopping && (!p->drain || !p->head))
            break;
        struct job *j = p->head ? take(p) : NULL;
        if(!j) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        p->waiting--;
        if(!p->running++ && p->overseer_started)
            pthread_cond_signal(&p->ov_cv);
        w->busy = 1;
        w->tag = j->tag;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg, w->conn);
        free(j);
        pthread_mutex_lock(&p->mu);
        w->busy = 0;
        w->waiting_since = 0;
        p->running--;
        if(w->aside && aside_ended(p, w))
            break;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Starts a thread in slot i (mu held, released meanwhile): joins the one that left it, and
 * connects the slot once. */
static int spawn(struct dapi_pool *p, int i)
{
    struct worker *w = &p->w[i];
    w->live = 1;
    p->live++;
    pthread_mutex_unlock(&p->mu);
    if(w->started) {
        pthread_join(w->thread, NULL); /* it left its loop: the join does not wait */
        w->started = 0;
    }
    int ok = (w->conn || dapi_engine_connect(p->e, &w->conn) == DAPI_OK) &&
             pthread_create(&w->thread, NULL, run, w) == 0;
    pthread_mutex_lock(&p->mu);
    if(!ok) {
        w->live = 0;
        p->live--;
        return -1;
    }
    w->started = 1;
    return 0;
}

/* Sets aside the workers whose job has overrun, or has waited, by the grace (mu held) and
 * starts a replacement for each while there is room. */
static void oversee_once(struct dapi_pool *p)
{
    int64_t now = dapi_clock_mono_ms();
    for(int i = 0; i < p->slots; i++) {
        struct worker *w = &p->w[i];
        if(!w->busy || w->aside || !w->conn)
            continue;
        if(w->waiting_since && now - w->waiting_since >= p->watch.grace_ms) {
            w->aside = ASIDE_WAITING;
            p->parked++;
            p->waits++;
            continue;
        }
        int64_t over = p->watch.probe(w->conn);
        if(over < p->watch.grace_ms)
            continue;
        w->aside = ASIDE_OVERRUN;
        p->overrunning++;
        p->overruns++;
        dapi_warn("%s pool: a job is still running %lld ms after its time limit stopped it "
                  "(work the engine cannot interrupt); its worker is set aside and the key's "
                  "other jobs wait until it ends",
                  p->name, (long long)over);
    }
    while(!p->stopping && p->live < target(p)) {
        int slot = -1;
        for(int i = 0; i < p->slots && slot < 0; i++)
            if(!p->w[i].live)
                slot = i;
        if(slot < 0 || spawn(p, slot)) {
            if(!p->short_warned)
                dapi_warn("%s pool: %d workers are set aside and a replacement cannot start; "
                          "the other jobs wait",
                          p->name, p->overrunning + p->parked);
            p->short_warned = 1;
            return;
        }
        p->short_warned = 0;
        p->replacements++;
        dapi_debug("%s pool: a replacement worker started (%d workers, %d overrunning, %d "
                   "waiting)",
                   p->name, p->live, p->overrunning, p->parked);
    }
}

static void *oversee(void *arg)
{
    struct dapi_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while(!p->stopping) {
        if(!p->running) {
            pthread_cond_wait(&p->ov_cv, &p->mu);
            continue;
        }
        oversee_once(p);
        struct timespec ts = dapi_clock_after(0, p->watch.interval_ms);
        pthread_cond_timedwait(&p->ov_cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

enum dapi_err dapi_pool_start(struct dapi_pool **out, const char *name, int n,
                              struct dapi_engine *e)
{
    return dapi_pool_start_watched(out, name, n, e, NULL);
}

enum dapi_err dapi_pool_start_watched(struct dapi_pool **out, const char *name, int n,
                                      struct dapi_engine *e, const struct dapi_pool_watch *watch)
{
    struct dapi_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    int slots = n + (watch ? watch->max_extra + watch->max_waiting : 0);
    if(!p || !(p->w = calloc((size_t)slots, sizeof *p->w))) {
        free(p);
        return DAPI_ERR_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->ov_cv, NULL);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n = n;
    p->slots = slots;
    p->e = e;
    for(int i = 0; i < slots; i++)
        p->w[i].p = p;
    enum dapi_err result = DAPI_OK;
    pthread_mutex_lock(&p->mu);
    for(int i = 0; i < n && !result; i++) {
        if((result = dapi_engine_connect(e, &p->w[i].conn)))
            break;
        if(spawn(p, i))
            result = DAPI_ERR_INTERNAL;
    }
    if(!result && watch) {
        p->watch = *watch;
        if(p->watch.interval_ms <= 0)
            p->watch.interval_ms = 100;
        if(pthread_create(&p->overseer, NULL, oversee, p))
            result = DAPI_ERR_INTERNAL;
        else
            p->overseer_started = 1;
    }
    pthread_mutex_unlock(&p->mu);
    if(result) {
        dapi_pool_free(p);
        return result;
    }
    *out = p;
    return DAPI_OK;
}

enum dapi_err dapi_pool_submit(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap)
{
    return dapi_pool_submit_tagged(p, fn, arg, cap, 0);
}

enum dapi_err dapi_pool_submit_tagged(struct dapi_pool *p, dapi_job_fn fn, void *arg, size_t cap,
                                      uint64_t tag)
{
    struct job *j = malloc(sizeof *j);
    if(!j)
        return DAPI_ERR_NOMEM;
    j->fn = fn;
    j->arg = arg;
    j->tag = tag;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if(p->stopping || (cap && p->waiting >= cap) ||
       (p->watch.max_held_per_tag && held(p, tag) &&
        queued_with(p, tag) >= (size_t)p->watch.max_held_per_tag)) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return DAPI_ERR_BUSY;
    }
    if(p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->waiting++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return DAPI_OK;
}

size_t dapi_pool_load(struct dapi_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->waiting + p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void dapi_pool_stats(struct dapi_pool *p, struct dapi_pool_stats *out)
{
    pthread_mutex_lock(&p->mu);
    out->waiting = p->waiting;
    out->running = p->running;
    out->workers = p->live;
    out->overrunning = p->overrunning;
    out->waiting_aside = p->parked;
    out->overruns = p->overruns;
    out->waits = p->waits;
    out->replacements = p->replacements;
    pthread_mutex_unlock(&p->mu);
}

enum dapi_err dapi_pool_stop_within(struct dapi_pool *p, int drain, int64_t ms)
{
    if(!p)
        return DAPI_OK;
    pthread_mutex_lock(&p->mu);
    if(p->stopped) {
        pthread_mutex_unlock(&p->mu);
        return DAPI_OK;
    }
    p->stopping = 1;
    p->drain = drain;
    pthread_cond_broadcast(&p->cv);
    pthread_cond_broadcast(&p->ov_cv);
    pthread_mutex_unlock(&p->mu);
    /* the overseer first: once it is gone no slot gets a new thread */
    if(p->overseer_started && !p->overseer_joined) {
        pthread_join(p->overseer, NULL);
        p->overseer_joined = 1;
    }
    struct timespec until = dapi_clock_after(0, ms > 0 ? ms : 0);
    int left = 0;
    for(int i = 0; i < p->slots; i++) {
        if(!p->w[i].started)
            continue;
        if(ms < 0)
            pthread_join(p->w[i].thread, NULL);
        else if(pthread_timedjoin_np(p->w[i].thread, NULL, &until)) {
            left++;
            continue;
        }
        p->w[i].started = 0;
    }
    /* whatever is left was never run: let each job release its resources */
    pthread_mutex_lock(&p->mu);
    struct job *j = p->head;
    p->head = p->tail = NULL;
    p->waiting = 0;
    p->stopped = !left;
    pthread_mutex_unlock(&p->mu);
    while(j) {
        struct job *next = j->next;
        j->fn(j->arg, NULL);
        free(j);
        j = next;
    }
    if(left) {
        dapi_warn("%s pool: %d %s still running work the engine cannot interrupt", p->name, left,
                  left == 1 ? "worker is" : "workers are");
        return DAPI_ERR_TIMEOUT;
    }
    for(int i = 0; i < p->slots; i++) {
        dapi_econn_close(p->w[i].conn);
        p->w[i].conn = NULL;
    }
    return DAPI_OK;
}

void dapi_pool_stop(struct dapi_pool *p, int drain)
{
    dapi_pool_stop_within(p, drain, -1);
}

void dapi_pool_free(struct dapi_pool *p)
{
    if(!p)
        return;
    dapi_pool_stop(p, 0);
    pthread_cond_destroy(&p->ov_cv);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}
