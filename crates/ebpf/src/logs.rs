//! From the BPF program's events to event logs: one log per process and exec (as the
//! interposer writes them), stream numbers per socket, times on the capture's clock.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use netblame_instrument::record::{flags, Call, Kind, RawRecord, Recorder};
use netblame_instrument::LogFile;

/// Size of `struct nb_event` and of `struct nb_socket` (bpf/recorder.bpf.c): with the ring's
/// 8-byte header, one cache line a record.
pub const EVENT_SIZE: usize = 56;
/// Where both put their kind.
const KIND_AT: usize = 53;

/// The BPF program's process events (not in the log format).
const KIND_FORK: u8 = 100;
const KIND_EXEC: u8 = 101;
const KIND_EXIT: u8 = 102;
/// A socket's addresses (`struct nb_socket`), before the first call of a process on it.
const KIND_SOCKET: u8 = 103;

const FLAG_SEQ: u8 = 0x01;
const FLAG_PEEK: u8 = 0x02;
const FLAG_NONBLOCKING: u8 = 0x04;
const FLAG_TCP: u8 = 0x08;

/// Stream numbers of this recorder start here, so that they never meet the interposer's in a
/// process both recorded (a stream id is the pid and this number).
const FIRST_STREAM: u32 = 1 << 31;

/// One `struct nb_event`, parsed: a call, or a process's fork, exec or exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelEvent {
    /// CLOCK_MONOTONIC, ns.
    pub t_call: u64,
    pub t_return: u64,
    /// The socket's inode number.
    pub sock: u64,
    /// Bytes moved (a wait: sockets reported), or -errno.
    pub result: i64,
    pub requested: u32,
    pub tgid: u32,
    /// The thread; for a fork, the parent process.
    pub tid: u32,
    pub fd: i32,
    pub seq: u32,
    pub call: u8,
    pub kind: u8,
    pub flags: u8,
    pub ready: u8,
}

/// One `struct nb_socket`: the addresses of a socket a process is about to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSocket {
    pub sock: u64,
    pub tgid: u32,
    pub tcp: bool,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// One ring buffer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRecord {
    Event(KernelEvent),
    Socket(KernelSocket),
}

impl KernelRecord {
    /// Parses one ring buffer record; `None` when it is not `EVENT_SIZE` bytes.
    pub fn parse(b: &[u8]) -> Option<KernelRecord> {
        let b: &[u8; EVENT_SIZE] = b.try_into().ok()?;
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        if b[KIND_AT] == KIND_SOCKET {
            let addr = |at: usize, port: u16| -> Option<SocketAddr> {
                let ip = match b[48] {
                    4 => IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])),
                    6 => IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(&b[at..at + 16]).expect("16 bytes"),
                    )),
                    _ => return None,
                };
                Some(SocketAddr::new(ip, port))
            };
            return Some(KernelRecord::Socket(KernelSocket {
                sock: u64_at(0),
                tgid: u32_at(40),
                tcp: b[49] & FLAG_TCP != 0,
                local: addr(8, u16_at(44)),
                peer: addr(24, u16_at(46)),
            }));
        }
        Some(KernelRecord::Event(KernelEvent {
            t_call: u64_at(0),
            t_return: u64_at(8),
            sock: u64_at(16),
            result: u64_at(24) as i64,
            requested: u32_at(32),
            tgid: u32_at(36),
            tid: u32_at(40),
            fd: u32_at(44) as i32,
            seq: u32_at(48),
            call: b[52],
            kind: b[KIND_AT],
            flags: b[54],
            ready: b[55],
        }))
    }

    /// The record's bytes as the BPF program lays them out (for tests).
    pub fn to_bytes(&self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        match self {
            KernelRecord::Event(e) => {
                b[0..8].copy_from_slice(&e.t_call.to_ne_bytes());
                b[8..16].copy_from_slice(&e.t_return.to_ne_bytes());
                b[16..24].copy_from_slice(&e.sock.to_ne_bytes());
                b[24..32].copy_from_slice(&e.result.to_ne_bytes());
                b[32..36].copy_from_slice(&e.requested.to_ne_bytes());
                b[36..40].copy_from_slice(&e.tgid.to_ne_bytes());
                b[40..44].copy_from_slice(&e.tid.to_ne_bytes());
                b[44..48].copy_from_slice(&e.fd.to_ne_bytes());
                b[48..52].copy_from_slice(&e.seq.to_ne_bytes());
                b[52] = e.call;
                b[KIND_AT] = e.kind;
                b[54] = e.flags;
                b[55] = e.ready;
            }
            KernelRecord::Socket(s) => {
                b[0..8].copy_from_slice(&s.sock.to_ne_bytes());
                b[40..44].copy_from_slice(&s.tgid.to_ne_bytes());
                let mut put = |at: usize, port_at: usize, a: Option<SocketAddr>| {
                    let Some(a) = a else { return 0 };
                    b[port_at..port_at + 2].copy_from_slice(&a.port().to_ne_bytes());
                    match a.ip() {
                        IpAddr::V4(ip) => {
                            b[at..at + 4].copy_from_slice(&ip.octets());
                            4
                        }
                        IpAddr::V6(ip) => {
                            b[at..at + 16].copy_from_slice(&ip.octets());
                            6
                        }
                    }
                };
                let family = put(8, 44, s.local).max(put(24, 46, s.peer));
                b[48] = family;
                b[49] = if s.tcp { FLAG_TCP } else { 0 };
                b[KIND_AT] = KIND_SOCKET;
            }
        }
        b
    }
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, read once when recording starts: BPF stamps with the
/// monotonic clock, libpcap and the interposer with the realtime one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockOffset(pub i64);

impl ClockOffset {
    /// The offset now: of a few readings, the one taken between the closest pair of monotonic
    /// readings.
    pub fn now() -> ClockOffset {
        use nix::time::{clock_gettime, ClockId};
        let ns = |id| clock_gettime(id).map_or(0, |t| t.tv_sec() * 1_000_000_000 + t.tv_nsec());
        let mut best = (i64::MAX, 0);
        for _ in 0..5 {
            let before = ns(ClockId::CLOCK_MONOTONIC);
            let real = ns(ClockId::CLOCK_REALTIME);
            let after = ns(ClockId::CLOCK_MONOTONIC);
            if after - before < best.0 {
                best = (after - before, real - before - (after - before) / 2);
            }
        }
        ClockOffset(best.1)
    }

    fn realtime(self, monotonic: u64) -> i64 {
        monotonic as i64 + self.0
    }
}

/// A socket of a process, as its log knows it.
#[derive(Debug, Clone, Copy)]
struct Socket {
    /// The socket's inode number.
    sock: u64,
    stream: u32,
    /// Bytes sent and received so far (the offsets of UDP calls; TCP ones carry the sequence).
    sent: u64,
    received: u64,
}

#[derive(Debug)]
struct ProcessLog {
    log: LogFile,
    records: u64,
    sockets: HashMap<i32, Socket>,
    next_stream: u32,
}

/// What the recorder wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Socket calls recorded.
    pub calls: u64,
    /// Processes with at least one recorded call.
    pub processes: Vec<u32>,
    /// Calls the ring buffer could not hold, all processes together.
    pub lost: u64,
    /// Logs written.
    pub logs: Vec<PathBuf>,
}

/// The logs being written.
#[derive(Debug)]
pub struct Logs {
    dir: PathBuf,
    clock: ClockOffset,
    open: HashMap<u32, ProcessLog>,
    /// The last log of each process (for its lost calls) and what was written.
    last_log: HashMap<u32, PathBuf>,
    /// Per process, the addresses of the sockets the BPF program named (kept across an exec,
    /// whose process keeps its sockets and which the program does not name again).
    named: HashMap<u32, HashMap<u64, KernelSocket>>,
    summary: RecordSummary,
    malformed: u64,
    error: Option<io::Error>,
}

impl Logs {
    pub fn new(dir: &Path, clock: ClockOffset) -> Logs {
        Logs {
            dir: dir.to_path_buf(),
            clock,
            open: HashMap::new(),
            last_log: HashMap::new(),
            named: HashMap::new(),
            summary: RecordSummary::default(),
            malformed: 0,
            error: None,
        }
    }

    /// The first write error, if any (events after it are still handled: their logs may be
    /// writable).
    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// One ring buffer record.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        let result = match KernelRecord::parse(data) {
            None => {
                self.malformed += 1;
                return;
            }
            Some(KernelRecord::Socket(s)) => {
                self.handle_socket(&s);
                Ok(())
            }
            Some(KernelRecord::Event(e)) => self.handle(&e),
        };
        if let Err(err) = result {
            self.error.get_or_insert(err);
        }
    }

    /// A socket record (`handle_bytes` takes them from the ring).
    pub fn handle_socket(&mut self, s: &KernelSocket) {
        self.named.entry(s.tgid).or_default().insert(s.sock, *s);
    }

    fn start_log(&mut self, pid: u32, start_ns: i64) -> io::Result<()> {
        self.end_log(pid)?;
        let log = LogFile::create(&self.dir, pid, start_ns, "-bpf", Recorder::Ebpf)?;
        self.open.insert(
            pid,
            ProcessLog {
                log,
                records: 0,
                sockets: HashMap::new(),
                next_stream: FIRST_STREAM,
            },
        );
        Ok(())
    }

    /// Finishes a process's log; one without a call is removed.
    fn end_log(&mut self, pid: u32) -> io::Result<()> {
        let Some(p) = self.open.remove(&pid) else {
            return Ok(());
        };
        let path = p.log.path().to_path_buf();
        p.log.finish(None)?;
        if p.records == 0 {
            std::fs::remove_file(&path)?;
        } else {
            self.summary.logs.push(path.clone());
            self.last_log.insert(pid, path);
        }
        Ok(())
    }

    /// Handles one event.
    pub fn handle(&mut self, e: &KernelEvent) -> io::Result<()> {
        let t = self.clock.realtime(e.t_call);
        match e.kind {
            KIND_FORK | KIND_EXEC => return self.start_log(e.tgid, t),
            KIND_EXIT => {
                self.named.remove(&e.tgid);
                return self.end_log(e.tgid);
            }
            _ => {}
        }
        // Clock points are the interposer's (its TSC stamps); the kernel's are realtime already.
        let Some(kind) = Kind::from_u8(e.kind).filter(|&k| k != Kind::Clock) else {
            self.malformed += 1;
            return Ok(());
        };
        if !self.open.contains_key(&e.tgid) {
            // A process followed since before its fork was seen (`--pid`).
            self.start_log(e.tgid, t)?;
        }
        let clock = self.clock;
        let p = self.open.get_mut(&e.tgid).expect("just opened");
        let mut r = RawRecord::new(kind);
        r.call = Call::from_u16(u16::from(e.call));
        r.pid = e.tgid;
        r.tid = e.tid;
        r.fd = e.fd;
        r.t_call_ns = t;
        r.t_return_ns = clock.realtime(e.t_return).max(t);
        r.requested = u64::from(e.requested);
        (r.result, r.errno) = if e.result < 0 {
            (-1, i32::try_from(-e.result).unwrap_or(i32::MAX))
        } else {
            (e.result, 0)
        };
        r.ready = e.ready;
        if e.flags & FLAG_NONBLOCKING != 0 {
            r.flags |= flags::NONBLOCKING;
        }
        if e.flags & FLAG_TCP != 0 {
            r.flags |= flags::TCP;
        }
        let opening = kind == Kind::Open;
        let known = p.sockets.get(&e.fd).filter(|s| s.sock == e.sock).copied();
        let socket = match (opening, known) {
            (false, Some(s)) => s,
            (false, None) if kind == Kind::Close => return Ok(()),
            _ => {
                let named = self.named.get(&e.tgid).and_then(|n| n.get(&e.sock));
                let s = Socket {
                    sock: e.sock,
                    stream: p.next_stream,
                    sent: 0,
                    received: 0,
                };
                p.next_stream = p.next_stream.wrapping_add(1).max(FIRST_STREAM);
                p.sockets.insert(e.fd, s);
                let mut open = RawRecord::new(Kind::Open);
                open.call = if opening { r.call } else { Call::Unknown };
                open.pid = e.tgid;
                open.tid = e.tid;
                open.fd = e.fd;
                open.stream = u64::from(s.stream);
                open.t_call_ns = r.t_call_ns;
                open.t_return_ns = r.t_return_ns;
                open.flags = r.flags & (flags::TCP | flags::NONBLOCKING);
                if named.is_some_and(|n| n.tcp) {
                    open.flags |= flags::TCP;
                }
                if opening {
                    open.result = r.result;
                    open.errno = r.errno;
                }
                let (local, peer) = named.map_or((None, None), |n| (n.local, n.peer));
                open.addrs = Some((
                    local.unwrap_or(unspecified(peer)),
                    peer.unwrap_or(unspecified(local)),
                ));
                p.log.append(&open)?;
                p.records += 1;
                if opening {
                    self.summary.calls += 1;
                    self.note_process(e.tgid);
                    return Ok(());
                }
                s
            }
        };
        r.stream = u64::from(socket.stream);
        let peek = e.flags & FLAG_PEEK != 0;
        if peek {
            r.flags |= flags::PEEK;
        }
        if matches!(kind, Kind::Recv | Kind::Send) {
            if e.flags & FLAG_SEQ != 0 {
                r.flags |= flags::KERNEL_SEQ;
                r.offset = u64::from(e.seq);
            } else {
                r.offset = if kind == Kind::Send {
                    socket.sent
                } else {
                    socket.received
                };
            }
            let moved = u64::try_from(e.result).unwrap_or(0);
            if let Some(s) = p.sockets.get_mut(&e.fd) {
                match kind {
                    Kind::Send => s.sent += moved,
                    _ if !peek => s.received += moved,
                    _ => {}
                }
            }
        }
        if kind == Kind::Close {
            p.sockets.remove(&e.fd);
        }
        p.log.append(&r)?;
        p.records += 1;
        self.summary.calls += 1;
        self.note_process(e.tgid);
        Ok(())
    }

    fn note_process(&mut self, pid: u32) {
        if let Err(at) = self.summary.processes.binary_search(&pid) {
            self.summary.processes.insert(at, pid);
        }
    }

    /// Finishes every log; `lost` = (process, CLOCK_MONOTONIC of its first lost call, calls).
    pub fn finish(mut self, lost: &[(u32, u64, u64)]) -> io::Result<RecordSummary> {
        let pids: Vec<u32> = self.open.keys().copied().collect();
        for pid in pids {
            if let Err(e) = self.end_log(pid) {
                self.error.get_or_insert(e);
            }
        }
        self.take_error()?;
        for &(pid, first, calls) in lost {
            self.summary.lost += calls;
            let from = self.clock.realtime(first);
            let path = match self.last_log.get(&pid) {
                Some(p) => p.clone(),
                None => {
                    // Every call of the process was lost: a log that says so.
                    let log = LogFile::create(&self.dir, pid, from, "-bpf", Recorder::Ebpf)?;
                    let path = log.path().to_path_buf();
                    log.finish(None)?;
                    self.summary.logs.push(path.clone());
                    path
                }
            };
            netblame_instrument::writer::mark_lost(&path, from, calls)?;
        }
        Ok(self.summary)
    }
}

/// The unspecified address of `other`'s family (a socket not yet bound or connected).
fn unspecified(other: Option<SocketAddr>) -> SocketAddr {
    match other {
        Some(SocketAddr::V6(_)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    }
}

// The BPF program's kinds are the log's (bpf/recorder.bpf.c, KIND_*).
const _: () = assert!(Kind::Open as u8 == 1 && Kind::Recv as u8 == 2 && Kind::Wait as u8 == 8);
