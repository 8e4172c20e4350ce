//! The page in real headless Chromium against the real binary: add a URL through the
//! form, watch it move, pause, resume, survive a service restart without a reload
//! (page.mjs); the Hub tab (hub.mjs); every row's buttons follow its `actions`
//! (actions.mjs); the Library tab (library.mjs), its update watch (library_update.mjs)
//! and its run commands with their copy buttons (library_run.mjs). `scripts/test.sh` installs Chromium,
//! playwright-core and the `gguf` Python package.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::binary::*;
use common::service::{content, file_sha256, sha256_hex, MIB};
use common::upstream::{Behavior, Upstream};

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(_) => panic!("the browser driver never printed {prefix:?}"),
        }
    }
}

#[tokio::test]
async fn the_page_drives_a_download_and_survives_a_restart() {
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let up = Upstream::start();
    let size = 48 * MIB;
    let data = content(size, 99);
    up.add_file(
        "page-test.gguf",
        data.clone(),
        Behavior {
            rate_bps: Some(4 * MIB as u64),
            ..Default::default()
        },
    );

    // One connection, so that the throttled file lasts through pause, resume and restart.
    let (dir, config, port, mut service) =
        Proc::start("[downloads]\nconnections_per_download = 1\n").await;

    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let mut node = Command::new("node")
        .arg("page.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_FILE_URL", up.url("page-test.gguf"))
        .env("MM_SCREENSHOT_DIR", shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (run scripts/test.sh to install it)");
    let (tx, rx) = mpsc::channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
            let _ = tx.send(line);
        }
    });

    wait_line(&rx, "STEP resumed", Duration::from_secs(90));
    // Restart mid-download: a clean stop, then the same binary on the same data.
    service.sigterm();
    assert_eq!(service.wait_exit(Duration::from_secs(15)).code(), Some(0));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut service = Proc::spawn(&config, port);
    service.wait_healthy().await;

    wait_line(&rx, "STEP screenshots saved", Duration::from_secs(120));
    let status = node.wait().unwrap();
    assert!(status.success(), "the browser driver failed: {status}");
    assert_eq!(
        file_sha256(&dir.path().join("downloads/page-test.gguf")),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn the_hub_tab_finds_a_model_and_queues_a_split_quantization() {
    use common::hub::{HubEmu, RepoOptions};
    use std::sync::Arc;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    let repo = "TheBloke/TinyModel-GGUF";
    hub.add_repo(
        repo,
        RepoOptions {
            downloads: 9000,
            likes: 42,
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    let parts = [content(3 * MIB, 1), content(2 * MIB, 2)];
    hub.put_file(repo, "tiny-Q4_K_M.gguf", content(MIB, 3));
    hub.put_file(repo, "tiny-F16-00001-of-00002.gguf", parts[0].clone());
    hub.put_file(repo, "tiny-F16-00002-of-00002.gguf", parts[1].clone());
    hub.add_repo(
        "meta/tiny-gated-GGUF",
        RepoOptions {
            gated_token: Some("t".into()),
            downloads: 5,
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    hub.put_file("meta/tiny-gated-GGUF", "x-Q4_0.gguf", content(1000, 4));

    let (dir, _config, _port, mut service) =
        Proc::start(&format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint())).await;
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let out = Command::new("node")
        .arg("hub.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_SCREENSHOT_DIR", shots)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (run scripts/test.sh to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("STEP done"),
        "the Hub tab driver failed: {stdout}"
    );
    for (name, data) in [
        "tiny-F16-00001-of-00002.gguf",
        "tiny-F16-00002-of-00002.gguf",
    ]
    .iter()
    .zip(&parts)
    {
        let file = dir.path().join("downloads").join(repo).join(name);
        assert_eq!(file_sha256(&file), sha256_hex(data), "{name}");
    }
    service.kill9();
}

#[tokio::test]
async fn the_page_buttons_follow_each_downloads_actions() {
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let up = Upstream::start();
    up.add_file("small.gguf", content(256 * 1024, 5), Behavior::default());
    // Throttled so that they stay downloading (or waiting) through the whole script.
    for (i, name) in ["a.gguf", "b.gguf", "c.gguf", "p.gguf", "x.gguf"]
        .iter()
        .enumerate()
    {
        up.add_file(
            name,
            content(32 * MIB, 10 + i as u64),
            Behavior {
                rate_bps: Some(256 * 1024),
                ..Default::default()
            },
        );
    }
    // One at a time: the others wait queued behind the running one.
    let (_dir, _config, _port, mut service) =
        Proc::start("[downloads]\nmax_concurrent = 1\nconnections_per_download = 1\n").await;
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let out = Command::new("node")
        .arg("actions.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_SCREENSHOT_DIR", shots)
        .env("MM_URL_SMALL", up.url("small.gguf"))
        .env("MM_URL_MISSING", up.url("no-such-file.gguf"))
        .env("MM_URL_A", up.url("a.gguf"))
        .env("MM_URL_B", up.url("b.gguf"))
        .env("MM_URL_C", up.url("c.gguf"))
        .env("MM_URL_P", up.url("p.gguf"))
        .env("MM_URL_X", up.url("x.gguf"))
        .stderr(Stdio::inherit())
        .output()
        .expect("node (run scripts/test.sh to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("STEP done"),
        "the actions driver failed: {stdout}"
    );
    service.kill9();
}

/// Writes the hand-placed GGUF files (and the Hub's one) with llama.cpp's `gguf` package.
fn write_library_ggufs(downloads: &std::path::Path, hub_file: &std::path::Path) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/library_ggufs.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .env("DOWNLOADS", downloads)
        .env("HUB_FILE", hub_file)
        .output()
        .expect("python3 runs (install Python 3)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the gguf package is missing: run scripts/test.sh (or `python3 -m pip install gguf`): {stderr}"
    );
    assert!(out.status.success(), "library_ggufs.py failed: {stderr}");
}

#[tokio::test]
async fn the_library_tab_shows_each_models_metadata_and_deletes_after_a_confirmation() {
    use common::hub::{HubEmu, RepoOptions};
    use std::sync::Arc;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    let repo = "ggml-org/stories15M-GGUF";
    hub.add_repo(
        repo,
        RepoOptions {
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    let cache_root = tempfile::tempdir().unwrap();
    let hub_file = cache_root.path().join("stories15M-Q8_0.gguf");
    let cache = cache_root.path().join("hf");
    let extra = format!(
        "[hub]\nendpoint = \"{}\"\n\n[library]\nhf_cache = \"{}\"\n",
        hub.endpoint(),
        cache.display()
    );
    let (dir, _config, _port, mut service) = Proc::start(&extra).await;
    let downloads = dir.path().join("downloads");
    write_library_ggufs(&downloads, &hub_file);
    hub.put_file(
        repo,
        "stories15M-Q8_0.gguf",
        std::fs::read(&hub_file).unwrap(),
    );
    let (status, v) = service
        .post("/api/library/rescan", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let by_hand = [
        "bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0-00001-of-00002.gguf",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0-00002-of-00002.gguf",
        "old-model-Q5_K_M.gguf",
    ];

    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let out = Command::new("node")
        .arg("library.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_SCREENSHOT_DIR", shots)
        .env("MM_DOWNLOAD_DIR", &downloads)
        .env("MM_HUB_REPO", repo)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (run scripts/test.sh to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("STEP done"),
        "the Library tab driver failed: {stdout}"
    );
    // The delete took the file and its HF cache entry, and nothing else.
    assert!(!downloads.join(repo).join("stories15M-Q8_0.gguf").exists());
    let snapshots = cache.join("models--ggml-org--stories15M-GGUF/snapshots");
    let left: Vec<_> = walk(&snapshots)
        .into_iter()
        .filter(|p| p.ends_with("stories15M-Q8_0.gguf"))
        .collect();
    assert!(left.is_empty(), "still in the HF cache: {left:?}");
    for path in by_hand {
        assert!(downloads.join(path).is_file(), "{path} was touched");
    }
    service.kill9();
}

#[tokio::test]
async fn the_library_tab_shows_an_update_and_its_button_replaces_the_file() {
    use common::hub::{HubEmu, RepoOptions};
    use std::sync::Arc;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    let repo = "bartowski/Tiny-GGUF";
    let file = "Tiny-Q4_K_M.gguf";
    hub.add_repo(repo, RepoOptions::default());
    hub.put_file(repo, file, content(300_000, 1));
    let extra = format!(
        "[hub]\nendpoint = \"{}\"\n\n[library]\ncheck_updates_hours = 0\n",
        hub.endpoint()
    );
    let (dir, _config, _port, mut service) = Proc::start(&extra).await;
    let (status, v) = service
        .post(
            "/api/downloads",
            serde_json::json!({"hub": {"repo": repo, "file": file}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    service
        .wait_download(&id, Duration::from_secs(30), |d| d["state"] == "completed")
        .await;
    let newer = content(500_000, 2);
    let commit = hub.put_file(repo, file, newer.clone());
    let path = format!("{repo}/{file}");
    let out = Command::new("node")
        .arg("library_update.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_PATH", &path)
        .env("MM_NEW_SHA", sha256_hex(&newer))
        .env("MM_NEW_COMMIT", &commit)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (run scripts/test.sh to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("STEP done"),
        "the update driver failed: {stdout}"
    );
    let on_disk = dir.path().join("downloads").join(&path);
    assert_eq!(file_sha256(&on_disk), sha256_hex(&newer));
    service.kill9();
}

/// Every entry under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn the_library_tab_shows_the_run_commands_and_copy_copies_them() {
    use common::hub::{HubEmu, RepoOptions};
    use std::sync::Arc;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    assert!(
        std::path::Path::new(driver).join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs Chromium and playwright-core)"
    );
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    let repo = "bartowski/Tiny-GGUF";
    hub.add_repo(repo, RepoOptions::default());
    hub.put_file(
        repo,
        "Tiny-Q4_K_M.gguf",
        crate::run_commands::gguf(40_000, 1),
    );
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, _config, _port, mut service) = Proc::start(&extra).await;
    let downloads = dir.path().join("downloads");
    // Placed by hand, with a space and a quote: its command names it shell-quoted.
    let local = "hand made/it's-Q8_0.gguf";
    std::fs::create_dir_all(downloads.join("hand made")).unwrap();
    std::fs::write(downloads.join(local), crate::run_commands::gguf(30_000, 2)).unwrap();
    let (s, v) = service
        .post(
            &format!("/api/hub/models/{repo}/download"),
            serde_json::json!({"quantization": "Q4_K_M"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let hub_path = format!("{repo}/Tiny-Q4_K_M.gguf");
    common::wait::eventually(Duration::from_secs(30), || async {
        service
            .post("/api/library/rescan", serde_json::json!({}))
            .await;
        let lib = service.get("/api/library").await;
        let with_run = |p: &str| {
            lib["files"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["path"] == p && f["run"]["llama.cpp"].is_string())
        };
        if with_run(&hub_path) && with_run(local) {
            return Ok(());
        }
        Err(format!("not both in the library with a run command: {lib}"))
    })
    .await;
    let out = Command::new("node")
        .arg("library_run.mjs")
        .current_dir(driver)
        .env("MM_BASE", &service.base)
        .env("MM_HUB_PATH", &hub_path)
        .env("MM_LOCAL_PATH", local)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (run scripts/test.sh to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("STEP done"),
        "the run commands driver failed: {stdout}"
    );
    service.kill9();
}
