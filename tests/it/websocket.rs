//! The live feed over `/api/events`, read by real websocket clients.

use crate::common;

use std::time::{Duration, Instant};

use common::service::*;
use common::upstream::{Behavior, Upstream};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(svc: &TestService) -> Ws {
    let url = format!("{}/api/events", svc.base.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connect");
    ws
}

/// The next JSON text frame (pings and pongs are skipped).
async fn next_frame(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(&t).expect("frame is JSON"))
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[actix_web::test]
async fn progress_frames_are_regular_monotonic_and_honest() {
    let up = Upstream::start();
    // One connection, so that the true rate is the upstream's per-connection throttle.
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let size = 96 * MIB;
    let rate = 8 * MIB as u64;
    let data = content(size, 77);
    up.add_file(
        "live.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(rate),
            ..Default::default()
        },
    );

    let mut ws = connect(&svc).await;
    let first = next_frame(&mut ws, Duration::from_secs(5))
        .await
        .expect("a first frame");
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["downloads"], json!([]));

    // Idle: no progress frames.
    assert!(
        next_frame(&mut ws, Duration::from_millis(800))
            .await
            .is_none(),
        "frames while idle"
    );

    let id = svc
        .add(json!({"url": up.url("live.bin"), "sha256": sha256_hex(&data)}))
        .await;
    let mut states: Vec<String> = Vec::new();
    let mut progress_at: Vec<Instant> = Vec::new();
    let mut last_bytes = 0u64;
    let mut last_update = Value::Null;
    let window = Instant::now() + Duration::from_secs(5);
    while Instant::now() < window {
        let Some(f) = next_frame(&mut ws, Duration::from_secs(2)).await else {
            break;
        };
        match f["type"].as_str() {
            Some("state") => states.push(f["download"]["state"].as_str().unwrap().to_owned()),
            Some("progress") => {
                progress_at.push(Instant::now());
                let u = f["updates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|u| u["id"] == id.as_str())
                    .cloned();
                let u = u.expect("the running download is in every progress frame");
                let b = u["bytes_done"].as_u64().unwrap();
                assert!(b >= last_bytes, "bytes went backwards: {last_bytes} -> {b}");
                last_bytes = b;
                last_update = u;
            }
            other => panic!("unexpected frame {other:?}: {f}"),
        }
    }
    assert!(
        progress_at.len() >= 8,
        "only {} progress frames in 5 s",
        progress_at.len()
    );
    let gaps: Vec<f64> = progress_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let med = median(gaps);
    assert!(
        (200.0..=400.0).contains(&med),
        "median gap {med} ms, want 300 ± 100"
    );

    let speed = last_update["speed_bps"].as_f64().unwrap();
    assert!(
        (speed - rate as f64).abs() / (rate as f64) < 0.3,
        "speed {speed} vs true {rate}"
    );
    let eta = last_update["eta_secs"]
        .as_f64()
        .expect("an ETA once the rate is known");
    let truth = (size as f64 - last_bytes as f64) / rate as f64;
    assert!(
        (eta - truth).abs() <= (0.3 * truth).max(2.0),
        "eta {eta} s vs truth {truth} s"
    );
    assert!(
        last_update["elapsed_secs"].as_f64().unwrap() >= 4.0,
        "{last_update}"
    );
    assert_eq!(last_update["bytes_total"], json!(size));

    // Pause: one `paused` frame, with the bytes the pause answered, and the numbers
    // stand still after it (no progress for it, no later frame with other bytes).
    let (status, paused) = svc.action(&id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    let paused_bytes = paused["bytes_done"].as_u64().unwrap();
    let mut paused_frame: Option<Value> = None;
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while let Some(f) = next_frame(
        &mut ws,
        quiet_until.saturating_duration_since(Instant::now()),
    )
    .await
    {
        if f["type"] == "state" && f["download"]["id"] == id.as_str() {
            let state = f["download"]["state"].as_str().unwrap().to_owned();
            if let Some(first) = &paused_frame {
                assert_eq!(
                    f["download"]["bytes_done"], first["download"]["bytes_done"],
                    "the bytes of a paused download moved on the wire: {f}"
                );
            } else if state == "paused" {
                assert_eq!(
                    f["download"]["bytes_done"],
                    json!(paused_bytes),
                    "the paused frame disagrees with the pause's answer"
                );
                paused_frame = Some(f.clone());
            }
            states.push(state);
        } else if f["type"] == "progress" && paused_frame.is_some() {
            let mentions = f["updates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["id"] == id.as_str());
            assert!(!mentions, "a progress frame after the paused frame: {f}");
        }
    }
    assert!(paused_frame.is_some(), "no paused frame: {states:?}");
    svc.action(&id, "resume").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !states.iter().any(|s| s == "completed") && Instant::now() < deadline {
        if let Some(f) = next_frame(&mut ws, Duration::from_secs(5)).await {
            if f["type"] == "state" {
                states.push(f["download"]["state"].as_str().unwrap().to_owned());
            }
        }
    }
    let mut seen = states.clone();
    seen.dedup();
    for want in ["queued", "downloading", "paused", "verifying", "completed"] {
        assert!(
            seen.iter().any(|s| s == want),
            "no state frame for {want}: {seen:?}"
        );
    }
    let pos = |s: &str| seen.iter().position(|x| x == s).unwrap();
    assert!(
        pos("queued") < pos("downloading") && pos("downloading") < pos("paused"),
        "{seen:?}"
    );
    assert!(pos("paused") < pos("completed"), "{seen:?}");

    // Removal is announced too.
    svc.delete(&format!("/api/downloads/{id}")).await;
    let mut removed = false;
    while let Some(f) = next_frame(&mut ws, Duration::from_secs(3)).await {
        if f["type"] == "removed" && f["id"] == id.as_str() {
            removed = true;
            break;
        }
    }
    assert!(removed, "no removed frame");
}

/// Downloads `size` bytes at `rate` with `clients` readers (plus one that never reads,
/// when `stuck`); returns the download's wall time and each reader's frame times.
async fn run_with_clients(
    svc: &TestService,
    up: &Upstream,
    name: &str,
    clients: usize,
    stuck: bool,
) -> (Duration, Vec<Vec<Instant>>) {
    let data = content(32 * MIB, 5);
    up.add_file(
        name,
        data,
        Behavior {
            rate_bps: Some(16 * MIB as u64),
            ..Default::default()
        },
    );
    let _stuck = if stuck {
        Some(connect(svc).await)
    } else {
        None
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut ws = connect(svc).await;
        let stop = stop.clone();
        readers.push(tokio::task::spawn_local(async move {
            let mut times = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(f) = next_frame(&mut ws, Duration::from_millis(200)).await {
                    if f["type"] == "progress" {
                        times.push(Instant::now());
                    }
                }
            }
            times
        }));
    }
    let started = Instant::now();
    let id = svc.add(json!({"url": up.url(name)})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut times = Vec::new();
    for r in readers {
        times.push(r.await.unwrap());
    }
    (took, times)
}

#[actix_web::test]
async fn fifty_clients_and_a_stuck_one_do_not_slow_anything() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    let (alone, _) = run_with_clients(&svc, &up, "one.bin", 1, false).await;
    let (crowded, times) = run_with_clients(&svc, &up, "many.bin", 49, true).await;
    println!("one client: {alone:?}; 49 readers + 1 stuck: {crowded:?}");
    assert!(
        crowded.as_secs_f64() <= alone.as_secs_f64() * 1.10,
        "the download slowed down with 50 clients: {alone:?} -> {crowded:?}"
    );
    for (i, t) in times.iter().enumerate() {
        assert!(t.len() >= 5, "reader {i} got {} progress frames", t.len());
        let max_gap = t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        assert!(
            max_gap < Duration::from_millis(1000),
            "reader {i} waited {max_gap:?} between frames"
        );
    }
}

/// A link that hands its reader at most `rate` bytes a second.
struct SlowLink {
    inner: tokio::net::TcpStream,
    rate: f64,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SlowLink {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if let Some(pause) = self.pause.as_mut() {
            if std::future::Future::poll(pause.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let mut limited = buf.take(4096);
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let got = limited.filled().len();
                // SAFETY: `got` bytes of the unfilled part were just written by the read.
                unsafe { buf.assume_init(got) };
                buf.advance(got);
                let wait = Duration::from_secs_f64(got as f64 / self.rate);
                self.pause = Some(Box::pin(tokio::time::sleep(wait)));
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for SlowLink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A slow but steady client (found by attack, #23): a snapshot that takes it longer
/// than the heartbeat's peer timeout to receive used to end in a close right after it
/// (no ping went out while it was sent), so such a client never saw a live frame.
#[actix_web::test]
async fn a_slow_client_that_takes_the_whole_snapshot_stays_connected() {
    let svc = TestService::start(|_| {}).await;
    let items: Vec<Value> = (0..10_000)
        .map(|i| json!({"url": format!("http://127.0.0.1:9/f{i}.bin"), "start_paused": true}))
        .collect();
    let (s, _) = svc
        .post("/api/downloads", json!({"downloads": items}))
        .await;
    assert_eq!(s, 201);
    let addr: std::net::SocketAddr = svc.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    let link = SlowLink {
        inner: socket.connect(addr).await.unwrap(),
        rate: 200_000.0,
        pause: None,
    };
    let url = format!("ws://{addr}/api/events");
    let (mut ws, _) = tokio_tungstenite::client_async(url, link)
        .await
        .expect("websocket");
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(120), ws.next()).await;
    let Ok(Some(Ok(Message::Text(snapshot)))) = first else {
        panic!("no snapshot: {first:?}");
    };
    let took = started.elapsed();
    assert!(
        snapshot.len() > 3_000_000,
        "snapshot of {} bytes",
        snapshot.len()
    );
    assert!(
        took > Duration::from_secs(16),
        "the snapshot came in {took:?}: not slow"
    );
    svc.add(json!({"url": "http://127.0.0.1:9/late.bin", "start_paused": true}))
        .await;
    let next = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => {
                break other
                    .ok()
                    .flatten()
                    .map(|m| format!("not a text frame: {m:?}"))
            }
        }
    };
    let next = next.expect("the connection ended after the snapshot");
    assert!(next.contains("late.bin"), "{next}");
}
