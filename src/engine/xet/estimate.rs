//! What fetching a Hub file would cost, told before it is fetched: for a Xet-backed
//! file, the xorb bytes of the chunks no file on disk holds (one reconstruction of the
//! whole file, nothing fetched); for any other, its size.

use std::path::Path;
use std::time::Duration;

use super::cas::Cas;
use super::plan::Plan;
use super::reuse::{ChunkMap, Reuse};
use crate::engine::Engine;
use crate::hub::HubClient;

/// A file on disk, as the library knows it: its path (relative to `download_dir`), the
/// Hub file and commit it was fetched at, its sha256 and size.
pub struct OnDisk<'a> {
    pub path: &'a str,
    pub repo: &'a str,
    pub commit: &'a str,
    pub file: &'a str,
    pub sha256: &'a str,
    pub size: u64,
}

/// How long the estimate may take, all requests counted.
const WITHIN: Duration = Duration::from_secs(30);

impl Engine {
    /// Gives a file on disk that has no chunk map (fetched over HTTP, or before this
    /// version) the map of its Xet hash at the commit it came from, when the Hub says
    /// that file is the one on disk (same sha256 and size): an update can then reuse its
    /// chunks. Nothing is fetched but one reconstruction.
    pub async fn map_chunks_of(&self, hub: &HubClient, f: &OnDisk<'_>) {
        if !hub.xet_enabled() || matches!(self.store.xet_map::<ChunkMap>(f.path), Ok(Some(_))) {
            return;
        }
        let mapped = async {
            let r = hub.resolve(f.repo, f.commit, f.file).await.ok()?;
            let link = r.xet.filter(|_| r.sha256.as_deref() == Some(f.sha256))?;
            if r.size != Some(f.size) {
                return None;
            }
            let cas = Cas::new(self, hub, link.clone(), WITHIN);
            let plan = cas.plan(&(0..f.size)).await.ok()?;
            let map = ChunkMap::of(f.size, &link.hash, &plan.terms);
            self.store.put_xet_map(f.path, &map).ok()
        };
        if tokio::time::timeout(WITHIN, mapped)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            tracing::info!(path = %f.path, "chunk map of a file on disk taken from its Xet hash");
        }
    }

    /// The bytes a download of `file` of `repo` at `commit` (`size` bytes) would fetch
    /// with the chunks the files under `download_dir` hold; `None` when it cannot be
    /// told (the Hub or the CAS did not answer).
    pub async fn fetch_cost(
        &self,
        hub: &HubClient,
        download_dir: &Path,
        (repo, commit, file): (&str, &str, &str),
        size: u64,
    ) -> Option<u64> {
        let estimate = async {
            let resolved = hub.resolve(repo, commit, file).await.ok()?;
            let Some(link) = resolved.xet.filter(|_| hub.xet_enabled()) else {
                return Some(size);
            };
            let size = resolved.size.unwrap_or(size);
            let cas = Cas::new(self, hub, link, WITHIN);
            let plan = cas.plan(&(0..size)).await.ok()?;
            let reuse = Reuse::load(&self.store, download_dir, false);
            Some(unheld(&plan, &reuse).await)
        };
        tokio::time::timeout(WITHIN, estimate)
            .await
            .unwrap_or_default()
    }
}

/// The bytes of the fetches whose terms the files on disk do not all hold.
async fn unheld(plan: &Plan, reuse: &Reuse) -> u64 {
    let mut cost = 0u64;
    for (fetch, terms) in plan.by_fetch(u64::MAX) {
        if !reuse.holds(&terms).await {
            cost = cost.saturating_add(fetch.size());
        }
    }
    cost
}
