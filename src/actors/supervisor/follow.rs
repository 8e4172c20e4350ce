//! What those who follow the queue's files ask it: the downloads that complete, and
//! whether a download is writing a path; and what they learn of a finished file.

use actix::prelude::*;

use super::Supervisor;
use crate::queue::lifecycle::State;
use crate::queue::model::{Download, DownloadId};

/// Follow the downloads that complete (each record once, as it completes).
#[derive(Message)]
#[rtype(result = "tokio::sync::broadcast::Receiver<Download>")]
pub struct FollowCompletions;

impl Handler<FollowCompletions> for Supervisor {
    type Result = MessageResult<FollowCompletions>;
    fn handle(&mut self, _: FollowCompletions, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.completed.subscribe())
    }
}

/// The completed downloads that know the identity of the file they completed, as
/// their records: for a scan of the library, which takes a file for a download's only
/// while it is that very file.
#[derive(Message)]
#[rtype(result = "Vec<Download>")]
pub struct CompletedFiles;

impl Handler<CompletedFiles> for Supervisor {
    type Result = MessageResult<CompletedFiles>;
    fn handle(&mut self, _: CompletedFiles, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.queue
                .iter()
                .filter(|d| d.state == State::Completed && d.completed_as.is_some())
                .cloned()
                .collect(),
        )
    }
}

/// The live download (or one whose files are being removed) that holds `path`.
#[derive(Message)]
#[rtype(result = "Option<DownloadId>")]
pub struct WriterOf(pub String);

impl Handler<WriterOf> for Supervisor {
    type Result = Option<DownloadId>;
    fn handle(&mut self, msg: WriterOf, _: &mut Self::Context) -> Self::Result {
        if let Some(id) = self.cleaning.get(&msg.0) {
            return Some(id.clone());
        }
        self.queue
            .with_path(&msg.0)
            .find(|d| !d.state.is_finished() || self.is_busy(&d.id))
            .map(|d| d.id.clone())
    }
}

/// Every download that holds or held each path, newest first, each with its view and
/// whether it still holds the name (live, its engine stopping, or its files being
/// removed): what asking again for a source compares with.
#[derive(Message)]
#[rtype(result = "Vec<Vec<Holder>>")]
pub struct Holders(pub Vec<String>);

/// One download of a path, as [`Holders`] answers it.
pub struct Holder {
    pub record: Download,
    pub view: crate::queue::model::DownloadView,
    pub live: bool,
}

impl Handler<Holders> for Supervisor {
    type Result = MessageResult<Holders>;
    fn handle(&mut self, msg: Holders, _: &mut Self::Context) -> Self::Result {
        let holders = msg
            .0
            .iter()
            .map(|path| {
                let cleaning = self.cleaning.contains_key(path);
                let mut holders: Vec<Holder> = self
                    .queue
                    .with_path(path)
                    .map(|d| Holder {
                        record: d.clone(),
                        view: self.view(d, self.queue.position(d)),
                        live: cleaning || !d.state.is_finished() || self.is_busy(&d.id),
                    })
                    .collect();
                holders.sort_unstable_by(|a, b| b.record.id.cmp(&a.record.id));
                holders
            })
            .collect();
        MessageResult(holders)
    }
}

/// The sha256 of a completed download's file, computed after the fact (the download
/// had no expected digest): recorded when the record has none yet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NoteDigest {
    pub id: DownloadId,
    pub sha256: String,
}

impl Handler<NoteDigest> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: NoteDigest, _: &mut Self::Context) {
        let Some(d) = self.queue.get_mut(&msg.id) else {
            return;
        };
        if d.state != State::Completed || d.sha256.is_some() {
            return;
        }
        d.sha256 = Some(msg.sha256);
        self.save(&msg.id);
    }
}

/// The identity of a completed download's file after the library linked it to an
/// identical file (the same bytes, another inode): recorded in place of the one it
/// was renamed into place with.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NoteIdentity {
    pub id: DownloadId,
    pub identity: [u64; 2],
}

impl Handler<NoteIdentity> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: NoteIdentity, _: &mut Self::Context) {
        let Some(d) = self.queue.get_mut(&msg.id) else {
            return;
        };
        if d.state != State::Completed || d.completed_as.is_none() {
            return;
        }
        d.completed_as = Some(msg.identity);
        self.save(&msg.id);
    }
}

/// How many bytes from the start of a running download's `.part` are durable (from
/// its last checkpoint): what the LAN mirror may stream to its clients already.
/// `None` when it has no checkpoint (not started yet, or finished).
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct DurablePrefix(pub DownloadId);

impl Handler<DurablePrefix> for Supervisor {
    type Result = Option<u64>;
    fn handle(&mut self, msg: DurablePrefix, _: &mut Self::Context) -> Self::Result {
        // A sled read of one small key, from its page cache: no blocking worth a thread.
        match self.store.checkpoint(&msg.0) {
            Ok(c) => c.map(|c| c.contiguous_prefix()),
            Err(e) => {
                tracing::warn!(download_id = %msg.0, error = %e, "cannot read a checkpoint");
                None
            }
        }
    }
}
