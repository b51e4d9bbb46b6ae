//! Tidy: the invariants ARCHITECTURE.md states, checked over the source
//! tree as rust-analyzer's `tidy.rs` checks its own.
//!
//! - agent-core knows nothing of any product (no `/proc` paths, no process
//!   snapshots, no metric names, no mounts or thresholds, no SQL, Kubernetes
//!   or MySQL);
//! - only `collector/src/store/` writes SQL;
//! - only the places in [`PROTO_ALLOWED`] see prost and the generated
//!   protocol types;
//! - every crate root and module file opens with `//!`.
//!
//! The content rules read code only: comments (doc comments included) may
//! name anything. Every failure names the file, the line and the rule. The
//! lists of allowed places are the constants below; change them there, with
//! the reason, when the architecture changes.
//!
//! Never writes a file, needs no network and no build output: it reads the
//! `.rs` files of the repository and nothing else.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where prost and the generated protocol types (`sightline_proto::v1`)
/// may be used: the protocol crate, the agent's transport and each
/// product's wire edge, the collector's ingest and per-product modules, and
/// the tests and tasks that speak the protocol directly. A path ending in
/// `/` is a folder; `*` stands for any part of one name.
const PROTO_ALLOWED: &[&str] = &[
    "proto/",
    "agent-core/src/transport/",
    "agent-*/src/wire.rs",
    "collector/src/ingest/",
    "collector/src/ingest.rs",
    "collector/src/products/",
    "tests/",
    "xtask/",
    "agent-core/tests/",
];

/// Where SQL may be written: the collector's store, behind its traits; the
/// database agent, whose job is to query the monitored server; and the
/// harness, tests and bench that drive a private MariaDB server.
const SQL_ALLOWED: &[&str] = &[
    "collector/src/store/",
    "agent-db/",
    "tests/src/mariadb.rs",
    "tests/tests/db_agent.rs",
    "tests/tests/db_bad_input.rs",
    "tests/tests/db_sysbench.rs",
    "xtask/src/bench/db.rs",
];

/// What counts as SQL: the client library, and the statements' openings.
/// `UPDATE ... SET` is matched by [`is_update_statement`].
const SQL_MARKERS: &[&str] = &[
    "sqlx",
    "SELECT ",
    "INSERT INTO",
    "CREATE TABLE",
    "DELETE FROM",
];

/// What counts as a use of the protocol's generated types.
const PROTO_MARKERS: &[&str] = &["sightline_proto::v1", "prost::"];

/// The crate that must know no product.
const CORE: &str = "agent-core/";

/// Words that belong to one product, with the reason they do. Matched in
/// lower case, at the start of a word (`mount` is found in `MountEvent`
/// but not in `amount`).
const PRODUCT_WORDS: &[(&str, &str)] = &[
    ("/proc/", "procfs is where the server agent reads the host"),
    ("processsnapshot", "process listings are the server agent's"),
    ("processinfo", "process listings are the server agent's"),
    ("cpu.", "metric names belong to the product that makes them"),
    ("mount", "filesystems and mounts are the server agent's"),
    ("statvfs", "filesystems and mounts are the server agent's"),
    ("threshold", "thresholds are the server agent's"),
    ("netlink", "TCP state counting is the server agent's"),
    ("sock_diag", "TCP state counting is the server agent's"),
    (
        "sqlx",
        "SQL belongs to the collector's store (and the database agent)",
    ),
    ("mysql", "the database agent's"),
    ("mariadb", "the database agent's"),
    ("kube", "the Kubernetes agent's"),
];

/// Lines of agent-core allowed to hold a product word: (file, text on the
/// line, why it is not a leak).
const PRODUCT_WORD_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "agent-core/src/identity.rs",
        "/proc/stat",
        "the boot time (btime) is part of every agent's identity",
    ),
    (
        "agent-core/src/identity.rs",
        "/proc/sys/kernel/random/boot_id",
        "the boot id is part of every agent's identity (Hello.boot_id)",
    ),
];

/// Files the content rules skip: this one, which must name what it looks
/// for.
const CONTENT_RULES_SKIP: &[&str] = &["tests/tests/tidy.rs"];

/// Files that need not open with `//!`: generated code, documented where it
/// is included (`proto/src/lib.rs`, `pub mod v1`).
const DOC_SKIP: &[&str] = &["proto/src/gen/"];

/// Folders never walked: build output and version control.
const SKIP_DIRS: &[&str] = &["target", ".git"];

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    path: String,
    line: usize,
    rule: &'static str,
    detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.rule, self.detail
        )
    }
}

/// Whether `path` (relative, `/`-separated) is one of `places`.
fn is_in(path: &str, places: &[&str]) -> bool {
    places.iter().any(|place| {
        if place.ends_with('/') {
            // A folder: match its names against the path's first names.
            let want: Vec<&str> = place.trim_end_matches('/').split('/').collect();
            let have: Vec<&str> = path.split('/').collect();
            have.len() > want.len() && want.iter().zip(&have).all(|(w, h)| wildcard(w, h))
        } else {
            let want: Vec<&str> = place.split('/').collect();
            let have: Vec<&str> = path.split('/').collect();
            want.len() == have.len() && want.iter().zip(&have).all(|(w, h)| wildcard(w, h))
        }
    })
}

/// `*` matches any run of characters within one name.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

/// The code of `text`, line by line (1-based), with comments blanked out
/// and string contents kept: what the compiler reads, minus what it
/// ignores. `None` when the text ends inside a string or block comment: the
/// scanner misread it, and a rule could then miss code.
fn code_lines(text: &str) -> Option<Vec<(usize, String)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Str,
        RawStr(usize),
        LineComment,
        BlockComment(usize),
    }
    let chars: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut state = State::Code;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            lines.push(std::mem::take(&mut current));
            if state == State::LineComment {
                state = State::Code;
            }
            i += 1;
            continue;
        }
        match state {
            State::Code => {
                let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
                if c == '/' && next == Some('/') {
                    state = State::LineComment;
                    i += 2;
                    continue;
                }
                if c == '/' && next == Some('*') {
                    state = State::BlockComment(1);
                    i += 2;
                    continue;
                }
                let raw_start = (c == 'r' && !after_ident)
                    || (c == 'r'
                        && i > 0
                        && chars[i - 1] == 'b'
                        && !(i > 1 && (chars[i - 2].is_alphanumeric() || chars[i - 2] == '_')));
                if raw_start && matches!(next, Some('"' | '#')) {
                    let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                    if chars.get(i + 1 + hashes) == Some(&'"') {
                        current.push_str(&chars[i..i + 2 + hashes].iter().collect::<String>());
                        state = State::RawStr(hashes);
                        i += 2 + hashes;
                        continue;
                    }
                }
                if c == '"' {
                    state = State::Str;
                } else if c == '\'' {
                    // A char literal ('"', '\'', 'x'); otherwise a lifetime.
                    let len = if next == Some('\\') {
                        chars[i + 2..]
                            .iter()
                            .position(|&q| q == '\'')
                            .map(|p| p + 3)
                    } else if chars.get(i + 2) == Some(&'\'') {
                        Some(3)
                    } else {
                        None
                    };
                    if let Some(len) = len {
                        current.push_str(&chars[i..i + len].iter().collect::<String>());
                        i += len;
                        continue;
                    }
                }
                current.push(c);
            }
            State::Str => {
                current.push(c);
                if c == '\\' {
                    if let Some(n) = next.filter(|&n| n != '\n') {
                        current.push(n);
                    }
                    i += 2;
                    continue;
                }
                if c == '"' {
                    state = State::Code;
                }
            }
            State::RawStr(hashes) => {
                current.push(c);
                if c == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    current.push_str(&"#".repeat(hashes));
                    state = State::Code;
                    i += 1 + hashes;
                    continue;
                }
            }
            State::LineComment => {}
            State::BlockComment(depth) => {
                if c == '*' && next == Some('/') {
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::BlockComment(depth - 1)
                    };
                    i += 2;
                    continue;
                }
                if c == '/' && next == Some('*') {
                    state = State::BlockComment(depth + 1);
                    i += 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    lines.push(current);
    matches!(state, State::Code | State::LineComment).then(|| {
        lines
            .into_iter()
            .enumerate()
            .map(|(n, line)| (n + 1, line))
            .collect()
    })
}

/// `UPDATE <table> SET`.
fn is_update_statement(code: &str) -> bool {
    code.match_indices("UPDATE ").any(|(at, _)| {
        let rest = &code[at + "UPDATE ".len()..];
        let table: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        !table.is_empty() && rest[table.len()..].trim_start().starts_with("SET")
    })
}

/// Where `word` (lower case) starts a word in `lower`.
fn has_word(lower: &str, word: &str) -> bool {
    lower.match_indices(word).any(|(at, _)| {
        word.starts_with('/')
            || !lower[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphabetic())
    })
}

/// Every content rule over one file.
fn check_content(path: &str, text: &str) -> Vec<Failure> {
    let mut failures = Vec::new();
    if is_in(path, CONTENT_RULES_SKIP) {
        return failures;
    }
    let mut fail = |line: usize, rule: &'static str, detail: String| {
        failures.push(Failure {
            path: path.to_string(),
            line,
            rule,
            detail,
        });
    };
    let Some(lines) = code_lines(text) else {
        fail(
            1,
            "tidy must read every file",
            "the scan ended inside a string or comment; fix code_lines".into(),
        );
        return failures;
    };
    for (number, code) in lines {
        if !is_in(path, SQL_ALLOWED) {
            for marker in SQL_MARKERS {
                if code.contains(marker) {
                    fail(
                        number,
                        "SQL only under collector/src/store/",
                        format!("found `{}`", marker.trim_end()),
                    );
                }
            }
            if is_update_statement(&code) {
                fail(
                    number,
                    "SQL only under collector/src/store/",
                    "found `UPDATE ... SET`".into(),
                );
            }
        }
        if !is_in(path, PROTO_ALLOWED) {
            let grouped = code.contains("sightline_proto::{") && code.contains("v1");
            for marker in PROTO_MARKERS {
                if code.contains(marker) {
                    fail(
                        number,
                        "prost types only where PROTO_ALLOWED says",
                        format!("found `{marker}`"),
                    );
                }
            }
            if grouped {
                fail(
                    number,
                    "prost types only where PROTO_ALLOWED says",
                    "found `sightline_proto::{.. v1 ..}`".into(),
                );
            }
        }
        if path.starts_with(CORE) {
            let lower = code.to_ascii_lowercase();
            let allowed = PRODUCT_WORD_ALLOWED
                .iter()
                .any(|(file, text, _)| *file == path && code.contains(text));
            if allowed {
                continue;
            }
            for (word, why) in PRODUCT_WORDS {
                if has_word(&lower, word) {
                    fail(
                        number,
                        "no product words in agent-core",
                        format!("found `{word}`: {why}"),
                    );
                }
            }
        }
    }
    failures
}

/// Whether a `.rs` file opens with `//!` (blank lines before it allowed).
fn check_module_doc(path: &str, text: &str) -> Option<Failure> {
    if is_in(path, DOC_SKIP) {
        return None;
    }
    let (index, first) = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty())
        .unwrap_or((0, ""));
    (!first.trim_start().starts_with("//!")).then(|| Failure {
        path: path.to_string(),
        line: index + 1,
        rule: "every crate root and module file opens with `//!`",
        detail: "say what it is for and what it must never do".into(),
    })
}

/// The repository's root: the folder above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, relative to `root`, sorted.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable source folder")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name) {
                rust_files(root, &path, out);
            }
        } else if name.ends_with(".rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn the_source_tree_keeps_the_architecture() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root, &root, &mut files);
    assert!(
        files.iter().any(|f| f == "agent-core/src/lib.rs") && files.len() > 20,
        "walked the wrong folder: {files:?}"
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(root.join(path)).expect("utf-8 source");
        failures.extend(check_content(path, &text));
        failures.extend(check_module_doc(path, &text));
    }
    let report: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} tidy failure(s):\n{}",
        failures.len(),
        report.join("\n")
    );
}

// The rules themselves, on planted text: each must catch what it is for
// and leave alone what it is not.

#[test]
fn product_words_in_core_code_are_caught_but_not_in_comments() {
    let text = "//! Core.\n/// Reads /proc/meminfo? No: never.\nfn f() {\n    let p = \"/proc/meminfo\";\n    let m = MountEvent;\n    let amount = 3; // a threshold here is a comment\n}\n";
    let failures = check_content("agent-core/src/x.rs", text);
    let found: Vec<(usize, &str)> = failures.iter().map(|f| (f.line, f.rule)).collect();
    assert_eq!(
        found,
        [
            (4, "no product words in agent-core"),
            (5, "no product words in agent-core"),
        ],
        "{failures:?}"
    );
    assert!(
        failures[0]
            .to_string()
            .starts_with("agent-core/src/x.rs:4: no product words in agent-core: found `/proc/`")
    );
    // The same text outside agent-core is fine.
    assert!(check_content("agent-infra/src/x.rs", text).is_empty());
    // The identity reads are allowed, by file and line text.
    let identity = "fn boot() { read(\"/proc/sys/kernel/random/boot_id\"); }\n";
    assert!(check_content("agent-core/src/identity.rs", identity).is_empty());
    assert_eq!(check_content("agent-core/src/spool.rs", identity).len(), 1);
}

#[test]
fn sql_outside_the_store_is_caught() {
    let text = "fn f() {\n    q(\"SELECT id FROM agents\");\n    q(\"UPDATE agents SET last_seen = ?\");\n    let updated = \"UPDATE\";\n}\n";
    let failures = check_content("collector/src/api.rs", text);
    let lines: Vec<usize> = failures.iter().map(|f| f.line).collect();
    assert_eq!(lines, [2, 3], "{failures:?}");
    assert!(check_content("collector/src/store/sqlite.rs", text).is_empty());
}

#[test]
fn prost_types_outside_their_places_are_caught() {
    let text = "use sightline_proto::v1 as pb;\nuse sightline_proto::{metadata, v1};\nuse sightline_proto::metadata;\nfn f(m: impl prost::Message) {}\n";
    let failures = check_content("collector/src/api.rs", text);
    let lines: Vec<usize> = failures.iter().map(|f| f.line).collect();
    assert_eq!(lines, [1, 2, 4], "{failures:?}");
    for allowed in [
        "agent-core/src/transport/wire.rs",
        "agent-infra/src/wire.rs",
        "agent-logs/src/wire.rs",
        "collector/src/ingest.rs",
        "collector/src/ingest/push.rs",
        "collector/src/products/infra.rs",
        "tests/tests/x.rs",
    ] {
        assert!(check_content(allowed, text).is_empty(), "{allowed}");
    }
    for refused in [
        "agent-infra/src/source.rs",
        "agent-infra/src/wire/mod.rs",
        "collector/src/server.rs",
    ] {
        assert!(!check_content(refused, text).is_empty(), "{refused}");
    }
}

#[test]
fn a_file_without_its_doc_comment_is_caught() {
    let failure = check_module_doc("agent-core/src/x.rs", "\nuse std::fmt;\n").expect("caught");
    assert_eq!(
        failure.to_string(),
        "agent-core/src/x.rs:2: every crate root and module file opens with `//!`: say what it is for and what it must never do"
    );
    assert!(check_module_doc("agent-core/src/x.rs", "\n//! X.\nuse std::fmt;\n").is_none());
    assert!(check_module_doc("proto/src/gen/sightline.v1.rs", "// @generated\n").is_none());
}

#[test]
fn comments_and_strings_are_told_apart() {
    let text = "let url = \"https://x/y\"; // SELECT \nlet c = '\"'; let s = \"// not a comment\";\n/* a\n block */ let r = r#\"raw \"// still\" string\"#;\nfn f<'a>(x: &'a str) {}\n";
    let lines = code_lines(text).expect("ends in code");
    assert_eq!(lines[0].1, "let url = \"https://x/y\"; ");
    assert_eq!(lines[1].1, "let c = '\"'; let s = \"// not a comment\";");
    assert_eq!(lines[2].1, "");
    assert_eq!(lines[3].1, " let r = r#\"raw \"// still\" string\"#;");
    assert_eq!(lines[4].1, "fn f<'a>(x: &'a str) {}");
    let bytes = code_lines("let b = br#\"x \" // y\"#; let c = b'\"';\n").expect("ends in code");
    assert_eq!(bytes[0].1, "let b = br#\"x \" // y\"#; let c = b'\"';");
    assert_eq!(
        code_lines("let s = \"open\n"),
        None,
        "an open string is noticed"
    );
    assert_eq!(code_lines("/* open\n"), None, "an open comment is noticed");
}
