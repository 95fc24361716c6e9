/* Shared by the query registry's unit tests (test_queries.c, test_durability.c): the test
 * root, three owners' key hashes and small helpers over t.h's registry helpers. */
#ifndef DAPI_TEST_QUERIES_FIXTURE_H
#define DAPI_TEST_QUERIES_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "auth/keys.h"
#include "base/log.h"
#include "store/queries.h"
#include "t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char root[64];
static unsigned char owner[DAPI_KEY_HASH_LEN], other[DAPI_KEY_HASH_LEN], third[DAPI_KEY_HASH_LEN];

/* Quiet logs, the test root (tmp dir named name) and the owners' hashes; -1 if no root. */
static inline int fixture_setup(const char *name)
{
    dapi_log_setup(0, DAPI_LOG_ERROR);
    if(t_tmpdir(root, sizeof root, name))
        return -1;
    dapi_sha256("owner-key", 9, owner);
    dapi_sha256("other-key", 9, other);
    dapi_sha256("third-key", 9, third);
    return 0;
}

/* A fresh state dir under the test root. */
static inline void state_dir(char *out, size_t n, const char *name)
{
    t_fresh_dir(out, n, root, name);
}

static inline void query_dir(char *out, size_t n, const char *state, const char *slug)
{
    snprintf(out, n, "%s/queries/%s", state, slug);
}

/* What the registry reported as unfinished when it opened (the first 8 calls). */
struct unfinished {
    int calls;
    char slug[8][DAPI_SLUG_MAX];
    char sql[8][256];
};

static inline void on_unfinished(void *arg, const char *slug, const char *sql)
{
    struct unfinished *u = arg;
    if(u->calls < 8) {
        snprintf(u->slug[u->calls], sizeof u->slug[0], "%s", slug);
        snprintf(u->sql[u->calls], sizeof u->sql[0], "%s", sql);
    }
    u->calls++;
}

static inline int unfinished_has(const struct unfinished *u, const char *slug, const char *sql)
{
    for(int i = 0; i < u->calls && i < 8; i++)
        if(strcmp(u->slug[i], slug) == 0 && (!sql || strcmp(u->sql[i], sql) == 0))
            return 1;
    return 0;
}

static inline struct dapi_queries *open_reg(const char *state, int64_t retention,
                                            uint64_t max_bytes, int64_t now_s,
                                            struct unfinished *u)
{
    return t_registry_open(state, retention, max_bytes, now_s, on_unfinished, u);
}

static inline enum dapi_qstate state_of(struct dapi_queries *qs, const char *slug, int64_t now_s,
                                        enum dapi_err *err_out)
{
    return t_registry_state(qs, slug, owner, now_s, err_out);
}

#endif
