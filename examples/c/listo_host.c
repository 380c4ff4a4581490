/*
 * listo_host: a LISTO node run by a C host with its own poll() loop.
 *
 *   listo_host --listen ADDR --channel NAME=PREFIX@HOST:PORT[,HOST:PORT] [--channel ...]
 *              [--max-seconds N] [--exit-on-eof] [-v]
 *
 * ADDR is IP:PORT ("127.0.0.1:8080", "[::1]:8080"; port 0 picks a free one). Once listening it
 * prints "listening on IP:PORT" on stdout. It stops on SIGINT/SIGTERM, after --max-seconds, or
 * with --exit-on-eof when stdin reaches end of file; it then prints the node's statistics as
 * one JSON line on stdout, frees everything and exits 0.
 *
 * Everything here is what a firmware host does: non-blocking sockets for viewers and for the
 * upstream (non-blocking connect), bytes fed to the node, output written with writev straight
 * from the node's zero-copy slices, and the poll() timeout taken from listo_node_timeout_ns.
 *
 * Build: cc -std=c99 -Wall -Wextra -Werror $(pkg-config --cflags listo) listo_host.c \
 *           $(pkg-config --libs --static listo) -o listo_host
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "listo.h"

#define MAX_CONNS 4096
#define MAX_CHANNELS 64
#define MAX_ENDPOINTS 8
#define SLICES 64
#define READ_CHUNK 65536
#define READS_PER_WAKE 16

enum { FREE = 0, VIEWER = 1, UPSTREAM = 2 };

struct conn {
    int kind;        /* FREE, VIEWER or UPSTREAM */
    int fd;
    uint64_t id;     /* the node's id for it */
    int connecting;  /* upstream: non-blocking connect in progress */
    int want_write;  /* the node has output the socket would not take yet */
};

static struct conn conns[MAX_CONNS];
static listo_node *node;
static int verbose;
static unsigned long long sendfile_bytes; /* body bytes sent without a copy (printed at exit) */
static volatile sig_atomic_t stop;

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int would_block(void) {
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* "1.2.3.4:80" or "[::1]:80" into a sockaddr. Returns 0 on success. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len) {
    char host[64];
    const char *colon;
    const char *h = s;
    size_t hl;
    long port;
    char *end;
    memset(ss, 0, sizeof *ss);
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return -1;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= sizeof host) return -1;
    memcpy(host, h, hl);
    host[hl] = 0;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535) return -1;
    if (*s != '[') {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof *a;
    }
    return 0;
}

static void print_addr(FILE *f, const struct sockaddr_storage *ss) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        fprintf(f, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        fprintf(f, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    }
}

static void complain(const char *what, int64_t rc) {
    char msg[256];
    if (listo_node_last_error(node, msg, sizeof msg) <= 0) msg[0] = 0;
    fprintf(stderr, "listo_host: %s: %s (%s)\n", what, listo_strerror((int)rc), msg);
}

static struct conn *conn_new(int kind, int fd, uint64_t id) {
    int i;
    for (i = 0; i < MAX_CONNS; i++) {
        if (conns[i].kind == FREE) {
            conns[i].kind = kind;
            conns[i].fd = fd;
            conns[i].id = id;
            conns[i].connecting = 0;
            conns[i].want_write = 0;
            return &conns[i];
        }
    }
    return NULL;
}

static struct conn *conn_find(int kind, uint64_t id) {
    int i;
    for (i = 0; i < MAX_CONNS; i++)
        if (conns[i].kind == kind && conns[i].id == id) return &conns[i];
    return NULL;
}

/* Closes the socket and tells the node the connection is gone. */
static void conn_close(struct conn *c, uint64_t now) {
    int rc;
    close(c->fd);
    rc = c->kind == VIEWER ? listo_node_viewer_close(node, now, c->id) : listo_node_upstream_closed(node, now, c->id);
    if (rc != LISTO_OK) complain("close", rc);
    c->kind = FREE;
    c->fd = -1;
}

/* Writes what the node has for this connection, zero-copy, until it has nothing or the
 * socket would block. */
static void conn_flush(struct conn *c, uint64_t now) {
    int round;
    if (c->connecting) return;
    for (round = 0; round < 1024; round++) {
        listo_slice sl[SLICES];
        struct iovec iov[SLICES];
        int64_t n, i;
        ssize_t w;
        n = c->kind == VIEWER ? listo_node_viewer_poll_transmit_slices(node, c->id, sl, SLICES)
                              : listo_node_upstream_poll_transmit_slices(node, c->id, sl, SLICES);
        if (n == LISTO_DONE) {
            c->want_write = 0;
            return;
        }
        if (n == LISTO_CLOSE) {
            conn_close(c, now);
            return;
        }
        if (n < 0) {
            complain("poll_transmit", n);
            conn_close(c, now);
            return;
        }
        /* A slice of a file-backed object goes by sendfile (no copy); the slices before it by
         * writev. Either way the node is told what the socket took. */
        int file_fd = -1;
        uint64_t file_off = 0;
        int64_t first_file = n;
        if (c->kind == VIEWER) {
            for (i = 0; i < n; i++) {
                if (listo_slice_file(&sl[i], &file_fd, &file_off) == LISTO_OK) {
                    first_file = i;
                    break;
                }
            }
        }
        for (i = 0; i < first_file; i++) {
            iov[i].iov_base = (void *)(uintptr_t)sl[i].ptr;
            iov[i].iov_len = sl[i].len;
        }
        if (first_file == 0) {
            off_t off = (off_t)file_off;
            w = sendfile(c->fd, file_fd, &off, sl[0].len);
            if (w > 0) sendfile_bytes += (unsigned long long)w;
        } else {
            w = writev(c->fd, iov, (int)first_file);
        }
        if (w < 0) {
            if (would_block()) {
                c->want_write = 1;
            } else {
                conn_close(c, now);
            }
            return;
        }
        if (c->kind == VIEWER)
            listo_node_viewer_sent(node, now, c->id, (size_t)w);
        else
            listo_node_upstream_sent(node, now, c->id, (size_t)w);
    }
    c->want_write = 1; /* more to write: come back when poll() says writable */
}

/* Opens the upstream connection the node asked for (non-blocking connect). */
static void start_connect(uint64_t id, const struct sockaddr_storage *ss, size_t len, uint64_t now) {
    struct conn *c;
    int fd = socket(ss->ss_family, SOCK_STREAM, 0);
    if (fd < 0 || set_nonblocking(fd) < 0) goto fail;
    if (connect(fd, (const struct sockaddr *)ss, (socklen_t)len) < 0 && errno != EINPROGRESS) goto fail;
    c = conn_new(UPSTREAM, fd, id);
    if (!c) goto fail;
    c->connecting = 1; /* completion (or failure) is seen as POLLOUT */
    return;
fail:
    if (verbose) {
        fprintf(stderr, "listo_host: connect to ");
        print_addr(stderr, ss);
        fprintf(stderr, " failed: %s\n", strerror(errno));
    }
    if (fd >= 0) close(fd);
    listo_node_upstream_closed(node, now, id);
}

/* After any input: open the connections the node wants, write what is ready, log events. */
static void drive(uint64_t now) {
    int round;
    for (round = 0; round < 10000; round++) {
        int progress = 0;
        uint64_t id;
        listo_conn kind;
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        while (listo_node_poll_connect(node, &id, &ss, &len) == LISTO_OK) {
            start_connect(id, &ss, len, now);
            len = sizeof ss;
            progress = 1;
        }
        while (listo_node_poll_ready(node, &kind, &id) == LISTO_OK) {
            struct conn *c = conn_find(kind == LISTO_CONN_VIEWER ? VIEWER : UPSTREAM, id);
            if (c) conn_flush(c, now);
            progress = 1;
        }
        if (!progress) break;
    }
    for (round = 0; round < 10000; round++) {
        listo_event ev;
        ev.size = sizeof ev;
        if (listo_node_poll_event(node, &ev) != LISTO_OK) break;
        if (verbose)
            fprintf(stderr, "listo_host: event %d status %u channel '%s' path '%s' %s\n", (int)ev.kind,
                    (unsigned)ev.status, ev.channel, ev.path, ev.reason);
    }
}

/* Reads what the socket has and feeds it to the node. */
static void conn_read(struct conn *c, uint64_t now) {
    static uint8_t buf[READ_CHUNK];
    int i;
    for (i = 0; i < READS_PER_WAKE; i++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        int64_t rc;
        if (n == 0 || (n < 0 && !would_block())) {
            conn_close(c, now);
            return;
        }
        if (n < 0) return;
        rc = c->kind == VIEWER ? listo_node_viewer_recv(node, now, c->id, buf, (size_t)n)
                               : listo_node_upstream_recv(node, now, c->id, buf, (size_t)n);
        if (rc < 0) {
            complain("recv", rc);
            conn_close(c, now);
            return;
        }
        if ((size_t)n < sizeof buf) return;
    }
}

static void upstream_connect_done(struct conn *c, uint64_t now) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
        conn_close(c, now); /* tells the node: connect failed */
        return;
    }
    c->connecting = 0;
    if (listo_node_upstream_connected(node, now, c->id) != LISTO_OK) conn_close(c, now);
}

static void accept_viewers(int lfd, uint64_t now) {
    int i;
    for (i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        uint64_t id;
        int fd = accept(lfd, (struct sockaddr *)&peer, &pl);
        if (fd < 0) return;
        if (set_nonblocking(fd) < 0) {
            close(fd);
            continue;
        }
        id = listo_node_viewer_open(node, now, &peer, (size_t)pl);
        if (id == 0 || !conn_new(VIEWER, fd, id)) {
            if (id) listo_node_viewer_close(node, now, id);
            close(fd);
        }
    }
}

/* NAME=PREFIX@HOST:PORT[,HOST:PORT] */
static int instruct_channel(char *spec) {
    const char *endpoints[MAX_ENDPOINTS];
    listo_instruction ins;
    char *eq = strchr(spec, '='), *at, *ep;
    size_t n = 0;
    int rc;
    if (!eq) return -1;
    at = strchr(eq + 1, '@');
    if (!at) return -1;
    *eq = 0;
    *at = 0;
    for (ep = strtok(at + 1, ","); ep && n < MAX_ENDPOINTS; ep = strtok(NULL, ",")) endpoints[n++] = ep;
    memset(&ins, 0, sizeof ins);
    ins.size = sizeof ins;
    ins.channel = spec;
    ins.path_prefix = eq + 1;
    ins.endpoints = endpoints;
    ins.endpoints_len = n;
    rc = listo_node_instruct(node, mono_ns(), &ins);
    if (rc != LISTO_OK) {
        complain("--channel", rc);
        return -1;
    }
    return 0;
}

static void print_stats(void) {
    int64_t need = listo_node_stats_json(node, NULL, 0);
    char *json;
    if (need < 0) return;
    json = malloc((size_t)need + 1);
    if (json && listo_node_stats_json(node, json, (size_t)need + 1) == need) printf("%s\n", json);
    free(json);
    fflush(stdout);
    fprintf(stderr, "listo_host: %llu bytes sent by sendfile\n", sendfile_bytes);
}

static int usage(void) {
    fprintf(stderr, "usage: listo_host --listen IP:PORT --channel NAME=PREFIX@HOST:PORT[,HOST:PORT]... "
                    "[--max-seconds N] [--exit-on-eof] [-v]\n");
    return 2;
}

int main(int argc, char **argv) {
    static struct pollfd pfd[MAX_CONNS + 2];
    static int pmap[MAX_CONNS + 2];
    struct sockaddr_storage laddr;
    socklen_t llen = 0;
    listo_config cfg;
    struct sigaction sa;
    const char *listen_arg = NULL;
    char *channels[MAX_CHANNELS];
    int nchannels = 0, exit_on_eof = 0, lfd, one = 1, i;
    long max_seconds = 0;
    uint64_t started, last_wall;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_arg = argv[++i];
        } else if (!strcmp(argv[i], "--channel") && i + 1 < argc && nchannels < MAX_CHANNELS) {
            channels[nchannels++] = argv[++i];
        } else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc) {
            max_seconds = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--exit-on-eof")) {
            exit_on_eof = 1;
        } else if (!strcmp(argv[i], "-v")) {
            verbose = 1;
        } else {
            return usage();
        }
    }
    if (!listen_arg || parse_addr(listen_arg, &laddr, &llen) != 0) return usage();

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN; /* a viewer that hangs up must not kill us in writev */
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (listo_config_init(&cfg) != LISTO_OK) return 1;
    cfg.file_backed_objects = 1; /* large objects leave by sendfile (conn_flush) */
    node = listo_node_new(&cfg);
    if (!node) {
        fprintf(stderr, "listo_host: listo_node_new failed\n");
        return 1;
    }
    started = last_wall = mono_ns();
    listo_node_set_wall_clock(node, started, wall_ns());
    for (i = 0; i < nchannels; i++) {
        if (instruct_channel(channels[i]) != 0) {
            listo_node_free(node);
            return usage();
        }
    }

    lfd = socket(laddr.ss_family, SOCK_STREAM, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&laddr, llen) < 0 || listen(lfd, 1024) < 0 || set_nonblocking(lfd) < 0) {
        perror("listo_host: listen");
        listo_node_free(node);
        return 1;
    }
    llen = sizeof laddr;
    getsockname(lfd, (struct sockaddr *)&laddr, &llen);
    printf("listening on ");
    print_addr(stdout, &laddr);
    printf("\n");
    fflush(stdout);

    drive(mono_ns()); /* prefetches, events of the instructions */
    while (!stop) {
        uint64_t now = mono_ns(), deadline = listo_node_timeout_ns(node);
        int timeout_ms = 1000, nfds = 0, ready;
        if (max_seconds > 0 && now - started >= (uint64_t)max_seconds * 1000000000u) break;
        if (deadline != UINT64_MAX) {
            uint64_t wait = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
            if (wait < (uint64_t)timeout_ms) timeout_ms = (int)wait;
        }
        pfd[nfds].fd = lfd;
        pfd[nfds].events = POLLIN;
        pmap[nfds++] = -1;
        if (exit_on_eof) {
            pfd[nfds].fd = 0;
            pfd[nfds].events = POLLIN;
            pmap[nfds++] = -2;
        }
        for (i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            if (c->kind == FREE) continue;
            pfd[nfds].fd = c->fd;
            pfd[nfds].events = c->connecting ? POLLOUT : (short)(POLLIN | (c->want_write ? POLLOUT : 0));
            pmap[nfds++] = i;
        }
        ready = poll(pfd, (nfds_t)nfds, timeout_ms);
        now = mono_ns();
        if (ready < 0 && errno != EINTR) {
            perror("listo_host: poll");
            break;
        }
        for (i = 0; ready > 0 && i < nfds; i++) {
            short re = pfd[i].revents;
            struct conn *c;
            if (!re) continue;
            if (pmap[i] == -2) {
                char b[256];
                if (read(0, b, sizeof b) <= 0) stop = 1;
                continue;
            }
            if (pmap[i] < 0) continue; /* the listener: accepted below */
            c = &conns[pmap[i]];
            if (c->kind == FREE) continue;
            if (c->connecting) {
                upstream_connect_done(c, now);
                continue;
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) conn_read(c, now);
            if (c->kind != FREE && (re & POLLOUT)) conn_flush(c, now);
        }
        if (ready > 0 && (pfd[0].revents & POLLIN)) accept_viewers(lfd, now);
        if (now >= listo_node_timeout_ns(node)) listo_node_handle_timeout(node, now);
        if (now - last_wall > 60u * 1000000000u) {
            listo_node_set_wall_clock(node, now, wall_ns());
            last_wall = now;
        }
        drive(now);
    }

    print_stats();
    for (i = 0; i < MAX_CONNS; i++)
        if (conns[i].kind != FREE) close(conns[i].fd);
    close(lfd);
    listo_node_free(node);
    return 0;
}
