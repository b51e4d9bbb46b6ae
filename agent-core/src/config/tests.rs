//! Tests of the config layers: file syntax, environment and flag overrides,
//! typed accessors, and that no echo (error, warning, `Debug`) shows a
//! secret.

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

/// A license key as `project create` prints it (checksum not checked here).
const KEY: &str = "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM";
/// The 26 secret characters of [`KEY`].
const KEY_SECRET: &str = "7K3M9QW2XH8D4R6TBN1PZC5VFA";

/// Fails when `shown` holds any 8 consecutive characters of `secret`, in
/// any case.
fn assert_no_run_of(secret: &str, shown: &str) {
    let shown = shown.to_ascii_uppercase();
    for i in 0..=secret.len() - 8 {
        let run = secret[i..i + 8].to_ascii_uppercase();
        assert!(!shown.contains(&run), "shows '{run}': {shown}");
    }
}

#[test]
fn a_license_pasted_without_its_key_is_not_echoed() {
    for line in [
        KEY.to_string(),
        KEY.to_ascii_lowercase(),
        format!("  {KEY}  "),
    ] {
        let path = write(
            "bare-key.conf",
            &format!(
                "server.host=c.lan
{line}
"
            ),
        );
        let err = load(&path, &[], &[]).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:2: expected key=value, got '", path.display())),
            "{text}"
        );
        assert_no_run_of(KEY_SECRET, &text);
        assert_no_run_of(KEY_SECRET, &format!("{err:?}"));
    }
}

#[test]
fn a_secret_in_a_line_with_a_bad_key_is_not_echoed() {
    // Uppercase in the key: the invalid-character path.
    let path = write(
        "bad-key-secret.conf",
        &format!(
            "{KEY} = x
"
        ),
    );
    let text = load(&path, &[], &[]).expect_err("refused").to_string();
    assert!(text.contains("invalid character"), "{text}");
    assert_no_run_of(KEY_SECRET, &text);
    // An empty segment: the other key path.
    let lower = KEY.to_ascii_lowercase();
    let path = write(
        "empty-seg-secret.conf",
        &format!(
            "{lower}..x=1
"
        ),
    );
    let text = load(&path, &[], &[]).expect_err("refused").to_string();
    assert!(text.contains("empty segment"), "{text}");
    assert_no_run_of(KEY_SECRET, &text);
}

#[test]
fn a_secret_used_as_a_key_is_not_echoed_in_the_warning() {
    // Lower case and dashes make a valid key: an unknown one.
    let lower = KEY.to_ascii_lowercase();
    let path = write(
        "key-as-key.conf",
        &format!(
            "{lower}=1
{lower}=2
"
        ),
    );
    let config = load(&path, &[], &[]).expect("loads with warnings");
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for warning in &warnings {
        assert_no_run_of(KEY_SECRET, warning);
    }
    assert_no_run_of(KEY_SECRET, &format!("{config:?}"));
}

#[test]
fn a_secret_in_a_bad_value_is_not_echoed() {
    let token = "slt-0123456789abcdef0123456789abcdef0123456789abcdef";
    let path = write(
        "bad-value.conf",
        &format!(
            "interval={KEY}
spool.max={token}
"
        ),
    );
    let config = load(&path, &[], &[]).expect("loads");
    let err = config.duration("interval").expect_err("not a duration");
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1: interval: expected a duration",
            path.display()
        )),
        "{err}"
    );
    assert_no_run_of(KEY_SECRET, &err.to_string());
    let err = config.size("spool.max").expect_err("not a size");
    assert!(!err.to_string().contains(&token[4..20]), "{err}");
    assert!(!format!("{err:?}").contains(&token[4..20]), "{err:?}");
}

#[test]
fn a_secret_keys_value_is_masked_whole_in_errors() {
    const SECRET_SPECS: &[KeySpec] = &[KeySpec {
        key: "db.password",
        default: None,
        doc: "",
    }];
    let path = write(
        "password.conf",
        "db.password=hunter2
",
    );
    let config = Config::from_text(
        &path,
        "db.password=hunter2
",
        SECRET_SPECS,
    )
    .expect("loads");
    let err = config
        .number::<u32>("db.password", "a number")
        .expect_err("not a number");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("db.password"), "{err}");
}

#[test]
fn config_and_value_debug_redact() {
    let path = write(
        "debug.conf",
        &format!("license={KEY}\nserver.host=c.lan\ninterval=5s\nspool.max=hQ7+vX2/kP9wZr4NtY6b\n"),
    );
    let config = load(&path, &[], &[]).expect("loads");
    let shown = format!("{config:?}");
    assert_no_run_of(KEY_SECRET, &shown);
    assert!(!shown.contains("hQ7+vX2/kP9wZr4NtY6b"), "{shown}");
    assert!(shown.contains("c.lan") && shown.contains("5s"), "{shown}");
    let value = config.value("license").expect("set");
    assert_no_run_of(KEY_SECRET, &format!("{value:?}"));
}

/// The MSI's registry values lie under the file: they fill what the file
/// leaves unset or empty, never what it sets, and an empty one (a property
/// not given) fills nothing. Errors name the registry value.
#[test]
fn installer_values_fill_only_what_the_file_leaves_unset() {
    let mut config = Config::from_text(
        &PathBuf::from("infra.conf"),
        "license=\nserver.host=from-file.lan\n",
        SPECS,
    )
    .expect("parses");
    let place = |name: &str| format!("registry HKLM\\SOFTWARE\\Sightline\\Infra\\{name}");
    let value = |key: &str, text: &str| InstallerValue {
        key: key.to_string(),
        text: text.to_string(),
        place: place(key),
    };
    config.fill_from_installer(&[
        value("license", "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM"),
        value("server.host", "from-registry.lan"),
        value("interval", "9s"),
        value("spool.max", ""),
    ]);
    let license = config.value("license").expect("license");
    assert_eq!(license.text, "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM");
    assert_eq!(license.origin.to_string(), place("license"));
    assert_eq!(config.get("server.host").as_deref(), Some("from-file.lan"));
    assert_eq!(config.get("interval").as_deref(), Some("9s"));
    assert_eq!(
        config.get("spool.max").as_deref(),
        Some("64MiB"),
        "the default"
    );
    let shown = format!(
        "{:?}",
        value("license", "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM")
    );
    assert!(!shown.contains("7K3M9QW2"), "{shown}");
}
