//! The websocket frames of the contract (`snapshot`, `progress`, `state`, `removed`),
//! each serialized once and shared by every client that receives it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::queue::model::{DownloadId, DownloadView, Live};

/// One JSON text frame.
pub type Frame = Arc<str>;

/// One running download's numbers in a `progress` frame.
#[derive(Serialize)]
pub struct ProgressUpdate {
    pub id: DownloadId,
    #[serde(flatten)]
    pub live: Live,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Snapshot { downloads: &'a [DownloadView] },
    Progress { updates: &'a [ProgressUpdate] },
    State { download: &'a DownloadView },
    Removed { id: &'a str },
}

/// `{"type": "snapshot", "downloads": [...]}`: the first frame of every client.
pub fn snapshot(downloads: &[DownloadView]) -> Frame {
    json(&Out::Snapshot { downloads })
}

/// `{"type": "progress", "updates": [...]}`: one frame for every running download.
pub fn progress(updates: &[ProgressUpdate]) -> Frame {
    json(&Out::Progress { updates })
}

/// `{"type": "state", "download": {...}}`: on every change of a download.
pub fn state(download: &DownloadView) -> Frame {
    json(&Out::State { download })
}

/// `{"type": "removed", "id": "..."}`.
pub fn removed(id: &str) -> Frame {
    json(&Out::Removed { id })
}

/// What a websocket client's queue carries: a frame, or the snapshot.
#[derive(Clone)]
pub enum ClientFrame {
    Text(Frame),
    Snapshot(Arc<Snapshot>),
}

/// About how many bytes each piece of a [`Snapshot`] holds.
pub const SNAPSHOT_PIECE: usize = 16 * 1024;

/// The `snapshot` frame, serialized once into pieces of about [`SNAPSHOT_PIECE`] bytes
/// that every client subscribing while it is current shares. A client sends it as one
/// message in continuation frames, so one that stops reading holds only the pieces its
/// socket has not taken, and those are shared too.
pub struct Snapshot {
    pieces: Vec<Bytes>,
}

impl Snapshot {
    /// The pieces, in order; joined they are the frame's JSON text. Each one ends
    /// between two values, so each one is valid UTF-8 too.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The whole frame as one text (for a client that cannot take pieces).
    pub fn to_text(&self) -> Frame {
        let text: Vec<u8> = self.pieces.concat();
        String::from_utf8_lossy(&text).into()
    }
}

/// `{"type": "snapshot", "downloads": [...]}`, in pieces (the same text as [`snapshot`]).
pub fn snapshot_pieces(downloads: &[DownloadView]) -> Snapshot {
    let mut pieces = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(SNAPSHOT_PIECE + 1024);
    buf.extend_from_slice(br#"{"type":"snapshot","downloads":["#);
    for (i, d) in downloads.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut buf, d) {
            tracing::error!(error = %e, download_id = %d.id, "cannot serialize a download");
            buf.extend_from_slice(b"{}");
        }
        if buf.len() >= SNAPSHOT_PIECE {
            pieces.push(Bytes::from(std::mem::replace(
                &mut buf,
                Vec::with_capacity(SNAPSHOT_PIECE + 1024),
            )));
        }
    }
    buf.extend_from_slice(b"]}");
    pieces.push(Bytes::from(buf));
    Snapshot { pieces }
}

fn json<T: Serialize>(value: &T) -> Frame {
    match serde_json::to_string(value) {
        Ok(s) => s.into(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a frame");
            Arc::from("{}")
        }
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of one piece, for the tests of its readers.
    pub(crate) fn from_text(text: &str) -> Snapshot {
        Snapshot {
            pieces: vec![Bytes::copy_from_slice(text.as_bytes())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(i: usize) -> DownloadView {
        let d: crate::queue::model::Download = serde_json::from_value(serde_json::json!({
            "id": format!("dl_{i}"), "url": format!("http://127.0.0.1:9/f{i}.bin"),
            "file_name": format!("f{i}.bin"), "path": format!("f{i}.bin"),
            "state": "paused", "order": i, "bytes_done": 0, "elapsed_secs": 0.0,
            "attempt": 0, "source": {"kind": "url"}, "created_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a record");
        d.view(None, None)
    }

    #[test]
    fn a_snapshot_in_pieces_is_the_snapshot_text() {
        for n in [0, 1, 3, 200] {
            let views: Vec<DownloadView> = (0..n).map(view).collect();
            let pieces = snapshot_pieces(&views);
            assert_eq!(&*pieces.to_text(), &*snapshot(&views), "{n} downloads");
            assert!(pieces
                .pieces()
                .iter()
                .all(|p| p.len() < 2 * SNAPSHOT_PIECE && std::str::from_utf8(p).is_ok()));
            if n == 200 {
                assert!(pieces.pieces().len() > 2, "200 downloads come in pieces");
            }
        }
    }

    #[test]
    fn frames_carry_their_type_first_and_the_contract_fields() {
        let f = removed("dl_1");
        assert_eq!(&*f, r#"{"type":"removed","id":"dl_1"}"#);
        let f = progress(&[ProgressUpdate {
            id: "dl_2".into(),
            live: Live {
                bytes_done: 5,
                bytes_total: Some(10),
                speed_bps: 1,
                eta_secs: Some(5),
                elapsed_secs: 1.5,
            },
        }]);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "progress");
        assert_eq!(v["updates"][0]["id"], "dl_2");
        assert_eq!(v["updates"][0]["bytes_total"], 10);
        assert_eq!(v["updates"][0]["eta_secs"], 5);
    }
}
