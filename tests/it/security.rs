//! The contract's security section and its file rules: the API token, foreign origins and
//! hosts, non-JSON bodies, the refusal of a public bind without a token, file names,
//! symlinks in download_dir, and which names may be taken or replaced.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{self, Proc};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};

const TOKEN: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(8);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---- helpers ----

/// A body: its Content-Type and bytes.
type Body = Option<(&'static str, Vec<u8>)>;

fn json_body(v: Value) -> Body {
    Some(("application/json", serde_json::to_vec(&v).unwrap()))
}

/// Any request with extra headers; returns status and JSON body (Null when not JSON).
async fn send(
    svc: &TestService,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (u16, Value) {
    let mut req = svc.client.request(method, svc.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some((ct, bytes)) = body {
        req = req.header("content-type", ct).body(bytes);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error without a message: {body}"
    );
}

/// Opens `/api/events` (plus `query`) with extra headers; on an HTTP refusal returns its
/// status and JSON body.
async fn ws_connect(
    svc: &TestService,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, Value)> {
    let url = format!("{}/api/events{query}", svc.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake timed out");
    match result {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("websocket {query:?} {headers:?}: {e}"),
    }
}

/// The first text frame of a websocket: the snapshot.
async fn first_frame(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no snapshot frame: {other:?}"),
        }
    }
}

async fn list_len(svc: &TestService, headers: &[(&str, &str)]) -> usize {
    let (s, v) = send(svc, Method::GET, "/api/downloads", headers, None).await;
    assert_eq!(s, 200, "{v}");
    v["downloads"].as_array().expect("downloads").len()
}

/// Every entry under `dir` (files, directories and symlinks, without following
/// symlinks), relative and sorted: stricter than `tree`, which lists files only.
fn entries(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(list) = std::fs::read_dir(dir) else {
            return;
        };
        for e in list.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A service whose temp dir also holds `outside/`, a sibling of `downloads/` and `data/`,
/// so that one listing of the temp dir shows anything written where it should not be.
async fn service_with_outside(up: &Upstream) -> (TestService, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut config = test_config(dir.path());
    config.hub.endpoint = up.url("");
    let svc = TestService::start_in(dir, config).await;
    (svc, outside)
}

/// Nothing in the temp dir but the service's own `data/` and `downloads/` and `allowed`.
fn assert_nothing_else(root: &Path, allowed: &[&str]) {
    for f in tree(root) {
        let ok = f.starts_with("data/")
            || (f.starts_with("downloads/") && !f.starts_with("downloads/evil/"))
            || allowed.contains(&f.as_str());
        assert!(ok, "unexpected file {f} in {:?}", tree(root));
    }
}

// ---- 1. the API token ----

#[actix_web::test]
async fn the_token_guards_every_api_route_and_the_websocket() {
    let up = Upstream::start();
    up.add_file("api/models", b"[]".to_vec(), Behavior::default());
    let svc = TestService::start(|c| {
        c.server.api_token = TOKEN.into();
        c.hub.endpoint = up.url("");
    })
    .await;
    let good = ("authorization", "Bearer s3cret");

    // One download to steer, added with the token.
    let (s, d) = send(
        &svc,
        Method::POST,
        "/api/downloads",
        &[good],
        json_body(json!({"url": up.url("a.bin"), "start_paused": true})),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();

    let pause = format!("/api/downloads/{id}/pause");
    let routes: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, "/api/downloads".into(), None, 200),
        (
            Method::POST,
            "/api/downloads".into(),
            Some(json!({"url": up.url("b.bin"), "start_paused": true})),
            201,
        ),
        (Method::GET, format!("/api/downloads/{id}"), None, 200),
        (Method::GET, "/api/settings".into(), None, 200),
        (
            Method::PATCH,
            "/api/settings".into(),
            Some(json!({"max_concurrent": 2})),
            200,
        ),
        (Method::GET, "/api/stats".into(), None, 200),
        (Method::GET, "/api/history".into(), None, 200),
        (Method::POST, "/api/pause-all".into(), None, 200),
        (Method::GET, "/api/hub/search?q=x".into(), None, 200),
        (Method::POST, pause.clone(), None, 200),
        (Method::GET, "/metrics".into(), None, 200),
    ];
    let wrong: &[&[(&str, &str)]] = &[
        &[],
        &[("authorization", "Bearer s3creT")],
        &[("authorization", "Bearer s3cret2")],
        &[("authorization", "Bearer s3cre")],
        &[("authorization", "Bearer ")],
        &[("authorization", "s3cret")],
        // "s3cret:" in base64: the right secret in the wrong scheme.
        &[("authorization", "Basic czNjcmV0Og==")],
    ];
    for (method, path, body, _) in &routes {
        for headers in wrong {
            let (s, v) = send(
                &svc,
                method.clone(),
                path,
                headers,
                body.clone().and_then(json_body),
            )
            .await;
            assert_error(
                s,
                &v,
                401,
                "unauthorized",
                &format!("{method} {path} {headers:?}"),
            );
        }
        // `?token=` is for the websocket only: it would leak into logs elsewhere.
        let sep = if path.contains('?') { '&' } else { '?' };
        let with_query = format!("{path}{sep}token={TOKEN}");
        let (s, v) = send(
            &svc,
            method.clone(),
            &with_query,
            &[],
            body.clone().and_then(json_body),
        )
        .await;
        assert_error(
            s,
            &v,
            401,
            "unauthorized",
            &format!("{method} {with_query}"),
        );
    }
    // An unknown API route is refused before anything says whether it exists.
    let (s, v) = send(&svc, Method::GET, "/api/nothing-here", &[], None).await;
    assert_error(s, &v, 401, "unauthorized", "GET /api/nothing-here");

    // None of the refused requests changed anything.
    let (s, v) = send(&svc, Method::GET, "/api/downloads", &[good], None).await;
    assert_eq!(s, 200, "{v}");
    let list = v["downloads"].as_array().unwrap();
    assert_eq!(list.len(), 1, "a refused POST added a download: {v}");
    assert_eq!(list[0]["state"], "paused");
    let (_, settings) = send(&svc, Method::GET, "/api/settings", &[good], None).await;
    assert_eq!(settings["max_concurrent"], 3, "{settings}");

    // With the token every route works.
    for (method, path, body, want) in &routes {
        let (s, v) = send(
            &svc,
            method.clone(),
            path,
            &[good],
            body.clone().and_then(json_body),
        )
        .await;
        assert_eq!(s, *want, "{method} {path} with the token: {v}");
    }
    let (_, settings) = send(&svc, Method::GET, "/api/settings", &[good], None).await;
    assert_eq!(settings["max_concurrent"], 2, "{settings}");
    assert_eq!(list_len(&svc, &[good]).await, 2);

    // The websocket: refused without a token or with a wrong one, in either form.
    for (query, headers) in [
        ("", &[][..]),
        ("?token=wrong", &[][..]),
        ("?token=s3creT", &[][..]),
        ("?token=", &[][..]),
        ("", &[("authorization", "Bearer s3creT")][..]),
        ("", &[("authorization", "Basic czNjcmV0Og==")][..]),
    ] {
        match ws_connect(&svc, query, headers).await {
            Ok(_) => panic!("websocket {query:?} {headers:?} was accepted"),
            Err((s, v)) => {
                assert_eq!(s, 401, "websocket {query:?} {headers:?}: {v}");
                if !v.is_null() {
                    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
                }
            }
        }
    }
    // ...and accepted with it, as a query parameter (browsers) or a header (scripts).
    for (query, headers) in [
        ("?token=s3cret", &[][..]),
        ("", &[("authorization", "Bearer s3cret")][..]),
    ] {
        let mut ws = ws_connect(&svc, query, headers)
            .await
            .unwrap_or_else(|e| panic!("websocket {query:?} {headers:?} refused: {e:?}"));
        let snapshot = first_frame(&mut ws).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        assert_eq!(snapshot["downloads"].as_array().unwrap().len(), 2);
    }

    // The health check and the page stay open.
    let r = svc.client.get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "ok");
    let r = svc.client.get(svc.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .to_ascii_lowercase()
        .contains("<html"));
}

#[actix_web::test]
async fn percent_encoded_api_paths_need_the_token_too() {
    let svc = TestService::start(|c| c.server.api_token = TOKEN.into()).await;
    let mut let_through = Vec::new();
    for path in ["/%61pi/downloads", "/%61%70%69/stats", "/ap%69/settings"] {
        let (s, v) = send(&svc, Method::GET, path, &[], None).await;
        if !(s == 401 || s == 404) {
            let_through.push(format!("GET {path}: {s} {v}"));
        }
    }
    let (s, v) = send(
        &svc,
        Method::POST,
        "/%61pi/downloads",
        &[],
        json_body(json!({"url": "http://127.0.0.1:9/x.bin", "start_paused": true})),
    )
    .await;
    if !(s == 401 || s == 404) {
        let_through.push(format!("POST /%61pi/downloads: {s} {v}"));
    }
    let (_, v) = send(
        &svc,
        Method::GET,
        "/api/downloads",
        &[("authorization", "Bearer s3cret")],
        None,
    )
    .await;
    let added = v["downloads"].as_array().unwrap().len();
    assert!(
        let_through.is_empty() && added == 0,
        "requests without the token were served ({added} download(s) added): {let_through:#?}"
    );
}

// ---- 2. a public bind needs a token ----

fn public_config(dir: &Path, port: u16, token: &str) -> PathBuf {
    let path = dir.join("public.toml");
    let text = format!(
        "[server]\nbind = \"0.0.0.0:{port}\"\napi_token = \"{token}\"\n\n[storage]\ndata_dir = \"{}\"\ndownload_dir = \"{}\"\n",
        dir.join("data").display(),
        dir.join("downloads").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_one_line_about_the_token(code: Option<i32>, stderr: &str, what: &str) {
    assert_eq!(code, Some(2), "{what}: stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: want one line: {stderr:?}");
    assert!(
        lines[0].to_ascii_lowercase().contains("token"),
        "{what}: the line does not mention the token: {stderr:?}"
    );
}

#[actix_web::test]
async fn a_public_bind_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = binary::free_port();
    let bind = format!("0.0.0.0:{port}");
    let data = dir.path().join("data");
    let downloads = dir.path().join("downloads");
    let (code, stderr) = binary::run_to_exit(
        &[
            "--bind",
            &bind,
            "--data-dir",
            data.to_str().unwrap(),
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert_one_line_about_the_token(code, &stderr, "--bind 0.0.0.0");
    // Nobody is listening on the port.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on port {port}"
    );

    // The same from the config file.
    let config = public_config(dir.path(), port, "");
    let (code, stderr) =
        binary::run_to_exit(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_one_line_about_the_token(code, &stderr, "bind 0.0.0.0 in the config");

    // A token from the environment lets it start.
    let port = binary::free_port();
    let config = public_config(dir.path(), port, "");
    let child = Command::new(binary::BIN)
        .arg("--config")
        .arg(&config)
        .env("MM_SERVER__API_TOKEN", "x")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let mut proc = Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    proc.wait_healthy().await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/api/stats", proc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the env token is not enforced");
    let r = client
        .get(format!("{}/api/stats", proc.base))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(proc);

    // And so does one in the config file.
    let port = binary::free_port();
    let config = public_config(dir.path(), port, "from-file");
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    let r = client
        .get(format!("{}/api/stats", proc.base))
        .bearer_auth("from-file")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/api/stats", proc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

// ---- 3. other origins, other hosts, other content types ----

#[actix_web::test]
async fn other_origins_hosts_and_content_types_are_refused() {
    let svc = TestService::start(|_| {}).await;
    let own = svc.base.clone(); // http://127.0.0.1:PORT
    let port = svc.base.rsplit(':').next().unwrap().to_owned();
    let add = || json_body(json!({"url": "http://127.0.0.1:9/x.bin", "start_paused": true}));

    // A page of another origin cannot add, change settings, pause or clear.
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1",
        "http://127.0.0.1:1",
        "https://evil.example:443",
    ] {
        let h = [("origin", origin)];
        let (s, v) = send(&svc, Method::POST, "/api/downloads", &h, add()).await;
        assert_error(s, &v, 403, "forbidden", &format!("POST from {origin}"));
        let (s, v) = send(
            &svc,
            Method::PATCH,
            "/api/settings",
            &h,
            json_body(json!({"max_concurrent": 1})),
        )
        .await;
        assert_error(s, &v, 403, "forbidden", &format!("PATCH from {origin}"));
        let (s, v) = send(&svc, Method::POST, "/api/pause-all", &h, None).await;
        assert_error(s, &v, 403, "forbidden", &format!("pause-all from {origin}"));
        let (s, v) = send(&svc, Method::DELETE, "/api/history", &h, None).await;
        assert_error(s, &v, 403, "forbidden", &format!("clear from {origin}"));
    }
    assert_eq!(
        list_len(&svc, &[]).await,
        0,
        "a refused POST added a download"
    );
    let (_, settings) = svc.get("/api/settings").await;
    assert_eq!(settings["max_concurrent"], 3, "{settings}");

    // The page's own requests: same-origin reads without Origin, writes with its Origin.
    let (s, v) = send(&svc, Method::GET, "/api/downloads", &[], None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(
        &svc,
        Method::GET,
        "/api/downloads",
        &[("origin", &own)],
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(
        &svc,
        Method::POST,
        "/api/downloads",
        &[("origin", &own)],
        add(),
    )
    .await;
    assert_eq!(s, 201, "same-origin POST: {v}");
    assert_eq!(list_len(&svc, &[]).await, 1);
    // The page opened as http://localhost:PORT: Host and Origin agree.
    let localhost = format!("localhost:{port}");
    let local_origin = format!("http://localhost:{port}");
    let (s, v) = send(
        &svc,
        Method::PATCH,
        "/api/settings",
        &[("host", &localhost), ("origin", &local_origin)],
        json_body(json!({"max_concurrent": 2})),
    )
    .await;
    assert_eq!(s, 200, "same-origin PATCH via localhost: {v}");

    // Cross-site forms cannot post: a body must be JSON.
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            b"url=http%3A%2F%2F127.0.0.1%3A9%2Fy.bin".to_vec(),
        ),
        (
            "text/plain",
            br#"{"url": "http://127.0.0.1:9/y.bin", "start_paused": true}"#.to_vec(),
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttp://127.0.0.1:9/y.bin\r\n--x--\r\n"
                .to_vec(),
        ),
    ] {
        let (s, v) = send(&svc, Method::POST, "/api/downloads", &[], Some((ct, body))).await;
        assert_error(s, &v, 415, "unsupported_media_type", ct);
    }
    assert_eq!(
        list_len(&svc, &[]).await,
        1,
        "a non-JSON POST added a download"
    );

    // The websocket: refused from another origin, open to the page's own.
    for origin in ["http://evil.example", "null"] {
        match ws_connect(&svc, "", &[("origin", origin)]).await {
            Ok(_) => panic!("websocket from {origin} was accepted"),
            Err((s, v)) => assert_eq!(s, 403, "websocket from {origin}: {v}"),
        }
    }
    let mut ws = ws_connect(&svc, "", &[("origin", &own)])
        .await
        .expect("same-origin websocket");
    assert_eq!(first_frame(&mut ws).await["type"], "snapshot");
    let mut ws = ws_connect(&svc, "", &[])
        .await
        .expect("websocket, no Origin");
    assert_eq!(first_frame(&mut ws).await["type"], "snapshot");

    // DNS rebinding: a loopback bind answers only to loopback names.
    for host in ["evil.example", &format!("evil.example:{port}"), "10.0.0.1"] {
        for path in ["/api/downloads", "/", "/healthz"] {
            let (s, v) = send(&svc, Method::GET, path, &[("host", host)], None).await;
            assert_error(s, &v, 403, "forbidden", &format!("GET {path} Host {host}"));
        }
    }
    for host in [
        localhost.as_str(),
        "localhost",
        &format!("127.0.0.1:{port}"),
        &format!("[::1]:{port}"),
    ] {
        let (s, v) = send(&svc, Method::GET, "/api/downloads", &[("host", host)], None).await;
        assert_eq!(s, 200, "Host {host}: {v}");
        let r = svc
            .client
            .get(svc.url("/"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "page with Host {host}");
    }
}

// ---- 4. symlinks in download_dir ----

#[actix_web::test]
async fn a_symlink_in_download_dir_is_never_written_through() {
    let up = Upstream::start();
    let data = content(64 * 1024, 4);
    up.add_file("f.bin", data, Behavior::default());
    let (svc, outside) = service_with_outside(&up).await;
    let root = svc.dir.path().to_owned();
    let dl = svc.download_dir();
    std::fs::write(outside.join("keep.txt"), b"mine").unwrap();
    std::os::unix::fs::symlink(&outside, dl.join("evil")).unwrap();

    // The name exists (as a symlink): refused.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("f.bin"), "file_name": "evil"}),
        )
        .await;
    assert_error(s, &v, 409, "conflict", "file_name = the symlink");
    assert_eq!(list_len(&svc, &[]).await, 0);

    // Overwriting it must not go through it: refused, or a download that fails on disk.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("f.bin"), "file_name": "evil", "overwrite": true}),
        )
        .await;
    if s == 201 {
        let id = v["id"].as_str().unwrap();
        let d = svc.wait_state(id, "failed", WAIT).await;
        assert_eq!(d["error"]["kind"], "disk", "{d}");
    } else {
        assert!(
            matches!(s, 409 | 422),
            "overwrite of a symlink answered {s}: {v}"
        );
    }
    assert_eq!(entries(&outside), vec!["keep.txt"]);
    assert_eq!(std::fs::read(outside.join("keep.txt")).unwrap(), b"mine");
    assert!(
        dl.join("evil").symlink_metadata().unwrap().is_symlink(),
        "the symlink was replaced"
    );
    assert_nothing_else(&root, &["outside/keep.txt", "downloads/evil/keep.txt"]);
    // Seen from download_dir, the link still shows only what the test put there.
    assert_eq!(tree(&dl), vec!["evil/keep.txt"]);
}

#[actix_web::test]
async fn a_hub_path_through_a_symlinked_dir_fails_with_disk_and_writes_no_file() {
    let up = Upstream::start();
    let (svc, outside) = service_with_outside(&up).await;
    let root = svc.dir.path().to_owned();
    std::os::unix::fs::symlink(&outside, svc.download_dir().join("evil")).unwrap();

    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "evil/x", "file": "f.bin"}}),
        )
        .await;
    if s == 201 {
        let id = v["id"].as_str().unwrap();
        let d = svc.wait_state(id, "failed", WAIT).await;
        assert_eq!(d["error"]["kind"], "disk", "{d}");
        assert_eq!(d["path"], "evil/x/f.bin", "{d}");
    } else {
        assert!(matches!(s, 409 | 422), "hub download answered {s}: {v}");
    }
    // Nothing was fetched for it either.
    assert!(
        up.requests("evil/x/resolve/main/f.bin").is_empty(),
        "the Hub was asked for a file that cannot be stored"
    );
    assert_eq!(tree(&outside), Vec::<String>::new());
    assert_nothing_else(&root, &[]);
}

#[actix_web::test]
async fn a_hub_path_through_a_symlinked_dir_creates_nothing_outside() {
    let up = Upstream::start();
    let (svc, outside) = service_with_outside(&up).await;
    std::os::unix::fs::symlink(&outside, svc.download_dir().join("evil")).unwrap();
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "evil/x", "file": "sub/f.bin"}}),
        )
        .await;
    if s == 201 {
        let id = v["id"].as_str().unwrap();
        let d = svc.wait_state(id, "failed", WAIT).await;
        assert_eq!(d["error"]["kind"], "disk", "{d}");
    }
    assert_eq!(
        entries(&outside),
        Vec::<String>::new(),
        "directories were created outside download_dir"
    );
}

#[actix_web::test]
async fn a_symlinked_part_file_is_not_followed() {
    let up = Upstream::start();
    let data = content(256 * 1024, 5);
    up.add_file("x.bin", data.clone(), Behavior::default());
    let (svc, outside) = service_with_outside(&up).await;
    let victim = outside.join("victim.bin");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, svc.download_dir().join("x.bin.part")).unwrap();

    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("x.bin")}))
        .await;
    if s == 201 {
        let id = v["id"].as_str().unwrap();
        let d = svc
            .wait_until(id, WAIT, "finished", |d| {
                matches!(d["state"].as_str(), Some("completed" | "failed"))
            })
            .await;
        let victim_now = std::fs::read(&victim).unwrap();
        assert!(
            victim_now == b"precious",
            "the download ({}) wrote {} bytes through the .part symlink into {}",
            d["state"],
            victim_now.len(),
            victim.display()
        );
        if d["state"] == "completed" {
            // The `.part` symlink (not ours) holds `x.bin`: the file may come under a
            // numbered name, which the record says.
            let name = d["path"].as_str().unwrap_or("x.bin");
            let f = svc.download_dir().join(name);
            assert!(
                !f.symlink_metadata().unwrap().is_symlink(),
                "{name} is a symlink"
            );
            assert_eq!(std::fs::read(&f).unwrap(), data);
        } else {
            assert_eq!(d["error"]["kind"], "disk", "{d}");
        }
    }
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "written through"
    );
    assert_eq!(entries(&outside), vec!["victim.bin"]);
}

// ---- 5. names that are taken, and overwriting ----

#[actix_web::test]
async fn taken_names_conflict_unless_overwritten_and_delete_removes_only_its_own_file() {
    let up = Upstream::start();
    let x = content(300 * 1024, 1);
    let other = content(200 * 1024, 2);
    up.add_file("x.bin", x.clone(), Behavior::default());
    up.add_file("other.bin", other.clone(), Behavior::default());
    let slow = Behavior {
        rate_bps: Some(64 * 1024),
        ..Default::default()
    };
    up.add_file("slow.bin", content(4 * MIB, 3), slow.clone());
    up.add_file("slow2.bin", content(4 * MIB, 6), slow);
    let svc = TestService::start(|c| c.downloads.max_concurrent = 1).await;
    let dl = svc.download_dir();

    // A file the test put there: its name is taken. A name from the URL goes to the
    // first free one (api.md, "The first hour"); a name given is a conflict.
    std::fs::write(dl.join("x.bin"), b"old bytes").unwrap();
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("x.bin")}))
        .await;
    assert_eq!((s, v["path"].as_str()), (201, Some("x (1).bin")), "{v}");
    let numbered = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&numbered, "completed", WAIT).await;
    let (s, v) = svc
        .delete(&format!("/api/downloads/{numbered}?delete_file=true"))
        .await;
    assert_eq!(s, 204, "{v}");
    assert!(!dl.join("x (1).bin").exists());
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("other.bin"), "file_name": "x.bin"}),
        )
        .await;
    assert_error(s, &v, 409, "conflict", "existing file, explicit file_name");
    assert_eq!(list_len(&svc, &[]).await, 0);
    assert_eq!(std::fs::read(dl.join("x.bin")).unwrap(), b"old bytes");

    // ...unless the request says overwrite.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("x.bin"), "overwrite": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let x_id = v["id"].as_str().unwrap().to_owned();
    svc.wait_state(&x_id, "completed", WAIT).await;
    assert_eq!(file_sha256(&dl.join("x.bin")), sha256_hex(&x));

    // A completed download's name is taken too: by another source's name given...
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("other.bin"), "file_name": "x.bin"}),
        )
        .await;
    assert_error(s, &v, 409, "conflict", "name of a completed download");
    // ...and the same source asked again is that download.
    let (s, v) = svc
        .post("/api/downloads", json!({"url": up.url("x.bin")}))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(x_id.as_str())), "{v}");
    let other_id = svc.add(json!({"url": up.url("other.bin")})).await;
    svc.wait_state(&other_id, "completed", WAIT).await;

    // A name held by a running or queued download is refused even with overwrite.
    let running = svc
        .add(json!({"url": up.url("slow.bin"), "file_name": "same.bin"}))
        .await;
    svc.wait_state(&running, "downloading", WAIT).await;
    let queued = svc
        .add(json!({"url": up.url("slow2.bin"), "file_name": "next.bin"}))
        .await;
    assert_eq!(svc.download(&queued).await["state"], "queued");
    let paused = svc
        .add(json!({"url": up.url("slow2.bin"), "file_name": "later.bin", "start_paused": true}))
        .await;
    for (name, holder) in [
        ("same.bin", "downloading"),
        ("next.bin", "queued"),
        ("later.bin", "paused"),
    ] {
        for overwrite in [false, true] {
            let (s, v) = svc
                .post(
                    "/api/downloads",
                    json!({"url": up.url("x.bin"), "file_name": name, "overwrite": overwrite}),
                )
                .await;
            assert_error(
                s,
                &v,
                409,
                "conflict",
                &format!("{name} held by a {holder} download, overwrite {overwrite}"),
            );
        }
    }
    // Twice in one batch: refused, and the batch adds nothing.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"downloads": [
                {"url": up.url("x.bin"), "file_name": "twin.bin"},
                {"url": up.url("other.bin"), "file_name": "twin.bin", "overwrite": true},
            ]}),
        )
        .await;
    assert_error(s, &v, 409, "conflict", "same name twice in a batch");
    assert_eq!(list_len(&svc, &[]).await, 5);
    for id in [&running, &queued, &paused] {
        let (s, v) = svc.action(id, "cancel").await;
        assert_eq!(s, 200, "{v}");
    }

    // delete_file removes that download's own file and nothing else.
    std::fs::write(dl.join("mine.txt"), b"the user's").unwrap();
    std::fs::write(dl.join("x.bin.keep"), b"a neighbour").unwrap();
    let (s, v) = svc
        .call(
            Method::DELETE,
            &format!("/api/downloads/{x_id}?delete_file=true"),
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    assert!(!dl.join("x.bin").exists(), "x.bin was not deleted");
    assert_eq!(std::fs::read(dl.join("mine.txt")).unwrap(), b"the user's");
    assert_eq!(
        std::fs::read(dl.join("x.bin.keep")).unwrap(),
        b"a neighbour"
    );
    assert_eq!(file_sha256(&dl.join("other.bin")), sha256_hex(&other));
    let (s, _) = svc.get(&format!("/api/downloads/{x_id}")).await;
    assert_eq!(s, 404);
    // Without delete_file the file stays.
    let (s, v) = svc
        .call(Method::DELETE, &format!("/api/downloads/{other_id}"), None)
        .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(file_sha256(&dl.join("other.bin")), sha256_hex(&other));
    assert_eq!(tree(&dl), vec!["mine.txt", "other.bin", "x.bin.keep"]);
}

#[actix_web::test]
async fn deleting_an_overwritten_download_keeps_the_file_that_replaced_it() {
    let up = Upstream::start();
    let v1 = content(100 * 1024, 7);
    let v2 = content(120 * 1024, 8);
    up.add_file("v1.bin", v1, Behavior::default());
    up.add_file("v2.bin", v2.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let first = svc
        .add(json!({"url": up.url("v1.bin"), "file_name": "shared.bin"}))
        .await;
    svc.wait_state(&first, "completed", WAIT).await;
    let second = svc
        .add(json!({"url": up.url("v2.bin"), "file_name": "shared.bin", "overwrite": true}))
        .await;
    svc.wait_state(&second, "completed", WAIT).await;
    let path = svc.download_dir().join("shared.bin");
    assert_eq!(file_sha256(&path), sha256_hex(&v2));

    let (s, v) = svc
        .call(
            Method::DELETE,
            &format!("/api/downloads/{first}?delete_file=true"),
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    assert!(path.exists(), "the second download's file was deleted");
    assert_eq!(file_sha256(&path), sha256_hex(&v2));
}

#[actix_web::test]
async fn retry_cannot_take_a_name_held_by_a_live_download() {
    let up = Upstream::start();
    up.add_file(
        "slow.bin",
        content(4 * MIB, 9),
        Behavior {
            rate_bps: Some(64 * 1024),
            ..Default::default()
        },
    );
    let svc = TestService::start(|_| {}).await;
    // Fails at once: the upstream has no such file.
    let failed = svc
        .add(json!({"url": up.url("missing.bin"), "file_name": "r.bin"}))
        .await;
    let d = svc.wait_state(&failed, "failed", WAIT).await;
    assert_eq!(d["error"]["kind"], "not_found", "{d}");
    // The name is free again: a new download takes it.
    let live = svc
        .add(json!({"url": up.url("slow.bin"), "file_name": "r.bin"}))
        .await;
    svc.wait_state(&live, "downloading", WAIT).await;
    let (s, v) = svc.action(&failed, "retry").await;
    assert_error(
        s,
        &v,
        409,
        "conflict",
        "retry onto a name held by a live download",
    );
    assert_eq!(svc.download(&failed).await["state"], "failed");
}

// ---- 6. refused names ----

#[actix_web::test]
async fn reserved_overlong_and_trailing_dot_names_are_refused() {
    let svc = TestService::start(|_| {}).await;
    let long = "x".repeat(256);
    let long_utf8 = "é".repeat(128); // 256 bytes, 128 characters
    for name in [
        "CON",
        "con",
        "com1.txt",
        "LPT9",
        "nul.gguf",
        "aux",
        long.as_str(),
        long_utf8.as_str(),
        "model.gguf.",
        "trailing ",
    ] {
        let (s, v) = svc
            .post(
                "/api/downloads",
                json!({"url": "http://127.0.0.1:9/f.bin", "file_name": name}),
            )
            .await;
        assert_error(
            s,
            &v,
            422,
            "invalid_request",
            &format!("file_name {name:?}"),
        );
    }
    // The same rules for a name taken from the URL and for Hub paths.
    for url in [
        "http://127.0.0.1:9/files/CON",
        "http://127.0.0.1:9/files/com1.txt",
        "http://127.0.0.1:9/files/x.",
    ] {
        let (s, v) = svc.post("/api/downloads", json!({"url": url})).await;
        assert_error(s, &v, 422, "invalid_request", url);
    }
    for hub in [
        json!({"repo": "o/r", "file": "com1.txt"}),
        json!({"repo": "o/r", "file": "dir/CON"}),
        json!({"repo": "o/CON", "file": "x.gguf"}),
        json!({"repo": "o/r", "file": "x.gguf."}),
        json!({"repo": "o/r", "file": long}),
    ] {
        let (s, v) = svc.post("/api/downloads", json!({ "hub": hub })).await;
        assert_error(s, &v, 422, "invalid_request", &format!("hub {hub}"));
    }
    // Exactly 250 bytes (its .part is 255, the file system's limit) and a name that
    // merely starts like a reserved one are fine.
    for name in ["x".repeat(250), "console.gguf".into(), "com10.txt".into()] {
        let (s, v) = svc
            .post(
                "/api/downloads",
                json!({"url": "http://127.0.0.1:9/f.bin", "file_name": name, "start_paused": true}),
            )
            .await;
        assert_eq!(s, 201, "{name:?}: {v}");
    }
    assert_eq!(list_len(&svc, &[]).await, 3);
    assert_eq!(tree(&svc.download_dir()), Vec::<String>::new());
}

#[actix_web::test]
async fn allowed_hosts_limit_downloads_and_their_redirects() {
    let up = Upstream::start();
    let port = up.addr().port();
    let svc = TestService::start(|c| c.downloads.allowed_hosts = vec!["127.0.0.1".into()]).await;
    let data = content(1000, 3);
    up.add_file("ok.bin", data.clone(), Behavior::default());
    // Another name for the same machine is still another host: refused before any request.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": format!("http://localhost:{port}/ok.bin"), "file_name": "other.bin"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_hosts"),
        "{v}"
    );
    let id = svc.add(json!({"url": up.url("ok.bin")})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(20))
        .await;
    // A redirect to a host that is not allowed is not followed.
    up.add_file(
        "jump.bin",
        data,
        Behavior {
            redirect_to: Some(format!("http://localhost:{port}/ok.bin")),
            ..Default::default()
        },
    );
    let id = svc.add(json!({"url": up.url("jump.bin")})).await;
    let d = svc.wait_state(&id, "failed", Duration::from_secs(20)).await;
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{d}"
    );
    assert_eq!(
        up.requests("ok.bin").len(),
        1,
        "the redirect target was fetched"
    );
}

#[actix_web::test]
async fn a_password_in_a_url_is_sent_upstream_but_never_shown() {
    let up = Upstream::start();
    up.add_file("private.bin", content(1000, 9), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let port = up.addr().port();
    let url = format!("http://alice:pa55word@127.0.0.1:{port}/private.bin");
    let id = svc.add(json!({"url": url})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(20))
        .await;
    // The credentials did their job: the upstream got them as Basic auth.
    let sent = up.requests("private.bin");
    let basic = "Basic YWxpY2U6cGE1NXdvcmQ="; // base64("alice:pa55word")
    assert!(
        sent.iter()
            .any(|r| r.authorization.as_deref() == Some(basic)),
        "{sent:?}"
    );
    // Every way a reader of this box sees the download: the API, the websocket's
    // snapshot and aria2's status; none shows the password.
    let (_, one) = svc.get(&format!("/api/downloads/{id}")).await;
    let (_, all) = svc.get("/api/downloads").await;
    let mut ws = ws_connect(&svc, "", &[]).await.expect("websocket");
    let snapshot = first_frame(&mut ws).await;
    let (_, rpc) = svc
        .post(
            "/jsonrpc",
            json!({"jsonrpc": "2.0", "id": 1, "method": "aria2.tellStopped", "params": [0, 10]}),
        )
        .await;
    assert_eq!(
        one["url"],
        format!("http://***@127.0.0.1:{port}/private.bin"),
        "{one}"
    );
    for (what, v) in [
        ("one", &one),
        ("list", &all),
        ("ws", &snapshot),
        ("rpc", &rpc),
    ] {
        let text = v.to_string();
        assert!(
            text.contains("private.bin"),
            "{what} lacks the download: {text}"
        );
        assert!(
            !text.contains("pa55word"),
            "{what} shows the password: {text}"
        );
    }
}
