//! What fetching a Hub file would cost, told before it is fetched: for a Xet-backed
//! file, the xorb bytes of the chunks no file on disk holds (one reconstruction of the
//! whole file, nothing fetched); for any other, its size.

use std::path::Path;
use std::time::Duration;

use super::cas::Cas;
use super::plan::Plan;
use super::reuse::Reuse;
use crate::engine::Engine;
use crate::hub::HubClient;

/// How long the estimate may take, all requests counted.
const WITHIN: Duration = Duration::from_secs(30);

impl Engine {
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
