//! Project license keys: their format, checksum, masking and generation,
//! and [`redact`], the one filter every echo of outside text goes through.
//!
//! A key looks like `sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM`: a version tag,
//! 26 Crockford base32 characters of secret (128 random bits), and 7
//! characters of CRC-32 over the first two parts. The checksum lets an agent
//! refuse a mistyped key before it connects; only the collector can tell
//! whether the secret belongs to a project.
//!
//! Invariants:
//! - A [`License`] never prints whole: `Display` and `Debug` both mask it to
//!   the first and last four characters. Only [`License::expose`] gives the
//!   full text, for the one place it must go on the wire.
//! - Parse errors never contain the key.
//! - [`redact`] never lets more than the first and last four characters of
//!   anything shaped like a key through, and is idempotent: redacting a
//!   redacted text changes nothing.

use std::fmt;

const VERSION_TAG: &str = "sl1";
const SECRET_CHARS: usize = 26;
const CHECK_CHARS: usize = 7;
/// The length of a well-formed key: `sl1-` + secret + `-` + checksum.
pub const KEY_LEN: usize = VERSION_TAG.len() + 1 + SECRET_CHARS + 1 + CHECK_CHARS;

/// Crockford's base32 alphabet: no I, L, O or U to misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A well-formed license key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct License(String);

/// Why a key is not well-formed. The messages never include the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// Nothing was given.
    #[error("the license key is empty")]
    Empty,
    /// Wrong length: truncated or pasted twice.
    #[error(
        "the license key {masked} has {len} characters, a key has {KEY_LEN}: was it cut off or pasted twice?"
    )]
    Length {
        /// The masked key.
        masked: String,
        /// Its length.
        len: usize,
    },
    /// Not `sl1-...-...`.
    #[error("the license key {masked} is not of the form sl1-<26 characters>-<7 characters>")]
    Shape {
        /// The masked key.
        masked: String,
    },
    /// A character outside the key alphabet.
    #[error(
        "the license key {masked} contains '{ch}' at position {position}, which no key contains"
    )]
    Character {
        /// The masked key.
        masked: String,
        /// The offending character.
        ch: char,
        /// 1-based position.
        position: usize,
    },
    /// The checksum does not match: a typo.
    #[error("the license key {masked} fails its checksum: a character is mistyped")]
    Checksum {
        /// The masked key.
        masked: String,
    },
}

impl License {
    /// Checks the format and checksum. Case and surrounding white space are
    /// forgiven; the usual misreadings (O for 0, I or L for 1) are mapped as
    /// Crockford base32 prescribes.
    pub fn parse(text: &str) -> Result<License, LicenseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(LicenseError::Empty);
        }
        let masked = mask(text);
        let len = text.chars().count();
        if len != KEY_LEN {
            return Err(LicenseError::Length { masked, len });
        }
        let upper = text.to_ascii_uppercase();
        let mut parts = upper.split('-');
        let (Some(tag), Some(secret), Some(check), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LicenseError::Shape { masked });
        };
        if tag != VERSION_TAG.to_ascii_uppercase()
            || secret.len() != SECRET_CHARS
            || check.len() != CHECK_CHARS
        {
            return Err(LicenseError::Shape { masked });
        }
        let mut normal = String::with_capacity(KEY_LEN);
        normal.push_str(VERSION_TAG);
        normal.push('-');
        let offset = VERSION_TAG.len() + 1;
        for (i, c) in secret
            .chars()
            .chain(std::iter::once('-'))
            .chain(check.chars())
            .enumerate()
        {
            if c == '-' {
                normal.push('-');
                continue;
            }
            let c = match c {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return Err(LicenseError::Character {
                    masked,
                    ch: c,
                    position: offset + i + 1,
                });
            }
            normal.push(c);
        }
        let (body, check) = normal.split_at(VERSION_TAG.len() + 1 + SECRET_CHARS);
        if checksum(body) != check[1..] {
            return Err(LicenseError::Checksum { masked });
        }
        Ok(License(normal))
    }

    /// Makes a new random key (the collector's `project create`).
    pub fn generate() -> Result<License, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let mut body = String::with_capacity(KEY_LEN);
        body.push_str(VERSION_TAG);
        body.push('-');
        body.push_str(&encode_base32(&bytes, SECRET_CHARS));
        let check = checksum(&body);
        Ok(License(format!("{body}-{check}")))
    }

    /// The full key. Call only to put it on the wire or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key masked for logs and output: `sl1-…VFA0`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Display for License {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for License {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "License({})", self.masked())
    }
}

/// The first and last four characters of a secret, the rest elided.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "…".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The prefix of the collector's API tokens (`slt-` and 48 hex digits).
pub const TOKEN_PREFIX: &str = "slt-";

/// Runs of this many key characters or more are taken for secrets.
const SECRET_RUN: usize = 16;

/// `text` with everything shaped like a secret masked as [`mask`] does:
/// a license key (`sl1-` and base32, any case, whole or cut), an API token
/// (`slt-` and hex), a piece of a key without its prefix (8 or more
/// upper-case letters and digits, mixed), and any run of 16 or more base32, hex or
/// base64 characters (a password, another system's token). Every echo of text from
/// outside the process (a config line, a value in an error, a `Debug`) goes
/// through here.
///
/// A run is a maximal stretch of ASCII letters, digits and `+ / _ -`. Long
/// runs that are words and numbers joined by `/ _ -` are kept, each part all
/// digits, all lower case, or a short upper-case word: they are what error
/// messages are made of (`/tmp/e2e-host-port-10496/infra`,
/// `sightline-collector`, `SIGHTLINE_SERVER_PORT`, a `createdtime`), and a
/// generated secret mixes letters and digits. A lower-case passphrase is
/// therefore only masked by its key's name (see [`is_secret_key`]), not by
/// its shape.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run_start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_run_char(c) {
            run_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = run_start.take() {
            out.push_str(&redact_run(&text[start..i]));
        }
        out.push(c);
    }
    if let Some(start) = run_start {
        out.push_str(&redact_run(&text[start..]));
    }
    out
}

/// Whether the value of `key` is a secret as a whole: `license`, and any
/// key whose last segment ends in `password`, `secret` or `token`.
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    key == "license"
        || ["password", "secret", "token"]
            .iter()
            .any(|word| last.ends_with(word))
}

/// The value of `key` as it may be shown: masked whole when the key names a
/// secret, [`redact`]ed otherwise.
pub fn redact_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        mask(value)
    } else {
        redact(value)
    }
}

fn is_run_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '_' | '-')
}

fn redact_run(run: &str) -> String {
    let lower = run.to_ascii_lowercase();
    // A key or token prefix followed by at least one character: masked
    // whatever its length. A bare prefix (as in an already masked
    // `sl1-…VFA0`) is kept, so redacting twice changes nothing.
    for prefix in ["sl1-", TOKEN_PREFIX] {
        if let Some(at) = lower.find(prefix)
            && run.len() > at + prefix.len()
        {
            return mask(run);
        }
    }
    if looks_like_key_fragment(run) {
        return mask(run);
    }
    if run.len() < SECRET_RUN || looks_like_words(run) {
        run.to_string()
    } else {
        mask(run)
    }
}

/// A piece of a license key without its `sl1-`: 8 or more upper-case
/// letters and digits, as keys are printed, switching between the two at
/// least three times (`7K3M9QW2`; not `RFC3339` or `IPV6ONLY`). Lower case
/// is left to the 16-character rule: `web01prod` is a host name.
fn looks_like_key_fragment(run: &str) -> bool {
    const SHORTEST_FRAGMENT: usize = 8;
    const FEWEST_SWITCHES: usize = 3;
    let bytes = run.as_bytes();
    bytes.len() >= SHORTEST_FRAGMENT
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && bytes
            .windows(2)
            .filter(|pair| pair[0].is_ascii_digit() != pair[1].is_ascii_digit())
            .count()
            >= FEWEST_SWITCHES
}

/// Words and numbers joined by `/ _ -`: each part all digits, all lower
/// case, capitalised (`/home/Alice`), a short word in upper case (`SIGHTLINE_SERVER_PORT`), or at most
/// six lower-case letters and digits (`e2e`, `ipv6`, `sha256`, `http1`).
/// Mixed case, a longer mix of letters and digits, or a long upper-case
/// part looks random.
fn looks_like_words(run: &str) -> bool {
    const LONGEST_UPPER_WORD: usize = 12;
    const LONGEST_MIXED_WORD: usize = 6;
    run.split(['/', '_', '-']).all(|word| {
        let mut bytes = word.bytes();
        let capitalised = bytes.next().is_some_and(|b| b.is_ascii_uppercase())
            && bytes.all(|b| b.is_ascii_lowercase());
        word.bytes().all(|b| b.is_ascii_digit())
            || word.bytes().all(|b| b.is_ascii_lowercase())
            || capitalised
            || (word.len() <= LONGEST_UPPER_WORD && word.bytes().all(|b| b.is_ascii_uppercase()))
            || (word.len() <= LONGEST_MIXED_WORD
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    })
}

/// CRC-32 of `body`, as 7 base32 characters.
fn checksum(body: &str) -> String {
    let crc = crc32fast::hash(body.as_bytes());
    encode_base32(&crc.to_be_bytes(), CHECK_CHARS)
}

/// The first `chars` base32 digits of `bytes`, most significant first,
/// zero-padded at the end.
pub(crate) fn encode_base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut input = bytes.iter();
    while out.len() < chars {
        if bits < 5 {
            let next = input.next().copied().unwrap_or(0);
            acc = (acc << 8) | u64::from(next);
            bits += 8;
        }
        let index = ((acc >> (bits - 5)) & 0x1f) as usize;
        bits -= 5;
        out.push(ALPHABET[index] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for _ in 0..100 {
            let key = License::generate().expect("randomness");
            assert_eq!(key.expose().len(), KEY_LEN);
            assert_eq!(License::parse(key.expose()), Ok(key.clone()));
            assert_eq!(
                License::parse(&key.expose().to_ascii_lowercase()),
                Ok(key.clone())
            );
        }
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let key = License::generate().expect("randomness");
        let text = key.expose();
        for position in 4..text.len() {
            if text.as_bytes()[position] == b'-' {
                continue;
            }
            for &replacement in ALPHABET {
                if replacement == text.as_bytes()[position] {
                    continue;
                }
                let mut typo = text.as_bytes().to_vec();
                typo[position] = replacement;
                let typo = String::from_utf8(typo).expect("ascii");
                assert!(
                    License::parse(&typo).is_err(),
                    "typo at {position} accepted"
                );
            }
        }
    }

    #[test]
    fn transposed_neighbours_are_caught() {
        let key = License::generate().expect("randomness");
        let text = key.expose().as_bytes().to_vec();
        for i in 4..text.len() - 1 {
            if text[i] == text[i + 1] || text[i] == b'-' || text[i + 1] == b'-' {
                continue;
            }
            let mut swapped = text.clone();
            swapped.swap(i, i + 1);
            let swapped = String::from_utf8(swapped).expect("ascii");
            assert!(License::parse(&swapped).is_err(), "swap at {i} accepted");
        }
    }

    #[test]
    fn errors_never_contain_the_key() {
        let key = License::generate().expect("randomness");
        let text = key.expose();
        let cases = [
            format!("{text}x"),
            text[..KEY_LEN - 1].to_string(),
            text.replacen('-', "+", 1),
            format!("{}U", &text[..KEY_LEN - 1]),
            format!(
                "{}{}",
                &text[..KEY_LEN - 1],
                if text.ends_with('0') { '1' } else { '0' }
            ),
        ];
        for case in cases {
            let err = License::parse(&case).expect_err("malformed");
            let message = err.to_string();
            assert!(!message.contains(&case), "{message}");
            assert!(!message.contains(&text[4..KEY_LEN - 4]), "{message}");
        }
    }

    #[test]
    fn display_and_debug_are_masked() {
        let key = License::generate().expect("randomness");
        let shown = format!("{key} {key:?}");
        assert!(!shown.contains(key.expose()));
        assert!(shown.contains(&key.expose()[..4]));
        assert!(shown.contains(&key.expose()[KEY_LEN - 4..]));
    }

    /// Every 8-character window of `secret`.
    fn windows(secret: &str) -> Vec<&str> {
        (0..=secret.len() - 8).map(|i| &secret[i..i + 8]).collect()
    }

    #[test]
    fn redact_masks_license_keys_whole_cut_and_in_any_case() {
        let key = License::generate().expect("randomness");
        let text = key.expose();
        let secret = &text[4..4 + SECRET_CHARS];
        let cases = [
            text.to_string(),
            text.to_ascii_lowercase(),
            text[..20].to_string(),
            text[..KEY_LEN - 3].to_string(),
            format!("license:{text}"),
            format!("'{text}'"),
            format!("my key is {text}, please"),
        ];
        for case in cases {
            let shown = redact(&case);
            for window in windows(secret) {
                assert!(
                    !shown.to_ascii_uppercase().contains(window),
                    "{case:?} shown as {shown:?}"
                );
            }
            assert!(shown.contains('…'), "{case:?} shown as {shown:?}");
        }
        assert_eq!(redact(text), mask(text));
    }

    #[test]
    fn redact_masks_pieces_of_a_key_without_its_prefix() {
        let secret = "7K3M9QW2XH8D4R6TBN1PZC5VFA";
        for piece in [&secret[..10], &secret[8..20], &secret[3..11]] {
            let shown = redact(&format!("got '{piece}' here"));
            assert_eq!(shown, format!("got '{}' here", mask(piece)), "{piece}");
        }
        // Host names and words stay.
        for text in [
            "web01prod.lan",
            "SIGHTLINE_SERVER_PORT",
            "RFC3339",
            "IPV6ONLY",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn redact_masks_api_tokens_and_long_random_runs() {
        let token = format!("{TOKEN_PREFIX}{}", "0123456789abcdef".repeat(3));
        assert_eq!(redact(&token), "slt-…cdef");
        assert_eq!(
            redact("Bearer slt-00ff11, then"),
            "Bearer slt-…ff11, then",
            "a cut token too"
        );
        // A base64 password, a hex digest, another system's token.
        for secret in [
            "hQ7+vX2/kP9wZr4NtY6b",
            "9f86d081884c7d659a2feaa0c55ad015",
            "550e8400-e29b-41d4-a716-446655440000",
            "ghp_R2d2C3p0X9y8Z7w6V5u4T3s2R1q0",
            "ABCDEFGHJKMNPQRSTVWX",
        ] {
            let shown = redact(&format!("got '{secret}' here"));
            assert_eq!(shown, format!("got '{}' here", mask(secret)), "{secret}");
        }
    }

    /// Random secrets of the shapes other systems use, embedded in a
    /// sentence: none shows 8 characters in a row. Seeded, so it cannot
    /// flake. (A hex run of decimal digits only is kept by design, as a
    /// number; about one in 2,000 of 16 characters.)
    #[test]
    fn redact_masks_random_secrets_of_every_alphabet() {
        const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const HEX: &[u8] = b"0123456789abcdef";
        let mut rng = fastrand::Rng::with_seed(6);
        for (alphabet, shortest) in [(BASE64, 16), (HEX, 16), (ALPHABET.as_slice(), 16)] {
            for _ in 0..2000 {
                let len = rng.usize(shortest..64);
                let secret: String = (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                    .collect();
                let shown = redact(&format!("expected key=value, got '{secret}'"));
                for window in windows(&secret) {
                    assert!(!shown.contains(window), "{secret} shown as {shown}");
                }
            }
        }
    }

    #[test]
    fn redact_keeps_ordinary_text() {
        for text in [
            "expected key=value, got 'server.host 10.0.0.1'",
            "/var/lib/sightline/infra/spool is not writable",
            "createdtime=1763855712345678901",
            "run `sightline-collector project create` there",
            "environment variable SIGHTLINE_SERVER_PORT",
            "/tmp/sightline-e2e-host-port-10496-0/infra.conf:3",
            "/tmp/sl-diagnose-4242/http1-host.conf: x86_64 sha256",
            "/home/Alice/Documents/infra.conf",
            "unknown key 'spool.maxx', ignored; did you mean 'spool.max'?",
            "a short Secret1 stays",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn redact_is_idempotent_and_keeps_masks() {
        let key = License::generate().expect("randomness");
        let once = redact(&format!(
            "key {} and token slt-{}",
            key.expose(),
            "ab".repeat(24)
        ));
        assert_eq!(redact(&once), once);
        assert_eq!(redact(&key.masked()), key.masked());
    }

    #[test]
    fn secret_keys_are_masked_whole() {
        for key in [
            "license",
            "db.password",
            "api.token",
            "s3.secret",
            "db.clientsecret",
        ] {
            assert!(is_secret_key(key), "{key}");
            assert_eq!(redact_value(key, "hunter2hunter2"), "hunt…ter2");
        }
        for key in ["server.host", "tokens.max", "secretary.name"] {
            assert!(!is_secret_key(key), "{key}");
            assert_eq!(redact_value(key, "hunter2hunter2"), "hunter2hunter2");
        }
    }

    #[test]
    fn confusable_letters_are_read_as_digits() {
        let key = License::generate().expect("randomness");
        let text = key.expose();
        // Find a 0 or 1 in the secret and write it as O or l.
        if let Some(pos) = text[4..].find(['0', '1']).map(|p| p + 4) {
            let mut misread = text.to_string();
            let with = if &text[pos..=pos] == "0" { "O" } else { "l" };
            misread.replace_range(pos..=pos, with);
            assert_eq!(License::parse(&misread), Ok(key));
        }
    }
}
