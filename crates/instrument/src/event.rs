//! Events as readers see them (strings resolved), their JSON Lines form, and reading logs back.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::clock::TickClock;
use crate::record::{
    self, flags, Call, Kind, Proto, RawRecord, Recorder, Stamps, HEADER_CLOCK, HEADER_LOST_CALLS,
    HEADER_LOST_FROM, HEADER_RECORDER, HEADER_SIZE, MAGIC, OLDEST_VERSION, RECORD_SIZE, VERSION,
};

/// One socket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub call: Call,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// CLOCK_REALTIME at the call's entry and return, ns.
    pub t_call_ns: i64,
    pub t_return_ns: i64,
    /// Bytes asked for (reads) or handed over (writes).
    pub requested: u64,
    /// Bytes moved, or -1 on error.
    pub bytes: i64,
    pub errno: i32,
    /// TCP stream offset of the first byte moved.
    pub offset: u64,
    /// The TCP sequence number of the first byte moved, where the recorder read it from the
    /// kernel's socket (the eBPF recorder; `offset` is 0 then): joins without the handshake.
    pub seq: Option<u32>,
    /// Distinguishes successive connections on one fd number of one process.
    pub stream: u64,
    pub peek: bool,
    pub nonblocking: bool,
    pub proto: Option<Proto>,
    /// Open events: the socket's addresses (`local()`, `peer()`; boxed, as other events have
    /// none: a run holds millions of events).
    pub addrs: Option<Box<Addrs>>,
    /// The pytest test (`PYTEST_CURRENT_TEST`) or `NETBLAME_TAG` current at the call.
    pub test: Option<Arc<str>>,
    /// Mark events: the mark's label.
    pub label: Option<Arc<str>>,
    /// Wait events: what the wait reported of the socket (`record::ready` bits).
    pub ready: u8,
    /// Which recorder saw the call.
    pub recorder: Recorder,
}

/// An open event's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addrs {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

impl Event {
    pub fn local(&self) -> Option<SocketAddr> {
        self.addrs.as_ref()?.local
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.addrs.as_ref()?.peer
    }

    pub fn set_addrs(&mut self, local: Option<SocketAddr>, peer: Option<SocketAddr>) {
        self.addrs = (local.is_some() || peer.is_some()).then(|| Box::new(Addrs { local, peer }));
    }

    /// The event of a record; its test and label (string ids) are resolved by the caller.
    fn from_raw(r: &RawRecord) -> Event {
        Event {
            kind: r.kind,
            call: r.call,
            pid: r.pid,
            tid: r.tid,
            fd: r.fd,
            t_call_ns: r.t_call_ns,
            t_return_ns: r.t_return_ns,
            requested: r.requested,
            bytes: r.result,
            errno: r.errno,
            offset: if r.flags & flags::KERNEL_SEQ != 0 {
                0
            } else {
                r.offset
            },
            seq: (r.flags & flags::KERNEL_SEQ != 0).then_some(r.offset as u32),
            stream: r.stream,
            peek: r.flags & flags::PEEK != 0,
            nonblocking: r.flags & flags::NONBLOCKING != 0,
            proto: (r.kind == Kind::Open).then_some(if r.flags & flags::TCP != 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            }),
            addrs: r.addrs.map(|(local, peer)| {
                Box::new(Addrs {
                    local: Some(local),
                    peer: Some(peer),
                })
            }),
            test: None,
            label: None,
            ready: r.ready,
            recorder: Recorder::Interposer,
        }
    }

    /// The event as one JSON object (see docs/events.md).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(self.kind.as_str()));
        m.insert("call".into(), json!(self.call.as_str()));
        m.insert("pid".into(), json!(self.pid));
        m.insert("tid".into(), json!(self.tid));
        m.insert("fd".into(), json!(self.fd));
        m.insert("t_call_ns".into(), json!(self.t_call_ns));
        m.insert("t_return_ns".into(), json!(self.t_return_ns));
        m.insert("requested".into(), json!(self.requested));
        m.insert("bytes".into(), json!(self.bytes));
        m.insert("offset".into(), json!(self.offset));
        if let Some(seq) = self.seq {
            m.insert("seq".into(), json!(seq));
        }
        if self.recorder != Recorder::Interposer {
            m.insert("recorder".into(), json!(self.recorder.as_str()));
        }
        m.insert("errno".into(), json!(self.errno));
        m.insert("stream".into(), json!(self.stream));
        m.insert("peek".into(), json!(self.peek));
        m.insert("nonblocking".into(), json!(self.nonblocking));
        m.insert("test".into(), json!(self.test.as_deref()));
        if self.kind == Kind::Open {
            m.insert("proto".into(), json!(self.proto.map(Proto::as_str)));
            m.insert("local".into(), json!(self.local().map(|a| a.to_string())));
            m.insert("peer".into(), json!(self.peer().map(|a| a.to_string())));
        }
        if self.kind == Kind::Mark {
            m.insert("label".into(), json!(self.label.as_deref()));
        }
        if self.kind == Kind::Wait {
            let names: Vec<&str> = record::ready::NAMES
                .iter()
                .filter(|(bit, _)| self.ready & bit != 0)
                .map(|&(_, name)| name)
                .collect();
            m.insert("ready".into(), json!(names));
        }
        Value::Object(m)
    }

    /// Parses one JSON Lines object. Required: `kind`, `pid`, `fd`; everything else defaults.
    pub fn from_json(v: &Value) -> Result<Event, String> {
        let o = v.as_object().ok_or("not a JSON object")?;
        let kind = o
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::parse)
            .ok_or("\"kind\" must be one of open, recv, send, close, mark, wait")?;
        let int = |k: &str| o.get(k).and_then(Value::as_i64);
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let addr = |k: &str| -> Result<Option<SocketAddr>, String> {
            match text(k) {
                None => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("\"{k}\": {s:?} is not addr:port")),
            }
        };
        let bytes = int("bytes").unwrap_or(0);
        Ok(Event {
            kind,
            call: text("call").map_or(Call::Unknown, |c| Call::parse(&c)),
            pid: int("pid").ok_or("\"pid\" is required")? as u32,
            tid: int("tid").unwrap_or(0) as u32,
            fd: int("fd").ok_or("\"fd\" is required")? as i32,
            t_call_ns: int("t_call_ns").unwrap_or(0),
            t_return_ns: int("t_return_ns").or(int("t_call_ns")).unwrap_or(0),
            requested: int("requested").unwrap_or(bytes.max(0)) as u64,
            bytes,
            errno: int("errno").unwrap_or(0) as i32,
            offset: int("offset").unwrap_or(0) as u64,
            seq: match int("seq") {
                None => None,
                Some(v) => Some(
                    u32::try_from(v)
                        .map_err(|_| format!("\"seq\": {v} is not a 32-bit sequence number"))?,
                ),
            },
            stream: int("stream").unwrap_or(0) as u64,
            peek: o.get("peek").and_then(Value::as_bool).unwrap_or(false),
            nonblocking: o
                .get("nonblocking")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            proto: match text("proto").as_deref() {
                Some("tcp") => Some(Proto::Tcp),
                Some("udp") => Some(Proto::Udp),
                None if kind == Kind::Open => Some(Proto::Tcp),
                None => None,
                Some(other) => return Err(format!("\"proto\": {other:?} is not tcp or udp")),
            },
            addrs: match (addr("local")?, addr("peer")?) {
                (None, None) => None,
                (local, peer) => Some(Box::new(Addrs { local, peer })),
            },
            test: text("test").map(Arc::from),
            label: text("label").map(Arc::from),
            ready: match o.get("ready") {
                None => 0,
                Some(v) => ready_bits(v)?,
            },
            recorder: match text("recorder").as_deref() {
                None | Some("interposer") => Recorder::Interposer,
                Some("ebpf") => Recorder::Ebpf,
                Some(other) => {
                    return Err(format!("\"recorder\": {other:?} is not interposer or ebpf"))
                }
            },
        })
    }
}

/// The `ready` bits of a JSON list such as `["read", "hangup"]`.
fn ready_bits(v: &Value) -> Result<u8, String> {
    let list = v.as_array().ok_or("\"ready\" must be a list")?;
    list.iter().try_fold(0u8, |bits, name| {
        let name = name.as_str().unwrap_or_default();
        record::ready::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|&(bit, _)| bits | bit)
            .ok_or_else(|| format!("\"ready\": {name:?} is not read, write, hangup or error"))
    })
}

/// Why an event log could not be read (whole or in part).
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Not an event log: the magic number is wrong.
    BadMagic {
        path: PathBuf,
    },
    /// Written by a newer netblame.
    FutureVersion {
        path: PathBuf,
        version: u16,
    },
    /// Written by an older netblame, in a format this one no longer reads.
    OldVersion {
        path: PathBuf,
        version: u16,
    },
    /// The header names stamps this netblame does not know (a newer writer).
    UnknownStamps {
        path: PathBuf,
        value: u8,
    },
    /// A log stamped in TSC ticks holds fewer than two clock points: its calls cannot be placed
    /// in time (the writer died as it opened the log).
    NoClock {
        path: PathBuf,
        events: usize,
    },
    /// The file ends inside the header or inside a record.
    Truncated {
        path: PathBuf,
        offset: u64,
    },
    /// A record slot was claimed but never completed (the writer died mid-record).
    TornRecord {
        path: PathBuf,
        offset: u64,
    },
    /// A folder (nor its `events/` folder) holds no event log.
    NoLogs {
        path: PathBuf,
    },
    /// A JSON Lines input line is not a valid event.
    BadJson {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { path, .. } => write!(f, "{}: cannot read", path.display()),
            LogError::BadMagic { path } => write!(f, "{}: not a netblame event log (wrong magic)", path.display()),
            LogError::FutureVersion { path, version } => write!(
                f,
                "{}: event log format version {version} is newer than this netblame reads ({VERSION})",
                path.display()
            ),
            LogError::OldVersion { path, version } => write!(
                f,
                "{}: event log format version {version} is older than this netblame reads ({VERSION}); \
                 record it again",
                path.display()
            ),
            LogError::UnknownStamps { path, value } => write!(
                f,
                "{}: the records' stamps are of a kind ({value}) this netblame does not know; \
                 read it with a newer netblame",
                path.display()
            ),
            LogError::NoClock { path, events } => write!(
                f,
                "{}: stamped in TSC ticks but without the two clock points that turn them into \
                 time; its {events} events are left out",
                path.display()
            ),
            LogError::Truncated { path, offset } => {
                write!(f, "{}: truncated at byte offset {offset} (the file ends inside a record)", path.display())
            }
            LogError::TornRecord { path, offset } => {
                write!(f, "{}: torn record at byte offset {offset} (its writer died mid-record)", path.display())
            }
            LogError::NoLogs { path } => write!(
                f,
                "{}: no event logs (*.{} or *.jsonl) in it or in its events/ folder",
                path.display(),
                record::EXTENSION
            ),
            LogError::BadJson { path, line, what } => write!(f, "{}: line {line}: {what}", path.display()),
        }
    }
}

impl Error for LogError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A process whose log could not hold every call: from `from_ns` on, `calls` calls are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostCalls {
    pub path: PathBuf,
    pub pid: u32,
    /// CLOCK_REALTIME of the first call not recorded.
    pub from_ns: i64,
    pub calls: u64,
    /// Who could not record them: the interposer (its disk was full, or its log's capacity
    /// reached) or the eBPF recorder (its ring buffer was full).
    pub recorder: Recorder,
}

impl LostCalls {
    /// Why the calls were not recorded.
    pub fn why(&self) -> &'static str {
        match self.recorder {
            Recorder::Interposer => {
                "the events folder's disk was full, or the log reached its capacity"
            }
            Recorder::Ebpf => "the eBPF recorder's ring buffer was full: raise --ebpf-ring-mib",
        }
    }

    /// "N calls not recorded ..." with `first`, the first one's time as the caller writes it.
    /// The interposer records nothing after its disk filled; the eBPF recorder records again
    /// once its ring has room.
    pub fn summary(&self, first: &str) -> String {
        match self.recorder {
            Recorder::Interposer => format!(
                "{} calls not recorded from {first} on ({})",
                self.calls,
                self.why()
            ),
            Recorder::Ebpf => format!(
                "{} calls not recorded, the first at {first} ({})",
                self.calls,
                self.why()
            ),
        }
    }
}

impl fmt::Display for LostCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: pid {}: {}",
            self.path.display(),
            self.pid,
            self.summary(&format!("{} ns", self.from_ns))
        )
    }
}

/// What a log held: every complete event, the first damage found, if any, and the processes
/// whose log says calls were not recorded.
#[derive(Debug, Default)]
pub struct LogContents {
    pub events: Vec<Event>,
    pub damage: Option<LogError>,
    pub lost: Vec<LostCalls>,
}

/// Reads a binary event log. Fails only when nothing can be read (I/O, magic, version);
/// damage after the header is reported in `damage` with every complete record kept.
///
/// The interposer reserves space ahead as a sparse file, and a process that was killed (or
/// exec'd) leaves that zero tail behind: reading stops at the first all-zero megabyte, so a
/// log costs what it holds, not what it reserved.
pub fn read_binary_log(path: &Path) -> Result<LogContents, LogError> {
    let file = fs::File::open(path).map_err(|source| LogError::Io {
        path: path.into(),
        source,
    })?;
    // Room for every record the file holds, counting only the blocks written: a log left by a
    // killed process is a large sparse file.
    let written = file.metadata().ok().map(|meta| {
        use std::os::unix::fs::MetadataExt;
        meta.len().min(meta.blocks() * 512)
    });
    read_binary(file, path, written)
}

/// Reads a binary event log from `input` (`path` names it in errors). `size_hint`, the bytes
/// the input holds at most, only sizes the first allocation; memory and time are bounded by
/// the bytes actually read.
pub fn read_binary(
    mut input: impl Read,
    path: &Path,
    size_hint: Option<u64>,
) -> Result<LogContents, LogError> {
    const CHUNK: usize = 8192 * RECORD_SIZE;
    let io = |source| LogError::Io {
        path: path.into(),
        source,
    };
    let mut header = [0u8; HEADER_SIZE];
    let got = read_full(&mut input, &mut header).map_err(io)?;
    let header = &header[..got];
    if header.len() < MAGIC.len() || header[..MAGIC.len()] != MAGIC {
        return Err(LogError::BadMagic { path: path.into() });
    }
    if header.len() < HEADER_SIZE {
        return Err(LogError::Truncated {
            path: path.into(),
            offset: header.len() as u64,
        });
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version > VERSION {
        return Err(LogError::FutureVersion {
            path: path.into(),
            version,
        });
    }
    if version < OLDEST_VERSION {
        return Err(LogError::OldVersion {
            path: path.into(),
            version,
        });
    }
    let pid = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let i64_at = |r: std::ops::Range<usize>| {
        i64::from_le_bytes(header[r].try_into().expect("8 header bytes"))
    };
    let lost_from = i64_at(HEADER_LOST_FROM);
    let lost = (lost_from != 0).then(|| LostCalls {
        path: path.into(),
        pid,
        from_ns: lost_from,
        calls: i64_at(HEADER_LOST_CALLS) as u64,
        recorder: Recorder::from_u8(header[HEADER_RECORDER]),
    });
    let stamps = Stamps::from_u8(header[HEADER_CLOCK]).ok_or(LogError::UnknownStamps {
        path: path.into(),
        value: header[HEADER_CLOCK],
    })?;
    let mut resolver = Resolver {
        recorder: Recorder::from_u8(header[HEADER_RECORDER]),
        stamps,
        ..Resolver::default()
    };
    if let Some(written) = size_hint {
        let records = written.saturating_sub(HEADER_SIZE as u64) / RECORD_SIZE as u64;
        resolver.reserve(records);
    }
    let mut damage = None;
    // Zero records seen since the last committed one: torn if a committed record follows.
    let mut zeros_from: Option<u64> = None;
    let mut offset = HEADER_SIZE as u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let got = read_full(&mut input, &mut buf).map_err(io)?;
        let chunk = &buf[..got];
        if chunk.is_empty() || chunk.iter().all(|&b| b == 0) {
            break;
        }
        for rec in chunk.chunks(RECORD_SIZE) {
            let Ok(rec) = <&[u8; RECORD_SIZE]>::try_from(rec) else {
                damage.get_or_insert(LogError::Truncated {
                    path: path.into(),
                    offset,
                });
                break;
            };
            match record::decode(rec) {
                Some(mut r) => {
                    if let Some(torn) = zeros_from.take() {
                        damage.get_or_insert(LogError::TornRecord {
                            path: path.into(),
                            offset: torn,
                        });
                    }
                    r.pid = pid;
                    r.stream |= u64::from(pid) << 32;
                    resolver.push(r);
                }
                None if rec.iter().all(|&b| b == 0) => {
                    zeros_from.get_or_insert(offset);
                }
                None => {
                    zeros_from.take();
                    damage.get_or_insert(LogError::TornRecord {
                        path: path.into(),
                        offset,
                    });
                }
            }
            offset += RECORD_SIZE as u64;
        }
        if chunk.len() < CHUNK {
            break;
        }
    }
    let events = match resolver.finish() {
        Ok(events) => events,
        Err(events) => {
            // Damage found earlier is the likelier cause; it is the one reported.
            damage.get_or_insert(LogError::NoClock {
                path: path.into(),
                events,
            });
            Vec::new()
        }
    };
    Ok(LogContents {
        events,
        damage,
        lost: lost.into_iter().collect(),
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Turns raw records into events as they are read (so a large log is held once, as events),
/// resolving interned strings and open events' peer addresses at the end.
#[derive(Default)]
struct Resolver {
    recorder: Recorder,
    stamps: Stamps,
    /// Clock points (ticks, realtime ns) of a log stamped in ticks.
    points: Vec<(i64, i64)>,
    parts: HashMap<u32, Vec<u8>>,
    peers: HashMap<u64, SocketAddr>,
    events: Vec<Event>,
    /// (test string id, label string id) of each event.
    ids: Vec<(u32, u32)>,
}

impl Resolver {
    /// Room for `records` events; only ever a hint from the file's size.
    fn reserve(&mut self, records: u64) {
        let records = usize::try_from(records).unwrap_or(0);
        self.events.reserve(records);
        self.ids.reserve(records);
    }

    fn push(&mut self, r: RawRecord) {
        match r.kind {
            Kind::Str => {
                // Writers emit a string's chunks in order. A chunk extends the string only where
                // it starts within what is already there, so a string never holds more bytes than
                // its chunks brought, whatever lengths and offsets a damaged record claims.
                let s = self.parts.entry(r.test_id).or_default();
                let Ok(start) = usize::try_from(r.offset) else {
                    return;
                };
                let total = usize::try_from(r.result).unwrap_or(0);
                let end = (start + r.chunk.len()).min(total);
                if start <= s.len() && start < end {
                    if s.len() < end {
                        s.resize(end, 0);
                    }
                    s[start..end].copy_from_slice(&r.chunk[..end - start]);
                }
            }
            Kind::Clock => self.points.push((r.t_call_ns, r.t_return_ns)),
            // An open event's peer address travels in the OpenPeer record that follows it.
            Kind::OpenPeer => {
                if let Some((_, peer)) = r.addrs {
                    self.peers.insert(r.stream, peer);
                }
            }
            _ => {
                self.ids.push((r.test_id, r.label_id));
                let mut e = Event::from_raw(&r);
                e.recorder = self.recorder;
                self.events.push(e);
            }
        }
    }

    /// The events, their stamps in realtime ns; Err(events) for a log stamped in ticks without
    /// the clock points to place them.
    fn finish(mut self) -> Result<Vec<Event>, usize> {
        if self.stamps == Stamps::Tsc {
            let Some(clock) = TickClock::new(std::mem::take(&mut self.points)) else {
                return Err(self.events.len());
            };
            let mut hint = 0;
            for e in &mut self.events {
                e.t_call_ns = clock.realtime_ns(e.t_call_ns, &mut hint);
                e.t_return_ns = clock.realtime_ns(e.t_return_ns, &mut hint);
            }
        }
        // One allocation per distinct string, shared by every event that names it.
        let strings: HashMap<u32, Arc<str>> = self
            .parts
            .into_iter()
            .map(|(id, b)| (id, Arc::from(String::from_utf8_lossy(&b))))
            .collect();
        let get = |id: u32| {
            if id == 0 {
                None
            } else {
                strings.get(&id).cloned()
            }
        };
        for (e, &(test, label)) in self.events.iter_mut().zip(&self.ids) {
            e.test = get(test);
            e.label = get(label);
            if e.kind == Kind::Open {
                e.set_addrs(e.local(), self.peers.get(&e.stream).copied());
            }
        }
        Ok(self.events)
    }
}

/// Reads JSON Lines events; blank lines are skipped. Stops at the first bad line, reporting it.
pub fn read_jsonl(path: &Path) -> Result<LogContents, LogError> {
    let file = fs::File::open(path).map_err(|source| LogError::Io {
        path: path.into(),
        source,
    })?;
    read_jsonl_from(io::BufReader::new(file), path)
}

/// Reads JSON Lines events from `input` (`path` names it in errors).
pub fn read_jsonl_from(input: impl BufRead, path: &Path) -> Result<LogContents, LogError> {
    let mut out = LogContents::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| LogError::Io {
            path: path.into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| Event::from_json(&v));
        match parsed {
            Ok(e) => out.events.push(e),
            Err(what) => {
                out.damage = Some(LogError::BadJson {
                    path: path.into(),
                    line: i + 1,
                    what,
                });
                break;
            }
        }
    }
    Ok(out)
}

/// The event logs in a folder (`*.nbev` and `*.jsonl`), in name order.
fn logs_in(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| LogError::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == record::EXTENSION || x == "jsonl")
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads one log file (binary, or JSON Lines when it does not start with the magic) or every
/// log in a folder (`*.nbev` and `*.jsonl`, in name order); a run directory's logs are in its
/// `events/` folder. A folder with no logs is an error that says where it looked. Events are
/// sorted by call time.
pub fn read_events(path: &Path) -> Result<LogContents, LogError> {
    let mut out = LogContents::default();
    let files = if path.is_dir() {
        let mut files = logs_in(path)?;
        let events = path.join("events");
        if files.is_empty() && events.is_dir() {
            files = logs_in(&events)?;
        }
        if files.is_empty() {
            return Err(LogError::NoLogs { path: path.into() });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let mut magic = [0u8; 8];
        let is_binary = fs::File::open(&file)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map(|_| magic == MAGIC)
            .unwrap_or(false);
        let part = if is_binary || file.extension().is_some_and(|x| x == record::EXTENSION) {
            read_binary_log(&file)?
        } else {
            read_jsonl(&file)?
        };
        if out.events.is_empty() {
            out.events = part.events;
        } else {
            out.events.extend(part.events);
        }
        if out.damage.is_none() {
            out.damage = part.damage;
        }
        out.lost.extend(part.lost);
    }
    out.events = recorded_once(std::mem::take(&mut out.events));
    out.events.sort_by_key(|e| (e.t_call_ns, e.pid, e.tid));
    Ok(out)
}

/// The events without the eBPF recorder's copies of sockets the interposer recorded too (a
/// process both can see: the interposer's record is the richer one, with test names and the
/// first of a chain of waits). A socket is the same when its process and fd are and the two
/// records' lifetimes (first to last event, 100 µs of slack for the two clocks) overlap: one
/// process cannot have two sockets on one fd at once. Sockets only the eBPF recorder saw (a
/// process that makes some system calls itself, as Go with cgo does) stay.
fn recorded_once(events: Vec<Event>) -> Vec<Event> {
    const SLACK_NS: i64 = 100_000;
    if !events.iter().any(|e| e.recorder == Recorder::Ebpf) {
        return events;
    }
    // Per (recorder, pid, stream): its fd and first and last event times.
    let mut lifetimes: HashMap<(Recorder, u32, u64), (i32, i64, i64)> = HashMap::new();
    for e in events.iter().filter(|e| e.kind != Kind::Mark) {
        let life = lifetimes.entry((e.recorder, e.pid, e.stream)).or_insert((
            e.fd,
            e.t_call_ns,
            e.t_return_ns,
        ));
        life.1 = life.1.min(e.t_call_ns);
        life.2 = life.2.max(e.t_return_ns);
    }
    let mut interposed: HashMap<(u32, i32), Vec<(i64, i64)>> = HashMap::new();
    for (&(recorder, pid, _), &(fd, first, last)) in &lifetimes {
        if recorder == Recorder::Interposer {
            interposed.entry((pid, fd)).or_default().push((first, last));
        }
    }
    let twice: std::collections::HashSet<(u32, u64)> = lifetimes
        .iter()
        .filter(|(&(recorder, pid, _), &(fd, first, last))| {
            recorder == Recorder::Ebpf
                && interposed.get(&(pid, fd)).is_some_and(|spans| {
                    spans
                        .iter()
                        .any(|&(f, l)| f <= last + SLACK_NS && first <= l + SLACK_NS)
                })
        })
        .map(|(&(_, pid, stream), _)| (pid, stream))
        .collect();
    if twice.is_empty() {
        return events;
    }
    events
        .into_iter()
        .filter(|e| e.recorder != Recorder::Ebpf || !twice.contains(&(e.pid, e.stream)))
        .collect()
}
