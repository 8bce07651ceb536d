//! Broken download transports, for the conformance suite's own tests.
//!
//! One component, several flaws: the URL's scheme picks the flaw, and each
//! manifest in `manifests/` loads the component under one scheme. Apart from
//! its flaw each mode is the SDK's HTTP download (`SCHEME://HOST:PORT/PATH`
//! is `http://HOST:PORT/PATH`), so the suite must fail exactly the checks
//! about that flaw.
//!
//! - `broken-validator`: resumes with `Range` but without `If-Range` (with
//!   or without a validator), and continues at the offset whatever the
//!   resource became;
//! - `broken-redirect`: probes where a redirect leads, and when the host
//!   refuses the target (an ungranted host), stores the redirect's own body
//!   as the file and reports success;
//! - `broken-drop`: reports a dropped connection as a success;
//! - `broken-503`: maps 503 Service Unavailable as fatal;
//! - `broken-credentials`: follows redirects itself, sending the owner's
//!   credentials and headers to every host;
//! - `broken-panic`: panics (for the host's trap messages, not the suite);
//! - `broken-loop`: asks for the size first (`HEAD`) and, when the server
//!   gives none, spins forever waiting for it.

use ferry_guest_sdk::http::{Method, Request, headers};
use ferry_guest_sdk::{
    Destination, Download, DownloadRequest, ErrorClass, ErrorCode, ErrorContext, JobContext,
    TransferError,
};

struct Broken;

impl Download for Broken {
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        let (scheme, rest) = request.url.split_once("://").unwrap_or(("", ""));
        let flaw = scheme.to_string();
        let request = DownloadRequest {
            url: format!("http://{rest}"),
            ..request
        };
        match flaw.as_str() {
            "broken-validator" if request.offset > 0 && request.end.is_none() => {
                resume_blindly(&job, &request, destination)
            }
            "broken-redirect" => store_refused_redirect(&job, &request, destination),
            "broken-drop" => match ferry_guest_sdk::http::download(&job, &request, destination) {
                Err(e) if matches!(e.code, ErrorCode::ConnectionDropped) => Ok(()),
                other => other,
            },
            "broken-503" => {
                ferry_guest_sdk::http::download(&job, &request, destination).map_err(|mut e| {
                    if e.http_status == Some(503) {
                        e.class = ErrorClass::Fatal;
                    }
                    e
                })
            }
            "broken-credentials" => forward_credentials(&job, &request, destination),
            "broken-panic" => panic!(
                "the broken-panic plugin panics on purpose at {}",
                request.url
            ),
            "broken-loop" => {
                let head = Request::for_job(&job, Method::Head, &request.url)?.send()?;
                if head.status == 200 && head.content_length().is_none() {
                    spin();
                }
                drop(head);
                ferry_guest_sdk::http::download(&job, &request, destination)
            }
            _ => ferry_guest_sdk::http::download(&job, &request, destination),
        }
    }
}

/// Waits for a length that never comes, without returning to the host.
fn spin() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// A resume that asks for the rest without proving the resource unchanged
/// (no `If-Range`), and without a validator too. Everything else is checked.
fn resume_blindly(
    job: &JobContext,
    request: &DownloadRequest,
    destination: &Destination,
) -> Result<(), TransferError> {
    let response = Request::for_job(job, Method::Get, &request.url)?
        .header("accept-encoding", "identity")
        .header("range", &format!("bytes={}-", request.offset))
        .send_following_redirects()?;
    match response.status {
        206 => {
            let range = response.content_range();
            let Some(range) = range.filter(|r| r.first == request.offset) else {
                return Err(TransferError::range_mismatch("another range than asked"));
            };
            let info = response.remote_info(range.total);
            let sink = destination.begin(&info, request.offset)?;
            response.splice_body(&sink, Some(range.len())).map(drop)
        }
        200 => {
            let size = response.content_length();
            let info = response.remote_info(size);
            let sink = destination.begin(&info, 0)?;
            response.splice_body(&sink, size).map(drop)
        }
        416 => {
            let total = response
                .header("content-range")
                .and_then(headers::unsatisfied_range_total);
            if total != Some(request.offset) {
                return Err(TransferError::from_http_status(416, &request.url));
            }
            let info = response.remote_info(total);
            destination.begin(&info, request.offset).map(drop)
        }
        status => Err(TransferError::from_http_status(status, &request.url)),
    }
}

/// Probes where a redirect leads (`HEAD`); when the host refuses the
/// target, stores the redirect's own body as the file.
fn store_refused_redirect(
    job: &JobContext,
    request: &DownloadRequest,
    destination: &Destination,
) -> Result<(), TransferError> {
    let probe = Request::new(Method::Head, &request.url)?;
    let head = probe.send()?;
    let location = head.header("location").map(str::to_string);
    let status = head.status;
    drop(head);
    if let (300..=399, Some(location)) = (status, location) {
        let next = probe.redirected(status, &location)?;
        if let Err(e) = next.send()
            && matches!(e.code, ErrorCode::HostNotGranted)
        {
            let response = Request::for_job(job, Method::Get, &request.url)?.send()?;
            let size = response.content_length();
            let info = response.remote_info(size);
            let sink = destination.begin(&info, 0)?;
            return response.splice_body(&sink, size).map(drop);
        }
    }
    ferry_guest_sdk::http::download(job, request, destination)
}

/// Follows redirects with a fresh request for the job at every hop, so the
/// owner's credentials and headers go wherever the redirects lead.
fn forward_credentials(
    job: &JobContext,
    request: &DownloadRequest,
    destination: &Destination,
) -> Result<(), TransferError> {
    if request.offset > 0 || request.end.is_some() {
        return ferry_guest_sdk::http::download(job, request, destination);
    }
    let mut url = request.url.clone();
    for _ in 0..=job.network.max_redirects {
        let response = Request::for_job(job, Method::Get, &url)?
            .header("accept-encoding", "identity")
            .send()?;
        if let (300..=399, Some(location)) = (response.status, response.header("location")) {
            url = Request::new(Method::Get, &url)?
                .redirected(response.status, location)?
                .url()
                .to_string();
            continue;
        }
        if response.status == 206 {
            return Err(TransferError::range_mismatch(
                "a 206 to a request without Range",
            ));
        }
        if response.status != 200 {
            return Err(TransferError::from_http_status(response.status, &url));
        }
        let size = response.content_length();
        let info = response.remote_info(size);
        let sink = destination.begin(&info, 0)?;
        return response.splice_body(&sink, size).map(drop);
    }
    Err(TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::RemoteApplication,
        "too-many-redirects",
        format!("more than {} redirects", job.network.max_redirects),
    ))
}

ferry_guest_sdk::export_download!(Broken);
