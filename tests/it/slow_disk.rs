//! One transfer's disk is slow; the others keep their rate. Every transfer runs on one
//! thread (the `transfers` arbiter), so a write that waits on the disk there would hold
//! up every download. No throttled device can be made everywhere (no device-mapper in
//! most containers), so the slow disk is the engine's test-build stand-in: a `.part`
//! named with `__slow_disk__` takes 2 s per write call (debug builds only).

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use common::xet::{self, Cas};
use serde_json::json;

/// What the slow file is named with.
const SLOW: &str = "__slow_disk__";
/// The fast transfer: 32 MiB, which loopback and the page cache move in well under a
/// second; with the thread blocked 2 s per slow write, it would take a minute.
const FAST: usize = 32 * MIB;
/// Long enough for a loaded 2-core CI box, far shorter than a blocked thread needs.
const FAST_DEADLINE: Duration = Duration::from_secs(20);

/// Starts a slow download of `slow_size` bytes from `up` and checks [`fast_beside_slow`].
async fn fast_beside_slow_url(svc: &TestService, up: &Upstream, slow_size: usize) {
    let slow_name = format!("model{SLOW}.bin");
    up.add_file(&slow_name, content(slow_size, 7), Behavior::default());
    let slow = svc.add(json!({ "url": up.url(&slow_name) })).await;
    fast_beside_slow(svc, up, &slow, slow_size).await;
}

/// With the slow download `slow` started: waits until it holds bytes (so a write of it
/// is on its way, 2 s each), then starts a fast one from `up`, and checks that the fast
/// one completes, with the right bytes, while the slow one is still far from done.
async fn fast_beside_slow(svc: &TestService, up: &Upstream, slow: &str, slow_size: usize) {
    let fast_data = content(FAST, 8);
    up.add_file("fast.bin", fast_data.clone(), Behavior::default());
    svc.wait_past(slow, 0, Duration::from_secs(30)).await;
    // Its first write has started by now, or starts at its next block.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let fast = svc
        .add(json!({ "url": up.url("fast.bin"), "sha256": sha256_hex(&fast_data) }))
        .await;
    // Bytes moved by the fast one, sampled while the slow one is stuck.
    let mut samples = Vec::new();
    let slow_then = loop {
        let f = svc.download(&fast).await;
        let s = svc.download(slow).await;
        let done = f["bytes_done"].as_u64().unwrap_or(0);
        samples.push((started.elapsed().as_millis() as u64, done));
        if f["state"] == "completed" {
            break s;
        }
        assert!(f["state"] != "failed", "the fast download failed: {f}");
        assert!(
            started.elapsed() < FAST_DEADLINE,
            "the fast download moved only {done} of {FAST} bytes in {FAST_DEADLINE:?} \
             beside a slow disk; last samples (ms, bytes): {:?}",
            &samples[samples.len().saturating_sub(10)..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    eprintln!(
        "fast: {FAST} bytes in {took:?} ({:.0} MiB/s) beside a slow disk; slow: {} of {slow_size}",
        FAST as f64 / MIB as f64 / took.as_secs_f64(),
        slow_then["bytes_done"]
    );
    assert_eq!(
        file_sha256(&svc.download_dir().join("fast.bin")),
        sha256_hex(&fast_data)
    );
    // The slow one was stuck all along: the fast one did not just run after it.
    assert_ne!(slow_then["state"], "completed", "{slow_then}");
    assert!(
        slow_then["bytes_done"].as_u64().unwrap_or(0) < slow_size as u64 / 2,
        "the slow disk was not slow: {slow_then}"
    );
    // A stop waits for the slow write on its way, and keeps what is on disk.
    let (status, v) = svc.action(slow, "pause").await;
    assert_eq!(status, 200, "{v}");
    svc.wait_state(slow, "paused", Duration::from_secs(30))
        .await;
}

#[actix_web::test]
async fn a_slow_disk_under_one_connection_holds_up_no_other_transfer() {
    let up = Upstream::start();
    // One connection, through the page cache (no O_DIRECT): the write block's path.
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.direct_io_min_bytes = 0;
    })
    .await;
    fast_beside_slow_url(&svc, &up, 8 * MIB).await;
    svc.stop().await;
}

#[actix_web::test]
async fn a_slow_disk_under_parallel_connections_holds_up_no_other_transfer() {
    let up = Upstream::start();
    // Both files are large enough for parallel ranged connections.
    let svc = TestService::start(|c| c.downloads.connections_per_download = 4).await;
    fast_beside_slow_url(&svc, &up, 24 * MIB).await;
    svc.stop().await;
}

#[actix_web::test]
async fn a_slow_disk_under_direct_writes_holds_up_no_other_transfer() {
    let up = Upstream::start();
    // One connection with O_DIRECT (test files of 2 MiB and more): the writer thread.
    let svc = TestService::start(|c| c.downloads.connections_per_download = 1).await;
    // Past what the writer's buffers hold (3 × 4 MiB) before it waits on the disk.
    fast_beside_slow_url(&svc, &up, 32 * MIB).await;
    svc.stop().await;
}

#[actix_web::test]
async fn a_slow_disk_under_xet_holds_up_no_other_transfer() {
    // A Xet-backed Hub file: chunks written at their offsets through the seam.
    let repo = "xet-org/Slow";
    let file = format!("model{SLOW}.gguf");
    let slow_size = 16 << 20;
    let cas = Cas::start();
    let up = Arc::new(Upstream::start());
    let hub = HubEmu::start(up.clone());
    hub.enable_xet(&cas);
    hub.add_repo(repo, RepoOptions::default());
    hub.put_xet_file(repo, &file, xet::random_file(slow_size, 9));
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let slow = svc
        .add(json!({ "hub": { "repo": repo, "file": file } }))
        .await;
    let d = svc
        .wait_until(&slow, Duration::from_secs(30), "bytes held", |d| {
            d["bytes_done"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(d["transport"], "xet", "{d}");
    fast_beside_slow(&svc, &up, &slow, slow_size).await;
    svc.stop().await;
}

#[actix_web::test]
async fn a_pause_during_a_slow_write_keeps_what_landed_and_the_resume_completes() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.direct_io_min_bytes = 0;
    })
    .await;
    // Five write blocks (256 KiB each), the last one short: about 10 s of slow writes.
    let data = content(MIB + 1000, 11);
    let name = format!("paused{SLOW}.bin");
    up.add_file(&name, data.clone(), Behavior::default());
    let id = svc
        .add(json!({ "url": up.url(&name), "sha256": sha256_hex(&data) }))
        .await;
    // The first block is on its way to the disk (2 s), the second one filling.
    svc.wait_past(&id, 256 * 1024, Duration::from_secs(20))
        .await;
    let (status, v) = svc.action(&id, "pause").await;
    assert_eq!(status, 200, "{v}");
    let paused = svc.wait_state(&id, "paused", Duration::from_secs(30)).await;
    // What a pause keeps is what is on disk: whole blocks, never a block still on its way.
    let kept = paused["bytes_done"].as_u64().unwrap_or(u64::MAX);
    eprintln!("paused with {kept} of {} bytes kept", data.len());
    assert!(kept <= data.len() as u64, "{paused}");
    let part = svc.download_dir().join(format!("{name}.part"));
    let on_disk = std::fs::read(&part).unwrap_or_default();
    assert!(on_disk.len() as u64 >= kept, "{} < {kept}", on_disk.len());
    assert!(
        on_disk[..kept as usize] == data[..kept as usize],
        "the bytes kept are the file's"
    );
    let (status, v) = svc.action(&id, "resume").await;
    assert_eq!(status, 200, "{v}");
    svc.wait_state(&id, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(&name)),
        sha256_hex(&data)
    );
    svc.stop().await;
}

#[actix_web::test]
async fn a_download_deleted_during_a_slow_write_and_added_again_gets_the_right_bytes() {
    let up = Upstream::start();
    let svc = TestService::start(|c| {
        c.downloads.connections_per_download = 1;
        c.downloads.direct_io_min_bytes = 0;
    })
    .await;
    let data = content(600 * 1024, 12);
    let name = format!("again{SLOW}.bin");
    up.add_file(&name, data.clone(), Behavior::default());
    let first = svc.add(json!({ "url": up.url(&name) })).await;
    svc.wait_past(&first, 256 * 1024, Duration::from_secs(20))
        .await;
    // Its first block is on its way to the disk when it is deleted with its file.
    let (status, v) = svc
        .delete(&format!("/api/downloads/{first}?delete_file=true"))
        .await;
    assert!(status < 300, "{status} {v}");
    // The upstream file changes: the next download's bytes differ from the first's.
    let data = content(600 * 1024, 13);
    up.add_file(&name, data.clone(), Behavior::default());
    let second = svc
        .add(json!({ "url": up.url(&name), "sha256": sha256_hex(&data) }))
        .await;
    svc.wait_state(&second, "completed", Duration::from_secs(60))
        .await;
    assert_eq!(
        file_sha256(&svc.download_dir().join(&name)),
        sha256_hex(&data)
    );
    svc.stop().await;
}
