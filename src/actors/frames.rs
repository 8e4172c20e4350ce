//! The websocket frames of the contract (`snapshot`, `progress`, `state`, `removed`),
//! each serialized once and shared by every client that receives it.

use std::sync::Arc;

use serde::Serialize;

use crate::model::{DownloadId, DownloadView, Live};

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
mod tests {
    use super::*;

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
