//! Ollama and LM Studio get the library's Hub GGUFs without a second copy: Ollama a
//! manifest in its own schema (field names and media types as in Ollama's
//! `manifest/manifest.go`, `manifest/layer.go`, `server/create.go`) and a hard-linked
//! blob, LM Studio a hard link two folders deep; a delete takes back exactly that.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::hub::{HubEmu, RepoOptions};
use common::service::*;
use common::upstream::Upstream;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "bartowski/Tiny-GGUF";
const SINGLE: &str = "Tiny-Q4_K_M.gguf";
const PARTS: [&str; 2] = [
    "Q8_0/Tiny-Q8_0-00001-of-00002.gguf",
    "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
];

fn inode(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.dev(), m.ino())
}

async fn entry(svc: &TestService, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let list = || async move { svc.get("/api/library").await.1 };
    common::wait::library_file_where(LONG, list, path, "as awaited", pred).await
}

/// Ollama's own rule for blob names (`manifest.BlobsPath`); a blob not named so is
/// removed by its start-up pruning.
fn ollama_blob_name_ok(name: &str) -> bool {
    let hex = name.strip_prefix("sha256-").unwrap_or("");
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[actix_web::test]
async fn ollama_and_lm_studio_get_hard_links_and_a_delete_takes_them_back() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let single = content(200_000, 7);
    hub.put_file(REPO, SINGLE, single.clone());
    for (i, p) in PARTS.iter().enumerate() {
        hub.put_file(REPO, p, content(100_000, 8 + i as u64));
    }
    let root = tempfile::tempdir().unwrap();
    let (ollama, lms) = (root.path().join("ollama"), root.path().join("lms"));
    let (o, l, endpoint) = (
        ollama.display().to_string(),
        lms.display().to_string(),
        hub.endpoint(),
    );
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.ollama_models = o;
        c.library.lmstudio_models = l;
    })
    .await;
    for quant in ["Q4_K_M", "Q8_0"] {
        svc.fetch_quantization(REPO, quant, LONG).await;
    }
    let ours = svc.download_dir().join(REPO).join(SINGLE);
    let e = entry(&svc, &format!("{REPO}/{SINGLE}"), |f| {
        f["runtimes"]["ollama"].is_string()
    })
    .await;
    assert_eq!(
        e["runtimes"]["ollama"],
        format!("hf.co/{REPO}:Q4_K_M"),
        "{e}"
    );

    // The manifest sits where Ollama's Name.Filepath() puts hf.co/<owner>/<name>:<tag>.
    let manifest_path = ollama.join("manifests/hf.co/bartowski/Tiny-GGUF/Q4_K_M");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(
        keys(&manifest),
        ["config", "layers", "mediaType", "schemaVersion"]
    );
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let layer = &manifest["layers"][0];
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(keys(layer), ["digest", "mediaType", "size"]);
    assert_eq!(layer["mediaType"], "application/vnd.ollama.image.model");
    assert_eq!(layer["digest"], format!("sha256:{}", sha256_hex(&single)));
    assert_eq!(layer["size"], single.len());
    let blob = ollama.join(format!("blobs/sha256-{}", sha256_hex(&single)));
    assert_eq!(
        inode(&blob),
        inode(&ours),
        "the blob is our file, not a copy"
    );
    // The config blob is there, named by its own digest, and says gguf.
    let config = &manifest["config"];
    assert_eq!(
        config["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let digest = config["digest"].as_str().unwrap();
    let config_bytes = std::fs::read(ollama.join("blobs").join(digest.replace(':', "-"))).unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&config_bytes)));
    assert_eq!(config["size"], config_bytes.len());
    let config_json: Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config_json["model_format"], "gguf");
    assert_eq!(config_json["file_type"], "Q4_K_M");
    for b in std::fs::read_dir(ollama.join("blobs")).unwrap() {
        let name = b.unwrap().file_name().into_string().unwrap();
        assert!(ollama_blob_name_ok(&name), "Ollama would prune {name}");
    }

    // A split quantization is not published for Ollama, and says why; LM Studio has it.
    for p in PARTS {
        let e = entry(&svc, &format!("{REPO}/{p}"), |f| {
            f["runtimes"]["lmstudio"].is_string()
        })
        .await;
        assert!(e["runtimes"]["ollama"].is_null(), "{e}");
        let why = e["runtimes"]["not_published"]["ollama"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("split"), "{e}");
        let base = p.rsplit('/').next().unwrap();
        let link = lms.join(REPO).join(base);
        assert_eq!(e["runtimes"]["lmstudio"], link.display().to_string());
        assert_eq!(inode(&link), inode(&svc.download_dir().join(REPO).join(p)));
    }
    assert!(!ollama
        .join("manifests/hf.co/bartowski/Tiny-GGUF/Q8_0")
        .exists());
    let e = entry(&svc, &format!("{REPO}/{SINGLE}"), |f| {
        f["runtimes"]["lmstudio"].is_string()
    })
    .await;
    let lms_single = lms.join(REPO).join(SINGLE);
    assert_eq!(e["runtimes"]["lmstudio"], lms_single.display().to_string());
    assert_eq!(
        inode(&lms_single),
        inode(&ours),
        "LM Studio's file is our file"
    );

    // Another manifest of the user's that uses the same blob keeps it alive.
    let theirs = ollama.join("manifests/registry.ollama.ai/library/tiny/latest");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::copy(&manifest_path, &theirs).unwrap();
    delete(&svc, &format!("{REPO}/{SINGLE}")).await;
    assert!(!manifest_path.exists(), "our manifest goes");
    assert!(blob.exists(), "a blob another manifest uses stays");
    assert!(!lms_single.exists(), "the LM Studio link goes");
    assert!(theirs.exists(), "the user's manifest is not ours");
    std::fs::remove_file(&theirs).unwrap();
    for p in PARTS {
        delete(&svc, &format!("{REPO}/{p}")).await;
    }
    assert!(
        !lms.join(REPO).exists(),
        "nothing left in LM Studio's folder: {:?}",
        tree(&lms)
    );
}

#[actix_web::test]
async fn an_ollama_blob_goes_with_the_last_manifest_that_uses_it() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let data = content(50_000, 3);
    hub.put_file(REPO, SINGLE, data.clone());
    let root = tempfile::tempdir().unwrap();
    let ollama = root.path().join("ollama");
    let (o, endpoint) = (ollama.display().to_string(), hub.endpoint());
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.ollama_models = o;
    })
    .await;
    let (s, v) = svc
        .post(
            "/api/downloads",
            json!({"hub": {"repo": REPO, "file": SINGLE}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    svc.wait_state(v["id"].as_str().unwrap(), "completed", LONG)
        .await;
    entry(&svc, &format!("{REPO}/{SINGLE}"), |f| {
        f["runtimes"]["ollama"].is_string()
    })
    .await;
    let blob = ollama.join(format!("blobs/sha256-{}", sha256_hex(&data)));
    assert!(blob.exists());
    delete(&svc, &format!("{REPO}/{SINGLE}")).await;
    assert!(!blob.exists(), "no manifest uses it any more");
    let blobs: Vec<_> = std::fs::read_dir(ollama.join("blobs")).unwrap().collect();
    assert!(blobs.is_empty(), "the config blob goes too: {blobs:?}");
    assert_eq!(
        std::fs::read_dir(ollama.join("manifests")).unwrap().count(),
        0
    );
}

async fn delete(svc: &TestService, path: &str) {
    let (s, v) = svc.delete(&format!("/api/library/{path}")).await;
    assert_eq!(s, 204, "{path}: {v}");
}

/// Red team C: `ollama cp` made a second manifest naming our blob, in a form the
/// service cannot read (`plant` writes it at `at`, from our manifest's bytes). A delete
/// of our file takes our manifest, and keeps every blob: a manifest that cannot be read
/// may use any of them.
async fn a_blob_stays_when_a_manifest_cannot_be_read(plant: impl FnOnce(&Path, &Path)) {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let data = content(50_000, 4);
    hub.put_file(REPO, SINGLE, data.clone());
    let root = tempfile::tempdir().unwrap();
    let ollama = root.path().join("ollama");
    let (o, endpoint) = (ollama.display().to_string(), hub.endpoint());
    let svc = TestService::start(move |c| {
        c.hub.endpoint = endpoint;
        c.library.ollama_models = o;
    })
    .await;
    let id = svc
        .add(json!({"hub": {"repo": REPO, "file": SINGLE}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    entry(&svc, &format!("{REPO}/{SINGLE}"), |f| {
        f["runtimes"]["ollama"].is_string()
    })
    .await;
    let ours = ollama.join("manifests/hf.co/bartowski/Tiny-GGUF/Q4_K_M");
    let copy = ollama.join("manifests/registry.ollama.ai/library/mymodel");
    std::fs::create_dir_all(&copy).unwrap();
    plant(&ours, &copy.join("latest"));
    let blobs = || {
        let mut b: Vec<String> = std::fs::read_dir(ollama.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        b.sort();
        b
    };
    let before = blobs();
    assert_eq!(before.len(), 2, "the model and config blobs: {before:?}");
    delete(&svc, &format!("{REPO}/{SINGLE}")).await;
    assert!(!ours.exists(), "our manifest goes");
    assert_eq!(
        blobs(),
        before,
        "no blob goes while a manifest cannot be read"
    );
}

#[actix_web::test]
async fn a_blob_named_by_a_manifest_over_the_cap_stays() {
    a_blob_stays_when_a_manifest_cannot_be_read(|ours, at| {
        let v: Value = serde_json::from_slice(&std::fs::read(ours).unwrap()).unwrap();
        let mut big = serde_json::to_vec(&v).unwrap();
        big.resize(big.len() + (2 << 20), b' ');
        std::fs::write(at, big).unwrap();
    })
    .await;
}

#[actix_web::test]
async fn a_blob_named_by_a_symlinked_manifest_stays() {
    a_blob_stays_when_a_manifest_cannot_be_read(|ours, at| {
        // Outside `manifests/`: only the link there names it.
        let real = ours.ancestors().nth(5).unwrap().join("elsewhere.json");
        std::fs::copy(ours, &real).unwrap();
        std::os::unix::fs::symlink(&real, at).unwrap();
    })
    .await;
}

#[actix_web::test]
async fn a_blob_stays_beside_a_fifo_among_the_manifests() {
    a_blob_stays_when_a_manifest_cannot_be_read(|_, at| {
        let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    })
    .await;
}

/// Red team B: files of another program already sit under the blob names our
/// download will have (HF cache `blobs/<sha>`, Ollama `blobs/sha256-<sha>`), with
/// other bytes. Neither is trusted by its name: the file is not published there, the
/// listing says why, and the planted files are left as they were.
#[actix_web::test]
async fn a_blob_planted_under_our_digest_is_not_published_as_ours() {
    let cdn = Arc::new(Upstream::start());
    let hub = HubEmu::start(cdn.clone());
    hub.add_repo(REPO, RepoOptions::default());
    let data = content(60_000, 9);
    hub.put_file(REPO, SINGLE, data.clone());
    let sha = sha256_hex(&data);
    let root = tempfile::tempdir().unwrap();
    let (cache, ollama) = (root.path().join("hf"), root.path().join("ollama"));
    let hf_blob = cache.join(format!("models--bartowski--Tiny-GGUF/blobs/{sha}"));
    let ollama_blob = ollama.join(format!("blobs/sha256-{sha}"));
    for (p, bytes) in [
        (&hf_blob, "someone's blob"),
        (&ollama_blob, "ollama's own blob"),
    ] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let (c, o, endpoint) = (
        cache.display().to_string(),
        ollama.display().to_string(),
        hub.endpoint(),
    );
    let svc = TestService::start(move |cfg| {
        cfg.hub.endpoint = endpoint;
        cfg.library.hf_cache = c;
        cfg.library.ollama_models = o;
    })
    .await;
    let id = svc
        .add(json!({"hub": {"repo": REPO, "file": SINGLE}}))
        .await;
    svc.wait_state(&id, "completed", LONG).await;
    let f = entry(&svc, &format!("{REPO}/{SINGLE}"), |f| {
        let np = &f["runtimes"]["not_published"];
        np["ollama"].is_string() && np["hf_cache"].is_string()
    })
    .await;
    assert!(f["runtimes"]["ollama"].is_null(), "{f}");
    assert!(f["runtimes"]["hf_cache"].is_null(), "{f}");
    assert_eq!(std::fs::read(&hf_blob).unwrap(), b"someone's blob");
    assert_eq!(std::fs::read(&ollama_blob).unwrap(), b"ollama's own blob");
    assert!(
        !ollama
            .join("manifests/hf.co/bartowski/Tiny-GGUF/Q4_K_M")
            .exists(),
        "no manifest names the planted blob: {:?}",
        tree(&ollama)
    );
    let snapshots = cache.join("models--bartowski--Tiny-GGUF/snapshots");
    assert!(
        tree(&snapshots).is_empty(),
        "no snapshot points at the planted blob: {:?}",
        tree(&snapshots)
    );
}
