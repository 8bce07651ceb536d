//! Ferry's built-in transport for `http` and `https` downloads.
//!
//! It speaks plain HTTP/1.1 semantics through the host's `wasi:http`:
//! - `probe` asks with HEAD and falls back to a one-byte ranged GET when a
//!   server refuses HEAD;
//! - `download` resumes with `Range` guarded by `If-Range` on the validator
//!   recorded when the file began: a 206 with the expected `Content-Range`
//!   continues, a 200 restarts the file from zero, any other `Content-Range`
//!   is an error;
//! - servers without ranges or without a size still work: a whole-file
//!   download just restarts, and a byte range is cut out of the full body;
//! - bodies are never decoded and never held in plugin memory: they are
//!   spliced into the host's destination stream.

use ferry_guest_sdk::http::{Method, Request, Response};
use ferry_guest_sdk::types::{
    Capabilities, DownloadRequest, ErrorContext, RemoteInfo, UploadOutcome, UploadRequest,
    Validator,
};
use ferry_guest_sdk::{Destination, Source, TransferError, Transport, job_context};

struct HttpTransport;

impl Transport for HttpTransport {
    fn supported() -> Capabilities {
        Capabilities::DOWNLOAD | Capabilities::RANGES
    }

    fn probe(url: String) -> Result<RemoteInfo, TransferError> {
        let max_redirects = job_context().max_redirects;
        let head = Request::for_job(Method::Head, &url)?
            .header("accept-encoding", "identity")
            .send_following_redirects(max_redirects)?;
        if is_success(head.status) {
            return Ok(remote_info(&head, head.content_length()));
        }
        if !matches!(head.status, 400 | 403 | 405 | 501) {
            return Err(TransferError::from_http_status(head.status, &url));
        }
        // HEAD refused: ask for the first byte instead, which tells the size
        // (from Content-Range, or Content-Length when ranges are ignored).
        let get = Request::for_job(Method::Get, &url)?
            .header("accept-encoding", "identity")
            .header("range", "bytes=0-0")
            .send_following_redirects(max_redirects)?;
        match get.status {
            206 => {
                let size = get
                    .header("content-range")
                    .and_then(parse_content_range)
                    .and_then(|range| range.total);
                let mut info = remote_info(&get, size);
                info.accepts_ranges = true;
                Ok(info)
            }
            200 => {
                let info = remote_info(&get, get.content_length());
                Ok(info)
            }
            status => Err(TransferError::from_http_status(status, &url)),
        }
    }

    fn download(request: DownloadRequest, destination: &Destination) -> Result<(), TransferError> {
        let ranged = request.offset > 0 || request.end.is_some();
        let mut http =
            Request::for_job(Method::Get, &request.url)?.header("accept-encoding", "identity");
        if ranged {
            let range = match request.end {
                Some(end) if end > request.offset => {
                    format!("bytes={}-{}", request.offset, end - 1)
                }
                Some(_) => return Ok(()),
                None => format!("bytes={}-", request.offset),
            };
            http = http.header("range", &range);
            if let Some(validator) = &request.validator {
                http = http.header("if-range", validator_value(validator));
            }
        }
        let response = http.send_following_redirects(job_context().max_redirects)?;
        match response.status {
            206 if ranged => continue_range(request, response, destination),
            200 | 206 => whole_body(request, response, destination),
            status => Err(TransferError::from_http_status(status, &request.url)),
        }
    }

    fn upload(_request: UploadRequest, _source: &Source) -> Result<UploadOutcome, TransferError> {
        Err(unsupported("upload"))
    }

    fn cancel_upload(_url: String, _session: String) -> Result<(), TransferError> {
        Err(unsupported("cancel-upload"))
    }
}

/// A 206 for the range we asked: check its `Content-Range`, then continue.
fn continue_range(
    request: DownloadRequest,
    response: Response,
    destination: &Destination,
) -> Result<(), TransferError> {
    let range = response
        .header("content-range")
        .and_then(parse_content_range);
    let expected_last = request.end.map(|end| end - 1);
    let fits = range.as_ref().is_some_and(|r| {
        r.first == request.offset
            && match (expected_last, r.total) {
                (Some(last), Some(total)) => r.last == last.min(total.saturating_sub(1)),
                (Some(last), None) => r.last == last,
                (None, Some(total)) => r.last + 1 == total,
                (None, None) => true,
            }
    });
    let Some(range) = range.filter(|_| fits) else {
        return Err(TransferError::fatal(
            ErrorContext::RemoteFile,
            "range-mismatch",
            format!(
                "asked {} for bytes {}.. but it answered Content-Range {:?}",
                request.url,
                request.offset,
                response.header("content-range").unwrap_or("(none)")
            ),
        ));
    };
    let mut info = remote_info(&response, range.total);
    info.accepts_ranges = true;
    let sink = destination.begin(&info, request.offset)?;
    response.splice_body(&sink, 0, None)?;
    Ok(())
}

/// A 200: the server sent the whole resource, because it ignores ranges or
/// because the resource changed since the validator was recorded.
fn whole_body(
    request: DownloadRequest,
    response: Response,
    destination: &Destination,
) -> Result<(), TransferError> {
    let info = remote_info(&response, response.content_length());
    match request.end {
        // A whole-file download: start the file over from zero.
        None => {
            let sink = destination.begin(&info, 0)?;
            response.splice_body(&sink, 0, None)?;
            Ok(())
        }
        // One byte range of the resource. If the resource changed, the
        // ranges already held belong to another version: the host restarts
        // the file. Otherwise cut the range out of the full body.
        Some(end) => {
            let changed = match (&request.validator, &info.validator) {
                (Some(recorded), Some(now)) => validator_value(recorded) != validator_value(now),
                _ => false,
            };
            if changed {
                return Err(TransferError::transient(
                    ErrorContext::RemoteFile,
                    "resource-changed",
                    format!("{} changed since its ranges began", request.url),
                ));
            }
            let sink = destination.begin(&info, request.offset)?;
            response.splice_body(&sink, request.offset, Some(end - request.offset))?;
            Ok(())
        }
    }
}

/// A parsed `Content-Range: bytes first-last/total` (`total` may be `*`).
struct ContentRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    Some(ContentRange { first, last, total })
}

fn remote_info(response: &Response, size: Option<u64>) -> RemoteInfo {
    RemoteInfo {
        size,
        validator: validator(response),
        accepts_ranges: response.header("accept-ranges").is_some_and(|v| {
            v.split(',')
                .any(|unit| unit.trim().eq_ignore_ascii_case("bytes"))
        }),
        location: response.url.clone(),
    }
}

/// A strong ETag, else Last-Modified. Weak ETags cannot guard a range.
fn validator(response: &Response) -> Option<Validator> {
    match response.header("etag") {
        Some(tag) if !tag.starts_with("W/") => Some(Validator::Etag(tag.to_string())),
        _ => response
            .header("last-modified")
            .map(|date| Validator::LastModified(date.to_string())),
    }
}

fn validator_value(validator: &Validator) -> &str {
    match validator {
        Validator::Etag(tag) => tag,
        Validator::LastModified(date) => date,
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn unsupported(what: &str) -> TransferError {
    TransferError::fatal(
        ErrorContext::Plugin,
        "unsupported",
        format!("the http plugin does not implement {what}"),
    )
}

ferry_guest_sdk::export_transport!(HttpTransport);
