//! Readiness waits: `poll`, `ppoll`, `select`, `pselect`, `epoll_wait`, `epoll_pwait`,
//! `epoll_pwait2` (and the `_chk` variants `_FORTIFY_SOURCE` builds call). Most programs wait
//! here, not in `recv` (CPython for every socket with a timeout, asyncio, libuv, Java NIO,
//! curl): a wait that reports a tracked socket readable, writable, hung up or in error writes one
//! `Wait` event per such socket, with the wait's entry and return times. A wait that reports
//! nothing of ours writes nothing.
//!
//! epoll reports the user datum a program registered, not the fd: `epoll_ctl` is followed to
//! map it back. libuv, asyncio and Java store the fd itself (one load checks it); programs that
//! store a token (tokio) are found in a fixed open-addressing table. Both are plain atomics in
//! static memory: no lock, no allocation, copied to a fork child as the kernel's interest list
//! is. A socket registered in two epoll instances with different data is followed in the last
//! one only.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

use libc::{c_int, size_t};
use netblame_instrument::record::{ready, Call, Kind};

use crate::hooks::{call_slot, open_on_first_use};
use crate::{active, errno, fds, log, real, set_errno, Inside};

/// The datum each fd was last registered with (epoll_ctl ADD or MOD), and whether it is set.
static DATUM: [AtomicU64; fds::MAX_FDS] = [const { AtomicU64::new(0) }; fds::MAX_FDS];
static HAS_DATUM: [AtomicU64; fds::MAX_FDS / 64] = [const { AtomicU64::new(0) }; fds::MAX_FDS / 64];

/// Datum → fd for data that are not the fd (tokens): open addressing, `fd + 1` (0: empty).
const TOKENS: usize = 1 << 14;
const PROBES: usize = 32;
static TOKEN_KEY: [AtomicU64; TOKENS] = [const { AtomicU64::new(0) }; TOKENS];
static TOKEN_FD: [AtomicI32; TOKENS] = [const { AtomicI32::new(0) }; TOKENS];

/// Since when (CLOCK_REALTIME ns, 0: not) a poll or select has asked for each socket's data
/// without it coming: a program that polls with a timeout (curl) waits in several calls, and
/// only the last reports the socket. The report carries the first call's time.
static WAITING_SINCE: [AtomicI64; fds::MAX_FDS] = [const { AtomicI64::new(0) }; fds::MAX_FDS];

/// epoll's interest list is in the kernel, so a wait that timed out says nothing of the sockets
/// it waited for. What tells it: each epoll instance's latest waits (a ring of their call times,
/// negated for a wait that returned events), the instance each socket was registered in, and
/// since when epoll has been asked for the socket's data with none read since. A wait that
/// reports the socket carries the call time of the first of the waits just before it that timed
/// out since then: a loop whose waits a timer slices (asyncio with a periodic task, psycopg's
/// 100 ms `wait_for`) is timed from the first slice. A wait that returned events ends the chain:
/// the loop woke and went to work.
const EPOLL_INSTANCES: usize = 4096;
/// Waits kept per instance: a socket awaited over more slices is timed from the oldest kept.
const EPOLL_RING: usize = 16;
static EPOLL_CALLS: [[AtomicI64; EPOLL_RING]; EPOLL_INSTANCES] =
    [const { [const { AtomicI64::new(0) }; EPOLL_RING] }; EPOLL_INSTANCES];
static EPOLL_NEXT: [AtomicU32; EPOLL_INSTANCES] = [const { AtomicU32::new(0) }; EPOLL_INSTANCES];
/// The epoll instance each fd was last registered in, plus one (0: none).
static EPOLL_OF: [AtomicI32; fds::MAX_FDS] = [const { AtomicI32::new(0) }; fds::MAX_FDS];
/// Since when epoll has been asked for each fd's data (EPOLLIN) with none read since (0: not).
static EPOLL_ASKED_SINCE: [AtomicI64; fds::MAX_FDS] = [const { AtomicI64::new(0) }; fds::MAX_FDS];

/// A read returned data at `t_return`: the program no longer waits for what came before; a
/// socket still registered with epoll is asked for its next data from now.
#[inline]
pub fn read_returned_data(fd: c_int, t_return: i64) {
    if let Some(i) = slot(fd) {
        if WAITING_SINCE[i].load(Ordering::Relaxed) != 0 {
            WAITING_SINCE[i].store(0, Ordering::Relaxed);
        }
        if EPOLL_OF[i].load(Ordering::Relaxed) != 0 {
            EPOLL_ASKED_SINCE[i].store(t_return, Ordering::Relaxed);
        }
    }
}

fn epoll_instance(epfd: c_int) -> Option<usize> {
    usize::try_from(epfd).ok().filter(|&e| e < EPOLL_INSTANCES)
}

/// Notes a wait on epoll instance `epfd` called at `t_call` that timed out or returned events.
#[inline]
fn epoll_wait_returned(epfd: c_int, t_call: i64, timed_out: bool) {
    let Some(e) = epoll_instance(epfd) else {
        return;
    };
    let n = EPOLL_NEXT[e].fetch_add(1, Ordering::Relaxed) as usize;
    let entry = if timed_out { t_call } else { -t_call };
    EPOLL_CALLS[e][n % EPOLL_RING].store(entry, Ordering::Relaxed);
}

/// For a wait on `epfd` called at `t_call` that reports `fd`: the call time of the first of the
/// waits on `epfd` just before it that timed out after `fd` was asked for (`t_call` if none).
fn epoll_chain_start(epfd: c_int, fd: c_int, t_call: i64) -> i64 {
    let (Some(i), Some(e)) = (slot(fd), epoll_instance(epfd)) else {
        return t_call;
    };
    if EPOLL_OF[i].load(Ordering::Relaxed) != epfd + 1 {
        return t_call;
    }
    let since = EPOLL_ASKED_SINCE[i].load(Ordering::Relaxed);
    if since == 0 {
        return t_call;
    }
    let newest = EPOLL_NEXT[e].load(Ordering::Relaxed) as usize;
    let mut start = t_call;
    for back in 1..=EPOLL_RING {
        let entry = EPOLL_CALLS[e][newest.wrapping_sub(back) % EPOLL_RING].load(Ordering::Relaxed);
        // Not yet written, returned events, or older than the asking: the chain ends.
        if entry <= 0 || entry < since || entry > start {
            break;
        }
        start = entry;
    }
    start
}

/// epoll_ctl ADD or MOD of `fd` in `epfd` with `events`.
fn epoll_registered(epfd: c_int, fd: c_int, events: u32) {
    let Some(i) = slot(fd) else { return };
    EPOLL_OF[i].store(epfd + 1, Ordering::Relaxed);
    if events & libc::EPOLLIN as u32 == 0 {
        EPOLL_ASKED_SINCE[i].store(0, Ordering::Relaxed);
    } else if EPOLL_ASKED_SINCE[i].load(Ordering::Relaxed) == 0 {
        // Asked again after a removal (psycopg removes and adds its reader every slice): the
        // first time since the last data counts.
        EPOLL_ASKED_SINCE[i].store(crate::clock::now(), Ordering::Relaxed);
    }
}

fn slot(fd: c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < fds::MAX_FDS)
}

fn registered(fd: c_int) -> Option<u64> {
    let i = slot(fd)?;
    let set = HAS_DATUM[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0;
    set.then(|| DATUM[i].load(Ordering::Acquire))
}

fn token_slot(datum: u64, probe: usize) -> usize {
    // Fibonacci hashing spreads tokens that are small consecutive integers.
    let h = datum.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50;
    (h as usize + probe) % TOKENS
}

/// Notes that `fd` was registered with `datum` (epoll_ctl ADD or MOD).
fn remember(fd: c_int, datum: u64) {
    let Some(i) = slot(fd) else { return };
    DATUM[i].store(datum, Ordering::Release);
    HAS_DATUM[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    if datum as u32 as c_int == fd {
        return; // the datum is the fd: no table needed
    }
    for probe in 0..PROBES {
        let s = token_slot(datum, probe);
        let held = TOKEN_FD.load_slot(s);
        // A free slot, this datum's slot, or one whose fd no longer has that datum (stale).
        let stale = held
            .and_then(|f| registered(f).map(|d| d != TOKEN_KEY[s].load(Ordering::Acquire)))
            .unwrap_or(true);
        if held.is_none() || stale || TOKEN_KEY[s].load(Ordering::Acquire) == datum {
            TOKEN_KEY[s].store(datum, Ordering::Release);
            TOKEN_FD[s].store(fd + 1, Ordering::Release);
            return;
        }
    }
    // Full around this datum: its waits go unrecorded (a program with over 16 k tokens here).
}

/// Forgets `fd`'s registration (epoll_ctl DEL, or the fd closed). Every close comes here: a
/// load first, and the read-modify-write only for a registered fd.
pub fn forget(fd: c_int) {
    if let Some(i) = slot(fd) {
        let bit = 1 << (i % 64);
        if HAS_DATUM[i / 64].load(Ordering::Relaxed) & bit != 0 {
            HAS_DATUM[i / 64].fetch_and(!bit, Ordering::AcqRel);
        }
    }
}

/// The fd was closed: a new socket on its number was never asked for.
pub fn closed(fd: c_int) {
    forget(fd);
    if let Some(i) = slot(fd) {
        if EPOLL_OF[i].load(Ordering::Relaxed) != 0 {
            EPOLL_OF[i].store(0, Ordering::Relaxed);
            EPOLL_ASKED_SINCE[i].store(0, Ordering::Relaxed);
        }
    }
}

/// The fd a reported datum stands for, if it is still registered with it.
fn fd_of(datum: u64) -> Option<c_int> {
    let as_fd = datum as u32 as c_int;
    if registered(as_fd) == Some(datum) {
        return Some(as_fd);
    }
    (0..PROBES).find_map(|probe| {
        let s = token_slot(datum, probe);
        let fd = TOKEN_FD.load_slot(s)?;
        (TOKEN_KEY[s].load(Ordering::Acquire) == datum && registered(fd) == Some(datum))
            .then_some(fd)
    })
}

trait TokenFds {
    fn load_slot(&self, s: usize) -> Option<c_int>;
}

impl TokenFds for [AtomicI32; TOKENS] {
    fn load_slot(&self, s: usize) -> Option<c_int> {
        match self[s].load(Ordering::Acquire) {
            0 => None,
            f => Some(f - 1),
        }
    }
}

/// A wait in progress: its entry time, the epoll instance it waits on, and the re-entry guard
/// held across it.
struct Wait {
    inside: Inside,
    t_call: i64,
    epfd: Option<c_int>,
}

#[inline]
fn begin(epfd: Option<c_int>) -> Option<Wait> {
    if !active() {
        return None;
    }
    let inside = Inside::enter()?;
    let t_call = crate::clock::now();
    Some(Wait {
        inside,
        t_call,
        epfd,
    })
}

impl Wait {
    /// Writes one event per tracked socket in `reported` (fd, what the wait reported of it,
    /// whether the program asked for its data) after a wait that returned `result` and waited
    /// at most `timeout_ms` (-1: no limit).
    fn finish(
        self,
        call: Call,
        result: c_int,
        timeout_ms: i64,
        reported: impl Iterator<Item = (c_int, u8, bool)>,
    ) {
        let t_return = crate::clock::now();
        let err = errno();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            for (fd, bits, wants_read) in reported {
                if bits == 0 && !wants_read {
                    continue;
                }
                let Some(mut state) = fds::lookup(fd) else {
                    continue;
                };
                let since = slot(fd).map(|i| &WAITING_SINCE[i]);
                let mut t_call = self.t_call;
                if bits & (ready::READABLE | ready::HANGUP | ready::ERROR) != 0 {
                    if let Some(epfd) = self.epfd {
                        t_call = epoll_chain_start(epfd, fd, t_call);
                    }
                    if let Some(first) = since.map(|s| s.swap(0, Ordering::Relaxed)) {
                        if first != 0 {
                            t_call = t_call.min(first);
                        }
                    }
                } else if wants_read {
                    if let Some(s) = since {
                        let _ = s.compare_exchange(
                            0,
                            self.t_call,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
                if bits == 0 {
                    continue;
                }
                if state & fds::OPENED == 0 {
                    if !open_on_first_use(fd, state) {
                        continue;
                    }
                    state |= fds::OPENED;
                }
                let mut r = call_slot(Kind::Wait, call, fd, state, t_call, t_return);
                r.tid = self.inside.tid();
                r.ready = bits;
                r.result = i64::from(result);
                r.requested = timeout_ms as u64;
                r.offset = fds::advance(fd, true, 0);
                log::append_call(&r);
            }
        }));
        // A poll with no timeout that found nothing did not wait (asyncio polls so whenever
        // callbacks are ready): it neither extends nor ends a chain.
        if let Some(epfd) = self.epfd.filter(|_| !(result == 0 && timeout_ms == 0)) {
            epoll_wait_returned(epfd, self.t_call, result == 0);
        }
        set_errno(err);
    }
}

fn poll_bits(revents: libc::c_short) -> u8 {
    let mut b = 0;
    if revents & libc::POLLIN != 0 {
        b |= ready::READABLE;
    }
    if revents & libc::POLLOUT != 0 {
        b |= ready::WRITABLE;
    }
    if revents & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        b |= ready::HANGUP;
    }
    if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        b |= ready::ERROR;
    }
    b
}

fn epoll_bits(events: u32) -> u8 {
    let mut b = 0;
    if events & libc::EPOLLIN as u32 != 0 {
        b |= ready::READABLE;
    }
    if events & libc::EPOLLOUT as u32 != 0 {
        b |= ready::WRITABLE;
    }
    if events & (libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 != 0 {
        b |= ready::HANGUP;
    }
    if events & libc::EPOLLERR as u32 != 0 {
        b |= ready::ERROR;
    }
    b
}

fn timespec_ms(t: *const libc::timespec) -> i64 {
    if t.is_null() {
        return -1;
    }
    // SAFETY: the caller passed a valid timespec (the libc contract of ppoll/pselect).
    let t = unsafe { &*t };
    t.tv_sec.saturating_mul(1000) + t.tv_nsec / 1_000_000
}

/// What a poll reported of each fd, and whether the program asked for its data.
fn polled(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    r: c_int,
) -> impl Iterator<Item = (c_int, u8, bool)> {
    let list: &[libc::pollfd] = if fds.is_null() {
        &[]
    } else {
        // SAFETY: the caller passed nfds valid pollfds (filled by the kernel when r > 0).
        unsafe { std::slice::from_raw_parts(fds, nfds as usize) }
    };
    list.iter().map(move |p| {
        let bits = if r > 0 { poll_bits(p.revents) } else { 0 };
        (p.fd, bits, p.events & libc::POLLIN != 0)
    })
}

/// A wait hook: the real call, then the events of what it reported. `real` is the call itself;
/// `reported` turns its result into (fd, ready bits, asked for data) for each fd.
#[inline]
fn waited<I: Iterator<Item = (c_int, u8, bool)>>(
    call: Call,
    timeout_ms: i64,
    real: impl FnOnce() -> c_int,
    reported: impl FnOnce(c_int) -> I,
) -> c_int {
    waited_on(None, call, timeout_ms, real, reported)
}

/// `waited` for a wait on epoll instance `epfd`, if any.
#[inline]
fn waited_on<I: Iterator<Item = (c_int, u8, bool)>>(
    epfd: Option<c_int>,
    call: Call,
    timeout_ms: i64,
    real: impl FnOnce() -> c_int,
    reported: impl FnOnce(c_int) -> I,
) -> c_int {
    let Some(w) = begin(epfd) else {
        return real();
    };
    let r = real();
    w.finish(call, r, timeout_ms, reported(r));
    r
}

fn timeval_ms(t: *const libc::timeval) -> i64 {
    if t.is_null() {
        return -1;
    }
    // SAFETY: a non-null timeout is the caller's valid timeval, read before the call.
    let t = unsafe { &*t };
    t.tv_sec.saturating_mul(1000) + t.tv_usec / 1000
}

// Each hook hands `waited` its real call; SAFETY for every `real::` call below: the caller
// upholds libc's contract for that function, and the arguments are passed unchanged.

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
    waited(
        Call::Poll,
        i64::from(timeout),
        // SAFETY: see above.
        || unsafe { real::poll(fds, nfds, timeout) },
        |r| polled(fds, nfds, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    waited(
        Call::Poll,
        i64::from(timeout),
        // SAFETY: see above.
        || unsafe { real::__poll_chk(fds, nfds, timeout, fdslen) },
        |r| polled(fds, nfds, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    waited(
        Call::Ppoll,
        timespec_ms(tmo),
        // SAFETY: see above.
        || unsafe { real::ppoll(fds, nfds, tmo, sigmask) },
        |r| polled(fds, nfds, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    fdslen: size_t,
) -> c_int {
    waited(
        Call::Ppoll,
        timespec_ms(tmo),
        // SAFETY: see above.
        || unsafe { real::__ppoll_chk(fds, nfds, tmo, sigmask, fdslen) },
        |r| polled(fds, nfds, r),
    )
}

/// The read set a select was given (it overwrites it with its answer).
fn read_interest(rd: *const libc::fd_set) -> Option<libc::fd_set> {
    // SAFETY: a non-null set is the caller's valid fd_set; fd_set is plain data.
    (!rd.is_null()).then(|| unsafe { *rd })
}

/// What a select reported of each fd below `nfds` (and FD_SETSIZE), and whether the program
/// asked for its data.
fn selected(
    nfds: c_int,
    sets: [*mut libc::fd_set; 3],
    asked: Option<libc::fd_set>,
    r: c_int,
) -> impl Iterator<Item = (c_int, u8, bool)> {
    let n = nfds.clamp(0, libc::FD_SETSIZE as c_int);
    let kinds = [ready::READABLE, ready::WRITABLE, ready::ERROR];
    (0..n).map(move |fd| {
        let mut bits = 0;
        if r > 0 {
            for (set, bit) in sets.into_iter().zip(kinds) {
                // SAFETY: a non-null set is the caller's fd_set, filled by the kernel;
                // fd < FD_SETSIZE.
                if !set.is_null() && unsafe { libc::FD_ISSET(fd, set) } {
                    bits |= bit;
                }
            }
        }
        // SAFETY: fd < FD_SETSIZE.
        let wants_read = asked
            .as_ref()
            .is_some_and(|s| unsafe { libc::FD_ISSET(fd, s) });
        (fd, bits, wants_read)
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    let asked = read_interest(rd);
    waited(
        Call::Select,
        timeval_ms(timeout),
        // SAFETY: see above.
        || unsafe { real::select(nfds, rd, wr, ex, timeout) },
        |r| selected(nfds, [rd, wr, ex], asked, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    let asked = read_interest(rd);
    waited(
        Call::Pselect,
        timespec_ms(timeout),
        // SAFETY: see above.
        || unsafe { real::pselect(nfds, rd, wr, ex, timeout, sigmask) },
        |r| selected(nfds, [rd, wr, ex], asked, r),
    )
}

/// The tracked sockets an epoll wait reported, through their registered data. (epoll's
/// interest set is in the kernel: a wait that did not report a socket says nothing of it.)
fn epolled(events: *mut libc::epoll_event, r: c_int) -> impl Iterator<Item = (c_int, u8, bool)> {
    let n = if r > 0 && !events.is_null() {
        r as usize
    } else {
        0
    };
    (0..n).filter_map(move |i| {
        // SAFETY: the kernel filled the first r entries of the caller's array; epoll_event is
        // packed on x86-64, so it is read unaligned.
        let ev = unsafe { events.add(i).read_unaligned() };
        let (mask, datum) = (ev.events, ev.u64);
        fd_of(datum).map(|fd| (fd, epoll_bits(mask), false))
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    waited_on(
        Some(epfd),
        Call::EpollWait,
        i64::from(timeout),
        // SAFETY: see above.
        || unsafe { real::epoll_wait(epfd, events, maxevents, timeout) },
        |r| epolled(events, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: c_int,
    sigmask: *const libc::sigset_t,
) -> c_int {
    waited_on(
        Some(epfd),
        Call::EpollPwait,
        i64::from(timeout),
        // SAFETY: see above.
        || unsafe { real::epoll_pwait(epfd, events, maxevents, timeout, sigmask) },
        |r| epolled(events, r),
    )
}

/// glibc 2.35 and later; without it the lookup fails and the program gets ENOSYS, as it would
/// from glibc.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    waited_on(
        Some(epfd),
        Call::EpollPwait2,
        timespec_ms(timeout),
        // SAFETY: see above.
        || unsafe { real::epoll_pwait2(epfd, events, maxevents, timeout, sigmask) },
        |r| epolled(events, r),
    )
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> c_int {
    // SAFETY: the caller upholds libc's contract for epoll_ctl.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, event) };
    if r == 0 && active() {
        if let Some(_inside) = Inside::enter() {
            let err = errno();
            match op {
                libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD if !event.is_null() => {
                    // SAFETY: the caller's event, read by the kernel just now; packed: unaligned.
                    let datum = unsafe { std::ptr::addr_of!((*event).u64).read_unaligned() };
                    // SAFETY: as above.
                    let events = unsafe { std::ptr::addr_of!((*event).events).read_unaligned() };
                    remember(fd, datum);
                    epoll_registered(epfd, fd, events);
                }
                libc::EPOLL_CTL_DEL => forget(fd),
                _ => {}
            }
            set_errno(err);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datum_that_is_the_fd_maps_back_without_the_table() {
        remember(40, 40 | (0xdead << 32));
        assert_eq!(fd_of(40 | (0xdead << 32)), Some(40));
        forget(40);
        assert_eq!(fd_of(40 | (0xdead << 32)), None);
    }

    #[test]
    fn a_chain_of_epoll_waits_is_timed_from_the_first_since_the_socket_was_asked_for() {
        // Numbers of their own: the tables are process-wide and tests run in parallel.
        let (epfd, other, fd) = (3001, 3002, 3003);
        epoll_registered(epfd, fd, libc::EPOLLIN as u32);
        let asked = EPOLL_ASKED_SINCE[fd as usize].load(Ordering::Relaxed);
        assert!(asked > 0);
        // Older than the asking: not part of the chain.
        epoll_wait_returned(epfd, asked - 10, true);
        // A wait that returned events (the loop woke), then three 100 ms slices that timed out;
        // the wait called at +400 reports the socket.
        epoll_wait_returned(epfd, asked + 50, false);
        for k in 1..=3 {
            epoll_wait_returned(epfd, asked + k * 100, true);
        }
        assert_eq!(epoll_chain_start(epfd, fd, asked + 400), asked + 100);
        // Removed and added again between slices (psycopg): still the first slice.
        forget(fd);
        epoll_registered(epfd, fd, libc::EPOLLIN as u32);
        assert_eq!(epoll_chain_start(epfd, fd, asked + 400), asked + 100);
        epoll_wait_returned(epfd, asked + 400, false);
        // Data read: the next chain starts after it; a wait that returned events ends a chain.
        read_returned_data(fd, asked + 450);
        epoll_wait_returned(epfd, asked + 500, true);
        assert_eq!(epoll_chain_start(epfd, fd, asked + 600), asked + 500);
        epoll_wait_returned(epfd, asked + 600, false);
        assert_eq!(epoll_chain_start(epfd, fd, asked + 700), asked + 700);
        // A wait on another instance did not ask for it; nor does anything after a close.
        assert_eq!(epoll_chain_start(other, fd, asked + 600), asked + 600);
        closed(fd);
        assert_eq!(epoll_chain_start(epfd, fd, asked + 600), asked + 600);
    }

    #[test]
    fn more_slices_than_the_ring_holds_start_at_the_oldest_kept() {
        let (epfd, fd) = (3011, 3012);
        epoll_registered(epfd, fd, libc::EPOLLIN as u32);
        let asked = EPOLL_ASKED_SINCE[fd as usize].load(Ordering::Relaxed);
        for k in 1..=(EPOLL_RING as i64 + 4) {
            epoll_wait_returned(epfd, asked + k, true);
        }
        assert_eq!(epoll_chain_start(epfd, fd, asked + 100), asked + 5);
    }

    #[test]
    fn tokens_map_back_through_the_table_and_forget_with_their_fd() {
        for (fd, token) in [(41, 7u64), (42, 8), (43, 1 << 40)] {
            remember(fd, token);
        }
        assert_eq!(fd_of(7), Some(41));
        assert_eq!(fd_of(8), Some(42));
        assert_eq!(fd_of(1 << 40), Some(43));
        // Re-registered with another token: the old one no longer maps.
        remember(41, 9);
        assert_eq!(fd_of(7), None);
        assert_eq!(fd_of(9), Some(41));
        forget(42);
        assert_eq!(fd_of(8), None);
    }
}
