//! The loopback metrics listener (`[metrics] listen`) of a real daemon: it
//! serves over TCP the same Prometheus text as `GET /v1/metrics` on the
//! socket, only `GET /metrics`, with the API's bounds on connections; an
//! address that is not loopback, or one that cannot be bound, stops the
//! daemon at start with a stable code.

use ferry_tests::daemon::{Daemon, wait_for_job};
use ferry_tests::server::{Resource, TestServer};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

/// A loopback port free a moment ago.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The configuration lines (after `[daemon]`) making this test's user an
/// administrator (root is anyway), so `GET /v1/metrics` answers it, and
/// turning the listener on at `address`.
fn listening_on(address: &str, daemon_lines: &str) -> String {
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::effective())
        .ok()
        .flatten()
        .map(|g| g.name)
        .expect("this user's group has a name");
    format!("admin-group = \"{group}\"\n{daemon_lines}\n[metrics]\nlisten = \"{address}\"\n")
}

/// One HTTP/1.1 exchange: `request` (a method and a path) sent whole, the
/// answer read to its end (bounded). Status, head and body.
fn exchange(address: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the answer, whole");
    let answer = String::from_utf8(answer).expect("a text answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Sample name with labels → value, of a Prometheus text.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample line");
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The samples of the families a test compares exactly (counts that do not
/// move once every job has settled).
fn settled(samples: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    samples
        .iter()
        .filter(|(name, _)| {
            [
                "ferry_jobs{",
                "ferry_transferred_",
                "ferry_transfer_errors_total",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn flushes(samples: &BTreeMap<String, String>) -> u64 {
    samples["ferry_store_flushes_total"].parse().unwrap()
}

/// Runs `ferry daemon` expecting it to stop at start: its exit status and
/// what it wrote (bounded: a daemon still running after 2 minutes is killed
/// and the test fails).
fn refused_start(daemon: &Daemon) -> (i32, String) {
    let log = daemon.dir.path().join("daemon.out");
    let mut child = daemon
        .command(ferry())
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon");
    for _ in 0..2400 {
        if let Some(status) = child.try_wait().unwrap() {
            return (
                status.code().unwrap_or(-1),
                std::fs::read_to_string(&log).unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!(
        "the daemon started: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn the_loopback_listener_serves_what_the_socket_metrics_show() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/m.bin", Resource::pattern(123_456));
    server.put("/n.bin", Resource::pattern(7_000));
    server.put("/missing", Resource::status(404));
    let address = free_address();
    let mut daemon = Daemon::new(&listening_on(&address.to_string(), ""));
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    let ok = daemon.create_download(
        ferry(),
        &[
            (&server.url("/m.bin"), &downloads.path().join("m")),
            (&server.url("/n.bin"), &downloads.path().join("n")),
        ],
    );
    let bad = daemon.create_download(
        ferry(),
        &[(&server.url("/missing"), &downloads.path().join("x"))],
    );
    daemon.run(ferry(), &["resume", &ok]).ok();
    daemon.run(ferry(), &["resume", &bad]).ok();
    wait_for_job(&daemon, ferry(), &ok, |v| v["state"] == "transferred");
    wait_for_job(&daemon, ferry(), &bad, |v| v["state"] == "error");

    let (status, head, before) = exchange(address, "GET", "/metrics");
    assert_eq!(status, 200, "{head}\n{before}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (socket_status, on_socket) = runtime.block_on(async {
        let mut client = ferry::cli::client::Client::connect(&daemon.socket)
            .await
            .unwrap();
        client
            .raw(http::Method::GET, "/v1/metrics", bytes::Bytes::new())
            .await
            .unwrap()
    });
    let on_socket = String::from_utf8(on_socket.to_vec()).unwrap();
    assert_eq!(socket_status, 200, "{on_socket}");
    let (_, _, after) = exchange(address, "GET", "/metrics");

    let (before, on_socket, after) = (samples(&before), samples(&on_socket), samples(&after));
    for (name, value) in [
        ("ferry_jobs{state=\"transferred\",type=\"download\"}", "1"),
        ("ferry_jobs{state=\"error\",type=\"download\"}", "1"),
        ("ferry_jobs{state=\"queued\",type=\"download\"}", "0"),
        ("ferry_transferred_bytes_total{type=\"download\"}", "130456"),
        ("ferry_transferred_files_total{type=\"download\"}", "2"),
        ("ferry_transfer_errors_total{code=\"http-status\"}", "1"),
    ] {
        assert_eq!(
            before.get(name).map(String::as_str),
            Some(value),
            "{name} over TCP: {before:#?}"
        );
    }
    assert_eq!(settled(&before), settled(&on_socket));
    assert_eq!(settled(&after), settled(&on_socket));
    // Flushes may go on between the reads (timers save jobs): in order.
    assert!(flushes(&before) > 0, "{before:#?}");
    assert!(flushes(&before) <= flushes(&on_socket));
    assert!(flushes(&on_socket) <= flushes(&after));
    // The same families, with the same labels.
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        on_socket.keys().collect::<Vec<_>>()
    );

    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
    assert!(
        TcpStream::connect(address).is_err(),
        "the listener stopped with the daemon"
    );
}

#[test]
fn only_get_metrics_is_served() {
    let address = free_address();
    let mut daemon = Daemon::new(&listening_on(&address.to_string(), ""));
    daemon.start(ferry());
    for method in ["POST", "PUT", "DELETE"] {
        let (status, head, body) = exchange(address, method, "/metrics");
        assert_eq!(status, 405, "{method}: {head}\n{body}");
        assert!(head.contains("\r\nallow: get"), "{head}");
    }
    for path in ["/", "/v1/metrics", "/metrics/x", "/v1/jobs"] {
        let (status, head, body) = exchange(address, "GET", path);
        assert_eq!(status, 404, "{path}: {head}\n{body}");
        assert!(!body.contains("ferry_"), "{body}");
    }
    let (status, _, body) = exchange(address, "GET", "/metrics?x=1");
    assert_eq!(status, 200);
    assert!(body.contains("ferry_jobs{"), "{body}");
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

/// `[daemon] max-connections-per-user` caps the listener's connections at
/// once (more are closed unanswered) and `header-read-timeout-ms` closes a
/// connection that sends no request: the cap frees up again.
#[test]
fn the_listener_bounds_its_connections() {
    let address = free_address();
    let mut daemon = Daemon::new(&listening_on(
        &address.to_string(),
        "max-connections-per-user = 2\nheader-read-timeout-ms = 500\n",
    ));
    daemon.start(ferry());
    let silent = |_| {
        let s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let mut held: Vec<TcpStream> = (0..2).map(silent).collect();
    // A third connection is closed unanswered, its request whole or not.
    let mut third = silent(2);
    let _ = third.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "a third connection is refused: {}",
        String::from_utf8_lossy(&answer)
    );
    for stream in &mut held {
        let mut answer = Vec::new();
        // Whatever hyper says when the head does not come, the connection ends.
        let ended = stream.read_to_end(&mut answer);
        assert!(
            ended.is_ok()
                || ended
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a silent connection is closed after the header-read timeout: {ended:?}"
        );
    }
    drop(held);
    // Its slots given back (bounded), a request is answered again.
    let mut served = false;
    for _ in 0..100 {
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "the listener serves again; log: {}", daemon.log());
    assert_eq!(daemon.terminate(), Some(0), "log: {}", daemon.log());
}

#[test]
fn a_non_loopback_address_stops_the_daemon_at_start() {
    let port = free_address().port();
    for address in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let daemon = Daemon::new(&listening_on(&address, ""));
        let (status, log) = refused_start(&daemon);
        assert_ne!(status, 0, "{log}");
        assert!(log.contains("ferry: error invalid-config:"), "{log}");
        assert!(log.contains(&format!("listen = \"{address}\"")), "{log}");
        assert!(log.contains("is not a loopback address"), "{log}");
        assert!(!daemon.socket.exists(), "no socket was opened");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {address}"
        );
    }
}

#[test]
fn an_address_that_cannot_be_bound_stops_the_daemon_at_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let daemon = Daemon::new(&listening_on(&address.to_string(), ""));
    let (status, log) = refused_start(&daemon);
    assert_ne!(status, 0, "{log}");
    assert!(log.contains("ferry: error metrics-listen-failed:"), "{log}");
    assert!(log.contains(&address.to_string()), "{log}");
    assert!(log.to_lowercase().contains("in use"), "{log}");
    assert!(!daemon.socket.exists(), "the socket was removed");
    drop(taken);
}
