/* A C client for a static build (gcc -static: no dynamic loader, so no interposer): GET /slow
 * from 127.0.0.1:PORT with blocking calls, reading to the end, COUNT times (default once), each
 * on a new connection (which gets the fd the last one closed). Usage: static_get PORT [COUNT] */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int get(const char *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        return 1;
    }
    const char *req = "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (send(s, req, strlen(req), 0) != (ssize_t)strlen(req))
        return 1;
    char buf[65536];
    long n, total = 0;
    while ((n = recv(s, buf, sizeof buf, 0)) > 0)
        total += n;
    close(s);
    return total > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        return 2;
    int count = argc == 3 ? atoi(argv[2]) : 1;
    for (int i = 0; i < count; i++)
        if (get(argv[1]))
            return 1;
    return 0;
}
