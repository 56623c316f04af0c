//! The join of socket calls with the capture, and the timing model (docs/timing-model.md): for
//! each read, how long it waited on the network (loss, or a peer that had not sent yet), how
//! long the data sat in the socket buffer before the program asked for it, and how long the
//! kernel took to wake the program.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::flows::{Analysis, Protocol};

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
    pub peek: bool,
    pub test: Option<String>,
    /// Open calls: the socket's addresses.
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub tcp: bool,
}

/// The kind of a socket call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Open,
    Recv,
    Send,
    Close,
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
}

impl Verdict {
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
    pub wakeup_ns: i64,
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
            wakeup_ns: (t_return - t_call.max(ready_last)).max(0),
            retransmitted_bytes: 0,
        }
    }

    /// The largest cause, if it reaches `threshold_ns`.
    pub fn verdict(&self, threshold_ns: i64) -> Verdict {
        let causes = [
            (self.loss_delay_ns, Verdict::Loss),
            (self.peer_wait_ns, Verdict::PeerSlow),
            (self.buffer_wait_ns, Verdict::AppLate),
            (self.wakeup_ns, Verdict::WakeupLate),
        ];
        let (ns, v) = causes
            .into_iter()
            .max_by_key(|(ns, _)| *ns)
            .expect("four causes");
        if ns >= threshold_ns {
            v
        } else {
            Verdict::Ok
        }
    }
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
}

/// One write, joined to the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTiming {
    pub call: usize,
    pub flow_id: Option<u32>,
    pub send_blocked_ns: i64,
    /// First byte captured on the wire minus the return of the send.
    pub wire_delay_ns: Option<i64>,
}

/// The result of the join.
#[derive(Debug, Clone, Default)]
pub struct Blame {
    pub reads: Vec<ReadBlame>,
    pub sends: Vec<SendTiming>,
    /// Streams recorded by the program but not found in the capture (Unix sockets never are;
    /// these are connections outside the filter or interface, or before the capture started).
    pub unmatched_streams: Vec<(u32, u64, Option<SocketAddr>, Option<SocketAddr>)>,
    /// Reads more than 100 µs before their bytes were captured.
    pub causality_violations: usize,
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

/// Joins `calls` to `analysis` and computes the timing of every read and send.
pub fn blame(analysis: &Analysis, calls: &[SocketCall], threshold_ns: i64) -> Blame {
    // Flows by endpoint pair, in capture order (a port pair can be reused).
    let mut by_pair: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, f) in analysis.flows.iter().enumerate() {
        if f.protocol != Protocol::Tcp {
            continue;
        }
        let a = SocketAddr::new(f.endpoints[0].addr, f.endpoints[0].port);
        let b = SocketAddr::new(f.endpoints[1].addr, f.endpoints[1].port);
        by_pair.entry((a, b)).or_default().push(i);
        by_pair.entry((b, a)).or_default().push(i);
    }
    // Each stream's flow and the index of the peer's direction in it.
    let mut streams: HashMap<(u32, u64), Option<(usize, usize)>> = HashMap::new();
    let mut out = Blame::default();
    for c in calls.iter().filter(|c| c.kind == CallKind::Open && c.tcp) {
        let (Some(local), Some(peer)) = (c.local.map(canonical), c.peer.map(canonical)) else {
            continue;
        };
        let found = by_pair.get(&(local, peer)).and_then(|cands| {
            // The flow that was alive when the socket opened: the last one started by then
            // (with a little slack for the capture's clock granularity).
            cands
                .iter()
                .copied()
                .rfind(|&i| analysis.flows[i].first_ts_ns <= c.t_return_ns + 1_000_000)
                .or_else(|| cands.first().copied())
        });
        let entry = found.map(|i| {
            let f = &analysis.flows[i];
            let peer_dir =
                usize::from(SocketAddr::new(f.endpoints[0].addr, f.endpoints[0].port) != peer);
            (i, peer_dir)
        });
        if entry.is_none() {
            out.unmatched_streams
                .push((c.pid, c.stream, c.local, c.peer));
        }
        streams.insert((c.pid, c.stream), entry);
    }
    for (idx, c) in calls.iter().enumerate() {
        let joined = streams.get(&(c.pid, c.stream)).copied().flatten();
        match c.kind {
            CallKind::Recv if c.tcp => {
                out.reads
                    .push(read_blame(analysis, idx, c, joined, threshold_ns))
            }
            CallKind::Send if c.tcp => {
                let wire = joined.and_then(|(fi, peer_dir)| {
                    let dir = &analysis.flows[fi].dirs[1 - peer_dir];
                    dir.isn?;
                    let span = dir.timeline.span_at(c.offset as i64 + 1)?;
                    (c.bytes > 0).then(|| span.first_sent_ns - c.t_return_ns)
                });
                out.sends.push(SendTiming {
                    call: idx,
                    flow_id: joined.map(|(fi, _)| analysis.flows[fi].id),
                    send_blocked_ns: c.t_return_ns - c.t_call_ns,
                    wire_delay_ns: wire,
                });
            }
            _ => {}
        }
    }
    out.causality_violations = out
        .reads
        .iter()
        .filter(|r| r.causality_violation_ns.is_some())
        .count();
    out
}

fn read_blame(
    analysis: &Analysis,
    idx: usize,
    c: &SocketCall,
    joined: Option<(usize, usize)>,
    threshold_ns: i64,
) -> ReadBlame {
    let mut r = ReadBlame {
        call: idx,
        flow_id: joined.map(|(fi, _)| analysis.flows[fi].id),
        timing: ReadTiming::default(),
        verdict: Verdict::NoData,
        causality_violation_ns: None,
    };
    let Some((fi, peer_dir)) = joined else {
        r.verdict = Verdict::NotCaptured;
        return r;
    };
    if c.bytes <= 0 || c.peek {
        return r;
    }
    let dir = &analysis.flows[fi].dirs[peer_dir];
    if dir.isn.is_none() {
        r.verdict = Verdict::Unaligned;
        return r;
    }
    // Stream byte k is position k + 1.
    let start = c.offset as i64 + 1;
    let end = start + c.bytes;
    let spans = dir.timeline.spans();
    let first = spans.partition_point(|s| s.end <= start);
    let (mut ready_last, mut nominal, mut rexmit, mut covered) = (i64::MIN, i64::MIN, 0u64, 0i64);
    let mut ready_first = None;
    for s in spans[first..].iter().take_while(|s| s.start < end) {
        let overlap = s.end.min(end) - s.start.max(start);
        if overlap <= 0 {
            continue;
        }
        if s.start <= start {
            ready_first = Some(s.delivered_ns);
        }
        covered += overlap;
        ready_last = ready_last.max(s.delivered_ns);
        nominal = nominal.max(s.first_sent_ns);
        if s.transmissions > 1 {
            rexmit += overlap as u64;
        }
    }
    let Some(ready_first) = ready_first.filter(|_| covered == end - start) else {
        r.verdict = Verdict::NotCaptured;
        return r;
    };
    r.timing = ReadTiming::compute(c.t_call_ns, c.t_return_ns, ready_first, ready_last, nominal);
    r.timing.retransmitted_bytes = rexmit;
    r.verdict = r.timing.verdict(threshold_ns);
    if ready_first > c.t_return_ns + 100_000 {
        r.causality_violation_ns = Some(ready_first - c.t_return_ns);
    }
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
