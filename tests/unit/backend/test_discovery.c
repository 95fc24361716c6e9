/* Schema discovery's JSON bodies (src/backend/discovery.c): keys in alphabetical order, one
 * entry per layer with its tables, names escaped, the row count's exactness said. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "engine/engine.h"
#include "t.h"

static void test_layers_body(void)
{
    size_t len = 0;
    char *b = dapi_backend_layers_json(NULL, 0, &len);
    T_EQ_MEM(b, len, "{\"layers\":[]}");
    free(b);
    struct dapi_lake_table t[] = {
        {"a", "t1", "parquet", 1, 3, 300, 0},
        {"a", "t\"2", "csv", 0, 1, 12, 86400},
        {"b \xc3\xa9", "x", "ndjson", 0, 1, 5, 1764673200},
    };
    b = dapi_backend_layers_json(t, 3, &len);
    T_EQ_MEM(b, len,
             "{\"layers\":[{\"name\":\"a\",\"tables\":["
             "{\"bytes\":300,\"files\":3,\"folder\":true,\"kind\":\"parquet\","
             "\"last_modified\":\"1970-01-01T00:00:00Z\",\"name\":\"t1\"},"
             "{\"bytes\":12,\"files\":1,\"folder\":false,\"kind\":\"csv\","
             "\"last_modified\":\"1970-01-02T00:00:00Z\",\"name\":\"t\\\"2\"}]},"
             "{\"name\":\"b \xc3\xa9\",\"tables\":["
             "{\"bytes\":5,\"files\":1,\"folder\":false,\"kind\":\"ndjson\","
             "\"last_modified\":\"2025-12-02T11:00:00Z\",\"name\":\"x\"}]}]}");
    free(b);
}

static void test_table_body(void)
{
    struct dapi_lake_column cols[] = {{"id", "BIGINT", "integer"}, {"n\n", "VARCHAR[]", "array"}};
    struct dapi_lake_desc d = {{"l", "t", "parquet", 0, 1, 10, 0}, cols, 2, 42, 1, 0};
    size_t len = 0;
    char *b = dapi_backend_table_json(&d, &len);
    T_EQ_MEM(b, len,
             "{\"bytes\":10,\"columns\":[{\"json_type\":\"integer\",\"name\":\"id\",\"type\":"
             "\"BIGINT\"},{\"json_type\":\"array\",\"name\":\"n\\n\",\"type\":\"VARCHAR[]\"}],"
             "\"files\":1,\"folder\":false,\"kind\":\"parquet\",\"last_modified\":"
             "\"1970-01-01T00:00:00Z\",\"layer\":\"l\",\"name\":\"t\",\"row_count\":42,"
             "\"row_count_exact\":true}");
    free(b);
    d.rows = -1;
    d.rows_exact = 0;
    d.ncols = 0;
    b = dapi_backend_table_json(&d, &len);
    T_CHECK(b && strstr(b, "\"columns\":[],") &&
                strstr(b, "\"row_count\":null,\"row_count_exact\":false}"),
            "unknown count: %s", b ? b : "(null)");
    free(b);
}

int main(void)
{
    test_layers_body();
    test_table_body();
    T_DONE();
}
