//! The model library against real clients: files downloaded from the (emulated) Hub are
//! published into the HuggingFace cache, and `huggingface_hub` itself (PyPI, offline)
//! finds them; files put there by hand are read and hashed; identical files become one
//! inode; nothing outside download_dir and the cache is ever touched.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::{Behavior, Upstream};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";

/// Runs a Python snippet; fails the test with the install hint if the packages are missing.
fn python(script: &str, envs: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 runs (install Python 3)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a Python package is missing: run `python3 -m pip install huggingface_hub gguf` (scripts/test.sh does): {stderr}"
    );
    assert!(out.status.success(), "python failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn library(svc: &TestService) -> Value {
    let (s, v) = svc.get("/api/library").await;
    assert_eq!(s, 200, "{v}");
    v
}

use common::wait::library_file as file_of;

/// Polls the library until `pred` holds for the file at `path`.
async fn wait_file(
    svc: &TestService,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    common::wait::library_file_where(LONG, || library(svc), path, what, pred).await
}

/// Every symlink under `dir` resolves.
fn dangling_links(dir: &Path) -> Vec<PathBuf> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_symlink() && std::fs::metadata(&p).is_err() {
                bad.push(p);
            }
        }
    }
    bad
}

const HF_READ: &str = r#"
import hashlib, json, os, sys
from huggingface_hub import hf_hub_download, scan_cache_dir
out = {"files": {}}
for f in json.loads(os.environ["FILES"]):
    p = hf_hub_download(os.environ["REPO"], f, revision="main")
    out["files"][f] = hashlib.sha256(open(p, "rb").read()).hexdigest()
info = scan_cache_dir()
out["warnings"] = [str(w) for w in info.warnings]
out["repos"] = sorted(r.repo_id for r in info.repos)
print(json.dumps(out))
"#;

const HF_SCAN: &str = r#"
import json
from huggingface_hub import scan_cache_dir
info = scan_cache_dir()
print(json.dumps({"warnings": [str(w) for w in info.warnings], "repos": sorted(r.repo_id for r in info.repos)}))
"#;

#[actix_web::test]
async fn hub_downloads_are_found_by_huggingface_hub_offline_and_a_delete_leaves_no_trace() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let files = [
        "Tiny-Q4_K_M.gguf",
        "Q8_0/Tiny-Q8_0-00001-of-00002.gguf",
        "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
    ];
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| content(300_000 + i * 1000, 40 + i as u64))
        .collect();
    for (f, d) in files.iter().zip(&datas) {
        hub.put_file(REPO, f, d.clone());
    }
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("hf");
    let endpoint = hub.endpoint();
    let cache_cfg = cache.display().to_string();
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.hf_cache = cache_cfg;
    })
    .await;
    for quant in ["Q4_K_M", "Q8_0"] {
        svc.fetch_quantization(REPO, quant, LONG).await;
    }
    for f in files {
        let path = format!("{REPO}/{f}");
        let entry = wait_file(&svc, &path, "published in the HF cache", |f| {
            f["runtimes"]["hf_cache"].is_string()
        })
        .await;
        assert_eq!(entry["repo"], REPO, "{entry}");
        assert_eq!(entry["revision"], hub.commit(REPO), "{entry}");
    }

    let names = serde_json::to_string(&files).unwrap();
    let out = python(
        HF_READ,
        &[
            ("HF_HUB_CACHE", &cache),
            ("HF_HUB_OFFLINE", Path::new("1")),
            ("REPO", Path::new(REPO)),
            ("FILES", Path::new(&names)),
        ],
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    for (f, d) in files.iter().zip(&datas) {
        assert_eq!(
            out["files"][f],
            sha256_hex(d),
            "hf_hub_download of {f}: {out}"
        );
    }
    assert_eq!(out["warnings"], json!([]), "{out}");
    assert_eq!(out["repos"], json!([REPO]), "{out}");

    for f in files {
        let (s, v) = svc.delete(&format!("/api/library/{REPO}/{f}")).await;
        assert_eq!(s, 204, "{f}: {v}");
        assert!(!svc.download_dir().join(REPO).join(f).exists());
    }
    assert_eq!(dangling_links(&cache), Vec::<PathBuf>::new());
    let out: Value = serde_json::from_str(&python(HF_SCAN, &[("HF_HUB_CACHE", &cache)])).unwrap();
    assert_eq!(
        out,
        json!({"warnings": [], "repos": []}),
        "after the deletes"
    );
    assert!(library(&svc).await["files"].as_array().unwrap().is_empty());
}

/// A GGUF with a llama header, written by llama.cpp's own `gguf` package.
const WRITE_GGUF: &str = r#"
import os, numpy as np, gguf
w = gguf.GGUFWriter(os.environ["OUT"], "llama")
w.add_name("Hand Placed 1B")
w.add_context_length(4096)
w.add_block_count(2)
w.add_embedding_length(64)
w.add_file_type(15)
w.add_chat_template("{{ messages }}")
w.add_tensor("token_embd.weight", np.zeros((32, 64), dtype=np.float32))
w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;

#[actix_web::test]
async fn a_gguf_copied_in_by_hand_is_listed_with_its_metadata_and_hashed() {
    let svc = TestService::start(|_| {}).await;
    let dir = svc.download_dir().join("hand");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("Hand-1B-Q4_K_M.gguf");
    python(WRITE_GGUF, &[("OUT", &file)]);
    std::fs::write(
        dir.join("broken.gguf"),
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f",
    )
    .unwrap();
    let (s, v) = svc.post("/api/library/rescan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let path = "hand/Hand-1B-Q4_K_M.gguf";
    let f = wait_file(&svc, path, "hashed", |f| f["sha256"].is_string()).await;
    assert_eq!(f["sha256"], file_sha256(&file), "{f}");
    assert_eq!(f["quantization"], "Q4_K_M");
    assert_eq!(f["size"], std::fs::metadata(&file).unwrap().len());
    assert_eq!(f["download_id"], Value::Null);
    let g = &f["gguf"];
    assert_eq!(g["architecture"], "llama", "{f}");
    assert_eq!(g["name"], "Hand Placed 1B");
    assert_eq!(g["context_length"], 4096);
    assert_eq!(g["block_count"], 2);
    assert_eq!(g["embedding_length"], 64);
    assert_eq!(g["file_type"], 15);
    assert_eq!(g["parameters"], 32 * 64 + 64 * 64);
    assert_eq!(g["chat_template"], true);
    let lib = library(&svc).await;
    let broken = file_of(&lib, "hand/broken.gguf").expect("a damaged file is listed");
    assert_eq!(broken["gguf"], Value::Null, "{broken}");
    assert!(
        broken["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{broken}"
    );
}

#[actix_web::test]
async fn the_same_file_under_two_paths_is_one_inode_and_a_delete_keeps_the_other() {
    let up = Upstream::start();
    let data = content(700_000, 9);
    up.add_file("x.bin", data.clone(), Behavior::default());
    up.add_file("mirror/x.bin", data.clone(), Behavior::default());
    let svc = TestService::start(|_| {}).await;
    for (url, name) in [
        (up.url("x.bin"), "a.bin"),
        (up.url("mirror/x.bin"), "b.bin"),
    ] {
        let id = svc.add(json!({"url": url, "file_name": name})).await;
        svc.wait_state(&id, "completed", LONG).await;
    }
    // Neither had an expected digest: each records the sha256 of what it fetched.
    let (_, list) = svc.get("/api/history").await;
    for d in list["downloads"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        svc.wait_until(id, LONG, "its sha256 recorded", |v| {
            v["sha256"] == sha256_hex(&data)
        })
        .await;
    }
    let (a, b) = (
        svc.download_dir().join("a.bin"),
        svc.download_dir().join("b.bin"),
    );
    common::wait::eventually(LONG, || async {
        if std::fs::metadata(&a).unwrap().ino() == std::fs::metadata(&b).unwrap().ino() {
            return Ok(());
        }
        Err(format!("never linked: {}", library(&svc).await))
    })
    .await;
    // The library learns of the link as it makes it; it may lag the disk a moment.
    common::wait::eventually(LONG, || async {
        let lib = library(&svc).await;
        if lib["bytes_saved_by_links"] == data.len() {
            Ok(())
        } else {
            Err(lib.to_string())
        }
    })
    .await;
    let (s, v) = svc.delete("/api/library/a.bin").await;
    assert_eq!(s, 204, "{v}");
    assert!(!a.exists());
    assert_eq!(file_sha256(&b), sha256_hex(&data), "the other stays whole");
    assert_eq!(library(&svc).await["bytes_saved_by_links"], 0);
}

#[actix_web::test]
async fn nothing_outside_download_dir_is_touched_by_the_library() {
    let svc = TestService::start(|_| {}).await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.gguf");
    std::fs::write(&victim, b"not yours").unwrap();
    let dl = svc.download_dir();
    std::fs::create_dir_all(&dl).unwrap();
    std::os::unix::fs::symlink(&victim, dl.join("link.gguf")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dl.join("dir")).unwrap();
    std::fs::write(dl.join("own.bin"), b"mine").unwrap();
    let (s, v) = svc.post("/api/library/rescan", json!({})).await;
    assert_eq!((s, &v["files"]), (200, &json!(1)), "only own.bin: {v}");
    let lib = library(&svc).await;
    let paths: Vec<&str> = lib["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["own.bin"], "links are not followed: {lib}");
    for p in [
        "link.gguf",
        "dir/victim.gguf",
        "..%2Fvictim.gguf",
        "%2e%2e/x",
        "%2E%2E%2Fx",
        "own.bin%00",
        ".%2e/own.bin",
    ] {
        let url = format!("{}/api/library/{p}", svc.base);
        let r = svc.client.delete(url).send().await.unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "DELETE {p} answered {status}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert!(
        dl.join("link.gguf").symlink_metadata().is_ok(),
        "the link itself stays too"
    );
    assert_eq!(std::fs::read(dl.join("own.bin")).unwrap(), b"mine");
}

/// GGUF bytes: magic, version 3, the counts, then `kv` already encoded.
fn gguf(tensors: u64, kv_count: u64, kv: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kv_count.to_le_bytes());
    out.extend(kv);
    out
}

fn gstr(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

fn peak_rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

#[actix_web::test]
async fn hostile_headers_list_with_an_error_and_cost_no_memory() {
    use common::binary::Proc;
    let (dir, _config, _port, proc) = Proc::start("").await;
    let dl = dir.path().join("downloads");
    let huge = 1u64 << 60;
    let mut name_too_long = gstr("general.name");
    name_too_long.extend(8u32.to_le_bytes());
    name_too_long.extend(huge.to_le_bytes());
    let mut endless_array = gstr("tokenizer.ggml.tokens");
    endless_array.extend(9u32.to_le_bytes());
    endless_array.extend(8u32.to_le_bytes());
    endless_array.extend(huge.to_le_bytes());
    // A real-sized vocabulary: 150,000 strings, skipped without being kept.
    let mut vocab = gstr("general.architecture");
    vocab.extend(8u32.to_le_bytes());
    vocab.extend(gstr("llama"));
    vocab.extend(gstr("tokenizer.ggml.tokens"));
    vocab.extend(9u32.to_le_bytes());
    vocab.extend(8u32.to_le_bytes());
    vocab.extend(150_000u64.to_le_bytes());
    for i in 0..150_000 {
        vocab.extend(gstr(&format!("tok{i}")));
    }
    let valid = gguf(0, 2, &vocab);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("string-2^60.gguf", gguf(0, 1, &name_too_long)),
        ("array-2^60.gguf", gguf(0, 1, &endless_array)),
        ("tensors-2^60.gguf", gguf(huge, 0, &[])),
        ("kv-2^60.gguf", gguf(0, huge, &[])),
        ("truncated.gguf", valid[..valid.len() / 2].to_vec()),
        ("bad-magic.gguf", b"GGML and then some bytes".to_vec()),
        ("vocab.gguf", valid),
    ];
    for (name, bytes) in &files {
        std::fs::write(dl.join(name), bytes).unwrap();
    }
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/library/rescan", proc.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lib: Value = client
        .get(format!("{}/api/library", proc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (name, _) in &files {
        let f = file_of(&lib, name).unwrap_or_else(|| panic!("{name} is listed: {lib}"));
        if *name == "vocab.gguf" {
            assert_eq!(f["gguf"]["architecture"], "llama", "{f}");
        } else {
            assert_eq!(f["gguf"], Value::Null, "{name}: {f}");
            assert!(
                f["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{name}: {f}"
            );
        }
    }
    let rss = peak_rss_mib(proc.pid());
    assert!(
        rss < 64.0,
        "peak RSS {rss:.1} MiB while reading hostile headers (limit 64)"
    );
}

#[actix_web::test]
async fn the_websocket_announces_library_changes() {
    use futures_util::StreamExt;
    let svc = TestService::start(|_| {}).await;
    let url = format!("{}/api/events", svc.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    // Whole first: a client reads the library again whenever it gets a snapshot.
    // The first text frame (a ping may come before it on a loaded machine).
    let first = tokio::time::timeout(LONG, async {
        loop {
            let msg = ws.next().await.expect("open").expect("a frame");
            if msg.is_text() {
                return msg.into_text().unwrap();
            }
        }
    })
    .await
    .expect("a first frame");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["type"], "snapshot");
    std::fs::create_dir_all(svc.download_dir()).unwrap();
    std::fs::write(svc.download_dir().join("new.bin"), b"0123456789").unwrap();
    let (s, _) = svc.post("/api/library/rescan", json!({})).await;
    assert_eq!(s, 200);
    let mut seen = Vec::new();
    let frame = tokio::time::timeout(LONG, async {
        while let Some(Ok(msg)) = ws.next().await {
            let Ok(text) = msg.into_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            seen.push(v["type"].clone());
            if v["type"] == "library" {
                return Some(v);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no library frame in time; saw {seen:?}"))
    .expect("the websocket stayed open");
    assert_eq!(frame["files"][0]["path"], "new.bin", "{frame}");
    assert_eq!(frame["bytes_total"], 10, "{frame}");
    assert_eq!(frame["refetch"], false);
}

/// threats.md's "sparse 1 TB files": a terabyte of holes in `download_dir` is listed
/// with its size, costs no hashing (a file with holes is still being filled, or a
/// trap), and does not hold up the hashing of the file after it.
#[actix_web::test]
async fn a_sparse_terabyte_is_listed_and_holds_up_no_other_files_hash() {
    let svc = TestService::start(|_| {}).await;
    let dir = svc.download_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let sparse = std::fs::File::create(dir.join("a-sparse.bin")).unwrap();
    sparse.set_len(1 << 40).unwrap();
    let small = dir.join("b-small.bin");
    std::fs::write(&small, content(100_000, 4)).unwrap();
    let (s, v) = svc.post("/api/library/rescan", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let f = wait_file(&svc, "b-small.bin", "hashed", |f| f["sha256"].is_string()).await;
    assert_eq!(f["sha256"], file_sha256(&small), "{f}");
    let lib = library(&svc).await;
    let big = file_of(&lib, "a-sparse.bin").expect("the sparse file is listed");
    assert_eq!(big["size"], 1u64 << 40, "{big}");
    assert_eq!(big["sha256"], Value::Null, "{big}");
}
