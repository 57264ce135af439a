/*
 * echo: a TCP echo server for WASI preview 1.
 *
 * Preview 1 has no socket(), bind() or listen(): the host hands the guest a
 * socket that is already listening. The server finds it as follows:
 *
 *   1. If LISTEN_FDS=<count> and LISTEN_FDS_START=<first fd> are set, the
 *      first of those descriptors is used.
 *   2. Otherwise descriptors 3..64 are probed and the first socket is used.
 *
 * It then accepts connections one at a time and echoes every byte back until
 * the peer closes its side. With --once it exits 0 after serving one
 * connection.
 *
 * "listening on fd N" is written to stderr once the socket has been found.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

/* Parses a non-negative decimal number; returns -1 if absent or malformed. */
static long parse_num(const char *s) {
    if (s == NULL || *s == '\0') {
        return -1;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0) {
        return -1;
    }
    return v;
}

static int is_socket(int fd) {
    struct stat st;
    if (fstat(fd, &st) == 0) {
        return S_ISSOCK(st.st_mode);
    }
    /* Some hosts cannot stat sockets; fall back to the descriptor's type. */
    __wasi_fdstat_t fdstat;
    if (__wasi_fd_fdstat_get((__wasi_fd_t)fd, &fdstat) == 0) {
        return fdstat.fs_filetype == __WASI_FILETYPE_SOCKET_STREAM;
    }
    return 0;
}

static int find_listener(void) {
    long count = parse_num(getenv("LISTEN_FDS"));
    long start = parse_num(getenv("LISTEN_FDS_START"));
    if (count > 0 && start >= 0) {
        return (int)start;
    }
    for (int fd = 3; fd <= 64; fd++) {
        if (is_socket(fd)) {
            return fd;
        }
    }
    return -1;
}

static void pause_briefly(void) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* True for errors meaning "this call is not available for this descriptor". */
static int unsupported(int err) {
    return err == ENOSYS || err == ENOTSUP || err == EOPNOTSUPP || err == ENOTSOCK;
}

/*
 * Socket I/O prefers recv()/send() (sock_recv/sock_send) and falls back to
 * read()/write() (fd_read/fd_write) if the host does not implement the socket
 * calls.
 */
static int use_plain_io;

static ssize_t conn_read(int fd, char *buf, size_t len) {
    if (!use_plain_io) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n >= 0 || !unsupported(errno)) {
            return n;
        }
        use_plain_io = 1;
    }
    return read(fd, buf, len);
}

static ssize_t conn_write(int fd, const char *buf, size_t len) {
    if (!use_plain_io) {
        ssize_t n = send(fd, buf, len, 0);
        if (n >= 0 || !unsupported(errno)) {
            return n;
        }
        use_plain_io = 1;
    }
    return write(fd, buf, len);
}

/* Echoes until EOF or an error. */
static void serve(int conn) {
    char buf[16384];
    for (;;) {
        ssize_t n = conn_read(conn, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                pause_briefly();
                continue;
            }
            fprintf(stderr, "echo: read: %s\n", strerror(errno));
            return;
        }
        if (n == 0) {
            return;
        }
        char *p = buf;
        while (n > 0) {
            ssize_t w = conn_write(conn, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN) {
                    pause_briefly();
                    continue;
                }
                fprintf(stderr, "echo: write: %s\n", strerror(errno));
                return;
            }
            p += w;
            n -= w;
        }
    }
}

int main(int argc, char **argv) {
    int once = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0) {
            once = 1;
        } else {
            fprintf(stderr, "usage: echo [--once]\n");
            return 2;
        }
    }

    int listener = find_listener();
    if (listener < 0) {
        fprintf(stderr, "echo: no listening socket (set LISTEN_FDS/LISTEN_FDS_START)\n");
        return 1;
    }
    fprintf(stderr, "listening on fd %d\n", listener);
    fflush(stderr);

    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) {
                pause_briefly();
                continue;
            }
            fprintf(stderr, "echo: accept: %s\n", strerror(errno));
            return 1;
        }
        serve(conn);
        close(conn);
        if (once) {
            return 0;
        }
    }
}
