//! TCP sequence numbers: 32-bit values compared and subtracted modulo 2^32.

use std::fmt;

/// A TCP sequence (or acknowledgment) number. Ordering is defined by RFC 1982 serial-number
/// arithmetic, so it is only meaningful between numbers less than 2^31 apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `earlier` to `self`, in (-2^31, 2^31].
    pub fn since(self, earlier: SeqNumber) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// `self + n`, wrapping at 2^32.
    pub fn wrapping_add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }

    /// True when `self` comes after `other` in sequence space.
    pub fn is_after(self, other: SeqNumber) -> bool {
        self.since(other) > 0
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq({})", self.0)
    }
}

/// Maps 32-bit sequence numbers of one direction onto a 64-bit position that never wraps.
///
/// Position 0 is the base (the ISN when the SYN was captured), so byte `k` of the stream sits at
/// position `k + 1`. Each number is unwrapped relative to the highest position seen so far,
/// which is correct as long as a segment is less than 2^31 bytes from the front of the stream.
#[derive(Debug, Clone, Copy)]
pub struct SeqUnwrapper {
    base: SeqNumber,
    front: i64,
}

impl SeqUnwrapper {
    /// Unwraps relative to `base` (the ISN, or one before the first sequence number seen).
    pub fn new(base: SeqNumber) -> Self {
        SeqUnwrapper { base, front: 0 }
    }

    /// The base sequence number (position 0).
    pub fn base(&self) -> SeqNumber {
        self.base
    }

    /// The 64-bit position of `seq`, without moving the front.
    pub fn position(&self, seq: SeqNumber) -> i64 {
        let front_seq = self.base.wrapping_add(self.front as u32);
        self.front + seq.since(front_seq) as i64
    }

    /// The 64-bit position of `seq`; advances the front when `seq` is beyond it.
    pub fn unwrap(&mut self, seq: SeqNumber) -> i64 {
        let pos = self.position(seq);
        if pos > self.front {
            self.front = pos;
        }
        pos
    }

    /// Records that a segment reached `end` (so later numbers unwrap against it).
    pub fn advance_to(&mut self, end: i64) {
        if end > self.front {
            self.front = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraparound_distance() {
        assert_eq!(SeqNumber(5).since(SeqNumber(u32::MAX - 4)), 10);
        assert_eq!(SeqNumber(u32::MAX - 4).since(SeqNumber(5)), -10);
        assert!(SeqNumber(3).is_after(SeqNumber(u32::MAX)));
        assert!(!SeqNumber(u32::MAX).is_after(SeqNumber(3)));
    }

    #[test]
    fn wraparound_unwrap_keeps_growing() {
        let mut u = SeqUnwrapper::new(SeqNumber(u32::MAX - 100));
        assert_eq!(u.unwrap(SeqNumber(u32::MAX - 99)), 1);
        assert_eq!(u.unwrap(SeqNumber(50)), 151);
        u.advance_to(151 + 3_000_000_000);
        let far = SeqNumber(u32::MAX - 100).wrapping_add((151u64 + 3_000_000_000) as u32);
        assert_eq!(u.position(far), 151 + 3_000_000_000);
        // numbers map to the position nearest the front (within 2^31 of it)
        assert_eq!(u.position(SeqNumber(50)), 151 + (1i64 << 32));
    }

    #[test]
    fn behind_the_front_is_negative_distance() {
        let mut u = SeqUnwrapper::new(SeqNumber(1000));
        u.unwrap(SeqNumber(5000));
        assert_eq!(u.position(SeqNumber(900)), -100);
    }
}
