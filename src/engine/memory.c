/* The engine's memory: DuckDB's allocator set up for a capped process, and what happens when
 * a query runs out of memory.
 *
 * DuckDB allocates through a jemalloc of its own (symbols prefixed duckdb_je_). By default
 * jemalloc keeps the address space of what it frees, in the arena of the thread that freed
 * it, and gives pages back only after a decay time and only when that arena is used again.
 * With the process's data size capped (--memory-headroom, RLIMIT_DATA), a query that took the
 * process to the cap left it there: the other threads' arenas could never map memory again,
 * and every later query failed for memory — creations with 400 "Out of Memory Error", runs
 * with 500 — for good. Two things prevent that: jemalloc is told not to retain (freed extents
 * are unmapped when purged), and a query that ran out of memory purges every arena at once. */
#include "engine/engine_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"

void dapi_engine_setup_process(char **argv)
{
    /* jemalloc reads its settings when the library is loaded, before main: the variable is
     * set and the program executed again (the same process) when it is not set already. An
     * operator's own setting is kept. */
    static const char name[] = "DUCKDB_JE_MALLOC_CONF";
    if(getenv(name) || setenv(name, "retain:false", 0))
        return;
    execv("/proc/self/exe", argv);
    fprintf(stderr, "dapi: cannot configure DuckDB's allocator (exec /proc/self/exe: %s)\n",
            strerror(errno));
}

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static mallctl_fn mallctl;
static pthread_once_t mallctl_once = PTHREAD_ONCE_INIT;

static void find_mallctl(void)
{
    /* looked up, not linked: a DuckDB built without jemalloc (its ARM64 builds) has none */
    *(void **)&mallctl = dlsym(RTLD_DEFAULT, "duckdb_je_mallctl");
}

/* Gives what DuckDB's allocator holds freed back to the kernel now, rather than after its
 * decay time (the pages of every arena: 4096 is jemalloc's "all arenas"). */
static void release_memory(void)
{
    pthread_once(&mallctl_once, find_mallctl);
    if(!mallctl)
        return;
    mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    mallctl("arena.4096.purge", NULL, NULL, NULL, 0);
}

/* DuckDB reports running out of memory (its buffer manager's limit, or an allocation refused
 * under the process cap) as an error of the query: that is a result too large to compute
 * here, not a mistake in the SQL. What the query held is released at once, so that the next
 * query does not meet the cap it left. */
enum dapi_err engine_classify_oom(enum dapi_err result, char **msg, int *spill)
{
    static const char oom[] = "Out of Memory Error";
    if(spill)
        *spill = 0;
    if(result != DAPI_ERR_SQL || !*msg || strncmp(*msg, oom, sizeof oom - 1) != 0)
        return result;
    release_memory();
    int disk = strstr(*msg, "max_temp_directory_size") != NULL;
    if(spill)
        *spill = disk;
    char *why = dupmsg(disk ? "the query needs more temporary disk space than this server "
                              "allows (--max-spill-bytes): "
                            : "the query needs more memory than this server allows "
                              "(--memory-limit, --memory-headroom): ",
                       *msg);
    if(why) {
        char *nl = strchr(why, '\n'); /* DuckDB appends tuning advice for its own CLI */
        if(nl)
            *nl = '\0';
        free(*msg);
        *msg = why;
    }
    return DAPI_ERR_TOO_LARGE;
}

/* ---- work in the engine's memory --------------------------------------------------------
 *
 * Every query, check and conversion shares one memory cap (--memory-limit for DuckDB's
 * buffers, the process's data size for the rest), so a query that runs out of memory may be
 * the one that is too large, or one that met another key's large query: from DuckDB's error
 * nothing tells them apart. What can be told is whether it ran alone. The work in flight is
 * a list in the order it began (one lock; begin and end are once per statement, never per
 * row): a work that began while another was in flight, or saw another begin, had company. */
static pthread_mutex_t work_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static struct engine_work *work_head, *work_tail;
static uint64_t work_seq;

void engine_work_begin(struct engine_work *w)
{
    pthread_mutex_lock(&work_lock);
    w->seq = ++work_seq;
    w->company = work_head != NULL;
    w->next = NULL;
    w->prev = work_tail;
    if(work_tail)
        work_tail->next = w;
    else
        work_head = w;
    work_tail = w;
    pthread_mutex_unlock(&work_lock);
}

void engine_work_end(struct engine_work *w)
{
    pthread_mutex_lock(&work_lock);
    w->company = w->company || work_seq != w->seq; /* another began during this one */
    w->mark = work_seq;
    int oldest = w == work_head;
    if(w->prev)
        w->prev->next = w->next;
    else
        work_head = w->next;
    if(w->next)
        w->next->prev = w->prev;
    else
        work_tail = w->prev;
    w->prev = w->next = NULL;
    if(oldest) /* the only end a waiter (dapi_engine_wait_work) can be waiting for */
        pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&work_lock);
}

int dapi_engine_wait_work(uint64_t mark, int64_t deadline_ms)
{
    pthread_mutex_lock(&work_lock);
    while(work_head && work_head->seq <= mark) {
        int64_t left = deadline_ms - dapi_clock_mono_ms();
        if(left <= 0)
            break;
        struct timespec ts = dapi_clock_after(0, left);
        pthread_cond_timedwait(&work_cv, &work_lock, &ts);
    }
    int ended = !work_head || work_head->seq > mark;
    pthread_mutex_unlock(&work_lock);
    return ended;
}
