use super::*;
use std::io::Cursor;

fn pcap_bytes(packets: &[(i64, &[u8], u32)]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), 1, 65535).unwrap();
    for (ts, data, orig) in packets {
        w.write_packet(*ts, data, *orig).unwrap();
    }
    w.into_inner().unwrap()
}

/// (timestamp, captured bytes, wire length) of each packet read.
type Packets = Vec<(i64, Vec<u8>, u32)>;

fn read_all(bytes: Vec<u8>) -> Result<(Packets, FileStats), ReadError> {
    let mut r = CaptureReader::new(Cursor::new(bytes), "test.pcap")?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet()? {
        out.push((p.ts_ns, p.data.to_vec(), p.orig_len));
    }
    Ok((out, r.stats().clone()))
}

#[test]
fn pcap_nanosecond_round_trip() {
    let bytes = pcap_bytes(&[
        (1_700_000_000_123_456_789, b"abc", 3),
        (1_700_000_001_000_000_001, b"de", 60),
    ]);
    let (pkts, stats) = read_all(bytes).unwrap();
    assert_eq!(pkts[0], (1_700_000_000_123_456_789, b"abc".to_vec(), 3));
    assert_eq!(pkts[1], (1_700_000_001_000_000_001, b"de".to_vec(), 60));
    assert_eq!(stats.records, 2);
    assert_eq!(stats.sliced_records, 1);
    assert_eq!(stats.truncated_at, None);
}

#[test]
fn pcap_microsecond_big_endian() {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_be_bytes());
    b.extend_from_slice(&2u16.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&96u32.to_be_bytes());
    b.extend_from_slice(&101u32.to_be_bytes());
    b.extend_from_slice(&10u32.to_be_bytes());
    b.extend_from_slice(&5u32.to_be_bytes());
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(b"xy");
    let mut r = CaptureReader::new(Cursor::new(b), "be.pcap").unwrap();
    assert_eq!(r.format(), FileFormat::PcapMicro);
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(
        (p.ts_ns, p.link_type, p.data),
        (10_000_005_000, 101, &b"xy"[..])
    );
}

#[test]
fn truncated_record_keeps_everything_before_the_cut() {
    let mut bytes = pcap_bytes(&[(1, b"first", 5), (2, b"second", 6)]);
    bytes.truncate(bytes.len() - 3);
    let (pkts, stats) = read_all(bytes).unwrap();
    assert_eq!(pkts.len(), 1);
    assert_eq!(stats.truncated_at, Some(24 + 16 + 5));
}

#[test]
fn truncated_inside_record_header() {
    let mut bytes = pcap_bytes(&[(1, b"first", 5), (2, b"second", 6)]);
    bytes.truncate(24 + 16 + 5 + 7);
    let (pkts, stats) = read_all(bytes).unwrap();
    assert_eq!(pkts.len(), 1);
    assert_eq!(stats.truncated_at, Some(45));
}

#[test]
fn oversized_record_is_corruption_with_offset() {
    let mut bytes = pcap_bytes(&[(1, b"ok", 2), (2, b"bad", 3)]);
    let at = 24 + 16 + 2 + 8;
    bytes[at..at + 4].copy_from_slice(&(300_000u32).to_le_bytes());
    let err = read_all(bytes).unwrap_err();
    assert!(
        matches!(err, ReadError::Corrupt { offset: 42, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("test.pcap") && err.to_string().contains("42"));
}

#[test]
fn record_over_snaplen_is_corruption() {
    let mut w = PcapWriter::new(Vec::new(), 1, 4).unwrap();
    w.write_packet(1, b"abcd", 4).unwrap();
    let mut bytes = w.into_inner().unwrap();
    bytes[24 + 8..24 + 12].copy_from_slice(&8u32.to_le_bytes());
    bytes.extend_from_slice(b"efgh");
    assert!(matches!(
        read_all(bytes).unwrap_err(),
        ReadError::Corrupt { offset: 24, .. }
    ));
}

#[test]
fn empty_and_foreign_files() {
    assert!(matches!(
        read_all(Vec::new()).unwrap_err(),
        ReadError::Empty { .. }
    ));
    let err = read_all(b"hello world, not a capture file at all".to_vec()).unwrap_err();
    assert!(matches!(err, ReadError::NotACapture { .. }));
    let err = read_all(vec![0xd4, 0xc3]).unwrap_err();
    assert!(matches!(err, ReadError::NotACapture { .. }));
    let mut header_only = pcap_bytes(&[]);
    header_only.truncate(10);
    assert!(matches!(
        read_all(header_only).unwrap_err(),
        ReadError::Corrupt { offset: 0, .. }
    ));
}

#[test]
fn future_pcap_version_is_refused() {
    let mut bytes = pcap_bytes(&[]);
    bytes[4] = 3;
    assert!(matches!(
        read_all(bytes).unwrap_err(),
        ReadError::UnsupportedVersion { major: 3, .. }
    ));
}

fn ng_block(block_type: u32, body: &[u8]) -> Vec<u8> {
    let mut padded = body.to_vec();
    while padded.len() % 4 != 0 {
        padded.push(0);
    }
    let len = (padded.len() + 12) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&padded);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn ng_option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&code.to_le_bytes());
    o.extend_from_slice(&(value.len() as u16).to_le_bytes());
    o.extend_from_slice(value);
    while o.len() % 4 != 0 {
        o.push(0);
    }
    o
}

fn pcapng_file(tsresol: u8) -> Vec<u8> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut file = ng_block(0x0a0d0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&276u16.to_le_bytes()); // LINUX_SLL2
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&128u32.to_le_bytes());
    idb.extend(ng_option(9, &[tsresol]));
    idb.extend(ng_option(0, &[]));
    file.extend(ng_block(1, &idb));
    let ts: u64 = 1_700_000_000_123_456_789;
    let mut epb = Vec::new();
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    epb.extend_from_slice(&(ts as u32).to_le_bytes());
    epb.extend_from_slice(&3u32.to_le_bytes());
    epb.extend_from_slice(&1500u32.to_le_bytes());
    epb.extend_from_slice(b"pkt");
    file.extend(ng_block(6, &epb));
    let mut isb = Vec::new();
    isb.extend_from_slice(&0u32.to_le_bytes());
    isb.extend_from_slice(&[0; 8]);
    isb.extend(ng_option(5, &7u64.to_le_bytes()));
    isb.extend(ng_option(0, &[]));
    file.extend(ng_block(5, &isb));
    file
}

#[test]
fn pcapng_nanosecond_interface_and_drops() {
    let (pkts, stats) = read_all(pcapng_file(9)).unwrap();
    assert_eq!(
        pkts,
        vec![(1_700_000_000_123_456_789, b"pkt".to_vec(), 1500)]
    );
    assert_eq!(stats.kernel_drops, Some(7));
}

#[test]
fn pcapng_truncated_block() {
    let mut bytes = pcapng_file(9);
    let isb_len = 12 + 12 + 12 + 4;
    bytes.truncate(bytes.len() - isb_len - 5);
    let (pkts, stats) = read_all(bytes).unwrap();
    assert!(pkts.is_empty());
    assert!(stats.truncated_at.is_some());
}

#[test]
fn pcapng_bad_block_length() {
    let mut bytes = pcapng_file(6);
    let idb_at = 28;
    bytes[idb_at + 4..idb_at + 8].copy_from_slice(&13u32.to_le_bytes());
    let err = read_all(bytes).unwrap_err();
    assert!(
        matches!(err, ReadError::Corrupt { offset: 28, .. }),
        "{err}"
    );
}

#[test]
fn reads_across_window_boundaries() {
    let payload = vec![7u8; 1400];
    let packets: Vec<(i64, &[u8], u32)> = (0..3000).map(|i| (i, &payload[..], 1400)).collect();
    let (pkts, _) = read_all(pcap_bytes(&packets)).unwrap();
    assert_eq!(pkts.len(), 3000);
    assert!(pkts
        .iter()
        .enumerate()
        .all(|(i, p)| p.0 == i as i64 && p.1.len() == 1400));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the bytes, the reader returns packets or an error; it never panics, and on
        /// a valid prefix cut anywhere it recovers every complete record.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_all(bytes);
        }

        #[test]
        fn corrupted_pcapng_never_panics(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)) {
            let mut bytes = pcapng_file(9);
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            let _ = read_all(bytes);
        }

        #[test]
        fn cut_anywhere_recovers_complete_records(cut in 24usize..24 + 5 * 26) {
            let bytes = pcap_bytes(&[(1, &[1; 10], 10), (2, &[2; 10], 10), (3, &[3; 10], 10), (4, &[4; 10], 10), (5, &[5; 10], 10)]);
            let complete = (cut - 24) / 26;
            let (pkts, stats) = read_all(bytes[..cut].to_vec()).unwrap();
            prop_assert_eq!(pkts.len(), complete);
            prop_assert_eq!(stats.truncated_at.is_some(), (cut - 24) % 26 != 0);
        }
    }
}

#[test]
fn pcapng_writer_round_trips_through_the_reader() {
    let mut w = PcapngWriter::new(Vec::new(), 276, 160, "any").unwrap();
    w.write_packet(1_700_000_000_123_456_789, b"abcde", 1500)
        .unwrap();
    w.write_packet(1_700_000_000_223_456_789, &[1; 200], 200)
        .unwrap();
    w.finish(Some(3), 1_700_000_001_000_000_000).unwrap();
    let (pkts, stats) = read_all(w.into_inner().unwrap()).unwrap();
    assert_eq!(
        pkts[0],
        (1_700_000_000_123_456_789, b"abcde".to_vec(), 1500)
    );
    assert_eq!(pkts[1].1.len(), 160, "cut to the snaplen");
    assert_eq!(stats.kernel_drops, Some(3));
}

#[test]
fn pcapng_comments_and_a_second_interface() {
    let mut w = PcapngWriter::new(Vec::new(), 1, 262_144, "capture").unwrap();
    let lo = w.add_interface(276, 262_144, "capture").unwrap();
    assert_eq!(lo, 1);
    // Lengths that need padding, a multi-byte character, two comments on one packet.
    w.write_enhanced(
        0,
        1_000_000_000_000_000_001,
        b"abc",
        3,
        &["read by pid 1 µs", "and another"],
    )
    .unwrap();
    w.write_enhanced(lo, 1_000_000_000_000_000_002, b"defgh", 9, &[])
        .unwrap();
    let bytes = w.into_inner().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("read by pid 1 µs") && text.contains("and another"));
    let mut r = CaptureReader::new(Cursor::new(bytes), "t.pcapng").unwrap();
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(
        (p.ts_ns, p.data, p.orig_len, p.link_type),
        (1_000_000_000_000_000_001, &b"abc"[..], 3, 1)
    );
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(
        (p.ts_ns, p.data, p.orig_len, p.link_type),
        (1_000_000_000_000_000_002, &b"defgh"[..], 9, 276)
    );
    assert!(r.next_packet().unwrap().is_none());
}

#[test]
fn pcapng_comment_longer_than_an_option_is_cut_at_a_character() {
    let mut w = PcapngWriter::new(Vec::new(), 1, 100, "capture").unwrap();
    let long = "é".repeat(40_000); // 80,000 bytes: more than a 16-bit option length
    w.write_enhanced(0, 1, b"x", 1, &[&long]).unwrap();
    let bytes = w.into_inner().unwrap();
    let (pkts, _) = read_all(bytes).unwrap();
    assert_eq!(pkts, vec![(1, b"x".to_vec(), 1)]);
}

#[test]
fn a_live_capture_socket_is_close_on_exec() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("NETBLAME_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
            "a live capture needs root, and NETBLAME_REQUIRE_ROOT_TESTS=1"
        );
        eprintln!("skipped: a live capture needs root");
        return;
    }
    let live = LiveCapture::open(&LiveConfig {
        iface: "lo".into(),
        filter: "tcp port 9".into(),
        snaplen: DEFAULT_SNAPLEN,
        buffer_bytes: 1 << 20,
    })
    .unwrap();
    // SAFETY: F_GETFD on the capture's open descriptor only reads its flags.
    let flags = unsafe { libc::fcntl(live.raw_fd(), libc::F_GETFD) };
    assert!(
        flags >= 0 && flags & libc::FD_CLOEXEC != 0,
        "flags {flags:#x}"
    );
}
