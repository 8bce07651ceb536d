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
//! - `sse`: the event streams;
//! - `connection`: how long a connection may take (a head, idleness);
//! - `metrics_listener`: the optional loopback TCP listener for scrapers.
//!
//! `host/openapi.json` documents every route; a test holds the two together.
//!
//! No user can take the socket from the others ([`ConnectionLimits`]): a
//! connection that does not send its request head in time, or sits idle, is
//! closed; each user (root aside) holds at most so many connections, and the
//! daemon so many in all; the user database is read off the async workers.

pub mod connection;
pub mod error;
pub mod metrics_listener;
pub mod routes;
pub mod sse;
pub mod views;

use crate::engine::{Caller, Engine, Origin};
use crate::identity::Identity;
use crate::plugin::PluginRuntime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// How often a quiet event stream sends a comment line, under the
    /// connections' idle timeout ([`sse::keep_alive_for`]).
    pub event_keep_alive: Duration,
}

/// Who is on the other end of one connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub caller: Caller,
    /// As the kernel says: uid and gid from the socket's credentials, the
    /// groups of the process that connected ([`Identity::of_peer`]).
    pub identity: Identity,
    /// The process that connected, as the socket's credentials say.
    pub pid: Option<u32>,
    /// Whether this daemon serves this peer at all.
    pub served: bool,
}

impl Peer {
    /// The umask of the process that connected, read now (it may have
    /// changed since it connected), if it is still that user's.
    pub fn umask(&self) -> Option<u32> {
        self.pid
            .and_then(crate::identity::ProcessStatus::of)
            .filter(|s| s.uid == self.caller.uid)
            .and_then(|s| s.umask)
    }

    /// What a job this peer creates or takes acts with: its umask, its gid
    /// and groups.
    pub fn origin(&self) -> Origin {
        Origin {
            umask: self.umask(),
            groups: Some(crate::job::OwnerGroups {
                gid: self.identity.gid,
                groups: self.identity.groups.clone(),
            }),
        }
    }
}

impl ApiState {
    /// The peer with uid `uid`, gid `gid`, process `pid` (the socket's
    /// credentials), as this daemon treats them.
    pub fn peer(&self, uid: u32, gid: u32, pid: Option<u32>) -> Peer {
        let identity = Identity::of_peer(uid, gid, pid);
        let admin = uid == 0
            || self
                .admin_group
                .as_deref()
                .is_some_and(|g| identity.in_group(g));
        Peer {
            caller: Caller { uid, admin },
            pid,
            served: self.daemon_uid == 0 || uid == self.daemon_uid || uid == 0,
            identity,
        }
    }
}

/// The bounds on the API's connections (`[daemon]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a request head may take to arrive in full.
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte either way.
    pub idle_timeout: Duration,
    /// Connections one user holds at once (root is not counted).
    pub per_user: usize,
    /// Connections of all users but root at once.
    pub total: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            per_user: 64,
            total: 512,
        }
    }
}

/// The open connections by uid, and a slot that gives one back on drop.
#[derive(Default)]
struct Connections {
    by_uid: Mutex<HashMap<u32, usize>>,
}

struct Slot {
    connections: Arc<Connections>,
    uid: u32,
}

impl Connections {
    /// A slot for a connection of `uid`, or why there is none.
    fn take(self: &Arc<Self>, uid: u32, limits: &ConnectionLimits) -> Result<Slot, String> {
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|e| e.into_inner());
        if uid != 0 {
            let mine = by_uid.get(&uid).copied().unwrap_or(0);
            if mine >= limits.per_user {
                return Err(format!(
                    "uid {uid} already holds {mine} connections (max-connections-per-user)"
                ));
            }
            let all: usize = by_uid
                .iter()
                .filter(|(u, _)| **u != 0)
                .map(|(_, n)| n)
                .sum();
            if all >= limits.total {
                return Err(format!(
                    "the daemon already holds {all} connections (max-connections)"
                ));
            }
        }
        *by_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            connections: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_uid = self
            .connections
            .by_uid
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                by_uid.remove(&self.uid);
            }
        }
    }
}

/// Serves the API on `listener` until `state.shutdown` is cancelled, with
/// the default [`ConnectionLimits`].
pub async fn serve(listener: UnixListener, state: Arc<ApiState>) {
    serve_with(listener, state, ConnectionLimits::default()).await
}

/// Serves the API on `listener` until `state.shutdown` is cancelled.
pub async fn serve_with(listener: UnixListener, state: Arc<ApiState>, limits: ConnectionLimits) {
    let connections = Arc::new(Connections::default());
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
        let (uid, gid, pid) = match stream.peer_cred() {
            Ok(cred) => (
                cred.uid(),
                cred.gid(),
                cred.pid().and_then(|p| u32::try_from(p).ok()),
            ),
            Err(e) => {
                tracing::warn!("a connection without peer credentials was dropped: {e}");
                continue;
            }
        };
        let slot = match connections.take(uid, &limits) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::warn!(uid, "connection refused: {why}");
                drop(stream);
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // The user database may be remote (NSS): never on a worker.
            let looked_up = {
                let state = state.clone();
                tokio::task::spawn_blocking(move || state.peer(uid, gid, pid)).await
            };
            let Ok(peer) = looked_up else {
                return;
            };
            let peer = Arc::new(peer);
            let answer = move |request| {
                let (state, peer) = (state.clone(), peer.clone());
                async move { routes::handle(&state, &peer, request).await }
            };
            if let Err(e) = connection::serve(stream, limits, answer).await {
                tracing::debug!(uid, "connection ended: {e}");
            }
        });
    }
}
