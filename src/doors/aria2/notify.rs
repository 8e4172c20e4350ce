//! aria2's notifications from the queue's websocket frames: each `state` frame is
//! compared with the download's last aria2 status, and a change into `active`,
//! `paused`, `removed`, `complete` or `error` is told as aria2 tells it. Every front
//! door's downloads come through the same frames, so REST's are told too.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::gid_of;
use super::status::status_name;
use crate::actors::frames::ClientFrame;
use crate::queue::lifecycle::State;
use crate::queue::model::DownloadId;

/// The last aria2 status of every download a connection has heard of.
#[derive(Default)]
pub struct Tracker {
    status: HashMap<DownloadId, &'static str>,
}

/// The notification for a download entering `status`, if aria2 sends one.
fn event_for(status: &str) -> Option<&'static str> {
    Some(match status {
        "active" => "aria2.onDownloadStart",
        "paused" => "aria2.onDownloadPause",
        "removed" => "aria2.onDownloadStop",
        "complete" => "aria2.onDownloadComplete",
        "error" => "aria2.onDownloadError",
        _ => return None,
    })
}

fn id_and_status(download: &Value) -> Option<(DownloadId, &'static str)> {
    let id = download.get("id")?.as_str()?.to_owned();
    let state = State::parse(download.get("state")?.as_str()?)?;
    Some((id, status_name(state)))
}

impl Tracker {
    /// The notifications (JSON texts) one frame of the queue makes.
    pub fn notifications(&mut self, frame: &ClientFrame) -> Vec<String> {
        let text = match frame {
            // Progress is most frames and never a change of status: not parsed.
            ClientFrame::Text(t) if t.starts_with(r#"{"type":"progress""#) => return Vec::new(),
            ClientFrame::Text(t) => t.to_string(),
            ClientFrame::Snapshot(s) => s.to_text().to_string(),
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        match v.get("type").and_then(Value::as_str) {
            Some("snapshot") => {
                let all = v.get("downloads").and_then(Value::as_array);
                self.status = all
                    .into_iter()
                    .flatten()
                    .filter_map(id_and_status)
                    .collect();
                Vec::new()
            }
            Some("state") => v
                .get("download")
                .and_then(id_and_status)
                .and_then(|(id, status)| self.changed(id, status))
                .into_iter()
                .collect(),
            Some("removed") => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    self.status.remove(id);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn changed(&mut self, id: DownloadId, status: &'static str) -> Option<String> {
        let gid = gid_of(&id);
        let before = self.status.insert(id, status);
        if before == Some(status) {
            return None;
        }
        let method = event_for(status)?;
        Some(json!({"jsonrpc": "2.0", "method": method, "params": [{"gid": gid}]}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, state: &str) -> ClientFrame {
        ClientFrame::Text(
            json!({"type": "state", "download": {"id": id, "state": state}})
                .to_string()
                .into(),
        )
    }

    #[test]
    fn changes_of_aria2_status_are_told_once() {
        let mut t = Tracker::default();
        let told = |t: &mut Tracker, f| -> Vec<String> {
            t.notifications(&f)
                .iter()
                .map(|n| {
                    serde_json::from_str::<Value>(n).unwrap()["method"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert!(told(&mut t, state("dl_1", "queued")).is_empty());
        assert_eq!(
            told(&mut t, state("dl_1", "downloading")),
            ["aria2.onDownloadStart"]
        );
        // downloading ⇄ retrying → verifying is all `active`: no second start.
        assert!(told(&mut t, state("dl_1", "retrying")).is_empty());
        assert!(told(&mut t, state("dl_1", "verifying")).is_empty());
        assert_eq!(
            told(&mut t, state("dl_1", "completed")),
            ["aria2.onDownloadComplete"]
        );
        assert_eq!(
            told(&mut t, state("dl_2", "paused")),
            ["aria2.onDownloadPause"]
        );
        assert_eq!(
            told(&mut t, state("dl_2", "cancelled")),
            ["aria2.onDownloadStop"]
        );
        assert_eq!(
            told(&mut t, state("dl_3", "failed")),
            ["aria2.onDownloadError"]
        );
        let progress = ClientFrame::Text(r#"{"type":"progress","updates":[]}"#.into());
        assert!(told(&mut t, progress).is_empty());
    }
}
