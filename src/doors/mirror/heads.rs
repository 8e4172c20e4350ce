//! The commit of each repo's `main` as the upstream's `refs` last told a client of the
//! mirror. llama.cpp asks `refs`, takes `main`'s commit and then asks every file by
//! that commit: a miss it causes is fetched as "`main`, at this commit" (as `pull`
//! would), so the library's record and the HuggingFace cache's `refs/main` say which
//! branch it is (without it, the box's own `llama-server -hf … --offline` and
//! `huggingface_hub` offline would not find the file, and the update watch would not
//! follow it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::local::is_commit;

/// Repos remembered at most; past it, the map starts over (a `refs` is asked right
/// before the files, so only the last few matter).
const MAX_REPOS: usize = 4096;
/// How long a `refs` answer vouches for `main`'s commit: llama.cpp asks its files right
/// after. Later, `main` may have moved upstream, and a client pinning the old commit
/// would have its miss recorded as `main` (then served as `main` from disk).
const TRUSTED_FOR: Duration = Duration::from_secs(60);

/// Whether a `refs` answer is JSON whose every branch, tag, convert and pull request
/// names a commit of 40 hex digits (a client makes folders and URLs of them).
pub(super) fn names_only_commits(body: &[u8]) -> bool {
    let Ok(refs) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    refs.is_object()
        && ["branches", "tags", "converts", "pullRequests"]
            .iter()
            .all(|kind| match &refs[kind] {
                Value::Null => true,
                Value::Array(refs) => refs
                    .iter()
                    .all(|r| r["targetCommit"].as_str().is_some_and(is_commit)),
                _ => false,
            })
}

#[derive(Debug, Default)]
pub struct Heads(Mutex<HashMap<String, (String, Instant)>>);

impl Heads {
    /// Notes `main`'s commit from an upstream's `refs` answer (`body`, already capped).
    pub(super) fn note(&self, repo: &str, body: &[u8]) {
        let Ok(refs) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let main = refs["branches"].as_array().and_then(|branches| {
            branches
                .iter()
                .find(|b| b["name"] == "main")
                .and_then(|b| b["targetCommit"].as_str())
                .filter(|c| is_commit(c))
        });
        let mut heads = self.lock();
        match main {
            Some(commit) => {
                if heads.len() >= MAX_REPOS && !heads.contains_key(repo) {
                    heads.clear();
                }
                heads.insert(
                    repo.to_owned(),
                    (commit.to_ascii_lowercase(), Instant::now()),
                );
            }
            None => {
                heads.remove(repo);
            }
        }
    }

    /// Forgets `main` of `repo` when the upstream just named another commit for it (a
    /// file asked by `main`): the last `refs` is out of date.
    pub(super) fn saw_main(&self, repo: &str, commit: &str) {
        let mut heads = self.lock();
        if heads
            .get(repo)
            .is_some_and(|(c, _)| !c.eq_ignore_ascii_case(commit))
        {
            heads.remove(repo);
        }
    }

    /// The revision to record for a file of `repo` asked at `rev`: `main` when `rev` is
    /// the commit the upstream named as `main` in a `refs` of the last
    /// [`TRUSTED_FOR`], else `rev` itself.
    pub(super) fn revision_of<'a>(&self, repo: &str, rev: &'a str) -> &'a str {
        self.revision_at(repo, rev, Instant::now())
    }

    fn revision_at<'a>(&self, repo: &str, rev: &'a str, now: Instant) -> &'a str {
        match self.lock().get(repo) {
            Some((commit, noted))
                if commit.eq_ignore_ascii_case(rev)
                    && now.saturating_duration_since(*noted) < TRUSTED_FOR =>
            {
                "main"
            }
            _ => rev,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_commit_named_main_by_the_last_refs_is_recorded_as_main() {
        let heads = Heads::default();
        assert_eq!(heads.revision_of("o/n", C), C);
        let refs = format!(
            r#"{{"branches":[{{"name":"dev","targetCommit":"{}"}},{{"name":"main","ref":"refs/heads/main","targetCommit":"{C}"}}],"tags":[],"converts":[]}}"#,
            "f".repeat(40)
        );
        heads.note("o/n", refs.as_bytes());
        assert_eq!(heads.revision_of("o/n", C), "main");
        assert_eq!(heads.revision_of("o/n", &C.to_uppercase()), "main");
        assert_eq!(heads.revision_of("o/other", C), C);
        assert_eq!(heads.revision_of("o/n", &"f".repeat(40)), "f".repeat(40));
        // An answer without a valid main forgets it.
        heads.note(
            "o/n",
            br#"{"branches":[{"name":"main","targetCommit":"../x"}]}"#,
        );
        assert_eq!(heads.revision_of("o/n", C), C);
        heads.note("o/n", refs.as_bytes());
        heads.note("o/n", b"<html>");
        assert_eq!(
            heads.revision_of("o/n", C),
            "main",
            "not JSON: nothing learned"
        );
    }

    #[test]
    fn refs_that_name_no_commit_are_told_apart() {
        let good = format!(
            r#"{{"branches":[{{"name":"main","targetCommit":"{C}"}}],"tags":[],"converts":[]}}"#
        );
        assert!(names_only_commits(good.as_bytes()));
        assert!(names_only_commits(b"{}"));
        for bad in [
            r#"{"branches":[{"name":"main","targetCommit":"../../x"}]}"#,
            r#"{"branches":[{"name":"main"}]}"#,
            r#"{"tags":[{"name":"v1","targetCommit":7}]}"#,
            r#"{"pullRequests":[{"name":"pr/1","targetCommit":"x"}]}"#,
            r#"{"branches":"main"}"#,
            "<html>",
            "[]",
        ] {
            assert!(!names_only_commits(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn a_refs_vouches_for_main_only_a_short_while_and_until_main_is_seen_elsewhere() {
        let heads = Heads::default();
        let refs = format!(r#"{{"branches":[{{"name":"main","targetCommit":"{C}"}}]}}"#);
        heads.note("o/n", refs.as_bytes());
        let now = Instant::now();
        assert_eq!(heads.revision_at("o/n", C, now), "main");
        assert_eq!(
            heads.revision_at("o/n", C, now + TRUSTED_FOR + Duration::from_secs(1)),
            C,
            "main may have moved since"
        );
        heads.saw_main("o/n", C);
        assert_eq!(heads.revision_of("o/n", C), "main", "the same commit");
        heads.saw_main("o/n", &"f".repeat(40));
        assert_eq!(heads.revision_of("o/n", C), C, "main moved upstream");
    }
}
