/* `dapi layers` and `dapi describe LAYER.TABLE`: schema discovery on a dapi server
 * (GET /api/layers, GET /api/layers/{layer}/tables/{table}), printed as aligned text or as
 * the server's JSON. Exit codes as `dapi query` (docs/cli.md). */
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/jsonin.h"
#include "dapi/client.h"

enum { O_URL, O_KEY, O_FORMAT, O_TIMEOUT, O_VERSION, O_HELP, O__COUNT };

static const struct dapi_cli_opt opts[O__COUNT] = {
    [O_URL] = {"url", 0, "URL", "DAPI_URL", "http://localhost:5001", "the dapi server"},
    [O_KEY] = {"api-key", 0, "KEY", "DAPI_API_KEY", NULL,
               "API key sent as x-api-key (prefer the env var: flags show in ps)"},
    [O_FORMAT] = {"format", 'f', "FMT", NULL, "text",
                  "text (aligned columns) or json (the "
                  "server's answer)"},
    [O_TIMEOUT] = {"timeout", 0, "SECONDS", NULL, "60", "limit for one HTTP call (1-3600)"},
    [O_VERSION] = {"version", 'V', NULL, NULL, NULL, "print the version and exit"},
    [O_HELP] = {"help", 'h', NULL, NULL, NULL, "this help"},
};

void dapi_cli_layers_usage(FILE *out)
{
    fprintf(out, "Usage: dapi layers [options]\n\n"
                 "Lists the layers and tables of a dapi server's lake that the API key may read\n"
                 "(GET /api/layers), sorted: layer, table, kind, files, bytes, last modified.\n\n"
                 "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
}

void dapi_cli_describe_usage(FILE *out)
{
    fprintf(out,
            "Usage: dapi describe [options] LAYER.TABLE | \"LAYER\".\"TABLE\" | LAYER TABLE\n\n"
            "Describes one table (GET /api/layers/{layer}/tables/{table}): its columns with\n"
            "their DuckDB types and the JSON type results give them, its kind, row count\n"
            "(exact for Parquet, else estimated), files, bytes and last modification.\n"
            "LAYER.TABLE splits at the first '.'; quote a name holding one as in SQL\n"
            "(\"a.b\".\"t\", '\"' doubled) or give the two names as two arguments.\n\n"
            "Options:\n");
    dapi_cli_usage(out, opts, O__COUNT);
}

/* ---- printing ----------------------------------------------------------------------- */

/* A JSON string as one line of text (control characters as '?'), owned. */
static char *text(const struct dapi_jv *v)
{
    size_t n = 0;
    const char *s = dapi_jv_str(v, &n);
    char *out = malloc(n + 1);
    if(!out)
        return NULL;
    for(size_t i = 0; i < n; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[n] = '\0';
    return out;
}

/* Rows of cells printed as aligned columns (the last one unpadded). */
struct grid {
    char **cells;
    size_t n, cols;
};

static int grid_add(struct grid *g, char *cell)
{
    char **nc = cell ? realloc(g->cells, (g->n + 1) * sizeof *nc) : NULL;
    if(!nc) {
        free(cell);
        return -1;
    }
    g->cells = nc;
    g->cells[g->n++] = cell;
    return 0;
}

static int grid_addf(struct grid *g, const char *fmt, long long v)
{
    char b[32];
    snprintf(b, sizeof b, fmt, v);
    return grid_add(g, strdup(b));
}

static void grid_print(const struct grid *g)
{
    size_t w[8] = {0};
    for(size_t i = 0; i < g->n; i++) {
        size_t l = strlen(g->cells[i]);
        if(l > w[i % g->cols])
            w[i % g->cols] = l;
    }
    for(size_t i = 0; i < g->n; i++) {
        if(i % g->cols == g->cols - 1)
            printf("%s\n", g->cells[i]);
        else
            printf("%-*s  ", (int)w[i % g->cols], g->cells[i]);
    }
}

static void grid_free(struct grid *g)
{
    for(size_t i = 0; i < g->n; i++)
        free(g->cells[i]);
    free(g->cells);
}

static int print_layers(const struct dapi_jv *root)
{
    struct grid g = {NULL, 0, 6};
    int bad = 0;
    const char *head[] = {"LAYER", "TABLE", "KIND", "FILES", "BYTES", "MODIFIED"};
    for(size_t i = 0; i < 6 && !bad; i++)
        bad = grid_add(&g, strdup(head[i]));
    const struct dapi_jv *layers = dapi_jv_get(root, "layers");
    for(size_t i = 0; !bad && i < dapi_jv_array_size(layers); i++) {
        const struct dapi_jv *l = dapi_jv_index(layers, i), *ts = dapi_jv_get(l, "tables");
        for(size_t j = 0; !bad && j < dapi_jv_array_size(ts); j++) {
            const struct dapi_jv *t = dapi_jv_index(ts, j);
            bad = grid_add(&g, text(dapi_jv_get(l, "name"))) ||
                  grid_add(&g, text(dapi_jv_get(t, "name"))) ||
                  grid_add(&g, text(dapi_jv_get(t, "kind"))) ||
                  grid_addf(&g, "%lld", (long long)dapi_jv_int(dapi_jv_get(t, "files"))) ||
                  grid_addf(&g, "%lld", (long long)dapi_jv_int(dapi_jv_get(t, "bytes"))) ||
                  grid_add(&g, text(dapi_jv_get(t, "last_modified")));
        }
    }
    if(!bad)
        grid_print(&g);
    grid_free(&g);
    return bad ? DAPI_EXIT_OTHER : DAPI_EXIT_OK;
}

static int print_table(const struct dapi_jv *root)
{
    char *layer = text(dapi_jv_get(root, "layer")), *name = text(dapi_jv_get(root, "name")),
         *kind = text(dapi_jv_get(root, "kind")), *mod = text(dapi_jv_get(root, "last_modified"));
    int bad = !layer || !name || !kind || !mod;
    const struct dapi_jv *rows = dapi_jv_get(root, "row_count");
    long long files = (long long)dapi_jv_int(dapi_jv_get(root, "files"));
    if(!bad) {
        printf("table:    %s.%s\n", layer, name);
        if(dapi_jv_truthy(dapi_jv_get(root, "folder")))
            printf("kind:     %s (a folder of %lld files)\n", kind, files);
        else
            printf("kind:     %s (%lld file)\n", kind, files);
        if(dapi_jv_type(rows) == DAPI_J_INT)
            printf(dapi_jv_truthy(dapi_jv_get(root, "row_count_exact"))
                       ? "rows:     %lld (exact)\n"
                       : "rows:     ~%lld "
                         "(estimated)\n",
                   (long long)dapi_jv_int(rows));
        else
            printf("rows:     unknown\n");
        printf("bytes:    %lld\nmodified: %s\n\n",
               (long long)dapi_jv_int(dapi_jv_get(root, "bytes")), mod);
    }
    struct grid g = {NULL, 0, 3};
    const char *head[] = {"COLUMN", "TYPE", "JSON"};
    for(size_t i = 0; i < 3 && !bad; i++)
        bad = grid_add(&g, strdup(head[i]));
    const struct dapi_jv *cols = dapi_jv_get(root, "columns");
    for(size_t i = 0; !bad && i < dapi_jv_array_size(cols); i++) {
        const struct dapi_jv *c = dapi_jv_index(cols, i);
        bad = grid_add(&g, text(dapi_jv_get(c, "name"))) ||
              grid_add(&g, text(dapi_jv_get(c, "type"))) ||
              grid_add(&g, text(dapi_jv_get(c, "json_type")));
    }
    if(!bad)
        grid_print(&g);
    grid_free(&g);
    free(layer);
    free(name);
    free(kind);
    free(mod);
    return bad ? DAPI_EXIT_OTHER : DAPI_EXIT_OK;
}

/* ---- LAYER.TABLE -------------------------------------------------------------------- */

/* One name at *p: "quoted" ("" for ") up to its closing quote, else up to stop (or the
 * end). Returns it owned and moves *p past it; NULL if a quote is not closed. */
static char *one_name(const char **p, char stop)
{
    const char *s = *p;
    struct dapi_buf b;
    dapi_buf_init(&b, 64 * 1024);
    if(*s == '"') {
        for(s++;; s++) {
            if(!*s) {
                dapi_buf_free(&b);
                return NULL;
            }
            if(*s == '"' && s[1] == '"')
                dapi_buf_addc(&b, *s++);
            else if(*s == '"')
                break;
            else
                dapi_buf_addc(&b, *s);
        }
        s++;
    } else {
        while(*s && *s != stop)
            dapi_buf_addc(&b, *s++);
    }
    *p = s;
    return dapi_buf_take(&b, NULL);
}

int dapi_cli_split_table(const char *arg, char **layer, char **table)
{
    const char *p = arg;
    *layer = *table = NULL;
    if(!(*layer = one_name(&p, '.')) || *p != '.' || !**layer)
        goto bad;
    p++;
    if(!(*table = one_name(&p, '\0')) || *p || !**table)
        goto bad;
    return 0;
bad:
    free(*layer);
    free(*table);
    *layer = *table = NULL;
    return -1;
}

/* ---- the commands ------------------------------------------------------------------- */

static int exit_for(const struct dapi_client_err *e)
{
    switch(e->kind) {
    case DAPI_CLIENT_AUTH: return DAPI_EXIT_AUTH;
    case DAPI_CLIENT_QUERY: return DAPI_EXIT_QUERY;
    case DAPI_CLIENT_NETWORK: return DAPI_EXIT_NETWORK;
    default: return DAPI_EXIT_OTHER;
    }
}

/* Parses the options; on return <= 0 the command goes on (json set), else it is the exit. */
static int setup(const char *cmd, int argc, char **argv, const char **v, const char **pos,
                 int *npos, struct dapi_client **c, int *json)
{
    long long timeout = 60;
    struct dapi_client_err err;
    if(dapi_cli_parse(cmd, opts, O__COUNT, argc, argv, v, pos, npos))
        return DAPI_EXIT_USAGE;
    if(v[O_HELP]) {
        if(strcmp(cmd, "layers") == 0)
            dapi_cli_layers_usage(stdout);
        else
            dapi_cli_describe_usage(stdout);
        return DAPI_EXIT_OK + 100; /* done, exit 0 */
    }
    if(v[O_VERSION]) {
        dapi_cli_version(stdout);
        return DAPI_EXIT_OK + 100;
    }
    if(v[O_TIMEOUT] && dapi_cli_int(v[O_TIMEOUT], 1, 3600, &timeout)) {
        fprintf(stderr, "dapi %s: --timeout must be a number of seconds from 1 to 3600\n", cmd);
        return DAPI_EXIT_USAGE;
    }
    *json = v[O_FORMAT] && strcmp(v[O_FORMAT], "json") == 0;
    if(v[O_FORMAT] && !*json && strcmp(v[O_FORMAT], "text") != 0) {
        fprintf(stderr, "dapi %s: --format must be text or json\n", cmd);
        return DAPI_EXIT_USAGE;
    }
    if(!v[O_KEY] || !*v[O_KEY]) {
        fprintf(stderr, "dapi %s: no API key: set DAPI_API_KEY or pass --api-key\n", cmd);
        return DAPI_EXIT_AUTH;
    }
    struct dapi_client_config cfg = {
        .url = v[O_URL] ? v[O_URL] : "http://localhost:5001",
        .api_key = v[O_KEY],
        .timeout_ms = (long)timeout * 1000,
        .max_page_bytes = 256u << 20,
    };
    if(dapi_client_new(c, &cfg, &err)) {
        fprintf(stderr, "dapi %s: %s\n", cmd, err.message);
        return DAPI_EXIT_USAGE;
    }
    return 0;
}

/* Prints the answer (json: as sent) or the error; returns the exit code. */
static int finish(const char *cmd, enum dapi_err result, const struct dapi_client_err *err,
                  const char *body, size_t len, int json, int (*print)(const struct dapi_jv *))
{
    if(result) {
        char status[32] = "";
        if(err->status)
            snprintf(status, sizeof status, " (HTTP %d)", err->status);
        fprintf(stderr, "dapi %s: %s%s%s%s\n", cmd, err->message, err->details[0] ? ": " : "",
                err->details, status);
        return exit_for(err);
    }
    if(json) {
        fwrite(body, 1, len, stdout);
        putchar('\n');
        return fflush(stdout) ? DAPI_EXIT_OTHER : DAPI_EXIT_OK;
    }
    struct dapi_jv *root = NULL;
    if(dapi_jv_parse(body, len, 64, &root, NULL, 0)) {
        fprintf(stderr, "dapi %s: the server's answer is not JSON\n", cmd);
        return DAPI_EXIT_OTHER;
    }
    int rc = print(root);
    dapi_jv_free(root);
    return fflush(stdout) ? DAPI_EXIT_OTHER : rc;
}

int dapi_cli_layers(int argc, char **argv)
{
    const char *v[O__COUNT];
    struct dapi_client *c = NULL;
    struct dapi_client_err err;
    int json = 0;
    int rc = setup("layers", argc, argv, v, NULL, NULL, &c, &json);
    if(rc)
        return rc >= 100 ? rc - 100 : rc;
    char *body = NULL;
    size_t len = 0;
    enum dapi_err result = dapi_client_layers(c, &body, &len, &err);
    rc = finish("layers", result, &err, body, len, json, print_layers);
    free(body);
    dapi_client_free(c);
    return rc;
}

int dapi_cli_describe(int argc, char **argv)
{
    const char *v[O__COUNT];
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    struct dapi_client *c = NULL;
    struct dapi_client_err err;
    char *layer = NULL, *table = NULL, *body = NULL;
    size_t len = 0;
    int json = 0, npos = 0, rc;
    if(!pos)
        return DAPI_EXIT_OTHER;
    if((rc = setup("describe", argc, argv, v, pos, &npos, &c, &json))) {
        rc = rc >= 100 ? rc - 100 : rc;
        goto out;
    }
    if(npos == 2 && *pos[0] && *pos[1]) {
        layer = strdup(pos[0]);
        table = strdup(pos[1]);
    } else if(npos != 1 || dapi_cli_split_table(pos[0], &layer, &table)) {
        fprintf(stderr, "dapi describe: give the table as LAYER.TABLE, \"LAYER\".\"TABLE\" or "
                        "LAYER TABLE (see dapi describe --help)\n");
        rc = DAPI_EXIT_USAGE;
        goto out;
    }
    if(!layer || !table) {
        rc = DAPI_EXIT_OTHER;
        goto out;
    }
    enum dapi_err result = dapi_client_describe(c, layer, table, &body, &len, &err);
    rc = finish("describe", result, &err, body, len, json, print_table);
out:
    free(layer);
    free(table);
    free(body);
    free(pos);
    dapi_client_free(c);
    return rc;
}
