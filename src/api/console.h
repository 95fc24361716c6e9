/* The web console's files (console/ in the repository), embedded at build time by
 * scripts/embed-console.py into $(B)/gen/console.c. */
#ifndef DAPI_API_CONSOLE_H
#define DAPI_API_CONSOLE_H

#include <stddef.h>

struct dapi_console_file {
    const char *name; /* "index.html", "console.js" ... */
    const char *type; /* its Content-Type */
    const char *etag; /* quoted: "\"3fa0...\"" */
    const char *data; /* len bytes, then a NUL */
    size_t len;
};

extern const struct dapi_console_file dapi_console_files[];
extern const size_t dapi_console_files_n;

/* The embedded file called name, or NULL. */
const struct dapi_console_file *dapi_console_find(const char *name);
/* Does an If-None-Match value (a list of tags, W/ ones too, or "*") name etag? */
int dapi_console_etag_matches(const char *if_none_match, const char *etag);

#endif
