//! Turning a log's TSC stamps into CLOCK_REALTIME nanoseconds.
//!
//! The interposer stamps calls with the TSC where the kernel keeps time by it, and writes clock
//! points, (ticks, realtime ns) read together, as it goes (`record::Kind::Clock`). A stamp is
//! placed on the line through the two points around it (the first or last two for a stamp
//! outside them), so the realtime clock's own rate (NTP's slewing) is followed from one point
//! to the next. A clock step between two points is spread over that gap.

/// The clock points of one log, in tick order.
#[derive(Debug, Clone, PartialEq)]
pub struct TickClock {
    points: Vec<(i64, i64)>,
}

impl TickClock {
    /// None with fewer than two points of distinct ticks (no rate to go by).
    pub fn new(mut points: Vec<(i64, i64)>) -> Option<TickClock> {
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        (points.len() >= 2).then_some(TickClock { points })
    }

    /// The realtime ns of `ticks`. `hint` is the segment last used: stamps come nearly in
    /// order, so the search mostly starts where it ends.
    pub fn realtime_ns(&self, ticks: i64, hint: &mut usize) -> i64 {
        let p = &self.points;
        // The segment [i, i + 1] holding ticks, or the nearest one at either end.
        let last = p.len() - 2;
        let mut i = (*hint).min(last);
        if !(p[i].0 <= ticks && ticks < p[i + 1].0) {
            i = p
                .partition_point(|q| q.0 <= ticks)
                .saturating_sub(1)
                .min(last);
            *hint = i;
        }
        let ((t0, r0), (t1, r1)) = (p[i], p[i + 1]);
        let ns = i128::from(r0)
            + (i128::from(ticks) - i128::from(t0)) * (i128::from(r1) - i128::from(r0))
                / (i128::from(t1) - i128::from(t0));
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 ticks a ns, and a point every 3,000,000 ticks, the realtime clock 100, 200, 300 and
    /// 400 ppm fast in turn.
    fn slewing() -> TickClock {
        let mut points = vec![(1_000, 1_700_000_000_000_000_000)];
        for k in 1..=4i64 {
            let (t, r) = *points.last().unwrap();
            points.push((t + 3_000_000, r + 1_000_000 + k * 100));
        }
        points.reverse(); // written out of order by several threads: sorted by the clock
        TickClock::new(points).unwrap()
    }

    #[test]
    fn points_map_to_their_realtime() {
        let c = slewing();
        let mut hint = 0;
        for &(t, r) in &c.points.clone() {
            assert_eq!(c.realtime_ns(t, &mut hint), r);
        }
    }

    #[test]
    fn between_points_follows_each_gaps_rate() {
        let c = slewing();
        let mut hint = 0;
        // Halfway through the second gap: 500,000 ns and half of its 200 ns of slew.
        let (t1, r1) = c.points[1];
        assert_eq!(c.realtime_ns(t1 + 1_500_000, &mut hint), r1 + 500_100);
        assert_eq!(hint, 1);
    }

    #[test]
    fn outside_the_points_extends_the_nearest_gap() {
        let c = slewing();
        let mut hint = 2;
        let (t0, r0) = c.points[0];
        assert_eq!(c.realtime_ns(t0 - 3_000, &mut hint), r0 - 1_000);
        let (tn, rn) = *c.points.last().unwrap();
        assert_eq!(c.realtime_ns(tn + 3_000_000, &mut hint), rn + 1_000_400);
    }

    #[test]
    fn one_point_is_no_clock() {
        assert_eq!(TickClock::new(vec![(5, 10)]), None);
        assert_eq!(TickClock::new(vec![(5, 10), (5, 11)]), None);
    }

    #[test]
    fn far_stamps_saturate() {
        let c = TickClock::new(vec![(0, 0), (1, i64::MAX / 2)]).unwrap();
        assert_eq!(c.realtime_ns(i64::MAX, &mut 0), i64::MAX);
    }
}
