//! Capture I/O for netblame: everything that reads or writes packets lives here, so the analysis
//! crates stay pure. Capture files (pcap with micro- or nanosecond timestamps, and pcapng) are
//! read by a streaming parser that keeps nanosecond precision, reports corruption with the byte
//! offset where it starts, and recovers every complete record of a file cut short by a killed
//! capture. Classic pcap is written with nanosecond timestamps.

mod file;
mod write;

pub use file::{CaptureReader, FileFormat, FileStats, RawPacket, ReadError, MAX_RECORD_LEN};
pub use write::PcapWriter;

#[cfg(test)]
mod tests;
