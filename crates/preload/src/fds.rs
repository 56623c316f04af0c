//! What netblame knows of each file descriptor: one atomic word per fd number, so that "is this
//! fd a socket we track?" is a single load on the hot path. State 0 means "not known yet": the
//! first I/O on such an fd asks the kernel once (getsockopt) and caches the answer, which covers
//! sockets inherited across exec or created behind the library's back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// fds at or above this number are passed through unrecorded.
pub const MAX_FDS: usize = 1 << 16;

pub const TRACKED: u64 = 1;
pub const NOT_SOCKET: u64 = 2;
pub const TCP: u64 = 4;
pub const NONBLOCK: u64 = 8;
/// The open event of this stream was written.
pub const OPENED: u64 = 16;

static STATE: [AtomicU64; MAX_FDS] = [const { AtomicU64::new(0) }; MAX_FDS];
static READ_OFFSET: [AtomicU64; MAX_FDS] = [const { AtomicU64::new(0) }; MAX_FDS];
static WRITE_OFFSET: [AtomicU64; MAX_FDS] = [const { AtomicU64::new(0) }; MAX_FDS];
static NEXT_STREAM: AtomicU32 = AtomicU32::new(1);

fn slot(fd: libc::c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)
}

/// The state of a tracked socket, probing fds not seen before; `None` for anything else.
#[inline]
pub fn lookup(fd: libc::c_int) -> Option<u64> {
    let i = slot(fd)?;
    let st = STATE[i].load(Ordering::Relaxed);
    if st & TRACKED != 0 {
        Some(st)
    } else if st & NOT_SOCKET != 0 {
        None
    } else {
        probe(fd, i)
    }
}

/// An int-valued `SOL_SOCKET` option of `fd`.
fn socket_option(fd: libc::c_int, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for getsockopt to write an int option into.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The socket listens for connections (it is no connection itself).
pub fn is_listening(fd: libc::c_int) -> bool {
    socket_option(fd, libc::SO_ACCEPTCONN).is_some_and(|v| v != 0)
}

#[cold]
fn probe(fd: libc::c_int, i: usize) -> Option<u64> {
    let get = |opt| socket_option(fd, opt);
    match (get(libc::SO_DOMAIN), get(libc::SO_TYPE)) {
        (
            Some(libc::AF_INET | libc::AF_INET6),
            Some(ty @ (libc::SOCK_STREAM | libc::SOCK_DGRAM)),
        ) => Some(register(fd, ty == libc::SOCK_STREAM, false)),
        (Some(_), _) | (None, _) => {
            STATE[i].store(NOT_SOCKET, Ordering::Relaxed);
            None
        }
    }
}

/// The state of `fd` if it is a tracked socket, without probing.
pub fn peek_tracked(fd: libc::c_int) -> Option<u64> {
    let st = STATE[slot(fd)?].load(Ordering::Relaxed);
    (st & TRACKED != 0).then_some(st)
}

/// Starts a new stream on `fd`: new identity, offsets back to 0.
pub fn register(fd: libc::c_int, tcp: bool, nonblock: bool) -> u64 {
    let Some(i) = slot(fd) else { return 0 };
    let stream = u64::from(NEXT_STREAM.fetch_add(1, Ordering::Relaxed));
    READ_OFFSET[i].store(0, Ordering::Relaxed);
    WRITE_OFFSET[i].store(0, Ordering::Relaxed);
    let st =
        TRACKED | if tcp { TCP } else { 0 } | if nonblock { NONBLOCK } else { 0 } | (stream << 32);
    STATE[i].store(st, Ordering::Relaxed);
    st
}

/// Marks `fd` as something other than a socket we track (a file, a pipe, a Unix socket).
pub fn mark_other(fd: libc::c_int) {
    if let Some(i) = slot(fd) {
        STATE[i].store(NOT_SOCKET, Ordering::Relaxed);
    }
}

/// Forgets `fd` (closed): its next use probes again.
pub fn forget(fd: libc::c_int) {
    if let Some(i) = slot(fd) {
        STATE[i].store(0, Ordering::Relaxed);
    }
}

/// Sets flag bits on a tracked fd; returns the state before.
pub fn set_flags(fd: libc::c_int, bits: u64) -> u64 {
    slot(fd).map_or(0, |i| STATE[i].fetch_or(bits, Ordering::Relaxed))
}

/// Clears flag bits on a tracked fd.
pub fn clear_flags(fd: libc::c_int, bits: u64) {
    if let Some(i) = slot(fd) {
        STATE[i].fetch_and(!bits, Ordering::Relaxed);
    }
}

/// Records whether a tracked socket is non-blocking (set by fcntl or ioctl).
pub fn set_nonblocking(fd: libc::c_int, on: bool) {
    if peek_tracked(fd).is_some() {
        if on {
            set_flags(fd, NONBLOCK);
        } else {
            clear_flags(fd, NONBLOCK);
        }
    }
}

/// The stream offset of the next `n` bytes moved on `fd` one way, advancing it.
pub fn advance(fd: libc::c_int, read: bool, n: u64) -> u64 {
    let Some(i) = slot(fd) else { return 0 };
    let table = if read { &READ_OFFSET } else { &WRITE_OFFSET };
    if n == 0 {
        table[i].load(Ordering::Relaxed)
    } else {
        table[i].fetch_add(n, Ordering::Relaxed)
    }
}

/// The stream identity recorded in events: pid in the high half, the stream counter below.
pub fn stream_id(pid: u32, st: u64) -> u64 {
    (u64::from(pid) << 32) | (st >> 32)
}
