//! `netblame demo`: a built-in client and server whose reads earn every verdict: quick
//! exchanges (ok), a server that thinks (peer-slow), a client that reads late (app-late) and, when
//! netblame can give itself a network namespace with an nftables rule, a response dropped after
//! the capture saw it (loss). Captured, recorded with the Rust wrappers, analysed and reported.
//! Without capture privileges it analyses the recorded demo run shipped in the binary instead.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netblame_instrument::{Call, EventLog, RecordedTcpStream};
use nix::sched::{setns, unshare, CloneFlags};

use crate::capture::{NoPrivilege, Session};
use crate::{Backend, CaptureOptions, DemoArgs, FileFormat};

/// A recorded demo run (fixtures/demo-run), for machines where netblame cannot capture.
static SHIPPED_CAPTURE: &[u8] = include_bytes!("../../../fixtures/demo-run/capture.pcap");
static SHIPPED_EVENTS: &[u8] = include_bytes!("../../../fixtures/demo-run/events/demo.nbev");

const SERVER_THINK: Duration = Duration::from_millis(150);
const CLIENT_PAUSE: Duration = Duration::from_millis(120);

/// Request: one byte (`S` slow, `F` fast); response: 2,000 bytes.
fn serve(listener: TcpListener, log: Arc<EventLog>) -> std::io::Result<()> {
    let (s, _) = listener.accept()?;
    let mut s = RecordedTcpStream::from_stream(s, log, Call::Accept)?;
    let mut req = [0u8; 1];
    loop {
        if s.read(&mut req)? == 0 {
            return Ok(());
        }
        if req[0] == b'S' {
            std::thread::sleep(SERVER_THINK);
        }
        s.write_all(&[b'r'; 2000])?;
    }
}

/// The demo's client: quick exchanges, a slow server, a late reader and, given `lossy`, a
/// second connection whose first response nftables drops.
fn workload(dir: &Path, listener: TcpListener, lossy: Option<TcpListener>) -> Result<()> {
    let log = Arc::new(EventLog::create_in(dir)?);
    let addr = listener.local_addr()?;
    let mut servers = Vec::new();
    for l in std::iter::once(listener).chain(lossy) {
        let server_log = log.clone();
        let a = l.local_addr()?;
        servers.push((a, std::thread::spawn(move || serve(l, server_log))));
    }
    let mut buf = [0u8; 2000];
    let mut exchange =
        |c: &mut RecordedTcpStream, req: u8, pause: Option<Duration>, phase: &str| -> Result<()> {
            log.mark(phase, Some(phase))?;
            c.set_tag(Some(phase));
            c.write_all(&[req])?;
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
            c.read_exact(&mut buf)?;
            Ok(())
        };
    let mut c = RecordedTcpStream::connect(addr, log.clone())?;
    for _ in 0..5 {
        exchange(&mut c, b'F', None, "fast")?;
    }
    exchange(&mut c, b'S', None, "slow peer")?;
    exchange(&mut c, b'F', Some(CLIENT_PAUSE), "late reader")?;
    drop(c);
    if let Some((lossy_addr, _)) = servers.get(1) {
        let mut c = RecordedTcpStream::connect(*lossy_addr, log.clone())?;
        exchange(&mut c, b'F', None, "lossy network")?;
    }
    for (_, server) in servers {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the demo server panicked"))??;
    }
    Ok(())
}

/// The nftables table of the lossy phase, in the demo's own network namespace.
const NFT_TABLE: &str = "netblame_demo";

/// Moves this thread (and the threads it starts) into a new network namespace of its own, with
/// its loopback up: the lossy phase's nftables rule then touches nothing else on the machine,
/// and it all disappears when netblame exits. Returns why not when it cannot.
fn private_network() -> Result<(), String> {
    let missing: Vec<&str> = [("ip", "-V"), ("nft", "--version")]
        .into_iter()
        .filter(|(tool, version)| {
            netblame_launch::as_given(&mut Command::new(tool))
                .arg(version)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .map(|(tool, _)| tool)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "it needs the commands {} (Debian and Ubuntu: apt-get install iproute2 nftables)",
            missing.join(" and ")
        ));
    }
    let home = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("creating a network namespace needs root (CAP_SYS_ADMIN): {e}"))?;
    let up = netblame_launch::as_given(&mut Command::new("ip"))
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s.success()
                .then_some(())
                .ok_or("ip link set lo up failed".to_string())
        });
    if let Err(e) = up {
        // Back to the machine's network, so the rest of the demo still runs.
        let _ = setns(&home, CloneFlags::CLONE_NEWNET);
        return Err(e);
    }
    Ok(())
}

/// Runs `nft -f -` with `rules`; the error says what nft printed.
fn nft(rules: &str) -> Result<String> {
    let mut child = netblame_launch::as_given(&mut Command::new("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops, at the input hook (after the capture saw it), the first segment of more than 1,000
/// bytes sent from `port`: the lossy phase's first response, which the server must retransmit.
fn drop_first_response(port: u16) -> Result<()> {
    nft(&format!(
        "add table inet {NFT_TABLE}\n\
         add counter inet {NFT_TABLE} dropped\n\
         add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; }}\n\
         add rule inet {NFT_TABLE} input tcp sport {port} meta length > 1000 numgen inc mod 1000000 == 0 counter name dropped drop\n"
    ))
    .map(drop)
}

/// Packets the lossy phase's rule dropped (the ground truth).
fn dropped_packets() -> Result<u64> {
    let listing = nft(&format!("list counter inet {NFT_TABLE} dropped\n"))?;
    listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected nft output: {listing}"))
}

pub fn run(args: &DemoArgs) -> Result<()> {
    // Before any thread starts, so that they all share the namespace.
    let private = private_network();
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the demo server")?;
    let port = listener.local_addr()?.port();
    let opts = CaptureOptions {
        iface: "lo".into(),
        port: vec![port],
        filter: None,
        snaplen: netblame_capture::DEFAULT_SNAPLEN,
        backend: Backend::Libpcap,
    };
    if let Err(e) = crate::capture::preflight(&opts) {
        if e.downcast_ref::<NoPrivilege>().is_some() {
            eprintln!("netblame demo: {e:#}\n\nShowing a demo run recorded earlier instead.\n");
            return shipped(args);
        }
        return Err(e);
    }
    let lossy = match &private {
        Ok(()) => {
            let l = TcpListener::bind("127.0.0.1:0").context("binding the lossy server")?;
            drop_first_response(l.local_addr()?.port())?;
            Some(l)
        }
        Err(why) => {
            eprintln!("netblame demo: no lossy phase: {why}");
            None
        }
    };
    let opts = CaptureOptions {
        port: std::iter::once(port)
            .chain(
                lossy
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .map(|a| a.port()),
            )
            .collect(),
        ..opts
    };
    let out = demo_out(args)?;
    std::fs::create_dir(out.join("events"))?;
    let capture = out.join("capture.pcap");
    let session = Session::start(&opts, &capture, FileFormat::Pcap)?;
    eprintln!(
        "netblame demo: a client and a server on 127.0.0.1:{port}{}: 5 quick exchanges, one the server \
         thinks {} ms about, one the client reads {} ms late{}",
        if lossy.is_some() {
            " in a network namespace of its own"
        } else {
            ""
        },
        SERVER_THINK.as_millis(),
        CLIENT_PAUSE.as_millis(),
        if lossy.is_some() {
            ", and one whose answer nftables drops once"
        } else {
            ""
        }
    );
    let with_loss = lossy.is_some();
    let result = workload(&out.join("events"), listener, lossy);
    std::thread::sleep(Duration::from_millis(100));
    let stats = session.stop()?;
    result?;
    crate::capture::print_stats(&stats, &capture);
    if with_loss {
        eprintln!(
            "nftables dropped {} packet(s) after the capture saw them (the lossy phase's ground truth)",
            dropped_packets()?
        );
    }
    let tables = out.join("tables");
    let mut text = Vec::new();
    crate::analyze::analyze(
        &crate::analyze::Job {
            capture: &capture,
            events: &out.join("events"),
            events_optional: false,
            threshold_ms: 1.0,
            csv: Some(&tables),
            parquet: Some(&tables),
            dataset: None,
            renders: crate::analyze::Renders {
                html: Some(&out.join(crate::analyze::RUN_HTML)),
                perfetto: Some(&out.join(crate::analyze::RUN_PERFETTO)),
                annotate: Some(&out.join(crate::analyze::RUN_ANNOTATED)),
                annotate_all: false,
            },
        },
        &mut text,
    )?;
    std::fs::write(out.join("report.txt"), &text)?;
    crate::run::give_to_invoker(&out)?;
    std::io::stdout().write_all(&text)?;
    eprintln!(
        "\nThe run is in {}: report.html (open it in a browser), trace.pftrace (ui.perfetto.dev), \
         capture.pcap and capture-annotated.pcapng (Wireshark; filter pkt_comment for the reads), \
         events/ (netblame events dump), tables/ (CSV and Parquet for pandas or polars), report.txt.",
        out.display()
    );
    Ok(())
}

/// The demo's run directory, new and private (as `netblame run` makes it).
fn demo_out(args: &DemoArgs) -> Result<PathBuf> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("netblame-runs").join(format!(
            "demo-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    crate::run::make_run_dir(
        &out,
        &crate::run::trusted_owners(),
        crate::run::RunDirUse::Results,
    )?;
    Ok(out)
}

fn shipped(args: &DemoArgs) -> Result<()> {
    let dir = demo_out(args)?;
    std::fs::create_dir(dir.join("events"))?;
    std::fs::write(dir.join("capture.pcap"), SHIPPED_CAPTURE)?;
    std::fs::write(dir.join("events").join("demo.nbev"), SHIPPED_EVENTS)?;
    let mut text = Vec::new();
    crate::analyze::analyze(
        &crate::analyze::Job {
            capture: &dir.join("capture.pcap"),
            events: &dir.join("events"),
            events_optional: false,
            threshold_ms: 1.0,
            csv: None,
            parquet: None,
            dataset: None,
            renders: crate::analyze::Renders {
                html: Some(&dir.join(crate::analyze::RUN_HTML)),
                perfetto: Some(&dir.join(crate::analyze::RUN_PERFETTO)),
                annotate: Some(&dir.join(crate::analyze::RUN_ANNOTATED)),
                annotate_all: false,
            },
        },
        &mut text,
    )?;
    std::io::stdout().write_all(&text)?;
    eprintln!("\n(the recorded run is in {})", dir.display());
    Ok(())
}
