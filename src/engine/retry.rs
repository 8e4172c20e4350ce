//! The retry policy: capped exponential backoff with jitter, and `Retry-After` honoured.

use std::time::Duration;

/// The longest a download ever waits between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait before attempt number `failures + 1`, after `failures` consecutive failures
/// (1-based): `base * 2^(failures-1)`, capped, minus up to 20 % jitter so that many
/// downloads failing together do not come back in lockstep. A server's `Retry-After`
/// is a floor: we never come back earlier than it asked.
pub fn backoff(failures: u32, base: Duration, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    let jitter = raw.mul_f64(fastrand::f64() * 0.2);
    let wait = raw - jitter;
    match retry_after {
        Some(asked) => wait.max(asked.min(MAX_BACKOFF)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let base = Duration::from_secs(2);
        for (failures, nominal) in [(1, 2), (2, 4), (3, 8), (10, 300), (40, 300)] {
            let w = backoff(failures, base, None);
            let nominal = Duration::from_secs(nominal);
            assert!(
                w <= nominal && w >= nominal.mul_f64(0.8),
                "{failures}: {w:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let w = backoff(1, Duration::from_millis(10), Some(Duration::from_secs(3)));
        assert_eq!(w, Duration::from_secs(3));
        let w = backoff(1, Duration::from_secs(10), Some(Duration::from_secs(1)));
        assert!(w >= Duration::from_secs(8));
    }
}
