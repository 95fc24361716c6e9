/* libFuzzer driver: dapi_jv_parse (src/base/jsonin.h), the reader of request bodies.
 *
 * Invariants checked on every input (max_depth 32, the input not NUL-terminated):
 *  - success only for text nested at most 32 deep (brackets counted here, outside strings);
 *  - success only for strict RFC 8259 JSON (independent validator in fuzz_common.h);
 *  - success <=> *root != NULL; failure leaves a one-line reason in err;
 *  - the whole tree can be walked: every value has a dapi_jtype, dapi_jv_truthy agrees with
 *    Python truthiness, dapi_jv_get finds each member (and NULL for absent keys or
 *    non-objects), dapi_jv_index finds each element and NULL past the end, dapi_jv_str's
 *    bytes are NUL-terminated after len and valid UTF-8, and the tree is no deeper than the
 *    limit;
 *  - dapi_jv_parse_numtext accepts the same text and its tree mirrors the plain one, each
 *    number as the text of that number;
 *  - dapi_jv_parse_wide gives the same tree for text the plain parse accepts; text that only
 *    it accepts (integers beyond int64) is strict JSON within the depth, its tree can be
 *    walked, and the numtext twin mirrors it (each widened integer's digits read back as
 *    its real). */
#include <math.h>

#include <jansson.h>

#include "base/jsonin.h"
#include "fuzz_common.h"

#define MAX_DEPTH 32

static int walk(const struct dapi_jv *v, int depth)
{
    FUZZ_CHECK(v != NULL, "NULL value inside the tree");
    FUZZ_CHECK(depth <= MAX_DEPTH + 1, "tree deeper than the limit (%d)", depth);
    const json_t *j = (const json_t *)v;
    enum dapi_jtype t = dapi_jv_type(v);
    int truthy = dapi_jv_truthy(v);
    int want;
    size_t len = 12345;
    const char *s = dapi_jv_str(v, &len);
    FUZZ_CHECK((t == DAPI_J_STRING) == (s != NULL), "dapi_jv_str non-NULL iff a string");
    FUZZ_CHECK((t == DAPI_J_OBJECT) || dapi_jv_get(v, "a") == NULL, "get on a non-object");
    FUZZ_CHECK((t == DAPI_J_ARRAY) || dapi_jv_index(v, 0) == NULL, "index on a non-array");
    FUZZ_CHECK((t == DAPI_J_ARRAY) || dapi_jv_array_size(v) == 0, "size of a non-array");
    switch(t) {
    case DAPI_J_OBJECT: {
        FUZZ_CHECK(json_is_object(j), "type OBJECT for a non-object");
        FUZZ_CHECK(depth <= MAX_DEPTH, "object at depth %d", depth);
        const char *key;
        size_t klen;
        json_t *m;
        size_t n = 0;
        json_object_keylen_foreach((json_t *)j, key, klen, m)
        {
            n++;
            FUZZ_CHECK(fz_utf8_valid(key, klen), "object key is not valid UTF-8");
            /* dapi_jv_get takes a C string: keys holding a NUL cannot be asked for. */
            if(strlen(key) == klen)
                FUZZ_CHECK(dapi_jv_get(v, key) == (struct dapi_jv *)m,
                           "dapi_jv_get(\"%s\") misses the member", key);
            walk((const struct dapi_jv *)m, depth + 1);
        }
        want = n > 0;
        FUZZ_CHECK(n == json_object_size(j), "member count");
        /* A key that is (almost certainly) absent, and the empty key. */
        FUZZ_CHECK(dapi_jv_get(v, "\x01 no such key") ==
                       (struct dapi_jv *)json_object_get(j, "\x01 no such key"),
                   "dapi_jv_get on an absent key");
        FUZZ_CHECK(dapi_jv_get(v, "") == (struct dapi_jv *)json_object_get(j, ""),
                   "dapi_jv_get on the empty key");
        break;
    }
    case DAPI_J_ARRAY: {
        FUZZ_CHECK(json_is_array(j), "type ARRAY for a non-array");
        FUZZ_CHECK(depth <= MAX_DEPTH, "array at depth %d", depth);
        size_t n = dapi_jv_array_size(v);
        FUZZ_CHECK(n == json_array_size(j), "array size");
        for(size_t i = 0; i < n; i++) {
            struct dapi_jv *e = dapi_jv_index(v, i);
            FUZZ_CHECK(e != NULL, "element %zu of %zu missing", i, n);
            walk(e, depth + 1);
        }
        FUZZ_CHECK(dapi_jv_index(v, n) == NULL, "element past the end");
        FUZZ_CHECK(dapi_jv_index(v, (size_t)-1) == NULL, "element SIZE_MAX");
        want = n > 0;
        break;
    }
    case DAPI_J_STRING:
        FUZZ_CHECK(json_is_string(j), "type STRING for a non-string");
        FUZZ_CHECK(s[len] == '\0', "string not NUL-terminated after len");
        FUZZ_CHECK(len >= strlen(s), "len shorter than the C string");
        FUZZ_CHECK(fz_utf8_valid(s, len), "string value is not valid UTF-8");
        FUZZ_CHECK(dapi_jv_str(v, NULL) == s, "dapi_jv_str(v, NULL)");
        want = len > 0;
        break;
    case DAPI_J_INT:
        FUZZ_CHECK(json_is_integer(j), "type INT for a non-integer");
        want = dapi_jv_int(v) != 0;
        break;
    case DAPI_J_REAL: {
        FUZZ_CHECK(json_is_real(j), "type REAL for a non-real");
        double d = dapi_jv_real(v);
        FUZZ_CHECK(isfinite(d), "a parsed real is not finite");
        want = d != 0.0;
        break;
    }
    case DAPI_J_TRUE:
        FUZZ_CHECK(json_is_true(j), "type TRUE");
        want = 1;
        break;
    case DAPI_J_FALSE:
        FUZZ_CHECK(json_is_false(j), "type FALSE");
        want = 0;
        break;
    case DAPI_J_NULL:
        FUZZ_CHECK(json_is_null(j), "type NULL for a non-null");
        want = 0;
        break;
    default: FUZZ_CHECK(0, "dapi_jv_type returned %d", (int)t);
    }
    FUZZ_CHECK(truthy == want, "dapi_jv_truthy %d, Python says %d (type %d)", truthy, want,
               (int)t);
    return 0;
}

/* dapi_jv_parse_numtext's tree mirrors the plain one: the same members and elements, each
 * number a string of its exact text (reading back as the same number), all else the same. */
static void mirror(const struct dapi_jv *v, const struct dapi_jv *x)
{
    enum dapi_jtype t = dapi_jv_type(v);
    size_t len = 0, xlen = 0;
    const char *xs = dapi_jv_str(x, &xlen);
    if(t == DAPI_J_INT || t == DAPI_J_REAL) {
        FUZZ_CHECK(xs != NULL, "a number's twin is not a string");
        FUZZ_CHECK(strspn(xs, "0123456789+-.eE") == xlen, "a number's text: %s", xs);
        if(t == DAPI_J_INT)
            FUZZ_CHECK(strtoll(xs, NULL, 10) == dapi_jv_int(v), "integer text %s", xs);
        else
            FUZZ_CHECK(strtod(xs, NULL) == dapi_jv_real(v), "real text %s", xs);
        return;
    }
    FUZZ_CHECK(dapi_jv_type(x) == t, "twin type %d for %d", (int)dapi_jv_type(x), (int)t);
    if(t == DAPI_J_STRING) {
        const char *s = dapi_jv_str(v, &len);
        FUZZ_CHECK(len == xlen && memcmp(s, xs, len) == 0, "a string changed in the twin");
    } else if(t == DAPI_J_ARRAY) {
        FUZZ_CHECK(dapi_jv_array_size(x) == dapi_jv_array_size(v), "twin array size");
        for(size_t i = 0; i < dapi_jv_array_size(v); i++)
            mirror(dapi_jv_index(v, i), dapi_jv_index(x, i));
    } else if(t == DAPI_J_OBJECT) {
        const char *key;
        size_t klen;
        json_t *m;
        FUZZ_CHECK(json_object_size((const json_t *)x) == json_object_size((const json_t *)v),
                   "twin member count");
        json_object_keylen_foreach((json_t *)v, key, klen, m)
        {
            json_t *xm = json_object_getn((const json_t *)x, key, klen);
            FUZZ_CHECK(xm != NULL, "member \"%s\" missing in the twin", key);
            mirror((const struct dapi_jv *)m, (const struct dapi_jv *)xm);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    /* An exact-size copy: ASan reports any read past len (the parser must not need a NUL). */
    char *text = malloc(size ? size : 1);
    if(!text)
        return 0;
    memcpy(text, data, size);

    struct dapi_jv *root = (struct dapi_jv *)0x1;
    char err[256] = "";
    enum dapi_err r = dapi_jv_parse(text, size, MAX_DEPTH, &root, err, sizeof err);
    int depth = fz_bracket_depth(data, size);
    struct dapi_jv *wide = NULL;
    char werr[256] = "";
    enum dapi_err rw = dapi_jv_parse_wide(text, size, MAX_DEPTH, &wide, werr, sizeof werr);
    if(r == DAPI_OK) {
        FUZZ_CHECK(rw == DAPI_OK, "dapi_jv_parse_wide refused accepted text: %s", werr);
        FUZZ_CHECK(json_equal((json_t *)root, (json_t *)wide),
                   "dapi_jv_parse_wide's tree differs");
    } else if(rw == DAPI_OK) {
        int wdepth = -2;
        FUZZ_CHECK(fz_json_valid(data, size, &wdepth) == 1,
                   "wide: accepted text that is not JSON");
        FUZZ_CHECK(depth <= MAX_DEPTH, "wide: accepted text nested %d deep", depth);
        walk(wide, 1);
        struct dapi_jv *wt = NULL;
        FUZZ_CHECK(dapi_jv_parse_numtext(text, size, MAX_DEPTH, &wt, werr, sizeof werr) == DAPI_OK,
                   "numtext refused text the wide parse accepts: %s", werr);
        mirror(wide, wt);
        dapi_jv_free(wt);
    } else {
        FUZZ_CHECK(wide == NULL && werr[0], "wide: a failure without a reason, or a root");
    }
    dapi_jv_free(wide);
    if(r != DAPI_OK) {
        FUZZ_CHECK(root == NULL, "*root not NULL after failure");
        FUZZ_CHECK(err[0] != '\0', "no reason given for failure %d", (int)r);
        FUZZ_CHECK(memchr(err, '\n', sizeof err) == NULL, "reason is not one line: %s", err);
        free(text);
        return 0;
    }
    FUZZ_CHECK(root != NULL, "success without a root");
    FUZZ_CHECK(depth <= MAX_DEPTH, "accepted text nested %d deep (limit %d)", depth, MAX_DEPTH);
    int jdepth = -2;
    int valid = fz_json_valid(data, size, &jdepth);
    FUZZ_CHECK(valid == 1, "accepted text that is not strict JSON (validator says %d)", valid);
    FUZZ_CHECK(jdepth == depth, "depth %d vs bracket count %d", jdepth, depth);
    walk(root, 1);
    struct dapi_jv *twin = NULL;
    r = dapi_jv_parse_numtext(text, size, MAX_DEPTH, &twin, err, sizeof err);
    FUZZ_CHECK(r == DAPI_OK, "dapi_jv_parse_numtext refused accepted text: %s", err);
    mirror(root, twin);
    dapi_jv_free(twin);
    dapi_jv_free(root);
    free(text);
    return 0;
}
