//! The manifest of a GGUF, as the Hub makes it for Ollama: the model layer (the file
//! itself: its sha256 is the digest), the config Ollama reads (`model.ConfigV2`, as
//! the library's Ollama publisher writes it), and, when the GGUF's chat template maps
//! to one ([`super::automap`]), a template layer (Go template) and a params layer
//! (JSON, e.g. stop words). Everything is a function of the file's content and name,
//! so the same file always gets the same digests.
//!
//! The generated blobs are kept in memory (bounded) by digest, for the blob requests
//! that follow a manifest.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use sha2::Digest;

use super::error::RegistryError;
use super::header::Facts;
use crate::hub::RepoFile;
use crate::library::ollama::{
    config_json, Layer, Manifest, Target, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MODEL_MEDIA_TYPE,
};

pub(super) const TEMPLATE_MEDIA_TYPE: &str = "application/vnd.ollama.image.template";
pub(super) const PARAMS_MEDIA_TYPE: &str = "application/vnd.ollama.image.params";

/// Generated blobs kept: a few KiB each (a template), so at most a few MiB in all.
const KEPT: usize = 1024;
const KEPT_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Kept {
    blobs: VecDeque<(String, Bytes)>,
    bytes: usize,
}

static KEPT_BLOBS: LazyLock<Mutex<Kept>> = LazyLock::new(Mutex::default);

/// A generated blob by its hex sha256, if one was made since the service started (and
/// not pushed out since).
pub(super) fn blob(hex: &str) -> Option<Bytes> {
    let kept = KEPT_BLOBS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    kept.blobs
        .iter()
        .find(|(h, _)| h == hex)
        .map(|(_, b)| b.clone())
}

fn keep(hex: String, bytes: Bytes) {
    let mut kept = KEPT_BLOBS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kept.blobs.iter().any(|(h, _)| *h == hex) {
        return;
    }
    kept.bytes += bytes.len();
    kept.blobs.push_back((hex, bytes));
    while kept.blobs.len() > KEPT || kept.bytes > KEPT_BYTES {
        match kept.blobs.pop_front() {
            Some((_, old)) => kept.bytes -= old.len(),
            None => break,
        }
    }
}

/// A manifest and its digest (`sha256:<hex>` of exactly these bytes).
pub(super) struct Built {
    pub bytes: Bytes,
    pub digest: String,
}

/// A generated blob's layer; the blob is kept for its GET.
fn layer(media_type: &str, bytes: Vec<u8>) -> Layer {
    let hex = hex_sha256(&bytes);
    let layer = Layer {
        media_type: media_type.to_owned(),
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    };
    keep(hex, Bytes::from(bytes));
    layer
}

pub(super) fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The manifest of `file` of `repo` (content `sha256`).
pub(super) fn manifest(
    repo: &str,
    file: &RepoFile,
    sha256: &str,
    facts: &Facts,
) -> Result<Built, RegistryError> {
    let quantization = file.quantization.clone().unwrap_or_default();
    let target = Target {
        repo,
        quantization: &quantization,
        sha256,
        size: file.size,
        gguf: Some(&facts.info),
    };
    let config = layer(CONFIG_MEDIA_TYPE, config_json(&target));
    let mut layers = vec![Layer {
        media_type: MODEL_MEDIA_TYPE.to_owned(),
        digest: format!("sha256:{sha256}"),
        size: file.size,
    }];
    if facts.has_template && facts.mapped.is_none() {
        tracing::info!(%repo, file = %file.path, "registry: a chat template the Hub's table does not know: no template layer (Ollama's default)");
    }
    if let Some(mapped) = facts.mapped {
        tracing::debug!(%repo, file = %file.path, like = %mapped.model, "registry: chat template mapped");
        layers.push(layer(
            TEMPLATE_MEDIA_TYPE,
            mapped.template.clone().into_bytes(),
        ));
        if !mapped.params.is_empty() {
            let params = serde_json::to_vec(&mapped.params)
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            layers.push(layer(PARAMS_MEDIA_TYPE, params));
        }
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        config,
        layers,
    };
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| RegistryError::Internal(e.to_string()))?;
    let digest = format!("sha256:{}", hex_sha256(&bytes));
    Ok(Built {
        bytes: Bytes::from(bytes),
        digest,
    })
}
