//! `ferry upload` (the one-shot counterpart of `ferry get`) and `ferry
//! reply` (the reply data of an upload-reply job, BITS `GetReplyData`).

use super::client::{Client, ClientError};
use super::{
    EventView, Failure, NO_BODY, Outcome, absolute, exit, job_path, output, show, state_name,
};
use crate::api::ApiErrorView;
use crate::api::views::{
    CompletedReply, CompletionView, CreateRequest, CreatedView, JobView, ReplyDataView, SetRequest,
    StateView,
};
use crate::job::{JobState, JobType, Priority};
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
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
    let mut stream = match prepared {
        Ok(stream) => stream,
        Err(e) => {
            // Nothing was sent: leave no job behind.
            let _ = client
                .call::<StateView>(Method::POST, &job_path(&id, "/cancel"), NO_BODY)
                .await;
            return Err(e.into());
        }
    };
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = tokio::signal::ctrl_c() => {
                bar.abandon();
                eprintln!(
                    "ferry: interrupted; job {id} goes on in the daemon.\n  follow it:  ferry watch {id}\n  finish it:  ferry complete {id}   (or drop it: ferry cancel {id})"
                );
                return Err(Failure::new(
                    "interrupted",
                    format!("interrupted; job {id} goes on"),
                    exit::INTERRUPTED,
                ));
            }
        };
        let Some(event) = event else {
            bar.abandon();
            return Err(Failure::new(
                "daemon-unreachable",
                format!("the daemon stopped; job {id} is kept and goes on when it starts again"),
                exit::UNREACHABLE,
            ));
        };
        let (state, progress, error) = if event.event == "job" {
            match serde_json::from_str::<JobView>(&event.data) {
                Ok(v) => (v.state, v.progress, v.error),
                Err(_) => continue,
            }
        } else {
            match serde_json::from_str::<EventView>(&event.data) {
                Ok(e) => (
                    e.state,
                    e.progress,
                    e.error.map(|e| crate::api::views::ErrorView::of_job(&e)),
                ),
                Err(_) => continue,
            }
        };
        if let Some(total) = progress.bytes_total {
            bar.set_length(total);
        }
        bar.set_position(progress.bytes_transferred);
        match state {
            JobState::Transferred => break,
            JobState::TransientError => {
                if let Some(e) = &error {
                    bar.set_message(format!("{}; retrying later", e.code));
                }
            }
            JobState::Error => {
                bar.abandon();
                let view = match error {
                    Some(e) => ApiErrorView {
                        code: e.code,
                        message: format!(
                            "{} (job {id} is kept in error: `ferry resume {id}` retries, `ferry cancel {id}` drops it)",
                            e.message
                        ),
                        class: Some(e.class),
                        context: Some(e.context),
                        http_status: e.http_status,
                    },
                    None => ApiErrorView::new("job-error", format!("job {id} is in error")),
                };
                return Err(Failure {
                    view,
                    exit: exit::JOB_FAILED,
                });
            }
            JobState::Acknowledged | JobState::Cancelled => {
                bar.abandon();
                return Err(Failure::new(
                    "job-closed",
                    format!("job {id} was {} by someone else", state_name(state)),
                    exit::JOB_FAILED,
                ));
            }
            _ => bar.set_message(state_name(state)),
        }
    }
    bar.finish_and_clear();
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
