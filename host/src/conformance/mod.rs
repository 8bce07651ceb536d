//! The plugin conformance suite: `ferry plugin test PLUGIN.wasm`.
//!
//! It loads one plugin into the real plugin runtime, with the limits of its
//! manifest and the grants a daemon would apply (here: only the suite's own
//! loopback servers), starts those servers, runs every check that applies to
//! what the plugin exports, and says precisely what failed: what was
//! expected, what was seen, and the requests the servers received. Nothing
//! leaves the machine and no daemon runs.
//!
//! - `server`: the scriptable loopback HTTP/1.1 server (and a tus endpoint);
//! - `checks`: the checks, as data (id, one line of documentation, the
//!   ability they apply to, the function), one module per ability;
//! - `report`: the outcome for people, as JSON, and as JUnit XML.
//!
//! URLs. The suite asks the plugin for `{scheme}://{host}:{port}{path}`,
//! where `scheme` is `http` when the plugin serves it, else the first scheme
//! of its manifest, and expects the plugin to fetch
//! `http://{host}:{port}{path}` (as the `mirror` example does). A plugin
//! that maps its URLs otherwise is tested with `--url-template`, which may
//! use `{scheme}`, `{host}`, `{port}` and `{path}`.

mod checks;
pub mod report;
pub mod server;

use crate::TransferError;
use crate::plugin::manifest::{Capability, Manifest};
use crate::plugin::network::{NetworkConfig, Proxy};
use crate::plugin::{
    Destination, DownloadRequest, JobContext, Plugin, PluginRuntime, RemoteInfo, RuntimeConfig,
    RuntimeError,
};
use futures::future::LocalBoxFuture;
use server::{Recorded, Server};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use checks::all as checks;

/// The longest one check may take before it is failed (a plugin stuck in a
/// host call that never returns).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a check applies to: the ability a plugin must have for it to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applies {
    /// Every plugin.
    Any,
    Download,
    Upload,
    UploadReply,
    ReplyProcessing,
}

impl Applies {
    fn to(self, plugin: &Plugin) -> bool {
        match self {
            Applies::Any => true,
            Applies::Download => plugin.can(Capability::Download),
            Applies::Upload => plugin.can(Capability::Upload),
            Applies::UploadReply => plugin.can(Capability::UploadReply),
            Applies::ReplyProcessing => plugin.can(Capability::ReplyProcessing),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Applies::Any => "any",
            Applies::Download => "download",
            Applies::Upload => "upload",
            Applies::UploadReply => "upload-reply",
            Applies::ReplyProcessing => "reply-processing",
        }
    }
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub expected: String,
    pub seen: String,
}

impl Failure {
    pub fn new(expected: impl Into<String>, seen: impl Into<String>) -> Failure {
        Failure {
            expected: expected.into(),
            seen: seen.into(),
        }
    }
}

/// What a check's function returns.
pub type Verdict = Result<(), Failure>;

type CheckFn = for<'a> fn(&'a Ctx, u64) -> LocalBoxFuture<'a, Verdict>;

/// One check: a stable id, one line of documentation, what it applies to.
pub struct Check {
    pub id: &'static str,
    pub doc: &'static str,
    pub applies: Applies,
    /// A parameter of the check's function (a status code, a redirect).
    param: u64,
    run: CheckFn,
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Passed,
    Failed(Failure),
    /// The plugin lacks the ability the check is about.
    NotApplicable,
    /// Left out by `--only` / `--skip`, or not run because the plugin did
    /// not load.
    NotRun,
}

/// One check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub doc: &'static str,
    pub applies: Applies,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The requests the servers received during the check (failures only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<Recorded>,
    pub millis: u64,
}

/// What the suite is asked to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub url_template: Option<String>,
    /// Check ids or `prefix*` patterns to run (all when empty).
    pub only: Vec<String>,
    /// Check ids or `prefix*` patterns to leave out.
    pub skip: Vec<String>,
}

/// Why the suite could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{0}")]
    UnknownCheck(String),
    #[error("the suite's loopback servers could not start: {0}")]
    Servers(std::io::Error),
    #[error("the plugin runtime could not start: {0}")]
    Runtime(String),
    #[error("the URL template {0:?} must contain {{port}} and {{path}}")]
    Template(String),
}

impl SuiteError {
    pub fn code(&self) -> &'static str {
        match self {
            SuiteError::UnknownCheck(_) => "unknown-check",
            SuiteError::Servers(_) => "servers-failed",
            SuiteError::Runtime(_) => "runtime-failed",
            SuiteError::Template(_) => "invalid-url-template",
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub plugin: String,
    pub version: String,
    pub contract: Option<String>,
    pub abilities: Vec<Capability>,
    /// Why the plugin did not load, when it did not.
    pub load_error: Option<String>,
    pub url_template: String,
    pub results: Vec<CheckResult>,
    pub millis: u64,
}

impl Report {
    pub fn count(&self, want: fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| want(&r.outcome)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }
    /// Whether every applicable, selected check ran and passed.
    pub fn success(&self) -> bool {
        self.load_error.is_none() && self.failed() == 0 && self.passed() > 0
    }
    /// The ids of the failed checks.
    pub fn failures(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.id)
            .collect()
    }
}

/// Whether `id` matches `pattern` (an id, or a prefix ending in `*`).
fn matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

/// Checks `--only`/`--skip` patterns against the suite's ids.
fn validate_selection(options: &Options) -> Result<(), SuiteError> {
    for pattern in options.only.iter().chain(&options.skip) {
        if !checks().iter().any(|c| matches(pattern, c.id)) {
            return Err(SuiteError::UnknownCheck(format!(
                "{pattern:?} names no check (see `ferry plugin test --list`)"
            )));
        }
    }
    Ok(())
}

/// Runs the suite on `wasm` described by `manifest`.
pub async fn run(manifest: &str, wasm: &[u8], options: &Options) -> Result<Report, SuiteError> {
    validate_selection(options)?;
    let started = Instant::now();
    let a = Server::start("a").await.map_err(SuiteError::Servers)?;
    let b = Server::start("b").await.map_err(SuiteError::Servers)?;
    let ungranted = Server::start("ungranted")
        .await
        .map_err(SuiteError::Servers)?;
    // A granted port where nothing listens.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(SuiteError::Servers)?;
        listener.local_addr().map_err(SuiteError::Servers)?.port()
    };
    let parsed = Manifest::parse(manifest).ok();
    let name = parsed.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let grant = [a.port(), b.port(), closed_port]
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let config = RuntimeConfig {
        network: NetworkConfig {
            proxy: Proxy::None,
            ..NetworkConfig::default()
        },
        grants: HashMap::from([(name.clone(), grant)]),
        ..RuntimeConfig::default()
    };
    let mut runtime = PluginRuntime::new(config).map_err(|e| SuiteError::Runtime(e.to_string()))?;
    let loaded = runtime.load(manifest, wasm, false);
    let mut report = Report {
        plugin: name.clone(),
        version: parsed
            .as_ref()
            .map(|m| m.version.clone())
            .unwrap_or_default(),
        contract: None,
        abilities: Vec::new(),
        load_error: None,
        url_template: String::new(),
        results: Vec::new(),
        millis: 0,
    };
    let mut mismatch = false;
    let plugin = match loaded {
        Ok(name) => runtime.plugins().find(|p| p.manifest.name == name),
        Err(e) => {
            mismatch = matches!(e, RuntimeError::Mismatch { .. });
            report.load_error = Some(e.to_string());
            None
        }
    };
    let Some(plugin) = plugin else {
        let error = report.load_error.clone().unwrap_or_default();
        for check in checks() {
            let outcome = match checks::load_verdict(check.id, &error, mismatch) {
                Some(verdict) => verdict,
                None => Outcome::NotRun,
            };
            report.results.push(CheckResult {
                id: check.id,
                doc: check.doc,
                applies: check.applies,
                outcome,
                requests: Vec::new(),
                millis: 0,
            });
        }
        report.millis = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    report.contract = Some(plugin.contract.version().to_string());
    report.abilities = plugin.abilities.iter().copied().collect();
    let scheme = if plugin.manifest.schemes.iter().any(|s| s == "http") {
        "http".to_string()
    } else {
        plugin.manifest.schemes.first().cloned().unwrap_or_default()
    };
    let template = options
        .url_template
        .clone()
        .unwrap_or_else(|| "{scheme}://{host}:{port}{path}".to_string());
    if !template.contains("{port}") || !template.contains("{path}") {
        return Err(SuiteError::Template(template));
    }
    report.url_template = template.replace("{scheme}", &scheme);
    let dir = tempfile::tempdir().map_err(SuiteError::Servers)?;
    let cx = Ctx {
        runtime,
        plugin,
        template: report.url_template.clone(),
        a,
        b,
        ungranted,
        closed_port,
        dir,
    };
    for check in checks() {
        let selected = (options.only.is_empty()
            || options.only.iter().any(|p| matches(p, check.id)))
            && !options.skip.iter().any(|p| matches(p, check.id));
        let began = Instant::now();
        let (outcome, requests) = if !check.applies.to(&cx.plugin) {
            (Outcome::NotApplicable, Vec::new())
        } else if !selected {
            (Outcome::NotRun, Vec::new())
        } else {
            cx.reset();
            let verdict =
                match tokio::time::timeout(CHECK_TIMEOUT, (check.run)(&cx, check.param)).await {
                    Ok(verdict) => verdict,
                    Err(_) => Err(Failure::new(
                        format!("the check to finish within {CHECK_TIMEOUT:?}"),
                        "it did not: the plugin never returned",
                    )),
                };
            match verdict {
                Ok(()) => (Outcome::Passed, Vec::new()),
                Err(failure) => (Outcome::Failed(failure), cx.requests()),
            }
        };
        report.results.push(CheckResult {
            id: check.id,
            doc: check.doc,
            applies: check.applies,
            outcome,
            requests,
            millis: began.elapsed().as_millis() as u64,
        });
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// What a check works with: the runtime with the plugin loaded, the
/// servers, a directory for files.
pub struct Ctx {
    runtime: PluginRuntime,
    plugin: Arc<Plugin>,
    /// The URL template with the scheme filled in.
    template: String,
    /// The main server, granted.
    a: Server,
    /// Another origin (another port), granted.
    b: Server,
    /// A server the plugin is not granted.
    ungranted: Server,
    /// A granted port where nothing listens.
    closed_port: u16,
    dir: tempfile::TempDir,
}

/// What one download call did.
pub struct Dl {
    pub result: Result<(), TransferError>,
    /// The file's content after the call.
    pub content: Vec<u8>,
    pub remote: Option<RemoteInfo>,
    pub restarted: bool,
    pub written_to: u64,
}

impl Ctx {
    /// The URL the plugin is asked for, for `path` on port `port`.
    fn url_at(&self, port: u16, path: &str) -> String {
        self.template
            .replace("{host}", "127.0.0.1")
            .replace("{port}", &port.to_string())
            .replace("{path}", path)
    }

    /// The URL the plugin is asked for, for `path` on `server`.
    fn url(&self, server: &Server, path: &str) -> String {
        self.url_at(server.port(), path)
    }

    fn reset(&self) {
        for server in [&self.a, &self.b, &self.ungranted] {
            server.reset();
        }
    }

    /// Every request the servers received during the current check.
    fn requests(&self) -> Vec<Recorded> {
        let mut all = self.a.requests();
        all.extend(self.b.requests());
        all.extend(self.ungranted.requests());
        all
    }

    /// A fresh file holding `prefill`.
    fn file(&self, prefill: &[u8]) -> (std::path::PathBuf, Arc<std::fs::File>) {
        let path = tempfile::Builder::new()
            .prefix("dl-")
            .tempfile_in(self.dir.path())
            .expect("the suite's directory is writable")
            .into_temp_path()
            .keep()
            .expect("the file is kept");
        std::fs::write(&path, prefill).expect("the suite's directory is writable");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("the file opens");
        (path, Arc::new(file))
    }

    /// Downloads `request` into a file holding `prefill`, the body of
    /// `request.offset` going to file position `position`.
    async fn download(
        &self,
        request: DownloadRequest,
        job: &JobContext,
        prefill: &[u8],
        position: u64,
    ) -> Dl {
        let (path, file) = self.file(prefill);
        let may_restart = request.end.is_none();
        let destination = Destination::new(file, request.offset, position, may_restart);
        let progress = destination.progress();
        let result = self.runtime.download(request, job, destination).await;
        let content = std::fs::read(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        Dl {
            result,
            content,
            remote: progress.remote.lock().ok().and_then(|r| r.clone()),
            restarted: progress.restarted.load(Ordering::Acquire),
            written_to: progress.written_to.load(Ordering::Acquire),
        }
    }
}
