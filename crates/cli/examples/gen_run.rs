//! Generates a synthetic run directory for the analyze benchmark: CONNS TCP connections on
//! loopback, each a series of 100-byte requests and 1,000-byte responses; the capture holds every
//! segment and ACK (about 4 packets per exchange) and the event log a send and a recv per side.
//! Every call is tagged with a pytest test, as under `netblame run -- pytest`: a new test every
//! 1,000 exchanges.
//!
//! Usage: gen_run DIR EXCHANGES [CONNS]

use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::Path;

use netblame_capture::PcapWriter;
use netblame_instrument::record::{Call, Kind, RawRecord};
use netblame_instrument::EventLog;

const CLIENT_IP: [u8; 4] = [127, 0, 0, 1];

/// An Ethernet + IPv4 + TCP header (no options) for a segment with `len` payload bytes.
fn frame(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, len: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12] = 0x08;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(40 + len).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&CLIENT_IP);
    ip[16..20].copy_from_slice(&CLIENT_IP);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    f
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let exchanges: u64 = args[2].parse().expect("exchanges");
    let conns: u64 = args.get(3).map_or(100, |s| s.parse().expect("conns"));
    std::fs::create_dir_all(dir.join("events"))?;
    let file = std::fs::File::create(dir.join("capture.pcap"))?;
    let mut pcap = PcapWriter::new(BufWriter::with_capacity(1 << 20, file), 1, 96)?;
    let log = EventLog::create_in(&dir.join("events"))?;
    let (syn, ack, psh) = (0x02u8, 0x10u8, 0x08u8);
    let mut t: i64 = 1_800_000_000_000_000_000;
    let per_conn = exchanges / conns;
    let mut test_id = 0;
    for conn in 0..conns {
        let cport = 20000 + conn as u16;
        let sport = 5000u16;
        let (mut cseq, mut sseq) = (1000u32, 9000u32);
        let client: SocketAddr = format!("127.0.0.1:{cport}").parse().unwrap();
        let server: SocketAddr = format!("127.0.0.1:{sport}").parse().unwrap();
        let stream = (u64::from(log.pid()) << 32) | (conn + 1);
        let mut open = RawRecord::new(Kind::Open);
        open.call = Call::Connect;
        (open.pid, open.tid, open.fd, open.stream) = (log.pid(), 1, 3, stream);
        open.flags = netblame_instrument::record::flags::TCP;
        open.addrs = Some((client, server));
        open.t_call_ns = t;
        open.t_return_ns = t + 50_000;
        log.append(&open)?;
        for (from_c, seq, a, fl) in [
            (true, cseq, 0, syn),
            (false, sseq, cseq + 1, syn | ack),
            (true, cseq + 1, sseq + 1, ack),
        ] {
            let f = if from_c {
                frame(cport, sport, seq, a, fl, 0)
            } else {
                frame(sport, cport, seq, a, fl, 0)
            };
            pcap.write_packet(t, &f, f.len() as u32)?;
            t += 10_000;
        }
        cseq += 1;
        sseq += 1;
        let (mut coff, mut soff) = (0u64, 0u64);
        for i in 0..per_conn {
            if i % 1000 == 0 {
                let n = conn * per_conn + i;
                test_id = log.intern(&format!("tests/test_gen.py::test_{} (call)", n / 1000))?;
            }
            // request, its ACK, response, its ACK
            let send_at = t;
            let f = frame(cport, sport, cseq, sseq, ack | psh, 100);
            pcap.write_packet(t + 5_000, &f, f.len() as u32 + 100)?;
            cseq += 100;
            let f = frame(sport, cport, sseq, cseq, ack, 0);
            pcap.write_packet(t + 20_000, &f, f.len() as u32)?;
            let f = frame(sport, cport, sseq, cseq, ack | psh, 1000);
            pcap.write_packet(t + 200_000, &f, f.len() as u32 + 1000)?;
            sseq += 1000;
            let f = frame(cport, sport, cseq, sseq, ack, 0);
            pcap.write_packet(t + 215_000, &f, f.len() as u32)?;
            // (kind, call, call time, return time, bytes asked, bytes moved, stream offset)
            for (kind, call, t_call, t_return, requested, result, offset) in [
                (
                    Kind::Send,
                    Call::Send,
                    send_at,
                    send_at + 3_000,
                    100,
                    100,
                    coff,
                ),
                (
                    Kind::Recv,
                    Call::Recv,
                    send_at + 4_000,
                    send_at + 210_000,
                    65536,
                    1000,
                    soff,
                ),
            ] {
                let mut r = RawRecord::new(kind);
                r.call = call;
                (r.pid, r.tid, r.fd, r.stream) = (log.pid(), 1, 3, stream);
                r.flags = netblame_instrument::record::flags::TCP;
                (r.t_call_ns, r.t_return_ns) = (t_call, t_return);
                (r.requested, r.result, r.offset) = (requested, result, offset);
                r.test_id = test_id;
                log.append(&r)?;
            }
            coff += 100;
            soff += 1000;
            t += 300_000;
        }
    }
    pcap.into_inner()?;
    Ok(())
}
