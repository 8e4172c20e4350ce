//! The lists of the index's side indexes: a few paths each (most often one).

/// A few entries (most often one) kept sorted by path: a side index's list, in a
/// `Vec` (one small allocation) where a `BTreeSet`'s node would take ~400 bytes for
/// each of the index's files.
#[derive(Debug)]
pub(super) struct Sorted<T>(pub(super) Vec<T>);

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted(Vec::new())
    }
}

/// The path an entry of a side index is sorted by.
pub(super) trait ByPath {
    fn path(&self) -> &str;
}

impl ByPath for String {
    fn path(&self) -> &str {
        self
    }
}

impl ByPath for (String, u64) {
    fn path(&self) -> &str {
        &self.0
    }
}

impl<T: ByPath> Sorted<T> {
    /// Adds `entry`, or replaces the one of its path.
    pub(super) fn insert(&mut self, entry: T) {
        match self.0.binary_search_by(|e| e.path().cmp(entry.path())) {
            Ok(i) => self.0[i] = entry,
            Err(i) => self.0.insert(i, entry),
        }
    }

    pub(super) fn remove(&mut self, path: &str) {
        if let Ok(i) = self.0.binary_search_by(|e| e.path().cmp(path)) {
            self.0.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sorted;

    #[test]
    fn entries_stay_sorted_by_path_one_per_path() {
        let mut s = Sorted::default();
        for (p, n) in [("b", 1), ("a", 2), ("c", 3), ("a", 4)] {
            s.insert((p.to_owned(), n));
        }
        let want = [("a", 4), ("b", 1), ("c", 3)].map(|(p, n)| (p.to_owned(), n));
        assert_eq!(s.0, want);
        s.remove("b");
        s.remove("z");
        assert_eq!(s.0, [("a".to_owned(), 4), ("c".to_owned(), 3)]);
    }
}
