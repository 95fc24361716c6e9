/* libFuzzer driver: dapi_json_str (src/base/json.h), which quotes column names and VARCHAR
 * values (arbitrary bytes from the data) into the JSON the server sends.
 *
 * For arbitrary input bytes s (an exact-size heap copy), the output must:
 *  - be written with DAPI_OK when the buffer's cap allows it;
 *  - start and end with '"' and be exactly one strict JSON string literal (validator in
 *    fuzz_common.h: no raw control characters, only legal escapes);
 *  - be valid UTF-8 (strict: no overlongs, surrogates or > U+10FFFF);
 *  - use only the documented escapes: \" \\ \n \r \t \b \f and \u00XX for the other
 *    controls (so a decoder never meets a surrogate escape);
 *  - decode back to s when s is valid UTF-8, and otherwise to s with each maximal ill-formed
 *    subpart replaced by one U+FFFD (reference in fuzz_common.h);
 *  - fail cleanly on a buffer cap one byte too small (error, buffer freed, data NULL, the
 *    error sticky: a later append is a no-op returning it, take gives NULL), and
 *    succeed with identical text on an exact cap and when appended after existing text. */
#include "base/json.h"
#include "fuzz_common.h"

static void check_escapes(const char *o, size_t n)
{
    for(size_t i = 1; i + 1 < n; i++) {
        if(o[i] != '\\')
            continue;
        char e = o[i + 1];
        if(e == 'u') {
            FUZZ_CHECK(i + 5 < n, "truncated \\u escape");
            FUZZ_CHECK(o[i + 2] == '0' && o[i + 3] == '0' && (o[i + 4] == '0' || o[i + 4] == '1'),
                       "\\u escape that is not a control character: %.6s", o + i);
            FUZZ_CHECK(fz_is_hex((unsigned char)o[i + 5]) && !(o[i + 5] >= 'A' && o[i + 5] <= 'F'),
                       "\\u00XX not in lower-case hex: %.6s", o + i);
            unsigned c = fz_hex4((const unsigned char *)o + i + 2);
            FUZZ_CHECK(c != '\b' && c != '\t' && c != '\n' && c != '\f' && c != '\r',
                       "\\u%04x has a short escape", c);
            i += 5;
        } else {
            FUZZ_CHECK(e == '"' || e == '\\' || e == 'n' || e == 'r' || e == 't' || e == 'b' ||
                           e == 'f',
                       "undocumented escape \\%c", e);
            i += 1;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    char *s = malloc(size ? size : 1);
    if(!s)
        return 0;
    memcpy(s, data, size);

    /* Worst case: 6 bytes per control byte, 3 per invalid byte, plus the quotes. */
    size_t cap = 6 * size + 2;
    struct dapi_buf b;
    dapi_buf_init(&b, cap);
    enum dapi_err r = dapi_json_str(&b, s, size);
    FUZZ_CHECK(r == DAPI_OK, "dapi_json_str failed (%d) with a %zu-byte cap", (int)r, cap);
    const char *o = b.data;
    size_t n = b.len;
    FUZZ_CHECK(o != NULL && n >= 2, "output too short (%zu bytes)", n);
    FUZZ_CHECK(o[n] == '\0', "buffer not NUL-terminated");
    FUZZ_CHECK(o[0] == '"' && o[n - 1] == '"', "output not between quotes");
    FUZZ_CHECK(fz_utf8_valid(o, n), "output is not valid UTF-8");
    FUZZ_CHECK(fz_json_valid(o, n, NULL) == 1, "output is not valid JSON");
    struct fz_json j;
    fz_json_init(&j, o, n);
    FUZZ_CHECK(fz_json_string(&j) == 0 && j.p == j.end, "output is not one string literal");
    check_escapes(o, n);

    unsigned char *dec = malloc(n);
    unsigned char *want = malloc(3 * size + 1);
    FUZZ_CHECK(dec && want, "out of memory");
    int lone = 0;
    size_t dn = fz_json_unquote(o, n, dec, &lone);
    FUZZ_CHECK(!lone, "output holds a surrogate escape");
    if(fz_utf8_valid(s, size)) {
        FUZZ_CHECK(dn == size && memcmp(dec, s, size) == 0,
                   "valid UTF-8 input does not round-trip (%zu bytes back, %zu in)", dn, size);
    } else {
        size_t wn = fz_utf8_replace((const unsigned char *)s, size, want);
        FUZZ_CHECK(wn != size || memcmp(want, s, size) != 0, "reference kept invalid UTF-8");
        FUZZ_CHECK(dn == wn && memcmp(dec, want, wn) == 0,
                   "ill-formed input: decoded output differs from maximal-subpart U+FFFD "
                   "substitution (%zu vs %zu bytes)",
                   dn, wn);
    }

    /* The cap: one byte short must fail and free the buffer; the exact size must pass. */
    struct dapi_buf t;
    dapi_buf_init(&t, n - 1);
    r = dapi_json_str(&t, s, size);
    FUZZ_CHECK(r != DAPI_OK, "wrote %zu bytes under a cap of %zu", n, n - 1);
    FUZZ_CHECK(t.data == NULL && t.len == 0, "buffer not freed after error %d", (int)r);
    FUZZ_CHECK(dapi_buf_error(&t) == r, "error %d not kept (%d)", (int)r, (int)dapi_buf_error(&t));
    FUZZ_CHECK(dapi_buf_add(&t, "", 0) == r && t.data == NULL, "append after error %d", (int)r);
    FUZZ_CHECK(dapi_buf_take(&t, NULL) == NULL, "take after error %d gave data", (int)r);
    dapi_buf_free(&t);
    dapi_buf_init(&t, n);
    r = dapi_json_str(&t, s, size);
    FUZZ_CHECK(r == DAPI_OK && t.len == n && memcmp(t.data, o, n) == 0, "exact cap: %d", (int)r);
    dapi_buf_free(&t);

    /* Appending after existing text writes the same bytes after it. */
    dapi_buf_init(&t, n + 3);
    FUZZ_CHECK(dapi_buf_add(&t, "[1,", 3) == DAPI_OK, "prefix");
    r = dapi_json_str(&t, s, size);
    FUZZ_CHECK(r == DAPI_OK && t.len == n + 3 && memcmp(t.data, "[1,", 3) == 0 &&
                   memcmp(t.data + 3, o, n) == 0,
               "append after a prefix: %d", (int)r);
    dapi_buf_free(&t);

    free(dec);
    free(want);
    dapi_buf_free(&b);
    free(s);
    return 0;
}
