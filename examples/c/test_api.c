/*
 * test_api: C unit tests of the LISTO C API, written from include/listo.h alone.
 *
 * Edge cases (NULL handle, bad JSON, unknown ids, buffers too small, strerror on arbitrary
 * ints, free(NULL) and double free) and one end-to-end run: a node serves a viewer through a
 * socketpair against a fake CDN endpoint that is also a socketpair, then everything is freed.
 * Exits 0 when every check passed; run it under valgrind or ASan to check for leaks.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "listo.h"

static int passed, failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        if (a_ == b_) {                                                      \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, a_, #b, b_); \
        }                                                                    \
    } while (0)

static listo_node *new_node(void) {
    listo_config cfg;
    CHECK_EQ(listo_config_init(&cfg), LISTO_OK);
    return listo_node_new(&cfg);
}

static void test_version_and_strerror(void) {
    char want[32];
    static const int codes[] = {INT_MIN, -1000, -100, -18, -9, -3, -2, -1, 0, 1, 7, 4096, INT_MAX,
                                LISTO_ERR_NULL, LISTO_ERR_INVALID, LISTO_ERR_UNKNOWN_ID,
                                LISTO_ERR_BUFFER_TOO_SMALL, LISTO_ERR_UNKNOWN_CHANNEL,
                                LISTO_ERR_TOO_MANY_CHANNELS, LISTO_ERR_INVALID_STATE, LISTO_ERR_PANIC};
    size_t i;
    snprintf(want, sizeof want, "%d.%d.%d", LISTO_VERSION_MAJOR, LISTO_VERSION_MINOR, LISTO_VERSION_PATCH);
    CHECK(listo_version() != NULL);
    CHECK(strcmp(listo_version(), want) == 0);
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = listo_strerror(codes[i]);
        CHECK(s != NULL && s[0] != 0);
    }
    CHECK(strcmp(listo_strerror(LISTO_ERR_NULL), listo_strerror(LISTO_ERR_INVALID)) != 0);
    CHECK(strcmp(listo_strerror(LISTO_DONE), listo_strerror(LISTO_ERR_NULL)) != 0);
    /* DONE and CLOSE are not errors and differ from every error code. */
    CHECK(LISTO_DONE != LISTO_CLOSE && LISTO_DONE < 0 && LISTO_CLOSE < 0);
    CHECK(LISTO_ERR_NULL != LISTO_DONE && LISTO_ERR_NULL != LISTO_CLOSE);
}

static void test_config_and_lifecycle(void) {
    listo_config cfg;
    listo_node *n;
    CHECK_EQ(listo_config_init(NULL), LISTO_ERR_NULL);
    CHECK(listo_node_new(NULL) == NULL);
    memset(&cfg, 0, sizeof cfg); /* size not set */
    CHECK(listo_node_new(&cfg) == NULL);
    CHECK_EQ(listo_config_init(&cfg), LISTO_OK);
    CHECK_EQ(cfg.size, sizeof cfg);
    CHECK(cfg.memory_budget > 0 && cfg.upstream_pool_size > 0 && cfg.cors_origin == NULL);
    cfg.upstream_pool_size = 0; /* must be at least 1 */
    CHECK(listo_node_new(&cfg) == NULL);
    CHECK_EQ(listo_config_init(&cfg), LISTO_OK);
    cfg.cors_origin = "*";
    n = listo_node_new(&cfg);
    CHECK(n != NULL);
    listo_node_free(n);
    listo_node_free(n); /* a second free of the same node is ignored */
    listo_node_free(NULL);
}

static void test_null_handle(void) {
    uint8_t buf[16];
    listo_slice sl[4];
    uint64_t id;
    listo_conn kind;
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    listo_event ev;
    listo_stats st;
    listo_channel_stats cs;
    char text[16];
    ev.size = sizeof ev;
    st.size = sizeof st;
    cs.size = sizeof cs;
    CHECK_EQ(listo_node_instruct(NULL, 0, NULL), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_instruct_json(NULL, 0, (const uint8_t *)"{}", 2), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_withdraw(NULL, 0, "ch1"), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_set_wall_clock(NULL, 0, 0), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_open(NULL, 0, NULL, 0), 0);
    CHECK_EQ(listo_node_viewer_recv(NULL, 0, 1, buf, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_poll_transmit(NULL, 1, buf, sizeof buf), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_poll_transmit_slices(NULL, 1, sl, 4), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_sent(NULL, 0, 1, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_close(NULL, 0, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_poll_connect(NULL, &id, &ss, &len), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_connected(NULL, 0, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_recv(NULL, 0, 1, buf, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_poll_transmit(NULL, 1, buf, sizeof buf), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_poll_transmit_slices(NULL, 1, sl, 4), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_sent(NULL, 0, 1, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_upstream_closed(NULL, 0, 1), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_poll_ready(NULL, &kind, &id), LISTO_ERR_NULL);
    CHECK(listo_node_timeout_ns(NULL) == UINT64_MAX);
    CHECK_EQ(listo_node_handle_timeout(NULL, 0), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_poll_event(NULL, &ev), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_stats(NULL, &st), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_channel_stats(NULL, 0, &cs), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_stats_json(NULL, text, sizeof text), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_last_error(NULL, text, sizeof text), LISTO_ERR_NULL);
    {
        /* Bytes in plain memory are not in a file: write them. */
        listo_slice plain;
        int fd = -7;
        uint64_t off = 7;
        plain.ptr = buf;
        plain.len = sizeof buf;
        CHECK_EQ(listo_slice_file(NULL, &fd, &off), LISTO_ERR_NULL);
        CHECK_EQ(listo_slice_file(&plain, NULL, &off), LISTO_ERR_NULL);
        CHECK_EQ(listo_slice_file(&plain, &fd, NULL), LISTO_ERR_NULL);
        CHECK_EQ(listo_slice_file(&plain, &fd, &off), LISTO_DONE);
        CHECK(fd == -7 && off == 7); /* untouched */
    }
}

static void test_bad_input(void) {
    listo_node *n = new_node();
    const char *eps[] = {"127.0.0.1:18080"};
    const char *bad_eps[] = {"cdn.example:80"};
    const char *null_eps[] = {NULL};
    const char *bad_json = "{\"channel\": \"ch1\", ";
    const char *no_prefix = "{\"channel\":\"ch1\",\"endpoints\":[\"127.0.0.1:1\"]}";
    const char *good = "{\"channel\":\"ch2\",\"path_prefix\":\"/live/ch2/\",\"endpoints\":[\"[::1]:18080\"]}";
    listo_instruction ins;
    char msg[256];
    uint8_t buf[64];
    listo_slice sl[4];
    listo_conn kind;
    uint64_t id;
    listo_event ev;
    listo_stats st;
    listo_channel_stats cs;
    char small[4];
    int64_t need;
    char *json;
    CHECK(n != NULL);
    if (!n) return;

    /* JSON form */
    CHECK_EQ(listo_node_instruct_json(n, 0, (const uint8_t *)bad_json, strlen(bad_json)), LISTO_ERR_INVALID);
    CHECK(listo_node_last_error(n, msg, sizeof msg) > 0 && strstr(msg, "JSON") != NULL);
    CHECK_EQ(listo_node_instruct_json(n, 0, (const uint8_t *)no_prefix, strlen(no_prefix)), LISTO_ERR_INVALID);
    CHECK(listo_node_last_error(n, msg, sizeof msg) > 0 && strstr(msg, "path_prefix") != NULL);
    CHECK_EQ(listo_node_last_error(n, msg, 0), LISTO_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(listo_node_last_error(n, small, sizeof small), 3); /* cut to fit, NUL-terminated */
    CHECK_EQ(small[3], 0);
    CHECK_EQ(listo_node_instruct_json(n, 0, NULL, 5), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_instruct_json(n, 0, (const uint8_t *)"", 0), LISTO_ERR_INVALID);
    CHECK_EQ(listo_node_instruct_json(n, 0, (const uint8_t *)good, strlen(good)), LISTO_OK);

    /* struct form */
    memset(&ins, 0, sizeof ins);
    ins.channel = "ch1";
    ins.path_prefix = "/live/ch1/";
    ins.endpoints = eps;
    ins.endpoints_len = 1;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_INVALID); /* size not set */
    ins.size = sizeof ins;
    ins.endpoints = bad_eps;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_INVALID);
    ins.endpoints = null_eps;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_NULL);
    ins.endpoints = NULL;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_NULL);
    ins.endpoints_len = 0;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_INVALID); /* no endpoint */
    ins.endpoints = eps;
    ins.endpoints_len = 1;
    ins.channel = "bad name";
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_INVALID);
    ins.channel = NULL;
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_NULL);
    ins.channel = "ch1";
    ins.path_prefix = "/live/ch2/"; /* ch2's prefix */
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_ERR_INVALID);
    ins.path_prefix = "/live/ch1/";
    CHECK_EQ(listo_node_instruct(n, 0, &ins), LISTO_OK);
    CHECK_EQ(listo_node_instruct(n, 0, NULL), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_withdraw(n, 0, "nope"), LISTO_ERR_UNKNOWN_CHANNEL);
    CHECK_EQ(listo_node_withdraw(n, 0, NULL), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_withdraw(n, 0, "ch2"), LISTO_OK);

    /* unknown ids */
    CHECK_EQ(listo_node_viewer_recv(n, 0, 999, buf, 1), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_viewer_poll_transmit(n, 999, buf, sizeof buf), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_viewer_poll_transmit_slices(n, 999, sl, 4), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_viewer_sent(n, 0, 999, 1), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_viewer_close(n, 0, 999), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_connected(n, 0, 999), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_recv(n, 0, 999, buf, 1), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_poll_transmit(n, 999, buf, sizeof buf), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_poll_transmit_slices(n, 999, sl, 4), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_sent(n, 0, 999, 1), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_upstream_closed(n, 0, 999), LISTO_ERR_UNKNOWN_ID);
    CHECK_EQ(listo_node_viewer_close(n, 0, 0), LISTO_ERR_UNKNOWN_ID);

    /* NULL out-pointers and zero-sized buffers */
    id = listo_node_viewer_open(n, 0, NULL, 0);
    CHECK(id != 0);
    CHECK_EQ(listo_node_viewer_recv(n, 0, id, NULL, 0), 0);
    CHECK_EQ(listo_node_viewer_recv(n, 0, id, NULL, 3), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_poll_transmit(n, id, buf, 0), LISTO_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(listo_node_viewer_poll_transmit(n, id, NULL, 10), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_viewer_poll_transmit_slices(n, id, sl, 0), LISTO_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(listo_node_viewer_poll_transmit(n, id, buf, sizeof buf), LISTO_DONE); /* nothing yet */
    CHECK_EQ(listo_node_poll_ready(n, NULL, &id), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_poll_ready(n, &kind, NULL), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_poll_event(n, NULL), LISTO_ERR_NULL);
    ev.size = 0;
    CHECK_EQ(listo_node_poll_event(n, &ev), LISTO_ERR_INVALID);
    st.size = 1;
    CHECK_EQ(listo_node_stats(n, &st), LISTO_ERR_INVALID);
    cs.size = 0;
    CHECK_EQ(listo_node_channel_stats(n, 0, &cs), LISTO_ERR_INVALID);
    st.size = sizeof st;
    CHECK_EQ(listo_node_stats(n, &st), LISTO_OK);
    CHECK_EQ(st.channels, 1);
    CHECK_EQ(st.viewer_connections, 1);
    cs.size = sizeof cs;
    CHECK_EQ(listo_node_channel_stats(n, 0, &cs), LISTO_OK);
    CHECK(strcmp(cs.channel, "ch1") == 0);
    CHECK_EQ(listo_node_channel_stats(n, 1, &cs), LISTO_DONE);

    /* stats JSON: sizing query, too small, exact */
    need = listo_node_stats_json(n, NULL, 0);
    CHECK(need > 2);
    CHECK_EQ(listo_node_stats_json(n, NULL, 10), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_stats_json(n, small, sizeof small), LISTO_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(small[0], 0);
    json = malloc((size_t)need + 1);
    CHECK(json != NULL);
    if (json) {
        CHECK_EQ(listo_node_stats_json(n, json, (size_t)need), LISTO_ERR_BUFFER_TOO_SMALL); /* no room for NUL */
        CHECK_EQ(listo_node_stats_json(n, json, (size_t)need + 1), need);
        CHECK(json[0] == '{' && strstr(json, "\"channel\":\"ch1\"") != NULL);
        free(json);
    }

    /* events: instructed ch2, ch1, withdrawn ch2 */
    ev.size = sizeof ev;
    CHECK_EQ(listo_node_poll_event(n, &ev), LISTO_OK);
    CHECK_EQ(ev.kind, LISTO_EVENT_KIND_CHANNEL_INSTRUCTED);
    CHECK(strcmp(ev.channel, "ch2") == 0);
    CHECK_EQ(ev.size, sizeof ev);
    CHECK_EQ(listo_node_poll_event(n, &ev), LISTO_OK);
    CHECK(strcmp(ev.channel, "ch1") == 0);
    CHECK_EQ(listo_node_poll_event(n, &ev), LISTO_OK);
    CHECK_EQ(ev.kind, LISTO_EVENT_KIND_CHANNEL_WITHDRAWN);
    CHECK_EQ(listo_node_poll_event(n, &ev), LISTO_DONE);

    CHECK_EQ(listo_node_viewer_close(n, 0, id), LISTO_OK);
    CHECK_EQ(listo_node_viewer_close(n, 0, id), LISTO_ERR_UNKNOWN_ID);
    listo_node_free(n);
}

/* ------------------------------------------------------------------------------------------
 * End to end through socketpairs: viewer <-> node <-> fake CDN endpoint. */

static const char BODY[] = "0123456789abcdefghijklmnopqrstuvwxyz segment payload";

/* The host's side of the node, for one viewer and one upstream socket. */
struct host {
    listo_node *node;
    int viewer_fd;  /* node's end of the viewer socketpair */
    uint64_t viewer;
    int up_fd;      /* node's end of the upstream socketpair (-1 until the node asks) */
    uint64_t up;
    int connects;
};

static void flush_viewer(struct host *h, uint64_t now) {
    int round;
    for (round = 0; round < 100; round++) {
        listo_slice sl[8];
        struct iovec iov[8];
        int64_t n = listo_node_viewer_poll_transmit_slices(h->node, h->viewer, sl, 8), i;
        ssize_t w;
        if (n <= 0) {
            CHECK(n == LISTO_DONE);
            return;
        }
        for (i = 0; i < n; i++) {
            iov[i].iov_base = (void *)(uintptr_t)sl[i].ptr;
            iov[i].iov_len = sl[i].len;
        }
        w = writev(h->viewer_fd, iov, (int)n);
        CHECK(w > 0);
        if (w <= 0) return;
        CHECK_EQ(listo_node_viewer_sent(h->node, now, h->viewer, (size_t)w), LISTO_OK);
    }
}

static void flush_upstream(struct host *h, uint64_t now) {
    int round;
    for (round = 0; round < 100; round++) {
        uint8_t buf[4096];
        int64_t n = listo_node_upstream_poll_transmit(h->node, h->up, buf, sizeof buf); /* copy form */
        ssize_t w;
        if (n <= 0) {
            CHECK(n == LISTO_DONE);
            return;
        }
        w = write(h->up_fd, buf, (size_t)n);
        CHECK(w > 0);
        if (w <= 0) return;
        CHECK_EQ(listo_node_upstream_sent(h->node, now, h->up, (size_t)w), LISTO_OK);
    }
}

/* Everything the node wants after an input. */
static void drive(struct host *h, uint64_t now, int sv_up[2]) {
    int round;
    for (round = 0; round < 100; round++) {
        uint64_t id;
        listo_conn kind;
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        int progress = 0;
        while (listo_node_poll_connect(h->node, &id, &ss, &len) == LISTO_OK) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            CHECK_EQ(ss.ss_family, AF_INET);
            CHECK_EQ(len, sizeof(struct sockaddr_in));
            CHECK_EQ(ntohs(a->sin_port), 18080);
            CHECK_EQ(ntohl(a->sin_addr.s_addr), 0x7f000001);
            /* "connect": the fake endpoint is already on the other end of a socketpair */
            CHECK(h->up_fd < 0);
            h->up_fd = sv_up[0];
            h->up = id;
            h->connects++;
            CHECK_EQ(listo_node_upstream_connected(h->node, now, id), LISTO_OK);
            CHECK_EQ(listo_node_upstream_connected(h->node, now, id), LISTO_ERR_INVALID_STATE);
            len = sizeof ss;
            progress = 1;
        }
        while (listo_node_poll_ready(h->node, &kind, &id) == LISTO_OK) {
            if (kind == LISTO_CONN_VIEWER && id == h->viewer) flush_viewer(h, now);
            if (kind == LISTO_CONN_UPSTREAM && id == h->up) flush_upstream(h, now);
            progress = 1;
        }
        if (!progress) return;
    }
}

/* Reads what is there (non-blocking), at most cap - 1 bytes, NUL-terminated. */
static size_t read_some(int fd, char *buf, size_t cap) {
    size_t got = 0;
    int i;
    for (i = 0; i < 100 && got + 1 < cap; i++) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = 0;
    return got;
}

static void test_serve_through_socketpairs(void) {
    const char *eps[] = {"127.0.0.1:18080"};
    const char *get = "GET /live/ch1/seg1.ts HTTP/1.1\r\nHost: node\r\n\r\n";
    const char *get404 = "GET /vod/x.ts HTTP/1.1\r\nHost: node\r\n\r\n";
    int sv_view[2], sv_up[2];
    struct host h;
    listo_instruction ins;
    char req[2048], resp[4096], head[256];
    uint8_t copy[4096];
    uint64_t now = 1000000000u;
    size_t n;
    int i;
    listo_event ev;
    listo_stats st;
    listo_channel_stats cs;

    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv_view), 0);
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv_up), 0);
    for (i = 0; i < 2; i++) {
        fcntl(sv_view[i], F_SETFL, O_NONBLOCK);
        fcntl(sv_up[i], F_SETFL, O_NONBLOCK);
    }
    memset(&h, 0, sizeof h);
    h.node = new_node();
    h.up_fd = -1;
    h.viewer_fd = sv_view[0];
    CHECK(h.node != NULL);
    if (!h.node) return;
    CHECK_EQ(listo_node_set_wall_clock(h.node, now, 1700000000ull * 1000000000ull), LISTO_OK);

    memset(&ins, 0, sizeof ins);
    ins.size = sizeof ins;
    ins.channel = "ch1";
    ins.path_prefix = "/live/ch1/";
    ins.endpoints = eps;
    ins.endpoints_len = 1;
    ins.host = "cdn.example";
    CHECK_EQ(listo_node_instruct(h.node, now, &ins), LISTO_OK);

    /* The viewer connects and asks for a segment. */
    h.viewer = listo_node_viewer_open(h.node, now, NULL, 0);
    CHECK(h.viewer != 0);
    CHECK_EQ(write(sv_view[1], get, strlen(get)), (ssize_t)strlen(get));
    n = read_some(sv_view[0], req, sizeof req);
    CHECK_EQ(listo_node_viewer_recv(h.node, now, h.viewer, (const uint8_t *)req, n), (int64_t)n);
    {
        /* The connect request is not lost when the address buffer is too small. */
        uint64_t id;
        uint8_t tiny[4];
        size_t tl = sizeof tiny;
        CHECK_EQ(listo_node_poll_connect(h.node, &id, tiny, &tl), LISTO_ERR_BUFFER_TOO_SMALL);
    }
    drive(&h, now, sv_up);
    CHECK_EQ(h.connects, 1);
    CHECK(listo_node_timeout_ns(h.node) != UINT64_MAX); /* the first-byte timer runs */

    /* The fake CDN endpoint reads the request and answers. */
    n = read_some(sv_up[1], req, sizeof req);
    CHECK(strncmp(req, "GET /live/ch1/seg1.ts HTTP/1.1\r\n", 32) == 0);
    CHECK(strstr(req, "cdn.example") != NULL);
    snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: %u\r\n\r\n%s",
             (unsigned)strlen(BODY), BODY);
    CHECK_EQ(write(sv_up[1], resp, strlen(resp)), (ssize_t)strlen(resp));
    n = read_some(h.up_fd, resp, sizeof resp);
    CHECK_EQ(listo_node_upstream_recv(h.node, now, h.up, (const uint8_t *)resp, n), (int64_t)n);
    drive(&h, now, sv_up);

    /* The viewer gets the segment. */
    n = read_some(sv_view[1], resp, sizeof resp);
    CHECK(strncmp(resp, "HTTP/1.1 200", 12) == 0);
    CHECK(n > strlen(BODY) && strcmp(resp + n - strlen(BODY), BODY) == 0);

    /* Again on the same connection: a hit, no new upstream connection, read by the copy form. */
    CHECK_EQ(write(sv_view[1], get, strlen(get)), (ssize_t)strlen(get));
    n = read_some(sv_view[0], req, sizeof req);
    CHECK_EQ(listo_node_viewer_recv(h.node, now, h.viewer, (const uint8_t *)req, n), (int64_t)n);
    {
        int64_t c = listo_node_viewer_poll_transmit(h.node, h.viewer, copy, sizeof copy);
        CHECK(c > (int64_t)strlen(BODY));
        if (c > 0) {
            CHECK(memcmp(copy + c - (int64_t)strlen(BODY), BODY, strlen(BODY)) == 0);
            CHECK_EQ(listo_node_viewer_sent(h.node, now, h.viewer, (size_t)c), LISTO_OK);
        }
    }
    drive(&h, now, sv_up);
    CHECK_EQ(h.connects, 1);

    /* A path outside every channel: 404, never fetched. */
    CHECK_EQ(listo_node_viewer_recv(h.node, now, h.viewer, (const uint8_t *)get404, strlen(get404)),
             (int64_t)strlen(get404));
    {
        int64_t c = listo_node_viewer_poll_transmit(h.node, h.viewer, copy, sizeof copy);
        CHECK(c > 12);
        if (c > 12) {
            memcpy(head, copy, 12);
            head[12] = 0;
            CHECK(strcmp(head, "HTTP/1.1 404") == 0);
            CHECK_EQ(listo_node_viewer_sent(h.node, now, h.viewer, (size_t)c), LISTO_OK);
        }
    }
    drive(&h, now, sv_up);
    CHECK_EQ(h.connects, 1);

    /* Counters and events. */
    st.size = sizeof st;
    CHECK_EQ(listo_node_stats(h.node, &st), LISTO_OK);
    CHECK_EQ(st.viewer_connections, 1);
    CHECK(st.downstream_bytes > 2 * strlen(BODY));
    CHECK(st.error_responses >= 1);
    cs.size = sizeof cs;
    CHECK_EQ(listo_node_channel_stats(h.node, 0, &cs), LISTO_OK);
    CHECK_EQ(cs.upstream_requests, 1);
    CHECK_EQ(cs.requests, 2);
    CHECK_EQ(cs.hits, 1);
    CHECK_EQ(cs.misses, 1);
    CHECK_EQ(cs.upstream_latency_count, 1);
    {
        uint64_t sum = 0;
        for (i = 0; i < LISTO_LATENCY_BUCKETS; i++) sum += cs.upstream_latency_buckets[i];
        CHECK_EQ(sum, 1); /* one request sent, one head received */
    }
    CHECK_EQ(cs.upstream_errors_connect + cs.upstream_errors_timeout + cs.upstream_errors_status + cs.upstream_errors_malformed, 0);
    /* Both requests were for the segment's directory (no playlist named it): one rendition. */
    CHECK_EQ(cs.renditions, 1);
    {
        listo_rendition_stats rs;
        rs.size = 0;
        CHECK_EQ(listo_node_rendition_stats(h.node, 0, 0, &rs), LISTO_ERR_INVALID);
        rs.size = sizeof rs;
        CHECK_EQ(listo_node_rendition_stats(NULL, 0, 0, &rs), LISTO_ERR_NULL);
        CHECK_EQ(listo_node_rendition_stats(h.node, 0, 0, NULL), LISTO_ERR_NULL);
        CHECK_EQ(listo_node_rendition_stats(h.node, 0, 0, &rs), LISTO_OK);
        CHECK(strcmp(rs.rendition, "/live/ch1/") == 0);
        CHECK_EQ(rs.requests, 2);
        CHECK_EQ(rs.misses, 1);
        CHECK(rs.downstream_bytes > 2 * strlen(BODY));
        CHECK_EQ(listo_node_rendition_stats(h.node, 0, 1, &rs), LISTO_DONE);
        CHECK_EQ(listo_node_rendition_stats(h.node, 1, 0, &rs), LISTO_DONE);
    }
    ev.size = sizeof ev;
    CHECK_EQ(listo_node_poll_event(h.node, &ev), LISTO_OK);
    CHECK_EQ(ev.kind, LISTO_EVENT_KIND_CHANNEL_INSTRUCTED);
    CHECK_EQ(listo_node_poll_event(h.node, &ev), LISTO_OK);
    CHECK_EQ(ev.kind, LISTO_EVENT_KIND_REQUEST_REJECTED);
    CHECK_EQ(ev.status, 404);

    /* Time passes: timers run, nothing breaks. */
    CHECK_EQ(listo_node_handle_timeout(h.node, now + 1), LISTO_OK);
    drive(&h, now + 1, sv_up);

    /* The viewer hangs up; the upstream closes; everything is freed. */
    CHECK_EQ(listo_node_viewer_close(h.node, now, h.viewer), LISTO_OK);
    CHECK_EQ(listo_node_upstream_closed(h.node, now, h.up), LISTO_OK);
    listo_node_free(h.node);
    close(sv_view[0]);
    close(sv_view[1]);
    close(sv_up[0]);
    close(sv_up[1]);
}

/* Two nodes (as two worker threads would have) share one store: the second node does not fetch
 * what the first is fetching; it is woken when the object completed and serves the same bytes. */
static int wakes;
static void on_wake(void *user) {
    (*(int *)user)++;
}

static void test_shared_store(void) {
    const char *eps[] = {"127.0.0.1:18080"};
    const char *get = "GET /live/ch1/seg7.ts HTTP/1.1\r\nHost: node\r\n\r\n";
    listo_instruction ins;
    listo_shared *shared = listo_shared_new();
    listo_node *a = new_node(), *b = new_node();
    uint64_t now = 1000000000u, va, vb, up, id;
    uint8_t addr[64], buf[8192];
    size_t alen = sizeof addr;
    int64_t n;
    listo_conn kind;
    char resp[512];
    CHECK(shared != NULL && a != NULL && b != NULL);
    if (!shared || !a || !b) return;
    CHECK_EQ(listo_node_join_shared(NULL, shared, on_wake, &wakes), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_join_shared(a, NULL, on_wake, &wakes), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_join_shared(a, shared, NULL, &wakes), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_handle_shared(NULL, now), LISTO_ERR_NULL);
    CHECK_EQ(listo_node_join_shared(a, shared, on_wake, &wakes), LISTO_OK);
    CHECK_EQ(listo_node_join_shared(b, shared, on_wake, &wakes), LISTO_OK);
    listo_shared_free(shared); /* the nodes keep their references */
    listo_shared_free(NULL);
    memset(&ins, 0, sizeof ins);
    ins.size = sizeof ins;
    ins.channel = "ch1";
    ins.path_prefix = "/live/ch1/";
    ins.endpoints = eps;
    ins.endpoints_len = 1;
    CHECK_EQ(listo_node_instruct(a, now, &ins), LISTO_OK);
    CHECK_EQ(listo_node_instruct(b, now, &ins), LISTO_OK);

    va = listo_node_viewer_open(a, now, NULL, 0);
    vb = listo_node_viewer_open(b, now, NULL, 0);
    CHECK_EQ(listo_node_viewer_recv(a, now, va, (const uint8_t *)get, strlen(get)), (int64_t)strlen(get));
    CHECK_EQ(listo_node_viewer_recv(b, now, vb, (const uint8_t *)get, strlen(get)), (int64_t)strlen(get));
    CHECK_EQ(listo_node_poll_connect(a, &up, addr, &alen), LISTO_OK);
    alen = sizeof addr;
    CHECK_EQ(listo_node_poll_connect(b, &id, addr, &alen), LISTO_DONE); /* b waits for a's fetch */

    CHECK_EQ(listo_node_upstream_connected(a, now, up), LISTO_OK);
    n = listo_node_upstream_poll_transmit(a, up, buf, sizeof buf);
    CHECK(n > 0);
    if (n > 0) CHECK_EQ(listo_node_upstream_sent(a, now, up, (size_t)n), LISTO_OK);
    snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: %u\r\n\r\n%s",
             (unsigned)strlen(BODY), BODY);
    CHECK_EQ(listo_node_upstream_recv(a, now, up, (const uint8_t *)resp, strlen(resp)), (int64_t)strlen(resp));
    CHECK_EQ(wakes, 1); /* b was told */

    CHECK_EQ(listo_node_handle_shared(b, now), LISTO_OK);
    CHECK_EQ(listo_node_poll_ready(b, &kind, &id), LISTO_OK);
    CHECK_EQ(kind, LISTO_CONN_VIEWER);
    CHECK_EQ(id, vb);
    n = listo_node_viewer_poll_transmit(b, vb, buf, sizeof buf - 1);
    CHECK(n > (int64_t)strlen(BODY));
    if (n > 0) {
        buf[n] = 0;
        CHECK(strncmp((const char *)buf, "HTTP/1.1 200 OK", 15) == 0);
        CHECK(strstr((const char *)buf, BODY) != NULL);
    }
    {
        listo_channel_stats cs;
        cs.size = sizeof cs;
        CHECK_EQ(listo_node_channel_stats(b, 0, &cs), LISTO_OK);
        CHECK_EQ(cs.upstream_requests, 0);
        CHECK_EQ(listo_node_channel_stats(a, 0, &cs), LISTO_OK);
        CHECK_EQ(cs.upstream_requests, 1);
    }
    listo_node_free(a);
    listo_node_free(b);
}

int main(void) {
    test_version_and_strerror();
    test_config_and_lifecycle();
    test_null_handle();
    test_bad_input();
    test_serve_through_socketpairs();
    test_shared_store();
    printf("test_api: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
