//! The built-in http plugin, loaded into the real runtime, against a real
//! HTTP server on loopback.

use ferry::plugin::{Credentials, DownloadRequest, JobContext, Validator};
use ferry::{ErrorClass, ErrorContext};
use ferry_tests::fixtures::{Target, request, runtime, runtime_with_grants};
use ferry_tests::server::{Resource, TestServer, pattern_bytes, start_with};
use std::sync::atomic::Ordering;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn job() -> JobContext {
    JobContext::new("test-job")
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_a_whole_file_byte_for_byte() {
    let server = start_with("/file", Resource::pattern(5 * MIB + 123)).await;
    let runtime = runtime();
    let target = Target::new();
    let (result, progress) = target
        .download(&runtime, request(&server.url("/file"), 0), 0, &job())
        .await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..5 * MIB + 123));
    assert_eq!(progress.written_to.load(Ordering::Acquire), 5 * MIB + 123);
    let remote = progress.remote.lock().unwrap().clone().unwrap();
    assert_eq!(remote.size, Some(5 * MIB + 123));
    assert!(matches!(remote.validator, Some(Validator::Etag(_))));
    assert!(!progress.restarted.load(Ordering::Acquire));
    let get = &server.requests_for("/file")[0];
    assert_eq!(get.header("range"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_from_an_offset_with_range_and_if_range() {
    let len = 3 * MIB;
    let server = start_with("/file", Resource::pattern(len)).await;
    let runtime = runtime();
    let etag = server.resource("/file").unwrap().etag_value().unwrap();
    let offset = MIB + 17;
    let target = Target::with_content(&pattern_bytes(0..offset));
    let mut req = request(&server.url("/file"), offset);
    req.validator = Some(Validator::Etag(etag.clone()));
    let (result, progress) = target.download(&runtime, req, offset, &job()).await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..len));
    assert!(!progress.restarted.load(Ordering::Acquire));
    let get = &server.requests_for("/file")[0];
    assert_eq!(
        get.header("range"),
        Some(format!("bytes={offset}-").as_str())
    );
    assert_eq!(get.header("if-range"), Some(etag.as_str()));
    assert_eq!(
        server.bytes_sent("/file"),
        len - offset,
        "only the missing bytes travel"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_resource_restarts_the_file_from_zero() {
    let len = 2 * MIB;
    let server = start_with("/file", Resource::pattern(len)).await;
    let runtime = runtime();
    let old_etag = server.resource("/file").unwrap().etag_value().unwrap();
    let old_start = server.resource("/file").unwrap().content(0..MIB);
    server.update("/file", |r| r.change_content());
    let new = server.resource("/file").unwrap();
    assert_ne!(new.etag_value().unwrap(), old_etag);

    let target = Target::with_content(&old_start);
    let mut req = request(&server.url("/file"), MIB);
    req.validator = Some(Validator::Etag(old_etag));
    let (result, progress) = target.download(&runtime, req, MIB, &job()).await;
    result.unwrap();
    assert!(
        progress.restarted.load(Ordering::Acquire),
        "the plugin restarted from zero"
    );
    assert_eq!(target.content(), new.content(0..len));
    let remote = progress.remote.lock().unwrap().clone().unwrap();
    assert_eq!(
        remote.validator,
        new.etag_value().map(Validator::Etag),
        "the new validator is recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_ranges_restarts_and_still_downloads() {
    let len = MIB + 5;
    let server = start_with("/file", Resource::pattern(len).no_ranges()).await;
    let runtime = runtime();
    let offset = 1000;
    let target = Target::with_content(&pattern_bytes(0..offset));
    let (result, progress) = target
        .download(
            &runtime,
            request(&server.url("/file"), offset),
            offset,
            &job(),
        )
        .await;
    result.unwrap();
    assert!(progress.restarted.load(Ordering::Acquire));
    assert_eq!(target.content(), pattern_bytes(0..len));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_a_size_still_downloads() {
    let len = 3 * MIB + 1;
    let server = start_with("/file", Resource::pattern(len).no_length().no_ranges()).await;
    let target = Target::new();
    let (result, _) = target
        .download(&runtime(), request(&server.url("/file"), 0), 0, &job())
        .await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..len));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatched_content_range_is_an_error() {
    let server = start_with("/file", Resource::pattern(10_000).wrong_content_range()).await;
    let target = Target::with_content(&pattern_bytes(0..100));
    let resume = DownloadRequest {
        validator: server
            .resource("/file")
            .unwrap()
            .etag_value()
            .map(Validator::Etag),
        ..request(&server.url("/file"), 100)
    };
    let (result, _) = target.download(&runtime(), resume, 100, &job()).await;
    let error = result.unwrap_err();
    assert_eq!(error.code, "range-mismatch", "{error}");
    assert_eq!(error.context, ErrorContext::RemoteFile);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_without_a_validator_starts_the_file_over() {
    let server = start_with("/file", Resource::pattern(10_000)).await;
    // Bytes held from an attempt that recorded no validator: nothing proves
    // they belong to the resource as it is now.
    let target = Target::with_content(&[b'?'; 100]);
    let (result, progress) = target
        .download(&runtime(), request(&server.url("/file"), 100), 100, &job())
        .await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..10_000));
    assert!(progress.restarted.load(Ordering::Acquire));
    assert_eq!(server.requests_for("/file")[0].header("range"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_every_byte_already_held_completes_instead_of_a_416() {
    let server = start_with("/file", Resource::pattern(10_000)).await;
    let target = Target::with_content(&pattern_bytes(0..10_000));
    let resume = DownloadRequest {
        validator: server
            .resource("/file")
            .unwrap()
            .etag_value()
            .map(Validator::Etag),
        ..request(&server.url("/file"), 10_000)
    };
    let (result, progress) = target.download(&runtime(), resume, 10_000, &job()).await;
    result.unwrap();
    assert_eq!(target.content(), pattern_bytes(0..10_000));
    assert_eq!(progress.written_to.load(Ordering::Acquire), 10_000);
    assert_eq!(
        server.requests_for("/file")[0].header("range"),
        Some("bytes=10000-"),
        "the server answered 416, which ends the file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_keeps_the_bytes_and_resumes_from_there() {
    let len = 4 * MIB;
    let server = start_with("/file", Resource::pattern(len).drop_after(MIB + 3)).await;
    let runtime = runtime();
    let target = Target::new();
    let (result, progress) = target
        .download(&runtime, request(&server.url("/file"), 0), 0, &job())
        .await;
    let error = result.unwrap_err();
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    assert_eq!(error.context, ErrorContext::Transport);
    let kept = progress.written_to.load(Ordering::Acquire);
    assert_eq!(kept, MIB + 3, "every byte received is kept");
    assert_eq!(target.content(), pattern_bytes(0..kept));

    let validator = progress.remote.lock().unwrap().clone().unwrap().validator;
    let mut again = request(&server.url("/file"), kept);
    again.validator = validator;
    let (result, progress) = target.download(&runtime, again, kept, &job()).await;
    result.unwrap();
    assert!(!progress.restarted.load(Ordering::Acquire));
    assert_eq!(target.content(), pattern_bytes(0..len));
}

#[tokio::test(flavor = "multi_thread")]
async fn byte_ranges_are_written_where_the_host_says() {
    let server = start_with("/file", Resource::pattern(100_000)).await;
    let runtime = runtime();
    let target = Target::new();
    let first = DownloadRequest {
        end: Some(3_000),
        ..request(&server.url("/file"), 1_000)
    };
    target.download(&runtime, first, 0, &job()).await.0.unwrap();
    let second = DownloadRequest {
        end: Some(60_000),
        ..request(&server.url("/file"), 50_000)
    };
    target
        .download(&runtime, second, 2_000, &job())
        .await
        .0
        .unwrap();
    let mut expected = pattern_bytes(1_000..3_000);
    expected.extend(pattern_bytes(50_000..60_000));
    assert_eq!(target.content(), expected);
    assert_eq!(
        server.requests_for("/file")[1].header("range"),
        Some("bytes=50000-59999")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_byte_range_is_cut_from_a_server_without_ranges() {
    let server = start_with("/file", Resource::pattern(100_000).no_ranges()).await;
    let target = Target::new();
    let req = DownloadRequest {
        end: Some(70_000),
        ..request(&server.url("/file"), 20_000)
    };
    target.download(&runtime(), req, 0, &job()).await.0.unwrap();
    assert_eq!(target.content(), pattern_bytes(20_000..70_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_redirects_within_the_limit() {
    let server = TestServer::start().await;
    server.put("/file", Resource::pattern(50_000));
    server.put("/hop2", Resource::redirect(307, "/file"));
    server.put("/hop1", Resource::redirect(302, server.url("/hop2")));
    let target = Target::new();
    target
        .download(&runtime(), request(&server.url("/hop1"), 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..50_000));

    let mut strict = job();
    strict.max_redirects = 1;
    let (result, _) = Target::new()
        .download(&runtime(), request(&server.url("/hop1"), 0), 0, &strict)
        .await;
    assert_eq!(result.unwrap_err().code, "too-many-redirects");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_the_jobs_headers_never_cross_to_another_origin() {
    let first = TestServer::start().await;
    let other = start_with("/file", Resource::pattern(10_000)).await;
    first.put("/file", Resource::pattern(10_000));
    first.put("/same", Resource::redirect(302, "/file"));
    first.put("/away", Resource::redirect(302, other.url("/file")));
    let mut owner = job();
    owner.credentials = Some(Credentials::Basic {
        user: "alice".into(),
        password: "secret".into(),
    });
    // (`Proxy-Authorization` is a header `wasi:http` never lets a plugin
    // send at all; the SDK drops it on a change of origin too.)
    owner.headers = vec![
        ("X-Token".into(), "abc".into()),
        ("Cookie".into(), "session=1".into()),
    ];
    let owner_headers = ["authorization", "x-token", "cookie"];

    // Same scheme, host and port: everything goes along.
    Target::new()
        .download(&runtime(), request(&first.url("/same"), 0), 0, &owner)
        .await
        .0
        .unwrap();
    let kept = first.requests_for("/file").pop().unwrap();
    for name in owner_headers {
        assert!(
            kept.header(name).is_some(),
            "{name} was dropped on a same-origin redirect"
        );
    }

    // Another port: none of it goes along, though the download succeeds.
    let target = Target::new();
    target
        .download(&runtime(), request(&first.url("/away"), 0), 0, &owner)
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..10_000));
    let crossed = other.requests_for("/file").pop().unwrap();
    for name in owner_headers {
        assert_eq!(
            crossed.header(name),
            None,
            "{name} crossed to another origin"
        );
    }
    let first_hop = first.requests_for("/away").pop().unwrap();
    assert!(first_hop.header("authorization").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_a_host_not_granted_is_refused() {
    let granted = start_with("/start", Resource::pattern(10)).await;
    let elsewhere = start_with("/file", Resource::pattern(10_000)).await;
    granted.put("/start", Resource::redirect(302, elsewhere.url("/file")));
    let grant = format!("127.0.0.1:{}", granted.addr().port());
    let runtime = runtime_with_grants(&[("http", &[grant.as_str()])]);
    let target = Target::new();
    let (result, _) = target
        .download(&runtime, request(&granted.url("/start"), 0), 0, &job())
        .await;
    let error = result.unwrap_err();
    assert_eq!(
        (error.context, error.code.as_str()),
        (ErrorContext::Policy, "host-not-granted"),
        "{error}"
    );
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(
        elsewhere.requests().is_empty(),
        "the refused host saw no request"
    );
    assert!(target.content().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_status_class_maps_as_the_spec_says() {
    let server = TestServer::start().await;
    let runtime = runtime();
    let cases = [
        (404, ErrorClass::Fatal, ErrorContext::RemoteFile),
        (403, ErrorClass::Fatal, ErrorContext::RemoteApplication),
        (408, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (409, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (425, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (429, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (500, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (501, ErrorClass::Fatal, ErrorContext::RemoteApplication),
        (503, ErrorClass::Transient, ErrorContext::RemoteApplication),
        (505, ErrorClass::Fatal, ErrorContext::RemoteApplication),
    ];
    for (status, class, context) in cases {
        let path = format!("/s{status}");
        server.put(&path, Resource::status(status));
        let (result, _) = Target::new()
            .download(&runtime, request(&server.url(&path), 0), 0, &job())
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.http_status, Some(status), "{error}");
        assert_eq!(
            (error.class, error.context),
            (class, context),
            "status {status}"
        );
        assert_eq!(error.code, "http-status");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_custom_headers_and_credentials() {
    let server = TestServer::start().await;
    server.put(
        "/basic",
        Resource::pattern(100)
            .require_basic("ann", "s3cret")
            .require_header("x-trace", "42"),
    );
    server.put("/bearer", Resource::pattern(100).require_bearer("tok-en"));
    let runtime = runtime();

    let mut basic = job();
    basic.headers.push(("x-trace".into(), "42".into()));
    basic.credentials = Some(Credentials::Basic {
        user: "ann".into(),
        password: "s3cret".into(),
    });
    let target = Target::new();
    target
        .download(&runtime, request(&server.url("/basic"), 0), 0, &basic)
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), pattern_bytes(0..100));

    let mut bearer = job();
    bearer.credentials = Some(Credentials::Bearer {
        token: "tok-en".into(),
    });
    Target::new()
        .download(&runtime, request(&server.url("/bearer"), 0), 0, &bearer)
        .await
        .0
        .unwrap();

    let (result, _) = Target::new()
        .download(&runtime, request(&server.url("/bearer"), 0), 0, &job())
        .await;
    assert_eq!(result.unwrap_err().http_status, Some(401));
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_stored_as_served_without_decoding() {
    let gzip_like = b"\x1f\x8b\x08\x00 not really inflated".to_vec();
    let server = start_with(
        "/file.gz",
        Resource::bytes(gzip_like.clone()).gzip_encoded(),
    )
    .await;
    let target = Target::new();
    target
        .download(&runtime(), request(&server.url("/file.gz"), 0), 0, &job())
        .await
        .0
        .unwrap();
    assert_eq!(target.content(), gzip_like);
    assert_eq!(
        server.requests_for("/file.gz")[0].header("accept-encoding"),
        Some("identity")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_stops_a_slow_download_and_keeps_its_bytes() {
    let server = start_with("/slow", Resource::pattern(10 * MIB).slow(256 * 1024)).await;
    let runtime = runtime();
    let target = Target::new();
    let job = job();
    let cancel = job.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        cancel.cancel();
    });
    let (result, progress) = target
        .download(&runtime, request(&server.url("/slow"), 0), 0, &job)
        .await;
    assert_eq!(result.unwrap_err().code, "cancelled");
    let kept = progress.written_to.load(Ordering::Acquire);
    assert!(kept > 0 && kept < 10 * MIB, "kept {kept} bytes");
    assert_eq!(target.content(), pattern_bytes(0..kept));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_scheme_or_a_bad_url_is_a_typed_error() {
    let runtime = runtime();
    let download = async |url: &str| {
        Target::new()
            .download(&runtime, request(url, 0), 0, &job())
            .await
            .0
            .unwrap_err()
    };
    let error = download("gopher://example/x").await;
    assert_eq!(
        (error.context, error.code.as_str()),
        (ErrorContext::Policy, "unsupported-scheme")
    );
    let error = download("not a url").await;
    assert_eq!(error.code, "invalid-url");
    let error = download("http://127.0.0.1:1/nothing-listens").await;
    assert_eq!(
        (error.class, error.context),
        (ErrorClass::Transient, ErrorContext::Transport),
        "{error}"
    );
}
