/* The client commands' option parser (cli/opts.c: clusters, attached values, "--",
 * arguments) and the SQL reader of `dapi query` (dapi_cli_read_fd) at its size limit. */
#include "t.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"

enum { Q, F, P, C, U, N };

static const struct dapi_cli_opt opts[N] = {
    [Q] = {"quiet", 'q', NULL, NULL, NULL, "switch"},
    [F] = {"format", 'f', "FMT", NULL, NULL, "value"},
    [P] = {"parallel", 'p', "N", NULL, NULL, "value"},
    [C] = {"sql", 'c', "SQL", NULL, NULL, "value"},
    [U] = {"url", 0, "URL", "DAPI_T_URL", NULL, "value with an env var"},
};

/* Parses the NULL-terminated args; returns the parser's result. */
static int parse(const char **vals, const char **pos, int *npos, const char *const *args)
{
    char *argv[16];
    int argc = 0;
    while(args[argc]) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    return dapi_cli_parse("t", opts, N, argc, argv, vals, pos, npos);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_clusters_and_attached_values(void)
{
    const char *v[N], *pos[16];
    int npos = -1;
    T_EQ_INT(parse(v, pos, &npos, ARGS("-qf", "csv")), 0);
    T_EQ_STR(v[Q], "1");
    T_EQ_STR(v[F], "csv");
    T_EQ_INT(npos, 0);
    T_EQ_INT(parse(v, pos, &npos, ARGS("-fjson")), 0);
    T_EQ_STR(v[F], "json");
    T_CHECK(v[Q] == NULL, "-q not given");
    T_EQ_INT(parse(v, pos, &npos, ARGS("-qfcsv", "-p4")), 0);
    T_EQ_STR(v[Q], "1");
    T_EQ_STR(v[F], "csv");
    T_EQ_STR(v[P], "4");
    /* the value of an option in a cluster is the rest of it, letters included */
    T_EQ_INT(parse(v, pos, &npos, ARGS("-fq")), 0);
    T_EQ_STR(v[F], "q");
    T_CHECK(v[Q] == NULL, "-fq: q is the format, not -q");
    /* a value may start with '-' */
    T_EQ_INT(parse(v, pos, &npos, ARGS("-c", "-- note", "--format=tsv")), 0);
    T_EQ_STR(v[C], "-- note");
    T_EQ_STR(v[F], "tsv");
}

static void test_arguments_and_double_dash(void)
{
    const char *v[N], *pos[16];
    int npos = -1;
    T_EQ_INT(parse(v, pos, &npos, ARGS("SELECT 1", "-q")), 0);
    T_EQ_INT(npos, 1);
    T_EQ_STR(pos[0], "SELECT 1");
    T_EQ_STR(v[Q], "1");
    T_EQ_INT(parse(v, pos, &npos, ARGS("-q", "--", "-q", "--x", "-")), 0);
    T_EQ_INT(npos, 3);
    T_EQ_STR(pos[0], "-q");
    T_EQ_STR(pos[1], "--x");
    T_EQ_STR(pos[2], "-");
    T_EQ_INT(parse(v, pos, &npos, ARGS("-")), 0);
    T_EQ_INT(npos, 1);
    T_EQ_STR(pos[0], "-");
    /* without room for arguments, one is an error */
    T_EQ_INT(parse(v, NULL, NULL, ARGS("SELECT 1")), -1);
    T_EQ_INT(parse(v, NULL, NULL, ARGS("-q")), 0);
}

static void test_errors_and_env(void)
{
    const char *v[N], *pos[16];
    int npos;
    T_EQ_INT(parse(v, pos, &npos, ARGS("-qx")), -1);       /* unknown letter in a cluster */
    T_EQ_INT(parse(v, pos, &npos, ARGS("-qf")), -1);       /* -f needs a value */
    T_EQ_INT(parse(v, pos, &npos, ARGS("--quiet=1")), -1); /* a switch takes none */
    T_EQ_INT(parse(v, pos, &npos, ARGS("--nope")), -1);
    setenv("DAPI_T_URL", "http://env", 1);
    T_EQ_INT(parse(v, pos, &npos, ARGS("-q")), 0);
    T_EQ_STR(v[U], "http://env");
    T_EQ_INT(parse(v, pos, &npos, ARGS("--url", "http://flag")), 0);
    T_EQ_STR(v[U], "http://flag");
    unsetenv("DAPI_T_URL");
}

/* A pipe holding n bytes 'x' (written by a child, so n may exceed the pipe's buffer). */
static int pipe_of(size_t n, pid_t *child)
{
    int fds[2];
    *child = -1;
    if(pipe(fds))
        return -1;
    *child = fork();
    if(*child == 0) {
        close(fds[0]);
        static char chunk[4096];
        memset(chunk, 'x', sizeof chunk);
        while(n > 0) {
            size_t k = n < sizeof chunk ? n : sizeof chunk;
            ssize_t w = write(fds[1], chunk, k);
            if(w <= 0)
                _exit(1);
            n -= (size_t)w;
        }
        _exit(0);
    }
    close(fds[1]);
    return fds[0];
}

static void read_case(size_t size, size_t max, enum dapi_err want)
{
    pid_t child = -1;
    int fd = pipe_of(size, &child);
    T_CHECK(fd >= 0 && child > 0, "pipe and writer for %zu bytes", size);
    if(fd < 0 || child <= 0)
        return;
    char *got = NULL;
    size_t len = 0;
    enum dapi_err r = dapi_cli_read_fd(fd, max, &got, &len);
    T_CHECK(r == want, "read %zu bytes with max %zu: got error %d, want %d", size, max, (int)r,
            (int)want);
    if(!want) {
        T_EQ_INT(len, size);
        T_CHECK(got && strlen(got) == size, "NUL-terminated text of %zu bytes", size);
    } else {
        T_CHECK(got == NULL, "no text on failure");
    }
    free(got);
    close(fd);
    waitpid(child, NULL, 0);
}

static void test_read_fd_at_the_limit(void)
{
    /* the reader takes 64 KiB at a time: sizes around the limit and around 64 KiB
     * boundaries, with a limit that is and one that is not a multiple of 64 KiB */
    size_t maxes[] = {65536 * 3, 65536 * 3 + 1000, 100};
    for(size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
        size_t m = maxes[i];
        read_case(0, m, DAPI_OK);
        read_case(m - 1, m, DAPI_OK);
        read_case(m, m, DAPI_OK);
        read_case(m + 1, m, DAPI_ERR_TOO_LARGE);
        read_case(m + 70000, m, DAPI_ERR_TOO_LARGE);
        if(m > 65536 * 2) {
            read_case(m - 65536, m, DAPI_OK);
            read_case(m - 65535, m, DAPI_OK);
            read_case(65536 * 2, m, DAPI_OK);
        }
    }
    char *got = NULL;
    T_CHECK(dapi_cli_read_fd(-1, 100, &got, NULL) == DAPI_ERR_IO && errno == EBADF,
            "a read error is DAPI_ERR_IO with errno kept");
}

int main(void)
{
    test_clusters_and_attached_values();
    test_arguments_and_double_dash();
    test_errors_and_env();
    test_read_fd_at_the_limit();
    T_DONE();
}
