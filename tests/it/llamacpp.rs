//! The real llama.cpp (`xllamacpp` from PyPI: its `-hf` download code and its server)
//! against our HuggingFace cache and our LAN mirror (`MODEL_ENDPOINT=…/hf`). Every case
//! ends with llama.cpp loading the tiny model it resolved and generating tokens, and
//! says from the Hub's and the CDN's own logs what reached the upstream.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::hub::{Down, HubEmu, RepoOptions};
use common::llama::{self, Run};
use common::service::{sha256_hex, TestService};
use common::upstream::Upstream;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "tiny-org/Tiny-Llama-GGUF";
const Q4: &str = "Tiny-Llama-Q4_K_M.gguf";
const Q8: &str = "Tiny-Llama-Q8_0.gguf";
/// Shaped like a Hub token: llama.cpp sends it (`hf_` + 34 letters and digits).
const HUB_SHAPED: &str = "hf_LanMirrorSecret0123456789abcdefABCD";

/// A Hub holding `REPO` (a Q4_K_M and a Q8_0 of the tiny model, other bytes each, and
/// a README), with its CDN.
struct Models {
    hub: HubEmu,
    cdn: Arc<Upstream>,
    q4: Vec<u8>,
    q8: Vec<u8>,
}

fn hub_with_models() -> Models {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let (q4, q8) = (llama::tiny_model(4), llama::tiny_model(8));
    hub.put_file(REPO, Q4, q4.clone());
    hub.put_file(REPO, Q8, q8.clone());
    hub.put_file(REPO, "README.md", b"# tiny\n".to_vec());
    Models { hub, cdn, q4, q8 }
}

/// The service on that Hub; `tweak` adjusts its config.
async fn service(
    m: &Models,
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> TestService {
    let endpoint = m.hub.endpoint();
    TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        tweak(c);
    })
    .await
}

/// Downloads `file` of `REPO` into the library through the REST API and waits until
/// the library knows its sha256 (and, with `hf_cache` set, published it).
async fn hold(svc: &TestService, file: &str, published: bool) -> Value {
    let id = svc
        .add(json!({ "hub": { "repo": REPO, "file": file } }))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let list = || async move { svc.get("/api/library").await.1 };
    let path = format!("{REPO}/{file}");
    common::wait::library_file_where(LONG, list, &path, "hashed and published", |f| {
        f["sha256"].is_string() && (!published || f["runtimes"]["hf_cache"].is_string())
    })
    .await
}

/// Every request the Hub saw from the `from`th on, as `METHOD /path`.
fn hub_requests_since(hub: &HubEmu, from: usize) -> Vec<String> {
    hub.requests()[from..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Bytes the CDN sent of `file` at the Hub's current commit.
fn cdn_bytes(m: &Models, file: &str) -> u64 {
    let commit = m.hub.commit(REPO);
    m.cdn.bytes_sent(&m.hub.cdn_path(REPO, &commit, file))
}

fn assert_generated(got: &llama::Resolved, file: &str, bytes: &[u8]) {
    assert!(
        got.tokens > 0 && !got.generated.is_empty(),
        "llama.cpp generated nothing: {}",
        got.log
    );
    assert_eq!(got.mmproj, None, "a text model has no mmproj");
    assert_eq!(got.paths, vec![file.to_owned()], "{got:?}");
    assert!(got.model.ends_with(file), "{got:?}");
    assert_eq!(
        sha256_hex(&std::fs::read(&got.model).expect("the model llama.cpp resolved")),
        sha256_hex(bytes),
        "llama.cpp loaded other bytes"
    );
}

/// The stand-in is what llama.cpp expects of the Hub: pointed straight at it, llama.cpp
/// asks `refs`, `tree?recursive=true`, `HEAD` and `GET` of the file by commit, and
/// generates; a second run on that cache asks only `refs` and `tree`.
#[actix_web::test]
async fn llama_cpp_downloads_from_the_hub_emulator_and_generates() {
    let m = hub_with_models();
    let commit = m.hub.commit(REPO);
    let cache = tempfile::tempdir().unwrap();
    let spec = format!("{REPO}:Q4_K_M");
    let got = llama::resolve(Some(&m.hub.endpoint()), cache.path(), &spec, &[]).await;
    assert_generated(&got, Q4, &m.q4);
    let asked = hub_requests_since(&m.hub, 0);
    let api = format!("/api/models/{REPO}");
    let file = format!("/{REPO}/resolve/{commit}/{Q4}");
    assert_eq!(
        asked[..4],
        [
            format!("GET {api}/refs"),
            format!("GET {api}/tree/{commit}"),
            format!("HEAD {file}"),
            format!("GET {file}"),
        ],
        "{asked:#?}"
    );
    assert!(
        m.hub
            .requests()
            .iter()
            .filter(|r| r.path.contains("/tree/"))
            .all(|r| r.query.as_deref() == Some("recursive=true")),
        "{:?}",
        m.hub.requests()
    );
    let before = m.hub.requests().len();
    let again = llama::resolve(Some(&m.hub.endpoint()), cache.path(), &spec, &[]).await;
    assert_generated(&again, Q4, &m.q4);
    assert!(
        hub_requests_since(&m.hub, before)
            .iter()
            .all(|r| !r.contains("/resolve/")),
        "a second run fetched again: {:?}",
        hub_requests_since(&m.hub, before)
    );
}

/// (a) A file we downloaded and published in the HuggingFace cache is what
/// `llama-server -hf owner/name:Q4_K_M --offline` loads, without any network.
#[actix_web::test]
async fn llama_cpp_offline_loads_what_we_published_in_the_hf_cache() {
    let m = hub_with_models();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let svc = service(&m, move |c| c.library.hf_cache = dir).await;
    hold(&svc, Q4, true).await;
    let before = m.hub.requests().len();
    let spec = format!("{REPO}:Q4_K_M");
    // An endpoint where nothing listens: offline, llama.cpp must not need one.
    let got = llama::resolve(
        Some("http://127.0.0.1:9/"),
        cache.path(),
        &spec,
        &["--offline"],
    )
    .await;
    assert_generated(&got, Q4, &m.q4);
    assert!(got.model.starts_with(cache.path()), "{got:?}");
    assert_eq!(hub_requests_since(&m.hub, before), Vec::<String>::new());
}

/// (b) Through the mirror with a fresh client cache, a file of the library: llama.cpp
/// gets it from us, and no request for the file reaches the upstream (only `refs` and
/// `tree`, relayed).
#[actix_web::test]
async fn llama_cpp_through_the_mirror_gets_a_library_file_without_the_upstream() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    let (before, cdn_before) = (m.hub.requests().len(), cdn_bytes(&m, Q4));
    let cache = tempfile::tempdir().unwrap();
    let endpoint = svc.url("/hf");
    let got = llama::resolve(
        Some(&endpoint),
        cache.path(),
        &format!("{REPO}:Q4_K_M"),
        &[],
    )
    .await;
    assert_generated(&got, Q4, &m.q4);
    let upstream = hub_requests_since(&m.hub, before);
    assert!(
        upstream.iter().all(|r| !r.contains("/resolve/")),
        "a request for the file reached the upstream: {upstream:?}"
    );
    assert!(
        upstream.iter().any(|r| r.ends_with("/refs")),
        "refs were relayed: {upstream:?}"
    );
    assert_eq!(cdn_bytes(&m, Q4), cdn_before, "the CDN sent the file again");
}

/// (b) The upstream's `main` moved on (a README edit) since the library's file was
/// fetched: llama.cpp asks for it by the new commit, one `HEAD` upstream shows it is
/// the same file, and its bytes come from the library.
#[actix_web::test]
async fn llama_cpp_gets_a_library_file_unchanged_at_a_newer_upstream_commit() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    let held_at = m.hub.commit(REPO);
    m.hub
        .put_file(REPO, "README.md", b"# tiny, edited\n".to_vec());
    let newer = m.hub.commit(REPO);
    assert_ne!(held_at, newer);
    let before = m.hub.requests().len();
    let cache = tempfile::tempdir().unwrap();
    let got = llama::resolve(
        Some(&svc.url("/hf")),
        cache.path(),
        &format!("{REPO}:Q4_K_M"),
        &[],
    )
    .await;
    assert_generated(&got, Q4, &m.q4);
    assert!(got.model.to_string_lossy().contains(&newer), "{got:?}");
    let asked = hub_requests_since(&m.hub, before);
    let file = format!("/{REPO}/resolve/{newer}/{Q4}");
    assert!(
        asked
            .iter()
            .filter(|r| r.contains("/resolve/"))
            .all(|r| *r == format!("HEAD {file}")),
        "only HEADs of the file upstream: {asked:?}"
    );
    assert_eq!(cdn_bytes(&m, Q4), 0, "no bytes of the new commit's object");
}

/// A download llama.cpp left half done resumes with `Range: bytes=N-`: the mirror
/// answers 206 from the library and the file ends whole.
#[actix_web::test]
async fn llama_cpp_resumes_a_partial_download_from_the_mirror() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("models--tiny-org--Tiny-Llama-GGUF/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = m.q4.len() / 2;
    let partial = blobs.join(format!("{}.downloadInProgress", sha256_hex(&m.q4)));
    std::fs::write(&partial, &m.q4[..half]).unwrap();
    let got = llama::resolve(
        Some(&svc.url("/hf")),
        cache.path(),
        &format!("{REPO}:Q4_K_M"),
        &[],
    )
    .await;
    assert_generated(&got, Q4, &m.q4);
    assert!(!partial.exists());

    // The same with a marked prefix: the file ends as that prefix and the rest from
    // the mirror, so llama.cpp asked for the rest only and got it at the right offset.
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("models--tiny-org--Tiny-Llama-GGUF/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{}.downloadInProgress", sha256_hex(&m.q4)));
    std::fs::write(&partial, vec![b'#'; half]).unwrap();
    let mut run = Run::new(
        Some(&svc.url("/hf")),
        cache.path(),
        &format!("{REPO}:Q4_K_M"),
        &[],
    );
    run.generate = false;
    let got = llama::try_run(run)
        .await
        .unwrap_or_else(|f| panic!("{f:?}"));
    let mut want = vec![b'#'; half];
    want.extend_from_slice(&m.q4[half..]);
    assert_eq!(std::fs::read(&got.model).unwrap(), want);
}

/// (c) A quantization the library does not hold: llama.cpp's request is a miss,
/// fetched once from the upstream as a download of the queue (streamed to llama.cpp),
/// then in the library; a second client gets it without the upstream.
#[actix_web::test]
async fn llama_cpp_through_the_mirror_fetches_a_missing_quantization_once() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    assert_eq!(cdn_bytes(&m, Q8), 0);
    let endpoint = svc.url("/hf");
    let spec = format!("{REPO}:Q8_0");
    // Two machines ask at once: one upstream transfer.
    let (first, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let both = futures_util::future::join_all(
        [first.path(), other.path()]
            .map(|cache| llama::try_run(Run::new(Some(&endpoint), cache, &spec, &[]))),
    )
    .await;
    for got in both {
        assert_generated(&got.unwrap_or_else(|f| panic!("{f:?}")), Q8, &m.q8);
    }
    assert_eq!(cdn_bytes(&m, Q8), m.q8.len() as u64, "fetched once");
    let list = || async { svc.get("/api/library").await.1 };
    let path = format!("{REPO}/{Q8}");
    let entry =
        common::wait::library_file_where(LONG, list, &path, "hashed", |f| f["sha256"].is_string())
            .await;
    assert_eq!(entry["sha256"], sha256_hex(&m.q8), "{entry}");
    let (_, downloads) = svc.get("/api/downloads").await;
    let of_q8: Vec<&Value> = downloads["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .filter(|d| d["path"] == path.as_str())
        .collect();
    assert_eq!(of_q8.len(), 1, "one download of the queue: {downloads}");

    let before = m.hub.requests().len();
    let second = tempfile::tempdir().unwrap();
    let again = llama::resolve(Some(&endpoint), second.path(), &spec, &[]).await;
    assert_generated(&again, Q8, &m.q8);
    assert_eq!(cdn_bytes(&m, Q8), m.q8.len() as u64, "still fetched once");
    let upstream = hub_requests_since(&m.hub, before);
    assert!(
        upstream.iter().all(|r| !r.contains("/resolve/")),
        "{upstream:?}"
    );
}

/// (d) The upstream Hub down (answering 503, then not answering at all): the mirror
/// answers `refs`, `tree` and the file from the library, and llama.cpp generates.
#[actix_web::test]
async fn llama_cpp_through_the_mirror_works_while_the_upstream_is_down() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    let endpoint = svc.url("/hf");
    for down in [Down::Unavailable, Down::Silent] {
        m.hub.set_down(down);
        let before = m.hub.requests().len();
        let cache = tempfile::tempdir().unwrap();
        let got = llama::resolve(
            Some(&endpoint),
            cache.path(),
            &format!("{REPO}:Q4_K_M"),
            &[],
        )
        .await;
        assert_generated(&got, Q4, &m.q4);
        let asked = hub_requests_since(&m.hub, before);
        assert!(
            asked.iter().any(|r| r.ends_with("/refs")),
            "{down:?}: the upstream was asked first: {asked:?}"
        );
    }
    // What the library does not hold cannot be had meanwhile: llama.cpp fails at once
    // (the library's tree has no Q8_0), and nothing is queued.
    let cache = tempfile::tempdir().unwrap();
    let run = Run::new(Some(&endpoint), cache.path(), &format!("{REPO}:Q8_0"), &[]);
    let failed = llama::try_run(run).await.expect_err("no Q8_0 here");
    assert!(failed.log.contains("no GGUF files found"), "{}", failed.log);
    let (_, downloads) = svc.get("/api/downloads").await;
    assert_eq!(
        downloads["downloads"].as_array().map(Vec::len),
        Some(1),
        "{downloads}"
    );
}

/// (e) With a Hub-shaped `api_token`, llama.cpp with that token as its `HF_TOKEN` gets
/// a library file through the mirror; without it, it fails, and the mirror's answer is
/// a 401 in the Hub's error form that names the token and its shape.
#[actix_web::test]
async fn llama_cpp_through_a_guarded_mirror_needs_a_hub_shaped_token() {
    let m = hub_with_models();
    let mut svc = service(&m, |c| c.server.api_token = HUB_SHAPED.into()).await;
    let mut auth = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {HUB_SHAPED}");
    auth.insert("authorization", bearer.parse().unwrap());
    svc.client = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    hold(&svc, Q4, false).await;
    let endpoint = svc.url("/hf");
    let spec = format!("{REPO}:Q4_K_M");

    let cache = tempfile::tempdir().unwrap();
    let mut run = Run::new(Some(&endpoint), cache.path(), &spec, &[]);
    run.hf_token = Some(HUB_SHAPED.into());
    let got = llama::try_run(run)
        .await
        .unwrap_or_else(|f| panic!("{f:?}"));
    assert_generated(&got, Q4, &m.q4);
    for r in m.hub.requests() {
        assert!(
            !r.authorization
                .as_deref()
                .unwrap_or("")
                .contains(HUB_SHAPED),
            "the client's token went upstream: {r:?}"
        );
    }

    let refused = tempfile::tempdir().unwrap();
    let failed = llama::try_run(Run::new(Some(&endpoint), refused.path(), &spec, &[]))
        .await
        .expect_err("llama.cpp without the token must fail");
    assert!(llama::snapshot_files(refused.path()).is_empty());
    assert!(failed.log.contains("401"), "{}", failed.log);
    assert!(
        failed.log.contains("HF_TOKEN"),
        "llama.cpp shows our message: {}",
        failed.log
    );

    let answer = reqwest::get(svc.url(&format!("/hf/api/models/{REPO}/refs")))
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer.headers().contains_key("x-error-message"));
    let body: Value = answer.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    for words in ["api_token", "HF_TOKEN", "hf_", "llama.cpp"] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
}

/// A token llama.cpp would not send (not shaped `hf_…`) on a guarded mirror: llama.cpp
/// fails even with it as `HF_TOKEN`, and its log carries our explanation.
#[actix_web::test]
async fn llama_cpp_drops_a_token_that_is_not_hub_shaped() {
    let m = hub_with_models();
    let svc = service(&m, |c| c.server.api_token = "lan-secret".into()).await;
    let cache = tempfile::tempdir().unwrap();
    let mut run = Run::new(
        Some(&svc.url("/hf")),
        cache.path(),
        &format!("{REPO}:Q4_K_M"),
        &[],
    );
    run.hf_token = Some("lan-secret".into());
    let failed = llama::try_run(run).await.expect_err("the token is dropped");
    assert!(failed.log.contains("invalid token"), "{}", failed.log);
    assert!(
        failed.log.contains("shaped like a Hub token"),
        "{}",
        failed.log
    );
}

/// Attacks on `refs`: names that are no repo, or try to leave it, get the Hub's error
/// form without reaching the upstream; an unknown repo gets the upstream's 404 as it
/// is; nothing is queued or written.
#[actix_web::test]
async fn refs_refuses_bad_names_in_the_hubs_error_form() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    let before = m.hub.requests().len();
    for (path, status, code) in [
        ("/hf/api/models/bad%20owner/name/refs", 404, "RepoNotFound"),
        ("/hf/api/models/o/..%2F..%2Fx/refs", 404, "RepoNotFound"),
        ("/hf/api/models/o/.hidden/refs", 404, "RepoNotFound"),
        ("/hf/api/models/o/n%00/refs", 404, "RepoNotFound"),
        ("/hf/api/models/o/n/refs/extra", 404, "EntryNotFound"),
    ] {
        let r = svc.client.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-error-code"], code, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    assert_eq!(hub_requests_since(&m.hub, before), Vec::<String>::new());

    let r = svc
        .client
        .get(svc.url("/hf/api/models/nobody/none/refs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-error-code"], "RepoNotFound");
    assert_eq!(r.headers()["content-type"], "application/json");

    let r = svc
        .client
        .get(svc.url(&format!("/hf/api/models/{REPO}/refs?include_prs=1")))
        .send()
        .await
        .unwrap();
    let refs: Value = r.json().await.unwrap();
    assert_eq!(refs["branches"][0]["targetCommit"], m.hub.commit(REPO));
    assert_eq!(
        refs["pullRequests"],
        json!([]),
        "the query went upstream as it was"
    );
    let (_, list) = svc.get("/api/downloads").await;
    assert_eq!(list["downloads"], json!([]), "nothing was queued");
    assert!(common::service::tree(&svc.download_dir()).is_empty());
}

/// A miss llama.cpp caused (asked by the commit `refs` named as `main`) is recorded as
/// `main` at that commit: published in the HuggingFace cache with `refs/main`, the
/// box's own `llama-server -hf … --offline` finds it there.
#[actix_web::test]
async fn a_miss_fetched_for_llama_cpp_is_published_as_main() {
    let m = hub_with_models();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let svc = service(&m, move |c| c.library.hf_cache = dir).await;
    let client = tempfile::tempdir().unwrap();
    let spec = format!("{REPO}:Q8_0");
    llama::resolve(Some(&svc.url("/hf")), client.path(), &spec, &[]).await;
    let list = || async { svc.get("/api/library").await.1 };
    let path = format!("{REPO}/{Q8}");
    common::wait::library_file_where(LONG, list, &path, "published", |f| {
        f["runtimes"]["hf_cache"].is_string()
    })
    .await;
    let refs_main = cache
        .path()
        .join("models--tiny-org--Tiny-Llama-GGUF/refs/main");
    assert_eq!(
        std::fs::read_to_string(&refs_main).ok().as_deref(),
        Some(m.hub.commit(REPO).as_str())
    );
    let got = llama::resolve(
        Some("http://127.0.0.1:9/"),
        cache.path(),
        &spec,
        &["--offline"],
    )
    .await;
    assert_generated(&got, Q8, &m.q8);
}

/// The service says at start when its `api_token` is one llama.cpp would not send, and
/// is silent about one it would.
#[test]
fn the_service_warns_at_start_about_a_token_llama_cpp_drops() {
    use common::binary::{free_port, write_config, BIN};
    for (token, warned) in [("lan-secret", true), (HUB_SHAPED, false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), free_port(), "");
        let log = dir.path().join("service.log");
        let mut child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env("MM_SERVER__API_TOKEN", token)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("spawn model-manager");
        let text = common::wait::eventually_blocking(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("model-manager listening") {
                Ok(text)
            } else {
                Err(format!("not started yet: {text}"))
            }
        });
        let _ = child.kill();
        let _ = child.wait();
        let warning = "not shaped like a Hub token";
        assert_eq!(text.contains(warning), warned, "{token}: {text}");
        assert!(!text.contains(token), "the log shows the token: {text}");
    }
}

/// `huggingface_hub`'s `list_repo_refs` (run with `HF_ENDPOINT` at `endpoint`).
async fn hf_refs(endpoint: String) -> Value {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mirror/client.py"
    ))
    .args(["refs", REPO])
    .env("HF_ENDPOINT", endpoint)
    .env("HF_HOME", home.path())
    .env_remove("HF_TOKEN")
    .env("HF_HUB_DISABLE_TELEMETRY", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client.py refs: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The `refs` of the Hub emulator, of the mirror relaying it, and of the mirror from
/// its library (the upstream down) are what `huggingface_hub` reads as refs: one
/// branch, `main`, at the commit of the files.
#[actix_web::test]
async fn refs_are_what_huggingface_hub_reads_from_the_emulator_and_the_mirror() {
    let m = hub_with_models();
    let svc = service(&m, |_| {}).await;
    hold(&svc, Q4, false).await;
    let commit = m.hub.commit(REPO);
    let want = json!({
        "branches": [["main", "refs/heads/main", commit]],
        "tags": [],
        "converts": [],
    });
    assert_eq!(hf_refs(m.hub.endpoint()).await, want, "the emulator");
    assert_eq!(hf_refs(svc.url("/hf")).await, want, "relayed");
    m.hub.set_down(Down::Unavailable);
    assert_eq!(hf_refs(svc.url("/hf")).await, want, "from the library");
}

/// A library entry's `run` command for llama.cpp, run as it is shown (its
/// `HF_HUB_CACHE=…` and arguments, with the Hub this box uses as llama.cpp's Hub): the
/// real llama.cpp loads our copy from the cache we published and fetches nothing.
#[actix_web::test]
async fn the_run_command_shown_for_a_library_file_runs_our_copy() {
    let m = hub_with_models();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let svc = service(&m, move |c| c.library.hf_cache = dir).await;
    let entry = hold(&svc, Q4, true).await;
    let command = entry["run"]["llama.cpp"]
        .as_str()
        .expect("a llama.cpp command");
    let words: Vec<&str> = command.split_whitespace().collect();
    let env = format!("HF_HUB_CACHE={}", cache.path().display());
    assert_eq!(words[..2], [env.as_str(), "llama-server"], "{command}");
    let (flag, spec, rest) = (words[2], words[3], &words[4..]);
    assert!(["-hf", "--hf-repo"].contains(&flag), "{command}");
    let (before, cdn_before) = (m.hub.requests().len(), cdn_bytes(&m, Q4));
    let got = llama::resolve(Some(&m.hub.endpoint()), cache.path(), spec, rest).await;
    assert_generated(&got, Q4, &m.q4);
    assert!(got.model.starts_with(cache.path()), "{got:?}");
    let asked = hub_requests_since(&m.hub, before);
    assert!(
        asked
            .iter()
            .all(|r| !r.starts_with("GET") || !r.contains("/resolve/")),
        "llama.cpp fetched the file again: {asked:?}"
    );
    assert_eq!(cdn_bytes(&m, Q4), cdn_before, "the CDN sent the file again");
}

/// The tree of `repo` as the mirror lists it to llama.cpp (`tree/main?recursive=true`),
/// in its order, as [`model_manager::hub::pick`] takes it.
async fn mirror_tree(svc: &TestService, repo: &str) -> Vec<model_manager::hub::RepoFile> {
    let (s, tree) = svc
        .get(&format!("/hf/api/models/{repo}/tree/main?recursive=true"))
        .await;
    assert_eq!(s, 200, "{tree}");
    tree.as_array()
        .expect("a tree")
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| model_manager::hub::RepoFile {
            path: e["path"].as_str().expect("path").to_owned(),
            size: e["size"].as_u64().unwrap_or(0),
            sha256: e["lfs"]["oid"].as_str().map(str::to_owned),
            quantization: None,
        })
        .collect()
}

/// Acceptance 2: for three repo layouts (a multimodal repo, a split in a folder beside
/// an imatrix, case spellings without Q4_K_M or Q8_0), what the real llama.cpp fetches
/// through our mirror for a spec is exactly what our pick (the one `pull` and the Hub
/// tab use) chooses for it, mmproj included.
#[actix_web::test]
async fn our_pick_is_what_the_real_llama_cpp_fetches_through_the_mirror() {
    let m = hub_with_models();
    let layouts: [(&str, &[&str], &[&str]); 3] = [
        (
            "o/vision",
            &[
                "Vision-Q4_K_M.gguf",
                "Vision-Q8_0.gguf",
                "mmproj-Vision-F16.gguf",
                "mmproj-Vision-Q8_0.gguf",
            ],
            &["o/vision:Q8_0", "o/vision", "o/vision:q4_k_m"],
        ),
        (
            "o/split",
            &[
                "Split.imatrix.gguf",
                "Q4_K_M/Split-Q4_K_M-00001-of-00002.gguf",
                "Q4_K_M/Split-Q4_K_M-00002-of-00002.gguf",
                "Split-Q2_K.gguf",
            ],
            &["o/split", "o/split:Q2_K"],
        ),
        (
            "o/cases",
            &["cases.iq3_m.gguf", "cases.Q5_K_M.gguf", "cases-F16.gguf"],
            &["o/cases", "o/cases:IQ3_M", "o/cases:f16"],
        ),
    ];
    for (i, (repo, files, _)) in layouts.iter().enumerate() {
        m.hub.add_repo(repo, RepoOptions::default());
        for (j, f) in files.iter().enumerate() {
            m.hub
                .put_file(repo, f, common::service::content(2000, (i * 10 + j) as u64));
        }
    }
    let svc = service(&m, |_| {}).await;
    for (repo, _, specs) in layouts {
        let tree = mirror_tree(&svc, repo).await;
        for spec in specs {
            let tag = spec.split_once(':').map(|(_, t)| t);
            let ours = model_manager::hub::pick::pick(&tree, tag, true);
            let mut want: Vec<String> = ours.model_files.clone();
            want.extend(ours.mmproj.clone());
            want.sort();
            assert!(!want.is_empty(), "{spec}: our pick is empty");
            let cache = tempfile::tempdir().unwrap();
            let mut run = llama::Run::new(Some(&svc.url("/hf")), cache.path(), spec, &[]);
            run.generate = false;
            let got = llama::try_run(run)
                .await
                .unwrap_or_else(|f| panic!("llama.cpp -hf {spec}: {}", f.log));
            let mut fetched = got.paths.clone();
            fetched.sort();
            assert_eq!(
                fetched, want,
                "{spec}: llama.cpp fetched other files than we pick"
            );
        }
    }
}
