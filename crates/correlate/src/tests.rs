//! Analyzer tests on packets built from bytes, one named case each.

use crate::decode::{decode_frame, link_type, tcp_flags as F, DecodeError, Transport};
use crate::flows::{Analysis, Analyzer, AnalyzerConfig, PacketClass};
use etherparse::PacketBuilder;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

/// Builds an Ethernet/IPv4/TCP frame; the payload is counted in the IP header but only the
/// headers are kept, as in a header-only capture.
fn tcp_frame(
    from_a: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    len: usize,
    window: u16,
) -> (Vec<u8>, u32) {
    let (src, dst, sp, dp) = if from_a {
        (A, B, 40000, 80)
    } else {
        (B, A, 80, 40000)
    };
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .tcp(sp, dp, seq, window);
    if flags & F::SYN != 0 {
        b = b.syn();
    }
    if flags & F::ACK != 0 {
        b = b.ack(ack);
    }
    if flags & F::FIN != 0 {
        b = b.fin();
    }
    if flags & F::RST != 0 {
        b = b.rst();
    }
    if flags & F::PSH != 0 {
        b = b.psh();
    }
    let payload = vec![0u8; len];
    let mut out = Vec::new();
    b.write(&mut out, &payload).unwrap();
    let orig = out.len() as u32;
    out.truncate(out.len() - len);
    (out, orig)
}

struct Trace {
    an: Analyzer,
    t: i64,
}

impl Trace {
    fn new() -> Self {
        Trace {
            an: Analyzer::new(AnalyzerConfig {
                keep_packets: true,
                keep_request_heads: true,
            }),
            t: 1_000_000_000,
        }
    }
    fn pkt(&mut self, from_a: bool, seq: u32, ack: u32, flags: u8, len: usize) -> &mut Self {
        self.win(from_a, seq, ack, flags, len, 1000)
    }
    fn win(
        &mut self,
        from_a: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        len: usize,
        window: u16,
    ) -> &mut Self {
        let (data, orig) = tcp_frame(from_a, seq, ack, flags, len, window);
        self.t += 1_000_000;
        self.an.add_frame(self.t, link_type::ETHERNET, &data, orig);
        self
    }
    /// SYN, SYN-ACK, ACK with ISNs 1000 (a) and 5000 (b).
    fn handshake(&mut self) -> &mut Self {
        self.pkt(true, 1000, 0, F::SYN, 0)
            .pkt(false, 5000, 1001, F::SYN | F::ACK, 0)
            .pkt(true, 1001, 5001, F::ACK, 0)
    }
    fn done(self) -> Analysis {
        self.an.finish()
    }
}

fn classes(a: &Analysis) -> Vec<&'static str> {
    a.packets.iter().map(|p| p.class.as_str()).collect()
}

#[test]
fn handshake_is_aligned_and_timed() {
    let mut t = Trace::new();
    t.handshake();
    let a = t.done();
    assert_eq!(a.flows.len(), 1);
    let f = &a.flows[0];
    assert!(f.dirs[0].aligned() && f.dirs[1].aligned());
    assert_eq!(f.handshake_rtt_ns, Some(2_000_000));
    assert_eq!(f.endpoints[0].port, 40000);
}

#[test]
fn header_only_capture_counts_payload_from_ip_length() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK | F::PSH, 1448)
        .pkt(true, 2449, 5001, F::ACK, 30000);
    let a = t.done();
    let s = &a.flows[0].dirs[0].stats;
    assert_eq!(
        (s.data_packets, s.payload_bytes, s.retransmitted_packets),
        (2, 31448, 0)
    );
    assert_eq!(classes(&a)[3..], ["new", "new"]);
}

#[test]
fn retransmission_and_delivery_time() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK, 100) // t=4ms
        .pkt(true, 1001, 5001, F::ACK, 100) // t=5ms, resent
        .pkt(false, 5001, 1101, F::ACK, 0); // t=6ms
    let a = t.done();
    let d = &a.flows[0].dirs[0];
    assert_eq!(
        (
            d.stats.retransmitted_packets,
            d.stats.retransmitted_bytes,
            d.stats.unique_bytes
        ),
        (1, 100, 100)
    );
    assert_eq!(classes(&a)[4], "retransmission");
    let span = d.timeline.span_at(1).unwrap();
    assert_eq!(span.first_sent_ns, 1_004_000_000);
    assert_eq!(span.delivered_ns, 1_005_000_000);
    // Karn: the SYN gives a sample (SYN to SYN-ACK), the retransmitted data none.
    assert_eq!(d.rtt_samples_ns, vec![1_000_000]);
}

#[test]
fn spurious_retransmission_after_ack() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK, 100)
        .pkt(false, 5001, 1101, F::ACK, 0)
        .pkt(true, 1001, 5001, F::ACK, 100);
    let a = t.done();
    let s = &a.flows[0].dirs[0].stats;
    assert_eq!(
        (s.retransmitted_packets, s.spurious_retransmissions),
        (1, 1)
    );
    assert_eq!(classes(&a)[5], "spurious-retransmission");
    assert_eq!(
        a.flows[0].dirs[0].rtt_samples_ns,
        vec![1_000_000, 1_000_000]
    );
}

#[test]
fn out_of_order_fills_hole_and_gap_stays() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1101, 5001, F::ACK, 100) // skips [1001,1101)
        .pkt(true, 1001, 5001, F::ACK, 100) // fills it
        .pkt(true, 1401, 5001, F::ACK, 100); // skips [1201,1401): never filled
    let a = t.done();
    let s = &a.flows[0].dirs[0].stats;
    assert_eq!(
        (
            s.out_of_order_packets,
            s.retransmitted_packets,
            s.gaps,
            s.gap_bytes
        ),
        (1, 0, 1, 200)
    );
    assert_eq!(classes(&a)[3..], ["new", "out-of-order", "new"]);
}

#[test]
fn partial_overlap_counts_only_old_bytes() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK, 100)
        .pkt(true, 1051, 5001, F::ACK, 100);
    let s = &t.done().flows[0].dirs[0].stats;
    assert_eq!(
        (
            s.retransmitted_packets,
            s.retransmitted_bytes,
            s.unique_bytes
        ),
        (1, 50, 150)
    );
}

#[test]
fn wraparound_sequence_numbers() {
    let isn = u32::MAX - 50;
    let mut t = Trace::new();
    t.pkt(true, isn, 0, F::SYN, 0)
        .pkt(false, 7, isn.wrapping_add(1), F::SYN | F::ACK, 0)
        .pkt(true, isn.wrapping_add(1), 8, F::ACK, 100) // crosses 2^32
        .pkt(true, isn.wrapping_add(101), 8, F::ACK, 100)
        .pkt(true, isn.wrapping_add(1), 8, F::ACK, 100) // resend across the wrap
        .pkt(false, 8, isn.wrapping_add(201), F::ACK, 0);
    let a = t.done();
    let s = &a.flows[0].dirs[0].stats;
    assert_eq!(
        (
            s.retransmitted_packets,
            s.out_of_order_packets,
            s.gaps,
            s.unique_bytes
        ),
        (1, 0, 0, 200)
    );
    assert_eq!(a.packets[3].rel_seq, 101);
    assert_eq!(a.packets[5].rel_ack, Some(201));
}

#[test]
fn zero_window_probe_is_not_a_retransmission() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK, 100)
        .win(false, 5001, 1101, F::ACK, 0, 0) // b: window closed
        .pkt(true, 1100, 5001, F::ACK, 1) // probe: one old byte
        .pkt(true, 1100, 5001, F::ACK, 1);
    let a = t.done();
    let (sa, sb) = (&a.flows[0].dirs[0].stats, &a.flows[0].dirs[1].stats);
    assert_eq!((sa.zero_window_probes, sa.retransmitted_packets), (2, 0));
    assert_eq!(sb.zero_window_packets, 1);
    assert_eq!(classes(&a)[5..], ["zero-window-probe", "zero-window-probe"]);
}

#[test]
fn keep_alive_and_duplicate_acks() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK, 100)
        .pkt(false, 5001, 1101, F::ACK, 0)
        .pkt(true, 1100, 5001, F::ACK, 0) // keep-alive: one behind the front, empty
        .pkt(true, 1101, 5001, F::ACK, 100)
        .pkt(true, 1301, 5001, F::ACK, 100) // [1201,1301) lost
        .pkt(false, 5001, 1201, F::ACK, 0)
        .pkt(false, 5001, 1201, F::ACK, 0)
        .pkt(false, 5001, 1201, F::ACK, 0);
    let a = t.done();
    assert_eq!(a.flows[0].dirs[0].stats.keep_alives, 1);
    assert_eq!(a.flows[0].dirs[1].stats.duplicate_acks, 2);
    assert_eq!(classes(&a)[5], "keep-alive");
    assert_eq!(classes(&a)[10], "duplicate-ack");
}

#[test]
fn fin_retransmission_counts_like_tcptrace() {
    let mut t = Trace::new();
    t.handshake()
        .pkt(true, 1001, 5001, F::ACK | F::FIN, 10)
        .pkt(true, 1011, 5001, F::ACK | F::FIN, 0);
    let s = &t.done().flows[0].dirs[0].stats;
    assert_eq!(
        (
            s.retransmitted_packets,
            s.retransmitted_bytes,
            s.fin_packets
        ),
        (1, 0, 2)
    );
}

#[test]
fn unaligned_connection_starts_at_first_sequence() {
    let mut t = Trace::new();
    t.pkt(true, 777_000, 1, F::ACK, 100)
        .pkt(false, 1, 777_100, F::ACK, 0)
        .pkt(true, 777_000, 1, F::ACK, 100);
    let a = t.done();
    let f = &a.flows[0];
    assert!(!f.dirs[0].aligned());
    assert_eq!(a.packets[0].rel_seq, 1);
    assert_eq!(f.dirs[0].stats.retransmitted_packets, 1);
}

#[test]
fn port_reuse_starts_a_new_connection() {
    let mut t = Trace::new();
    t.handshake().pkt(true, 1001, 5001, F::ACK | F::FIN, 0);
    t.pkt(true, 90_000, 0, F::SYN, 0);
    let a = t.done();
    assert_eq!(a.flows.len(), 2);
    assert_eq!(a.flows[1].dirs[0].isn.map(|s| s.0), Some(90_000));
}

#[test]
fn capture_duplicates_on_cooked_capture_are_dropped() {
    // A loopback packet seen twice on `-i any`: outgoing, then incoming.
    let (eth, orig) = tcp_frame(true, 1001, 5001, F::ACK, 100, 1000);
    let ip = &eth[14..];
    let mut an = Analyzer::new(AnalyzerConfig {
        keep_packets: true,
        keep_request_heads: true,
    });
    for (i, pkttype) in [4u8, 0u8].into_iter().enumerate() {
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, pkttype, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(ip);
        an.add_frame(i as i64, link_type::LINUX_SLL2, &sll2, orig - 14 + 20);
    }
    let a = an.finish();
    let s = &a.flows[0].dirs[0].stats;
    assert_eq!(
        (s.packets, s.retransmitted_packets, s.capture_duplicates),
        (1, 0, 1)
    );
    assert_eq!(a.packets[1].class, PacketClass::CaptureDuplicate);
}

#[test]
fn window_scaling_applies_after_both_syns() {
    let mut t = Trace::new();
    t.handshake();
    let a = t.done();
    // no window scale options in these SYNs: windows stay raw
    assert_eq!(a.packets[2].window, 1000);
}

#[test]
fn udp_datagrams() {
    let mut out = Vec::new();
    PacketBuilder::ipv4(A, B, 64)
        .udp(5353, 53)
        .write(&mut out, &[1, 2, 3])
        .unwrap();
    let mut an = Analyzer::new(AnalyzerConfig::default());
    an.add_frame(5, link_type::RAW, &out, out.len() as u32);
    let a = an.finish();
    assert_eq!(a.flows[0].dirs[0].datagrams, vec![(5, 3)]);
    assert_eq!(a.quality.udp_packets, 1);
}

mod decoding {
    use super::*;

    #[test]
    fn vlan_and_qinq() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(
                etherparse::VlanId::try_new(100).unwrap(),
                etherparse::VlanId::try_new(200).unwrap(),
            )
            .ipv4(A, B, 64)
            .tcp(1, 2, 3, 4)
            .write(&mut out, &[0; 10])
            .unwrap();
        let seg = decode_frame(link_type::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!((seg.src_port, seg.payload_len), (1, 10));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        // IPv6 with a hop-by-hop options header, then TCP.
        let mut tcp = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(10, 20, 30, 40)
            .write(&mut tcp, &[0; 5])
            .unwrap();
        let (ip6, tcp_bytes) = tcp.split_at(40);
        let mut pkt = ip6.to_vec();
        pkt[6] = 0; // next header: hop-by-hop
        let plen = (tcp_bytes.len() + 8) as u16;
        pkt[4..6].copy_from_slice(&plen.to_be_bytes());
        pkt.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP, len 0, PadN
        pkt.extend_from_slice(tcp_bytes);
        let seg = decode_frame(link_type::RAW, &pkt, pkt.len() as u32).unwrap();
        assert_eq!((seg.dst_port, seg.payload_len), (20, 5));
        assert!(matches!(seg.transport, Transport::Tcp(_)));
    }

    #[test]
    fn loopback_null_and_loop() {
        let mut ip = Vec::new();
        PacketBuilder::ipv4(A, B, 64)
            .tcp(1, 2, 3, 4)
            .write(&mut ip, &[])
            .unwrap();
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        assert!(decode_frame(link_type::NULL, &null, null.len() as u32).is_ok());
        let mut lp = 2u32.to_be_bytes().to_vec();
        lp.extend_from_slice(&ip);
        assert!(decode_frame(link_type::LOOP, &lp, lp.len() as u32).is_ok());
        let mut other = 99u32.to_le_bytes().to_vec();
        other.extend_from_slice(&ip);
        assert_eq!(
            decode_frame(link_type::NULL, &other, 0).unwrap_err(),
            DecodeError::NotIp
        );
    }

    #[test]
    fn linux_sll_v1() {
        let mut ip = Vec::new();
        PacketBuilder::ipv4(A, B, 64)
            .udp(1, 2)
            .write(&mut ip, &[9; 7])
            .unwrap();
        let mut sll = vec![0, 4, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let seg = decode_frame(link_type::LINUX_SLL, &sll, sll.len() as u32).unwrap();
        assert_eq!(seg.payload_len, 7);
        assert_eq!(seg.link_direction, crate::decode::LinkDirection::Outgoing);
    }

    #[test]
    fn truncated_tcp_header() {
        let (data, orig) = tcp_frame(true, 1, 1, F::ACK, 0, 1);
        let err = decode_frame(link_type::ETHERNET, &data[..14 + 20 + 10], orig).unwrap_err();
        assert_eq!(err, DecodeError::Truncated("TCP"));
    }

    #[test]
    fn truncated_ip_header() {
        let (data, orig) = tcp_frame(true, 1, 1, F::ACK, 0, 1);
        assert!(matches!(
            decode_frame(link_type::ETHERNET, &data[..20], orig),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn arp_is_not_ip() {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        assert_eq!(
            decode_frame(link_type::ETHERNET, &f, 42).unwrap_err(),
            DecodeError::NotIp
        );
    }

    #[test]
    fn tso_zero_total_length_uses_wire_length() {
        let (mut data, _) = tcp_frame(true, 1, 1, F::ACK, 0, 1);
        data[16] = 0;
        data[17] = 0;
        let seg = decode_frame(link_type::ETHERNET, &data, 14 + 20 + 20 + 60000).unwrap();
        assert_eq!(seg.payload_len, 60000);
    }

    #[test]
    fn unsupported_link_type() {
        assert_eq!(
            decode_frame(147, &[0; 60], 60).unwrap_err(),
            DecodeError::UnsupportedLinkType(147)
        );
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The decoder never panics on arbitrary bytes, whatever the link type.
        #[test]
        fn decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..200), lt in prop_oneof![Just(0u16), Just(1), Just(101), Just(108), Just(113), Just(276)], extra in 0u32..70000) {
            let _ = decode_frame(lt, &bytes, bytes.len() as u32 + extra);
        }

        /// The fast path for plain IPv4/TCP says exactly what etherparse's general path says,
        /// wherever it answers: header-only captures, padding, absurd total lengths,
        /// fragments, options, truncation.
        #[test]
        fn common_ipv4_tcp_path_agrees_with_the_general_one(
            first in prop_oneof![4 => Just(0x45u8), 1 => Just(0x46), 1 => Just(0x44), 1 => any::<u8>()],
            proto in prop_oneof![4 => Just(6u8), 1 => Just(17), 1 => any::<u8>()],
            frag in prop_oneof![3 => Just(0u16), 1 => Just(0x4000), 1 => Just(0x2000), 1 => any::<u16>()],
            total_delta in -30i32..60,
            total_zero in any::<bool>(),
            offset_words in prop_oneof![3 => Just(5u8), 3 => Just(8), 1 => 0u8..16],
            ts_options in any::<bool>(),
            fields in proptest::collection::vec(any::<u8>(), 40),
            extra in proptest::collection::vec(any::<u8>(), 0..40),
            cut in 0usize..100,
            wire_extra in 0u32..3000,
        ) {
            let mut ip = fields[..20].to_vec();
            ip[0] = first;
            ip[9] = proto;
            ip[6..8].copy_from_slice(&frag.to_be_bytes());
            let mut tcp = fields[20..40].to_vec();
            tcp[12] = (offset_words << 4) | (tcp[12] & 0x0f);
            let mut options = if ts_options { vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2] } else { Vec::new() };
            options.extend_from_slice(&extra);
            let mut bytes = ip;
            bytes.extend_from_slice(&tcp);
            bytes.extend_from_slice(&options);
            let total = if total_zero { 0 } else { (bytes.len() as i32 + total_delta).clamp(0, 65535) };
            bytes[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            bytes.truncate(bytes.len().saturating_sub(cut % (bytes.len() + 1)));
            let wire = bytes.len() as u32 + wire_extra;
            let dir = crate::decode::LinkDirection::Unknown;
            if let Some(fast) = crate::decode::decode_ipv4_tcp_common(&bytes, dir, wire) {
                prop_assert_eq!(Ok(fast), crate::decode::decode_ip_general(&bytes, dir, wire));
            }
        }

        /// Whatever order segments arrive in, every captured byte is either unique or
        /// retransmitted, and spans never overlap.
        #[test]
        fn sequence_tracker_accounts_every_byte(segs in proptest::collection::vec((0u32..2000, 1usize..300), 1..40), isn in any::<u32>()) {
            let mut t = Trace::new();
            t.pkt(true, isn, 0, F::SYN, 0);
            for (off, len) in &segs {
                t.pkt(true, isn.wrapping_add(1).wrapping_add(*off), 0, 0, *len);
            }
            let a = t.done();
            let d = &a.flows[0].dirs[0];
            let total: usize = segs.iter().map(|s| s.1).sum();
            prop_assert_eq!(d.stats.unique_bytes + d.stats.retransmitted_bytes, total as u64);
            for w in d.timeline.spans().windows(2) {
                prop_assert!(w[0].end <= w[1].start);
            }
            let covered: i64 = d.timeline.spans().iter().map(|s| s.end - s.start).sum();
            prop_assert_eq!(covered - 1, d.stats.unique_bytes as i64);
        }
    }
}

/// The join of socket calls with the capture (blame.rs), on traces built packet by packet.
mod join {
    use super::*;
    use crate::blame::{Api, Blame, CallKind, HeldBy, SocketCall, Verdict};
    use std::net::SocketAddr;

    /// The join, checked against the batch forms it replaced while both exist (issue 19): its
    /// exchanges, made as it goes, equal the pass over the reads held whole.
    fn blame(a: &Analysis, calls: &[SocketCall], threshold_ns: i64) -> Blame {
        let b = crate::blame::blame(a, calls, threshold_ns);
        let batch = crate::exchange::exchanges(a, calls, &b, threshold_ns);
        assert_eq!(
            b.exchanges, batch,
            "the join's exchanges are the batch pass's"
        );
        b
    }

    const MS: i64 = 1_000_000;
    /// The Trace clock: packet n (from 1) is captured at T0 + n ms.
    const T0: i64 = 1_000_000_000;

    fn call(kind: CallKind, t_call: i64, t_return: i64, bytes: i64, offset: u64) -> SocketCall {
        SocketCall {
            kind,
            pid: 1,
            tid: 1,
            fd: 3,
            stream: 1,
            t_call_ns: t_call,
            t_return_ns: t_return,
            bytes,
            offset,
            seq: None,
            peek: false,
            test: None,
            addrs: None,
            tcp: true,
            nonblocking: false,
            api: Api::Recv,
            ready: 0,
            errno: 0,
        }
    }

    /// The open event of endpoint a's socket (10.0.0.1:40000 -> 10.0.0.2:80).
    fn open_a(tcp: bool, local: &str, peer: &str) -> SocketCall {
        let mut c = call(CallKind::Open, T0, T0, 0, 0);
        c.set_addrs(
            Some(local.parse::<SocketAddr>().unwrap()),
            Some(peer.parse::<SocketAddr>().unwrap()),
        );
        c.tcp = tcp;
        c
    }

    fn tcp_open() -> SocketCall {
        open_a(true, "10.0.0.1:40000", "10.0.0.2:80")
    }

    #[test]
    fn response_time_is_measured_from_request_delivery_to_first_response_byte() {
        let mut t = Trace::new();
        t.handshake() // 1..3 ms
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: request
            .pkt(false, 5001, 1011, F::ACK, 0) // 5 ms
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 100) // 6 ms: response
            .pkt(true, 1011, 5101, F::ACK, 0); // 7 ms
        let a = t.done();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 6_010_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        let r = &b.reads[0];
        assert_eq!(r.response_ns, Some(2 * MS));
        assert_eq!(r.verdict, Verdict::PeerSlow);
        assert_eq!(r.timing.peer_wait_ns, 6 * MS - 3_960_000);
        assert_eq!((r.segments, r.flow_id), (1, Some(1)));
        assert_eq!(b.sends[0].wire_delay_ns, Some(50_000));
        assert_eq!(b.sends[0].held_by, None);
    }

    /// A readiness wait on `tcp_open()`'s socket that reported it readable.
    fn wait(t_call: i64, t_return: i64) -> SocketCall {
        let mut c = call(CallKind::Wait, t_call, t_return, 1, 0);
        c.api = Api::EpollWait;
        c.ready = crate::blame::READY_READ;
        c
    }

    /// Request at 4 ms, answer captured at 6 ms (2 ms of server time).
    fn request_and_answer() -> Analysis {
        let mut t = Trace::new();
        t.handshake() // 1..3 ms
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: request
            .pkt(false, 5001, 1011, F::ACK, 0) // 5 ms
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 100) // 6 ms: answer
            .pkt(true, 1011, 5101, F::ACK, 0); // 7 ms
        t.done()
    }

    #[test]
    fn a_read_after_a_wait_is_timed_over_the_wait() {
        // epoll_wait from 3.96 ms to 6.01 ms; the read at 6.02 ms takes 5 µs.
        let a = request_and_answer();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            wait(T0 + 3_960_000, T0 + 6_010_000),
            call(CallKind::Recv, T0 + 6_020_000, T0 + 6_025_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        let r = &b.reads[0];
        let w = r.wait.expect("timed over its wait");
        assert_eq!(
            (w.api, w.call_ns, w.return_ns),
            (Api::EpollWait, T0 + 3_960_000, T0 + 6_010_000)
        );
        assert_eq!(r.timing.peer_wait_ns, 6 * MS - 3_960_000);
        assert_eq!(r.timing.dispatch_ns, 10_000);
        assert_eq!(r.timing.wakeup_ns, 10_000 + 5_000);
        assert_eq!(r.timing.buffer_wait_ns, 0);
        assert_eq!(r.verdict, Verdict::PeerSlow);
    }

    #[test]
    fn a_busy_event_loop_is_the_programs_time() {
        // The wait returns at 6.01 ms, but the loop runs a 150 ms callback before reading.
        let a = request_and_answer();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            wait(T0 + 5_990_000, T0 + 6_010_000),
            call(CallKind::Recv, T0 + 156_010_000, T0 + 156_015_000, 100, 0),
        ];
        let r = &blame(&a, &calls, MS).reads[0];
        assert_eq!(r.timing.dispatch_ns, 150 * MS);
        assert_eq!(r.timing.program_ns(), 150 * MS);
        assert_eq!(r.verdict, Verdict::AppLate);
    }

    #[test]
    fn data_there_before_the_wait_began_is_buffer_wait() {
        let a = request_and_answer();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            wait(T0 + 106 * MS, T0 + 106 * MS + 1_000),
            call(
                CallKind::Recv,
                T0 + 106 * MS + 2_000,
                T0 + 106 * MS + 3_000,
                100,
                0,
            ),
        ];
        let r = &blame(&a, &calls, MS).reads[0];
        assert_eq!(r.timing.buffer_wait_ns, 100 * MS);
        assert_eq!(r.timing.network_wait_ns, 0);
        assert_eq!(r.verdict, Verdict::AppLate);
    }

    #[test]
    fn a_wait_before_the_previous_read_returned_is_not_this_reads() {
        let a = request_and_answer();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            wait(T0 + 3_960_000, T0 + 3_970_000),
            call(CallKind::Recv, T0 + 3_980_000, T0 + 3_990_000, -1, 0), // EAGAIN
            call(CallKind::Recv, T0 + 6_020_000, T0 + 6_025_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        assert!(b.reads[0].wait.is_some());
        assert_eq!(
            b.reads[1].wait, None,
            "the wait was used by the read before"
        );
        assert_eq!(b.reads[1].timing.buffer_wait_ns, 20_000);
    }

    #[test]
    fn a_servers_read_of_the_next_request_is_idle() {
        // Endpoint a accepted the connection: the request it reads at 4 ms starts a request.
        let mut t = Trace::new();
        t.handshake()
            .pkt(false, 5001, 1001, F::ACK | F::PSH, 10) // 4 ms: b's request
            .pkt(true, 1001, 5011, F::ACK | F::PSH, 100); // 5 ms: a's answer
        let a = t.done();
        let mut open = tcp_open();
        open.api = Api::Accept4;
        let calls = [
            open,
            call(CallKind::Recv, T0 + 3_100_000, T0 + 4_010_000, 10, 0),
            call(CallKind::Send, T0 + 4_900_000, T0 + 4_950_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        let r = &b.reads[0];
        assert_eq!(r.verdict, Verdict::Idle);
        assert_eq!((r.timing.idle_ns, r.timing.peer_wait_ns), (900_000, 0));
        let totals = crate::summary::summarize(&calls, &b).overall;
        assert_eq!(
            (totals.reads, totals.idle_reads, totals.blamed_ns()),
            (0, 1, 0)
        );
    }

    #[test]
    fn nagle_holds_a_small_write_while_a_small_segment_is_unacknowledged() {
        let mut t = Trace::new();
        t.handshake()
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: first write
            .pkt(false, 5001, 1011, F::ACK, 0) // 5 ms: its ACK
            .pkt(true, 1011, 5001, F::ACK | F::PSH, 10); // 6 ms: second write, held until now
        let a = t.done();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Send, T0 + 4_100_000, T0 + 4_200_000, 10, 10),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.sends[1].wire_delay_ns, Some(1_800_000));
        assert_eq!(b.sends[1].held_by, Some(HeldBy::Nagle));
    }

    #[test]
    fn a_read_names_its_own_connections_held_request_not_anothers() {
        let mut t = Trace::new();
        t.handshake()
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: first write
            .pkt(false, 5001, 1011, F::ACK, 0) // 5 ms: its ACK
            .pkt(true, 1011, 5001, F::ACK | F::PSH, 10) // 6 ms: second write, held until now
            .pkt(false, 5001, 1021, F::ACK | F::PSH, 100); // 7 ms: the answer
        let a = t.done();
        // Another connection (not in the capture) that sent a request before ours was held.
        let other = |mut c: SocketCall| {
            (c.stream, c.fd) = (2, 4);
            c
        };
        let mut other_open = open_a(true, "10.0.0.1:40001", "10.0.0.9:80");
        (other_open.stream, other_open.fd) = (2, 4);
        let calls = [
            tcp_open(),
            other_open,
            other(call(CallKind::Send, T0 + 3_800_000, T0 + 3_850_000, 5, 0)),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Send, T0 + 4_100_000, T0 + 4_200_000, 10, 10),
            other(call(CallKind::Recv, T0 + 4_300_000, T0 + 6_500_000, 5, 0)),
            call(CallKind::Recv, T0 + 4_300_000, T0 + 7_010_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.sends[2].held_by, Some(HeldBy::Nagle));
        let (theirs, ours) = (&b.reads[0], &b.reads[1]);
        assert_eq!(theirs.request_held, None, "another connection's send");
        let held = ours.request_held.expect("our request was held");
        assert_eq!(held.call, 4);
        assert_eq!(held.held_by, HeldBy::Nagle);
        assert_eq!(held.wire_delay_ns, Some(1_800_000));
    }

    #[test]
    fn zero_window_from_the_peer_holds_the_bytes() {
        let mut t = Trace::new();
        t.handshake()
            .win(false, 5001, 1001, F::ACK, 0, 0) // 4 ms: b's window closes
            .win(false, 5001, 1001, F::ACK, 0, 1000) // 5 ms: and opens again
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10); // 6 ms
        let a = t.done();
        assert_eq!(
            a.flows[0].dirs[1].zero_windows,
            vec![(T0 + 4 * MS, T0 + 5 * MS)]
        );
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 4_100_000, T0 + 4_200_000, 10, 0),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.sends[0].held_by, Some(HeldBy::ZeroWindow));
    }

    #[test]
    fn unaligned_and_unmatched_connections_are_reported() {
        let mut t = Trace::new();
        t.pkt(false, 5001, 1001, F::ACK | F::PSH, 100); // no handshake captured
        let a = t.done();
        let other = open_a(true, "10.0.0.1:40001", "10.0.0.2:80");
        let mut on_other = call(CallKind::Recv, T0, T0 + 10, 5, 0);
        on_other.stream = 2;
        let mut other = other;
        other.stream = 2;
        let calls = [
            tcp_open(),
            other,
            call(CallKind::Recv, T0, T0 + 2 * MS, 100, 0),
            on_other,
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.reads[0].verdict, Verdict::Unaligned);
        assert_eq!(b.reads[1].verdict, Verdict::NotCaptured);
        assert_eq!(b.unmatched_streams.len(), 1);
        assert!(b.unmatched_flows.is_empty());
        // With no recorded calls, the capture's connection is the one left unmatched.
        assert_eq!(blame(&a, &[], MS).unmatched_flows, vec![1]);
    }

    /// A wait that reported the socket writable at once, and a send 100 ms later (a handler
    /// thinking): the send was blocked for the wait and the call, not for the time between.
    #[test]
    fn a_send_is_blocked_for_its_wait_and_its_call_not_the_gap_between() {
        let a = request_and_answer();
        let mut writable = wait(T0 + 3_960_000, T0 + 3_961_000);
        writable.ready = crate::blame::READY_WRITE;
        let calls = [
            tcp_open(),
            writable,
            call(CallKind::Send, T0 + 103_961_000, T0 + 103_981_000, 10, 0),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.sends[0].wait.map(|w| w.call_ns), Some(T0 + 3_960_000));
        assert_eq!(b.sends[0].send_blocked_ns, 1_000 + 20_000);
    }

    /// Go: the request sent, a read finds nothing (EAGAIN), the goroutine parks; the netpoller's
    /// wait that reports the socket began only just before (a timer cut the earlier ones short).
    /// The read waited from the send, not from that last wait's call.
    #[test]
    fn a_read_that_found_nothing_starts_the_wait_of_the_next_one() {
        let a = request_and_answer();
        let mut eagain = call(CallKind::Recv, T0 + 3_955_000, T0 + 3_956_000, -1, 0);
        eagain.errno = crate::blame::EAGAIN;
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            eagain,
            wait(T0 + 5_900_000, T0 + 6_010_000),
            call(CallKind::Recv, T0 + 6_020_000, T0 + 6_025_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        let r = b.reads.iter().find(|r| r.call == 4).unwrap();
        assert_eq!(r.wait.map(|w| w.call_ns), Some(T0 + 3_955_000));
        assert_eq!(r.timing.peer_wait_ns, 6 * MS - 3_955_000);
        assert_eq!(r.verdict, Verdict::PeerSlow);
    }

    /// Edge-triggered epoll (Go's netpoller) reports a socket readable and writable at once: the
    /// program reads what came, works, then writes; its send did not wait on that report.
    #[test]
    fn a_send_after_a_read_is_not_timed_over_the_wait_that_reported_both() {
        let a = request_and_answer();
        let mut both = wait(T0 + 3_960_000, T0 + 6_010_000);
        both.ready = crate::blame::READY_READ | crate::blame::READY_WRITE;
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            both,
            call(CallKind::Recv, T0 + 6_020_000, T0 + 6_025_000, 100, 0),
            call(CallKind::Send, T0 + 9 * MS, T0 + 9 * MS + 20_000, 10, 10),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.sends[1].wait, None);
        assert_eq!(b.sends[1].send_blocked_ns, 20_000);
    }

    /// Calls with the kernel's sequence numbers (the eBPF recorder) join a connection whose
    /// handshake was not captured, byte for byte.
    #[test]
    fn kernel_seqs_join_without_the_handshake() {
        let mut t = Trace::new();
        t.pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 1 ms: request, no handshake captured
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 100) // 2 ms: first half of the answer
            .pkt(false, 5101, 1011, F::ACK | F::PSH, 100) // 3 ms: second half
            .pkt(true, 1011, 5201, F::ACK, 0); // 4 ms
        let a = t.done();
        let with_seq = |mut c: SocketCall, seq: u32| {
            c.seq = Some(seq);
            c
        };
        let mut calls = [
            tcp_open(),
            with_seq(call(CallKind::Send, T0, T0 + 500_000, 10, 0), 1001),
            // The read of the second half only: 100 bytes from sequence number 5101.
            with_seq(
                call(CallKind::Recv, T0 + 600_000, T0 + 3 * MS + 10_000, 100, 0),
                5101,
            ),
        ];
        crate::blame::align_kernel_seqs(&a, &mut calls);
        assert_eq!((calls[1].offset, calls[2].offset), (0, 100));
        let b = blame(&a, &calls, MS);
        let r = &b.reads[0];
        assert_eq!(r.verdict, Verdict::PeerSlow, "{r:?}");
        assert_eq!(r.timing.ready_first_ns, Some(T0 + 3 * MS));
        assert_eq!(b.sends[0].first_sent_ns, Some(T0 + MS));
        // Without the sequence numbers the same read cannot be placed.
        calls[2].seq = None;
        assert_eq!(blame(&a, &calls, MS).reads[0].verdict, Verdict::Unaligned);
    }

    #[test]
    fn kernel_seqs_unwrap_across_2_32_and_drop_bytes_before_the_capture() {
        let isn = u32::MAX - 5;
        let mut t = Trace::new();
        t.pkt(true, 1000, 0, F::SYN, 0)
            .pkt(false, isn, 1001, F::SYN | F::ACK, 0)
            .pkt(true, 1001, isn.wrapping_add(1), F::ACK, 0)
            .pkt(false, isn.wrapping_add(1), 1001, F::ACK | F::PSH, 100); // crosses 2^32
        let a = t.done();
        let mut read = call(CallKind::Recv, T0, T0 + 5 * MS, 50, 0);
        read.seq = Some(isn.wrapping_add(51)); // the second 50 bytes, past the wrap
        let mut early = call(CallKind::Recv, T0, T0 + 5 * MS, 50, 0);
        early.seq = Some(isn.wrapping_sub(100)); // before the ISN: not this capture's bytes
        let mut calls = [tcp_open(), read, early];
        crate::blame::align_kernel_seqs(&a, &mut calls);
        assert_eq!(calls[1].offset, 50);
        assert_eq!(calls[2].seq, None);
    }

    /// A SYN at 1 ms answered by a RST at 2 ms: nothing listened on the port.
    fn refused_trace() -> Analysis {
        let mut t = Trace::new();
        t.pkt(true, 1000, 0, F::SYN, 0)
            .pkt(false, 0, 1001, F::RST | F::ACK, 0);
        t.done()
    }

    #[test]
    fn a_connect_answered_with_a_rst_is_refused_and_joined_by_port() {
        let a = refused_trace();
        assert_eq!(a.flows[0].syn_rst_ts_ns, Some(T0 + 2 * MS));
        // A blocking connect that failed: the socket keeps its port, not its address.
        let mut c = open_a(true, "0.0.0.0:40000", "10.0.0.2:80");
        c.api = Api::Connect;
        (c.t_call_ns, c.t_return_ns, c.errno) = (T0 + MS / 2, T0 + 2 * MS + 10_000, 111);
        let b = blame(&a, &[c], MS);
        let t = &b.connects[0];
        assert_eq!(t.verdict, Verdict::Refused);
        assert_eq!(t.flow_id, Some(1));
        assert_eq!((t.peer_ns, t.wakeup_ns, t.syn_loss_ns), (MS, 10_000, 0));
        assert!(b.unmatched_flows.is_empty() && b.unmatched_streams.is_empty());
    }

    #[test]
    fn a_connect_that_failed_with_nothing_captured_is_no_missing_connection() {
        // ENETUNREACH: no route, so no SYN left; the capture holds another connection.
        let mut c = open_a(true, "0.0.0.0:0", "240.0.0.1:80");
        c.api = Api::Connect;
        c.errno = 101;
        let b = blame(&refused_trace(), &[c], MS);
        assert!(b.unmatched_streams.is_empty(), "{:?}", b.unmatched_streams);
        assert_eq!(b.connects[0].verdict, Verdict::NotCaptured);
    }

    #[test]
    fn a_rst_after_the_handshake_is_not_a_refusal() {
        let mut t = Trace::new();
        t.handshake().pkt(false, 5001, 1001, F::RST | F::ACK, 0);
        let a = t.done();
        assert_eq!(a.flows[0].syn_rst_ts_ns, None);
        let mut c = tcp_open();
        c.api = Api::Connect;
        // The SYN-ACK took 1 ms: the peer's time, not a refusal.
        assert_eq!(blame(&a, &[c], MS).connects[0].verdict, Verdict::PeerSlow);
    }

    #[test]
    fn a_listening_socket_is_not_a_connection_missing_from_the_capture() {
        // An older interposer recorded a listening socket a wait reported readable as an open
        // with the wildcard peer.
        let mut listening = open_a(true, "127.0.0.1:45899", "0.0.0.0:0");
        listening.api = Api::Unknown;
        let b = blame(&refused_trace(), &[listening], MS);
        assert!(b.unmatched_streams.is_empty(), "{:?}", b.unmatched_streams);
    }

    #[test]
    fn our_second_small_write_held_until_the_peers_delayed_ack_is_a_stall() {
        use crate::blame::HeldWrite;
        let mut t = Trace::new();
        t.handshake() // 1..3 ms
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10); // 4 ms: the first half of the request
        t.t += 39 * MS;
        t.pkt(false, 5001, 1011, F::ACK, 0) // 44 ms: the peer's delayed ACK
            .pkt(true, 1011, 5001, F::ACK | F::PSH, 10) // 45 ms: the held second half
            .pkt(false, 5001, 1021, F::ACK | F::PSH, 100) // 46 ms: the answer, at once
            .pkt(true, 1021, 5101, F::ACK, 0);
        let a = t.done();
        assert_eq!(
            a.flows[0].dirs[0].nagle_holds,
            vec![(T0 + 4 * MS, T0 + 44 * MS)]
        );
        assert!(a.flows[0].dirs[1].nagle_holds.is_empty());
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Send, T0 + 3_960_000, T0 + 3_970_000, 10, 10),
            call(CallKind::Recv, T0 + 3_980_000, T0 + 46_010_000, 100, 0),
        ];
        let b = blame(&a, &calls, MS);
        let r = &b.reads[0];
        assert_eq!(r.verdict, Verdict::Stall);
        assert_eq!(r.stall_held, Some(HeldWrite::Ours));
        assert_eq!(r.timing.stall_ns, 40 * MS);
        assert_eq!(r.timing.peer_wait_ns, 46 * MS - 3_980_000 - 40 * MS);
        let t = &r.timing;
        assert_eq!(
            t.loss_delay_ns + t.peer_wait_ns + t.stall_ns + t.program_ns() + t.wakeup_ns,
            T0 + 46_010_000 - (T0 + 3_980_000),
            "the parts add up to the read's time"
        );
    }

    #[test]
    fn the_peers_small_write_held_until_our_delayed_ack_is_a_stall() {
        use crate::blame::HeldWrite;
        let mut t = Trace::new();
        t.handshake() // 1..3 ms
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: request
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 20); // 5 ms: the answer's header
        t.t += 39 * MS;
        t.pkt(true, 1011, 5021, F::ACK, 0) // 45 ms: our delayed ACK
            .pkt(false, 5021, 1011, F::ACK | F::PSH, 100); // 46 ms: the held body
        let a = t.done();
        assert_eq!(
            a.flows[0].dirs[1].nagle_holds,
            vec![(T0 + 5 * MS, T0 + 45 * MS)]
        );
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 5_010_000, 20, 0),
            call(CallKind::Recv, T0 + 5_020_000, T0 + 46_010_000, 100, 20),
        ];
        let b = blame(&a, &calls, MS);
        assert_eq!(
            b.reads[0].verdict,
            Verdict::PeerSlow,
            "the header came after 1 ms"
        );
        let body = &b.reads[1];
        assert_eq!(body.verdict, Verdict::Stall);
        assert_eq!(body.stall_held, Some(HeldWrite::Peers));
        assert_eq!(body.timing.stall_ns, 45 * MS - 5_020_000);
    }

    #[test]
    fn a_peer_that_thinks_after_a_late_ack_is_not_a_stall() {
        let mut t = Trace::new();
        t.handshake()
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms: request
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 20); // 5 ms: header
        t.t += 39 * MS;
        t.pkt(true, 1011, 5021, F::ACK, 0); // 45 ms: our delayed ACK
        t.t += 100 * MS;
        t.pkt(false, 5021, 1011, F::ACK | F::PSH, 100); // 146 ms: the body, thought about
        let a = t.done();
        assert!(a.flows[0].dirs[1].nagle_holds.is_empty());
    }

    /// The exchanges of `calls` over `a`, each checked to add up to its total.
    fn exchanges_of(a: &Analysis, calls: &[SocketCall]) -> Vec<crate::exchange::Exchange> {
        let b = blame(a, calls, MS);
        for e in &b.exchanges {
            assert_eq!(e.parts.total_ns(), e.end_ns - e.start_ns, "{e:?}");
        }
        b.exchanges
    }

    #[test]
    fn an_exchange_is_timed_from_the_wire_and_adds_up() {
        let a = request_and_answer(); // request on the wire at 4 ms, answer at 6 ms
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 6_010_000, 100, 0),
        ];
        let e = &exchanges_of(&a, &calls)[0];
        assert_eq!((e.request_bytes, e.response_bytes, e.flow_id), (10, 100, 1));
        assert_eq!((e.start_ns, e.end_ns), (T0 + 3_900_000, T0 + 6_010_000));
        let p = e.parts;
        assert_eq!(p.request_held_ns, 4 * MS - 3_950_000);
        assert_eq!(p.peer_ns, 2 * MS);
        assert_eq!(p.program_ns, 50_000, "inside the send call");
        assert_eq!(p.wakeup_ns, 10_000);
        assert_eq!(e.verdict, Verdict::PeerSlow);
    }

    #[test]
    fn a_send_call_returning_after_its_bytes_went_out_is_not_the_programs() {
        // The request on the wire at 4 ms, 0.1 ms into a send call whose thread then lost its
        // CPU until 5.5 ms; the answer at 6 ms: the peer's 2 ms, not the program's 1.5 ms.
        let a = request_and_answer();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 5_500_000, 10, 0),
            call(CallKind::Recv, T0 + 5_510_000, T0 + 6_010_000, 100, 0),
        ];
        let p = exchanges_of(&a, &calls)[0].parts;
        assert_eq!(
            p.program_ns, 100_000,
            "inside the send call, until the bytes went out"
        );
        assert_eq!((p.request_held_ns, p.peer_ns), (0, 2 * MS));
        assert_eq!(p.wakeup_ns, 10_000);
    }

    #[test]
    fn a_response_read_in_slices_keeps_its_whole_peer_time() {
        // The answer in two segments at 6 and 106 ms; the program reads each as it comes, with
        // a 100 ms timer slice between: the reads see 2 ms and 100 ms, the exchange 102 ms.
        let mut t = Trace::new();
        t.handshake()
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms
            .pkt(false, 5001, 1011, F::ACK, 0) // 5 ms
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 50); // 6 ms
        t.t += 99 * MS;
        t.pkt(false, 5051, 1011, F::ACK | F::PSH, 50) // 106 ms
            .pkt(true, 1011, 5101, F::ACK, 0);
        let a = t.done();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 6_010_000, 50, 0),
            call(CallKind::Recv, T0 + 6_020_000, T0 + 106_010_000, 50, 50),
        ];
        let e = &exchanges_of(&a, &calls)[0];
        assert_eq!(e.response_bytes, 100);
        assert_eq!(e.parts.peer_ns + e.parts.transfer_ns, 102 * MS);
        assert_eq!(e.last_read, 3);
    }

    #[test]
    fn a_retransmitted_request_is_loss_not_the_peers() {
        let mut t = Trace::new();
        t.handshake().pkt(true, 1001, 5001, F::ACK | F::PSH, 10); // 4 ms: lost after capture
        t.t += 199 * MS;
        t.pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 204 ms: retransmitted
            .pkt(false, 5001, 1011, F::ACK | F::PSH, 100) // 205 ms: answered at once
            .pkt(true, 1011, 5101, F::ACK, 0);
        let a = t.done();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 205_010_000, 100, 0),
        ];
        let e = &exchanges_of(&a, &calls)[0];
        assert_eq!(e.parts.loss_ns, 200 * MS);
        assert_eq!(e.parts.peer_ns, MS);
        assert_eq!(e.verdict, Verdict::Loss);
    }

    #[test]
    fn pipelined_requests_and_interleaved_answers_still_add_up() {
        // Two requests sent back to back (one exchange: nothing was read between them), then an
        // answer, a third request in the middle of the answer (a PING, an HTTP/2 stream), the
        // rest of the answer.
        let mut t = Trace::new();
        t.handshake()
            .pkt(true, 1001, 5001, F::ACK | F::PSH, 10) // 4 ms
            .pkt(true, 1011, 5001, F::ACK | F::PSH, 10) // 5 ms
            .pkt(false, 5001, 1021, F::ACK | F::PSH, 40) // 6 ms
            .pkt(true, 1021, 5041, F::ACK | F::PSH, 8) // 7 ms
            .pkt(false, 5041, 1029, F::ACK | F::PSH, 60) // 8 ms
            .pkt(true, 1029, 5101, F::ACK, 0);
        let a = t.done();
        let calls = [
            tcp_open(),
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Send, T0 + 4_900_000, T0 + 4_950_000, 10, 10),
            call(CallKind::Recv, T0 + 4_960_000, T0 + 6_010_000, 40, 0),
            call(CallKind::Send, T0 + 6_900_000, T0 + 6_950_000, 8, 20),
            call(CallKind::Recv, T0 + 6_960_000, T0 + 8_010_000, 60, 40),
        ];
        let ex = exchanges_of(&a, &calls);
        assert_eq!(ex.len(), 2);
        assert_eq!((ex[0].request_bytes, ex[0].response_bytes), (20, 40));
        assert_eq!((ex[1].request_bytes, ex[1].response_bytes), (8, 60));
        let whole: i64 = ex.iter().map(|e| e.end_ns - e.start_ns).sum();
        assert_eq!(whole, 8_010_000 - 3_900_000 - (6_900_000 - 6_010_000));
    }

    #[test]
    fn an_accepted_connection_has_no_exchanges() {
        let a = request_and_answer();
        let mut served = open_a(true, "10.0.0.1:40000", "10.0.0.2:80");
        served.api = Api::Accept4;
        let calls = [
            served,
            call(CallKind::Send, T0 + 3_900_000, T0 + 3_950_000, 10, 0),
            call(CallKind::Recv, T0 + 3_960_000, T0 + 6_010_000, 100, 0),
        ];
        assert!(exchanges_of(&a, &calls).is_empty());
    }

    fn udp(out: &mut Vec<u8>, from_b: bool, len: usize) {
        out.clear();
        let b = if from_b {
            PacketBuilder::ipv4(B, A, 64).udp(53, 5353)
        } else {
            PacketBuilder::ipv4(A, B, 64).udp(5353, 53)
        };
        b.write(out, &vec![0u8; len]).unwrap();
    }

    #[test]
    fn udp_reads_match_the_next_datagram_of_their_length() {
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let mut buf = Vec::new();
        for (i, (from_b, len)) in [(true, 3), (true, 5), (true, 3), (false, 4)]
            .iter()
            .enumerate()
        {
            udp(&mut buf, *from_b, *len);
            an.add_frame(
                T0 + (i as i64 + 1) * MS,
                link_type::RAW,
                &buf,
                buf.len() as u32,
            );
        }
        let a = an.finish();
        // An unconnected socket bound to the wildcard address.
        let open = open_a(false, "0.0.0.0:5353", "0.0.0.0:0");
        let mut calls = vec![open];
        for (kind, t_call, bytes) in [
            (CallKind::Recv, T0 + MS / 2, 5),
            (CallKind::Recv, T0 + 10 * MS, 3),
            (CallKind::Send, T0 + 3_900_000, 4),
        ] {
            let mut c = call(kind, t_call, t_call.max(T0 + 2 * MS) + 10_000, bytes, 0);
            c.tcp = false;
            calls.push(c);
        }
        let b = blame(&a, &calls, MS);
        let (first, second) = (&b.reads[0], &b.reads[1]);
        assert_eq!(first.timing.ready_first_ns, Some(T0 + 2 * MS));
        assert_eq!(first.verdict, Verdict::PeerSlow);
        assert_eq!(second.timing.ready_first_ns, Some(T0 + 3 * MS));
        assert_eq!(second.timing.buffer_wait_ns, 7 * MS);
        assert_eq!(second.verdict, Verdict::AppLate);
        assert_eq!(
            b.sends[0].wire_delay_ns,
            Some(T0 + 4 * MS - (T0 + 3_910_000))
        );
        assert!(b.unmatched_streams.is_empty());
    }

    #[test]
    fn a_read_returning_bytes_before_their_capture_is_a_causality_violation() {
        let mut t = Trace::new();
        t.handshake().pkt(false, 5001, 1001, F::ACK | F::PSH, 100); // 4 ms
        let a = t.done();
        // The program's clock runs 3 ms behind the capture's.
        let calls = [tcp_open(), call(CallKind::Recv, T0, T0 + MS, 100, 0)];
        let b = blame(&a, &calls, MS);
        assert_eq!(b.causality_violations, 1);
        assert_eq!(b.reads[0].causality_violation_ns, Some(3 * MS));
    }
}

/// An Ethernet/IPv4/TCP ACK from A with the given option bytes.
fn frame_with_options(options: &[u8]) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&2000u32.to_be_bytes());
    tcp[12] = (((20 + options.len()) / 4) as u8) << 4;
    tcp[13] = F::ACK;
    tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
    tcp.extend_from_slice(options);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&A);
    ip.extend_from_slice(&B);
    let total = (ip.len() + tcp.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut frame = vec![2; 6];
    frame.extend_from_slice(&[1; 6]);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

fn tcp_header_of(frame: &[u8]) -> crate::decode::TcpHeader {
    let seg = decode_frame(link_type::ETHERNET, frame, frame.len() as u32).unwrap();
    match seg.transport {
        Transport::Tcp(h) => h,
        Transport::Udp => panic!("not TCP"),
    }
}

#[test]
fn timestamp_only_options_carry_nothing_read() {
    let ts = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];
    let h = tcp_header_of(&frame_with_options(&ts));
    assert_eq!(
        (h.mss, h.window_scale, h.sack_permitted, h.sack_blocks),
        (None, None, false, 0)
    );
    assert_eq!(h.window, 512);
}

#[test]
fn sack_after_the_timestamp_is_still_read() {
    // NOP, NOP, timestamp, then NOP, NOP, SACK with one block: 24 bytes, not the fast path.
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 1, 5, 10];
    opts.extend_from_slice(&3000u32.to_be_bytes());
    opts.extend_from_slice(&4000u32.to_be_bytes());
    let h = tcp_header_of(&frame_with_options(&opts));
    assert_eq!(h.sack_blocks, 1);
    assert_eq!(h.sack_right_edge, Some(crate::SeqNumber(4000)));
}

#[test]
fn sack_in_place_of_the_timestamp_is_still_read() {
    // The same 12 bytes as a timestamp layout would take: NOP, NOP, SACK with one block.
    let mut opts = vec![1, 1, 5, 10];
    opts.extend_from_slice(&3000u32.to_be_bytes());
    opts.extend_from_slice(&4000u32.to_be_bytes());
    let h = tcp_header_of(&frame_with_options(&opts));
    assert_eq!(h.sack_blocks, 1);
}

#[test]
fn plain_ipv4_tcp_takes_the_common_path() {
    // A header-only capture of a 100-byte segment: the IP total length is beyond the bytes.
    let (frame, orig) = tcp_frame(true, 1, 0, F::ACK, 100, 512);
    let ip = &frame[14..];
    let dir = crate::decode::LinkDirection::Unknown;
    let fast = crate::decode::decode_ipv4_tcp_common(ip, dir, orig - 14).expect("common path");
    assert_eq!(fast.payload_len, 100);
    assert_eq!(
        Ok(fast),
        crate::decode::decode_ip_general(ip, dir, orig - 14)
    );
    // With an IP option (IHL 6) it is left to the general path.
    let mut with_option = ip.to_vec();
    with_option[0] = 0x46;
    assert!(crate::decode::decode_ipv4_tcp_common(&with_option, dir, orig - 14).is_none());
}

/// A run holds millions of calls (issue 19): the api as a one-byte enum, not a 16-byte `&str`,
/// keeps a call at 96 bytes with the kernel's sequence number in it.
#[test]
fn a_socket_call_is_96_bytes() {
    assert_eq!(std::mem::size_of::<crate::blame::SocketCall>(), 96);
}
