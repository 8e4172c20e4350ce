//! The queue as data: every download record, the order of those waiting for a slot,
//! their positions, pages of the list, the history, and who holds which name.
//!
//! Pure bookkeeping, no I/O: the supervisor persists what changes and asks the file
//! system (off its own thread) whether a name is on disk before it asks [`Queue::claim`].

use std::collections::{BTreeMap, HashMap};

use crate::queue::lifecycle::{State, Transition};
use crate::queue::model::{Download, DownloadId};

/// Gap between the order keys of consecutive downloads, so that a move can usually
/// slot a download between two others without renumbering the queue.
pub const ORDER_STEP: u64 = 1 << 20;

/// Why a name cannot be given to a new download.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameTaken {
    #[error("{path} is taken by download {by} ({})", state.as_str())]
    Live {
        path: String,
        by: DownloadId,
        state: State,
    },
    #[error("{path} is taken by download {by}; send \"overwrite\": true to replace it")]
    Completed { path: String, by: DownloadId },
    #[error("{path} already exists in download_dir; send \"overwrite\": true to replace it")]
    OnDisk { path: String },
    #[error("{path} is being removed; try again in a moment")]
    BeingRemoved { path: String },
    #[error("{path} is asked for twice")]
    Twice { path: String },
    #[error("{path} is now taken by download {by} ({}); add it again to replace it", state.as_str())]
    Superseded {
        path: String,
        by: DownloadId,
        state: State,
    },
}

impl NameTaken {
    /// Whether the name's holders may have changed since a door looked at them (an add
    /// at the same moment): worth a second look, unlike a name asked for twice.
    pub fn may_change(&self) -> bool {
        matches!(
            self,
            NameTaken::Live { .. } | NameTaken::Completed { .. } | NameTaken::OnDisk { .. }
        )
    }
}

/// One page of the list: each download with its queue position.
pub struct Page<'a> {
    pub items: Vec<(&'a Download, Option<usize>)>,
    /// The id to pass as `after` for the next page.
    pub next: Option<DownloadId>,
}

/// Every record, and the order of the waiting ones.
#[derive(Default)]
pub struct Queue {
    /// Boxed: a map sized for 10,000 records would otherwise reserve a slot of a whole
    /// record for every empty bucket too.
    records: HashMap<DownloadId, Box<Download>>,
    /// Ids by path, so that name checks do not scan every record.
    by_path: HashMap<String, Vec<DownloadId>>,
    /// Queued downloads by order key: exactly the records whose state is `queued`.
    waiting: BTreeMap<u64, DownloadId>,
    next_order: u64,
}

impl Queue {
    /// A queue of stored records, each keeping its order key.
    pub fn load(records: Vec<Download>) -> Queue {
        let mut q = Queue::default();
        // The records first, the indexes after the loaded vector is gone: building all
        // at once raised the start-up peak by a quarter of a KiB per download.
        q.records.reserve(records.len());
        for d in records {
            q.next_order = q.next_order.max(d.order + ORDER_STEP);
            q.records.insert(d.id.clone(), Box::new(d));
        }
        let Queue {
            records,
            by_path,
            waiting,
            ..
        } = &mut q;
        for d in records.values() {
            index(by_path, waiting, d);
        }
        q
    }

    fn insert(&mut self, d: Download) {
        index(&mut self.by_path, &mut self.waiting, &d);
        self.records.insert(d.id.clone(), Box::new(d));
    }

    /// Adds a new download at the end of the queue.
    pub fn push(&mut self, mut d: Download) {
        d.order = self.next_order;
        self.next_order += ORDER_STEP;
        self.insert(d);
    }

    /// Forgets a download.
    pub fn remove(&mut self, id: &str) -> Option<Download> {
        let d = *self.records.remove(id)?;
        if let Some(ids) = self.by_path.get_mut(&d.path) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_path.remove(&d.path);
            }
        }
        if self.waiting.get(&d.order).is_some_and(|w| w == id) {
            self.waiting.remove(&d.order);
        }
        Some(d)
    }

    pub fn get(&self, id: &str) -> Option<&Download> {
        self.records.get(id).map(Box::as_ref)
    }

    /// For fields other than `state`, `order` and `path`, which the queue keeps
    /// indexed: change those through [`Queue::enter`] and [`Queue::move_to`].
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Download> {
        self.records.get_mut(id).map(Box::as_mut)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Download> {
        self.records.values().map(Box::as_ref)
    }

    /// How many wait for a slot.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Carries out a transition of one download, keeping the waiting line in step (a
    /// delete takes a queued one out of it at once: see `Transition::forgets`).
    pub fn enter(&mut self, id: &str, t: &Transition, now: &str) {
        let Some(d) = self.records.get_mut(id) else {
            return;
        };
        d.enter(t, now);
        if t.leaves_queue() {
            self.waiting.remove(&d.order);
        } else if t.joins_queue() {
            self.waiting.insert(d.order, d.id.clone());
        }
    }

    /// The first waiting download that `skip` does not rule out.
    pub fn next_waiting(&self, skip: impl Fn(&str) -> bool) -> Option<DownloadId> {
        self.waiting.values().find(|id| !skip(id)).cloned()
    }

    /// The queue position of a waiting download.
    pub fn position(&self, d: &Download) -> Option<usize> {
        (d.state == State::Queued).then(|| self.waiting.range(..d.order).count())
    }

    /// Queue positions of every waiting download, computed once for a batch of views.
    pub fn positions(&self) -> HashMap<&str, usize> {
        self.waiting
            .values()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect()
    }

    /// Every download: live and queued in queue order, then the history.
    pub fn ordered(&self) -> Vec<&Download> {
        let mut live: Vec<&Download> = self.iter().filter(|d| !d.state.is_finished()).collect();
        live.sort_unstable_by_key(|d| d.order);
        live.extend(self.history(None, usize::MAX));
        live
    }

    /// Finished, failed and cancelled downloads (or those of one state), newest first.
    pub fn history(&self, state: Option<State>, limit: usize) -> Vec<&Download> {
        let mut done: Vec<&Download> = self
            .iter()
            .filter(|d| d.state.is_finished() && state.is_none_or(|s| s == d.state))
            .collect();
        done.sort_unstable_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
        done.truncate(limit);
        done
    }

    /// `limit` downloads of [`Queue::ordered`] after the one with id `after`,
    /// optionally of one state. `Err` names an unknown `after`.
    pub fn page(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<'_>, String> {
        let all = self.ordered();
        let start = match after {
            None => 0,
            Some(a) => {
                all.iter()
                    .position(|d| d.id == a)
                    .ok_or_else(|| a.to_owned())?
                    + 1
            }
        };
        // Queue positions count every queued download, not just this page's.
        let mut position = all[..start]
            .iter()
            .filter(|d| d.state == State::Queued)
            .count();
        let mut items = Vec::new();
        let mut more = false;
        for d in &all[start..] {
            let pos = (d.state == State::Queued).then(|| {
                position += 1;
                position - 1
            });
            if state.is_some_and(|s| s != d.state) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((*d, pos));
        }
        let next = more
            .then(|| items.last().map(|(d, _)| d.id.clone()))
            .flatten();
        Ok(Page { items, next })
    }

    /// Every record with this path.
    pub fn with_path<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Download> + 'a {
        self.by_path
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
    }

    /// Whether a new download may take `path`. A name is taken by a live download
    /// (or one whose engine is still `stopping`), or by a file on disk unless the
    /// request says `overwrite`; a finished download whose file is gone holds nothing.
    pub fn claim(
        &self,
        path: &str,
        overwrite: bool,
        on_disk: bool,
        stopping: impl Fn(&str) -> bool,
    ) -> Result<(), NameTaken> {
        let holders = || self.with_path(path);
        if let Some(d) = holders().find(|d| !d.state.is_finished() || stopping(&d.id)) {
            return Err(NameTaken::Live {
                path: path.to_owned(),
                by: d.id.clone(),
                state: d.state,
            });
        }
        if !on_disk || overwrite {
            return Ok(());
        }
        Err(match holders().find(|d| d.state == State::Completed) {
            Some(d) => NameTaken::Completed {
                path: path.to_owned(),
                by: d.id.clone(),
            },
            None => NameTaken::OnDisk {
                path: path.to_owned(),
            },
        })
    }

    /// Another download that holds `path` instead of `id`: a live one (writing its
    /// `.part`), or a newer one (whose file replaced this one's).
    pub fn other_claim(&self, id: &str, path: &str) -> Option<&Download> {
        self.with_path(path)
            .find(|d| d.id != id && (!d.state.is_finished() || d.id.as_str() > id))
    }

    /// Moves a waiting download to queue position `at` (clamped to the end). Returns
    /// the ids whose order key changed, to persist.
    pub fn move_to(&mut self, id: &str, at: usize) -> Vec<DownloadId> {
        let Some(old) = self.get(id).map(|d| d.order) else {
            return Vec::new();
        };
        self.waiting.remove(&old);
        let keys: Vec<u64> = self.waiting.keys().copied().collect();
        let at = at.min(keys.len());
        let before = at.checked_sub(1).map(|i| keys[i]);
        let after = keys.get(at).copied();
        let slot = match (before, after) {
            (None, None) => Some(old),
            (None, Some(a)) => a
                .checked_sub(ORDER_STEP)
                .or_else(|| (a > 0).then_some(a / 2)),
            (Some(b), None) => Some(b + ORDER_STEP),
            (Some(b), Some(a)) => (a - b > 1).then(|| b + (a - b) / 2),
        };
        match slot.filter(|o| !self.waiting.contains_key(o)) {
            Some(order) => {
                self.set_order(id, order);
                vec![id.to_owned()]
            }
            None => self.renumber_with(id, at),
        }
    }

    fn set_order(&mut self, id: &str, order: u64) {
        if let Some(d) = self.records.get_mut(id) {
            d.order = order;
            if d.state == State::Queued {
                self.waiting.insert(order, d.id.clone());
            }
        }
    }

    /// No gap left between two order keys: spaces every live download out again, with
    /// `id` at queue position `at`.
    fn renumber_with(&mut self, id: &str, at: usize) -> Vec<DownloadId> {
        let mut live: Vec<(u64, DownloadId, bool)> = self
            .iter()
            .filter(|d| !d.state.is_finished() && d.id != id)
            .map(|d| (d.order, d.id.clone(), d.state == State::Queued))
            .collect();
        live.sort_unstable();
        // Before the `at`-th queued one (or at the end).
        let index = live
            .iter()
            .enumerate()
            .filter(|(_, (_, _, queued))| *queued)
            .nth(at)
            .map_or(live.len(), |(i, _)| i);
        live.insert(index, (0, id.to_owned(), true));
        self.waiting.clear();
        let ids: Vec<DownloadId> = live.into_iter().map(|(_, id, _)| id).collect();
        for (n, i) in ids.iter().enumerate() {
            self.set_order(i, (n as u64 + 1) * ORDER_STEP);
        }
        self.next_order = (ids.len() as u64 + 1) * ORDER_STEP;
        ids
    }
}

/// Adds a record to the path index (one id per path is the rule: room for one) and,
/// when queued, to the waiting line.
fn index(
    by_path: &mut HashMap<String, Vec<DownloadId>>,
    waiting: &mut BTreeMap<u64, DownloadId>,
    d: &Download,
) {
    if d.state == State::Queued {
        waiting.insert(d.order, d.id.clone());
    }
    by_path
        .entry(d.path.clone())
        .or_insert_with(|| Vec::with_capacity(1))
        .push(d.id.clone());
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
