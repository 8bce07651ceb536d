//! HTTPS through a real daemon: certificates are verified by default, the
//! operator's CA bundle (`[network] ca-bundle`, from the daemon's
//! configuration file) is trusted, a certificate refused is a fatal
//! `transport` error, HTTP/2 is negotiated by ALPN and resumes like
//! HTTP/1.1, an https → http redirect carries no credentials, and loopback
//! tests ignore the machine's proxy variables. Every server is a loopback
//! one this test starts, with a CA this test makes.

use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::server::{Resource, TestServer, pattern_bytes};
use ferry_tests::tls_server::{Alpn, ServerIdentity, TestCa, TlsServer};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// A plain loopback server and an HTTPS front on it, on their own runtime
/// (the CLI calls below block).
struct Https {
    backend: TestServer,
    front: TlsServer,
    runtime: tokio::runtime::Runtime,
}

fn https(identity: ServerIdentity, alpn: Alpn) -> Https {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let backend = runtime.block_on(TestServer::start());
    let front = runtime.block_on(TlsServer::start(backend.addr(), identity, alpn));
    Https {
        backend,
        front,
        runtime,
    }
}

/// Adds `lines` to the `[network]` section of `daemon`'s configuration file
/// (the harness's own lines stay).
fn add_network(daemon: &Daemon, lines: &str) {
    let text = std::fs::read_to_string(&daemon.config).expect("the configuration");
    let marker = "[network]\nproxy = \"none\"\n";
    assert!(
        text.contains(marker),
        "the harness's configuration changed: {text}"
    );
    let text = text.replace(marker, &format!("{marker}{lines}\n"));
    std::fs::write(&daemon.config, text).expect("write the configuration");
}

fn daemon_with_network(lines: &str) -> Daemon {
    let daemon = Daemon::new("");
    add_network(&daemon, lines);
    daemon
}

/// A daemon trusting `ca` through `ca-bundle` (a file beside its
/// configuration file), with `lines` in `[network]` besides.
fn daemon_trusting(ca: &TestCa, lines: &str) -> Daemon {
    let daemon = Daemon::new("");
    let bundle = daemon.dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.pem()).expect("write the CA bundle");
    add_network(
        &daemon,
        &format!("ca-bundle = \"{}\"\n{lines}", bundle.display()),
    );
    daemon
}

/// Downloads `url` to `dest` in a new job with `set` applied (`ferry set`
/// options), until the job is `transferred` (then completes it) or `error`
/// (bounded); returns the job as `ferry info` shows it then.
fn fetch(daemon: &Daemon, url: &str, dest: &Path, set: &[&str]) -> serde_json::Value {
    let id = daemon.create_download(ferry(), &[(url, dest)]);
    if !set.is_empty() {
        let mut args = vec!["set", id.as_str()];
        args.extend_from_slice(set);
        daemon.run(ferry(), &args).ok();
    }
    daemon.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(daemon, ferry(), &id, |job| {
        ["transferred", "error"].contains(&job["state"].as_str().unwrap_or(""))
    });
    if job["state"] == "transferred" {
        daemon.run(ferry(), &["complete", &id]).ok();
    }
    job
}

/// A download from a server whose certificate is refused: the job in
/// `error` with a fatal `transport` `tls-certificate`, nothing written, and
/// the server saw the handshake fail (never a request).
fn assert_refused(daemon: &Daemon, server: &Https) {
    let dest = daemon.dir.path().join("refused.bin");
    let job = fetch(daemon, &server.front.url("/f"), &dest, &[]);
    let error = &job["error"];
    assert_eq!(job["state"], "error", "{job}\nlog: {}", daemon.log());
    assert_eq!(error["code"], "tls-certificate", "{error}");
    assert_eq!(error["class"], "fatal", "{error}");
    assert_eq!(error["context"], "transport", "{error}");
    assert!(!dest.exists());
    assert!(server.front.failed_handshakes() >= 1);
    assert!(server.front.protocols().is_empty());
    assert!(server.backend.requests().is_empty());
}

#[test]
fn verification_is_on_by_default_a_certificate_of_an_unknown_ca_is_a_fatal_transport_error() {
    let ca = TestCa::new("ferry test CA");
    let server = https(ca.server_identity(&["127.0.0.1"]), Alpn::Both);
    server.backend.put("/f", Resource::pattern(10_000));
    // No ca-bundle: the system's roots only, which know nothing of this CA.
    let mut daemon = daemon_with_network("");
    daemon.start(ferry());
    assert_refused(&daemon, &server);
}

#[test]
fn a_certificate_of_another_ca_than_the_bundle_is_a_fatal_transport_error() {
    let trusted = TestCa::new("ferry test CA");
    let other = TestCa::new("another CA");
    let server = https(other.server_identity(&["127.0.0.1"]), Alpn::Both);
    server.backend.put("/f", Resource::pattern(10_000));
    let mut daemon = daemon_trusting(&trusted, "");
    daemon.start(ferry());
    assert_refused(&daemon, &server);
}

#[test]
fn a_certificate_for_another_name_is_a_fatal_transport_error() {
    let ca = TestCa::new("ferry test CA");
    // Signed by the trusted CA, but for a name the URL does not use.
    let server = https(
        ca.server_identity(&["files.ferry-test.invalid"]),
        Alpn::Both,
    );
    server.backend.put("/f", Resource::pattern(10_000));
    let mut daemon = daemon_trusting(&ca, "");
    daemon.start(ferry());
    assert_refused(&daemon, &server);
}

/// Downloads over HTTPS with `alpn` offered, the connection dropped once
/// part-way: the job resumes from the bytes it kept with a `Range` request
/// and the file is byte-identical. Returns the protocols negotiated.
fn download_and_resume(alpn: Alpn, system_roots: bool) -> Vec<String> {
    let len: u64 = 3 * 1024 * 1024;
    let ca = TestCa::new("ferry test CA");
    let server = https(ca.server_identity(&["127.0.0.1", "localhost"]), alpn);
    server.backend.put(
        "/big.bin",
        Resource::pattern(len).drop_after_times(1024 * 1024 + 7, 1),
    );
    let network = if system_roots {
        ""
    } else {
        "system-roots = false"
    };
    let mut daemon = daemon_trusting(&ca, network);
    daemon.start(ferry());
    let dest = daemon.dir.path().join("big.bin");
    // The drop is a transient error; the job retries after the shortest
    // retry delay there is.
    let job = fetch(
        &daemon,
        &server.front.url("/big.bin"),
        &dest,
        &["--retry-delay", "5"],
    );
    assert_eq!(job["state"], "transferred", "{job}\nlog: {}", daemon.log());
    assert_eq!(
        std::fs::read(&dest).expect("the download"),
        pattern_bytes(0..len)
    );
    let gets: Vec<_> = server
        .backend
        .requests_for("/big.bin")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(gets.len() >= 2, "the drop made a second request: {gets:?}");
    let resumed = gets
        .last()
        .and_then(|r| r.header("range"))
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<u64>().ok())
        .expect("the last request asks for a range from an offset");
    assert!(
        resumed > 0 && resumed <= 1024 * 1024 + 7,
        "resumed from {resumed}"
    );
    assert!(
        server.backend.bytes_sent("/big.bin") < 2 * len,
        "the bytes kept were not fetched again"
    );
    server.front.protocols()
}

#[test]
fn the_configured_ca_is_trusted_and_http1_downloads_and_resumes() {
    let protocols = download_and_resume(Alpn::Http1, true);
    assert!(!protocols.is_empty());
    assert!(protocols.iter().all(|p| p == "http/1.1"), "{protocols:?}");
}

#[test]
fn http2_is_negotiated_by_alpn_and_downloads_and_resumes_like_http1() {
    // The server speaks h2 only: a client without HTTP/2 fails the handshake.
    let protocols = download_and_resume(Alpn::Http2, true);
    assert!(!protocols.is_empty());
    assert!(protocols.iter().all(|p| p == "h2"), "{protocols:?}");
    // Offered both, the client chooses HTTP/2; and the bundle alone
    // (system-roots = false) is enough to trust the server.
    let protocols = download_and_resume(Alpn::Both, false);
    assert!(!protocols.is_empty());
    assert!(protocols.iter().all(|p| p == "h2"), "{protocols:?}");
}

#[test]
fn an_https_to_http_redirect_never_carries_credentials() {
    let ca = TestCa::new("ferry test CA");
    let secure = https(ca.server_identity(&["127.0.0.1"]), Alpn::Both);
    let plain = secure.runtime.block_on(ferry_tests::server::start_with(
        "/f",
        Resource::pattern(20_000),
    ));
    secure
        .backend
        .put("/f", Resource::redirect(302, plain.url("/f")));
    let mut daemon = daemon_trusting(&ca, "");
    daemon.start(ferry());
    let dest = daemon.dir.path().join("f");
    let job = fetch(
        &daemon,
        &secure.front.url("/f"),
        &dest,
        &["--user", "me:s3cret", "-H", "X-Owner: mine"],
    );
    let first = secure.backend.requests_for("/f");
    assert!(
        first.iter().any(|r| r
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))),
        "the credentials went to their own origin: {first:?}"
    );
    for request in plain.requests() {
        assert_eq!(request.header("authorization"), None, "{request:?}");
        assert_eq!(request.header("x-owner"), None, "{request:?}");
        assert_eq!(request.header("cookie"), None, "{request:?}");
    }
    // The plugin follows the downgrade, without them.
    assert_eq!(job["state"], "transferred", "{job}");
    assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..20_000));
    assert!(!plain.requests().is_empty());
}

/// Starts `daemon` with every proxy variable of the environment pointing at
/// `proxy` and `no_proxy` empty.
fn start_with_proxy_variables(daemon: &Daemon, proxy: &str) -> Stopped {
    let mut command = daemon.command(ferry());
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env(var, proxy);
    }
    command.env("no_proxy", "").env("NO_PROXY", "");
    let log = std::fs::File::create(daemon.dir.path().join("daemon.out")).unwrap();
    let child = Stopped(
        command
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon"),
    );
    wait_until_answering(&daemon.socket);
    child
}

/// With every proxy variable pointing at a closed loopback port, a daemon
/// that follows them (`proxy = "system"`) cannot reach the loopback servers,
/// and the test daemons' `proxy = "none"` reaches them over HTTPS and HTTP.
#[test]
fn loopback_tests_ignore_the_machines_proxy_variables() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let bogus = format!("http://{closed}");
    let ca = TestCa::new("ferry test CA");
    let server = https(ca.server_identity(&["127.0.0.1"]), Alpn::Both);
    server.backend.put("/f", Resource::pattern(50_000));

    // The variables do reach a daemon that follows them.
    let follows = Daemon::new("");
    let text = std::fs::read_to_string(&follows.config).unwrap();
    std::fs::write(
        &follows.config,
        text.replace("proxy = \"none\"", "proxy = \"system\""),
    )
    .unwrap();
    let child = start_with_proxy_variables(&follows, &bogus);
    let id = follows.create_download(
        ferry(),
        &[(&server.backend.url("/f"), &follows.dir.path().join("f"))],
    );
    follows.run(ferry(), &["resume", &id]).ok();
    let job = wait_for_job(&follows, ferry(), &id, |job| {
        job["state"] != "queued" && job["state"] != "transferring"
    });
    assert_eq!(job["state"], "transient_error", "{job}");
    assert_eq!(job["error"]["context"], "transport", "{job}");
    assert!(server.backend.requests().is_empty());
    drop(child);

    let daemon = daemon_trusting(&ca, "");
    let child = start_with_proxy_variables(&daemon, &bogus);
    for url in [server.front.url("/f"), server.backend.url("/f")] {
        let dest: PathBuf = daemon.dir.path().join(format!("f{}", url.len()));
        let job = fetch(&daemon, &url, &dest, &[]);
        assert_eq!(
            job["state"],
            "transferred",
            "{url}: {job}\nlog: {}",
            daemon.log()
        );
        assert_eq!(std::fs::read(&dest).unwrap(), pattern_bytes(0..50_000));
    }
    drop(child);
}

/// A child process SIGTERMed and reaped when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        ferry_tests::daemon::terminate_pid(self.0.id());
        let _ = self.0.wait();
    }
}

fn wait_until_answering(socket: &Path) {
    for _ in 0..2400 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the daemon does not answer at {}", socket.display());
}

#[test]
fn a_ca_bundle_that_cannot_be_read_stops_the_daemon_at_start() {
    for (contents, why) in [
        (None, "No such file"),
        (Some("not PEM\n"), "no PEM certificate"),
    ] {
        let daemon = Daemon::new("");
        let bundle = daemon.dir.path().join("ca.pem");
        if let Some(contents) = contents {
            std::fs::write(&bundle, contents).unwrap();
        }
        add_network(&daemon, &format!("ca-bundle = \"{}\"", bundle.display()));
        let run = daemon.run(ferry(), &["daemon"]);
        assert_ne!(run.status, 0, "{} {}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("ca-bundle") && run.stderr.contains(why),
            "{}",
            run.stderr
        );
        assert!(!daemon.socket.exists());
    }
    // Nothing to trust at all is refused too.
    let daemon = daemon_with_network("system-roots = false");
    let run = daemon.run(ferry(), &["daemon"]);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("system-roots"), "{}", run.stderr);
}

/// The same checks below the daemon: the runtime's network with the bundle
/// alone trusted refuses a certificate of that CA that has expired, as the
/// fatal `transport` `tls-certificate`, and takes a valid one.
#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_refuses_an_expired_certificate_of_a_trusted_ca() {
    use ferry::plugin::network::{NetworkConfig, Proxy};
    use ferry::plugin::{JobContext, PluginRuntime, RuntimeConfig};
    use ferry_tests::fixtures::{Target, loopback, request};
    let ca = TestCa::new("ferry test CA");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let runtime = PluginRuntime::with_builtins(RuntimeConfig {
        network: NetworkConfig {
            allow_private_addresses: loopback(),
            proxy: Proxy::None,
            ca_bundle: Some(bundle),
            system_roots: false,
            ..NetworkConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("the runtime starts");
    let backend = TestServer::start().await;
    backend.put("/f", Resource::pattern(5_000));
    let expired = TlsServer::start(
        backend.addr(),
        ca.expired_server_identity(&["127.0.0.1"]),
        Alpn::Both,
    )
    .await;
    let target = Target::new();
    let (result, _) = target
        .download(
            &runtime,
            request(&expired.url("/f"), 0),
            0,
            &JobContext::new("tls"),
        )
        .await;
    let error = result.expect_err("an expired certificate is refused");
    assert_eq!(error.code, "tls-certificate", "{error}");
    assert_eq!(error.class, ferry::ErrorClass::Fatal, "{error}");
    assert_eq!(error.context, ferry::ErrorContext::Transport, "{error}");
    assert!(backend.requests().is_empty());

    let valid = TlsServer::start(
        backend.addr(),
        ca.server_identity(&["127.0.0.1"]),
        Alpn::Both,
    )
    .await;
    let target = Target::new();
    target
        .download(
            &runtime,
            request(&valid.url("/f"), 0),
            0,
            &JobContext::new("tls"),
        )
        .await
        .0
        .expect("a valid certificate of the bundle's CA is trusted");
    assert_eq!(target.content(), pattern_bytes(0..5_000));
}
