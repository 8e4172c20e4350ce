//! Asking again for what you have, and the same name from another source (api.md,
//! "The first hour"). Before a door's downloads reach the supervisor, each is compared
//! with the downloads that hold (or held) its path:
//!
//! - the same source, live: that download is the answer (`already`);
//! - the same source, completed, its file on disk: the source is checked once (a Hub
//!   file: the sha256 and commit the Hub reports for the revision asked; a URL: one
//!   `HEAD`, compared with the validators the file was fetched under). The same file:
//!   that download is the answer; changed: the new version is queued under the same
//!   name with `overwrite`, which keeps the old file until the new one is verified and
//!   renamed over it (as the library's updates do);
//! - another source, for a URL download named after its URL: the first free name
//!   `stem (N).ext`, as browsers name a second file of the same name.
//!
//! The supervisor still judges every claim when the downloads are added: a name taken
//! between the look and the add (two adds at once) is looked at again.

use std::path::PathBuf;

use serde::Serialize;

use super::handle::QueueHandle;
use super::queue_error::QueueError;
use super::supervisor::follow::{Holder, Holders};
use crate::queue::lifecycle::State;
use crate::queue::model::{DownloadView, NewDownload, Source};

/// The highest `N` of `stem (N).ext` tried before the name is refused as taken.
const MAX_NUMBER: u32 = 999;
/// Looks again after a name was taken between the look and the add.
const TRIES: u32 = 8;

/// One download as a door asks for it.
#[derive(Debug, Clone)]
pub struct Asked {
    pub new: NewDownload,
    /// The name was taken from the URL, not given: another source's file of that name
    /// makes it `stem (N).ext` instead of a conflict.
    pub auto_name: bool,
}

impl Asked {
    /// A download whose name was given (or is a Hub file's own): never renamed.
    pub fn named(new: NewDownload) -> Asked {
        Asked {
            new,
            auto_name: false,
        }
    }
}

/// A download as the answer to an add: a new one, or the one that already holds what
/// was asked for (`already`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Added {
    #[serde(flatten)]
    pub view: DownloadView,
    pub already: bool,
}

/// What becomes of one asked download. Unboxed: one per item asked, for the
/// length of one request.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Already(DownloadView),
    Add(NewDownload),
}

/// What a look at one name found for an asked download.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    Plan(Plan),
    /// Another source holds the name (or a file we did not write, or, for a numbered
    /// name, a stray `.part`): the download as it was asked.
    Taken(NewDownload),
}

/// What is at one name: the downloads that hold or held it, and what is on disk.
struct Look {
    holders: Vec<Holder>,
    /// The file under the name (its identity), if any.
    file: Option<[u64; 2]>,
    part: bool,
}

impl QueueHandle {
    /// Adds what is asked, all or none, in the order given; what is already here (or
    /// live) is answered as it is (see the module's text).
    pub async fn add_asked(&self, items: Vec<Asked>) -> Result<Vec<Added>, QueueError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let plans = self.plans(&items).await?;
            let news: Vec<NewDownload> = plans
                .iter()
                .filter_map(|p| match p {
                    Plan::Add(n) => Some(n.clone()),
                    Plan::Already(_) => None,
                })
                .collect();
            let added = if news.is_empty() {
                Vec::new()
            } else {
                match self.add(news).await {
                    Ok(views) => views,
                    // Taken since the look (another add at once): look again.
                    Err(QueueError::NameTaken(e)) if tries < TRIES && e.may_change() => {
                        tracing::debug!(error = %e, "a name was taken meanwhile; looking again");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            return answers(plans, added);
        }
    }

    /// Adds one asked download.
    pub async fn add_asked_one(&self, item: Asked) -> Result<Added, QueueError> {
        self.add_asked(vec![item])
            .await?
            .pop()
            .ok_or_else(|| QueueError::Unavailable("nothing was added".into()))
    }

    /// Each item's plan. The first look at every name is one question to the queue and
    /// one pass over the disk (a batch of 10,000 asks no more); only a name taken by
    /// another source is looked at again, numbered.
    async fn plans(&self, items: &[Asked]) -> Result<Vec<Plan>, QueueError> {
        let paths = items.iter().map(|a| a.new.path.clone()).collect();
        let looks = self.look(paths).await?;
        let mut plans = Vec::with_capacity(items.len());
        for (asked, look) in items.iter().zip(looks) {
            let new = asked.new.clone();
            if new.overwrite {
                plans.push(Plan::Add(new));
                continue;
            }
            let plan = match self.judge(new, look, true).await {
                Verdict::Plan(plan) => plan,
                Verdict::Taken(new) if asked.auto_name => self.numbered_plan(new).await?,
                Verdict::Taken(new) => Plan::Add(new),
            };
            plans.push(plan);
        }
        Ok(plans)
    }

    /// The first free `stem (N).ext` for `new`, or the same source found under one.
    async fn numbered_plan(&self, mut new: NewDownload) -> Result<Plan, QueueError> {
        let (first_path, first_name) = (new.path.clone(), new.file_name.clone());
        for n in 1..=MAX_NUMBER {
            let Some((path, name)) = numbered(&first_path, &first_name, n) else {
                break;
            };
            (new.path, new.file_name) = (path, name);
            let mut look = self.look(vec![new.path.clone()]).await?;
            let Some(look) = look.pop() else {
                break;
            };
            match self.judge(new, look, false).await {
                Verdict::Plan(plan) => return Ok(plan),
                Verdict::Taken(back) => new = back,
            }
        }
        // No free name: the supervisor refuses the one asked for, saying by whom.
        (new.path, new.file_name) = (first_path, first_name);
        Ok(Plan::Add(new))
    }

    /// What to do with `new` at its name as `look` found it. `first`: the name asked
    /// for, not a numbered one (whose stray `.part` makes it taken).
    async fn judge(&self, new: NewDownload, look: Look, first: bool) -> Verdict {
        // The name's owner: the live download, else the completed one whose file is
        // there (a failed update or overwrite after it owns nothing), else the newest.
        let owns_file = |h: &&Holder| {
            h.record.state == State::Completed
                && h.record
                    .completed_as
                    .is_some_and(|id| look.file == Some(id))
        };
        let owner = look
            .holders
            .iter()
            .find(|h| h.live)
            .or_else(|| look.holders.iter().find(owns_file))
            .or_else(|| look.holders.first());
        if let Some(h) = owner.filter(|h| same_source(h, &new)) {
            if h.live {
                return Verdict::Plan(Plan::Already(h.view.clone()));
            }
            let ours = h.record.completed_as.is_none_or(|id| look.file == Some(id));
            return match look.file {
                // Finished without its file: the name is free for it again.
                None => Verdict::Plan(Plan::Add(new)),
                Some(_) if h.record.state == State::Completed && ours => {
                    Verdict::Plan(self.recheck(h, new).await)
                }
                // Someone else's file under its name.
                Some(_) => Verdict::Taken(new),
            };
        }
        // A `.part` that no download of ours had is another program's file being
        // written; a numbered name is never one with a `.part` beside it.
        let part_taken = look.part && (!first || look.holders.is_empty());
        let free = owner.is_none_or(|h| !h.live) && look.file.is_none() && !part_taken;
        if free {
            Verdict::Plan(Plan::Add(new))
        } else {
            Verdict::Taken(new)
        }
    }

    /// Each path's holders (one question to the queue) and what is on disk there (one
    /// blocking task).
    async fn look(&self, paths: Vec<String>) -> Result<Vec<Look>, QueueError> {
        let holders = self.addr().send(Holders(paths.clone())).await?;
        let root: PathBuf = self.download_dir().to_owned();
        let disk = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| {
                    let file = root.join(p);
                    let identity = file
                        .symlink_metadata()
                        .ok()
                        .map(|m| crate::files::identity(&m));
                    let part = crate::files::part_path(&file).symlink_metadata().is_ok();
                    (identity, part)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(holders
            .into_iter()
            .zip(disk)
            .map(|(holders, (file, part))| Look {
                holders,
                file,
                part,
            })
            .collect())
    }

    /// A completed download of the same source whose file is on disk: the same file
    /// upstream (the answer is that download), or a newer one (queued as an update).
    /// When the source cannot tell, the file on disk stands: asking again is no
    /// reason to give up a verified file, and the log says why it was not checked.
    async fn recheck(&self, h: &Holder, mut new: NewDownload) -> Plan {
        let checked = match new.source.clone() {
            Source::Hub {
                repo,
                revision,
                file,
                ..
            } => {
                self.hub_changed(h, &mut new, (&repo, &revision, &file))
                    .await
            }
            Source::Url => self.url_changed(h, &new).await,
        };
        match checked {
            Ok(false) => {
                tracing::info!(download_id = %h.record.id, path = %new.path, "asked again: up to date");
                Plan::Already(h.view.clone())
            }
            Ok(true) => {
                tracing::info!(download_id = %h.record.id, path = %new.path, "asked again: the source changed; fetching the new version");
                new.overwrite = true;
                Plan::Add(new)
            }
            Err(why) => {
                tracing::warn!(download_id = %h.record.id, path = %new.path, error = %why, "asked again: the source cannot be checked; keeping the file on disk");
                Plan::Already(h.view.clone())
            }
        }
    }

    /// Whether the Hub now has another file for the revision asked; when it has, `new`
    /// is pinned to its commit and sha256.
    async fn hub_changed(
        &self,
        h: &Holder,
        new: &mut NewDownload,
        (repo, revision, file): (&str, &str, &str),
    ) -> Result<bool, String> {
        let asked_commit = match &new.source {
            Source::Hub { commit, .. } => commit.clone(),
            Source::Url => None,
        };
        // A listing already told the sha256 and the commit (a quantization's files):
        // no second request.
        let (sha256, commit) = match (&new.sha256, asked_commit) {
            (Some(s), Some(c)) => (Some(s.clone()), Some(c)),
            _ => {
                let r = self
                    .hub()
                    .resolve(repo, revision, file)
                    .await
                    .map_err(|e| e.to_string())?;
                (r.sha256, r.commit)
            }
        };
        let had_commit = match &h.record.source {
            Source::Hub { commit, .. } => commit.clone(),
            Source::Url => None,
        };
        let changed = match (&sha256, &h.record.sha256) {
            (Some(now), Some(had)) => now != had,
            // A small file kept in git has no sha256 on the Hub: its commit tells.
            _ => matches!((&commit, &had_commit), (Some(now), Some(had)) if now != had),
        };
        if changed {
            if let Some(c) = &commit {
                new.url = self
                    .hub()
                    .resolve_url(repo, c, file)
                    .map_err(|e| e.to_string())?
                    .to_string();
                if let Source::Hub { commit: pinned, .. } = &mut new.source {
                    *pinned = Some(c.clone());
                }
            }
            new.sha256 = new.sha256.take().or(sha256);
        }
        Ok(changed)
    }

    /// Whether the file at the URL changed since it was fetched, by one `HEAD` with the
    /// validators it was fetched under: `304`, else its ETag, else its Last-Modified,
    /// else its length. A digest asked for decides alone.
    async fn url_changed(&self, h: &Holder, new: &NewDownload) -> Result<bool, String> {
        if let (Some(want), Some(had)) = (&new.sha256, &h.record.sha256) {
            return Ok(want != had);
        }
        let had = h.record.validators.clone().unwrap_or_default();
        let probe = self
            .engine()
            .probe(&new.url, &had)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(changed) = probe.changed_since(&had) {
            return Ok(changed);
        }
        Ok(matches!((probe.length, h.record.bytes_total), (Some(a), Some(b)) if a != b))
    }
}

/// The answer of each plan, in the order asked: the one found, or the one added.
fn answers(plans: Vec<Plan>, added: Vec<DownloadView>) -> Result<Vec<Added>, QueueError> {
    let mut added = added.into_iter();
    plans
        .into_iter()
        .map(|p| match p {
            Plan::Already(view) => Ok(Added {
                view,
                already: true,
            }),
            Plan::Add(_) => added
                .next()
                .map(|view| Added {
                    view,
                    already: false,
                })
                .ok_or_else(|| QueueError::Unavailable("fewer downloads added".into())),
        })
        .collect()
}

/// Whether a download fetched what `new` asks for: the same Hub file, or the same URL.
fn same_source(h: &Holder, new: &NewDownload) -> bool {
    match (&h.record.source, &new.source) {
        (
            Source::Hub {
                repo: a, file: fa, ..
            },
            Source::Hub {
                repo: b, file: fb, ..
            },
        ) => a == b && fa == fb,
        (Source::Url, Source::Url) => h.record.url == new.url,
        _ => false,
    }
}

/// `path` with its file name `name` numbered `n` as browsers number a second file of
/// a name: `dir/x (1).gguf`; `None` when that is no valid name (too long).
pub fn numbered(path: &str, name: &str, n: u32) -> Option<(String, String)> {
    let dir = path.strip_suffix(name)?;
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let numbered = format!("{stem} ({n}){ext}");
    crate::files::validate_file_name(&numbered).ok()?;
    Some((format!("{dir}{numbered}"), numbered))
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn a_second_file_of_a_name_is_numbered_like_a_browser_does() {
        let n = |p, f, n| numbered(p, f, n).map(|(p, f)| format!("{p}|{f}"));
        assert_eq!(
            n("x.gguf", "x.gguf", 1).as_deref(),
            Some("x (1).gguf|x (1).gguf")
        );
        assert_eq!(
            n("a/b/x.gguf", "x.gguf", 12).as_deref(),
            Some("a/b/x (12).gguf|x (12).gguf")
        );
        assert_eq!(n("x", "x", 2).as_deref(), Some("x (2)|x (2)"));
        assert_eq!(
            n("x.tar.gz", "x.tar.gz", 1).as_deref(),
            Some("x.tar (1).gz|x.tar (1).gz")
        );
        // A name at the length limit has no room for a number.
        let long = format!("{}.gguf", "a".repeat(245));
        assert!(crate::files::validate_file_name(&long).is_ok());
        assert_eq!(n(&long, &long, 1), None);
        // The path must end with the name.
        assert_eq!(n("a/y.gguf", "x.gguf", 1), None);
    }
}
