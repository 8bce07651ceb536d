//! The plugin runtime: loads components once, runs each call in a fresh,
//! limited instance, and turns every way a call can fail into a typed error.
//!
//! - One engine per host, with epoch interruption and, where the machine's
//!   address space allows it, the pooling allocator.
//! - One compile per plugin: the component's code is cached on disk, keyed by
//!   the component's hash and the engine's compatibility, and linked once into
//!   an `InstancePre`.
//! - Every call gets its own store and instance, dropped after the call: a
//!   plugin that trapped, ran out of time or memory cannot poison the next
//!   call, and the daemon goes on.

use crate::error::{ErrorContext, TransferError};
use crate::plugin::bindings::reply_processor::{ReplyProcessor, ReplyProcessorPre};
use crate::plugin::bindings::{Transport, TransportPre};
use crate::plugin::grants::HostPolicy;
use crate::plugin::manifest::{Capability, Manifest, ManifestError};
use crate::plugin::network::{Network, NetworkConfig, NetworkError, PluginHttp};
use crate::plugin::sandbox::{LimitHit, PluginState};
use crate::plugin::streams::{Destination, Source};
use crate::plugin::transfer::{
    Capabilities, DownloadRequest, JobContext, RemoteInfo, UploadReply, UploadRequest,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

/// The most reply bytes (an upload's reply body, a processor's reply data)
/// the host takes (WIT `upload-reply`, `replies.process`).
const MAX_REPLY: usize = 1 << 20;

/// How often the engine's epoch advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    pub manifest: Manifest,
    pub builtin: bool,
    pub capabilities: Capabilities,
    policy: Arc<HostPolicy>,
    world: World,
}

enum World {
    Transport(TransportPre<PluginState>),
    ReplyProcessor(ReplyProcessorPre<PluginState>),
}

/// The plugin runtime of one host.
pub struct PluginRuntime {
    engine: Engine,
    transport_linker: Linker<PluginState>,
    processor_linker: Linker<PluginState>,
    network: Arc<Network>,
    config: RuntimeConfig,
    plugins: HashMap<String, Arc<Plugin>>,
    schemes: HashMap<String, String>,
    pooling: bool,
    _epoch: EpochTicker,
}

impl PluginRuntime {
    /// A runtime with no plugins loaded.
    pub fn new(config: RuntimeConfig) -> Result<PluginRuntime, RuntimeError> {
        let (engine, pooling) = new_engine()?;
        let mut transport_linker = Linker::new(&engine);
        let mut processor_linker = Linker::new(&engine);
        link_host(&mut transport_linker, true)?;
        link_host(&mut processor_linker, false)?;
        Ok(PluginRuntime {
            _epoch: EpochTicker::start(&engine),
            engine,
            transport_linker,
            processor_linker,
            network: Arc::new(Network::new(&config.network)?),
            config,
            plugins: HashMap::new(),
            schemes: HashMap::new(),
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

    /// Loads every `NAME.wasm` with its `NAME.toml` manifest from `dir`.
    /// Returns the names loaded; a plugin that fails is reported in the
    /// result's error list and the others still load.
    pub fn load_dir(
        &mut self,
        dir: &Path,
    ) -> Result<(Vec<String>, Vec<RuntimeError>), RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| RuntimeError::PluginsDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        let (mut loaded, mut failed) = (Vec::new(), Vec::new());
        for wasm_path in paths {
            let stem = wasm_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = std::fs::read_to_string(wasm_path.with_extension("toml"))
                .and_then(|manifest| Ok((manifest, std::fs::read(&wasm_path)?)))
                .map_err(|source| RuntimeError::PluginsDir {
                    dir: wasm_path.clone(),
                    source,
                })
                .and_then(|(manifest, wasm)| self.load(&manifest, &wasm, false));
            match result {
                Ok(name) => loaded.push(name),
                Err(e) => {
                    tracing::error!(plugin = %stem, "not loaded: {e}");
                    failed.push(e);
                }
            }
        }
        Ok((loaded, failed))
    }

    /// Loads one plugin from its manifest text and component bytes.
    pub fn load(
        &mut self,
        manifest: &str,
        wasm: &[u8],
        builtin: bool,
    ) -> Result<String, RuntimeError> {
        let manifest = Manifest::parse(manifest).map_err(|source| RuntimeError::Manifest {
            plugin: "(unnamed)".into(),
            source,
        })?;
        let name = manifest.name.clone();
        let component_error = |message: String| RuntimeError::Component {
            plugin: name.clone(),
            message,
        };
        if self.plugins.contains_key(&name) {
            return Err(RuntimeError::NameTaken { plugin: name });
        }
        for scheme in &manifest.schemes {
            if let Some(other) = self.schemes.get(scheme) {
                return Err(RuntimeError::SchemeTaken {
                    plugin: name,
                    scheme: scheme.clone(),
                    other: other.clone(),
                });
            }
        }
        let component = self
            .compile(wasm)
            .map_err(|e| component_error(format!("{e:#}")))?;
        let world = if manifest.is_reply_processor() {
            let pre = self
                .processor_linker
                .instantiate_pre(&component)
                .map_err(|e| component_error(format!("{e:#}")))?;
            World::ReplyProcessor(
                ReplyProcessorPre::new(pre).map_err(|e| component_error(format!("{e:#}")))?,
            )
        } else {
            let pre = self
                .transport_linker
                .instantiate_pre(&component)
                .map_err(|e| component_error(format!("{e:#}")))?;
            World::Transport(TransportPre::new(pre).map_err(|e| component_error(format!("{e:#}")))?)
        };
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
        let policy = HostPolicy::new(&manifest.allowed_hosts, &granted).map_err(|message| {
            RuntimeError::Mismatch {
                plugin: name.clone(),
                message: format!("operator grant: {message}"),
            }
        })?;
        let mut plugin = Plugin {
            manifest,
            builtin,
            capabilities: Capabilities::default(),
            policy: Arc::new(policy),
            world,
        };
        if let World::Transport(_) = plugin.world {
            plugin.capabilities =
                self.check_capabilities(&plugin)
                    .map_err(|message| RuntimeError::Mismatch {
                        plugin: name.clone(),
                        message,
                    })?;
        }
        for scheme in &plugin.manifest.schemes {
            self.schemes.insert(scheme.clone(), name.clone());
        }
        tracing::info!(plugin = %name, version = %plugin.manifest.version, builtin, "plugin loaded");
        self.plugins.insert(name.clone(), Arc::new(plugin));
        Ok(name)
    }

    /// Asks the component what it implements and checks the manifest claims
    /// no more than that.
    fn check_capabilities(&self, plugin: &Plugin) -> Result<Capabilities, String> {
        let job = JobContext::new("load");
        let reported = futures::executor::block_on(self.run_transport(
            plugin,
            &job,
            async |store, transport| {
                transport
                    .ferry_transfer_transfers()
                    .call_supported(store)
                    .await
                    .map(Ok)
            },
        ))
        .map_err(|e| format!("asking for its capabilities failed: {e}"))?;
        let caps = Capabilities::from(reported);
        for claimed in &plugin.manifest.capabilities {
            let has = match claimed {
                Capability::Download => caps.download,
                Capability::Upload => caps.upload,
                Capability::UploadReply => caps.upload_reply,
                Capability::Ranges => caps.ranges,
                Capability::ReplyProcessing => false,
            };
            if !has {
                return Err(format!(
                    "the manifest claims {claimed:?} but the component does not implement it"
                ));
            }
        }
        Ok(caps)
    }

    /// The loaded plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
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
        self.schemes
            .get(parsed.scheme())
            .and_then(|name| self.plugins.get(name))
            .cloned()
            .ok_or_else(|| {
                TransferError::fatal(
                    ErrorContext::Policy,
                    "unsupported-scheme",
                    format!("no plugin serves the {:?} scheme", parsed.scheme()),
                )
            })
    }

    /// The reply processor named `name`.
    pub fn reply_processor(&self, name: &str) -> Result<Arc<Plugin>, TransferError> {
        self.plugins
            .get(name)
            .filter(|p| matches!(p.world, World::ReplyProcessor(_)))
            .cloned()
            .ok_or_else(|| {
                TransferError::fatal(
                    ErrorContext::Policy,
                    "unknown-plugin",
                    format!("no reply processor named {name:?}"),
                )
            })
    }

    /// Asks the server about `url` (size, validator, ranges).
    pub async fn probe(&self, url: &str, job: &JobContext) -> Result<RemoteInfo, TransferError> {
        let plugin = self.transport_for(url)?;
        let url = url.to_string();
        self.run_transport(&plugin, job, async move |store, transport| {
            transport
                .ferry_transfer_transfers()
                .call_probe(store, &url)
                .await
        })
        .await
        .map(RemoteInfo::from)
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
        if !plugin.capabilities.download {
            return Err(unsupported(&plugin, "download"));
        }
        if (request.offset > 0 || request.end.is_some()) && !plugin.capabilities.ranges {
            return Err(unsupported(&plugin, "ranges"));
        }
        let progress = destination.progress();
        let result = self
            .run_transport(&plugin, job, async move |store, transport| {
                lend(store, destination, async |store, borrowed| {
                    transport
                        .ferry_transfer_transfers()
                        .call_download(store, &request.into(), borrowed)
                        .await
                })
                .await
            })
            .await;
        prefer_local(result, &progress.local_error)
    }

    /// Uploads `source`; returns the reply when the request asked for one.
    pub async fn upload(
        &self,
        request: UploadRequest,
        job: &JobContext,
        source: Source,
    ) -> Result<Option<UploadReply>, TransferError> {
        let plugin = self.transport_for(&request.url)?;
        if !plugin.capabilities.upload || (request.want_reply && !plugin.capabilities.upload_reply)
        {
            return Err(unsupported(
                &plugin,
                if request.want_reply {
                    "upload-reply"
                } else {
                    "upload"
                },
            ));
        }
        let progress = source.progress();
        let result = self
            .run_transport(&plugin, job, async move |store, transport| {
                lend(store, source, async |store, borrowed| {
                    transport
                        .ferry_transfer_transfers()
                        .call_upload(store, &request.into(), borrowed)
                        .await
                })
                .await
            })
            .await;
        let reply = prefer_local(result, &progress.local_error)?
            .reply
            .map(UploadReply::from);
        if reply.as_ref().is_some_and(|r| r.body.len() > MAX_REPLY) {
            return Err(TransferError::fatal(
                ErrorContext::RemoteApplication,
                "reply-too-large",
                format!("the server's reply is larger than {MAX_REPLY} bytes"),
            ));
        }
        Ok(reply)
    }

    /// Cancels an unfinished upload session on the server.
    pub async fn cancel_upload(
        &self,
        url: &str,
        session: &str,
        job: &JobContext,
    ) -> Result<(), TransferError> {
        let plugin = self.transport_for(url)?;
        let (url, session) = (url.to_string(), session.to_string());
        self.run_transport(&plugin, job, async move |store, transport| {
            transport
                .ferry_transfer_transfers()
                .call_cancel_upload(store, &url, &session)
                .await
        })
        .await
    }

    /// Runs reply processor `name` over `reply`; returns the reply data.
    pub async fn process_reply(
        &self,
        name: &str,
        reply: UploadReply,
        job: &JobContext,
        file: Destination,
    ) -> Result<Vec<u8>, TransferError> {
        let plugin = self.reply_processor(name)?;
        let World::ReplyProcessor(pre) = &plugin.world else {
            return Err(unsupported(&plugin, "reply processing"));
        };
        let mut store = self.new_store(&plugin, job);
        let call = async {
            let processor: ReplyProcessor = pre.instantiate_async(&mut store).await?;
            lend(&mut store, file, async |store, borrowed| {
                processor
                    .ferry_transfer_replies()
                    .call_process(store, &reply.into(), borrowed)
                    .await
            })
            .await
        };
        let outcome = cancellable(job, call).await;
        let data = settle(&plugin, &store, outcome)?;
        if data.len() > MAX_REPLY {
            return Err(TransferError::fatal(
                ErrorContext::Plugin,
                "reply-too-large",
                "the reply processor returned more than 1 MiB of reply data",
            ));
        }
        Ok(data)
    }

    /// Instantiates plugin `name` in a fresh store and drops it: checks that
    /// the plugin starts, and is what every call pays before its work.
    pub async fn instantiate(&self, name: &str) -> Result<(), TransferError> {
        let plugin = self.plugins.get(name).cloned().ok_or_else(|| {
            TransferError::fatal(
                ErrorContext::Policy,
                "unknown-plugin",
                format!("no plugin named {name:?}"),
            )
        })?;
        let job = JobContext::new("instantiate");
        let mut store = self.new_store(&plugin, &job);
        let outcome = match &plugin.world {
            World::Transport(pre) => pre.instantiate_async(&mut store).await.map(|_| Ok(())),
            World::ReplyProcessor(pre) => pre.instantiate_async(&mut store).await.map(|_| Ok(())),
        };
        settle(&plugin, &store, Ok(outcome))
    }

    /// Instantiates `plugin` in a fresh store and runs `call` on it, under
    /// the plugin's limits and the job's cancellation.
    async fn run_transport<R>(
        &self,
        plugin: &Plugin,
        job: &JobContext,
        call: impl AsyncFnOnce(
            &mut Store<PluginState>,
            &Transport,
        ) -> wasmtime::Result<
            Result<R, crate::plugin::bindings::ferry::transfer::types::TransferError>,
        >,
    ) -> Result<R, TransferError> {
        let World::Transport(pre) = &plugin.world else {
            return Err(unsupported(plugin, "transfers"));
        };
        let mut store = self.new_store(plugin, job);
        let run = async {
            let transport = pre.instantiate_async(&mut store).await?;
            call(&mut store, &transport).await
        };
        let outcome = cancellable(job, run).await;
        settle(plugin, &store, outcome)
    }

    fn new_store(&self, plugin: &Plugin, job: &JobContext) -> Store<PluginState> {
        let limits = plugin.manifest.limits;
        let http = PluginHttp::new(
            self.network.clone(),
            plugin.policy.clone(),
            &plugin.manifest.name,
        );
        let state = PluginState::new(
            &plugin.manifest.name,
            job.clone(),
            http,
            limits.memory_bytes(),
            limits.deadline(),
        );
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
    fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(&self.engine, wasm);
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = hex::encode(Sha256::digest(wasm));
        let path = dir.join(format!("{key}-{:016x}.cwasm", engine_hash.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, into the host's own
            // cache directory; a file that does not load is recompiled.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cached plugin code unusable, recompiling: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, wasm)?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, component.serialize().map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), "cannot cache compiled plugin code: {e}");
        }
        Ok(component)
    }
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
    outcome: Result<
        wasmtime::Result<Result<R, crate::plugin::bindings::ferry::transfer::types::TransferError>>,
        (),
    >,
) -> Result<R, TransferError> {
    let name = &plugin.manifest.name;
    let state = store.data();
    let denied = || {
        TransferError::fatal(
            ErrorContext::Policy,
            "host-not-granted",
            format!(
                "plugin {name} asked to reach {}, which is not granted to it",
                state.http.denied.join(", ")
            ),
        )
    };
    match outcome {
        Err(()) => Err(cancelled(name)),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) if !state.http.denied.is_empty() => {
            tracing::debug!(plugin = %name, "plugin error after a refused request: {}", error.message);
            Err(denied())
        }
        Ok(Ok(Err(error))) => Err(TransferError::from(error)),
        Ok(Err(trap)) => Err(match state.limit_hit {
            Some(LimitHit::Deadline) => TransferError::plugin(
                "plugin-deadline",
                format!(
                    "plugin {name} ran past its deadline of {:?}",
                    plugin.manifest.limits.deadline()
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
                format!("plugin {name} trapped: {}", trap_message(&trap)),
            ),
        }),
    }
}

fn trap_message(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(500)
        .collect()
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

/// Adds WASI (granting nothing), `ferry:transfer/host` and, for transports,
/// `wasi:http` to a linker.
fn link_host(linker: &mut Linker<PluginState>, with_http: bool) -> Result<(), RuntimeError> {
    use crate::plugin::bindings::ferry::transfer::{host, types};
    use wasmtime::component::HasSelf;
    let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(engine_error)?;
    if with_http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(engine_error)?;
    }
    types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    host::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        .map_err(engine_error)?;
    Ok(())
}

/// The engine: epoch interruption, and the pooling allocator when the
/// machine lets us reserve its address space (falls back to on-demand).
fn new_engine() -> Result<(Engine, bool), RuntimeError> {
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
    pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            tracing::info!(
                "pooling allocator unavailable ({e:#}); instances are allocated on demand"
            );
            Engine::new(&base())
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
    fn start(engine: &Engine) -> EpochTicker {
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
