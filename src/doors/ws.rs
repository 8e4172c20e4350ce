//! `GET /api/events`: one task per websocket connection, reading its own subscription
//! to the broadcaster, with a heartbeat that drops silent peers.
//!
//! Every send has a deadline. A peer that takes nothing for that long is let go
//! without a close frame (there is no room for one): the session is dropped, and the
//! connection's write timeout (`web`) ends the connection itself.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Item, Message, MessageStream, Session};
use futures_util::StreamExt;

use crate::actors::broadcaster::Subscription;
use crate::actors::frames::{ClientFrame, Snapshot};
use crate::actors::handle::QueueHandle;
use crate::doors::error::ApiError;

const HEARTBEAT: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// A client that cannot take one frame (or one piece of the snapshot) in this long is
/// not reading: let it go.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn events(
    req: HttpRequest,
    body: web::Payload,
    queue: web::Data<QueueHandle>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, incoming) = actix_ws::handle(&req, body)?;
    let frames = queue.events().await.map_err(ApiError::from)?;
    actix_web::rt::spawn(serve(session, incoming, frames));
    Ok(response)
}

/// How a connection ends.
enum End {
    /// With a close frame (a reply to the peer's, or ours).
    Close(Option<CloseReason>),
    /// Without one: the peer is gone or does not read.
    Drop,
}

async fn serve(mut session: Session, mut incoming: MessageStream, mut frames: Subscription) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut last_seen = Instant::now();
    let away = || End::Close(Some(CloseReason::from(CloseCode::Away)));
    let end = loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    let snapshot = matches!(frame, ClientFrame::Snapshot(_));
                    if send_frame(&mut session, frame).await.is_err() {
                        break End::Drop;
                    }
                    // A peer that took a whole snapshot was reading all along, though no
                    // ping went out while it was sent: a slow link is not a dead peer.
                    if snapshot {
                        last_seen = Instant::now();
                    }
                }
                // The broadcaster closed: shutting down.
                None => break away(),
            },
            msg = incoming.next() => match msg {
                Some(Ok(Message::Ping(bytes))) => {
                    last_seen = Instant::now();
                    if timed(session.pong(&bytes)).await.is_err() {
                        break End::Drop;
                    }
                }
                Some(Ok(Message::Close(_))) => break End::Close(None),
                Some(Err(_)) | None => break End::Drop,
                Some(Ok(_)) => last_seen = Instant::now(),
            },
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > PEER_TIMEOUT {
                    break away();
                }
                if timed(session.ping(b"")).await.is_err() {
                    break End::Drop;
                }
            }
        }
    };
    if let End::Close(reason) = end {
        let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(reason)).await;
    }
}

/// `Err` when the session is closed or the peer took nothing for [`SEND_TIMEOUT`].
async fn timed(send: impl Future<Output = Result<(), actix_ws::Closed>>) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_frame(session: &mut Session, frame: ClientFrame) -> Result<(), ()> {
    match frame {
        ClientFrame::Text(text) => timed(session.text(&*text)).await,
        ClientFrame::Snapshot(snapshot) => send_snapshot(session, &snapshot).await,
    }
}

/// The snapshot as one text message: a single frame when it is one piece, else
/// continuation frames of the shared pieces.
///
/// The session's queue holds up to 32 messages, and the connection encodes (copies)
/// all that are queued whenever it has room: each piece is queued only after the
/// connection had its turn to take the one before, so that a connection copies about
/// a piece at a time, and one that is full leaves the rest queued, shared, uncopied.
async fn send_snapshot(session: &mut Session, snapshot: &Snapshot) -> Result<(), ()> {
    let pieces = snapshot.pieces();
    let [first, .., last] = pieces else {
        let one = pieces
            .first()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        return timed(session.text(one.unwrap_or_default())).await;
    };
    timed(session.continuation(Item::FirstText(first.clone()))).await?;
    for piece in &pieces[1..pieces.len() - 1] {
        tokio::task::yield_now().await;
        timed(session.continuation(Item::Continue(piece.clone()))).await?;
    }
    tokio::task::yield_now().await;
    timed(session.continuation(Item::Last(last.clone()))).await
}
