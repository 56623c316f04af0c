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

use netblame_correlate::{
    Analysis, Blame, CallKind, PacketClass, PacketRecord, SocketCall, TestPhase,
};
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
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    /// 1: incremental state cleared (the first packet); 2: needs incremental state.
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// Strings sent once per trace and referred to by number (`iid`) after that.
#[derive(Clone, PartialEq, Message)]
pub struct InternedData {
    #[prost(message, repeated, tag = "1")]
    pub event_categories: Vec<InternedString>,
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<InternedString>,
    #[prost(message, repeated, tag = "3")]
    pub debug_annotation_names: Vec<InternedString>,
    #[prost(message, repeated, tag = "29")]
    pub debug_annotation_string_values: Vec<InternedString>,
}

/// `EventCategory`, `EventName`, `DebugAnnotationName` and `InternedString` (whose field 2 is
/// `bytes str`: the same wire format) share this shape.
#[derive(Clone, PartialEq, Message)]
pub struct InternedString {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
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
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub category_iids: Vec<u64>,
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// 1 slice begin, 2 slice end, 3 instant.
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(fixed64, repeated, packed = "false", tag = "47")]
    pub flow_ids: Vec<u64>,
    #[prost(fixed64, repeated, packed = "false", tag = "48")]
    pub terminating_flow_ids: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    pub name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "17")]
    pub string_value_iid: Option<u64>,
}

/// Protobuf's wire format for `TracePacket`, written by hand as prost writes it (fields in tag
/// order, each `Some` written, repeated fields unpacked), so the bytes are prost's. The derived
/// `encode` sizes every nested message again at each level, and prost's field encoders go through
/// `BufMut` a byte at a time: with them the 1 M run's trace took 4.2-4.5 s of CPU, with these
/// pushes onto a `Vec` 3.7-3.9 s. The rare parts (interned strings, track descriptors) are
/// prost's own.
mod wire {
    use prost::Message;

    use super::{DebugAnnotation, TracePacket, TrackEvent};

    pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    fn key(buf: &mut Vec<u8>, tag: u32, wire_type: u8) {
        varint(buf, u64::from(tag) << 3 | u64::from(wire_type));
    }

    fn uint(buf: &mut Vec<u8>, tag: u32, v: Option<u64>) {
        if let Some(v) = v {
            key(buf, tag, 0);
            varint(buf, v);
        }
    }

    pub fn bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
        key(buf, tag, 2);
        varint(buf, b.len() as u64);
        buf.extend_from_slice(b);
    }

    fn text(buf: &mut Vec<u8>, tag: u32, s: &Option<String>) {
        if let Some(s) = s {
            bytes(buf, tag, s.as_bytes());
        }
    }

    fn fixed64s(buf: &mut Vec<u8>, tag: u32, vs: &[u64]) {
        for v in vs {
            key(buf, tag, 1);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn message(buf: &mut Vec<u8>, tag: u32, m: &impl Message) {
        key(buf, tag, 2);
        varint(buf, m.encoded_len() as u64);
        m.encode_raw(buf);
    }

    /// Scratch buffers for the nested messages, kept from packet to packet.
    #[derive(Debug, Default)]
    pub struct Encoder {
        packet: Vec<u8>,
        event: Vec<u8>,
        annotation: Vec<u8>,
    }

    impl Encoder {
        /// The packet's bytes (without the `Trace.packet` key and length).
        pub fn packet(&mut self, p: &TracePacket) -> &[u8] {
            // Whole destructuring: a field added to a message must be added here too.
            let TracePacket {
                timestamp,
                trusted_packet_sequence_id,
                track_event: event,
                interned_data,
                sequence_flags,
                track_descriptor,
            } = p;
            let b = &mut self.packet;
            b.clear();
            uint(b, 8, *timestamp);
            uint(b, 10, trusted_packet_sequence_id.map(u64::from));
            if let Some(e) = event {
                self.event.clear();
                track_event(&mut self.event, &mut self.annotation, e);
                bytes(b, 11, &self.event);
            }
            if let Some(i) = interned_data {
                message(b, 12, i);
            }
            uint(b, 13, sequence_flags.map(u64::from));
            if let Some(d) = track_descriptor {
                message(b, 60, d);
            }
            &self.packet
        }
    }

    fn track_event(b: &mut Vec<u8>, scratch: &mut Vec<u8>, e: &TrackEvent) {
        let TrackEvent {
            category_iids,
            debug_annotations,
            r#type,
            name_iid,
            track_uuid,
            name,
            flow_ids,
            terminating_flow_ids,
        } = e;
        for &c in category_iids {
            uint(b, 3, Some(c));
        }
        for a in debug_annotations {
            scratch.clear();
            annotation(scratch, a);
            bytes(b, 4, scratch);
        }
        // int32 and int64 go as their two's complement in 64 bits, as prost sends them.
        uint(b, 9, r#type.map(|t| i64::from(t) as u64));
        uint(b, 10, *name_iid);
        uint(b, 11, *track_uuid);
        text(b, 23, name);
        fixed64s(b, 47, flow_ids);
        fixed64s(b, 48, terminating_flow_ids);
    }

    fn annotation(b: &mut Vec<u8>, a: &DebugAnnotation) {
        let DebugAnnotation {
            name_iid,
            uint_value,
            int_value,
            string_value,
            name,
            string_value_iid,
        } = a;
        uint(b, 1, *name_iid);
        uint(b, 3, *uint_value);
        uint(b, 4, int_value.map(|v| v as u64));
        text(b, 6, string_value);
        text(b, 10, name);
        uint(b, 17, *string_value_iid);
    }
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const SEQUENCE: u32 = 1;
/// The sequence of a trace's packets when another thread writes them
/// ([`TraceWriter::packets_only`]): its own interned strings, beside the calls'.
pub const PACKETS_SEQUENCE: u32 = 2;
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

/// The flow id linking the packets that carried read `i`'s bytes (index in `Blame::reads`) to it.
pub fn read_flow_id(i: u64) -> u64 {
    i + 1
}

/// What the trace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    pub tracks: u64,
    pub call_slices: u64,
    pub packets: u64,
    pub linked_reads: u64,
}

/// FNV-1a: the interners hash a few short strings millions of times; SipHash's resistance to
/// chosen keys buys nothing here and costs a tenth of the trace's time.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One table of interned strings: iids from 1, in order of first use.
#[derive(Debug, Default)]
struct Interner {
    iids: HashMap<String, u64, std::hash::BuildHasherDefault<Fnv>>,
}

impl Interner {
    /// The string's iid; a new one is added to `pending` (sent with the packet that uses it).
    fn iid(&mut self, s: &str, pending: &mut Vec<InternedString>) -> u64 {
        if let Some(&iid) = self.iids.get(s) {
            return iid;
        }
        let iid = self.iids.len() as u64 + 1;
        self.iids.insert(s.to_owned(), iid);
        pending.push(InternedString {
            iid: Some(iid),
            name: Some(s.into()),
        });
        iid
    }
}

/// How a call is joined: what `Blame` says of it (index in its list).
#[derive(Clone, Copy)]
enum Joined {
    Read(usize),
    Send(usize),
    Connect(usize),
}

/// The tracks the calls and tests go on.
#[derive(Debug, Default)]
struct TrackIds {
    threads: HashMap<(u32, u32), u64>,
    tests: HashMap<u32, u64>,
    /// Each flow's track (by index in the analysis): its exchanges' slices.
    flows: Vec<u64>,
}

/// Writes a trace: `new` writes the tracks and every call's slice; then `packet` for each packet
/// record of a pass over the capture; then `finish`.
///
/// Names, categories and argument names are interned (sent once, then referred to by number):
/// a run of a million reads has millions of events, and most of their bytes would be the same
/// few strings.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    encoder: wire::Encoder,
    counts: TraceCounts,
    names: Interner,
    categories: Interner,
    arg_names: Interner,
    values: Interner,
    pending: InternedData,
    next_uuid: u64,
    /// The first connection direction's track; flow `f`'s direction `d` is
    /// `directions + 2 * (f - 1) + d`.
    directions: u64,
    started: bool,
    /// Its `trusted_packet_sequence_id`.
    sequence: u32,
}

impl<W: Write> TraceWriter<W> {
    /// `phases`: the pytest plugin's records; the tests track shows them when there are any,
    /// else the runs of calls tagged with each test.
    pub fn new(
        out: W,
        analysis: &Analysis,
        calls: &[SocketCall],
        b: &Blame,
        phases: &[TestPhase],
    ) -> io::Result<Self> {
        Self::new_telling(out, analysis, calls, b, phases, |_| ())
    }

    /// As `new`, telling `tracks_written` the first direction track's uuid once the tracks
    /// are declared (before the calls' slices): what a packets-only writer on another thread
    /// needs ([`TraceWriter::packets_only`]).
    pub fn new_telling(
        out: W,
        analysis: &Analysis,
        calls: &[SocketCall],
        b: &Blame,
        phases: &[TestPhase],
        tracks_written: impl FnOnce(u64),
    ) -> io::Result<Self> {
        let mut w = Self::empty(out, SEQUENCE, 0);
        let ids = w.tracks(analysis, calls, phases)?;
        tracks_written(w.directions);
        w.calls(calls, b, &ids)?;
        if phases.is_empty() {
            w.tests(calls, &ids)?;
        } else {
            w.test_phases(phases, &ids)?;
        }
        w.exchanges(b, &ids)?;
        Ok(w)
    }

    /// A writer of packets alone, on sequence `sequence`, for the tracks declared by another
    /// writer of the same trace (`directions`: its first direction track's uuid). Its bytes go
    /// after that writer's (`append`).
    pub fn packets_only(out: W, directions: u64, sequence: u32) -> Self {
        Self::empty(out, sequence, directions)
    }

    fn empty(out: W, sequence: u32, directions: u64) -> Self {
        TraceWriter {
            out,
            buf: Vec::with_capacity(256),
            encoder: wire::Encoder::default(),
            counts: TraceCounts::default(),
            names: Interner::default(),
            categories: Interner::default(),
            arg_names: Interner::default(),
            values: Interner::default(),
            pending: InternedData::default(),
            next_uuid: 1,
            directions,
            started: false,
            sequence,
        }
    }

    /// Copies another writer's finished bytes (a part of this trace on a sequence of its own)
    /// after this one's.
    pub fn append(&mut self, part: &mut impl io::Read) -> io::Result<u64> {
        io::copy(part, &mut self.out)
    }

    fn emit(&mut self, mut p: TracePacket) -> io::Result<()> {
        p.trusted_packet_sequence_id = Some(self.sequence);
        // The first packet starts the sequence's interned strings. (Later packets could say
        // they need them, as a tracing service's ring buffer may drop their start; a file
        // written whole cannot, and the flag would cost two bytes an event.)
        if !self.started {
            p.sequence_flags = Some(SEQ_INCREMENTAL_STATE_CLEARED);
            self.started = true;
        }
        let pending = std::mem::take(&mut self.pending);
        if pending != InternedData::default() {
            p.interned_data = Some(pending);
        }
        self.buf.clear();
        // Trace.packet (field 1, length-delimited), then the packet.
        wire::bytes(&mut self.buf, 1, self.encoder.packet(&p));
        self.out.write_all(&self.buf)
    }

    fn name(&mut self, s: &'static str) -> Option<u64> {
        Some(self.names.iid(s, &mut self.pending.event_names))
    }

    fn category(&mut self, s: &'static str) -> Vec<u64> {
        vec![self.categories.iid(s, &mut self.pending.event_categories)]
    }

    fn int(&mut self, name: &'static str, v: i64) -> DebugAnnotation {
        DebugAnnotation {
            name_iid: Some(
                self.arg_names
                    .iid(name, &mut self.pending.debug_annotation_names),
            ),
            int_value: Some(v),
            ..Default::default()
        }
    }

    /// A string argument; its value is interned too (verdicts, tests and peers repeat).
    fn text(&mut self, name: &'static str, v: &str) -> DebugAnnotation {
        DebugAnnotation {
            name_iid: Some(
                self.arg_names
                    .iid(name, &mut self.pending.debug_annotation_names),
            ),
            string_value_iid: Some(
                self.values
                    .iid(v, &mut self.pending.debug_annotation_string_values),
            ),
            ..Default::default()
        }
    }

    fn new_uuid(&mut self) -> u64 {
        self.next_uuid += 1;
        self.next_uuid - 1
    }

    fn descriptor(&mut self, d: TrackDescriptor) -> io::Result<()> {
        self.counts.tracks += 1;
        self.emit(TracePacket {
            track_descriptor: Some(d),
            ..Default::default()
        })
    }

    fn event(&mut self, ts: i64, e: TrackEvent) -> io::Result<()> {
        self.emit(TracePacket {
            timestamp: Some(ts.max(0) as u64),
            track_event: Some(e),
            ..Default::default()
        })
    }

    fn end(&mut self, ts: i64, track: u64) -> io::Result<()> {
        self.event(
            ts,
            TrackEvent {
                r#type: Some(SLICE_END),
                track_uuid: Some(track),
                ..Default::default()
            },
        )
    }

    /// Declares the tracks; returns the uuids of the threads' and the tests' tracks.
    fn tracks(
        &mut self,
        analysis: &Analysis,
        calls: &[SocketCall],
        phases: &[TestPhase],
    ) -> io::Result<TrackIds> {
        let mut threads: BTreeMap<u32, (HashSet<u32>, bool)> = BTreeMap::new();
        for c in calls {
            let t = threads.entry(c.pid).or_default();
            t.0.insert(c.tid);
            t.1 |= c.test.is_some() && phases.is_empty();
        }
        // A process that ran tests has their track, socket calls or not.
        for p in phases {
            threads.entry(p.pid).or_default().1 = true;
        }
        let tests_track = if phases.is_empty() {
            "tests (from the first to the last socket call of each)"
        } else {
            "tests (pytest's phases)"
        };
        let mut ids = TrackIds::default();
        for (pid, (tids, tests)) in threads {
            let process = self.new_uuid();
            self.descriptor(TrackDescriptor {
                uuid: Some(process),
                process: Some(ProcessDescriptor {
                    pid: Some(pid as i32),
                    process_name: None,
                }),
                ..Default::default()
            })?;
            let mut tids: Vec<u32> = tids.into_iter().collect();
            tids.sort_unstable();
            for tid in tids {
                let uuid = self.new_uuid();
                ids.threads.insert((pid, tid), uuid);
                self.descriptor(TrackDescriptor {
                    uuid: Some(uuid),
                    thread: Some(ThreadDescriptor {
                        pid: Some(pid as i32),
                        tid: Some(tid as i32),
                    }),
                    ..Default::default()
                })?;
            }
            if tests {
                let uuid = self.new_uuid();
                ids.tests.insert(pid, uuid);
                self.descriptor(TrackDescriptor {
                    uuid: Some(uuid),
                    parent_uuid: Some(process),
                    name: Some(tests_track.into()),
                    sibling_order_rank: Some(-1),
                    ..Default::default()
                })?;
            }
        }
        if analysis.flows.is_empty() {
            return Ok(ids);
        }
        let connections = self.new_uuid();
        self.descriptor(TrackDescriptor {
            uuid: Some(connections),
            name: Some("connections (capture)".into()),
            ..Default::default()
        })?;
        // The direction tracks take one contiguous range, so a packet finds its track by number.
        self.directions = self.next_uuid;
        self.next_uuid += 2 * analysis.flows.len() as u64;
        for (k, f) in analysis.flows.iter().enumerate() {
            let [a, z] = f.endpoints;
            let flow = self.new_uuid();
            ids.flows.push(flow);
            self.descriptor(TrackDescriptor {
                uuid: Some(flow),
                parent_uuid: Some(connections),
                name: Some(format!("flow {} {} {a} <-> {z}", f.id, f.protocol.as_str())),
                sibling_order_rank: Some(f.id as i32),
                ..Default::default()
            })?;
            for (d, (from, to)) in [(0u64, (a, z)), (1, (z, a))] {
                self.descriptor(TrackDescriptor {
                    uuid: Some(self.directions + 2 * k as u64 + d),
                    parent_uuid: Some(flow),
                    name: Some(format!("{from} -> {to}")),
                    sibling_order_rank: Some(d as i32),
                    ..Default::default()
                })?;
            }
        }
        Ok(ids)
    }

    /// One slice per read, send, connect/accept and wait, per thread in time order. A wait
    /// whose recorded call reaches back over other calls (a run of timed-out polls) starts at
    /// the end of the call before it; its `since_ns` argument keeps the first poll's time.
    fn calls(&mut self, calls: &[SocketCall], b: &Blame, ids: &TrackIds) -> io::Result<()> {
        let mut joined: Vec<Option<Joined>> = vec![None; calls.len()];
        for (i, r) in b.reads.iter().enumerate() {
            joined[r.call] = Some(Joined::Read(i));
        }
        for (i, s) in b.sends.iter().enumerate() {
            joined[s.call] = Some(Joined::Send(i));
        }
        for (i, t) in b.connects.iter().enumerate() {
            joined[t.call] = Some(Joined::Connect(i));
        }
        let mut by_thread: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for (k, c) in calls.iter().enumerate() {
            if matches!(
                c.kind,
                CallKind::Recv | CallKind::Send | CallKind::Open | CallKind::Wait
            ) {
                by_thread.entry((c.pid, c.tid)).or_default().push(k as u32);
            }
        }
        for ((pid, tid), mut ks) in by_thread {
            ks.sort_by_key(|&k| {
                let c = &calls[k as usize];
                (c.t_call_ns, std::cmp::Reverse(c.t_return_ns))
            });
            let track = ids.threads[&(pid, tid)];
            let mut last_end = i64::MIN;
            let mut last_wait: Option<(i64, i64)> = None;
            for k in ks {
                let k = k as usize;
                let c = &calls[k];
                let mut args = vec![self.int("fd", i64::from(c.fd))];
                let mut terminating = Vec::new();
                let mut ready_at = None;
                let category = match (c.kind, joined[k]) {
                    (CallKind::Wait, _) => {
                        // One wait reporting several sockets is recorded once per socket.
                        if last_wait == Some((c.t_call_ns, c.t_return_ns)) {
                            continue;
                        }
                        last_wait = Some((c.t_call_ns, c.t_return_ns));
                        args.push(self.int("since_ns", c.t_call_ns));
                        args.push(self.int("result", c.bytes));
                        "wait"
                    }
                    (CallKind::Recv, Some(Joined::Read(i))) => {
                        let r = &b.reads[i];
                        let t = &r.timing;
                        args.push(self.int("bytes", c.bytes));
                        args.push(self.int("offset", c.offset as i64));
                        args.push(self.text("verdict", r.verdict.as_str()));
                        // The parts of the time that are not zero.
                        for (name, v) in [
                            ("loss_ns", t.loss_delay_ns),
                            ("peer_ns", t.peer_wait_ns),
                            ("stall_ns", t.stall_ns),
                            ("program_ns", t.program_ns()),
                            ("wakeup_ns", t.wakeup_ns),
                            ("dispatch_ns", t.dispatch_ns),
                            ("buffer_wait_ns", t.buffer_wait_ns),
                            ("idle_ns", t.idle_ns),
                        ] {
                            if v != 0 {
                                args.push(self.int(name, v));
                            }
                        }
                        if let Some(f) = r.flow_id {
                            args.push(self.int("flow", i64::from(f)));
                        }
                        if r.segments > 0 {
                            terminating.push(read_flow_id(i as u64));
                            ready_at = t.ready_last_ns;
                        }
                        "read"
                    }
                    (CallKind::Send, Some(Joined::Send(i))) => {
                        let s = &b.sends[i];
                        args.push(self.int("bytes", c.bytes));
                        args.push(self.int("offset", c.offset as i64));
                        args.push(self.int("blocked_ns", s.send_blocked_ns));
                        if let Some(d) = s.wire_delay_ns {
                            args.push(self.int("wire_delay_ns", d));
                        }
                        if let Some(h) = s.held_by {
                            args.push(self.text("held_by", h.as_str()));
                        }
                        "send"
                    }
                    (CallKind::Open, Some(Joined::Connect(i))) => {
                        let t = &b.connects[i];
                        args.push(self.text("verdict", t.verdict.as_str()));
                        args.push(self.int("up_ns", t.done_ns));
                        args.push(self.int("syn_loss_ns", t.syn_loss_ns));
                        args.push(self.int("peer_ns", t.peer_ns));
                        args.push(self.int("wakeup_ns", t.wakeup_ns));
                        args.push(self.int("syn_packets", t.syn_packets as i64));
                        "connect"
                    }
                    (CallKind::Open, _) => "open",
                    (CallKind::Recv, _) => "read",
                    (CallKind::Send, _) => "send",
                    _ => continue,
                };
                if let Some(peer) = c.peer() {
                    args.push(self.text("peer", &peer.to_string()));
                }
                if let Some(test) = &c.test {
                    args.push(self.text("test", test));
                }
                let mut start = c.t_call_ns;
                if start < last_end && c.t_return_ns > last_end {
                    start = last_end;
                }
                last_end = last_end.max(c.t_return_ns);
                self.counts.call_slices += 1;
                let e = TrackEvent {
                    debug_annotations: args,
                    r#type: Some(SLICE_BEGIN),
                    track_uuid: Some(track),
                    category_iids: self.category(category),
                    name_iid: self.name(c.api.as_str()),
                    ..Default::default()
                };
                self.event(start, e)?;
                if !terminating.is_empty() {
                    // The arrows end inside the read, when its last byte was there.
                    let at = ready_at.unwrap_or(start).clamp(start, c.t_return_ns);
                    self.counts.linked_reads += 1;
                    let e = TrackEvent {
                        r#type: Some(INSTANT),
                        track_uuid: Some(track),
                        category_iids: self.category("data"),
                        name_iid: self.name("bytes ready"),
                        terminating_flow_ids: terminating,
                        ..Default::default()
                    };
                    self.event(at, e)?;
                }
                self.end(c.t_return_ns, track)?;
            }
        }
        Ok(())
    }

    /// Per process, each run of calls tagged with one test is a slice, with a child slice per
    /// phase (setup, call, teardown).
    fn tests(&mut self, calls: &[SocketCall], ids: &TrackIds) -> io::Result<()> {
        let mut by_pid: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (k, c) in calls.iter().enumerate() {
            if c.test.is_some() {
                by_pid.entry(c.pid).or_default().push(k as u32);
            }
        }
        for (pid, mut ks) in by_pid {
            ks.sort_by_key(|&k| calls[k as usize].t_call_ns);
            // (test, phase, start, end) runs
            let mut runs: Vec<(&str, Option<&str>, i64, i64)> = Vec::new();
            for k in ks {
                let c = &calls[k as usize];
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
            let track = ids.tests[&pid];
            let mut i = 0;
            while i < runs.len() {
                let test = runs[i].0;
                let mut j = i;
                while j < runs.len() && runs[j].0 == test {
                    j += 1;
                }
                let (start, end) = (runs[i].2, runs[j - 1].3);
                self.begin_named(track, start, test, "test")?;
                for &(_, phase, s, e) in &runs[i..j] {
                    if let Some(phase) = phase {
                        self.begin_named(track, s, phase, "test phase")?;
                        self.end(e, track)?;
                    }
                }
                self.end(end, track)?;
                i = j;
            }
        }
        Ok(())
    }

    /// Per process that ran tests, a slice per test from its setup to its teardown, with a
    /// child slice per phase (its outcome an argument), at pytest's own phase boundaries.
    fn test_phases(&mut self, phases: &[TestPhase], ids: &TrackIds) -> io::Result<()> {
        let mut by_pid: BTreeMap<u32, Vec<&TestPhase>> = BTreeMap::new();
        for p in phases {
            by_pid.entry(p.pid).or_default().push(p);
        }
        for (pid, mut ps) in by_pid {
            ps.sort_by_key(|p| (p.start_ns, p.phase));
            let track = ids.tests[&pid];
            let mut i = 0;
            while i < ps.len() {
                let test = &ps[i].test;
                let mut j = i + 1;
                while j < ps.len() && ps[j].test == *test {
                    j += 1;
                }
                // Phases of one process never overlap; a clock step could: clamp to nest.
                let start = ps[i].start_ns;
                let mut at = start;
                self.begin_named(track, start, test, "test")?;
                for p in &ps[i..j] {
                    let s = p.start_ns.max(at);
                    let e = p.end_ns.max(s);
                    let outcome = self.text("outcome", p.outcome.as_str());
                    let event = TrackEvent {
                        r#type: Some(SLICE_BEGIN),
                        track_uuid: Some(track),
                        category_iids: self.category("test phase"),
                        name_iid: self.name(p.phase.as_str()),
                        debug_annotations: vec![outcome],
                        ..Default::default()
                    };
                    self.event(s, event)?;
                    self.end(e, track)?;
                    at = e;
                }
                self.end(at, track)?;
                i = j;
            }
        }
        Ok(())
    }

    /// One slice per exchange on its connection's track, named by its request (from the
    /// capture), from the request's first send to the read of the answer's last byte.
    fn exchanges(&mut self, b: &Blame, ids: &TrackIds) -> io::Result<()> {
        for e in &b.exchanges {
            let Some(&track) = (e.flow_id as usize)
                .checked_sub(1)
                .and_then(|i| ids.flows.get(i))
            else {
                continue;
            };
            let name = e.request.as_ref().map_or("request", |r| r.text.as_str());
            let mut args = vec![
                self.text("verdict", e.verdict.as_str()),
                self.int("request_bytes", e.request_bytes as i64),
                self.int("answer_bytes", e.response_bytes as i64),
            ];
            if let Some(p) = e.request.as_ref().and_then(|r| r.protocol) {
                args.push(self.text("protocol", p.as_str()));
            }
            let p = &e.parts;
            for (part, v) in [
                ("request_held_ns", p.request_held_ns),
                ("loss_ns", p.loss_ns),
                ("peer_ns", p.peer_ns),
                ("transfer_ns", p.transfer_ns),
                ("stall_ns", p.stall_ns),
                ("program_ns", p.program_ns),
                ("wakeup_ns", p.wakeup_ns),
            ] {
                if v != 0 {
                    args.push(self.int(part, v));
                }
            }
            let event = TrackEvent {
                r#type: Some(SLICE_BEGIN),
                track_uuid: Some(track),
                category_iids: self.category("exchange"),
                name: Some(name.into()),
                debug_annotations: args,
                ..Default::default()
            };
            self.event(e.start_ns, event)?;
            self.end(e.end_ns, track)?;
        }
        Ok(())
    }

    /// Opens a slice named by a string of the run (a test's id: not interned).
    fn begin_named(
        &mut self,
        track: u64,
        start: i64,
        name: &str,
        category: &'static str,
    ) -> io::Result<()> {
        let e = TrackEvent {
            r#type: Some(SLICE_BEGIN),
            track_uuid: Some(track),
            category_iids: self.category(category),
            name: Some(name.into()),
            ..Default::default()
        };
        self.event(start, e)
    }

    /// One packet of the capture, as an instant on its connection direction's track, with
    /// arrows to the reads whose bytes it carried (`links`: indices in `Blame::reads`).
    pub fn packet(&mut self, frame: u64, p: &PacketRecord, links: &[u64]) -> io::Result<()> {
        if p.class == PacketClass::CaptureDuplicate || p.flow_id == 0 {
            return Ok(());
        }
        self.counts.packets += 1;
        let mut args = vec![self.int("frame", frame as i64)];
        if p.payload_len > 0 || p.class == PacketClass::Datagram {
            args.push(self.int("len", i64::from(p.payload_len)));
        }
        if p.class != PacketClass::Datagram {
            // Data: where its bytes are; an ACK: what it acknowledged and the window it opened.
            if p.payload_len > 0 {
                args.push(self.int("seq", p.rel_seq));
            } else {
                if let Some(ack) = p.rel_ack {
                    args.push(self.int("ack", ack));
                }
                args.push(self.int("window", p.window as i64));
            }
            if p.flags & 0x07 != 0 {
                args.push(self.text("flags", &tcp_flags(p.flags)));
            }
        }
        let name = match p.class {
            PacketClass::New if p.payload_len > 0 => "data",
            PacketClass::New => "ack",
            other => other.as_str(),
        };
        let track = self.directions + 2 * u64::from(p.flow_id - 1) + u64::from(p.dir & 1);
        let e = TrackEvent {
            debug_annotations: args,
            r#type: Some(INSTANT),
            track_uuid: Some(track),
            category_iids: self.category("packet"),
            name_iid: self.name(name),
            flow_ids: links.iter().map(|&i| read_flow_id(i)).collect(),
            ..Default::default()
        };
        self.event(p.ts_ns, e)
    }

    /// Flushes; returns what was written.
    pub fn finish(self) -> io::Result<TraceCounts> {
        self.into_inner().map(|(_, counts)| counts)
    }

    /// Flushes; returns the output and what was written.
    pub fn into_inner(mut self) -> io::Result<(W, TraceCounts)> {
        self.out.flush()?;
        Ok((self.out, self.counts))
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
    fn hand_encoding_is_prosts_byte_for_byte() {
        let s = |v: &str| Some(v.to_string());
        let every_field = TracePacket {
            timestamp: Some(u64::MAX),
            trusted_packet_sequence_id: Some(SEQUENCE),
            track_event: Some(TrackEvent {
                category_iids: vec![1, 300],
                debug_annotations: vec![
                    DebugAnnotation {
                        name_iid: Some(2),
                        uint_value: Some(1 << 40),
                        int_value: Some(-5),
                        string_value: s("é"),
                        name: s(""),
                        string_value_iid: Some(127),
                    },
                    DebugAnnotation::default(),
                ],
                r#type: Some(-1),
                name_iid: Some(0),
                track_uuid: Some(128),
                name: s("a read"),
                flow_ids: vec![0, u64::MAX],
                terminating_flow_ids: vec![7],
            }),
            interned_data: Some(InternedData {
                event_names: vec![InternedString {
                    iid: Some(1),
                    name: s("recv"),
                }],
                ..Default::default()
            }),
            sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(9),
                name: s("flow 1"),
                ..Default::default()
            }),
        };
        let slice_end = TracePacket {
            timestamp: Some(0),
            track_event: Some(TrackEvent {
                r#type: Some(SLICE_END),
                track_uuid: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut encoder = wire::Encoder::default();
        for p in [every_field, slice_end, TracePacket::default()] {
            assert_eq!(encoder.packet(&p), p.encode_to_vec(), "{p:?}");
        }
    }

    #[test]
    fn flags_as_tcpdump_prints_them() {
        assert_eq!(tcp_flags(0x02), "S");
        assert_eq!(tcp_flags(0x12), "S.");
        assert_eq!(tcp_flags(0x18), "P.");
        assert_eq!(tcp_flags(0x11), "F.");
        assert_eq!(tcp_flags(0), "none");
    }

    /// A writer for a run with nothing in it.
    fn empty_trace() -> TraceWriter<Vec<u8>> {
        TraceWriter::new(
            Vec::new(),
            &Analysis::default(),
            &[],
            &Blame::default(),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn an_empty_run_is_a_valid_empty_trace() {
        let w = empty_trace();
        assert_eq!(w.finish().unwrap(), TraceCounts::default());
    }

    #[test]
    fn packets_are_framed_as_trace_packet_fields_with_exact_nanoseconds() {
        let mut w = empty_trace();
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
        let names = &tp.interned_data.as_ref().unwrap().event_names;
        assert_eq!(names[0].name.as_deref(), Some("retransmission"));
        assert_eq!(e.name_iid, names[0].iid);
        assert_eq!(e.track_uuid, Some(w.directions + 2 * 2 + 1));
        assert_eq!(e.flow_ids, vec![5, 10]);
        assert_eq!(tp.sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED));
    }
}
