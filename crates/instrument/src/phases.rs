//! The log of netblame's pytest plugin (`crates/cli/python/netblame_pytest.py`): one JSON line
//! per test phase, in `pytest-<pid>.phases` files beside the event logs. The plugin writes its
//! own log rather than going through the interposer: it is plain Python (no ctypes, nothing to
//! find at run time), its records are few (three per test), and a line of text survives any
//! interposer version.

use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::event::LogError;

/// The extension of the plugin's logs.
pub const PHASES_EXTENSION: &str = "phases";

/// One line of the plugin's log, as written (names are checked by the reader of the model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    pub test: String,
    pub phase: String,
    pub outcome: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub pid: u32,
    pub worker: Option<String>,
}

/// What the plugin's logs hold, and how many lines could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseLog {
    pub records: Vec<PhaseRecord>,
    /// Lines that are not a record (a line cut short when pytest was killed mid-write).
    pub unreadable: u64,
    /// Whether any log was found: a run made without the plugin has none.
    pub found: bool,
}

fn record(line: &str) -> Option<PhaseRecord> {
    let v: Value = serde_json::from_str(line).ok()?;
    let text = |k: &str| v.get(k)?.as_str().map(str::to_string);
    Some(PhaseRecord {
        test: text("test")?,
        phase: text("phase")?,
        outcome: text("outcome")?,
        start_ns: v.get("start_ns")?.as_i64()?,
        end_ns: v.get("end_ns")?.as_i64()?,
        pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
        worker: text("worker"),
    })
}

/// Reads the plugin's lines from `reader` into `log`.
pub fn read_phases_from(reader: impl BufRead, log: &mut PhaseLog) -> io::Result<()> {
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match record(&line) {
            Some(r) => log.records.push(r),
            None => log.unreadable += 1,
        }
    }
    Ok(())
}

/// The plugin's logs in an events folder or a run directory (its `events/`); none for a single
/// event log file. Records are in start order.
pub fn read_test_phases(path: &Path) -> Result<PhaseLog, LogError> {
    let mut log = PhaseLog::default();
    let dirs = [path.to_path_buf(), path.join("events")];
    let Some(dir) = dirs.iter().find(|d| d.is_dir() && has_phases(d)) else {
        return Ok(log);
    };
    let io_err = |path: &Path| {
        let path: PathBuf = path.into();
        move |source| LogError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == PHASES_EXTENSION))
        .collect();
    files.sort();
    log.found = true;
    for file in files {
        let f = fs::File::open(&file).map_err(io_err(&file))?;
        read_phases_from(io::BufReader::new(f), &mut log).map_err(io_err(&file))?;
    }
    log.records.sort_by_key(|r| (r.start_ns, r.pid));
    Ok(log)
}

fn has_phases(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == PHASES_EXTENSION)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_counts_a_cut_line() {
        let text = concat!(
            r#"{"test": "t.py::a", "phase": "call", "outcome": "failed", "start_ns": 5, "end_ns": 9, "pid": 7, "worker": "gw1"}"#,
            "\n",
            r#"{"test": "t.py::a", "phase": "setup", "outcome": "passed", "start_ns": 1, "end_ns": 4, "pid": 7, "worker": null}"#,
            "\n",
            r#"{"test": "t.py::b", "pha"#,
        );
        let mut log = PhaseLog::default();
        read_phases_from(text.as_bytes(), &mut log).unwrap();
        assert_eq!(log.records.len(), 2);
        assert_eq!(log.unreadable, 1);
        assert_eq!(log.records[0].worker.as_deref(), Some("gw1"));
        assert_eq!(log.records[1].worker, None);
    }

    #[test]
    fn a_folder_without_logs_has_none() {
        let dir = std::env::temp_dir().join(format!("nb-phases-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = read_test_phases(&dir).unwrap();
        assert!(!log.found && log.records.is_empty());
        fs::write(dir.join("pytest-1.phases"), "not json\n").unwrap();
        let log = read_test_phases(&dir).unwrap();
        assert!(log.found);
        assert_eq!(log.unreadable, 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
