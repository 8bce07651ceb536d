//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! Plugins for HTTP-like protocols all need the same few things: send a
//! request with the job's headers and credentials, follow a bounded number of
//! redirects (the host never follows them itself, and checks every hop), map
//! transport failures to typed errors, and move bodies between the network
//! and the host's streams without copying them through plugin memory. This
//! module is that, once.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method as WasiMethod, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use crate::types::{Credentials, ErrorContext, TransferError};
use crate::{InputStream, OutputStream, StreamError, is_cancelled, job_context};
use url::Url;

/// The HTTP methods plugins use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other method, by name.
    Other(String),
}

/// An outgoing request, built up before it is sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    credentials: Option<Credentials>,
}

impl Request {
    /// A request for `url`; fails with a fatal `invalid-url` error when the
    /// URL does not parse or is not http(s).
    pub fn new(method: Method, url: &str) -> Result<Self, TransferError> {
        let parsed = Url::parse(url).map_err(|e| invalid_url(url, &e.to_string()))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(invalid_url(url, "only http and https are supported"));
        }
        if parsed.host_str().is_none() {
            return Err(invalid_url(url, "the URL has no host"));
        }
        Ok(Request {
            method,
            url: parsed,
            headers: Vec::new(),
            credentials: None,
        })
    }

    /// A request carrying the job's own headers and credentials.
    pub fn for_job(method: Method, url: &str) -> Result<Self, TransferError> {
        let context = job_context();
        let mut request = Request::new(method, url)?;
        for header in context.headers {
            request.headers.push((header.name, header.value));
        }
        request.credentials = context.credentials;
        Ok(request)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends the request without a body and waits for the response head.
    pub fn send(&self) -> Result<Response, TransferError> {
        let (outgoing, _) = self.outgoing(false)?;
        let future = outgoing_handler::handle(outgoing, Some(options()))
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        wait_response(future, self.url.as_str())
    }

    /// Sends the request with `length` bytes spliced from `body` (a host
    /// stream), then waits for the response head.
    pub fn send_with_body(
        &self,
        body: &InputStream,
        length: u64,
    ) -> Result<Response, TransferError> {
        let (outgoing, outgoing_body) = self.outgoing(true)?;
        let outgoing_body = outgoing_body.expect("a body was asked for");
        let future = outgoing_handler::handle(outgoing, Some(options()))
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        {
            let sink = outgoing_body
                .write()
                .map_err(|()| local_stream_error("the request body cannot be written"))?;
            let mut left = length;
            while left > 0 {
                if is_cancelled() {
                    return Err(cancelled());
                }
                match sink.blocking_splice(body, left) {
                    Ok(n) => left -= n,
                    Err(StreamError::Closed) => {
                        return Err(TransferError::fatal(
                            ErrorContext::LocalFile,
                            "local-file-changed",
                            "the upload source ended before its recorded size",
                        ));
                    }
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(TransferError::transient(
                            ErrorContext::Transport,
                            "connection-failed",
                            format!("sending the body failed: {}", e.to_debug_string()),
                        ));
                    }
                }
            }
        }
        OutgoingBody::finish(outgoing_body, None)
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        wait_response(future, self.url.as_str())
    }

    /// Sends the request (without a body), following up to `max_redirects`
    /// redirects for GET and HEAD. Credentials are not sent to another host
    /// than the first one. A redirect past the limit is a fatal
    /// `too-many-redirects` error.
    pub fn send_following_redirects(&self, max_redirects: u32) -> Result<Response, TransferError> {
        let mut request = self.clone();
        let first_host = self.url.host_str().map(str::to_string);
        let mut hops = 0;
        loop {
            let response = request.send()?;
            if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let Some(location) = response.header("location") else {
                return Ok(response);
            };
            if hops >= max_redirects {
                return Err(TransferError::fatal(
                    ErrorContext::RemoteApplication,
                    "too-many-redirects",
                    format!(
                        "more than {max_redirects} redirects starting at {}",
                        self.url
                    ),
                ));
            }
            let next = request
                .url
                .join(location)
                .map_err(|e| invalid_url(location, &e.to_string()))?;
            crate::debug(&format!("redirect {} -> {next}", request.url));
            hops += 1;
            let mut next_request = Request::new(request.method.clone(), next.as_str())?;
            next_request.headers = request.headers.clone();
            if next.host_str().map(str::to_string) == first_host {
                next_request.credentials = request.credentials.clone();
            }
            request = next_request;
        }
    }

    fn outgoing(
        &self,
        with_body: bool,
    ) -> Result<(OutgoingRequest, Option<OutgoingBody>), TransferError> {
        let fields = Fields::new();
        for (name, value) in &self.headers {
            fields.append(name, value.as_bytes()).map_err(|e| {
                TransferError::fatal(
                    ErrorContext::Transport,
                    "invalid-header",
                    format!("header {name}: {e:?}"),
                )
            })?;
        }
        if let Some(authorization) = self.credentials.as_ref().map(authorization) {
            fields
                .set("authorization", &[authorization.into_bytes()])
                .map_err(|e| {
                    TransferError::fatal(
                        ErrorContext::Transport,
                        "invalid-header",
                        format!("authorization: {e:?}"),
                    )
                })?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match &self.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
            Method::Options => WasiMethod::Options,
            Method::Other(name) => WasiMethod::Other(name.clone()),
        };
        let url = self.url.as_str();
        request
            .set_method(&method)
            .map_err(|()| invalid_url(url, "method refused"))?;
        let scheme = if self.url.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid_url(url, "scheme refused"))?;
        let authority = match (self.url.host_str(), self.url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(invalid_url(url, "the URL has no host")),
        };
        request
            .set_authority(Some(&authority))
            .map_err(|()| invalid_url(url, "authority refused"))?;
        let mut path = self.url.path().to_string();
        if let Some(query) = self.url.query() {
            path.push('?');
            path.push_str(query);
        }
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid_url(url, "path refused"))?;
        let body = if with_body {
            Some(
                request
                    .body()
                    .map_err(|()| local_stream_error("the request body was taken twice"))?,
            )
        } else {
            None
        };
        Ok((request, body))
    }
}

/// A response whose head has arrived; its body is still on the wire.
pub struct Response {
    pub status: u16,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub url: String,
    incoming: IncomingResponse,
}

impl Response {
    /// The first value of header `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The `Content-Length`, when present and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Splices the body into `sink` (a host stream), checking for
    /// cancellation between chunks: the first `skip` bytes are dropped on the
    /// host side, then at most `limit` bytes (all, when `None`) are moved.
    /// Returns the number of bytes moved into `sink`. A body that ends early
    /// (the connection dropped) is a transient `connection-dropped` error,
    /// after the bytes received so far have been written.
    pub fn splice_body(
        self,
        sink: &OutputStream,
        skip: u64,
        limit: Option<u64>,
    ) -> Result<u64, TransferError> {
        let expected = self.content_length();
        let url = self.url.clone();
        let body = self.consume()?;
        let broke_off = |moved: u64, e: &crate::bindings::wasi::io::error::Error| {
            TransferError::transient(
                ErrorContext::Transport,
                "connection-dropped",
                format!(
                    "the body of {url} broke off after {moved} bytes: {}",
                    e.to_debug_string()
                ),
            )
        };
        let ended_early = |received: u64, wanted: u64| {
            TransferError::transient(
                ErrorContext::Transport,
                "connection-dropped",
                format!("the body of {url} ended after {received} of {wanted} bytes"),
            )
        };
        let mut moved = 0u64;
        {
            let stream = body
                .stream()
                .map_err(|()| local_stream_error("the response body was taken twice"))?;
            let mut skipped = 0u64;
            while skipped < skip {
                match stream.blocking_skip(skip - skipped) {
                    Ok(n) => skipped += n,
                    Err(StreamError::Closed) => return Err(ended_early(skipped, skip)),
                    Err(StreamError::LastOperationFailed(e)) => return Err(broke_off(0, &e)),
                }
            }
            loop {
                let wanted = match limit {
                    Some(limit) if moved >= limit => break,
                    Some(limit) => limit - moved,
                    None => u64::MAX,
                };
                if is_cancelled() {
                    return Err(cancelled());
                }
                match sink.blocking_splice(&stream, wanted) {
                    Ok(n) => moved += n,
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => return Err(broke_off(moved, &e)),
                }
            }
        }
        match limit {
            Some(limit) if moved < limit => return Err(ended_early(moved, limit)),
            Some(_) => drop(body),
            None => {
                let _trailers = IncomingBody::finish(body);
                if let Some(expected) = expected
                    && skip + moved != expected
                {
                    return Err(ended_early(skip + moved, expected));
                }
            }
        }
        Ok(moved)
    }

    /// Reads the whole body into memory, refusing more than `limit` bytes
    /// (a fatal `reply-too-large` error).
    pub fn read_body(self, limit: usize) -> Result<Vec<u8>, TransferError> {
        let url = self.url.clone();
        let body = self.consume()?;
        let mut data = Vec::new();
        {
            let stream = body
                .stream()
                .map_err(|()| local_stream_error("the response body was taken twice"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        data.extend_from_slice(&chunk);
                        if data.len() > limit {
                            return Err(TransferError::fatal(
                                ErrorContext::RemoteApplication,
                                "reply-too-large",
                                format!("the body of {url} is larger than {limit} bytes"),
                            ));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(TransferError::transient(
                            ErrorContext::Transport,
                            "connection-dropped",
                            format!("the body of {url} broke off: {}", e.to_debug_string()),
                        ));
                    }
                }
            }
        }
        let _trailers = IncomingBody::finish(body);
        Ok(data)
    }

    fn consume(self) -> Result<IncomingBody, TransferError> {
        self.incoming
            .consume()
            .map_err(|()| local_stream_error("the response body was taken twice"))
    }
}

/// Timeouts for one request: connecting and the first byte are bounded;
/// between body chunks the host's own stall detection applies.
fn options() -> RequestOptions {
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(30_000_000_000));
    let _ = options.set_first_byte_timeout(Some(120_000_000_000));
    options
}

fn wait_response(
    future: crate::bindings::wasi::http::types::FutureIncomingResponse,
    url: &str,
) -> Result<Response, TransferError> {
    let pollable = future.subscribe();
    let incoming = loop {
        if let Some(result) = future.get() {
            break result;
        }
        if is_cancelled() {
            return Err(cancelled());
        }
        pollable.block();
    };
    let incoming = incoming
        .map_err(|()| local_stream_error("the response was taken twice"))?
        .map_err(|e| error_from_code(&e, url))?;
    let headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    Ok(Response {
        status: incoming.status(),
        headers,
        url: url.to_string(),
        incoming,
    })
}

/// Maps a `wasi:http` error code to a typed error. A request the host
/// refused (a host not granted to the plugin) is a fatal `policy` error.
pub fn error_from_code(code: &ErrorCode, url: &str) -> TransferError {
    use ErrorCode as E;
    let transport = |code: &str, what: &str| {
        TransferError::transient(ErrorContext::Transport, code, format!("{what} ({url})"))
    };
    match code {
        E::HttpRequestDenied => TransferError::fatal(
            ErrorContext::Policy,
            "host-not-granted",
            format!(
                "the host refused the request to {url}: its host is not granted to this plugin"
            ),
        ),
        E::HttpRequestUriInvalid | E::HttpRequestUriTooLong | E::HttpRequestMethodInvalid => {
            invalid_url(url, &format!("{code:?}"))
        }
        E::DnsTimeout | E::DnsError(_) => {
            transport("dns-failed", "the host name could not be resolved")
        }
        E::DestinationNotFound | E::DestinationUnavailable | E::DestinationIpUnroutable => {
            transport("connection-failed", "the destination cannot be reached")
        }
        E::DestinationIpProhibited => TransferError::fatal(
            ErrorContext::Policy,
            "host-not-granted",
            format!("the destination address of {url} is prohibited"),
        ),
        E::ConnectionRefused => transport("connection-refused", "the connection was refused"),
        E::ConnectionTimeout | E::ConnectionReadTimeout | E::ConnectionWriteTimeout => {
            transport("timeout", "the connection timed out")
        }
        E::TlsCertificateError => TransferError::fatal(
            ErrorContext::Transport,
            "tls-certificate",
            format!("the server's certificate was not accepted ({url})"),
        ),
        E::TlsProtocolError | E::TlsAlertReceived(_) => {
            transport("tls-failed", "the TLS handshake failed")
        }
        other => transport(
            "connection-failed",
            &format!("the request failed: {other:?}"),
        ),
    }
}

fn authorization(credentials: &Credentials) -> String {
    match credentials {
        Credentials::Basic(basic) => {
            format!(
                "Basic {}",
                base64(format!("{}:{}", basic.user, basic.password).as_bytes())
            )
        }
        Credentials::Bearer(token) => format!("Bearer {token}"),
    }
}

/// Standard base64 with padding (RFC 4648 §4), for basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn invalid_url(url: &str, why: &str) -> TransferError {
    TransferError::fatal(
        ErrorContext::RemoteFile,
        "invalid-url",
        format!("{url} is not a usable URL: {why}"),
    )
}

fn local_stream_error(what: &str) -> TransferError {
    TransferError::transient(ErrorContext::Plugin, "plugin-bug", what.to_string())
}

fn cancelled() -> TransferError {
    TransferError::transient(
        ErrorContext::Transport,
        "cancelled",
        "the host cancelled the call",
    )
}
