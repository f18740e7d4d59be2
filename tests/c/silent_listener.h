/*
 * silent_listener.h: for the C tests, a listening 127.0.0.1 socket that never
 * accepts. Header-only (static), C11 and C++.
 */
#ifndef KVS_TESTS_SILENT_LISTENER_H
#define KVS_TESTS_SILENT_LISTENER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listening 127.0.0.1 socket that never accepts: TCP connects, the
 * WebSocket handshake never gets an answer. Returns the fd or -1. */
static int silent_listener(char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        close(fd);
        return -1;
    }
    snprintf(out, cap, "ws://127.0.0.1:%u", (unsigned)ntohs(addr.sin_port));
    return fd;
}

#endif
