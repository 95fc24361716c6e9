/* libFuzzer driver: dapi_result_open and the page readers (src/store/result.h), the reader
 * of the result files under <state-dir> (which a crash, a full disk or an operator may leave
 * damaged), in both formats: DAPIRES2 (pages as zstd frames) and DAPIRES1 (rows as text,
 * written by older binaries).
 *
 * The input is the whole file. It is written to one temporary file per process (created
 * with mkstemp in /dev/shm, else $TMPDIR or /tmp, unlinked at once and reached through
 * /proc/self/fd/N, so nothing is left behind even after a crash). Checks:
 *  - dapi_result_open accepts exactly the files that satisfy the layout documented in
 *    result.h, judged here by an independent reader (128-bit arithmetic, no overflow):
 *    magic, total == file size, rows_off == 64, index_off == 64 + rows_len, pages ==
 *    ceil(rows / 100), index[0] == 0, every entry <= rows_len; DAPIRES1: an index of
 *    pages + 1 non-decreasing entries ends the file; DAPIRES2: pages + 1 strictly
 *    increasing entries, the last == data_len, then pages decoded lengths (each at most
 *    65536 x its frame's size) end the file;
 *  - once open, pages/rows are the header's, and for every page 0 .. pages + 1 the slice
 *    (DAPIRES1: dapi_result_page_plain; DAPIRES2: dapi_result_page_frame) is empty outside
 *    1..pages, else lies inside the mapping that /proc/self/maps shows for the file, inside
 *    the data region [64, 64 + data_len), at exactly the offset the index gives; every byte
 *    of it is read and compared with the input;
 *  - DAPIRES2: a page's decoded size is the declared one; decoding it
 *    (dapi_result_page_copy) either fails or gives exactly that many bytes (ASan sees any
 *    write beyond), and decoding it a piece at a time (dapi_zdec) gives the same bytes, or
 *    fails, exactly when the whole decode does. */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "store/codec.h"
#include "store/result.h"
#include "fuzz_common.h"

static int fd = -1;
static char path[64];
static struct stat st0;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dirs[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    for(size_t i = 0; i < 3 && fd < 0; i++) {
        char tmpl[4096];
        if(!dirs[i])
            continue;
        snprintf(tmpl, sizeof tmpl, "%s/dapi-fuzz-result-XXXXXX", dirs[i]);
        fd = mkstemp(tmpl);
        if(fd >= 0)
            unlink(tmpl);
    }
    if(fd < 0 || fstat(fd, &st0)) {
        perror("fuzz_result: cannot create a temporary file");
        exit(1);
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return 0;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for(int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The independent reader: 1 if data is a well-formed DAPIRES1 file, 2 for DAPIRES2. */
static int ref_valid(const uint8_t *d, size_t size)
{
    typedef unsigned __int128 u128;
    if(size < 64)
        return 0;
    int v2 = memcmp(d, "DAPIRES2", 8) == 0;
    if(!v2 && memcmp(d, "DAPIRES1", 8) != 0)
        return 0;
    u128 rows = le64(d + 8), pages = le64(d + 16), rows_off = le64(d + 24),
         rows_len = le64(d + 32), index_off = le64(d + 40), total = le64(d + 48);
    u128 entries = v2 ? 2 * pages + 1 : pages + 1;
    if(total != size || rows_off != 64 || index_off != rows_off + rows_len || index_off > size ||
       (size - index_off) != 8 * entries || pages != (rows + 99) / 100)
        return 0;
    uint64_t prev = 0;
    for(u128 i = 0; i <= pages; i++) {
        uint64_t off = le64(d + index_off + 8 * i);
        if((i == 0 && off != 0) || off < prev || off > rows_len)
            return 0;
        if(v2 && i > 0) {
            u128 decoded = le64(d + index_off + 8 * (pages + i));
            if(off == prev || decoded > (u128)65536 * (off - prev) + 65535)
                return 0;
        }
        prev = off;
    }
    if(v2 && prev != rows_len)
        return 0;
    return v2 ? 2 : 1;
}

/* The mapping of our file, from /proc/self/maps (matched by device and inode). */
static int find_mapping(uintptr_t *lo, uintptr_t *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if(!f)
        return 0;
    while(fgets(line, sizeof line, f)) {
        unsigned long a, b, off, ino;
        unsigned maj, min;
        if(sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &a, &b, &off, &maj, &min, &ino) == 6 &&
           ino == (unsigned long)st0.st_ino && maj == major(st0.st_dev) &&
           min == minor(st0.st_dev)) {
            FUZZ_CHECK(!found, "the file is mapped twice (a mapping leaked?)");
            FUZZ_CHECK(off == 0, "mapping starts at file offset %lu", off);
            *lo = a;
            *hi = b;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_begin(data, size);
    if(ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("fuzz_result: cannot write the temporary file");
        abort();
    }
    int want = ref_valid(data, size);
    struct dapi_result *r = (struct dapi_result *)0x1;
    enum dapi_err e = dapi_result_open(&r, path);
    if(e != DAPI_OK) {
        FUZZ_CHECK(r == NULL, "*out not NULL after failure");
        FUZZ_CHECK(!want, "a well-formed file was refused (error %d)", (int)e);
        /* Reading /proc/self/maps costs more than the parse: sample 1 refusal in 64. */
        static unsigned refusals;
        uintptr_t lo, hi;
        if(refusals++ % 64 == 0)
            FUZZ_CHECK(!find_mapping(&lo, &hi), "a refused file stays mapped");
        return 0;
    }
    FUZZ_CHECK(r != NULL, "success without a result");
    FUZZ_CHECK(want, "a damaged file was accepted (rows %llu, pages %llu)",
               (unsigned long long)le64(data + 8), (unsigned long long)le64(data + 16));
    uint64_t rows = dapi_result_rows(r), pages = dapi_result_pages(r);
    FUZZ_CHECK(rows == le64(data + 8) && pages == le64(data + 16), "rows/pages differ");
    uint64_t rows_len = le64(data + 32);
    const uint8_t *index = data + 64 + rows_len;
    FUZZ_CHECK(dapi_result_compressed(r) == (want == 2), "format misread");

    uintptr_t lo = 0, hi = 0;
    FUZZ_CHECK(find_mapping(&lo, &hi), "the opened file is not mapped");
    FUZZ_CHECK(hi - lo >= size, "mapping of %zu bytes for a %zu-byte file", (size_t)(hi - lo),
               size);
    uintptr_t rows_lo = lo + 64, rows_hi = lo + 64 + rows_len;
    for(uint64_t p = 0; p <= pages + 1; p++) {
        const char *d = NULL;
        size_t len = 12345, dlen = 0;
        if(want == 1) {
            FUZZ_CHECK(dapi_result_page_plain(r, p, &d, &len) == 0, "page %llu: no slice",
                       (unsigned long long)p);
        } else if(dapi_result_page_frame(r, p, (const void **)&d, &len, &dlen) == 0) {
            if(p == 0 || p > pages)
                d = ""; /* (no frame) */
        } else {
            FUZZ_CHECK(p >= 1 && p <= pages, "page %llu: refused past the end",
                       (unsigned long long)p);
            d = NULL; /* a frame that is not one frame of the declared size: checked below */
        }
        if(want == 2 && p >= 1 && p <= pages) {
            uint64_t declared = le64(index + 8 * (pages + 1) + 8 * (p - 1));
            FUZZ_CHECK(dapi_result_page_size(r, p) == declared, "page %llu: decoded size",
                       (unsigned long long)p);
            FUZZ_CHECK(!d || dlen == declared, "page %llu: frame's decoded size",
                       (unsigned long long)p);
            if(declared <= (16u << 20)) {
                char *rows = NULL;
                size_t rl = 0;
                enum dapi_err de = dapi_result_page_copy(r, p, &rows, &rl);
                FUZZ_CHECK(de == DAPI_OK
                               ? rows && rl == declared && rows[rl] == '\0'
                               : rows == NULL && (de == DAPI_ERR_IO || de == DAPI_ERR_NOMEM),
                           "page %llu: decode gave %d, %zu bytes of %llu", (unsigned long long)p,
                           (int)de, rl, (unsigned long long)declared);
                FUZZ_CHECK(de != DAPI_OK || d, "page %llu: decoded though its frame was refused",
                           (unsigned long long)p);
                /* decoded a piece at a time (a huge page's answer): the same bytes, or a
                 * failure exactly when the whole decode fails */
                if(d) {
                    struct dapi_zdec *z = dapi_zdec_new(d, len, declared);
                    char *sbuf = malloc((size_t)declared + 1);
                    long got = 0, k = 0;
                    while(z && sbuf &&
                          (k = dapi_zdec_read(z, sbuf + got,
                                              (size_t)declared + 1 - (size_t)got < 4093
                                                  ? (size_t)declared + 1 - (size_t)got
                                                  : 4093)) > 0)
                        got += k;
                    if(z && sbuf)
                        FUZZ_CHECK(de == DAPI_OK ? k == 0 && (uint64_t)got == declared &&
                                                       memcmp(sbuf, rows, (size_t)got) == 0
                                                 : de != DAPI_ERR_IO || k < 0,
                                   "page %llu: streamed decode %ld after %ld bytes, whole %d",
                                   (unsigned long long)p, k, got, (int)de);
                    free(sbuf);
                    dapi_zdec_free(z);
                }
                free(rows);
            }
            if(!d)
                continue;
        }
        FUZZ_CHECK(d != NULL, "page %llu: NULL data", (unsigned long long)p);
        if(p == 0 || p > pages) {
            FUZZ_CHECK(len == 0, "page %llu of %llu is not empty", (unsigned long long)p,
                       (unsigned long long)pages);
            continue;
        }
        uintptr_t a = (uintptr_t)d;
        FUZZ_CHECK(a >= rows_lo && a <= rows_hi && len <= rows_hi - a,
                   "page %llu: [%#lx, +%zu) outside the rows [%#lx, %#lx)", (unsigned long long)p,
                   (unsigned long)a, len, (unsigned long)rows_lo, (unsigned long)rows_hi);
        uint64_t from = le64(index + 8 * (p - 1)), to = le64(index + 8 * p);
        FUZZ_CHECK(a - rows_lo == from && len == to - from,
                   "page %llu: offset %llu len %zu, the index says %llu len %llu",
                   (unsigned long long)p, (unsigned long long)(a - rows_lo), len,
                   (unsigned long long)from, (unsigned long long)(to - from));
        /* Read every byte of the slice (a fault here is an out-of-bounds read). */
        FUZZ_CHECK(memcmp(d, data + 64 + from, len) == 0, "page %llu: bytes differ from the file",
                   (unsigned long long)p);
    }
    dapi_result_close(r);
    FUZZ_CHECK(!find_mapping(&lo, &hi), "dapi_result_close left the file mapped");
    return 0;
}
