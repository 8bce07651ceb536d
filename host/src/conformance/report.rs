//! The suite's outcome for people (one line a check, the failures in
//! detail, a summary), for programs (JSON) and for CI systems (JUnit XML).

use super::{Outcome, Report};
use std::fmt::Write;

/// One line a check, then each failure in detail, then the summary.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let abilities: Vec<&str> = report.abilities.iter().map(|a| a.name()).collect();
    let _ = writeln!(
        out,
        "plugin {} {} (ferry:transfer@{}; {})",
        report.plugin,
        report.version,
        report.contract.as_deref().unwrap_or("?"),
        if abilities.is_empty() {
            "not loaded".to_string()
        } else {
            abilities.join(", ")
        }
    );
    if let Some(error) = &report.load_error {
        let _ = writeln!(out, "not loaded: {error}");
    } else if !report.url_template.starts_with("://") {
        let _ = writeln!(out, "URLs asked for: {}", report.url_template);
    }
    for result in &report.results {
        let mark = match result.outcome {
            Outcome::Passed => "pass",
            Outcome::Failed(_) => "FAIL",
            Outcome::NotApplicable | Outcome::NotRun => continue,
        };
        let _ = writeln!(out, "{mark}  {:<46} {}", result.id, result.doc);
    }
    let failures: Vec<_> = report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(f) => Some((r, f)),
            _ => None,
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nfailures:");
    }
    for (result, failure) in failures {
        let _ = writeln!(out, "\n{}: {}", result.id, result.doc);
        let _ = writeln!(out, "  expected: {}", failure.expected);
        let _ = writeln!(out, "  seen:     {}", failure.seen);
        if result.requests.is_empty() {
            let _ = writeln!(out, "  requests: none reached the suite's servers");
        } else {
            let _ = writeln!(out, "  requests:");
            for request in &result.requests {
                let _ = writeln!(out, "    {}", request.line());
            }
        }
    }
    let not_applicable = report.count(|o| matches!(o, Outcome::NotApplicable));
    let not_run = report.count(|o| matches!(o, Outcome::NotRun));
    let _ = write!(
        out,
        "\n{} passed, {} failed, {} not applicable, {} not run, of {} checks in {:.1} s: {}",
        report.passed(),
        report.failed(),
        not_applicable,
        not_run,
        report.results.len(),
        report.millis as f64 / 1000.0,
        if report.success() { "PASSED" } else { "FAILED" }
    );
    out
}

/// The report as JSON: the plugin, a summary and every check's result.
pub fn json(report: &Report) -> String {
    let mut value = serde_json::to_value(report).expect("reports serialise");
    value["summary"] = serde_json::json!({
        "passed": report.passed(),
        "failed": report.failed(),
        "not-applicable": report.count(|o| matches!(o, Outcome::NotApplicable)),
        "not-run": report.count(|o| matches!(o, Outcome::NotRun)),
        "total": report.results.len(),
        "success": report.success(),
    });
    serde_json::to_string_pretty(&value).expect("reports serialise")
}

/// The report as a JUnit XML file: one test suite, one test case per check
/// (not applicable and not run ones skipped).
pub fn junit(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let skipped = report.results.len() - report.passed() - report.failed();
    let _ = writeln!(
        out,
        "<testsuites name=\"ferry plugin test\" tests=\"{}\" failures=\"{}\">",
        report.results.len(),
        report.failed()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        escape(&format!("ferry-conformance.{}", report.plugin)),
        report.results.len(),
        report.failed(),
        report.millis as f64 / 1000.0
    );
    for result in &report.results {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&format!("ferry-conformance.{}", report.plugin)),
            escape(result.id),
            result.millis as f64 / 1000.0
        );
        match &result.outcome {
            Outcome::Passed => out.push_str("/>\n"),
            Outcome::NotApplicable => {
                out.push_str(">\n      <skipped message=\"not applicable\"/>\n    </testcase>\n")
            }
            Outcome::NotRun => {
                out.push_str(">\n      <skipped message=\"not run\"/>\n    </testcase>\n")
            }
            Outcome::Failed(failure) => {
                let requests: Vec<String> = result.requests.iter().map(|r| r.line()).collect();
                let _ = write!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(&format!(
                        "expected {}; seen {}",
                        failure.expected, failure.seen
                    )),
                    escape(&format!(
                        "{}\nexpected: {}\nseen: {}\nrequests:\n{}",
                        result.doc,
                        failure.expected,
                        failure.seen,
                        requests.join("\n")
                    ))
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Text as XML character data or an attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_xml() {
        assert_eq!(
            super::escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;?"
        );
    }
}
