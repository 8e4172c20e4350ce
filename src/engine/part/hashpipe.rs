//! SHA-256 on its own thread: the byte loop hands each chunk over (a reference count,
//! not a copy) and goes on receiving, so hashing a large file overlaps the transfer
//! instead of adding to it. When the thread lags, the byte loop awaits room (it never
//! blocks the thread that runs the other transfers).
//!
//! A small file is hashed inline instead ([`HashPipe::inline`]): a thread started and
//! joined per file cost more than hashing its bytes (SHA-256 of 1 MiB is well under a
//! millisecond with the CPU's SHA extensions), and small files come by the hundred.

use std::thread::JoinHandle;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Chunks in flight to the hashing thread; past that the byte loop waits for it.
const DEPTH: usize = 16;

/// A running digest fed from another thread, or hashed inline.
pub struct HashPipe {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    worker: Option<JoinHandle<Sha256>>,
    /// The inline digest: `update` hashes on the caller's thread. A mutex only because
    /// `update` takes `&self`; nothing else ever holds it.
    here: Option<std::sync::Mutex<Sha256>>,
}

impl HashPipe {
    /// Starts a thread that continues `initial` (the digest of the bytes already on disk).
    pub fn start(initial: Sha256) -> std::io::Result<HashPipe> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(DEPTH);
        let worker = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hasher = initial;
                while let Some(chunk) = rx.blocking_recv() {
                    hasher.update(&chunk);
                }
                hasher
            })?;
        Ok(HashPipe {
            tx: Some(tx),
            worker: Some(worker),
            here: None,
        })
    }

    /// Continues `initial` on the caller's thread (for a small file: no thread).
    pub fn inline(initial: Sha256) -> HashPipe {
        HashPipe {
            tx: None,
            worker: None,
            here: Some(std::sync::Mutex::new(initial)),
        }
    }

    /// Whether [`HashPipe::finish`] returns at once (nothing to wait for).
    pub fn is_inline(&self) -> bool {
        self.here.is_some()
    }

    pub async fn update(&self, chunk: Bytes) {
        if let Some(here) = &self.here {
            here.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .update(&chunk);
            return;
        }
        if let Some(tx) = &self.tx {
            // Only fails if the thread is gone, which `finish` then reports.
            let _ = tx.send(chunk).await;
        }
    }

    /// Waits for every chunk to be hashed (blocking) and returns the digest.
    pub fn finish(mut self) -> Option<Sha256> {
        if let Some(here) = self.here.take() {
            return Some(here.into_inner().unwrap_or_else(|p| p.into_inner()));
        }
        drop(self.tx.take());
        self.worker.take()?.join().ok()
    }
}

impl Drop for HashPipe {
    fn drop(&mut self) {
        // Closing the channel ends the thread; nobody waits for it.
        drop(self.tx.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn matches_a_direct_digest() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let pipe = HashPipe::start(Sha256::new()).unwrap();
        for chunk in data.chunks(12_345) {
            pipe.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(pipe.finish().unwrap().finalize(), Sha256::digest(&data));
    }

    #[tokio::test]
    async fn inline_matches_a_direct_digest_and_continues_its_start() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut start = Sha256::new();
        start.update(&data[..1000]);
        let pipe = HashPipe::inline(start);
        assert!(pipe.is_inline());
        for chunk in data[1000..].chunks(12_345) {
            pipe.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(pipe.finish().unwrap().finalize(), Sha256::digest(&data));
    }
}
