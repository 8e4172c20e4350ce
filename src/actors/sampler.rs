//! The progress sampler: on a fixed tick, reads the progress cell of every running
//! download, counts its new bytes in the metrics and announces one `progress` frame
//! for all of them (when anyone listens). It writes nothing anyone else reads: the
//! REST views read the same cells.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::broadcaster::Broadcaster;
use crate::actors::frames::{self, ProgressUpdate};
use crate::metrics::Metrics;
use crate::queue::model::DownloadId;
use crate::queue::progress::ProgressCell;

struct Tracked {
    cell: Arc<ProgressCell>,
    /// Bytes already counted in the metrics.
    counted: u64,
}

/// A cheap-to-clone handle on the sampler.
#[derive(Clone)]
pub struct Sampler {
    shared: Arc<Shared>,
}

struct Shared {
    /// Held for a whole tick, so that [`Sampler::untrack`] returns only once no
    /// `progress` frame can mention the download any more.
    tracked: Mutex<HashMap<DownloadId, Tracked>>,
    metrics: Arc<Metrics>,
    broadcaster: Broadcaster,
}

impl Sampler {
    /// Starts the tick (inside the actix System).
    pub fn start(interval: Duration, broadcaster: Broadcaster, metrics: Arc<Metrics>) -> Sampler {
        let sampler = Sampler {
            shared: Arc::new(Shared {
                tracked: Mutex::new(HashMap::new()),
                metrics,
                broadcaster,
            }),
        };
        Clock {
            sampler: sampler.clone(),
            interval,
        }
        .start();
        sampler
    }

    fn tracked(&self) -> MutexGuard<'_, HashMap<DownloadId, Tracked>> {
        self.shared
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts sampling a running download.
    pub fn track(&self, id: DownloadId, cell: Arc<ProgressCell>) {
        let counted = cell.done();
        self.tracked().insert(id, Tracked { cell, counted });
    }

    /// Stops sampling a download (it stopped running): no `progress` frame sent after
    /// this returns mentions it, so a `state` frame published after it is its last word.
    pub fn untrack(&self, id: &str) {
        if let Some(t) = self.tracked().remove(id) {
            let left = t.cell.done().saturating_sub(t.counted);
            self.shared.metrics.add_bytes(left);
        }
    }

    /// One tick: every running download's numbers, in one frame.
    fn tick(&self, now: Instant) {
        let broadcaster = &self.shared.broadcaster;
        broadcaster.forget_old_snapshot(now);
        let mut tracked = self.tracked();
        if tracked.is_empty() {
            return;
        }
        let mut updates = Vec::with_capacity(tracked.len());
        for (id, t) in tracked.iter_mut() {
            let live = t.cell.sample(now);
            self.shared
                .metrics
                .add_bytes(live.bytes_done.saturating_sub(t.counted));
            t.counted = live.bytes_done;
            updates.push(ProgressUpdate {
                id: id.clone(),
                live,
            });
        }
        if broadcaster.has_readers() {
            broadcaster.announce(frames::progress(&updates));
        }
    }
}

/// The sampler's tick, as an actor's interval.
struct Clock {
    sampler: Sampler,
    interval: Duration,
}

impl Actor for Clock {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |clock, _| clock.sampler.tick(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(broadcaster: &Broadcaster) -> Sampler {
        Sampler {
            shared: Arc::new(Shared {
                tracked: Mutex::new(HashMap::new()),
                metrics: Arc::default(),
                broadcaster: broadcaster.clone(),
            }),
        }
    }

    #[test]
    fn bytes_are_counted_once_and_untracked_downloads_leave_the_frames() {
        let broadcaster = Broadcaster::new(Arc::default());
        let s = sampler(&broadcaster);
        let cell = Arc::new(ProgressCell::new(100, Some(1000), 0.0));
        s.track("dl_1".into(), cell.clone());
        cell.add_done(50);
        s.tick(Instant::now());
        assert_eq!(
            s.shared
                .metrics
                .bytes_downloaded
                .load(std::sync::atomic::Ordering::Relaxed),
            50
        );
        cell.add_done(25);
        s.untrack("dl_1");
        assert_eq!(
            s.shared
                .metrics
                .bytes_downloaded
                .load(std::sync::atomic::Ordering::Relaxed),
            75,
            "the bytes since the last tick are counted when it stops"
        );
        assert!(s.tracked().is_empty());
    }
}
