/* Private to src/client: what client.c needs from page.c beyond include/dapi/client.h. */
#ifndef DAPI_CLIENT_PAGE_H
#define DAPI_CLIENT_PAGE_H

#include <stddef.h>
#include "dapi/client.h"

/* dapi_page_parse without the copy: takes body (malloc'd, NUL-terminated after len bytes),
 * which the page frees; freed here at once on failure. */
enum dapi_err dapi_page_parse_owned(char *body, size_t len, struct dapi_page **page, char *err,
                                    size_t errlen);
/* The page's "query_slug" as a raw JSON string literal (borrowed), or NULL if absent. */
const char *dapi_page_slug(const struct dapi_page *page, size_t *len);
/* 1 if the page stated a "page" member (an integer), else 0. */
int dapi_page_has_number(const struct dapi_page *page);

#endif
