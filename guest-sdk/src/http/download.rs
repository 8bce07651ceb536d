//! A complete HTTP download: what Ferry's built-in `http` plugin does, for
//! any plugin whose scheme maps onto an `http(s)` URL.

use super::headers::{self, ContentRange};
use super::{Method, Request, Response};
use crate::{Destination, DownloadRequest, JobContext, TransferError};

/// Downloads `request.url` (an `http` or `https` URL) into `destination`,
/// from `request.offset` up to `request.end`, the way the SPEC wants:
///
/// - the request carries the job's headers and credentials, the operator's
///   timeouts, `Accept-Encoding: identity` (bodies are stored as served,
///   never decoded), and follows up to `job.network.max-redirects` redirects
///   (see [`Request::redirected`] for what leaves with them);
/// - a resume (`offset` > 0) asks for `Range: bytes=OFFSET-` guarded by
///   `If-Range` on the recorded validator: a 206 with the expected
///   `Content-Range` continues at `offset`, a 200 (the resource changed, or
///   the server ignores ranges) restarts the file from zero, any other
///   `Content-Range` is a fatal `range-mismatch`;
/// - a resume without a recorded validator cannot prove the bytes held are
///   current, so it restarts from zero without asking for a range;
/// - a resume at the resource's very end is answered `416` with
///   `Content-Range: bytes */OFFSET`: the file is complete, and the download
///   announces it at `offset` and writes nothing;
/// - a byte range (`end` set) asks for `bytes=OFFSET-(END-1)`; a server that
///   sends the whole resource instead (200) has the range cut out of its
///   body, unless the validator changed (a transient `resource-changed`:
///   the host restarts the file);
/// - a 206 to a request without `Range` is a fatal `range-mismatch`;
/// - the body is spliced into the destination, never through plugin memory,
///   and must be exactly as long as declared (`length-mismatch` otherwise);
/// - any other status is [`TransferError::from_http_status`].
///
/// A plugin for another scheme passes the request with its URL rewritten:
///
/// ```no_run
/// # use ferry_guest_sdk::{Destination, DownloadRequest, JobContext, TransferError};
/// # fn f(job: JobContext, request: DownloadRequest, destination: &Destination) -> Result<(), TransferError> {
/// let url = request.url.replacen("mirror://", "http://", 1);
/// ferry_guest_sdk::http::download(&job, &DownloadRequest { url, ..request }, destination)
/// # }
/// ```
pub fn download(
    job: &JobContext,
    request: &DownloadRequest,
    destination: &Destination,
) -> Result<(), TransferError> {
    let plan = Plan::of(request);
    let mut http =
        Request::for_job(job, Method::Get, &request.url)?.header("accept-encoding", "identity");
    if plan.ranged {
        let Some(range) = &plan.range else {
            // A byte range of no bytes: nothing to fetch.
            return Ok(());
        };
        http = http.header("range", range);
        if let Some(validator) = &request.validator {
            http = http.header("if-range", headers::validator_value(validator));
        }
    }
    let response = http.send_following_redirects()?;
    match response.status {
        206 if plan.ranged => continue_range(request, response, destination),
        206 => Err(TransferError::range_mismatch(format!(
            "{} answered 206 Partial Content to a request for the whole resource",
            request.url
        ))),
        200 => whole_body(request, response, destination),
        416 if plan.ranged && request.end.is_none() => {
            already_complete(request, response, destination)
        }
        status => Err(TransferError::from_http_status(status, &request.url)),
    }
}

/// What one download asks the server for.
struct Plan {
    /// Whether the request asks for a byte range.
    ranged: bool,
    /// The `Range` value; none for an empty range.
    range: Option<String>,
}

impl Plan {
    fn of(request: &DownloadRequest) -> Plan {
        let ranged = match request.end {
            Some(_) => true,
            // A resume proves nothing without a validator: start over.
            None => request.offset > 0 && request.validator.is_some(),
        };
        Plan {
            ranged,
            range: if ranged {
                headers::range_value(request.offset, request.end)
            } else {
                None
            },
        }
    }
}

/// A 206 for the range asked: check its `Content-Range`, then continue.
fn continue_range(
    request: &DownloadRequest,
    response: Response,
    destination: &Destination,
) -> Result<(), TransferError> {
    let range = response.content_range();
    let fits = range.is_some_and(|range| answers(request, &range));
    let Some(range) = range.filter(|_| fits) else {
        return Err(TransferError::range_mismatch(format!(
            "asked {} for bytes {}..{} but it answered Content-Range {:?}",
            request.url,
            request.offset,
            request.end.map(|end| end.to_string()).unwrap_or_default(),
            response.header("content-range").unwrap_or("(none)")
        )));
    };
    let mut info = response.remote_info(range.total);
    info.accepts_ranges = true;
    let sink = destination.begin(&info, request.offset)?;
    response.splice_body(&sink, Some(range.len()))?;
    Ok(())
}

/// Whether a 206's `Content-Range` is the range `request` asked for. A
/// range asked past the end of the resource ends at its end.
fn answers(request: &DownloadRequest, range: &ContentRange) -> bool {
    range.first == request.offset
        && match (request.end, range.total) {
            (Some(end), Some(total)) => range.last + 1 == end.min(total),
            (Some(end), None) => range.last + 1 == end,
            (None, Some(total)) => range.last + 1 == total,
            (None, None) => true,
        }
}

/// A 200: the server sent the whole resource, because it ignores ranges,
/// because the resource changed since the validator was recorded, or
/// because the whole resource was asked for.
fn whole_body(
    request: &DownloadRequest,
    response: Response,
    destination: &Destination,
) -> Result<(), TransferError> {
    let size = response.content_length();
    let info = response.remote_info(size);
    let Some(end) = request.end else {
        // A whole-file download: start the file over from zero.
        let sink = destination.begin(&info, 0)?;
        response.splice_body(&sink, size)?;
        return Ok(());
    };
    // One byte range of the resource. If the resource changed, the ranges
    // already held belong to another version: the host restarts the file.
    // Otherwise cut the range out of the full body.
    if let (Some(recorded), Some(now)) = (&request.validator, &info.validator)
        && !headers::same_validator(recorded, now)
    {
        return Err(TransferError::resource_changed(format!(
            "{} changed since its ranges began",
            request.url
        )));
    }
    if let Some(size) = size
        && size < end
    {
        return Err(TransferError::range_mismatch(format!(
            "asked {} for bytes {}..{end} of a resource of {size} bytes",
            request.url, request.offset
        )));
    }
    let sink = destination.begin(&info, request.offset)?;
    response.splice_body_range(&sink, request.offset, end - request.offset)
}

/// A 416 to a resume: when the server says the resource is exactly
/// `offset` bytes long, every byte is already held and the file is complete.
fn already_complete(
    request: &DownloadRequest,
    response: Response,
    destination: &Destination,
) -> Result<(), TransferError> {
    let total = response
        .header("content-range")
        .and_then(headers::unsatisfied_range_total);
    if total != Some(request.offset) {
        return Err(TransferError::from_http_status(416, &request.url));
    }
    let mut info = response.remote_info(total);
    // The server applied the range, so `If-Range` held: the recorded
    // validator is still the resource's when the 416 names none.
    if info.validator.is_none() {
        info.validator = request.validator.clone();
    }
    info.accepts_ranges = true;
    let _sink = destination.begin(&info, request.offset)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Validator;

    fn request(offset: u64, end: Option<u64>, validator: bool) -> DownloadRequest {
        DownloadRequest {
            url: "http://a.example/f".into(),
            offset,
            end,
            validator: validator.then(|| Validator::Etag("\"v1\"".into())),
        }
    }

    #[test]
    fn plans() {
        let plan = |offset, end, validator| {
            let plan = Plan::of(&request(offset, end, validator));
            (plan.ranged, plan.range)
        };
        assert_eq!(plan(0, None, false), (false, None));
        assert_eq!(plan(0, None, true), (false, None));
        assert_eq!(plan(10, None, true), (true, Some("bytes=10-".into())));
        // Nothing proves the bytes held are current: start over, unranged.
        assert_eq!(plan(10, None, false), (false, None));
        assert_eq!(plan(0, Some(5), false), (true, Some("bytes=0-4".into())));
        assert_eq!(plan(3, Some(5), true), (true, Some("bytes=3-4".into())));
        assert_eq!(plan(5, Some(5), true), (true, None));
    }

    #[test]
    fn content_ranges_must_answer_the_request() {
        let range = |v: &str| ContentRange::parse(v).unwrap();
        let resume = request(10, None, true);
        assert!(answers(&resume, &range("bytes 10-99/100")));
        assert!(answers(&resume, &range("bytes 10-99/*")));
        assert!(!answers(&resume, &range("bytes 0-99/100")));
        assert!(!answers(&resume, &range("bytes 10-49/100")));
        let span = request(10, Some(20), true);
        assert!(answers(&span, &range("bytes 10-19/100")));
        assert!(answers(&span, &range("bytes 10-19/*")));
        assert!(!answers(&span, &range("bytes 10-29/100")));
        assert!(!answers(&span, &range("bytes 11-19/100")));
        // Asked past the end: the range ends at the resource's end.
        assert!(answers(&span, &range("bytes 10-14/15")));
        assert!(!answers(&span, &range("bytes 10-13/15")));
    }
}
