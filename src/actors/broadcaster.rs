//! The broadcaster: samples the progress cell of every running download on a fixed
//! tick and fans frames out to websocket clients. It writes nothing anyone else reads:
//! the REST views read the same cells.
//!
//! Each client has its own bounded queue. A full queue never blocks the tick: progress
//! frames are dropped for that client (the next one brings it up to date), and a client
//! that cannot take a `state` frame, or stays full for too long, is disconnected; it
//! reconnects and is whole again from the snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::actors::frames::{self, Frame, ProgressUpdate};
use crate::metrics::Metrics;
use crate::model::DownloadId;
use crate::progress::ProgressCell;

/// Frames a client may have queued before progress frames are dropped for it.
pub const CLIENT_QUEUE: usize = 64;
/// A client whose queue stays full this long has stopped reading: disconnect it.
const STUCK_CLIENT_LIMIT: Duration = Duration::from_secs(10);

struct Tracked {
    cell: Arc<ProgressCell>,
    /// Bytes already counted in the metrics.
    counted: u64,
}

struct Client {
    tx: mpsc::Sender<Frame>,
    full_since: Option<Instant>,
}

/// The broadcaster actor.
pub struct Broadcaster {
    interval: Duration,
    tracked: HashMap<DownloadId, Tracked>,
    clients: Vec<Client>,
    metrics: Arc<Metrics>,
}

impl Broadcaster {
    pub fn new(interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            interval,
            tracked: HashMap::new(),
            clients: Vec::new(),
            metrics,
        }
    }

    /// The number of connected websocket clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    fn tick(&mut self) {
        if self.tracked.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut updates = Vec::with_capacity(self.tracked.len());
        for (id, t) in self.tracked.iter_mut() {
            let live = t.cell.sample(now);
            self.metrics
                .add_bytes(live.bytes_done.saturating_sub(t.counted));
            t.counted = live.bytes_done;
            updates.push(ProgressUpdate {
                id: id.clone(),
                live,
            });
        }
        if !self.clients.is_empty() {
            let frame = frames::progress(&updates);
            self.send_to_all(frame, false);
        }
    }

    /// `reliable`: a frame that must not be lost (state, removed); a client that
    /// cannot take it is disconnected so that it resyncs from a snapshot.
    fn send_to_all(&mut self, frame: Frame, reliable: bool) {
        let now = Instant::now();
        let before = self.clients.len();
        self.clients
            .retain_mut(|c| match c.tx.try_send(frame.clone()) {
                Ok(()) => {
                    c.full_since = None;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if reliable {
                        return false;
                    }
                    let since = *c.full_since.get_or_insert(now);
                    now.duration_since(since) < STUCK_CLIENT_LIMIT
                }
            });
        if self.clients.len() != before {
            tracing::debug!(
                clients = self.clients.len(),
                "dropped websocket clients that fell behind or left"
            );
            self.notify_clients();
        }
    }

    fn notify_clients(&self) {
        self.metrics.websocket_clients.store(
            self.clients.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, _| act.tick());
    }
}

/// Start sampling a running download.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub id: DownloadId,
    pub cell: Arc<ProgressCell>,
}

/// Stop sampling a download (it stopped running).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Untrack {
    pub id: DownloadId,
}

/// A frame every client must get (`state`, `removed`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Frame);

/// A new websocket client; its snapshot is already in its queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddClient(pub mpsc::Sender<Frame>);

/// Disconnect every client (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DisconnectAll;

impl Handler<Track> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: Track, _: &mut Self::Context) {
        let counted = msg.cell.done();
        self.tracked.insert(
            msg.id,
            Tracked {
                cell: msg.cell,
                counted,
            },
        );
    }
}

impl Handler<Untrack> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: Untrack, _: &mut Self::Context) {
        if let Some(t) = self.tracked.remove(&msg.id) {
            self.metrics
                .add_bytes(t.cell.done().saturating_sub(t.counted));
        }
    }
}

impl Handler<Publish> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        self.send_to_all(msg.0, true);
    }
}

impl Handler<AddClient> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: AddClient, _: &mut Self::Context) {
        self.clients.push(Client {
            tx: msg.0,
            full_since: None,
        });
        self.notify_clients();
    }
}

impl Handler<DisconnectAll> for Broadcaster {
    type Result = ();
    fn handle(&mut self, _: DisconnectAll, _: &mut Self::Context) {
        self.clients.clear();
        self.notify_clients();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcaster_with_client() -> (Broadcaster, mpsc::Receiver<Frame>) {
        let mut b = Broadcaster::new(Duration::from_millis(300), Arc::default());
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        b.clients.push(Client {
            tx,
            full_since: None,
        });
        (b, rx)
    }

    #[test]
    fn a_client_that_does_not_read_costs_a_bounded_queue() {
        let (mut b, rx) = broadcaster_with_client();
        for _ in 0..10 * CLIENT_QUEUE {
            b.send_to_all(Arc::from("progress"), false);
        }
        assert_eq!(
            b.client_count(),
            1,
            "progress frames alone do not disconnect at once"
        );
        assert_eq!(
            rx.len(),
            CLIENT_QUEUE,
            "the queue is bounded; extra progress frames are dropped"
        );
        // A state frame it cannot take: disconnected, so that it resyncs from a snapshot.
        b.send_to_all(Arc::from("state"), true);
        assert_eq!(b.client_count(), 0);
    }

    #[test]
    fn a_client_stuck_too_long_is_dropped() {
        let (mut b, _rx) = broadcaster_with_client();
        for _ in 0..CLIENT_QUEUE {
            b.send_to_all(Arc::from("progress"), false);
        }
        b.send_to_all(Arc::from("progress"), false);
        assert_eq!(b.client_count(), 1);
        b.clients[0].full_since =
            Some(Instant::now() - STUCK_CLIENT_LIMIT - Duration::from_secs(1));
        b.send_to_all(Arc::from("progress"), false);
        assert_eq!(
            b.client_count(),
            0,
            "a client full for longer than the limit is dropped"
        );
    }

    #[test]
    fn a_reading_client_gets_every_frame() {
        let (mut b, mut rx) = broadcaster_with_client();
        for i in 0..3 * CLIENT_QUEUE {
            b.send_to_all(Arc::from(format!("{i}")), true);
            assert_eq!(rx.try_recv().ok().as_deref(), Some(format!("{i}").as_str()));
        }
        assert_eq!(b.client_count(), 1);
    }
}
