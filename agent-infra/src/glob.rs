//! `*` and `?` wildcards for the include/exclude lists in the config
//! (`veth*`, `/var/lib/docker/*`). `*` matches any run of characters,
//! slashes included.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether any pattern matches.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("veth*", "veth12ab"));
        assert!(matches("veth*", "veth"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches(
            "/var/lib/docker/*",
            "/var/lib/docker/overlay2/x/merged"
        ));
        assert!(!matches("/var/lib/docker/*", "/var/lib/docker"));
        assert!(matches("eth?", "eth0"));
        assert!(!matches("eth?", "eth10"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("lo", "lo") && !matches("lo", "lo0"));
    }
}
