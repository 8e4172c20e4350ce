//! Path tricks in every path parameter (threats.md, "Hostile clients"): `..`, `%2e%2e`,
//! `%2f`, `%5c`, NUL, `//`, 300-character segments, 100,000-character revisions, invalid
//! UTF-8 and names Windows reserves, sent on the raw wire (a client library would
//! normalise some of them away) to every route that takes a path parameter: REST,
//! the library's delete, the Hub routes and the `/hf` mirror. Each is refused with a
//! 4xx, never a 5xx; nothing outside `download_dir` is read, served or deleted, and the
//! library's own file stays.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::Upstream;

const REPO: &str = "owner/name";
const SECRET: &[u8] = b"SECRET-BYTES-OUTSIDE-DOWNLOAD-DIR";

/// One request on a new connection, the path sent byte for byte; the status and body.
fn raw(port: u16, method: &str, path: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path);
    req.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    s.write_all(&req).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {method} {path:?}: {head:?}"));
    (status, answer)
}

/// The tricks, each as the bytes that stand for one path parameter.
fn tricks() -> Vec<Vec<u8>> {
    let mut t: Vec<Vec<u8>> = [
        "..",
        "%2e%2e",
        "%2E%2E",
        "..%2f..%2foutside%2fsecret.gguf",
        "%2e%2e%2foutside%2fsecret.gguf",
        "..%5c..%5coutside%5csecret.gguf",
        "%5c",
        "%2f",
        "%00",
        "keep.gguf%00",
        "keep.gguf%2f",
        ".%2fkeep.gguf",
        "CON",
        "aux.gguf",
        "%ff%fe",
        "%c0%ae%c0%ae",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    t.push(b"a".repeat(300));
    t.push(b"r".repeat(100_000));
    t.push(vec![0xff, 0xfe, b'x']);
    t
}

/// Every route with a path parameter, `{}` where the trick goes.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/downloads/{}"),
    ("PATCH", "/api/downloads/{}"),
    ("DELETE", "/api/downloads/{}?delete_file=true"),
    ("POST", "/api/downloads/{}/pause"),
    ("POST", "/api/downloads/{}/cancel"),
    ("DELETE", "/api/library/{}"),
    ("DELETE", "/api/library/{}/keep.gguf"),
    ("GET", "/api/hub/models/{}/name/files"),
    ("GET", "/api/hub/models/owner/{}/files"),
    ("GET", "/api/hub/models/owner/name/files?revision={}"),
    ("POST", "/api/hub/models/owner/{}/download"),
    ("GET", "/hf/api/models/{}/name"),
    ("GET", "/hf/api/models/owner/name/revision/{}"),
    ("GET", "/hf/api/models/owner/name/tree/{}"),
    ("GET", "/hf/api/models/owner/name/tree/main/{}"),
    ("GET", "/hf/owner/name/resolve/{}/keep.gguf"),
    ("GET", "/hf/owner/name/resolve/main/{}"),
    ("HEAD", "/hf/owner/name/resolve/main/{}"),
    ("GET", "/hf/{}/name/resolve/main/keep.gguf"),
];

#[actix_web::test]
async fn path_tricks_in_every_path_parameter_are_refused_and_reach_nothing_outside() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, "keep.gguf", content(4096, 1));
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let downloads = svc.download_dir();
    // `download_dir/../outside/secret.gguf`, and a file the library lists.
    let outside = svc.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.gguf"), SECRET).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join("keep.gguf"), b"library file").unwrap();
    svc.post("/api/library/rescan", serde_json::json!({})).await;
    let port: u16 = svc.base.rsplit(':').next().unwrap().parse().unwrap();

    let (svc_ref, mut failures) = (&svc, Vec::new());
    let all: Vec<(String, Vec<u8>)> = ROUTES
        .iter()
        .flat_map(|(method, route)| {
            let (before, after) = route.split_once("{}").unwrap();
            tricks().into_iter().map(move |trick| {
                let mut path = before.as_bytes().to_vec();
                path.extend_from_slice(&trick);
                path.extend_from_slice(after.as_bytes());
                (method.to_string(), path)
            })
        })
        .collect();
    for (method, path) in all {
        let (m, p) = (method.clone(), path.clone());
        let (status, body) = tokio::task::spawn_blocking(move || raw(port, &m, &p))
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(&path[..path.len().min(120)]).to_string();
        if !(400..500).contains(&status) {
            failures.push(format!("{method} {shown}: {status}"));
        }
        if body.windows(SECRET.len()).any(|w| w == SECRET) {
            failures.push(format!("{method} {shown}: served the outside file"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        std::fs::read(outside.join("secret.gguf")).unwrap(),
        SECRET,
        "the outside file is untouched"
    );
    assert!(
        downloads.join("keep.gguf").exists(),
        "the library's file stays"
    );
    let (s, list) = svc_ref.get("/api/downloads").await;
    assert_eq!(s, 200);
    assert_eq!(
        list["downloads"].as_array().map(Vec::len),
        Some(0),
        "nothing was queued: {list}"
    );
}
