/* The SQL allow-list: names of the functions user queries may call (allowlist.c), and the
 * refused ones with the reason the client is told. Pure data; no DuckDB here. */
#ifndef DAPI_ALLOWLIST_H
#define DAPI_ALLOWLIST_H

#include <stddef.h>

struct dapi_refusal {
    const char *name;
    const char *why;
};

extern const char *const dapi_allow_scalar[]; /* scalar, aggregate, window, macros */
extern const size_t dapi_allow_scalar_n;
extern const char *const dapi_aggregate[]; /* DuckDB's aggregate functions, sorted */
extern const size_t dapi_aggregate_n;
extern const char *const dapi_allow_lake_table[]; /* table functions reading lake files */
extern const size_t dapi_allow_lake_table_n;
extern const char *const dapi_allow_pure_table[]; /* table functions computing rows */
extern const size_t dapi_allow_pure_table_n;
extern const char *const dapi_allow_table_option[]; /* named arguments of table functions */
extern const size_t dapi_allow_table_option_n;
extern const struct dapi_refusal dapi_refuse_scalar[];
extern const size_t dapi_refuse_scalar_n;
extern const struct dapi_refusal dapi_refuse_table[];
extern const size_t dapi_refuse_table_n;
extern const struct dapi_refusal dapi_refuse_table_option[];
extern const size_t dapi_refuse_table_option_n;

/* Is lower_name (lower case) in the sorted list? */
int dapi_allow_has(const char *const *list, size_t n, const char *lower_name);
/* The reason lower_name is refused, or NULL if it is not in the list. */
const char *dapi_refusal_reason(const struct dapi_refusal *list, size_t n, const char *lower_name);

#endif
