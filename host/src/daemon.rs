//! `ferry daemon`: the host in the foreground, as systemd runs it or as the
//! CLI starts it for a user.
//!
//! It opens the store under the state directory, loads the built-in plugins
//! and those of the plugins directory, opens the engine, runs the timers,
//! the notifier, the API on the socket (and the metrics listener on loopback
//! if `[metrics] listen` says so), and on SIGTERM or SIGINT stops
//! accepting, lets transfers checkpoint, saves every job, and removes its
//! socket. The socket answers only once the engine is ready, so a client
//! that can connect can be served.

use crate::api::{self, ApiState};
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError, Paths};
use crate::engine::Engine;
use crate::identity::running_as_root;
use crate::job::JobRefusal;
use crate::plugin::{PluginRuntime, RuntimeError};
use crate::store::{SledStore, StoreError};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Tunes glibc's allocator for a long-running daemon, each setting unless
/// the operator chose it in the environment (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`). By default glibc
/// gives a process's threads up to eight arenas per CPU, each keeping the
/// memory freed in it, and raises its mmap threshold each time a large
/// block is freed, so that large buffers (the store's, a restart's
/// decoding) end up in the heap and their memory is kept for good. Two
/// arenas, and blocks over 512 KiB always mapped (given back when freed),
/// keep the daemon's memory close to what its jobs need (BENCHMARKS.md:
/// 10,000 queued jobs). The HTTP client's read buffers (about 400 KiB)
/// stay in the heap, and its top is kept up to 64 MiB, so a transfer does
/// not map and fault in its buffers again at every read. Called before any
/// thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, parameter, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 512 << 10),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 64 << 20),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: `mallopt` only sets an allocator parameter; it runs
            // before the process has started any other thread.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the state directory {path} cannot be created: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plugin runtime cannot start: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the engine cannot open: {0}")]
    Engine(#[from] JobRefusal),
    #[error("a daemon already answers on {0}")]
    AlreadyRunning(String),
    #[error("the socket {path} cannot be opened: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    MetricsListen(#[from] api::metrics_listener::ListenError),
}

impl DaemonError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Config(_) => "invalid-config",
            DaemonError::StateDir { .. } => "state-dir-failed",
            DaemonError::Store(_) => "store-failed",
            DaemonError::Runtime(_) => "plugin-load-failed",
            DaemonError::Engine(_) => "store-failed",
            DaemonError::AlreadyRunning(_) => "already-running",
            DaemonError::Socket { .. } => "socket-failed",
            DaemonError::MetricsListen(_) => "metrics-listen-failed",
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(paths: Paths) -> Result<(), DaemonError> {
    let config = Config::load(&paths.config, paths.config_required)?;
    let state_dir = &paths.state_dir;
    make_dir(state_dir, 0o700)?;
    tracing::info!(state_dir = %state_dir.display(), socket = %paths.socket.display(), config = %paths.config.display(), "starting");

    let mut runtime = PluginRuntime::with_builtins(config.runtime(state_dir)?)?;
    let plugins_dir = config.plugins_dir(state_dir);
    // `ferry plugins reload` and SIGHUP read it again, even if it is created later.
    runtime.set_plugins_dir(&plugins_dir);
    if plugins_dir.is_dir() {
        let (loaded, failed) = runtime.load_dir(&plugins_dir)?;
        tracing::info!(
            ?loaded,
            failed = failed.len(),
            "third-party plugins from {}",
            plugins_dir.display()
        );
    }
    let runtime = Arc::new(runtime);
    let plugins = runtime.clone();
    let store = SledStore::open(&state_dir.join("jobs"))?;
    let engine = Engine::open(
        config.engine(),
        Box::new(store),
        runtime.clone(),
        Arc::new(SystemClock::new()),
    )?;
    let ticker = engine.spawn_ticker(Duration::from_millis(config.daemon.tick_interval_ms));
    let shutdown = CancellationToken::new();
    let notifier = crate::notify::spawn(engine.clone(), shutdown.clone());

    let listener = bind(&paths.socket).await?;
    let metrics_listener = match config.metrics.listen {
        Some(address) => match api::metrics_listener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                let _ = std::fs::remove_file(&paths.socket);
                return Err(e.into());
            }
        },
        None => None,
    };
    let state = Arc::new(ApiState {
        engine: engine.clone(),
        runtime,
        admin_group: config.daemon.admin_group.clone(),
        max_request_bytes: config.daemon.max_request_bytes,
        daemon_uid: nix::unistd::geteuid().as_raw(),
        shutdown: shutdown.clone(),
        event_keep_alive: api::sse::keep_alive_for(config.connections().idle_timeout),
    });
    let server = tokio::spawn(api::serve_with(listener, state, config.connections()));
    let metrics_server = metrics_listener.map(|listener| {
        tracing::info!(address = %config.metrics.listen.expect("bound"), "metrics listener");
        tokio::spawn(api::metrics_listener::serve(
            listener,
            engine.clone(),
            config.connections(),
            shutdown.clone(),
        ))
    });
    tracing::info!(pid = std::process::id(), "ready");

    let mut term = signal(SignalKind::terminate()).map_err(|source| DaemonError::Socket {
        path: "SIGTERM".into(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| DaemonError::Socket {
        path: "SIGINT".into(),
        source,
    })?;
    let mut hup = signal(SignalKind::hangup()).map_err(|source| DaemonError::Socket {
        path: "SIGHUP".into(),
        source,
    })?;
    loop {
        tokio::select! {
            _ = term.recv() => break tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => break tracing::info!("SIGINT: shutting down"),
            _ = hup.recv() => reload_plugins(&plugins, &engine),
        }
    }
    shutdown.cancel();
    let _ = server.await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    engine.shutdown().await;
    let _ = ticker.await;
    let _ = notifier.await;
    if let Err(e) = std::fs::remove_file(&paths.socket) {
        tracing::warn!("cannot remove the socket: {e}");
    }
    tracing::info!("stopped; every job is saved");
    Ok(())
}

/// SIGHUP: reads the plugins directory again (see `PluginRuntime::reload`).
/// Jobs waiting on a plugin failure retry at once.
fn reload_plugins(runtime: &PluginRuntime, engine: &Engine) {
    match runtime.reload() {
        Ok(reloaded) => {
            tracing::info!(
                loaded = ?reloaded.loaded,
                removed = ?reloaded.removed,
                refused = reloaded.refused.len(),
                "SIGHUP: plugins reloaded"
            );
            engine.retry_plugin_failures();
        }
        Err(e) => tracing::error!("SIGHUP: the plugins were not reloaded: {e}"),
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| DaemonError::StateDir {
            path: dir.display().to_string(),
            source,
        })
}

/// Binds the socket: refuses if a daemon answers there, replaces a stale
/// socket file, and opens it to everyone when running as root (callers are
/// told apart by their credentials) or to this user only otherwise.
async fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let failed = |source| DaemonError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        make_dir(parent, 0o700)?;
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(DaemonError::AlreadyRunning(path.display().to_string()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("removed a stale socket at {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    let mode = if running_as_root() { 0o666 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    Ok(listener)
}
