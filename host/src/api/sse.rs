//! Event streams (server-sent events) of one job or of all of a caller's
//! jobs, fed by the engine's event bus and filtered by owner.
//!
//! A job stream opens with `event: job` (the job as `info` shows it), then
//! sends each engine event as `event: <kind>` with the event as JSON, and
//! ends after the job reaches a final state. A comment line is sent every
//! 15 s so dead clients are noticed, more often when the connection's idle
//! timeout is shorter ([`keep_alive_for`]): the daemon never closes a stream
//! it serves for being quiet.
//!
//! A stream carries only the caller's jobs (an administrator's, everyone's):
//! a job stream ends at the first event of its job under another owner
//! (after `take-ownership`), so the former owner sees nothing of it since.

use super::ApiState;
use super::error::ApiError;
use super::routes::Body;
use super::views::JobView;
use crate::engine::Caller;
use crate::events::{Event, EventKind};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a quiet stream sends a comment on connections closed after
/// `idle_timeout` without a byte: every 15 s, or a third of that timeout.
pub fn keep_alive_for(idle_timeout: Duration) -> Duration {
    KEEP_ALIVE.min(idle_timeout / 3)
}

/// The SSE name of an event's kind.
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::State => "state",
        EventKind::Progress => "progress",
        EventKind::FileTransferred { .. } => "file-transferred",
        EventKind::Modified => "modified",
        EventKind::Error => "error",
    }
}

fn frame(event: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).expect("events always serialise");
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

/// `GET /v1/jobs/{id}/events`.
pub fn job_stream(state: &ApiState, caller: Caller, id: &str) -> Result<Response<Body>, ApiError> {
    // Subscribe before reading the job, so nothing falls between the two.
    let receiver = state.engine.subscribe();
    let job = state.engine.get(caller, id)?;
    let first = frame("job", &JobView::of(&job));
    let id = id.to_string();
    let done = job.state().is_final();
    // A job taken by someone else is no longer the caller's to follow: the
    // stream ends before it could carry the new owner's events.
    let gone_id = id.clone();
    Ok(stream(
        first,
        receiver,
        state,
        done,
        move |e| e.job == id,
        move |e| e.job == gone_id && !caller.admin && e.owner != caller.uid,
        true,
    ))
}

/// `GET /v1/events`: every job of the caller (every job, for an
/// administrator asking with `all-users=true`).
pub fn all_stream(
    state: &ApiState,
    caller: Caller,
    all_users: bool,
) -> Result<Response<Body>, ApiError> {
    if all_users && !caller.admin {
        return Err(ApiError::new(
            "access-denied",
            "only administrators may follow every user's jobs",
        ));
    }
    let receiver = state.engine.subscribe();
    Ok(stream(
        Bytes::from_static(b": following\n\n"),
        receiver,
        state,
        false,
        move |e| all_users || e.owner == caller.uid,
        |_| false,
        false,
    ))
}

fn stream(
    first: Bytes,
    receiver: tokio::sync::broadcast::Receiver<Event>,
    state: &ApiState,
    done: bool,
    wanted: impl Fn(&Event) -> bool + Send + 'static,
    gone: impl Fn(&Event) -> bool + Send + 'static,
    end_on_final: bool,
) -> Response<Body> {
    struct St<F, G> {
        first: Option<Bytes>,
        receiver: tokio::sync::broadcast::Receiver<Event>,
        shutdown: CancellationToken,
        keep_alive: Duration,
        done: bool,
        wanted: F,
        gone: G,
        end_on_final: bool,
    }
    let initial = St {
        first: Some(first),
        receiver,
        shutdown: state.shutdown.clone(),
        keep_alive: state.event_keep_alive,
        done,
        wanted,
        gone,
        end_on_final,
    };
    let frames = futures::stream::unfold(initial, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((first, st));
        }
        if st.done {
            return None;
        }
        loop {
            let received = tokio::select! {
                r = st.receiver.recv() => r,
                () = tokio::time::sleep(st.keep_alive) => {
                    return Some((Bytes::from_static(b": keep-alive\n\n"), st));
                }
                () = st.shutdown.cancelled() => return None,
            };
            match received {
                Ok(event) if (st.gone)(&event) => return None,
                Ok(event) if (st.wanted)(&event) => {
                    if st.end_on_final && event.state.is_final() {
                        st.done = true;
                    }
                    return Some((frame(kind_name(&event.kind), &event), st));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    return Some((frame("lagged", &serde_json::json!({ "missed": n })), st));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let body = StreamBody::new(futures::StreamExt::map(frames, |b| {
        Ok::<_, Infallible>(Frame::data(b))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body.boxed_unsync())
        .expect("a valid response")
}
