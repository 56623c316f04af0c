//! Test attribution: which pytest test (`PYTEST_CURRENT_TEST`) or user tag (`NETBLAME_TAG`) was
//! current at each call. pytest sets the variable through `os.environ`, which calls libc's
//! `setenv`; netblame interposes `setenv`, `unsetenv`, `putenv` and `clearenv`, so the current
//! value is noted when it changes (never stale) and each event reads it with one atomic load
//! (never a scan of the environment).

use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, Ordering};

use netblame_instrument::record;

static PYTEST: AtomicU32 = AtomicU32::new(0);
static TAG: AtomicU32 = AtomicU32::new(0);
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

const VARS: [(&CStr, &AtomicU32); 2] = [(c"PYTEST_CURRENT_TEST", &PYTEST), (c"NETBLAME_TAG", &TAG)];

/// The string id to put in an event: the pytest test if one runs, else the user tag.
#[inline]
pub fn current() -> u32 {
    match PYTEST.load(Ordering::Relaxed) {
        0 => TAG.load(Ordering::Relaxed),
        id => id,
    }
}

/// Reads both variables at start.
pub fn init() {
    for (name, slot) in VARS {
        refresh(name, slot);
    }
}

/// Writes the current values into a log just opened (a fork child's log, or a log opened at
/// the first event, lacks them).
pub fn emit_current() {
    for (name, slot) in VARS {
        let id = slot.load(Ordering::Relaxed);
        if id != 0 {
            if let Some(value) = getenv(name) {
                write_string(id, value);
            }
        }
    }
}

fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv with a NUL-terminated name; the value is used before the environment can
    // change again in this thread.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: getenv returned a valid NUL-terminated string.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_bytes())
}

fn write_string(id: u32, value: &[u8]) {
    for r in record::string_records(id, value, crate::pid()) {
        crate::log::append(&r);
    }
}

fn refresh(name: &CStr, slot: &AtomicU32) {
    let Some(value) = getenv(name) else {
        slot.store(0, Ordering::Relaxed);
        return;
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    // Without a log yet, the string is written when the log opens (emit_current).
    if crate::log::is_open() {
        write_string(id, value);
    }
    slot.store(id, Ordering::Relaxed);
}

/// After the environment changed: re-read `name` if it is one of ours (`None`: all of them).
pub fn changed(name: Option<&[u8]>) {
    for (var, slot) in VARS {
        if name.is_none_or(|n| n == var.to_bytes()) {
            refresh(var, slot);
        }
    }
}
