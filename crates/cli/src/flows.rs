//! `netblame flows FILE`: per-connection analysis of a capture file.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use std::sync::mpsc;

use netblame_capture::{CaptureReader, FileStats, ReadError};
use netblame_correlate::{
    decode_frame, Analysis, Analyzer, AnalyzerConfig, DecodeError, Flow, Protocol, Segment,
};
use netblame_export::{Cell, PacketTable, TableFormat, TableOutput};
use serde_json::{json, Map, Value};

use crate::FlowsArgs;
use netblame_report::fmt::{bytes, duration, opt_duration};

/// Decoded frames, in capture order, as they go from the reading thread to the analysing one,
/// with the first payload bytes of each TCP data segment when the analysis keeps them (one
/// buffer per batch, reused: no allocation per frame).
#[derive(Default)]
struct Batch {
    /// (capture time, the decoded frame, its payload bytes in `payloads`)
    frames: Vec<(i64, Result<Segment, DecodeError>, std::ops::Range<usize>)>,
    payloads: Vec<u8>,
}

impl Batch {
    fn with_capacity(n: usize) -> Batch {
        Batch {
            frames: Vec::with_capacity(n),
            payloads: Vec::new(),
        }
    }
}
/// Frames per batch: large enough that the channel costs nothing per frame, small enough to
/// stay in cache (a segment is about 100 bytes).
const BATCH: usize = 1024;

/// Reads a capture file through the analyzer. Warns on stderr when the file was cut short.
///
/// Two threads: one reads and decodes the frames (the file's bytes, the headers), the other
/// follows the connections (flow state, byte timelines), which must see the packets in order.
/// Batches go one way and come back empty to be reused. With one core to run on (the process's
/// affinity or CPU quota) the two halves run in turn on this thread, as the threads would.
///
/// With `packets`, the packets table is written as the analysis goes (`keep_packets` is set
/// for it, and the analysis returned keeps none).
pub fn analyze_capture(
    path: &Path,
    mut config: AnalyzerConfig,
    mut packets: Option<&mut PacketTable>,
) -> Result<(Analysis, FileStats)> {
    let mut reader = CaptureReader::open(path)?;
    config.keep_packets |= packets.is_some();
    let mut analyzer = Analyzer::new(config);
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let bar = crate::analyze::progress(size, "reading the capture");
    let read = if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        read_in_parallel(
            reader,
            &mut analyzer,
            &bar,
            config.keep_request_heads,
            &mut packets,
        )
    } else {
        // One core: the threads would only take turns.
        let mut frames = 0u32;
        let mut read = || -> Result<FileStats> {
            while let Some(p) = reader.next_packet()? {
                frames = frames.wrapping_add(1);
                if frames % 8192 == 0 {
                    bar.set_position(p.file_offset);
                }
                analyzer.add_frame(p.ts_ns, p.link_type, p.data, p.orig_len);
                if frames % BATCH as u32 == 0 {
                    write_packets(&mut analyzer, &mut packets)?;
                }
            }
            Ok(reader.stats().clone())
        };
        read()
    };
    bar.finish_and_clear();
    let stats = read?;
    write_packets(&mut analyzer, &mut packets)?;
    if let Some(offset) = stats.truncated_at {
        eprintln!(
            "netblame: warning: {}: the file ends inside a record at byte offset {offset} (was the capture killed?); \
             analysed the {} complete records before it",
            path.display(),
            stats.records
        );
    }
    Ok((analyzer.finish(), stats))
}

/// Hands the packets the analyzer made since the last call to the packets table, if any.
fn write_packets(analyzer: &mut Analyzer, packets: &mut Option<&mut PacketTable>) -> Result<()> {
    if let Some(table) = packets {
        let (flows, made) = analyzer.drain_packets_of_flows();
        table
            .add(flows, made)
            .context("writing the packets table")?;
    }
    Ok(())
}

/// The reading and decoding thread, and the analysis on this one.
fn read_in_parallel(
    mut reader: CaptureReader<std::fs::File>,
    analyzer: &mut Analyzer,
    bar: &indicatif::ProgressBar,
    heads: bool,
    packets: &mut Option<&mut PacketTable>,
) -> Result<FileStats> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(8);
    let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
    let progress = bar.clone();
    std::thread::scope(|scope| {
        let reading = scope.spawn(move || -> Result<FileStats, ReadError> {
            let mut batch = Batch::with_capacity(BATCH);
            let mut frames = 0u32;
            while let Some(p) = reader.next_packet()? {
                frames = frames.wrapping_add(1);
                if frames % 8192 == 0 {
                    progress.set_position(p.file_offset);
                }
                let decoded = decode_frame(p.link_type, p.data, p.orig_len);
                let at = batch.payloads.len();
                if let (true, Ok(seg)) = (heads, &decoded) {
                    let payload = seg.captured_payload(p.data);
                    let n = payload.len().min(netblame_correlate::request::HEAD_BYTES);
                    batch.payloads.extend_from_slice(&payload[..n]);
                }
                let end = batch.payloads.len();
                batch.frames.push((p.ts_ns, decoded, at..end));
                if batch.frames.len() == BATCH {
                    let next = empty_rx
                        .try_recv()
                        .unwrap_or_else(|_| Batch::with_capacity(BATCH));
                    if full_tx.send(std::mem::replace(&mut batch, next)).is_err() {
                        break;
                    }
                }
            }
            if !batch.frames.is_empty() {
                let _ = full_tx.send(batch);
            }
            Ok(reader.stats().clone())
        });
        let mut written = Ok(());
        for mut batch in full_rx {
            for (ts_ns, decoded, payload) in batch.frames.drain(..) {
                match decoded {
                    Ok(seg) => {
                        analyzer.add_segment_with_payload(ts_ns, &seg, &batch.payloads[payload])
                    }
                    Err(e) => analyzer.record_undecoded(ts_ns, &e),
                }
            }
            written = write_packets(analyzer, packets);
            if written.is_err() {
                // Dropping the channel stops the reading thread at its next batch.
                break;
            }
            batch.payloads.clear();
            let _ = empty_tx.send(batch);
        }
        let read = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written?;
        Ok(read?)
    })
}

pub fn run(args: &FlowsArgs) -> Result<()> {
    let outputs: Vec<TableOutput> = [
        (&args.csv, TableFormat::Csv),
        (&args.parquet, TableFormat::Parquet),
    ]
    .into_iter()
    .filter_map(|(dir, format)| {
        Some(TableOutput {
            dir: dir.as_deref()?,
            format,
            host: None,
        })
    })
    .collect();
    let context = || tables_context(&outputs);
    let mut packets = packet_table(&outputs)?;
    let config = AnalyzerConfig {
        keep_packets: false,
        keep_request_heads: false,
    };
    let (analysis, stats) = analyze_capture(&args.file, config, packets.as_mut())?;
    if let Some(packets) = packets {
        packets.finish().with_context(context)?;
        netblame_export::write_flows(&analysis, &outputs).with_context(context)?;
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let doc = json!({
            "file": args.file.display().to_string(),
            "capture": quality_json(&analysis, &stats),
            "flows": netblame_export::flow_records(&analysis).iter().map(record_json).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &args.file, &analysis, &stats)?;
    }
    out.flush()?;
    Ok(())
}

/// The packets table in each of `outputs`, to be written during the pass over the capture (none
/// without outputs).
pub fn packet_table<'a>(outputs: &'a [TableOutput<'a>]) -> Result<Option<PacketTable<'a>>> {
    if outputs.is_empty() {
        return Ok(None);
    }
    let table = PacketTable::new(outputs).with_context(|| tables_context(outputs))?;
    Ok(Some(table))
}

/// What an error writing tables into `outputs` says it was doing.
pub fn tables_context(outputs: &[TableOutput]) -> String {
    let dirs: Vec<String> = outputs
        .iter()
        .map(|o| o.dir.display().to_string())
        .collect();
    format!("writing tables into {}", dirs.join(" and "))
}

fn record_json(record: &netblame_export::Record) -> Value {
    let mut m = Map::new();
    for (name, cell) in record {
        let v = match cell {
            Cell::U64(v) => json!(v),
            Cell::I64(v) => json!(v),
            Cell::Str(s) => json!(s),
            Cell::Bool(b) => json!(b),
        };
        m.insert((*name).to_string(), v);
    }
    Value::Object(m)
}

fn quality_json(a: &Analysis, s: &FileStats) -> Value {
    let q = &a.quality;
    json!({
        "frames": q.frames,
        "tcp_packets": q.tcp_packets,
        "udp_packets": q.udp_packets,
        "other_ip": q.other_ip,
        "non_ip": q.non_ip,
        "truncated": q.truncated,
        "undecodable": q.undecodable,
        "capture_duplicates": q.capture_duplicates,
        "sliced_records": s.sliced_records,
        "kernel_drops": s.kernel_drops,
        "file_truncated_at": s.truncated_at,
    })
}

pub fn print_table(
    out: &mut impl Write,
    file: &Path,
    a: &Analysis,
    s: &FileStats,
) -> io::Result<()> {
    let tcp = a
        .flows
        .iter()
        .filter(|f| f.protocol == Protocol::Tcp)
        .count();
    let udp = a.flows.len() - tcp;
    writeln!(
        out,
        "{}: {} TCP connections, {} UDP flows",
        file.display(),
        tcp,
        udp
    )?;
    if !a.flows.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:>4}  {:<3}  {:<47}  {:>9}  {:>15}  {:>19}  {:>9}  {:>7}  {:>5}  {:>5}  {:>8}  {:>17}",
            "id", "", "a <-> b", "duration", "packets a>b/b>a", "bytes a>b/b>a", "rexmit", "ooo", "gaps", "zwin", "hs rtt", "rtt p50/p99"
        )?;
        for f in &a.flows {
            print_flow(out, f)?;
        }
    }
    writeln!(out)?;
    let q = &a.quality;
    let drops = match s.kernel_drops {
        Some(n) => format!("{n} dropped by the kernel"),
        None => "kernel drops not recorded in this file format".to_string(),
    };
    writeln!(
        out,
        "capture: {} frames ({} TCP, {} UDP); {} not IP, {} other IP, {} cut before the transport header, \
         {} undecodable, {} capture duplicates; {}{}",
        q.frames,
        q.tcp_packets,
        q.udp_packets,
        q.non_ip,
        q.other_ip,
        q.truncated,
        q.undecodable,
        q.capture_duplicates,
        drops,
        if s.truncated_at.is_some() { "; file cut short" } else { "" },
    )
}

fn print_flow(out: &mut impl Write, f: &Flow) -> io::Result<()> {
    let [a, b] = &f.dirs;
    let pair = format!("{} <-> {}", f.endpoints[0], f.endpoints[1]);
    let rexmit = a.stats.retransmitted_packets + b.stats.retransmitted_packets;
    let ooo = a.stats.out_of_order_packets + b.stats.out_of_order_packets;
    let gaps = a.stats.gaps + b.stats.gaps;
    let zwin = a.stats.zero_window_packets + b.stats.zero_window_packets;
    let mut samples = a.rtt_samples_ns.clone();
    samples.extend_from_slice(&b.rtt_samples_ns);
    let rtt = if samples.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{}/{}",
            opt_duration(netblame_correlate::flows::quantile(&samples, 0.5)),
            opt_duration(netblame_correlate::flows::quantile(&samples, 0.99))
        )
    };
    let unaligned = if f.protocol == Protocol::Tcp && !(a.aligned() && b.aligned()) {
        "*"
    } else {
        ""
    };
    writeln!(
        out,
        "{:>4}  {:<3}  {:<47}  {:>9}  {:>15}  {:>19}  {:>9}  {:>7}  {:>5}  {:>5}  {:>8}  {:>17}",
        format!("{}{}", f.id, unaligned),
        f.protocol.as_str(),
        pair,
        duration(f.last_ts_ns - f.first_ts_ns),
        format!("{}/{}", a.stats.packets, b.stats.packets),
        format!(
            "{}/{}",
            bytes(a.stats.payload_bytes),
            bytes(b.stats.payload_bytes)
        ),
        rexmit,
        ooo,
        gaps,
        zwin,
        opt_duration(f.handshake_rtt_ns),
        rtt,
    )
}
