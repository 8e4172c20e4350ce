//! aria2's options in ours: `out`, `dir` (a folder inside `download_dir` only),
//! `checksum=sha-256=…`, `max-download-limit`, `split`, `pause` for one download;
//! `max-concurrent-downloads`, `max-overall-download-limit`, `split` for the queue.
//! Options we have no counterpart for are ignored, as aria2 ignores the options that
//! a method cannot change; a value we cannot use is an error.

use std::path::{Component, Path};

use serde_json::{Map, Value};

use super::RpcError;
use crate::config::{DownloadsConfig, SettingsPatch};
use crate::files;

/// Options of `addUri` and `changeOption`, checked.
#[derive(Debug, Default, PartialEq)]
pub struct DownloadOptions {
    pub out: Option<String>,
    /// Relative to `download_dir`, `/`-separated; `None`: `download_dir` itself.
    pub dir: Option<String>,
    pub sha256: Option<String>,
    /// bytes/s; `Some(0)`: no cap.
    pub max_download_limit: Option<u64>,
    pub split: Option<usize>,
    pub pause: bool,
}

/// An option's value: aria2 sends strings; numbers and booleans are taken too.
fn text(key: &str, v: &Value) -> Result<String, RpcError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(RpcError::method(format!(
            "{key}: the value must be a string"
        ))),
    }
}

/// The options object of a call (absent or `null`: none).
pub fn object(param: Option<&Value>) -> Result<Map<String, Value>, RpcError> {
    match param {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(RpcError::method("options must be a struct")),
    }
}

/// aria2's speeds: bytes/s, with `K` (1024) or `M` (1024²) suffixes.
pub fn parse_speed(key: &str, s: &str) -> Result<u64, RpcError> {
    let bad = || {
        RpcError::method(format!(
            "{key}: {s:?} is not a speed in bytes/s like 0, 500K or 2M"
        ))
    };
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1024),
        Some((i, 'm' | 'M')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

fn parse_count(key: &str, s: &str, max: usize) -> Result<usize, RpcError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(RpcError::method(format!(
            "{key}: {s:?} is not a number between 1 and {max}"
        ))),
    }
}

/// `dir` as a folder relative to `download_dir`: an absolute path inside it, or a
/// relative one; nothing that leaves it (`..`, links are refused by the queue).
pub fn relative_dir(root: &Path, dir: &str) -> Result<Option<String>, RpcError> {
    let outside = || RpcError::method(format!("dir: {dir:?} is not inside download_dir"));
    let given = Path::new(dir);
    let rest = if given.is_absolute() {
        given.strip_prefix(root).map_err(|_| outside())?
    } else {
        given
    };
    let mut parts = Vec::new();
    for c in rest.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => {
                let p = p.to_str().ok_or_else(outside)?;
                files::validate_name(p).map_err(|e| RpcError::method(format!("dir: {e}")))?;
                parts.push(p);
            }
            _ => return Err(outside()),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn checksum(s: &str) -> Result<String, RpcError> {
    let (algo, hex) = s.split_once('=').unwrap_or(("", s));
    if !algo.eq_ignore_ascii_case("sha-256") {
        return Err(RpcError::method(format!(
            "checksum: {s:?}: only sha-256=<64 hex digits> is supported"
        )));
    }
    Ok(crate::intake::parse_sha256(hex)?)
}

impl DownloadOptions {
    /// Reads the options a download can have.
    pub fn parse(root: &Path, m: &Map<String, Value>) -> Result<Self, RpcError> {
        let mut o = DownloadOptions::default();
        for (key, value) in m {
            let v = text(key, value)?;
            match key.as_str() {
                "out" => {
                    files::validate_file_name(&v)
                        .map_err(|e| RpcError::method(format!("out: {e}")))?;
                    o.out = Some(v);
                }
                "dir" => o.dir = relative_dir(root, &v)?,
                "checksum" => o.sha256 = Some(checksum(&v)?),
                "max-download-limit" => o.max_download_limit = Some(parse_speed(key, &v)?),
                "split" => o.split = Some(parse_count(key, &v, 32)?),
                "pause" => o.pause = v == "true",
                _ => {}
            }
        }
        Ok(o)
    }
}

/// `changeGlobalOption`: the queue's settings it changes.
pub fn settings_patch(m: &Map<String, Value>) -> Result<SettingsPatch, RpcError> {
    let mut p = SettingsPatch::default();
    for (key, value) in m {
        let v = text(key, value)?;
        match key.as_str() {
            "max-concurrent-downloads" => p.max_concurrent = Some(parse_count(key, &v, 64)?),
            "max-overall-download-limit" => p.speed_limit_bps = Some(parse_speed(key, &v)?),
            "split" => p.connections_per_download = Some(parse_count(key, &v, 32)?),
            _ => {}
        }
    }
    Ok(p)
}

/// `getGlobalOption`: our settings under aria2's names.
pub fn global(root: &Path, s: &DownloadsConfig) -> Value {
    serde_json::json!({
        "dir": root.display().to_string(),
        "max-concurrent-downloads": s.max_concurrent.to_string(),
        "max-overall-download-limit": s.speed_limit_bps.to_string(),
        "max-download-limit": "0",
        "split": s.connections_per_download.to_string(),
        "max-connection-per-server": s.connections_per_download.to_string(),
        "max-tries": (s.max_retries + 1).to_string(),
        "continue": "true",
        "check-integrity": "true",
        "allow-overwrite": "false",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_take_aria2_suffixes() {
        assert_eq!(parse_speed("k", "0"), Ok(0));
        assert_eq!(parse_speed("k", "500K"), Ok(500 * 1024));
        assert_eq!(parse_speed("k", "2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_speed("k", "1234"), Ok(1234));
        for bad in ["", "K", "1.5M", "-1", "12G", "9999999999999999M"] {
            assert!(parse_speed("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dir_stays_inside_download_dir() {
        let root = Path::new("/srv/dl");
        assert_eq!(relative_dir(root, "/srv/dl"), Ok(None));
        assert_eq!(relative_dir(root, "/srv/dl/a/b"), Ok(Some("a/b".into())));
        assert_eq!(relative_dir(root, "a/./b"), Ok(Some("a/b".into())));
        for bad in [
            "/srv/other",
            "../x",
            "a/../../x",
            "/srv/dl/../x",
            "a/.hidden",
        ] {
            assert!(relative_dir(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksum_is_sha256_only() {
        let hex = "ab".repeat(32);
        assert_eq!(checksum(&format!("sha-256={hex}")), Ok(hex.clone()));
        assert!(checksum(&format!("md5={hex}")).is_err());
        assert!(checksum("sha-256=12").is_err());
    }
}
