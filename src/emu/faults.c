#include "emu/faults.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rule {
    char path[256];
    char method[16];
    int64_t first; /* -1 = unlimited */
    double rate;
    int64_t seen;
    struct dapi_fault_action act;
};

struct dapi_faults {
    pthread_mutex_t mu;
    struct rule *rules;
    size_t n;
    uint64_t rng;
};

/* Every key and what its value must be, for the messages. */
static const struct {
    const char *key, *value;
} keys[] = {
    {"path", "a path prefix, under 256 bytes"},
    {"method", "an HTTP method, under 16 bytes"},
    {"first", "a count, 0 or more"},
    {"rate", "a probability from 0 to 1"},
    {"seed", "an integer, 0 or more"},
    {"status", "an HTTP status from 100 to 599"},
    {"retry_after", "seconds, 0 or more"},
    {"latency_ms", "milliseconds from 0 to 3600000"},
    {"body", "truncate, garbage, wrongtype or empty"},
    {"expire", "0 or 1"},
    {"url_host", "a host or host:port, under 64 bytes"},
};
#define KEY_LIST \
    "path, method, first, rate, seed, status, retry_after, latency_ms, body, expire, url_host"

/* A host, host:port or [v6]:port as it may stand in a URL: nothing that would end the
 * authority or start a path, query or userinfo. */
static int url_host_ok(const char *v, size_t cap)
{
    size_t n = strlen(v);
    return n > 0 && n < cap &&
           strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789.-:[]") == n;
}

static int set(struct rule *r, uint64_t *seed, const char *k, const char *v, char *err,
               size_t errlen)
{
    char *end = NULL;
    if(strcmp(k, "path") == 0 && strlen(v) < sizeof r->path) {
        snprintf(r->path, sizeof r->path, "%s", v);
        return 0;
    }
    if(strcmp(k, "method") == 0 && strlen(v) < sizeof r->method) {
        snprintf(r->method, sizeof r->method, "%s", v);
        return 0;
    }
    if(strcmp(k, "body") == 0 && (!strcmp(v, "truncate") || !strcmp(v, "garbage") ||
                                  !strcmp(v, "wrongtype") || !strcmp(v, "empty"))) {
        snprintf(r->act.body, sizeof r->act.body, "%s", v);
        return 0;
    }
    if(strcmp(k, "url_host") == 0) {
        if(!url_host_ok(v, sizeof r->act.url_host))
            goto bad;
        snprintf(r->act.url_host, sizeof r->act.url_host, "%s", v);
        return 0;
    }
    if(strcmp(k, "rate") == 0) {
        r->rate = strtod(v, &end);
        if(*v && !*end && r->rate >= 0 && r->rate <= 1)
            return 0;
    } else {
        long long n = strtoll(v, &end, 10);
        if(*v && !*end && n >= 0) {
            if(strcmp(k, "first") == 0)
                r->first = n;
            else if(strcmp(k, "status") == 0 && n >= 100 && n <= 599)
                r->act.status = (int)n;
            else if(strcmp(k, "retry_after") == 0 && n <= INT_MAX)
                r->act.retry_after = (int)n;
            else if(strcmp(k, "latency_ms") == 0 && n <= 3600000)
                r->act.latency_ms = n; /* at most an hour, so sums cannot overflow */
            else if(strcmp(k, "expire") == 0 && n <= 1)
                r->act.expire = n != 0;
            else if(strcmp(k, "seed") == 0)
                *seed = n ? (uint64_t)n : 0x9e3779b97f4a7c15ULL; /* xorshift state must be != 0 */
            else
                goto bad;
            return 0;
        }
    }
bad:
    for(size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if(strcmp(k, keys[i].key) == 0) {
            snprintf(err, errlen, "invalid value for --emulate-faults: '%.64s=%.64s' (%s: %s)", k,
                     v, k, keys[i].value);
            return -1;
        }
    snprintf(err, errlen,
             "invalid value for --emulate-faults: unknown key in '%.64s=%.64s' "
             "(keys: " KEY_LIST ")",
             k, v);
    return -1;
}

int dapi_faults_parse(struct dapi_faults **out, const char *spec, char *err, size_t errlen)
{
    struct dapi_faults *f = calloc(1, sizeof *f);
    char *copy = spec ? strdup(spec) : NULL;
    *out = NULL;
    if(!f || (spec && !copy)) {
        free(f);
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&f->mu, NULL);
    f->rng = 1;
    for(char *rule = copy, *next; rule && *rule; rule = next) {
        next = strchr(rule, ';');
        if(next)
            *next++ = '\0';
        struct rule r = {.first = -1, .rate = 1.0, .act = {.retry_after = -1}};
        for(char *item = rule, *inext; item && *item; item = inext) {
            inext = strchr(item, ',');
            if(inext)
                *inext++ = '\0';
            char *eq = strchr(item, '=');
            if(!eq) {
                snprintf(err, errlen,
                         "invalid value for --emulate-faults: '%.64s' is not "
                         "key=value (keys: " KEY_LIST ")",
                         item);
                goto fail;
            }
            *eq = '\0';
            if(set(&r, &f->rng, item, eq + 1, err, errlen))
                goto fail;
        }
        struct rule *nr = realloc(f->rules, (f->n + 1) * sizeof *nr);
        if(!nr)
            goto fail;
        f->rules = nr;
        f->rules[f->n++] = r;
    }
    free(copy);
    *out = f;
    return 0;
fail:
    free(copy);
    dapi_faults_free(f);
    return -1;
}

void dapi_faults_free(struct dapi_faults *f)
{
    if(!f)
        return;
    pthread_mutex_destroy(&f->mu);
    free(f->rules);
    free(f);
}

void dapi_faults_match(struct dapi_faults *f, const char *method, const char *path,
                       struct dapi_fault_action *act)
{
    memset(act, 0, sizeof *act);
    act->retry_after = -1;
    if(!f)
        return;
    pthread_mutex_lock(&f->mu);
    for(size_t i = 0; i < f->n; i++) {
        struct rule *r = &f->rules[i];
        if(strncmp(path, r->path, strlen(r->path)) != 0 ||
           (r->method[0] && strcmp(method, r->method) != 0))
            continue;
        if(r->first >= 0 && r->seen >= r->first)
            continue;
        r->seen++;
        /* xorshift64*: deterministic for a given seed */
        f->rng ^= f->rng >> 12;
        f->rng ^= f->rng << 25;
        f->rng ^= f->rng >> 27;
        double u = (double)((f->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
        if(u >= r->rate)
            continue;
        act->latency_ms += r->act.latency_ms;
        if(!act->status && r->act.status) {
            act->status = r->act.status;
            act->retry_after = r->act.retry_after;
        }
        if(!act->body[0] && r->act.body[0])
            memcpy(act->body, r->act.body, sizeof act->body);
        act->expire |= r->act.expire;
        if(!act->url_host[0] && r->act.url_host[0])
            memcpy(act->url_host, r->act.url_host, sizeof act->url_host);
    }
    pthread_mutex_unlock(&f->mu);
}
