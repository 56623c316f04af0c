//! `netblame`: was a slow socket call the network's fault or the program's?
//!
//! A thin binary over the library crates: argument parsing, terminal output and exit codes
//! (0 success, 1 the input could not be analysed, 2 usage errors; `diff`: 1 only for a test
//! slower than `--fail-slower`, 2 for any error).

#![deny(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod capture;
mod demo;
mod diff;
mod events;
mod flows;
mod run;
mod trust;

#[derive(Debug, Parser)]
#[command(
    name = "netblame",
    version,
    about = "Was it the network or my program? Joins socket calls with packet captures."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse the TCP and UDP flows of a capture file (pcap or pcapng), like tcptrace.
    Flows(FlowsArgs),
    /// Read socket-event logs (written by the interposer or the Rust wrappers).
    Events(EventsArgs),
    /// Capture packets into a file (headers only, nanosecond timestamps) until Ctrl-C.
    Capture(CaptureArgs),
    /// Run a command, capturing its traffic and recording its socket calls.
    Run(RunArgs),
    /// Say where the time of every read went: network (loss, peer) or program.
    Analyze(AnalyzeArgs),
    /// See netblame at work: a built-in client and server with a slow peer and a late reader.
    Demo(DemoArgs),
    /// Compare two runs test by test: which tests got slower or faster, and why.
    Diff(DiffArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    /// A table, for a CI job summary ($GITHUB_STEP_SUMMARY).
    Markdown,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The earlier run directory.
    pub run_a: PathBuf,
    /// The later run directory.
    pub run_b: PathBuf,
    /// List a test as slower or faster only when it changed by more than this (ms).
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    pub min_change: f64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Exit 1 when any test got slower by more than MS (else 0; 2 on usage errors).
    #[arg(long, value_name = "MS")]
    pub fail_slower: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run directory (default: a new folder under ./netblame-runs/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// A run directory written by `netblame run`.
    #[arg(conflicts_with_all = ["pcap", "events"])]
    pub run_dir: Option<PathBuf>,
    /// A capture file (instead of a run directory).
    #[arg(long, value_name = "FILE", requires = "events")]
    pub pcap: Option<PathBuf>,
    /// An event log or directory of them (with --pcap).
    #[arg(long, value_name = "PATH", requires = "pcap")]
    pub events: Option<PathBuf>,
    /// A cause smaller than this (ms) gives the verdict `ok`.
    #[arg(long = "threshold", default_value_t = 1.0, value_name = "MS")]
    pub threshold_ms: f64,
    /// Write the reads, flows and packets tables as CSV into this directory.
    #[arg(long, value_name = "DIR")]
    pub csv: Option<PathBuf>,
    /// Write the reads, flows and packets tables as Parquet into this directory.
    #[arg(long, value_name = "DIR")]
    pub parquet: Option<PathBuf>,
    /// Also write the tables as Parquet into DIR/run=RUN_ID/ (RUN_ID: the run directory's
    /// name), with a `host` column: many runs read as one dataset (DuckDB, polars, Spark).
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// Write the report as one HTML page (graphs of the slowest reads; opens from disk).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write a Perfetto trace (open it in ui.perfetto.dev or trace_processor).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Write the capture as pcapng with a comment on the packet that carried the first byte of
    /// each listed read (Wireshark: the `pkt_comment` filter, `frame.comment`).
    #[arg(long, value_name = "FILE")]
    pub annotate: Option<PathBuf>,
    /// With --annotate: comment every read's first packet, not only the listed reads'.
    #[arg(long, requires = "annotate")]
    pub all: bool,
}

/// An invocation error: printed, then exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Pcap,
    Pcapng,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// libpcap, embedded.
    Libpcap,
    /// A tcpdump child process with the same options.
    Tcpdump,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CaptureOptions {
    /// Interface to capture on (`any` for all; the default sees local traffic only).
    #[arg(long, default_value = "lo")]
    pub iface: String,
    /// Capture TCP and UDP on this port (repeatable). Default: every TCP and UDP packet.
    #[arg(long, value_name = "PORT", conflicts_with = "filter")]
    pub port: Vec<u16>,
    /// A raw BPF filter expression instead of --port.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Bytes kept per packet (default: headers only).
    #[arg(long, default_value_t = netblame_capture::DEFAULT_SNAPLEN, value_parser = clap::value_parser!(u32).range(64..=262144))]
    pub snaplen: u32,
    /// Capture with the embedded libpcap, or by running tcpdump.
    #[arg(long, value_enum, default_value = "libpcap")]
    pub backend: Backend,
}

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// File to write.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// File format.
    #[arg(long, value_enum, default_value = "pcap")]
    pub format: FileFormat,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// Run directory (default: a new folder under ./netblame-runs/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Capture file format.
    #[arg(long, value_enum, default_value = "pcap")]
    pub format: FileFormat,
    /// Also write the run's tables into a dataset folder, as DIR/run=RUN_ID/<table>.parquet
    /// with a `host` column (RUN_ID: the run directory's name).
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// Do not load netblame's pytest plugin (test phases and outcomes) into pytest.
    #[arg(long)]
    pub no_pytest_plugin: bool,
    /// How long to keep capturing after the command exits, for its last packets (ms).
    #[arg(long, default_value_t = 200, hide = true)]
    pub grace_ms: u64,
    /// The eBPF recorder, for programs the interposer cannot see (Go, static binaries): `auto`
    /// loads it when netblame may (root, or CAP_BPF and CAP_PERFMON) and says why not when it
    /// cannot; `on` fails without it; `off` never loads it.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub ebpf: EbpfMode,
    /// The eBPF recorder's ring buffer (MiB, a power of two); calls that find it full are
    /// counted and reported as not recorded.
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    pub ebpf_ring_mib: u32,
    /// Record this running process and the children it starts, instead of running a command
    /// (with the eBPF recorder), until Ctrl-C, --duration, or its end.
    #[arg(long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// With --pid: stop recording after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "pid")]
    pub duration: Option<f64>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "pid", value_name = "CMD")]
    pub command: Vec<String>,
}

/// When `netblame run` loads the eBPF recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print every event as one JSON object per line (see docs/events.md).
    Dump {
        /// An event log (.nbev or JSON Lines), a folder of them, or a run directory.
        path: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// Capture file (pcap or pcapng; Ethernet, Linux cooked v1/v2, loopback or raw IP).
    pub file: PathBuf,
    /// Write the `flows` and `packets` tables as CSV into this directory.
    #[arg(long, value_name = "DIR")]
    pub csv: Option<PathBuf>,
    /// Write the `flows` and `packets` tables as Parquet into this directory.
    #[arg(long, value_name = "DIR")]
    pub parquet: Option<PathBuf>,
    /// Print the flows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Flows(args) => flows::run(&args).map(|()| 0),
        Command::Events(args) => events::run(&args).map(|()| 0),
        Command::Capture(args) => capture::run(&args).map(|()| 0),
        Command::Run(args) => run::run(&args),
        Command::Analyze(args) => analyze::run(&args).map(|()| 0),
        Command::Demo(args) => demo::run(&args).map(|()| 0),
        Command::Diff(args) => diff::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "netblame: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else if err.downcast_ref::<capture::NoPrivilege>().is_some() {
                ExitCode::from(capture::EXIT_NO_PRIVILEGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
