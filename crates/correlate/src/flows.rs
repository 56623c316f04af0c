//! TCP and UDP flow analysis: one pass over decoded packets, per connection and direction.
//!
//! Classification works on byte ranges, not timing heuristics. A data segment is a
//! retransmission when it carries sequence space an earlier captured segment carried (tcptrace's
//! definition, SYN and FIN included), spurious when all of that space was already acknowledged,
//! out-of-order when it is new yet fills a hole. Like tcptrace, a segment sent while the peer
//! advertised a zero window is a zero-window probe, not a retransmission. Unlike tcptrace,
//! capture duplicates (the same packet seen twice, as `-i any` shows loopback traffic) are
//! recognised and left out of every count.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::decode::{tcp_flags as F, LinkDirection, Segment, TcpHeader, Transport};
use crate::seq::{SeqNumber, SeqUnwrapper};
use crate::timeline::ByteTimeline;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// What a packet was, from the point of view of its direction's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// Carries only sequence space never captured before, at or after the front.
    New,
    /// Carries sequence space captured before.
    Retransmission,
    /// A retransmission of sequence space the receiver had already acknowledged.
    SpuriousRetransmission,
    /// New sequence space behind the front: fills a hole.
    OutOfOrder,
    /// Sent while the peer advertised a zero window.
    ZeroWindowProbe,
    /// An empty segment one byte behind the front, after the stream went idle.
    KeepAlive,
    /// A pure ACK repeating the previous ACK while data is outstanding.
    DuplicateAck,
    /// A pure ACK (or window update).
    Ack,
    /// SYN, FIN or RST with nothing else to classify.
    Control,
    /// The same packet captured a second time (e.g. the incoming copy on `-i any`).
    CaptureDuplicate,
    /// A UDP datagram.
    Datagram,
}

impl PacketClass {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketClass::New => "new",
            PacketClass::Retransmission => "retransmission",
            PacketClass::SpuriousRetransmission => "spurious-retransmission",
            PacketClass::OutOfOrder => "out-of-order",
            PacketClass::ZeroWindowProbe => "zero-window-probe",
            PacketClass::KeepAlive => "keep-alive",
            PacketClass::DuplicateAck => "duplicate-ack",
            PacketClass::Ack => "ack",
            PacketClass::Control => "control",
            PacketClass::CaptureDuplicate => "capture-duplicate",
            PacketClass::Datagram => "datagram",
        }
    }
}

/// Counters of one direction of a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub packets: u64,
    /// Segments with payload, retransmissions included (tcptrace's "actual data pkts").
    pub data_packets: u64,
    pub payload_bytes: u64,
    /// Payload bytes never captured before.
    pub unique_bytes: u64,
    /// Segments carrying sequence space captured before, SYN and FIN included (tcptrace's
    /// "rexmt data pkts").
    pub retransmitted_packets: u64,
    /// Payload bytes carried again.
    pub retransmitted_bytes: u64,
    pub spurious_retransmissions: u64,
    pub out_of_order_packets: u64,
    /// Holes in the captured sequence space never filled, and the bytes missing.
    pub gaps: u64,
    pub gap_bytes: u64,
    /// ACKs this direction sent advertising a zero window.
    pub zero_window_packets: u64,
    pub zero_window_probes: u64,
    pub keep_alives: u64,
    pub duplicate_acks: u64,
    /// Packets carrying SACK blocks.
    pub sack_packets: u64,
    pub syn_packets: u64,
    pub fin_packets: u64,
    pub rst_packets: u64,
    pub capture_duplicates: u64,
}

/// One direction of a flow: packets sent by `Flow::endpoints[i]`.
#[derive(Debug, Clone, Default)]
pub struct Direction {
    pub stats: DirectionStats,
    /// The ISN, when this direction's SYN was captured.
    pub isn: Option<SeqNumber>,
    /// Sequence space of this direction, with what the timing model needs per byte.
    pub timeline: ByteTimeline,
    /// RTT samples (ns), taken from ACKs of this direction's data by Karn's rule.
    pub rtt_samples_ns: Vec<i64>,
    /// UDP: (capture time, payload length) of every datagram.
    pub datagrams: Vec<(i64, u32)>,
    /// Intervals `[from, to)` during which this direction advertised a zero window (`to` is
    /// `i64::MAX` when it never reopened in the capture).
    pub zero_windows: Vec<(i64, i64)>,
    /// The largest payload of one segment: the MSS as far as the capture shows it.
    pub max_payload: u32,
    /// Nagle + delayed-ACK stalls of this direction, `[from, to)`: from a data segment that was
    /// all this direction had unacknowledged to the pure ACK that covered it at least
    /// `NAGLE_MIN_HOLD_NS` later, when the direction's next data segment followed that ACK
    /// within `NAGLE_RELEASE_NS`: a write held back by Nagle until the peer's delayed ACK.
    pub nagle_holds: Vec<(i64, i64)>,
    nagle: NagleWatch,
    /// With `keep_request_heads`: the first bytes of each turn this direction began, by position.
    pub turn_heads: Vec<TurnHead>,
    /// This direction sent data since the other one last did.
    turn_open: bool,
    pub first_ts_ns: Option<i64>,
    pub last_ts_ns: Option<i64>,
    unwrap: Option<SeqUnwrapper>,
    window_scale: Option<u8>,
    /// Window this direction last advertised, scaled, as tcptrace keeps it (`win_last`).
    last_window: u64,
    /// (ACK number, raw window) of the last ACK this direction sent.
    last_ack: Option<(SeqNumber, u16)>,
    recent: [Fingerprint; 4],
    recent_next: usize,
}

/// A hold shorter than this is no delayed ACK (Linux delays ACKs 40 ms, at least 4 ms with
/// quick ACKs off).
pub const NAGLE_MIN_HOLD_NS: i64 = 5_000_000;
/// The held segment leaves at once when the ACK comes: within this of it.
pub const NAGLE_RELEASE_NS: i64 = 1_000_000;

/// What a direction's Nagle watch has seen: a lone unacknowledged data segment, and a pure ACK
/// that covered it late (which makes a hold if the next data segment follows it at once).
#[derive(Debug, Clone, Copy, Default)]
struct NagleWatch {
    /// (capture time, end position) of a data segment sent with nothing else unacknowledged.
    lone: Option<(i64, i64)>,
    /// (the lone segment's time, the late pure ACK's time).
    released: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    len: u32,
    ip_id: Option<u16>,
    link_outgoing: Option<bool>,
    valid: bool,
}

impl Direction {
    /// A new data segment `[start, end)` at `ts`, with the peer's latest ACK at `acked`: one
    /// that follows a late pure ACK at once was held (Nagle); one sent with nothing else
    /// unacknowledged is watched.
    fn watch_nagle(&mut self, ts: i64, start: i64, end: i64, acked: Option<i64>) {
        if let Some((from, ack_ts)) = self.nagle.released.take() {
            if ts - ack_ts <= NAGLE_RELEASE_NS {
                self.nagle_holds.push((from, ack_ts));
            }
        }
        let alone = acked.is_some_and(|a| a >= start);
        self.nagle.lone = alone.then_some((ts, end));
    }

    /// The peer acknowledged this direction up to `ack_pos` at `ts`: a pure ACK of the lone
    /// segment that came late may have released a held write.
    fn nagle_acked(&mut self, ts: i64, ack_pos: i64, pure: bool) {
        let Some((sent, end)) = self.nagle.lone else {
            return;
        };
        if ack_pos < end {
            return;
        }
        self.nagle.lone = None;
        if pure && ts - sent >= NAGLE_MIN_HOLD_NS {
            self.nagle.released = Some((sent, ts));
        }
    }
}

impl Direction {
    /// The base of this direction's positions (ISN, or one before the first sequence number).
    pub fn base(&self) -> Option<SeqNumber> {
        self.unwrap.map(|u| u.base())
    }

    /// True when the SYN was captured, so stream offsets are exact.
    pub fn aligned(&self) -> bool {
        self.isn.is_some()
    }

    /// The `q`-quantile (0..=1) of the RTT samples, nearest-rank.
    pub fn rtt_quantile_ns(&self, q: f64) -> Option<i64> {
        quantile(&self.rtt_samples_ns, q)
    }
}

/// Nearest-rank quantile of unsorted samples.
pub fn quantile(samples: &[i64], q: f64) -> Option<i64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    let (_, x, _) = v.select_nth_unstable(rank);
    Some(*x)
}

/// A TCP connection or UDP flow. `endpoints[0]` ("a") opened it: the SYN's sender when the
/// handshake was captured, else the sender of the first packet.
#[derive(Debug, Clone)]
pub struct Flow {
    /// 1-based, in order of the flow's first packet.
    pub id: u32,
    pub protocol: Protocol,
    pub endpoints: [Endpoint; 2],
    pub dirs: [Direction; 2],
    pub first_ts_ns: i64,
    pub last_ts_ns: i64,
    pub syn_ts_ns: Option<i64>,
    /// The last SYN before the first SYN-ACK: the one the peer answered. Later than `syn_ts_ns`
    /// when SYNs were lost (or a full listen backlog ignored them) and retransmitted.
    pub syn_answered_ts_ns: Option<i64>,
    pub syn_ack_ts_ns: Option<i64>,
    /// The RST the SYN's receiver answered with before any SYN-ACK: the connection was refused.
    pub syn_rst_ts_ns: Option<i64>,
    /// Time from the SYN to the ACK of the SYN-ACK, as seen from the capture point: a full
    /// round trip wherever the capture sat.
    pub handshake_rtt_ns: Option<i64>,
}

/// A packet as the `packets` table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRecord {
    pub ts_ns: i64,
    pub flow_id: u32,
    /// 0: sent by endpoint a, 1: by endpoint b.
    pub dir: u8,
    /// Sequence number relative to the direction's base (ISN when aligned).
    pub rel_seq: i64,
    /// ACK number relative to the other direction's base, when the ACK flag is set.
    pub rel_ack: Option<i64>,
    pub payload_len: u32,
    pub flags: u8,
    /// Advertised window, scaled when both SYNs negotiated scaling.
    pub window: u64,
    pub class: PacketClass,
}

/// Counts of what the capture held besides analysable packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureQuality {
    pub frames: u64,
    pub tcp_packets: u64,
    pub udp_packets: u64,
    /// IP packets that are neither TCP nor UDP, and non-first fragments.
    pub other_ip: u64,
    /// Frames that are not IP (ARP, ...).
    pub non_ip: u64,
    /// Frames cut by the snaplen before the end of the transport header.
    pub truncated: u64,
    /// Frames with malformed headers or an unsupported link type.
    pub undecodable: u64,
    pub capture_duplicates: u64,
    pub first_ts_ns: Option<i64>,
    pub last_ts_ns: Option<i64>,
}

/// What [`Analyzer`] keeps besides flows.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyzerConfig {
    /// Keep a [`PacketRecord`] per TCP/UDP packet (for the `packets` table).
    pub keep_packets: bool,
    /// Keep the first payload bytes of each turn of a TCP connection ([`TurnHead`]), to name
    /// requests (`analyze`; `flows` has no use for them).
    pub keep_request_heads: bool,
}

/// The first captured payload bytes of a turn's first data segment: a direction sending after
/// the other one did (or first): the start of a request or of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnHead {
    /// The position of its first byte.
    pub pos: i64,
    len: u8,
    bytes: [u8; crate::request::HEAD_BYTES],
}

impl TurnHead {
    fn new(pos: i64, payload: &[u8]) -> TurnHead {
        let n = payload.len().min(crate::request::HEAD_BYTES);
        let mut bytes = [0; crate::request::HEAD_BYTES];
        bytes[..n].copy_from_slice(&payload[..n]);
        TurnHead {
            pos,
            len: n as u8,
            bytes,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The result of a pass over a capture.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub flows: Vec<Flow>,
    pub packets: Vec<PacketRecord>,
    pub quality: CaptureQuality,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    protocol: Protocol,
    lo: Endpoint,
    hi: Endpoint,
}

impl FlowKey {
    fn new(protocol: Protocol, x: Endpoint, y: Endpoint) -> Self {
        if x <= y {
            FlowKey {
                protocol,
                lo: x,
                hi: y,
            }
        } else {
            FlowKey {
                protocol,
                lo: y,
                hi: x,
            }
        }
    }
}

/// One pass over packets in capture order.
#[derive(Debug, Default)]
pub struct Analyzer {
    config: AnalyzerConfig,
    flows: Vec<Flow>,
    /// Flows by key. foldhash, randomly seeded per process: SipHash was a tenth of the
    /// analysing thread's time, and a capture cannot be crafted against a seed it never sees.
    index: HashMap<FlowKey, usize, foldhash::fast::RandomState>,
    last: Option<(FlowKey, usize)>,
    packets: Vec<PacketRecord>,
    quality: CaptureQuality,
}

impl Analyzer {
    pub fn new(config: AnalyzerConfig) -> Self {
        Analyzer {
            config,
            ..Default::default()
        }
    }

    /// Counts a frame that was not decoded (see [`crate::decode::DecodeError`]).
    pub fn record_undecoded(&mut self, ts_ns: i64, err: &crate::decode::DecodeError) {
        use crate::decode::DecodeError as E;
        self.note_frame(ts_ns);
        match err {
            E::NotIp => self.quality.non_ip += 1,
            E::NotTcpOrUdp(_) | E::Fragment => self.quality.other_ip += 1,
            E::Truncated(_) => self.quality.truncated += 1,
            _ => self.quality.undecodable += 1,
        }
    }

    fn note_frame(&mut self, ts_ns: i64) {
        let q = &mut self.quality;
        q.frames += 1;
        q.first_ts_ns = Some(q.first_ts_ns.map_or(ts_ns, |t| t.min(ts_ns)));
        q.last_ts_ns = Some(q.last_ts_ns.map_or(ts_ns, |t| t.max(ts_ns)));
    }

    /// Decodes and analyses one captured frame.
    pub fn add_frame(&mut self, ts_ns: i64, link_type: u16, data: &[u8], orig_len: u32) {
        match crate::decode::decode_frame(link_type, data, orig_len) {
            Ok(seg) => {
                let payload = if self.config.keep_request_heads {
                    seg.captured_payload(data)
                } else {
                    &[]
                };
                self.add_segment_with_payload(ts_ns, &seg, payload)
            }
            Err(e) => self.record_undecoded(ts_ns, &e),
        }
    }

    /// Analyses one decoded packet.
    pub fn add_segment(&mut self, ts_ns: i64, seg: &Segment) {
        self.add_segment_with_payload(ts_ns, seg, &[]);
    }

    /// Analyses one decoded packet and the payload bytes the capture kept of it (used with
    /// `keep_request_heads`; at most [`crate::request::HEAD_BYTES`] are looked at).
    pub fn add_segment_with_payload(&mut self, ts_ns: i64, seg: &Segment, payload: &[u8]) {
        self.note_frame(ts_ns);
        let src = Endpoint {
            addr: seg.src,
            port: seg.src_port,
        };
        let dst = Endpoint {
            addr: seg.dst,
            port: seg.dst_port,
        };
        match seg.transport {
            Transport::Tcp(h) => {
                self.quality.tcp_packets += 1;
                let idx = self.tcp_flow(ts_ns, src, dst, &h);
                self.add_tcp(idx, ts_ns, src, seg, &h, payload);
            }
            Transport::Udp => {
                self.quality.udp_packets += 1;
                let key = FlowKey::new(Protocol::Udp, src, dst);
                let idx = self
                    .lookup(key)
                    .unwrap_or_else(|| self.new_flow(key, Protocol::Udp, src, dst, ts_ns));
                self.add_udp(idx, ts_ns, src, seg.payload_len);
            }
        }
    }

    fn lookup(&mut self, key: FlowKey) -> Option<usize> {
        if let Some((k, i)) = self.last {
            if k == key {
                return Some(i);
            }
        }
        let i = *self.index.get(&key)?;
        self.last = Some((key, i));
        Some(i)
    }

    fn new_flow(
        &mut self,
        key: FlowKey,
        protocol: Protocol,
        a: Endpoint,
        b: Endpoint,
        ts_ns: i64,
    ) -> usize {
        let idx = self.flows.len();
        self.flows.push(Flow {
            id: idx as u32 + 1,
            protocol,
            endpoints: [a, b],
            dirs: Default::default(),
            first_ts_ns: ts_ns,
            last_ts_ns: ts_ns,
            syn_ts_ns: None,
            syn_answered_ts_ns: None,
            syn_ack_ts_ns: None,
            syn_rst_ts_ns: None,
            handshake_rtt_ns: None,
        });
        self.index.insert(key, idx);
        self.last = Some((key, idx));
        idx
    }

    /// Finds the connection of a TCP packet, starting a new one for a SYN that reuses the ports
    /// of an earlier connection with a different ISN.
    fn tcp_flow(&mut self, ts_ns: i64, src: Endpoint, dst: Endpoint, h: &TcpHeader) -> usize {
        let key = FlowKey::new(Protocol::Tcp, src, dst);
        let syn_only = h.has(F::SYN) && !h.has(F::ACK);
        match self.lookup(key) {
            Some(i) => {
                let f = &self.flows[i];
                let d = usize::from(f.endpoints[0] != src);
                let dir = &f.dirs[d];
                let reused = syn_only && dir.stats.packets > 0 && dir.isn != Some(h.seq);
                if !reused {
                    return i;
                }
                self.new_flow(key, Protocol::Tcp, src, dst, ts_ns)
            }
            None => {
                // The opener is the SYN's sender; a SYN-ACK first means its receiver opened.
                let (a, b) = if h.has(F::SYN) && h.has(F::ACK) {
                    (dst, src)
                } else {
                    (src, dst)
                };
                self.new_flow(key, Protocol::Tcp, a, b, ts_ns)
            }
        }
    }

    fn add_udp(&mut self, idx: usize, ts_ns: i64, src: Endpoint, len: u32) {
        let flow = &mut self.flows[idx];
        flow.last_ts_ns = flow.last_ts_ns.max(ts_ns);
        let d = usize::from(flow.endpoints[0] != src);
        let dir = &mut flow.dirs[d];
        dir.first_ts_ns.get_or_insert(ts_ns);
        dir.last_ts_ns = Some(ts_ns);
        dir.stats.packets += 1;
        dir.stats.payload_bytes += u64::from(len);
        dir.stats.unique_bytes += u64::from(len);
        if len > 0 {
            dir.stats.data_packets += 1;
        }
        dir.datagrams.push((ts_ns, len));
        if self.config.keep_packets {
            self.packets.push(PacketRecord {
                ts_ns,
                flow_id: flow.id,
                dir: d as u8,
                rel_seq: 0,
                rel_ack: None,
                payload_len: len,
                flags: 0,
                window: 0,
                class: PacketClass::Datagram,
            });
        }
    }

    fn add_tcp(
        &mut self,
        idx: usize,
        ts_ns: i64,
        src: Endpoint,
        seg: &Segment,
        h: &TcpHeader,
        payload_bytes: &[u8],
    ) {
        let keep_heads = self.config.keep_request_heads;
        let flow = &mut self.flows[idx];
        flow.last_ts_ns = flow.last_ts_ns.max(ts_ns);
        let d = usize::from(flow.endpoints[0] != src);
        let [first, second] = &mut flow.dirs;
        let (this, other) = if d == 0 {
            (first, second)
        } else {
            (second, first)
        };

        let fp = Fingerprint {
            seq: h.seq.0,
            ack: h.ack.0,
            flags: h.flags,
            window: h.window,
            len: seg.payload_len,
            ip_id: seg.ip_id,
            link_outgoing: match seg.link_direction {
                LinkDirection::Outgoing => Some(true),
                LinkDirection::Incoming => Some(false),
                LinkDirection::Unknown => None,
            },
            valid: true,
        };
        let syn = h.has(F::SYN);
        let fin = h.has(F::FIN);
        let rst = h.has(F::RST);
        let ack_flag = h.has(F::ACK);
        let payload = i64::from(seg.payload_len);

        if this.is_capture_duplicate(&fp) {
            this.stats.capture_duplicates += 1;
            self.quality.capture_duplicates += 1;
            if self.config.keep_packets {
                let rel_seq = this.unwrap.map_or(0, |u| u.position(h.seq));
                let rel_ack = other.unwrap.filter(|_| ack_flag).map(|u| u.position(h.ack));
                self.packets.push(PacketRecord {
                    ts_ns,
                    flow_id: flow.id,
                    dir: d as u8,
                    rel_seq,
                    rel_ack,
                    payload_len: seg.payload_len,
                    flags: h.flags,
                    window: u64::from(h.window),
                    class: PacketClass::CaptureDuplicate,
                });
            }
            return;
        }
        this.recent[this.recent_next] = fp;
        this.recent_next = (this.recent_next + 1) % this.recent.len();

        this.stats.packets += 1;
        this.first_ts_ns.get_or_insert(ts_ns);
        this.last_ts_ns = Some(ts_ns);

        // Sequence space of this direction.
        if syn {
            this.stats.syn_packets += 1;
            if this.unwrap.is_none() {
                this.isn = Some(h.seq);
                this.unwrap = Some(SeqUnwrapper::new(h.seq));
            }
            if let Some(ws) = h.window_scale {
                this.window_scale = Some(ws);
            }
            if ack_flag {
                flow.syn_ack_ts_ns.get_or_insert(ts_ns);
            } else {
                flow.syn_ts_ns.get_or_insert(ts_ns);
                if flow.syn_ack_ts_ns.is_none() {
                    flow.syn_answered_ts_ns = Some(ts_ns);
                }
            }
        }
        if fin {
            this.stats.fin_packets += 1;
        }
        if rst {
            this.stats.rst_packets += 1;
            if d == 1 && flow.syn_ts_ns.is_some() && flow.syn_ack_ts_ns.is_none() {
                flow.syn_rst_ts_ns.get_or_insert(ts_ns);
            }
        }
        let unwrap = this
            .unwrap
            .get_or_insert_with(|| SeqUnwrapper::new(SeqNumber(h.seq.0.wrapping_sub(1))));
        let start = unwrap.position(h.seq);
        let seq_len = payload + i64::from(syn) + i64::from(fin);
        unwrap.advance_to(start + seq_len);

        if payload > 0 {
            this.stats.data_packets += 1;
            this.stats.payload_bytes += payload as u64;
            this.max_payload = this.max_payload.max(seg.payload_len);
        }

        // Windows: both SYNs must offer scaling for it to apply, and never to a SYN.
        let scale = match (this.window_scale, other.window_scale) {
            (Some(s), Some(_)) if !syn => u32::from(s),
            _ => 0,
        };
        let window = u64::from(h.window) << scale;

        let mut class = if syn || fin || rst {
            PacketClass::Control
        } else {
            PacketClass::Ack
        };
        let front_before = this.timeline.front();
        if seq_len > 0 && !rst {
            // tcptrace: data sent into a zero window is a probe, not a retransmission.
            if other.stats.packets > 0 && other.last_window == 0 {
                this.stats.zero_window_probes += 1;
                class = PacketClass::ZeroWindowProbe;
                this.timeline.transmit(start, start + seq_len, ts_ns);
                this.stats.unique_bytes += payload as u64;
            } else {
                let syn_seen = syn && this.timeline.contains(start);
                let fin_seen = fin && this.timeline.contains(start + seq_len - 1);
                let out = this.timeline.transmit(start, start + seq_len, ts_ns);
                if out.seen_before > 0 {
                    this.stats.retransmitted_packets += 1;
                    // Payload bytes only: leave out the SYN and FIN positions.
                    let phantom = i64::from(syn_seen) + i64::from(fin_seen);
                    let data_rexmit = (out.seen_before - phantom).clamp(0, payload);
                    this.stats.retransmitted_bytes += data_rexmit as u64;
                    this.stats.unique_bytes += (payload - data_rexmit) as u64;
                    if out.acked_before == out.seen_before {
                        this.stats.spurious_retransmissions += 1;
                        class = PacketClass::SpuriousRetransmission;
                    } else {
                        class = PacketClass::Retransmission;
                    }
                } else {
                    this.stats.unique_bytes += payload as u64;
                    if out.fills_hole {
                        this.stats.out_of_order_packets += 1;
                        class = PacketClass::OutOfOrder;
                    } else if payload > 0 {
                        class = PacketClass::New;
                        let acked = other.last_ack.map(|(a, _)| unwrap.position(a));
                        this.watch_nagle(ts_ns, start, start + seq_len, acked);
                        // A turn: this direction sends after the other one did.
                        if !this.turn_open && keep_heads && !payload_bytes.is_empty() {
                            this.turn_heads.push(TurnHead::new(start, payload_bytes));
                        }
                        (this.turn_open, other.turn_open) = (true, false);
                    }
                }
            }
        } else if seq_len == 0 && !rst && front_before.is_some_and(|f| start == f - 1) {
            this.stats.keep_alives += 1;
            class = PacketClass::KeepAlive;
        }
        if h.sack_blocks > 0 {
            this.stats.sack_packets += 1;
        }

        // ACK of the other direction's data.
        let mut rel_ack = None;
        if ack_flag {
            if let Some(u) = other.unwrap {
                let ack_pos = u.position(h.ack);
                rel_ack = Some(ack_pos);
                if let Some(rtt) = other.timeline.ack(ack_pos, ts_ns) {
                    other.rtt_samples_ns.push(rtt);
                }
                if ack_pos == 1 && other.isn.is_some() && !syn && flow.handshake_rtt_ns.is_none() {
                    if let Some(t) = flow.syn_ts_ns {
                        flow.handshake_rtt_ns = Some(ts_ns - t);
                    }
                }
                let pure = payload == 0 && !syn && !fin && !rst;
                other.nagle_acked(ts_ns, ack_pos, pure);
                let outstanding = other.timeline.front().is_some_and(|f| f > ack_pos);
                if pure
                    && outstanding
                    && this.last_ack == Some((h.ack, h.window))
                    && class == PacketClass::Ack
                {
                    this.stats.duplicate_acks += 1;
                    class = PacketClass::DuplicateAck;
                }
            }
            this.last_ack = Some((h.ack, h.window));
            if h.window == 0 && !syn && !rst {
                this.stats.zero_window_packets += 1;
                if this
                    .zero_windows
                    .last()
                    .is_none_or(|&(_, to)| to != i64::MAX)
                {
                    this.zero_windows.push((ts_ns, i64::MAX));
                }
            } else if h.window > 0 {
                if let Some(open) = this.zero_windows.last_mut().filter(|z| z.1 == i64::MAX) {
                    open.1 = ts_ns;
                }
            }
        }
        if !rst {
            this.last_window = if ack_flag || syn { window } else { 0 };
        }

        if self.config.keep_packets {
            self.packets.push(PacketRecord {
                ts_ns,
                flow_id: flow.id,
                dir: d as u8,
                rel_seq: start,
                rel_ack,
                payload_len: seg.payload_len,
                flags: h.flags,
                window,
                class,
            });
        }
    }

    /// The packet records kept since the last call (with `keep_packets`), in capture order: a
    /// second pass over a capture takes them frame by frame instead of holding them all.
    pub fn drain_packets(&mut self) -> std::vec::Drain<'_, PacketRecord> {
        self.packets.drain(..)
    }

    /// The flows so far (in order of their first packet; a flow's id is its index + 1) and the
    /// packet records kept since the last drain: what a `packets` table written during the
    /// pass needs.
    pub fn drain_packets_of_flows(&mut self) -> (&[Flow], std::vec::Drain<'_, PacketRecord>) {
        (&self.flows, self.packets.drain(..))
    }

    /// Ends the pass: counts the holes never filled.
    pub fn finish(mut self) -> Analysis {
        for flow in &mut self.flows {
            for dir in &mut flow.dirs {
                let (gaps, missing) = dir.timeline.gaps();
                dir.stats.gaps = gaps;
                dir.stats.gap_bytes = missing.max(0) as u64;
                // What the pass over-allocated while growing (up to half): the join runs
                // with all of this held.
                dir.timeline.shrink_to_fit();
                dir.rtt_samples_ns.shrink_to_fit();
                dir.datagrams.shrink_to_fit();
            }
        }
        self.packets.shrink_to_fit();
        Analysis {
            flows: self.flows,
            packets: self.packets,
            quality: self.quality,
        }
    }
}

impl Direction {
    fn is_capture_duplicate(&self, fp: &Fingerprint) -> bool {
        self.recent.iter().any(|r| {
            r.valid
                && r.seq == fp.seq
                && r.ack == fp.ack
                && r.flags == fp.flags
                && r.window == fp.window
                && r.len == fp.len
                && match (r.link_outgoing, fp.link_outgoing) {
                    // Cooked captures say which copy is which: one out, one in.
                    (Some(a), Some(b)) => a != b && r.ip_id == fp.ip_id,
                    // Otherwise only an IPv4 ID tells a copy from a resend (Linux numbers each
                    // packet of a connection, but sends SYN-ACKs with ID 0).
                    _ => r.ip_id.is_some_and(|id| id != 0) && r.ip_id == fp.ip_id,
                }
        })
    }
}
