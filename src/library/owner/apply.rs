//! What the owner does with each message: the records it makes of a scan, a completed
//! download, a digest, an update check's answer, and a delete.

use std::collections::{BTreeMap, BTreeSet};

use super::Owner;
use crate::files::{Kind, Stat};
use crate::hub::{HubError, RepoRevision};
use crate::library::record::{Origin, Record};
use crate::library::scan::{self, Completions, Seen};
use crate::library::{dedupe, publish, updates, LibraryError};
use crate::queue::model::Download;
use crate::queue::store::StoreError;

impl Owner {
    /// Brings the whole index up to what a scan found; how many files it holds.
    ///
    /// What a download vouched for (its sha256, repo, commit, [`Record::ours`]) is taken
    /// only when it completes ([`Owner::completed`]), tied to the file's identity then;
    /// a scan never gives it to a path by name: a file that is not that identity any
    /// more (swapped by another program, edited in place, or fetched there again by
    /// something else) is read as a hand-placed file.
    /// The exception: a file that is still the very file a completed download renamed
    /// into place (its inode, mtime and size, see [`Completions`]) is that download's.
    pub(super) fn read(
        &mut self,
        seen: Vec<(String, Seen)>,
        completions: &Completions,
    ) -> Result<(), LibraryError> {
        for (path, seen) in seen {
            let origin = seen
                .fresh
                .as_ref()
                .and_then(|r| completions.origin(&path, (r.ino, r.mtime_ns, r.size)));
            self.refresh(&path, seen, origin.as_ref(), origin.is_some())?;
        }
        Ok(())
    }

    /// The end of a scan: `known` (found as the index holds them) are refreshed, `read`
    /// were already; every other file of the index is gone.
    /// A file known as put there by hand that is still the very file a completed
    /// download renamed into place (its record of the completion was lost) becomes
    /// that download's.
    pub(super) fn scanned(
        &mut self,
        known: BTreeMap<String, Stat>,
        read: &BTreeSet<String>,
        completions: &Completions,
    ) -> Result<usize, LibraryError> {
        let stale: Vec<String> = self
            .shared
            .read()
            .iter()
            .filter(|(p, _)| !known.contains_key(p.as_str()) && !read.contains(p.as_str()))
            .map(|(p, _)| p.clone())
            .collect();
        for path in &stale {
            self.forget(path)?;
        }
        let files = known.len() + read.len();
        for (path, stat) in known {
            let origin = completions.origin(&path, (stat.ino, stat.mtime_ns, stat.size));
            self.refresh(
                &path,
                Seen { stat, fresh: None },
                origin.as_ref(),
                origin.is_some(),
            )?;
        }
        tracing::info!(files, dropped = stale.len(), "library scanned");
        Ok(files)
    }

    /// The file a download just completed: written by this service.
    pub(super) fn completed(&mut self, d: &Download) -> Result<(), LibraryError> {
        let (dir, name) = self.shared.locate(&d.path)?;
        if let Some(stat) = dir.stat(&name)?.filter(|st| st.kind == Kind::File) {
            let seen = Seen { stat, fresh: None };
            self.refresh(&d.path, seen, Some(&Origin::of_record(d)), true)?;
        }
        Ok(())
    }

    /// Reads a file again when it changed (or is new), and finishes what is owed: its
    /// digest, its link to an identical file, its publication. `completed`: a download
    /// of the queue has just completed it (the file is ours, see [`Record::ours`]).
    fn refresh(
        &mut self,
        path: &str,
        seen: Seen,
        origin: Option<&Origin>,
        completed: bool,
    ) -> Result<(), LibraryError> {
        let st = &seen.stat;
        let known = self.shared.read().get(path).cloned();
        let (mut record, replaced) = match known {
            Some(r) if r.matches(st) || self.still(path, &r) => (r, None),
            // The scan saw the file, but it left the index since (a delete): not again.
            None if seen.fresh.is_none() && !completed => return Ok(()),
            earlier => {
                let fresh = seen
                    .fresh
                    .unwrap_or_else(|| scan::read_record(&self.shared, path, st));
                match earlier {
                    Some(r) if r.same_file(&fresh) => (r, None),
                    earlier => (fresh, earlier),
                }
            }
        };
        if let (Some(earlier), false) = (&replaced, completed) {
            // Not the file that was read (or verified) any more, and no download of ours
            // put it there: what was published of the earlier one goes (a blob named by
            // its digest must not hold other bytes, nor stand for a file we no longer
            // have), and the new one starts as a hand-placed file.
            tracing::info!(%path, "a library file changed on disk; read again as a file put by hand");
            publish::unpublish(
                &self.shared.folders,
                &earlier.published,
                &self.shared.identity(path, earlier),
            );
        }
        if let Some(o) = origin {
            scan::adopt(&mut record, o);
            if completed && o.bytes == Some(record.size) {
                record.ours = true;
            }
        }
        let unhashed = record.sha256.is_none();
        let mut siblings = Vec::new();
        if !unhashed {
            self.dedupe(path, &mut record);
            siblings = publish::publish(&self.shared, path, &mut record, replaced.as_ref());
        }
        if self.shared.read().get(path) != Some(&record) {
            self.put(path, record.clone())?;
        }
        self.put_siblings(siblings);
        // Only once the record is in the index: the hasher hashes what the index holds.
        if unhashed {
            self.hasher.enqueue(path);
        }
        Ok(())
    }

    /// Links `path` to an identical file (see [`dedupe::dedupe`]); when that changed
    /// the file of a download, the queue records its new identity, so that asking
    /// again for that download's source finds the file still its own.
    fn dedupe(&self, path: &str, record: &mut Record) {
        let before = (record.ino, record.mtime_ns);
        dedupe::dedupe(&self.shared, path, record);
        if (record.ino, record.mtime_ns) == before {
            return;
        }
        if let (Some(id), Some(queue)) = (&record.download_id, &self.queue) {
            // The same wrapping as `files::identity`.
            queue.note_identity(id, [record.ino, record.mtime_ns as u64]);
        }
    }

    /// The file at `path` is, now, the one `record` was read at (the scan's look at it
    /// may be older than a change the owner made since: a link to an identical file).
    fn still(&self, path: &str, record: &Record) -> bool {
        let now = self
            .shared
            .locate(path)
            .and_then(|(dir, name)| dir.stat(name));
        now.ok().flatten().is_some_and(|st| record.matches(&st))
    }

    /// Records of other files that a publication changed (their HF cache entries).
    fn put_siblings(&mut self, siblings: Vec<(String, Record)>) {
        for (p, r) in siblings {
            if let Err(e) = self.put(&p, r) {
                tracing::warn!(path = %p, error = %e, "cannot record an HF cache entry");
            }
        }
    }

    /// The hasher's digest of `path`: taken while the record is still of the file that
    /// was hashed; then the file is linked to an identical one and published.
    pub(super) fn hashed(&mut self, path: &str, before: &Record, digest: String) {
        let Some(mut record) = self.shared.read().get(path).cloned() else {
            return;
        };
        if !record.same_file(before) {
            return;
        }
        if let (Some(id), Some(queue)) = (&record.download_id, &self.queue) {
            queue.note_digest(id, &digest);
        }
        record.sha256 = Some(digest);
        self.dedupe(path, &mut record);
        let siblings = publish::publish(&self.shared, path, &mut record, None);
        if let Err(e) = self.put(path, record) {
            tracing::warn!(%path, error = %e, "cannot store a library digest");
        }
        self.put_siblings(siblings);
    }

    /// An update check's answer for the files `paths` of `repo`: how many have a newer file.
    pub(super) fn checked(
        &mut self,
        repo: &str,
        paths: &[String],
        outcome: &Result<RepoRevision, HubError>,
        has_token: bool,
    ) -> Result<usize, StoreError> {
        let mut updates = 0;
        for path in paths {
            let changed =
                self.change(path, |r| updates::judge(r, path, repo, outcome, has_token))?;
            if changed.is_some_and(|r| r.update.is_some()) {
                updates += 1;
            }
        }
        Ok(updates)
    }

    /// Blocking: the file, its HF cache entries, its record. Only while its name
    /// still holds the file the record was read at: a name another program has
    /// given to a new file since (or a folder on its way swapped for a link) is
    /// [`LibraryError::Changed`], and nothing goes. The name is removed in its
    /// folder's handle: a link there goes itself, what it points to stays.
    pub(super) fn remove_file(&mut self, path: &str) -> Result<(), LibraryError> {
        let record = self.shared.read().get(path).cloned();
        let Some(record) = record else {
            return Err(LibraryError::NotFound(path.to_owned()));
        };
        let changed = || LibraryError::Changed(path.to_owned());
        let (dir, name) = match self.shared.locate(path) {
            Ok(found) => (Some(found.0), found.1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Default::default()),
            // A folder on the way is not one any more (a link, a file).
            Err(e)
                if e.raw_os_error()
                    .is_some_and(|n| n == libc::ENOTDIR || n == libc::ELOOP) =>
            {
                return Err(changed())
            }
            Err(e) => return Err(e.into()),
        };
        let now = match &dir {
            Some(dir) => dir.stat(&name)?,
            None => None,
        };
        if now.as_ref().is_some_and(|st| !record.matches(st)) {
            return Err(changed());
        }
        publish::unpublish(
            &self.shared.folders,
            &record.published,
            &self.shared.identity(path, &record),
        );
        if let (Some(dir), Some(_)) = (&dir, now) {
            match dir.unlink(&name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        self.forget(path)?;
        tracing::info!(%path, "library file deleted");
        Ok(())
    }
}
