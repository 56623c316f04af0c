//! AFL++ harness for netblame_fuzz::events_jsonl (see crates/fuzz).
fn main() {
    afl::fuzz!(|data: &[u8]| netblame_fuzz::events_jsonl(data));
}
