//! What every product produces, as plain Rust: metric readings and events.
//! A product's own kinds of data (the server agent's process lists, say)
//! are its own types, converted at its own wire edge into a
//! [`WirePayload`]; agent-core carries them as bytes and never knows their
//! shape. Nothing here knows the wire format: the transport converts at its
//! edge ([`crate::transport::wire`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub use crate::transport::wire::WirePayload;

/// One metric reading: `cpu.usage{cpu="3"} = 12.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Dotted, lower case, unit in the name where not obvious.
    pub name: Cow<'static, str>,
    /// Sorted by key.
    pub labels: Vec<(Cow<'static, str>, String)>,
    /// The reading.
    pub value: f64,
}

impl Sample {
    /// A sample with no labels.
    pub fn new(name: impl Into<Cow<'static, str>>, value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: Vec::new(),
            value,
        }
    }

    /// Adds a label, keeping labels sorted by key.
    pub fn label(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Sample {
        let key = key.into();
        let at = self.labels.partition_point(|(k, _)| *k < key);
        self.labels.insert(at, (key, value.into()));
        self
    }
}

/// Many samples read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// When they were read.
    pub time: SystemTime,
    /// The readings.
    pub samples: Vec<Sample>,
}

/// The names of the events agent-core itself raises. Each product defines
/// its own beside its code (dotted, lower case).
pub mod event_names {
    /// The agent process started.
    pub const AGENT_STARTED: &str = "agent.started";
    /// The spool was full and dropped its oldest batches (or could not
    /// spool what was queued at shutdown).
    pub const SPOOL_OVERFLOW: &str = "spool.overflow";
    /// The configuration has a problem the agent works around.
    pub const CONFIG_ERROR: &str = "config.error";
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Warning,
    /// Needs someone now.
    Critical,
}

/// Something an agent noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: SystemTime,
    /// What happened, dotted and lower case: `agent.started`,
    /// a product's own (see [`event_names`]).
    pub name: Cow<'static, str>,
    /// How bad.
    pub severity: Severity,
    /// One sentence for people.
    pub message: String,
    /// Details for machines: `dropped_batches=12`.
    pub attrs: BTreeMap<String, String>,
}

impl Event {
    /// An event at the current time with no attributes.
    pub fn now(
        name: impl Into<Cow<'static, str>>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Event {
        Event {
            time: SystemTime::now(),
            name: name.into(),
            severity,
            message: message.into(),
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: impl Into<String>, value: impl ToString) -> Event {
        self.attrs.insert(key.into(), value.to_string());
        self
    }
}

/// One part of what a source sends; a send becomes one batch (or several,
/// when it is larger than a batch may be).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Metric readings.
    Metrics(Metrics),
    /// Events.
    Events(Vec<Event>),
    /// A product's own payload, already converted at the product's wire
    /// edge (its `src/wire.rs`).
    Encoded(WirePayload),
}

impl Payload {
    /// When the payload was produced.
    pub fn time(&self) -> SystemTime {
        match self {
            Payload::Metrics(m) => m.time,
            Payload::Events(events) => events.first().map_or_else(SystemTime::now, |e| e.time),
            Payload::Encoded(w) => w.time(),
        }
    }
}
