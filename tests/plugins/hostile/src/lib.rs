//! A deliberately hostile transport, for the host's sandbox tests.
//!
//! What it does depends on the URL's host part (`hostile://MODE/...`):
//! - `loop`: spins forever without coming back to the host;
//! - `memory`: allocates until it gets what it wants;
//! - `trap`: executes `unreachable`;
//! - `reach`: sends a request to the URL in the path (`hostile://reach/http://...`),
//!   which the operator did not grant it;
//! - `ok`: behaves, writing three bytes.
//!
//! It exports `download` only.

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

impl Download for Hostile {
    fn download(
        _job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        misbehave(&request.url)?;
        let info = RemoteInfo {
            size: Some(3),
            validator: None,
            accepts_ranges: false,
            location: request.url,
        };
        let sink = destination.begin(&info, 0)?;
        stream::write_all(&sink, b"ok\n")
    }
}

ferry_guest_sdk::export_download!(Hostile);
