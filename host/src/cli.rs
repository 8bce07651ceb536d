//! The `ferry` command line.
//!
//! `ferry get URL DEST` downloads one file through the plugin runtime, with a
//! progress bar, retrying transient failures and resuming where the bytes
//! stopped; the file appears at DEST only when it is whole. `ferry plugins`
//! lists the plugins the runtime loads.

use crate::error::TransferError;
use crate::files::TempFile;
use crate::plugin::{
    Credentials, Destination, DownloadRequest, JobContext, PluginRuntime, RuntimeConfig,
};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Background file transfers with sandboxed WebAssembly transports"
)]
struct Cli {
    /// Print results and errors as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download URL to DEST, with a progress bar.
    Get {
        url: String,
        dest: PathBuf,
        /// An extra request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Basic credentials, `user:password`.
        #[arg(long)]
        user: Option<String>,
        /// A bearer token.
        #[arg(long)]
        bearer: Option<String>,
        /// How many times to retry a transient failure.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Load third-party plugins from this directory too.
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
    /// List the plugins the runtime loads.
    Plugins {
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
}

/// Runs the command line; returns the process's exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FERRY_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    let json = cli.json;
    match runtime.block_on(execute(cli)) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            if json {
                println!("{}", serde_json::json!({ "error": error }));
            } else {
                eprintln!("ferry: error {}: {}", error.code, error.message);
            }
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<String, TransferError> {
    match cli.command {
        Command::Plugins { plugins_dir } => {
            let runtime = load_runtime(plugins_dir.as_ref())?;
            let mut rows: Vec<_> = runtime
                .plugins()
                .map(|p| {
                    (
                        p.manifest.name.clone(),
                        p.manifest.version.clone(),
                        p.manifest.schemes.join(","),
                        p.builtin,
                    )
                })
                .collect();
            rows.sort();
            if cli.json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(name, version, schemes, builtin)| {
                        serde_json::json!({"name": name, "version": version, "schemes": schemes, "builtin": builtin})
                    })
                    .collect();
                return Ok(serde_json::Value::from(list).to_string());
            }
            Ok(rows
                .iter()
                .map(|(name, version, schemes, builtin)| {
                    format!(
                        "{name}\t{version}\t{schemes}\t{}",
                        if *builtin { "built-in" } else { "third-party" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Command::Get {
            url,
            dest,
            headers,
            user,
            bearer,
            retries,
            plugins_dir,
        } => {
            let runtime = load_runtime(plugins_dir.as_ref())?;
            let mut job = JobContext::new("get");
            for header in headers {
                let (name, value) = header
                    .split_once(':')
                    .ok_or_else(|| usage(&format!("header {header:?} is not `Name: value`")))?;
                job.headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
            job.credentials = match (user, bearer) {
                (Some(_), Some(_)) => return Err(usage("--user and --bearer exclude each other")),
                (Some(user), None) => {
                    let (user, password) = user
                        .split_once(':')
                        .ok_or_else(|| usage("--user takes `user:password`"))?;
                    Some(Credentials::Basic {
                        user: user.into(),
                        password: password.into(),
                    })
                }
                (None, Some(token)) => Some(Credentials::Bearer { token }),
                (None, None) => None,
            };
            let dest = std::path::absolute(&dest)
                .map_err(|e| TransferError::local_file("invalid-local-path", &e, "DEST"))?;
            let bytes = get(&runtime, &url, &dest, &job, retries, cli.json).await?;
            if cli.json {
                Ok(serde_json::json!({"url": url, "local": dest, "bytes": bytes}).to_string())
            } else {
                Ok(format!("{} bytes -> {}", bytes, dest.display()))
            }
        }
    }
}

fn usage(message: &str) -> TransferError {
    TransferError::fatal(
        crate::error::ErrorContext::Policy,
        "invalid-argument",
        message,
    )
}

fn load_runtime(plugins_dir: Option<&PathBuf>) -> Result<PluginRuntime, TransferError> {
    let cache_dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ferry").join("plugins"));
    let failed = |e: crate::plugin::RuntimeError| {
        TransferError::fatal(
            crate::error::ErrorContext::Plugin,
            "plugin-load-failed",
            e.to_string(),
        )
    };
    let mut runtime = PluginRuntime::with_builtins(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })
    .map_err(failed)?;
    if let Some(dir) = plugins_dir {
        runtime.load_dir(dir).map_err(failed)?;
    }
    Ok(runtime)
}

/// Downloads `url` to `dest`: into a hidden temporary file beside it,
/// resuming after transient failures, renamed into place when whole.
async fn get(
    runtime: &PluginRuntime,
    url: &str,
    dest: &std::path::Path,
    job: &JobContext,
    retries: u32,
    quiet: bool,
) -> Result<u64, TransferError> {
    let temp = TempFile::create(dest, &format!("get{}", std::process::id()))?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .expect("the template is valid"),
    );
    let mut offset = 0;
    let mut validator = None;
    let mut attempt = 0;
    let result = loop {
        let destination = Destination::new(temp.file(), offset, offset, true);
        let progress = destination.progress();
        let request = DownloadRequest {
            url: url.to_string(),
            offset,
            end: None,
            validator: validator.clone(),
        };
        let download = runtime.download(request, job, destination);
        tokio::pin!(download);
        let outcome = loop {
            tokio::select! {
                outcome = &mut download => break outcome,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(size) = progress.remote.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|r| r.size) {
                        bar.set_length(size);
                    }
                    bar.set_position(progress.written_to.load(Ordering::Acquire));
                }
            }
        };
        offset = progress.written_to.load(Ordering::Acquire);
        bar.set_position(offset);
        if let Some(remote) = progress
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            validator = remote.validator;
        }
        match outcome {
            Ok(()) => break Ok(offset),
            Err(error) if error.is_transient() && attempt < retries => {
                attempt += 1;
                let pause = Duration::from_secs(1 << attempt.min(5));
                bar.set_message(format!("{error}; retrying in {pause:?}"));
                tokio::time::sleep(pause).await;
            }
            Err(error) => break Err(error),
        }
    };
    bar.finish_and_clear();
    match result {
        Ok(bytes) => {
            temp.finish()?;
            Ok(bytes)
        }
        Err(error) => {
            temp.remove()?;
            Err(error)
        }
    }
}
