/* `dapi describe`'s LAYER.TABLE: split at the first '.', or SQL-quoted names. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "t.h"

static void ok(const char *arg, const char *layer, const char *table)
{
    char *l = NULL, *t = NULL;
    T_EQ_INT(dapi_cli_split_table(arg, &l, &t), 0);
    T_EQ_STR(l, layer);
    T_EQ_STR(t, table);
    free(l);
    free(t);
}

static void bad(const char *arg)
{
    char *l = (char *)"x", *t = (char *)"x";
    T_CHECK(dapi_cli_split_table(arg, &l, &t) != 0 && !l && !t, "refused: %s", arg);
}

int main(void)
{
    ok("a.b", "a", "b");
    ok("a.b.c", "a", "b.c");
    ok("\"a.b\".\"t\"", "a.b", "t");
    ok("\"odd layer\".\"ta\"\"ble\"", "odd layer", "ta\"ble");
    ok("\"x\".y z", "x", "y z");
    ok("l.\"t\"", "l", "t");
    bad("ab");
    bad(".b");
    bad("a.");
    bad("\"a.b");
    bad("\"a\"b.c");
    bad("\"a\".\"b\"c");
    bad("\"\".t");
    T_DONE();
}
