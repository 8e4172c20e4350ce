//! The update watch against the emulated Hub: a check marks exactly the files the Hub
//! has newer (one request per repo), an update replaces the file only once the new one
//! is verified (a `kill -9` in between leaves the old one whole), the HF cache then
//! resolves `main` to the new commit and keeps the old snapshot, for `huggingface_hub`
//! itself; a 429 with `RateLimit` is waited out.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::Proc;
use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";
const Q4: &str = "Tiny-Q4_K_M.gguf";
const Q8: &str = "Tiny-Q8_0.gguf";

fn file_of(lib: &Value, path: &str) -> Value {
    lib["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == path).cloned())
        .unwrap_or(Value::Null)
}

/// Polls `GET /api/library` until `pred` holds for the file at `path`.
async fn wait_lib(proc: &Proc, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    common::wait::eventually(LONG, || async {
        let lib = proc.get("/api/library").await;
        let f = file_of(&lib, path);
        if pred(&f) {
            Ok(f)
        } else {
            Err(format!("{path}: {what}: {lib}"))
        }
    })
    .await
}

/// The update a check marked: the new commit, sha256 and size, and `fetch_bytes` (what
/// the update will fetch, told a moment after the mark: all of a file that is not
/// Xet-backed).
fn assert_marked(marked: &Value, new_commit: &str, new: &[u8]) {
    let mut update = marked["update"].clone();
    let told = update
        .as_object_mut()
        .and_then(|u| u.remove("fetch_bytes"))
        .unwrap_or(Value::Null);
    assert!(told.is_null() || told == json!(new.len()), "{marked}");
    assert_eq!(
        update,
        json!({"revision": new_commit, "sha256": sha256_hex(new), "size": new.len()})
    );
}

fn model_info_requests(hub: &HubEmu) -> usize {
    hub.requests()
        .iter()
        .filter(|r| r.path.starts_with(&format!("/api/models/{REPO}/revision/")))
        .count()
}

const HF_READ: &str = r#"
import json, os
from huggingface_hub import hf_hub_download
repo = os.environ["REPO"]
out = {}
for name, rev in json.loads(os.environ["ASK"]):
    with open(hf_hub_download(repo, name, revision=rev), "rb") as f:
        import hashlib
        out[f"{name}@{rev}"] = hashlib.sha256(f.read()).hexdigest()
print(json.dumps(out))
"#;

fn hf_read(cache: &Path, ask: &[(&str, &str)]) -> Value {
    let out = Command::new("python3")
        .args(["-c", HF_READ])
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("REPO", REPO)
        .env("ASK", serde_json::to_string(ask).unwrap())
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "huggingface_hub (pip install huggingface_hub): {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The service, as a process, with the Hub and the HF cache configured.
async fn start(hub: &HubEmu, cache: &Path) -> (tempfile::TempDir, std::path::PathBuf, u16, Proc) {
    Proc::start(&format!(
        "[hub]\nendpoint = \"{}\"\n\n[library]\nhf_cache = \"{}\"\ncheck_updates_hours = 0\n",
        hub.endpoint(),
        cache.display()
    ))
    .await
}

async fn fetch_both(proc: &Proc) {
    for quant in ["Q4_K_M", "Q8_0"] {
        let (s, v) = proc
            .post(
                &format!("/api/hub/models/{REPO}/download"),
                json!({ "quantization": quant }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["downloads"][0]["id"].as_str().unwrap().to_owned();
        proc.wait_download(&id, LONG, |d| d["state"] == "completed")
            .await;
    }
    for f in [Q4, Q8] {
        wait_lib(proc, &format!("{REPO}/{f}"), "published", |f| {
            f["runtimes"]["hf_cache"].is_string()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_marks_only_the_changed_file_and_the_update_survives_kill_9() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let (old, q8) = (content(400_000, 1), content(300_000, 2));
    hub.put_file(REPO, Q4, old.clone());
    let old_commit = hub.put_file(REPO, Q8, q8.clone());
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("hf");
    let (dir, config, port, mut proc) = start(&hub, &cache).await;
    fetch_both(&proc).await;

    // The Hub moves main: a re-uploaded Q4_K_M; Q8_0 unchanged.
    let new = content(2_000_000, 3);
    let new_commit = hub.put_file(REPO, Q4, new.clone());
    let before = model_info_requests(&hub);
    let (s, v) = proc.post("/api/library/check-updates", json!({})).await;
    assert_eq!(s, 202, "{v}");
    let q4_path = format!("{REPO}/{Q4}");
    let marked = wait_lib(&proc, &q4_path, "an update", |f| f["update"].is_object()).await;
    assert_marked(&marked, &new_commit, &new);
    let lib = proc.get("/api/library").await;
    assert!(
        file_of(&lib, &format!("{REPO}/{Q8}"))["update"].is_null(),
        "{lib}"
    );
    assert_eq!(
        model_info_requests(&hub) - before,
        1,
        "one request per repo: {:?}",
        hub.requests()
    );

    // The update, slowed down, and a kill -9 halfway: the old file stays whole.
    let slow = Behavior {
        rate_bps: Some(400_000),
        ..Default::default()
    };
    hub.set_cdn_behavior_at(REPO, &new_commit, Q4, slow);
    let (s, d) = proc
        .post("/api/library/update", json!({ "path": q4_path }))
        .await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    proc.wait_download(&id, LONG, |d| d["bytes_done"].as_u64() > Some(200_000))
        .await;
    proc.kill9();
    let ours = dir.path().join("downloads").join(&q4_path);
    assert_eq!(
        file_sha256(&ours),
        sha256_hex(&old),
        "the old file is whole under its name"
    );

    hub.set_cdn_behavior_at(REPO, &new_commit, Q4, Behavior::default());
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    proc.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    assert_eq!(file_sha256(&ours), sha256_hex(&new));
    let f = wait_lib(&proc, &q4_path, "the new revision", |f| {
        f["revision"] == new_commit
    })
    .await;
    assert!(f["update"].is_null(), "{f}");
    wait_lib(&proc, &q4_path, "published", |f| {
        f["runtimes"]["hf_cache"].is_string()
    })
    .await;

    // huggingface_hub, offline: main is the new commit (both files), the old one stays.
    let repo_dir = cache.join("models--bartowski--Tiny-GGUF");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        new_commit
    );
    let got = hf_read(&cache, &[(Q4, "main"), (Q8, "main"), (Q4, &old_commit)]);
    assert_eq!(got[format!("{Q4}@main")], sha256_hex(&new), "{got}");
    assert_eq!(got[format!("{Q8}@main")], sha256_hex(&q8), "{got}");
    assert_eq!(got[format!("{Q4}@{old_commit}")], sha256_hex(&old), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_waits_out_a_429_and_says_when_a_repo_became_gated() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, Q4, content(100_000, 1));
    hub.put_file(REPO, Q8, content(100_000, 2));
    let root = tempfile::tempdir().unwrap();
    let (_dir, _config, _port, proc) = start(&hub, &root.path().join("hf")).await;
    fetch_both(&proc).await;
    let new = content(100_000, 9);
    let commit = hub.put_file(REPO, Q4, new.clone());

    hub.fail_next(vec![(429, Some(2))]);
    let asked = Instant::now();
    let (s, _) = proc.post("/api/library/check-updates", json!({})).await;
    assert_eq!(s, 202);
    let f = wait_lib(&proc, &format!("{REPO}/{Q4}"), "an update", |f| {
        f["update"].is_object()
    })
    .await;
    assert!(
        asked.elapsed() >= Duration::from_millis(1900),
        "the 429's wait was honoured"
    );
    assert_eq!(f["update"]["revision"], commit);
    let statuses: Vec<u16> = hub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(&format!("/api/models/{REPO}/revision/")))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 200]);

    // Gated meanwhile: the check finishes and says so, it does not fail.
    hub.add_repo(
        REPO,
        RepoOptions {
            gated_token: Some("t".into()),
            ..Default::default()
        },
    );
    let (s, _) = proc.post("/api/library/check-updates", json!({})).await;
    assert_eq!(s, 202);
    let f = wait_lib(&proc, &format!("{REPO}/{Q8}"), "gated", |f| {
        f["update_error"]
            .as_str()
            .is_some_and(|e| e.contains("gated"))
    })
    .await;
    assert!(f["update"].is_null(), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_a_file_without_one_is_refused_and_changes_nothing() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, Q4, content(100_000, 1));
    hub.put_file(REPO, Q8, content(100_000, 2));
    let root = tempfile::tempdir().unwrap();
    let (_dir, _config, _port, proc) = start(&hub, &root.path().join("hf")).await;
    fetch_both(&proc).await;
    let (s, v) = proc
        .post(
            "/api/library/update",
            json!({"path": format!("{REPO}/{Q4}")}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (s, v) = proc
        .post("/api/library/update", json!({"path": "no/such.gguf"}))
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = proc
        .post("/api/library/update", json!({"path": "../etc/passwd"}))
        .await;
    assert_eq!(s, 422, "{v}");
    let downloads = proc.get("/api/downloads").await;
    assert_eq!(
        downloads["downloads"].as_array().unwrap().len(),
        2,
        "nothing was queued"
    );
}
