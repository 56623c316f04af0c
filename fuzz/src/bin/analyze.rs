//! AFL++ harness for netblame_fuzz::analyze (see crates/fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| netblame_fuzz::analyze(data));
}
