//! The retry policy, for the whole download and for each parallel connection alike:
//! capped exponential backoff with jitter, the server's own wait honoured, a data-bearing
//! connection resumed at once, waits cut short by a stop, and the budget of fresh links.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::DownloadsConfig;
use crate::engine::EngineError;

/// How many presigned links in a row may be refused, with no byte received in between,
/// before the refusal is taken for what it says.
pub const LINK_REFRESHES: u32 = 3;

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

/// Consecutive failures of one download or one connection, and what they call for.
#[derive(Debug)]
pub(in crate::engine) struct Retries {
    failures: u32,
    max: u32,
    base: Duration,
}

impl Retries {
    pub(in crate::engine) fn new(settings: &DownloadsConfig) -> Retries {
        Retries {
            failures: 0,
            max: settings.max_retries,
            base: Duration::from_millis(settings.retry_base_delay_ms),
        }
    }

    /// Failures in a row so far (1 after the first).
    pub(in crate::engine) fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures (a connection moving on to another segment).
    pub(in crate::engine) fn reset(&mut self) {
        self.failures = 0;
    }

    /// After `err` (`progressed`: the attempt delivered bytes first): how long to wait
    /// before the next attempt, or `None` when there is to be none (the error is not
    /// transient, or too many attempts in a row delivered nothing).
    pub(in crate::engine) fn after(
        &mut self,
        err: &EngineError,
        progressed: bool,
    ) -> Option<Duration> {
        if !err.is_transient() {
            return None;
        }
        // A trickle delivers a few bytes each time: were that progress, it would be
        // resumed at once for ever and hold its slot. It backs off like a failure.
        let progressed = progressed && !matches!(err, EngineError::TooSlow { .. });
        self.failures = if progressed { 1 } else { self.failures + 1 };
        if self.failures > self.max {
            return None;
        }
        // A connection that dropped after delivering data is resumed at once; only
        // attempts that got nothing back off.
        Some(if progressed && err.retry_after().is_none() {
            Duration::ZERO
        } else {
            backoff(self.failures, self.base, err.retry_after())
        })
    }
}

/// Sleeps `wait`, unless asked to stop first: false then.
pub(in crate::engine) async fn sleep_unless_stopped(
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Presigned links refused in a row, with no byte received in between (see
/// [`LINK_REFRESHES`]).
#[derive(Debug, Default)]
pub(in crate::engine) struct LinkBudget {
    refused: u32,
    /// Bytes held at the last refusal: any change since means the link did work.
    at: u64,
}

impl LinkBudget {
    /// Counts a refused link, with `held` bytes held now; true while another fresh
    /// link may be asked for.
    pub(in crate::engine) fn refused(&mut self, held: u64) -> bool {
        if held != self.at {
            self.refused = 0;
            self.at = held;
        }
        self.refused += 1;
        self.refused <= LINK_REFRESHES
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

    fn retries(max: u32) -> Retries {
        Retries {
            failures: 0,
            max,
            base: Duration::from_millis(100),
        }
    }

    #[test]
    fn failures_in_a_row_are_bounded_and_progress_resets_them() {
        let net = EngineError::Network("reset".into());
        let mut r = retries(2);
        assert!(r
            .after(&net, false)
            .is_some_and(|w| w >= Duration::from_millis(80)));
        assert!(r.after(&net, false).is_some());
        assert_eq!(
            r.after(&net, false),
            None,
            "the third failure in a row is one too many"
        );
        let mut r = retries(2);
        for _ in 0..10 {
            assert_eq!(
                r.after(&net, true),
                Some(Duration::ZERO),
                "data came: at once"
            );
        }
        assert_eq!(r.failures(), 1);
        let not_found = EngineError::Status {
            status: 404,
            retry_after: None,
        };
        assert_eq!(retries(5).after(&not_found, false), None);
        let busy = EngineError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            retries(5).after(&busy, true),
            Some(Duration::from_secs(2)),
            "the server's wait, even after data"
        );
    }

    #[test]
    fn a_link_budget_counts_refusals_without_bytes_between() {
        let mut b = LinkBudget::default();
        for _ in 0..LINK_REFRESHES {
            assert!(b.refused(0));
        }
        assert!(!b.refused(0));
        assert!(b.refused(10), "bytes came since: a fresh budget");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_wait_short() {
        let (tx, mut rx) = watch::channel(false);
        assert!(sleep_unless_stopped(Duration::from_secs(5), &mut rx).await);
        tx.send(true).unwrap();
        assert!(!sleep_unless_stopped(Duration::from_secs(3600), &mut rx).await);
    }
}
