/* The path of GET /api/layers/{layer}/tables/{table} (already percent-decoded): split at the
 * first '/' after the layer; any other shape is no such route. */
#include <string.h>

#include "api/api.h"
#include "t.h"

static void ok(const char *path, const char *layer, const char *table)
{
    char l[64], t[64];
    T_EQ_INT(dapi_api_split_table_path(path, l, t, sizeof l), 0);
    T_EQ_STR(l, layer);
    T_EQ_STR(t, table);
}

static void bad(const char *path)
{
    char l[16], t[16];
    T_CHECK(dapi_api_split_table_path(path, l, t, sizeof l) != 0, "refused: %s", path);
}

int main(void)
{
    ok("/api/layers/a/tables/b", "a", "b");
    ok("/api/layers/odd layer \xc3\xa9/tables/ta\"ble 'q'", "odd layer \xc3\xa9", "ta\"ble 'q'");
    ok("/api/layers/tables/tables/tables", "tables", "tables");
    bad("/api/layers/a");
    bad("/api/layers/a/tables");
    bad("/api/layers/a/tables/");
    bad("/api/layers//tables/b");
    bad("/api/layers/a/tables/b/c");
    bad("/api/layers/a/columns/b");
    bad("/api/layer/a/tables/b");
    bad("/api/layers/0123456789abcdef/tables/b"); /* longer than the buffer */
    bad("/api/layers/a/tables/0123456789abcdef");
    T_DONE();
}
