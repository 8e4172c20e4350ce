//! The broadcaster: samples the progress cell of every running download on a fixed
//! tick and fans frames out to websocket clients. It writes nothing anyone else reads:
//! the REST views read the same cells.
//!
//! Each client has its own bounded queue, and a full queue never blocks anyone.
//! Progress frames are dropped for a client that is behind (the next one brings it up
//! to date). A client that cannot take a `state` or `removed` frame is not whole any
//! more: it gets nothing until a fresh snapshot fits in its queue, and is whole again
//! from it (the contract's promise of a snapshot). A client whose queue stays full for
//! too long has stopped reading, and is let go.
//!
//! Snapshots are built by the supervisor when asked ([`BuildSnapshot`]) and come back
//! through this actor's mailbox ([`SnapshotBuilt`]), behind every frame published
//! before them: one is current until the next `state` or `removed` frame, and every
//! client that needs one meanwhile shares it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::actors::frames::{self, ClientFrame, Frame, ProgressUpdate, Snapshot};
use crate::metrics::Metrics;
use crate::queue::model::DownloadId;
use crate::queue::progress::ProgressCell;

/// Frames a client may have queued before progress frames are dropped for it.
pub const CLIENT_QUEUE: usize = 64;
/// A client whose queue stays full this long has stopped reading: disconnect it.
const STUCK_CLIENT_LIMIT: Duration = Duration::from_secs(10);
/// A snapshot nobody asked for in this long is let go (its memory with it).
const SNAPSHOT_KEEP: Duration = Duration::from_secs(5);
/// A snapshot asked for and not built in this long is asked for again.
const SNAPSHOT_ASK_AGAIN: Duration = Duration::from_secs(5);

struct Tracked {
    cell: Arc<ProgressCell>,
    /// Bytes already counted in the metrics.
    counted: u64,
}

struct Client {
    tx: mpsc::Sender<ClientFrame>,
    full_since: Option<Instant>,
    /// Has had every frame since its last snapshot; `false` until its next one.
    whole: bool,
}

impl Client {
    fn new(tx: mpsc::Sender<ClientFrame>) -> Self {
        Client {
            tx,
            full_since: None,
            whole: false,
        }
    }

    fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }
}

/// The broadcaster actor.
pub struct Broadcaster {
    interval: Duration,
    tracked: HashMap<DownloadId, Tracked>,
    clients: Vec<Client>,
    metrics: Arc<Metrics>,
    /// Who builds snapshots (the supervisor), as the clients' registrations name it.
    builder: Option<Recipient<BuildSnapshot>>,
    /// The latest snapshot while it is current (nothing published since it was
    /// built), and when it came.
    current: Option<(Arc<Snapshot>, Instant)>,
    /// When a snapshot was asked for that has not come yet.
    asked: Option<Instant>,
}

impl Broadcaster {
    pub fn new(interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            interval,
            tracked: HashMap::new(),
            clients: Vec::new(),
            metrics,
            builder: None,
            current: None,
            asked: None,
        }
    }

    /// The number of connected websocket clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.let_go_of_stuck(now);
        if self
            .current
            .as_ref()
            .is_some_and(|(_, at)| now.duration_since(*at) > SNAPSHOT_KEEP)
        {
            self.current = None;
        }
        self.resync();
        if self.tracked.is_empty() {
            return;
        }
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
    /// cannot take it waits for a fresh snapshot, which holds it.
    fn send_to_all(&mut self, frame: Frame, reliable: bool) {
        self.deliver(frame, reliable);
        if reliable {
            // What it shows is out of date now.
            self.current = None;
        }
    }

    /// Sends a frame to every whole client; see [`Broadcaster::send_to_all`].
    fn deliver(&mut self, frame: Frame, reliable: bool) {
        let now = Instant::now();
        let before = self.clients.len();
        let mut behind = false;
        self.clients.retain_mut(|c| {
            if !c.whole {
                // Its next snapshot is built after this frame, and holds it.
                return !c.tx.is_closed();
            }
            match c.tx.try_send(ClientFrame::Text(frame.clone())) {
                Ok(()) => {
                    c.full_since = None;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let since = *c.full_since.get_or_insert(now);
                    if reliable {
                        c.whole = false;
                        behind = true;
                    }
                    now.duration_since(since) < STUCK_CLIENT_LIMIT
                }
            }
        });
        if self.clients.len() != before {
            self.clients_changed();
        }
        if behind {
            self.resync();
        }
    }

    /// Gives the current snapshot to every client that waits for one and has room for
    /// it, or asks for a snapshot when there is none.
    fn resync(&mut self) {
        if !self.clients.iter().any(|c| !c.whole && c.has_room()) {
            return;
        }
        let Some((snapshot, _)) = self.current.clone() else {
            self.ask_for_snapshot();
            return;
        };
        let before = self.clients.len();
        self.clients.retain_mut(|c| {
            if c.whole {
                return true;
            }
            match c.tx.try_send(ClientFrame::Snapshot(snapshot.clone())) {
                Ok(()) => {
                    c.whole = true;
                    c.full_since = None;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if self.clients.len() != before {
            self.clients_changed();
        }
    }

    fn ask_for_snapshot(&mut self) {
        if self
            .asked
            .is_some_and(|at| at.elapsed() < SNAPSHOT_ASK_AGAIN)
        {
            return;
        }
        if let Some(builder) = &self.builder {
            builder.do_send(BuildSnapshot);
            self.asked = Some(Instant::now());
        }
    }

    /// Lets go of clients that left, and of those whose queue has been full for too
    /// long (their socket is full too: they do not read).
    fn let_go_of_stuck(&mut self, now: Instant) {
        let before = self.clients.len();
        self.clients.retain_mut(|c| {
            if c.tx.is_closed() {
                return false;
            }
            if c.has_room() {
                if c.whole {
                    c.full_since = None;
                }
                return true;
            }
            let since = *c.full_since.get_or_insert(now);
            now.duration_since(since) < STUCK_CLIENT_LIMIT
        });
        if self.clients.len() != before {
            tracing::debug!(
                clients = self.clients.len(),
                "let go of websocket clients that stopped reading or left"
            );
            self.clients_changed();
        }
    }

    fn clients_changed(&self) {
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

/// A new websocket client: it gets a snapshot first (from `builder` when none is
/// current), then every frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddClient {
    pub tx: mpsc::Sender<ClientFrame>,
    pub builder: Recipient<BuildSnapshot>,
}

/// Asked of the supervisor: build a snapshot and send it as [`SnapshotBuilt`] to this
/// actor's mailbox, where it lands behind every frame published before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BuildSnapshot;

/// A snapshot of the queue as of this message's place in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotBuilt(pub Arc<Snapshot>);

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

/// A frame about something the snapshot does not hold (the `library` frame): every
/// whole client gets it; one that cannot take it is resynced (a client reads the
/// library again on a snapshot), and the current snapshot stays current.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Announce(pub Frame);

impl Handler<Announce> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: Announce, _: &mut Self::Context) {
        self.deliver(msg.0, true);
    }
}

impl Handler<AddClient> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: AddClient, _: &mut Self::Context) {
        self.builder = Some(msg.builder);
        self.clients.push(Client::new(msg.tx));
        self.clients_changed();
        self.resync();
    }
}

impl Handler<SnapshotBuilt> for Broadcaster {
    type Result = ();
    fn handle(&mut self, msg: SnapshotBuilt, _: &mut Self::Context) {
        self.asked = None;
        self.current = Some((msg.0, Instant::now()));
        self.resync();
    }
}

impl Handler<DisconnectAll> for Broadcaster {
    type Result = ();
    fn handle(&mut self, _: DisconnectAll, _: &mut Self::Context) {
        self.clients.clear();
        self.current = None;
        self.clients_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that already has its snapshot.
    fn broadcaster_with_client() -> (Broadcaster, mpsc::Receiver<ClientFrame>) {
        let mut b = Broadcaster::new(Duration::from_millis(300), Arc::default());
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        b.clients.push(Client {
            tx,
            full_since: None,
            whole: true,
        });
        (b, rx)
    }

    fn text(f: ClientFrame) -> String {
        match f {
            ClientFrame::Text(t) => t.to_string(),
            ClientFrame::Snapshot(s) => s.to_text().to_string(),
        }
    }

    fn a_snapshot() -> Arc<Snapshot> {
        Arc::new(frames::snapshot_pieces(&[]))
    }

    #[test]
    fn a_client_that_does_not_read_costs_a_bounded_queue() {
        let (mut b, mut rx) = broadcaster_with_client();
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
        // A state frame it cannot take: it waits for a snapshot, which holds that frame.
        b.send_to_all(Arc::from("state"), true);
        b.send_to_all(Arc::from("state 2"), true);
        assert_eq!(b.client_count(), 1);
        assert!(!b.clients[0].whole);
        assert_eq!(rx.len(), CLIENT_QUEUE, "still bounded");
        // Once it reads, it gets the snapshot, and then every frame again.
        while rx.try_recv().is_ok() {}
        b.current = Some((a_snapshot(), Instant::now()));
        b.resync();
        assert!(matches!(rx.try_recv(), Ok(ClientFrame::Snapshot(_))));
        b.send_to_all(Arc::from("state 3"), true);
        assert_eq!(rx.try_recv().ok().map(text).as_deref(), Some("state 3"));
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
    fn a_stuck_client_is_dropped_while_nothing_is_sent() {
        let (mut b, _rx) = broadcaster_with_client();
        for _ in 0..=CLIENT_QUEUE {
            b.send_to_all(Arc::from("state"), true);
        }
        b.let_go_of_stuck(Instant::now());
        assert_eq!(b.client_count(), 1);
        b.let_go_of_stuck(Instant::now() + STUCK_CLIENT_LIMIT + Duration::from_secs(1));
        assert_eq!(b.client_count(), 0, "idle ticks let go of it too");
    }

    #[test]
    fn a_reading_client_gets_every_frame() {
        let (mut b, mut rx) = broadcaster_with_client();
        for i in 0..3 * CLIENT_QUEUE {
            b.send_to_all(Arc::from(format!("{i}")), true);
            assert_eq!(rx.try_recv().ok().map(text), Some(format!("{i}")));
        }
        assert_eq!(b.client_count(), 1);
    }

    #[test]
    fn a_snapshot_is_shared_until_a_frame_is_published() {
        let mut b = Broadcaster::new(Duration::from_millis(300), Arc::default());
        let snapshot = a_snapshot();
        b.current = Some((snapshot.clone(), Instant::now()));
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            b.clients.push(Client::new(tx));
            b.resync();
            rxs.push(rx);
        }
        for rx in &mut rxs {
            match rx.try_recv() {
                Ok(ClientFrame::Snapshot(s)) => assert!(Arc::ptr_eq(&s, &snapshot)),
                _ => panic!("no snapshot"),
            }
        }
        b.send_to_all(Arc::from("state"), true);
        assert!(
            b.current.is_none(),
            "a published frame makes it out of date"
        );
        let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
        b.clients.push(Client::new(tx));
        b.resync();
        assert!(
            rx.try_recv().is_err(),
            "no out-of-date snapshot for a newcomer"
        );
        assert!(!b.clients[3].whole);
    }
}
