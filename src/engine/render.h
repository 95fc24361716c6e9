/* Renders result rows as JSON (the type mapping of docs/api.md, "JSON values") straight from column vectors. */
#ifndef DAPI_RENDER_H
#define DAPI_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "engine/colvec.h"

/* Appends the value of row `row` of `col` (NULL -> null). */
enum dapi_err dapi_render_value(struct dapi_buf *out, const struct dapi_colvec *col, uint64_t row);

/* Appends the JSON object for row `row`: {"<keys[0]>":v0,...}. `keys[i]` is the pre-rendered
 * object key of column i including quotes and colon (e.g. "\"id\":"), built once per result
 * with dapi_render_key. */
enum dapi_err dapi_render_row(struct dapi_buf *out, const struct dapi_colvec *cols, size_t ncols,
                              const char *const *keys, const size_t *key_lens, uint64_t row);

/* Appends `"<name escaped>":` to out. */
enum dapi_err dapi_render_key(struct dapi_buf *out, const char *name, size_t len);

#endif
