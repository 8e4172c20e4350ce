//! The LAN mirror with the real HuggingFace client: `huggingface_hub` (PyPI) pointed at
//! the service by `HF_ENDPOINT` downloads library files without the upstream Hub, misses
//! are fetched once (as downloads of the queue) for every client asking at once, a
//! client that dropped resumes with `Range`, and the API token guards it all without ever
//! reaching the upstream.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";

/// Runs `tests/mirror/client.py` with `HF_ENDPOINT` at the service, on a blocking thread
/// (the service runs on this test's own thread), and returns its JSON.
pub(crate) async fn client(svc: &TestService, token: Option<&str>, args: &[&str]) -> Value {
    let home = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mirror/client.py"
    ))
    .args(args)
    .env("HF_ENDPOINT", svc.url("/hf"))
    // No token of the machine's own, no telemetry, no progress bars in the output.
    .env("HF_HOME", home.path())
    .env_remove("HF_TOKEN")
    .env("HF_HUB_DISABLE_TELEMETRY", "1")
    .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    .env("HF_HUB_DISABLE_XET", "1");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("python3 runs (install Python 3)");
    drop(home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "huggingface_hub is missing: run `python3 -m pip install huggingface_hub` (scripts/test.sh does): {stderr}"
    );
    assert!(out.status.success(), "client.py {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
}

/// A Hub with `REPO`, its CDN, and the service using that Hub.
async fn setup(
    opts: RepoOptions,
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> (Arc<Upstream>, HubEmu, TestService) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, opts);
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        tweak(c);
    })
    .await;
    (cdn, hub, svc)
}

fn digest(data: &[u8]) -> Value {
    json!({ "sha256": sha256_hex(data), "size": data.len() })
}

/// Requests the Hub saw for files (`resolve`), from the `from`th request on.
fn resolves_since(hub: &HubEmu, from: usize) -> Vec<String> {
    hub.requests()[from..]
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn wait_in_library(svc: &TestService, path: &str) -> Value {
    let list = || async move { svc.get("/api/library").await.1 };
    common::wait::library_file_where(LONG, list, path, "hashed", |f| f["sha256"].is_string()).await
}

#[actix_web::test]
async fn library_files_are_served_to_huggingface_hub_without_the_upstream() {
    let (cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let q4 = content(3 * 1024 * 1024 + 17, 1);
    let q8 = content(200_000, 2);
    let config = br#"{"model_type": "llama"}"#.to_vec();
    hub.put_file(REPO, "Tiny-Q4_K_M.gguf", q4.clone());
    hub.put_file(REPO, "Tiny-Q8_0.gguf", q8.clone());
    hub.put_file(REPO, "config.json", config.clone());
    let commit = hub.commit(REPO);
    for file in ["Tiny-Q4_K_M.gguf", "config.json"] {
        let id = svc
            .add(json!({ "hub": { "repo": REPO, "file": file } }))
            .await;
        svc.wait_state(&id, "completed", LONG).await;
        wait_in_library(&svc, &format!("{REPO}/{file}")).await;
    }
    let seen = hub.requests().len();
    let cdn_bytes = cdn.bytes_sent(&hub.cdn_path(REPO, &commit, "Tiny-Q4_K_M.gguf"));

    let got = client(&svc, None, &["download", REPO, "Tiny-Q4_K_M.gguf"]).await;
    assert_eq!(got, digest(&q4));
    let got = client(&svc, None, &["download", REPO, "Tiny-Q4_K_M.gguf", &commit]).await;
    assert_eq!(got, digest(&q4), "by commit");
    let snap = client(&svc, None, &["snapshot", REPO, "*Q4_K_M*", "*.json"]).await;
    assert_eq!(
        snap["files"],
        json!({ "Tiny-Q4_K_M.gguf": sha256_hex(&q4), "config.json": sha256_hex(&config) }),
        "{snap}"
    );
    let info = client(&svc, None, &["info", REPO]).await;
    assert_eq!(info["sha"], commit.as_str(), "{info}");
    assert_eq!(
        info["siblings"],
        json!(["Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "config.json"])
    );
    assert_eq!(
        resolves_since(&hub, seen),
        Vec::<String>::new(),
        "library files were asked of the Hub"
    );
    assert_eq!(
        cdn.bytes_sent(&hub.cdn_path(REPO, &commit, "Tiny-Q4_K_M.gguf")),
        cdn_bytes
    );

    // The Hub's headers, HEAD without a body, Range → 206.
    let url = svc.url(&format!("/hf/{REPO}/resolve/main/Tiny-Q4_K_M.gguf"));
    let head = svc.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let h = |name: &str| {
        head.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let quoted = format!("\"{}\"", sha256_hex(&q4));
    assert_eq!(h("etag"), Some(quoted.clone()));
    assert_eq!(h("x-linked-etag"), Some(quoted));
    assert_eq!(h("x-repo-commit"), Some(commit.clone()));
    assert_eq!(h("x-linked-size"), Some(q4.len().to_string()));
    assert_eq!(h("content-length"), Some(q4.len().to_string()));
    assert_eq!(h("accept-ranges").as_deref(), Some("bytes"));
    assert!(head.bytes().await.unwrap().is_empty());
    let part = svc
        .client
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), q4[1000..2000]);

    let tree = |svc: &TestService| {
        let url = svc.url(&format!("/hf/api/models/{REPO}/tree/main?recursive=true"));
        let client = svc.client.clone();
        async move {
            let v: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let mut paths: Vec<String> = v
                .as_array()
                .unwrap_or_else(|| panic!("a tree: {v}"))
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_owned())
                .collect();
            paths.sort();
            paths
        }
    };
    assert_eq!(
        tree(&svc).await,
        ["Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "config.json"]
    );

    // Without the upstream, model info and trees come from the library.
    drop(hub);
    assert_eq!(tree(&svc).await, ["Tiny-Q4_K_M.gguf", "config.json"]);
    let info = client(&svc, None, &["info", REPO]).await;
    assert_eq!(info["sha"], commit.as_str(), "offline: {info}");
    assert_eq!(info["siblings"], json!(["Tiny-Q4_K_M.gguf", "config.json"]));
    let got = client(&svc, None, &["download", REPO, "Tiny-Q4_K_M.gguf"]).await;
    assert_eq!(got, digest(&q4), "offline");
}

#[actix_web::test]
async fn a_miss_asked_by_two_clients_is_fetched_once_and_lands_in_the_library() {
    let (cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let data = content(4 * 1024 * 1024 + 3, 7);
    let file = "Tiny-Q5_K_M.gguf";
    hub.put_file(REPO, file, data.clone());
    let commit = hub.commit(REPO);
    // Slow enough that the second client arrives while the first one's download runs.
    hub.set_cdn_behavior(
        REPO,
        file,
        Behavior {
            rate_bps: Some(2 * 1024 * 1024),
            ..Behavior::default()
        },
    );
    let out = client(&svc, None, &["two", REPO, file]).await;
    assert_eq!(
        out["clients"],
        json!([digest(&data), digest(&data)]),
        "{out}"
    );
    let cdn_path = hub.cdn_path(REPO, &commit, file);
    assert_eq!(
        cdn.bytes_sent(&cdn_path),
        data.len() as u64,
        "the CDN served the file once"
    );
    let gets = cdn
        .requests(&cdn_path)
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!(gets >= 1, "{gets}");

    let entry = wait_in_library(&svc, &format!("{REPO}/{file}")).await;
    assert_eq!(entry["sha256"], sha256_hex(&data));
    assert_eq!(entry["revision"], commit.as_str());
    let (_, history) = svc.get("/api/history?state=completed").await;
    let ours: Vec<&Value> = history["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["path"] == format!("{REPO}/{file}"))
        .collect();
    assert_eq!(ours.len(), 1, "one download in the history: {history}");
    assert_eq!(ours[0]["source"]["kind"], "hub");
}

#[actix_web::test]
async fn a_client_that_drops_halfway_resumes_with_range() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let data = content(4 * 1024 * 1024, 9);
    let file = "Tiny-Q6_K.gguf";
    hub.put_file(REPO, file, data.clone());
    hub.set_cdn_behavior(
        REPO,
        file,
        Behavior {
            rate_bps: Some(1024 * 1024),
            ..Behavior::default()
        },
    );
    let url = svc.url(&format!("/hf/{REPO}/resolve/main/{file}"));
    let mut first = svc.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let mut got = Vec::new();
    while got.len() < data.len() / 4 {
        let chunk = first.chunk().await.unwrap().expect("more bytes");
        got.extend_from_slice(&chunk);
    }
    drop(first);
    assert_eq!(got, data[..got.len()]);

    // While the download still runs: the rest, from the growing file.
    let (_, list) = svc.get("/api/downloads").await;
    let d = list["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == format!("{REPO}/{file}"))
        .cloned()
        .expect("the miss is a download of the queue");
    assert_ne!(
        d["state"], "completed",
        "too fast to test a resume while running: {d}"
    );
    let rest = svc
        .client
        .get(&url)
        .header("Range", format!("bytes={}-", got.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    assert_eq!(
        rest.headers()["content-range"].to_str().unwrap(),
        format!("bytes {}-{}/{}", got.len(), data.len() - 1, data.len())
    );
    let rest = rest.bytes().await.unwrap();
    assert_eq!(rest.len(), data.len() - got.len());
    assert!(rest == data[got.len()..], "the resumed bytes differ");

    // The drop cancelled nothing; once in the library, Range is answered from disk.
    let id = d["id"].as_str().unwrap();
    svc.wait_state(id, "completed", LONG).await;
    wait_in_library(&svc, &format!("{REPO}/{file}")).await;
    let tail = svc
        .client
        .get(&url)
        .header("Range", "bytes=3000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), data[3_000_000..]);
}

#[actix_web::test]
async fn with_an_api_token_clients_need_it_and_the_upstream_never_sees_it() {
    let gated = RepoOptions {
        gated_token: Some("hub-secret".into()),
        ..RepoOptions::default()
    };
    let (cdn, hub, mut svc) = setup(gated, |c| {
        c.server.api_token = "lan-secret".into();
        c.hub.token = "hub-secret".into();
    })
    .await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", "Bearer lan-secret".parse().unwrap());
    svc.client = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    let data = content(300_000, 11);
    let file = "Tiny-Q2_K.gguf";
    hub.put_file(REPO, file, data.clone());
    let commit = hub.commit(REPO);

    let refused = client(&svc, None, &["download", REPO, file]).await;
    assert_eq!(refused["status"], 401, "{refused}");
    let wrong = client(&svc, Some("guess"), &["download", REPO, file]).await;
    assert_eq!(wrong["status"], 401, "{wrong}");
    let plain = reqwest::get(svc.url(&format!("/hf/api/models/{REPO}")))
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    assert!(plain.headers().contains_key("x-error-message"));
    let body: Value = plain.json().await.unwrap();
    assert!(body["error"].is_string(), "the Hub's error form: {body}");

    let got = client(&svc, Some("lan-secret"), &["download", REPO, file]).await;
    assert_eq!(got, digest(&data), "{got}");
    wait_in_library(&svc, &format!("{REPO}/{file}")).await;

    let hub_auth: Vec<Option<String>> = hub
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    let cdn_auth: Vec<Option<String>> = cdn
        .requests(&hub.cdn_path(REPO, &commit, file))
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    for a in hub_auth.iter().chain(&cdn_auth).flatten() {
        assert!(
            !a.contains("lan-secret"),
            "the client's token went upstream: {a}"
        );
    }
    assert!(
        hub_auth
            .iter()
            .any(|a| a.as_deref() == Some("Bearer hub-secret")),
        "the service's own token opened the gated repo: {hub_auth:?}"
    );
    assert!(
        cdn_auth.iter().all(Option::is_none),
        "no token to the CDN: {cdn_auth:?}"
    );
}

#[actix_web::test]
async fn a_miss_fetched_on_parallel_connections_streams_its_contiguous_prefix() {
    let (cdn, hub, svc) = setup(RepoOptions::default(), |c| {
        c.downloads.connections_per_download = 4;
    })
    .await;
    // Past the segment threshold (16 MiB): the download splits; the client must still
    // get the bytes in order, each only once it and all before it are on disk.
    let data = content(17 * 1024 * 1024 + 5, 13);
    let file = "Tiny-Q3_K_M.gguf";
    hub.put_file(REPO, file, data.clone());
    let commit = hub.commit(REPO);
    hub.set_cdn_behavior(
        REPO,
        file,
        Behavior {
            rate_bps: Some(6 * 1024 * 1024),
            ..Behavior::default()
        },
    );
    let url = svc.url(&format!("/hf/{REPO}/resolve/main/{file}"));
    let got = svc.client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let got = got.bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the streamed bytes differ");
    let cdn_path = hub.cdn_path(REPO, &commit, file);
    let ranged = cdn
        .requests(&cdn_path)
        .iter()
        .filter(|r| r.method == "GET" && r.range_start.is_some_and(|s| s > 0))
        .count();
    assert!(
        ranged >= 1,
        "the download did not split: {:?}",
        cdn.requests(&cdn_path)
    );
    // One transfer: the first connection may overshoot where the next segment starts
    // by what was in flight when the split happened (the engine's, not the mirror's).
    let sent = cdn.bytes_sent(&cdn_path);
    let size = data.len() as u64;
    assert!(
        sent >= size && sent < size + 1024 * 1024,
        "{sent} bytes sent for {size}"
    );
}

#[actix_web::test]
async fn bad_requests_get_the_hubs_error_form_and_change_nothing() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    hub.put_file(REPO, "Tiny-Q4_0.gguf", content(1000, 3));
    let cases = [
        // (method, path, status, X-Error-Code)
        (
            "GET",
            "/hf/nobody/none/resolve/main/x.gguf",
            404,
            Some("EntryNotFound"),
        ),
        (
            "HEAD",
            format!("/hf/{REPO}/resolve/main/absent.gguf").leak() as &str,
            404,
            Some("EntryNotFound"),
        ),
        (
            "GET",
            format!("/hf/{REPO}/resolve/main/.hidden").leak(),
            404,
            Some("EntryNotFound"),
        ),
        (
            "GET",
            format!("/hf/{REPO}/resolve/main/a%2F..%2F..%2Fx").leak(),
            404,
            Some("EntryNotFound"),
        ),
        (
            "GET",
            "/hf/bad%20owner/name/resolve/main/x.gguf",
            404,
            Some("RepoNotFound"),
        ),
        (
            "GET",
            "/hf/api/models/nobody/none",
            404,
            Some("RepoNotFound"),
        ),
        ("GET", "/hf/api/nothing-here", 404, Some("EntryNotFound")),
        (
            "POST",
            format!("/hf/{REPO}/resolve/main/Tiny-Q4_0.gguf").leak(),
            404,
            Some("EntryNotFound"),
        ),
    ];
    for (method, path, status, code) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = svc
            .client
            .request(method.clone(), svc.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("x-error-code").as_deref(), code, "{method} {path}");
        assert!(h("x-error-message").is_some(), "{method} {path}");
        if method != reqwest::Method::HEAD {
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        }
    }
    let range = svc
        .client
        .get(svc.url(&format!("/hf/{REPO}/resolve/main/Tiny-Q4_0.gguf")))
        .header("Range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 416);
    assert_eq!(range.headers()["content-range"], "bytes */1000");
    let (_, list) = svc.get("/api/downloads").await;
    assert_eq!(list["downloads"], json!([]), "nothing was queued");
    assert!(tree(&svc.download_dir()).is_empty(), "nothing was written");
}

/// `GET` of a mirror URL: status and body.
async fn fetch(svc: &TestService, path: &str) -> (u16, Vec<u8>) {
    let resp = svc.client.get(svc.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
    )
}

/// #22.4: a file, then a folder, of `download_dir` swapped for a symlink after the
/// library indexed it: `/hf` serves nothing from outside (the old code served the
/// link's target under the indexed file's ETag).
#[actix_web::test]
async fn a_library_file_or_folder_swapped_for_a_symlink_serves_nothing_from_outside() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let (q4, q8) = (content(300_000, 41), content(200_000, 42));
    hub.put_file(REPO, "Tiny-Q4_K_M.gguf", q4.clone());
    hub.put_file(REPO, "Tiny-Q8_0.gguf", q8.clone());
    for file in ["Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf"] {
        let id = svc
            .add(json!({ "hub": { "repo": REPO, "file": file } }))
            .await;
        svc.wait_state(&id, "completed", LONG).await;
        wait_in_library(&svc, &format!("{REPO}/{file}")).await;
    }
    let outside = tempfile::tempdir().unwrap();
    let secret = |len: usize| vec![b'S'; len];
    std::fs::write(outside.path().join("Tiny-Q4_K_M.gguf"), secret(q4.len())).unwrap();
    std::fs::write(outside.path().join("Tiny-Q8_0.gguf"), secret(q8.len())).unwrap();
    let repo_dir = svc.download_dir().join(REPO);

    // The file: gone, a link to outside in its place.
    std::fs::remove_file(repo_dir.join("Tiny-Q4_K_M.gguf")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("Tiny-Q4_K_M.gguf"),
        repo_dir.join("Tiny-Q4_K_M.gguf"),
    )
    .unwrap();
    let (s, body) = fetch(&svc, &format!("/hf/{REPO}/resolve/main/Tiny-Q4_K_M.gguf")).await;
    assert!(
        !body.contains(&b'S') || body == q4,
        "outside bytes served ({s})"
    );
    assert_eq!((s, body == q4), (200, true), "the upstream's bytes instead");

    // The folder: moved away, a link to outside in its place.
    std::fs::rename(&repo_dir, svc.download_dir().join("bartowski/moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), &repo_dir).unwrap();
    let (s, body) = fetch(&svc, &format!("/hf/{REPO}/resolve/main/Tiny-Q8_0.gguf")).await;
    assert!(body != secret(q8.len()), "outside bytes served ({s})");
    assert_eq!((s, body == q8), (200, true), "the upstream's bytes instead");
    let got = client(&svc, None, &["download", REPO, "Tiny-Q8_0.gguf"]).await;
    assert_eq!(got, digest(&q8), "huggingface_hub");
}

/// #22.7: a miss never follows a download of another commit of its path (c1 running,
/// c2 asked for): the answer's bytes are the version its headers name.
#[actix_web::test]
async fn a_miss_never_follows_a_download_of_another_commit() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let file = "Tiny-Q4_K_M.gguf";
    let (v1, v2) = (content(3 * MIB, 51), content(3 * MIB, 52));
    hub.put_file(REPO, file, v1.clone());
    let c1 = hub.commit(REPO);
    hub.set_cdn_behavior_at(
        REPO,
        &c1,
        file,
        Behavior {
            rate_bps: Some(256 * 1024),
            ..Behavior::default()
        },
    );
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": file } }))
        .await;
    svc.wait_past(&id, 0, LONG).await;
    let c2 = hub.put_file(REPO, file, v2.clone());
    assert_ne!(c1, c2);
    let got = client(&svc, None, &["download", REPO, file, &c2]).await;
    assert_eq!(got, digest(&v2), "c2 asked for, while c1 is fetched");
    let got = client(&svc, None, &["download", REPO, file]).await;
    assert_eq!(got, digest(&v2), "main (now c2), while c1 is fetched");
    let url = svc.url(&format!("/hf/{REPO}/resolve/{c2}/{file}"));
    let head = svc.client.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["x-repo-commit"], c2.as_str());
}

/// #22.7: another program's download writing the same path (aria2's `addUri` with
/// `dir=owner/name`) is never followed by a miss.
#[actix_web::test]
async fn a_miss_never_follows_an_aria2_download_into_owner_name() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let other = content(2 * MIB, 53);
    let cdn = hub.cdn();
    cdn.add_file(
        "other.bin",
        other.clone(),
        Behavior {
            rate_bps: Some(256 * 1024),
            ..Behavior::default()
        },
    );
    let q8 = content(2 * MIB, 54);
    hub.put_file(REPO, "Tiny-Q8_0.gguf", q8.clone());
    let rpc = json!({"jsonrpc": "2.0", "id": "1", "method": "aria2.addUri",
        "params": [[cdn.url("other.bin")], {"dir": REPO, "out": "Tiny-Q8_0.gguf"}]});
    let answer: Value = svc
        .client
        .post(svc.url("/jsonrpc"))
        .json(&rpc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["result"].is_string(), "{answer}");
    common::wait::eventually(LONG, || async {
        let started = cdn.bytes_sent("other.bin") > 0;
        started
            .then_some(())
            .ok_or_else(|| "aria2's download never started".to_owned())
    })
    .await;
    let got = client(&svc, None, &["download", REPO, "Tiny-Q8_0.gguf"]).await;
    assert_eq!(
        got,
        digest(&q8),
        "an aria2 download of other bytes was followed"
    );
}

/// #22.8: a hundred clients asking for one file at once, some of them after its
/// download completed and before the library indexed it (plain, then while a rescan of
/// many files holds the library): every one gets the file, none a 409.
#[actix_web::test]
async fn a_hundred_concurrent_misses_all_get_the_file_also_during_a_scan() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    // Many hand-placed files: the rescan below walks and reads them all.
    let junk = svc.download_dir().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    for i in 0..3000 {
        std::fs::write(junk.join(format!("f{i}.gguf")), format!("not gguf {i}")).unwrap();
    }
    for (round, file) in ["Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf"].iter().enumerate() {
        let data = content(512 * 1024, 60 + round as u64);
        hub.put_file(REPO, file, data.clone());
        // The first round plain, the second while a rescan runs.
        let scan = (round == 1).then(|| {
            let (client, url) = (svc.client.clone(), svc.url("/api/library/rescan"));
            tokio::spawn(async move { client.post(url).send().await.map(|r| r.status()) })
        });
        let path = format!("/hf/{REPO}/resolve/main/{file}");
        let mut asks = Vec::new();
        for i in 0..100u64 {
            let (client, url) = (svc.client.clone(), svc.url(&path));
            asks.push(tokio::spawn(async move {
                // Spread over a second: early ones start the download, later ones
                // arrive while it runs and after it completed.
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                let resp = client.get(url).send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.bytes().await.unwrap_or_default())
            }));
        }
        for (i, ask) in asks.into_iter().enumerate() {
            let (status, body) = ask.await.unwrap();
            assert_eq!(
                status,
                200,
                "{file}: client {i}: {}",
                String::from_utf8_lossy(&body)
            );
            assert!(body == data, "{file}: client {i}: other bytes");
        }
        if let Some(scan) = scan {
            let status = scan.await.unwrap().unwrap();
            assert_eq!(status, 200, "the rescan");
        }
    }
}

/// #22.9: a second service whose Hub is the first service's `/hf` (an endpoint with a
/// path) serves a file through the chain to huggingface_hub.
#[actix_web::test]
async fn a_service_chained_to_another_ones_mirror_serves_through_it() {
    let (_cdn, hub, first) = setup(RepoOptions::default(), |_| {}).await;
    let data = content(1024 * 1024 + 7, 71);
    hub.put_file(REPO, "Tiny-Q4_K_M.gguf", data.clone());
    let endpoint = first.url("/hf");
    let second = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let info = client(&second, None, &["info", REPO]).await;
    assert_eq!(info["sha"], hub.commit(REPO).as_str(), "{info}");
    let got = client(&second, None, &["download", REPO, "Tiny-Q4_K_M.gguf"]).await;
    assert_eq!(got, digest(&data));
    wait_in_library(&second, &format!("{REPO}/Tiny-Q4_K_M.gguf")).await;
    wait_in_library(&first, &format!("{REPO}/Tiny-Q4_K_M.gguf")).await;
}

/// #22.11: the pagination `Link` of a relayed tree names the host the client used; a
/// `Forwarded`/`X-Forwarded-Host` is believed only from a peer in `trusted_proxies`.
#[actix_web::test]
async fn forwarded_headers_choose_the_links_host_only_from_trusted_proxies() {
    for trusted in [false, true] {
        let (_cdn, hub, svc) = setup(RepoOptions::default(), |c| {
            if trusted {
                c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        })
        .await;
        for i in 0..3 {
            hub.put_file(REPO, &format!("f{i}.json"), b"{}".to_vec());
        }
        hub.set_page_size(1);
        let resp = svc
            .client
            .get(svc.url(&format!("/hf/api/models/{REPO}/tree/main")))
            .header("X-Forwarded-Host", "evil.example")
            .header("X-Forwarded-Proto", "https")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let link = resp.headers()["link"].to_str().unwrap().to_owned();
        let want = if trusted {
            "<https://evil.example/hf/api/models/".to_owned()
        } else {
            format!("<{}/hf/api/models/", svc.base)
        };
        assert!(link.starts_with(&want), "trusted {trusted}: {link}");
        if !trusted {
            let resp = svc
                .client
                .get(svc.url(&format!("/hf/api/models/{REPO}/tree/main")))
                .header("Forwarded", "host=evil.example;proto=https")
                .send()
                .await
                .unwrap();
            let link = resp.headers()["link"].to_str().unwrap().to_owned();
            assert!(link.starts_with(&want), "Forwarded: {link}");
        }
    }
}

/// #22.7: a path held by another program's file (hand-placed, not from the Hub): the
/// answer is the upstream's version, relayed and not stored (the old code answered 409),
/// and the relay keeps to `allowed_hosts` like the engine (a CDN off the list: refused,
/// never asked).
#[actix_web::test]
async fn a_path_held_by_another_programs_file_is_relayed_within_allowed_hosts() {
    for cdn_allowed in [true, false] {
        let cdn = Arc::new(Upstream::start());
        let hub = HubEmu::start(cdn.clone());
        hub.add_repo(REPO, RepoOptions::default());
        let data = content(700_000, 81);
        let file = "Tiny-Q4_K_M.gguf";
        hub.put_file(REPO, file, data.clone());
        let endpoint = hub.endpoint();
        let hub_host = format!("127.0.0.1:{}", hub.addr().port());
        let svc = TestService::start(move |c| {
            c.hub.endpoint = endpoint;
            if !cdn_allowed {
                c.downloads.allowed_hosts = vec![hub_host];
            }
        })
        .await;
        let mine = svc.download_dir().join(REPO);
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join(file), vec![b'M'; data.len()]).unwrap();
        let (s, body) = fetch(&svc, &format!("/hf/{REPO}/resolve/main/{file}")).await;
        let cdn_path = hub.cdn_path(REPO, &hub.commit(REPO), file);
        if cdn_allowed {
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            assert!(body == data, "not the upstream's bytes");
            let part = svc
                .client
                .get(svc.url(&format!("/hf/{REPO}/resolve/main/{file}")))
                .header("Range", "bytes=1000-1999")
                .send()
                .await
                .unwrap();
            assert_eq!(part.status(), 206);
            assert_eq!(part.bytes().await.unwrap(), data[1000..2000]);
        } else {
            assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
            assert!(cdn.requests(&cdn_path).is_empty(), "the CDN was asked");
        }
        assert_eq!(
            std::fs::read(mine.join(file)).unwrap(),
            vec![b'M'; data.len()],
            "the other program's file was changed"
        );
    }
}

/// Red team, round four: a trusted proxy's forwarded values are a scheme and a host,
/// or they are not used: `X-Forwarded-Host: a>; rel="next", <http://evil/x` added a
/// link, `X-Forwarded-Proto: javascript` made one; a client's own `Host` likewise.
#[actix_web::test]
async fn forwarded_values_that_are_no_scheme_and_host_add_no_link() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for i in 0..3 {
        hub.put_file(REPO, &format!("f{i}.json"), b"{}".to_vec());
    }
    hub.set_page_size(1);
    let tree = svc.url(&format!("/hf/api/models/{REPO}/tree/main"));
    for (name, value) in [
        (
            "X-Forwarded-Host",
            r#"a>; rel="next", <http://evil.example/x"#,
        ),
        ("X-Forwarded-Host", "user@evil.example/path?"),
        ("X-Forwarded-Proto", "javascript"),
        (
            "Forwarded",
            r#"host="a>, <http://evil.example/";proto=https"#,
        ),
    ] {
        let resp = svc
            .client
            .get(&tree)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}: {value}");
        let links: Vec<String> = resp
            .headers()
            .get_all("link")
            .iter()
            .map(|l| l.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(links.len(), 1, "{name}: {value}: {links:?}");
        let link = &links[0];
        assert!(
            link.starts_with(&format!("<{}/hf/api/models/", svc.base))
                && !link.contains("evil")
                && !link.contains("javascript")
                && link.matches('<').count() == 1,
            "{name}: {value}: {link}"
        );
    }
}

/// Red team, round four: a hostile Hub answering model info and trees as `text/html`
/// with a script had it relayed as HTML on this service's own origin (a page script
/// there passes the Origin guard and reads the page's token). The relay is JSON, never
/// sniffed, and sandboxed.
#[actix_web::test]
async fn a_hubs_html_is_never_relayed_as_a_page() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostile = common::upstream::Server::start("html-hub", |mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = "<html><script>fetch('/api/downloads',{method:'POST'})</script></html>";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    });
    let endpoint = format!("http://{}", hostile.addr());
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    for path in [
        "/hf/api/models/xss/x",
        "/hf/api/models/xss/x/revision/main",
        "/hf/api/models/xss/x/tree/main",
    ] {
        let resp = svc.client.get(svc.url(path)).send().await.unwrap();
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(
            h("content-type").starts_with("application/json"),
            "{path}: {}",
            h("content-type")
        );
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert!(h("content-security-policy").contains("sandbox"), "{path}");
    }
}

/// Red team A, through the API alone: a verified Hub download is deleted from the
/// library, an aria2 download (`dir=owner/name`) puts other bytes of the same size at
/// its path, and that download is forgotten. The Hub download's record still names
/// the path, but no longer vouches for what is there: the mirror answers the commit's
/// bytes, never the file on disk under the old sha256.
#[actix_web::test]
async fn a_completed_download_no_longer_vouches_for_what_replaced_its_file() {
    let (_cdn, hub, svc) = setup(RepoOptions::default(), |_| {}).await;
    let file = "Tiny-Q4_K_M.gguf";
    let data = content(300_000, 71);
    hub.put_file(REPO, file, data.clone());
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": file } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let path = format!("{REPO}/{file}");
    let list = || async { svc.get("/api/library").await.1 };
    common::wait::library_file_where(LONG, list, &path, "listed", |_| true).await;
    let (s, v) = svc.delete(&format!("/api/library/{path}")).await;
    assert_eq!(s, 204, "{v}");
    let mut other = data.clone();
    other[..16].copy_from_slice(b"other bytes here");
    let cdn = hub.cdn();
    cdn.add_file("other.bin", other.clone(), Behavior::default());
    let rpc = json!({"jsonrpc": "2.0", "id": "1", "method": "aria2.addUri",
        "params": [[cdn.url("other.bin")], {"dir": REPO, "out": file}]});
    let answer: Value = svc
        .client
        .post(svc.url("/jsonrpc"))
        .json(&rpc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["result"].is_string(), "{answer}");
    let (_, all) = svc.get("/api/downloads").await;
    let aria2 = all["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] != id.as_str())
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .expect("the aria2 download");
    svc.wait_state(&aria2, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(&path)),
        sha256_hex(&other)
    );
    let (s, v) = svc.delete(&format!("/api/downloads/{aria2}")).await;
    assert!(s < 300, "forget the aria2 download: {s} {v}");
    assert!(svc.download_dir().join(&path).exists(), "its file is kept");
    let (s, body) = fetch(&svc, &format!("/hf/{REPO}/resolve/main/{file}")).await;
    assert_eq!(s, 200);
    assert!(
        body == data,
        "the mirror served other bytes (sha {}) as the verified commit",
        sha256_hex(&body)
    );
}
