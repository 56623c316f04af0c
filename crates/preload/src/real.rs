//! The real libc functions, each looked up once with `dlsym(RTLD_NEXT)` and cached.
//!
//! netblame's own code calls these, never the public names, so that it never records itself.

use libc::{
    c_char, c_int, c_uint, c_void, iovec, mmsghdr, msghdr, off_t, size_t, sockaddr, socklen_t,
    ssize_t,
};
use std::sync::atomic::{AtomicUsize, Ordering};

fn resolve(name: &'static [u8]) -> usize {
    // SAFETY: RTLD_NEXT with a NUL-terminated name is always valid; dlsym returns null when
    // the symbol does not exist.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) as usize }
}

macro_rules! real_fns {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        $(
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static SLOT: AtomicUsize = AtomicUsize::new(0);
                let mut p = SLOT.load(Ordering::Relaxed);
                if p == 0 {
                    p = resolve(concat!(stringify!($name), "\0").as_bytes());
                    SLOT.store(p, Ordering::Relaxed);
                }
                if p == 0 {
                    crate::set_errno(libc::ENOSYS);
                    return -1 as $ret;
                }
                // SAFETY: p is libc's definition of this very function, whose C signature the
                // declaration above repeats.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller upholds the function's libc contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real_fns! {
    recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> ssize_t;
    __recvfrom_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t;
    readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, addrlen: socklen_t) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t;
    writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    close(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    setenv(name: *const c_char, value: *const c_char, overwrite: c_int) -> c_int;
    unsetenv(name: *const c_char) -> c_int;
    putenv(string: *mut c_char) -> c_int;
    clearenv() -> c_int;
    ioctl(fd: c_int, request: libc::c_ulong, arg: libc::c_ulong) -> c_int;
    fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int;
    __poll_chk(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    ppoll(fds: *mut libc::pollfd, nfds: libc::nfds_t, tmo: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    __ppoll_chk(fds: *mut libc::pollfd, nfds: libc::nfds_t, tmo: *const libc::timespec, sigmask: *const libc::sigset_t, fdslen: size_t) -> c_int;
    select(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> c_int;
    pselect(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int;
    epoll_wait(epfd: c_int, events: *mut libc::epoll_event, maxevents: c_int, timeout: c_int) -> c_int;
    epoll_pwait(epfd: c_int, events: *mut libc::epoll_event, maxevents: c_int, timeout: c_int, sigmask: *const libc::sigset_t) -> c_int;
    epoll_pwait2(epfd: c_int, events: *mut libc::epoll_event, maxevents: c_int, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
}

/// Calls the real `_exit` or `_Exit` (which never return).
pub unsafe fn exit_now(name: &'static [u8], status: c_int) -> ! {
    let p = resolve(name);
    if p != 0 {
        // SAFETY: p is libc's _exit or _Exit, of this signature.
        let f: unsafe extern "C" fn(c_int) -> ! = unsafe { std::mem::transmute(p) };
        // SAFETY: ending the process has no preconditions.
        unsafe { f(status) }
    }
    // SAFETY: the exit_group syscall ends the process; it has no preconditions.
    unsafe { libc::syscall(libc::SYS_exit_group, status) };
    unreachable!("exit_group returned")
}
