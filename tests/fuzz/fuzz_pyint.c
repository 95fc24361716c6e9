/* libFuzzer driver: dapi_api_parse_pyint (src/api/api.h), Python int() on the `limit` and
 * `page_number` texts a client sends.
 *
 * The input is the text (len = size, not NUL-terminated, in an exact-size heap copy). It is
 * parsed with several digits-buffer sizes n, each buffer exactly n bytes on the heap, so
 * ASan sees any write past n. For each n the driver checks:
 *  - accept/reject agrees with a small reference of Python's int() written here: ASCII
 *    whitespace stripped, optional sign, digits with single '_' between digits; plus the
 *    documented buffer bound (the digits and their NUL must fit in n bytes);
 *  - on success: digits is NUL-terminated inside the buffer, only [0-9], no leading zero
 *    unless it is "0", equals the reference's digits; *neg matches the sign; when !big,
 *    *value equals a checked strtoll of the digits; when big, the digits overflow int64
 *    (strtoll says ERANGE) and *value is INT64_MAX.
 *
 * FUZZ_PYINT_MIN_N (environment, default 0) skips the sizes below it: n = 0 and n = 1
 * have no room for "0" plus its NUL (see README.md). */
#include <errno.h>

#include "api/api.h"
#include "fuzz_common.h"

static size_t min_n;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *e = getenv("FUZZ_PYINT_MIN_N");
    if(e && *e)
        min_n = (size_t)strtoul(e, NULL, 10);
    return 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Reference: Python int(text) restricted to ASCII. On success returns 0 and writes the
 * significant digits ("0" for zero) into out (room for len + 2 bytes), *neg the sign. */
static int ref_pyint(const char *s, size_t len, int *neg, char *out, size_t *outlen)
{
    size_t a = 0, b = len, o = 0;
    while(a < b && is_ws(s[a]))
        a++;
    while(b > a && is_ws(s[b - 1]))
        b--;
    *neg = 0;
    if(a < b && (s[a] == '-' || s[a] == '+')) {
        *neg = s[a] == '-';
        a++;
    }
    if(a == b)
        return -1;
    int prev_digit = 0; /* was the previous character a digit? */
    for(size_t i = a; i < b; i++) {
        char c = s[i];
        if(c >= '0' && c <= '9') {
            if(!(o == 0 && c == '0'))
                out[o++] = c;
            prev_digit = 1;
        } else if(c == '_' && prev_digit && i + 1 < b && s[i + 1] >= '0' && s[i + 1] <= '9') {
            prev_digit = 0;
        } else {
            return -1;
        }
    }
    if(!prev_digit)
        return -1;
    if(o == 0)
        out[o++] = '0';
    out[o] = '\0';
    *outlen = o;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t sizes[] = {0, 1, 2, 3, 8, 20, 21, 48, 64, 1024};
    fz_begin(data, size);
    char *text = malloc(size ? size : 1);
    char *want = malloc(size + 2);
    if(!text || !want) {
        free(text);
        free(want);
        return 0;
    }
    memcpy(text, data, size);
    int want_neg = 0;
    size_t want_len = 0;
    int ref = ref_pyint(text, size, &want_neg, want, &want_len);

    for(size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        if(n < min_n)
            continue;
        char *digits = malloc(n); /* under ASan, malloc(0) is a valid 0-byte block */
        if(!digits && n)
            break;
        int neg = 77, big = 77;
        int64_t value = -77;
        int r = dapi_api_parse_pyint(text, size, &neg, digits, n, &value, &big);
        int ref_ok = ref == 0 && want_len + 1 <= n;
        FUZZ_CHECK((r == 0) == ref_ok,
                   "n=%zu: parse_pyint %s, the reference %s (Python int() %s, %zu digits)", n,
                   r == 0 ? "accepts" : "rejects", ref_ok ? "accepts" : "rejects",
                   ref == 0 ? "accepts" : "rejects", want_len);
        if(r == 0) {
            size_t dl = strnlen(digits, n);
            FUZZ_CHECK(dl < n, "n=%zu: digits not NUL-terminated inside the buffer", n);
            FUZZ_CHECK(dl >= 1, "n=%zu: empty digits", n);
            for(size_t i = 0; i < dl; i++)
                FUZZ_CHECK(digits[i] >= '0' && digits[i] <= '9', "n=%zu: digit 0x%02x", n,
                           (unsigned char)digits[i]);
            FUZZ_CHECK(digits[0] != '0' || dl == 1, "n=%zu: leading zero in [%s]", n, digits);
            FUZZ_CHECK(dl == want_len && memcmp(digits, want, dl) == 0,
                       "n=%zu: digits [%s], reference [%s]", n, digits, want);
            FUZZ_CHECK(neg == want_neg, "n=%zu: neg %d, reference %d", n, neg, want_neg);
            FUZZ_CHECK(big == 0 || big == 1, "n=%zu: big = %d", n, big);
            errno = 0;
            char *end = NULL;
            long long ll = strtoll(digits, &end, 10);
            FUZZ_CHECK(end == digits + dl, "n=%zu: strtoll stopped early", n);
            if(!big) {
                FUZZ_CHECK(errno == 0, "n=%zu: !big but [%s] overflows int64", n, digits);
                FUZZ_CHECK(value == (int64_t)ll, "n=%zu: value %lld, digits say %lld", n,
                           (long long)value, ll);
                FUZZ_CHECK(value >= 0, "n=%zu: negative value %lld", n, (long long)value);
            } else {
                FUZZ_CHECK(errno == ERANGE, "n=%zu: big but [%s] fits int64", n, digits);
                FUZZ_CHECK(value == INT64_MAX, "n=%zu: big but value %lld", n, (long long)value);
            }
        }
        free(digits);
    }
    free(text);
    free(want);
    return 0;
}
