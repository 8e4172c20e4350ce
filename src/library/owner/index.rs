//! The library's index: every file by path, with the side indexes that keep each
//! question a completed download asks cheap (files of a digest, files found at a
//! commit, the bytes that hard links save). Anyone in the library reads it; only
//! the owner task (the parent module) changes it: the mutating methods are
//! `pub(super)`, and `tests/it/architecture.rs` checks that nothing else calls them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use super::sorted::Sorted;
use crate::files::FileId;
use crate::library::record::Record;

/// The index, in path order.
#[derive(Debug, Default)]
pub struct Index {
    records: BTreeMap<String, Record>,
    /// Paths by the sha256 their record holds.
    by_sha256: HashMap<String, Sorted<String>>,
    /// Paths by the commit the last update check found their bytes at (`same_at`).
    by_same_at: HashMap<String, Sorted<String>>,
    /// Paths (and their record's size) by inode: the links between them.
    by_inode: HashMap<FileId, Sorted<(String, u64)>>,
    bytes_total: u64,
    /// Each inode's size (its first path's) for every path beyond its first.
    bytes_saved: u64,
    /// Records looked up or visited so far: what the index's work costs.
    visits: AtomicU64,
}

impl Index {
    /// The index of `records` (the stored ones, at start-up).
    pub(in crate::library) fn of(records: impl IntoIterator<Item = (String, Record)>) -> Index {
        let mut index = Index::default();
        for (path, record) in records {
            index.put_record(path, record);
        }
        index.visits = AtomicU64::new(0);
        index
    }

    fn visit(&self, n: usize) {
        self.visits.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// How many records the index has looked up or visited since it was made.
    #[cfg(test)]
    pub(in crate::library) fn visits(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
    }

    pub(in crate::library) fn get(&self, path: &str) -> Option<&Record> {
        self.visit(1);
        self.records.get(path)
    }

    pub(in crate::library) fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Every record, in path order (a walk of the whole index).
    pub(in crate::library) fn iter(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.records.iter().inspect(|_| self.visit(1))
    }

    /// The records whose path starts with `prefix`, in path order.
    pub(in crate::library) fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        self.records
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(p, _)| p.starts_with(prefix))
            .inspect(|_| self.visit(1))
    }

    /// The files whose record holds `sha256`, other than `path`, in path order.
    pub(in crate::library) fn same_digest(
        &self,
        path: &str,
        sha256: &str,
    ) -> Vec<(String, Record)> {
        self.paths_in(self.by_sha256.get(sha256), path)
    }

    /// The files the last update check found at `commit`, other than `path`.
    pub(in crate::library) fn same_at(&self, path: &str, commit: &str) -> Vec<(String, Record)> {
        self.paths_in(self.by_same_at.get(commit), path)
    }

    fn paths_in(&self, paths: Option<&Sorted<String>>, except: &str) -> Vec<(String, Record)> {
        paths
            .into_iter()
            .flat_map(|p| p.0.iter())
            .filter(|p| p.as_str() != except)
            .filter_map(|p| self.get(p).map(|r| (p.clone(), r.clone())))
            .collect()
    }

    /// The bytes of every file (each path counted), and what hard links saved.
    pub(in crate::library) fn totals(&self) -> (u64, u64) {
        (self.bytes_total, self.bytes_saved)
    }

    /// Indexes `record` at `path` (replacing what was there).
    pub(super) fn put_record(&mut self, path: String, record: Record) {
        self.drop_record(&path);
        self.visit(1);
        if let Some(sha) = &record.sha256 {
            self.by_sha256
                .entry(sha.clone())
                .or_default()
                .insert(path.clone());
        }
        if let Some(commit) = &record.same_at {
            self.by_same_at
                .entry(commit.clone())
                .or_default()
                .insert(path.clone());
        }
        self.bytes_total += record.size;
        let group = self.by_inode.entry(record.id()).or_default();
        self.bytes_saved -= saved_by(group);
        group.insert((path.clone(), record.size));
        self.bytes_saved += saved_by(group);
        self.records.insert(path, record);
    }

    /// Takes `path` out of the index; the record it had.
    pub(super) fn drop_record(&mut self, path: &str) -> Option<Record> {
        self.visit(1);
        let record = self.records.remove(path)?;
        if let Some(sha) = &record.sha256 {
            unlist(&mut self.by_sha256, sha, path);
        }
        if let Some(commit) = &record.same_at {
            unlist(&mut self.by_same_at, commit, path);
        }
        self.bytes_total -= record.size;
        if let Some(group) = self.by_inode.get_mut(&record.id()) {
            self.bytes_saved -= saved_by(group);
            group.remove(path);
            self.bytes_saved += saved_by(group);
            if group.0.is_empty() {
                self.by_inode.remove(&record.id());
            }
        }
        Some(record)
    }
}

fn unlist(map: &mut HashMap<String, Sorted<String>>, key: &str, path: &str) {
    if let Some(paths) = map.get_mut(key) {
        paths.remove(path);
        if paths.0.is_empty() {
            map.remove(key);
        }
    }
}

/// What the links of one inode save: its first path's size for every other path.
fn saved_by(group: &Sorted<(String, u64)>) -> u64 {
    let first = group.0.first().map_or(0, |(_, size)| *size);
    first * (group.0.len() as u64).saturating_sub(1)
}
