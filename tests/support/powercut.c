/* powercut.c: an LD_PRELOAD shim that keeps, beside every file under one folder, the
 * content that a power cut would leave: only what was fsynced.
 *
 *   POWERCUT_DIR     the folder whose files are watched (absolute, no trailing slash)
 *   POWERCUT_SHADOW  a folder where the durable copy of each watched file is kept
 *
 * The process reads and writes its files as usual (the page cache, as on a real
 * machine). Every write to a watched file marks a byte range dirty; fsync/fdatasync
 * copies the file's dirty ranges (and its size) into its durable copy. After the
 * process is SIGKILLed, tests/test_durability.py `power_cut()` replaces each watched
 * file by its durable copy, or deletes it when it was never fsynced: exactly what a
 * power cut keeps. `*-shm` files (SQLite's WAL index, mapped in memory and rebuilt
 * from the WAL on recovery) are not watched; the power cut deletes them.
 *
 * Intercepted: open/open64/openat/openat64/creat (O_TRUNC), write/pwrite/pwrite64/
 * writev, ftruncate/ftruncate64, fsync/fdatasync, close, unlink, rename. Not covered
 * (the gateway's store uses none of them): mmap writes (PRAGMA mmap_size stays 0),
 * pwritev, sendfile, copy_file_range, dup'ed descriptors. A rename or unlink is taken
 * as durable at once (lenient: a real power cut may revert one whose folder was not
 * fsynced).
 *
 * Built at test time: gcc -shared -fPIC -O2 -o powercut.so powercut.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536
#define MAX_FILES 256

typedef struct {
    char path[PATH_MAX];
    long long lo, hi;  /* dirty byte range [lo, hi); lo == -1: clean */
    long long trunc;   /* smallest size truncated to since the last sync; -1: none */
} file_state;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static file_state files[MAX_FILES];
static int nfiles;
static short fd_file[MAX_FD]; /* fd -> index+1 into files, 0: not watched */
static char watch_dir[PATH_MAX];
static size_t watch_len;
static char shadow_dir[PATH_MAX];
static int ready;

static int (*r_open)(const char *, int, ...);
static int (*r_open64)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static int (*r_openat64)(int, const char *, int, ...);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*r_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*r_writev)(int, const struct iovec *, int);
static int (*r_ftruncate)(int, off_t);
static int (*r_ftruncate64)(int, off_t);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static int (*r_close)(int);
static int (*r_unlink)(const char *);
static int (*r_rename)(const char *, const char *);

static void init(void) {
    if (ready) return;
    r_open = dlsym(RTLD_NEXT, "open");
    r_open64 = dlsym(RTLD_NEXT, "open64");
    r_openat = dlsym(RTLD_NEXT, "openat");
    r_openat64 = dlsym(RTLD_NEXT, "openat64");
    r_write = dlsym(RTLD_NEXT, "write");
    r_pwrite = dlsym(RTLD_NEXT, "pwrite");
    r_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    r_writev = dlsym(RTLD_NEXT, "writev");
    r_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    r_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    r_fsync = dlsym(RTLD_NEXT, "fsync");
    r_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    r_close = dlsym(RTLD_NEXT, "close");
    r_unlink = dlsym(RTLD_NEXT, "unlink");
    r_rename = dlsym(RTLD_NEXT, "rename");
    const char *d = getenv("POWERCUT_DIR");
    const char *s = getenv("POWERCUT_SHADOW");
    if (d && s) {
        snprintf(watch_dir, sizeof watch_dir, "%s/", d);
        watch_len = strlen(watch_dir);
        snprintf(shadow_dir, sizeof shadow_dir, "%s", s);
    }
    ready = 1;
}

static int watched_path(const char *p) {
    size_t n = strlen(p);
    if (!watch_len || strncmp(p, watch_dir, watch_len) != 0) return 0;
    if (strchr(p + watch_len, '/')) return 0; /* files directly in the folder only */
    if (n >= 4 && strcmp(p + n - 4, "-shm") == 0) return 0;
    return 1;
}

static void shadow_of(const char *p, char *out) {
    snprintf(out, PATH_MAX, "%s/%s", shadow_dir, p + watch_len);
}

static int file_index(const char *p) { /* under mu */
    for (int i = 0; i < nfiles; i++)
        if (strcmp(files[i].path, p) == 0) return i;
    if (nfiles == MAX_FILES) {
        fprintf(stderr, "powercut: more than %d files\n", MAX_FILES);
        abort();
    }
    snprintf(files[nfiles].path, PATH_MAX, "%s", p);
    files[nfiles].lo = -1;
    files[nfiles].hi = -1;
    files[nfiles].trunc = -1;
    return nfiles++;
}

static void track_fd(int fd, int flags) {
    if (fd < 0 || fd >= MAX_FD || !watch_len) return;
    char link[64], p[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, p, sizeof p - 1);
    if (n <= 0) return;
    p[n] = 0;
    pthread_mutex_lock(&mu);
    fd_file[fd] = 0;
    if (watched_path(p)) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            int i = file_index(p);
            fd_file[fd] = (short)(i + 1);
            if (flags & O_TRUNC) files[i].trunc = 0;
        }
    }
    pthread_mutex_unlock(&mu);
}

static void mark(int fd, long long off, long long len) {
    if (fd < 0 || fd >= MAX_FD || len <= 0) return;
    pthread_mutex_lock(&mu);
    int i = fd_file[fd] - 1;
    if (i >= 0) {
        file_state *f = &files[i];
        if (f->lo < 0 || off < f->lo) f->lo = off;
        if (off + len > f->hi) f->hi = off + len;
    }
    pthread_mutex_unlock(&mu);
}

/* Copy the dirty range and size of fd's file into its durable copy. */
static void make_durable(int fd) {
    if (fd < 0 || fd >= MAX_FD) return;
    pthread_mutex_lock(&mu);
    int i = fd_file[fd] - 1;
    if (i < 0) {
        pthread_mutex_unlock(&mu);
        return;
    }
    file_state *f = &files[i];
    char sp[PATH_MAX];
    shadow_of(f->path, sp);
    int src = r_open(f->path, O_RDONLY | O_CLOEXEC);
    int dst = r_open(sp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (src < 0 || dst < 0 || fstat(src, &st) != 0) {
        fprintf(stderr, "powercut: cannot copy %s to %s: %s\n", f->path, sp, strerror(errno));
        abort();
    }
    long long size = st.st_size;
    if (f->trunc >= 0) r_ftruncate(dst, f->trunc < size ? f->trunc : size);
    r_ftruncate(dst, size);
    if (f->lo >= 0) {
        long long hi = f->hi < size ? f->hi : size;
        char buf[65536];
        for (long long off = f->lo; off < hi;) {
            size_t want = (size_t)(hi - off < (long long)sizeof buf ? hi - off : (long long)sizeof buf);
            ssize_t got = pread(src, buf, want, off);
            if (got <= 0) break;
            if (r_pwrite(dst, buf, (size_t)got, off) != got) abort();
            off += got;
        }
    }
    f->lo = f->hi = f->trunc = -1;
    r_close(src);
    r_close(dst);
    pthread_mutex_unlock(&mu);
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *p, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    int fd = r_open(p, flags, m);
    track_fd(fd, flags);
    return fd;
}

int open64(const char *p, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    int fd = r_open64(p, flags, m);
    track_fd(fd, flags);
    return fd;
}

int openat(int dfd, const char *p, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    int fd = r_openat(dfd, p, flags, m);
    track_fd(fd, flags);
    return fd;
}

int openat64(int dfd, const char *p, int flags, ...) {
    init();
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    int fd = r_openat64(dfd, p, flags, m);
    track_fd(fd, flags);
    return fd;
}

int creat(const char *p, mode_t m) { return open(p, O_CREAT | O_WRONLY | O_TRUNC, m); }

static int is_watched(int fd) {
    if (fd < 0 || fd >= MAX_FD) return 0;
    pthread_mutex_lock(&mu);
    int w = fd_file[fd] != 0;
    pthread_mutex_unlock(&mu);
    return w;
}

ssize_t write(int fd, const void *b, size_t n) {
    init();
    if (!is_watched(fd)) return r_write(fd, b, n);
    off_t at = lseek(fd, 0, SEEK_CUR);
    int append = fcntl(fd, F_GETFL) & O_APPEND;
    ssize_t r = r_write(fd, b, n);
    if (r > 0) {
        if (append || at < 0) at = lseek(fd, 0, SEEK_CUR) - r;
        if (at >= 0) mark(fd, at, r);
    }
    return r;
}

ssize_t pwrite(int fd, const void *b, size_t n, off_t off) {
    init();
    ssize_t r = r_pwrite(fd, b, n, off);
    if (r > 0) mark(fd, off, r);
    return r;
}

ssize_t pwrite64(int fd, const void *b, size_t n, off_t off) {
    init();
    ssize_t r = r_pwrite64(fd, b, n, off);
    if (r > 0) mark(fd, off, r);
    return r;
}

ssize_t writev(int fd, const struct iovec *v, int cnt) {
    init();
    if (!is_watched(fd)) return r_writev(fd, v, cnt);
    off_t at = lseek(fd, 0, SEEK_CUR);
    ssize_t r = r_writev(fd, v, cnt);
    if (r > 0) {
        at = lseek(fd, 0, SEEK_CUR) - r;
        if (at >= 0) mark(fd, at, r);
    }
    return r;
}

static void truncated(int fd, off_t len) {
    if (fd < 0 || fd >= MAX_FD) return;
    pthread_mutex_lock(&mu);
    int i = fd_file[fd] - 1;
    if (i >= 0 && (files[i].trunc < 0 || len < files[i].trunc)) files[i].trunc = len;
    pthread_mutex_unlock(&mu);
}

int ftruncate(int fd, off_t len) {
    init();
    int r = r_ftruncate(fd, len);
    if (r == 0) truncated(fd, len);
    return r;
}

int ftruncate64(int fd, off_t len) {
    init();
    int r = r_ftruncate64(fd, len);
    if (r == 0) truncated(fd, len);
    return r;
}

int fsync(int fd) {
    init();
    int r = r_fsync(fd);
    if (r == 0) make_durable(fd);
    return r;
}

int fdatasync(int fd) {
    init();
    int r = r_fdatasync(fd);
    if (r == 0) make_durable(fd);
    return r;
}

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&mu);
        fd_file[fd] = 0;
        pthread_mutex_unlock(&mu);
    }
    return r_close(fd);
}

int unlink(const char *p) {
    init();
    char full[PATH_MAX];
    int watched = realpath(p, full) && watched_path(full);
    int r = r_unlink(p);
    if (r == 0 && watched) {
        char sp[PATH_MAX];
        shadow_of(full, sp);
        r_unlink(sp);
        pthread_mutex_lock(&mu);
        for (int i = 0; i < nfiles; i++)
            if (strcmp(files[i].path, full) == 0) files[i].lo = files[i].hi = files[i].trunc = -1;
        pthread_mutex_unlock(&mu);
    }
    return r;
}

int rename(const char *a, const char *b) {
    init();
    char fa[PATH_MAX];
    int watched = realpath(a, fa) && watched_path(fa);
    int r = r_rename(a, b);
    char fb[PATH_MAX];
    if (r == 0 && watched && realpath(b, fb) && watched_path(fb)) {
        char sa[PATH_MAX], sb[PATH_MAX];
        shadow_of(fa, sa);
        shadow_of(fb, sb);
        if (r_rename(sa, sb) != 0) r_unlink(sb); /* never fsynced: nothing durable */
        pthread_mutex_lock(&mu);
        for (int i = 0; i < nfiles; i++)
            if (strcmp(files[i].path, fb) == 0) files[i].path[0] = 0; /* replaced */
        for (int i = 0; i < nfiles; i++)
            if (strcmp(files[i].path, fa) == 0) snprintf(files[i].path, PATH_MAX, "%s", fb);
        pthread_mutex_unlock(&mu);
    }
    return r;
}
