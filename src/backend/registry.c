/* The backend registry: one row per value of --backend. A new backend is one file with its
 * dapi_backend_ops and one row here (docs/design.md, "Adding a backend"). */
#include <string.h>

#include "backend/backend.h"

static const struct dapi_backend registry[] = {
    {"local", &dapi_backend_local_ops, DAPI_BACKEND_NEEDS_LAKE | DAPI_BACKEND_CHECKS_SQL},
    {"nekt", &dapi_backend_nekt_ops, DAPI_BACKEND_FORWARDS_KEYS | DAPI_BACKEND_UPSTREAM},
};

const struct dapi_backend *dapi_backend_find(const char *name)
{
    for(size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if(name && strcmp(registry[i].name, name) == 0)
            return &registry[i];
    return NULL;
}

const struct dapi_backend *dapi_backend_list(size_t *n)
{
    *n = sizeof registry / sizeof registry[0];
    return registry;
}
