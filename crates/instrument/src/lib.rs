//! The program side of netblame: the socket-event model and its on-disk log. A log is one file
//! per process (and per exec): a versioned header, then fixed-size little-endian records that a
//! reader can always recover up to the last complete one, even after the writer was killed. This
//! crate defines the format, reads logs (binary, or JSON Lines written by hand in any language),
//! and offers recording wrappers around `std::net` sockets; the LD_PRELOAD interposer
//! (`netblame-preload`) writes the same format for unmodified programs.

#![deny(unsafe_code)]

pub mod clock;
pub mod event;
pub mod phases;
pub mod record;
pub mod wrap;
pub mod writer;

pub use event::{
    read_binary, read_binary_log, read_events, read_jsonl, read_jsonl_from, Addrs, Event,
    LogContents, LogError, LostCalls,
};
pub use phases::{read_test_phases, PhaseLog, PhaseRecord};
pub use record::{Call, Kind, Proto, Recorder};
pub use wrap::{RecordedTcpStream, RecordedUdpSocket};
pub use writer::{EventLog, LogFile};

#[cfg(test)]
mod tests;
