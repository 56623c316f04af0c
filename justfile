# netblame task recipes. `just test` is what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List recipes.
default:
    @just --list

# Debug build of every crate.
build:
    cargo build --workspace --lib --bins --examples

# Release build of the binary.
release:
    cargo build --release -p netblame-cli

# Lints: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI checks: lints, Rust tests, end-to-end tests (root-only ones need root).
test: lint bpf-check
    cargo test --workspace
    cargo build --workspace --lib --bins --examples
    python3 -m pytest -q tests

# Rebuild the eBPF recorder's BPF object (crates/ebpf/bpf/recorder.bpf.o, committed, so that
# building netblame needs no clang): Debian's clang and libbpf-dev (for its BPF headers).
bpf:
    command -v clang >/dev/null && test -e /usr/include/bpf/bpf_helpers.h || DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang llvm libbpf-dev
    cd crates/ebpf/bpf && clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -Wall -Werror -fdebug-prefix-map="$PWD"=. -c recorder.bpf.c -o recorder.bpf.o && llvm-strip -g recorder.bpf.o

# Fails when the committed BPF object is not what its source builds into (skipped, and said,
# without clang and libbpf-dev, except in CI).
bpf-check:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v clang >/dev/null || [ ! -e /usr/include/bpf/bpf_helpers.h ]; then
        if [ "${NETBLAME_REQUIRE_ROOT_TESTS:-}" = 1 ]; then echo "bpf-check: clang and libbpf-dev are needed" >&2; exit 1; fi
        echo "bpf-check: skipped (no clang or libbpf-dev)"; exit 0
    fi
    committed=$(mktemp)
    cp crates/ebpf/bpf/recorder.bpf.o "$committed"
    just bpf
    if ! cmp -s crates/ebpf/bpf/recorder.bpf.o "$committed"; then
        cp "$committed" crates/ebpf/bpf/recorder.bpf.o
        echo "crates/ebpf/bpf/recorder.bpf.o is not what recorder.bpf.c builds into: run just bpf and commit it" >&2
        exit 1
    fi

# Regenerate the committed fixtures from fresh testbed captures (root; needs tcpdump, nft, tcptrace).
fixtures:
    python3 tests/testbed/make_fixtures.py

# Benchmark `netblame flows` against tcpdump (libpcap's read floor), tcptrace and tshark.
# Needs root (the capture is made in a network namespace) and tcpdump, tcptrace and tshark.
bench-flows *ARGS: release
    command -v tshark >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q tshark
    python3 bench/bench_flows.py {{ARGS}}

# Interposer overhead: plain vs LD_PRELOAD vs strace on loopback ping-pongs (a C and a Rust
# send+recv pair, a poll pair, an asyncio echo), fastest and median of 12 alternating rounds.
bench-preload *ARGS:
    command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace
    cargo build --release -p netblame-preload
    cargo build --release -p netblame-instrument --example pingpong
    python3 bench/bench_preload.py {{ARGS}}

# The eBPF recorder's cost per recorded call (root; needs gcc and golang): plain vs eBPF vs the
# interposer on a C send+recv pair, and plain vs eBPF on the same pair in Go.
bench-ebpf *ARGS:
    command -v go >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go
    cargo build --release -p netblame-preload
    cargo build --release -p netblame-ebpf --example record
    python3 bench/bench_ebpf.py {{ARGS}}

# Live capture under a 2 GB loopback transfer: netblame capture vs tcpdump (root; needs tcpdump).
bench-capture *ARGS: release
    python3 bench/bench_capture.py {{ARGS}}

# `netblame analyze` on generated runs of 1 M and 4 M exchanges (a read, a send, 4 packets each):
# the report alone and with CSV + Parquet tables, against `netblame flows` on the same capture,
# and how peak memory grows with the run.
bench-analyze *ARGS: release
    cargo build --release -p netblame-cli --example gen_run
    python3 bench/bench_analyze.py {{ARGS}}

# The pictures of a run (report.html, trace.pftrace, capture-annotated.pcapng): sizes, cost to
# analyze, and load times in Chromium, Perfetto's schema and tshark, for the demo and a 1 M-read run.
bench-renders *ARGS: release
    cargo build --release -p netblame-cli --example gen_run
    python3 bench/bench_renders.py {{ARGS}}

# What the pytest plugin costs a suite: the same pytest command under `netblame run` with and
# without the plugin, and without netblame, alternating (root). E.g.
# `just bench-pytest-plugin --cwd ../redis-py -- python3 -m pytest -q tests/test_commands.py`.
bench-pytest-plugin *ARGS: release
    python3 bench/bench_pytest_plugin.py {{ARGS}}

# Install netblame into ~/.cargo/bin (the interposer is embedded in the binary).
install:
    cargo install --locked --path crates/cli

# Fuzz one target (capture, event_log, events_jsonl, analyze) for SECONDS with AFL++ (cargo-afl,
# stable Rust). Crashes and hangs land in fuzz/regressions/TARGET, which `cargo test` replays.
fuzz TARGET SECONDS *ARGS:
    scripts/fuzz {{TARGET}} {{SECONDS}} {{ARGS}}

# Every fuzz target for SECONDS each, from its seeds (what CI runs, a minute each).
fuzz-all SECONDS="60":
    #!/usr/bin/env bash
    set -uo pipefail
    passed=0 failed=0
    for t in capture event_log events_jsonl analyze; do
        if scripts/fuzz $t {{SECONDS}} --fresh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
    echo "fuzz: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
