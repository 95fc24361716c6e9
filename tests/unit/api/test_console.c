/* The web console's embedded files (scripts/embed-console.py) and If-None-Match matching. */
#include <string.h>

#include "api/console.h"
#include "t.h"

int main(void)
{
    static const char *const files[][2] = {{"index.html", "text/html; charset=utf-8"},
                                           {"console.css", "text/css; charset=utf-8"},
                                           {"console.js", "text/javascript; charset=utf-8"}};
    T_EQ_INT((int)dapi_console_files_n, 3);
    for(size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const struct dapi_console_file *f = dapi_console_find(files[i][0]);
        T_CHECK(f != NULL, "%s is embedded", files[i][0]);
        if(!f)
            continue;
        T_EQ_STR(f->type, files[i][1]);
        T_CHECK(f->len > 100 && f->data[f->len] == '\0', "%s: its bytes, then a NUL", f->name);
        T_CHECK(strlen(f->data) == f->len, "%s: no NUL inside", f->name);
        T_CHECK(strlen(f->etag) == 22 && f->etag[0] == '"' && f->etag[21] == '"',
                "%s: a quoted tag (%s)", f->name, f->etag);
    }
    T_CHECK(dapi_console_find("nope.js") == NULL, "an unknown name");
    T_CHECK(dapi_console_find("") == NULL, "an empty name");
    T_CHECK(dapi_console_find("INDEX.HTML") == NULL, "names are exact");

    const char *tag = "\"0123456789abcdef0123\"";
    const char *yes[] = {"\"0123456789abcdef0123\"", "W/\"0123456789abcdef0123\"", "*",
                         "\"x\", \"0123456789abcdef0123\"",
                         "\"x\",\"0123456789abcdef0123\" , \"y\""};
    const char *no[] = {"", "\"0123456789abcdef012\"", "\"0123456789abcdef01234\"",
                        "0123456789abcdef0123", "\"x\", \"y\""};
    for(size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        T_CHECK(dapi_console_etag_matches(yes[i], tag), "%s matches", yes[i]);
    for(size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        T_CHECK(!dapi_console_etag_matches(no[i], tag), "%s does not match", no[i]);
    T_DONE();
}
