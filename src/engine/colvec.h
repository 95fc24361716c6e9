/* A column of a result chunk, described without DuckDB's headers so that rendering can be
 * written and unit-tested on its own. src/engine/engine.c (duckdb.h is included only
 * under src/engine/) fills these from DuckDB vectors; the layouts below are DuckDB's in-memory
 * layouts, which its C API documents and keeps stable.
 *
 * All pointers are borrowed from the chunk they describe and are valid until that chunk is
 * destroyed. */
#ifndef DAPI_COLVEC_H
#define DAPI_COLVEC_H

#include <stddef.h>
#include <stdint.h>

enum dapi_ctype {
    DAPI_CT_BOOL, /* bool (1 byte) */
    DAPI_CT_I8,
    DAPI_CT_I16,
    DAPI_CT_I32,
    DAPI_CT_I64,
    DAPI_CT_U8,
    DAPI_CT_U16,
    DAPI_CT_U32,
    DAPI_CT_U64,
    DAPI_CT_I128, /* struct dapi_i128 */
    DAPI_CT_U128, /* struct dapi_u128 */
    DAPI_CT_F32,
    DAPI_CT_F64,
    DAPI_CT_DECIMAL,      /* `phys` is I16/I32/I64/I128, `scale` fraction digits */
    DAPI_CT_VARCHAR,      /* struct dapi_dstr; bytes should be UTF-8 */
    DAPI_CT_BLOB,         /* struct dapi_dstr; raw bytes -> base64 string */
    DAPI_CT_BIT,          /* struct dapi_dstr; DuckDB bitstring: byte 0 = padding bits */
    DAPI_CT_DATE,         /* int32 days since 1970-01-01 */
    DAPI_CT_TIME,         /* int64 microseconds since midnight */
    DAPI_CT_TIMESTAMP,    /* int64 microseconds since epoch, naive */
    DAPI_CT_TIMESTAMP_S,  /* int64 seconds */
    DAPI_CT_TIMESTAMP_MS, /* int64 milliseconds */
    DAPI_CT_TIMESTAMP_NS, /* int64 nanoseconds */
    DAPI_CT_TIMESTAMP_TZ, /* int64 microseconds since epoch, UTC instant */
    DAPI_CT_INTERVAL,     /* struct dapi_interval */
    DAPI_CT_UUID,         /* struct dapi_i128 with the top bit flipped (DuckDB's order trick) */
    DAPI_CT_ENUM,         /* `phys` is U8/U16/U32 index into enum_values */
    DAPI_CT_LIST,         /* struct dapi_list_entry; children[0] is the element vector */
    DAPI_CT_MAP,          /* as LIST; children[0] is a STRUCT of (key, value) */
    DAPI_CT_ARRAY,  /* fixed size: row r is children[0] rows [r*array_size, (r+1)*array_size) */
    DAPI_CT_STRUCT, /* children[i] named child_names[i]; no data pointer */
    DAPI_CT_UNION,  /* children[0] is the U8 tag, children[1+k] member k (child_names[1+k]) */
};

struct dapi_i128 {
    uint64_t lower;
    int64_t upper;
};
struct dapi_u128 {
    uint64_t lower;
    uint64_t upper;
};
struct dapi_interval {
    int32_t months;
    int32_t days;
    int64_t micros;
};
struct dapi_list_entry {
    uint64_t offset;
    uint64_t length;
};

/* DuckDB's 16-byte string: length, then either the bytes inline (length <= 12) or a 4-byte
 * prefix and a pointer to the bytes. */
struct dapi_dstr {
    union {
        struct {
            uint32_t length;
            char prefix[4];
            const char *ptr;
        } pointer;
        struct {
            uint32_t length;
            char inlined[12];
        } inlined;
    } value;
};

struct dapi_colvec {
    enum dapi_ctype type;
    enum dapi_ctype phys;     /* DECIMAL / ENUM storage type */
    uint8_t scale;            /* DECIMAL */
    const void *data;         /* element array (NULL for STRUCT) */
    const uint64_t *validity; /* bit (r % 64) of word r / 64 set = valid; NULL = all valid */
    size_t nchildren;
    struct dapi_colvec *children;   /* LIST/MAP/ARRAY: 1; STRUCT/UNION: nchildren */
    const char *const *child_names; /* STRUCT/UNION member names (UTF-8, unescaped) */
    uint64_t array_size;            /* ARRAY */
    const char *const *enum_values; /* ENUM dictionary */
    size_t n_enum;
};

#endif
