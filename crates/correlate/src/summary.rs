//! Sums of the joined calls by pytest test (and phase) and by connection: what the report's
//! "per test" and "per connection" sections and the `tests` table show.

use std::collections::{BTreeMap, HashMap};

use crate::blame::{Blame, ConnectTiming, ReadBlame, SocketCall, Verdict};

/// Splits a recorded test tag, `"tests/a.py::test_x (call)"`, into node id and phase.
pub fn split_test(tag: Option<&str>) -> (Option<&str>, Option<&str>) {
    match tag {
        None => (None, None),
        Some(t) => match t.rsplit_once(" (") {
            Some((id, phase)) if phase.ends_with(')') => {
                (Some(id), Some(phase.trim_end_matches(')')))
            }
            _ => (Some(t), None),
        },
    }
}

/// Read and send time of a group of calls, split by cause (docs/timing-model.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Reads that returned data (end-of-stream, errors and peeks are left out).
    pub reads: u64,
    pub read_bytes: u64,
    /// Time spent inside those reads.
    pub read_time_ns: i64,
    pub loss_delay_ns: i64,
    pub peer_wait_ns: i64,
    pub buffer_wait_ns: i64,
    /// After readiness waits: the program's event loop ran other work first.
    pub dispatch_ns: i64,
    pub wakeup_ns: i64,
    /// Nagle + delayed-ACK holds (taken out of the peer's wait).
    pub stall_ns: i64,
    pub retransmitted_bytes: u64,
    /// Reads of a server waiting for the next request (verdict `idle`), and that wait: left
    /// out of every sum above.
    pub idle_reads: u64,
    pub idle_ns: i64,
    /// TCP connects, their time (call to connection up), and the part lost to SYN
    /// retransmissions.
    pub connects: u64,
    pub connect_ns: i64,
    pub connect_syn_loss_ns: i64,
    pub sends: u64,
    pub send_bytes: u64,
    pub send_blocked_ns: i64,
    /// Request -> answer exchanges (crate::exchange), their time, and the peer's part of it.
    pub requests: u64,
    pub request_ns: i64,
    pub request_peer_ns: i64,
    /// The verdict of the read that lost the most time to its cause, and that time.
    pub worst: Option<(Verdict, i64)>,
    /// Verdict counts.
    pub verdicts: VerdictCounts,
}

/// How many reads got each verdict: a counter per verdict (a sum over a million reads must
/// not cost a map lookup each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounts([u64; Verdict::ALL.len()]);

impl VerdictCounts {
    pub fn add(&mut self, v: Verdict, n: u64) {
        self.0[v as usize] += n;
    }

    pub fn get(&self, v: Verdict) -> u64 {
        self.0[v as usize]
    }

    /// The verdicts counted at least once, with their counts, in verdict order.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL
            .into_iter()
            .map(|v| (v, self.get(v)))
            .filter(|&(_, n)| n > 0)
    }
}

// Sums saturate: a damaged or hand-written log may hold absurd durations, and a sum must not
// wrap into a negative time.
impl Totals {
    /// Adds one read (reads with no data are ignored).
    pub fn add_read(&mut self, c: &SocketCall, r: &ReadBlame) {
        if r.verdict == Verdict::NoData {
            return;
        }
        if r.verdict == Verdict::Idle {
            self.idle_reads += 1;
            self.idle_ns = self.idle_ns.saturating_add(r.timing.idle_ns);
            return;
        }
        self.reads += 1;
        self.read_bytes = self.read_bytes.saturating_add(c.bytes.max(0) as u64);
        self.read_time_ns = self
            .read_time_ns
            .saturating_add(c.t_return_ns - c.t_call_ns);
        let t = &r.timing;
        self.loss_delay_ns = self.loss_delay_ns.saturating_add(t.loss_delay_ns);
        self.peer_wait_ns = self.peer_wait_ns.saturating_add(t.peer_wait_ns);
        self.buffer_wait_ns = self.buffer_wait_ns.saturating_add(t.buffer_wait_ns);
        self.dispatch_ns = self.dispatch_ns.saturating_add(t.dispatch_ns);
        self.wakeup_ns = self.wakeup_ns.saturating_add(t.wakeup_ns);
        self.stall_ns = self.stall_ns.saturating_add(t.stall_ns);
        self.retransmitted_bytes = self
            .retransmitted_bytes
            .saturating_add(t.retransmitted_bytes);
        self.verdicts.add(r.verdict, 1);
        let cost = match r.verdict {
            Verdict::Loss => t.loss_delay_ns,
            Verdict::PeerSlow => t.peer_wait_ns,
            Verdict::AppLate => t.program_ns(),
            Verdict::WakeupLate => t.wakeup_ns,
            Verdict::Stall => t.stall_ns,
            _ => 0,
        };
        self.consider_worst(r.verdict, cost);
    }

    /// Keeps the verdict that lost the most. Ties (no cause reached the threshold) go to the
    /// verdict that says more: a read that could not be analysed outranks an `ok` one, whatever
    /// the order of the calls.
    fn consider_worst(&mut self, verdict: Verdict, cost: i64) {
        let says_more = |v: Verdict| v != Verdict::Ok;
        let better = self
            .worst
            .is_none_or(|(w_verdict, w)| (cost, says_more(verdict)) > (w, says_more(w_verdict)));
        if better {
            self.worst = Some((verdict, cost));
        }
    }

    /// Adds another group's sums.
    pub fn merge(&mut self, o: Totals) {
        self.reads = self.reads.saturating_add(o.reads);
        self.read_bytes = self.read_bytes.saturating_add(o.read_bytes);
        self.read_time_ns = self.read_time_ns.saturating_add(o.read_time_ns);
        self.loss_delay_ns = self.loss_delay_ns.saturating_add(o.loss_delay_ns);
        self.peer_wait_ns = self.peer_wait_ns.saturating_add(o.peer_wait_ns);
        self.buffer_wait_ns = self.buffer_wait_ns.saturating_add(o.buffer_wait_ns);
        self.dispatch_ns = self.dispatch_ns.saturating_add(o.dispatch_ns);
        self.wakeup_ns = self.wakeup_ns.saturating_add(o.wakeup_ns);
        self.stall_ns = self.stall_ns.saturating_add(o.stall_ns);
        self.idle_reads += o.idle_reads;
        self.idle_ns = self.idle_ns.saturating_add(o.idle_ns);
        self.connects += o.connects;
        self.connect_ns = self.connect_ns.saturating_add(o.connect_ns);
        self.connect_syn_loss_ns = self
            .connect_syn_loss_ns
            .saturating_add(o.connect_syn_loss_ns);
        self.retransmitted_bytes = self
            .retransmitted_bytes
            .saturating_add(o.retransmitted_bytes);
        self.sends = self.sends.saturating_add(o.sends);
        self.send_bytes = self.send_bytes.saturating_add(o.send_bytes);
        self.send_blocked_ns = self.send_blocked_ns.saturating_add(o.send_blocked_ns);
        self.requests += o.requests;
        self.request_ns = self.request_ns.saturating_add(o.request_ns);
        self.request_peer_ns = self.request_peer_ns.saturating_add(o.request_peer_ns);
        for (v, n) in o.verdicts.iter() {
            self.verdicts.add(v, n);
        }
        if let Some((v, cost)) = o.worst {
            self.consider_worst(v, cost);
        }
    }

    pub fn add_connect(&mut self, c: &SocketCall, t: &ConnectTiming) {
        self.connects += 1;
        self.connect_ns = self.connect_ns.saturating_add(t.duration_ns(c));
        self.connect_syn_loss_ns = self.connect_syn_loss_ns.saturating_add(t.syn_loss_ns);
    }

    pub fn add_exchange(&mut self, e: &crate::exchange::Exchange) {
        self.requests += 1;
        self.request_ns = self.request_ns.saturating_add(e.end_ns - e.start_ns);
        self.request_peer_ns = self.request_peer_ns.saturating_add(e.parts.peer_ns);
    }

    pub fn add_send(&mut self, c: &SocketCall) {
        self.sends += 1;
        self.send_bytes = self.send_bytes.saturating_add(c.bytes.max(0) as u64);
        self.send_blocked_ns = self
            .send_blocked_ns
            .saturating_add(c.t_return_ns - c.t_call_ns);
    }

    /// Read time with a cause: the sum of the five parts.
    pub fn blamed_ns(&self) -> i64 {
        self.loss_delay_ns
            .saturating_add(self.peer_wait_ns)
            .saturating_add(self.stall_ns)
            .saturating_add(self.program_ns())
            .saturating_add(self.wakeup_ns)
    }

    /// The program's time: data that waited in the buffer, and dispatch after waits.
    pub fn program_ns(&self) -> i64 {
        self.buffer_wait_ns.saturating_add(self.dispatch_ns)
    }

    pub fn worst_verdict(&self) -> Option<Verdict> {
        self.worst.map(|(v, _)| v)
    }
}

/// Sums by whole tag: a hash of the string, and nothing at all while consecutive calls share
/// one tag (the common case).
#[derive(Debug, Default)]
struct TagSums<'a> {
    index: HashMap<&'a str, usize>,
    sums: Vec<(&'a str, Totals)>,
    last: Option<(&'a str, usize)>,
}

impl<'a> TagSums<'a> {
    fn slot(&mut self, c: &'a SocketCall) -> Option<&mut Totals> {
        let tag = c.test.as_deref()?;
        let i = match self.last {
            Some((l, i)) if std::ptr::eq(l, tag) => i,
            _ => *self.index.entry(tag).or_insert_with(|| {
                self.sums.push((tag, Totals::default()));
                self.sums.len() - 1
            }),
        };
        self.last = Some((tag, i));
        Some(&mut self.sums[i].1)
    }
}

/// Sums by capture flow, kept for a run of calls on one flow before the map is touched:
/// consecutive calls are mostly on one connection.
#[derive(Debug, Default)]
struct FlowSums {
    map: BTreeMap<Option<u32>, Totals>,
    run: Option<(Option<u32>, Totals)>,
}

impl FlowSums {
    fn slot(&mut self, flow: Option<u32>) -> &mut Totals {
        if self.run.as_ref().is_some_and(|(f, _)| *f != flow) {
            self.flush();
        }
        &mut self.run.get_or_insert_with(|| (flow, Totals::default())).1
    }

    fn flush(&mut self) {
        if let Some((flow, t)) = self.run.take() {
            self.map.entry(flow).or_default().merge(t);
        }
    }

    fn finish(mut self) -> BTreeMap<Option<u32>, Totals> {
        self.flush();
        self.map
    }
}

/// The sums the report shows: of every call, per test, per connection.
#[derive(Debug, Clone, Default)]
pub struct Summaries<'a> {
    pub overall: Totals,
    /// Per (test node id, phase), in name order; calls made outside any test are left out.
    pub by_test: BTreeMap<(&'a str, Option<&'a str>), Totals>,
    /// Per capture flow (`None`: connections not found in the capture).
    pub by_flow: BTreeMap<Option<u32>, Totals>,
}

/// What the reports show of a run besides the join itself, made once for the text, the page
/// and the tables: the sums, and a row per test phase (`crate::suite::test_rows`).
#[derive(Debug, Clone, Default)]
pub struct RunSummary<'a> {
    pub sums: Summaries<'a>,
    pub tests: Vec<crate::suite::TestRow<'a>>,
}

impl<'a> RunSummary<'a> {
    /// Sums joined calls held whole and makes the test rows (with pytest's phases, if
    /// recorded): `SummarySink` fed by `crate::join::replay`.
    pub fn new(
        calls: &'a [SocketCall],
        blame: &Blame,
        phases: &'a [crate::suite::TestPhase],
    ) -> RunSummary<'a> {
        let mut sink = SummarySink::default();
        crate::join::replay(calls, blame, &mut sink);
        sink.finish(phases)
    }
}

/// The three sums (of every call, per test, per connection) and what the test rows need, fed
/// by the join as it goes. Its size follows the tests and connections, not the calls.
#[derive(Debug, Default)]
pub struct SummarySink<'a> {
    overall: Totals,
    tests: TagSums<'a>,
    flows: FlowSums,
    activity: crate::suite::TestActivity<'a>,
}

impl<'a> crate::join::JoinSink<'a> for SummarySink<'a> {
    fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
        let c = &calls[r.call];
        self.overall.add_read(c, r);
        self.flows.slot(r.flow_id).add_read(c, r);
        if let Some(t) = self.tests.slot(c) {
            t.add_read(c, r);
        }
        self.activity.read(c, r);
    }

    fn send(&mut self, calls: &'a [SocketCall], s: &crate::blame::SendTiming) {
        let c = &calls[s.call];
        self.overall.add_send(c);
        self.flows.slot(s.flow_id).add_send(c);
        if let Some(t) = self.tests.slot(c) {
            t.add_send(c);
        }
        self.activity.send(c);
    }

    fn exchange(&mut self, calls: &'a [SocketCall], e: &crate::exchange::Exchange) {
        let c = &calls[e.first_send];
        self.overall.add_exchange(e);
        self.flows.slot(Some(e.flow_id)).add_exchange(e);
        if let Some(sum) = self.tests.slot(c) {
            sum.add_exchange(e);
        }
        self.activity.exchange(calls, e);
    }

    fn end(&mut self, calls: &'a [SocketCall], end: &crate::join::JoinEnd) {
        for t in &end.connects {
            let c = &calls[t.call];
            self.overall.add_connect(c, t);
            self.flows.slot(t.flow_id).add_connect(c, t);
            if let Some(sum) = self.tests.slot(c) {
                sum.add_connect(c, t);
            }
            self.activity.connect(c, t);
        }
    }
}

impl<'a> SummarySink<'a> {
    /// The sums alone.
    pub fn sums(self) -> Summaries<'a> {
        self.split().0
    }

    /// The sums and the test rows (with pytest's phases, if recorded).
    pub fn finish(self, phases: &'a [crate::suite::TestPhase]) -> RunSummary<'a> {
        let (sums, activity) = self.split();
        let tests = crate::suite::test_rows(activity, &sums.by_test, phases);
        RunSummary { sums, tests }
    }

    fn split(self) -> (Summaries<'a>, crate::suite::TestActivity<'a>) {
        // Split the few distinct tags into test and phase, and order them.
        let mut by_test: BTreeMap<(&str, Option<&str>), Totals> = BTreeMap::new();
        for (tag, t) in self.tests.sums {
            if let (Some(test), phase) = split_test(Some(tag)) {
                by_test.entry((test, phase)).or_default().merge(t);
            }
        }
        let sums = Summaries {
            overall: self.overall,
            by_test,
            by_flow: self.flows.finish(),
        };
        (sums, self.activity)
    }
}

/// The three sums of joined calls held whole.
pub fn summarize<'a>(calls: &'a [SocketCall], blame: &Blame) -> Summaries<'a> {
    let mut sink = SummarySink::default();
    crate::join::replay(calls, blame, &mut sink);
    sink.sums()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tags_split_into_node_id_and_phase() {
        assert_eq!(
            split_test(Some("tests/t.py::test_a[x (1)] (call)")),
            (Some("tests/t.py::test_a[x (1)]"), Some("call"))
        );
        assert_eq!(split_test(Some("demo")), (Some("demo"), None));
        assert_eq!(split_test(None), (None, None));
    }

    #[test]
    fn verdict_counts_index_every_verdict_in_order() {
        let mut counts = VerdictCounts::default();
        for (i, v) in Verdict::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i, "Verdict::ALL is in declaration order");
            counts.add(v, i as u64 + 1);
        }
        let listed: Vec<(Verdict, u64)> = counts.iter().collect();
        assert_eq!(listed.len(), Verdict::ALL.len());
        assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
        let last = Verdict::ALL[Verdict::ALL.len() - 1];
        assert_eq!(counts.get(last), Verdict::ALL.len() as u64);
    }

    #[test]
    fn worst_verdict_does_not_depend_on_call_order() {
        use crate::blame::{CallKind, ReadTiming};
        let call = SocketCall {
            kind: CallKind::Recv,
            pid: 1,
            tid: 1,
            fd: 3,
            stream: 1,
            t_call_ns: 0,
            t_return_ns: 10,
            bytes: 10,
            offset: 0,
            seq: None,
            peek: false,
            test: None,
            addrs: None,
            tcp: true,
            nonblocking: false,
            api: crate::blame::Api::Recv,
            ready: 0,
            errno: 0,
        };
        let read = |verdict, peer_wait_ns| ReadBlame {
            verdict,
            timing: ReadTiming {
                peer_wait_ns,
                ..ReadTiming::default()
            },
            ..ReadBlame::unjoined(0, verdict)
        };
        let reads = [
            read(Verdict::Ok, 0),
            read(Verdict::NotCaptured, 0),
            read(Verdict::PeerSlow, 5_000_000),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut t = Totals::default();
            for i in order {
                t.add_read(&call, &reads[i]);
            }
            assert_eq!(t.worst_verdict(), Some(Verdict::PeerSlow));
        }
        for order in [[0, 1], [1, 0]] {
            let mut t = Totals::default();
            for i in order {
                t.add_read(&call, &reads[i]);
            }
            assert_eq!(t.worst_verdict(), Some(Verdict::NotCaptured));
        }
    }
}
