//! The `ferry` command line: every verb of SPEC §4 and the setters, as a
//! client of the daemon's local API (see `client`), plus `ferry daemon`
//! itself and shell completions.
//!
//! Any command that needs the daemon starts a per-user one when none
//! answers. Output is for people by default and the API's JSON views with
//! `--json`. Exit codes are for scripts, and stable: see [`exit`].

pub mod client;
pub mod output;
pub mod plugin_cmd;
mod upload;

use crate::api::views::{
    CompletionView, CreateRequest, CreatedView, CredentialsRequest, HeaderRequest, JobView,
    RangeRequest, SetRequest, StateView,
};
use crate::api::{
    ApiErrorView,
    views::{AddFileRequest, AddFileSetRequest},
};
use crate::config::{Env, Paths};
use crate::job::{JobState, JobType, Priority};
use clap::{CommandFactory, Parser, Subcommand};
use client::{Client, ClientError};
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit codes of `ferry`.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The daemon refused (a typed error: its code is printed).
    pub const REFUSED: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// No daemon answers and none could be started.
    pub const UNREACHABLE: u8 = 3;
    /// `get` / `watch`: the job ended in `error` or was closed by someone else.
    pub const JOB_FAILED: u8 = 4;
    /// `get` was interrupted (Ctrl-C); the job goes on in the daemon.
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 the daemon refused (typed error); 2 usage; \
3 the daemon cannot be reached or started; 4 the job ended in error (get, watch); \
130 interrupted (get: the job goes on).";

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Background file transfers with BITS job semantics and sandboxed WebAssembly transports",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Print results and errors as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's socket (default: $FERRY_SOCKET, else per user
    /// $XDG_RUNTIME_DIR/ferry.sock, for root /run/ferry.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The daemon's state directory (default: $FERRY_STATE_DIR, else
    /// $XDG_STATE_HOME/ferry, for root /var/lib/ferry).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The daemon's configuration file (see host/ferry.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Never start a daemon; fail if none answers.
    #[arg(long, global = true)]
    no_start: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (as systemd does).
    Daemon,
    /// Create a job (suspended); prints its id.
    Create {
        /// download, upload or upload-reply.
        #[arg(long = "type", value_parser = parse_type, default_value = "download")]
        job_type: JobType,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// foreground, high, normal or low.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
    },
    /// Add a file to a job: REMOTE URL <-> LOCAL path.
    ///
    /// `ferry add JOB REMOTE LOCAL [REMOTE LOCAL ...]` or `ferry add JOB --list FILE`
    /// (one `REMOTE LOCAL` a line; blank lines and lines starting with `#` are
    /// skipped): the whole set is added, or none of it.
    Add {
        job: String,
        /// REMOTE LOCAL pairs.
        #[arg(value_name = "REMOTE LOCAL", num_args = 0..)]
        pairs: Vec<String>,
        /// Read `REMOTE LOCAL` lines from FILE (`-` for standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "pairs")]
        list: Option<PathBuf>,
        /// Download only this byte range, OFFSET:LENGTH (repeatable; one file only).
        #[arg(long = "range", value_name = "OFFSET:LENGTH")]
        ranges: Vec<String>,
        /// The SHA-256 the downloaded file must have (one file only).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Queue a job (from suspended, error or transient_error).
    Resume { job: String },
    /// Suspend a job.
    Suspend { job: String },
    /// Finish a job: downloaded files move into place.
    Complete { job: String },
    /// Cancel a job: temporary files are deleted.
    Cancel { job: String },
    /// Show one job.
    Info { job: String },
    /// List your jobs (every user's with --all-users, for administrators).
    List {
        #[arg(long)]
        all_users: bool,
    },
    /// Change a job's settings.
    Set {
        job: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
        /// Seconds to wait in transient_error before retrying (at least 5).
        #[arg(long, value_name = "SECS")]
        retry_delay: Option<u64>,
        /// Seconds without progress after which a transient error becomes fatal (0: at once).
        #[arg(long, value_name = "SECS")]
        no_progress_timeout: Option<u64>,
        /// Seconds of active transfer after which the job fails.
        #[arg(long, value_name = "SECS")]
        max_download_time: Option<u64>,
        /// Replace the custom headers with these, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Remove every custom header.
        #[arg(long, conflicts_with = "headers")]
        clear_headers: bool,
        /// Basic credentials, `user:password`.
        #[arg(long, conflicts_with_all = ["bearer", "clear_credentials"])]
        user: Option<String>,
        /// A bearer token.
        #[arg(long, conflicts_with = "clear_credentials")]
        bearer: Option<String>,
        #[arg(long)]
        clear_credentials: bool,
        /// Run this (through /bin/sh, as you) when the job reaches transferred or error;
        /// it sees FERRY_JOB_ID and FERRY_JOB_STATE.
        #[arg(long, value_name = "COMMAND", conflicts_with = "clear_notify_command")]
        notify_command: Option<String>,
        #[arg(long)]
        clear_notify_command: bool,
        /// The reply processor plugin of an upload-reply job.
        #[arg(long, value_name = "PLUGIN")]
        reply_processor: Option<String>,
        /// Where an upload-reply job's reply goes on `complete` (any size; without
        /// one only a reply of at most 1 MiB is kept, as data).
        #[arg(long, value_name = "PATH", conflicts_with = "clear_reply_file")]
        reply_file: Option<PathBuf>,
        #[arg(long)]
        clear_reply_file: bool,
        /// An option for the reply processor, `KEY=VALUE` (repeatable; replaces
        /// the job's options).
        #[arg(long = "reply-option", value_name = "KEY=VALUE")]
        reply_options: Vec<String>,
        /// The upload protocol, for schemes whose plugin speaks several.
        #[arg(long, value_name = "NAME", conflicts_with = "clear_protocol")]
        protocol: Option<String>,
        #[arg(long)]
        clear_protocol: bool,
    },
    /// Make a job yours (administrators).
    TakeOwnership { job: String },
    /// Download URL to DEST through the daemon: create, add, resume, follow, complete.
    Get {
        url: String,
        dest: PathBuf,
        /// An extra request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Basic credentials, `user:password`.
        #[arg(long, conflicts_with = "bearer")]
        user: Option<String>,
        /// A bearer token.
        #[arg(long)]
        bearer: Option<String>,
        #[arg(long, value_parser = parse_priority, default_value = "foreground")]
        priority: Priority,
        /// Seconds between retries of transient failures.
        #[arg(long, value_name = "SECS")]
        retry_delay: Option<u64>,
    },
    /// Upload SRC to URL through the daemon: create, add, resume, follow, complete.
    /// With a reply (--reply, --reply-file, --reply-processor) it is an upload-reply job
    /// and prints the reply.
    Upload {
        source: PathBuf,
        url: String,
        /// The upload protocol of http(s) URLs: tus, bits, put or post (default: detected).
        #[arg(long, value_name = "NAME")]
        protocol: Option<String>,
        /// Make it an upload-reply job and print the server's reply.
        #[arg(long)]
        reply: bool,
        /// Where the reply goes (any size); implies --reply.
        #[arg(long, value_name = "PATH")]
        reply_file: Option<PathBuf>,
        /// The reply processor plugin (json-value, digest-verify, ...); implies --reply.
        #[arg(long, value_name = "PLUGIN")]
        reply_processor: Option<String>,
        /// An option for the reply processor, `KEY=VALUE` (repeatable).
        #[arg(long = "reply-option", value_name = "KEY=VALUE")]
        reply_options: Vec<String>,
        /// An extra request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Basic credentials, `user:password`.
        #[arg(long, conflicts_with = "bearer")]
        user: Option<String>,
        /// A bearer token.
        #[arg(long)]
        bearer: Option<String>,
        #[arg(long, value_parser = parse_priority, default_value = "foreground")]
        priority: Priority,
        /// Seconds between retries of transient failures.
        #[arg(long, value_name = "SECS")]
        retry_delay: Option<u64>,
    },
    /// The reply data of a transferred upload-reply job (the whole reply with --json).
    Reply { job: String },
    /// Follow a job's events (or all your jobs' without JOB) until it leaves the queue.
    Watch {
        job: Option<String>,
        #[arg(long, conflicts_with = "job")]
        all_users: bool,
    },
    /// List the plugins the daemon loaded and those it refused (with why);
    /// `ferry plugins reload` reads the plugins directory again.
    Plugins {
        #[command(subcommand)]
        action: Option<plugin_cmd::PluginsAction>,
    },
    /// Test a plugin with the conformance suite, or start a new one.
    Plugin {
        #[command(subcommand)]
        command: plugin_cmd::PluginCommand,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not foreground, high, normal or low"))
}

fn parse_type(s: &str) -> Result<JobType, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not download, upload or upload-reply"))
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    view: ApiErrorView,
    exit: u8,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>, exit: u8) -> Failure {
        Failure {
            view: ApiErrorView::new(code, message),
            exit,
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new("invalid-argument", message, exit::USAGE)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Refused(view) => Failure {
                view,
                exit: exit::REFUSED,
            },
            other => Failure::new(other.code(), other.to_string(), exit::UNREACHABLE),
        }
    }
}

type Outcome = Result<String, Failure>;

/// Runs the command line; returns the process's exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let daemon = matches!(cli.command, Command::Daemon);
    // The suite provokes plugins' warnings on purpose: its report says what matters.
    let default_level = if daemon {
        "info"
    } else if matches!(cli.command, Command::Plugin { .. }) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::Plugin { command } = cli.command {
        return plugin_cmd::run(command, cli.json);
    }
    if matches!(cli.command, Command::Daemon) {
        crate::daemon::tune_allocator();
    }
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    let json = cli.json;
    let result = runtime.block_on(execute(cli));
    // Event streams and the like must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if json {
                println!("{}", serde_json::json!({ "error": failure.view }));
            } else {
                eprintln!(
                    "ferry: error {}: {}",
                    failure.view.code, failure.view.message
                );
            }
            ExitCode::from(failure.exit)
        }
    }
}

fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> String {
    if json {
        serde_json::to_string_pretty(value).expect("views serialise")
    } else {
        human(value)
    }
}

async fn execute(cli: Cli) -> Outcome {
    let paths = Paths::resolve(
        cli.socket.as_deref(),
        cli.state_dir.as_deref(),
        cli.config.as_deref(),
        &Env::current(),
    );
    let json = cli.json;
    match cli.command {
        Command::Daemon => {
            crate::daemon::run(paths).await.map_err(|e| {
                let exit = if matches!(e, crate::daemon::DaemonError::AlreadyRunning(_)) {
                    exit::REFUSED
                } else {
                    exit::UNREACHABLE
                };
                Failure::new(e.code(), e.to_string(), exit)
            })?;
            Ok(String::new())
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut out);
            Ok(String::from_utf8_lossy(&out).trim_end().to_string())
        }
        command => {
            let mut client = if cli.no_start {
                Client::connect(&paths.socket).await?
            } else {
                Client::connect_or_start(&paths).await?
            };
            client_command(&mut client, command, json).await
        }
    }
}

fn job_path(job: &str, tail: &str) -> String {
    format!("/v1/jobs/{job}{tail}")
}

/// Follows job `id`'s event stream with a progress bar (plain lines on
/// standard error when it is not a terminal, nothing with `--json`) until
/// the job is transferred; the finished bar counts what
/// moved. Ctrl-C, a job in `error` and a job closed by someone else end it
/// with their failure, the job left as it is.
async fn follow_to_transferred(
    mut stream: client::EventStream,
    id: &str,
    json: bool,
) -> Result<ProgressBar, Failure> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    // Off a terminal the bar draws nothing: a log or a pipe gets lines.
    let mut lines = (!json && !std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| ProgressLines::new(id));
    let interrupted = |bar: &ProgressBar| {
        bar.abandon();
        eprintln!(
            "ferry: interrupted; job {id} goes on in the daemon.\n  follow it:  ferry watch {id}\n  finish it:  ferry complete {id}   (or drop it: ferry cancel {id})"
        );
        Failure::new(
            "interrupted",
            format!("interrupted; job {id} goes on"),
            exit::INTERRUPTED,
        )
    };
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = tokio::signal::ctrl_c() => return Err(interrupted(&bar)),
        };
        let Some(event) = event else {
            bar.abandon();
            return Err(Failure::new(
                "daemon-unreachable",
                format!("the daemon stopped; job {id} is kept and goes on when it starts again"),
                exit::UNREACHABLE,
            ));
        };
        let (state, progress, error) = if event.event == "job" {
            match serde_json::from_str::<JobView>(&event.data) {
                Ok(v) => (v.state, v.progress, v.error),
                Err(_) => continue,
            }
        } else {
            match serde_json::from_str::<EventView>(&event.data) {
                Ok(e) => (
                    e.state,
                    e.progress,
                    e.error.map(|e| crate::api::views::ErrorView::of_job(&e)),
                ),
                Err(_) => continue,
            }
        };
        if let Some(total) = progress.bytes_total {
            bar.set_length(total);
        }
        bar.set_position(progress.bytes_transferred);
        if let Some(lines) = lines.as_mut() {
            lines.show(state, &progress, error.as_ref());
        }
        match state {
            JobState::Transferred => break,
            JobState::TransientError => {
                if let Some(e) = &error {
                    bar.set_message(format!(
                        "{}: {}; retried after the retry delay (`ferry resume {id}` retries now)",
                        e.code, e.message
                    ));
                }
            }
            JobState::Error => {
                bar.abandon();
                let view = match error {
                    Some(e) => ApiErrorView {
                        code: e.code,
                        message: format!(
                            "{} (job {id} is kept in error: `ferry resume {id}` retries, `ferry cancel {id}` drops it)",
                            e.message
                        ),
                        class: Some(e.class),
                        context: Some(e.context),
                        http_status: e.http_status,
                    },
                    None => ApiErrorView {
                        code: "job-error".into(),
                        message: format!("job {id} is in error"),
                        class: None,
                        context: None,
                        http_status: None,
                    },
                };
                return Err(Failure {
                    view,
                    exit: exit::JOB_FAILED,
                });
            }
            JobState::Acknowledged | JobState::Cancelled => {
                bar.abandon();
                return Err(Failure::new(
                    "job-closed",
                    format!("job {id} was {} by someone else", state_name(state)),
                    exit::JOB_FAILED,
                ));
            }
            _ => bar.set_message(state_name(state)),
        }
    }
    bar.finish_and_clear();
    Ok(bar)
}

/// What `ferry get` and `ferry upload` print when standard error is not a
/// terminal (a log, a pipe, CI): a line at each change of state, each new
/// error, and the progress at most every few seconds.
struct ProgressLines {
    id: String,
    state: Option<JobState>,
    error: Option<(String, String)>,
    printed: std::time::Instant,
}

impl ProgressLines {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(id: &str) -> Self {
        ProgressLines {
            id: id.to_string(),
            state: None,
            error: None,
            printed: std::time::Instant::now(),
        }
    }

    fn show(
        &mut self,
        state: JobState,
        progress: &crate::job::Progress,
        error: Option<&crate::api::views::ErrorView>,
    ) {
        let id = &self.id;
        let error_now = error.map(|e| (e.code.clone(), e.message.clone()));
        if state == JobState::TransientError && error_now.is_some() && error_now != self.error {
            let (code, message) = error_now.clone().unwrap_or_default();
            eprintln!(
                "ferry: job {id}: transient error {code}: {message}; retried after the retry delay (`ferry resume {id}` retries now)"
            );
        }
        self.error = error_now;
        let moved = Some(state) != self.state;
        if moved || self.printed.elapsed() >= Self::EVERY {
            let total = progress
                .bytes_total
                .map(|t| format!(" of {t}"))
                .unwrap_or_default();
            eprintln!(
                "ferry: job {id}: {} {}{total} bytes, {}/{} files",
                state_name(state),
                progress.bytes_transferred,
                progress.files_transferred,
                progress.files_total
            );
            self.state = Some(state);
            self.printed = std::time::Instant::now();
        }
    }
}

/// `REMOTE LOCAL` pairs from the command line.
fn pairs_of(words: &[String]) -> Result<Vec<(String, PathBuf)>, Failure> {
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return Err(Failure::usage("give REMOTE LOCAL pairs (or --list FILE)"));
    }
    Ok(words
        .chunks(2)
        .map(|pair| (pair[0].clone(), PathBuf::from(&pair[1])))
        .collect())
}

/// `REMOTE LOCAL` lines of a list file (`-`: standard input). The remote is
/// the first word; the local path is the rest of the line, so it may hold
/// spaces.
fn read_list(path: &std::path::Path) -> Result<Vec<(String, PathBuf)>, Failure> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (remote, local) = line
            .split_once(char::is_whitespace)
            .map(|(r, l)| (r, l.trim()))
            .filter(|(_, l)| !l.is_empty())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{} line {}: expected REMOTE LOCAL",
                    path.display(),
                    number + 1
                ))
            })?;
        pairs.push((remote.to_string(), PathBuf::from(local)));
    }
    if pairs.is_empty() {
        return Err(Failure::usage(format!("{} lists no file", path.display())));
    }
    Ok(pairs)
}

/// A LOCAL path as the daemon wants it: absolute.
fn absolute(path: &std::path::Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

fn parse_headers(headers: &[String]) -> Result<Vec<HeaderRequest>, Failure> {
    headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| HeaderRequest {
                    name: n.trim().to_string(),
                    value: v.trim().to_string(),
                })
                .ok_or_else(|| Failure::usage(format!("header {h:?} is not `Name: value`")))
        })
        .collect()
}

fn parse_credentials(
    user: Option<String>,
    bearer: Option<String>,
) -> Result<Option<CredentialsRequest>, Failure> {
    Ok(match (user, bearer) {
        (Some(user), _) => {
            let (user, password) = user
                .split_once(':')
                .ok_or_else(|| Failure::usage("--user takes `user:password`"))?;
            Some(CredentialsRequest::Basic {
                user: user.into(),
                password: password.into(),
            })
        }
        (None, Some(token)) => Some(CredentialsRequest::Bearer { token }),
        (None, None) => None,
    })
}

fn parse_reply_options(options: &[String]) -> Result<Vec<(String, String)>, Failure> {
    options
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::usage(format!("--reply-option {o:?} is not KEY=VALUE")))
        })
        .collect()
}

fn parse_range(s: &str) -> Result<RangeRequest, Failure> {
    let bad = || Failure::usage(format!("range {s:?} is not OFFSET:LENGTH"));
    let (o, l) = s.split_once(':').ok_or_else(bad)?;
    Ok(RangeRequest {
        offset: o.trim().parse().map_err(|_| bad())?,
        length: l.trim().parse().map_err(|_| bad())?,
    })
}

const NO_BODY: Option<&()> = None;

async fn client_command(client: &mut Client, command: Command, json: bool) -> Outcome {
    match command {
        Command::Create {
            job_type,
            name,
            description,
            priority,
        } => {
            let request = CreateRequest {
                job_type: Some(job_type),
                name,
                description,
                priority,
            };
            let created: CreatedView = client
                .call(Method::POST, "/v1/jobs", Some(&request))
                .await?;
            Ok(show(json, &created, |c| c.id.clone()))
        }
        Command::Add {
            job,
            pairs,
            list,
            ranges,
            sha256,
        } => {
            let pairs = match list {
                Some(list) => read_list(&list)?,
                None => pairs_of(&pairs)?,
            };
            if pairs.len() != 1 && (!ranges.is_empty() || sha256.is_some()) {
                return Err(Failure::usage(
                    "--range and --sha256 apply to one file: give one REMOTE LOCAL pair",
                ));
            }
            let ranges: Vec<_> = ranges
                .iter()
                .map(|r| parse_range(r))
                .collect::<Result<_, _>>()?;
            let mut files = Vec::with_capacity(pairs.len());
            for (remote, local) in pairs {
                files.push(AddFileRequest {
                    remote,
                    local: absolute(&local)?,
                    ranges: ranges.clone(),
                    sha256: sha256.clone(),
                });
            }
            let path = job_path(&job, "/files");
            let view: JobView = match files.len() {
                1 => client.call(Method::POST, &path, files.first()).await?,
                _ => {
                    let set = AddFileSetRequest { files };
                    client.call(Method::POST, &path, Some(&set)).await?
                }
            };
            Ok(show(json, &view, |v| {
                format!("job {}: {} file(s)", v.id, v.files.len())
            }))
        }
        Command::Resume { job } => state_change(client, &job, "/resume", json).await,
        Command::Suspend { job } => state_change(client, &job, "/suspend", json).await,
        Command::Cancel { job } => state_change(client, &job, "/cancel", json).await,
        Command::Complete { job } => {
            let done: CompletionView = client
                .call(Method::POST, &job_path(&job, "/complete"), NO_BODY)
                .await?;
            Ok(show(json, &done, completion_line))
        }
        Command::Info { job } => {
            let view: JobView = client
                .call(Method::GET, &job_path(&job, ""), NO_BODY)
                .await?;
            Ok(show(json, &view, output::details))
        }
        Command::List { all_users } => {
            let path = if all_users {
                "/v1/jobs?all-users=true"
            } else {
                "/v1/jobs"
            };
            let views: Vec<JobView> = client.call(Method::GET, path, NO_BODY).await?;
            Ok(show(json, &views, |v| output::table(v)))
        }
        Command::Set {
            job,
            name,
            description,
            priority,
            retry_delay,
            no_progress_timeout,
            max_download_time,
            headers,
            clear_headers,
            user,
            bearer,
            clear_credentials,
            notify_command,
            clear_notify_command,
            reply_processor,
            reply_file,
            clear_reply_file,
            reply_options,
            protocol,
            clear_protocol,
        } => {
            let request = SetRequest {
                name,
                description,
                priority,
                retry_delay_secs: retry_delay,
                no_progress_timeout_secs: no_progress_timeout,
                max_download_time_secs: max_download_time,
                headers: if clear_headers {
                    Some(Vec::new())
                } else if headers.is_empty() {
                    None
                } else {
                    Some(parse_headers(&headers)?)
                },
                credentials: if clear_credentials {
                    Some(None)
                } else {
                    parse_credentials(user, bearer)?.map(Some)
                },
                notify_command: if clear_notify_command {
                    Some(None)
                } else {
                    notify_command.map(Some)
                },
                reply_processor: reply_processor.map(Some),
                reply_file: if clear_reply_file {
                    Some(None)
                } else {
                    reply_file.as_deref().map(absolute).transpose()?.map(Some)
                },
                reply_options: if reply_options.is_empty() {
                    None
                } else {
                    Some(parse_reply_options(&reply_options)?)
                },
                protocol: if clear_protocol {
                    Some(None)
                } else {
                    protocol.map(Some)
                },
            };
            let view: JobView = client
                .call(Method::PATCH, &job_path(&job, ""), Some(&request))
                .await?;
            Ok(show(json, &view, output::details))
        }
        Command::TakeOwnership { job } => {
            let view: JobView = client
                .call(Method::POST, &job_path(&job, "/take-ownership"), NO_BODY)
                .await?;
            Ok(show(json, &view, |v| {
                format!("job {} is now owned by {}", v.id, v.owner)
            }))
        }
        Command::Plugins { action } => plugin_cmd::plugins(client, action, json).await,
        Command::Watch { job, all_users } => watch(client, job, all_users, json).await,
        Command::Get {
            url,
            dest,
            headers,
            user,
            bearer,
            priority,
            retry_delay,
        } => {
            let settings = SetRequest {
                headers: if headers.is_empty() {
                    None
                } else {
                    Some(parse_headers(&headers)?)
                },
                credentials: parse_credentials(user, bearer)?.map(Some),
                retry_delay_secs: retry_delay,
                ..SetRequest::default()
            };
            get(client, url, absolute(&dest)?, priority, settings, json).await
        }
        Command::Upload {
            source,
            url,
            protocol,
            reply,
            reply_file,
            reply_processor,
            reply_options,
            headers,
            user,
            bearer,
            priority,
            retry_delay,
        } => {
            let want_reply = reply || reply_file.is_some() || reply_processor.is_some();
            let settings = SetRequest {
                headers: if headers.is_empty() {
                    None
                } else {
                    Some(parse_headers(&headers)?)
                },
                credentials: parse_credentials(user, bearer)?.map(Some),
                retry_delay_secs: retry_delay,
                protocol: protocol.map(Some),
                reply_processor: reply_processor.map(Some),
                reply_file: reply_file.as_deref().map(absolute).transpose()?.map(Some),
                reply_options: if reply_options.is_empty() {
                    None
                } else {
                    Some(parse_reply_options(&reply_options)?)
                },
                ..SetRequest::default()
            };
            let args = upload::UploadArgs {
                source,
                url,
                priority,
                want_reply,
                settings,
            };
            upload::upload(client, args, json).await
        }
        Command::Reply { job } => upload::reply(client, &job, json).await,
        Command::Daemon | Command::Completions { .. } | Command::Plugin { .. } => {
            unreachable!("handled before")
        }
    }
}

fn completion_line(c: &CompletionView) -> String {
    let files: Vec<String> = c.files.iter().map(|f| f.display().to_string()).collect();
    format!(
        "job {} completed{}: {}",
        c.id,
        if c.partial { " (partial)" } else { "" },
        if files.is_empty() {
            "no files".to_string()
        } else {
            files.join(", ")
        }
    )
}

async fn state_change(client: &mut Client, job: &str, tail: &str, json: bool) -> Outcome {
    let view: StateView = client
        .call(Method::POST, &job_path(job, tail), NO_BODY)
        .await?;
    Ok(show(json, &view, |v| {
        format!("job {}: {}", v.id, state_name(v.state))
    }))
}

fn state_name(state: JobState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `ferry watch`: prints each event until the job leaves the queue.
async fn watch(client: &mut Client, job: Option<String>, all_users: bool, json: bool) -> Outcome {
    let path = match &job {
        Some(job) => job_path(job, "/events"),
        None if all_users => "/v1/events?all-users=true".to_string(),
        None => "/v1/events".to_string(),
    };
    let mut stream = client.events(&path).await?;
    let mut last_state = None;
    while let Some(event) = stream.next().await {
        if json {
            println!("{}", event.data);
        }
        let (state, line) = if event.event == "job" {
            let Ok(view) = serde_json::from_str::<JobView>(&event.data) else {
                continue;
            };
            let line = format!(
                "{}  {}  {}",
                view.id,
                state_name(view.state),
                output::bytes(view.progress.bytes_transferred)
            );
            (view.state, line)
        } else {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(&event.data) else {
                continue;
            };
            let Ok(state) = serde_json::from_value::<JobState>(e["state"].clone()) else {
                continue;
            };
            let error = e["error"]["code"]
                .as_str()
                .map(|c| {
                    format!(
                        "  error {c}: {}",
                        e["error"]["message"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "{}  {}  {}  {}{error}",
                e["job"].as_str().unwrap_or(""),
                event.event,
                state_name(state),
                output::bytes(e["progress"]["bytes_transferred"].as_u64().unwrap_or(0)),
            );
            (state, line)
        };
        if !json {
            println!("{line}");
        }
        last_state = Some(state);
    }
    match (job, last_state) {
        (Some(_), Some(JobState::Cancelled)) => Err(Failure::new(
            "cancelled",
            "the job was cancelled",
            exit::JOB_FAILED,
        )),
        (Some(_), Some(JobState::Acknowledged)) => Ok(String::new()),
        _ => Err(Failure::new(
            "daemon-unreachable",
            "the daemon ended the event stream",
            exit::UNREACHABLE,
        )),
    }
}

/// `ferry get`: a foreground job that this command follows to the end.
async fn get(
    client: &mut Client,
    url: String,
    dest: PathBuf,
    priority: Priority,
    settings: SetRequest,
    json: bool,
) -> Outcome {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let created: CreatedView = client
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&CreateRequest {
                job_type: Some(JobType::Download),
                name: Some(name),
                description: Some(format!("ferry get {url}")),
                priority: Some(priority),
            }),
        )
        .await?;
    let id = created.id;
    let prepared = async {
        client
            .call::<JobView>(Method::PATCH, &job_path(&id, ""), Some(&settings))
            .await?;
        client
            .call::<JobView>(
                Method::POST,
                &job_path(&id, "/files"),
                Some(&AddFileRequest {
                    remote: url.clone(),
                    local: dest.clone(),
                    ranges: Vec::new(),
                    sha256: None,
                }),
            )
            .await?;
        let stream = client.events(&job_path(&id, "/events")).await?;
        client
            .call::<StateView>(Method::POST, &job_path(&id, "/resume"), NO_BODY)
            .await?;
        Ok::<_, ClientError>(stream)
    }
    .await;
    let stream = match prepared {
        Ok(stream) => stream,
        Err(e) => {
            // Nothing was transferred: leave no job behind.
            let _ = client
                .call::<StateView>(Method::POST, &job_path(&id, "/cancel"), NO_BODY)
                .await;
            return Err(e.into());
        }
    };
    let bar = follow_to_transferred(stream, &id, json).await?;
    let done: CompletionView = client
        .call(Method::POST, &job_path(&id, "/complete"), NO_BODY)
        .await?;
    let info = GetView {
        id: id.clone(),
        url,
        local: dest.clone(),
        bytes: bar.position(),
        state: done.state,
    };
    Ok(show(json, &info, |i| {
        format!("{} -> {}", output::bytes(i.bytes), i.local.display())
    }))
}

/// An engine event as the event stream carries it.
#[derive(serde::Deserialize)]
struct EventView {
    state: JobState,
    progress: crate::job::Progress,
    error: Option<crate::job::JobError>,
}

/// What `ferry get --json` prints.
#[derive(Serialize)]
struct GetView {
    id: String,
    url: String,
    local: PathBuf,
    bytes: u64,
    state: JobState,
}
