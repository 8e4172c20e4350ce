//! The Ollama registry routes (`/v2`), driven with the exact request sequence of
//! `ollama pull --insecure box:8080/owner/name:TAG` (no Ollama binary can be had here;
//! every step below cites the Ollama source it follows, ollama/ollama at fb30760):
//! the manifest with its `Accept` header, then per layer and the config a `HEAD`, a
//! `GET` without `Range` for the blob's location, and ranged `GET`s of Ollama's parts,
//! each blob checked against its digest as Ollama checks it.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-Chat-GGUF";
/// `server/images.go`, `pullModelManifest`.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `server/images.go`, `makeRequest` (the version aside).
const USER_AGENT: &str = "ollama/0.13.0 (amd64 linux) Go/go1.24.0";
/// `server/download.go`: `numDownloadParts`, `minDownloadPartSize`, `maxDownloadPartSize`
/// (`format.MegaByte` is 1000 * 1000).
const PARTS: u64 = 16;
const MIN_PART: u64 = 100 * 1000 * 1000;
const MAX_PART: u64 = 1000 * 1000 * 1000;

/// The table the service maps chat templates with (its source of truth in the repo).
fn automap() -> Vec<Value> {
    let table: Value =
        serde_json::from_str(include_str!("../../src/doors/mirror/registry/automap.json"))
            .expect("automap.json");
    table["entries"].as_array().expect("entries").clone()
}

/// The automap entry for ChatML-like Qwen 2.5 (any entry with a stop list would do).
fn entry_with_params() -> Value {
    automap()
        .into_iter()
        .find(|e| {
            e["params"]["stop"].is_array() && e["template"].as_str().is_some_and(|t| !t.is_empty())
        })
        .expect("an entry with stop words")
}

fn gstr(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

/// A GGUF (v3, no tensors) with an architecture, a name and `template` as its
/// `tokenizer.chat_template`, then `filler` bytes: a model file as far as any reader
/// of its header can tell.
fn tiny_gguf(template: &str, filler: usize, seed: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(3u64.to_le_bytes());
    for (k, v) in [
        ("general.architecture", "llama"),
        ("general.name", "Tiny Chat"),
        ("tokenizer.chat_template", template),
    ] {
        out.extend(gstr(k));
        out.extend(8u32.to_le_bytes());
        out.extend(gstr(v));
    }
    out.extend(content(filler, seed));
    out
}

/// Ollama's parts of a blob of `total` bytes (`server/download.go`, `Prepare`):
/// `(offset, size)`.
fn ollama_parts(total: u64) -> Vec<(u64, u64)> {
    let mut size = (total / PARTS).clamp(MIN_PART, MAX_PART);
    let mut parts = Vec::new();
    let mut offset = 0;
    while offset < total {
        if offset + size > total {
            size = total - offset;
        }
        parts.push((offset, size));
        offset += size;
    }
    parts
}

#[test]
fn ollama_parts_are_its_arithmetic() {
    assert_eq!(ollama_parts(1000), vec![(0, 1000)]);
    assert_eq!(
        ollama_parts(250_000_000),
        vec![
            (0, 100_000_000),
            (100_000_000, 100_000_000),
            (200_000_000, 50_000_000)
        ]
    );
    // 16 parts up to 16 GB; past that, parts of 1 GB.
    assert_eq!(ollama_parts(8_000_000_000).len(), 16);
    assert_eq!(ollama_parts(20_000_000_000).len(), 20);
    assert!(ollama_parts(20_000_000_001)
        .iter()
        .all(|p| p.1 == 1_000_000_000 || p.0 + p.1 == 20_000_000_001));
}

/// What a pull got: the manifest, and every blob by digest.
struct Pulled {
    manifest: Value,
    blobs: BTreeMap<String, Vec<u8>>,
}

/// A failed step of a pull: the status and body the registry answered.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

/// `ollama pull --insecure {base}/{repo}:{tag}`, step by step.
async fn ollama_pull(base: &str, repo: &str, tag: &str) -> Result<Pulled, Refused> {
    // `makeRequest` uses a fresh `http.Client` whose redirect policy, for blobs, follows
    // only the same host; this service never redirects.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .expect("client");
    // `pullModelManifest`: GET {base}/v2/{namespace}/{model}/manifests/{tag}, `Accept`.
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let resp = client
        .get(&url)
        .header("Accept", ACCEPT)
        .header("User-Agent", USER_AGENT)
        .send()
        .await
        .expect("manifest request");
    let manifest = refused_unless_ok(resp).await?;
    let manifest: Value = serde_json::from_slice(&manifest).expect("a JSON manifest");
    // `PullModel`: the layers, then the config when it has a digest.
    let mut layers: Vec<Value> = manifest["layers"].as_array().expect("layers").clone();
    if manifest["config"]["digest"]
        .as_str()
        .is_some_and(|d| !d.is_empty())
    {
        layers.push(manifest["config"].clone());
    }
    let mut blobs = BTreeMap::new();
    for layer in layers {
        let digest = layer["digest"].as_str().expect("digest").to_owned();
        let bytes = download_blob(&client, base, repo, &digest).await?;
        // `verifyBlob`: the file's sha256 is the digest.
        assert_eq!(
            format!("sha256:{}", sha256_hex(&bytes)),
            digest,
            "blob {digest} has other bytes"
        );
        assert_eq!(layer["size"], json!(bytes.len()), "{layer}");
        blobs.insert(digest, bytes);
    }
    Ok(Pulled { manifest, blobs })
}

async fn refused_unless_ok(resp: reqwest::Response) -> Result<Vec<u8>, Refused> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    if status == 200 {
        return Ok(body);
    }
    Err(Refused {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    })
}

/// `downloadBlob` → `Prepare` (HEAD, parts) → `run` (location, ranged parts).
async fn download_blob(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    digest: &str,
) -> Result<Vec<u8>, Refused> {
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    // `Prepare`: `makeRequestWithRetry(HEAD)`; `Content-Length` is the size.
    let head = client
        .head(&url)
        .header("User-Agent", USER_AGENT)
        .send()
        .await
        .expect("HEAD");
    if head.status() != 200 {
        return Err(refused(head).await);
    }
    let total: u64 = head
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("HEAD has a Content-Length");
    // `run`: a GET without Range; 307 or 200, and `resp.Location()` (an error without
    // the header), resolved against the request's URL. The body is closed unread.
    let probe = client
        .get(&url)
        .header("User-Agent", USER_AGENT)
        .send()
        .await
        .expect("GET");
    let status = probe.status().as_u16();
    if status != 200 && status != 307 {
        return Err(refused(probe).await);
    }
    let location = probe
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Ollama needs Location on the blob's GET (http: no Location header in response)")
        .to_owned();
    let direct = probe.url().join(&location).expect("a URL");
    drop(probe);
    // `downloadChunk`: per part, `Range: bytes=a-b` with `http.DefaultClient` (no
    // credentials); the body is copied up to the part's size, status unchecked.
    let parts = ollama_parts(total);
    let fetches = parts.iter().map(|&(offset, size)| {
        let (client, direct) = (client.clone(), direct.clone());
        async move {
            let resp = client
                .get(direct)
                .header("Range", format!("bytes={}-{}", offset, offset + size - 1))
                .send()
                .await
                .expect("ranged GET");
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("part body");
            assert!(
                status == 206 || (status == 200 && offset == 0 && size == total),
                "a part answered {status}"
            );
            assert_eq!(bytes.len() as u64, size, "part at {offset}");
            bytes
        }
    });
    let mut file = Vec::with_capacity(total as usize);
    for part in futures_util::future::join_all(fetches).await {
        file.extend_from_slice(&part);
    }
    Ok(file)
}

async fn refused(resp: reqwest::Response) -> Refused {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    Refused {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    }
}

async fn setup(
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> (Arc<Upstream>, HubEmu, TestService) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        tweak(c);
    })
    .await;
    (cdn, hub, svc)
}

async fn wait_in_library(svc: &TestService, path: &str) -> Value {
    let list = || async move { svc.get("/api/library").await.1 };
    common::wait::library_file_where(LONG, list, path, "hashed", |f| f["sha256"].is_string()).await
}

/// Requests for files (`resolve`) the Hub saw from the `from`th on.
fn resolves_since(hub: &HubEmu, from: usize) -> Vec<String> {
    hub.requests()[from..]
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The manifest has the Hub's form, and its layers are what the GGUF makes them.
fn check_manifest(pulled: &Pulled, gguf: &[u8], entry: &Value) {
    let m = &pulled.manifest;
    assert_eq!(m["schemaVersion"], 2, "{m}");
    assert_eq!(m["mediaType"], ACCEPT, "{m}");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let layer = |media: &str| {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["mediaType"] == media)
            .unwrap_or_else(|| panic!("no {media} layer in {m}"))
            .clone()
    };
    let model = layer("application/vnd.ollama.image.model");
    assert_eq!(model["digest"], format!("sha256:{}", sha256_hex(gguf)));
    assert_eq!(model["size"], json!(gguf.len()));
    let blob = |l: &Value| pulled.blobs[l["digest"].as_str().unwrap()].clone();
    assert_eq!(blob(&model), gguf, "the model blob is the GGUF");
    let template = layer("application/vnd.ollama.image.template");
    assert_eq!(
        String::from_utf8(blob(&template)).unwrap(),
        entry["template"].as_str().unwrap(),
        "the template the Hub's table gives this chat template"
    );
    let params: Value =
        serde_json::from_slice(&blob(&layer("application/vnd.ollama.image.params"))).unwrap();
    assert_eq!(params, entry["params"]);
    let config: Value =
        serde_json::from_slice(&pulled.blobs[m["config"]["digest"].as_str().unwrap()]).unwrap();
    assert_eq!(config["model_format"], "gguf", "{config}");
    assert_eq!(config["model_family"], "llama", "{config}");
    assert_eq!(config["file_type"], "Q4_K_M", "{config}");
}

#[actix_web::test]
async fn ollama_pulls_a_library_model_with_no_file_request_upstream() {
    let (cdn, hub, svc) = setup(|_| {}).await;
    let entry = entry_with_params();
    // The GGUF's chat template is the table's, after its first 128 characters too.
    let template = format!("{}{{# the rest #}}", entry["gguf_prefix"].as_str().unwrap());
    let q4 = tiny_gguf(&template, 300_000, 1);
    let q8 = tiny_gguf(&template, 500_000, 2);
    hub.put_file(REPO, "Tiny-Chat-Q4_K_M.gguf", q4.clone());
    hub.put_file(REPO, "Tiny-Chat-Q8_0.gguf", q8);
    hub.put_file(REPO, "README.md", b"# tiny".to_vec());
    let commit = hub.commit(REPO);
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": "Tiny-Chat-Q4_K_M.gguf" } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    wait_in_library(&svc, &format!("{REPO}/Tiny-Chat-Q4_K_M.gguf")).await;
    let seen = hub.requests().len();
    let cdn_path = hub.cdn_path(REPO, &commit, "Tiny-Chat-Q4_K_M.gguf");
    let cdn_bytes = cdn.bytes_sent(&cdn_path);

    let pulled = ollama_pull(&svc.base, REPO, "Q4_K_M")
        .await
        .expect("pulled");
    check_manifest(&pulled, &q4, &entry);
    // No tag: `latest` (`types/model/name.go`, `defaultTag`) is Q4_K_M, the same manifest.
    let latest = ollama_pull(&svc.base, REPO, "latest")
        .await
        .expect("pulled");
    assert_eq!(latest.manifest, pulled.manifest);
    // And the tag in lower case, as the Hub takes it.
    let lower = ollama_pull(&svc.base, REPO, "q4_k_m")
        .await
        .expect("pulled");
    assert_eq!(lower.manifest, pulled.manifest);
    let model = format!("sha256:{}", sha256_hex(&q4));
    assert!(in_parts(&svc, &model, q4.len() as u64, 7).await == q4);
    assert_eq!(
        resolves_since(&hub, seen),
        Vec::<String>::new(),
        "a library hit asked the Hub for a file"
    );
    assert_eq!(
        cdn.bytes_sent(&cdn_path),
        cdn_bytes,
        "the CDN sent nothing more"
    );

    // HEAD of the manifest: its digest, no body; the digest is of the GET's bytes.
    let url = svc.url(&format!("/v2/{REPO}/manifests/Q4_K_M"));
    let get = svc
        .client
        .get(&url)
        .header("Accept", ACCEPT)
        .send()
        .await
        .unwrap();
    let digest = get.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(get.headers()["content-type"], ACCEPT);
    let body = get.bytes().await.unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&body)));
    let head = svc
        .client
        .head(&url)
        .header("Accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );
    assert_eq!(head.bytes().await.unwrap().len(), 0);
    // The registry's ping.
    let ping = svc.client.get(svc.url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.json::<Value>().await.unwrap(), json!({}));
    // A part of a generated blob, as of any other.
    let config = pulled.manifest["config"]["digest"].as_str().unwrap();
    let part = svc
        .client
        .get(svc.url(&format!("/v2/{REPO}/blobs/{config}")))
        .header("Range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), pulled.blobs[config][1..4]);

    // The upstream Hub gone: the library answers, with the same manifest.
    drop(hub);
    let offline = ollama_pull(&svc.base, REPO, "Q4_K_M")
        .await
        .expect("pulled offline");
    assert_eq!(offline.manifest, pulled.manifest);
    assert_eq!(offline.blobs, pulled.blobs);
    // What the library does not hold cannot be had offline, and the refusal says why.
    let r = ollama_pull(&svc.base, REPO, "Q8_0")
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&r), (503, "UNAVAILABLE".to_owned()), "{:?}", r.body);
    assert!(
        r.body.to_string().contains("cannot be reached"),
        "{:?}",
        r.body
    );
}

#[actix_web::test]
async fn a_miss_pulled_by_two_ollamas_at_once_is_fetched_once() {
    let (cdn, hub, svc) = setup(|_| {}).await;
    let entry = entry_with_params();
    let template = entry["gguf_prefix"].as_str().unwrap().to_owned();
    let q4 = tiny_gguf(&template, 3 * 1024 * 1024, 3);
    let file = "Tiny-Chat-Q4_K_M.gguf";
    hub.put_file(REPO, file, q4.clone());
    let commit = hub.commit(REPO);
    // Slow enough that both pulls run while the one download does.
    hub.set_cdn_behavior(
        REPO,
        file,
        Behavior {
            rate_bps: Some(1024 * 1024),
            ..Behavior::default()
        },
    );
    // A third client takes the model in five ranged parts while it arrives: Ollama's
    // arithmetic with parts too large to be several for a test file, so smaller ones.
    let model = format!("sha256:{}", sha256_hex(&q4));
    let (a, b, parts) = futures_util::join!(
        ollama_pull(&svc.base, REPO, "Q4_K_M"),
        ollama_pull(&svc.base, REPO, "Q4_K_M"),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            in_parts(&svc, &model, q4.len() as u64, 5).await
        }
    );
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    check_manifest(&a, &q4, &entry);
    assert_eq!(a.manifest, b.manifest);
    assert!(parts == q4, "the parts are the file");
    assert_eq!(a.blobs, b.blobs);
    // The upstream's API was asked once per manifest: every blob request followed the
    // download (Ollama would write an upstream error's body into the model).
    let asked: Vec<String> = hub
        .requests()
        .iter()
        .filter(|r| !(r.method == "GET" && r.path.contains("/resolve/")))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let listings = asked.iter().filter(|r| r.contains("/revision/")).count();
    assert_eq!(listings, 2, "{asked:#?}");
    // A HEAD per manifest (the download to follow), one of the download's own.
    let heads = asked.iter().filter(|r| r.starts_with("HEAD ")).count();
    assert!(heads <= 3, "{asked:#?}");
    let cdn_path = hub.cdn_path(REPO, &commit, file);
    assert_eq!(
        cdn.bytes_sent(&cdn_path),
        q4.len() as u64,
        "the CDN sent the file once"
    );
    let entry = wait_in_library(&svc, &format!("{REPO}/{file}")).await;
    assert_eq!(entry["sha256"], sha256_hex(&q4));
    let (_, history) = svc.get("/api/history?state=completed").await;
    let ours = history["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["path"] == format!("{REPO}/{file}"))
        .count();
    assert_eq!(ours, 1, "one download: {history}");
}

/// The model blob in `n` ranged parts fetched at once, put together.
async fn in_parts(svc: &TestService, digest: &str, total: u64, n: u64) -> Vec<u8> {
    let url = svc.url(&format!("/v2/{REPO}/blobs/{digest}"));
    let size = total.div_ceil(n);
    let fetches = (0..n).map(|i| {
        let (client, url) = (svc.client.clone(), url.clone());
        let (start, end) = (i * size, ((i + 1) * size).min(total) - 1);
        async move {
            let resp = client
                .get(url)
                .header("Range", format!("bytes={start}-{end}"))
                .send()
                .await
                .expect("ranged GET");
            assert_eq!(resp.status(), 206);
            let want = format!("bytes {start}-{end}/{total}");
            assert_eq!(resp.headers()["content-range"], want.as_str());
            resp.bytes().await.expect("part").to_vec()
        }
    });
    futures_util::future::join_all(fetches).await.concat()
}

/// A refusal's status and registry error code.
fn code(r: &Refused) -> (u16, String) {
    (
        r.status,
        r.body["errors"][0]["code"]
            .as_str()
            .unwrap_or("(no registry error)")
            .to_owned(),
    )
}

async fn get(svc: &TestService, path: &str, range: Option<&str>) -> Refused {
    let mut req = svc.client.get(svc.url(path)).header("Accept", ACCEPT);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    refused(req.send().await.expect("request")).await
}

/// A GET of `path` exactly as written, on a connection of its own: status and JSON body.
async fn raw_get(svc: &TestService, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = svc.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn refusals_are_in_the_registrys_form_and_change_nothing() {
    let (_cdn, hub, svc) = setup(|_| {}).await;
    let template = entry_with_params()["gguf_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let q4 = tiny_gguf(&template, 10_000, 4);
    hub.put_file(REPO, "Tiny-Chat-Q4_K_M.gguf", q4.clone());
    hub.put_file(
        REPO,
        "big/Tiny-Chat-F16-00001-of-00002.gguf",
        tiny_gguf(&template, 100, 5),
    );
    hub.put_file(
        REPO,
        "big/Tiny-Chat-F16-00002-of-00002.gguf",
        content(100, 6),
    );
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": "Tiny-Chat-Q4_K_M.gguf" } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    wait_in_library(&svc, &format!("{REPO}/Tiny-Chat-Q4_K_M.gguf")).await;
    let before = tree(&svc.download_dir());
    let (_, queued) = svc.get("/api/downloads").await;

    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        (
            "/v2/nobody/nothing/manifests/Q4_K_M",
            None,
            404,
            "NAME_UNKNOWN",
        ),
        (
            &format!("/v2/{REPO}/manifests/Q5_K_M"),
            None,
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            &format!("/v2/{REPO}/manifests/F16"),
            None,
            400,
            "UNSUPPORTED",
        ),
        (
            &format!("/v2/{REPO}/manifests/Tiny-Chat-F16-00001-of-00002.gguf"),
            None,
            400,
            "UNSUPPORTED",
        ),
        (
            &format!("/v2/{REPO}/manifests/README.md"),
            None,
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            &format!("/v2/{REPO}/blobs/sha256:{}", "0".repeat(64)),
            None,
            404,
            "BLOB_UNKNOWN",
        ),
        (
            &format!("/v2/{REPO}/blobs/sha256:{}", "A".repeat(64)),
            None,
            400,
            "DIGEST_INVALID",
        ),
        (
            &format!("/v2/{REPO}/blobs/sha512:{}", "0".repeat(128)),
            None,
            400,
            "DIGEST_INVALID",
        ),
        (
            &format!("/v2/{REPO}/blobs/sha256:..%2F..%2Fetc%2Fpasswd"),
            None,
            400,
            "DIGEST_INVALID",
        ),
        (
            &format!("/v2/{REPO}/blobs/{}", sha256_hex(&q4)),
            None,
            400,
            "DIGEST_INVALID",
        ),
        // Path tricks in the owner, the name and the tag.
        (
            "/v2/..%2F..%2Fetc/passwd/manifests/latest",
            None,
            400,
            "NAME_INVALID",
        ),
        ("/v2/a%00b/x/manifests/latest", None, 400, "NAME_INVALID"),
        (
            &format!("/v2/{REPO}/manifests/..%2Fx"),
            None,
            400,
            "TAG_INVALID",
        ),
        (
            &format!("/v2/{REPO}/manifests/.hidden"),
            None,
            400,
            "TAG_INVALID",
        ),
        (
            &format!("/v2/{REPO}/manifests/a%00b"),
            None,
            400,
            "TAG_INVALID",
        ),
        (
            &format!("/v2/{REPO}/manifests/{}", "a".repeat(129)),
            None,
            400,
            "TAG_INVALID",
        ),
        (
            &format!("/v2/{REPO}/manifests/sha256:{}", "0".repeat(64)),
            None,
            400,
            "TAG_INVALID",
        ),
        // Routes a registry has and this one does not.
        ("/v2/_catalog", None, 404, "NAME_UNKNOWN"),
        (&format!("/v2/{REPO}/tags/list"), None, 404, "NAME_UNKNOWN"),
        // A range past the end of the model.
        (
            &format!("/v2/{REPO}/blobs/sha256:{}", sha256_hex(&q4)),
            Some(&format!("bytes={}-", q4.len())),
            416,
            "RANGE_INVALID",
        ),
    ];
    for (path, range, status, want) in cases {
        let r = get(&svc, path, *range).await;
        assert_eq!(
            code(&r),
            (*status, (*want).to_owned()),
            "GET {path} {range:?}: {:?}",
            r.body
        );
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
    let r = get(
        &svc,
        &format!("/v2/{REPO}/blobs/sha256:{}", sha256_hex(&q4)),
        Some("bytes=999999999-"),
    )
    .await;
    assert_eq!(r.headers["content-range"], format!("bytes */{}", q4.len()));
    // Pushing is refused in the same form.
    let put = svc
        .client
        .put(svc.url(&format!("/v2/{REPO}/manifests/latest")))
        .header("Content-Type", ACCEPT)
        .body("{}")
        .send()
        .await
        .unwrap();
    let r = refused(put).await;
    assert_eq!(code(&r), (400, "UNSUPPORTED".to_owned()), "{:?}", r.body);

    // Paths as they come on the wire (an HTTP client would normalize them first).
    for (path, status, want) in [
        ("/v2/../x/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/%2e%2e/x/manifests/latest", 400, "NAME_INVALID"),
        (
            "/v2/%2E%2E%2F%2E%2E/etc/manifests/latest",
            400,
            "NAME_INVALID",
        ),
        ("/v2/o/n/manifests/%2e%2e%2fx", 400, "TAG_INVALID"),
        ("/v2/o/n/manifests/..", 400, "TAG_INVALID"),
        (
            "/v2/o/n/blobs/sha256:%2e%2e%2f%2e%2e",
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/o/%ff%fe/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/o/n/manifests/%ff", 400, "TAG_INVALID"),
        ("/v2/o/n%5c..%5cx/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/aux/con/manifests/latest", 400, "NAME_INVALID"),
        ("/v2//n/manifests/latest", 404, "NAME_UNKNOWN"),
        ("/v2/../../etc/passwd", 404, "NAME_UNKNOWN"),
        ("/v2/o/n/blobs/../../../../etc/passwd", 404, "NAME_UNKNOWN"),
    ] {
        let (got, body) = raw_get(&svc, path).await;
        assert_eq!(got, status, "GET {path}: {body}");
        assert_eq!(body["errors"][0]["code"], want, "GET {path}: {body}");
    }

    assert_eq!(tree(&svc.download_dir()), before, "a refusal wrote nothing");
    let (_, after) = svc.get("/api/downloads").await;
    assert_eq!(after, queued, "a refusal queued nothing");
}

#[actix_web::test]
async fn with_an_api_token_every_request_needs_it_and_ollama_is_told_why() {
    let token = "s3cret-token-of-the-box";
    let (_cdn, hub, svc) = setup(|c| c.server.api_token = token.into()).await;
    let template = entry_with_params()["gguf_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let q4 = tiny_gguf(&template, 10_000, 7);
    hub.put_file(REPO, "Tiny-Chat-Q4_K_M.gguf", q4.clone());
    let url = svc.url(&format!("/v2/{REPO}/manifests/Q4_K_M"));
    for path in [
        url.clone(),
        svc.url("/v2/"),
        svc.url(&format!("/v2/{REPO}/blobs/sha256:{}", sha256_hex(&q4))),
    ] {
        let r = refused(svc.client.get(&path).send().await.unwrap()).await;
        assert_eq!(code(&r), (401, "UNAUTHORIZED".to_owned()), "{path}");
        // What Ollama parses (`server/images.go`, `parseRegistryChallenge`): a realm on
        // the host it asked (`server/auth.go` refuses any other).
        let challenge = r.headers["www-authenticate"].to_str().unwrap().to_owned();
        let realm = format!("realm=\"{}\"", svc.url("/v2/token"));
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(&realm),
            "{challenge}"
        );
    }
    // A forwarded scheme from a peer nobody trusts does not reach the challenge.
    for proto in ["javascript", "a\",realm=\"http://evil"] {
        let r = refused(
            svc.client
                .get(&url)
                .header("X-Forwarded-Proto", proto)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let challenge = r.headers["www-authenticate"].to_str().unwrap().to_owned();
        let realm = format!("realm=\"{}\"", svc.url("/v2/token"));
        assert!(
            challenge.contains(&realm) && !challenge.contains("evil"),
            "{challenge}"
        );
    }
    // Ollama's token request (`getAuthorizationToken`: GET realm?service=&scope=&ts=&nonce=,
    // with its signature): refused, saying why; Ollama prints the body.
    let r = refused(
        svc.client
            .get(svc.url("/v2/token?service=model-manager&scope=&ts=1&nonce=abc"))
            .header("Authorization", "AAAAC3NzaC1lZDI1NTE5AAAAI:c2ln")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code(&r), (403, "DENIED".to_owned()));
    assert!(
        r.body.to_string().contains("open_ollama_registry"),
        "{:?}",
        r.body
    );
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("api_token"),
        "{:?}",
        r.body
    );
    // With the token, as curl or a registry client would send it.
    let ok = svc
        .client
        .get(&url)
        .header("Accept", ACCEPT)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The scheme in any case (RFC 9110), as the rest of the service reads it.
    let lower = svc
        .client
        .get(&url)
        .header("Accept", ACCEPT)
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let wrong = svc
        .client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[actix_web::test]
async fn open_ollama_registry_lets_ollama_pull_from_a_box_with_a_token() {
    let token = "s3cret-token-of-the-box";
    let (_cdn, hub, svc) = setup(|c| {
        c.server.api_token = token.into();
        c.server.open_ollama_registry = true;
    })
    .await;
    let entry = entry_with_params();
    let q4 = tiny_gguf(entry["gguf_prefix"].as_str().unwrap(), 50_000, 8);
    hub.put_file(REPO, "Tiny-Chat-Q4_K_M.gguf", q4.clone());
    let pulled = ollama_pull(&svc.base, REPO, "Q4_K_M")
        .await
        .expect("pulled");
    check_manifest(&pulled, &q4, &entry);
    // Only the registry opens: the API and /hf still need the token.
    for path in ["/api/downloads", "/hf/api/models/bartowski/Tiny-Chat-GGUF"] {
        let r = svc.client.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
}

/// A Hub whose answers disagree: its listing names one sha256 for `M-Q4_K_M.gguf` and
/// its resolve another; `Bad-Q8_0.gguf` is listed with a "sha256" that is a path.
fn lying_hub() -> common::upstream::Server {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    common::upstream::Server::start("lying-hub", move |mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let (listed, resolved) = ("a".repeat(64), "b".repeat(64));
        let (status, headers, body) = if head.starts_with("GET /api/models/o/liar/revision/main") {
            let info = json!({"sha": "c".repeat(40), "siblings": [
                {"rfilename": "M-Q4_K_M.gguf", "size": 1000, "lfs": {"sha256": listed, "size": 1000}},
                {"rfilename": "Bad-Q8_0.gguf", "size": 1000, "lfs": {
                    "sha256": "../../../../../tmp/x00000000000000000000000000000000000000000000",
                    "size": 1000}},
            ]});
            ("200 OK", String::new(), info.to_string())
        } else if head.starts_with("HEAD /o/liar/resolve/") {
            let h = format!(
                "X-Repo-Commit: {}\r\nX-Linked-Etag: \"{resolved}\"\r\nX-Linked-Size: 1000\r\nETag: \"{resolved}\"\r\n",
                "c".repeat(40)
            );
            ("200 OK", h, String::new())
        } else {
            ("404 Not Found", String::new(), "{}".to_owned())
        };
        let out = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            if head.starts_with("HEAD ") { 1000 } else { body.len() },
            if head.starts_with("HEAD ") { "" } else { body.as_str() }
        );
        let _ = stream.write_all(out.as_bytes()).await;
    })
}

/// An upstream whose listing and resolve disagree gets no manifest (it would name a
/// digest its blob's bytes do not have: Ollama fetches gigabytes, then fails), and
/// nothing is downloaded; a listed "sha256" that is no 64 hex digits never reaches a
/// manifest (old Ollama joined a digest into a path: CVE-2024-37032).
#[actix_web::test]
async fn an_upstream_whose_digests_disagree_or_are_no_digests_gets_no_manifest() {
    let hub = lying_hub();
    let endpoint = format!("http://{}", hub.addr());
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let r = get(&svc, "/v2/o/liar/manifests/Q4_K_M", None).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    let message = r.body.to_string();
    assert!(
        message.contains(&"a".repeat(64)) && message.contains(&"b".repeat(64)),
        "{message}"
    );
    for tag in ["Q8_0", "Bad-Q8_0.gguf"] {
        let r = get(&svc, &format!("/v2/o/liar/manifests/{tag}"), None).await;
        assert_ne!(r.status, 200, "{tag}: {:?}", r.body);
        assert!(!r.body.to_string().contains("../"), "{tag}: {:?}", r.body);
    }
    let (_, list) = svc.get("/api/downloads").await;
    assert_eq!(
        list["downloads"],
        json!([]),
        "nothing may be fetched: {list}"
    );
}

/// A file whose name says nothing of a split but whose header says it is part 1 of 3:
/// Ollama could not load it, so it gets no manifest (as the library's own Ollama
/// publisher refuses it).
#[actix_web::test]
async fn a_split_part_by_its_header_gets_no_manifest() {
    let (_cdn, hub, svc) = setup(|_| {}).await;
    let mut gguf = b"GGUF".to_vec();
    gguf.extend(3u32.to_le_bytes());
    gguf.extend(0u64.to_le_bytes());
    gguf.extend(3u64.to_le_bytes());
    gguf.extend(gstr("general.architecture"));
    gguf.extend(8u32.to_le_bytes());
    gguf.extend(gstr("llama"));
    for (k, v) in [("split.no", 0u16), ("split.count", 3u16)] {
        gguf.extend(gstr(k));
        gguf.extend(2u32.to_le_bytes()); // GGUF_TYPE_UINT16, as gguf-split writes them
        gguf.extend(v.to_le_bytes());
    }
    gguf.extend(content(5_000, 8));
    hub.put_file(REPO, "Hidden-Q4_K_M.gguf", gguf);
    let r = get(&svc, &format!("/v2/{REPO}/manifests/Q4_K_M"), None).await;
    assert_eq!(code(&r), (400, "UNSUPPORTED".to_owned()), "{:?}", r.body);
    assert!(r.body.to_string().contains("split"), "{:?}", r.body);
}

/// The generated blobs (config, template, params) are kept in memory; Ollama asks the
/// config last, after the model's hours. A restart in between (the real binary, killed
/// and started again) must not turn them into 404s: they are made again from the
/// library's GGUF, with the same digests.
#[tokio::test]
async fn generated_blobs_survive_a_restart_between_manifest_and_blobs() {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(REPO, RepoOptions::default());
    let template = entry_with_params()["gguf_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    hub.put_file(
        REPO,
        "Tiny-Chat-Q4_K_M.gguf",
        tiny_gguf(&template, 10_000, 12),
    );
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (_dir, config, port, proc) = common::binary::Proc::start(&extra).await;
    let client = common::binary::test_client();
    let manifest: Value = client
        .get(format!("{}/v2/{REPO}/manifests/Q4_K_M", proc.base))
        .header("Accept", ACCEPT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut generated = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        if layer["mediaType"] != "application/vnd.ollama.image.model" {
            generated.push(layer["digest"].as_str().unwrap().to_owned());
        }
    }
    assert!(generated.len() >= 2, "a config and a template: {manifest}");
    held_as_the_repos(&proc).await;
    drop(proc);
    let mut proc = common::binary::Proc::spawn(&config, port);
    proc.wait_healthy().await;
    // Ollama asks the config hours later: by then the first scan has indexed the
    // library again (the file as the download's, with its repo).
    held_as_the_repos(&proc).await;
    for digest in generated {
        let r = client
            .get(format!("{}/v2/{REPO}/blobs/{digest}", proc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{digest} after a restart");
        let body = r.bytes().await.unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
    }
}

/// Waits until the library lists the repo's file as fetched from `REPO`, hashed.
async fn held_as_the_repos(proc: &common::binary::Proc) {
    common::wait::eventually(LONG, || async {
        let lib = proc.get("/api/library").await;
        let held = lib["files"].as_array().is_some_and(|f| {
            f.iter().any(|f| {
                f["path"] == format!("{REPO}/Tiny-Chat-Q4_K_M.gguf")
                    && f["repo"] == REPO
                    && f["sha256"].is_string()
            })
        });
        held.then_some(())
            .ok_or_else(|| format!("not in the library as the repo's: {lib}"))
    })
    .await;
}
