//! The page in real headless Chromium against the real binary: add a URL through the
//! form, watch it move, pause, resume, survive a service restart without a reload
//! (page.mjs); the Hub tab (hub.mjs); every row's buttons follow its `actions`
//! (actions.mjs). `scripts/test.sh` installs Chromium and playwright-core.

mod common;

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
