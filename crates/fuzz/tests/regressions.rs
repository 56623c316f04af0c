//! Replays every fuzz input that ever failed (`fuzz/regressions/TARGET/*`) and every seed
//! (`fuzz/seeds/TARGET/*`) through its target, with the limits the fuzzer enforces: no panic,
//! no input over 1 MB using more than 1 GB of memory (peak resident size, VmHWM), and (in release builds, where the fuzzer's 5 s
//! applies) none taking over 5 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Resets the process's peak resident memory (VmHWM) to its current size.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

/// A field of /proc/self/status, in bytes (the kernel prints kB).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

const MEMORY_LIMIT: usize = 1 << 30;
const MAX_INPUT: usize = 1 << 20;
const TIME_LIMIT: Duration = Duration::from_secs(5);

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file() && p.file_name().is_none_or(|n| n != "README.md"));
    v.sort();
    v
}

/// The peak is the process's: one replay at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs every input of `kind` through every target; returns how many ran.
fn replay(kind: &str) -> usize {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut ran = 0;
    let mut failures = Vec::new();
    for (name, target) in netblame_fuzz::TARGETS {
        for path in inputs(kind, name) {
            let data = std::fs::read(&path).unwrap();
            assert!(data.len() <= MAX_INPUT, "{}: over 1 MB", path.display());
            let before = status_bytes("VmRSS:");
            reset_peak();
            let start = Instant::now();
            target(&data);
            let took = start.elapsed();
            let used = status_bytes("VmHWM:").saturating_sub(before);
            if used > MEMORY_LIMIT {
                failures.push(format!("{}: {used} bytes at peak", path.display()));
            }
            if !cfg!(debug_assertions) && took > TIME_LIMIT {
                failures.push(format!("{}: took {took:?}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ran
}

#[test]
fn every_input_that_ever_failed_stays_fixed() {
    assert!(replay("regressions") > 0, "no regression inputs found");
}

#[test]
fn every_seed_runs_within_the_limits() {
    assert!(replay("seeds") >= netblame_fuzz::TARGETS.len());
}
