//! API throughput through the real socket: a real `ferry daemon` (the
//! `ferry-cli` binary) in a temporary directory, driven by the CLI's own
//! client library on one keep-alive connection.
//!
//! - `health`: `GET /v1/health`, the cheapest call (routing, peer, JSON);
//! - `info`: `GET /v1/jobs/{id}`;
//! - `lifecycle (no transfer)`: create + add + cancel; and the same from
//!   eight clients at once (`x8`), each on its own connection;
//! - `lifecycle (1 KiB download)`: create + add + resume + wait for
//!   `transferred` (event stream) + complete, against a loopback server;
//! - the daemon's resident memory (`VmRSS`) idle and with 10,000 queued jobs,
//!   and how long it takes to answer again after a restart on them.
//!
//! Run: `cargo bench -p ferry-tests --bench api` (`FERRY_BENCH_N` scales it,
//! `FERRY_BENCH_QUEUED` sets the queued jobs).

use bytes::Bytes;
use ferry::cli::client::Client;
use ferry_tests::bench::{setting, store_counters};
use ferry_tests::daemon::Daemon;
use ferry_tests::server::{Resource, TestServer};
use http::{Method, StatusCode};
use std::path::Path;
use std::time::Instant;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry-cli"))
}

async fn ok(client: &mut Client, method: Method, path: &str, body: String) -> serde_json::Value {
    let (status, bytes) = client.raw(method, path, Bytes::from(body)).await.unwrap();
    assert!(
        status.is_success() || status == StatusCode::CREATED,
        "{path}: {status}"
    );
    serde_json::from_slice(&bytes).unwrap()
}

fn report(what: &str, n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<32} {n:>6} in {secs:>7.3} s  = {:>9.0} /s",
        n as f64 / secs
    );
}

/// Create, add one file, cancel: three durable changes.
async fn lifecycle(client: &mut Client, url: &str, local: &Path) {
    let id = ok(client, Method::POST, "/v1/jobs", "{}".into()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = format!("{{\"remote\": {url:?}, \"local\": {local:?}}}");
    ok(client, Method::POST, &format!("/v1/jobs/{id}/files"), body).await;
    ok(
        client,
        Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
        String::new(),
    )
    .await;
}

fn main() {
    let scale: usize = setting("FERRY_BENCH_N", 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.put("/small", Resource::pattern(1024));
    let mut daemon =
        Daemon::new("[limits]\nmax-jobs-per-machine = 100000\nmax-jobs-per-user = 100000\n");
    daemon.start(ferry());
    let downloads = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(&daemon.socket).await.unwrap();
        let n = 5000 * scale;
        let started = Instant::now();
        for _ in 0..n {
            ok(&mut client, Method::GET, "/v1/health", String::new()).await;
        }
        report("health", n, started);

        let id = ok(&mut client, Method::POST, "/v1/jobs", "{}".into()).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let started = Instant::now();
        for _ in 0..n {
            ok(
                &mut client,
                Method::GET,
                &format!("/v1/jobs/{id}"),
                String::new(),
            )
            .await;
        }
        report("info", n, started);

        let n = 300 * scale;
        let started = Instant::now();
        for i in 0..n {
            let id = ok(&mut client, Method::POST, "/v1/jobs", "{}".into()).await["id"]
                .as_str()
                .unwrap()
                .to_string();
            let body = format!(
                "{{\"remote\": {:?}, \"local\": {:?}}}",
                server.url("/small"),
                downloads.path().join(format!("c{i}"))
            );
            ok(
                &mut client,
                Method::POST,
                &format!("/v1/jobs/{id}/files"),
                body,
            )
            .await;
            ok(
                &mut client,
                Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                String::new(),
            )
            .await;
        }
        report("lifecycle (no transfer)", n, started);

        // The same lifecycles from eight clients at once, each on its own
        // connection: what group commit is for.
        let clients = 8;
        let n = 2000 * scale;
        let before = store_counters(&mut client).await;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let socket = daemon.socket.clone();
            let url = server.url("/small");
            let dir = downloads.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&socket).await.unwrap();
                for i in 0..n / clients {
                    lifecycle(&mut client, &url, &dir.join(format!("p{c}-{i}"))).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let phase = started.elapsed().as_secs_f64();
        report("lifecycle (no transfer) x8", n, started);
        let after = store_counters(&mut client).await;
        let (writes, flushes, flush_secs) =
            (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        println!(
            "  store during x8: {writes} writes in {flushes} flushes ({:.1} a flush), \
             {:.3} ms a flush, flushing {:.0}% of the time",
            writes / flushes.max(1.0),
            flush_secs * 1e3 / flushes.max(1.0),
            100.0 * flush_secs / phase
        );

        let n = 100 * scale;
        let started = Instant::now();
        for i in 0..n {
            let id = ok(
                &mut client,
                Method::POST,
                "/v1/jobs",
                "{\"priority\": \"foreground\"}".into(),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string();
            let body = format!(
                "{{\"remote\": {:?}, \"local\": {:?}}}",
                server.url("/small"),
                downloads.path().join(format!("d{i}"))
            );
            ok(
                &mut client,
                Method::POST,
                &format!("/v1/jobs/{id}/files"),
                body,
            )
            .await;
            let mut events = client
                .events(&format!("/v1/jobs/{id}/events"))
                .await
                .unwrap();
            ok(
                &mut client,
                Method::POST,
                &format!("/v1/jobs/{id}/resume"),
                String::new(),
            )
            .await;
            while let Some(event) = events.next().await {
                if event.data.contains("\"state\":\"transferred\"") {
                    break;
                }
                assert!(
                    !event.data.contains("\"state\":\"error\""),
                    "{}",
                    event.data
                );
            }
            ok(
                &mut client,
                Method::POST,
                &format!("/v1/jobs/{id}/complete"),
                String::new(),
            )
            .await;
        }
        report("lifecycle (1 KiB download)", n, started);
    });
    assert_eq!(daemon.terminate(), Some(0));

    // The daemon's whole resident memory with many queued jobs, and its
    // restart on them: a fresh daemon, jobs created, given a file and
    // resumed from eight clients; the file is slow, so a few transfer and
    // the rest wait in the queue.
    let queued: usize = setting("FERRY_BENCH_QUEUED", 10_000);
    server.put("/slow", Resource::pattern(1 << 30).slow(64 * 1024));
    let mut daemon = Daemon::new(&format!(
        "[limits]\nmax-jobs-per-machine = {queued}0\nmax-jobs-per-user = {queued}0\n"
    ));
    daemon.start(ferry());
    let idle = rss_mib(&daemon);
    let started = Instant::now();
    runtime.block_on(async {
        let clients = 8;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let socket = daemon.socket.clone();
            let url = server.url("/slow");
            let dir = downloads.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&socket).await.unwrap();
                for i in 0..queued / clients {
                    let id = ok(&mut client, Method::POST, "/v1/jobs", "{}".into()).await["id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let local = dir.join(format!("q{c}-{i}"));
                    let body = format!("{{\"remote\": {url:?}, \"local\": {local:?}}}");
                    ok(
                        &mut client,
                        Method::POST,
                        &format!("/v1/jobs/{id}/files"),
                        body,
                    )
                    .await;
                    let resume = format!("/v1/jobs/{id}/resume");
                    ok(&mut client, Method::POST, &resume, String::new()).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    report("queued jobs (create+add+resume) x8", queued, started);
    let full = rss_mib(&daemon);
    println!("daemon RSS: {idle:.1} MiB idle, {full:.1} MiB with {queued} queued jobs");
    assert_eq!(daemon.terminate(), Some(0));
    let started = Instant::now();
    daemon.start(ferry());
    let restart = started.elapsed().as_secs_f64();
    let reopened = rss_mib(&daemon);
    println!(
        "daemon restart on {queued} jobs: answering after {restart:.3} s, RSS {reopened:.1} MiB"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

/// The store's writes, flushes and seconds spent flushing so far, from
/// the daemon's metrics (`GET /v1/metrics`, which needs an administrator:
/// the benchmark then runs as root; zeros otherwise).
/// The daemon's resident set (`VmRSS`), in MiB.
fn rss_mib(daemon: &Daemon) -> f64 {
    let pid = daemon.pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib / 1024.0
}
