//! Security bounds of a real daemon started with a configuration file
//! (issue 12): what a hostile local user can do to the API socket.
//!
//! Tests that need two Unix users create them when run as root and say on
//! standard error when they skip.

use ferry_tests::daemon::{Daemon, terminate_pid};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// A throw-away Unix user, deleted on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create(tag: &str) -> Option<TestUser> {
        let name = format!("ferry-s{tag}-{}", std::process::id());
        let status = std::process::Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok()??;
        Some(TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// Runs `f` on a thread of its own that has this user's uid and gid (a
    /// Linux thread's credentials are its own when changed by the raw
    /// system calls), so what it connects to sees this user as the peer.
    fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (uid, gid) = (self.uid, self.gid);
        std::thread::spawn(move || {
            // SAFETY: plain system calls changing this thread's credentials.
            unsafe {
                assert_eq!(
                    nix::libc::syscall(nix::libc::SYS_setresgid, gid, gid, gid),
                    0
                );
                assert_eq!(
                    nix::libc::syscall(nix::libc::SYS_setresuid, uid, uid, uid),
                    0
                );
            }
            f()
        })
        .join()
        .expect("the user's thread ran")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

/// A daemon every user can reach, started with at most `nofile` open files
/// (as `LimitNOFILE=` in the service would), with `extra` in its config.
fn start_daemon(extra: &str, nofile: u64) -> (Daemon, Child) {
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = Daemon::new(extra);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = std::fs::File::create(daemon.dir.path().join("daemon.out")).unwrap();
    let mut command = daemon.command(ferry());
    command.arg("daemon").stdout(Stdio::null()).stderr(log);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || set_nofile(nofile));
    }
    let child = command.spawn().expect("start the daemon");
    daemon.wait_until_answering();
    (daemon, child)
}

/// Sets this process's soft and hard limit of open files.
fn set_nofile(n: u64) -> std::io::Result<()> {
    let limit = nix::libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `GET /v1/jobs` on a fresh connection; the answer's status line. The
/// read has a safety net of 30 s, so a daemon that never answers fails.
fn list_jobs(socket: &Path) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn one_users_idle_connections_do_not_lock_out_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let (Some(mallory), Some(bob)) = (TestUser::create("m"), TestUser::create("b")) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    // This test process holds Mallory's connections.
    set_nofile(8192).unwrap();
    // The daemon gets 1,024 descriptors in all (a common default limit).
    let (daemon, mut child) = start_daemon("", 1024);
    let socket = daemon.socket.clone();
    let held = mallory.on_thread(move || {
        (0..1024)
            .filter_map(|_| UnixStream::connect(&socket).ok())
            .collect::<Vec<_>>()
    });
    assert!(held.len() > 1000, "Mallory connected {} times", held.len());
    let socket = daemon.socket.clone();
    let status = bob.on_thread(move || list_jobs(&socket));
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "Bob's request while Mallory holds 1,024 connections: {status:?}\n{}",
        daemon.log()
    );
    let fds = open_fds(child.id());
    assert!(fds < 300, "the daemon has {fds} descriptors open");
    assert!(
        daemon.log().contains("max-connections-per-user"),
        "{}",
        daemon.log()
    );
    drop(held);
    terminate_pid(child.id());
    let _ = child.wait();
}

#[test]
fn a_slow_request_head_and_an_idle_connection_are_closed() {
    let (daemon, mut child) = start_daemon(
        "header-read-timeout-ms = 500\nidle-timeout-secs = 1\n",
        1024,
    );
    // Half a request head, then nothing.
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: fe")
        .unwrap();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(
        read.is_ok(),
        "the daemon kept a half-sent request open: {read:?}"
    );
    // A connection that never sends a byte.
    let mut idle = UnixStream::connect(&daemon.socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let read = idle.read_to_end(&mut answer);
    assert!(read.is_ok(), "the daemon kept an idle connection: {read:?}");
    // And the daemon goes on serving.
    assert!(list_jobs(&daemon.socket).starts_with("HTTP/1.1 200"));
    terminate_pid(child.id());
    let _ = child.wait();
}

// Network policy by address (finding 7): a user hands the root daemon a URL
// that names the machine itself or a private network, by address or by a
// name that resolves there.

mod network_policy {
    use ferry::plugin::{JobContext, PluginRuntime, RuntimeConfig};
    use ferry::{ErrorClass, ErrorContext};
    use ferry_tests::fixtures::{Target, loopback, request};
    use ferry_tests::server::{Resource, start_with};
    use std::collections::HashMap;

    fn runtime(allow: Vec<String>, grants: &[(&str, &str)]) -> PluginRuntime {
        let mut config = RuntimeConfig {
            grants: grants
                .iter()
                .map(|(p, g)| (p.to_string(), vec![g.to_string()]))
                .collect::<HashMap<_, _>>(),
            ..RuntimeConfig::default()
        };
        config.network.allow_private_addresses = allow;
        PluginRuntime::with_builtins(config).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn loopback_by_address_or_by_name_is_refused_by_default() {
        let server = start_with("/secret", Resource::pattern(100)).await;
        let port = server.addr().port();
        let runtime = runtime(Vec::new(), &[]);
        for url in [
            format!("http://127.0.0.1:{port}/secret"),
            format!("http://localhost:{port}/secret"),
            format!("http://[::ffff:127.0.0.1]:{port}/secret"),
        ] {
            let target = Target::new();
            let (result, _) = target
                .download(&runtime, request(&url, 0), 0, &JobContext::new("t"))
                .await;
            let error = result.unwrap_err();
            assert_eq!(
                (error.class, error.context, error.code.as_str()),
                (
                    ErrorClass::Fatal,
                    ErrorContext::Policy,
                    "address-not-allowed"
                ),
                "{url}: {error}"
            );
            assert!(error.message.contains("allow-private-addresses"), "{error}");
        }
        assert!(server.requests().is_empty(), "the server was never reached");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_operator_allows_internal_addresses_by_range_or_by_grant() {
        let server = start_with("/f", Resource::pattern(100)).await;
        let url = server.url("/f");
        let allowed = runtime(loopback(), &[]);
        let target = Target::new();
        let (result, _) = target
            .download(&allowed, request(&url, 0), 0, &JobContext::new("t"))
            .await;
        result.unwrap();
        // A grant of the address itself allows it to that plugin.
        let granted = runtime(Vec::new(), &[("http", "127.0.0.1")]);
        let target = Target::new();
        let (result, _) = target
            .download(&granted, request(&url, 0), 0, &JobContext::new("t"))
            .await;
        result.unwrap();
        assert_eq!(server.requests().len(), 2);
    }
}
