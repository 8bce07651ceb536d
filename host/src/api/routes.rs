//! The route table and the handlers behind it.
//!
//! [`ROUTES`] is the only place a route exists: requests are dispatched by
//! looking them up there, so the test that compares it with
//! `host/openapi.json` compares the server itself with its documentation.

use super::error::{ApiError, ErrorBody};
use super::views::{
    AddFileRequest, AddFileSetRequest, CompletedReply, CompletionView, CreateRequest, CreatedView,
    CredentialsRequest, HealthView, JobView, PluginState, PluginView, ReloadView, ReplyDataView,
    SetRequest, StateView,
};
use super::{ApiState, OPENAPI, Peer, sse};
use crate::engine::{NewFile, Setting};
use crate::identity::AccessError;
use crate::job::{JobState, JobType};
use crate::plugin::Credentials;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

/// The body of every answer.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    OpenApi,
    Plugins,
    ReloadPlugins,
    Metrics,
    ListJobs,
    CreateJob,
    GetJob,
    SetJob,
    AddFile,
    Resume,
    Suspend,
    Complete,
    Cancel,
    TakeOwnership,
    JobEvents,
    Events,
    Reply,
}

/// Every route: method, path pattern (`{id}` is a job id), what it does.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/v1/health", Route::Health),
    ("GET", "/v1/openapi.json", Route::OpenApi),
    ("GET", "/v1/plugins", Route::Plugins),
    ("POST", "/v1/plugins/reload", Route::ReloadPlugins),
    ("GET", "/v1/metrics", Route::Metrics),
    ("GET", "/v1/jobs", Route::ListJobs),
    ("POST", "/v1/jobs", Route::CreateJob),
    ("GET", "/v1/jobs/{id}", Route::GetJob),
    ("PATCH", "/v1/jobs/{id}", Route::SetJob),
    ("POST", "/v1/jobs/{id}/files", Route::AddFile),
    ("POST", "/v1/jobs/{id}/resume", Route::Resume),
    ("POST", "/v1/jobs/{id}/suspend", Route::Suspend),
    ("POST", "/v1/jobs/{id}/complete", Route::Complete),
    ("POST", "/v1/jobs/{id}/cancel", Route::Cancel),
    ("POST", "/v1/jobs/{id}/take-ownership", Route::TakeOwnership),
    ("GET", "/v1/jobs/{id}/events", Route::JobEvents),
    ("GET", "/v1/jobs/{id}/reply", Route::Reply),
    ("GET", "/v1/events", Route::Events),
];

/// The longest display name and description (as BITS allows).
const MAX_NAME: usize = 256;
const MAX_DESCRIPTION: usize = 1024;
const MAX_COMMAND: usize = 4096;

/// Finds the route of `method` `path`, with the job id it names.
fn find(method: &Method, path: &str) -> Result<(Route, Option<String>), ApiError> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut path_known = false;
    for (m, pattern, route) in ROUTES {
        let parts: Vec<&str> = pattern.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut id = None;
        let matched = parts.iter().zip(&segments).all(|(p, s)| {
            if *p == "{id}" {
                id = Some(s.to_string());
                !s.is_empty()
            } else {
                p == s
            }
        });
        if matched {
            path_known = true;
            if method.as_str() == *m {
                return Ok((*route, id));
            }
        }
    }
    if path_known {
        Err(ApiError::new(
            "method-not-allowed",
            format!("{method} is not allowed on {path}"),
        ))
    } else {
        Err(ApiError::new("no-such-route", format!("no route {path}")))
    }
}

/// Answers one request; never fails (a refusal is an error answer).
pub async fn handle(
    state: &ApiState,
    peer: &Peer,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let answer = dispatch(state, peer, request).await;
    match answer {
        Ok(response) => {
            tracing::debug!(uid = peer.caller.uid, %method, %path, status = %response.status());
            response
        }
        Err(error) => {
            tracing::debug!(uid = peer.caller.uid, %method, %path, code = error.code(), "refused: {}", error.view.message);
            json(
                error.status,
                &ErrorBody {
                    error: error.view.clone(),
                },
            )
        }
    }
}

async fn dispatch(
    state: &ApiState,
    peer: &Peer,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (route, id) = find(request.method(), request.uri().path())?;
    if !peer.served {
        return Err(ApiError::new(
            "access-denied",
            format!(
                "this daemon serves uid {} only; uid {} needs its own daemon or the system one",
                state.daemon_uid, peer.caller.uid
            ),
        ));
    }
    let all_users = all_users(request.uri().query())?;
    let caller = peer.caller;
    let engine = &state.engine;
    let id = id.unwrap_or_default();
    match route {
        Route::Health => Ok(json(
            StatusCode::OK,
            &HealthView {
                version: env!("CARGO_PKG_VERSION").to_string(),
                uid: caller.uid,
                admin: caller.admin,
                pid: std::process::id(),
            },
        )),
        Route::OpenApi => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(Bytes::from_static(OPENAPI.as_bytes())))
            .expect("a valid response")),
        Route::Metrics => {
            // Counts across every user's jobs: for administrators.
            if !caller.admin {
                return Err(ApiError::new(
                    "access-denied",
                    "the metrics cover every user's jobs: they are for administrators",
                ));
            }
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(full(Bytes::from(engine.metrics_text())))
                .expect("a valid response"))
        }
        Route::Plugins => Ok(json(StatusCode::OK, &plugin_list(state))),
        Route::ReloadPlugins => {
            // The plugins serve every user of the daemon.
            if !caller.admin && caller.uid != state.daemon_uid {
                return Err(ApiError::new(
                    "access-denied",
                    "reloading the plugins is for administrators and the daemon's own user",
                ));
            }
            let reloaded = state
                .runtime
                .reload()
                .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
            // A changed plugin set is what a job waiting on a plugin
            // failure waits for.
            engine.retry_plugin_failures();
            Ok(json(
                StatusCode::OK,
                &ReloadView {
                    loaded: reloaded.loaded,
                    removed: reloaded.removed,
                    plugins: plugin_list(state),
                },
            ))
        }
        Route::ListJobs => {
            let jobs = engine.list(caller, all_users)?;
            let views: Vec<JobView> = jobs.iter().map(JobView::of).collect();
            Ok(json(StatusCode::OK, &views))
        }
        Route::CreateJob => {
            let body: CreateRequest = read_json(state, request).await?;
            let name = body.name.unwrap_or_default();
            check_len("name", &name, MAX_NAME)?;
            if let Some(d) = &body.description {
                check_len("description", d, MAX_DESCRIPTION)?;
            }
            let id = engine.create_from(
                caller,
                body.job_type.unwrap_or(JobType::Download),
                &name,
                body.priority.unwrap_or_default(),
                peer.origin(),
            )?;
            if let Some(description) = body.description {
                engine.set(caller, &id, Setting::Description(description))?;
            }
            Ok(json(StatusCode::CREATED, &CreatedView { id }))
        }
        Route::GetJob => Ok(json(
            StatusCode::OK,
            &JobView::of(&engine.get(caller, &id)?),
        )),
        Route::SetJob => {
            let body: SetRequest = read_json(state, request).await?;
            engine.get(caller, &id)?;
            for setting in settings(state, peer, body)? {
                engine.set(caller, &id, setting)?;
            }
            Ok(json(
                StatusCode::OK,
                &JobView::of(&engine.get(caller, &id)?),
            ))
        }
        Route::AddFile => {
            let body: serde_json::Value = read_json(state, request).await?;
            let files = if body.get("files").is_some() {
                from_json::<AddFileSetRequest>(body)?.files
            } else {
                vec![from_json::<AddFileRequest>(body)?]
            };
            let job = engine.get(caller, &id)?;
            let mut set = Vec::with_capacity(files.len());
            for file in files {
                check_local(peer, job.job_type, &file.local)?;
                set.push(NewFile {
                    remote: file.remote,
                    local: file.local,
                    ranges: file.ranges.into_iter().map(Into::into).collect(),
                    sha256: file.sha256,
                });
            }
            engine.add_files(caller, &id, set)?;
            Ok(json(
                StatusCode::OK,
                &JobView::of(&engine.get(caller, &id)?),
            ))
        }
        Route::Resume | Route::Suspend | Route::Cancel => {
            read_empty(state, request).await?;
            let state_after = match route {
                Route::Resume => {
                    engine.resume(caller, &id)?;
                    engine.get(caller, &id).map(|j| j.state())?
                }
                Route::Suspend => {
                    engine.suspend(caller, &id)?;
                    engine.get(caller, &id).map(|j| j.state())?
                }
                _ => {
                    engine.cancel(caller, &id)?;
                    JobState::Cancelled
                }
            };
            Ok(json(
                StatusCode::OK,
                &StateView {
                    id,
                    state: state_after,
                },
            ))
        }
        Route::Complete => {
            read_empty(state, request).await?;
            let done = engine.complete(caller, &id)?;
            Ok(json(
                StatusCode::OK,
                &CompletionView {
                    id,
                    state: JobState::Acknowledged,
                    partial: done.partial,
                    files: done.files,
                    reply: done.reply.map(|r| CompletedReply {
                        status: r.reply.status,
                        body: String::from_utf8(r.reply.body).ok(),
                        data: r.data.and_then(|d| String::from_utf8(d).ok()),
                    }),
                },
            ))
        }
        Route::TakeOwnership => {
            read_empty(state, request).await?;
            engine.take_ownership_from(caller, &id, peer.origin())?;
            Ok(json(
                StatusCode::OK,
                &JobView::of(&engine.get(caller, &id)?),
            ))
        }
        Route::Reply => {
            let job = engine.get(caller, &id)?;
            let view = ReplyDataView::of(&job).ok_or_else(|| {
                ApiError::new(
                    "invalid-state",
                    format!(
                        "job {id} has no reply: only an upload-reply job in transferred has one"
                    ),
                )
            })?;
            Ok(json(StatusCode::OK, &view))
        }
        Route::JobEvents => sse::job_stream(state, caller, &id),
        Route::Events => sse::all_stream(state, caller, all_users),
    }
}

/// `?all-users=true`: the only query parameter the API knows.
fn all_users(query: Option<&str>) -> Result<bool, ApiError> {
    let mut all = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "true")) {
            ("all-users", "true" | "1") => all = true,
            ("all-users", "false" | "0") => all = false,
            _ => {
                return Err(ApiError::invalid_argument(format!(
                    "unknown query parameter {pair:?} (only all-users=true|false)"
                )));
            }
        }
    }
    Ok(all)
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid_argument(format!(
            "the {what} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// Checks a local path for the caller, with the caller's rights, not the
/// daemon's: downloads need a directory the caller may write, uploads a
/// file the caller may read.
fn check_local(peer: &Peer, job_type: JobType, local: &Path) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new("invalid-local-path", m);
    if !local.is_absolute() {
        return Err(invalid(format!(
            "{} is relative: the daemon takes absolute paths only",
            local.display()
        )));
    }
    let Some(dir) = local.parent().filter(|_| local.file_name().is_some()) else {
        return Err(invalid(format!("{} does not name a file", local.display())));
    };
    let access = |e: AccessError| match e {
        AccessError::Denied(path) => {
            ApiError::new("permission-denied", format!("you may not use {path}"))
        }
        AccessError::Missing { path, reason } => {
            invalid(format!("{path} does not exist ({reason})"))
        }
        AccessError::NotADirectory(path) => invalid(format!("{path} is not a directory")),
    };
    if job_type == JobType::Download {
        // The caller's own access first: what is in a directory they may
        // not write (or reach) is none of their business.
        peer.identity.check_writable_dir(dir).map_err(access)?;
        if local.is_dir() {
            return Err(invalid(format!("{} is a directory", local.display())));
        }
        Ok(())
    } else {
        peer.identity.check_readable_file(local).map_err(access)
    }
}

/// The most reply processor options a job holds, and the longest key, value
/// or protocol name.
const MAX_REPLY_OPTIONS: usize = 32;
const MAX_OPTION: usize = 1024;

/// Turns a PATCH body into the engine's setters, checking every value first.
fn settings(state: &ApiState, peer: &Peer, body: SetRequest) -> Result<Vec<Setting>, ApiError> {
    let mut out = Vec::new();
    if let Some(name) = body.name {
        check_len("name", &name, MAX_NAME)?;
        out.push(Setting::Name(name));
    }
    if let Some(d) = body.description {
        check_len("description", &d, MAX_DESCRIPTION)?;
        out.push(Setting::Description(d));
    }
    if let Some(p) = body.priority {
        out.push(Setting::Priority(p));
    }
    if let Some(s) = body.retry_delay_secs {
        out.push(Setting::RetryDelay(Duration::from_secs(s)));
    }
    if let Some(s) = body.no_progress_timeout_secs {
        out.push(Setting::NoProgressTimeout(Duration::from_secs(s)));
    }
    if let Some(s) = body.max_download_time_secs {
        out.push(Setting::MaxDownloadTime(Duration::from_secs(s)));
    }
    if let Some(headers) = body.headers {
        let mut list = Vec::new();
        for h in headers {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&h.value).is_err()
            {
                return Err(ApiError::invalid_argument(format!(
                    "header {:?} is not a valid HTTP header",
                    h.name
                )));
            }
            list.push((h.name, h.value));
        }
        out.push(Setting::Headers(list));
    }
    if let Some(credentials) = body.credentials {
        out.push(Setting::Credentials(credentials.map(|c| match c {
            CredentialsRequest::Basic { user, password } => Credentials::Basic { user, password },
            CredentialsRequest::Bearer { token } => Credentials::Bearer { token },
        })));
    }
    if let Some(command) = body.notify_command {
        if let Some(c) = &command
            && (c.trim().is_empty() || c.len() > MAX_COMMAND)
        {
            return Err(ApiError::invalid_argument(format!(
                "the notify command must be 1 to {MAX_COMMAND} bytes"
            )));
        }
        out.push(Setting::NotifyCommand(command));
    }
    if let Some(processor) = body.reply_processor {
        if let Some(name) = &processor {
            state.runtime.reply_processor(name)?;
        }
        out.push(Setting::ReplyProcessor(processor));
    }
    if let Some(reply_file) = body.reply_file {
        if let Some(path) = &reply_file {
            // Written like a download: the caller must be able to write its directory.
            check_local(peer, JobType::Download, path)?;
        }
        out.push(Setting::ReplyFile(reply_file));
    }
    if let Some(options) = body.reply_options {
        if options.len() > MAX_REPLY_OPTIONS
            || options
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > MAX_OPTION || v.len() > MAX_OPTION)
        {
            return Err(ApiError::invalid_argument(format!(
                "at most {MAX_REPLY_OPTIONS} reply options, each a non-empty key and a value of at most {MAX_OPTION} bytes"
            )));
        }
        out.push(Setting::ReplyOptions(options));
    }
    if let Some(protocol) = body.protocol {
        if let Some(p) = &protocol
            && (p.is_empty()
                || p.len() > MAX_OPTION
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(ApiError::invalid_argument(format!(
                "the protocol {p:?} must be a lower-case name (letters, digits, '-')"
            )));
        }
        out.push(Setting::Protocol(protocol));
    }
    Ok(out)
}

/// A client that sends a body too large for us is answered only after the
/// body was read (and dropped), up to this many bytes: a client that does not
/// read the answer before it has sent everything would otherwise see its
/// connection closed instead of the `body-too-large` answer.
const DISCARD_AT_MOST: usize = 64 << 20;

async fn discard_rest(body: &mut hyper::body::Incoming) {
    let mut discarded = 0;
    while discarded < DISCARD_AT_MOST
        && let Some(Ok(frame)) = body.frame().await
    {
        discarded += frame.data_ref().map_or(0, |d| d.len());
    }
}

/// Reads a JSON body of at most `max_request_bytes`; an empty body is `{}`.
async fn read_json<T: DeserializeOwned>(
    state: &ApiState,
    request: Request<hyper::body::Incoming>,
) -> Result<T, ApiError> {
    let max = state.max_request_bytes;
    let too_large = || {
        ApiError::new(
            "body-too-large",
            format!("request bodies are limited to {max} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = request.into_body();
    if declared.is_some_and(|n| n > max as u64) {
        discard_rest(&mut body).await;
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                "invalid-request",
                format!("the request body could not be read: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                discard_rest(&mut body).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => "invalid-argument",
            _ => "invalid-json",
        };
        ApiError::new(code, format!("the request body is not accepted: {e}"))
    })
}

/// A JSON value read by [`read_json`] as `T`, with the same error codes.
fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            "invalid-argument",
            format!("the request body is not accepted: {e}"),
        )
    })
}

/// The loaded plugins, then the refused ones, each by name.
fn plugin_list(state: &ApiState) -> Vec<PluginView> {
    let mut list: Vec<PluginView> = state
        .runtime
        .plugins()
        .map(|p| PluginView {
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            schemes: p.manifest.schemes.clone(),
            builtin: p.builtin,
            contract: p.contract.version().to_string(),
            abilities: p.abilities.iter().map(|a| a.name().to_string()).collect(),
            state: PluginState::Loaded,
            code: None,
            reason: None,
            path: None,
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let mut refused: Vec<PluginView> = state
        .runtime
        .refused()
        .into_iter()
        .map(|r| PluginView {
            name: r.name,
            version: String::new(),
            schemes: r.schemes,
            builtin: false,
            contract: String::new(),
            abilities: Vec::new(),
            state: PluginState::Refused,
            code: Some(r.code.to_string()),
            reason: Some(r.reason),
            path: Some(r.path),
        })
        .collect();
    refused.sort_by(|a, b| a.name.cmp(&b.name));
    list.extend(refused);
    list
}

/// Action routes take no body, or `{}`.
async fn read_empty(
    state: &ApiState,
    request: Request<hyper::body::Incoming>,
) -> Result<(), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    read_json::<Empty>(state, request).await.map(|_| ())
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("views always serialise");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_with_their_ids_and_wrong_methods_are_told_apart() {
        assert_eq!(
            find(&Method::POST, "/v1/jobs/abc/resume").unwrap(),
            (Route::Resume, Some("abc".into()))
        );
        assert_eq!(
            find(&Method::GET, "/v1/jobs").unwrap(),
            (Route::ListJobs, None)
        );
        assert_eq!(
            find(&Method::DELETE, "/v1/jobs").unwrap_err().code(),
            "method-not-allowed"
        );
        assert_eq!(
            find(&Method::GET, "/v1/nothing").unwrap_err().code(),
            "no-such-route"
        );
        assert_eq!(
            find(&Method::GET, "/v1/jobs//events").unwrap_err().code(),
            "no-such-route"
        );
    }
}
