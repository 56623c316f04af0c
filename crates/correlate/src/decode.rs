//! Frame decoding: link layer, IP and TCP/UDP headers into a checked [`Segment`].
//!
//! Captures are usually header-only (a small snaplen), so payload lengths come from the IP
//! header, never from the captured length. TSO/GSO super-segments larger than the MSS are normal;
//! an IPv4 total length of 0 (TSO) or an IPv6 jumbogram falls back to the frame's wire length.

use std::error::Error;
use std::fmt;
use std::net::IpAddr;

use etherparse::{EtherType, LaxIpSlice, LenSource, TcpOptionElement, TcpSlice, UdpHeaderSlice};

use crate::seq::SeqNumber;

/// LINKTYPE_* values this decoder understands.
pub mod link_type {
    /// BSD loopback: a 4-byte address family in host byte order.
    pub const NULL: u16 = 0;
    /// Ethernet (with 802.1Q and 802.1ad VLAN tags).
    pub const ETHERNET: u16 = 1;
    /// Raw IP (LINKTYPE_RAW).
    pub const RAW: u16 = 101;
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: u16 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any`, older libpcap).
    pub const LINUX_SLL: u16 = 113;
    /// Raw IPv4.
    pub const IPV4: u16 = 228;
    /// Raw IPv6.
    pub const IPV6: u16 = 229;
    /// Linux cooked capture v2 (`tcpdump -i any` with libpcap ≥ 1.10).
    pub const LINUX_SLL2: u16 = 276;
    /// DLT_RAW as numbered on some BSDs.
    pub const RAW_BSD12: u16 = 12;
    /// DLT_RAW as numbered on OpenBSD.
    pub const RAW_BSD14: u16 = 14;
}

/// TCP flag bits as in the header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Which way a frame went, when the link layer says (Linux cooked captures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDirection {
    /// Not recorded by the link layer.
    Unknown,
    /// Received by this host.
    Incoming,
    /// Sent by this host.
    Outgoing,
}

/// What the TCP header says, reduced to what the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    /// Flag bits, see [`tcp_flags`].
    pub flags: u8,
    /// Raw (unscaled) window field.
    pub window: u16,
    /// MSS option, if present.
    pub mss: Option<u16>,
    /// Window scale option (shift count), if present.
    pub window_scale: Option<u8>,
    /// SACK-permitted option present.
    pub sack_permitted: bool,
    /// Number of SACK blocks carried.
    pub sack_blocks: u8,
    /// Highest right edge of the SACK blocks carried, if any.
    pub sack_right_edge: Option<SeqNumber>,
}

impl TcpHeader {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The transport header of a decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp(TcpHeader),
    Udp,
}

/// One decoded TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IPv4 identification field (None for IPv6).
    pub ip_id: Option<u16>,
    /// Transport payload length from the IP header.
    pub payload_len: u32,
    /// TCP: where the payload starts in the frame's captured bytes (at or past their end when
    /// the snaplen kept none of it); 0 for UDP.
    pub payload_at: u32,
    pub transport: Transport,
    pub link_direction: LinkDirection,
}

impl Segment {
    /// The payload bytes the capture kept of this segment (`data` is its frame).
    pub fn captured_payload<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let from = (self.payload_at as usize).min(data.len());
        let to = from
            .saturating_add(self.payload_len as usize)
            .min(data.len());
        &data[from..to]
    }
}

/// Why a frame was not decoded into a TCP or UDP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The capture's link type is not one netblame reads.
    UnsupportedLinkType(u16),
    /// The frame is not IP (ARP, LLDP, ...).
    NotIp,
    /// IP, but neither TCP nor UDP (ICMP, ...).
    NotTcpOrUdp(u8),
    /// A non-first IP fragment: no transport header.
    Fragment,
    /// The capture cut the frame before the end of the transport header.
    Truncated(&'static str),
    /// A header is malformed.
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}"),
            DecodeError::NotIp => f.write_str("not an IP packet"),
            DecodeError::NotTcpOrUdp(p) => write!(f, "IP protocol {p} is neither TCP nor UDP"),
            DecodeError::Fragment => f.write_str("IP fragment without transport header"),
            DecodeError::Truncated(layer) => write!(f, "{layer} header cut by the snaplen"),
            DecodeError::Malformed(what) => write!(f, "malformed packet: {what}"),
        }
    }
}

impl Error for DecodeError {}

impl DecodeError {
    /// True when the frame is well-formed traffic that is simply not TCP/UDP over IP.
    pub fn is_other_traffic(&self) -> bool {
        matches!(
            self,
            DecodeError::NotIp | DecodeError::NotTcpOrUdp(_) | DecodeError::Fragment
        )
    }
}

fn family_to_ether_type(family: u32) -> Option<EtherType> {
    match family {
        2 => Some(EtherType::IPV4),
        // AF_INET6 differs by OS: BSD 24, FreeBSD 28, macOS 30, Linux 10.
        10 | 24 | 28 | 30 => Some(EtherType::IPV6),
        _ => None,
    }
}

/// Decodes one captured frame. `orig_len` is the frame's length on the wire.
pub fn decode_frame(link: u16, data: &[u8], orig_len: u32) -> Result<Segment, DecodeError> {
    let mut direction = LinkDirection::Unknown;
    let (ether_type, offset) = match link {
        link_type::ETHERNET => {
            if data.len() < 14 {
                return Err(DecodeError::Truncated("ethernet"));
            }
            let mut et = u16::from_be_bytes([data[12], data[13]]);
            let mut off = 14;
            // 802.1Q, 802.1ad (QinQ) and the old 0x9100 tag, up to three deep.
            for _ in 0..3 {
                if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                    break;
                }
                if data.len() < off + 4 {
                    return Err(DecodeError::Truncated("VLAN"));
                }
                et = u16::from_be_bytes([data[off + 2], data[off + 3]]);
                off += 4;
            }
            (et, off)
        }
        link_type::LINUX_SLL => {
            if data.len() < 16 {
                return Err(DecodeError::Truncated("linux cooked"));
            }
            direction = sll_direction(u16::from_be_bytes([data[0], data[1]]));
            (u16::from_be_bytes([data[14], data[15]]), 16)
        }
        link_type::LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(DecodeError::Truncated("linux cooked v2"));
            }
            direction = sll_direction(u16::from(data[10]));
            (u16::from_be_bytes([data[0], data[1]]), 20)
        }
        link_type::NULL | link_type::LOOP => {
            if data.len() < 4 {
                return Err(DecodeError::Truncated("loopback"));
            }
            let raw = [data[0], data[1], data[2], data[3]];
            let family = if link == link_type::LOOP {
                u32::from_be_bytes(raw)
            } else {
                // Host byte order of the capturing machine: accept either.
                let le = u32::from_le_bytes(raw);
                if le < 0x1_0000 {
                    le
                } else {
                    u32::from_be_bytes(raw)
                }
            };
            (family_to_ether_type(family).ok_or(DecodeError::NotIp)?.0, 4)
        }
        link_type::RAW
        | link_type::RAW_BSD12
        | link_type::RAW_BSD14
        | link_type::IPV4
        | link_type::IPV6 => match data.first().map(|b| b >> 4) {
            Some(4) => (EtherType::IPV4.0, 0),
            Some(6) => (EtherType::IPV6.0, 0),
            Some(_) => {
                return Err(DecodeError::Malformed(
                    "raw IP with an unknown version".into(),
                ))
            }
            None => return Err(DecodeError::Truncated("IP")),
        },
        other => return Err(DecodeError::UnsupportedLinkType(other)),
    };
    if ether_type != EtherType::IPV4.0 && ether_type != EtherType::IPV6.0 {
        return Err(DecodeError::NotIp);
    }
    decode_ip(
        &data[offset..],
        direction,
        orig_len.saturating_sub(offset as u32),
    )
    .map(|mut seg| {
        if matches!(seg.transport, Transport::Tcp(_)) {
            seg.payload_at += offset as u32;
        }
        seg
    })
}

fn sll_direction(packet_type: u16) -> LinkDirection {
    match packet_type {
        0..=3 => LinkDirection::Incoming,
        4 => LinkDirection::Outgoing,
        _ => LinkDirection::Unknown,
    }
}

/// Decodes an IP packet (and its TCP or UDP header); `wire_ip_len` is its length on the wire.
fn decode_ip(
    bytes: &[u8],
    link_direction: LinkDirection,
    wire_ip_len: u32,
) -> Result<Segment, DecodeError> {
    match decode_ipv4_tcp_common(bytes, link_direction, wire_ip_len) {
        Some(seg) => Ok(seg),
        None => decode_ip_general(bytes, link_direction, wire_ip_len),
    }
}

/// The common case read straight from the bytes: IPv4 without options, not a fragment,
/// carrying a TCP header with no options or the timestamp alone (nearly every packet of a
/// Linux capture; etherparse's general path was a fifth of the reading thread). `None` for
/// anything else, which [`decode_ip_general`] decodes; a differential property test holds the
/// two equal wherever this one answers.
pub(crate) fn decode_ipv4_tcp_common(
    bytes: &[u8],
    link_direction: LinkDirection,
    wire_ip_len: u32,
) -> Option<Segment> {
    const IP_LEN: usize = 20;
    let ip = bytes.get(..IP_LEN)?;
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff; // MF and the offset
    if ip[0] != 0x45 || ip[9] != 6 || fragment != 0 {
        return None;
    }
    // As etherparse's lax slice: a total length below the header or beyond the captured bytes
    // (a header-only capture) falls back to the capture, and so to the length on the wire.
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let (payload, segment_len) = if total < IP_LEN || total > bytes.len() {
        (&bytes[IP_LEN..], wire_ip_len.saturating_sub(IP_LEN as u32))
    } else {
        (&bytes[IP_LEN..total], (total - IP_LEN) as u32)
    };
    let tcp = payload.get(..20)?;
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let options = payload.get(20..header_len)?;
    if !options.is_empty() && !timestamp_only(options) {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    let addr = |i: usize| {
        IpAddr::V4(std::net::Ipv4Addr::new(
            ip[i],
            ip[i + 1],
            ip[i + 2],
            ip[i + 3],
        ))
    };
    Some(Segment {
        src: addr(12),
        dst: addr(16),
        src_port: be16(0),
        dst_port: be16(2),
        ip_id: Some(u16::from_be_bytes([ip[4], ip[5]])),
        payload_len: segment_len.saturating_sub(header_len as u32),
        payload_at: (IP_LEN + header_len) as u32,
        transport: Transport::Tcp(TcpHeader {
            seq: SeqNumber(be32(4)),
            ack: SeqNumber(be32(8)),
            flags: tcp[13],
            window: be16(14),
            mss: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: 0,
            sack_right_edge: None,
        }),
        link_direction,
    })
}

/// Decodes any IP packet through etherparse's lax slices.
pub(crate) fn decode_ip_general(
    bytes: &[u8],
    link_direction: LinkDirection,
    wire_ip_len: u32,
) -> Result<Segment, DecodeError> {
    use etherparse::err::ip::LaxHeaderSliceError;
    let (ip, _) = LaxIpSlice::from_slice(bytes).map_err(|e| match e {
        LaxHeaderSliceError::Len(_) => DecodeError::Truncated("IP"),
        LaxHeaderSliceError::Content(c) => DecodeError::Malformed(c.to_string()),
    })?;
    let (src, dst, ip_id, ip_header_len, from_header) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            let hl = u32::from(h.ihl()) * 4;
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                Some(h.identification()),
                hl,
                u32::from(h.total_len()).saturating_sub(hl),
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let ext_len = v6.extensions().slice().len() as u32;
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                None,
                40 + ext_len,
                u32::from(h.payload_length()).saturating_sub(ext_len),
            )
        }
    };
    let payload = ip.payload();
    if payload.fragmented {
        return Err(DecodeError::Fragment);
    }
    // Length of the transport segment: from the IP header, or the wire when the header says 0
    // (TSO, IPv6 jumbograms).
    let segment_len = match payload.len_source {
        LenSource::Slice => wire_ip_len.saturating_sub(ip_header_len),
        _ => from_header,
    };
    match payload.ip_number.0 {
        6 => {
            let tcp = TcpSlice::from_slice(payload.payload).map_err(|e| match e {
                etherparse::err::tcp::HeaderSliceError::Len(_) => DecodeError::Truncated("TCP"),
                etherparse::err::tcp::HeaderSliceError::Content(c) => {
                    DecodeError::Malformed(c.to_string())
                }
            })?;
            let header_len = u32::from(tcp.data_offset()) * 4;
            let mut h = TcpHeader {
                seq: SeqNumber(tcp.sequence_number()),
                ack: SeqNumber(tcp.acknowledgment_number()),
                flags: tcp.slice()[13],
                window: tcp.window_size(),
                mss: None,
                window_scale: None,
                sack_permitted: false,
                sack_blocks: 0,
                sack_right_edge: None,
            };
            if header_len > 20 && !timestamp_only(tcp.options()) {
                parse_options(&tcp, &mut h);
            }
            Ok(Segment {
                src,
                dst,
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                ip_id,
                payload_len: segment_len.saturating_sub(header_len),
                // The TCP header's place in the IP packet, plus its length.
                payload_at: (payload.payload.as_ptr() as usize - bytes.as_ptr() as usize) as u32
                    + header_len,
                transport: Transport::Tcp(h),
                link_direction,
            })
        }
        17 => {
            let udp = UdpHeaderSlice::from_slice(payload.payload)
                .map_err(|_| DecodeError::Truncated("UDP"))?;
            Ok(Segment {
                src,
                dst,
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
                ip_id,
                payload_len: segment_len.saturating_sub(8),
                payload_at: 0,
                transport: Transport::Udp,
                link_direction,
            })
        }
        n => Err(DecodeError::NotTcpOrUdp(n)),
    }
}

/// NOP, NOP, timestamp and nothing else: the options of nearly every Linux segment after the
/// handshake, and none of them is one netblame reads. Checked on the bytes, so the options
/// iterator (a twentieth of the reading thread's time) runs only where there is more.
fn timestamp_only(options: &[u8]) -> bool {
    options.len() == 12 && options[..4] == [1, 1, 8, 10]
}

fn parse_options(tcp: &TcpSlice<'_>, h: &mut TcpHeader) {
    for opt in tcp.options_iterator() {
        match opt {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => h.mss = Some(m),
            Ok(TcpOptionElement::WindowScale(s)) => h.window_scale = Some(s.min(14)),
            Ok(TcpOptionElement::SelectiveAcknowledgementPermitted) => h.sack_permitted = true,
            Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) => {
                for (_, right) in std::iter::once(first).chain(rest.into_iter().flatten()) {
                    h.sack_blocks += 1;
                    let right = SeqNumber(right);
                    if h.sack_right_edge.is_none_or(|r| right.is_after(r)) {
                        h.sack_right_edge = Some(right);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}
