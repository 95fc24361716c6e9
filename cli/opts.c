/* The option parser shared by the client commands (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int find_long(const struct dapi_cli_opt *opts, size_t n, const char *name, size_t len)
{
    for(size_t i = 0; i < n; i++)
        if(strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static int find_short(const struct dapi_cli_opt *opts, size_t n, char c)
{
    for(size_t i = 0; i < n; i++)
        if(opts[i].short_name && opts[i].short_name == c)
            return (int)i;
    return -1;
}

int dapi_cli_parse(const char *cmd, const struct dapi_cli_opt *opts, size_t n, int argc,
                   char **argv, const char **vals)
{
    for(size_t i = 0; i < n; i++)
        vals[i] = NULL;
    for(int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        const char *inline_val = NULL;
        int k;
        if(arg[0] == '-' && arg[1] == '-' && arg[2]) {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            k = find_long(opts, n, name, len);
            if(k < 0) {
                fprintf(stderr, "dapi %s: unknown option '--%.*s' (see dapi %s --help)\n", cmd,
                        (int)(len > 64 ? 64 : len), name, cmd);
                return -1;
            }
            if(eq)
                inline_val = eq + 1;
        } else if(arg[0] == '-' && arg[1] && !arg[2]) {
            k = find_short(opts, n, arg[1]);
            if(k < 0) {
                fprintf(stderr, "dapi %s: unknown option '%s' (see dapi %s --help)\n", cmd, arg,
                        cmd);
                return -1;
            }
        } else {
            fprintf(stderr, "dapi %s: unexpected argument '%.64s' (see dapi %s --help)\n", cmd,
                    arg, cmd);
            return -1;
        }
        if(!opts[k].metavar) {
            if(inline_val) {
                fprintf(stderr, "dapi %s: --%s takes no value\n", cmd, opts[k].name);
                return -1;
            }
            vals[k] = "1";
        } else if(inline_val) {
            vals[k] = inline_val;
        } else if(a + 1 < argc) {
            vals[k] = argv[++a];
        } else {
            fprintf(stderr, "dapi %s: --%s needs a value (%s)\n", cmd, opts[k].name,
                    opts[k].metavar);
            return -1;
        }
    }
    for(size_t i = 0; i < n; i++) {
        if(!vals[i] && opts[i].env) {
            const char *e = getenv(opts[i].env);
            if(e && e[0])
                vals[i] = e;
        }
    }
    return 0;
}

void dapi_cli_usage(FILE *out, const struct dapi_cli_opt *opts, size_t n)
{
    for(size_t i = 0; i < n; i++) {
        const struct dapi_cli_opt *o = &opts[i];
        char head[96];
        if(o->short_name)
            snprintf(head, sizeof head, "-%c, --%s%s%s", o->short_name, o->name,
                     o->metavar ? " " : "", o->metavar ? o->metavar : "");
        else
            snprintf(head, sizeof head, "    --%s%s%s", o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        fprintf(out, "  %-28s %s", head, o->help);
        if(o->env || o->def) {
            fprintf(out, " [");
            if(o->env)
                fprintf(out, "env %s", o->env);
            if(o->env && o->def)
                fprintf(out, ", ");
            if(o->def)
                fprintf(out, "default %s", o->def);
            fprintf(out, "]");
        }
        fputc('\n', out);
    }
}

int dapi_cli_int(const char *s, long long lo, long long hi, long long *out)
{
    if(!s || !*s || (*s != '-' && (*s < '0' || *s > '9')))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if(errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}
