//! The rule language: what each form means, and where errors point.

use proptest::prelude::*;

use super::*;

fn ok(expr: &str) -> Condition {
    parse("r", expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn err(expr: &str) -> RuleError {
    match parse("disk full", expr) {
        Ok(c) => panic!("{expr} parsed as {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_threshold_with_labels_and_a_duration() {
    assert_eq!(
        ok(r#"disk.used_pct{mount="/var", device="sda1"} >= 95.5 for 5m"#),
        Condition::Threshold {
            metric: "disk.used_pct".into(),
            labels: vec![
                ("mount".into(), "/var".into()),
                ("device".into(), "sda1".into())
            ],
            op: Op::Ge,
            value: 95.5,
            for_ms: 300_000,
        }
    );
    assert_eq!(
        ok("mem.used_pct > 90"),
        Condition::Threshold {
            metric: "mem.used_pct".into(),
            labels: vec![],
            op: Op::Gt,
            value: 90.0,
            for_ms: 0,
        }
    );
}

#[test]
fn every_keyword_form() {
    assert_eq!(ok("no data"), Condition::NoData);
    assert!(
        matches!(ok("rebooted"), Condition::Event { kind, clear_ms: 600_000, .. } if kind == "host.rebooted")
    );
    assert!(matches!(
        ok("rebooted clear 30m"),
        Condition::Event {
            clear_ms: 1_800_000,
            ..
        }
    ));
    assert_eq!(
        ok(r#"threshold "mem""#),
        Condition::Event {
            kind: "threshold.exceeded".into(),
            resolved_by: Some("threshold.recovered".into()),
            clear_ms: 0,
            key: Some(("threshold".into(), Some("mem".into()))),
            at_least: None,
        }
    );
    assert_eq!(
        ok(r#"url down "home""#),
        Condition::Url {
            watch: UrlWatch::Down,
            target: Some("home".into())
        }
    );
    assert_eq!(
        ok("url degraded"),
        Condition::Url {
            watch: UrlWatch::Degraded,
            target: None
        }
    );
    assert_eq!(
        ok("lock wait > 10s"),
        Condition::Event {
            kind: "db.lock_wait".into(),
            resolved_by: None,
            clear_ms: 300_000,
            key: None,
            at_least: Some(("wait_ms".into(), 10_000.0)),
        }
    );
    assert_eq!(
        ok(r#"log "connection \"reset\"" >= 10 in 5m"#),
        Condition::Log {
            text: "connection \"reset\"".into(),
            count: 9,
            window_ms: 300_000
        }
    );
    assert!(
        matches!(ok("event db.unreachable clear 1m"), Condition::Event { kind, clear_ms: 60_000, .. } if kind == "db.unreachable")
    );
}

#[test]
fn a_keyword_followed_by_a_comparison_is_a_metric() {
    assert!(matches!(ok("log > 3"), Condition::Threshold { metric, .. } if metric == "log"));
}

#[test]
fn errors_name_the_rule_and_the_column() {
    let e = err("mem.used_pct > ninety for 1m");
    assert_eq!((e.rule.as_str(), e.column), ("disk full", 16), "{e}");
    assert_eq!(
        e.to_string(),
        "rule 'disk full', column 16: expected a number, found 'ninety'"
    );
    assert_eq!(err("mem.used_pct > 90 for").column, 22);
    assert_eq!(err("mem.used_pct > 90 for 1 minute").column, 23);
    assert_eq!(err("mem.used_pct 90").column, 14);
    assert_eq!(err("url up").column, 5);
    assert_eq!(err(r#"log "x" > 5000 in 1m"#).column, 11);
    assert_eq!(err(r#"log "x" < 5 in 1m"#).column, 9);
    assert_eq!(err("lock wait < 1s").column, 11);
    assert_eq!(err(r#"cpu{mount "/"} > 1"#).column, 11);
    assert_eq!(err(r#"log "unclosed > 1 in 1m"#).column, 5);
    assert_eq!(err("mem > 1 extra").column, 9);
    assert_eq!(err("   ").column, 1);
    assert_eq!(err("mem > 1 # comment").column, 9);
}

proptest! {
    /// Any text parses or fails with a column inside the text (or just
    /// after it), never panics.
    #[test]
    fn any_text_parses_or_points_inside_it(expr in "\\PC{0,40}") {
        match parse("p", &expr) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.column >= 1 && e.column <= expr.chars().count() + 1, "{e}"),
        }
    }

    /// A threshold written out parses back to what was written.
    #[test]
    fn thresholds_round_trip(
        metric in "[a-z][a-z_]{0,8}(\\.[a-z_]{1,8}){0,2}",
        op in prop::sample::select(vec![Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne]),
        value in -1e6f64..1e6,
        secs in 0u64..100_000,
    ) {
        let expr = format!("{metric} {} {value} for {secs}s", op.text());
        let parsed = parse("p", &expr).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, Condition::Threshold {
            metric,
            labels: vec![],
            op,
            value,
            for_ms: i64::try_from(secs).unwrap_or(0) * 1000,
        });
    }
}
