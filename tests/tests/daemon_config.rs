//! Security-relevant settings reach the daemon from its configuration file:
//! each test starts a real daemon with the setting in the file it reads and
//! shows the setting in force through the socket or the CLI (issue 12,
//! finding 16): job quotas, files per job, request size, proxy, bandwidth
//! limit, header and in-flight bounds of plugin calls. Settings tested
//! elsewhere this way: plugin grants (`daemon_cli`, `contract`,
//! `uploads_e2e`), the admin group (`local_users`), the API connection
//! bounds, the call budget and log burst (`security`), the CA bundle (`tls`).

use ferry_tests::daemon::Daemon;
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// One request on a fresh connection: the status and the whole answer.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("the daemon accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
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
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Replaces the harness's `[network]` line `proxy = "none"` in `daemon`'s
/// configuration file with `lines`.
fn set_network(daemon: &Daemon, lines: &str) {
    let text = std::fs::read_to_string(&daemon.config).expect("the configuration");
    let line = "[network]\nproxy = \"none\"\n";
    assert!(text.contains(line), "the harness's configuration changed");
    let text = text.replace(line, &format!("[network]\n{lines}\n"));
    std::fs::write(&daemon.config, text).expect("write the configuration");
}

#[test]
fn the_job_quota_of_the_configuration_file_answers_429() {
    // The machine's quota counts root's jobs too (the per-user one does not).
    let mut daemon = Daemon::new("\n[limits]\nmax-jobs-per-machine = 2\n");
    daemon.start(ferry());
    for _ in 0..2 {
        let (status, answer) = request(&daemon.socket, "POST", "/v1/jobs", "{}");
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = request(&daemon.socket, "POST", "/v1/jobs", "{}");
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("too-many-jobs-per-machine"), "{answer}");
}

/// Root is exempt from the per-user quota: as root, the jobs are created by
/// `nobody` (65534), through the same socket.
#[test]
fn the_per_user_job_quota_of_the_configuration_file_refuses_the_next_job() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mut daemon = Daemon::new("\n[limits]\nmax-jobs-per-user = 2\n");
    daemon.start(ferry());
    let root = nix::unistd::geteuid().is_root();
    if root {
        // The socket is in the test's directory: let the other user reach it.
        std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let create = || {
        let mut command = daemon.command(ferry());
        command.args(["--no-start", "create", "--json"]);
        if root {
            command.uid(65534).gid(65534);
        }
        ferry_tests::daemon::Run::from(command.output().expect("run the ferry binary"))
    };
    for _ in 0..2 {
        create().ok();
    }
    let refused = create();
    assert_ne!(refused.status, 0);
    assert_eq!(
        refused.json()["error"]["code"],
        "too-many-jobs-per-user",
        "{}",
        refused.stdout
    );
}

#[test]
fn the_files_per_job_limit_of_the_configuration_file_refuses_the_next_file() {
    let mut daemon = Daemon::new("\n[limits]\nmax-files-per-job = 2\n");
    daemon.start(ferry());
    let dir = tempfile::tempdir().unwrap();
    let id = daemon.run(ferry(), &["create", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 0..2 {
        let local = dir.path().join(format!("f{n}"));
        daemon
            .run(
                ferry(),
                &[
                    "add",
                    &id,
                    &format!("http://127.0.0.1:9/f{n}"),
                    local.to_str().unwrap(),
                ],
            )
            .ok();
    }
    let local = dir.path().join("f2");
    let refused = daemon.run(
        ferry(),
        &[
            "add",
            &id,
            "http://127.0.0.1:9/f2",
            local.to_str().unwrap(),
            "--json",
        ],
    );
    assert_ne!(refused.status, 0);
    assert_eq!(
        refused.json()["error"]["code"],
        "too-many-files",
        "{}",
        refused.stdout
    );
}

#[test]
fn the_request_size_limit_of_the_configuration_file_answers_413() {
    let mut daemon = Daemon::new("max-request-bytes = 1024\n");
    daemon.start(ferry());
    // Well under the default (1 MiB), over the configured 1,024 bytes.
    let large = format!(
        "{{\"name\": \"{}\", \"description\": \"{}\"}}",
        "n".repeat(200),
        "d".repeat(1000)
    );
    let (status, answer) = request(&daemon.socket, "POST", "/v1/jobs", &large);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("body-too-large"), "{answer}");
    let (status, answer) = request(&daemon.socket, "POST", "/v1/jobs", "{\"name\": \"small\"}");
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn the_proxy_of_the_configuration_file_carries_the_requests() {
    // The "proxy" is a test server: it answers absolute-form requests by
    // path. The URL's host does not resolve, so only the proxy can answer.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(TestServer::start());
    proxy.put("/via-proxy", Resource::pattern(30_000));
    let mut daemon = Daemon::new("");
    set_network(&daemon, &format!("proxy = \"http://{}\"", proxy.addr()));
    daemon.start(ferry());
    let dest = daemon.dir.path().join("via-proxy");
    daemon
        .run(
            ferry(),
            &[
                "get",
                "http://ferry-test.invalid/via-proxy",
                dest.to_str().unwrap(),
                "--json",
            ],
        )
        .ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..30_000));
    assert!(!proxy.requests_for("/via-proxy").is_empty());
}

#[test]
fn the_bandwidth_limit_of_the_configuration_file_holds_a_download_back() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let len: u64 = 512 * 1024;
    server.put("/f", Resource::pattern(len));
    let mut daemon = Daemon::new("");
    set_network(&daemon, "proxy = \"none\"\nbandwidth-limit = 131072");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("f");
    let started = Instant::now();
    daemon
        .run(
            ferry(),
            &["get", &server.url("/f"), dest.to_str().unwrap(), "--json"],
        )
        .ok();
    let elapsed = started.elapsed();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..len));
    // 512 KiB at 128 KiB/s, less a quarter second of burst: at least 3.75 s.
    // Only a lower bound: a slow machine can only make it longer.
    assert!(
        elapsed >= Duration::from_millis(3_500),
        "took only {elapsed:?}"
    );
}

/// The plugin call bounds on host memory and sockets, from the file: a
/// third-party plugin in the daemon's plugins directory appends 64 KiB of
/// header fields, and sends 200 requests at once. `max-header-bytes =
/// 131072` lets the fields be (the default, 32 KiB, traps the call), and
/// `max-requests-in-flight = 3` lets no more than 3 requests out (the
/// default would let 16).
#[test]
fn header_and_in_flight_bounds_of_the_configuration_file_hold_a_hostile_plugin() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/big", Resource::pattern(4 << 20));
    let mut daemon = Daemon::new("\n[plugins.grants]\nhostile = [\"127.0.0.1\"]\n");
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    assert!(text.contains("[plugins]\n"));
    std::fs::write(
        &daemon.config,
        text.replace(
            "[plugins]\n",
            "[plugins]\nmax-header-bytes = 131072\nmax-requests-in-flight = 3\n",
        ),
    )
    .unwrap();
    let plugins = daemon.state_dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (manifest, wasm) = ferry_tests::fixtures::hostile_plugin();
    std::fs::write(plugins.join("hostile.toml"), manifest).unwrap();
    std::fs::write(plugins.join("hostile.wasm"), wasm).unwrap();
    daemon.start(ferry());
    let failed = |url: &str| {
        let dest = daemon.dir.path().join(format!("out{}", url.len()));
        let id = daemon.create_download(ferry(), &[(url, &dest)]);
        daemon.run(ferry(), &["resume", &id]).ok();
        let job =
            ferry_tests::daemon::wait_for_job(&daemon, ferry(), &id, |j| !j["error"].is_null());
        job["error"].clone()
    };
    let numbers = |message: &str| -> Vec<usize> {
        message
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };

    // 64 KiB of fields: past the default (the call traps), within the file's.
    let fields = failed("hostile://fields/");
    assert_eq!(fields["message"], "held 65536 bytes of headers", "{fields}");

    let requests = failed(&format!("hostile://requests/{}", server.url("/big")));
    let message = requests["message"].as_str().unwrap_or("");
    let [sent, refused] = numbers(message)[..] else {
        panic!("{requests}");
    };
    assert!(sent <= 3, "{sent} requests in flight at once: {requests}");
    assert_eq!(sent + refused, 200, "{requests}");
}
