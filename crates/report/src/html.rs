//! The run as one self-contained HTML page: where the read time went (overall, per test, per
//! connection), the slowest reads, a time-sequence graph per listed read (tcptrace's picture
//! with the read drawn on it), and a timeline of each busy connection. Inline SVG and a few
//! lines of script for sorting tables: no network, nothing to load, opens from disk.
//!
//! Size is bounded whatever the run's length: graphs for the listed reads only (at most
//! `detail::MAX_LISTED_READS`, each with at most `detail::MAX_GRAPH_PACKETS` packets), tables
//! of the top rows, timelines binned when a connection has many calls.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};

use netblame_correlate::{
    summary, Analysis, Blame, PacketClass, ReadBlame, RunSummary, SocketCall, TestRow, Totals,
    Verdict,
};

use crate::detail::{self, Detail, ReadGraph};
use crate::fmt::{bytes as fmt_bytes, duration, utc};
use crate::Caveats;

/// Rows of the tests and connections tables (the CSV tables have them all).
const MAX_ROWS: usize = 300;
/// Slowest reads in the table.
const MAX_READ_ROWS: usize = 200;
/// Rows of the slowest-requests table.
const MAX_REQUEST_ROWS: usize = 200;
/// Connections with a timeline.
const MAX_TIMELINES: usize = 12;
/// Calls drawn one by one in a timeline row; more are binned.
const MAX_TIMELINE_MARKS: usize = 600;

/// What the page says about the run.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub title: &'a str,
    pub threshold_ms: f64,
    pub caveats: &'a Caveats<'a>,
    /// The run's sums and test phases.
    pub summary: &'a RunSummary<'a>,
}

/// HTML text escaping (also fit for attribute values in double quotes).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The five causes, in the order of the timing model, with their CSS class.
const CAUSES: [(&str, &str); 5] = [
    ("loss", "retransmissions"),
    ("peer", "the peer, or in flight"),
    ("stall", "Nagle + delayed ACK"),
    ("program", "the data waited for the program"),
    ("wakeup", "kernel and scheduler"),
];

fn parts(t: &Totals) -> [i64; 5] {
    [
        t.loss_delay_ns,
        t.peer_wait_ns,
        t.stall_ns,
        t.program_ns(),
        t.wakeup_ns,
    ]
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "v-ok",
        Verdict::Loss => "v-loss",
        Verdict::PeerSlow => "v-peer",
        Verdict::AppLate => "v-program",
        Verdict::WakeupLate => "v-wakeup",
        Verdict::Idle => "v-idle",
        Verdict::Refused => "v-refused",
        Verdict::Stall => "v-stall",
        _ => "v-other",
    }
}

/// A horizontal bar of the four causes, `width` px wide, scaled to `scale_ns` (the whole bar).
fn cause_bar(p: [i64; 5], scale_ns: i64, width: f64, height: f64) -> String {
    let mut s = format!(
        r#"<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let total: i64 = p
        .iter()
        .map(|v| (*v).max(0))
        .fold(0i64, |a, b| a.saturating_add(b));
    let mut x = 0.0;
    for (v, (name, what)) in p.iter().zip(CAUSES) {
        if *v <= 0 || scale_ns <= 0 {
            continue;
        }
        let w = (*v as f64 / scale_ns as f64 * width).max(0.5);
        let share = *v as f64 * 100.0 / total.max(1) as f64;
        let _ = write!(
            s,
            r#"<rect class="c-{name}" x="{x:.1}" y="0" width="{w:.1}" height="{height}"><title>{name} ({what}): {} ({share:.0}%)</title></rect>"#,
            duration(*v)
        );
        x += w;
    }
    s.push_str("</svg>");
    s
}

/// Writes the page.
pub fn write_html(
    out: &mut impl Write,
    analysis: &Analysis,
    calls: &[SocketCall],
    b: &Blame,
    d: &Detail,
    page: &Page,
) -> io::Result<()> {
    let mut h = String::with_capacity(1 << 20);
    let sums = &page.summary.sums;
    let all = &sums.overall;
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netblame: {title}</title>
<style>{STYLE}</style></head><body>
<header><h1>netblame <span class="run">{title}</span></h1>
<p class="sub">{reads} reads with data ({rbytes}), {sends} sends ({sbytes}); {conns} connections in the capture{span}; verdict threshold {thr} ms</p>
<nav><a href="\#overview">where the time went</a> <a href="\#tests">tests</a> <a href="\#connections">connections</a> <a href="\#requests">slowest requests</a> <a href="\#slowest">slowest reads</a> <a href="\#graphs">graphs</a> <a href="\#timelines">timelines</a></nav></header>
"#,
        title = esc(page.title),
        reads = all.reads,
        rbytes = fmt_bytes(all.read_bytes),
        sends = all.sends,
        sbytes = fmt_bytes(all.send_bytes),
        conns = analysis.flows.len(),
        span = match (analysis.quality.first_ts_ns, analysis.quality.last_ts_ns) {
            (Some(a), Some(z)) => format!(", {} from {}", duration(z - a), utc(a)),
            _ => String::new(),
        },
        thr = page.threshold_ms,
    );
    overview(&mut h, all);
    caveats(&mut h, analysis, b, page.caveats);
    tests_table(&mut h, &page.summary.tests);
    let per_flow = &sums.by_flow;
    connections_table(&mut h, analysis, per_flow);
    requests_table(&mut h, calls, b);
    slowest_table(&mut h, calls, b, d);
    graphs(&mut h, analysis, calls, b, d);
    timelines(&mut h, analysis, calls, b, d, per_flow);
    let _ = write!(
        h,
        r#"<footer>netblame {version}. Times are the capture's and the program's CLOCK_REALTIME, in ns; the model is docs/timing-model.md. Hover a mark for its numbers; click a column to sort.</footer>
<script>{SCRIPT}</script></body></html>
"#,
        version = env!("CARGO_PKG_VERSION")
    );
    out.write_all(h.as_bytes())
}

fn overview(h: &mut String, all: &Totals) {
    let p = parts(all);
    let whole: i64 = p.iter().fold(0i64, |a, b| a.saturating_add(*b));
    let _ = write!(
        h,
        r#"<section id="overview"><h2>Where the read time went</h2><div class="overall">{}</div><ul class="legend">"#,
        cause_bar(p, whole.max(1), 900.0, 28.0)
    );
    for (v, (name, what)) in p.iter().zip(CAUSES) {
        let _ = write!(
            h,
            r#"<li><i class="c-{name}"></i><b>{name}</b> ({what}): {} <span class="share">{}</span></li>"#,
            duration(*v),
            if whole > 0 {
                format!("{:.0}%", *v as f64 * 100.0 / whole as f64)
            } else {
                "-".into()
            }
        );
    }
    h.push_str(r#"</ul><p class="verdicts">verdicts: "#);
    for (v, n) in all.verdicts.iter() {
        let _ = write!(
            h,
            r#"<span class="chip {}">{} {n}</span> "#,
            verdict_class(v),
            v.as_str()
        );
    }
    h.push_str("</p>");
    if all.dispatch_ns > 0 {
        let _ = write!(
            h,
            "<p>Of the program's time, {} was dispatch: the socket was reported ready and the program (its event loop) ran other work before reading.</p>",
            duration(all.dispatch_ns)
        );
    }
    if all.idle_reads > 0 {
        let _ = write!(
            h,
            "<p>Idle: {} reads of a server waiting {} in all for its clients' next requests (not counted above).</p>",
            all.idle_reads,
            duration(all.idle_ns)
        );
    }
    if all.connect_ns > 0 {
        let _ = write!(
            h,
            "<p>{} connects took {} ({} lost to SYN retransmissions).</p>",
            all.connects,
            duration(all.connect_ns),
            duration(all.connect_syn_loss_ns)
        );
    }
    h.push_str("</section>\n");
}

fn caveats(h: &mut String, analysis: &Analysis, b: &Blame, c: &Caveats) {
    let mut w = Vec::new();
    for l in c.lost {
        w.push(format!("pid {}: {}", l.pid, l.summary(&utc(l.from_ns))));
    }
    if c.rejected_events > 0 {
        w.push(format!(
            "{} events were left out: their times, offsets or byte counts are impossible",
            c.rejected_events
        ));
    }
    if c.rejected_phases > 0 {
        w.push(format!(
            "{} test phase records of the pytest plugin were left out (cut short, or not the plugin's)",
            c.rejected_phases
        ));
    }
    if b.causality_violations > 0 {
        w.push(format!(
            "{} reads returned bytes more than 100 µs before they were captured: clock skew, or a join error",
            b.causality_violations
        ));
    }
    if !b.unmatched_streams.is_empty() {
        w.push(format!(
            "{} connections recorded by the program are not in the capture",
            b.unmatched_streams.len()
        ));
    }
    if !b.unmatched_flows.is_empty() {
        w.push(format!(
            "{} of the capture's {} connections have no recorded socket calls (programs the interposer cannot see)",
            b.unmatched_flows.len(),
            analysis.flows.len()
        ));
    }
    if w.is_empty() {
        return;
    }
    h.push_str(r#"<section class="caveats"><ul>"#);
    for x in w {
        let _ = write!(h, "<li>{}</li>", esc(&x));
    }
    h.push_str("</ul></section>\n");
}

/// A table cell holding a duration, sortable by its ns.
fn dur_td(ns: i64) -> String {
    format!(r#"<td class="n" data-v="{ns}">{}</td>"#, duration(ns))
}

fn num_td(v: impl std::fmt::Display) -> String {
    format!(r#"<td class="n" data-v="{v}">{v}</td>"#)
}

fn tests_table(h: &mut String, rows: &[TestRow]) {
    if rows.is_empty() {
        return;
    }
    let mut rows: Vec<&TestRow> = rows.iter().collect();
    // Slowest first where the plugin recorded the phases; else most time lost.
    let key = |r: &TestRow| r.wall_ns().unwrap_or_else(|| r.totals.blamed_ns());
    rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
    let scale = rows
        .iter()
        .map(|r| r.wall_ns().unwrap_or(0).max(r.totals.blamed_ns()))
        .max()
        .unwrap_or(1)
        .max(1);
    let recorded = rows.iter().any(|r| r.recorded.is_some());
    let _ = write!(
        h,
        r#"<section id="tests"><h2>Per test <small>({}{})</small></h2>
<table class="sortable"><thead><tr><th>test</th><th>phase</th><th>outcome</th><th>time</th><th>outside sockets</th><th>reads</th><th>sends</th><th>in reads</th><th>lost</th><th>where it went</th><th>connects</th><th>worst</th></tr></thead><tbody>"#,
        if recorded {
            "slowest first"
        } else {
            "most time lost first"
        },
        if rows.len() > MAX_ROWS {
            format!(
                "; the first {MAX_ROWS} of {}, all in tables/tests.csv",
                rows.len()
            )
        } else {
            String::new()
        }
    );
    let opt_dur = |v: Option<i64>| v.map_or_else(|| "<td>-</td>".to_string(), dur_td);
    for r in rows.iter().take(MAX_ROWS) {
        let t = &r.totals;
        let _ = write!(
            h,
            "<tr><td class=\"test\">{}</td><td>{}</td><td>{}</td>{}{}{}{}{}{}<td>{}</td>{}<td>{}</td></tr>",
            esc(r.test),
            esc(r.phase.unwrap_or("")),
            r.outcome().map_or("-", |o| o.as_str()),
            opt_dur(r.wall_ns()),
            opt_dur(r.outside_ns()),
            num_td(t.reads),
            num_td(t.sends),
            dur_td(t.read_time_ns),
            dur_td(t.blamed_ns()),
            cause_bar(parts(t), scale, 220.0, 12.0),
            dur_td(t.connect_ns),
            worst_chip(t)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn worst_chip(t: &Totals) -> String {
    match t.worst_verdict() {
        Some(v) => format!(
            r#"<span class="chip {}">{}</span>"#,
            verdict_class(v),
            v.as_str()
        ),
        None => "-".into(),
    }
}

fn endpoints(analysis: &Analysis, flow: Option<u32>) -> String {
    flow.and_then(|f| analysis.flows.get(f as usize - 1))
        .map_or("-".into(), |f| {
            format!(
                "{} {} &harr; {}",
                f.protocol.as_str(),
                esc(&f.endpoints[0].to_string()),
                esc(&f.endpoints[1].to_string())
            )
        })
}

fn connections_table(
    h: &mut String,
    analysis: &Analysis,
    per_flow: &BTreeMap<Option<u32>, Totals>,
) {
    let mut rows: Vec<_> = per_flow.iter().collect();
    rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.blamed_ns()));
    let scale = rows.first().map_or(1, |(_, t)| t.blamed_ns().max(1));
    let _ = write!(
        h,
        r#"<section id="connections"><h2>Per connection <small>(most time lost first{})</small></h2>
<table class="sortable"><thead><tr><th>flow</th><th>endpoints</th><th>reads</th><th>bytes read</th><th>in reads</th><th>lost</th><th>where it went</th><th>worst</th></tr></thead><tbody>"#,
        if rows.len() > MAX_ROWS {
            format!("; the first {MAX_ROWS} of {}", rows.len())
        } else {
            String::new()
        }
    );
    for (f, t) in rows.iter().take(MAX_ROWS) {
        let _ = write!(
            h,
            "<tr>{}<td>{}</td>{}<td class=\"n\" data-v=\"{}\">{}</td>{}{}<td>{}</td><td>{}</td></tr>",
            f.map_or("<td>-</td>".into(), num_td),
            endpoints(analysis, **f),
            num_td(t.reads),
            t.read_bytes,
            fmt_bytes(t.read_bytes),
            dur_td(t.read_time_ns),
            dur_td(t.blamed_ns()),
            cause_bar(parts(t), scale, 220.0, 12.0),
            worst_chip(t)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

/// The slowest requests (exchanges, timed from the capture), with what was asked.
fn requests_table(h: &mut String, calls: &[SocketCall], b: &Blame) {
    if b.exchanges.is_empty() {
        return;
    }
    let rows = crate::slowest_exchanges(b, MAX_REQUEST_ROWS);
    h.push_str(
        r#"<section id="requests"><h2>Slowest requests <small>(from the request's first send to the read of the answer's last byte, timed from the capture)</small></h2>
<table class="sortable"><thead><tr><th>#</th><th>total</th><th>verdict</th><th>request</th><th>protocol</th><th>held</th><th>loss</th><th>peer</th><th>transfer</th><th>stall</th><th>program</th><th>wakeup</th><th>flow</th><th>pid</th><th>fd</th><th>request bytes</th><th>answer bytes</th><th>test</th></tr></thead><tbody>"#,
    );
    for (rank, e) in rows.iter().enumerate() {
        let c = &calls[e.first_send];
        let p = &e.parts;
        let _ = write!(
            h,
            "<tr>{}{}<td><span class=\"chip {}\">{}</span></td><td class=\"request\">{}</td><td>{}</td>{}{}{}{}{}{}{}{}{}{}{}{}<td class=\"test\">{}</td></tr>",
            num_td(rank + 1),
            dur_td(e.end_ns - e.start_ns),
            verdict_class(e.verdict),
            e.verdict.as_str(),
            e.request.as_ref().map_or(String::new(), |r| esc(&r.text)),
            e.request
                .as_ref()
                .and_then(|r| r.protocol)
                .map_or("-", |p| p.as_str()),
            dur_td(p.request_held_ns),
            dur_td(p.loss_ns),
            dur_td(p.peer_ns),
            dur_td(p.transfer_ns),
            dur_td(p.stall_ns),
            dur_td(p.program_ns),
            dur_td(p.wakeup_ns),
            num_td(e.flow_id),
            num_td(c.pid),
            num_td(c.fd),
            num_td(e.request_bytes),
            num_td(e.response_bytes),
            esc(c.test.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn slowest_table(h: &mut String, calls: &[SocketCall], b: &Blame, d: &Detail) {
    let rows = detail::slowest(calls, b, MAX_READ_ROWS);
    if rows.is_empty() {
        return;
    }
    let graphed: HashMap<usize, usize> =
        d.listed.iter().enumerate().map(|(g, &i)| (i, g)).collect();
    h.push_str(
        r#"<section id="slowest"><h2>Slowest reads <small>(time from the wait or call to the return, + time the data waited before)</small></h2>
<table class="sortable"><thead><tr><th>#</th><th>window</th><th>+ before</th><th>verdict</th><th>loss</th><th>peer</th><th>stall</th><th>program</th><th>wakeup</th><th>wait</th><th>flow</th><th>pid</th><th>fd</th><th>bytes</th><th>offset</th><th>test</th><th>graph</th></tr></thead><tbody>"#,
    );
    for (rank, &i) in rows.iter().enumerate() {
        let r = &b.reads[i];
        let c = &calls[r.call];
        let t = &r.timing;
        let _ = write!(
            h,
            "<tr>{}{}{}<td><span class=\"chip {}\">{}</span></td>{}{}{}{}{}<td>{}</td><td>{}</td>{}{}{}{}<td class=\"test\">{}</td><td>{}</td></tr>",
            num_td(rank + 1),
            dur_td(detail::read_window(c, r)),
            dur_td(t.buffer_wait_ns),
            verdict_class(r.verdict),
            r.verdict.as_str(),
            dur_td(t.loss_delay_ns),
            dur_td(t.peer_wait_ns),
            dur_td(t.stall_ns),
            dur_td(t.program_ns()),
            dur_td(t.wakeup_ns),
            r.wait.map_or("-", |w| w.api.as_str()),
            r.flow_id.map_or("-".into(), |f| f.to_string()),
            num_td(c.pid),
            num_td(c.fd),
            num_td(c.bytes.max(0)),
            num_td(c.offset),
            esc(c.test.as_deref().unwrap_or("")),
            graphed
                .get(&i)
                .map_or(String::new(), |g| format!("<a href=\"#read-{g}\">graph</a>"))
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn graphs(h: &mut String, analysis: &Analysis, calls: &[SocketCall], b: &Blame, d: &Detail) {
    let _ = write!(
        h,
        r#"<section id="graphs"><h2>Time-sequence graphs <small>({} reads: the slowest, then those not ok)</small></h2>
<p class="help">x: capture time; y: offset in the stream the read came from. Each segment is a vertical bar over the bytes it carried (<span class="k seg">data</span>, <span class="k rexmit">retransmission</span>, <span class="k ooo">out of order</span>); <span class="k ack">the cumulative ACK</span> and <span class="k win">the advertised window</span> are step lines; <span class="k zw">Z</span> marks a zero window. The read is the box over its bytes, from its wait (dashed) or call to its return, shaded by cause: <span class="k c-loss">loss</span> <span class="k c-peer">peer</span> <span class="k c-program">program</span> <span class="k c-wakeup">wakeup</span>; the dotted line is the request it answered.</p>"#,
        d.graphs.len()
    );
    for (g, graph) in d.graphs.iter().enumerate() {
        graph_figure(h, analysis, calls, b, g, graph);
    }
    h.push_str("</section>\n");
}

/// Plot geometry of a graph.
struct Plot {
    x0: i64,
    x1: i64,
    y0: f64,
    y1: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Plot {
    fn x(&self, t: i64) -> f64 {
        self.left
            + (t - self.x0) as f64 / (self.x1 - self.x0).max(1) as f64 * (self.right - self.left)
    }
    fn y(&self, pos: f64) -> f64 {
        self.bottom - (pos - self.y0) / (self.y1 - self.y0).max(1.0) * (self.bottom - self.top)
    }
}

const GRAPH_W: f64 = 960.0;
const GRAPH_H: f64 = 360.0;

fn graph_figure(
    h: &mut String,
    analysis: &Analysis,
    calls: &[SocketCall],
    b: &Blame,
    g: usize,
    graph: &ReadGraph,
) {
    let r = &b.reads[graph.read];
    let c = &calls[r.call];
    let t = &r.timing;
    let (start_pos, end_pos) = graph.positions;
    let data_dir = graph.data_dir;
    let mut x0 = graph.from_ns;
    let mut x1 = graph.to_ns;
    for (_, p) in graph.packets.iter().filter(|(_, p)| graph.carries(p)) {
        x0 = x0.min(p.ts_ns - 20_000);
        x1 = x1.max(p.ts_ns + 20_000);
    }
    let len = (end_pos - start_pos).max(1);
    let pad = (len / 5).max(64);
    let plot = Plot {
        x0,
        x1,
        y0: (start_pos - pad) as f64,
        y1: (end_pos + pad) as f64,
        left: 86.0,
        right: GRAPH_W - 16.0,
        top: 14.0,
        bottom: GRAPH_H - 34.0,
    };
    let flow = r.flow_id.and_then(|f| analysis.flows.get(f as usize - 1));
    let direction = match data_dir {
        Some(0) => "a->b",
        Some(_) => "b->a",
        None => "-",
    };
    let (test, phase) = summary::split_test(c.test.as_deref());
    let _ = write!(
        h,
        r#"<figure class="tsg" id="read-{g}" data-read="{read}" data-verdict="{verdict}" data-flow="{flow}" data-direction="{direction}" data-pid="{pid}" data-fd="{fd}" data-t-call="{tcall}" data-seq-start="{start_pos}" data-seq-end="{end_pos}"><figcaption><b>{rank}.</b> <span class="chip {vclass}">{verdict}</span> {window} {api} of {bytes} at offset {offset} on flow {flow} ({eps}), pid {pid} fd {fd}{test}<br><span class="parts">loss {loss}, peer {peer}, program {program}, wakeup {wakeup}{before}{waited}{resp}{trunc}</span></figcaption>"#,
        read = graph.read,
        verdict = r.verdict.as_str(),
        vclass = verdict_class(r.verdict),
        flow = r.flow_id.map_or("-".into(), |f| f.to_string()),
        pid = c.pid,
        fd = c.fd,
        tcall = c.t_call_ns,
        rank = g + 1,
        window = duration(detail::read_window(c, r)),
        api = esc(c.api.as_str()),
        bytes = fmt_bytes(c.bytes.max(0) as u64),
        offset = c.offset,
        eps = endpoints(analysis, r.flow_id),
        test = test.map_or(String::new(), |t| format!(
            ", {}{}",
            esc(t),
            phase.map_or(String::new(), |p| format!(" ({})", esc(p)))
        )),
        loss = duration(t.loss_delay_ns),
        peer = match r.stall_held {
            Some(held) => format!(
                "{}, stall {} ({})",
                duration(t.peer_wait_ns),
                duration(t.stall_ns),
                esc(crate::stall_cure(held))
            ),
            None => duration(t.peer_wait_ns),
        },
        program = duration(t.program_ns()),
        wakeup = duration(t.wakeup_ns),
        before = if t.buffer_wait_ns > 0 {
            format!("; the data waited {} before", duration(t.buffer_wait_ns))
        } else {
            String::new()
        },
        waited = r.wait.map_or(String::new(), |w| format!(
            "; waited {} in {}, dispatch {}",
            duration(w.return_ns - w.call_ns),
            w.api,
            duration(t.dispatch_ns)
        )),
        resp = r.response_ns.map_or(String::new(), |ns| format!(
            "; the peer answered {} after the request",
            duration(ns)
        )),
        trunc = if graph.truncated {
            format!("; the first {} packets shown", graph.packets.len())
        } else {
            String::new()
        },
    );
    let _ = write!(
        h,
        r#"<svg class="tsg" width="{GRAPH_W}" height="{GRAPH_H}" viewBox="0 0 {GRAPH_W} {GRAPH_H}"><defs><clipPath id="clip-{g}"><rect x="{l}" y="{t}" width="{w}" height="{hh}"/></clipPath></defs>"#,
        l = plot.left,
        t = plot.top,
        w = plot.right - plot.left,
        hh = plot.bottom - plot.top
    );
    axes(h, &plot, detail::window_start(c, r));
    let _ = write!(h, r#"<g clip-path="url(#clip-{g})">"#);
    read_box(h, &plot, c, r, start_pos, end_pos);
    if let Some(s) = graph.request {
        let s = &calls[s];
        let x = plot.x(s.t_call_ns);
        let _ = write!(
            h,
            r#"<line class="request" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}"><title>request: {} {} at offset {}, called {}, returned after {}</title></line>"#,
            plot.top,
            plot.bottom,
            esc(s.api.as_str()),
            fmt_bytes(s.bytes.max(0) as u64),
            s.offset,
            rel(s.t_call_ns, detail::window_start(c, r)),
            duration(s.t_return_ns - s.t_call_ns)
        );
    }
    if flow.is_some() {
        packets(h, &plot, graph, detail::window_start(c, r));
    }
    h.push_str("</g></svg></figure>\n");
}

fn rel(t: i64, origin: i64) -> String {
    let d = t - origin;
    if d >= 0 {
        format!("t+{}", duration(d))
    } else {
        format!("t-{}", duration(-d))
    }
}

/// A tick step of 1, 2 or 5 times a power of ten, about `span / 6`.
fn nice_step(span: f64) -> f64 {
    let raw = (span / 6.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The ticks of `step` from `from` to `to`: each computed from its index, at most `MAX_TICKS`,
/// so that a step too small for the magnitude (offsets near 2^62 lose the step in an f64 sum)
/// cannot loop forever.
fn ticks(from: f64, to: f64, step: f64) -> impl Iterator<Item = f64> {
    const MAX_TICKS: usize = 20;
    let first = (from / step).ceil() * step;
    let n = if step > 0.0 && first.is_finite() && to >= first {
        (((to - first) / step).floor() as usize).saturating_add(1)
    } else {
        0
    };
    (0..n.min(MAX_TICKS)).map(move |k| first + k as f64 * step)
}

fn axes(h: &mut String, p: &Plot, origin: i64) {
    let _ = write!(
        h,
        r#"<rect class="frame" x="{}" y="{}" width="{}" height="{}"/>"#,
        p.left,
        p.top,
        p.right - p.left,
        p.bottom - p.top
    );
    // Time ticks relative to the window's start, in ms.
    let (a, z) = ((p.x0 - origin) as f64 / 1e6, (p.x1 - origin) as f64 / 1e6);
    for v in ticks(a, z, nice_step(z - a)) {
        let x = p.x(origin + (v * 1e6) as i64);
        let _ = write!(
            h,
            r#"<line class="grid" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}"/><text class="tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            p.top,
            p.bottom,
            p.bottom + 14.0,
            trim_float(v)
        );
    }
    let _ = write!(
        h,
        r#"<text class="axis" x="{}" y="{}" text-anchor="middle">ms from the start of the read's wait or call</text>"#,
        (p.left + p.right) / 2.0,
        GRAPH_H - 4.0
    );
    // Offset ticks: stream byte k is position k + 1.
    let step = nice_step(p.y1 - p.y0).max(1.0).round();
    for v in ticks((p.y0 - 1.0).max(0.0), p.y1 - 1.0, step) {
        let y = p.y(v + 1.0);
        let _ = write!(
            h,
            r#"<line class="grid" x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            p.left,
            p.right,
            p.left - 4.0,
            y + 3.0,
            v as i64
        );
    }
    let _ = write!(
        h,
        r#"<text class="axis" transform="translate(12 {}) rotate(-90)" text-anchor="middle">stream offset</text>"#,
        (p.top + p.bottom) / 2.0
    );
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The read: its data's wait in the buffer, then its window split by cause in the model's
/// order (peer, loss, then the wakeup, dispatch and the call), the wait dashed, the call solid.
fn read_box(h: &mut String, p: &Plot, c: &SocketCall, r: &ReadBlame, start: i64, end: i64) {
    let t = &r.timing;
    let (ya, yb) = (p.y(end as f64), p.y(start as f64));
    let hgt = (yb - ya).max(2.0);
    let origin = detail::window_start(c, r);
    let title = format!(
        "{} {} at offset {}: verdict {}; loss {}, peer {}, stall {}, program {} (dispatch {}), wakeup {}; waited in the buffer {}; called {}, returned {}{}",
        c.api,
        fmt_bytes(c.bytes.max(0) as u64),
        c.offset,
        r.verdict.as_str(),
        duration(t.loss_delay_ns),
        duration(t.peer_wait_ns),
        duration(t.stall_ns),
        duration(t.program_ns()),
        duration(t.dispatch_ns),
        duration(t.wakeup_ns),
        duration(t.buffer_wait_ns),
        rel(c.t_call_ns, origin),
        rel(c.t_return_ns, origin),
        r.wait.map_or(String::new(), |w| format!(
            "; {} from {} to {}",
            w.api,
            rel(w.call_ns, origin),
            rel(w.return_ns, origin)
        )),
    );
    let mut seg = |from: i64, to: i64, class: &str, what: &str| {
        let (from, to) = (from.max(p.x0), to.min(p.x1));
        if to <= from {
            return;
        }
        let (xa, xb) = (p.x(from), p.x(to));
        let _ = write!(
            h,
            r#"<rect class="cause c-{class}" x="{xa:.1}" y="{ya:.1}" width="{:.1}" height="{hgt:.1}"><title>{what}: {}</title></rect>"#,
            (xb - xa).max(1.0),
            duration(to - from)
        );
    };
    if let Some(first) = t.ready_first_ns.filter(|_| t.buffer_wait_ns > 0) {
        seg(
            first,
            first + t.buffer_wait_ns,
            "program",
            "in the socket buffer before the read's wait or call",
        );
    }
    let mut at = origin;
    for (ns, class, what) in [
        (t.peer_wait_ns + t.idle_ns, "peer", "waiting on the peer"),
        (t.loss_delay_ns, "loss", "waiting on a retransmission"),
    ] {
        seg(at, at + ns, class, what);
        at += ns;
    }
    match r.wait {
        Some(w) => {
            seg(at, w.return_ns, "wakeup", "wakeup of the wait");
            seg(
                w.return_ns,
                c.t_call_ns,
                "program",
                "dispatch: the program ran other work",
            );
            seg(c.t_call_ns, c.t_return_ns, "wakeup", "in the read call");
        }
        None => seg(at, c.t_return_ns, "wakeup", "wakeup and copy"),
    }
    let (xa, xb) = (p.x(c.t_call_ns), p.x(c.t_return_ns));
    let _ = write!(
        h,
        r#"<rect class="read-box" x="{xa:.1}" y="{ya:.1}" width="{:.1}" height="{hgt:.1}"><title>{}</title></rect>"#,
        (xb - xa).max(1.0),
        esc(&title)
    );
    if let Some(w) = r.wait {
        let (xa, xb) = (p.x(w.call_ns), p.x(w.return_ns));
        let _ = write!(
            h,
            r#"<rect class="wait-box" x="{xa:.1}" y="{ya:.1}" width="{:.1}" height="{hgt:.1}"><title>{}</title></rect>"#,
            (xb - xa).max(1.0),
            esc(&title)
        );
    }
}

/// The packets of a read's graph: segments, the receiver's ACK and window lines, zero windows.
fn packets(h: &mut String, p: &Plot, graph: &ReadGraph, origin: i64) {
    let (start, end) = graph.positions;
    let Some(dd) = graph.data_dir else {
        // UDP: the datagrams of the flow in the window, as ticks over the read's range.
        for (frame, q) in &graph.packets {
            let x = p.x(q.ts_ns);
            let _ = write!(
                h,
                r#"<line class="seg" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"><title>frame {frame}: datagram of {} B at {}</title></line>"#,
                p.y(end as f64),
                p.y(start as f64),
                q.payload_len,
                rel(q.ts_ns, origin)
            );
        }
        return;
    };
    // The receiver's ACKs and window, as step lines (only ACKs at positions near the plot).
    let mut ack_path = String::new();
    let mut win_path = String::new();
    let mut last_x: Option<f64> = None;
    for (frame, q) in graph.packets.iter().filter(|(_, q)| q.dir != dd) {
        let Some(ack) = q.rel_ack else { continue };
        let x = p.x(q.ts_ns);
        let ya = p.y(ack as f64).clamp(-10.0, GRAPH_H + 10.0);
        let yw = p
            .y((ack as f64) + q.window as f64)
            .clamp(-10.0, GRAPH_H + 10.0);
        if last_x.is_none() {
            let _ = write!(ack_path, "M{x:.1} {ya:.1}");
            let _ = write!(win_path, "M{x:.1} {yw:.1}");
        } else {
            let _ = write!(ack_path, "H{x:.1}V{ya:.1}");
            let _ = write!(win_path, "H{x:.1}V{yw:.1}");
        }
        last_x = Some(x);
        if q.window == 0 && q.flags & 0x10 != 0 {
            let _ = write!(
                h,
                r#"<text class="zw" x="{x:.1}" y="{:.1}" text-anchor="middle">Z<title>frame {frame}: zero window at {}, ACK {}</title></text>"#,
                ya - 3.0,
                rel(q.ts_ns, origin),
                ack - 1
            );
        }
    }
    if let Some(x) = last_x {
        let _ = write!(ack_path, "H{:.1}", x.max(p.right));
        let _ = write!(win_path, "H{:.1}", x.max(p.right));
        let _ = write!(
            h,
            r#"<path class="ack" d="{ack_path}"><title>cumulative ACK from the reader's side</title></path><path class="win" d="{win_path}"><title>ACK + advertised window: how far the peer may send</title></path>"#
        );
    }
    for (frame, q) in graph
        .packets
        .iter()
        .filter(|(_, q)| q.dir == dd && q.payload_len > 0)
    {
        let class = match q.class {
            PacketClass::Retransmission => "rexmit",
            PacketClass::SpuriousRetransmission => "rexmit spurious",
            PacketClass::OutOfOrder => "ooo",
            PacketClass::ZeroWindowProbe => "probe",
            _ => "seg",
        };
        let x = p.x(q.ts_ns);
        let (a, z) = (q.rel_seq, q.rel_seq + i64::from(q.payload_len));
        let (ya, yz) = (p.y(a as f64), p.y(z as f64));
        // tcptrace's mark: a bar over the bytes with a tick at each end.
        let _ = write!(
            h,
            r#"<path class="{class}{}" d="M{:.1} {ya:.1}H{:.1}M{x:.1} {ya:.1}V{yz:.1}M{:.1} {yz:.1}H{:.1}" data-seq="{a}" data-len="{}"><title>frame {frame}: {} bytes {}:{} at {}</title></path>"#,
            if graph.carries(q) { " in-read" } else { "" },
            x - 4.0,
            x + 4.0,
            x - 4.0,
            x + 4.0,
            q.payload_len,
            q.class.as_str(),
            a - 1,
            z - 1,
            rel(q.ts_ns, origin)
        );
    }
}

fn timelines(
    h: &mut String,
    analysis: &Analysis,
    calls: &[SocketCall],
    b: &Blame,
    d: &Detail,
    per_flow: &BTreeMap<Option<u32>, Totals>,
) {
    // The connections of the listed reads first, then the most time lost.
    let mut order: Vec<u32> = Vec::new();
    for &i in &d.listed {
        if let Some(f) = b.reads[i].flow_id {
            if !order.contains(&f) {
                order.push(f);
            }
        }
    }
    let mut rest: Vec<(&Option<u32>, &Totals)> = per_flow.iter().collect();
    rest.sort_by_key(|(_, t)| std::cmp::Reverse(t.blamed_ns()));
    for (f, _) in rest {
        if let Some(f) = f {
            if !order.contains(f) {
                order.push(*f);
            }
        }
    }
    order.truncate(MAX_TIMELINES);
    if order.is_empty() {
        return;
    }
    let mut reads: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut sends: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, r) in b.reads.iter().enumerate() {
        if let Some(f) = r.flow_id.filter(|f| order.contains(f)) {
            reads.entry(f).or_default().push(i);
        }
    }
    for (i, s) in b.sends.iter().enumerate() {
        if let Some(f) = s.flow_id.filter(|f| order.contains(f)) {
            sends.entry(f).or_default().push(i);
        }
    }
    let graphed: HashMap<usize, usize> =
        d.listed.iter().enumerate().map(|(g, &i)| (i, g)).collect();
    let _ = write!(
        h,
        r#"<section id="timelines"><h2>Connections over time <small>(reads above, sends below, coloured by verdict; {} connections)</small></h2>"#,
        order.len()
    );
    for f in order {
        let rs = reads.get(&f).map_or(&[][..], |v| v.as_slice());
        let ss = sends.get(&f).map_or(&[][..], |v| v.as_slice());
        let spans = rs
            .iter()
            .map(|&i| {
                let c = &calls[b.reads[i].call];
                (detail::window_start(c, &b.reads[i]), c.t_return_ns)
            })
            .chain(ss.iter().map(|&i| {
                let c = &calls[b.sends[i].call];
                (c.t_call_ns, c.t_return_ns)
            }));
        let (mut t0, mut t1) = (i64::MAX, i64::MIN);
        for (a, z) in spans {
            t0 = t0.min(a);
            t1 = t1.max(z);
        }
        if t0 > t1 {
            continue;
        }
        let plot = Plot {
            x0: t0,
            x1: t1.max(t0 + 1),
            y0: 0.0,
            y1: 1.0,
            left: 86.0,
            right: GRAPH_W - 16.0,
            top: 0.0,
            bottom: 1.0,
        };
        let _ = write!(
            h,
            r#"<figure class="timeline" data-flow="{f}"><figcaption>flow {f} ({}): {} reads, {} sends over {}</figcaption><svg width="{GRAPH_W}" height="64" viewBox="0 0 {GRAPH_W} 64"><text class="tick" x="80" y="20" text-anchor="end">reads</text><text class="tick" x="80" y="50" text-anchor="end">sends</text>"#,
            endpoints(analysis, Some(f)),
            rs.len(),
            ss.len(),
            duration(t1 - t0)
        );
        let read_marks: Vec<(i64, i64, Verdict, String)> = rs
            .iter()
            .map(|&i| {
                let r = &b.reads[i];
                let c = &calls[r.call];
                let link = graphed
                    .get(&i)
                    .map_or(String::new(), |g| format!(" (graph {})", g + 1));
                (
                    detail::window_start(c, r),
                    c.t_return_ns,
                    r.verdict,
                    format!(
                        "read {} at offset {}: {} {}{link}",
                        fmt_bytes(c.bytes.max(0) as u64),
                        c.offset,
                        r.verdict.as_str(),
                        duration(detail::read_window(c, r))
                    ),
                )
            })
            .collect();
        row(h, &plot, 8.0, &read_marks);
        let send_marks: Vec<(i64, i64, Verdict, String)> = ss
            .iter()
            .map(|&i| {
                let s = &b.sends[i];
                let c = &calls[s.call];
                let held = s.held_by.is_some();
                (
                    c.t_call_ns,
                    c.t_return_ns,
                    if held {
                        Verdict::WakeupLate
                    } else {
                        Verdict::Ok
                    },
                    format!(
                        "send {} at offset {}: {} in the call{}",
                        fmt_bytes(c.bytes.max(0) as u64),
                        c.offset,
                        duration(s.send_blocked_ns),
                        s.held_by.map_or(String::new(), |hb| format!(
                            ", held {} by {}",
                            duration(s.wire_delay_ns.unwrap_or(0)),
                            hb.as_str()
                        ))
                    ),
                )
            })
            .collect();
        row(h, &plot, 38.0, &send_marks);
        h.push_str("</svg></figure>\n");
    }
    h.push_str("</section>\n");
}

/// One timeline row: a mark per call, or, with many calls, bins coloured by their worst verdict.
fn row(h: &mut String, p: &Plot, y: f64, marks: &[(i64, i64, Verdict, String)]) {
    if marks.len() <= MAX_TIMELINE_MARKS {
        for (a, z, v, title) in marks {
            let (xa, xb) = (p.x(*a), p.x(*z));
            let _ = write!(
                h,
                r#"<rect class="mark {}" x="{xa:.1}" y="{y}" width="{:.1}" height="18"><title>{}</title></rect>"#,
                verdict_class(*v),
                (xb - xa).max(1.0),
                esc(title)
            );
        }
        return;
    }
    let bins = 300usize;
    let mut count = vec![0u64; bins];
    let mut worst: Vec<BTreeMap<Verdict, u64>> = vec![BTreeMap::new(); bins];
    let width = (p.x1 - p.x0).max(1) as f64;
    for (a, _, v, _) in marks {
        let k = (((a - p.x0) as f64 / width * bins as f64) as usize).min(bins - 1);
        count[k] += 1;
        *worst[k].entry(*v).or_default() += 1;
    }
    let bw = (p.right - p.left) / bins as f64;
    for k in 0..bins {
        if count[k] == 0 {
            continue;
        }
        // The bin's colour: its worst verdict other than ok, if any.
        let v = worst[k]
            .keys()
            .copied()
            .find(|v| *v != Verdict::Ok)
            .unwrap_or(Verdict::Ok);
        let counts: Vec<String> = worst[k]
            .iter()
            .map(|(v, n)| format!("{} {n}", v.as_str()))
            .collect();
        let _ = write!(
            h,
            r#"<rect class="mark bin {}" x="{:.1}" y="{y}" width="{:.1}" height="18"><title>{} calls: {}</title></rect>"#,
            verdict_class(v),
            p.left + k as f64 * bw,
            bw.max(1.0),
            count[k],
            counts.join(", ")
        );
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 24px 40px;color:#222;background:#fff}
header{border-bottom:1px solid #ddd;margin-bottom:12px}h1{font-size:22px;margin:14px 0 2px}h1 .run{font-weight:400;color:#555}
h2{font-size:18px;margin:26px 0 8px}h2 small{font-weight:400;color:#666;font-size:13px}.sub{color:#444;margin:2px 0 6px}
nav a{margin-right:14px;color:#1a5fb4;text-decoration:none}nav{margin-bottom:10px}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px 22px}.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
.share{color:#666}.c-loss{fill:#d62728;background:#d62728}.c-peer{fill:#1f77b4;background:#1f77b4}.c-program{fill:#ff7f0e;background:#ff7f0e}.c-wakeup{fill:#9467bd;background:#9467bd}.c-stall{fill:#17becf;background:#17becf}
.chip{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff;background:#7f7f7f}
.v-ok{background:#2ca02c;fill:#2ca02c}.v-loss{background:#d62728;fill:#d62728}.v-peer{background:#1f77b4;fill:#1f77b4}.v-program{background:#ff7f0e;fill:#ff7f0e}.v-wakeup{background:#9467bd;fill:#9467bd}.v-idle{background:#aaa;fill:#bbb}.v-refused{background:#8c564b;fill:#8c564b}.v-stall{background:#17becf;fill:#17becf}.v-other{background:#7f7f7f;fill:#7f7f7f}
table{border-collapse:collapse;font-size:13px;margin:4px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
th{cursor:pointer;background:#f6f6f6;position:sticky;top:0;user-select:none}th[data-dir=asc]::after{content:" \25B2"}th[data-dir=desc]::after{content:" \25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.test{max-width:420px;overflow-wrap:anywhere}
.caveats{background:#fff4e5;border:1px solid #f0c36d;padding:2px 12px;margin:10px 0}
figure{margin:18px 0;border:1px solid #e4e4e4;padding:8px;display:inline-block}figcaption{font-size:13px;margin-bottom:4px}.parts{color:#555}
svg.tsg .frame{fill:#fcfcfc;stroke:#bbb}svg .grid{stroke:#eee}svg .tick{font-size:10px;fill:#666}svg .axis{font-size:11px;fill:#444}
svg .seg{stroke:#222;stroke-width:2;fill:none}svg .rexmit{stroke:#d62728;stroke-width:3;fill:none}svg .ooo{stroke:#e6a700;stroke-width:2;fill:none}svg .probe{stroke:#c000c0;stroke-width:2;fill:none}
svg .ack{fill:none;stroke:#2ca02c;stroke-width:1.5}svg .win{fill:none;stroke:#bcbd22;stroke-width:1.2;stroke-dasharray:4 2}svg .zw{font-size:11px;font-weight:700;fill:#c000c0}
svg .cause{opacity:.28}svg .read-box{fill:none;stroke:#000;stroke-width:1.5}svg .wait-box{fill:none;stroke:#000;stroke-dasharray:5 3}
svg .request{stroke:#000;stroke-dasharray:2 3;stroke-width:1.5}svg .mark{opacity:.85}
.k{display:inline-block;padding:0 4px;border-radius:3px;color:#fff}.k.seg{background:#222}.k.rexmit{background:#d62728}.k.ooo{background:#e6a700}.k.ack{background:#2ca02c}.k.win{background:#bcbd22}.k.zw{background:#c000c0}
.help{color:#444;max-width:1000px}footer{margin-top:30px;color:#777;font-size:12px}
"#;

const SCRIPT: &str = r#"
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.dataset.dir !== "asc";
      table.querySelectorAll("th").forEach(function (o) { delete o.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      var key = function (row) {
        var cell = row.cells[col];
        return cell.dataset.v !== undefined ? parseFloat(cell.dataset.v) : cell.textContent;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var r = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_the_steps_in_range_and_few_even_where_the_step_is_lost_in_the_magnitude() {
        assert_eq!(
            ticks(0.3, 2.0, 0.5).collect::<Vec<_>>(),
            vec![0.5, 1.0, 1.5, 2.0]
        );
        assert_eq!(ticks(5.0, 1.0, 1.0).count(), 0);
        // Offsets near 2^62: adding the step changes nothing in f64, which looped forever.
        let big = (1u64 << 62) as f64;
        assert!(big + 2.0 == big);
        assert_eq!(ticks(big, big + 1e6, 2.0).count(), 20);
        assert_eq!(ticks(0.0, f64::INFINITY, 1.0).count(), 20);
        assert_eq!(ticks(0.0, 1.0, 0.0).count(), 0);
    }

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ticks_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(6.0), 1.0);
        assert_eq!(nice_step(60.0), 10.0);
        assert_eq!(nice_step(9.0), 2.0);
        assert_eq!(nice_step(25.0), 5.0);
        assert_eq!(trim_float(0.0500), "0.05");
        assert_eq!(trim_float(-0.0), "0");
    }

    #[test]
    fn an_empty_run_is_a_whole_page() {
        let mut out = Vec::new();
        let caveats = Caveats::default();
        write_html(
            &mut out,
            &Analysis::default(),
            &[],
            &Blame::default(),
            &Detail::default(),
            &Page {
                title: "<empty>",
                threshold_ms: 1.0,
                caveats: &caveats,
                summary: &RunSummary::default(),
            },
        )
        .unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert!(page.contains("netblame: &lt;empty&gt;"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
