//! Live capture through libpcap: nanosecond timestamps, immediate mode (a capture stopped
//! inside libpcap's buffer timeout silently loses its last packets otherwise), a large kernel
//! buffer, a BPF filter, and the kernel's drop counters at the end.

use std::error::Error;
use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcap::{Active, Capture, Precision};

use crate::write::PacketSink;

/// What to capture.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Interface name (`lo`, `eth0`, `any`).
    pub iface: String,
    /// BPF filter expression ("" captures everything).
    pub filter: String,
    /// Bytes kept per packet.
    pub snaplen: u32,
    /// Kernel buffer size in bytes.
    pub buffer_bytes: u32,
}

/// Headers only: enough for Linux cooked v2 (20) + IPv6 (40) + extension headers + TCP with
/// options (60), with room to spare; payloads are not kept, for privacy and speed.
pub const DEFAULT_SNAPLEN: u32 = 160;

/// Why a live capture could not start or went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LiveError {
    /// The process lacks CAP_NET_RAW (and CAP_NET_ADMIN).
    PermissionDenied { iface: String, message: String },
    /// No interface of that name.
    NoSuchInterface { iface: String },
    /// libpcap rejected the filter expression.
    BadFilter { filter: String, message: String },
    /// Anything else libpcap reported.
    Pcap { iface: String, message: String },
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::PermissionDenied { iface, message } => {
                write!(f, "no permission to capture on {iface} ({message})")
            }
            LiveError::NoSuchInterface { iface } => {
                write!(f, "no network interface named {iface:?}")
            }
            LiveError::BadFilter { filter, message } => {
                write!(f, "invalid capture filter {filter:?}: {message}")
            }
            LiveError::Pcap { iface, message } => write!(f, "capture on {iface} failed: {message}"),
        }
    }
}

impl Error for LiveError {}

/// Packets seen and lost by a capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets written to the file.
    pub captured: u64,
    /// Packets the kernel received for this capture (libpcap's `ps_recv`).
    pub received: u64,
    /// Packets dropped because the buffer was full (`ps_drop`).
    pub dropped: u64,
    /// Packets dropped by the interface or its driver (`ps_ifdrop`).
    pub if_dropped: u64,
}

impl CaptureStats {
    pub fn drops(&self) -> u64 {
        self.dropped + self.if_dropped
    }
}

fn classify(iface: &str, err: pcap::Error) -> LiveError {
    let message = err.to_string();
    let lower = message.to_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        LiveError::PermissionDenied {
            iface: iface.into(),
            message,
        }
    } else if lower.contains("no such device") {
        LiveError::NoSuchInterface {
            iface: iface.into(),
        }
    } else {
        LiveError::Pcap {
            iface: iface.into(),
            message,
        }
    }
}

/// An open, filtered live capture: packets are being buffered from the moment `open` returns.
pub struct LiveCapture {
    cap: Capture<Active>,
    iface: String,
    link_type: u16,
    captured: u64,
}

impl fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCapture")
            .field("iface", &self.iface)
            .field("link_type", &self.link_type)
            .finish()
    }
}

impl LiveCapture {
    /// Opens the interface and applies the filter. When this returns, the capture is live.
    pub fn open(cfg: &LiveConfig) -> Result<LiveCapture, LiveError> {
        let iface = cfg.iface.as_str();
        let inactive = Capture::from_device(iface).map_err(|e| classify(iface, e))?;
        let mut cap = inactive
            .precision(Precision::Nano)
            .snaplen(cfg.snaplen as i32)
            .immediate_mode(true)
            .buffer_size(cfg.buffer_bytes as i32)
            .timeout(50)
            .open()
            .map_err(|e| classify(iface, e))?
            // Non-blocking, with our own poll: in immediate mode libpcap may ignore the read
            // timeout and block until a packet comes, so a quiet capture could never stop.
            .setnonblock()
            .map_err(|e| classify(iface, e))?;
        if !cfg.filter.is_empty() {
            cap.filter(&cfg.filter, true)
                .map_err(|e| LiveError::BadFilter {
                    filter: cfg.filter.clone(),
                    message: e.to_string(),
                })?;
        }
        close_on_exec(cap.as_raw_fd()).map_err(|e| LiveError::Pcap {
            iface: iface.into(),
            message: format!("cannot make the capture's socket close-on-exec: {e}"),
        })?;
        let link_type = cap.get_datalink().0 as u16;
        Ok(LiveCapture {
            cap,
            iface: iface.into(),
            link_type,
            captured: 0,
        })
    }

    /// The LINKTYPE of the interface.
    pub fn link_type(&self) -> u16 {
        self.link_type
    }

    /// Writes packets to `sink` until `stop` is set or `deadline` passes, then drains what the
    /// kernel still holds and returns the counters.
    pub fn run(
        &mut self,
        sink: &mut dyn PacketSink,
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Result<CaptureStats, LiveError> {
        let mut stopping = false;
        // Written packets reach the file when the capture is idle (at most ten times a second),
        // and at least once a second under load: a run killed with SIGKILL keeps all but its
        // last second.
        const FLUSH_EVERY: Duration = Duration::from_secs(1);
        const FLUSH_IDLE: Duration = Duration::from_millis(100);
        let mut last_flush = Instant::now();
        let mut unflushed: u32 = 0;
        let sink_error = |iface: &str, e: std::io::Error| LiveError::Pcap {
            iface: iface.to_string(),
            message: e.to_string(),
        };
        loop {
            if !stopping
                && (stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d))
            {
                stopping = true;
            }
            match self.cap.next_packet() {
                Ok(p) => {
                    // With nanosecond precision libpcap puts nanoseconds in tv_usec.
                    let ts = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec;
                    sink.write_packet(ts, p.data, p.header.len)
                        .map_err(|e| sink_error(&self.iface, e))?;
                    self.captured += 1;
                    unflushed += 1;
                    // A clock read every 1,024 packets, not every packet.
                    if unflushed % 1024 == 0 && last_flush.elapsed() >= FLUSH_EVERY {
                        sink.flush().map_err(|e| sink_error(&self.iface, e))?;
                        (last_flush, unflushed) = (Instant::now(), 0);
                    }
                }
                // Nothing pending: once stopping, the buffer is drained; else wait for packets.
                Err(pcap::Error::TimeoutExpired) => {
                    if stopping {
                        break;
                    }
                    if unflushed > 0 && last_flush.elapsed() >= FLUSH_IDLE {
                        sink.flush().map_err(|e| sink_error(&self.iface, e))?;
                        (last_flush, unflushed) = (Instant::now(), 0);
                    }
                    self.wait_readable(50);
                }
                Err(e) => return Err(classify(&self.iface, e)),
            }
        }
        self.stats()
    }

    /// The capture's packet socket (for checks; reading it is this type's job).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.cap.as_raw_fd()
    }

    /// Waits until the capture has packets or `ms` pass.
    fn wait_readable(&self, ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd for the capture's own descriptor.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    /// libpcap's counters now.
    pub fn stats(&mut self) -> Result<CaptureStats, LiveError> {
        let s = self.cap.stats().map_err(|e| classify(&self.iface, e))?;
        Ok(CaptureStats {
            captured: self.captured,
            received: u64::from(s.received),
            dropped: u64::from(s.dropped),
            if_dropped: u64::from(s.if_dropped),
        })
    }
}

/// libpcap opens its packet socket without `SOCK_CLOEXEC`: a program exec'd while the capture is
/// open would keep a socket that reads every frame on the interface.
fn close_on_exec(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on the capture's own open descriptor; it changes only its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
