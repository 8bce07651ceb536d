//! The only network a plugin has: `wasi:http` requests, sent by the host.
//!
//! Every outgoing request of every plugin passes [`PluginHttp::send_request`]:
//! the host checks the plugin's host policy (declared and granted), never
//! follows a redirect (the plugin sees the 3xx and its next hop is checked
//! again), sends through one shared, pooled `reqwest` client (with the
//! operator's proxy settings), and meters response bodies through a global
//! bandwidth limit. Bodies are never decoded: bytes are passed on as served.

use crate::plugin::grants::HostPolicy;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
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
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            proxy: Proxy::System,
            bandwidth_limit: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(120),
        }
    }
}

/// The shared HTTP client and bandwidth meter of one host.
pub struct Network {
    client: reqwest::Client,
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
}

impl Network {
    pub fn new(config: &NetworkConfig) -> Result<Network, NetworkError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        builder = match &config.proxy {
            Proxy::System => builder,
            Proxy::None => builder.no_proxy(),
            Proxy::Url(url) => builder
                .proxy(reqwest::Proxy::all(url).map_err(|e| NetworkError::Proxy(url.clone(), e))?),
        };
        Ok(Network {
            client: builder.build().map_err(NetworkError::Client)?,
            bandwidth: config
                .bandwidth_limit
                .map(|rate| Arc::new(TokenBucket::new(rate))),
            first_byte_timeout: config.first_byte_timeout,
        })
    }
}

/// The `wasi:http` hooks of one plugin call.
pub struct PluginHttp {
    network: Arc<Network>,
    policy: Arc<HostPolicy>,
    plugin: String,
    /// The requests the policy refused during this call, as `host:port`.
    pub denied: Vec<String>,
}

impl PluginHttp {
    pub fn new(network: Arc<Network>, policy: Arc<HostPolicy>, plugin: &str) -> PluginHttp {
        PluginHttp {
            network,
            policy,
            plugin: plugin.to_string(),
            denied: Vec::new(),
        }
    }
}

type BoxedFuture<T> = Box<dyn Future<Output = T> + Send>;

impl WasiHttpHooks for PluginHttp {
    fn is_supported_scheme(&mut self, scheme: &http::uri::Scheme) -> bool {
        *scheme == http::uri::Scheme::HTTP || *scheme == http::uri::Scheme::HTTPS
    }

    /// The client sets `Host` from the URL itself.
    fn set_host_header(&mut self) -> bool {
        false
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
        tracing::debug!(plugin = %self.plugin, method = %request.method(), %uri, "outgoing request");
        let network = self.network.clone();
        Box::new(async move {
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
            let bandwidth = network.bandwidth.clone();
            let response = response.map(|body| {
                let body = body.map_err(|e| error_from_reqwest(&e));
                match bandwidth {
                    Some(bucket) => Throttled::new(body, bucket).boxed_unsync(),
                    None => body.boxed_unsync(),
                }
            });
            let io: BoxedFuture<Result<(), HttpError>> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Maps a client failure to the `wasi:http` error a plugin sees.
fn error_from_reqwest(e: &reqwest::Error) -> HttpError {
    let chain = error_chain(e);
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
