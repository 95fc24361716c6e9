/* Reading JSON (request bodies, stored metadata): a thin layer over jansson so that only
 * src/base/jsonin.c includes jansson.h. Values are borrowed from their document. */
#ifndef DAPI_JSONIN_H
#define DAPI_JSONIN_H

#include <stddef.h>
#include <stdint.h>
#include "dapi/err.h"

struct dapi_jv; /* a JSON value inside a document */

enum dapi_jtype {
    DAPI_J_OBJECT,
    DAPI_J_ARRAY,
    DAPI_J_STRING,
    DAPI_J_INT,
    DAPI_J_REAL,
    DAPI_J_TRUE,
    DAPI_J_FALSE,
    DAPI_J_NULL
};

/* Parses text (len bytes, need not be NUL-terminated). Nesting deeper than max_depth is
 * refused before parsing (DAPI_ERR_INVALID, err says so). On success *root is the document
 * root: free with dapi_jv_free(root). err (if non-NULL) receives a one-line reason. */
enum dapi_err dapi_jv_parse(const char *text, size_t len, int max_depth, struct dapi_jv **root,
                            char *err, size_t errlen) __attribute__((warn_unused_result));
/* The same, reading every number as a double (DAPI_J_REAL), so integers beyond int64 (such
 * as DuckDB's UINT64_MAX "no location" markers) do not fail the parse. */
enum dapi_err dapi_jv_parse_reals(const char *text, size_t len, int max_depth,
                                  struct dapi_jv **root, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The same text with every number read as a string of its exact text (12.50 as "12.50"):
 * parsed beside the ordinary document, it gives the digits a double would lose, at the same
 * place (the same members and elements, duplicate names resolved the same way). Meant for
 * text that dapi_jv_parse accepts. */
enum dapi_err dapi_jv_parse_numtext(const char *text, size_t len, int max_depth,
                                    struct dapi_jv **root, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* dapi_jv_parse, but an integer beyond int64 (which jansson refuses) is read as a real: with
 * a dapi_jv_parse_numtext twin, its digits are still known (HUGEINT, UBIGINT parameters). */
enum dapi_err dapi_jv_parse_wide(const char *text, size_t len, int max_depth,
                                 struct dapi_jv **root, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* In such a twin, the text of a number (len bytes) when x is one: a string of JSON's number
 * characters only; NULL for anything else (or NULL). */
const char *dapi_jv_numtext(const struct dapi_jv *x, size_t *len);
void dapi_jv_free(struct dapi_jv *root);

/* DAPI_J_NULL for v == NULL too, so lookups can be chained. */
enum dapi_jtype dapi_jv_type(const struct dapi_jv *v);
/* Python truthiness: {} [] "" 0 0.0 null false are falsy. */
int dapi_jv_truthy(const struct dapi_jv *v);
/* Object member or NULL (absent or v not an object). A member that is JSON null is returned
 * as a value of type DAPI_J_NULL, so presence can be told from absence. */
struct dapi_jv *dapi_jv_get(const struct dapi_jv *v, const char *key);
/* Array element i, or NULL (out of range or v not an array). */
struct dapi_jv *dapi_jv_index(const struct dapi_jv *v, size_t i);
size_t dapi_jv_array_size(const struct dapi_jv *v);
/* String bytes (borrowed, NUL-terminated; may hold NULs: compare len) or NULL. */
const char *dapi_jv_str(const struct dapi_jv *v, size_t *len);
int64_t dapi_jv_int(const struct dapi_jv *v);
/* Members of an object, in document order: for(it = dapi_jv_iter(v); it;
 * it = dapi_jv_iter_next(v, it)) … dapi_jv_iter_key(it), dapi_jv_iter_value(it).
 * dapi_jv_iter returns NULL for an empty object or a value that is not an object. */
void *dapi_jv_iter(const struct dapi_jv *v);
void *dapi_jv_iter_next(const struct dapi_jv *v, void *it);
const char *dapi_jv_iter_key(void *it);
struct dapi_jv *dapi_jv_iter_value(void *it);
double dapi_jv_real(const struct dapi_jv *v);

#endif
