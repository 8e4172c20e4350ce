//! Questions about the queue; they change nothing.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::{Reply, Supervisor};
use crate::actors::broadcaster::{Subscription, TakeSnapshot, Taken};
use crate::actors::frames;
use crate::actors::queue_error::QueueError;
use crate::config::DownloadsConfig;
use crate::queue::lifecycle::State;
use crate::queue::model::{DownloadId, DownloadView, Stats};

/// One download.
#[derive(Message)]
#[rtype(result = "Reply<DownloadView>")]
pub struct Get(pub DownloadId);

/// Downloads in the contract's order, a page at a time.
#[derive(Message)]
#[rtype(result = "Reply<(Vec<DownloadView>, Option<DownloadId>)>")]
pub struct List {
    pub state: Option<State>,
    pub after: Option<DownloadId>,
    pub limit: usize,
}

/// Finished, failed and cancelled downloads, newest first.
#[derive(Message)]
#[rtype(result = "Vec<DownloadView>")]
pub struct History {
    pub state: Option<State>,
    pub limit: usize,
}

#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// The run-time settings.
#[derive(Message)]
#[rtype(result = "DownloadsConfig")]
pub struct GetSettings;

/// A reader of the frames (a websocket client, the terminal): the snapshot (shared, in
/// pieces), then every frame.
#[derive(Message)]
#[rtype(result = "Subscription")]
pub struct Events;

impl Supervisor {
    fn page(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Reply<(Vec<DownloadView>, Option<DownloadId>)> {
        let page = self
            .queue
            .page(state, after, limit)
            .map_err(QueueError::UnknownCursor)?;
        let views = page
            .items
            .into_iter()
            .map(|(d, position)| self.view(d, position))
            .collect();
        Ok((views, page.next))
    }

    fn stats(&self) -> Stats {
        let mut bytes = 0;
        let mut speed = 0;
        for d in self.queue.iter() {
            match self.running.get(&d.id) {
                Some(r) => {
                    let live = r.cell.live();
                    bytes += live.bytes_done;
                    speed += live.speed_bps;
                }
                None => bytes += d.bytes_done,
            }
        }
        let mut by_state: BTreeMap<&'static str, usize> =
            State::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for d in self.queue.iter() {
            *by_state.entry(d.state.as_str()).or_default() += 1;
        }
        Stats {
            by_state,
            active: self.running.len(),
            queued: self.queue.waiting_len(),
            paused: self.count(State::Paused),
            completed: self.count(State::Completed),
            failed: self.count(State::Failed),
            speed_bps: speed,
            bytes_done_total: bytes,
        }
    }
}

impl Handler<Get> for Supervisor {
    type Result = Reply<DownloadView>;
    fn handle(&mut self, msg: Get, _: &mut Self::Context) -> Self::Result {
        self.view_of(&msg.0)
    }
}

impl Handler<List> for Supervisor {
    type Result = Reply<(Vec<DownloadView>, Option<DownloadId>)>;
    fn handle(&mut self, msg: List, _: &mut Self::Context) -> Self::Result {
        self.page(msg.state, msg.after.as_deref(), msg.limit)
    }
}

impl Handler<History> for Supervisor {
    type Result = MessageResult<History>;
    fn handle(&mut self, msg: History, _: &mut Self::Context) -> Self::Result {
        let done = self.queue.history(msg.state, msg.limit);
        MessageResult(done.into_iter().map(|d| self.view(d, None)).collect())
    }
}

impl Handler<GetStats> for Supervisor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<GetSettings> for Supervisor {
    type Result = MessageResult<GetSettings>;
    fn handle(&mut self, _: GetSettings, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.settings.clone())
    }
}

impl Supervisor {
    /// The queue as it is now, with the number of the last frame it accounts for:
    /// the current snapshot, or a new one.
    fn snapshot(&self) -> Taken {
        self.broadcaster.snapshot(|| {
            let downloads = self
                .page(None, None, usize::MAX)
                .map(|(v, _)| v)
                .unwrap_or_default();
            frames::snapshot_pieces(&downloads)
        })
    }
}

impl Handler<Events> for Supervisor {
    type Result = MessageResult<Events>;

    fn handle(&mut self, _: Events, ctx: &mut Self::Context) -> Self::Result {
        // Subscribed here, where changes are published: none is published between the
        // snapshot and the subscription.
        let first = self.snapshot();
        MessageResult(self.broadcaster.subscribe(first, ctx.address().recipient()))
    }
}

impl Handler<TakeSnapshot> for Supervisor {
    type Result = MessageResult<TakeSnapshot>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}
