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

/// Whether each byte is part of a token.
static TOKEN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c >= 0x80;
        b += 1;
    }
    t
};

/// Whether `b` is part of a token.
pub fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTE[b as usize]
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
const CASE: u64 = 0x2020_2020_2020_2020;

fn mix_in(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(MIX).rotate_left(29)
}

fn finish(mut h: u64) -> u64 {
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

fn le_word(c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(c);
    u64::from_le_bytes(w)
}

/// Up to 7 bytes as the low bytes of a word.
fn tail_word(rest: &[u8]) -> u64 {
    rest.iter()
        .enumerate()
        .fold(0, |w, (k, &c)| w | (u64::from(c) << (8 * k)))
}

/// Hashes `bytes` 8 at a time; `case` is OR-ed into every byte (0x20 to
/// fold ASCII case, 0 to keep it).
pub fn bytes_hash(bytes: &[u8], case: u64) -> u64 {
    let mut h = (bytes.len() as u64).wrapping_mul(MIX);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix_in(h, le_word(c) | case);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mask = u64::MAX >> (8 * (8 - rest.len()));
        h = mix_in(h, tail_word(rest) | (case & mask));
    }
    finish(h)
}

/// The token hash: [`bytes_hash`] with every byte's bit 0x20 set (ASCII
/// letters lower-cased; digits have it already; some non-ASCII bytes are
/// merged, which only costs false positives). Stored in bloom filters:
/// changing it changes the block format.
pub fn token_hash(token: &[u8]) -> u64 {
    bytes_hash(token, CASE)
}

/// The hash a field's value goes into the bloom filter under.
pub fn field_hash(name: &str, value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes().iter().chain(b"=").chain(value.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    finish(h)
}

/// Calls `each` with the hash of every token of `text` (the same as
/// [`token_hash`] of the token; a token's last bytes are read as a whole
/// word when the text goes on past it).
pub fn each_token_hash(text: &[u8], mut each: impl FnMut(u64)) {
    let mut i = 0;
    let n = text.len();
    while i < n {
        while i < n && !TOKEN_BYTE[text[i] as usize] {
            i += 1;
        }
        let start = i;
        while i < n && TOKEN_BYTE[text[i] as usize] {
            i += 1;
        }
        if i == start {
            continue;
        }
        let len = i - start;
        let mut h = (len as u64).wrapping_mul(MIX);
        let mut at = start;
        while at + 8 <= i {
            h = mix_in(h, le_word(&text[at..at + 8]) | CASE);
            at += 8;
        }
        let rest = i - at;
        if rest > 0 {
            let mask = u64::MAX >> (8 * (8 - rest));
            let w = if at + 8 <= n {
                le_word(&text[at..at + 8]) & mask
            } else {
                tail_word(&text[at..i])
            };
            h = mix_in(h, w | (CASE & mask));
        }
        each(finish(h));
    }
}

/// Bits a bloom filter sets per value, all in one 64-bit word.
const BLOOM_HASHES: u32 = 4;
/// A filter is folded in half while it stays at most this full (about 1%
/// false positives with 4 bits in a word).
const MAX_FILL: f64 = 0.3;
/// The largest filter, in bytes.
const MAX_BLOOM_BYTES: usize = 1 << 20;
/// The smallest filter, in bytes.
const MIN_BLOOM_BYTES: usize = 64;

/// A blocked bloom filter over token hashes: a power-of-two number of
/// 64-bit words; a hash picks one word (its high bits) and sets 4 bits in
/// it (four 6-bit slices of its low bits), so an insert or a test touches
/// one word.
///
/// Built without sorting or de-duplicating the hashes: every hash goes
/// into a filter sized for all of them (repeats included), which is then
/// folded in half (its halves OR-ed: a hash's word is its high bits modulo
/// the size, so a folded filter is the one that size would have given)
/// while it stays under [`MAX_FILL`]. Stored as the words, little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    /// A filter sized for at most `values` insertions.
    pub fn with_capacity(values: usize) -> Bloom {
        let bytes = (values * 10)
            .div_ceil(8)
            .next_power_of_two()
            .clamp(MIN_BLOOM_BYTES, MAX_BLOOM_BYTES);
        Bloom {
            words: vec![0; bytes / 8],
        }
    }

    /// A filter holding `hashes`.
    pub fn build(hashes: Vec<u64>) -> Bloom {
        let mut bloom = Bloom::with_capacity(hashes.len());
        for h in hashes {
            bloom.insert(h);
        }
        bloom.shrink();
        bloom
    }

    fn place(&self, hash: u64) -> (usize, u64) {
        let word = ((hash >> 32) as usize) & (self.words.len() - 1);
        let bits = (0..BLOOM_HASHES).fold(0u64, |m, i| m | 1 << ((hash >> (6 * i)) & 63));
        (word, bits)
    }

    /// Adds a hash.
    pub fn insert(&mut self, hash: u64) {
        let (word, bits) = self.place(hash);
        self.words[word] |= bits;
    }

    /// Folds the filter in half while it stays under [`MAX_FILL`].
    pub fn shrink(&mut self) {
        while self.words.len() * 8 > MIN_BLOOM_BYTES {
            let half = self.words.len() / 2;
            let folded: Vec<u64> = self.words[..half]
                .iter()
                .zip(&self.words[half..])
                .map(|(a, b)| a | b)
                .collect();
            let set: u64 = folded.iter().map(|w| u64::from(w.count_ones())).sum();
            if set as f64 > MAX_FILL * (folded.len() * 64) as f64 {
                return;
            }
            self.words = folded;
        }
    }

    /// Whether `hash` may be in the set (false: surely not).
    pub fn may_contain(&self, hash: u64) -> bool {
        let (word, bits) = self.place(hash);
        self.words[word] & bits == bits
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// From the stored form; `None` when it is not a filter this code
    /// writes (then the block must be read).
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
        (bytes.len() >= MIN_BLOOM_BYTES && bytes.len().is_power_of_two()).then(|| Bloom {
            words: bytes.chunks_exact(8).map(le_word).collect(),
        })
    }

    /// Whether every hash may be in the set.
    /// Reads the stored form in place (a search tests thousands).
    pub fn may_contain_all(bytes: &[u8], hashes: &[u64]) -> bool {
        if bytes.len() < MIN_BLOOM_BYTES || !bytes.len().is_power_of_two() {
            return true;
        }
        let words = bytes.len() / 8;
        hashes.iter().all(|&hash| {
            let word = ((hash >> 32) as usize) & (words - 1);
            let bits = (0..BLOOM_HASHES).fold(0u64, |m, i| m | 1 << ((hash >> (6 * i)) & 63));
            le_word(&bytes[word * 8..word * 8 + 8]) & bits == bits
        })
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
    fn the_token_hash_ignores_ascii_case_and_reads_tokens_in_text_alike() {
        let text = b"GET /api/Users/1234567890abcdefXY?q=ErrorCodeTwelve HTTP/1.1";
        let mut in_text = Vec::new();
        each_token_hash(text, |h| in_text.push(h));
        let alone: Vec<u64> = [
            "get",
            "api",
            "users",
            "1234567890abcdefxy",
            "q",
            "errorcodetwelve",
            "http",
            "1",
            "1",
        ]
        .iter()
        .map(|t| token_hash(t.as_bytes()))
        .collect();
        assert_eq!(in_text, alone);

        assert_eq!(token_hash(b"ErrorCode12"), token_hash(b"errorcode12"));
        assert_ne!(token_hash(b"error"), token_hash(b"errors"));
        assert_ne!(token_hash(b"abcdefgh"), token_hash(b"abcdefgh\0"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000u32 {
            assert!(seen.insert(token_hash(i.to_string().as_bytes())), "{i}");
        }
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
        let stored = Bloom::from_bytes(&bloom.to_bytes()).expect("round trip");
        for i in 0..5000 {
            let q = Query::parse(&format!("users {i} \"ET /api/u\""));
            assert!(Bloom::may_contain_all(
                &stored.to_bytes(),
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
