/* The interposer's wait benchmark workload: 64 bytes sent on one end of a loopback TCP
 * connection, then the other end waits for them in poll() and reads them with a non-blocking
 * recv(), N times: what CPython does for every socket with a timeout, and curl always.
 * `blocking` mode is the same loop with a blocking recv and no poll. Prints ns per iteration.
 *
 * Usage: poll_pingpong poll|blocking N
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    int use_poll = argc > 1 && strcmp(argv[1], "poll") == 0;
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (bind(l, (struct sockaddr *)&addr, sizeof addr) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&addr, &len))
        return perror("listen"), 1;
    int a = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(a, (struct sockaddr *)&addr, sizeof addr)) return perror("connect"), 1;
    int b = accept(l, NULL, NULL);
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char msg[64] = {7}, buf[64];
    double start = now_ns();
    for (long i = 0; i < n; i++) {
        if (send(a, msg, sizeof msg, 0) != sizeof msg) return perror("send"), 1;
        size_t got = 0;
        while (got < sizeof buf) {
            if (use_poll) {
                struct pollfd p = {.fd = b, .events = POLLIN};
                if (poll(&p, 1, 5000) != 1) return perror("poll"), 1;
            }
            ssize_t r = recv(b, buf + got, sizeof buf - got, use_poll ? MSG_DONTWAIT : 0);
            if (r <= 0) return perror("recv"), 1;
            got += r;
        }
    }
    printf("%.1f\n", (now_ns() - start) / n);
    return 0;
}
