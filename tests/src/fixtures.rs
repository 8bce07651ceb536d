//! What the integration tests share: a plugin runtime set up as a test
//! wants it, the hostile test plugin, and files to download into.

use ferry::TransferError;
use ferry::job::{Checkpoint, Job};
use ferry::plugin::{
    Destination, DownloadProgress, DownloadRequest, JobContext, PluginRuntime, RuntimeConfig,
};
use ferry::store::{JobStore, SledStore, StoreError};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// A test plugin's manifest (`tests/DIR/manifest.toml`) and the component
/// the build script built for it.
fn test_plugin(dir: &str, wasm: &str) -> (String, Vec<u8>) {
    let manifest_path = format!("{}/{dir}/manifest.toml", env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{manifest_path} is readable: {e}"));
    let wasm = std::fs::read(wasm).unwrap_or_else(|e| panic!("the build script built {wasm}: {e}"));
    (manifest, wasm)
}

/// The hostile test plugin (download only).
pub fn hostile_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/hostile", env!("FERRY_HOSTILE_PLUGIN"))
}

/// The hostile `ferry:transfer@0.1.0` plugin, whose load-time call never
/// returns (`hostile-legacy`).
pub fn hostile_legacy_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/hostile-0.1", env!("FERRY_HOSTILE_LEGACY_PLUGIN"))
}

/// The upload test plugin (`testup`, upload and upload-reply).
pub fn upload_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/upload", env!("FERRY_UPLOAD_PLUGIN"))
}

/// The reply processor test plugin (`reply-upper`).
pub fn reply_upper_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/reply-upper", env!("FERRY_REPLY_UPPER_PLUGIN"))
}

/// The plugin built against the frozen `ferry:transfer@0.1.0` (`legacy`).
pub fn legacy_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/legacy-0.1", env!("FERRY_LEGACY_PLUGIN"))
}

/// A component built against `ferry:transfer@1.0.0`, a future major.
pub fn future_major_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/future-major", env!("FERRY_FUTURE_MAJOR_PLUGIN"))
}

/// A component that exports nothing Ferry knows.
pub fn unknown_exports_plugin() -> (String, Vec<u8>) {
    test_plugin(
        "plugins/unknown-exports",
        env!("FERRY_UNKNOWN_EXPORTS_PLUGIN"),
    )
}

/// A plugin that misreports the length of its bodies (`liar`).
pub fn liar_plugin() -> (String, Vec<u8>) {
    test_plugin("plugins/liar", env!("FERRY_LIAR_PLUGIN"))
}

/// The example plugin for authors (`examples/mirror-plugin`).
pub fn mirror_example() -> (String, Vec<u8>) {
    test_plugin("../examples/mirror-plugin", env!("FERRY_MIRROR_EXAMPLE"))
}

/// A runtime with the built-in plugins and the given operator grants.
pub fn runtime_with_grants(grants: &[(&str, &[&str])]) -> PluginRuntime {
    let grants: HashMap<String, Vec<String>> = grants
        .iter()
        .map(|(plugin, hosts)| {
            (
                plugin.to_string(),
                hosts.iter().map(|h| h.to_string()).collect(),
            )
        })
        .collect();
    PluginRuntime::with_builtins(RuntimeConfig {
        grants,
        ..loopback_config()
    })
    .expect("the runtime starts")
}

/// The loopback ranges, which the tests' servers listen on: plugins reach
/// them only when the operator allows them, as tests do explicitly.
pub fn loopback() -> Vec<String> {
    vec!["127.0.0.0/8".to_string(), "::1".to_string()]
}

/// The default runtime configuration, with [`loopback`] allowed, and
/// direct connections whatever the machine's `http_proxy`/`no_proxy` say
/// (the tests' servers are on loopback).
pub fn loopback_config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.network.allow_private_addresses = loopback();
    config.network.proxy = ferry::plugin::network::Proxy::None;
    config
}

/// A runtime with the built-in plugins, granted every host.
pub fn runtime() -> PluginRuntime {
    runtime_with_grants(&[])
}

/// A file to download into, in a directory of its own.
pub struct Target {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub file: Arc<File>,
}

impl Target {
    /// An empty file.
    pub fn new() -> Target {
        Target::with_content(&[])
    }

    /// A file that already holds `content` (a partial download).
    pub fn with_content(content: &[u8]) -> Target {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("download.part");
        std::fs::write(&path, content).expect("the file is writable");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("the file opens");
        Target {
            _dir: dir,
            path,
            file: Arc::new(file),
        }
    }

    pub fn content(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("the file is readable")
    }

    /// Downloads `request` with `runtime` into this file, writing the body
    /// of `request.offset` at file position `position`.
    pub async fn download(
        &self,
        runtime: &PluginRuntime,
        request: DownloadRequest,
        position: u64,
        job: &JobContext,
    ) -> (Result<(), TransferError>, Arc<DownloadProgress>) {
        let may_restart = request.end.is_none();
        let destination =
            Destination::new(self.file.clone(), request.offset, position, may_restart);
        let progress = destination.progress();
        let result = runtime.download(request, job, destination).await;
        (result, progress)
    }
}

impl Default for Target {
    fn default() -> Self {
        Target::new()
    }
}

/// A whole-file download request from `offset`.
pub fn request(url: &str, offset: u64) -> DownloadRequest {
    DownloadRequest {
        url: url.to_string(),
        offset,
        end: None,
        validator: None,
    }
}

/// A temporary directory every user may write. Tests run jobs for made-up
/// uids, and when they run as root the engine creates files with the job
/// owner's rights, as a root daemon does.
pub fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    open_to_all(dir.path());
    dir
}

/// Makes a directory writable by every user (see [`shared_dir`]).
pub fn open_to_all(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .expect("the mode can be set");
}

/// A job store's directory that lives as long as the last store opened in
/// it. An engine's spawned tasks may outlive a test's body, and sled, whose
/// directory was removed under it, stalls for good in its closing flush.
#[derive(Clone)]
pub struct StateDir(Arc<tempfile::TempDir>);

impl StateDir {
    pub fn new() -> StateDir {
        StateDir(Arc::new(
            tempfile::tempdir().expect("a temporary directory"),
        ))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Opens the sled store in this directory (refused while an earlier
    /// store still holds its lock).
    pub fn open_store(&self) -> Result<StoreInDir, StoreError> {
        Ok(StoreInDir {
            store: SledStore::open(self.path())?,
            _dir: self.clone(),
        })
    }
}

impl Default for StateDir {
    fn default() -> StateDir {
        StateDir::new()
    }
}

/// The sled store, keeping its directory alive (fields drop in order: the
/// store closes before the directory may go).
pub struct StoreInDir {
    store: SledStore,
    _dir: StateDir,
}

impl JobStore for StoreInDir {
    fn write(&self, job: &Job) -> Result<(), StoreError> {
        self.store.write(job)
    }

    fn write_checkpoint(&self, id: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.store.write_checkpoint(id, checkpoint)
    }

    fn erase(&self, id: &str) -> Result<(), StoreError> {
        self.store.erase(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    fn load_all(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        self.store.load_all()
    }
}
