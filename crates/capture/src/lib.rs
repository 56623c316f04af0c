//! Capture I/O for netblame: everything that reads or writes packets lives here, so the analysis
//! crates stay pure. Capture files (pcap with micro- or nanosecond timestamps, and pcapng) are
//! read by a streaming parser that keeps nanosecond precision, reports corruption with the byte
//! offset where it starts, and recovers every complete record of a file cut short by a killed
//! capture. Classic pcap is written with nanosecond timestamps, pcapng with the kernel's drop
//! counters. Live capture goes through libpcap (the `pcap` crate) in immediate mode.

mod file;
mod live;
mod write;

pub use file::{CaptureReader, FileFormat, FileStats, RawPacket, ReadError, MAX_RECORD_LEN};
pub use live::{CaptureStats, LiveCapture, LiveConfig, LiveError, DEFAULT_SNAPLEN};
pub use write::{PacketSink, PcapWriter, PcapngWriter};

#[cfg(test)]
mod tests;
