//! The BITS upload protocol ([MC-BUP]): every message is a `BITS_POST`
//! whose `BITS-Packet-Type` says what it is.
//!
//! - `Create-Session` offers the upload protocol's GUID; the server's `Ack`
//!   names the session (`BITS-Session-Id`), which is recorded with the host.
//! - `Fragment`s carry the bytes in order with `Content-Range`; the server's
//!   `Ack` says where the next fragment must start
//!   (`BITS-Received-Content-Range`), which is acknowledged to the host. A
//!   fragment that does not start there is answered `416` with the same
//!   header, and the upload goes on from it: that is how a resumed session
//!   learns the server's offset (its first fragment is one byte from zero).
//! - For an upload-reply job, the `Ack` of the last fragment names the
//!   reply (`BITS-Reply-URL`), which is fetched before `Close-Session`.
//! - `Close-Session` commits the upload; `Cancel-Session` drops it.
//! - `BITS-Host-Id` (a server farm's redirection to one host) is not
//!   followed: the session stays with the URL the job names.
//! - Errors carry an HRESULT (`BITS-Error-Code`, or `BITS-Error`) and a
//!   context (`BITS-Error-Context`: 0x5 the server, 0x7 the application
//!   behind it), kept in the typed error; `BG_E_SESSION_NOT_FOUND` is
//!   `session-expired`, on which the host starts over with a new session.

use crate::protocol::{Protocol, Session};
use ferry_guest_sdk::http::{Method, Request, Response};
use ferry_guest_sdk::{
    ErrorClass, ErrorCode, ErrorContext, JobContext, ReplySink, Source, TransferError,
    UploadRequest, check_cancelled, http_status_is_transient,
};

/// The GUID of the BITS upload protocol.
pub const UPLOAD_PROTOCOL: &str = "{7df0354d-249b-430f-820d-3d2a9bef4931}";
/// The server does not know the session.
pub const BG_E_SESSION_NOT_FOUND: u32 = 0x8020_001F;
/// The bytes of one fragment; each is acknowledged to the host on its own.
const FRAGMENT: u64 = 8 << 20;
/// How often in a row one call sends again after a broken fragment or a
/// `416` before it gives up.
const MAX_RETRIES: u32 = 3;

/// A `BITS_POST` of packet type `kind`.
fn packet(job: &JobContext, url: &str, kind: &str) -> Result<Request, TransferError> {
    Ok(
        Request::for_job(job, Method::Other("BITS_POST".into()), url)?
            .header("bits-packet-type", kind),
    )
}

/// Sends a bodiless packet.
fn send_empty(request: Request) -> Result<Response, TransferError> {
    request.header("content-length", "0").send()
}

fn is_ack(response: &Response) -> bool {
    response
        .header("bits-packet-type")
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("ack"))
}

/// Whether the server at `url` answers a `Ping` with an `Ack`.
pub fn ping(job: &JobContext, url: &str) -> Result<bool, TransferError> {
    let response = send_empty(packet(job, url, "Ping")?)?;
    Ok((200..300).contains(&response.status) && is_ack(&response))
}

/// The HRESULT of an error answer, if it carries one.
fn hresult(response: &Response) -> Option<u32> {
    parse_hresult(
        response
            .header("bits-error-code")
            .or_else(|| response.header("bits-error"))?,
    )
}

/// An HRESULT as BITS servers write it: `0x8020001F`, `x8020001F` or bare hex.
pub fn parse_hresult(value: &str) -> Option<u32> {
    let value = value.trim();
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .or_else(|| value.strip_prefix('x'))
        .unwrap_or(value);
    u32::from_str_radix(hex, 16).ok()
}

/// The typed error of a non-`Ack` or non-2xx answer.
fn error(response: &Response, url: &str, what: &str) -> TransferError {
    classify(
        response.status,
        hresult(response),
        response.header("bits-error-context"),
        &format!("{url} answered {} to {what}", response.status),
    )
}

/// The typed error of status `status` with HRESULT `code` in `context`
/// (`0x5`: the server, `0x7`: the application behind it): the class follows
/// the status, `BG_E_SESSION_NOT_FOUND` is `session-expired`, and the
/// HRESULT is the code (`access-denied`, `too-large`, `invalid-argument`,
/// else `bits-error-XXXXXXXX`), `http-status` without one.
pub fn classify(
    status: u16,
    code: Option<u32>,
    context: Option<&str>,
    what: &str,
) -> TransferError {
    if code == Some(BG_E_SESSION_NOT_FOUND) {
        return TransferError::session_expired(format!(
            "{what}: the server does not know the session (BG_E_SESSION_NOT_FOUND)"
        ));
    }
    let context = match context.and_then(parse_hresult) {
        Some(5) => ErrorContext::RemoteFile,
        _ => ErrorContext::RemoteApplication,
    };
    let class = if http_status_is_transient(status) {
        ErrorClass::Transient
    } else {
        ErrorClass::Fatal
    };
    let (code, name) = match code {
        Some(0x8007_0005) => (
            ErrorCode::other("access-denied"),
            "E_ACCESSDENIED".to_string(),
        ),
        Some(0x8020_0020) => (ErrorCode::other("too-large"), "BG_E_TOO_LARGE".to_string()),
        Some(0x8007_0057) => (
            ErrorCode::other("invalid-argument"),
            "E_INVALIDARG".to_string(),
        ),
        Some(other) => (
            ErrorCode::other(&format!("bits-error-{other:08x}")),
            format!("0x{other:08X}"),
        ),
        None => (ErrorCode::HttpStatus, "no BITS error".to_string()),
    };
    TransferError {
        class,
        context,
        code,
        http_status: Some(status),
        message: format!("{what} ({name})"),
    }
}

/// `BITS-Received-Content-Range`: where the next fragment must start.
fn received(response: &Response, url: &str) -> Result<u64, TransferError> {
    response
        .header("bits-received-content-range")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::RemoteApplication,
                "no-received-range",
                format!(
                    "{url} answered {} to a fragment without a valid BITS-Received-Content-Range",
                    response.status
                ),
            )
        })
}

/// Uploads the whole source, resuming `session` (a session id) when given.
pub fn upload(
    job: &JobContext,
    request: &UploadRequest,
    session: Option<&str>,
    source: &Source,
    reply: Option<&ReplySink>,
) -> Result<(), TransferError> {
    let url = request.url.as_str();
    let size = source.size();
    let session = match session {
        Some(session) => session.to_string(),
        None => create(job, url, source)?,
    };
    // A resumed session learns the server's offset from the answer to a
    // one-byte fragment at zero (accepted, or `416` with the offset).
    let mut offset = 0;
    let mut length = if request.session.is_some() {
        1.min(size)
    } else {
        FRAGMENT.min(size)
    };
    let mut retries = 0;
    let mut reply_url = None;
    let mut last_ack = None;
    while offset < size {
        check_cancelled()?;
        let response = match fragment(
            job,
            url,
            &session,
            &request.name,
            source,
            offset,
            length,
            size,
        ) {
            Ok(response) => response,
            Err(e)
                if e.is_transient()
                    && !matches!(e.code, ErrorCode::Cancelled)
                    && retries < MAX_RETRIES =>
            {
                // The fragment broke off: the next one, from where the
                // server says it stands, tells the offset.
                ferry_guest_sdk::warn(&format!(
                    "fragment {offset}+{length} to {url} failed ({}): asking the server's offset",
                    e.message
                ));
                retries += 1;
                length = 1.min(size);
                offset = 0;
                continue;
            }
            Err(e) => return Err(e),
        };
        if response.status == 416 && retries < MAX_RETRIES {
            let next = received(&response, url)?;
            if next > size {
                return Err(offset_mismatch(url, next, size));
            }
            retries += 1;
            offset = next;
            source.acknowledge(offset);
            length = FRAGMENT.min(size - offset);
            if offset == size {
                // Everything is there already; the last Ack (and its reply
                // URL) was lost with the earlier attempt.
                reply_url = response.header("bits-reply-url").map(str::to_string);
                last_ack = Some(response);
            }
            continue;
        }
        if !(200..300).contains(&response.status) || !is_ack(&response) {
            return Err(error(&response, url, "a fragment"));
        }
        let next = received(&response, url)?;
        if next > size || next <= offset {
            return Err(offset_mismatch(url, next, size));
        }
        retries = 0;
        offset = next;
        source.acknowledge(offset);
        length = FRAGMENT.min(size - offset);
        if offset == size {
            reply_url = response.header("bits-reply-url").map(str::to_string);
            last_ack = Some(response);
        }
    }
    if let Some(sink) = reply {
        match reply_url {
            Some(reply_url) => {
                let reply_url = crate::protocol::join(url, &reply_url)?;
                let answer = Request::for_job(job, Method::Get, &reply_url)?.send()?;
                if !(200..300).contains(&answer.status) {
                    return Err(TransferError::from_http_status(answer.status, &reply_url));
                }
                answer.write_reply(sink)?;
            }
            None => {
                ferry_guest_sdk::warn(&format!(
                    "{url} named no BITS-Reply-URL: the reply is its last Ack"
                ));
                match last_ack {
                    Some(ack) => {
                        ack.write_reply(sink)?;
                    }
                    None => {
                        let ack = close(job, url, &session)?;
                        ack.write_reply(sink)?;
                        return Ok(());
                    }
                }
            }
        }
    }
    close(job, url, &session).map(drop)
}

/// Creates a session and records it with the host.
fn create(job: &JobContext, url: &str, source: &Source) -> Result<String, TransferError> {
    let response = send_empty(
        packet(job, url, "Create-Session")?.header("bits-supported-protocols", UPLOAD_PROTOCOL),
    )?;
    if !(200..300).contains(&response.status) || !is_ack(&response) {
        return Err(error(&response, url, "Create-Session"));
    }
    if let Some(protocol) = response.header("bits-protocol")
        && !protocol.trim().eq_ignore_ascii_case(UPLOAD_PROTOCOL)
    {
        return Err(TransferError::unsupported(format!(
            "{url} chose the BITS protocol {protocol}, not the upload protocol {UPLOAD_PROTOCOL}"
        )));
    }
    let session = response
        .header("bits-session-id")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .ok_or_else(|| {
            TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::RemoteApplication,
                "no-session",
                format!("{url} created a session without a BITS-Session-Id"),
            )
        })?;
    source.record_session(&Session::new(Protocol::Bits, &session).encode());
    ferry_guest_sdk::debug(&format!("created BITS session {session} at {url}"));
    Ok(session)
}

/// Sends bytes `offset..offset + length` of `size` as one fragment.
#[allow(clippy::too_many_arguments)]
fn fragment(
    job: &JobContext,
    url: &str,
    session: &str,
    name: &str,
    source: &Source,
    offset: u64,
    length: u64,
    size: u64,
) -> Result<Response, TransferError> {
    let body = source.open(offset)?;
    let mut request = packet(job, url, "Fragment")?
        .header("bits-session-id", session)
        .header(
            "content-range",
            &format!("bytes {offset}-{}/{size}", offset + length - 1),
        );
    if !name.is_empty() && name.is_ascii() && !name.chars().any(char::is_control) {
        request = request.header("content-name", name);
    }
    request.send_with_body(&body, length)
}

/// Closes (commits) the session; returns the server's `Ack`.
fn close(job: &JobContext, url: &str, session: &str) -> Result<Response, TransferError> {
    let response =
        send_empty(packet(job, url, "Close-Session")?.header("bits-session-id", session))?;
    if !(200..300).contains(&response.status) || !is_ack(&response) {
        return Err(error(&response, url, "Close-Session"));
    }
    Ok(response)
}

/// Cancels the session; one the server does not know counts as cancelled.
pub fn cancel(job: &JobContext, url: &str, session: &str) -> Result<(), TransferError> {
    let response =
        send_empty(packet(job, url, "Cancel-Session")?.header("bits-session-id", session))?;
    if (200..300).contains(&response.status) && is_ack(&response) {
        return Ok(());
    }
    if hresult(&response) == Some(BG_E_SESSION_NOT_FOUND) {
        return Ok(());
    }
    Err(error(&response, url, "Cancel-Session"))
}

fn offset_mismatch(url: &str, next: u64, size: u64) -> TransferError {
    TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::RemoteApplication,
        "offset-mismatch",
        format!("{url} says the next fragment starts at {next} of a {size}-byte upload"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_errors_are_typed_by_hresult_context_and_status() {
        assert_eq!(parse_hresult("0x8020001F"), Some(BG_E_SESSION_NOT_FOUND));
        assert_eq!(parse_hresult("x8020001f"), Some(BG_E_SESSION_NOT_FOUND));
        assert_eq!(parse_hresult(" 80070005 "), Some(0x8007_0005));
        assert_eq!(parse_hresult("nope"), None);

        let expired = classify(500, Some(BG_E_SESSION_NOT_FOUND), Some("0x5"), "x");
        assert!(matches!(expired.code, ErrorCode::SessionExpired));
        let denied = classify(403, Some(0x8007_0005), Some("0x7"), "x");
        assert_eq!(denied.code.to_string(), "access-denied");
        assert!(!denied.is_transient());
        assert_eq!(denied.context, ErrorContext::RemoteApplication);
        assert_eq!(denied.http_status, Some(403));
        let busy = classify(503, Some(0x8020_0099), Some("0x5"), "x");
        assert_eq!(busy.code.to_string(), "bits-error-80200099");
        assert!(busy.is_transient());
        assert_eq!(busy.context, ErrorContext::RemoteFile);
        let plain = classify(404, None, None, "x");
        assert!(matches!(plain.code, ErrorCode::HttpStatus));
    }
}
