//! Whether the upstream Hub answered lately. A black-holed upstream held every API
//! answer the library could give for the client's whole timeout (60 s per request:
//! llama.cpp's `refs` then `tree` took two minutes); now the mirror asks it briefly when
//! the library can answer instead, and after a silence answers from the library at once
//! for a while. And how much its relayed answers hold.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::hub::HubError;

/// The most an API request upstream may take when the library can answer instead (a
/// Hub's answer takes well under a second; a far one a few).
pub(super) const QUICK: Duration = Duration::from_secs(6);
/// How long after a silence the upstream is not asked when the library can answer.
const REMEMBERED: Duration = Duration::from_secs(30);

/// The most the relayed API answers waiting for their clients may hold together, in
/// KiB: each is read whole (within its cap) and kept until its client has it, and sixty
/// slow clients of 32 MiB answers held 2 GB.
const HELD_KIB: usize = 128 * 1024;

#[derive(Debug)]
pub struct Uplink {
    down: Mutex<Option<Instant>>,
    held: Arc<Semaphore>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            down: Mutex::default(),
            held: Arc::new(Semaphore::new(HELD_KIB)),
        }
    }
}

impl Uplink {
    /// A share of [`HELD_KIB`] for a relayed answer of `len` bytes, kept until its
    /// client has it; `None` when the others hold too much now.
    pub(super) fn hold(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(len.div_ceil(1024).max(1)).ok()?;
        self.held.clone().try_acquire_many_owned(kib).ok()
    }

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
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_answers_hold_a_bounded_sum_until_they_are_sent() {
        let uplink = Uplink::default();
        let most = uplink.hold(HELD_KIB * 1024 - 1024).expect("room for one");
        assert!(uplink.hold(2048).is_none(), "past the sum");
        let small = uplink.hold(1).expect("the last KiB");
        assert!(
            uplink.hold(0).is_none(),
            "even an empty answer takes a share"
        );
        drop((most, small));
        assert!(uplink.hold(32 * 1024 * 1024).is_some(), "given back");
    }
}
