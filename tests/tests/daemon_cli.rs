//! End to end: the real `ferry` binary against the real daemon over the real
//! socket, in a temporary state directory, downloading from a loopback server.

use ferry_tests::daemon::{Daemon, terminate_pid, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::path::Path;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// A loopback server on its own runtime (the CLI calls below block).
fn server() -> (tokio::runtime::Runtime, TestServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    (runtime, server)
}

fn error_code(run: &ferry_tests::daemon::Run) -> String {
    run.json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn every_verb_works_through_the_daemon_with_the_spec_json_fields() {
    let (_rt, server) = server();
    server.put("/a.bin", Resource::pattern(300_000));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();

    let created = daemon
        .run(
            ferry(),
            &["create", "--name", "first", "--priority", "high", "--json"],
        )
        .ok()
        .json();
    let id = created["id"]
        .as_str()
        .expect("create prints {\"id\": ...}")
        .to_string();
    assert_eq!(created.as_object().unwrap().len(), 1);

    // A relative LOCAL is made absolute by the CLI.
    let added = daemon
        .command(ferry())
        .current_dir(downloads.path())
        .args(["add", &id, &server.url("/a.bin"), "a.bin", "--json"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");

    let secret = "s3cret-password";
    daemon
        .run(
            ferry(),
            &[
                "set",
                &id,
                "--priority",
                "low",
                "--retry-delay",
                "7",
                "--no-progress-timeout",
                "100",
                "--max-download-time",
                "3600",
                "-H",
                "X-Trace: abc",
                "--user",
                &format!("me:{secret}"),
                "--notify-command",
                "true",
                "--name",
                "renamed",
                "--description",
                "a test job",
                "--json",
            ],
        )
        .ok();
    let info = daemon.run(ferry(), &["info", &id, "--json"]).ok();
    assert!(
        !info.stdout.contains(secret),
        "the JSON view leaks credentials"
    );
    let info = info.json();
    for field in ["id", "type", "state", "owner", "priority", "files", "error"] {
        assert!(
            info.get(field).is_some(),
            "info --json lacks {field}: {info}"
        );
    }
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["type"], "download");
    assert_eq!(info["state"], "suspended");
    assert_eq!(info["owner"], nix::unistd::geteuid().as_raw());
    assert_eq!(info["priority"], "low");
    assert_eq!(info["name"], "renamed");
    assert_eq!(info["description"], "a test job");
    assert!(info["error"].is_null());
    let settings = &info["settings"];
    assert_eq!(settings["retry_delay_secs"], 7);
    assert_eq!(settings["no_progress_timeout_secs"], 100);
    assert_eq!(settings["max_download_time_secs"], 3600);
    assert_eq!(settings["headers"], serde_json::json!(["X-Trace"]));
    assert_eq!(settings["credentials"], "basic");
    assert_eq!(settings["notify_command"], "true");
    let file = &info["files"][0];
    for field in [
        "remote",
        "local",
        "bytes_total",
        "bytes_transferred",
        "complete",
    ] {
        assert!(file.get(field).is_some(), "a file lacks {field}: {file}");
    }
    assert_eq!(
        file["local"].as_str().unwrap(),
        downloads.path().join("a.bin").to_str().unwrap()
    );
    assert_eq!(file["complete"], false);

    // Clear the credentials (the test server wants none) and run it.
    daemon
        .run(ferry(), &["set", &id, "--clear-credentials"])
        .ok();
    let list = daemon.run(ferry(), &["list", "--json"]).ok().json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let human = daemon.run(ferry(), &["list"]).ok();
    assert!(human.stdout.contains(&id) && human.stdout.contains("STATE"));

    let resumed = daemon.run(ferry(), &["resume", &id, "--json"]).ok().json();
    assert_eq!(resumed["id"], id.as_str());
    let done = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    assert_eq!(done["files"][0]["bytes_transferred"], 300_000);
    assert_eq!(done["files"][0]["complete"], true);
    assert!(
        !downloads.path().join("a.bin").exists(),
        "nothing in place before complete"
    );
    let completed = daemon
        .run(ferry(), &["complete", &id, "--json"])
        .ok()
        .json();
    assert_eq!(completed["partial"], false);
    assert_eq!(
        std::fs::read(downloads.path().join("a.bin")).unwrap(),
        pattern_bytes(0..300_000)
    );

    // The job left the queue: info is a typed error, exit 1.
    let gone = daemon.run(ferry(), &["info", &id, "--json"]);
    assert_eq!(gone.status, 1);
    assert_eq!(error_code(&gone), "not-found");
    let gone = daemon.run(ferry(), &["info", &id]);
    assert_eq!(gone.status, 1);
    assert!(gone.stderr.contains("error not-found"), "{}", gone.stderr);

    // Suspend and cancel, resume of an empty job, usage errors.
    let other = daemon.create_download(ferry(), &[]);
    let empty = daemon.run(ferry(), &["resume", &other, "--json"]);
    assert_eq!((empty.status, error_code(&empty)), (1, "empty".to_string()));
    daemon
        .run(
            ferry(),
            &[
                "add",
                &other,
                &server.url("/a.bin"),
                downloads.path().join("b").to_str().unwrap(),
            ],
        )
        .ok();
    let suspended = daemon
        .run(ferry(), &["suspend", &other, "--json"])
        .ok()
        .json();
    assert_eq!(suspended["state"], "suspended");
    let cancelled = daemon
        .run(ferry(), &["cancel", &other, "--json"])
        .ok()
        .json();
    assert_eq!(cancelled["state"], "cancelled");
    let again = daemon.run(ferry(), &["cancel", &other, "--json"]);
    assert_eq!(
        (again.status, error_code(&again)),
        (1, "not-found".to_string())
    );
    let list = daemon.run(ferry(), &["list", "--json"]).ok().json();
    assert_eq!(list, serde_json::json!([]));

    let usage = daemon.run(ferry(), &["create", "--priority", "urgent"]);
    assert_eq!(usage.status, 2, "{}", usage.stderr);
    let usage = daemon.run(ferry(), &["add", "only-a-job"]);
    assert_eq!(usage.status, 2);
    let not_admin_or_admin = daemon.run(ferry(), &["list", "--all-users", "--json"]);
    assert!(not_admin_or_admin.status == 0 || error_code(&not_admin_or_admin) == "access-denied");

    let plugins = daemon.run(ferry(), &["plugins", "--json"]).ok().json();
    assert!(
        plugins.as_array().unwrap().iter().any(|p| p["schemes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "http")),
        "{plugins}"
    );
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

/// A `ferry get` that outlasts the daemon's idle timeout: its event stream
/// stays open through a quiet wait (comments under the timeout), and its
/// `complete` goes out on a new connection once the daemon closed the idle
/// one.
#[test]
fn get_outlasting_the_idle_timeout_follows_and_completes() {
    let (_rt, server) = server();
    server.put(
        "/quiet.bin",
        Resource::pattern(100_000).delay_headers(std::time::Duration::from_millis(3500)),
    );
    let mut daemon = Daemon::new("idle-timeout-secs = 1\n");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    let dest = downloads.path().join("quiet.bin");
    let got = daemon
        .run(
            ferry(),
            &[
                "get",
                &server.url("/quiet.bin"),
                dest.to_str().unwrap(),
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(got["state"], "acknowledged", "{got}");
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..100_000));
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

#[test]
fn get_starts_a_daemon_when_none_answers_and_downloads() {
    let (_rt, server) = server();
    server.put("/g.bin", Resource::pattern(200_000));
    let daemon = Daemon::new("");
    let downloads = tempfile::tempdir().unwrap();
    let dest = downloads.path().join("g.bin");
    assert!(!daemon.socket.exists());
    let got = daemon
        .run(
            ferry(),
            &[
                "get",
                &server.url("/g.bin"),
                dest.to_str().unwrap(),
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(got["bytes"], 200_000);
    assert_eq!(got["state"], "acknowledged");
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..200_000));

    // The daemon it started goes on; stop it by its pid.
    let list = daemon
        .run(ferry(), &["--no-start", "list", "--json"])
        .ok()
        .json();
    assert_eq!(list, serde_json::json!([]));
    let mut client_rt = tokio::runtime::Runtime::new().unwrap();
    let pid = health_pid(&mut client_rt, &daemon);
    terminate_pid(pid);
    for _ in 0..600 {
        if !daemon.socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !daemon.socket.exists(),
        "the daemon removes its socket when it stops"
    );
}

fn health_pid(rt: &mut tokio::runtime::Runtime, daemon: &Daemon) -> u32 {
    rt.block_on(async {
        let mut client = ferry::cli::client::Client::connect(&daemon.socket)
            .await
            .unwrap();
        let health: ferry::api::views::HealthView = client
            .call(http::Method::GET, "/v1/health", None::<&()>)
            .await
            .unwrap();
        health.pid
    })
}

#[test]
fn a_failed_get_exits_4_and_keeps_the_job_in_error() {
    let (_rt, server) = server();
    server.put("/missing", Resource::status(404));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("never");
    let failed = daemon.run(
        ferry(),
        &[
            "get",
            &server.url("/missing"),
            dest.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(failed.status, 4, "{} {}", failed.stdout, failed.stderr);
    assert_eq!(error_code(&failed), "http-status");
    let jobs = daemon.run(ferry(), &["list", "--json"]).ok().json();
    assert_eq!(jobs[0]["state"], "error");
    assert_eq!(jobs[0]["error"]["code"], "http-status");
    assert_eq!(jobs[0]["error"]["class"], "fatal");
    assert_eq!(jobs[0]["error"]["context"], "remote-file");
    assert!(!dest.exists());
}

#[test]
fn no_daemon_and_no_start_exits_3() {
    let daemon = Daemon::new("");
    let run = daemon.run(ferry(), &["--no-start", "list", "--json"]);
    assert_eq!(run.status, 3);
    assert_eq!(error_code(&run), "daemon-unreachable");
}

#[test]
fn sigterm_keeps_a_running_job_and_the_next_daemon_resumes_it() {
    let (_rt, server) = server();
    let size = 2_000_000;
    server.put("/slow.bin", Resource::pattern(size).slow(400_000));
    let mut daemon = Daemon::new("[limits]\ncheckpoint-interval-ms = 100\n");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("slow.bin");
    let id = daemon.create_download(ferry(), &[(&server.url("/slow.bin"), &dest)]);
    daemon.run(ferry(), &["resume", &id]).ok();
    let before = wait_for_job(&daemon, ferry(), &id, |j| {
        j["files"][0]["bytes_transferred"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
    assert!(!daemon.socket.exists());
    let saved_before = before["files"][0]["bytes_transferred"].as_u64().unwrap();

    daemon.start(ferry());
    let after = daemon.run(ferry(), &["info", &id, "--json"]).ok().json();
    let saved = after["files"][0]["bytes_transferred"].as_u64().unwrap();
    assert!(
        saved >= saved_before,
        "{saved} < {saved_before}: progress was lost"
    );
    assert!(saved < size, "the transfer was interrupted");
    wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..size));
    let resumed = server
        .requests_for("/slow.bin")
        .iter()
        .filter(|r| r.header("range").is_some())
        .count();
    assert!(
        resumed >= 1,
        "the second daemon resumed with a Range request"
    );
}

#[test]
fn watch_follows_a_job_until_it_leaves_the_queue() {
    let (_rt, server) = server();
    server.put("/w.bin", Resource::pattern(100_000));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("w.bin");
    let id = daemon.create_download(ferry(), &[(&server.url("/w.bin"), &dest)]);
    let watcher = daemon
        .command(ferry())
        .args(["watch", &id, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    daemon.run(ferry(), &["resume", &id]).ok();
    wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["id"], id.as_str(), "the stream opens with the job");
    assert_eq!(lines.last().unwrap()["state"], "acknowledged");
}

#[test]
fn the_notify_command_runs_on_transferred_and_on_error() {
    let (_rt, server) = server();
    server.put("/n.bin", Resource::pattern(1000));
    server.put("/gone", Resource::status(404));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let out = daemon.dir.path().join("notified");
    std::fs::create_dir(&out).unwrap();
    for (path, state) in [("/n.bin", "transferred"), ("/gone", "error")] {
        let dest = daemon.dir.path().join(format!("dest-{state}"));
        let id = daemon.create_download(ferry(), &[(&server.url(path), &dest)]);
        let command = format!(
            "echo \"$FERRY_JOB_ID $FERRY_JOB_STATE\" > '{}/'\"$FERRY_JOB_STATE\"",
            out.display()
        );
        daemon
            .run(ferry(), &["set", &id, "--notify-command", &command])
            .ok();
        daemon.run(ferry(), &["resume", &id]).ok();
        let file = out.join(state);
        for _ in 0..600 {
            if std::fs::read_to_string(&file).is_ok_and(|t| t.ends_with('\n')) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            std::fs::read_to_string(&file).unwrap_or_default(),
            format!("{id} {state}\n"),
            "log: {}",
            daemon.log()
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = Daemon::new("").run(ferry(), &["completions", shell]).ok();
        assert!(
            run.stdout.contains("ferry") && run.stdout.contains("take-ownership"),
            "{shell}"
        );
    }
}

#[test]
fn ctrl_c_leaves_a_get_running_in_the_daemon_and_says_how_to_follow_it() {
    let (_rt, server) = server();
    let size = 1_500_000;
    server.put("/long.bin", Resource::pattern(size).slow(300_000));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("long.bin");
    let get = daemon
        .command(ferry())
        .args(["get", &server.url("/long.bin"), dest.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    for _ in 0..1200 {
        let jobs = daemon.run(ferry(), &["list", "--json"]).ok().json();
        if let Some(job) = jobs.as_array().and_then(|a| a.first())
            && job["files"][0]["bytes_transferred"].as_u64().unwrap_or(0) > 0
        {
            id = job["id"].as_str().unwrap().to_string();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!id.is_empty(), "the get never started transferring");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(get.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = get.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("ferry watch {id}")), "{stderr}");
    // The job goes on without the command, to the end.
    wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..size));
}

#[test]
fn a_set_of_files_is_added_in_one_command_or_from_a_list_file() {
    let (_rt, server) = server();
    for n in 0..6 {
        server.put(&format!("/{n}.bin"), Resource::pattern(50_000 + n));
    }
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    let dest = |n: u64| downloads.path().join(format!("{n}.bin"));
    let id = daemon.run(ferry(), &["create", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Pairs on the command line.
    let (u0, u1) = (server.url("/0.bin"), server.url("/1.bin"));
    let (d0, d1) = (dest(0), dest(1));
    let added = daemon
        .run(
            ferry(),
            &[
                "add",
                &id,
                &u0,
                d0.to_str().unwrap(),
                &u1,
                d1.to_str().unwrap(),
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(added["files"].as_array().unwrap().len(), 2);

    // A list file in which one line is bad adds nothing.
    let list = downloads.path().join("list.txt");
    let mut lines = String::from("# remote local\n\n");
    for n in 2..6 {
        lines.push_str(&format!(
            "{} {}\n",
            server.url(&format!("/{n}.bin")),
            dest(n).display()
        ));
    }
    std::fs::write(
        &list,
        format!("{lines}gopher://nowhere/x {}\n", dest(9).display()),
    )
    .unwrap();
    let refused = daemon.run(
        ferry(),
        &["add", &id, "--list", list.to_str().unwrap(), "--json"],
    );
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert_eq!(error_code(&refused), "unsupported-scheme");
    let info = daemon.run(ferry(), &["info", &id, "--json"]).ok().json();
    assert_eq!(
        info["files"].as_array().unwrap().len(),
        2,
        "nothing of the set was added"
    );

    std::fs::write(&list, lines).unwrap();
    daemon
        .run(ferry(), &["add", &id, "--list", list.to_str().unwrap()])
        .ok();
    let usage = daemon.run(ferry(), &["add", &id, &u0]);
    assert_eq!(usage.status, 2, "an odd number of words is a usage error");

    daemon.run(ferry(), &["resume", &id]).ok();
    wait_for_job(&daemon, ferry(), &id, |v| v["state"] == "transferred");
    daemon.run(ferry(), &["complete", &id]).ok();
    for n in 0..6 {
        assert_eq!(
            std::fs::read(dest(n)).unwrap(),
            pattern_bytes(0..50_000 + n)
        );
    }
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

#[test]
fn metrics_count_what_was_transferred() {
    let (rt, server) = server();
    server.put("/m.bin", Resource::pattern(123_456));
    server.put("/missing", Resource::status(404));
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    let ok = daemon.create_download(
        ferry(),
        &[(&server.url("/m.bin"), &downloads.path().join("m"))],
    );
    let bad = daemon.create_download(
        ferry(),
        &[(&server.url("/missing"), &downloads.path().join("x"))],
    );
    daemon.run(ferry(), &["resume", &ok]).ok();
    daemon.run(ferry(), &["resume", &bad]).ok();
    wait_for_job(&daemon, ferry(), &ok, |v| v["state"] == "transferred");
    wait_for_job(&daemon, ferry(), &bad, |v| v["state"] == "error");
    let (status, text) = rt.block_on(async {
        let mut client = ferry::cli::client::Client::connect(&daemon.socket)
            .await
            .unwrap();
        client
            .raw(http::Method::GET, "/v1/metrics", bytes::Bytes::new())
            .await
            .unwrap()
    });
    let text = String::from_utf8(text.to_vec()).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(status, 200, "{text}");
        for line in [
            "ferry_jobs{state=\"transferred\",type=\"download\"} 1",
            "ferry_jobs{state=\"error\",type=\"download\"} 1",
            "ferry_transferred_bytes_total{type=\"download\"} 123456",
            "ferry_transferred_files_total{type=\"download\"} 1",
            "ferry_transfer_errors_total{code=\"http-status\"} 1",
            "ferry_plugin_calls_total{plugin=\"http\",outcome=\"ok\"} 1",
            "ferry_plugin_calls_total{plugin=\"http\",outcome=\"error\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let writes: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ferry_store_writes_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(writes > 0);
    } else {
        eprintln!("metrics: not root, so only the refusal is checked");
        assert_eq!(status, 403, "{text}");
    }
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

/// Off a terminal (a log, a pipe, CI) `ferry get` prints a line at each
/// change of state and each error instead of a progress bar that draws
/// nothing. A plugin failure waits in `transient_error` for the retry delay
/// (600 s by default); `ferry plugins reload` with the plugin fixed is the
/// cure it waits for, so the job retries at once and the get finishes.
#[test]
fn a_get_off_a_terminal_says_what_happens_and_a_fixed_plugin_retries_at_once() {
    use std::io::BufRead;
    let (_rt, server) = server();
    let size = 300_000;
    server.put("/f.bin", Resource::pattern(size));
    let mut daemon = Daemon::new("[plugins.grants]\nmirror = [\"127.0.0.1\"]\n");
    let plugins = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let manifest = include_str!("../../examples/mirror-plugin/manifest.toml");
    assert!(manifest.contains("memory-mib = 32"), "{manifest}");
    // Too little memory to run: every call fails as a plugin error.
    let starved = manifest.replace("memory-mib = 32", "memory-mib = 1");
    std::fs::write(plugins.join("mirror.toml"), &starved).unwrap();
    std::fs::copy(env!("FERRY_MIRROR_EXAMPLE"), plugins.join("mirror.wasm")).unwrap();
    daemon.start(ferry());

    let url = server.url("/f.bin").replacen("http://", "mirror://", 1);
    let dest = daemon.dir.path().join("f.bin");
    let mut get = daemon
        .command(ferry())
        .args(["get", &url, dest.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let stderr = get.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut printed = Vec::new();
    let until = |printed: &mut Vec<String>, want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = seen.recv_timeout(std::time::Duration::from_millis(200)) {
                let found = line.contains(want);
                printed.push(line);
                if found {
                    return;
                }
            }
        }
        panic!(
            "`ferry get` never printed {want:?}; it printed:\n{}",
            printed.join("\n")
        );
    };
    until(&mut printed, "transient error plugin-");
    let failure = printed.last().unwrap().clone();
    assert!(failure.contains("ferry resume"), "{failure}");

    std::fs::write(plugins.join("mirror.toml"), manifest).unwrap();
    daemon.run(ferry(), &["plugins", "reload"]).ok();
    until(&mut printed, "transferred");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = get.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the get did not end");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", printed.join("\n"));
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..size));
    assert!(
        printed.iter().any(|l| l.contains("queued")),
        "{}",
        printed.join("\n")
    );
}

#[test]
fn the_digests_a_file_is_checked_against_show_in_info() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let (_rt, server) = server();
    let data = pattern_bytes(0..200_000);
    let digest = Sha256::digest(&data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let declared = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    server.put(
        "/d.bin",
        Resource::pattern(200_000).header("repr-digest", &declared),
    );
    let mut daemon = Daemon::new("");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    let dest = downloads.path().join("d.bin");
    let id = daemon.run(ferry(), &["create", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = server.url("/d.bin");
    daemon
        .run(
            ferry(),
            &["add", &id, &url, dest.to_str().unwrap(), "--sha256", &hex],
        )
        .ok();
    daemon.run(ferry(), &["resume", &id]).ok();
    let done = wait_for_job(&daemon, ferry(), &id, |j| j["state"] == "transferred");
    let file = &done["files"][0];
    assert_eq!(file["sha256"], hex.as_str(), "{done}");
    assert_eq!(file["served_sha256"], hex.as_str(), "{done}");
    daemon.run(ferry(), &["complete", &id]).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}
