//! The second pass over a capture file that the pictures need: every frame through a fresh
//! analyzer (so each packet record is classified exactly as in the first pass), each record
//! offered to [`PacketPass`] (graphs, first-byte comments, links), streamed into the Perfetto
//! trace, and each frame copied into the annotated pcapng with its comments. The trace is
//! written on a thread of its own (its calls first, then the packets the pass hands it in
//! batches), beside the pass and the annotated copy: the two are the pictures' largest costs.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::sync::mpsc;

use netblame_capture::{CaptureReader, PcapngWriter, ReadError, MAX_RECORD_LEN};
use netblame_correlate::{
    Analysis, Analyzer, AnalyzerConfig, Blame, PacketRecord, SocketCall, TestPhase,
};

use crate::detail::{Detail, PacketPass};
use crate::perfetto::{TraceWriter, PACKETS_SEQUENCE};

/// Why the second pass failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PassError {
    /// The capture could not be read (it was read whole once already: it changed, or the disk).
    Capture(ReadError),
    /// The Perfetto trace could not be written.
    Trace(io::Error),
    /// The annotated capture could not be written.
    Annotated(io::Error),
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassError::Capture(_) => f.write_str("reading the capture again"),
            PassError::Trace(_) => f.write_str("writing the trace"),
            PassError::Annotated(_) => f.write_str("writing the annotated capture"),
        }
    }
}

impl Error for PassError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PassError::Capture(e) => Some(e),
            PassError::Trace(e) | PassError::Annotated(e) => Some(e),
        }
    }
}

impl From<ReadError> for PassError {
    fn from(e: ReadError) -> Self {
        PassError::Capture(e)
    }
}

/// Where the pass writes, besides what it keeps for the page.
#[derive(Debug)]
pub struct PassOutputs<'a, T: Write, A: Write> {
    /// The Perfetto trace's file, and the pytest plugin's records it shows
    /// ([`TraceWriter::new`]).
    pub trace: Option<(T, &'a [TestPhase])>,
    /// A scratch file (empty, read and write) for the trace's packets: with one, they are
    /// written by a thread of their own while the calls' part is (on a sequence of their own,
    /// copied after the calls' part at the end); without, after it on the same thread.
    pub trace_scratch: Option<std::fs::File>,
    /// The annotated capture's file (its pcapng headers are written on the first frame).
    pub annotated: Option<A>,
    /// Comment every read's first packet, not only the listed reads'.
    pub comment_all: bool,
}

/// Packet records handed to the trace's thread at a time, and batches in flight: the memory
/// between the two threads stays a few MiB whatever the capture.
const BATCH: usize = 8192;
const BATCHES_IN_FLIGHT: usize = 4;

/// Packets for the trace: each record with its frame number and its links' range in `links`.
struct PacketBatch {
    packets: Vec<(u64, PacketRecord, Range<usize>)>,
    links: Vec<u64>,
}

impl PacketBatch {
    fn with_room(packets: usize) -> Self {
        PacketBatch {
            packets: Vec::with_capacity(packets),
            links: Vec::new(),
        }
    }
}

/// Runs the pass; `progress` is told the file offset now and then. Flushes both outputs.
pub fn second_pass<R: Read, T: Write + Send, A: Write>(
    reader: &mut CaptureReader<R>,
    analysis: &Analysis,
    calls: &[SocketCall],
    blame: &Blame,
    outputs: PassOutputs<T, A>,
    progress: impl FnMut(u64),
) -> Result<Detail, PassError> {
    pass_in_batches(reader, (analysis, calls, blame), outputs, progress, BATCH)
}

/// The pass, the trace's packets handed over `batch` at a time.
fn pass_in_batches<R: Read, T: Write + Send, A: Write>(
    reader: &mut CaptureReader<R>,
    (analysis, calls, blame): (&Analysis, &[SocketCall], &Blame),
    outputs: PassOutputs<T, A>,
    progress: impl FnMut(u64),
    batch: usize,
) -> Result<Detail, PassError> {
    let PassOutputs {
        trace,
        trace_scratch,
        annotated,
        comment_all,
    } = outputs;
    let pass = PacketPass::new(analysis, calls, blame, comment_all);
    let Some((trace_out, phases)) = trace else {
        return frames(reader, pass, annotated, None, progress, batch);
    };
    std::thread::scope(|scope| {
        let (to_trace, batches) = mpsc::sync_channel::<PacketBatch>(BATCHES_IN_FLIGHT);
        let tracer = match trace_scratch {
            None => scope.spawn(move || -> io::Result<()> {
                let mut trace = TraceWriter::new(trace_out, analysis, calls, blame, phases)?;
                trace_packets(&mut trace, batches)?;
                trace.finish().map(drop)
            }),
            Some(scratch) => {
                // The packets' writer waits for the tracks (their uuids), then writes into the
                // scratch file while the calls' part is written; that part's writer copies the
                // scratch after its own bytes.
                let (tell, tracks) = mpsc::channel::<u64>();
                let packets = scope.spawn(move || -> io::Result<Option<std::fs::File>> {
                    let Ok(directions) = tracks.recv() else {
                        return Ok(None); // the calls' part failed first: its error is reported
                    };
                    let out = io::BufWriter::with_capacity(1 << 20, scratch);
                    let mut trace = TraceWriter::packets_only(out, directions, PACKETS_SEQUENCE);
                    trace_packets(&mut trace, batches)?;
                    let (out, _) = trace.into_inner()?;
                    out.into_inner()
                        .map(Some)
                        .map_err(io::IntoInnerError::into_error)
                });
                scope.spawn(move || -> io::Result<()> {
                    let mut trace = TraceWriter::new_telling(
                        trace_out,
                        analysis,
                        calls,
                        blame,
                        phases,
                        |directions| {
                            let _ = tell.send(directions);
                        },
                    )?;
                    let scratch = packets
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                    if let Some(mut scratch) = scratch {
                        scratch.seek(io::SeekFrom::Start(0))?;
                        trace.append(&mut scratch)?;
                    }
                    trace.finish().map(drop)
                })
            }
        };
        let detail = frames(reader, pass, annotated, Some(to_trace), progress, batch);
        let traced = tracer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The pass's own error first; else the trace's (which also stopped the pass's sends).
        let detail = detail?;
        traced.map_err(PassError::Trace)?;
        Ok(detail)
    })
}

/// Writes every packet record the pass hands over.
fn trace_packets<W: Write>(
    trace: &mut TraceWriter<W>,
    batches: mpsc::Receiver<PacketBatch>,
) -> io::Result<()> {
    for batch in batches {
        for (frame, rec, links) in &batch.packets {
            trace.packet(*frame, rec, &batch.links[links.clone()])?;
        }
    }
    Ok(())
}

/// The pass itself: every frame through the analyzer, the page's detail and the annotated
/// copy made here, the packet records sent to the trace's thread if there is one. A trace that
/// stopped (a write failed) is no longer fed; its error is the caller's to report.
fn frames<R: Read, A: Write>(
    reader: &mut CaptureReader<R>,
    mut pass: PacketPass<'_>,
    annotated: Option<A>,
    mut to_trace: Option<mpsc::SyncSender<PacketBatch>>,
    mut progress: impl FnMut(u64),
    batch_len: usize,
) -> Result<Detail, PassError> {
    let mut annotated_file = annotated;
    // The writer, made on the first frame (its first interface is that frame's link type), and
    // the link type of each of its interfaces.
    let mut writer: Option<(PcapngWriter<A>, Vec<u16>)> = None;
    let mut analyzer = Analyzer::new(AnalyzerConfig {
        keep_packets: true,
        keep_request_heads: false,
    });
    let mut batch = PacketBatch::with_room(batch_len);
    let mut frame = 0u64;
    while let Some(p) = reader.next_packet()? {
        frame += 1;
        if frame % 8192 == 0 {
            progress(p.file_offset);
        }
        analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
        for rec in analyzer.drain_packets() {
            let links = pass.packet(frame, &rec);
            if to_trace.is_some() {
                let at = batch.links.len();
                batch.links.extend_from_slice(links);
                batch.packets.push((frame, rec, at..batch.links.len()));
            }
        }
        if batch.packets.len() >= batch_len {
            send(&mut to_trace, &mut batch, batch_len);
        }
        let comments = pass.take_comments();
        if let Some(file) = annotated_file.take() {
            writer = Some((
                PcapngWriter::new(file, p.link_type, MAX_RECORD_LEN, "capture")
                    .map_err(PassError::Annotated)?,
                vec![p.link_type],
            ));
        }
        if let Some((w, link_types)) = writer.as_mut() {
            let iface = match link_types.iter().position(|&l| l == p.link_type) {
                Some(i) => i as u32,
                None => {
                    link_types.push(p.link_type);
                    w.add_interface(p.link_type, MAX_RECORD_LEN, "capture")
                        .map_err(PassError::Annotated)?
                }
            };
            let comments: Vec<&str> = comments.iter().map(String::as_str).collect();
            w.write_enhanced(iface, p.ts_ns, p.data, p.orig_len, &comments)
                .map_err(PassError::Annotated)?;
        }
    }
    send(&mut to_trace, &mut batch, 0);
    if let Some((w, _)) = writer {
        w.into_inner().map_err(PassError::Annotated)?;
    }
    // No frame: a pcapng with no packets (Ethernet, as libpcap's default).
    if let Some(file) = annotated_file {
        PcapngWriter::new(file, 1, MAX_RECORD_LEN, "capture")
            .and_then(PcapngWriter::into_inner)
            .map_err(PassError::Annotated)?;
    }
    Ok(pass.finish())
}

/// Hands the batch to the trace's thread; a thread that has stopped is not fed again.
/// The next batch is made with room for `room` records (none after the last).
fn send(
    to_trace: &mut Option<mpsc::SyncSender<PacketBatch>>,
    batch: &mut PacketBatch,
    room: usize,
) {
    if batch.packets.is_empty() {
        return;
    }
    let full = std::mem::replace(batch, PacketBatch::with_room(room));
    if let Some(tx) = to_trace {
        if tx.send(full).is_err() {
            *to_trace = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, Write};
    use std::sync::{Arc, Mutex};

    use netblame_capture::CaptureReader;
    use netblame_correlate::{blame, Analysis, Analyzer, AnalyzerConfig, Blame};

    use super::{pass_in_batches, PassError, PassOutputs};
    use crate::perfetto::TraceWriter;

    /// A capture with loss and its retransmissions (a few hundred packets).
    const LOSS: &[u8] = include_bytes!("../../../fixtures/lo-loss.pcap");

    fn reader(capture: &[u8]) -> CaptureReader<Cursor<&[u8]>> {
        CaptureReader::new(Cursor::new(capture), "t.pcap").unwrap()
    }

    fn analysed(capture: &[u8]) -> (Analysis, Blame) {
        let mut analyzer = Analyzer::new(AnalyzerConfig {
            keep_packets: false,
            keep_request_heads: true,
        });
        let mut r = reader(capture);
        while let Some(p) = r.next_packet().unwrap() {
            analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
        }
        let analysis = analyzer.finish();
        let b = blame(&analysis, &[], 1_000_000);
        (analysis, b)
    }

    /// A file the test reads back after the trace's thread wrote it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that fails once `room` bytes are written, as a full disk does.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pass_with(
        (analysis, b): (&Analysis, &Blame),
        (trace, trace_scratch): (impl Write + Send, Option<std::fs::File>),
        annotated: impl Write,
        batch: usize,
    ) -> Result<(), PassError> {
        let outputs = PassOutputs {
            trace: Some((trace, &[][..])),
            trace_scratch,
            annotated: Some(annotated),
            comment_all: true,
        };
        pass_in_batches(
            &mut reader(LOSS),
            (analysis, &[], b),
            outputs,
            |_| (),
            batch,
        )
        .map(drop)
    }

    /// An empty scratch file, unnamed once open.
    fn scratch() -> std::fs::File {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "netblame-pass-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(path).unwrap();
        file
    }

    /// Every packet record of a pass over LOSS into `trace`.
    fn every_packet<W: Write>(trace: &mut TraceWriter<W>) {
        let mut analyzer = Analyzer::new(AnalyzerConfig {
            keep_packets: true,
            keep_request_heads: false,
        });
        let (mut r, mut frame) = (reader(LOSS), 0);
        while let Some(p) = r.next_packet().unwrap() {
            frame += 1;
            analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
            for rec in analyzer.drain_packets() {
                trace.packet(frame, &rec, &[]).unwrap();
            }
        }
    }

    /// The trace as one thread writes it: the calls' part, then every packet of a pass.
    fn trace_on_one_thread(analysis: &Analysis, b: &Blame) -> Vec<u8> {
        let mut trace = TraceWriter::new(Vec::new(), analysis, &[], b, &[]).unwrap();
        every_packet(&mut trace);
        trace.into_inner().unwrap().0
    }

    /// The trace in two parts: the calls' part, then the packets on a sequence of their own.
    fn trace_in_two_parts(analysis: &Analysis, b: &Blame) -> Vec<u8> {
        let mut directions = 0;
        let calls = TraceWriter::new_telling(Vec::new(), analysis, &[], b, &[], |d| directions = d)
            .unwrap();
        let mut packets =
            TraceWriter::packets_only(Vec::new(), directions, crate::perfetto::PACKETS_SEQUENCE);
        every_packet(&mut packets);
        let mut bytes = calls.into_inner().unwrap().0;
        bytes.extend(packets.into_inner().unwrap().0);
        bytes
    }

    #[test]
    fn the_trace_from_its_thread_is_the_one_thread_trace_whatever_the_batch() {
        let (analysis, b) = analysed(LOSS);
        let expected = trace_on_one_thread(&analysis, &b);
        assert!(expected.len() > 5_000, "{}", expected.len());
        for batch in [1, 7, 8192] {
            let out = Shared::default();
            pass_with((&analysis, &b), (out.clone(), None), io::sink(), batch).unwrap();
            assert!(*out.0.lock().unwrap() == expected, "batch {batch}");
        }
    }

    #[test]
    fn the_trace_written_by_two_threads_is_its_calls_then_its_packets_sequence() {
        let (analysis, b) = analysed(LOSS);
        let expected = trace_in_two_parts(&analysis, &b);
        assert!(expected.len() > 5_000, "{}", expected.len());
        for batch in [1, 7, 8192] {
            let out = Shared::default();
            pass_with(
                (&analysis, &b),
                (out.clone(), Some(scratch())),
                io::sink(),
                batch,
            )
            .unwrap();
            assert!(*out.0.lock().unwrap() == expected, "batch {batch}");
        }
    }

    #[test]
    fn a_full_trace_is_named_and_the_annotated_copy_still_written() {
        let (analysis, b) = analysed(LOSS);
        for scratch in [None, Some(scratch())] {
            let mut annotated = Vec::new();
            let trace = (Full { room: 100 }, scratch);
            let err = pass_with((&analysis, &b), trace, &mut annotated, 7).unwrap_err();
            assert!(matches!(err, PassError::Trace(_)), "{err:?}");
            assert_eq!(err.to_string(), "writing the trace");
            assert!(
                annotated.len() > LOSS.len(),
                "the copy went on: {}",
                annotated.len()
            );
        }
    }

    #[test]
    fn a_full_annotated_copy_is_named() {
        let (analysis, b) = analysed(LOSS);
        let trace = (io::sink(), Some(scratch()));
        let err = pass_with((&analysis, &b), trace, Full { room: 1000 }, 7).unwrap_err();
        assert!(matches!(err, PassError::Annotated(_)), "{err:?}");
        assert_eq!(err.to_string(), "writing the annotated capture");
    }
}
