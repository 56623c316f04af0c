//! netblame's analysis, free of I/O: decoding captured frames into checked TCP/UDP segments,
//! following every connection's byte stream to classify each segment (new, retransmitted,
//! out of order, probe, ...), and keeping per byte range the capture times the timing model
//! (`docs/timing-model.md`) needs, so that joining socket events to packets is a lookup. Packets
//! come from any source: a capture file, a live capture, or bytes built in a test.

#![deny(unsafe_code)]

pub mod blame;
pub mod decode;
pub mod exchange;
pub mod flows;
pub mod join;
pub mod request;
pub mod seq;
pub mod suite;
pub mod summary;
pub mod timeline;

pub use blame::{
    align_kernel_seqs, blame, join, peer_direction, Api, Blame, CallKind, ConnectTiming, HeldBy,
    HeldRequest, HeldWrite, ReadBlame, ReadTiming, SendTiming, SocketCall, Verdict, WaitWindow,
};
pub use decode::{decode_frame, DecodeError, Segment, TcpHeader, Transport};
pub use exchange::{exchanges, Exchange, ExchangeParts};
pub use flows::{
    Analysis, Analyzer, AnalyzerConfig, CaptureQuality, Direction, DirectionStats, Endpoint, Flow,
    PacketClass, PacketRecord, Protocol, TurnHead,
};
pub use join::{replay, JoinEnd, JoinSink};
pub use request::{name_request, AppProtocol, RequestName};
pub use seq::{SeqNumber, SeqUnwrapper};
pub use suite::{
    test_rows, Cause, Measure, Outcome, Phase, RunDiff, TestActivity, TestPhase, TestRow,
};
pub use summary::{split_test, RunSummary, SummarySink, Totals};
pub use timeline::{ByteTimeline, RangeTimes, Span, TxOutcome};

#[cfg(test)]
mod tests;
