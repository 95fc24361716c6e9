#include "base/jsonin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Nesting depth of a JSON text, counting brackets outside strings. Stops early once over
 * the limit, so a hostile body costs one linear pass at most. */
static int too_deep(const char *s, size_t n, int max)
{
    int depth = 0, in_str = 0;
    for(size_t i = 0; i < n; i++) {
        char c = s[i];
        if(in_str) {
            if(c == '\\')
                i++;
            else if(c == '"')
                in_str = 0;
        } else if(c == '"') {
            in_str = 1;
        } else if(c == '[' || c == '{') {
            if(++depth > max)
                return 1;
        } else if(c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

static enum dapi_err parse(const char *text, size_t len, int max_depth, size_t flags,
                           struct dapi_jv **root, char *err, size_t errlen)
{
    *root = NULL;
    /* A raw NUL byte is never valid JSON, but jansson 2.14 drops one that follows a number
     * or a literal ({"limit":5<NUL>} parses as {"limit":5}): refuse it here. */
    const char *nul = memchr(text, 0, len);
    if(nul) {
        if(err)
            snprintf(err, errlen, "NUL byte in the JSON text at offset %zu", (size_t)(nul - text));
        return DAPI_ERR_INVALID;
    }
    if(too_deep(text, len, max_depth)) {
        if(err)
            snprintf(err, errlen, "JSON nesting deeper than %d levels", max_depth);
        return DAPI_ERR_INVALID;
    }
    json_error_t je;
    /* NUL inside strings is accepted (as Python's json does); callers that need C strings
     * compare dapi_jv_str's length with strlen. */
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | flags, &je);
    if(!j) {
        if(err) {
            snprintf(err, errlen, "%s (line %d, column %d)", je.text, je.line, je.column);
            for(char *c = err; *c; c++) /* jansson quotes the input: keep it one line */
                if((unsigned char)*c < 0x20)
                    *c = ' ';
        }
        return DAPI_ERR_INVALID;
    }
    *root = (struct dapi_jv *)j;
    return DAPI_OK;
}

enum dapi_err dapi_jv_parse(const char *text, size_t len, int max_depth, struct dapi_jv **root,
                            char *err, size_t errlen)
{
    return parse(text, len, max_depth, 0, root, err, errlen);
}

enum dapi_err dapi_jv_parse_reals(const char *text, size_t len, int max_depth,
                                  struct dapi_jv **root, char *err, size_t errlen)
{
    return parse(text, len, max_depth, JSON_DECODE_INT_AS_REAL, root, err, errlen);
}

static int number_char(char c)
{
    return c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9');
}

/* An integer token (JSON's grammar: -?digits) beyond int64, which jansson refuses ("too big
 * integer"). Leading zeros are not JSON: such a token fails the parse either way. */
static int beyond_int64(const char *t, size_t n)
{
    int neg = n && t[0] == '-';
    t += neg;
    n -= (size_t)neg;
    if(!n)
        return 0;
    for(size_t i = 0; i < n; i++) /* (the token is not NUL-terminated: no strspn) */
        if(t[i] < '0' || t[i] > '9')
            return 0; /* not an integer token: a real, or no number at all */
    const char *limit = neg ? "9223372036854775808" : "9223372036854775807";
    return n > 19 || (n == 19 && memcmp(t, limit, 19) > 0);
}

enum rewrite {
    QUOTE, /* every number token becomes a string of its text */
    WIDE,  /* an integer token beyond int64 gets ".0": a real */
};

/* Rewrites the number tokens outside strings of text (len bytes) into a new buffer (*out,
 * *outlen; free it), or with out NULL only counts the tokens it would change (no memory).
 * A token is a run of JSON's number characters ('-', digits, '.', 'e', 'E', '+') starting at
 * '-' or a digit; within a string every character after a backslash is skipped, so an
 * escaped quote never ends it. Two more bytes per token at most, and a token takes at least
 * one byte plus a separator: at most twice the length, plus 2. Returns how many tokens were
 * (or would be) changed, or -1 without memory. */
static long rewrite_numbers(const char *text, size_t len, enum rewrite how, char **out,
                            size_t *outlen)
{
    char *q = NULL, *o = NULL;
    if(out) {
        *out = NULL;
        if(len > ((size_t)-1 - 2) / 2 || !(q = o = malloc(2 * len + 2)))
            return -1;
    }
#define PUT(c) (o ? (void)(*o++ = (c)) : (void)0)
    long changed = 0;
    int in_string = 0;
    for(size_t i = 0; i < len; i++) {
        char c = text[i];
        if(in_string) {
            PUT(c);
            if(c == '\\' && i + 1 < len)
                PUT(text[++i]);
            else if(c == '"')
                in_string = 0;
        } else if(c == '"') {
            PUT(c);
            in_string = 1;
        } else if(c == '-' || (c >= '0' && c <= '9')) {
            size_t at = i;
            while(i < len && number_char(text[i]))
                i++;
            size_t n = i - at;
            i--;
            int quote = how == QUOTE, widen = how == WIDE && beyond_int64(text + at, n);
            if(o) {
                if(quote)
                    *o++ = '"';
                memcpy(o, text + at, n);
                o += n;
                if(quote)
                    *o++ = '"';
                if(widen) {
                    *o++ = '.';
                    *o++ = '0';
                }
            }
            changed += quote || widen;
        } else {
            PUT(c);
        }
    }
#undef PUT
    if(out) {
        *out = q;
        *outlen = (size_t)(o - q);
    }
    return changed;
}

enum dapi_err dapi_jv_parse_numtext(const char *text, size_t len, int max_depth,
                                    struct dapi_jv **root, char *err, size_t errlen)
{
    *root = NULL;
    char *q;
    size_t n;
    if(rewrite_numbers(text, len, QUOTE, &q, &n) < 0)
        return DAPI_ERR_NOMEM;
    enum dapi_err e = parse(q, n, max_depth, 0, root, err, errlen);
    free(q);
    return e;
}

enum dapi_err dapi_jv_parse_wide(const char *text, size_t len, int max_depth,
                                 struct dapi_jv **root, char *err, size_t errlen)
{
    *root = NULL;
    char *q = NULL;
    size_t n = 0;
    /* Counted first, without a copy: most texts (every request body) have no such integer.
     * A text with a NUL byte is refused by the parse as it is, at the byte's own offset. */
    long changed = memchr(text, 0, len) ? 0 : rewrite_numbers(text, len, WIDE, NULL, NULL);
    if(changed > 0 && rewrite_numbers(text, len, WIDE, &q, &n) < 0)
        return DAPI_ERR_NOMEM;
    enum dapi_err e = changed ? parse(q, n, max_depth, 0, root, err, errlen)
                              : parse(text, len, max_depth, 0, root, err, errlen);
    free(q);
    return e;
}

const char *dapi_jv_numtext(const struct dapi_jv *x, size_t *len)
{
    size_t n;
    const char *s = dapi_jv_str(x, &n);
    if(!s || !n || strspn(s, "0123456789+-.eE") != n)
        return NULL;
    if(len)
        *len = n;
    return s;
}

void dapi_jv_free(struct dapi_jv *root)
{
    if(root)
        json_decref((json_t *)root);
}

enum dapi_jtype dapi_jv_type(const struct dapi_jv *v)
{
    if(!v)
        return DAPI_J_NULL; /* an absent member reads as null: lookups can be chained */
    switch(json_typeof((const json_t *)v)) {
    case JSON_OBJECT: return DAPI_J_OBJECT;
    case JSON_ARRAY: return DAPI_J_ARRAY;
    case JSON_STRING: return DAPI_J_STRING;
    case JSON_INTEGER: return DAPI_J_INT;
    case JSON_REAL: return DAPI_J_REAL;
    case JSON_TRUE: return DAPI_J_TRUE;
    case JSON_FALSE: return DAPI_J_FALSE;
    default: return DAPI_J_NULL;
    }
}

int dapi_jv_truthy(const struct dapi_jv *v)
{
    const json_t *j = (const json_t *)v;
    switch(json_typeof(j)) {
    case JSON_OBJECT: return json_object_size(j) > 0;
    case JSON_ARRAY: return json_array_size(j) > 0;
    case JSON_STRING: return json_string_length(j) > 0;
    case JSON_INTEGER: return json_integer_value(j) != 0;
    case JSON_REAL: return json_real_value(j) != 0.0;
    case JSON_TRUE: return 1;
    default: return 0;
    }
}

struct dapi_jv *dapi_jv_get(const struct dapi_jv *v, const char *key)
{
    const json_t *j = (const json_t *)v;
    if(!json_is_object(j))
        return NULL;
    return (struct dapi_jv *)json_object_get(j, key);
}

const char *dapi_jv_str(const struct dapi_jv *v, size_t *len)
{
    const json_t *j = (const json_t *)v;
    if(!json_is_string(j))
        return NULL;
    if(len)
        *len = json_string_length(j);
    return json_string_value(j);
}

int64_t dapi_jv_int(const struct dapi_jv *v)
{
    return (int64_t)json_integer_value((const json_t *)v);
}

double dapi_jv_real(const struct dapi_jv *v)
{
    return json_real_value((const json_t *)v);
}

struct dapi_jv *dapi_jv_index(const struct dapi_jv *v, size_t i)
{
    const json_t *j = (const json_t *)v;
    if(!json_is_array(j))
        return NULL;
    return (struct dapi_jv *)json_array_get(j, i);
}

size_t dapi_jv_array_size(const struct dapi_jv *v)
{
    const json_t *j = (const json_t *)v;
    return json_is_array(j) ? json_array_size(j) : 0;
}

void *dapi_jv_iter(const struct dapi_jv *v)
{
    const json_t *j = (const json_t *)v;
    return json_is_object(j) ? json_object_iter((json_t *)j) : NULL;
}

void *dapi_jv_iter_next(const struct dapi_jv *v, void *it)
{
    return json_object_iter_next((json_t *)v, it);
}

const char *dapi_jv_iter_key(void *it)
{
    return json_object_iter_key(it);
}

struct dapi_jv *dapi_jv_iter_value(void *it)
{
    return (struct dapi_jv *)json_object_iter_value(it);
}
