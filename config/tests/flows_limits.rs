//! Hostile flows files: every check and every report stays linear in the file and bounded in
//! size (issue 17: quadratic diagnostics and checks).

use std::time::{Duration, Instant};

use flowgate_config::flows::{self, diag::MAX_RENDERED, parser::MAX_ERRORS};

/// Generous for a debug build on a loaded machine; the quadratic versions took minutes.
const FAST: Duration = Duration::from_secs(10);

#[test]
fn thirty_two_thousand_duplicate_flow_names_are_reported_fast_and_bounded() {
    let text = "flow dup permit\n  match proto tcp\n".repeat(32_000);
    let t = Instant::now();
    let report = flows::load("dup.flows", &text, None).expect_err("duplicates refused");
    let rendered = report.render(false);
    let took = t.elapsed();
    assert!(took < FAST, "{took:?}");
    // the first duplicate is the second flow, on line 3, first defined on line 1
    assert!(
        rendered.starts_with(
            "dup.flows:3:6: error: duplicate name `dup`: defined on line 1 and again on line 3\n"
        ),
        "{}",
        &rendered[..200]
    );
    assert_eq!(
        rendered.matches(": error: duplicate name").count(),
        MAX_RENDERED
    );
    assert!(rendered.len() < 200 * 1024, "{} bytes", rendered.len());
    assert!(report.diagnostics.len() <= MAX_ERRORS + 1);
}

#[test]
fn three_thousand_duplicate_src_conditions_give_a_bounded_report() {
    let mut text = String::from("flow a permit\n  match");
    for i in 0..3000 {
        text.push_str(&format!(" src 10.0.{}.{}", i / 256, i % 256));
    }
    text.push('\n');
    let t = Instant::now();
    let report = flows::load("src.flows", &text, None).expect_err("refused");
    let rendered = report.render(false);
    assert!(t.elapsed() < FAST, "{:?}", t.elapsed());
    // 2,999 duplicates: the first MAX_ERRORS are kept, then one error says the rest was cut
    assert_eq!(report.errors().count(), MAX_ERRORS + 1);
    assert!(rendered.len() < 256 * 1024, "{} bytes", rendered.len());
    let more = MAX_ERRORS + 1 - MAX_RENDERED;
    assert!(
        rendered.contains(&format!(
            "{more} more not shown ({more} errors, 0 warnings)"
        )),
        "{}",
        &rendered[rendered.len() - 300..]
    );
    // the caret of the first error is under the second `src`
    let first = rendered.lines().next().expect("headline");
    assert_eq!(
        first,
        "src.flows:2:22: error: condition `src` given twice in one rule"
    );
}

#[test]
fn one_line_of_sixteen_thousand_match_words_is_linear() {
    let text = format!("flow a permit\n{}\n", "match ".repeat(16_000));
    let t = Instant::now();
    let parsed = flows::parse(&text).expect("parses");
    assert_eq!(parsed.file.items[0].rules.len(), 16_000);
    assert!(t.elapsed() < FAST, "{:?}", t.elapsed());
}

#[test]
fn error_lines_stop_at_the_cap_and_say_so() {
    let text = "flow a permit\n".to_string() + &"  match proto bogus\n".repeat(50_000);
    let t = Instant::now();
    let report = flows::load("e.flows", &text, None).expect_err("refused");
    let rendered = report.render(false);
    assert!(t.elapsed() < FAST, "{:?}", t.elapsed());
    assert_eq!(report.errors().count(), MAX_ERRORS + 1);
    let last = report.diagnostics.last().expect("last");
    assert!(
        last.message
            .starts_with("too many errors: stopped after 1000"),
        "{}",
        last.message
    );
    assert!(rendered.len() < 256 * 1024, "{} bytes", rendered.len());
}

#[test]
fn a_huge_word_is_not_quoted_whole() {
    let text = format!("flow {} permit\n", "n".repeat(1 << 20));
    let report = flows::load("w.flows", &text, None).expect_err("refused");
    let rendered = report.render(false);
    assert!(rendered.len() < 4096, "{} bytes", rendered.len());
    assert!(rendered.contains("is 1048576 characters long") || rendered.contains("..."));
}
