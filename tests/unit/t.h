/* A tiny unit-test harness: each tests/unit/<module>/test_*.c (the tests of src/<module>/) is
 * its own process (a crash fails only that file) and ends by printing "N passed, N failed";
 * scripts/test.sh adds them up.
 * Assertions print both sides. */
#ifndef DAPI_T_H
#define DAPI_T_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int t_passed, t_failed;

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

#endif
