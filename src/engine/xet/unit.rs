//! One unit of work: a byte range of the file, its reconstruction asked for, then each
//! xorb range it needs fetched once, cut into chunks, decoded, and every chunk written
//! where the terms that use it put it (clipped to the unit). Chunks the files on disk
//! already hold are copied from there instead (see [`super::reuse`]).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::format::ChunkReader;
use super::plan::{Fetch, Term};
use super::{Shared, XetError};
use crate::engine::{limiter, Ended};

/// Runs one unit to its end; `Ended::Stopped` when asked to stop.
pub(super) async fn run(s: &Shared<'_>, unit: &Range<u64>) -> Result<Ended, XetError> {
    let plan = s.cas.plan(unit).await?;
    for (fetch, terms) in plan.by_fetch(unit.end) {
        if s.reuse.copy(s, &terms, unit).await? {
            continue;
        }
        if let Ended::Stopped = pull(s, fetch, &terms, unit).await? {
            return Ok(Ended::Stopped);
        }
    }
    Ok(Ended::Done)
}

/// Where each term is in its fetch: the next chunk it takes, and the bytes it has.
struct Cursor<'t> {
    term: &'t Term,
    written: u64,
}

/// Fetches one xorb range and writes its chunks for `terms`.
async fn pull(
    s: &Shared<'_>,
    fetch: &Fetch,
    terms: &[&Term],
    unit: &Range<u64>,
) -> Result<Ended, XetError> {
    let resp = s.cas.open(fetch).await?;
    let _connection = s.engine.metrics.connection();
    let mut body = resp.bytes_stream();
    let mut reader = ChunkReader::default();
    let mut cursors: Vec<Cursor> = terms
        .iter()
        .map(|t| Cursor {
            term: t,
            written: 0,
        })
        .collect();
    let mut index = fetch.chunks.start;
    // Chunks past the last one a term takes are not read: nothing needs them.
    let last = terms
        .iter()
        .map(|t| t.chunks.end)
        .max()
        .unwrap_or(fetch.chunks.start)
        .min(fetch.chunks.end);
    let mut received = 0u64;
    let mut stop = s.stop.clone();
    while index < last {
        let next = tokio::select! {
            n = tokio::time::timeout(s.stall, body.next()) => n,
            _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
        };
        let bytes = match next {
            Err(_) => return Err(XetError::Stalled(s.stall.as_secs())),
            Ok(None) => {
                return Err(XetError::Network(format!(
                    "a xorb range ended after {received} of {} bytes",
                    fetch.size()
                )))
            }
            Ok(Some(Err(e))) => return Err(XetError::Network(crate::http::describe(&e))),
            Ok(Some(Ok(b))) => b,
        };
        s.fetched(bytes.len() as u64);
        // Bytes past those asked are not the fetch's chunks (a `200` serves the whole
        // xorb for a range from 0): never parsed as such.
        let room = fetch.size().saturating_sub(received);
        if room == 0 {
            return Err(XetError::Malformed(format!(
                "the {} bytes of a xorb range hold fewer chunks than it names",
                fetch.size()
            )));
        }
        let bytes = bytes.slice(..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
        received += bytes.len() as u64;
        reader.push(&bytes);
        // Every chunk this piece of the body completed, written in one trip.
        let mut writes = Vec::new();
        while index < last {
            let Some(chunk) = reader.next_chunk()? else {
                break;
            };
            place(&mut cursors, index, &chunk, &mut writes)?;
            index += 1;
        }
        s.write(writes, unit).await?;
        if !limiter::pace(&s.engine.global, &s.limiter, bytes.len(), &mut stop).await {
            return Ok(Ended::Stopped);
        }
    }
    if let Some(c) = cursors.iter().find(|c| c.written != c.term.len) {
        return Err(XetError::Malformed(format!(
            "chunks {}..{} of xorb {:.16} decoded to {} bytes, the reconstruction says {}",
            c.term.chunks.start, c.term.chunks.end, c.term.xorb, c.written, c.term.len
        )));
    }
    Ok(Ended::Done)
}

/// Where chunk `index` goes for every term that uses it: added to `writes`.
fn place(
    cursors: &mut [Cursor],
    index: u32,
    chunk: &Bytes,
    writes: &mut Vec<(u64, Bytes)>,
) -> Result<(), XetError> {
    for c in cursors
        .iter_mut()
        .filter(|c| c.term.chunks.contains(&index))
    {
        let at = c.term.at + c.written;
        c.written += chunk.len() as u64;
        if c.written > c.term.len {
            return Err(XetError::Malformed(format!(
                "chunks of xorb {:.16} hold more than the {} bytes of their term",
                c.term.xorb, c.term.len
            )));
        }
        writes.push((at, chunk.clone()));
    }
    Ok(())
}

/// The wait a transient error asks for (the server's `Retry-After`).
pub(super) fn asked_wait(e: &XetError) -> Option<Duration> {
    match e {
        XetError::Cas { retry_after, .. } => *retry_after,
        _ => None,
    }
}
