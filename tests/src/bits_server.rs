//! A server of the BITS upload protocol ([MC-BUP]) on loopback, written to
//! the protocol's published specification, and a plain `PUT`/`POST` sink.
//!
//! Under `/bits/` every request is a `BITS_POST` whose `BITS-Packet-Type`
//! says what it is:
//! - `Ping`: an `Ack`.
//! - `Create-Session`: the client must offer the upload protocol
//!   ([`UPLOAD_PROTOCOL`]) in `BITS-Supported-Protocols`; the `Ack` names it
//!   (`BITS-Protocol`) and a new `BITS-Session-Id`.
//! - `Fragment`: `Content-Range: bytes FIRST-LAST/TOTAL` and exactly that many
//!   bytes. Fragments must be contiguous from 0: a fragment that does not start
//!   where the received bytes end (a gap, or an overlap) is answered `416` with
//!   `BITS-Received-Content-Range` (where the next one must start) and changes
//!   nothing (§3.2.5.2.6). A bad `Content-Range` is `400` with `E_INVALIDARG`.
//!   The `Ack` of the fragment that ends the entity names the reply
//!   (`BITS-Reply-URL`) unless replies are off.
//! - `Close-Session`: commits the upload; before the last fragment it
//!   deletes what was received and answers `400` with `E_INVALIDARG`.
//! - `Cancel-Session`: deletes the session.
//!
//! A session the server does not know is `500` with `BG_E_SESSION_NOT_FOUND`
//! (`0x8020001F`) in `BITS-Error-Code` (and `BITS-Error`, as the specification
//! names it), context `0x5`. The reply at `/bits-reply/SESSION` is JSON
//! (`{"session", "name", "size", "sha256"}`) with a `Repr-Digest` header, or
//! a body of a chosen size ([`BitsServer::set_reply_size`]).
//!
//! Under `/plain/` a `PUT` or `POST` stores its body and answers `201` with the
//! same JSON and `Repr-Digest`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The GUID of the BITS upload protocol.
pub const UPLOAD_PROTOCOL: &str = "{7df0354d-249b-430f-820d-3d2a9bef4931}";
/// The session is not known to the server.
pub const BG_E_SESSION_NOT_FOUND: &str = "0x8020001F";
/// The request's headers break the message rules.
pub const E_INVALIDARG: &str = "0x80070057";

/// One BITS session as the server holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitsSession {
    pub id: String,
    /// The bytes received, contiguous from 0.
    pub received: Vec<u8>,
    /// The entity's size, from the first fragment.
    pub total: Option<u64>,
    /// `Content-Name`, when a fragment had one.
    pub name: Option<String>,
    /// Committed by `Close-Session`.
    pub closed: bool,
    /// Deleted (`Cancel-Session`, or a `Close-Session` before the end).
    pub deleted: bool,
}

/// One request as the server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitsRequest {
    pub method: String,
    pub path: String,
    /// `BITS-Packet-Type`, as sent.
    pub packet: Option<String>,
    pub session: Option<String>,
    /// `Content-Range`, as sent.
    pub range: Option<String>,
    /// The body bytes that arrived.
    pub body_len: u64,
    /// `Content-Length`, as sent.
    pub declared_length: Option<String>,
    /// Whether the body came in chunked transfer coding.
    pub chunked: bool,
    pub status: u16,
}

#[derive(Default)]
struct State {
    sessions: Vec<BitsSession>,
    requests: Vec<BitsRequest>,
    plain: HashMap<String, Vec<u8>>,
    next_session: u64,
    no_replies: bool,
    reply_size: Option<u64>,
    wrong_digest: bool,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running BITS server; stops when dropped.
pub struct BitsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl BitsServer {
    /// Starts on `127.0.0.1` (an ephemeral port), on the current runtime.
    pub async fn start() -> BitsServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the BITS server");
        let addr = listener.local_addr().expect("the BITS server's address");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        BitsServer {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/bits/NAME`: a BITS upload URL.
    pub fn bits_url(&self, name: &str) -> String {
        format!("http://{}/bits/{name}", self.addr)
    }

    /// `http://127.0.0.1:PORT/plain/NAME`: a plain PUT/POST URL.
    pub fn plain_url(&self, name: &str) -> String {
        format!("http://{}/plain/{name}", self.addr)
    }

    /// Stops naming a `BITS-Reply-URL` (a simple-upload virtual directory).
    pub fn set_no_replies(&self) {
        self.shared.lock().no_replies = true;
    }

    /// Makes every reply a body of `size` bytes (of the test pattern).
    pub fn set_reply_size(&self, size: u64) {
        self.shared.lock().reply_size = Some(size);
    }

    /// Makes replies report the digest of other bytes.
    pub fn set_wrong_digest(&self) {
        self.shared.lock().wrong_digest = true;
    }

    pub fn sessions(&self) -> Vec<BitsSession> {
        self.shared.lock().sessions.clone()
    }

    pub fn requests(&self) -> Vec<BitsRequest> {
        self.shared.lock().requests.clone()
    }

    /// What a plain PUT/POST stored at `/plain/NAME`.
    pub fn plain(&self, name: &str) -> Option<Vec<u8>> {
        self.shared
            .lock()
            .plain
            .get(&format!("/plain/{name}"))
            .cloned()
    }

    /// Forgets session `id`, as a server that expired it would.
    pub fn forget_session(&self, id: &str) {
        self.shared.lock().sessions.retain(|s| s.id != id);
    }
}

impl Drop for BitsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { serve(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, headers: &[(&str, String)], body: Bytes) -> Answer {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response
        .header("content-length", body.len().to_string())
        .body(Full::new(body))
        .expect("a valid answer")
}

/// An `Ack` (status 200) with `headers`.
fn ack(session: Option<&str>, headers: &[(&str, String)]) -> Answer {
    let mut all = vec![("bits-packet-type", "Ack".to_string())];
    if let Some(session) = session {
        all.push(("bits-session-id", session.to_string()));
    }
    all.extend_from_slice(headers);
    answer(StatusCode::OK, &all, Bytes::new())
}

/// An error `Ack`: `BITS-Error-Code` (and `BITS-Error`) with context 0x5.
fn bits_error(status: StatusCode, session: Option<&str>, code: &str) -> Answer {
    let mut all = vec![
        ("bits-packet-type", "Ack".to_string()),
        ("bits-error-code", code.to_string()),
        ("bits-error", code.to_string()),
        ("bits-error-context", "0x5".to_string()),
    ];
    if let Some(session) = session {
        all.push(("bits-session-id", session.to_string()));
    }
    answer(status, &all, Bytes::new())
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes FIRST-LAST/TOTAL`.
fn parse_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

/// The reply body and `Repr-Digest` for `data` received as `name`.
fn reply_of(state: &State, session: &str, name: Option<&str>, data: &[u8]) -> (Bytes, String) {
    let digest = if state.wrong_digest {
        Sha256::digest(b"other bytes")
    } else {
        Sha256::digest(data)
    };
    let repr = format!("sha-256=:{}:", base64(&digest));
    let body = match state.reply_size {
        Some(size) => Bytes::from(crate::server::pattern_bytes(0..size)),
        None => Bytes::from(
            serde_json::json!({
                "session": session,
                "name": name,
                "size": data.len(),
                "sha256": hex(&digest),
            })
            .to_string(),
        ),
    };
    (body, repr)
}

async fn serve(shared: &Shared, req: Request<Incoming>) -> Result<Answer, hyper::Error> {
    let method = req.method().to_string();
    let path = percent_decoded(req.uri().path());
    let packet = header(&req, "bits-packet-type");
    let session = header(&req, "bits-session-id");
    let range = header(&req, "content-range");
    let name = header(&req, "content-name");
    let protocols = header(&req, "bits-supported-protocols");
    let declared_length = header(&req, "content-length");
    let chunked = header(&req, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    // A body that breaks off is dropped whole, with the connection.
    let body = req.into_body().collect().await?.to_bytes();
    let mut state = shared.lock();
    let response = if let Some(reply_session) = path.strip_prefix("/bits-reply/") {
        match state
            .sessions
            .iter()
            .find(|s| s.id == reply_session && !s.deleted)
        {
            Some(s) if s.total == Some(s.received.len() as u64) => {
                let (body, repr) = reply_of(&state, &s.id, s.name.as_deref(), &s.received);
                answer(
                    StatusCode::OK,
                    &[
                        ("content-type", "application/json".to_string()),
                        ("repr-digest", repr),
                    ],
                    body,
                )
            }
            _ => answer(StatusCode::NOT_FOUND, &[], Bytes::new()),
        }
    } else if path.starts_with("/plain/") {
        if method == "PUT" || method == "POST" {
            let (reply, repr) = reply_of(&state, "", Some(&path), &body);
            state.plain.insert(path.clone(), body.to_vec());
            answer(
                StatusCode::CREATED,
                &[
                    ("content-type", "application/json".to_string()),
                    ("repr-digest", repr),
                ],
                reply,
            )
        } else {
            answer(StatusCode::METHOD_NOT_ALLOWED, &[], Bytes::new())
        }
    } else if !path.starts_with("/bits/") {
        answer(StatusCode::NOT_FOUND, &[], Bytes::new())
    } else if method == Method::OPTIONS.as_str() {
        // Not a tus server.
        answer(
            StatusCode::OK,
            &[("allow", "BITS_POST".to_string())],
            Bytes::new(),
        )
    } else if method != "BITS_POST" {
        answer(StatusCode::METHOD_NOT_ALLOWED, &[], Bytes::new())
    } else {
        bits_packet(
            &mut state,
            packet.as_deref().unwrap_or(""),
            session.as_deref(),
            range.as_deref(),
            name,
            protocols.as_deref(),
            &body,
        )
    };
    state.requests.push(BitsRequest {
        method,
        path,
        packet,
        session,
        range,
        body_len: body.len() as u64,
        declared_length,
        chunked,
        status: response.status().as_u16(),
    });
    Ok(response)
}

fn bits_packet(
    state: &mut State,
    packet: &str,
    session: Option<&str>,
    range: Option<&str>,
    name: Option<String>,
    protocols: Option<&str>,
    body: &[u8],
) -> Answer {
    let packet = packet.to_ascii_lowercase();
    if packet == "ping" {
        return ack(None, &[]);
    }
    if packet == "create-session" {
        let offered = protocols.is_some_and(|p| {
            p.split(' ')
                .any(|g| g.trim().eq_ignore_ascii_case(UPLOAD_PROTOCOL))
        });
        if !offered {
            return bits_error(StatusCode::BAD_REQUEST, None, E_INVALIDARG);
        }
        state.next_session += 1;
        let id = format!(
            "{{{:08x}-0000-4000-8000-{:012x}}}",
            state.next_session,
            std::process::id()
        );
        state.sessions.push(BitsSession {
            id: id.clone(),
            ..BitsSession::default()
        });
        return ack(Some(&id), &[("bits-protocol", UPLOAD_PROTOCOL.to_string())]);
    }
    let no_replies = state.no_replies;
    let Some(index) = session.and_then(|id| {
        state
            .sessions
            .iter()
            .position(|s| s.id.eq_ignore_ascii_case(id) && !s.deleted && !s.closed)
    }) else {
        return bits_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            session,
            BG_E_SESSION_NOT_FOUND,
        );
    };
    let id = state.sessions[index].id.clone();
    match packet.as_str() {
        "fragment" => {
            let Some((first, last, total)) = range.and_then(parse_range) else {
                return bits_error(StatusCode::BAD_REQUEST, Some(&id), E_INVALIDARG);
            };
            let s = &mut state.sessions[index];
            if last - first + 1 != body.len() as u64 || s.total.is_some_and(|t| t != total) {
                return bits_error(StatusCode::BAD_REQUEST, Some(&id), E_INVALIDARG);
            }
            let received = s.received.len() as u64;
            if first != received {
                return answer(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &[
                        ("bits-packet-type", "Ack".to_string()),
                        ("bits-session-id", id.clone()),
                        ("bits-received-content-range", received.to_string()),
                    ],
                    Bytes::new(),
                );
            }
            s.total = Some(total);
            if name.is_some() {
                s.name = name;
            }
            s.received.extend_from_slice(body);
            let next = s.received.len() as u64;
            let mut headers = vec![("bits-received-content-range", next.to_string())];
            if next == total && !no_replies {
                headers.push(("bits-reply-url", format!("/bits-reply/{id}")));
            }
            ack(Some(&id), &headers)
        }
        "close-session" => {
            let s = &mut state.sessions[index];
            if s.total != Some(s.received.len() as u64) {
                // Closed before the last fragment: what came is deleted.
                s.deleted = true;
                s.received.clear();
                return bits_error(StatusCode::BAD_REQUEST, Some(&id), E_INVALIDARG);
            }
            s.closed = true;
            ack(Some(&id), &[])
        }
        "cancel-session" => {
            let s = &mut state.sessions[index];
            s.deleted = true;
            s.received.clear();
            ack(Some(&id), &[])
        }
        _ => bits_error(StatusCode::BAD_REQUEST, Some(&id), E_INVALIDARG),
    }
}

/// `path` with its `%XX` escapes decoded (a session's braces come escaped).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard, padded base64 (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_rfc_4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::parse_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(super::parse_range("bytes 5-4/10"), None);
    }
}
