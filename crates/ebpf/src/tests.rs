use super::*;

#[test]
fn verifier_refusal_names_the_program_and_its_last_word() {
    let log = "libbpf: prog 'on_sys_exit': BPF program load failed: Permission denied\n\
               libbpf: prog 'on_sys_exit': -- BEGIN PROG LOAD LOG --\n\
               0: R1=ctx() R10=fp0\n\
               ; return *(u64 *)0;\n\
               1: (79) r0 = *(u64 *)(r1 +0)\n\
               R1 invalid mem access 'scalar'\n\
               processed 2 insns (limit 1000000) max_states_per_insn 0\n\
               -- END PROG LOAD LOG --\n";
    assert_eq!(
        verifier_refusal(log),
        Some((
            "on_sys_exit".into(),
            "R1 invalid mem access 'scalar'".into()
        ))
    );
    assert_eq!(
        verifier_refusal("libbpf: failed to open: No such file"),
        None
    );
}

#[test]
fn ring_size_must_be_a_power_of_two() {
    let err = Recorder::load(&Options {
        ring_mib: 3,
        object: None,
    })
    .unwrap_err();
    assert!(matches!(err, LoadError::RingSize { mib: 3 }), "{err}");
}

mod logs {
    use super::super::logs::*;
    use netblame_instrument::{read_events, Call, Kind, Recorder};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("netblame-ebpf-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const SOCK: u64 = 31_337;

    fn event(kind: u8, call: Call, fd: i32, t: u64) -> KernelEvent {
        KernelEvent {
            t_call: t,
            t_return: t + 10,
            sock: SOCK,
            tgid: 42,
            tid: 43,
            fd,
            kind,
            call: call as u8,
            flags: 0x08, // TCP
            ..KernelEvent::default()
        }
    }

    /// The socket record the BPF program sends before a process's first call on `sock`.
    fn named(sock: u64, local: &str) -> KernelSocket {
        KernelSocket {
            sock,
            tgid: 42,
            tcp: true,
            local: Some(local.parse().unwrap()),
            peer: Some("127.0.0.1:80".parse().unwrap()),
        }
    }

    fn bytes_of(e: &KernelEvent) -> [u8; EVENT_SIZE] {
        KernelRecord::Event(*e).to_bytes()
    }

    #[test]
    fn parse_reads_the_bpf_layout() {
        let mut e = event(2, Call::Read, 7, 1_000);
        e.result = -11;
        e.requested = u32::MAX;
        e.seq = u32::MAX - 3;
        e.ready = 5;
        assert_eq!(
            KernelRecord::parse(&bytes_of(&e)),
            Some(KernelRecord::Event(e))
        );
        for s in [
            named(7, "127.0.0.1:40000"),
            KernelSocket {
                peer: Some("[::1]:443".parse().unwrap()),
                local: Some("[fe80::1]:40000".parse().unwrap()),
                tcp: false,
                ..named(8, "127.0.0.1:1")
            },
        ] {
            let r = KernelRecord::Socket(s);
            assert_eq!(KernelRecord::parse(&r.to_bytes()), Some(r));
        }
        assert_eq!(
            KernelRecord::parse(&[0u8; EVENT_SIZE - 1]),
            None,
            "truncated"
        );
    }

    #[test]
    fn a_socket_first_seen_in_a_read_gets_an_open_and_reads_carry_the_sequence() {
        let d = dir("first-use");
        let mut logs = Logs::new(&d, ClockOffset(1_000_000_000));
        logs.handle_bytes(&KernelRecord::Socket(named(SOCK, "127.0.0.1:40000")).to_bytes());
        let mut read = event(2, Call::Read, 7, 5_000);
        read.result = 100;
        read.seq = 9_000;
        read.flags |= 0x01; // sequence known
        logs.handle_bytes(&bytes_of(&read));
        logs.handle_bytes(&bytes_of(&event(4, Call::Close, 7, 6_000)));
        let summary = logs.finish(&[]).unwrap();
        assert_eq!((summary.calls, summary.processes.clone()), (2, vec![42]));
        let events = read_events(&d).unwrap().events;
        let kinds: Vec<(Kind, Call)> = events.iter().map(|e| (e.kind, e.call)).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Open, Call::Unknown),
                (Kind::Recv, Call::Read),
                (Kind::Close, Call::Close)
            ]
        );
        assert!(events.iter().all(|e| e.recorder == Recorder::Ebpf));
        assert!(events.iter().all(|e| e.stream == events[0].stream));
        assert_eq!(events[0].peer(), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(events[0].local(), Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!((events[1].seq, events[1].offset), (Some(9_000), 0));
        assert_eq!(
            events[1].t_call_ns, 1_000_005_000,
            "moved to the realtime clock"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_exec_starts_a_new_log_and_lost_calls_reach_the_header() {
        let d = dir("exec");
        let mut logs = Logs::new(&d, ClockOffset(0));
        let mut fork = event(100, Call::Unknown, 0, 1_000);
        fork.tid = 1;
        logs.handle(&fork).unwrap();
        logs.handle_socket(&named(SOCK, "127.0.0.1:40000"));
        logs.handle(&event(1, Call::Connect, 3, 2_000)).unwrap();
        logs.handle(&event(101, Call::Unknown, 0, 3_000)).unwrap(); // exec
                                                                    // The socket the process kept through its exec: the program does not name it again.
        let mut write = event(3, Call::Write, 3, 4_000);
        write.result = 5;
        logs.handle(&write).unwrap();
        let summary = logs.finish(&[(42, 3_500, 7)]).unwrap();
        assert_eq!(summary.logs.len(), 2);
        assert_eq!(summary.lost, 7);
        let contents = read_events(&d).unwrap();
        assert_eq!(contents.events.len(), 3);
        let after_exec = &contents.events[1];
        assert_eq!(
            (after_exec.kind, after_exec.call),
            (Kind::Open, Call::Unknown)
        );
        assert_eq!(after_exec.local(), Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(contents.lost.len(), 1);
        assert_eq!(
            (contents.lost[0].from_ns, contents.lost[0].calls),
            (3_500, 7)
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_write_error_is_kept_for_the_end_and_the_rest_still_handled() {
        let d = dir("gone");
        std::fs::remove_dir_all(&d).unwrap();
        let mut logs = Logs::new(&d, ClockOffset(0));
        logs.handle_bytes(&bytes_of(&event(1, Call::Connect, 3, 2_000)));
        logs.handle_bytes(&bytes_of(&event(1, Call::Connect, 4, 3_000)));
        let err = logs.finish(&[]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_connection_the_interposer_recorded_too_is_counted_once() {
        let d = dir("once");
        let mut logs = Logs::new(&d, ClockOffset(0));
        logs.handle_socket(&named(SOCK, "127.0.0.1:40000"));
        logs.handle(&event(1, Call::Connect, 3, 2_000)).unwrap();
        logs.handle_socket(&named(SOCK + 1, "127.0.0.1:40001"));
        let mut other = event(1, Call::Connect, 4, 2_500);
        other.sock += 1;
        logs.handle(&other).unwrap();
        logs.finish(&[]).unwrap();
        // The interposer's log of the same process and the first connection.
        let jsonl = r#"{"kind":"open","call":"connect","pid":42,"fd":3,"stream":1,"t_call_ns":2000,"local":"127.0.0.1:40000","peer":"127.0.0.1:80"}"#;
        std::fs::write(d.join("events-42-1.jsonl"), format!("{jsonl}\n")).unwrap();
        let events = read_events(&d).unwrap().events;
        let seen: Vec<(Recorder, i32)> = events.iter().map(|e| (e.recorder, e.fd)).collect();
        assert_eq!(seen, [(Recorder::Interposer, 3), (Recorder::Ebpf, 4)]);
        std::fs::remove_dir_all(&d).ok();
    }
}
