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
        self.bytes.1 + 1 - self.bytes.0
    }
}

/// The reconstruction of a file range starting at `from`.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) terms: Vec<Term>,
    pub(super) fetches: Vec<Fetch>,
}

/// Caps what one answer may describe, so a lying CAS cannot make us allocate without
/// end: a term is at most a xorb's 8 Ki chunks of 128 KiB.
const MAX_TERM: u64 = 8 * 1024 * super::format::MAX_CHUNK as u64;

impl Plan {
    pub(super) fn from_v1(a: AnswerV1, from: u64) -> Result<Plan, XetError> {
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
        Plan::checked(a.terms, a.offset_into_first_range, from, fetches)
    }

    pub(super) fn from_v2(a: AnswerV2, from: u64) -> Result<Plan, XetError> {
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
        Plan::checked(a.terms, a.offset_into_first_range, from, fetches)
    }

    /// Places the terms in the file and checks that every term has a fetch that
    /// covers it and that every number is sane.
    fn checked(
        wire: Vec<WireTerm>,
        offset: u64,
        from: u64,
        fetches: Vec<Fetch>,
    ) -> Result<Plan, XetError> {
        let mut at = from
            .checked_sub(offset)
            .ok_or_else(|| XetError::Malformed("offset_into_first_range past the range".into()))?;
        let mut terms = Vec::with_capacity(wire.len());
        for t in wire {
            let len = u64::from(t.unpacked_length);
            if !is_hash(&t.hash) || t.range.start >= t.range.end || len == 0 || len > MAX_TERM {
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
        for f in &fetches {
            if !is_hash(&f.xorb) || f.chunks.start >= f.chunks.end || f.bytes.1 < f.bytes.0 {
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
        if let Some(t) = terms.iter().find(|t| Plan::fetch_of(&fetches, t).is_none()) {
            return Err(XetError::Malformed(format!(
                "no URL serves chunks {}..{} of xorb {:.16}",
                t.chunks.start, t.chunks.end, t.xorb
            )));
        }
        Ok(Plan { terms, fetches })
    }

    /// The fetch whose chunks hold all of `term`'s.
    pub(super) fn fetch_of<'a>(fetches: &'a [Fetch], term: &Term) -> Option<&'a Fetch> {
        fetches.iter().find(|f| {
            f.xorb == term.xorb
                && f.chunks.start <= term.chunks.start
                && term.chunks.end <= f.chunks.end
        })
    }
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
        let p = Plan::from_v1(serde_json::from_value(v1).unwrap(), 4196).unwrap();
        assert_eq!(p.terms[0].at, 4096);
        assert_eq!(p.terms[1].at, 5096);
        let f = Plan::fetch_of(&p.fetches, &p.terms[1]).unwrap();
        assert_eq!((f.url.as_str(), f.size()), ("http://x/b", 31));
        let v2 = serde_json::json!({
            "offset_into_first_range": 0,
            "terms": [{"hash": h('c'), "unpacked_length": 10, "range": {"start": 5, "end": 6}}],
            "xorbs": {h('c'): [{"url": "http://x/c", "ranges": [
                {"chunks": {"start": 0, "end": 1}, "bytes": {"start": 0, "end": 9}},
                {"chunks": {"start": 5, "end": 8}, "bytes": {"start": 30, "end": 90}}
            ]}]}
        });
        let p = Plan::from_v2(serde_json::from_value(v2).unwrap(), 0).unwrap();
        assert_eq!(
            Plan::fetch_of(&p.fetches, &p.terms[0]).unwrap().bytes,
            (30, 90)
        );
    }

    #[test]
    fn answers_that_make_no_sense_are_refused() {
        let bad = |terms: serde_json::Value, from: u64| {
            let v = serde_json::json!({"offset_into_first_range": 10, "terms": terms,
                "fetch_info": {h('a'): [{"range": {"start": 0, "end": 9}, "url": "u", "url_range": {"start": 0, "end": 9}}]}});
            Plan::from_v1(serde_json::from_value(v).unwrap(), from).is_err()
        };
        let term = |x: &str, s: u32, e: u32, l: u64| serde_json::json!([{"hash": x, "unpacked_length": l, "range": {"start": s, "end": e}}]);
        assert!(!bad(term(&h('a'), 0, 2, 5), 10));
        assert!(
            bad(term(&h('a'), 0, 2, 5), 3),
            "offset past the range start"
        );
        assert!(bad(term(&h('a'), 2, 2, 5), 10), "no chunks");
        assert!(bad(term(&h('a'), 0, 2, 0), 10), "no bytes");
        assert!(bad(term("../x", 0, 2, 5), 10), "not a hash");
        assert!(bad(term(&h('b'), 0, 2, 5), 10), "nothing serves it");
        assert!(bad(term(&h('a'), 5, 12, 5), 10), "past the fetch");
    }
}
