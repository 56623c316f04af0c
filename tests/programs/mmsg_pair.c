/* Three datagrams sent with one sendmmsg on a connected UDP socket and received with one
 * recvmmsg on another, on 127.0.0.1. Built dynamically (the interposer records it) and with
 * -static (the eBPF recorder does): both must write the same events. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(void)
{
    int tx = socket(AF_INET, SOCK_DGRAM, 0), rx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (bind(rx, (struct sockaddr *)&a, sizeof a) || getsockname(rx, (struct sockaddr *)&a, &len) ||
        connect(tx, (struct sockaddr *)&a, sizeof a))
        return 1;
    char out[3][16] = {"one", "three!", "fivefive"}, in[3][64];
    struct iovec oiov[3], iiov[3];
    struct mmsghdr om[3], im[3];
    memset(om, 0, sizeof om);
    memset(im, 0, sizeof im);
    for (int i = 0; i < 3; i++) {
        oiov[i] = (struct iovec){out[i], strlen(out[i])};
        iiov[i] = (struct iovec){in[i], sizeof in[i]};
        om[i].msg_hdr.msg_iov = &oiov[i];
        om[i].msg_hdr.msg_iovlen = 1;
        im[i].msg_hdr.msg_iov = &iiov[i];
        im[i].msg_hdr.msg_iovlen = 1;
    }
    if (sendmmsg(tx, om, 3, 0) != 3)
        return 1;
    /* All three are queued on loopback before sendmmsg returns. */
    int got = recvmmsg(rx, im, 3, MSG_DONTWAIT, NULL);
    printf("%d\n", got);
    return got == 3 ? 0 : 1;
}
