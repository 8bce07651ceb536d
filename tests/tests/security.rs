//! Security bounds of a real daemon started with a configuration file
//! (issue 12): what a hostile local user can do to the API socket.
//!
//! Tests that need two Unix users create them when run as root and say on
//! standard error when they skip.

use ferry_tests::daemon::{Daemon, terminate_pid};
use ferry_tests::users::TestUser;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
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
    let (Some(mallory), Some(bob)) = (TestUser::create("sm", &[]), TestUser::create("sb", &[]))
    else {
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

#[test]
fn a_kept_alive_connection_waits_the_idle_timeout_not_the_head_timeout() {
    let (daemon, mut child) = start_daemon(
        "header-read-timeout-ms = 300\nidle-timeout-secs = 30\n",
        1024,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = ferry::cli::client::Client::connect(&daemon.socket)
            .await
            .unwrap();
        for round in 0..2 {
            let answer = client
                .raw(http::Method::GET, "/v1/health", bytes::Bytes::new())
                .await;
            assert!(
                matches!(answer, Ok((status, _)) if status.is_success()),
                "request {round} on the kept-alive connection: {answer:?}"
            );
            // Idle for five head timeouts, far within the idle timeout.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    });
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
        config.network.proxy = ferry::plugin::network::Proxy::None;
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

#[test]
fn a_job_owner_without_a_user_entry_never_lends_a_group_that_shares_its_number() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: acting for another uid needs root");
        return;
    }
    let dir = ferry_tests::fixtures::shared_dir();
    let uid = 3_999_999_998;
    let path = dir.path().join("made-for-a-stranger");
    ferry::identity::as_owner(uid, || {
        std::fs::write(&path, b"x")
            .map_err(|e| ferry::TransferError::local_file("write-failed", &e, "test file"))
    })
    .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), uid);
    assert_eq!(
        meta.gid(),
        ferry::identity::NO_GROUP,
        "the file was created with group {} (the owner's uid as a gid)",
        meta.gid()
    );
}

/// Sends one request on `stream` and reads the answer's head (and what
/// follows of it so far).
fn request_on(stream: &mut UnixStream, method: &str, path: &str, body: &str) -> String {
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// One request on a fresh connection, read to its end.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = request_on(&mut stream, method, path, body);
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    answer.push_str(&rest);
    answer
}

#[test]
fn a_job_stream_stops_reaching_its_former_owner_after_take_ownership() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating throw-away users needs root");
        return;
    }
    let Some(mallory) = TestUser::create("se", &[]) else {
        eprintln!("skipped: useradd is not available");
        return;
    };
    let (daemon, mut child) = start_daemon("", 4096);
    let socket = daemon.socket.clone();
    // Mallory creates a job and follows it.
    let (id, mut events) = mallory.on_thread(move || {
        let created = request(&socket, "POST", "/v1/jobs", "{}");
        let id = created
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{created}"))
            .to_string();
        let mut events = UnixStream::connect(&socket).unwrap();
        events
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = request_on(&mut events, "GET", &format!("/v1/jobs/{id}/events"), "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        (id, events)
    });
    // Root takes the job and changes it.
    let taken = request(
        &daemon.socket,
        "POST",
        &format!("/v1/jobs/{id}/take-ownership"),
        "",
    );
    assert!(taken.starts_with("HTTP/1.1 2"), "{taken}");
    let renamed = request(
        &daemon.socket,
        "PATCH",
        &format!("/v1/jobs/{id}"),
        r#"{"name":"root's secret plan"}"#,
    );
    assert!(renamed.starts_with("HTTP/1.1 2"), "{renamed}");
    // Mallory's stream ends without a word of it (keep-alive comments
    // aside; the safety net is 60 s of stream).
    let started = std::time::Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match events.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => break false,
        }
        assert!(
            !seen.contains("\"owner\":0"),
            "the former owner saw the new owner's events: {seen}"
        );
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
    };
    assert!(ended, "the stream went on after the job was taken: {seen}");
    terminate_pid(child.id());
    let _ = child.wait();
}

/// A small, seeded generator (xorshift64*), so a failing run can be replayed
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// One generated request: method, path, extra headers and body, from the
/// real route table's shapes, mutated.
/// The second value says whether the request's framing promises more than
/// it sends (the client then closes its side, as a client that gave up).
fn fuzz_request(rng: &mut Rng, victim: &str, own: &str) -> (Vec<u8>, bool) {
    let methods = [
        "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "G\x01T", "",
    ];
    let ids = [
        victim,
        own,
        "00000000-0000-0000-0000-000000000000",
        "..%2f..%2fetc%2fpasswd",
        "%00",
        "🦀",
        "",
        "a/b/c",
    ];
    let routes = [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/files",
        "/v1/jobs/{id}/resume",
        "/v1/jobs/{id}/suspend",
        "/v1/jobs/{id}/complete",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/take-ownership",
        "/v1/jobs/{id}/reply",
        "/v1/jobs?all-users=true",
        "/v1/health",
        "/v1/plugins",
        "/v1/plugins/reload",
        "/v1/metrics",
        "/v1/openapi.json",
        "/v1/../v1/jobs",
        "//v1/jobs",
        "/v1/jobs/{id}/{id}",
        "*",
    ];
    let values = [
        "null",
        "0",
        "-1",
        "18446744073709551616",
        "1e308",
        "true",
        "\"\"",
        "\"x\"",
        "\"http://127.0.0.1:1/f\"",
        "\"/etc/shadow\"",
        "\"/tmp/ferry-fuzz/a\"",
        "\"relative\"",
        "\"upload\"",
        "\"foreground\"",
        "[]",
        "{}",
        "[{\"name\":\"a\",\"value\":\"b\"}]",
        "\"\\u0000\"",
    ];
    let keys = [
        "type",
        "name",
        "description",
        "priority",
        "remote",
        "local",
        "files",
        "headers",
        "credentials",
        "retry-delay-secs",
        "no-progress-timeout-secs",
        "notify-command",
        "protocol",
        "reply-processor",
        "sha256",
        "ranges",
    ];
    let method = rng.pick(&methods);
    let path = rng.pick(&routes).replace("{id}", rng.pick(&ids));
    let body = match rng.below(4) {
        0 => String::new(),
        1 => {
            let fields: Vec<String> = (0..rng.below(5))
                .map(|_| format!("\"{}\":{}", rng.pick(&keys), rng.pick(&values)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        2 => (0..rng.below(200))
            .map(|_| (rng.next() as u8) as char)
            .collect(),
        _ => "{\"name\":".repeat(rng.below(3000)),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n");
    let framing = rng.below(6);
    match framing {
        0 => head.push_str(&format!(
            "Content-Length: {}\r\n",
            body.len() + rng.below(3)
        )),
        1 => head.push_str("Transfer-Encoding: chunked\r\n"),
        2 => head.push_str(&format!("X-Big: {}\r\n", "a".repeat(rng.below(20_000)))),
        3 => head.push_str("Content-Type: application/json\r\n"),
        _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
    }
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body.as_bytes());
    (bytes, framing <= 1)
}

/// Sends `request` and returns the status of the answer (0 when the daemon
/// closed the connection without one).
fn send_raw(socket: &Path, (request, give_up): (Vec<u8>, bool)) -> u16 {
    let mut stream = UnixStream::connect(socket).expect("the daemon accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(&request);
    if give_up {
        // Nothing more is coming: a body shorter than it said ends here.
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The API fuzzing run (finding 15): generated requests against a real
/// daemon's router, from a user other than the victim's owner when run as
/// root. The default run sends 2,000 (a few seconds); the recorded
/// benchmark-style run sends 100,000:
/// `FERRY_FUZZ_REQUESTS=100000 cargo test -p ferry-tests --test security api_fuzz -- --nocapture`
/// (`FERRY_FUZZ_SEED` changes the sequence).
#[test]
fn api_fuzz() {
    let total: usize = std::env::var("FERRY_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("FERRY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let root = nix::unistd::geteuid().is_root();
    let fuzzer = if root {
        TestUser::create("sf", &[])
    } else {
        None
    };
    if fuzzer.is_none() {
        eprintln!("note: not root; the fuzzing requests come from the test's own user");
    }
    let (daemon, mut child) = start_daemon("", 4096);
    let victim_body = request(
        &daemon.socket,
        "POST",
        "/v1/jobs",
        r#"{"name":"victim","description":"must not change"}"#,
    );
    let id_of = |answer: &str| {
        answer
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string()
    };
    let victim = id_of(&victim_body);
    let victim_before = request(&daemon.socket, "GET", &format!("/v1/jobs/{victim}"), "");
    let socket = daemon.socket.clone();
    let run = move || {
        let own = id_of(&request(&socket, "POST", "/v1/jobs", "{}"));
        let mut rng = Rng(seed);
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        let started = std::time::Instant::now();
        for _ in 0..total {
            let status = send_raw(&socket, fuzz_request(&mut rng, &victim, &own));
            *statuses.entry(status).or_default() += 1;
        }
        (statuses, started.elapsed())
    };
    let victim = id_of(&victim_body);
    let (statuses, took) = match &fuzzer {
        Some(user) => user.on_thread(run),
        None => run(),
    };
    eprintln!("api_fuzz: {total} requests, seed {seed:#x}, {took:?}; statuses {statuses:?}");
    assert!(child.try_wait().unwrap().is_none(), "the daemon died");
    let server_errors: usize = statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        server_errors,
        0,
        "5xx answers: {statuses:?}\n{}",
        daemon.log()
    );
    assert!(list_jobs(&daemon.socket).starts_with("HTTP/1.1 200"));
    if fuzzer.is_some() {
        let victim_after = request(&daemon.socket, "GET", &format!("/v1/jobs/{victim}"), "");
        let body = |a: &str| a.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        assert_eq!(
            body(&victim_before),
            body(&victim_after),
            "another user's job changed"
        );
    }
    terminate_pid(child.id());
    let _ = child.wait();
}

/// Finding 16: the plugin bounds reach a real daemon from its configuration
/// file. A third-party plugin in the daemon's plugins directory loops on
/// host calls; `call-cpu-limit-secs = 1` stops it, and the job says so.
#[test]
fn plugin_bounds_from_the_configuration_file_stop_a_hostile_plugin_in_a_real_daemon() {
    let mut daemon = Daemon::new("");
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        config.replace(
            "[plugins]\n",
            "[plugins]\ncall-cpu-limit-secs = 1\nlog-burst = 5\n",
        ),
    )
    .unwrap();
    let plugins = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (manifest, wasm) = ferry_tests::fixtures::hostile_plugin();
    std::fs::write(plugins.join("hostile.toml"), manifest).unwrap();
    std::fs::write(plugins.join("hostile.wasm"), wasm).unwrap();
    daemon.start(ferry());
    let dest = daemon.dir.path().join("out.bin");
    let id = daemon.create_download(ferry(), &[("hostile://spin-host/", &dest)]);
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = ferry_tests::daemon::wait_for_job(&daemon, ferry(), &id, |j| !j["error"].is_null());
    assert_eq!(job["error"]["code"], "plugin-deadline", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("budget")),
        "{job}"
    );
    // The daemon goes on answering.
    daemon.run(ferry(), &["list", "--json"]).ok();
}
