//! The methods: the token check, then each one on the queue's handle.

use serde_json::{json, Value};

use super::options::{self, DownloadOptions};
use super::status;
use super::{Aria2, RpcError};
use crate::intake::UrlFile;
use crate::queue::lifecycle::State;
use crate::queue::model::DownloadView;

type Result<T> = std::result::Result<T, RpcError>;

/// Every method answered, as `system.listMethods` lists them.
pub const METHODS: &[&str] = &[
    "aria2.addUri",
    "aria2.remove",
    "aria2.forceRemove",
    "aria2.pause",
    "aria2.pauseAll",
    "aria2.forcePause",
    "aria2.forcePauseAll",
    "aria2.unpause",
    "aria2.unpauseAll",
    "aria2.tellStatus",
    "aria2.getUris",
    "aria2.getFiles",
    "aria2.getPeers",
    "aria2.getServers",
    "aria2.tellActive",
    "aria2.tellWaiting",
    "aria2.tellStopped",
    "aria2.getOption",
    "aria2.changePosition",
    "aria2.changeOption",
    "aria2.getGlobalOption",
    "aria2.changeGlobalOption",
    "aria2.getGlobalStat",
    "aria2.purgeDownloadResult",
    "aria2.removeDownloadResult",
    "aria2.getVersion",
    "aria2.getSessionInfo",
    "aria2.saveSession",
    "system.multicall",
    "system.listMethods",
    "system.listNotifications",
];

pub const NOTIFICATIONS: &[&str] = &[
    "aria2.onDownloadStart",
    "aria2.onDownloadPause",
    "aria2.onDownloadStop",
    "aria2.onDownloadComplete",
    "aria2.onDownloadError",
    "aria2.onBtDownloadComplete",
];

/// aria2 methods that exist but have no meaning here (no BitTorrent, no Metalink).
const REFUSED: &[&str] = &[
    "aria2.addTorrent",
    "aria2.addMetalink",
    "aria2.changeUri",
    "aria2.shutdown",
    "aria2.forceShutdown",
];

/// The version aria2 front-ends are told: the aria2 whose RPC this one follows.
const ARIA2_VERSION: &str = "1.37.0";

/// Positional parameters of one call.
struct Params(Vec<Value>);

impl Params {
    fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i).filter(|v| !v.is_null())
    }

    fn missing(i: usize) -> RpcError {
        RpcError::method(format!("The parameter at {i} is required but missing."))
    }

    fn str(&self, i: usize) -> Result<&str> {
        match self.get(i) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(RpcError::method(format!(
                "The parameter at {i} must be a string."
            ))),
            None => Err(Self::missing(i)),
        }
    }

    fn int(&self, i: usize) -> Result<i64> {
        match self.get(i) {
            Some(v) => v.as_i64().ok_or_else(|| {
                RpcError::method(format!("The parameter at {i} must be an integer."))
            }),
            None => Err(Self::missing(i)),
        }
    }

    /// The `keys` list at `i` (absent: every key).
    fn keys(&self, i: usize) -> Result<Vec<String>> {
        match self.get(i) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(RpcError::method(format!(
                "The parameter at {i} must be a list of keys."
            ))),
        }
    }
}

impl Aria2 {
    /// aria2's rule: a first parameter `token:...` is the secret and is taken off the
    /// list; with a secret set, a call without the right one is `Unauthorized`.
    fn authorize(&self, params: &mut Vec<Value>) -> Result<()> {
        let given = match params.first() {
            Some(Value::String(s)) if s.starts_with("token:") => {
                let t = s["token:".len()..].to_owned();
                params.remove(0);
                Some(t)
            }
            _ => None,
        };
        match (&self.token, given) {
            (None, _) => Ok(()),
            (Some(want), Some(got))
                if crate::doors::security::constant_time_eq(got.as_bytes(), want.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(RpcError::unauthorized()),
        }
    }

    /// One call, `system.multicall` included.
    pub async fn dispatch(&self, method: &str, params: Vec<Value>) -> Result<Value> {
        if method != "system.multicall" {
            return self.call(method, params).await;
        }
        // Each inner call carries its own token; one given to multicall itself (as some
        // clients send) is passed over.
        let mut params = params
            .into_iter()
            .skip_while(|p| p.as_str().is_some_and(|s| s.starts_with("token:")));
        let Some(Value::Array(calls)) = params.next() else {
            return Err(RpcError::method(
                "system.multicall expected a list of structs.",
            ));
        };
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let name = c.get("methodName").and_then(Value::as_str);
            let inner = match c.get("params") {
                Some(Value::Array(p)) => p.clone(),
                _ => Vec::new(),
            };
            let result = match name {
                None if !c.is_object() => {
                    Err(RpcError::method("system.multicall expected struct."))
                }
                None => Err(RpcError::method("Missing methodName.")),
                Some("system.multicall") => {
                    Err(RpcError::method("Recursive system.multicall forbidden."))
                }
                Some(name) => self.call(name, inner).await,
            };
            out.push(match result {
                Ok(v) => json!([v]),
                Err(e) => json!({"code": e.code, "message": e.message}),
            });
        }
        Ok(Value::Array(out))
    }

    /// One call other than `system.multicall`.
    async fn call(&self, method: &str, mut params: Vec<Value>) -> Result<Value> {
        match method {
            // No secret needed, as in aria2: they reveal nothing.
            "system.listMethods" => return Ok(json!(METHODS)),
            "system.listNotifications" => return Ok(json!(NOTIFICATIONS)),
            _ => {}
        }
        self.authorize(&mut params)?;
        let p = Params(params);
        match method {
            "aria2.getVersion" => Ok(json!({
                "version": ARIA2_VERSION,
                "enabledFeatures": ["HTTPS", "Message Digest"],
                "server": concat!("model-manager/", env!("CARGO_PKG_VERSION")),
            })),
            "aria2.getSessionInfo" => Ok(json!({"sessionId": super::gid_of("session")})),
            "aria2.saveSession" => Ok(json!("OK")),
            "aria2.getGlobalStat" => self.global_stat().await,
            "aria2.tellActive" => self.tell_active(&p.keys(0)?).await,
            "aria2.tellWaiting" => {
                self.tell_page(false, p.int(0)?, p.int(1)?, &p.keys(2)?)
                    .await
            }
            "aria2.tellStopped" => {
                self.tell_page(true, p.int(0)?, p.int(1)?, &p.keys(2)?)
                    .await
            }
            "aria2.tellStatus" => {
                let v = self.resolve(p.str(0)?).await?;
                Ok(status::filtered(&self.download_dir, &v, &p.keys(1)?))
            }
            "aria2.getFiles" => Ok(status::files(
                &self.download_dir,
                &self.resolve(p.str(0)?).await?,
            )),
            "aria2.getUris" => Ok(status::uris(&self.resolve(p.str(0)?).await?)),
            "aria2.getPeers" | "aria2.getServers" => {
                self.resolve(p.str(0)?).await?;
                Ok(json!([]))
            }
            "aria2.addUri" => self.add_uri(&p).await,
            _ => self.call_control(method, &p).await,
        }
    }

    /// The methods that change a download or the queue.
    async fn call_control(&self, method: &str, p: &Params) -> Result<Value> {
        match method {
            "aria2.pause" | "aria2.forcePause" => self.pause(p.str(0)?).await,
            "aria2.unpause" => self.unpause(p.str(0)?).await,
            "aria2.remove" | "aria2.forceRemove" => self.remove(p.str(0)?).await,
            "aria2.pauseAll" | "aria2.forcePauseAll" => {
                self.queue.pause_all().await?;
                Ok(json!("OK"))
            }
            "aria2.unpauseAll" => {
                self.queue.resume_all().await?;
                Ok(json!("OK"))
            }
            "aria2.removeDownloadResult" => self.remove_result(p.str(0)?).await,
            "aria2.purgeDownloadResult" => {
                self.queue.clear_history().await?;
                Ok(json!("OK"))
            }
            "aria2.changePosition" => self.change_position(p.str(0)?, p.int(1)?, p.str(2)?).await,
            "aria2.getOption" => self.get_option(p.str(0)?).await,
            "aria2.changeOption" => self.change_option(p.str(0)?, p.get(1)).await,
            "aria2.getGlobalOption" => {
                let s = self.queue.settings().await?;
                Ok(options::global(&self.download_dir, &s))
            }
            "aria2.changeGlobalOption" => {
                let patch = options::settings_patch(&options::object(p.get(0))?)?;
                self.queue.patch_settings(patch).await?;
                Ok(json!("OK"))
            }
            m if REFUSED.contains(&m) => Err(RpcError::method(format!(
                "{m} is not supported: model-manager fetches http(s) URLs and keeps running"
            ))),
            m => Err(RpcError::method(format!("No such method: {m}"))),
        }
    }

    pub(super) async fn resolve(&self, gid: &str) -> Result<DownloadView> {
        self.gids.resolve(&self.queue, gid).await
    }

    /// Every download, in queue order then the rest; remembered by GID.
    async fn all(&self) -> Result<Vec<DownloadView>> {
        let (all, _) = self.queue.list(None, None, usize::MAX).await?;
        self.gids.remember(&all);
        Ok(all)
    }

    async fn global_stat(&self) -> Result<Value> {
        let s = self.queue.stats().await?;
        let count = |st: State| s.by_state.get(st.as_str()).copied().unwrap_or(0);
        let stopped = count(State::Completed) + count(State::Failed) + count(State::Cancelled);
        let active = count(State::Downloading) + count(State::Retrying) + count(State::Verifying);
        Ok(json!({
            "downloadSpeed": s.speed_bps.to_string(),
            "uploadSpeed": "0",
            "numActive": active.to_string(),
            "numWaiting": (count(State::Queued) + count(State::Paused)).to_string(),
            "numStopped": stopped.to_string(),
            "numStoppedTotal": stopped.to_string(),
        }))
    }

    async fn tell_active(&self, keys: &[String]) -> Result<Value> {
        let all = self.all().await?;
        let list = all
            .iter()
            .filter(|v| v.state.is_running())
            .map(|v| status::filtered(&self.download_dir, v, keys))
            .collect();
        Ok(Value::Array(list))
    }

    /// `tellWaiting` (queued and paused, in queue order) or `tellStopped` (finished,
    /// oldest first), paged as aria2 pages: a negative offset counts from the end and
    /// the page comes in reverse order.
    async fn tell_page(
        &self,
        stopped: bool,
        offset: i64,
        num: i64,
        keys: &[String],
    ) -> Result<Value> {
        let all = self.all().await?;
        let mut items: Vec<&DownloadView> = if stopped {
            let mut done: Vec<&DownloadView> =
                all.iter().filter(|v| v.state.is_finished()).collect();
            done.sort_by(|a, b| a.finished_at.cmp(&b.finished_at));
            done
        } else {
            all.iter()
                .filter(|v| matches!(v.state, State::Queued | State::Paused))
                .collect()
        };
        let (start, end) = page_range(offset, num, items.len());
        let mut page: Vec<Value> = items
            .drain(start..end)
            .map(|v| status::filtered(&self.download_dir, v, keys))
            .collect();
        if offset < 0 {
            page.reverse();
        }
        Ok(Value::Array(page))
    }

    async fn add_uri(&self, p: &Params) -> Result<Value> {
        let not_uris = || RpcError::method("addUri: the first parameter must be a list of URIs");
        let uris: Vec<&str> = match p.get(0) {
            Some(Value::Array(a)) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(not_uris)?,
            _ => return Err(not_uris()),
        };
        let Some((raw, mirrors)) = uris.split_first() else {
            return Err(RpcError::method("addUri: no URI given"));
        };
        let opts = DownloadOptions::parse(&self.download_dir, &options::object(p.get(1))?)?;
        // aria2 takes the other URIs as mirrors of the same file; we fetch from the first,
        // but a URI we would refuse is refused wherever it stands in the list.
        for mirror in mirrors {
            self.policy.check(mirror)?;
        }
        let file = UrlFile {
            url: raw,
            file_name: opts.out.clone(),
            dir: opts.dir.clone(),
            sha256: opts.sha256.clone(),
            start_paused: opts.pause,
            overwrite: false,
            speed_limit_bps: opts.max_download_limit,
            connections: opts.split,
        };
        // An `out` given is kept (a conflict stays one); a name from the URL is
        // numbered when another source holds it, and the same source answers its gid.
        let asked = crate::actors::again::Asked {
            auto_name: opts.out.is_none(),
            new: file.new_download(&self.policy)?,
        };
        let added = self.queue.add_asked_one(asked).await?.view;
        if let Some(pos) = p.get(2).and_then(Value::as_i64) {
            let pos = usize::try_from(pos)
                .map_err(|_| RpcError::method("Position must be greater than or equal to 0."))?;
            if added.state == State::Queued {
                self.queue.move_to(&added.id, pos).await?;
            }
        }
        self.gids.remember(std::slice::from_ref(&added));
        Ok(json!(super::gid_of(&added.id)))
    }
}

/// aria2's `getPaginationRange`: the `[start, end)` of a page of `num` items at
/// `offset` (negative: that far from the end, the page ending there).
pub fn page_range(offset: i64, num: i64, len: usize) -> (usize, usize) {
    let size = i64::try_from(len).unwrap_or(i64::MAX);
    if num <= 0 {
        return (len, len);
    }
    let (mut offset, mut num) = (offset, num);
    if offset < 0 {
        let from_end = offset.saturating_add(size);
        if from_end < 0 {
            return (len, len);
        }
        offset = from_end - (num - 1);
        if offset < 0 {
            offset = 0;
            num = from_end + 1;
        }
    } else if size <= offset {
        return (len, len);
    }
    let end = size.min(offset.saturating_add(num));
    let as_index = |n: i64| usize::try_from(n).unwrap_or(len).min(len);
    (as_index(offset), as_index(end))
}

#[cfg(test)]
mod tests {
    use super::page_range;

    #[test]
    fn pages_as_aria2_pages() {
        assert_eq!(page_range(0, 1000, 5), (0, 5));
        assert_eq!(page_range(1, 2, 5), (1, 3));
        assert_eq!(page_range(5, 2, 5), (5, 5));
        assert_eq!(page_range(0, 0, 5), (5, 5));
        // -1 is the last one; three items ending there.
        assert_eq!(page_range(-1, 3, 5), (2, 5));
        assert_eq!(page_range(-1, 1000, 5), (0, 5));
        assert_eq!(page_range(-2, 2, 5), (2, 4));
        assert_eq!(page_range(-6, 2, 5), (5, 5));
    }
}
