//! A completed download reaches the library as ours (its repo, commit and download id)
//! in the real binary, whatever door started it, and however its completion and the
//! library's own scans interleave: a miss of the Ollama registry and a plain Hub
//! download, each several times in a fresh process (the loss was a race: about one
//! run in two lost the repo).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::binary::{test_client, Proc};
use common::hub::{HubEmu, RepoOptions};
use common::service::content;
use common::upstream::Upstream;
use serde_json::{json, Value};

const REPO: &str = "bartowski/Tiny-Chat-GGUF";
const FILE: &str = "Tiny-Chat-Q4_K_M.gguf";
/// Runs per test: the race lost about one run in two before its fix.
const RUNS: usize = 6;
const WAIT: Duration = Duration::from_secs(30);

fn gstr(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

/// A GGUF (v3, no tensors) with an architecture, a name and a chat template, then
/// `filler` bytes.
fn tiny_gguf(filler: usize, seed: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(3u64.to_le_bytes());
    for (k, v) in [
        ("general.architecture", "llama"),
        ("general.name", "Tiny Chat"),
        ("tokenizer.chat_template", "{{ messages }}"),
    ] {
        out.extend(gstr(k));
        out.extend(8u32.to_le_bytes());
        out.extend(gstr(v));
    }
    out.extend(content(filler, seed));
    out
}

/// The library's entry of `REPO/FILE` once it names its repo (panics after `WAIT`
/// with the library and the download as they are: a file left as hand-placed never
/// gets there).
async fn wait_for_repo(proc: &Proc, run: usize) -> Value {
    let path = format!("{REPO}/{FILE}");
    common::wait::eventually(WAIT, || async {
        let lib = proc.get("/api/library").await;
        let downloads = proc.get("/api/downloads").await;
        let entry = lib["files"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["path"] == path.as_str()).cloned());
        match entry {
            Some(e) if e["repo"] == REPO && e["download_id"].is_string() => Ok(e),
            _ => Err(format!(
                "run {run}: the library has no repo for {path}: {lib}\ndownloads: {downloads}"
            )),
        }
    })
    .await
}

/// A hub with `REPO/FILE` and the binary pointed at it.
async fn start() -> (HubEmu, tempfile::TempDir, Proc) {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, FILE, tiny_gguf(20_000, 31));
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, _config, _port, proc) = Proc::start(&extra).await;
    (hub, dir, proc)
}

#[tokio::test]
async fn a_registry_miss_lands_in_the_library_with_its_repo() {
    for run in 0..RUNS {
        let (_hub, _dir, proc) = start().await;
        let r = test_client()
            .get(format!("{}/v2/{REPO}/manifests/Q4_K_M", proc.base))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .expect("manifest");
        assert_eq!(r.status(), 200, "run {run}: {:?}", r.text().await);
        let entry = wait_for_repo(&proc, run).await;
        let downloads = proc.get("/api/downloads").await;
        let ids: Vec<&Value> = downloads["downloads"]
            .as_array()
            .expect("downloads")
            .iter()
            .map(|d| &d["id"])
            .collect();
        assert_eq!(ids, vec![&entry["download_id"]], "{entry}\n{downloads}");
    }
}

#[tokio::test]
async fn a_hub_download_lands_in_the_library_with_its_repo() {
    for run in 0..RUNS {
        let (_hub, _dir, proc) = start().await;
        let id = proc.add(json!({"hub": {"repo": REPO, "file": FILE}})).await;
        proc.wait_download(&id, WAIT, |d| d["state"] == "completed")
            .await;
        let entry = wait_for_repo(&proc, run).await;
        assert_eq!(entry["download_id"], id.as_str(), "{entry}");
    }
}

/// A kill (SIGKILL) once the library shows the file as ours: the next start still does.
#[tokio::test]
async fn a_completed_download_stays_ours_across_a_kill() {
    for run in 0..RUNS {
        let hub = HubEmu::start(Arc::new(Upstream::start()));
        hub.add_repo(REPO, RepoOptions::default());
        hub.put_file(REPO, FILE, tiny_gguf(20_000, 31));
        let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
        let (_dir, config, port, mut proc) = Proc::start(&extra).await;
        let id = proc.add(json!({"hub": {"repo": REPO, "file": FILE}})).await;
        proc.wait_download(&id, WAIT, |d| d["state"] == "completed")
            .await;
        wait_for_repo(&proc, run).await;
        proc.kill9();
        let mut proc = Proc::spawn(&config, port);
        proc.wait_healthy().await;
        let entry = wait_for_repo(&proc, run).await;
        assert_eq!(entry["download_id"], id.as_str(), "{entry}");
    }
}

/// What a scan takes for a download's is the very file it completed, never a name: a
/// file of the same size put in its place (another inode) while the service was down
/// is read as put there by hand.
#[tokio::test]
async fn a_file_swapped_in_while_down_is_not_the_downloads() {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(REPO, RepoOptions::default());
    let bytes = tiny_gguf(20_000, 31);
    hub.put_file(REPO, FILE, bytes.clone());
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, config, port, mut proc) = Proc::start(&extra).await;
    let id = proc.add(json!({"hub": {"repo": REPO, "file": FILE}})).await;
    proc.wait_download(&id, WAIT, |d| d["state"] == "completed")
        .await;
    wait_for_repo(&proc, 0).await;
    proc.kill9();
    // The same bytes even, but another file: a copy renamed over it.
    let path = dir.path().join("downloads").join(REPO).join(FILE);
    let copy = path.with_extension("copy");
    std::fs::write(&copy, &bytes).expect("a copy");
    std::fs::rename(&copy, &path).expect("swapped in");
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    let (status, scanned) = proc.post("/api/library/rescan", json!({})).await;
    assert_eq!(status, 200, "{scanned}");
    let lib = proc.get("/api/library").await;
    let entry = lib["files"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["path"] == format!("{REPO}/{FILE}"))
                .cloned()
        })
        .expect("the file is listed");
    assert!(entry["download_id"].is_null(), "{entry}");
    assert!(entry["repo"].is_null(), "{entry}");
}

/// Scans hammered while downloads complete (each may index a file before its
/// completion reaches the library): every file still ends as its download's.
#[tokio::test]
async fn rescans_racing_completions_leave_every_file_its_downloads() {
    const FILES: usize = 8;
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(REPO, RepoOptions::default());
    for i in 0..FILES {
        hub.put_file(
            REPO,
            &format!("m{i}-Q4_K_M.gguf"),
            tiny_gguf(20_000, i as u64),
        );
    }
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (_dir, _config, _port, proc) = Proc::start(&extra).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (stop, base) = (stop.clone(), proc.base.clone());
        tokio::spawn(async move {
            let client = test_client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .post(format!("{base}/api/library/rescan"))
                    .json(&json!({}))
                    .send()
                    .await;
            }
        })
    };
    let mut ids = Vec::new();
    for i in 0..FILES {
        let file = format!("m{i}-Q4_K_M.gguf");
        ids.push(proc.add(json!({"hub": {"repo": REPO, "file": file}})).await);
    }
    for id in &ids {
        proc.wait_download(id, WAIT, |d| d["state"] == "completed")
            .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammer.await.expect("the rescans");
    common::wait::eventually(WAIT, || async {
        let lib = proc.get("/api/library").await;
        let ours = lib["files"].as_array().map_or(0, |f| {
            f.iter()
                .filter(|f| f["repo"] == REPO && f["download_id"].is_string())
                .count()
        });
        (ours == FILES)
            .then_some(())
            .ok_or_else(|| format!("{ours} of {FILES} are their download's: {lib}"))
    })
    .await;
}
