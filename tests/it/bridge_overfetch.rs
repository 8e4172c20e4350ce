//! What a fresh download over plain HTTP costs on the wire (#25, acceptance line 7): the
//! bytes the server wrote for a file, against its size. The Hub's bridge (resolve → 302 →
//! CDN link) and a plain URL, with the default settings (several connections), and with a
//! connection cut mid-way. `Upstream::bytes_sent` counts what the server wrote to its
//! sockets, so a response we abandon counts whatever it had already pushed.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);
const SIZE: usize = 128 * MIB;

/// At most 1 % over the file's size.
fn assert_within_one_percent(sent: u64, size: usize, what: &str) {
    let limit = size as u64 + size as u64 / 100;
    eprintln!(
        "{what}: {sent} bytes served for {size} ({:.4}x)",
        sent as f64 / size as f64
    );
    assert!(
        sent <= limit,
        "{what}: the server wrote {sent} bytes for a {size}-byte file ({:.4}x; at most {limit})",
        sent as f64 / size as f64
    );
}

#[actix_web::test]
async fn a_fresh_hub_download_through_the_bridge_fetches_the_file_once() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    let repo = "bridge/Big-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    let data = content(SIZE, 25);
    hub.put_file(repo, "big-Q4_K_M.gguf", data.clone());
    let endpoint = hub.endpoint();
    // Default settings but the Hub's address: several connections per download.
    let svc = TestService::start(move |c| {
        assert!(c.downloads.connections_per_download > 1);
        c.hub.endpoint = endpoint;
    })
    .await;
    let id = svc
        .add(json!({"hub": {"repo": repo, "file": "big-Q4_K_M.gguf"}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(repo).join("big-Q4_K_M.gguf")),
        sha256_hex(&data)
    );
    let object = hub.cdn_path(repo, &hub.commit(repo), "big-Q4_K_M.gguf");
    assert!(
        cdn.requests(&object).len() > 1,
        "not parallel: {:?}",
        cdn.requests(&object)
    );
    assert_within_one_percent(cdn.bytes_sent(&object), SIZE, "Hub bridge");
}

#[actix_web::test]
async fn a_fresh_url_download_fetches_the_file_once() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(SIZE, 26);
    up.add_file("big.bin", data.clone(), Behavior::default());
    let id = svc
        .add(json!({"url": up.url("big.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("big.bin")),
        sha256_hex(&data)
    );
    assert!(up.requests("big.bin").len() > 1, "not parallel");
    assert_within_one_percent(up.bytes_sent("big.bin"), SIZE, "plain URL");
}

#[actix_web::test]
async fn a_connection_cut_midway_is_resumed_not_fetched_again() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(SIZE, 27);
    // The first response ends early (a clean close mid-body): its connection resumes
    // where it stopped.
    up.add_file(
        "cut.bin",
        data.clone(),
        Behavior {
            short_body_once: Some(3 * MIB as u64),
            ..Default::default()
        },
    );
    let id = svc
        .add(json!({"url": up.url("cut.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("cut.bin")),
        sha256_hex(&data)
    );
    let requests = up.requests("cut.bin");
    assert!(
        requests.iter().any(|r| r
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("bytes={}-", 3 * MIB)))),
        "the cut response is resumed where it stopped: {:?}",
        requests.iter().map(|r| r.range.clone()).collect::<Vec<_>>()
    );
    assert_within_one_percent(up.bytes_sent("cut.bin"), SIZE, "one cut connection");
}

#[actix_web::test]
async fn the_first_requests_bounded_range_still_fetches_small_and_empty_files() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    // Empty: a range of it is unsatisfiable (416); asked again whole, it is empty.
    up.add_file("empty.bin", Vec::new(), Behavior::default());
    // Between the first window and the size for parallel connections: two requests on
    // one connection, the second for the rest.
    let mid = content(9 * MIB, 28);
    up.add_file("mid.bin", mid.clone(), Behavior::default());
    let e = svc.add(json!({"url": up.url("empty.bin")})).await;
    let m = svc
        .add(json!({"url": up.url("mid.bin"), "sha256": sha256_hex(&mid)}))
        .await;
    svc.wait_state(&e, "completed", LONG).await;
    svc.wait_state(&m, "completed", LONG).await;
    assert_eq!(
        std::fs::metadata(svc.download_dir().join("empty.bin"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        file_sha256(&svc.download_dir().join("mid.bin")),
        sha256_hex(&mid)
    );
    let starts = |path: &str| -> Vec<(Option<u64>, u16)> {
        up.requests(path)
            .iter()
            .map(|r| (r.range_start, r.status))
            .collect()
    };
    assert_eq!(starts("empty.bin"), vec![(Some(0), 416), (None, 200)]);
    assert_eq!(
        starts("mid.bin"),
        vec![(Some(0), 206), (Some(4 * MIB as u64), 206)]
    );
    assert_eq!(up.bytes_sent("mid.bin"), mid.len() as u64);
}

/// How [`odd_range_server`] answers a range.
#[derive(Clone, Copy)]
enum Odd {
    /// `Content-Range: bytes a-b/*`: the file's size not told.
    HidesSize,
    /// From the first byte asked to the file's end, whatever the range's end.
    SendsToTheEnd,
}

/// The `Range` headers a server was asked, in order.
type Asked = Arc<std::sync::Mutex<Vec<Option<String>>>>;

/// A server of one file that answers ranges oddly (`odd`), each connection closed after
/// one answer.
fn odd_range_server(data: Vec<u8>, odd: Odd) -> (String, Asked) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hidden.bin", listener.local_addr().unwrap());
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut range = None;
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().to_owned());
                }
            }
            seen.lock().unwrap().push(range.clone());
            let parsed = range.as_deref().and_then(|r| {
                let (a, b) = r.split_once('-')?;
                let a: usize = a.parse().ok()?;
                let b = match odd {
                    Odd::HidesSize => b.parse::<usize>().map_or(data.len(), |b| b + 1),
                    Odd::SendsToTheEnd => data.len(),
                }
                .min(data.len());
                (a < b).then_some((a, b))
            });
            let head = match parsed {
                Some((a, b)) => format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    b - 1,
                    match odd {
                        Odd::HidesSize => "*".to_owned(),
                        Odd::SendsToTheEnd => data.len().to_string(),
                    },
                    b - a
                ),
                None => format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                ),
            };
            let (a, b) = parsed.unwrap_or((0, data.len()));
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|_| conn.write_all(&data[a..b]));
        }
    });
    (url, asked)
}

#[actix_web::test]
async fn a_first_range_answered_without_the_size_goes_on_with_one_connection() {
    let data = content(24 * MIB, 29);
    let (url, asked) = odd_range_server(data.clone(), Odd::HidesSize);
    let svc = TestService::start(|_| {}).await;
    let id = svc
        .add(json!({"url": url, "sha256": sha256_hex(&data)}))
        .await;
    // Taking the end of the first window for the end of the file would fail the digest.
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("hidden.bin")),
        sha256_hex(&data)
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked[0].as_deref(), Some("0-4194303"), "{asked:?}");
    assert!(asked[1..].iter().all(|r| r.is_none()), "{asked:?}");
}

#[actix_web::test]
async fn a_server_that_sends_more_than_the_range_asked_gives_the_right_file() {
    let data = content(40 * MIB, 30);
    let (url, asked) = odd_range_server(data.clone(), Odd::SendsToTheEnd);
    let svc = TestService::start(|_| {}).await;
    let id = svc
        .add(json!({"url": url, "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("hidden.bin")),
        sha256_hex(&data)
    );
    let asked = asked.lock().unwrap().clone();
    assert!(asked.len() > 2, "parallel pieces: {asked:?}");
}
