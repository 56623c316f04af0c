//! A portable event log writer for in-process use (the Rust wrappers): one positioned write per
//! record, so every record returned from `append` is in the kernel's page cache and survives the
//! process being killed. The LD_PRELOAD interposer writes the same format through a shared
//! mapping instead, to stay within its per-call budget.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::{self, Kind, RawRecord, HEADER_SIZE, RECORD_SIZE};

/// CLOCK_REALTIME now, in ns since the Unix epoch (the clock libpcap stamps packets with).
pub fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The log file name for a process: `events-PID-STARTNS.nbev`.
pub fn log_file_name(pid: u32, start_ns: i64, tag: &str) -> String {
    format!("events-{pid}-{start_ns}{tag}.{}", record::EXTENSION)
}

/// An event log open for appending from any thread.
#[derive(Debug)]
pub struct EventLog {
    file: File,
    path: PathBuf,
    pid: u32,
    next_slot: AtomicU64,
    next_string: AtomicU32,
    strings: Mutex<HashMap<String, u32>>,
}

impl EventLog {
    /// Creates a new log in `dir` (mode 0600), named after this process.
    pub fn create_in(dir: &Path) -> io::Result<EventLog> {
        let pid = std::process::id();
        let start = realtime_ns();
        let path = dir.join(log_file_name(pid, start, "-rs"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all_at(&record::encode_header(pid, start), 0)?;
        Ok(EventLog {
            file,
            path,
            pid,
            next_slot: AtomicU64::new(0),
            next_string: AtomicU32::new(1),
            strings: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Appends one record (two slots for an open event).
    pub fn append(&self, r: &RawRecord) -> io::Result<()> {
        let (first, second) = record::encode(r);
        let slots = 1 + u64::from(second.is_some());
        let slot = self.next_slot.fetch_add(slots, Ordering::Relaxed);
        let at = HEADER_SIZE as u64 + slot * RECORD_SIZE as u64;
        self.file.write_all_at(&first, at)?;
        if let Some(second) = second {
            self.file.write_all_at(&second, at + RECORD_SIZE as u64)?;
        }
        Ok(())
    }

    /// The id of `s`, writing it to the log the first time.
    pub fn intern(&self, s: &str) -> io::Result<u32> {
        let mut map = self.strings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = map.get(s) {
            return Ok(id);
        }
        let id = self.next_string.fetch_add(1, Ordering::Relaxed);
        for r in record::string_records(id, s.as_bytes(), self.pid) {
            self.append(&r)?;
        }
        map.insert(s.to_string(), id);
        Ok(id)
    }

    /// Records a mark (a test boundary or a user tag) at the current time.
    pub fn mark(&self, label: &str, test: Option<&str>) -> io::Result<()> {
        let mut r = RawRecord::new(Kind::Mark);
        r.call = record::Call::Mark;
        r.pid = self.pid;
        r.tid = crate::wrap::current_tid();
        r.t_call_ns = realtime_ns();
        r.t_return_ns = r.t_call_ns;
        r.label_id = self.intern(label)?;
        r.test_id = match test {
            Some(t) => self.intern(t)?,
            None => 0,
        };
        self.append(&r)
    }
}

/// A log written by one writer for another process (the eBPF recorder writes one per process
/// it follows): buffered, since its writer outlives what it records; the header's lost-call
/// fields are filled in by `finish`.
#[derive(Debug)]
pub struct LogFile {
    out: io::BufWriter<File>,
    path: PathBuf,
    pid: u32,
}

impl LogFile {
    /// Creates `dir/events-PID-STARTNS-TAG.nbev` (mode 0600) with its header.
    pub fn create(
        dir: &Path,
        pid: u32,
        start_ns: i64,
        tag: &str,
        recorder: record::Recorder,
    ) -> io::Result<LogFile> {
        let path = dir.join(log_file_name(pid, start_ns, tag));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut out = io::BufWriter::with_capacity(64 * RECORD_SIZE * 16, file);
        io::Write::write_all(&mut out, &record::encode_header_by(pid, start_ns, recorder))?;
        Ok(LogFile { out, path, pid })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Appends one record (two slots for an open event).
    pub fn append(&mut self, r: &RawRecord) -> io::Result<()> {
        let (first, second) = record::encode(r);
        io::Write::write_all(&mut self.out, &first)?;
        if let Some(second) = second {
            io::Write::write_all(&mut self.out, &second)?;
        }
        Ok(())
    }

    /// Writes what is buffered; with `lost` = (CLOCK_REALTIME of the first call not recorded,
    /// calls not recorded), says so in the header, as the interposer does when its disk fills.
    pub fn finish(self, lost: Option<(i64, u64)>) -> io::Result<()> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        if let Some((from_ns, calls)) = lost {
            write_lost(&file, from_ns, calls)?;
        }
        Ok(())
    }
}

fn write_lost(file: &File, from_ns: i64, calls: u64) -> io::Result<()> {
    file.write_all_at(
        &from_ns.to_le_bytes(),
        record::HEADER_LOST_FROM.start as u64,
    )?;
    file.write_all_at(&calls.to_le_bytes(), record::HEADER_LOST_CALLS.start as u64)
}

/// Says in the header of the finished log at `path` that `calls` calls from `from_ns`
/// (CLOCK_REALTIME) on were not recorded.
pub fn mark_lost(path: &Path, from_ns: i64, calls: u64) -> io::Result<()> {
    write_lost(&OpenOptions::new().write(true).open(path)?, from_ns, calls)
}
