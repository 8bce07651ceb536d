//! HTTP over `wasi:http/outgoing-handler`, for every plugin that speaks it.
//!
//! - [`download`]: a complete, resumable download of an `http(s)` URL into
//!   the host's destination, what Ferry's built-in `http` plugin is.
//! - [`Request`]: a request with the job's headers, credentials and network
//!   settings; [`Request::send_following_redirects`] follows redirects up to
//!   the job's limit and drops the owner's headers and credentials when a
//!   redirect leaves the origin the job named.
//! - [`Response`]: the status and headers, and its body spliced into a host
//!   stream with an exact length check ([`Response::splice_body`]), written
//!   as an upload's reply ([`Response::write_reply`]), or read into memory.
//! - [`error_from_code`]: `wasi:http` failures as typed errors.
//! - [`headers`]: byte ranges, validators, origins, as pure functions.

mod download;
pub mod headers;

pub use download::download;

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode as HttpErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse,
    Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::poll;
use crate::stream::{self, Spliced};
use crate::{
    Credentials, ErrorClass, ErrorCode, ErrorContext, Header, InputStream, JobContext,
    NetworkSettings, OutputStream, RemoteInfo, ReplyHead, ReplySink, TransferError, Validator,
    check_cancelled,
};
use headers::ContentRange;
use url::Url;

/// How often a call waiting for a response head checks for cancellation.
const CANCEL_CHECK_NS: u64 = 200_000_000;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other method, by name.
    Other(String),
}

/// An outgoing request, built up before it is sent.
///
/// Headers the job's owner set and the job's credentials are kept apart from
/// the plugin's own headers: they go only to the origin (scheme, host, port)
/// the request was made for, and a redirect to another origin drops them for
/// good, with any `Authorization`, `Cookie` and `Proxy-Authorization`.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: Url,
    /// The plugin's own headers.
    headers: Vec<(String, String)>,
    /// The owner's headers, dropped with the credentials off the origin.
    job_headers: Vec<(String, String)>,
    credentials: Option<Credentials>,
    network: Option<NetworkSettings>,
    /// The URL the job named, before any redirect.
    origin: Url,
    /// Whether a redirect left the origin, so nothing of the owner's goes on.
    left_origin: bool,
}

impl Request {
    /// A request for `url` without anything of a job: no owner's headers,
    /// no credentials, the host's default timeouts, no redirects followed.
    /// Fails with a fatal `invalid-url` error when the URL does not parse,
    /// is not `http`/`https` or has no host.
    pub fn new(method: Method, url: &str) -> Result<Self, TransferError> {
        let parsed = parse_url(url)?;
        Ok(Request {
            method,
            origin: parsed.clone(),
            url: parsed,
            headers: Vec::new(),
            job_headers: Vec::new(),
            credentials: None,
            network: None,
            left_origin: false,
        })
    }

    /// A request for `url` on behalf of `job`: with the owner's headers and
    /// credentials, the operator's timeouts (as `wasi:http` request options)
    /// and redirect limit.
    pub fn for_job(job: &JobContext, method: Method, url: &str) -> Result<Self, TransferError> {
        let mut request = Request::new(method, url)?;
        request.job_headers = job
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        request.credentials = job.credentials.clone();
        request.network = Some(job.network);
        Ok(request)
    }

    /// Adds a header of the plugin's own. It replaces an owner's header of
    /// the same name, and, unlike those, follows redirects (except
    /// `Authorization`, `Cookie` and `Proxy-Authorization`, which never
    /// leave the origin).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL this request goes to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers that will be sent, in order: the owner's (unless a
    /// redirect left the origin, or the plugin set the same name), the
    /// plugin's, and `authorization` for the credentials.
    pub fn outgoing_headers(&self) -> Vec<(String, String)> {
        let credentials = if self.left_origin {
            None
        } else {
            self.credentials.as_ref()
        };
        // The credentials' Authorization replaces any other.
        let replaced =
            |name: &str| credentials.is_some() && name.eq_ignore_ascii_case("authorization");
        let mut out = Vec::new();
        if !self.left_origin {
            for (name, value) in &self.job_headers {
                let overridden = self
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name));
                if !overridden && !replaced(name) {
                    out.push((name.clone(), value.clone()));
                }
            }
        }
        for (name, value) in &self.headers {
            let dropped = self.left_origin && headers::is_origin_bound(name);
            if !dropped && !replaced(name) {
                out.push((name.clone(), value.clone()));
            }
        }
        if let Some(credentials) = credentials {
            out.push((
                "authorization".to_string(),
                headers::authorization(credentials),
            ));
        }
        out
    }

    /// The request to send after a redirect `status` pointing at `location`:
    /// the same request for the new URL (a `303` turns it into a `GET`, but
    /// for `HEAD`), without the owner's headers and credentials, nor
    /// `Authorization`, `Cookie` and `Proxy-Authorization`, once any hop
    /// left the original origin.
    pub fn redirected(&self, status: u16, location: &str) -> Result<Request, TransferError> {
        let next = self
            .url
            .join(location)
            .map_err(|e| invalid_url(location, &e.to_string()))?;
        let next = parse_url(next.as_str())?;
        let mut request = self.clone();
        if status == 303 && request.method != Method::Head {
            request.method = Method::Get;
        }
        request.left_origin = self.left_origin || !headers::same_origin(&self.origin, &next);
        request.url = next;
        Ok(request)
    }

    /// Sends the request without a body and waits for the response head.
    pub fn send(&self) -> Result<Response, TransferError> {
        let (outgoing, _) = self.outgoing(None)?;
        let future = outgoing_handler::handle(outgoing, self.options())
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        wait_response(future, self.url.as_str())
    }

    /// Sends the request with exactly `length` bytes spliced from `body` (a
    /// host stream, such as an upload source), then waits for the response
    /// head. The request declares `Content-Length: length`. A body that ends
    /// before `length` is a fatal `local-file-changed` error. Redirects are
    /// not followed.
    pub fn send_with_body(
        &self,
        body: &InputStream,
        length: u64,
    ) -> Result<Response, TransferError> {
        let (outgoing, outgoing_body) = self.outgoing(Some(length))?;
        let outgoing_body = outgoing_body.ok_or_else(|| plugin_bug("the request has no body"))?;
        let future = outgoing_handler::handle(outgoing, self.options())
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        {
            let sink = outgoing_body
                .write()
                .map_err(|()| plugin_bug("the request body was taken twice"))?;
            let Spliced { moved, ended } = stream::splice(&sink, body, length)?;
            if ended {
                return Err(TransferError::fatal(
                    ErrorContext::LocalFile,
                    ErrorCode::other("local-file-changed"),
                    format!("the body ended after {moved} of {length} bytes"),
                ));
            }
        }
        OutgoingBody::finish(outgoing_body, None)
            .map_err(|e| error_from_code(&e, self.url.as_str()))?;
        wait_response(future, self.url.as_str())
    }

    /// Sends the request without a body, following redirects (`301`, `302`,
    /// `303`, `307`, `308` with a `Location`) up to the job's
    /// `network.max-redirects` (none for a request made with
    /// [`Request::new`]). See [`Request::redirected`] for what a hop keeps.
    /// More redirects are a fatal `too-many-redirects` error. The response's
    /// [`Response::url`] is where the answer came from.
    pub fn send_following_redirects(&self) -> Result<Response, TransferError> {
        let max_redirects = self.network.map_or(0, |n| n.max_redirects);
        let mut request = self.clone();
        let mut hops = 0u32;
        loop {
            let response = request.send()?;
            if !headers::is_redirect(response.status) {
                return Ok(response);
            }
            let Some(location) = response.header("location").map(str::to_string) else {
                return Ok(response);
            };
            if hops >= max_redirects {
                return Err(TransferError::fatal(
                    ErrorContext::RemoteApplication,
                    ErrorCode::other("too-many-redirects"),
                    format!(
                        "more than {max_redirects} redirects starting at {}",
                        self.url
                    ),
                ));
            }
            let status = response.status;
            drop(response);
            let next = request.redirected(status, &location)?;
            crate::debug(&format!("redirect {} -> {}", request.url, next.url));
            hops += 1;
            request = next;
        }
    }

    fn options(&self) -> Option<RequestOptions> {
        let network = self.network?;
        let options = RequestOptions::new();
        let ns = |ms: u64| ms.saturating_mul(1_000_000);
        // A setting of zero leaves the host's own limit in place. The host
        // enforces its settings on its side too, so an option it refuses is
        // not an error.
        if network.connect_timeout_ms > 0 {
            let _ = options.set_connect_timeout(Some(ns(network.connect_timeout_ms)));
        }
        if network.first_byte_timeout_ms > 0 {
            let _ = options.set_first_byte_timeout(Some(ns(network.first_byte_timeout_ms)));
        }
        if network.between_bytes_timeout_ms > 0 {
            let _ = options.set_between_bytes_timeout(Some(ns(network.between_bytes_timeout_ms)));
        }
        Some(options)
    }

    /// The request to hand to `wasi:http`, with a body of `body_length`
    /// bytes if there is one: declared in `Content-Length` (unless the
    /// plugin set its own), so the body goes out as it is, not in chunked
    /// encoding, and the host holds the body to that length.
    fn outgoing(
        &self,
        body_length: Option<u64>,
    ) -> Result<(OutgoingRequest, Option<OutgoingBody>), TransferError> {
        let fields = Fields::new();
        let mut headers = self.outgoing_headers();
        if let Some(length) = body_length
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            headers.push(("content-length".to_string(), length.to_string()));
        }
        for (name, value) in headers {
            fields.append(&name, value.as_bytes()).map_err(|e| {
                TransferError::fatal(
                    ErrorContext::Plugin,
                    ErrorCode::other("invalid-header"),
                    format!("header {name} cannot be sent: {e:?}"),
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
            .map_err(|()| invalid_url(url, "the method was refused"))?;
        let scheme = if self.url.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid_url(url, "the scheme was refused"))?;
        let host = self
            .url
            .host_str()
            .ok_or_else(|| invalid_url(url, "the URL has no host"))?;
        let authority = match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        request
            .set_authority(Some(&authority))
            .map_err(|()| invalid_url(url, "the authority was refused"))?;
        let mut path = self.url.path().to_string();
        if let Some(query) = self.url.query() {
            path.push('?');
            path.push_str(query);
        }
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid_url(url, "the path was refused"))?;
        let body = if body_length.is_some() {
            Some(
                request
                    .body()
                    .map_err(|()| plugin_bug("the request body was taken twice"))?,
            )
        } else {
            None
        };
        Ok((request, body))
    }
}

/// A response whose head has arrived; its body is still on the wire.
pub struct Response {
    /// The status.
    pub status: u16,
    /// The headers, names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The URL that answered (after any redirects).
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

    /// The `Content-Range` of a 206, when present and valid.
    pub fn content_range(&self) -> Option<ContentRange> {
        self.header("content-range").and_then(ContentRange::parse)
    }

    /// The validator the response offers: a strong ETag, else Last-Modified.
    pub fn validator(&self) -> Option<Validator> {
        headers::validator_from(self.header("etag"), self.header("last-modified"))
    }

    /// Whether `Accept-Ranges` lists `bytes`.
    pub fn accepts_ranges(&self) -> bool {
        self.header("accept-ranges")
            .is_some_and(headers::accepts_byte_ranges)
    }

    /// What the response says about the resource, for `destination.begin`,
    /// with the resource's full `size` as the caller worked it out.
    pub fn remote_info(&self, size: Option<u64>) -> RemoteInfo {
        RemoteInfo {
            size,
            validator: self.validator(),
            accepts_ranges: self.accepts_ranges(),
            location: self.url.clone(),
        }
    }

    /// The status and the headers whose values are text, as an upload's
    /// reply head.
    pub fn reply_head(&self) -> ReplyHead {
        ReplyHead {
            status: self.status,
            headers: self
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some(Header {
                        name: name.clone(),
                        value: String::from_utf8(value.clone()).ok()?,
                    })
                })
                .collect(),
        }
    }

    /// Splices the body into `sink` (a host stream) and checks its length.
    ///
    /// With `expected` set (the `Content-Length`, the span of a
    /// `Content-Range`, the range asked for), the body must be exactly that
    /// long: a shorter one, or a longer one (stopped at `expected`, the rest
    /// left unread), is a transient `length-mismatch`. Without it, the body
    /// is moved to its end. Returns the bytes moved.
    pub fn splice_body(
        self,
        sink: &OutputStream,
        expected: Option<u64>,
    ) -> Result<u64, TransferError> {
        let url = self.url.clone();
        let body = self.consume()?;
        let moved = {
            let input = body
                .stream()
                .map_err(|()| plugin_bug("the response body was taken twice"))?;
            match expected {
                Some(expected) => {
                    let spliced = stream::splice(sink, &input, expected)?;
                    if spliced.moved < expected {
                        return Err(TransferError::length_mismatch(format!(
                            "the body of {url} ended after {} of {expected} bytes",
                            spliced.moved
                        )));
                    }
                    if !stream::at_end(&input)? {
                        return Err(TransferError::length_mismatch(format!(
                            "the body of {url} is longer than the {expected} bytes declared"
                        )));
                    }
                    spliced.moved
                }
                None => stream::splice_to_end(sink, &input)?,
            }
        };
        let _trailers = IncomingBody::finish(body);
        Ok(moved)
    }

    /// Splices bytes `skip..skip + length` of the body into `sink`, for a
    /// range cut out of a whole body; the rest of the body is dropped. A body
    /// that ends before is a transient `length-mismatch`.
    pub fn splice_body_range(
        self,
        sink: &OutputStream,
        skip: u64,
        length: u64,
    ) -> Result<(), TransferError> {
        let url = self.url.clone();
        let body = self.consume()?;
        let input = body
            .stream()
            .map_err(|()| plugin_bug("the response body was taken twice"))?;
        let skipped = stream::skip(&input, skip)?;
        let moved = if skipped == skip {
            stream::splice(sink, &input, length)?.moved
        } else {
            0
        };
        if skipped < skip || moved < length {
            return Err(TransferError::length_mismatch(format!(
                "the body of {url} ended after {} bytes, before bytes {skip}..{}",
                skipped + moved,
                skip + length
            )));
        }
        Ok(())
    }

    /// Writes the response as an upload's reply: `reply.begin` with the
    /// status and text headers, then the body spliced whole (checked against
    /// its `Content-Length`, when it has one). Returns the body's size.
    pub fn write_reply(self, reply: &ReplySink) -> Result<u64, TransferError> {
        let sink = reply.begin(&self.reply_head())?;
        let expected = self.content_length();
        self.splice_body(&sink, expected)
    }

    /// Reads the whole body into memory, refusing more than `limit` bytes
    /// (a fatal `too-large` error).
    pub fn read_body(self, limit: usize) -> Result<Vec<u8>, TransferError> {
        let body = self.consume()?;
        let data = {
            let input = body
                .stream()
                .map_err(|()| plugin_bug("the response body was taken twice"))?;
            stream::read_to_end(&input, limit)?
        };
        let _trailers = IncomingBody::finish(body);
        Ok(data)
    }

    fn consume(self) -> Result<IncomingBody, TransferError> {
        self.incoming
            .consume()
            .map_err(|()| plugin_bug("the response body was taken twice"))
    }
}

/// Waits for a response head, checking for cancellation meanwhile.
fn wait_response(future: FutureIncomingResponse, url: &str) -> Result<Response, TransferError> {
    let ready = future.subscribe();
    let incoming = loop {
        if let Some(result) = future.get() {
            break result;
        }
        check_cancelled()?;
        let tick = monotonic_clock::subscribe_duration(CANCEL_CHECK_NS);
        poll::poll(&[&ready, &tick]);
    };
    let incoming = incoming
        .map_err(|()| plugin_bug("the response was taken twice"))?
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

/// Maps a `wasi:http` error code to a typed error.
///
/// A request the host's policy refused (`HTTP-request-denied`) is a fatal
/// `host-not-granted` of the policy (the host puts its own message on it);
/// the connection's failures are transient `other` codes of the transport:
/// `dns-failed`, `connection-refused`, `connection-failed`, `timeout`,
/// `tls-failed`, `connection-dropped` for a response that broke off; a URL
/// the host cannot send is a fatal `invalid-url`, a certificate refused a
/// fatal `tls-certificate`.
pub fn error_from_code(code: &HttpErrorCode, url: &str) -> TransferError {
    use HttpErrorCode as E;
    let transport = |code: &str, what: &str| {
        TransferError::other(
            ErrorClass::Transient,
            ErrorContext::Transport,
            code,
            format!("{what} ({url})"),
        )
    };
    match code {
        E::HttpRequestDenied => TransferError::host_not_granted(format!(
            "the host refused the request to {url}: its host is not granted to this plugin"
        )),
        E::DestinationIpProhibited => TransferError::host_not_granted(format!(
            "the destination address of {url} is prohibited"
        )),
        E::HttpRequestUriInvalid | E::HttpRequestUriTooLong | E::HttpRequestMethodInvalid => {
            invalid_url(url, &format!("{code:?}"))
        }
        E::DnsTimeout | E::DnsError(_) => {
            transport("dns-failed", "the host name could not be resolved")
        }
        E::DestinationNotFound | E::DestinationUnavailable | E::DestinationIpUnroutable => {
            transport("connection-failed", "the destination cannot be reached")
        }
        E::ConnectionRefused => transport("connection-refused", "the connection was refused"),
        E::ConnectionTimeout | E::ConnectionReadTimeout | E::ConnectionWriteTimeout => {
            transport("timeout", "the connection timed out")
        }
        E::TlsCertificateError => TransferError::other(
            ErrorClass::Fatal,
            ErrorContext::Transport,
            "tls-certificate",
            format!("the server's certificate was not accepted ({url})"),
        ),
        E::TlsProtocolError | E::TlsAlertReceived(_) => {
            transport("tls-failed", "the TLS handshake failed")
        }
        E::ConnectionTerminated | E::HttpResponseIncomplete => TransferError::connection_dropped(
            format!("the connection broke off before the response was whole ({url})"),
        ),
        other => transport(
            "connection-failed",
            &format!("the request failed: {other:?}"),
        ),
    }
}

fn parse_url(url: &str) -> Result<Url, TransferError> {
    let parsed = Url::parse(url).map_err(|e| invalid_url(url, &e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(invalid_url(url, "only http and https are spoken"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid_url(url, "the URL has no host"));
    }
    Ok(parsed)
}

/// A fatal `invalid-url` error of the remote file.
pub fn invalid_url(url: &str, why: &str) -> TransferError {
    TransferError::other(
        ErrorClass::Fatal,
        ErrorContext::RemoteFile,
        "invalid-url",
        format!("{url} is not a usable URL: {why}"),
    )
}

fn plugin_bug(what: &str) -> TransferError {
    TransferError::other(
        ErrorClass::Transient,
        ErrorContext::Plugin,
        "plugin-bug",
        what.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BasicCredentials;

    fn job() -> JobContext {
        JobContext {
            job_id: "job-1".into(),
            headers: vec![
                Header {
                    name: "X-Owner".into(),
                    value: "secret".into(),
                },
                Header {
                    name: "Accept-Encoding".into(),
                    value: "gzip".into(),
                },
            ],
            credentials: Some(Credentials::Basic(BasicCredentials {
                user: "u".into(),
                password: "p".into(),
            })),
            network: NetworkSettings {
                max_redirects: 5,
                connect_timeout_ms: 1,
                first_byte_timeout_ms: 2,
                between_bytes_timeout_ms: 3,
            },
        }
    }

    fn names(request: &Request) -> Vec<String> {
        request
            .outgoing_headers()
            .into_iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn job_headers_and_credentials_go_to_the_origin() {
        let request = Request::for_job(&job(), Method::Get, "http://a.example:8080/f")
            .unwrap()
            .header("accept-encoding", "identity")
            .header("cookie", "c=1");
        let headers = request.outgoing_headers();
        assert_eq!(
            names(&request),
            ["x-owner", "accept-encoding", "cookie", "authorization"]
        );
        assert_eq!(
            headers[1].1, "identity",
            "the plugin's header replaces the owner's"
        );
        assert_eq!(headers[3].1, "Basic dTpw");
        // Same origin, another path: everything stays.
        let same = request.redirected(302, "/g").unwrap();
        assert_eq!(same.url().as_str(), "http://a.example:8080/g");
        assert_eq!(names(&same), names(&request));
    }

    #[test]
    fn leaving_the_origin_drops_the_owners_headers_for_good() {
        let request = Request::for_job(&job(), Method::Get, "http://a.example:8080/f")
            .unwrap()
            .header("range", "bytes=5-")
            .header("cookie", "c=1")
            .header("proxy-authorization", "Basic eA==");
        for location in [
            "http://b.example:8080/f",
            "https://a.example:8080/f",
            "http://a.example:8081/f",
            "http://a.example/f",
        ] {
            let away = request.redirected(301, location).unwrap();
            assert_eq!(names(&away), ["range"], "{location}");
            // Coming back to the origin does not restore them.
            let back = away.redirected(307, "http://a.example:8080/f").unwrap();
            assert_eq!(names(&back), ["range"], "{location}");
        }
    }

    #[test]
    fn see_other_becomes_get_and_bad_locations_fail() {
        let request = Request::for_job(&job(), Method::Post, "http://a.example/f").unwrap();
        assert_eq!(
            *request.redirected(303, "/g").unwrap().method(),
            Method::Get
        );
        assert_eq!(
            *request.redirected(307, "/g").unwrap().method(),
            Method::Post
        );
        let head = Request::new(Method::Head, "http://a.example/f").unwrap();
        assert_eq!(*head.redirected(303, "/g").unwrap().method(), Method::Head);
        assert!(request.redirected(302, "ftp://a.example/g").is_err());
        assert!(Request::new(Method::Get, "mirror://a.example/").is_err());
        assert!(Request::new(Method::Get, "not a url").is_err());
    }

    #[test]
    fn wasi_http_errors_keep_their_codes() {
        let code = |e: &HttpErrorCode| error_from_code(e, "http://a/").code.to_string();
        assert_eq!(code(&HttpErrorCode::HttpRequestDenied), "host-not-granted");
        let denied = error_from_code(&HttpErrorCode::HttpRequestDenied, "http://a/");
        assert!(matches!(denied.context, ErrorContext::Policy));
        assert!(!denied.is_transient());
        assert_eq!(code(&HttpErrorCode::DnsTimeout), "dns-failed");
        assert_eq!(
            code(&HttpErrorCode::ConnectionRefused),
            "connection-refused"
        );
        assert_eq!(code(&HttpErrorCode::ConnectionReadTimeout), "timeout");
        assert_eq!(code(&HttpErrorCode::TlsProtocolError), "tls-failed");
        assert_eq!(code(&HttpErrorCode::TlsCertificateError), "tls-certificate");
        assert_eq!(code(&HttpErrorCode::HttpRequestUriInvalid), "invalid-url");
        assert_eq!(
            code(&HttpErrorCode::ConnectionTerminated),
            "connection-dropped"
        );
        assert_eq!(
            code(&HttpErrorCode::DestinationUnavailable),
            "connection-failed"
        );
        assert!(error_from_code(&HttpErrorCode::ConnectionRefused, "http://a/").is_transient());
    }
}
