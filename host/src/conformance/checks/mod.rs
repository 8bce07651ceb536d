//! The checks, as data: [`all`] lists every check in the order it runs.
//! Each module holds the checks of one ability and the table of them.

mod download;
mod reply;
mod sandbox;
mod upload;

use super::{Check, Dl, Failure, Outcome, Verdict};
use crate::TransferError;
use crate::error::ErrorClass;
use std::sync::OnceLock;

/// A check of the table: `check!(id, Ability, doc, function[, param])`.
macro_rules! check {
    ($id:literal, $applies:ident, $doc:literal, $f:path) => {
        check!($id, $applies, $doc, $f, 0)
    };
    ($id:literal, $applies:ident, $doc:literal, $f:path, $param:expr) => {
        $crate::conformance::Check {
            id: $id,
            doc: $doc,
            applies: $crate::conformance::Applies::$applies,
            param: $param,
            run: |cx, param| Box::pin($f(cx, param)),
        }
    };
}
pub(crate) use check;

/// Every check, in the order they run.
pub fn all() -> &'static [Check] {
    static ALL: OnceLock<Vec<Check>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = Vec::new();
        all.extend(sandbox::load_checks());
        all.extend(download::checks());
        all.extend(upload::checks());
        all.extend(reply::checks());
        all.extend(sandbox::checks());
        all
    })
}

/// The outcome of the checks about loading when the plugin did not load.
/// `mismatch`: the manifest and the component disagree.
pub fn load_verdict(id: &str, error: &str, mismatch: bool) -> Option<Outcome> {
    sandbox::load_verdict(id, error, mismatch)
}

/// `len` deterministic bytes; `seed` tells versions of a resource apart.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A call's result, for people.
pub fn describe<T>(result: &Result<T, TransferError>) -> String {
    match result {
        Ok(_) => "success".to_string(),
        Err(e) => error_text(e),
    }
}

pub fn error_text(e: &TransferError) -> String {
    let class = match e.class {
        ErrorClass::Transient => "transient",
        ErrorClass::Fatal => "fatal",
    };
    let status = e
        .http_status
        .map(|s| format!(", HTTP {s}"))
        .unwrap_or_default();
    format!(
        "error {} ({class}, {}{status}): {}",
        e.code,
        serde_json::to_value(e.context)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        e.message
    )
}

/// `cond`, or a failure saying what was expected and what was seen.
pub fn expect(cond: bool, expected: impl Into<String>, seen: impl FnOnce() -> String) -> Verdict {
    if cond {
        Ok(())
    } else {
        Err(Failure::new(expected, seen()))
    }
}

/// The download succeeded.
pub fn succeeded(dl: &Dl) -> Verdict {
    expect(dl.result.is_ok(), "the download to succeed", || {
        describe(&dl.result)
    })
}

/// The download succeeded and the file holds exactly `want`.
pub fn holds(dl: &Dl, want: &[u8]) -> Verdict {
    succeeded(dl)?;
    expect(
        dl.content == want,
        format!("the file to hold the {} bytes served", want.len()),
        || content_difference(&dl.content, want),
    )
}

/// How `got` differs from `want`.
pub fn content_difference(got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    match first {
        Some(at) => format!(
            "a file of {} bytes that differs from byte {at} on",
            got.len()
        ),
        None => format!(
            "a file of {} bytes (the first {} of them right)",
            got.len(),
            got.len().min(want.len())
        ),
    }
}

/// The call failed with one of `codes` (any code when empty), of `class`
/// when given.
pub fn failed_with<T>(
    result: &Result<T, TransferError>,
    codes: &[&str],
    class: Option<ErrorClass>,
) -> Verdict {
    let wanted = {
        let codes = if codes.is_empty() {
            "an error".to_string()
        } else {
            format!("error {}", codes.join(" or "))
        };
        match class {
            Some(ErrorClass::Transient) => {
                format!("a transient {}", codes.trim_start_matches("an "))
            }
            Some(ErrorClass::Fatal) => format!("a fatal {}", codes.trim_start_matches("an ")),
            None => codes,
        }
    };
    let good = match result {
        Ok(_) => false,
        Err(e) => {
            (codes.is_empty() || codes.contains(&e.code.as_str()))
                && class.is_none_or(|c| c == e.class)
        }
    };
    expect(good, wanted, || describe(result))
}
