//! The byte layouts of metric blobs: a head row (one metrics payload: the
//! series ids and values of one agent at one time) and a chunk (one
//! series' points over a span). Pure functions, no SQL, no IO; decoding
//! never panics on damaged bytes, it returns [`CodecError`].
//!
//! Both layouts share one value code, a varint whose two low bits say what
//! follows: an integer, hundredths (a gauge with two decimals), the raw
//! f64 (any other value, NaN and -0.0 included), or (in a chunk only) the
//! difference from the previous value in its scale, when that is shorter
//! (a counter). A value decodes to the very bits it was encoded from.
//!
//! - Head row: `count`, then per pair `series id delta` (ids ascending, the
//!   first one absolute) and `value`.
//! - Chunk: `count`, the first time (zigzag), then per later point the
//!   delta of its time delta (zigzag: 0 for a steady interval), and per
//!   point its `value`.

/// A blob that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum CodecError {
    /// The bytes end in the middle of a value.
    #[error("metric blob truncated")]
    Truncated,
    /// A varint longer than 64 bits.
    #[error("metric blob has an overlong varint")]
    Overlong,
    /// Bytes left after the last value, or a count beyond the bytes.
    #[error("metric blob has a bad length")]
    Length,
    /// A delta with no integer before it.
    #[error("metric blob has a delta with nothing to add it to")]
    Delta,
}

impl From<CodecError> for crate::store::StoreError {
    fn from(e: CodecError) -> Self {
        crate::store::StoreError::Corrupt(e.to_string())
    }
}

const TAG_INTEGER: u64 = 0;
const TAG_HUNDREDTHS: u64 = 1;
const TAG_FLOAT: u64 = 2;
/// In a chunk: the difference from the previous value, in its scale.
const TAG_DELTA: u64 = 3;
/// Integers whose shifted zigzag form fits in 64 bits.
const INTEGER_LIMIT: f64 = (1u64 << 60) as f64;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A reader over a blob.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl Bytes<'_> {
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for (i, byte) in self.rest.iter().enumerate() {
            if i >= 10 {
                return Err(CodecError::Overlong);
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(v);
            }
        }
        Err(CodecError::Truncated)
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or(CodecError::Truncated)?;
        self.rest = tail;
        Ok(f64::from_le_bytes(*head))
    }

    /// A value; `previous` is the one before it in a chunk (always `None`
    /// in a head row), which a delta refers to.
    fn value(&mut self, previous: &mut Option<Value>) -> Result<f64, CodecError> {
        let word = self.varint()?;
        let value = match word & 3 {
            TAG_INTEGER => Value::Integer(unzigzag(word >> 2)),
            TAG_HUNDREDTHS => Value::Hundredths(unzigzag(word >> 2)),
            TAG_FLOAT => Value::Float(self.f64()?),
            _ => match *previous {
                Some(Value::Integer(i)) => Value::Integer(i.wrapping_add(unzigzag(word >> 2))),
                Some(Value::Hundredths(i)) => {
                    Value::Hundredths(i.wrapping_add(unzigzag(word >> 2)))
                }
                _ => return Err(CodecError::Delta),
            },
        };
        *previous = Some(value);
        Ok(value.to_f64())
    }

    /// A count, checked against the bytes left (every item takes one).
    fn count(&mut self) -> Result<usize, CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError::Length)?;
        if n > self.rest.len() {
            return Err(CodecError::Length);
        }
        Ok(n)
    }

    fn end(&self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Length)
        }
    }
}

/// A value as it is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Integer(i64),
    Hundredths(i64),
    Float(f64),
}

impl Value {
    /// The smallest exact form of `v` (same bits back).
    fn of(v: f64) -> Value {
        if let Some(i) = as_integer(v) {
            return Value::Integer(i);
        }
        if v.abs() < INTEGER_LIMIT / 100.0
            && let Some(i) = as_integer((v * 100.0).round())
            && ((i as f64) / 100.0).to_bits() == v.to_bits()
        {
            return Value::Hundredths(i);
        }
        Value::Float(v)
    }

    fn to_f64(self) -> f64 {
        match self {
            Value::Integer(i) => i as f64,
            Value::Hundredths(i) => i as f64 / 100.0,
            Value::Float(v) => v,
        }
    }
}

/// The integer `v` is, when it is one exactly (same bits back).
fn as_integer(v: f64) -> Option<i64> {
    if v.abs() < INTEGER_LIMIT && v.fract() == 0.0 {
        let i = v as i64;
        ((i as f64).to_bits() == v.to_bits()).then_some(i)
    } else {
        None
    }
}

/// Writes `v`; as a delta from `previous` when that is shorter (a counter
/// in a chunk). Head rows pass `None`.
fn put_value(out: &mut Vec<u8>, v: f64, previous: &mut Option<Value>) {
    let value = Value::of(v);
    let plain = |i: i64, tag: u64| (zigzag(i) << 2) | tag;
    let word = match (value, *previous) {
        (Value::Integer(i), Some(Value::Integer(p)))
        | (Value::Hundredths(i), Some(Value::Hundredths(p))) => {
            let tag = if matches!(value, Value::Integer(_)) {
                TAG_INTEGER
            } else {
                TAG_HUNDREDTHS
            };
            let delta = plain(i.wrapping_sub(p), TAG_DELTA);
            Some(delta.min(plain(i, tag)))
        }
        (Value::Integer(i), _) => Some(plain(i, TAG_INTEGER)),
        (Value::Hundredths(i), _) => Some(plain(i, TAG_HUNDREDTHS)),
        (Value::Float(_), _) => None,
    };
    match word {
        Some(word) => put_varint(out, word),
        None => {
            put_varint(out, TAG_FLOAT);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    *previous = Some(value);
}

/// Encodes one payload's pairs; `pairs` must be sorted by series id with
/// no id twice.
pub(super) fn encode_row(pairs: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + pairs.len() * 4);
    put_varint(&mut out, pairs.len() as u64);
    let mut previous = 0i64;
    for &(id, value) in pairs {
        put_varint(&mut out, zigzag(id.wrapping_sub(previous)));
        previous = id;
        put_value(&mut out, value, &mut None);
    }
    out
}

/// Decodes a head row into (series id, value) pairs, ids ascending.
pub(super) fn decode_row(blob: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let mut bytes = Bytes { rest: blob };
    let n = bytes.count()?;
    let mut pairs = Vec::with_capacity(n);
    let mut id = 0i64;
    for _ in 0..n {
        id = id.wrapping_add(unzigzag(bytes.varint()?));
        pairs.push((id, bytes.value(&mut None)?));
    }
    bytes.end()?;
    Ok(pairs)
}

/// Encodes one series' points; `points` must be sorted by time with no
/// time twice.
pub(super) fn encode_chunk(points: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + points.len() * 3);
    put_varint(&mut out, points.len() as u64);
    let (mut previous, mut delta) = (0i64, 0i64);
    let mut last = None;
    for (i, &(ts, value)) in points.iter().enumerate() {
        if i == 0 {
            put_varint(&mut out, zigzag(ts));
        } else {
            let d = ts.wrapping_sub(previous);
            put_varint(&mut out, zigzag(d.wrapping_sub(delta)));
            delta = d;
        }
        previous = ts;
        put_value(&mut out, value, &mut last);
    }
    out
}

/// Decodes a chunk into (time, value) points, oldest first.
pub(super) fn decode_chunk(blob: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let mut bytes = Bytes { rest: blob };
    let n = bytes.count()?;
    let mut points = Vec::with_capacity(n);
    let (mut ts, mut delta) = (0i64, 0i64);
    let mut last = None;
    for i in 0..n {
        if i == 0 {
            ts = unzigzag(bytes.varint()?);
        } else {
            delta = delta.wrapping_add(unzigzag(bytes.varint()?));
            ts = ts.wrapping_add(delta);
        }
        points.push((ts, bytes.value(&mut last)?));
    }
    bytes.end()?;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    const AWKWARD: [f64; 17] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        37.42,
        -0.01,
        0.1 + 0.2,
        1e300,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1_152_921_504_606_846_976.0,
        9_007_199_254_740_993.0,
        1_152_921_504_606_846_975.0,
        -1_152_921_504_606_846_975.0,
        11_529_215_046_068_469.75,
    ];

    #[test]
    fn a_row_gives_back_the_bits_it_was_given() {
        let pairs: Vec<(i64, f64)> = AWKWARD
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 3 + 1, *v))
            .collect();
        let decoded = decode_row(&encode_row(&pairs)).expect("decodes");
        assert!(same_bits(&pairs, &decoded), "{decoded:?}");
    }

    #[test]
    fn a_chunk_gives_back_the_bits_and_times_it_was_given() {
        let times = [
            -5000i64,
            0,
            5000,
            10_000,
            15_001,
            20_000,
            i64::MAX / 2,
            i64::MAX / 2 + 1,
            i64::MAX / 2 + 7,
            i64::MAX / 2 + 8,
            i64::MAX / 2 + 9,
            i64::MAX / 2 + 100,
            i64::MAX / 2 + 101,
            i64::MAX / 2 + 102,
            i64::MAX / 2 + 103,
            i64::MAX / 2 + 104,
            i64::MAX / 2 + 105,
        ];
        let points: Vec<(i64, f64)> = AWKWARD.iter().zip(times).map(|(v, t)| (t, *v)).collect();
        let decoded = decode_chunk(&encode_chunk(&points)).expect("decodes");
        assert!(same_bits(&points, &decoded), "{decoded:?}");
        assert_eq!(decode_chunk(&encode_chunk(&[])).expect("empty"), []);
    }

    #[test]
    fn steady_points_take_few_bytes() {
        // What the load generator sends: a counter and a two-decimal gauge.
        let counter: Vec<(i64, f64)> = (0..240)
            .map(|k| {
                (
                    1_700_000_000_000 + k * 5000,
                    3_000_100.0 + k as f64 * 2048.0,
                )
            })
            .collect();
        let gauge: Vec<(i64, f64)> = (0..240)
            .map(|k| {
                (
                    1_700_000_000_000 + k * 5000,
                    ((k * 7919) % 10_000) as f64 / 100.0,
                )
            })
            .collect();
        let counter_bytes = encode_chunk(&counter).len() as f64 / 240.0;
        let gauge_bytes = encode_chunk(&gauge).len() as f64 / 240.0;
        assert!(
            counter_bytes <= 4.1,
            "{counter_bytes} bytes per counter point"
        );
        assert!(gauge_bytes <= 4.0, "{gauge_bytes} bytes per gauge point");
        let row: Vec<(i64, f64)> = (0..200).map(|i| (1000 + i, 37.42)).collect();
        // The count (2 bytes), the first id's second byte, then per pair
        // the id delta (1 byte) and 3742 hundredths (3 bytes).
        assert_eq!(encode_row(&row).len(), 2 + 1 + 200 * 4);
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let good = encode_row(&[(1, 1.5), (9, 1e300)]);
        for cut in 0..good.len() {
            assert!(decode_row(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode_row(&long), Err(CodecError::Length));
        assert_eq!(decode_chunk(&[0xff; 12]), Err(CodecError::Overlong));
        assert_eq!(decode_chunk(&[0x7f]), Err(CodecError::Length));
        // One point whose value is a delta from nothing.
        assert_eq!(decode_chunk(&[1, 0, 3]), Err(CodecError::Delta));
    }
}
