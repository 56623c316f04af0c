//! `netblame demo`: a built-in client and server on loopback whose reads earn every verdict the
//! loopback can show (ok, peer-slow, app-late), captured, recorded with the Rust wrappers,
//! analysed and reported. Without capture privileges it analyses the recorded demo run shipped
//! in the binary instead.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use netblame_instrument::{Call, EventLog, RecordedTcpStream};

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

fn workload(dir: &Path, listener: TcpListener) -> Result<()> {
    let log = Arc::new(EventLog::create_in(dir)?);
    let addr = listener.local_addr()?;
    let server_log = log.clone();
    let server = std::thread::spawn(move || serve(listener, server_log));
    let mut c = RecordedTcpStream::connect(addr, log.clone())?;
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
    for _ in 0..5 {
        exchange(&mut c, b'F', None, "fast")?;
    }
    exchange(&mut c, b'S', None, "slow peer")?;
    exchange(&mut c, b'F', Some(CLIENT_PAUSE), "late reader")?;
    drop(c);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the demo server panicked"))??;
    Ok(())
}

pub fn run(args: &DemoArgs) -> Result<()> {
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
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("netblame-runs").join(format!(
            "demo-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    std::fs::create_dir_all(out.join("events"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let capture = out.join("capture.pcap");
    let session = Session::start(&opts, &capture, FileFormat::Pcap)?;
    eprintln!(
        "netblame demo: a client and a server on 127.0.0.1:{port}: 5 quick exchanges, one the server thinks \
         {} ms about, one the client reads {} ms late",
        SERVER_THINK.as_millis(),
        CLIENT_PAUSE.as_millis()
    );
    let result = workload(&out.join("events"), listener);
    std::thread::sleep(Duration::from_millis(100));
    let stats = session.stop()?;
    result?;
    crate::capture::print_stats(&stats, &capture);
    let tables = out.join("tables");
    let mut text = Vec::new();
    crate::analyze::analyze(
        &capture,
        &out.join("events"),
        1.0,
        Some(&tables),
        Some(&tables),
        &mut text,
    )?;
    std::fs::write(out.join("report.txt"), &text)?;
    std::io::stdout().write_all(&text)?;
    eprintln!(
        "\nThe run is in {}: capture.pcap (open it in Wireshark), events/ (netblame events dump), \
         tables/ (CSV and Parquet for pandas or polars), report.txt.",
        out.display()
    );
    Ok(())
}

fn shipped(args: &DemoArgs) -> Result<()> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("netblame-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("events"))?;
    std::fs::write(dir.join("capture.pcap"), SHIPPED_CAPTURE)?;
    std::fs::write(dir.join("events").join("demo.nbev"), SHIPPED_EVENTS)?;
    let mut text = Vec::new();
    crate::analyze::analyze(
        &dir.join("capture.pcap"),
        &dir.join("events"),
        1.0,
        None,
        None,
        &mut text,
    )?;
    std::io::stdout().write_all(&text)?;
    eprintln!("\n(the recorded run is in {})", dir.display());
    Ok(())
}
