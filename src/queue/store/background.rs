//! sled's flush after a commit, in the background.
//!
//! A commit ([`super::Store::commit`]) makes download records durable by syncing the
//! journal alone, which start-up replays over sled (`startup`). sled's own flush (several
//! fsyncs) and the journal's `Durable` mark can follow later, and one of them covers
//! every commit of a burst: this thread runs [`super::Store::flush_blocking`] a moment
//! after the first commit that nothing flushed since.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Inner, Store};

/// How long a commit waits for sled's flush: long enough for a script's burst of adds
/// to share one, short next to sled's own background flush (500 ms) and to the lag
/// that start-up forgives (writes after the last `Durable` mark, brought up quietly).
const WINDOW: Duration = Duration::from_millis(100);

const THREAD_NAME: &str = "store-flush";

#[derive(Default)]
struct Flags {
    /// A commit happened that no flush has covered yet.
    poked: bool,
    /// The store is gone: the thread ends.
    closed: bool,
    /// The thread holds the store (it flushes): the store stays open until it is done.
    flushing: bool,
}

#[derive(Default)]
struct Signal {
    flags: Mutex<Flags>,
    wake: Condvar,
}

impl Signal {
    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        // The flags stay meaningful whatever panicked while holding them.
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle of the flushing thread, held by the store; dropping it ends the thread.
pub(super) struct Later {
    signal: Arc<Signal>,
}

impl Later {
    /// Starts the thread. It holds the store only weakly, and only while it flushes:
    /// a dropped store closes sled (and releases its lock) as it did without it.
    pub(super) fn start(store: Weak<Inner>) -> Later {
        let signal = Arc::new(Signal::default());
        let theirs = signal.clone();
        let spawned = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(&theirs, &store));
        if let Err(e) = spawned {
            // Nothing is lost without it: sled flushes on its own every 500 ms, and
            // every other change still flushes it before answering.
            tracing::warn!(error = %e, "cannot start the background flush of the database");
        }
        Later { signal }
    }

    /// Asks for a flush within [`WINDOW`].
    pub(super) fn poke(&self) {
        let mut flags = self.signal.flags();
        if !flags.poked {
            flags.poked = true;
            self.signal.wake.notify_all();
        }
    }
}

impl Later {
    /// Waits (at most a few seconds) for a flush on its way, so that a store whose
    /// last handle goes closes sled then, not a moment later on the flushing thread
    /// (a reopen in this process would find it in use). Never on that thread itself.
    pub(super) fn wait_idle(&self) {
        if std::thread::current().name() == Some(THREAD_NAME) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut flags = self.signal.flags();
        while flags.flushing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            flags = self
                .signal
                .wake
                .wait_timeout(flags, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        self.signal.flags().closed = true;
        self.signal.wake.notify_all();
    }
}

fn run(signal: &Signal, store: &Weak<Inner>) {
    loop {
        {
            let mut flags = signal.flags();
            while !flags.poked && !flags.closed {
                flags = signal.wake.wait(flags).unwrap_or_else(|p| p.into_inner());
            }
            // Commits of the window share the flush that follows it.
            let until = Instant::now() + WINDOW;
            while !flags.closed {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                flags = signal
                    .wake
                    .wait_timeout(flags, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if flags.closed {
                return;
            }
            flags.poked = false;
            flags.flushing = true;
        }
        if let Some(inner) = store.upgrade() {
            let store = Store { inner };
            if let Err(e) = store.flush_blocking() {
                // The commits stay durable in the journal; the next flush tries again.
                tracing::warn!(error = %e, "background flush of the database failed");
            }
            // Let go of the store before saying so: a drop waiting on us is the last.
            drop(store);
        }
        let mut flags = signal.flags();
        flags.flushing = false;
        signal.wake.notify_all();
        if flags.closed {
            return;
        }
    }
}
