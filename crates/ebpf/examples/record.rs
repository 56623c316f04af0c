//! Records a command with the eBPF recorder alone: `record DIR -- CMD ARGS...` (root).
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, cmd) = (&args[0], &args[2..]);
    let options = netblame_ebpf::Options {
        object: std::env::var_os("NETBLAME_EBPF_OBJECT").map(Into::into),
        ring_mib: std::env::var("NETBLAME_EBPF_RING_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(netblame_ebpf::Options::default().ring_mib),
    };
    let mut rec = netblame_ebpf::Recorder::load(&options)
        .unwrap_or_else(|e| panic!("{e}: {}", e.log().unwrap_or("")));
    std::fs::create_dir_all(dir).unwrap();
    rec.record_into(std::path::Path::new(dir)).unwrap();
    // An object without the set of processes (a bare program, to measure the tracepoints' cost).
    rec.arm_next_child(Some(std::process::id())).ok();
    let status = Command::new(&cmd[0]).args(&cmd[1..]).status().unwrap();
    rec.arm_next_child(None).ok();
    let summary = rec.stop().unwrap();
    eprintln!("{status}: {summary:?}");
}
