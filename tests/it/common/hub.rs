//! An emulated HuggingFace Hub for the Hub-client integration tests.
//!
//! It answers the few routes a downloader needs the way huggingface.co does (model search, refs, the
//! paginated repo tree, `resolve` with its redirect to a presigned CDN link and its `X-Error-Code`
//! errors), and keeps each repo's `main` history so a test can move `main` under a running
//! download and check that the client stays on the commit it pinned.
//!
//! LFS content is not served by the Hub itself: `resolve` answers `302 Found` to an object of the
//! [`Upstream`] given to [`HubEmu::start`], which plays the CDN. It listens on another port, so it
//! is another `host:port` for the client's "never send the token to another host" rule, and all
//! of its faults ([`Behavior`], including `expire_after` for expiring links) apply to CDN objects
//! through [`HubEmu::set_cdn_behavior`]. Small files (`.json`, `.md`) are served by the Hub
//! directly, as on huggingface.co.
//!
//! Like the upstream, it runs on its own `std::thread` with its own tokio runtime (it works the
//! same from `#[tokio::test]`, `#[actix_web::test]` and plain `#[test]`), answers every request
//! with `Connection: close`, and stops when dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::upstream::{
    parse_range, percent_decode, read_request, respond, Behavior, Incoming, RangeSpec, Request,
    Server, Upstream,
};
use super::xet::{Cas, CasHandle, XetFile};

/// Tree entries per page unless [`HubEmu::set_page_size`] says otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// `lastModified` of every repo in search results and model info.
pub const LAST_MODIFIED: &str = "2024-01-01T00:00:00.000Z";
/// `createdAt` of every repo.
const CREATED_AT: &str = "2023-12-01T00:00:00.000Z";
/// Seconds a presigned CDN link claims to be valid (`expires=` in its query).
const LINK_LIFETIME_SECS: u64 = 3_600;
/// The most search results one request returns (huggingface.co caps `limit` too).
const MAX_SEARCH_LIMIT: usize = 1_000;

/// Characters escaped in one path segment of a URL this Hub hands out.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// How a repo looks in search results and who may download from it.
#[derive(Clone, Debug, Default)]
pub struct RepoOptions {
    /// Gated repo: `resolve` (HEAD or GET, LFS or not) needs `Authorization: Bearer <this>`,
    /// and search shows `"gated": "manual"`. Search, tree and model info stay public, as on
    /// huggingface.co.
    pub gated_token: Option<String>,
    pub downloads: u64,
    pub likes: u64,
    pub tags: Vec<String>,
}

/// Whether the Hub answers (see [`HubEmu::set_down`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    Up,
    /// Every request gets `503 Service Unavailable` (an outage behind the Hub's front).
    Unavailable,
    /// Every connection is closed without an answer (the Hub unreachable).
    Silent,
    /// Every connection is held open without an answer for two minutes (a black-holed
    /// Hub: its requests take the client's whole timeout).
    Hanging,
}

/// One request as the Hub saw it, with the status it answered.
#[derive(Clone, Debug)]
pub struct HubRequest {
    pub method: String,
    /// Percent-decoded, with its leading slash: `/api/models/o/n/tree/main`,
    /// `/o/n/resolve/main/dir/my file.gguf`.
    pub path: String,
    /// The raw query string (after `?`, not decoded).
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

/// A running emulated Hub on 127.0.0.1. Stops when dropped (the CDN [`Upstream`] lives on as
/// long as another `Arc` of it does).
pub struct HubEmu {
    cdn: Arc<Upstream>,
    state: Arc<Mutex<HubState>>,
    server: Server,
}

impl HubEmu {
    /// Starts the Hub on 127.0.0.1:0 with `cdn` as its CDN. Keep a clone of the `Arc` to assert
    /// on the CDN's requests (`cdn.requests(&hub.cdn_path(..))`), or use [`HubEmu::cdn`].
    pub fn start(cdn: Arc<Upstream>) -> HubEmu {
        let state = Arc::new(Mutex::new(HubState {
            repos: HashMap::new(),
            page_size: DEFAULT_PAGE_SIZE,
            next_sig: 1,
            requests: Vec::new(),
            failures: VecDeque::new(),
            down: Down::Up,
            endpoint: String::new(),
            cdn_base: format!("http://{}", cdn.addr()),
            xet: None,
        }));
        let conn_state = state.clone();
        let server = Server::start("hub", move |stream| {
            handle_connection(stream, conn_state.clone())
        });
        // No request can arrive before the port is known, so setting it now is race-free.
        lock(&state).endpoint = format!("http://{}", server.addr());
        HubEmu { cdn, state, server }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash (what `HF_ENDPOINT` is set to).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The CDN given to [`HubEmu::start`].
    pub fn cdn(&self) -> &Arc<Upstream> {
        &self.cdn
    }

    /// Creates `repo` ("owner/name") with one empty commit on `main`; for an existing repo only
    /// replaces its options (files and history stay).
    pub fn add_repo(&self, repo: &str, opts: RepoOptions) {
        let mut st = lock(&self.state);
        if let Some(r) = st.repos.get_mut(repo) {
            r.opts = opts;
            return;
        }
        let (owner, _name) = repo
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .unwrap_or_else(|| panic!("hub: repo {repo:?} is not owner/name"));
        let initial = Commit {
            sha: commit_sha(repo, "", 0),
            files: BTreeMap::new(),
        };
        st.repos.insert(
            repo.to_string(),
            Repo {
                mongo_id: hex(&Sha256::digest(repo.as_bytes())[..12]),
                author: owner.to_string(),
                opts,
                commits: vec![initial],
            },
        );
    }

    /// Adds or replaces `path` (may contain '/') on `main` as a new commit, and returns its sha.
    /// Every LFS file of the new commit is registered with the CDN at
    /// [`HubEmu::cdn_path`]`(repo, new commit, file)` with a default [`Behavior`] (so each
    /// commit's content stays served at its own path; note that this copies every LFS file of
    /// the repo once per commit). Panics if the repo is unknown.
    pub fn put_file(&self, repo: &str, path: &str, data: Vec<u8>) -> String {
        let path = clean_path(path);
        self.new_commit(repo, |files| {
            files.insert(path.clone(), Arc::new(FileObj::new(&path, data)));
        })
    }

    /// Serves files added with [`HubEmu::put_xet_file`] from `cas` as the real Hub serves
    /// Xet-backed files: `resolve` adds `X-Xet-Hash` and a `Link` to the token route
    /// (`rel="xet-auth"`) and to the reconstruction (`rel="xet-reconstruction-info"`) to its
    /// `302` to the bridge (the CDN, which keeps serving the same bytes), and
    /// `GET /api/models/{repo}/xet-read-token/{rev}` mints tokens of `cas`.
    pub fn enable_xet(&self, cas: &Cas) {
        lock(&self.state).xet = Some(cas.handle());
    }

    /// Uploads `data` to the CAS of [`HubEmu::enable_xet`] with `hf_xet` (blocks for the
    /// upload), then adds it as `path` on `main` like [`HubEmu::put_file`], Xet-backed.
    /// Returns its sha256. Panics if Xet is not enabled or `path` is not an LFS path.
    pub fn put_xet_file(&self, repo: &str, path: &str, data: Vec<u8>) -> String {
        let mut files = self.put_xet_files(repo, vec![(path, data)]);
        files.remove(0).sha256
    }

    /// Several Xet-backed files in one upload and one commit; what `hf_xet` reported for each.
    pub fn put_xet_files(&self, repo: &str, files: Vec<(&str, Vec<u8>)>) -> Vec<XetFile> {
        let cas = lock(&self.state)
            .xet
            .clone()
            .expect("hub: enable_xet before put_xet_file");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut on_disk = Vec::new();
        for (i, (path, data)) in files.iter().enumerate() {
            assert!(
                is_lfs(path),
                "hub: {path:?} would not be stored with LFS/Xet"
            );
            let file = dir.path().join(i.to_string());
            std::fs::write(&file, data).expect("write the file to upload");
            on_disk.push(file);
        }
        let uploaded = cas.upload(&on_disk.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        drop(on_disk);
        let objects: Vec<(String, FileObj)> = files
            .into_iter()
            .zip(&uploaded)
            .map(|((path, data), xet)| {
                let path = clean_path(path);
                let mut obj = FileObj::new(&path, data);
                assert_eq!(obj.sha256, xet.sha256, "hf_xet's sha256 of {path}");
                assert_eq!(obj.data.len() as u64, xet.size, "hf_xet's size of {path}");
                obj.xet_hash = Some(xet.hash.clone());
                (path, obj)
            })
            .collect();
        self.new_commit(repo, |tree| {
            for (path, obj) in objects {
                tree.insert(path, Arc::new(obj));
            }
        });
        uploaded
    }

    /// Xet is served by `cas` (any [`CasHandle`], e.g. [`CasHandle::at`] a hostile server).
    pub fn enable_xet_handle(&self, cas: CasHandle) {
        lock(&self.state).xet = Some(cas);
    }

    /// Adds `data` as `path` on `main`, Xet-backed with the Xet hash `hash` as given (no
    /// upload: the CAS behind it is the test's own).
    pub fn put_xet_file_as(&self, repo: &str, path: &str, data: Vec<u8>, hash: &str) {
        let path = clean_path(path);
        let mut obj = FileObj::new(&path, data);
        obj.xet_hash = Some(hash.to_owned());
        self.new_commit(repo, |tree| {
            tree.insert(path, Arc::new(obj));
        });
    }

    /// The Xet hash of `path` on `main`, `None` if absent or not Xet-backed.
    pub fn xet_hash(&self, repo: &str, path: &str) -> Option<String> {
        let st = lock(&self.state);
        let f = st.repo(repo).main().files.get(&clean_path(path))?.clone();
        f.xet_hash.clone()
    }

    /// The current commit of `main` (40 hex digits). Panics if the repo is unknown.
    pub fn commit(&self, repo: &str) -> String {
        let st = lock(&self.state);
        st.repo(repo).main().sha.clone()
    }

    /// Every commit of `main`, oldest first (the first is the empty one of `add_repo`).
    pub fn commits(&self, repo: &str) -> Vec<String> {
        let st = lock(&self.state);
        st.repo(repo)
            .commits
            .iter()
            .map(|c| c.sha.clone())
            .collect()
    }

    /// sha256 (hex) of `path` on `main`, `None` if absent.
    pub fn sha256(&self, repo: &str, path: &str) -> Option<String> {
        let st = lock(&self.state);
        let f = st.repo(repo).main().files.get(&clean_path(path))?.clone();
        Some(f.sha256.clone())
    }

    /// Sets the [`Behavior`] of the CDN object of `path` at the current `main` commit (re-arming
    /// its one-shot faults, as `Upstream::set_behavior` does). A later commit registers fresh
    /// objects with a default behaviour, even for unchanged files. Panics if the file is absent
    /// or not stored with LFS (small files are served by the Hub, not the CDN).
    pub fn set_cdn_behavior(&self, repo: &str, path: &str, behavior: Behavior) {
        let commit = self.commit(repo);
        self.set_cdn_behavior_at(repo, &commit, path, behavior);
    }

    /// Like [`HubEmu::set_cdn_behavior`] for the object of an older commit.
    pub fn set_cdn_behavior_at(&self, repo: &str, commit: &str, path: &str, behavior: Behavior) {
        let path = clean_path(path);
        {
            let st = lock(&self.state);
            let c = st
                .repo(repo)
                .commit(commit)
                .unwrap_or_else(|| panic!("hub: {repo} has no commit {commit}"));
            match c.files.get(&path) {
                Some(f) if f.lfs => {}
                Some(_) => panic!("hub: {repo}/{path} is not an LFS file: it has no CDN object"),
                None => panic!("hub: {repo} has no {path:?} at {commit}"),
            }
        }
        self.cdn
            .set_behavior(&self.cdn_path(repo, commit, &path), behavior);
    }

    /// Tree entries per page (default 50).
    pub fn set_page_size(&self, n: usize) {
        assert!(n > 0, "hub: page size must be positive");
        lock(&self.state).page_size = n;
    }

    /// The next requests to the Hub (any route) are answered with these statuses, one per
    /// request, with `Retry-After: secs` if given and a JSON error body (a 429 also gets the
    /// Hub's `RateLimit` header). For retry tests.
    pub fn fail_next(&self, failures: Vec<(u16, Option<u64>)>) {
        lock(&self.state).failures.extend(failures);
    }

    /// Takes the Hub (not its CDN) down, or brings it back: while down, every request
    /// is recorded (with status 0 when [`Down::Silent`]) and gets no answer of a Hub.
    pub fn set_down(&self, down: Down) {
        lock(&self.state).down = down;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<HubRequest> {
        lock(&self.state).requests.clone()
    }

    /// The [`Upstream`] path of the CDN object holding `path` at `commit`:
    /// `cdn/<owner>/<name>/<commit>/<path>` (not percent-encoded: it is what
    /// `Upstream::requests`, `bytes_sent`, ... take).
    pub fn cdn_path(&self, repo: &str, commit: &str, path: &str) -> String {
        format!("cdn/{repo}/{commit}/{}", clean_path(path))
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{path}`, each segment percent-encoded.
    pub fn resolve_url(&self, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint(),
            encode(revision),
            encode_path(&clean_path(path))
        )
    }

    /// Applies `change` to a copy of `main`'s files, appends the result as a new commit and
    /// registers its LFS objects with the CDN.
    fn new_commit(
        &self,
        repo: &str,
        change: impl FnOnce(&mut BTreeMap<String, Arc<FileObj>>),
    ) -> String {
        let (sha, lfs_files) = {
            let mut st = lock(&self.state);
            let r = st
                .repos
                .get_mut(repo)
                .unwrap_or_else(|| panic!("hub: unknown repo {repo:?} (add_repo first)"));
            let parent = r.main();
            let mut files = parent.files.clone();
            change(&mut files);
            let sha = commit_sha(repo, &parent.sha, r.commits.len());
            let lfs_files: Vec<(String, Arc<FileObj>)> = files
                .iter()
                .filter(|(_, f)| f.lfs)
                .map(|(p, f)| (p.clone(), f.clone()))
                .collect();
            r.commits.push(Commit {
                sha: sha.clone(),
                files,
            });
            (sha, lfs_files)
        };
        for (path, file) in lfs_files {
            self.cdn.add_file(
                &self.cdn_path(repo, &sha, &path),
                file.data.to_vec(),
                Behavior::default(),
            );
        }
        sha
    }
}

/// Whether huggingface.co would store `path` with LFS here: everything but `.json` and `.md`.
pub fn is_lfs(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !(lower.ends_with(".json") || lower.ends_with(".md"))
}

/// The git blob id of `data` (`sha1("blob <len>\0" + data)`), as `git hash-object` prints it.
pub fn git_blob_oid(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finish())
}

/// The text of the LFS pointer file git stores for content with this sha256 and size.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

// ---------------------------------------------------------------------------------------------
// State

struct HubState {
    repos: HashMap<String, Repo>,
    page_size: usize,
    /// The `sig=` of the next presigned link.
    next_sig: u64,
    requests: Vec<HubRequest>,
    failures: VecDeque<(u16, Option<u64>)>,
    down: Down,
    /// `http://127.0.0.1:PORT` of the Hub, for `Link` headers.
    endpoint: String,
    /// `http://127.0.0.1:PORT` of the CDN.
    cdn_base: String,
    /// The CAS of Xet-backed files ([`HubEmu::enable_xet`]).
    xet: Option<CasHandle>,
}

impl HubState {
    /// Panics on an unknown repo: for the test-facing methods, where that is a test bug.
    fn repo(&self, repo: &str) -> &Repo {
        self.repos
            .get(repo)
            .unwrap_or_else(|| panic!("hub: unknown repo {repo:?} (add_repo first)"))
    }
}

struct Repo {
    /// The 24-hex `_id` of search results.
    mongo_id: String,
    author: String,
    opts: RepoOptions,
    /// Oldest first; the last one is `main`.
    commits: Vec<Commit>,
}

impl Repo {
    fn main(&self) -> &Commit {
        self.commits.last().expect("a repo always has a commit")
    }

    /// `main` or a full commit sha (case-insensitive).
    fn commit(&self, revision: &str) -> Option<&Commit> {
        if revision == "main" {
            return Some(self.main());
        }
        self.commits
            .iter()
            .find(|c| c.sha.eq_ignore_ascii_case(revision))
    }

    fn gated(&self) -> Value {
        match self.opts.gated_token {
            Some(_) => json!("manual"),
            None => json!(false),
        }
    }
}

struct Commit {
    sha: String,
    files: BTreeMap<String, Arc<FileObj>>,
}

struct FileObj {
    data: Arc<Vec<u8>>,
    sha256: String,
    /// The git blob id: of the content, or of the LFS pointer for an LFS file.
    git_oid: String,
    lfs: bool,
    pointer_size: u64,
    /// Set for a Xet-backed file ([`HubEmu::put_xet_file`]).
    xet_hash: Option<String>,
}

impl FileObj {
    fn new(path: &str, data: Vec<u8>) -> FileObj {
        let sha256 = hex(&Sha256::digest(&data));
        let lfs = is_lfs(path);
        let pointer = lfs_pointer(&sha256, data.len() as u64);
        let git_oid = if lfs {
            git_blob_oid(pointer.as_bytes())
        } else {
            git_blob_oid(&data)
        };
        FileObj {
            data: Arc::new(data),
            sha256,
            git_oid,
            lfs,
            pointer_size: pointer.len() as u64,
            xet_hash: None,
        }
    }

    fn tree_entry(&self, path: &str) -> Value {
        let mut entry = json!({
            "type": "file",
            "oid": self.git_oid,
            "size": self.data.len(),
            "path": path,
        });
        if self.lfs {
            entry["lfs"] = json!({
                "oid": self.sha256,
                "size": self.data.len(),
                "pointerSize": self.pointer_size,
            });
        }
        // huggingface_hub's `RepoFile` reads it as `xetHash` (hf_api.py).
        if let Some(hash) = &self.xet_hash {
            entry["xetHash"] = json!(hash);
        }
        entry
    }
}

fn lock(state: &Mutex<HubState>) -> MutexGuard<'_, HubState> {
    // A panicking test thread must not take the server down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A deterministic, unique-looking commit id.
fn commit_sha(repo: &str, parent: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("commit {repo} {index} {parent}").as_bytes());
    hex(&digest[..20])
}

/// No leading slash; panics on an empty path or a `.`/`..`/empty segment (a test bug).
fn clean_path(path: &str) -> String {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        panic!("hub: bad file path {path:?}");
    }
    p.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Serving

/// A complete answer. `Content-Length` is added when sent (the body's length).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(value).expect("serialize JSON"),
        }
    }

    /// A Hub error: `X-Error-Code`, `X-Error-Message` and `{"error": message}`.
    fn error(status: u16, code: &str, message: &str) -> Reply {
        // The message may echo a request's revision: no control character may reach a
        // header (a `%00` revision made the whole answer unparseable).
        let header: String = message
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Reply::json(status, &json!({ "error": message }))
            .header("X-Error-Code", code)
            .header("X-Error-Message", header)
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

async fn handle_connection(mut stream: TcpStream, state: Arc<Mutex<HubState>>) {
    let request = match read_request(&mut stream, "hub").await {
        Incoming::Request(request) => request,
        Incoming::Malformed => {
            let reply = Reply::json(400, &json!({ "error": "Bad request" }));
            send(&mut stream, reply, true).await;
            return;
        }
        Incoming::Gone => return,
    };
    let reply = {
        let mut st = lock(&state);
        let reply = match st.down {
            Down::Up => answer(&mut st, &request),
            Down::Unavailable => Reply::json(503, &json!({ "error": "Service Unavailable" })),
            Down::Silent | Down::Hanging => Reply::json(0, &Value::Null),
        };
        st.requests.push(HubRequest {
            method: request.method.clone(),
            path: format!("/{}", request.path),
            query: request.query.clone(),
            authorization: request.header("authorization").map(str::to_string),
            status: reply.status,
        });
        reply
    };
    if reply.status == 0 {
        if lock(&state).down == Down::Hanging {
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        }
        return; // Down::Silent: the connection closes unanswered.
    }
    send(&mut stream, reply, request.method != "HEAD").await;
}

async fn send(stream: &mut TcpStream, mut reply: Reply, send_body: bool) {
    reply
        .headers
        .push(("Content-Length".into(), reply.body.len().to_string()));
    if let Err(e) = respond(stream, reply.status, &reply.headers, &reply.body, send_body).await {
        use std::io::ErrorKind::*;
        if !matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted) {
            eprintln!("hub: writing response: {e}");
        }
    }
}

/// Routes one request.
fn answer(st: &mut HubState, req: &Request) -> Reply {
    if let Some((status, retry_after)) = st.failures.pop_front() {
        let mut reply = Reply::error(status, "InjectedFailure", "injected failure");
        if let Some(secs) = retry_after {
            reply = reply.header("Retry-After", secs.to_string());
        }
        if status == 429 {
            let reset = retry_after.unwrap_or(1);
            reply = reply.header("RateLimit", format!("\"api\";r=0;t={reset}"));
        }
        return reply;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Reply::json(405, &json!({ "error": "Method not allowed" }))
            .header("Allow", "GET, HEAD");
    }
    // Split the raw path first, then decode each segment, so an escaped '/' stays inside its
    // segment (a revision like `refs%2Fpr%2F1`).
    let segments: Vec<String> = req
        .raw_path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let params: Vec<(String, String)> = req
        .query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["api", "models"] | ["api", "models", ""] => search(st, &params),
        ["api", "models", owner, name, "refs"] => refs(st, &format!("{owner}/{name}"), &params),
        ["api", "models", owner, name] => {
            model_info(st, &format!("{owner}/{name}"), "main", &params)
        }
        ["api", "models", owner, name, "revision", rev] => {
            model_info(st, &format!("{owner}/{name}"), rev, &params)
        }
        ["api", "models", owner, name, "tree", rev, rest @ ..] => {
            tree(st, req, &format!("{owner}/{name}"), rev, rest, &params)
        }
        ["api", "models", owner, name, "xet-read-token", rev] => {
            xet_read_token(st, req, &format!("{owner}/{name}"), rev)
        }
        [owner, name, "resolve", rev, rest @ ..] if !rest.is_empty() && !rest.contains(&"") => {
            resolve(st, req, &format!("{owner}/{name}"), rev, &rest.join("/"))
        }
        _ => Reply::json(
            404,
            &json!({ "error": "Sorry, we can't find the page you are looking for." }),
        ),
    }
}

/// `GET /api/models?search=&author=&filter=&sort=&direction=&limit=`
fn search(st: &HubState, params: &[(String, String)]) -> Reply {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let needle = param("search").unwrap_or("").to_lowercase();
    let author = param("author").map(str::to_lowercase);
    // Several `filter` params, or one with commas: a repo must have every tag.
    let filters: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "filter")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(MAX_SEARCH_LIMIT)
        .min(MAX_SEARCH_LIMIT);
    let by_likes = param("sort") == Some("likes");
    let ascending = param("direction") == Some("1");

    let mut hits: Vec<(&String, &Repo)> = st
        .repos
        .iter()
        .filter(|(id, r)| {
            id.to_lowercase().contains(&needle)
                && author
                    .as_ref()
                    .is_none_or(|a| r.author.to_lowercase() == *a)
                && filters
                    .iter()
                    .all(|f| r.opts.tags.iter().any(|t| t.to_lowercase() == *f))
        })
        .collect();
    hits.sort_by(|(a_id, a), (b_id, b)| {
        let key = |r: &Repo| {
            if by_likes {
                r.opts.likes
            } else {
                r.opts.downloads
            }
        };
        let order = if ascending {
            key(a).cmp(&key(b))
        } else {
            key(b).cmp(&key(a))
        };
        order.then_with(|| a_id.cmp(b_id))
    });
    let models: Vec<Value> = hits
        .into_iter()
        .take(limit)
        .map(|(id, r)| {
            json!({
                "_id": r.mongo_id,
                "id": id,
                "modelId": id,
                "downloads": r.opts.downloads,
                "likes": r.opts.likes,
                "lastModified": LAST_MODIFIED,
                "createdAt": CREATED_AT,
                "tags": r.opts.tags,
                "gated": r.gated(),
                "private": false,
            })
        })
        .collect();
    Reply::json(200, &Value::Array(models))
}

/// `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}` (`blobs=true` adds sizes
/// and LFS info to `siblings`).
fn model_info(st: &HubState, repo: &str, rev: &str, params: &[(String, String)]) -> Reply {
    let Some(r) = st.repos.get(repo) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    let Some(commit) = r.commit(rev) else {
        return Reply::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let blobs = params.iter().any(|(k, v)| k == "blobs" && is_true(v));
    let siblings: Vec<Value> = commit
        .files
        .iter()
        .map(|(path, f)| {
            let mut s = json!({ "rfilename": path });
            if blobs {
                s["blobId"] = json!(f.git_oid);
                s["size"] = json!(f.data.len());
                if f.lfs {
                    s["lfs"] = json!({
                        "sha256": f.sha256,
                        "size": f.data.len(),
                        "pointerSize": f.pointer_size,
                    });
                }
            }
            s
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "_id": r.mongo_id,
            "id": repo,
            "modelId": repo,
            "author": r.author,
            "sha": commit.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": CREATED_AT,
            "private": false,
            "disabled": false,
            "gated": r.gated(),
            "downloads": r.opts.downloads,
            "likes": r.opts.likes,
            "tags": r.opts.tags,
            "siblings": siblings,
        }),
    )
}

/// `GET /api/models/{repo}/refs[?include_prs=1]`: the shape `huggingface_hub`'s
/// `list_repo_refs` reads (and llama.cpp's `get_repo_commit`: `branches[].name` and
/// `targetCommit`). This Hub has one branch, `main`, and no tags.
fn refs(st: &HubState, repo: &str, params: &[(String, String)]) -> Reply {
    let Some(r) = st.repos.get(repo) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    let mut body = json!({
        "branches": [{ "name": "main", "ref": "refs/heads/main", "targetCommit": r.main().sha }],
        "converts": [],
        "tags": [],
    });
    if params.iter().any(|(k, v)| k == "include_prs" && is_true(v)) {
        body["pullRequests"] = json!([]);
    }
    Reply::json(200, &body)
}

fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

/// `GET /api/models/{repo}/tree/{rev}[/{dir}]?recursive=true&cursor=...`
fn tree(
    st: &HubState,
    req: &Request,
    repo: &str,
    rev: &str,
    dir: &[&str],
    params: &[(String, String)],
) -> Reply {
    let Some(r) = st.repos.get(repo) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    let Some(commit) = r.commit(rev) else {
        return Reply::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let recursive = params.iter().any(|(k, v)| k == "recursive" && is_true(v));
    let dir = dir
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");

    // Every directory that holds a file, at any depth.
    let mut dirs = BTreeSet::new();
    for path in commit.files.keys() {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            dirs.insert(path[..at + i].to_string());
            at += i + 1;
        }
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else if dirs.contains(&dir) {
        format!("{dir}/")
    } else {
        return Reply::error(
            404,
            "EntryNotFound",
            &format!("{dir} does not exist on \"{rev}\""),
        );
    };
    let wanted = |path: &str| {
        path.strip_prefix(&prefix)
            .is_some_and(|rest| recursive || !rest.contains('/'))
    };
    let mut entries: Vec<(String, Value)> = dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| {
            let oid = hex(&Sha256::digest(format!("tree {} {d}", commit.sha).as_bytes())[..20]);
            (
                d.clone(),
                json!({ "type": "directory", "oid": oid, "size": 0, "path": d }),
            )
        })
        .collect();
    entries.extend(
        commit
            .files
            .iter()
            .filter(|(p, _)| wanted(p))
            .map(|(p, f)| (p.clone(), f.tree_entry(p))),
    );
    // Git's order: a directory right before its contents.
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let start = match params.iter().find(|(k, _)| k == "cursor") {
        None => 0,
        Some((_, c)) => match decode_cursor(c) {
            Some(n) if n <= entries.len() => n,
            _ => return Reply::json(400, &json!({ "error": "Invalid cursor" })),
        },
    };
    let end = (start + st.page_size).min(entries.len());
    let page: Vec<Value> = entries[start..end].iter().map(|(_, v)| v.clone()).collect();
    let mut reply = Reply::json(200, &Value::Array(page));
    if end < entries.len() {
        // The same URL with the cursor of the next page, as huggingface.co sends it.
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "cursor") {
            query.append_pair(k, v);
        }
        query.append_pair("cursor", &encode_cursor(end));
        let next = format!("{}{}?{}", st.endpoint, req.raw_path, query.finish());
        reply = reply.header("Link", format!("<{next}>; rel=\"next\""));
    }
    reply
}

/// An opaque-looking cursor for the tree entry at `offset`.
fn encode_cursor(offset: usize) -> String {
    hex(format!("offset:{offset}").as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

/// The repo, if `req` may read its files: huggingface.co's 401s otherwise (an unknown repo
/// looks like a private one; a gated repo needs its token).
fn readable<'a>(st: &'a HubState, req: &Request, repo: &str) -> Result<&'a Repo, Reply> {
    let Some(r) = st.repos.get(repo) else {
        // huggingface.co cannot tell "absent" from "private, and you are not allowed".
        return Err(Reply::error(401, "RepoNotFound", "Repository not found"));
    };
    if let Some(token) = &r.opts.gated_token {
        if req.header("authorization") != Some(format!("Bearer {token}").as_str()) {
            return Err(Reply::error(
                401,
                "GatedRepo",
                &format!(
                    "Access to model {repo} is restricted. You must have access to it and be \
                     authenticated to access it. Please log in."
                ),
            ));
        }
    }
    Ok(r)
}

/// `GET /api/models/{repo}/xet-read-token/{rev}`: a CAS read token, as JSON (what hf_xet's
/// token refresher reads) and as the `X-Xet-*` headers (what huggingface_hub reads,
/// `utils/_xet.py`); `exp` in unix seconds. Same access rules as `resolve`.
fn xet_read_token(st: &HubState, req: &Request, repo: &str, rev: &str) -> Reply {
    let r = match readable(st, req, repo) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if r.commit(rev).is_none() {
        return Reply::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    let Some(cas) = &st.xet else {
        return Reply::error(
            404,
            "XetNotEnabled",
            "Xet storage is not enabled on this Hub",
        );
    };
    let token = cas.mint_token();
    Reply::json(
        200,
        &json!({ "accessToken": token.token, "exp": token.exp, "casUrl": token.cas_url }),
    )
    .header("X-Xet-Cas-Url", token.cas_url.clone())
    .header("X-Xet-Access-Token", token.token.clone())
    .header("X-Xet-Token-Expiration", token.exp.to_string())
}

/// `HEAD`/`GET /{repo}/resolve/{rev}/{path}`
fn resolve(st: &mut HubState, req: &Request, repo: &str, rev: &str, path: &str) -> Reply {
    let r = match readable(st, req, repo) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let Some(commit) = r.commit(rev) else {
        return Reply::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let Some(file) = commit.files.get(path) else {
        return Reply::error(404, "EntryNotFound", "Entry not found");
    };
    let (sha, file) = (commit.sha.clone(), file.clone());
    if file.lfs {
        let sig = st.next_sig;
        st.next_sig += 1;
        let location = format!(
            "{}/{}?sig={sig}&expires={}",
            st.cdn_base,
            encode_path(&format!("cdn/{repo}/{sha}/{path}")),
            unix_now() + LINK_LIFETIME_SECS
        );
        let etag = format!("\"{}\"", file.sha256);
        let mut reply = Reply {
            status: 302,
            headers: Vec::new(),
            body: Vec::new(),
        };
        if let (Some(hash), Some(cas)) = (&file.xet_hash, &st.xet) {
            // As huggingface.co answers for a Xet-backed file (huggingface_hub reads
            // `X-Xet-Hash` and the `xet-auth` link; hf_xet the reconstruction link's base).
            let link = format!(
                "<{}/api/models/{repo}/xet-read-token/{sha}>; rel=\"xet-auth\", \
                 <{}/v1/reconstructions/{hash}>; rel=\"xet-reconstruction-info\"",
                st.endpoint,
                cas.url()
            );
            reply = reply
                .header("X-Xet-Hash", hash.clone())
                .header("Link", link);
        }
        return reply
            .header("Location", location)
            .header("X-Repo-Commit", sha)
            .header("X-Linked-Etag", etag.clone())
            .header("X-Linked-Size", file.data.len().to_string())
            .header("ETag", etag);
    }

    // A small file, served by the Hub itself (with Range support, as huggingface.co has).
    let len = file.data.len() as u64;
    let content_type = if path.to_ascii_lowercase().ends_with(".json") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let base = Reply {
        status: 200,
        headers: vec![("Content-Type".into(), content_type.into())],
        body: Vec::new(),
    }
    .header("Accept-Ranges", "bytes")
    .header("X-Repo-Commit", sha)
    .header("ETag", format!("\"{}\"", file.git_oid));
    match req.header("range").map(|v| parse_range(v, len)) {
        Some(RangeSpec::Satisfiable(start, end)) => Reply {
            status: 206,
            body: file.data[start as usize..end as usize].to_vec(),
            ..base
        }
        .header("Content-Range", format!("bytes {start}-{}/{len}", end - 1)),
        Some(RangeSpec::Unsatisfiable) => Reply {
            status: 416,
            ..base
        }
        .header("Content-Range", format!("bytes */{len}")),
        Some(RangeSpec::Invalid) | None => Reply {
            body: file.data.to_vec(),
            ..base
        },
    }
}

// ---------------------------------------------------------------------------------------------
// SHA-1, for git object ids (the crate graph has sha2 but no sha1).

struct Sha1 {
    h: [u32; 5],
    buf: Vec<u8>,
    len: u64,
}

impl Sha1 {
    fn new() -> Sha1 {
        Sha1 {
            h: [
                0x6745_2301,
                0xEFCD_AB89,
                0x98BA_DCFE,
                0x1032_5476,
                0xC3D2_E1F0,
            ],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.buf.is_empty() {
            let take = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == 64 {
                let block: [u8; 64] = self.buf[..].try_into().unwrap();
                self.block(&block);
                self.buf.clear();
            }
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            self.block(block.try_into().unwrap());
        }
        self.buf.extend_from_slice(blocks.remainder());
    }

    fn finish(mut self) -> [u8; 20] {
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.buf);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        for block in tail.chunks_exact(64) {
            self.block(block.try_into().unwrap());
        }
        let mut out = [0u8; 20];
        for (i, word) in self.h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn block(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (h, v) in self.h.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
}
