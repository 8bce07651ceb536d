//! A small resumable-upload transport for Ferry's upload tests.
//!
//! Upload and upload-reply jobs need a plugin that uploads for real before the
//! product's own upload plugins exist; this is one, in the style of the tus
//! core protocol, against the test server's upload endpoint:
//! `testup://HOST:PORT/PATH` is `http://HOST:PORT/PATH`.
//! - a first attempt creates the session (`POST` with `Upload-Length`, the
//!   session is the `Location`) and records it with the host;
//! - a later attempt asks the server where it stands (`HEAD`, `Upload-Offset`)
//!   and goes on from there; a session the server no longer knows (`404` or
//!   `410`) is a `session-expired` error, on which the host forgets it and
//!   calls again without one;
//! - the bytes go in `PATCH` chunks spliced from the host's source, each one
//!   acknowledged to the host once the server confirmed it; a `409` (the
//!   server holds another offset) is met by asking the offset again;
//! - for an upload-reply job, the last answer is the reply: its status,
//!   headers and body (of any size) written into the host's reply sink;
//! - `cancel-upload` deletes the session.
//!
//! It exports `upload` and `upload-reply`.

use ferry_guest_sdk::http::{Method, Request, Response, invalid_url};
use ferry_guest_sdk::{
    ErrorClass, ErrorContext, JobContext, ReplySink, Source, TransferError, Upload, UploadReply,
    UploadRequest, check_cancelled,
};
use url::Url;

/// The bytes of one `PATCH`: each is acknowledged to the host on its own.
const CHUNK: u64 = 1 << 20;
const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
/// How often one call asks the server again after a `409 Conflict`.
const MAX_CONFLICTS: u32 = 3;

struct TestUpload;

impl Upload for TestUpload {
    fn upload(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
    ) -> Result<(), TransferError> {
        upload(&job, &request, source).map(drop)
    }

    fn cancel_upload(job: JobContext, _url: String, session: String) -> Result<(), TransferError> {
        let response = Request::for_job(&job, Method::Delete, &session)?
            .header(TUS.0, TUS.1)
            .send()?;
        match response.status {
            // Gone already is as good as deleted.
            200 | 204 | 404 | 410 => Ok(()),
            status => Err(TransferError::from_http_status(status, &session)),
        }
    }
}

impl UploadReply for TestUpload {
    fn upload_with_reply(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
        reply: &ReplySink,
    ) -> Result<(), TransferError> {
        upload(&job, &request, source)?.write_reply(reply).map(drop)
    }
}

/// Uploads the whole source; returns the server's last answer.
fn upload(
    job: &JobContext,
    request: &UploadRequest,
    source: &Source,
) -> Result<Response, TransferError> {
    let target = target(&request.url)?;
    let size = source.size();
    let (session, mut offset) = match &request.session {
        Some(session) => (session.clone(), server_offset(job, session, size)?),
        None => (create(job, &target, size, source)?, 0),
    };
    source.acknowledge(offset);
    let mut conflicts = 0;
    // At least one PATCH, even for nothing left to send: its answer is the reply.
    loop {
        check_cancelled()?;
        let length = CHUNK.min(size - offset);
        let body = source.open(offset)?;
        let response = Request::for_job(job, Method::Patch, &session)?
            .header(TUS.0, TUS.1)
            .header("upload-offset", &offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", &length.to_string())
            .send_with_body(&body, length)?;
        drop(body);
        if response.status == 409 && conflicts < MAX_CONFLICTS {
            // The server holds another offset than we thought: ask again.
            conflicts += 1;
            offset = server_offset(job, &session, size)?;
            source.acknowledge(offset);
            continue;
        }
        if !matches!(response.status, 200 | 204) {
            return Err(TransferError::from_http_status(response.status, &session));
        }
        let confirmed = upload_offset(&response, &session)?;
        let moved = confirmed > offset || length == 0;
        if !moved || confirmed > offset + length {
            return Err(mismatch(format!(
                "sent bytes {offset}..{} to {session}, the server confirmed {confirmed}",
                offset + length
            )));
        }
        offset = confirmed;
        source.acknowledge(offset);
        if offset == size {
            return Ok(response);
        }
    }
}

/// `testup://HOST:PORT/PATH` as `http://HOST:PORT/PATH` (without fragment).
fn target(url: &str) -> Result<Url, TransferError> {
    let rest = url
        .strip_prefix("testup://")
        .ok_or_else(|| invalid_url(url, "the scheme is not testup"))?;
    let mut http =
        Url::parse(&format!("http://{rest}")).map_err(|e| invalid_url(url, &e.to_string()))?;
    http.set_fragment(None);
    Ok(http)
}

/// Creates the server's session for `size` bytes and records it with the host.
fn create(
    job: &JobContext,
    target: &Url,
    size: u64,
    source: &Source,
) -> Result<String, TransferError> {
    let url = target.as_str();
    let response = Request::for_job(job, Method::Post, url)?
        .header(TUS.0, TUS.1)
        .header("upload-length", &size.to_string())
        .send()?;
    if response.status != 201 {
        return Err(TransferError::from_http_status(response.status, url));
    }
    let location = response.header("location").ok_or_else(|| {
        TransferError::other(
            ErrorClass::Fatal,
            ErrorContext::RemoteApplication,
            "no-session",
            format!("{url} created an upload without a Location"),
        )
    })?;
    let session = target
        .join(location)
        .map_err(|e| invalid_url(location, &e.to_string()))?
        .to_string();
    source.record_session(&session);
    Ok(session)
}

/// Where the server stands with `session`; `session-expired` when it no
/// longer knows it.
fn server_offset(job: &JobContext, session: &str, size: u64) -> Result<u64, TransferError> {
    let response = Request::for_job(job, Method::Head, session)?
        .header(TUS.0, TUS.1)
        .send()?;
    match response.status {
        200 | 204 => {}
        404 | 410 => {
            return Err(TransferError::session_expired(format!(
                "{session} answered {}: the server no longer knows the upload",
                response.status
            )));
        }
        status => return Err(TransferError::from_http_status(status, session)),
    }
    let offset = upload_offset(&response, session)?;
    if offset > size {
        return Err(mismatch(format!(
            "{session} holds {offset} bytes of a {size}-byte upload"
        )));
    }
    Ok(offset)
}

fn upload_offset(response: &Response, session: &str) -> Result<u64, TransferError> {
    response
        .header("upload-offset")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::RemoteApplication,
                "no-upload-offset",
                format!(
                    "{session} answered {} without a valid Upload-Offset",
                    response.status
                ),
            )
        })
}

fn mismatch(message: String) -> TransferError {
    TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::RemoteApplication,
        "offset-mismatch",
        message,
    )
}

ferry_guest_sdk::export_upload_reply!(TestUpload);
