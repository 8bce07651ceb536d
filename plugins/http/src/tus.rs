//! tus 1.0 (<https://tus.io/protocols/resumable-upload>): core, creation,
//! termination.
//!
//! - A first attempt creates the upload (`POST` with `Upload-Length` and
//!   `Upload-Metadata: filename`), records its URL with the host, and sends
//!   the bytes in `PATCH` chunks spliced from the host's source; each chunk
//!   the server confirms (`Upload-Offset`) is acknowledged to the host.
//! - A resumed attempt asks the server where it stands (`HEAD`) and goes on
//!   from there; an upload the server no longer knows (`404`, `410`, `403`)
//!   is `session-expired`, on which the host starts over with a new one.
//! - A connection that breaks off inside a `PATCH` is met by asking the
//!   server's offset again and going on from it, a few times in a row
//!   before the call gives up (transiently); so is a `409` (the server holds
//!   another offset than the plugin thought).
//! - `cancel` terminates the upload (`DELETE`); one the server no longer
//!   knows counts as terminated.
//! - For an upload-reply job the reply is the server's answer to the last
//!   `PATCH`.

use crate::protocol::{Protocol, Session};
use base64::Engine as _;
use ferry_guest_sdk::http::{Method, Request, Response};
use ferry_guest_sdk::{
    ErrorClass, ErrorContext, JobContext, ReplySink, Source, TransferError, UploadRequest,
    check_cancelled,
};

/// The header every tus request carries.
pub const RESUMABLE: (&str, &str) = ("tus-resumable", "1.0.0");
/// The bytes of one `PATCH`; each is acknowledged to the host on its own.
const CHUNK: u64 = 8 << 20;
/// How often in a row one call asks the server's offset again after a
/// broken `PATCH` or a `409` before it gives up.
const MAX_RETRIES: u32 = 3;

/// Uploads the whole source, resuming `session` (an upload URL) when given.
pub fn upload(
    job: &JobContext,
    request: &UploadRequest,
    session: Option<&str>,
    source: &Source,
    reply: Option<&ReplySink>,
) -> Result<(), TransferError> {
    let size = source.size();
    let (upload_url, mut offset) = match session {
        Some(upload_url) => (
            upload_url.to_string(),
            server_offset(job, upload_url, size)?,
        ),
        None => (create(job, request, size, source)?, 0),
    };
    source.acknowledge(offset);
    let mut retries = 0;
    // At least one PATCH, even with nothing left to send: its answer is
    // the reply.
    loop {
        check_cancelled()?;
        let length = CHUNK.min(size - offset);
        let sent = patch(job, &upload_url, source, offset, length);
        let response = match sent {
            Ok(response) if response.status == 409 => None,
            Ok(response) => Some(response),
            Err(e)
                if e.is_transient() && !matches!(e.code, ferry_guest_sdk::ErrorCode::Cancelled) =>
            {
                if retries >= MAX_RETRIES {
                    return Err(e);
                }
                ferry_guest_sdk::warn(&format!(
                    "PATCH {upload_url} at {offset} failed ({}): asking the server's offset",
                    e.message
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let Some(response) = response else {
            if retries >= MAX_RETRIES {
                return Err(TransferError::other(
                    ErrorClass::Transient,
                    ErrorContext::RemoteApplication,
                    "offset-conflict",
                    format!("{upload_url} kept answering 409 to PATCH at {offset}"),
                ));
            }
            retries += 1;
            offset = server_offset(job, &upload_url, size)?;
            source.acknowledge(offset);
            continue;
        };
        match response.status {
            200 | 204 => {}
            404 | 410 => {
                return Err(TransferError::session_expired(format!(
                    "{upload_url} answered {}: the server no longer knows the upload",
                    response.status
                )));
            }
            status => return Err(TransferError::from_http_status(status, &upload_url)),
        }
        let confirmed = upload_offset(&response, &upload_url)?;
        if confirmed > offset + length || (confirmed <= offset && length > 0) {
            return Err(offset_mismatch(format!(
                "sent bytes {offset}..{} to {upload_url}, the server confirmed {confirmed}",
                offset + length
            )));
        }
        retries = 0;
        offset = confirmed;
        source.acknowledge(offset);
        if offset == size {
            if let Some(reply) = reply {
                response.write_reply(reply)?;
            }
            return Ok(());
        }
    }
}

/// Terminates the upload at `upload_url`.
pub fn cancel(job: &JobContext, upload_url: &str) -> Result<(), TransferError> {
    let response = Request::for_job(job, Method::Delete, upload_url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .send()?;
    match response.status {
        // Gone already is as good as terminated.
        200 | 204 | 404 | 410 => Ok(()),
        // A server without the termination extension keeps the upload
        // until it expires it; asking again will not help.
        405 | 501 => {
            ferry_guest_sdk::warn(&format!(
                "{upload_url} cannot terminate uploads ({}): the server keeps it until it expires",
                response.status
            ));
            Ok(())
        }
        status => Err(TransferError::from_http_status(status, upload_url)),
    }
}

/// Sends bytes `offset..offset + length` in one `PATCH`.
fn patch(
    job: &JobContext,
    upload_url: &str,
    source: &Source,
    offset: u64,
    length: u64,
) -> Result<Response, TransferError> {
    let body = source.open(offset)?;
    Request::for_job(job, Method::Patch, upload_url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .header("upload-offset", &offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .send_with_body(&body, length)
}

/// Creates the upload for `size` bytes and records its URL with the host.
fn create(
    job: &JobContext,
    request: &UploadRequest,
    size: u64,
    source: &Source,
) -> Result<String, TransferError> {
    let url = request.url.as_str();
    let mut post = Request::for_job(job, Method::Post, url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .header("upload-length", &size.to_string());
    if !request.name.is_empty() {
        post = post.header("upload-metadata", &metadata(&request.name));
    }
    let response = post.send()?;
    match response.status {
        201 => {}
        413 => {
            return Err(TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::RemoteApplication,
                "too-large",
                format!("{url} refuses an upload of {size} bytes (413)"),
            ));
        }
        status => return Err(TransferError::from_http_status(status, url)),
    }
    let location = response.header("location").ok_or_else(|| {
        TransferError::other(
            ErrorClass::Fatal,
            ErrorContext::RemoteApplication,
            "no-upload-url",
            format!("{url} created an upload without a Location"),
        )
    })?;
    let upload_url = crate::protocol::join(&response.url, location)?;
    source.record_session(&Session::new(Protocol::Tus, &upload_url).encode());
    ferry_guest_sdk::debug(&format!("created {upload_url} for {size} bytes"));
    Ok(upload_url)
}

/// `Upload-Metadata` with the file name: `filename BASE64`.
pub fn metadata(name: &str) -> String {
    format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
    )
}

/// Where the server stands with `upload_url`; `session-expired` when it no
/// longer knows it.
fn server_offset(job: &JobContext, upload_url: &str, size: u64) -> Result<u64, TransferError> {
    let response = Request::for_job(job, Method::Head, upload_url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .send()?;
    match response.status {
        200 | 204 => {}
        403 | 404 | 410 => {
            return Err(TransferError::session_expired(format!(
                "{upload_url} answered {}: the server no longer knows the upload",
                response.status
            )));
        }
        status => return Err(TransferError::from_http_status(status, upload_url)),
    }
    if let Some(length) = response
        .header("upload-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        && length != size
    {
        return Err(TransferError::session_expired(format!(
            "{upload_url} is an upload of {length} bytes, the source has {size}"
        )));
    }
    let offset = upload_offset(&response, upload_url)?;
    if offset > size {
        return Err(offset_mismatch(format!(
            "{upload_url} holds {offset} bytes of a {size}-byte upload"
        )));
    }
    Ok(offset)
}

fn upload_offset(response: &Response, upload_url: &str) -> Result<u64, TransferError> {
    response
        .header("upload-offset")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::RemoteApplication,
                "no-upload-offset",
                format!(
                    "{upload_url} answered {} without a valid Upload-Offset",
                    response.status
                ),
            )
        })
}

fn offset_mismatch(message: String) -> TransferError {
    TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::RemoteApplication,
        "offset-mismatch",
        message,
    )
}
