//! The only network a plugin has: `wasi:http` requests, sent by the host.
//!
//! Every outgoing request of every plugin passes [`PluginHttp::send_request`]:
//! the host checks the plugin's host policy (declared and granted), never
//! follows a redirect (the plugin sees the 3xx and its next hop is checked
//! again), sends through one shared, pooled `reqwest` client (with the
//! operator's proxy settings), and meters response bodies through a global
//! bandwidth limit. Bodies are never decoded: bytes are passed on as served.
//!
//! The address a request reaches is checked as well as its name: the host
//! resolves names itself, refuses a request whose name resolves only to
//! internal addresses (typed `address-not-allowed`), and the client's own
//! resolver connects only to addresses the policy allows, so a name that
//! resolves differently the second time (DNS rebinding) gets nowhere either.
//! The operator's proxy is exempt: it is the operator's choice.

use crate::plugin::grants::{AddressPolicy, HostPolicy};
use crate::plugin::transfer::RemoteInfo;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// How outgoing requests reach the network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proxy {
    /// Use the `http_proxy`, `https_proxy` and `no_proxy` environment variables.
    System,
    /// Connect directly, whatever the environment says.
    None,
    /// Send every request through this proxy URL.
    Url(String),
}

/// The network settings an operator can change.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub proxy: Proxy,
    /// Global cap on response body bytes per second, across all transfers.
    pub bandwidth_limit: Option<u64>,
    pub connect_timeout: Duration,
    /// How long a response may stall between two reads of its body.
    pub read_timeout: Duration,
    /// How long to wait for a response head when the plugin sets no limit.
    pub first_byte_timeout: Duration,
    /// Internal address ranges (loopback, private, link-local...) plugins
    /// may reach all the same: `127.0.0.0/8`, `fd00::/8`, `10.1.2.3`.
    pub allow_private_addresses: Vec<String>,
    /// A PEM file of CA certificates to trust for HTTPS, read at start.
    pub ca_bundle: Option<PathBuf>,
    /// Whether the system's roots are trusted too (with a bundle: both; without
    /// this, the bundle alone).
    pub system_roots: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            proxy: Proxy::System,
            bandwidth_limit: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(120),
            allow_private_addresses: Vec::new(),
            ca_bundle: None,
            system_roots: true,
        }
    }
}

/// The shared HTTP client and bandwidth meter of one host.
pub struct Network {
    client: reqwest::Client,
    addresses: Arc<AddressPolicy>,
    bandwidth: Option<Arc<TokenBucket>>,
    first_byte_timeout: Duration,
}

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid proxy {0:?}: {1}")]
    Proxy(String, reqwest::Error),
    #[error("the HTTP client could not be built: {0}")]
    Client(reqwest::Error),
    #[error("allow-private-addresses: {0}")]
    Addresses(String),
    #[error("ca-bundle {path}: {why}")]
    CaBundle { path: String, why: String },
    #[error("system-roots = false needs a ca-bundle: nothing would be trusted")]
    NoRoots,
}

impl Network {
    pub fn new(config: &NetworkConfig) -> Result<Network, NetworkError> {
        let addresses = Arc::new(
            AddressPolicy::new(&config.allow_private_addresses).map_err(NetworkError::Addresses)?,
        );
        let mut builder = reqwest::Client::builder()
            .dns_resolver(CheckedResolver {
                policy: addresses.clone(),
                proxies: proxy_hosts(&config.proxy),
            })
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        builder = match (roots(config)?, config.system_roots) {
            (Some(certs), true) => builder.tls_certs_merge(certs),
            (Some(certs), false) => builder.tls_certs_only(certs),
            (None, true) => builder,
            (None, false) => return Err(NetworkError::NoRoots),
        };
        builder = match &config.proxy {
            Proxy::System => builder,
            Proxy::None => builder.no_proxy(),
            Proxy::Url(url) => builder
                .proxy(reqwest::Proxy::all(url).map_err(|e| NetworkError::Proxy(url.clone(), e))?),
        };
        Ok(Network {
            client: builder.build().map_err(NetworkError::Client)?,
            addresses,
            bandwidth: config
                .bandwidth_limit
                .map(|rate| Arc::new(TokenBucket::new(rate))),
            first_byte_timeout: config.first_byte_timeout,
        })
    }
}

/// The operator's CA bundle: every certificate of the PEM file, at least one.
fn roots(config: &NetworkConfig) -> Result<Option<Vec<reqwest::Certificate>>, NetworkError> {
    let Some(path) = &config.ca_bundle else {
        return Ok(None);
    };
    let error = |why: String| NetworkError::CaBundle {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in the file".into()));
    }
    tracing::info!(path = %path.display(), certificates = certs.len(), system_roots = config.system_roots, "trusting the operator's CA bundle");
    Ok(Some(certs))
}

/// The `wasi:http` hooks of one plugin call.
pub struct PluginHttp {
    network: Arc<Network>,
    policy: Arc<HostPolicy>,
    plugin: String,
    /// The requests the policy refused during this call, as `host:port`.
    pub denied: Vec<String>,
    /// One permit per request in flight (from send until its response body
    /// is dropped): a call has at most this many connections of its own.
    in_flight: Arc<tokio::sync::Semaphore>,
    in_flight_limit: usize,
    /// Requests refused because the call had too many in flight.
    pub over_in_flight: usize,
    /// Requests refused for the address they would reach, as
    /// `host (address)`.
    pub address_denied: Arc<Mutex<Vec<String>>>,
    /// The SHA-256 of the whole resource that the call's last response
    /// declared ([`served_sha256`]), for the body the plugin begins next.
    served_sha256: Arc<Mutex<Option<String>>>,
}

impl PluginHttp {
    pub fn new(
        network: Arc<Network>,
        policy: Arc<HostPolicy>,
        plugin: &str,
        in_flight_limit: usize,
    ) -> PluginHttp {
        PluginHttp {
            network,
            policy,
            plugin: plugin.to_string(),
            denied: Vec::new(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(in_flight_limit)),
            in_flight_limit,
            over_in_flight: 0,
            address_denied: Arc::new(Mutex::new(Vec::new())),
            served_sha256: Arc::new(Mutex::new(None)),
        }
    }

    /// `info` with the digest the call's last response declared: a body
    /// begins right after its response arrived, and the host, not the
    /// plugin, says what the server declared.
    pub fn with_served_digest(&self, info: RemoteInfo) -> RemoteInfo {
        RemoteInfo {
            served_sha256: lock(&self.served_sha256).clone(),
            ..info
        }
    }
}

type BoxedFuture<T> = Box<dyn Future<Output = T> + Send>;

/// Chunks of a request body buffered between the plugin and the socket.
const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;

impl WasiHttpHooks for PluginHttp {
    fn is_supported_scheme(&mut self, scheme: &http::uri::Scheme) -> bool {
        *scheme == http::uri::Scheme::HTTP || *scheme == http::uri::Scheme::HTTPS
    }

    /// The client sets `Host` from the URL itself.
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// Request bodies (uploads) keep a few chunks in flight, so the next
    /// read of the source overlaps the socket's write of the last one
    /// (one chunk, the default, stalls the upload at every chunk). At most
    /// `UPLOAD_CHUNKS_IN_FLIGHT` × 1 MiB a request.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        UPLOAD_CHUNKS_IN_FLIGHT
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_body_errors: BoxedFuture<Result<(), HttpError>>,
    ) -> BoxedFuture<
        wasmtime_wasi_http::Result<(http::Response<WasiBody>, BoxedFuture<Result<(), HttpError>>)>,
    > {
        let uri = request.uri().clone();
        let (Some(host), Some(scheme)) = (uri.host(), uri.scheme()) else {
            return Box::new(async { Err(HttpError::HttpRequestUriInvalid) });
        };
        let port = uri
            .port_u16()
            .unwrap_or(if *scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
        if !self.policy.allows(host, port) {
            tracing::warn!(plugin = %self.plugin, %host, port, "request refused: host not granted");
            self.denied.push(format!("{host}:{port}"));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare.parse::<IpAddr>().ok();
        if let Some(ip) = literal
            && !self.network.addresses.allows(ip)
            && !self.policy.grants_address(ip)
        {
            tracing::warn!(plugin = %self.plugin, %ip, "request refused: internal address not allowed");
            lock(&self.address_denied).push(ip.to_string());
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.over_in_flight += 1;
            if self.over_in_flight == 1 {
                tracing::warn!(plugin = %self.plugin, limit = self.in_flight_limit, "request refused: too many requests in flight");
            }
            let limit = self.in_flight_limit;
            return Box::new(async move {
                Err(HttpError::InternalError(Some(format!(
                    "the call already has {limit} requests in flight (the host's limit)"
                ))))
            });
        };
        tracing::debug!(plugin = %self.plugin, method = %request.method(), %uri, "outgoing request");
        let network = self.network.clone();
        let name = literal.is_none().then(|| bare.to_string());
        let (denied, plugin) = (self.address_denied.clone(), self.plugin.clone());
        let served = self.served_sha256.clone();
        Box::new(async move {
            if let Some(name) = name {
                // A lookup that fails is the client's to report (or, with
                // a proxy, the proxy's to make).
                if let Ok(found) = tokio::net::lookup_host((name.as_str(), port)).await {
                    let found: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                    if !found.is_empty() && !found.iter().any(|ip| network.addresses.allows(*ip)) {
                        tracing::warn!(%plugin, %name, addresses = ?found, "request refused: the name resolves to internal addresses only");
                        lock(&denied).push(format!("{name} ({})", found[0]));
                        return Err(HttpError::HttpRequestDenied);
                    }
                }
            }
            let first_byte = options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(network.first_byte_timeout);
            let (parts, body) = request.into_parts();
            let mut outgoing = network
                .client
                .request(parts.method, uri.to_string())
                .headers(parts.headers);
            if !body.is_end_stream() {
                outgoing = outgoing.body(reqwest::Body::wrap_stream(SyncBody::new(body)));
            }
            let response = tokio::time::timeout(first_byte, outgoing.send())
                .await
                .map_err(|_| HttpError::ConnectionReadTimeout)?
                .map_err(|e| error_from_reqwest(&e))?;
            let response: http::Response<reqwest::Body> = response.into();
            *lock(&served) = served_sha256(response.status(), response.headers());
            let bandwidth = network.bandwidth.clone();
            let response = response.map(|body| {
                let body = body.map_err(|e| error_from_reqwest(&e));
                let body = match bandwidth {
                    Some(bucket) => Throttled::new(body, bucket).boxed_unsync(),
                    None => body.boxed_unsync(),
                };
                Permitted {
                    inner: body,
                    _permit: permit,
                }
                .boxed_unsync()
            });
            let io: BoxedFuture<Result<(), HttpError>> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// The SHA-256 (hex) of the whole resource a response declares: its
/// `Repr-Digest` (RFC 9530; the representation's digest, the same on a 206
/// as on a 200), or on a 200 without one an RFC 3230 `Digest` (the digest
/// of the full instance). None for a response that is not a success, or
/// declares no SHA-256 in a form that parses.
fn served_sha256(status: http::StatusCode, headers: &http::HeaderMap) -> Option<String> {
    use base64::Engine as _;
    if !status.is_success() {
        return None;
    }
    let members = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|member| member.split_once('='))
            .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect::<Vec<_>>()
    };
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|d| d.len() == 32)
            .map(hex::encode)
    };
    // A structured-field byte sequence: `:BASE64:`.
    let repr = members("repr-digest").into_iter().find_map(|(key, value)| {
        (key == "sha-256")
            .then(|| value.strip_prefix(':')?.strip_suffix(':').and_then(decode))
            .flatten()
    });
    if repr.is_some() || status != http::StatusCode::OK {
        return repr;
    }
    // RFC 3230's values end in `=` padding, which `split_once` keeps.
    members("digest")
        .into_iter()
        .find_map(|(key, value)| (key == "sha-256").then(|| decode(&value)).flatten())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host names of the operator's proxies (their addresses are allowed).
fn proxy_hosts(proxy: &Proxy) -> Vec<String> {
    let urls: Vec<String> = match proxy {
        Proxy::None => Vec::new(),
        Proxy::Url(url) => vec![url.clone()],
        Proxy::System => [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect(),
    };
    urls.iter()
        .filter_map(|u| {
            let with_scheme = if u.contains("://") {
                u.clone()
            } else {
                format!("http://{u}")
            };
            url::Url::parse(&with_scheme).ok()?.host_str().map(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
        })
        .collect()
}

/// The client's resolver: the system's, keeping only addresses the policy
/// allows (the proxies' names are resolved as they are).
struct CheckedResolver {
    policy: Arc<AddressPolicy>,
    proxies: Vec<String>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_ascii_lowercase();
        let exempt = self.proxies.contains(&name);
        let policy = self.policy.clone();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| exempt || policy.allows(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{name} resolves to no address plugins may reach (see allow-private-addresses)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Maps a client failure to the `wasi:http` error a plugin sees.
fn error_from_reqwest(e: &reqwest::Error) -> HttpError {
    let chain = error_chain(e);
    if let Some(tls) = tls_error(e) {
        return match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType => HttpError::TlsCertificateError,
            rustls::Error::AlertReceived(alert) => HttpError::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(chain),
            },
            _ => HttpError::TlsProtocolError,
        };
    }
    if e.is_timeout() {
        if e.is_connect() {
            HttpError::ConnectionTimeout
        } else {
            HttpError::ConnectionReadTimeout
        }
    } else if e.is_connect() {
        if chain.contains("dns error") || chain.contains("failed to lookup") {
            HttpError::DnsError {
                rcode: Some(chain),
                info_code: None,
            }
        } else if chain.contains("refused") {
            HttpError::ConnectionRefused
        } else {
            HttpError::DestinationUnavailable
        }
    } else if e.is_body() || e.is_decode() || chain.contains("incomplete") {
        HttpError::HttpResponseIncomplete
    } else {
        HttpError::InternalError(Some(chain))
    }
}

/// The TLS failure behind a client error, if that is what it is. rustls'
/// errors reach us inside an `io::Error` (inside another, from the TLS
/// connector), whose `source` skips what it wraps: look inside each.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = tls_error(inner)
    {
        return Some(tls);
    }
    e.source().and_then(tls_error)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A request body from a plugin, as the `Send` stream the client wants.
struct SyncBody {
    inner: std::sync::Mutex<WasiBody>,
}

impl SyncBody {
    fn new(body: WasiBody) -> Self {
        SyncBody {
            inner: std::sync::Mutex::new(body),
        }
    }
}

impl futures::Stream for SyncBody {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut body = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A response body that holds its request's in-flight permit until dropped.
struct Permitted<B> {
    inner: B,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<B: Body + Unpin> Body for Permitted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A token bucket shared by all transfers: the global bandwidth limit.
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(bytes_per_second: u64) -> TokenBucket {
        let rate = bytes_per_second.max(1) as f64;
        TokenBucket {
            rate,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens; returns how long to wait before the
    /// next bytes may flow. Bursts are capped at a quarter second of rate.
    fn take(&self, n: usize) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate / 4.0);
        let left = refilled - n as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }
}

/// A response body metered by the global bandwidth limit.
struct Throttled<B> {
    inner: B,
    bucket: Arc<TokenBucket>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Throttled<B> {
    fn new(inner: B, bucket: Arc<TokenBucket>) -> Self {
        Throttled {
            inner,
            bucket,
            pause: None,
        }
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            futures::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let frame = futures::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let wait = self.bucket.take(data.len());
            if !wait.is_zero() {
                self.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::served_sha256;
    use http::{HeaderMap, StatusCode};

    /// SHA-256 of "hello world", in base64 and hex.
    const B64: &str = "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=";
    const HEX: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_repr_digest_is_read_on_a_200_and_a_206() {
        let h = headers(&[("repr-digest", &format!("sha-512=:AAAA:, sha-256=:{B64}:"))]);
        assert_eq!(served_sha256(StatusCode::OK, &h).as_deref(), Some(HEX));
        assert_eq!(
            served_sha256(StatusCode::PARTIAL_CONTENT, &h).as_deref(),
            Some(HEX)
        );
        assert_eq!(served_sha256(StatusCode::NOT_FOUND, &h), None);
    }

    #[test]
    fn a_legacy_digest_counts_on_a_200_only() {
        let h = headers(&[("digest", &format!("MD5=abc, SHA-256={B64}"))]);
        assert_eq!(served_sha256(StatusCode::OK, &h).as_deref(), Some(HEX));
        assert_eq!(served_sha256(StatusCode::PARTIAL_CONTENT, &h), None);
    }

    #[test]
    fn what_does_not_parse_declares_nothing() {
        for value in [
            "sha-256=:not base64:",
            "sha-256=:AAAA:",
            &format!("sha-256={B64}"),
            "sha-256",
        ] {
            let h = headers(&[("repr-digest", value)]);
            assert_eq!(served_sha256(StatusCode::OK, &h), None, "{value}");
        }
    }
}
