/* DuckDB's error messages made client-ready: cut to a bounded length (dupmsg) and located
 * (dapi_engine_locate_error: the line and column DuckDB's LINE block points at). */
#include "engine/engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

/* The block DuckDB ends a message with when it knows where in the query the error is:
 * "\n\nLINE <n>: <the line, or 80 columns of it around the error>\n<spaces>^". */
static const char *line_block(const char *m)
{
    const char *at = NULL;
    for(const char *p = strstr(m, "\n\nLINE "); p; p = strstr(p + 1, "\n\nLINE "))
        at = p;
    return at && strlen(at) < 1024 && strchr(at + 2, '^') ? at : NULL;
}

/* prefix + DuckDB's message m, which may echo a long SQL text: cut to its first 16 KiB, saying
 * so, rather than dropped (the API's own bound on details, 32 KiB, is larger: one cut note).
 * A cut keeps DuckDB's closing LINE block, which says where the error is. */
char *dupmsg(const char *prefix, const char *m)
{
    struct dapi_buf b;
    dapi_buf_init(&b, 64 * 1024);
    dapi_buf_adds(&b, prefix);
    if(!m)
        m = "unknown error";
    const char *block = strlen(m) > 16 * 1024 ? line_block(m) : NULL;
    if(block) {
        char *head = strndup(m, (size_t)(block - m));
        if(head)
            dapi_buf_add_cut(&b, head, 16 * 1024 - 1024);
        else
            dapi_buf_fail(&b, DAPI_ERR_NOMEM);
        free(head);
        dapi_buf_adds(&b, block);
    } else {
        dapi_buf_add_cut(&b, m, 16 * 1024);
    }
    return dapi_buf_take(&b, NULL);
}

/* The text shown (slen bytes) in the line l (llen bytes): at its start, or anywhere. */
static const char *find_shown(const char *l, size_t llen, const char *shown, size_t slen,
                              int anywhere)
{
    for(const char *q = l; q + slen <= l + llen; q++) {
        if(memcmp(q, shown, slen) == 0)
            return q;
        if(!anywhere)
            break;
    }
    return NULL;
}

/* Where DuckDB's LINE block points, as a line and a column of sql (1-based, the column in
 * characters). DuckDB draws the caret in display columns (tabs and other control characters
 * take none, wide characters two) under the line or an 80-column window of it ("..." at
 * either end); the column is worked out from the part of the line before the caret, which
 * must be found in sql as shown and be ASCII (else only the line is known: *col = 0).
 * Returns 0, or -1 when msg has no such block or it does not match sql (a wrapped query). */
static int error_position(const char *msg, const char *sql, long *line, long *col)
{
    const char *block = line_block(msg);
    if(!block)
        return -1;
    const char *p = block + strlen("\n\nLINE ");
    char *end;
    long n = strtol(p, &end, 10);
    if(end == p || n < 1 || strncmp(end, ": ", 2) != 0)
        return -1;
    const char *shown = end + 2, *nl = strchr(shown, '\n');
    if(!nl)
        return -1;
    size_t caret = strspn(nl + 1, " ");
    size_t indent = (size_t)(shown - (block + 2)); /* "LINE n: " */
    if(nl[1 + caret] != '^' || caret < indent)
        return -1;
    long width = (long)(caret - indent); /* display columns of the shown text before it */
    /* line n of sql */
    const char *l = sql;
    for(long i = 1; i < n && l; i++)
        if((l = strchr(l, '\n')))
            l++;
    if(!l)
        return -1;
    size_t llen = strcspn(l, "\n");
    if(llen && l[llen - 1] == '\r')
        llen--;
    size_t slen = (size_t)(nl - shown);
    int lead = slen >= 3 && strncmp(shown, "...", 3) == 0 && (llen < 3 || strncmp(l, "...", 3));
    if(lead) { /* a window: the caret's columns count the "..." */
        shown += 3;
        slen -= 3;
        width -= 3;
    }
    /* where the shown text starts in the line: at its start, or anywhere for a window; a
     * window may also end with "..." that the line does not have */
    const char *from = find_shown(l, llen, shown, slen, lead);
    if(!from && slen >= 3 && strncmp(shown + slen - 3, "...", 3) == 0)
        from = find_shown(l, llen, shown, slen -= 3, lead);
    if(!from)
        return -1;
    *line = n;
    *col = 0;
    /* characters before the shown text (code points), then the shown text up to the caret */
    long chars = 0;
    for(const char *q = l; q < from; q++)
        chars += ((unsigned char)*q & 0xC0) != 0x80;
    long w = 0;
    size_t i = 0;
    for(; i < slen; i++) {
        unsigned char c = (unsigned char)shown[i];
        if(c >= 0x80)
            return 0; /* its display width is not worked out here: the line only */
        int cw = c >= 0x20 && c != 0x7f;
        if(w == width && cw)
            break;
        w += cw;
        if(w > width)
            return 0;
    }
    if(w != width)
        return 0;
    *col = chars + (long)i + 1;
    return 0;
}

char *dapi_engine_locate_error(const char *msg, const char *sql)
{
    long line, col;
    if(!msg || !sql || error_position(msg, sql, &line, &col))
        return NULL;
    char where[64];
    if(col)
        snprintf(where, sizeof where, " at line %ld, column %ld", line, col);
    else
        snprintf(where, sizeof where, " at line %ld", line);
    /* "Binder Error: …" -> "Binder Error at line 1, column 8: …" (at the start, so it
     * survives a message cut or flattened onto one line); else after the first line */
    const char *colon = strstr(msg, " Error: ");
    size_t at = colon && colon - msg < 48 && !memchr(msg, '\n', (size_t)(colon - msg))
                    ? (size_t)(colon - msg) + strlen(" Error")
                    : strcspn(msg, "\n");
    struct dapi_buf b;
    dapi_buf_init(&b, strlen(msg) + sizeof where + 8);
    dapi_buf_add(&b, msg, at);
    if(colon && at == (size_t)(colon - msg) + strlen(" Error"))
        dapi_buf_adds(&b, where);
    else
        dapi_buf_addf(&b, " (%s)", where + 1);
    dapi_buf_adds(&b, msg + at);
    return dapi_buf_take(&b, NULL);
}
