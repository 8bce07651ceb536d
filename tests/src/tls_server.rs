//! HTTPS on loopback for Ferry's tests: a certificate authority the test makes
//! on the spot ([`TestCa`]), server certificates it signs, and a TLS front
//! ([`TlsServer`]) that speaks HTTP/1.1 or HTTP/2 (as ALPN settles it) and
//! passes every request on to a plain [`crate::server::TestServer`].
//!
//! Everything the plain server can do (ranges, validators, dropped
//! connections, recorded headers) is then served over HTTPS, and a test that
//! asks what was requested asks the plain server. The front records the
//! protocol each handshake settled on and the handshakes that failed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made by the test; nothing outside it trusts it.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (with its chain) and its private key.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("the CA certificate"),
        }
    }

    /// The CA's certificate in PEM, as an operator's CA bundle holds it.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (host names or IP addresses), signed
    /// by this CA.
    pub fn server_identity(&self, names: &[&str]) -> ServerIdentity {
        self.identity(names, false)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server_identity(&self, names: &[&str]) -> ServerIdentity {
        self.identity(names, true)
    }

    fn identity(&self, names: &[&str], expired: bool) -> ServerIdentity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "ferry test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the server certificate");
        ServerIdentity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// The application protocols the front offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1` only.
    Http1,
    /// `h2` only: a client that cannot speak HTTP/2 fails the handshake.
    Http2,
    /// `h2` and `http/1.1`, the client chooses.
    Both,
}

#[derive(Default)]
struct Seen {
    /// The protocol of each completed handshake (`h2`, `http/1.1`, or
    /// `none` when the client offered no ALPN).
    protocols: Vec<String>,
    /// Handshakes that did not complete (the client refused the
    /// certificate, or no protocol in common).
    failed: usize,
}

/// A running HTTPS front on `127.0.0.1`; stops when dropped.
pub struct TlsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    accept: JoinHandle<()>,
}

impl TlsServer {
    /// Starts a front on an ephemeral loopback port, on the current tokio
    /// runtime, presenting `identity` and passing requests on to `backend`.
    pub async fn start(backend: SocketAddr, identity: ServerIdentity, alpn: Alpn) -> TlsServer {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(identity.chain, PrivateKeyDer::Pkcs8(identity.key))
            .expect("the server certificate and key");
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTPS front");
        let addr = listener.local_addr().expect("the front's address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accept = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            backend,
            seen.clone(),
        ));
        TlsServer { addr, seen, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("https://{}{slash}{path}", self.addr)
    }

    /// The protocol each completed handshake settled on, in order.
    pub fn protocols(&self) -> Vec<String> {
        self.lock().protocols.clone()
    }

    /// How many handshakes did not complete.
    pub fn failed_handshakes(&self) -> usize {
        self.lock().failed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    backend: SocketAddr,
    seen: Arc<Mutex<Seen>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                seen.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                return;
            };
            let protocol = tls
                .get_ref()
                .1
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .protocols
                .push(protocol.clone().unwrap_or_else(|| "none".into()));
            let service = service_fn(move |request| forward(backend, request));
            let io = TokioIo::new(tls);
            // A connection that breaks off (an injected drop) just ends.
            if protocol.as_deref() == Some("h2") {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
}

/// Passes one request on to the plain server over HTTP/1.1 and its response
/// back, body streamed as it comes (an error in it breaks this stream too).
async fn forward(
    backend: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(backend).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    // HTTP/2 carries the authority in the URI; HTTP/1.1 wants a Host header
    // and an origin-form target.
    if let Some(authority) = parts.uri.authority().cloned()
        && !parts.headers.contains_key(http::header::HOST)
    {
        parts.headers.insert(
            http::header::HOST,
            authority
                .as_str()
                .parse()
                .expect("an authority is a header value"),
        );
    }
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = target.parse::<Uri>()?;
    parts.version = http::Version::HTTP_11;
    Ok(sender
        .send_request(Request::from_parts(parts, body))
        .await?)
}
