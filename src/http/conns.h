/* Connection accounting for the HTTP front: how many connections are open in all and from
 * each client address, consulted before a connection is admitted (--max-connections,
 * --max-connections-per-ip). A plain data structure with no locking and no sockets: http.c
 * holds its mutex around every call. */
#ifndef DAPI_CONNS_H
#define DAPI_CONNS_H

#include <stdint.h>
#include <sys/socket.h>
#include "dapi/err.h"

/* A client address as 16 bytes: IPv6 as it is, IPv4 in its v4-mapped IPv6 form, so that
 * 192.0.2.1 and ::ffff:192.0.2.1 are one client. */
struct dapi_addr {
    unsigned char b[16];
};

/* Fills a from a socket address; other families than AF_INET/AF_INET6 (and short lengths)
 * all map to the zero address, i.e. count as one client. */
void dapi_addr_from_sockaddr(struct dapi_addr *a, const struct sockaddr *sa, socklen_t len);
/* The address as text ("192.0.2.1", "2001:db8::1") into out (at least 46 bytes). */
void dapi_addr_format(const struct dapi_addr *a, char *out, size_t outlen);

struct dapi_conns;

enum dapi_err dapi_conns_new(struct dapi_conns **out, int64_t max_total, int64_t max_per_addr);
void dapi_conns_free(struct dapi_conns *t);

enum { DAPI_CONNS_OK = 0, DAPI_CONNS_FULL = 1, DAPI_CONNS_ADDR_FULL = 2 };
/* Counts one more connection from a, unless that would pass a limit: DAPI_CONNS_OK, or
 * DAPI_CONNS_FULL (max_total open) or DAPI_CONNS_ADDR_FULL (max_per_addr open from a), in
 * which case nothing is counted. */
int dapi_conns_acquire(struct dapi_conns *t, const struct dapi_addr *a);
/* Gives back one connection counted by dapi_conns_acquire. */
void dapi_conns_release(struct dapi_conns *t, const struct dapi_addr *a);
int64_t dapi_conns_total(const struct dapi_conns *t);
/* Connections open from a. */
int64_t dapi_conns_of(const struct dapi_conns *t, const struct dapi_addr *a);
/* Distinct addresses with at least one connection open. */
int64_t dapi_conns_addrs(const struct dapi_conns *t);

#endif
