//! The first hour in the terminal and through aria2p (#27): `pull` twice, `addUri`
//! twice, id prefixes and `settings`, with the real binary and the real clients.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::binary::*;
use common::hub::{HubEmu, RepoOptions};
use common::service::{content, file_sha256, sha256_hex, TestService};
use common::terminal::run;
use common::upstream::{Behavior, Upstream};
use serde_json::json;

fn cfg(config: &Path) -> &str {
    config.to_str().expect("utf-8 path")
}

fn gets(up: &Upstream, path: &str) -> usize {
    up.requests(path)
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// `pull owner/name:QUANT` a second time: exit 0, "up to date", nothing fetched; a
/// URL likewise.
#[tokio::test]
async fn pull_twice_says_up_to_date_and_fetches_nothing() {
    let hub = HubEmu::start(Arc::new(Upstream::start()));
    let repo = "TheBloke/Tiny-GGUF";
    hub.add_repo(
        repo,
        RepoOptions {
            tags: vec!["gguf".into()],
            ..Default::default()
        },
    );
    let file = "tiny.Q4_K_M.gguf";
    let data = content(300 * 1024, 40);
    hub.put_file(repo, file, data.clone());
    let up = Upstream::start();
    up.add_file("plain.bin", content(100_000, 41), Behavior::default());
    let extra = format!("[hub]\nendpoint = \"{}\"\n", hub.endpoint());
    let (dir, config, _port, _p) = Proc::start(&extra).await;
    let c = cfg(&config);
    let spec = format!("{repo}:Q4_K_M");
    let first = run(&["--config", c, "pull", &spec], dir.path()).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    let saved = format!("saved {repo}/{file} in the service's download_dir");
    assert!(first.stderr.contains(&saved), "{first:?}");
    let cdn = hub.cdn_path(repo, &hub.commit(repo), file);
    let fetched = gets(hub.cdn(), &cdn);
    assert!(fetched >= 1);

    let second = run(&["--config", c, "pull", &spec], dir.path()).await;
    assert_eq!(second.code, Some(0), "{second:?}");
    let line = format!("{repo}/{file}: up to date");
    assert!(second.stdout.contains(&line), "{second:?}");
    assert_eq!(
        gets(hub.cdn(), &cdn),
        fetched,
        "the second pull fetched the file"
    );
    let saved = dir.path().join("downloads").join(repo).join(file);
    assert_eq!(file_sha256(&saved), sha256_hex(&data));

    let url = up.url("plain.bin");
    let once = run(&["--config", c, "pull", &url], dir.path()).await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let twice = run(&["--config", c, "pull", &url, "--json"], dir.path()).await;
    assert_eq!(twice.code, Some(0), "{twice:?}");
    assert!(
        twice.stdout.contains(r#""event":"up_to_date""#),
        "{twice:?}"
    );
    assert_eq!(gets(&up, "plain.bin"), 1, "one GET in all");
}

/// aria2p's `add_uris` of the same URI twice answers the first gid.
#[actix_web::test]
async fn aria2p_adding_the_same_uri_again_answers_its_gid() {
    let up = Upstream::start();
    up.add_file("a/x.gguf", content(200_000, 42), Behavior::default());
    up.add_file("b/x.gguf", content(210_000, 43), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    let port = svc.base.rsplit(':').next().unwrap().to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aria2/aria2p_again.py");
    let args = vec![
        script.to_owned(),
        port,
        svc.base.clone(),
        up.url("a/x.gguf"),
        up.url("b/x.gguf"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(&args).output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/test.sh installs aria2p)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "aria2p check failed:\n{text}");
    assert!(text.contains("the same URI answers its gid"), "{text}");
    assert_eq!(gets(&up, "a/x.gguf"), 1, "{text}");
}

/// `pause`/`rm` take any unambiguous start of an id; an ambiguous one lists its ids.
#[tokio::test]
async fn an_id_prefix_names_its_download_and_an_ambiguous_one_lists_the_candidates() {
    let up = Upstream::start();
    let (dir, config, _port, p) = Proc::start("").await;
    let c = cfg(&config);
    let mut ids = Vec::new();
    for i in 0..2 {
        let name = format!("f{i}.bin");
        up.add_file(&name, content(10_000, 50 + i), Behavior::default());
        ids.push(
            p.add(json!({"url": up.url(&name), "start_paused": true}))
                .await,
        );
    }
    // ULIDs made in the same millisecond share their first ten characters at least.
    let common_len = ids[0]
        .chars()
        .zip(ids[1].chars())
        .take_while(|(a, b)| a == b)
        .count();
    let shared = &ids[0][..common_len];
    let out = run(&["--config", c, "rm", shared], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ambiguous"), "{out:?}");
    assert!(
        out.stderr.contains(&ids[0]) && out.stderr.contains(&ids[1]),
        "{out:?}"
    );
    assert_eq!(
        p.get("/api/downloads").await["downloads"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let unique = ids[0][..common_len + 1].to_ascii_lowercase();
    let out = run(&["--config", c, "rm", &unique], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("{}  removed", ids[0])),
        "{out:?}"
    );
    let left = p.get("/api/downloads").await;
    assert_eq!(left["downloads"][0]["id"], ids[1].as_str(), "{left}");

    // `ls` shows why a download failed.
    let failed = p.add(json!({"url": up.url("missing.bin")})).await;
    common::wait::eventually(std::time::Duration::from_secs(30), || async {
        let d = p.get(&format!("/api/downloads/{failed}")).await;
        (d["state"] == "failed").then_some(()).ok_or(d.to_string())
    })
    .await;
    let out = run(&["--config", c, "ls"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(header.contains("ERROR"), "{out:?}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&failed))
        .unwrap_or_default();
    assert!(row.contains("not_found"), "{out:?}");

    let out = run(&["--config", c, "pause", "dl_ZZZZ"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("no download has an id starting with dl_ZZZZ"),
        "{out:?}"
    );
}

/// `settings` shows the run-time settings and `settings max_concurrent=2` changes it;
/// unknown keys and bad values are bad usage (exit 2) and change nothing.
#[tokio::test]
async fn settings_shows_and_changes_the_run_time_settings() {
    let (dir, config, _port, p) = Proc::start("[downloads]\nmax_concurrent = 3\n").await;
    let c = cfg(&config);
    let out = run(&["--config", c, "settings"], dir.path()).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("max_concurrent") && l.contains(" 3 ")),
        "{out:?}"
    );

    let out = run(
        &[
            "--config",
            c,
            "settings",
            "max_concurrent=2",
            "speed_limit_bps=8MiB",
        ],
        dir.path(),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let s = p.get("/api/settings").await;
    assert_eq!(
        (s["max_concurrent"].as_u64(), s["speed_limit_bps"].as_u64()),
        (Some(2), Some(8 << 20)),
        "{s}"
    );
    assert!(out.stdout.contains("8.00 MiB/s"), "{out:?}");

    for (bad, says) in [
        ("max_concurent=4", "did you mean max_concurrent?"),
        ("max_concurrent=four", "takes a whole number"),
        ("max_concurrent", "KEY=VALUE"),
    ] {
        let out = run(&["--config", c, "settings", bad], dir.path()).await;
        assert_eq!(out.code, Some(2), "{bad}: {out:?}");
        assert!(out.stderr.contains(says), "{bad}: {out:?}");
    }
    // A value the service refuses: its reason, exit 1.
    let out = run(&["--config", c, "settings", "max_concurrent=0"], dir.path()).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(p.get("/api/settings").await["max_concurrent"], 2);
}

/// Without a service, `pull` runs the core in-process: the second pull of a URL says
/// up to date there too, and the first says where the file was saved.
#[tokio::test]
async fn an_embedded_pull_twice_says_up_to_date_and_where_the_file_is() {
    let up = Upstream::start();
    let data = content(200_000, 80);
    up.add_file("e.bin", data.clone(), Behavior::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), free_port(), "");
    let c = cfg(&config);
    let url = up.url("e.bin");
    let first = run(&["--config", c, "pull", &url], dir.path()).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(
        first.stderr.contains("downloading in this process"),
        "{first:?}"
    );
    let saved = dir.path().join("downloads/e.bin");
    assert!(
        first.stderr.contains(&format!("saved {}", saved.display())),
        "{first:?}"
    );
    let second = run(&["--config", c, "pull", &url], dir.path()).await;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(second.stdout.contains("e.bin: up to date"), "{second:?}");
    assert_eq!(gets(&up, "e.bin"), 1, "{second:?}");
    assert_eq!(file_sha256(&saved), sha256_hex(&data));
}
