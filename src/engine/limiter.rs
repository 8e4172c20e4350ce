//! Token buckets for the speed limits: one global bucket shared by every connection and
//! one per download. Rates change live; a waiter re-reads the rate at least every
//! 100 ms, so a new limit takes effect at once, not after a sleep computed from the old.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How much may pass at once after a quiet spell: 50 ms worth of the rate (at least
/// 64 KiB). Small, so that one download cannot burst past the others.
const BURST_SECS: f64 = 0.05;
const MIN_BURST: f64 = 64.0 * 1024.0;
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// A token bucket in bytes per second; 0 means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: a debt that callers wait out, so the long-run rate is exact.
    tokens: f64,
    last: Instant,
}

/// Charges `n` received bytes to the global bucket and to a download's own, waiting
/// while either is in debt. Returns false when `stop` turns true during that wait:
/// under a low limit it is long, and a pause must not sit it out.
pub async fn pace(
    global: &RateLimiter,
    own: &RateLimiter,
    n: usize,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if global.rate() == 0 && own.rate() == 0 {
        return true;
    }
    tokio::select! {
        _ = async {
            global.acquire(n).await;
            own.acquire(n).await;
        } => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

impl RateLimiter {
    pub fn new(rate_bps: u64) -> Self {
        Self {
            rate: AtomicU64::new(rate_bps),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub fn set_rate(&self, rate_bps: u64) {
        self.rate.store(rate_bps, Ordering::Relaxed);
    }

    /// Refills for the time passed and returns the tokens left (after taking `take`).
    fn settle(&self, take: f64, rate: f64) -> f64 {
        let mut b = match self.bucket.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        let burst = (rate * BURST_SECS).max(MIN_BURST);
        b.tokens = (b.tokens + rate * dt).min(burst) - take;
        b.tokens
    }

    /// Accounts for `n` bytes, sleeping as long as the bucket is in debt.
    pub async fn acquire(&self, n: usize) {
        let rate = self.rate();
        if rate == 0 {
            return;
        }
        let mut left = self.settle(n as f64, rate as f64);
        while left < 0.0 {
            let rate = self.rate();
            if rate == 0 {
                return;
            }
            let wait = Duration::from_secs_f64(-left / rate as f64).min(MAX_SLEEP);
            tokio::time::sleep(wait).await;
            left = self.settle(0.0, self.rate().max(1) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_over_time() {
        let limiter = RateLimiter::new(10 * 1024 * 1024);
        let start = tokio::time::Instant::now();
        let mut sent = 0usize;
        while start.elapsed() < Duration::from_secs(10) {
            limiter.acquire(64 * 1024).await;
            sent += 64 * 1024;
        }
        let rate = sent as f64 / start.elapsed().as_secs_f64();
        let want = 10.0 * 1024.0 * 1024.0;
        assert!((rate - want).abs() / want < 0.02, "rate {rate} vs {want}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_at_once() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1024));
        // Deep in debt at 1 KiB/s: 1 MiB would take 1000 s.
        let l = limiter.clone();
        let waiter = tokio::spawn(async move { l.acquire(1024 * 1024).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        limiter.set_rate(0);
        tokio::time::timeout(Duration::from_millis(200), waiter)
            .await
            .expect("lifting the limit releases the waiter within a tick")
            .unwrap();
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(0);
        let t = Instant::now();
        for _ in 0..1000 {
            limiter.acquire(1 << 20).await;
        }
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
