//! A real `ferry daemon` for end-to-end tests: a temporary state directory
//! and socket, the real binary (the test package's `ferry-cli`, which is
//! `ferry::cli::run`), and helpers to run CLI commands against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How a test runs one CLI command.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Run {
        Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The stdout as JSON (panics with the whole output if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} stdout {:?} stderr {:?}",
                self.status, self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns self.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.status, 0,
            "the command failed: stdout {:?} stderr {:?}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The tests' servers listen on loopback, which plugins reach only when the
/// operator allows it, as every test daemon's configuration does.
/// Their connections are direct, whatever the machine's `http_proxy` says.
pub const LOOPBACK: &str =
    "allow-private-addresses = [\"127.0.0.0/8\", \"::1\"]\n\n[network]\nproxy = \"none\"\n";

/// A daemon's directories, and the daemon once started.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Directories and a configuration (compiled plugins cached beside the
    /// test binaries, so each daemon does not compile them again), with
    /// `extra` appended to the configuration file.
    pub fn new(extra: &str) -> Daemon {
        Daemon::with_address_policy(LOOPBACK, extra)
    }

    /// As [`Daemon::new`], but without the harness's
    /// `allow-private-addresses`: plugins reach the tests' loopback servers
    /// only as the test's own configuration lines allow (a grant of the
    /// address, or [`Daemon::set_plugins`] with an `allow-private-addresses`).
    pub fn without_private_addresses(extra: &str) -> Daemon {
        Daemon::with_address_policy("\n[network]\nproxy = \"none\"\n", extra)
    }

    /// Adds `lines` at the top of the configuration file's `[plugins]` table.
    pub fn set_plugins(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).expect("the configuration");
        assert!(
            text.starts_with("[plugins]\n"),
            "the harness's configuration changed"
        );
        let text = text.replacen("[plugins]\n", &format!("[plugins]\n{lines}\n"), 1);
        std::fs::write(&self.config, text).expect("write the configuration");
    }

    fn with_address_policy(policy: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cache = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
            .map(|d| d.join("ferry-test-plugin-cache"))
            .expect("the test binary is in target/<profile>/deps");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[plugins]\ncache-dir = \"{}\"\n{policy}\n[daemon]\ntick-interval-ms = 200\n{extra}",
                cache.display()
            ),
        )
        .expect("write the configuration");
        Daemon {
            socket: dir.path().join("ferry.sock"),
            state_dir: dir.path().join("state"),
            config,
            dir,
            child: None,
        }
    }

    /// A command of `binary` with this daemon's socket, state directory and
    /// configuration in its environment.
    pub fn command(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .env("FERRY_SOCKET", &self.socket)
            .env("FERRY_STATE_DIR", &self.state_dir)
            .env("FERRY_CONFIG", &self.config)
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null());
        command
    }

    /// A copy of `binary` in this daemon's directory that every user can
    /// run (the build's own directory may not be open to other users), the
    /// directory opened to them too so they reach the socket.
    pub fn shared_binary(&self, binary: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let shared = self.dir.path().join("ferry-shared");
        if !shared.exists() {
            std::fs::copy(binary, &shared).expect("copy the ferry binary");
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))
                .expect("open the copy to every user");
        }
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the daemon's directory to every user");
        shared
    }

    /// Runs `ferry ARGS` and waits for it.
    pub fn run(&self, binary: &Path, args: &[&str]) -> Run {
        Run::from(
            self.command(binary)
                .args(args)
                .output()
                .expect("run the ferry binary"),
        )
    }

    /// `ferry create --json` then `ferry add` for each (remote, local) pair;
    /// returns the new job's id (the job stays suspended).
    pub fn create_download(&self, binary: &Path, files: &[(&str, &Path)]) -> String {
        let id = self.run(binary, &["create", "--json"]).ok().json()["id"]
            .as_str()
            .expect("create prints the id")
            .to_string();
        for (remote, local) in files {
            let local = local.to_str().expect("a UTF-8 path");
            self.run(binary, &["add", &id, remote, local]).ok();
        }
        id
    }

    /// Starts `ferry daemon` and waits until its socket answers.
    pub fn start(&mut self, binary: &Path) {
        let log = std::fs::File::create(self.dir.path().join("daemon.out")).expect("a log file");
        let child = self
            .command(binary)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        self.child = Some(child);
        self.wait_until_answering();
    }

    /// Waits (bounded) until the socket accepts connections.
    pub fn wait_until_answering(&mut self) {
        for _ in 0..2400 {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the daemon exited at start: {status}; log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon does not answer; log: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.out")).unwrap_or_default()
    }

    /// Kills the daemon this test started with SIGKILL (a crash) and reaps it.
    /// The process id of the daemon this test started, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the daemon");
            child.wait().expect("wait for the daemon");
        }
    }

    /// Whether the daemon this test started has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Sends SIGTERM to the daemon this test started and returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        terminate_pid(child.id());
        Some(
            child
                .wait()
                .expect("wait for the daemon")
                .code()
                .unwrap_or(-1),
        )
    }
}

/// Sends SIGTERM to `pid`.
pub fn terminate_pid(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the daemon");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_pid(child.id());
            let _ = child.wait();
        }
    }
}

/// Polls `ferry info JOB --json` until `done` says so (bounded: 2 minutes).
pub fn wait_for_job(
    daemon: &Daemon,
    binary: &Path,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..1200 {
        let run = daemon.run(binary, &["info", id, "--json"]);
        if run.status == 0 {
            last = run.json();
            if done(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "job {id} never got there; last seen: {last}; log: {}",
        daemon.log()
    );
}
