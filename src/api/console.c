/* GET / and GET /console/{file}: the web console (docs/console.md), a page with its own
 * stylesheet and script, embedded at build time from console/ (api/console.h). No key is
 * needed to load it: the page holds no data; it asks the user for a key and sends it with
 * each API call it makes. Every answer carries a strict Content-Security-Policy (the page's
 * own script and style only, requests to this origin only, no framing). */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/console.h"
#include "api/respond.h"

/* No 'unsafe-inline' or 'unsafe-eval': the page has no inline script or style. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

const struct dapi_console_file *dapi_console_find(const char *name)
{
    for(size_t i = 0; i < dapi_console_files_n; i++)
        if(strcmp(dapi_console_files[i].name, name) == 0)
            return &dapi_console_files[i];
    return NULL;
}

int dapi_console_etag_matches(const char *inm, const char *etag)
{
    size_t n = strlen(etag);
    for(const char *p = inm; p && *p;) {
        while(*p == ' ' || *p == ',')
            p++;
        if(*p == '*')
            return 1;
        if(strncmp(p, "W/", 2) == 0)
            p += 2;
        if(strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
            return 1;
        p = strchr(p, ',');
    }
    return 0;
}

static void send_file(struct dapi_req *r, const struct dapi_console_file *f)
{
    dapi_req_add_static_header(r, "Content-Security-Policy", csp);
    dapi_req_add_static_header(r, "X-Content-Type-Options", "nosniff");
    dapi_req_add_static_header(r, "Referrer-Policy", "no-referrer");
    /* revalidated on each load (cheap: a 304), so a new binary's console is used at once */
    dapi_req_add_static_header(r, "Cache-Control", "no-cache");
    dapi_req_add_static_header(r, "ETag", f->etag);
    const char *inm = dapi_req_header(r, "If-None-Match");
    if(inm && dapi_console_etag_matches(inm, f->etag)) {
        dapi_req_respond(r, 304, NULL, 0, NULL, NULL);
        return;
    }
    char *copy = malloc(f->len + 1); /* the server frees what it sends */
    if(!copy) {
        dapi_respond_err(r, DAPI_ERR_NOMEM, NULL);
        return;
    }
    memcpy(copy, f->data, f->len + 1);
    dapi_req_set_content_type(r, f->type);
    dapi_req_respond(r, 200, copy, f->len, NULL, NULL);
}

void dapi_api_console_page(struct dapi_req *r, struct dapi_app *app, const char *unused)
{
    const struct dapi_console_file *f = dapi_console_find("index.html");
    if(!f) {
        dapi_respond_error(r, 404, "Not found", NULL);
        return;
    }
    send_file(r, f);
}

void dapi_api_console_file(struct dapi_req *r, struct dapi_app *app, const char *name)
{
    const struct dapi_console_file *f = name ? dapi_console_find(name) : NULL;
    if(!f) {
        dapi_respond_error(r, 404, "No such console file",
                           "the console's files are index.html, console.css and console.js");
        return;
    }
    send_file(r, f);
}
