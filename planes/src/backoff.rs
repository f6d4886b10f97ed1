//! Reconnect delays: exponential, capped, with "equal jitter" (half fixed, half random) so
//! that many workloads whose agent restarted do not reconnect in lockstep.

use std::time::Duration;

/// Exponential backoff with equal jitter. Sans-IO: the caller passes the random number.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `initial` and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, for `jitter` in `[0, 1)`: somewhere in
    /// `[ceiling / 2, ceiling]`, where the ceiling doubles per failure up to the cap.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_the_jitter_band() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for c in ceilings {
            let mut probe = b.clone();
            let low = probe.next_delay(0.0);
            let high = b.next_delay(0.999_999);
            assert_eq!(low, Duration::from_millis(c / 2));
            assert!(high <= Duration::from_millis(c) && high > Duration::from_millis(c * 99 / 100));
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }
}
