//! What vouches for the bytes of a `.part`: its write lease, the running SHA-256 of
//! what arrives, and the digest taken while ranges were filled out of order. One owner,
//! so that the rule the lease's keeper depends on ("the transfer hashes from byte 0
//! exactly when a running hash starts there, or the file is filled out of order, which
//! is read back whole") is set in one place: [`Digest::tell_lease`].

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::hashpipe::HashPipe;
use super::lease::{Break, Lease};
use crate::engine::EngineError;

/// The largest file hashed inline on the transfer's thread (see [`HashPipe::inline`]):
/// at most about half a millisecond of SHA-256 held up there, per file.
pub(in crate::engine) const INLINE_UP_TO: u64 = 1024 * 1024;

/// The lease and the running digest of one `.part`.
pub(in crate::engine) struct Digest {
    /// The write lease on the `.part`: while intact, nothing else has opened the file
    /// since the transfer did, so what it wrote is what is on disk (see [`Lease`]).
    lease: Lease,
    /// Digest of the bytes received from `from`: with an expected digest (from 0), or
    /// when the lease cannot vouch for the file (then the end compares it with the file
    /// read back).
    running: Option<HashPipe>,
    /// Where the running hash starts: 0 with an expected digest, else the offset this
    /// run resumed from.
    from: u64,
    /// The file is filled out of order (ranges at offsets): nothing runs, the end reads
    /// it back (the whole file, when the lease broke: a break needs no prefix).
    out_of_order: bool,
    /// The digest of the whole file, when it was taken during the transfer.
    ready: Option<Sha256>,
}

impl Digest {
    /// Over `lease`, hashing nothing yet.
    pub(in crate::engine) fn new(lease: Lease) -> Digest {
        Digest {
            lease,
            running: None,
            from: 0,
            out_of_order: false,
            ready: None,
        }
    }

    /// The one place the lease learns whether the transfer hashes from byte 0: a break
    /// then needs no prefix hashed by the keeper. A running hash from elsewhere only
    /// exists when the lease cannot vouch for the file anyway.
    fn tell_lease(&self) {
        let from_zero = self.running.is_some() && self.from == 0;
        self.lease.set_hashing(from_zero || self.out_of_order);
    }

    /// Runs `hash` (the digest of the bytes before `from`) over what arrives from `from`,
    /// or stops hashing (`None`).
    pub(in crate::engine) fn run(
        &mut self,
        hash: Option<Sha256>,
        from: u64,
    ) -> Result<(), EngineError> {
        self.running = match hash {
            Some(h) => Some(HashPipe::start(h)?),
            None => None,
        };
        self.from = from;
        self.tell_lease();
        Ok(())
    }

    /// Best effort: hashes from 0 if a thread can be had (else the library's hasher
    /// takes the digest later); a file of `total` bytes up to [`INLINE_UP_TO`] is hashed
    /// inline, with no thread.
    pub(in crate::engine) fn try_run_from_zero(&mut self, total: u64) {
        self.running = if total <= INLINE_UP_TO {
            Some(HashPipe::inline(Sha256::new()))
        } else {
            HashPipe::start(Sha256::new()).ok()
        };
        self.from = 0;
        self.tell_lease();
    }

    /// Whether the file is filled out of order; switching drops the running hash.
    pub(in crate::engine) fn set_out_of_order(&mut self, on: bool) {
        if on {
            self.running = None;
        }
        self.out_of_order = on;
        self.ready = None;
        self.tell_lease();
    }

    /// Another lease (the file was cut to 0 or opened anew), the digest as it was. The
    /// old one is let go first ([`Digest::release_lease`]): the new one is taken on
    /// the same open file description.
    pub(in crate::engine) fn replace_lease(&mut self, lease: Lease) {
        self.lease.release();
        self.lease = lease;
        self.tell_lease();
    }

    /// Hands a chunk received in order to the running hash, if any (a reference count).
    pub(in crate::engine) async fn update(&self, chunk: &Bytes) {
        if let Some(h) = &self.running {
            h.update(chunk.clone()).await;
        }
    }

    pub(in crate::engine) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Where the running hash starts.
    pub(in crate::engine) fn from(&self) -> u64 {
        self.from
    }

    /// The digest of the whole file, taken while it was filled (kept for the end).
    pub(in crate::engine) fn set_ready(&mut self, digest: Option<Sha256>) {
        self.ready = digest;
    }

    pub(in crate::engine) fn take_ready(&mut self) -> Option<Sha256> {
        self.ready.take()
    }

    /// The running hash, ended (the end compares or finishes it).
    pub(in crate::engine) fn take_running(&mut self) -> Option<HashPipe> {
        let running = self.running.take();
        self.tell_lease();
        running
    }

    pub(in crate::engine) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Lets go of the lease (the end was checked).
    pub(in crate::engine) fn release_lease(&mut self) {
        self.lease.release();
    }

    /// The break the keeper met, once.
    pub(in crate::engine) fn take_break(&mut self) -> Option<Break> {
        self.lease.take_break()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule is kept by the `Digest` itself, whichever way the hash starts or stops
    /// (the rewind after a break, which used to set it by hand, is `run(Some(_), 0)`).
    #[test]
    fn the_lease_hashes_exactly_with_a_running_hash_from_zero_or_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f.part"))
            .unwrap();
        let lease = Lease::take(&file, 0, false);
        if lease.hashing().is_none() {
            eprintln!("no write lease on this filesystem: nothing to check");
            return;
        }
        let mut d = Digest::new(lease);
        assert_eq!(d.lease().hashing(), Some(false));
        d.run(Some(Sha256::new()), 0).unwrap();
        assert_eq!(d.lease().hashing(), Some(true), "a running hash from 0");
        d.run(Some(Sha256::new()), 10).unwrap();
        assert_eq!(
            d.lease().hashing(),
            Some(false),
            "a hash from elsewhere is no prefix"
        );
        drop(d.take_running());
        assert_eq!(d.lease().hashing(), Some(false), "nothing runs");
        d.set_out_of_order(true);
        assert_eq!(
            d.lease().hashing(),
            Some(true),
            "out of order: read back whole"
        );
        d.set_out_of_order(false);
        d.try_run_from_zero(INLINE_UP_TO + 1);
        assert_eq!(d.lease().hashing(), Some(true));
        assert!(d.running.as_ref().is_some_and(|h| !h.is_inline()));
        d.try_run_from_zero(256 * 1024);
        assert!(
            d.running.as_ref().is_some_and(HashPipe::is_inline),
            "a small file is hashed with no thread"
        );
        assert_eq!(d.lease().hashing(), Some(true));
        d.release_lease();
        d.replace_lease(Lease::take(&file, 0, false));
        assert_eq!(
            d.lease().hashing(),
            Some(true),
            "a new lease is told at once"
        );
    }
}
