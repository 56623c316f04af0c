//! Runs fuzz inputs through a target outside the fuzzer, to see a crash's panic and backtrace:
//! `cargo run -p netblame-fuzz --example replay -- TARGET FILE...`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, files)) = args.split_first() else {
        eprintln!("usage: replay TARGET FILE...");
        std::process::exit(2);
    };
    let Some((_, target)) = netblame_fuzz::TARGETS.iter().find(|(n, _)| n == name) else {
        eprintln!("replay: no target {name}");
        std::process::exit(2);
    };
    let mut failed = 0;
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let start = std::time::Instant::now();
        match std::panic::catch_unwind(|| target(&data)) {
            Ok(()) => println!("{f}: ok in {:?}", start.elapsed()),
            Err(_) => {
                println!("{f}: PANIC");
                failed += 1;
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}
