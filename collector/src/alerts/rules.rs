//! The alert rule language: one line per rule, parsed into a [`Condition`]
//! before a rule is stored, so a stored rule always evaluates. Pure: no IO,
//! no clock. A parse error names the rule and the column where it went
//! wrong.
//!
//! ```text
//! mem.used_pct > 90 for 1m              a series over a limit for a while
//! disk.used_pct{mount="/var"} >= 95     ... only the series with these labels
//! no data                               the agent missed three intervals
//! rebooted [clear 10m]                  the host booted (host.rebooted)
//! threshold ["mem"]                     the server agent's own threshold
//!                                       events (exceeded .. recovered)
//! url down ["home"] | url degraded      a URL target's state
//! lock wait [> 10s] [clear 5m]          the database agent's db.lock_wait
//! log "timeout" > 10 in 5m              log records holding the text
//! log pattern "GET /a/<num>" > 100 in 5m   records of one shape (as
//!                                       `/api/v1/logs/patterns` shows it,
//!                                       or a line of that shape)
//! event KIND [clear 5m]                 any event kind the agents raise
//! ```

use std::fmt;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Whether `left OP right`.
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }

    /// How it is written.
    pub fn text(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// Which URL state a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlWatch {
    /// `DOWN`.
    Down,
    /// `DEGRADED` (slow) or `DOWN`.
    Degraded,
}

/// What a rule watches, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A series compared with a value, held for `for_ms`.
    Threshold {
        /// The metric's name.
        metric: String,
        /// Labels a series must have (all of them).
        labels: Vec<(String, String)>,
        /// The comparison.
        op: Op,
        /// The limit.
        value: f64,
        /// How long it must hold, ms (0: at once).
        for_ms: i64,
    },
    /// The agent missed three intervals.
    NoData,
    /// Events of one kind raised by agents.
    Event {
        /// The event kind, `host.rebooted`.
        kind: String,
        /// The kind that ends it (`threshold.recovered`); without one, the
        /// alert resolves `clear_ms` after the last event.
        resolved_by: Option<String>,
        /// How long after the last event the alert resolves, ms.
        clear_ms: i64,
        /// The attribute that tells alerts apart (`threshold`: `cpu`,
        /// `mem`, ...), and the one value wanted, if any.
        key: Option<(String, Option<String>)>,
        /// An attribute that must be at least this number.
        at_least: Option<(String, f64)>,
    },
    /// A URL target's state.
    Url {
        /// Which state.
        watch: UrlWatch,
        /// Only this target.
        target: Option<String>,
    },
    /// Log records of one shape (the template of `text`), counted over a
    /// window, across the project's log agents.
    LogPattern {
        /// The shape (already a template).
        pattern: String,
        /// More than this many ...
        count: u64,
        /// ... within this many ms.
        window_ms: i64,
    },
    /// Log records holding `text`, counted over a window.
    Log {
        /// The words or "phrase" to look for.
        text: String,
        /// More than this many ...
        count: u64,
        /// ... within this many ms.
        window_ms: i64,
    },
}

/// The largest count a log rule may compare with (the count is read, not
/// estimated, so it is bounded).
pub const MAX_LOG_COUNT: u64 = 999;
const DEFAULT_REBOOT_CLEAR_MS: i64 = 600_000;
const DEFAULT_EVENT_CLEAR_MS: i64 = 300_000;

impl Condition {
    /// The product whose agents the rule applies to, if only one.
    pub fn product(&self) -> Option<&'static str> {
        match self {
            Condition::Url { .. } => Some("url"),
            Condition::Log { .. } | Condition::LogPattern { .. } => Some("log"),
            Condition::Event { kind, .. } if kind.starts_with("db.") => Some("db"),
            Condition::Event { kind, .. } if kind.starts_with("threshold.") => Some("infra"),
            _ => None,
        }
    }
}

/// Why a rule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule '{rule}', column {column}: {message}")]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// Where, counted in characters from 1.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(Op),
    Assign,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "'{w}'"),
            Token::Text(t) => write!(f, "\"{t}\""),
            Token::Op(op) => write!(f, "'{}'", op.text()),
            Token::Assign => f.write_str("'='"),
            Token::Open => f.write_str("'{'"),
            Token::Close => f.write_str("'}'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '+')
}

/// Splits `expr` into tokens with their columns (from 1).
fn lex(expr: &str) -> Result<Vec<(usize, Token)>, (usize, String)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let token = match (c, next) {
            ('>', Some('=')) => Token::Op(Op::Ge),
            ('<', Some('=')) => Token::Op(Op::Le),
            ('=', Some('=')) => Token::Op(Op::Eq),
            ('!', Some('=')) => Token::Op(Op::Ne),
            ('>', _) => Token::Op(Op::Gt),
            ('<', _) => Token::Op(Op::Lt),
            ('=', _) => Token::Assign,
            ('{', _) => Token::Open,
            ('}', _) => Token::Close,
            (',', _) => Token::Comma,
            ('"', _) => {
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err((column, "a quoted text is not closed".into())),
                        Some('"') => break,
                        Some('\\') if chars.get(j + 1).is_some() => {
                            text.push(chars[j + 1]);
                            j += 2;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            j += 1;
                        }
                    }
                }
                out.push((column, Token::Text(text)));
                i = j + 1;
                continue;
            }
            (c, _) if is_word_char(c) => {
                let mut j = i;
                while j < chars.len() && is_word_char(chars[j]) {
                    j += 1;
                }
                out.push((column, Token::Word(chars[i..j].iter().collect())));
                i = j;
                continue;
            }
            (c, _) => return Err((column, format!("unexpected '{c}'"))),
        };
        i += match token {
            Token::Op(Op::Ge | Op::Le | Op::Eq | Op::Ne) => 2,
            _ => 1,
        };
        out.push((column, token));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end_column: usize,
}

type Failure = (usize, String);

impl Parser {
    fn column(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end_column, |t| t.0)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.1)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|t| t.1.clone());
        self.at += 1;
        token
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, Failure> {
        Err((self.column(), message.into()))
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => t.to_string(),
            None => "the end".into(),
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), Failure> {
        if self.keyword(word) {
            Ok(())
        } else {
            self.fail(format!("expected '{word}', found {}", self.found()))
        }
    }

    fn text(&mut self, what: &str) -> Result<String, Failure> {
        match self.peek() {
            Some(Token::Text(t)) => {
                let t = t.clone();
                self.at += 1;
                Ok(t)
            }
            _ => self.fail(format!("expected {what} in quotes, found {}", self.found())),
        }
    }

    fn optional_text(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Text(t)) => {
                let t = t.clone();
                self.at += 1;
                Some(t)
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Result<f64, Failure> {
        match self.peek() {
            Some(Token::Word(w)) => match w.parse::<f64>() {
                Ok(v) if v.is_finite() => {
                    self.at += 1;
                    Ok(v)
                }
                _ => self.fail(format!("expected a number, found '{w}'")),
            },
            _ => self.fail(format!("expected a number, found {}", self.found())),
        }
    }

    fn duration(&mut self) -> Result<i64, Failure> {
        match self.peek() {
            Some(Token::Word(w)) => match agent_core::config::parse_duration(w) {
                Ok(d) => {
                    self.at += 1;
                    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }
                Err(e) => self.fail(format!("expected a duration such as 30s or 5m: {e}")),
            },
            _ => self.fail(format!(
                "expected a duration such as 30s or 5m, found {}",
                self.found()
            )),
        }
    }

    fn op(&mut self) -> Result<Op, Failure> {
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.at += 1;
                Ok(op)
            }
            _ => self.fail(format!(
                "expected a comparison (> >= < <= == !=), found {}",
                self.found()
            )),
        }
    }

    fn clear(&mut self, default_ms: i64) -> Result<i64, Failure> {
        if self.keyword("clear") {
            self.duration()
        } else {
            Ok(default_ms)
        }
    }

    fn end(&self) -> Result<(), Failure> {
        match self.peek() {
            None => Ok(()),
            Some(t) => self.fail(format!("unexpected {t} after the end of the rule")),
        }
    }

    fn condition(&mut self) -> Result<Condition, Failure> {
        let Some(Token::Word(first)) = self.peek().cloned() else {
            return self.fail(format!(
                "expected a metric name or one of: no data, rebooted, threshold, url, lock wait, log, event; found {}",
                self.found()
            ));
        };
        // A keyword followed by a comparison is a metric of that name.
        let is_metric = matches!(
            self.tokens.get(self.at + 1).map(|t| &t.1),
            Some(Token::Op(_) | Token::Open)
        );
        if !is_metric {
            match first.as_str() {
                "no" => {
                    self.at += 1;
                    self.expect_keyword("data")?;
                    return Ok(Condition::NoData);
                }
                "rebooted" => {
                    self.at += 1;
                    return Ok(Condition::Event {
                        kind: "host.rebooted".into(),
                        resolved_by: None,
                        clear_ms: self.clear(DEFAULT_REBOOT_CLEAR_MS)?,
                        key: None,
                        at_least: None,
                    });
                }
                "threshold" => {
                    self.at += 1;
                    let wanted = self.optional_text();
                    return Ok(Condition::Event {
                        kind: "threshold.exceeded".into(),
                        resolved_by: Some("threshold.recovered".into()),
                        clear_ms: 0,
                        key: Some(("threshold".into(), wanted)),
                        at_least: None,
                    });
                }
                "url" => {
                    self.at += 1;
                    let watch = if self.keyword("down") {
                        UrlWatch::Down
                    } else if self.keyword("degraded") {
                        UrlWatch::Degraded
                    } else {
                        return self.fail(format!(
                            "expected 'down' or 'degraded', found {}",
                            self.found()
                        ));
                    };
                    let target = self.optional_text();
                    return Ok(Condition::Url { watch, target });
                }
                "lock" => {
                    self.at += 1;
                    self.expect_keyword("wait")?;
                    let at_least = if matches!(self.peek(), Some(Token::Op(_))) {
                        let op_column = self.column();
                        let op = self.op()?;
                        if !matches!(op, Op::Gt | Op::Ge) {
                            return Err((op_column, "a lock wait is compared with > or >=".into()));
                        }
                        Some(("wait_ms".to_string(), self.duration()? as f64))
                    } else {
                        None
                    };
                    return Ok(Condition::Event {
                        kind: "db.lock_wait".into(),
                        resolved_by: None,
                        clear_ms: self.clear(DEFAULT_EVENT_CLEAR_MS)?,
                        key: None,
                        at_least,
                    });
                }
                "log" if matches!(self.tokens.get(self.at + 1).map(|t| &t.1), Some(Token::Word(w)) if w == "pattern") =>
                {
                    self.at += 2;
                    let text = self.text("the pattern")?;
                    let mut pattern = String::new();
                    crate::logs::pattern::template(&text, &mut pattern);
                    if pattern.trim().is_empty() {
                        return Err((self.column() - 1, "the pattern is empty".into()));
                    }
                    let op_column = self.column();
                    let op = self.op()?;
                    let number_column = self.column();
                    let count = self.number()?;
                    let count = match op {
                        Op::Gt => count,
                        Op::Ge => count - 1.0,
                        _ => {
                            return Err((op_column, "a log count is compared with > or >=".into()));
                        }
                    };
                    if count < 0.0 || count.fract() != 0.0 || count > 1e15 {
                        return Err((number_column, "a log count is a whole number".into()));
                    }
                    self.expect_keyword("in")?;
                    let window_ms = self.duration()?;
                    return Ok(Condition::LogPattern {
                        pattern,
                        count: count as u64,
                        window_ms,
                    });
                }
                "log" => {
                    self.at += 1;
                    let text = self.text("the text to look for")?;
                    if text.trim().is_empty() {
                        return Err((self.column() - 1, "the text to look for is empty".into()));
                    }
                    let op_column = self.column();
                    let op = self.op()?;
                    let number_column = self.column();
                    let count = self.number()?;
                    let count = match op {
                        Op::Gt => count,
                        Op::Ge => count - 1.0,
                        _ => {
                            return Err((op_column, "a log count is compared with > or >=".into()));
                        }
                    };
                    if !(0.0..=MAX_LOG_COUNT as f64).contains(&count) || count.fract() != 0.0 {
                        return Err((
                            number_column,
                            format!("a log count is a whole number up to {MAX_LOG_COUNT}"),
                        ));
                    }
                    self.expect_keyword("in")?;
                    let window_ms = self.duration()?;
                    return Ok(Condition::Log {
                        text,
                        count: count as u64,
                        window_ms,
                    });
                }
                "event" => {
                    self.at += 1;
                    let kind = match self.next() {
                        Some(Token::Word(k)) if k.contains('.') => k,
                        _ => {
                            self.at -= 1;
                            return self.fail(format!(
                                "expected an event kind such as db.unreachable, found {}",
                                self.found()
                            ));
                        }
                    };
                    return Ok(Condition::Event {
                        kind,
                        resolved_by: None,
                        clear_ms: self.clear(DEFAULT_EVENT_CLEAR_MS)?,
                        key: None,
                        at_least: None,
                    });
                }
                _ => {}
            }
        }
        self.threshold()
    }

    fn threshold(&mut self) -> Result<Condition, Failure> {
        let metric = match self.next() {
            Some(Token::Word(w)) if w.starts_with(|c: char| c.is_ascii_alphabetic()) => w,
            _ => {
                self.at -= 1;
                return self.fail(format!("expected a metric name, found {}", self.found()));
            }
        };
        let mut labels = Vec::new();
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            loop {
                if self.peek() == Some(&Token::Close) {
                    self.at += 1;
                    break;
                }
                let key = match self.next() {
                    Some(Token::Word(k)) => k,
                    _ => {
                        self.at -= 1;
                        return self.fail(format!("expected a label name, found {}", self.found()));
                    }
                };
                if self.next() != Some(Token::Assign) {
                    self.at -= 1;
                    return self.fail(format!("expected '=', found {}", self.found()));
                }
                let value = self.text("the label's value")?;
                labels.push((key, value));
                match self.next() {
                    Some(Token::Comma) => {}
                    Some(Token::Close) => break,
                    _ => {
                        self.at -= 1;
                        return self.fail(format!("expected ',' or '}}', found {}", self.found()));
                    }
                }
            }
        }
        let op = self.op()?;
        let value = self.number()?;
        let for_ms = if self.keyword("for") {
            self.duration()?
        } else {
            0
        };
        Ok(Condition::Threshold {
            metric,
            labels,
            op,
            value,
            for_ms,
        })
    }
}

/// Parses rule `name`'s expression.
pub fn parse(name: &str, expr: &str) -> Result<Condition, RuleError> {
    let error = |(column, message): Failure| RuleError {
        rule: name.to_string(),
        column,
        message,
    };
    let tokens = lex(expr).map_err(error)?;
    if tokens.is_empty() {
        return Err(error((1, "the rule is empty".into())));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end_column: expr.chars().count() + 1,
    };
    let condition = parser.condition().map_err(error)?;
    parser.end().map_err(error)?;
    Ok(condition)
}

#[cfg(test)]
mod tests;
