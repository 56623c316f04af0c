//! Where the join's results go (`crate::blame::join`): sinks, each fed every result once, as
//! the join makes it, so that nothing downstream needs them held whole. `Blame` is the sink
//! that keeps them all (for the pictures and the tables, until they are sinks too); the sums
//! (`crate::summary::SummarySink`) and the report's top lists keep only what they show.

use std::net::SocketAddr;

use crate::blame::{Blame, ConnectTiming, ReadBlame, SendTiming, SocketCall};
use crate::exchange::Exchange;

/// What the join knows only at its end: the connects (a non-blocking one is done at a later
/// call), and what did not join. Its size follows the connections, not the calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinEnd {
    /// TCP connects the program made, in call order.
    pub connects: Vec<ConnectTiming>,
    /// Streams recorded by the program but not found in the capture (Unix sockets never are;
    /// these are connections outside the filter or interface, or before the capture started).
    pub unmatched_streams: Vec<(u32, u64, Option<SocketAddr>, Option<SocketAddr>)>,
    /// Flows in the capture no recorded socket joined (ids): programs the interposer cannot see
    /// (static or Go binaries), processes started without it, or traffic of other programs.
    pub unmatched_flows: Vec<u32>,
    /// Reads more than 100 µs before their bytes were captured.
    pub causality_violations: usize,
}

/// A consumer of the join's results. Each is handed over once, by reference; `calls` is the
/// slice the results index.
pub trait JoinSink<'a> {
    /// A read, in call order.
    fn read(&mut self, _calls: &'a [SocketCall], _r: &ReadBlame) {}
    /// A send, in call order.
    fn send(&mut self, _calls: &'a [SocketCall], _s: &SendTiming) {}
    /// An exchange, in the order exchanges end.
    fn exchange(&mut self, _calls: &'a [SocketCall], _e: &Exchange) {}
    /// The join is done.
    fn end(&mut self, _calls: &'a [SocketCall], _end: &JoinEnd) {}
}

impl<'a, S: JoinSink<'a> + ?Sized> JoinSink<'a> for &mut S {
    fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
        (**self).read(calls, r)
    }
    fn send(&mut self, calls: &'a [SocketCall], s: &SendTiming) {
        (**self).send(calls, s)
    }
    fn exchange(&mut self, calls: &'a [SocketCall], e: &Exchange) {
        (**self).exchange(calls, e)
    }
    fn end(&mut self, calls: &'a [SocketCall], end: &JoinEnd) {
        (**self).end(calls, end)
    }
}

/// No sink.
impl JoinSink<'_> for () {}

/// A sink that may not be wanted (the whole results, only when a picture or table needs them).
impl<'a, S: JoinSink<'a>> JoinSink<'a> for Option<S> {
    fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
        if let Some(s) = self {
            s.read(calls, r)
        }
    }
    fn send(&mut self, calls: &'a [SocketCall], s: &SendTiming) {
        if let Some(x) = self {
            x.send(calls, s)
        }
    }
    fn exchange(&mut self, calls: &'a [SocketCall], e: &Exchange) {
        if let Some(s) = self {
            s.exchange(calls, e)
        }
    }
    fn end(&mut self, calls: &'a [SocketCall], end: &JoinEnd) {
        if let Some(s) = self {
            s.end(calls, end)
        }
    }
}

/// Several sinks fed the same results, in order.
macro_rules! tuple_sink {
    ($($s:ident),+) => {
        impl<'a, $($s: JoinSink<'a>),+> JoinSink<'a> for ($($s,)+) {
            #[allow(non_snake_case)]
            fn read(&mut self, calls: &'a [SocketCall], r: &ReadBlame) {
                let ($($s,)+) = self;
                $($s.read(calls, r);)+
            }
            #[allow(non_snake_case)]
            fn send(&mut self, calls: &'a [SocketCall], s: &SendTiming) {
                let ($($s,)+) = self;
                $($s.send(calls, s);)+
            }
            #[allow(non_snake_case)]
            fn exchange(&mut self, calls: &'a [SocketCall], e: &Exchange) {
                let ($($s,)+) = self;
                $($s.exchange(calls, e);)+
            }
            #[allow(non_snake_case)]
            fn end(&mut self, calls: &'a [SocketCall], end: &JoinEnd) {
                let ($($s,)+) = self;
                $($s.end(calls, end);)+
            }
        }
    };
}
tuple_sink!(A, B);
tuple_sink!(A, B, C);

/// Every result kept.
impl<'a> JoinSink<'a> for Blame {
    fn read(&mut self, _: &'a [SocketCall], r: &ReadBlame) {
        self.reads.push(r.clone());
    }
    fn send(&mut self, _: &'a [SocketCall], s: &SendTiming) {
        self.sends.push(s.clone());
    }
    fn exchange(&mut self, _: &'a [SocketCall], e: &Exchange) {
        self.exchanges.push(e.clone());
    }
    fn end(&mut self, _: &'a [SocketCall], end: &JoinEnd) {
        self.connects = end.connects.clone();
        self.unmatched_streams = end.unmatched_streams.clone();
        self.unmatched_flows = end.unmatched_flows.clone();
        self.causality_violations = end.causality_violations;
    }
}

/// Feeds results held whole to `sink` as the join would have: reads, sends, exchanges, then the
/// end. For sinks that do not depend on the order reads, sends and exchanges interleave (sums,
/// top lists), this is the batch path the streaming one must equal.
pub fn replay<'a>(calls: &'a [SocketCall], b: &Blame, sink: &mut impl JoinSink<'a>) {
    for r in &b.reads {
        sink.read(calls, r);
    }
    for s in &b.sends {
        sink.send(calls, s);
    }
    for e in &b.exchanges {
        sink.exchange(calls, e);
    }
    sink.end(
        calls,
        &JoinEnd {
            connects: b.connects.clone(),
            unmatched_streams: b.unmatched_streams.clone(),
            unmatched_flows: b.unmatched_flows.clone(),
            causality_violations: b.causality_violations,
        },
    );
}
