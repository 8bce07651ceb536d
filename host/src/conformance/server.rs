//! The suite's loopback HTTP/1.1 server, scripted per path.
//!
//! It is written on raw TCP rather than on an HTTP library because its job is
//! to misbehave on purpose: declare one length and send another, cut a
//! connection off mid-body (cleanly or with a reset), send a chunked body
//! without its last chunk, announce the wrong `Content-Range`. Every response
//! closes its connection, so what a plugin sees is exactly what was scripted.
//! Every request is recorded (method, target, headers, body size) so a failed
//! check can show what the plugin asked.
//!
//! A path serves a [`Route`]: a [`Resource`] (content, validators, ranges and
//! the ways to misbehave), a redirect, a bare status, or a tus 1.0 upload
//! endpoint ([`Route::Uploads`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The most a request head may take.
const MAX_HEAD: usize = 64 << 10;

/// One request the server received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    /// Which server received it (`a`, `b`, `ungranted`).
    pub server: String,
    pub method: String,
    /// The path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The size of the request body received.
    pub body_bytes: u64,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// One line: `GET /a/b (server a) range=bytes=5-`.
    pub fn line(&self) -> String {
        let interesting: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.to_ascii_lowercase().as_str(),
                    "host" | "user-agent" | "accept" | "content-length" | "connection"
                )
            })
            .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
            .collect();
        let body = if self.body_bytes > 0 {
            format!(" [{} body bytes]", self.body_bytes)
        } else {
            String::new()
        };
        format!(
            "{} {} (server {}){body}{}",
            self.method,
            self.target,
            self.server,
            if interesting.is_empty() {
                String::new()
            } else {
                format!(" {{{}}}", interesting.join("; "))
            }
        )
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// As declared.
    #[default]
    Whole,
    /// After this many body bytes the connection is closed cleanly (FIN).
    CloseAfter(usize),
    /// After this many body bytes the connection is reset (RST).
    ResetAfter(usize),
}

/// A resource a path serves.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    pub body: Vec<u8>,
    /// A strong or weak ETag, with its quotes.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Whether `Range` is honoured (and `Accept-Ranges: bytes` sent).
    pub ranges: bool,
    /// Whether `Content-Length` is sent (else the body is chunked).
    pub length: bool,
    /// A `Content-Range` to send instead of the right one.
    pub wrong_range: Option<String>,
    /// Extra bytes sent after the declared body (chunked bodies only: a
    /// `Content-Length` body cannot be longer on the wire).
    pub extra: usize,
    pub ending: Ending,
    /// Body chunks of this size, each after `delay`.
    pub slow: Option<(usize, Duration)>,
    /// Wait this long before the response head.
    pub head_delay: Option<Duration>,
    /// Send only this many bytes of the body, ending it cleanly (chunked
    /// bodies: a body shorter than its `Content-Range`).
    pub truncate: Option<usize>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Answer every request, ranged or not, with this status and the body
    /// (a 206 without a range asked, for example).
    pub force_status: Option<u16>,
}

impl Resource {
    /// `body` with a strong ETag, Last-Modified, ranges and a length.
    pub fn new(body: Vec<u8>) -> Resource {
        Resource {
            body,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            ranges: true,
            length: true,
            ..Resource::default()
        }
    }
}

/// A tus 1.0 upload endpoint's state and script.
#[derive(Debug, Clone, Default)]
pub struct Uploads {
    /// Upload sessions by path: (declared length, bytes received).
    pub sessions: HashMap<String, (u64, Vec<u8>)>,
    pub next: u32,
    /// Answer this many requests 503 before serving.
    pub unavailable: u32,
    /// Reset the next PATCH after this many body bytes (kept by the server).
    pub reset_patch_after: Option<usize>,
    /// Answer this many requests 503 once the next PATCH was reset.
    pub unavailable_after_reset: u32,
    /// The body of the answer to the PATCH that completes an upload.
    pub reply: Vec<u8>,
    /// Sessions cancelled by `DELETE`.
    pub deleted: Vec<String>,
}

/// What a path serves.
#[derive(Debug, Clone)]
pub enum Route {
    Resource(Resource),
    /// A redirect with this status to this `Location` (none: no header).
    Redirect(u16, Option<String>),
    /// This status with a small body.
    Status(u16),
    /// A tus 1.0 upload endpoint: `POST` here creates sessions under it.
    Uploads(Uploads),
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    requests: Vec<Recorded>,
}

/// A loopback server, stopped when dropped.
pub struct Server {
    name: String,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start(name: &str) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, server) = (state.clone(), name.to_string());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, server) = (shared.clone(), server.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &state, &server).await;
                });
            }
        });
        Ok(Server {
            name: name.to_string(),
            addr,
            state,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The plain `http` URL of `path` on this server.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets what `path` serves.
    pub fn route(&self, path: &str, route: Route) {
        self.lock().routes.insert(path.to_string(), route);
    }

    /// Changes the resource at `path`.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Resource)) {
        if let Some(Route::Resource(resource)) = self.lock().routes.get_mut(path) {
            change(resource);
        }
    }

    /// The upload endpoint at `path`, as it stands.
    pub fn uploads(&self, path: &str) -> Uploads {
        match self.lock().routes.get(path) {
            Some(Route::Uploads(uploads)) => uploads.clone(),
            _ => Uploads::default(),
        }
    }

    /// Changes the upload endpoint at `path`.
    pub fn update_uploads(&self, path: &str, change: impl FnOnce(&mut Uploads)) {
        if let Some(Route::Uploads(uploads)) = self.lock().routes.get_mut(path) {
            change(uploads);
        }
    }

    /// The requests received since the last [`Server::reset`].
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Forgets every route and recorded request.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.routes.clear();
        state.requests.clear();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A parsed request.
struct Incoming {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to write.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the body chunked, with this many extra bytes after it.
    chunked: bool,
    ending: Ending,
    slow: Option<(usize, Duration)>,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: format!("status {status}\n").into_bytes(),
            chunked: false,
            ending: Ending::Whole,
            slow: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn empty(mut self) -> Reply {
        self.body.clear();
        self
    }
}

async fn serve(mut stream: TcpStream, state: &Mutex<State>, server: &str) -> std::io::Result<()> {
    let Some((request, reset_after)) = read_request(&mut stream, state).await? else {
        return Ok(());
    };
    let route = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .routes
        .get(request.target.split('?').next().unwrap_or(""))
        .cloned();
    let (path, _) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let path = path.to_string();
    let mut head_delay = None;
    let reply = match route {
        None => match upload_session(state, &path) {
            Some(endpoint) => tus(state, &endpoint, &path, &request, reset_after),
            None => Reply::status(404),
        },
        Some(Route::Status(status)) => Reply::status(status),
        Some(Route::Redirect(status, location)) => {
            let reply = Reply::status(status);
            match location {
                Some(location) => reply.header("location", location),
                None => reply,
            }
        }
        Some(Route::Resource(resource)) => {
            head_delay = resource.head_delay;
            resource_reply(&resource, &request)
        }
        Some(Route::Uploads(_)) => tus(state, &path, &path, &request, reset_after),
    };
    record(state, server, &request);
    if reset_after {
        return reset(stream).await;
    }
    if let Some(delay) = head_delay {
        tokio::time::sleep(delay).await;
    }
    write_reply(stream, reply, request.method == "HEAD").await
}

fn record(state: &Mutex<State>, server: &str, request: &Incoming) {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(Recorded {
            server: server.to_string(),
            method: request.method.clone(),
            target: request.target.clone(),
            headers: request.headers.clone(),
            body_bytes: request.body.len() as u64,
        });
}

/// Reads one request. The flag says the connection must be reset now (a
/// scripted cut of an upload's body, whose received bytes are kept).
async fn read_request(
    stream: &mut TcpStream,
    state: &Mutex<State>,
) -> std::io::Result<Option<(Incoming, bool)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut request = Incoming {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let cut = if request.method == "PATCH" {
        let path = request.target.split('?').next().unwrap_or("").to_string();
        upload_session(state, &path).and_then(|endpoint| {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            match state.routes.get_mut(&endpoint) {
                Some(Route::Uploads(uploads)) => uploads.reset_patch_after.take(),
                _ => None,
            }
        })
    } else {
        None
    };
    if let Some(length) = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let want = cut.map_or(length, |cut| cut.min(length));
        while rest.len() < want {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(want);
        request.body = rest;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked(stream, rest, cut).await?;
    }
    Ok(Some((request, cut.is_some())))
}

/// Decodes a chunked request body (up to `cut` bytes of it).
async fn read_chunked(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    cut: Option<usize>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if cut.is_some_and(|cut| body.len() >= cut) {
            body.truncate(cut.unwrap_or(0));
            return Ok(body);
        }
        if let Some(at) = find(&buf, b"\r\n") {
            let size_line = String::from_utf8_lossy(&buf[..at]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                return Ok(body);
            }
            if buf.len() >= at + 2 + size + 2 {
                body.extend_from_slice(&buf[at + 2..at + 2 + size]);
                buf.drain(..at + 2 + size + 2);
                continue;
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(body);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The response of a resource to `request`: ranges, validators and the
/// scripted misbehaviour.
fn resource_reply(resource: &Resource, request: &Incoming) -> Reply {
    let len = resource.body.len();
    let mut reply = Reply::status(200);
    reply.body = resource.body.clone();
    let range = resource
        .ranges
        .then(|| request.header("range").and_then(parse_range))
        .flatten();
    let if_range_holds = match request.header("if-range") {
        None => true,
        Some(value) => {
            Some(value) == resource.etag.as_deref().filter(|e| !e.starts_with("W/"))
                || Some(value) == resource.last_modified.as_deref()
        }
    };
    if let Some((first, last)) = range.filter(|_| if_range_holds) {
        if first >= len as u64 {
            return Reply::status(416)
                .header("content-range", format!("bytes */{len}"))
                .empty();
        }
        let last = last.map_or(len as u64 - 1, |l| l.min(len as u64 - 1));
        reply.status = 206;
        reply.body = resource.body[first as usize..=last as usize].to_vec();
        reply.headers.push((
            "content-range".into(),
            resource
                .wrong_range
                .clone()
                .unwrap_or_else(|| format!("bytes {first}-{last}/{len}")),
        ));
    } else if let (Some(wrong), Some(status)) = (&resource.wrong_range, resource.force_status) {
        reply.status = status;
        reply.headers.push(("content-range".into(), wrong.clone()));
    }
    if let Some(status) = resource.force_status {
        reply.status = status;
    }
    if let Some(etag) = &resource.etag {
        reply.headers.push(("etag".into(), etag.clone()));
    }
    if let Some(date) = &resource.last_modified {
        reply.headers.push(("last-modified".into(), date.clone()));
    }
    if resource.ranges {
        reply.headers.push(("accept-ranges".into(), "bytes".into()));
    } else {
        reply.headers.push(("accept-ranges".into(), "none".into()));
    }
    reply.headers.extend(resource.headers.iter().cloned());
    reply.chunked = !resource.length;
    if let Some(n) = resource.truncate {
        reply.body.truncate(n);
    }
    if resource.extra > 0 {
        reply.body.extend(std::iter::repeat_n(b'x', resource.extra));
    }
    reply.ending = resource.ending;
    reply.slow = resource.slow;
    reply
}

/// `bytes=A-` or `bytes=A-B`.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => None,
        l => Some(l.parse().ok()?),
    };
    Some((first, last))
}

/// The upload endpoint a session path belongs to.
fn upload_session(state: &Mutex<State>, path: &str) -> Option<String> {
    let state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.routes.iter().find_map(|(prefix, route)| {
        (matches!(route, Route::Uploads(_)) && path.starts_with(&format!("{prefix}/")))
            .then(|| prefix.clone())
    })
}

/// The tus 1.0 core protocol with the creation extension. `cut` says the
/// request's body was cut off by a scripted reset.
fn tus(state: &Mutex<State>, endpoint: &str, path: &str, request: &Incoming, cut: bool) -> Reply {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let Some(Route::Uploads(uploads)) = state.routes.get_mut(endpoint) else {
        return Reply::status(404);
    };
    if uploads.unavailable > 0 {
        uploads.unavailable -= 1;
        return Reply::status(503);
    }
    let tus = |reply: Reply| reply.header("tus-resumable", "1.0.0");
    match (request.method.as_str(), path == endpoint) {
        ("POST", true) => {
            let Some(length) = request
                .header("upload-length")
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return tus(Reply::status(400));
            };
            uploads.next += 1;
            let session = format!("{endpoint}/{}", uploads.next);
            uploads
                .sessions
                .insert(session.clone(), (length, Vec::new()));
            tus(Reply::status(201).header("location", session).empty())
        }
        ("HEAD", false) => match uploads.sessions.get(path) {
            Some((length, held)) => tus(Reply::status(200)
                .header("upload-offset", held.len().to_string())
                .header("upload-length", length.to_string())
                .header("cache-control", "no-store")
                .empty()),
            None => tus(Reply::status(404).empty()),
        },
        ("PATCH", false) => {
            let reply_body = uploads.reply.clone();
            if cut {
                uploads.unavailable += std::mem::take(&mut uploads.unavailable_after_reset);
            }
            let Some((length, held)) = uploads.sessions.get_mut(path) else {
                return tus(Reply::status(404));
            };
            let offset = request
                .header("upload-offset")
                .and_then(|v| v.parse::<usize>().ok());
            if offset != Some(held.len()) {
                return tus(Reply::status(409));
            }
            held.extend_from_slice(&request.body);
            let done = held.len() as u64 >= *length;
            let mut reply = tus(Reply::status(if done { 200 } else { 204 })
                .header("upload-offset", held.len().to_string()));
            reply.body = if done { reply_body } else { Vec::new() };
            if done {
                reply = reply.header("content-type", "application/json");
            }
            reply
        }
        ("DELETE", false) => {
            if uploads.sessions.remove(path).is_some() {
                uploads.deleted.push(path.to_string());
                tus(Reply::status(204).empty())
            } else {
                tus(Reply::status(404).empty())
            }
        }
        ("OPTIONS", _) => tus(Reply::status(204)
            .header("tus-version", "1.0.0")
            .header("tus-extension", "creation,termination")
            .empty()),
        _ => tus(Reply::status(405)),
    }
}

async fn write_reply(mut stream: TcpStream, reply: Reply, head_only: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        let declared = reply
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| reply.body.len().to_string());
        if !reply.headers.iter().any(|(n, _)| n == "content-length") {
            head.push_str(&format!("content-length: {declared}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    if head_only || reply.status == 204 || reply.status == 304 {
        return stream.shutdown().await;
    }
    let limit = match reply.ending {
        Ending::Whole => reply.body.len(),
        Ending::CloseAfter(n) | Ending::ResetAfter(n) => n.min(reply.body.len()),
    };
    let piece = reply.slow.map_or(64 << 10, |(size, _)| size.max(1));
    let mut sent = 0;
    while sent < limit {
        if let Some((_, delay)) = reply.slow {
            tokio::time::sleep(delay).await;
        }
        let end = (sent + piece).min(limit);
        let bytes = &reply.body[sent..end];
        if reply.chunked {
            stream
                .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                .await?;
            stream.write_all(bytes).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(bytes).await?;
        }
        stream.flush().await?;
        sent = end;
    }
    match reply.ending {
        Ending::Whole => {
            if reply.chunked {
                stream.write_all(b"0\r\n\r\n").await?;
            }
            stream.shutdown().await
        }
        Ending::CloseAfter(_) => stream.shutdown().await,
        Ending::ResetAfter(_) => {
            // Give the bytes already written time to leave before the reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            reset(stream).await
        }
    }
}

/// Closes `stream` with a reset instead of a clean FIN.
async fn reset(stream: TcpStream) -> std::io::Result<()> {
    // A linger of zero resets at once: the drop does not block.
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=5-"), Some((5, None)));
        assert_eq!(parse_range("bytes=5-9"), Some((5, Some(9))));
        assert_eq!(parse_range("bytes=1-2,4-5"), None);
        assert_eq!(parse_range("items=1-2"), None);
    }
}
