//! `netblame analyze RUN_DIR`: join the recorded socket calls with the capture and say where the
//! time of every read went (docs/timing-model.md).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use netblame_capture::CaptureReader;
use netblame_correlate::{Analysis, AnalyzerConfig, Blame, SocketCall};
use netblame_export::{PacketTable, TableFormat, TableOutput};
use netblame_instrument::{LogContents, LogError};
use netblame_report::{pass, socket_calls};

use crate::{AnalyzeArgs, UsageError};

/// The capture file and events directory of a run directory.
pub(crate) fn run_inputs(dir: &Path) -> Result<(PathBuf, PathBuf)> {
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
    // A dataset's run id: the run directory's name (with --pcap, the capture's folder's).
    let run_id = match &args.dataset {
        Some(_) => {
            Some(run_id(args.run_dir.as_deref().unwrap_or_else(|| {
                capture.parent().unwrap_or(Path::new("."))
            }))?)
        }
        None => None,
    };
    analyze(
        &Job {
            capture: &capture,
            events: &events_path,
            events_optional: false,
            threshold_ms: args.threshold_ms,
            csv: args.csv.as_deref(),
            parquet: args.parquet.as_deref(),
            dataset: args
                .dataset
                .as_deref()
                .zip(run_id.as_deref())
                .map(|(dir, run_id)| Dataset { dir, run_id }),
            renders: Renders {
                html: args.html.as_deref(),
                perfetto: args.perfetto.as_deref(),
                annotate: args.annotate.as_deref(),
                annotate_all: args.all,
            },
        },
        &mut io::stdout().lock(),
    )
}

/// The pictures of a run (`crates/report`): files to write, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renders<'a> {
    pub html: Option<&'a Path>,
    pub perfetto: Option<&'a Path>,
    pub annotate: Option<&'a Path>,
    /// Comment every read's first packet, not only the listed reads'.
    pub annotate_all: bool,
}

impl Renders<'_> {
    fn any(&self) -> bool {
        self.html.is_some() || self.perfetto.is_some() || self.annotate.is_some()
    }
}

/// The names a run directory gives its pictures.
pub const RUN_HTML: &str = "report.html";
pub const RUN_PERFETTO: &str = "trace.pftrace";
pub const RUN_ANNOTATED: &str = "capture-annotated.pcapng";

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
    /// A dataset folder: the tables also go to `DIR/run=RUN_ID/` as Parquet, with a `host`
    /// column (`RUN_ID`: the run directory's name).
    pub dataset: Option<Dataset<'a>>,
    pub renders: Renders<'a>,
}

/// Where a run's tables join a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a> {
    pub dir: &'a Path,
    pub run_id: &'a str,
}

/// The run id a run directory gives a dataset: its name, which must be a plain folder name (a
/// hive partition `run=ID` cannot hold `/`, nor start a hidden or relative name).
pub fn run_id(run_dir: &Path) -> Result<String> {
    // The directory may not exist yet (`run` asks before it makes it).
    let name = std::fs::canonicalize(run_dir)
        .or_else(|_| std::path::absolute(run_dir))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '=']) {
        return Err(anyhow!(UsageError(format!(
            "{}: a run directory whose name can be a dataset run id (no '=', not hidden) is \
             needed for --dataset",
            run_dir.display()
        ))));
    }
    Ok(name)
}

/// A run's inputs read: the capture analysed, the calls and test phases as the model takes
/// them, and what the report must say about them.
pub struct Loaded {
    pub analysis: Analysis,
    pub calls: Vec<SocketCall>,
    pub phases: Vec<netblame_correlate::TestPhase>,
    /// Whether the pytest plugin's log was there (a run made without it has none).
    pub has_phases: bool,
    pub rejected_events: u64,
    pub rejected_phases: u64,
    pub lost: Vec<netblame_instrument::LostCalls>,
    /// Which recorder saw each process: (pid, recorder, events).
    pub recorders: Vec<(u32, netblame_instrument::Recorder, u64)>,
}

/// Reads a run: the capture and the events (on a thread of their own when there is a core for
/// it), and the pytest plugin's records; warns on stderr of damage and losses. With `packets`,
/// the packets table is written during the pass over the capture.
pub fn load(
    job: &Job,
    config: AnalyzerConfig,
    mut packets: Option<&mut PacketTable>,
) -> Result<Loaded> {
    let (capture, events) = if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        std::thread::scope(|scope| {
            let events = scope.spawn(|| read_calls(job));
            let capture = crate::flows::analyze_capture(job.capture, config, packets.take());
            let events = events
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (capture, events)
        })
    } else {
        (
            crate::flows::analyze_capture(job.capture, config, packets),
            read_calls(job),
        )
    };
    let (analysis, _) = capture?;
    let (
        contents,
        netblame_report::Calls {
            mut calls,
            rejected,
            recorders,
        },
    ) = events?;
    // The eBPF recorder's calls carry the kernel's sequence numbers: offsets from the capture.
    netblame_correlate::align_kernel_seqs(&analysis, &mut calls);
    if let Some(damage) = &contents.damage {
        eprintln!("netblame: warning: {damage}; analysing the complete events before it");
    }
    for lost in &contents.lost {
        eprintln!("netblame: warning: {lost}");
    }
    let log = netblame_instrument::read_test_phases(job.events)?;
    let has_phases = log.found;
    let (phases, rejected_phases) = netblame_report::test_phases(log);
    Ok(Loaded {
        analysis,
        calls,
        phases,
        has_phases,
        rejected_events: rejected,
        rejected_phases,
        lost: contents.lost,
        recorders,
    })
}

/// Progress on stderr: drawn only when stderr is a terminal (indicatif hides it otherwise).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:32}] {bytes}/{total_bytes} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner for a step whose length is unknown.
fn step(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Analyses a capture and its events; prints the report to `out`.
pub fn analyze(job: &Job, out: &mut impl Write) -> Result<()> {
    refuse_to_overwrite_inputs(job)?;
    let host = match job.dataset {
        Some(_) => Some(hostname()?),
        None => None,
    };
    let partition = job.dataset.map(|d| d.dir.join(format!("run={}", d.run_id)));
    let outputs: Vec<TableOutput> = [
        (job.csv, TableFormat::Csv, None),
        (job.parquet, TableFormat::Parquet, None),
        (partition.as_deref(), TableFormat::Parquet, host.as_deref()),
    ]
    .into_iter()
    .filter_map(|(dir, format, host)| {
        Some(TableOutput {
            dir: dir?,
            format,
            host,
        })
    })
    .collect();
    let context = || crate::flows::tables_context(&outputs);
    // The packets table is written during the pass over the capture; the others after the join.
    let mut packets = crate::flows::packet_table(&outputs)?;
    let config = AnalyzerConfig {
        keep_packets: false,
        keep_request_heads: true,
    };
    let Loaded {
        analysis,
        calls,
        phases,
        rejected_events,
        rejected_phases,
        lost,
        recorders,
        ..
    } = load(job, config, packets.as_mut())?;
    if let Some(packets) = packets {
        packets.finish().with_context(context)?;
    }
    let threshold_ns = (job.threshold_ms * 1e6) as i64;
    let joining = step("joining reads to packets");
    // One pass: the sums, test rows, the report's lists and the tables as the join goes; every
    // result held only for the pictures (which are not sinks yet).
    let mut tables = (!outputs.is_empty())
        .then(|| netblame_export::CallTables::new(&outputs))
        .transpose()
        .with_context(context)?;
    let keep_all = job.renders.any();
    let joined = netblame_report::join_run(
        &analysis,
        &calls,
        &phases,
        threshold_ns,
        keep_all,
        &mut tables,
    );
    joining.finish_and_clear();
    let summary = &joined.summary;
    if let Some(tables) = tables {
        let writing = step("writing the tables");
        tables
            .finish(&calls, &analysis, &summary.tests)
            .with_context(context)?;
        writing.finish_and_clear();
    }
    let caveats = netblame_report::Caveats {
        lost: &lost,
        rejected_events,
        rejected_phases,
        recorders: &recorders,
    };
    // The text first: a picture that cannot be written (a full disk) loses nothing else.
    netblame_report::write_text(
        out,
        &analysis,
        &calls,
        &joined.lists,
        job.threshold_ms,
        summary,
        &caveats,
    )?;
    if let Some(result) = joined.all.as_ref().filter(|_| job.renders.any()) {
        render(job, &analysis, &calls, result, &phases, summary, &caveats)?;
    }
    Ok(())
}

/// Reads the run's events and turns them into calls; the contents keep the damage and losses
/// found (their events moved out).
fn read_calls(job: &Job) -> Result<(LogContents, netblame_report::Calls)> {
    let mut contents = match netblame_instrument::read_events(job.events) {
        Err(LogError::NoLogs { .. }) if job.events_optional => LogContents::default(),
        other => other?,
    };
    let calls = socket_calls(std::mem::take(&mut contents.events));
    Ok((contents, calls))
}

/// The pictures must not overwrite the capture they are drawn from (the annotated copy would
/// truncate it before reading it), nor each other.
fn refuse_to_overwrite_inputs(job: &Job) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let r = &job.renders;
    let outputs: Vec<&Path> = [r.html, r.perfetto, r.annotate]
        .into_iter()
        .flatten()
        .collect();
    for (i, out) in outputs.iter().enumerate() {
        let same_as_capture = id(out).is_some() && id(out) == id(job.capture);
        if same_as_capture || outputs[..i].contains(out) {
            return Err(anyhow!(UsageError(format!(
                "{}: would overwrite {}: give each picture a file of its own",
                out.display(),
                if same_as_capture {
                    "the capture"
                } else {
                    "another picture"
                }
            ))));
        }
    }
    Ok(())
}

/// This machine's name, for a dataset's `host` column.
fn hostname() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (/proc/sys/kernel/hostname)")?;
    Ok(name.trim().to_string())
}

/// An unnamed file (O_TMPFILE) in `path`'s directory, gone when closed: where the trace's
/// packets are written while its calls' part is (`pass::PassOutputs::trace_scratch`). `None`
/// where the file system has no such files: the trace is then written by one thread.
fn scratch_beside(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .ok()
}

/// Creates an output file, naming it in the error.
fn create(path: &Path) -> Result<io::BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(io::BufWriter::with_capacity(1 << 20, file))
}

/// Writes the pictures: a second pass over the capture finds the packets behind the listed
/// reads (and streams every packet into the Perfetto trace, and every frame into the
/// annotated copy), then the HTML page is drawn from what it kept.
fn render(
    job: &Job,
    analysis: &Analysis,
    calls: &[SocketCall],
    result: &Blame,
    phases: &[netblame_correlate::TestPhase],
    summary: &netblame_correlate::RunSummary,
    caveats: &netblame_report::Caveats,
) -> Result<()> {
    let r = &job.renders;
    let outputs = pass::PassOutputs {
        trace: r.perfetto.map(create).transpose()?.map(|out| (out, phases)),
        trace_scratch: r.perfetto.and_then(scratch_beside),
        annotated: r.annotate.map(create).transpose()?,
        comment_all: r.annotate_all,
    };
    let mut reader = CaptureReader::open(job.capture)?;
    let size = std::fs::metadata(job.capture).map_or(0, |m| m.len());
    let bar = progress(size, "drawing");
    let detail = pass::second_pass(&mut reader, analysis, calls, result, outputs, |at| {
        bar.set_position(at)
    })
    .map_err(|e| {
        // The file the error is about: the capture read again, or the picture being written.
        let path = match e {
            pass::PassError::Trace(_) => r.perfetto,
            pass::PassError::Annotated(_) => r.annotate,
            _ => None,
        };
        let path = path.unwrap_or(job.capture).display().to_string();
        anyhow::Error::new(e).context(path)
    })?;
    bar.finish_and_clear();
    if let Some(path) = r.html {
        let title = job
            .capture
            .parent()
            .and_then(|d| d.file_name())
            .map_or_else(
                || job.capture.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
        let mut out = create(path)?;
        netblame_report::html::write_html(
            &mut out,
            analysis,
            calls,
            result,
            &detail,
            &netblame_report::html::Page {
                title: &title,
                threshold_ms: job.threshold_ms,
                caveats,
                summary,
            },
        )
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
