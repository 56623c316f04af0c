/* What a process was handed at exec: its descriptors, signal state, process group, credentials,
 * capabilities, scheduling and umask, and whether it can open a packet socket. Written in C
 * because CPython changes its own signal dispositions at startup.
 *
 * As `inherit_probe`, it prints the report on stdout. Under another name (a symlink `tcpdump`,
 * `ip` or `nft` on PATH), it writes the report to $NBPROBE_OUT/NAME.PID and then execs the real
 * program, $NBPROBE_REAL_NAME, with the same arguments: so netblame's helpers are probed too. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(FILE *out) {
    /* Descriptors first, before this program opens anything of its own. */
    DIR *d = opendir("/proc/self/fd");
    int own = d ? dirfd(d) : -1;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == own) continue;
        char link[64], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        fprintf(out, "fd %d %s\n", fd, target);
    }
    if (d) closedir(d);
    FILE *st = fopen("/proc/self/status", "r");
    char line[1024];
    while (st && fgets(line, sizeof line, st)) {
        static const char *keep[] = {"SigBlk:", "SigIgn:", "NSpgid:", "NSsid:", "Umask:", "Uid:", "Gid:",
                                     "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
                                     "NoNewPrivs:", "Seccomp:", "Cpus_allowed_list:", NULL};
        for (const char **k = keep; *k; k++)
            if (strncmp(line, *k, strlen(*k)) == 0) fputs(line, out);
    }
    if (st) fclose(st);
    fprintf(out, "Nice:\t%d\nPolicy:\t%d\n", getpriority(PRIO_PROCESS, 0), sched_getscheduler(0));
    /* Packet sockets on this network namespace, by inode (the last column). */
    FILE *pk = fopen("/proc/net/packet", "r");
    while (pk && fgets(line, sizeof line, pk)) {
        char *last = strrchr(line, ' ');
        while (last && last > line && (last[1] == '\n' || last[1] == 0)) {
            *last = 0;
            last = strrchr(line, ' ');
        }
        if (last && strncmp(line, "sk", 2) != 0) fprintf(out, "packet_inode %s\n", last + 1);
    }
    if (pk) fclose(pk);
    int s = socket(AF_PACKET, SOCK_RAW, 0);
    fprintf(out, "open_packet_socket %s\n", s >= 0 ? "ok" : strerror(errno));
    if (s >= 0) close(s);
    fflush(out);
}

int main(int argc, char **argv) {
    (void)argc;
    char *name = basename(argv[0]);
    if (strcmp(name, "inherit_probe") == 0) {
        report(stdout);
        return 0;
    }
    char path[4096], var[256];
    snprintf(path, sizeof path, "%s/%s.%d", getenv("NBPROBE_OUT"), name, getpid());
    /* The report's own file is opened after the descriptors are listed. */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    report(mem);
    fclose(mem);
    FILE *out = fopen(path, "w");
    if (!out) return 126;
    fwrite(buf, 1, len, out);
    fclose(out);
    snprintf(var, sizeof var, "NBPROBE_REAL_%s", name);
    const char *real = getenv(var);
    if (!real) return 127;
    execv(real, argv);
    return 127;
}
