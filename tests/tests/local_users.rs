//! Hostile local users against a real root daemon (issue 12): an
//! administrator who acts on another user's job without taking it, a user
//! who plants a file at another job's temporary name, event streams and
//! notify commands.
//!
//! Tests that need two Unix users create them when run as root and say
//! `skipped: …` on standard error otherwise.

use ferry_tests::daemon::{Daemon, Run, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use ferry_tests::users::{TestGroup, TestUser};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What these tests do as a throw-away user.
trait AsUser {
    fn run(&self, daemon: &SharedDaemon, args: &[&str]) -> Run;
    fn run_with_umask(&self, daemon: &SharedDaemon, umask: u32, args: &[&str]) -> Run;
    fn own_dir(&self, parent: &Path, name: &str) -> PathBuf;
}

impl AsUser for TestUser {
    /// `ferry ARGS --json` run as this user (with their supplementary
    /// groups), never starting a daemon, from the copy of the binary every
    /// user can run.
    fn run(&self, daemon: &SharedDaemon, args: &[&str]) -> Run {
        self.run_with_umask(daemon, 0o022, args)
    }

    /// [`Self::run`] from a process with umask `umask`.
    fn run_with_umask(&self, daemon: &SharedDaemon, umask: u32, args: &[&str]) -> Run {
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
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
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

    // A job Bob's daemon work already transferred: Eve takes it and
    // completes it; its files are hers.
    let done_job = id_of(bob.run(&daemon, &["create"]));
    let done_dest = open.join("done.bin");
    bob.run(
        &daemon,
        &["add", &done_job, &url, done_dest.to_str().unwrap()],
    )
    .ok();
    bob.run(&daemon, &["resume", &done_job]).ok();
    wait_for_job(&daemon.daemon, ferry(), &done_job, |j| {
        j["state"] == "transferred"
    });
    eve.run(&daemon, &["take-ownership", &done_job]).ok();
    eve.run(&daemon, &["complete", &done_job]).ok();
    assert_eq!(std::fs::metadata(&done_dest).unwrap().uid(), eve.uid);
    assert_eq!(std::fs::read(&done_dest).unwrap(), pattern_bytes(0..20_000));
}

/// Runs `script` through `/bin/sh -c` as `user`; panics if it fails.
fn shell_as(user: &TestUser, script: &str) {
    let mut command = std::process::Command::new("/bin/sh");
    command.arg("-c").arg(script).current_dir("/");
    let (uid, gid) = (user.uid, user.gid);
    // SAFETY: between fork and exec only the setgroups, setgid and setuid
    // system calls run.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)])?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entries of `dir` whose names end in `.ferry-part`.
fn temporary_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ferry-part"))
        .collect()
}

/// Finding 2, a fresh transfer: the temporary name of a root job's file
/// used to follow from the job id (which shows in every user's process
/// list), and a file found there was reopened whoever owned it. Mallory
/// plants her own file at that name in a sticky, world-writable directory
/// (and a symlink at the name of a second file): the download must not land
/// in her inode, and her link must not be followed.
#[test]
fn a_file_planted_at_a_fresh_downloads_temporary_name_never_receives_it() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(mallory) = TestUser::create("mal", &[]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/o.bin", Resource::pattern(30_000));
    let daemon = SharedDaemon::start("");
    let open = daemon.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();

    let id = id_of(daemon.root(&["create"]));
    let (first, second) = (open.join("o.bin"), open.join("p.bin"));
    for dest in [&first, &second] {
        daemon
            .root(&["add", &id, &server.url("/o.bin"), dest.to_str().unwrap()])
            .ok();
    }
    // The name the daemon used to choose: the job id's first 12 hex digits.
    let tag: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    let planted = open.join(format!(".o.bin.{tag}.ferry-part"));
    let linked = open.join(format!(".p.bin.{tag}.ferry-part"));
    let target = open.join("mallorys-target");
    shell_as(
        &mallory,
        &format!(
            "umask 0; : > '{}'; : > '{}'; ln -s '{}' '{}'",
            planted.display(),
            target.display(),
            target.display(),
            linked.display()
        ),
    );
    daemon.root(&["resume", &id]).ok();
    let end = wait_for_job(&daemon.daemon, ferry(), &id, |j| {
        j["state"] == "transferred" || j["state"] == "error"
    });
    // (In `error`, `complete` keeps the files that did arrive.)
    daemon.root(&["complete", &id]).ok();
    for dest in [&first, &second] {
        let meta = std::fs::symlink_metadata(dest).unwrap();
        assert_eq!(
            (meta.uid(), meta.file_type().is_file()),
            (0, true),
            "{} is Mallory's inode",
            dest.display()
        );
        assert_eq!(std::fs::read(dest).unwrap(), pattern_bytes(0..30_000));
    }
    assert_eq!(std::fs::metadata(&planted).unwrap().len(), 0);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    assert_eq!(end["state"], "transferred", "{end}");
}

/// Finding 2, a resumed transfer: once a temporary file exists its name can
/// be seen, and in a world-writable directory without the sticky bit anyone
/// may rename it away. Mallory swaps her own file in for an interrupted
/// root download's temporary file: resuming must never write into it (the
/// file starts over under a new name).
#[test]
fn a_file_swapped_in_for_an_interrupted_downloads_temporary_file_never_receives_it() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(mallory) = TestUser::create("mas", &[]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/o.bin", Resource::pattern(60_000).drop_after(20_000));
    let daemon = SharedDaemon::start("");
    let open = daemon.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();

    let id = id_of(daemon.root(&["create"]));
    let dest = open.join("o.bin");
    daemon
        .root(&["add", &id, &server.url("/o.bin"), dest.to_str().unwrap()])
        .ok();
    daemon.root(&["resume", &id]).ok();
    // The connection drops after 20,000 bytes: the job waits to retry,
    // with its bytes recorded.
    wait_for_job(&daemon.daemon, ferry(), &id, |j| {
        j["state"] == "transient_error" && j["files"][0]["bytes_transferred"].as_u64() > Some(0)
    });
    let names = temporary_names(&open);
    assert_eq!(names.len(), 1, "{names:?}");
    let name = open.join(&names[0]);
    let moved = open.join("moved-away");
    shell_as(
        &mallory,
        &format!(
            "mv '{0}' '{1}' && umask 0 && printf mallory > '{0}'",
            name.display(),
            moved.display()
        ),
    );
    daemon.root(&["resume", &id]).ok();
    wait_for_job(&daemon.daemon, ferry(), &id, |j| {
        j["state"] == "transferred"
    });
    daemon.root(&["complete", &id]).ok();
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.uid(), 0, "the download landed in Mallory's inode");
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..60_000));
    assert_eq!(std::fs::read(&name).unwrap(), b"mallory");
}

/// Records written before temporary names had a random part still load,
/// and their files keep the name they were given.
#[test]
fn a_file_record_without_a_temporary_tag_still_loads() {
    let record = r#"{"remote":"http://example.invalid/o","local":"/srv/o","bytes_total":10,
        "bytes_transferred":4,"complete":false,"finalized":false,"validator":null}"#;
    let file: ferry::job::JobFile = serde_json::from_str(record).unwrap();
    assert_eq!(file.temp_tag, None);
    assert_eq!(file.bytes_transferred, 4);
}

/// Finding 13: a notify command is never dropped however many events go by
/// before the notifier runs. On a single-threaded runtime the notifier
/// cannot run while the test holds the thread: a job reaches `error`, then
/// 4,800 other events are published (more than the event stream keeps for
/// a listener that fell behind) before the notifier is polled at all.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_events_never_drops_a_notify_command() {
    use ferry::clock::ManualClock;
    use ferry::engine::{Caller, Engine, EngineConfig, Setting};
    use ferry::job::{JobState, JobType, Priority};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    let server = TestServer::start().await;
    server.put("/down", Resource::status(503));
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let runtime = Arc::new(
        ferry::plugin::PluginRuntime::with_builtins(ferry_tests::fixtures::loopback_config())
            .unwrap(),
    );
    let state = ferry_tests::fixtures::StateDir::new();
    let engine = Engine::open(
        EngineConfig::default(),
        Box::new(state.open_store().unwrap()),
        runtime,
        clock.clone(),
    )
    .unwrap();
    let shutdown = ferry::notify::CancellationToken::new();
    let notifier = ferry::notify::spawn(engine.clone(), shutdown.clone());
    let me = Caller::user(nix::unistd::geteuid().as_raw());
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("notified");

    let id = engine
        .create(me, JobType::Download, "watched", Priority::Normal)
        .unwrap();
    engine
        .add_file(
            me,
            &id,
            &server.url("/down"),
            &dir.path().join("down"),
            Vec::new(),
        )
        .unwrap();
    for setting in [
        Setting::NoProgressTimeout(Duration::from_secs(60)),
        Setting::RetryDelay(Duration::from_secs(3600)),
        Setting::NotifyCommand(Some(format!(
            "echo \"$FERRY_JOB_STATE\" > '{}'",
            marker.display()
        ))),
    ] {
        engine.set(me, &id, setting).unwrap();
    }
    let busy = engine
        .create(me, JobType::Download, "busy", Priority::Normal)
        .unwrap();
    engine.resume(me, &id).unwrap();
    for _ in 0..3000 {
        if engine.get(me, &id).unwrap().state() == JobState::TransientError {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        engine.get(me, &id).unwrap().state(),
        JobState::TransientError
    );

    // From here to the end of the flood, nothing awaits.
    clock.advance(Duration::from_secs(61));
    engine.tick();
    assert_eq!(engine.get(me, &id).unwrap().state(), JobState::Error);
    let flood: Vec<_> = (0..8)
        .map(|t| {
            let (engine, busy) = (engine.clone(), busy.clone());
            std::thread::spawn(move || {
                for i in 0..600 {
                    engine
                        .set(me, &busy, Setting::Name(format!("{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in flood {
        thread.join().unwrap();
    }

    let mut ran = None;
    for _ in 0..1500 {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && text.ends_with('\n')
        {
            ran = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ran.as_deref(),
        Some("error\n"),
        "the notify command never ran"
    );
    shutdown.cancel();
    let _ = notifier.await;
    engine.shutdown().await;
}

/// Finding 13: `ferry watch` (`/v1/events`) of a user carries their own
/// jobs' events and none of another user's or root's, and asking for every
/// user's is refused to a user who is not an administrator.
#[test]
fn a_users_event_stream_carries_only_their_own_jobs() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let (Some(alice), Some(bob)) = (TestUser::create("wa", &[]), TestUser::create("wb", &[]))
    else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let daemon = SharedDaemon::start("");
    let everyone = alice.run(&daemon, &["watch", "--all-users"]);
    assert_eq!(code(&everyone), "access-denied", "{}", everyone.stdout);

    // Alice watches every job of hers, through the CLI.
    let mut command = daemon.daemon.command(&daemon.binary);
    command
        .args(["--no-start", "watch", "--json"])
        .env("HOME", "/")
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let (uid, gid) = (alice.uid, alice.gid);
    // SAFETY: between fork and exec only the setgroups, setgid and setuid
    // system calls run.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)])?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            Ok(())
        });
    }
    let mut watch = command.spawn().unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        seen.recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the watch gave nothing more: {e}"))
    };
    // Her stream is up once an event of hers arrives on it (the watch may
    // connect after the first change: she changes her job until it does).
    let alices = id_of(alice.run(&daemon, &["create"]));
    let mut got = Vec::new();
    while !got.iter().any(|l: &String| l.contains(&alices)) {
        alice
            .run(&daemon, &["set", &alices, "--name", "first"])
            .ok();
        got.push(next());
    }
    // Bob's and root's jobs change; then a new job of hers does: events
    // arrive in order, so by her new job's event any of theirs would be in.
    let bobs = id_of(bob.run(&daemon, &["create"]));
    bob.run(&daemon, &["set", &bobs, "--name", "bob's"]).ok();
    bob.run(&daemon, &["suspend", &bobs]).ok();
    let roots = id_of(daemon.root(&["create"]));
    daemon.root(&["set", &roots, "--name", "root's"]).ok();
    let sentinel = id_of(alice.run(&daemon, &["create"]));
    alice
        .run(&daemon, &["set", &sentinel, "--name", "last"])
        .ok();
    while !got.iter().any(|l| l.contains(&sentinel)) {
        got.push(next());
    }
    let all = got.join("\n");
    assert!(!all.contains(&bobs), "alice saw bob's job: {all}");
    assert!(!all.contains(&roots), "alice saw root's job: {all}");
    assert!(
        !all.contains(&format!("\"owner\":{}", bob.uid)) && !all.contains("\"owner\":0"),
        "{all}"
    );
    ferry_tests::daemon::terminate_pid(watch.id());
    let _ = watch.wait();
}

/// Finding 6: files are created with the umask of the process that created
/// the job, not the daemon's: a user with `umask 077` gets a private file,
/// one with `umask 002` a group-writable one (more than the daemon's own
/// umask of the test run, 022, would leave).
#[test]
fn downloads_are_created_with_the_callers_umask() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(alice) = TestUser::create("um", &[]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/o.bin", Resource::pattern(10_000));
    let daemon = SharedDaemon::start("");
    let dir = daemon.dir().join("alice");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(alice.uid), Some(alice.gid)).unwrap();
    for (umask, mode) in [(0o077, 0o600), (0o002, 0o664)] {
        let dest = dir.join(format!("umask-{umask:03o}"));
        let id = id_of(alice.run_with_umask(&daemon, umask, &["create"]));
        alice
            .run(
                &daemon,
                &["add", &id, &server.url("/o.bin"), dest.to_str().unwrap()],
            )
            .ok();
        alice.run(&daemon, &["resume", &id]).ok();
        wait_for_job(&daemon.daemon, ferry(), &id, |j| {
            j["state"] == "transferred"
        });
        alice.run(&daemon, &["complete", &id]).ok();
        let meta = std::fs::metadata(&dest).unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.uid()),
            (mode, alice.uid),
            "a file made for umask {umask:03o} has mode {:03o}",
            meta.mode() & 0o777
        );
    }
}

/// Finding 4: the caller is who the kernel says, not who the user database
/// says they could be: a process of a member of a group that dropped the
/// group (as `setpriv --clear-groups` or a sandbox does) may not use a
/// directory only that group may write, and a process given a group by
/// root (as `newgrp`/`sg` do) may. A job acts with no group the process
/// that created it lacked, its notify command included.
#[test]
fn the_callers_groups_are_those_of_the_process_not_the_user_database() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let (Some(team), Some(other)) = (TestGroup::create("team"), TestGroup::create("oth")) else {
        eprintln!("skipped: groupadd is not available");
        return;
    };
    let Some(alice) = TestUser::create("gr", &[&team.name]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let gid_of = |name: &str| {
        nix::unistd::Group::from_name(name)
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    };
    let (team_gid, other_gid) = (gid_of(&team.name), gid_of(&other.name));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/f", Resource::pattern(5_000));
    let daemon = SharedDaemon::start("");
    let group_dir = |group: u32, name: &str| {
        let dir = daemon.dir().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(0), Some(group)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        dir
    };
    let teams = group_dir(team_gid, "team");
    let others = group_dir(other_gid, "other");
    // `ferry ARGS --json` from a process of Alice's with exactly `groups`
    // (and her own gid).
    let as_alice = |groups: &[u32], args: &[&str]| {
        let mut command = daemon.daemon.command(&daemon.binary);
        command
            .arg("--no-start")
            .args(args)
            .arg("--json")
            .env("HOME", "/")
            .current_dir("/");
        let groups: Vec<nix::unistd::Gid> = groups
            .iter()
            .chain([&alice.gid])
            .map(|&g| nix::unistd::Gid::from_raw(g))
            .collect();
        let (uid, gid) = (alice.uid, alice.gid);
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
    };
    let url = server.url("/f");
    let add = |groups: &[u32], dir: &Path, name: &str| {
        let id = id_of(as_alice(groups, &["create"]));
        let dest = dir.join(name);
        as_alice(groups, &["add", &id, &url, dest.to_str().unwrap()])
    };
    // With her groups as the user database has them, both ways work out.
    assert_eq!(add(&[team_gid], &teams, "a").status, 0);
    assert_eq!(code(&add(&[team_gid], &others, "b")), "permission-denied");
    // Without the team group, the team's directory is closed to her...
    let dropped = add(&[], &teams, "c");
    assert_eq!(
        (dropped.status, code(&dropped)),
        (1, "permission-denied".to_string()),
        "a process without the group used it: {}",
        dropped.stdout
    );
    // ...and with a group root gave her process, that group's is open.
    let given = add(&[other_gid], &others, "d");
    assert_eq!(given.status, 0, "{} {}", given.stdout, given.stderr);

    // A job created by a process without the team group, its file added
    // by one with it: the transfer and the notify command run without it.
    let own = alice.own_dir(daemon.dir(), "alice");
    let groups_seen = own.join("groups");
    let id = id_of(as_alice(&[], &["create"]));
    let dest = teams.join("e");
    as_alice(&[team_gid], &["add", &id, &url, dest.to_str().unwrap()]).ok();
    as_alice(
        &[team_gid],
        &[
            "set",
            &id,
            "--notify-command",
            &format!("id -G > '{}'", groups_seen.display()),
        ],
    )
    .ok();
    as_alice(&[team_gid], &["resume", &id]).ok();
    let end = wait_for_job(&daemon.daemon, ferry(), &id, |j| {
        j["state"] == "transferred" || j["state"] == "error"
    });
    assert_eq!(
        end["state"], "error",
        "the job wrote with a group its creator lacked: {end}"
    );
    let seen: Vec<u32> = wait_for_line(&groups_seen)
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(seen.contains(&alice.gid), "{seen:?}");
    assert!(!seen.contains(&team_gid), "{seen:?}");
}

/// Finding 2, the same for an upload-reply job's reply file: its temporary
/// name used to follow from the job id, and a file Mallory planted there
/// made the upload fail. Its name is random now: the upload goes through
/// and her file is left alone.
#[test]
fn a_file_planted_at_a_reply_files_temporary_name_does_not_stop_the_upload() {
    if !is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(mallory) = TestUser::create("mar", &[]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(ferry_tests::bits_server::BitsServer::start());
    let daemon = SharedDaemon::start("");
    let open = daemon.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let source = daemon.dir().join("source.bin");
    std::fs::write(&source, pattern_bytes(0..50_000)).unwrap();
    let reply = open.join("reply.txt");

    let id = id_of(daemon.root(&["create", "--type", "upload-reply"]));
    let url = format!("http://{}/plain/up.bin", server.addr());
    daemon
        .root(&["add", &id, &url, source.to_str().unwrap()])
        .ok();
    daemon
        .root(&[
            "set",
            &id,
            "--protocol",
            "put",
            "--reply-file",
            reply.to_str().unwrap(),
        ])
        .ok();
    let tag: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    let planted = open.join(format!(".reply.txt.{tag}-reply.ferry-part"));
    shell_as(
        &mallory,
        &format!("umask 0; printf mallory > '{}'", planted.display()),
    );
    daemon.root(&["resume", &id]).ok();
    let end = wait_for_job(&daemon.daemon, ferry(), &id, |j| {
        j["state"] == "transferred" || j["state"] == "error"
    });
    assert_eq!(end["state"], "transferred", "{end}");
    daemon.root(&["complete", &id]).ok();
    assert_eq!(std::fs::metadata(&reply).unwrap().uid(), 0);
    assert_eq!(std::fs::read(&planted).unwrap(), b"mallory");
}
