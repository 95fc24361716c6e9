/* DAPI_TEST_SCOPES: scoped keys for the integration tests, before the key store gives real
 * ones (docs/design.md, Testing). Read once, from the environment, when `dapi serve` starts:
 * no flag, setting or route can set it, and the server logs a warning while it is on.
 * Format: "<key>=<layer>,<layer>;<key>=…" — each listed key (which must also be a valid key:
 * this only narrows) reads only those layers; "<key>=" reads none. */
#ifndef DAPI_TESTSCOPES_H
#define DAPI_TESTSCOPES_H

#include <stddef.h>
#include "base/scope.h"

struct dapi_test_scopes;

/* Parses text into *out (NULL when text is NULL or empty). -1 with a reason in err if it is
 * malformed (the server then does not start: a typo must not make a test pass). */
int dapi_test_scopes_parse(const char *text, struct dapi_test_scopes **out, char *err,
                           size_t errlen);
/* Number of keys listed. */
size_t dapi_test_scopes_count(const struct dapi_test_scopes *ts);
/* Narrows scope to the layers listed for key, if it is listed. ts may be NULL. */
void dapi_test_scopes_apply(const struct dapi_test_scopes *ts, const char *key,
                            struct dapi_scope *scope);
void dapi_test_scopes_free(struct dapi_test_scopes *ts);

#endif
