//! A scriptable HTTP/1.1 server on loopback for Ferry's tests.
//!
//! Ferry's behaviour depends on what real servers do on the wire: ranges, validators,
//! redirects, authentication, truncated bodies, slow links. Tests start a
//! [`TestServer`] on the current tokio runtime, tell it what each path serves with a
//! [`Resource`] (content plus the ways it should misbehave), point the code under test
//! at [`TestServer::url`], and afterwards inspect what was asked
//! ([`TestServer::requests`]) and how many body bytes went out
//! ([`TestServer::bytes_sent`]).
//!
//! Bodies are streamed in 256 KiB chunks generated on the fly, so a
//! [`Resource::pattern`] of several GiB costs no memory and can be pulled at
//! benchmark speed. The server stops when its handle is dropped or
//! [`TestServer::shutdown`] is called.
//!
//! Uploads go to a resumable upload endpoint in the style of the tus core protocol
//! ([`TestServer::accept_uploads`], scripted with an [`UploadEndpoint`]); tests read
//! back what each upload received ([`TestServer::upload`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// Size of the body chunks handed to hyper: big enough for >1 GB/s on loopback.
const CHUNK: u64 = 256 * 1024;

/// How long an injected connection drop waits before closing, so that the bytes
/// already handed to hyper are flushed to the socket first.
const DROP_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Realm announced in `WWW-Authenticate` challenges.
const REALM: &str = "ferry-test";

// ---------------------------------------------------------------------------
// Deterministic content
// ---------------------------------------------------------------------------

/// splitmix64's finaliser: a cheap, well-mixing 64-bit hash.
#[inline]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Length of the pattern table, and of the blocks the pattern is made of.
const TABLE_LEN: usize = 1 << 20;

/// 1 MiB of hash output, stored twice in a row so that any window of up to 1 MiB
/// starting in the first copy is one slice: generating pattern content is then a
/// `memcpy`, fast even in unoptimised test builds.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Vec::with_capacity(2 * TABLE_LEN);
        for word in 0..(TABLE_LEN / 8) as u64 {
            table.extend_from_slice(&mix(word).to_le_bytes());
        }
        table.extend_from_within(..TABLE_LEN);
        table
    })
}

/// Where in the table the 1 MiB block `block` of content seed `seed` starts. Every
/// block gets its own hashed rotation, and successive seeds shift it by an odd
/// amount, so two versions of a resource never share a block.
fn rotation(seed: u64, block: u64) -> usize {
    let shift = mix(block).wrapping_add(seed.wrapping_mul(0x9E37_79B9));
    (shift % TABLE_LEN as u64) as usize
}

/// Fills `buf` with the pattern of content seed `seed`, starting at `offset`.
fn fill_pattern_seeded(seed: u64, mut offset: u64, mut buf: &mut [u8]) {
    let table = table();
    while !buf.is_empty() {
        let within = (offset % TABLE_LEN as u64) as usize;
        let n = (TABLE_LEN - within).min(buf.len());
        let start = (within + rotation(seed, offset / TABLE_LEN as u64)) % TABLE_LEN;
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(n);
        head.copy_from_slice(&table[start..start + n]);
        buf = rest;
        offset += n as u64;
    }
}

/// The byte at `offset` of every [`Resource::pattern`] (in its first version).
///
/// Tests use it to check downloaded files without keeping a copy of the content.
/// The pattern is random-looking hash output laid out in 1 MiB blocks, each a
/// differently rotated window of one table, so it has no short period that could
/// hide misplaced or repeated chunks.
pub fn pattern_byte(offset: u64) -> u8 {
    let within = (offset % TABLE_LEN as u64) as usize;
    table()[(within + rotation(0, offset / TABLE_LEN as u64)) % TABLE_LEN]
}

/// The bytes `range` of every [`Resource::pattern`] (in its first version).
pub fn pattern_bytes(range: Range<u64>) -> Vec<u8> {
    let len = range.end.saturating_sub(range.start);
    let mut out = vec![0; usize::try_from(len).expect("range too large for memory")];
    fill_pattern(range.start, &mut out);
    out
}

/// Fills `buf` with the pattern bytes starting at `offset`; the allocation-free form
/// of [`pattern_bytes`], for verifying big files piece by piece.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    fill_pattern_seeded(0, offset, buf);
}

/// Standard base64 (with padding), for `Authorization: Basic`.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

/// What a resource's body is made of.
#[derive(Clone, Debug)]
enum Kind {
    /// Literal bytes.
    Bytes(Bytes),
    /// `len` bytes of the deterministic pattern for `seed`.
    Pattern { len: u64, seed: u64 },
    /// A bare status with a short text body.
    Status(StatusCode),
    /// A redirect to `location`.
    Redirect(StatusCode, String),
}

/// Where the ETag of a resource comes from.
#[derive(Clone, Debug)]
enum EtagMode {
    /// Derived from the content version, so it changes whenever the content does.
    Auto,
    /// A fixed opaque tag (without quotes or `W/`), even if the content changes.
    Fixed(String),
    /// No ETag at all.
    Off,
}

/// What one path serves and how it misbehaves.
///
/// Built with a constructor ([`Resource::bytes`], [`Resource::pattern`],
/// [`Resource::status`], [`Resource::redirect`]) and chained modifiers. Content
/// resources support single byte ranges, `If-Range`, `If-Match` and
/// `If-None-Match`, and carry a strong ETag derived from a version counter that
/// changes with the content.
#[derive(Clone, Debug)]
pub struct Resource {
    kind: Kind,
    version: u64,
    etag: EtagMode,
    weak: bool,
    last_modified: Option<String>,
    ranges: bool,
    length: bool,
    head_status: Option<StatusCode>,
    drop_after: Option<u64>,
    drop_times: u32,
    stall_after: Option<u64>,
    wrong_content_range: bool,
    rate: Option<u64>,
    header_delay: Option<Duration>,
    auth: Option<Auth>,
    required_headers: Vec<(String, String)>,
    extra_headers: Vec<(String, String)>,
    gzip: bool,
    changes_each_request: bool,
}

/// A credential a resource insists on.
#[derive(Clone, Debug)]
enum Auth {
    Basic(String),
    Bearer(String),
}

impl Auth {
    fn expected(&self) -> String {
        match self {
            Auth::Basic(token) => format!("Basic {token}"),
            Auth::Bearer(token) => format!("Bearer {token}"),
        }
    }

    fn challenge(&self) -> String {
        match self {
            Auth::Basic(_) => format!("Basic realm=\"{REALM}\""),
            Auth::Bearer(_) => format!("Bearer realm=\"{REALM}\""),
        }
    }

    fn accepts(&self, header: Option<&str>) -> bool {
        let Some(header) = header else { return false };
        let expected = self.expected();
        let (scheme, token) = expected.split_once(' ').unwrap_or((&expected, ""));
        match header.trim().split_once(' ') {
            Some((s, t)) => s.eq_ignore_ascii_case(scheme) && t.trim() == token,
            None => false,
        }
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("invalid HTTP status code {code}"))
}

impl Resource {
    fn new(kind: Kind) -> Self {
        Resource {
            kind,
            version: 1,
            etag: EtagMode::Auto,
            weak: false,
            last_modified: None,
            ranges: true,
            length: true,
            head_status: None,
            drop_after: None,
            drop_times: 0,
            stall_after: None,
            wrong_content_range: false,
            rate: None,
            header_delay: None,
            auth: None,
            required_headers: Vec::new(),
            extra_headers: Vec::new(),
            gzip: false,
            changes_each_request: false,
        }
    }

    /// Serves these exact bytes (a `Vec<u8>`, `&'static [u8]`, `String`, `Bytes`…).
    pub fn bytes(data: impl Into<Bytes>) -> Self {
        Self::new(Kind::Bytes(data.into()))
    }

    /// Serves `len` bytes of the deterministic pattern ([`pattern_byte`]), generated
    /// on the fly: any size costs no memory.
    pub fn pattern(len: u64) -> Self {
        Self::new(Kind::Pattern { len, seed: 0 })
    }

    /// Answers every request with status `code` and a short text body.
    pub fn status(code: u16) -> Self {
        Self::new(Kind::Status(status_code(code)))
    }

    /// Answers with redirect status `code` (301, 302, 303, 307, 308…) to `location`.
    pub fn redirect(code: u16, location: impl Into<String>) -> Self {
        Self::new(Kind::Redirect(status_code(code), location.into()))
    }

    /// Sets the entity tag: `Some(tag)` is sent as is if it is already quoted (or
    /// `W/`-prefixed) and quoted otherwise, and stays the same even when the content
    /// changes; `None` sends no ETag. The default is a strong tag derived from the
    /// content version.
    pub fn etag(mut self, etag: Option<String>) -> Self {
        self.etag = match etag {
            None => EtagMode::Off,
            Some(tag) => {
                let tag = tag.trim();
                let (weak, opaque) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                self.weak |= weak;
                let opaque = opaque
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(opaque);
                EtagMode::Fixed(opaque.to_owned())
            }
        };
        self
    }

    /// Makes the ETag weak (`W/"..."`): never good enough for `If-Range`.
    pub fn weak_etag(mut self) -> Self {
        self.weak = true;
        self
    }

    /// Sets the `Last-Modified` value (an HTTP-date such as
    /// `"Wed, 21 Oct 2015 07:28:00 GMT"`); `If-Range` dates are compared to it
    /// literally. Default: none.
    pub fn last_modified(mut self, date: Option<String>) -> Self {
        self.last_modified = date;
        self
    }

    /// Ignores `Range` and answers 200 with the full body, without
    /// `Accept-Ranges: bytes`: a server that cannot resume.
    pub fn no_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }

    /// Sends no `Content-Length` (the body goes chunked; HEAD has no length either):
    /// a server that does not know the size in advance.
    pub fn no_length(mut self) -> Self {
        self.length = false;
        self
    }

    /// Answers HEAD with status `code` (e.g. 403 or 405) while GET keeps working.
    pub fn head_refused(mut self, code: u16) -> Self {
        self.head_status = Some(status_code(code));
        self
    }

    /// On the next GET only, sends `n_bytes` of the response body and then closes the
    /// connection abruptly (the declared length stays the full one, so the client sees
    /// a truncated body). If the response body is not longer than `n_bytes` it is sent
    /// whole.
    pub fn drop_after(self, n_bytes: u64) -> Self {
        self.drop_after_times(n_bytes, 1)
    }

    /// Like [`Resource::drop_after`], for the next `times` GETs.
    pub fn drop_after_times(mut self, n_bytes: u64, times: u32) -> Self {
        self.set_drop_after(n_bytes, times);
        self
    }

    /// Sends `n_bytes` of every GET's body and then hangs without closing: a server
    /// that stops answering mid-transfer (for stall timeouts).
    pub fn stall_after(mut self, n_bytes: u64) -> Self {
        self.stall_after = Some(n_bytes);
        self
    }

    /// Answers range requests with 206 and a `Content-Range` whose start differs from
    /// the requested one (the body matches the announced, wrong, range).
    pub fn wrong_content_range(mut self) -> Self {
        self.wrong_content_range = true;
        self
    }

    /// Throttles the body to about `bytes_per_sec`.
    pub fn slow(mut self, bytes_per_sec: u64) -> Self {
        assert!(bytes_per_sec > 0, "slow(0) would never send anything");
        self.rate = Some(bytes_per_sec);
        self
    }

    /// Waits `delay` before sending the response head.
    pub fn delay_headers(mut self, delay: Duration) -> Self {
        self.header_delay = Some(delay);
        self
    }

    /// Answers 401 with a `Basic` challenge unless the request carries these
    /// credentials.
    pub fn require_basic(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some(Auth::Basic(base64(format!("{user}:{pass}").as_bytes())));
        self
    }

    /// Answers 401 with a `Bearer` challenge unless the request carries this token.
    pub fn require_bearer(mut self, token: &str) -> Self {
        self.auth = Some(Auth::Bearer(token.to_owned()));
        self
    }

    /// Answers 400 unless the request has header `name` with exactly `value`.
    pub fn require_header(mut self, name: &str, value: &str) -> Self {
        self.required_headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Adds a header to every response of this resource (e.g. `Retry-After`,
    /// `Content-Disposition`, `Content-Type`); it replaces a default header of the
    /// same name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sends `Content-Encoding: gzip` with the bytes as given (not compressed by the
    /// server): the client must store what was served, without decoding it.
    pub fn gzip_encoded(mut self) -> Self {
        self.gzip = true;
        self
    }

    /// After each GET the content changes (new version, new ETag, different bytes):
    /// a resource that is modified between requests.
    pub fn content_changes_each_request(mut self) -> Self {
        self.changes_each_request = true;
        self
    }

    /// Replaces the content with `data` and bumps the version (so the ETag changes).
    pub fn set_bytes(&mut self, data: impl Into<Bytes>) {
        self.kind = Kind::Bytes(data.into());
        self.version += 1;
    }

    /// Replaces the content with `len` bytes of the standard pattern and bumps the
    /// version.
    pub fn set_pattern(&mut self, len: u64) {
        self.kind = Kind::Pattern { len, seed: 0 };
        self.version += 1;
    }

    /// Arms (or re-arms) the connection drop of [`Resource::drop_after_times`].
    pub fn set_drop_after(&mut self, n_bytes: u64, times: u32) {
        self.drop_after = Some(n_bytes);
        self.drop_times = times;
    }

    /// Changes the content to a new, different version: pattern content gets a new
    /// seed, literal bytes are scrambled. The ETag changes with it.
    pub fn change_content(&mut self) {
        self.version += 1;
        match &mut self.kind {
            Kind::Pattern { seed, .. } => *seed = seed.wrapping_add(1),
            Kind::Bytes(data) => {
                // XOR with a non-zero byte: every byte differs from the last version.
                let key = (mix(self.version) as u8) | 1;
                *data = data.iter().map(|b| b ^ key).collect::<Vec<u8>>().into();
            }
            Kind::Status(_) | Kind::Redirect(..) => {}
        }
    }

    /// Applies builder-style modifiers to a resource held by reference, e.g. inside
    /// [`TestServer::update`]: `r.apply(|r| r.no_ranges())`.
    pub fn apply(&mut self, f: impl FnOnce(Resource) -> Resource) {
        let placeholder = Resource::new(Kind::Status(StatusCode::NOT_FOUND));
        let this = std::mem::replace(self, placeholder);
        *self = f(this);
    }

    /// The content version: 1 at first, bumped by every content change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The content length (0 for status and redirect resources).
    pub fn len(&self) -> u64 {
        match &self.kind {
            Kind::Bytes(data) => data.len() as u64,
            Kind::Pattern { len, .. } => *len,
            Kind::Status(_) | Kind::Redirect(..) => 0,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `ETag` header value currently sent, if any.
    pub fn etag_value(&self) -> Option<String> {
        let opaque = match (&self.kind, &self.etag) {
            (Kind::Status(_) | Kind::Redirect(..), _) | (_, EtagMode::Off) => return None,
            (_, EtagMode::Fixed(tag)) => tag.clone(),
            (_, EtagMode::Auto) => format!("v{}-{}", self.version, self.len()),
        };
        Some(if self.weak {
            format!("W/\"{opaque}\"")
        } else {
            format!("\"{opaque}\"")
        })
    }

    /// The current content bytes in `range` (clamped to the length), to compare
    /// with what a client stored.
    pub fn content(&self, range: Range<u64>) -> Vec<u8> {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        match &self.kind {
            Kind::Bytes(data) => data[start as usize..end as usize].to_vec(),
            Kind::Pattern { seed, .. } => {
                let mut out = vec![0; (end - start) as usize];
                fill_pattern_seeded(*seed, start, &mut out);
                out
            }
            Kind::Status(_) | Kind::Redirect(..) => Vec::new(),
        }
    }

    fn source(&self) -> Source {
        match &self.kind {
            Kind::Bytes(data) => Source::Bytes(data.clone()),
            Kind::Pattern { seed, .. } => Source::Pattern(*seed),
            Kind::Status(_) | Kind::Redirect(..) => Source::Bytes(Bytes::new()),
        }
    }
}

// ---------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------

/// Where body bytes come from.
enum Source {
    Bytes(Bytes),
    Pattern(u64),
}

impl Source {
    fn read(&self, offset: u64, len: u64) -> Bytes {
        match self {
            Source::Bytes(data) => data.slice(offset as usize..(offset + len) as usize),
            Source::Pattern(seed) => {
                let mut buf = BytesMut::zeroed(len as usize);
                fill_pattern_seeded(*seed, offset, &mut buf);
                buf.freeze()
            }
        }
    }
}

/// Body throttling state.
struct Throttle {
    bytes_per_sec: u64,
    start: Option<Instant>,
    sent: u64,
}

/// A streamed response body: the bytes `pos..end` of a source, in chunks, with the
/// injected faults applied.
struct ServeBody {
    source: Source,
    pos: u64,
    end: u64,
    /// Absolute offset at which the connection is dropped.
    fail_at: Option<u64>,
    /// Absolute offset at which the body stops forever.
    stall_at: Option<u64>,
    failing: bool,
    throttle: Option<Throttle>,
    sleep: Option<Pin<Box<Sleep>>>,
    counter: Option<Arc<AtomicU64>>,
}

impl ServeBody {
    fn empty() -> Self {
        Self::text(Bytes::new())
    }

    fn text(data: Bytes) -> Self {
        let end = data.len() as u64;
        ServeBody {
            source: Source::Bytes(data),
            pos: 0,
            end,
            fail_at: None,
            stall_at: None,
            failing: false,
            throttle: None,
            sleep: None,
            counter: None,
        }
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                if this.failing {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "test server: injected connection drop",
                    ))));
                }
            }
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            if this.fail_at.is_some_and(|at| this.pos >= at) {
                // Give hyper time to flush what it already has, then fail: hyper
                // closes the connection when the body errors.
                this.failing = true;
                this.sleep = Some(Box::pin(tokio::time::sleep(DROP_FLUSH_DELAY)));
                continue;
            }
            if this.stall_at.is_some_and(|at| this.pos >= at) {
                // Never woken: the response hangs until the client or the server goes.
                return Poll::Pending;
            }
            let mut n = CHUNK.min(this.end - this.pos);
            for limit in [this.fail_at, this.stall_at].into_iter().flatten() {
                n = n.min(limit - this.pos);
            }
            if let Some(throttle) = this.throttle.as_mut() {
                n = n.min((throttle.bytes_per_sec / 20).clamp(1, CHUNK));
                let now = Instant::now();
                let start = *throttle.start.get_or_insert(now);
                let due = start
                    + Duration::from_secs_f64(throttle.sent as f64 / throttle.bytes_per_sec as f64);
                if due > now {
                    this.sleep = Some(Box::pin(tokio::time::sleep_until(due.into())));
                    continue;
                }
                throttle.sent += n;
            }
            let data = this.source.read(this.pos, n);
            this.pos += n;
            if let Some(counter) = &this.counter {
                counter.fetch_add(n, Ordering::Relaxed);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// One request as the server received it, for assertions on what the client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`…
    pub method: String,
    /// The path including the query string, e.g. `/file?x=1`.
    pub path: String,
    /// Every header in order, names lowercase; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        strip_query(&self.path)
    }
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Inner {
    resources: HashMap<String, Resource>,
    requests: Vec<RecordedRequest>,
    sent: HashMap<String, Arc<AtomicU64>>,
    upload_endpoints: HashMap<String, UploadEndpoint>,
    uploads: Vec<Upload>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running loopback HTTP/1.1 server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// A second handle on the listening socket, used to stop listening at once.
    #[cfg(unix)]
    listener_handle: Option<std::net::TcpStream>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1` with an ephemeral port, on the current tokio
    /// runtime, serving nothing yet (every path is 404).
    pub async fn start() -> TestServer {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test server");
        std_listener
            .set_nonblocking(true)
            .expect("make the test server's socket non-blocking");
        let addr = std_listener.local_addr().expect("test server address");
        #[cfg(unix)]
        let listener_handle = std_listener
            .try_clone()
            .ok()
            .map(|l| std::net::TcpStream::from(std::os::fd::OwnedFd::from(l)));
        let listener = TcpListener::from_std(std_listener).expect("register the test server");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        TestServer {
            addr,
            shared,
            accept,
            #[cfg(unix)]
            listener_handle,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// Serves `resource` at `path` (a path, optionally with a query string that must
    /// then match exactly), replacing what was there.
    pub fn put(&self, path: &str, resource: Resource) {
        self.shared
            .lock()
            .resources
            .insert(path.to_owned(), resource);
    }

    /// Changes the resource at `path` in place, e.g.
    /// `server.update("/f", |r| r.set_bytes(new))` (which also changes the ETag).
    ///
    /// Panics if nothing is served at `path`.
    pub fn update(&self, path: &str, f: impl FnOnce(&mut Resource)) {
        let mut inner = self.shared.lock();
        let resource = inner
            .resources
            .get_mut(path)
            .unwrap_or_else(|| panic!("test server: nothing is served at {path}"));
        f(resource);
    }

    /// Stops serving `path` (it becomes 404) and returns what it served.
    pub fn remove(&self, path: &str) -> Option<Resource> {
        self.shared.lock().resources.remove(path)
    }

    /// A copy of the resource at `path` as it is now (current version, ETag, content).
    pub fn resource(&self, path: &str) -> Option<Resource> {
        self.shared.lock().resources.get(path).cloned()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests for `path`: exactly that path and query, or, if `path` has no
    /// query, that path with any query.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path || (!path.contains('?') && r.path_only() == path))
            .cloned()
            .collect()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Content body bytes written for the resource at `path` over all requests
    /// (status, redirect, error and HEAD answers count nothing).
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.shared
            .lock()
            .sent
            .get(path)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Accepts resumable uploads under `prefix` (e.g. `/uploads`), replacing any
    /// endpoint there: `POST prefix` creates an upload, `HEAD`, `PATCH` and `DELETE`
    /// on `prefix/ID` ask, append and delete (see [`UploadEndpoint`]).
    pub fn accept_uploads(&self, prefix: &str) {
        self.accept_uploads_with(prefix, UploadEndpoint::default());
    }

    /// Like [`TestServer::accept_uploads`], with replies and faults scripted.
    pub fn accept_uploads_with(&self, prefix: &str, endpoint: UploadEndpoint) {
        self.shared
            .lock()
            .upload_endpoints
            .insert(prefix.trim_end_matches('/').to_owned(), endpoint);
    }

    /// Changes the upload endpoint at `prefix` in place, e.g.
    /// `server.update_uploads("/up", |e| e.apply(|e| e.unavailable_once()))`.
    ///
    /// Panics if no endpoint is at `prefix`.
    pub fn update_uploads(&self, prefix: &str, f: impl FnOnce(&mut UploadEndpoint)) {
        let mut inner = self.shared.lock();
        let endpoint = inner
            .upload_endpoints
            .get_mut(prefix.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("test server: no upload endpoint at {prefix}"));
        f(endpoint);
    }

    /// Every upload created so far, in creation order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.lock().uploads.clone()
    }

    /// The upload at `path` (its `Location`, e.g. `/uploads/1`), as it is now.
    pub fn upload(&self, path: &str) -> Option<Upload> {
        self.shared
            .lock()
            .uploads
            .iter()
            .find(|u| u.path == path)
            .cloned()
    }

    /// Forgets the upload at `path` as a server that expired it would: it
    /// answers 404 from now on (and shows as deleted).
    pub fn forget_upload(&self, path: &str) {
        if let Some(upload) = self
            .shared
            .lock()
            .uploads
            .iter_mut()
            .find(|u| u.path == path)
        {
            upload.deleted = true;
        }
    }

    /// Stops the server now: the port refuses new connections and open connections
    /// are closed (as when the handle is dropped).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket makes Linux refuse new connections at
        // once, before the aborted task gets around to closing the socket.
        #[cfg(unix)]
        if let Some(handle) = self.listener_handle.take() {
            let _ = handle.shutdown(std::net::Shutdown::Both);
        }
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
    }
}

/// Starts a server that serves `resource` at `path`.
pub async fn start_with(path: &str, resource: Resource) -> TestServer {
    let server = TestServer::start().await;
    server.put(path, resource);
    server
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                // The listening socket was shut down.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return,
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            match upload_endpoint(&shared, req.uri().path()) {
                // An error makes hyper close the connection: an injected drop.
                Some(prefix) => handle_upload(&shared, &prefix, req).await,
                None => Ok(handle(&shared, req).await),
            }
        }
    });
    // Errors here are clients going away or injected drops: nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A response decided under the state lock, sent after it is released.
struct Plan {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: ServeBody,
    delay: Option<Duration>,
}

impl Plan {
    fn simple(status: StatusCode, head: bool) -> Plan {
        let text = format!("{status}\n");
        Plan {
            status,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("content-length".into(), text.len().to_string()),
            ],
            body: if head {
                ServeBody::empty()
            } else {
                ServeBody::text(Bytes::from(text))
            },
            delay: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Plan {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

async fn handle<B>(shared: &Shared, req: Request<B>) -> Response<ServeBody> {
    let recorded = record(&req);
    let plan = plan(shared, req.method(), recorded);
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(plan.status);
    for (name, value) in &plan.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(plan.body)
        .expect("test server built an invalid response")
}

fn record<B>(req: &Request<B>) -> RecordedRequest {
    RecordedRequest {
        method: req.method().as_str().to_owned(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

/// Records the request and decides the answer.
fn plan(shared: &Shared, method: &Method, request: RecordedRequest) -> Plan {
    let mut guard = shared.lock();
    let inner = &mut *guard;
    inner.requests.push(request.clone());
    let head = method == Method::HEAD;

    let key = if inner.resources.contains_key(&request.path) {
        request.path.clone()
    } else {
        request.path_only().to_owned()
    };
    let Some(resource) = inner.resources.get_mut(&key) else {
        return Plan::simple(StatusCode::NOT_FOUND, head);
    };
    let delay = resource.header_delay;
    let mut plan = decide(resource, method, &request);
    plan.delay = delay;
    for (name, value) in &resource.extra_headers {
        plan.headers.retain(|(n, _)| n != name);
        plan.headers.push((name.clone(), value.clone()));
    }
    if plan.body.counter.is_some() {
        let counter = inner.sent.entry(key).or_default().clone();
        plan.body.counter = Some(counter);
    }
    plan
}

fn decide(resource: &mut Resource, method: &Method, request: &RecordedRequest) -> Plan {
    let head = method == Method::HEAD;
    if let Some(auth) = &resource.auth
        && !auth.accepts(request.header("authorization"))
    {
        return Plan::simple(StatusCode::UNAUTHORIZED, head)
            .header("www-authenticate", auth.challenge());
    }
    for (name, value) in &resource.required_headers {
        if request.header(name) != Some(value.as_str()) {
            return Plan::simple(StatusCode::BAD_REQUEST, head);
        }
    }
    if *method != Method::GET && !head {
        return Plan::simple(StatusCode::METHOD_NOT_ALLOWED, head).header("allow", "GET, HEAD");
    }
    if head && let Some(status) = resource.head_status {
        return Plan::simple(status, true);
    }
    match &resource.kind {
        Kind::Status(status) => return Plan::simple(*status, head),
        Kind::Redirect(status, location) => {
            return Plan::simple(*status, head).header("location", location.clone());
        }
        Kind::Bytes(_) | Kind::Pattern { .. } => {}
    }

    let len = resource.len();
    let etag = resource.etag_value();
    let mut headers = vec![(
        "content-type".to_owned(),
        "application/octet-stream".to_owned(),
    )];
    if let Some(etag) = &etag {
        headers.push(("etag".into(), etag.clone()));
    }
    if let Some(date) = &resource.last_modified {
        headers.push(("last-modified".into(), date.clone()));
    }
    if resource.ranges {
        headers.push(("accept-ranges".into(), "bytes".into()));
    }
    if resource.gzip {
        headers.push(("content-encoding".into(), "gzip".into()));
    }
    let bare = |status: StatusCode, headers: Vec<(String, String)>| Plan {
        status,
        headers,
        body: ServeBody::empty(),
        delay: None,
    };

    // Preconditions, in the order of RFC 9110 section 13.2.2.
    if let Some(if_match) = request.header("if-match")
        && !matches_etag_list(if_match, etag.as_deref(), true)
    {
        return Plan::simple(StatusCode::PRECONDITION_FAILED, head);
    }
    if let Some(if_none_match) = request.header("if-none-match")
        && matches_etag_list(if_none_match, etag.as_deref(), false)
    {
        headers.retain(|(n, _)| n != "content-type");
        return bare(StatusCode::NOT_MODIFIED, headers);
    }

    let mut status = StatusCode::OK;
    let mut range = 0..len;
    if resource.ranges
        && let Some(spec) = request.header("range")
        && if_range_holds(request.header("if-range"), etag.as_deref(), resource)
    {
        match parse_range(spec, len) {
            RangeRequest::Ignore => {}
            RangeRequest::Unsatisfiable => {
                headers.push(("content-range".into(), format!("bytes */{len}")));
                headers.push(("content-length".into(), "0".into()));
                return bare(StatusCode::RANGE_NOT_SATISFIABLE, headers);
            }
            RangeRequest::Satisfiable(wanted) => {
                status = StatusCode::PARTIAL_CONTENT;
                range = wanted;
                if resource.wrong_content_range {
                    let n = range.end - range.start;
                    let start = if range.start == 0 { 1.min(len) } else { 0 };
                    range = start..(start + n).min(len);
                }
                let announced_end = range.end.max(range.start + 1) - 1;
                headers.push((
                    "content-range".into(),
                    format!("bytes {}-{announced_end}/{len}", range.start),
                ));
            }
        }
    }
    if resource.length {
        headers.push((
            "content-length".into(),
            (range.end - range.start).to_string(),
        ));
    }
    if head {
        return bare(status, headers);
    }

    let mut body = ServeBody::text(Bytes::new());
    body.source = resource.source();
    body.pos = range.start;
    body.end = range.end;
    body.counter = Some(Arc::default());
    if resource.drop_times > 0
        && let Some(n) = resource.drop_after
    {
        resource.drop_times -= 1;
        body.fail_at = Some(range.start.saturating_add(n)).filter(|&at| at < range.end);
    }
    body.stall_at = resource.stall_after.map(|n| range.start.saturating_add(n));
    body.throttle = resource.rate.map(|bytes_per_sec| Throttle {
        bytes_per_sec,
        start: None,
        sent: 0,
    });
    if resource.changes_each_request {
        resource.change_content();
    }
    Plan {
        status,
        headers,
        body,
        delay: None,
    }
}

/// Whether an `If-Match`/`If-None-Match` list matches `etag`, with the strong or
/// weak comparison of RFC 9110 section 8.8.3.2.
fn matches_etag_list(list: &str, etag: Option<&str>, strong: bool) -> bool {
    let Some(etag) = etag else { return false };
    if list.trim() == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|candidate| {
        if strong {
            !candidate.starts_with("W/") && !etag.starts_with("W/") && candidate == etag
        } else {
            candidate.trim_start_matches("W/") == etag.trim_start_matches("W/")
        }
    })
}

/// Whether `If-Range` (if any) lets the Range header apply: only an exact strong
/// ETag or exactly the Last-Modified date does.
fn if_range_holds(if_range: Option<&str>, etag: Option<&str>, resource: &Resource) -> bool {
    let Some(value) = if_range.map(str::trim) else {
        return true;
    };
    if value.starts_with('"') || value.starts_with("W/") {
        matches!(etag, Some(e) if !e.starts_with("W/") && !value.starts_with("W/") && e == value)
    } else {
        resource.last_modified.as_deref() == Some(value)
    }
}

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Invalid, not in bytes, or several ranges: answer with the full body.
    Ignore,
    /// Answer 416.
    Unsatisfiable,
    /// Answer 206 with these bytes.
    Satisfiable(Range<u64>),
}

fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some((unit, specs)) = header.split_once('=') else {
        return RangeRequest::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Ignore;
    }
    let specs: Vec<&str> = specs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs.as_slice() else {
        return RangeRequest::Ignore;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(suffix) = number(last) else {
            return RangeRequest::Ignore;
        };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Satisfiable(len.saturating_sub(suffix)..len);
    }
    let Some(start) = number(first) else {
        return RangeRequest::Ignore;
    };
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            Some(last) if last >= start => last.saturating_add(1).min(len),
            _ => return RangeRequest::Ignore,
        }
    };
    if start >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Satisfiable(start..end)
    }
}

// ---------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------

/// How a resumable upload endpoint answers and misbehaves.
///
/// The protocol is the core of tus 1.0: `POST PREFIX` with `Upload-Length` creates
/// an upload (201, `Location: PREFIX/ID`); `HEAD PREFIX/ID` tells its
/// `Upload-Offset`; `PATCH PREFIX/ID` with an `Upload-Offset` equal to the bytes
/// held appends its body (409 otherwise) and answers 204 with the new
/// `Upload-Offset`, or 200 with the reply once every byte is there; `DELETE
/// PREFIX/ID` deletes it (204), after which it is 404. What a `PATCH` sent is kept
/// even when its connection breaks off; a newer request for the same upload stops
/// an older `PATCH` still in flight (its client has given up on it), so a resumed
/// upload never races the bytes of an abandoned one.
#[derive(Clone, Debug, Default)]
pub struct UploadEndpoint {
    reply: Option<Bytes>,
    unavailable: u32,
    drop_after: Option<u64>,
    rate: Option<u64>,
}

impl UploadEndpoint {
    /// The body of the final answer of every upload. The default is a small JSON
    /// object: `{"upload":"PATH","received":N}`.
    pub fn reply(mut self, body: impl Into<Bytes>) -> Self {
        self.reply = Some(body.into());
        self
    }

    /// Answers the next `times` requests (any method) with 503.
    pub fn unavailable(mut self, times: u32) -> Self {
        self.unavailable = times;
        self
    }

    /// Answers the next request with 503.
    pub fn unavailable_once(self) -> Self {
        self.unavailable(1)
    }

    /// Keeps the first `n_bytes` of the next `PATCH` body, then closes its
    /// connection without answering.
    pub fn drop_patch_after(mut self, n_bytes: u64) -> Self {
        self.drop_after = Some(n_bytes);
        self
    }

    /// Reads `PATCH` bodies at about `bytes_per_sec`.
    pub fn slow(mut self, bytes_per_sec: u64) -> Self {
        assert!(bytes_per_sec > 0, "slow(0) would never receive anything");
        self.rate = Some(bytes_per_sec);
        self
    }

    /// Reads `PATCH` bodies as fast as they come again.
    pub fn fast(mut self) -> Self {
        self.rate = None;
        self
    }

    /// Applies builder-style modifiers in place, e.g. inside
    /// [`TestServer::update_uploads`].
    pub fn apply(&mut self, f: impl FnOnce(UploadEndpoint) -> UploadEndpoint) {
        *self = f(std::mem::take(self));
    }
}

/// One upload as the server holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Its path, as sent in `Location` (e.g. `/uploads/1`).
    pub path: String,
    /// The `Upload-Length` it was created with.
    pub length: u64,
    /// The bytes received so far.
    pub received: Vec<u8>,
    /// Whether it was deleted (`DELETE`).
    pub deleted: bool,
    /// Bumped by each request for the upload: only the `PATCH` that holds the
    /// current value may append.
    writer: u64,
}

impl Upload {
    /// Whether every byte arrived.
    pub fn is_complete(&self) -> bool {
        self.received.len() as u64 == self.length
    }
}

/// The prefix of the upload endpoint serving `path`, if any.
fn upload_endpoint(shared: &Shared, path: &str) -> Option<String> {
    let inner = shared.lock();
    inner
        .upload_endpoints
        .keys()
        .find(|prefix| {
            path == prefix.as_str()
                || path
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        })
        .cloned()
}

/// A response with a short body of the upload endpoint.
fn upload_answer(
    status: StatusCode,
    headers: &[(&str, String)],
    body: Bytes,
) -> Response<ServeBody> {
    let mut response = Response::builder()
        .status(status)
        .header("tus-resumable", "1.0.0")
        .header("cache-control", "no-store")
        .header("content-length", body.len().to_string());
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response
        .body(ServeBody::text(body))
        .expect("test server built an invalid response")
}

/// Serves one request of the upload endpoint at `prefix`. An `Err` closes the
/// connection without an answer (an injected drop).
async fn handle_upload(
    shared: &Shared,
    prefix: &str,
    req: Request<Incoming>,
) -> Result<Response<ServeBody>, std::io::Error> {
    let recorded = record(&req);
    let path = recorded.path_only().to_owned();
    let simple =
        |status: StatusCode| upload_answer(status, &[], Bytes::from(format!("{status}\n")));
    let (drop_after, rate, writer) = {
        let mut inner = shared.lock();
        inner.requests.push(recorded.clone());
        let Inner {
            upload_endpoints,
            uploads,
            ..
        } = &mut *inner;
        let endpoint = upload_endpoints
            .get_mut(prefix)
            .expect("the endpoint was found for this request");
        if endpoint.unavailable > 0 {
            endpoint.unavailable -= 1;
            return Ok(simple(StatusCode::SERVICE_UNAVAILABLE));
        }
        let method = req.method().clone();
        if path == prefix {
            if method != Method::POST {
                return Ok(simple(StatusCode::METHOD_NOT_ALLOWED));
            }
            let Some(length) = recorded
                .header("upload-length")
                .and_then(|v| v.trim().parse().ok())
            else {
                return Ok(simple(StatusCode::BAD_REQUEST));
            };
            let location = format!("{prefix}/{}", uploads.len() + 1);
            uploads.push(Upload {
                path: location.clone(),
                length,
                received: Vec::new(),
                deleted: false,
                writer: 0,
            });
            return Ok(upload_answer(
                StatusCode::CREATED,
                &[("location", location)],
                Bytes::new(),
            ));
        }
        let Some(upload) = uploads.iter_mut().find(|u| u.path == path && !u.deleted) else {
            return Ok(simple(StatusCode::NOT_FOUND));
        };
        upload.writer += 1;
        let writer = upload.writer;
        let held = upload.received.len().to_string();
        let offset = || ("upload-offset", held.clone());
        match method {
            Method::HEAD => {
                let length = ("upload-length", upload.length.to_string());
                return Ok(upload_answer(
                    StatusCode::OK,
                    &[offset(), length],
                    Bytes::new(),
                ));
            }
            Method::DELETE => {
                upload.deleted = true;
                return Ok(upload_answer(StatusCode::NO_CONTENT, &[], Bytes::new()));
            }
            Method::PATCH => {}
            _ => return Ok(simple(StatusCode::METHOD_NOT_ALLOWED)),
        }
        let claimed: Option<usize> = recorded
            .header("upload-offset")
            .and_then(|v| v.trim().parse().ok());
        if claimed != Some(upload.received.len()) {
            let status = if claimed.is_some() {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            return Ok(upload_answer(status, &[offset()], Bytes::new()));
        }
        (endpoint.drop_after.take(), endpoint.rate, writer)
    };

    // Append the body as it arrives, so a broken-off PATCH keeps what it sent.
    let mut body = req.into_body();
    let started = Instant::now();
    let mut taken = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(|f| f.into_data()) else {
            break; // the client went away: keep what arrived
        };
        let Ok(mut data) = data else { continue };
        let dropping = drop_after.is_some_and(|n| taken + data.len() as u64 >= n);
        if let Some(n) = drop_after.filter(|_| dropping) {
            data.truncate((n - taken) as usize);
        }
        {
            let mut inner = shared.lock();
            let Some(upload) = inner.uploads.iter_mut().find(|u| u.path == path) else {
                break;
            };
            if upload.writer != writer {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "test server: a newer request took over the upload",
                ));
            }
            if (upload.received.len() + data.len()) as u64 > upload.length {
                return Ok(simple(StatusCode::BAD_REQUEST));
            }
            upload.received.extend_from_slice(&data);
        }
        taken += data.len() as u64;
        if dropping {
            tokio::time::sleep(DROP_FLUSH_DELAY).await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "test server: injected connection drop",
            ));
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(taken as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let inner = shared.lock();
    let Some(upload) = inner.uploads.iter().find(|u| u.path == path) else {
        return Ok(simple(StatusCode::NOT_FOUND));
    };
    let offset = [("upload-offset", upload.received.len().to_string())];
    if !upload.is_complete() {
        return Ok(upload_answer(StatusCode::NO_CONTENT, &offset, Bytes::new()));
    }
    let reply = inner
        .upload_endpoints
        .get(prefix)
        .and_then(|e| e.reply.clone());
    let reply = reply.unwrap_or_else(|| {
        Bytes::from(format!(
            "{{\"upload\":\"{}\",\"received\":{}}}",
            upload.path,
            upload.received.len()
        ))
    });
    Ok(upload_answer(StatusCode::OK, &offset, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response as a minimal raw client saw it.
    #[derive(Debug)]
    struct Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The body ended as its framing said (length reached or last chunk seen).
        complete: bool,
    }

    impl Raw {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends one request with `Connection: close` and reads the answer until EOF.
    async fn send(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
        let raw = exchange(server, method, path, headers, None).await;
        parse(&raw, method == "HEAD")
    }

    /// Like [`send`], with a body and its `Content-Length`.
    async fn send_body(
        server: &TestServer,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Raw {
        let raw = exchange(server, method, path, headers, Some(body)).await;
        parse(&raw, method == "HEAD")
    }

    /// Sends one request and returns the raw bytes of the answer.
    async fn exchange(
        server: &TestServer,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body.unwrap_or_default());
        let exchange = async {
            let mut stream = TcpStream::connect(server.addr()).await.unwrap();
            stream.write_all(&request).await.unwrap();
            let mut raw = Vec::new();
            // An abrupt close may surface as a reset: keep what arrived.
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            raw
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("request timed out")
    }

    async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Raw {
        send(server, "GET", path, headers).await
    }

    fn parse(raw: &[u8], head: bool) -> Raw {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no complete response head");
        let text = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let rest = &raw[split + 4..];
        let mut response = Raw {
            status,
            headers,
            body: Vec::new(),
            complete: false,
        };
        if head {
            assert!(rest.is_empty(), "HEAD response with a body");
            response.complete = true;
        } else if response.header("transfer-encoding") == Some("chunked") {
            let (body, complete) = dechunk(rest);
            response.body = body;
            response.complete = complete;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().unwrap();
            assert!(rest.len() <= len, "more body than Content-Length");
            response.body = rest.to_vec();
            response.complete = rest.len() == len;
        } else {
            response.body = rest.to_vec();
            response.complete = true;
        }
        response
    }

    fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        loop {
            let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
                return (body, false);
            };
            let size_text = std::str::from_utf8(&data[..eol]).unwrap();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            data = &data[eol + 2..];
            if size == 0 {
                return (body, data.starts_with(b"\r\n"));
            }
            if data.len() < size + 2 {
                body.extend_from_slice(&data[..size.min(data.len())]);
                return (body, false);
            }
            body.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }

    #[test]
    fn pattern_is_consistent_and_not_periodic() {
        let whole = pattern_bytes(0..4096);
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(*b, pattern_byte(i as u64));
        }
        // Unaligned windows agree with the whole.
        assert_eq!(pattern_bytes(13..1001), whole[13..1001]);
        let mut buf = [0u8; 5];
        fill_pattern(4091, &mut buf);
        assert_eq!(buf, whole[4091..]);
        // No small period.
        for period in 1..=512 {
            assert_ne!(
                whole[..1024],
                whole[period..period + 1024],
                "period {period}"
            );
        }
        // Bytes are spread out.
        let distinct: std::collections::HashSet<u8> = whole.iter().copied().collect();
        assert!(distinct.len() > 200);
        // Across the 1 MiB blocks: consistent, and blocks are not copies of each other.
        let mib = TABLE_LEN as u64;
        let across = pattern_bytes(mib - 100..3 * mib + 100);
        for offset in [mib - 100, mib - 1, mib, mib + 1, 2 * mib, 3 * mib + 99] {
            assert_eq!(
                across[(offset - (mib - 100)) as usize],
                pattern_byte(offset)
            );
        }
        let block = |b: u64| pattern_bytes(b * mib..(b + 1) * mib);
        let (first, second) = (block(0), block(1));
        assert_ne!(first, second);
        assert_ne!(first[..1024], second[..1024]);
        // Other seeds (later versions of a resource) differ.
        let mut seen = vec![whole.clone()];
        for seed in 1..8 {
            let mut other = vec![0; 4096];
            fill_pattern_seeded(seed, 0, &mut other);
            assert!(!seen.contains(&other), "seed {seed}");
            seen.push(other);
        }
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn ranges_parse_per_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable(0..10));
        assert_eq!(parse_range("bytes=90-200", 100), Satisfiable(90..100));
        assert_eq!(parse_range("bytes=10-", 100), Satisfiable(10..100));
        assert_eq!(parse_range("bytes=-30", 100), Satisfiable(70..100));
        assert_eq!(parse_range("bytes=-300", 100), Satisfiable(0..100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("bytes=5-1", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), Ignore);
    }

    #[tokio::test]
    async fn full_get_has_length_validators_and_content() {
        let server = start_with("/a.bin", Resource::bytes(&b"hello world"[..])).await;
        let r = get(&server, "/a.bin", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("11"));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("etag"), Some("\"v1-11\""));
        assert!(r.complete);
        assert_eq!(r.body, b"hello world");
        assert_eq!(server.bytes_sent("/a.bin"), 11);

        let requests = server.requests_for("/a.bin");
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].header("Host"), Some("test"));
        assert_eq!(get(&server, "/missing", &[]).await.status, 404);
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn range_requests_get_206_with_the_right_bytes() {
        let server = start_with("/p", Resource::pattern(1_000_000)).await;
        let r = get(&server, "/p", &[("Range", "bytes=1000-1999")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/1000000"));
        assert_eq!(r.header("content-length"), Some("1000"));
        assert_eq!(r.body, pattern_bytes(1000..2000));

        let r = get(&server, "/p", &[("Range", "bytes=999990-")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, pattern_bytes(999_990..1_000_000));

        let r = get(&server, "/p", &[("Range", "bytes=-5")]).await;
        assert_eq!(
            r.header("content-range"),
            Some("bytes 999995-999999/1000000")
        );
        assert_eq!(r.body, pattern_bytes(999_995..1_000_000));

        let r = get(&server, "/p", &[("Range", "bytes=1000000-")]).await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */1000000"));

        let r = get(&server, "/p", &[("Range", "bytes=0-1,5-6")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 1_000_000);
        assert_eq!(server.bytes_sent("/p"), 1000 + 10 + 5 + 1_000_000);
    }

    #[tokio::test]
    async fn if_range_mismatch_sends_the_full_body() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT".to_owned();
        let server = start_with(
            "/f",
            Resource::bytes(&b"0123456789"[..]).last_modified(Some(date.clone())),
        )
        .await;
        let range = ("Range", "bytes=5-");
        let r = get(&server, "/f", &[range, ("If-Range", "\"v1-10\"")]).await;
        assert_eq!((r.status, r.body.as_slice()), (206, &b"56789"[..]));
        let r = get(&server, "/f", &[range, ("If-Range", "\"other\"")]).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
        let r = get(&server, "/f", &[range, ("If-Range", &date)]).await;
        assert_eq!(r.status, 206);
        let r = get(
            &server,
            "/f",
            &[range, ("If-Range", "Thu, 22 Oct 2015 07:28:00 GMT")],
        )
        .await;
        assert_eq!(r.status, 200);

        // After an update the old validator no longer holds.
        server.update("/f", |r| r.set_bytes(&b"abcdefghij"[..]));
        let r = get(&server, "/f", &[range, ("If-Range", "\"v1-10\"")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("etag"), Some("\"v2-10\""));
        assert_eq!(r.body, b"abcdefghij");

        // Weak tags never satisfy If-Range.
        server.put("/w", Resource::bytes(&b"0123456789"[..]).weak_etag());
        let r = get(&server, "/w", &[]).await;
        let etag = r.header("etag").unwrap().to_owned();
        assert_eq!(etag, "W/\"v1-10\"");
        let r = get(&server, "/w", &[range, ("If-Range", &etag)]).await;
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn preconditions_use_the_current_etag() {
        let server = start_with("/f", Resource::bytes(&b"abc"[..])).await;
        assert_eq!(
            get(&server, "/f", &[("If-Match", "\"v1-3\"")]).await.status,
            200
        );
        assert_eq!(
            get(&server, "/f", &[("If-Match", "\"v0-3\"")]).await.status,
            412
        );
        let r = get(&server, "/f", &[("If-None-Match", "\"v1-3\"")]).await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn no_ranges_always_sends_everything() {
        let server = start_with("/f", Resource::bytes(&b"0123456789"[..]).no_ranges()).await;
        let r = get(&server, "/f", &[("Range", "bytes=5-")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("accept-ranges"), None);
        assert_eq!(r.header("content-range"), None);
        assert_eq!(r.body, b"0123456789");
    }

    #[tokio::test]
    async fn drop_after_truncates_the_next_get_only() {
        let server = start_with("/p", Resource::pattern(3 * CHUNK + 7).drop_after(300_000)).await;
        let r = get(&server, "/p", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("786439"));
        assert!(!r.complete, "the body must look truncated");
        assert_eq!(r.body, pattern_bytes(0..300_000));
        assert_eq!(server.bytes_sent("/p"), 300_000);

        let r = get(&server, "/p", &[]).await;
        assert!(r.complete);
        assert_eq!(r.body.len() as u64, 3 * CHUNK + 7);

        // Ranges count from the range start; several drops can be armed.
        server.update("/p", |r| r.set_drop_after(10, 2));
        for _ in 0..2 {
            let r = get(&server, "/p", &[("Range", "bytes=100-")]).await;
            assert_eq!(r.status, 206);
            assert!(!r.complete);
            assert_eq!(r.body, pattern_bytes(100..110));
        }
        assert!(
            get(&server, "/p", &[("Range", "bytes=100-")])
                .await
                .complete
        );
    }

    #[tokio::test]
    async fn head_mirrors_get_unless_refused() {
        let server = start_with("/f", Resource::bytes(vec![7u8; 42])).await;
        let r = send(&server, "HEAD", "/f", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("42"));
        assert_eq!(r.header("etag"), Some("\"v1-42\""));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));

        server.update("/f", |r| r.apply(|r| r.head_refused(405)));
        assert_eq!(send(&server, "HEAD", "/f", &[]).await.status, 405);
        let r = get(&server, "/f", &[]).await;
        assert_eq!((r.status, r.body.len()), (200, 42));
        assert_eq!(server.bytes_sent("/f"), 42);
    }

    #[tokio::test]
    async fn status_and_redirect_resources() {
        let server = TestServer::start().await;
        server.put("/gone", Resource::status(410));
        server.put("/busy", Resource::status(503).header("Retry-After", "1"));
        server.put("/old", Resource::redirect(301, server.url("/new")));
        let r = get(&server, "/gone", &[]).await;
        assert_eq!(r.status, 410);
        assert!(r.complete);
        let r = get(&server, "/busy", &[]).await;
        assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
        let r = get(&server, "/old", &[]).await;
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some(server.url("/new").as_str()));
        assert_eq!(get(&server, "/new", &[]).await.status, 404);
    }

    #[tokio::test]
    async fn no_length_sends_chunked() {
        let server = start_with("/p", Resource::pattern(CHUNK + 3).no_length()).await;
        let r = get(&server, "/p", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.complete);
        assert_eq!(r.body, pattern_bytes(0..CHUNK + 3));
        let r = send(&server, "HEAD", "/p", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), None);
    }

    #[tokio::test]
    async fn authentication_and_required_headers() {
        let server = TestServer::start().await;
        server.put(
            "/basic",
            Resource::bytes(&b"b"[..]).require_basic("user", "pw"),
        );
        server.put("/bearer", Resource::bytes(&b"t"[..]).require_bearer("tok"));
        server.put(
            "/hdr",
            Resource::bytes(&b"h"[..]).require_header("X-Key", "k1"),
        );

        let r = get(&server, "/basic", &[]).await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"ferry-test\"")
        );
        let auth = format!("Basic {}", base64(b"user:pw"));
        assert_eq!(
            get(&server, "/basic", &[("Authorization", &auth)])
                .await
                .status,
            200
        );
        let wrong = format!("Basic {}", base64(b"user:nope"));
        assert_eq!(
            get(&server, "/basic", &[("Authorization", &wrong)])
                .await
                .status,
            401
        );

        assert_eq!(get(&server, "/bearer", &[]).await.status, 401);
        let r = get(&server, "/bearer", &[("Authorization", "Bearer tok")]).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"t"[..]));

        assert_eq!(get(&server, "/hdr", &[]).await.status, 400);
        assert_eq!(get(&server, "/hdr", &[("x-key", "k1")]).await.status, 200);
        assert_eq!(server.bytes_sent("/hdr"), 1);
    }

    #[tokio::test]
    async fn content_changes_each_request_changes_etag_and_bytes() {
        let server = TestServer::start().await;
        server.put("/p", Resource::pattern(64).content_changes_each_request());
        server.put(
            "/b",
            Resource::bytes(&b"abcdef"[..]).content_changes_each_request(),
        );
        for path in ["/p", "/b"] {
            let first = get(&server, path, &[]).await;
            let second = get(&server, path, &[]).await;
            assert_ne!(first.header("etag"), second.header("etag"));
            assert_ne!(first.body, second.body);
            assert_eq!(first.body.len(), second.body.len());
            let now = server.resource(path).unwrap();
            assert_eq!(now.version(), 3);
            let third = get(&server, path, &[]).await;
            assert_eq!(third.body, now.content(0..64));
            assert_eq!(third.header("etag"), now.etag_value().as_deref());
        }
    }

    #[tokio::test]
    async fn wrong_content_range_announces_another_start() {
        let server = start_with("/f", Resource::pattern(1000).wrong_content_range()).await;
        let r = get(&server, "/f", &[("Range", "bytes=500-599")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 0-99/1000"));
        assert_eq!(r.body, pattern_bytes(0..100));
    }

    #[tokio::test]
    async fn gzip_etag_and_extra_headers() {
        let server = start_with(
            "/g",
            Resource::bytes(&b"\x1f\x8b raw"[..])
                .gzip_encoded()
                .etag(Some("abc".into())),
        )
        .await;
        let r = get(&server, "/g", &[]).await;
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("etag"), Some("\"abc\""));
        assert_eq!(r.body, b"\x1f\x8b raw");
        server.update("/g", |r| r.apply(|r| r.etag(None)));
        assert_eq!(get(&server, "/g", &[]).await.header("etag"), None);
    }

    #[tokio::test]
    async fn slow_and_delayed_responses_take_time() {
        let server = TestServer::start().await;
        server.put("/slow", Resource::bytes(vec![1u8; 2000]).slow(10_000));
        server.put(
            "/late",
            Resource::bytes(&b"x"[..]).delay_headers(Duration::from_millis(200)),
        );
        let started = Instant::now();
        let r = get(&server, "/slow", &[]).await;
        assert!(r.complete);
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(get(&server, "/late", &[]).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stall_after_hangs_mid_body() {
        let server = start_with("/s", Resource::pattern(10_000).stall_after(100)).await;
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        stream
            .write_all(b"GET /s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "connection closed instead of stalling");
                raw.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(read.is_err(), "the response should hang");
        let r = parse(&raw, false);
        assert_eq!(r.body, pattern_bytes(0..100));
        // Shutting the server down ends the hanging connection.
        server.shutdown();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    }

    #[tokio::test]
    async fn shutdown_refuses_new_connections() {
        let server = start_with("/f", Resource::bytes(&b"x"[..])).await;
        let addr = server.addr();
        assert_eq!(get(&server, "/f", &[]).await.status, 200);
        server.shutdown();
        // Refused at once, even for a client that does not yield to this runtime.
        let refused = std::net::TcpStream::connect(addr).map(|_| ());
        assert_eq!(
            refused.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn queries_are_recorded_and_matched() {
        let server = start_with("/f", Resource::bytes(&b"plain"[..])).await;
        server.put("/f?v=2", Resource::bytes(&b"second"[..]));
        assert_eq!(get(&server, "/f?v=1", &[]).await.body, b"plain");
        assert_eq!(get(&server, "/f?v=2", &[]).await.body, b"second");
        assert_eq!(server.requests_for("/f").len(), 2);
        assert_eq!(server.requests_for("/f?v=2").len(), 1);
        assert_eq!(server.requests()[0].path, "/f?v=1");
        assert_eq!(server.bytes_sent("/f"), 5);
        assert_eq!(server.bytes_sent("/f?v=2"), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keep_alive_serves_many_requests_on_one_connection() {
        let server = start_with("/p", Resource::pattern(32 * 1024 * 1024)).await;
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        for _ in 0..2 {
            stream
                .write_all(b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.contains("content-length: 33554432"), "{head}");
            let mut body = vec![0u8; 32 * 1024 * 1024];
            stream.read_exact(&mut body).await.unwrap();
            assert!(body == pattern_bytes(0..32 * 1024 * 1024));
        }
        assert_eq!(server.bytes_sent("/p"), 64 * 1024 * 1024);
    }

    #[tokio::test]
    async fn uploads_are_created_appended_asked_and_deleted() {
        let server = TestServer::start().await;
        server.accept_uploads("/up");
        let r = send(&server, "POST", "/up", &[]).await;
        assert_eq!(r.status, 400, "Upload-Length is required");
        let r = send(&server, "POST", "/up", &[("Upload-Length", "10")]).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/up/1"));

        let r = send_body(
            &server,
            "PATCH",
            "/up/1",
            &[("Upload-Offset", "0")],
            b"hello",
        )
        .await;
        assert_eq!((r.status, r.header("upload-offset")), (204, Some("5")));
        let r = send_body(
            &server,
            "PATCH",
            "/up/1",
            &[("Upload-Offset", "0")],
            b"again",
        )
        .await;
        assert_eq!((r.status, r.header("upload-offset")), (409, Some("5")));
        let r = send(&server, "HEAD", "/up/1", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("upload-offset"), Some("5"));
        assert_eq!(r.header("upload-length"), Some("10"));

        let r = send_body(
            &server,
            "PATCH",
            "/up/1",
            &[("Upload-Offset", "5")],
            b"world",
        )
        .await;
        assert_eq!((r.status, r.header("upload-offset")), (200, Some("10")));
        assert_eq!(r.body, br#"{"upload":"/up/1","received":10}"#);
        let upload = server.upload("/up/1").unwrap();
        assert_eq!(upload.received, b"helloworld");
        assert!(upload.is_complete() && !upload.deleted);

        assert_eq!(send(&server, "DELETE", "/up/1", &[]).await.status, 204);
        assert!(server.upload("/up/1").unwrap().deleted);
        assert_eq!(send(&server, "HEAD", "/up/1", &[]).await.status, 404);
        assert_eq!(send(&server, "GET", "/up/1", &[]).await.status, 404);
        assert_eq!(send(&server, "GET", "/elsewhere", &[]).await.status, 404);
        let methods: Vec<_> = server.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(methods.len(), 10);
    }

    #[tokio::test]
    async fn upload_faults_drop_keep_and_refuse() {
        let server = TestServer::start().await;
        server.accept_uploads_with(
            "/up",
            UploadEndpoint::default().reply("done").drop_patch_after(3),
        );
        send(&server, "POST", "/up", &[("Upload-Length", "6")]).await;
        let raw = exchange(
            &server,
            "PATCH",
            "/up/1",
            &[("Upload-Offset", "0")],
            Some(&b"abcdef"[..]),
        )
        .await;
        assert!(raw.is_empty(), "the connection closed without an answer");
        assert_eq!(server.upload("/up/1").unwrap().received, b"abc");

        server.update_uploads("/up", |e| e.apply(|e| e.unavailable_once()));
        let r = send_body(&server, "PATCH", "/up/1", &[("Upload-Offset", "3")], b"def").await;
        assert_eq!(r.status, 503);
        let r = send_body(&server, "PATCH", "/up/1", &[("Upload-Offset", "3")], b"def").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"done"[..]));
        assert_eq!(server.uploads()[0].received, b"abcdef");
    }
}
