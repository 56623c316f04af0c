//! The interposed libc functions. Each calls the real function and, for a tracked socket,
//! records one event; the real result and errno always reach the caller unchanged.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{
    c_char, c_int, c_uint, c_void, iovec, mmsghdr, msghdr, off_t, size_t, sockaddr, socklen_t,
    ssize_t,
};
use netblame_instrument::record::{flags, Call, CallSlot, Kind, RawRecord};

use crate::{active, errno, fds, log, real, set_errno, tags, Inside};

/// What an I/O hook needs to record after the real call.
struct Io {
    fd: c_int,
    state: u64,
    inside: Inside,
    t_call: i64,
}

/// Starts recording an I/O call on `fd` if it is a tracked socket and this is not a
/// re-entrant call.
#[inline]
fn begin(fd: c_int) -> Option<Io> {
    if !active() {
        return None;
    }
    let state = fds::lookup(fd)?;
    let inside = Inside::enter()?;
    Some(Io {
        fd,
        state,
        inside,
        t_call: crate::clock::now(),
    })
}

impl Io {
    /// Records the call; `result` is bytes moved or -1, `err` the errno after the call.
    fn finish(
        self,
        kind: Kind,
        call: Call,
        requested: u64,
        result: i64,
        err: i32,
        msg_flags: c_int,
    ) {
        let t_return = crate::clock::now();
        // A bug in recording must never unwind into the program.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.record(kind, call, requested, result, err, msg_flags, t_return);
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        kind: Kind,
        call: Call,
        requested: u64,
        result: i64,
        err: i32,
        msg_flags: c_int,
        t_return: i64,
    ) {
        let mut state = self.state;
        if state & fds::OPENED == 0 {
            if !open_on_first_use(self.fd, state) {
                return;
            }
            state |= fds::OPENED;
        }
        let peek = kind == Kind::Recv && msg_flags & libc::MSG_PEEK != 0;
        let nonblocking = state & fds::NONBLOCK != 0
            || msg_flags & libc::MSG_DONTWAIT != 0
            || (result < 0 && (err == libc::EAGAIN || err == libc::EWOULDBLOCK));
        if nonblocking && state & fds::NONBLOCK == 0 && msg_flags & libc::MSG_DONTWAIT == 0 {
            fds::set_flags(self.fd, fds::NONBLOCK);
        }
        let tcp = state & fds::TCP != 0;
        let moved = if tcp && result > 0 && !peek {
            result as u64
        } else {
            0
        };
        let mut r = call_slot(kind, call, self.fd, state, self.t_call, t_return);
        r.tid = self.inside.tid();
        r.flags |= (if peek { flags::PEEK } else { 0 })
            | (if nonblocking { flags::NONBLOCKING } else { 0 });
        r.requested = requested;
        r.result = result;
        r.errno = if result < 0 { err } else { 0 };
        r.offset = fds::advance(self.fd, kind == Kind::Recv, moved);
        if kind == Kind::Recv && result > 0 && !peek {
            crate::waits::read_returned_data(self.fd, t_return);
        }
        log::append_call(&r);
    }
}

/// The record of a call on a tracked socket, as `base_record` fills it but written in place
/// (`log::append_call`); the thread id is the caller's to fill.
#[inline]
pub(crate) fn call_slot(
    kind: Kind,
    call: Call,
    fd: c_int,
    state: u64,
    t_call: i64,
    t_return: i64,
) -> CallSlot {
    CallSlot {
        kind: kind as u8,
        flags: if state & fds::TCP != 0 { flags::TCP } else { 0 },
        call: call as u8,
        fd,
        t_call,
        t_return,
        test_id: tags::current(),
        // The stream counter: `fds::stream_id`'s low half (the pid is the log header's).
        stream: fds::stream_id(0, state) as u32,
        ..CallSlot::default()
    }
}

fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Reads a socket's address with getsockname or getpeername.
fn sock_addr(fd: c_int, peer: bool) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<sockaddr>();
    // SAFETY: ss and len describe a buffer large enough for any socket address.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r == 0 {
        to_socket_addr(&ss)
    } else {
        None
    }
}

/// The address a caller passed (connect, sendto), if it is IPv4 or IPv6.
fn caller_addr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the caller's addr is valid for len bytes (the libc contract); we copy at most n.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.cast::<u8>(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    to_socket_addr(&ss)
}

/// The fields every event of a tracked socket carries.
pub(crate) fn base_record(
    kind: Kind,
    call: Call,
    fd: c_int,
    state: u64,
    t_call: i64,
    t_return: i64,
) -> RawRecord {
    let mut r = RawRecord::new(kind);
    r.call = call;
    r.flags = if state & fds::TCP != 0 { flags::TCP } else { 0 };
    r.pid = crate::pid();
    r.tid = crate::tid();
    r.fd = fd;
    (r.t_call_ns, r.t_return_ns) = (t_call, t_return);
    r.test_id = tags::current();
    r.stream = fds::stream_id(r.pid, state);
    r
}

/// Writes the open event of `fd`'s stream, reading the addresses right now.
/// `times`: the call's entry and return and its errno (a connect: `EINPROGRESS` when it goes
/// on in the background); else now.
pub(crate) fn record_open(
    fd: c_int,
    state: u64,
    call: Call,
    peer: Option<SocketAddr>,
    times: Option<(i64, i64, i32)>,
) {
    fds::set_flags(fd, fds::OPENED);
    let local = sock_addr(fd, false);
    let peer = peer.or_else(|| sock_addr(fd, true));
    let unspecified = |l: &SocketAddr| {
        SocketAddr::new(
            if l.is_ipv6() {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            },
            0,
        )
    };
    let now = crate::clock::now();
    let (t_call, t_return, err) = times.unwrap_or((now, now, 0));
    let mut r = base_record(Kind::Open, call, fd, state, t_call, t_return);
    r.errno = err;
    r.addrs = match (local, peer) {
        (Some(l), Some(p)) => Some((l, p)),
        (Some(l), None) => Some((l, unspecified(&l))),
        (None, Some(p)) => Some((unspecified(&p), p)),
        (None, None) => None,
    };
    log::append(&r);
}

/// Writes the open event of a socket first seen in a call other than an open (inherited across
/// exec, or made behind the library's back). A listening socket is no connection: nothing is
/// written, it is not tracked from then on, and `false` says so (asked once per socket).
#[cold]
pub(crate) fn open_on_first_use(fd: c_int, state: u64) -> bool {
    if state & fds::TCP != 0 && fds::is_listening(fd) {
        fds::mark_other(fd);
        return false;
    }
    record_open(fd, state, Call::Unknown, None, None);
    true
}

/// A connect that failed after trying the network (its SYN may be in the capture): recorded,
/// with its errno, so that a refused connection is joined to its flow.
fn connect_attempt_failed(err: c_int) -> bool {
    matches!(
        err,
        libc::ECONNREFUSED
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ECONNRESET
    )
}

fn iov_total(iov: *const iovec, n: c_int) -> u64 {
    if iov.is_null() || n <= 0 {
        return 0;
    }
    // SAFETY: the caller passed n valid iovecs (the libc contract of readv/writev/recvmsg).
    let iovs = unsafe { std::slice::from_raw_parts(iov, n as usize) };
    iovs.iter().map(|v| v.iov_len as u64).sum()
}

fn msg_total(msg: *const msghdr) -> u64 {
    if msg.is_null() {
        return 0;
    }
    // SAFETY: the caller passed a valid msghdr.
    let m = unsafe { &*msg };
    iov_total(m.msg_iov, m.msg_iovlen as c_int)
}

/// True in a vfork child (posix_spawn, Python's subprocess), which shares its parent's memory
/// but not its fd table: it must not change what the parent knows of its fds.
fn in_vfork_child() -> bool {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 != crate::pid() }
}

/// An interposed read or write: the real call, then one event for a tracked socket.
macro_rules! io_hook {
    ($kind:expr, $name:ident, $call:expr, ($fd:ident: $fdty:ty $(, $arg:ident: $ty:ty)*), requested = $req:expr, flags = $flags:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: $fdty $(, $arg: $ty)*) -> ssize_t {
            let Some(io) = begin($fd) else {
                // SAFETY: the caller upholds libc's contract for this call.
                return unsafe { real::$name($fd $(, $arg)*) };
            };
            // SAFETY: as above.
            let r = unsafe { real::$name($fd $(, $arg)*) };
            let err = errno();
            io.finish($kind, $call, $req, r as i64, err, $flags);
            set_errno(err);
            r
        }
    };
}

io_hook!(Kind::Recv, recv, Call::Recv, (fd: c_int, buf: *mut c_void, len: size_t, flags: c_int), requested = len as u64, flags = flags);
io_hook!(Kind::Recv, __recv_chk, Call::Recv, (fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int), requested = len as u64, flags = flags);
io_hook!(Kind::Recv, recvfrom, Call::Recvfrom, (fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t), requested = len as u64, flags = flags);
io_hook!(Kind::Recv, __recvfrom_chk, Call::Recvfrom, (fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t), requested = len as u64, flags = flags);
io_hook!(Kind::Recv, recvmsg, Call::Recvmsg, (fd: c_int, msg: *mut msghdr, flags: c_int), requested = msg_total(msg), flags = flags);
io_hook!(Kind::Recv, read, Call::Read, (fd: c_int, buf: *mut c_void, count: size_t), requested = count as u64, flags = 0);
io_hook!(Kind::Recv, __read_chk, Call::Read, (fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t), requested = count as u64, flags = 0);
io_hook!(Kind::Recv, readv, Call::Readv, (fd: c_int, iov: *const iovec, iovcnt: c_int), requested = iov_total(iov, iovcnt), flags = 0);
io_hook!(Kind::Send, send, Call::Send, (fd: c_int, buf: *const c_void, len: size_t, flags: c_int), requested = len as u64, flags = flags);
io_hook!(Kind::Send, sendto, Call::Sendto, (fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, addrlen: socklen_t), requested = len as u64, flags = flags);
io_hook!(Kind::Send, sendmsg, Call::Sendmsg, (fd: c_int, msg: *const msghdr, flags: c_int), requested = msg_total(msg), flags = flags);
io_hook!(Kind::Send, write, Call::Write, (fd: c_int, buf: *const c_void, count: size_t), requested = count as u64, flags = 0);
io_hook!(Kind::Send, writev, Call::Writev, (fd: c_int, iov: *const iovec, iovcnt: c_int), requested = iov_total(iov, iovcnt), flags = 0);

// sendfile's socket is its output fd, its first argument.
io_hook!(Kind::Send, sendfile, Call::Sendfile, (out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t), requested = count as u64, flags = 0);
io_hook!(Kind::Send, sendfile64, Call::Sendfile, (out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t), requested = count as u64, flags = 0);

/// recvmmsg and sendmmsg move several datagrams: one event per message, same call times.
fn finish_multi(
    mut io: Io,
    kind: Kind,
    call: Call,
    msgs: *mut mmsghdr,
    r: c_int,
    err: i32,
    flags: c_int,
) {
    if r <= 0 || msgs.is_null() {
        io.finish(kind, call, 0, r as i64, err, flags);
        return;
    }
    // SAFETY: on success the kernel filled the first r entries of the caller's array.
    let done = unsafe { std::slice::from_raw_parts(msgs, r as usize) };
    let t_return = crate::clock::now();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // A socket first seen here gets one open, not one per message.
        if io.state & fds::OPENED == 0 {
            if !open_on_first_use(io.fd, io.state) {
                return;
            }
            io.state |= fds::OPENED;
        }
        for m in done {
            io.record(
                kind,
                call,
                msg_total(&m.msg_hdr),
                i64::from(m.msg_len),
                0,
                flags,
                t_return,
            );
        }
    }));
}

#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let Some(io) = begin(fd) else {
        // SAFETY: the caller upholds libc's contract for recvmmsg.
        return unsafe { real::recvmmsg(fd, msgs, vlen, flags, timeout) };
    };
    // SAFETY: as above.
    let r = unsafe { real::recvmmsg(fd, msgs, vlen, flags, timeout) };
    let err = errno();
    finish_multi(io, Kind::Recv, Call::Recvmmsg, msgs, r, err, flags);
    set_errno(err);
    r
}

#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    let Some(io) = begin(fd) else {
        // SAFETY: the caller upholds libc's contract for sendmmsg.
        return unsafe { real::sendmmsg(fd, msgs, vlen, flags) };
    };
    // SAFETY: as above.
    let r = unsafe { real::sendmmsg(fd, msgs, vlen, flags) };
    let err = errno();
    finish_multi(io, Kind::Send, Call::Sendmmsg, msgs, r, err, flags);
    set_errno(err);
    r
}

/// Runs `f` with errno saved and restored, unless recording is off or re-entrant.
fn note(f: impl FnOnce()) {
    if !active() {
        return;
    }
    let Some(_inside) = Inside::enter() else {
        return;
    };
    let err = errno();
    let _ = catch_unwind(AssertUnwindSafe(f));
    set_errno(err);
}

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller upholds libc's contract for socket.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    if fd >= 0 {
        note(|| {
            let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
            if inet && (base == libc::SOCK_STREAM || base == libc::SOCK_DGRAM) {
                fds::register(fd, base == libc::SOCK_STREAM, ty & libc::SOCK_NONBLOCK != 0);
            } else {
                fds::mark_other(fd);
            }
        });
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let t_call = crate::clock::now();
    // SAFETY: the caller upholds libc's contract for connect.
    let r = unsafe { real::connect(fd, addr, len) };
    let err = errno();
    let t_return = crate::clock::now();
    if r == 0 || err == libc::EINPROGRESS || connect_attempt_failed(err) {
        note(|| {
            if let Some(state) = fds::lookup(fd).filter(|s| r == 0 || s & fds::TCP != 0) {
                if err == libc::EINPROGRESS && r != 0 {
                    fds::set_flags(fd, fds::NONBLOCK);
                }
                // A connected UDP socket may connect again: each connect starts a stream.
                let state = if state & fds::OPENED != 0 {
                    fds::register(fd, state & fds::TCP != 0, state & fds::NONBLOCK != 0)
                } else {
                    state
                };
                let outcome = if r == 0 { 0 } else { err };
                record_open(
                    fd,
                    state,
                    Call::Connect,
                    caller_addr(addr, len),
                    Some((t_call, t_return, outcome)),
                );
            }
        });
    }
    r
}

fn accepted(fd: c_int, call: Call, nonblock: bool) {
    note(|| {
        // A listening Unix socket accepts Unix connections: not on the wire.
        if sock_addr(fd, false).is_none() {
            fds::mark_other(fd);
            return;
        }
        let state = fds::register(fd, true, nonblock);
        record_open(fd, state, call, None, None);
    });
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller upholds libc's contract for accept.
    let r = unsafe { real::accept(fd, addr, len) };
    if r >= 0 {
        accepted(r, Call::Accept, false);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller upholds libc's contract for accept4.
    let r = unsafe { real::accept4(fd, addr, len, flags) };
    if r >= 0 {
        accepted(r, Call::Accept4, flags & libc::SOCK_NONBLOCK != 0);
    }
    r
}

fn record_close(fd: c_int, state: u64) {
    let now = crate::clock::now();
    log::append(&base_record(Kind::Close, Call::Close, fd, state, now, now));
}

/// Records the close of a tracked fd and forgets it (before the real close, so a concurrent
/// socket() reusing the number is not forgotten by mistake).
fn closing(fd: c_int) {
    note(|| {
        if in_vfork_child() {
            return;
        }
        if let Some(state) = fds::peek_tracked(fd) {
            record_close(fd, state);
        }
        fds::forget(fd);
        crate::waits::closed(fd);
    });
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    closing(fd);
    // SAFETY: the caller upholds libc's contract for close.
    unsafe { real::close(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        closing(new);
    }
    // SAFETY: the caller upholds libc's contract for dup2.
    unsafe { real::dup2(old, new) }
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    closing(new);
    // SAFETY: the caller upholds libc's contract for dup3.
    unsafe { real::dup3(old, new, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        note(|| {
            if in_vfork_child() {
                return;
            }
            let end = (last as usize).min(fds::MAX_FDS - 1);
            for fd in (first as usize)..=end {
                if let Some(state) = fds::peek_tracked(fd as c_int) {
                    record_close(fd as c_int, state);
                }
                fds::forget(fd as c_int);
                crate::waits::closed(fd as c_int);
            }
        });
    }
    // SAFETY: the caller upholds libc's contract for close_range.
    unsafe { real::close_range(first, last, flags) }
}

/// A file opened on a number netblame may know as a socket: that number is a file now.
fn opened(fd: c_int) {
    if fd >= 0 && active() {
        fds::mark_other(fd);
    }
}

// open and openat are variadic in C (the mode is read only with O_CREAT or O_TMPFILE). On the
// Linux ABIs netblame supports (x86-64 and AArch64) a variadic int argument travels in the same
// register as a named one, so receiving and forwarding it as a third parameter is exact.

#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller upholds libc's contract for open.
    let fd = unsafe { real::open(path, flags, mode) };
    opened(fd);
    fd
}

#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: the caller upholds libc's contract for open64.
    let fd = unsafe { real::open64(path, flags, mode) };
    opened(fd);
    fd
}

#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller upholds libc's contract for openat.
    let fd = unsafe { real::openat(dirfd, path, flags, mode) };
    opened(fd);
    fd
}

#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller upholds libc's contract for openat64.
    let fd = unsafe { real::openat64(dirfd, path, flags, mode) };
    opened(fd);
    fd
}

// ioctl and fcntl are variadic too; their third argument is an int or a pointer, which travels
// in a general register on these ABIs, so a c_ulong carries either unchanged. netblame only
// watches them to learn when a socket becomes non-blocking (Python's setblocking uses ioctl
// FIONBIO, others fcntl F_SETFL).

#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: libc::c_ulong) -> c_int {
    // SAFETY: the caller upholds libc's contract for ioctl.
    let r = unsafe { real::ioctl(fd, request, arg) };
    if r == 0 && request == libc::FIONBIO && arg != 0 {
        // SAFETY: for FIONBIO the argument is a pointer to an int, which the kernel just read.
        let on = unsafe { *(arg as *const c_int) } != 0;
        note(|| fds::set_nonblocking(fd, on));
    }
    r
}

fn fcntl_changed(fd: c_int, cmd: c_int, arg: libc::c_ulong, r: c_int) {
    if r != -1 && cmd == libc::F_SETFL {
        note(|| fds::set_nonblocking(fd, arg as c_int & libc::O_NONBLOCK != 0));
    }
}

#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int {
    // SAFETY: the caller upholds libc's contract for fcntl.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    fcntl_changed(fd, cmd, arg, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int {
    // SAFETY: the caller upholds libc's contract for fcntl64.
    let r = unsafe { real::fcntl64(fd, cmd, arg) };
    fcntl_changed(fd, cmd, arg, r);
    r
}

/// After a successful change of the environment variable named by `name` (up to a `=`, for
/// putenv's "NAME=VALUE"), re-reads it if it is one netblame follows. Returns `r`.
fn env_changed(r: c_int, name: *const c_char) -> c_int {
    if r == 0 && !name.is_null() {
        // SAFETY: the caller passed a NUL-terminated string (setenv/unsetenv/putenv contract);
        // it is only read before this call returns.
        let s = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let name = s.split(|&b| b == b'=').next().unwrap_or(s);
        note(|| tags::changed(Some(name)));
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn setenv(
    name: *const c_char,
    value: *const c_char,
    overwrite: c_int,
) -> c_int {
    // SAFETY: the caller upholds libc's contract for setenv.
    env_changed(unsafe { real::setenv(name, value, overwrite) }, name)
}

#[no_mangle]
pub unsafe extern "C" fn unsetenv(name: *const c_char) -> c_int {
    // SAFETY: the caller upholds libc's contract for unsetenv.
    env_changed(unsafe { real::unsetenv(name) }, name)
}

#[no_mangle]
pub unsafe extern "C" fn putenv(string: *mut c_char) -> c_int {
    // SAFETY: the caller upholds libc's contract for putenv.
    env_changed(unsafe { real::putenv(string) }, string)
}

#[no_mangle]
pub unsafe extern "C" fn clearenv() -> c_int {
    // SAFETY: clearenv has no preconditions beyond libc's.
    let r = unsafe { real::clearenv() };
    note(|| tags::changed(None));
    r
}

/// `_exit` skips atexit handlers (a forking server's children exit this way): cut the log to
/// what it holds first, as `exit` would.
fn exiting() {
    if active() {
        if let Some(_inside) = Inside::enter() {
            let _ = catch_unwind(log::finish);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    exiting();
    // SAFETY: _exit has no preconditions; it does not return.
    unsafe { real::exit_now(b"_exit\0", status) }
}

#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    exiting();
    // SAFETY: as above.
    unsafe { real::exit_now(b"_Exit\0", status) }
}
