//! AFL++ harness for netblame_fuzz::capture (see crates/fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| netblame_fuzz::capture(data));
}
