//! A damaged database (issue #22, item 2 and acceptance 3): single flipped bits and
//! truncations of sled's files, after a clean stop and after kill -9. Start-up either
//! lists every download as it was or stops with exit status non-zero and one line on
//! stderr; it never starts with fewer. What it found is kept, byte for byte.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::*;
use serde_json::{json, Value};

/// What the service listed before it was stopped: (id, state) in list order, and the
/// settings.
#[derive(Clone, PartialEq, Debug)]
struct Listed {
    downloads: Vec<(String, String)>,
    settings: Value,
}

async fn listed(base: &str) -> Option<Listed> {
    let client = test_client();
    let list: Value = client
        .get(format!("{base}/api/downloads"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let settings: Value = client
        .get(format!("{base}/api/settings"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let downloads = list["downloads"]
        .as_array()?
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or_default().to_owned(),
                d["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Some(Listed {
        downloads,
        settings,
    })
}

/// A data dir with 200 downloads (after 205 adds, 5 removed, 10 cancelled, the rest
/// paused) and changed settings, left by a SIGTERM (`kill9` false) or a kill -9.
async fn queue_of_200(kill9: bool) -> (tempfile::TempDir, Listed) {
    let (dir, _config, _port, mut proc) = Proc::start("").await;
    let mut ids = Vec::new();
    for i in 0..205 {
        let url = format!("http://127.0.0.1:9/q{i}.bin");
        ids.push(proc.add(json!({"url": url, "start_paused": true})).await);
    }
    let client = test_client();
    for id in &ids[..5] {
        let r = client
            .delete(format!("{}/api/downloads/{id}", proc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for id in &ids[5..15] {
        let (s, v) = proc
            .post(&format!("/api/downloads/{id}/cancel"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let r = client
        .patch(format!("{}/api/settings", proc.base))
        .json(&json!({"max_concurrent": 2, "max_retries": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = listed(&proc.base).await.expect("listed");
    assert_eq!(before.downloads.len(), 200);
    if kill9 {
        proc.kill9();
    } else {
        proc.sigterm();
        assert!(proc.wait_exit(Duration::from_secs(20)).success());
    }
    (dir, before)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// sled's files: db, conf, snap.*, blobs/*.
fn sled_files(v1: &Path) -> Vec<PathBuf> {
    files(v1).into_keys().map(|rel| v1.join(rel)).collect()
}

#[derive(Debug, Clone)]
enum Damage {
    Flip {
        file: String,
        at: u64,
        bit: u8,
    },
    Truncate {
        file: String,
        to: u64,
    },
    Delete {
        file: String,
    },
    /// None at all: the control.
    None,
}

impl Damage {
    fn apply(&self, v1: &Path) {
        match self {
            Damage::Flip { file, at, bit } => {
                let p = v1.join(file);
                let mut bytes = std::fs::read(&p).unwrap();
                bytes[*at as usize] ^= 1 << bit;
                std::fs::write(&p, bytes).unwrap();
            }
            Damage::Truncate { file, to } => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(v1.join(file))
                    .unwrap();
                f.set_len(*to).unwrap();
            }
            Damage::Delete { file } => std::fs::remove_file(v1.join(file)).unwrap(),
            Damage::None => {}
        }
    }

    /// The named cases: flips at 25/50/75 % of `db`, truncation to half,
    /// emptying, deletion.
    fn named(v1: &Path) -> Vec<Damage> {
        let len = std::fs::metadata(v1.join("db")).unwrap().len();
        let db = || "db".to_owned();
        vec![
            Damage::Flip {
                file: db(),
                at: len / 4,
                bit: 2,
            },
            Damage::Flip {
                file: db(),
                at: len / 2,
                bit: 5,
            },
            Damage::Flip {
                file: db(),
                at: len * 3 / 4,
                bit: 0,
            },
            Damage::Truncate {
                file: db(),
                to: len / 2,
            },
            Damage::Truncate { file: db(), to: 0 },
            Damage::Delete { file: db() },
        ]
    }

    /// `n` random single-bit flips and truncations of sled's files (seeded).
    fn random(v1: &Path, n: usize, seed: u64) -> Vec<Damage> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let names: Vec<(String, u64)> = sled_files(v1)
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).unwrap().len();
                (p.strip_prefix(v1).unwrap().display().to_string(), len)
            })
            .filter(|(_, len)| *len > 0)
            .collect();
        (0..n)
            .map(|_| {
                let (file, len) = names[rng.usize(..names.len())].clone();
                if rng.u8(..4) == 0 {
                    Damage::Truncate {
                        file,
                        to: rng.u64(..len),
                    }
                } else {
                    Damage::Flip {
                        file,
                        at: rng.u64(..len),
                        bit: rng.u8(..8),
                    }
                }
            })
            .collect()
    }
}

/// How one start-up over damaged files ended.
#[derive(Debug)]
enum Outcome {
    /// It started and listed every download as before; whether it kept a damaged copy.
    Whole {
        kept: bool,
    },
    Refused,
}

/// Starts the binary over a fresh copy of `base` damaged by `damage`, and checks the
/// promise: every download as before, or a refusal in one line; what it found kept.
async fn start_over(base: Arc<PathBuf>, before: Arc<Listed>, damage: Damage) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&base.join("data"), &dir.path().join("data"));
    let v1 = dir.path().join("data/v1");
    damage.apply(&v1);
    let damaged_input = files(&v1);
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let log = dir.path().join("service.log");
    let (child, started) = start_binary(&config, port, &log, &damage).await;
    let outcome = match started {
        Ok(base_url) => {
            let now = listed(&base_url).await.expect("listed");
            // And it goes on writing where the journal ends.
            let (s, added) = post(
                &base_url,
                json!({"url": "http://127.0.0.1:9/after.bin", "start_paused": true}),
            )
            .await;
            assert_eq!(s, 201, "{damage:?}: {added}");
            stop(child);
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert_eq!(
                now.downloads.len(),
                before.downloads.len(),
                "{damage:?}: started with {} of {} downloads\n{log}",
                now.downloads.len(),
                before.downloads.len()
            );
            assert_eq!(now, *before, "{damage:?}: not the same downloads\n{log}");
            let kept = kept_copy(dir.path());
            if let Some(copy) = &kept {
                assert!(
                    files(&copy.join("v1")) == damaged_input,
                    "{damage:?}: {} is not what was found",
                    copy.display()
                );
                assert!(log.contains("was damaged"), "{damage:?}: no warning\n{log}");
            }
            // What start-up settled stays settled: the next start finds it whole,
            // quietly.
            let log2 = dir.path().join("service-2.log");
            let (child, again) = start_binary(&config, port, &log2, &damage).await;
            let again = again.expect("the second start-up");
            let mut then = listed(&again).await.expect("listed");
            let at = then
                .downloads
                .iter()
                .position(|(id, _)| added["id"] == *id)
                .unwrap_or_else(|| panic!("{damage:?}: the download added after is gone"));
            then.downloads.remove(at);
            assert_eq!(then, *before, "{damage:?}: second start");
            stop(child);
            let log2 = std::fs::read_to_string(&log2).unwrap_or_default();
            assert!(
                !log2.contains("damaged"),
                "{damage:?}: second start\n{log2}"
            );
            assert_eq!(kept_copy(dir.path()), kept, "{damage:?}");
            Outcome::Whole {
                kept: kept.is_some(),
            }
        }
        Err(status) => {
            refused_in_one_line(child, status, &damage, &v1, &damaged_input);
            Outcome::Refused
        }
    };
    assert!(
        !dir.path().join("data/.v1-as-found").exists(),
        "{damage:?}: a copy left behind"
    );
    outcome
}

/// Starts the binary; returns once it answers `/healthz` (its base URL) or has exited.
async fn start_binary(
    config: &Path,
    port: u16,
    log: &Path,
    damage: &Damage,
) -> (
    std::process::Child,
    Result<String, std::process::ExitStatus>,
) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base_url = format!("http://127.0.0.1:{port}");
    let health = format!("{base_url}/healthz");
    let outcome = common::wait::eventually(Duration::from_secs(30), || {
        let exited = child.try_wait().unwrap();
        let asked = reqwest::get(health.clone());
        async move {
            if let Some(status) = exited {
                return Ok(Err(status));
            }
            match asked.await {
                Ok(r) if r.status().is_success() => Ok(Ok(())),
                _ => Err(format!("{damage:?}: neither started nor exited")),
            }
        }
    })
    .await;
    (child, outcome.map(|()| base_url))
}

async fn post(base_url: &str, body: Value) -> (u16, Value) {
    let r = test_client()
        .post(format!("{base_url}/api/downloads"))
        .json(&body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// SIGTERM, and the exit it leads to.
fn stop(mut child: std::process::Child) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    common::wait::eventually_blocking(Duration::from_secs(20), || {
        let exited = child.try_wait().unwrap();
        exited.ok_or_else(|| "did not stop on SIGTERM".to_owned())
    });
}

/// A refusal: exit status non-zero, one line on stderr, no panic, and sled's files
/// as they were found.
fn refused_in_one_line(
    child: std::process::Child,
    status: std::process::ExitStatus,
    damage: &Damage,
    v1: &Path,
    damaged_input: &BTreeMap<PathBuf, Vec<u8>>,
) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!status.success(), "{damage:?}: exited 0 at start-up: {err}");
    assert_eq!(lines.len(), 1, "{damage:?}: not one line: {err}");
    assert!(!err.contains("panicked"), "{damage:?}: {err}");
    assert!(
        files(v1) == *damaged_input,
        "{damage:?}: refused, but sled's files were changed"
    );
}

fn kept_copy(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("damaged-"))
        })
}

/// Runs `cases` over `base`, four at a time.
async fn run_cases(
    base: &tempfile::TempDir,
    before: &Listed,
    cases: Vec<Damage>,
) -> Vec<(Damage, Outcome)> {
    let base = Arc::new(base.path().to_owned());
    let before = Arc::new(before.clone());
    let mut out = Vec::new();
    for chunk in cases.chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|d| {
                let (base, before) = (base.clone(), before.clone());
                tokio::spawn(async move {
                    let o = start_over(base, before, d.clone()).await;
                    (d, o)
                })
            })
            .collect();
        for t in tasks {
            out.push(t.await.expect("case"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_database_never_starts_with_fewer_downloads() {
    let t = Instant::now();
    let mut all = Vec::new();
    for (kill9, seed) in [(false, 22), (true, 2222)] {
        let (base, before) = queue_of_200(kill9).await;
        let v1 = base.path().join("data/v1");
        // The issue's own cases: sled loses records to each; all must come back, and
        // what was found be kept.
        let named = run_cases(&base, &before, Damage::named(&v1)).await;
        for (d, o) in &named {
            assert!(
                matches!(o, Outcome::Whole { kept: true }),
                "kill9={kill9} {d:?}: {o:?}"
            );
        }
        all.extend(named);
        // Undamaged files start as they are, with no warning and nothing kept.
        let control = run_cases(&base, &before, vec![Damage::None]).await;
        assert!(
            matches!(control[0].1, Outcome::Whole { kept: false }),
            "kill9={kill9}: {control:?}"
        );
        all.extend(run_cases(&base, &before, Damage::random(&v1, 25, seed)).await);
    }
    let (mut whole, mut kept, mut refused) = (0, 0, 0);
    for (d, o) in &all {
        println!("{d:?}: {o:?}");
        match o {
            Outcome::Whole { kept: true } => kept += 1,
            Outcome::Whole { kept: false } => whole += 1,
            Outcome::Refused => refused += 1,
        }
    }
    println!(
        "{} damaged starts in {:?}: {kept} recovered (damaged copy kept), {whole} undamaged \
         in effect, {refused} refused with one line",
        all.len(),
        t.elapsed()
    );
}

/// A download recovered from the journal has lost its checkpoint (a cache, not in the
/// journal): it must start its `.part` over and complete with the right bytes, not
/// keep bytes nothing vouches for.
#[actix_web::test]
async fn a_download_recovered_without_its_checkpoint_completes_with_the_right_bytes() {
    use common::service::*;
    use common::upstream::{Behavior, Upstream};
    let up = Upstream::start();
    let data = content(4 * MIB, 2222);
    up.add_file(
        "r.bin",
        data.clone(),
        Behavior {
            rate_bps: Some(MIB as u64),
            ..Default::default()
        },
    );
    let svc = TestService::start(|_| {}).await;
    let id = svc
        .add(json!({"url": up.url("r.bin"), "sha256": sha256_hex(&data)}))
        .await;
    svc.wait_past(&id, MIB as u64, Duration::from_secs(20))
        .await;
    let (s, v) = svc.action(&id, "pause").await;
    assert_eq!(s, 200, "{v}");
    let part = svc.download_dir().join("r.bin.part");
    assert!(std::fs::metadata(&part).unwrap().len() > 0);
    let config = test_config(svc.dir.path());
    let dir = svc.stop().await;
    // sled's folder gone (as a refusal's advice has it moved away): the journal has
    // the record, nothing has its checkpoint.
    std::fs::remove_dir_all(config.storage.data_dir.join("v1")).unwrap();
    let before = up.requests("r.bin").len();
    let svc = TestService::start_in(dir, config).await;
    let d = svc.download(&id).await;
    assert_eq!(d["state"], "paused", "{d}");
    let (s, v) = svc.action(&id, "resume").await;
    assert_eq!(s, 200, "{v}");
    svc.wait_state(&id, "completed", Duration::from_secs(30))
        .await;
    assert_eq!(
        file_sha256(&svc.download_dir().join("r.bin")),
        sha256_hex(&data)
    );
    let first = up.requests("r.bin")[before].clone();
    assert!(
        first.range_start.unwrap_or(0) == 0,
        "resumed from bytes no checkpoint vouches for: {first:?}"
    );
}
