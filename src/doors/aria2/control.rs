//! The methods that steer one download: pause, unpause, remove, forget, reorder and
//! its options. Each answers with aria2's words when the state does not allow it.

use serde_json::{json, Value};

use super::options::{self, DownloadOptions};
use super::status::status_name;
use super::{gid_of, Aria2, RpcError};
use crate::queue::lifecycle::State;
use crate::queue::model::DownloadPatch;

type Result<T> = std::result::Result<T, RpcError>;

impl Aria2 {
    /// `pause`: a waiting or active download becomes paused; the GID.
    pub(super) async fn pause(&self, gid: &str) -> Result<Value> {
        let v = self.resolve(gid).await?;
        if !matches!(
            v.state,
            State::Queued | State::Downloading | State::Retrying
        ) {
            return Err(cannot(&v.id, "paused"));
        }
        self.queue.pause(&v.id).await?;
        Ok(json!(gid_of(&v.id)))
    }

    /// `unpause`: only a paused download (aria2 refuses the others).
    pub(super) async fn unpause(&self, gid: &str) -> Result<Value> {
        let v = self.resolve(gid).await?;
        if v.state != State::Paused {
            return Err(cannot(&v.id, "unpaused"));
        }
        self.queue.resume(&v.id).await?;
        Ok(json!(gid_of(&v.id)))
    }

    /// `remove`: stops it (the partial file goes); it stays listed as `removed`.
    pub(super) async fn remove(&self, gid: &str) -> Result<Value> {
        let v = self.resolve(gid).await?;
        if v.state.is_finished() {
            return Err(cannot(&v.id, "removed"));
        }
        self.queue.cancel(&v.id).await?;
        Ok(json!(gid_of(&v.id)))
    }

    /// `removeDownloadResult`: forgets a finished download (its file stays).
    pub(super) async fn remove_result(&self, gid: &str) -> Result<Value> {
        let v = self.resolve(gid).await?;
        if !v.state.is_finished() {
            return Err(RpcError::method(format!(
                "Could not remove download result of GID#{}",
                gid_of(&v.id)
            )));
        }
        self.queue.delete(&v.id, false).await?;
        Ok(json!("OK"))
    }

    /// `changePosition`: `POS_SET` from the head, `POS_CUR` from where it is,
    /// `POS_END` from the tail, clamped to the queue; the position it lands at.
    pub(super) async fn change_position(&self, gid: &str, pos: i64, how: &str) -> Result<Value> {
        // As aria2: the mode is checked before the download is looked at.
        if !matches!(how, "POS_SET" | "POS_CUR" | "POS_END") {
            return Err(RpcError::method("Illegal argument."));
        }
        let v = self.resolve(gid).await?;
        let (waiting, _) = self
            .queue
            .list(Some(State::Queued), None, usize::MAX)
            .await?;
        let Some(current) = waiting.iter().position(|w| w.id == v.id) else {
            return Err(RpcError::method(format!(
                "GID#{} is {}: only waiting downloads can be moved",
                gid_of(&v.id),
                status_name(v.state)
            )));
        };
        let last = i64::try_from(waiting.len()).unwrap_or(i64::MAX) - 1;
        let current = i64::try_from(current).unwrap_or(last);
        let target = match how {
            "POS_SET" => pos,
            "POS_CUR" => current.saturating_add(pos),
            _ => last.saturating_add(pos),
        };
        let at = usize::try_from(target.clamp(0, last.max(0))).unwrap_or(0);
        self.queue.move_to(&v.id, at).await?;
        Ok(json!(at))
    }

    /// `getOption`: what the download was given, under aria2's names.
    pub(super) async fn get_option(&self, gid: &str) -> Result<Value> {
        let v = self.resolve(gid).await?;
        let path = self.download_dir.join(&v.path);
        let dir = path.parent().unwrap_or(&self.download_dir);
        let mut o = json!({
            "dir": dir.display().to_string(),
            "out": v.file_name,
            "max-download-limit": v.speed_limit_bps.unwrap_or(0).to_string(),
        });
        if let Some(n) = v.connections {
            o["split"] = json!(n.to_string());
        }
        if let Some(sha) = &v.sha256 {
            o["checksum"] = json!(format!("sha-256={sha}"));
        }
        Ok(o)
    }

    /// `changeOption`: `max-download-limit` changes the download's cap; `out`, `dir`
    /// and `checksum` cannot change once it is queued.
    pub(super) async fn change_option(&self, gid: &str, opts: Option<&Value>) -> Result<Value> {
        let v = self.resolve(gid).await?;
        let given = options::object(opts)?;
        let o = DownloadOptions::parse(&self.download_dir, &given)?;
        if let Some(key) = ["out", "dir", "checksum"]
            .iter()
            .find(|k| given.contains_key(**k))
        {
            return Err(RpcError::method(format!(
                "{key} cannot be changed once a download is added"
            )));
        }
        if let Some(limit) = o.max_download_limit {
            let patch = DownloadPatch {
                speed_limit_bps: Some((limit > 0).then_some(limit)),
                url: None,
            };
            self.queue.patch(&v.id, patch).await?;
        }
        Ok(json!("OK"))
    }
}

fn cannot(id: &str, what: &str) -> RpcError {
    RpcError::method(format!("GID#{} cannot be {what} now", gid_of(id)))
}
