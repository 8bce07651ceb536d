//! Hostile local users against a real root daemon (issue 12): an
//! administrator who acts on another user's job without taking it, a user
//! who plants a file at another job's temporary name, event streams and
//! notify commands.
//!
//! Tests that need two Unix users create them when run as root and say
//! `skipped: …` on standard error otherwise.

use ferry_tests::daemon::{Daemon, Run, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A throw-away Unix group, deleted on drop.
struct TestGroup {
    name: String,
}

impl TestGroup {
    fn create(tag: &str) -> Option<TestGroup> {
        let name = format!("ferry-g{tag}-{}", std::process::id());
        let status = std::process::Command::new("groupadd")
            .arg(&name)
            .status()
            .ok()?;
        status.success().then_some(TestGroup { name })
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("groupdel")
            .arg(&self.name)
            .status();
    }
}

/// A throw-away Unix user, deleted on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// A user in their own group and, as supplementary groups, `groups`.
    fn create(tag: &str, groups: &[&str]) -> Option<TestUser> {
        let name = format!("ferry-l{tag}-{}", std::process::id());
        let mut useradd = std::process::Command::new("useradd");
        useradd.args([
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if !groups.is_empty() {
            useradd.args(["--groups", &groups.join(",")]);
        }
        let status = useradd.arg(&name).status().ok()?;
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

    /// `ferry ARGS --json` run as this user (with their supplementary
    /// groups), never starting a daemon, from the copy of the binary every
    /// user can run.
    fn run(&self, daemon: &SharedDaemon, args: &[&str]) -> Run {
        let mut command = daemon.daemon.command(&daemon.binary);
        let name = std::ffi::CString::new(self.name.clone()).unwrap();
        let groups: Vec<nix::unistd::Gid> =
            nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(self.gid)).unwrap();
        let (uid, gid) = (self.uid, self.gid);
        command
            .arg("--no-start")
            .args(args)
            .arg("--json")
            .env("HOME", "/")
            .current_dir("/");
        // SAFETY: between fork and exec only the setgroups, setgid and
        // setuid system calls run, on memory prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                Ok(())
            });
        }
        Run::from(command.output().unwrap())
    }

    /// A directory of this user's own inside `parent`, mode 0700.
    fn own_dir(&self, parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

/// A root daemon every user can reach, with a copy of the CLI every user
/// can run (the build's own directory may not be open to them).
struct SharedDaemon {
    daemon: Daemon,
    binary: PathBuf,
}

impl SharedDaemon {
    fn start(extra: &str) -> SharedDaemon {
        let mut daemon = Daemon::new(extra);
        std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let binary = daemon.dir.path().join("ferry-cli");
        std::fs::copy(ferry(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        daemon.start(ferry());
        SharedDaemon { daemon, binary }
    }

    /// `ferry ARGS --json` as root.
    fn root(&self, args: &[&str]) -> Run {
        let mut args = args.to_vec();
        args.push("--json");
        self.daemon.run(ferry(), &args)
    }

    fn dir(&self) -> &Path {
        self.daemon.dir.path()
    }
}

fn code(run: &Run) -> String {
    run.json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn id_of(run: Run) -> String {
    run.ok().json()["id"].as_str().unwrap().to_string()
}

/// Waits (bounded) until `path` holds a line, and returns what it holds.
fn wait_for_line(path: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never got its line", path.display());
}

/// Finding 1: an administrator who is not root may list every job and take
/// one; without taking it, every change is refused (a notify command set on
/// root's job would run as root). Taking a job drops what the former owner
/// set to act as them (notify command, credentials, headers); the job then
/// runs as its new owner.
#[test]
fn an_admin_acts_on_another_users_job_only_after_taking_it() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(admins) = TestGroup::create("adm") else {
        eprintln!("skipped: groupadd is not available");
        return;
    };
    let (Some(eve), Some(bob)) = (
        TestUser::create("eve", &[&admins.name]),
        TestUser::create("bob", &[]),
    ) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/o.bin", Resource::pattern(20_000));
    let daemon = SharedDaemon::start(&format!("admin-group = \"{}\"\n", admins.name));
    let url = server.url("/o.bin");

    // Root's job, downloading into a directory only root can write.
    let root_dir = daemon.dir().join("root-only");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let root_job = id_of(daemon.root(&["create"]));
    let root_dest = root_dir.join("o.bin");
    daemon
        .root(&["add", &root_job, &url, root_dest.to_str().unwrap()])
        .ok();

    // Eve sees it...
    let all = eve.run(&daemon, &["list", "--all-users"]).ok().json();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == root_job.as_str()),
        "{all}"
    );
    eve.run(&daemon, &["info", &root_job]).ok();
    // ...and changes nothing of it: a notify command there would run as root.
    let marker = daemon.dir().join("ran-as");
    let command = format!("id -u > '{}'", marker.display());
    let eve_dir = eve.own_dir(daemon.dir(), "eve");
    let eves_file = eve_dir.join("from-eve");
    for args in [
        vec!["set", root_job.as_str(), "--notify-command", &command],
        vec!["set", root_job.as_str(), "--priority", "low"],
        vec!["resume", root_job.as_str()],
        vec!["suspend", root_job.as_str()],
        vec!["add", root_job.as_str(), &url, eves_file.to_str().unwrap()],
        vec!["complete", root_job.as_str()],
        vec!["cancel", root_job.as_str()],
    ] {
        let run = eve.run(&daemon, &args);
        assert_eq!(
            (run.status, code(&run)),
            (1, "access-denied".to_string()),
            "eve {args:?}: {} {}",
            run.stdout,
            run.stderr
        );
    }
    let info = daemon.root(&["info", &root_job]).ok().json();
    assert_eq!(info["settings"]["notify_command"], serde_json::Value::Null);
    assert_eq!(info["state"], "suspended");
    assert_eq!(info["files"].as_array().unwrap().len(), 1);
    assert_eq!(info["priority"], "normal");

    // Bob's job, into a directory everyone may write, with a notify
    // command and credentials of his.
    let open = daemon.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let bob_job = id_of(bob.run(&daemon, &["create"]));
    let bob_dest = open.join("o.bin");
    bob.run(
        &daemon,
        &["add", &bob_job, &url, bob_dest.to_str().unwrap()],
    )
    .ok();
    let bobs_marker = open.join("bobs-command-ran-as");
    bob.run(
        &daemon,
        &[
            "set",
            &bob_job,
            "--notify-command",
            &format!("id -u > '{}'", bobs_marker.display()),
            "--user",
            "bob:secret",
            "--header",
            "X-Bob: his",
        ],
    )
    .ok();
    // Eve takes it: it is hers, and Bob's settings that act as him are gone.
    let taken = eve.run(&daemon, &["take-ownership", &bob_job]).ok().json();
    assert_eq!(taken["owner"], eve.uid);
    assert_eq!(
        taken["settings"]["notify_command"],
        serde_json::Value::Null,
        "the former owner's notify command would run as the new owner: {taken}"
    );
    assert_eq!(taken["settings"]["credentials"], serde_json::Value::Null);
    assert_eq!(taken["settings"]["headers"], serde_json::json!([]));
    let denied = bob.run(&daemon, &["info", &bob_job]);
    assert_eq!(code(&denied), "access-denied");
    // It runs as Eve now: her notify command, with her uid.
    let eves_marker = eve_dir.join("ran-as");
    eve.run(
        &daemon,
        &[
            "set",
            &bob_job,
            "--notify-command",
            &format!("id -u > '{}'", eves_marker.display()),
        ],
    )
    .ok();
    eve.run(&daemon, &["resume", &bob_job]).ok();
    wait_for_job(&daemon.daemon, ferry(), &bob_job, |j| {
        j["state"] == "transferred"
    });
    assert_eq!(wait_for_line(&eves_marker), format!("{}\n", eve.uid));
    eve.run(&daemon, &["complete", &bob_job]).ok();
    assert_eq!(std::fs::metadata(&bob_dest).unwrap().uid(), eve.uid);
    assert_eq!(std::fs::read(&bob_dest).unwrap(), pattern_bytes(0..20_000));
    assert!(!bobs_marker.exists(), "bob's command ran");
    assert!(!marker.exists(), "eve's command ran on root's job");
}
