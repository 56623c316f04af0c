//! `libnetblame_preload.so`: an LD_PRELOAD interposer that records every socket read and write
//! of an unmodified program (Python, curl, anything dynamically linked against libc) into a
//! netblame event log, one file per process and per exec, in `NETBLAME_EVENTS_DIR`. Without that
//! variable it records nothing and says nothing.
//!
//! The per-call path of an interposed function is: one load from a fixed fd table ("is this a
//! socket we track?"), a thread-local re-entry flag, two stamps (TSC reads where the kernel keeps
//! time by the TSC, else CLOCK_REALTIME by the vDSO: `clock`), the real call, and one 64-byte
//! record written into a shared file mapping at a slot claimed with an
//! atomic add. No lock, no allocation, no extra syscall. The mapping is `MAP_SHARED`, so every
//! record written is in the page cache and survives the program being killed with SIGKILL.
//!
//! Rules kept throughout (after bytehound's preload and cwrap's socket_wrapper): each real
//! function is looked up once with `dlsym(RTLD_NEXT)`; a call made while recording passes
//! straight through; no Rust panic unwinds into C; return values and errno reach the program
//! untouched; a fork child opens its own log; a vfork child (posix_spawn, Python's subprocess)
//! only passes through.

#![allow(clippy::missing_safety_doc)]
// the exported functions have libc's contracts
// Unit tests build the exports as plain functions (`cfg_attr(not(test), no_mangle)`), so that
// the test binary's own poll or epoll_wait stay libc's: nothing calls them there.
#![cfg_attr(test, allow(dead_code))]

mod clock;
mod fds;
mod hooks;
mod log;
mod real;
mod tags;
mod waits;

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// 0: not initialised, 1: recording, 2: off (no NETBLAME_EVENTS_DIR, or recording failed).
static STATE: AtomicU8 = AtomicU8::new(0);
const ACTIVE: u8 = 1;
const OFF: u8 = 2;

/// This process's pid, refreshed in a fork child.
static PID: AtomicU32 = AtomicU32::new(0);

/// What netblame keeps per thread, in one thread-local: in a cdylib every thread-local access
/// is a `__tls_get_addr` call, so a hook makes one (`Inside::enter`) and keeps the address.
struct ThreadState {
    /// Set while this thread is inside netblame's own code: calls then pass straight through.
    inside: Cell<bool>,
    /// Cached kernel thread id (0: not read yet), and the pid it was read in.
    tid: Cell<(u32, u32)>,
}

impl ThreadState {
    fn tid(&self) -> u32 {
        let pid = pid();
        let (tid, seen_pid) = self.tid.get();
        if tid != 0 && seen_pid == pid {
            return tid;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        self.tid.set((tid, pid));
        tid
    }
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            inside: Cell::new(false),
            tid: Cell::new((0, 0)),
        }
    };
}

fn active() -> bool {
    STATE.load(Ordering::Relaxed) == ACTIVE
}

fn pid() -> u32 {
    PID.load(Ordering::Relaxed)
}

fn tid() -> u32 {
    THREAD.try_with(ThreadState::tid).unwrap_or(0)
}

/// Marks this thread as inside netblame until the guard drops; `None` if it already was (a
/// re-entrant call, which must pass through) or thread-locals are gone (thread teardown).
struct Inside(*const ThreadState);

impl Inside {
    fn enter() -> Option<Inside> {
        THREAD
            .try_with(|t| (!t.inside.replace(true)).then_some(Inside(t)))
            .ok()
            .flatten()
    }

    /// This thread's kernel id.
    fn tid(&self) -> u32 {
        // SAFETY: the pointer is this thread's ThreadState (made by `enter` on this thread: the
        // guard is not Send), which lives as long as the thread.
        unsafe { &*self.0 }.tid()
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        // SAFETY: as in `tid`.
        unsafe { &*self.0 }.inside.set(false);
    }
}

fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_REALTIME is always supported.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
}

/// Writes one line to stderr without allocating (used once, when recording turns itself off).
fn warn(msg: &[u8]) {
    let _inside = Inside::enter();
    // SAFETY: msg is a valid buffer of msg.len() bytes; fd 2 may be closed, which is harmless.
    unsafe {
        real::write(2, msg.as_ptr().cast(), msg.len());
    }
}

/// Turns recording off for good, saying why once.
fn disable(why: &[u8]) {
    if STATE.swap(OFF, Ordering::Relaxed) == ACTIVE {
        warn(b"netblame: ");
        warn(why);
        warn(b"; socket calls are no longer recorded (the program carries on)\n");
    }
}

/// Library constructor: reads the configuration. The log itself is created at the first event.
extern "C" fn init() {
    let Some(_inside) = Inside::enter() else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
    if !log::configure() {
        STATE.store(OFF, Ordering::Relaxed);
        return;
    }
    clock::configure();
    tags::init();
    STATE.store(ACTIVE, Ordering::Relaxed);
    // SAFETY: registering plain extern "C" handlers without arguments.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
        libc::atexit(at_exit);
    }
}

/// In a fork child: a new pid, and a log of its own at its first event. The fd table and the
/// stream offsets carry over, as the child shares its parent's sockets.
extern "C" fn after_fork_child() {
    // SAFETY: getpid has no preconditions.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
    log::forget_parent_log();
}

extern "C" fn at_exit() {
    log::finish();
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
