//! Floods from hostile clients (threats.md, "Hostile clients"): JSON nested without end,
//! ten thousand single adds from forty clients at once, a websocket client that sends
//! without pause. Each is refused or absorbed; nothing is lost, nothing is doubled, and
//! everybody else is still answered.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::service::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[actix_web::test]
async fn json_nested_without_end_is_refused_and_changes_nothing() {
    let svc = TestService::start(|_| {}).await;
    for depth in [200, 100_000] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let nested_object = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for (what, body) in [("array", body), ("object", nested_object)] {
            let resp = svc
                .client
                .post(svc.url("/api/downloads"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(
                status == 400 || status == 413,
                "{what} of depth {depth}: {status} {v}"
            );
            assert!(v["error"]["code"].is_string(), "{what} {depth}: {v}");
        }
    }
    let (s, v) = svc.get("/api/downloads").await;
    assert_eq!(s, 200);
    assert_eq!(v["downloads"].as_array().map(Vec::len), Some(0), "{v}");
    let (s, _) = svc.get("/api/stats").await;
    assert_eq!(s, 200, "still answering");
}

#[actix_web::test]
async fn ten_thousand_single_adds_from_forty_clients_each_land_once() {
    const CLIENTS: usize = 40;
    const EACH: usize = 250;
    let svc = TestService::start(|_| {}).await;
    let started = Instant::now();
    let adds = (0..CLIENTS).map(|c| {
        let (client, url) = (svc.client.clone(), svc.url("/api/downloads"));
        async move {
            let mut ids = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let body = json!({
                    "url": format!("http://127.0.0.1:9/c{c}/f{i}.bin"),
                    "file_name": format!("c{c}-f{i}.bin"),
                    "start_paused": true,
                });
                let resp = client.post(&url).json(&body).send().await.unwrap();
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 201, "client {c} add {i}: {v}");
                ids.push(v["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    });
    let ids: Vec<String> = futures_util::future::join_all(adds)
        .await
        .into_iter()
        .flatten()
        .collect();
    eprintln!(
        "{} adds from {CLIENTS} clients in {:?}",
        ids.len(),
        started.elapsed()
    );
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), CLIENTS * EACH, "every answer a new id");

    let (s, v) = svc.get("/api/downloads").await;
    assert_eq!(s, 200);
    let listed = v["downloads"].as_array().unwrap();
    let listed_ids: HashSet<&str> = listed.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(listed.len(), CLIENTS * EACH, "each add listed once");
    assert!(ids.iter().all(|id| listed_ids.contains(id.as_str())));
    let names: HashSet<&str> = listed
        .iter()
        .filter_map(|d| d["file_name"].as_str())
        .collect();
    assert_eq!(names.len(), CLIENTS * EACH, "no name given twice");

    // And all of it durable: a restart lists the same.
    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    let svc = TestService::start_in(dir, config).await;
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(stats["paused"], CLIENTS * EACH, "{stats}");
}

#[actix_web::test]
async fn a_websocket_client_that_sends_without_pause_slows_nobody() {
    let svc = TestService::start(|_| {}).await;
    let ws_url = format!("{}/api/events", svc.base.replace("http://", "ws://"));
    let (flooder, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut send, recv) = flooder.split();
    // The flooder never reads what it is sent (its pongs pile up on its side).
    let _unread = recv;
    let flood = tokio::spawn(async move {
        let big = "x".repeat(60_000);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let msg = match sent % 3 {
                0 => Message::Text(big.clone().into()),
                1 => Message::Ping(vec![7u8; 100].into()),
                _ => Message::Binary(vec![0u8; 1000].into()),
            };
            if send.send(msg).await.is_err() {
                break; // the service hung up on it: fine
            }
            sent += 1;
        }
        sent
    });

    // Meanwhile a well-behaved client connects, gets its snapshot and sees an add.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut good, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let first = next_text(&mut good, Duration::from_secs(5)).await;
    assert_eq!(
        first.as_ref().map(|f| f["type"].clone()),
        Some(json!("snapshot")),
        "{first:?}"
    );
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let (s, _) = svc.get("/healthz").await;
        assert_eq!(s, 200);
        slowest = slowest.max(t.elapsed());
        if i == 0 {
            svc.add(json!({"url": "http://127.0.0.1:9/x.bin", "start_paused": true}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer {slowest:?}"
    );
    let mut saw_state = false;
    while let Some(f) = next_text(&mut good, Duration::from_secs(3)).await {
        if f["type"] == "state" {
            saw_state = true;
            break;
        }
    }
    assert!(saw_state, "the good client got the add's state frame");
    let sent = flood.await.unwrap();
    eprintln!("the flooder sent {sent} messages");
    assert!(sent > 100, "the flood flowed ({sent})");
}

async fn next_text<S>(ws: &mut S, timeout: Duration) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}
