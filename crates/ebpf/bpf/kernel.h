/* The few kernel types the recorder reads, declared by hand for CO-RE: libbpf matches each
 * by name and field name against the running kernel's BTF (/sys/kernel/btf/vmlinux) when it
 * loads the object, so offsets are the running kernel's, whatever these declarations say.
 * Fields of anonymous unions and structs in the kernel are declared flat: libbpf looks into
 * anonymous members when it matches a field. Only x86_64 (pt_regs, syscall numbers). */
#ifndef NETBLAME_KERNEL_H
#define NETBLAME_KERNEL_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int s32;
typedef signed long long s64;

typedef u16 __u16;
typedef u32 __u32;
typedef u64 __u64;
typedef s32 __s32;
typedef s64 __s64;
typedef u8 __u8;
typedef u16 __be16;
typedef u32 __be32;
typedef u32 __wsum;

#define PRESERVE __attribute__((preserve_access_index))

struct pt_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax;
    unsigned long ip, cs, flags, sp, ss;
} PRESERVE;

struct in6_addr {
    union {
        u8 u6_addr8[16];
    } in6_u;
} PRESERVE;

struct sock_common {
    __be32 skc_daddr;
    __be32 skc_rcv_saddr;
    __be16 skc_dport;
    u16 skc_num;
    unsigned short skc_family;
    struct in6_addr skc_v6_daddr;
    struct in6_addr skc_v6_rcv_saddr;
    unsigned long skc_flags;
} PRESERVE;

struct sock {
    struct sock_common __sk_common;
    u16 sk_protocol;
    u16 sk_type;
} PRESERVE;

/* enum sock_flags: a FIN was received (tcp_fin). */
#define SOCK_DONE 1

struct tcp_sock {
    u32 write_seq;
    u32 copied_seq;
    u32 rcv_nxt;
} PRESERVE;

struct socket {
    struct sock *sk;
} PRESERVE;

struct inode {
    unsigned short i_mode;
    unsigned long i_ino;
} PRESERVE;

struct file {
    struct inode *f_inode;
    unsigned int f_flags;
    void *private_data;
} PRESERVE;

struct fdtable {
    unsigned int max_fds;
    struct file **fd;
} PRESERVE;

struct files_struct {
    struct fdtable *fdt;
} PRESERVE;

struct task_struct {
    int pid;
    int tgid;
    struct files_struct *files;
    struct task_struct *real_parent;
} PRESERVE;

/* A user-space struct epoll_event: packed on x86_64. */
struct user_epoll_event {
    u32 events;
    u64 data;
} __attribute__((packed));

struct user_iovec {
    u64 base;
    u64 len;
};

struct user_msghdr {
    u64 msg_name;
    u32 msg_namelen;
    u32 pad;
    u64 msg_iov;
    u64 msg_iovlen;
    u64 msg_control;
    u64 msg_controllen;
    u32 msg_flags;
    u32 pad2;
};

/* recvmmsg's and sendmmsg's vector: msg_len is what the kernel moved for the message. */
struct user_mmsghdr {
    struct user_msghdr hdr;
    u32 msg_len;
    u32 pad;
};

enum {
    BPF_MAP_TYPE_HASH = 1,
    BPF_MAP_TYPE_LRU_HASH = 9,
    BPF_MAP_TYPE_RINGBUF = 27,
    BPF_MAP_TYPE_TASK_STORAGE = 29,
    BPF_F_NO_PREALLOC = 1,
    BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
    BPF_ANY = 0,
    /* bpf_ringbuf_submit's flags and bpf_ringbuf_query's questions */
    BPF_RB_NO_WAKEUP = 1,
    BPF_RB_FORCE_WAKEUP = 2,
    BPF_RB_AVAIL_DATA = 0,
    BPF_RB_RING_SIZE = 1,
};

#endif
