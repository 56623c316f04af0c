//! The report's lists, kept as the join goes (a `JoinSink`): the costliest reads and
//! exchanges, the sends held longest, and the counts around them. Bounded: a list holds what
//! it shows, whatever the run's length. The page's lists come from the same `TopK`, so the
//! text and the page order equal costs alike (the earlier first).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use netblame_correlate::{Exchange, JoinEnd, JoinSink, ReadBlame, SendTiming, SocketCall};

use crate::detail;

/// The `k` items of largest key offered, ties going to the one offered first (the lower `seq`).
#[derive(Debug, Clone)]
pub struct TopK<K: Ord, T> {
    k: usize,
    /// The worst kept on top: it is the one a better offer replaces.
    heap: BinaryHeap<Entry<K, T>>,
}

#[derive(Debug, Clone)]
struct Entry<K, T> {
    key: K,
    seq: u64,
    item: T,
}

impl<K: Ord, T> Entry<K, T> {
    /// Best first: the larger key, then the earlier offer.
    fn rank(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| self.seq.cmp(&other.seq))
    }
}

impl<K: Ord, T> PartialEq for Entry<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl<K: Ord, T> Eq for Entry<K, T> {}
impl<K: Ord, T> PartialOrd for Entry<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, T> Ord for Entry<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

impl<K: Ord, T> TopK<K, T> {
    pub fn new(k: usize) -> TopK<K, T> {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers an item; `item` is made only if it is kept.
    pub fn offer(&mut self, key: K, seq: u64, item: impl FnOnce() -> T) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() == self.k {
            let worst = self.heap.peek().expect("k > 0 entries");
            if (&key, std::cmp::Reverse(seq)) <= (&worst.key, std::cmp::Reverse(worst.seq)) {
                return;
            }
            self.heap.pop();
        }
        self.heap.push(Entry {
            key,
            seq,
            item: item(),
        });
    }

    /// The items kept, best first.
    pub fn into_sorted(self) -> Vec<T> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| e.item)
            .collect()
    }
}

/// Exchanges the report lists.
pub const LISTED_EXCHANGES: usize = 10;
/// Reads the report lists.
pub const LISTED_READS: usize = 10;
/// Held sends the report lists.
pub const LISTED_HELD_SENDS: usize = 5;

/// What the text report shows of the join's results, kept as they come.
#[derive(Debug, Clone)]
pub struct ReportLists {
    /// The costliest reads that returned data (`detail::read_cost`).
    slow_reads: TopK<i64, ReadBlame>,
    /// The longest exchanges.
    slow_exchanges: TopK<i64, Exchange>,
    pub exchanges: u64,
    /// Sends held in the kernel (a `held_by`), longest first.
    held_sends: TopK<Option<i64>, SendTiming>,
    pub held_send_count: u64,
    /// Time every send spent blocked in its call.
    pub send_blocked_ns: i64,
    /// The largest causality violation (a lower bound on the clocks' offset).
    pub worst_causality_ns: i64,
    /// The join's end: the connects and what did not join.
    pub end: JoinEnd,
}

impl Default for ReportLists {
    fn default() -> Self {
        ReportLists {
            slow_reads: TopK::new(LISTED_READS),
            slow_exchanges: TopK::new(LISTED_EXCHANGES),
            exchanges: 0,
            held_sends: TopK::new(LISTED_HELD_SENDS),
            held_send_count: 0,
            send_blocked_ns: 0,
            worst_causality_ns: 0,
            end: JoinEnd::default(),
        }
    }
}

impl<'a> JoinSink<'a> for ReportLists {
    fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
        if detail::has_data(r) {
            let cost = detail::read_cost(calls, r);
            self.slow_reads.offer(cost, r.call as u64, || r.clone());
        }
        if let Some(v) = r.causality_violation_ns {
            self.worst_causality_ns = self.worst_causality_ns.max(v);
        }
    }

    fn send(&mut self, _: &'a [SocketCall], s: &SendTiming) {
        self.send_blocked_ns = self.send_blocked_ns.saturating_add(s.send_blocked_ns);
        if s.held_by.is_some() {
            self.held_send_count += 1;
            self.held_sends
                .offer(s.wire_delay_ns, s.call as u64, || s.clone());
        }
    }

    fn exchange(&mut self, _: &'a [SocketCall], e: &Exchange) {
        self.slow_exchanges
            .offer(e.end_ns - e.start_ns, self.exchanges, || e.clone());
        self.exchanges += 1;
    }

    fn end(&mut self, _: &'a [SocketCall], end: &JoinEnd) {
        self.end = end.clone();
    }
}

/// The lists once the join is done, best first.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub slow_reads: Vec<ReadBlame>,
    pub slow_exchanges: Vec<Exchange>,
    pub exchanges: u64,
    pub held_sends: Vec<SendTiming>,
    pub held_send_count: u64,
    pub send_blocked_ns: i64,
    pub worst_causality_ns: i64,
    pub end: JoinEnd,
}

impl ReportLists {
    pub fn finish(self) -> Lists {
        Lists {
            slow_reads: self.slow_reads.into_sorted(),
            slow_exchanges: self.slow_exchanges.into_sorted(),
            exchanges: self.exchanges,
            held_sends: self.held_sends.into_sorted(),
            held_send_count: self.held_send_count,
            send_blocked_ns: self.send_blocked_ns,
            worst_causality_ns: self.worst_causality_ns,
            end: self.end,
        }
    }

    /// The lists of results held whole (`netblame_correlate::replay`).
    pub fn of(calls: &[SocketCall], b: &netblame_correlate::Blame) -> Lists {
        let mut lists = ReportLists::default();
        netblame_correlate::replay(calls, b, &mut lists);
        lists.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::TopK;

    #[test]
    fn top_k_keeps_the_largest_and_the_first_of_equals() {
        let mut top = TopK::new(3);
        for (seq, key) in [5, 1, 9, 5, 9, 7, 5].into_iter().enumerate() {
            top.offer(key, seq as u64, || (key, seq));
        }
        assert_eq!(top.into_sorted(), vec![(9, 2), (9, 4), (7, 5)]);
        let mut ties = TopK::new(2);
        for seq in 0..5u64 {
            ties.offer(0, seq, || seq);
        }
        assert_eq!(ties.into_sorted(), vec![0, 1]);
        let mut none = TopK::new(0);
        none.offer(1, 0, || 1);
        assert!(none.into_sorted().is_empty());
    }
}
