//! Writing captures: classic pcap with nanosecond timestamps, and pcapng (one interface with
//! nanosecond resolution, an interface statistics block with the drop counters at the end).

use std::io::{self, Write};

/// Where a live capture puts its packets.
pub trait PacketSink {
    /// Appends one packet captured at `ts_ns`; `orig_len` is its length on the wire.
    fn write_packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()>;
    /// Records the drop counters (pcapng keeps them) and flushes.
    fn finish(&mut self, kernel_drops: Option<u64>, end_ts_ns: i64) -> io::Result<()>;
    /// Hands every packet written so far to the file, so that a capture killed later (even
    /// with SIGKILL) leaves them readable.
    fn flush(&mut self) -> io::Result<()>;
}

/// Writes a classic pcap stream (nanosecond magic, little-endian) to any writer.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header for `link_type` (a LINKTYPE_* value).
    pub fn new(mut out: W, link_type: u16, snaplen: u32) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        header[16..20].copy_from_slice(&snaplen.to_le_bytes());
        header[20..24].copy_from_slice(&u32::from(link_type).to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Appends one record; `data` is cut to the snaplen, `orig_len` is the length on the wire.
    pub fn write_packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = data.len().min(self.snaplen as usize);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(ts_ns.div_euclid(1_000_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&(ts_ns.rem_euclid(1_000_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&orig_len.max(caplen as u32).to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&data[..caplen])
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> PacketSink for PcapWriter<W> {
    fn write_packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        PcapWriter::write_packet(self, ts_ns, data, orig_len)
    }

    fn finish(&mut self, _kernel_drops: Option<u64>, _end_ts_ns: i64) -> io::Result<()> {
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes pcapng: a section header, one interface (nanosecond timestamps), enhanced packet
/// blocks, and at the end an interface statistics block with the drop counter.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    /// Per interface id.
    snaplens: Vec<u32>,
}

fn block(out: &mut impl Write, block_type: u32, body: &[u8]) -> io::Result<()> {
    let pad = (4 - body.len() % 4) % 4;
    let len = (12 + body.len() + pad) as u32;
    out.write_all(&block_type.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&[0u8; 3][..pad])?;
    out.write_all(&len.to_le_bytes())
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - value.len() % 4) % 4, 0);
}

/// An interface description block with nanosecond timestamps.
fn idb(out: &mut impl Write, link_type: u16, snaplen: u32, iface: &str) -> io::Result<()> {
    let mut idb = Vec::new();
    idb.extend_from_slice(&link_type.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&snaplen.to_le_bytes());
    option(&mut idb, 2, iface.as_bytes()); // if_name
    option(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
    option(&mut idb, 0, &[]);
    block(out, 1, &idb)
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and the interface description for `link_type`.
    pub fn new(mut out: W, link_type: u16, snaplen: u32, iface: &str) -> io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        option(
            &mut shb,
            4,
            concat!("netblame ", env!("CARGO_PKG_VERSION")).as_bytes(),
        ); // shb_userappl
        option(&mut shb, 0, &[]);
        block(&mut out, 0x0a0d_0d0a, &shb)?;
        idb(&mut out, link_type, snaplen, iface)?;
        Ok(PcapngWriter {
            out,
            snaplens: vec![snaplen],
        })
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Declares another interface (a capture file can hold frames of several link types);
    /// returns its id for [`PcapngWriter::write_enhanced`]. The first one, made by `new`, is 0.
    pub fn add_interface(&mut self, link_type: u16, snaplen: u32, iface: &str) -> io::Result<u32> {
        self.snaplens.push(snaplen);
        idb(&mut self.out, link_type, snaplen, iface)?;
        Ok(self.snaplens.len() as u32 - 1)
    }

    /// Appends an enhanced packet block on interface `iface` with an `opt_comment` per comment
    /// (Wireshark shows them as `frame.comment`).
    pub fn write_enhanced(
        &mut self,
        iface: u32,
        ts_ns: i64,
        data: &[u8],
        orig_len: u32,
        comments: &[&str],
    ) -> io::Result<()> {
        let snaplen = self.snaplens.get(iface as usize).copied().unwrap_or(0);
        let caplen = data.len().min(snaplen as usize);
        let ts = ts_ns.max(0) as u64;
        let mut head = [0u8; 20];
        head[0..4].copy_from_slice(&iface.to_le_bytes());
        head[4..8].copy_from_slice(&((ts >> 32) as u32).to_le_bytes());
        head[8..12].copy_from_slice(&(ts as u32).to_le_bytes());
        head[12..16].copy_from_slice(&(caplen as u32).to_le_bytes());
        head[16..20].copy_from_slice(&orig_len.max(caplen as u32).to_le_bytes());
        let pad = (4 - caplen % 4) % 4;
        let mut options = Vec::new();
        for c in comments {
            // An option's length is 16 bits: a longer comment is cut at a character boundary.
            let mut end = c.len().min(u16::MAX as usize - 3);
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            option(&mut options, 1, &c.as_bytes()[..end]); // opt_comment
        }
        if !options.is_empty() {
            option(&mut options, 0, &[]);
        }
        let len = (12 + 20 + caplen + pad + options.len()) as u32;
        self.out.write_all(&6u32.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&head)?;
        self.out.write_all(&data[..caplen])?;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.out.write_all(&options)?;
        self.out.write_all(&len.to_le_bytes())
    }
}

impl<W: Write> PacketSink for PcapngWriter<W> {
    fn write_packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        self.write_enhanced(0, ts_ns, data, orig_len, &[])
    }

    fn finish(&mut self, kernel_drops: Option<u64>, end_ts_ns: i64) -> io::Result<()> {
        if let Some(drops) = kernel_drops {
            let ts = end_ts_ns.max(0) as u64;
            let mut isb = Vec::new();
            isb.extend_from_slice(&0u32.to_le_bytes());
            isb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            isb.extend_from_slice(&(ts as u32).to_le_bytes());
            option(&mut isb, 5, &drops.to_le_bytes()); // isb_ifdrop
            option(&mut isb, 0, &[]);
            block(&mut self.out, 5, &isb)?;
        }
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
