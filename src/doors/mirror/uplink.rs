//! Whether the upstream Hub answered lately. A black-holed upstream held every API
//! answer the library could give for the client's whole timeout (60 s per request:
//! llama.cpp's `refs` then `tree` took two minutes); now the mirror asks it briefly when
//! the library can answer instead, and after a silence answers from the library at once
//! for a while.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hub::HubError;

/// The most an API request upstream may take when the library can answer instead (a
/// Hub's answer takes well under a second; a far one a few).
pub(super) const QUICK: Duration = Duration::from_secs(6);
/// How long after a silence the upstream is not asked when the library can answer.
const REMEMBERED: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Uplink(Mutex<Option<Instant>>);

impl Uplink {
    /// True when the upstream failed to answer less than [`REMEMBERED`] ago.
    pub(super) fn recently_down(&self) -> bool {
        self.lock()
            .is_some_and(|since| since.elapsed() < REMEMBERED)
    }

    /// Notes how the upstream answered: not at all (a network error or a timeout), or
    /// with any answer.
    pub(super) fn note<T>(&self, answer: &Result<T, HubError>) {
        let mut down = self.lock();
        match answer {
            Err(HubError::Network(_)) => *down = Some(Instant::now()),
            _ => *down = None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
