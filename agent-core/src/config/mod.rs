//! Agent configuration: `key=value` files, `SIGHTLINE_*` environment
//! overrides, and command-line flags over both.
//!
//! Two phases, as in ripgrep's `LowArgs`/`HiArgs`: [`Config::load`] turns text
//! into raw values that remember where they came from ([`Origin`]), with no
//! interpretation; the typed accessors ([`Config::duration`], [`Config::size`],
//! ...) then resolve them, and every error names the file and line (or the
//! variable or flag) the bad value came from.
//!
//! Invariants:
//! - Nothing here opens a socket or writes a file; the only IO is reading the
//!   config file.
//! - The process environment is only read through [`Env`], so tests pass a
//!   map instead of mutating the process.
//! - Keys never contain `_`, so `SIGHTLINE_SERVER_HOST` maps back to
//!   `server.host` without ambiguity.
//! - Nothing here shows a value unredacted: errors, warnings and `Debug` go
//!   through [`crate::license::redact`], and the values of secret keys
//!   (`license`, `*password`, `*secret`, `*token`) are masked whole.

mod env;
mod parse;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::{Env, MapEnv, ProcessEnv};
pub use units::{parse_duration, parse_size};

use crate::license::{is_secret_key, mask, redact, redact_value};

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "SIGHTLINE_";

/// A key an agent understands. A `*` segment stands for a name the operator
/// chooses: `target.*.url` matches `target.home.url`.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The key, lower case, dotted.
    pub key: &'static str,
    /// The default as the operator would write it, or `None` when the key is
    /// required or has no value by default.
    pub default: Option<&'static str>,
    /// One sentence for the README's configuration reference.
    pub doc: &'static str,
}

impl KeySpec {
    fn matches(&self, key: &str) -> bool {
        let mut want = self.key.split('.');
        let mut have = key.split('.');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some("*"), Some(seg)) if !seg.is_empty() => {}
                (Some(w), Some(h)) if w == h => {}
                _ => return false,
            }
        }
    }
}

/// Where a value came from; printed in front of every error about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of a config file.
    File {
        /// The file as given.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// The variable's name, e.g. `SIGHTLINE_SERVER_HOST`.
        var: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag, e.g. `--server`.
        flag: &'static str,
    },
    /// The built-in default.
    Default,
    /// A value the installer wrote: on Windows, a value of the registry
    /// key the MSI writes its properties to (see [`set_installer_layer`]).
    Installer {
        /// Where, e.g. `registry HKLM\SOFTWARE\Sightline\Infra\license`.
        place: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Flag { flag } => write!(f, "flag {flag}"),
            Origin::Default => f.write_str("default"),
            Origin::Installer { place } => f.write_str(place),
        }
    }
}

/// A raw value and where it came from. Its `Debug` redacts the text (it
/// does not know its key; [`Config`]'s `Debug` masks secret keys whole).
#[derive(Clone)]
pub struct Value {
    /// The text after `=`, trimmed, surrounding quotes removed.
    pub text: String,
    /// Where it was set.
    pub origin: Origin,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("text", &redact(&self.text))
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why configuration was refused. Every variant names where the problem is.
///
/// `Display` (and `Debug`, which shows the same text) redacts the key and
/// the reason, so a value echoed in a reason by any accessor, here or in a
/// product crate, cannot leak a secret.
#[derive(thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `key=value`.
    #[error("{path}:{line}: {}", redact(.reason), path = path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A value does not parse as what its key needs.
    #[error("{origin}: {}: {}", redact(.key), redact(.reason))]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The key.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A required key is not set anywhere.
    #[error("{key} is not set: {hint}")]
    Missing {
        /// The key.
        key: String,
        /// How to set it.
        hint: String,
    },
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigError({self})")
    }
}

/// Something worth telling the operator that does not stop the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub origin: Origin,
    /// What, in one sentence.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// A value set on the command line, which wins over the file and the
/// environment.
#[derive(Debug, Clone)]
pub struct FlagValue {
    /// The config key it sets.
    pub key: &'static str,
    /// The value.
    pub value: String,
    /// The flag's name, for errors.
    pub flag: &'static str,
}

/// The merged configuration of one agent. Its `Debug` masks the values of
/// secret keys whole and redacts every other value.
#[derive(Clone)]
pub struct Config {
    /// The file read, if any.
    path: Option<PathBuf>,
    values: BTreeMap<String, Value>,
    specs: Vec<KeySpec>,
    warnings: Vec<Warning>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// One value as it may be shown.
        struct Shown<'a>(&'a str, &'a Value);
        impl fmt::Debug for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Value")
                    .field("text", &redact_value(self.0, &self.1.text))
                    .field("origin", &self.1.origin)
                    .finish()
            }
        }
        // Keys are redacted too: a key pasted as a key is a valid key.
        let values: BTreeMap<String, Shown<'_>> = self
            .values
            .iter()
            .map(|(k, v)| (redact(k), Shown(k, v)))
            .collect();
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("values", &values)
            .field("warnings", &self.warnings)
            .field("specs", &self.specs.len())
            .finish()
    }
}

/// One value an installer wrote for the agent (on Windows, a registry
/// value the MSI wrote from its properties).
#[derive(Clone)]
pub struct InstallerValue {
    /// The config key, e.g. `license`.
    pub key: String,
    /// Its text.
    pub text: String,
    /// Where it was read, for messages.
    pub place: String,
}

impl fmt::Debug for InstallerValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text may be the license: never shown.
        f.debug_struct("InstallerValue")
            .field("key", &self.key)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

static INSTALLER_LAYER: std::sync::OnceLock<Vec<InstallerValue>> = std::sync::OnceLock::new();

/// Sets, once per process, the installer's values every [`Config::load`]
/// puts under the file's (set by the Windows build only; elsewhere there
/// is no such layer).
pub fn set_installer_layer(values: Vec<InstallerValue>) {
    let _ = INSTALLER_LAYER.set(values);
}

/// Where to read the config file from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// `--conf FILE`: must exist.
    Explicit(PathBuf),
    /// The product's default path: read when it exists, otherwise the agent
    /// runs from the environment and flags alone (a container, say).
    Default(PathBuf),
}

impl Config {
    /// Reads the file, then applies environment overrides, then flags.
    /// Unknown keys become [`Warning`]s; syntax errors are fatal.
    pub fn load(
        file: &FileSource,
        env: &dyn Env,
        flags: &[FlagValue],
        specs: &[KeySpec],
    ) -> Result<Config, ConfigError> {
        let (path, text) = match file {
            FileSource::Explicit(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                (Some(path.clone()), text)
            }
            FileSource::Default(path) => match std::fs::read_to_string(path) {
                Ok(text) => (Some(path.clone()), text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            },
        };
        let mut config = Config {
            path: path.clone(),
            values: BTreeMap::new(),
            specs: specs.to_vec(),
            warnings: Vec::new(),
        };
        if let Some(path) = &path {
            for line in parse::parse_text(path, &text)? {
                let origin = Origin::File {
                    path: path.clone(),
                    line: line.number,
                };
                if let Some(previous) = config.values.get(&line.key) {
                    config.warnings.push(Warning {
                        origin: origin.clone(),
                        message: format!(
                            "'{}' is set again (first at {}); the last value wins",
                            redact(&line.key),
                            previous.origin
                        ),
                    });
                }
                config.set(line.key, line.value, origin);
            }
        }
        // The installer's values (Windows: the MSI's properties, in the
        // registry) lie under the file's.
        config.fill_from_installer(INSTALLER_LAYER.get().map_or(&[], Vec::as_slice));
        for (var, value) in env.vars() {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace('_', ".");
            config.set(key, value, Origin::Env { var });
        }
        for flag in flags {
            config.set(
                flag.key.to_string(),
                flag.value.clone(),
                Origin::Flag { flag: flag.flag },
            );
        }
        Ok(config)
    }

    /// A configuration from `key=value` text alone, for tests and tools.
    pub fn from_text(path: &Path, text: &str, specs: &[KeySpec]) -> Result<Config, ConfigError> {
        let mut config = Config {
            path: Some(path.to_path_buf()),
            values: BTreeMap::new(),
            specs: specs.to_vec(),
            warnings: Vec::new(),
        };
        for line in parse::parse_text(path, text)? {
            let origin = Origin::File {
                path: path.to_path_buf(),
                line: line.number,
            };
            config.set(line.key, line.value, origin);
        }
        Ok(config)
    }

    /// Takes each installer value whose key the file leaves unset or
    /// empty (`license=` of the shipped file); an empty installer value
    /// (a property not given) sets nothing.
    fn fill_from_installer(&mut self, values: &[InstallerValue]) {
        for value in values {
            let unset = self
                .values
                .get(&value.key)
                .is_none_or(|v| v.text.trim().is_empty());
            if unset && !value.text.trim().is_empty() {
                self.set(
                    value.key.clone(),
                    value.text.clone(),
                    Origin::Installer {
                        place: value.place.clone(),
                    },
                );
            }
        }
    }

    fn set(&mut self, key: String, text: String, origin: Origin) {
        if !self.specs.iter().any(|s| s.matches(&key)) {
            let shown = redact(&key);
            let message = match nearest_key(&key, &self.specs) {
                Some(near) => format!("unknown key '{shown}', ignored; did you mean '{near}'?"),
                None => format!("unknown key '{shown}', ignored"),
            };
            self.warnings.push(Warning {
                origin: origin.clone(),
                message,
            });
        }
        self.values.insert(key, Value { text, origin });
    }

    /// The file that was read, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Unknown keys and repeated keys, in the order met.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// How many keys are set (file, environment and flags together).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is set at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value set for `key`, or its default.
    pub fn value(&self, key: &str) -> Option<Value> {
        if let Some(v) = self.values.get(key) {
            return Some(v.clone());
        }
        let default = self.specs.iter().find(|s| s.matches(key))?.default?;
        Some(Value {
            text: default.to_string(),
            origin: Origin::Default,
        })
    }

    /// The text of `key` (or its default); `None` when unset and no default.
    pub fn get(&self, key: &str) -> Option<String> {
        self.value(key).map(|v| v.text).filter(|t| !t.is_empty())
    }

    /// The text of `key`, or an error with `hint` saying how to set it.
    pub fn require(&self, key: &str, hint: &str) -> Result<Value, ConfigError> {
        match self.value(key) {
            Some(v) if !v.text.is_empty() => Ok(v),
            _ => Err(ConfigError::Missing {
                key: key.to_string(),
                hint: hint.to_string(),
            }),
        }
    }

    /// Parses `key` with `parse`; `None` when unset and no default.
    pub fn parse_with<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        if value.text.is_empty() {
            return Ok(None);
        }
        parse(&value.text).map(Some).map_err(|reason| {
            // A parser may echo the value; a secret's is masked whole,
            // whatever its shape.
            let reason = if is_secret_key(key) {
                reason.replace(&value.text, &mask(&value.text))
            } else {
                reason
            };
            ConfigError::Invalid {
                origin: value.origin,
                key: key.to_string(),
                reason: redact(&reason),
            }
        })
    }

    fn parse_default<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parse_with(key, parse)?
            .ok_or_else(|| ConfigError::Missing {
                key: key.to_string(),
                hint: format!("add '{key}=...' to the config file"),
            })
    }

    /// A duration written with a unit: `5s`, `1m`, `500ms`, `7d`.
    pub fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        self.parse_default(key, parse_duration)
    }

    /// A size written with a unit: `64MiB`, `512KiB`, `1GB`.
    pub fn size(&self, key: &str) -> Result<u64, ConfigError> {
        self.parse_default(key, parse_size)
    }

    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    pub fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse_default(key, units::parse_bool)
    }

    /// Any `FromStr` value; `what` names the expected form in errors.
    pub fn number<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<T, ConfigError> {
        self.parse_default(key, |text| {
            text.parse::<T>()
                .map_err(|_| format!("expected {what}, got '{text}'"))
        })
    }

    /// The names used in a group: for `prefix = "target"` and keys
    /// `target.home.url`, `target.api.url`, returns `{"api", "home"}`.
    pub fn group_names(&self, prefix: &str) -> BTreeSet<String> {
        let prefix = format!("{prefix}.");
        self.values
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once('.').map(|(name, _)| name.to_string()))
            .collect()
    }
}

/// A Markdown table of `keys` for a README: key, default, meaning.
pub fn reference_table(keys: &[KeySpec]) -> String {
    let mut table = String::from("| key | default | meaning |\n| --- | --- | --- |\n");
    for spec in keys {
        let default = spec
            .default
            .map_or_else(|| "(none)".to_string(), |d| format!("`{d}`"));
        table.push_str(&format!("| `{}` | {default} | {} |\n", spec.key, spec.doc));
    }
    table
}

/// Replaces the text between `<!-- begin NAME -->` and `<!-- end NAME -->`
/// in `doc` with `body`; `None` when the markers are missing.
pub fn replace_section(doc: &str, name: &str, body: &str) -> Option<String> {
    let begin = format!("<!-- begin {name} -->\n");
    let end = format!("<!-- end {name} -->");
    let start = doc.find(&begin)? + begin.len();
    let stop = start + doc[start..].find(&end)?;
    Some(format!("{}{body}{}", &doc[..start], &doc[stop..]))
}

/// The known key closest to `key`, if any is close enough to be a typo.
fn nearest_key(key: &str, specs: &[KeySpec]) -> Option<&'static str> {
    specs
        .iter()
        .map(|s| (strsim::damerau_levenshtein(key, s.key), s.key))
        .filter(|(d, known)| *d <= (known.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests;
