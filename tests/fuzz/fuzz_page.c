/* libFuzzer driver: the client's results-page scanner (src/client/page.c:
 * dapi_page_parse_owned / dapi_page_parse, the accessors, dapi_client_unquote). The body
 * comes from the network, so page.c promises a strict, bounded parse.
 *
 * The input is the body. Checks:
 *  - acceptance is exactly what client.h / page.c document, judged by an independent
 *    reader built on the strict JSON validator of fuzz_common.h: the text must be strict
 *    JSON (UTF-8, no surrogates/overlongs, no trailing commas...), nested at most 64 deep,
 *    a top-level object with exactly one "data" member that is an array of objects; its
 *    first "page" member (if any) must be a non-negative integer; the first string-valued
 *    "query_slug" is the slug. (Page numbers above 10^18 are left undetermined: page.c may
 *    refuse large ones.)
 *  - every span the page returns (rows, keys, values, slug) lies inside the body handed to
 *    dapi_page_parse_owned, in order; each row is '{'..'}', each key a string literal, each
 *    value one JSON value; rows, cells, slug and page number are exactly the reference's;
 *  - dapi_page_parse (the copying variant) agrees with dapi_page_parse_owned;
 *  - dapi_client_unquote decodes every key and string value (the page says they are
 *    validated) to what the reference decoder gives, always valid UTF-8. */
#include "base/buf.h"
#include "client/page.h"
#include "client/unquote.h"
#include "fuzz_common.h"

#define PAGE_MAX_DEPTH 64
#define PAGE_NUMBER_SURE 1000000000000000000ull /* 10^18: any page.c must accept these */

struct ref_cell {
    size_t k, klen, v, vlen; /* offsets into the body */
};

struct ref {
    size_t nrows;
    size_t *row_off, *row_len, *row_first; /* row_first: nrows + 1 indexes into cells */
    struct ref_cell *cells;
    size_t ncells;
    int has_page;
    uint64_t page;
    int page_sure;
    int has_slug;
    size_t slug_off, slug_len;
};

static int key_is(const unsigned char *k, size_t klen, const char *lit)
{
    return klen == strlen(lit) && memcmp(k, lit, klen) == 0;
}

/* The reference reader, for a body that fz_json_valid accepted. 1: page.c must accept it
 * (and produce exactly R); 0: page.c must refuse it; -1: undetermined. */
static int ref_read(const unsigned char *b, size_t n, struct ref *R)
{
    struct fz_json j;
    int data_seen = 0;
    fz_json_init(&j, b, n);
    fz_json_ws(&j);
    if(j.p >= j.end || *j.p != '{')
        return 0;
    j.p++;
    fz_json_ws(&j);
    if(*j.p == '}')
        return 0; /* no "data" */
    for(;;) {
        const unsigned char *k = j.p;
        fz_json_string(&j);
        size_t klen = (size_t)(j.p - k);
        fz_json_ws(&j);
        j.p++; /* ':' */
        fz_json_ws(&j);
        const unsigned char *v = j.p;
        if(key_is(k, klen, "\"data\"")) {
            if(data_seen++ || *j.p != '[')
                return 0;
            j.p++;
            fz_json_ws(&j);
            if(*j.p == ']') {
                j.p++;
            } else {
                for(;;) {
                    if(*j.p != '{')
                        return 0; /* a row is not an object */
                    R->row_off[R->nrows] = (size_t)(j.p - b);
                    R->row_first[R->nrows] = R->ncells;
                    j.p++;
                    fz_json_ws(&j);
                    if(*j.p == '}') {
                        j.p++;
                    } else {
                        for(;;) {
                            struct ref_cell *c = &R->cells[R->ncells++];
                            c->k = (size_t)(j.p - b);
                            fz_json_string(&j);
                            c->klen = (size_t)(j.p - b) - c->k;
                            fz_json_ws(&j);
                            j.p++; /* ':' */
                            fz_json_ws(&j);
                            c->v = (size_t)(j.p - b);
                            fz_json_value(&j);
                            c->vlen = (size_t)(j.p - b) - c->v;
                            fz_json_ws(&j);
                            if(*j.p++ == '}')
                                break;
                            fz_json_ws(&j);
                        }
                    }
                    R->row_len[R->nrows] = (size_t)(j.p - b) - R->row_off[R->nrows];
                    R->nrows++;
                    R->row_first[R->nrows] = R->ncells;
                    fz_json_ws(&j);
                    if(*j.p++ == ']')
                        break;
                    fz_json_ws(&j);
                }
            }
        } else if(key_is(k, klen, "\"page\"") && !R->has_page) {
            const unsigned char *num = j.p;
            if(*j.p == '"' || *j.p == '[' || *j.p == '{' || *j.p == 't' || *j.p == 'f' ||
               *j.p == 'n')
                return 0; /* not a number */
            fz_json_number(&j);
            uint64_t val = 0;
            int sure = 1;
            for(const unsigned char *q = num; q < j.p; q++) {
                if(*q < '0' || *q > '9')
                    return 0; /* negative, fraction or exponent */
                if(val > PAGE_NUMBER_SURE / 10)
                    sure = 0;
                else
                    val = val * 10 + (uint64_t)(*q - '0');
            }
            if(val > PAGE_NUMBER_SURE)
                sure = 0;
            R->has_page = 1;
            R->page = val;
            R->page_sure = sure;
        } else if(key_is(k, klen, "\"query_slug\"") && !R->has_slug && *j.p == '"') {
            fz_json_string(&j);
            R->has_slug = 1;
            R->slug_off = (size_t)(v - b);
            R->slug_len = (size_t)(j.p - v);
        } else {
            fz_json_value(&j);
        }
        fz_json_ws(&j);
        if(*j.p++ == '}')
            break;
        fz_json_ws(&j);
    }
    if(!data_seen)
        return 0;
    return R->has_page && !R->page_sure ? -1 : 1;
}

static int in_body(const char *p, size_t len, const char *body, size_t n)
{
    return p && p >= body && p <= body + n && len <= (size_t)(body + n - p);
}

static void check_unquote(const char *lit, size_t len, unsigned char *ref)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 4 * len + 16);
    enum dapi_err r = dapi_client_unquote_buf(lit, len, &b);
    FUZZ_CHECK(r == DAPI_OK, "dapi_client_unquote_buf failed (%d) on a validated literal", (int)r);
    size_t rn = fz_json_unquote(lit, len, ref, NULL);
    const char *got = b.data ? b.data : "";
    FUZZ_CHECK(b.len == rn && memcmp(got, ref, rn) == 0,
               "dapi_client_unquote_buf gives %zu bytes, the reference %zu", b.len, rn);
    FUZZ_CHECK(fz_utf8_valid(got, b.len), "unquoted text is not valid UTF-8");
    /* the library's own form writes into exactly len - 1 bytes (ASan sees any overrun) */
    char *out = malloc(len - 1);
    size_t n = 0;
    FUZZ_CHECK(out && dapi_client_unquote(lit, len, out, &n) == DAPI_OK && n == rn &&
                   memcmp(out, ref, rn) == 0 && out[n] == '\0',
               "dapi_client_unquote differs from dapi_client_unquote_buf");
    free(out);
    dapi_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    /* The reference verdict. */
    int depth = 0;
    int valid = fz_json_valid(data, size, &depth);
    struct ref R = {0};
    size_t maxn = size / 2 + 2;
    R.row_off = malloc(maxn * sizeof *R.row_off);
    R.row_len = malloc(maxn * sizeof *R.row_len);
    R.row_first = malloc((maxn + 1) * sizeof *R.row_first);
    R.cells = malloc(maxn * sizeof *R.cells);
    unsigned char *scratch = malloc(size + 1);
    FUZZ_CHECK(R.row_off && R.row_len && R.row_first && R.cells && scratch, "out of memory");
    int want = valid == 1 && depth <= PAGE_MAX_DEPTH ? ref_read(data, size, &R) : 0;

    /* The owned variant: body is an exact-size heap block (ASan sees any overread), NUL
     * after len as documented. */
    char *body = malloc(size + 1);
    FUZZ_CHECK(body != NULL, "out of memory");
    memcpy(body, data, size);
    body[size] = '\0';
    struct dapi_page *pg = (struct dapi_page *)0x1;
    char err[256] = "";
    enum dapi_err r = dapi_page_parse_owned(body, size, &pg, err, sizeof err);

    struct dapi_page *pc = (struct dapi_page *)0x1;
    char err2[256] = "";
    enum dapi_err r2 = dapi_page_parse((const char *)data, size, &pc, err2, sizeof err2);
    FUZZ_CHECK((r == DAPI_OK) == (r2 == DAPI_OK), "parse_owned %d, parse %d", (int)r, (int)r2);

    if(r != DAPI_OK) {
        FUZZ_CHECK(pg == NULL && pc == NULL, "*page not NULL after failure");
        FUZZ_CHECK(err[0] && strcmp(err, err2) == 0, "reasons differ: [%s] [%s]", err, err2);
        FUZZ_CHECK(want != 1, "a valid page was refused: %s (depth %d, %zu rows in the reference)",
                   err, depth, R.nrows);
        goto out;
    }
    FUZZ_CHECK(pg != NULL && pc != NULL, "success without a page");
    FUZZ_CHECK(valid == 1, "accepted text that is not strict JSON (validator says %d)", valid);
    FUZZ_CHECK(depth <= PAGE_MAX_DEPTH, "accepted text nested %d deep", depth);
    FUZZ_CHECK(want != 0, "accepted a body the reference refuses");

    /* Every span inside the body, in order, and equal to the reference's. */
    size_t nrows = dapi_page_rows(pg);
    FUZZ_CHECK(nrows == dapi_page_rows(pc), "the two variants disagree on rows");
    FUZZ_CHECK(nrows == R.nrows, "%zu rows, the reference %zu", nrows, R.nrows);
    FUZZ_CHECK(dapi_page_has_number(pg) == R.has_page, "has_number %d, reference %d",
               dapi_page_has_number(pg), R.has_page);
    if(R.has_page && R.page_sure)
        FUZZ_CHECK(dapi_page_number(pg) == R.page, "page %llu, reference %llu",
                   (unsigned long long)dapi_page_number(pg), (unsigned long long)R.page);
    FUZZ_CHECK(dapi_page_number(pg) == dapi_page_number(pc), "the variants' page numbers");
    if(!R.has_page)
        FUZZ_CHECK(dapi_page_number(pg) == 0, "page number without a \"page\" member");
    size_t slen = 7;
    const char *slug = dapi_page_slug(pg, &slen);
    if(R.has_slug) {
        FUZZ_CHECK(slug == body + R.slug_off && slen == R.slug_len,
                   "slug at %td+%zu, reference %zu+%zu", slug ? slug - body : -1, slen, R.slug_off,
                   R.slug_len);
        check_unquote(slug, slen, scratch);
    } else {
        FUZZ_CHECK(slug == NULL, "a slug without a string \"query_slug\" member");
    }
    const char *prev_end = body;
    for(size_t i = 0; i < nrows; i++) {
        size_t rlen = 0, rlen2 = 0, ncols = 0;
        const char *row = dapi_page_row_json(pg, i, &rlen);
        const char *row2 = dapi_page_row_json(pc, i, &rlen2);
        FUZZ_CHECK(in_body(row, rlen, body, size), "row %zu outside the body", i);
        FUZZ_CHECK(row >= prev_end, "row %zu overlaps the previous one", i);
        FUZZ_CHECK(rlen >= 2 && row[0] == '{' && row[rlen - 1] == '}', "row %zu is not {...}", i);
        FUZZ_CHECK(row == body + R.row_off[i] && rlen == R.row_len[i],
                   "row %zu at %td+%zu, reference %zu+%zu", i, row - body, rlen, R.row_off[i],
                   R.row_len[i]);
        FUZZ_CHECK(rlen2 == rlen && memcmp(row2, row, rlen) == 0, "row %zu: variants differ", i);
        prev_end = row + rlen;
        const struct dapi_cell *cells = dapi_page_row(pg, i, &ncols);
        FUZZ_CHECK(ncols == R.row_first[i + 1] - R.row_first[i], "row %zu: %zu cells, ref %zu", i,
                   ncols, R.row_first[i + 1] - R.row_first[i]);
        const char *cell_end = row + 1;
        for(size_t c = 0; c < ncols; c++) {
            const struct dapi_cell *x = &cells[c];
            const struct ref_cell *y = &R.cells[R.row_first[i] + c];
            FUZZ_CHECK(x->key >= cell_end && in_body(x->key, x->key_len, row, rlen) &&
                           x->val >= x->key + x->key_len && in_body(x->val, x->val_len, row, rlen),
                       "row %zu cell %zu: spans outside the row or out of order", i, c);
            FUZZ_CHECK(x->key == body + y->k && x->key_len == y->klen && x->val == body + y->v &&
                           x->val_len == y->vlen,
                       "row %zu cell %zu differs from the reference", i, c);
            struct fz_json j;
            fz_json_init(&j, x->key, x->key_len);
            FUZZ_CHECK(fz_json_string(&j) == 0 && j.p == j.end, "row %zu cell %zu: bad key", i, c);
            FUZZ_CHECK(fz_json_valid(x->val, x->val_len, NULL) == 1 && x->val_len &&
                           x->val[0] != ' ' && x->val[x->val_len - 1] != ' ',
                       "row %zu cell %zu: value is not one JSON value", i, c);
            check_unquote(x->key, x->key_len, scratch);
            if(x->val[0] == '"')
                check_unquote(x->val, x->val_len, scratch);
            cell_end = x->val + x->val_len;
        }
    }
out:
    dapi_page_free(pg);
    dapi_page_free(pc);
    free(R.row_off);
    free(R.row_len);
    free(R.row_first);
    free(R.cells);
    free(scratch);
    return 0;
}
