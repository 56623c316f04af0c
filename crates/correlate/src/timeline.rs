//! The byte timeline of one TCP direction: for every range of sequence space, when it was first
//! captured, how many captured segments carried it, and when the transmission the receiver
//! accepted was captured (`t_delivered` in the timing model).
//!
//! Positions are unwrapped sequence numbers (see [`crate::seq::SeqUnwrapper`]): the SYN occupies
//! position 0 when it was captured, stream byte `k` position `k + 1`, and a FIN one position after
//! the last byte, as in tcptrace, so that a retransmitted SYN or FIN is a retransmission too.

/// A range of positions `[start, end)` that every captured transmission covered whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    /// Capture time of the first segment that carried this range.
    pub first_sent_ns: i64,
    /// Capture time of the last segment carrying it before the first ACK that covered it.
    pub delivered_ns: i64,
    /// How many captured segments carried it.
    pub transmissions: u32,
}

/// What one transmission found in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOutcome {
    /// Positions of the segment that an earlier segment had already carried.
    pub seen_before: i64,
    /// Of those, positions that the receiver had already acknowledged.
    pub acked_before: i64,
    /// No position was seen before, yet the segment lies before data already seen: it fills a
    /// hole (reordering, or the first transmission was not captured).
    pub fills_hole: bool,
}

/// Spans sorted by position, never overlapping, plus the receiver's cumulative ACK.
#[derive(Debug, Clone, Default)]
pub struct ByteTimeline {
    spans: Vec<Span>,
    acked: Option<i64>,
    /// (capture time, position) of every ACK that advanced `acked`: what was outstanding when
    /// (the send side of the timing model asks why bytes waited before going out).
    ack_history: Vec<(i64, i64)>,
}

/// The capture times of a byte range (`ByteTimeline::range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeTimes {
    /// Delivery and first transmission of the span holding the range's first byte.
    pub first: Option<(i64, i64)>,
    /// The latest delivery, and the latest first transmission, over the range.
    pub latest_delivered_ns: i64,
    pub latest_first_sent_ns: i64,
    /// Bytes of the range sent more than once.
    pub retransmitted_bytes: u64,
    /// Spans (segments) that carried bytes of the range.
    pub spans: u32,
    /// Every byte of the range was captured.
    pub complete: bool,
}

impl ByteTimeline {
    /// Gives back the room the vectors grew into beyond their contents.
    pub fn shrink_to_fit(&mut self) {
        self.spans.shrink_to_fit();
        self.ack_history.shrink_to_fit();
    }

    /// The spans, sorted by position.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The highest cumulative ACK position received, if any ACK was.
    pub fn acked(&self) -> Option<i64> {
        self.acked
    }

    /// The cumulative ACK position as of `ts_ns` (the last advance captured at or before it).
    pub fn acked_at(&self, ts_ns: i64) -> Option<i64> {
        let i = self.ack_history.partition_point(|&(t, _)| t <= ts_ns);
        i.checked_sub(1).map(|i| self.ack_history[i].1)
    }

    /// One past the highest position captured.
    pub fn front(&self) -> Option<i64> {
        self.spans.last().map(|s| s.end)
    }

    /// Index of the first span ending after `pos`. ACKs and retransmissions nearly always
    /// concern the last few spans, so the search gallops back from the end before bisecting:
    /// O(log distance from the front), and it touches little memory.
    fn first_ending_after(&self, pos: i64) -> usize {
        let n = self.spans.len();
        let mut step = 1;
        let mut hi = n;
        loop {
            let lo = n.saturating_sub(step);
            if lo == 0 || self.spans[lo].end <= pos {
                return lo + self.spans[lo..hi].partition_point(|s| s.end <= pos);
            }
            hi = lo;
            step *= 2;
        }
    }

    /// The span containing `pos`, if any.
    pub fn span_at(&self, pos: i64) -> Option<&Span> {
        self.spans
            .get(self.first_ending_after(pos))
            .filter(|s| s.start <= pos)
    }

    /// Index of the first span ending after `pos`, searching forward from `*hint` (a previous
    /// answer): a program reads and writes its stream in order, so the next lookup is nearly
    /// always a few spans on. Gallops, so a bad hint costs a logarithm, never a scan. Updates
    /// `*hint`.
    pub fn index_from(&self, pos: i64, hint: &mut usize) -> usize {
        let n = self.spans.len();
        let start = (*hint).min(n);
        let i = if start > 0 && self.spans[start - 1].end > pos {
            // Behind the hint: search from the start.
            self.spans[..start].partition_point(|s| s.end <= pos)
        } else {
            let (mut lo, mut step) = (start, 1);
            loop {
                let probe = (lo + step).min(n);
                if probe == n || self.spans[probe - 1].end > pos {
                    break lo + self.spans[lo..probe].partition_point(|s| s.end <= pos);
                }
                lo = probe;
                step *= 2;
            }
        };
        *hint = i;
        i
    }

    /// The span containing `pos`, searching from `*hint` (see [`Self::index_from`]).
    pub fn span_from(&self, pos: i64, hint: &mut usize) -> Option<&Span> {
        self.spans
            .get(self.index_from(pos, hint))
            .filter(|s| s.start <= pos)
    }

    /// What the spans over positions `[start, end)` say, in one walk from `*hint` (a read's
    /// and an exchange's timing both need it).
    pub fn range(&self, start: i64, end: i64, hint: &mut usize) -> RangeTimes {
        let first = self.index_from(start, hint);
        let mut t = RangeTimes {
            first: None,
            latest_delivered_ns: i64::MIN,
            latest_first_sent_ns: i64::MIN,
            retransmitted_bytes: 0,
            spans: 0,
            complete: false,
        };
        let mut covered = 0i64;
        for s in self.spans[first..].iter().take_while(|s| s.start < end) {
            let overlap = s.end.min(end) - s.start.max(start);
            if overlap <= 0 {
                continue;
            }
            if s.start <= start {
                t.first = Some((s.delivered_ns, s.first_sent_ns));
            }
            covered += overlap;
            t.spans += 1;
            t.latest_delivered_ns = t.latest_delivered_ns.max(s.delivered_ns);
            t.latest_first_sent_ns = t.latest_first_sent_ns.max(s.first_sent_ns);
            if s.transmissions > 1 {
                t.retransmitted_bytes += overlap as u64;
            }
        }
        t.complete = covered == end - start;
        t
    }

    /// True when some captured segment carried `pos`.
    pub fn contains(&self, pos: i64) -> bool {
        self.span_at(pos).is_some()
    }

    /// Splits the span containing `pos` so that a span starts exactly at `pos`.
    fn split_at(&mut self, pos: i64) {
        let i = self.first_ending_after(pos);
        if let Some(s) = self.spans.get_mut(i) {
            if s.start < pos {
                let mut tail = *s;
                s.end = pos;
                tail.start = pos;
                self.spans.insert(i + 1, tail);
            }
        }
    }

    /// Records a captured segment carrying positions `[start, end)` at time `ts_ns`.
    pub fn transmit(&mut self, start: i64, end: i64, ts_ns: i64) -> TxOutcome {
        if end <= start {
            return TxOutcome::default();
        }
        let fresh = Span {
            start,
            end,
            first_sent_ns: ts_ns,
            delivered_ns: ts_ns,
            transmissions: 1,
        };
        // Expected case: new data at the front of the stream.
        if self.front().is_none_or(|f| start >= f) {
            self.spans.push(fresh);
            return TxOutcome::default();
        }
        let acked = self.acked.unwrap_or(i64::MIN);
        self.split_at(start);
        self.split_at(end);
        if start < acked && acked < end {
            self.split_at(acked);
        }
        let mut out = TxOutcome::default();
        let mut holes: Vec<(usize, Span)> = Vec::new();
        let mut pos = start;
        let mut i = self.first_ending_after(start);
        while pos < end {
            match self.spans.get_mut(i) {
                Some(s) if s.start <= pos => {
                    let len = s.end - s.start;
                    out.seen_before += len;
                    s.transmissions += 1;
                    if s.end <= acked {
                        out.acked_before += len;
                    } else {
                        s.delivered_ns = ts_ns;
                    }
                    pos = s.end;
                    i += 1;
                }
                next => {
                    let hole_end = next.map_or(end, |s| s.start.min(end));
                    holes.push((
                        i,
                        Span {
                            start: pos,
                            end: hole_end,
                            ..fresh
                        },
                    ));
                    pos = hole_end;
                }
            }
        }
        for (at, span) in holes.into_iter().rev() {
            self.spans.insert(at, span);
        }
        out.fills_hole = out.seen_before == 0;
        out
    }

    /// Records a cumulative ACK for position `ack` (everything before it was received) at
    /// `ts_ns`. Returns an RTT sample by Karn's rule when the ACK advances over a range that was
    /// transmitted exactly once.
    pub fn ack(&mut self, ack: i64, ts_ns: i64) -> Option<i64> {
        if self.acked.is_some_and(|a| ack <= a) {
            return None;
        }
        self.acked = Some(ack);
        self.ack_history.push((ts_ns, ack));
        let last = self.span_at(ack - 1)?;
        (last.transmissions == 1 && ts_ns >= last.first_sent_ns).then(|| ts_ns - last.first_sent_ns)
    }

    /// Holes between captured ranges, and ACKed positions beyond the last captured one: data
    /// that was sent but never captured. Returns (number of holes, positions missing).
    pub fn gaps(&self) -> (u64, i64) {
        let mut count = 0;
        let mut missing = 0;
        for w in self.spans.windows(2) {
            if w[1].start > w[0].end {
                count += 1;
                missing += w[1].start - w[0].end;
            }
        }
        if let (Some(front), Some(acked)) = (self.front(), self.acked) {
            if acked > front {
                count += 1;
                missing += acked - front;
            }
        }
        (count, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(t: &ByteTimeline) -> Vec<(i64, i64, i64, i64, u32)> {
        t.spans()
            .iter()
            .map(|s| {
                (
                    s.start,
                    s.end,
                    s.first_sent_ns,
                    s.delivered_ns,
                    s.transmissions,
                )
            })
            .collect()
    }

    #[test]
    fn in_order_appends() {
        let mut t = ByteTimeline::default();
        assert_eq!(t.transmit(1, 101, 10), TxOutcome::default());
        assert_eq!(t.transmit(101, 201, 20), TxOutcome::default());
        assert_eq!(spans(&t), vec![(1, 101, 10, 10, 1), (101, 201, 20, 20, 1)]);
    }

    #[test]
    fn full_retransmission_updates_delivery() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        let o = t.transmit(1, 101, 50);
        assert_eq!(
            (o.seen_before, o.acked_before, o.fills_hole),
            (100, 0, false)
        );
        assert_eq!(spans(&t), vec![(1, 101, 10, 50, 2)]);
    }

    #[test]
    fn retransmission_after_ack_is_spurious_and_keeps_delivery() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        assert_eq!(t.ack(101, 15), Some(5));
        let o = t.transmit(1, 101, 50);
        assert_eq!((o.seen_before, o.acked_before), (100, 100));
        assert_eq!(spans(&t), vec![(1, 101, 10, 10, 2)]);
    }

    #[test]
    fn partial_ack_splits_delivery_per_byte() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 201, 10);
        t.ack(101, 15);
        let o = t.transmit(1, 201, 40);
        assert_eq!((o.seen_before, o.acked_before), (200, 100));
        assert_eq!(spans(&t), vec![(1, 101, 10, 10, 2), (101, 201, 10, 40, 2)]);
    }

    #[test]
    fn hole_fill_is_out_of_order() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        t.transmit(201, 301, 20);
        let o = t.transmit(101, 201, 30);
        assert!(o.fills_hole);
        assert_eq!(o.seen_before, 0);
        assert_eq!(t.gaps(), (0, 0));
        assert_eq!(t.spans().len(), 3);
    }

    #[test]
    fn overlapping_retransmission_covers_hole_and_old_bytes() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        t.transmit(201, 301, 20);
        // collapsed retransmission of [51, 251): 50 old + 100 new + 50 old
        let o = t.transmit(51, 251, 30);
        assert_eq!((o.seen_before, o.fills_hole), (100, false));
        assert_eq!(
            spans(&t),
            vec![
                (1, 51, 10, 10, 1),
                (51, 101, 10, 30, 2),
                (101, 201, 30, 30, 1),
                (201, 251, 20, 30, 2),
                (251, 301, 20, 20, 1)
            ]
        );
    }

    #[test]
    fn karn_rule_skips_retransmitted_ranges() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        t.transmit(1, 101, 20);
        assert_eq!(t.ack(101, 30), None);
        t.transmit(101, 201, 40);
        assert_eq!(t.ack(201, 45), Some(5));
        assert_eq!(t.ack(201, 50), None, "duplicate ACK gives no sample");
    }

    #[test]
    fn gaps_count_holes_and_acked_but_unseen() {
        let mut t = ByteTimeline::default();
        t.transmit(1, 101, 10);
        t.transmit(201, 301, 20);
        t.ack(401, 30);
        assert_eq!(t.gaps(), (2, 200));
    }

    #[test]
    fn search_from_any_hint_finds_what_a_full_search_finds() {
        let mut t = ByteTimeline::default();
        // Spans of varied length with holes between some of them.
        let mut pos = 1;
        for i in 0..200i64 {
            let len = 1 + (i * 7919) % 37;
            t.transmit(pos, pos + len, i);
            pos += len + if i % 5 == 0 { 3 } else { 0 };
        }
        let n = t.spans().len();
        for p in -2..pos + 3 {
            let want = t.first_ending_after(p);
            for start in [0, 1, n / 3, n / 2, n - 1, n, n + 5] {
                let mut hint = start;
                assert_eq!(t.index_from(p, &mut hint), want, "pos {p} hint {start}");
                assert_eq!(hint, want);
                let mut hint = start;
                assert_eq!(t.span_from(p, &mut hint), t.span_at(p));
            }
        }
    }
}
