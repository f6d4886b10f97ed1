//! A per-caller token bucket for the CA server: sans-IO (time is an argument), with a bounded
//! number of tracked callers.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use fipstun_identity::spiffe::SpiffeId;

/// A refused request: the caller may try again after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry after {} ms", self.0.as_millis().max(1))
    }
}

/// Token buckets keyed by the caller's SPIFFE ID: each caller may make `burst` requests at once
/// and `rate_per_s` per second on average.
///
/// Each bucket is kept as one instant (the generic cell rate algorithm, GCRA, ITU-T I.371): the
/// time at which the caller's bucket is full again. Integer time arithmetic, so waits are
/// exact, and a caller whose bucket is full (that instant has passed) is in the same state as
/// one never seen.
///
/// Memory is bounded by `max_callers`: callers with full buckets are dropped whenever the table
/// is full; if every tracked caller is still active, a new caller is refused until one of them
/// goes idle (fail closed rather than forget someone's debt).
///
/// ```
/// use std::time::{Duration, Instant};
/// use fipstun_identity::spiffe::SpiffeId;
/// use fipstun_planes::rate_limit::RateLimiter;
///
/// let web = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web")?;
/// let mut limiter = RateLimiter::new(10, 2, 1000);
/// let t0 = Instant::now();
/// assert!(limiter.check(&web, t0).is_ok());
/// assert!(limiter.check(&web, t0).is_ok());
/// let retry = limiter.check(&web, t0).unwrap_err();
/// assert_eq!(retry.0, Duration::from_millis(100));
/// assert!(limiter.check(&web, t0 + retry.0).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    /// Time one token takes to come back: 1 s / rate.
    interval: Duration,
    /// How far ahead of now a bucket's full-again instant may be and still admit a request:
    /// `(burst - 1) * interval`.
    tolerance: Duration,
    max_callers: usize,
    /// Per caller: when its bucket is full again.
    full_at: HashMap<SpiffeId, Instant>,
}

impl RateLimiter {
    /// `rate_per_s` requests per second per caller on average, `burst` at once, at most
    /// `max_callers` callers tracked. Zeros are raised to 1: a limiter that refuses everyone
    /// would be a configuration mistake, not a policy.
    pub fn new(rate_per_s: u32, burst: u32, max_callers: usize) -> Self {
        let interval = Duration::from_secs(1) / rate_per_s.max(1);
        Self {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            max_callers: max_callers.max(1),
            full_at: HashMap::new(),
        }
    }

    /// Take one token from `caller`'s bucket at time `now`, or say how long until one is there.
    /// A `now` earlier than an earlier call's (two requests that read the clock in one order
    /// and took a lock in the other) is handled: it just finds less in the bucket.
    pub fn check(&mut self, caller: &SpiffeId, now: Instant) -> Result<(), RetryAfter> {
        if let Some(full_at) = self.full_at.get_mut(caller) {
            let ahead = full_at.saturating_duration_since(now);
            if ahead > self.tolerance {
                // Refusals cost nothing: the bucket is left as it was.
                return Err(RetryAfter(ahead - self.tolerance));
            }
            *full_at = (*full_at).max(now) + self.interval;
            return Ok(());
        }
        if self.full_at.len() >= self.max_callers {
            self.full_at.retain(|_, full_at| *full_at > now);
        }
        if self.full_at.len() >= self.max_callers {
            // Everyone tracked is active: the soonest one to go idle frees a place.
            let soonest = self
                .full_at
                .values()
                .map(|full_at| full_at.saturating_duration_since(now))
                .min()
                .unwrap_or(self.interval);
            return Err(RetryAfter(soonest));
        }
        self.full_at.insert(caller.clone(), now + self.interval);
        Ok(())
    }

    /// How many callers have a bucket (at most `max_callers`).
    pub fn tracked_callers(&self) -> usize {
        self.full_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: usize) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://example.org/ns/prod/sa/w{n}")).unwrap()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let mut limiter = RateLimiter::new(10, 20, 100);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(
                limiter.check(&id(0), t0),
                Ok(()),
                "request {i} of the burst"
            );
        }
        // The 21st at the same instant waits one token: 1/10 s.
        assert_eq!(limiter.check(&id(0), t0), Err(RetryAfter(100 * MS)));
        // 60 ms later, 40 ms to go; refusals did not cost anything.
        assert_eq!(
            limiter.check(&id(0), t0 + 60 * MS),
            Err(RetryAfter(40 * MS))
        );
        assert_eq!(limiter.check(&id(0), t0 + 100 * MS), Ok(()));
        assert!(limiter.check(&id(0), t0 + 100 * MS).is_err());
        // One second later, ten more.
        let t1 = t0 + 1100 * MS;
        for _ in 0..10 {
            assert_eq!(limiter.check(&id(0), t1), Ok(()));
        }
        assert!(limiter.check(&id(0), t1).is_err());
    }

    #[test]
    fn callers_have_separate_buckets() {
        let mut limiter = RateLimiter::new(1, 2, 100);
        let t0 = Instant::now();
        assert!(limiter.check(&id(0), t0).is_ok());
        assert!(limiter.check(&id(0), t0).is_ok());
        assert!(limiter.check(&id(0), t0).is_err());
        assert!(limiter.check(&id(1), t0).is_ok());
        assert!(limiter.check(&id(1), t0).is_ok());
        assert!(limiter.check(&id(1), t0).is_err());
    }

    #[test]
    fn a_clock_read_before_the_last_update_adds_no_tokens() {
        let mut limiter = RateLimiter::new(10, 1, 100);
        let t0 = Instant::now();
        assert!(limiter.check(&id(0), t0 + 50 * MS).is_ok());
        assert_eq!(
            limiter.check(&id(0), t0),
            Err(RetryAfter(150 * MS)),
            "100 ms after the admitted one"
        );
    }

    #[test]
    fn idle_callers_are_evicted_when_the_table_is_full() {
        let mut limiter = RateLimiter::new(10, 2, 3);
        let t0 = Instant::now();
        for n in 0..3 {
            assert!(limiter.check(&id(n), t0).is_ok());
        }
        assert_eq!(limiter.tracked_callers(), 3);
        // All three are still refilling (one token short, 100 ms): a fourth must wait for the
        // first of them to go idle.
        assert_eq!(limiter.check(&id(3), t0), Err(RetryAfter(100 * MS)));
        assert_eq!(limiter.tracked_callers(), 3);
        // Caller 0 keeps spending; 1 and 2 go idle and make room.
        assert!(limiter.check(&id(0), t0 + 50 * MS).is_ok());
        assert!(limiter.check(&id(3), t0 + 100 * MS).is_ok());
        assert_eq!(limiter.tracked_callers(), 2, "callers 1 and 2 dropped");
        // An evicted caller comes back with a full bucket, exactly as if it had been kept.
        assert!(limiter.check(&id(1), t0 + 100 * MS).is_ok());
        assert!(limiter.check(&id(1), t0 + 100 * MS).is_ok());
        assert!(limiter.check(&id(1), t0 + 100 * MS).is_err());
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let mut limiter = RateLimiter::new(0, 0, 0);
        let t0 = Instant::now();
        assert!(limiter.check(&id(0), t0).is_ok());
        assert_eq!(limiter.check(&id(0), t0), Err(RetryAfter(1000 * MS)));
        assert_eq!(limiter.check(&id(1), t0), Err(RetryAfter(1000 * MS)));
    }

    proptest! {
        /// Against random callers and clock steps: never more callers than the bound, and no
        /// caller gets more than `burst + rate * elapsed` requests through.
        #[test]
        fn memory_and_admissions_stay_bounded(
            steps in proptest::collection::vec((0usize..12, 0u64..300), 1..400),
        ) {
            let (rate, burst, max) = (5u32, 3u32, 4usize);
            let mut limiter = RateLimiter::new(rate, burst, max);
            let t0 = Instant::now();
            let mut now = t0;
            let mut admitted = [0u64; 12];
            for (caller, step_ms) in steps {
                now += Duration::from_millis(step_ms);
                if limiter.check(&id(caller), now).is_ok() {
                    admitted[caller] += 1;
                }
                prop_assert!(limiter.tracked_callers() <= max);
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            let ceiling = f64::from(burst) + elapsed * f64::from(rate);
            for (caller, n) in admitted.iter().enumerate() {
                prop_assert!(*n as f64 <= ceiling, "caller {caller}: {n} > {ceiling}");
            }
        }
    }
}
