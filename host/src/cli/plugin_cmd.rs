//! `ferry plugin test` (the conformance suite) and `ferry plugin new` (a
//! ready plugin crate). Neither needs a daemon.

use super::client::Client;
use super::{NO_BODY, Outcome as CliOutcome, show};
use crate::api::views::{PluginState, PluginView, ReloadView};
use crate::conformance::{self, Options, report};
use clap::Subcommand;
use http::Method;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes of `ferry plugin test`.
pub mod exit {
    /// Every applicable check passed.
    pub const PASSED: u8 = 0;
    /// A check failed, or the plugin did not load.
    pub const FAILED: u8 = 1;
    /// The command line is wrong, or a file cannot be read.
    pub const USAGE: u8 = 2;
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run the conformance suite on a plugin, against loopback servers (no
    /// daemon, no network). Exit status 0 only when every applicable check
    /// passed.
    Test {
        /// The plugin's component (.wasm).
        #[arg(required_unless_present = "list")]
        plugin: Option<PathBuf>,
        /// Its manifest (default: the .wasm's path with .toml).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Also write a JUnit XML report to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run only these checks (ids, or prefixes ending in `*`).
        #[arg(long, value_name = "ID", num_args = 1.., value_delimiter = ',')]
        only: Vec<String>,
        /// Leave out these checks (ids, or prefixes ending in `*`).
        #[arg(long, value_name = "ID", num_args = 1.., value_delimiter = ',')]
        skip: Vec<String>,
        /// How the suite's URLs are spelled for the plugin (default
        /// `{scheme}://{host}:{port}{path}`); `{scheme}` is `http` when the
        /// plugin serves it, else its manifest's first scheme.
        #[arg(long, value_name = "TEMPLATE")]
        url_template: Option<String>,
        /// List the checks and exit.
        #[arg(long)]
        list: bool,
    },
    /// Write a ready plugin crate: a manifest, a download transport for the
    /// scheme NAME, and a test that runs the conformance suite on it.
    New {
        /// The plugin's name (and URL scheme): lower-case letters, digits, '-'.
        name: String,
        /// Where to write the crate (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Depend on a checkout's guest SDK at this path instead of the
        /// published crate.
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
}

/// What `ferry plugins` does besides listing.
#[derive(Subcommand)]
pub enum PluginsAction {
    /// Read the plugins directory again: load added and changed plugins,
    /// drop removed ones (the daemon does the same on SIGHUP).
    Reload,
}

/// `ferry plugins [reload]`: the daemon's plugins, loaded and refused.
pub(super) async fn plugins(
    client: &mut Client,
    action: Option<PluginsAction>,
    json: bool,
) -> CliOutcome {
    match action {
        None => {
            let list: Vec<PluginView> = client.call(Method::GET, "/v1/plugins", NO_BODY).await?;
            Ok(show(json, &list, |l| plugin_lines(l)))
        }
        Some(PluginsAction::Reload) => {
            let view: ReloadView = client
                .call(
                    Method::POST,
                    "/v1/plugins/reload",
                    Some(&serde_json::json!({})),
                )
                .await?;
            Ok(show(json, &view, |v| {
                let names = |list: &[String]| {
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                };
                format!(
                    "reloaded: loaded {}; removed {}\n{}",
                    names(&v.loaded),
                    names(&v.removed),
                    plugin_lines(&v.plugins)
                )
            }))
        }
    }
}

/// One line a plugin: loaded ones with what they do, refused ones with why.
fn plugin_lines(list: &[PluginView]) -> String {
    list.iter()
        .map(|p| match p.state {
            PluginState::Loaded => format!(
                "{}\t{}\t{}\t{}\t{}\tferry:transfer@{}",
                p.name,
                p.version,
                p.schemes.join(","),
                p.abilities.join(","),
                if p.builtin { "built-in" } else { "third-party" },
                p.contract
            ),
            PluginState::Refused => format!(
                "{}\trefused\t{}\t{}: {}",
                p.name,
                p.schemes.join(","),
                p.code.as_deref().unwrap_or(""),
                p.reason.as_deref().unwrap_or("")
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a `ferry plugin` command; prints its output.
pub fn run(command: PluginCommand, json: bool) -> ExitCode {
    let result = match command {
        PluginCommand::Test {
            plugin,
            manifest,
            junit,
            only,
            skip,
            url_template,
            list,
        } => {
            if list {
                Ok((list_checks(json), exit::PASSED))
            } else {
                let options = Options {
                    url_template,
                    only,
                    skip,
                };
                let plugin = plugin.unwrap_or_default();
                test(
                    &plugin,
                    manifest.as_deref(),
                    junit.as_deref(),
                    &options,
                    json,
                )
            }
        }
        PluginCommand::New {
            name,
            dir,
            sdk_path,
        } => new_plugin(&name, dir.as_deref(), sdk_path.as_deref())
            .map(|message| (message, exit::PASSED)),
    };
    match result {
        Ok((output, code)) => {
            println!("{output}");
            ExitCode::from(code)
        }
        Err((code, message)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": { "code": code, "message": message } })
                );
            } else {
                eprintln!("ferry: error {code}: {message}");
            }
            ExitCode::from(exit::USAGE)
        }
    }
}

type Outcome = Result<(String, u8), (&'static str, String)>;

fn list_checks(json: bool) -> String {
    let checks = conformance::checks();
    if json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| serde_json::json!({ "id": c.id, "applies": c.applies, "doc": c.doc }))
            .collect();
        return serde_json::to_string_pretty(&list).expect("lists serialise");
    }
    checks
        .iter()
        .map(|c| format!("{:<46} {:<16} {}", c.id, c.applies.name(), c.doc))
        .collect::<Vec<_>>()
        .join("\n")
}

fn test(
    plugin: &Path,
    manifest: Option<&Path>,
    junit: Option<&Path>,
    options: &Options,
    json: bool,
) -> Outcome {
    let manifest_path = manifest
        .map(Path::to_path_buf)
        .unwrap_or_else(|| plugin.with_extension("toml"));
    let wasm = std::fs::read(plugin).map_err(|e| {
        (
            "plugin-unreadable",
            format!("cannot read the plugin {}: {e}", plugin.display()),
        )
    })?;
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
        (
            "manifest-unreadable",
            format!(
                "cannot read the manifest {}: {e} (give it with --manifest FILE)",
                manifest_path.display()
            ),
        )
    })?;
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    let report = runtime
        .block_on(conformance::run(&manifest, &wasm, options))
        .map_err(|e| (e.code(), e.to_string()))?;
    runtime.shutdown_background();
    if let Some(path) = junit {
        std::fs::write(path, report::junit(&report)).map_err(|e| {
            (
                "junit-unwritable",
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    }
    let output = if json {
        report::json(&report)
    } else {
        report::human(&report)
    };
    let code = if report.success() {
        exit::PASSED
    } else {
        exit::FAILED
    };
    Ok((output, code))
}

/// The guest SDK's version the generated crate depends on.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes a new plugin crate for `name` into `dir` (default `./NAME`).
fn new_plugin(
    name: &str,
    dir: Option<&Path>,
    sdk_path: Option<&Path>,
) -> Result<String, (&'static str, String)> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err((
            "invalid-plugin-name",
            format!(
                "{name:?} cannot name a plugin and its URL scheme: use lower-case letters, \
                 digits and '-', starting with a letter"
            ),
        ));
    }
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err((
            "directory-not-empty",
            format!("{} exists and is not empty", dir.display()),
        ));
    }
    let sdk = match sdk_path {
        Some(path) => {
            let path = std::fs::canonicalize(path).map_err(|e| {
                (
                    "sdk-not-found",
                    format!("the guest SDK at {}: {e}", path.display()),
                )
            })?;
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("\"{SDK_VERSION}\""),
    };
    let crate_name = format!("ferry-plugin-{name}");
    let files = [
        (
            "Cargo.toml",
            template::CARGO
                .replace("{crate}", &crate_name)
                .replace("{sdk}", &sdk),
        ),
        ("manifest.toml", template::MANIFEST.replace("{name}", name)),
        (
            "src/lib.rs",
            template::LIB
                .replace("{name}", name)
                .replace("{Type}", &type_name(name)),
        ),
        (
            "tests/conformance.rs",
            template::TEST.replace("{wasm}", &crate_name.replace('-', "_")),
        ),
        (
            "README.md",
            template::README
                .replace("{name}", name)
                .replace("{wasm}", &crate_name.replace('-', "_")),
        ),
        (".gitignore", "/target\n".to_string()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|e| {
            (
                "write-failed",
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    }
    Ok(format!(
        "wrote plugin {name} in {}: build it with `cargo build --release --target wasm32-wasip2`, \
         test it with `cargo test` (it runs `ferry plugin test`)",
        dir.display()
    ))
}

/// `my-proto` → `MyProto`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The files of a new plugin crate.
mod template {
    pub const CARGO: &str = r#"[package]
name = "{crate}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
ferry-guest-sdk = {sdk}

# A crate of its own, even when created inside another workspace.
[workspace]

[profile.release]
lto = true
codegen-units = 1
strip = "debuginfo"
"#;

    pub const MANIFEST: &str = r#"# What Ferry reads before it loads the component. What the plugin can do,
# Ferry reads from the component's exports.
name = "{name}"
version = "0.1.0"
schemes = ["{name}"]
# The hosts the plugin may ask to reach; the operator's grant narrows them
# (`[plugins.{name}] allowed-hosts` in the daemon's configuration).
allowed-hosts = ["*"]

[limits]
memory-mib = 32
deadline-ms = 1000
"#;

    pub const LIB: &str = r#"//! A Ferry download transport: `{name}://HOST:PORT/PATH` downloads
//! `http://HOST:PORT/PATH`, with resume, byte ranges and redirects done by
//! the SDK's HTTP download. Replace the URL mapping with your protocol.

use ferry_guest_sdk::{Destination, Download, DownloadRequest, JobContext, TransferError};

struct {Type};

impl Download for {Type} {
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        let url = request.url.replacen("{name}://", "http://", 1);
        ferry_guest_sdk::http::download(&job, &DownloadRequest { url, ..request }, destination)
    }
}

ferry_guest_sdk::export_download!({Type});
"#;

    pub const TEST: &str = r#"//! Builds the plugin for wasm32-wasip2 and runs Ferry's conformance suite
//! on it: `ferry plugin test` (the `ferry` on PATH, or $FERRY).

use std::path::Path;
use std::process::Command;

#[test]
fn passes_the_conformance_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("conformance");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the plugin builds for wasm32-wasip2");
    let wasm = target_dir.join("wasm32-wasip2/release/{wasm}.wasm");
    let ferry = std::env::var("FERRY").unwrap_or_else(|_| "ferry".into());
    let output = Command::new(&ferry)
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--manifest")
        .arg(root.join("manifest.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{ferry} runs (install ferry, or set FERRY): {e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(output.status.success(), "every applicable check passes:\n{report}");
}
"#;

    pub const README: &str = r#"# {name}: a Ferry plugin

A download transport for `{name}://` URLs, written with `ferry-guest-sdk`.

    rustup target add wasm32-wasip2
    cargo build --release --target wasm32-wasip2
    ferry plugin test target/wasm32-wasip2/release/{wasm}.wasm --manifest manifest.toml

`cargo test` does both (it needs `ferry` on PATH, or `FERRY=/path/to/ferry`).
To install it, copy the `.wasm` as `{name}.wasm` and `manifest.toml` as
`{name}.toml` into the daemon's plugins directory and run `ferry plugins reload`.
"#;
}
