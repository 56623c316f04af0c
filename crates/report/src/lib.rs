//! Renderings of an analysed run: the socket calls as the correlator takes them; the text
//! report `netblame analyze` and `netblame run` print (one function per section, each writing
//! to any `Write`); and the pictures: the HTML page (`html`), the Perfetto trace (`perfetto`)
//! and the annotated capture, made from a second pass over the capture (`pass`, `detail`). No
//! I/O of its own beyond the readers and writers it is given, so all of it is fuzzed and
//! tested on its exact output.

#![deny(unsafe_code)]

pub mod detail;
pub mod diff;
pub mod fmt;
pub mod html;
pub mod lists;
pub mod pass;
pub mod perfetto;

use std::io::{self, Write};

use netblame_correlate::{
    summary, Api, Blame, CallKind, HeldWrite, Outcome, Phase, RunSummary, SocketCall, TestPhase,
    TestRow, Totals, Verdict,
};
use netblame_instrument::{Call, Event, Kind, LostCalls, PhaseLog, Proto, Recorder};

use crate::fmt::{bytes as fmt_bytes, duration};

/// A run joined (`netblame_correlate::join`, one pass over the calls): the sums and test rows
/// and the report's lists always; every result held only when asked for (the pictures and the
/// tables need them all).
#[derive(Debug)]
pub struct Joined<'a> {
    pub summary: RunSummary<'a>,
    pub lists: lists::Lists,
    pub all: Option<Blame>,
}

/// Joins a run's calls to its capture and feeds the results to the sums and the report's lists,
/// to `more` (the tables), and with `keep_all` to a `Blame` holding them all.
pub fn join_run<'a>(
    analysis: &netblame_correlate::Analysis,
    calls: &'a [SocketCall],
    phases: &'a [TestPhase],
    threshold_ns: i64,
    keep_all: bool,
    more: &mut impl netblame_correlate::JoinSink<'a>,
) -> Joined<'a> {
    let mut sums = netblame_correlate::SummarySink::default();
    let mut lists = lists::ReportLists::default();
    let mut all = keep_all.then(|| {
        let count = |kind| calls.iter().filter(|c| c.kind == kind).count();
        let mut b = Blame::default();
        b.reads.reserve_exact(count(CallKind::Recv));
        b.sends.reserve_exact(count(CallKind::Send));
        b
    });
    netblame_correlate::join(
        analysis,
        calls,
        threshold_ns,
        &mut (&mut sums, &mut lists, (&mut all, more)),
    );
    Joined {
        summary: sums.finish(phases),
        lists: lists.finish(),
        all,
    }
}

/// The recorded events as the correlator takes them, and how many were left out.
#[derive(Debug, Default)]
pub struct Calls {
    pub calls: Vec<SocketCall>,
    /// Events whose times, offset or byte count no real call can have (a damaged or
    /// hand-written log): left out, and counted in the report.
    pub rejected: u64,
    /// Which recorder saw each process, and how many of its events: (pid, recorder, events),
    /// by pid.
    pub recorders: Vec<(u32, Recorder, u64)>,
}

/// What the report must say is missing from the events it analysed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Caveats<'a> {
    /// Processes whose log could not hold every call.
    pub lost: &'a [LostCalls],
    /// Events left out by `socket_calls`.
    pub rejected_events: u64,
    /// Lines of the pytest plugin's log left out by `test_phases`.
    pub rejected_phases: u64,
    /// Which recorder saw each process (`Calls::recorders`).
    pub recorders: &'a [(u32, Recorder, u64)],
}

/// The recorded events as the correlator takes them (checked by `SocketCall::checked`).
pub fn socket_calls(events: Vec<Event>) -> Calls {
    // Only open events name the protocol; the other events of the stream inherit it.
    let udp: std::collections::HashSet<(u32, u64)> = events
        .iter()
        .filter(|e| e.proto == Some(Proto::Udp))
        .map(|e| (e.pid, e.stream))
        .collect();
    let total = events.len() as u64;
    let mut recorders: Vec<(u32, Recorder, u64)> = Vec::new();
    for e in &events {
        match recorders.last_mut() {
            Some((pid, r, n)) if *pid == e.pid && *r == e.recorder => *n += 1,
            _ => recorders.push((e.pid, e.recorder, 1)),
        }
    }
    recorders.sort_by_key(|&(pid, r, _)| (pid, r));
    recorders.dedup_by(|b, a| {
        let same = (a.0, a.1) == (b.0, b.1);
        if same {
            a.2 += b.2;
        }
        same
    });
    let mut last_udp: Option<((u32, u64), bool)> = None;
    let mut calls: Vec<SocketCall> = events
        .into_iter()
        .filter_map(|e| {
            // Consecutive events are mostly of one stream: one set lookup per run of them.
            let key = (e.pid, e.stream);
            let is_udp = match last_udp {
                Some((k, u)) if k == key => u,
                _ => udp.contains(&key),
            };
            last_udp = Some((key, is_udp));
            let mut call = SocketCall {
                tcp: !is_udp,
                kind: match e.kind {
                    Kind::Open => CallKind::Open,
                    Kind::Recv => CallKind::Recv,
                    Kind::Send => CallKind::Send,
                    Kind::Close => CallKind::Close,
                    Kind::Wait => CallKind::Wait,
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
                seq: e.seq,
                peek: e.peek,
                test: e.test,
                addrs: None,
                nonblocking: e.nonblocking,
                api: api_of(e.call),
                ready: e.ready,
                errno: e.errno,
            };
            if let Some(a) = e.addrs {
                call.set_addrs(a.local, a.peer);
            }
            call.checked()
        })
        .collect();
    // The calls were collected into the events' (larger) allocation: give the rest back.
    calls.shrink_to_fit();
    Calls {
        rejected: total - calls.len() as u64,
        calls,
        recorders,
    }
}

/// The correlator's name for a recorded call.
fn api_of(call: Call) -> Api {
    match call {
        Call::Recv => Api::Recv,
        Call::Recvfrom => Api::Recvfrom,
        Call::Recvmsg => Api::Recvmsg,
        Call::Recvmmsg => Api::Recvmmsg,
        Call::Read => Api::Read,
        Call::Readv => Api::Readv,
        Call::Send => Api::Send,
        Call::Sendto => Api::Sendto,
        Call::Sendmsg => Api::Sendmsg,
        Call::Sendmmsg => Api::Sendmmsg,
        Call::Write => Api::Write,
        Call::Writev => Api::Writev,
        Call::Sendfile => Api::Sendfile,
        Call::Connect => Api::Connect,
        Call::Accept => Api::Accept,
        Call::Accept4 => Api::Accept4,
        Call::Close => Api::Close,
        Call::Mark => Api::Mark,
        Call::Poll => Api::Poll,
        Call::Ppoll => Api::Ppoll,
        Call::Select => Api::Select,
        Call::Pselect => Api::Pselect,
        Call::EpollWait => Api::EpollWait,
        Call::EpollPwait => Api::EpollPwait,
        Call::EpollPwait2 => Api::EpollPwait2,
        _ => Api::Unknown,
    }
}

/// The plugin's records as the model takes them (checked names, `start <= end`), and how many
/// were left out: lines it could not read, or records no pytest writes.
pub fn test_phases(log: PhaseLog) -> (Vec<TestPhase>, u64) {
    let total = log.records.len() as u64 + log.unreadable;
    let phases: Vec<TestPhase> = log
        .records
        .into_iter()
        .filter_map(|r| {
            Some(TestPhase {
                phase: Phase::parse(&r.phase)?,
                outcome: Outcome::parse(&r.outcome)?,
                start_ns: r.start_ns,
                end_ns: (r.end_ns >= r.start_ns).then_some(r.end_ns)?,
                pid: r.pid,
                worker: r.worker.map(Into::into),
                test: r.test.into(),
            })
        })
        .collect();
    let left_out = total - phases.len() as u64;
    (phases, left_out)
}

/// Tests and connections listed in the report; the tables have them all.
const MAX_LISTED: usize = 10;

/// The line that sums up what a listing left out.
fn more<K>(out: &mut impl Write, rest: &[(K, &Totals)], what: &str, table: &str) -> io::Result<()> {
    if rest.is_empty() {
        return Ok(());
    }
    let lost: i64 = rest.iter().map(|(_, x)| x.blamed_ns()).sum();
    writeln!(
        out,
        "  ... and {} more {what}, {} lost in all (tables/{table}.csv)",
        rest.len(),
        duration(lost)
    )
}

/// The four causes of the timing model, as the report words them.
/// The causes of a read's (or a group's) time; a stall only where there was one.
fn causes(loss: i64, peer: i64, stall: i64, program: i64, wakeup: i64) -> String {
    let stall = if stall > 0 {
        format!(", stall {}", duration(stall))
    } else {
        String::new()
    };
    format!(
        "loss {}, peer {}{stall}, program {}, wakeup {}",
        duration(loss),
        duration(peer),
        duration(program),
        duration(wakeup)
    )
}

fn breakdown(t: &Totals) -> String {
    causes(
        t.loss_delay_ns,
        t.peer_wait_ns,
        t.stall_ns,
        t.program_ns(),
        t.wakeup_ns,
    )
}

/// What a stall was and its cure, from whose write was held.
pub fn stall_cure(held: HeldWrite) -> &'static str {
    match held {
        HeldWrite::Ours => {
            "this program's small write was held by Nagle until the peer's delayed ACK: \
             TCP_NODELAY on this program's socket cures it"
        }
        HeldWrite::Peers => {
            "the peer's small write was held by Nagle until this host's delayed ACK: \
             TCP_NODELAY on the peer's socket cures it"
        }
    }
}

/// A group's requests, when it made any: `3 requests, 0.85 s (0.80 s the peer's); `.
fn requests(t: &Totals) -> String {
    match t.requests {
        0 => String::new(),
        n => format!(
            "{n} request{}, {} ({} the peer's); ",
            if n == 1 { "" } else { "s" },
            duration(t.request_ns),
            duration(t.request_peer_ns)
        ),
    }
}

/// The per-test section: with the plugin's records, each phase's own time, outcome and where
/// it went, slowest first; without them, the tests' socket time, most lost first.
fn per_test(out: &mut impl Write, rows: &[TestRow]) -> io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let recorded = rows.iter().any(|r| r.recorded.is_some());
    writeln!(
        out,
        "\nper test ({}):",
        if recorded {
            "slowest first"
        } else {
            "most time lost first"
        }
    )?;
    let mut sorted: Vec<&TestRow> = rows.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.wall_ns().unwrap_or_else(|| r.totals.blamed_ns())));
    for r in sorted.iter().take(MAX_LISTED) {
        let x = &r.totals;
        let phase = r.phase.map_or(String::new(), |p| format!(" ({p})"));
        let test = r.test;
        if let Some(rec) = r.recorded {
            writeln!(
                out,
                "  {test}{phase} {}, {}: {}",
                duration(rec.wall_ns),
                rec.outcome.as_str(),
                test_causes(r)
            )?;
        } else {
            writeln!(out, "  {test}{phase}")?;
        }
        // The calls' details: what the first line did not say (a phase that only connected
        // said it there).
        let moved_data = x.reads + x.sends + x.idle_reads > 0;
        if !(moved_data || (r.recorded.is_none() && x.connects > 0)) {
            continue;
        }
        let connects = match (x.connects, x.connect_syn_loss_ns) {
            (0, _) => String::new(),
            (n, 0) => format!("; {n} connects, {}", duration(x.connect_ns)),
            (n, lost) => format!(
                "; {n} connects, {} ({} lost to SYN retransmissions)",
                duration(x.connect_ns),
                duration(lost)
            ),
        };
        writeln!(
            out,
            "    {}{} reads, {} sends, {} in reads; {}{connects}; worst: {}",
            requests(x),
            x.reads,
            x.sends,
            duration(x.read_time_ns),
            breakdown(x),
            worst(x)
        )?;
    }
    let rest = &sorted[sorted.len().min(MAX_LISTED)..];
    if !rest.is_empty() {
        let lost: i64 = rest.iter().map(|r| r.totals.blamed_ns()).sum();
        writeln!(
            out,
            "  ... and {} more test phases, {} lost in all (tables/tests.csv)",
            rest.len(),
            duration(lost)
        )?;
    }
    Ok(())
}

/// Where a recorded phase's time went: `0.85 s waiting on the peer (3 requests to
/// 127.0.0.1:5432), 2 ms network, 0.39 s outside sockets` (stall, dispatch, wakeup and
/// connects when there were any). The parts add up to the wall time, but for overlaps of
/// concurrent calls.
fn test_causes(r: &TestRow) -> String {
    let x = &r.totals;
    let mut parts = Vec::new();
    if x.reads > 0 {
        let to: Vec<String> = r
            .peers
            .iter()
            .take(2)
            .enumerate()
            .map(|(i, (addr, n))| match (i, *n) {
                (0, 1) => format!("1 request to {addr}"),
                (0, n) => format!("{n} requests to {addr}"),
                (_, n) => format!("{n} to {addr}"),
            })
            .collect();
        let more = r.peers.len().saturating_sub(2);
        let to = match (to.is_empty(), more) {
            (true, _) => String::new(),
            (false, 0) => format!(" ({})", to.join(", ")),
            (false, m) => format!(" ({}, and {m} more peers)", to.join(", ")),
        };
        parts.push(format!(
            "{} waiting on the peer{to}",
            duration(x.peer_wait_ns)
        ));
        parts.push(format!("{} network", duration(x.loss_delay_ns)));
        for (v, what) in [
            (x.stall_ns, "stalled (Nagle + delayed ACK)"),
            (x.dispatch_ns, "dispatch"),
            (x.wakeup_ns, "wakeup"),
        ] {
            if v > 0 {
                parts.push(format!("{} {what}", duration(v)));
            }
        }
    }
    if x.connects > 0 {
        let lost = match x.connect_syn_loss_ns {
            0 => String::new(),
            n => format!(" ({} lost to SYN retransmissions)", duration(n)),
        };
        parts.push(format!("{} connecting{lost}", duration(x.connect_ns)));
    }
    if x.reads == 0 && x.sends > 0 {
        parts.push(format!("{} in sends", duration(x.send_blocked_ns)));
    }
    // Data that waited in the buffer waited while the test was outside socket calls: a part of
    // that time, not a part beside it.
    if let Some(outside) = r.outside_ns() {
        let waiting = match x.buffer_wait_ns {
            0 => String::new(),
            n => format!(" ({} of it with an answer waiting unread)", duration(n)),
        };
        parts.push(format!("{} outside sockets{waiting}", duration(outside)));
    }
    parts.join(", ")
}

fn worst(t: &Totals) -> &'static str {
    t.worst_verdict().map_or("-", Verdict::as_str)
}

fn share(part: i64, whole: i64) -> String {
    if whole <= 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The text report of a run (what `netblame analyze` prints).
pub fn write_text(
    out: &mut impl Write,
    analysis: &netblame_correlate::Analysis,
    calls: &[SocketCall],
    lists: &lists::Lists,
    threshold_ms: f64,
    summary: &RunSummary,
    caveats: &Caveats,
) -> io::Result<()> {
    let end = &lists.end;
    let (sums, tests) = (&summary.sums, &summary.tests);
    let all = &sums.overall;
    writeln!(
        out,
        "netblame: {} reads with data ({}), {} sends ({}), {} requests",
        all.reads,
        fmt_bytes(all.read_bytes),
        all.sends,
        fmt_bytes(all.send_bytes),
        lists.exchanges
    )?;
    let whole = all.blamed_ns();
    writeln!(
        out,
        "\nwhere the read time went (verdict threshold {threshold_ms} ms):"
    )?;
    for (label, v) in [
        ("loss (waiting on retransmissions)", all.loss_delay_ns),
        ("peer (data not sent yet, or in flight)", all.peer_wait_ns),
        ("stall (Nagle + delayed ACK)", all.stall_ns),
        ("program (data waited for the program)", all.program_ns()),
        ("wakeup (kernel and scheduler)", all.wakeup_ns),
    ] {
        writeln!(
            out,
            "  {label:<44} {:>10}  {:>4}",
            duration(v),
            share(v, whole)
        )?;
    }
    let counts: Vec<String> = all
        .verdicts
        .iter()
        .map(|(v, n)| format!("{} {n}", v.as_str()))
        .collect();
    writeln!(out, "  verdicts: {}", counts.join(", "))?;
    if all.dispatch_ns > 0 {
        writeln!(
            out,
            "  of the program's time, {} was dispatch: the socket was reported ready, and the \
             program (its event loop) ran other work before reading",
            duration(all.dispatch_ns)
        )?;
    }
    if all.idle_reads > 0 {
        writeln!(
            out,
            "  idle: {} reads of a server waiting {} in all for its clients' next requests \
             (not counted above)",
            all.idle_reads,
            duration(all.idle_ns)
        )?;
    }
    slowest_requests(out, calls, lists)?;
    slowest_reads(out, calls, lists)?;
    slow_connects(out, calls, &end.connects)?;
    held_sends(out, calls, lists, threshold_ms)?;

    per_test(out, tests)?;
    writeln!(out, "\nper connection (most time lost first):")?;
    let mut flows: Vec<_> = sums.by_flow.iter().collect();
    flows.sort_by_key(|(_, x)| std::cmp::Reverse(x.blamed_ns()));
    for (f, x) in flows.iter().take(MAX_LISTED) {
        writeln!(
            out,
            "  flow {:<4} {}{} reads, {}, {} in reads; {}; worst: {}",
            f.map_or("-".into(), |f| f.to_string()),
            requests(x),
            x.reads,
            fmt_bytes(x.read_bytes),
            duration(x.read_time_ns),
            breakdown(x),
            worst(x)
        )?;
    }
    more(
        out,
        &flows[flows.len().min(MAX_LISTED)..],
        "connections",
        "reads",
    )?;
    if !end.unmatched_streams.is_empty() {
        writeln!(
            out,
            "\n{} connections recorded by the program are not in the capture:",
            end.unmatched_streams.len()
        )?;
        for (pid, _, local, peer) in end.unmatched_streams.iter().take(10) {
            let show = |a: &Option<std::net::SocketAddr>| a.map_or("?".into(), |a| a.to_string());
            writeln!(out, "  pid {pid}: {} -> {}", show(local), show(peer))?;
        }
    }
    if !end.unmatched_flows.is_empty() {
        writeln!(
            out,
            "\n{} connections in the capture have no recorded socket calls (programs the interposer \
             cannot see: static or Go binaries, processes started without it):",
            end.unmatched_flows.len()
        )?;
        for &id in end.unmatched_flows.iter().take(MAX_LISTED) {
            let f = &analysis.flows[id as usize - 1];
            let [a, z] = f
                .endpoints
                .map(|e| std::net::SocketAddr::new(e.addr, e.port));
            writeln!(out, "  flow {id} {} {a} <-> {z}", f.protocol.as_str())?;
        }
        if end.unmatched_flows.len() > MAX_LISTED {
            writeln!(
                out,
                "  ... and {} more (tables/flows.csv)",
                end.unmatched_flows.len() - MAX_LISTED
            )?;
        }
    }
    recorded_by(out, caveats.recorders)?;
    lost_calls(out, caveats.lost)?;
    if caveats.rejected_events > 0 {
        writeln!(
            out,
            "\nwarning: {} events were left out: their times, offsets or byte counts are impossible \
             (a damaged or hand-written event log)",
            caveats.rejected_events
        )?;
    }
    if caveats.rejected_phases > 0 {
        writeln!(
            out,
            "\nwarning: {} test phase records of the pytest plugin were left out (a line cut short \
             when pytest was killed, or not written by netblame's plugin)",
            caveats.rejected_phases
        )?;
    }
    if end.causality_violations > 0 {
        // The timing model: the largest violation is a lower bound on the clocks' offset.
        let worst = lists.worst_causality_ns;
        writeln!(
            out,
            "\nwarning: {} reads returned bytes more than 100 µs before they were captured (up to {}): \
             clock skew between the capture and the program (the capture's clock is at least {} ahead), \
             or a join error",
            end.causality_violations,
            duration(worst),
            duration(worst)
        )?;
    }
    Ok(())
}

/// Processes whose log could not hold every call: from when their events are missing.
/// Which recorder saw which process, when the eBPF recorder saw any (else every process was
/// the interposer's, as in every run before it).
fn recorded_by(out: &mut impl Write, recorders: &[(u32, Recorder, u64)]) -> io::Result<()> {
    if !recorders.iter().any(|&(_, r, _)| r == Recorder::Ebpf) {
        return Ok(());
    }
    writeln!(out, "\nrecorded by:")?;
    for (recorder, name) in [
        (Recorder::Interposer, "the interposer"),
        (Recorder::Ebpf, "the eBPF recorder"),
    ] {
        let seen: Vec<String> = recorders
            .iter()
            .filter(|&&(_, r, _)| r == recorder)
            .map(|&(pid, _, n)| format!("pid {pid} ({n} events)"))
            .collect();
        if seen.is_empty() {
            continue;
        }
        let more = seen.len().saturating_sub(MAX_LISTED);
        write!(
            out,
            "  {name}: {}",
            seen[..seen.len().min(MAX_LISTED)].join(", ")
        )?;
        if more > 0 {
            write!(out, " and {more} more processes")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn lost_calls(out: &mut impl Write, lost: &[LostCalls]) -> io::Result<()> {
    if lost.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nwarning: {} processes' events are incomplete; the figures above leave the calls not \
         recorded out:",
        lost.len()
    )?;
    for l in lost.iter().take(MAX_LISTED) {
        writeln!(out, "  pid {}: {}", l.pid, l.summary(&fmt::utc(l.from_ns)))?;
    }
    Ok(())
}

/// The ten reads that cost the program most (time in the call plus time the data waited for
/// it), with their breakdown and the packets behind them.
fn slowest_reads(
    out: &mut impl Write,
    calls: &[SocketCall],
    lists: &lists::Lists,
) -> io::Result<()> {
    let slow = &lists.slow_reads;
    if slow.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nslowest reads (time in the call, or from the wait before it, + time the data waited \
         before that):"
    )?;
    for r in slow {
        let c = &calls[r.call];
        let (test, phase) = summary::split_test(c.test.as_deref());
        let t = &r.timing;
        writeln!(
            out,
            "  {:>9} +{:>9}  {:<12} flow {} pid {} fd {}: {} at offset {}{}",
            duration(detail::read_window(c, r)),
            duration(t.buffer_wait_ns),
            r.verdict.as_str(),
            r.flow_id.map_or("-".into(), |f| f.to_string()),
            c.pid,
            c.fd,
            fmt_bytes(c.bytes.max(0) as u64),
            c.offset,
            test.map_or(String::new(), |t| format!(
                "  [{t}{}]",
                phase.map_or(String::new(), |p| format!(" ({p})"))
            )),
        )?;
        let mut packets = if !c.tcp {
            "1 datagram".to_string()
        } else if r.segments > 0 {
            format!(
                "{} segment{} at seq {}:{}",
                r.segments,
                if r.segments == 1 { "" } else { "s" },
                c.offset + 1,
                c.offset + 1 + c.bytes.max(0) as u64
            )
        } else {
            format!("no packets ({})", r.verdict.as_str())
        };
        if t.retransmitted_bytes > 0 {
            packets += &format!(", {} retransmitted", fmt_bytes(t.retransmitted_bytes));
        }
        if let Some(resp) = r.response_ns {
            packets += &format!("; the peer answered {} after the request", duration(resp));
        }
        if let Some(held) = r.request_held {
            packets += &format!(
                "; the request waited {} in this host's kernel ({})",
                duration(held.wire_delay_ns.unwrap_or(0)),
                held.held_by.as_str()
            );
        }
        if let Some(held) = r.stall_held {
            packets += &format!("; {}", stall_cure(held));
        }
        let waited = r.wait.map_or(String::new(), |w| {
            format!(
                "; waited {} in {}, then {} before the read (dispatch)",
                duration(w.return_ns - w.call_ns),
                w.api,
                duration(t.dispatch_ns)
            )
        });
        writeln!(
            out,
            "      {}; {packets}{waited}",
            causes(
                t.loss_delay_ns,
                t.peer_wait_ns,
                t.stall_ns,
                t.program_ns(),
                t.wakeup_ns
            ),
        )?;
    }
    Ok(())
}

/// The exchanges that took longest, with where their time went (timed from the capture).
fn slowest_requests(
    out: &mut impl Write,
    calls: &[SocketCall],
    lists: &lists::Lists,
) -> io::Result<()> {
    if lists.exchanges == 0 {
        return Ok(());
    }
    let slow = &lists.slow_exchanges;
    writeln!(
        out,
        "\nslowest requests (from the request's first send to the read of the answer's last byte, \
         timed from the capture):"
    )?;
    for e in slow {
        let c = &calls[e.first_send];
        let peer = calls[e.open_call]
            .peer()
            .map_or("?".into(), |a| a.to_string());
        let test = c
            .test
            .as_deref()
            .map_or(String::new(), |t| format!(" in {t}"));
        let asked = e.request.as_ref().map_or(String::new(), |r| {
            format!(
                "\"{}\"{}, ",
                r.text,
                r.protocol
                    .map_or(String::new(), |p| format!(" ({})", p.as_str()))
            )
        });
        let p = &e.parts;
        let stall = if p.stall_ns > 0 {
            format!(", stall {}", duration(p.stall_ns))
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {:>9}  {:<12} flow {} pid {} fd {} -> {peer}{test}: {asked}{} request, {} answer\n      \
             request held {}, loss {}, peer {}, transfer {}{stall}, program {}, wakeup {}",
            duration(e.end_ns - e.start_ns),
            e.verdict.as_str(),
            e.flow_id,
            c.pid,
            c.fd,
            fmt_bytes(e.request_bytes),
            fmt_bytes(e.response_bytes),
            duration(p.request_held_ns),
            duration(p.loss_ns),
            duration(p.peer_ns),
            duration(p.transfer_ns),
            duration(p.program_ns),
            duration(p.wakeup_ns),
        )?;
    }
    if lists.exchanges > slow.len() as u64 {
        writeln!(
            out,
            "  ... and {} more (tables/exchanges.csv)",
            lists.exchanges - slow.len() as u64
        )?;
    }
    Ok(())
}

/// The `n` exchanges that took longest, longest first, the earlier of equals first (as
/// `lists::ReportLists` keeps them).
pub fn slowest_exchanges(b: &Blame, n: usize) -> Vec<&netblame_correlate::Exchange> {
    let mut top = lists::TopK::new(n);
    for (i, e) in b.exchanges.iter().enumerate() {
        top.offer(e.end_ns - e.start_ns, i as u64, || e);
    }
    top.into_sorted()
}

/// Connects whose verdict is not `ok` (slow, refused, not captured), slowest first.
fn slow_connects(
    out: &mut impl Write,
    calls: &[SocketCall],
    connects: &[netblame_correlate::ConnectTiming],
) -> io::Result<()> {
    let mut slow: Vec<_> = connects
        .iter()
        .filter(|t| t.verdict != Verdict::Ok)
        .collect();
    if slow.is_empty() {
        return Ok(());
    }
    slow.sort_by_key(|t| std::cmp::Reverse(t.duration_ns(&calls[t.call])));
    writeln!(out, "\nslow connects:")?;
    for t in slow.iter().take(MAX_LISTED) {
        let c = &calls[t.call];
        let peer = c.peer().map_or("?".into(), |a| a.to_string());
        let syns = match t.syn_packets {
            0 | 1 => String::new(),
            n => format!("; {} SYNs: {} retransmitted", n, n - 1),
        };
        let answer = if t.verdict == Verdict::Refused {
            "RST: nothing listening"
        } else {
            "SYN-ACK"
        };
        writeln!(
            out,
            "  {:>9}  {:<12} pid {} fd {} -> {peer}{}: loss {}, peer ({answer}) {}, wakeup {}{syns}",
            duration(t.duration_ns(c)),
            t.verdict.as_str(),
            c.pid,
            c.fd,
            t.wait_api
                .map_or(String::new(), |api| format!(" (then {api})")),
            duration(t.syn_loss_ns),
            duration(t.peer_ns),
            duration(t.wakeup_ns),
        )?;
    }
    if slow.len() > MAX_LISTED {
        writeln!(
            out,
            "  ... and {} more (tables/connects.csv)",
            slow.len() - MAX_LISTED
        )?;
    }
    Ok(())
}

/// Sends whose bytes waited in the kernel at least the threshold before going on the wire.
fn held_sends(
    out: &mut impl Write,
    calls: &[SocketCall],
    lists: &lists::Lists,
    threshold_ms: f64,
) -> io::Result<()> {
    let blocked = lists.send_blocked_ns;
    if lists.held_send_count == 0 && blocked < (threshold_ms * 1e6) as i64 {
        return Ok(());
    }
    writeln!(
        out,
        "\nsends: {} blocked in the call in all; {} held in the kernel {threshold_ms} ms or more before the wire",
        duration(blocked),
        lists.held_send_count
    )?;
    for s in &lists.held_sends {
        let c = &calls[s.call];
        writeln!(
            out,
            "  {:>9} on the wire late, held by {:<11} flow {} pid {} fd {}: {} at offset {}",
            duration(s.wire_delay_ns.unwrap_or(0)),
            s.held_by.map_or("-", |h| h.as_str()),
            s.flow_id.map_or("-".into(), |f| f.to_string()),
            c.pid,
            c.fd,
            fmt_bytes(c.bytes.max(0) as u64),
            c.offset
        )?;
    }
    Ok(())
}
