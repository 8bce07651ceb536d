//! The sandbox: the plugin loads as its manifest says, starts within its
//! limits, stays inside its memory and deadline, and reaches no host it was
//! not granted.

use super::{check, expect, failed_with, holds, pattern};
use crate::conformance::server::{Resource, Route};
use crate::conformance::{Check, Ctx, Failure, Outcome, Verdict};
use crate::error::ErrorClass;
use crate::plugin::{DownloadRequest, JobContext};

/// The checks about loading, which run first.
pub fn load_checks() -> Vec<Check> {
    vec![
        check!(
            "sandbox.loads",
            Any,
            "The component compiles and links against the host's imports only, on a contract the host loads.",
            loaded
        ),
        check!(
            "sandbox.exports-match-manifest",
            Any,
            "What the component exports agrees with its manifest (schemes for transports, none for processors).",
            loaded
        ),
        check!(
            "sandbox.instantiates",
            Any,
            "A fresh instance starts within the plugin's memory and deadline.",
            instantiates
        ),
    ]
}

/// The checks of behaviour under limits, which run last.
pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "sandbox.ungranted-host",
            Download,
            "A request to a host not granted is refused by the host: host-not-granted, and the host never sees it.",
            ungranted_host
        ),
        check!(
            "sandbox.large-file-within-limits",
            Download,
            "An 8 MiB download stays inside the plugin's memory and deadline (bodies are spliced, not buffered).",
            large_file
        ),
        check!(
            "sandbox.calls-independent",
            Download,
            "Two calls in a row both succeed: nothing a call needs is kept in the instance.",
            calls_independent
        ),
    ]
}

/// When the plugin did not load: which loading check failed, from the
/// runtime's error (`mismatch`: the manifest and the component disagree).
pub fn load_verdict(id: &str, error: &str, mismatch: bool) -> Option<Outcome> {
    let failed = || {
        Outcome::Failed(Failure::new(
            "the plugin to load",
            format!("it was refused: {error}"),
        ))
    };
    match id {
        "sandbox.loads" if !mismatch => Some(failed()),
        "sandbox.loads" => Some(Outcome::Passed),
        "sandbox.exports-match-manifest" if mismatch => Some(failed()),
        "sandbox.exports-match-manifest" => Some(Outcome::NotRun),
        _ => None,
    }
}

async fn loaded(_: &Ctx, _: u64) -> Verdict {
    // Reached only when the plugin loaded.
    Ok(())
}

async fn instantiates(cx: &Ctx, _: u64) -> Verdict {
    let result = cx.runtime.instantiate(&cx.plugin.manifest.name).await;
    expect(result.is_ok(), "a fresh instance to start", || {
        super::describe(&result)
    })
}

async fn ungranted_host(cx: &Ctx, _: u64) -> Verdict {
    cx.ungranted.route(
        "/private.bin",
        Route::Resource(Resource::new(pattern(100, 60))),
    );
    let request = DownloadRequest {
        url: cx.url(&cx.ungranted, "/private.bin"),
        offset: 0,
        end: None,
        validator: None,
    };
    let dl = cx
        .download(request, &JobContext::new("conformance"), &[], 0)
        .await;
    failed_with(&dl.result, &["host-not-granted"], Some(ErrorClass::Fatal))?;
    let reached = cx.ungranted.requests().len();
    expect(reached == 0, "no request at the ungranted host", || {
        format!("{reached} requests reached it")
    })
}

async fn download(cx: &Ctx, path: &str, size: usize, seed: u8) -> Verdict {
    let body = pattern(size, seed);
    cx.a.route(path, Route::Resource(Resource::new(body.clone())));
    let request = DownloadRequest {
        url: cx.url(&cx.a, path),
        offset: 0,
        end: None,
        validator: None,
    };
    let dl = cx
        .download(request, &JobContext::new("conformance"), &[], 0)
        .await;
    holds(&dl, &body)
}

async fn large_file(cx: &Ctx, _: u64) -> Verdict {
    download(cx, "/large.bin", 8 << 20, 61).await
}

async fn calls_independent(cx: &Ctx, _: u64) -> Verdict {
    download(cx, "/first.bin", 10_000, 62).await?;
    download(cx, "/second.bin", 20_000, 63).await
}
