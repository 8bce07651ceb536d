//! Uploads, against the suite's tus 1.0 endpoint (core protocol with the
//! creation and termination extensions: the resumable protocol SPEC §3
//! names first). A plugin that speaks another upload protocol skips these
//! with `--skip 'upload*'`.

use super::{check, describe, expect, failed_with, pattern};
use crate::TransferError;
use crate::conformance::server::{Route, Uploads};
use crate::conformance::{Check, Ctx, Failure, Verdict};
use crate::error::ErrorClass;
use crate::plugin::{JobContext, ReplySink, Source, UploadRequest};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const ENDPOINT: &str = "/files";
const SIZE: usize = 300 << 10;
const CUT: usize = 100 << 10;

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "upload.whole-file",
            Upload,
            "A file is uploaded whole: the server holds exactly its bytes.",
            whole_file
        ),
        check!(
            "upload.records-session",
            Upload,
            "The server's session is recorded with the host, so a restart can resume it.",
            records_session
        ),
        check!(
            "upload.acknowledges-all",
            Upload,
            "Once done, every byte is acknowledged to the host.",
            acknowledges_all
        ),
        check!(
            "upload.empty-file",
            Upload,
            "An empty file uploads.",
            empty_file
        ),
        check!(
            "upload.dropped-is-transient",
            Upload,
            "A connection reset mid-body is a transient error acknowledging no more than the server holds (or the plugin resumes within the call).",
            dropped
        ),
        check!(
            "upload.resume-from-server-offset",
            Upload,
            "A resume with the recorded session sends only what the server lacks, and completes the file.",
            resume
        ),
        check!(
            "upload.session-expired",
            Upload,
            "A session the server no longer knows is session-expired.",
            session_expired
        ),
        check!(
            "upload.unavailable-is-transient",
            Upload,
            "A server answering 503 to everything is a transient error.",
            unavailable
        ),
        check!(
            "upload.cancel",
            Upload,
            "cancel-upload ends the session on the server.",
            cancel
        ),
        check!(
            "upload.cancel-unknown-session",
            Upload,
            "cancel-upload of a session the server no longer knows succeeds.",
            cancel_unknown
        ),
        check!(
            "upload-reply.reply-returned",
            UploadReply,
            "The server's final answer is handed to the host: its status and body.",
            reply_returned
        ),
        check!(
            "upload-reply.large-reply",
            UploadReply,
            "A 2 MiB reply is handed over whole, through the reply sink.",
            large_reply
        ),
    ]
}

/// What one upload call did.
struct Up {
    result: Result<(), TransferError>,
    session: Option<String>,
    acknowledged: u64,
    reply_status: Option<u16>,
    reply: Vec<u8>,
}

fn job() -> JobContext {
    JobContext::new("conformance")
}

/// Sets up the endpoint on server a.
fn endpoint(cx: &Ctx, uploads: Uploads) {
    cx.a.route(ENDPOINT, Route::Uploads(uploads));
}

/// Uploads `data`, resuming `session`, with a reply sink when `reply`.
async fn upload(cx: &Ctx, data: &[u8], session: Option<String>, reply: bool) -> Up {
    let dir = tempfile::tempdir_in(cx.dir.path()).expect("the suite's directory is writable");
    let path = dir.path().join("source.bin");
    std::fs::write(&path, data).expect("the suite's directory is writable");
    let modified = std::fs::metadata(&path)
        .ok()
        .and_then(|m| m.modified().ok());
    let open = |path: &std::path::Path| {
        Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .expect("the file opens"),
        )
    };
    let source = Source::new(open(&path), data.len() as u64, modified);
    let progress = source.progress();
    let job = job();
    let sink = reply.then(|| ReplySink::new(open(&dir.path().join("reply")), job.cancel.clone()));
    let sink_progress = sink.as_ref().map(ReplySink::progress);
    let request = UploadRequest {
        url: cx.url(&cx.a, ENDPOINT),
        size: data.len() as u64,
        name: "source.bin".into(),
        session,
        protocol: Some("tus".into()),
    };
    let result = cx.runtime.upload(request, &job, source, sink).await;
    let session = progress.session.lock().ok().and_then(|s| s.clone());
    let (reply_status, reply) = match sink_progress {
        Some(p) => {
            let status = p
                .head
                .lock()
                .ok()
                .and_then(|h| h.as_ref().map(|h| h.status));
            let len = p.body.written_to.load(Ordering::Acquire) as usize;
            let mut body = std::fs::read(dir.path().join("reply")).unwrap_or_default();
            body.truncate(len);
            (status, body)
        }
        None => (None, Vec::new()),
    };
    Up {
        result,
        session,
        acknowledged: progress.acknowledged.load(Ordering::Acquire),
        reply_status,
        reply,
    }
}

fn succeeded(up: &Up) -> Verdict {
    expect(up.result.is_ok(), "the upload to succeed", || {
        describe(&up.result)
    })
}

/// What the server holds of its only session.
fn held(cx: &Ctx) -> Option<Vec<u8>> {
    let uploads = cx.a.uploads(ENDPOINT);
    uploads
        .sessions
        .values()
        .next()
        .map(|(_, held)| held.clone())
}

fn holds(cx: &Ctx, data: &[u8]) -> Verdict {
    let held = held(cx);
    expect(
        held.as_deref() == Some(data),
        format!("the server to hold the {} bytes of the file", data.len()),
        || match &held {
            None => "no upload session on the server".into(),
            Some(h) => super::content_difference(h, data),
        },
    )
}

async fn whole_file(cx: &Ctx, _: u64) -> Verdict {
    endpoint(cx, Uploads::default());
    let data = pattern(SIZE, 80);
    let up = upload(cx, &data, None, false).await;
    succeeded(&up)?;
    holds(cx, &data)
}

async fn records_session(cx: &Ctx, _: u64) -> Verdict {
    endpoint(cx, Uploads::default());
    let up = upload(cx, &pattern(1000, 81), None, false).await;
    succeeded(&up)?;
    expect(
        up.session.as_deref().is_some_and(|s| !s.is_empty()),
        "a recorded session",
        || "none".into(),
    )
}

async fn acknowledges_all(cx: &Ctx, _: u64) -> Verdict {
    endpoint(cx, Uploads::default());
    let up = upload(cx, &pattern(SIZE, 82), None, false).await;
    succeeded(&up)?;
    expect(
        up.acknowledged == SIZE as u64,
        format!("{SIZE} bytes acknowledged"),
        || format!("{} acknowledged", up.acknowledged),
    )
}

async fn empty_file(cx: &Ctx, _: u64) -> Verdict {
    endpoint(cx, Uploads::default());
    let up = upload(cx, &[], None, false).await;
    succeeded(&up)?;
    holds(cx, &[])
}

/// An upload whose body is reset after `CUT` bytes, the server answering
/// 503 from then on (so the plugin cannot recover within the call); the
/// server is available again afterwards.
async fn cut_off(cx: &Ctx, data: &[u8]) -> Result<Up, Failure> {
    endpoint(
        cx,
        Uploads {
            reset_patch_after: Some(CUT),
            unavailable_after_reset: 1000,
            ..Uploads::default()
        },
    );
    let up = upload(cx, data, None, false).await;
    cx.a.update_uploads(ENDPOINT, |u| u.unavailable = 0);
    failed_with(&up.result, &[], Some(ErrorClass::Transient))?;
    let held = held(cx).map_or(0, |h| h.len()) as u64;
    expect(
        up.acknowledged <= held,
        format!("no more acknowledged than the {held} bytes the server holds"),
        || format!("{} acknowledged", up.acknowledged),
    )?;
    Ok(up)
}

/// A reset mid-body: a transient error acknowledging no more than the
/// server holds, or a success after the plugin resumed within the call.
async fn dropped(cx: &Ctx, _: u64) -> Verdict {
    let data = pattern(SIZE, 83);
    endpoint(
        cx,
        Uploads {
            reset_patch_after: Some(CUT),
            ..Uploads::default()
        },
    );
    let up = upload(cx, &data, None, false).await;
    if up.result.is_ok() {
        return holds(cx, &data);
    }
    failed_with(&up.result, &[], Some(ErrorClass::Transient))?;
    let held = held(cx).map_or(0, |h| h.len()) as u64;
    expect(
        up.acknowledged <= held,
        format!("no more acknowledged than the {held} bytes the server holds"),
        || format!("{} acknowledged", up.acknowledged),
    )
}

async fn resume(cx: &Ctx, _: u64) -> Verdict {
    let data = pattern(SIZE, 84);
    let first = cut_off(cx, &data).await?;
    let before = body_bytes(cx);
    let up = upload(cx, &data, first.session.clone(), false).await;
    succeeded(&up)?;
    holds(cx, &data)?;
    let sent = body_bytes(cx) - before;
    let lacking = (SIZE - CUT) as u64;
    expect(
        sent == lacking,
        format!("only the {lacking} bytes the server lacked sent again"),
        || format!("{sent} bytes sent"),
    )
}

/// The request body bytes server a received so far.
fn body_bytes(cx: &Ctx) -> u64 {
    cx.a.requests().iter().map(|r| r.body_bytes).sum()
}

async fn session_expired(cx: &Ctx, _: u64) -> Verdict {
    let data = pattern(SIZE, 85);
    let first = cut_off(cx, &data).await?;
    cx.a.update_uploads(ENDPOINT, |u| u.sessions.clear());
    let up = upload(cx, &data, first.session, false).await;
    failed_with(&up.result, &["session-expired"], None)
}

async fn unavailable(cx: &Ctx, _: u64) -> Verdict {
    endpoint(
        cx,
        Uploads {
            unavailable: 1000,
            ..Uploads::default()
        },
    );
    let up = upload(cx, &pattern(1000, 86), None, false).await;
    failed_with(&up.result, &[], Some(ErrorClass::Transient))?;
    let held = held(cx);
    expect(held.is_none(), "no upload session created", || {
        "a session on an unavailable server".into()
    })
}

async fn cancel(cx: &Ctx, _: u64) -> Verdict {
    let first = cut_off(cx, &pattern(SIZE, 87)).await?;
    let Some(session) = first.session else {
        return Err(Failure::new("a recorded session", "none"));
    };
    let result = cx
        .runtime
        .cancel_upload(&cx.url(&cx.a, ENDPOINT), &session, &job())
        .await;
    expect(result.is_ok(), "the cancel to succeed", || {
        describe(&result)
    })?;
    let uploads = cx.a.uploads(ENDPOINT);
    expect(
        uploads.sessions.is_empty() && !uploads.deleted.is_empty(),
        "the session deleted on the server",
        || format!("{} sessions left", uploads.sessions.len()),
    )
}

async fn cancel_unknown(cx: &Ctx, _: u64) -> Verdict {
    let first = cut_off(cx, &pattern(SIZE, 88)).await?;
    let Some(session) = first.session else {
        return Err(Failure::new("a recorded session", "none"));
    };
    cx.a.update_uploads(ENDPOINT, |u| u.sessions.clear());
    let result = cx
        .runtime
        .cancel_upload(&cx.url(&cx.a, ENDPOINT), &session, &job())
        .await;
    expect(result.is_ok(), "the cancel to succeed", || {
        describe(&result)
    })
}

async fn with_reply(cx: &Ctx, reply: Vec<u8>) -> Verdict {
    endpoint(
        cx,
        Uploads {
            reply: reply.clone(),
            ..Uploads::default()
        },
    );
    let up = upload(cx, &pattern(SIZE, 89), None, true).await;
    succeeded(&up)?;
    expect(up.reply_status == Some(200), "reply status 200", || {
        format!("reply status {:?}", up.reply_status)
    })?;
    expect(
        up.reply == reply,
        format!("the {} reply bytes the server sent", reply.len()),
        || super::content_difference(&up.reply, &reply),
    )
}

async fn reply_returned(cx: &Ctx, _: u64) -> Verdict {
    with_reply(cx, br#"{"stored": true, "id": 7}"#.to_vec()).await
}

async fn large_reply(cx: &Ctx, _: u64) -> Verdict {
    with_reply(cx, pattern(2 << 20, 90)).await
}
