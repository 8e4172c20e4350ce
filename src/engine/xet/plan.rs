//! A reconstruction: which chunks of which xorbs make a byte range of the file, and the
//! URLs that serve them. The shapes are HuggingFace's (`xet-client` 1.8.0,
//! `cas_types/mod.rs`: `QueryReconstructionResponse` for `/v1/reconstructions`,
//! `QueryReconstructionResponseV2` for `/v2/…`); both become one [`Plan`].

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;

use super::XetError;

#[derive(Deserialize)]
struct ChunkRange {
    start: u32,
    end: u32,
}

/// Inclusive at both ends, as in an HTTP `Range`.
#[derive(Deserialize)]
struct HttpRange {
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct WireTerm {
    hash: String,
    unpacked_length: u32,
    range: ChunkRange,
}

#[derive(Deserialize)]
struct FetchInfoV1 {
    range: ChunkRange,
    url: String,
    url_range: HttpRange,
}

#[derive(Deserialize)]
pub(super) struct AnswerV1 {
    offset_into_first_range: u64,
    terms: Vec<WireTerm>,
    fetch_info: HashMap<String, Vec<FetchInfoV1>>,
}

#[derive(Deserialize)]
struct RangeV2 {
    chunks: ChunkRange,
    bytes: HttpRange,
}

#[derive(Deserialize)]
struct MultiRangeV2 {
    url: String,
    ranges: Vec<RangeV2>,
}

#[derive(Deserialize)]
pub(super) struct AnswerV2 {
    offset_into_first_range: u64,
    terms: Vec<WireTerm>,
    xorbs: HashMap<String, Vec<MultiRangeV2>>,
}

/// Chunks `chunks` of xorb `xorb`, `len` bytes once decoded, at file offset `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    pub(crate) xorb: String,
    pub(crate) chunks: Range<u32>,
    pub(crate) len: u64,
    pub(crate) at: u64,
}

/// One ranged GET: chunks `chunks` of `xorb` are bytes `bytes` (inclusive) of `url`.
#[derive(Debug, Clone)]
pub(super) struct Fetch {
    pub(super) xorb: String,
    pub(super) chunks: Range<u32>,
    pub(super) url: String,
    pub(super) bytes: (u64, u64),
}

impl Fetch {
    /// How many bytes the GET asks for.
    pub(super) fn size(&self) -> u64 {
        // Saturating: the bounds are the CAS's (checked in `Plan::checked`, but this
        // must never be what panics on a lie).
        self.bytes.1.saturating_sub(self.bytes.0).saturating_add(1)
    }
}

/// The reconstruction of a file range.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) terms: Vec<Term>,
    pub(super) fetches: Vec<Fetch>,
    /// The fetch that serves each term (an index into `fetches`), found once: looking
    /// it up per term among all fetches is quadratic in what a hostile CAS can send.
    owner: Vec<usize>,
}

/// Caps what one answer may describe, so a lying CAS cannot make us allocate without
/// end: a term is at most a xorb's 8 Ki chunks of 128 KiB.
const MAX_TERM: u64 = MAX_XORB_CHUNKS as u64 * super::format::MAX_CHUNK as u64;
/// A xorb holds at most 8 Ki chunks (`MAX_XORB_CHUNKS`, `xet_core_structures`
/// `xorb_object/constants.rs`): no chunk index reaches it. Without the bound a fetch of
/// chunks `0..u32::MAX` reads 4 G chunk headers.
const MAX_XORB_CHUNKS: u32 = 8 * 1024;
/// The most bytes a fetch of a xorb's chunks can take: every chunk its header and its
/// largest compressed form.
const MAX_FETCH: u64 = MAX_XORB_CHUNKS as u64 * super::format::MAX_WIRE_CHUNK as u64;

impl Plan {
    pub(super) fn from_v1(a: AnswerV1, range: &Range<u64>) -> Result<Plan, XetError> {
        let fetches = a
            .fetch_info
            .into_iter()
            .flat_map(|(xorb, infos)| {
                infos.into_iter().map(move |f| Fetch {
                    xorb: xorb.clone(),
                    chunks: f.range.start..f.range.end,
                    url: f.url,
                    bytes: (f.url_range.start, f.url_range.end),
                })
            })
            .collect();
        Plan::checked(a.terms, a.offset_into_first_range, range, fetches)
    }

    pub(super) fn from_v2(a: AnswerV2, range: &Range<u64>) -> Result<Plan, XetError> {
        let fetches = a
            .xorbs
            .into_iter()
            .flat_map(|(xorb, multis)| {
                multis.into_iter().flat_map(move |m| {
                    let xorb = xorb.clone();
                    m.ranges.into_iter().map(move |r| Fetch {
                        xorb: xorb.clone(),
                        chunks: r.chunks.start..r.chunks.end,
                        url: m.url.clone(),
                        bytes: (r.bytes.start, r.bytes.end),
                    })
                })
            })
            .collect();
        Plan::checked(a.terms, a.offset_into_first_range, range, fetches)
    }

    /// Places the terms in the file and checks that they cover `range`, that every
    /// term has a fetch that covers it and that every number is sane.
    fn checked(
        wire: Vec<WireTerm>,
        offset: u64,
        range: &Range<u64>,
        fetches: Vec<Fetch>,
    ) -> Result<Plan, XetError> {
        let mut at = range
            .start
            .checked_sub(offset)
            .ok_or_else(|| XetError::Malformed("offset_into_first_range past the range".into()))?;
        let mut terms = Vec::with_capacity(wire.len());
        for t in wire {
            let len = u64::from(t.unpacked_length);
            if !is_hash(&t.hash) || !chunks_sane(&t.range) || len == 0 || len > MAX_TERM {
                return Err(XetError::Malformed(format!(
                    "a term of xorb {:.16}: chunks {}..{}, {len} bytes",
                    t.hash, t.range.start, t.range.end
                )));
            }
            terms.push(Term {
                xorb: t.hash.to_ascii_lowercase(),
                chunks: t.range.start..t.range.end,
                len,
                at,
            });
            at += len;
        }
        if at < range.end {
            // Else the unit "ends" with bytes never written, and the download fails
            // instead of falling back to the bridge.
            return Err(XetError::Malformed(format!(
                "the terms end at byte {at}, the range asked ends at {}",
                range.end
            )));
        }
        for f in &fetches {
            let sane = chunks_sane(&ChunkRange {
                start: f.chunks.start,
                end: f.chunks.end,
            });
            if !is_hash(&f.xorb) || !sane || f.bytes.1 < f.bytes.0 || f.size() > MAX_FETCH {
                return Err(XetError::Malformed(format!(
                    "a fetch of xorb {:.16}",
                    f.xorb
                )));
            }
        }
        let fetches: Vec<Fetch> = fetches
            .into_iter()
            .map(|f| Fetch {
                xorb: f.xorb.to_ascii_lowercase(),
                ..f
            })
            .collect();
        let index = FetchIndex::new(&fetches);
        let mut owner = Vec::with_capacity(terms.len());
        for t in &terms {
            let Some(i) = index.covering(t) else {
                return Err(XetError::Malformed(format!(
                    "no URL serves chunks {}..{} of xorb {:.16}",
                    t.chunks.start, t.chunks.end, t.xorb
                )));
            };
            owner.push(i);
        }
        Ok(Plan {
            terms,
            fetches,
            owner,
        })
    }

    /// The fetch that serves term `i`.
    #[cfg(test)]
    pub(super) fn fetch_for(&self, i: usize) -> &Fetch {
        &self.fetches[self.owner[i]]
    }

    /// Each fetch with the terms it serves that start before `upto`, in the order of
    /// their first term.
    pub(super) fn by_fetch(&self, upto: u64) -> Vec<(&Fetch, Vec<&Term>)> {
        let mut slot: HashMap<usize, usize> = HashMap::new();
        let mut out: Vec<(&Fetch, Vec<&Term>)> = Vec::new();
        for (t, &f) in self.terms.iter().zip(&self.owner) {
            if t.at >= upto {
                continue;
            }
            let k = *slot.entry(f).or_insert_with(|| {
                out.push((&self.fetches[f], Vec::new()));
                out.len() - 1
            });
            out[k].1.push(t);
        }
        out
    }
}

/// The fetches of each xorb sorted by first chunk, with the running furthest end: the
/// fetch covering a term is found by one binary search.
struct FetchIndex {
    /// xorb → (first chunk, furthest end so far, the fetch reaching it), sorted.
    by_xorb: HashMap<String, Vec<(u32, u32, usize)>>,
}

impl FetchIndex {
    fn new(fetches: &[Fetch]) -> FetchIndex {
        let mut by_xorb: HashMap<String, Vec<(u32, u32, usize)>> = HashMap::new();
        for (i, f) in fetches.iter().enumerate() {
            by_xorb
                .entry(f.xorb.clone())
                .or_default()
                .push((f.chunks.start, f.chunks.end, i));
        }
        for list in by_xorb.values_mut() {
            list.sort_unstable();
            let mut best = (0, usize::MAX);
            for e in list.iter_mut() {
                if e.1 > best.0 {
                    best = (e.1, e.2);
                }
                (e.1, e.2) = best;
            }
        }
        FetchIndex { by_xorb }
    }

    /// A fetch whose chunks hold all of `term`'s.
    fn covering(&self, term: &Term) -> Option<usize> {
        let list = self.by_xorb.get(&term.xorb)?;
        let n = list.partition_point(|e| e.0 <= term.chunks.start);
        let (_, end, i) = *list.get(n.checked_sub(1)?)?;
        (end >= term.chunks.end).then_some(i)
    }
}

/// A non-empty run of chunk indices a xorb can have.
fn chunks_sane(r: &ChunkRange) -> bool {
    r.start < r.end && r.end <= MAX_XORB_CHUNKS
}

fn is_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn v1_and_v2_answers_place_terms_in_the_file() {
        let v1 = serde_json::json!({
            "offset_into_first_range": 100,
            "terms": [
                {"hash": h('a'), "unpacked_length": 1000, "range": {"start": 0, "end": 2}},
                {"hash": h('b'), "unpacked_length": 500, "range": {"start": 3, "end": 4}}
            ],
            "fetch_info": {
                h('a'): [{"range": {"start": 0, "end": 2}, "url": "http://x/a", "url_range": {"start": 0, "end": 99}}],
                h('b'): [{"range": {"start": 2, "end": 5}, "url": "http://x/b", "url_range": {"start": 50, "end": 80}}]
            }
        });
        let p = Plan::from_v1(serde_json::from_value(v1).unwrap(), &(4196..5500)).unwrap();
        assert_eq!(p.terms[0].at, 4096);
        assert_eq!(p.terms[1].at, 5096);
        let f = p.fetch_for(1);
        assert_eq!((f.url.as_str(), f.size()), ("http://x/b", 31));
        let v2 = serde_json::json!({
            "offset_into_first_range": 0,
            "terms": [{"hash": h('c'), "unpacked_length": 10, "range": {"start": 5, "end": 6}}],
            "xorbs": {h('c'): [{"url": "http://x/c", "ranges": [
                {"chunks": {"start": 0, "end": 1}, "bytes": {"start": 0, "end": 9}},
                {"chunks": {"start": 5, "end": 8}, "bytes": {"start": 30, "end": 90}}
            ]}]}
        });
        let p = Plan::from_v2(serde_json::from_value(v2).unwrap(), &(0..10)).unwrap();
        assert_eq!(p.fetch_for(0).bytes, (30, 90));
    }

    #[test]
    fn answers_that_make_no_sense_are_refused() {
        let bad = |terms: serde_json::Value, from: u64| {
            let v = serde_json::json!({"offset_into_first_range": 10, "terms": terms,
                "fetch_info": {h('a'): [{"range": {"start": 0, "end": 9}, "url": "u", "url_range": {"start": 0, "end": 9}}]}});
            Plan::from_v1(serde_json::from_value(v).unwrap(), &(from..from + 1)).is_err()
        };
        let term = |x: &str, s: u32, e: u32, l: u64| serde_json::json!([{"hash": x, "unpacked_length": l, "range": {"start": s, "end": e}}]);
        assert!(!bad(term(&h('a'), 0, 2, 50), 10));
        assert!(
            bad(term(&h('a'), 0, 2, 5), 10),
            "ends before the range does"
        );
        assert!(
            bad(term(&h('a'), 8191, 8193, 50), 10),
            "past a xorb's chunks"
        );
        assert!(
            bad(term(&h('a'), 0, 2, 50), 3),
            "offset past the range start"
        );
        assert!(bad(term(&h('a'), 2, 2, 50), 10), "no chunks");
        assert!(bad(term(&h('a'), 0, 2, 0), 10), "no bytes");
        assert!(bad(term("../x", 0, 2, 50), 10), "not a hash");
        assert!(bad(term(&h('b'), 0, 2, 50), 10), "nothing serves it");
        assert!(bad(term(&h('a'), 5, 12, 50), 10), "past the fetch");
    }

    #[test]
    fn fetches_past_a_xorb_are_refused_and_many_terms_are_indexed() {
        let plan = |fetch: serde_json::Value| {
            let v = serde_json::json!({"offset_into_first_range": 0,
                "terms": [{"hash": h('a'), "unpacked_length": 5, "range": {"start": 0, "end": 1}}],
                "fetch_info": {h('a'): [fetch]}});
            Plan::from_v1(serde_json::from_value(v).unwrap(), &(0..5))
        };
        let f = |end: u64, chunks: u32| serde_json::json!({"range": {"start": 0, "end": chunks}, "url": "u", "url_range": {"start": 0, "end": end}});
        assert!(plan(f(99, 1)).is_ok());
        assert!(plan(f(u64::MAX, 1)).is_err(), "a fetch of 2^64 bytes");
        assert!(plan(f(99, u32::MAX)).is_err(), "a fetch of 4 G chunks");
        // Nested and overlapping fetches: each term finds one that covers it.
        let n = 5000u32;
        let terms: Vec<_> = (0..n).map(|i| serde_json::json!({"hash": h('a'), "unpacked_length": 1, "range": {"start": i, "end": i + 1}})).collect();
        let mut fetches: Vec<_> = (0..n).map(|i| serde_json::json!({"range": {"start": 0, "end": i / 2 + 1}, "url": "u", "url_range": {"start": 0, "end": 9}})).collect();
        fetches.push(serde_json::json!({"range": {"start": n / 2, "end": n}, "url": "last", "url_range": {"start": 0, "end": 9}}));
        let v = serde_json::json!({"offset_into_first_range": 0, "terms": terms, "fetch_info": {h('a'): fetches}});
        let p = Plan::from_v1(serde_json::from_value(v).unwrap(), &(0..u64::from(n))).unwrap();
        for i in 0..n as usize {
            let f = p.fetch_for(i);
            assert!(
                f.chunks.start <= p.terms[i].chunks.start && p.terms[i].chunks.end <= f.chunks.end,
                "term {i}"
            );
        }
        let groups = p.by_fetch(u64::MAX);
        assert_eq!(groups.iter().map(|g| g.1.len()).sum::<usize>(), n as usize);
    }
}
