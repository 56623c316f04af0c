//! How netblame starts other programs: the command of `netblame run`, tcpdump for the tcpdump
//! backend, and the `ip` and `nft` of the demo. Such a program gets what netblame itself was
//! given and nothing of netblame's own:
//! - descriptors: the ones netblame inherited pass on, as a shell would pass them; every other
//!   descriptor above 2 is closed at exec. libpcap opens the live capture's packet socket without
//!   `SOCK_CLOEXEC`, and a command that kept it could read every frame on the interface after
//!   netblame dropped its privileges;
//! - signals: the mask and the ignored signals netblame was started with. Rust's runtime ignores
//!   SIGPIPE before `main`, and glibc's `posix_spawn` leaves the child's two internal signals
//!   (32 and 33) ignored; both are undone in the child before exec;
//! - process group, session, scheduling, limits and umask: netblame's, untouched.
//!
//! What netblame was given is read by an `.init_array` constructor, before Rust's runtime
//! changes SIGPIPE, and kept for the life of the process ([`given`]).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "netblame-launch reads the kernel's signal state with Linux x86_64/aarch64 system calls"
);

/// Signals are numbered 1 to 64; the kernel's signal set is one 64-bit word.
const SIGNALS: std::ops::RangeInclusive<i32> = 1..=64;
const KERNEL_SIGSET_BYTES: usize = 8;
/// `close_range(2)`'s flag: mark close-on-exec instead of closing (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 both have `sa_restorer`). The raw system
/// call is used because glibc's `sigaction` and `sigprocmask` hide signals 32 and 33.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// A descriptor netblame was given, with the identity of the file it named, so that a number
/// netblame closed and reused is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Descriptor {
    fd: i32,
    dev: u64,
    ino: u64,
}

impl Descriptor {
    fn identify(fd: i32) -> Option<Descriptor> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a `stat` into the buffer it is given; an invalid fd only fails.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat returned 0, so it filled the buffer.
        let st = unsafe { st.assume_init() };
        Some(Descriptor {
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// The process state netblame was started with, which the programs it starts get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// Open descriptors above 2, by number.
    descriptors: Vec<Descriptor>,
    /// The signal mask (bit `n - 1` for signal `n`).
    blocked: u64,
    /// Signals whose disposition was SIG_IGN.
    ignored: u64,
}

impl Given {
    /// Reads this process's descriptors and signal state now.
    fn read_now() -> Given {
        let mut ignored = 0;
        for sig in SIGNALS {
            if disposition(sig).is_some_and(|h| h == libc::SIG_IGN) {
                ignored |= bit(sig);
            }
        }
        Given {
            descriptors: open_descriptors(),
            blocked: blocked_now(),
            ignored,
        }
    }

    /// The descriptors above 2 netblame was given.
    pub fn descriptors(&self) -> impl Iterator<Item = i32> + '_ {
        self.descriptors.iter().map(|d| d.fd)
    }

    /// The signal mask netblame was given, as in /proc's `SigBlk` (bit `n - 1` for signal `n`).
    pub fn blocked(&self) -> u64 {
        self.blocked
    }

    /// The signals netblame was given ignored, as in /proc's `SigIgn`.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// In the child, between fork and exec: makes the process state what netblame was given.
    /// Only system calls: no allocation, no lock (the parent may have other threads).
    fn restore_in_child(&self) -> io::Result<()> {
        for sig in SIGNALS {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let handler = if self.ignored & bit(sig) != 0 {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            set_disposition(sig, handler)?;
        }
        set_blocked(self.blocked)?;
        let mut next = 3;
        for d in &self.descriptors {
            if d.fd > next {
                close_on_exec_range(next as u32, d.fd as u32 - 1)?;
            }
            if Descriptor::identify(d.fd) != Some(*d) {
                // Not the file netblame was given: netblame closed it and reused the number.
                set_close_on_exec(d.fd);
            }
            next = d.fd + 1;
        }
        close_on_exec_range(next as u32, u32::MAX)
    }
}

static GIVEN: OnceLock<Given> = OnceLock::new();

/// Runs before `main` (and before Rust's runtime ignores SIGPIPE).
#[used]
#[link_section = ".init_array"]
static READ_AT_START: extern "C" fn() = read_at_start;

extern "C" fn read_at_start() {
    GIVEN.get_or_init(Given::read_now);
}

/// What netblame was started with (read before `main`).
pub fn given() -> &'static Given {
    // The reference keeps the constructor linked into every binary that asks.
    std::hint::black_box(&READ_AT_START);
    GIVEN.get_or_init(Given::read_now)
}

/// Makes `cmd` start with what netblame was given and nothing of its own (see the crate's doc).
/// Every program netblame starts goes through here.
pub fn as_given(cmd: &mut Command) -> &mut Command {
    let given = given();
    // SAFETY: the closure runs in the child between fork and exec; `restore_in_child` makes only
    // async-signal-safe system calls on data that was complete before the fork.
    unsafe { cmd.pre_exec(move || given.restore_in_child()) }
}

/// Makes the process `cmd` spawns (a capture helper such as tcpdump) get SIGTERM when the
/// thread that spawned it ends: a netblame killed with SIGKILL leaves no capture running.
pub fn end_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `rt_sigaction(2)`: sets `new` when given, returns the action before.
fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>) -> io::Result<KernelSigaction> {
    let mut old = KernelSigaction::default();
    let new = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    // SAFETY: `new` is null or a kernel-layout struct that outlives the call; `old` is one the
    // kernel writes; the set size is the kernel's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            new,
            &mut old as *mut KernelSigaction,
            KERNEL_SIGSET_BYTES,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// `rt_sigprocmask(2)`: applies `new` with `how` when given, returns the mask before.
fn rt_sigprocmask(how: i32, new: Option<u64>) -> io::Result<u64> {
    let mut old: u64 = 0;
    let new = new.as_ref().map_or(std::ptr::null(), |n| n as *const u64);
    // SAFETY: `new` is null or one 64-bit kernel signal set that outlives the call; `old` is one
    // the kernel writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            new,
            &mut old as *mut u64,
            KERNEL_SIGSET_BYTES,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

fn disposition(sig: i32) -> Option<libc::sighandler_t> {
    rt_sigaction(sig, None).ok().map(|a| a.handler)
}

/// SIG_IGN or SIG_DFL: no handler runs, so no restorer is needed.
fn set_disposition(sig: i32, handler: libc::sighandler_t) -> io::Result<()> {
    let new = KernelSigaction {
        handler,
        ..KernelSigaction::default()
    };
    rt_sigaction(sig, Some(&new)).map(drop)
}

fn blocked_now() -> u64 {
    rt_sigprocmask(libc::SIG_BLOCK, None).unwrap_or(0)
}

fn set_blocked(mask: u64) -> io::Result<()> {
    rt_sigprocmask(libc::SIG_SETMASK, Some(mask)).map(drop)
}

/// The open descriptors above 2, in order.
fn open_descriptors() -> Vec<Descriptor> {
    let numbers: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        // No /proc: every number up to the descriptor limit.
        Err(_) => (3..descriptor_limit().min(65_536) as i32).collect(),
    };
    // The listing's own descriptor is closed by now, so it is not identified.
    let mut fds: Vec<Descriptor> = numbers
        .into_iter()
        .filter(|&fd| fd > 2)
        .filter_map(Descriptor::identify)
        .collect();
    fds.sort_by_key(|d| d.fd);
    fds
}

fn descriptor_limit() -> u64 {
    let mut lim = std::mem::MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit writes one rlimit into the buffer it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) } != 0 {
        return 1024;
    }
    // SAFETY: getrlimit returned 0, so it filled the buffer.
    unsafe { lim.assume_init() }.rlim_cur
}

fn set_close_on_exec(fd: i32) {
    // SAFETY: fcntl on a number that may not be open only fails with EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Marks `lo..=hi` close-on-exec: one `close_range` call, or (before Linux 5.11) one `fcntl`
/// per number up to the descriptor limit (at most 2^20).
fn close_on_exec_range(lo: u32, hi: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags in the calling process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
        return Err(err);
    }
    let end = u64::from(hi).min(descriptor_limit().min(1 << 20));
    for fd in u64::from(lo)..=end {
        set_close_on_exec(fd as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
