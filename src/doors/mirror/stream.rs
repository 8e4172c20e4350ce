//! A file still arriving, streamed to a client as its bytes become durable: read from
//! the `.part` up to the prefix the download's last checkpoint vouches for (fsynced,
//! so plain reads see it even when the engine writes with `O_DIRECT`), then from the
//! finished file. The `.part` keeps its inode when renamed, so a descriptor opened on
//! it reads on to the end.
//!
//! The feeder is a task of its own: a client that leaves drops the receiver, the task
//! ends at its next send, and the download goes on for the library (and the next
//! client).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::headers::FileHeaders;
use super::range::Wanted;
use crate::actors::handle::QueueHandle;
use crate::queue::lifecycle::State;
use crate::queue::model::DownloadId;

/// How often a waiting feeder asks how far the download is (checkpoints come every
/// second).
const POLL: Duration = Duration::from_millis(150);
/// One read of the file, one message to the client.
const CHUNK: u64 = 1024 * 1024;
/// Chunks queued for a client that has not taken them yet.
const QUEUED: usize = 4;

/// The download of a file and where its bytes are.
pub(super) struct Growing {
    pub queue: QueueHandle,
    pub id: DownloadId,
    /// `download_dir`, and the file's path below it (the `.part` is `<path>.part`).
    pub root: PathBuf,
    pub path: String,
    pub size: u64,
}

/// The response: 200 with the whole file or 206 with the part asked for, with the Hub's
/// headers; its body arrives as the download does.
pub(super) fn respond(growing: Growing, part: Wanted, headers: &FileHeaders) -> HttpResponse {
    let size = growing.size;
    let (start, end) = match part {
        Wanted::Part { start, end } => (start, end),
        Wanted::Whole | Wanted::Unsatisfiable => (0, size),
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(QUEUED);
    let id = growing.id.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = feed(&growing, start, end, &tx).await {
            tracing::warn!(download_id = %growing.id, error = %e, "mirror: a stream to a client ended early");
            let _ = tx.send(Err(e)).await;
        }
    });
    tracing::debug!(download_id = %id, start, end, "mirror: streaming a file that is arriving");
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = if matches!(part, Wanted::Part { .. }) {
        let mut r = HttpResponse::PartialContent();
        r.insert_header((
            actix_web::http::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        ));
        r
    } else {
        HttpResponse::Ok()
    };
    let mut response = response
        .content_type("application/octet-stream")
        .body(SizedStream::new(end - start, body));
    headers.apply(&mut response);
    response
}

/// Sends `[pos, end)` of the file as it becomes durable.
async fn feed(
    g: &Growing,
    mut pos: u64,
    end: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut file: Option<Arc<std::fs::File>> = None;
    while pos < end {
        let ready = durable(g).await?.min(end);
        if ready <= pos {
            if tx.is_closed() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        let f = match &file {
            Some(f) => f.clone(),
            None => file.insert(Arc::new(open(g).await?)).clone(),
        };
        while pos < ready {
            let n = (ready - pos).min(CHUNK);
            let bytes = read_at(f.clone(), pos, n).await?;
            pos += n;
            if tx.send(Ok(bytes)).await.is_err() {
                // The client left; the download goes on.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How many bytes from the start are on disk for good now.
async fn durable(g: &Growing) -> io::Result<u64> {
    let view = g.queue.get(&g.id).await.map_err(io::Error::other)?;
    match view.state {
        State::Completed => Ok(g.size),
        State::Failed | State::Cancelled => Err(io::Error::other(format!(
            "the download {} ended {}: {}",
            g.id,
            view.state.as_str(),
            view.error.map(|e| e.message).unwrap_or_default()
        ))),
        _ => Ok(g
            .queue
            .durable_prefix(&g.id)
            .await
            .map_err(io::Error::other)?
            .unwrap_or(0)),
    }
}

/// The `.part`, or the finished file when it has been renamed meanwhile; opened
/// without following a link on the way (`files::open_regular`), and the finished file
/// only when it has the download's size.
async fn open(g: &Growing) -> io::Result<std::fs::File> {
    let (root, path, size) = (g.root.clone(), g.path.clone(), g.size);
    tokio::task::spawn_blocking(move || {
        match crate::files::open_regular(&root, &format!("{path}.part")) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = crate::files::open_regular(&root, &path)?;
                if file.metadata()?.len() != size {
                    return Err(io::Error::other(format!(
                        "{path} is no longer the file the download fetched"
                    )));
                }
                Ok(file)
            }
            other => other,
        }
    })
    .await
    .map_err(io::Error::other)?
}

async fn read_at(file: Arc<std::fs::File>, offset: u64, len: u64) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}
