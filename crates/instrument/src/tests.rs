//! Reader and writer tests, damage cases named.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

use crate::event::{read_binary_log, read_events, LogError};
use crate::record::{self, Kind, RawRecord, HEADER_SIZE, RECORD_SIZE};
use crate::{Call, Event, EventLog, RecordedTcpStream, RecordedUdpSocket};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nb-instrument-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_log(dir: &std::path::Path, n: usize) -> PathBuf {
    let log = EventLog::create_in(dir).unwrap();
    for i in 0..n {
        let mut r = RawRecord::new(Kind::Recv);
        r.pid = log.pid();
        r.fd = 3;
        r.result = i as i64;
        r.t_call_ns = i as i64;
        log.append(&r).unwrap();
    }
    log.path().to_path_buf()
}

#[test]
fn wrappers_record_tcp_reads_writes_and_offsets() {
    let dir = temp_dir("tcp");
    let log = Arc::new(EventLog::create_in(&dir).unwrap());
    log.mark("session start", Some("tests::tcp")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"0123456789abcdef").unwrap();
    });
    let mut c = RecordedTcpStream::connect(addr, log.clone()).unwrap();
    c.write_all(b"hello").unwrap();
    c.write_all(b"world").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    server.join().unwrap();
    drop(c);
    let events = read_events(&dir).unwrap();
    assert!(events.damage.is_none());
    let ev = &events.events;
    assert_eq!(ev[0].kind, Kind::Mark);
    assert_eq!(
        (ev[0].label.as_deref(), ev[0].test.as_deref()),
        (Some("session start"), Some("tests::tcp"))
    );
    let open = ev.iter().find(|e| e.kind == Kind::Open).unwrap();
    assert_eq!(open.peer(), Some(addr));
    let sends: Vec<&Event> = ev.iter().filter(|e| e.kind == Kind::Send).collect();
    assert_eq!(
        sends
            .iter()
            .map(|e| (e.offset, e.bytes))
            .collect::<Vec<_>>(),
        vec![(0, 5), (5, 5)]
    );
    let recv_total: i64 = ev
        .iter()
        .filter(|e| e.kind == Kind::Recv)
        .map(|e| e.bytes)
        .sum();
    assert_eq!(recv_total, 16);
    assert!(ev
        .iter()
        .filter(|e| e.kind == Kind::Recv)
        .all(|e| e.t_return_ns >= e.t_call_ns && e.tid > 0));
    assert_eq!(ev.last().unwrap().kind, Kind::Close);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrappers_record_udp() {
    let dir = temp_dir("udp");
    let log = Arc::new(EventLog::create_in(&dir).unwrap());
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let mut ra = RecordedUdpSocket::from_connected(a, log.clone()).unwrap();
    ra.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let n = b.recv(&mut buf).unwrap();
    b.send(&buf[..n]).unwrap();
    assert_eq!(ra.recv(&mut buf).unwrap(), 4);
    drop(ra);
    let ev = read_events(&dir).unwrap().events;
    let open = &ev[0];
    assert_eq!(open.proto, Some(crate::Proto::Udp));
    assert_eq!(
        ev.iter()
            .filter(|e| e.kind == Kind::Recv)
            .map(|e| e.bytes)
            .sum::<i64>(),
        4
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_file_keeps_complete_records() {
    let dir = temp_dir("trunc");
    let path = write_log(&dir, 10);
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(HEADER_SIZE + 7 * RECORD_SIZE + 50);
    std::fs::write(&path, &data).unwrap();
    let c = read_binary_log(&path).unwrap();
    assert_eq!(c.events.len(), 7);
    let err = c.damage.unwrap();
    assert!(
        matches!(err, LogError::Truncated { offset, .. } if offset == (HEADER_SIZE + 7 * RECORD_SIZE) as u64)
    );
    assert!(err.to_string().contains(path.to_str().unwrap()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn torn_record_is_reported_and_skipped() {
    let dir = temp_dir("torn");
    let path = write_log(&dir, 5);
    let mut data = std::fs::read(&path).unwrap();
    data[HEADER_SIZE + 2 * RECORD_SIZE] = 0; // record 2 never committed
    std::fs::write(&path, &data).unwrap();
    let c = read_binary_log(&path).unwrap();
    assert_eq!(
        c.events.iter().map(|e| e.bytes).collect::<Vec<_>>(),
        vec![0, 1, 3, 4]
    );
    assert!(
        matches!(c.damage, Some(LogError::TornRecord { offset, .. }) if offset == (HEADER_SIZE + 2 * RECORD_SIZE) as u64)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn torn_last_record() {
    let dir = temp_dir("tornlast");
    let path = write_log(&dir, 3);
    let mut data = std::fs::read(&path).unwrap();
    let last = HEADER_SIZE + 2 * RECORD_SIZE;
    data[last] = 0;
    data[last + 1] = 9; // a half-written slot: body bytes but no kind
    std::fs::write(&path, &data).unwrap();
    let c = read_binary_log(&path).unwrap();
    assert_eq!(c.events.len(), 2);
    assert!(matches!(c.damage, Some(LogError::TornRecord { .. })));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_magic_and_future_version() {
    let dir = temp_dir("magic");
    let path = write_log(&dir, 1);
    let mut data = std::fs::read(&path).unwrap();
    data[8] = 99;
    std::fs::write(&path, &data).unwrap();
    let err = read_binary_log(&path).unwrap_err();
    assert!(
        matches!(err, LogError::FutureVersion { version: 99, .. }),
        "{err}"
    );
    data[0] = b'X';
    std::fs::write(&path, &data).unwrap();
    assert!(matches!(
        read_binary_log(&path).unwrap_err(),
        LogError::BadMagic { .. }
    ));
    std::fs::write(&path, b"NBEVENTS\x01").unwrap();
    assert!(matches!(
        read_binary_log(&path).unwrap_err(),
        LogError::Truncated { offset: 9, .. }
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reserved_zero_tail_is_not_damage() {
    let dir = temp_dir("tail");
    let path = write_log(&dir, 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0u8; RECORD_SIZE * 4]).unwrap();
    let c = read_binary_log(&path).unwrap();
    assert_eq!((c.events.len(), c.damage.is_none()), (2, true));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jsonl_round_trip_and_hand_written_minimum() {
    let dir = temp_dir("jsonl");
    let mut e = Event::from_json(&serde_json::json!({"kind": "open", "pid": 1, "fd": 3, "local": "127.0.0.1:1", "peer": "[::1]:2"})).unwrap();
    assert_eq!(e.proto, Some(crate::Proto::Tcp));
    e.test = Some("t.py::test_x (call)".into());
    let again = Event::from_json(&e.to_json()).unwrap();
    assert_eq!(again, e);
    let path = dir.join("hand.jsonl");
    std::fs::write(&path, "{\"kind\":\"recv\",\"pid\":1,\"fd\":3,\"t_call_ns\":5,\"t_return_ns\":9,\"bytes\":10,\"offset\":0}\n\n{\"kind\":\"bogus\"}\n").unwrap();
    let c = read_events(&path).unwrap();
    assert_eq!(c.events.len(), 1);
    assert!(matches!(c.damage, Some(LogError::BadJson { line: 3, .. })));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn call_names_round_trip() {
    for v in 0..19u16 {
        let c = Call::from_u16(v);
        assert_eq!(Call::parse(c.as_str()), c);
    }
    assert_eq!(record::Kind::parse("str"), None, "strings are internal");
}

/// A log's bytes: a header (version, stamps) then the records.
fn log_bytes(version: u16, stamps: u8, records: &[RawRecord]) -> Vec<u8> {
    let mut data = record::encode_header(7, 1).to_vec();
    data[8..10].copy_from_slice(&version.to_le_bytes());
    data[record::HEADER_CLOCK] = stamps;
    for r in records {
        data.extend_from_slice(&record::encode(r).0);
    }
    data
}

fn clock_point(ticks: i64, real_ns: i64) -> RawRecord {
    let mut r = RawRecord::new(Kind::Clock);
    (r.t_call_ns, r.t_return_ns) = (ticks, real_ns);
    r
}

fn recv_at(t_call: i64, t_return: i64) -> RawRecord {
    let mut r = RawRecord::new(Kind::Recv);
    (r.t_call_ns, r.t_return_ns, r.result) = (t_call, t_return, 10);
    r
}

fn read_bytes(data: &[u8]) -> Result<crate::LogContents, LogError> {
    crate::read_binary(data, std::path::Path::new("mem.nbev"), None)
}

#[test]
fn tsc_stamps_become_realtime_ns() {
    const R: i64 = 1_700_000_000_000_000_000;
    // 3 ticks a ns; the second point is written after the call, as the interposer does.
    let data = log_bytes(
        record::VERSION,
        record::Stamps::Tsc as u8,
        &[
            clock_point(3_000, R),
            recv_at(1_503_000, 1_506_000),
            clock_point(3_003_000, R + 1_000_000),
        ],
    );
    let c = read_bytes(&data).unwrap();
    assert!(c.damage.is_none());
    assert_eq!(c.events.len(), 1, "clock points are not events");
    let e = &c.events[0];
    assert_eq!((e.t_call_ns, e.t_return_ns), (R + 500_000, R + 501_000));
}

#[test]
fn tsc_log_without_two_points_is_damage() {
    let data = log_bytes(
        record::VERSION,
        record::Stamps::Tsc as u8,
        &[clock_point(3_000, 5), recv_at(4_000, 5_000)],
    );
    let c = read_bytes(&data).unwrap();
    assert!(
        matches!(c.damage, Some(LogError::NoClock { events: 1, .. })),
        "{:?}",
        c.damage
    );
    assert!(c.events.is_empty());
}

#[test]
fn version_2_log_is_realtime_ns() {
    let data = log_bytes(2, 0, &[recv_at(4_000, 5_000)]);
    let c = read_bytes(&data).unwrap();
    assert_eq!(
        (c.events[0].t_call_ns, c.events[0].t_return_ns),
        (4_000, 5_000)
    );
    let data = log_bytes(1, 0, &[]);
    assert!(matches!(
        read_bytes(&data).unwrap_err(),
        LogError::OldVersion { version: 1, .. }
    ));
}

#[test]
fn unknown_stamps_are_refused() {
    let data = log_bytes(record::VERSION, 9, &[recv_at(4_000, 5_000)]);
    let err = read_bytes(&data).unwrap_err();
    assert!(
        matches!(err, LogError::UnknownStamps { value: 9, .. }),
        "{err}"
    );
}
