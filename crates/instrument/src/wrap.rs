//! Recording wrappers around `std::net::TcpStream` and `UdpSocket`: use them where a `Read` or
//! `Write` is expected and every call lands in an [`EventLog`], in the same format the
//! interposer writes.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::record::{flags, Call, Kind, RawRecord};
use crate::writer::{realtime_ns, EventLog};

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// The kernel thread id of the calling thread (read once per thread from /proc).
pub fn current_tid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse().ok())
                })
                .unwrap_or(0);
            t.set(tid);
        }
        t.get()
    })
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// What a wrapper shares with its log: identity of the socket and its stream offsets.
#[derive(Debug)]
struct Recorder {
    log: Arc<EventLog>,
    fd: i32,
    stream: u64,
    tcp: bool,
    read_offset: u64,
    write_offset: u64,
    test: Option<String>,
}

impl Recorder {
    fn open(
        log: Arc<EventLog>,
        fd: i32,
        tcp: bool,
        local: SocketAddr,
        peer: SocketAddr,
        call: Call,
    ) -> Self {
        let stream = (u64::from(log.pid()) << 32) | NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let test = std::env::var("NETBLAME_TAG").ok();
        let rec = Recorder {
            log,
            fd,
            stream,
            tcp,
            read_offset: 0,
            write_offset: 0,
            test,
        };
        let mut r = rec.base(Kind::Open, call);
        r.addrs = Some((local, peer));
        let now = realtime_ns();
        (r.t_call_ns, r.t_return_ns) = (now, now);
        rec.write(&r);
        rec
    }

    fn base(&self, kind: Kind, call: Call) -> RawRecord {
        let mut r = RawRecord::new(kind);
        r.call = call;
        r.pid = self.log.pid();
        r.tid = current_tid();
        r.fd = self.fd;
        r.stream = self.stream;
        r.flags = if self.tcp { flags::TCP } else { 0 };
        r.test_id = self
            .test
            .as_deref()
            .and_then(|t| self.log.intern(t).ok())
            .unwrap_or(0);
        r
    }

    /// Recording never changes the program's result: a failed write to the log is dropped.
    fn write(&self, r: &RawRecord) {
        let _ = self.log.append(r);
    }

    fn io<T>(
        &mut self,
        kind: Kind,
        call: Call,
        requested: usize,
        f: impl FnOnce() -> io::Result<T>,
        n: impl Fn(&T) -> usize,
    ) -> io::Result<T> {
        let t_call = realtime_ns();
        let result = f();
        let t_return = realtime_ns();
        let mut r = self.base(kind, call);
        r.t_call_ns = t_call;
        r.t_return_ns = t_return;
        r.requested = requested as u64;
        let offset = if kind == Kind::Recv {
            &mut self.read_offset
        } else {
            &mut self.write_offset
        };
        r.offset = *offset;
        match &result {
            Ok(v) => {
                r.result = n(v) as i64;
                if self.tcp {
                    *offset += n(v) as u64;
                }
            }
            Err(e) => {
                r.result = -1;
                r.errno = e.raw_os_error().unwrap_or(0);
            }
        }
        self.write(&r);
        result
    }

    fn close(&self) {
        let mut r = self.base(Kind::Close, Call::Close);
        let now = realtime_ns();
        (r.t_call_ns, r.t_return_ns) = (now, now);
        self.write(&r);
    }
}

/// A `TcpStream` whose reads and writes are recorded.
#[derive(Debug)]
pub struct RecordedTcpStream {
    inner: TcpStream,
    rec: Recorder,
}

impl RecordedTcpStream {
    /// Connects and records the connection.
    pub fn connect(addr: impl ToSocketAddrs, log: Arc<EventLog>) -> io::Result<Self> {
        Self::from_stream(TcpStream::connect(addr)?, log, Call::Connect)
    }

    /// Wraps an established stream (for example one returned by `TcpListener::accept`).
    pub fn from_stream(inner: TcpStream, log: Arc<EventLog>, call: Call) -> io::Result<Self> {
        let (local, peer) = (inner.local_addr()?, inner.peer_addr()?);
        let rec = Recorder::open(log, inner.as_raw_fd(), true, local, peer, call);
        Ok(RecordedTcpStream { inner, rec })
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// Attributes the following calls to `tag` (as `NETBLAME_TAG` does for the interposer).
    pub fn set_tag(&mut self, tag: Option<&str>) {
        self.rec.test = tag.map(str::to_string);
    }
}

impl Read for RecordedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.rec.io(
            Kind::Recv,
            Call::Read,
            buf.len(),
            || inner.read(buf),
            |n| *n,
        )
    }
}

impl Write for RecordedTcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.rec.io(
            Kind::Send,
            Call::Write,
            buf.len(),
            || inner.write(buf),
            |n| *n,
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for RecordedTcpStream {
    fn drop(&mut self) {
        self.rec.close();
    }
}

/// A connected `UdpSocket` whose datagrams are recorded.
#[derive(Debug)]
pub struct RecordedUdpSocket {
    inner: UdpSocket,
    rec: Recorder,
}

impl RecordedUdpSocket {
    /// Wraps a socket already `connect`ed to its peer.
    pub fn from_connected(inner: UdpSocket, log: Arc<EventLog>) -> io::Result<Self> {
        let (local, peer) = (inner.local_addr()?, inner.peer_addr()?);
        let rec = Recorder::open(log, inner.as_raw_fd(), false, local, peer, Call::Connect);
        Ok(RecordedUdpSocket { inner, rec })
    }

    pub fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &self.inner;
        self.rec.io(
            Kind::Send,
            Call::Send,
            buf.len(),
            || inner.send(buf),
            |n| *n,
        )
    }

    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &self.inner;
        self.rec.io(
            Kind::Recv,
            Call::Recv,
            buf.len(),
            || inner.recv(buf),
            |n| *n,
        )
    }
}

impl Drop for RecordedUdpSocket {
    fn drop(&mut self) {
        self.rec.close();
    }
}
