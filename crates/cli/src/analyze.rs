//! `netblame analyze RUN_DIR`: join the recorded socket calls with the capture and say where the
//! time of every read went (docs/timing-model.md).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use netblame_correlate::{blame, AnalyzerConfig, Blame, SocketCall};
use netblame_export::TableFormat;
use netblame_instrument::{LogContents, LogError};
use netblame_report::socket_calls;

use crate::{AnalyzeArgs, UsageError};

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
        &Job {
            capture: &capture,
            events: &events_path,
            events_optional: false,
            threshold_ms: args.threshold_ms,
            csv: args.csv.as_deref(),
            parquet: args.parquet.as_deref(),
        },
        &mut io::stdout().lock(),
    )
}

/// One analysis: its inputs and where its tables go.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub capture: &'a Path,
    /// An event log, a folder of them, or a run directory.
    pub events: &'a Path,
    /// A run whose command made no socket call leaves no event log: analyse the capture alone
    /// (its connections are then listed as having no recorded calls).
    pub events_optional: bool,
    pub threshold_ms: f64,
    pub csv: Option<&'a Path>,
    pub parquet: Option<&'a Path>,
}

/// Analyses a capture and its events; prints the report to `out`.
pub fn analyze(job: &Job, out: &mut impl Write) -> Result<()> {
    let tables = job.csv.is_some() || job.parquet.is_some();
    let (analysis, _) = crate::flows::analyze_capture(
        job.capture,
        AnalyzerConfig {
            keep_packets: tables,
        },
    )?;
    let contents = match netblame_instrument::read_events(job.events) {
        Err(LogError::NoLogs { .. }) if job.events_optional => LogContents::default(),
        other => other?,
    };
    if let Some(damage) = &contents.damage {
        eprintln!("netblame: warning: {damage}; analysing the complete events before it");
    }
    for lost in &contents.lost {
        eprintln!("netblame: warning: {lost}");
    }
    let lost = contents.lost;
    let netblame_report::Calls { calls, rejected } = socket_calls(contents.events);
    let threshold_ns = (job.threshold_ms * 1e6) as i64;
    let result = blame(&analysis, &calls, threshold_ns);
    let outputs: Vec<(&Path, TableFormat)> = [
        (job.csv, TableFormat::Csv),
        (job.parquet, TableFormat::Parquet),
    ]
    .into_iter()
    .filter_map(|(dir, format)| Some((dir?, format)))
    .collect();
    write_tables(&outputs, &analysis, &calls, &result)?;
    let caveats = netblame_report::Caveats {
        lost: &lost,
        rejected_events: rejected,
    };
    netblame_report::write_text(out, &analysis, &calls, &result, job.threshold_ms, &caveats)?;
    Ok(())
}

/// Writes the six tables (docs/tables.md) in each of `outputs`. One table at a time, each
/// written in every format before the next is built (`packets` in batches), so that peak memory
/// is about one table's.
fn write_tables(
    outputs: &[(&Path, TableFormat)],
    analysis: &netblame_correlate::Analysis,
    calls: &[SocketCall],
    result: &Blame,
) -> Result<()> {
    use netblame_export as x;
    type Build<'a> = Box<dyn Fn() -> Result<x::DataFrame, x::ExportError> + 'a>;
    if outputs.is_empty() {
        return Ok(());
    }
    let tables: [(&str, Build); 4] = [
        ("reads", Box::new(|| x::reads_frame(calls, result))),
        ("sends", Box::new(|| x::sends_frame(calls, result))),
        ("connects", Box::new(|| x::connects_frame(calls, result))),
        ("tests", Box::new(|| x::tests_frame(calls, result))),
    ];
    let context = || {
        let dirs: Vec<String> = outputs
            .iter()
            .map(|(d, _)| d.display().to_string())
            .collect();
        format!("writing tables into {}", dirs.join(" and "))
    };
    for (name, build) in tables {
        let mut frame = build()?;
        for (dir, format) in outputs {
            x::write_table(dir, name, &mut frame, *format).with_context(context)?;
        }
    }
    x::write_capture_tables(analysis, outputs).with_context(context)
}
