//! `netblame analyze RUN_DIR`: join the recorded socket calls with the capture and say where the
//! time of every read went (docs/timing-model.md).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use netblame_correlate::{blame, AnalyzerConfig, Blame, CallKind, ReadBlame, SocketCall, Verdict};
use netblame_export::TableFormat;
use netblame_instrument::{Event, Kind, Proto};

use crate::fmt::{bytes as fmt_bytes, duration};
use crate::{AnalyzeArgs, UsageError};

/// The recorded events as the correlator takes them.
pub fn socket_calls(events: Vec<Event>) -> Vec<SocketCall> {
    events
        .into_iter()
        .map(|e| SocketCall {
            kind: match e.kind {
                Kind::Open => CallKind::Open,
                Kind::Recv => CallKind::Recv,
                Kind::Send => CallKind::Send,
                Kind::Close => CallKind::Close,
                _ => CallKind::Other,
            },
            pid: e.pid,
            tid: e.tid,
            fd: e.fd,
            stream: e.stream,
            t_call_ns: e.t_call_ns,
            t_return_ns: e.t_return_ns,
            bytes: e.bytes,
            offset: e.offset,
            peek: e.peek,
            test: e.test,
            local: e.local,
            peer: e.peer,
            tcp: e.proto != Some(Proto::Udp),
        })
        .collect()
}

/// The capture file and events directory of a run directory.
fn run_inputs(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let capture = ["capture.pcap", "capture.pcapng"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!(UsageError(format!(
                "{}: no capture.pcap or capture.pcapng: not a run directory",
                dir.display()
            )))
        })?;
    Ok((capture, dir.join("events")))
}

pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let (capture, events_path) = match (&args.run_dir, &args.pcap, &args.events) {
        (Some(dir), None, None) => run_inputs(dir)?,
        (None, Some(p), Some(e)) => (p.clone(), e.clone()),
        _ => {
            return Err(anyhow!(UsageError(
                "give a run directory, or both --pcap FILE and --events PATH".into()
            )))
        }
    };
    analyze(
        &capture,
        &events_path,
        args.threshold_ms,
        args.csv.as_deref(),
        args.parquet.as_deref(),
        &mut io::stdout().lock(),
    )
}

/// Analyses a capture and an events file or directory; prints the report to `out`.
pub fn analyze(
    capture: &Path,
    events_path: &Path,
    threshold_ms: f64,
    csv: Option<&Path>,
    parquet: Option<&Path>,
    out: &mut impl Write,
) -> Result<()> {
    let tables = csv.is_some() || parquet.is_some();
    let (analysis, _) = crate::flows::analyze_capture(
        capture,
        AnalyzerConfig {
            keep_packets: tables,
        },
    )?;
    let contents = netblame_instrument::read_events(events_path)?;
    if let Some(damage) = &contents.damage {
        eprintln!("netblame: warning: {damage}; analysing the complete events before it");
    }
    let calls = socket_calls(contents.events);
    let threshold_ns = (threshold_ms * 1e6) as i64;
    let result = blame(&analysis, &calls, threshold_ns);
    for (dir, format) in [(csv, TableFormat::Csv), (parquet, TableFormat::Parquet)] {
        if let Some(dir) = dir {
            let mut reads = netblame_export::reads_frame(&calls, &result)?;
            netblame_export::write_table(dir, "reads", &mut reads, format)?;
            let mut flows = netblame_export::flows_frame(&analysis)?;
            netblame_export::write_table(dir, "flows", &mut flows, format)?;
            let mut packets = netblame_export::packets_frame(&analysis)?;
            netblame_export::write_table(dir, "packets", &mut packets, format)
                .with_context(|| format!("writing tables into {}", dir.display()))?;
        }
    }
    report(out, &calls, &result, threshold_ms)?;
    Ok(())
}

#[derive(Default)]
struct Totals {
    reads: u64,
    bytes: u64,
    in_call: i64,
    loss: i64,
    peer: i64,
    app: i64,
    wakeup: i64,
    worst: Option<(i64, Verdict)>,
}

impl Totals {
    fn add(&mut self, c: &SocketCall, r: &ReadBlame) {
        self.reads += 1;
        self.bytes += c.bytes.max(0) as u64;
        self.in_call += c.t_return_ns - c.t_call_ns;
        self.loss += r.timing.loss_delay_ns;
        self.peer += r.timing.peer_wait_ns;
        self.app += r.timing.buffer_wait_ns;
        self.wakeup += r.timing.wakeup_ns;
        // The worst verdict is the one of the read that lost the most time to its cause.
        let cost = match r.verdict {
            Verdict::Loss => r.timing.loss_delay_ns,
            Verdict::PeerSlow => r.timing.peer_wait_ns,
            Verdict::AppLate => r.timing.buffer_wait_ns,
            Verdict::WakeupLate => r.timing.wakeup_ns,
            _ => 0,
        };
        if self.worst.is_none_or(|(w, _)| cost > w) {
            self.worst = Some((cost, r.verdict));
        }
    }

    fn blamed(&self) -> i64 {
        self.loss + self.peer + self.app + self.wakeup
    }

    fn breakdown(&self) -> String {
        format!(
            "loss {}, peer {}, program {}, wakeup {}",
            duration(self.loss),
            duration(self.peer),
            duration(self.app),
            duration(self.wakeup)
        )
    }
}

fn share(part: i64, whole: i64) -> String {
    if whole <= 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn report(
    out: &mut impl Write,
    calls: &[SocketCall],
    b: &Blame,
    threshold_ms: f64,
) -> io::Result<()> {
    let data: Vec<&ReadBlame> = b
        .reads
        .iter()
        .filter(|r| r.verdict != Verdict::NoData)
        .collect();
    let mut all = Totals::default();
    let mut verdicts: BTreeMap<Verdict, u64> = BTreeMap::new();
    for r in &data {
        all.add(&calls[r.call], r);
        *verdicts.entry(r.verdict).or_default() += 1;
    }
    writeln!(
        out,
        "netblame: {} reads with data ({}), {} sends",
        data.len(),
        fmt_bytes(all.bytes),
        b.sends.len()
    )?;
    let whole = all.blamed();
    writeln!(
        out,
        "\nwhere the read time went (verdict threshold {threshold_ms} ms):"
    )?;
    for (label, v) in [
        ("loss (waiting on retransmissions)", all.loss),
        ("peer (data not sent yet, or in flight)", all.peer),
        ("program (data waited in the socket buffer)", all.app),
        ("wakeup (kernel and scheduler)", all.wakeup),
    ] {
        writeln!(
            out,
            "  {label:<44} {:>10}  {:>4}",
            duration(v),
            share(v, whole)
        )?;
    }
    let counts: Vec<String> = verdicts
        .iter()
        .map(|(v, n)| format!("{} {n}", v.as_str()))
        .collect();
    writeln!(out, "  verdicts: {}", counts.join(", "))?;

    let cost = |r: &ReadBlame| {
        let c = &calls[r.call];
        (c.t_return_ns - c.t_call_ns) + r.timing.buffer_wait_ns
    };
    let mut slow: Vec<&&ReadBlame> = data.iter().collect();
    let top = slow.len().min(10);
    if top > 0 && top < slow.len() {
        slow.select_nth_unstable_by_key(top - 1, |r| std::cmp::Reverse(cost(r)));
    }
    slow.truncate(top);
    slow.sort_by_key(|r| std::cmp::Reverse(cost(r)));
    writeln!(out, "\nslowest reads:")?;
    for r in slow.iter().take(10) {
        let c = &calls[r.call];
        let (test, _) = netblame_export::split_test(c.test.as_deref());
        writeln!(
            out,
            "  {:>9} in call, +{:>9} before it  {:<12} flow {:<4} pid {} fd {} {} at offset {}{}{}",
            duration(c.t_return_ns - c.t_call_ns),
            duration(r.timing.buffer_wait_ns),
            r.verdict.as_str(),
            r.flow_id.map_or("-".into(), |f| f.to_string()),
            c.pid,
            c.fd,
            fmt_bytes(c.bytes.max(0) as u64),
            c.offset,
            if r.timing.retransmitted_bytes > 0 {
                format!(
                    ", {} retransmitted",
                    fmt_bytes(r.timing.retransmitted_bytes)
                )
            } else {
                String::new()
            },
            test.map_or(String::new(), |t| format!("  [{t}]")),
        )?;
    }

    let mut per_test: BTreeMap<String, Totals> = BTreeMap::new();
    let mut per_flow: BTreeMap<Option<u32>, Totals> = BTreeMap::new();
    for r in &data {
        let c = &calls[r.call];
        let (test, phase) = netblame_export::split_test(c.test.as_deref());
        if let Some(t) = test {
            let key = match phase {
                Some(p) => format!("{t} ({p})"),
                None => t,
            };
            per_test.entry(key).or_default().add(c, r);
        }
        per_flow.entry(r.flow_id).or_default().add(c, r);
    }
    if !per_test.is_empty() {
        writeln!(out, "\nper test:")?;
        for (t, x) in &per_test {
            writeln!(
                out,
                "  {t}\n    {} reads, {} in reads; {}; worst: {}",
                x.reads,
                duration(x.in_call),
                x.breakdown(),
                x.worst.map_or("-", |(_, v)| v.as_str())
            )?;
        }
    }
    writeln!(out, "\nper connection:")?;
    for (f, x) in &per_flow {
        writeln!(
            out,
            "  flow {:<4} {} reads, {}, {} in reads; {}; worst: {}",
            f.map_or("-".into(), |f| f.to_string()),
            x.reads,
            fmt_bytes(x.bytes),
            duration(x.in_call),
            x.breakdown(),
            x.worst.map_or("-", |(_, v)| v.as_str())
        )?;
    }
    if !b.unmatched_streams.is_empty() {
        writeln!(
            out,
            "\n{} connections recorded by the program are not in the capture:",
            b.unmatched_streams.len()
        )?;
        for (pid, _, local, peer) in b.unmatched_streams.iter().take(10) {
            let show = |a: &Option<std::net::SocketAddr>| a.map_or("?".into(), |a| a.to_string());
            writeln!(out, "  pid {pid}: {} -> {}", show(local), show(peer))?;
        }
    }
    if b.causality_violations > 0 {
        writeln!(
            out,
            "\nwarning: {} reads returned bytes more than 100 µs before they were captured: clock skew, or a join error",
            b.causality_violations
        )?;
    }
    Ok(())
}
