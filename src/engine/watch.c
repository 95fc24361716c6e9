/* Lake change detection: whether anything under the data dir may have changed since a
 * consumer last looked, without walking the lake each time.
 *
 * Every query used to scan the lake three times (the views before the check and before the
 * run, the reuse fingerprint): on a lake of 200 tables of 20 files each that was 7–14 ms of
 * a `SELECT 1` creation. With the watch, a consumer reads a generation number and rescans
 * only when it differs from the one its last complete scan was made under.
 *
 * inotify watches every directory under the lake (hidden ones too: files may be linked
 * there) and the target of every symbolic link to a file in it, for the events that change what a
 * scan sees: content written, attributes (mtime, mode), entries created, deleted or moved,
 * the watched object itself deleted or moved. Reads (DuckDB scanning a file) make no event.
 * The kernel queues an event in the writer's system call, and the generation is read by
 * draining the queue without blocking, so a change that completed before a consumer asks is
 * always seen: nothing waits for a background thread.
 *
 * Where inotify cannot see every change, the watch is off and each call returns 0 ("unknown:
 * scan"), which is the old behaviour: --lake-watch off, no inotify, the per-user watch limit
 * reached, a lake larger than WATCH_MAX_DIRS directories, or a directory on a file system
 * changed by other machines (NFS, SMB, FUSE, 9P, Ceph, Lustre, cluster file systems): there
 * a writer elsewhere makes no event here. A queue overflow only bumps the generation (and the
 * watches are walked again). */
#include "engine/engine_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "base/log.h"

#define WATCH_MASK                                                                      \
    (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | \
     IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)
#define WATCH_MAX_DIRS 100000
#define WATCH_MAX_DEPTH 16

struct lakewatch {
    pthread_mutex_t lock;
    char *root;
    int fd;     /* inotify; -1 when off */
    int walked; /* the watches match the lake as of gen */
    uint64_t gen;
    size_t dirs; /* directories watched by the last walk */
};

/* File systems whose files other machines may change (no event reaches this kernel). */
static int remote_fs(const char *path)
{
    static const unsigned long remote[] = {
        0x6969,     /* NFS */
        0x517B,     /* SMB */
        0xFF534D42, /* CIFS */
        0xFE534D42, /* SMB2 */
        0x65735546, /* FUSE (s3fs, sshfs, virtiofs...) */
        0x01021997, /* 9P */
        0x00C36400, /* Ceph */
        0x0BD00BD0, /* Lustre */
        0x01161970, /* GFS2 */
        0x7461636F, /* OCFS2 */
        0x5346414F, /* AFS */
        0x6B414653, /* kAFS */
        0x47504653, /* GPFS */
    };
    struct statfs sf;
    if(statfs(path, &sf))
        return 0; /* gone meanwhile: its parent's event covers it */
    for(size_t i = 0; i < sizeof remote / sizeof remote[0]; i++)
        if((unsigned long)sf.f_type == remote[i])
            return 1;
    return 0;
}

/* Turns the watch off for good, saying why once. */
static void watch_off(struct lakewatch *w, const char *why)
{
    if(w->fd >= 0) {
        dapi_warn("lake: changes are no longer watched (%s); the lake is scanned for every "
                  "query",
                  why);
        close(w->fd);
        w->fd = -1;
    }
}

/* Watches dir (and what links in it lead to), then what is beneath it. The watch is added
 * before the directory is read, so an entry made meanwhile is either read here or makes an
 * event. Returns -1 once the watch had to be turned off. */
static int walk(struct lakewatch *w, const char *dir, dev_t parent_dev, int depth)
{
    if(depth > WATCH_MAX_DEPTH)
        return 0;
    struct stat st;
    if(stat(dir, &st))
        return 0;
    if(st.st_dev != parent_dev && remote_fs(dir)) {
        watch_off(w, "a directory of the lake is on a network or FUSE file system");
        return -1;
    }
    if(++w->dirs > WATCH_MAX_DIRS) {
        watch_off(w, "more than 100000 directories");
        return -1;
    }
    if(inotify_add_watch(w->fd, dir, WATCH_MASK) < 0) {
        if(errno == ENOENT || errno == EACCES)
            return 0; /* gone meanwhile (its parent's event says so), or unreadable to us */
        watch_off(w, errno == ENOSPC ? "the inotify watch limit (fs.inotify.max_user_watches) "
                                       "is reached"
                                     : strerror(errno));
        return -1;
    }
    DIR *d = opendir(dir);
    if(!d)
        return 0;
    struct dirent *de;
    int r = 0;
    while(!r && (de = readdir(d))) {
        if(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[PATH_MAX];
        if(snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        unsigned char t = de->d_type;
        if(t == DT_UNKNOWN) {
            struct stat lst;
            if(lstat(p, &lst))
                continue;
            t = S_ISDIR(lst.st_mode) ? DT_DIR : S_ISLNK(lst.st_mode) ? DT_LNK : DT_REG;
        }
        if(t == DT_DIR) {
            r = walk(w, p, st.st_dev, depth + 1);
        } else if(t == DT_LNK) {
            /* What the link leads to. A directory is not walked: inside the lake the walk
             * reaches it as itself, and the scan never follows a link out of the lake —
             * while a walk through one could lead anywhere (a link to / reaches /proc, whose
             * links lead back: the walk took minutes, and the server did not start). A file
             * is watched itself: its changes make no event in this directory. */
            struct stat tst;
            if(stat(p, &tst) || S_ISDIR(tst.st_mode))
                continue; /* a directory (above), or dangling: its changes are this directory's */
            if(tst.st_dev != st.st_dev && remote_fs(p)) {
                watch_off(w, "a file of the lake is on a network or FUSE file system");
                r = -1;
            } else if(inotify_add_watch(w->fd, p, WATCH_MASK) < 0 && errno == ENOSPC) {
                watch_off(w, "the inotify watch limit (fs.inotify.max_user_watches) is reached");
                r = -1;
            }
        }
    }
    closedir(d);
    return r;
}

/* Reads every queued event without blocking; returns how many were read (under the lock). */
static size_t drain(struct lakewatch *w)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    size_t n = 0;
    for(;;) {
        ssize_t r = read(w->fd, buf, sizeof buf);
        if(r < 0 && errno == EINTR)
            continue;
        if(r <= 0)
            break;
        for(char *p = buf; p < buf + r;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            n++;
            p += sizeof *ev + ev->len;
        }
    }
    return n;
}

enum dapi_err lakewatch_open(struct lakewatch **out, const char *root, int enabled)
{
    struct lakewatch *w = calloc(1, sizeof *w);
    if(!w || !(w->root = strdup(root))) {
        free(w);
        return DAPI_ERR_NOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    w->fd = -1;
    w->gen = 1;
    if(enabled && (w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0)
        dapi_warn("lake: cannot watch for changes (inotify: %s); the lake is scanned for every "
                  "query",
                  strerror(errno));
    *out = w;
    return DAPI_OK;
}

void lakewatch_close(struct lakewatch *w)
{
    if(!w)
        return;
    if(w->fd >= 0)
        close(w->fd);
    pthread_mutex_destroy(&w->lock);
    free(w->root);
    free(w);
}

uint64_t lakewatch_gen(struct lakewatch *w)
{
    if(!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    uint64_t g = 0;
    if(w->fd >= 0) {
        if(drain(w) || !w->walked) {
            /* something changed (or nothing was watched yet): a new generation, and the
             * watches walked again — new directories get theirs before anyone reads them */
            w->gen++;
            w->dirs = 0;
            /* (parent device 0: the lake's own file system is checked like a mount point's;
             * a lake that does not exist yet is walked at every call until it does — no
             * watch could say when it appears) */
            struct stat st;
            w->walked = walk(w, w->root, 0, 0) == 0 && stat(w->root, &st) == 0;
        }
        if(w->fd >= 0)
            g = w->walked ? w->gen : 0;
    }
    pthread_mutex_unlock(&w->lock);
    return g;
}
