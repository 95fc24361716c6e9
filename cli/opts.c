/* The option parser shared by the client commands (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dapi/version.h"
#include "engine/engine.h"

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

/* Gives option k its value: a switch gets "1"; an option with a value takes inline (the
 * rest of the argument) or the next argument, advancing *a. name is how the user wrote it. */
static int take(const char *cmd, const struct dapi_cli_opt *o, const char *name,
                const char *inline_val, int *a, int argc, char **argv, const char **val)
{
    if(!o->metavar) {
        if(inline_val) {
            fprintf(stderr, "dapi %s: %s takes no value\n", cmd, name);
            return -1;
        }
        *val = "1";
    } else if(inline_val) {
        *val = inline_val;
    } else if(*a + 1 < argc) {
        *val = argv[++*a];
    } else {
        fprintf(stderr, "dapi %s: %s needs a value (%s)\n", cmd, name, o->metavar);
        return -1;
    }
    return 0;
}

/* A cluster of short options: "-q", "-qf csv", "-fjson", "-qfcsv". */
static int take_shorts(const char *cmd, const struct dapi_cli_opt *opts, size_t n, const char *arg,
                       int *a, int argc, char **argv, const char **vals)
{
    for(const char *c = arg + 1; *c; c++) {
        int k = find_short(opts, n, *c);
        char name[3] = {'-', *c, '\0'};
        if(k < 0) {
            if((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
                fprintf(stderr, "dapi %s: unknown option in '%.64s' (see dapi %s --help)\n", cmd,
                        arg, cmd);
            else
                fprintf(stderr, "dapi %s: unknown option '%s' (see dapi %s --help)\n", cmd, name,
                        cmd);
            return -1;
        }
        /* an option with a value takes the rest of the cluster, or the next argument */
        const char *rest = opts[k].metavar && c[1] ? c + 1 : NULL;
        if(take(cmd, &opts[k], name, rest, a, argc, argv, &vals[k]))
            return -1;
        if(opts[k].metavar)
            break;
    }
    return 0;
}

int dapi_cli_parse(const char *cmd, const struct dapi_cli_opt *opts, size_t n, int argc,
                   char **argv, const char **vals, const char **pos, int *npos)
{
    int only_pos = 0;
    if(npos)
        *npos = 0;
    for(size_t i = 0; i < n; i++)
        vals[i] = NULL;
    for(int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if(!only_pos && strcmp(arg, "--") == 0) {
            only_pos = 1;
        } else if(only_pos || arg[0] != '-' || arg[1] == '\0') { /* "-" is an argument too */
            if(!pos) {
                fprintf(stderr, "dapi %s: unexpected argument '%.64s' (see dapi %s --help)\n", cmd,
                        arg, cmd);
                return -1;
            }
            pos[(*npos)++] = arg;
        } else if(arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            int k = find_long(opts, n, name, len);
            if(k < 0) {
                fprintf(stderr, "dapi %s: unknown option '--%.*s' (see dapi %s --help)\n", cmd,
                        (int)(len > 64 ? 64 : len), name, cmd);
                return -1;
            }
            char shown[80];
            snprintf(shown, sizeof shown, "--%s", opts[k].name);
            if(take(cmd, &opts[k], shown, eq ? eq + 1 : NULL, &a, argc, argv, &vals[k]))
                return -1;
        } else if(take_shorts(cmd, opts, n, arg, &a, argc, argv, vals)) {
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

void dapi_cli_version(FILE *out)
{
    fprintf(out, "dapi %s (DuckDB %s)\n", DAPI_VERSION, dapi_engine_version());
}
