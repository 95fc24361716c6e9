/* Fault injection for the Nekt emulator (--emulate-faults). A spec is a list of rules
 * separated by ';', each a list of key=value separated by ',':
 *
 *   path=PREFIX     requests whose path starts with PREFIX (default: every emulator path)
 *   method=M        only this method
 *   first=N         fire on the first N matching requests          (default: always)
 *   rate=P          fire with probability P (0..1), seeded by seed= (default 1)
 *   status=CODE     answer CODE with {"detail":"injected fault"}
 *   retry_after=S   with status: add Retry-After: S
 *   latency_ms=MS   wait MS before answering
 *   body=truncate|garbage|wrongtype|empty   corrupt the answer's body (status kept)
 *   expire=1        presigned file downloads answer 403 "Request has expired"
 *   url_host=H[:P]  presigned URLs in the answer point at H[:P] (e.g. a closed port: a
 *                   bucket that cannot be reached) instead of the emulator
 *
 * Rules are tried in order; every firing rule applies (latency adds up; the first status, body
 * or url_host rule wins). */
#ifndef DAPI_FAULTS_H
#define DAPI_FAULTS_H

#include <stddef.h>
#include <stdint.h>

struct dapi_faults;

struct dapi_fault_action {
    int64_t latency_ms;
    int status;      /* 0 = none */
    int retry_after; /* -1 = none */
    char body[16];   /* "" = none */
    int expire;
    char url_host[64]; /* "" = the emulator's own address */
};

/* Parses spec (NULL or "" = no faults). On error writes a reason and returns -1. */
int dapi_faults_parse(struct dapi_faults **out, const char *spec, char *err, size_t errlen);
void dapi_faults_free(struct dapi_faults *f);
/* Decides what happens to one request (thread-safe). */
void dapi_faults_match(struct dapi_faults *f, const char *method, const char *path,
                       struct dapi_fault_action *act);

#endif
