//! Live progress of one running download. Its engine writes the byte counters; the
//! progress tick samples them into a smoothed speed; whoever shows the download (the
//! websocket frames, the REST views) reads the cell. Data flows one way: engine → cell
//! → readers. Atomics, so the byte loop never takes a lock or sends a message per chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::queue::model::Live;

const UNKNOWN: u64 = u64::MAX;

/// Counters of one running download.
#[derive(Debug)]
pub struct ProgressCell {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    /// Downloading time of earlier runs; this run's is measured from `started`.
    base_elapsed: f64,
    started: Instant,
    /// Advanced by the progress tick only (never by the byte loop).
    meter: Mutex<SpeedMeter>,
    /// The last smoothed speed, in bytes per second.
    speed_bps: AtomicU64,
}

impl ProgressCell {
    pub fn new(bytes_done: u64, bytes_total: Option<u64>, base_elapsed: f64) -> Self {
        Self {
            bytes_done: AtomicU64::new(bytes_done),
            bytes_total: AtomicU64::new(bytes_total.unwrap_or(UNKNOWN)),
            base_elapsed,
            started: Instant::now(),
            meter: Mutex::new(SpeedMeter::new(bytes_done, Instant::now())),
            speed_bps: AtomicU64::new(0),
        }
    }

    pub fn set_done(&self, bytes: u64) {
        self.bytes_done.store(bytes, Ordering::Relaxed);
    }

    /// Adds bytes from one of several parallel connections.
    pub fn add_done(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.bytes_total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> Option<u64> {
        match self.bytes_total.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// Downloading time across pauses and restarts.
    pub fn elapsed_secs(&self) -> f64 {
        self.base_elapsed + self.started.elapsed().as_secs_f64()
    }

    /// The progress tick: feeds the speed meter and returns the numbers now.
    pub fn sample(&self, now: Instant) -> Live {
        let done = self.done();
        if let Ok(mut meter) = self.meter.lock() {
            let speed = meter.sample(done, now);
            self.speed_bps
                .store(speed.round() as u64, Ordering::Relaxed);
        }
        self.live()
    }

    /// The numbers now, with the speed of the last tick.
    pub fn live(&self) -> Live {
        let done = self.done();
        let total = self.total();
        let speed = self.speed_bps.load(Ordering::Relaxed);
        Live {
            bytes_done: done,
            bytes_total: total,
            speed_bps: speed,
            eta_secs: eta_secs(done, total, speed as f64),
            elapsed_secs: (self.elapsed_secs() * 100.0).round() / 100.0,
        }
    }
}

/// A smoothed transfer rate: an exponentially weighted moving average whose weight
/// follows the real time between samples, so an irregular tick does not skew it.
#[derive(Debug, Clone)]
pub struct SpeedMeter {
    last_bytes: u64,
    last_at: Instant,
    rate: Option<f64>,
}

/// The averaging time constant: long enough to smooth chunky arrivals, short enough that
/// the shown speed converges within a few seconds after a change.
const TAU_SECS: f64 = 2.0;

impl SpeedMeter {
    pub fn new(bytes: u64, now: Instant) -> Self {
        Self {
            last_bytes: bytes,
            last_at: now,
            rate: None,
        }
    }

    /// Feeds the byte counter at `now`; returns the smoothed rate in bytes per second.
    pub fn sample(&mut self, bytes: u64, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.last_at).as_secs_f64();
        if dt <= 0.0 {
            return self.rate.unwrap_or(0.0);
        }
        // A restart from byte 0 makes the counter go down: treat it as no progress.
        let delta = bytes.saturating_sub(self.last_bytes) as f64;
        let instant = delta / dt;
        let rate = match self.rate {
            None => instant,
            Some(prev) => {
                let alpha = 1.0 - (-dt / TAU_SECS).exp();
                prev + alpha * (instant - prev)
            }
        };
        self.rate = Some(rate);
        self.last_bytes = bytes;
        self.last_at = now;
        rate
    }
}

/// Seconds left at `speed`, when both the total and a rate are known.
pub fn eta_secs(done: u64, total: Option<u64>, speed: f64) -> Option<u64> {
    let total = total?;
    if speed < 1.0 {
        return None;
    }
    Some((total.saturating_sub(done) as f64 / speed).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn speed_converges_to_a_steady_rate() {
        let t0 = Instant::now();
        let mut m = SpeedMeter::new(0, t0);
        let mut bytes = 0u64;
        let mut rate = 0.0;
        // A bursty source: 1 MiB every other 100 ms tick = 5 MiB/s on average.
        for tick in 1..=50u64 {
            if tick % 2 == 0 {
                bytes += 1 << 20;
            }
            rate = m.sample(bytes, t0 + Duration::from_millis(100 * tick));
        }
        let truth = 5.0 * (1 << 20) as f64;
        assert!((rate - truth).abs() / truth < 0.3, "rate {rate} vs {truth}");
    }

    #[test]
    fn a_cell_shows_the_speed_of_its_last_tick() {
        let cell = ProgressCell::new(0, Some(10 << 20), 0.0);
        assert_eq!(cell.live().speed_bps, 0, "no tick yet");
        cell.set_done(1 << 20);
        let later = Instant::now() + Duration::from_secs(1);
        let sampled = cell.sample(later);
        assert!(sampled.speed_bps > 0, "{sampled:?}");
        assert_eq!(cell.live().speed_bps, sampled.speed_bps);
        assert_eq!(cell.live().bytes_done, 1 << 20);
        assert!(cell.live().eta_secs.is_some());
    }

    #[test]
    fn eta_needs_total_and_speed() {
        assert_eq!(eta_secs(50, Some(150), 10.0), Some(10));
        assert_eq!(eta_secs(50, None, 10.0), None);
        assert_eq!(eta_secs(50, Some(150), 0.0), None);
    }
}
