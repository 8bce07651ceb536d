//! The optional loopback TCP listener for Prometheus scrapers
//! (`[metrics] listen`): `GET /metrics` answers what `GET /v1/metrics`
//! answers on the socket.
//!
//! A scraper cannot speak to a Unix socket, and the socket's metrics are for
//! administrators; this listener has no authentication at all, so the
//! configuration takes only a loopback address, and it serves counts alone
//! (no job names, owners or URLs). Its connections are bounded as the API's
//! are: the request head in time, no idle connection, so many at once.

use super::{ConnectionLimits, connection, routes::full};
use crate::engine::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("the metrics listener cannot listen on {address} ([metrics] listen): {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `address` (a loopback address, as the configuration checked).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled; at
/// most `limits.per_user` connections at once (more are closed at once).
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.per_user));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a metrics connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics connection refused: {} already open", limits.per_user);
            continue;
        };
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let respond = move |request| {
                let response = answer(&engine, &request);
                async move { response }
            };
            let connection = connection::serve(stream, limits, respond);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(%peer, "metrics connection ended: {e}");
                },
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// `GET /metrics` is the only resource.
fn answer<B>(engine: &Engine, request: &Request<B>) -> Response<super::routes::Body> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(Bytes::from_static(body.as_bytes())))
            .expect("a valid response")
    };
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(Bytes::from(engine.metrics_text())))
        .expect("a valid response")
}
