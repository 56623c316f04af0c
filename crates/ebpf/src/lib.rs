//! The eBPF recorder: the socket calls of programs the LD_PRELOAD interposer cannot reach (Go,
//! which makes its system calls without libc; static binaries; processes already running),
//! recorded from kernel tracepoints into the same event logs the interposer writes, one per
//! process and exec, so that the join, the tables and the pictures work on them unchanged.
//!
//! The BPF side (`bpf/recorder.bpf.c`, compiled into `bpf/recorder.bpf.o` and shipped with the
//! source: `just bpf` rebuilds it) follows a set of processes through fork, times each call
//! from system call entry to return, and reads the socket's TCP sequence number after it, so a
//! read joins the capture by sequence number, with or without the handshake. This side loads
//! and attaches it ([`Recorder::load`]), names the processes to follow ([`Recorder::follow`],
//! [`Recorder::arm_next_child`]), and drains its ring buffer into logs on a thread of its own
//! ([`Recorder::record_into`], [`Recorder::stop`]).

#![deny(unsafe_code)]

mod logs;

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder, PrintLevel, RingBufferBuilder};

pub use logs::{KernelEvent, KernelRecord, KernelSocket, Logs, RecordSummary, EVENT_SIZE};

/// The compiled BPF object (see `just bpf`).
pub const OBJECT: &[u8] = include_bytes!("../bpf/recorder.bpf.o");

/// How the recorder is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ring buffer's size, MiB (a power of two; 4 MiB holds some 40,000 calls).
    pub ring_mib: u32,
    /// Load this object instead of the built-in one (to try a rebuilt program).
    pub object: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_mib: 8,
            object: None,
        }
    }
}

/// Why the recorder could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// This process may not load BPF programs (it needs CAP_BPF and CAP_PERFMON, or root).
    NotPermitted { source: libbpf_rs::Error },
    /// The kernel's verifier refused a program: `reason` is the verifier's last word; `log`
    /// is libbpf's whole log.
    Refused {
        program: String,
        reason: String,
        log: String,
        source: libbpf_rs::Error,
    },
    /// The object could not be read or set up, or the kernel lacks what it needs (BTF, a
    /// tracepoint).
    Object {
        what: String,
        log: String,
        source: libbpf_rs::Error,
    },
    /// A program loaded but could not be attached to its tracepoint.
    Attach {
        program: String,
        source: libbpf_rs::Error,
    },
    /// The ring buffer size is not a power of two between 1 and 1024 MiB.
    RingSize { mib: u32 },
    /// The object named by `Options::object` could not be read.
    Read { path: PathBuf, source: io::Error },
}

impl LoadError {
    /// libbpf's log of the failed load, when there is one.
    pub fn log(&self) -> Option<&str> {
        match self {
            LoadError::Refused { log, .. } | LoadError::Object { log, .. } => Some(log),
            _ => None,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotPermitted { .. } => write!(
                f,
                "loading eBPF programs is not permitted (it needs root, or CAP_BPF and CAP_PERFMON)"
            ),
            LoadError::Refused {
                program, reason, ..
            } => write!(
                f,
                "the kernel's verifier refused the eBPF program {program}: {reason}"
            ),
            LoadError::Object { what, .. } => write!(f, "the eBPF object did not load: {what}"),
            LoadError::Attach { program, .. } => {
                write!(f, "the eBPF program {program} could not be attached")
            }
            LoadError::RingSize { mib } => write!(
                f,
                "the eBPF ring buffer must be a power of two between 1 and 1024 MiB, not {mib}"
            ),
            LoadError::Read { path, .. } => write!(f, "cannot read {}", path.display()),
        }
    }
}

impl Error for LoadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LoadError::NotPermitted { source }
            | LoadError::Refused { source, .. }
            | LoadError::Object { source, .. }
            | LoadError::Attach { source, .. } => Some(source),
            LoadError::Read { source, .. } => Some(source),
            LoadError::RingSize { .. } => None,
        }
    }
}

/// libbpf's messages of the load in progress (libbpf prints through one global callback).
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn keep_libbpf_message(_level: PrintLevel, msg: String) {
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        // Bounded: a verifier log can run to megabytes.
        if log.len() < 1 << 20 {
            log.push_str(&msg);
        }
    }
}

fn take_libbpf_log() -> String {
    LIBBPF_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// What a failed load's log says: the program the verifier refused, and its last word.
fn verifier_refusal(log: &str) -> Option<(String, String)> {
    let program = log.lines().find_map(|l| {
        let rest = l.split("prog '").nth(1)?;
        let (name, after) = rest.split_once('\'')?;
        after.contains("load failed").then(|| name.to_string())
    })?;
    let start = log.find("-- BEGIN PROG LOAD LOG --")?;
    let end = log[start..].find("-- END PROG LOAD LOG --")? + start;
    let lines: Vec<&str> = log[start..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("verification time"))
        .collect();
    let last_word = lines.iter().rev().find(|l| !l.starts_with("processed "));
    let reason = match (last_word, lines.last()) {
        (Some(l), _) => l.to_string(),
        // Only the count: the program is more than the verifier will walk.
        (None, Some(count)) if count.contains("(limit") => {
            format!("too complex for the verifier ({count})")
        }
        _ => "no reason given".to_string(),
    };
    Some((program, reason))
}

/// The loaded and attached recorder.
pub struct Recorder {
    object: Arc<Object>,
    _links: Vec<Link>,
    drain: Option<JoinHandle<io::Result<RecordSummary>>>,
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("draining", &self.drain.is_some())
            .finish_non_exhaustive()
    }
}

/// What the recorder could not do once loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecordError {
    /// A map of the object could not be updated (the process set, the armed parent).
    Map {
        map: &'static str,
        source: libbpf_rs::Error,
    },
    /// The ring buffer could not be polled.
    Ring { source: libbpf_rs::Error },
    /// A log could not be written.
    Write { source: io::Error },
    /// The draining thread died.
    Drain,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Map { map, .. } => write!(f, "cannot update the eBPF map {map}"),
            RecordError::Ring { .. } => write!(f, "cannot read the eBPF ring buffer"),
            RecordError::Write { .. } => write!(f, "cannot write the eBPF recorder's logs"),
            RecordError::Drain => write!(f, "the eBPF recorder's draining thread failed"),
        }
    }
}

impl Error for RecordError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RecordError::Map { source, .. } | RecordError::Ring { source } => Some(source),
            RecordError::Write { source } => Some(source),
            RecordError::Drain => None,
        }
    }
}

impl Recorder {
    /// Loads the BPF object and attaches its programs. Nothing is recorded until processes
    /// are named ([`Recorder::follow`], [`Recorder::arm_next_child`]).
    pub fn load(options: &Options) -> Result<Recorder, LoadError> {
        let mib = options.ring_mib;
        if !mib.is_power_of_two() || mib > 1024 {
            return Err(LoadError::RingSize { mib });
        }
        let bytes = match &options.object {
            Some(path) => std::fs::read(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?,
            None => OBJECT.to_vec(),
        };
        take_libbpf_log();
        let previous = libbpf_rs::set_print(Some((PrintLevel::Debug, keep_libbpf_message)));
        let loaded = Self::open_and_load(&bytes, mib);
        libbpf_rs::set_print(previous);
        let log = take_libbpf_log();
        let object = loaded.map_err(|(what, source)| {
            if let Some((program, reason)) = verifier_refusal(&log) {
                return LoadError::Refused {
                    program,
                    reason,
                    log,
                    source,
                };
            }
            if source.kind() == libbpf_rs::ErrorKind::PermissionDenied {
                return LoadError::NotPermitted { source };
            }
            LoadError::Object { what, log, source }
        })?;
        let mut links = Vec::new();
        for prog in object.progs_mut() {
            let program = prog.name().to_string_lossy().into_owned();
            links.push(
                prog.attach()
                    .map_err(|source| LoadError::Attach { program, source })?,
            );
        }
        Ok(Recorder {
            object: Arc::new(object),
            _links: links,
            drain: None,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    fn open_and_load(bytes: &[u8], mib: u32) -> Result<Object, (String, libbpf_rs::Error)> {
        let mut open = ObjectBuilder::default()
            .open_memory(bytes)
            .map_err(|e| ("cannot open the object".to_string(), e))?;
        for mut map in open.maps_mut() {
            if map.name() == "events" {
                map.set_max_entries(mib << 20)
                    .map_err(|e| ("cannot size the ring buffer".to_string(), e))?;
            }
            // The program's constants (`ring_bytes`, its only one) are set before loading.
            if map.name().to_string_lossy().ends_with(".rodata") {
                let ring_bytes = (u64::from(mib) << 20).to_ne_bytes();
                match map.initial_value_mut() {
                    Some(rodata) if rodata.len() == ring_bytes.len() => {
                        rodata.copy_from_slice(&ring_bytes)
                    }
                    _ => {
                        return Err((
                            "its constants are not the ring buffer's size alone".to_string(),
                            libbpf_rs::Error::from(io::Error::from(io::ErrorKind::InvalidData)),
                        ))
                    }
                }
            }
        }
        open.load()
            .map_err(|e| ("the kernel refused it".to_string(), e))
    }

    fn map(&self, name: &'static str) -> Result<libbpf_rs::Map<'_>, RecordError> {
        self.object
            .maps()
            .find(|m| m.name() == name || m.name().to_string_lossy().ends_with(name))
            .ok_or(RecordError::Map {
                map: name,
                source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::NotFound)),
            })
    }

    /// Follows process `pid` (its threads, and the children it forks from now on).
    pub fn follow(&self, pid: u32) -> Result<(), RecordError> {
        self.map("traced")?
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|source| RecordError::Map {
                map: "traced",
                source,
            })
    }

    /// The next process `parent` forks is followed (and its children); `None` disarms. Armed
    /// around the spawn of a command, so the command is followed from its first instruction.
    pub fn arm_next_child(&self, parent: Option<u32>) -> Result<(), RecordError> {
        let value = parent.unwrap_or(0).to_ne_bytes();
        self.map(".bss")?
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|source| RecordError::Map {
                map: ".bss",
                source,
            })
    }

    /// Starts draining the ring buffer into logs in `dir` (one per process and exec), on a
    /// thread of its own, until [`Recorder::stop`].
    pub fn record_into(&mut self, dir: &Path) -> Result<(), RecordError> {
        let object = Arc::clone(&self.object);
        let stop = Arc::clone(&self.stop);
        let dir = dir.to_path_buf();
        let clock = logs::ClockOffset::now();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let drain = std::thread::Builder::new()
            .name("netblame-ebpf".into())
            .spawn(move || -> io::Result<RecordSummary> {
                let logs = Rc::new(RefCell::new(Logs::new(&dir, clock)));
                let ring = {
                    let sink = Rc::clone(&logs);
                    let events = object
                        .maps()
                        .find(|m| m.name() == "events")
                        .ok_or_else(|| io::Error::other("the object has no events map"))?;
                    let mut builder = RingBufferBuilder::new();
                    builder
                        .add(&events, move |data: &[u8]| {
                            sink.borrow_mut().handle_bytes(data);
                            0
                        })
                        .map_err(io::Error::other)?;
                    builder.build().map_err(io::Error::other)
                };
                let ring = match ring {
                    Ok(r) => {
                        ready_tx.send(Ok(())).ok();
                        r
                    }
                    Err(e) => {
                        ready_tx.send(Err(e.to_string())).ok();
                        return Err(e);
                    }
                };
                // A write error does not stop the draining (the programs never wait for it):
                // the logs keep what was written, and `finish` reports the error.
                // A signal (netblame stopped and continued, a child's exit) interrupts the
                // wait: that is no reason to stop recording.
                let retry = |r: Result<(), libbpf_rs::Error>| match r {
                    Err(e) if e.kind() != libbpf_rs::ErrorKind::Interrupted => {
                        Err(io::Error::other(e))
                    }
                    _ => Ok(()),
                };
                // The programs wake this thread only when the ring is a quarter full: every
                // 20 ms it takes what is there either way.
                let mut failure = None;
                while failure.is_none() && !stop.load(Ordering::Acquire) {
                    failure = retry(ring.poll(Duration::from_millis(20)).map(drop))
                        .and_then(|()| retry(ring.consume().map(drop)))
                        .err();
                }
                if failure.is_none() {
                    failure = retry(ring.consume().map(drop)).err();
                }
                drop(ring);
                let lost = object
                    .maps()
                    .find(|m| m.name() == "lost")
                    .map(|m| read_lost(&m))
                    .unwrap_or_default();
                let logs = Rc::try_unwrap(logs)
                    .map_err(|_| io::Error::other("the ring buffer still holds the logs"))?
                    .into_inner();
                // The logs hold what was drained, even when draining failed.
                let summary = logs.finish(&lost);
                match failure {
                    Some(e) => Err(e),
                    None => summary,
                }
            })
            .map_err(|source| RecordError::Write { source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                self.drain = Some(drain);
                Ok(())
            }
            Ok(Err(_)) | Err(_) => match drain.join() {
                Ok(Err(source)) => Err(RecordError::Write { source }),
                _ => Err(RecordError::Drain),
            },
        }
    }

    /// Drains what is left, finishes the logs (with the calls the ring buffer could not hold,
    /// per process) and says what was recorded.
    pub fn stop(mut self) -> Result<RecordSummary, RecordError> {
        self.stop.store(true, Ordering::Release);
        match self.drain.take() {
            None => Ok(RecordSummary::default()),
            Some(d) => match d.join() {
                Ok(r) => r.map_err(|source| RecordError::Write { source }),
                Err(_) => Err(RecordError::Drain),
            },
        }
    }
}

/// The `lost` map: per process, (CLOCK_MONOTONIC of the first call the ring could not hold,
/// calls not recorded).
fn read_lost(map: &libbpf_rs::Map<'_>) -> Vec<(u32, u64, u64)> {
    map.keys()
        .filter_map(|k| {
            let tgid = u32::from_ne_bytes(k.get(..4)?.try_into().ok()?);
            let v = map.lookup(&k, MapFlags::ANY).ok()??;
            let first = u64::from_ne_bytes(v.get(..8)?.try_into().ok()?);
            let calls = u64::from_ne_bytes(v.get(8..16)?.try_into().ok()?);
            Some((tgid, first, calls))
        })
        .collect()
}

#[cfg(test)]
mod tests;
