//! pytest's test phases, as netblame's pytest plugin records them, joined with the calls made
//! in them: each phase's own (wall) time, its outcome, the part of it spent in socket calls and
//! the part outside them. Tests with no socket call are rows too. `diff` compares two runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::blame::{ConnectTiming, ReadBlame, SocketCall, Verdict};
use crate::exchange::Exchange;
use crate::summary::{split_test, Totals};

/// A phase of a pytest test (pytest's `when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Setup,
    Call,
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Setup, Phase::Call, Phase::Teardown];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Call => "call",
            Phase::Teardown => "teardown",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A phase's outcome, as pytest's terminal summary words it (a failure outside the test's
/// call is an `error`; `xfailed`/`xpassed` are tests marked xfail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    Error,
    XFailed,
    XPassed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Passed,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::Error,
        Outcome::XFailed,
        Outcome::XPassed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
            Outcome::XFailed => "xfailed",
            Outcome::XPassed => "xpassed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One recorded test phase (checked: `start_ns <= end_ns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPhase {
    /// pytest's node id, as in `PYTEST_CURRENT_TEST`.
    pub test: Arc<str>,
    pub phase: Phase,
    pub outcome: Outcome,
    /// CLOCK_REALTIME, ns, like the socket calls.
    pub start_ns: i64,
    pub end_ns: i64,
    pub pid: u32,
    /// The pytest-xdist worker that ran it (`gw0`, ...).
    pub worker: Option<Arc<str>>,
}

/// What the plugin recorded of a test phase (summed when it ran more than once, e.g. reruns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The phase's own time (the sum, when it ran more than once).
    pub wall_ns: i64,
    /// The last run's outcome.
    pub outcome: Outcome,
    pub pid: u32,
    pub runs: u32,
}

/// One test phase: its recorded time and outcome, and the sums of its socket calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRow<'a> {
    pub test: &'a str,
    /// `None` for a tag that names no phase (`NETBLAME_TAG`).
    pub phase: Option<&'a str>,
    pub totals: Totals,
    /// `None` without a record: a run made without the plugin, or calls tagged by hand.
    pub recorded: Option<Recorded>,
    /// Time in socket calls (reads from the wait they were timed over, sends, connects; a
    /// server's idle reads left out), overlaps counted once, within the phase when recorded.
    pub socket_ns: i64,
    /// Requests (exchanges) per peer address, most first.
    pub peers: Vec<(SocketAddr, u64)>,
}

impl<'a> TestRow<'a> {
    /// A row with these sums and nothing recorded or joined yet.
    fn new(test: &'a str, phase: Option<&'a str>, totals: Totals) -> Self {
        TestRow {
            test,
            phase,
            totals,
            recorded: None,
            socket_ns: 0,
            peers: Vec::new(),
        }
    }

    /// Wall time not spent waiting in socket calls.
    pub fn outside_ns(&self) -> Option<i64> {
        self.recorded.map(|r| (r.wall_ns - self.socket_ns).max(0))
    }

    pub fn wall_ns(&self) -> Option<i64> {
        self.recorded.map(|r| r.wall_ns)
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.recorded.map(|r| r.outcome)
    }
}

/// Where a row goes in name order: by test, then setup, call, teardown, then untagged phases.
fn phase_rank(phase: Option<&str>) -> (u8, Option<&str>) {
    match phase.and_then(Phase::parse) {
        Some(p) => (p as u8, None),
        None => (3, phase),
    }
}

/// The intervals of one tag's calls, and which tag the last call had (consecutive calls mostly
/// share one).
#[derive(Debug, Default)]
struct Intervals<'a> {
    index: HashMap<&'a str, usize>,
    spans: Vec<Vec<(i64, i64)>>,
    last: Option<(&'a str, usize)>,
}

impl<'a> Intervals<'a> {
    fn add(&mut self, c: &'a SocketCall, from: i64, to: i64) {
        let Some(tag) = c.test.as_deref() else {
            return;
        };
        let i = match self.last {
            Some((l, i)) if std::ptr::eq(l, tag) => i,
            _ => *self.index.entry(tag).or_insert_with(|| {
                self.spans.push(Vec::new());
                self.spans.len() - 1
            }),
        };
        self.last = Some((tag, i));
        let (from, to) = (from, to.max(from));
        // A call that overlaps or touches the tag's last interval extends it: calls come
        // mostly in time order, so a tag's calls made one after another keep one interval
        // (the union, which is all `covered` measures, is the same).
        match self.spans[i].last_mut() {
            Some(last) if from <= last.1 && to >= last.0 => {
                *last = (last.0.min(from), last.1.max(to));
            }
            _ => self.spans[i].push((from, to)),
        }
    }
}

/// What the test rows need of the joined calls, taken as the join makes them: each tag's time
/// in socket calls (as intervals) and its requests per peer.
#[derive(Debug, Default)]
pub struct TestActivity<'a> {
    spans: Intervals<'a>,
    peers: HashMap<&'a str, HashMap<SocketAddr, u64>>,
}

impl<'a> TestActivity<'a> {
    pub(crate) fn read(&mut self, c: &'a SocketCall, r: &ReadBlame) {
        // A server's idle read waited on its client, not on the test.
        if r.verdict != Verdict::Idle {
            self.spans
                .add(c, r.wait.map_or(c.t_call_ns, |w| w.call_ns), c.t_return_ns);
        }
    }

    pub(crate) fn send(&mut self, c: &'a SocketCall) {
        self.spans.add(c, c.t_call_ns, c.t_return_ns);
    }

    pub(crate) fn connect(&mut self, c: &'a SocketCall, t: &ConnectTiming) {
        self.spans.add(c, c.t_call_ns, t.done_ns);
    }

    pub(crate) fn exchange(&mut self, calls: &'a [SocketCall], e: &Exchange) {
        if let (Some(tag), Some(peer)) = (
            calls[e.first_send].test.as_deref(),
            calls[e.open_call].peer(),
        ) {
            *self.peers.entry(tag).or_default().entry(peer).or_default() += 1;
        }
    }
}

/// Length of the union of `spans` within `[lo, hi)`.
fn covered(spans: &mut [(i64, i64)], lo: i64, hi: i64) -> i64 {
    // Stable sort: it merges the runs already in order (a tag's reads, then its sends), so the
    // usual input costs little more than a pass.
    spans.sort();
    let (mut sum, mut reach) = (0i64, i64::MIN);
    for &(a, b) in spans.iter() {
        let (a, b) = (a.max(lo).max(reach), b.min(hi));
        if b > a {
            sum = sum.saturating_add(b - a);
            reach = b;
        }
    }
    sum
}

/// The rows of a run: every recorded phase and every tag its calls carry, by test name and
/// phase order. `by_test` is `summary::Summaries::by_test` of the same calls.
pub fn test_rows<'a>(
    activity: TestActivity<'a>,
    by_test: &std::collections::BTreeMap<(&'a str, Option<&'a str>), Totals>,
    phases: &'a [TestPhase],
) -> Vec<TestRow<'a>> {
    let mut rows: HashMap<(&'a str, Option<&'a str>), TestRow<'a>> = by_test
        .iter()
        .map(|(&(test, phase), t)| ((test, phase), TestRow::new(test, phase, t.clone())))
        .collect();
    for p in phases {
        let key = (&*p.test, Some(p.phase.as_str()));
        let row = rows
            .entry(key)
            .or_insert_with(|| TestRow::new(key.0, key.1, Totals::default()));
        let wall = p.end_ns - p.start_ns;
        row.recorded = Some(match row.recorded {
            None => Recorded {
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                wall_ns: wall,
                outcome: p.outcome,
                pid: p.pid,
                runs: 1,
            },
            Some(r) => Recorded {
                start_ns: r.start_ns.min(p.start_ns),
                end_ns: r.end_ns.max(p.end_ns),
                wall_ns: r.wall_ns.saturating_add(wall),
                outcome: if p.start_ns >= r.start_ns {
                    p.outcome
                } else {
                    r.outcome
                },
                pid: r.pid,
                runs: r.runs + 1,
            },
        });
    }
    let TestActivity { mut spans, peers } = activity;
    // Tags to rows ("test (phase)" -> (test, phase)); a phase's tag may be missing.
    for (tag, i) in &spans.index {
        if let (Some(test), phase) = split_test(Some(tag)) {
            if let Some(row) = rows.get_mut(&(test, phase)) {
                let (lo, hi) = row
                    .recorded
                    .map_or((i64::MIN, i64::MAX), |r| (r.start_ns, r.end_ns));
                row.socket_ns = row
                    .socket_ns
                    .saturating_add(covered(&mut spans.spans[*i], lo, hi));
            }
        }
    }
    for (tag, by_peer) in peers {
        if let (Some(test), phase) = split_test(Some(tag)) {
            if let Some(row) = rows.get_mut(&(test, phase)) {
                row.peers.extend(by_peer);
            }
        }
    }
    let mut rows: Vec<TestRow> = rows.into_values().collect();
    for r in &mut rows {
        r.peers
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    rows.sort_by(|a, b| (a.test, phase_rank(a.phase)).cmp(&(b.test, phase_rank(b.phase))));
    rows
}

/// What a test's time changed by, per cause: the read causes of the timing model, and the
/// time outside socket calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    Loss,
    Peer,
    Stall,
    Program,
    Wakeup,
    Outside,
}

impl Cause {
    pub const ALL: [Cause; 6] = [
        Cause::Loss,
        Cause::Peer,
        Cause::Stall,
        Cause::Program,
        Cause::Wakeup,
        Cause::Outside,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Loss => "loss",
            Cause::Peer => "peer",
            Cause::Stall => "stall",
            Cause::Program => "program",
            Cause::Wakeup => "wakeup",
            Cause::Outside => "outside sockets",
        }
    }

    /// A name fit for a column or a JSON key (`outside`).
    pub fn key(self) -> &'static str {
        match self {
            Cause::Outside => "outside",
            c => c.as_str(),
        }
    }

    /// The cause's time in a row. On wall time the program's part is dispatch only: data that
    /// waited in the buffer waited while the test was outside socket calls, and is counted
    /// there, so that the parts add up to the wall time.
    fn of(self, r: &TestRow, measure: Measure) -> i64 {
        let t = &r.totals;
        match self {
            Cause::Loss => t.loss_delay_ns,
            Cause::Peer => t.peer_wait_ns,
            Cause::Stall => t.stall_ns,
            Cause::Program if measure == Measure::Wall => t.dispatch_ns,
            Cause::Program => t.program_ns(),
            Cause::Wakeup => t.wakeup_ns,
            Cause::Outside => r.outside_ns().unwrap_or(0),
        }
    }
}

/// What two runs are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Each phase's own time (both runs have the plugin's records).
    Wall,
    /// Time in socket calls (a run without records: made before the plugin, or with it off).
    Socket,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Wall => "wall",
            Measure::Socket => "socket",
        }
    }
}

/// A test phase in one run, as the diff shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub ns: i64,
    pub outcome: Option<Outcome>,
}

/// A test phase found in both runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub test: String,
    pub phase: Option<String>,
    pub a: Side,
    pub b: Side,
    /// Per cause, B minus A, the largest change first (changes of zero left out).
    pub causes: Vec<(Cause, i64)>,
}

impl Change {
    pub fn delta_ns(&self) -> i64 {
        self.b.ns - self.a.ns
    }
}

/// Two runs compared test by test (node id and phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDiff {
    pub measure: Measure,
    /// Which runs lack the plugin's records (A, B): the reason for `Measure::Socket`.
    pub without_records: (bool, bool),
    pub min_change_ns: i64,
    /// Slower by more than `min_change_ns`, most first.
    pub slower: Vec<Change>,
    /// Faster by more than `min_change_ns`, most first.
    pub faster: Vec<Change>,
    /// In both runs with another outcome, in name order.
    pub outcome_changed: Vec<Change>,
    /// Only in B, or only in A: (test, phase, time, outcome), in name order.
    pub added: Vec<(String, Option<String>, Side)>,
    pub removed: Vec<(String, Option<String>, Side)>,
    /// Test phases in both runs.
    pub matched: usize,
    /// The largest slow-down of any test in both runs, listed or not (`None`: none got slower).
    pub largest_slowdown_ns: Option<i64>,
}

/// Compares run A with run B. A run has records when its plugin ran (`has_records`); without
/// them both are compared on time in socket calls.
pub fn diff(
    a: &[TestRow],
    a_has_records: bool,
    b: &[TestRow],
    b_has_records: bool,
    min_change_ns: i64,
) -> RunDiff {
    let measure = if a_has_records && b_has_records {
        Measure::Wall
    } else {
        Measure::Socket
    };
    let side = |r: &TestRow| Side {
        ns: match measure {
            Measure::Wall => r.wall_ns().unwrap_or(r.socket_ns),
            Measure::Socket => r.socket_ns,
        },
        outcome: r.outcome(),
    };
    let owned = |r: &TestRow| (r.test.to_string(), r.phase.map(str::to_string));
    let in_b: HashMap<(&str, Option<&str>), &TestRow> =
        b.iter().map(|r| ((r.test, r.phase), r)).collect();
    let in_a: HashMap<(&str, Option<&str>), &TestRow> =
        a.iter().map(|r| ((r.test, r.phase), r)).collect();
    let mut d = RunDiff {
        measure,
        without_records: (!a_has_records, !b_has_records),
        min_change_ns,
        slower: Vec::new(),
        faster: Vec::new(),
        outcome_changed: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        matched: 0,
        largest_slowdown_ns: None,
    };
    for ra in a {
        let Some(rb) = in_b.get(&(ra.test, ra.phase)) else {
            let (test, phase) = owned(ra);
            d.removed.push((test, phase, side(ra)));
            continue;
        };
        d.matched += 1;
        let mut causes: Vec<(Cause, i64)> = Cause::ALL
            .into_iter()
            .filter(|&c| c != Cause::Outside || measure == Measure::Wall)
            .map(|c| (c, c.of(rb, measure) - c.of(ra, measure)))
            .filter(|&(_, n)| n != 0)
            .collect();
        causes.sort_by_key(|&(c, n)| (std::cmp::Reverse(n.unsigned_abs()), c));
        let (test, phase) = owned(ra);
        let change = Change {
            test,
            phase,
            a: side(ra),
            b: side(rb),
            causes,
        };
        let delta = change.delta_ns();
        if delta > 0 {
            d.largest_slowdown_ns = d.largest_slowdown_ns.max(Some(delta));
        }
        // An outcome changed only where both runs recorded one.
        if let (Some(a), Some(b)) = (change.a.outcome, change.b.outcome) {
            if a != b {
                d.outcome_changed.push(change.clone());
            }
        }
        if delta > min_change_ns {
            d.slower.push(change);
        } else if delta < -min_change_ns {
            d.faster.push(change);
        }
    }
    for rb in b {
        if !in_a.contains_key(&(rb.test, rb.phase)) {
            let (test, phase) = owned(rb);
            d.added.push((test, phase, side(rb)));
        }
    }
    d.slower.sort_by_key(|c| std::cmp::Reverse(c.delta_ns()));
    d.faster.sort_by_key(Change::delta_ns);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(test: &'a str, phase: &'a str, wall: Option<i64>, peer: i64) -> TestRow<'a> {
        TestRow {
            test,
            phase: Some(phase),
            totals: Totals {
                peer_wait_ns: peer,
                ..Totals::default()
            },
            recorded: wall.map(|w| Recorded {
                start_ns: 0,
                end_ns: w,
                wall_ns: w,
                outcome: Outcome::Passed,
                pid: 1,
                runs: 1,
            }),
            socket_ns: peer,
            peers: Vec::new(),
        }
    }

    #[test]
    fn union_counts_overlaps_once_and_clips_to_the_phase() {
        let mut spans = vec![(10, 20), (0, 5), (15, 30), (40, 50)];
        assert_eq!(covered(&mut spans, i64::MIN, i64::MAX), 5 + 20 + 10);
        assert_eq!(covered(&mut spans, 3, 45), 2 + 20 + 5);
        assert_eq!(covered(&mut [], 0, 10), 0);
    }

    #[test]
    fn names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("PASSED"), None);
    }

    #[test]
    fn diff_sorts_slower_first_and_splits_causes() {
        let a = [
            row("t::a", "call", Some(100), 50),
            row("t::b", "call", Some(100), 0),
            row("t::gone", "call", Some(1), 0),
        ];
        let mut b = vec![
            row("t::a", "call", Some(400), 300),
            row("t::b", "call", Some(20), 0),
            row("t::new", "call", Some(1), 0),
        ];
        b[1].recorded.as_mut().unwrap().outcome = Outcome::Failed;
        let d = diff(&a, true, &b, true, 10);
        assert_eq!(d.measure, Measure::Wall);
        assert_eq!(d.slower.len(), 1);
        assert_eq!(d.slower[0].delta_ns(), 300);
        assert_eq!(
            d.slower[0].causes,
            vec![(Cause::Peer, 250), (Cause::Outside, 50)]
        );
        assert_eq!(d.faster[0].test, "t::b");
        assert_eq!(d.outcome_changed[0].b.outcome, Some(Outcome::Failed));
        assert_eq!(d.added[0].0, "t::new");
        assert_eq!(d.removed[0].0, "t::gone");
        assert_eq!(d.matched, 2);
        assert_eq!(d.largest_slowdown_ns, Some(300));
    }

    #[test]
    fn runs_without_records_compare_socket_time() {
        let a = [row("t::a", "call", None, 50)];
        let b = [row("t::a", "call", Some(1000), 80)];
        let d = diff(&a, false, &b, true, 10);
        assert_eq!(d.measure, Measure::Socket);
        assert_eq!(d.without_records, (true, false));
        assert_eq!(d.slower[0].delta_ns(), 30);
        assert!(d.slower[0].causes.iter().all(|&(c, _)| c != Cause::Outside));
        assert!(
            d.outcome_changed.is_empty(),
            "no outcome recorded in A: none changed"
        );
    }
}
