//! The fuzz targets, as plain functions of the input bytes, so that one definition serves both
//! the coverage-guided fuzzer (`fuzz/`, AFL++ through cargo-afl on stable Rust) and `cargo test`,
//! which replays every input that ever failed (`fuzz/regressions/TARGET/`) and the seeds.
//!
//! Each target runs the same code a user's command would on a file of those bytes, from memory:
//! a capture through the reader, the frame decoder and the flow analysis; an event log; JSON
//! Lines events; and `analyze` on a capture and events together, down to the text report and
//! the pictures (HTML page, Perfetto trace, annotated capture).

#![deny(unsafe_code)]

use std::io::{self, Cursor};
use std::path::Path;

use netblame_capture::CaptureReader;
use netblame_correlate::{Analysis, Analyzer, AnalyzerConfig};
use netblame_instrument::record::MAGIC;

/// A fuzz target: the input bytes in, nothing out; a panic is a failure.
pub type Target = fn(&[u8]);

/// The targets, by the names `just fuzz` and the regression folders use.
pub const TARGETS: [(&str, Target); 4] = [
    ("capture", capture),
    ("event_log", event_log),
    ("events_jsonl", events_jsonl),
    ("analyze", analyze),
];

/// The flow analysis of a capture file's bytes; reading stops at the first error, as `flows`
/// does.
fn analysis_of(data: &[u8], keep_packets: bool) -> Analysis {
    let mut analyzer = Analyzer::new(AnalyzerConfig {
        keep_packets,
        keep_request_heads: true,
    });
    if let Ok(mut reader) = CaptureReader::new(Cursor::new(data), "fuzz.pcap") {
        while let Ok(Some(p)) = reader.next_packet() {
            analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
        }
        let _ = reader.stats();
    }
    analyzer.finish()
}

/// A capture file: reader, frame decoding, flow analysis (with the packets table's records).
pub fn capture(data: &[u8]) {
    let analysis = analysis_of(data, true);
    std::hint::black_box(&analysis);
}

/// A binary event log.
pub fn event_log(data: &[u8]) {
    let path = Path::new("fuzz.nbev");
    if let Ok(contents) =
        netblame_instrument::read_binary(Cursor::new(data), path, Some(data.len() as u64))
    {
        for e in &contents.events {
            std::hint::black_box(e.to_json());
        }
    }
}

/// JSON Lines events, as `events dump` and `analyze` read a `.jsonl` file.
pub fn events_jsonl(data: &[u8]) {
    let path = Path::new("fuzz.jsonl");
    if let Ok(contents) = netblame_instrument::read_jsonl_from(Cursor::new(data), path) {
        for e in &contents.events {
            std::hint::black_box(e.to_json());
        }
    }
}

/// `analyze` on a capture and an event log together: the input is the capture's bytes, then
/// the event log's from its magic (`NBEVENTS`) on; the report is rendered and dropped.
pub fn analyze(data: &[u8]) {
    let split = data
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .unwrap_or(data.len());
    let (capture, events) = data.split_at(split);
    let analysis = analysis_of(capture, false);
    let contents = if events.is_empty() {
        Default::default()
    } else {
        match netblame_instrument::read_binary(Cursor::new(events), Path::new("fuzz.nbev"), None) {
            Ok(c) => c,
            Err(_) => return,
        }
    };
    let mut calls = netblame_report::socket_calls(contents.events);
    netblame_correlate::align_kernel_seqs(&analysis, &mut calls.calls);
    let caveats = netblame_report::Caveats {
        lost: &contents.lost,
        rejected_events: calls.rejected,
        rejected_phases: 0,
        recorders: &calls.recorders,
    };
    let phases = phases_of(&calls.calls);
    let joined =
        netblame_report::join_run(&analysis, &calls.calls, &phases, 1_000_000, true, &mut ());
    let result = joined.all.expect("kept");
    // The streaming path equals the batch one while both exist (issue 19): the exchanges made
    // as the join goes, and the report from sums and lists kept as it goes.
    let batch = netblame_correlate::exchanges(&analysis, &calls.calls, &result, 1_000_000);
    assert_eq!(
        result.exchanges, batch,
        "the join's exchanges are the batch pass's"
    );
    let text = |summary: &netblame_correlate::RunSummary, lists| {
        let mut out = Vec::new();
        netblame_report::write_text(
            &mut out,
            &analysis,
            &calls.calls,
            lists,
            1.0,
            summary,
            &caveats,
        )
        .expect("a Vec takes every write");
        out
    };
    let streamed = text(&joined.summary, &joined.lists);
    let summary = netblame_correlate::RunSummary::new(&calls.calls, &result, &phases);
    let replayed = text(
        &summary,
        &netblame_report::lists::ReportLists::of(&calls.calls, &result),
    );
    assert!(streamed == replayed, "the streamed report is the batch one");
    renders(
        capture,
        &analysis,
        &calls.calls,
        &result,
        (&phases, &summary),
        &caveats,
    );
}

/// Test phase records as the pytest plugin would write them around the calls tagged with a
/// test phase: one per call, so the rows, the tests track and the page see records too.
fn phases_of(calls: &[netblame_correlate::SocketCall]) -> Vec<netblame_correlate::TestPhase> {
    use netblame_correlate::{split_test, Outcome, Phase, TestPhase};
    calls
        .iter()
        .filter_map(|c| {
            let (test, phase) = split_test(c.test.as_deref());
            Some(TestPhase {
                test: test?.into(),
                phase: Phase::parse(phase?)?,
                outcome: Outcome::ALL[c.fd.unsigned_abs() as usize % Outcome::ALL.len()],
                start_ns: c.t_call_ns,
                end_ns: c.t_return_ns.max(c.t_call_ns),
                pid: c.pid,
                worker: None,
            })
        })
        .collect()
}

/// The pictures, as `analyze --html --perfetto --annotate --all` makes them: a second pass over
/// the capture, the trace and the annotated copy written as it goes, then the page.
fn renders(
    capture: &[u8],
    analysis: &Analysis,
    calls: &[netblame_correlate::SocketCall],
    result: &netblame_correlate::Blame,
    (phases, summary): (
        &[netblame_correlate::TestPhase],
        &netblame_correlate::RunSummary,
    ),
    caveats: &netblame_report::Caveats,
) {
    use netblame_report::pass;
    let Ok(mut reader) = CaptureReader::new(Cursor::new(capture), "fuzz.pcap") else {
        return;
    };
    let outputs = pass::PassOutputs {
        trace: Some((io::sink(), phases)),
        trace_scratch: None,
        annotated: Some(io::sink()),
        comment_all: true,
    };
    let Ok(detail) = pass::second_pass(&mut reader, analysis, calls, result, outputs, |_| ())
    else {
        return;
    };
    let _ = netblame_report::html::write_html(
        &mut io::sink(),
        analysis,
        calls,
        result,
        &detail,
        &netblame_report::html::Page {
            title: "fuzz",
            threshold_ms: 1.0,
            caveats,
            summary,
        },
    );
}
