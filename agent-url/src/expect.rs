//! The conditions a check's answer must meet: status codes and ranges
//! (`200-299,301`), and the small JSON path language of `.expect.json`
//! (`$.status == "ok" && $.items.length > 0`).
//!
//! Everything is parsed once, at load, with an error that says where the
//! text went wrong; evaluating never fails, it only says held or not and
//! why. Nothing here does IO.

use std::fmt;
use std::ops::RangeInclusive;

use serde_json::Value;

/// The status codes a check accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl StatusSet {
    /// Parses `200-399`, `200,204`, `2xx`.
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let code = |s: &str| -> Result<u16, String> {
                match s.trim().parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) => Ok(c),
                    _ => Err(format!("'{s}' is not a status code (100-599)")),
                }
            };
            if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                let first = code(&format!("{class}00"))?;
                ranges.push(first..=first + 99);
            } else if let Some((lo, hi)) = part.split_once('-') {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("range '{part}' runs backwards"));
                }
                ranges.push(lo..=hi);
            } else {
                let c = code(part)?;
                ranges.push(c..=c);
            }
        }
        if ranges.is_empty() {
            return Err("expected status codes such as 200-399 or 200,204".into());
        }
        Ok(StatusSet(ranges))
    }

    /// Whether `code` is accepted.
    pub fn accepts(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Length,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One `path op literal` condition.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    text: String,
    path: Vec<Step>,
    op: Op,
    literal: Value,
}

/// Every condition of `.expect.json`, joined by `&&`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonExpect(Vec<Condition>);

/// Why a JSON condition did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonMismatch(pub String);

impl JsonExpect {
    /// Parses `$.a.b[0].c == "x" && $.items.length > 0`.
    pub fn parse(text: &str) -> Result<JsonExpect, String> {
        let mut parser = Parser { text, pos: 0 };
        let mut conditions = vec![parser.condition()?];
        loop {
            parser.skip_space();
            if parser.pos == text.len() {
                break;
            }
            if !parser.eat("&&") {
                return Err(parser.error("expected '&&' or the end"));
            }
            conditions.push(parser.condition()?);
        }
        Ok(JsonExpect(conditions))
    }

    /// Checks `body` (JSON text) against every condition.
    pub fn check(&self, body: &[u8]) -> Result<(), JsonMismatch> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| JsonMismatch(format!("body is not JSON: {e}")))?;
        for c in &self.0 {
            let actual = resolve(&doc, &c.path);
            let held = match &actual {
                Some(v) => compare(v, c.op, &c.literal),
                None => c.op == Op::Ne,
            };
            if !held {
                let shown = actual.map_or_else(|| "nothing".to_string(), |v| short(&v));
                return Err(JsonMismatch(format!(
                    "{} does not hold: got {shown}",
                    c.text
                )));
            }
        }
        Ok(())
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn resolve(doc: &Value, path: &[Step]) -> Option<Value> {
    let mut at = doc;
    for (i, step) in path.iter().enumerate() {
        match step {
            Step::Key(k) => at = at.get(k.as_str())?,
            Step::Index(n) => at = at.get(*n)?,
            Step::Length => {
                // `.length` of an object with a `length` field is that field.
                if let Some(v) = at.get("length") {
                    at = v;
                    continue;
                }
                if i + 1 != path.len() {
                    return None;
                }
                let n = match at {
                    Value::Array(a) => a.len(),
                    Value::String(s) => s.chars().count(),
                    Value::Object(o) => o.len(),
                    _ => return None,
                };
                return Some(Value::from(n));
            }
        }
    }
    Some(at.clone())
}

fn compare(actual: &Value, op: Op, literal: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (actual, literal) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        Op::Eq => ordering == Some(Ordering::Equal),
        Op::Ne => ordering != Some(Ordering::Equal),
        Op::Lt => ordering == Some(Ordering::Less),
        Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ordering == Some(Ordering::Greater),
        Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at column {}: '{}'", self.pos + 1, self.text)
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn condition(&mut self) -> Result<Condition, String> {
        self.skip_space();
        let start = self.pos;
        if !self.eat("$") {
            return Err(self.error("expected a path starting with '$'"));
        }
        let mut path = Vec::new();
        loop {
            if self.eat(".") {
                let name: String = self
                    .rest()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                if name.is_empty() {
                    return Err(self.error("expected a field name after '.'"));
                }
                self.pos += name.len();
                path.push(if name == "length" {
                    Step::Length
                } else {
                    Step::Key(name)
                });
            } else if self.eat("[") {
                if self.rest().starts_with('"') {
                    let Value::String(key) = self.literal()? else {
                        return Err(self.error("expected a quoted key"));
                    };
                    path.push(Step::Key(key));
                } else {
                    let digits: String = self
                        .rest()
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let index = digits
                        .parse::<usize>()
                        .map_err(|_| self.error("expected an index"))?;
                    self.pos += digits.len();
                    path.push(Step::Index(index));
                }
                if !self.eat("]") {
                    return Err(self.error("expected ']'"));
                }
            } else {
                break;
            }
        }
        self.skip_space();
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(t, _)| self.rest().starts_with(t));
        let Some((token, op)) = op else {
            return Err(self.error("expected one of == != < <= > >="));
        };
        self.pos += token.len();
        self.skip_space();
        let literal = self.literal()?;
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
            && !matches!(literal, Value::Number(_) | Value::String(_))
        {
            return Err(format!(
                "'{}' compares order with {literal}; only numbers and strings have one",
                op.as_str()
            ));
        }
        let text = self.text[start..self.pos].trim().to_string();
        Ok(Condition {
            text,
            path,
            op,
            literal,
        })
    }

    fn literal(&mut self) -> Result<Value, String> {
        let rest = self.rest();
        if rest.starts_with('"') {
            let mut escaped = false;
            for (i, c) in rest.char_indices().skip(1) {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        let quoted = &rest[..=i];
                        let value: Value = serde_json::from_str(quoted)
                            .map_err(|e| self.error(&format!("bad string ({e})")))?;
                        self.pos += i + 1;
                        return Ok(value);
                    }
                    _ => escaped = false,
                }
            }
            return Err(self.error("unterminated string"));
        }
        for (word, value) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
            .collect();
        match serde_json::from_str::<Value>(&number) {
            Ok(v @ Value::Number(_)) if !number.is_empty() => {
                self.pos += number.len();
                Ok(v)
            }
            _ => Err(self.error("expected a number, a \"string\", true, false or null")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_read_ranges_lists_and_classes() {
        let s = StatusSet::parse("200-299, 301,4xx").expect("parses");
        assert!(s.accepts(204) && s.accepts(301) && s.accepts(404));
        assert!(!s.accepts(302) && !s.accepts(500));
        assert_eq!(s.to_string(), "200-299,301,400-499");
        assert!(StatusSet::parse("299-200").is_err());
        assert!(StatusSet::parse("abc").is_err());
        assert!(StatusSet::parse("").is_err());
    }

    fn holds(expr: &str, body: &str) -> bool {
        JsonExpect::parse(expr)
            .expect("parses")
            .check(body.as_bytes())
            .is_ok()
    }

    #[test]
    fn paths_reach_fields_indexes_and_lengths() {
        let body =
            r#"{"status":"ok","items":[{"id":7,"tags":["a","b"]}],"n":2.5,"up":true,"gone":null}"#;
        assert!(holds(r#"$.status == "ok""#, body));
        assert!(!holds(r#"$.status == "down""#, body));
        assert!(holds(r#"$.status != "down""#, body));
        assert!(holds("$.items.length > 0", body));
        assert!(holds("$.items[0].id == 7", body));
        assert!(holds("$.items[0].tags.length == 2", body));
        assert!(holds(r#"$.items[0].tags[1] == "b""#, body));
        assert!(holds(r#"$["status"] == "ok""#, body));
        assert!(holds("$.n >= 2.5 && $.n < 3", body));
        assert!(!holds("$.n > 2.5", body));
        assert!(holds("$.up == true && $.gone == null", body));
        assert!(holds("$.missing != 1", body));
        assert!(!holds("$.missing == 1", body));
        assert!(holds("$.status.length == 2", body));
        assert!(holds(r#"$.status >= "ok""#, body));
    }

    #[test]
    fn a_mismatch_says_what_was_found() {
        let e = JsonExpect::parse("$.items.length > 3")
            .expect("parses")
            .check(br#"{"items":[1]}"#)
            .expect_err("fails");
        assert_eq!(e.0, "$.items.length > 3 does not hold: got 1");
        let e = JsonExpect::parse("$.a == 1")
            .expect("parses")
            .check(b"<html>")
            .expect_err("fails");
        assert!(e.0.starts_with("body is not JSON"), "{}", e.0);
    }

    proptest::proptest! {
        /// Whatever an operator writes, parsing answers (never panics), and
        /// whatever a server sends, checking answers.
        #[test]
        fn parsing_and_checking_never_panic(
            expr in "[$a-z0-9_\\[\\]\\.\"=!<> &-]{0,40}",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            status in ".{0,20}",
        ) {
            if let Ok(json) = JsonExpect::parse(&expr) {
                let _ = json.check(&body);
                let _ = json.check(br#"{"a":[1,"x",{"b":null}],"length":3}"#);
            }
            let _ = StatusSet::parse(&status);
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_the_place() {
        let err = |t: &str| JsonExpect::parse(t).expect_err(t);
        assert_eq!(
            err("status == 1"),
            "expected a path starting with '$' at column 1: 'status == 1'"
        );
        assert!(err("$.a = 1").contains("expected one of == != < <= > >= at column 5"));
        assert!(err("$.a == ok").contains("expected a number"));
        assert!(err("$.a == 1 || $.b == 2").contains("expected '&&'"));
        assert!(err(r#"$.a == "open"#).contains("unterminated string"));
        assert!(err("$.a[x] == 1").contains("expected an index"));
        assert!(err("$.a < true").contains("only numbers and strings"));
        assert!(err("$. == 1").contains("expected a field name"));
    }
}
