/* Connection accounting (src/http/conns.c): total and per-address limits, IPv4 and IPv6
 * keys, and a long random acquire/release sequence checked against a naive model, so that
 * the table's removal (backward shift) can never lose or invent a count. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "http/conns.h"
#include "t.h"

static struct dapi_addr v4(const char *text)
{
    struct sockaddr_in in = {0};
    in.sin_family = AF_INET;
    inet_pton(AF_INET, text, &in.sin_addr);
    struct dapi_addr a;
    dapi_addr_from_sockaddr(&a, (struct sockaddr *)&in, sizeof in);
    return a;
}

static struct dapi_addr v6(const char *text)
{
    struct sockaddr_in6 in6 = {0};
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, text, &in6.sin6_addr);
    struct dapi_addr a;
    dapi_addr_from_sockaddr(&a, (struct sockaddr *)&in6, sizeof in6);
    return a;
}

static void test_limits(void)
{
    struct dapi_conns *t;
    T_EQ_INT(dapi_conns_new(&t, 5, 2), DAPI_OK);
    struct dapi_addr a = v4("127.0.0.2"), b = v4("127.0.0.3"), c = v6("2001:db8::1");
    T_EQ_INT(dapi_conns_acquire(t, &a), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_acquire(t, &a), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_acquire(t, &a), DAPI_CONNS_ADDR_FULL);
    T_EQ_INT(dapi_conns_of(t, &a), 2);
    T_EQ_INT(dapi_conns_acquire(t, &b), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_acquire(t, &c), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_acquire(t, &c), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_total(t), 5);
    T_EQ_INT(dapi_conns_acquire(t, &b), DAPI_CONNS_FULL); /* total limit first */
    T_EQ_INT(dapi_conns_total(t), 5);                     /* a refusal counts nothing */
    dapi_conns_release(t, &a);
    T_EQ_INT(dapi_conns_acquire(t, &b), DAPI_CONNS_OK);
    T_EQ_INT(dapi_conns_addrs(t), 3);
    dapi_conns_release(t, &a);
    T_EQ_INT(dapi_conns_of(t, &a), 0);
    T_EQ_INT(dapi_conns_addrs(t), 2);
    dapi_conns_release(t, &a); /* not counted: ignored, never negative */
    T_EQ_INT(dapi_conns_total(t), 4);
    dapi_conns_free(t);
}

static void test_addresses(void)
{
    struct dapi_addr a = v4("192.0.2.1"), m = v6("::ffff:192.0.2.1"), o = v6("2001:db8::1");
    T_CHECK(memcmp(&a, &m, sizeof a) == 0, "IPv4 and its v4-mapped IPv6 form are one client");
    char text[64];
    dapi_addr_format(&a, text, sizeof text);
    T_EQ_STR(text, "192.0.2.1");
    dapi_addr_format(&o, text, sizeof text);
    T_EQ_STR(text, "2001:db8::1");
    struct dapi_addr u;
    struct sockaddr sa = {.sa_family = AF_UNIX};
    dapi_addr_from_sockaddr(&u, &sa, sizeof sa);
    struct dapi_addr zero = {{0}};
    T_CHECK(memcmp(&u, &zero, sizeof u) == 0, "other families map to the zero address");
    struct dapi_conns *t;
    T_EQ_INT(dapi_conns_new(&t, 0, 1), DAPI_ERR_INVALID);
    T_EQ_INT(dapi_conns_new(&t, 1, 0), DAPI_ERR_INVALID);
}

/* Random acquire/release over a small address space (so probe runs collide and wrap)
 * against a model; the table is checked after every step. */
static void test_model(void)
{
    enum { ADDRS = 200, MAX_TOTAL = 150, PER = 4, STEPS = 200000 };
    struct dapi_conns *t;
    T_EQ_INT(dapi_conns_new(&t, MAX_TOTAL, PER), DAPI_OK);
    struct dapi_addr addrs[ADDRS];
    int64_t model[ADDRS] = {0}, total = 0;
    char text[64];
    for(int i = 0; i < ADDRS; i++) {
        snprintf(text, sizeof text, i % 2 ? "10.0.%d.%d" : "2001:db8::%d:%d", i / 200, i % 200);
        addrs[i] = i % 2 ? v4(text) : v6(text);
    }
    srand(12345);
    int bad = 0;
    for(int step = 0; step < STEPS && !bad; step++) {
        int i = rand() % ADDRS;
        if(rand() % 2) {
            int want = total >= MAX_TOTAL ? DAPI_CONNS_FULL
                       : model[i] >= PER  ? DAPI_CONNS_ADDR_FULL
                                          : DAPI_CONNS_OK;
            int got = dapi_conns_acquire(t, &addrs[i]);
            if(got != want)
                bad = 1;
            if(got == DAPI_CONNS_OK) {
                model[i]++;
                total++;
            }
        } else if(model[i] > 0) {
            dapi_conns_release(t, &addrs[i]);
            model[i]--;
            total--;
        }
        if(step % 97 == 0 || bad) {
            int64_t n = 0;
            for(int k = 0; k < ADDRS; k++) {
                if(dapi_conns_of(t, &addrs[k]) != model[k])
                    bad = 1;
                n += model[k] > 0;
            }
            if(dapi_conns_total(t) != total || dapi_conns_addrs(t) != n)
                bad = 1;
        }
        if(bad)
            T_CHECK(0, "table and model differ at step %d", step);
    }
    for(int k = 0; k < ADDRS; k++)
        while(model[k]--)
            dapi_conns_release(t, &addrs[k]);
    T_EQ_INT(dapi_conns_total(t), 0);
    T_EQ_INT(dapi_conns_addrs(t), 0);
    T_CHECK(!bad, "random sequence matches the model");
    dapi_conns_free(t);
}

int main(void)
{
    test_limits();
    test_addresses();
    test_model();
    T_DONE();
}
