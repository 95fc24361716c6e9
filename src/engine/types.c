/* DuckDB's names of column types ("DECIMAL(18,3)", "INTEGER[]", "STRUCT(a INTEGER)" …), as
 * DuckDB itself prints them (typeof, DESCRIBE), built from a logical type: the C API has no
 * call for it. Stored with each result (its columns) for clients and exports. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "engine/engine_int.h"

#define MAX_DEPTH 64

static const char *simple_name(duckdb_type t)
{
    switch(t) {
    case DUCKDB_TYPE_BOOLEAN: return "BOOLEAN";
    case DUCKDB_TYPE_TINYINT: return "TINYINT";
    case DUCKDB_TYPE_SMALLINT: return "SMALLINT";
    case DUCKDB_TYPE_INTEGER: return "INTEGER";
    case DUCKDB_TYPE_BIGINT: return "BIGINT";
    case DUCKDB_TYPE_UTINYINT: return "UTINYINT";
    case DUCKDB_TYPE_USMALLINT: return "USMALLINT";
    case DUCKDB_TYPE_UINTEGER: return "UINTEGER";
    case DUCKDB_TYPE_UBIGINT: return "UBIGINT";
    case DUCKDB_TYPE_FLOAT: return "FLOAT";
    case DUCKDB_TYPE_DOUBLE: return "DOUBLE";
    case DUCKDB_TYPE_TIMESTAMP: return "TIMESTAMP";
    case DUCKDB_TYPE_DATE: return "DATE";
    case DUCKDB_TYPE_TIME: return "TIME";
    case DUCKDB_TYPE_INTERVAL: return "INTERVAL";
    case DUCKDB_TYPE_HUGEINT: return "HUGEINT";
    case DUCKDB_TYPE_UHUGEINT: return "UHUGEINT";
    case DUCKDB_TYPE_VARCHAR: return "VARCHAR";
    case DUCKDB_TYPE_BLOB: return "BLOB";
    case DUCKDB_TYPE_TIMESTAMP_S: return "TIMESTAMP_S";
    case DUCKDB_TYPE_TIMESTAMP_MS: return "TIMESTAMP_MS";
    case DUCKDB_TYPE_TIMESTAMP_NS: return "TIMESTAMP_NS";
    case DUCKDB_TYPE_UUID: return "UUID";
    case DUCKDB_TYPE_BIT: return "BIT";
    case DUCKDB_TYPE_TIME_TZ: return "TIME WITH TIME ZONE";
    case DUCKDB_TYPE_TIMESTAMP_TZ: return "TIMESTAMP WITH TIME ZONE";
    case DUCKDB_TYPE_BIGNUM: return "BIGNUM";
    case DUCKDB_TYPE_SQLNULL: return "\"NULL\"";
    case DUCKDB_TYPE_TIME_NS: return "TIME_NS";
    default: return NULL;
    }
}

/* A struct field or union member name, quoted unless a plain lower-case identifier (as
 * DuckDB writes them). */
static void add_field_name(struct dapi_buf *b, const char *name)
{
    int plain = *name && (islower((unsigned char)*name) || *name == '_');
    for(const char *p = name; plain && *p; p++)
        plain = islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_';
    if(plain) {
        dapi_buf_adds(b, name);
        return;
    }
    dapi_buf_addc(b, '"');
    for(const char *p = name; *p; p++) {
        if(*p == '"')
            dapi_buf_addc(b, '"');
        dapi_buf_addc(b, *p);
    }
    dapi_buf_addc(b, '"');
}

static void add_type(struct dapi_buf *b, duckdb_logical_type lt, int depth);

/* STRUCT(a INTEGER, …) or UNION(…): name and type of each child. */
static void add_members(struct dapi_buf *b, duckdb_logical_type lt, int is_union, int depth)
{
    idx_t n = is_union ? duckdb_union_type_member_count(lt) : duckdb_struct_type_child_count(lt);
    dapi_buf_adds(b, is_union ? "UNION(" : "STRUCT(");
    for(idx_t i = 0; i < n; i++) {
        char *name = is_union ? duckdb_union_type_member_name(lt, i)
                              : duckdb_struct_type_child_name(lt, i);
        duckdb_logical_type ct = is_union ? duckdb_union_type_member_type(lt, i)
                                          : duckdb_struct_type_child_type(lt, i);
        if(i)
            dapi_buf_adds(b, ", ");
        add_field_name(b, name ? name : "");
        dapi_buf_addc(b, ' ');
        add_type(b, ct, depth + 1);
        duckdb_destroy_logical_type(&ct);
        duckdb_free(name);
    }
    dapi_buf_addc(b, ')');
}

static void add_type(struct dapi_buf *b, duckdb_logical_type lt, int depth)
{
    if(depth > MAX_DEPTH) {
        dapi_buf_adds(b, "...");
        return;
    }
    char *alias = duckdb_logical_type_get_alias(lt);
    if(alias) { /* JSON, and other named types */
        dapi_buf_adds(b, alias);
        duckdb_free(alias);
        return;
    }
    duckdb_type t = duckdb_get_type_id(lt);
    const char *simple = simple_name(t);
    if(simple) {
        dapi_buf_adds(b, simple);
        return;
    }
    switch(t) {
    case DUCKDB_TYPE_DECIMAL:
        dapi_buf_addf(b, "DECIMAL(%u,%u)", (unsigned)duckdb_decimal_width(lt),
                      (unsigned)duckdb_decimal_scale(lt));
        return;
    case DUCKDB_TYPE_ENUM: {
        uint32_t n = duckdb_enum_dictionary_size(lt);
        dapi_buf_adds(b, "ENUM(");
        for(uint32_t i = 0; i < n; i++) {
            char *v = duckdb_enum_dictionary_value(lt, i);
            if(i)
                dapi_buf_adds(b, ", ");
            dapi_engine_sql_literal(b, v ? v : "");
            duckdb_free(v);
        }
        dapi_buf_addc(b, ')');
        return;
    }
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY: {
        duckdb_logical_type ct = t == DUCKDB_TYPE_LIST ? duckdb_list_type_child_type(lt)
                                                       : duckdb_array_type_child_type(lt);
        add_type(b, ct, depth + 1);
        duckdb_destroy_logical_type(&ct);
        if(t == DUCKDB_TYPE_LIST)
            dapi_buf_adds(b, "[]");
        else
            dapi_buf_addf(b, "[%llu]", (unsigned long long)duckdb_array_type_array_size(lt));
        return;
    }
    case DUCKDB_TYPE_MAP: {
        duckdb_logical_type k = duckdb_map_type_key_type(lt);
        duckdb_logical_type v = duckdb_map_type_value_type(lt);
        dapi_buf_adds(b, "MAP(");
        add_type(b, k, depth + 1);
        dapi_buf_adds(b, ", ");
        add_type(b, v, depth + 1);
        dapi_buf_addc(b, ')');
        duckdb_destroy_logical_type(&k);
        duckdb_destroy_logical_type(&v);
        return;
    }
    case DUCKDB_TYPE_STRUCT: add_members(b, lt, 0, depth); return;
    case DUCKDB_TYPE_UNION: add_members(b, lt, 1, depth); return;
    default: dapi_buf_addf(b, "UNKNOWN(%d)", (int)t); return;
    }
}

char *engine_type_name(duckdb_logical_type lt)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 1 << 20);
    add_type(&b, lt, 0);
    return b.data ? dapi_buf_take(&b, NULL) : NULL;
}
