//! The library against other programs' files (#22): it never merges, renames over or
//! rewrites a file it did not write; every walk and open in it and its publishers goes
//! through directory handles (a link in `refs/` or a FIFO in a runtime's folder is a
//! name, never a way out or a wait); an update takes its old Ollama blob with it; any
//! name it lists can be deleted.

use crate::common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::binary::Proc;
use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::Upstream;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
/// What a request that used to hang must answer within.
const PROMPT: Duration = Duration::from_secs(10);
const REPO: &str = "bartowski/Tiny-GGUF";
const Q4: &str = "Tiny-Q4_K_M.gguf";

async fn listing(base: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/library"))
        .timeout(PROMPT)
        .send()
        .await
        .expect("GET /api/library answers");
    r.json().await.expect("json")
}

use common::wait::library_file as file_of;

/// Polls the library at `base` until `pred` holds for the file at `path`.
async fn wait_file(base: &str, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    common::wait::library_file_where(LONG, || listing(base), path, what, pred).await
}

/// A request that must answer within [`PROMPT`]: (status, body).
async fn prompt(method: reqwest::Method, url: &str) -> (u16, Value) {
    let req = reqwest::Client::new()
        .request(method.clone(), url)
        .timeout(PROMPT);
    let req = if method == reqwest::Method::POST {
        req.json(&json!({}))
    } else {
        req
    };
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} did not answer in {PROMPT:?}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn rescan(base: &str) {
    let (s, v) = prompt(reqwest::Method::POST, &format!("{base}/api/library/rescan")).await;
    assert_eq!(s, 200, "rescan: {v}");
}

/// `DELETE /api/library/<path>`, the path percent-encoded byte by byte.
async fn delete(base: &str, path: &str) -> (u16, Value) {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP_SLASH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
    let enc = utf8_percent_encode(path, KEEP_SLASH).to_string();
    prompt(
        reqwest::Method::DELETE,
        &format!("{base}/api/library/{enc}"),
    )
    .await
}

/// Item 1, the repro: two equal files another program holds open in
/// download_dir (preallocated parts: all zeros) are hashed, never merged; what that
/// program writes through its descriptors is what each file then holds.
#[actix_web::test]
async fn two_equal_files_held_open_by_another_writer_are_never_merged() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let dl = dir.path().join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    let open = |name: &str| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dl.join(name))
            .unwrap();
        // Zeros written out, as a downloader that preallocates by writing does (a
        // sparse file is not hashed until it is whole: `library::a_sparse_terabyte_…`).
        std::io::Write::write_all(&mut &f, &vec![0u8; 4 * MIB]).unwrap();
        f
    };
    let (mut one, mut two) = (open("part1.bin"), open("part2.bin"));
    let svc = TestService::start_in(dir, config).await;
    let zeros = sha256_hex(&vec![0u8; 4 * MIB]);
    for p in ["part1.bin", "part2.bin"] {
        let f = wait_file(&svc.base, p, "hashed", |f| f["sha256"].is_string()).await;
        assert_eq!(f["sha256"], zeros, "{f}");
    }
    // The hasher's work on both is done (dedupe would have run with it); one more
    // scan, which would finish any merge still owed.
    rescan(&svc.base).await;
    let (a, b) = (content(4 * MIB, 1), content(4 * MIB, 2));
    one.write_all_at(&a, 0).unwrap();
    two.write_all_at(&b, 0).unwrap();
    for (f, want) in [(&mut one, &a), (&mut two, &b)] {
        let mut got = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut got).unwrap();
        assert!(got == *want, "the descriptor reads back what it wrote");
    }
    let dl = svc.download_dir();
    assert!(
        std::fs::read(dl.join("part1.bin")).unwrap() == a,
        "part 1 holds what was written to it"
    );
    assert!(
        std::fs::read(dl.join("part2.bin")).unwrap() == b,
        "part 2 holds what was written to it, not part 1"
    );
    assert_eq!(listing(&svc.base).await["bytes_saved_by_links"], 0);
}

/// Item 1: a copy put by hand beside a verified Hub download is listed and hashed but
/// never linked to it; editing the copy in place leaves the Hub file intact.
#[actix_web::test]
async fn a_hand_placed_copy_of_a_hub_download_is_not_linked_to_it() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let data = content(300_000, 5);
    hub.put_file(REPO, Q4, data.clone());
    let endpoint = hub.endpoint();
    let svc = TestService::start(move |c| c.hub.endpoint = endpoint).await;
    let id = svc.add(json!({"hub": {"repo": REPO, "file": Q4}})).await;
    svc.wait_state(&id, "completed", LONG).await;
    let path = format!("{REPO}/{Q4}");
    wait_file(&svc.base, &path, "verified", |f| {
        f["sha256"] == sha256_hex(&data)
    })
    .await;
    let ours = svc.download_dir().join(&path);
    let copy = svc.download_dir().join("copy-Q4_K_M.gguf");
    std::fs::copy(&ours, &copy).unwrap();
    rescan(&svc.base).await;
    wait_file(&svc.base, "copy-Q4_K_M.gguf", "hashed", |f| {
        f["sha256"] == sha256_hex(&data)
    })
    .await;
    rescan(&svc.base).await;
    assert_ne!(
        std::fs::metadata(&copy).unwrap().ino(),
        std::fs::metadata(&ours).unwrap().ino(),
        "the hand-placed copy is not linked to the download"
    );
    // The user edits the copy in place.
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.write_all_at(b"edited by hand", 0).unwrap();
    drop(f);
    assert_eq!(
        file_sha256(&ours),
        sha256_hex(&data),
        "the Hub file is intact"
    );
}

/// Item 1: even two files of ours are not merged while another program has one open
/// for writing (the merge takes a read lease on both); what it writes later stays
/// in that file alone.
#[actix_web::test]
async fn a_download_held_open_for_writing_is_not_merged_with_its_twin() {
    let up = Upstream::start();
    let data = content(500_000, 7);
    up.add_file("x.bin", data.clone(), Default::default());
    up.add_file("mirror/x.bin", data.clone(), Default::default());
    let svc = TestService::start(|_| {}).await;
    let a = svc.download_dir().join("a.bin");
    let id = svc
        .add(json!({"url": up.url("x.bin"), "file_name": "a.bin"}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    wait_file(&svc.base, "a.bin", "hashed", |f| f["sha256"].is_string()).await;
    let writer = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    let id = svc
        .add(json!({"url": up.url("mirror/x.bin"), "file_name": "b.bin"}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    wait_file(&svc.base, "b.bin", "hashed", |f| f["sha256"].is_string()).await;
    rescan(&svc.base).await;
    let b = svc.download_dir().join("b.bin");
    assert_ne!(
        std::fs::metadata(&a).unwrap().ino(),
        std::fs::metadata(&b).unwrap().ino(),
        "not merged while a.bin is open for writing"
    );
    writer.write_all_at(b"the other program", 0).unwrap();
    drop(writer);
    assert_eq!(file_sha256(&b), sha256_hex(&data), "b.bin is untouched");
    assert_eq!(&std::fs::read(&a).unwrap()[..17], b"the other program");
}

/// The service as a process with the HF cache configured, its address space capped
/// (4 GiB) so that a runaway read fails it rather than the machine.
async fn hf_proc(hub: &HubEmu, cache: &Path) -> (tempfile::TempDir, Proc) {
    let (dir, _config, _port, proc) = Proc::start(&format!(
        "[hub]\nendpoint = \"{}\"\n\n[library]\nhf_cache = \"{}\"\ncheck_updates_hours = 0\n",
        hub.endpoint(),
        cache.display()
    ))
    .await;
    let cap = libc::rlimit {
        rlim_cur: 4 << 30,
        rlim_max: 4 << 30,
    };
    // SAFETY: setting a limit of our own child; the struct is valid.
    unsafe { libc::prlimit(proc.pid(), libc::RLIMIT_AS, &cap, std::ptr::null_mut()) };
    (dir, proc)
}

fn rss_mib(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory field");
    kib / 1024.0
}

/// Item 3's set-up: a Hub file published in the HF cache by the service as a
/// process; `plant` puts links in the repo's `refs/`; then the file's DELETE must
/// answer promptly with 204. Returns the peak RSS growth (MiB) over the DELETE.
async fn delete_with_planted_refs(plant: impl FnOnce(&Path, &str)) -> f64 {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, Q4, content(50_000, 20));
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("hf");
    let (_dir, proc) = hf_proc(&hub, &cache).await;
    let id = proc.add(json!({"hub": {"repo": REPO, "file": Q4}})).await;
    proc.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    let path = format!("{REPO}/{Q4}");
    wait_file(&proc.base, &path, "in the HF cache", |f| {
        f["runtimes"]["hf_cache"].is_string()
    })
    .await;
    plant(
        &cache.join("models--bartowski--Tiny-GGUF/refs"),
        &hub.commit(REPO),
    );
    let before = rss_mib(proc.pid(), "VmRSS:");
    let (s, v) = delete(&proc.base, &path).await;
    assert_eq!(s, 204, "{v}");
    rss_mib(proc.pid(), "VmHWM:") - before
}

/// Item 3: `refs/x → a folder outside` holding a file whose content is the commit:
/// the DELETE removes nothing there (the link itself is not ours either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_never_follows_a_ref_link_out_of_the_cache() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    let mut commit = String::new();
    delete_with_planted_refs(|refs, c| {
        commit = c.to_owned();
        std::fs::write(&victim, c).unwrap();
        std::os::unix::fs::symlink(outside.path(), refs.join("x")).unwrap();
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&victim).ok(),
        Some(commit),
        "nothing outside the cache is deleted"
    );
}

/// Item 3: `refs/a → .` and `refs/b → .`: the DELETE answers within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_is_not_caught_in_ref_loops() {
    delete_with_planted_refs(|refs, _| {
        std::os::unix::fs::symlink(".", refs.join("a")).unwrap();
        std::os::unix::fs::symlink(".", refs.join("b")).unwrap();
    })
    .await;
}

/// Item 3: `refs/z → /dev/zero`: the DELETE answers at once and costs no memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_link_to_dev_zero_costs_no_memory() {
    let grew = delete_with_planted_refs(|refs, _| {
        std::os::unix::fs::symlink("/dev/zero", refs.join("z")).unwrap();
    })
    .await;
    assert!(grew < 64.0, "peak RSS grew by {grew:.1} MiB");
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Item 5: a FIFO at the Ollama manifest path and at the HF cache's `refs/main` never
/// blocks publishing: rescans answer, other downloads enter the library, and the same
/// after a restart (`kill -9`). The service runs as a process: the old code's thread
/// stuck on the FIFO goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_runtime_folder_blocks_nothing() {
    let up = Upstream::start();
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    hub.put_file(REPO, Q4, content(60_000, 31));
    let root = tempfile::tempdir().unwrap();
    let (cache, ollama) = (root.path().join("hf"), root.path().join("ollama"));
    let manifest = ollama.join("manifests/hf.co/bartowski/Tiny-GGUF/Q4_K_M");
    mkfifo(&manifest);
    mkfifo(&cache.join("models--bartowski--Tiny-GGUF/refs/main"));
    let (_dir, config, port, mut proc) = Proc::start(&format!(
        "[hub]\nendpoint = \"{}\"\n\n[library]\nhf_cache = \"{}\"\nollama_models = \"{}\"\ncheck_updates_hours = 0\n",
        hub.endpoint(),
        cache.display(),
        ollama.display()
    ))
    .await;
    let id = proc.add(json!({"hub": {"repo": REPO, "file": Q4}})).await;
    proc.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    let path = format!("{REPO}/{Q4}");
    let f = wait_file(&proc.base, &path, "published", |f| {
        f["runtimes"]["hf_cache"].is_string()
    })
    .await;
    assert!(
        f["runtimes"]["ollama"].is_null(),
        "the FIFO is not Ollama's manifest of it: {f}"
    );
    assert!(
        f["runtimes"]["not_published"]["ollama"].is_string(),
        "and it says why: {f}"
    );
    rescan(&proc.base).await;
    up.add_file("other.bin", content(40_000, 32), Default::default());
    let id = proc.add(json!({"url": up.url("other.bin")})).await;
    proc.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    wait_file(&proc.base, "other.bin", "hashed", |f| {
        f["sha256"].is_string()
    })
    .await;

    // The same after a restart (its first scan publishes what is owed again).
    proc.kill9();
    let mut proc = Proc::spawn(&config, port);
    proc.wait_healthy().await;
    rescan(&proc.base).await;
    up.add_file("third.bin", content(30_000, 33), Default::default());
    let id = proc.add(json!({"url": up.url("third.bin")})).await;
    proc.wait_download(&id, LONG, |d| d["state"] == "completed")
        .await;
    wait_file(&proc.base, "third.bin", "listed", |_| true).await;
    rescan(&proc.base).await;
    assert!(
        manifest.symlink_metadata().unwrap().file_type().is_fifo(),
        "the FIFO, not ours, stays"
    );
}

/// Item 12: names the rules for new files refuse, put there by hand, are listed and
/// can be deleted (through the folder's handle).
#[actix_web::test]
async fn every_listed_name_can_be_deleted() {
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    std::fs::create_dir_all(dl.join("sub")).unwrap();
    let names = [
        "aux.gguf",
        "trail.",
        "new\nline.bin",
        "back\\slash.bin",
        "bidi\u{202E}fuggg.exe",
        "sub/con.txt",
    ];
    for n in names {
        std::fs::write(dl.join(n), n.as_bytes()).unwrap();
    }
    std::fs::write(dl.join("keep.bin"), b"keep").unwrap();
    rescan(&svc.base).await;
    let lib = listing(&svc.base).await;
    for n in names {
        assert!(file_of(&lib, n).is_some(), "{n:?} is listed: {lib}");
        let (s, v) = delete(&svc.base, n).await;
        assert_eq!(s, 204, "DELETE {n:?}: {v}");
        assert!(dl.join(n).symlink_metadata().is_err(), "{n:?} is gone");
    }
    let lib = listing(&svc.base).await;
    let left: Vec<&Value> = lib["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["path"])
        .collect();
    assert_eq!(left, [&json!("keep.bin")], "{lib}");
    // A path the library does not list stays refused.
    let (s, _) = delete(&svc.base, "../keep.bin").await;
    assert!((400..500).contains(&s), "{s}");
    assert_eq!(std::fs::read(dl.join("keep.bin")).unwrap(), b"keep");
}

/// Item 10: an update that replaces a file rewrites its Ollama manifest, and the old
/// model blob, which no manifest names any more and which is the old file's inode,
/// goes (Ollama's RemoveLayers rule, limited to what is ours).
#[actix_web::test]
async fn after_an_update_the_old_ollama_blob_goes() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let old = content(120_000, 41);
    hub.put_file(REPO, Q4, old.clone());
    let root = tempfile::tempdir().unwrap();
    let ollama = root.path().join("ollama");
    let (o, endpoint) = (ollama.display().to_string(), hub.endpoint());
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.ollama_models = o;
        c.library.check_updates_hours = 0;
    })
    .await;
    let id = svc.add(json!({"hub": {"repo": REPO, "file": Q4}})).await;
    svc.wait_state(&id, "completed", LONG).await;
    let path = format!("{REPO}/{Q4}");
    wait_file(&svc.base, &path, "for Ollama", |f| {
        f["runtimes"]["ollama"].is_string()
    })
    .await;
    let blob = |d: &[u8]| ollama.join(format!("blobs/sha256-{}", sha256_hex(d)));
    assert!(blob(&old).exists());

    let new = content(150_000, 42);
    let commit = hub.put_file(REPO, Q4, new.clone());
    let (s, _) = svc.post("/api/library/check-updates", json!({})).await;
    assert_eq!(s, 202);
    wait_file(&svc.base, &path, "an update", |f| f["update"].is_object()).await;
    let (s, d) = svc.post("/api/library/update", json!({"path": path})).await;
    assert_eq!(s, 201, "{d}");
    svc.wait_state(d["id"].as_str().unwrap(), "completed", LONG)
        .await;
    wait_file(&svc.base, &path, "the new file for Ollama", |f| {
        f["revision"] == commit && f["runtimes"]["ollama"].is_string()
    })
    .await;
    let ours = svc.download_dir().join(&path);
    assert_eq!(
        std::fs::metadata(blob(&new)).unwrap().ino(),
        std::fs::metadata(&ours).unwrap().ino(),
        "the new blob is the new file"
    );
    assert!(
        !blob(&old).exists(),
        "the old model blob goes: {:?}",
        tree(&ollama)
    );
    // What is left in blobs/ is exactly what the manifest names.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(ollama.join("manifests/hf.co/bartowski/Tiny-GGUF/Q4_K_M")).unwrap(),
    )
    .unwrap();
    let mut named = vec![
        manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .replace(':', "-"),
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .replace(':', "-"),
    ];
    named.sort();
    let mut blobs: Vec<String> = std::fs::read_dir(ollama.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    blobs.sort();
    assert_eq!(blobs, named);
}

/// A completed Hub download of [`Q4`] published for Ollama, LM Studio and the HF
/// cache; `change` then changes the file on disk behind the service's back (another
/// program). The library must drop what the download vouched for (digest, commit,
/// publication) and read it as a hand-placed file; the mirror must never serve the
/// new bytes as the verified commit.
async fn a_changed_download(change: impl FnOnce(&Path, &[u8])) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let data = content(200_000, 61);
    hub.put_file(REPO, Q4, data.clone());
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
    let svc = TestService::start(move |cfg| {
        cfg.hub.endpoint = endpoint;
        cfg.library.hf_cache = c;
        cfg.library.ollama_models = o;
        cfg.library.lmstudio_models = l;
        cfg.library.check_updates_hours = 0;
    })
    .await;
    let id = svc.add(json!({"hub": {"repo": REPO, "file": Q4}})).await;
    svc.wait_state(&id, "completed", LONG).await;
    let path = format!("{REPO}/{Q4}");
    let before = wait_file(&svc.base, &path, "published", |f| {
        f["runtimes"]["ollama"].is_string() && f["runtimes"]["lmstudio"].is_string()
    })
    .await;
    assert_eq!(before["sha256"], sha256_hex(&data));
    let file = svc.download_dir().join(&path);
    let mut other = data.clone();
    other[..20].copy_from_slice(b"not the Hub's bytes!");
    change(&file, &other);
    rescan(&svc.base).await;
    let after = wait_file(&svc.base, &path, "hashed again", |f| {
        f["sha256"] == sha256_hex(&other)
    })
    .await;
    for field in ["repo", "revision", "download_id"] {
        assert!(after[field].is_null(), "{field} is dropped: {after}");
    }
    assert!(
        after["runtimes"]["ollama"].is_null() && after["runtimes"]["lmstudio"].is_null(),
        "not published any more: {after}"
    );
    rescan(&svc.base).await;
    let ino = std::fs::metadata(&file).unwrap().ino();
    let holders: Vec<String> = [&cache, &ollama, &lms]
        .iter()
        .flat_map(|d| tree(d).into_iter().map(|p| d.join(p)))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        holders.is_empty(),
        "runtimes still hold the changed file: {holders:?}"
    );
    // The mirror answers the commit's bytes (from the upstream), never the file on disk.
    let r = svc
        .client
        .get(svc.url(&format!("/hf/{REPO}/resolve/main/{Q4}")))
        .timeout(LONG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers().get("x-linked-etag").cloned();
    let body = r.bytes().await.unwrap();
    assert!(
        body.as_ref() == data.as_slice(),
        "the mirror served other bytes (sha {}) under x-linked-etag {etag:?}",
        sha256_hex(&body)
    );
}

/// Red team A: another program replaces a verified download with a file of the same
/// size (a new inode, renamed over it).
#[actix_web::test]
async fn a_download_swapped_for_another_file_is_no_longer_vouched_for() {
    a_changed_download(|file, other| {
        let tmp = file.with_file_name("swap.tmp");
        std::fs::write(&tmp, other).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    })
    .await;
}

/// Red team A: another program edits a verified download in place (same inode, same
/// size, a new mtime).
#[actix_web::test]
async fn a_download_edited_in_place_is_no_longer_vouched_for() {
    a_changed_download(|file, other| {
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        f.write_all_at(&other[..20], 0).unwrap();
    })
    .await;
}

/// Red team D: a listed file renamed away and a new file created under its name by
/// another program (still held by its writer): a DELETE of the name removes nothing
/// (409), and the library reads the new file.
#[actix_web::test]
async fn a_delete_spares_a_new_file_under_a_listed_name() {
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    std::fs::write(dl.join("t.gguf"), b"old hand-placed\n").unwrap();
    rescan(&svc.base).await;
    wait_file(&svc.base, "t.gguf", "listed", |_| true).await;
    std::fs::rename(dl.join("t.gguf"), dl.join("t.gguf.old")).unwrap();
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dl.join("t.gguf"))
        .unwrap();
    let theirs = b"another program is writing this, 1 GB to go";
    writer.write_all_at(theirs, 0).unwrap();
    let (s, v) = delete(&svc.base, "t.gguf").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    assert_eq!(std::fs::read(dl.join("t.gguf")).unwrap(), theirs);
    assert!(dl.join("t.gguf.old").exists());
    wait_file(&svc.base, "t.gguf", "read again", |f| {
        f["size"] == theirs.len()
    })
    .await;
    drop(writer);
}

/// Red team D: a DELETE of a listed file whose folder was swapped for a link answers
/// a conflict, not a 500, and removes nothing through the link.
#[actix_web::test]
async fn a_delete_through_a_folder_swapped_for_a_link_is_a_conflict() {
    let svc = TestService::start(|_| {}).await;
    let dl = svc.download_dir();
    std::fs::create_dir(dl.join("sub")).unwrap();
    std::fs::write(dl.join("sub/x.gguf"), b"hand-placed").unwrap();
    rescan(&svc.base).await;
    wait_file(&svc.base, "sub/x.gguf", "listed", |_| true).await;
    std::fs::rename(dl.join("sub"), dl.join("moved")).unwrap();
    std::os::unix::fs::symlink("moved", dl.join("sub")).unwrap();
    let (s, v) = delete(&svc.base, "sub/x.gguf").await;
    assert_eq!(s, 409, "{v}");
    assert!(
        dl.join("moved/x.gguf").exists(),
        "nothing removed through the link"
    );
    // The scan it started dropped the stale entry: the name is gone from the library.
    let (s, v) = delete(&svc.base, "sub/x.gguf").await;
    assert_eq!(s, 404, "{v}");
}
