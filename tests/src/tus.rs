//! A real tus 1.0 server that nobody here wrote: `@tus/server` with
//! `@tus/file-store`, pinned in `tests/tus-server/package.json` and its
//! lockfile. [`TusServer::start`] installs it (`npm ci`, once, when
//! `node_modules` is missing), starts `node server.mjs` on a free loopback
//! port, and kills it when dropped. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long installing the server's packages may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises installs between the tests of one binary.
static INSTALL: Mutex<()> = Mutex::new(());

/// The directory of the server's package.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tus-server")
}

/// Runs `npm ci` in the package directory unless its packages are there.
fn ensure_installed() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = package_dir();
    // npm writes its hidden lockfile last, once an install is whole.
    let modules = dir.join("node_modules");
    let installed = modules.join(".package-lock.json").exists()
        && ["@tus/server", "@tus/file-store"]
            .iter()
            .all(|p| modules.join(p).join("package.json").exists());
    if installed {
        return;
    }
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("npm runs (node and npm are needed for the tus tests)");
    let deadline = std::time::Instant::now() + INSTALL_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for npm") {
            assert!(
                status.success(),
                "npm ci in {} failed: {status}",
                dir.display()
            );
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "npm ci in {} took longer than {INSTALL_TIMEOUT:?}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the server answers at the end of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusReply {
    /// tus's own `204 No Content`.
    Plain,
    /// `200` with `{"id", "size", "sha256"}` and `Repr-Digest`.
    Digest,
    /// Like `Digest`, with the digest of other bytes.
    WrongDigest,
}

/// A running `@tus/server`; killed when dropped.
pub struct TusServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl TusServer {
    /// Installs (if needed) and starts the server, answering tus's own way.
    pub fn start() -> TusServer {
        TusServer::start_with(TusReply::Plain)
    }

    /// Installs (if needed) and starts the server with the given replies.
    pub fn start_with(reply: TusReply) -> TusServer {
        match reply {
            TusReply::Plain => TusServer::spawn(&[]),
            TusReply::Digest => TusServer::spawn(&[("TUS_REPLY", "digest")]),
            TusReply::WrongDigest => TusServer::spawn(&[("TUS_REPLY", "wrong-digest")]),
        }
    }

    /// Installs (if needed) and starts the server behind the checksum
    /// extension (SHA-1), damaging the first checked PATCH when asked.
    pub fn start_with_checksum(damage_once: bool) -> TusServer {
        let mode = if damage_once {
            "sha1-damage-once"
        } else {
            "sha1"
        };
        TusServer::spawn(&[("TUS_CHECKSUM", mode)])
    }

    fn spawn(env: &[(&str, &str)]) -> TusServer {
        ensure_installed();
        let dir = tempfile::tempdir().expect("a directory for the uploads");
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(package_dir())
            .env("TUS_DIR", dir.path())
            .env_remove("DEBUG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("node runs the tus server");
        let stdout = child.stdout.take().expect("the server's stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["event"] == "listening" {
                    let _ = port_tx.send(event["port"].as_u64().unwrap_or(0) as u16);
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(event);
            }
        });
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the tus server did not start within {START_TIMEOUT:?}: {e}");
            }
        };
        TusServer {
            child,
            port,
            dir,
            log,
        }
    }

    /// Deletes every upload the server holds on disk (a benchmark's rounds
    /// would fill the disk otherwise).
    pub fn delete_uploads(&self) {
        for entry in std::fs::read_dir(self.dir.path())
            .expect("the upload directory")
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }

    /// The server's process (node), for a benchmark reading its use of the
    /// machine in `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The creation URL, `http://127.0.0.1:PORT/files`.
    pub fn url(&self) -> String {
        format!("http://{}/files", self.addr())
    }

    /// Every event the server printed so far.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The requests it answered, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.log()
            .into_iter()
            .filter(|e| e["event"] == "request")
            .collect()
    }

    /// The `Upload-Offset` of every `PATCH` it answered, in order.
    pub fn patch_offsets(&self) -> Vec<u64> {
        self.requests()
            .iter()
            .filter(|r| r["method"] == "PATCH")
            .filter_map(|r| r["upload_offset"].as_str().and_then(|o| o.parse().ok()))
            .collect()
    }

    /// The ids of the uploads the file store holds.
    pub fn upload_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| !name.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The bytes the file store holds for upload `id`.
    pub fn upload_bytes(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(id)).unwrap_or_default()
    }

    /// The file store's record of upload `id` (its size, offset, metadata).
    pub fn upload_info(&self, id: &str) -> serde_json::Value {
        std::fs::read(self.dir.path().join(format!("{id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits (bounded: a minute) until the log holds an event `done` accepts.
    pub fn wait_for_event(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        for _ in 0..600 {
            if self.log().iter().any(&done) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the tus server never logged {what}; log: {:?}", self.log());
    }
}

impl Drop for TusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
