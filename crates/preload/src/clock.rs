//! The stamps of the interposer's records.
//!
//! Two `clock_gettime(CLOCK_REALTIME)` calls were a third of what recording a call cost (the
//! vDSO's seqlock loop, its ordered TSC read and the scaling, twice a call). Where the kernel
//! itself keeps time by the TSC (its clocksource is `tsc`, which it picks only for an invariant
//! TSC synchronised across CPUs), a call is stamped with a bare TSC read instead, and the log
//! carries clock points, (TSC, CLOCK_REALTIME) pairs, from which the reader turns ticks into
//! the realtime nanoseconds every other log holds (`netblame_instrument::clock`). Points are
//! written at the log's open (two, around its creation, so even a log killed at once has a
//! slope), then by the first record at least 2^21 ticks after the last point, the gap doubling
//! up to 2^31 ticks (0.7 s at 3 GHz), and at exit: readers interpolate between neighbouring
//! points, so NTP's slewing between them is followed and only a clock step is smeared over one
//! gap. Elsewhere, or with `NETBLAME_CLOCK=realtime`, records hold realtime nanoseconds as before.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Set once, by the constructor, before any record: stamps are TSC ticks.
static TSC: AtomicBool = AtomicBool::new(false);
/// The stamp from which the next record also writes a clock point (i64::MAX: none due, or one
/// being written).
static NEXT_POINT: AtomicI64 = AtomicI64::new(i64::MAX);
/// Ticks from one point to the next point due.
static GAP: AtomicI64 = AtomicI64::new(FIRST_GAP);
const FIRST_GAP: i64 = 1 << 21;
const LARGEST_GAP: i64 = 1 << 31;

/// Chooses the stamps (library constructor, once per process image).
pub fn configure() {
    TSC.store(tsc_keeps_time() && !realtime_asked(), Ordering::Relaxed);
}

/// Whether this log's stamps are TSC ticks.
pub fn uses_tsc() -> bool {
    TSC.load(Ordering::Relaxed)
}

/// The stamp of now, in the log's unit.
#[inline]
pub fn now() -> i64 {
    if uses_tsc() {
        ticks()
    } else {
        crate::realtime_ns()
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn ticks() -> i64 {
    // No lfence before it (the kernel's rdtsc_ordered has one): it would wait for every
    // instruction before to finish, which costs more than the few nanoseconds by which the
    // read can run ahead; the syscall between a call's two stamps keeps them in order.
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() as i64 }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ticks() -> i64 {
    crate::realtime_ns()
}

/// A clock point: (TSC ticks, realtime ns) read as close together as the machine allows (the
/// realtime read between two TSC reads; of 4 tries, the tightest).
pub fn point() -> (i64, i64) {
    let mut best = (i64::MAX, 0, 0);
    for _ in 0..4 {
        let before = ticks();
        let real = crate::realtime_ns();
        let after = ticks();
        let spread = after - before;
        if spread < best.0 {
            best = (spread, before + spread / 2, real);
        }
    }
    (best.1, best.2)
}

/// After a record stamped `t`: true once for the record that should also write a clock point
/// (the caller writes it and then calls `point_written`).
#[inline]
pub fn point_due(t: i64) -> bool {
    let due = NEXT_POINT.load(Ordering::Relaxed);
    t >= due
        && NEXT_POINT
            .compare_exchange(due, i64::MAX, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// A point was written at `ticks`: the next is due one gap later, the gap doubled.
pub fn point_written(ticks: i64) {
    let gap = GAP.load(Ordering::Relaxed);
    GAP.store((gap * 2).min(LARGEST_GAP), Ordering::Relaxed);
    NEXT_POINT.store(ticks.saturating_add(gap), Ordering::Relaxed);
}

/// A new log (this process's first, or a fork child's own): points start over.
pub fn restart() {
    NEXT_POINT.store(i64::MAX, Ordering::Relaxed);
    GAP.store(FIRST_GAP, Ordering::Relaxed);
}

fn realtime_asked() -> bool {
    // SAFETY: getenv with a NUL-terminated name; the result is read before any setenv.
    let v = unsafe { libc::getenv(c"NETBLAME_CLOCK".as_ptr()) };
    // SAFETY: getenv returned a valid NUL-terminated string when not null.
    !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == b"realtime"
}

/// True when the kernel keeps time by an invariant TSC: its clocksource is `tsc`.
#[cfg(target_arch = "x86_64")]
fn tsc_keeps_time() -> bool {
    use core::arch::x86_64::__cpuid;
    // CPUID 0x80000007 EDX bit 8: the TSC runs at a constant rate in every power state (leaf
    // 0x80000000 says which extended leaves exist).
    let invariant =
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
    invariant && clocksource_is_tsc()
}

#[cfg(not(target_arch = "x86_64"))]
fn tsc_keeps_time() -> bool {
    false
}

fn clocksource_is_tsc() -> bool {
    let path = c"/sys/devices/system/clocksource/clocksource0/current_clocksource";
    // SAFETY: a NUL-terminated path; the fd is closed below.
    let fd = unsafe { crate::real::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 16];
    // SAFETY: buf is a valid buffer of its length; fd is open.
    let n = unsafe { crate::real::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd was opened above.
    unsafe { crate::real::close(fd) };
    n >= 0 && &buf[..n as usize] == b"tsc\n"
}
