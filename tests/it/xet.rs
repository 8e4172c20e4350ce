//! The Xet transport against HuggingFace's own CAS (`local_cas_server` behind the tests'
//! proxy, see `common/xet.rs`), with files uploaded by PyPI's `hf_xet`: a Xet-backed Hub
//! file comes from xorbs (no bridge byte), falls back to the bridge when the CAS fails,
//! survives expired tokens and URLs, never keeps a damaged chunk, resumes chunk by chunk
//! after `kill -9`, and an update of a re-uploaded model fetches its changed chunks only.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::binary::Proc;
use common::hub::{HubEmu, RepoOptions};
use common::service::{sha256_hex, TestService};
use common::upstream::Upstream;
use common::xet::{self, Cas, Fault};
use serde_json::{json, Value};

const REPO: &str = "xet-org/Tiny-GGUF";
const FILE: &str = "tiny-Q4_K_M.gguf";
const LONG: Duration = Duration::from_secs(120);

/// A CAS, and a Hub serving `data` as a Xet-backed `FILE` of `REPO`.
fn xet_hub(data: Vec<u8>) -> (Cas, HubEmu) {
    let cas = Cas::start();
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.enable_xet(&cas);
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_xet_file(REPO, FILE, data);
    cas.reset_counters();
    (cas, hub)
}

/// Bytes the bridge (the Hub's CDN) served of `FILE` at the current commit.
fn bridge_bytes(hub: &HubEmu) -> u64 {
    let commit = hub.commit(REPO);
    hub.cdn().bytes_sent(&hub.cdn_path(REPO, &commit, FILE))
}

async fn service(
    hub: &HubEmu,
    tweak: impl FnOnce(&mut model_manager::config::Config),
) -> TestService {
    let endpoint = hub.endpoint();
    TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        tweak(c);
    })
    .await
}

async fn add_hub_file(svc: &TestService) -> String {
    svc.add(json!({"hub": {"repo": REPO, "file": FILE}})).await
}

fn assert_file(svc: &TestService, data: &[u8]) {
    let path = svc.download_dir().join(REPO).join(FILE);
    let got = std::fs::read(&path).unwrap_or_default();
    assert_eq!(got.len(), data.len(), "{}", path.display());
    assert_eq!(sha256_hex(&got), sha256_hex(data), "{}", path.display());
}

async fn metric(svc: &TestService, line: &str) -> u64 {
    let text = reqwest::get(svc.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn a_xet_file_comes_from_xorbs_with_no_byte_through_the_bridge() {
    let data = xet::random_file(24 << 20, 1);
    let (cas, hub) = xet_hub(data.clone());
    let svc = service(&hub, |_| {}).await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "xet", "{d}");
    assert_eq!(d["sha256"], sha256_hex(&data), "{d}");
    assert_eq!(d["bytes_reused"], 0, "{d}");
    assert_file(&svc, &data);
    assert_eq!(bridge_bytes(&hub), 0, "no byte through the bridge");
    let fetched = cas.xorb_bytes();
    eprintln!(
        "24 MiB from xorbs: {fetched} bytes fetched ({:.4}×)",
        fetched as f64 / data.len() as f64
    );
    assert!(
        fetched >= data.len() as u64 && fetched <= data.len() as u64 * 101 / 100,
        "{fetched}"
    );
    // V2 reconstructions, each asked for a range of the file.
    let recs = cas.reconstructions();
    assert!(
        !recs.is_empty() && recs.iter().all(|r| r.version == 2 && r.status == 200),
        "{recs:?}"
    );
    assert!(
        recs.iter().filter(|r| r.range.is_some()).count() >= 2,
        "{recs:?}"
    );
    assert_eq!(
        metric(&svc, "mm_xet_bytes_total{kind=\"fetched\"}").await,
        fetched
    );
}

#[actix_web::test]
async fn a_cas_without_v2_is_read_through_v1() {
    let data = xet::random_file(6 << 20, 2);
    let (cas, hub) = xet_hub(data.clone());
    cas.set_fault(Fault::V2Missing);
    let svc = service(&hub, |_| {}).await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "xet", "{d}");
    assert_file(&svc, &data);
    let recs = cas.reconstructions();
    assert_eq!(
        recs.iter().filter(|r| r.version == 2).count(),
        1,
        "V2 asked once: {recs:?}"
    );
    assert!(
        recs.iter().any(|r| r.version == 1 && r.status == 200),
        "{recs:?}"
    );
}

#[actix_web::test]
async fn with_the_cas_down_the_file_comes_through_the_bridge() {
    let data = xet::random_file(6 << 20, 3);
    let (cas, hub) = xet_hub(data.clone());
    cas.set_fault(Fault::Down);
    let svc = service(&hub, |c| c.downloads.max_retries = 2).await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "http", "{d}");
    assert_file(&svc, &data);
    assert!(bridge_bytes(&hub) >= data.len() as u64);
    assert_eq!(cas.xorb_bytes(), 0);
}

#[actix_web::test]
async fn xet_off_in_the_config_uses_the_bridge() {
    let data = xet::random_file(4 << 20, 4);
    let (cas, hub) = xet_hub(data.clone());
    let svc = service(&hub, |c| c.hub.xet = false).await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "http", "{d}");
    assert_file(&svc, &data);
    assert!(cas.requests().is_empty(), "nothing asked of the CAS");
}

#[actix_web::test]
async fn expired_tokens_and_xorb_urls_are_renewed_mid_download() {
    // Two xorbs (each holds 64 MiB at most): the unit across their seam fetches from the
    // second one long after its reconstruction named the URL.
    let data = xet::random_file(66 << 20, 5);
    let (cas, hub) = xet_hub(data.clone());
    cas.set_fault(Fault::TokenTtl(Duration::from_secs(2)));
    cas.set_fault(Fault::UrlTtl(Duration::from_secs(1)));
    // About 5 s: several token lives, and units outliving their URLs.
    let svc = service(&hub, |c| {
        c.downloads.speed_limit_bps = 14 << 20;
        c.downloads.stall_timeout_secs = 10;
    })
    .await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "xet", "{d}");
    assert_eq!(d["attempt"], 0, "no failed attempt: {d}");
    assert!(d["error"].is_null(), "{d}");
    assert_file(&svc, &data);
    let tokens = hub
        .requests()
        .iter()
        .filter(|r| r.path.contains("/xet-read-token/"))
        .count();
    assert!(
        tokens >= 2,
        "the token was renewed: {tokens} token requests"
    );
    assert!(
        cas.forbidden() > 0,
        "some xorb URL expired under the download"
    );
    assert_eq!(bridge_bytes(&hub), 0);
    // A renewed unit asks only for what it lacks.
    let fetched = cas.xorb_bytes();
    assert!(
        fetched <= data.len() as u64 * 101 / 100,
        "fetched {fetched}"
    );
}

#[actix_web::test]
async fn a_chunk_damaged_on_the_wire_never_reaches_the_file() {
    let data = xet::random_file(6 << 20, 6);
    let (cas, hub) = xet_hub(data.clone());
    cas.set_fault(Fault::FlipByte { nth: 1 });
    let svc = service(&hub, |_| {}).await;
    let id = add_hub_file(&svc).await;
    let d = svc
        .wait_until(&id, LONG, "an end", |d| {
            d["state"] == "completed" || d["state"] == "failed"
        })
        .await;
    assert_eq!(cas.flipped(), 1, "the CAS damaged a chunk");
    let path = svc.download_dir().join(REPO).join(FILE);
    if d["state"] == "completed" {
        assert_file(&svc, &data);
    } else {
        assert_eq!(d["error"]["kind"], "checksum_mismatch", "{d}");
        assert!(!path.exists(), "no file under its final name");
    }
}

/// The figures of acceptance line 2, for the note: what a v1 → v2 update fetched, and
/// the least it could (the bytes of the xorb ranges v1 does not hold).
#[actix_web::test]
async fn an_update_of_a_re_uploaded_model_fetches_its_changed_chunks_only() {
    let pair = xet::xet_gguf_pair(128 << 20);
    let (cas, hub) = xet_hub(pair.v1.clone());
    let svc = service(&hub, |c| c.downloads.stall_timeout_secs = 3).await;
    let path = format!("{REPO}/{FILE}");
    let id = add_hub_file(&svc).await;
    svc.wait_state(&id, "completed", LONG).await;
    let v1_fetch = cas.xorb_bytes();
    library_where(&svc, &path, "its repo", |f| f["repo"] == REPO).await;
    let v1_hash = hub.xet_hash(REPO, FILE).unwrap_or_default();
    hub.put_xet_file(REPO, FILE, pair.v2.clone());
    let v2_hash = hub.xet_hash(REPO, FILE).unwrap_or_default();
    let least = xet::least_fetch(&cas.handle(), &v1_hash, &v2_hash).await;
    cas.reset_counters();
    let (status, body) = svc.post("/api/library/check-updates", json!({})).await;
    assert!(status < 300, "{status} {body}");
    let update = library_where(&svc, &path, "the update's cost", |f| {
        f["update"]["fetch_bytes"].is_u64()
    })
    .await["update"]
        .clone();
    let fetch_bytes = update["fetch_bytes"].as_u64().unwrap_or(u64::MAX);
    let size = pair.v2.len() as u64;
    assert_eq!(cas.xorb_bytes(), 0, "telling the cost fetched nothing");
    // The update waits on its one fetched chunk: the old file is whole meanwhile.
    cas.set_fault(Fault::StallAfter(0));
    let (status, body) = svc.post("/api/library/update", json!({"path": path})).await;
    assert!(status < 300, "{status} {body}");
    let new_id = body["id"].as_str().unwrap_or_default().to_owned();
    // What was copied is told while the rest is still coming.
    let mid = svc
        .wait_until(&new_id, LONG, "the copied bytes told", |d| {
            d["bytes_reused"].as_u64() > Some(size / 2)
        })
        .await;
    assert_eq!(mid["state"], "downloading", "{mid}");
    assert_file(&svc, &pair.v1);
    cas.clear_faults();
    let d = svc.wait_state(&new_id, "completed", LONG).await;
    assert_file(&svc, &pair.v2);
    let fetched = cas.xorb_bytes();
    let reused = d["bytes_reused"].as_u64().unwrap_or(0);
    eprintln!(
        "v1 → v2 of {size} bytes: fetched {fetched} ({:.4} %), told before {fetch_bytes}, \
         reused {reused}; the least possible: {least:?}; v1's own download fetched \
         {v1_fetch}; mid-update {mid}",
        fetched as f64 * 100.0 / size as f64
    );
    // What was told is what the one pass costs: the chunks v1 lacks, nothing more.
    assert_eq!(
        fetch_bytes, least.new_bytes,
        "told {fetch_bytes}, least {least:?}"
    );
    assert_eq!(d["transport"], "xet", "{d}");
    assert!(fetched <= size / 100, "fetched {fetched} of {size}");
    assert!(fetch_bytes <= size / 100, "told {fetch_bytes}");
    // The stalled fetch was asked again; the figure told is what one pass costs.
    assert!(fetched >= fetch_bytes, "{fetched} < {fetch_bytes}");
    assert!(
        reused >= size - size / 100 && reused <= size,
        "reused {reused}"
    );
    assert_eq!(bridge_bytes(&hub), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_40_percent_resumes_from_the_chunks_on_disk() {
    let data = xet::random_file(64 << 20, 7);
    let size = data.len() as u64;
    let (cas, hub) = xet_hub(data.clone());
    let extra = format!(
        "[hub]\nendpoint = \"{}\"\n\n[downloads]\nspeed_limit_bps = {}\n",
        hub.endpoint(),
        16u64 << 20
    );
    let (dir, config, port, mut proc) = Proc::start(&extra).await;
    let id = proc.add(json!({"hub": {"repo": REPO, "file": FILE}})).await;
    let before = proc
        .wait_download(&id, LONG, |d| {
            d["bytes_done"].as_u64() >= Some(size * 4 / 10)
        })
        .await;
    proc.kill9();
    let _ = proc.wait_exit(Duration::from_secs(10));
    let asked_before = cas.reconstructions().len();
    cas.reset_counters();
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    let d = proc
        .wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    assert_eq!(d["transport"], "xet", "{d}");
    let got = std::fs::read(dir.path().join("downloads").join(REPO).join(FILE)).unwrap_or_default();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // What the restart asked the CAS for: the ranges its checkpoint says are missing
    // (not the whole file's reconstruction asked at the end, for its chunk map).
    let whole = format!("bytes=0-{}", size - 1);
    let asked: u64 = cas
        .reconstructions()
        .iter()
        .filter(|r| r.range.as_deref() != Some(whole.as_str()))
        .filter_map(|r| r.range.as_deref().and_then(range_len))
        .sum();
    let fetched = cas.xorb_bytes();
    let done_before = before["bytes_done"].as_u64().unwrap_or(0);
    eprintln!(
        "kill -9 at {done_before} of {size}: the restart asked for {asked} bytes and fetched \
         {fetched} ({} beyond what it asked; {asked_before} reconstructions before)",
        fetched as i64 - asked as i64
    );
    assert!(asked < size * 7 / 10, "the restart resumed: asked {asked}");
    assert!(
        fetched <= asked + (4 << 20),
        "fetched {fetched}, asked {asked}"
    );
    // And against what the user saw done before the kill.
    let missing = size - done_before;
    assert!(
        fetched <= missing + (4 << 20),
        "fetched {fetched}, {missing} were missing"
    );
    assert_eq!(bridge_bytes(&hub), 0);
}

async fn library_where(
    svc: &TestService,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    common::wait::library_file_where(
        LONG,
        || async { svc.get("/api/library").await.1 },
        path,
        what,
        pred,
    )
    .await
}

/// The length of `bytes=a-b`.
fn range_len(r: &str) -> Option<u64> {
    let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
    Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?)
}

#[actix_web::test]
async fn a_file_whose_chunks_another_file_holds_reuses_them() {
    let pair = xet::xet_gguf_pair(16 << 20);
    let (cas, hub) = xet_hub(pair.v1.clone());
    hub.put_xet_file(REPO, "copy/tiny-Q4_K_M-v2.gguf", pair.v2.clone());
    cas.reset_counters();
    let svc = service(&hub, |_| {}).await;
    let first = add_hub_file(&svc).await;
    svc.wait_state(&first, "completed", LONG).await;
    let one = cas.xorb_bytes();
    let second = svc
        .add(json!({"hub": {"repo": REPO, "file": "copy/tiny-Q4_K_M-v2.gguf"}}))
        .await;
    let d: Value = svc.wait_state(&second, "completed", LONG).await;
    let two = cas.xorb_bytes() - one;
    eprintln!(
        "first file fetched {one}, the second {two}, reused {}",
        d["bytes_reused"]
    );
    assert!(two <= pair.v2.len() as u64 / 100, "{two}");
    assert!(
        d["bytes_reused"].as_u64() >= Some(pair.v2.len() as u64 * 99 / 100),
        "{d}"
    );
    assert_eq!(
        metric(&svc, "mm_xet_bytes_total{kind=\"reused\"}").await,
        d["bytes_reused"].as_u64().unwrap_or(0)
    );
}

/// A file fetched over the bridge (or before chunk maps existed) has no chunk map: the
/// update check takes one from its Xet hash at its own commit, and the update reuses it.
#[actix_web::test]
async fn a_file_fetched_over_http_is_updated_by_its_changed_chunks_too() {
    let pair = xet::xet_gguf_pair(24 << 20);
    let (cas, hub) = xet_hub(pair.v1.clone());
    let path = format!("{REPO}/{FILE}");
    let svc = service(&hub, |c| c.hub.xet = false).await;
    let id = add_hub_file(&svc).await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    assert_eq!(d["transport"], "http", "{d}");
    library_where(&svc, &path, "its repo", |f| f["repo"] == REPO).await;
    let dir = svc.stop().await;
    let mut config = common::service::test_config(dir.path());
    config.hub.endpoint = hub.endpoint();
    let svc = TestService::start_in(dir, config).await;
    hub.put_xet_file(REPO, FILE, pair.v2.clone());
    cas.reset_counters();
    let (status, body) = svc.post("/api/library/check-updates", json!({})).await;
    assert!(status < 300, "{status} {body}");
    let size = pair.v2.len() as u64;
    let f = library_where(&svc, &path, "the update's cost", |f| {
        f["update"]["fetch_bytes"].is_u64()
    })
    .await;
    assert!(
        f["update"]["fetch_bytes"].as_u64() <= Some(size / 100),
        "{f}"
    );
    let (status, body) = svc.post("/api/library/update", json!({"path": path})).await;
    assert!(status < 300, "{status} {body}");
    let d = svc
        .wait_state(body["id"].as_str().unwrap_or_default(), "completed", LONG)
        .await;
    assert_file(&svc, &pair.v2);
    assert!(
        cas.xorb_bytes() <= size / 100,
        "fetched {}",
        cas.xorb_bytes()
    );
    assert!(d["bytes_reused"].as_u64() >= Some(size * 99 / 100), "{d}");
}

/// Two downloads reusing one source at once both end right; then, with the copies
/// gone and the source swapped for a symlink to a same-size file of other bytes outside
/// `download_dir`, a third takes none of those bytes: every chunk from the CAS, the
/// right sha256, at its first attempt.
#[actix_web::test]
async fn reuse_follows_no_link_and_shares_a_source_between_downloads() {
    let pair = xet::xet_gguf_pair(8 << 20);
    let (cas, hub) = xet_hub(pair.v1.clone());
    let names = ["a/tiny-v2.gguf", "b/tiny-v2.gguf", "c/tiny-v2.gguf"];
    for name in names {
        hub.put_xet_file(REPO, name, pair.v2.clone());
    }
    let svc = service(&hub, |_| {}).await;
    let first = add_hub_file(&svc).await;
    svc.wait_state(&first, "completed", LONG).await;
    // Two at once, both from the same file on disk.
    let ids = [
        svc.add(json!({"hub": {"repo": REPO, "file": names[0]}}))
            .await,
        svc.add(json!({"hub": {"repo": REPO, "file": names[1]}}))
            .await,
    ];
    for (id, name) in ids.iter().zip(names) {
        let d = svc.wait_state(id, "completed", LONG).await;
        assert!(d["bytes_reused"].as_u64() > Some(0), "{d}");
        let got = std::fs::read(svc.download_dir().join(REPO).join(name)).unwrap_or_default();
        assert_eq!(sha256_hex(&got), sha256_hex(&pair.v2), "{name}");
    }
    // The copies go; the source becomes a link to a same-size file of other bytes,
    // outside `download_dir`.
    for name in &names[..2] {
        std::fs::remove_file(svc.download_dir().join(REPO).join(name)).expect("remove a copy");
    }
    let outside = tempfile::tempdir().expect("temp dir");
    let decoy = outside.path().join("decoy.gguf");
    std::fs::write(&decoy, xet::random_file(pair.v1.len(), 77)).expect("decoy");
    let source = svc.download_dir().join(REPO).join(FILE);
    std::fs::remove_file(&source).expect("remove the source");
    std::os::unix::fs::symlink(&decoy, &source).expect("symlink");
    let before = cas.xorb_bytes();
    let id = svc
        .add(json!({"hub": {"repo": REPO, "file": names[2]}}))
        .await;
    let d = svc.wait_state(&id, "completed", LONG).await;
    let got = std::fs::read(svc.download_dir().join(REPO).join(names[2])).unwrap_or_default();
    assert_eq!(sha256_hex(&got), sha256_hex(&pair.v2));
    // Nothing came from the link: every chunk from the CAS, at the first attempt.
    assert_eq!(d["bytes_reused"], 0, "{d}");
    assert!(
        cas.xorb_bytes() - before >= pair.v2.len() as u64,
        "{}",
        cas.xorb_bytes()
    );
    assert_eq!(d["attempt"], 0, "{d}");
    assert!(d["error"].is_null(), "{d}");
}
