//! Tokens, the per-block token bloom filter, and the search language.
//!
//! A token is a run of ASCII letters and digits and of non-ASCII bytes,
//! compared without ASCII case (`Error` = `error`; other scripts are
//! compared as written). A term of `q` matches a record where it occurs
//! with token boundaries at both ends (`500` matches `status=500` but not
//! `5000`); a quoted phrase matches anywhere as a substring, still without
//! ASCII case. Every term must match.
//!
//! The bloom filter of a block holds every token of its records and every
//! `field=value` pair; a search tests a block's filter before it
//! decompresses the block. Never a false negative: a term contributes only
//! the tokens it is sure to contain whole (a phrase's first and last token
//! may be parts of longer ones, so they are left out).

/// Whether `b` is part of a token.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// The token hash (FNV-1a, 64 bits, ASCII case folded). Stored in bloom
/// filters: changing it changes the block format.
pub fn token_hash(token: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in token {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash a field's value goes into the bloom filter under.
pub fn field_hash(name: &str, value: &str) -> u64 {
    let mut h = token_hash(name.as_bytes());
    h ^= 0x3d; // '='
    h = h.wrapping_mul(0x0100_0000_01b3);
    for &b in value.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Calls `each` with the hash of every token of `text`.
pub fn each_token_hash(text: &[u8], mut each: impl FnMut(u64)) {
    let mut i = 0;
    while i < text.len() {
        if !is_token_byte(text[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && is_token_byte(text[i]) {
            i += 1;
        }
        each(token_hash(&text[start..i]));
    }
}

/// Bits a bloom filter sets per value.
const BLOOM_HASHES: u32 = 4;
/// Bits per distinct value (about 2% false positives with 4 hashes... at
/// 10 bits, 1.2%).
const BITS_PER_VALUE: usize = 10;
/// The largest filter, in bytes.
const MAX_BLOOM_BYTES: usize = 1 << 20;

/// A bloom filter over token hashes: a power-of-two number of bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
}

impl Bloom {
    /// A filter holding `hashes` (need not be distinct).
    pub fn build(mut hashes: Vec<u64>) -> Bloom {
        hashes.sort_unstable();
        hashes.dedup();
        let want_bytes = (hashes.len() * BITS_PER_VALUE).div_ceil(8);
        let bytes = want_bytes.next_power_of_two().clamp(64, MAX_BLOOM_BYTES);
        let mut bloom = Bloom {
            bits: vec![0; bytes],
        };
        for h in hashes {
            bloom.insert(h);
        }
        bloom
    }

    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let mask = (self.bits.len() * 8 - 1) as u64;
        let h1 = hash;
        let h2 = hash.rotate_left(32) | 1;
        (0..BLOOM_HASHES)
            .map(move |i| (h1.wrapping_add(u64::from(i).wrapping_mul(h2)) & mask) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for p in self.positions(hash) {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    /// Whether `hash` may be in the set (false: surely not).
    pub fn may_contain(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|p| self.bits[p / 8] & (1 << (p % 8)) != 0)
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// From the stored form; `None` when it is not a filter this code
    /// writes (then the block must be read).
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
        (bytes.len() >= 64 && bytes.len().is_power_of_two()).then(|| Bloom {
            bits: bytes.to_vec(),
        })
    }

    /// Whether every hash may be in the set.
    pub fn may_contain_all(bytes: &[u8], hashes: &[u64]) -> bool {
        match Bloom::from_bytes(bytes) {
            Some(b) => hashes.iter().all(|&h| b.may_contain(h)),
            None => true,
        }
    }
}

/// One term of a query, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Matches with token boundaries at both ends.
    Token(String),
    /// Matches anywhere.
    Phrase(String),
}

/// Terms that must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The terms.
    pub terms: Vec<Term>,
}

impl Query {
    /// Parses `q`: whitespace-separated terms, `"quoted phrases"` kept
    /// whole (an unclosed quote runs to the end).
    pub fn parse(q: &str) -> Query {
        let mut terms = Vec::new();
        let mut rest = q.trim_start();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('"') {
                let (phrase, next) = after.split_once('"').unwrap_or((after, ""));
                if !phrase.is_empty() {
                    terms.push(Term::Phrase(phrase.to_ascii_lowercase()));
                }
                rest = next.trim_start();
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                terms.push(Term::Token(rest[..end].to_ascii_lowercase()));
                rest = rest[end..].trim_start();
            }
        }
        Query { terms }
    }

    /// Whether it has no term (everything matches).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The token hashes a block must hold to have a match.
    pub fn required_hashes(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for term in &self.terms {
            let (text, whole_ends) = match term {
                Term::Token(t) => (t.as_bytes(), true),
                Term::Phrase(p) => (p.as_bytes(), false),
            };
            let mut tokens = Vec::new();
            let mut i = 0;
            while i < text.len() {
                if !is_token_byte(text[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < text.len() && is_token_byte(text[i]) {
                    i += 1;
                }
                tokens.push((start, i));
            }
            for (start, end) in tokens {
                // A token touching an end of a phrase may be part of a
                // longer one in the record.
                if whole_ends || (start > 0 && end < text.len()) {
                    out.push(token_hash(&text[start..end]));
                }
            }
        }
        out
    }

    /// Whether `text` matches every term (checked on one record; for
    /// many records at once, see [`Query::matching_records`]).
    pub fn matches(&self, text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        self.terms
            .iter()
            .all(|t| term_in(t, lower.as_bytes(), 0, lower.len()))
    }

    /// Which records of a block match: `lower` is the block's text,
    /// ASCII lower-cased, `ends` where each record ends in it.
    pub fn matching_records(&self, lower: &[u8], ends: &[u32]) -> Vec<bool> {
        let mut all = vec![true; ends.len()];
        for term in &self.terms {
            let mut hit = vec![false; ends.len()];
            let needle = match term {
                Term::Token(t) | Term::Phrase(t) => t.as_bytes(),
            };
            if needle.is_empty() {
                continue;
            }
            for at in memchr::memmem::find_iter(lower, needle) {
                let record = ends.partition_point(|&e| (e as usize) <= at);
                if record >= ends.len() || hit[record] || !all[record] {
                    continue;
                }
                let start = if record == 0 {
                    0
                } else {
                    ends[record - 1] as usize
                };
                let end = ends[record] as usize;
                if at + needle.len() <= end && bounded(term, lower, at, needle.len(), start, end) {
                    hit[record] = true;
                }
            }
            for (a, h) in all.iter_mut().zip(hit) {
                *a &= h;
            }
        }
        all
    }
}

/// Whether the occurrence of `term` at `at` has token boundaries where it
/// needs them, within the record `[start, end)`.
fn bounded(term: &Term, lower: &[u8], at: usize, len: usize, start: usize, end: usize) -> bool {
    let Term::Token(t) = term else { return true };
    let t = t.as_bytes();
    let left_ok = !is_token_byte(t[0]) || at == start || !is_token_byte(lower[at - 1]);
    let right_ok = !is_token_byte(t[len - 1]) || at + len == end || !is_token_byte(lower[at + len]);
    left_ok && right_ok
}

fn term_in(term: &Term, lower: &[u8], start: usize, end: usize) -> bool {
    let needle = match term {
        Term::Token(t) | Term::Phrase(t) => t.as_bytes(),
    };
    needle.is_empty()
        || memchr::memmem::find_iter(&lower[start..end], needle)
            .any(|at| bounded(term, lower, start + at, needle.len(), start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_whole_tokens_without_case_and_phrases_anywhere() {
        let q = Query::parse("ERROR 500");
        assert!(q.matches("an error: status=500 at /x"));
        assert!(!q.matches("an error: status=5000"), "500 is not 5000");
        assert!(!q.matches("errors 500"), "error is not errors");
        let p = Query::parse("\"rror: stat\" x");
        assert_eq!(
            p.terms,
            [Term::Phrase("rror: stat".into()), Term::Token("x".into())]
        );
        assert!(p.matches("Error: status x"));
        let path = Query::parse("/api/users/12");
        assert!(path.matches("GET /api/users/12 HTTP/1.1"));
        assert!(!path.matches("GET /api/users/123 HTTP/1.1"));
    }

    #[test]
    fn block_matching_keeps_matches_inside_one_record() {
        let text = "get /a 200GET /b 500post /c 500";
        let ends = [10u32, 20, 31];
        let lower = text.to_ascii_lowercase();
        let q = Query::parse("get 500");
        assert_eq!(
            q.matching_records(lower.as_bytes(), &ends),
            [false, true, false]
        );
        // "200get" spans no boundary inside a record: the first record
        // ends at 200, so "200" matches there on its own.
        let q = Query::parse("200");
        assert_eq!(
            q.matching_records(lower.as_bytes(), &ends),
            [true, false, false]
        );
        let q = Query::parse("\"0get\"");
        assert_eq!(
            q.matching_records(lower.as_bytes(), &ends),
            [false, false, false],
            "a phrase never spans two records"
        );
    }

    #[test]
    fn the_bloom_filter_never_misses_and_mostly_refuses() {
        let mut hashes = Vec::new();
        for i in 0..5000 {
            each_token_hash(format!("GET /api/users/{i} 200").as_bytes(), |h| {
                hashes.push(h);
            });
        }
        hashes.push(field_hash("status", "200"));
        let bloom = Bloom::build(hashes);
        let stored = Bloom::from_bytes(bloom.as_bytes()).expect("round trip");
        for i in 0..5000 {
            let q = Query::parse(&format!("users {i} \"ET /api/u\""));
            assert!(Bloom::may_contain_all(
                stored.as_bytes(),
                &q.required_hashes()
            ));
        }
        assert!(stored.may_contain(field_hash("status", "200")));
        let false_positives = (0..10_000)
            .filter(|i| stored.may_contain(token_hash(format!("absent{i}").as_bytes())))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10000");
    }
}
