#include "engine/render.h"

#include <string.h>

#include "base/buf.h"
#include "base/json.h"

/* Containers deeper than this are refused: the renderer recurses once per level and a
 * result's type comes from the client's SQL. */
#define MAX_DEPTH 64

static const char hex_digits[] = "0123456789abcdef";

/* Errors found here (bad vector description) fail the buffer like a failed append does
 * (sticky, see buf.h), so callers handle every error of this module the same way: the
 * output is gone, and later appends cannot start a new one. */
static enum dapi_err fail(struct dapi_buf *out, enum dapi_err e)
{
    dapi_buf_fail(out, e);
    return e;
}

/* Appends n bytes: in place when the buffer has room — the common case, a test and a copy
 * instead of a call per piece of every row — else through dapi_buf_add (growth, the cap,
 * the sticky error). Either way the buffer's rules hold (NUL-terminated, len <= max). */
static inline enum dapi_err put(struct dapi_buf *b, const char *p, size_t n)
{
    if(b->data && !b->err && n < b->cap - b->len && n <= b->max - b->len) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return DAPI_OK;
    }
    return dapi_buf_add(b, p, n);
}

/* The digits of v, written backwards ending at end; returns where they start. */
static char *digits_u64(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while(v);
    return end;
}

/* How many decimal digits v has. */
static size_t ndigits(uint64_t v)
{
    static const uint64_t pow10[19] = {10ull,
                                       100ull,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};
    size_t n = 1;
    while(n < 20 && v >= pow10[n - 1])
        n++;
    return n;
}

/* Room for exactly n more bytes at the buffer's end (in place when it has them, else through
 * dapi_buf_reserve: growth, the cap, the sticky error); NULL if the buffer failed. Numbers
 * are written straight into it: digits written to a scratch array and copied from there cost
 * a stall per number (the copy's wide loads wait for the byte stores), which showed as a
 * quarter of a large run's CPU. */
static inline char *room(struct dapi_buf *b, size_t n)
{
    if(b->data && !b->err && n < b->cap - b->len && n <= b->max - b->len)
        return b->data + b->len;
    return dapi_buf_reserve(b, n);
}

static inline void commit(struct dapi_buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

/* An integer as dapi_json_i64 writes it. */
static enum dapi_err put_i64(struct dapi_buf *b, int64_t v)
{
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    size_t n = ndigits(u) + (v < 0);
    char *o = room(b, n);
    if(!o)
        return dapi_buf_error(b);
    if(digits_u64(o + n, u) != o)
        *o = '-';
    commit(b, n);
    return DAPI_OK;
}

/* A DECIMAL stored in 64 bits or fewer, as dapi_json_decimal writes it: the digits with the
 * point `scale` from the right, "0.00…" below one, a '-' before a negative value. */
static enum dapi_err put_decimal64(struct dapi_buf *b, int64_t v, unsigned scale)
{
    if(scale > 38)
        return dapi_json_decimal(b, v < 0 ? -1 : 0, (uint64_t)v, scale);
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    size_t dl = ndigits(u);
    /* [-] digits [. digits], or [-] 0 . zeros digits */
    size_t n = (v < 0) + (dl > scale ? dl + (scale ? 1 : 0) : 2 + scale);
    char *o = room(b, n);
    if(!o)
        return dapi_buf_error(b);
    char *p = o + n;
    for(unsigned k = 0; k < scale; k++) { /* (past the digits: the zeros after the point) */
        *--p = (char)('0' + u % 10);
        u /= 10;
    }
    if(scale)
        *--p = '.';
    p = digits_u64(p, u); /* (0 below one) */
    if(v < 0)
        *--p = '-';
    commit(b, n);
    return DAPI_OK;
}

static int is_valid(const struct dapi_colvec *c, uint64_t r)
{
    return !c->validity || ((c->validity[r / 64] >> (r % 64)) & 1);
}

static const char *dstr_bytes(const struct dapi_dstr *s, size_t *len)
{
    *len = s->value.inlined.length;
    return *len <= 12 ? s->value.inlined.inlined : s->value.pointer.ptr;
}

/* Floor division and its non-negative remainder; never multiplies, so INT64_MIN is safe. */
static int64_t floor_divmod(int64_t a, int64_t d, int64_t *rem)
{
    int64_t q = a / d, r = a % d;
    if(r < 0) {
        r += d;
        q--;
    }
    *rem = r;
    return q;
}

static char *put_int(char *o, int64_t v)
{
    if(v < 0)
        *o++ = '-';
    return dapi_put_u64(o, v < 0 ? -(uint64_t)v : (uint64_t)v, 1);
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days):
 * exact for every int64 day count an int64 timestamp can produce. */
static char *put_date(char *o, int64_t days)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    uint64_t doe = (uint64_t)(z - era * 146097);
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint64_t mp = (5 * doy + 2) / 153;
    uint64_t d = doy - (153 * mp + 2) / 5 + 1;
    uint64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    /* ISO 8601 expanded years outside 0000-9999 carry a sign so they stay unambiguous. */
    if(y < 0) {
        *o++ = '-';
        o = dapi_put_u64(o, -(uint64_t)y, 4);
    } else {
        if(y > 9999)
            *o++ = '+';
        o = dapi_put_u64(o, (uint64_t)y, 4);
    }
    *o++ = '-';
    o = dapi_put_u64(o, m, 2);
    *o++ = '-';
    return dapi_put_u64(o, d, 2);
}

static enum dapi_err render_date(struct dapi_buf *out, int32_t days)
{
    /* DuckDB's date_t::infinity() / ninfinity(). */
    if(days == INT32_MAX)
        return dapi_buf_add(out, "\"infinity\"", 10);
    if(days == -INT32_MAX)
        return dapi_buf_add(out, "\"-infinity\"", 11);
    char t[32], *o = t;
    *o++ = '"';
    o = put_date(o, days);
    *o++ = '"';
    return dapi_buf_add(out, t, (size_t)(o - t));
}

/* Writes ".ffffff" without trailing zeros, nothing for 0. */
static char *put_micros_frac(char *o, uint64_t us)
{
    if(!us)
        return o;
    int digits = 6;
    while(us % 10 == 0) {
        us /= 10;
        digits--;
    }
    *o++ = '.';
    return dapi_put_u64(o, us, digits);
}

static enum dapi_err render_time(struct dapi_buf *out, int64_t micros)
{
    char t[48], *o = t;
    *o++ = '"';
    /* DuckDB keeps TIME in [0, 24:00:00]; a negative value is not expected but is printed
     * with a sign rather than as garbage. */
    if(micros < 0)
        *o++ = '-';
    uint64_t us = micros < 0 ? -(uint64_t)micros : (uint64_t)micros;
    uint64_t s = us / 1000000;
    o = dapi_put_u64(o, s / 3600, 2);
    *o++ = ':';
    o = dapi_put_u64(o, s / 60 % 60, 2);
    *o++ = ':';
    o = dapi_put_u64(o, s % 60, 2);
    o = put_micros_frac(o, us % 1000000);
    *o++ = '"';
    return dapi_buf_add(out, t, (size_t)(o - t));
}

/* `per_sec` is the number of ticks per second of the column's unit. */
static enum dapi_err render_timestamp(struct dapi_buf *out, int64_t v, int64_t per_sec, int utc)
{
    /* DuckDB's timestamp_t::infinity() / ninfinity(). */
    if(v == INT64_MAX)
        return dapi_buf_add(out, "\"infinity\"", 10);
    if(v == -INT64_MAX)
        return dapi_buf_add(out, "\"-infinity\"", 11);
    int64_t sub, sod;
    int64_t sec = floor_divmod(v, per_sec, &sub);
    int64_t days = floor_divmod(sec, 86400, &sod);
    uint64_t ms = per_sec >= 1000 ? (uint64_t)(sub / (per_sec / 1000)) : 0;
    char t[64], *o = t;
    *o++ = '"';
    o = put_date(o, days);
    *o++ = 'T';
    o = dapi_put_u64(o, (uint64_t)sod / 3600, 2);
    *o++ = ':';
    o = dapi_put_u64(o, (uint64_t)sod / 60 % 60, 2);
    *o++ = ':';
    o = dapi_put_u64(o, (uint64_t)sod % 60, 2);
    *o++ = '.';
    o = dapi_put_u64(o, ms, 3);
    if(utc)
        *o++ = 'Z';
    *o++ = '"';
    return dapi_buf_add(out, t, (size_t)(o - t));
}

/* ISO 8601 duration. DuckDB keeps months, days and micros separately and each may have its
 * own sign, so each component carries its own sign ("P-1DT-2H") instead of normalising. */
static enum dapi_err render_interval(struct dapi_buf *out, const struct dapi_interval *iv)
{
    char t[128], *o = t;
    *o++ = '"';
    *o++ = 'P';
    int32_t years = iv->months / 12, months = iv->months % 12;
    int64_t hours = iv->micros / INT64_C(3600000000), rem = iv->micros % INT64_C(3600000000);
    int64_t minutes = rem / 60000000, sec_us = rem % 60000000;
    if(years) {
        o = put_int(o, years);
        *o++ = 'Y';
    }
    if(months) {
        o = put_int(o, months);
        *o++ = 'M';
    }
    if(iv->days) {
        o = put_int(o, iv->days);
        *o++ = 'D';
    }
    if(hours || minutes || sec_us) {
        *o++ = 'T';
        if(hours) {
            o = put_int(o, hours);
            *o++ = 'H';
        }
        if(minutes) {
            o = put_int(o, minutes);
            *o++ = 'M';
        }
        if(sec_us) {
            /* The sign goes on the seconds even when the whole part is 0 ("PT-0.5S"). */
            if(sec_us < 0)
                *o++ = '-';
            uint64_t us = (uint64_t)(sec_us < 0 ? -sec_us : sec_us);
            o = dapi_put_u64(o, us / 1000000, 1);
            o = put_micros_frac(o, us % 1000000);
            *o++ = 'S';
        }
    }
    if(o == t + 2) {
        *o++ = 'T';
        *o++ = '0';
        *o++ = 'S';
    }
    *o++ = '"';
    return dapi_buf_add(out, t, (size_t)(o - t));
}

static enum dapi_err render_uuid(struct dapi_buf *out, const struct dapi_i128 *u)
{
    /* DuckDB flips the top bit so that signed comparison orders UUIDs like strings. */
    uint64_t halves[2] = {(uint64_t)u->upper ^ ((uint64_t)1 << 63), u->lower};
    char t[38], *o = t;
    *o++ = '"';
    for(int i = 0; i < 32; i++) {
        if(i == 8 || i == 12 || i == 16 || i == 20)
            *o++ = '-';
        *o++ = hex_digits[(halves[i / 16] >> (60 - 4 * (i % 16))) & 15];
    }
    *o++ = '"';
    return dapi_buf_add(out, t, (size_t)(o - t));
}

/* DuckDB bitstring: byte 0 is the number of unused (padding) bits at the top of byte 1. */
static enum dapi_err render_bit(struct dapi_buf *out, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t skip = n ? s[0] : 0;
    size_t nbits = n > 1 ? (n - 1) * 8 : 0;
    if(skip > nbits)
        skip = nbits;
    char t[512];
    size_t o = 0;
    t[o++] = '"';
    for(size_t i = skip; i < nbits; i++) {
        t[o++] = (char)('0' + ((s[1 + i / 8] >> (7 - i % 8)) & 1));
        if(o == sizeof t) {
            enum dapi_err result = dapi_buf_add(out, t, o);
            if(result)
                return result;
            o = 0;
        }
    }
    /* The loop flushes a full chunk, so there is room for the closing quote. */
    t[o++] = '"';
    return dapi_buf_add(out, t, o);
}

static enum dapi_err render(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r,
                            unsigned depth);

static enum dapi_err render_enum(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r)
{
    uint64_t idx;
    switch(c->phys) {
    case DAPI_CT_U8: idx = ((const uint8_t *)c->data)[r]; break;
    case DAPI_CT_U16: idx = ((const uint16_t *)c->data)[r]; break;
    case DAPI_CT_U32: idx = ((const uint32_t *)c->data)[r]; break;
    default: return fail(out, DAPI_ERR_INTERNAL);
    }
    if(idx >= c->n_enum || !c->enum_values || !c->enum_values[idx])
        return fail(out, DAPI_ERR_INTERNAL);
    return dapi_json_str(out, c->enum_values[idx], strlen(c->enum_values[idx]));
}

static enum dapi_err render_decimal(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r)
{
    int64_t v;
    switch(c->phys) {
    case DAPI_CT_I16: v = ((const int16_t *)c->data)[r]; break;
    case DAPI_CT_I32: v = ((const int32_t *)c->data)[r]; break;
    case DAPI_CT_I64: v = ((const int64_t *)c->data)[r]; break;
    case DAPI_CT_I128: {
        const struct dapi_i128 *h = &((const struct dapi_i128 *)c->data)[r];
        return dapi_json_decimal(out, h->upper, h->lower, c->scale);
    }
    default: return fail(out, DAPI_ERR_INTERNAL);
    }
    return put_decimal64(out, v, c->scale);
}

/* Elements [first, first + n) of `child` as a JSON array. */
static enum dapi_err render_elements(struct dapi_buf *out, const struct dapi_colvec *child,
                                     uint64_t first, uint64_t n, unsigned depth)
{
    enum dapi_err result = dapi_buf_addc(out, '[');
    for(uint64_t i = 0; i < n && !result; i++) {
        if(i)
            result = dapi_buf_addc(out, ',');
        if(!result)
            result = render(out, child, first + i, depth);
    }
    return result ? result : dapi_buf_addc(out, ']');
}

/* A MAP is a list of (key, value) structs. With VARCHAR keys it reads naturally as a JSON
 * object; other key types (or a NULL key, which DuckDB forbids) cannot be object keys, so
 * those maps become [{"key":k,"value":v},...]. Duplicate keys, which DuckDB also forbids,
 * would be written as they are. */
static enum dapi_err render_map(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r,
                                unsigned depth)
{
    const struct dapi_colvec *kv = c->children;
    if(!kv || c->nchildren < 1 || kv->type != DAPI_CT_STRUCT || kv->nchildren < 2 || !kv->children)
        return fail(out, DAPI_ERR_INTERNAL);
    const struct dapi_colvec *key = &kv->children[0], *val = &kv->children[1];
    const struct dapi_list_entry *e = &((const struct dapi_list_entry *)c->data)[r];
    int as_object = key->type == DAPI_CT_VARCHAR;
    for(uint64_t i = 0; i < e->length && as_object; i++)
        as_object = is_valid(key, e->offset + i);
    enum dapi_err result = dapi_buf_addc(out, as_object ? '{' : '[');
    for(uint64_t i = 0; i < e->length && !result; i++) {
        uint64_t row = e->offset + i;
        if(i)
            result = dapi_buf_addc(out, ',');
        if(result)
            break;
        if(as_object) {
            size_t n;
            const char *s = dstr_bytes(&((const struct dapi_dstr *)key->data)[row], &n);
            result = dapi_json_str(out, s, n);
            if(!result)
                result = dapi_buf_addc(out, ':');
        } else {
            result = dapi_buf_add(out, "{\"key\":", 7);
            if(!result)
                result = render(out, key, row, depth);
            if(!result)
                result = dapi_buf_add(out, ",\"value\":", 9);
        }
        if(!result)
            result = render(out, val, row, depth);
        if(!result && !as_object)
            result = dapi_buf_addc(out, '}');
    }
    return result ? result : dapi_buf_addc(out, as_object ? '}' : ']');
}

static enum dapi_err render_struct(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r,
                                   unsigned depth)
{
    if(c->nchildren && (!c->children || !c->child_names))
        return fail(out, DAPI_ERR_INTERNAL);
    enum dapi_err result = dapi_buf_addc(out, '{');
    for(size_t i = 0; i < c->nchildren && !result; i++) {
        if(i)
            result = dapi_buf_addc(out, ',');
        if(!result)
            result = dapi_render_key(out, c->child_names[i], strlen(c->child_names[i]));
        if(!result)
            result = render(out, &c->children[i], r, depth);
    }
    return result ? result : dapi_buf_addc(out, '}');
}

static enum dapi_err render(struct dapi_buf *out, const struct dapi_colvec *c, uint64_t r,
                            unsigned depth)
{
    if(depth > MAX_DEPTH)
        return fail(out, DAPI_ERR_TOO_LARGE);
    if(!is_valid(c, r))
        return put(out, "null", 4);
    const void *d = c->data;
    switch(c->type) {
    case DAPI_CT_BOOL: return ((const uint8_t *)d)[r] ? put(out, "true", 4) : put(out, "false", 5);
    case DAPI_CT_I8: return put_i64(out, ((const int8_t *)d)[r]);
    case DAPI_CT_I16: return put_i64(out, ((const int16_t *)d)[r]);
    case DAPI_CT_I32: return put_i64(out, ((const int32_t *)d)[r]);
    case DAPI_CT_I64: return put_i64(out, ((const int64_t *)d)[r]);
    case DAPI_CT_U8: return dapi_json_u64(out, ((const uint8_t *)d)[r]);
    case DAPI_CT_U16: return dapi_json_u64(out, ((const uint16_t *)d)[r]);
    case DAPI_CT_U32: return dapi_json_u64(out, ((const uint32_t *)d)[r]);
    case DAPI_CT_U64: return dapi_json_u64(out, ((const uint64_t *)d)[r]);
    case DAPI_CT_I128: {
        const struct dapi_i128 *h = &((const struct dapi_i128 *)d)[r];
        return dapi_json_i128(out, h->upper, h->lower);
    }
    case DAPI_CT_U128: {
        const struct dapi_u128 *h = &((const struct dapi_u128 *)d)[r];
        return dapi_json_u128(out, h->upper, h->lower);
    }
    case DAPI_CT_F32: return dapi_json_float(out, ((const float *)d)[r]);
    case DAPI_CT_F64: return dapi_json_double(out, ((const double *)d)[r]);
    case DAPI_CT_DECIMAL: return render_decimal(out, c, r);
    case DAPI_CT_VARCHAR:
    case DAPI_CT_BLOB:
    case DAPI_CT_BIT: {
        size_t n;
        const char *s = dstr_bytes(&((const struct dapi_dstr *)d)[r], &n);
        if(c->type == DAPI_CT_VARCHAR)
            return dapi_json_str(out, s, n);
        if(c->type == DAPI_CT_BLOB)
            return dapi_json_base64(out, s, n);
        return render_bit(out, s, n);
    }
    case DAPI_CT_DATE: return render_date(out, ((const int32_t *)d)[r]);
    case DAPI_CT_TIME: return render_time(out, ((const int64_t *)d)[r]);
    case DAPI_CT_TIMESTAMP: return render_timestamp(out, ((const int64_t *)d)[r], 1000000, 0);
    case DAPI_CT_TIMESTAMP_S: return render_timestamp(out, ((const int64_t *)d)[r], 1, 0);
    case DAPI_CT_TIMESTAMP_MS: return render_timestamp(out, ((const int64_t *)d)[r], 1000, 0);
    case DAPI_CT_TIMESTAMP_NS:
        return render_timestamp(out, ((const int64_t *)d)[r], 1000000000, 0);
    case DAPI_CT_TIMESTAMP_TZ: return render_timestamp(out, ((const int64_t *)d)[r], 1000000, 1);
    case DAPI_CT_INTERVAL: return render_interval(out, &((const struct dapi_interval *)d)[r]);
    case DAPI_CT_UUID: return render_uuid(out, &((const struct dapi_i128 *)d)[r]);
    case DAPI_CT_ENUM: return render_enum(out, c, r);
    case DAPI_CT_LIST: {
        if(!c->children || c->nchildren < 1)
            return fail(out, DAPI_ERR_INTERNAL);
        const struct dapi_list_entry *e = &((const struct dapi_list_entry *)d)[r];
        return render_elements(out, c->children, e->offset, e->length, depth + 1);
    }
    case DAPI_CT_ARRAY:
        if(!c->children || c->nchildren < 1)
            return fail(out, DAPI_ERR_INTERNAL);
        return render_elements(out, c->children, c->array_size * r, c->array_size, depth + 1);
    case DAPI_CT_MAP: return render_map(out, c, r, depth + 1);
    case DAPI_CT_STRUCT: return render_struct(out, c, r, depth + 1);
    case DAPI_CT_UNION: {
        if(!c->children || c->nchildren < 1 || !c->children[0].data)
            return fail(out, DAPI_ERR_INTERNAL);
        uint8_t tag = ((const uint8_t *)c->children[0].data)[r];
        if((size_t)tag + 1 >= c->nchildren)
            return fail(out, DAPI_ERR_INTERNAL);
        return render(out, &c->children[1 + tag], r, depth + 1);
    }
    }
    return fail(out, DAPI_ERR_INTERNAL);
}

enum dapi_err dapi_render_value(struct dapi_buf *out, const struct dapi_colvec *col, uint64_t row)
{
    return render(out, col, row, 0);
}

enum dapi_err dapi_render_row(struct dapi_buf *out, const struct dapi_colvec *cols, size_t ncols,
                              const char *const *keys, const size_t *key_lens, uint64_t row)
{
    enum dapi_err result = put(out, "{", 1);
    for(size_t i = 0; i < ncols && !result; i++) {
        if(i)
            result = put(out, ",", 1);
        if(!result)
            result = put(out, keys[i], key_lens[i]);
        if(!result)
            result = render(out, &cols[i], row, 0);
    }
    return result ? result : put(out, "}", 1);
}

enum dapi_err dapi_render_key(struct dapi_buf *out, const char *name, size_t len)
{
    enum dapi_err result = dapi_json_str(out, name, len);
    return result ? result : dapi_buf_addc(out, ':');
}
