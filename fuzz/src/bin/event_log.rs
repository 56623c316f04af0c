//! AFL++ harness for netblame_fuzz::event_log (see crates/fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| netblame_fuzz::event_log(data));
}
