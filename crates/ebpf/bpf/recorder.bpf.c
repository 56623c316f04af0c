// SPDX-License-Identifier: GPL-2.0 OR MIT
/* netblame's eBPF recorder: the socket calls of a set of processes (the command's tree, or
 * the processes of --pid), for programs the LD_PRELOAD interposer cannot reach (Go, static
 * binaries, processes already running). Only tracepoints: this kernel has no kprobes and its
 * lockdown refuses fentry/fexit.
 *
 * - raw_syscalls sys_enter/sys_exit: a call's entry and return times, its arguments, its result;
 *   at the return, the call's socket is found in the fd table (a call on anything but an
 *   IPv4/IPv6 TCP or UDP socket is not recorded) and, for TCP, the sequence number of the first
 *   byte moved is read from it (write_seq or copied_seq after the call, less the bytes).
 * - sched_process_fork/exec/exit: the set of processes follows the command's children.
 *
 * One event per call goes to a ring buffer, preceded by a socket event the first time a process
 * uses a socket on an fd (its addresses); a call that finds the ring full is counted per process
 * (`lost`), never waited for. A socket is named by its inode number (socket:[N] in /proc), which
 * the kernel never gives two sockets. Every loop is bounded. The event layouts are `struct
 * nb_event` and `struct nb_socket`, mirrored in src/logs.rs. Rebuild with `just bpf`. */

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
/* A socket's addresses (struct nb_socket), before the first call of a process on it. */
#define KIND_SOCKET 103

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
#define S_IFMT 0170000
#define S_IFSOCK 0140000

/* Waits: events (epoll) and pollfds looked at per wait, and the fds select's sets can name;
 * iovecs summed per call for `requested`. */
#define MAX_WAIT_EVENTS 64
#define MAX_SELECT_WORDS 16
#define MAX_IOVECS 8
/* recvmmsg's and sendmmsg's messages looked at per call (the kernel's UIO_MAXIOV). */
#define MAX_MMSG 1024
/* The sockets a thread remembers having named to the reader. */
#define SOCKET_CACHE 4

/* One call. 56 bytes, so that with the ring's 8-byte header every record fills one cache line. */
struct nb_event {
    u64 t_call;   /* CLOCK_MONOTONIC ns: the reader moves it to the capture's clock */
    u64 t_return;
    u64 sock;     /* the socket's inode number */
    s64 result;   /* bytes moved (a wait: sockets reported), or -errno */
    u32 requested; /* at most 4 GiB - 1 (the kernel moves at most 2 GiB a call) */
    u32 tgid;
    u32 tid;      /* a fork: the parent process */
    s32 fd;
    u32 seq;      /* TCP sequence number of the first byte moved (FLAG_SEQ) */
    u8 call;
    u8 kind;
    u8 flags;
    u8 ready;
};

/* A socket's addresses: what the reader needs to open its stream. Same size, `kind` at the same
 * place as nb_event's. */
struct nb_socket {
    u64 sock;
    u8 laddr[16];
    u8 raddr[16];
    u32 tgid;
    u16 lport;
    u16 rport;
    u8 family;    /* 4 or 6 */
    u8 flags;     /* FLAG_TCP */
    u8 pad[3];
    u8 kind;      /* KIND_SOCKET */
    u8 pad2[2];
};

_Static_assert(sizeof(struct nb_event) == 56, "nb_event is EVENT_SIZE bytes (src/logs.rs)");
_Static_assert(sizeof(struct nb_socket) == 56, "nb_socket is EVENT_SIZE bytes (src/logs.rs)");
_Static_assert(__builtin_offsetof(struct nb_event, kind) == 53, "KIND_AT (src/logs.rs)");
_Static_assert(__builtin_offsetof(struct nb_socket, kind) == 53, "KIND_AT (src/logs.rs)");

struct call_state {
    u64 t_call;
    u64 args[4];
    u64 cache_sock[SOCKET_CACHE]; /* sockets this thread knows the reader knows, on ... */
    s32 cache_fd[SOCKET_CACHE];   /* ... these fds */
    u32 cache_next;
    u32 events;   /* submitted by this thread: every 16th looks at the ring's fill */
    u32 nr;
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
    st->active = 1;
    return 0;
}

/* A record of the ring buffer, or 0 (counted lost) when it is full. Every field of it is set by
 * the caller: nothing is left from the record that was there before. */
static __always_inline void *reserve(u32 tgid, u64 now)
{
    void *r = bpf_ringbuf_reserve(&events, sizeof(struct nb_event), 0);
    if (!r)
        count_lost(tgid, now);
    return r;
}

/* Hands a record to the reader without waking it: a wakeup per event costs the traced program
 * microseconds a call (the reader's thread is scheduled for each one). The reader drains the
 * ring every 20 ms, and is woken when it is a quarter full, which each thread looks at every
 * 16th record (the ring's positions are written by the reader: a cache line from the other
 * CPU). */
static __always_inline void submit(void *r, struct call_state *st)
{
    u64 wake = 0;
    if (st && (++st->events & 15) == 0)
        wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > ring_bytes / 4;
    bpf_ringbuf_submit(r, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* What a call's fd is, when it is an inet TCP or UDP socket. */
struct socket_ref {
    struct sock *sk;
    u64 sock;     /* the socket's inode number */
    u32 f_flags;
};

/* The fd's socket, from the calling thread's fd table; 0 for anything else. Direct loads (the
 * verifier turns them into loads that cannot fault), one probe read for the fd array. */
static __always_inline int socket_at(s32 fd, struct socket_ref *out)
{
    if (fd < 0)
        return 0;
    struct task_struct *task = bpf_get_current_task_btf();
    struct fdtable *fdt = task->files->fdt;
    if (!fdt || (u32)fd >= fdt->max_fds)
        return 0;
    struct file **fds = fdt->fd;
    struct file *raw = 0;
    bpf_probe_read_kernel(&raw, sizeof(raw), &fds[fd]);
    if (!raw)
        return 0;
    struct file *f = bpf_rdonly_cast(raw, bpf_core_type_id_kernel(struct file));
    struct inode *ino = f->f_inode;
    if ((ino->i_mode & S_IFMT) != S_IFSOCK)
        return 0;
    struct socket *so = bpf_rdonly_cast(f->private_data, bpf_core_type_id_kernel(struct socket));
    struct sock *sk = so->sk;
    if (!sk)
        return 0;
    u16 family = sk->__sk_common.skc_family;
    u16 proto = sk->sk_protocol;
    if ((family != AF_INET && family != AF_INET6) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
        return 0;
    out->sk = sk;
    out->sock = ino->i_ino;
    out->f_flags = f->f_flags;
    return 1;
}

static __always_inline u64 sock_key(u32 tgid, s32 fd)
{
    return ((u64)tgid << 32) | (u32)fd;
}

/* Names `ref`'s socket on `fd` to the reader (a socket record) unless it knows it: this
 * thread said so before (its cache) or the process's socks map has it on this fd. 0 when the
 * ring is full (the call is then not recorded either: the reader could not place it). */
static __always_inline int name_socket(struct call_state *st, u32 tgid, s32 fd,
                                       struct socket_ref *ref, u64 now)
{
    for (int i = 0; i < SOCKET_CACHE; i++)
        if (st->cache_sock[i] == ref->sock && st->cache_fd[i] == fd)
            return 1;
    u64 key = sock_key(tgid, fd);
    u64 *known = bpf_map_lookup_elem(&socks, &key);
    if (!known || *known != ref->sock) {
        struct nb_socket *d = reserve(tgid, now);
        if (!d)
            return 0;
        struct sock *sk = ref->sk;
        __builtin_memset(d, 0, sizeof(*d));
        d->kind = KIND_SOCKET;
        d->sock = ref->sock;
        d->tgid = tgid;
        d->flags = sk->sk_protocol == IPPROTO_TCP ? FLAG_TCP : 0;
        d->lport = sk->__sk_common.skc_num;
        d->rport = __builtin_bswap16(sk->__sk_common.skc_dport);
        if (sk->__sk_common.skc_family == AF_INET) {
            d->family = 4;
            u32 l = sk->__sk_common.skc_rcv_saddr;
            u32 r = sk->__sk_common.skc_daddr;
            __builtin_memcpy(d->laddr, &l, 4);
            __builtin_memcpy(d->raddr, &r, 4);
        } else {
            d->family = 6;
            BPF_CORE_READ_INTO(&d->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
            BPF_CORE_READ_INTO(&d->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
        }
        submit(d, st);
        bpf_map_update_elem(&socks, &key, &ref->sock, BPF_ANY);
    }
    u32 slot = st->cache_next++ % SOCKET_CACHE;
    st->cache_sock[slot] = ref->sock;
    st->cache_fd[slot] = fd;
    return 1;
}

/* The fields every call's event has. */
static __always_inline void stamp(struct nb_event *e, struct call_state *st, u8 kind, u8 call,
                                  u32 tgid, u32 tid, s32 fd, u64 sock, long ret, u64 now)
{
    e->t_call = st->t_call;
    e->t_return = now;
    e->sock = sock;
    e->result = ret;
    e->requested = 0;
    e->tgid = tgid;
    e->tid = tid;
    e->fd = fd;
    e->seq = 0;
    e->call = call;
    e->kind = kind;
    e->flags = 0;
    e->ready = 0;
}

static __always_inline u32 saturated(u64 n)
{
    return n > 0xffffffffULL ? 0xffffffff : (u32)n;
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

/* What the loop over an mmsg call's messages needs: a first pass sums their bytes (`total`),
 * a second (`emit`) writes an event for each. */
struct messages_loop {
    struct call_state *st;
    u64 vec;
    u64 count;
    u64 total;
    int emit;
    u64 sock;
    u64 now;
    u32 tgid;
    u32 tid;
    s32 fd;
    u32 seq;      /* of the next message's first byte */
    u8 kind;
    u8 call;
    u8 flags;
};

/* Message i of an mmsg call: its bytes, or its event, as the interposer writes (same call
 * times). */
static long message_at(u64 i, void *ctx)
{
    struct messages_loop *l = ctx;
    if (i >= l->count)
        return 1;
    struct user_mmsghdr m = {};
    if (bpf_probe_read_user(&m, sizeof(m), (void *)(l->vec + i * sizeof(m))))
        return 1;
    if (!l->emit) {
        l->total += m.msg_len;
        return 0;
    }
    struct nb_event *e = reserve(l->tgid, l->now);
    if (!e)
        return 1;
    stamp(e, l->st, l->kind, l->call, l->tgid, l->tid, l->fd, l->sock, m.msg_len, l->now);
    e->requested = saturated(iov_total(m.hdr.msg_iov, m.hdr.msg_iovlen));
    e->seq = l->seq;
    e->flags = l->flags;
    l->seq += m.msg_len;
    submit(e, l->st);
    return 0;
}

/* A read or a write on an inet socket. */
static __always_inline void emit_io(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    s32 fd = (s32)st->args[0];
    struct socket_ref ref;
    if (!socket_at(fd, &ref) || !name_socket(st, tgid, fd, &ref, now))
        return;
    int send = 0;
    u8 call = 0;
    u64 requested = 0;
    u64 msg_flags = 0;
    u64 moved = ret > 0 ? ret : 0;
    switch (st->nr) {
    case NR_read: call = CALL_READ; requested = st->args[2]; break;
    case NR_recvfrom: call = CALL_RECVFROM; requested = st->args[2]; msg_flags = st->args[3]; break;
    case NR_readv: call = CALL_READV; requested = iov_total(st->args[1], st->args[2]); break;
    case NR_recvmsg: {
        struct user_msghdr m = {};
        bpf_probe_read_user(&m, sizeof(m), (void *)st->args[1]);
        call = CALL_RECVMSG;
        requested = iov_total(m.msg_iov, m.msg_iovlen);
        msg_flags = st->args[2];
        break;
    }
    case NR_recvmmsg:
        call = CALL_RECVMMSG;
        msg_flags = st->args[3];
        break;
    case NR_write: call = CALL_WRITE; requested = st->args[2]; send = 1; break;
    case NR_sendto: call = CALL_SENDTO; requested = st->args[2]; msg_flags = st->args[3]; send = 1; break;
    case NR_writev: call = CALL_WRITEV; requested = iov_total(st->args[1], st->args[2]); send = 1; break;
    case NR_sendmsg: {
        struct user_msghdr m = {};
        bpf_probe_read_user(&m, sizeof(m), (void *)st->args[1]);
        call = CALL_SENDMSG;
        requested = iov_total(m.msg_iov, m.msg_iovlen);
        msg_flags = st->args[2];
        send = 1;
        break;
    }
    case NR_sendmmsg:
        call = CALL_SENDMMSG;
        msg_flags = st->args[3];
        send = 1;
        break;
    case NR_sendfile: call = CALL_SENDFILE; requested = st->args[3]; send = 1; break;
    }
    int mmsg = (st->nr == NR_recvmmsg || st->nr == NR_sendmmsg) && ret > 0;
    struct messages_loop l = {
        .st = st, .vec = st->args[1], .count = mmsg ? (u64)ret : 0, .sock = ref.sock, .now = now,
        .tgid = tgid, .tid = tid, .fd = fd,
    };
    if (mmsg) {
        /* The result counts messages: the bytes are what the messages say they moved. */
        bpf_loop(MAX_MMSG, message_at, &l, 0);
        moved = l.total;
    }
    u8 flags = 0;
    if (!send && (msg_flags & MSG_PEEK)) {
        flags |= FLAG_PEEK;
        moved = 0;
    }
    if ((msg_flags & MSG_DONTWAIT) || (ref.f_flags & O_NONBLOCK))
        flags |= FLAG_NONBLOCKING;
    struct sock *sk = ref.sk;
    u32 seq = 0;
    if (sk->sk_protocol == IPPROTO_TCP) {
        flags |= FLAG_TCP | FLAG_SEQ;
        struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
        if (send) {
            seq = tp->write_seq - (u32)moved;
        } else {
            u32 copied = tp->copied_seq;
            /* A read that took the last bytes before a FIN took the FIN too: copied_seq
             * passed it (tcp_recvmsg's found_fin_ok). */
            if (moved && (sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) && copied == tp->rcv_nxt)
                moved += 1;
            seq = copied - (u32)moved;
        }
    }
    if (mmsg) {
        l.emit = 1;
        l.seq = seq;
        l.kind = send ? KIND_SEND : KIND_RECV;
        l.call = call;
        l.flags = flags;
        bpf_loop(MAX_MMSG, message_at, &l, 0);
        return;
    }
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    stamp(e, st, send ? KIND_SEND : KIND_RECV, call, tgid, tid, fd, ref.sock, ret, now);
    e->requested = saturated(requested);
    e->seq = seq;
    e->flags = flags;
    submit(e, st);
}

/* A connect's or an accept's new socket. */
static __always_inline void emit_open(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    s32 fd = st->nr == NR_connect ? (s32)st->args[0] : (s32)ret;
    struct socket_ref ref;
    if (!socket_at(fd, &ref) || !name_socket(st, tgid, fd, &ref, now))
        return;
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    u8 call = st->nr == NR_connect ? CALL_CONNECT : st->nr == NR_accept ? CALL_ACCEPT : CALL_ACCEPT4;
    stamp(e, st, KIND_OPEN, call, tgid, tid, fd, ref.sock, st->nr == NR_connect ? ret : 0, now);
    if (ref.sk->sk_protocol == IPPROTO_TCP)
        e->flags |= FLAG_TCP;
    if (ref.f_flags & O_NONBLOCK)
        e->flags |= FLAG_NONBLOCKING;
    submit(e, st);
}

static __always_inline void emit_close(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now)
{
    s32 fd = (s32)st->args[0];
    for (int i = 0; i < SOCKET_CACHE; i++)
        if (st->cache_fd[i] == fd)
            st->cache_sock[i] = 0;
    u64 key = sock_key(tgid, fd);
    u64 *known = bpf_map_lookup_elem(&socks, &key);
    if (!known)
        return;
    u64 sock = *known;
    bpf_map_delete_elem(&socks, &key);
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return;
    stamp(e, st, KIND_CLOSE, CALL_CLOSE, tgid, tid, fd, sock, ret, now);
    submit(e, st);
}

/* A Wait event for fd if it is a recorded socket; 0 when the ring is full. */
static __always_inline int emit_wait(struct call_state *st, u32 tgid, u32 tid, long ret, u64 now,
                                     s32 fd, u8 call, u8 ready)
{
    u64 key = sock_key(tgid, fd);
    u64 *known = bpf_map_lookup_elem(&socks, &key);
    if (!known)
        return 1;
    struct nb_event *e = reserve(tgid, now);
    if (!e)
        return 0;
    stamp(e, st, KIND_WAIT, call, tgid, tid, fd, *known, ret, now);
    e->ready = ready;
    submit(e, st);
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
    u8 call;
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
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->tgid = tgid;
    e->tid = parent;
    e->t_call = now;
    e->t_return = now;
    submit(e, 0);
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
