//! The daemon's configuration: every policy of SPEC §2 and §3 with its
//! default, read from one TOML file, and where the daemon keeps its state and
//! its socket.
//!
//! The file is optional and every key in it is too; an unknown key is an
//! error (a typo must not silently leave a default in force).
//! `host/ferry.example.toml` lists every key with its default.

use crate::api::ConnectionLimits;
use crate::engine::EngineConfig;
use crate::job::JobSettings;
use crate::plugin::RuntimeConfig;
use crate::plugin::network::{NetworkConfig, Proxy};
use crate::plugin::sandbox::SandboxLimits;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub daemon: DaemonConfig,
    pub limits: LimitsConfig,
    pub job_defaults: JobDefaultsConfig,
    pub network: NetworkSection,
    pub plugins: PluginsConfig,
    pub metrics: MetricsConfig,
}

/// The daemon and its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// Members of this group may list every user's jobs and take ownership
    /// (root always may).
    pub admin_group: Option<String>,
    /// The largest request body the API reads.
    pub max_request_bytes: usize,
    /// How often timers and the scheduler run.
    pub tick_interval_ms: u64,
    /// How long a request head may take to arrive in full.
    pub header_read_timeout_ms: u64,
    /// How long an API connection may go without a byte either way.
    pub idle_timeout_secs: u64,
    /// API connections one user (root aside) may hold at once.
    pub max_connections_per_user: usize,
    /// API connections of all users but root at once.
    pub max_connections: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let c = ConnectionLimits::default();
        DaemonConfig {
            admin_group: None,
            max_request_bytes: 1 << 20,
            tick_interval_ms: 1000,
            header_read_timeout_ms: c.header_read_timeout.as_millis() as u64,
            idle_timeout_secs: c.idle_timeout.as_secs(),
            max_connections_per_user: c.per_user,
            max_connections: c.total,
        }
    }
}

/// Quotas and the engine's pacing (SPEC §2, "Timers and quotas").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    pub max_jobs_per_user: usize,
    pub max_jobs_per_machine: usize,
    pub max_files_per_job: usize,
    pub max_ranges_per_file: usize,
    pub inactivity_timeout_secs: u64,
    pub max_concurrent_transfers: usize,
    pub time_slice_secs: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_interval_ms: u64,
    pub notification_interval_ms: u64,
    pub max_redirects: u32,
    pub upload_cancel_retry_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        LimitsConfig {
            max_jobs_per_user: e.max_jobs_per_user,
            max_jobs_per_machine: e.max_jobs_per_machine,
            max_files_per_job: e.max_files_per_job,
            max_ranges_per_file: e.max_ranges_per_file,
            inactivity_timeout_secs: e.inactivity_timeout.as_secs(),
            max_concurrent_transfers: e.max_concurrent_transfers,
            time_slice_secs: e.time_slice.as_secs(),
            checkpoint_bytes: e.checkpoint_bytes,
            checkpoint_interval_ms: e.checkpoint_interval.as_millis() as u64,
            notification_interval_ms: e.notification_interval.as_millis() as u64,
            max_redirects: e.max_redirects,
            upload_cancel_retry_secs: e.upload_cancel_retry.as_secs(),
        }
    }
}

/// The per-job settings new jobs start with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobDefaultsConfig {
    pub retry_delay_secs: u64,
    pub no_progress_timeout_secs: u64,
    pub max_download_time_secs: u64,
}

impl Default for JobDefaultsConfig {
    fn default() -> Self {
        let s = JobSettings::default();
        JobDefaultsConfig {
            retry_delay_secs: s.retry_delay.as_secs(),
            no_progress_timeout_secs: s.no_progress_timeout.as_secs(),
            max_download_time_secs: s.max_download_time.as_secs(),
        }
    }
}

/// What every plugin's requests go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkSection {
    /// `system` (the `*_proxy` environment variables), `none`, or a proxy URL.
    pub proxy: String,
    /// Bytes per second across all transfers; absent = unlimited.
    pub bandwidth_limit: Option<u64>,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub first_byte_timeout_secs: u64,
    /// A PEM file of CA certificates HTTPS servers are verified against,
    /// besides the system's roots (or instead, with `system-roots = false`).
    pub ca_bundle: Option<PathBuf>,
    /// Whether the system's CA roots are trusted.
    pub system_roots: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        let n = NetworkConfig::default();
        NetworkSection {
            proxy: "system".into(),
            bandwidth_limit: n.bandwidth_limit,
            connect_timeout_secs: n.connect_timeout.as_secs(),
            read_timeout_secs: n.read_timeout.as_secs(),
            first_byte_timeout_secs: n.first_byte_timeout.as_secs(),
            ca_bundle: n.ca_bundle,
            system_roots: n.system_roots,
        }
    }
}

/// Third-party plugins, what they are granted, and the host's bounds on
/// every plugin call (whatever a manifest asks for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginsConfig {
    /// Where third-party plugins are loaded from (default: `plugins` under
    /// the state directory); a missing directory loads none.
    pub dir: Option<PathBuf>,
    /// Where compiled plugins are cached (default: `plugin-cache` under the
    /// state directory).
    pub cache_dir: Option<PathBuf>,
    /// Plugin name → the host patterns it may reach. Built-in plugins not
    /// named here may reach any host; third-party plugins none.
    pub grants: HashMap<String, Vec<String>>,
    /// Internal address ranges (loopback, private, link-local...) every
    /// plugin may reach all the same; none by default.
    pub allow_private_addresses: Vec<String>,
    /// The busy time (guest code and quick host calls) of one call.
    pub call_cpu_limit_secs: u64,
    /// The wall clock of a call made while loading a plugin.
    pub load_call_limit_ms: u64,
    /// Resources (streams, header fields, requests) one call may hold.
    pub max_table_entries: usize,
    /// Bytes of one set of `wasi:http` header fields.
    pub max_header_bytes: usize,
    /// Outgoing requests one call may have in flight at once.
    pub max_requests_in_flight: usize,
    /// Log lines a call may write at once, then per second.
    pub log_burst: u32,
    pub log_lines_per_second: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        let s = SandboxLimits::default();
        PluginsConfig {
            dir: None,
            cache_dir: None,
            grants: HashMap::new(),
            allow_private_addresses: Vec::new(),
            call_cpu_limit_secs: s.call_cpu.as_secs(),
            load_call_limit_ms: s.load_call.as_millis() as u64,
            max_table_entries: s.table_entries,
            max_header_bytes: s.header_bytes,
            max_requests_in_flight: s.requests_in_flight,
            log_burst: s.log_burst,
            log_lines_per_second: s.log_per_second,
        }
    }
}

/// The optional loopback TCP listener serving the Prometheus text to
/// scrapers (besides `GET /v1/metrics` on the socket, for administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// A loopback address and port (`127.0.0.1:9187`, `[::1]:9187`); absent
    /// = no listener. It has no authentication: never anything but loopback.
    pub listen: Option<SocketAddr>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        "invalid-config"
    }
}

impl Config {
    /// Reads `path`; with `required` false a missing file gives the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: String::new(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.daemon.tick_interval_ms == 0 {
            return Err(ConfigError::Invalid("tick-interval-ms must be > 0".into()));
        }
        if self.daemon.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max-request-bytes must be at least 1024".into(),
            ));
        }
        if self.limits.max_concurrent_transfers == 0 {
            return Err(ConfigError::Invalid(
                "max-concurrent-transfers must be > 0".into(),
            ));
        }
        let d = &self.daemon;
        if d.header_read_timeout_ms == 0
            || d.idle_timeout_secs == 0
            || d.max_connections_per_user == 0
            || d.max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "[daemon] header-read-timeout-ms, idle-timeout-secs, max-connections-per-user \
                 and max-connections must be > 0"
                    .into(),
            ));
        }
        let p = &self.plugins;
        if p.call_cpu_limit_secs == 0
            || p.load_call_limit_ms == 0
            || p.max_table_entries < 16
            || p.max_header_bytes < 1024
            || p.max_requests_in_flight == 0
        {
            return Err(ConfigError::Invalid(
                "[plugins] call-cpu-limit-secs, load-call-limit-ms and max-requests-in-flight \
                 must be > 0, max-table-entries at least 16, max-header-bytes at least 1024"
                    .into(),
            ));
        }
        crate::plugin::grants::AddressPolicy::new(&p.allow_private_addresses)
            .map_err(|e| ConfigError::Invalid(format!("allow-private-addresses: {e}")))?;
        if !self.network.system_roots && self.network.ca_bundle.is_none() {
            return Err(ConfigError::Invalid(
                "[network] system-roots = false needs a ca-bundle (nothing would be trusted)"
                    .into(),
            ));
        }
        if let Some(address) = self.metrics.listen
            && !address.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "[metrics] listen = \"{address}\" is not a loopback address (127.0.0.0/8 or ::1): \
                 the metrics listener has no authentication and must not be reachable from the network"
            )));
        }
        self.proxy()?;
        Ok(())
    }

    fn proxy(&self) -> Result<Proxy, ConfigError> {
        Ok(match self.network.proxy.as_str() {
            "system" => Proxy::System,
            "none" => Proxy::None,
            url => {
                url::Url::parse(url).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "proxy {url:?} is not `system`, `none` or a URL: {e}"
                    ))
                })?;
                Proxy::Url(url.to_string())
            }
        })
    }

    /// The engine's policies.
    pub fn engine(&self) -> EngineConfig {
        let l = &self.limits;
        let d = &self.job_defaults;
        EngineConfig {
            max_jobs_per_user: l.max_jobs_per_user,
            max_jobs_per_machine: l.max_jobs_per_machine,
            max_files_per_job: l.max_files_per_job,
            max_ranges_per_file: l.max_ranges_per_file,
            inactivity_timeout: Duration::from_secs(l.inactivity_timeout_secs),
            max_concurrent_transfers: l.max_concurrent_transfers,
            time_slice: Duration::from_secs(l.time_slice_secs),
            checkpoint_bytes: l.checkpoint_bytes,
            checkpoint_interval: Duration::from_millis(l.checkpoint_interval_ms),
            notification_interval: Duration::from_millis(l.notification_interval_ms),
            job_defaults: JobSettings {
                retry_delay: Duration::from_secs(d.retry_delay_secs),
                no_progress_timeout: Duration::from_secs(d.no_progress_timeout_secs),
                max_download_time: Duration::from_secs(d.max_download_time_secs),
                ..JobSettings::default()
            },
            max_redirects: l.max_redirects,
            upload_cancel_retry: Duration::from_secs(l.upload_cancel_retry_secs),
        }
    }

    /// The plugin runtime's configuration, with the cache under `state_dir`
    /// unless the file says otherwise.
    pub fn runtime(&self, state_dir: &Path) -> Result<RuntimeConfig, ConfigError> {
        let n = &self.network;
        Ok(RuntimeConfig {
            network: NetworkConfig {
                proxy: self.proxy()?,
                bandwidth_limit: n.bandwidth_limit,
                connect_timeout: Duration::from_secs(n.connect_timeout_secs),
                read_timeout: Duration::from_secs(n.read_timeout_secs),
                first_byte_timeout: Duration::from_secs(n.first_byte_timeout_secs),
                allow_private_addresses: self.plugins.allow_private_addresses.clone(),
                ca_bundle: n.ca_bundle.clone(),
                system_roots: n.system_roots,
            },
            grants: self.plugins.grants.clone(),
            cache_dir: Some(
                self.plugins
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| state_dir.join("plugin-cache")),
            ),
            sandbox: self.sandbox(),
        })
    }

    /// The bounds on the API's connections.
    pub fn connections(&self) -> ConnectionLimits {
        let d = &self.daemon;
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(d.header_read_timeout_ms),
            idle_timeout: Duration::from_secs(d.idle_timeout_secs),
            per_user: d.max_connections_per_user,
            total: d.max_connections,
        }
    }

    /// The host's bounds on every plugin call.
    pub fn sandbox(&self) -> SandboxLimits {
        let p = &self.plugins;
        SandboxLimits {
            call_cpu: Duration::from_secs(p.call_cpu_limit_secs),
            load_call: Duration::from_millis(p.load_call_limit_ms),
            table_entries: p.max_table_entries,
            header_bytes: p.max_header_bytes,
            requests_in_flight: p.max_requests_in_flight,
            log_burst: p.log_burst,
            log_per_second: p.log_lines_per_second,
            ..SandboxLimits::default()
        }
    }

    /// Where third-party plugins are loaded from.
    pub fn plugins_dir(&self, state_dir: &Path) -> PathBuf {
        self.plugins
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join("plugins"))
    }
}

/// Where a daemon keeps its state and listens, and where its configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The configuration file, and whether it must exist (named explicitly).
    pub config: PathBuf,
    pub config_required: bool,
}

/// The environment the defaults are computed from (a seam for tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub root: bool,
    pub vars: HashMap<String, String>,
}

impl Env {
    pub fn current() -> Env {
        Env {
            root: crate::identity::running_as_root(),
            vars: std::env::vars().collect(),
        }
    }

    fn var(&self, name: &str) -> Option<PathBuf> {
        self.vars
            .get(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

impl Paths {
    /// Flags win over `FERRY_SOCKET` / `FERRY_STATE_DIR` / `FERRY_CONFIG`,
    /// which win over the defaults: for root `/var/lib/ferry`,
    /// `/run/ferry.sock` and `/etc/ferry/config.toml`; for anyone else
    /// `$XDG_STATE_HOME/ferry` (or `~/.local/state/ferry`),
    /// `$XDG_RUNTIME_DIR/ferry.sock` (or `ferry.sock` in the state directory)
    /// and `$XDG_CONFIG_HOME/ferry/config.toml` (or `~/.config/...`).
    pub fn resolve(
        socket: Option<&Path>,
        state_dir: Option<&Path>,
        config: Option<&Path>,
        env: &Env,
    ) -> Paths {
        let home = env.var("HOME").unwrap_or_else(|| PathBuf::from("/"));
        let state_dir = state_dir
            .map(Path::to_path_buf)
            .or_else(|| env.var("FERRY_STATE_DIR"))
            .unwrap_or_else(|| {
                if env.root {
                    PathBuf::from("/var/lib/ferry")
                } else {
                    env.var("XDG_STATE_HOME")
                        .unwrap_or_else(|| home.join(".local/state"))
                        .join("ferry")
                }
            });
        let socket = socket
            .map(Path::to_path_buf)
            .or_else(|| env.var("FERRY_SOCKET"))
            .unwrap_or_else(|| {
                if env.root {
                    PathBuf::from("/run/ferry.sock")
                } else {
                    env.var("XDG_RUNTIME_DIR")
                        .map(|d| d.join("ferry.sock"))
                        .unwrap_or_else(|| state_dir.join("ferry.sock"))
                }
            });
        let named = config
            .map(Path::to_path_buf)
            .or_else(|| env.var("FERRY_CONFIG"));
        let config_required = named.is_some();
        let config = named.unwrap_or_else(|| {
            if env.root {
                PathBuf::from("/etc/ferry/config.toml")
            } else {
                env.var("XDG_CONFIG_HOME")
                    .unwrap_or_else(|| home.join(".config"))
                    .join("ferry/config.toml")
            }
        });
        Paths {
            state_dir,
            socket,
            config,
            config_required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_lists_every_default() {
        let text = include_str!("../ferry.example.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
        let back = toml::to_string(&Config::default()).unwrap();
        assert_eq!(Config::parse(&back).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("[limits]\nmax-jobs-per-usr = 3\n").is_err());
        assert!(Config::parse("[network]\nproxy = \"not a url\"\n").is_err());
        assert!(Config::parse("[network]\nsystem-roots = false\n").is_err());
        let tls = Config::parse("[network]\nca-bundle = \"/ca.pem\"\nsystem-roots = false\n")
            .unwrap()
            .runtime(Path::new("/state"))
            .unwrap()
            .network;
        assert_eq!(tls.ca_bundle.as_deref(), Some(Path::new("/ca.pem")));
        assert!(!tls.system_roots);
        let c = Config::parse("[limits]\nmax-jobs-per-user = 3\n").unwrap();
        assert_eq!(c.engine().max_jobs_per_user, 3);
        assert_eq!(c.engine().max_jobs_per_machine, 300);
    }

    #[test]
    fn the_metrics_listener_is_off_by_default_and_loopback_only() {
        assert_eq!(Config::default().metrics.listen, None);
        for ok in ["127.0.0.1:9187", "127.8.9.10:1", "[::1]:9187"] {
            let c = Config::parse(&format!("[metrics]\nlisten = \"{ok}\"\n")).unwrap();
            assert_eq!(c.metrics.listen, Some(ok.parse().unwrap()));
        }
        for refused in [
            "0.0.0.0:9187",
            "[::]:9187",
            "192.168.1.2:9187",
            "[::ffff:127.0.0.1]:1",
        ] {
            let e = Config::parse(&format!("[metrics]\nlisten = \"{refused}\"\n")).unwrap_err();
            assert_eq!(e.code(), "invalid-config");
            assert!(e.to_string().contains("not a loopback address"), "{e}");
        }
        assert!(Config::parse("[metrics]\nlisten = \"localhost:9187\"\n").is_err());
        assert!(Config::parse("[metrics]\nlisten = \"127.0.0.1\"\n").is_err());
    }

    #[test]
    fn paths_follow_flags_then_environment_then_xdg_or_root_defaults() {
        let mut env = Env::default();
        env.vars.insert("HOME".into(), "/home/a".into());
        let p = Paths::resolve(None, None, None, &env);
        assert_eq!(p.state_dir, PathBuf::from("/home/a/.local/state/ferry"));
        assert_eq!(
            p.socket,
            PathBuf::from("/home/a/.local/state/ferry/ferry.sock")
        );
        assert!(!p.config_required);
        env.vars
            .insert("XDG_RUNTIME_DIR".into(), "/run/user/7".into());
        env.vars.insert("XDG_STATE_HOME".into(), "/s".into());
        let p = Paths::resolve(None, None, None, &env);
        assert_eq!(p.state_dir, PathBuf::from("/s/ferry"));
        assert_eq!(p.socket, PathBuf::from("/run/user/7/ferry.sock"));
        env.vars.insert("FERRY_SOCKET".into(), "/x.sock".into());
        env.vars.insert("FERRY_STATE_DIR".into(), "/st".into());
        let p = Paths::resolve(None, None, None, &env);
        assert_eq!(
            (p.socket.as_path(), p.state_dir.as_path()),
            (Path::new("/x.sock"), Path::new("/st"))
        );
        let p = Paths::resolve(
            Some(Path::new("/f.sock")),
            None,
            Some(Path::new("/c.toml")),
            &env,
        );
        assert_eq!(p.socket, PathBuf::from("/f.sock"));
        assert!(p.config_required);
        let root = Env {
            root: true,
            vars: HashMap::new(),
        };
        let p = Paths::resolve(None, None, None, &root);
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/ferry"));
        assert_eq!(p.socket, PathBuf::from("/run/ferry.sock"));
        assert_eq!(p.config, PathBuf::from("/etc/ferry/config.toml"));
    }
}
