//! A third-party download plugin as it was written for `ferry:transfer@0.1.0`,
//! before the 0.2 contract and its SDK: raw bindings of the frozen WIT in
//! `wit/0.1.0/`, no SDK. The host must keep loading it (SPEC §3).
//!
//! `legacy://HOST:PORT/PATH` is fetched as `http://HOST:PORT/PATH`, resumed
//! with `Range` from the offset the host asks for (no validator check: this
//! fixture keeps to what the 0.1 contract needed). Its manifest lists
//! `capabilities`, as the 0.1 format did.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "ferry:transfer/transport@0.1.0",
    generate_all,
});

use exports::ferry::transfer::transfers::Guest;
use ferry::transfer::host::{Destination, Source, is_cancelled};
use ferry::transfer::types::{
    Capabilities, DownloadRequest, ErrorClass, ErrorContext, RemoteInfo, TransferError,
    UploadOutcome, UploadRequest,
};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

struct Legacy;

fn error(class: ErrorClass, context: ErrorContext, code: &str, message: String) -> TransferError {
    TransferError {
        class,
        context,
        code: code.to_string(),
        http_status: None,
        message,
    }
}

fn transient(code: &str, message: String) -> TransferError {
    error(
        ErrorClass::Transient,
        ErrorContext::Transport,
        code,
        message,
    )
}

impl Guest for Legacy {
    fn supported() -> Capabilities {
        Capabilities::DOWNLOAD | Capabilities::RANGES
    }

    fn probe(url: String) -> Result<RemoteInfo, TransferError> {
        Err(error(
            ErrorClass::Fatal,
            ErrorContext::Plugin,
            "unsupported",
            format!("probe is not implemented ({url})"),
        ))
    }

    fn download(request: DownloadRequest, destination: &Destination) -> Result<(), TransferError> {
        let rest = request.url.strip_prefix("legacy://").ok_or_else(|| {
            error(
                ErrorClass::Fatal,
                ErrorContext::RemoteFile,
                "invalid-url",
                format!("{} is not a legacy:// URL", request.url),
            )
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let headers = Fields::new();
        if request.offset > 0 || request.end.is_some() {
            let range = match request.end {
                Some(end) => format!("bytes={}-{}", request.offset, end - 1),
                None => format!("bytes={}-", request.offset),
            };
            headers
                .append("range", range.as_bytes())
                .map_err(|e| transient("invalid-header", format!("{e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let set =
            |ok: Result<(), ()>| ok.map_err(|()| transient("invalid-url", request.url.clone()));
        set(outgoing.set_method(&Method::Get))?;
        set(outgoing.set_scheme(Some(&Scheme::Http)))?;
        set(outgoing.set_authority(Some(authority)))?;
        set(outgoing.set_path_with_query(Some(if path.is_empty() { "/" } else { path })))?;
        let future = outgoing_handler::handle(outgoing, None)
            .map_err(|e| transient("connection-failed", format!("{e:?}")))?;
        let response = loop {
            if let Some(result) = future.get() {
                break result
                    .map_err(|()| transient("plugin-bug", "response taken twice".into()))?
                    .map_err(|e| transient("connection-failed", format!("{e:?}")))?;
            }
            future.subscribe().block();
        };
        let status = response.status();
        let from = match status {
            200 => 0,
            206 => request.offset,
            _ => {
                let class = if status >= 500 {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                };
                let mut e = error(
                    class,
                    ErrorContext::RemoteApplication,
                    "http-status",
                    format!("the server answered {status} for {}", request.url),
                );
                e.http_status = Some(status);
                return Err(e);
            }
        };
        let length = response
            .headers()
            .get("content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        let info = RemoteInfo {
            size: length.map(|n| n + from),
            validator: None,
            accepts_ranges: status == 206,
            location: request.url.clone(),
        };
        let sink = destination.begin(&info, from)?;
        let body = response
            .consume()
            .map_err(|()| transient("plugin-bug", "body taken twice".into()))?;
        let mut moved = 0u64;
        {
            let stream = body
                .stream()
                .map_err(|()| transient("plugin-bug", "stream taken twice".into()))?;
            loop {
                if is_cancelled() {
                    return Err(transient("cancelled", "the host cancelled the call".into()));
                }
                match sink.blocking_splice(&stream, u64::MAX) {
                    Ok(n) => moved += n,
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(transient("connection-dropped", e.to_debug_string()));
                    }
                }
            }
        }
        let _trailers = IncomingBody::finish(body);
        match length {
            Some(length) if length != moved => Err(transient(
                "connection-dropped",
                format!("the body ended after {moved} of {length} bytes"),
            )),
            _ => Ok(()),
        }
    }

    fn upload(_request: UploadRequest, _source: &Source) -> Result<UploadOutcome, TransferError> {
        Err(error(
            ErrorClass::Fatal,
            ErrorContext::Plugin,
            "unsupported",
            "uploads are not implemented".into(),
        ))
    }

    fn cancel_upload(_url: String, _session: String) -> Result<(), TransferError> {
        Err(error(
            ErrorClass::Fatal,
            ErrorContext::Plugin,
            "unsupported",
            "uploads are not implemented".into(),
        ))
    }
}

export!(Legacy);
