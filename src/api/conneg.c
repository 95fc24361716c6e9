#include "api/conneg.h"

#include "base/buf.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A qvalue (RFC 9110 12.4.2: "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]) in thousandths, or -1
 * if malformed. */
static int qvalue(const char *s, size_t n)
{
    if(n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int v = (s[0] - '0') * 1000, scale = 100;
    if(n == 1)
        return v;
    if(s[1] != '.' || n > 5)
        return -1;
    for(size_t i = 2; i < n; i++, scale /= 10) {
        if(s[i] < '0' || s[i] > '9')
            return -1;
        v += (s[i] - '0') * scale;
    }
    return v > 1000 ? -1 : v;
}

/* A content coding: its names (aliases). */
struct coding {
    const char *const *names;
    size_t n;
};

/* Which of the codings set[0..nset) (at most 8) h accepts, in one pass: bit i for set[i].
 * For each, the highest q of its entries decides; "*" only when it has none. */
static unsigned accepts(const char *h, const struct coding *set, size_t nset)
{
    if(!h || nset > 8)
        return 0;
    int own[8], star = -1; /* q of each coding's entries and of "*", -1 = absent */
    for(size_t i = 0; i < nset; i++)
        own[i] = -1;
    const char *p = h;
    for(;;) {
        while(ows(*p) || *p == ',')
            p++;
        if(!*p)
            break;
        size_t tok = strcspn(p, ";, \t");
        if(tok == 0)
            return 0;
        const char *name = p;
        p += tok;
        int q = 1000;
        /* parameters: only q is defined for Accept-Encoding */
        for(;;) {
            while(ows(*p))
                p++;
            if(*p != ';')
                break;
            p++;
            while(ows(*p))
                p++;
            size_t pn = strcspn(p, "=;, \t");
            const char *pname = p;
            p += pn;
            while(ows(*p))
                p++;
            if(*p != '=')
                return 0;
            p++;
            while(ows(*p))
                p++;
            size_t vn = strcspn(p, ";, \t");
            if(pn == 1 && (*pname == 'q' || *pname == 'Q')) {
                q = qvalue(p, vn);
                if(q < 0)
                    return 0;
            }
            p += vn;
        }
        while(ows(*p))
            p++;
        if(*p && *p != ',')
            return 0;
        size_t c = nset;
        for(size_t i = 0; i < nset && c == nset; i++)
            for(size_t k = 0; k < set[i].n; k++)
                if(tok == strlen(set[i].names[k]) && strncasecmp(name, set[i].names[k], tok) == 0)
                    c = i;
        if(c < nset)
            own[c] = q > own[c] ? q : own[c];
        else if(tok == 1 && *name == '*')
            star = q > star ? q : star;
    }
    unsigned mask = 0;
    for(size_t i = 0; i < nset; i++)
        if(own[i] >= 0 ? own[i] > 0 : star > 0)
            mask |= 1u << i;
    return mask;
}

int dapi_accepts_coding(const char *h, const char *coding)
{
    struct coding one = {&coding, 1};
    return accepts(h, &one, 1) != 0;
}

unsigned dapi_accepted_codings(const char *h)
{
    static const char *const zstd[] = {"zstd"}, *const gzip[] = {"gzip", "x-gzip"};
    static const struct coding sent[] = {{zstd, 1}, {gzip, 2}}; /* (the bits' order) */
    return accepts(h, sent, 2);
}

int dapi_accepts_gzip(const char *h)
{
    return (dapi_accepted_codings(h) & DAPI_CODING_GZIP) != 0;
}

/* The opaque-tag of an entity-tag (RFC 9110 8.8.3), W/ dropped: *tag, *n. 0 or -1. */
static int opaque(const char **s, size_t *n)
{
    const char *p = *s;
    if(p[0] == 'W' && p[1] == '/')
        p += 2;
    if(*p != '"')
        return -1;
    const char *end = strchr(p + 1, '"');
    if(!end)
        return -1;
    *s = p;
    *n = (size_t)(end - p) + 1;
    return 0;
}

int dapi_etag_matches(const char *h, const char *etag)
{
    if(!h)
        return 0;
    const char *mine = etag;
    size_t mlen;
    if(opaque(&mine, &mlen))
        return 0;
    const char *p = h;
    while(ows(*p))
        p++;
    if(*p == '*') {
        p++;
        while(ows(*p))
            p++;
        return *p == '\0';
    }
    for(;;) {
        while(ows(*p) || *p == ',')
            p++;
        if(!*p)
            return 0;
        const char *t = p;
        size_t n;
        if(opaque(&t, &n))
            return 0;
        if(n == mlen && memcmp(t, mine, n) == 0)
            return 1;
        p = t + n;
        while(ows(*p))
            p++;
        if(*p && *p != ',')
            return 0;
    }
}

void dapi_page_etag(char *out, size_t n, uint64_t result_id, const char *slug,
                    const char *page_text, const char *coding)
{
    uint64_t x = 0xcbf29ce484222325ull ^ result_id; /* FNV-1a over the slug, seeded by id */
    for(const char *s = slug; *s; s++)
        x = (x ^ (unsigned char)*s) * 0x100000001b3ull;
    x ^= result_id * 0x9E3779B97F4A7C15ull;
    /* "<16 hex digits>-<page>[-<coding>]" by hand: snprintf showed in a page's profile */
    char t[96], *p = t;
    *p++ = '"';
    for(int shift = 60; shift >= 0; shift -= 4)
        *p++ = "0123456789abcdef"[(x >> shift) & 15];
    *p++ = '-';
    size_t pl = strnlen(page_text, 48);
    memcpy(p, page_text, pl);
    p += pl;
    if(coding) {
        size_t cl = strnlen(coding, 16);
        *p++ = '-';
        memcpy(p, coding, cl);
        p += cl;
    }
    *p++ = '"';
    *p = '\0';
    dapi_copy_str(out, n, t);
}
