use std::path::PathBuf;

use super::*;

const SPECS: &[KeySpec] = &[
    KeySpec {
        key: "license",
        default: None,
        doc: "",
    },
    KeySpec {
        key: "server.host",
        default: Some("127.0.0.1"),
        doc: "",
    },
    KeySpec {
        key: "server.port",
        default: Some("6600"),
        doc: "",
    },
    KeySpec {
        key: "interval",
        default: Some("5s"),
        doc: "",
    },
    KeySpec {
        key: "spool.max",
        default: Some("64MiB"),
        doc: "",
    },
    KeySpec {
        key: "target.*.url",
        default: None,
        doc: "",
    },
];

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sl-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn load(path: &Path, env: &[(&str, &str)], flags: &[FlagValue]) -> Result<Config, ConfigError> {
    Config::load(
        &FileSource::Explicit(path.to_path_buf()),
        &MapEnv::new(env.iter().copied()),
        flags,
        SPECS,
    )
}

#[test]
fn reads_keys_comments_quotes_and_defaults() {
    let path = write(
        "ok.conf",
        "# comment\n\nlicense = abc\nserver.host=\"collector.lan\"\ntarget.home.url=https://x/#frag\n",
    );
    let config = load(&path, &[], &[]).expect("loads");
    assert_eq!(config.get("license").as_deref(), Some("abc"));
    assert_eq!(config.get("server.host").as_deref(), Some("collector.lan"));
    assert_eq!(config.get("server.port").as_deref(), Some("6600"));
    assert_eq!(
        config.get("target.home.url").as_deref(),
        Some("https://x/#frag")
    );
    assert_eq!(
        config.group_names("target").into_iter().collect::<Vec<_>>(),
        ["home"]
    );
    assert_eq!(
        config.duration("interval").expect("default"),
        Duration::from_secs(5)
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn a_line_without_equals_names_file_and_line() {
    let path = write("bad.conf", "license=abc\n\nserver.host 10.0.0.1\n");
    let err = load(&path, &[], &[]).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: expected key=value, got 'server.host 10.0.0.1'",
            path.display()
        )
    );
}

#[test]
fn a_bad_key_names_file_and_line() {
    let path = write("badkey.conf", "License=abc\n");
    let err = load(&path, &[], &[]).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:1: invalid character 'L'", path.display())),
        "{text}"
    );
}

#[test]
fn an_unknown_key_warns_with_the_nearest_known_key() {
    let path = write(
        "typo.conf",
        "license=abc\nsever.host=10.0.0.1\ncompletely.different=1\n",
    );
    let config = load(&path, &[], &[]).expect("loads despite the typo");
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "{}:2: unknown key 'sever.host', ignored; did you mean 'server.host'?",
                path.display()
            ),
            format!(
                "{}:3: unknown key 'completely.different', ignored",
                path.display()
            ),
        ]
    );
}

#[test]
fn environment_overrides_file_and_flags_override_both() {
    let path = write(
        "layers.conf",
        "license=from-file\nserver.host=file-host\nserver.port=1\n",
    );
    let env = [
        ("SIGHTLINE_SERVER_HOST", "env-host"),
        ("SIGHTLINE_SERVER_PORT", "2"),
        ("HOME", "/root"),
    ];
    let flags = [FlagValue {
        key: "server.port",
        value: "3".into(),
        flag: "--server",
    }];
    let config = load(&path, &env, &flags).expect("loads");
    assert_eq!(config.get("license").as_deref(), Some("from-file"));
    assert_eq!(config.get("server.host").as_deref(), Some("env-host"));
    let port = config.value("server.port").expect("set");
    assert_eq!(port.text, "3");
    assert_eq!(port.origin, Origin::Flag { flag: "--server" });
}

#[test]
fn a_bad_value_names_where_it_came_from() {
    let path = write("value.conf", "license=abc\ninterval=5\nspool.max=lots\n");
    let config = load(&path, &[], &[]).expect("loads");
    let err = config.duration("interval").expect_err("no unit");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: interval: expected a duration with a unit like 5s or 1m, got '5'",
            path.display()
        )
    );
    let err = config.size("spool.max").expect_err("not a size");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: spool.max:", path.display()))
    );
    let env_config = load(&path, &[("SIGHTLINE_INTERVAL", "soon")], &[]).expect("loads");
    let err = env_config.duration("interval").expect_err("bad");
    assert!(
        err.to_string()
            .starts_with("environment variable SIGHTLINE_INTERVAL: interval:"),
        "{err}"
    );
}

#[test]
fn a_missing_default_file_is_fine_but_an_explicit_one_is_not() {
    let missing = std::env::temp_dir().join("sl-config-does-not-exist.conf");
    let config = Config::load(
        &FileSource::Default(missing.clone()),
        &MapEnv::new([("SIGHTLINE_LICENSE", "k")]),
        &[],
        SPECS,
    )
    .expect("env alone is enough");
    assert_eq!(config.get("license").as_deref(), Some("k"));
    assert!(config.path().is_none());
    let err = Config::load(
        &FileSource::Explicit(missing.clone()),
        &MapEnv::default(),
        &[],
        SPECS,
    )
    .expect_err("refused");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read config file", missing.display()))
    );
}

#[test]
fn units_parse_as_operators_write_them() {
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
    assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("-1MiB").is_err());
    assert!(parse_size("1 parsec").is_err());
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_duration("5").is_err());
}
