//! #22, acceptance 2: the library against another program. A second process (Python)
//! creates random files in download_dir, writes through descriptors it holds, renames,
//! truncates, reopens and deletes them, while the service scans (rescans asked for
//! all along), hashes and publishes (HF cache, Ollama and LM Studio configured, Hub
//! and URL downloads completing meanwhile). At the end every byte that process wrote
//! is where it wrote it: each of its names reads back exactly its own model of the
//! file, and each name it still holds open is still the file of its descriptor.
//! Seeded (`LIBRARY_PROPERTY_SEED` replays a run); the seed is in every failure.

use crate::common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::Upstream;
use serde_json::{json, Value};

const REPO: &str = "bartowski/Tiny-GGUF";

/// The other program. Its preallocated parts (equal, all zeros) and hand-placed equal
/// copies stay untouched until the end, long enough for the library to hash them,
/// and are written last: through the held descriptors, and by name.
const OTHER: &str = r#"
import json, os, random, sys, time
root, seed, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(seed)
files = {}
dirs = ["", "other", "other/deep"]
for d in dirs[1:]:
    os.makedirs(os.path.join(root, d), exist_ok=True)
count = 0
def new_name(ext=None):
    global count
    count += 1
    ext = ext or rng.choice([".bin", ".gguf", ".safetensors"])
    return os.path.join(rng.choice(dirs), f"w{count}{ext}")
def at(name):
    return os.path.join(root, name)
def put(data, off, chunk):
    if off > len(data):
        data.extend(bytes(off - len(data)))
    data[off:off + len(chunk)] = chunk
def create(data, keep_open=True):
    name = new_name()
    fd = os.open(at(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.pwrite(fd, bytes(data), 0)
    if not keep_open:
        os.close(fd)
        fd = None
    files[name] = {"fd": fd, "data": bytearray(data)}
    return name
def write(name):
    f = files[name]
    chunk = rng.randbytes(rng.randrange(1, 20000))
    off = rng.randrange(0, len(f["data"]) + 1000)
    if f["fd"] is None:
        f["fd"] = os.open(at(name), os.O_RDWR)
    os.pwrite(f["fd"], chunk, off)
    put(f["data"], off, chunk)
parts = [create(bytes(256 * 1024)) for _ in range(4)]
same = rng.randbytes(100_000)
copies = [create(same, keep_open=False) for _ in range(3)]
fixed = set(parts + copies)
end = time.time() + secs
ops = 0
while time.time() < end:
    ops += 1
    live = [k for k in files if k not in fixed]
    op = rng.choice(["create", "create", "write", "write", "write", "rename", "truncate", "delete", "close"])
    if op == "create" or not live:
        if live and rng.random() < 0.3:
            create(files[rng.choice(live)]["data"], keep_open=rng.random() < 0.5)
        else:
            create(rng.randbytes(rng.randrange(0, 60000)), keep_open=rng.random() < 0.7)
        continue
    name = rng.choice(live)
    f = files[name]
    if op == "write":
        write(name)
    elif op == "rename":
        new = new_name(os.path.splitext(name)[1])
        os.rename(at(name), at(new))
        files[new] = files.pop(name)
    elif op == "truncate" and f["fd"] is not None:
        n = rng.randrange(0, len(f["data"]) + 5000)
        os.ftruncate(f["fd"], n)
        del f["data"][n:]
        f["data"].extend(bytes(n - len(f["data"])))
    elif op == "delete":
        os.unlink(at(name))
        if f["fd"] is not None:
            os.close(f["fd"])
        del files[name]
    elif op == "close" and f["fd"] is not None:
        os.close(f["fd"])
        f["fd"] = None
    time.sleep(rng.uniform(0, 0.02))
for name in parts + copies:
    write(name)
errors = []
for name, f in sorted(files.items()):
    try:
        with open(at(name), "rb") as h:
            got = h.read()
    except OSError as e:
        errors.append(f"{name}: {e}")
        continue
    want = bytes(f["data"])
    if got != want:
        diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        errors.append(f"{name}: {len(got)} bytes on disk, {len(want)} written, first difference at {diff}")
    if f["fd"] is not None and os.fstat(f["fd"]).st_ino != os.stat(at(name)).st_ino:
        errors.append(f"{name}: the name no longer holds the file of the descriptor")
print(json.dumps({"ops": ops, "files": len(files), "errors": errors}))
"#;

#[actix_web::test]
async fn another_programs_bytes_are_never_lost_or_redirected_by_the_library() {
    let seed: u64 = std::env::var("LIBRARY_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
        });
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let hub_files: Vec<(String, Vec<u8>)> = ["Q4_K_M", "Q5_K_M", "Q6_K"]
        .iter()
        .zip(60..)
        .map(|(q, seed)| (format!("Tiny-{q}.gguf"), content(200_000, seed)))
        .collect();
    for (f, d) in &hub_files {
        hub.put_file(REPO, f, d.clone());
    }
    let up = Upstream::start();
    // The same bytes as a Hub file: two files of ours, which may be merged.
    up.add_file("twin.gguf", hub_files[0].1.clone(), Default::default());
    let root = tempfile::tempdir().unwrap();
    let (cache, ollama, lms) = (
        root.path().join("hf"),
        root.path().join("ollama"),
        root.path().join("lms"),
    );
    let (c, o, l, endpoint) = (
        cache.display().to_string(),
        ollama.display().to_string(),
        lms.display().to_string(),
        hub.endpoint(),
    );
    let svc = Arc::new(
        TestService::start(move |cfg| {
            cfg.hub.endpoint = endpoint;
            cfg.library.hf_cache = c;
            cfg.library.ollama_models = o;
            cfg.library.lmstudio_models = l;
        })
        .await,
    );
    let dl = svc.download_dir();
    std::fs::create_dir_all(&dl).unwrap();
    let started = Instant::now();

    // The other program, a process of its own.
    let child = {
        let dl = dl.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args(["-c", OTHER])
                .arg(&dl)
                .arg(seed.to_string())
                .arg("20")
                .output()
                .expect("python3 runs")
        })
    };
    // Rescans all along.
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (svc, done) = (svc.clone(), done.clone());
        actix_web::rt::spawn(async move {
            let mut scans = 0;
            while !done.load(Ordering::Relaxed) {
                let (s, v) = svc.post("/api/library/rescan", json!({})).await;
                assert_eq!(s, 200, "rescan: {v}");
                scans += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            scans
        })
    };
    // Real downloads completing meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids = Vec::new();
    for (f, _) in &hub_files {
        ids.push(svc.add(json!({"hub": {"repo": REPO, "file": f}})).await);
    }
    ids.push(svc.add(json!({"url": up.url("twin.gguf")})).await);
    for id in &ids {
        svc.wait_state(id, "completed", Duration::from_secs(40))
            .await;
    }
    let out = child.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let scans = scanner.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "seed {seed}: the other program failed: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "seed {seed}: {} ops on {} files, {scans} scans",
        report["ops"], report["files"]
    );
    assert_eq!(
        report["errors"],
        json!([]),
        "seed {seed}: bytes the other program wrote are not where it wrote them ({} ops, {scans} scans)",
        report["ops"]
    );
    assert!(report["ops"].as_u64() > Some(100), "seed {seed}: {report}");
    assert!(scans > 10, "seed {seed}: only {scans} scans");
    for (f, d) in &hub_files {
        assert_eq!(
            file_sha256(&dl.join(REPO).join(f)),
            sha256_hex(d),
            "seed {seed}: {f}"
        );
    }
    assert_eq!(
        file_sha256(&dl.join("twin.gguf")),
        sha256_hex(&hub_files[0].1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "seed {seed}: took {:?}",
        started.elapsed()
    );
}
