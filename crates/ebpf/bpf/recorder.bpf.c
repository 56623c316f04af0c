// SPDX-License-Identifier: GPL-2.0 OR MIT
/* netblame's eBPF recorder: the socket calls of a set of processes (the command's tree, or
 * the processes of --pid), for programs the LD_PRELOAD interposer cannot reach (Go, static
 * binaries, processes already running). Only tracepoints: this kernel has no kprobes and its
 * lockdown refuses fentry/fexit.
 *
 * - raw_syscalls sys_enter/sys_exit: a call's entry and return times, its arguments, its result.
 * - sock_send_length/sock_recv_length (fired inside every socket send and receive, read(2) and
 *   write(2) on a socket included): which socket the call moved bytes on, and its TCP sequence
 *   number, read from the socket after the call (first byte = write_seq or copied_seq - bytes).
 *   A call on anything but an IPv4/IPv6 TCP or UDP socket is not recorded.
 * - sched_process_fork/exec/exit: the set of processes follows the command's children.
 *
 * One event per call goes to a ring buffer; a call that finds it full is counted per process
 * (`lost`), never waited for. Every loop is bounded. The event layout is `struct nb_event`,
 * mirrored in src/logs.rs. Rebuild with `just bpf` (clang -target bpf). */

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* x86_64 system call numbers. */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_poll 7
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_select 23
#define NR_pselect6 270
#define NR_ppoll 271
#define NR_epoll_wait 232
#define NR_epoll_ctl 233
#define NR_epoll_pwait 281
#define NR_accept4 288
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_epoll_pwait2 441

/* The event log's kinds and calls (crates/instrument/src/record.rs). */
#define KIND_OPEN 1
#define KIND_RECV 2
#define KIND_SEND 3
#define KIND_CLOSE 4
#define KIND_WAIT 8
/* Process events, for the reader only. */
#define KIND_FORK 100
#define KIND_EXEC 101
#define KIND_EXIT 102

#define CALL_RECVFROM 2
#define CALL_RECVMSG 3
#define CALL_RECVMMSG 4
#define CALL_READ 5
#define CALL_READV 6
#define CALL_SENDTO 8
#define CALL_SENDMSG 9
#define CALL_SENDMMSG 10
#define CALL_WRITE 11
#define CALL_WRITEV 12
#define CALL_SENDFILE 13
#define CALL_CONNECT 14
#define CALL_ACCEPT 15
#define CALL_ACCEPT4 16
#define CALL_CLOSE 17
#define CALL_POLL 19
#define CALL_PPOLL 20
#define CALL_SELECT 21
#define CALL_PSELECT 22
#define CALL_EPOLL_WAIT 23
#define CALL_EPOLL_PWAIT 24
#define CALL_EPOLL_PWAIT2 25

#define FLAG_SEQ 0x01
#define FLAG_PEEK 0x02
#define FLAG_NONBLOCKING 0x04
#define FLAG_TCP 0x08

#define READY_READ 0x01
#define READY_WRITE 0x02
#define READY_HANGUP 0x04
#define READY_ERROR 0x08

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 0x02
#define MSG_DONTWAIT 0x40
#define O_NONBLOCK 04000
#define EINPROGRESS 115

/* Waits: events (epoll) and pollfds looked at per wait, and the fds select's sets can name;
 * iovecs summed per call for `requested`. */
#define MAX_WAIT_EVENTS 64
#define MAX_SELECT_WORDS 16
#define MAX_IOVECS 8

struct nb_event {
    u64 t_call;   /* CLOCK_MONOTONIC ns: the reader moves it to the capture's clock */
    u64 t_return;
    u64 sk;       /* the socket's identity (a kernel address, never dereferenced by the reader) */
    s64 result;   /* bytes moved, or -1 */
    u64 requested;
    u32 tgid;
    u32 tid;
    s32 fd;
    u32 seq;      /* TCP sequence number of the first byte moved (FLAG_SEQ) */
    s32 err;
    u16 call;
    u8 kind;
    u8 flags;
    u8 ready;
    u8 family;    /* 4, 6, or 0 */
    u16 lport;
    u16 rport;
    u16 pad;
    u8 laddr[16];
    u8 raddr[16];
};

_Static_assert(sizeof(struct nb_event) == 104, "nb_event is EVENT_SIZE bytes (src/logs.rs)");

struct call_state {
    u64 t_call;
    u64 args[4];
    u64 sk;
    s64 moved;    /* bytes the socket tracepoints saw move (the mmsg forms' sum) */
    u32 nr;
    u32 seq;
    u8 sock_seen;
    u8 flags;
    u8 active;    /* in a call (nr alone cannot say: read is system call 0) */
};

struct lost_calls {
    u64 first_ns;
    u64 calls;
};

struct datum_key {
    u32 tgid;
    u32 pad;
    u64 datum;
};

/* The ring buffer's size in bytes, set by the loader with the map's. */
const volatile u64 ring_bytes = 1 << 22;

/* The process whose next child (a new process, not a thread) joins the set: the loader's own,
 * armed around the spawn of the command. */
u32 armed_parent = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, u32);
    __type(value, u8);
} traced SEC(".maps");

/* The call each thread of a followed process is in (`active`): storage in the task itself,
 * cheaper than a hash map on every system call. */
struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct call_state);
} calls SEC(".maps");

static __always_inline struct call_state *current_call(int create)
{
    return bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0,
                                create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* (tgid << 32 | fd) -> socket, for the sockets calls were recorded on. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, u64);
    __type(value, u64);
} socks SEC(".maps");

/* epoll's user datum -> fd, per process (Go registers a pointer, not the fd). */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct datum_key);
    __type(value, s32);
} epoll_fds SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, u32);
    __type(value, struct lost_calls);
} lost SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 22); /* the loader sets it from --ebpf-ring-mib */
} events SEC(".maps");

static __always_inline int is_traced(u32 tgid)
{
    return bpf_map_lookup_elem(&traced, &tgid) != 0;
}

static __always_inline void count_lost(u32 tgid, u64 now)
{
    struct lost_calls *l = bpf_map_lookup_elem(&lost, &tgid);
    if (l) {
        __sync_fetch_and_add(&l->calls, 1);
        return;
    }
    struct lost_calls fresh = { .first_ns = now, .calls = 1 };
    bpf_map_update_elem(&lost, &tgid, &fresh, BPF_ANY);
}

static __always_inline struct nb_event *reserve(u32 tgid, u64 now)
{
    struct nb_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count_lost(tgid, now);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    return e;
}

/* Hands an event to the reader without waking it: a wakeup per event costs the traced program
 * microseconds a call (the reader's thread is scheduled for each one). The reader polls every
 * few milliseconds instead, and is woken only when the ring is a quarter full. */
static __always_inline void submit(struct nb_event *e)
{
    u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
    bpf_ringbuf_submit(e, avail > ring_bytes / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline struct file *file_of_fd(s32 fd)
{
    if (fd < 0)
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt || (u32)fd >= BPF_CORE_READ(fdt, max_fds))
        return 0;
    struct file **fds = BPF_CORE_READ(fdt, fd);
    struct file *f = 0;
    bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
    return f;
}

/* The socket's addresses and protocol into `e`; 0 for anything but inet TCP/UDP. */
static __always_inline int describe(struct nb_event *e, struct sock *sk)
{
    if (!sk)
        return 0;
    u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
    u16 proto = BPF_CORE_READ(sk, sk_protocol);
    if ((family != AF_INET && family != AF_INET6) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
        return 0;
    e->sk = (u64)sk;
    if (proto == IPPROTO_TCP)
        e->flags |= FLAG_TCP;
    e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
    e->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
    if (family == AF_INET) {
        e->family = 4;
        u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
        u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
        __builtin_memcpy(e->laddr, &l, 4);
        __builtin_memcpy(e->raddr, &r, 4);
    } else {
        e->family = 6;
        BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
        BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
    }
    return 1;
}

static __always_inline struct sock *sock_of_file(struct file *f)
{
    if (!f)
        return 0;
    struct socket *s = BPF_CORE_READ(f, private_data);
    if (!s)
        return 0;
    return BPF_CORE_READ(s, sk);
}

static __always_inline u64 sock_key(u32 tgid, s32 fd)
{
    return ((u64)tgid << 32) | (u32)fd;
}

static __always_inline int relevant(long nr)
{
    switch (nr) {
    case NR_read: case NR_write: case NR_close: case NR_readv: case NR_writev:
    case NR_sendfile: case NR_connect: case NR_accept: case NR_sendto: case NR_recvfrom:
    case NR_sendmsg: case NR_recvmsg: case NR_epoll_wait: case NR_epoll_pwait:
    case NR_accept4: case NR_recvmmsg: case NR_sendmmsg: case NR_epoll_pwait2:
    case NR_poll: case NR_ppoll: case NR_select: case NR_pselect6:
        return 1;
    }
    return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
    if (id != NR_epoll_ctl && !relevant(id))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    /* A followed thread has call storage from its first such call on: no lookup of the set. */
    struct call_state *st = current_call(0);
    if (!st) {
        if (!is_traced(tgid))
            return 0;
        st = current_call(1);
        if (!st)
            return 0;
    }
    if (id == NR_epoll_ctl) {
        /* epoll_ctl(epfd, op, fd, event): ADD (1) and MOD (3) say which datum names fd. */
        u64 op = regs->si;
        u64 uev = regs->r10;
        if ((op == 1 || op == 3) && uev) {
            struct user_epoll_event ev = {};
            if (bpf_probe_read_user(&ev, sizeof(ev), (void *)uev) == 0) {
                struct datum_key k = { .tgid = tgid, .datum = ev.data };
                s32 fd = (s32)regs->dx;
                bpf_map_update_elem(&epoll_fds, &k, &fd, BPF_ANY);
            }
        }
        return 0;
    }
    st->t_call = bpf_ktime_get_ns();
    st->nr = id;
    st->args[0] = regs->di;
    st->args[1] = regs->si;
    st->args[2] = regs->dx;
    st->args[3] = regs->r10;
    st->sk = 0;
    st->moved = 0;
    st->seq = 0;
    st->sock_seen = 0;
    st->flags = 0;
    st->active = 1;
    return 0;
}

static __always_inline int on_sock(struct sock *sk, int ret, int flags, int send)
{
    struct call_state *st = current_call(0);
    if (!st || !st->active)
        return 0;
    if (!st->sock_seen) {
        st->sock_seen = 1;
        st->sk = (u64)sk;
        if (flags & MSG_PEEK)
            st->flags |= FLAG_PEEK;
        if (flags & MSG_DONTWAIT)
            st->flags |= FLAG_NONBLOCKING;
        struct tcp_sock *tp = sk->sk_protocol == IPPROTO_TCP ? bpf_skc_to_tcp_sock(sk) : 0;
        if (tp) {
            u32 moved = (ret > 0 && !(flags & MSG_PEEK)) ? (u32)ret : 0;
            if (send) {
                st->seq = tp->write_seq - moved;
            } else {
                u32 copied = tp->copied_seq;
                /* A read that took the last bytes before a FIN took the FIN too: copied_seq
                 * passed it (tcp_recvmsg's found_fin_ok). */
                if (moved && (sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) &&
                    copied == tp->rcv_nxt)
                    moved += 1;
                st->seq = copied - moved;
            }
            st->flags |= FLAG_SEQ;
        }
    }
    if (ret > 0)
        st->moved += ret;
    return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_sock_send, struct sock *sk, int ret, int flags)
{
    return on_sock(sk, ret, flags, 1);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv, struct sock *sk, int ret, int flags)
{
    return on_sock(sk, ret, flags, 0);
}

/* The fields every call's event has: who made the call, on which fd, and when. */
static __always_inline void stamp(struct nb_event *e, struct call_state *st, u32 tgid, u32 tid,
                                  s32 fd, u64 now)
{
    e->fd = fd;
    e->t_call = st->t_call;
    e->t_return = now;
    e->tgid = tgid;
    e->tid = tid;
}

static __always_inline u64 iov_total(u64 iov, u64 count)
{
    u64 total = 0;
    for (int i = 0; i < MAX_IOVECS; i++) {
        if ((u64)i >= count)
            break;
        struct user_iovec v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + i * sizeof(v))))
            break;
        total += v.len;
    }
    return total;
}

static __always_inline void set_result(struct nb_event *e, long ret)
{
    if (ret < 0) {
        e->result = -1;
        e->err = -ret;
    } else {
        e->result = ret;
    }
}

/* A read or a write on an inet socket. */
static __always_inline void emit_io(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    if (!st->sock_seen)
        return;
    u64 key = sock_key(tgid, (s32)st->args[0]);
    u64 *known = bpf_map_lookup_elem(&socks, &key);
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    if (known && *known == st->sk) {
        /* Described in an earlier event: the reader knows its addresses. */
        e->sk = st->sk;
    } else {
        if (!describe(e, (struct sock *)st->sk)) {
            bpf_ringbuf_discard(e, 0);
            return;
        }
        struct file *f = file_of_fd((s32)st->args[0]);
        if (f && (BPF_CORE_READ(f, f_flags) & O_NONBLOCK))
            e->flags |= FLAG_NONBLOCKING;
        bpf_map_update_elem(&socks, &key, &st->sk, BPF_ANY);
    }
    int send = 0;
    switch (st->nr) {
    case NR_read: e->call = CALL_READ; e->requested = st->args[2]; break;
    case NR_recvfrom: e->call = CALL_RECVFROM; e->requested = st->args[2]; break;
    case NR_readv: e->call = CALL_READV; e->requested = iov_total(st->args[1], st->args[2]); break;
    case NR_recvmsg: {
        struct user_msghdr m = {};
        bpf_probe_read_user(&m, sizeof(m), (void *)st->args[1]);
        e->call = CALL_RECVMSG;
        e->requested = iov_total(m.msg_iov, m.msg_iovlen);
        break;
    }
    case NR_recvmmsg: e->call = CALL_RECVMMSG; break;
    case NR_write: e->call = CALL_WRITE; e->requested = st->args[2]; send = 1; break;
    case NR_sendto: e->call = CALL_SENDTO; e->requested = st->args[2]; send = 1; break;
    case NR_writev: e->call = CALL_WRITEV; e->requested = iov_total(st->args[1], st->args[2]); send = 1; break;
    case NR_sendmsg: {
        struct user_msghdr m = {};
        bpf_probe_read_user(&m, sizeof(m), (void *)st->args[1]);
        e->call = CALL_SENDMSG;
        e->requested = iov_total(m.msg_iov, m.msg_iovlen);
        send = 1;
        break;
    }
    case NR_sendmmsg: e->call = CALL_SENDMMSG; send = 1; break;
    case NR_sendfile: e->call = CALL_SENDFILE; e->requested = st->args[3]; send = 1; break;
    }
    e->kind = send ? KIND_SEND : KIND_RECV;
    stamp(e, st, tgid, tid, (s32)st->args[0], now);
    set_result(e, ret);
    if (st->nr == NR_recvmmsg || st->nr == NR_sendmmsg) {
        /* The result counts messages: the bytes are what the socket moved. */
        if (ret >= 0)
            e->result = st->moved;
        e->requested = st->moved;
    }
    e->seq = st->seq;
    e->flags |= st->flags;
    submit(e);
}

/* A connect's or an accept's new socket. */
static __always_inline void emit_open(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    s32 fd = st->nr == NR_connect ? (s32)st->args[0] : (s32)ret;
    if (fd < 0)
        return;
    struct file *f = file_of_fd(fd);
    struct sock *sk = sock_of_file(f);
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    if (!describe(e, sk)) {
        bpf_ringbuf_discard(e, 0);
        return;
    }
    e->kind = KIND_OPEN;
    e->call = st->nr == NR_connect ? CALL_CONNECT : st->nr == NR_accept ? CALL_ACCEPT : CALL_ACCEPT4;
    stamp(e, st, tgid, tid, fd, now);
    if (st->nr == NR_connect)
        set_result(e, ret);
    if (BPF_CORE_READ(f, f_flags) & O_NONBLOCK)
        e->flags |= FLAG_NONBLOCKING;
    u64 key = sock_key(tgid, fd);
    u64 skv = (u64)sk;
    bpf_map_update_elem(&socks, &key, &skv, BPF_ANY);
    submit(e);
}

static __always_inline void emit_close(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    s32 fd = (s32)st->args[0];
    u64 key = sock_key(tgid, fd);
    u64 *sk = bpf_map_lookup_elem(&socks, &key);
    if (!sk)
        return;
    u64 skv = *sk;
    bpf_map_delete_elem(&socks, &key);
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    e->kind = KIND_CLOSE;
    e->call = CALL_CLOSE;
    e->sk = skv;
    stamp(e, st, tgid, tid, fd, now);
    set_result(e, ret);
    submit(e);
}

/* A Wait event for fd if it is a recorded socket; 0 when the ring is full. */
static __always_inline int emit_wait(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now,
                                     s32 fd, u16 call, u8 ready)
{
    u64 key = sock_key(tgid, fd);
    u64 *sk = bpf_map_lookup_elem(&socks, &key);
    if (!sk)
        return 1;
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return 0;
    e->kind = KIND_WAIT;
    e->call = call;
    e->sk = *sk;
    e->ready = ready;
    stamp(e, st, tgid, tid, fd, now);
    e->result = ret;
    submit(e);
    return 1;
}

struct user_pollfd {
    s32 fd;
    short events;
    short revents;
};

/* What a wait's loop (bpf_loop: the verifier checks its body once) needs. */
struct wait_loop {
    struct call_state *st;
    u32 tgid;
    u32 tid;
    long ret;
    u64 now;
    u16 call;
    int reported;
    u64 words[3]; /* select: the current word of each set */
};

static __always_inline u8 ready_bits(u32 ev)
{
    u8 r = 0;
    if (ev & 0x001) /* EPOLLIN */
        r |= READY_READ;
    if (ev & 0x004) /* EPOLLOUT */
        r |= READY_WRITE;
    if (ev & (0x010 | 0x2000)) /* EPOLLHUP, EPOLLRDHUP */
        r |= READY_HANGUP;
    if (ev & 0x008) /* EPOLLERR */
        r |= READY_ERROR;
    return r;
}

/* epoll: the reported socket of event i (its datum names the fd; Go registers a pointer). */
static long epoll_event_at(u64 i, void *ctx)
{
    struct wait_loop *l = ctx;
    if ((long)i >= l->ret)
        return 1;
    struct user_epoll_event ev = {};
    if (bpf_probe_read_user(&ev, sizeof(ev), (void *)(l->st->args[1] + i * sizeof(ev))))
        return 1;
    struct datum_key k = { .tgid = l->tgid, .datum = ev.data };
    s32 *fdp = bpf_map_lookup_elem(&epoll_fds, &k);
    /* A program that registered the fd itself as the datum (libuv, asyncio, Java). */
    s32 fd = fdp ? *fdp : (s32)ev.data;
    return !emit_wait(l->st, l->tgid, l->tid, l->ret, l->now, fd, l->call, ready_bits(ev.events));
}

/* poll, ppoll: pollfd i, if it has events in its revents. */
static long pollfd_at(u64 i, void *ctx)
{
    struct wait_loop *l = ctx;
    if (i >= l->st->args[1] || l->reported >= l->ret)
        return 1;
    struct user_pollfd p = {};
    if (bpf_probe_read_user(&p, sizeof(p), (void *)(l->st->args[0] + i * sizeof(p))))
        return 1;
    if (p.fd < 0 || p.revents == 0)
        return 0;
    l->reported++;
    u8 ready = 0;
    if (p.revents & (0x001 | 0x002)) /* POLLIN, POLLPRI */
        ready |= READY_READ;
    if (p.revents & 0x004) /* POLLOUT */
        ready |= READY_WRITE;
    if (p.revents & (0x010 | 0x2000)) /* POLLHUP, POLLRDHUP */
        ready |= READY_HANGUP;
    if (p.revents & 0x008) /* POLLERR */
        ready |= READY_ERROR;
    if (!ready)
        return 0;
    return !emit_wait(l->st, l->tgid, l->tid, l->ret, l->now, p.fd, l->call, ready);
}

/* select, pselect6: fd i, if a set still holds it. */
static long select_fd_at(u64 i, void *ctx)
{
    struct wait_loop *l = ctx;
    if (i >= l->st->args[0])
        return 1;
    u32 b = i % 64;
    if (b == 0) {
        for (int s = 0; s < 3; s++) {
            u64 set = l->st->args[1 + s];
            l->words[s] = 0;
            if (set)
                bpf_probe_read_user(&l->words[s], 8, (void *)(set + (i / 64) * 8));
        }
    }
    u64 bit = 1ULL << b;
    u8 ready = (l->words[0] & bit ? READY_READ : 0) | (l->words[1] & bit ? READY_WRITE : 0) |
               (l->words[2] & bit ? READY_ERROR : 0);
    if (!ready)
        return 0;
    return !emit_wait(l->st, l->tgid, l->tid, l->ret, l->now, (s32)i, l->call, ready);
}

static __always_inline void emit_waits(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    struct wait_loop l = { .st = st, .tgid = tgid, .tid = tid, .ret = ret, .now = now };
    switch (st->nr) {
    case NR_epoll_wait:
    case NR_epoll_pwait:
    case NR_epoll_pwait2:
        l.call = st->nr == NR_epoll_wait ? CALL_EPOLL_WAIT
               : st->nr == NR_epoll_pwait ? CALL_EPOLL_PWAIT : CALL_EPOLL_PWAIT2;
        bpf_loop(MAX_WAIT_EVENTS, epoll_event_at, &l, 0);
        break;
    case NR_poll:
    case NR_ppoll:
        l.call = st->nr == NR_poll ? CALL_POLL : CALL_PPOLL;
        bpf_loop(MAX_WAIT_EVENTS, pollfd_at, &l, 0);
        break;
    default:
        l.call = st->nr == NR_select ? CALL_SELECT : CALL_PSELECT;
        bpf_loop(MAX_SELECT_WORDS * 64, select_fd_at, &l, 0);
    }
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
    /* Only a followed thread has call storage (made at its first system call's entry). */
    struct call_state *st = current_call(0);
    if (!st || !st->active)
        return 0;
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32, tid = (u32)pt;
    u64 now = bpf_ktime_get_ns();
    switch (st->nr) {
    case NR_connect:
        emit_open(st, tgid, tid, ret, now);
        break;
    case NR_accept:
    case NR_accept4:
        emit_open(st, tgid, tid, ret, now);
        break;
    case NR_close:
        emit_close(st, tgid, tid, ret, now);
        break;
    case NR_epoll_wait:
    case NR_epoll_pwait:
    case NR_epoll_pwait2:
    case NR_poll:
    case NR_ppoll:
    case NR_select:
    case NR_pselect6:
        if (ret > 0)
            emit_waits(st, tgid, tid, ret, now);
        break;
    default:
        emit_io(st, tgid, tid, ret, now);
    }
    st->active = 0;
    return 0;
}

static __always_inline void emit_process(u8 kind, u32 tgid, u32 parent)
{
    u64 now = bpf_ktime_get_ns();
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    e->kind = kind;
    e->tgid = tgid;
    e->tid = parent;
    e->t_call = now;
    e->t_return = now;
    submit(e);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
    u32 ptgid = parent->tgid;
    u32 ctgid = child->tgid;
    if (ptgid == ctgid)
        return 0; /* a thread */
    int follow = is_traced(ptgid);
    if (!follow && armed_parent != 0 && ptgid == armed_parent) {
        armed_parent = 0;
        follow = 1;
    }
    if (!follow)
        return 0;
    u8 one = 1;
    bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY);
    emit_process(KIND_FORK, ctgid, ptgid);
    return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, int old_pid, void *bprm)
{
    u32 tgid = p->tgid;
    if (is_traced(tgid))
        emit_process(KIND_EXEC, tgid, 0);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p, int group_dead)
{
    u32 tgid = p->tgid;
    if (!group_dead || !is_traced(tgid))
        return 0;
    bpf_map_delete_elem(&traced, &tgid);
    emit_process(KIND_EXIT, tgid, 0);
    return 0;
}
