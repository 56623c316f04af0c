//! The event log of this process: a file in NETBLAME_EVENTS_DIR mapped `MAP_SHARED`, so a record
//! is durable (in the page cache) the moment it is written, whatever happens to the process.
//!
//! The file is created at the first event (and NETBLAME_EVENTS_DIR with it, mode 0700, when it
//! is missing), so processes that never touch a socket (shells, helpers started through the
//! inherited LD_PRELOAD) leave no log. Space for `CAPACITY` records is reserved up front as a
//! sparse file; a slot is claimed with one atomic add, filled, then committed by storing its kind
//! byte last. At exit the file is cut to the slots used; a log left by a killed process or an
//! exec keeps its zero tail, which readers skip.
//!
//! A store into a page of a shared file mapping that the disk has no room for kills the process
//! with SIGBUS. So pages are made ready `RESERVE_SLOTS` records at a time, ahead of use, with
//! `MADV_POPULATE_WRITE`, which fails with an error instead (one madvise per 1,024 records, on
//! the cold path). When the disk is full, or the capacity is reached, later events are counted
//! and dropped, and the header says from when: the program runs on unchanged.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use netblame_instrument::record::{self, CallSlot, RawRecord, HEADER_SIZE, RECORD_SIZE};

use crate::real;

/// 16 Mi records (1 GiB of address space and sparse file) per process.
const CAPACITY: u64 = 16 << 20;
const MAP_LEN: usize = HEADER_SIZE + CAPACITY as usize * RECORD_SIZE;
const PATH_MAX: usize = 4096;

static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// 0: no log yet, 1: being opened, 2: open, 3: could not be opened.
static OPEN_STATE: AtomicU8 = AtomicU8::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Records (from the first) whose pages are known to be backed by the disk.
static RESERVED: AtomicU64 = AtomicU64::new(0);
/// Set while one thread reserves more; others wait for it.
static RESERVING: AtomicBool = AtomicBool::new(false);
/// Set once a reservation failed: the log takes no more records.
static FULL: AtomicBool = AtomicBool::new(false);
/// Set at exit: calls after it are not "lost", the log is simply closed.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Records made ready at a time: 64 KiB of the mapping.
const RESERVE_SLOTS: u64 = 1024;

/// A fixed buffer written only while the process is single-threaded in netblame's code (the
/// constructor, a fork child's handler) and read at exit.
struct PathBuffer {
    bytes: UnsafeCell<[u8; PATH_MAX]>,
    len: AtomicUsize,
}

// SAFETY: writes happen only in the library constructor and in a fork child's atfork handler,
// when no other thread runs netblame code; readers load `len` (Acquire) after the write.
unsafe impl Sync for PathBuffer {}

impl PathBuffer {
    const fn new() -> Self {
        PathBuffer {
            bytes: UnsafeCell::new([0; PATH_MAX]),
            len: AtomicUsize::new(0),
        }
    }

    /// Sets the contents (NUL-terminated); false if too long.
    fn set(&self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total + 1 > PATH_MAX {
            return false;
        }
        // SAFETY: see the Sync impl: no concurrent access while setting.
        let buf = unsafe { &mut *self.bytes.get() };
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        buf[at] = 0;
        self.len.store(total, Ordering::Release);
        true
    }

    /// The contents without the NUL.
    fn get(&self) -> &[u8] {
        let len = self.len.load(Ordering::Acquire);
        // SAFETY: the first `len` bytes were written before `len` was published.
        unsafe { &(&*self.bytes.get())[..len] }
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.bytes.get().cast()
    }
}

static DIR: PathBuffer = PathBuffer::new();
static CURRENT: PathBuffer = PathBuffer::new();

/// Reads NETBLAME_EVENTS_DIR; false when unset or empty (then nothing is recorded).
pub fn configure() -> bool {
    // SAFETY: getenv with a NUL-terminated name; the result is copied before any setenv.
    let v = unsafe { libc::getenv(c"NETBLAME_EVENTS_DIR".as_ptr()) };
    if v.is_null() {
        return false;
    }
    // SAFETY: getenv returned a valid NUL-terminated string.
    let dir = unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes();
    !dir.is_empty() && DIR.set(&[dir])
}

/// Formats `v` in decimal into `buf`, returning the digits.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[at..];
        }
    }
}

/// True once this process's log exists.
pub fn is_open() -> bool {
    OPEN_STATE.load(Ordering::Acquire) == 2
}

/// Opens the log on first use; one thread opens, others wait for it (this happens once).
#[cold]
fn ensure_open() -> *mut u8 {
    loop {
        match OPEN_STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return match open() {
                    Ok(()) => {
                        OPEN_STATE.store(2, Ordering::Release);
                        // Strings current before the log existed (the running test's name).
                        crate::tags::emit_current();
                        BASE.load(Ordering::Acquire)
                    }
                    Err(why) => {
                        OPEN_STATE.store(3, Ordering::Release);
                        crate::disable(why);
                        std::ptr::null_mut()
                    }
                };
            }
            Err(1) => std::hint::spin_loop(),
            Err(2) => return BASE.load(Ordering::Acquire),
            Err(_) => return std::ptr::null_mut(),
        }
    }
}

/// Creates and maps this process's log (also in a fork child, for the child's own log).
fn open() -> Result<(), &'static [u8]> {
    // Two clock points around the log's creation (tens of microseconds apart): a slope for a
    // log that gets no later point (clock.rs).
    let opening = crate::clock::uses_tsc().then(crate::clock::point);
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    let pid = decimal(u64::from(crate::pid()), &mut a);
    let start = crate::realtime_ns();
    let start_digits = decimal(start as u64, &mut b);
    let ext = record::EXTENSION.as_bytes();
    if !CURRENT.set(&[DIR.get(), b"/events-", pid, b"-", start_digits, b".", ext]) {
        return Err(b"NETBLAME_EVENTS_DIR is too long");
    }
    let create = || {
        // SAFETY: CURRENT holds a NUL-terminated path; flags and mode are valid for open.
        unsafe {
            real::open(
                CURRENT.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        }
    };
    let mut fd = create();
    if fd < 0 && crate::errno() == libc::ENOENT {
        make_dirs(DIR.get());
        fd = create();
    }
    if fd < 0 {
        return Err(b"cannot create the event log in NETBLAME_EVENTS_DIR");
    }
    // SAFETY: fd is the file just created; MAP_LEN fits in off_t.
    let base = unsafe {
        if libc::ftruncate(fd, MAP_LEN as libc::off_t) != 0 {
            real::close(fd);
            return Err(b"cannot size the event log");
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            MAP_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        // The mapping keeps the file; the fd is not needed (and programs close fds they do not know).
        real::close(fd);
        if p == libc::MAP_FAILED {
            return Err(b"cannot map the event log");
        }
        p.cast::<u8>()
    };
    RESERVED.store(0, Ordering::Relaxed);
    FULL.store(false, Ordering::Relaxed);
    CLOSED.store(false, Ordering::Relaxed);
    // A fork child may have been copied while its parent's thread held this.
    RESERVING.store(false, Ordering::Relaxed);
    // The header's page too must be backed before it is written.
    // SAFETY: base is the mapping of MAP_LEN bytes just made.
    if !unsafe { populate(base, 0, HEADER_SIZE) } {
        // SAFETY: as above; nothing else has seen the mapping.
        unsafe { libc::munmap(base.cast(), MAP_LEN) };
        // SAFETY: CURRENT is the NUL-terminated path of the file just created.
        unsafe { libc::unlink(CURRENT.as_ptr()) };
        return Err(b"no room for the event log in NETBLAME_EVENTS_DIR (disk full?)");
    }
    let mut header = record::encode_header(crate::pid(), start);
    if opening.is_some() {
        header[record::HEADER_CLOCK] = record::Stamps::Tsc as u8;
    }
    // SAFETY: base points to MAP_LEN writable bytes; the header is HEADER_SIZE bytes.
    unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), base, HEADER_SIZE) };
    NEXT.store(0, Ordering::Relaxed);
    BASE.store(base, Ordering::Release);
    if let Some(first) = opening {
        crate::clock::restart();
        append_point(base, first);
        append_point(base, crate::clock::point());
    }
    Ok(())
}

/// Writes a clock point (TSC ticks, realtime ns) and schedules the next.
#[cold]
fn append_point(base: *mut u8, (ticks, real_ns): (i64, i64)) {
    let mut r = RawRecord::new(record::Kind::Clock);
    (r.t_call_ns, r.t_return_ns) = (ticks, real_ns);
    // A point that finds the log full is not a call lost.
    append_to(base, &r, false);
    crate::clock::point_written(ticks);
}

/// Creates `dir` and any missing folder above it, mode 0700 (as `mkdir -p`).
#[cold]
fn make_dirs(dir: &[u8]) {
    let mut path = [0u8; PATH_MAX];
    let n = dir.len().min(PATH_MAX - 1);
    path[..n].copy_from_slice(&dir[..n]);
    for end in 1..=n {
        if end < n && path[end] != b'/' {
            continue;
        }
        let saved = path[end];
        path[end] = 0;
        // SAFETY: path[..=end] is NUL-terminated; an existing folder gives EEXIST, ignored.
        unsafe { libc::mkdir(path.as_ptr().cast(), 0o700) };
        path[end] = saved;
    }
}

/// Makes the mapping's bytes `[from, to)` (from `base`) safe to store into: backed by the disk,
/// or an error instead of a SIGBUS later. False when the disk has no room. A kernel without
/// MADV_POPULATE_WRITE (before 5.14) gives EINVAL: pages are then backed at first store, as
/// before.
///
/// # Safety
/// `base` must be the log's mapping and `to <= MAP_LEN`.
unsafe fn populate(base: *mut u8, from: usize, to: usize) -> bool {
    let page = 4096;
    let start = from / page * page;
    let end = to.div_ceil(page) * page;
    // SAFETY: [start, end) lies inside the mapping (page-aligned, end <= MAP_LEN rounded to a
    // page, and MAP_LEN's last page is mapped).
    let r = unsafe {
        libc::madvise(
            base.add(start).cast(),
            end - start,
            libc::MADV_POPULATE_WRITE,
        )
    };
    r == 0 || crate::errno() == libc::EINVAL
}

/// Makes every slot below `end` safe to write; false when the disk is full (then records from
/// the first unreserved slot on are dropped). One thread reserves; others wait for it.
#[cold]
fn reserve_through(base: *mut u8, end: u64) -> bool {
    loop {
        if end <= RESERVED.load(Ordering::Acquire) {
            return true;
        }
        if FULL.load(Ordering::Acquire) {
            return false;
        }
        if RESERVING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            std::hint::spin_loop();
            continue;
        }
        let have = RESERVED.load(Ordering::Acquire);
        if end > have {
            let want = end.div_ceil(RESERVE_SLOTS).max(have / RESERVE_SLOTS + 1) * RESERVE_SLOTS;
            let want = want.min(CAPACITY);
            let slot_byte = |s: u64| HEADER_SIZE + s as usize * RECORD_SIZE;
            // SAFETY: want <= CAPACITY, so the range lies inside the mapping.
            let ok = unsafe { populate(base, slot_byte(have), slot_byte(want)) };
            if ok {
                RESERVED.store(want, Ordering::Release);
            } else {
                FULL.store(true, Ordering::Release);
            }
        }
        RESERVING.store(false, Ordering::Release);
    }
}

/// Notes in the header that a call was not recorded now (the first such time stays; realtime
/// ns, whatever the records' stamps).
#[cold]
fn note_lost(base: *mut u8) {
    let t_ns = crate::realtime_ns().max(1);
    let dropped = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let from = record::HEADER_LOST_FROM;
    let calls = record::HEADER_LOST_CALLS;
    // SAFETY: the header lies in the mapping's first page, backed since open(); these are
    // aligned 8-byte fields of it.
    unsafe {
        let first = AtomicU64::from_ptr(base.add(from.start).cast());
        let _ = first.compare_exchange(0, t_ns as u64, Ordering::Relaxed, Ordering::Relaxed);
        AtomicU64::from_ptr(base.add(calls.start).cast()).fetch_max(dropped, Ordering::Relaxed);
    }
}

/// In a fork child: drop the parent's mapping (the child must not write into its parent's log).
pub fn forget_parent_log() {
    let base = BASE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    OPEN_STATE.store(0, Ordering::Release);
    if !base.is_null() {
        // SAFETY: base was mapped with MAP_LEN bytes by open() and is no longer published.
        unsafe { libc::munmap(base.cast(), MAP_LEN) };
    }
}

/// Appends a record: claim a slot, write the body, commit the kind byte.
pub fn append(r: &RawRecord) {
    let mut base = BASE.load(Ordering::Acquire);
    if base.is_null() {
        base = ensure_open();
        if base.is_null() {
            return;
        }
    }
    append_to(base, r, true);
    if crate::clock::uses_tsc() && crate::clock::point_due(r.t_return_ns) {
        append_point(base, crate::clock::point());
    }
}

/// Appends the record of a socket call, written in place: the hot path of every hook.
#[inline]
pub fn append_call(rec: &CallSlot) {
    let mut base = BASE.load(Ordering::Acquire);
    if base.is_null() {
        base = ensure_open();
        if base.is_null() {
            return;
        }
    }
    if let Some(slot) = claim(base, 1, true) {
        let body = CallSlot { kind: 0, ..*rec };
        // SAFETY: claim gave a slot of RECORD_SIZE bytes inside the mapping that this thread
        // alone owns, 64-byte aligned (the mapping is page-aligned, the header and every slot
        // 64 bytes), and CallSlot is RECORD_SIZE bytes of plain data. The kind goes last, with
        // Release, as in `commit`.
        unsafe {
            slot.cast::<CallSlot>().write(body);
            AtomicU8::from_ptr(slot).store(rec.kind, Ordering::Release);
        }
        prefetch_next(slot);
    }
    if crate::clock::uses_tsc() && crate::clock::point_due(rec.t_return) {
        append_point(base, crate::clock::point());
    }
}

/// Brings the slot after `slot` into the cache while the program runs on: the next call's
/// record then stores into a cached line instead of waiting for memory (every record is a line
/// of its own, never touched before, and the slot claim's locked add waits for earlier stores).
#[inline]
fn prefetch_next(slot: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; the next slot is in the mapping
    // (or one past the last slot, still inside its last page).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            slot.add(RECORD_SIZE).cast(),
        );
    }
}

/// Claims `slots` consecutive slots of the log mapped at `base`: the first one's address, or
/// None when there is no room (then counted as a call not recorded if `a_call`).
#[inline]
fn claim(base: *mut u8, slots: u64, a_call: bool) -> Option<*mut u8> {
    let slot = NEXT.fetch_add(slots, Ordering::Relaxed);
    let end = slot + slots;
    if end > CAPACITY || (end > RESERVED.load(Ordering::Acquire) && !reserve_through(base, end)) {
        if a_call && !CLOSED.load(Ordering::Relaxed) {
            note_lost(base);
        }
        return None;
    }
    // SAFETY: slot + slots <= CAPACITY, so the slots lie inside the mapping.
    Some(unsafe { base.add(HEADER_SIZE + slot as usize * RECORD_SIZE) })
}

/// Claims the record's slots in the log mapped at `base` and commits it; when there is no room,
/// counts it as a call not recorded if `a_call`.
fn append_to(base: *mut u8, r: &RawRecord, a_call: bool) {
    let (first, second) = record::encode(r);
    let Some(slot) = claim(base, 1 + u64::from(second.is_some()), a_call) else {
        return;
    };
    // SAFETY: claim gave this thread alone the record's slots, inside the mapping.
    unsafe {
        commit(slot, &first);
        if let Some(second) = second {
            commit(slot.add(RECORD_SIZE), &second);
        }
    }
}

/// Writes a record into its slot: every byte but the kind, then the kind with Release, so a
/// reader that sees the kind sees the whole record.
///
/// # Safety
/// `slot` must point to RECORD_SIZE writable bytes of the mapping claimed by this thread.
unsafe fn commit(slot: *mut u8, rec: &[u8; RECORD_SIZE]) {
    // SAFETY: the caller guarantees the slot is valid and exclusively ours.
    unsafe {
        std::ptr::copy_nonoverlapping(rec.as_ptr().add(1), slot.add(1), RECORD_SIZE - 1);
        AtomicU8::from_ptr(slot).store(rec[0], Ordering::Release);
    }
}

/// At exit: stop claiming slots and cut the file to the slots used.
pub fn finish() {
    if BASE.load(Ordering::Acquire).is_null() {
        return;
    }
    if crate::clock::uses_tsc() {
        // The last point: the stamps up to exit are interpolated, not extrapolated.
        append_point(BASE.load(Ordering::Acquire), crate::clock::point());
    }
    // Later claims land past the capacity and are dropped, so no write touches the cut tail.
    CLOSED.store(true, Ordering::Relaxed);
    let mut used = NEXT.swap(u64::MAX / 2, Ordering::AcqRel).min(CAPACITY);
    if FULL.load(Ordering::Acquire) {
        // Slots claimed past the last reserved one were never written.
        used = used.min(RESERVED.load(Ordering::Acquire));
    }
    // A thread that claimed a slot just before still writes below this length; the page that
    // holds the end stays mapped, so such a write cannot fault.
    let len = HEADER_SIZE as u64 + used * RECORD_SIZE as u64;
    // SAFETY: CURRENT is the NUL-terminated path of this process's log.
    unsafe { libc::truncate(CURRENT.as_ptr(), len.min(MAP_LEN as u64) as libc::off_t) };
    let dropped = DROPPED.load(Ordering::Relaxed);
    if dropped > 0 {
        crate::warn(
            b"netblame: the event log was full (disk or capacity); later socket calls were not recorded\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot path writes a CallSlot's memory as the record: it must be the encoding.
    #[test]
    fn call_slot_memory_is_its_encoding() {
        let slot = CallSlot {
            kind: 3,
            flags: 4,
            call: 7,
            ready: 1,
            tid: 0x0102_0304,
            fd: 9,
            stream: 0x0a0b_0c0d,
            t_call: 0x1112_1314_1516_1718,
            t_return: -2,
            result: 64,
            requested: 65,
            offset: 1 << 40,
            errno: 11,
            test_id: 5,
        };
        // SAFETY: CallSlot is RECORD_SIZE bytes of plain data (a const assertion in its crate).
        let memory: [u8; RECORD_SIZE] = unsafe { std::mem::transmute(slot) };
        assert_eq!(memory, slot.to_bytes());
    }
}
