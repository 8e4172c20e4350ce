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

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inode::{Identity, Ours};
use crate::files::{parent_of, Dir, Kind};

/// A manifest is a few hundred bytes: one longer than this is not read.
const MANIFEST_CAP: u64 = 1 << 20;

/// The registry host Ollama uses for Hub models (`ollama run hf.co/o/n:Q4_K_M`).
pub const HOST: &str = "hf.co";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
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
    #[error("Ollama's blobs/{0} is already there and is not our file (a blob is never trusted by its name): left alone")]
    NotOurs(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    crate::engine::hex(&sha2::Sha256::digest(bytes))
}

/// `sha256-<hex>`, the name under `blobs/` that `manifest.BlobsPath` gives it.
fn blob_name(digest: &str) -> String {
    digest.replace(':', "-")
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

/// A layer (or the config) of a manifest: Ollama's `manifest.Layer`. Also what the
/// mirror's registry (`doors/mirror/registry`) serves.
#[derive(Serialize, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Ollama's `manifest.Manifest` (Docker's schema 2).
#[derive(Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

/// The image config Ollama reads (`model.ConfigV2`), as `ollama create` writes it.
pub fn config_json(target: &Target<'_>) -> Vec<u8> {
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
/// Every folder is walked through directory handles (a link is never followed) and
/// only regular files are read, capped: a FIFO at the manifest path is refused, not
/// opened.
pub fn publish(models: &Path, target: &Target<'_>, file: &Ours) -> Result<Entry, Refused> {
    let split_name = Path::new(&file.name)
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
    let root = Dir::open_or_create(models)?;
    let folder: PathBuf = ["manifests", parts[0], parts[1], parts[2]].iter().collect();
    let manifests = root.walk(&folder, true)?;
    let model_digest = format!("sha256:{}", target.sha256);
    // A FIFO, a link or a folder there is not a manifest of ours: left alone, unopened.
    let taken = match manifests.stat(parts[3])? {
        None => false,
        Some(st) if st.kind != Kind::File => true,
        Some(_) => read_manifest(&manifests, OsStr::new(parts[3]))
            .is_some_and(|other| !names_model(&other, &model_digest)),
    };
    if taken {
        return Err(Refused::Taken(name));
    }
    let blobs = root.sub_or_create("blobs")?;
    link_blob(&blobs, &blob_name(&model_digest), file)?;
    let config = config_json(target);
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    write_small(&blobs, &blob_name(&config_digest), &config)?;
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
    write_small(&manifests, parts[3], &bytes)?;
    Ok(Entry {
        name,
        manifest: models.join(folder).join(parts[3]),
        model_digest,
        config_digest,
    })
}

fn names_model(m: &Manifest, digest: &str) -> bool {
    m.layers
        .iter()
        .any(|l| l.media_type == MODEL_MEDIA_TYPE && l.digest == digest)
}

/// A manifest file, when it is a regular file of at most [`MANIFEST_CAP`] that parses.
fn read_manifest(dir: &Dir, name: &OsStr) -> Option<Manifest> {
    serde_json::from_slice(&dir.read_capped(name, MANIFEST_CAP).ok()?).ok()
}

/// The blob is a hard link to our file. One already there by that name is used only
/// when it is our file's inode (a link we made): a name says nothing of the bytes (a
/// file planted, or still being written, under our digest is never published as it).
fn link_blob(blobs: &Dir, name: &str, file: &Ours) -> Result<(), Refused> {
    match blobs.stat(name)? {
        st @ Some(_) if file.id.is(st) => return Ok(()),
        Some(_) => return Err(Refused::NotOurs(name.to_owned())),
        None => {}
    }
    match file.link_into(blobs, name) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(Refused::OtherFileSystem),
        Err(e) => Err(e.into()),
    }
}

/// Writes a small file by a temporary name and a rename (Ollama never reads half of
/// it), unless it already holds exactly these bytes.
fn write_small(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    if dir
        .read_capped(name, MANIFEST_CAP)
        .is_ok_and(|now| now == bytes)
    {
        return Ok(());
    }
    dir.write_atomic(name, bytes)
}

/// Removes what [`publish`] made for `file`: the manifest when it still names our
/// blob, then each blob no other manifest uses (the model blob only when it is
/// `file`'s inode: Ollama's own RemoveLayers rule, limited to what is ours), then the
/// folders left empty. `file` is the inode the entry was published from (after an
/// update, the replaced file's).
pub fn unpublish(models: &Path, entry: &Entry, file: &Identity) {
    let manifests = models.join("manifests");
    if !entry.manifest.starts_with(&manifests) {
        tracing::warn!(manifest = %entry.manifest.display(), "not in the configured Ollama folder; left alone");
        return;
    }
    let Ok(root) = Dir::open(models) else { return };
    if let Ok((dir, name)) = parent_of(&root, models, &entry.manifest, false) {
        if read_manifest(&dir, &name).is_some_and(|m| names_model(&m, &entry.model_digest)) {
            warn_on(dir.unlink(&name), &entry.manifest);
        }
        remove_empty_parents(&root, models, &entry.manifest);
    }
    let used = match digests_in_use(&root) {
        Ok(used) => used,
        Err(why) => {
            tracing::warn!(%why, "an Ollama manifest cannot be read: no blob is removed (one may use it)");
            return;
        }
    };
    let Ok(blobs) = root.sub("blobs") else { return };
    let model_blob = blob_name(&entry.model_digest);
    if !used.contains(&entry.model_digest) && file.is(blobs.stat(&model_blob).ok().flatten()) {
        warn_on(blobs.unlink(&model_blob), Path::new(&model_blob));
    }
    if !used.contains(&entry.config_digest) {
        let config = blob_name(&entry.config_digest);
        if blobs
            .stat(&config)
            .ok()
            .flatten()
            .is_some_and(|st| st.kind == Kind::File)
        {
            warn_on(blobs.unlink(&config), Path::new(&config));
        }
    }
}

/// Every digest any manifest names (`manifests/*/*/*/*`, as Ollama's `Manifests`
/// reads), through handles: links are not followed, only regular files read. Fails
/// closed: a folder that cannot be read, or an entry there that is not a manifest we
/// can read and parse (a link, a FIFO, one over [`MANIFEST_CAP`], bad JSON) may name
/// any blob, and then nothing is known to be unused.
fn digests_in_use(root: &Dir) -> Result<std::collections::HashSet<String>, String> {
    let mut used = std::collections::HashSet::new();
    let top = match root.sub("manifests") {
        Ok(top) => top,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(used),
        Err(e) => return Err(format!("manifests: {e}")),
    };
    let mut level = vec![(PathBuf::from("manifests"), top)];
    for _ in 0..3 {
        let mut next = Vec::new();
        for (at, d) in &level {
            for (n, st) in d.entries().map_err(|e| format!("{}: {e}", at.display()))? {
                match st.kind {
                    Kind::Dir => {
                        let sub = d
                            .sub(&n)
                            .map_err(|e| format!("{}: {e}", at.join(&n).display()))?;
                        next.push((at.join(&n), sub));
                    }
                    // Ollama's glob follows a link to a folder of manifests.
                    Kind::Link => return Err(format!("{} is a link", at.join(&n).display())),
                    _ => {}
                }
            }
        }
        level = next;
    }
    for (at, dir) in &level {
        for (name, _) in dir
            .entries()
            .map_err(|e| format!("{}: {e}", at.display()))?
        {
            let m = read_manifest(dir, &name).ok_or_else(|| {
                format!(
                    "{} is not a manifest that can be read",
                    at.join(&name).display()
                )
            })?;
            used.insert(m.config.digest);
            used.extend(m.layers.into_iter().map(|l| l.digest));
        }
    }
    Ok(used)
}

/// Removes the folders above `file` that are empty, up to (not including) `manifests`.
fn remove_empty_parents(root: &Dir, models: &Path, file: &Path) {
    let Ok(rel) = file.strip_prefix(models) else {
        return;
    };
    let folders: Vec<&OsStr> = rel.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for k in (2..=folders.len()).rev() {
        let parent: PathBuf = folders[..k - 1].iter().collect();
        if root
            .walk(&parent, false)
            .and_then(|d| d.rmdir(folders[k - 1]))
            .is_err()
        {
            return;
        }
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
    use std::fs;

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
        let ours = Ours::at(&file);
        let entry = publish(&models, &target, &ours).unwrap();
        assert_eq!(entry.name, "hf.co/o/r:Q4_K_M");
        let blob = |d: &str| models.join("blobs").join(blob_name(d));
        assert!(ours.id.is(Dir::open(&models.join("blobs"))
            .unwrap()
            .stat(blob_name(&entry.model_digest))
            .unwrap()));
        unpublish(&models, &entry, &ours.id);
        assert!(!entry.manifest.exists());
        assert!(!blob(&entry.model_digest).exists());
        assert!(!blob(&entry.config_digest).exists());
        assert!(file.exists());
        assert_eq!(fs::read_dir(models.join("manifests")).unwrap().count(), 0);
    }
}
