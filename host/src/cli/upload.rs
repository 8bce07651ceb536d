//! `ferry upload` (the one-shot counterpart of `ferry get`) and `ferry
//! reply` (the reply data of an upload-reply job, BITS `GetReplyData`).

use super::client::{Client, ClientError};
use super::{
    Failure, NO_BODY, Outcome, absolute, exit, follow_to_transferred, job_path, output, show,
};
use crate::api::views::{
    CompletedReply, CompletionView, CreateRequest, CreatedView, JobView, ReplyDataView, SetRequest,
    StateView,
};
use crate::job::{JobState, JobType, Priority};
use http::Method;
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;

/// What `ferry upload` was asked.
pub struct UploadArgs {
    pub source: PathBuf,
    pub url: String,
    pub priority: Priority,
    /// Whether the job is an upload-reply job.
    pub want_reply: bool,
    /// Settings applied before the job starts.
    pub settings: SetRequest,
}

/// What `ferry upload --json` prints.
#[derive(Serialize)]
struct UploadView {
    id: String,
    url: String,
    local: PathBuf,
    bytes: u64,
    state: JobState,
    reply: Option<CompletedReply>,
}

/// `ferry upload`: a foreground upload (or upload-reply) job that this
/// command follows to `transferred` and completes. Ctrl-C leaves the job
/// running in the daemon.
pub async fn upload(client: &mut Client, args: UploadArgs, json: bool) -> Outcome {
    let UploadArgs {
        source,
        url,
        priority,
        want_reply,
        settings,
    } = args;
    let source = absolute(&source)?;
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let created: CreatedView = client
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&CreateRequest {
                job_type: Some(if want_reply {
                    JobType::UploadReply
                } else {
                    JobType::Upload
                }),
                name: Some(name),
                description: Some(format!("ferry upload {url}")),
                priority: Some(priority),
            }),
        )
        .await?;
    let id = created.id;
    let prepared = async {
        client
            .call::<JobView>(Method::PATCH, &job_path(&id, ""), Some(&settings))
            .await?;
        client
            .call::<JobView>(
                Method::POST,
                &job_path(&id, "/files"),
                Some(&serde_json::json!({ "remote": url, "local": source })),
            )
            .await?;
        let stream = client.events(&job_path(&id, "/events")).await?;
        client
            .call::<StateView>(Method::POST, &job_path(&id, "/resume"), NO_BODY)
            .await?;
        Ok::<_, ClientError>(stream)
    }
    .await;
    let stream = match prepared {
        Ok(stream) => stream,
        Err(e) => {
            // Nothing was sent: leave no job behind.
            let _ = client
                .call::<StateView>(Method::POST, &job_path(&id, "/cancel"), NO_BODY)
                .await;
            return Err(e.into());
        }
    };
    let bar = follow_to_transferred(stream, &id, json).await?;
    let done: CompletionView = client
        .call(Method::POST, &job_path(&id, "/complete"), NO_BODY)
        .await?;
    let view = UploadView {
        id,
        url,
        local: source,
        bytes: bar.position(),
        state: done.state,
        reply: done.reply,
    };
    Ok(show(json, &view, |v| {
        let mut line = format!("{} -> {}", v.local.display(), v.url);
        if let Some(reply) = &v.reply {
            line.push_str(&format!("\nreply: {}", reply.status));
            if let Some(data) = reply.data.as_ref().or(reply.body.as_ref())
                && !data.is_empty()
            {
                line.push('\n');
                line.push_str(data);
            }
        }
        line
    }))
}

/// `ferry reply JOB`: the reply data as it is (bytes on stdout), or the
/// whole reply as JSON with `--json`.
pub async fn reply(client: &mut Client, job: &str, json: bool) -> Outcome {
    let view: ReplyDataView = client
        .call(Method::GET, &job_path(job, "/reply"), NO_BODY)
        .await?;
    if json {
        return Ok(show(json, &view, |_| String::new()));
    }
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(&view.data_base64)
        .map_err(|e| {
            Failure::new(
                "bad-answer",
                format!("the daemon's reply data is not base64: {e}"),
                exit::UNREACHABLE,
            )
        })?;
    if data.is_empty() {
        eprintln!(
            "ferry: job {} has a reply ({}, {}) but no reply data{}",
            view.id,
            view.status,
            output::bytes(view.bytes),
            if view.in_file {
                "; the reply file gets it on `ferry complete`"
            } else {
                ""
            }
        );
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&data)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new("write-failed", format!("stdout: {e}"), exit::REFUSED))?;
    Ok(String::new())
}
