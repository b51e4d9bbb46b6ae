//! The log agent's keys (`file.<name>.*` groups and `log.*`), resolved in
//! two phases: agent-core's [`Config`] holds the raw text with where each
//! value came from; [`LogSettings::from_config`] turns it into typed
//! settings (durations, sizes, compiled regexes) before any file is
//! opened. Every bad value is an error naming the file, the line and why.
//! Never does IO.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};
use agent_core::spool::SpoolFull;
use agent_core::{Source, SourceConfig, SourceContext, SourceError};
use regex::Regex;

use crate::framing::{Encoding, Format, FramingRules, Multiline};

/// The keys the log agent reads besides agent-core's common ones.
pub const LOG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "interval",
        default: Some("10s"),
        doc: "How often the agent reports its own counters (files open, bytes read, ...).",
    },
    KeySpec {
        key: "file.*.path",
        default: None,
        doc: "Globs of the files of group `*`, comma separated (`*`, `?`, `[a-z]`, `**` for any depth).",
    },
    KeySpec {
        key: "file.*.exclude",
        default: None,
        doc: "Globs of files not read, comma separated, matched against the full path.",
    },
    KeySpec {
        key: "file.*.category",
        default: None,
        doc: "The records' category (default: the group's name).",
    },
    KeySpec {
        key: "file.*.start",
        default: Some("end"),
        doc: "`end` or `beginning`: where files present at the agent's very first start are read from; files that appear later are always read from their beginning.",
    },
    KeySpec {
        key: "file.*.format",
        default: Some("plain"),
        doc: "`plain` lines, or `cri` (Kubernetes container logs: partial lines joined).",
    },
    KeySpec {
        key: "file.*.encoding",
        default: Some("utf-8"),
        doc: "`utf-8`, `utf-16le` or `utf-16be`; a byte-order mark wins. Invalid bytes are replaced and counted.",
    },
    KeySpec {
        key: "file.*.max_line",
        default: Some("64KiB"),
        doc: "Longer records are cut to this size, flagged and counted, never dropped (at most 1MiB, of which 992KiB are kept).",
    },
    KeySpec {
        key: "file.*.multiline.start",
        default: None,
        doc: "A regex matching the first line of a record; other lines join the record before them.",
    },
    KeySpec {
        key: "file.*.multiline.timeout",
        default: Some("1s"),
        doc: "A multi-line record is shipped after this long with no new line.",
    },
    KeySpec {
        key: "file.*.multiline.max_lines",
        default: Some("500"),
        doc: "Most lines in one multi-line record; then it is cut.",
    },
    KeySpec {
        key: "file.*.multiline.max_bytes",
        default: Some("1MiB"),
        doc: "Most bytes in one multi-line record; then it is cut (at most 1MiB, of which 992KiB are kept: a record travels in one batch).",
    },
    KeySpec {
        key: "file.*.include_lines",
        default: None,
        doc: "A regex: only lines matching it are shipped.",
    },
    KeySpec {
        key: "file.*.exclude_lines",
        default: None,
        doc: "A regex: lines matching it are not shipped.",
    },
    KeySpec {
        key: "file.*.parse",
        default: None,
        doc: "A regex with named groups; each group becomes a field of the record.",
    },
    KeySpec {
        key: "log.rescan",
        default: Some("10s"),
        doc: "How often the globs are listed again (besides the file-system watches).",
    },
    KeySpec {
        key: "log.max_open",
        default: Some("1024"),
        doc: "Most files held open at once; idle files are closed first, and it is logged when it bites.",
    },
    KeySpec {
        key: "log.linger",
        default: Some("200ms"),
        doc: "How long a partly filled chunk waits for more records before it is sent.",
    },
    KeySpec {
        key: "log.deleted_hold",
        default: Some("5m"),
        doc: "How long a deleted (or rotated away) file is held open unread while the collector cannot keep up; then it is closed, its rest counted as lost.",
    },
    KeySpec {
        key: "log.kubernetes",
        default: Some("off"),
        doc: "`off`, or `pods`: also read `/var/log/pods/*/*/*.log` as CRI with namespace, pod and container attributes.",
    },
    KeySpec {
        key: "log.pods_root",
        default: Some("/var/log/pods"),
        doc: "Where the kubelet keeps pod logs (for `log.kubernetes=pods`).",
    },
];

/// The name of the group `log.kubernetes=pods` adds.
pub const PODS_GROUP: &str = "pods";

/// Where files present at the very first start are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From their end: only what is written from now on.
    End,
    /// From their beginning.
    Beginning,
}

/// One `file.<name>.*` group.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// The group's name (`<name>`).
    pub name: String,
    /// Globs of the files to read.
    pub paths: Vec<String>,
    /// Globs of the files not to read.
    pub exclude: Vec<String>,
    /// The records' category.
    pub category: String,
    /// Where files present at the very first start are read from.
    pub start: Start,
    /// How bytes become records.
    pub rules: Arc<FramingRules>,
    /// Kubernetes namespace, pod and container are taken from the path
    /// (`<root>/<ns>_<pod>_<uid>/<container>/N.log`).
    pub pod_attrs: bool,
}

/// Everything the log agent reads from its config.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The file groups, by name.
    pub groups: Vec<GroupSettings>,
    /// Periodic rescan of the globs.
    pub rescan: Duration,
    /// Most files open at once.
    pub max_open: usize,
    /// How long a partly filled chunk waits.
    pub linger: Duration,
    /// How long a file gone from its path is held open while blocked.
    pub deleted_hold: Duration,
    /// How often counters are reported.
    pub interval: Duration,
}

fn origin(config: &Config, key: &str) -> Origin {
    config.value(key).map_or(Origin::Default, |v| v.origin)
}

fn invalid(config: &Config, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin(config, key),
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn list(config: &Config, key: &str) -> Vec<String> {
    config
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn regex(config: &Config, key: &str) -> Result<Option<Regex>, ConfigError> {
    config.parse_with(key, |text| {
        Regex::new(text).map_err(|e| format!("not a valid regex: {e}"))
    })
}

/// The longest record: it must fit in one batch with room to spare.
pub const MAX_RECORD: u64 = 1 << 20;
/// What is kept of a record at most: a batch (1 MiB with its head) must
/// hold one whole, so `1MiB` settings keep this much.
pub const RECORD_KEPT: usize = (1 << 20) - (32 << 10);

fn size(config: &Config, key: &str, min: u64) -> Result<usize, ConfigError> {
    let bytes = config.size(key)?;
    if bytes < min {
        return Err(invalid(
            config,
            key,
            format!("must be at least {min} bytes"),
        ));
    }
    if bytes > MAX_RECORD {
        return Err(invalid(
            config,
            key,
            format!("must be at most {MAX_RECORD} bytes (1MiB): a record travels in one batch"),
        ));
    }
    usize::try_from(bytes).map_err(|_| invalid(config, key, "too large"))
}

fn group(config: &Config, name: &str) -> Result<GroupSettings, ConfigError> {
    let key = |k: &str| format!("file.{name}.{k}");
    config.require(
        &key("path"),
        &format!("add 'file.{name}.path = /var/log/app/*.log' to the config file"),
    )?;
    let paths = list(config, &key("path"));
    for p in &paths {
        if !p.starts_with('/') {
            return Err(invalid(
                config,
                &key("path"),
                format!("'{p}' is not an absolute path"),
            ));
        }
        crate::glob::Glob::new(p).map_err(|e| invalid(config, &key("path"), e))?;
    }
    let exclude = list(config, &key("exclude"));
    for p in &exclude {
        crate::glob::Glob::new(p).map_err(|e| invalid(config, &key("exclude"), e))?;
    }
    let start = match config.get(&key("start")).as_deref() {
        None | Some("end") => Start::End,
        Some("beginning") => Start::Beginning,
        Some(other) => {
            return Err(invalid(
                config,
                &key("start"),
                format!("expected end or beginning, got '{other}'"),
            ));
        }
    };
    let format = match config.get(&key("format")).as_deref() {
        None | Some("plain") => Format::Plain,
        Some("cri") => Format::Cri,
        Some(other) => {
            return Err(invalid(
                config,
                &key("format"),
                format!("expected plain or cri, got '{other}'"),
            ));
        }
    };
    let encoding = encoding(config, &key("encoding"))?;
    let multiline = match regex(config, &key("multiline.start"))? {
        None => None,
        Some(start) => {
            let max_lines: usize =
                config.number(&key("multiline.max_lines"), "a number of lines")?;
            if max_lines == 0 {
                return Err(invalid(
                    config,
                    &key("multiline.max_lines"),
                    "must be at least 1",
                ));
            }
            Some(Multiline {
                start,
                timeout: config.duration(&key("multiline.timeout"))?,
                max_lines,
                max_bytes: size(config, &key("multiline.max_bytes"), 16)?.min(RECORD_KEPT),
            })
        }
    };
    let rules = FramingRules {
        max_line: size(config, &key("max_line"), 16)?.min(RECORD_KEPT),
        encoding,
        format,
        multiline,
        include_lines: regex(config, &key("include_lines"))?.into_iter().collect(),
        exclude_lines: regex(config, &key("exclude_lines"))?.into_iter().collect(),
        parse: regex(config, &key("parse"))?,
    };
    if let Some(parse) = &rules.parse {
        if parse.capture_names().flatten().next().is_none() {
            return Err(invalid(
                config,
                &key("parse"),
                "has no named group (?P<name>...): it would add no field",
            ));
        }
        crate::framing::check_parse_rule(parse).map_err(|e| invalid(config, &key("parse"), e))?;
    }
    Ok(GroupSettings {
        name: name.to_string(),
        paths,
        exclude,
        category: config.get(&key("category")).unwrap_or_else(|| name.into()),
        start,
        rules: Arc::new(rules),
        pod_attrs: false,
    })
}

fn encoding(config: &Config, key: &str) -> Result<Encoding, ConfigError> {
    match config
        .get(key)
        .map(|t| t.to_ascii_lowercase().replace('_', "-"))
        .as_deref()
    {
        None | Some("utf-8") | Some("utf8") => Ok(Encoding::Utf8),
        Some("utf-16le") => Ok(Encoding::Utf16Le),
        Some("utf-16be") => Ok(Encoding::Utf16Be),
        Some(other) => Err(invalid(
            config,
            key,
            format!("expected utf-8, utf-16le or utf-16be, got '{other}'"),
        )),
    }
}

/// The group `log.kubernetes=pods` adds: every container log under
/// `root`, read as CRI, with the pod's namespace, name and container.
pub fn pods_group(root: &std::path::Path) -> GroupSettings {
    GroupSettings {
        name: PODS_GROUP.into(),
        paths: vec![format!("{}/*/*/*.log", root.display())],
        exclude: Vec::new(),
        category: PODS_GROUP.into(),
        start: Start::End,
        rules: Arc::new(FramingRules {
            max_line: 64 << 10,
            encoding: Encoding::Utf8,
            format: Format::Cri,
            multiline: None,
            include_lines: Vec::new(),
            exclude_lines: Vec::new(),
            parse: None,
        }),
        pod_attrs: true,
    }
}

/// Namespace, pod and container from a path
/// `<root>/<ns>_<pod>_<uid>/<container>/N.log` (empty when it is not one).
pub fn pod_attrs(path: &std::path::Path) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut parts = path.iter().rev().skip(1);
    let (Some(container), Some(pod_dir)) = (
        parts.next().and_then(|c| c.to_str()),
        parts.next().and_then(|c| c.to_str()),
    ) else {
        return attrs;
    };
    let mut fields = pod_dir.splitn(3, '_');
    if let (Some(ns), Some(pod), Some(_uid)) = (fields.next(), fields.next(), fields.next()) {
        attrs.insert("namespace".into(), ns.into());
        attrs.insert("pod".into(), pod.into());
        attrs.insert("container".into(), container.into());
    }
    attrs
}

impl LogSettings {
    /// Reads and checks every key.
    pub fn from_config(config: &Config) -> Result<LogSettings, ConfigError> {
        let mut groups = Vec::new();
        for name in config.group_names("file") {
            groups.push(group(config, &name)?);
        }
        match config.get("log.kubernetes").as_deref() {
            None | Some("off") => {}
            Some("pods") => {
                if groups.iter().any(|g| g.name == PODS_GROUP) {
                    return Err(invalid(
                        config,
                        "log.kubernetes",
                        "a group named 'pods' exists already; rename it",
                    ));
                }
                let root = PathBuf::from(
                    config
                        .get("log.pods_root")
                        .unwrap_or_else(|| "/var/log/pods".into()),
                );
                groups.push(pods_group(&root));
            }
            Some(other) => {
                return Err(invalid(
                    config,
                    "log.kubernetes",
                    format!("expected off or pods, got '{other}'"),
                ));
            }
        }
        if groups.is_empty() {
            return Err(ConfigError::Missing {
                key: "file.<name>.path".into(),
                hint: "add 'file.app.path = /var/log/app/*.log' (or log.kubernetes = pods) to the config file".into(),
            });
        }
        let max_open: usize = config.number("log.max_open", "a number of files")?;
        if max_open < 1 {
            return Err(invalid(config, "log.max_open", "must be at least 1"));
        }
        let rescan = config.duration("log.rescan")?;
        if rescan < Duration::from_millis(100) {
            return Err(invalid(config, "log.rescan", "must be at least 100ms"));
        }
        let interval = config.duration("interval")?;
        if interval < Duration::from_secs(1) {
            return Err(invalid(config, "interval", "must be at least 1s"));
        }
        Ok(LogSettings {
            groups,
            rescan,
            max_open,
            linger: config.duration("log.linger")?,
            deleted_hold: config.duration("log.deleted_hold")?,
            interval,
        })
    }
}

/// The log agent: its settings, and how it builds its loop.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The resolved settings.
    pub settings: LogSettings,
}

impl SourceConfig for LogConfig {
    const PRODUCT: &'static str = "log";
    const BINARY: &'static str = "sightline-log";
    const KEYS: &'static [KeySpec] = LOG_KEYS;
    const SPOOL_FULL: SpoolFull = SpoolFull::Block;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(LogConfig {
            settings: LogSettings::from_config(config)?,
        })
    }

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        crate::run::build(self.settings, cx)
    }
}

#[cfg(test)]
mod tests;
