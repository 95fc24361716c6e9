/* A tiny unit-test harness: each tests/unit/<module>/test_*.c (the tests of src/<module>/) is
 * its own process (a crash fails only that file) and ends by printing "N passed, N failed";
 * scripts/test.sh adds them up.
 * Assertions print both sides. */
#ifndef DAPI_T_H
#define DAPI_T_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"

/* The counts of this process's checks (defined in t.c, so the helpers there count too). */
extern int t_passed, t_failed;

#define T_CHECK(cond, ...)                                                                     \
    do {                                                                                       \
        if(cond) {                                                                             \
            t_passed++;                                                                        \
        } else {                                                                               \
            t_failed++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while(0)

#define T_EQ_INT(a, b)                                                                         \
    do {                                                                                       \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                                \
        T_CHECK(t_a_ == t_b_, "%s == %s: got %lld, want %lld", #a, #b, t_a_, t_b_);            \
    } while(0)

#define T_EQ_STR(a, b)                                                                         \
    do {                                                                                       \
        const char *t_a_ = (a), *t_b_ = (b);                                                   \
        T_CHECK(t_a_ && t_b_ && strcmp(t_a_, t_b_) == 0, "%s == %s:\n  got  [%s]\n  want [%s]", \
                #a, #b, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                      \
    } while(0)

#define T_EQ_MEM(a, alen, b)                                                                   \
    do {                                                                                       \
        const char *t_a_ = (a), *t_b_ = (b);                                                   \
        size_t t_al_ = (alen), t_bl_ = strlen(t_b_);                                           \
        T_CHECK(t_a_ && t_al_ == t_bl_ && memcmp(t_a_, t_b_, t_al_) == 0,                      \
                "%s == %s:\n  got  [%.*s]\n  want [%s]", #a, #b, (int)t_al_, t_a_ ? t_a_ : "",  \
                t_b_);                                                                         \
    } while(0)

#define T_DONE()                                                                               \
    do {                                                                                       \
        printf("%s: %d passed, %d failed\n", __FILE__, t_passed, t_failed);                    \
        return t_failed ? 1 : 0;                                                               \
    } while(0)

/* ---- shared helpers (tests/unit/t.c, linked into every unit binary) -------------------
 * Each failure below is a failed check with its reason; none exits. */

/* Makes a fresh directory /tmp/dapi-<name>-XXXXXX and writes its path to out (n bytes).
 * 0, or -1. Remove it with t_rm_rf. */
int t_tmpdir(char *out, size_t n, const char *name);
/* Removes path and everything below it; links are removed, never followed. */
void t_rm_rf(const char *path);
/* 1 if path exists (a dangling link counts as missing). */
int t_exists(const char *path);
/* Writes len bytes to path (created or truncated, mode 0644). */
void t_write_n(const char *path, const void *data, size_t len);
/* Writes a string (without its terminator) to path. */
void t_write(const char *path, const char *text);
/* t_write / mkdir (0755; an existing one is fine) of dir/rel. */
void t_write_in(const char *dir, const char *rel, const char *text);
void t_mkdir_in(const char *dir, const char *rel);

/* A scratch lake for engine tests: root = a fresh /tmp/dapi-<name>-XXXXXX, with empty
 * root/data (the lake) and root/state. */
struct t_lake {
    char root[128], data[160], state[160];
};
/* 0, or -1 (nothing to clean up then). Remove it with t_rm_rf(l->root). */
int t_lake_make(struct t_lake *l, const char *name);
/* Opens an engine on l's data and state dirs with o's other settings (memory_limit "1GB" when
 * o leaves it NULL); checks that it opened. NULL on failure. */
struct dapi_engine *t_engine_open(const struct t_lake *l, struct dapi_engine_opts o);

#endif
