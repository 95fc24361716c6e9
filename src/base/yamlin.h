/* Reading YAML (the endpoints file, docs/endpoints.md): a thin layer over libyaml so that only
 * src/base/yamlin.c includes yaml.h. A document becomes a tree of maps, sequences and
 * scalars, each knowing the line it starts on (for messages that say where). Anchors and
 * aliases, tags and more than one document are refused: a definitions file needs none. */
#ifndef DAPI_YAMLIN_H
#define DAPI_YAMLIN_H

#include <stddef.h>
#include "dapi/err.h"

enum dapi_ykind { DAPI_Y_SCALAR, DAPI_Y_MAP, DAPI_Y_SEQ };

struct dapi_yv {
    enum dapi_ykind kind;
    int line;               /* 1-based */
    char *text;             /* SCALAR: its value (NUL-terminated; "" for an empty one) */
    int plain;              /* SCALAR: written without quotes (so `null`, `~` and `` mean null) */
    char **keys;            /* MAP: the keys, in document order */
    int *key_lines;         /* MAP: the line of each key */
    struct dapi_yv **items; /* MAP: the values (n, same order); SEQ: the elements */
    size_t n;
};

/* Parses the file at path. DAPI_OK with *root (free with dapi_yv_free), or an error with a
 * one-line reason in err that names the line: DAPI_ERR_IO (cannot read), DAPI_ERR_INVALID
 * (not YAML, or a feature refused above, or a map with a key that is not a scalar or
 * repeated). An empty file is an empty map. */
enum dapi_err dapi_yaml_load(const char *path, struct dapi_yv **root, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The same for text in memory (len bytes). */
enum dapi_err dapi_yaml_parse(const char *text, size_t len, struct dapi_yv **root, char *err,
                              size_t errlen) __attribute__((warn_unused_result));
void dapi_yv_free(struct dapi_yv *v);

/* A map's value for key, or NULL (absent, or v is not a map). */
const struct dapi_yv *dapi_yv_get(const struct dapi_yv *v, const char *key);
/* A plain scalar that is YAML's null (`null`, `Null`, `NULL`, `~` or empty)? */
int dapi_yv_is_null(const struct dapi_yv *v);

#endif
