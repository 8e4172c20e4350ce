//! Publishing into Ollama's models folder, exactly as Ollama lays it out (its
//! `manifest/manifest.go`, `manifest/paths.go`, `manifest/layer.go`, `types/model/name.go`
//! and `types/model/config.go`):
//!
//! ```text
//! <models>/blobs/sha256-<hex>                          the GGUF (a hard link to our file)
//! <models>/blobs/sha256-<hex of the config>            the image config (JSON)
//! <models>/manifests/hf.co/<owner>/<name>/<quant>      the manifest (schemaVersion 2)
//! ```
//!
//! Ollama's start-up pruning removes blobs that no manifest names and manifests whose
//! path is not a valid 4-part name: ours name their blobs and are valid, or are not
//! written. A blob is only ever a hard link: Ollama cannot follow a symlink out of its
//! folder safely, and the library never copies a model.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inode::same_inode;

/// The registry host Ollama uses for Hub models (`ollama run hf.co/o/n:Q4_K_M`).
pub const HOST: &str = "hf.co";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
pub const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// What publishing one file made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `hf.co/<owner>/<name>:<quant>`, the name `ollama run` takes.
    pub name: String,
    /// The manifest file.
    pub manifest: PathBuf,
    /// `sha256:<hex>` of the model layer and of the config blob.
    pub model_digest: String,
    pub config_digest: String,
}

/// What to publish.
pub struct Target<'a> {
    pub repo: &'a str,
    pub quantization: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub gguf: Option<&'a crate::gguf::GgufInfo>,
}

/// Why a file cannot be published (shown in `runtimes.not_published.ollama`).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("split GGUF: Ollama cannot load it")]
    Split,
    #[error("{0:?} is not a name Ollama accepts ({1})")]
    Name(String, &'static str),
    #[error("Ollama's folder is on another file system than download_dir: Ollama needs the blob there, and the library does not copy models")]
    OtherFileSystem,
    #[error("Ollama already has a different {0}: left alone")]
    Taken(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    crate::engine::hex(&sha2::Sha256::digest(bytes))
}

/// `sha256-<hex>` under `blobs/`, as `manifest.BlobsPath` names it.
fn blob_path(models: &Path, digest: &str) -> PathBuf {
    models.join("blobs").join(digest.replace(':', "-"))
}

/// Ollama's `isValidPart`: a leading letter, digit or `_`, then those and `-`, `_`, and
/// `.` (not in a namespace); 1 to 80 bytes.
fn valid_part(s: &str, namespace: bool) -> bool {
    let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    (1..=80).contains(&s.len())
        && s.bytes()
            .enumerate()
            .all(|(i, c)| ok(c) || (i > 0 && (c == b'-' || (c == b'.' && !namespace))))
}

/// The manifest's path parts: `hf.co`, owner, name, quantization.
fn name_parts<'a>(target: &Target<'a>) -> Result<[&'a str; 4], Refused> {
    let full = format!("{HOST}/{}:{}", target.repo, target.quantization);
    let (owner, name) = target
        .repo
        .split_once('/')
        .ok_or(Refused::Name(full.clone(), "not owner/name"))?;
    if !valid_part(owner, true) {
        return Err(Refused::Name(
            full,
            "the owner may hold letters, digits, - and _ only",
        ));
    }
    if !valid_part(name, false) || !valid_part(target.quantization, false) {
        return Err(Refused::Name(full, "letters, digits, -, _ and . only"));
    }
    Ok([HOST, owner, name, target.quantization])
}

#[derive(Serialize, Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Layer,
    layers: Vec<Layer>,
}

/// The image config Ollama reads (`model.ConfigV2`), as `ollama create` writes it.
fn config_json(target: &Target<'_>) -> Vec<u8> {
    let family = target
        .gguf
        .and_then(|g| g.architecture.clone())
        .unwrap_or_default();
    let model_type = target
        .gguf
        .map(|g| human_parameters(g.parameters))
        .unwrap_or_default();
    let config = serde_json::json!({
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": model_type,
        "file_type": target.quantization,
        "architecture": "amd64",
        "os": "linux",
    });
    // Go's json.Encoder ends its output with a newline; so do we.
    let mut bytes = serde_json::to_vec(&config).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// `1.2B`, `494.03M`: the parameter size as Ollama shows it.
fn human_parameters(n: u64) -> String {
    match n {
        0 => String::new(),
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n => format!("{n}"),
    }
}

/// Publishes `file` (ours, in download_dir) as `hf.co/<repo>:<quant>` in `models`.
pub fn publish(models: &Path, target: &Target<'_>, file: &Path) -> Result<Entry, Refused> {
    let split_name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(crate::hub::quant::split_part)
        .is_some_and(|p| p.of > 1);
    if split_name
        || target
            .gguf
            .and_then(|g| g.split)
            .is_some_and(|s| s.count > 1)
    {
        return Err(Refused::Split);
    }
    let parts = name_parts(target)?;
    let name = format!("{}/{}/{}:{}", parts[0], parts[1], parts[2], parts[3]);
    let manifest_path = parts
        .iter()
        .fold(models.join("manifests"), |p, part| p.join(part));
    let model_digest = format!("sha256:{}", target.sha256);
    if let Some(other) = read_manifest(&manifest_path) {
        if !names_model(&other, &model_digest) {
            return Err(Refused::Taken(name));
        }
    }
    link_blob(&blob_path(models, &model_digest), file)?;
    let config = config_json(target);
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    write_atomic(&blob_path(models, &config_digest), &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: Layer {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: config_digest.clone(),
            size: config.len() as u64,
        },
        layers: vec![Layer {
            media_type: MODEL_MEDIA_TYPE.into(),
            digest: model_digest.clone(),
            size: target.size,
        }],
    };
    let mut bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(&manifest_path, &bytes)?;
    Ok(Entry {
        name,
        manifest: manifest_path,
        model_digest,
        config_digest,
    })
}

fn names_model(m: &Manifest, digest: &str) -> bool {
    m.layers
        .iter()
        .any(|l| l.media_type == MODEL_MEDIA_TYPE && l.digest == digest)
}

/// A manifest file, when it parses (at most 1 MiB: a manifest is a few hundred bytes).
fn read_manifest(path: &Path) -> Option<Manifest> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// The blob is a hard link to our file; one already there with this digest (Ollama's
/// own pull of the same bytes) is used as it is.
fn link_blob(blob: &Path, file: &Path) -> Result<(), Refused> {
    if let Some(dir) = blob.parent() {
        fs::create_dir_all(dir)?;
    }
    if fs::symlink_metadata(blob).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    match fs::hard_link(file, blob) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(Refused::OtherFileSystem),
        Err(e) => Err(e.into()),
    }
}

/// Writes a small file by a temporary name and a rename: Ollama never reads half of it.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::read(path).is_ok_and(|now| now == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.mm-{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Removes what [`publish`] made for `file`: the manifest when it still names our
/// blob, then each blob no other manifest uses (the model blob only when it is our
/// file), then the folders left empty.
pub fn unpublish(models: &Path, entry: &Entry, file: &Path) {
    let manifests = models.join("manifests");
    if !entry.manifest.starts_with(&manifests) {
        tracing::warn!(manifest = %entry.manifest.display(), "not in the configured Ollama folder; left alone");
        return;
    }
    if read_manifest(&entry.manifest).is_some_and(|m| names_model(&m, &entry.model_digest)) {
        warn_on(fs::remove_file(&entry.manifest), &entry.manifest);
    }
    remove_empty_parents(&entry.manifest, &manifests);
    let used = digests_in_use(&manifests);
    let model_blob = blob_path(models, &entry.model_digest);
    if !used.contains(&entry.model_digest) && same_inode(&model_blob, file) {
        warn_on(fs::remove_file(&model_blob), &model_blob);
    }
    if !used.contains(&entry.config_digest) {
        let config = blob_path(models, &entry.config_digest);
        warn_on(fs::remove_file(&config), &config);
    }
}

/// Every digest any manifest names (`manifests/*/*/*/*`, as Ollama's `Manifests` reads).
fn digests_in_use(manifests: &Path) -> std::collections::HashSet<String> {
    let mut used = std::collections::HashSet::new();
    let mut level = vec![manifests.to_path_buf()];
    for _ in 0..4 {
        level = level
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect();
    }
    for m in level.iter().filter_map(|p| read_manifest(p)) {
        used.insert(m.config.digest);
        used.extend(m.layers.into_iter().map(|l| l.digest));
    }
    used
}

/// Removes the folders above `file` that are empty, up to (not including) `top`.
fn remove_empty_parents(file: &Path, top: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == top || !d.starts_with(top) || fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

fn warn_on(result: io::Result<()>, path: &Path) {
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove from Ollama's folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ollamas_rules() {
        assert!(valid_part("bartowski", true));
        assert!(valid_part("Llama-3.2-1B-Instruct-GGUF", false));
        assert!(!valid_part("my.org", true));
        assert!(!valid_part("-x", false));
        assert!(!valid_part("", false));
        assert!(!valid_part(&"a".repeat(81), false));
    }

    #[test]
    fn publish_then_unpublish_leaves_nothing_of_ours() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("m.gguf");
        fs::write(&file, b"weights").unwrap();
        let models = root.path().join("ollama");
        let sha = sha256_hex(b"weights");
        let target = Target {
            repo: "o/r",
            quantization: "Q4_K_M",
            sha256: &sha,
            size: 7,
            gguf: None,
        };
        let entry = publish(&models, &target, &file).unwrap();
        assert_eq!(entry.name, "hf.co/o/r:Q4_K_M");
        assert!(same_inode(&blob_path(&models, &entry.model_digest), &file));
        unpublish(&models, &entry, &file);
        assert!(!entry.manifest.exists());
        assert!(!blob_path(&models, &entry.model_digest).exists());
        assert!(!blob_path(&models, &entry.config_digest).exists());
        assert!(file.exists());
        assert_eq!(fs::read_dir(models.join("manifests")).unwrap().count(), 0);
    }
}
