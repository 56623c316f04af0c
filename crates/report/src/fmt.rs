//! Human-readable numbers for terminal output.

/// A duration in nanoseconds as `812 µs`, `3.2 ms`, `1.25 s`.
pub fn duration(ns: i64) -> String {
    let abs = ns.unsigned_abs();
    if abs < 1_000 {
        format!("{ns} ns")
    } else if abs < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if abs < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// An optional duration, `-` when absent.
pub fn opt_duration(ns: Option<i64>) -> String {
    ns.map_or_else(|| "-".to_string(), duration)
}

/// A byte count as `512 B`, `1.5 KB`, `3.2 MB`, `1.1 GB` (powers of 1000).
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if n < 1_000 {
        format!("{n} B")
    } else if n < 1_000_000 {
        format!("{:.1} KB", f / 1e3)
    } else if n < 1_000_000_000 {
        format!("{:.1} MB", f / 1e6)
    } else {
        format!("{:.2} GB", f / 1e9)
    }
}

/// A CLOCK_REALTIME time in ns as `2026-11-30 05:24:49.123456 UTC`.
pub fn utc(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S%.6f UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::duration(812_000), "812 µs");
        assert_eq!(super::duration(3_200_000), "3.2 ms");
        assert_eq!(super::duration(1_250_000_000), "1.25 s");
        assert_eq!(super::bytes(1_500), "1.5 KB");
        assert_eq!(super::opt_duration(None), "-");
        assert_eq!(
            super::utc(1_700_000_000_123_456_789),
            "2023-11-14 22:13:20.123456 UTC"
        );
    }
}
