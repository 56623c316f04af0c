//! Records a command with the eBPF recorder alone: `record DIR -- CMD ARGS...` (root).
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, cmd) = (&args[0], &args[2..]);
    let mut rec = netblame_ebpf::Recorder::load(&netblame_ebpf::Options::default())
        .unwrap_or_else(|e| panic!("{e}: {}", e.log().unwrap_or("")));
    std::fs::create_dir_all(dir).unwrap();
    rec.record_into(std::path::Path::new(dir)).unwrap();
    rec.arm_next_child(Some(std::process::id())).unwrap();
    let status = Command::new(&cmd[0]).args(&cmd[1..]).status().unwrap();
    rec.arm_next_child(None).unwrap();
    let summary = rec.stop().unwrap();
    eprintln!("{status}: {summary:?}");
}
