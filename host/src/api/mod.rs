//! The local API: HTTP/JSON over a Unix socket (SPEC §4).
//!
//! The caller is whoever is at the other end of the socket, as the kernel
//! says (SO_PEERCRED): no tokens, no passwords. Users see and change only
//! their own jobs; root and members of the configured admin group may list
//! everyone's and take ownership.
//!
//! - `routes`: the route table (the one place a route exists) and handlers;
//! - `views`: the JSON the API speaks, without secrets;
//! - `error`: typed refusals and their HTTP statuses;
//! - `sse`: the event streams.
//!
//! `host/openapi.json` documents every route; a test holds the two together.

pub mod error;
pub mod routes;
pub mod sse;
pub mod views;

use crate::engine::{Caller, Engine};
use crate::identity::Identity;
use crate::plugin::PluginRuntime;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ApiErrorView, ErrorBody};
pub use routes::{ROUTES, Route};
pub use views::JobView;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What every request handler shares.
pub struct ApiState {
    pub engine: Engine,
    pub runtime: Arc<PluginRuntime>,
    /// Members may act on every job.
    pub admin_group: Option<String>,
    /// The largest request body read.
    pub max_request_bytes: usize,
    /// The daemon's own uid: a daemon not running as root serves only its
    /// own user (and root).
    pub daemon_uid: u32,
    /// Cancelled when the daemon shuts down: event streams end.
    pub shutdown: CancellationToken,
}

/// Who is on the other end of one connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub caller: Caller,
    pub identity: Identity,
    /// Whether this daemon serves this peer at all.
    pub served: bool,
}

impl ApiState {
    /// The peer with uid `uid`, as this daemon treats them.
    pub fn peer(&self, uid: u32) -> Peer {
        let identity = Identity::of(uid);
        let admin = uid == 0
            || self
                .admin_group
                .as_deref()
                .is_some_and(|g| identity.in_group(g));
        Peer {
            caller: Caller { uid, admin },
            served: self.daemon_uid == 0 || uid == self.daemon_uid || uid == 0,
            identity,
        }
    }
}

/// Serves the API on `listener` until `state.shutdown` is cancelled.
pub async fn serve(listener: UnixListener, state: Arc<ApiState>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = state.shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::warn!("a connection without peer credentials was dropped: {e}");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let peer = Arc::new(state.peer(uid));
            let service = hyper::service::service_fn(move |request| {
                let (state, peer) = (state.clone(), peer.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(routes::handle(&state, &peer, request).await)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(uid, "connection ended: {e}");
            }
        });
    }
}
