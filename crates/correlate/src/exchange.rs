//! Exchanges (docs/timing-model.md, exchanges): a person asks which request was slow, not which
//! read. On a connection the program made, an exchange is its request (the bytes it sent after
//! the peer's last data, up to its first read that returns the peer's next bytes) and the peer's
//! response (the peer's bytes until the program sends again). It is timed from the capture, so
//! waits sliced by timers, extra reads and the reads' own splits cannot hide the peer's time:
//! the checkpoints below are clamped into one increasing chain, so the parts add up to the whole.

use crate::blame::{Blame, CallKind, SocketCall, Verdict, WaitWindow};
use crate::flows::{Analysis, Direction, Flow};
use crate::request::{name_request, RequestName};
use crate::timeline::Span;

/// One request and its response on a TCP connection, and where its time went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub flow_id: u32,
    /// The connection's open call (its peer address).
    pub open_call: usize,
    /// Indices into the calls: the request's first send, and the read that took the response's
    /// last byte.
    pub first_send: usize,
    pub last_read: usize,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The first send's call and the last read's return: `total_ns` apart.
    pub start_ns: i64,
    pub end_ns: i64,
    pub parts: ExchangeParts,
    pub verdict: Verdict,
    /// What was asked, from the request's first bytes in the capture (crate::request).
    pub request: Option<RequestName>,
}

/// The parts of an exchange's time; they add up to `total_ns()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExchangeParts {
    /// From the request's last send call's return to its last byte on the wire (Nagle, a full
    /// window, a zero window: the `sends` table says which).
    pub request_held_ns: i64,
    /// Retransmission waits of the request's last byte and of the response.
    pub loss_ns: i64,
    /// From the request's last byte on the wire to the response's first: the peer's think time,
    /// plus one flight.
    pub peer_ns: i64,
    /// From the response's first byte on the wire to its last byte delivered.
    pub transfer_ns: i64,
    /// Nagle + delayed-ACK holds on the connection within the above.
    pub stall_ns: i64,
    /// The program's: between its request's send calls, and the response waiting in the buffer
    /// before the last read (or its wait) was called.
    pub program_ns: i64,
    /// From the response's last byte delivered (or the read's call) to the read's return.
    pub wakeup_ns: i64,
}

impl ExchangeParts {
    pub fn total_ns(&self) -> i64 {
        self.request_held_ns
            + self.loss_ns
            + self.peer_ns
            + self.transfer_ns
            + self.stall_ns
            + self.program_ns
            + self.wakeup_ns
    }

    /// The largest cause, if it reaches `threshold_ns`: the request held and the transfer count
    /// with the peer (the network and the other side, not this program).
    pub fn verdict(&self, threshold_ns: i64) -> Verdict {
        Verdict::of_largest(
            [
                (self.loss_ns, Verdict::Loss),
                (
                    self.peer_ns + self.transfer_ns + self.request_held_ns,
                    Verdict::PeerSlow,
                ),
                (self.stall_ns, Verdict::Stall),
                (self.program_ns, Verdict::AppLate),
                (self.wakeup_ns, Verdict::WakeupLate),
            ],
            threshold_ns,
        )
    }
}

/// What the exchange's timing needs of the read that took the response's last byte.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LastRead {
    pub(crate) flow_id: Option<u32>,
    pub(crate) wait: Option<WaitWindow>,
}

/// An exchange being collected on one stream.
#[derive(Debug, Clone, Copy)]
struct Open {
    first_send: usize,
    last_send: usize,
    /// Stream offsets: the request's `[start, end)` in our direction.
    request: (u64, u64),
    /// The response's `[start, end)` in the peer's, its last read, and that read's result
    /// (`None`: one the results lack), once a read returned.
    response: Option<(u64, u64, usize, Option<LastRead>)>,
}

/// One stream of a connection the program made, while its calls are walked in order: the
/// exchange under way. The join (`crate::blame::join`) keeps one per stream and hands each
/// exchange on as it ends.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeStream {
    /// Its open call (its peer address tells the flow's direction).
    open_call: usize,
    under_way: Option<Open>,
    /// Where the last lookups landed in the byte timelines: [ours, the peer's].
    hints: [usize; 2],
}

impl ExchangeStream {
    pub(crate) fn new(open_call: usize) -> ExchangeStream {
        ExchangeStream {
            open_call,
            under_way: None,
            hints: [0; 2],
        }
    }

    /// The stream's next call (`idx`, TCP); for a read, what its result says (`read`). Returns
    /// the exchange a send of a new request ended, when it could be timed.
    pub(crate) fn step(
        &mut self,
        analysis: &Analysis,
        calls: &[SocketCall],
        idx: usize,
        read: Option<LastRead>,
        threshold_ns: i64,
    ) -> Option<Exchange> {
        let c = &calls[idx];
        if c.bytes <= 0 || c.peek {
            return None;
        }
        let (from, to) = (c.offset, c.offset + c.bytes as u64);
        match c.kind {
            CallKind::Send => {
                let ended = match self.under_way {
                    Some(ref mut o) if o.response.is_none() => {
                        // Ranges only grow (a damaged log may carry offsets out of order).
                        o.request.1 = o.request.1.max(to);
                        o.last_send = idx;
                        return None;
                    }
                    Some(done) => finish(
                        analysis,
                        calls,
                        self.open_call,
                        done,
                        &mut self.hints,
                        threshold_ns,
                    ),
                    None => None,
                };
                self.under_way = Some(Open {
                    first_send: idx,
                    last_send: idx,
                    request: (from, to),
                    response: None,
                });
                ended
            }
            CallKind::Recv => {
                if let Some(o) = &mut self.under_way {
                    o.response = Some(match o.response {
                        Some((start, end, _, _)) => (start, end.max(to), idx, read),
                        None => (from, to, idx, read),
                    });
                }
                None
            }
            _ => None,
        }
    }

    /// Where the exchange under way at the end goes among the others: by its last call, then
    /// its first send.
    pub(crate) fn end_order(&self) -> Option<(usize, usize)> {
        let o = self.under_way?;
        Some((o.response.map_or(o.last_send, |r| r.2), o.first_send))
    }

    /// Times the exchange under way when the calls ran out.
    pub(crate) fn finish(
        mut self,
        analysis: &Analysis,
        calls: &[SocketCall],
        threshold_ns: i64,
    ) -> Option<Exchange> {
        let o = self.under_way?;
        finish(
            analysis,
            calls,
            self.open_call,
            o,
            &mut self.hints,
            threshold_ns,
        )
    }
}

/// The exchanges of every connection the program made (not accepted ones: a server's view is
/// the reads' `idle`): each connection's in order; connections interleaved as their calls are.
///
/// The batch form of what the join makes as it goes (`crate::blame::join`), from the reads'
/// results held whole: kept while both exist, so that tests can compare them (issue 19).
pub fn exchanges(
    analysis: &Analysis,
    calls: &[SocketCall],
    b: &Blame,
    threshold_ns: i64,
) -> Vec<Exchange> {
    // Read results by call index.
    let mut read_of = vec![u32::MAX; calls.len()];
    for (i, r) in b.reads.iter().enumerate() {
        read_of[r.call] = i as u32;
    }
    let mut open: std::collections::HashMap<(u32, u64), ExchangeStream> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for (idx, c) in calls.iter().enumerate() {
        if !c.tcp {
            continue;
        }
        if c.kind == CallKind::Open {
            // Accepted connections are served, not asked: no exchanges.
            if !c.api.accepts() {
                open.insert((c.pid, c.stream), ExchangeStream::new(idx));
            }
            continue;
        }
        let Some(stream) = open.get_mut(&(c.pid, c.stream)) else {
            continue;
        };
        let read = b.reads.get(read_of[idx] as usize).map(|r| LastRead {
            flow_id: r.flow_id,
            wait: r.wait,
        });
        out.extend(stream.step(analysis, calls, idx, read, threshold_ns));
    }
    out.extend(finish_under_way(
        analysis,
        calls,
        open.into_values(),
        threshold_ns,
    ));
    out
}

/// The exchanges still under way at the end, in the order of their last calls (not the map's,
/// which is seeded at random: the tables must not change from one analysis to the next).
pub(crate) fn finish_under_way(
    analysis: &Analysis,
    calls: &[SocketCall],
    streams: impl Iterator<Item = ExchangeStream>,
    threshold_ns: i64,
) -> Vec<Exchange> {
    let mut last: Vec<((usize, usize), ExchangeStream)> =
        streams.filter_map(|s| Some((s.end_order()?, s))).collect();
    last.sort_by_key(|(order, _)| *order);
    last.into_iter()
        .filter_map(|(_, s)| s.finish(analysis, calls, threshold_ns))
        .collect()
}

/// The span of `dir` holding stream byte `offset` (position `offset + 1`); `hint` is where the
/// last lookup on this direction landed.
fn span<'a>(dir: &'a Direction, offset: u64, hint: &mut usize) -> Option<&'a Span> {
    dir.timeline.span_from(offset as i64 + 1, hint)
}

/// The latest delivery and latest first transmission over stream bytes `[from, to)`, and
/// whether any of them was retransmitted; `None` unless every byte was captured.
fn range_times(dir: &Direction, from: u64, to: u64, hint: &mut usize) -> Option<(i64, i64, bool)> {
    // Stream byte k is position k + 1.
    let t = dir.timeline.range(from as i64 + 1, to as i64 + 1, hint);
    t.complete.then_some((
        t.latest_delivered_ns,
        t.latest_first_sent_ns,
        t.retransmitted_bytes > 0,
    ))
}

/// Overlap of `[from, to)` with a list of holds (saturating: a damaged capture's holds may
/// overlap).
pub(crate) fn held_within(holds: &[(i64, i64)], from: i64, to: i64) -> i64 {
    holds
        .iter()
        .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
        .fold(0, i64::saturating_add)
}

/// Times a finished exchange; `None` when its response never came or its bytes are not all in
/// the capture (an unaligned or filtered connection).
fn finish(
    analysis: &Analysis,
    calls: &[SocketCall],
    open_call: usize,
    o: Open,
    hints: &mut [usize; 2],
    threshold_ns: i64,
) -> Option<Exchange> {
    let (resp_from, resp_to, last_read, read) = o.response?;
    let read = read?;
    let flow: &Flow = analysis
        .flows
        .get((read.flow_id? as usize).checked_sub(1)?)?;
    let first = &calls[o.first_send];
    let peer_dir = crate::blame::peer_direction(flow, calls[open_call].peer()?);
    let (ours, theirs) = (&flow.dirs[1 - peer_dir], &flow.dirs[peer_dir]);
    let exact = first.seq.is_some() && calls[last_read].seq.is_some();
    if (ours.isn.is_none() || theirs.isn.is_none()) && !exact {
        return None;
    }
    let req_last = span(ours, o.request.1.checked_sub(1)?, &mut hints[0])?;
    let resp_first = span(theirs, resp_from, &mut hints[1])?;
    let (resp_delivered, resp_sent, resp_rexmit) =
        range_times(theirs, resp_from, resp_to, &mut hints[1])?;
    let last = &calls[last_read];
    // The checkpoints, clamped into one increasing chain from the first send's call to the last
    // read's return.
    let (start, end) = (first.t_call_ns, last.t_return_ns.max(first.t_call_ns));
    let clamp = |t: i64, after: i64| t.clamp(after, end);
    // The program's writing ends at its last send's return, or when the request's last byte
    // went out if that was earlier: a send call that returns late (its thread descheduled
    // after the kernel sent the bytes) overlaps the peer's time and delays nothing.
    let last_send = &calls[o.last_send];
    let sent_all = clamp(
        last_send
            .t_return_ns
            .min(req_last.first_sent_ns.max(last_send.t_call_ns)),
        start,
    );
    let on_wire = clamp(req_last.first_sent_ns, sent_all);
    let answered = clamp(resp_first.first_sent_ns, on_wire);
    let delivered = clamp(resp_delivered, answered);
    let read_from = clamp(read.wait.map_or(last.t_call_ns, |w| w.call_ns), delivered);
    let mut p = ExchangeParts {
        request_held_ns: on_wire - sent_all,
        peer_ns: answered - on_wire,
        transfer_ns: delivered - answered,
        program_ns: (sent_all - start) + (read_from - delivered),
        wakeup_ns: end - read_from,
        ..ExchangeParts::default()
    };
    // Retransmission waits: the request's last byte, and the response's latest byte.
    if req_last.transmissions > 1 {
        let lost = (req_last.delivered_ns - req_last.first_sent_ns).clamp(0, p.peer_ns);
        p.peer_ns -= lost;
        p.loss_ns += lost;
    }
    if resp_rexmit {
        let lost = (resp_delivered - resp_sent).clamp(0, p.transfer_ns);
        p.transfer_ns -= lost;
        p.loss_ns += lost;
    }
    // Nagle + delayed-ACK holds of either direction, out of the part of the chain they cover.
    let holds = |from: i64, to: i64| {
        held_within(&ours.nagle_holds, from, to).saturating_add(held_within(
            &theirs.nagle_holds,
            from,
            to,
        ))
    };
    for (part, from, to) in [
        (&mut p.request_held_ns, sent_all, on_wire),
        (&mut p.peer_ns, on_wire, answered),
        (&mut p.transfer_ns, answered, delivered),
    ] {
        let s = holds(from, to).min(*part);
        *part -= s;
        p.stall_ns += s;
    }
    debug_assert_eq!(p.total_ns(), end - start);
    // The request's first segment began a turn of our direction (stream byte k is position k+1).
    let at = o.request.0 as i64 + 1;
    let request = ours
        .turn_heads
        .binary_search_by_key(&at, |h| h.pos)
        .ok()
        .and_then(|i| name_request(ours.turn_heads[i].bytes()));
    Some(Exchange {
        flow_id: flow.id,
        open_call,
        first_send: o.first_send,
        last_read,
        request_bytes: o.request.1 - o.request.0,
        response_bytes: resp_to - resp_from,
        start_ns: start,
        end_ns: end,
        verdict: p.verdict(threshold_ns),
        parts: p,
        request,
    })
}
