//! Boots the real service in-process (real sled on a temp dir, real HTTP on port 0) and
//! offers small helpers to drive it through its public API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use model_manager::config::Config;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A running service and the temp dir that holds its data and downloads.
pub struct TestService {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    service: Option<model_manager::Service>,
}

/// A config for tests: port 0, temp dirs, fast retries and a short stall timeout.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.storage.data_dir = dir.join("data");
    c.storage.download_dir = dir.join("downloads");
    c.downloads.retry_base_delay_ms = 100;
    c.downloads.stall_timeout_secs = 2;
    c.downloads.progress_interval_ms = 300;
    // Test files are a few MiB: with the default (64 MiB) no test would write with
    // O_DIRECT, so every single-connection file of 2 MiB or more does here.
    c.downloads.direct_io_min_bytes = 2 * 1024 * 1024;
    c
}

impl TestService {
    /// Starts the service; `tweak` adjusts the test config first.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestService {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts the service on an existing temp dir (for restarts).
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestService {
        // sled releases its lock a moment after the last handle of a stopped service.
        let prepared = super::wait::eventually(Duration::from_secs(10), || {
            let tried = match model_manager::prepare(config.clone()) {
                Ok(p) => Ok(p),
                Err(e) if e.to_string().contains("in use") => Err(format!("prepare: {e}")),
                Err(e) => panic!("prepare: {e}"),
            };
            std::future::ready(tried)
        })
        .await;
        let service = model_manager::start(prepared).await.expect("start");
        TestService {
            base: format!("http://{}", service.addr),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            dir,
            service: Some(service),
        }
    }

    /// Stops the service cleanly and returns its dir (to start it again).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.service.take() {
            s.shutdown().await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    pub fn download_dir(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Any request; returns status and JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Adds a download and returns its id (panics unless 201).
    pub async fn add(&self, body: Value) -> String {
        let (status, v) = self.post("/api/downloads", body).await;
        assert_eq!(status, 201, "add failed: {v}");
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an add without an id: {v}"))
            .to_owned()
    }

    /// Queues every file of a Hub repo's quantization and waits until each completed.
    pub async fn fetch_quantization(&self, repo: &str, quant: &str, timeout: Duration) {
        let (s, v) = self
            .post(
                &format!("/api/hub/models/{repo}/download"),
                json!({ "quantization": quant }),
            )
            .await;
        assert_eq!(s, 201, "queuing {repo}:{quant}: {v}");
        for d in v["downloads"].as_array().expect("downloads") {
            let id = d["id"].as_str().expect("an id");
            self.wait_state(id, "completed", timeout).await;
        }
    }

    pub async fn download(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/downloads/{id}")).await;
        assert_eq!(status, 200, "get {id}: {v}");
        v
    }

    pub async fn action(&self, id: &str, action: &str) -> (u16, Value) {
        self.post(&format!("/api/downloads/{id}/{action}"), json!({}))
            .await
    }

    /// Polls until the download is in `state` (panics after `timeout`, or if it ends
    /// in another finished state first).
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        super::wait::eventually(timeout, || async {
            let d = self.download(id).await;
            let now = d["state"].as_str().unwrap_or("");
            if now == state {
                return Ok(d);
            }
            let finished = matches!(now, "completed" | "failed" | "cancelled");
            assert!(
                !finished,
                "waiting for {id} to be {state}: it is {now}: {d}"
            );
            Err(format!("waiting for {id} to be {state}: it is {now}: {d}"))
        })
        .await
    }

    /// Polls until the download has more than `bytes` done.
    pub async fn wait_past(&self, id: &str, bytes: u64, timeout: Duration) -> Value {
        self.wait_until(id, timeout, &format!("more than {bytes} bytes done"), |d| {
            d["bytes_done"].as_u64().unwrap_or(0) > bytes
        })
        .await
    }

    /// Polls until `pred` holds for the download.
    pub async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        super::wait::eventually(timeout, || async {
            let d = self.download(id).await;
            if pred(&d) {
                Ok(d)
            } else {
                Err(format!("waiting for {id}: {what}: {d}"))
            }
        })
        .await
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        // A test that panicked leaves the server to the System's end; nothing to do.
        let _ = self.service.take();
    }
}

/// Deterministic pseudo-random content (incompressible, position-dependent).
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sha256 of a file on disk.
pub fn file_sha256(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Every file below `dir`, relative, sorted: what a test asserts "nothing else was written" with.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub const MIB: usize = 1024 * 1024;
