//! The tables of socket calls joined to the capture: `reads`, `sends` and `tests`
//! (docs/tables.md).

use netblame_correlate::summary::split_test;
use netblame_correlate::TestRow;
use netblame_correlate::{Api, ConnectTiming, Exchange, ReadBlame, SendTiming, SocketCall};
use polars::prelude::*;

use crate::ExportError;

/// A column named `$name` from the values of `$iter`, collected as `Vec<$ty>`.
macro_rules! col {
    ($name:expr, $ty:ty, $iter:expr) => {
        Column::new($name.into(), $iter.collect::<Vec<$ty>>())
    };
}

fn frame(
    table: &'static str,
    height: usize,
    columns: Vec<Column>,
) -> Result<DataFrame, ExportError> {
    DataFrame::new(height, columns).map_err(|source| ExportError::Frame { table, source })
}

/// The columns `reads` and `sends` share: the call and its connection, for `rows` of (index in
/// `calls`, flow id).
fn call_columns(calls: &[SocketCall], rows: Vec<(usize, Option<u32>)>) -> Vec<Column> {
    let call = |&(i, _): &(usize, Option<u32>)| &calls[i];
    let tag = |row| split_test(call(row).test.as_deref());
    vec![
        col!("flow_id", Option<u32>, rows.iter().map(|&(_, f)| f)),
        col!(
            "proto",
            &str,
            rows.iter()
                .map(|row| if call(row).tcp { "tcp" } else { "udp" })
        ),
        col!("pid", u32, rows.iter().map(|row| call(row).pid)),
        col!("tid", u32, rows.iter().map(|row| call(row).tid)),
        col!("fd", i32, rows.iter().map(|row| call(row).fd)),
        col!("test", Option<&str>, rows.iter().map(|row| tag(row).0)),
        col!("phase", Option<&str>, rows.iter().map(|row| tag(row).1)),
        col!("t_call_ns", i64, rows.iter().map(|row| call(row).t_call_ns)),
        col!(
            "t_return_ns",
            i64,
            rows.iter().map(|row| call(row).t_return_ns)
        ),
        col!("bytes", i64, rows.iter().map(|row| call(row).bytes)),
        col!(
            "stream_offset",
            u64,
            rows.iter().map(|row| call(row).offset)
        ),
    ]
}

/// Rows `r` of the `reads` table: one row per read call, joined to the capture.
pub fn reads_frame(calls: &[SocketCall], r: &[ReadBlame]) -> Result<DataFrame, ExportError> {
    let mut columns = call_columns(calls, r.iter().map(|b| (b.call, b.flow_id)).collect());
    columns.extend([
        col!(
            "ready_first_ns",
            Option<i64>,
            r.iter().map(|b| b.timing.ready_first_ns)
        ),
        col!(
            "ready_last_ns",
            Option<i64>,
            r.iter().map(|b| b.timing.ready_last_ns)
        ),
        col!(
            "network_wait_ns",
            i64,
            r.iter().map(|b| b.timing.network_wait_ns)
        ),
        col!(
            "loss_delay_ns",
            i64,
            r.iter().map(|b| b.timing.loss_delay_ns)
        ),
        col!("peer_wait_ns", i64, r.iter().map(|b| b.timing.peer_wait_ns)),
        col!("stall_ns", i64, r.iter().map(|b| b.timing.stall_ns)),
        col!(
            "stall_held",
            Option<&str>,
            r.iter().map(|b| b.stall_held.map(|h| h.as_str()))
        ),
        col!(
            "buffer_wait_ns",
            i64,
            r.iter().map(|b| b.timing.buffer_wait_ns)
        ),
        col!("dispatch_ns", i64, r.iter().map(|b| b.timing.dispatch_ns)),
        col!("wakeup_ns", i64, r.iter().map(|b| b.timing.wakeup_ns)),
        col!("idle_ns", i64, r.iter().map(|b| b.timing.idle_ns)),
        col!(
            "wait_api",
            Option<&str>,
            r.iter().map(|b| match b.wait {
                Some(w) => Some(w.api.as_str()),
                None if calls[b.call].nonblocking => Some("none"),
                None => None,
            })
        ),
        col!(
            "wait_call_ns",
            Option<i64>,
            r.iter().map(|b| b.wait.map(|w| w.call_ns))
        ),
        col!(
            "wait_return_ns",
            Option<i64>,
            r.iter().map(|b| b.wait.map(|w| w.return_ns))
        ),
        col!(
            "retransmitted_bytes",
            u64,
            r.iter().map(|b| b.timing.retransmitted_bytes)
        ),
        col!("segments", u32, r.iter().map(|b| b.segments)),
        col!("response_ns", Option<i64>, r.iter().map(|b| b.response_ns)),
        col!(
            "request_held_by",
            Option<&str>,
            r.iter().map(|b| b.request_held.map(|h| h.held_by.as_str()))
        ),
        col!(
            "request_wire_delay_ns",
            Option<i64>,
            r.iter()
                .map(|b| b.request_held.and_then(|h| h.wire_delay_ns))
        ),
        col!("verdict", &str, r.iter().map(|b| b.verdict.as_str())),
    ]);
    frame("reads", r.len(), columns)
}

/// Rows `s` of the `sends` table: one row per write call, joined to the capture.
pub fn sends_frame(calls: &[SocketCall], s: &[SendTiming]) -> Result<DataFrame, ExportError> {
    let mut columns = call_columns(calls, s.iter().map(|b| (b.call, b.flow_id)).collect());
    columns.extend([
        col!("send_blocked_ns", i64, s.iter().map(|b| b.send_blocked_ns)),
        col!(
            "first_sent_ns",
            Option<i64>,
            s.iter().map(|b| b.first_sent_ns)
        ),
        col!(
            "wire_delay_ns",
            Option<i64>,
            s.iter().map(|b| b.wire_delay_ns)
        ),
        col!(
            "held_by",
            Option<&str>,
            s.iter().map(|b| b.held_by.map(|h| h.as_str()))
        ),
        col!(
            "wait_api",
            Option<&str>,
            s.iter().map(|b| b.wait.map(|w| w.api.as_str()))
        ),
        col!(
            "wait_call_ns",
            Option<i64>,
            s.iter().map(|b| b.wait.map(|w| w.call_ns))
        ),
    ]);
    frame("sends", s.len(), columns)
}

/// Rows `t` of the `connects` table: one row per TCP connect.
pub fn connects_frame(calls: &[SocketCall], t: &[ConnectTiming]) -> Result<DataFrame, ExportError> {
    let mut columns = call_columns(calls, t.iter().map(|x| (x.call, x.flow_id)).collect());
    columns.extend([
        col!(
            "peer",
            Option<String>,
            t.iter()
                .map(|x| calls[x.call].peer().map(|a| a.to_string()))
        ),
        col!("done_ns", i64, t.iter().map(|x| x.done_ns)),
        col!(
            "connect_ns",
            i64,
            t.iter().map(|x| x.duration_ns(&calls[x.call]))
        ),
        col!(
            "wait_api",
            Option<&str>,
            t.iter().map(|x| x.wait_api.map(Api::as_str))
        ),
        col!("syn_packets", u64, t.iter().map(|x| x.syn_packets)),
        col!("syn_loss_ns", i64, t.iter().map(|x| x.syn_loss_ns)),
        col!("peer_ns", i64, t.iter().map(|x| x.peer_ns)),
        col!("program_ns", i64, t.iter().map(|x| x.program_ns)),
        col!("wakeup_ns", i64, t.iter().map(|x| x.wakeup_ns)),
        col!("verdict", &str, t.iter().map(|x| x.verdict.as_str())),
    ]);
    frame("connects", t.len(), columns)
}

/// Rows `e` of the `exchanges` table: one row per request -> response exchange of a connection
/// the program made, timed from the capture.
pub fn exchanges_frame(calls: &[SocketCall], e: &[Exchange]) -> Result<DataFrame, ExportError> {
    // One string per connection, not per row: a batch has far fewer connections than requests.
    let mut peers: std::collections::HashMap<usize, Option<String>> = Default::default();
    for x in e {
        peers
            .entry(x.open_call)
            .or_insert_with(|| calls[x.open_call].peer().map(|a| a.to_string()));
    }
    let first = |x: &Exchange| &calls[x.first_send];
    let tag = |x| split_test(first(x).test.as_deref());
    let columns = vec![
        col!("flow_id", u32, e.iter().map(|x| x.flow_id)),
        col!("pid", u32, e.iter().map(|x| first(x).pid)),
        col!("tid", u32, e.iter().map(|x| first(x).tid)),
        col!("fd", i32, e.iter().map(|x| first(x).fd)),
        col!("test", Option<&str>, e.iter().map(|x| tag(x).0)),
        col!("phase", Option<&str>, e.iter().map(|x| tag(x).1)),
        col!(
            "peer",
            Option<&str>,
            e.iter().map(|x| peers[&x.open_call].as_deref())
        ),
        col!(
            "protocol",
            Option<&str>,
            e.iter().map(|x| x
                .request
                .as_ref()
                .and_then(|r| r.protocol)
                .map(|p| p.as_str()))
        ),
        col!(
            "request",
            Option<&str>,
            e.iter()
                .map(|x| x.request.as_ref().map(|r| r.text.as_str()))
        ),
        col!("start_ns", i64, e.iter().map(|x| x.start_ns)),
        col!("end_ns", i64, e.iter().map(|x| x.end_ns)),
        col!("total_ns", i64, e.iter().map(|x| x.end_ns - x.start_ns)),
        col!("request_offset", u64, e.iter().map(|x| first(x).offset)),
        col!("request_bytes", u64, e.iter().map(|x| x.request_bytes)),
        col!("response_bytes", u64, e.iter().map(|x| x.response_bytes)),
        col!(
            "request_held_ns",
            i64,
            e.iter().map(|x| x.parts.request_held_ns)
        ),
        col!("loss_ns", i64, e.iter().map(|x| x.parts.loss_ns)),
        col!("peer_ns", i64, e.iter().map(|x| x.parts.peer_ns)),
        col!("transfer_ns", i64, e.iter().map(|x| x.parts.transfer_ns)),
        col!("stall_ns", i64, e.iter().map(|x| x.parts.stall_ns)),
        col!("program_ns", i64, e.iter().map(|x| x.parts.program_ns)),
        col!("wakeup_ns", i64, e.iter().map(|x| x.parts.wakeup_ns)),
        col!("verdict", &str, e.iter().map(|x| x.verdict.as_str())),
    ];
    frame("exchanges", e.len(), columns)
}

/// The `tests` table: one row per pytest test and phase (`suite::test_rows`), tests with no
/// socket call included.
pub fn tests_frame(rows: &[TestRow]) -> Result<DataFrame, ExportError> {
    let g = || rows.iter().map(|r| (r, &r.totals));
    let rec = || rows.iter().map(|r| r.recorded);
    let columns = vec![
        col!("test", &str, rows.iter().map(|r| r.test)),
        col!("phase", Option<&str>, rows.iter().map(|r| r.phase)),
        col!(
            "outcome",
            Option<&str>,
            rows.iter().map(|r| r.outcome().map(|o| o.as_str()))
        ),
        col!(
            "start_ns",
            Option<i64>,
            rec().map(|r| r.map(|r| r.start_ns))
        ),
        col!("wall_ns", Option<i64>, rows.iter().map(|r| r.wall_ns())),
        col!("socket_ns", i64, rows.iter().map(|r| r.socket_ns)),
        col!(
            "outside_ns",
            Option<i64>,
            rows.iter().map(|r| r.outside_ns())
        ),
        col!("pid", Option<u32>, rec().map(|r| r.map(|r| r.pid))),
        col!("reads", u64, g().map(|(_, x)| x.reads)),
        col!("read_bytes", u64, g().map(|(_, x)| x.read_bytes)),
        col!("read_time_ns", i64, g().map(|(_, x)| x.read_time_ns)),
        col!("loss_delay_ns", i64, g().map(|(_, x)| x.loss_delay_ns)),
        col!("peer_wait_ns", i64, g().map(|(_, x)| x.peer_wait_ns)),
        col!("stall_ns", i64, g().map(|(_, x)| x.stall_ns)),
        col!("buffer_wait_ns", i64, g().map(|(_, x)| x.buffer_wait_ns)),
        col!("dispatch_ns", i64, g().map(|(_, x)| x.dispatch_ns)),
        col!("wakeup_ns", i64, g().map(|(_, x)| x.wakeup_ns)),
        col!("requests", u64, g().map(|(_, x)| x.requests)),
        col!("request_ns", i64, g().map(|(_, x)| x.request_ns)),
        col!("request_peer_ns", i64, g().map(|(_, x)| x.request_peer_ns)),
        col!("idle_reads", u64, g().map(|(_, x)| x.idle_reads)),
        col!("idle_ns", i64, g().map(|(_, x)| x.idle_ns)),
        col!(
            "retransmitted_bytes",
            u64,
            g().map(|(_, x)| x.retransmitted_bytes)
        ),
        col!("connects", u64, g().map(|(_, x)| x.connects)),
        col!("connect_ns", i64, g().map(|(_, x)| x.connect_ns)),
        col!(
            "connect_syn_loss_ns",
            i64,
            g().map(|(_, x)| x.connect_syn_loss_ns)
        ),
        col!("sends", u64, g().map(|(_, x)| x.sends)),
        col!("send_bytes", u64, g().map(|(_, x)| x.send_bytes)),
        col!("send_blocked_ns", i64, g().map(|(_, x)| x.send_blocked_ns)),
        col!(
            "worst_verdict",
            Option<&str>,
            g().map(|(_, x)| x.worst_verdict().map(|v| v.as_str()))
        ),
    ];
    frame("tests", rows.len(), columns)
}
