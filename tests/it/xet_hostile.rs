//! The Xet transport against a malicious or broken CAS: the Hub stays the tests' `HubEmu`
//! (its Xet answers, its bridge), the CAS is a raw server of this file that lies as each
//! test asks. Every case must end in a clear state: completed with the right bytes (from
//! xorbs or through the bridge), or failed with a clear error; never wrong bytes in the
//! final file, never a panic, never a hang.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hub::{HubEmu, RepoOptions};
use common::service::{sha256_hex, TestService};
use common::upstream::Upstream;
use common::xet::{self, CasHandle, Fault};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REPO: &str = "evil-org/Hostile-GGUF";
const FILE: &str = "hostile-Q4_K_M.gguf";
const XORB: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const FILE_HASH: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A request the hostile CAS saw.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    /// `bytes=a-b` as `(a, b)`.
    range: Option<(u64, u64)>,
    auth: Option<String>,
}

/// What the hostile CAS answers.
enum Answer {
    Bytes {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `prefix`, then `pattern` again and again until the client goes away.
    Endless { prefix: Vec<u8>, pattern: Vec<u8> },
    /// The head and `prefix`, then nothing, the connection held open.
    Stall { prefix: Vec<u8> },
}

impl Answer {
    fn json(v: &Value) -> Answer {
        Answer::Bytes {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }

    fn status(status: u16) -> Answer {
        Answer::Bytes {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// The file the hostile CAS describes: its bytes, cut in chunks, and the xorb holding them.
struct Model {
    data: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    /// The xorb's bytes: every chunk, uncompressed (scheme 0), in order.
    wire: Vec<u8>,
}

impl Model {
    fn new(data: Vec<u8>, chunk: usize) -> Model {
        let chunks: Vec<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
        let wire = chunks.iter().flat_map(|c| chunk_bytes(c)).collect();
        Model { data, chunks, wire }
    }

    /// The honest V2 reconstruction of `range` (the whole file, placed by the offset).
    fn honest(&self, addr: SocketAddr, range: Option<(u64, u64)>) -> Value {
        let n = self.chunks.len();
        json!({
            "offset_into_first_range": range.map_or(0, |r| r.0),
            "terms": [{"hash": XORB, "unpacked_length": self.data.len(), "range": {"start": 0, "end": n}}],
            "xorbs": {XORB: [{"url": format!("http://{addr}/xorb/{XORB}"), "ranges": [
                {"chunks": {"start": 0, "end": n}, "bytes": {"start": 0, "end": self.wire.len() - 1}}
            ]}]}
        })
    }

    /// The honest answer of a xorb GET.
    fn xorb(&self, range: Option<(u64, u64)>) -> Answer {
        let (a, b) = range.unwrap_or((0, self.wire.len() as u64 - 1));
        let b = b.min(self.wire.len() as u64 - 1);
        Answer::Bytes {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {a}-{b}/{}", self.wire.len()),
            )],
            body: self.wire[a as usize..=b as usize].to_vec(),
        }
    }
}

/// A chunk as a xorb holds it: the 8-byte header, then the data (scheme 0).
fn chunk_bytes(data: &[u8]) -> Vec<u8> {
    header(data.len(), 0, data.len())
        .into_iter()
        .chain(data.iter().copied())
        .collect()
}

fn header(compressed: usize, scheme: u8, uncompressed: usize) -> Vec<u8> {
    let mut h = vec![0u8];
    h.extend_from_slice(&(compressed as u32).to_le_bytes()[..3]);
    h.push(scheme);
    h.extend_from_slice(&(uncompressed as u32).to_le_bytes()[..3]);
    h
}

type Handler = Arc<dyn Fn(&Req) -> Answer + Send + Sync>;

/// The hostile CAS: a raw HTTP/1.1 server on its own thread and runtime.
struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Req>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(handler: impl Fn(&Req) -> Answer + Send + Sync + 'static) -> Hostile {
        let handler: Handler = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            tokio::spawn(serve(stream, handler.clone(), seen2.clone()));
                        }
                    }
                }
            });
        });
        Hostile {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Req> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(mut stream: tokio::net::TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Req>>>) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
                _ => return,
            }
        }
        let req = parse(&head);
        if let Ok(mut s) = seen.lock() {
            s.push(req.clone());
        }
        match handler(&req) {
            Answer::Bytes {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut all = out.into_bytes();
                all.extend_from_slice(&body);
                if stream.write_all(&all).await.is_err() {
                    return;
                }
            }
            Answer::Endless { prefix, pattern } => {
                let head = "HTTP/1.1 206 X\r\nConnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(&prefix).await.is_err()
                {
                    return;
                }
                let block: Vec<u8> = pattern
                    .iter()
                    .copied()
                    .cycle()
                    .take(pattern.len() * (65536 / pattern.len().max(1)).max(1))
                    .collect();
                while stream.write_all(&block).await.is_ok() {}
                return;
            }
            Answer::Stall { prefix } => {
                let head = "HTTP/1.1 206 X\r\nContent-Length: 100000000\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&prefix).await;
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
        }
    }
}

/// The request line's path and the headers the tests look at.
fn parse(head: &[u8]) -> Req {
    let text = String::from_utf8_lossy(head).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let mut req = Req {
        path,
        range: None,
        auth: None,
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => {
                req.range = v.trim().strip_prefix("bytes=").and_then(|r| {
                    let (a, b) = r.split_once('-')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
            }
            "authorization" => req.auth = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    req
}

/// A Hub serving `data` as the Xet-backed `FILE`, its tokens naming `cas` as the CAS.
fn hub_for(cas: &str, data: Vec<u8>) -> HubEmu {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.enable_xet_handle(CasHandle::at(cas));
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_xet_file_as(REPO, FILE, data, FILE_HASH);
    hub
}

async fn service(hub: &HubEmu) -> TestService {
    let endpoint = hub.endpoint();
    TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.downloads.max_retries = 1;
        c.downloads.stall_timeout_secs = 3;
    })
    .await
}

/// Runs the download of `FILE` to its end (within `within`), and checks the invariant:
/// completed with the right bytes, or failed with an error and no final file. Returns the
/// download.
async fn settle(svc: &TestService, data: &[u8], within: Duration) -> Value {
    settle_file(svc, FILE, data, within).await
}

async fn settle_file(svc: &TestService, file: &str, data: &[u8], within: Duration) -> Value {
    let id = svc.add(json!({"hub": {"repo": REPO, "file": file}})).await;
    let started = Instant::now();
    let d = loop {
        let d = svc.download(&id).await;
        if matches!(d["state"].as_str(), Some("completed" | "failed")) {
            break d;
        }
        assert!(
            started.elapsed() < within,
            "the download did not end within {within:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let path = svc.download_dir().join(REPO).join(file);
    match d["state"].as_str() {
        Some("completed") => {
            let got = std::fs::read(&path).unwrap_or_default();
            assert_eq!(sha256_hex(&got), sha256_hex(data), "the final file: {d}");
        }
        _ => {
            assert!(
                d["error"]["message"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "a failure says why: {d}"
            );
            assert!(!path.exists(), "a failed download leaves no final file");
        }
    }
    eprintln!(
        "ended in {:?}: {} via {} ({})",
        started.elapsed(),
        d["state"],
        d["transport"],
        d["error"]["message"]
    );
    d
}

/// One Hostile CAS for `model`, answering V2 reconstructions with `plan` and xorb GETs
/// with `xorb`.
fn hostile(
    model: Arc<Model>,
    plan: impl Fn(&Model, SocketAddr, &Req) -> Answer + Send + Sync + 'static,
    xorb: impl Fn(&Model, &Req) -> Answer + Send + Sync + 'static,
) -> Hostile {
    let addr = Arc::new(Mutex::new(None::<SocketAddr>));
    let a2 = addr.clone();
    let h = Hostile::start(move |req| {
        let Some(at) = a2.lock().ok().and_then(|a| *a) else {
            return Answer::status(503);
        };
        if req.path.starts_with("/v2/reconstructions/")
            || req.path.starts_with("/v1/reconstructions/")
        {
            plan(&model, at, req)
        } else if req.path.starts_with("/xorb/") {
            xorb(&model, req)
        } else {
            Answer::status(404)
        }
    });
    *addr.lock().expect("addr") = Some(h.addr);
    h
}

fn honest_plan(m: &Model, at: SocketAddr, req: &Req) -> Answer {
    Answer::json(&m.honest(at, req.range))
}

fn honest_xorb(m: &Model, req: &Req) -> Answer {
    m.xorb(req.range)
}

fn model(size: usize, chunk: usize, seed: u64) -> Arc<Model> {
    Arc::new(Model::new(xet::random_file(size, seed), chunk))
}

#[actix_web::test]
async fn the_hostile_harness_serves_an_honest_file_from_xorbs() {
    let m = model(1 << 20, 64 << 10, 1);
    let cas = hostile(m.clone(), honest_plan, honest_xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["transport"], "xet", "{d}");
    // The Xet token (not the Hub's) went to the CAS, and nothing to the xorb URLs.
    let seen = cas.seen();
    assert!(
        seen.iter().any(|r| r.path.starts_with("/v2/")
            && r.auth
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer xet_"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|r| r.path.starts_with("/xorb/"))
            .all(|r| r.auth.is_none()),
        "{seen:?}"
    );
}

/// What the bridge served of `FILE`.
fn bridge_bytes(hub: &HubEmu) -> u64 {
    let commit = hub.commit(REPO);
    hub.cdn().bytes_sent(&hub.cdn_path(REPO, &commit, FILE))
}

#[actix_web::test]
async fn a_reconstruction_of_tens_of_thousands_of_terms_is_handled_in_linear_time() {
    // 48 MiB in chunks of 2 KiB, a term and a fetch each: 8 192 a unit, 24 576 for the
    // whole file. Each term's fetch looked up among all fetches, per fetch, was 10^11
    // steps on the runtime.
    let m = model(48 << 20, 2 << 10, 2);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let url = format!("http://{at}/xorb/{XORB}");
        let (from, to) = req.range.unwrap_or((0, m.data.len() as u64 - 1));
        let mut terms = Vec::new();
        let mut ranges = Vec::new();
        let mut xorbs = serde_json::Map::new();
        let (mut file_at, mut wire_at, mut first) = (0u64, 0usize, None);
        for (i, c) in m.chunks.iter().enumerate() {
            let end = file_at + c.len() as u64;
            if end > from && file_at <= to {
                first.get_or_insert(file_at);
                // 8 000 chunks a xorb (a xorb has at most 8 Ki); all served from one URL.
                let (xorb, k) = (format!("{:064x}", i / 8000 + 1), i % 8000);
                terms.push(json!({"hash": xorb, "unpacked_length": c.len(), "range": {"start": k, "end": k + 1}}));
                ranges.push((xorb, json!({"chunks": {"start": k, "end": k + 1}, "bytes": {"start": wire_at, "end": wire_at + c.len() + 7}})));
            }
            file_at = end;
            wire_at += c.len() + 8;
        }
        for (xorb, r) in ranges {
            let e = xorbs
                .entry(xorb)
                .or_insert_with(|| json!([{"url": url, "ranges": []}]));
            e[0]["ranges"].as_array_mut().expect("ranges").push(r);
        }
        Answer::json(&json!({
            "offset_into_first_range": from - first.unwrap_or(0),
            "terms": terms,
            "xorbs": xorbs
        }))
    };
    let cas = hostile(m.clone(), plan, honest_xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("xet")),
        "{d}"
    );
}

#[actix_web::test]
async fn a_fetch_to_the_end_of_u64_that_ends_early_is_a_clear_failure() {
    let m = model(1 << 20, 64 << 10, 3);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        v["xorbs"][XORB][0]["ranges"][0]["bytes"]["end"] = json!(u64::MAX);
        Answer::json(&v)
    };
    let xorb = |m: &Model, _: &Req| Answer::Bytes {
        status: 206,
        headers: Vec::new(),
        body: m.wire[..m.wire.len() / 2].to_vec(),
    };
    let cas = hostile(m.clone(), plan, xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(d["state"], "completed", "the bridge serves it: {d}");
    assert_eq!(d["transport"], "http", "{d}");
}

#[actix_web::test]
async fn a_reconstruction_that_covers_half_the_file_falls_back_to_the_bridge() {
    let m = model(1 << 20, 64 << 10, 4);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        let half = m.chunks.len() / 2;
        v["terms"][0]["range"]["end"] = json!(half);
        v["terms"][0]["unpacked_length"] = json!(half * (64 << 10));
        Answer::json(&v)
    };
    let cas = hostile(m.clone(), plan, honest_xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(d["state"], "completed", "the bridge serves it: {d}");
    assert_eq!(d["transport"], "http", "{d}");
}

#[actix_web::test]
async fn endless_empty_chunks_do_not_keep_a_download_busy() {
    // A fetch of chunks 0..u32::MAX, the term at its far end, and a body of empty chunks
    // without end: 34 GB of headers before the term's chunk.
    let m = model(1 << 20, 64 << 10, 5);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        v["terms"][0]["range"] = json!({"start": u32::MAX - 1, "end": u32::MAX});
        v["xorbs"][XORB][0]["ranges"][0] = json!({"chunks": {"start": 0, "end": u32::MAX}, "bytes": {"start": 0, "end": u64::MAX - 1}});
        Answer::json(&v)
    };
    let xorb = |_: &Model, _: &Req| Answer::Endless {
        prefix: Vec::new(),
        pattern: header(0, 0, 0),
    };
    let cas = hostile(m.clone(), plan, xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(30)).await;
    assert_eq!(d["state"], "completed", "the bridge serves it: {d}");
}

#[actix_web::test]
async fn chunks_of_another_file_never_reach_the_final_file() {
    // Same lengths, other bytes: only the sha256 can tell.
    let m = model(1 << 20, 64 << 10, 6);
    let other = Arc::new(Model::new(xet::random_file(1 << 20, 66), 64 << 10));
    let xorb = move |_: &Model, req: &Req| other.xorb(req.range);
    let cas = hostile(m.clone(), honest_plan, xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    // The sha256 catches them before the `.part` becomes the file (`settle` checks no
    // file is left); the CAS lied, so nothing is retried from it behind the user's back.
    assert_eq!(d["error"]["kind"], "checksum_mismatch", "{d}");
    assert_eq!(bridge_bytes(&hub), 0);
}

#[actix_web::test]
async fn a_stalled_xorb_and_a_file_url_fall_back_to_the_bridge() {
    let m = model(1 << 20, 64 << 10, 7);
    let xorb = |m: &Model, _: &Req| Answer::Stall {
        prefix: m.wire[..1000].to_vec(),
    };
    let cas = hostile(m.clone(), honest_plan, xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("http")),
        "{d}"
    );

    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        v["xorbs"][XORB][0]["url"] = json!("file:///etc/passwd");
        Answer::json(&v)
    };
    let cas = hostile(m.clone(), plan, honest_xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("http")),
        "{d}"
    );
}

#[actix_web::test]
async fn a_bridge_serving_another_file_after_the_cas_failed_is_refused() {
    let m = model(1 << 20, 64 << 10, 8);
    let cas = hostile(
        m.clone(),
        |_: &Model, _: SocketAddr, _: &Req| Answer::status(500),
        honest_xorb,
    );
    let hub = hub_for(&cas.url(), m.data.clone());
    let commit = hub.commit(REPO);
    hub.cdn().replace_content(
        &hub.cdn_path(REPO, &commit, FILE),
        xet::random_file(1 << 20, 88),
    );
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(d["state"], "failed", "{d}");
}

#[actix_web::test]
async fn a_reconstruction_redirected_to_another_host_never_carries_the_token_there() {
    let m = model(1 << 20, 64 << 10, 9);
    let elsewhere = hostile(m.clone(), honest_plan, honest_xorb);
    let to = elsewhere.url();
    let cas = hostile(
        m.clone(),
        move |_: &Model, _: SocketAddr, req: &Req| Answer::Bytes {
            status: 302,
            headers: vec![("Location".into(), format!("{to}{}", req.path))],
            body: Vec::new(),
        },
        honest_xorb,
    );
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    settle(&svc, &m.data, Duration::from_secs(60)).await;
    let seen = elsewhere.seen();
    assert!(
        seen.iter().any(|r| r.path.contains("/reconstructions/")),
        "the redirect was followed: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.auth.is_none()),
        "the Xet token went to another host: {seen:?}"
    );
}

#[actix_web::test]
async fn a_reused_file_truncated_mid_download_makes_the_cas_serve_its_chunks() {
    // A: three 16 MiB terms of xorb X. B: A with its middle unit new (xorb X2).
    const MIB16: usize = 16 << 20;
    const FILE2: &str = "other-Q4_K_M.gguf";
    let hash2 = "c".repeat(64);
    let x2 = "d".repeat(64);
    let a = Model::new(xet::random_file(3 * MIB16, 10), 64 << 10);
    let mut b_data = a.data.clone();
    b_data[MIB16..2 * MIB16].copy_from_slice(&xet::random_file(MIB16, 11));
    let b_mid = Model::new(b_data[MIB16..2 * MIB16].to_vec(), 64 << 10);
    let wire_at: Vec<usize> = (0..=3).map(|k| k * 256 * ((64 << 10) + 8)).collect();
    let models = Arc::new((a, b_mid));
    let m2 = models.clone();
    let (x2_plan, hash2_plan) = (x2.clone(), hash2.clone());
    let plan = move |_: &Model, at: SocketAddr, req: &Req| {
        let term = |x: &str, k: usize| json!({"hash": x, "unpacked_length": MIB16, "range": {"start": k * 256, "end": (k + 1) * 256}});
        let range = |k: usize| json!({"chunks": {"start": k * 256, "end": (k + 1) * 256}, "bytes": {"start": wire_at[k], "end": wire_at[k + 1] - 1}});
        let (terms, xorbs) = if req.path.ends_with(&hash2_plan) {
            (
                json!([term(XORB, 0), term(&x2_plan, 0), term(XORB, 2)]),
                json!({XORB: [{"url": format!("http://{at}/xorb/{XORB}"), "ranges": [range(0), range(2)]}],
                       x2_plan.clone(): [{"url": format!("http://{at}/xorb/{x2_plan}"), "ranges": [range(0)]}]}),
            )
        } else {
            (
                json!([term(XORB, 0), term(XORB, 1), term(XORB, 2)]),
                json!({XORB: [{"url": format!("http://{at}/xorb/{XORB}"), "ranges": [range(0), range(1), range(2)]}]}),
            )
        };
        Answer::json(
            &json!({"offset_into_first_range": req.range.map_or(0, |r| r.0), "terms": terms, "xorbs": xorbs}),
        )
    };
    let x2_xorb = x2.clone();
    let xorb = move |_: &Model, req: &Req| {
        if req.path.ends_with(&x2_xorb) {
            // Time for the test to truncate A meanwhile.
            std::thread::sleep(Duration::from_millis(1500));
            m2.1.xorb(req.range)
        } else {
            m2.0.xorb(req.range)
        }
    };
    let cas = hostile(Arc::new(Model::new(Vec::new(), 1)), plan, xorb);
    let hub = hub_for(&cas.url(), models.0.data.clone());
    hub.put_xet_file_as(REPO, FILE2, b_data.clone(), &hash2);
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.downloads.max_retries = 1;
        c.downloads.stall_timeout_secs = 5;
        c.downloads.connections_per_download = 1;
    })
    .await;
    let d = settle(&svc, &models.0.data, Duration::from_secs(120)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("xet")),
        "{d}"
    );
    let a_path = svc.download_dir().join(REPO).join(FILE);
    let truncate = {
        let seen = cas.seen.clone();
        let x2 = x2.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                if seen
                    .lock()
                    .is_ok_and(|s| s.iter().any(|r| r.path.ends_with(&x2)))
                {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&a_path)
                        .expect("A");
                    f.set_len(1 << 20).expect("truncate A");
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    let d = settle_file(&svc, FILE2, &b_data, Duration::from_secs(120)).await;
    assert!(
        truncate.join().unwrap_or(false),
        "A was truncated mid-download"
    );
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("xet")),
        "{d}"
    );
    assert!(
        d["bytes_reused"].as_u64().unwrap_or(0) >= MIB16 as u64,
        "the first unit was copied from A: {d}"
    );
    let x_after: Vec<Req> = cas
        .seen()
        .into_iter()
        .filter(|r| r.path.ends_with(XORB))
        .collect();
    assert!(
        x_after
            .iter()
            .any(|r| r.range.is_some_and(|(s, _)| s as usize == wire_at_of(2))),
        "the third unit came from the CAS: {x_after:?}"
    );
}

fn wire_at_of(k: usize) -> usize {
    k * 256 * ((64 << 10) + 8)
}

#[actix_web::test]
async fn a_whole_xorb_served_for_a_range_from_0_gives_only_the_chunks_asked() {
    // Two fetches of one xorb: chunks 0..8 (bytes from 0) and 8..16. The server answers
    // the first with `200` and the whole xorb: its bytes past the range are not chunks
    // 0..8's.
    let m = model(1 << 20, 64 << 10, 12);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        let cut = 8 * ((64 << 10) + 8);
        v["terms"] = json!([
            {"hash": XORB, "unpacked_length": 8 << 16, "range": {"start": 0, "end": 8}},
            {"hash": XORB, "unpacked_length": 8 << 16, "range": {"start": 8, "end": 16}}
        ]);
        v["xorbs"][XORB][0]["ranges"] = json!([
            {"chunks": {"start": 0, "end": 8}, "bytes": {"start": 0, "end": cut - 1}},
            {"chunks": {"start": 8, "end": 16}, "bytes": {"start": cut, "end": m.wire.len() - 1}}
        ]);
        Answer::json(&v)
    };
    let xorb = |m: &Model, req: &Req| match req.range {
        Some((0, _)) => Answer::Bytes {
            status: 200,
            headers: Vec::new(),
            body: m.wire.clone(),
        },
        r => m.xorb(r),
    };
    let cas = hostile(m.clone(), plan, xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("xet")),
        "{d}"
    );
}

#[actix_web::test]
async fn a_reconstruction_far_heavier_than_its_range_is_refused() {
    // 20 MiB of JSON (padding serde skips) for a 1 MiB file: it would parse, so only a
    // cap by the range's size keeps the units in flight from holding 32 MiB each.
    let m = model(1 << 20, 64 << 10, 13);
    let plan = |m: &Model, at: SocketAddr, req: &Req| {
        let mut v = m.honest(at, req.range);
        v["padding"] = json!("x".repeat(20 << 20));
        Answer::json(&v)
    };
    let cas = hostile(m.clone(), plan, honest_xorb);
    let hub = hub_for(&cas.url(), m.data.clone());
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(
        (&d["state"], &d["transport"]),
        (&json!("completed"), &json!("http")),
        "{d}"
    );
}

/// A Hub whose tokens come already spent by their `exp` (a clock behind ours, `exp: 0`)
/// while the CAS takes them: the token is used, not asked for again by every unit.
#[actix_web::test]
async fn a_token_spent_at_birth_is_not_renewed_by_every_unit() {
    let m = model(48 << 20, 64 << 10, 21);
    let cas = hostile(m.clone(), honest_plan, honest_xorb);
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    let handle = CasHandle::at(&cas.url());
    handle.set_fault(Fault::TokenTtl(Duration::ZERO));
    hub.enable_xet_handle(handle);
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_xet_file_as(REPO, FILE, m.data.clone(), FILE_HASH);
    let svc = service(&hub).await;
    let d = settle(&svc, &m.data, Duration::from_secs(60)).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["transport"], "xet", "{d}");
    let tokens = hub
        .requests()
        .iter()
        .filter(|r| r.path.contains("/xet-read-token/"))
        .count();
    // Three units and the chunk map's reconstruction: four asks without the rule.
    assert!(tokens <= 2, "{tokens} token requests");
}
