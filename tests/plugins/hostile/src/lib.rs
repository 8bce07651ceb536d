//! A deliberately hostile transport, for the host's sandbox tests.
//!
//! What it does depends on the URL's host part (`hostile://MODE/...`):
//! - `loop`: spins forever without coming back to the host;
//! - `memory`: allocates until it gets what it wants;
//! - `trap`: executes `unreachable`;
//! - `reach`: sends a request to the URL in the path (`hostile://reach/http://...`),
//!   which the operator did not grant it;
//! - `spin-host`: loops calling `is-cancelled()`, which comes back to the
//!   host every turn (the deadline alone would be reset forever);
//! - `spin-log`: loops writing log lines with newlines in them;
//! - `table`: makes `wasi:http` fields resources of 30 KB each without
//!   dropping them, up to 10,000 (300 MB of host memory; it says so when the
//!   host never stopped it);
//! - `fields`: appends 1 KiB headers to one fields resource until refused
//!   (64 at most), and reports how many bytes the host held;
//! - `requests`: starts 200 requests to the URL in the path and keeps every
//!   response unread, then reports how many the host sent and refused;
//! - `strings`: begins the destination with a 512 KiB ETag and location full
//!   of newlines and escape sequences, then writes three bytes;
//! - `ok`: behaves, writing three bytes.
//!
//! It exports `download` only.

use ferry_guest_sdk::bindings::wasi::http::{outgoing_handler, types as http};
use ferry_guest_sdk::http::{Method, Request};
use ferry_guest_sdk::{
    Destination, Download, DownloadRequest, ErrorClass, ErrorContext, JobContext, RemoteInfo,
    TransferError, stream,
};

struct Hostile;

fn mode(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("hostile://").unwrap_or(url);
    rest.split_once('/').unwrap_or((rest, ""))
}

fn misbehave(url: &str) -> Result<(), TransferError> {
    match mode(url) {
        ("loop", _) => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        ("memory", _) => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        ("trap", _) => core::arch::wasm32::unreachable(),
        ("spin-host", _) => loop {
            std::hint::black_box(ferry_guest_sdk::is_cancelled());
        },
        ("spin-log", _) => loop {
            ferry_guest_sdk::info("a line\nwith a forged second line\x1b[2J");
        },
        ("table", _) => {
            let value = vec![b'v'; 30_000];
            for _ in 0..10_000 {
                let fields = http::Fields::from_list(&[("x-big".to_string(), value.clone())])
                    .map_err(|e| unexpected(format!("{e:?}")))?;
                std::mem::forget(fields);
            }
            Err(unexpected("the host held 10000 fields of 30 KB".into()))
        }
        ("fields", _) => {
            let fields = http::Fields::new();
            let value = vec![b'v'; 1024];
            let mut held = 0usize;
            for i in 0..64 {
                if fields.append(&format!("x-{i}"), &value).is_err() {
                    break;
                }
                held += 1024;
            }
            Err(unexpected(format!("held {held} bytes of headers")))
        }
        ("requests", target) => {
            let mut responses = Vec::new();
            let (mut sent, mut refused) = (0, 0);
            let mut pending = Vec::new();
            for _ in 0..200 {
                let request = outgoing(target);
                match outgoing_handler::handle(request, None) {
                    Ok(future) => pending.push(future),
                    Err(_) => refused += 1,
                }
            }
            for future in pending {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(response))) => {
                        sent += 1;
                        responses.push(response);
                    }
                    _ => refused += 1,
                }
            }
            Err(unexpected(format!("sent {sent}, refused {refused}")))
        }
        ("strings", _) => Ok(()),
        ("reach", target) => {
            let response = Request::new(Method::Get, target)?.send()?;
            Err(TransferError::other(
                ErrorClass::Fatal,
                ErrorContext::Plugin,
                "unexpected",
                format!("the host let the request through: {}", response.status),
            ))
        }
        _ => Ok(()),
    }
}

fn unexpected(message: String) -> TransferError {
    TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::Plugin,
        "unexpected",
        message,
    )
}

/// A GET of `url` (`http://host:port/path`) as a raw `wasi:http` request.
fn outgoing(url: &str) -> http::OutgoingRequest {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let request = http::OutgoingRequest::new(http::Fields::new());
    let _ = request.set_scheme(Some(&http::Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(&format!("/{path}")));
    request
}

impl Download for Hostile {
    fn download(
        _job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        misbehave(&request.url)?;
        let info = if mode(&request.url).0 == "strings" {
            let forged = "\"x\"\n\x1b[31mforged: header\r\n".repeat(1 << 15);
            RemoteInfo {
                size: Some(3),
                validator: Some(ferry_guest_sdk::Validator::Etag(forged.clone())),
                accepts_ranges: true,
                location: forged,
            }
        } else {
            RemoteInfo {
                size: Some(3),
                validator: None,
                accepts_ranges: false,
                location: request.url,
            }
        };
        let sink = destination.begin(&info, 0)?;
        stream::write_all(&sink, b"ok\n")
    }
}

ferry_guest_sdk::export_download!(Hostile);
