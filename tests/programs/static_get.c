/* A C client for a static build (gcc -static: no dynamic loader, so no interposer): GET /slow
 * from 127.0.0.1:PORT with blocking calls, reading to the end. Usage: static_get PORT */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
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
