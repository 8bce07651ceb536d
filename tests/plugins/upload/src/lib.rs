//! A small resumable-upload transport for Ferry's upload tests.
//!
//! Upload and upload-reply jobs need a plugin that uploads for real before the
//! product's own upload plugins exist; this is one, in the style of the tus
//! core protocol, against the test server's upload endpoint:
//! `testup://HOST:PORT/PATH` is `http://HOST:PORT/PATH`.
//! - a first attempt creates the session (`POST` with `Upload-Length`, the
//!   session is the `Location`) and records it with the host;
//! - a later attempt asks the server where it stands (`HEAD`, `Upload-Offset`)
//!   and goes on from there; a session the server no longer knows is
//!   created again;
//! - the bytes go in `PATCH` chunks spliced from the host's source, each one
//!   acknowledged to the host once the server confirmed it; a `409` (the
//!   server holds another offset) is met by asking the offset again;
//! - the last answer is the reply (its body read up to 1 MiB);
//! - `cancel-upload` deletes the session.
//!
//! The fragment `#no-reply-limit` (never sent to the server) makes the plugin
//! read replies up to 4 MiB, so the tests can check the host's own 1 MiB cap.

use ferry_guest_sdk::http::{Method, Request, Response};
use ferry_guest_sdk::types::{
    Capabilities, DownloadRequest, ErrorContext, Header, RemoteInfo, UploadOutcome, UploadReply,
    UploadRequest,
};
use ferry_guest_sdk::{Destination, Source, TransferError, Transport, is_cancelled};
use url::Url;

/// The bytes of one `PATCH`: each is acknowledged to the host on its own.
const CHUNK: u64 = 1 << 20;
/// The largest reply body read, as the WIT contract allows.
const REPLY_LIMIT: usize = 1 << 20;
/// The reply limit with `#no-reply-limit`: above the host's cap on purpose.
const LOOSE_REPLY_LIMIT: usize = 4 << 20;
const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
/// How often one call asks the server again after a `409 Conflict`.
const MAX_CONFLICTS: u32 = 3;

struct TestUpload;

/// Where an upload goes, and how much reply it reads.
struct Target {
    url: Url,
    reply_limit: usize,
}

impl Target {
    fn parse(url: &str) -> Result<Target, TransferError> {
        let rest = url
            .strip_prefix("testup://")
            .ok_or_else(|| invalid_url(url, "the scheme is not testup"))?;
        let mut http =
            Url::parse(&format!("http://{rest}")).map_err(|e| invalid_url(url, &e.to_string()))?;
        let reply_limit = match http.fragment() {
            Some("no-reply-limit") => LOOSE_REPLY_LIMIT,
            _ => REPLY_LIMIT,
        };
        http.set_fragment(None);
        Ok(Target {
            url: http,
            reply_limit,
        })
    }
}

impl Transport for TestUpload {
    fn supported() -> Capabilities {
        Capabilities::UPLOAD | Capabilities::UPLOAD_REPLY
    }

    fn probe(url: String) -> Result<RemoteInfo, TransferError> {
        Err(unsupported(&url, "probe"))
    }

    fn download(request: DownloadRequest, _destination: &Destination) -> Result<(), TransferError> {
        Err(unsupported(&request.url, "download"))
    }

    fn upload(request: UploadRequest, source: &Source) -> Result<UploadOutcome, TransferError> {
        let target = Target::parse(&request.url)?;
        let size = source.size();
        let resumed = match &request.session {
            Some(session) => server_offset(session, size)?.map(|offset| (session.clone(), offset)),
            None => None,
        };
        let (session, mut offset) = match resumed {
            Some(resumed) => resumed,
            None => (create(&target, size, source)?, 0),
        };
        source.acknowledge(offset);
        let mut conflicts = 0;
        // At least one PATCH, even for nothing left to send: its answer is the reply.
        let last = loop {
            if is_cancelled() {
                return Err(TransferError::transient(
                    ErrorContext::Transport,
                    "cancelled",
                    "the host cancelled the upload",
                ));
            }
            let length = CHUNK.min(size - offset);
            let body = source.open(offset)?;
            let response = Request::for_job(Method::Patch, &session)?
                .header(TUS.0, TUS.1)
                .header("upload-offset", &offset.to_string())
                .header("content-type", "application/offset+octet-stream")
                .header("content-length", &length.to_string())
                .send_with_body(&body, length)?;
            drop(body);
            if response.status == 409 && conflicts < MAX_CONFLICTS {
                // The server holds another offset than we thought: ask again.
                conflicts += 1;
                offset = server_offset(&session, size)?
                    .ok_or_else(|| TransferError::from_http_status(404, &session))?;
                source.acknowledge(offset);
                continue;
            }
            if !matches!(response.status, 200 | 204) {
                return Err(TransferError::from_http_status(response.status, &session));
            }
            let confirmed = upload_offset(&response, &session)?;
            let moved = confirmed > offset || length == 0;
            if !moved || confirmed > offset + length {
                return Err(TransferError::fatal(
                    ErrorContext::RemoteApplication,
                    "offset-mismatch",
                    format!(
                        "sent bytes {offset}..{} to {session}, the server confirmed {confirmed}",
                        offset + length
                    ),
                ));
            }
            offset = confirmed;
            source.acknowledge(offset);
            if offset == size {
                break response;
            }
        };
        let reply = if request.want_reply {
            Some(reply(last, target.reply_limit)?)
        } else {
            None
        };
        Ok(UploadOutcome { reply })
    }

    fn cancel_upload(_url: String, session: String) -> Result<(), TransferError> {
        let response = Request::for_job(Method::Delete, &session)?
            .header(TUS.0, TUS.1)
            .send()?;
        match response.status {
            // Gone already is as good as deleted.
            200 | 204 | 404 | 410 => Ok(()),
            status => Err(TransferError::from_http_status(status, &session)),
        }
    }
}

/// Creates the server's session for `size` bytes and records it with the host.
fn create(target: &Target, size: u64, source: &Source) -> Result<String, TransferError> {
    let url = target.url.as_str();
    let response = Request::for_job(Method::Post, url)?
        .header(TUS.0, TUS.1)
        .header("upload-length", &size.to_string())
        .send()?;
    if response.status != 201 {
        return Err(TransferError::from_http_status(response.status, url));
    }
    let location = response.header("location").ok_or_else(|| {
        TransferError::fatal(
            ErrorContext::RemoteApplication,
            "no-session",
            format!("{url} created an upload without a Location"),
        )
    })?;
    let session = target
        .url
        .join(location)
        .map_err(|e| invalid_url(location, &e.to_string()))?
        .to_string();
    source.record_session(&session);
    Ok(session)
}

/// Where the server stands with `session`; `None` when it no longer knows it.
fn server_offset(session: &str, size: u64) -> Result<Option<u64>, TransferError> {
    let response = Request::for_job(Method::Head, session)?
        .header(TUS.0, TUS.1)
        .send()?;
    match response.status {
        200 | 204 => {}
        404 | 410 => return Ok(None),
        status => return Err(TransferError::from_http_status(status, session)),
    }
    let offset = upload_offset(&response, session)?;
    if offset > size {
        return Err(TransferError::fatal(
            ErrorContext::RemoteApplication,
            "offset-mismatch",
            format!("{session} holds {offset} bytes of a {size}-byte upload"),
        ));
    }
    Ok(Some(offset))
}

fn upload_offset(response: &Response, session: &str) -> Result<u64, TransferError> {
    response
        .header("upload-offset")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            TransferError::fatal(
                ErrorContext::RemoteApplication,
                "no-upload-offset",
                format!(
                    "{session} answered {} without a valid Upload-Offset",
                    response.status
                ),
            )
        })
}

/// The final answer as the job's reply: status, text headers, body.
fn reply(response: Response, limit: usize) -> Result<UploadReply, TransferError> {
    let status = response.status;
    let headers = response
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.clone(),
                value: String::from_utf8(value.clone()).ok()?,
            })
        })
        .collect();
    let body = response.read_body(limit)?;
    Ok(UploadReply {
        status,
        headers,
        body,
    })
}

fn invalid_url(url: &str, why: &str) -> TransferError {
    TransferError::fatal(
        ErrorContext::RemoteFile,
        "invalid-url",
        format!("{url} is not a usable URL: {why}"),
    )
}

fn unsupported(url: &str, what: &str) -> TransferError {
    TransferError::fatal(
        ErrorContext::Plugin,
        "unsupported",
        format!("the testup plugin does not implement {what} ({url})"),
    )
}

ferry_guest_sdk::export_transport!(TestUpload);
