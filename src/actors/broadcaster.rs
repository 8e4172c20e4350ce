//! The broadcaster: every websocket frame, numbered, over one `tokio::sync::broadcast`
//! channel. Sending never waits for a reader and a reader costs nothing of its own:
//! the channel keeps the last [`BACKLOG`] frames, shared by every reader, and tells a
//! reader that fell further behind than that (`Lagged`).
//!
//! A reader ([`Subscription`]) starts with a snapshot, then takes every frame after
//! it, in order: the numbers say when one is missing. A reader that lagged lost the
//! frames the channel no longer kept; when one of them came after what it was last
//! given, it takes a fresh snapshot and goes on from there, skipping the frames that
//! the snapshot already holds (those numbered up to the snapshot's number). So a slow
//! reader never blocks anyone, never holds more than the shared backlog, and never
//! silently misses a change; one that stopped reading altogether is let go by its
//! door (a send deadline).
//!
//! Changes (`state`, `removed`) are published only by the supervisor, which also builds
//! the snapshots, on its own thread: a snapshot built there holds exactly the changes
//! numbered up to the number it was taken at. One snapshot is shared by every reader
//! that needs one until the next change (or for [`SNAPSHOT_KEEP`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::actors::frames::{ClientFrame, Frame, Snapshot};
use crate::metrics::Metrics;

/// Frames kept for readers that are behind; one further behind takes a fresh snapshot.
pub const BACKLOG: usize = 1024;
/// A snapshot is let go this long after it was built (its memory with it).
pub const SNAPSHOT_KEEP: Duration = Duration::from_secs(5);

/// A frame and its number (one more than the frame sent before it).
#[derive(Clone)]
struct Numbered {
    seq: u64,
    frame: Frame,
}

/// A snapshot and the number of the last frame sent when it was handed out: it holds
/// every change numbered up to that.
#[derive(Clone)]
pub struct Taken {
    pub seq: u64,
    pub snapshot: Arc<Snapshot>,
}

/// A cheap-to-clone handle on the channel of frames.
#[derive(Clone)]
pub struct Broadcaster {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

struct State {
    /// `None` once closed (shutdown): readers end after the frames already sent.
    tx: Option<broadcast::Sender<Numbered>>,
    /// The number of the last frame sent.
    seq: u64,
    /// How many changes were published.
    changes: u64,
    /// The latest snapshot while no change was published since, and when it was built.
    current: Option<(Arc<Snapshot>, Instant)>,
}

impl State {
    fn send(&mut self, frame: Frame) {
        self.seq += 1;
        if let Some(tx) = &self.tx {
            // An error only says that nobody listens.
            let _ = tx.send(Numbered {
                seq: self.seq,
                frame,
            });
        }
    }
}

impl Broadcaster {
    pub fn new(metrics: Arc<Metrics>) -> Broadcaster {
        let (tx, _) = broadcast::channel(BACKLOG);
        Broadcaster {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    tx: Some(tx),
                    seq: 0,
                    changes: 0,
                    current: None,
                }),
                metrics,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A change (`state`, `removed`), from the supervisor: every snapshot built before
    /// it is out of date.
    pub fn publish(&self, frame: Frame) {
        let mut state = self.lock();
        state.current = None;
        state.changes += 1;
        state.send(frame);
    }

    /// A frame about what no snapshot holds (`progress`; the `library` frame, which a
    /// client that takes a snapshot reads again anyway): the current snapshot stays.
    pub fn announce(&self, frame: Frame) {
        self.lock().send(frame);
    }

    /// Whether anyone listens (frames for nobody need not be made).
    pub fn has_readers(&self) -> bool {
        self.lock()
            .tx
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// The current snapshot, or the one `build` makes, which becomes current. Only the
    /// supervisor calls this (with the queue as it is now): no change can be published
    /// while `build` runs, so the snapshot holds every change up to the number taken.
    pub fn snapshot(&self, build: impl FnOnce() -> Snapshot) -> Taken {
        let (seq, changes) = {
            let state = self.lock();
            if let Some((snapshot, _)) = &state.current {
                // No change since it was built: it is the queue as of now.
                return Taken {
                    seq: state.seq,
                    snapshot: snapshot.clone(),
                };
            }
            (state.seq, state.changes)
        };
        // Built without the lock, so that progress is announced meanwhile.
        let taken = Taken {
            seq,
            snapshot: Arc::new(build()),
        };
        let mut state = self.lock();
        debug_assert_eq!(
            state.changes, changes,
            "a change published by another thread"
        );
        if state.changes == changes {
            state.current = Some((taken.snapshot.clone(), Instant::now()));
        }
        taken
    }

    /// Lets go of a snapshot built more than [`SNAPSHOT_KEEP`] before `now`.
    pub fn forget_old_snapshot(&self, now: Instant) {
        let mut state = self.lock();
        if state
            .current
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > SNAPSHOT_KEEP)
        {
            state.current = None;
        }
    }

    /// A new reader: `first` (a snapshot taken just now, by the supervisor), then every
    /// frame sent from now on. `resync` builds the fresh snapshots it takes when it lags.
    pub fn subscribe(&self, first: Taken, resync: Recipient<TakeSnapshot>) -> Subscription {
        let state = self.lock();
        let rx = match &state.tx {
            Some(tx) => tx.subscribe(),
            // Closed: the snapshot, then the end.
            None => broadcast::channel(1).1,
        };
        // It gets the frames after this one; those since `first` was built are none
        // of its business (it is current: no change was published since).
        let last = state.seq.max(first.seq);
        drop(state);
        let metrics = self.shared.metrics.clone();
        metrics
            .websocket_clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Subscription {
            last,
            first: Some(first.snapshot),
            rx,
            behind: false,
            resync,
            metrics,
        }
    }

    /// Ends every reader once it has taken what was sent (shutdown).
    pub fn close(&self) {
        let mut state = self.lock();
        state.tx = None;
        state.current = None;
    }

    /// `do_send(Publish(frame))`: [`Broadcaster::publish`] as the supervisor's commands
    /// spell it (they were messages to an actor); to be renamed with those commands.
    pub fn do_send(&self, Publish(frame): Publish) {
        self.publish(frame);
    }
}

/// A change for every reader (`state`, `removed`); see [`Broadcaster::do_send`].
pub struct Publish(pub Frame);

/// Asked of the supervisor by a reader that lagged: a snapshot of the queue as it is.
#[derive(Message)]
#[rtype(result = "Taken")]
pub struct TakeSnapshot;

/// One reader of the frames (a websocket, the terminal): the snapshot first, then every
/// frame after it; a fresh snapshot whenever it fell behind.
pub struct Subscription {
    first: Option<Arc<Snapshot>>,
    /// The number of the last frame given (or that the last snapshot given accounts
    /// for): the next one to give is numbered one more.
    last: u64,
    rx: broadcast::Receiver<Numbered>,
    /// Missed a frame: the next one given is a fresh snapshot.
    behind: bool,
    resync: Recipient<TakeSnapshot>,
    metrics: Arc<Metrics>,
}

impl Subscription {
    /// The next frame; `None` once the broadcaster is closed (shutdown) or the queue
    /// is gone. Cancel-safe: a reader that missed a frame stays behind, and takes its
    /// snapshot on the next call, until it has it.
    pub async fn recv(&mut self) -> Option<ClientFrame> {
        if let Some(snapshot) = self.first.take() {
            return Some(ClientFrame::Snapshot(snapshot));
        }
        loop {
            if self.behind {
                let taken = self.resync.send(TakeSnapshot).await.ok()?;
                self.behind = false;
                self.last = taken.seq;
                return Some(ClientFrame::Snapshot(taken.snapshot));
            }
            match self.rx.recv().await {
                // Held by the last snapshot given.
                Ok(n) if n.seq <= self.last => {}
                Ok(n) if n.seq == self.last + 1 => {
                    self.last = n.seq;
                    return Some(ClientFrame::Text(n.frame));
                }
                // Frames before this one were dropped for this reader: a fresh
                // snapshot, taken after this frame was sent, holds what they changed.
                Ok(n) => {
                    let missed = n.seq - self.last - 1;
                    tracing::debug!(
                        missed,
                        "a reader of the frames fell behind: a fresh snapshot"
                    );
                    self.behind = true;
                }
                // The channel dropped frames that this reader had not read; the number
                // of the next one says whether any came after the last one given
                // (after a snapshot, the channel's oldest frames are often older).
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics
            .websocket_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A frame about something no snapshot holds, from a part that has an actor address
/// to send to rather than a [`Broadcaster`] (the library).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Announce(pub Frame);

/// Passes [`Announce`] messages on to [`Broadcaster::announce`].
struct Relay(Broadcaster);

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<Announce> for Relay {
    type Result = ();
    fn handle(&mut self, msg: Announce, _: &mut Self::Context) {
        self.0.announce(msg.0);
    }
}

impl Broadcaster {
    /// An address for [`Announce`] messages (inside the actix System).
    pub fn announcer(&self) -> Recipient<Announce> {
        Relay(self.clone()).start().recipient()
    }
}

#[cfg(test)]
#[path = "broadcaster_tests.rs"]
mod tests;
