//! The plugin runtime: loads components once, runs each call in a fresh,
//! limited instance, and turns every way a call can fail into a typed error.
//!
//! - One engine per host, with epoch interruption and, where the machine's
//!   address space allows it, the pooling allocator.
//! - One compile per plugin: the component's code is cached on disk, keyed by
//!   the component's hash and the engine's compatibility, and linked once into
//!   an `InstancePre`.
//! - What a plugin can do is read from the component: the `ferry:transfer`
//!   interfaces it exports, and the contract version they carry (0.2.0, or
//!   0.1.0 through `legacy`). A manifest that disagrees is refused at load.
//! - Every call gets its own store and instance, dropped after the call: a
//!   plugin that trapped, ran out of time or memory cannot poison the next
//!   call, and the daemon goes on.

use crate::error::{ErrorContext, TransferError};
use crate::plugin::bindings::v0_2;
use crate::plugin::grants::HostPolicy;
use crate::plugin::legacy;
use crate::plugin::manifest::{Capability, Manifest, ManifestError};
use crate::plugin::network::{Network, NetworkConfig, NetworkError, PluginHttp};
use crate::plugin::sandbox::{LimitHit, PluginState, SandboxLimits};
use crate::plugin::streams::{Destination, ReplyFile, ReplySink, Source};
use crate::plugin::transfer::{
    DownloadRequest, JobContext, ReplyContext, ReplyHead, UploadReply, UploadRequest,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::{Config, Engine as WasmEngine, Store};

/// The most reply data (what the owner reads of an upload's reply, or what a
/// processor returns) the host keeps; larger replies live in the reply file.
pub const MAX_REPLY_DATA: usize = 1 << 20;

/// The job id of the calls the host makes while loading a plugin (a real
/// job's id is a UUID): they run under the load-time wall clock.
const LOAD_CALL: &str = "(load)";

/// How often the engine's epoch advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The export names of the current contract.
const DOWNLOAD: &str = "ferry:transfer/download@0.2.0";
const UPLOAD: &str = "ferry:transfer/upload@0.2.0";
const UPLOAD_REPLY: &str = "ferry:transfer/upload-reply@0.2.0";
const REPLY_PROCESSING: &str = "ferry:transfer/reply-processing@0.2.0";

/// How a host's plugin runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    pub network: NetworkConfig,
    /// The operator's grants: plugin name → host patterns it may reach.
    /// Built-in plugins not named here are granted `*`; third-party plugins
    /// not named here are granted nothing.
    pub grants: HashMap<String, Vec<String>>,
    /// Where compiled plugin code is cached; `None` compiles every start.
    pub cache_dir: Option<PathBuf>,
    /// The host's bounds on every call, whatever a manifest says.
    pub sandbox: SandboxLimits,
}

/// Why the runtime or a plugin could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the WebAssembly engine could not be created: {0}")]
    Engine(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("plugin {plugin}: {source}")]
    Manifest {
        plugin: String,
        #[source]
        source: ManifestError,
    },
    #[error("plugin {plugin}: the component could not be compiled or linked: {message}")]
    Component { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Contract { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Mismatch { plugin: String, message: String },
    #[error("plugin {plugin}: scheme {scheme:?} is already served by plugin {other}")]
    SchemeTaken {
        plugin: String,
        scheme: String,
        other: String,
    },
    #[error("plugin {plugin}: a plugin of that name is already loaded")]
    NameTaken { plugin: String },
    #[error("plugins directory {dir}: {source}")]
    PluginsDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin}: {wasm} has no manifest beside it (Ferry reads {manifest})")]
    ManifestMissing {
        plugin: String,
        wasm: PathBuf,
        manifest: PathBuf,
    },
    #[error(
        "plugin {plugin}: the manifest {manifest} has no component beside it (Ferry reads {wasm})"
    )]
    ComponentMissing {
        plugin: String,
        manifest: PathBuf,
        wasm: PathBuf,
    },
    #[error("no plugins directory to reload from (the daemon's configuration names none)")]
    NoPluginsDir,
    /// A call made while loading (a 0.1 transport's capabilities) trapped or
    /// ran past its limits: the plugin's fault, not its manifest's.
    #[error("plugin {plugin}: asking for its capabilities at load failed ({code}): {message}")]
    LoadCall {
        plugin: String,
        code: &'static str,
        message: String,
    },
}

impl RuntimeError {
    /// The stable, kebab-case code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Engine(_) => "engine-failed",
            RuntimeError::Network(_) => "network-failed",
            RuntimeError::Manifest { .. } => "manifest-invalid",
            RuntimeError::Component { .. } => "component-invalid",
            RuntimeError::Contract { .. } => "contract-unsupported",
            RuntimeError::Mismatch { .. } => "manifest-mismatch",
            RuntimeError::SchemeTaken { .. } => "scheme-taken",
            RuntimeError::NameTaken { .. } => "name-taken",
            RuntimeError::PluginsDir { .. } => "plugins-dir-unreadable",
            RuntimeError::ManifestMissing { .. } => "manifest-missing",
            RuntimeError::ComponentMissing { .. } => "component-missing",
            RuntimeError::NoPluginsDir => "no-plugins-dir",
            RuntimeError::LoadCall { code, .. } => code,
        }
    }
}

/// Why a plugin's abilities could not be told.
enum Unable {
    /// The component contradicts itself or its manifest.
    Disagrees(String),
    /// Asking the plugin failed (a trap, its deadline, its memory).
    CallFailed(TransferError),
}

/// A third-party plugin the runtime did not load, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The manifest's name, else the files' common stem.
    pub name: String,
    /// The schemes its manifest names, when it could be read.
    pub schemes: Vec<String>,
    /// The component's path (or the manifest's, when the component is missing).
    pub path: PathBuf,
    /// The error's stable code.
    pub code: &'static str,
    /// Why, for people.
    pub reason: String,
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct Reloaded {
    /// Third-party plugins loaded now, by name.
    pub loaded: Vec<String>,
    /// Third-party plugins loaded before and gone now.
    pub removed: Vec<String>,
    /// Plugins refused now.
    pub refused: Vec<Refused>,
}

/// The loaded plugins, the schemes they serve and the refused ones: swapped
/// whole by a reload, so a call sees one set or the other.
#[derive(Default)]
struct Catalog {
    plugins: HashMap<String, Arc<Plugin>>,
    schemes: HashMap<String, String>,
    refused: Vec<Refused>,
}

impl Catalog {
    /// Adds `plugin` unless its name or a scheme is taken.
    fn insert(&mut self, plugin: Plugin) -> Result<String, RuntimeError> {
        let name = plugin.manifest.name.clone();
        if self.plugins.contains_key(&name) {
            return Err(RuntimeError::NameTaken { plugin: name });
        }
        for scheme in &plugin.manifest.schemes {
            if let Some(other) = self.schemes.get(scheme) {
                return Err(RuntimeError::SchemeTaken {
                    plugin: name,
                    scheme: scheme.clone(),
                    other: other.clone(),
                });
            }
        }
        for scheme in &plugin.manifest.schemes {
            self.schemes.insert(scheme.clone(), name.clone());
        }
        tracing::info!(
            plugin = %name,
            version = %plugin.manifest.version,
            contract = plugin.contract.version(),
            abilities = ?plugin.abilities,
            builtin = plugin.builtin,
            "plugin loaded"
        );
        self.plugins.insert(name.clone(), Arc::new(plugin));
        Ok(name)
    }

    /// Adds what a plugins directory held: the plugins that load, and the
    /// refusals. Returns the names loaded and the errors.
    fn absorb(&mut self, found: Vec<Found>) -> (Vec<String>, Vec<RuntimeError>) {
        let (mut loaded, mut failed) = (Vec::new(), Vec::new());
        for entry in found {
            match entry.plugin.and_then(|plugin| self.insert(plugin)) {
                Ok(name) => loaded.push(name),
                Err(error) => {
                    tracing::error!(plugin = %entry.name, "not loaded: {error}");
                    self.refused.push(Refused {
                        name: entry.name,
                        schemes: entry.schemes,
                        path: entry.path,
                        code: error.code(),
                        reason: error.to_string(),
                    });
                    failed.push(error);
                }
            }
        }
        (loaded, failed)
    }
}

/// One plugin of a plugins directory, prepared but not yet in a catalog.
struct Found {
    name: String,
    schemes: Vec<String>,
    path: PathBuf,
    plugin: Result<Plugin, RuntimeError>,
}

/// The `ferry:transfer` version a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `ferry:transfer@0.1.0`, loaded through `legacy`.
    V0_1,
    /// `ferry:transfer@0.2.0`, the current contract.
    V0_2,
}

impl Contract {
    /// The package version, as the WIT spells it.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    pub manifest: Manifest,
    pub builtin: bool,
    pub contract: Contract,
    /// What the component exports (or, for 0.1, reports).
    pub abilities: BTreeSet<Capability>,
    policy: Arc<HostPolicy>,
    /// The operator's grant, as written, for the messages of refusals.
    granted: Vec<String>,
    pre: InstancePre<PluginState>,
    exports: Exports,
}

impl Plugin {
    /// Whether the plugin can do `ability`.
    pub fn can(&self, ability: Capability) -> bool {
        self.abilities.contains(&ability)
    }

    /// Whether the plugin is a transport (serves URL schemes).
    pub fn is_transport(&self) -> bool {
        self.can(Capability::Download) || self.can(Capability::Upload)
    }
}

/// The export indices of a loaded component, by contract.
enum Exports {
    V0_2(CurrentExports),
    V0_1(legacy::Exports),
}

/// The 0.2 interfaces a component exports, each looked up once.
#[derive(Default)]
struct CurrentExports {
    download: Option<v0_2::exports::ferry::transfer::download::GuestIndices>,
    upload: Option<v0_2::exports::ferry::transfer::upload::GuestIndices>,
    upload_reply: Option<v0_2::exports::ferry::transfer::upload_reply::GuestIndices>,
    reply_processing: Option<v0_2::exports::ferry::transfer::reply_processing::GuestIndices>,
}

/// The names of a component's imports and exports.
struct Interfaces {
    imports: Vec<String>,
    exports: Vec<String>,
}

impl Interfaces {
    fn of(component: &Component, engine: &WasmEngine) -> Interfaces {
        let ty = component.component_type();
        Interfaces {
            imports: ty.imports(engine).map(|(n, _)| n.to_string()).collect(),
            exports: ty.exports(engine).map(|(n, _)| n.to_string()).collect(),
        }
    }

    /// The contract the component was built against, or why it has none
    /// this host loads.
    fn contract(&self) -> Result<Contract, String> {
        let versions: BTreeSet<&str> = self
            .imports
            .iter()
            .chain(&self.exports)
            .filter_map(|name| name.strip_prefix("ferry:transfer/"))
            .map(|rest| rest.split_once('@').map_or("(unversioned)", |(_, v)| v))
            .collect();
        let known: Vec<&str> = self
            .exports
            .iter()
            .filter(|name| name.starts_with("ferry:transfer/"))
            .map(String::as_str)
            .collect();
        if let Some(unknown) = versions.iter().find(|v| !matches!(**v, "0.1.0" | "0.2.0")) {
            return Err(format!(
                "it was built against ferry:transfer@{unknown}, which this host does not load \
                 (it loads ferry:transfer@0.1.0 and @0.2.0)"
            ));
        }
        if versions.len() > 1 {
            return Err(format!(
                "it mixes ferry:transfer versions {}",
                versions.into_iter().collect::<Vec<_>>().join(" and ")
            ));
        }
        if known.is_empty() {
            let exports = if self.exports.is_empty() {
                "nothing".to_string()
            } else {
                self.exports.join(", ")
            };
            return Err(format!(
                "it exports nothing Ferry knows (it exports {exports}); a plugin exports \
                 ferry:transfer/download, upload, upload-reply or reply-processing @0.2.0"
            ));
        }
        Ok(if versions.contains("0.1.0") {
            Contract::V0_1
        } else {
            Contract::V0_2
        })
    }
}

/// The plugin runtime of one host.
pub struct PluginRuntime {
    engine: WasmEngine,
    linker: Linker<PluginState>,
    network: Arc<Network>,
    config: RuntimeConfig,
    catalog: std::sync::RwLock<Catalog>,
    /// The plugins directory `load_dir` read, for `reload`.
    plugins_dir: std::sync::Mutex<Option<PathBuf>>,
    pooling: bool,
    _epoch: EpochTicker,
}

impl PluginRuntime {
    /// A runtime with no plugins loaded.
    pub fn new(config: RuntimeConfig) -> Result<PluginRuntime, RuntimeError> {
        let (engine, pooling) = new_engine()?;
        let mut linker = Linker::new(&engine);
        link_host(&mut linker)?;
        Ok(PluginRuntime {
            _epoch: EpochTicker::start(&engine),
            engine,
            linker,
            network: Arc::new(Network::new(&config.network)?),
            config,
            catalog: std::sync::RwLock::new(Catalog::default()),
            plugins_dir: std::sync::Mutex::new(None),
            pooling,
        })
    }

    /// A runtime with the built-in plugins loaded.
    pub fn with_builtins(config: RuntimeConfig) -> Result<PluginRuntime, RuntimeError> {
        let mut runtime = PluginRuntime::new(config)?;
        for builtin in crate::plugin::builtin::BUILTINS {
            runtime.load(builtin.manifest, builtin.component, true)?;
        }
        Ok(runtime)
    }

    /// Whether instances come from the pooling allocator.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// Loads every `NAME.wasm` with its `NAME.toml` manifest from `dir`,
    /// and remembers `dir` for [`PluginRuntime::reload`]. Returns the names
    /// loaded; a plugin that fails (a `.wasm` without its manifest, a
    /// manifest without its `.wasm`, any load error) is in the error list
    /// and in [`PluginRuntime::refused`], and the others still load.
    pub fn load_dir(
        &mut self,
        dir: &Path,
    ) -> Result<(Vec<String>, Vec<RuntimeError>), RuntimeError> {
        let found = self.scan(dir)?;
        self.set_plugins_dir(dir);
        Ok(self.write_catalog().absorb(found))
    }

    /// Names the plugins directory [`PluginRuntime::reload`] reads, without
    /// reading it now (it may not exist yet).
    pub fn set_plugins_dir(&self, dir: &Path) {
        *self.plugins_dir.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
    }

    /// Reads the plugins directory again: added and changed plugins load,
    /// removed ones go, built-in ones stay. Calls already running keep the
    /// plugin they started with; the next call sees the new set. A
    /// directory that cannot be read changes nothing.
    pub fn reload(&self) -> Result<Reloaded, RuntimeError> {
        let dir = self
            .plugins_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(RuntimeError::NoPluginsDir)?;
        let found = if dir.is_dir() {
            self.scan(&dir)?
        } else {
            Vec::new()
        };
        let mut fresh = Catalog::default();
        let before: BTreeSet<String> = {
            let catalog = self.read_catalog();
            for plugin in catalog.plugins.values().filter(|p| p.builtin) {
                fresh
                    .plugins
                    .insert(plugin.manifest.name.clone(), plugin.clone());
                for scheme in &plugin.manifest.schemes {
                    fresh
                        .schemes
                        .insert(scheme.clone(), plugin.manifest.name.clone());
                }
            }
            catalog
                .plugins
                .values()
                .filter(|p| !p.builtin)
                .map(|p| p.manifest.name.clone())
                .collect()
        };
        let (loaded, _) = fresh.absorb(found);
        let refused = fresh.refused.clone();
        *self.write_catalog() = fresh;
        let removed = before
            .into_iter()
            .filter(|name| !loaded.contains(name))
            .collect();
        tracing::info!(
            ?loaded,
            ?removed,
            refused = refused.len(),
            "plugins reloaded from {}",
            dir.display()
        );
        Ok(Reloaded {
            loaded,
            removed,
            refused,
        })
    }

    /// The third-party plugins that did not load, and why.
    pub fn refused(&self) -> Vec<Refused> {
        self.read_catalog().refused.clone()
    }

    /// Prepares every plugin of `dir`, pairing `NAME.wasm` with `NAME.toml`.
    fn scan(&self, dir: &Path) -> Result<Vec<Found>, RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| RuntimeError::PluginsDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut stems = BTreeSet::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let plugin_file = path.extension().is_some_and(|x| x == "wasm" || x == "toml");
            if let (true, Some(stem)) = (plugin_file, path.file_stem()) {
                stems.insert(stem.to_string_lossy().into_owned());
            }
        }
        let mut found = Vec::new();
        for stem in stems {
            let wasm_path = dir.join(format!("{stem}.wasm"));
            let manifest_path = dir.join(format!("{stem}.toml"));
            let text = std::fs::read_to_string(&manifest_path);
            let manifest = text.as_deref().ok().and_then(|t| Manifest::parse(t).ok());
            let name = manifest.as_ref().map_or(stem.clone(), |m| m.name.clone());
            let schemes = manifest.map(|m| m.schemes).unwrap_or_default();
            let plugin = match (wasm_path.exists(), text) {
                (false, _) => Err(RuntimeError::ComponentMissing {
                    plugin: name.clone(),
                    manifest: manifest_path.clone(),
                    wasm: wasm_path.clone(),
                }),
                (true, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(RuntimeError::ManifestMissing {
                        plugin: name.clone(),
                        wasm: wasm_path.clone(),
                        manifest: manifest_path.clone(),
                    })
                }
                (true, Err(source)) => Err(RuntimeError::PluginsDir {
                    dir: manifest_path.clone(),
                    source,
                }),
                (true, Ok(text)) => std::fs::read(&wasm_path)
                    .map_err(|source| RuntimeError::PluginsDir {
                        dir: wasm_path.clone(),
                        source,
                    })
                    .and_then(|wasm| self.prepare(&text, &wasm, false)),
            };
            let path = if wasm_path.exists() {
                wasm_path
            } else {
                manifest_path
            };
            found.push(Found {
                name,
                schemes,
                path,
                plugin,
            });
        }
        Ok(found)
    }

    fn read_catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_catalog(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads one plugin from its manifest text and component bytes.
    pub fn load(
        &mut self,
        manifest: &str,
        wasm: &[u8],
        builtin: bool,
    ) -> Result<String, RuntimeError> {
        let plugin = self.prepare(manifest, wasm, builtin)?;
        self.write_catalog().insert(plugin)
    }

    /// Compiles and checks one plugin, without adding it to the catalog.
    fn prepare(&self, manifest: &str, wasm: &[u8], builtin: bool) -> Result<Plugin, RuntimeError> {
        let manifest = Manifest::parse(manifest).map_err(|source| RuntimeError::Manifest {
            plugin: "(unnamed)".into(),
            source,
        })?;
        let name = manifest.name.clone();
        let component_error = |message: String| RuntimeError::Component {
            plugin: name.clone(),
            message,
        };
        let mismatch = |message: String| RuntimeError::Mismatch {
            plugin: name.clone(),
            message,
        };
        let component = self
            .compile(wasm)
            .map_err(|e| component_error(format!("{e:#}")))?;
        let interfaces = Interfaces::of(&component, &self.engine);
        let contract = interfaces
            .contract()
            .map_err(|message| RuntimeError::Contract {
                plugin: name.clone(),
                message,
            })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| component_error(format!("{e:#}")))?;
        let exports = find_exports(&pre, &interfaces, contract)
            .map_err(|e| component_error(format!("{e:#}")))?;
        let default_grant = if builtin {
            vec!["*".to_string()]
        } else {
            Vec::new()
        };
        let granted = self
            .config
            .grants
            .get(&name)
            .cloned()
            .unwrap_or(default_grant);
        let policy = HostPolicy::new(&manifest.allowed_hosts, &granted)
            .map_err(|message| mismatch(format!("operator grant: {message}")))?;
        let mut plugin = Plugin {
            manifest,
            builtin,
            contract,
            abilities: BTreeSet::new(),
            policy: Arc::new(policy),
            granted: granted.clone(),
            pre,
            exports,
        };
        plugin.abilities = self.abilities(&plugin).map_err(|e| match e {
            Unable::Disagrees(message) => mismatch(message),
            Unable::CallFailed(error) => RuntimeError::LoadCall {
                plugin: name.clone(),
                code: ["plugin-trap", "plugin-deadline", "plugin-memory"]
                    .into_iter()
                    .find(|c| *c == error.code)
                    .unwrap_or("load-call-failed"),
                message: error.message,
            },
        })?;
        check_manifest(&plugin).map_err(mismatch)?;
        Ok(plugin)
    }

    /// What `plugin` can do: its 0.2 exports, or what a 0.1 transport
    /// reports.
    fn abilities(&self, plugin: &Plugin) -> Result<BTreeSet<Capability>, Unable> {
        match &plugin.exports {
            Exports::V0_2(exports) => {
                let mut abilities = BTreeSet::new();
                if exports.download.is_some() {
                    abilities.extend([Capability::Download, Capability::Ranges]);
                }
                if exports.upload.is_some() {
                    abilities.insert(Capability::Upload);
                }
                if exports.upload_reply.is_some() {
                    if exports.upload.is_none() {
                        return Err(Unable::Disagrees(
                            "the component exports upload-reply without upload (a plugin that \
                             returns replies exports both)"
                                .into(),
                        ));
                    }
                    abilities.insert(Capability::UploadReply);
                }
                if exports.reply_processing.is_some() {
                    abilities.insert(Capability::ReplyProcessing);
                }
                Ok(abilities)
            }
            Exports::V0_1(legacy::Exports::Replies(_)) => {
                Ok(BTreeSet::from([Capability::ReplyProcessing]))
            }
            Exports::V0_1(exports) => {
                let job = JobContext::new(LOAD_CALL);
                futures::executor::block_on(self.run(plugin, &job, async |store, instance| {
                    legacy::supported(exports, store, instance).await
                }))
                .map_err(Unable::CallFailed)
            }
        }
    }

    /// The loaded plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = Arc<Plugin>> {
        let plugins: Vec<Arc<Plugin>> = self.read_catalog().plugins.values().cloned().collect();
        plugins.into_iter()
    }

    /// The transport serving `url`'s scheme.
    pub fn transport_for(&self, url: &str) -> Result<Arc<Plugin>, TransferError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            TransferError::fatal(
                ErrorContext::RemoteFile,
                "invalid-url",
                format!("{url:?} is not a URL: {e}"),
            )
        })?;
        let catalog = self.read_catalog();
        catalog
            .schemes
            .get(parsed.scheme())
            .and_then(|name| catalog.plugins.get(name))
            .cloned()
            .ok_or_else(|| {
                let scheme = parsed.scheme();
                let refused = catalog
                    .refused
                    .iter()
                    .find(|r| r.schemes.iter().any(|s| s == scheme));
                let message = match refused {
                    Some(r) => format!(
                        "no plugin serves the {scheme:?} scheme: plugin {} ({}) was refused: {}",
                        r.name,
                        r.path.display(),
                        r.reason
                    ),
                    None => format!("no plugin serves the {scheme:?} scheme"),
                };
                TransferError::fatal(ErrorContext::Policy, "unsupported-scheme", message)
            })
    }

    /// The reply processor named `name`.
    pub fn reply_processor(&self, name: &str) -> Result<Arc<Plugin>, TransferError> {
        let catalog = self.read_catalog();
        catalog
            .plugins
            .get(name)
            .filter(|p| p.can(Capability::ReplyProcessing))
            .cloned()
            .ok_or_else(|| {
                let message = match catalog.refused.iter().find(|r| r.name == name) {
                    Some(r) => format!(
                        "no reply processor named {name:?}: plugin {name} ({}) was refused: {}",
                        r.path.display(),
                        r.reason
                    ),
                    None => format!("no reply processor named {name:?}"),
                };
                TransferError::fatal(ErrorContext::Policy, "unknown-plugin", message)
            })
    }

    /// Downloads into `destination`. The bytes written are in the
    /// destination's progress, whatever the outcome.
    pub async fn download(
        &self,
        request: DownloadRequest,
        job: &JobContext,
        destination: Destination,
    ) -> Result<(), TransferError> {
        let plugin = self.transport_for(&request.url)?;
        if !plugin.can(Capability::Download) {
            return Err(unsupported(&plugin, "download"));
        }
        if (request.offset > 0 || request.end.is_some()) && !plugin.can(Capability::Ranges) {
            return Err(unsupported(&plugin, "ranges"));
        }
        let progress = destination.progress();
        let context = job.to_wit(&self.config.network);
        let exports = &plugin.exports;
        let result = self
            .run(&plugin, job, async move |store, instance| {
                lend(store, destination, async |store, borrowed| match exports {
                    Exports::V0_2(exports) => {
                        let guest = present(&exports.download)?.load(&mut *store, instance)?;
                        let result = guest
                            .call_download(store, &context, &request.into(), borrowed)
                            .await?;
                        Ok(result.map_err(TransferError::from))
                    }
                    Exports::V0_1(exports) => {
                        legacy::download(exports, store, instance, request, borrowed).await
                    }
                })
                .await
            })
            .await;
        prefer_local(result, &progress.local_error)
    }

    /// Uploads `source`. With a `reply` sink (upload-reply jobs) the server's
    /// reply is written into it; the reply's head and size are in the
    /// sink's progress.
    pub async fn upload(
        &self,
        request: UploadRequest,
        job: &JobContext,
        source: Source,
        reply: Option<ReplySink>,
    ) -> Result<(), TransferError> {
        let plugin = self.transport_for(&request.url)?;
        let wanted = if reply.is_some() {
            Capability::UploadReply
        } else {
            Capability::Upload
        };
        if !plugin.can(Capability::Upload) || !plugin.can(wanted) {
            return Err(unsupported(&plugin, wanted.name()));
        }
        let progress = source.progress();
        let context = job.to_wit(&self.config.network);
        let exports = &plugin.exports;
        let result = self
            .run(&plugin, job, async move |store, instance| {
                lend(store, source, async |store, source| match exports {
                    Exports::V0_2(exports) => match reply {
                        None => {
                            let guest = present(&exports.upload)?.load(&mut *store, instance)?;
                            let result = guest
                                .call_upload(store, &context, &request.into(), source)
                                .await?;
                            Ok(result.map_err(TransferError::from))
                        }
                        Some(sink) => {
                            let guest =
                                present(&exports.upload_reply)?.load(&mut *store, instance)?;
                            lend(store, sink, async |store, sink| {
                                let result = guest
                                    .call_upload_with_reply(
                                        store,
                                        &context,
                                        &request.into(),
                                        source,
                                        sink,
                                    )
                                    .await?;
                                Ok(result.map_err(TransferError::from))
                            })
                            .await
                        }
                    },
                    Exports::V0_1(exports) => {
                        let want_reply = reply.is_some();
                        let outcome =
                            legacy::upload(exports, store, instance, request, want_reply, source)
                                .await?;
                        Ok(outcome.and_then(|data| match (reply, data) {
                            (Some(mut sink), Some(data)) => write_reply(&mut sink, data),
                            _ => Ok(()),
                        }))
                    }
                })
                .await
            })
            .await;
        prefer_local(result, &progress.local_error)
    }

    /// Cancels an unfinished upload session on the server.
    pub async fn cancel_upload(
        &self,
        url: &str,
        session: &str,
        job: &JobContext,
    ) -> Result<(), TransferError> {
        let plugin = self.transport_for(url)?;
        if !plugin.can(Capability::Upload) {
            return Err(unsupported(&plugin, "upload"));
        }
        let context = job.to_wit(&self.config.network);
        let exports = &plugin.exports;
        self.run(&plugin, job, async move |store, instance| match exports {
            Exports::V0_2(exports) => {
                let guest = present(&exports.upload)?.load(&mut *store, instance)?;
                let result = guest
                    .call_cancel_upload(store, &context, url, session)
                    .await?;
                Ok(result.map_err(TransferError::from))
            }
            Exports::V0_1(exports) => {
                legacy::cancel_upload(exports, store, instance, url, session).await
            }
        })
        .await
    }

    /// Runs reply processor `name` over a reply whose body is `body` (a
    /// stream over the host's copy of it). Returns the reply data; what the
    /// processor writes to `file` replaces the raw reply as the reply file
    /// (`file.opened()` tells whether it did).
    pub async fn process_reply(
        &self,
        name: &str,
        context: ReplyContext,
        head: ReplyHead,
        body: Source,
        file: ReplyFile,
        job: &JobContext,
    ) -> Result<Vec<u8>, TransferError> {
        let plugin = self.reply_processor(name)?;
        // A processor sees the reply, never the owner's headers or credentials.
        let mut job = job.clone();
        job.headers.clear();
        job.credentials = None;
        let file_progress = file.progress();
        let opened = file.opened();
        let exports = &plugin.exports;
        let data = self
            .run(&plugin, &job, async move |store, instance| match exports {
                Exports::V0_2(exports) => {
                    let guest = present(&exports.reply_processing)?.load(&mut *store, instance)?;
                    let stream = match body.open(0) {
                        Ok(stream) => stream,
                        Err(e) => return Ok(Err(e)),
                    };
                    let stream: wasmtime_wasi_io::streams::DynInputStream = Box::new(stream);
                    let stream = store.data_mut().table().push(stream)?;
                    lend(store, file, async |store, file| {
                        let result = guest
                            .call_process(store, &context.into(), &(&head).into(), stream, file)
                            .await?;
                        Ok(result.map_err(TransferError::from))
                    })
                    .await
                }
                Exports::V0_1(exports) => {
                    let data = match read_small(&body) {
                        Ok(data) => data,
                        Err(e) => return Ok(Err(e)),
                    };
                    let destination = file.into_destination();
                    lend(store, destination, async |store, destination| {
                        legacy::process(exports, store, instance, &head, data, destination).await
                    })
                    .await
                }
            })
            .await;
        let data = prefer_local(data, &file_progress.local_error)?;
        if file_progress.remote.lock().is_ok_and(|r| r.is_some()) {
            // A 0.1 processor writes its file through a destination.
            opened.store(true, Ordering::Release);
        }
        if data.len() > MAX_REPLY_DATA {
            return Err(TransferError::fatal(
                ErrorContext::Plugin,
                "reply-too-large",
                format!(
                    "reply processor {name} returned {} bytes of reply data; at most {MAX_REPLY_DATA} are kept",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Instantiates plugin `name` in a fresh store and drops it: checks that
    /// the plugin starts, and is what every call pays before its work.
    pub async fn instantiate(&self, name: &str) -> Result<(), TransferError> {
        let plugin = self.read_catalog().plugins.get(name).cloned();
        let plugin = plugin.ok_or_else(|| {
            TransferError::fatal(
                ErrorContext::Policy,
                "unknown-plugin",
                format!("no plugin named {name:?}"),
            )
        })?;
        let job = JobContext::new("instantiate");
        self.run(&plugin, &job, async |_, _| Ok(Ok(()))).await
    }

    /// Instantiates `plugin` in a fresh store and runs `call` on it, under
    /// the plugin's limits and the job's cancellation.
    async fn run<R>(
        &self,
        plugin: &Plugin,
        job: &JobContext,
        call: impl AsyncFnOnce(
            &mut Store<PluginState>,
            &Instance,
        ) -> wasmtime::Result<Result<R, TransferError>>,
    ) -> Result<R, TransferError> {
        let mut store = self.new_store(plugin, job);
        let run = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            call(&mut store, &instance).await
        };
        let outcome = cancellable(job, run).await;
        let dropped = store.data().log_dropped;
        if dropped > 0 {
            tracing::warn!(plugin = %plugin.manifest.name, job = %job.job_id, dropped, "plugin log lines over its rate were dropped");
        }
        settle(plugin, &store, outcome)
    }

    fn new_store(&self, plugin: &Plugin, job: &JobContext) -> Store<PluginState> {
        let limits = plugin.manifest.limits;
        let http = PluginHttp::new(
            self.network.clone(),
            plugin.policy.clone(),
            &plugin.manifest.name,
            self.config.sandbox.requests_in_flight,
        );
        let mut state = PluginState::new(
            &plugin.manifest.name,
            job.clone(),
            http,
            limits.memory_bytes(),
            limits.deadline(),
            self.config.sandbox,
        );
        if job.job_id == LOAD_CALL {
            state.set_load_call();
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.call_hook(|mut ctx, hook| {
            ctx.data_mut().on_transition(hook);
            Ok(())
        });
        store.epoch_deadline_callback(PluginState::on_epoch);
        store.set_epoch_deadline(1);
        store
    }

    /// Compiles `wasm`, or loads its compiled code from the cache.
    ///
    /// Native code from the cache is executed, so it is used only when the
    /// cache directory and the entry are the daemon's own and writable by
    /// nobody else, and when the entry's digest (over the wasm's hash and
    /// the compiled bytes, written with it) checks out: a tampered, foreign
    /// or torn entry is recompiled, never run. Entries are written to a
    /// temporary file, synced, renamed into place and the directory synced.
    fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(&self.engine, wasm);
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let wasm_hash = Sha256::digest(wasm);
        let key = hex::encode(wasm_hash);
        let path = dir.join(format!("{key}-{:016x}.cwasm", engine_hash.finish()));
        if let Err(why) = cache::ensure_private_dir(dir) {
            tracing::warn!(dir = %dir.display(), "plugin code cache not used: {why}");
            return Component::new(&self.engine, wasm);
        }
        match cache::read_entry(&path, &wasm_hash) {
            Ok(Some(code)) => {
                // SAFETY: `code` is what `Component::serialize` of an engine
                // with the same compatibility hash wrote for this very wasm:
                // its digest, over the wasm's hash and these bytes, was read
                // back from a file only the daemon's user can write.
                match unsafe { Component::deserialize(&self.engine, &code) } {
                    Ok(component) => return Ok(component),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cached plugin code unusable, recompiling: {e}")
                    }
                }
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(path = %path.display(), "cached plugin code refused, recompiling: {why}")
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        let written = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|code| cache::write_entry(&path, &wasm_hash, &code));
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), "cannot cache compiled plugin code: {e}");
        }
        Ok(component)
    }
}

/// The compiled-code cache's files: `MAGIC`, then SHA-256 over the wasm's
/// hash and the compiled code, then the code.
mod cache {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::path::Path;

    const MAGIC: &[u8; 8] = b"FERRYC1\0";
    const HEADER: usize = MAGIC.len() + 32;

    fn digest(wasm_hash: &[u8], code: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(wasm_hash);
        hasher.update((code.len() as u64).to_le_bytes());
        hasher.update(code);
        hasher.finalize().into()
    }

    /// Why `meta` is not the daemon's own, writable by it alone.
    fn foreign(meta: &std::fs::Metadata) -> Option<String> {
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Some(format!("it is owned by uid {}, not {me}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "its mode {:o} lets others write it",
                meta.mode() & 0o7777
            ));
        }
        None
    }

    /// Creates `dir` (mode 0700) or checks the one there.
    pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return Err(format!("cannot create it: {e}"));
        }
        let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return Err("it is not a directory".into());
        }
        foreign(&meta).map_or(Ok(()), Err)
    }

    /// The compiled code in `path`, if there is an entry and it checks out.
    pub fn read_entry(path: &Path, wasm_hash: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("it is not a regular file".into());
        }
        if let Some(why) = foreign(&meta) {
            return Err(why);
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err("it is not a Ferry cache entry (or was cut short)".into());
        }
        let code = bytes.split_off(HEADER);
        if bytes[MAGIC.len()..] != digest(wasm_hash, &code) {
            return Err("its digest does not match its contents".into());
        }
        Ok(Some(code))
    }

    /// Writes an entry durably: a private temporary file, synced, renamed
    /// into place, and the directory synced.
    pub fn write_entry(path: &Path, wasm_hash: &[u8], code: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        let written = (|| {
            file.write_all(MAGIC)?;
            file.write_all(&digest(wasm_hash, code))?;
            file.write_all(code)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// Looks up the `ferry:transfer` interfaces a component exports.
fn find_exports(
    pre: &InstancePre<PluginState>,
    interfaces: &Interfaces,
    contract: Contract,
) -> wasmtime::Result<Exports> {
    let exported = |name: &str| interfaces.exports.iter().any(|e| e == name);
    Ok(match contract {
        Contract::V0_1 => {
            let name = if exported(legacy::REPLIES) {
                legacy::REPLIES
            } else {
                legacy::TRANSFERS
            };
            Exports::V0_1(legacy::Exports::find(pre, name)?)
        }
        Contract::V0_2 => {
            use v0_2::exports::ferry::transfer as x;
            let mut found = CurrentExports::default();
            if exported(DOWNLOAD) {
                found.download = Some(x::download::GuestIndices::new(pre)?);
            }
            if exported(UPLOAD) {
                found.upload = Some(x::upload::GuestIndices::new(pre)?);
            }
            if exported(UPLOAD_REPLY) {
                found.upload_reply = Some(x::upload_reply::GuestIndices::new(pre)?);
            }
            if exported(REPLY_PROCESSING) {
                found.reply_processing = Some(x::reply_processing::GuestIndices::new(pre)?);
            }
            Exports::V0_2(found)
        }
    })
}

/// Checks the manifest against what the component can do, naming the
/// difference: a transport names its schemes, a reply processor names none,
/// and a 0.1-era `capabilities` list agrees with the component.
fn check_manifest(plugin: &Plugin) -> Result<(), String> {
    let manifest = &plugin.manifest;
    let names =
        |set: &BTreeSet<Capability>| set.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    if plugin.abilities.is_empty() {
        return Err("the component can do nothing (it reports no capability)".into());
    }
    if plugin.is_transport() && manifest.schemes.is_empty() {
        return Err(format!(
            "the component exports {} but the manifest names no URL scheme",
            names(&plugin.abilities)
        ));
    }
    if !plugin.is_transport() && !manifest.schemes.is_empty() {
        return Err(format!(
            "the manifest names schemes {:?} but the component exports no transport \
             interface (it exports {})",
            manifest.schemes,
            names(&plugin.abilities)
        ));
    }
    let Some(listed) = &manifest.capabilities else {
        return Ok(());
    };
    let listed: BTreeSet<Capability> = listed.iter().copied().collect();
    let claimed_only: BTreeSet<Capability> =
        listed.difference(&plugin.abilities).copied().collect();
    if !claimed_only.is_empty() {
        return Err(format!(
            "the manifest lists {} but the component does not implement it (it {} {})",
            names(&claimed_only),
            match plugin.contract {
                Contract::V0_1 => "reports",
                Contract::V0_2 => "exports",
            },
            names(&plugin.abilities)
        ));
    }
    // A 0.1 host accepted a manifest listing less than the component did;
    // a 0.2 manifest that lists capabilities lists them all (ranges aside,
    // which every 0.2 download transport takes).
    let mut unlisted: BTreeSet<Capability> =
        plugin.abilities.difference(&listed).copied().collect();
    unlisted.remove(&Capability::Ranges);
    if plugin.contract == Contract::V0_2 && !unlisted.is_empty() {
        return Err(format!(
            "the component exports {} but the manifest's capabilities leave it out",
            names(&unlisted)
        ));
    }
    Ok(())
}

/// A loaded export, or a host error when the component lacks it (the
/// callers check abilities first).
fn present<T>(indices: &Option<T>) -> wasmtime::Result<&T> {
    indices
        .as_ref()
        .ok_or_else(|| wasmtime::format_err!("the component lacks the interface called"))
}

/// Writes a 0.1 plugin's in-memory reply into the reply sink.
fn write_reply(sink: &mut ReplySink, reply: UploadReply) -> Result<(), TransferError> {
    use wasmtime_wasi_io::streams::OutputStream;
    let head = ReplyHead {
        status: reply.status,
        headers: reply.headers,
    };
    let mut stream = sink.begin(head)?;
    stream.write(bytes::Bytes::from(reply.body)).map_err(|e| {
        TransferError::local_file(
            "write-failed",
            &std::io::Error::other(e.to_string()),
            "reply file",
        )
    })
}

/// The whole of a small reply, for a 0.1 processor (which takes the reply as
/// data of at most 1 MiB).
fn read_small(body: &Source) -> Result<Vec<u8>, TransferError> {
    if body.size() > MAX_REPLY_DATA as u64 {
        return Err(TransferError::fatal(
            ErrorContext::RemoteApplication,
            "reply-too-large",
            format!(
                "the reply has {} bytes; a ferry:transfer@0.1.0 reply processor takes at most {MAX_REPLY_DATA}",
                body.size()
            ),
        ));
    }
    body.read_all()
}

/// Puts `value` in the store's table, lends it to `call` as a borrowed
/// resource, and takes it back afterwards.
async fn lend<T: Send + 'static, R>(
    store: &mut Store<PluginState>,
    value: T,
    call: impl AsyncFnOnce(
        &mut Store<PluginState>,
        wasmtime::component::Resource<T>,
    ) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let owned = store.data_mut().table().push(value)?;
    let borrowed = wasmtime::component::Resource::new_borrow(owned.rep());
    let result = call(store, borrowed).await;
    store.data_mut().table().delete(owned)?;
    result
}

/// A failure of the host's own file outranks what the plugin made of it.
fn prefer_local<R>(
    result: Result<R, TransferError>,
    local: &std::sync::Mutex<Option<TransferError>>,
) -> Result<R, TransferError> {
    let local = local.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (result, local) {
        (Err(_), Some(local)) => Err(local),
        (result, _) => result,
    }
}

/// Runs `call` unless the job is cancelled first.
async fn cancellable<R>(
    job: &JobContext,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> Result<wasmtime::Result<R>, ()> {
    tokio::select! {
        result = call => Ok(result),
        () = job.cancel.cancelled() => Err(()),
    }
}

/// Turns the outcome of a call into the typed result the host reports.
fn settle<R>(
    plugin: &Plugin,
    store: &Store<PluginState>,
    outcome: Result<wasmtime::Result<Result<R, TransferError>>, ()>,
) -> Result<R, TransferError> {
    let name = &plugin.manifest.name;
    let state = store.data();
    let denied = || {
        TransferError::fatal(
            ErrorContext::Policy,
            "host-not-granted",
            not_granted(plugin, &state.http.denied),
        )
    };
    let addresses = state
        .http
        .address_denied
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    match outcome {
        Err(()) => Err(cancelled(name)),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) if !addresses.is_empty() => {
            tracing::debug!(plugin = %name, "plugin error after a refused address: {}", error.message);
            Err(TransferError::fatal(
                ErrorContext::Policy,
                "address-not-allowed",
                format!(
                    "plugin {name} asked to reach {}, an internal (loopback, link-local, private \
                     or reserved) address; the operator allows such addresses with \
                     [plugins] allow-private-addresses, or by granting the address to the plugin",
                    addresses.join(", ")
                ),
            ))
        }
        Ok(Ok(Err(error))) if !state.http.denied.is_empty() => {
            tracing::debug!(plugin = %name, "plugin error after a refused request: {}", error.message);
            Err(denied())
        }
        Ok(Ok(Err(error))) => Err(error),
        Ok(Err(trap)) => Err(match state.limit_hit {
            Some(LimitHit::Deadline) => TransferError::plugin(
                "plugin-deadline",
                format!(
                    "plugin {name} ran past its deadline of {:?}",
                    plugin.manifest.limits.deadline()
                ),
            ),
            Some(LimitHit::CallBudget) => TransferError::plugin(
                "plugin-deadline",
                format!(
                    "plugin {name} used up its call's budget ({:?} busy, {:?} at load time)",
                    state.limits().call_cpu,
                    state.limits().load_call
                ),
            ),
            Some(LimitHit::Memory) => TransferError::plugin(
                "plugin-memory",
                format!(
                    "plugin {name} went past its memory limit of {} MiB",
                    plugin.manifest.limits.memory_mib
                ),
            ),
            Some(LimitHit::Cancelled) => cancelled(name),
            None => TransferError::plugin(
                "plugin-trap",
                match state.stderr.panic_message() {
                    // A Rust plugin's panic: its own words, then the trap.
                    Some(panic) => {
                        format!("plugin {name} {panic} (trapped: {})", trap_message(&trap))
                    }
                    None => format!("plugin {name} trapped: {}", trap_message(&trap)),
                },
            ),
        }),
    }
}

/// What a trap says: its first line, and its cause (a host bound the plugin
/// hit says which) when there is one.
fn trap_message(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let first = text.lines().next().unwrap_or("");
    let cause = e.root_cause().to_string();
    let cause = cause.lines().next().unwrap_or("");
    let text = if cause.is_empty() || first.contains(cause) {
        first.to_string()
    } else {
        format!("{first} {cause}")
    };
    text.chars().take(500).collect()
}

/// Why the hosts `denied` (`host:port`) were refused, saying which side to
/// fix: the plugin's manifest, or the operator's grant.
fn not_granted(plugin: &Plugin, denied: &[String]) -> String {
    use crate::plugin::grants::HostPattern;
    let name = &plugin.manifest.name;
    let covers = |patterns: &[String], host: &str, port: u16| {
        patterns
            .iter()
            .any(|p| HostPattern::parse(p).is_ok_and(|p| p.matches(host, port)))
    };
    let list = |patterns: &[String]| {
        if patterns.is_empty() {
            "none".to_string()
        } else {
            patterns.join(", ")
        }
    };
    let why: Vec<String> = denied
        .iter()
        .map(|target| {
            let (host, port) = target
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
                .unwrap_or((target.as_str(), 0));
            let declared = covers(&plugin.manifest.allowed_hosts, host, port);
            let granted = covers(&plugin.granted, host, port);
            match (declared, granted) {
                (false, _) => format!(
                    "{target}, which its manifest's allowed-hosts ({}) does not include: the \
                     plugin's manifest must ask for it",
                    list(&plugin.manifest.allowed_hosts)
                ),
                (true, false) if plugin.granted.is_empty() => format!(
                    "{target}, but the operator grants it no host: the daemon's configuration \
                     needs [plugins.grants] {name} = [\"{target}\"]"
                ),
                (true, false) => format!(
                    "{target}, which the operator's grant ({}) does not include: add \"{target}\" \
                     to [plugins.grants] {name} in the daemon's configuration (a pattern without \
                     a port matches every port)",
                    list(&plugin.granted)
                ),
                (true, true) => format!("{target}, which the host's network policy refuses"),
            }
        })
        .collect();
    format!("plugin {name} asked to reach {}", why.join("; and "))
}

fn cancelled(name: &str) -> TransferError {
    TransferError::transient(
        ErrorContext::Plugin,
        "cancelled",
        format!("the call to plugin {name} was cancelled"),
    )
}

fn unsupported(plugin: &Plugin, what: &str) -> TransferError {
    TransferError::fatal(
        ErrorContext::Policy,
        "unsupported",
        format!("plugin {} does not implement {what}", plugin.manifest.name),
    )
}

/// Adds WASI (granting nothing), `wasi:http` and both `ferry:transfer`
/// contracts' host interfaces to the linker.
fn link_host(linker: &mut Linker<PluginState>) -> Result<(), RuntimeError> {
    use crate::plugin::bindings::{v0_1, v0_2};
    use wasmtime::component::HasSelf;
    let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(engine_error)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(engine_error)?;
    v0_2::ferry::transfer::types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    v0_2::ferry::transfer::host::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    v0_1::ferry::transfer::types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    v0_1::ferry::transfer::host::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    Ok(())
}

/// At most this many bytes of each linear memory and table are kept
/// resident between instances.
const KEEP_RESIDENT: usize = 4 << 20;

/// The engine: epoch interruption, and the pooling allocator when the
/// machine lets us reserve its address space (falls back to on-demand).
fn new_engine() -> Result<(WasmEngine, bool), RuntimeError> {
    let base = || {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config
    };
    let mut pooled = base();
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(512)
        .total_tables(512)
        .total_stacks(256)
        .max_memory_size(4 << 30);
    // A freed instance's written pages are found (`PAGEMAP_SCAN`, Linux 6.7
    // on) and reset in place, not handed back to the kernel: the next
    // instance (one a file, for a job of small files) takes no page faults
    // on them, and no other CPU is interrupted to flush its TLB. What stays
    // resident is what instances wrote, up to this much each. Without the
    // scan, pages are handed back (keeping them would zero all 4 MiB).
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match WasmEngine::new(&pooled) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            tracing::info!(
                "pooling allocator unavailable ({e:#}); instances are allocated on demand"
            );
            WasmEngine::new(&base())
                .map(|e| (e, false))
                .map_err(|e| RuntimeError::Engine(format!("{e:#}")))
        }
    }
}

/// Advances the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &WasmEngine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("ferry-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("the epoch thread starts");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
