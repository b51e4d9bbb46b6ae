//! Tests of the log agent's settings: defaults, every key, and errors that
//! name the file, the line and the reason.

use std::path::Path;

use super::*;

fn settings(text: &str) -> Result<LogSettings, ConfigError> {
    let keys: Vec<KeySpec> = agent_core::settings::COMMON_KEYS
        .iter()
        .chain(LOG_KEYS)
        .copied()
        .collect();
    LogSettings::from_config(&Config::from_text(Path::new("log.conf"), text, &keys)?)
}

#[test]
fn a_group_needs_only_its_path_and_the_rest_has_defaults() {
    let s = settings("file.app.path = /var/log/app/*.log, /var/log/app.log\n").expect("parses");
    assert_eq!(s.groups.len(), 1);
    let g = &s.groups[0];
    assert_eq!(g.name, "app");
    assert_eq!(g.category, "app");
    assert_eq!(g.paths, ["/var/log/app/*.log", "/var/log/app.log"]);
    assert_eq!(g.start, Start::End);
    assert_eq!(g.rules.max_line, 64 << 10);
    assert_eq!(g.rules.format, Format::Plain);
    assert_eq!(g.rules.encoding, Encoding::Utf8);
    assert!(g.rules.multiline.is_none());
    assert_eq!(s.rescan, Duration::from_secs(10));
    assert_eq!(s.max_open, 1024);
    assert_eq!(s.linger, Duration::from_millis(200));
}

#[test]
fn every_key_is_read() {
    let s = settings(concat!(
        "file.web.path = /var/log/nginx/access.log\n",
        "file.web.exclude = /var/log/nginx/*.gz\n",
        "file.web.category = nginx\n",
        "file.web.start = beginning\n",
        "file.web.format = cri\n",
        "file.web.encoding = UTF-16LE\n",
        "file.web.max_line = 1KiB\n",
        "file.web.multiline.start = ^\\d{4}-\n",
        "file.web.multiline.timeout = 2s\n",
        "file.web.multiline.max_lines = 20\n",
        "file.web.multiline.max_bytes = 64KiB\n",
        "file.web.include_lines = GET|POST\n",
        "file.web.exclude_lines = healthz\n",
        "file.web.parse = ^(?P<ip>\\S+) \\S+ \\S+ \\[[^]]+\\] \"(?P<method>\\S+) (?P<path>\\S+)\n",
        "log.rescan = 1s\n",
        "log.max_open = 10\n",
        "log.linger = 50ms\n",
        "log.kubernetes = pods\n",
        "log.pods_root = /tmp/pods\n",
    ))
    .expect("parses");
    let g = s.groups.iter().find(|g| g.name == "web").expect("web");
    assert_eq!(g.category, "nginx");
    assert_eq!(g.start, Start::Beginning);
    assert_eq!(g.rules.format, Format::Cri);
    assert_eq!(g.rules.encoding, Encoding::Utf16Le);
    assert_eq!(g.rules.max_line, 1024);
    let m = g.rules.multiline.as_ref().expect("multiline");
    assert_eq!(
        (m.timeout, m.max_lines, m.max_bytes),
        (Duration::from_secs(2), 20, 64 << 10)
    );
    assert!(g.rules.include_lines[0].is_match("GET /"));
    assert!(g.rules.exclude_lines[0].is_match("/healthz"));
    assert!(g.rules.parse.is_some());
    assert_eq!(
        (s.rescan, s.max_open, s.linger),
        (Duration::from_secs(1), 10, Duration::from_millis(50))
    );
    let pods = s
        .groups
        .iter()
        .find(|g| g.name == PODS_GROUP)
        .expect("pods group");
    assert_eq!(pods.paths, ["/tmp/pods/*/*/*.log"]);
    assert_eq!(pods.rules.format, Format::Cri);
    assert!(pods.pod_attrs);
}

#[test]
fn bad_values_name_the_file_the_line_and_why() {
    let cases = [
        (
            "file.a.path = /x/*.log\nfile.a.start = middle\n",
            "log.conf:2: file.a.start: expected end or beginning, got 'middle'",
        ),
        (
            "file.a.path = /x/*.log\nfile.a.multiline.start = (\n",
            "log.conf:2: file.a.multiline.start: not a valid regex",
        ),
        (
            "file.a.path = relative/*.log\n",
            "log.conf:1: file.a.path: 'relative/*.log' is not an absolute path",
        ),
        (
            "file.a.path = /x/*.log\nfile.a.format = json\n",
            "log.conf:2: file.a.format: expected plain or cri, got 'json'",
        ),
        (
            "file.a.path = /x/*.log\nfile.a.encoding = latin1\n",
            "log.conf:2: file.a.encoding: expected utf-8, utf-16le or utf-16be, got 'latin1'",
        ),
        (
            "file.a.path = /x/*.log\nfile.a.parse = \\d+\n",
            "log.conf:2: file.a.parse: has no named group",
        ),
        (
            "file.a.path = /x/*.log\nlog.max_open = 0\n",
            "log.conf:2: log.max_open: must be at least 1",
        ),
        (
            "file.a.path = /x/*.log\nfile.a.max_line = 2MiB\n",
            "log.conf:2: file.a.max_line: must be at most",
        ),
        (
            "file.a.path = /x/[.log\n",
            "log.conf:1: file.a.path: '/x/[.log': unclosed '['",
        ),
    ];
    for (text, want) in cases {
        let err = settings(text).expect_err(text).to_string();
        assert!(err.starts_with(want), "{text}: got {err}");
    }
    let err = settings("").expect_err("no group").to_string();
    assert!(err.contains("file.<name>.path"), "{err}");
    let err = settings("file.a.category = x\n")
        .expect_err("no path")
        .to_string();
    assert!(err.contains("file.a.path"), "{err}");
}

#[test]
fn pod_attributes_come_from_the_path() {
    let attrs = pod_attrs(Path::new(
        "/var/log/pods/shop_web-7d9f_0a1b-2c3d/nginx/0.log",
    ));
    assert_eq!(attrs.get("namespace").map(String::as_str), Some("shop"));
    assert_eq!(attrs.get("pod").map(String::as_str), Some("web-7d9f"));
    assert_eq!(attrs.get("container").map(String::as_str), Some("nginx"));
    assert!(pod_attrs(Path::new("/var/log/app.log")).is_empty());
}
