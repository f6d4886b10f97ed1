//! The sans-IO rotation schedule: when to renew an SVID, when to retry after a failure, and when
//! the current one must stop being served. Time and randomness are arguments, so tests drive it
//! with a virtual clock and fixed jitter; the tokio driver in [`crate::manager`] is thin.

use std::time::{Duration, SystemTime};

/// How renewals are timed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotationPolicy {
    /// Renew at this fraction of the SVID's lifetime (from notBefore), before jitter.
    pub refresh_fraction: f64,
    /// Spread renewals uniformly over ± this fraction of the lifetime around
    /// `refresh_fraction`, so a fleet issued at once does not renew at once.
    pub jitter_fraction: f64,
    /// First retry delay after a failed renewal.
    pub backoff_initial: Duration,
    /// Longest retry delay; non-retryable failures wait this long.
    pub backoff_max: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            refresh_fraction: 0.5,
            jitter_fraction: 0.2,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(150),
        }
    }
}

/// What the driver must do next for one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Request a new SVID (first fetch, scheduled renewal, or retry).
    Renew,
    /// The served SVID reached notAfter: stop serving it (fail closed).
    Expire,
}

/// The schedule for one identity.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationSchedule {
    policy: RotationPolicy,
    /// Validity of the SVID being served, if any.
    current: Option<(SystemTime, SystemTime)>,
    /// When to ask the CA next.
    renew_at: SystemTime,
    /// Consecutive failures since the last success.
    failures: u32,
}

impl RotationSchedule {
    /// A schedule with nothing served yet: renew (fetch) at once.
    pub fn new(policy: RotationPolicy, now: SystemTime) -> Self {
        Self {
            policy,
            current: None,
            renew_at: now,
            failures: 0,
        }
    }

    /// The earliest moment something must happen, and what.
    pub fn next(&self) -> (SystemTime, Action) {
        match self.current {
            Some((_, not_after)) if not_after < self.renew_at => (not_after, Action::Expire),
            _ => (self.renew_at, Action::Renew),
        }
    }

    /// Whether an SVID is being served that is valid at `now`.
    pub fn serving(&self, now: SystemTime) -> bool {
        self.current.is_some_and(|(nb, na)| nb <= now && now <= na)
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The validity window of the served SVID.
    pub fn current(&self) -> Option<(SystemTime, SystemTime)> {
        self.current
    }

    /// A new SVID valid over `[not_before, not_after]` is being served from `now` on. `jitter`
    /// is a uniform sample from `[0, 1)`. Returns when to renew it: the fraction of the
    /// lifetime counts from `now` or notBefore, whichever is later, so a CA's backdated
    /// notBefore does not pull renewals forward.
    pub fn on_issued(
        &mut self,
        now: SystemTime,
        not_before: SystemTime,
        not_after: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        self.current = Some((not_before, not_after));
        self.failures = 0;
        let start = now.max(not_before);
        let life = not_after
            .duration_since(start)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let p = self.policy;
        let frac = (p.refresh_fraction + p.jitter_fraction * (2.0 * jitter.clamp(0.0, 1.0) - 1.0))
            .clamp(0.05, 0.95);
        self.renew_at = start + Duration::from_secs_f64(life * frac);
        self.renew_at
    }

    /// A renewal failed at `now`. `retryable` says whether the CA said trying again may work;
    /// `jitter` is a uniform sample from `[0, 1)`. Returns when to try again. The served SVID,
    /// if any, stays served until its notAfter.
    pub fn on_failure(&mut self, now: SystemTime, retryable: bool, jitter: f64) -> SystemTime {
        self.failures = self.failures.saturating_add(1);
        let p = self.policy;
        let ceiling = if retryable {
            let exp = self.failures.saturating_sub(1).min(30);
            p.backoff_initial
                .saturating_mul(1u32 << exp)
                .min(p.backoff_max)
        } else {
            p.backoff_max
        };
        // "Equal jitter": half fixed, half random, so retries neither synchronise nor collapse.
        let delay = ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.renew_at = now + delay;
        self.renew_at
    }

    /// The served SVID expired: stop serving it. The renewal deadline is unchanged.
    pub fn on_expired(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn fresh_schedule_renews_now() {
        let s = RotationSchedule::new(RotationPolicy::default(), t(0));
        assert_eq!(s.next(), (t(0), Action::Renew));
        assert!(!s.serving(t(0)));
    }

    #[test]
    fn renewal_lands_in_the_jitter_window() {
        let mut s = RotationSchedule::new(RotationPolicy::default(), t(0));
        assert_eq!(s.on_issued(t(0), t(0), t(100), 0.5), t(50));
        assert_eq!(s.on_issued(t(0), t(0), t(100), 0.0), t(30));
        let late = s.on_issued(t(0), t(0), t(100), 0.999_999);
        assert!(late > t(69) && late <= t(70), "{late:?}");
        assert!(s.serving(t(10)));
        assert!(!s.serving(t(101)));
        // A backdated notBefore does not pull the renewal forward.
        assert_eq!(s.on_issued(t(30), t(0), t(130), 0.5), t(80));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_serving_continues() {
        let mut s = RotationSchedule::new(RotationPolicy::default(), t(0));
        s.on_issued(t(0), t(0), t(1000), 0.5);
        let mut now = t(100);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let at = s.on_failure(now, true, 1.0);
            ceilings.push(at.duration_since(now).unwrap().as_secs());
            now = at;
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 64, 128, 150, 150]);
        assert!(
            s.serving(now),
            "the old SVID is still served before notAfter"
        );
        // With jitter 0 the delay is half the ceiling.
        let at = s.on_failure(now, true, 0.0);
        assert_eq!(at.duration_since(now).unwrap(), Duration::from_secs(75));
        // Non-retryable failures wait the maximum.
        let at = s.on_failure(now, false, 1.0);
        assert_eq!(at.duration_since(now).unwrap(), Duration::from_secs(150));
        // A success resets the count.
        s.on_issued(now, now, now + Duration::from_secs(100), 0.5);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn expiry_comes_first_when_retries_outrun_it() {
        let mut s = RotationSchedule::new(RotationPolicy::default(), t(0));
        s.on_issued(t(0), t(0), t(60), 0.5);
        s.on_failure(t(59), false, 1.0);
        assert_eq!(s.next(), (t(60), Action::Expire));
        s.on_expired();
        assert_eq!(s.next(), (t(59 + 150), Action::Renew));
        assert!(!s.serving(t(61)));
    }

    proptest! {
        /// Renewal is always inside the lifetime and inside the configured window; retries are
        /// always in the future and never beyond the cap.
        #[test]
        fn schedule_invariants(
            life in 60u64..86_400,
            jitter in 0.0f64..1.0,
            failures in 0usize..40,
            retryable in any::<bool>(),
        ) {
            let p = RotationPolicy::default();
            let mut s = RotationSchedule::new(p, t(0));
            let at = s.on_issued(t(0), t(0), t(life), jitter);
            let lo = t(0) + Duration::from_secs_f64(life as f64 * 0.3) - Duration::from_millis(1);
            let hi = t(0) + Duration::from_secs_f64(life as f64 * 0.7) + Duration::from_millis(1);
            prop_assert!(at >= lo && at <= hi);
            let mut now = at;
            for _ in 0..failures {
                let next = s.on_failure(now, retryable, jitter);
                prop_assert!(next >= now + p.backoff_initial / 2);
                prop_assert!(next <= now + p.backoff_max);
                now = next;
            }
            let (when, _) = s.next();
            prop_assert!(when <= t(life).max(now));
        }
    }
}
