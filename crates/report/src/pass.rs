//! The second pass over a capture file that the pictures need: every frame through a fresh
//! analyzer (so each packet record is classified exactly as in the first pass), each record
//! offered to [`PacketPass`] (graphs, first-byte comments, links), streamed into the Perfetto
//! trace, and each frame copied into the annotated pcapng with its comments.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};

use netblame_capture::{CaptureReader, PcapngWriter, ReadError, MAX_RECORD_LEN};
use netblame_correlate::{Analysis, Analyzer, AnalyzerConfig, Blame, SocketCall};

use crate::detail::{Detail, PacketPass};
use crate::perfetto::TraceWriter;

/// Why the second pass failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PassError {
    /// The capture could not be read (it was read whole once already: it changed, or the disk).
    Capture(ReadError),
    /// The trace or the annotated capture could not be written.
    Write(io::Error),
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassError::Capture(_) => f.write_str("reading the capture again"),
            PassError::Write(_) => f.write_str("writing the trace or the annotated capture"),
        }
    }
}

impl Error for PassError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PassError::Capture(e) => Some(e),
            PassError::Write(e) => Some(e),
        }
    }
}

impl From<ReadError> for PassError {
    fn from(e: ReadError) -> Self {
        PassError::Capture(e)
    }
}

impl From<io::Error> for PassError {
    fn from(e: io::Error) -> Self {
        PassError::Write(e)
    }
}

/// Where the pass writes, besides what it keeps for the page.
#[derive(Debug)]
pub struct PassOutputs<T: Write, A: Write> {
    pub trace: Option<TraceWriter<T>>,
    /// The annotated capture's file (its pcapng headers are written on the first frame).
    pub annotated: Option<A>,
    /// Comment every read's first packet, not only the listed reads'.
    pub comment_all: bool,
}

/// Runs the pass; `progress` is told the file offset now and then. Flushes both outputs.
pub fn second_pass<R: Read, T: Write, A: Write>(
    reader: &mut CaptureReader<R>,
    analysis: &Analysis,
    calls: &[SocketCall],
    blame: &Blame,
    outputs: PassOutputs<T, A>,
    mut progress: impl FnMut(u64),
) -> Result<Detail, PassError> {
    let PassOutputs {
        mut trace,
        annotated,
        comment_all,
    } = outputs;
    let mut pass = PacketPass::new(analysis, calls, blame, comment_all);
    let mut annotated_file = annotated;
    // The writer, made on the first frame (its first interface is that frame's link type), and
    // the link type of each of its interfaces.
    let mut writer: Option<(PcapngWriter<A>, Vec<u16>)> = None;
    let mut analyzer = Analyzer::new(AnalyzerConfig {
        keep_packets: true,
        keep_request_heads: false,
    });
    let mut frame = 0u64;
    while let Some(p) = reader.next_packet()? {
        frame += 1;
        if frame % 8192 == 0 {
            progress(p.file_offset);
        }
        analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
        for rec in analyzer.drain_packets() {
            let links = pass.packet(frame, &rec);
            if let Some(t) = trace.as_mut() {
                t.packet(frame, &rec, links)?;
            }
        }
        let comments = pass.take_comments();
        if let Some(file) = annotated_file.take() {
            writer = Some((
                PcapngWriter::new(file, p.link_type, MAX_RECORD_LEN, "capture")?,
                vec![p.link_type],
            ));
        }
        if let Some((w, link_types)) = writer.as_mut() {
            let iface = match link_types.iter().position(|&l| l == p.link_type) {
                Some(i) => i as u32,
                None => {
                    link_types.push(p.link_type);
                    w.add_interface(p.link_type, MAX_RECORD_LEN, "capture")?
                }
            };
            let comments: Vec<&str> = comments.iter().map(String::as_str).collect();
            w.write_enhanced(iface, p.ts_ns, p.data, p.orig_len, &comments)?;
        }
    }
    if let Some(t) = trace {
        t.finish()?;
    }
    if let Some((w, _)) = writer {
        w.into_inner()?;
    }
    // No frame: a pcapng with no packets (Ethernet, as libpcap's default).
    if let Some(file) = annotated_file {
        PcapngWriter::new(file, 1, MAX_RECORD_LEN, "capture")?.into_inner()?;
    }
    Ok(pass.finish())
}
