/*
 * files: a single-command probe for exercising a sandbox's filesystem
 * capabilities and process exit behaviour.
 *
 * Usage: files CMD ARGS...
 *
 * Exactly one command runs per invocation. On success a command prints its
 * result (usually the single line "ok") to stdout and exits 0. On failure it
 * prints "error: <strerror(errno)>" to stdout and exits 1. An unknown command
 * prints "error: unknown command CMD" and exits 2; missing arguments print
 * "error: usage: ..." and exit 2.
 *
 * Filesystem commands:
 *   cat PATH             print the file contents verbatim
 *   ls DIR               entry names, sorted, one per line (no . and ..)
 *   write PATH TEXT      create/truncate PATH and write TEXT (no newline added)
 *   append PATH TEXT     append TEXT to PATH (created if missing)
 *   mkdir PATH           create a directory (mode 0755)
 *   rm PATH              unlink a file
 *   rmdir PATH           remove an empty directory
 *   mv FROM TO           rename
 *   truncate PATH LEN    set the file length to LEN bytes
 *   touch PATH           set atime and mtime to 1000000000 (2001-09-09);
 *                        creates PATH if it does not exist
 *   symlink TARGET LINK  create a symbolic link LINK pointing at TARGET
 *   link FROM TO         create a hard link
 *   readlink PATH        print the target of a symbolic link
 *   stat PATH            print "size=N type=file|dir|symlink|other"
 *                        (does not follow a final symlink)
 *   openrw PATH          open PATH read-write without truncating it
 *   openmany PATH [MS]   open PATH read-only again and again, keeping every
 *                        descriptor, until an open fails (at most 1000000);
 *                        print "opened N", then hold them MS milliseconds
 *   reopen PATH N        open PATH read-only N times, closing it each time;
 *                        print "opened A refused B" (B opens failed with EACCES);
 *                        if an open ever gives anything but a regular file
 *                        (a FIFO, say), print "error: opened a non-file" and
 *                        exit 3
 *
 * Process commands:
 *   env                  print the environment, one KEY=VALUE per line
 *   args                 print every argv entry (including argv[0]), one per line
 *   pwd                  print the current working directory
 *   exit N               exit with status N (prints nothing)
 *   abort                call abort() (a trap in WebAssembly)
 *   loop                 print "looping", then spin forever
 *   sleep MS             sleep MS milliseconds, then print "ok"
 *   stdin                copy all of stdin to stdout, then exit 0
 *   alloc MB             malloc MB MiB in 1 MiB chunks, touching every byte,
 *                        then print "allocated MB MB"; "error: out of memory"
 *                        and exit 1 if an allocation fails
 *   recurse              unbounded recursion (stack overflow)
 *   spam N               print N lines "line 1" .. "line N", then exit 0
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int fail(void) {
    printf("error: %s\n", strerror(errno));
    return 1;
}

static int ok(void) {
    puts("ok");
    return 0;
}

static int usage(const char *text) {
    printf("error: usage: files %s\n", text);
    return 2;
}

/* Parses a non-negative decimal number; returns -1 if malformed. */
static long long parse_num(const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0) {
        return -1;
    }
    return v;
}

/* Writes all of buf to fd, retrying on short writes. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cmd_cat(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return fail();
    }
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int saved = errno;
            close(fd);
            errno = saved;
            return fail();
        }
        if (n == 0) {
            break;
        }
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    return 0;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_ls(const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        return fail();
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *ent;
    errno = 0;
    while ((ent = readdir(dir)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) {
            continue;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (grown == NULL) {
                return fail();
            }
            names = grown;
        }
        names[count] = strdup(ent->d_name);
        if (names[count] == NULL) {
            return fail();
        }
        count++;
        errno = 0;
    }
    if (errno != 0) {
        return fail();
    }
    closedir(dir);
    qsort(names, count, sizeof *names, cmp_names);
    for (size_t i = 0; i < count; i++) {
        puts(names[i]);
        free(names[i]);
    }
    free(names);
    return 0;
}

static int cmd_write(const char *path, const char *text, int flags) {
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
    if (fd < 0) {
        return fail();
    }
    if (write_all(fd, text, strlen(text)) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return fail();
    }
    if (close(fd) != 0) {
        return fail();
    }
    return ok();
}

static int cmd_truncate(const char *path, const char *len_text) {
    long long len = parse_num(len_text);
    if (len < 0) {
        return usage("truncate PATH LEN");
    }
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        return fail();
    }
    if (ftruncate(fd, (off_t)len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return fail();
    }
    close(fd);
    return ok();
}

static int cmd_touch(const char *path) {
    const struct timespec times[2] = {
        {.tv_sec = 1000000000, .tv_nsec = 0},
        {.tv_sec = 1000000000, .tv_nsec = 0},
    };
    if (utimensat(AT_FDCWD, path, times, 0) == 0) {
        return ok();
    }
    if (errno != ENOENT) {
        return fail();
    }
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) {
        return fail();
    }
    if (futimens(fd, times) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return fail();
    }
    close(fd);
    return ok();
}

static int cmd_readlink(const char *path) {
    char buf[4096];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n < 0) {
        return fail();
    }
    buf[n] = '\0';
    puts(buf);
    return 0;
}

static int cmd_stat(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        return fail();
    }
    const char *type = "other";
    if (S_ISREG(st.st_mode)) {
        type = "file";
    } else if (S_ISDIR(st.st_mode)) {
        type = "dir";
    } else if (S_ISLNK(st.st_mode)) {
        type = "symlink";
    }
    printf("size=%lld type=%s\n", (long long)st.st_size, type);
    return 0;
}

static int cmd_openrw(const char *path) {
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        return fail();
    }
    close(fd);
    return ok();
}

static int cmd_reopen(const char *path, const char *n_text) {
    long long n = parse_num(n_text);
    if (n < 0) {
        return usage("reopen PATH N");
    }
    long long opened = 0, refused = 0;
    for (long long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            if (errno != EACCES) {
                return fail();
            }
            refused++;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) != 0) {
            return fail();
        }
        if (!S_ISREG(st.st_mode)) {
            puts("error: opened a non-file");
            return 3;
        }
        close(fd);
        opened++;
    }
    printf("opened %lld refused %lld\n", opened, refused);
    return 0;
}

static int cmd_openmany(const char *path, const char *hold_ms) {
    long n = 0;
    while (n < 1000000 && open(path, O_RDONLY) >= 0) {
        n++;
    }
    printf("opened %ld\n", n);
    fflush(stdout);
    if (hold_ms != NULL) {
        long long ms = parse_num(hold_ms);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int cmd_pwd(void) {
    char buf[4096];
    if (getcwd(buf, sizeof buf) == NULL) {
        return fail();
    }
    puts(buf);
    return 0;
}

static int cmd_sleep(const char *ms_text) {
    long long ms = parse_num(ms_text);
    if (ms < 0) {
        return usage("sleep MS");
    }
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
        if (errno != EINTR) {
            return fail();
        }
    }
    return ok();
}

static int cmd_stdin(void) {
    char buf[8192];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail();
        }
        if (n == 0) {
            return 0;
        }
        if (write_all(1, buf, (size_t)n) != 0) {
            return fail();
        }
    }
}

static int cmd_alloc(const char *mb_text) {
    long long mb = parse_num(mb_text);
    if (mb < 0) {
        return usage("alloc MB");
    }
    for (long long i = 0; i < mb; i++) {
        /* Chunks are deliberately leaked: the point is to hold the memory. */
        volatile unsigned char *chunk = malloc(1u << 20);
        if (chunk == NULL) {
            puts("error: out of memory");
            return 1;
        }
        memset((void *)chunk, 0xA5, 1u << 20);
        chunk[i % (1u << 20)] = (unsigned char)i;
    }
    printf("allocated %lld MB\n", mb);
    return 0;
}

static volatile unsigned long spin_counter;

static _Noreturn void cmd_loop(void) {
    puts("looping");
    fflush(stdout);
    for (;;) {
        spin_counter++;
    }
}

static volatile unsigned long recurse_depth;

/*
 * Recurses until the engine's call stack is exhausted. The volatile accesses
 * after the call keep it out of tail position and stop the compiler from
 * turning the recursion into a loop. No address-taken locals are used, so the
 * recursion consumes the engine's native stack rather than the linear-memory
 * shadow stack.
 */
__attribute__((noinline)) static unsigned long recurse(unsigned long n) {
    recurse_depth = n;
    if (recurse_depth == (unsigned long)-1) {
        return n;
    }
    return recurse(n + 1) * 3 + recurse_depth;
}

/* How many of the five devices a listing of /dev gives as character devices. */
static int listed_devices(void) {
    static const char *const names[] = {"full", "null", "random", "urandom", "zero"};
    DIR *d = opendir("/dev");
    if (d == NULL) {
        return -1;
    }
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            found += strcmp(e->d_name, names[i]) == 0 && e->d_type == DT_CHR;
        }
    }
    closedir(d);
    return found;
}

/* dev: what the devices of /dev answer, one line each. */
static int cmd_dev(void) {
    unsigned char a[32], b[32], z[4096];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, a, sizeof a) != (ssize_t)sizeof a ||
        read(fd, b, sizeof b) != (ssize_t)sizeof b) {
        return fail();
    }
    close(fd);
    printf("urandom: %s\n", memcmp(a, b, sizeof a) != 0 ? "two reads differ" : "same bytes");
    fd = open("/dev/random", O_RDONLY);
    if (fd < 0) {
        return fail();
    }
    printf("random: read %zd\n", read(fd, a, sizeof a));
    close(fd);
    memset(z, 1, sizeof z);
    fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) {
        return fail();
    }
    ssize_t n = read(fd, z, sizeof z);
    size_t zeros = 0;
    for (ssize_t i = 0; i < n; i++) {
        zeros += z[i] == 0;
    }
    printf("zero: read %zd, %zu zeros\n", n, zeros);
    close(fd);
    fd = open("/dev/null", O_RDWR);
    if (fd < 0) {
        return fail();
    }
    printf("null: read %zd\n", read(fd, a, sizeof a));
    printf("null: wrote %zd\n", write(fd, z, 100));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return fail();
    }
    printf("null: %s\n", S_ISCHR(st.st_mode) ? "character device" : "not a character device");
    int fl = fcntl(fd, F_GETFL);
    printf("null: open %s\n", fl >= 0 && (fl & O_ACCMODE) == O_RDWR ? "read-write" : "otherwise");
    close(fd);
    FILE *f = fopen("/dev/null", "w");
    printf("null: fopen for writing %s\n", f != NULL ? "ok" : strerror(errno));
    if (f != NULL) {
        fclose(f);
    }
    fd = open("/dev/full", O_WRONLY);
    if (fd < 0) {
        return fail();
    }
    errno = 0;
    n = write(fd, "x", 1);
    printf("full: wrote %zd (%s)\n", n, strerror(errno));
    close(fd);
    printf("ls /dev: %d character devices\n", listed_devices());
    return 0;
}

static int cmd_spam(const char *n_text) {
    long long n = parse_num(n_text);
    if (n < 0) {
        return usage("spam N");
    }
    for (long long i = 1; i <= n; i++) {
        printf("line %lld\n", i);
    }
    if (fflush(stdout) != 0) {
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        return usage("CMD ARGS...");
    }
    const char *cmd = argv[1];
    int nargs = argc - 2;
    char **a = argv + 2;

#define NEED(n, text)                                                          \
    do {                                                                       \
        if (nargs < (n)) {                                                     \
            return usage(text);                                                \
        }                                                                      \
    } while (0)

    if (strcmp(cmd, "cat") == 0) {
        NEED(1, "cat PATH");
        return cmd_cat(a[0]);
    } else if (strcmp(cmd, "ls") == 0) {
        NEED(1, "ls DIR");
        return cmd_ls(a[0]);
    } else if (strcmp(cmd, "write") == 0) {
        NEED(2, "write PATH TEXT");
        return cmd_write(a[0], a[1], O_TRUNC);
    } else if (strcmp(cmd, "append") == 0) {
        NEED(2, "append PATH TEXT");
        return cmd_write(a[0], a[1], O_APPEND);
    } else if (strcmp(cmd, "mkdir") == 0) {
        NEED(1, "mkdir PATH");
        return mkdir(a[0], 0755) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "rm") == 0) {
        NEED(1, "rm PATH");
        return unlink(a[0]) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "rmdir") == 0) {
        NEED(1, "rmdir PATH");
        return rmdir(a[0]) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "mv") == 0) {
        NEED(2, "mv FROM TO");
        return rename(a[0], a[1]) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "truncate") == 0) {
        NEED(2, "truncate PATH LEN");
        return cmd_truncate(a[0], a[1]);
    } else if (strcmp(cmd, "touch") == 0) {
        NEED(1, "touch PATH");
        return cmd_touch(a[0]);
    } else if (strcmp(cmd, "symlink") == 0) {
        NEED(2, "symlink TARGET LINKPATH");
        return symlink(a[0], a[1]) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "link") == 0) {
        NEED(2, "link FROM TO");
        return link(a[0], a[1]) == 0 ? ok() : fail();
    } else if (strcmp(cmd, "readlink") == 0) {
        NEED(1, "readlink PATH");
        return cmd_readlink(a[0]);
    } else if (strcmp(cmd, "stat") == 0) {
        NEED(1, "stat PATH");
        return cmd_stat(a[0]);
    } else if (strcmp(cmd, "openmany") == 0) {
        NEED(1, "openmany PATH [MS]");
        return cmd_openmany(a[0], nargs > 1 ? a[1] : NULL);
    } else if (strcmp(cmd, "reopen") == 0) {
        NEED(2, "reopen PATH N");
        return cmd_reopen(a[0], a[1]);
    } else if (strcmp(cmd, "openrw") == 0) {
        NEED(1, "openrw PATH");
        return cmd_openrw(a[0]);
    } else if (strcmp(cmd, "env") == 0) {
        for (char **e = environ; e != NULL && *e != NULL; e++) {
            puts(*e);
        }
        return 0;
    } else if (strcmp(cmd, "args") == 0) {
        for (int i = 0; i < argc; i++) {
            puts(argv[i]);
        }
        return 0;
    } else if (strcmp(cmd, "pwd") == 0) {
        return cmd_pwd();
    } else if (strcmp(cmd, "exit") == 0) {
        NEED(1, "exit N");
        long long code = parse_num(a[0]);
        if (code < 0) {
            return usage("exit N");
        }
        exit((int)code);
    } else if (strcmp(cmd, "abort") == 0) {
        fflush(stdout);
        abort();
    } else if (strcmp(cmd, "loop") == 0) {
        cmd_loop();
    } else if (strcmp(cmd, "sleep") == 0) {
        NEED(1, "sleep MS");
        return cmd_sleep(a[0]);
    } else if (strcmp(cmd, "stdin") == 0) {
        return cmd_stdin();
    } else if (strcmp(cmd, "alloc") == 0) {
        NEED(1, "alloc MB");
        return cmd_alloc(a[0]);
    } else if (strcmp(cmd, "recurse") == 0) {
        fflush(stdout);
        return (int)recurse(0);
    } else if (strcmp(cmd, "dev") == 0) {
        return cmd_dev();
    } else if (strcmp(cmd, "spam") == 0) {
        NEED(1, "spam N");
        return cmd_spam(a[0]);
    }
#undef NEED

    printf("error: unknown command %s\n", cmd);
    return 2;
}
