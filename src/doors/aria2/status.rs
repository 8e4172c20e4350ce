//! Our downloads in aria2's shapes: the status struct of `tellStatus` (numbers as
//! strings, as aria2 sends them), `files[]` with `uris[]`, and `keys` filtering.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::gid::gid_of;
use crate::queue::lifecycle::State;
use crate::queue::model::{DownloadView, ErrorKind};

/// aria2's piece size for a plain HTTP download (1 MiB): `numPieces` follows from it.
const PIECE_LENGTH: u64 = 1024 * 1024;

/// aria2's `status` for one of our states (the contract's mapping).
pub fn status_name(state: State) -> &'static str {
    match state {
        State::Queued => "waiting",
        State::Downloading | State::Retrying | State::Verifying => "active",
        State::Paused => "paused",
        State::Completed => "complete",
        State::Failed => "error",
        State::Cancelled => "removed",
    }
}

/// aria2's exit status codes (the manual's "EXIT STATUS") for our error kinds.
fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Network => "6",
        ErrorKind::NotFound => "3",
        ErrorKind::HttpStatus => "22",
        ErrorKind::Unauthorized => "24",
        ErrorKind::ChecksumMismatch => "32",
        ErrorKind::Disk => "17",
        ErrorKind::InvalidRequest => "28",
        ErrorKind::RemoteChanged | ErrorKind::Internal => "1",
    }
}

/// aria2's `bitfield`: one bit per piece, high bit first, in hex. Ours counts the pieces
/// below `done` as had (exact for one connection; parallel ranges fill in elsewhere,
/// which this understates). Absent while the size is unknown, as in aria2.
fn bitfield(done: u64, total: u64) -> Option<String> {
    let pieces = total.div_ceil(PIECE_LENGTH);
    if pieces == 0 || pieces > 1 << 24 {
        return None;
    }
    let have = if done >= total {
        pieces
    } else {
        done / PIECE_LENGTH
    };
    let bytes = pieces.div_ceil(8);
    let mut hex = String::with_capacity(usize::try_from(bytes * 2).ok()?);
    for byte in 0..bytes {
        let full = have.saturating_sub(byte * 8).min(8);
        let bits: u8 = if full == 8 { 0xff } else { !(0xffu8 >> full) };
        hex.push_str(&format!("{bits:02x}"));
    }
    Some(hex)
}

/// The absolute directory and path of a download's file.
fn dir_and_path(root: &Path, v: &DownloadView) -> (String, String) {
    let path = root.join(&v.path);
    let dir = path.parent().unwrap_or(root);
    (dir.display().to_string(), path.display().to_string())
}

/// `getUris`: the one URL, `used` while it is being fetched.
pub fn uris(v: &DownloadView) -> Value {
    let used = if v.state.is_running() {
        "used"
    } else {
        "waiting"
    };
    json!([{"uri": v.url, "status": used}])
}

/// `getFiles`: one file per download.
pub fn files(root: &Path, v: &DownloadView) -> Value {
    let (_, path) = dir_and_path(root, v);
    json!([{
        "index": "1",
        "path": path,
        "length": v.bytes_total.unwrap_or(0).to_string(),
        "completedLength": v.bytes_done.to_string(),
        "selected": "true",
        "uris": uris(v),
    }])
}

/// The whole status struct; BitTorrent keys (`bittorrent`, `infoHash`) and links to
/// other downloads (`followedBy`, `following`, `belongsTo`) are absent, as aria2
/// leaves them out of a plain HTTP download.
pub fn full(root: &Path, v: &DownloadView) -> Map<String, Value> {
    let total = v.bytes_total.unwrap_or(0);
    let (dir, _) = dir_and_path(root, v);
    let active = v.state == State::Downloading;
    let mut s = Map::new();
    let mut put = |k: &str, val: Value| {
        s.insert(k.to_owned(), val);
    };
    put("gid", gid_of(&v.id).into());
    put("status", status_name(v.state).into());
    put("totalLength", total.to_string().into());
    put("completedLength", v.bytes_done.to_string().into());
    put("uploadLength", "0".into());
    put("downloadSpeed", v.speed_bps.to_string().into());
    put("uploadSpeed", "0".into());
    put("connections", if active { "1" } else { "0" }.into());
    put("numSeeders", "0".into());
    put("seeder", "false".into());
    put("pieceLength", PIECE_LENGTH.to_string().into());
    put("numPieces", total.div_ceil(PIECE_LENGTH).to_string().into());
    if let Some(bits) = bitfield(v.bytes_done, total) {
        put("bitfield", bits.into());
    }
    put("dir", dir.into());
    put("files", files(root, v));
    if v.state == State::Verifying {
        put("verifiedLength", "0".into());
        put("verifyIntegrityPending", "false".into());
    }
    if v.state.is_finished() {
        let (code, message) = match &v.error {
            Some(e) if v.state == State::Failed => (error_code(e.kind), e.message.clone()),
            _ => ("0", String::new()),
        };
        put("errorCode", code.into());
        put("errorMessage", message.into());
    }
    s
}

/// The status struct with only `keys` (all of it when `keys` is empty).
pub fn filtered(root: &Path, v: &DownloadView, keys: &[String]) -> Value {
    let mut s = full(root, v);
    if !keys.is_empty() {
        s.retain(|k, _| keys.iter().any(|want| want == k));
    }
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str) -> DownloadView {
        let d: crate::queue::model::Download = serde_json::from_value(json!({
            "id": "dl_1", "url": "http://h/a/x.bin", "file_name": "x.bin",
            "path": "sub/x.bin", "state": state, "order": 1, "bytes_done": 5,
            "bytes_total": 3145729, "elapsed_secs": 0.0, "attempt": 0,
            "source": {"kind": "url"}, "created_at": "2026-01-01T00:00:00Z",
            "error": {"kind": "checksum_mismatch", "message": "bad digest"}
        }))
        .expect("a record");
        d.view(None, None)
    }

    #[test]
    fn numbers_are_strings_and_paths_absolute() {
        let s = full(Path::new("/srv/dl"), &view("downloading"));
        assert_eq!(s["status"], "active");
        assert_eq!(s["totalLength"], "3145729");
        assert_eq!(s["numPieces"], "4");
        assert_eq!(s["dir"], "/srv/dl/sub");
        assert_eq!(s["files"][0]["path"], "/srv/dl/sub/x.bin");
        assert_eq!(s["files"][0]["uris"][0]["status"], "used");
        assert!(!s.contains_key("bittorrent") && !s.contains_key("errorCode"));
    }

    #[test]
    fn bitfields_count_pieces_high_bit_first() {
        let mib = PIECE_LENGTH;
        assert_eq!(bitfield(0, 0), None);
        assert_eq!(bitfield(0, 3 * mib), Some("00".into()));
        assert_eq!(bitfield(2 * mib + 5, 3 * mib), Some("c0".into()));
        assert_eq!(bitfield(3 * mib, 3 * mib), Some("e0".into()));
        assert_eq!(bitfield(9 * mib, 9 * mib), Some("ff80".into()));
    }

    #[test]
    fn a_failed_download_carries_its_error_and_keys_filter() {
        let v = view("failed");
        let s = full(Path::new("/d"), &v);
        assert_eq!(
            (s["status"].as_str(), s["errorCode"].as_str()),
            (Some("error"), Some("32"))
        );
        assert_eq!(s["errorMessage"], "bad digest");
        let f = filtered(
            Path::new("/d"),
            &v,
            &["gid".into(), "status".into(), "nope".into()],
        );
        assert_eq!(f.as_object().map(|o| o.len()), Some(2));
    }
}
