//! The websocket at `/jsonrpc`: requests in, answers and notifications out, one task
//! per connection (as `ws.rs`): the queue's frames come through a subscription of
//! their own, so a client that does not read never slows the downloads.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use futures_util::StreamExt;

use super::notify::Tracker;
use super::Aria2;
use crate::actors::broadcaster::Subscription;
use crate::doors::error::ApiError;

const HEARTBEAT: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Upgrades `GET /jsonrpc` (the guard has checked its `Origin`).
pub async fn open(
    req: HttpRequest,
    payload: web::Payload,
    aria2: web::Data<Aria2>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, incoming) = actix_ws::handle(&req, payload)?;
    let frames = aria2.queue.events().await.map_err(ApiError::from)?;
    actix_web::rt::spawn(serve(aria2, session, incoming, frames));
    Ok(response)
}

async fn send(session: &mut Session, text: String) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn serve(
    aria2: web::Data<Aria2>,
    mut session: Session,
    mut incoming: MessageStream,
    mut frames: Subscription,
) {
    let mut tracker = Tracker::default();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut last_seen = Instant::now();
    let mut close = Some(CloseReason::from(CloseCode::Away));
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                for n in tracker.notifications(&frame) {
                    if send(&mut session, n).await.is_err() {
                        return;
                    }
                }
            }
            msg = incoming.next() => {
                last_seen = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.into_bytes(),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(p))) => {
                        let _ = session.pong(&p).await;
                        continue;
                    }
                    Some(Ok(Message::Close(_))) => {
                        close = None;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                };
                let reply = super::rpc::answer(&aria2, &text).await;
                if send(&mut session, reply.body.to_string()).await.is_err() {
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > PEER_TIMEOUT
                    || tokio::time::timeout(SEND_TIMEOUT, session.ping(b"")).await.is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(close)).await;
}
