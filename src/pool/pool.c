#include "pool/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int started;
    int busy;     /* running a job (guarded by the pool's mu) */
    uint64_t tag; /* that job's tag */
};

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
    int n;
    char name[32];
};

/* Jobs of this tag running now (mu held). */
static int running_with(const struct dapi_pool *p, uint64_t tag)
{
    int n = 0;
    for(int i = 0; i < p->n; i++)
        n += p->w[i].busy && p->w[i].tag == tag;
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

/* Takes the next job (mu held, queue not empty): the oldest job of the tag with the fewest
 * jobs running, and among those the tag served longest ago. With one tag this is FIFO; with
 * several, a tag that floods the queue takes turns with the others instead of making them
 * wait behind its backlog. */
static struct job *take(struct dapi_pool *p)
{
    struct job **best = NULL;
    int best_n = 0;
    uint64_t best_seq = 0;
    for(struct job **jp = &p->head; *jp; jp = &(*jp)->next) {
        int n = running_with(p, (*jp)->tag);
        uint64_t seq = last_served(p, (*jp)->tag);
        if(!best || n < best_n || (n == best_n && seq < best_seq)) {
            best = jp;
            best_n = n;
            best_seq = seq;
        }
    }
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

static void *run(void *arg)
{
    struct worker *w = arg;
    struct dapi_pool *p = w->p;
    pthread_mutex_lock(&p->mu);
    for(;;) {
        while(!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if(!p->head || (p->stopping && !p->drain))
            break;
        struct job *j = take(p);
        p->waiting--;
        p->running++;
        w->busy = 1;
        w->tag = j->tag;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg, w->conn);
        free(j);
        pthread_mutex_lock(&p->mu);
        w->busy = 0;
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

enum dapi_err dapi_pool_start(struct dapi_pool **out, const char *name, int n,
                              struct dapi_engine *e)
{
    enum dapi_err result;
    struct dapi_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    if(!p || !(p->w = calloc((size_t)n, sizeof *p->w))) {
        free(p);
        return DAPI_ERR_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n = n;
    for(int i = 0; i < n; i++) {
        p->w[i].p = p;
        if((result = dapi_engine_connect(e, &p->w[i].conn)) ||
           pthread_create(&p->w[i].thread, NULL, run, &p->w[i])) {
            dapi_pool_free(p);
            return result ? result : DAPI_ERR_INTERNAL;
        }
        p->w[i].started = 1;
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
    if(p->stopping || (cap && p->waiting >= cap)) {
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

void dapi_pool_stop(struct dapi_pool *p, int drain)
{
    if(!p)
        return;
    pthread_mutex_lock(&p->mu);
    if(p->stopped) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stopping = 1;
    p->drain = drain;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for(int i = 0; i < p->n; i++)
        if(p->w[i].started)
            pthread_join(p->w[i].thread, NULL);
    /* whatever is left was never run: let each job release its resources */
    pthread_mutex_lock(&p->mu);
    struct job *j = p->head;
    p->head = p->tail = NULL;
    p->waiting = 0;
    p->stopped = 1;
    pthread_mutex_unlock(&p->mu);
    while(j) {
        struct job *next = j->next;
        j->fn(j->arg, NULL);
        free(j);
        j = next;
    }
    for(int i = 0; i < p->n; i++) {
        dapi_econn_close(p->w[i].conn);
        p->w[i].conn = NULL;
    }
}

void dapi_pool_free(struct dapi_pool *p)
{
    if(!p)
        return;
    dapi_pool_stop(p, 0);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}
