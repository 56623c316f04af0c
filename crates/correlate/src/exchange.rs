//! Exchanges (docs/timing-model.md, exchanges): a person asks which request was slow, not which
//! read. On a connection the program made, an exchange is its request (the bytes it sent after
//! the peer's last data, up to its first read that returns the peer's next bytes) and the peer's
//! response (the peer's bytes until the program sends again). It is timed from the capture, so
//! waits sliced by timers, extra reads and the reads' own splits cannot hide the peer's time:
//! the checkpoints below are clamped into one increasing chain, so the parts add up to the whole.

use crate::blame::{Blame, CallKind, ReadBlame, SocketCall, Verdict};
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

/// An exchange being collected on one stream.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// The stream's open call (its peer address tells the flow's direction).
    open_call: usize,
    first_send: usize,
    last_send: usize,
    /// Stream offsets: the request's `[start, end)` in our direction.
    request: (u64, u64),
    /// The response's `[start, end)` in the peer's, and its last read, once a read returned.
    response: Option<(u64, u64, usize)>,
}

/// What one stream of a connection the program made holds while its calls are walked.
#[derive(Debug)]
struct Stream {
    /// Its open call (its peer address tells the flow's direction).
    open_call: usize,
    /// The exchange under way.
    under_way: Option<Open>,
    /// Where the last lookups landed in the byte timelines: [ours, the peer's].
    hints: [usize; 2],
}

/// The exchanges of every connection the program made (not accepted ones: a server's view is
/// the reads' `idle`): each connection's in order; connections interleaved as their calls are.
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
    let mut open: std::collections::HashMap<(u32, u64), Stream> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (idx, c) in calls.iter().enumerate() {
        if !c.tcp {
            continue;
        }
        if c.kind == CallKind::Open {
            // Accepted connections are served, not asked: no exchanges.
            if !c.api.accepts() {
                let stream = Stream {
                    open_call: idx,
                    under_way: None,
                    hints: [0; 2],
                };
                open.insert((c.pid, c.stream), stream);
            }
            continue;
        }
        let Some(Stream {
            open_call,
            under_way: slot,
            hints,
        }) = open.get_mut(&(c.pid, c.stream))
        else {
            continue;
        };
        if c.bytes <= 0 || c.peek {
            continue;
        }
        let (from, to) = (c.offset, c.offset + c.bytes as u64);
        match c.kind {
            CallKind::Send => {
                match slot {
                    Some(o) if o.response.is_none() => {
                        // Ranges only grow (a damaged log may carry offsets out of order).
                        o.request.1 = o.request.1.max(to);
                        o.last_send = idx;
                        continue;
                    }
                    Some(o) => {
                        let done = *o;
                        out.extend(finish(
                            analysis,
                            calls,
                            b,
                            &read_of,
                            done,
                            hints,
                            threshold_ns,
                        ));
                    }
                    None => {}
                }
                *slot = Some(Open {
                    open_call: *open_call,
                    first_send: idx,
                    last_send: idx,
                    request: (from, to),
                    response: None,
                });
            }
            CallKind::Recv => {
                if let Some(o) = slot {
                    o.response = Some(match o.response {
                        Some((start, end, _)) => (start, end.max(to), idx),
                        None => (from, to, idx),
                    });
                }
            }
            _ => {}
        }
    }
    // The exchanges still under way at the end, in the order of their last calls (not the
    // map's, which is seeded at random: the tables must not change from one analysis to the
    // next).
    let mut last: Vec<(Open, [usize; 2])> = open
        .into_values()
        .filter_map(|s| Some((s.under_way?, s.hints)))
        .collect();
    last.sort_by_key(|(o, _)| (o.response.map_or(o.last_send, |r| r.2), o.first_send));
    for (o, mut hints) in last {
        out.extend(finish(
            analysis,
            calls,
            b,
            &read_of,
            o,
            &mut hints,
            threshold_ns,
        ));
    }
    out
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
    b: &Blame,
    read_of: &[u32],
    o: Open,
    hints: &mut [usize; 2],
    threshold_ns: i64,
) -> Option<Exchange> {
    let (resp_from, resp_to, last_read) = o.response?;
    let read: &ReadBlame = b.reads.get(*read_of.get(last_read)? as usize)?;
    let flow: &Flow = analysis
        .flows
        .get((read.flow_id? as usize).checked_sub(1)?)?;
    let first = &calls[o.first_send];
    let peer_dir = crate::blame::peer_direction(flow, calls[o.open_call].peer()?);
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
    let sent_all = clamp(calls[o.last_send].t_return_ns, start);
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
        open_call: o.open_call,
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
