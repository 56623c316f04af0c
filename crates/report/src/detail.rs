//! What the graphical renderings need beyond the analysis: which reads to show in detail, and a
//! second pass over the capture's packet records (frame by frame, nothing held but what the
//! listed reads' graphs need) that finds the packets behind each read: the ones its graph
//! draws, the one that carried its first byte (for the annotated capture), and the links from
//! packets to reads (for the Perfetto trace).

use std::collections::HashMap;

use netblame_correlate::{
    peer_direction, Analysis, Blame, PacketClass, PacketRecord, ReadBlame, SocketCall, Verdict,
};

/// Reads a report lists and draws: the slowest, then every other read that is not `ok`, worst
/// first, up to this many.
pub const MAX_LISTED_READS: usize = 60;
/// The slowest reads listed whatever their verdict.
const SLOWEST: usize = 20;
/// Packets kept for one read's graph (the segments carrying its bytes come first; a read of
/// many megabytes draws its first ones).
pub const MAX_GRAPH_PACKETS: usize = 4_000;

/// A read's time as the program lived it: from its wait's call when it had one, else from its
/// own call, to its return.
pub fn read_window(c: &SocketCall, r: &ReadBlame) -> i64 {
    c.t_return_ns - window_start(c, r)
}

/// When the program began waiting for a read's data: its wait's call, or the read's call.
pub fn window_start(c: &SocketCall, r: &ReadBlame) -> i64 {
    r.wait.map_or(c.t_call_ns, |w| w.call_ns)
}

/// What a read cost the program: its window plus the time its data waited before it.
pub fn read_cost(calls: &[SocketCall], r: &ReadBlame) -> i64 {
    read_window(&calls[r.call], r).saturating_add(r.timing.buffer_wait_ns)
}

/// Whether a read returned data the model could time.
pub fn has_data(r: &ReadBlame) -> bool {
    !matches!(r.verdict, Verdict::NoData | Verdict::Idle)
}

/// The `k` costliest reads that returned data (indices into `Blame::reads`), costliest first,
/// the earlier of equals first (as `crate::lists::ReportLists` keeps them).
pub fn slowest(calls: &[SocketCall], b: &Blame, k: usize) -> Vec<usize> {
    let mut top = crate::lists::TopK::new(k);
    for (i, r) in b.reads.iter().enumerate().filter(|(_, r)| has_data(r)) {
        top.offer(read_cost(calls, r), i as u64, || i);
    }
    top.into_sorted()
}

/// The reads shown in detail: the slowest, then the other reads whose verdict is not `ok`,
/// costliest first, up to `MAX_LISTED_READS` (indices into `Blame::reads`).
pub fn listed_reads(calls: &[SocketCall], b: &Blame) -> Vec<usize> {
    let mut listed = slowest(calls, b, SLOWEST);
    let more = slowest(calls, b, MAX_LISTED_READS);
    for i in more {
        if listed.len() >= MAX_LISTED_READS {
            break;
        }
        if b.reads[i].verdict != Verdict::Ok && !listed.contains(&i) {
            listed.push(i);
        }
    }
    // `slowest(.., MAX)` may miss a non-ok read behind many slow ok ones: look further.
    if listed.len() < MAX_LISTED_READS {
        let mut rest: Vec<usize> = (0..b.reads.len())
            .filter(|&i| {
                let r = &b.reads[i];
                has_data(r) && r.verdict != Verdict::Ok && !listed.contains(&i)
            })
            .collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(read_cost(calls, &b.reads[i])));
        listed.extend(rest.into_iter().take(MAX_LISTED_READS - listed.len()));
    }
    listed
}

/// A listed read's graph: the packets of its connection around it, in capture order.
#[derive(Debug, Clone, Default)]
pub struct ReadGraph {
    /// Index into `Blame::reads`.
    pub read: usize,
    /// The direction of the flow that carried the read's bytes (0 or 1), if joined.
    pub data_dir: Option<u8>,
    /// The program's last send on the connection before the read (index into the calls).
    pub request: Option<usize>,
    /// The read's bytes as sequence positions `[start, end)` of `data_dir`.
    pub positions: (i64, i64),
    /// Capture time range the graph shows.
    pub from_ns: i64,
    pub to_ns: i64,
    /// (frame number, record)
    pub packets: Vec<(u64, PacketRecord)>,
    /// More packets fell in the window than the graph keeps.
    pub truncated: bool,
}

impl ReadGraph {
    /// Whether a packet carried some of the read's bytes.
    pub fn carries(&self, p: &PacketRecord) -> bool {
        let (start, end) = self.positions;
        self.data_dir == Some(p.dir)
            && p.payload_len > 0
            && p.rel_seq < end
            && p.rel_seq + i64::from(p.payload_len) > start
    }
}

/// A read's byte range in its flow's sequence space: positions `[start, end)` (stream byte `k`
/// is position `k + 1`).
fn positions(c: &SocketCall) -> (i64, i64) {
    let start = (c.offset as i64).saturating_add(1);
    (start, start.saturating_add(c.bytes.max(0)))
}

/// Reads of one flow direction sorted by their first position: `(start, end, read index)`.
type Ranges = Vec<(i64, i64, usize)>;

/// What the second pass produces besides the comments and links it hands out as it goes.
#[derive(Debug, Default)]
pub struct Detail {
    pub listed: Vec<usize>,
    pub graphs: Vec<ReadGraph>,
    /// Reads whose first byte's packet was found (and, with annotations, commented).
    pub annotated: u64,
}

/// The second pass over a capture's packet records. Feed it every record in capture order
/// with its frame number (`Analyzer` with `keep_packets`, `drain_packets` after each frame).
#[derive(Debug)]
pub struct PacketPass<'a> {
    calls: &'a [SocketCall],
    blame: &'a Blame,
    /// TCP reads by flow (index: id - 1) and direction.
    tcp: Vec<[Ranges; 2]>,
    /// UDP reads by (flow id, capture time of their datagram).
    udp: HashMap<(u32, i64), Vec<usize>>,
    /// Reads whose first byte's packet was seen already.
    first_seen: Vec<bool>,
    /// Which reads get a comment on their first byte's packet.
    comment: Vec<bool>,
    graphs: Vec<ReadGraph>,
    /// Graphs of reads on each flow (index: id - 1).
    graphs_by_flow: Vec<Vec<usize>>,
    comments: Vec<String>,
    links: Vec<u64>,
    annotated: u64,
}

impl<'a> PacketPass<'a> {
    /// `comment_all`: comment every read's first packet, not only the listed reads'.
    pub fn new(
        analysis: &'a Analysis,
        calls: &'a [SocketCall],
        blame: &'a Blame,
        comment_all: bool,
    ) -> Self {
        let listed = listed_reads(calls, blame);
        let mut tcp: Vec<[Ranges; 2]> = vec![Default::default(); analysis.flows.len()];
        let mut udp: HashMap<(u32, i64), Vec<usize>> = HashMap::new();
        let mut dirs = vec![None; blame.reads.len()];
        // Only open events carry the addresses.
        let peers: HashMap<(u32, u64), std::net::SocketAddr> = calls
            .iter()
            .filter(|c| c.kind == netblame_correlate::CallKind::Open)
            .filter_map(|c| Some(((c.pid, c.stream), c.peer()?)))
            .collect();
        for (i, r) in blame.reads.iter().enumerate() {
            let c = &calls[r.call];
            let (Some(flow_id), Some(&peer)) = (r.flow_id, peers.get(&(c.pid, c.stream))) else {
                continue;
            };
            if c.bytes <= 0 || c.peek {
                continue;
            }
            if !c.tcp {
                if let Some(ts) = r.timing.ready_first_ns {
                    udp.entry((flow_id, ts)).or_default().push(i);
                }
                continue;
            }
            let Some(flow) = analysis.flows.get(flow_id as usize - 1) else {
                continue;
            };
            let d = peer_direction(flow, peer);
            if !flow.dirs[d].aligned() {
                continue;
            }
            dirs[i] = Some(d as u8);
            let (start, end) = positions(c);
            tcp[flow_id as usize - 1][d].push((start, end, i));
        }
        for ranges in tcp.iter_mut().flatten() {
            ranges.sort_unstable();
        }
        let mut comment = vec![comment_all; blame.reads.len()];
        for &i in &listed {
            comment[i] = true;
        }
        let call_ids: Vec<usize> = listed.iter().map(|&i| blame.reads[i].call).collect();
        let requests = requests_of(calls, &call_ids);
        let graphs: Vec<ReadGraph> = listed
            .iter()
            .map(|&i| {
                let request = requests.get(&blame.reads[i].call).copied();
                graph_frame(calls, blame, i, dirs[i], request)
            })
            .collect();
        let mut graphs_by_flow: Vec<Vec<usize>> = vec![Vec::new(); analysis.flows.len()];
        for (g, &i) in listed.iter().enumerate() {
            if let Some(f) = blame.reads[i]
                .flow_id
                .filter(|&f| f as usize <= analysis.flows.len())
            {
                graphs_by_flow[f as usize - 1].push(g);
            }
        }
        PacketPass {
            calls,
            blame,
            tcp,
            udp,
            first_seen: vec![false; blame.reads.len()],
            comment,
            graphs,
            graphs_by_flow,
            comments: Vec::new(),
            links: Vec::new(),
            annotated: 0,
        }
    }

    /// Takes one packet record of frame `frame` (1-based, as Wireshark numbers them). Returns
    /// the reads whose bytes it carried (their index in `Blame::reads`), for links from the
    /// packet to the reads.
    pub fn packet(&mut self, frame: u64, p: &PacketRecord) -> &[u64] {
        self.links.clear();
        if p.class == PacketClass::CaptureDuplicate {
            return &self.links;
        }
        if p.payload_len > 0 {
            if p.class == PacketClass::Datagram {
                if let Some(reads) = self.udp.get(&(p.flow_id, p.ts_ns)) {
                    for &i in reads {
                        self.links.push(i as u64);
                    }
                }
            } else if let Some(ranges) = self
                .tcp
                .get((p.flow_id as usize).wrapping_sub(1))
                .map(|r| &r[usize::from(p.dir & 1)])
            {
                let (start, end) = (p.rel_seq, p.rel_seq + i64::from(p.payload_len));
                // Reads of one direction do not overlap: the first whose end is past `start`.
                let mut k = ranges.partition_point(|r| r.1 <= start);
                while let Some(&(_, _, i)) = ranges.get(k).filter(|r| r.0 < end) {
                    self.links.push(i as u64);
                    k += 1;
                }
            }
            for k in 0..self.links.len() {
                let i = self.links[k] as usize;
                let c = &self.calls[self.blame.reads[i].call];
                if p.class == PacketClass::Datagram || positions(c).0 >= p.rel_seq {
                    self.first_byte(i);
                }
            }
        }
        if let Some(gs) = self
            .graphs_by_flow
            .get((p.flow_id as usize).wrapping_sub(1))
        {
            for &g in gs {
                let graph = &mut self.graphs[g];
                if (graph.carries(p) || (graph.from_ns..=graph.to_ns).contains(&p.ts_ns))
                    && !graph.truncated
                {
                    if graph.packets.len() < MAX_GRAPH_PACKETS {
                        graph.packets.push((frame, *p));
                    } else {
                        graph.truncated = true;
                    }
                }
            }
        }
        &self.links
    }

    fn first_byte(&mut self, i: usize) {
        if std::mem::replace(&mut self.first_seen[i], true) {
            return;
        }
        if self.comment[i] {
            self.annotated += 1;
            self.comments
                .push(comment(self.calls, &self.blame.reads[i]));
        }
    }

    /// The comments for the frame just offered (one per read whose first byte it carried),
    /// emptied by the next call of `packet`'s frame.
    pub fn take_comments(&mut self) -> Vec<String> {
        std::mem::take(&mut self.comments)
    }

    /// Ends the pass.
    pub fn finish(self) -> Detail {
        Detail {
            listed: self.graphs.iter().map(|g| g.read).collect(),
            graphs: self.graphs,
            annotated: self.annotated,
        }
    }
}

/// The capture time range a read's graph shows: from the earliest of its wait, its call, its
/// data's arrival and its request to its return, with a margin.
fn graph_frame(
    calls: &[SocketCall],
    b: &Blame,
    i: usize,
    data_dir: Option<u8>,
    request: Option<usize>,
) -> ReadGraph {
    let r = &b.reads[i];
    let c = &calls[r.call];
    let mut from = window_start(c, r);
    for t in [
        r.timing.ready_first_ns,
        r.timing.ready_nominal_ns,
        request.map(|s| calls[s].t_call_ns),
    ]
    .into_iter()
    .flatten()
    {
        from = from.min(t);
    }
    let to = c
        .t_return_ns
        .max(r.timing.ready_last_ns.unwrap_or(i64::MIN));
    let margin = ((to - from) / 10).max(20_000);
    ReadGraph {
        read: i,
        data_dir,
        request,
        positions: positions(c),
        from_ns: from.saturating_sub(margin),
        to_ns: to.saturating_add(margin),
        packets: Vec::new(),
        truncated: false,
    }
}

/// For each of `reads` (indices into the calls): the program's last send with data on the
/// same process and stream before it (the request its answer followed). One pass over the calls.
pub fn requests_of(calls: &[SocketCall], reads: &[usize]) -> HashMap<usize, usize> {
    let wanted: std::collections::HashSet<usize> = reads.iter().copied().collect();
    let mut last_send: HashMap<(u32, u64), usize> = HashMap::new();
    let mut out = HashMap::new();
    for (k, c) in calls.iter().enumerate() {
        if wanted.contains(&k) {
            if let Some(&s) = last_send
                .get(&(c.pid, c.stream))
                .filter(|&&s| calls[s].t_return_ns <= c.t_call_ns)
            {
                out.insert(k, s);
            }
        }
        if c.kind == netblame_correlate::CallKind::Send && c.bytes > 0 {
            last_send.insert((c.pid, c.stream), k);
        }
    }
    out
}

/// The comment on the packet that carried a read's first byte: who read it, when, the
/// verdict and its parts.
pub fn comment(calls: &[SocketCall], r: &ReadBlame) -> String {
    use crate::fmt::{bytes, duration, utc};
    let c = &calls[r.call];
    let t = &r.timing;
    let test = c
        .test
        .as_deref()
        .map_or(String::new(), |t| format!(" in {t}"));
    let wait = r.wait.map_or(String::new(), |w| {
        format!(
            " after {} in {}, dispatch {}",
            duration(w.return_ns - w.call_ns),
            w.api,
            duration(t.dispatch_ns)
        )
    });
    format!(
        "netblame: pid {} tid {} fd {}: {}() read {} at offset {}{test}, returned {} after {}{wait}; \
         verdict {}: loss {}, peer {}{}, program {}, wakeup {}",
        c.pid,
        c.tid,
        c.fd,
        c.api,
        bytes(c.bytes.max(0) as u64),
        c.offset,
        utc(c.t_return_ns),
        duration(read_window(c, r)),
        r.verdict.as_str(),
        duration(t.loss_delay_ns),
        duration(t.peer_wait_ns),
        if t.stall_ns > 0 {
            format!(", stall {}", duration(t.stall_ns))
        } else {
            String::new()
        },
        duration(t.program_ns()),
        duration(t.wakeup_ns),
    )
}
