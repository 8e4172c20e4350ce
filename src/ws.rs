//! `GET /api/events`: one task per websocket connection, fed by its own bounded queue
//! from the broadcaster, with a heartbeat that drops silent peers.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;

use crate::actors::handle::QueueHandle;
use crate::error::ApiError;

const HEARTBEAT: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// A client that cannot take one frame in this long is not reading: disconnect it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn events(
    req: HttpRequest,
    body: web::Payload,
    queue: web::Data<QueueHandle>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, mut session, mut incoming) = actix_ws::handle(&req, body)?;
    let mut frames = queue.subscribe().await.map_err(ApiError::from)?;
    actix_web::rt::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut last_seen = Instant::now();
        let reason = loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(text) => {
                        let sent = tokio::time::timeout(SEND_TIMEOUT, session.text(text.to_string())).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            break None;
                        }
                    }
                    // The broadcaster let go: shutting down, or this client fell behind.
                    None => break Some(CloseReason::from(CloseCode::Away)),
                },
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Ping(bytes))) => {
                        last_seen = Instant::now();
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                    Some(Ok(_)) => last_seen = Instant::now(),
                },
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > PEER_TIMEOUT {
                        break Some(CloseReason::from(CloseCode::Away));
                    }
                    if session.ping(b"").await.is_err() {
                        break None;
                    }
                }
            }
        };
        let _ = session.close(reason).await;
    });
    Ok(response)
}
