//! The join of socket calls with the capture, and the timing model (docs/timing-model.md): for
//! each read, how long it waited on the network (loss, or a peer that had not sent yet), how
//! long the data sat in the socket buffer before the program asked for it, and how long the
//! kernel took to wake the program.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::exchange::{ExchangeStream, LastRead};
use crate::flows::{Analysis, Flow, Protocol};
use crate::join::{JoinEnd, JoinSink};
use crate::seq::SeqNumber;

/// What a socket call did, as the correlator needs it (the CLI converts recorded events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketCall {
    pub kind: CallKind,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Identifies one connection of one process (successive connections on one fd differ).
    pub stream: u64,
    pub t_call_ns: i64,
    pub t_return_ns: i64,
    /// Bytes moved, or -1 on error.
    pub bytes: i64,
    /// TCP stream offset of the first byte moved.
    pub offset: u64,
    /// The TCP sequence number of the first byte moved, as the kernel's socket had it (the eBPF
    /// recorder): [`align_kernel_seqs`] turns it into `offset`, exact without the handshake.
    pub seq: Option<u32>,
    pub peek: bool,
    /// The socket was non-blocking (a read without a wait before it then says so).
    pub nonblocking: bool,
    /// The pytest test (`PYTEST_CURRENT_TEST`) or `NETBLAME_TAG` the call was made under; shared.
    pub test: Option<std::sync::Arc<str>>,
    /// Open calls: the socket's addresses, local and peer (boxed: only opens have them, and
    /// a run holds millions of calls).
    pub addrs: Option<Box<Addrs>>,
    pub tcp: bool,
    /// The function called (`recv`, `accept4`, `epoll_wait`, ...): for an open, whether the
    /// program accepted the connection; for a wait, which API it waited in.
    pub api: Api,
    /// Wait calls: what the wait reported of the socket (`READY_*` bits).
    pub ready: u8,
    /// errno after the call (a connect that goes on in the background: `EINPROGRESS`, 115).
    pub errno: i32,
}

/// The function a program called (the event log's `call`), as the correlator tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Unknown,
    Recv,
    Recvfrom,
    Recvmsg,
    Recvmmsg,
    Read,
    Readv,
    Send,
    Sendto,
    Sendmsg,
    Sendmmsg,
    Write,
    Writev,
    Sendfile,
    Connect,
    Accept,
    Accept4,
    Close,
    Mark,
    Poll,
    Ppoll,
    Select,
    Pselect,
    EpollWait,
    EpollPwait,
    EpollPwait2,
}

impl Api {
    /// Its name, as the event log and the tables write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Unknown => "unknown",
            Api::Recv => "recv",
            Api::Recvfrom => "recvfrom",
            Api::Recvmsg => "recvmsg",
            Api::Recvmmsg => "recvmmsg",
            Api::Read => "read",
            Api::Readv => "readv",
            Api::Send => "send",
            Api::Sendto => "sendto",
            Api::Sendmsg => "sendmsg",
            Api::Sendmmsg => "sendmmsg",
            Api::Write => "write",
            Api::Writev => "writev",
            Api::Sendfile => "sendfile",
            Api::Connect => "connect",
            Api::Accept => "accept",
            Api::Accept4 => "accept4",
            Api::Close => "close",
            Api::Mark => "mark",
            Api::Poll => "poll",
            Api::Ppoll => "ppoll",
            Api::Select => "select",
            Api::Pselect => "pselect",
            Api::EpollWait => "epoll_wait",
            Api::EpollPwait => "epoll_pwait",
            Api::EpollPwait2 => "epoll_pwait2",
        }
    }

    /// An open by `accept` or `accept4`: the program serves the connection.
    pub fn accepts(self) -> bool {
        matches!(self, Api::Accept | Api::Accept4)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`: widths and alignment apply, as they did to the name.
        f.pad(self.as_str())
    }
}

/// Linux's errno for a non-blocking connect that goes on in the background.
pub const EINPROGRESS: i32 = 115;
/// Linux's errno for a non-blocking read that found no data (EWOULDBLOCK too).
pub const EAGAIN: i32 = 11;

/// A wait's report of a socket (the event log's bits): data to read.
pub const READY_READ: u8 = 0x01;
/// Room to write.
pub const READY_WRITE: u8 = 0x02;
/// The peer hung up.
pub const READY_HANGUP: u8 = 0x04;
/// An error is pending.
pub const READY_ERROR: u8 = 0x08;

/// The latest time a call may carry: 2^62 ns after the epoch (the year 2116), so that any two
/// times, or a time and a duration, add and subtract without overflow.
pub const MAX_TIME_NS: i64 = 1 << 62;
/// The largest stream offset a call may carry (a stream of 4 EiB).
pub const MAX_OFFSET: u64 = 1 << 62;
/// The most bytes one call may move (Linux moves at most 2 GiB per call).
pub const MAX_CALL_BYTES: i64 = 1 << 32;

/// The addresses of an open socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

impl SocketCall {
    /// The socket's local address (open calls).
    pub fn local(&self) -> Option<SocketAddr> {
        self.addrs.as_ref().and_then(|a| a.local)
    }

    /// The socket's peer address (open calls).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.addrs.as_ref().and_then(|a| a.peer)
    }

    /// Sets the addresses (none when both are unknown).
    pub fn set_addrs(&mut self, local: Option<SocketAddr>, peer: Option<SocketAddr>) {
        self.addrs = (local.is_some() || peer.is_some()).then(|| Box::new(Addrs { local, peer }));
    }

    /// The call if its fields are within what a real call can carry (times in
    /// `[0, MAX_TIME_NS]`, offset up to `MAX_OFFSET`, bytes in `[-1, MAX_CALL_BYTES]`), else
    /// `None`: such an event comes from a damaged or hand-written log, and joining it would
    /// only produce absurd numbers. A return stamped before the call (the realtime clock was
    /// stepped back during it) is moved to the call.
    pub fn checked(mut self) -> Option<SocketCall> {
        let times = 0..=MAX_TIME_NS;
        if !times.contains(&self.t_call_ns)
            || !times.contains(&self.t_return_ns)
            || self.offset > MAX_OFFSET
            || !(-1..=MAX_CALL_BYTES).contains(&self.bytes)
        {
            return None;
        }
        self.t_return_ns = self.t_return_ns.max(self.t_call_ns);
        Some(self)
    }
}

/// The kind of a socket call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Open,
    Recv,
    Send,
    Close,
    /// A readiness wait (poll, select, epoll) that reported the socket.
    Wait,
    Other,
}

/// Why a read took the time it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Loss,
    PeerSlow,
    AppLate,
    WakeupLate,
    /// The connection's handshake was not captured: offsets cannot be joined exactly.
    Unaligned,
    /// No data to blame (end of stream, an error, or a peek).
    NoData,
    /// The bytes read are not in the capture.
    NotCaptured,
    /// A server waiting for its client's next request: not slow, just idle (`idle_ns`).
    Idle,
    /// A connect the peer answered with a RST (nothing listening): `peer_ns` is the RST's time.
    Refused,
    /// The wait was mostly a Nagle + delayed-ACK hold (`stall_ns`): a small write held until the
    /// other side's delayed ACK came, on either side (TCP_NODELAY on the writer is the cure).
    Stall,
}

impl Verdict {
    /// Every verdict, in order.
    pub const ALL: [Verdict; 11] = [
        Verdict::Ok,
        Verdict::Loss,
        Verdict::PeerSlow,
        Verdict::AppLate,
        Verdict::WakeupLate,
        Verdict::Unaligned,
        Verdict::NoData,
        Verdict::NotCaptured,
        Verdict::Idle,
        Verdict::Refused,
        Verdict::Stall,
    ];

    /// The verdict of the largest of `causes` (a time and the verdict it gives) if it reaches
    /// `threshold_ns`, else `ok`; of equal causes, the later one.
    pub fn of_largest<const N: usize>(causes: [(i64, Verdict); N], threshold_ns: i64) -> Verdict {
        match causes.into_iter().max_by_key(|(ns, _)| *ns) {
            Some((ns, v)) if ns >= threshold_ns => v,
            _ => Verdict::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Loss => "loss",
            Verdict::PeerSlow => "peer-slow",
            Verdict::AppLate => "app-late",
            Verdict::WakeupLate => "wakeup-late",
            Verdict::Unaligned => "unaligned",
            Verdict::NoData => "no-data",
            Verdict::NotCaptured => "not-captured",
            Verdict::Idle => "idle",
            Verdict::Refused => "refused",
            Verdict::Stall => "stall",
        }
    }
}

/// The timing of one read, per the timing model. Times are ns; `None` where not defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadTiming {
    pub ready_first_ns: Option<i64>,
    pub ready_last_ns: Option<i64>,
    pub ready_nominal_ns: Option<i64>,
    pub network_wait_ns: i64,
    pub loss_delay_ns: i64,
    pub peer_wait_ns: i64,
    pub buffer_wait_ns: i64,
    /// After a readiness wait: from the wait's return to the read's call (the program, or its
    /// event loop, ran other work first). The program's time, with `buffer_wait_ns`.
    pub dispatch_ns: i64,
    pub wakeup_ns: i64,
    /// The part of the network wait that a Nagle + delayed-ACK hold on the connection explains
    /// (taken out of `peer_wait_ns`): see `Flow`'s `nagle_holds`.
    pub stall_ns: i64,
    /// A server's wait for its client's next request (verdict `idle`): what would have been
    /// peer wait, left out of every total.
    pub idle_ns: i64,
    pub retransmitted_bytes: u64,
}

impl ReadTiming {
    /// Splits the call's time given its byte range's capture times (the formulas of
    /// docs/timing-model.md).
    pub fn compute(
        t_call: i64,
        t_return: i64,
        ready_first: i64,
        ready_last: i64,
        ready_nominal: i64,
    ) -> ReadTiming {
        let network_wait = (t_return.min(ready_last) - t_call).max(0);
        let loss_delay =
            (t_return.min(ready_last) - t_call.max(ready_nominal)).clamp(0, network_wait);
        ReadTiming {
            ready_first_ns: Some(ready_first),
            ready_last_ns: Some(ready_last),
            ready_nominal_ns: Some(ready_nominal),
            network_wait_ns: network_wait,
            loss_delay_ns: loss_delay,
            peer_wait_ns: network_wait - loss_delay,
            buffer_wait_ns: (t_call - ready_first).max(0),
            dispatch_ns: 0,
            wakeup_ns: (t_return - t_call.max(ready_last)).max(0),
            stall_ns: 0,
            idle_ns: 0,
            retransmitted_bytes: 0,
        }
    }

    /// Splits a read that followed a readiness wait over the window `[wait.call, t_return]`
    /// (docs/timing-model.md, readiness waits): the wait ends when the first byte is there.
    /// `first_sent` is the first capture of the first byte (its delivery is `ready_first`).
    pub fn compute_after_wait(
        wait: &WaitWindow,
        t_call: i64,
        t_return: i64,
        ready_first: i64,
        ready_last: i64,
        first_sent: i64,
    ) -> ReadTiming {
        let until = wait.return_ns.min(ready_first);
        let network_wait = (until - wait.call_ns).max(0);
        let loss_delay = (until - wait.call_ns.max(first_sent)).clamp(0, network_wait);
        ReadTiming {
            ready_first_ns: Some(ready_first),
            ready_last_ns: Some(ready_last),
            ready_nominal_ns: Some(first_sent),
            network_wait_ns: network_wait,
            loss_delay_ns: loss_delay,
            peer_wait_ns: network_wait - loss_delay,
            buffer_wait_ns: (wait.call_ns - ready_first).max(0),
            dispatch_ns: (t_call - wait.return_ns).max(0),
            wakeup_ns: (wait.return_ns - wait.call_ns.max(ready_first)).max(0)
                + (t_return - t_call),
            stall_ns: 0,
            idle_ns: 0,
            retransmitted_bytes: 0,
        }
    }

    /// Takes the part of the peer's wait during `[from, from + network_wait)` that the holds
    /// (Nagle + delayed ACK) of our direction and of the peer's cover, and says whose write was
    /// held longer.
    fn take_stall(
        &mut self,
        from: i64,
        ours: &[(i64, i64)],
        peers: &[(i64, i64)],
    ) -> Option<HeldWrite> {
        let until = from + self.network_wait_ns;
        let covered = |holds| crate::exchange::held_within(holds, from, until);
        let (o, p) = (covered(ours), covered(peers));
        let stall = o.saturating_add(p).min(self.peer_wait_ns);
        if stall <= 0 {
            return None;
        }
        self.stall_ns = stall;
        self.peer_wait_ns -= stall;
        Some(if o >= p {
            HeldWrite::Ours
        } else {
            HeldWrite::Peers
        })
    }

    /// The program's time: the data waited in the buffer, or the program was told and ran
    /// other work first.
    pub fn program_ns(&self) -> i64 {
        self.buffer_wait_ns.saturating_add(self.dispatch_ns)
    }

    /// Moves the peer's part (and a stall) into `idle_ns`: a server waiting for the next request.
    fn make_idle(&mut self) {
        self.idle_ns = self.peer_wait_ns + self.stall_ns;
        self.network_wait_ns -= self.idle_ns;
        (self.peer_wait_ns, self.stall_ns) = (0, 0);
    }

    /// The largest cause, if it reaches `threshold_ns`.
    pub fn verdict(&self, threshold_ns: i64) -> Verdict {
        Verdict::of_largest(
            [
                (self.loss_delay_ns, Verdict::Loss),
                (self.peer_wait_ns, Verdict::PeerSlow),
                (self.stall_ns, Verdict::Stall),
                (self.program_ns(), Verdict::AppLate),
                (self.wakeup_ns, Verdict::WakeupLate),
            ],
            threshold_ns,
        )
    }
}

/// The readiness wait a read was timed over: the first wait of its process that reported its
/// socket after the previous read on it returned, and before the read was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitWindow {
    /// The API (`poll`, `select`, `epoll_wait`, ...).
    pub api: Api,
    /// The wait's call, or the program's last send on the socket if that came later.
    pub call_ns: i64,
    pub return_ns: i64,
}

/// One read, joined to the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlame {
    /// Index of the call in the input slice.
    pub call: usize,
    /// The capture's flow, when the connection was found.
    pub flow_id: Option<u32>,
    pub timing: ReadTiming,
    pub verdict: Verdict,
    /// The read returned bytes before they were captured arriving (clock skew or a join error).
    pub causality_violation_ns: Option<i64>,
    /// The packets behind the read: TCP segments (or the UDP datagram) that carried its bytes.
    pub segments: u32,
    /// For the first read after a send on the same connection: the peer's response time on the
    /// wire, from the delivery of the request's last byte to the first capture of the read's
    /// first byte.
    pub response_ns: Option<i64>,
    /// For that read: the send of the request that the kernel held longest before the wire, if
    /// one was held. A peer that looks slow may have been waiting for a request our own stack
    /// held back (Nagle, a zero window).
    pub request_held: Option<HeldRequest>,
    /// The readiness wait the read was timed over, if it followed one.
    pub wait: Option<WaitWindow>,
    /// With a stall: whose write Nagle held (the side that needs TCP_NODELAY).
    pub stall_held: Option<HeldWrite>,
}

/// A send of a request that its kernel held before the wire: what a read of the answer says
/// about it (the values, not an index: the join does not keep the sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRequest {
    /// The send's call (index in the input slice).
    pub call: usize,
    pub wire_delay_ns: Option<i64>,
    pub held_by: HeldBy,
}

/// Whose write a Nagle + delayed-ACK stall held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldWrite {
    /// This program's: it wrote in small pieces and the peer delayed its ACK.
    Ours,
    /// The peer's: it wrote in small pieces and this host delayed its ACK.
    Peers,
}

impl HeldWrite {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldWrite::Ours => "ours",
            HeldWrite::Peers => "peer",
        }
    }
}

impl ReadBlame {
    /// A read not (yet) joined to the capture.
    pub(crate) fn unjoined(call: usize, verdict: Verdict) -> ReadBlame {
        ReadBlame {
            call,
            flow_id: None,
            timing: ReadTiming::default(),
            verdict,
            causality_violation_ns: None,
            segments: 0,
            response_ns: None,
            request_held: None,
            wait: None,
            stall_held: None,
        }
    }
}

/// One write, joined to the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTiming {
    pub call: usize,
    pub flow_id: Option<u32>,
    pub send_blocked_ns: i64,
    /// Capture time of the first segment (or the datagram) carrying the first byte.
    pub first_sent_ns: Option<i64>,
    /// First byte captured on the wire minus the return of the send.
    pub wire_delay_ns: Option<i64>,
    /// When the wire delay reached the threshold: what the capture shows held the bytes back.
    pub held_by: Option<HeldBy>,
    /// A non-blocking send after a wait that reported the socket writable: `send_blocked_ns`
    /// runs from that wait's call (the program waited for room in the send buffer).
    pub wait: Option<WaitWindow>,
}

impl SendTiming {
    /// A send not (yet) joined to the capture.
    fn unjoined(call: usize, c: &SocketCall) -> SendTiming {
        SendTiming {
            call,
            flow_id: None,
            send_blocked_ns: c.t_return_ns - c.t_call_ns,
            first_sent_ns: None,
            wire_delay_ns: None,
            held_by: None,
            wait: None,
        }
    }

    /// Times the send over the writability wait before it.
    fn after_wait(mut self, c: &SocketCall, wait: Option<WaitWindow>) -> SendTiming {
        if let Some(w) = wait {
            // The time in the wait and in the call, not between them: that was the program's
            // (Go's netpoller reports a socket writable once, when it is registered, and the
            // answer is written whenever the handler is done).
            self.send_blocked_ns = (w.return_ns - w.call_ns).max(0) + (c.t_return_ns - c.t_call_ns);
            self.wait = Some(w);
        }
        self
    }
}

/// Why bytes a program had sent waited in its socket before going out, as the capture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// The peer advertised a zero window while the bytes waited.
    ZeroWindow,
    /// Less than a segment was in flight, unacknowledged: Nagle's algorithm held the small
    /// write until the ACK came.
    Nagle,
    /// A window's worth was in flight: the congestion or the receive window was full.
    Window,
    /// Nothing in the capture explains it: the sending stack itself (scheduling, pacing, a cork).
    Stack,
}

impl HeldBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldBy::ZeroWindow => "zero-window",
            HeldBy::Nagle => "nagle",
            HeldBy::Window => "window",
            HeldBy::Stack => "stack",
        }
    }
}

/// One TCP connect, joined to its handshake in the capture (docs/timing-model.md, connects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTiming {
    /// Index of the open call in the input slice.
    pub call: usize,
    pub flow_id: Option<u32>,
    /// When the connection was up for the program: the connect's return, or for a
    /// non-blocking connect the writability wait that reported it (or the first I/O).
    pub done_ns: i64,
    /// The wait that reported a non-blocking connect done, and when it was called.
    pub wait_api: Option<Api>,
    pub wait_call_ns: Option<i64>,
    /// SYNs the program's side sent before the SYN-ACK (more than 1: retransmitted).
    pub syn_packets: u64,
    /// From the first SYN to the one the peer answered: SYNs lost, or ignored by a full listen
    /// backlog (Linux retransmits after 1 s, then 2 s more).
    pub syn_loss_ns: i64,
    /// From the answered SYN to the SYN-ACK: the peer's (and the path's) time.
    pub peer_ns: i64,
    /// From the SYN-ACK to the program learning the connection was up (after a wait: from the
    /// later of the SYN-ACK and the wait's call to its return).
    pub wakeup_ns: i64,
    /// A non-blocking connect whose wait began after the SYN-ACK: the program was elsewhere.
    pub program_ns: i64,
    pub verdict: Verdict,
}

impl ConnectTiming {
    /// The connect's time as the program lived it.
    pub fn duration_ns(&self, c: &SocketCall) -> i64 {
        (self.done_ns - c.t_call_ns).max(0)
    }

    /// Splits the connect given its done time and its flow's handshake: the peer answered the
    /// (last) SYN with a SYN-ACK, or refused it with a RST.
    fn compute(&mut self, c: &SocketCall, flow: Option<&Flow>, threshold_ns: i64) {
        let handshake = flow.and_then(|f| {
            let answer = f.syn_ack_ts_ns.map(|t| (t, false));
            let answer = answer.or(f.syn_rst_ts_ns.map(|t| (t, true)));
            Some((f.syn_ts_ns?, f.syn_answered_ts_ns?, answer?))
        });
        let Some((first, answered, (syn_ack, refused))) = handshake else {
            self.verdict = Verdict::NotCaptured;
            return;
        };
        self.syn_packets = flow.map_or(0, |f| f.dirs[0].stats.syn_packets);
        self.syn_loss_ns = (answered - first.max(c.t_call_ns)).max(0);
        self.peer_ns = (syn_ack - answered).max(0);
        let waited_from = self.wait_call_ns.unwrap_or(syn_ack).min(self.done_ns);
        self.program_ns = (waited_from - syn_ack).max(0);
        self.wakeup_ns = (self.done_ns - syn_ack.max(waited_from)).max(0);
        let causes = [
            (self.syn_loss_ns, Verdict::Loss),
            (self.peer_ns, Verdict::PeerSlow),
            (self.program_ns, Verdict::AppLate),
            (self.wakeup_ns, Verdict::WakeupLate),
        ];
        self.verdict = if refused {
            Verdict::Refused
        } else {
            Verdict::of_largest(causes, threshold_ns)
        };
    }
}

/// The result of the join.
#[derive(Debug, Clone, Default)]
pub struct Blame {
    pub reads: Vec<ReadBlame>,
    pub sends: Vec<SendTiming>,
    /// TCP connects the program made, in call order.
    pub connects: Vec<ConnectTiming>,
    /// Streams recorded by the program but not found in the capture (Unix sockets never are;
    /// these are connections outside the filter or interface, or before the capture started).
    pub unmatched_streams: Vec<(u32, u64, Option<SocketAddr>, Option<SocketAddr>)>,
    /// Flows in the capture no recorded socket joined (ids): programs the interposer cannot see
    /// (static or Go binaries), processes started without it, or traffic of other programs.
    pub unmatched_flows: Vec<u32>,
    /// Reads more than 100 µs before their bytes were captured.
    pub causality_violations: usize,
    /// Request -> response exchanges of the connections the program made, timed from the
    /// capture (crate::exchange), in the order they ended.
    pub exchanges: Vec<crate::exchange::Exchange>,
}

/// Normalises v4-mapped IPv6 addresses so either form matches the capture.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// Where one recorded stream is in the capture.
#[derive(Debug, Clone, Copy)]
enum Joined {
    /// A TCP connection: the flow's index, and which direction the peer sends.
    Tcp { flow: usize, peer_dir: usize },
    /// A UDP socket: its entry in the UDP matching state.
    Udp(usize),
}

/// The captured datagrams a UDP socket can have received or sent, in capture order, with
/// cursors: each call matches the next one of its length (docs/timing-model.md, UDP).
#[derive(Debug, Default)]
struct UdpMatch {
    /// (capture time, length, flow index)
    incoming: Vec<(i64, u32, usize)>,
    /// The flows (indices) those datagrams come from.
    flows: Vec<usize>,
    outgoing: Vec<(i64, u32, usize)>,
    next_in: usize,
    next_out: usize,
}

impl UdpMatch {
    fn new(analysis: &Analysis, local: SocketAddr, peer: SocketAddr) -> Option<UdpMatch> {
        if local.port() == 0 {
            return None;
        }
        let matches = |want: SocketAddr, e: &crate::flows::Endpoint| {
            (want.ip().is_unspecified() || canonical(want).ip() == e.addr)
                && (want.port() == 0 || want.port() == e.port)
        };
        let mut m = UdpMatch::default();
        for (i, f) in analysis.flows.iter().enumerate() {
            if f.protocol != Protocol::Udp {
                continue;
            }
            for me in 0..2 {
                if matches(local, &f.endpoints[me]) && matches(peer, &f.endpoints[1 - me]) {
                    m.flows.push(i);
                    let tag = |&(t, n): &(i64, u32)| (t, n, i);
                    m.incoming.extend(f.dirs[1 - me].datagrams.iter().map(tag));
                    m.outgoing.extend(f.dirs[me].datagrams.iter().map(tag));
                }
            }
        }
        if m.incoming.is_empty() && m.outgoing.is_empty() {
            return None;
        }
        m.incoming.sort_by_key(|d| d.0);
        m.outgoing.sort_by_key(|d| d.0);
        Some(m)
    }

    /// The next unmatched datagram of `len` bytes one way, consuming it and all before it.
    fn take(&mut self, incoming: bool, len: i64) -> Option<(i64, usize)> {
        let (list, next) = if incoming {
            (&self.incoming, &mut self.next_in)
        } else {
            (&self.outgoing, &mut self.next_out)
        };
        // Datagrams skipped are ones the socket never got (dropped after capture) or read with
        // another length (truncated): a few. The bound keeps a socket whose reads match nothing
        // from rescanning the whole list at every read.
        const MAX_SKIPPED: usize = 1024;
        let ahead = &list[*next..list.len().min(*next + MAX_SKIPPED)];
        let at = *next + ahead.iter().position(|d| i64::from(d.1) == len)?;
        *next = at + 1;
        Some((list[at].0, list[at].2))
    }
}

/// Per recorded stream, by (pid, stream id): looked up at every call.
type StreamMap<V> = HashMap<(u32, u64), V, std::hash::BuildHasherDefault<IdHasher>>;

/// FxHash's mix, for keys of small integers hashed millions of times (SipHash's resistance to
/// chosen keys buys nothing for a log the user recorded, and costs a few percent of the join).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
}

/// One recorded stream while its calls are joined, in call order.
#[derive(Debug, Clone, Default)]
struct StreamState {
    joined: Option<Joined>,
    /// Position (in the stream's send direction) of the last byte of the latest send that no
    /// read has followed yet.
    unanswered_send_end: Option<i64>,
    /// A send of data since the last read of data: a request is under way.
    request_open: bool,
    /// Of its sends, the one its kernel held longest (the last of equals).
    request_held: Option<HeldRequest>,
    /// On a connection the program made: its exchange under way.
    exchange: Option<ExchangeStream>,
    /// Where the last lookups landed in the byte timelines: [the peer's direction, ours].
    hints: [usize; 2],
    /// The program accepted this connection: it serves it.
    accepted: bool,
    /// No read has returned data since the open or since the program's last send: the next
    /// read starts a new request (idle, on an accepted connection).
    awaiting_request: bool,
    /// Readiness waits that reported the socket readable and that no read has used yet.
    waits: Vec<WaitWindow>,
    /// When the last read on the socket returned.
    last_read_return: i64,
    /// When a read first found no data (EAGAIN) since the last read of data: the program asked
    /// for the answer from then on, whichever wait later told it (Go parks the goroutine and its
    /// netpoller, on another thread and in calls of its own, reports the socket).
    asked_since: Option<i64>,
    /// When the last send of data on the socket returned.
    last_send_return: i64,
    /// A non-blocking connect not yet reported done (index in `JoinEnd::connects`).
    pending_connect: Option<usize>,
    /// The first wait that reported the socket writable since the last send.
    write_wait: Option<WaitWindow>,
}

/// Waits kept per socket for reads to come: more only pile up in a program that waits and
/// never reads.
const MAX_PENDING_WAITS: usize = 16;

impl StreamState {
    /// Notes a wait that reported the socket readable (or hung up, or in error).
    fn waited(&mut self, c: &SocketCall) {
        if c.ready & (READY_READ | READY_HANGUP | READY_ERROR) == 0 {
            return;
        }
        if self.waits.len() == MAX_PENDING_WAITS {
            self.waits.remove(0);
        }
        self.waits.push(WaitWindow {
            api: c.api,
            call_ns: c.t_call_ns,
            return_ns: c.t_return_ns,
        });
    }

    /// The wait a read called at `c` was timed over: of the waits that reported the socket
    /// after the previous read returned and before this one was called, the first (when the
    /// program was first told; what it did after is dispatch). A read that found no data
    /// (EAGAIN) since the last data moves the start back to it: the program was waiting from
    /// then, whichever later call of its event loop reported the socket (Go's netpoller, whose
    /// waits timers cut short). A wait begun before the program's last send on the socket
    /// counts from that send: it was not waiting for an answer before it asked. Waits that
    /// returned before the read are used up either way.
    fn wait_for(&mut self, c: &SocketCall) -> Option<WaitWindow> {
        let after = self.last_read_return;
        let mut first: Option<WaitWindow> = None;
        self.waits.retain(|w| {
            if w.return_ns > c.t_call_ns {
                return true;
            }
            if w.return_ns > after && first.is_none_or(|f| w.return_ns < f.return_ns) {
                first = Some(*w);
            }
            false
        });
        first.map(|mut w| {
            // Asked before the wait began: waiting from then (but not before the send, below).
            if let Some(asked) = self.asked_since {
                w.call_ns = w.call_ns.min(asked);
            }
            if self.last_send_return < w.return_ns {
                w.call_ns = w.call_ns.max(self.last_send_return);
            }
            w
        })
    }
}

/// Sets the `offset` of every TCP call that carries the kernel's sequence number (`seq`) from
/// the capture's sequence space, so that it joins exactly whether or not the handshake was
/// captured. Each stream's numbers are unwrapped in call order from its direction's base (the
/// ISN, or one before the first sequence number captured). A call whose bytes lie before the
/// capture (a process followed mid-connection), or on a connection the capture lacks, loses its
/// `seq`: it then joins as any call would (unaligned without the handshake).
pub fn align_kernel_seqs(analysis: &Analysis, calls: &mut [SocketCall]) {
    if !calls.iter().any(|c| c.seq.is_some()) {
        return;
    }
    let by_pair = TcpFlowIndex::new(analysis);
    // Per stream: its flow and peer direction, and per direction (0: sent, 1: read) the last
    // (sequence number, position) unwrapped.
    type Unwrapped = [Option<(SeqNumber, i64)>; 2];
    type Stream = (Option<(usize, usize)>, Unwrapped);
    let mut streams: StreamMap<Stream> = StreamMap::default();
    for c in calls.iter_mut() {
        if c.kind == CallKind::Open {
            let joined = match (c.local().map(canonical), c.peer().map(canonical)) {
                (Some(local), Some(peer)) if c.tcp => {
                    match tcp_flow(analysis, &by_pair, c, local, peer) {
                        Some(Joined::Tcp { flow, peer_dir }) => Some((flow, peer_dir)),
                        _ => None,
                    }
                }
                _ => None,
            };
            streams.insert((c.pid, c.stream), (joined, [None; 2]));
            continue;
        }
        let Some(seq) = c.seq.map(SeqNumber) else {
            continue;
        };
        let Some((Some((flow, peer_dir)), last)) = streams.get_mut(&(c.pid, c.stream)) else {
            c.seq = None;
            continue;
        };
        let (d, way) = match c.kind {
            CallKind::Send => (1 - *peer_dir, 0),
            _ => (*peer_dir, 1),
        };
        let Some(base) = analysis.flows[*flow].dirs[d].base() else {
            c.seq = None;
            continue;
        };
        let position = match last[way] {
            Some((prev, at)) => at + i64::from(seq.since(prev)),
            None => i64::from(seq.since(base)),
        };
        last[way] = Some((seq, position));
        match u64::try_from(position - 1) {
            Ok(offset) if offset <= MAX_OFFSET => c.offset = offset,
            _ => c.seq = None,
        }
    }
}

/// Joins `calls` to `analysis` and computes the timing of every read and send, all held whole
/// (the pictures' and the tables' input): `join` into a `Blame`.
pub fn blame(analysis: &Analysis, calls: &[SocketCall], threshold_ns: i64) -> Blame {
    let mut out = Blame::default();
    join(analysis, calls, threshold_ns, &mut out);
    out
}

/// What a call made in the join.
enum Made {
    Read(ReadBlame),
    Send(SendTiming),
    Nothing,
}

/// Joins `calls` to `analysis` in call order and hands every result to `sink` as it is made
/// (docs/timing-model.md): each read and send once it is timed, each exchange as it ends, then
/// the connects and what did not join (also returned). Per stream it keeps only what later
/// calls on it ask about.
pub fn join<'a>(
    analysis: &Analysis,
    calls: &'a [SocketCall],
    threshold_ns: i64,
    sink: &mut impl JoinSink<'a>,
) -> JoinEnd {
    let by_pair = TcpFlowIndex::new(analysis);
    let mut streams: StreamMap<StreamState> = StreamMap::default();
    let mut udp: Vec<UdpMatch> = Vec::new();
    let mut end = JoinEnd::default();
    let mut flow_joined = vec![false; analysis.flows.len()];
    for (idx, c) in calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == CallKind::Open)
    {
        let entry = match (c.local().map(canonical), c.peer().map(canonical)) {
            (Some(local), Some(peer)) if c.tcp => tcp_flow(analysis, &by_pair, c, local, peer),
            (Some(local), Some(peer)) => UdpMatch::new(analysis, local, peer).map(|m| {
                for &i in &m.flows {
                    flow_joined[i] = true;
                }
                udp.push(m);
                Joined::Udp(udp.len() - 1)
            }),
            _ => None,
        };
        if let Some(Joined::Tcp { flow, .. }) = entry {
            flow_joined[flow] = true;
        }
        // A TCP socket without a peer is a listening one (an older interposer recorded those on
        // first use) or one never connected, and a connect that failed with nothing captured
        // (no route: no SYN ever left) made none: not connections the capture could be missing.
        let failed_connect = c.api == Api::Connect && c.errno != 0 && c.errno != EINPROGRESS;
        let connection = (!c.tcp || c.peer().is_some_and(|p| p.port() != 0)) && !failed_connect;
        if entry.is_none() && connection {
            end.unmatched_streams
                .push((c.pid, c.stream, c.local(), c.peer()));
        }
        let mut state = StreamState {
            joined: entry,
            accepted: c.api.accepts(),
            awaiting_request: true,
            ..StreamState::default()
        };
        if c.tcp && c.api == Api::Connect {
            let flow = match entry {
                Some(Joined::Tcp { flow, .. }) => Some(&analysis.flows[flow]),
                _ => None,
            };
            let mut t = ConnectTiming {
                call: idx,
                flow_id: flow.map(|f| f.id),
                done_ns: c.t_return_ns,
                wait_api: None,
                wait_call_ns: None,
                syn_packets: 0,
                syn_loss_ns: 0,
                peer_ns: 0,
                wakeup_ns: 0,
                program_ns: 0,
                verdict: Verdict::Ok,
            };
            t.compute(c, flow, threshold_ns);
            if c.errno == EINPROGRESS {
                state.pending_connect = Some(end.connects.len());
            }
            end.connects.push(t);
        }
        streams.insert((c.pid, c.stream), state);
    }
    end.unmatched_flows = analysis
        .flows
        .iter()
        .zip(&flow_joined)
        .filter(|(_, &joined)| !joined)
        .map(|(f, _)| f.id)
        .collect();
    let mut no_stream = StreamState::default();
    for (idx, c) in calls.iter().enumerate() {
        if c.kind == CallKind::Open {
            // A connection the program made (accepted ones are served, not asked): its
            // exchanges begin here, in call order.
            if c.tcp && !c.api.accepts() {
                if let Some(st) = streams.get_mut(&(c.pid, c.stream)) {
                    st.exchange = Some(ExchangeStream::new(idx));
                }
            }
            continue;
        }
        let st = if matches!(c.kind, CallKind::Recv | CallKind::Send | CallKind::Wait) {
            streams.entry((c.pid, c.stream)).or_default()
        } else {
            &mut no_stream
        };
        let joined = st.joined;
        let mut wait_used = false;
        if let Some(i) = st.pending_connect {
            // A non-blocking connect is done when a wait reports the socket writable (or in
            // error), or, without such a wait, when the program goes on to use it.
            let done = match c.kind {
                CallKind::Wait if c.ready & (READY_WRITE | READY_ERROR | READY_HANGUP) != 0 => {
                    Some((c.t_return_ns, Some((c.api, c.t_call_ns))))
                }
                CallKind::Recv | CallKind::Send => Some((c.t_call_ns, None)),
                _ => None,
            };
            if let Some((done_ns, wait)) = done {
                st.pending_connect = None;
                wait_used = wait.is_some();
                let t = &mut end.connects[i];
                t.done_ns = done_ns;
                (t.wait_api, t.wait_call_ns) = (wait.map(|w| w.0), wait.map(|w| w.1));
                let open = &calls[t.call];
                let flow = match joined {
                    Some(Joined::Tcp { flow, .. }) => Some(&analysis.flows[flow]),
                    _ => None,
                };
                t.compute(open, flow, threshold_ns);
            }
        }
        let wait = if c.kind == CallKind::Recv {
            let w = st.wait_for(c);
            st.last_read_return = c.t_return_ns;
            if c.bytes > 0 {
                st.asked_since = None;
            } else if c.bytes < 0 && c.errno == EAGAIN && !c.peek {
                st.asked_since.get_or_insert(c.t_call_ns);
            }
            // A read of data after a wait that reported the socket writable too: the program
            // went on to read, so a later send did not wait on that report (edge-triggered
            // epoll, as Go's netpoller uses, reports readable and writable together).
            if c.bytes > 0 && st.write_wait.is_some_and(|ww| ww.return_ns <= c.t_call_ns) {
                st.write_wait = None;
            }
            w
        } else {
            None
        };
        let write_wait = if c.kind == CallKind::Send {
            st.write_wait.take().filter(|w| w.return_ns <= c.t_call_ns)
        } else {
            None
        };
        let made = match (c.kind, joined) {
            (CallKind::Wait, _) => {
                st.waited(c);
                if c.ready & READY_WRITE != 0 && !wait_used && st.write_wait.is_none() {
                    st.write_wait = Some(WaitWindow {
                        api: c.api,
                        call_ns: c.t_call_ns,
                        return_ns: c.t_return_ns,
                    });
                }
                Made::Nothing
            }
            (CallKind::Recv, Some(Joined::Udp(u))) => {
                Made::Read(udp_read(analysis, &mut udp[u], idx, c, wait, threshold_ns))
            }
            (CallKind::Send, Some(Joined::Udp(u))) => {
                if c.bytes > 0 {
                    st.last_send_return = c.t_return_ns;
                }
                let found = (c.bytes >= 0)
                    .then(|| udp[u].take(false, c.bytes))
                    .flatten();
                Made::Send(
                    SendTiming {
                        flow_id: found.map(|(_, fi)| analysis.flows[fi].id),
                        first_sent_ns: found.map(|(t, _)| t),
                        wire_delay_ns: found.map(|(t, _)| t - c.t_return_ns),
                        ..SendTiming::unjoined(idx, c)
                    }
                    .after_wait(c, write_wait),
                )
            }
            (CallKind::Recv, _) if c.tcp => {
                let mut r = read_blame(analysis, idx, c, joined, wait, &mut st.hints[0]);
                if r.timing.ready_first_ns.is_some() {
                    // A server's read of the next request waited on its client's pace: idle,
                    // unless loss, the program or the wakeup cost more than the threshold.
                    let idle = st.accepted && st.awaiting_request;
                    if idle {
                        r.timing.make_idle();
                    }
                    r.verdict = match r.timing.verdict(threshold_ns) {
                        Verdict::Ok if idle => Verdict::Idle,
                        v => v,
                    };
                }
                if c.bytes > 0 && !c.peek {
                    st.awaiting_request = false;
                    if let (Some(end), Some(Joined::Tcp { flow, peer_dir })) =
                        (st.unanswered_send_end.take(), joined)
                    {
                        let flow = &analysis.flows[flow];
                        r.response_ns = response_time(flow, peer_dir, end, c, &mut st.hints);
                    }
                    st.request_open = false;
                    r.request_held = st.request_held.take();
                }
                Made::Read(r)
            }
            (CallKind::Send, _) if c.tcp => {
                if c.bytes > 0 {
                    st.awaiting_request = true;
                    st.last_send_return = c.t_return_ns;
                    st.unanswered_send_end = Some(c.offset as i64 + c.bytes);
                    st.request_open = true;
                }
                Made::Send(
                    tcp_send(analysis, idx, c, joined, threshold_ns, &mut st.hints[1])
                        .after_wait(c, write_wait),
                )
            }
            (CallKind::Recv, _) => Made::Read(ReadBlame::unjoined(
                idx,
                if c.bytes > 0 {
                    Verdict::NotCaptured
                } else {
                    Verdict::NoData
                },
            )),
            (CallKind::Send, _) => {
                Made::Send(SendTiming::unjoined(idx, c).after_wait(c, write_wait))
            }
            _ => Made::Nothing,
        };
        let read = match &made {
            Made::Read(r) => Some(LastRead {
                flow_id: r.flow_id,
                wait: r.wait,
            }),
            _ => None,
        };
        if let Some(ex) = st.exchange.as_mut().filter(|_| c.tcp) {
            if let Some(e) = ex.step(analysis, calls, idx, read, threshold_ns) {
                sink.exchange(calls, &e);
            }
        }
        match made {
            Made::Read(r) => {
                end.causality_violations += usize::from(r.causality_violation_ns.is_some());
                sink.read(calls, &r);
            }
            Made::Send(s) => {
                // The request's sends: keep the one its kernel held longest.
                if let (true, Some(held_by)) = (st.request_open, s.held_by) {
                    if st
                        .request_held
                        .is_none_or(|h| s.wire_delay_ns >= h.wire_delay_ns)
                    {
                        st.request_held = Some(HeldRequest {
                            call: idx,
                            wire_delay_ns: s.wire_delay_ns,
                            held_by,
                        });
                    }
                }
                sink.send(calls, &s);
            }
            Made::Nothing => {}
        }
    }
    let under_way = streams.into_values().filter_map(|s| s.exchange);
    for e in crate::exchange::finish_under_way(analysis, calls, under_way, threshold_ns) {
        sink.exchange(calls, &e);
    }
    sink.end(calls, &end);
    end
}

/// TCP flows by endpoint pair (both orders), in capture order (a port pair can be reused).
#[derive(Debug, Default)]
struct TcpFlowIndex {
    by_pair: HashMap<(SocketAddr, SocketAddr), Vec<usize>>,
    /// By (local port, peer), for a local address known only by its port: a connect that failed
    /// leaves its socket bound to 0.0.0.0:PORT.
    by_port_peer: HashMap<(u16, SocketAddr), Vec<usize>>,
}

impl TcpFlowIndex {
    fn new(analysis: &Analysis) -> TcpFlowIndex {
        let mut index = TcpFlowIndex::default();
        for (i, f) in analysis.flows.iter().enumerate() {
            if f.protocol != Protocol::Tcp {
                continue;
            }
            let a = SocketAddr::new(f.endpoints[0].addr, f.endpoints[0].port);
            let b = SocketAddr::new(f.endpoints[1].addr, f.endpoints[1].port);
            for (me, them) in [(a, b), (b, a)] {
                index.by_pair.entry((me, them)).or_default().push(i);
                index
                    .by_port_peer
                    .entry((me.port(), them))
                    .or_default()
                    .push(i);
            }
        }
        index
    }

    fn candidates(&self, local: SocketAddr, peer: SocketAddr) -> Option<&Vec<usize>> {
        if local.ip().is_unspecified() {
            self.by_port_peer.get(&(local.port(), peer))
        } else {
            self.by_pair.get(&(local, peer))
        }
    }
}

/// The TCP connection of an open event: the flow of that endpoint pair alive when it opened.
fn tcp_flow(
    analysis: &Analysis,
    index: &TcpFlowIndex,
    c: &SocketCall,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<Joined> {
    let cands = index.candidates(local, peer)?;
    // The last one started by then (with a little slack for the capture's clock granularity).
    let i = cands
        .iter()
        .copied()
        .rfind(|&i| analysis.flows[i].first_ts_ns <= c.t_return_ns + 1_000_000)
        .or_else(|| cands.first().copied())?;
    let peer_dir = peer_direction(&analysis.flows[i], peer);
    Some(Joined::Tcp { flow: i, peer_dir })
}

/// The direction of `flow` that `peer` sends (0: endpoint a's, 1: endpoint b's): the one that
/// carries the bytes a program talking to `peer` reads.
pub fn peer_direction(flow: &Flow, peer: SocketAddr) -> usize {
    let a = flow.endpoints[0];
    usize::from(SocketAddr::new(a.addr, a.port) != canonical(peer))
}

/// The peer's time to answer: its first captured transmission of the read's first byte minus
/// the delivery of the request's last byte (position `request_end`). `None` when either side is
/// not in the capture, or the bytes were on the wire before the request (not an answer to it).
fn response_time(
    flow: &Flow,
    peer_dir: usize,
    request_end: i64,
    c: &SocketCall,
    hints: &mut [usize; 2],
) -> Option<i64> {
    let (req, resp) = (&flow.dirs[1 - peer_dir], &flow.dirs[peer_dir]);
    if c.seq.is_none() {
        req.isn?;
        resp.isn?;
    }
    let asked = req
        .timeline
        .span_from(request_end, &mut hints[1])?
        .delivered_ns;
    let answered = resp
        .timeline
        .span_from(c.offset as i64 + 1, &mut hints[0])?
        .first_sent_ns;
    (answered >= asked).then_some(answered - asked)
}

fn tcp_send(
    analysis: &Analysis,
    idx: usize,
    c: &SocketCall,
    joined: Option<Joined>,
    threshold_ns: i64,
    hint: &mut usize,
) -> SendTiming {
    let mut s = SendTiming::unjoined(idx, c);
    let Some(Joined::Tcp { flow, peer_dir }) = joined else {
        return s;
    };
    let f = &analysis.flows[flow];
    s.flow_id = Some(f.id);
    let (mine, theirs) = (&f.dirs[1 - peer_dir], &f.dirs[peer_dir]);
    if c.bytes <= 0 || (mine.isn.is_none() && c.seq.is_none()) {
        return s;
    }
    let start = c.offset as i64 + 1;
    let Some(span) = mine.timeline.span_from(start, hint) else {
        return s;
    };
    let sent = span.first_sent_ns;
    let delay = sent - c.t_return_ns;
    s.first_sent_ns = Some(sent);
    s.wire_delay_ns = Some(delay);
    if delay >= threshold_ns {
        let zero_window = theirs
            .zero_windows
            .iter()
            .any(|&(from, to)| from < sent && to > c.t_return_ns);
        let in_flight = start - mine.timeline.acked_at(c.t_return_ns).unwrap_or(1);
        s.held_by = Some(if zero_window {
            HeldBy::ZeroWindow
        } else if in_flight <= 0 {
            HeldBy::Stack
        } else if in_flight <= i64::from(mine.max_payload) {
            // At most a segment unacknowledged: a congestion window is at least two, and Linux's
            // Nagle (with Minshall's change) holds a small write behind one small segment.
            HeldBy::Nagle
        } else {
            HeldBy::Window
        });
    }
    s
}

/// How long before its first byte was captured arriving the read returned, beyond 100 µs of
/// slack for the two clocks' granularity (docs/timing-model.md, Clocks).
fn causality_violation(ready_first: i64, c: &SocketCall) -> Option<i64> {
    let early = ready_first - c.t_return_ns;
    (early > 100_000).then_some(early)
}

fn udp_read(
    analysis: &Analysis,
    m: &mut UdpMatch,
    idx: usize,
    c: &SocketCall,
    wait: Option<WaitWindow>,
    threshold_ns: i64,
) -> ReadBlame {
    let mut r = ReadBlame::unjoined(idx, Verdict::NoData);
    r.wait = wait;
    if c.bytes < 0 || c.peek {
        return r;
    }
    let Some((ts, fi)) = m.take(true, c.bytes) else {
        r.verdict = Verdict::NotCaptured;
        return r;
    };
    r.flow_id = Some(analysis.flows[fi].id);
    r.segments = 1;
    r.timing = match &wait {
        Some(w) => ReadTiming::compute_after_wait(w, c.t_call_ns, c.t_return_ns, ts, ts, ts),
        None => ReadTiming::compute(c.t_call_ns, c.t_return_ns, ts, ts, ts),
    };
    r.verdict = r.timing.verdict(threshold_ns);
    r.causality_violation_ns = causality_violation(ts, c);
    r
}

/// A TCP read's timing; its verdict is the caller's to give (idle or not).
fn read_blame(
    analysis: &Analysis,
    idx: usize,
    c: &SocketCall,
    joined: Option<Joined>,
    wait: Option<WaitWindow>,
    hint: &mut usize,
) -> ReadBlame {
    let mut r = ReadBlame::unjoined(idx, Verdict::NoData);
    r.wait = wait;
    let Some(Joined::Tcp { flow, peer_dir }) = joined else {
        r.verdict = Verdict::NotCaptured;
        return r;
    };
    r.flow_id = Some(analysis.flows[flow].id);
    if c.bytes <= 0 || c.peek {
        return r;
    }
    let dir = &analysis.flows[flow].dirs[peer_dir];
    if dir.isn.is_none() && c.seq.is_none() {
        r.verdict = Verdict::Unaligned;
        return r;
    }
    // Stream byte k is position k + 1.
    let start = c.offset as i64 + 1;
    let end = start + c.bytes;
    let times = dir.timeline.range(start, end, hint);
    r.segments = times.spans;
    let (ready_last, nominal, rexmit) = (
        times.latest_delivered_ns,
        times.latest_first_sent_ns,
        times.retransmitted_bytes,
    );
    let Some((ready_first, first_sent)) = times.first.filter(|_| times.complete) else {
        r.verdict = Verdict::NotCaptured;
        return r;
    };
    r.timing = match &wait {
        Some(w) => ReadTiming::compute_after_wait(
            w,
            c.t_call_ns,
            c.t_return_ns,
            ready_first,
            ready_last,
            first_sent,
        ),
        None => ReadTiming::compute(c.t_call_ns, c.t_return_ns, ready_first, ready_last, nominal),
    };
    r.timing.retransmitted_bytes = rexmit;
    let f = &analysis.flows[flow];
    let from = wait.map_or(c.t_call_ns, |w| w.call_ns);
    r.stall_held = r.timing.take_stall(
        from,
        &f.dirs[1 - peer_dir].nagle_holds,
        &f.dirs[peer_dir].nagle_holds,
    );
    r.causality_violation_ns = causality_violation(ready_first, c);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn peer_slow_when_the_call_waits_for_data_not_yet_sent() {
        // recv called at 0, data sent and delivered at 200 ms, returned at 200.1 ms.
        let t = ReadTiming::compute(0, 200 * MS + 100_000, 200 * MS, 200 * MS, 200 * MS);
        assert_eq!(
            (
                t.network_wait_ns,
                t.peer_wait_ns,
                t.loss_delay_ns,
                t.buffer_wait_ns
            ),
            (200 * MS, 200 * MS, 0, 0)
        );
        assert_eq!(t.wakeup_ns, 100_000);
        assert_eq!(t.verdict(MS), Verdict::PeerSlow);
    }

    #[test]
    fn app_late_when_data_waited_in_the_buffer() {
        // data delivered at 10 ms, recv called at 160 ms.
        let t = ReadTiming::compute(160 * MS, 160 * MS + 20_000, 10 * MS, 10 * MS, 10 * MS);
        assert_eq!((t.network_wait_ns, t.buffer_wait_ns), (0, 150 * MS));
        assert_eq!(t.verdict(MS), Verdict::AppLate);
    }

    #[test]
    fn loss_when_a_retransmission_delivered_the_bytes() {
        // first sent at 5 ms, lost, resent and delivered at 210 ms; recv called at 1 ms.
        let t = ReadTiming::compute(MS, 210 * MS + 50_000, 210 * MS, 210 * MS, 5 * MS);
        assert_eq!(t.network_wait_ns, 209 * MS);
        assert_eq!(t.loss_delay_ns, 205 * MS);
        assert_eq!(t.peer_wait_ns, 4 * MS);
        assert_eq!(t.verdict(MS), Verdict::Loss);
    }

    #[test]
    fn fast_reads_are_ok() {
        let t = ReadTiming::compute(0, 30_000, 10_000, 10_000, 10_000);
        assert_eq!(t.verdict(MS), Verdict::Ok);
    }

    #[test]
    fn v4_mapped_addresses_match_v4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(a), "127.0.0.1:80".parse::<SocketAddr>().unwrap());
    }
}
