//! The terminal (`model-manager pull`, `ls`, ...): the real binary against the real
//! service, in a pseudo-terminal, through pipes, embedded, and interrupted.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::binary::*;
use common::hub::{HubEmu, RepoOptions};
use common::service::{content, file_sha256, sha256_hex, MIB};
use common::terminal::{bar_lines, finish, run, run_env, run_in_pty, spawn, strip_ansi};
use common::upstream::{Behavior, Upstream};
use serde_json::Value;

/// One connection per download, so that a rate-limited file lasts as long as it should.
const ONE_CONNECTION: &str = "[downloads]\nconnections_per_download = 1\n";

fn slow(bps: usize) -> Behavior {
    Behavior {
        rate_bps: Some(bps as u64),
        ..Default::default()
    }
}

fn cfg(config: &Path) -> &str {
    config.to_str().expect("utf-8 path")
}

/// Polls `GET /api/downloads` until one of them satisfies `pred`; returns it.
async fn wait_for(p: &Proc, pred: impl Fn(&Value) -> bool) -> Value {
    common::wait::eventually(Duration::from_secs(30), || async {
        let list = p.get("/api/downloads").await;
        let found = list["downloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| pred(d))
            .cloned();
        found.ok_or_else(|| format!("no download as wanted: {list}"))
    })
    .await
}

#[tokio::test]
async fn pull_in_a_terminal_draws_a_bar_whose_numbers_move_at_the_service_cadence() {
    let up = Upstream::start();
    let data = content(6 * MIB, 1);
    up.add_file("model.gguf", data.clone(), slow(2 * MIB));
    let (dir, config, _port, _p) = Proc::start(ONE_CONNECTION).await;
    let sha = sha256_hex(&data);
    let url = up.url("model.gguf");
    let args = ["--config", cfg(&config), "pull", &url, "--sha256", &sha];
    let (code, chunks) = run_in_pty(&args, dir.path()).await;
    let screen: String = chunks.iter().map(|c| strip_ansi(&c.data)).collect();
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(file_sha256(&dir.path().join("downloads/model.gguf")), sha);
    assert!(screen.contains("completed"), "{screen}");

    let lines = bar_lines(&chunks, "model.gguf");
    let running: Vec<_> = lines.iter().filter(|l| l.percent < 100).collect();
    assert!(
        running.len() >= 5,
        "too few drawings of the bar: {lines:#?}"
    );
    // Every drawing that differs from the one before is a change; none may be more
    // than 500 ms after the previous one while the download runs.
    let mut last = running[0];
    let mut longest = 0.0f64;
    for line in &running[1..] {
        if line.text != last.text {
            longest = longest.max(line.t - last.t);
            assert!(
                line.t - last.t <= 0.5,
                "the bar stood still for {:.2} s: {:?} then {:?}",
                line.t - last.t,
                last.text,
                line.text
            );
            assert!(line.percent >= last.percent, "{last:?} then {line:?}");
            last = line;
        }
    }
    let distinct = |f: fn(&&common::terminal::BarLine) -> String| {
        let mut v: Vec<String> = running.iter().map(f).collect();
        v.dedup();
        v.len()
    };
    assert!(distinct(|l| l.percent.to_string()) >= 5, "{running:#?}");
    assert!(distinct(|l| l.speed.clone()) >= 2, "{running:#?}");
    assert!(distinct(|l| l.eta.clone()) >= 2, "{running:#?}");
    println!(
        "{} drawings of the bar over {:.1} s, {} distinct, at most {:.0} ms between changes",
        running.len(),
        running[running.len() - 1].t - running[0].t,
        distinct(|l| l.text.clone()),
        longest * 1000.0
    );
}

#[tokio::test]
async fn pull_through_a_pipe_prints_plain_lines_and_with_json_one_object_per_event() {
    let up = Upstream::start();
    let plain = content(5 * MIB, 2);
    let json = content(3 * MIB, 3);
    up.add_file("plain.bin", plain.clone(), slow(2 * MIB));
    up.add_file("json.bin", json.clone(), slow(2 * MIB));
    let (dir, config, _port, _p) = Proc::start(ONE_CONNECTION).await;

    let out = run(
        &["--config", cfg(&config), "pull", &up.url("plain.bin")],
        dir.path(),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        !out.stdout.contains('\u{1b}'),
        "escape codes in a pipe: {out:?}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("plain.bin: added as dl_")),
        "{out:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("plain.bin: ") && l.contains('%') && l.contains("ETA")),
        "no progress line: {out:?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("plain.bin: completed")),
        "{out:?}"
    );
    assert!(
        lines.len() < 20,
        "a plain line every few seconds, not every tick: {out:?}"
    );
    assert_eq!(
        file_sha256(&dir.path().join("downloads/plain.bin")),
        sha256_hex(&plain)
    );

    let url = up.url("json.bin");
    let out = run(
        &["--config", cfg(&config), "pull", &url, "--json"],
        dir.path(),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    let last = &events[events.len() - 1]["download"];
    assert_eq!(last["state"], "completed");
    assert_eq!(last["bytes_done"], 3 * MIB);
    assert_eq!(
        file_sha256(&dir.path().join("downloads/json.bin")),
        sha256_hex(&json)
    );
}

/// A Hub with `o/split` (Q4_K_M in two parts, and Q8_0) and `o/one` (one Q4_K_M file).
fn hub_with_quantizations() -> (HubEmu, Vec<(String, Vec<u8>)>) {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    let files = [
        ("o/split", "m-Q4_K_M-00001-of-00002.gguf", 11),
        ("o/split", "m-Q4_K_M-00002-of-00002.gguf", 12),
        ("o/split", "m-Q8_0.gguf", 13),
        ("o/one", "one.Q4_K_M.gguf", 14),
    ];
    let mut made = Vec::new();
    for (repo, path, seed) in files {
        hub.add_repo(repo, RepoOptions::default());
        let data = content(300_000 + seed as usize, seed);
        hub.put_file(repo, path, data.clone());
        made.push((format!("{repo}/{path}"), data));
    }
    (hub, made)
}

fn hub_config(hub: &HubEmu) -> String {
    format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint())
}

#[tokio::test]
async fn pull_a_quantization_fetches_every_file_of_it_and_an_unknown_one_lists_the_others() {
    let (hub, files) = hub_with_quantizations();
    let (dir, config, _port, _p) = Proc::start(&hub_config(&hub)).await;
    let downloads = dir.path().join("downloads");
    let c = cfg(&config);

    let out = run(&["--config", c, "pull", "o/split:Q4_K_M"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for (path, data) in &files[..2] {
        assert_eq!(
            file_sha256(&downloads.join(path)),
            sha256_hex(data),
            "{path}"
        );
    }
    assert!(
        !downloads.join(&files[2].0).exists(),
        "Q8_0 was not asked for"
    );

    let out = run(&["--config", c, "pull", "hf.co/o/one:q4_k_m"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        file_sha256(&downloads.join(&files[3].0)),
        sha256_hex(&files[3].1)
    );

    let out = run(&["--config", c, "pull", "o/split/m-Q8_0.gguf"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        file_sha256(&downloads.join(&files[2].0)),
        sha256_hex(&files[2].1)
    );

    let out = run(&["--config", c, "pull", "o/split:Q5_K_S"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    for named in ["Q5_K_S", "Q4_K_M", "Q8_0"] {
        assert!(out.stderr.contains(named), "{named} not named: {out:?}");
    }
}

#[tokio::test]
async fn pull_without_a_service_runs_embedded_and_a_second_process_is_refused() {
    let up = Upstream::start();
    let fast = content(MIB, 21);
    let long = content(3 * MIB, 22);
    up.add_file("fast.bin", fast.clone(), Behavior::default());
    up.add_file("long.bin", long.clone(), slow(MIB));
    up.add_file("never.bin", content(1000, 23), Behavior::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write_config(dir.path(), port, ONE_CONNECTION);
    let c = cfg(&config);
    let downloads = dir.path().join("downloads");

    let out = run(&["--config", c, "pull", &up.url("fast.bin")], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("downloading in this process"),
        "{out:?}"
    );
    assert_eq!(file_sha256(&downloads.join("fast.bin")), sha256_hex(&fast));

    // While one embedded pull holds the data dir, a second pull and a `serve` are refused.
    let first = spawn(&["--config", c, "pull", &up.url("long.bin")], dir.path());
    common::wait::eventually(Duration::from_secs(20), || async {
        let started = downloads.join("long.bin.part").exists();
        started
            .then_some(())
            .ok_or_else(|| "the first pull never started".to_owned())
    })
    .await;
    let second = run(&["--config", c, "pull", &up.url("never.bin")], dir.path()).await;
    assert_eq!(second.code, Some(2), "{second:?}");
    assert!(
        second.stderr.contains("is in use by another model-manager"),
        "{second:?}"
    );
    let serve = run(&["--config", c, "serve"], dir.path()).await;
    assert_eq!(serve.code, Some(2), "{serve:?}");
    assert!(
        serve.stderr.contains("is in use by another model-manager"),
        "{serve:?}"
    );
    let first = tokio::task::spawn_blocking(move || finish(first, Duration::from_secs(60)))
        .await
        .expect("thread");
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(file_sha256(&downloads.join("long.bin")), sha256_hex(&long));
    assert!(!downloads.join("never.bin").exists());

    // The service, started later on the same data dir, has both in its history.
    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    let history = p.get("/api/history").await;
    let names: Vec<(&str, &str)> = history["downloads"]
        .as_array()
        .expect("history")
        .iter()
        .map(|d| {
            (
                d["file_name"].as_str().unwrap(),
                d["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(names.contains(&("fast.bin", "completed")), "{history}");
    assert!(names.contains(&("long.bin", "completed")), "{history}");
    assert_eq!(names.len(), 2, "{history}");
}

#[tokio::test]
async fn failures_exit_1_with_their_kind_an_unreachable_server_3_and_bad_usage_2() {
    let up = Upstream::start();
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    hub.add_repo(
        "o/gated",
        RepoOptions {
            gated_token: Some("secret".into()),
            ..Default::default()
        },
    );
    hub.put_file("o/gated", "g-Q4_K_M.gguf", content(1000, 31));
    let (dir, config, _port, _p) = Proc::start(&hub_config(&hub)).await;
    let c = cfg(&config);

    let out = run(&["--config", c, "pull", &up.url("missing.bin")], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("not_found"), "{out:?}");

    let out = run(&["--config", c, "pull", "o/gated:Q4_K_M"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("unauthorized"), "{out:?}");
    assert!(out.stderr.contains("HF_TOKEN"), "no hint: {out:?}");

    let closed = format!("http://127.0.0.1:{}", free_port());
    for args in [vec!["ls"], vec!["pull", "http://127.0.0.1:9/x.bin"]] {
        let mut all = vec!["--server", closed.as_str()];
        all.extend(args);
        let out = run(&all, dir.path()).await;
        assert_eq!(out.code, Some(3), "{all:?}: {out:?}");
        assert!(out.stderr.contains("cannot reach"), "{out:?}");
    }

    for bad in [
        vec!["pull", "--bogus", "x"],
        vec!["pull"],
        vec!["ls", "--state"],
        vec!["pause"],
        vec!["pull", "not-a-spec"],
        vec!["--config", "/nonexistent/config.toml", "ls"],
        // A malformed digest is bad usage, for `add` and `pull` alike.
        vec![
            "--config",
            c,
            "add",
            "http://127.0.0.1:9/x.bin",
            "--sha256",
            "zz",
        ],
        vec![
            "--config",
            c,
            "pull",
            "http://127.0.0.1:9/x.bin",
            "--sha256",
            "zz",
        ],
    ] {
        let out = run(&bad, dir.path()).await;
        assert_eq!(out.code, Some(2), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{bad:?} says nothing");
    }
}

#[tokio::test]
async fn the_token_comes_from_mm_token_or_the_config_and_mm_server_names_the_service() {
    let up = Upstream::start();
    up.add_file("t.bin", content(1000, 61), Behavior::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen("[server]\n", "[server]\napi_token = \"s3cret\"\n", 1);
    std::fs::write(&config, text).expect("config");
    let mut p = Proc::spawn(&config, port);
    p.wait_healthy().await;
    let at = dir.path();
    // The config the service reads has the token: a client reading it needs nothing else.
    let out = run(&["--config", cfg(&config), "ls"], at).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // A client with another config (none: a folder without config.toml) finds it by
    // MM_SERVER and needs MM_TOKEN.
    let elsewhere = at.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    let server = format!("http://127.0.0.1:{port}");
    let out = run_env(&["ls"], &[("MM_SERVER", &server)], &elsewhere).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("MM_TOKEN"), "{out:?}");
    let env = [("MM_SERVER", server.as_str()), ("MM_TOKEN", "s3cret")];
    let out = run_env(&["pull", &up.url("t.bin")], &env, &elsewhere).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(at.join("downloads/t.bin").exists(), "pulled by the service");
}

/// Starts `pull URL` (plus `extra`) through a pipe and waits for the service to show it
/// downloading with bytes done; its id and the child.
async fn pull_until_running(
    p: &Proc,
    config: &Path,
    cwd: &Path,
    url: &str,
    extra: &[&str],
) -> (String, std::process::Child) {
    let mut args = vec!["--config", cfg(config), "pull", url];
    args.extend_from_slice(extra);
    let child = spawn(&args, cwd);
    let d = wait_for(p, |d| {
        d["url"] == url && d["state"] == "downloading" && d["bytes_done"].as_u64() > Some(0)
    })
    .await;
    (d["id"].as_str().expect("id").to_owned(), child)
}

fn sigint(child: &std::process::Child) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

#[tokio::test]
async fn ctrl_c_leaves_the_download_in_the_service_and_with_cancel_cancels_it() {
    let up = Upstream::start();
    up.add_file("keep.bin", content(8 * MIB, 41), slow(MIB));
    up.add_file("drop.bin", content(8 * MIB, 42), slow(MIB));
    let (dir, config, _port, p) = Proc::start(ONE_CONNECTION).await;
    let downloads = dir.path().join("downloads");

    let (id, child) = pull_until_running(&p, &config, dir.path(), &up.url("keep.bin"), &[]).await;
    sigint(&child);
    let out = tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(20)))
        .await
        .expect("thread");
    assert_eq!(out.code, Some(130), "{out:?}");
    assert!(out.stderr.contains("left in the queue"), "{out:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = p.get(&format!("/api/downloads/{id}")).await;
    assert!(
        d["state"] == "downloading" || d["state"] == "queued",
        "Ctrl-C changed the download: {d}"
    );

    let url = up.url("drop.bin");
    let (id, child) = pull_until_running(&p, &config, dir.path(), &url, &["--cancel"]).await;
    assert!(downloads.join("drop.bin.part").exists());
    sigint(&child);
    let out = tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(20)))
        .await
        .expect("thread");
    assert_eq!(out.code, Some(130), "{out:?}");
    let d = p.get(&format!("/api/downloads/{id}")).await;
    assert_eq!(d["state"], "cancelled", "{d}");
    assert!(
        !downloads.join("drop.bin.part").exists(),
        "the .part is left"
    );
}

/// The first word of the client's one-line answer for a download: its id.
fn id_of(stdout: &str) -> String {
    stdout.split_whitespace().next().expect("an id").to_owned()
}

#[tokio::test]
async fn queue_commands_print_the_download_they_changed_and_change_it() {
    let up = Upstream::start();
    up.add_file("slow.bin", content(8 * MIB, 51), slow(MIB));
    let (dir, config, _port, p) = Proc::start(ONE_CONNECTION).await;
    let c = cfg(&config);
    let at = dir.path();

    let added = run(&["--config", c, "add", &up.url("slow.bin"), "--paused"], at).await;
    assert_eq!(added.code, Some(0), "{added:?}");
    let id = id_of(&added.stdout);
    assert!(added.stdout.contains("paused"), "{added:?}");
    assert_eq!(
        p.get(&format!("/api/downloads/{id}")).await["state"],
        "paused"
    );

    let ls = run(&["--config", c, "ls"], at).await;
    let header = ls.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATE"),
        "{ls:?}"
    );
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("a row");
    assert!(row.contains("paused") && row.contains("slow.bin"), "{ls:?}");
    // The columns line up: STATE starts at the same place in the header and the row.
    assert_eq!(header.find("STATE"), row.find("paused"), "{ls:?}");
    let ls = run(&["--config", c, "ls", "--json"], at).await;
    let listed: Value = serde_json::from_str(&ls.stdout).expect("ls --json");
    assert_eq!(listed[0]["id"], id.as_str());
    let ls = run(&["--config", c, "ls", "--state", "completed"], at).await;
    assert!(!ls.stdout.contains(&id), "{ls:?}");

    // Each prints the download it changed: its id, then one of the states it may be in.
    let step = |cmd: &'static str, want: &'static [&'static str]| {
        let (c, id, at) = (c.to_owned(), id.clone(), at.to_owned());
        async move {
            let out = run(&["--config", &c, cmd, &id], &at).await;
            assert_eq!(out.code, Some(0), "{cmd}: {out:?}");
            let state = out.stdout.split_whitespace().nth(1).unwrap_or_default();
            assert!(
                out.stdout.starts_with(&id) && want.contains(&state),
                "{cmd}: {out:?}"
            );
        }
    };
    step("resume", &["queued", "downloading"]).await;
    wait_for(&p, |d| {
        d["id"] == id.as_str() && d["state"] == "downloading"
    })
    .await;
    step("pause", &["paused"]).await;
    assert_eq!(
        p.get(&format!("/api/downloads/{id}")).await["state"],
        "paused"
    );
    step("cancel", &["cancelled"]).await;
    assert_eq!(
        p.get(&format!("/api/downloads/{id}")).await["state"],
        "cancelled"
    );
    step("retry", &["queued", "downloading"]).await;
    step("rm", &["removed"]).await;
    let (status, _) = p
        .post(&format!("/api/downloads/{id}/pause"), Value::Null)
        .await;
    assert_eq!(status, 404, "rm forgot it");
    let out = run(&["--config", c, "pause", &id], at).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("not_found"), "{out:?}");
}

#[tokio::test]
async fn search_files_and_library_print_aligned_tables() {
    let up = Upstream::start();
    up.add_file("done.bin", content(100_000, 52), Behavior::default());
    let (hub, _) = hub_with_quantizations();
    let (dir, config, _port, _p) = Proc::start(&hub_config(&hub)).await;
    let c = cfg(&config);
    let at = dir.path();

    let search = run(&["--config", c, "search", "split"], at).await;
    assert_eq!(search.code, Some(0), "{search:?}");
    assert!(search.stdout.starts_with("MODEL"), "{search:?}");
    assert!(
        search.stdout.lines().any(|l| l.starts_with("o/split ")),
        "{search:?}"
    );
    let files = run(&["--config", c, "files", "o/split"], at).await;
    let q4 = files
        .stdout
        .lines()
        .find(|l| l.starts_with("Q4_K_M"))
        .expect("Q4_K_M");
    // 300_011 + 300_012 bytes, two files.
    assert!(q4.contains("586.0 KiB") && q4.contains(" 2 "), "{files:?}");
    assert!(
        files.stdout.lines().any(|l| l.starts_with("Q8_0")),
        "{files:?}"
    );

    let done = run(&["--config", c, "pull", &up.url("done.bin")], at).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    common::wait::eventually(Duration::from_secs(20), || async {
        let lib = run(&["--config", c, "library"], at).await;
        if lib.stdout.lines().any(|l| l.starts_with("done.bin ")) {
            assert!(lib.stdout.starts_with("PATH"), "{lib:?}");
            return Ok(());
        }
        Err(format!("done.bin not in the library: {lib:?}"))
    })
    .await;
    let lib = run(&["--config", c, "library", "--json"], at).await;
    let lib: Value = serde_json::from_str(&lib.stdout).expect("library --json");
    assert!(lib["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|f| f["path"] == "done.bin"));
}

/// `--server` may name anything: an answer without end is refused at the client's cap
/// (exit 1, saying so) instead of filling its memory.
#[tokio::test]
async fn an_endless_answer_is_refused_at_the_clients_cap() {
    let (server, sent) = crate::hub::endless_hub();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = format!("http://{}", server.addr());
    let out = run(&["--server", &base, "ls"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("more than"), "{out:?}");
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 300 * MIB as u64, "read {sent} bytes");
}
