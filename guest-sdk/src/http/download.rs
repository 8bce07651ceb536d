//! A complete HTTP download: what Ferry's built-in `http` plugin does, for
//! any plugin whose scheme maps onto an `http(s)` URL.

use super::{Method, Request, Response, headers};
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
    let fits = range.is_some_and(|r| {
        r.first == request.offset
            && match (request.end, r.total) {
                // A range past the end of the resource ends at its end.
                (Some(end), Some(total)) => r.last + 1 == end.min(total),
                (Some(end), None) => r.last + 1 == end,
                (None, Some(total)) => r.last + 1 == total,
                (None, None) => true,
            }
    });
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
