/* The operations endpoints' pure parts: which client addresses count as loopback for
 * --metrics-access loopback (everything else is refused with 403). */
#include "api/api.h"
#include "t.h"

int main(void)
{
    const char *yes[] = {"127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1"};
    const char *no[] = {"10.0.0.1",        "192.168.1.127",   "1.127.0.0", "::2",
                        "::ffff:10.0.0.1", "fe80::1",         "",          "128.0.0.1",
                        "::1:2",           "0:0:0:0:0:0:0:2", "12.7.0.0.1"};
    for(size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        T_CHECK(dapi_api_loopback(yes[i]), "%s is loopback", yes[i]);
    for(size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        T_CHECK(!dapi_api_loopback(no[i]), "%s is not loopback", no[i]);
    T_DONE();
}
