//! `netblame run -- CMD`: capture CMD's traffic and record its socket calls, in one run
//! directory.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;

use netblame_ebpf::Recorder;

use crate::capture::Session;
use crate::{EbpfMode, RunArgs, UsageError};

/// The user to run CMD as: the one who invoked sudo, when netblame runs under sudo as root.
struct Invoker {
    uid: u32,
    gid: u32,
    home: Option<PathBuf>,
    name: Option<String>,
}

fn sudo_invoker() -> Option<Invoker> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid: u32 = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    if uid == 0 {
        return None;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    Some(Invoker {
        uid,
        gid,
        home: user.as_ref().map(|u| u.dir.clone()),
        name: user.map(|u| u.name),
    })
}

/// Who may own the folders a run writes into and loads the interposer from.
pub(crate) fn trusted_owners() -> crate::trust::Owners {
    crate::trust::Owners::new(sudo_invoker().map(|u| u.uid))
}

/// Under sudo, gives `path` and everything in it to the user who ran sudo, so that a run made
/// with privileges can be opened, analysed and deleted without them.
pub(crate) fn give_to_invoker(path: &Path) -> std::io::Result<()> {
    let Some(u) = sudo_invoker() else {
        return Ok(());
    };
    fn walk(p: &Path, u: &Invoker) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(u.uid), Some(u.gid))?;
        if p.is_dir() && !p.is_symlink() {
            for entry in std::fs::read_dir(p)? {
                walk(&entry?.path(), u)?;
            }
        }
        Ok(())
    }
    walk(path, &u)
}

/// The interposer for this run: `NETBLAME_PRELOAD` (checked: a regular file in folders only
/// trusted users can change), else the embedded library written into the run directory.
fn interposer(out: &Path, owners: &crate::trust::Owners) -> Result<PathBuf> {
    Ok(match std::env::var_os("NETBLAME_PRELOAD") {
        Some(p) => {
            crate::trust::check_override(Path::new(&p), owners).context("NETBLAME_PRELOAD")?
        }
        None => crate::trust::install_interposer(out, owners)
            .context("installing the interposer in the run directory")?,
    })
}

pub(crate) fn default_out() -> PathBuf {
    PathBuf::from("netblame-runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string())
}

/// How far a new run directory must be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunDirUse {
    /// Only written into (the demo): it must be ours, and private.
    Results,
    /// It will hold the interposer the command loads: no folder above it may be changeable by
    /// another user either (see `trust::check_folder`).
    LoadsCode,
}

/// The run directory, made new (0700) or an empty folder of a trusted owner; fails before
/// anything else is created, and removes what it created when it fails.
pub(crate) fn make_run_dir(
    out: &Path,
    owners: &crate::trust::Owners,
    use_: RunDirUse,
) -> Result<()> {
    let existed = out.exists();
    if existed
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(anyhow!(UsageError(format!(
            "{} exists and is not empty: choose another --out",
            out.display()
        ))));
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the run directory {}", out.display()))?;
    let checked = owners.check_owner(out).and_then(|()| {
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| crate::trust::TrustError::Io {
                path: out.into(),
                source,
            },
        )?;
        match use_ {
            RunDirUse::Results => Ok(()),
            RunDirUse::LoadsCode => crate::trust::check_folder(out, owners).map(drop),
        }
    });
    if let Err(e) = checked {
        if !existed {
            std::fs::remove_dir(out).ok();
        }
        return Err(anyhow!(UsageError(e.to_string())));
    }
    Ok(())
}

fn clock_now() -> serde_json::Value {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
        .ok();
    let now = chrono::Utc::now();
    json!({
        "realtime_ns": now.timestamp_nanos_opt(),
        "utc": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "monotonic_ns": mono,
    })
}

/// `existing` with `item` after it (`sep` between), or `item` alone.
fn appended(existing: Option<OsString>, item: &std::ffi::OsStr, sep: &str) -> OsString {
    match existing {
        Some(mut v) if !v.is_empty() => {
            v.push(sep);
            v.push(item);
            v
        }
        _ => item.to_os_string(),
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        _ => 1,
    }
}

/// The eBPF recorder for this run, loaded and draining into `events_dir`, or `None` (off, or
/// it could not load in `auto` mode: said on stderr, with libbpf's log in the run directory).
fn start_ebpf(args: &RunArgs, out: &Path, events_dir: &Path) -> Result<Option<Recorder>> {
    let required = args.ebpf == EbpfMode::On || args.pid.is_some();
    if args.ebpf == EbpfMode::Off && args.pid.is_none() {
        return Ok(None);
    }
    let options = netblame_ebpf::Options {
        ring_mib: args.ebpf_ring_mib,
        object: std::env::var_os("NETBLAME_EBPF_OBJECT").map(PathBuf::from),
    };
    let started = match Recorder::load(&options) {
        Err(e) => Err((e.to_string(), e.log().map(str::to_owned))),
        Ok(mut r) => match r.record_into(events_dir) {
            Ok(()) => Ok(r),
            Err(e) => Err((format!("{:#}", anyhow::Error::from(e)), None)),
        },
    };
    match started {
        Ok(r) => Ok(Some(r)),
        Err((mut why, log)) => {
            if let Some(log) = log {
                // A run that cannot go on removes its directory: its log goes elsewhere.
                let path = if required {
                    std::env::temp_dir()
                        .join(format!("netblame-{}-{EBPF_LOAD_LOG}", std::process::id()))
                } else {
                    out.join(EBPF_LOAD_LOG)
                };
                if std::fs::write(&path, log).is_ok() {
                    why.push_str(&format!(" (libbpf's log: {})", path.display()));
                }
            }
            if required {
                Err(anyhow!("the eBPF recorder did not start: {why}"))
            } else {
                eprintln!(
                    "netblame: the eBPF recorder is off ({why}): programs the interposer cannot \
                     see (Go, static binaries) will have no recorded calls"
                );
                Ok(None)
            }
        }
    }
}

/// Where libbpf's log of a failed load is kept, in the run directory.
const EBPF_LOAD_LOG: &str = "ebpf-load.log";

/// The descendants of `pid`, from /proc (children of children included).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields follow the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|f| f.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == p)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// A run's directory, made and checked, and what the rest of the run needs of it.
struct NewRun {
    out: PathBuf,
    invoker: Option<Invoker>,
    owners: crate::trust::Owners,
    run_id: Option<String>,
    capture_path: PathBuf,
    events_dir: PathBuf,
}

/// Checks that the capture can start, then makes the run directory (`--out`, absolute: the
/// command may change its working directory before its first event is written, as pytester
/// does, and NETBLAME_EVENTS_DIR must still name the run's folder).
fn new_run(args: &RunArgs, use_: RunDirUse) -> Result<NewRun> {
    let out = std::path::absolute(args.out.clone().unwrap_or_else(default_out))
        .context("the run directory's path")?;
    let invoker = sudo_invoker();
    let owners = crate::trust::Owners::new(invoker.as_ref().map(|u| u.uid));
    crate::capture::preflight(&args.capture)?;
    // Before anything is created: a run directory whose name cannot be a dataset's run id.
    let run_id = match &args.dataset {
        Some(_) => Some(crate::analyze::run_id(&out)?),
        None => None,
    };
    make_run_dir(&out, &owners, use_)?;
    let capture_path = out.join(match args.format {
        crate::FileFormat::Pcap => "capture.pcap",
        crate::FileFormat::Pcapng => "capture.pcapng",
    });
    let events_dir = out.join("events");
    Ok(NewRun {
        out,
        invoker,
        owners,
        run_id,
        capture_path,
        events_dir,
    })
}

/// What a run's start gave: on a failure, the run directory goes with it (nothing
/// half-written); else its folders are given to the user who ran sudo.
fn settle<T>(
    started: Result<T>,
    out: &Path,
    events_dir: &Path,
    invoker: Option<&Invoker>,
) -> Result<T> {
    let started = match started {
        Ok(v) => v,
        Err(e) => {
            std::fs::remove_dir_all(out).ok();
            return Err(e);
        }
    };
    if let Some(u) = invoker {
        for p in [out, events_dir] {
            std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))?;
        }
    }
    Ok(started)
}

fn make_events_dir(events_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir(events_dir)?;
    std::fs::set_permissions(events_dir, std::fs::Permissions::from_mode(0o700))
}

pub fn run(args: &RunArgs) -> Result<u8> {
    if let Some(pid) = args.pid {
        return run_pid(args, pid);
    }
    let (program, rest) = args.command.split_first().ok_or_else(|| {
        anyhow!(UsageError(
            "no command: netblame run [OPTIONS] -- CMD [ARGS...]".into()
        ))
    })?;
    // Signals are ours from now on: netblame must outlive CMD to finish the capture.
    let mut signals =
        SignalsInfo::<WithOrigin>::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .context("installing signal handlers")?;
    let NewRun {
        out,
        invoker,
        owners,
        run_id,
        capture_path,
        events_dir,
    } = new_run(args, RunDirUse::LoadsCode)?;
    let started = (|| -> Result<(Session, PathBuf, Option<PathBuf>)> {
        let session = Session::start(&args.capture, &capture_path, args.format)?;
        make_events_dir(&events_dir)?;
        let plugin = if args.no_pytest_plugin {
            None
        } else {
            Some(
                crate::trust::install_pytest_plugin(&out, &owners)
                    .context("installing the pytest plugin in the run directory")?,
            )
        };
        Ok((session, interposer(&out, &owners)?, plugin))
    })();
    let started =
        started.and_then(
            |(session, preload, plugin)| match start_ebpf(args, &out, &events_dir) {
                Ok(recorder) => Ok((session, preload, plugin, recorder)),
                Err(e) => {
                    session.stop().ok();
                    Err(e)
                }
            },
        );
    let (session, preload, plugin, recorder) =
        settle(started, &out, &events_dir, invoker.as_ref())?;
    let start = clock_now();
    let ld_preload = match std::env::var_os("LD_PRELOAD") {
        Some(existing) if !existing.is_empty() => {
            let mut v = OsString::from(&preload);
            v.push(":");
            v.push(existing);
            v
        }
        _ => preload.clone().into_os_string(),
    };
    let mut cmd = Command::new(program);
    // Nothing of netblame's: no descriptor but those netblame was given, and the signal state
    // netblame was started with (see crates/launch).
    netblame_launch::as_given(&mut cmd);
    cmd.args(rest)
        .env("LD_PRELOAD", ld_preload)
        .env("NETBLAME_EVENTS_DIR", &events_dir);
    // The pytest plugin: its folder at the end of PYTHONPATH (the command's own paths first)
    // and its module added to PYTEST_PLUGINS. A program that is not pytest ignores both.
    if let Some(plugin) = &plugin {
        let folder = plugin.parent().unwrap_or(Path::new("."));
        cmd.env(
            "PYTHONPATH",
            appended(std::env::var_os("PYTHONPATH"), folder.as_os_str(), ":"),
        )
        .env(
            "PYTEST_PLUGINS",
            appended(
                std::env::var_os("PYTEST_PLUGINS"),
                crate::trust::PYTEST_PLUGIN_MODULE.as_ref(),
                ",",
            ),
        );
    }
    if let Some(u) = &invoker {
        cmd.uid(u.uid).gid(u.gid);
        if let Some(home) = &u.home {
            cmd.env("HOME", home);
        }
        if let Some(name) = &u.name {
            cmd.env("USER", name).env("LOGNAME", name);
        }
    }
    // Checked again as late as possible: the bytes that load are the bytes we carry.
    if std::env::var_os("NETBLAME_PRELOAD").is_none() {
        crate::trust::verify_interposer(&preload, &owners)?;
    }
    if let Some(plugin) = &plugin {
        crate::trust::verify_pytest_plugin(plugin, &owners)?;
    }
    // The eBPF recorder follows the next process netblame starts: the command.
    if let Some(r) = &recorder {
        r.arm_next_child(Some(std::process::id()))?;
    }
    let spawned = cmd.spawn();
    if let Some(r) = &recorder {
        r.arm_next_child(None)?;
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(r) = recorder {
                r.stop().ok();
            }
            session.stop().ok();
            std::fs::remove_dir_all(&out).ok();
            let msg = format!("cannot run {}: {e}", Path::new(program).display());
            return Err(if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(UsageError(msg))
            } else {
                anyhow!(msg)
            });
        }
    };
    let child_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Forward signals that another process sent to netblame; a terminal's Ctrl-C already
    // reached CMD, which shares netblame's process group.
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for info in signals.forever() {
            if info.process.is_some() {
                if let Ok(sig) = nix::sys::signal::Signal::try_from(info.signal) {
                    let _ = nix::sys::signal::kill(child_pid, sig);
                }
            }
        }
    });
    let status = child.wait().context("waiting for the command")?;
    if std::env::var_os("NETBLAME_PRELOAD").is_none() {
        // The command is done with it; the run directory keeps what it recorded, not the code.
        std::fs::remove_file(&preload).ok();
    }
    if let Some(plugin) = &plugin {
        std::fs::remove_file(plugin).ok();
        if let Some(folder) = plugin.parent() {
            std::fs::remove_dir(folder).ok();
        }
    }
    let end = clock_now();
    // Let the last packets (FINs, ACKs) reach the capture before stopping it.
    std::thread::sleep(Duration::from_millis(args.grace_ms));
    let ebpf = stop_ebpf(recorder, &events_dir)?;
    let stats = session.stop()?;
    handle.close();
    let _ = forwarder.join();
    finish_run(
        args,
        Finished {
            out: &out,
            capture_path: &capture_path,
            events_dir: &events_dir,
            invoker: invoker.as_ref(),
            start,
            end,
            status: Some(status),
            stats,
            ebpf,
            plugin: plugin.is_some(),
            run_id: run_id.as_deref(),
        },
    )?;
    Ok(exit_code(status))
}

/// Stops the eBPF recorder (its logs are then complete) and gives them to the user who ran sudo.
fn stop_ebpf(
    recorder: Option<Recorder>,
    events_dir: &Path,
) -> Result<Option<netblame_ebpf::RecordSummary>> {
    let Some(r) = recorder else {
        return Ok(None);
    };
    // The run goes on to its capture and its analysis with what the recorder wrote before.
    let summary = match r.stop() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "netblame: warning: {:#}; its logs hold what it wrote before",
                anyhow::Error::from(e).context("the eBPF recorder")
            );
            None
        }
    };
    give_to_invoker(events_dir).context("giving the eBPF recorder's logs to the sudo user")?;
    Ok(summary)
}

/// What a finished recording leaves for the manifest and the report.
struct Finished<'a> {
    out: &'a Path,
    capture_path: &'a Path,
    events_dir: &'a Path,
    invoker: Option<&'a Invoker>,
    start: serde_json::Value,
    end: serde_json::Value,
    /// The command's (none with --pid).
    status: Option<ExitStatus>,
    stats: netblame_capture::CaptureStats,
    ebpf: Option<netblame_ebpf::RecordSummary>,
    plugin: bool,
    run_id: Option<&'a str>,
}

/// `netblame run --pid PID`: the capture and the eBPF recorder on a process already running
/// and its children (those it has now and those it starts), until Ctrl-C, `--duration` or its
/// end; then the analysis, as for a command.
fn run_pid(args: &RunArgs, pid: u32) -> Result<u8> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(anyhow!(UsageError(format!("--pid {pid}: no such process"))));
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let NewRun {
        out,
        invoker,
        run_id,
        capture_path,
        events_dir,
        ..
    } = new_run(args, RunDirUse::Results)?;
    let started = (|| -> Result<(Session, Recorder)> {
        make_events_dir(&events_dir)?;
        let session = Session::start(&args.capture, &capture_path, args.format)?;
        let recorder = match start_ebpf(args, &out, &events_dir) {
            Ok(r) => r.expect("required with --pid"),
            Err(e) => {
                session.stop().ok();
                return Err(e);
            }
        };
        let followed = std::iter::once(pid)
            .chain(descendants(pid))
            .try_for_each(|p| recorder.follow(p));
        if let Err(e) = followed {
            recorder.stop().ok();
            session.stop().ok();
            return Err(e.into());
        }
        Ok((session, recorder))
    })();
    let (session, recorder) = settle(started, &out, &events_dir, invoker.as_ref())?;
    let start = clock_now();
    eprintln!(
        "netblame: recording pid {pid} and its children{}; Ctrl-C to stop",
        args.duration
            .map(|s| format!(" for {s} s"))
            .unwrap_or_default()
    );
    let deadline = args
        .duration
        .map(|s| std::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    loop {
        if signals.pending().next().is_some()
            || deadline.is_some_and(|d| std::time::Instant::now() >= d)
            || !Path::new(&format!("/proc/{pid}")).exists()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = clock_now();
    std::thread::sleep(Duration::from_millis(args.grace_ms));
    let ebpf = stop_ebpf(Some(recorder), &events_dir)?;
    let stats = session.stop()?;
    finish_run(
        args,
        Finished {
            out: &out,
            capture_path: &capture_path,
            events_dir: &events_dir,
            invoker: invoker.as_ref(),
            start,
            end,
            status: None,
            stats,
            ebpf,
            plugin: false,
            run_id: run_id.as_deref(),
        },
    )?;
    Ok(0)
}

/// The manifest, then the analysis and its report.
fn finish_run(args: &RunArgs, f: Finished<'_>) -> Result<()> {
    let Finished {
        out,
        capture_path,
        events_dir,
        invoker,
        start,
        end,
        status,
        stats,
        ebpf,
        plugin,
        run_id,
    } = f;
    let events = netblame_instrument::read_events(events_dir)
        .map(|c| c.events)
        .unwrap_or_default();
    let processes: std::collections::BTreeSet<u32> = events.iter().map(|e| e.pid).collect();
    let manifest = json!({
        "netblame_version": env!("CARGO_PKG_VERSION"),
        "command": args.command,
        "pid": args.pid,
        "cwd": std::env::current_dir().ok(),
        "start": start,
        "end": end,
        "exit_code": status.and_then(|s| s.code()),
        "exit_signal": status.and_then(|s| s.signal()),
        "interface": args.capture.iface,
        "filter": args.capture.filter(),
        "snaplen": args.capture.snaplen,
        "backend": format!("{:?}", args.capture.backend).to_lowercase(),
        "capture_file": capture_path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "events_dir": "events",
        "packets_captured": stats.captured,
        "packets_received_by_filter": stats.received,
        "kernel_drops": stats.dropped,
        "interface_drops": stats.if_dropped,
        "events": events.len(),
        "processes": processes.len(),
        "run_as_uid": invoker.map(|u| u.uid),
        "pytest_plugin": plugin,
        "ebpf": ebpf.as_ref().map(|e| json!({
            "calls": e.calls,
            "processes": e.processes,
            "lost_calls": e.lost,
        })),
    });
    let manifest_path = out.join("manifest.json");
    let mut f = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(f.create(true).write(true).truncate(true), 0o600);
    let mut f = f.open(&manifest_path)?;
    serde_json::to_writer_pretty(&mut f, &manifest)?;
    f.write_all(b"\n")?;
    if let Some(u) = invoker {
        for p in [capture_path, manifest_path.as_path()] {
            std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))?;
        }
    }
    let recorded = Recorded {
        events: events.len(),
        processes: processes.len(),
        ebpf: ebpf.as_ref(),
    };
    report(out, capture_path, &stats, &recorded, args, run_id)
}

/// What the recorders recorded, for the run's summary.
struct Recorded<'a> {
    events: usize,
    processes: usize,
    ebpf: Option<&'a netblame_ebpf::RecordSummary>,
}

fn report(
    out: &Path,
    capture: &Path,
    stats: &netblame_capture::CaptureStats,
    recorded: &Recorded<'_>,
    args: &RunArgs,
    run_id: Option<&str>,
) -> Result<()> {
    let Recorded {
        events,
        processes,
        ebpf,
    } = *recorded;
    let mut err = std::io::stderr().lock();
    writeln!(err, "\nnetblame: run directory {}", out.display())?;
    writeln!(
        err,
        "  capture: {} packets on {} ({}), {} dropped by the kernel{}",
        stats.captured,
        args.capture.iface,
        args.capture.filter(),
        stats.drops(),
        if stats.drops() > 0 {
            " -- the capture is incomplete"
        } else {
            ""
        }
    )?;
    writeln!(
        err,
        "  events: {events} socket events recorded from {processes} processes"
    )?;
    if let Some(e) = ebpf {
        writeln!(
            err,
            "  eBPF recorder: {} calls from {} processes{}",
            e.calls,
            e.processes.len(),
            if e.lost > 0 {
                format!(
                    ", {} not recorded (its ring buffer was full: raise --ebpf-ring-mib)",
                    e.lost
                )
            } else {
                String::new()
            }
        )?;
    }
    if args.capture.iface == "lo" {
        writeln!(err, "  only loopback traffic was captured: traffic to other hosts needs --iface (e.g. --iface any)")?;
    }
    // The analysis: report.txt and tables/ (CSV and Parquet) in the run directory, and the
    // report on stderr (stdout was the command's).
    let mut text = Vec::new();
    let tables = out.join("tables");
    let events_dir = out.join("events");
    let job = crate::analyze::Job {
        capture,
        events: &events_dir,
        events_optional: true,
        threshold_ms: 1.0,
        csv: Some(&tables),
        parquet: Some(&tables),
        dataset: args
            .dataset
            .as_deref()
            .zip(run_id)
            .map(|(dir, run_id)| crate::analyze::Dataset { dir, run_id }),
        renders: crate::analyze::Renders {
            html: Some(&out.join(crate::analyze::RUN_HTML)),
            perfetto: Some(&out.join(crate::analyze::RUN_PERFETTO)),
            annotate: Some(&out.join(crate::analyze::RUN_ANNOTATED)),
            annotate_all: false,
        },
    };
    let result = crate::analyze::analyze(&job, &mut text);
    // The report is kept and shown even when a picture after it could not be written.
    if !text.is_empty() {
        std::fs::write(out.join("report.txt"), &text)?;
        writeln!(err)?;
        err.write_all(&text)?;
    }
    if let Err(e) = result {
        writeln!(err, "  analysis failed: {e:#}")?;
    }
    Ok(())
}
