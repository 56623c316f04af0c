//! The binary event log format: a 64-byte file header, then fixed-size 64-byte little-endian
//! records (an open event takes two: the second carries the peer address). See docs/events.md
//! for the layout. Records are small because the interposer writes two per round trip into
//! fresh pages of a shared mapping, and on a VM a first-touched page costs microseconds.
//!
//! A record is committed when its first byte (the kind) is non-zero: writers fill bytes 1..128
//! first and store the kind last, so a record torn by a crash reads as a hole, never as garbage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// File magic: the first 8 bytes of every event log.
pub const MAGIC: [u8; 8] = *b"NBEVENTS";
/// Format version this crate writes. 3 added the header's `HEADER_CLOCK` and `Clock` records.
pub const VERSION: u16 = 3;
/// The oldest version this crate reads (2: stamps are always realtime ns).
pub const OLDEST_VERSION: u16 = 2;
/// Size of the file header.
pub const HEADER_SIZE: usize = 64;
/// Size of every record.
pub const RECORD_SIZE: usize = 64;
/// File name extension of event logs.
pub const EXTENSION: &str = "nbev";

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A socket became known: connect, accept, accept4.
    Open = 1,
    /// A read returned (recv, recvfrom, recvmsg, recvmmsg, read, readv).
    Recv = 2,
    /// A write returned (send, sendto, sendmsg, sendmmsg, write, writev, sendfile).
    Send = 3,
    /// The socket was closed.
    Close = 4,
    /// A mark: a test boundary or a user tag.
    Mark = 5,
    /// A chunk of an interned string (test ids, mark labels).
    Str = 6,
    /// The second record of an open event: the peer address.
    OpenPeer = 7,
    /// A readiness wait (poll, select, epoll_wait, ...) that reported this socket ready.
    Wait = 8,
    /// A clock point of a log stamped in TSC ticks (`HEADER_CLOCK`): `t_call_ns` holds the
    /// ticks, `t_return_ns` the CLOCK_REALTIME ns read at the same moment.
    Clock = 9,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Open,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Close,
            5 => Kind::Mark,
            6 => Kind::Str,
            7 => Kind::OpenPeer,
            8 => Kind::Wait,
            9 => Kind::Clock,
            _ => return None,
        })
    }

    /// The name used in JSON Lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Recv => "recv",
            Kind::Send => "send",
            Kind::Close => "close",
            Kind::Mark => "mark",
            Kind::Str => "str",
            Kind::OpenPeer => "open-peer",
            Kind::Wait => "wait",
            Kind::Clock => "clock",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Open,
            Kind::Recv,
            Kind::Send,
            Kind::Close,
            Kind::Mark,
            Kind::Wait,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Which function the program called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Call {
    Unknown = 0,
    Recv = 1,
    Recvfrom = 2,
    Recvmsg = 3,
    Recvmmsg = 4,
    Read = 5,
    Readv = 6,
    Send = 7,
    Sendto = 8,
    Sendmsg = 9,
    Sendmmsg = 10,
    Write = 11,
    Writev = 12,
    Sendfile = 13,
    Connect = 14,
    Accept = 15,
    Accept4 = 16,
    Close = 17,
    Mark = 18,
    Poll = 19,
    Ppoll = 20,
    Select = 21,
    Pselect = 22,
    EpollWait = 23,
    EpollPwait = 24,
    EpollPwait2 = 25,
}

impl Call {
    const ALL: [Call; 26] = [
        Call::Unknown,
        Call::Recv,
        Call::Recvfrom,
        Call::Recvmsg,
        Call::Recvmmsg,
        Call::Read,
        Call::Readv,
        Call::Send,
        Call::Sendto,
        Call::Sendmsg,
        Call::Sendmmsg,
        Call::Write,
        Call::Writev,
        Call::Sendfile,
        Call::Connect,
        Call::Accept,
        Call::Accept4,
        Call::Close,
        Call::Mark,
        Call::Poll,
        Call::Ppoll,
        Call::Select,
        Call::Pselect,
        Call::EpollWait,
        Call::EpollPwait,
        Call::EpollPwait2,
    ];

    pub fn from_u16(v: u16) -> Call {
        Call::ALL.get(v as usize).copied().unwrap_or(Call::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Call::Unknown => "unknown",
            Call::Recv => "recv",
            Call::Recvfrom => "recvfrom",
            Call::Recvmsg => "recvmsg",
            Call::Recvmmsg => "recvmmsg",
            Call::Read => "read",
            Call::Readv => "readv",
            Call::Send => "send",
            Call::Sendto => "sendto",
            Call::Sendmsg => "sendmsg",
            Call::Sendmmsg => "sendmmsg",
            Call::Write => "write",
            Call::Writev => "writev",
            Call::Sendfile => "sendfile",
            Call::Connect => "connect",
            Call::Accept => "accept",
            Call::Accept4 => "accept4",
            Call::Close => "close",
            Call::Mark => "mark",
            Call::Poll => "poll",
            Call::Ppoll => "ppoll",
            Call::Select => "select",
            Call::Pselect => "pselect",
            Call::EpollWait => "epoll_wait",
            Call::EpollPwait => "epoll_pwait",
            Call::EpollPwait2 => "epoll_pwait2",
        }
    }

    pub fn parse(s: &str) -> Call {
        Call::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or(Call::Unknown)
    }
}

/// Flag bits of a record.
pub mod flags {
    /// MSG_PEEK: the read did not consume the bytes (the offset did not advance).
    pub const PEEK: u8 = 0x01;
    /// The socket was non-blocking (O_NONBLOCK or MSG_DONTWAIT).
    pub const NONBLOCKING: u8 = 0x02;
    /// TCP (else UDP).
    pub const TCP: u8 = 0x04;
    /// The offset field holds the TCP sequence number of the first byte moved, as the kernel's
    /// socket had it (the eBPF recorder), not a count of the bytes moved before.
    pub const KERNEL_SEQ: u8 = 0x08;
}

/// Which recorder wrote a log (header byte `HEADER_RECORDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Recorder {
    /// The LD_PRELOAD interposer, or the Rust wrappers (or a hand-written log).
    #[default]
    Interposer = 0,
    /// The eBPF recorder (`netblame-ebpf`): kernel tracepoints, for programs the interposer
    /// cannot reach.
    Ebpf = 1,
}

impl Recorder {
    pub fn from_u8(v: u8) -> Recorder {
        match v {
            1 => Recorder::Ebpf,
            _ => Recorder::Interposer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Recorder::Interposer => "interposer",
            Recorder::Ebpf => "ebpf",
        }
    }
}

/// What a readiness wait reported of a socket (a `Wait` record's byte 3).
pub mod ready {
    /// Data to read (POLLIN, EPOLLIN, in the read set).
    pub const READABLE: u8 = 0x01;
    /// Room to write (POLLOUT, EPOLLOUT, in the write set).
    pub const WRITABLE: u8 = 0x02;
    /// The peer hung up (POLLHUP, POLLRDHUP, EPOLLHUP, EPOLLRDHUP): a read returns at once.
    pub const HANGUP: u8 = 0x04;
    /// An error is pending (POLLERR, EPOLLERR, in the except set).
    pub const ERROR: u8 = 0x08;
    /// The names of the bits, in order, as JSON Lines writes them.
    pub const NAMES: [(u8, &str); 4] = [
        (READABLE, "read"),
        (WRITABLE, "write"),
        (HANGUP, "hangup"),
        (ERROR, "error"),
    ];
}

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A decoded record. String ids are resolved by the reader into `test` and `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub kind: Kind,
    pub flags: u8,
    pub call: Call,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub t_call_ns: i64,
    pub t_return_ns: i64,
    /// Bytes the program asked for (read) or handed over (write).
    pub requested: u64,
    /// Bytes returned, or -1 on error.
    pub result: i64,
    pub errno: i32,
    /// Id of the interned test string current at the call (0: none).
    pub test_id: u32,
    /// TCP stream offset of the first byte moved (bytes this socket moved before, this way).
    pub offset: u64,
    /// Distinguishes successive connections on the same fd number in one process.
    pub stream: u64,
    /// Open: (local, peer) addresses and protocol.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Mark: id of the label string. Str: chunk bytes follow in `chunk`.
    pub label_id: u32,
    /// Str: this chunk of the string.
    pub chunk: Vec<u8>,
    /// Wait: what the wait reported of the socket (`ready` bits).
    pub ready: u8,
}

impl RawRecord {
    /// A record of `kind` with every other field zero.
    pub fn new(kind: Kind) -> Self {
        RawRecord {
            kind,
            flags: 0,
            call: Call::Unknown,
            pid: 0,
            tid: 0,
            fd: -1,
            t_call_ns: 0,
            t_return_ns: 0,
            requested: 0,
            result: 0,
            errno: 0,
            test_id: 0,
            offset: 0,
            stream: 0,
            addrs: None,
            label_id: 0,
            chunk: Vec::new(),
            ready: 0,
        }
    }
}

/// Bytes of string data one `Str` record carries.
pub const STR_CHUNK: usize = RECORD_SIZE - 17;

fn put_addr(b: &mut [u8; RECORD_SIZE], a: SocketAddr) {
    b[32] = if a.is_ipv6() { 6 } else { 4 };
    b[34..36].copy_from_slice(&a.port().to_le_bytes());
    match a.ip() {
        IpAddr::V4(ip) => b[36..40].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => b[36..52].copy_from_slice(&ip.octets()),
    }
}

fn get_addr(b: &[u8; RECORD_SIZE]) -> Option<SocketAddr> {
    let port = u16::from_le_bytes([b[34], b[35]]);
    let ip = match b[32] {
        4 => IpAddr::V4(Ipv4Addr::new(b[36], b[37], b[38], b[39])),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[36..52]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes a record into one 64-byte slot, or two for an open event with addresses (the second
/// is a `OpenPeer` record). Writers that share memory with readers copy bytes 1.. first and
/// store byte 0 (the kind) last.
pub fn encode(r: &RawRecord) -> ([u8; RECORD_SIZE], Option<[u8; RECORD_SIZE]>) {
    let mut b = [0u8; RECORD_SIZE];
    b[0] = r.kind as u8;
    if r.kind == Kind::Str {
        let n = r.chunk.len().min(STR_CHUNK);
        b[4..8].copy_from_slice(&r.test_id.to_le_bytes());
        b[8..12].copy_from_slice(&(r.offset as u32).to_le_bytes());
        b[12..16].copy_from_slice(&(r.result as u32).to_le_bytes());
        b[16] = n as u8;
        b[17..17 + n].copy_from_slice(&r.chunk[..n]);
        return (b, None);
    }
    b[1] = r.flags;
    b[2] = r.call as u8;
    b[3] = r.ready;
    b[4..8].copy_from_slice(&r.tid.to_le_bytes());
    b[8..12].copy_from_slice(&r.fd.to_le_bytes());
    b[12..16].copy_from_slice(&(r.stream as u32).to_le_bytes());
    b[16..24].copy_from_slice(&r.t_call_ns.to_le_bytes());
    b[24..32].copy_from_slice(&r.t_return_ns.to_le_bytes());
    b[56..60].copy_from_slice(&r.errno.to_le_bytes());
    b[60..64].copy_from_slice(&r.test_id.to_le_bytes());
    match (r.kind, r.addrs) {
        (Kind::Open, Some((local, peer))) => {
            let mut second = b;
            second[0] = Kind::OpenPeer as u8;
            put_addr(&mut b, local);
            put_addr(&mut second, peer);
            (b, Some(second))
        }
        (Kind::Mark, _) => {
            b[32..36].copy_from_slice(&r.label_id.to_le_bytes());
            (b, None)
        }
        _ => {
            b[32..40].copy_from_slice(&r.result.to_le_bytes());
            b[40..48].copy_from_slice(&r.requested.to_le_bytes());
            b[48..56].copy_from_slice(&r.offset.to_le_bytes());
            (b, None)
        }
    }
}

/// A record of a socket call (every kind but `Open`, `OpenPeer`, `Mark` and `Str`) as it lies
/// in the log: on a little-endian machine the bytes of this `repr(C)` struct, which has no
/// padding, are its encoding (`to_bytes`, equal to `encode` of the same call; a test keeps them
/// so). The interposer fills one in place for every call it records, with no `RawRecord` made
/// and no encoding step.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallSlot {
    pub kind: u8,
    pub flags: u8,
    pub call: u8,
    pub ready: u8,
    pub tid: u32,
    pub fd: i32,
    /// The stream counter (the low half of `RawRecord::stream`; the pid is the header's).
    pub stream: u32,
    pub t_call: i64,
    pub t_return: i64,
    pub result: i64,
    pub requested: u64,
    pub offset: u64,
    pub errno: i32,
    pub test_id: u32,
}

const _: () = assert!(std::mem::size_of::<CallSlot>() == RECORD_SIZE);

impl CallSlot {
    /// The record's encoding, field by field (what the struct's bytes are on little-endian
    /// machines).
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        (b[0], b[1], b[2], b[3]) = (self.kind, self.flags, self.call, self.ready);
        b[4..8].copy_from_slice(&self.tid.to_le_bytes());
        b[8..12].copy_from_slice(&self.fd.to_le_bytes());
        b[12..16].copy_from_slice(&self.stream.to_le_bytes());
        b[16..24].copy_from_slice(&self.t_call.to_le_bytes());
        b[24..32].copy_from_slice(&self.t_return.to_le_bytes());
        b[32..40].copy_from_slice(&self.result.to_le_bytes());
        b[40..48].copy_from_slice(&self.requested.to_le_bytes());
        b[48..56].copy_from_slice(&self.offset.to_le_bytes());
        b[56..60].copy_from_slice(&self.errno.to_le_bytes());
        b[60..64].copy_from_slice(&self.test_id.to_le_bytes());
        b
    }
}

/// Decodes a committed record; `None` when the kind byte is 0 (empty or torn) or unknown. The
/// pid is not stored per record (the file header has it): the caller fills `pid` and the high
/// half of `stream`. For `OpenPeer` records the peer is in `addrs.1` (and `addrs.0` is it too).
pub fn decode(b: &[u8; RECORD_SIZE]) -> Option<RawRecord> {
    let kind = Kind::from_u8(b[0])?;
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut r = RawRecord::new(kind);
    if kind == Kind::Str {
        let n = usize::from(b[16]).min(STR_CHUNK);
        r.test_id = u32_at(4);
        r.offset = u64::from(u32_at(8));
        r.result = i64::from(u32_at(12));
        r.requested = n as u64;
        r.chunk = b[17..17 + n].to_vec();
        return Some(r);
    }
    r.flags = b[1];
    r.call = Call::from_u16(u16::from(b[2]));
    r.ready = b[3];
    r.tid = u32_at(4);
    r.fd = u32_at(8) as i32;
    r.stream = u64::from(u32_at(12));
    r.t_call_ns = u64_at(16) as i64;
    r.t_return_ns = u64_at(24) as i64;
    r.errno = u32_at(56) as i32;
    r.test_id = u32_at(60);
    match kind {
        Kind::Open | Kind::OpenPeer => {
            if let Some(a) = get_addr(b) {
                r.addrs = Some((a, a));
            }
        }
        Kind::Mark => r.label_id = u32_at(32),
        _ => {
            r.result = u64_at(32) as i64;
            r.requested = u64_at(40);
            r.offset = u64_at(48);
        }
    }
    Some(r)
}

/// Header byte range of the CLOCK_REALTIME (ns) of the first call the log could not hold (the
/// disk was full, or the log's capacity was reached); 0 when every call is in it.
pub const HEADER_LOST_FROM: std::ops::Range<usize> = 24..32;
/// Header byte range of how many calls were not recorded after `HEADER_LOST_FROM`.
pub const HEADER_LOST_CALLS: std::ops::Range<usize> = 32..40;

/// Header byte of the recorder that wrote the log (`Recorder`; 0 in logs of older writers).
pub const HEADER_RECORDER: usize = 40;

/// Header byte of the records' stamps (`Stamps`; 0 in logs of older writers).
pub const HEADER_CLOCK: usize = 41;

/// What the stamps of a log's records count (header byte `HEADER_CLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Stamps {
    /// CLOCK_REALTIME nanoseconds.
    #[default]
    Realtime = 0,
    /// TSC ticks, turned into realtime ns by the log's `Clock` records (crate::clock).
    Tsc = 1,
}

impl Stamps {
    /// None for a value this crate does not know.
    pub fn from_u8(v: u8) -> Option<Stamps> {
        match v {
            0 => Some(Stamps::Realtime),
            1 => Some(Stamps::Tsc),
            _ => None,
        }
    }
}

/// Encodes the 64-byte file header of a log the interposer (or a wrapper) writes.
pub fn encode_header(pid: u32, start_ns: i64) -> [u8; HEADER_SIZE] {
    encode_header_by(pid, start_ns, Recorder::Interposer)
}

/// Encodes the 64-byte file header of a log written by `recorder`.
pub fn encode_header_by(pid: u32, start_ns: i64, recorder: Recorder) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[HEADER_RECORDER] = recorder as u8;
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(RECORD_SIZE as u16).to_le_bytes());
    h[12..16].copy_from_slice(&pid.to_le_bytes());
    h[16..24].copy_from_slice(&start_ns.to_le_bytes());
    h
}

/// The records that intern string `id` = `s` (chunk offset in `offset`, chunk length in
/// `requested`, total length in `result`).
pub fn string_records(id: u32, s: &[u8], pid: u32) -> impl Iterator<Item = RawRecord> + '_ {
    let chunks = s.len().div_ceil(STR_CHUNK).max(1);
    (0..chunks).map(move |i| {
        let start = i * STR_CHUNK;
        let end = (start + STR_CHUNK).min(s.len());
        let mut r = RawRecord::new(Kind::Str);
        r.pid = pid;
        r.test_id = id;
        r.offset = start as u64;
        r.requested = (end - start) as u64;
        r.result = s.len() as i64;
        r.chunk = s[start..end].to_vec();
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes then decodes as a reader does: joining an open's two records.
    fn round_trip(r: &RawRecord) -> RawRecord {
        let (first, second) = encode(r);
        let mut d = decode(&first).unwrap();
        if let Some(second) = second {
            let peer = decode(&second).unwrap();
            assert_eq!(peer.kind, Kind::OpenPeer);
            d.addrs = d.addrs.map(|(l, _)| (l, peer.addrs.unwrap().1));
        }
        d.pid = r.pid;
        d.stream = r.stream;
        d
    }

    #[test]
    fn round_trip_open_v6() {
        let mut r = RawRecord::new(Kind::Open);
        r.flags = flags::TCP;
        r.call = Call::Accept4;
        r.pid = 7;
        r.fd = 9;
        r.stream = (7 << 32) | 3;
        r.addrs = Some((
            "[::1]:5000".parse().unwrap(),
            "[2001:db8::2]:40000".parse().unwrap(),
        ));
        assert_eq!(round_trip(&r), r);
    }

    #[test]
    fn round_trip_recv() {
        let mut r = RawRecord::new(Kind::Recv);
        r.call = Call::Recvmsg;
        r.t_call_ns = 1_700_000_000_000_000_001;
        r.t_return_ns = r.t_call_ns + 5;
        r.requested = 4096;
        r.result = -1;
        r.errno = 104;
        r.offset = 1 << 40;
        assert_eq!(round_trip(&r), r);
    }

    #[test]
    fn call_slot_is_the_encoding() {
        let mut r = RawRecord::new(Kind::Wait);
        (r.flags, r.call, r.ready) = (flags::TCP | flags::NONBLOCKING, Call::EpollPwait, 5);
        (r.tid, r.fd, r.stream) = (0x0102_0304, -7, (9 << 32) | 0xa0b0_c0d0);
        (r.t_call_ns, r.t_return_ns) = (-3, i64::MAX);
        (r.result, r.requested, r.offset) = (-1, u64::MAX - 1, 1 << 60);
        (r.errno, r.test_id) = (110, 0xdead_beef);
        let slot = CallSlot {
            kind: Kind::Wait as u8,
            flags: r.flags,
            call: r.call as u8,
            ready: r.ready,
            tid: r.tid,
            fd: r.fd,
            stream: r.stream as u32,
            t_call: r.t_call_ns,
            t_return: r.t_return_ns,
            result: r.result,
            requested: r.requested,
            offset: r.offset,
            errno: r.errno,
            test_id: r.test_id,
        };
        assert_eq!(slot.to_bytes(), encode(&r).0);
    }

    #[test]
    fn uncommitted_record_is_none() {
        let (mut b, _) = encode(&RawRecord::new(Kind::Send));
        b[0] = 0;
        assert_eq!(decode(&b), None);
    }

    #[test]
    fn long_strings_split_into_chunks() {
        let s = vec![b'x'; STR_CHUNK * 2 + 3];
        let recs: Vec<_> = string_records(5, &s, 1).collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].chunk.len(), 3);
        for r in &recs {
            let d = decode(&encode(r).0).unwrap();
            assert_eq!(
                (d.test_id, d.offset, d.result, &d.chunk),
                (r.test_id, r.offset, r.result, &r.chunk)
            );
        }
    }
}
