//! Path globs as operators write them in `file.<name>.path`: `*` and `?`
//! within one path component, `[abc]`/`[a-z]`/`[!x]` classes, and `**`
//! for any number of folders. A glob knows the folders it must list (and
//! watch) to find its files: only those its components can reach, never
//! a recursive walk unless `**` asks for one. Pure except [`Glob::expand`],
//! which lists folders and never opens a file.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// One component of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Matched as written.
    Literal(String),
    /// Has `*`, `?` or `[`.
    Pattern(Vec<char>),
    /// `**`: zero or more folders.
    AnyDepth,
}

/// A parsed glob (absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
}

/// What [`Glob::expand`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// Regular files the glob matches.
    pub files: Vec<PathBuf>,
    /// Folders listed to find them: the ones to watch.
    pub dirs: Vec<PathBuf>,
}

impl Glob {
    /// Parses `text`; an error says what is wrong.
    pub fn new(text: &str) -> Result<Glob, String> {
        let path = Path::new(text);
        if !path.is_absolute() {
            return Err(format!("'{text}' is not an absolute path"));
        }
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!("'{text}': '..' is not allowed in a glob"));
                }
                Component::Normal(os) => {
                    let s = os
                        .to_str()
                        .ok_or_else(|| format!("'{text}' is not valid UTF-8"))?;
                    if s == "**" {
                        parts.push(Part::AnyDepth);
                    } else if s.contains(['*', '?', '[']) {
                        let chars: Vec<char> = s.chars().collect();
                        check_classes(&chars).map_err(|e| format!("'{text}': {e}"))?;
                        parts.push(Part::Pattern(chars));
                    } else {
                        parts.push(Part::Literal(s.to_string()));
                    }
                }
            }
        }
        if matches!(parts.last(), None | Some(Part::AnyDepth)) {
            return Err(format!("'{text}' names no file"));
        }
        Ok(Glob {
            text: text.to_string(),
            parts,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (absolute) matches.
    pub fn matches(&self, path: &Path) -> bool {
        let comps: Vec<&str> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(os) => os.to_str(),
                _ => None,
            })
            .collect();
        if comps.len()
            != path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
        {
            return false;
        }
        match_parts(&self.parts, &comps)
    }

    /// Lists the folders the glob can reach and the regular files it
    /// matches. Folders that cannot be read are skipped (they are watched
    /// for again on the next rescan).
    pub fn expand(&self) -> Expansion {
        let mut out = Expansion::default();
        self.walk(PathBuf::from("/"), 0, &mut out);
        out.files.sort();
        out.files.dedup();
        out.dirs.sort();
        out.dirs.dedup();
        out
    }

    fn walk(&self, dir: PathBuf, at: usize, out: &mut Expansion) {
        let Some(part) = self.parts.get(at) else {
            return;
        };
        let last = at + 1 == self.parts.len();
        if let Part::Literal(name) = part {
            // No listing needed: one stat.
            let path = dir.join(name);
            if last {
                out.dirs.push(dir);
                if is_file(&path) {
                    out.files.push(path);
                }
            } else if path.is_dir() {
                self.walk(path, at + 1, out);
            } else {
                // Watch the deepest folder that exists, so the rest
                // appearing is noticed.
                out.dirs.push(dir);
            }
            return;
        }
        let Ok(list) = fs::read_dir(&dir) else {
            return;
        };
        out.dirs.push(dir.clone());
        for entry in list.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            match part {
                Part::AnyDepth => {
                    if is_dir {
                        // `**` goes deeper, or the rest matches here.
                        self.walk(path, at, out);
                    }
                }
                Part::Pattern(p) => {
                    if !match_component(p, name) {
                        continue;
                    }
                    if last {
                        if is_file(&path) {
                            out.files.push(path);
                        }
                    } else if is_dir {
                        self.walk(path, at + 1, out);
                    }
                }
                Part::Literal(_) => {}
            }
        }
        if matches!(part, Part::AnyDepth) {
            // `**` matching zero folders.
            self.walk(dir, at + 1, out);
        }
    }
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}

fn match_parts(parts: &[Part], comps: &[&str]) -> bool {
    match parts.split_first() {
        None => comps.is_empty(),
        Some((Part::AnyDepth, rest)) => {
            (0..=comps.len()).any(|skip| match_parts(rest, &comps[skip..]))
        }
        Some((part, rest)) => {
            let Some((first, others)) = comps.split_first() else {
                return false;
            };
            let ok = match part {
                Part::Literal(l) => l == first,
                Part::Pattern(p) => match_component(p, first),
                Part::AnyDepth => false,
            };
            ok && match_parts(rest, others)
        }
    }
}

fn check_classes(p: &[char]) -> Result<(), String> {
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            match class_end(p, i) {
                Some(end) => i = end,
                None => return Err("unclosed '['".into()),
            }
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class opening at `open`.
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(p.get(i), Some('!') | Some('^')) {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1;
    }
    while i < p.len() {
        if p[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn class_matches(p: &[char], open: usize, end: usize, c: char) -> bool {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    while i < end {
        if i + 2 < end && p[i + 1] == '-' {
            found |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            found |= p[i] == c;
            i += 1;
        }
    }
    found != negate
}

/// Whether one path component matches a pattern of `*`, `?` and classes.
/// A leading `.` is matched only by a literal `.`, as in shells.
pub fn match_component(p: &[char], name: &str) -> bool {
    let t: Vec<char> = name.chars().collect();
    if t.first() == Some(&'.') && p.first() != Some(&'.') {
        return false;
    }
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class_end(p, pi) {
                Some(end) if class_matches(p, pi, end, t[ti]) => Some(end + 1),
                Some(_) => None,
                None => (t[ti] == '[').then_some(pi + 1),
            },
            Some(&c) => (c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        Glob::new(glob).expect("glob").matches(Path::new(path))
    }

    #[test]
    fn components_classes_and_any_depth() {
        assert!(m("/var/log/*.log", "/var/log/syslog.log"));
        assert!(
            !m("/var/log/*.log", "/var/log/app/x.log"),
            "* stays in one folder"
        );
        assert!(!m("/var/log/*.log", "/var/log/x.log.1"));
        assert!(m("/var/log/app-?.log", "/var/log/app-1.log"));
        assert!(m("/var/log/app-[0-9].log", "/var/log/app-7.log"));
        assert!(!m("/var/log/app-[!0-9].log", "/var/log/app-7.log"));
        assert!(m("/var/log/**/*.log", "/var/log/x.log"));
        assert!(m("/var/log/**/*.log", "/var/log/a/b/c/x.log"));
        assert!(m("/var/log/pods/*/*/*.log", "/var/log/pods/ns_p_u/c/0.log"));
        assert!(!m("/var/log/*.log", "/var/log/.hidden.log"));
        assert!(m("/var/log/app.log", "/var/log/app.log"));
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(Glob::new("var/log/*.log").is_err());
        assert!(Glob::new("/var/log/[a.log").is_err());
        assert!(Glob::new("/var/log/**").is_err());
        assert!(Glob::new("/var/../x.log").is_err());
    }

    #[test]
    fn expansion_lists_only_the_folders_the_glob_reaches() {
        let root = std::env::temp_dir().join(format!("sl-glob-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["a/x", "a/y", "b/x", "other/deep"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for f in [
            "a/x/1.log",
            "a/y/2.log",
            "a/y/2.txt",
            "b/x/3.log",
            "other/deep/4.log",
        ] {
            fs::write(root.join(f), "x\n").expect("write");
        }
        let glob = Glob::new(&format!("{}/[ab]/*/*.log", root.display())).expect("glob");
        let found = glob.expand();
        let rel: Vec<_> = found
            .files
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(rel, ["a/x/1.log", "a/y/2.log", "b/x/3.log"]);
        assert!(!found.dirs.iter().any(|d| d.starts_with(root.join("other"))));
        let _ = fs::remove_dir_all(&root);
    }
}
