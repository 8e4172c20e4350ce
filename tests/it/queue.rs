//! The queue through the REST API: concurrency limit, reordering, pause/resume,
//! cancel, history and the state machine's refusals.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn running(v: &Value) -> bool {
    matches!(
        v["state"].as_str(),
        Some("downloading" | "retrying" | "verifying")
    )
}

#[actix_web::test]
async fn queue_limits_moves_pauses_resumes_cancels_and_keeps_history() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.max_concurrent = 2).await;
    let size = 4 * MIB;
    let throttle = Behavior {
        rate_bps: Some(2 * MIB as u64),
        ..Default::default()
    };
    let names = ["a.bin", "b.bin", "c.bin", "d.bin"];
    let datas: Vec<Vec<u8>> = (0..4).map(|i| content(size, 100 + i)).collect();
    let mut ids = Vec::new();
    for (name, data) in names.iter().zip(&datas) {
        up.add_file(name, data.clone(), throttle.clone());
        ids.push(
            svc.add(json!({"url": up.url(name), "sha256": sha256_hex(data)}))
                .await,
        );
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);

    // A sampler watches the whole run: never more than two running at once.
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_seen, base) = (stop.clone(), max_seen.clone(), svc.base.clone());
        tokio::task::spawn_local(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let list: Value = client
                    .get(format!("{base}/api/downloads"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let n = list["downloads"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| running(d))
                    .count();
                max_seen.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    svc.wait_state(a, "downloading", LONG).await;
    svc.wait_state(b, "downloading", LONG).await;
    assert_eq!(svc.download(c).await["position"], 0);
    assert_eq!(svc.download(d).await["position"], 1);

    // Move d to the head of the queue.
    let (status, moved) = svc
        .post(&format!("/api/downloads/{d}/move"), json!({"position": 0}))
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["position"], 0);
    assert_eq!(svc.download(c).await["position"], 1);

    // Pause a: its bytes stand still, on the API, on disk and on the wire.
    svc.wait_until(a, LONG, "some bytes", |v| {
        v["bytes_done"].as_u64().unwrap() > 0
    })
    .await;
    let (status, paused) = svc.action(a, "pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    let bytes_at_pause = paused["bytes_done"].as_u64().unwrap();
    let part = svc.download_dir().join("a.bin.part");
    let on_disk = std::fs::metadata(&part).unwrap().len();
    let sent = up.bytes_sent("a.bin");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        svc.download(a).await["bytes_done"].as_u64().unwrap(),
        bytes_at_pause
    );
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        on_disk,
        "the .part grew while paused"
    );
    assert_eq!(up.bytes_sent("a.bin"), sent, "bytes flowed while paused");
    assert!(
        bytes_at_pause > 0 && bytes_at_pause < size as u64,
        "{bytes_at_pause} of {size} bytes at the pause"
    );

    // The freed slot went to d (moved ahead of c).
    svc.wait_state(d, "downloading", LONG).await;
    assert_eq!(svc.download(c).await["state"], "queued");

    // Cancel b while it runs: its partial file goes.
    let (status, cancelled) = svc.action(b, "cancel").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert!(
        !svc.download_dir().join("b.bin.part").exists(),
        "cancel left the .part"
    );

    // Resume a: it continues from the bytes on disk with a Range request.
    let (status, resumed) = svc.action(a, "resume").await;
    assert_eq!(status, 200, "{resumed}");
    for id in [a, c, d] {
        svc.wait_state(id, "completed", LONG).await;
    }
    let a_reqs = up.requests("a.bin");
    assert_eq!(a_reqs.len(), 2, "{a_reqs:?}");
    assert_eq!(
        a_reqs[1].range_start,
        Some(on_disk),
        "resume must continue from the bytes on disk"
    );
    for (name, data) in names.iter().zip(&datas) {
        if *name != "b.bin" {
            assert_eq!(
                file_sha256(&svc.download_dir().join(name)),
                sha256_hex(data),
                "{name}"
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let max = max_seen.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&max),
        "saw {max} running at once with max_concurrent = 2"
    );

    // History: newest first, filterable.
    let (_, h) = svc.get("/api/history").await;
    let hist: Vec<&str> = h["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(hist.len(), 4);
    for id in [a, b, c, d] {
        assert!(
            hist.contains(&id.as_str()),
            "{id} not in the history: {hist:?}"
        );
    }
    let (_, h) = svc.get("/api/history?state=completed&limit=2").await;
    let done = h["downloads"].as_array().unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|v| v["state"] == "completed"), "{done:?}");
    assert!(
        done[0]["finished_at"].as_str() >= done[1]["finished_at"].as_str(),
        "newest first: {done:?}"
    );

    // Transitions the state does not allow.
    let (status, err) = svc.action(a, "resume").await;
    assert_eq!(status, 409, "resume of a completed download: {err}");
    assert_eq!(err["error"]["code"], "conflict");
    let (status, _) = svc.action(a, "pause").await;
    assert_eq!(status, 409);
    let (status, _) = svc.action(a, "cancel").await;
    assert_eq!(status, 409);
    let (status, _) = svc
        .post(&format!("/api/downloads/{a}/move"), json!({"position": 0}))
        .await;
    assert_eq!(status, 409);

    // Stats agree.
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(stats["active"], 0);
    assert_eq!(stats["queued"], 0);
    assert_eq!(stats["bytes_done_total"], json!(3 * size));
}

#[actix_web::test]
async fn retry_after_cancel_and_delete_with_file() {
    let up = Upstream::start();
    let svc = TestService::start(|_| {}).await;
    let data = content(2 * MIB, 7);
    up.add_file(
        "r.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(MIB as u64),
            ..Default::default()
        },
    );
    let id = svc
        .add(json!({"url": up.url("r.bin"), "start_paused": true}))
        .await;
    assert_eq!(svc.download(&id).await["state"], "paused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        up.requests("r.bin").is_empty(),
        "a paused download must not start"
    );
    let (status, _) = svc.action(&id, "cancel").await;
    assert_eq!(status, 200);
    let (status, v) = svc.action(&id, "retry").await;
    assert_eq!(status, 200, "{v}");
    up.set_behavior("r.bin", Behavior::default());
    svc.wait_state(&id, "completed", LONG).await;
    let file = svc.download_dir().join("r.bin");
    assert_eq!(file_sha256(&file), sha256_hex(&data));

    // The same source again is that download (the file is the same upstream);
    // overwrite forces a fresh one.
    let (status, err) = svc
        .post("/api/downloads", json!({"url": up.url("r.bin")}))
        .await;
    assert_eq!(
        (status, err["id"].as_str()),
        (200, Some(id.as_str())),
        "{err}"
    );
    let (status, again) = svc
        .post(
            "/api/downloads",
            json!({"url": up.url("r.bin"), "overwrite": true}),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    let again = again["id"].as_str().unwrap().to_owned();
    svc.wait_state(&again, "completed", LONG).await;

    // The older download no longer owns the file: deleting it keeps the file...
    let (status, _) = svc
        .delete(&format!("/api/downloads/{id}?delete_file=true"))
        .await;
    assert_eq!(status, 204);
    assert!(
        file.exists(),
        "deleting the replaced download took the newer one's file"
    );
    // ...and deleting the one that owns it removes it.
    let (status, _) = svc
        .delete(&format!("/api/downloads/{again}?delete_file=true"))
        .await;
    assert_eq!(status, 204);
    assert!(!file.exists(), "delete_file=true keeps the file");
    let (status, _) = svc.get(&format!("/api/downloads/{id}")).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn pause_all_and_resume_all() {
    let up = Upstream::start();
    let svc = TestService::start(|c| c.downloads.max_concurrent = 1).await;
    let throttle = Behavior {
        rate_bps: Some(MIB as u64),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let name = format!("p{i}.bin");
        up.add_file(&name, content(MIB, i), throttle.clone());
        ids.push(svc.add(json!({"url": up.url(&name)})).await);
    }
    svc.wait_state(&ids[0], "downloading", LONG).await;
    let (status, v) = svc.post("/api/pause-all", json!({})).await;
    assert_eq!(status, 200, "{v}");
    for id in &ids {
        assert_eq!(svc.download(id).await["state"], "paused");
    }
    let (_, stats) = svc.get("/api/stats").await;
    assert_eq!(stats["paused"], 3);
    let (status, _) = svc.post("/api/resume-all", json!({})).await;
    assert_eq!(status, 200);
    for id in &ids {
        svc.wait_state(id, "completed", LONG).await;
    }
}
