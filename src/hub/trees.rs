//! The last tree listed of each repo, kept in memory: what a library entry's `run`
//! command checks its `-hf owner/name:TAG` against (llama.cpp resolves the tag in the
//! Hub's tree, so only a tree seen on the Hub can vouch for it). Lost on restart; a
//! file whose repo was not listed since gets the `--hf-file` form instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::RepoFile;

/// How many repos are remembered: the oldest listed is forgotten first.
const REPOS: usize = 256;

/// A larger tree is not remembered: each library file of the repo would run a pick over
/// it on every listing. Real GGUF repos list a few hundred files at most.
const FILES: usize = 10_000;

/// A repo and its files, in the tree's order.
type Tree = (String, Arc<Vec<RepoFile>>);

#[derive(Clone, Default)]
pub(super) struct Trees {
    inner: Arc<Mutex<VecDeque<Tree>>>,
}

impl Trees {
    pub(super) fn remember(&self, repo: &str, files: &[RepoFile]) {
        let Ok(mut all) = self.inner.lock() else {
            return;
        };
        all.retain(|(r, _)| r != repo);
        if files.len() > FILES {
            return;
        }
        if all.len() >= REPOS {
            all.pop_front();
        }
        all.push_back((repo.to_owned(), Arc::new(files.to_vec())));
    }

    pub(super) fn get(&self, repo: &str) -> Option<Arc<Vec<RepoFile>>> {
        let all = self.inner.lock().ok()?;
        all.iter().find(|(r, _)| r == repo).map(|(_, f)| f.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_repo_is_forgotten_first() {
        let t = Trees::default();
        for i in 0..=REPOS {
            t.remember(&format!("o/r{i}"), &[]);
        }
        assert!(t.get("o/r0").is_none());
        assert!(t.get("o/r1").is_some());
        assert!(t.get(&format!("o/r{REPOS}")).is_some());
    }

    #[test]
    fn a_huge_tree_is_not_kept_and_drops_an_older_one() {
        let t = Trees::default();
        let file = RepoFile {
            path: "m-Q4_K_M.gguf".into(),
            size: 1,
            sha256: None,
            quantization: None,
        };
        t.remember("o/r", std::slice::from_ref(&file));
        t.remember("o/r", &vec![file; FILES + 1]);
        assert!(t.get("o/r").is_none(), "not the older, smaller tree either");
    }
}
