//! The tests' Xet storage: HuggingFace's own CAS (`local_cas_server` from the `xet-client`
//! crate, 1.8.0) behind an in-test proxy that adds what the real service has and the
//! simulation lacks, and files uploaded into it by PyPI's `hf_xet` (`tests/it/xet/upload.py`),
//! so the chunking, xorb packing and dedup the tests see are HuggingFace's, not ours.
//!
//! What the proxy adds (the client only ever sees [`Cas::url`], the proxy):
//! - **tokens**: every route but `/health` and the xorb fetches (`/v1/fetch_term`) needs
//!   `Authorization: Bearer <token>` with a token minted by [`CasHandle::mint_token`] (the
//!   emulated Hub's `xet-read-token` route mints them) and not expired; else 401.
//! - **presigned xorb URLs**: every `url` of a reconstruction answer (V1 `fetch_info`, V2
//!   `xorbs`) gets `&x-exp=<unix secs>&x-sig=<hex>`; a fetch without a valid signature, or
//!   after `x-exp`, gets 403 with an S3-style XML body (what an expired S3 presigned URL gets).
//! - **faults** ([`Fault`]) set at run time, and counters of what was served.
//!
//! The proxy is the same hand-rolled HTTP/1.1 plumbing as `upstream.rs` ([`Server`]: its own
//! thread and runtime, `Connection: close` on every answer); it forwards to the CAS with
//! reqwest, with the client's `Host` replaced by the proxy's, so the URLs the CAS builds point
//! back at the proxy.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upstream::{reason, Server};

/// Lifetime of a token or a signed URL unless [`Fault::TokenTtl`] / [`Fault::UrlTtl`] say
/// otherwise (the real Hub's read tokens last about an hour).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3_600);
/// How long an upload (python, hf_xet) may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the CAS may take to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A request head larger than this is refused (hf_xet sends a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A request body larger than this is refused (a xorb is at most 64 MiB).
const MAX_BODY_BYTES: usize = 256 << 20;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a [`Fault::StallAfter`] answer stays silent before the proxy gives up on it.
const STALL_DURATION: Duration = Duration::from_secs(120);
/// Bytes written per write of an answer body (the unit of the xorb-bytes counter).
const PIECE: usize = 64 * 1024;
/// Write size under [`Fault::Throttle`]: small enough that pacing is smooth.
const THROTTLED_PIECE: usize = 16 * 1024;

const SCRIPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/xet");

/// A fault of the CAS, set at run time with [`CasHandle::set_fault`] (each kind replaces the
/// previous one of its kind; [`CasHandle::clear_faults`] removes them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 on every request, xorb fetches and `/health` included.
    Down,
    /// The `nth` xorb fetch from now (1 = the next one) that succeeds gets one byte of its body
    /// flipped, inside the data of its first chunk (after the 8-byte chunk header, so the chunk
    /// still parses). One-shot.
    FlipByte { nth: u64 },
    /// Lifetime of the tokens minted from now on (whole seconds: `exp` = now's unix second
    /// plus these, so a token lives between n - 1 and n s; zero: already expired).
    TokenTtl(Duration),
    /// Lifetime of the xorb URLs signed from now on (whole seconds, as [`Fault::TokenTtl`]:
    /// a 1 s URL may be dead within a millisecond; zero: already expired).
    UrlTtl(Duration),
    /// 404 on `/v2/reconstructions/*` (a CAS without V2: clients fall back to V1).
    V2Missing,
    /// Every xorb fetch sends this many body bytes, then nothing for two minutes.
    StallAfter(u64),
    /// Xorb bodies leave at this many bytes per second in all (one budget shared by every
    /// fetch, read again for every 16 KiB: clearing it speeds up fetches under way).
    Throttle { bytes_per_sec: u64 },
}

/// One request as the proxy saw it, with the status it answered.
#[derive(Clone, Debug)]
pub struct CasRequest {
    pub method: String,
    /// As sent (not decoded), without the query: `/v2/reconstructions/<hash>`.
    pub path: String,
    /// The raw query string (after `?`).
    pub query: Option<String>,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

/// One request for a file's reconstruction (`/v1|v2/reconstructions/{hash}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconstruction {
    /// 1 or 2.
    pub version: u8,
    pub file_hash: String,
    /// The `Range` header, as sent.
    pub range: Option<String>,
    pub status: u16,
}

/// A file as `hf_xet` uploaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XetFile {
    /// The Xet file hash (64 hex digits): what `X-Xet-Hash` carries.
    pub hash: String,
    pub size: u64,
    pub sha256: String,
}

/// A CAS access token, as the Hub's `xet-read-token` route hands it out.
#[derive(Clone, Debug)]
pub struct XetToken {
    pub token: String,
    /// Unix seconds; the token works while `now < exp`.
    pub exp: u64,
    pub cas_url: String,
}

/// A running CAS and its proxy. Dereferences to its [`CasHandle`] (faults, counters, tokens,
/// uploads). Stops (the CAS process group killed) when dropped.
pub struct Cas {
    handle: CasHandle,
    // Field order is drop order: the proxy stops before the process it forwards to.
    _proxy: Server,
    process: CasProcess,
}

/// What a test or the emulated Hub holds of a [`Cas`]: cheap to clone, valid while the `Cas`
/// lives.
#[derive(Clone)]
pub struct CasHandle {
    url: String,
    state: Arc<Mutex<CasState>>,
    /// `HF_HOME` of every upload: one publisher's machine, whose Xet shard cache lets a new
    /// version dedup against the chunks of the last (as `hf upload` does run after run).
    uploader_home: Arc<Path>,
}

struct Knobs {
    down: bool,
    /// Counted down on every successful xorb fetch; the fetch that brings it to 0 is damaged.
    flip_in: Option<u64>,
    token_ttl: Duration,
    url_ttl: Duration,
    v2_missing: bool,
    stall_after: Option<u64>,
    throttle: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            down: false,
            flip_in: None,
            token_ttl: DEFAULT_TTL,
            url_ttl: DEFAULT_TTL,
            v2_missing: false,
            stall_after: None,
            throttle: None,
        }
    }
}

#[derive(Default)]
struct CasState {
    knobs: Knobs,
    /// Token → expiry (unix seconds).
    tokens: HashMap<String, u64>,
    next_token: u64,
    /// Keys the URL signatures (random per CAS, so a URL of another CAS never verifies).
    secret: String,
    /// `http://127.0.0.1:PORT` of the proxy.
    proxy_base: String,
    requests: Vec<CasRequest>,
    reconstructions: Vec<Reconstruction>,
    xorb_fetches: u64,
    xorb_bytes: u64,
    unauthorized: u64,
    forbidden: u64,
    flipped: u64,
    uploaded_xorb_bytes: u64,
    /// When the shared [`Fault::Throttle`] budget next has room.
    throttle_at: Option<Instant>,
}

impl std::ops::Deref for Cas {
    type Target = CasHandle;
    fn deref(&self) -> &CasHandle {
        &self.handle
    }
}

impl Cas {
    /// Starts `local_cas_server` on a fresh temp data directory and a free port, waits for its
    /// `/health`, and starts the proxy in front of it. Panics (with how to install it) when the
    /// binary is missing.
    pub fn start() -> Cas {
        let process = CasProcess::start();
        let state = Arc::new(Mutex::new(CasState {
            secret: format!("{:016x}", fastrand::u64(..)),
            ..CasState::default()
        }));
        let shared = Arc::new(Shared {
            state: state.clone(),
            cas_base: format!("http://127.0.0.1:{}", process.port),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("build the proxy's client"),
        });
        let proxy = Server::start("cas-proxy", move |stream| {
            handle_connection(stream, shared.clone())
        });
        let url = format!("http://{}", proxy.addr());
        // No request can arrive before the port is known, so setting it now is race-free.
        lock(&state).proxy_base = url.clone();
        let uploader_home = process._dir.path().join("uploader");
        std::fs::create_dir_all(&uploader_home).expect("uploader's home");
        Cas {
            handle: CasHandle {
                url,
                state,
                uploader_home: uploader_home.into(),
            },
            _proxy: proxy,
            process,
        }
    }

    /// The CAS itself, behind the proxy (for a test that wants to bypass it).
    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The handle to give away (e.g. to keep after the `Cas` moved).
    pub fn handle(&self) -> CasHandle {
        self.handle.clone()
    }
}

impl CasHandle {
    /// A handle whose tokens name `url` as the CAS, with no CAS behind it: for tests that
    /// serve a hostile CAS of their own there (`xet_hostile.rs`).
    pub fn at(url: &str) -> CasHandle {
        CasHandle {
            url: url.trim_end_matches('/').to_owned(),
            state: Arc::default(),
            uploader_home: Arc::from(Path::new("/nonexistent")),
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy, without a trailing slash: the `casUrl`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A new token valid for the current [`Fault::TokenTtl`] (default one hour).
    pub fn mint_token(&self) -> XetToken {
        let ttl = lock(&self.state).knobs.token_ttl;
        self.mint_token_for(ttl)
    }

    /// A new token valid for `ttl` (whole seconds).
    pub fn mint_token_for(&self, ttl: Duration) -> XetToken {
        let mut st = lock(&self.state);
        st.next_token += 1;
        let token = format!("xet_{:016x}_{}", fastrand::u64(..), st.next_token);
        let exp = unix_now() + ttl.as_secs();
        st.tokens.insert(token.clone(), exp);
        XetToken {
            token,
            exp,
            cas_url: self.url.clone(),
        }
    }

    /// Makes every token minted so far expired (a refresh mints a working one).
    pub fn expire_tokens(&self) {
        let now = unix_now();
        for exp in lock(&self.state).tokens.values_mut() {
            *exp = now;
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        let mut st = lock(&self.state);
        if matches!(fault, Fault::Throttle { .. }) {
            st.throttle_at = None;
        }
        let knobs = &mut st.knobs;
        match fault {
            Fault::Down => knobs.down = true,
            Fault::FlipByte { nth } => knobs.flip_in = Some(nth.max(1)),
            Fault::TokenTtl(ttl) => knobs.token_ttl = ttl,
            Fault::UrlTtl(ttl) => knobs.url_ttl = ttl,
            Fault::V2Missing => knobs.v2_missing = true,
            Fault::StallAfter(bytes) => knobs.stall_after = Some(bytes),
            Fault::Throttle { bytes_per_sec } => knobs.throttle = Some(bytes_per_sec.max(1)),
        }
    }

    /// Back to a healthy CAS with default lifetimes (tokens and URLs already handed out keep
    /// their expiry).
    pub fn clear_faults(&self) {
        let mut st = lock(&self.state);
        st.knobs = Knobs::default();
        st.throttle_at = None;
    }

    /// Every request so far, in arrival order (uploads included).
    pub fn requests(&self) -> Vec<CasRequest> {
        lock(&self.state).requests.clone()
    }

    /// Every reconstruction request so far, in arrival order.
    pub fn reconstructions(&self) -> Vec<Reconstruction> {
        lock(&self.state).reconstructions.clone()
    }

    /// Xorb fetches answered with a 2xx status.
    pub fn xorb_fetches(&self) -> u64 {
        lock(&self.state).xorb_fetches
    }

    /// Body bytes of xorb fetches written to clients.
    pub fn xorb_bytes(&self) -> u64 {
        lock(&self.state).xorb_bytes
    }

    /// 401s given (no, unknown or expired token).
    pub fn unauthorized(&self) -> u64 {
        lock(&self.state).unauthorized
    }

    /// 403s given (xorb URL unsigned, tampered with or expired).
    pub fn forbidden(&self) -> u64 {
        lock(&self.state).forbidden
    }

    /// Xorb answers damaged by [`Fault::FlipByte`].
    pub fn flipped(&self) -> u64 {
        lock(&self.state).flipped
    }

    /// Body bytes of xorb uploads (`POST /v1/xorbs/…`) the CAS accepted: what a dedup saves.
    pub fn uploaded_xorb_bytes(&self) -> u64 {
        lock(&self.state).uploaded_xorb_bytes
    }

    /// Zeroes the counters and forgets the request logs (e.g. after the uploads of a test).
    pub fn reset_counters(&self) {
        let mut st = lock(&self.state);
        st.requests.clear();
        st.reconstructions.clear();
        st.xorb_fetches = 0;
        st.xorb_bytes = 0;
        st.unauthorized = 0;
        st.forbidden = 0;
        st.flipped = 0;
        st.uploaded_xorb_bytes = 0;
    }

    /// Uploads `paths` in one upload commit with PyPI's `hf_xet` (through the proxy, with a
    /// token of its own), and returns what it reports for each, in order. Blocks; panics if the
    /// upload fails or `hf_xet` is missing.
    pub fn upload(&self, paths: &[&Path]) -> Vec<XetFile> {
        let token = self.mint_token_for(DEFAULT_TTL);
        let mut cmd = Command::new("python3");
        cmd.arg(format!("{SCRIPT_DIR}/upload.py"))
            .arg(&self.url)
            .arg(&token.token)
            .arg(token.exp.to_string())
            .args(paths);
        let out = run_python(cmd, &self.uploader_home, UPLOAD_TIMEOUT);
        let files: Vec<XetFile> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("upload.py printed {line:?}: {e}"));
                XetFile {
                    hash: v["hash"].as_str().unwrap_or_default().to_owned(),
                    size: v["size"].as_u64().unwrap_or_default(),
                    sha256: v["sha256"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        assert_eq!(files.len(), paths.len(), "upload.py printed: {out}");
        files
    }

    /// [`CasHandle::upload`] of one file with these bytes (written to a temp file first).
    pub fn upload_bytes(&self, data: &[u8]) -> XetFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("upload.bin");
        std::fs::write(&path, data).expect("write the file to upload");
        let mut files = self.upload(&[&path]);
        files.remove(0)
    }
}

/// Runs a python script with a clean HF environment (its own `HF_HOME` and Xet cache in
/// `home`), in its own process group, killed whole after `timeout`. Returns its stdout;
/// panics with its stderr when it fails.
fn run_python(mut cmd: Command, home: &Path, timeout: Duration) -> String {
    for var in ["HF_ENDPOINT", "HF_TOKEN", "HF_HUB_CACHE", "HF_XET_CACHE"] {
        cmd.env_remove(var);
    }
    let logs = tempfile::tempdir().expect("temp dir");
    let (stdout, stderr) = (logs.path().join("stdout"), logs.path().join("stderr"));
    cmd.env("HF_HOME", home.join("hf"))
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .process_group(0);
    let mut child = cmd.spawn().expect("python3 runs (install Python 3)");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        !log.contains("ModuleNotFoundError"),
        "hf_xet or huggingface_hub is missing: run `python3 -m pip install hf_xet==1.8.0 \
         huggingface_hub` (scripts/test.sh does): {log}"
    );
    match status {
        Some(s) if s.success() => std::fs::read_to_string(&stdout).unwrap_or_default(),
        Some(s) => panic!("{cmd:?} failed ({s}):\n{log}"),
        None => panic!("{cmd:?} killed after {timeout:?}:\n{log}"),
    }
}

/// Kills the whole process group of `child`.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is
        // involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

fn lock(state: &Mutex<CasState>) -> MutexGuard<'_, CasState> {
    // A panicking test thread must not take the proxy down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The CAS process

struct CasProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl CasProcess {
    fn start() -> CasProcess {
        let bin = cas_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        // A free port can be taken between our probe and the server's bind: try a few.
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("probe a free port");
            let log = std::fs::File::create(dir.path().join(format!("cas-{attempt}.log")))
                .expect("CAS log file");
            let mut child = Command::new(&bin)
                .arg("--data-directory")
                .arg(dir.path().join("data"))
                .arg("--port")
                .arg(port.to_string())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("CAS log file"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            if wait_healthy(&mut child, port) {
                return CasProcess {
                    child,
                    port,
                    _dir: dir,
                };
            }
            kill_group(&mut child);
        }
        let log = std::fs::read_to_string(dir.path().join("cas-4.log")).unwrap_or_default();
        panic!("local_cas_server did not come up:\n{log}");
    }
}

impl Drop for CasProcess {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// `$LOCAL_CAS_SERVER`, else `local_cas_server` on `PATH`, else `~/.cargo/bin`'s.
fn cas_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCAL_CAS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("local_cas_server"))
            .find(|p| p.is_file())
    });
    let home =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/local_cas_server"));
    on_path.or(home.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "local_cas_server is missing: cargo install xet-client --version 1.8.0 \
                 --features simulation --bin local_cas_server (scripts/test.sh does)"
        )
    })
}

/// Polls `GET /health` until it answers 200, the process exits, or [`START_TIMEOUT`].
fn wait_healthy(child: &mut Child, port: u16) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let sent = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let mut head = [0u8; 12];
            if sent.is_ok() && s.read_exact(&mut head).is_ok() && head.ends_with(b" 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// The proxy

struct Shared {
    state: Arc<Mutex<CasState>>,
    /// `http://127.0.0.1:PORT` of the CAS.
    cas_base: String,
    client: reqwest::Client,
}

/// A parsed request head and its body.
struct Req {
    method: String,
    /// As sent, without the query.
    path: String,
    query: Option<String>,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the proxy answers.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A xorb fetch: its body bytes are counted, and [`Fault::StallAfter`] applies.
    xorb: bool,
    stall_after: Option<u64>,
}

impl Answer {
    fn text(status: u16, content_type: &str, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            xorb: false,
            stall_after: None,
        }
    }
}

async fn handle_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let req = match tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            let answer = Answer::text(400, "text/plain", &format!("bad request: {e}\n"));
            let _ = write_answer(&mut stream, &answer, true, &shared.state).await;
            return;
        }
    };
    let answer = serve(&shared, &req).await;
    record(&shared.state, &req, answer.status);
    let with_body = req.method != "HEAD";
    let _ = write_answer(&mut stream, &answer, with_body, &shared.state).await;
}

fn record(state: &Mutex<CasState>, req: &Req, status: u16) {
    let mut st = lock(state);
    let range = req.header("range").map(str::to_owned);
    for (prefix, version) in [("/v1/reconstructions/", 1), ("/v2/reconstructions/", 2)] {
        if let Some(hash) = req.path.strip_prefix(prefix) {
            st.reconstructions.push(Reconstruction {
                version,
                file_hash: hash.to_owned(),
                range: range.clone(),
                status,
            });
        }
    }
    match status {
        401 => st.unauthorized += 1,
        403 => st.forbidden += 1,
        _ => {}
    }
    st.requests.push(CasRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        range,
        authorization: req.header("authorization").map(str::to_owned),
        status,
    });
}

/// Decides and, where it passes, forwards one request.
async fn serve(shared: &Shared, req: &Req) -> Answer {
    let (down, v2_missing) = {
        let st = lock(&shared.state);
        (st.knobs.down, st.knobs.v2_missing)
    };
    if down {
        return Answer::text(503, "text/plain", "Service Unavailable\n");
    }
    if req.path == "/v1/fetch_term" {
        return fetch_xorb(shared, req).await;
    }
    if req.path != "/health" {
        if let Err(why) = check_token(&shared.state, req.header("authorization")) {
            return Answer::text(401, "text/plain", &format!("Unauthorized: {why}\n"));
        }
    }
    if v2_missing && req.path.starts_with("/v2/reconstructions") {
        return Answer::text(404, "text/plain", "Not Found\n");
    }
    let mut answer = forward(shared, req, req.query.as_deref()).await;
    let reconstruction =
        req.path.starts_with("/v1/reconstructions") || req.path.starts_with("/v2/reconstructions");
    if reconstruction && answer.status == 200 {
        sign_answer(&shared.state, &mut answer);
    }
    if req.method == "POST" && req.path.starts_with("/v1/xorbs/") && answer.status < 300 {
        lock(&shared.state).uploaded_xorb_bytes += req.body.len() as u64;
    }
    answer
}

fn check_token(state: &Mutex<CasState>, authorization: Option<&str>) -> Result<(), &'static str> {
    let value = authorization.ok_or("no token")?;
    let (scheme, token) = value.split_once(' ').ok_or("not a bearer token")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a bearer token");
    }
    let st = lock(state);
    match st.tokens.get(token.trim()) {
        None => Err("unknown token"),
        Some(exp) if unix_now() >= *exp => Err("token expired"),
        Some(_) => Ok(()),
    }
}

/// `GET /v1/fetch_term?term=…&x-exp=…&x-sig=…`: checks the signature, forwards without it,
/// counts the fetch, and applies [`Fault::FlipByte`] and [`Fault::StallAfter`].
async fn fetch_xorb(shared: &Shared, req: &Req) -> Answer {
    let query = req.query.as_deref().unwrap_or("");
    let forwarded = match verify(&shared.state, query) {
        Ok(q) => q,
        Err(message) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                 <Message>{message}</Message></Error>"
            );
            return Answer::text(403, "application/xml", &xml);
        }
    };
    let mut answer = forward(shared, req, Some(&forwarded)).await;
    if !(200..300).contains(&answer.status) {
        return answer;
    }
    answer.xorb = true;
    let mut st = lock(&shared.state);
    st.xorb_fetches += 1;
    answer.stall_after = st.knobs.stall_after;
    if let Some(n) = st.knobs.flip_in {
        if n <= 1 {
            let multipart = answer
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("multipart"));
            if flip_first_chunk(&mut answer.body, multipart) {
                st.knobs.flip_in = None;
                st.flipped += 1;
            }
        } else {
            st.knobs.flip_in = Some(n - 1);
        }
    }
    answer
}

/// Flips one byte in the middle of the first chunk's data (a chunk is an 8-byte header —
/// version, 3-byte compressed length, compression scheme, 3-byte uncompressed length — then
/// its data). In a multipart answer the first part's body is used. False if there is no
/// chunk data to damage.
fn flip_first_chunk(body: &mut [u8], multipart: bool) -> bool {
    let start = if multipart {
        match body.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(p) => p + 4,
            None => return false,
        }
    } else {
        0
    };
    let Some(header) = body.get(start..start + 8) else {
        return false;
    };
    let compressed = u32::from_le_bytes([header[1], header[2], header[3], 0]) as usize;
    if compressed == 0 {
        return false;
    }
    let at = start + 8 + compressed / 2;
    match body.get_mut(at) {
        Some(b) => {
            *b ^= 0xff;
            true
        }
        None => false,
    }
}

/// The signature of a xorb URL's query (everything before `&x-sig=`).
fn signature(secret: &str, signed: &str) -> String {
    hex(&Sha256::digest(format!("{secret}\n{signed}").as_bytes())[..16])
}

/// Checks `…&x-exp=E&x-sig=S` (at the end of the query, as signed) and returns the query
/// the CAS is to get (without them).
fn verify(state: &Mutex<CasState>, query: &str) -> Result<String, &'static str> {
    let (signed, sig) = query
        .rsplit_once("&x-sig=")
        .ok_or("Query-string authentication requires the x-sig parameter")?;
    let (original, exp) = signed
        .rsplit_once("&x-exp=")
        .ok_or("Query-string authentication requires the x-exp parameter")?;
    let exp: u64 = exp.parse().map_err(|_| "Invalid x-exp")?;
    let secret = lock(state).secret.clone();
    if signature(&secret, signed) != sig {
        return Err(
            "The request signature we calculated does not match the signature you provided",
        );
    }
    if unix_now() >= exp {
        return Err("Request has expired");
    }
    Ok(original.to_owned())
}

/// Points every xorb URL of a reconstruction answer at the proxy and signs it.
fn sign_answer(state: &Mutex<CasState>, answer: &mut Answer) {
    let Ok(mut json) = serde_json::from_slice::<Value>(&answer.body) else {
        return;
    };
    let (secret, base, ttl) = {
        let st = lock(state);
        (st.secret.clone(), st.proxy_base.clone(), st.knobs.url_ttl)
    };
    let exp = unix_now() + ttl.as_secs();
    for key in ["fetch_info", "xorbs"] {
        let Some(map) = json.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        for fetches in map.values_mut().filter_map(Value::as_array_mut) {
            for url in fetches.iter_mut().filter_map(|f| f.get_mut("url")) {
                let Some(old) = url.as_str() else { continue };
                // Whatever origin the CAS put there, the client must come back through us.
                let rest = old
                    .strip_prefix("http://")
                    .and_then(|r| r.find('/').map(|i| &r[i..]))
                    .unwrap_or(old);
                let signed = format!("{rest}&x-exp={exp}");
                let query = signed.split_once('?').map_or("", |(_, q)| q);
                *url = Value::String(format!(
                    "{base}{signed}&x-sig={}",
                    signature(&secret, query)
                ));
            }
        }
    }
    answer.body = serde_json::to_vec(&json).expect("serialize JSON");
}

/// Headers that describe one connection, not the message: never forwarded.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

/// Sends `req` to the CAS (with `query`) and reads its whole answer.
async fn forward(shared: &Shared, req: &Req, query: Option<&str>) -> Answer {
    let url = match query {
        Some(q) => format!("{}{}?{q}", shared.cas_base, req.path),
        None => format!("{}{}", shared.cas_base, req.path),
    };
    let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
        return Answer::text(400, "text/plain", "bad method\n");
    };
    let proxy_host = lock(&shared.state)
        .proxy_base
        .trim_start_matches("http://")
        .to_owned();
    let mut request = shared.client.request(method.clone(), url);
    for (name, value) in req.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
        request = request.header(name.as_str(), value.as_str());
    }
    // The CAS builds its xorb URLs from `Host`: they must name the proxy.
    request = request.header("host", proxy_host);
    if !req.body.is_empty() || method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.body(req.body.clone());
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Answer::text(502, "text/plain", &format!("CAS unreachable: {e}\n")),
    };
    let status = response.status().as_u16();
    let head_length = response.headers().get("content-length").cloned();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(n, _)| !hop_by_hop(n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    if method == reqwest::Method::HEAD {
        // A HEAD answer's length is the resource's (e.g. `HEAD /v1/files/{id}`), kept as is.
        if let Some(len) = head_length.and_then(|v| v.to_str().ok().map(str::to_owned)) {
            headers.push(("Content-Length".into(), len));
        }
    }
    let body = match response.bytes().await {
        Ok(b) => b.to_vec(),
        Err(e) => return Answer::text(502, "text/plain", &format!("CAS answer cut: {e}\n")),
    };
    Answer {
        status,
        headers,
        body,
        xorb: false,
        stall_after: None,
    }
}

/// Writes `answer` (with `Content-Length` unless a HEAD answer carries its own, and
/// `Connection: close`), counting xorb body bytes as they leave.
async fn write_answer(
    stream: &mut TcpStream,
    answer: &Answer,
    with_body: bool,
    state: &Mutex<CasState>,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    let has_length = answer
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length || with_body {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        let limit = answer.stall_after.map_or(answer.body.len(), |n| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(answer.body.len())
        });
        let mut at = 0;
        while at < limit {
            let rate = if answer.xorb {
                lock(state).knobs.throttle
            } else {
                None
            };
            let piece = if rate.is_some() {
                THROTTLED_PIECE
            } else {
                PIECE
            };
            let piece = &answer.body[at..limit.min(at + piece)];
            if let Some(rate) = rate {
                let until = Instant::now() + reserve(state, rate, piece.len() as u64);
                // In short naps, so that lifting the throttle takes effect at once.
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    if lock(state).knobs.throttle.is_none() {
                        break;
                    }
                    tokio::time::sleep(left.min(Duration::from_millis(50))).await;
                }
            }
            stream.write_all(piece).await?;
            at += piece.len();
            if answer.xorb {
                lock(state).xorb_bytes += piece.len() as u64;
            }
        }
        if limit < answer.body.len() {
            stream.flush().await?;
            tokio::time::sleep(STALL_DURATION).await;
            return Ok(());
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// Under [`Fault::Throttle`] at `rate` bytes/s: reserves the shared budget for `len` bytes
/// and tells how long to wait before sending them.
fn reserve(state: &Mutex<CasState>, rate: u64, len: u64) -> Duration {
    let mut st = lock(state);
    let now = Instant::now();
    let start = st.throttle_at.map_or(now, |t| t.max(now));
    st.throttle_at = Some(start + Duration::from_secs_f64(len as f64 / rate as f64));
    start - now
}

/// Reads one request: head (kept bytes after it), then its body by `Content-Length` or
/// chunked transfer coding. `None` when the client left without a request.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Req>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut buf = Vec::with_capacity(2048);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad("request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed inside the request head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(bad("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    // Decided on the path as the CAS will see it: reqwest resolves dot segments (`%2e` too),
    // so `/v1/../v2/reconstructions/…` must not slip past the checks as another route.
    if !target.starts_with('/') {
        return Err(bad("request target is not a path"));
    }
    let url = url::Url::parse(&format!("http://proxy{target}")).map_err(|_| bad("bad target"))?;
    let (path, query) = (url.path().to_owned(), url.query().map(str::to_owned));
    let mut req = Req {
        method: method.to_owned(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
    let mut reader = BodyReader {
        stream,
        buf: buf.split_off(head_end),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    req.body = if chunked {
        reader.chunked().await?
    } else {
        match req.header("content-length") {
            Some(v) => {
                let len: usize = v.trim().parse().map_err(|_| bad("bad Content-Length"))?;
                if len > MAX_BODY_BYTES {
                    return Err(bad("request body too large"));
                }
                reader.exact(len).await?
            }
            None => Vec::new(),
        }
    };
    Ok(Some(req))
}

/// The bytes of a request after its head: what the head read already holds, then the socket.
struct BodyReader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
}

impl BodyReader<'_> {
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = vec![0u8; PIECE];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn exact(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < len {
            self.fill().await?;
        }
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.exact(p + 2).await?;
                return Ok(String::from_utf8_lossy(&line[..p]).into_owned());
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            self.fill().await?;
        }
    }

    /// A chunked body (RFC 9112 §7.1), trailers skipped.
    async fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            body.extend(self.exact(size).await?);
            self.line().await?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The least a delta must fetch

/// What a client holding the file `old` must fetch at least to build the file `new`: the
/// chunks of `new` (by xorb and chunk index, from V1 reconstructions) that `old` does not use,
/// with their sizes on the wire read from the xorbs' own chunk headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeastFetch {
    /// Chunks `new` is made of (a repeated chunk counted once).
    pub chunks: u64,
    /// Of those, the ones `old` does not use.
    pub new_chunks: u64,
    /// Their bytes as a xorb fetch serves them (8-byte header plus compressed data each).
    pub new_bytes: u64,
}

/// [`LeastFetch`] of `new` for a client holding `old` (Xet file hashes of this CAS).
pub async fn least_fetch(cas: &CasHandle, old: &str, new: &str) -> LeastFetch {
    use std::collections::HashSet;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    let token = cas.mint_token_for(DEFAULT_TTL).token;
    let recon = |hash: String| {
        let request = client
            .get(format!("{}/v1/reconstructions/{hash}", cas.url()))
            .bearer_auth(&token);
        async move {
            let r = request.send().await.expect("reconstruction");
            assert!(
                r.status().is_success(),
                "reconstruction of {hash}: {}",
                r.status()
            );
            r.json::<Value>().await.expect("reconstruction JSON")
        }
    };
    let (old_r, new_r) = (recon(old.to_owned()).await, recon(new.to_owned()).await);
    let chunks_of = |r: &Value| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for t in r["terms"].as_array().into_iter().flatten() {
            let hash = t["hash"].as_str().unwrap_or_default();
            let (s, e) = (t["range"]["start"].as_u64(), t["range"]["end"].as_u64());
            out.extend((s.unwrap_or(0)..e.unwrap_or(0)).map(|i| (hash.to_owned(), i)));
        }
        out
    };
    let held: HashSet<(String, u64)> = chunks_of(&old_r).into_iter().collect();
    let wanted: HashSet<(String, u64)> = chunks_of(&new_r).into_iter().collect();
    let missing: HashSet<&(String, u64)> = wanted.difference(&held).collect();
    let mut new_bytes = 0;
    // Each fetch range of `new` that holds a missing chunk is read, and its chunk headers
    // walked, to size exactly the missing ones.
    for (hash, fetches) in new_r["fetch_info"].as_object().into_iter().flatten() {
        for f in fetches.as_array().into_iter().flatten() {
            let first = f["range"]["start"].as_u64().unwrap_or(0);
            let last = f["range"]["end"].as_u64().unwrap_or(0);
            if !(first..last).any(|i| missing.contains(&(hash.clone(), i))) {
                continue;
            }
            let (from, to) = (
                f["url_range"]["start"].as_u64(),
                f["url_range"]["end"].as_u64(),
            );
            let body = client
                .get(f["url"].as_str().unwrap_or_default())
                .header(
                    "Range",
                    format!("bytes={}-{}", from.unwrap_or(0), to.unwrap_or(0)),
                )
                .send()
                .await
                .expect("xorb fetch")
                .bytes()
                .await
                .expect("xorb body");
            let mut at = 0usize;
            for i in first..last {
                let header = body.get(at..at + 8).expect("a chunk header");
                let size = 8 + u32::from_le_bytes([header[1], header[2], header[3], 0]) as usize;
                if missing.contains(&(hash.clone(), i)) {
                    new_bytes += size as u64;
                }
                at += size;
            }
        }
    }
    LeastFetch {
        chunks: wanted.len() as u64,
        new_chunks: missing.len() as u64,
        new_bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// `size` pseudo-random bytes from `seed` (incompressible: the CAS stores them uncompressed).
pub fn random_file(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = vec![0u8; size];
    rng.fill(&mut out);
    out
}

/// Two versions of one GGUF model of about `size` bytes: `v2` is `v1` with a chat template
/// 288 bytes longer, so everything after the header shifts by 288 bytes (what a re-upload to
/// fix a template looks like). Both are valid GGUF v3 files (architecture, name, chat template,
/// one F32 tensor holding random data).
pub struct GgufPair {
    pub v1: Vec<u8>,
    pub v2: Vec<u8>,
}

/// What [`xet_gguf_pair`] adds to the chat template of v2.
pub const TEMPLATE_GROWTH: usize = 288;

pub fn xet_gguf_pair(size: usize) -> GgufPair {
    let template = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n\
                    {{ message['content'] }}<|im_end|>\n{% endfor %}\
                    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    // A fix that adds a system-prompt default: exactly TEMPLATE_GROWTH bytes more.
    let mut fix = String::from("{% if messages[0]['role'] != 'system' %}<|im_start|>system\n");
    while fix.len() < TEMPLATE_GROWTH - "<|im_end|>\n{% endif %}".len() {
        fix.push('.');
    }
    fix.push_str("<|im_end|>\n{% endif %}");
    assert_eq!(fix.len(), TEMPLATE_GROWTH);
    let tensor = random_file(size.saturating_sub(1024) / 4 * 4, size as u64);
    GgufPair {
        v1: gguf_with(template, &tensor),
        v2: gguf_with(&format!("{fix}{template}"), &tensor),
    }
}

/// A GGUF v3 file: three string keys, then one F32 tensor `token_embd.weight` of `data`.
fn gguf_with(template: &str, data: &[u8]) -> Vec<u8> {
    fn gstr(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(3u64.to_le_bytes()); // keys
    for (key, value) in [
        ("general.architecture", "llama"),
        ("general.name", "Xet Test Model"),
        ("tokenizer.chat_template", template),
    ] {
        gstr(&mut out, key);
        out.extend(8u32.to_le_bytes()); // string
        gstr(&mut out, value);
    }
    gstr(&mut out, "token_embd.weight");
    out.extend(1u32.to_le_bytes()); // dimensions
    out.extend((data.len() as u64 / 4).to_le_bytes());
    out.extend(0u32.to_le_bytes()); // F32
    out.extend(0u64.to_le_bytes()); // offset in the data section
                                    // The data section starts at the default alignment, 32.
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend_from_slice(data);
    out
}

/// What `huggingface_hub.hf_hub_download` did (`tests/it/xet/download.py`).
#[derive(Clone, Debug)]
pub struct HfDownload {
    /// The file in `cache_dir`'s snapshot.
    pub path: PathBuf,
    /// Its own measure of the call (python start-up excluded).
    pub seconds: f64,
}

/// Runs PyPI's `huggingface_hub.hf_hub_download(repo, file, endpoint=…, cache_dir=…)` (with
/// `token` as the Hub token, if any), blocking, with its own `HF_HOME` and Xet cache. Panics
/// with its log when it fails.
pub fn hf_hub_download(
    endpoint: &str,
    repo: &str,
    file: &str,
    cache_dir: &Path,
    token: Option<&str>,
) -> HfDownload {
    let home = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{SCRIPT_DIR}/download.py"))
        .arg(endpoint)
        .arg(repo)
        .arg(file)
        .arg(cache_dir)
        .args(token);
    let out = run_python(cmd, home.path(), UPLOAD_TIMEOUT);
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("download.py printed {out:?}: {e}"));
    HfDownload {
        path: PathBuf::from(v["path"].as_str().unwrap_or_default()),
        seconds: v["seconds"].as_f64().unwrap_or_default(),
    }
}
