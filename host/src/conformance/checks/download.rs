//! Downloads: whole files, resume guarded by the validator, byte ranges,
//! exact lengths, status mapping, redirects and what crosses origins, slow
//! and broken servers, cancellation.

use super::{check, expect, failed_with, holds, pattern, succeeded};
use crate::conformance::server::{Ending, Resource, Route};
use crate::conformance::{Check, Ctx, Dl, Verdict};
use crate::error::ErrorClass;
use crate::plugin::{Credentials, DownloadRequest, JobContext, Validator};
use std::time::Duration;

const SIZE: usize = 256 << 10;
const HALF: usize = SIZE / 2;
const ETAG: &str = "\"v1\"";
const DATE: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

pub fn checks() -> Vec<Check> {
    vec![
        check!(
            "download.whole-file",
            Download,
            "A whole file is fetched with one GET of the mapped URL and stored byte for byte.",
            whole_file
        ),
        check!(
            "download.reports-size",
            Download,
            "The size announced to the host is the Content-Length.",
            reports_size
        ),
        check!(
            "download.records-etag",
            Download,
            "A strong ETag is recorded as the validator, quotes included.",
            records_etag
        ),
        check!(
            "download.records-last-modified",
            Download,
            "Without an ETag, Last-Modified is recorded as the validator.",
            records_last_modified
        ),
        check!(
            "download.weak-etag-not-validator",
            Download,
            "A weak ETag is never the validator (Last-Modified is used instead).",
            weak_etag
        ),
        check!(
            "download.reports-ranges",
            Download,
            "Accept-Ranges: bytes is reported as range support.",
            reports_ranges
        ),
        check!(
            "download.empty-file",
            Download,
            "A resource of zero bytes downloads as an empty file.",
            empty_file
        ),
        check!(
            "download.no-content-decoding",
            Download,
            "A body with Content-Encoding: gzip is stored as served, not decoded.",
            no_decoding
        ),
        check!(
            "download.asks-no-encoding",
            Download,
            "Requests ask for no content coding (Accept-Encoding absent or identity).",
            asks_no_encoding
        ),
        check!(
            "download.query-kept",
            Download,
            "The URL's query reaches the server unchanged.",
            query_kept
        ),
        check!(
            "download.encoded-path-kept",
            Download,
            "A percent-encoded path reaches the server unchanged.",
            encoded_path_kept
        ),
        check!(
            "download.no-length",
            Download,
            "A body without Content-Length (chunked) downloads whole.",
            no_length
        ),
        check!(
            "download.resume-etag",
            Download,
            "A resume with an ETag continues at the offset and completes the file.",
            resume_etag
        ),
        check!(
            "download.resume-range-header",
            Download,
            "A resume asks for Range: bytes=OFFSET-.",
            resume_range_header
        ),
        check!(
            "download.resume-if-range-etag",
            Download,
            "A resume guards the range with If-Range: the recorded ETag.",
            resume_if_range_etag
        ),
        check!(
            "download.resume-if-range-date",
            Download,
            "A resume guards the range with If-Range: the recorded Last-Modified.",
            resume_if_range_date
        ),
        check!(
            "download.resume-changed-restarts",
            Download,
            "A resource whose validator changed restarts from zero and ends as the new content.",
            resume_changed
        ),
        check!(
            "download.resume-no-range-support",
            Download,
            "A server that ignores ranges (200) restarts the file from zero.",
            resume_no_ranges
        ),
        check!(
            "download.resume-without-validator",
            Download,
            "A resume without a validator cannot trust the bytes held: the file ends as the current content.",
            resume_without_validator
        ),
        check!(
            "download.resume-at-end",
            Download,
            "A resume at the resource's end (416, bytes */SIZE) completes without writing.",
            resume_at_end
        ),
        check!(
            "download.resume-wrong-content-range",
            Download,
            "A 206 whose Content-Range starts elsewhere is a fatal range-mismatch.",
            resume_wrong_range
        ),
        check!(
            "download.unrequested-206",
            Download,
            "A 206 to a request for the whole resource is a fatal range-mismatch.",
            unrequested_206
        ),
        check!(
            "download.range-subset",
            Download,
            "A byte range (offset, end) stores exactly those bytes.",
            range_subset
        ),
        check!(
            "download.range-header",
            Download,
            "A byte range asks for Range: bytes=OFFSET-(END-1).",
            range_header
        ),
        check!(
            "download.range-no-range-support",
            Download,
            "A byte range from a server without ranges is cut out of the whole body.",
            range_no_ranges
        ),
        check!(
            "download.range-past-end",
            Download,
            "A byte range past the resource's end stores the bytes up to the end.",
            range_past_end
        ),
        check!(
            "download.range-wrong-content-range",
            Download,
            "A byte range answered with another Content-Range is a fatal range-mismatch.",
            range_wrong_range
        ),
        check!(
            "download.range-changed",
            Download,
            "A byte range of a resource whose validator changed is a transient resource-changed.",
            range_changed
        ),
        check!(
            "download.short-body",
            Download,
            "A body that ends before its Content-Length is a transient error, not a success.",
            short_body
        ),
        check!(
            "download.short-chunked-range",
            Download,
            "A chunked 206 body shorter than its Content-Range is a transient length-mismatch.",
            short_chunked_range
        ),
        check!(
            "download.long-chunked-range",
            Download,
            "A chunked 206 body longer than its Content-Range is a transient length-mismatch.",
            long_chunked_range
        ),
        check!(
            "download.dropped-connection",
            Download,
            "A connection reset mid-body is a transient error; the bytes written are the served prefix.",
            dropped
        ),
        check!(
            "download.dropped-chunked",
            Download,
            "A chunked body cut off by a reset (no last chunk) is a transient error, not a success.",
            dropped_chunked
        ),
        check!(
            "download.closed-chunked",
            Download,
            "A chunked body cut off cleanly (FIN, no last chunk) is a transient error, not a success.",
            closed_chunked
        ),
        check!(
            "download.dropped-then-resumed",
            Download,
            "After a dropped connection, a resume from the bytes written completes the file.",
            dropped_then_resumed
        ),
        check!(
            "download.slow-body",
            Download,
            "A slowly trickling body downloads whole (the plugin waits on the host, not in a busy loop).",
            slow_body
        ),
        check!(
            "download.slow-head",
            Download,
            "A server slow to send its response head is waited for.",
            slow_head
        ),
        check!(
            "download.cancelled",
            Download,
            "A cancelled call ends with cancelled.",
            cancelled
        ),
        check!(
            "download.connection-refused",
            Download,
            "A connection refused is a transient error.",
            connection_refused
        ),
        check!(
            "download.status-400",
            Download,
            "400 is a fatal http-status error.",
            status,
            400
        ),
        check!(
            "download.status-401",
            Download,
            "401 is a fatal http-status error.",
            status,
            401
        ),
        check!(
            "download.status-403",
            Download,
            "403 is a fatal http-status error.",
            status,
            403
        ),
        check!(
            "download.status-404",
            Download,
            "404 is a fatal http-status error.",
            status,
            404
        ),
        check!(
            "download.status-408",
            Download,
            "408 is a transient http-status error.",
            status,
            408
        ),
        check!(
            "download.status-409",
            Download,
            "409 is a transient http-status error.",
            status,
            409
        ),
        check!(
            "download.status-410",
            Download,
            "410 is a fatal http-status error.",
            status,
            410
        ),
        check!(
            "download.status-416",
            Download,
            "416 to a whole-file request is a fatal http-status error.",
            status,
            416
        ),
        check!(
            "download.status-425",
            Download,
            "425 is a transient http-status error.",
            status,
            425
        ),
        check!(
            "download.status-429",
            Download,
            "429 is a transient http-status error.",
            status,
            429
        ),
        check!(
            "download.status-500",
            Download,
            "500 is a transient http-status error.",
            status,
            500
        ),
        check!(
            "download.status-501",
            Download,
            "501 is a fatal http-status error.",
            status,
            501
        ),
        check!(
            "download.status-502",
            Download,
            "502 is a transient http-status error.",
            status,
            502
        ),
        check!(
            "download.status-503",
            Download,
            "503 is a transient http-status error.",
            status,
            503
        ),
        check!(
            "download.status-504",
            Download,
            "504 is a transient http-status error.",
            status,
            504
        ),
        check!(
            "download.status-505",
            Download,
            "505 is a fatal http-status error.",
            status,
            505
        ),
        check!(
            "download.redirect-301",
            Download,
            "A 301 on the same origin is followed.",
            redirect,
            301
        ),
        check!(
            "download.redirect-302",
            Download,
            "A 302 on the same origin is followed.",
            redirect,
            302
        ),
        check!(
            "download.redirect-303",
            Download,
            "A 303 on the same origin is followed with a GET.",
            redirect,
            303
        ),
        check!(
            "download.redirect-307",
            Download,
            "A 307 on the same origin is followed.",
            redirect,
            307
        ),
        check!(
            "download.redirect-308",
            Download,
            "A 308 on the same origin is followed.",
            redirect,
            308
        ),
        check!(
            "download.redirect-relative",
            Download,
            "A relative Location is resolved against the request's URL.",
            redirect_relative
        ),
        check!(
            "download.redirect-cross-origin",
            Download,
            "A redirect to another granted origin is followed.",
            redirect_cross_origin
        ),
        check!(
            "download.redirect-limit",
            Download,
            "No more redirects are followed than the job's max-redirects.",
            redirect_limit
        ),
        check!(
            "download.redirect-without-location",
            Download,
            "A 302 without Location is an error, not a success.",
            redirect_without_location
        ),
        check!(
            "download.redirect-ungranted",
            Download,
            "A redirect to an ungranted host ends in host-not-granted, with nothing stored.",
            redirect_ungranted
        ),
        check!(
            "download.redirect-location-reported",
            Download,
            "The location reported is where the resource was found after redirects.",
            location_reported
        ),
        check!(
            "download.credentials-basic",
            Download,
            "Basic credentials are sent as Authorization: Basic.",
            credentials_basic
        ),
        check!(
            "download.credentials-bearer",
            Download,
            "A bearer token is sent as Authorization: Bearer.",
            credentials_bearer
        ),
        check!(
            "download.owner-headers-sent",
            Download,
            "The job owner's headers are sent to the origin.",
            owner_headers_sent
        ),
        check!(
            "download.credentials-kept-same-origin",
            Download,
            "Credentials follow a redirect on the same origin.",
            credentials_same_origin
        ),
        check!(
            "download.credentials-dropped-cross-origin",
            Download,
            "Credentials are not sent to another origin after a redirect.",
            credentials_cross_origin
        ),
        check!(
            "download.owner-headers-dropped-cross-origin",
            Download,
            "The owner's headers and Cookie are not sent to another origin after a redirect.",
            owner_headers_cross_origin
        ),
        check!(
            "download.credentials-dropped-for-good",
            Download,
            "Once a redirect left the origin, credentials are not sent again, even back on the origin.",
            credentials_for_good
        ),
    ]
}

fn job() -> JobContext {
    JobContext::new("conformance")
}

fn request(
    url: String,
    offset: u64,
    end: Option<u64>,
    validator: Option<Validator>,
) -> DownloadRequest {
    DownloadRequest {
        url,
        offset,
        end,
        validator,
    }
}

/// Serves `resource` at `path` on server a and downloads it whole.
async fn whole(cx: &Ctx, path: &str, resource: Resource) -> Dl {
    cx.a.route(path, Route::Resource(resource));
    cx.download(request(cx.url(&cx.a, path), 0, None, None), &job(), &[], 0)
        .await
}

fn etag() -> Option<Validator> {
    Some(Validator::Etag(ETAG.into()))
}

/// The requests server a received for `path` (the query aside).
fn gets(cx: &Ctx, path: &str) -> Vec<crate::conformance::server::Recorded> {
    cx.a.requests()
        .into_iter()
        .filter(|r| r.target.split('?').next() == Some(path))
        .collect()
}

fn last_header(cx: &Ctx, path: &str, name: &str) -> Option<String> {
    gets(cx, path)
        .last()
        .and_then(|r| r.header(name).map(str::to_string))
}

async fn whole_file(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 1);
    let dl = whole(cx, "/whole.bin", Resource::new(body.clone())).await;
    holds(&dl, &body)?;
    let requests = gets(cx, "/whole.bin");
    expect(
        requests.iter().filter(|r| r.method == "GET").count() == 1,
        "exactly one GET of /whole.bin",
        || format!("{} requests of it", requests.len()),
    )
}

async fn reports_size(cx: &Ctx, _: u64) -> Verdict {
    let dl = whole(cx, "/size.bin", Resource::new(pattern(SIZE, 2))).await;
    succeeded(&dl)?;
    let size = dl.remote.as_ref().and_then(|r| r.size);
    expect(size == Some(SIZE as u64), format!("size {SIZE}"), || {
        format!("size {size:?}")
    })
}

async fn records_etag(cx: &Ctx, _: u64) -> Verdict {
    let dl = whole(cx, "/etag.bin", Resource::new(pattern(1000, 3))).await;
    succeeded(&dl)?;
    let validator = dl.remote.and_then(|r| r.validator);
    expect(
        validator == etag(),
        format!("validator ETag {ETAG}"),
        || format!("{validator:?}"),
    )
}

async fn records_last_modified(cx: &Ctx, _: u64) -> Verdict {
    let resource = Resource {
        etag: None,
        ..Resource::new(pattern(1000, 4))
    };
    let dl = whole(cx, "/date.bin", resource).await;
    succeeded(&dl)?;
    let validator = dl.remote.and_then(|r| r.validator);
    expect(
        validator == Some(Validator::LastModified(DATE.into())),
        format!("validator Last-Modified {DATE}"),
        || format!("{validator:?}"),
    )
}

async fn weak_etag(cx: &Ctx, _: u64) -> Verdict {
    let resource = Resource {
        etag: Some("W/\"w1\"".into()),
        ..Resource::new(pattern(1000, 5))
    };
    let dl = whole(cx, "/weak.bin", resource).await;
    succeeded(&dl)?;
    let validator = dl.remote.and_then(|r| r.validator);
    expect(
        validator == Some(Validator::LastModified(DATE.into())),
        "the Last-Modified date as validator, not the weak ETag",
        || format!("{validator:?}"),
    )
}

async fn reports_ranges(cx: &Ctx, _: u64) -> Verdict {
    let dl = whole(cx, "/ranges.bin", Resource::new(pattern(1000, 6))).await;
    succeeded(&dl)?;
    let ranges = dl.remote.as_ref().map(|r| r.accepts_ranges);
    expect(ranges == Some(true), "accepts-ranges true", || {
        format!("{ranges:?}")
    })
}

async fn empty_file(cx: &Ctx, _: u64) -> Verdict {
    let dl = whole(cx, "/empty.bin", Resource::new(Vec::new())).await;
    holds(&dl, &[])
}

async fn no_decoding(cx: &Ctx, _: u64) -> Verdict {
    // A gzip member's header and some bytes: stored as served.
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
    body.extend(pattern(4000, 7));
    let resource = Resource {
        headers: vec![("content-encoding".into(), "gzip".into())],
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/coded.bin", resource).await;
    holds(&dl, &body)
}

async fn asks_no_encoding(cx: &Ctx, _: u64) -> Verdict {
    let dl = whole(cx, "/plain.bin", Resource::new(pattern(1000, 8))).await;
    succeeded(&dl)?;
    let asked = last_header(cx, "/plain.bin", "accept-encoding");
    expect(
        asked
            .as_deref()
            .is_none_or(|v| v.trim().eq_ignore_ascii_case("identity")),
        "no Accept-Encoding, or identity",
        || format!("Accept-Encoding: {}", asked.unwrap_or_default()),
    )
}

async fn query_kept(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(1000, 9);
    cx.a.route("/query.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/query.bin?x=1&y=two"), 0, None, None),
            &job(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let target = gets(cx, "/query.bin").last().map(|r| r.target.clone());
    expect(
        target.as_deref() == Some("/query.bin?x=1&y=two"),
        "the request target /query.bin?x=1&y=two",
        || format!("{target:?}"),
    )
}

async fn encoded_path_kept(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(1000, 10);
    let dl = whole(cx, "/dir/a%20b.bin", Resource::new(body.clone())).await;
    holds(&dl, &body)
}

async fn no_length(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 11);
    let resource = Resource {
        length: false,
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/chunked.bin", resource).await;
    holds(&dl, &body)
}

/// Serves `body` at `path` and resumes it from `at` with `validator`.
async fn resume(
    cx: &Ctx,
    path: &str,
    resource: Resource,
    held: &[u8],
    validator: Option<Validator>,
) -> Dl {
    cx.a.route(path, Route::Resource(resource));
    let at = held.len() as u64;
    cx.download(
        request(cx.url(&cx.a, path), at, None, validator),
        &job(),
        held,
        at,
    )
    .await
}

async fn resume_etag(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 12);
    let dl = resume(
        cx,
        "/resume.bin",
        Resource::new(body.clone()),
        &body[..HALF],
        etag(),
    )
    .await;
    holds(&dl, &body)?;
    expect(!dl.restarted, "the file continued at the offset", || {
        "the file was restarted from zero".into()
    })
}

async fn resume_range_header(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 13);
    let dl = resume(
        cx,
        "/range.bin",
        Resource::new(body.clone()),
        &body[..HALF],
        etag(),
    )
    .await;
    holds(&dl, &body)?;
    let range = last_header(cx, "/range.bin", "range");
    expect(
        range.as_deref() == Some(&format!("bytes={HALF}-")),
        format!("Range: bytes={HALF}-"),
        || format!("Range: {range:?}"),
    )
}

async fn resume_if_range_etag(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 14);
    let dl = resume(
        cx,
        "/ifr.bin",
        Resource::new(body.clone()),
        &body[..HALF],
        etag(),
    )
    .await;
    holds(&dl, &body)?;
    let value = last_header(cx, "/ifr.bin", "if-range");
    expect(
        value.as_deref() == Some(ETAG),
        format!("If-Range: {ETAG}"),
        || format!("If-Range: {value:?}"),
    )
}

async fn resume_if_range_date(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 15);
    let resource = Resource {
        etag: None,
        ..Resource::new(body.clone())
    };
    let validator = Some(Validator::LastModified(DATE.into()));
    let dl = resume(cx, "/ifd.bin", resource, &body[..HALF], validator).await;
    holds(&dl, &body)?;
    let value = last_header(cx, "/ifd.bin", "if-range");
    expect(
        value.as_deref() == Some(DATE),
        format!("If-Range: {DATE}"),
        || format!("If-Range: {value:?}"),
    )
}

async fn resume_changed(cx: &Ctx, _: u64) -> Verdict {
    let old = pattern(SIZE, 16);
    let new = pattern(SIZE, 17);
    let resource = Resource {
        etag: Some("\"v2\"".into()),
        ..Resource::new(new.clone())
    };
    let dl = resume(cx, "/changed.bin", resource, &old[..HALF], etag()).await;
    holds(&dl, &new)
}

async fn resume_no_ranges(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 18);
    let resource = Resource {
        ranges: false,
        ..Resource::new(body.clone())
    };
    let dl = resume(cx, "/noranges.bin", resource, &body[..HALF], etag()).await;
    holds(&dl, &body)
}

async fn resume_without_validator(cx: &Ctx, _: u64) -> Verdict {
    let old = pattern(SIZE, 19);
    let new = pattern(SIZE, 20);
    let resource = Resource {
        etag: Some("\"v2\"".into()),
        last_modified: None,
        ..Resource::new(new.clone())
    };
    let dl = resume(cx, "/novalidator.bin", resource, &old[..HALF], None).await;
    holds(&dl, &new)
}

async fn resume_at_end(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 21);
    let dl = resume(cx, "/atend.bin", Resource::new(body.clone()), &body, etag()).await;
    holds(&dl, &body)
}

async fn resume_wrong_range(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 22);
    let resource = Resource {
        wrong_range: Some(format!("bytes 0-{}/{SIZE}", SIZE - HALF - 1)),
        ..Resource::new(body.clone())
    };
    let dl = resume(cx, "/wrongrange.bin", resource, &body[..HALF], etag()).await;
    failed_with(&dl.result, &["range-mismatch"], Some(ErrorClass::Fatal))
}

async fn unrequested_206(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(1000, 23);
    let resource = Resource {
        force_status: Some(206),
        wrong_range: Some("bytes 10-1009/5000".into()),
        ..Resource::new(body)
    };
    let dl = whole(cx, "/unasked.bin", resource).await;
    failed_with(&dl.result, &["range-mismatch"], Some(ErrorClass::Fatal))
}

/// Serves `resource` at `path` and downloads bytes `offset..end` of it
/// into an empty file.
async fn ranged(
    cx: &Ctx,
    path: &str,
    resource: Resource,
    offset: u64,
    end: u64,
    validator: Option<Validator>,
) -> Dl {
    cx.a.route(path, Route::Resource(resource));
    cx.download(
        request(cx.url(&cx.a, path), offset, Some(end), validator),
        &job(),
        &[],
        0,
    )
    .await
}

async fn range_subset(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 24);
    let dl = ranged(
        cx,
        "/sub.bin",
        Resource::new(body.clone()),
        1000,
        5000,
        etag(),
    )
    .await;
    holds(&dl, &body[1000..5000])
}

async fn range_header(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 25);
    let dl = ranged(
        cx,
        "/subh.bin",
        Resource::new(body.clone()),
        1000,
        5000,
        etag(),
    )
    .await;
    holds(&dl, &body[1000..5000])?;
    let range = last_header(cx, "/subh.bin", "range");
    expect(
        range.as_deref() == Some("bytes=1000-4999"),
        "Range: bytes=1000-4999",
        || format!("Range: {range:?}"),
    )
}

async fn range_no_ranges(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 26);
    let resource = Resource {
        ranges: false,
        ..Resource::new(body.clone())
    };
    let dl = ranged(cx, "/subnr.bin", resource, 1000, 5000, etag()).await;
    holds(&dl, &body[1000..5000])
}

async fn range_past_end(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(10_000, 27);
    let dl = ranged(
        cx,
        "/subend.bin",
        Resource::new(body.clone()),
        9000,
        20_000,
        etag(),
    )
    .await;
    holds(&dl, &body[9000..])
}

async fn range_wrong_range(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 28);
    let resource = Resource {
        wrong_range: Some(format!("bytes 1001-5000/{SIZE}")),
        ..Resource::new(body)
    };
    let dl = ranged(cx, "/subwrong.bin", resource, 1000, 5000, etag()).await;
    failed_with(&dl.result, &["range-mismatch"], Some(ErrorClass::Fatal))
}

async fn range_changed(cx: &Ctx, _: u64) -> Verdict {
    let resource = Resource {
        etag: Some("\"v2\"".into()),
        ..Resource::new(pattern(SIZE, 29))
    };
    let dl = ranged(cx, "/subchanged.bin", resource, 1000, 5000, etag()).await;
    failed_with(
        &dl.result,
        &["resource-changed"],
        Some(ErrorClass::Transient),
    )
}

/// The call failed transiently, and what it wrote is a prefix of `body`
/// no longer than `sent`.
fn broken_off(dl: &Dl, body: &[u8], sent: usize) -> Verdict {
    failed_with(
        &dl.result,
        &["connection-dropped", "length-mismatch"],
        Some(ErrorClass::Transient),
    )?;
    expect(
        dl.content.len() <= sent && body.starts_with(&dl.content),
        format!("at most the {sent} bytes served, as served"),
        || super::content_difference(&dl.content, &body[..sent]),
    )
}

async fn short_body(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 30);
    let resource = Resource {
        ending: Ending::CloseAfter(HALF),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/short.bin", resource).await;
    broken_off(&dl, &body, HALF)
}

async fn short_chunked_range(cx: &Ctx, _: u64) -> Verdict {
    // Bytes 0-4999 asked and announced, 4,000 sent chunked, ending cleanly.
    let resource = Resource {
        length: false,
        truncate: Some(4000),
        ..Resource::new(pattern(SIZE, 31))
    };
    let dl = ranged(cx, "/shortspan.bin", resource, 0, 5000, etag()).await;
    failed_with(
        &dl.result,
        &["length-mismatch"],
        Some(ErrorClass::Transient),
    )
}

async fn long_chunked_range(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 32);
    let resource = Resource {
        length: false,
        extra: 1000,
        ..Resource::new(body)
    };
    let dl = ranged(cx, "/longspan.bin", resource, 0, 5000, etag()).await;
    failed_with(
        &dl.result,
        &["length-mismatch"],
        Some(ErrorClass::Transient),
    )
}

async fn dropped(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 33);
    let resource = Resource {
        ending: Ending::ResetAfter(HALF),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/dropped.bin", resource).await;
    broken_off(&dl, &body, HALF)
}

async fn dropped_chunked(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 34);
    let resource = Resource {
        length: false,
        ending: Ending::ResetAfter(HALF),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/droppedchunked.bin", resource).await;
    failed_with(
        &dl.result,
        &["connection-dropped", "length-mismatch"],
        Some(ErrorClass::Transient),
    )
}

async fn closed_chunked(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 35);
    let resource = Resource {
        length: false,
        ending: Ending::CloseAfter(HALF),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/closedchunked.bin", resource).await;
    failed_with(
        &dl.result,
        &["connection-dropped", "length-mismatch"],
        Some(ErrorClass::Transient),
    )
}

async fn dropped_then_resumed(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(SIZE, 36);
    let resource = Resource {
        ending: Ending::ResetAfter(HALF),
        ..Resource::new(body.clone())
    };
    let first = whole(cx, "/again.bin", resource).await;
    broken_off(&first, &body, HALF)?;
    cx.a.update("/again.bin", |r| r.ending = Ending::Whole);
    let validator = first.remote.as_ref().and_then(|r| r.validator.clone());
    let held = first.content.clone();
    let at = held.len() as u64;
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/again.bin"), at, None, validator),
            &job(),
            &held,
            at,
        )
        .await;
    holds(&dl, &body)
}

async fn slow_body(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(64 << 10, 37);
    let resource = Resource {
        slow: Some((4 << 10, Duration::from_millis(15))),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/slow.bin", resource).await;
    holds(&dl, &body)
}

async fn slow_head(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(1000, 38);
    let resource = Resource {
        head_delay: Some(Duration::from_millis(300)),
        ..Resource::new(body.clone())
    };
    let dl = whole(cx, "/slowhead.bin", resource).await;
    holds(&dl, &body)
}

async fn cancelled(cx: &Ctx, _: u64) -> Verdict {
    let resource = Resource {
        slow: Some((1024, Duration::from_millis(20))),
        ..Resource::new(pattern(1 << 20, 39))
    };
    cx.a.route("/cancel.bin", Route::Resource(resource));
    let job = job();
    let cancel = job.cancel.clone();
    let url = cx.url(&cx.a, "/cancel.bin");
    let download = cx.download(request(url, 0, None, None), &job, &[], 0);
    let canceller = async {
        // Cancel once the plugin's request reached the server.
        while cx.a.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    };
    let (dl, ()) = tokio::join!(download, canceller);
    failed_with(&dl.result, &["cancelled"], None)
}

async fn connection_refused(cx: &Ctx, _: u64) -> Verdict {
    let url = cx.url_at(cx.closed_port, "/nothing.bin");
    let dl = cx
        .download(request(url, 0, None, None), &job(), &[], 0)
        .await;
    failed_with(&dl.result, &[], Some(ErrorClass::Transient))
}

async fn status(cx: &Ctx, code: u64) -> Verdict {
    let code = code as u16;
    let path = format!("/status-{code}");
    cx.a.route(&path, Route::Status(code));
    let dl = cx
        .download(request(cx.url(&cx.a, &path), 0, None, None), &job(), &[], 0)
        .await;
    let transient =
        matches!(code, 408 | 409 | 425 | 429) || (code >= 500 && !matches!(code, 501 | 505));
    let class = if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Fatal
    };
    failed_with(&dl.result, &["http-status"], Some(class))?;
    let status = dl.result.as_ref().err().and_then(|e| e.http_status);
    expect(status == Some(code), format!("http-status {code}"), || {
        format!("http-status {status:?}")
    })?;
    expect(dl.content.is_empty(), "nothing stored", || {
        format!("{} bytes stored (the error page?)", dl.content.len())
    })
}

async fn redirect(cx: &Ctx, code: u64) -> Verdict {
    let body = pattern(5000, 40);
    let from = format!("/moved-{code}");
    cx.a.route(
        &from,
        Route::Redirect(code as u16, Some(cx.a.http_url("/final.bin"))),
    );
    cx.a.route("/final.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(request(cx.url(&cx.a, &from), 0, None, None), &job(), &[], 0)
        .await;
    holds(&dl, &body)?;
    let method = gets(cx, "/final.bin").last().map(|r| r.method.clone());
    expect(
        method.as_deref() == Some("GET"),
        "a GET of /final.bin",
        || format!("{method:?}"),
    )
}

async fn redirect_relative(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(5000, 41);
    cx.a.route(
        "/dir/rel",
        Route::Redirect(302, Some("../final-rel.bin".into())),
    );
    cx.a.route(
        "/final-rel.bin",
        Route::Resource(Resource::new(body.clone())),
    );
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/dir/rel"), 0, None, None),
            &job(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)
}

/// Redirects `/away` on server a to `/there.bin` on server b and downloads
/// it for `job`.
async fn away(cx: &Ctx, job: &JobContext) -> Dl {
    let body = pattern(5000, 42);
    cx.a.route(
        "/away",
        Route::Redirect(302, Some(cx.b.http_url("/there.bin"))),
    );
    cx.b.route("/there.bin", Route::Resource(Resource::new(body)));
    cx.download(request(cx.url(&cx.a, "/away"), 0, None, None), job, &[], 0)
        .await
}

async fn redirect_cross_origin(cx: &Ctx, _: u64) -> Verdict {
    let dl = away(cx, &job()).await;
    holds(&dl, &pattern(5000, 42))
}

async fn redirect_limit(cx: &Ctx, _: u64) -> Verdict {
    for hop in 0..6 {
        cx.a.route(
            &format!("/hop{hop}"),
            Route::Redirect(302, Some(cx.a.http_url(&format!("/hop{}", hop + 1)))),
        );
    }
    cx.a.route("/hop6", Route::Resource(Resource::new(pattern(100, 43))));
    let mut job = job();
    job.max_redirects = 2;
    let dl = cx
        .download(request(cx.url(&cx.a, "/hop0"), 0, None, None), &job, &[], 0)
        .await;
    failed_with(&dl.result, &[], None)?;
    let asked = cx.a.requests().iter().filter(|r| r.method == "GET").count();
    expect(asked <= 3, "at most 3 GETs (max-redirects 2)", || {
        format!("{asked} GETs")
    })
}

async fn redirect_without_location(cx: &Ctx, _: u64) -> Verdict {
    cx.a.route("/nowhere", Route::Redirect(302, None));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/nowhere"), 0, None, None),
            &job(),
            &[],
            0,
        )
        .await;
    failed_with(&dl.result, &[], None)
}

async fn redirect_ungranted(cx: &Ctx, _: u64) -> Verdict {
    cx.a.route(
        "/escape",
        Route::Redirect(302, Some(cx.ungranted.http_url("/secret.bin"))),
    );
    cx.ungranted.route(
        "/secret.bin",
        Route::Resource(Resource::new(pattern(100, 44))),
    );
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/escape"), 0, None, None),
            &job(),
            &[],
            0,
        )
        .await;
    failed_with(&dl.result, &["host-not-granted"], Some(ErrorClass::Fatal))?;
    expect(
        cx.ungranted.requests().is_empty() && dl.content.is_empty(),
        "no request reached the ungranted host and nothing was stored",
        || format!("{} bytes stored", dl.content.len()),
    )
}

async fn location_reported(cx: &Ctx, _: u64) -> Verdict {
    let dl = away(cx, &job()).await;
    succeeded(&dl)?;
    let location = dl.remote.map(|r| r.location).unwrap_or_default();
    expect(
        location.ends_with(&format!("{}/there.bin", cx.b.port())),
        "a location naming /there.bin on the second server",
        || format!("location {location:?}"),
    )
}

fn with_credentials(credentials: Credentials) -> JobContext {
    let mut job = job();
    job.credentials = Some(credentials);
    job
}

fn basic() -> JobContext {
    with_credentials(Credentials::Basic {
        user: "owner".into(),
        password: "s3cret".into(),
    })
}

/// "owner:s3cret" in base64.
const BASIC: &str = "Basic b3duZXI6czNjcmV0";

async fn credentials_basic(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(100, 45);
    cx.a.route("/auth.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/auth.bin"), 0, None, None),
            &basic(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let auth = last_header(cx, "/auth.bin", "authorization");
    expect(
        auth.as_deref() == Some(BASIC),
        format!("Authorization: {BASIC}"),
        || format!("Authorization: {auth:?}"),
    )
}

async fn credentials_bearer(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(100, 46);
    cx.a.route("/bearer.bin", Route::Resource(Resource::new(body.clone())));
    let job = with_credentials(Credentials::Bearer {
        token: "t0ken".into(),
    });
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/bearer.bin"), 0, None, None),
            &job,
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let auth = last_header(cx, "/bearer.bin", "authorization");
    expect(
        auth.as_deref() == Some("Bearer t0ken"),
        "Authorization: Bearer t0ken",
        || format!("Authorization: {auth:?}"),
    )
}

fn owner_headers() -> JobContext {
    let mut job = basic();
    job.headers = vec![
        ("X-Owner-Secret".into(), "42".into()),
        ("Cookie".into(), "session=abc".into()),
    ];
    job
}

async fn owner_headers_sent(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(100, 47);
    cx.a.route("/headers.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/headers.bin"), 0, None, None),
            &owner_headers(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let value = last_header(cx, "/headers.bin", "x-owner-secret");
    expect(value.as_deref() == Some("42"), "X-Owner-Secret: 42", || {
        format!("X-Owner-Secret: {value:?}")
    })
}

async fn credentials_same_origin(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(100, 48);
    cx.a.route(
        "/here",
        Route::Redirect(302, Some(cx.a.http_url("/here.bin"))),
    );
    cx.a.route("/here.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/here"), 0, None, None),
            &basic(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let auth = last_header(cx, "/here.bin", "authorization");
    expect(
        auth.as_deref() == Some(BASIC),
        format!("Authorization: {BASIC}"),
        || format!("Authorization: {auth:?}"),
    )
}

/// The request server b received, after a redirect there.
fn at_b(cx: &Ctx) -> Option<crate::conformance::server::Recorded> {
    cx.b.requests().into_iter().last()
}

async fn credentials_cross_origin(cx: &Ctx, _: u64) -> Verdict {
    let dl = away(cx, &basic()).await;
    succeeded(&dl)?;
    let auth = at_b(cx).and_then(|r| r.header("authorization").map(str::to_string));
    expect(
        auth.is_none(),
        "no Authorization at the other origin",
        || format!("Authorization: {}", auth.unwrap_or_default()),
    )
}

async fn owner_headers_cross_origin(cx: &Ctx, _: u64) -> Verdict {
    let dl = away(cx, &owner_headers()).await;
    succeeded(&dl)?;
    let seen = at_b(cx).map(|r| {
        ["x-owner-secret", "cookie"]
            .iter()
            .filter_map(|n| r.header(n).map(|v| format!("{n}: {v}")))
            .collect::<Vec<_>>()
    });
    expect(
        seen.as_ref().is_some_and(|s| s.is_empty()),
        "neither X-Owner-Secret nor Cookie at the other origin",
        || format!("{seen:?}"),
    )
}

async fn credentials_for_good(cx: &Ctx, _: u64) -> Verdict {
    let body = pattern(100, 49);
    cx.a.route("/out", Route::Redirect(302, Some(cx.b.http_url("/back"))));
    cx.b.route(
        "/back",
        Route::Redirect(302, Some(cx.a.http_url("/home.bin"))),
    );
    cx.a.route("/home.bin", Route::Resource(Resource::new(body.clone())));
    let dl = cx
        .download(
            request(cx.url(&cx.a, "/out"), 0, None, None),
            &basic(),
            &[],
            0,
        )
        .await;
    holds(&dl, &body)?;
    let auth = last_header(cx, "/home.bin", "authorization");
    expect(
        auth.is_none(),
        "no Authorization once a redirect left the origin",
        || format!("Authorization: {}", auth.unwrap_or_default()),
    )
}
