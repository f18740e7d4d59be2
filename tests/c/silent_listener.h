/*
 * silent_listener.h: for the C tests, 127.0.0.1 sockets: one that listens and
 * never accepts, one only bound. Header-only (static inline), C11 and C++.
 */
#ifndef KVS_TESTS_SILENT_LISTENER_H
#define KVS_TESTS_SILENT_LISTENER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A 127.0.0.1 socket on a free port, listening or only bound, with its
 * ws:// endpoint in `out`. Returns the fd or -1. */
static inline int loopback_socket(int listening, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || (listening && listen(fd, 4) != 0) ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        close(fd);
        return -1;
    }
    snprintf(out, cap, "ws://127.0.0.1:%u", (unsigned)ntohs(addr.sin_port));
    return fd;
}

/* A listening 127.0.0.1 socket that never accepts: TCP connects, the
 * WebSocket handshake never gets an answer. Returns the fd or -1. */
static inline int silent_listener(char *out, size_t cap) { return loopback_socket(1, out, cap); }

#endif
