//! `netblame capture`, and the capture side of `netblame run`: a live capture in the background
//! (libpcap in a thread, or a tcpdump child) that can be stopped and drained.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use netblame_capture::{
    CaptureReader, CaptureStats, LiveCapture, LiveConfig, LiveError, PacketSink, PcapWriter,
    PcapngWriter,
};

use crate::{CaptureArgs, CaptureOptions, FileFormat, UsageError};

/// Exit status when capture privileges are missing.
pub const EXIT_NO_PRIVILEGE: u8 = 3;

/// Capture privileges are missing: carries the advice printed to the user.
#[derive(Debug)]
pub struct NoPrivilege(pub String);

impl std::fmt::Display for NoPrivilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoPrivilege {}

fn no_privilege(iface: &str, detail: &str) -> anyhow::Error {
    let exe =
        std::env::current_exe().map_or_else(|_| "netblame".into(), |p| p.display().to_string());
    anyhow!(NoPrivilege(format!(
        "capturing on {iface} needs the CAP_NET_RAW capability ({detail}).\n\
         Run netblame with sudo (the command you run under it still runs as you), or grant it once:\n  \
         sudo setcap cap_net_raw,cap_net_admin=eip {exe}"
    )))
}

impl CaptureOptions {
    /// The BPF filter: `--filter`, else one built from `--port`, else all TCP and UDP.
    pub fn filter(&self) -> String {
        if let Some(f) = &self.filter {
            return f.clone();
        }
        if self.port.is_empty() {
            return "tcp or udp".into();
        }
        let ports: Vec<String> = self.port.iter().map(|p| format!("port {p}")).collect();
        format!("(tcp or udp) and ({})", ports.join(" or "))
    }

    fn live_config(&self) -> LiveConfig {
        LiveConfig {
            iface: self.iface.clone(),
            filter: self.filter(),
            snaplen: self.snaplen,
            buffer_bytes: 64 << 20,
        }
    }
}

/// Creates a capture file readable only by its owner.
fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn sink_for(
    path: &Path,
    format: FileFormat,
    link_type: u16,
    opts: &CaptureOptions,
) -> Result<Box<dyn PacketSink + Send>> {
    let out = BufWriter::with_capacity(1 << 20, create_private(path)?);
    Ok(match format {
        FileFormat::Pcap => Box::new(PcapWriter::new(out, link_type, opts.snaplen)?),
        FileFormat::Pcapng => Box::new(PcapngWriter::new(
            out,
            link_type,
            opts.snaplen,
            &opts.iface,
        )?),
    })
}

/// A capture running in the background.
pub enum Session {
    Libpcap {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Result<CaptureStats>>,
    },
    Tcpdump {
        child: Child,
        stderr: BufReader<std::process::ChildStderr>,
        raw_path: PathBuf,
        final_path: PathBuf,
        format: FileFormat,
        opts: CaptureOptions,
    },
}

/// Checks, before anything is created, that capturing is allowed and that the interface and the
/// filter are valid (libpcap: by opening the capture once; tcpdump is checked as it starts).
pub fn preflight(opts: &CaptureOptions) -> Result<()> {
    if opts.backend == crate::Backend::Libpcap {
        LiveCapture::open(&opts.live_config()).map_err(live_error)?;
    }
    Ok(())
}

fn live_error(e: LiveError) -> anyhow::Error {
    match e {
        LiveError::PermissionDenied { iface, message } => no_privilege(&iface, &message),
        e @ (LiveError::NoSuchInterface { .. } | LiveError::BadFilter { .. }) => {
            anyhow!(UsageError(e.to_string()))
        }
        e => anyhow!(e),
    }
}

impl Session {
    /// Starts capturing into `path`. When this returns the capture is live: no packet sent after
    /// it is missed. Fails before creating the file when the interface cannot be captured on.
    pub fn start(opts: &CaptureOptions, path: &Path, format: FileFormat) -> Result<Session> {
        match opts.backend {
            crate::Backend::Libpcap => Self::start_libpcap(opts, path, format),
            crate::Backend::Tcpdump => Self::start_tcpdump(opts, path, format),
        }
    }

    fn start_libpcap(opts: &CaptureOptions, path: &Path, format: FileFormat) -> Result<Session> {
        let mut live = LiveCapture::open(&opts.live_config()).map_err(live_error)?;
        let mut sink = sink_for(path, format, live.link_type(), opts)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || -> Result<CaptureStats> {
                let stats = live.run(sink.as_mut(), &flag, None)?;
                sink.finish(
                    Some(stats.drops()),
                    netblame_instrument::writer::realtime_ns(),
                )?;
                Ok(stats)
            })
            .context("starting the capture thread")?;
        Ok(Session::Libpcap { stop, thread })
    }

    fn start_tcpdump(opts: &CaptureOptions, path: &Path, format: FileFormat) -> Result<Session> {
        // tcpdump writes pcap only: pcapng is converted when it stops.
        let raw_path = match format {
            FileFormat::Pcap => path.to_path_buf(),
            FileFormat::Pcapng => path.with_extension("tcpdump.pcap"),
        };
        let mut tcpdump = Command::new("tcpdump");
        netblame_launch::as_given(netblame_launch::end_with_parent(&mut tcpdump));
        let mut child = tcpdump
            .args([
                "-i",
                &opts.iface,
                "-n",
                "-s",
                &opts.snaplen.to_string(),
                "-B",
                "65536",
                "--immediate-mode",
            ])
            .args(["--time-stamp-precision=nano", "-w"])
            .arg(&raw_path)
            .arg(opts.filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run tcpdump (is it installed?)")?;
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line)? == 0 {
                let _ = child.wait();
                let lower = said.to_lowercase();
                if lower.contains("permitted") || lower.contains("permission") {
                    return Err(no_privilege(&opts.iface, said.trim()));
                }
                if lower.contains("no such device")
                    || lower.contains("syntax error")
                    || lower.contains("can't parse")
                {
                    return Err(anyhow!(UsageError(format!("tcpdump: {}", said.trim()))));
                }
                bail!("tcpdump did not start: {}", said.trim());
            }
            said.push_str(&line);
            if line.contains("listening on") {
                break;
            }
        }
        Ok(Session::Tcpdump {
            child,
            stderr,
            raw_path,
            final_path: path.to_path_buf(),
            format,
            opts: opts.clone(),
        })
    }

    /// Stops the capture, drains what the kernel still holds, and returns the counters.
    pub fn stop(self) -> Result<CaptureStats> {
        match self {
            Session::Libpcap { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                thread
                    .join()
                    .map_err(|_| anyhow!("the capture thread panicked"))?
            }
            Session::Tcpdump {
                mut child,
                mut stderr,
                raw_path,
                final_path,
                format,
                opts,
            } => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
                    .context("stopping tcpdump")?;
                let mut said = String::new();
                std::io::Read::read_to_string(&mut stderr, &mut said)?;
                child.wait()?;
                let count = |what: &str| {
                    said.lines()
                        .find(|l| l.contains(what))
                        .and_then(|l| l.split_whitespace().next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let stats = CaptureStats {
                    captured: count("captured"),
                    received: count("received by filter"),
                    dropped: count("dropped by kernel"),
                    if_dropped: count("dropped by interface"),
                };
                if format == FileFormat::Pcapng {
                    convert_to_pcapng(&raw_path, &final_path, &opts, stats.drops())?;
                    std::fs::remove_file(&raw_path).ok();
                }
                Ok(stats)
            }
        }
    }
}

fn convert_to_pcapng(from: &Path, to: &Path, opts: &CaptureOptions, drops: u64) -> Result<()> {
    let mut reader = CaptureReader::open(from)?;
    let link = reader.link_type().unwrap_or(1);
    let mut sink = sink_for(to, FileFormat::Pcapng, link, opts)?;
    let mut last = 0;
    while let Some(p) = reader.next_packet()? {
        last = p.ts_ns;
        sink.write_packet(p.ts_ns, p.data, p.orig_len)?;
    }
    sink.finish(Some(drops), last)?;
    Ok(())
}

/// Registers SIGINT and SIGTERM to set the returned flag (instead of killing netblame).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

pub fn print_stats(stats: &CaptureStats, path: &Path) {
    eprintln!(
        "netblame: {} packets captured into {}; {} dropped by the kernel{}",
        stats.captured,
        path.display(),
        stats.dropped,
        if stats.if_dropped > 0 {
            format!(", {} by the interface", stats.if_dropped)
        } else {
            String::new()
        }
    );
}

pub fn run(args: &CaptureArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let session = Session::start(&args.capture, &args.write, args.format)?;
    eprintln!(
        "netblame: capturing on {} ({}); stop with Ctrl-C",
        args.capture.iface,
        args.capture.filter()
    );
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = session.stop()?;
    print_stats(&stats, &args.write);
    Ok(())
}
