/* For dapi's own callers of the client library (cli/, the tests), which build their text in
 * a struct dapi_buf: dapi_client_unquote (include/dapi/client.h) appending to a buffer. Not
 * part of the installed library's API. */
#ifndef DAPI_CLIENT_UNQUOTE_H
#define DAPI_CLIENT_UNQUOTE_H

#include <stddef.h>
#include "base/buf.h"
#include "dapi/client.h"

/* Appends the decoded text of lit to out. Returns DAPI_ERR_INVALID as dapi_client_unquote
 * does, or out's error. */
enum dapi_err dapi_client_unquote_buf(const char *lit, size_t len, struct dapi_buf *out);

#endif
