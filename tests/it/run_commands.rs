//! A library entry's `run`: the commands that run it now, by runtime. llama.cpp's `-hf`
//! tag only where llama.cpp's pick resolves it back to the very file, `--hf-file`
//! otherwise, `-m <path>` for a file not from the Hub; Ollama's name where published.
//! Through the API, and printed by `model-manager library`.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::binary::Proc;
use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::terminal::run;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";
const SINGLE: &str = "Tiny-Q4_K_M.gguf";
const PARTS: [&str; 2] = [
    "Q8_0/Tiny-Q8_0-00001-of-00002.gguf",
    "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
];

/// A GGUF the library reads without an error (version 3, no tensors, no keys), padded.
pub fn gguf(len: usize, seed: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(content(len, seed));
    out
}

fn hub() -> HubEmu {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, SINGLE, gguf(50_000, 1));
    for (i, p) in PARTS.iter().enumerate() {
        hub.put_file(REPO, p, gguf(40_000, 2 + i as u64));
    }
    // `Q4_K_M` reaches a.… first in the tree: b.… can only be named by file.
    hub.add_repo("o/two", RepoOptions::default());
    hub.put_file("o/two", "a.Q4_K_M.gguf", gguf(30_000, 5));
    hub.put_file("o/two", "b.Q4_K_M.gguf", gguf(30_000, 6));
    hub
}

async fn run_of(svc: &TestService, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let list = || async move { svc.get("/api/library").await.1 };
    let f = common::wait::library_file_where(LONG, list, path, "with its run commands", |f| {
        pred(&f["run"])
    })
    .await;
    f["run"].clone()
}

async fn add_hub_file(svc: &TestService, repo: &str, file: &str) {
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": repo, "file": file}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id");
    svc.wait_state(id, "completed", LONG).await;
}

#[actix_web::test]
async fn run_commands_for_a_hub_file_a_split_a_file_named_only_by_path_a_url_and_ollama() {
    let hub = hub();
    let up = Upstream::start();
    up.add_file("plain.gguf", gguf(20_000, 9), Behavior::default());
    let root = tempfile::tempdir().unwrap();
    let ollama = root.path().join("ollama");
    let (o, endpoint) = (ollama.display().to_string(), hub.endpoint());
    let cache = root.path().join("hf cache");
    let hf = cache.display().to_string();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.ollama_models = o;
        c.library.hf_cache = hf;
    })
    .await;
    let dir = svc.download_dir();
    // Not llama.cpp's default cache: its commands say where ours is.
    let env = format!("HF_HUB_CACHE='{}' ", cache.display());

    // A single Hub file, published to Ollama.
    svc.fetch_quantization(REPO, "Q4_K_M", LONG).await;
    let run = run_of(&svc, &format!("{REPO}/{SINGLE}"), |r| {
        r["ollama"].is_string()
    })
    .await;
    assert_eq!(
        run,
        json!({
            "llama.cpp": format!("{env}llama-server -hf {REPO}:Q4_K_M"),
            "ollama": format!("ollama run hf.co/{REPO}:Q4_K_M"),
        })
    );

    // A split: every part runs the model by its tag; Ollama cannot load a split.
    svc.fetch_quantization(REPO, "q8_0", LONG).await;
    for p in PARTS {
        let run = run_of(&svc, &format!("{REPO}/{p}"), |r| r.is_object()).await;
        assert_eq!(
            run,
            json!({"llama.cpp": format!("{env}llama-server -hf {REPO}:Q8_0")}),
            "{p}"
        );
    }

    // A Hub file whose repo's tree this service has not listed: named by file.
    add_hub_file(&svc, "o/two", "b.Q4_K_M.gguf").await;
    // (Ollama's name for it is checked above; only llama.cpp's command is looked at.)
    let by_file = json!(format!(
        "{env}llama-server --hf-repo o/two --hf-file b.Q4_K_M.gguf"
    ));
    let llama = |r: Value| r["llama.cpp"].clone();
    assert_eq!(
        llama(run_of(&svc, "o/two/b.Q4_K_M.gguf", |r| r.is_object()).await),
        by_file
    );
    // Listed now: the tag `Q4_K_M` resolves to a.…, so b.… stays named by file, and
    // a.… gets the tag.
    let (s, _) = svc.get("/api/hub/models/o/two/files").await;
    assert_eq!(s, 200);
    add_hub_file(&svc, "o/two", "a.Q4_K_M.gguf").await;
    assert_eq!(
        llama(run_of(&svc, "o/two/b.Q4_K_M.gguf", |r| r.is_object()).await),
        by_file
    );
    assert_eq!(
        llama(run_of(&svc, "o/two/a.Q4_K_M.gguf", |r| r.is_object()).await),
        json!(format!("{env}llama-server -hf o/two:Q4_K_M"))
    );

    // A file from a URL: by its absolute path, shell-quoted.
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("plain.gguf"), "file_name": "my model's.gguf"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    svc.wait_state(v["id"].as_str().unwrap(), "completed", LONG)
        .await;
    let run = run_of(&svc, "my model's.gguf", |r| r.is_object()).await;
    let full = dir.join("my model's.gguf").display().to_string();
    let quoted = format!("'{}'", full.replace('\'', r"'\''"));
    assert_eq!(
        run,
        json!({"llama.cpp": format!("llama-server -m {quoted}")})
    );
    assert_unquoted_path_runs(&quoted, &full);
}

/// The quoting is what a POSIX shell reads back as the one word.
fn assert_unquoted_path_runs(quoted: &str, full: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {quoted}"))
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), full);
}

#[tokio::test]
async fn model_manager_library_prints_the_run_commands() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let extra = format!(
        "[hub]\nendpoint = \"{}\"\n[library]\nhf_cache = \"{}\"\n",
        hub.endpoint(),
        cache.path().display()
    );
    let (dir, config, _port, _p) = Proc::start(&extra).await;
    let c = config.to_str().expect("utf-8");
    let pulled = run(
        &["--config", c, "pull", &format!("{REPO}:Q4_K_M")],
        dir.path(),
    )
    .await;
    assert_eq!(pulled.code, Some(0), "{pulled:?}");
    let lib = library_when(c, dir.path(), "llama-server -hf").await;
    let lines: Vec<&str> = lib.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "RUN")
        .expect("a RUN section");
    assert_eq!(lines[at + 1], format!("{REPO}/{SINGLE}"), "{lib}");
    assert_eq!(
        lines[at + 2],
        format!(
            "  llama.cpp  HF_HUB_CACHE={} llama-server -hf {REPO}:Q4_K_M",
            cache.path().display()
        ),
        "{lib}"
    );
}

async fn library_when(c: &str, at: &Path, holds: &str) -> String {
    common::wait::eventually(LONG, || async {
        let out = run(&["--config", c, "library"], at).await;
        if out.stdout.contains(holds) {
            return Ok(out.stdout);
        }
        Err(format!("no {holds:?} in {out:?}"))
    })
    .await
}
