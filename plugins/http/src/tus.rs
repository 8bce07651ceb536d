//! tus 1.0 (<https://tus.io/protocols/resumable-upload>): core, creation,
//! termination, checksum.
//!
//! - A first attempt creates the upload (`POST` with `Upload-Length` and
//!   `Upload-Metadata: filename`), records its URL with the host, and sends
//!   the bytes in `PATCH` chunks spliced from the host's source (8 MiB,
//!   doubling after each chunk the server confirms whole, up to 64 MiB);
//!   each chunk the server confirms (`Upload-Offset`) is acknowledged to the
//!   host.
//! - A resumed attempt asks the server where it stands (`HEAD`) and goes on
//!   from there; an upload the server no longer knows (`404`, `410`, `403`)
//!   is `session-expired`, on which the host starts over with a new one.
//! - A connection that breaks off inside a `PATCH` is met by asking the
//!   server's offset again and going on from it, a few times in a row
//!   before the call gives up (transiently); so is a `409` (the server holds
//!   another offset than the plugin thought).
//! - When the server offers the checksum extension with SHA-1 (`OPTIONS`:
//!   `Tus-Extension: checksum`, `Tus-Checksum-Algorithm: sha1`), every
//!   `PATCH` carries `Upload-Checksum: sha1 BASE64` of its bytes (read once
//!   more from the source to hash them); a `460` (the bytes arrived other
//!   than sent) is met by sending the chunk again.
//! - `cancel` terminates the upload (`DELETE`); one the server no longer
//!   knows counts as terminated.
//! - For an upload-reply job the reply is the server's answer to the last
//!   `PATCH`.

use crate::protocol::{Protocol, Session};
use base64::Engine as _;
use ferry_guest_sdk::http::{Method, Request, Response};
use ferry_guest_sdk::{
    ErrorClass, ErrorContext, JobContext, ReplySink, Source, StreamError, TransferError,
    UploadRequest, check_cancelled,
};
use sha1::Digest as _;

/// The header every tus request carries.
pub const RESUMABLE: (&str, &str) = ("tus-resumable", "1.0.0");
/// The bytes of the first `PATCH` of a call; each `PATCH` is acknowledged
/// to the host on its own.
const FIRST_PATCH: u64 = 8 << 20;
/// Each `PATCH` the server confirms whole doubles the next one up to this:
/// fewer requests on a server that keeps up (each costs a round trip and,
/// on most servers, opening and closing the upload's file), small ones
/// again after a failure.
const MAX_PATCH: u64 = 64 << 20;
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
    let checksum = offers_sha1(job, &request.url)?;
    let (upload_url, mut offset) = match session {
        Some(upload_url) => (
            upload_url.to_string(),
            server_offset(job, upload_url, size)?,
        ),
        None => (create(job, request, size, source)?, 0),
    };
    source.acknowledge(offset);
    let mut retries = 0;
    let mut patch_size = FIRST_PATCH;
    // At least one PATCH, even with nothing left to send: its answer is
    // the reply.
    loop {
        check_cancelled()?;
        let length = patch_size.min(size - offset);
        let sent = patch(job, &upload_url, source, offset, length, checksum);
        let response = match sent {
            // Another offset than ours, or bytes that arrived damaged.
            Ok(response) if matches!(response.status, 409 | 460) => None,
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
            patch_size = FIRST_PATCH;
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
        if confirmed == offset + length {
            patch_size = (patch_size * 2).min(MAX_PATCH);
        }
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

/// Sends bytes `offset..offset + length` in one `PATCH`, with their SHA-1
/// when `checksum` says the server checks it.
fn patch(
    job: &JobContext,
    upload_url: &str,
    source: &Source,
    offset: u64,
    length: u64,
    checksum: bool,
) -> Result<Response, TransferError> {
    let mut request = Request::for_job(job, Method::Patch, upload_url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .header("upload-offset", &offset.to_string())
        .header("content-type", "application/offset+octet-stream");
    if checksum {
        let digest = sha1_of(source, offset, length)?;
        request = request.header(
            "upload-checksum",
            &format!(
                "sha1 {}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ),
        );
    }
    let body = source.open(offset)?;
    request.send_with_body(&body, length)
}

/// Whether the server at `url` offers the checksum extension with SHA-1.
fn offers_sha1(job: &JobContext, url: &str) -> Result<bool, TransferError> {
    let response = Request::for_job(job, Method::Options, url)?
        .header(RESUMABLE.0, RESUMABLE.1)
        .send()?;
    let listed = |name: &str, item: &str| {
        response
            .header(name)
            .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case(item)))
    };
    Ok((200..300).contains(&response.status)
        && listed("tus-extension", "checksum")
        && listed("tus-checksum-algorithm", "sha1"))
}

/// The SHA-1 of bytes `offset..offset + length` of the source.
fn sha1_of(source: &Source, offset: u64, length: u64) -> Result<Vec<u8>, TransferError> {
    let input = source.open(offset)?;
    let mut hasher = sha1::Sha1::new();
    let mut left = length;
    while left > 0 {
        check_cancelled()?;
        match input.blocking_read(left.min(64 * 1024)) {
            Ok(chunk) => {
                left -= chunk.len() as u64;
                hasher.update(&chunk);
            }
            Err(StreamError::Closed) => {
                return Err(TransferError::fatal(
                    ErrorContext::LocalFile,
                    ferry_guest_sdk::ErrorCode::other("local-file-changed"),
                    format!("the source ended {left} bytes before {}", offset + length),
                ));
            }
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(TransferError::other(
                    ErrorClass::Transient,
                    ErrorContext::LocalFile,
                    "read-failed",
                    format!("reading the source failed: {}", e.to_debug_string()),
                ));
            }
        }
    }
    Ok(hasher.finalize().to_vec())
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
