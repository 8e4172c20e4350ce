//! GIDs: aria2's 16 hex digits per download. Ours are derived from the download's
//! stored id (the first 64 bits of its SHA-256), so they need no storage of their own,
//! are the same after every restart, and every front door sees the same one. The index
//! maps them back; it is rebuilt from the queue when it does not know a GID.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::RpcError;
use crate::actors::handle::QueueHandle;
use crate::queue::model::{DownloadId, DownloadView};

/// The GID of a download id: 16 lower-case hex digits.
pub fn gid_of(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// GID → download id, for the downloads seen so far.
#[derive(Default)]
pub struct GidIndex {
    ids: Mutex<HashMap<String, DownloadId>>,
}

impl GidIndex {
    /// Notes the downloads of an answer (cheap: their GIDs are computed anyway).
    pub fn remember(&self, views: &[DownloadView]) {
        if let Ok(mut ids) = self.ids.lock() {
            for v in views {
                ids.insert(gid_of(&v.id), v.id.clone());
            }
        }
    }

    fn known(&self, gid: &str) -> Option<DownloadId> {
        self.ids.lock().ok()?.get(gid).cloned()
    }

    /// The download a GID (or a unique prefix of one) names, as aria2 words the
    /// failures: `Invalid GID`, `GID ... is not found`, `GID ... is not unique`.
    pub async fn resolve(&self, queue: &QueueHandle, gid: &str) -> Result<DownloadView, RpcError> {
        if gid.is_empty() || gid.len() > 16 || !gid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RpcError::method(format!("Invalid GID {gid}")));
        }
        let gid = gid.to_ascii_lowercase();
        if let Some(id) = self.known(&gid) {
            if let Ok(view) = queue.get(&id).await {
                return Ok(view);
            }
        }
        let (all, _) = queue.list(None, None, usize::MAX).await?;
        let rebuilt: HashMap<String, DownloadId> =
            all.iter().map(|v| (gid_of(&v.id), v.id.clone())).collect();
        let mut matches = all.into_iter().filter(|v| gid_of(&v.id).starts_with(&gid));
        let found = matches.next();
        let second = matches.next();
        if let Ok(mut ids) = self.ids.lock() {
            *ids = rebuilt;
        }
        match (found, second) {
            (Some(v), None) => Ok(v),
            (Some(_), Some(_)) => Err(RpcError::method(format!("GID {gid} is not unique"))),
            (None, _) => Err(RpcError::method(format!("GID {gid} is not found"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_sixteen_hex_digits_and_depend_only_on_the_id() {
        let a = gid_of("dl_01JD3ZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, gid_of("dl_01JD3ZZZZZZZZZZZZZZZZZZZZZ"));
        assert_ne!(a, gid_of("dl_01JD3ZZZZZZZZZZZZZZZZZZZZY"));
    }
}
