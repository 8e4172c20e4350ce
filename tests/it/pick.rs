//! `model-manager pull owner/name[:TAG]` (the real binary, against the Hub emulator)
//! queues exactly what llama.cpp's `-hf` fetches for the same spec: the model's parts
//! and its mmproj (not with `--no-mmproj`), or a root `preset.ini` alone. The rules
//! themselves are a table in `src/hub/pick_tests.rs`.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use common::binary::*;
use common::hub::{HubEmu, RepoOptions};
use common::service::{content, file_sha256, sha256_hex};
use common::terminal::run;
use common::upstream::Upstream;

/// A multimodal repo: Q4_K_M split in a folder, a Q8_0 file, an imatrix that the tag
/// `Q4_K_M` also matches, and two projectors at the root.
const VISION: &[&str] = &[
    "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf",
    "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf",
    "m-Q4_K_M.imatrix.gguf",
    "m-Q8_0.gguf",
    "mmproj-m-F16.gguf",
    "mmproj-m-Q8_0.gguf",
    "README.md",
];

/// The Hub with these repos, and every file's bytes by `repo/path`.
fn hub_with(repos: &[(&str, &[&str])]) -> (HubEmu, HashMap<String, Vec<u8>>) {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    let mut bytes = HashMap::new();
    for (i, (repo, files)) in repos.iter().enumerate() {
        hub.add_repo(repo, RepoOptions::default());
        for (j, f) in files.iter().enumerate() {
            let data = content(20_000 + j, (i * 100 + j) as u64);
            hub.put_file(repo, f, data.clone());
            bytes.insert(format!("{repo}/{f}"), data);
        }
    }
    (hub, bytes)
}

fn cfg(config: &Path) -> &str {
    config.to_str().expect("utf-8 path")
}

/// Every download of the queue, as `repo/path`.
async fn queued(p: &Proc) -> BTreeSet<String> {
    let list = p.get("/api/downloads").await;
    list["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .map(|d| d["path"].as_str().expect("path").to_owned())
        .collect()
}

fn set(repo: &str, files: &[&str]) -> BTreeSet<String> {
    files.iter().map(|f| format!("{repo}/{f}")).collect()
}

#[tokio::test]
async fn pull_queues_what_llama_cpp_fetches_with_its_mmproj_and_not_with_no_mmproj() {
    let (hub, bytes) = hub_with(&[
        ("o/vision", VISION),
        ("o/vision2", VISION),
        ("o/vision3", VISION),
    ]);
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, config, _port, p) = Proc::start(&extra).await;
    let downloads = dir.path().join("downloads");
    let c = cfg(&config);

    // No tag: Q4_K_M first (find_best_model's defaults); the imatrix is no model, part
    // 1 is the primary, part 2 goes with it; the mmproj is the root one closest in bits
    // (|8-4| < |16-4|).
    let out = run(&["--config", c, "pull", "o/vision"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let want = set(
        "o/vision",
        &[
            "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf",
            "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf",
            "mmproj-m-Q8_0.gguf",
        ],
    );
    assert_eq!(queued(&p).await, want);
    for path in &want {
        assert_eq!(
            file_sha256(&downloads.join(path)),
            sha256_hex(&bytes[path]),
            "{path}"
        );
    }

    // A lower-case tag and --no-mmproj: the Q8_0 file alone.
    let out = run(
        &["--config", c, "pull", "o/vision2:q8_0", "--no-mmproj"],
        dir.path(),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut want_all = want.clone();
    want_all.extend(set("o/vision2", &["m-Q8_0.gguf"]));
    assert_eq!(queued(&p).await, want_all);

    // The same tag with the mmproj, in a copy of the repo: the projector comes too.
    let out = run(&["--config", c, "pull", "o/vision3:Q8_0"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    want_all.extend(set("o/vision3", &["m-Q8_0.gguf", "mmproj-m-Q8_0.gguf"]));
    assert_eq!(queued(&p).await, want_all);

    // A tag that only an mmproj has is no model: refused, nothing queued.
    let out = run(&["--config", c, "pull", "o/vision2:F16"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no F16"), "{out:?}");
    assert_eq!(queued(&p).await, want_all);
}

#[tokio::test]
async fn a_root_preset_is_pulled_alone_and_said_so() {
    let (hub, _) = hub_with(&[
        ("o/preset", &["m-Q4_K_M.gguf", "preset.ini"]),
        ("o/deep", &["m-Q4_K_M.gguf", "sub/preset.ini"]),
    ]);
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, config, _port, p) = Proc::start(&extra).await;
    let c = cfg(&config);

    let out = run(&["--config", c, "pull", "o/preset:Q4_K_M"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("preset.ini at its root"), "{out:?}");
    assert_eq!(queued(&p).await, set("o/preset", &["preset.ini"]));

    // A preset in a sub-folder is just a file.
    let out = run(&["--config", c, "pull", "o/deep"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stderr.contains("preset.ini"), "{out:?}");
    let mut want = set("o/preset", &["preset.ini"]);
    want.extend(set("o/deep", &["m-Q4_K_M.gguf"]));
    assert_eq!(queued(&p).await, want);
}

#[tokio::test]
async fn a_tag_outside_llama_cpps_letters_is_refused_before_any_request() {
    let (hub, _) = hub_with(&[("o/vision", VISION)]);
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, config, _port, p) = Proc::start(&extra).await;
    let c = cfg(&config);
    for bad in ["o/vision:Q4*", "o/vision:(Q4|Q8)", "o/vision:../x"] {
        let out = run(&["--config", c, "pull", bad], dir.path()).await;
        assert_eq!(out.code, Some(2), "{bad}: {out:?}");
    }
    let (status, v) = p
        .post(
            "/api/hub/models/o/vision/download",
            serde_json::json!({"quantization": "Q.*"}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(queued(&p).await.is_empty());
}

/// An upstream that lies: its tree names a file outside the repo's folder, where the tag
/// matches first. llama.cpp's `get_repo_files` drops such a path (`is_valid_subpath`)
/// before it picks, so the pick takes the next match, and nothing outside is queued.
#[actix_web::test]
async fn a_tree_naming_a_path_outside_the_repo_is_skipped_as_llama_cpp_skips_it() {
    let up = Upstream::start();
    let tree = serde_json::json!([
        {"type": "file", "path": "../../m-Q4_K_M.gguf", "size": 10,
         "lfs": {"oid": "a".repeat(64), "size": 10}},
        {"type": "file", "path": "m-Q4_K_M.gguf", "size": 10,
         "lfs": {"oid": "b".repeat(64), "size": 10}},
    ]);
    up.add_file(
        "api/models/o/evil/tree/main",
        tree.to_string().into_bytes(),
        common::upstream::Behavior::default(),
    );
    let endpoint = up.url("");
    let svc = common::service::TestService::start(move |c| {
        c.hub.endpoint = endpoint.trim_end_matches('/').to_owned();
    })
    .await;
    let (s, v) = svc
        .post(
            "/api/hub/models/o/evil/download",
            serde_json::json!({"quantization": "Q4_K_M", "start_paused": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let paths: Vec<&str> = v["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .map(|d| d["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["o/evil/m-Q4_K_M.gguf"], "{v}");
}
