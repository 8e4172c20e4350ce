//! A small fault-injecting HTTP/1.1 file server for the download-engine integration tests.
//!
//! It is hand-rolled on `tokio::net::TcpListener` (no hyper/axum) so that every byte on the
//! wire is under the test's control: where a body is cut, whether the socket is reset or closed
//! cleanly, how fast bytes flow. Each response carries `Connection: close` and the socket is
//! closed after it, which keeps the server free of keep-alive bookkeeping.
//!
//! The server runs on its own `std::thread` with its own two-worker tokio runtime, so it works
//! the same from `#[tokio::test]`, `#[actix_web::test]` and plain `#[test]`, and a test runtime
//! that blocks or shuts down never starves it. Dropping the [`Upstream`] stops it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Last-Modified of version `v` is this instant plus `v` seconds, so every version has its own
/// (whole-second, as HTTP dates are) timestamp. 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
const LAST_MODIFIED_BASE: u64 = 1_700_000_000;
/// A request head larger than this is refused; the clients under test send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that connects and sends no complete head within this time is dropped, so idle
/// sockets do not pile up during a long test run.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `stall_once_after` response stays silent before the server gives up on it.
const STALL_DURATION: Duration = Duration::from_secs(120);
/// Write size when throttled: small enough that pacing is smooth.
const MAX_PACED_CHUNK: usize = 16 * 1024;
/// Write size when not throttled.
const UNPACED_CHUNK: usize = 64 * 1024;
/// Before an abrupt close we wait (at most this long) for the kernel to hand every written byte
/// to the peer, so that "dropped after N bytes" means the client really received N bytes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One request as the server saw it, with the status it answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
    /// Every request header, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The raw query string (after `?`, not decoded), `None` without a `?`. Files are looked up
    /// without it; `expire_after` uses it to tell links apart.
    pub query: Option<String>,
    pub status: u16,
    /// First byte asked for by `Range: bytes=N-...` (whether or not the server honoured the
    /// range); `None` without a Range header, for a suffix range (`bytes=-N`) or a malformed one.
    pub range_start: Option<u64>,
}

impl RequestRecord {
    /// The value of a request header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Faults and quirks of one file. Build with `Behavior { x: .., ..Default::default() }`.
///
/// "First GET" below means the first GET answered with a body (200/206) since the behaviour was
/// installed by `add_file`/`set_behavior`; GETs answered by `fail_first`, 401, 416, ... do not
/// count. `set_behavior` re-arms every one-shot fault and `fail_first`.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// Each response: after sending this many body bytes, reset the connection (mid-body).
    /// Counted from the response's first body byte, so a resumed request is cut N bytes later.
    pub drop_every: Option<u64>,
    /// Consumed one per request (GET or HEAD, before anything else): answer with this status
    /// and, if `Some(secs)`, `Retry-After: secs`, with a small text body.
    pub fail_first: Vec<(u16, Option<u64>)>,
    /// Always answer 200 with the whole file, and do not send `Accept-Ranges`.
    pub ignore_range: bool,
    /// From the Nth request (0-based, counting every request recorded for this path) on, ignore
    /// Range (answer 200 full). `Accept-Ranges: bytes` is still sent, as a flaky CDN would.
    pub ignore_range_after: Option<usize>,
    /// The first GET announces the full Content-Length but sends only this many bytes, then
    /// closes cleanly (FIN): a premature EOF rather than a reset.
    pub short_body_once: Option<u64>,
    /// No Content-Length header; the body ends when the socket closes.
    pub no_content_length: bool,
    /// Throttle each response body to this many bytes/s (0 = no limit).
    pub rate_bps: Option<u64>,
    /// The first GET sends the headers and this many body bytes, then goes silent with the
    /// socket open until the client hangs up or 120 s pass (then the socket is reset).
    pub stall_once_after: Option<u64>,
    /// Send neither ETag nor Last-Modified (so no If-Range can ever match).
    pub no_validators: bool,
    /// If `Some(token)`: requests without `Authorization: Bearer <token>` get 401.
    pub require_auth: Option<String>,
    /// Once the first GET response has ended (completed, cut or abandoned), replace the content
    /// with this (new version: new ETag and Last-Modified). A response the client abandons
    /// ends when the server notices (its writes can run ahead of the client's reads): for a
    /// change at a moment the client's next request is sure to see, use `swap_at_request`.
    pub swap_after_first: Option<Vec<u8>>,
    /// When request N arrives (0-based, every request recorded for this path, as
    /// `ignore_range_after` counts), replace the content with this before answering it (a
    /// new version: new ETag and Last-Modified). Unlike `swap_after_first`, the moment
    /// does not depend on how fast anything is sent: request N always sees the new file.
    pub swap_at_request: Option<(usize, Vec<u8>)>,
    /// Answer GET/HEAD with `302 Found` and this `Location` (checked after fail_first and
    /// require_auth, as the Hub does before redirecting to its CDN).
    pub redirect_to: Option<String>,
    /// Extra response headers for answers about this file (except 405), e.g. `X-Linked-Size`;
    /// one that names a header the server sets (`Content-Type`, `ETag`...) replaces it.
    pub extra_headers: Vec<(String, String)>,
    /// Emulates an expiring presigned CDN link. The request's raw query string (`?sig=3...`)
    /// names a link (no `?` at all is one more link); each link may serve at most this many body
    /// bytes in total over all its responses. A GET that would go past the budget is reset at the
    /// budget's end (abruptly, like `drop_every`), and once a link has served its whole budget
    /// every later request (GET or HEAD) with it is answered `403` with a short text body. A link
    /// with another query string has its own budget. Bytes are counted as written to the socket:
    /// a response the client abandons early gives its unsent share back. Checked after
    /// `fail_first` and before `require_auth`/`redirect_to`; `set_behavior` forgets every link.
    pub expire_after: Option<u64>,
}

/// A running fault-injecting file server on 127.0.0.1. Stops when dropped.
pub struct Upstream {
    state: Arc<Mutex<State>>,
    server: Server,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and starts serving on a dedicated thread.
    pub fn start() -> Upstream {
        let state = Arc::new(Mutex::new(State::default()));
        let conn_state = state.clone();
        let server = Server::start("upstream", move |stream| {
            handle_connection(stream, conn_state.clone())
        });
        Upstream { state, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT/` + `path` (a leading slash in `path` is tolerated).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr(), path.trim_start_matches('/'))
    }

    /// Serves `data` at `path` (like "files/a.bin"). Re-adding a path replaces its content (as a
    /// new version) and its behaviour.
    pub fn add_file(&self, path: &str, data: Vec<u8>, behavior: Behavior) {
        let path = normalize(path);
        let mut st = lock(&self.state);
        let version = st.files.get(&path).map_or(1, |f| f.version + 1);
        st.files
            .insert(path, FileEntry::new(data, version, behavior));
    }

    /// Replaces the behaviour of an existing file, re-arming one-shot faults and `fail_first`.
    /// Panics if the file was never added (a test bug).
    pub fn set_behavior(&self, path: &str, behavior: Behavior) {
        let path = normalize(path);
        let mut st = lock(&self.state);
        let file = st
            .files
            .get_mut(&path)
            .unwrap_or_else(|| panic!("upstream: set_behavior on unknown file {path:?}"));
        file.install(behavior);
    }

    /// New content for an existing file: new version, hence new ETag and Last-Modified.
    /// Panics if the file was never added (a test bug).
    pub fn replace_content(&self, path: &str, data: Vec<u8>) {
        let path = normalize(path);
        let mut st = lock(&self.state);
        let file = st
            .files
            .get_mut(&path)
            .unwrap_or_else(|| panic!("upstream: replace_content on unknown file {path:?}"));
        file.replace(data);
    }

    /// Every request for `path` (including failed ones and 404s), in arrival order.
    pub fn requests(&self, path: &str) -> Vec<RequestRecord> {
        lock(&self.state)
            .requests
            .get(&normalize(path))
            .cloned()
            .unwrap_or_default()
    }

    /// File-content bytes written for `path` over all responses (200/206 bodies; error texts
    /// are not counted). Counted when handed to the kernel, chunk by chunk, so it can be read
    /// while a response is still streaming.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        lock(&self.state)
            .bytes_sent
            .get(&normalize(path))
            .copied()
            .unwrap_or(0)
    }

    /// The ETag currently sent for `path` (quoted), `None` if unknown or `no_validators`.
    pub fn etag(&self, path: &str) -> Option<String> {
        let st = lock(&self.state);
        let file = st.files.get(&normalize(path))?;
        (!file.behavior.no_validators).then(|| file.etag())
    }

    /// The Last-Modified currently sent for `path`, `None` if unknown or `no_validators`.
    pub fn last_modified(&self, path: &str) -> Option<String> {
        let st = lock(&self.state);
        let file = st.files.get(&normalize(path))?;
        (!file.behavior.no_validators).then(|| file.last_modified())
    }

    /// The content currently served at `path`.
    pub fn content(&self, path: &str) -> Option<Vec<u8>> {
        lock(&self.state)
            .files
            .get(&normalize(path))
            .map(|f| f.data.to_vec())
    }

    /// The version of `path`'s content: 1 when added, +1 per replacement.
    pub fn version(&self, path: &str) -> Option<u64> {
        lock(&self.state)
            .files
            .get(&normalize(path))
            .map(|f| f.version)
    }
}

/// The plumbing shared by the test servers (this file's [`Upstream`] and `hub.rs`'s emulated
/// Hub): a listener on 127.0.0.1:0 served by its own `std::thread` running its own two-worker
/// tokio runtime, one spawned task per connection. Dropping it stops accepting; connections in
/// flight are abandoned.
pub(crate) struct Server {
    addr: SocketAddr,
    /// Dropping the sender tells the accept loop to stop.
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Server {
    /// Binds 127.0.0.1:0 and runs `handler` on every accepted connection. `name` labels the
    /// threads and error messages.
    pub(crate) fn start<F, Fut>(name: &str, handler: F) -> Server
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Bind here, on the caller's thread, so the address is known at once and a failure
        // panics in the test that asked for the server.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{name}: bind 127.0.0.1:0: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name}: set_nonblocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name}: local_addr: {e}"));
        // Built here too, for the same reason; a Runtime may be created (not dropped) inside
        // another runtime's context, and it is Send, so it can move to the server thread.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{name}-worker"))
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{name}: build tokio runtime: {e}"));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, handler, shutdown_rx, &label));
                // In-flight connections (a stalled one can last minutes) are simply abandoned.
                runtime.shutdown_background();
            })
            .unwrap_or_else(|e| panic!("{name}: spawn server thread: {e}"));
        Server {
            addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            name: name.to_string(),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            // Quick: the accept loop ends at once and the runtime is shut down in the background.
            if thread.join().is_err() {
                eprintln!("{}: server thread panicked", self.name);
            }
        }
    }
}

/// Formats seconds since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((days + 4) % 7) as usize];
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Shared state

#[derive(Default)]
struct State {
    files: HashMap<String, FileEntry>,
    /// Kept apart from `files` so requests for unknown paths (404) are recorded too.
    requests: HashMap<String, Vec<RequestRecord>>,
    bytes_sent: HashMap<String, u64>,
}

struct FileEntry {
    /// Shared with in-flight responses, so a replacement does not disturb a body being sent.
    data: Arc<Vec<u8>>,
    version: u64,
    behavior: Behavior,
    pending_failures: VecDeque<(u16, Option<u64>)>,
    /// GETs answered with a body since the behaviour was installed (drives the one-shots).
    body_gets: u64,
    /// `expire_after`: body bytes served (or reserved by a response in flight) per link, keyed
    /// by the raw query string.
    link_bytes: HashMap<Option<String>, u64>,
    /// Bumped by every `install`, so a response's late refund never lands in a fresh budget.
    generation: u64,
}

impl FileEntry {
    fn new(data: Vec<u8>, version: u64, behavior: Behavior) -> FileEntry {
        let mut file = FileEntry {
            data: Arc::new(data),
            version,
            behavior: Behavior::default(),
            pending_failures: VecDeque::new(),
            body_gets: 0,
            link_bytes: HashMap::new(),
            generation: 0,
        };
        file.install(behavior);
        file
    }

    fn install(&mut self, behavior: Behavior) {
        self.pending_failures = behavior.fail_first.iter().copied().collect();
        self.body_gets = 0;
        self.link_bytes.clear();
        self.generation += 1;
        self.behavior = behavior;
    }

    fn replace(&mut self, data: Vec<u8>) {
        self.data = Arc::new(data);
        self.version += 1;
    }

    fn etag(&self) -> String {
        format!("\"v{}-{}\"", self.version, self.data.len())
    }

    fn last_modified(&self) -> String {
        http_date(LAST_MODIFIED_BASE + self.version)
    }

    /// Decides the whole answer to one request. `index` is the request's 0-based position among
    /// the requests recorded for this path.
    // One table of every fault the upstream can inject, read top to bottom.
    #[allow(clippy::too_many_lines)]
    fn plan(&mut self, req: &Request, index: usize) -> Plan {
        let extra = self.behavior.extra_headers.clone();
        if let Some((status, retry_after)) = self.pending_failures.pop_front() {
            let mut plan = Plan::text(status, "injected failure\n");
            if let Some(secs) = retry_after {
                plan.header("Retry-After", secs.to_string());
            }
            return plan.with_headers(extra);
        }
        let is_get = req.method == "GET";
        if !is_get && req.method != "HEAD" {
            let mut plan = Plan::text(405, "method not allowed\n");
            plan.header("Allow", "GET, HEAD");
            return plan;
        }
        let swap_now = match &self.behavior.swap_at_request {
            Some((n, data)) if *n == index => Some(data.clone()),
            _ => None,
        };
        if let Some(data) = swap_now {
            self.replace(data);
        }
        let link = req.query.clone();
        let link_used = self.link_bytes.get(&link).copied().unwrap_or(0);
        if self
            .behavior
            .expire_after
            .is_some_and(|limit| link_used >= limit)
        {
            // What S3/CloudFront say about a presigned URL past its expiry.
            return Plan::text(403, "Request has expired\n").with_headers(extra);
        }
        if let Some(token) = &self.behavior.require_auth {
            let expected = format!("Bearer {token}");
            if req.header("authorization") != Some(expected.as_str()) {
                let mut plan = Plan::text(401, "unauthorized\n");
                plan.header("WWW-Authenticate", "Bearer");
                return plan.with_headers(extra);
            }
        }
        if let Some(location) = &self.behavior.redirect_to {
            let mut plan = Plan::text(302, "found\n");
            plan.header("Location", location.clone());
            return plan.with_headers(extra);
        }

        let b = &self.behavior;
        let len = self.data.len() as u64;
        let etag = self.etag();
        let last_modified = self.last_modified();
        let mut headers: Vec<(String, String)> =
            vec![("Content-Type".into(), "application/octet-stream".into())];
        if !b.ignore_range {
            headers.push(("Accept-Ranges".into(), "bytes".into()));
        }
        if !b.no_validators {
            headers.push(("ETag".into(), etag.clone()));
            headers.push(("Last-Modified".into(), last_modified.clone()));
        }
        merge_headers(&mut headers, extra);

        // RFC 9110 13.1.5: a Range with an If-Range that does not match the current
        // representation is ignored, and the whole (new) content is sent.
        let if_range_ok = match req.header("if-range") {
            None => true,
            Some(v) => !b.no_validators && (v == etag || v == last_modified),
        };
        let range_enabled = !b.ignore_range && b.ignore_range_after.is_none_or(|n| index < n);
        let range = req
            .header("range")
            .filter(|_| range_enabled && if_range_ok)
            .map(|r| parse_range(r, len));

        let (status, start, end) = match range {
            Some(RangeSpec::Satisfiable(start, end)) => {
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {}-{}/{len}", start, end - 1),
                ));
                (206, start, end)
            }
            Some(RangeSpec::Unsatisfiable) => {
                let mut plan = Plan::text(416, "range not satisfiable\n");
                plan.header("Content-Range", format!("bytes */{len}"));
                // The validators and extras, but not the file's Content-Type: the body is text.
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                return plan.with_headers(headers);
            }
            // A malformed or multi-part range is ignored, as RFC 9110 allows.
            Some(RangeSpec::Invalid) | None => (200, 0, len),
        };
        if !b.no_content_length {
            headers.push(("Content-Length".into(), (end - start).to_string()));
        }

        let mut plan = Plan {
            status,
            headers,
            body: self.data.clone(),
            start: start as usize,
            end: end as usize,
            send_body: is_get,
            counts_as_content: true,
            cut: None,
            rate_bps: b.rate_bps.filter(|&r| r > 0),
            swap_after: None,
            link: None,
        };
        if !is_get {
            return plan;
        }

        let first_get = self.body_gets == 0;
        self.body_gets += 1;
        let body_len = end - start;
        let mut cut: Option<(u64, Cut)> = None;
        let mut consider = |at: Option<u64>, kind: Cut| {
            if let Some(at) = at {
                if at < body_len && cut.is_none_or(|(c, _)| at < c) {
                    cut = Some((at, kind));
                }
            }
        };
        consider(b.drop_every, Cut::Reset);
        consider(
            b.expire_after.map(|limit| limit.saturating_sub(link_used)),
            Cut::Reset,
        );
        if first_get {
            consider(b.short_body_once, Cut::Eof);
            consider(b.stall_once_after, Cut::Stall);
            plan.swap_after = b.swap_after_first.clone();
        }
        plan.cut = cut;
        if b.expire_after.is_some() {
            // Reserve the whole planned body now, so concurrent requests with the same link
            // cannot overspend it; `send` gives back what it did not write.
            let reserved = cut.map_or(body_len, |(at, _)| at);
            *self.link_bytes.entry(link.clone()).or_default() += reserved;
            plan.link = Some(LinkReservation {
                link,
                bytes: reserved,
                generation: self.generation,
            });
        }
        plan
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// How a response body is cut short.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Reset the connection (RST): an abrupt drop.
    Reset,
    /// Close cleanly (FIN) before the announced length: a premature EOF.
    Eof,
    /// Go silent with the socket open.
    Stall,
}

struct Plan {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    send_body: bool,
    /// Whether the body is file content (counted by `bytes_sent`) rather than an error text.
    counts_as_content: bool,
    /// Stop after this many body bytes, and how.
    cut: Option<(u64, Cut)>,
    rate_bps: Option<u64>,
    /// Content to install once this response has ended.
    swap_after: Option<Vec<u8>>,
    /// `expire_after`: the body bytes this response took from its link's budget.
    link: Option<LinkReservation>,
}

#[derive(Clone, Debug)]
struct LinkReservation {
    link: Option<String>,
    bytes: u64,
    generation: u64,
}

impl Plan {
    fn text(status: u16, text: &str) -> Plan {
        let body = text.as_bytes().to_vec();
        Plan {
            status,
            headers: vec![
                ("Content-Type".into(), "text/plain; charset=utf-8".into()),
                ("Content-Length".into(), body.len().to_string()),
            ],
            end: body.len(),
            body: Arc::new(body),
            start: 0,
            send_body: true,
            counts_as_content: false,
            cut: None,
            rate_bps: None,
            swap_after: None,
            link: None,
        }
    }

    fn header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    fn with_headers(mut self, headers: Vec<(String, String)>) -> Plan {
        merge_headers(&mut self.headers, headers);
        self
    }

    fn head_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }
}

/// Adds `extra` to `headers`; a name already present is replaced, never duplicated.
fn merge_headers(headers: &mut Vec<(String, String)>, extra: Vec<(String, String)>) {
    for (name, value) in extra {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub(crate) enum RangeSpec {
    /// `[start, end)` within the content.
    Satisfiable(u64, u64),
    Unsatisfiable,
    Invalid,
}

/// Parses a single-range `bytes=N-`, `bytes=N-M` or `bytes=-SUFFIX` against a content length.
pub(crate) fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = strip_bytes_unit(value) else {
        return RangeSpec::Invalid;
    };
    // Multi-range answers (multipart/byteranges) are not supported; ignoring is allowed.
    if spec.contains(',') {
        return RangeSpec::Invalid;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Invalid;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if len == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Satisfiable(len.saturating_sub(n), len),
            Err(_) => RangeSpec::Invalid,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Invalid;
    };
    let end = if last.is_empty() {
        len
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return RangeSpec::Invalid,
        }
    };
    if start >= len {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Satisfiable(start, end)
    }
}

fn strip_bytes_unit(value: &str) -> Option<&str> {
    let (unit, spec) = value.trim().split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(spec)
}

/// The first byte asked for, for the request record.
fn range_start(value: &str) -> Option<u64> {
    let (first, _) = strip_bytes_unit(value)?.split_once('-')?;
    first.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A parsed request head.
pub(crate) struct Request {
    pub(crate) method: String,
    /// The lookup key: percent-decoded, without query, fragment or leading slash.
    pub(crate) path: String,
    /// The path as sent (not decoded, leading slash kept), without query or fragment.
    pub(crate) raw_path: String,
    /// The raw query string (after `?`, not decoded).
    pub(crate) query: Option<String>,
    /// Names lower-cased, in the order received.
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value; `name` must be lower-case.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not take the server down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop<F, Fut>(
    listener: std::net::TcpListener,
    handler: F,
    mut shutdown: oneshot::Receiver<()>,
    name: &str,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: cannot register listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            // Fires when the Server is dropped (sender dropped).
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handler(stream));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// What [`read_request`] got from a fresh connection.
pub(crate) enum Incoming {
    Request(Request),
    /// Not an HTTP/1.x request head: answer 400.
    Malformed,
    /// Nothing usable: the client left, timed out, or sent an oversized head. Just close.
    Gone,
}

/// Reads and parses one request head (sets TCP_NODELAY; gives up after 30 s of silence).
/// `name` labels error messages.
pub(crate) async fn read_request(stream: &mut TcpStream, name: &str) -> Incoming {
    // Headers and short bodies should leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(HEAD_TIMEOUT, read_head(stream)).await {
        Ok(Ok(Some(head))) => match parse_head(&head) {
            Some(request) => Incoming::Request(request),
            None => Incoming::Malformed,
        },
        // The client connected and left without a request (e.g. a cancelled attempt).
        Ok(Ok(None)) => Incoming::Gone,
        Ok(Err(e)) => {
            eprintln!("{name}: reading request head: {e}");
            Incoming::Gone
        }
        Err(_) => Incoming::Gone,
    }
}

/// Writes a whole simple response (status line, `headers`, `Connection: close`, then `body`
/// unless `send_body` is false, as for HEAD) and closes the write side cleanly.
pub(crate) async fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    send_body: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    if send_body && !body.is_empty() {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}

async fn handle_connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let request = match read_request(&mut stream, "upstream").await {
        Incoming::Request(request) => request,
        Incoming::Malformed => {
            let plan = Plan::text(400, "bad request\n");
            let _ = respond(&mut stream, 400, &plan.headers, &plan.body, true).await;
            return;
        }
        Incoming::Gone => return,
    };
    let plan = decide(&state, &request);
    let path = request.path;
    send(&mut stream, &state, &path, &plan).await;
    // Dropping the stream here closes it: FIN, or RST if `send` armed a reset.
}

/// Records the request and plans the answer under one lock, so the record order is the order
/// in which answers were decided.
fn decide(state: &Mutex<State>, req: &Request) -> Plan {
    let mut st = lock(state);
    let index = st.requests.get(&req.path).map_or(0, Vec::len);
    let plan = match st.files.get_mut(&req.path) {
        Some(file) => file.plan(req, index),
        None => Plan::text(404, "not found\n"),
    };
    let range = req.header("range").map(str::to_string);
    let record = RequestRecord {
        method: req.method.clone(),
        range_start: range.as_deref().and_then(range_start),
        range,
        if_range: req.header("if-range").map(str::to_string),
        authorization: req.header("authorization").map(str::to_string),
        headers: req.headers.clone(),
        query: req.query.clone(),
        status: plan.status,
    };
    st.requests
        .entry(req.path.clone())
        .or_default()
        .push(record);
    plan
}

/// Installs `swap_after_first` content exactly once: explicitly at the moment the response
/// ends as the client will see it, or, failing that, when dropped (any early return).
struct Swap<'a> {
    state: &'a Mutex<State>,
    path: &'a str,
    data: Option<Vec<u8>>,
}

impl Swap<'_> {
    fn apply(&mut self) {
        if let Some(data) = self.data.take() {
            if let Some(file) = lock(self.state).files.get_mut(self.path) {
                file.replace(data);
            }
        }
    }
}

impl Drop for Swap<'_> {
    fn drop(&mut self) {
        self.apply();
    }
}

/// Writes the response and ends the connection as planned.
///
/// Ordering matters for tests that act on what the client saw: a swap is applied *before* the
/// client can observe the end of the response (before the last body write, the FIN or the RST),
/// so a request the client sends afterwards always sees the new content.
async fn send(stream: &mut TcpStream, state: &Mutex<State>, path: &str, plan: &Plan) {
    let mut swap = Swap {
        state,
        path,
        data: plan.swap_after.clone(),
    };
    let mut refund = LinkRefund {
        state,
        path,
        reservation: plan.link.clone(),
        written: 0,
    };
    let body = &plan.body[plan.start..plan.end];
    let limit = plan
        .cut
        .map_or(body.len(), |(at, _)| body.len().min(at as usize));
    let body = if plan.send_body {
        &body[..limit]
    } else {
        &[][..]
    };
    if plan.cut.is_none() && body.is_empty() {
        // The head is the last thing the client will see.
        swap.apply();
    }
    if let Err(e) = stream.write_all(&plan.head_bytes()).await {
        log_write_error(path, &e);
        return;
    }
    if !body.is_empty() {
        let counter = plan.counts_as_content.then_some((state, path));
        let swap_before_last = if plan.cut.is_none() {
            Some(&mut swap)
        } else {
            None
        };
        let (mut reader, mut writer) = stream.split();
        // Watch for the client hanging up while we write: a throttled response would otherwise
        // notice only at its next write, and a swap must not lag behind the client's abort.
        let written = tokio::select! {
            r = write_body(
                &mut writer,
                body,
                plan.rate_bps,
                counter,
                swap_before_last,
                &mut refund.written,
            ) => r,
            _ = wait_peer_gone(&mut reader) => Err(std::io::ErrorKind::ConnectionAborted.into()),
        };
        if let Err(e) = written {
            // The client went away (cancel, pause, its own timeout): nothing more to do.
            log_write_error(path, &e);
            return;
        }
    }
    match plan.cut {
        None => {
            let _ = stream.shutdown().await;
        }
        Some((_, Cut::Eof)) => {
            swap.apply();
            let _ = stream.shutdown().await;
        }
        Some((_, Cut::Reset)) => {
            drain(stream).await;
            swap.apply();
            reset(stream);
        }
        Some((_, Cut::Stall)) => {
            // For the client the response is over once it gives up on the silence; apply the
            // swap now so its retry, however quick, sees the new content.
            swap.apply();
            // Silent but alive: wait for the client to give up (read returns 0 or an error),
            // so a client with a stall timeout frees the task promptly.
            let _ = tokio::time::timeout(STALL_DURATION, wait_peer_gone(stream)).await;
            reset(stream);
        }
    }
}

/// Gives back to an `expire_after` link the part of its reservation that was not written
/// (the client hung up early, a write failed), when dropped at the end of `send`.
struct LinkRefund<'a> {
    state: &'a Mutex<State>,
    path: &'a str,
    reservation: Option<LinkReservation>,
    written: u64,
}

impl Drop for LinkRefund<'_> {
    fn drop(&mut self) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let unused = r.bytes.saturating_sub(self.written);
        if unused == 0 {
            return;
        }
        let mut st = lock(self.state);
        if let Some(file) = st.files.get_mut(self.path) {
            if file.generation == r.generation {
                if let Some(n) = file.link_bytes.get_mut(&r.link) {
                    *n = n.saturating_sub(unused);
                }
            }
        }
    }
}

/// Adds to `bytes_sent` before a write and takes back, when dropped, whatever was not written,
/// so the counter never lags behind what the client has received (a test may read it the
/// moment its download ends) and stays exact when a write fails or is cancelled.
struct SentCounter<'a> {
    target: Option<(&'a Mutex<State>, &'a str)>,
    unwritten: u64,
}

impl<'a> SentCounter<'a> {
    fn announce(target: Option<(&'a Mutex<State>, &'a str)>, len: u64) -> SentCounter<'a> {
        if let Some((state, path)) = target {
            *lock(state).bytes_sent.entry(path.to_string()).or_default() += len;
        }
        SentCounter {
            target,
            unwritten: len,
        }
    }
}

impl Drop for SentCounter<'_> {
    fn drop(&mut self) {
        if let (Some((state, path)), true) = (self.target, self.unwritten > 0) {
            if let Some(n) = lock(state).bytes_sent.get_mut(path) {
                *n -= self.unwritten;
            }
        }
    }
}

async fn write_body<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
    rate_bps: Option<u64>,
    counter: Option<(&Mutex<State>, &str)>,
    mut swap_before_last: Option<&mut Swap<'_>>,
    written: &mut u64,
) -> std::io::Result<()> {
    let started = Instant::now();
    // At low rates smaller writes keep the flow smooth (about 20 writes a second).
    let chunk = match rate_bps {
        Some(rate) => (rate / 20).clamp(1, MAX_PACED_CHUNK as u64) as usize,
        None => UNPACED_CHUNK,
    };
    let pieces = body.len().div_ceil(chunk);
    let mut sent: u64 = 0;
    for (i, piece) in body.chunks(chunk).enumerate() {
        if let Some(rate) = rate_bps {
            // Pace against the start of the response, not the previous write, so scheduling
            // jitter does not accumulate: a piece leaves once the average allows it, which
            // keeps the received bytes at or below rate * elapsed at every moment.
            let due =
                started + Duration::from_secs_f64((sent + piece.len() as u64) as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if i + 1 == pieces {
            if let Some(swap) = swap_before_last.as_deref_mut() {
                swap.apply();
            }
        }
        let mut pending = SentCounter::announce(counter, piece.len() as u64);
        let mut rest = piece;
        while !rest.is_empty() {
            let n = writer.write(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
            pending.unwritten -= n as u64;
            *written += n as u64;
        }
        sent += piece.len() as u64;
    }
    writer.flush().await
}

/// Waits (bounded) until the peer has acknowledged every byte written so far.
async fn drain(stream: &TcpStream) {
    // With SO_LINGER 0 the kernel discards data still in the send queue, which would make the
    // cut land earlier than asked.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while unsent_bytes(stream) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Arms an abrupt close: when the caller drops the stream, the kernel sends RST, not FIN.
fn reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        eprintln!("upstream: set_zero_linger: {e}");
    }
}

/// Bytes written but not yet acknowledged by the peer.
#[cfg(target_os = "linux")]
fn unsent_bytes(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for TCP) writes one c_int through the pointer, which points to
    // a live local; the fd is valid for the lifetime of `stream`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        queued.max(0) as usize
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn unsent_bytes(_stream: &TcpStream) -> usize {
    0
}

async fn wait_peer_gone<R: AsyncRead + Unpin>(stream: &mut R) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn log_write_error(path: &str, e: &std::io::Error) {
    use std::io::ErrorKind::*;
    // Clients hanging up mid-body is routine in these tests; only the unexpected is worth a line.
    if !matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted) {
        eprintln!("upstream: writing response for /{path}: {e}");
    }
}

/// Reads up to and including the blank line ending the request head. `Ok(None)` if the peer
/// closed before sending anything.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the request head",
                ))
            };
        }
        // Look for the terminator from a little before the new bytes, in case it straddles reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            // Anything after the head (a body) is not expected for GET/HEAD and is ignored.
            buf.truncate(from + pos + 4);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split_ascii_whitespace();
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    let version = request_line.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let (raw_path, query) = split_target(target);
    Some(Request {
        method,
        path: normalize(&percent_decode(&raw_path)),
        raw_path,
        query,
        headers,
    })
}

/// Splits a request target into its raw path (no scheme/authority, query or fragment) and raw
/// query string. The lookup key is then the path percent-decoded without its leading slash (so
/// "my%20file.bin" finds "my file.bin").
fn split_target(target: &str) -> (String, Option<String>) {
    let mut t = target;
    // Absolute-form, as sent to proxies.
    if let Some(rest) = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        t = rest.find('/').map_or("", |i| &rest[i..]);
    }
    let t = t.split('#').next().unwrap_or("");
    match t.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (t.to_string(), None),
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// Decodes `%XX` escapes (not `+`); invalid UTF-8 is replaced.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
