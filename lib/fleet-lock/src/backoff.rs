//! Retry pauses (pure): exponential back-off with jitter, deterministic for a
//! given random input so it can be tested with tables.
//!
//! When every reboot slot is taken, all waiting hosts retry; without jitter
//! the hosts that failed together retry together. "Equal jitter" keeps the
//! pause between half and all of the exponential ceiling: spread out, and
//! never a hot loop (full jitter could draw 0).

use std::time::Duration;

/// The back-off curve: the `n`-th retry (from 0) waits between half and all
/// of `min(cap, base · 2ⁿ)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    /// 15 s doubling up to 10 min: a host waiting for a slot asks a few
    /// times a minute at first, and a large fleet waiting behind a stuck
    /// slot sends about one request per host per 7.5 min on average.
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(15),
            cap: Duration::from_secs(600),
        }
    }
}

impl BackoffPolicy {
    /// The ceiling of retry `attempt` (0-based): `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The pause before retry `attempt` (0-based) for the random draw
    /// `random`: `ceiling/2 + random mod (ceiling/2 + 1)`, in milliseconds.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis().min(u64::MAX as u128) as u64;
        let half = ceiling / 2;
        let spread = (ceiling - half).saturating_add(1);
        Duration::from_millis(half + random % spread)
    }
}

/// A sequence of pauses from one seed (e.g. from `getrandom`, or the node id
/// for a fixed per-host pattern): the same seed gives the same pauses.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    state: u64,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            state: seed,
            attempt: 0,
        }
    }

    /// The pause before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt, splitmix64(&mut self.state));
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Retries made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a success: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// SplitMix64: a small, well-mixed generator for jitter (not for secrets).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn delays() {
        let p = BackoffPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        // (attempt, random, delay)
        let table = [
            (0, 0, MS(500)),
            (0, 500, MS(1000)),
            (0, 501, MS(500)), // wraps: 501 mod 501
            (0, 250, MS(750)),
            (1, 0, MS(1000)),
            (1, 1000, MS(2000)),
            (2, 0, MS(2000)),
            (3, 3999, MS(7999)),
            (4, 0, MS(5000)), // capped at 10 s
            (4, 5000, MS(10_000)),
            (31, 7, MS(5007)),
            (32, 7, MS(5007)), // shift overflow: still the cap
            (u32::MAX, u64::MAX, MS(5000 + u64::MAX % 5001)),
        ];
        for (attempt, random, want) in table {
            assert_eq!(
                p.delay(attempt, random),
                want,
                "attempt {attempt} random {random}"
            );
        }
    }

    #[test]
    fn edge_policies() {
        let zero = BackoffPolicy {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(zero.delay(5, 123), Duration::ZERO);
        let odd = BackoffPolicy {
            base: MS(3),
            cap: Duration::from_secs(1),
        };
        // ceiling 3: 1 + r mod 3
        assert_eq!(odd.delay(0, 0), MS(1));
        assert_eq!(odd.delay(0, 2), MS(3));
        let huge = BackoffPolicy {
            base: Duration::from_secs(u64::MAX / 2),
            cap: Duration::MAX,
        };
        assert!(huge.delay(40, 1) >= Duration::from_secs(1 << 40));
    }

    #[test]
    fn a_sequence_is_reproducible_grows_and_resets() {
        let p = BackoffPolicy::default();
        let mut a = Backoff::new(p, 42);
        let mut b = Backoff::new(p, 42);
        let first: Vec<Duration> = (0..8).map(|_| a.next_delay()).collect();
        let again: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(first, again);
        assert_eq!(a.attempts(), 8);
        for (n, d) in first.iter().enumerate() {
            let c = p.ceiling(n as u32);
            assert!(*d >= c / 2 && *d <= c, "{n}: {d:?} vs {c:?}");
        }
        assert_eq!(first[7], first[7].min(p.cap));
        let other: Vec<Duration> = {
            let mut c = Backoff::new(p, 43);
            (0..8).map(|_| c.next_delay()).collect()
        };
        assert_ne!(first, other, "another seed, other jitter");
        a.reset();
        assert!(a.next_delay() <= p.base);
    }
}
