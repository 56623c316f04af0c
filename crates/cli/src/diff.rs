//! `netblame diff RUN_A RUN_B`: each run analysed as `analyze` would, its test phases compared
//! (`netblame_correlate::suite::diff`), printed as text, Markdown or JSON. Exit status 1 only
//! when `--fail-slower` is given and a test got slower by more than it; any error is 2, so a
//! CI step can tell "slower" from "could not compare".

use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use netblame_correlate::{AnalyzerConfig, SummarySink, TestRow};

use crate::analyze::{load, Job, Loaded, Renders};
use crate::{DiffArgs, DiffFormat, UsageError};

/// A run's inputs.
fn analysed(dir: &Path) -> Result<Loaded> {
    let (capture, events) = crate::analyze::run_inputs(dir)?;
    let job = Job {
        capture: &capture,
        events: &events,
        events_optional: true,
        threshold_ms: 1.0,
        csv: None,
        parquet: None,
        dataset: None,
        renders: Renders::default(),
    };
    let config = AnalyzerConfig {
        keep_packets: false,
        keep_request_heads: false,
    };
    load(&job, config, None).with_context(|| format!("analysing {}", dir.display()))
}

/// A run's test rows, from its join (one pass, its sums alone kept).
fn test_rows(run: &Loaded) -> Vec<TestRow<'_>> {
    let mut sums = SummarySink::default();
    netblame_correlate::join(&run.analysis, &run.calls, 1_000_000, &mut sums);
    sums.finish(&run.phases).tests
}

fn ms_to_ns(ms: f64, flag: &str) -> Result<i64> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(anyhow!(UsageError(format!(
            "{flag} {ms}: give a number of milliseconds, 0 or more"
        ))));
    }
    Ok((ms * 1e6) as i64)
}

pub fn run(args: &DiffArgs) -> Result<u8> {
    // Every failure is a usage error (exit 2): 1 means "a test got slower". A closed pipe
    // stays what it is (quiet).
    compare(args).map_err(|e| {
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<io::Error>()
                .is_some_and(|c| c.kind() == io::ErrorKind::BrokenPipe)
        });
        if broken_pipe || e.downcast_ref::<UsageError>().is_some() {
            e
        } else {
            anyhow!(UsageError(format!("{e:#}")))
        }
    })
}

fn compare(args: &DiffArgs) -> Result<u8> {
    let min_change_ns = ms_to_ns(args.min_change, "--min-change")?;
    let fail_slower_ns = args
        .fail_slower
        .map(|ms| ms_to_ns(ms, "--fail-slower"))
        .transpose()?;
    let (a, b) = (analysed(&args.run_a)?, analysed(&args.run_b)?);
    let (rows_a, rows_b) = (test_rows(&a), test_rows(&b));
    let d = netblame_correlate::suite::diff(
        &rows_a,
        a.has_phases,
        &rows_b,
        b.has_phases,
        min_change_ns,
    );
    let (name_a, name_b) = (
        args.run_a.display().to_string(),
        args.run_b.display().to_string(),
    );
    let runs = netblame_report::diff::Runs {
        a: &name_a,
        b: &name_b,
    };
    let mut out = io::stdout().lock();
    match args.format {
        DiffFormat::Text => netblame_report::diff::write_text(&mut out, runs, &d)?,
        DiffFormat::Markdown => netblame_report::diff::write_markdown(&mut out, runs, &d)?,
        DiffFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &netblame_report::diff::to_json(runs, &d))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(match (fail_slower_ns, d.largest_slowdown_ns) {
        (Some(limit), Some(slower)) if slower > limit => {
            eprintln!(
                "netblame: a test got slower by {} (more than --fail-slower {} ms)",
                netblame_report::fmt::duration(slower),
                args.fail_slower.unwrap_or_default()
            );
            1
        }
        _ => 0,
    })
}
