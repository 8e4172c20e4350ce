//! HuggingFace Hub downloads against the emulated Hub (tests/it/common/hub.rs) and its CDN.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::*;
use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn hub() -> (HubEmu, Arc<Upstream>) {
    let cdn = Arc::new(Upstream::start());
    (HubEmu::start(cdn.clone()), cdn)
}

fn gguf_repo(hub: &HubEmu, repo: &str, files: &[(&str, usize)]) -> Vec<(String, Vec<u8>)> {
    hub.add_repo(
        repo,
        RepoOptions {
            downloads: 1000,
            likes: 10,
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    files
        .iter()
        .enumerate()
        .map(|(i, (name, size))| {
            let data = content(*size, 1000 + i as u64);
            hub.put_file(repo, name, data.clone());
            (name.to_string(), data)
        })
        .collect()
}

async fn start_with_hub(hub: &HubEmu) -> TestService {
    let endpoint = hub.endpoint();
    TestService::start(move |c| c.hub.endpoint = endpoint).await
}

fn quant_names(files: &Value) -> Vec<String> {
    files["quantizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn search_and_quantization_grouping() {
    let (hub, _cdn) = hub();
    gguf_repo(
        &hub,
        "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
        &[
            ("tinyllama-1.1b-chat-v1.0.Q2_K.gguf", 2000),
            ("tinyllama-1.1b-chat-v1.0.Q3_K_M.gguf", 3000),
            ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", 4000),
            ("tinyllama-1.1b-chat-v1.0.Q5_K_M.gguf", 5000),
            ("tinyllama-1.1b-chat-v1.0.Q6_K.gguf", 6000),
            ("tinyllama-1.1b-chat-v1.0.Q8_0.gguf", 8000),
            ("README.md", 100),
            ("config.json", 50),
        ],
    );
    gguf_repo(
        &hub,
        "bartowski/Big-Model-GGUF",
        &[
            ("Big-Model-IQ3_M.gguf", 3000),
            ("Big-Model-F16/Big-Model-F16-00001-of-00002.gguf", 9000),
            ("Big-Model-F16/Big-Model-F16-00002-of-00002.gguf", 7000),
        ],
    );
    gguf_repo(
        &hub,
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        &[
            ("qwen2.5-0.5b-instruct-q4_k_m.gguf", 4000),
            ("qwen2.5-0.5b-instruct-fp16.gguf", 9000),
        ],
    );
    hub.add_repo(
        "someone/tinyllama-safetensors",
        RepoOptions {
            downloads: 5000,
            ..Default::default()
        },
    );
    hub.put_file(
        "someone/tinyllama-safetensors",
        "model.safetensors",
        content(100, 1),
    );
    hub.set_page_size(3);
    let svc = start_with_hub(&hub).await;

    let (s, v) = svc.get("/api/hub/search?q=tinyllama&limit=20").await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
            "someone/tinyllama-safetensors"
        ],
        "GGUF first"
    );
    let m = &v["models"][0];
    assert_eq!(m["downloads"], 1000);
    assert_eq!(m["likes"], 10);
    assert_eq!(m["gated"], false);
    let (_, only) = svc.get("/api/hub/search?q=tinyllama&gguf=true").await;
    assert_eq!(only["models"].as_array().unwrap().len(), 1);

    // Three pages of tree (page size 3) are followed.
    let (s, files) = svc
        .get("/api/hub/models/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/files")
        .await;
    assert_eq!(s, 200, "{files}");
    assert_eq!(files["files"].as_array().unwrap().len(), 8);
    assert_eq!(
        quant_names(&files),
        ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    );
    let q4 = &files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf")
        .unwrap();
    assert_eq!(
        q4["sha256"],
        hub.sha256(
            "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
            "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
        )
        .unwrap()
    );
    assert_eq!(q4["size"], 4000);
    assert_eq!(q4["quantization"], "Q4_K_M");

    let (_, files) = svc
        .get("/api/hub/models/bartowski/Big-Model-GGUF/files")
        .await;
    assert_eq!(quant_names(&files), ["IQ3_M", "F16"]);
    let f16 = &files["quantizations"][1];
    assert_eq!(f16["size"], 16000);
    assert_eq!(f16["files"].as_array().unwrap().len(), 2);

    let (_, files) = svc
        .get("/api/hub/models/Qwen/Qwen2.5-0.5B-Instruct-GGUF/files")
        .await;
    // Named by the tag llama.cpp's `-hf` reaches the file with: `fp16` is `FP16` (the
    // earlier `F16` matched no file there: `F16[.-]` is not in `…-fp16.gguf`).
    assert_eq!(quant_names(&files), ["Q4_K_M", "FP16"]);

    let (_, files) = svc
        .get("/api/hub/models/someone/tinyllama-safetensors/files")
        .await;
    assert_eq!(files["quantizations"], json!([]));
    assert_eq!(files["files"].as_array().unwrap().len(), 1);

    let (s, v) = svc.get("/api/hub/models/nobody/nothing/files").await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = svc.get("/api/hub/models/a/..%2Fb/files").await;
    assert!(s == 422 || s == 404, "{s} {v}");
}

#[actix_web::test]
async fn a_split_quantization_is_queued_whole_verified_and_filed_under_the_repo() {
    let (hub, cdn) = hub();
    let files = gguf_repo(
        &hub,
        "bartowski/Big-Model-GGUF",
        &[
            ("Big-Model-Q2_K.gguf", 300_000),
            ("Big-Model-F16/Big-Model-F16-00001-of-00002.gguf", 3 * MIB),
            ("Big-Model-F16/Big-Model-F16-00002-of-00002.gguf", 2 * MIB),
        ],
    );
    let svc = start_with_hub(&hub).await;
    let (s, v) = svc
        .post(
            "/api/hub/models/bartowski/Big-Model-GGUF/download",
            json!({"quantization": "f16"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let downloads = v["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 2, "both parts are queued");
    let commit = hub.commit("bartowski/Big-Model-GGUF");
    for d in downloads {
        assert_eq!(d["source"]["kind"], "hub");
        assert_eq!(d["source"]["repo"], "bartowski/Big-Model-GGUF");
        assert_eq!(
            d["source"]["commit"],
            commit.as_str(),
            "all parts pinned to one commit"
        );
        assert!(d["sha256"].as_str().is_some_and(|s| s.len() == 64), "{d}");
    }
    for d in downloads {
        let id = d["id"].as_str().unwrap();
        let done = svc.wait_state(id, "completed", LONG).await;
        let file = done["source"]["file"].as_str().unwrap().to_owned();
        let data = &files.iter().find(|(n, _)| *n == file).unwrap().1;
        let on_disk = svc
            .download_dir()
            .join("bartowski/Big-Model-GGUF")
            .join(&file);
        assert_eq!(file_sha256(&on_disk), sha256_hex(data), "{file}");
        assert_eq!(done["path"], format!("bartowski/Big-Model-GGUF/{file}"));
    }
    let (s, v) = svc
        .post(
            "/api/hub/models/bartowski/Big-Model-GGUF/download",
            json!({"quantization": "Q9_X"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    // The CDN never saw a token (none is set here, and none may leak).
    for path in [
        "Big-Model-F16/Big-Model-F16-00001-of-00002.gguf",
        "Big-Model-F16/Big-Model-F16-00002-of-00002.gguf",
    ] {
        let reqs = cdn.requests(&hub.cdn_path("bartowski/Big-Model-GGUF", &commit, path));
        assert!(!reqs.is_empty(), "the CDN got no request for {path}");
        assert!(
            reqs.iter().all(|r| r.authorization.is_none()),
            "a token went to the CDN: {reqs:?}"
        );
    }
}

#[actix_web::test]
async fn a_gated_repo_without_a_token_fails_with_a_clear_message() {
    let (hub, _cdn) = hub();
    hub.add_repo(
        "meta/gated-GGUF",
        RepoOptions {
            gated_token: Some("hf_good".into()),
            ..Default::default()
        },
    );
    hub.put_file("meta/gated-GGUF", "m-Q4_K_M.gguf", content(1000, 1));
    let svc = start_with_hub(&hub).await;
    let id = svc
        .add(json!({"hub": {"repo": "meta/gated-GGUF", "file": "m-Q4_K_M.gguf"}}))
        .await;
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "unauthorized");
    let msg = d["error"]["message"].as_str().unwrap();
    assert!(msg.contains("HF_TOKEN") && msg.contains("gated"), "{msg}");
    assert!(tree(&svc.download_dir())
        .iter()
        .all(|f| !f.ends_with(".gguf")));

    // The same through the quantization route: queued, then failed the same way.
    let (s, v) = svc
        .post(
            "/api/hub/models/meta/gated-GGUF/download",
            json!({"quantization": "Q4_K_M", "overwrite": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["downloads"][0]["id"].as_str().unwrap().to_owned();
    let d = svc.wait_state(&id, "failed", LONG).await;
    assert_eq!(d["error"]["kind"], "unauthorized");
}

#[tokio::test]
async fn a_gated_repo_with_hf_token_in_the_environment_completes_and_the_cdn_never_sees_it() {
    let (hub, cdn) = hub();
    hub.add_repo(
        "meta/gated-GGUF",
        RepoOptions {
            gated_token: Some("hf_good".into()),
            ..Default::default()
        },
    );
    let data = content(2 * MIB, 2);
    let commit = hub.put_file("meta/gated-GGUF", "m-Q4_K_M.gguf", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", "hf_good")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    p.wait_healthy().await;
    let (s, v) = p
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "meta/gated-GGUF", "file": "m-Q4_K_M.gguf"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    p.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    let file = dir.path().join("downloads/meta/gated-GGUF/m-Q4_K_M.gguf");
    assert_eq!(file_sha256(&file), sha256_hex(&data));
    let resolves: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(
        resolves
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_good")),
        "{resolves:?}"
    );
    let cdn_reqs = cdn.requests(&hub.cdn_path("meta/gated-GGUF", &commit, "m-Q4_K_M.gguf"));
    assert!(!cdn_reqs.is_empty(), "the CDN got no request");
    assert!(
        cdn_reqs.iter().all(|r| r.authorization.is_none()),
        "the token reached the CDN: {cdn_reqs:?}"
    );
}

#[actix_web::test]
async fn a_revision_moved_mid_download_does_not_mix_revisions() {
    let (hub, _cdn) = hub();
    let repo = "org/moving-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    let old = content(6 * MIB, 3);
    let first = hub.put_file(repo, "m-Q8_0.gguf", old.clone());
    // Slow, and the link expires halfway: the resume must resolve again.
    hub.set_cdn_behavior(
        repo,
        "m-Q8_0.gguf",
        Behavior {
            rate_bps: Some(4 * MIB as u64),
            expire_after: Some(3 * MIB as u64),
            ..Default::default()
        },
    );
    let svc = start_with_hub(&hub).await;
    let id = svc
        .add(json!({"hub": {"repo": repo, "file": "m-Q8_0.gguf"}}))
        .await;
    svc.wait_until(&id, LONG, "some bytes", |d| {
        d["bytes_done"].as_u64().unwrap() > 0
    })
    .await;
    // main moves to new content while we download.
    let second = hub.put_file(repo, "m-Q8_0.gguf", content(7 * MIB, 4));
    assert_ne!(first, second);
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["source"]["commit"], first.as_str());
    assert_eq!(d["sha256"], sha256_hex(&old));
    let file = svc.download_dir().join(repo).join("m-Q8_0.gguf");
    assert_eq!(
        file_sha256(&file),
        sha256_hex(&old),
        "the file mixes revisions"
    );
    let resolves: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(
        resolves.len() >= 2,
        "the expired link was resolved again: {resolves:?}"
    );
    assert!(
        resolves[1..].iter().all(|r| r.path.contains(&first)),
        "later resolves use the pinned commit: {resolves:?}"
    );
}

#[actix_web::test]
async fn a_cdn_link_that_expires_halfway_is_resolved_again_without_starting_over() {
    let (hub, cdn) = hub();
    let repo = "org/cdn-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    let size = 8 * MIB;
    let data = content(size, 5);
    let commit = hub.put_file(repo, "m-Q4_0.gguf", data.clone());
    hub.set_cdn_behavior(
        repo,
        "m-Q4_0.gguf",
        Behavior {
            expire_after: Some(4 * MIB as u64),
            ..Default::default()
        },
    );
    let svc = start_with_hub(&hub).await;
    let id = svc
        .add(json!({"hub": {"repo": repo, "file": "m-Q4_0.gguf"}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(repo).join("m-Q4_0.gguf")),
        sha256_hex(&data)
    );
    let path = hub.cdn_path(repo, &commit, "m-Q4_0.gguf");
    let reqs = cdn.requests(&path);
    let resumed = reqs
        .iter()
        .find(|r| r.status == 206 && r.range_start.is_some_and(|s| s > 0))
        .expect("a ranged resume on a fresh link");
    assert!(
        resumed
            .range_start
            .is_some_and(|s| s >= 4 * MIB as u64 - 256 * 1024),
        "{reqs:?}"
    );
    assert!(
        cdn.bytes_sent(&path) <= size as u64 + 256 * 1024,
        "started over: {}",
        cdn.bytes_sent(&path)
    );
}

#[actix_web::test]
async fn an_expiring_link_with_parallel_connections_is_resolved_again() {
    let (hub, cdn) = hub();
    let repo = "org/par-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    let size = 32 * MIB;
    let data = content(size, 6);
    let commit = hub.put_file(repo, "m-Q4_K_M.gguf", data.clone());
    hub.set_cdn_behavior(
        repo,
        "m-Q4_K_M.gguf",
        Behavior {
            expire_after: Some(12 * MIB as u64),
            ..Default::default()
        },
    );
    let svc = TestService::start({
        let e = hub.endpoint();
        move |c| {
            c.hub.endpoint = e;
            c.downloads.connections_per_download = 4;
        }
    })
    .await;
    let id = svc
        .add(json!({"hub": {"repo": repo, "file": "m-Q4_K_M.gguf"}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(repo).join("m-Q4_K_M.gguf")),
        sha256_hex(&data)
    );
    let path = hub.cdn_path(repo, &commit, "m-Q4_K_M.gguf");
    assert!(
        cdn.requests(&path).iter().any(|r| r.status == 403),
        "the link did expire"
    );
    // Unthrottled loopback connections run ahead into socket buffers, which an abort
    // throws away; starting over would cost the whole file again.
    let sent = cdn.bytes_sent(&path);
    println!("{sent} bytes sent for a {size}-byte file");
    assert!(
        sent < size as u64 + (size / 2) as u64,
        "segments started over: {sent}"
    );
}

#[actix_web::test]
async fn hub_rate_limits_are_waited_out() {
    let (hub, _cdn) = hub();
    let repo = "org/busy-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    let data = content(100_000, 7);
    hub.put_file(repo, "m-Q4_0.gguf", data.clone());
    let svc = start_with_hub(&hub).await;
    hub.fail_next(vec![(429, Some(1))]);
    let started = Instant::now();
    let id = svc
        .add(json!({"hub": {"repo": repo, "file": "m-Q4_0.gguf"}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After of the 429 not honoured"
    );
    assert_eq!(
        file_sha256(&svc.download_dir().join(repo).join("m-Q4_0.gguf")),
        sha256_hex(&data)
    );
}

#[actix_web::test]
async fn hub_names_are_validated() {
    let (hub, _cdn) = hub();
    let svc = start_with_hub(&hub).await;
    for (repo, file) in [
        ("../etc", "x.gguf"),
        ("a/b/c", "x.gguf"),
        ("a/b", "../x.gguf"),
        ("a/b", "/abs.gguf"),
        ("a/b", ".hidden"),
    ] {
        let (s, v) = svc
            .post(
                "/api/downloads",
                json!({"hub": {"repo": repo, "file": file}}),
            )
            .await;
        assert_eq!(s, 422, "{repo} {file}: {v}");
    }
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": "a/b", "file": "x.gguf"}, "url": "http://x/y"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        tree(&svc.download_dir()).is_empty(),
        "files were written: {:?}",
        tree(&svc.download_dir())
    );
}

/// A hostile Hub: every request is answered 200 with JSON that never ends (an array of
/// plausible entries, or for model info an object whose `siblings` never close), as fast
/// as the socket takes it. Counts the body bytes it got out.
pub(crate) fn endless_hub() -> (common::upstream::Server, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let server = common::upstream::Server::start("endless-hub", move |mut stream| {
        let sent = counter.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let info = String::from_utf8_lossy(&head).contains("/revision/");
            let start = if info {
                format!("{{\"sha\":\"{}\",\"siblings\":[", "a".repeat(40))
            } else {
                "[".to_owned()
            };
            let entry = r#"{"id":"o/n","type":"file","path":"x.gguf","rfilename":"x.gguf","size":1,"tags":["gguf"]},"#;
            let block = entry.repeat(64 * 1024 / entry.len());
            let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            out.push_str(&chunk(&start));
            let block = chunk(&block);
            if stream.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            while stream.write_all(block.as_bytes()).await.is_ok() {
                sent.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
        }
    });
    (server, sent)
}

/// Runs one call against the endless Hub: it must fail within seconds with the cap's
/// error, having taken little more than `cap` bytes (plus what the sockets buffer).
async fn refused_within_cap<T: std::fmt::Debug>(
    sent: &std::sync::atomic::AtomicU64,
    what: &str,
    cap: usize,
    call: impl std::future::Future<Output = Result<T, model_manager::hub::HubError>>,
) {
    use std::sync::atomic::Ordering;
    sent.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: still reading the endless body after 20 s"));
    let e = out.expect_err(what);
    assert!(e.to_string().contains("more than"), "{what}: {e}");
    // Let the server notice the closed socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = sent.load(Ordering::Relaxed);
    assert!(
        taken <= (cap + 24 * MIB) as u64,
        "{what}: {taken} bytes went out for a cap of {cap}"
    );
    eprintln!(
        "{what}: refused after {taken} bytes in {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn an_endless_answer_of_the_hub_is_refused_at_its_cap() {
    use model_manager::http::{CAP_MODEL_INFO, CAP_SEARCH, CAP_TREE_PAGE};
    let (server, sent) = endless_hub();
    let endpoint = format!("http://{}", server.addr());
    let client = model_manager::hub::HubClient::new(&endpoint, None).unwrap();
    refused_within_cap(&sent, "search", CAP_SEARCH, client.search("x", 20, false)).await;
    refused_within_cap(
        &sent,
        "file list",
        CAP_TREE_PAGE,
        client.list_files("o/n", "main"),
    )
    .await;
    refused_within_cap(
        &sent,
        "update check",
        CAP_MODEL_INFO,
        client.repo_revision("o/n", "main"),
    )
    .await;
    refused_within_cap(
        &sent,
        "mirror relay",
        CAP_MODEL_INFO,
        client.relay_api(("o/n", "", ""), model_manager::hub::MAX_RELAYED, None),
    )
    .await;

    // Through the service: an error answer, not a service that grows.
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let started = Instant::now();
    let (s, v) = svc.get("/api/hub/search?q=x").await;
    assert!(s >= 500, "{s} {v}");
    let (s, v) = svc.get("/api/hub/models/o/n/files").await;
    assert!(s >= 500, "{s} {v}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Red team, round four: each whole answer of a hostile Hub is capped, but not their
/// sum: 48 mirror-info requests at once to an endless Hub grew the service to 1.5 GB.
/// At most a few whole answers are read at a time, so the peak stays bounded however
/// many clients ask.
#[actix_web::test]
async fn many_endless_answers_at_once_cost_a_bounded_memory() {
    let (hostile, _sent) = endless_hub();
    let (_dir, _config, _port, proc) = Proc::start(&format!(
        "[hub]\nendpoint = \"http://{}\"\n",
        hostile.addr()
    ))
    .await;
    let client = test_client();
    let asks = (0..48).map(|i| {
        let url = format!("{}/hf/api/models/evil/x{i}", proc.base);
        let client = client.clone();
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let answers = futures_util::future::join_all(asks).await;
    for a in &answers {
        let status = a.as_ref().expect("an answer");
        assert!(*status >= 500, "an endless body is refused: {status}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.pid())).unwrap();
    let peak_mib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024;
    eprintln!("peak RSS after 48 endless answers at once: {peak_mib} MiB");
    assert!(peak_mib < 500, "peak RSS {peak_mib} MiB");
}
