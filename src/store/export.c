/* A stored result as one Parquet file (the export's parquet format): its rows written as
 * NDJSON into a private temporary directory, converted by DuckDB with the result's column
 * types (engine/engine.h), then opened and unlinked — the caller sends the open file and
 * nothing stays on disk whatever happens. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/rows.h"
#include "engine/engine.h"
#include "store/codec.h"
#include "store/export.h"

static int write_all(int fd, const char *p, size_t n)
{
    while(n) {
        ssize_t w = write(fd, p, n);
        if(w < 0 && errno == EINTR)
            continue;
        if(w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Follows the longest line of a text seen in pieces: *run is the length of the line the
 * last piece left open, *most the longest so far. */
static void longest_line(const char *p, size_t n, uint64_t *run, uint64_t *most)
{
    const char *end = p + n;
    while(p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        *run += (uint64_t)((nl ? nl : end) - p);
        if(*run > *most)
            *most = *run;
        if(!nl)
            return;
        *run = 0;
        p = nl + 1;
    }
}

/* A large page is fed to the conversion this many bytes at a time. */
#define PIECE (256 * 1024)

/* One piece of a large page into the conversion, and out written once it holds a batch. */
static enum dapi_err feed_piece(struct dapi_rows *conv, struct dapi_buf *out, const char *p,
                                size_t n, size_t batch, dapi_export_flush_fn flush, void *arg)
{
    enum dapi_err result = dapi_rows_feed(conv, out, p, n);
    return !result && out->len >= batch ? flush(arg, out) : result;
}

enum dapi_err dapi_export_rows(struct dapi_rows *conv, struct dapi_buf *out, const char *rows,
                               size_t len, const uint32_t *seps, size_t nseps, size_t batch,
                               dapi_export_flush_fn flush, void *arg)
{
    if(len < DAPI_PAGE_STREAM_MIN)
        return nseps ? dapi_rows_page_cut(conv, out, rows, len, seps, nseps)
                     : dapi_rows_page(conv, out, rows, len);
    enum dapi_err result = DAPI_OK;
    dapi_rows_feed_begin(conv);
    for(size_t at = 0; at < len && !result; at += PIECE)
        result = feed_piece(conv, out, rows + at, len - at < PIECE ? len - at : PIECE, batch,
                            flush, arg);
    return result ? result : dapi_rows_feed_end(conv);
}

enum dapi_err dapi_export_page(const struct dapi_result *r, uint64_t page, struct dapi_rows *conv,
                               struct dapi_buf *out, struct dapi_buf *page_buf, size_t batch,
                               dapi_export_flush_fn flush, void *arg)
{
    const void *frame;
    size_t flen = 0, dlen = 0;
    if(dapi_result_page_size(r, page) < DAPI_PAGE_STREAM_MIN ||
       dapi_result_page_frame(r, page, &frame, &flen, &dlen) || !flen) {
        const char *rows = NULL; /* small, or DAPIRES1 (rows fed from the mapping) */
        size_t len = 0;
        enum dapi_err result = dapi_result_page_into(r, page, page_buf, &rows, &len);
        return result ? result
                      : dapi_export_rows(conv, out, rows, len, NULL, 0, batch, flush, arg);
    }
    struct dapi_zdec *d = dapi_zdec_new(frame, flen, dlen);
    char *piece = malloc(PIECE);
    enum dapi_err result = d && piece ? DAPI_OK : DAPI_ERR_NOMEM;
    if(!result)
        dapi_rows_feed_begin(conv);
    while(!result) {
        long k = dapi_zdec_read(d, piece, PIECE);
        if(k <= 0) {
            result = k < 0 ? DAPI_ERR_IO : dapi_rows_feed_end(conv);
            break;
        }
        result = feed_piece(conv, out, piece, (size_t)k, batch, flush, arg);
    }
    free(piece);
    dapi_zdec_free(d);
    return result;
}

/* The NDJSON file being written, and what is known of its lines. */
struct ndjson_file {
    int fd;
    uint64_t run, longest;
    char **msg;
};

static enum dapi_err ndjson_flush(void *arg, struct dapi_buf *out)
{
    struct ndjson_file *f = arg;
    longest_line(out->data, out->len, &f->run, &f->longest);
    enum dapi_err result = DAPI_OK;
    if(out->len && write_all(f->fd, out->data, out->len)) {
        int e = errno;
        *f->msg = strdup(strerror(e));
        result = e == ENOSPC || e == EDQUOT ? DAPI_ERR_BUSY : DAPI_ERR_IO;
    }
    dapi_buf_reset(out);
    return result;
}

/* Writes every row of r as NDJSON to path; *longest: the bytes of its longest row. */
static enum dapi_err write_rows(const struct dapi_result *r, const char *path,
                                const atomic_int *stop, uint64_t *longest, char **msg)
{
    struct ndjson_file f = {.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600),
                            .msg = msg};
    if(f.fd < 0) {
        *msg = strdup(strerror(errno));
        return errno == ENOSPC || errno == EDQUOT ? DAPI_ERR_BUSY : DAPI_ERR_IO;
    }
    struct dapi_rows conv;
    struct dapi_buf out, page; /* reused: no allocation per page */
    dapi_rows_init(&conv, DAPI_ROWS_NDJSON);
    dapi_buf_init(&out, (size_t)-1 / 2);
    dapi_buf_init(&page, (size_t)-1 / 2);
    enum dapi_err result = DAPI_OK;
    uint64_t pages = dapi_result_pages(r);
    for(uint64_t p = 1; p <= pages && !result; p++) {
        result = dapi_export_page(r, p, &conv, &out, &page, 1 << 20, ndjson_flush, &f);
        if(!result && (out.len >= 1 << 20 || p == pages))
            result = ndjson_flush(&f, &out);
        if(!result && stop && atomic_load(stop))
            result = DAPI_ERR_SHUTDOWN;
    }
    *longest = f.longest;
    int fd = f.fd;
    dapi_buf_free(&out);
    dapi_buf_free(&page);
    dapi_rows_free(&conv);
    if(close(fd) && !result) {
        *msg = strdup(strerror(errno));
        result = DAPI_ERR_IO;
    }
    return result;
}

enum dapi_err dapi_result_parquet(const struct dapi_result *r, const char *const *names,
                                  const char *const *types, size_t n, const char *tmp_dir,
                                  const char *memory_limit, int64_t max_spill_bytes,
                                  const atomic_int *stop, int *fd, uint64_t *size, char **msg)
{
    char dir[4200], in[4300], out[4300];
    *fd = -1;
    *msg = NULL;
    snprintf(dir, sizeof dir, "%s/export-XXXXXX", tmp_dir);
    if(!mkdtemp(dir)) {
        *msg = strdup(strerror(errno));
        return errno == ENOSPC ? DAPI_ERR_BUSY : DAPI_ERR_IO;
    }
    snprintf(in, sizeof in, "%s/rows.ndjson", dir);
    snprintf(out, sizeof out, "%s/rows.parquet", dir);
    uint64_t longest = 0;
    enum dapi_err result = write_rows(r, in, stop, &longest, msg);
    if(!result)
        result = dapi_engine_ndjson_to_parquet(dir, in, out, names, types, n, longest,
                                               memory_limit, max_spill_bytes, msg);
    unlink(in);
    if(!result) {
        struct stat st;
        *fd = open(out, O_RDONLY | O_CLOEXEC);
        if(*fd < 0 || fstat(*fd, &st)) {
            *msg = strdup(strerror(errno));
            result = DAPI_ERR_IO;
        } else {
            *size = (uint64_t)st.st_size;
        }
    }
    unlink(out);
    rmdir(dir); /* (DuckDB's spill files are gone with its database) */
    if(result && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    return result;
}
