/* YAML into a small tree (yamlin.h), with libyaml's event parser: the only file that
 * includes yaml.h. */
#include "base/yamlin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/buf.h"

#define MAX_DEPTH 64

struct ctx {
    yaml_parser_t p;
    char *err;
    size_t errlen;
    enum dapi_err result;
};

static void fail(struct ctx *c, enum dapi_err e, int line, const char *what)
{
    if(c->result)
        return;
    c->result = e;
    snprintf(c->err, c->errlen, "line %d: %s", line, what);
}

static int next(struct ctx *c, yaml_event_t *ev)
{
    if(!yaml_parser_parse(&c->p, ev)) {
        char what[512];
        snprintf(what, sizeof what, "not valid YAML: %s%s%s",
                 c->p.problem ? c->p.problem : "syntax error", c->p.context ? " " : "",
                 c->p.context ? c->p.context : "");
        fail(c, DAPI_ERR_INVALID, (int)c->p.problem_mark.line + 1, what);
        return -1;
    }
    return 0;
}

static struct dapi_yv *node(struct ctx *c, yaml_event_t *ev, int depth);

/* The content of a map or sequence up to its end event. */
static int children(struct ctx *c, struct dapi_yv *v, int depth)
{
    for(;;) {
        yaml_event_t ev;
        if(next(c, &ev))
            return -1;
        if(ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        char *key = NULL;
        int line = (int)ev.start_mark.line + 1;
        if(v->kind == DAPI_Y_MAP) {
            if(ev.type != YAML_SCALAR_EVENT) {
                yaml_event_delete(&ev);
                fail(c, DAPI_ERR_INVALID, line, "a map key must be a plain value");
                return -1;
            }
            key = strdup((const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
            for(size_t i = 0; key && i < v->n; i++)
                if(strcmp(v->keys[i], key) == 0) {
                    char what[300];
                    snprintf(what, sizeof what, "'%.200s' is given twice", key);
                    free(key);
                    fail(c, DAPI_ERR_INVALID, line, what);
                    return -1;
                }
            if(!key || next(c, &ev)) {
                free(key);
                if(!key)
                    fail(c, DAPI_ERR_NOMEM, line, "out of memory");
                return -1;
            }
        }
        struct dapi_yv *child = node(c, &ev, depth + 1);
        yaml_event_delete(&ev);
        struct dapi_yv **items = child ? realloc(v->items, (v->n + 1) * sizeof *items) : NULL;
        char **keys = items && key ? realloc(v->keys, (v->n + 1) * sizeof *keys) : NULL;
        int *lines = keys ? realloc(v->key_lines, (v->n + 1) * sizeof *lines) : NULL;
        if(items)
            v->items = items;
        if(keys)
            v->keys = keys;
        if(lines)
            v->key_lines = lines;
        if(!items || (key && (!keys || !lines))) {
            free(key);
            dapi_yv_free(child);
            if(child)
                fail(c, DAPI_ERR_NOMEM, 0, "out of memory");
            return -1;
        }
        v->items[v->n] = child;
        if(key) {
            v->keys[v->n] = key;
            v->key_lines[v->n] = line;
        }
        v->n++;
    }
}

/* The node that starts with ev (consumed by the caller). */
static struct dapi_yv *node(struct ctx *c, yaml_event_t *ev, int depth)
{
    int line = (int)ev->start_mark.line + 1;
    if(depth > MAX_DEPTH) {
        fail(c, DAPI_ERR_INVALID, line, "nested too deeply");
        return NULL;
    }
    if(ev->type == YAML_ALIAS_EVENT) {
        fail(c, DAPI_ERR_INVALID, line, "aliases (*name) are not supported");
        return NULL;
    }
    struct dapi_yv *v = calloc(1, sizeof *v);
    if(!v) {
        fail(c, DAPI_ERR_NOMEM, line, "out of memory");
        return NULL;
    }
    v->line = line;
    switch(ev->type) {
    case YAML_SCALAR_EVENT:
        v->kind = DAPI_Y_SCALAR;
        v->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if(!(v->text = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length)))
            fail(c, DAPI_ERR_NOMEM, line, "out of memory");
        else if(strlen(v->text) != ev->data.scalar.length)
            fail(c, DAPI_ERR_INVALID, line, "a value holds a NUL character");
        break;
    case YAML_MAPPING_START_EVENT:
        v->kind = DAPI_Y_MAP;
        children(c, v, depth);
        break;
    case YAML_SEQUENCE_START_EVENT:
        v->kind = DAPI_Y_SEQ;
        children(c, v, depth);
        break;
    default: fail(c, DAPI_ERR_INVALID, line, "unexpected YAML content"); break;
    }
    if(c->result) {
        dapi_yv_free(v);
        return NULL;
    }
    return v;
}

enum dapi_err dapi_yaml_parse(const char *text, size_t len, struct dapi_yv **root, char *err,
                              size_t errlen)
{
    struct ctx c = {.err = err, .errlen = errlen};
    yaml_event_t ev;
    *root = NULL;
    if(!yaml_parser_initialize(&c.p)) {
        snprintf(err, errlen, "out of memory");
        return DAPI_ERR_NOMEM;
    }
    yaml_parser_set_input_string(&c.p, (const unsigned char *)text, len);
    int docs = 0;
    while(!c.result && !next(&c, &ev)) {
        yaml_event_type_t t = ev.type;
        int line = (int)ev.start_mark.line + 1;
        if(t == YAML_DOCUMENT_START_EVENT && ++docs > 1)
            fail(&c, DAPI_ERR_INVALID, line, "only one YAML document is allowed");
        else if(t == YAML_SCALAR_EVENT || t == YAML_MAPPING_START_EVENT ||
                t == YAML_SEQUENCE_START_EVENT || t == YAML_ALIAS_EVENT)
            *root = node(&c, &ev, 0);
        yaml_event_delete(&ev);
        if(t == YAML_STREAM_END_EVENT)
            break;
    }
    yaml_parser_delete(&c.p);
    if(!c.result && !*root) { /* an empty file: an empty map */
        if(!(*root = calloc(1, sizeof **root))) {
            snprintf(err, errlen, "out of memory");
            return DAPI_ERR_NOMEM;
        }
        (*root)->kind = DAPI_Y_MAP;
        (*root)->line = 1;
    }
    if(c.result) {
        dapi_yv_free(*root);
        *root = NULL;
    }
    return c.result;
}

enum dapi_err dapi_yaml_load(const char *path, struct dapi_yv **root, char *err, size_t errlen)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 16u << 20);
    *root = NULL;
    if(dapi_buf_add_file(&b, path) || !b.data) {
        dapi_buf_free(&b);
        snprintf(err, errlen, "cannot read it (missing, unreadable or over 16 MiB)");
        return DAPI_ERR_IO;
    }
    enum dapi_err result = dapi_yaml_parse(b.data, b.len, root, err, errlen);
    dapi_buf_free(&b);
    return result;
}

void dapi_yv_free(struct dapi_yv *v)
{
    if(!v)
        return;
    for(size_t i = 0; i < v->n; i++) {
        dapi_yv_free(v->items[i]);
        if(v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lines);
    free(v->text);
    free(v);
}

const struct dapi_yv *dapi_yv_get(const struct dapi_yv *v, const char *key)
{
    if(!v || v->kind != DAPI_Y_MAP)
        return NULL;
    for(size_t i = 0; i < v->n; i++)
        if(strcmp(v->keys[i], key) == 0)
            return v->items[i];
    return NULL;
}

int dapi_yv_is_null(const struct dapi_yv *v)
{
    if(!v || v->kind != DAPI_Y_SCALAR || !v->plain)
        return 0;
    const char *t = v->text;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
           !strcmp(t, "NULL");
}
