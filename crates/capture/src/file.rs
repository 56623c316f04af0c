//! Streaming reader for pcap and pcapng capture files.
//!
//! Why not libpcap for reading: libpcap copies every record through `fread`, cannot say at which
//! byte offset a file is corrupt, and does not expose pcapng interface statistics (kernel drops).
//! This reader parses from a fixed 1 MiB window over the file, so memory stays flat whatever the
//! file size and the per-packet cost is a few bounds checks.

use std::error::Error;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest record a capture may contain; larger length fields mean corruption.
pub const MAX_RECORD_LEN: u32 = 256 * 1024;
/// pcapng blocks are bounded too (a packet block is the record plus 32 bytes of framing; other
/// blocks carry options only).
const MAX_BLOCK_LEN: u32 = MAX_RECORD_LEN + 4096;
const WINDOW: usize = 1 << 20;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

/// The container format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Classic libpcap format with microsecond timestamps.
    PcapMicro,
    /// Classic libpcap format with nanosecond timestamps.
    PcapNano,
    /// pcapng.
    PcapNg,
}

/// One captured frame, borrowed from the reader's window until the next call.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub ts_ns: i64,
    /// LINKTYPE_* value of the interface the frame was captured on.
    pub link_type: u16,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// The captured bytes (possibly fewer than `orig_len`).
    pub data: &'a [u8],
    /// Byte offset of the record in the file.
    pub file_offset: u64,
}

/// Why a capture file could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    Io { path: PathBuf, source: io::Error },
    /// The file holds no bytes.
    Empty { path: PathBuf },
    /// The file does not start with a pcap or pcapng magic number.
    NotACapture { path: PathBuf, magic: [u8; 4] },
    /// The file is a capture, but of a version this reader does not know.
    UnsupportedVersion {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    /// A length or field is impossible at this offset.
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { path, .. } => write!(f, "{}: cannot read", path.display()),
            ReadError::Empty { path } => write!(f, "{}: empty file, not a capture", path.display()),
            ReadError::NotACapture { path, magic } => write!(
                f,
                "{}: not a pcap or pcapng file (starts with {:02x} {:02x} {:02x} {:02x})",
                path.display(),
                magic[0],
                magic[1],
                magic[2],
                magic[3]
            ),
            ReadError::UnsupportedVersion { path, major, minor } => write!(
                f,
                "{}: unsupported capture format version {major}.{minor}",
                path.display()
            ),
            ReadError::Corrupt { path, offset, what } => {
                write!(
                    f,
                    "{}: corrupt at byte offset {offset}: {what}",
                    path.display()
                )
            }
        }
    }
}

impl Error for ReadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What the reader learnt about the file besides its packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Records read.
    pub records: u64,
    /// Records whose captured length is shorter than the frame (small snaplen).
    pub sliced_records: u64,
    /// The file ended inside a record at this offset (a capture that was killed).
    pub truncated_at: Option<u64>,
    /// Packets the kernel or interface dropped, from pcapng interface statistics blocks.
    pub kernel_drops: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    /// Timestamp units per second, expressed as a conversion to nanoseconds.
    resolution: TsResolution,
    offset_s: i64,
}

#[derive(Debug, Clone, Copy)]
enum TsResolution {
    Pow10(u8),
    Pow2(u8),
}

impl TsResolution {
    fn to_ns(self, units: u64) -> i64 {
        let ns: u128 = match self {
            TsResolution::Pow10(n) if n <= 9 => units as u128 * 10u128.pow(9 - n as u32),
            TsResolution::Pow10(n) => 10u128
                .checked_pow(n as u32 - 9)
                .map_or(0, |d| units as u128 / d),
            TsResolution::Pow2(n) => ((units as u128) * 1_000_000_000u128) >> n.min(127),
        };
        ns.min(i64::MAX as u128) as i64
    }
}

#[derive(Debug)]
enum Layout {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link_type: u16,
        snaplen: u32,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// A streaming reader of one pcap or pcapng file.
#[derive(Debug)]
pub struct CaptureReader<R> {
    input: R,
    path: PathBuf,
    buf: Vec<u8>,
    /// Window `buf[start..end]` holds unread bytes; `base` is the file offset of `buf[0]`.
    start: usize,
    end: usize,
    base: u64,
    eof: bool,
    layout: Layout,
    format: FileFormat,
    stats: FileStats,
    drops_by_interface: Vec<u64>,
}

impl CaptureReader<File> {
    /// Opens a capture file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ReadError::Io {
            path: path.into(),
            source,
        })?;
        Self::new(file, path)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header from `input`; `path` names the file in errors.
    pub fn new(input: R, path: impl Into<PathBuf>) -> Result<Self, ReadError> {
        let mut reader = CaptureReader {
            input,
            path: path.into(),
            buf: vec![0; WINDOW],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            layout: Layout::Pcap {
                big_endian: false,
                nanos: false,
                link_type: 0,
                snaplen: 0,
            },
            format: FileFormat::PcapMicro,
            stats: FileStats::default(),
            drops_by_interface: Vec::new(),
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// The file's container format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// What was learnt so far; complete once `next_packet` returned `None`.
    pub fn stats(&self) -> &FileStats {
        &self.stats
    }

    /// The link type of the first interface (pcap has exactly one).
    pub fn link_type(&self) -> Option<u16> {
        match &self.layout {
            Layout::Pcap { link_type, .. } => Some(*link_type),
            Layout::PcapNg { interfaces, .. } => interfaces.first().map(|i| i.link_type),
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn io_err(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> ReadError {
        ReadError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    /// Makes at least `n` unread bytes available; returns how many are (fewer only at EOF).
    fn fill(&mut self, n: usize) -> Result<usize, ReadError> {
        if self.end - self.start >= n || self.eof {
            return Ok(self.end - self.start);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.start < n {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(self.end - self.start)
    }

    /// The file ends inside the record at `offset`: note it and stop.
    fn cut_short<T>(&mut self, offset: u64) -> Option<T> {
        self.stats.truncated_at = Some(offset);
        self.start = self.end;
        None
    }

    fn u16_at(&self, at: usize, big: bool) -> u16 {
        let b = [self.buf[at], self.buf[at + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize, big: bool) -> u32 {
        let b = [
            self.buf[at],
            self.buf[at + 1],
            self.buf[at + 2],
            self.buf[at + 3],
        ];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn read_file_header(&mut self) -> Result<(), ReadError> {
        let have = self.fill(24)?;
        if have == 0 {
            return Err(ReadError::Empty {
                path: self.path.clone(),
            });
        }
        let mut magic = [0u8; 4];
        magic[..have.min(4)].copy_from_slice(&self.buf[..have.min(4)]);
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        let pcap = [(PCAP_MAGIC_US, false), (PCAP_MAGIC_NS, true)];
        for (m, nanos) in pcap {
            if le == m || be == m {
                let big = be == m;
                if have < 24 {
                    return Err(self.corrupt(0, "file ends inside the pcap file header"));
                }
                let (major, minor) = (self.u16_at(4, big), self.u16_at(6, big));
                if major != 2 {
                    return Err(ReadError::UnsupportedVersion {
                        path: self.path.clone(),
                        major,
                        minor,
                    });
                }
                let snaplen = self.u32_at(16, big);
                // The upper bits of the link type field carry FCS information.
                let link_type = (self.u32_at(20, big) & 0xffff) as u16;
                self.layout = Layout::Pcap {
                    big_endian: big,
                    nanos,
                    link_type,
                    snaplen,
                };
                self.format = if nanos {
                    FileFormat::PcapNano
                } else {
                    FileFormat::PcapMicro
                };
                self.start = 24;
                return Ok(());
            }
        }
        if le == PCAPNG_SHB {
            self.format = FileFormat::PcapNg;
            self.layout = Layout::PcapNg {
                big_endian: false,
                interfaces: Vec::new(),
            };
            // The section header is parsed as the first block.
            return Ok(());
        }
        Err(ReadError::NotACapture {
            path: self.path.clone(),
            magic,
        })
    }

    /// Returns the next packet, `None` at the end of the file (or at a truncated last record,
    /// which is noted in [`FileStats::truncated_at`]).
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, ReadError> {
        match self.layout {
            Layout::Pcap {
                big_endian,
                nanos,
                link_type,
                snaplen,
            } => self.next_pcap(big_endian, nanos, link_type, snaplen),
            Layout::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(
        &mut self,
        big: bool,
        nanos: bool,
        link_type: u16,
        snaplen: u32,
    ) -> Result<Option<RawPacket<'_>>, ReadError> {
        let offset = self.offset();
        let have = self.fill(16)?;
        if have == 0 {
            return Ok(None);
        }
        if have < 16 {
            return Ok(self.cut_short(offset));
        }
        let h = self.start;
        let secs = self.u32_at(h, big) as i64;
        let frac = self.u32_at(h + 4, big) as i64;
        let caplen = self.u32_at(h + 8, big);
        let orig_len = self.u32_at(h + 12, big);
        let limit = if snaplen == 0 {
            MAX_RECORD_LEN
        } else {
            snaplen.min(MAX_RECORD_LEN)
        };
        if caplen > limit {
            return Err(self.corrupt(
                offset,
                format!("record length {caplen} exceeds the snaplen ({snaplen}) or 256 KiB"),
            ));
        }
        let total = 16 + caplen as usize;
        if self.fill(total)? < total {
            return Ok(self.cut_short(offset));
        }
        let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        let data_start = self.start + 16;
        self.start += total;
        self.stats.records += 1;
        if caplen < orig_len {
            self.stats.sliced_records += 1;
        }
        Ok(Some(RawPacket {
            ts_ns,
            link_type,
            orig_len: orig_len.max(caplen),
            data: &self.buf[data_start..data_start + caplen as usize],
            file_offset: offset,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<RawPacket<'_>>, ReadError> {
        loop {
            let offset = self.offset();
            let have = self.fill(12)?;
            if have == 0 {
                return Ok(None);
            }
            if have < 12 {
                return Ok(self.cut_short(offset));
            }
            let h = self.start;
            let raw_type = u32::from_le_bytes(self.buf[h..h + 4].try_into().expect("4 bytes"));
            if raw_type == PCAPNG_SHB {
                self.read_section_header(offset)?;
                continue;
            }
            let big = match &self.layout {
                Layout::PcapNg { big_endian, .. } => *big_endian,
                Layout::Pcap { .. } => unreachable!("pcapng path"),
            };
            let block_type = self.u32_at(h, big);
            let block_len = self.u32_at(h + 4, big);
            if block_len < 12 || block_len % 4 != 0 || block_len > MAX_BLOCK_LEN {
                return Err(self.corrupt(
                    offset,
                    format!("pcapng block length {block_len} is invalid or over 256 KiB"),
                ));
            }
            let total = block_len as usize;
            if self.fill(total)? < total {
                return Ok(self.cut_short(offset));
            }
            if self.u32_at(h + total - 4, big) != block_len {
                return Err(self.corrupt(offset, "pcapng block's trailing length does not match"));
            }
            let body = h + 8..h + total - 4;
            self.start += total;
            match block_type {
                1 => self.read_interface(offset, body, big)?,
                5 => self.read_interface_stats(body, big),
                2 | 3 | 6 => {
                    if let Some((ts_ns, link_type, orig_len, data)) =
                        self.packet_block(offset, block_type, body, big)?
                    {
                        self.stats.records += 1;
                        if (data.len() as u32) < orig_len {
                            self.stats.sliced_records += 1;
                        }
                        return Ok(Some(RawPacket {
                            ts_ns,
                            link_type,
                            orig_len,
                            data: &self.buf[data],
                            file_offset: offset,
                        }));
                    }
                }
                _ => {} // name resolution, custom and unknown blocks carry no packets
            }
        }
    }

    fn read_section_header(&mut self, offset: u64) -> Result<(), ReadError> {
        let have = self.fill(28)?;
        if have < 28 {
            self.cut_short::<()>(offset);
            return Ok(());
        }
        let h = self.start;
        let bom = u32::from_le_bytes(self.buf[h + 8..h + 12].try_into().expect("4 bytes"));
        let big = if bom == PCAPNG_BYTE_ORDER_MAGIC {
            false
        } else if bom.swap_bytes() == PCAPNG_BYTE_ORDER_MAGIC {
            true
        } else {
            return Err(self.corrupt(offset + 8, "pcapng byte-order magic is invalid"));
        };
        let (major, minor) = (self.u16_at(h + 12, big), self.u16_at(h + 14, big));
        if major != 1 {
            return Err(ReadError::UnsupportedVersion {
                path: self.path.clone(),
                major,
                minor,
            });
        }
        let block_len = self.u32_at(h + 4, big);
        if block_len < 28 || block_len % 4 != 0 || block_len > MAX_BLOCK_LEN {
            return Err(self.corrupt(
                offset,
                format!("section header length {block_len} is invalid"),
            ));
        }
        if self.fill(block_len as usize)? < block_len as usize {
            self.cut_short::<()>(offset);
            return Ok(());
        }
        self.start += block_len as usize;
        // A new section starts a new set of interfaces.
        self.layout = Layout::PcapNg {
            big_endian: big,
            interfaces: Vec::new(),
        };
        self.drops_by_interface.clear();
        Ok(())
    }

    fn read_interface(
        &mut self,
        offset: u64,
        body: std::ops::Range<usize>,
        big: bool,
    ) -> Result<(), ReadError> {
        if body.len() < 8 {
            return Err(self.corrupt(offset, "interface description block too short"));
        }
        let link_type = self.u16_at(body.start, big);
        let snaplen = self.u32_at(body.start + 4, big);
        let mut iface = Interface {
            link_type,
            snaplen,
            resolution: TsResolution::Pow10(6),
            offset_s: 0,
        };
        for (code, value) in self.options(body.start + 8..body.end, big) {
            match (code, value.len()) {
                (9, 1..) => {
                    let r = self.buf[value.start];
                    iface.resolution = if r & 0x80 != 0 {
                        TsResolution::Pow2(r & 0x7f)
                    } else {
                        TsResolution::Pow10(r)
                    };
                }
                (14, 8..) => {
                    let lo = self.u32_at(value.start, big) as u64;
                    let hi = self.u32_at(value.start + 4, big) as u64;
                    let v = if big {
                        (lo << 32) | hi
                    } else {
                        (hi << 32) | lo
                    };
                    iface.offset_s = v as i64;
                }
                _ => {}
            }
        }
        if let Layout::PcapNg { interfaces, .. } = &mut self.layout {
            interfaces.push(iface);
        }
        self.drops_by_interface.push(0);
        Ok(())
    }

    fn read_interface_stats(&mut self, body: std::ops::Range<usize>, big: bool) {
        if body.len() < 12 {
            return;
        }
        let iface = self.u32_at(body.start, big) as usize;
        let mut drops = None;
        for (code, value) in self.options(body.start + 12..body.end, big) {
            // isb_ifdrop (5) and isb_osdrop (7): dropped by the interface and by the OS.
            if (code == 5 || code == 7) && value.len() >= 8 {
                let lo = self.u32_at(value.start, big) as u64;
                let hi = self.u32_at(value.start + 4, big) as u64;
                let v = if big {
                    (lo << 32) | hi
                } else {
                    (hi << 32) | lo
                };
                *drops.get_or_insert(0) += v;
            }
        }
        if let (Some(d), Some(slot)) = (drops, self.drops_by_interface.get_mut(iface)) {
            // Statistics blocks are cumulative: the last one per interface wins.
            *slot = d;
            self.stats.kernel_drops = Some(self.drops_by_interface.iter().sum());
        }
    }

    /// Lists the options in `range` as (code, value range) pairs, stopping at opt_endofopt or at
    /// the first malformed option.
    fn options(
        &self,
        range: std::ops::Range<usize>,
        big: bool,
    ) -> Vec<(u16, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut at = range.start;
        while at + 4 <= range.end {
            let code = self.u16_at(at, big);
            let len = self.u16_at(at + 2, big) as usize;
            if code == 0 || at + 4 + len > range.end {
                break;
            }
            out.push((code, at + 4..at + 4 + len));
            at += 4 + len.div_ceil(4) * 4;
        }
        out
    }

    #[allow(clippy::type_complexity)]
    fn packet_block(
        &self,
        offset: u64,
        block_type: u32,
        body: std::ops::Range<usize>,
        big: bool,
    ) -> Result<Option<(i64, u16, u32, std::ops::Range<usize>)>, ReadError> {
        let interfaces = match &self.layout {
            Layout::PcapNg { interfaces, .. } => interfaces,
            Layout::Pcap { .. } => unreachable!("pcapng path"),
        };
        let b = body.start;
        let (iface_id, ts_units, caplen, orig_len, data_start) = match block_type {
            6 => {
                if body.len() < 20 {
                    return Err(self.corrupt(offset, "enhanced packet block too short"));
                }
                let ts = ((self.u32_at(b + 4, big) as u64) << 32) | self.u32_at(b + 8, big) as u64;
                (
                    self.u32_at(b, big),
                    Some(ts),
                    self.u32_at(b + 12, big),
                    self.u32_at(b + 16, big),
                    b + 20,
                )
            }
            2 => {
                if body.len() < 20 {
                    return Err(self.corrupt(offset, "packet block too short"));
                }
                let ts = ((self.u32_at(b + 4, big) as u64) << 32) | self.u32_at(b + 8, big) as u64;
                (
                    self.u16_at(b, big) as u32,
                    Some(ts),
                    self.u32_at(b + 12, big),
                    self.u32_at(b + 16, big),
                    b + 20,
                )
            }
            _ => {
                // Simple packet block: interface 0, no timestamp, captured length implied.
                if body.len() < 4 {
                    return Err(self.corrupt(offset, "simple packet block too short"));
                }
                let orig = self.u32_at(b, big);
                let snap = interfaces.first().map_or(MAX_RECORD_LEN, |i| i.snaplen);
                let snap = if snap == 0 { MAX_RECORD_LEN } else { snap };
                let cap = orig.min(snap).min((body.len() - 4) as u32);
                (0, None, cap, orig, b + 4)
            }
        };
        let Some(iface) = interfaces.get(iface_id as usize).copied() else {
            return Err(self.corrupt(
                offset,
                format!("packet names undeclared interface {iface_id}"),
            ));
        };
        let limit = if iface.snaplen == 0 {
            MAX_RECORD_LEN
        } else {
            iface.snaplen.min(MAX_RECORD_LEN)
        };
        if caplen > limit || data_start + caplen as usize > body.end {
            return Err(self.corrupt(
                offset,
                format!(
                    "record length {caplen} exceeds the snaplen ({}) or the block",
                    iface.snaplen
                ),
            ));
        }
        let ts_ns = ts_units.map_or(0, |u| {
            iface
                .resolution
                .to_ns(u)
                .saturating_add(iface.offset_s.saturating_mul(1_000_000_000))
        });
        Ok(Some((
            ts_ns,
            iface.link_type,
            orig_len.max(caplen),
            data_start..data_start + caplen as usize,
        )))
    }
}
