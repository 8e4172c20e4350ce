//! The update watch: one Hub request per repo (model info at the revision the files
//! were fetched from, with every file's sha256) tells which of our files the Hub now
//! has newer; `update` queues the newer file under the same name, and the download's
//! own rename replaces the old one only once the new one is verified.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::owner::{Index, Msg};
use super::record::{Record, Update};
use super::{Inner, LibraryError};
use crate::hub::{HubError, RepoRevision};
use crate::queue::model::NewDownload;

/// Tries per repo when the Hub asks to slow down or cannot be reached.
const TRIES: u32 = 5;
/// The longest wait the Hub may ask of one check (a longer one ends the repo's check).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The wait when a 429 names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// What one check did.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    pub repos: usize,
    pub updates: usize,
    /// Repos the check could not tell about, with why.
    pub errors: BTreeMap<String, String>,
}

/// Checks every Hub file of the library against its repo's current revision.
pub(super) async fn check(inner: &Inner) -> Result<CheckReport, LibraryError> {
    let hub = &inner.hub;
    let mut report = CheckReport::default();
    // Collected first: the read guard must not be held across the Hub's answers.
    let groups = groups(&inner.shared.read());
    for ((repo, revision), paths) in groups {
        report.repos += 1;
        let outcome = repo_revision(hub, &repo, &revision).await;
        if let Err(e) = &outcome {
            report.errors.insert(repo.clone(), e.to_string());
        }
        // The owner of the index judges each file by the answer.
        report.updates += inner
            .owner
            .ask(|done| Msg::Checked {
                repo,
                paths,
                outcome: Box::new(outcome),
                has_token: hub.has_token(),
                done,
            })
            .await??;
    }
    estimate(inner).await;
    inner.owner.send(Msg::Announce)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    inner.shared.store.put_last_update_check(now.as_secs())?;
    tracing::info!(
        repos = report.repos,
        updates = report.updates,
        errors = report.errors.len(),
        "library update check done"
    );
    Ok(report)
}

/// Tells what each update found will fetch (`update.fetch_bytes`), where not told yet.
async fn estimate(inner: &Inner) {
    let Some(engine) = &inner.engine else {
        return;
    };
    let pending: Vec<(String, Record, Update)> = inner
        .shared
        .read()
        .iter()
        .filter_map(|(path, r)| {
            let u = r.update.clone().filter(|u| u.fetch_bytes.is_none())?;
            Some((path.clone(), r.clone(), u))
        })
        .collect();
    for (path, r, update) in pending {
        let (Some(repo), Some(commit), Some(sha256)) = (&r.repo, &r.revision, &r.sha256) else {
            continue;
        };
        let Some(file) = path.strip_prefix(&format!("{repo}/")) else {
            continue;
        };
        let old = crate::engine::OnDisk {
            path: &path,
            repo,
            commit,
            file,
            sha256,
            size: r.size,
        };
        engine.map_chunks_of(&inner.hub, &old).await;
        let wanted = (repo.as_str(), update.revision.as_str(), file);
        let Some(cost) = engine
            .fetch_cost(&inner.hub, &inner.shared.root, wanted, update.size)
            .await
        else {
            continue;
        };
        tracing::info!(%path, fetch_bytes = cost, size = update.size, "an update's cost is known");
        let _ = inner.owner.send(Msg::Estimated {
            path,
            sha256: update.sha256,
            fetch_bytes: cost,
        });
    }
}

/// Hub files by (repo, the revision asked for): one request answers each group.
fn groups(index: &Index) -> BTreeMap<(String, String), Vec<String>> {
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (path, r) in index.iter() {
        if let (Some(repo), Some(_), Some(_)) = (&r.repo, &r.revision, &r.sha256) {
            let revision = r.asked_revision.clone().unwrap_or_else(|| "main".into());
            groups
                .entry((repo.clone(), revision))
                .or_default()
                .push(path.clone());
        }
    }
    groups
}

/// Model info, waiting out 429s (Retry-After or RateLimit) and network failures.
async fn repo_revision(
    hub: &crate::hub::HubClient,
    repo: &str,
    revision: &str,
) -> Result<RepoRevision, HubError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match hub.repo_revision(repo, revision).await {
            Err(e) if e.is_transient() && tries < TRIES => {
                let wait = e.retry_after().unwrap_or(DEFAULT_WAIT * tries);
                if wait > MAX_WAIT {
                    return Err(e);
                }
                tracing::info!(%repo, wait_secs = wait.as_secs_f64(), error = %e, "update check waits");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// What the Hub's answer means for one file: newer, the same, or cannot tell.
pub(super) fn judge(
    r: &mut Record,
    path: &str,
    repo: &str,
    outcome: &Result<RepoRevision, HubError>,
    has_token: bool,
) {
    let info = match outcome {
        Ok(info) => info,
        Err(HubError::NotFound(_)) => {
            r.update_error = Some(format!(
                "{repo} is gone from the Hub (deleted, renamed or private)"
            ));
            return;
        }
        Err(HubError::Unauthorized(_)) => {
            r.update_error = Some(format!(
                "{repo} is gated or private now: set HF_TOKEN to check it"
            ));
            return;
        }
        Err(e) => {
            r.update_error = Some(format!("the check could not reach {repo}: {e}"));
            return;
        }
    };
    let file = path.strip_prefix(&format!("{repo}/")).unwrap_or(path);
    r.update_error = (info.gated && !has_token)
        .then(|| format!("{repo} is gated now: set HF_TOKEN to download from it"));
    match info.files.iter().find(|f| f.path == file) {
        None => {
            r.update = None;
            r.update_error = Some(format!("{file} is no longer in {repo} at {}", info.commit));
        }
        Some(f) if f.sha256.is_some() && f.sha256 == r.sha256 => {
            r.update = None;
            r.same_at = Some(info.commit.clone());
        }
        Some(f) => {
            // The same update as last time keeps what it was found to cost.
            let known = r
                .update
                .as_ref()
                .and_then(|u| (f.sha256.as_deref() == Some(&u.sha256)).then_some(u.fetch_bytes)?);
            r.update = f.sha256.clone().map(|sha256| Update {
                revision: info.commit.clone(),
                sha256,
                size: f.size,
                fetch_bytes: known,
            });
        }
    }
}

/// The download that fetches the newer file into the same path; the old file stays
/// until the new one is verified and renamed over it.
pub(super) fn newer_download(
    hub: &crate::hub::HubClient,
    path: &str,
    r: &Record,
) -> Result<NewDownload, LibraryError> {
    let (Some(update), Some(repo)) = (&r.update, &r.repo) else {
        return Err(LibraryError::NoUpdate(path.to_owned()));
    };
    let file = path
        .strip_prefix(&format!("{repo}/"))
        .ok_or_else(|| LibraryError::NoUpdate(path.to_owned()))?;
    let revision = r.asked_revision.clone().unwrap_or_else(|| "main".into());
    let wanted = crate::intake::hub::Wanted {
        repo,
        file,
        revision: &revision,
        commit: Some(update.revision.clone()),
        sha256: Some(update.sha256.clone()),
    };
    let start = crate::intake::hub::Start {
        paused: false,
        overwrite: true,
    };
    crate::intake::hub::new_download(hub, wanted, start)
        .map_err(|why| LibraryError::BadPath(path.to_owned(), why.to_string()))
}

/// Checks every `hours`, counted from the last check (kept across restarts). Holds the
/// library weakly while it sleeps: a stopped service's store (and sled's lock on it)
/// must not be kept alive by a timer.
pub(super) async fn watch(library: std::sync::Weak<Inner>, hours: u64) {
    let every = Duration::from_secs(hours.saturating_mul(3600));
    loop {
        let Some(last) = library
            .upgrade()
            .map(|i| i.shared.store.last_update_check())
        else {
            return;
        };
        let last = last.ok().flatten().unwrap_or(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let due = Duration::from_secs(last).saturating_add(every);
        // A minute after start-up at the earliest: the first scan goes first.
        let wait = due.saturating_sub(now).max(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
        let Some(inner) = library.upgrade() else {
            return;
        };
        let checked = {
            let _one = inner.checking.lock().await;
            check(&inner).await
        };
        drop(inner);
        if let Err(e) = checked {
            tracing::warn!(error = %e, "the library update check failed");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}
