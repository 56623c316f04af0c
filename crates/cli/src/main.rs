//! `netblame`: was a slow socket call the network's fault or the program's?
//!
//! A thin binary over the library crates: argument parsing, terminal output and exit codes
//! (0 success, 1 the input could not be analysed, 2 usage errors).

#![deny(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod events;
mod flows;
mod fmt;

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
        /// An event log (.nbev or JSON Lines) or a directory of them.
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
        Command::Flows(args) => flows::run(&args),
        Command::Events(args) => events::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "netblame: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
