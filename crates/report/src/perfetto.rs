//! A run as a Perfetto trace (protobuf TrackEvent, nanosecond timestamps as recorded): a track
//! per recorded thread with a slice per read, send, connect/accept and wait; a track per
//! connection direction with an instant per packet; a track of pytest tests and their phases per
//! process; flow arrows from the packets that carried a read's bytes to the read.
//!
//! The few messages are written with prost's derive on hand-written structs (field numbers from
//! Perfetto's `protos/perfetto/trace/`): no protoc, no build script, no C++ build. The trace
//! is streamed: each `TracePacket` is written as one `Trace.packet` field as it is made, so the
//! packets of a capture pass through without being held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};

use netblame_correlate::{Analysis, Blame, CallKind, PacketClass, PacketRecord, SocketCall};
use prost::Message;

/// `Trace.packet` entries, in Perfetto's field numbering.
#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(int32, optional, tag = "12")]
    pub sibling_order_rank: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// 1 slice begin, 2 slice end, 3 instant.
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(fixed64, repeated, packed = "false", tag = "47")]
    pub flow_ids: Vec<u64>,
    #[prost(fixed64, repeated, packed = "false", tag = "48")]
    pub terminating_flow_ids: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const SEQUENCE: u32 = 1;

fn int(name: &str, v: i64) -> DebugAnnotation {
    DebugAnnotation {
        int_value: Some(v),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn text(name: &str, v: impl Into<String>) -> DebugAnnotation {
    DebugAnnotation {
        string_value: Some(v.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

// Track uuids: a kind in the top byte, then the ids (pid < 2^22, tid < 2^24 on Linux).
fn process_track(pid: u32) -> u64 {
    1 << 56 | u64::from(pid)
}
fn thread_track(pid: u32, tid: u32) -> u64 {
    2 << 56 | u64::from(pid) << 24 | u64::from(tid & 0xff_ffff)
}
fn tests_track(pid: u32) -> u64 {
    3 << 56 | u64::from(pid)
}
fn flow_track(flow: u32) -> u64 {
    4 << 56 | u64::from(flow)
}
fn direction_track(flow: u32, dir: u8) -> u64 {
    5 << 56 | u64::from(flow) << 1 | u64::from(dir & 1)
}
const CONNECTIONS_TRACK: u64 = 6 << 56;

/// The flow id linking the packets that carried read `i`'s bytes (index in `Blame::reads`) to it.
pub fn read_flow_id(i: u64) -> u64 {
    i + 1
}

/// What the trace holds, for the report's summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    pub tracks: u64,
    pub call_slices: u64,
    pub packets: u64,
    pub linked_reads: u64,
}

/// Writes a trace: `new` writes the tracks and every call's slice; then `packet` for each packet
/// record of a pass over the capture; then `finish`.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    counts: TraceCounts,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(out: W, analysis: &Analysis, calls: &[SocketCall], b: &Blame) -> io::Result<Self> {
        let mut w = TraceWriter {
            out,
            buf: Vec::with_capacity(256),
            counts: TraceCounts::default(),
        };
        w.tracks(analysis, calls)?;
        w.calls(calls, b)?;
        w.tests(calls)?;
        Ok(w)
    }

    fn emit(&mut self, p: &TracePacket) -> io::Result<()> {
        self.buf.clear();
        // Trace.packet (field 1, length-delimited), then the packet.
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        prost::encoding::encode_varint(p.encoded_len() as u64, &mut self.buf);
        p.encode(&mut self.buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.out.write_all(&self.buf)
    }

    fn descriptor(&mut self, d: TrackDescriptor) -> io::Result<()> {
        self.counts.tracks += 1;
        self.emit(&TracePacket {
            trusted_packet_sequence_id: Some(SEQUENCE),
            track_descriptor: Some(d),
            ..Default::default()
        })
    }

    fn event(&mut self, ts: i64, e: TrackEvent) -> io::Result<()> {
        self.emit(&TracePacket {
            timestamp: Some(ts.max(0) as u64),
            trusted_packet_sequence_id: Some(SEQUENCE),
            track_event: Some(e),
            ..Default::default()
        })
    }

    fn tracks(&mut self, analysis: &Analysis, calls: &[SocketCall]) -> io::Result<()> {
        let mut threads: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
        for c in calls {
            threads.entry(c.pid).or_default().insert(c.tid);
        }
        for (pid, tids) in &threads {
            self.descriptor(TrackDescriptor {
                uuid: Some(process_track(*pid)),
                process: Some(ProcessDescriptor {
                    pid: Some(*pid as i32),
                    process_name: None,
                }),
                ..Default::default()
            })?;
            let mut tids: Vec<u32> = tids.iter().copied().collect();
            tids.sort_unstable();
            for tid in tids {
                self.descriptor(TrackDescriptor {
                    uuid: Some(thread_track(*pid, tid)),
                    thread: Some(ThreadDescriptor {
                        pid: Some(*pid as i32),
                        tid: Some(tid as i32),
                    }),
                    ..Default::default()
                })?;
            }
            if calls.iter().any(|c| c.pid == *pid && c.test.is_some()) {
                self.descriptor(TrackDescriptor {
                    uuid: Some(tests_track(*pid)),
                    parent_uuid: Some(process_track(*pid)),
                    name: Some("tests (from the first to the last socket call of each)".into()),
                    sibling_order_rank: Some(-1),
                    ..Default::default()
                })?;
            }
        }
        if analysis.flows.is_empty() {
            return Ok(());
        }
        self.descriptor(TrackDescriptor {
            uuid: Some(CONNECTIONS_TRACK),
            name: Some("connections (capture)".into()),
            ..Default::default()
        })?;
        for f in &analysis.flows {
            let [a, z] = f.endpoints;
            self.descriptor(TrackDescriptor {
                uuid: Some(flow_track(f.id)),
                parent_uuid: Some(CONNECTIONS_TRACK),
                name: Some(format!("flow {} {} {a} <-> {z}", f.id, f.protocol.as_str())),
                sibling_order_rank: Some(f.id as i32),
                ..Default::default()
            })?;
            for (d, (from, to)) in [(0u8, (a, z)), (1, (z, a))] {
                self.descriptor(TrackDescriptor {
                    uuid: Some(direction_track(f.id, d)),
                    parent_uuid: Some(flow_track(f.id)),
                    name: Some(format!("{from} -> {to}")),
                    sibling_order_rank: Some(i32::from(d)),
                    ..Default::default()
                })?;
            }
        }
        Ok(())
    }

    /// One slice per read, send, connect/accept and wait, per thread in time order. A wait
    /// whose recorded call reaches back over other calls (a run of timed-out polls) starts at
    /// the end of the call before it; its `since_ns` argument keeps the first poll's time.
    fn calls(&mut self, calls: &[SocketCall], b: &Blame) -> io::Result<()> {
        #[derive(Clone, Copy)]
        enum Joined {
            Read(usize),
            Send(usize),
            Connect(usize),
        }
        let mut joined: HashMap<usize, Joined> = HashMap::with_capacity(calls.len());
        for (i, r) in b.reads.iter().enumerate() {
            joined.insert(r.call, Joined::Read(i));
        }
        for (i, s) in b.sends.iter().enumerate() {
            joined.insert(s.call, Joined::Send(i));
        }
        for (i, t) in b.connects.iter().enumerate() {
            joined.insert(t.call, Joined::Connect(i));
        }
        let mut by_thread: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
        for (k, c) in calls.iter().enumerate() {
            if matches!(
                c.kind,
                CallKind::Recv | CallKind::Send | CallKind::Open | CallKind::Wait
            ) {
                by_thread.entry((c.pid, c.tid)).or_default().push(k);
            }
        }
        for ((pid, tid), mut ks) in by_thread {
            ks.sort_by_key(|&k| (calls[k].t_call_ns, std::cmp::Reverse(calls[k].t_return_ns)));
            let track = thread_track(pid, tid);
            let mut last_end = i64::MIN;
            let mut last_wait: Option<(i64, i64)> = None;
            for k in ks {
                let c = &calls[k];
                let mut args = vec![int("fd", i64::from(c.fd))];
                let mut terminating = Vec::new();
                let mut ready_at = None;
                let category = match (c.kind, joined.get(&k)) {
                    (CallKind::Wait, _) => {
                        // One wait reporting several sockets is recorded once per socket.
                        if last_wait == Some((c.t_call_ns, c.t_return_ns)) {
                            continue;
                        }
                        last_wait = Some((c.t_call_ns, c.t_return_ns));
                        args.push(int("since_ns", c.t_call_ns));
                        args.push(int("result", c.bytes));
                        "wait"
                    }
                    (CallKind::Recv, Some(&Joined::Read(i))) => {
                        let r = &b.reads[i];
                        let t = &r.timing;
                        args.extend([
                            int("bytes", c.bytes),
                            int("offset", c.offset as i64),
                            text("verdict", r.verdict.as_str()),
                            int("loss_ns", t.loss_delay_ns),
                            int("peer_ns", t.peer_wait_ns),
                            int("program_ns", t.program_ns()),
                            int("wakeup_ns", t.wakeup_ns),
                            int("dispatch_ns", t.dispatch_ns),
                            int("idle_ns", t.idle_ns),
                            int("buffer_wait_ns", t.buffer_wait_ns),
                        ]);
                        if let Some(f) = r.flow_id {
                            args.push(int("flow", i64::from(f)));
                        }
                        if r.segments > 0 {
                            terminating.push(read_flow_id(i as u64));
                            ready_at = t.ready_last_ns;
                        }
                        "read"
                    }
                    (CallKind::Send, Some(&Joined::Send(i))) => {
                        let s = &b.sends[i];
                        args.extend([
                            int("bytes", c.bytes),
                            int("offset", c.offset as i64),
                            int("blocked_ns", s.send_blocked_ns),
                        ]);
                        if let Some(d) = s.wire_delay_ns {
                            args.push(int("wire_delay_ns", d));
                        }
                        if let Some(h) = s.held_by {
                            args.push(text("held_by", h.as_str()));
                        }
                        "send"
                    }
                    (CallKind::Open, Some(&Joined::Connect(i))) => {
                        let t = &b.connects[i];
                        args.extend([
                            text("verdict", t.verdict.as_str()),
                            int("up_ns", t.done_ns),
                            int("syn_loss_ns", t.syn_loss_ns),
                            int("peer_ns", t.peer_ns),
                            int("wakeup_ns", t.wakeup_ns),
                            int("syn_packets", t.syn_packets as i64),
                        ]);
                        "connect"
                    }
                    (CallKind::Open, _) => "open",
                    (CallKind::Recv, _) => "read",
                    (CallKind::Send, _) => "send",
                    _ => continue,
                };
                if let Some(peer) = c.peer {
                    args.push(text("peer", peer.to_string()));
                }
                if let Some(test) = &c.test {
                    args.push(text("test", test.to_string()));
                }
                let mut start = c.t_call_ns;
                if start < last_end && c.t_return_ns > last_end {
                    start = last_end;
                }
                last_end = last_end.max(c.t_return_ns);
                self.counts.call_slices += 1;
                self.event(
                    start,
                    TrackEvent {
                        debug_annotations: args,
                        r#type: Some(SLICE_BEGIN),
                        track_uuid: Some(track),
                        categories: vec![category.into()],
                        name: Some(c.api.into()),
                        ..Default::default()
                    },
                )?;
                if !terminating.is_empty() {
                    // The arrows end inside the read, when its last byte was there.
                    let at = ready_at.unwrap_or(start).clamp(start, c.t_return_ns);
                    self.counts.linked_reads += 1;
                    self.event(
                        at,
                        TrackEvent {
                            r#type: Some(INSTANT),
                            track_uuid: Some(track),
                            categories: vec!["data".into()],
                            name: Some("bytes ready".into()),
                            terminating_flow_ids: terminating,
                            ..Default::default()
                        },
                    )?;
                }
                self.event(
                    c.t_return_ns,
                    TrackEvent {
                        r#type: Some(SLICE_END),
                        track_uuid: Some(track),
                        ..Default::default()
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Per process, each run of calls tagged with one test is a slice, with a child slice per
    /// phase (setup, call, teardown).
    fn tests(&mut self, calls: &[SocketCall]) -> io::Result<()> {
        let mut by_pid: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (k, c) in calls.iter().enumerate() {
            if c.test.is_some() {
                by_pid.entry(c.pid).or_default().push(k);
            }
        }
        for (pid, mut ks) in by_pid {
            ks.sort_by_key(|&k| calls[k].t_call_ns);
            // (test, phase, start, end) runs
            let mut runs: Vec<(&str, Option<&str>, i64, i64)> = Vec::new();
            for k in ks {
                let c = &calls[k];
                let (test, phase) = netblame_correlate::split_test(c.test.as_deref());
                let test = test.unwrap_or("");
                match runs.last_mut() {
                    Some(r) if r.0 == test && r.1 == phase => r.3 = r.3.max(c.t_return_ns),
                    last => {
                        // Calls of other threads may overlap the previous run: slices nest.
                        let start = last.map_or(c.t_call_ns, |r| c.t_call_ns.max(r.3));
                        runs.push((test, phase, start, c.t_return_ns.max(start)));
                    }
                }
            }
            let track = tests_track(pid);
            let mut i = 0;
            while i < runs.len() {
                let test = runs[i].0;
                let mut j = i;
                while j < runs.len() && runs[j].0 == test {
                    j += 1;
                }
                let (start, end) = (runs[i].2, runs[j - 1].3);
                self.slice(track, start, end, test, "test")?;
                for &(_, phase, s, e) in &runs[i..j] {
                    if let Some(phase) = phase {
                        self.slice(track, s, e, phase, "test phase")?;
                    }
                }
                self.event(
                    end,
                    TrackEvent {
                        r#type: Some(SLICE_END),
                        track_uuid: Some(track),
                        ..Default::default()
                    },
                )?;
                i = j;
            }
        }
        Ok(())
    }

    /// Opens a slice; a phase is closed at once, a test by the caller after its phases.
    fn slice(&mut self, track: u64, start: i64, end: i64, name: &str, cat: &str) -> io::Result<()> {
        self.event(
            start,
            TrackEvent {
                r#type: Some(SLICE_BEGIN),
                track_uuid: Some(track),
                categories: vec![cat.into()],
                name: Some(name.into()),
                ..Default::default()
            },
        )?;
        if cat == "test phase" {
            self.event(
                end,
                TrackEvent {
                    r#type: Some(SLICE_END),
                    track_uuid: Some(track),
                    ..Default::default()
                },
            )?;
        }
        Ok(())
    }

    /// One packet of the capture, as an instant on its connection direction's track, with
    /// arrows to the reads whose bytes it carried (`links`: indices in `Blame::reads`).
    pub fn packet(&mut self, frame: u64, p: &PacketRecord, links: &[u64]) -> io::Result<()> {
        if p.class == PacketClass::CaptureDuplicate {
            return Ok(());
        }
        self.counts.packets += 1;
        let mut args = vec![
            int("frame", frame as i64),
            int("len", i64::from(p.payload_len)),
        ];
        if p.class != PacketClass::Datagram {
            args.push(int("seq", p.rel_seq));
            if let Some(ack) = p.rel_ack {
                args.push(int("ack", ack));
            }
            args.push(int("window", p.window as i64));
            args.push(text("flags", tcp_flags(p.flags)));
        }
        let name = match p.class {
            PacketClass::New if p.payload_len > 0 => "data",
            PacketClass::New => "ack",
            other => other.as_str(),
        };
        self.event(
            p.ts_ns,
            TrackEvent {
                debug_annotations: args,
                r#type: Some(INSTANT),
                track_uuid: Some(direction_track(p.flow_id, p.dir)),
                categories: vec!["packet".into()],
                name: Some(name.into()),
                flow_ids: links.iter().map(|&i| read_flow_id(i)).collect(),
                ..Default::default()
            },
        )
    }

    /// Flushes; returns what was written.
    pub fn finish(mut self) -> io::Result<TraceCounts> {
        self.out.flush()?;
        Ok(self.counts)
    }
}

/// TCP flags as tcpdump prints them (`S`, `.`, `P.`, `F.`, `R`).
pub fn tcp_flags(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if flags & 0x10 != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Trace` itself, to read back what the writer framed.
    #[derive(Clone, PartialEq, Message)]
    struct Trace {
        #[prost(message, repeated, tag = "1")]
        packet: Vec<TracePacket>,
    }

    #[test]
    fn flags_as_tcpdump_prints_them() {
        assert_eq!(tcp_flags(0x02), "S");
        assert_eq!(tcp_flags(0x12), "S.");
        assert_eq!(tcp_flags(0x18), "P.");
        assert_eq!(tcp_flags(0x11), "F.");
        assert_eq!(tcp_flags(0), "none");
    }

    #[test]
    fn an_empty_run_is_a_valid_empty_trace() {
        let w = TraceWriter::new(Vec::new(), &Analysis::default(), &[], &Blame::default()).unwrap();
        assert_eq!(w.finish().unwrap(), TraceCounts::default());
    }

    #[test]
    fn packets_are_framed_as_trace_packet_fields_with_exact_nanoseconds() {
        let mut w =
            TraceWriter::new(Vec::new(), &Analysis::default(), &[], &Blame::default()).unwrap();
        let p = PacketRecord {
            ts_ns: 1_796_000_000_123_456_789,
            flow_id: 3,
            dir: 1,
            rel_seq: 1,
            rel_ack: Some(1),
            payload_len: 100,
            flags: 0x18,
            window: 65_535,
            class: PacketClass::Retransmission,
        };
        w.packet(7, &p, &[4, 9]).unwrap();
        let bytes = w.out.clone();
        let trace = Trace::decode(&bytes[..]).unwrap();
        assert_eq!(trace.packet.len(), 1);
        let tp = &trace.packet[0];
        assert_eq!(tp.timestamp, Some(1_796_000_000_123_456_789));
        let e = tp.track_event.as_ref().unwrap();
        assert_eq!(e.name.as_deref(), Some("retransmission"));
        assert_eq!(e.track_uuid, Some(direction_track(3, 1)));
        assert_eq!(e.flow_ids, vec![5, 10]);
    }
}
