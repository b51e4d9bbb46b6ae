//! The framer's rules, each on bytes, and the property the tailer relies
//! on: however the bytes are split into pushes, the records and the safe
//! offset are the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// A record as a user would check it, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    start: u64,
    end: u64,
    text: String,
    cut: bool,
    fields: Vec<(String, String)>,
    time_ms: Option<i64>,
    stream: Option<String>,
}

/// Keeps every record, its fields by name.
#[derive(Debug, Default)]
struct Collect {
    names: Vec<String>,
    records: Vec<Rec>,
}

impl RecordSink for Collect {
    fn record(&mut self, r: &RecordRef<'_>) {
        self.records.push(Rec {
            start: r.start,
            end: r.end,
            text: r.text.to_string(),
            cut: r.cut,
            fields: r
                .fields
                .iter()
                .map(|(i, range)| {
                    let value = &r.text[range.start as usize..range.end as usize];
                    (self.names[*i].clone(), value.to_string())
                })
                .collect(),
            time_ms: r.time_ms,
            stream: r.stream.map(str::to_string),
        });
    }
}

fn framer(rules: FramingRules) -> (Framer, Collect) {
    let framer = Framer::new(Arc::new(rules), 0);
    let sink = Collect {
        names: framer.field_names(),
        records: Vec::new(),
    };
    (framer, sink)
}

/// `input` pushed whole at `now`.
fn frame(rules: FramingRules, input: &[u8]) -> (Framer, Vec<Rec>) {
    let (mut framer, mut sink) = framer(rules);
    framer.push(input, Instant::now(), &mut sink);
    (framer, sink.records)
}

fn texts(records: &[Rec]) -> Vec<&str> {
    records.iter().map(|r| r.text.as_str()).collect()
}

fn spans(records: &[Rec]) -> Vec<(u64, u64)> {
    records.iter().map(|r| (r.start, r.end)).collect()
}

fn multiline(start: &str) -> Multiline {
    Multiline::new(compile_rule("file.t.multiline.start", start).expect("compiles"))
}

// ---- line ends ----

#[test]
fn lines_end_at_newline_and_a_carriage_return_is_not_text() {
    let (framer, records) = frame(FramingRules::default(), b"one\r\ntwo\n\n\r\nthree");
    assert_eq!(texts(&records), ["one", "two", "", ""]);
    assert_eq!(spans(&records), [(0, 5), (5, 9), (9, 10), (10, 12)]);
    // "three" has no line end yet: pending, not emitted.
    assert_eq!(framer.safe_offset(), 12);
    assert_eq!(framer.offset(), 17);
    assert_eq!(framer.counts().records, 4);
}

#[test]
fn a_partial_last_line_is_never_emitted_even_on_finish() {
    let (mut framer, mut sink) = framer(FramingRules::default());
    framer.push(b"done\nhalf a li", Instant::now(), &mut sink);
    framer.finish(&mut sink);
    assert_eq!(texts(&sink.records), ["done"]);
    assert_eq!(framer.offset() - framer.safe_offset(), 9);
    // The rest of it comes later: one record, from where it began.
    framer.push(b"ne\n", Instant::now(), &mut sink);
    assert_eq!(texts(&sink.records), ["done", "half a line"]);
    assert_eq!(sink.records[1].start, 5);
    assert_eq!(framer.safe_offset(), 17);
}

#[test]
fn a_carriage_return_alone_in_the_middle_stays() {
    let (_, records) = frame(FramingRules::default(), b"a\rb\r\n");
    assert_eq!(texts(&records), ["a\rb"]);
}

#[test]
fn a_framer_started_mid_file_counts_from_its_offset() {
    let (mut framer, mut sink) = framer(FramingRules::default());
    framer = Framer::new(Arc::clone(&framer.rules), 1000);
    framer.push(b"x\ny\n", Instant::now(), &mut sink);
    assert_eq!(spans(&sink.records), [(1000, 1002), (1002, 1004)]);
    assert_eq!(framer.safe_offset(), 1004);
}

// ---- max_line ----

#[test]
fn a_one_mebibyte_line_is_cut_to_max_line_and_covered_whole() {
    let mut input = vec![b'a'; 1 << 20];
    input.extend_from_slice(b"\nnext\n");
    for piece in [4096, 1 << 20, input.len()] {
        let (mut framer, mut sink) = framer(FramingRules::default());
        for part in input.chunks(piece) {
            framer.push(part, Instant::now(), &mut sink);
            // Never more of the line held than the limit.
            assert!(framer.line.capacity() <= 2 * DEFAULT_MAX_LINE, "{piece}");
        }
        let records = &sink.records;
        assert_eq!(records.len(), 2, "{piece}");
        assert_eq!(records[0].text.len(), DEFAULT_MAX_LINE);
        assert!(records[0].cut);
        assert_eq!((records[0].start, records[0].end), (0, (1 << 20) + 1));
        assert_eq!(records[1].text, "next");
        assert!(!records[1].cut);
        assert_eq!(framer.counts().cut, 1);
        assert_eq!(framer.safe_offset(), input.len() as u64);
    }
}

#[test]
fn a_long_line_does_not_keep_its_memory_after_it_is_emitted() {
    let (mut framer, mut sink) = framer(java_rules());
    let long = format!("2024-01-01 {}\n\tat x\n", "y".repeat(200_000));
    for piece in long.as_bytes().chunks(1000) {
        framer.push(piece, Instant::now(), &mut sink);
    }
    framer.push(b"2024-01-02 next\n", Instant::now(), &mut sink);
    assert_eq!(sink.records.len(), 1);
    assert!(sink.records[0].cut);
    assert!(framer.line.capacity() <= RETAINED);
    assert!(framer.multi.text.capacity() <= RETAINED);
}

#[test]
fn a_cut_never_splits_a_character() {
    let rules = FramingRules {
        max_line: 4,
        ..FramingRules::default()
    };
    // "aéé": a, C3 A9, C3 A9: four bytes end inside the second é.
    let (_, records) = frame(rules.clone(), "aéé\nabcd\r\nabcd\n".as_bytes());
    assert_eq!(texts(&records), ["aé", "abcd", "abcd"]);
    assert_eq!(
        records.iter().map(|r| r.cut).collect::<Vec<_>>(),
        [true, false, false]
    );
    let (framer, records) = frame(rules, b"abcde\r\n");
    assert_eq!(texts(&records), ["abcd"]);
    assert!(records[0].cut);
    assert_eq!(framer.counts().invalid, 0);
}

// ---- encodings ----

#[test]
fn invalid_utf8_is_replaced_and_counted() {
    let (framer, records) = frame(FramingRules::default(), b"ok\nbad \xff\xfe here\n\xc3\n");
    assert_eq!(
        texts(&records),
        ["ok", "bad \u{fffd}\u{fffd} here", "\u{fffd}"]
    );
    assert_eq!(framer.counts().invalid, 3);
    assert_eq!(framer.safe_offset(), 17);
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[test]
fn a_utf16_byte_order_mark_wins_over_the_configured_encoding() {
    let mut input = vec![0xFF, 0xFE];
    input.extend(utf16le("héllo\r\nwörld 😀\npart"));
    let (framer, records) = frame(FramingRules::default(), &input);
    assert_eq!(texts(&records), ["héllo", "wörld 😀"]);
    // The mark is covered by the first line's span, not by its text.
    assert_eq!(spans(&records), [(0, 16), (16, 34)]);
    assert_eq!(framer.safe_offset(), 34);
    assert_eq!(framer.counts().invalid, 0);

    let mut input = vec![0xFE, 0xFF];
    input.extend(utf16be("big\nendian\n"));
    let rules = FramingRules {
        encoding: Encoding::Utf16Le,
        ..FramingRules::default()
    };
    let (_, records) = frame(rules, &input);
    assert_eq!(texts(&records), ["big", "endian"]);
    assert_eq!(records[0].start, 0);
}

#[test]
fn utf16_without_a_mark_follows_the_configuration() {
    let rules = FramingRules {
        encoding: Encoding::Utf16Be,
        ..FramingRules::default()
    };
    // U+0A0A has 0A in both bytes: not a line end.
    let (framer, records) = frame(rules, &utf16be("a\u{0a0a}b\nc\n"));
    assert_eq!(texts(&records), ["a\u{0a0a}b", "c"]);
    assert_eq!(framer.safe_offset(), 12);
    let rules = FramingRules {
        encoding: Encoding::Utf16Le,
        ..FramingRules::default()
    };
    let (_, records) = frame(rules, &utf16le("\u{0a0a}\n\u{0d0a}x\n"));
    assert_eq!(texts(&records), ["\u{0a0a}", "\u{0d0a}x"]);
}

#[test]
fn a_utf8_byte_order_mark_is_not_text() {
    let (_, records) = frame(FramingRules::default(), b"\xef\xbb\xbfa\nb\n");
    assert_eq!(texts(&records), ["a", "b"]);
    assert_eq!(spans(&records), [(0, 5), (5, 7)]);
}

#[test]
fn a_mark_split_over_pushes_is_still_found() {
    let (mut framer, mut sink) = framer(FramingRules::default());
    for byte in b"\xef\xbb\xbfa" {
        framer.push(&[*byte], Instant::now(), &mut sink);
        assert_eq!(framer.safe_offset(), 0);
    }
    framer.push(b"\nb\n", Instant::now(), &mut sink);
    assert_eq!(texts(&sink.records), ["a", "b"]);
}

#[test]
fn a_resumed_utf16_file_keeps_the_encoding_of_its_mark() {
    let mut file = vec![0xFF, 0xFE];
    file.extend(utf16le("one\ntwo\n"));
    let mut framer = Framer::resumed(Arc::new(FramingRules::default()), 10, &file[..3]);
    let mut sink = Collect::default();
    framer.push(&file[10..], Instant::now(), &mut sink);
    assert_eq!(texts(&sink.records), ["two"]);
    assert_eq!(spans(&sink.records), [(10, 18)]);
}

#[test]
fn utf16_cut_at_max_line_counts_characters_not_bytes() {
    let rules = FramingRules {
        max_line: 3,
        encoding: Encoding::Utf16Le,
        ..FramingRules::default()
    };
    let (framer, records) = frame(rules, &utf16le("abcdef\n😀😀\n"));
    assert_eq!(texts(&records), ["abc", ""]);
    assert!(records.iter().all(|r| r.cut));
    assert_eq!(framer.counts().invalid, 0);
}

// ---- CRI ----

fn cri() -> FramingRules {
    FramingRules {
        format: Format::Cri,
        ..FramingRules::default()
    }
}

#[test]
fn cri_partial_lines_are_joined_until_a_full_one() {
    let input = "2024-01-01T00:00:00.100Z stdout P first \n\
                 2024-01-01T00:00:00.200Z stdout P second \n\
                 2024-01-01T00:00:00.300Z stdout F third\n\
                 2024-01-01T00:00:01Z stderr F alone\n";
    let (framer, records) = frame(cri(), input.as_bytes());
    assert_eq!(texts(&records), ["first second third", "alone"]);
    assert_eq!(records[0].time_ms, Some(1_704_067_200_100));
    assert_eq!(records[0].stream.as_deref(), Some("stdout"));
    assert_eq!(records[1].stream.as_deref(), Some("stderr"));
    assert_eq!(records[0].start, 0);
    assert_eq!(records[0].end, records[1].start);
    assert_eq!(framer.safe_offset(), input.len() as u64);
}

#[test]
fn pending_cri_partials_hold_the_safe_offset_back() {
    let (mut framer, mut sink) = framer(cri());
    let p = b"2024-01-01T00:00:00Z stdout P abc\n";
    framer.push(p, Instant::now(), &mut sink);
    assert!(sink.records.is_empty());
    assert_eq!(framer.safe_offset(), 0);
    // The file ends without the full line: the parts are not lost.
    framer.finish(&mut sink);
    assert_eq!(texts(&sink.records), ["abc"]);
    assert_eq!(framer.safe_offset(), p.len() as u64);
}

#[test]
fn joined_cri_partials_are_capped_at_max_line() {
    let rules = FramingRules {
        max_line: 40,
        ..cri()
    };
    let mut input = String::new();
    for _ in 0..10 {
        input.push_str("2024-01-01T00:00:00Z stdout P 0123456789\n");
    }
    input.push_str("2024-01-01T00:00:00Z stdout F end\n");
    let (framer, records) = frame(rules, input.as_bytes());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].text, "0123456789".repeat(4));
    assert!(records[0].cut);
    assert_eq!(records[0].end, input.len() as u64);
    assert_eq!(framer.counts().cut, 1);
}

#[test]
fn a_malformed_cri_line_is_kept_as_a_plain_record() {
    let input = "2024-01-01T00:00:00Z stdout P half\n\
                 garbage line\n\
                 2024-01-01T00:00:00Z stderr F ok\n";
    let (framer, records) = frame(cri(), input.as_bytes());
    assert_eq!(texts(&records), ["half", "garbage line", "ok"]);
    assert_eq!(records[1].time_ms, None);
    assert_eq!(records[1].stream, None);
    assert_eq!(framer.counts().malformed, 1);
}

#[test]
fn a_line_of_the_other_stream_ends_a_partial_one() {
    let input = "2024-01-01T00:00:00Z stdout P out-part\n\
                 2024-01-01T00:00:00Z stderr F err\n\
                 2024-01-01T00:00:00Z stdout F out-end\n";
    let (_, records) = frame(cri(), input.as_bytes());
    assert_eq!(texts(&records), ["out-part", "err", "out-end"]);
}

// ---- multiline ----

const JAVA: &str = "2024-01-01 12:00:00 INFO starting\n\
2024-01-01 12:00:01 ERROR request failed\n\
Exception in thread \"main\" java.lang.IllegalStateException: boom\n\
\tat com.example.App.handle(App.java:42)\n\
\tat com.example.App.main(App.java:7)\n\
Caused by: java.io.IOException: disk full\n\
\tat com.example.Store.write(Store.java:99)\n\
\t... 2 more\n\
2024-01-01 12:00:02 INFO recovered\n";

fn java_rules() -> FramingRules {
    FramingRules {
        multiline: Some(multiline(r"^\d{4}-\d{2}-\d{2} ")),
        ..FramingRules::default()
    }
}

#[test]
fn java_stack_traces_are_joined_to_their_line() {
    let (mut framer, mut sink) = framer(java_rules());
    framer.push(JAVA.as_bytes(), Instant::now(), &mut sink);
    // The last record waits: the next line may continue it.
    assert_eq!(sink.records.len(), 2);
    let last_start = JAVA.rfind("2024").expect("last") as u64;
    assert_eq!(framer.safe_offset(), last_start);
    framer.finish(&mut sink);
    let records = &sink.records;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].text, "2024-01-01 12:00:00 INFO starting");
    let trace = &records[1].text;
    assert!(trace.starts_with("2024-01-01 12:00:01 ERROR request failed\nException in"));
    assert!(trace.contains("\n\tat com.example.App.main(App.java:7)\nCaused by: java.io"));
    assert!(trace.ends_with("\n\t... 2 more"));
    assert_eq!(trace.lines().count(), 7);
    assert!(!records[1].cut);
    // One record's span: all its lines, end to end.
    assert_eq!(records[1].start, records[0].end);
    assert_eq!(records[1].end, records[2].start);
    assert_eq!(framer.safe_offset(), JAVA.len() as u64);
}

#[test]
fn a_pending_multiline_record_goes_after_the_timeout_without_bytes() {
    let (mut framer, mut sink) = framer(java_rules());
    let t0 = Instant::now();
    framer.push(b"2024-01-01 12:00:00 a\n\tmore\n", t0, &mut sink);
    framer.tick(t0 + Duration::from_millis(999), &mut sink);
    assert!(sink.records.is_empty());
    framer.tick(t0 + Duration::from_secs(1), &mut sink);
    assert_eq!(texts(&sink.records), ["2024-01-01 12:00:00 a\n\tmore"]);
    assert_eq!(framer.safe_offset(), framer.offset());
    // New bytes restart the wait.
    framer.push(
        b"2024-01-01 12:00:05 b\n",
        t0 + Duration::from_secs(5),
        &mut sink,
    );
    framer.tick(t0 + Duration::from_millis(5500), &mut sink);
    assert_eq!(sink.records.len(), 1);
}

#[test]
fn lines_before_the_first_start_line_are_a_record_of_their_own() {
    let (mut framer, mut sink) = framer(java_rules());
    framer.push(
        b"\tat orphan\n\tat orphan2\n2024-01-01 x\n",
        Instant::now(),
        &mut sink,
    );
    framer.finish(&mut sink);
    assert_eq!(
        texts(&sink.records),
        ["\tat orphan\n\tat orphan2", "2024-01-01 x"]
    );
}

#[test]
fn a_multiline_record_is_cut_at_max_lines() {
    let rules = FramingRules {
        multiline: Some(Multiline {
            max_lines: 3,
            ..multiline("^S")
        }),
        ..FramingRules::default()
    };
    let (mut framer, mut sink) = framer(rules);
    framer.push(b"S1\nc\nc\nc\nc\nS2\nc\nc\nS3\n", Instant::now(), &mut sink);
    framer.finish(&mut sink);
    let records = &sink.records;
    assert_eq!(texts(records), ["S1\nc\nc", "c\nc", "S2\nc\nc", "S3"]);
    assert_eq!(
        records.iter().map(|r| r.cut).collect::<Vec<_>>(),
        [true, false, false, false]
    );
}

#[test]
fn a_multiline_record_is_cut_at_max_bytes_and_its_line_covered() {
    let rules = FramingRules {
        multiline: Some(Multiline {
            max_bytes: 10,
            ..multiline("^S")
        }),
        ..FramingRules::default()
    };
    let (mut framer, mut sink) = framer(rules);
    framer.push(b"S1234\ncontinued\nmore\nS2\n", Instant::now(), &mut sink);
    framer.finish(&mut sink);
    let records = &sink.records;
    assert_eq!(texts(records), ["S1234\ncont", "more", "S2"]);
    assert!(records[0].cut);
    assert_eq!(spans(records), [(0, 16), (16, 21), (21, 24)]);
    assert_eq!(framer.counts().cut, 1);
}

#[test]
fn multiline_applies_to_joined_cri_records() {
    let rules = FramingRules {
        multiline: Some(multiline(r"^\d{4}")),
        ..cri()
    };
    let input = "2024-01-01T00:00:01Z stderr F 2024 ERROR x\n\
                 2024-01-01T00:00:02Z stderr P \tat a.\n\
                 2024-01-01T00:00:02Z stderr F b(C.java:1)\n\
                 2024-01-01T00:00:03Z stderr F 2024 INFO y\n";
    let (mut framer, mut sink) = framer(rules);
    framer.push(input.as_bytes(), Instant::now(), &mut sink);
    framer.finish(&mut sink);
    assert_eq!(
        texts(&sink.records),
        ["2024 ERROR x\n\tat a.b(C.java:1)", "2024 INFO y"]
    );
    assert_eq!(sink.records[0].time_ms, Some(1_704_067_201_000));
}

// ---- filters and parse ----

#[test]
fn filtered_lines_are_counted_and_advance_the_safe_offset() {
    let rules = FramingRules {
        include_lines: vec![compile_rule("i", "GET|POST").expect("compiles")],
        exclude_lines: vec![compile_rule("e", "/health").expect("compiles")],
        ..FramingRules::default()
    };
    let input = b"GET /a\nGET /health\nnoise\nPOST /b\n";
    let (framer, records) = frame(rules, input);
    assert_eq!(texts(&records), ["GET /a", "POST /b"]);
    assert_eq!(framer.counts().filtered, 2);
    assert_eq!(framer.counts().records, 2);
    assert_eq!(framer.safe_offset(), input.len() as u64);
}

#[test]
fn filters_see_the_whole_multiline_record() {
    let rules = FramingRules {
        exclude_lines: vec![compile_rule("e", "IOException").expect("compiles")],
        ..java_rules()
    };
    let (mut framer, mut sink) = framer(rules);
    framer.push(JAVA.as_bytes(), Instant::now(), &mut sink);
    framer.finish(&mut sink);
    assert_eq!(
        texts(&sink.records),
        [
            "2024-01-01 12:00:00 INFO starting",
            "2024-01-01 12:00:02 INFO recovered"
        ]
    );
    assert_eq!(framer.counts().filtered, 1);
}

const NGINX: &str = r#"^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+)(?: "[^"]*" "[^"]*")?(?: (?P<elapsed>[\d.]+))?"#;

#[test]
fn the_parse_rule_makes_fields_of_an_nginx_access_log() {
    let rules = FramingRules {
        parse: Some(compile_rule("file.web.parse", NGINX).expect("compiles")),
        ..FramingRules::default()
    };
    let input = concat!(
        r#"10.1.2.3 - - [01/Jan/2024:00:00:00 +0000] "GET /api/users/42 HTTP/1.1" 200 512 "-" "curl/8" 0.004"#,
        "\n",
        "not an access line\n",
    );
    let (framer, records) = frame(rules, input.as_bytes());
    let fields: Vec<(&str, &str)> = records[0]
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("ip", "10.1.2.3"),
            ("method", "GET"),
            ("path", "/api/users/42"),
            ("status", "200"),
            ("bytes", "512"),
            ("elapsed", "0.004"),
        ]
    );
    assert!(records[1].fields.is_empty());
    assert_eq!(framer.counts().unparsed, 1);
    assert_eq!(framer.counts().records, 2);
}

#[test]
fn only_groups_the_collector_accepts_become_fields() {
    let long = "n".repeat(MAX_FIELD_NAME_BYTES + 1);
    let mut pattern = format!("(?P<{long}>x)?");
    for i in 0..MAX_FIELDS + 2 {
        pattern.push_str(&format!("(?P<f{i}>.)"));
    }
    let parse = compile_rule("p", &pattern).expect("compiles");
    assert!(check_parse_rule(&parse).is_err());
    let rules = FramingRules {
        parse: Some(parse),
        ..FramingRules::default()
    };
    let input = format!("{}\n", "y".repeat(MAX_FIELDS + 2));
    let (framer, records) = frame(rules, input.as_bytes());
    let names = framer.field_names();
    assert_eq!(names.len(), MAX_FIELDS);
    assert_eq!(names[0], "f0");
    assert_eq!(records[0].fields.len(), MAX_FIELDS);
    assert_eq!(
        records[0].fields[MAX_FIELDS - 1],
        (format!("f{}", MAX_FIELDS - 1), "y".into())
    );

    let nginx = compile_rule("p", NGINX).expect("compiles");
    assert_eq!(check_parse_rule(&nginx), Ok(()));
}

#[test]
fn a_bad_rule_names_itself() {
    let err = compile_rule("file.web.parse", "(unclosed").expect_err("bad");
    assert_eq!(err.to_string(), "file.web.parse: bad regular expression");
    assert!(std::error::Error::source(&err).is_some());
}

// ---- any split gives the same records ----

/// Every rule set the property runs under.
fn rule_sets() -> Vec<FramingRules> {
    vec![
        FramingRules {
            max_line: 7,
            ..FramingRules::default()
        },
        FramingRules {
            max_line: 5,
            encoding: Encoding::Utf16Le,
            ..FramingRules::default()
        },
        FramingRules {
            max_line: 9,
            multiline: Some(Multiline {
                max_lines: 3,
                max_bytes: 12,
                ..multiline("^[A-Z]")
            }),
            ..FramingRules::default()
        },
        FramingRules {
            max_line: 60,
            ..cri()
        },
        FramingRules {
            exclude_lines: vec![compile_rule("e", "b").expect("compiles")],
            parse: Some(compile_rule("p", r"(?P<word>[a-z]+)").expect("compiles")),
            ..FramingRules::default()
        },
    ]
}

/// Pieces of input that exercise the rules: line ends, `\r`, multi-byte
/// characters, invalid bytes, byte-order marks, CRI lines.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\xc3".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just("😀".as_bytes().to_vec()),
        Just(b"\n\x00".to_vec()),
        Just(b"2024-01-01T00:00:00Z stdout P ".to_vec()),
        Just(b"2024-01-01T00:00:00Z stderr F ".to_vec()),
        "[a-cA-C ]{1,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..6),
    ]
}

fn input_and_cuts() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    prop::collection::vec(piece(), 0..40).prop_flat_map(|pieces| {
        let input = pieces.concat();
        let len = input.len();
        (
            Just(input),
            prop::collection::vec(0..=len, 0..8).prop_map(|mut cuts| {
                cuts.sort_unstable();
                cuts
            }),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_gives_the_same_records((input, cuts) in input_and_cuts()) {
        let now = Instant::now();
        for rules in rule_sets() {
            let filtering = !rules.exclude_lines.is_empty();
            let (mut whole, mut expected) = framer(rules.clone());
            whole.push(&input, now, &mut expected);
            let (mut split, mut got) = framer(rules);
            let mut from = 0;
            for &cut in cuts.iter().chain([input.len()].iter()) {
                split.push(&input[from..cut], now, &mut got);
                from = cut;
                prop_assert!(split.safe_offset() <= split.offset());
            }
            prop_assert_eq!(&got.records, &expected.records);
            prop_assert_eq!(split.safe_offset(), whole.safe_offset());
            prop_assert_eq!(split.counts(), whole.counts());
            // Without filters the records tile the file up to the safe
            // offset: no byte in two records, none in no record.
            if !filtering {
                let mut at = 0;
                for r in &got.records {
                    prop_assert_eq!(r.start, at);
                    prop_assert!(r.end > r.start);
                    at = r.end;
                }
                prop_assert_eq!(at, split.safe_offset());
            }
            // After finish only a partial last line is pending.
            whole.finish(&mut expected);
            if whole.encoding == Encoding::Utf8 {
                let pending = &input[whole.safe_offset() as usize..];
                prop_assert!(!pending.contains(&b'\n'), "{:?}", pending);
            }
        }
    }
}
