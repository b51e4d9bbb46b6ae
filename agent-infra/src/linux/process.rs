//! Processes from `/proc/<pid>/stat`, `/proc/<pid>/status` and
//! `/proc/<pid>/cmdline`, and user names from `passwd`.

use std::collections::HashMap;

use super::parse::ParseError;

const STAT: &str = "<pid>/stat";

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    /// Process id.
    pub pid: u32,
    /// `comm`: the executable's name, at most 15 bytes.
    pub comm: String,
    /// One-letter state: R, S, D, Z, T, t, I, X.
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// User-mode CPU time, clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time, clock ticks.
    pub stime: u64,
    /// Threads.
    pub threads: u32,
    /// Start time after boot, clock ticks (tells a reused pid apart).
    pub start_time: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
    /// A kernel thread (`PF_KTHREAD` in the flags, field 9).
    pub kernel_thread: bool,
}

/// `PF_KTHREAD` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses one `/proc/<pid>/stat`. The name is in parentheses and may itself
/// contain spaces and parentheses, so it ends at the *last* `)`.
pub fn parse_pid_stat(text: &str) -> Result<PidStat, ParseError> {
    let bad = |what: &str| ParseError::new(STAT, 1, what.to_string());
    let open = text.find('(').ok_or_else(|| bad("no '('"))?;
    let close = text.rfind(')').ok_or_else(|| bad("no ')'"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let pid = text[..open].trim().parse().map_err(|_| bad("bad pid"))?;
    let comm = text[open + 1..close].to_string();
    // Fields after the name, numbered from 3 (state) as in proc(5); only
    // those used are kept (no list of all 50: this runs for every process
    // every cycle).
    const WANTED: [usize; 8] = [3, 4, 9, 14, 15, 20, 22, 24];
    let mut found: [&str; WANTED.len()] = [""; WANTED.len()];
    let mut fields = text[close + 1..].split_ascii_whitespace();
    let mut at = 3;
    for (slot, &n) in found.iter_mut().zip(&WANTED) {
        let skipped = n - at;
        *slot = fields
            .nth(skipped)
            .ok_or_else(|| bad(&format!("no field {n}")))?;
        at = n + 1;
    }
    let field = |n: usize| -> &str { WANTED.iter().position(|&w| w == n).map_or("", |i| found[i]) };
    let num = |n: usize| -> Result<u64, ParseError> {
        let f = field(n);
        f.parse()
            .map_err(|_| bad(&format!("field {n}: '{f}' is not a number")))
    };
    Ok(PidStat {
        pid,
        comm,
        state: field(3).chars().next().unwrap_or('?'),
        ppid: u32::try_from(num(4)?).unwrap_or(0),
        utime: num(14)?,
        stime: num(15)?,
        threads: u32::try_from(num(20)?).unwrap_or(u32::MAX),
        start_time: num(22)?,
        rss_pages: num(24)?,
        kernel_thread: num(9)? & PF_KTHREAD != 0,
    })
}

/// From `/proc/<pid>/schedstat` (`sum_exec_runtime run_delay pcount`):
/// the nanoseconds the task ran and how many times it was put on a CPU.
/// Both unchanged: it has not run since (a kernel thread's `stat` is then
/// what it was).
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let ran_ns = fields.next()?.parse().ok()?;
    let runs = fields.nth(1)?.parse().ok()?;
    Some((ran_ns, runs))
}

/// The state letter in words, as `ps` documents them.
pub fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk-sleep",
        'Z' => "zombie",
        'T' => "stopped",
        't' => "tracing-stop",
        'I' => "idle",
        'X' | 'x' => "dead",
        'P' => "parked",
        'W' => "waking",
        _ => "unknown",
    }
}

/// The real uid from `/proc/<pid>/status`.
pub fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `/proc/<pid>/cmdline` (NUL-separated) as one line, at most `max` bytes
/// (cut at a character boundary, `…` appended when cut).
pub fn format_cmdline(raw: &[u8], max: usize) -> String {
    let joined: Vec<u8> = raw
        .strip_suffix(&[0])
        .unwrap_or(raw)
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let text = String::from_utf8_lossy(&joined);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// uid → name from a `passwd` file. Users only known to LDAP or other NSS
/// sources are shown as their uid.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_stat_and_status() {
        let s =
            parse_pid_stat(include_str!("../../tests/fixtures/vm-2cpu/pid1_stat")).expect("parses");
        assert_eq!(s.pid, 1);
        assert_eq!(s.comm, "process_api");
        assert_eq!(s.state, 'S');
        assert!(s.threads >= 1 && s.rss_pages > 0);
        assert_eq!(
            parse_status_uid(include_str!("../../tests/fixtures/vm-2cpu/pid1_status")),
            Some(0)
        );
    }

    #[test]
    fn names_with_spaces_and_parentheses_survive() {
        let text = "4242 (my (weird) proc) R 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 777 1000000 512 18446744073709551615";
        let s = parse_pid_stat(text).expect("parses");
        assert_eq!(s.comm, "my (weird) proc");
        assert_eq!(
            (
                s.state,
                s.ppid,
                s.utime,
                s.stime,
                s.threads,
                s.start_time,
                s.rss_pages
            ),
            ('R', 1, 250, 50, 3, 777, 512)
        );
        assert!(parse_pid_stat("4242 (short) R 1").is_err());
        assert!(!s.kernel_thread);
        let kworker = "7 (kworker/0:0-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 5 0 0 20 0 1 0 3 0 0 18446744073709551615";
        assert!(parse_pid_stat(kworker).expect("parses").kernel_thread);
        assert_eq!(
            parse_schedstat("6359774 14005533 104\n"),
            Some((6359774, 104))
        );
        assert_eq!(parse_schedstat("6359774"), None);
    }

    #[test]
    fn command_lines_are_joined_and_cut() {
        assert_eq!(
            format_cmdline(b"nginx: worker\0-g\0daemon off;\0", 100),
            "nginx: worker -g daemon off;"
        );
        assert_eq!(format_cmdline(b"abcdef\0", 3), "abc…");
        assert_eq!(format_cmdline("héé".as_bytes(), 2), "h…");
        assert_eq!(format_cmdline(b"", 10), "");
    }

    #[test]
    fn passwd_maps_uids_to_names() {
        let users = parse_passwd(include_str!("../../tests/fixtures/vm-2cpu/passwd"));
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        let users = parse_passwd("# comment\nweb:x:1001:1001::/srv:/bin/sh\nbroken\n");
        assert_eq!(users.get(&1001).map(String::as_str), Some("web"));
        assert_eq!(users.len(), 1);
    }
}
