//! Reply processors: any reply, of any size or content, ends in reply data
//! or a typed error, never in a trap or a limit.

use super::{check, describe, expect, pattern};
use crate::conformance::{Check, Ctx, Verdict};
use crate::plugin::{JobContext, ReplyContext, ReplyFile, ReplyHead, Source};
use std::sync::Arc;

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "reply.small-reply",
            ReplyProcessing,
            "A small JSON reply is processed without a trap or a limit hit.",
            small
        ),
        check!(
            "reply.empty-reply",
            ReplyProcessing,
            "An empty reply is processed without a trap.",
            empty
        ),
        check!(
            "reply.binary-reply",
            ReplyProcessing,
            "A reply that is not UTF-8 is processed or refused with a typed error, without a trap.",
            binary
        ),
        check!(
            "reply.large-reply",
            ReplyProcessing,
            "A 3 MiB reply stays inside the plugin's limits (reply data over 1 MiB is the host's reply-too-large).",
            large
        ),
        check!(
            "reply.error-status",
            ReplyProcessing,
            "A reply with status 500 is processed or refused with a typed error, without a trap.",
            error_status
        ),
    ]
}

/// The codes that say the plugin itself broke.
const BROKE: &[&str] = &["plugin-trap", "plugin-deadline", "plugin-memory"];

async fn process(cx: &Ctx, status: u16, body: &[u8]) -> Verdict {
    let dir = tempfile::tempdir_in(cx.dir.path())
        .map_err(|e| crate::conformance::Failure::new("a temporary directory", e.to_string()))?;
    let reply_path = dir.path().join("reply");
    std::fs::write(&reply_path, body).expect("the suite's directory is writable");
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
    let source = Source::new(open(&reply_path), body.len() as u64, None);
    let file = ReplyFile::new(open(&dir.path().join("processed")));
    let context = ReplyContext {
        job_id: "conformance".into(),
        url: cx.a.http_url("/upload"),
        source_size: 1000,
        source_sha256: None,
        options: Vec::new(),
    };
    let head = ReplyHead {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
    };
    let result = cx
        .runtime
        .process_reply(
            &cx.plugin.manifest.name,
            context,
            head,
            source,
            file,
            &JobContext::new("conformance"),
        )
        .await;
    let broke = result
        .as_ref()
        .err()
        .is_some_and(|e| BROKE.contains(&e.code.as_str()));
    expect(
        !broke,
        "reply data, or a typed error of the plugin's",
        || describe(&result),
    )?;
    let size = result.as_ref().map_or(0, Vec::len);
    expect(
        size <= crate::plugin::MAX_REPLY_DATA,
        "at most 1 MiB of reply data",
        || format!("{size} bytes"),
    )
}

async fn small(cx: &Ctx, _: u64) -> Verdict {
    process(cx, 200, br#"{"id": 42, "status": "stored"}"#).await
}

async fn empty(cx: &Ctx, _: u64) -> Verdict {
    process(cx, 200, b"").await
}

async fn binary(cx: &Ctx, _: u64) -> Verdict {
    process(cx, 200, &[0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]).await
}

async fn large(cx: &Ctx, _: u64) -> Verdict {
    process(cx, 200, &pattern(3 << 20, 70)).await
}

async fn error_status(cx: &Ctx, _: u64) -> Verdict {
    process(cx, 500, br#"{"error": "disk full"}"#).await
}
