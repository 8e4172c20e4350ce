//! The real binary: start-up errors (exit 2, one line), SIGTERM, and kill -9 + restart.

use crate::common;

use std::time::Duration;

use common::binary::*;
use common::service::{content, file_sha256, sha256_hex, tree, MIB};
use common::upstream::{Behavior, Upstream};
use serde_json::json;

#[tokio::test]
async fn kill_9_mid_download_resumes_from_the_last_checkpoint() {
    let up = Upstream::start();
    let size = 96 * MIB;
    let data = content(size, 42);
    up.add_file(
        "big.gguf",
        data.clone(),
        Behavior {
            rate_bps: Some(8 * MIB as u64),
            ..Default::default()
        },
    );
    // One connection: the resume point is one offset (tests/segments.rs has many).
    let (dir, config, port, mut p) =
        Proc::start("[downloads]\nconnections_per_download = 1\n").await;
    let (status, d) = p
        .post(
            "/api/downloads",
            json!({"url": up.url("big.gguf"), "sha256": sha256_hex(&data)}),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();

    // Kill when a third is done; remember the last bytes the API showed.
    let shown = p
        .wait_download(&id, Duration::from_secs(60), |d| {
            d["bytes_done"].as_u64().unwrap() >= (size / 3) as u64
        })
        .await;
    let shown = shown["bytes_done"].as_u64().unwrap();
    p.kill9();
    let before_restart = up.requests("big.gguf").len();

    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    let done = p
        .wait_download(&id, Duration::from_secs(60), |d| {
            d["state"] == "completed" || d["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        file_sha256(&dir.path().join("downloads/big.gguf")),
        sha256_hex(&data)
    );
    assert!(
        !dir.path().join("downloads/big.gguf.part").exists(),
        "the .part is left: {:?}",
        tree(&dir.path().join("downloads"))
    );

    let after: Vec<_> = up
        .requests("big.gguf")
        .into_iter()
        .skip(before_restart)
        .collect();
    let first = after.first().expect("a request after the restart");
    let start = first
        .range_start
        .expect("the restart resumed with a Range request");
    println!(
        "kill -9 at {shown} bytes shown; resumed from {start} (re-fetched {} bytes)",
        shown.saturating_sub(start)
    );
    assert!(
        start + 16 * MIB as u64 >= shown,
        "resumed from {start}, more than 16 MiB before the {shown} bytes shown before the kill"
    );
}

#[tokio::test]
async fn sigterm_checkpoints_stops_answering_exits_0_and_resumes() {
    let up = Upstream::start();
    let size = 32 * MIB;
    let data = content(size, 43);
    up.add_file(
        "t.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(8 * MIB as u64),
            ..Default::default()
        },
    );
    // One connection: the resume point is one offset (tests/segments.rs has many).
    let (dir, config, port, mut p) =
        Proc::start("[downloads]\nconnections_per_download = 1\n").await;
    let (_, d) = p
        .post(
            "/api/downloads",
            json!({"url": up.url("t.bin"), "sha256": sha256_hex(&data)}),
        )
        .await;
    let id = d["id"].as_str().unwrap().to_owned();
    let shown = p
        .wait_download(&id, Duration::from_secs(30), |d| {
            d["bytes_done"].as_u64().unwrap() >= 8 * MIB as u64
        })
        .await;
    let shown = shown["bytes_done"].as_u64().unwrap();

    p.sigterm();
    let status = p.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the service still answers after SIGTERM"
    );
    let before_restart = up.requests("t.bin").len();

    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    let done = p
        .wait_download(&id, Duration::from_secs(60), |d| {
            d["state"] == "completed" || d["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        file_sha256(&dir.path().join("downloads/t.bin")),
        sha256_hex(&data)
    );
    let all: Vec<_> = up
        .requests("t.bin")
        .iter()
        .map(|r| (r.range_start, r.status))
        .collect();
    println!("requests: {all:?} (restart after {before_restart})");
    let first = up
        .requests("t.bin")
        .into_iter()
        .nth(before_restart)
        .expect("a request after restart");
    let start = first.range_start.expect("resumed with Range");
    // A clean stop checkpoints every byte received: nothing shown is fetched again.
    assert!(
        start >= shown,
        "resumed from {start}, before the {shown} bytes shown at SIGTERM"
    );
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
    lines[0]
}

#[test]
fn config_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    std::fs::write(d.join("bad.toml"), "[server\nbind = ").unwrap();
    let (code, err) = run_to_exit(&["--config", "bad.toml"], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("bad.toml"), "{err}");

    std::fs::write(d.join("unknown.toml"), "[downloads]\nmax_concurent = 4\n").unwrap();
    let (code, err) = run_to_exit(&["--config", "unknown.toml"], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("max_concurent"), "{err}");

    let (code, err) = run_to_exit(&["--config", "missing.toml"], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("missing.toml"), "{err}");

    std::fs::write(d.join("range.toml"), "[downloads]\nmax_concurrent = 0\n").unwrap();
    let (code, err) = run_to_exit(&["--config", "range.toml"], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("max_concurrent"), "{err}");

    // The environment is a layer too: a bad value there names its variable.
    let (code, err) = run_to_exit(&[], &[("MM_DOWNLOADS__MAX_RETRIES", "many")], d);
    assert_eq!(code, Some(2));
    assert!(
        one_line(&err).to_lowercase().contains("max_retries"),
        "{err}"
    );

    // A taken port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let (code, err) = run_to_exit(&["--bind", &bind], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains(&bind), "{err}");

    // A data dir that cannot be opened (a file where the directory should be).
    std::fs::write(d.join("notadir"), "x").unwrap();
    let free = format!("127.0.0.1:{}", free_port());
    let (code, err) = run_to_exit(&["--bind", &free, "--data-dir", "notadir"], &[], d);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("notadir"), "{err}");

    // Nothing of the failed runs was left listening or written beside the config.
    drop(taken);
}

#[tokio::test]
async fn env_overrides_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_port = free_port();
    let env_port = free_port();
    let config = write_config(dir.path(), file_port, "[downloads]\nmax_concurrent = 2\n");
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("MM_SERVER__BIND", format!("127.0.0.1:{env_port}"))
        .env("MM_DOWNLOADS__MAX_RETRIES", "9")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut p = Proc {
        child: std::process::Command::new("true").spawn().unwrap(),
        base: format!("http://127.0.0.1:{env_port}"),
    };
    std::mem::swap(&mut p.child, &mut child);
    let _ = child.wait();
    p.wait_healthy().await;
    let settings = p.get("/api/settings").await;
    assert_eq!(settings["max_retries"], 9, "env wins over the default");
    assert_eq!(
        settings["max_concurrent"], 2,
        "the file still applies where env is silent"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "env must win over the file's bind"
    );
}

#[tokio::test]
async fn an_answered_delete_or_cancel_survives_a_kill_9_right_after() {
    let up = Upstream::start();
    let data = content(64 * MIB, 43);
    let slow = Behavior {
        rate_bps: Some(4 * MIB as u64),
        ..Default::default()
    };
    up.add_file("del.bin", data.clone(), slow.clone());
    up.add_file("can.bin", data, slow);
    let (dir, config, port, mut p) =
        Proc::start("[downloads]\nconnections_per_download = 4\n").await;
    let del = p.add(json!({"url": up.url("del.bin")})).await;
    let can = p.add(json!({"url": up.url("can.bin")})).await;
    for id in [&del, &can] {
        p.wait_download(id, Duration::from_secs(30), |d| {
            d["bytes_done"].as_u64() > Some(MIB as u64)
        })
        .await;
    }
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Paused first: with no engine left to stop, nothing else flushes sled between the
    // answer and the kill, so the answer alone must have made the change durable.
    for id in [&del, &can] {
        let (s, v) = p
            .post(&format!("/api/downloads/{id}/pause"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        p.wait_download(id, Duration::from_secs(30), |d| d["state"] == "paused")
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client
        .post(format!("{base}/api/downloads/{can}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .delete(format!("{base}/api/downloads/{del}"))
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success(), "{}", r.status());
    // At once: sled flushes by itself only every 500 ms.
    p.kill9();

    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    let r = client
        .get(format!("{base}/api/downloads/{del}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404, "the deleted download came back");
    let c = p.get(&format!("/api/downloads/{can}")).await;
    assert_eq!(c["state"], "cancelled", "{c}");
    assert_eq!(c["bytes_done"], 0, "{c}");
    // Nothing runs again: no `.part` shows up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let left: Vec<_> = std::fs::read_dir(dir.path().join("downloads"))
        .map(|it| it.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files after the restart: {left:?}");
}
