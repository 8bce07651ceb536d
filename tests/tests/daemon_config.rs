//! Security-relevant settings reach the daemon from its configuration file:
//! each test starts a real daemon with the setting in the file it reads and
//! shows the setting in force through the socket, the CLI or the daemon's
//! log (issue 12, finding 16): job quotas, files and ranges per job file,
//! request size, API connection caps, proxy, bandwidth limit, network
//! timeouts, redirects, internal addresses, the plugins and compiled-code
//! directories, and the host's bounds on plugin calls (load-time call,
//! resource table, header bytes, requests in flight, log burst and rate).
//! Settings tested elsewhere this way: plugin grants (`daemon_cli`,
//! `contract`, `uploads_e2e`), the admin group (`local_users`), the
//! header-read and idle timeouts and the call budget (`security`), the CA
//! bundle and system roots (`tls`).

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
    use std::os::unix::process::CommandExt;
    let mut daemon = Daemon::new("\n[limits]\nmax-jobs-per-user = 2\n");
    daemon.start(ferry());
    let root = nix::unistd::geteuid().is_root();
    // The other user runs a copy they can reach, against a socket they can.
    let binary = if root {
        daemon.shared_binary(ferry())
    } else {
        ferry().to_path_buf()
    };
    let create = || {
        let mut command = daemon.command(&binary);
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

/// Puts the hostile test plugin (and `more`, name → (manifest, component))
/// in `dir`, a plugins directory.
fn install_plugins(dir: &Path, more: &[(&str, (String, Vec<u8>))]) {
    std::fs::create_dir_all(dir).unwrap();
    let hostile = ("hostile", ferry_tests::fixtures::hostile_plugin());
    for (name, (manifest, wasm)) in std::iter::once(&hostile).chain(more) {
        std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
        std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    }
}

/// Resumes a download of `url` and waits (bounded) for its first error.
fn first_error(daemon: &Daemon, url: &str) -> serde_json::Value {
    static DOWNLOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DOWNLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dest = daemon.dir.path().join(format!("out-{n}"));
    let id = daemon.create_download(ferry(), &[(url, &dest)]);
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = ferry_tests::daemon::wait_for_job(daemon, ferry(), &id, |j| !j["error"].is_null());
    job["error"].clone()
}

#[test]
fn the_ranges_per_file_limit_of_the_configuration_file_refuses_more_ranges() {
    let mut daemon = Daemon::new("\n[limits]\nmax-ranges-per-file = 3\n");
    daemon.start(ferry());
    let id = daemon.run(ferry(), &["create", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let add = |name: &str, ranges: &[&str]| {
        let local = daemon.dir.path().join(name);
        let mut args = vec![
            "add",
            &id,
            "http://127.0.0.1:9/f",
            local.to_str().unwrap(),
            "--json",
        ];
        for range in ranges {
            args.extend(["--range", range]);
        }
        daemon.run(ferry(), &args)
    };
    // Three ranges are within the file's bound (and far under the default, 500).
    add("three", &["0:10", "20:10", "40:10"]).ok();
    let refused = add("four", &["0:10", "20:10", "40:10", "60:10"]);
    assert_ne!(refused.status, 0);
    assert_eq!(
        refused.json()["error"]["code"],
        "too-many-ranges",
        "{}",
        refused.stdout
    );
}

/// `load-call-limit-ms` and the plugins `dir` from the file: a
/// `ferry:transfer@0.1.0` plugin whose load-time call (`supported`) never
/// returns, in the directory the file names, is stopped at the file's 300
/// ms (not the default 5 s, which the reason would name), the daemon
/// starts, lists it as refused with the code, and loads the other plugin
/// of that directory.
#[test]
fn the_load_call_limit_of_the_configuration_file_refuses_a_plugin_that_hangs_at_load() {
    let mut daemon = Daemon::new("");
    let dir = daemon.dir.path().join("operator-plugins");
    install_plugins(
        &dir,
        &[(
            "hostile-legacy",
            ferry_tests::fixtures::hostile_legacy_plugin(),
        )],
    );
    daemon.set_plugins(&format!(
        "dir = \"{}\"\nload-call-limit-ms = 300",
        dir.display()
    ));
    daemon.start(ferry());
    let list = daemon.run(ferry(), &["plugins", "--json"]).ok().json();
    let plugin = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
            .clone()
    };
    let legacy = plugin("hostile-legacy");
    assert_eq!(legacy["state"], "refused", "{legacy}");
    // The plugin's fault, by its own code (not its manifest's).
    assert_eq!(legacy["code"], "plugin-deadline", "{legacy}");
    let reason = legacy["reason"].as_str().unwrap_or("");
    assert!(reason.contains("300ms at load time"), "{legacy}");
    assert_eq!(plugin("hostile")["state"], "loaded", "{list}");
}

/// `max-table-entries` from the file: 64 resources a call. The hostile
/// plugin's `table` mode (10,000 header fields of 30 KB) traps at the
/// table; so does its `requests` mode, whose 200 unread responses would
/// fit the default table (1,024) and the file's in-flight bound (200):
/// the table stopped it, and the server never saw 200 requests.
#[test]
fn the_table_bound_of_the_configuration_file_stops_a_hostile_plugin() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/big", Resource::pattern(1 << 20));
    let mut daemon = Daemon::new("\n[plugins.grants]\nhostile = [\"127.0.0.1\"]\n");
    install_plugins(&daemon.state_dir.join("plugins"), &[]);
    daemon.set_plugins("max-table-entries = 64\nmax-requests-in-flight = 200");
    daemon.start(ferry());

    let table = first_error(&daemon, "hostile://table/");
    assert_eq!(table["code"], "plugin-trap", "{table}");
    assert!(
        table["message"]
            .as_str()
            .is_some_and(|m| m.contains("resource table")),
        "{table}"
    );
    let requests = first_error(
        &daemon,
        &format!("hostile://requests/{}", server.url("/big")),
    );
    assert_eq!(requests["code"], "plugin-trap", "{requests}");
    assert!(
        requests["message"]
            .as_str()
            .is_some_and(|m| m.contains("resource table")),
        "{requests}"
    );
    let seen = server.requests_for("/big").len();
    assert!(seen <= 64, "{seen} requests sent past a table of 64");
    // The daemon goes on serving.
    daemon.run(ferry(), &["list", "--json"]).ok();
}

/// `log-burst` and `log-lines-per-second` from the file: a plugin that
/// writes log lines in a loop until its 2 s call budget is spent gets 3 at
/// once and then 1 a second into the daemon's log (each one line); the
/// rest are dropped and counted, and the daemon's log says how many.
#[test]
fn the_log_rate_of_the_configuration_file_caps_a_plugin_log_flood() {
    let mut daemon = Daemon::new("");
    install_plugins(&daemon.state_dir.join("plugins"), &[]);
    daemon.set_plugins("call-cpu-limit-secs = 2\nlog-burst = 3\nlog-lines-per-second = 1");
    daemon.start(ferry());
    let started = Instant::now();
    let error = first_error(&daemon, "hostile://spin-log/");
    // An upper bound of the call's wall clock: it only grows on a slow machine.
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(error["code"], "plugin-deadline", "{error}");

    let log = daemon.log();
    let written: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("with a forged second line"))
        .collect();
    assert!(
        written.iter().all(|l| l.contains("a line")),
        "a plugin's line was split: {written:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("with a forged")),
        "{log}"
    );
    // The burst, then at least one more in the 2 s the call ran at least,
    // and no more than the rate allows over the whole wait.
    let most = 3 + elapsed.ceil() as usize + 1;
    assert!(
        written.len() >= 4 && written.len() <= most,
        "{} plugin log lines over {elapsed:.1} s, expected 4..={most}: {log}",
        written.len()
    );
    let dropped: u64 = log
        .lines()
        .find(|l| l.contains("plugin log lines over its rate were dropped"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of dropped lines in the log: {log}"));
    assert!(dropped > 100, "only {dropped} lines dropped");
}

/// `allow-private-addresses` on its own: with the built-in `http` plugin
/// granted every host by name but no internal range allowed, a download
/// from a loopback server (by address or by a name that resolves there) is
/// the fatal policy error `address-not-allowed` and the server sees
/// nothing; the same file with `allow-private-addresses = ["127.0.0.0/8"]`
/// downloads it.
#[test]
fn allow_private_addresses_of_the_configuration_file_opens_loopback() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/f", Resource::pattern(10_000));
    let grant = "\n[plugins.grants]\nhttp = [\"*\"]\n";

    let mut refused = Daemon::without_private_addresses(grant);
    refused.start(ferry());
    let port = server.addr().port();
    for url in [server.url("/f"), format!("http://localhost:{port}/f")] {
        let error = first_error(&refused, &url);
        assert_eq!(error["code"], "address-not-allowed", "{url}: {error}");
        assert_eq!(error["class"], "fatal", "{url}: {error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("allow-private-addresses")),
            "{url}: {error}"
        );
    }
    assert!(server.requests().is_empty(), "the server was reached");

    let mut allowed = Daemon::without_private_addresses(grant);
    allowed.set_plugins("allow-private-addresses = [\"127.0.0.0/8\"]");
    allowed.start(ferry());
    let dest = allowed.dir.path().join("f");
    allowed
        .run(
            ferry(),
            &["get", &server.url("/f"), dest.to_str().unwrap(), "--json"],
        )
        .ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..10_000));
}

/// `max-redirects` from the file: a server's chain of redirects is
/// followed for 2 hops and refused at the third (`too-many-redirects`; the
/// default would follow 10).
#[test]
fn the_redirect_limit_of_the_configuration_file_stops_a_redirect_chain() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/f", Resource::pattern(1_000));
    for (from, to) in [("/r0", "/r1"), ("/r1", "/r2"), ("/r2", "/f")] {
        server.put(from, Resource::redirect(302, server.url(to)));
    }
    let mut daemon = Daemon::new("\n[limits]\nmax-redirects = 2\n");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("two-hops");
    daemon
        .run(
            ferry(),
            &["get", &server.url("/r1"), dest.to_str().unwrap(), "--json"],
        )
        .ok();
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..1_000));
    let error = first_error(&daemon, &server.url("/r0"));
    assert_eq!(error["code"], "too-many-redirects", "{error}");
}

/// `cache-dir` from the file: the daemon creates the directory it names
/// (0700) and keeps compiled plugins there; at the next start an entry
/// changed on disk is refused and recompiled, never run, and a directory
/// others can write is not used at all; downloads work all along.
#[test]
fn the_cache_dir_of_the_configuration_file_is_private_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/f", Resource::pattern(5_000));
    let mut daemon = Daemon::new("");
    let cache = daemon.dir.path().join("operator-cache");
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    let harness = text
        .lines()
        .find(|l| l.starts_with("cache-dir = "))
        .expect("the harness's cache-dir")
        .to_string();
    let text = text.replace(&harness, &format!("cache-dir = \"{}\"", cache.display()));
    std::fs::write(&daemon.config, text).unwrap();
    let download = |daemon: &Daemon, name: &str| {
        let dest = daemon.dir.path().join(name);
        daemon
            .run(
                ferry(),
                &["get", &server.url("/f"), dest.to_str().unwrap(), "--json"],
            )
            .ok();
        assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..5_000));
    };
    let entries = || -> Vec<std::path::PathBuf> {
        let mut list: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        list.sort();
        list
    };

    daemon.start(ferry());
    download(&daemon, "first");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory is the daemon's alone");
    let written = entries();
    assert!(
        !written.is_empty(),
        "nothing cached in the configured directory"
    );
    assert_eq!(daemon.terminate(), Some(0));

    // Change one byte of each entry's code, as an attacker or a torn write would.
    let mut tampered = Vec::new();
    for entry in &written {
        let mut bytes = std::fs::read(entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(entry, &bytes).unwrap();
        tampered.push(bytes);
    }
    daemon.start(ferry());
    download(&daemon, "second");
    let log = daemon.log();
    let refused = log
        .lines()
        .filter(|l| l.contains("cached plugin code refused, recompiling"))
        .count();
    assert_eq!(refused, written.len(), "{log}");
    for (entry, bytes) in written.iter().zip(&tampered) {
        assert_ne!(
            &std::fs::read(entry).unwrap(),
            bytes,
            "{} kept its tampered code",
            entry.display()
        );
    }
    assert_eq!(daemon.terminate(), Some(0));

    // A cache directory others may write is not used (nor changed).
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    for entry in &written {
        std::fs::write(entry, b"not compiled code").unwrap();
    }
    daemon.start(ferry());
    download(&daemon, "third");
    let log = daemon.log();
    assert!(
        log.contains("plugin code cache not used") && log.contains("lets others write it"),
        "{log}"
    );
    for entry in &written {
        assert_eq!(std::fs::read(entry).unwrap(), b"not compiled code");
    }
}

/// `first-byte-timeout-secs` and `read-timeout-secs` from the file: a
/// server that holds its answer back for 30 s (which the defaults, 120 s
/// and 60 s, would wait for) is given up on after the file's 1 s, a
/// transient error, whichever of the two timeouts is set.
#[test]
fn the_network_timeouts_of_the_configuration_file_give_up_on_a_server_that_holds_back() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put(
        "/late",
        Resource::pattern(1_000).delay_headers(Duration::from_secs(30)),
    );
    for setting in ["first-byte-timeout-secs = 1", "read-timeout-secs = 1"] {
        server.clear_requests();
        let mut daemon = Daemon::new("");
        set_network(&daemon, &format!("proxy = \"none\"\n{setting}"));
        daemon.start(ferry());
        let error = first_error(&daemon, &server.url("/late"));
        assert_eq!(
            (error["code"].as_str(), error["class"].as_str()),
            (Some("timeout"), Some("transient")),
            "{setting}: {error}"
        );
        assert!(!server.requests_for("/late").is_empty(), "{setting}");
    }
}

/// Opens `n` connections to `socket` and sends a request on each: the
/// connections the daemon kept (they answered), still open.
fn answered_connections(socket: &Path, n: usize) -> Vec<UnixStream> {
    let mut opened: Vec<UnixStream> = (0..n)
        .filter_map(|_| UnixStream::connect(socket).ok())
        .collect();
    opened.retain_mut(|stream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let sent = stream
            .write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: ferry\r\n\r\n")
            .is_ok();
        let mut head = [0u8; 9];
        sent && stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 "
    });
    opened
}

/// `max-connections-per-user` and `max-connections` from the file: of ten
/// connections one user opens, the daemon keeps 4; of ten more by a second
/// user, 2 (6 in all); root's are not counted. Without root, the test's own
/// user shows the first bound.
#[test]
fn the_connection_caps_of_the_configuration_file_hold_users_back() {
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = Daemon::new("max-connections-per-user = 4\nmax-connections = 6\n");
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.start(ferry());
    let root = nix::unistd::geteuid().is_root();
    let socket = daemon.socket.clone();
    let first = if root {
        ferry_tests::users::on_thread_as(65534, 65534, move || answered_connections(&socket, 10))
    } else {
        answered_connections(&socket, 10)
    };
    assert_eq!(first.len(), 4, "{}", daemon.log());
    assert!(daemon.log().contains("(max-connections-per-user)"));
    if !root {
        eprintln!("skipped: max-connections needs a second user (run as root)");
        return;
    }
    let socket = daemon.socket.clone();
    let second =
        ferry_tests::users::on_thread_as(65533, 65533, move || answered_connections(&socket, 10));
    assert_eq!(second.len(), 2, "{}", daemon.log());
    assert!(daemon.log().contains("(max-connections)"));
    assert_eq!(answered_connections(&daemon.socket, 10).len(), 10);
    drop((first, second));
}

/// `[plugins.grants]` refusing as well as allowing: a third-party plugin
/// granted one server (address and port) reaches it, and its request to
/// another port of the same address is the fatal `host-not-granted`,
/// unseen by that server.
#[test]
fn a_grant_of_the_configuration_file_lets_a_plugin_reach_that_host_alone() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let granted = runtime.block_on(TestServer::start());
    let other = runtime.block_on(TestServer::start());
    granted.put("/open", Resource::pattern(100));
    other.put("/secret", Resource::pattern(100));
    let mut daemon = Daemon::new(&format!(
        "\n[plugins.grants]\nhostile = [\"127.0.0.1:{}\"]\n",
        granted.addr().port()
    ));
    install_plugins(&daemon.state_dir.join("plugins"), &[]);
    daemon.start(ferry());

    let reached = first_error(
        &daemon,
        &format!("hostile://reach/{}", granted.url("/open")),
    );
    assert_eq!(reached["code"], "unexpected", "{reached}");
    assert!(
        reached["message"]
            .as_str()
            .is_some_and(|m| m.contains("let the request through: 200")),
        "{reached}"
    );
    let refused = first_error(
        &daemon,
        &format!("hostile://reach/{}", other.url("/secret")),
    );
    assert_eq!(
        (refused["code"].as_str(), refused["class"].as_str()),
        (Some("host-not-granted"), Some("fatal")),
        "{refused}"
    );
    assert!(other.requests().is_empty(), "the other server was reached");
}
