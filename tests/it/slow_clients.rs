//! Clients that stop reading must cost the service a bounded amount of memory, must not
//! slow anyone else, and must be dropped by a write timeout; a client that reads keeps
//! up with a batch of 10,000.
//!
//! The memory test runs the real binary, so that its RSS (`/proc/<pid>/status`) is the
//! process's own and nothing else's.

use crate::common;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::binary::Proc;
use common::service::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const PIPELINING_CLIENTS: usize = 400;
const PIPELINED_REQUESTS: usize = 16;
const WEBSOCKET_CLIENTS: usize = 200;
/// What one stuck client may cost on top of the service's RSS before them: a list
/// client holds one encoded chunk (256 downloads, ~150 KB) and the server's write
/// buffer; measured 190-320 KiB per client (debug build, the allocator's arenas
/// included, more under load). Unbounded, one would hold its 16 whole lists (~80 MB
/// of 10,000 downloads): this bound tells the two apart by a factor of a hundred.
const RSS_PER_CLIENT_KIB: u64 = 480;
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// How long the stuck clients may be held before the write timeout lets them go: a
/// connection's timer starts only once its answer filled the socket, after the service
/// made the 400 lists of 10,000 before it (36-50 s in a debug build on a loaded 2-core
/// machine, for a write timeout of 15 s).
const DROP_DEADLINE: Duration = Duration::from_secs(75);

fn batch(n: usize, prefix: &str) -> Value {
    let items: Vec<Value> = (0..n)
        .map(
            |i| json!({"url": format!("http://127.0.0.1:9/{prefix}{i}.bin"), "start_paused": true}),
        )
        .collect();
    json!({ "downloads": items })
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Connections the service holds open on its port (ESTABLISHED, server side).
fn server_connections(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && f.get(3) == Some(&"01")
        })
        .count()
}

/// Opens a connection, sends `request`, and never reads.
fn stuck_client(port: u16, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(request).expect("send the requests");
    s
}

async fn probe(client: &reqwest::Client, url: &str) -> Duration {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("probe {url}: no answer in 10 s"))
        .unwrap_or_else(|e| panic!("probe {url}: {e}"));
    assert_eq!(r.status(), 200, "probe {url}");
    let _ = r.bytes().await;
    t.elapsed()
}

#[actix_web::test]
async fn clients_that_never_read_are_bounded_and_dropped() {
    let (_dir, _config, port, proc) = Proc::start("").await;
    let (s, v) = proc.post("/api/downloads", batch(10_000, "f")).await;
    assert_eq!(s, 201, "seeding 10,000: {}", &v.to_string()[..200]);
    let probe_id = v["downloads"][0]["id"].as_str().expect("id").to_owned();
    let pid = proc.pid();
    let before = rss_kib(pid);
    println!(
        "RSS with 10,000 downloads, before the clients: {} MiB",
        before / 1024
    );

    let list = format!("GET /api/downloads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let pipelined = list.repeat(PIPELINED_REQUESTS);
    let upgrade = format!(
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    let started = Instant::now();
    let mut stuck = Vec::new();
    for i in 0..PIPELINING_CLIENTS + WEBSOCKET_CLIENTS {
        let request = if i % 3 == 2 { &upgrade } else { &pipelined };
        stuck.push(stuck_client(port, request.as_bytes()));
    }
    println!(
        "{} stuck clients connected in {:?}",
        stuck.len(),
        started.elapsed()
    );

    let client = reqwest::Client::new();
    let probes = [
        format!("{}/healthz", proc.base),
        format!("{}/api/downloads/{probe_id}", proc.base),
        format!("{}/api/stats", proc.base),
    ];
    let (mut peak, mut slowest, mut dropped_after) = (before, Duration::ZERO, None);
    while started.elapsed() < DROP_DEADLINE {
        for url in &probes {
            let took = probe(&client, url).await;
            assert!(
                took < PROBE_LIMIT,
                "probe {url} took {took:?} after {:?} with stuck clients",
                started.elapsed()
            );
            slowest = slowest.max(took);
        }
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        let limit = before + RSS_PER_CLIENT_KIB * stuck.len() as u64;
        assert!(
            rss < limit,
            "RSS {} MiB after {:?} with {} stuck clients (was {} MiB before them; limit {} MiB)",
            rss / 1024,
            started.elapsed(),
            stuck.len(),
            before / 1024,
            limit / 1024
        );
        let held = server_connections(port);
        if held <= 5 {
            dropped_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "peak RSS {} MiB (before: {} MiB), slowest probe {slowest:?}",
        peak / 1024,
        before / 1024
    );
    let dropped_after = dropped_after.unwrap_or_else(|| {
        panic!(
            "the service still holds {} connections {DROP_DEADLINE:?} after {} clients stopped reading",
            server_connections(port),
            stuck.len()
        )
    });
    println!("stuck clients dropped after {dropped_after:?}");
    // Still answering, and still listing everything, to a client that reads.
    let all = proc.get("/api/downloads").await["downloads"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(all, 10_000, "the whole list after the stuck clients");
    drop(stuck);
}

/// What a reading client knows: the snapshot, then every change after it.
#[derive(Default)]
struct Mirror {
    ids: HashSet<String>,
    snapshots: usize,
    frames: usize,
}

impl Mirror {
    fn apply(&mut self, f: &Value) {
        self.frames += 1;
        match f["type"].as_str() {
            Some("snapshot") => {
                self.snapshots += 1;
                self.ids = f["downloads"]
                    .as_array()
                    .expect("downloads")
                    .iter()
                    .map(|d| d["id"].as_str().expect("id").to_owned())
                    .collect();
            }
            Some("state") => {
                self.ids
                    .insert(f["download"]["id"].as_str().expect("id").to_owned());
            }
            Some("removed") => {
                self.ids.remove(f["id"].as_str().expect("id"));
            }
            _ => {}
        }
    }
}

#[actix_web::test]
async fn a_reading_websocket_client_survives_a_batch_of_10000() {
    let svc = TestService::start(|_| {}).await;
    let url = format!("{}/api/events", svc.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connect");
    let (s, v) = svc.post("/api/downloads", batch(10_000, "b")).await;
    assert_eq!(s, 201, "batch: {}", &v.to_string()[..200]);
    let want: HashSet<String> = v["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();

    let mut mirror = Mirror::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mirror.ids != want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                mirror.apply(&serde_json::from_str(&t).expect("a JSON frame"))
            }
            Ok(Some(Ok(Message::Close(c)))) => panic!(
                "closed ({c:?}) after {} frames, knowing {} of {} downloads",
                mirror.frames,
                mirror.ids.len(),
                want.len()
            ),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "the websocket ended ({other:?}) after {} frames, knowing {} of {}",
                mirror.frames,
                mirror.ids.len(),
                want.len()
            ),
        }
    }
    println!(
        "a reading client knows all {} after {} frames ({} snapshots)",
        want.len(),
        mirror.frames,
        mirror.snapshots
    );
    // Still live after the batch: one more change arrives as a state frame.
    let id = want.iter().next().expect("an id").clone();
    let (s, v) = svc.action(&id, "cancel").await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).expect("JSON"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no state frame for the cancel: {other:?}"),
        };
        let about_it = f["download"]["id"] == id.as_str()
            || f["downloads"].as_array().is_some_and(|ds| {
                ds.iter()
                    .any(|d| d["id"] == id.as_str() && d["state"] == "cancelled")
            });
        if about_it && (f["download"]["state"] == "cancelled" || f["type"] == "snapshot") {
            break;
        }
    }
}
