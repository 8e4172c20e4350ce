//! Faults by force: a full disk, and the real binary killed with SIGKILL at random
//! moments over a mixed queue.

// Test scenarios read top to bottom as one story; splitting them would hide it.
#![allow(clippy::too_many_lines)]

use crate::common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::service::*;
use common::tmpfs::Tmpfs;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

#[actix_web::test]
async fn a_full_disk_fails_one_download_keeps_its_part_and_retry_continues() {
    let root = tempfile::tempdir().unwrap();
    let downloads = root.path().join("downloads");
    let disk = match Tmpfs::mount(&downloads, "20m") {
        Ok(d) => d,
        Err(why) => {
            println!("SKIPPED: cannot mount a small tmpfs here ({why}); run the tests as root");
            return;
        }
    };
    let up = Upstream::start();
    let big = content(24 * MIB, 1);
    let small = content(256 * 1024, 2);
    // No Content-Length: nothing can tell in advance that it will not fit.
    up.add_file(
        "big.bin",
        big.clone(),
        Behavior {
            no_content_length: true,
            rate_bps: Some(16 * MIB as u64),
            ..Default::default()
        },
    );
    up.add_file("small.bin", small.clone(), Behavior::default());
    let config = {
        let mut c = test_config(root.path());
        c.storage.download_dir = downloads.clone();
        // One connection: its request is for the whole file, so no Content-Range tells
        // the size either (parallel connections ask for a first range, whose answer does).
        c.downloads.connections_per_download = 1;
        c
    };
    let svc = TestService::start_in(tempfile::tempdir().unwrap(), config).await;
    let small_id = svc
        .add(json!({"url": up.url("small.bin"), "sha256": sha256_hex(&small)}))
        .await;
    svc.wait_state(&small_id, "completed", Duration::from_secs(20))
        .await;
    let big_id = svc
        .add(json!({"url": up.url("big.bin"), "sha256": sha256_hex(&big)}))
        .await;
    let failed = svc
        .wait_state(&big_id, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(failed["error"]["kind"], "disk", "{failed}");
    let part = downloads.join("big.bin.part");
    let kept = std::fs::metadata(&part).expect("the .part is kept").len();
    assert!(kept > 10 * MIB as u64, "only {kept} bytes kept");
    // The service and the finished download are fine.
    let (s, _) = svc.get("/healthz").await;
    assert_eq!(s, 200);
    assert_eq!(
        file_sha256(&downloads.join("small.bin")),
        sha256_hex(&small)
    );

    // Space is back: retry continues from the .part.
    disk.resize("64m");
    let before = up.requests("big.bin").len();
    let (s, v) = svc.action(&big_id, "retry").await;
    assert_eq!(s, 200, "{v}");
    svc.wait_state(&big_id, "completed", Duration::from_secs(30))
        .await;
    assert_eq!(file_sha256(&downloads.join("big.bin")), sha256_hex(&big));
    let resumed = &up.requests("big.bin")[before];
    assert!(
        resumed.range_start.is_some_and(|s| s > 0),
        "retry started over: {resumed:?}"
    );
    // And new downloads run again.
    up.add_file("after.bin", small.clone(), Behavior::default());
    let id = svc.add(json!({"url": up.url("after.bin")})).await;
    svc.wait_state(&id, "completed", Duration::from_secs(20))
        .await;
    println!(
        "disk full: failed with {kept} bytes kept; retry resumed at {:?}",
        resumed.range_start
    );
}

async fn list(p: &Proc) -> Option<Vec<Value>> {
    let r = reqwest::Client::new()
        .get(format!("{}/api/downloads", p.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["downloads"].as_array().cloned()
}

fn states(list: &[Value]) -> Vec<(String, String)> {
    list.iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn random_kills_lose_nothing() {
    let up = Upstream::start();
    let specs: Vec<(&str, usize, Behavior, bool)> = vec![
        (
            "seg48.bin",
            48 * MIB,
            Behavior {
                rate_bps: Some(12 * MIB as u64),
                ..Default::default()
            },
            true,
        ),
        (
            "seg24.bin",
            24 * MIB,
            Behavior {
                rate_bps: Some(8 * MIB as u64),
                ..Default::default()
            },
            true,
        ),
        (
            "one8.bin",
            8 * MIB,
            Behavior {
                rate_bps: Some(4 * MIB as u64),
                ..Default::default()
            },
            true,
        ),
        (
            "tiny.bin",
            2 * MIB,
            Behavior {
                rate_bps: Some(2 * MIB as u64),
                ..Default::default()
            },
            false,
        ),
        (
            "drops.bin",
            12 * MIB,
            Behavior {
                drop_every: Some(5 * MIB as u64),
                rate_bps: Some(8 * MIB as u64),
                ..Default::default()
            },
            true,
        ),
        (
            "nolen.bin",
            6 * MIB,
            Behavior {
                no_content_length: true,
                rate_bps: Some(4 * MIB as u64),
                ..Default::default()
            },
            true,
        ),
    ];
    let mut expected = Vec::new();
    for (i, (name, size, behavior, _)) in specs.iter().enumerate() {
        let data = content(*size, 500 + i as u64);
        up.add_file(name, data.clone(), behavior.clone());
        expected.push((name.to_string(), sha256_hex(&data)));
    }
    let (dir, config, port, mut p) =
        // one8.bin and drops.bin (one connection, ≥ 4 MiB) are written with O_DIRECT.
        Proc::start("[downloads]\nmax_concurrent = 4\nretry_base_delay_ms = 100\ndirect_io_min_bytes = 4194304\n").await;
    let mut ids = Vec::new();
    for ((name, _, _, with_sha), (_, sha)) in specs.iter().zip(&expected) {
        let body = if *with_sha {
            json!({"url": up.url(name), "sha256": sha})
        } else {
            json!({"url": up.url(name)})
        };
        let (s, v) = p.post("/api/downloads", body).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }

    let mut rng = fastrand::Rng::with_seed(7);
    let (mut kills, mut on_change, mut in_verify, mut random) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(150);
    while kills < 24 && Instant::now() < deadline {
        let all_done = list(&p)
            .await
            .is_some_and(|l| l.iter().all(|d| d["state"] == "completed"));
        if all_done && kills >= 20 {
            break;
        }
        match kills % 3 {
            // Right after any state change.
            0 => {
                let first = list(&p).await.map(|l| states(&l)).unwrap_or_default();
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    if let Some(now) = list(&p).await.map(|l| states(&l)) {
                        if now != first {
                            on_change += 1;
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // During verification, when one shows up in time.
            1 => {
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    if list(&p)
                        .await
                        .is_some_and(|l| l.iter().any(|d| d["state"] == "verifying"))
                    {
                        in_verify += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => {
                random += 1;
                tokio::time::sleep(Duration::from_millis(rng.u64(50..900))).await;
            }
        }
        p.kill9();
        kills += 1;
        p = Proc::spawn(&config, port);
        p.wait_healthy().await;
    }
    println!(
        "random kills: {kills} SIGKILLs ({on_change} right after a state change, {in_verify} during verification, {random} at random moments)"
    );
    assert!(kills >= 20, "only {kills} kills in the time allowed");

    // The last life runs to the end.
    let deadline = Instant::now() + Duration::from_secs(120);
    let final_list = loop {
        let l = list(&p).await.unwrap_or_default();
        if l.len() == 6
            && l.iter()
                .all(|d| d["state"] == "completed" || d["state"] == "failed")
        {
            break l;
        }
        assert!(Instant::now() < deadline, "not finished: {:?}", states(&l));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut got: Vec<String> = final_list
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "a download was lost or duplicated");
    for d in &final_list {
        assert_eq!(d["state"], "completed", "{d}");
    }
    for (name, sha) in &expected {
        assert_eq!(
            &file_sha256(&dir.path().join("downloads").join(name)),
            sha,
            "{name}"
        );
    }
    let mut names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        tree(&dir.path().join("downloads")),
        names,
        "a .part or stray file is left"
    );
}

#[actix_web::test]
async fn a_crash_right_after_the_final_rename_is_not_downloaded_again() {
    let (svc, up, data) = after_a_crash(true, None).await;
    assert!(
        up.requests("done.bin").is_empty(),
        "a complete file was fetched again"
    );
    assert_eq!(
        file_sha256(&svc.download_dir().join("done.bin")),
        sha256_hex(&data)
    );
    assert_eq!(tree(&svc.download_dir()), vec!["done.bin".to_string()]);
}

#[actix_web::test]
async fn another_file_of_the_same_size_is_not_taken_for_a_renamed_download() {
    // A checkpoint that says complete (a periodic one) and no `.part`, beside a file of
    // the same size that the download never wrote (an older one it was to replace).
    let (svc, up, data) = after_a_crash(false, Some(content(3 * MIB, 78))).await;
    assert!(!up.requests("done.bin").is_empty(), "it was not fetched");
    assert_eq!(
        file_sha256(&svc.download_dir().join("done.bin")),
        sha256_hex(&data)
    );
}

/// A service started over what a kill -9 left: a record in `verifying`, a checkpoint
/// that covers every byte (the one written just before the rename when `renaming`) and a
/// file under the final name (`other`, or the download's own bytes). Returns once the
/// download is completed.
async fn after_a_crash(renaming: bool, other: Option<Vec<u8>>) -> (TestService, Upstream, Vec<u8>) {
    use model_manager::queue::model::{Download, Source, State};
    use model_manager::queue::store::{Checkpoint, Store};
    use std::os::unix::fs::MetadataExt;
    let up = Upstream::start();
    let data = content(3 * MIB, 77);
    up.add_file("done.bin", data.clone(), Behavior::default());
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    std::fs::create_dir_all(&config.storage.download_dir).unwrap();
    let final_path = config.storage.download_dir.join("done.bin");
    std::fs::write(&final_path, other.as_deref().unwrap_or(&data)).unwrap();
    let meta = std::fs::metadata(&final_path).unwrap();
    {
        let store = Store::open(&config.storage.data_dir).unwrap();
        let id = "dl_01JD3ZZZZZZZZZZZZZZZZZZZZZ".to_string();
        store
            .put_download(&Download {
                id: id.clone(),
                url: up.url("done.bin"),
                file_name: "done.bin".into(),
                path: "done.bin".into(),
                state: State::Verifying,
                order: 1 << 20,
                bytes_done: data.len() as u64,
                bytes_total: Some(data.len() as u64),
                elapsed_secs: 1.0,
                attempt: 0,
                next_retry_at: None,
                sha256: Some(sha256_hex(&data)),
                error: None,
                source: Source::Url,
                speed_limit_bps: None,
                connections: None,
                created_at: "2026-11-25T00:00:00Z".into(),
                transport: None,
                bytes_reused: 0,
                started_at: None,
                finished_at: None,
                completed_as: None,
                validators: None,
            })
            .unwrap();
        store
            .put_checkpoint(
                &id,
                &Checkpoint {
                    offset: data.len() as u64,
                    total: Some(data.len() as u64),
                    renaming: renaming.then(|| {
                        let mtime_ns =
                            meta.mtime() as u64 * 1_000_000_000 + meta.mtime_nsec() as u64;
                        [meta.ino(), mtime_ns]
                    }),
                    ..Default::default()
                },
            )
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let svc = TestService::start_in(dir, config).await;
    let d = svc
        .wait_state(
            "dl_01JD3ZZZZZZZZZZZZZZZZZZZZZ",
            "completed",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(d["bytes_done"], json!(data.len()));
    (svc, up, data)
}
